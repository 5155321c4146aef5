//! Node basics agree with /proc, and match what node_exporter 1.5 emits on this machine.
mod common;

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Agent, Metrics, read};

fn proc_cpu0_user_seconds() -> f64 {
    let line = read("/proc/stat")
        .lines()
        .find(|l| l.starts_with("cpu0 "))
        .map(str::to_owned)
        .expect("cpu0 line");
    line.split_ascii_whitespace()
        .nth(1)
        .unwrap()
        .parse::<f64>()
        .unwrap()
        / 100.0
}

fn proc_meminfo_kb(key: &str) -> f64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_ascii_whitespace().next()?.parse().ok())
        .expect("meminfo key")
}

#[test]
fn cpu_and_memory_agree_with_proc() {
    let agent = Agent::start(&["--collectors-disabled", "sched"]);
    let before = proc_cpu0_user_seconds();
    let m = agent.metrics();
    let after = proc_cpu0_user_seconds();
    let ours = m.value("node_cpu_seconds_total{cpu=\"0\",mode=\"user\"}");
    // Slack: /proc/stat's per-CPU user time is not monotonic. It includes the pending time
    // of the task running on the CPU, which the kernel may later account elsewhere, so it
    // steps back by up to that task's unaccounted stretch (seen here: 0.03 s, and 0.18 s
    // with the machine busy). Half a second still tells user time from every other mode.
    assert!(
        (before - 0.5..=after + 0.5).contains(&ours),
        "{before} - 0.5 <= {ours} <= {after} + 0.5"
    );
    assert_eq!(
        m.value("node_memory_MemTotal_bytes"),
        proc_meminfo_kb("MemTotal") * 1024.0
    );
    let cpus = read("/proc/stat")
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert_eq!(m.family("node_cpu_seconds_total").len(), cpus * 8);
}

struct NodeExporter(std::process::Child, String);

impl NodeExporter {
    fn start() -> NodeExporter {
        let addr = format!("127.0.0.1:{}", common::free_port());
        let child = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address={addr}"))
            .args([
                "--collector.disable-defaults",
                "--collector.cpu",
                "--collector.meminfo",
                "--collector.diskstats",
                "--collector.filesystem",
                "--collector.loadavg",
                "--collector.pressure",
                "--collector.vmstat",
                "--collector.stat",
                "--collector.uname",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter (cargo xtask setup --test-tools installs it)");
        // Owned right away, so Drop reaps it even if it never becomes ready.
        let ne = NodeExporter(child, addr);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if common::http(&ne.1, "GET", "/metrics", &[]).is_ok_and(|r| r.0 == 200) {
                return ne;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("node_exporter did not start on {}", ne.1);
    }

    fn metrics(&self) -> Metrics {
        let (_, _, body) = common::http(&self.1, "GET", "/metrics", &[]).unwrap();
        Metrics::parse(&String::from_utf8(body).unwrap())
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// node_* families, without node_exporter's own (scrape and build) metrics.
fn node_families(m: &Metrics) -> BTreeSet<String> {
    m.names()
        .into_iter()
        .filter(|n| {
            n.starts_with("node_")
                && !n.starts_with("node_scrape_")
                && !n.starts_with("node_exporter_")
        })
        .collect()
}

#[test]
fn families_labels_and_stable_values_match_node_exporter() {
    let ne = NodeExporter::start();
    let agent = Agent::start(&["--collectors-disabled", "sched"]);
    let theirs = ne.metrics();
    let ours = agent.metrics();

    let (tf, of) = (node_families(&theirs), node_families(&ours));
    assert!(
        tf.len() > 80,
        "node_exporter emitted only {} families",
        tf.len()
    );
    let missing: Vec<_> = tf.difference(&of).collect();
    let extra: Vec<_> = of.difference(&tf).collect();
    assert!(
        missing.is_empty(),
        "families node_exporter has and we lack: {missing:?}"
    );
    assert!(extra.is_empty(), "families we add under node_*: {extra:?}");

    for family in &tf {
        assert_eq!(
            theirs.label_names(family),
            ours.label_names(family),
            "label names of {family}"
        );
        let base = family.strip_suffix("_total").unwrap_or(family);
        let their_type = theirs
            .types
            .get(family.as_str())
            .or_else(|| theirs.types.get(base));
        let our_type = ours
            .types
            .get(family.as_str())
            .or_else(|| ours.types.get(base));
        assert_eq!(their_type, our_type, "TYPE of {family}");
    }

    // Values that cannot move between the two scrapes must be equal.
    for series in [
        "node_boot_time_seconds",
        "node_memory_MemTotal_bytes",
        "node_memory_SwapTotal_bytes",
        "node_memory_Hugepagesize_bytes",
        "node_memory_VmallocTotal_bytes",
    ] {
        assert_eq!(theirs.value(series), ours.value(series), "{series}");
    }
    // The same series (label sets), where the set of series cannot change between scrapes.
    for family in [
        "node_uname_info",
        "node_disk_info",
        "node_cpu_seconds_total",
        "node_cpu_guest_seconds_total",
        "node_disk_reads_completed_total",
    ] {
        let series = |m: &Metrics| -> BTreeSet<String> {
            m.family(family)
                .into_iter()
                .map(|(s, _)| s.to_owned())
                .collect()
        };
        assert_eq!(series(&theirs), series(&ours), "{family} series");
    }
    let root = "node_filesystem_size_bytes{device=\"/dev/vda\",fstype=\"ext4\",mountpoint=\"/\"}";
    if let Some(size) = theirs.get(root) {
        assert_eq!(ours.get(root), Some(size), "{root}");
    }
}
