//! The prometheus-operator path: Debian's Prometheus scrapes a real agent with the scrape
//! configuration that prometheus-operator generates for the shipped ServiceMonitor and
//! PodMonitor. Kubernetes discovery is replaced by a static target carrying the same
//! `__meta_kubernetes_*` labels the endpoints and pod roles would give it; the relabel
//! rules are the operator's, generated from the shipped objects (selector, port, jobLabel,
//! honorLabels, relabelings), so that the test follows them when they change.
//!
//! The rules are those of prometheus-operator's `pkg/prometheus/promcfg.go`
//! (`generateServiceMonitorConfig`, `generatePodMonitorConfig`; the order is the same from
//! v0.75 to v0.93). The sharding rules it appends last are left out: with one shard they
//! keep every target.
//!
//! A workload pod (kubelet-shaped cgroups and log directories) uses CPU, reads from disk,
//! stalls in reclaim and is OOM-killed, so that every per-pod panel and alert has data.
//! Checked: per-pod series carry the workload's namespace, pod and container; no
//! `exported_*` label appears; a series about no pod has no pod label; node and instance
//! are the node's name; every per-pod dashboard query and per-pod alert expression returns
//! the workload's pod.
mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::kubelet::{CONTAINER, NAMESPACE, NODE, POD, WorkloadPod};
use serde_json::{Value as Json, json};
use serde_yaml::Value;

/// The agent's own pod, as the operator's target labels would name it.
const AGENT_POD: &str = "nodelens-x7k2p";
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&common::read(repo().join(path))).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// The operator's `sanitizeLabelName`: anything outside `[a-zA-Z0-9_]` becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A user relabeling (camelCase, as in the CRD) as Prometheus YAML (`generateRelabelConfig`
/// writes only the keys that are set, and lowercases the action).
fn user_relabeling(r: &Value) -> Json {
    let mut out = serde_json::Map::new();
    for (from, to) in [
        ("sourceLabels", "source_labels"),
        ("separator", "separator"),
        ("targetLabel", "target_label"),
        ("regex", "regex"),
        ("modulus", "modulus"),
        ("replacement", "replacement"),
        ("action", "action"),
    ] {
        if let Some(v) = r.get(from) {
            let mut v = serde_json::to_value(v).unwrap();
            if to == "action" {
                v = json!(s(&r[from]).to_lowercase());
            }
            out.insert(to.into(), v);
        }
    }
    Json::Object(out)
}

/// `matchLabels` of a selector as the operator's keep rules (`role` is `service` for a
/// ServiceMonitor, `pod` for a PodMonitor): one per key, keys sorted.
fn selector_rules(selector: &Value, role: &str) -> Vec<Json> {
    let mut labels: Vec<(String, String)> = selector["matchLabels"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (s(k).to_owned(), s(v).to_owned()))
        .collect();
    assert!(!labels.is_empty());
    labels.sort();
    labels
        .iter()
        .map(|(k, v)| {
            let k = sanitize(k);
            json!({
                "action": "keep",
                "source_labels": [
                    format!("__meta_kubernetes_{role}_label_{k}"),
                    format!("__meta_kubernetes_{role}_labelpresent_{k}"),
                ],
                "regex": format!("({v});true"),
            })
        })
        .collect()
}

