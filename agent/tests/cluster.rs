//! End to end with a real Prometheus: three simulated nodes (network namespaces on a bridge,
//! each with its own "node IP"), one agent per node on <node IP>:9560, Prometheus in the
//! root namespace scraping them with the shipped relabelling and loading the shipped rules.
//! Every dashboard query must return data, and a killed agent must show as down and raise
//! the probe-down alert. The push variant has the three agents remote_write to one
//! Prometheus (its receiver on the bridge address) instead, with no scraping at all.
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value as Json;

const BRIDGE: &str = "nlbr0";
const SUBNET: &str = "10.213.0";
const NODES: usize = 3;

fn ns(i: usize) -> String {
    format!("nl-node-{i}")
}

fn node_ip(i: usize) -> String {
    format!("{SUBNET}.{i}")
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ip_ok(args: &[&str]) {
    assert!(ip(args), "ip {args:?} failed");
}

/// The simulated nodes, their agents and Prometheus; everything is torn down on drop.
struct Cluster {
    agents: Vec<Option<Child>>,
    prometheus: Option<Child>,
    prom_addr: String,
    _dir: tempfile::TempDir,
}

fn teardown_network() {
    for i in 1..=NODES {
        let _ = ip(&["netns", "delete", &ns(i)]);
        let _ = ip(&["link", "delete", &format!("nlv{i}")]);
    }
    let _ = ip(&["link", "delete", BRIDGE]);
}

/// How the data reaches Prometheus.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Scrape,
    Push,
}

impl Cluster {
    fn start(mode: Mode) -> Cluster {
        common::require_root();
        teardown_network(); // leftovers of an interrupted run
        ip_ok(&["link", "add", BRIDGE, "type", "bridge"]);
        ip_ok(&["addr", "add", &format!("{SUBNET}.254/24"), "dev", BRIDGE]);
        ip_ok(&["link", "set", BRIDGE, "up"]);
        // Scraping: Prometheus on loopback. Push: on the bridge, where the agents reach it.
        let prom_addr = match mode {
            Mode::Scrape => format!("127.0.0.1:{}", common::free_port()),
            Mode::Push => format!("{SUBNET}.254:{}", common::free_port()),
        };
        let mut agents = Vec::new();
        for i in 1..=NODES {
            let (n, veth) = (ns(i), format!("nlv{i}"));
            ip_ok(&["netns", "add", &n]);
            ip_ok(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &n,
            ]);
            ip_ok(&["link", "set", &veth, "master", BRIDGE, "up"]);
            ip_ok(&[
                "-n",
                &n,
                "addr",
                "add",
                &format!("{}/24", node_ip(i)),
                "dev",
                "eth0",
            ]);
            ip_ok(&["-n", &n, "link", "set", "eth0", "up"]);
            ip_ok(&["-n", &n, "link", "set", "lo", "up"]);
            // nsenter rather than `ip netns exec`, which mounts a fresh sysfs over /sys and
            // so hides the host's cgroup hierarchies: a node agent sees them (the
            // DaemonSet mounts them), and the per-pod families read them.
            let mut agent = Command::new("nsenter");
            agent
                .arg(format!("--net=/run/netns/{n}"))
                .arg("--")
                .arg(common::BIN)
                .args(["--listen-address", &format!("{}:9560", node_ip(i))])
                .args(["--node-name", &format!("node-{i}")])
                // As the DaemonSet with the `why-slow` component: the dashboard's "Why is
                // this pod slow" row needs the series it turns on.
                .env("NODELENS_CGROUP_SERIES", common::why_slow_series())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if mode == Mode::Push {
                agent.args([
                    "--remote-write-url",
                    &format!("http://{prom_addr}/api/v1/write"),
                    "--remote-write-interval",
                    "1s",
                    "--remote-write-external-labels",
                    &format!("node=node-{i}"),
                    // The per-pod quantile panel reads native histograms.
                    "--remote-write-native-histograms",
                ]);
            }
            agents.push(Some(agent.spawn().unwrap()));
        }

        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_owned();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            prometheus_config(&repo, mode),
        )
        .unwrap();
        let receiver: &[&str] = match mode {
            Mode::Scrape => &[],
            // Native histograms on: the pushed classic series are floats and stay, beside
            // the native ones.
            Mode::Push => &[
                "--web.enable-remote-write-receiver",
                "--enable-feature=native-histograms",
            ],
        };
        let prometheus = common::prometheus(dir.path(), &prom_addr, receiver);
        Cluster {
            agents,
            prometheus: Some(prometheus),
            prom_addr,
            _dir: dir,
        }
    }

    fn query(&self, promql: &str) -> Vec<Json> {
        let (code, _, body) = common::http(
            &self.prom_addr,
            "GET",
            &format!("/api/v1/query?query={}", common::url_encode(promql)),
            &[],
        )
        .expect("query Prometheus");
        let v: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
        assert_eq!(code, 200, "{promql}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    fn api(&self, path: &str) -> Json {
        let (_, _, body) = common::http(&self.prom_addr, "GET", path, &[]).expect("Prometheus API");
        serde_json::from_slice(&body).unwrap_or(Json::Null)
    }

    /// `up` per target.
    fn up(&self) -> Vec<(String, f64)> {
        self.query("up{job=\"nodelens\"}")
            .iter()
            .map(|r| {
                (
                    r["metric"]["instance"].as_str().unwrap_or("").to_owned(),
                    r["value"][1]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(-1.0),
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self
            .agents
            .iter_mut()
            .flatten()
            .chain(self.prometheus.iter_mut())
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        teardown_network();
    }
}

/// Prometheus scraping the three node IPs with the shipped scrape config's relabelling:
/// targets are given as kubelet addresses (<IP>:10250) with the node name, as the node role
/// discovers them.
fn prometheus_config(repo: &Path, mode: Mode) -> String {
    let shipped: serde_yaml::Value = serde_yaml::from_str(&common::read(
        repo.join("manifests/prometheus/scrape-config.yml"),
    ))
    .unwrap();
    let job = &shipped["scrape_configs"][0];
    // What the node role discovers: each node's kubelet address and its name.
    let static_configs: Vec<Json> = (1..=NODES)
        .map(|i| {
            serde_json::json!({
                "targets": [format!("{}:10250", node_ip(i))],
                "labels": {"__meta_kubernetes_node_name": format!("node-{i}")},
            })
        })
        .collect();
    let scrape_configs = match mode {
        Mode::Scrape => serde_json::json!([{
            "job_name": job["job_name"].as_str().unwrap(),
            "static_configs": static_configs,
            "relabel_configs": serde_json::to_value(&job["relabel_configs"]).unwrap(),
        }]),
        Mode::Push => serde_json::json!([]),
    };
    let config = serde_json::json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [repo.join("manifests/prometheus/rules.yml")],
        "scrape_configs": scrape_configs,
    });
    // JSON is YAML.
    config.to_string()
}

/// What a panel's description says when its queries read native histograms.
const NEEDS_NATIVE: &str = "Needs native histograms";

/// Every query of every dashboard panel, with the dashboard's variables filled in: (panel
/// title, query, whether it reads native histograms).
fn dashboard_queries(repo: &Path) -> Vec<(String, String, bool)> {
    let dash: Json = serde_json::from_str(&common::read(
        repo.join("manifests/grafana/nodelens-dashboard.json"),
    ))
    .unwrap();
    dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("").to_owned();
            let native = p["description"]
                .as_str()
                .is_some_and(|d| d.contains(NEEDS_NATIVE));
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| {
                    let expr = t["expr"]
                        .as_str()
                        .unwrap_or("")
                        .replace("$instance", ".*")
                        .replace("$namespace", ".*")
                        .replace("$pod", ".*")
                        .replace("$__rate_interval", "10s");
                    (title.clone(), expr, native)
                })
        })
        .collect()
}

