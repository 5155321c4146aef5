//! The Kubernetes manifests, the image and the alert rules, checked with the real tools:
//! kubernetes-validate, the prometheus-operator schemas, yamllint, checkov, hadolint and
//! promtool. `cargo xtask setup --test-tools` installs them under target/tools.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize as _;
use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn manifests() -> PathBuf {
    repo().join("manifests")
}

fn tools() -> PathBuf {
    std::env::var_os("NODELENS_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/tools"))
}

fn tool(name: &str) -> PathBuf {
    let path = tools().join("py/bin").join(name);
    assert!(
        path.exists(),
        "{} missing: run cargo xtask setup --test-tools",
        path.display()
    );
    path
}

/// Runs a command; returns (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The Kubernetes objects applied by `kubectl apply -k manifests/`.
fn core_objects() -> Vec<PathBuf> {
    let k: Value =
        serde_yaml::from_str(&common::read(manifests().join("kustomization.yaml"))).unwrap();
    k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| manifests().join(r.as_str().unwrap()))
        .collect()
}

fn load(path: &Path) -> Value {
    serde_yaml::from_str(&common::read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn core_objects_match_the_kubernetes_schemas() {
    let files = core_objects();
    assert!(files.len() >= 7, "{files:?}");
    // The tool's default Kubernetes version is the newest it knows.
    let (ok, text) = run(Command::new(tool("kubernetes-validate"))
        .arg("--strict")
        .args(&files));
    assert!(ok, "kubernetes-validate:\n{text}");
    assert_eq!(text.matches("passed").count(), files.len(), "{text}");
}

/// The two monitoring choices for prometheus-operator users, each with its monitor.
const MONITORING_CHOICES: [(&str, &str); 2] = [
    ("servicemonitor", "ServiceMonitor"),
    ("podmonitor", "PodMonitor"),
];

#[test]
fn each_monitoring_choice_renders_exactly_one_monitor_and_passes_the_operator_schemas() {
    for (choice, monitor) in MONITORING_CHOICES {
        let dir = manifests().join("monitoring").join(choice);
        let objects = render(&dir);
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds.iter().filter(|k| k.ends_with("Monitor")).count(),
            1,
            "{choice}: {kinds:?}"
        );
        assert!(
            kinds.contains(&monitor) && kinds.contains(&"PrometheusRule"),
            "{choice}: {kinds:?}"
        );
        let rendered = repo()
            .join("target/overlays/monitoring")
            .join(format!("{choice}.yaml"));
        std::fs::create_dir_all(rendered.parent().unwrap()).unwrap();
        let (ok, text) = run(Command::new("kubectl").arg("kustomize").arg(&dir));
        assert!(ok, "{text}");
        std::fs::write(&rendered, text).unwrap();
        let (ok, text) = run(Command::new("node")
            .arg(repo().join("xtask/scripts/validate-prometheus-operator.mjs"))
            .arg(tools().join("npm/node_modules"))
            .arg(&rendered));
        assert!(ok, "prometheus-operator schemas:\n{text}");
        for kind in [monitor, "PrometheusRule"] {
            assert!(text.contains(&format!("{kind}/nodelens valid")), "{text}");
        }
    }
    // No kustomization applies both at once.
    assert!(!manifests().join("monitoring/kustomization.yaml").exists());
}

#[test]
fn yaml_is_lint_clean() {
    let (ok, text) = run(Command::new(tool("yamllint"))
        .arg("-c")
        .arg(manifests().join(".yamllint"))
        .arg("--strict")
        .arg(manifests()));
    assert!(ok, "yamllint:\n{text}");
}

#[test]
fn dockerfile_is_hadolint_clean() {
    let (ok, text) = run(Command::new(tool("hadolint")).arg(repo().join("Dockerfile")));
    assert!(ok, "hadolint:\n{text}");
}

/// checkov findings docs/kubernetes.md lists as inherent to a node agent, with the reason.
fn documented_exceptions() -> Vec<String> {
    common::read(repo().join("docs/kubernetes.md"))
        .lines()
        .filter_map(|l| l.strip_prefix("| `CKV"))
        .filter_map(|l| l.split('`').next())
        .map(|id| format!("CKV{id}"))
        .collect()
}

#[test]
fn checkov_findings_are_fixed_or_documented() {
    // Component patches are partial objects: their rendered overlays are checked instead.
    assert_checkov_clean(&manifests(), &["--skip-path", "components"]);
}

/// checkov over a directory or file finds nothing beyond the documented list.
fn assert_checkov_clean(target: &Path, extra: &[&str]) {
    let out = Command::new(tool("checkov"))
        .args([
            "--framework",
            "kubernetes",
            "--quiet",
            "--compact",
            "-o",
            "json",
        ])
        .args(extra)
        .arg(if target.is_dir() { "-d" } else { "-f" })
        .arg(target)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("checkov JSON: {e}\n{text}"));
    let reports = match report {
        serde_json::Value::Array(a) => a,
        one => vec![one],
    };
    let mut failed: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r["results"]["failed_checks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| c["check_id"].as_str().unwrap_or("").to_owned())
        .collect();
    failed.sort();
    failed.dedup();
    let documented = documented_exceptions();
    assert!(
        !documented.is_empty(),
        "docs/kubernetes.md lists no checkov exceptions"
    );
    let undocumented: Vec<&String> = failed
        .iter()
        .filter(|id| !documented.contains(id))
        .collect();
    assert!(
        undocumented.is_empty(),
        "fix these checkov findings or document them in docs/kubernetes.md: {undocumented:?}"
    );
}

fn daemonset() -> Value {
    load(&manifests().join("daemonset.yaml"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn daemonset_keeps_its_node_agent_shape() {
    let ds = daemonset();
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert!(!ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"].is_null());
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(
        spec["tolerations"][0]["operator"], "Exists",
        "tolerate every taint"
    );
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let init = spec["initContainers"].as_sequence().unwrap();
    assert!(
        init.iter()
            .any(|c| strs(&c["args"]).first().map(String::as_str) == Some("preflight")),
        "preflight init container"
    );

    let volumes = spec["volumes"].as_sequence().unwrap();
    let host_paths: Vec<&str> = volumes
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    for path in [
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
        "/sys/fs/cgroup",
        "/proc",
        "/sys",
        "/etc/machine-id",
        "/var/log/pods",
        "/var/log/containers",
    ] {
        assert!(
            host_paths.contains(&path),
            "hostPath {path} missing: {host_paths:?}"
        );
    }
    let host_volume_names: Vec<&str> = volumes
        .iter()
        .filter(|v| !v["hostPath"].is_null())
        .filter_map(|v| v["name"].as_str())
        .collect();

    let main = &spec["containers"][0];
    for c in init.iter().chain(std::iter::once(main)) {
        let sc = &c["securityContext"];
        assert_eq!(sc["privileged"], false, "never privileged");
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
        assert_eq!(strs(&sc["capabilities"]["add"]), ["BPF", "PERFMON"]);
        for m in c["volumeMounts"].as_sequence().unwrap() {
            let name = m["name"].as_str().unwrap();
            if host_volume_names.contains(&name) {
                assert_eq!(
                    m["readOnly"], true,
                    "hostPath mount {name} must be read-only"
                );
            }
        }
    }
    let port = &main["ports"][0];
    assert_eq!(port["containerPort"], 9560);
    assert_eq!(port["hostPort"], 9560);
    assert_eq!(main["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(main["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(!main["resources"]["requests"].is_null() && !main["resources"]["limits"].is_null());
    let env = main["env"].as_sequence().unwrap();
    assert!(env.iter().any(|e| e["name"] == "NODELENS_NODE_NAME"
        && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"));
    assert_eq!(
        main["envFrom"][0]["configMapRef"]["name"],
        "nodelens-config"
    );

    let local = load(&manifests().join("service.yaml"));
    assert_eq!(local["spec"]["internalTrafficPolicy"], "Local");
    let headless = load(&manifests().join("service-headless.yaml"));
    assert_eq!(headless["spec"]["clusterIP"], "None");
    // Every NODELENS_* key in the ConfigMap is a real flag.
    let cm = load(&manifests().join("configmap.yaml"));
    let (_, help) = run(Command::new(common::BIN).arg("--help"));
    for key in cm["data"].as_mapping().unwrap().keys() {
        let key = key.as_str().unwrap();
        assert!(
            help.contains(key),
            "ConfigMap key {key} is not a nodelens environment variable"
        );
    }
}

#[test]
fn alert_rules_check_and_their_unit_tests_pass() {
    let rules = manifests().join("prometheus/rules.yml");
    let (ok, text) = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules));
    let shipped = std::fs::read_to_string(&rules)
        .unwrap()
        .matches("- alert:")
        .count();
    assert!(
        ok && shipped >= 10 && text.contains(&format!("SUCCESS: {shipped} rules found")),
        "promtool check rules ({shipped} alerts in the file):\n{text}"
    );
    let (ok, text) = run(Command::new("promtool")
        .args(["test", "rules", "rules_test.yml"])
        .current_dir(manifests().join("prometheus")));
    assert!(ok, "promtool test rules:\n{text}");
    // The PrometheusRule ships the very same groups.
    let plain: Value = load(&rules);
    let operator = load(&manifests().join("monitoring/rules/prometheusrule.yaml"));
    assert_eq!(
        plain["groups"], operator["spec"]["groups"],
        "rules.yml and prometheusrule.yaml differ"
    );
}

/// `kubectl kustomize` of `base` with `component`, through an overlay written under
/// target/ (kustomize reads directories outside an overlay, not files).
fn render_with_component(base: &Path, component: &Path) -> Vec<Value> {
    let overlay = repo()
        .join("target/overlays")
        .join(component.strip_prefix(manifests()).unwrap());
    std::fs::create_dir_all(&overlay).unwrap();
    // kustomize wants relative paths.
    let up = "../".repeat(overlay.strip_prefix(repo()).unwrap().components().count());
    let rel = |p: &Path| format!("{up}{}", p.strip_prefix(repo()).unwrap().display());
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{}]\ncomponents: [{}]\n",
            rel(base),
            rel(component)
        ),
    )
    .unwrap();
    let (ok, text) = run(Command::new("kubectl").arg("kustomize").arg(&overlay));
    assert!(ok, "kubectl kustomize {}:\n{text}", overlay.display());
    std::fs::write(overlay.join("rendered.yaml"), &text).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_web_tls_component_mounts_the_config_and_switches_probes_to_https() {
    let objects = render_with_component(&manifests(), &manifests().join("components/web-tls"));
    let rendered = repo().join("target/overlays/components/web-tls/rendered.yaml");
    let (ok, text) = run(Command::new(tool("kubernetes-validate"))
        .arg("--strict")
        .arg(&rendered));
    assert!(ok, "kubernetes-validate:\n{text}");
    assert_checkov_clean(&rendered, &[]);
    let ds = find(&objects, "DaemonSet");
    let agent = &ds["spec"]["template"]["spec"]["containers"][0];
    let env = serde_yaml::to_string(&agent["env"]).unwrap();
    assert!(env.contains("NODELENS_WEB_CONFIG_FILE"), "{env}");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(agent[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }
    let mounts = serde_yaml::to_string(&agent["volumeMounts"]).unwrap();
    assert!(mounts.contains("/etc/nodelens/tls") && mounts.contains("/etc/nodelens/web"));
    // Everything else is the base's: the same selector, capabilities and host mounts.
    let base = daemonset();
    assert_eq!(ds["spec"]["selector"], base["spec"]["selector"]);
    assert_eq!(
        agent["securityContext"],
        base["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    );
    // The web config it documents parses as nodelens reads it (exit 2 would name the key).
    let example = manifests().join("components/web-tls/web.yml");
    assert!(common::read(&example).contains("client_auth_type: RequireAndVerifyClientCert"));

    for (choice, kind) in MONITORING_CHOICES {
        let monitoring = render_with_component(
            &manifests().join("monitoring").join(choice),
            &manifests().join("monitoring/components/web-tls"),
        );
        let endpoints = if kind == "PodMonitor" {
            "podMetricsEndpoints"
        } else {
            "endpoints"
        };
        let endpoint = &find(&monitoring, kind)["spec"][endpoints][0];
        assert_eq!(endpoint["scheme"], "https", "{kind}");
        assert!(
            endpoint["tlsConfig"]["keySecret"]["name"].is_string(),
            "{kind}"
        );
        let rendered = repo().join("target/overlays/monitoring/components/web-tls/rendered.yaml");
        let (ok, text) = run(Command::new("node")
            .arg(repo().join("xtask/scripts/validate-prometheus-operator.mjs"))
            .arg(tools().join("npm/node_modules"))
            .arg(&rendered));
        assert!(ok, "prometheus-operator schemas:\n{text}");
    }
}

/// `kubectl kustomize` of a directory, parsed.
fn render(dir: &Path) -> Vec<Value> {
    let (ok, text) = run(Command::new("kubectl").arg("kustomize").arg(dir));
    assert!(ok, "kubectl kustomize {}:\n{text}", dir.display());
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

/// The rendered overlay passes the same tools as the base: kubernetes-validate --strict,
/// checkov with the documented exceptions, and yamllint (kustomize writes no leading
/// `---` and does not indent sequences, so those two rules are relaxed).
fn assert_render_is_clean(rendered: &Path) {
    let (ok, text) = run(Command::new(tool("kubernetes-validate"))
        .arg("--strict")
        .arg(rendered));
    assert!(ok, "kubernetes-validate {}:\n{text}", rendered.display());
    assert_checkov_clean(rendered, &[]);
    let (ok, text) = run(Command::new(tool("yamllint"))
        .arg("-d")
        .arg("{extends: default, rules: {line-length: {max: 200}, truthy: {check-keys: false}, document-start: disable, indentation: {indent-sequences: whatever}}}")
        .arg("--strict")
        .arg(rendered));
    assert!(ok, "yamllint {}:\n{text}", rendered.display());
}

/// Removes `spec.template.spec.<field>` from a DaemonSet, to compare the rest.
fn without_pod_field(ds: &Value, field: &str) -> Value {
    let mut ds = ds.clone();
    if let Some(spec) = ds["spec"]["template"]["spec"].as_mapping_mut() {
        spec.remove(field);
    }
    ds
}

#[test]
fn node_subset_components_change_only_their_field_and_keep_the_selector() {
    let base = render(&manifests());
    let base_ds = find(&base, "DaemonSet");
    let selector = serde_yaml::to_string(&base_ds["spec"]["selector"]).unwrap();
    // The selector never carries a version: `kubectl delete --cascade=orphan` then a new
    // apply adopts the running pods only if it stays the same.
    let match_labels = base_ds["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap();
    let mut keys: Vec<&str> = match_labels.keys().filter_map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["app.kubernetes.io/component", "app.kubernetes.io/name"]
    );

    let pod = |objects: &[Value]| find(objects, "DaemonSet")["spec"]["template"]["spec"].clone();
    // (component, the one pod spec field it changes, what that field must hold)
    type Case = (&'static str, &'static str, fn(&Value));
    let cases: [Case; 3] = [
        ("node-selector", "nodeSelector", |spec| {
            assert_eq!(spec["nodeSelector"]["nodelens.io/enabled"], "true");
            assert_eq!(spec["nodeSelector"].as_mapping().unwrap().len(), 1);
        }),
        ("node-affinity", "affinity", |spec| {
            let term = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0];
            let expr = &term["matchExpressions"][0];
            assert_eq!(expr["key"], "nodelens.io/exclude");
            assert_eq!(expr["operator"], "NotIn");
            assert_eq!(strs(&expr["values"]), ["true"]);
        }),
        ("tolerations-critical-only", "tolerations", |spec| {
            let tolerations = spec["tolerations"].as_sequence().unwrap();
            let keys: Vec<&str> = tolerations
                .iter()
                .map(|t| t["key"].as_str().expect("every toleration names its taint"))
                .collect();
            for taint in [
                "not-ready",
                "unreachable",
                "disk-pressure",
                "memory-pressure",
                "pid-pressure",
                "unschedulable",
            ] {
                assert!(
                    keys.contains(&format!("node.kubernetes.io/{taint}").as_str()),
                    "{taint} not tolerated: {keys:?}"
                );
            }
            assert_eq!(keys.len(), 6, "only node-condition taints: {keys:?}");
        }),
    ];
    for (component, field, check) in cases {
        let objects = render_with_component(
            &manifests(),
            &manifests().join("components").join(component),
        );
        assert_render_is_clean(
            &repo()
                .join("target/overlays/components")
                .join(component)
                .join("rendered.yaml"),
        );
        check(&pod(&objects));
        let ds = find(&objects, "DaemonSet");
        assert_eq!(
            serde_yaml::to_string(&ds["spec"]["selector"]).unwrap(),
            selector,
            "{component} changed the selector"
        );
        // Nothing else changed: the DaemonSet without the field, and every other object.
        assert_eq!(
            without_pod_field(ds, field),
            without_pod_field(base_ds, field),
            "{component} changed more than {field}"
        );
        assert_eq!(objects.len(), base.len(), "{component}");
        for (o, b) in objects
            .iter()
            .zip(&base)
            .filter(|(o, _)| o["kind"] != "DaemonSet")
        {
            assert_eq!(o, b, "{component} changed a {:?}", o["kind"]);
        }
    }
}

#[test]
fn every_component_keeps_the_selector_and_the_pod_labels_match_it() {
    // As kustomize renders it (keys sorted), compared with each render.
    let base = render(&manifests());
    let selector = serde_yaml::to_string(&find(&base, "DaemonSet")["spec"]["selector"]).unwrap();
    let mut components: Vec<PathBuf> = std::fs::read_dir(manifests().join("components"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("kustomization.yaml").exists())
        .collect();
    components.sort();
    assert!(components.len() >= 4, "{components:?}");
    for component in std::iter::once(None).chain(components.iter().map(Some)) {
        let objects = match component {
            Some(c) => render_with_component(&manifests(), c),
            None => base.clone(),
        };
        let name = component.map_or("base".into(), |c| c.display().to_string());
        let ds = find(&objects, "DaemonSet");
        assert_eq!(
            serde_yaml::to_string(&ds["spec"]["selector"]).unwrap(),
            selector,
            "{name}: the selector must stay byte-identical to the base"
        );
        let labels = ds["spec"]["template"]["metadata"]["labels"]
            .as_mapping()
            .unwrap();
        for (k, v) in ds["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
            assert_eq!(labels.get(k), Some(v), "{name}: pod labels lack {k:?}");
        }
        // The Services find the pods too.
        for service in objects.iter().filter(|o| o["kind"] == "Service") {
            for (k, v) in service["spec"]["selector"].as_mapping().unwrap() {
                assert_eq!(labels.get(k), Some(v), "{name}: Service selector {k:?}");
            }
        }
    }
}

#[test]
fn the_remote_write_component_turns_push_on_with_the_node_label_and_egress() {
    let objects = render_with_component(&manifests(), &manifests().join("components/remote-write"));
    assert_render_is_clean(&repo().join("target/overlays/components/remote-write/rendered.yaml"));
    let config = &find(&objects, "ConfigMap")["data"];
    assert!(
        config["NODELENS_REMOTE_WRITE_URL"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    assert_eq!(
        config["NODELENS_REMOTE_WRITE_BEARER_TOKEN_FILE"],
        "/etc/nodelens/remote-write/token"
    );
    let agent = &find(&objects, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<&str> = agent["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    let at = |name: &str| {
        env.iter()
            .position(|e| *e == name)
            .unwrap_or_else(|| panic!("{name}: {env:?}"))
    };
    // Kubernetes expands $(VAR) only from variables defined earlier in the list.
    assert!(at("NODELENS_NODE_NAME") < at("NODELENS_REMOTE_WRITE_EXTERNAL_LABELS"));
    let mounts = serde_yaml::to_string(&agent["volumeMounts"]).unwrap();
    assert!(mounts.contains("/etc/nodelens/remote-write"), "{mounts}");
    let egress = &find(&objects, "NetworkPolicy")["spec"]["egress"];
    let egress = serde_yaml::to_string(egress).unwrap();
    assert!(egress.contains("443") && egress.contains("53"), "{egress}");
}

#[test]
fn the_why_slow_component_turns_on_series_the_agent_knows() {
    let objects = render_with_component(&manifests(), &manifests().join("components/why-slow"));
    assert_render_is_clean(&repo().join("target/overlays/components/why-slow/rendered.yaml"));
    let series = common::why_slow_series();
    assert_eq!(
        find(&objects, "ConfigMap")["data"]["NODELENS_CGROUP_SERIES"],
        series.as_str(),
        "the rendered ConfigMap holds the component's value"
    );
    // The agent takes it: a name it does not know is a usage error (exit 2, naming the
    // field) before anything runs.
    let out = Command::new(common::BIN)
        .args(["--cgroup-series", &series, "preflight", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(2) && !stderr.contains("cgroups.series"),
        "{:?}: {stderr}",
        out.status
    );
    assert!(series.split(',').any(|n| n == "default"), "{series}");
}