/// The operator's last rules of both monitor kinds: `job` from the `jobLabel` of the
/// discovered object (`role` is `service` or `pod`), `endpoint`, then the user's
/// relabelings.
fn last_rules(rules: &mut Vec<Json>, spec: &Value, endpoint: &Value, role: &str) {
    if let Some(job_label) = spec["jobLabel"].as_str() {
        rules.push(json!({
            "source_labels": [format!("__meta_kubernetes_{role}_label_{}", sanitize(job_label))],
            "target_label": "job",
            "regex": "(.+)",
            "replacement": "${1}",
        }));
    }
    let port = s(&endpoint["port"]);
    rules.push(json!({"target_label": "endpoint", "replacement": port}));
    rules.extend(
        endpoint["relabelings"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(user_relabeling),
    );
}

/// The discovery labels of a Kubernetes object's labels (`role` is `service` or `pod`):
/// `__meta_kubernetes_<role>_label_<name>` and `..._labelpresent_<name>`.
fn add_object_labels(labels: &mut Json, object_labels: &Value, role: &str) {
    for (k, v) in object_labels.as_mapping().unwrap() {
        let k = sanitize(s(k));
        labels[format!("__meta_kubernetes_{role}_label_{k}")] = json!(s(v));
        labels[format!("__meta_kubernetes_{role}_labelpresent_{k}")] = json!("true");
    }
}

/// The test generates rules for these fields only: a monitor using another (targetLabels,
/// metricRelabelings, attachMetadata, ...) must be modelled here first.
fn assert_modelled(monitor: &Value, endpoints: &str, spec_keys: &[&str]) {
    const ENDPOINT_KEYS: &[&str] = &[
        "port",
        "interval",
        "scrapeTimeout",
        "honorLabels",
        "relabelings",
        "scheme",
        "tlsConfig",
    ];
    let keys = |v: &Value| -> Vec<String> {
        v.as_mapping()
            .unwrap()
            .keys()
            .map(|k| s(k).to_owned())
            .collect()
    };
    for key in keys(&monitor["spec"]) {
        assert!(
            spec_keys.contains(&key.as_str()),
            "spec.{key} is not modelled by this test"
        );
    }
    let list = monitor["spec"][endpoints].as_sequence().unwrap();
    assert_eq!(list.len(), 1, "one endpoint");
    for key in keys(&list[0]) {
        assert!(
            ENDPOINT_KEYS.contains(&key.as_str()),
            "{endpoints}[0].{key} is not modelled by this test"
        );
    }
}

/// The scrape job prometheus-operator generates for the shipped ServiceMonitor's first
/// endpoint (role endpoints), with the target's discovery labels.
fn service_monitor_job(target: &str) -> Json {
    let monitor = yaml("manifests/monitoring/servicemonitor/servicemonitor.yaml");
    let service = yaml("manifests/service-headless.yaml");
    assert_modelled(
        &monitor,
        "endpoints",
        &["jobLabel", "selector", "namespaceSelector", "endpoints"],
    );
    let spec = &monitor["spec"];
    let endpoint = &spec["endpoints"][0];
    let port = s(&endpoint["port"]);
    let ns = s(&monitor["metadata"]["namespace"]);
    let name = s(&monitor["metadata"]["name"]);
    let mut rules =
        vec![json!({"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"})];
    rules.extend(selector_rules(&spec["selector"], "service"));
    rules.extend([
        json!({"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": port}),
        json!({"source_labels": ["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"], "separator": ";", "regex": "Node;(.*)", "replacement": "${1}", "target_label": "node"}),
        json!({"source_labels": ["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"], "separator": ";", "regex": "Pod;(.*)", "replacement": "${1}", "target_label": "pod"}),
        json!({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}),
        json!({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"}),
        json!({"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}),
        json!({"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"}),
        json!({"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"}),
        json!({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"}),
    ]);
    last_rules(&mut rules, spec, endpoint, "service");

    // What the endpoints role gives an endpoint backed by the agent's pod.
    let mut labels = json!({
        "__meta_kubernetes_namespace": ns,
        "__meta_kubernetes_service_name": s(&service["metadata"]["name"]),
        "__meta_kubernetes_endpoint_port_name": port,
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": AGENT_POD,
        "__meta_kubernetes_pod_name": AGENT_POD,
        "__meta_kubernetes_pod_container_name": "nodelens",
        "__meta_kubernetes_pod_node_name": NODE,
        "__meta_kubernetes_pod_phase": "Running",
    });
    add_object_labels(&mut labels, &service["metadata"]["labels"], "service");
    json!({
        "job_name": format!("serviceMonitor/{ns}/{name}/0"),
        "honor_labels": endpoint["honorLabels"].as_bool().unwrap_or(false),
        "static_configs": [{"targets": [target], "labels": labels}],
        "relabel_configs": rules,
    })
}

/// The scrape job prometheus-operator generates for the shipped PodMonitor's first
/// endpoint (role pod), with the target's discovery labels.
fn pod_monitor_job(target: &str) -> Json {
    let monitor = yaml("manifests/monitoring/podmonitor/podmonitor.yaml");
    let daemonset = yaml("manifests/daemonset.yaml");
    assert_modelled(
        &monitor,
        "podMetricsEndpoints",
        &[
            "jobLabel",
            "selector",
            "namespaceSelector",
            "podMetricsEndpoints",
        ],
    );
    let spec = &monitor["spec"];
    let endpoint = &spec["podMetricsEndpoints"][0];
    let port = s(&endpoint["port"]);
    let ns = s(&monitor["metadata"]["namespace"]);
    let name = s(&monitor["metadata"]["name"]);
    let mut rules = vec![
        json!({"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}),
        json!({"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"}),
    ];
    rules.extend(selector_rules(&spec["selector"], "pod"));
    rules.extend([
        json!({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": port}),
        json!({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}),
        json!({"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"}),
        json!({"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}),
        json!({"target_label": "job", "replacement": format!("{ns}/{name}")}),
    ]);
    last_rules(&mut rules, spec, endpoint, "pod");

    // What the pod role gives the agent's pod's metrics port.
    let mut labels = json!({
        "__meta_kubernetes_namespace": ns,
        "__meta_kubernetes_pod_name": AGENT_POD,
        "__meta_kubernetes_pod_container_name": "nodelens",
        "__meta_kubernetes_pod_container_port_name": port,
        "__meta_kubernetes_pod_node_name": NODE,
        "__meta_kubernetes_pod_phase": "Running",
    });
    add_object_labels(
        &mut labels,
        &daemonset["spec"]["template"]["metadata"]["labels"],
        "pod",
    );
    json!({
        "job_name": format!("podMonitor/{ns}/{name}/0"),
        "honor_labels": endpoint["honorLabels"].as_bool().unwrap_or(false),
        "static_configs": [{"targets": [target], "labels": labels}],
        "relabel_configs": rules,
    })
}

/// Whether a result row is the workload's pod.
fn is_workload(row: &Json) -> bool {
    row["metric"]["namespace"] == NAMESPACE && row["metric"]["pod"] == POD
}

/// Every dashboard query that groups by pod, with the dashboard's variables filled in.
fn per_pod_dashboard_queries() -> Vec<(String, String)> {
    let dash: Json = serde_json::from_str(&common::read(
        repo().join("manifests/grafana/nodelens-dashboard.json"),
    ))
    .unwrap();
    let mut queries = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = s_json(&target["expr"]);
            if expr.contains("pod") {
                queries.push((
                    s_json(&panel["title"]).to_owned(),
                    expr.replace("$instance", NODE)
                        .replace("$namespace", NAMESPACE)
                        .replace("$pod", POD)
                        .replace("$__rate_interval", "30s"),
                ));
            }
        }
    }
    queries
}

fn s_json(v: &Json) -> &str {
    v.as_str().unwrap_or("")
}

/// Every alert whose summary names a pod, its expression with each threshold (`> n`)
/// made `>= 0`: what is checked here is where the labels come from, not the thresholds
/// (manifests/prometheus/rules_test.yml tests those).
/// An alert's expression with every threshold `> N` relaxed to `>= 0`: true wherever its
/// series have data.
fn without_thresholds(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find("> ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(after.len());
        if end > 0 {
            out.push_str(">= 0");
        } else {
            out.push_str("> ");
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The alert rules whose summary satisfies `pick`: (alert, expression without thresholds).
fn alert_expressions(pick: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    let rules = yaml("manifests/monitoring/rules/prometheusrule.yaml");
    rules["spec"]["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter(|r| r["annotations"]["summary"].as_str().is_some_and(&pick))
        .map(|r| (s(&r["alert"]).to_owned(), without_thresholds(s(&r["expr"]))))
        .collect()
}

fn per_pod_alert_expressions() -> Vec<(String, String)> {
    alert_expressions(|summary| summary.contains("$labels.pod"))
}

/// The histograms that are native as well as classic in a protobuf scrape, which a
/// Prometheus with native histograms on (2.42 to 2.44 always, later ones without
/// `scrape_classic_histograms`) stores as native only.
const NATIVE_TOO: [&str; 2] = [
    "nodelens_disk_io_latency_seconds",
    "nodelens_memory_reclaim_stall_seconds",
];

/// The node-level dashboard queries and alert expressions that read [`NATIVE_TOO`]: each
/// must return the node whether Prometheus keeps the classic series or the native one.
fn native_too_node_queries() -> Vec<(String, String)> {
    let dash: Json = serde_json::from_str(&common::read(
        repo().join("manifests/grafana/nodelens-dashboard.json"),
    ))
    .unwrap();
    let reads = |expr: &str| NATIVE_TOO.iter().any(|h| expr.contains(h)) && !expr.contains("pod");
    let mut queries: Vec<(String, String)> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = s_json(&p["title"]).to_owned();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| (title.clone(), s_json(&t["expr"]).to_owned()))
        })
        .filter(|(_, expr)| reads(expr))
        .map(|(title, expr)| {
            let expr = expr
                .replace("$instance", NODE)
                .replace("$__rate_interval", "30s");
            (title, expr)
        })
        .collect();
    queries.extend(
        alert_expressions(|_| true)
            .into_iter()
            .filter(|(_, expr)| reads(expr)),
    );
    queries
}

fn check_monitor(job: impl Fn(&str) -> Json) {
    common::require_root();
    let pod = WorkloadPod::new();
    let mut args = pod.agent_args();
    // As the DaemonSet with the `why-slow` component, whose series the dashboard's "Why is
    // this pod slow" row needs.
    args.extend(["--cgroup-series".to_owned(), common::why_slow_series()]);
    let agent = common::Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // Native histograms on, as the dashboard's per-pod quantile panel needs: the operator's
    // scrape config then asks for protobuf.
    let prometheus = common::ScrapingPrometheus::start_with(
        json!([job(&agent.addr)]),
        &["--enable-feature=native-histograms"],
    );
    common::wait_for(
        "Prometheus scrapes the agent (up 1)",
        Duration::from_secs(60),
        || prometheus.query("up").iter().any(|r| r["value"][1] == "1"),
    );
    pod.work();
    let _reader = pod.keep_reading();

    // Every per-pod dashboard query and per-pod alert returns the workload's pod.
    let dashboard = per_pod_dashboard_queries();
    assert!(dashboard.len() >= 5, "per-pod panels: {dashboard:?}");
    let alerts = per_pod_alert_expressions();
    assert!(alerts.len() >= 2, "per-pod alerts: {alerts:?}");
    for (what, expr) in dashboard.iter().chain(&alerts) {
        common::wait_for(
            &format!("{what:?} returns {NAMESPACE}/{POD}: {expr}"),
            Duration::from_secs(60),
            || prometheus.query(expr).iter().any(is_workload),
        );
    }
    // The node's disk latency and reclaim stall panels and alerts, which this Prometheus
    // (native histograms on, 2.42) has as native histograms only.
    let node_queries = native_too_node_queries();
    assert!(node_queries.len() >= 4, "{node_queries:?}");
    for (what, expr) in &node_queries {
        common::wait_for(
            &format!("{what:?} returns {NODE}: {expr}"),
            Duration::from_secs(60),
            || {
                prometheus
                    .query(expr)
                    .iter()
                    .any(|r| r["metric"]["instance"] == NODE)
            },
        );
    }
    // The dashboard's node variable lists this node.
    let nodes = prometheus.query("group by (instance) (nodelens_build_info)");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["metric"]["instance"], NODE);

    // Every series: the agent is node and instance; no exported_* label; a pod label only
    // on the workload's series, never the agent's pod.
    let all = prometheus.query("{__name__=~\".+\", __name__!~\"up|scrape_.+\"}");
    assert!(all.len() > 100, "{} series", all.len());
    let mut about_no_pod = 0;
    for row in &all {
        let m = row["metric"].as_object().unwrap();
        assert!(
            !m.keys().any(|k| k.starts_with("exported_")),
            "an exported_ label: {m:?}"
        );
        assert_eq!(m.get("instance"), Some(&json!(NODE)), "{m:?}");
        assert_eq!(m.get("node"), Some(&json!(NODE)), "{m:?}");
        match m.get("pod") {
            Some(p) => {
                assert_eq!(p, POD, "a pod label that is not the workload's: {m:?}");
                assert_eq!(m.get("namespace"), Some(&json!(NAMESPACE)), "{m:?}");
            }
            None => {
                assert!(
                    !m.contains_key("namespace") && !m.contains_key("container"),
                    "{m:?}"
                );
                if m.get("cgroup").is_some() {
                    about_no_pod += 1;
                }
            }
        }
    }
    assert!(
        about_no_pod > 0,
        "per-cgroup series about no pod were checked"
    );
    let workload_cpu = prometheus.query(&format!(
        "nodelens_cgroup_cpu_seconds_total{{namespace=\"{NAMESPACE}\",pod=\"{POD}\",container=\"{CONTAINER}\"}}"
    ));
    assert_eq!(workload_cpu.len(), 1, "{workload_cpu:?}");
}

#[test]
fn the_service_monitor_keeps_the_workloads_pod_labels() {
    check_monitor(service_monitor_job);
}

#[test]
fn the_pod_monitor_keeps_the_workloads_pod_labels() {
    check_monitor(pod_monitor_job);
}