fn programs() -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "list"])
        .output()
        .unwrap();
    let v: Json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

#[test]
fn three_nodes_scraped_by_prometheus_with_dashboards_and_alerts() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let before = programs();
    let cluster = Cluster::start(Mode::Scrape);
    common::wait_for("Prometheus ready", Duration::from_secs(30), || {
        common::http(&cluster.prom_addr, "GET", "/-/ready", &[]).is_ok_and(|r| r.0 == 200)
    });
    // instance is the node's name, as pushed (the shipped scrape config sets it).
    let want: Vec<String> = (1..=NODES).map(|i| format!("node-{i}")).collect();
    common::wait_for(
        "up == 1 on the three nodes",
        Duration::from_secs(30),
        || {
            let up = cluster.up();
            want.iter()
                .all(|w| up.iter().any(|(i, v)| i == w && *v == 1.0))
        },
    );
    let _work = workload_for_every_panel();
    assert_every_dashboard_query_has_data(&cluster, &repo, false);
    let node_info = cluster.query("nodelens_node_info");
    assert_eq!(
        node_info.len(),
        NODES,
        "one nodelens_node_info per node: {node_info:?}"
    );

    let rules = cluster.api("/api/v1/rules");
    let loaded: Vec<&Json> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    let shipped = common::read(repo.join("manifests/prometheus/rules.yml"))
        .matches("- alert:")
        .count();
    assert!(shipped >= 10, "rules.yml has {shipped} alerts");
    assert_eq!(loaded.len(), shipped, "every alert rule loads: {rules}");
    assert!(loaded.iter().all(|r| r["health"] != "err"), "{rules}");

    // Kill the second node's agent: its target goes down, the probe-down alert goes
    // pending for it, and the other two stay up.
    let mut cluster = cluster;
    let mut victim = cluster.agents[1].take().unwrap();
    let _ = victim.kill();
    let _ = victim.wait();
    let dead = "node-2".to_owned();
    common::wait_for(
        "up == 0 for the killed agent",
        Duration::from_secs(20),
        || cluster.up().iter().any(|(i, v)| *i == dead && *v == 0.0),
    );
    common::wait_for(
        "NodelensProbeDown pending for the killed agent",
        Duration::from_secs(20),
        || {
            let alerts = cluster.api("/api/v1/alerts");
            alerts["data"]["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| {
                    a["labels"]["alertname"] == "NodelensProbeDown"
                        && a["labels"]["instance"] == dead.as_str()
                        && a["state"] == "pending"
                })
        },
    );
    let up = cluster.up();
    for (i, w) in want.iter().enumerate() {
        if i != 1 {
            assert!(
                up.iter().any(|(inst, v)| inst == w && *v == 1.0),
                "{w} must stay up: {up:?}"
            );
        }
    }

    drop(cluster);
    // Nothing left behind: namespaces, bridge, BPF programs.
    let netns = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !netns.contains("nl-node-"),
        "network namespaces left: {netns}"
    );
    assert!(!ip(&["link", "show", BRIDGE]), "bridge left behind");
    common::wait_for(
        "the agents' BPF programs to be freed",
        Duration::from_secs(5),
        || programs().iter().all(|id| before.contains(id)),
    );
}

/// What keeps the per-pod panels in data while they are checked: the cgroup that stalled
/// in reclaim (its series leave once it is gone), and work under a CPU limit that goes on
/// until dropped (the throttled share of periods is a ratio of two rates, no result once
/// nothing runs).
struct PanelWork {
    _reclaimed: common::Cgroups,
    busy: Option<common::Workload>,
    busy_cgroup: PathBuf,
    _busy_cgroups: common::Cgroups,
}

impl Drop for PanelWork {
    fn drop(&mut self) {
        // The loop's shell: every process of the cgroup goes, so that the cgroups can be
        // removed.
        drop(self.busy.take());
        common::empty_cgroup(&self.busy_cgroup);
    }
}

/// Disk I/O so every node's disk histograms have data, reclaim for the reclaim and
/// pressure panels, and work under a CPU limit for the throttling panel.
fn workload_for_every_panel() -> PanelWork {
    common::direct_reads(64);
    let reclaimed = common::reclaim_in_a_limited_cgroup("cluster");
    let name = format!("nodelens-cluster-busy-{}", std::process::id());
    let v2 = common::cgroup2_root().join(&name);
    let cpu_v1 = Path::new("/sys/fs/cgroup/cpu").join(&name);
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::create_dir_all(&cpu_v1).unwrap();
    // A loop that never sleeps, held to a tenth of a CPU: throttled in every period, on an
    // idle machine or a busy one. (A dd of a few ms every 0.1 s under half a CPU was
    // throttled only now and then, and under stress-ng load once not for a minute: the
    // throttling panel had no data.)
    std::fs::write(cpu_v1.join("cpu.cfs_quota_us"), "10000").unwrap();
    let busy_cgroup = common::Cgroups(vec![cpu_v1.clone(), v2.clone()]);
    let script = format!(
        "echo $$ > {}/cgroup.procs || exit 1; while :; do :; done",
        cpu_v1.display()
    );
    let busy = common::Workload::spawn_into(&v2, &["/bin/sh", "-c", &script]);
    PanelWork {
        _reclaimed: reclaimed,
        busy: Some(busy),
        busy_cgroup: v2,
        _busy_cgroups: busy_cgroup,
    }
}

/// Polls every dashboard query until it returns data: the workload's samples reach
/// Prometheus at the next scrape or push, and rate() needs two of them.
/// Every query has data; with `native` false (Prometheus without native histograms, as
/// the scrape test runs it, and as most users do), the panels that need them are left out.
fn assert_every_dashboard_query_has_data(cluster: &Cluster, repo: &Path, native: bool) {
    let queries = dashboard_queries(repo);
    assert!(!queries.is_empty(), "the dashboard has queries");
    assert!(
        queries.iter().any(|(_, _, n)| *n),
        "a panel reads native histograms"
    );
    for (title, expr, _) in queries.into_iter().filter(|(_, _, n)| native || !n) {
        common::wait_for(
            &format!("data for dashboard panel {title:?}: {expr}"),
            Duration::from_secs(60),
            || !cluster.query(&expr).is_empty(),
        );
    }
}

#[test]
fn three_nodes_push_to_one_prometheus_and_every_dashboard_query_has_data() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let cluster = Cluster::start(Mode::Push);
    common::wait_for("Prometheus ready", Duration::from_secs(30), || {
        common::http(&cluster.prom_addr, "GET", "/-/ready", &[]).is_ok_and(|r| r.0 == 200)
    });
    common::wait_for(
        "pushed data from the three nodes",
        Duration::from_secs(30),
        || cluster.query("nodelens_node_info").len() == NODES,
    );
    let _work = workload_for_every_panel();
    assert_every_dashboard_query_has_data(&cluster, &repo, true);
    // The external label each agent was given, and the default instance (its node name).
    for i in 1..=NODES {
        let q = format!(
            "node_memory_MemTotal_bytes{{node=\"node-{i}\",instance=\"node-{i}\",job=\"nodelens\"}}"
        );
        assert_eq!(cluster.query(&q).len(), 1, "{q}");
    }
    assert!(
        cluster.query("up").is_empty(),
        "nothing was scraped: the data came by push"
    );
}
