//! End to end: the real binary on a port, scraped over HTTP, checked by promtool, then
//! stopped with SIGTERM, leaving no BPF programs behind.
mod common;

use std::{io::Read, time::Duration};

use common::{Agent, http, promtool_problems};

/// Every family issue #2 promises (and per-pod disk I/O), with data on this machine. The
/// per-pod series off by default (context switches, reclaim stalls, blocked time, pressure,
/// throttling, disk bytes) are exported when `--cgroup-series` asks (tests/pods.rs,
/// tests/docs.rs, tests/disk.rs).
const FAMILIES: &[&str] = &[
    "nodelens_runqueue_latency_seconds_bucket",
    "nodelens_runqueue_latency_seconds_sum",
    "nodelens_runqueue_latency_seconds_count",
    "nodelens_cpu_context_switches_total",
    "nodelens_disk_io_latency_seconds_count",
    "nodelens_disk_io_size_bytes_count",
    "nodelens_memory_reclaim_stall_seconds_count",
    "nodelens_oom_kills_total",
    "nodelens_probe_runs_total",
    "nodelens_probe_run_seconds_total",
    "nodelens_map_entries",
    "nodelens_map_capacity",
    "nodelens_events_lost_total",
    "nodelens_cgroup_cpu_seconds_total",
    "nodelens_cgroup_runqueue_wait_seconds_total",
    "nodelens_cgroup_disk_ios_total",
    "nodelens_cgroup_disk_io_seconds_total",
    "nodelens_map_memory_bytes",
    "nodelens_cgroups_tracked",
    "nodelens_cgroup_evictions_total",
    "nodelens_cgroups_unknown_total",
    "nodelens_build_info",
    "nodelens_probe_up",
    "nodelens_collector_duration_seconds",
    "nodelens_collector_success",
    "node_cpu_seconds_total",
    "node_cpu_guest_seconds_total",
    "node_memory_MemTotal_bytes",
    "node_load1",
    "node_boot_time_seconds",
    "node_context_switches_total",
    "node_forks_total",
    "node_intr_total",
    "node_procs_running",
    "node_procs_blocked",
    "node_pressure_cpu_waiting_seconds_total",
    "node_vmstat_pgfault",
    "node_uname_info",
    "node_disk_reads_completed_total",
    "node_disk_info",
    "node_filesystem_size_bytes",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
];

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn live_output_is_complete_and_promtool_clean() {
    let agent = Agent::start(&[]);
    // A little real disk I/O, so the block histograms have a series.
    common::direct_reads(16);
    // Completions land a moment after dd returns.
    agent.metrics_until(Duration::from_secs(10), "every family with a sample", |m| {
        FAMILIES.iter().all(|f| !m.family(f).is_empty())
    });
    let text = agent.scrape();
    let m = common::Metrics::parse(&text);
    for family in FAMILIES {
        assert!(
            !m.family(family).is_empty(),
            "family {family} missing or empty"
        );
    }
    // Only CPU time, run-queue wait, and disk requests and device time per pod by default
    // (docs/metrics.md says why).
    for off in [
        "nodelens_cgroup_disk_io_bytes_total",
        "nodelens_cgroup_context_switches_total",
        "nodelens_cgroup_reclaim_stall_seconds_total",
        "nodelens_cgroup_blocked_seconds_total",
        "nodelens_cgroup_pressure_memory_waiting_seconds_total",
        "nodelens_cgroup_cpu_cfs_periods_total",
    ] {
        assert!(!text.contains(off), "{off} is off by default");
    }
    assert!(m.value("nodelens_runqueue_latency_seconds_count") > 0.0);
    for (series, v) in m.family("nodelens_probe_up") {
        assert_eq!(v, 1.0, "{series} should be up on this kernel");
        assert!(
            series.contains("attach=\"tp_btf\""),
            "{series}: tp_btf preferred"
        );
    }
    for (series, v) in m.family("nodelens_collector_success") {
        assert_eq!(v, 1.0, "{series}");
    }
    let problems = promtool_problems(&text);
    assert!(problems.is_empty(), "promtool check metrics: {problems:#?}");
}

#[test]
fn routes_methods_and_content_negotiation() {
    let agent = Agent::start(&[]);
    let a = agent.addr.as_str();

    let (status, headers, body) = http(a, "GET", "/metrics", &[]).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(!String::from_utf8(body).unwrap().contains("# EOF"));

    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, headers, body) = http(a, "GET", "/metrics", &[("Accept", accept)]).unwrap();
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    assert!(
        String::from_utf8(body)
            .unwrap()
            .trim_end()
            .ends_with("# EOF")
    );

    let (status, headers, body) =
        http(a, "GET", "/metrics", &[("Accept-Encoding", "gzip")]).unwrap();
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    let mut plain = String::new();
    flate2::read::GzDecoder::new(body.as_slice())
        .read_to_string(&mut plain)
        .expect("valid gzip");
    assert!(plain.contains("node_boot_time_seconds "));

    assert_eq!(http(a, "GET", "/healthz", &[]).unwrap().0, 200);
    assert_eq!(http(a, "GET", "/readyz", &[]).unwrap().0, 200);
    let (status, _, body) = http(a, "GET", "/", &[]).unwrap();
    assert_eq!(status, 200);
    let page = String::from_utf8(body).unwrap();
    assert!(
        page.contains("/metrics") && page.contains("sched_switch") && page.contains("tp_btf"),
        "{page}"
    );
    // How the families measure here: per-pod disk I/O on this hybrid host goes to the
    // issuing task's cgroup.
    assert!(
        page.contains("disk: per-pod disk I/O goes to the issuing task"),
        "{page}"
    );
    assert_eq!(http(a, "GET", "/nope", &[]).unwrap().0, 404);
    let (status, headers, _) = http(a, "POST", "/metrics", &[]).unwrap();
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
    assert_eq!(http(a, "DELETE", "/", &[]).unwrap().0, 405);
    let (status, _, body) = http(a, "HEAD", "/metrics", &[]).unwrap();
    assert_eq!((status, body.len()), (200, 0));
    // Garbage on the socket must not take the agent down.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(a).unwrap();
        let _ = s.write_all(b"\x00\x01garbage\r\n\r\n");
    }
    assert_eq!(http(a, "GET", "/healthz", &[]).unwrap().0, 200);
}

/// Every loaded BPF program, as bpftool lists them: (id, name).
fn programs() -> Vec<(u64, String)> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "list"])
        .output()
        .expect("bpftool (cargo xtask setup --test-tools installs it)");
    assert!(out.status.success(), "bpftool prog list failed");
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_owned())))
        .collect()
}

#[test]
fn sigterm_exits_zero_quickly_and_detaches_every_program() {
    let before = programs();
    let agent = Agent::start(&[]);
    // The programs this agent loaded: those that appeared after it started, one per probe
    // that is up (the wakeup probes only load when sched_switch falls back).
    let running: Vec<_> = programs()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let up = agent
        .metrics()
        .family("nodelens_probe_up")
        .iter()
        .filter(|(_, v)| *v == 1.0)
        .count();
    assert!(
        up >= 8 && running.len() >= up,
        "expected the {up} probes' programs loaded, bpftool shows {running:?}"
    );
    let (code, stderr) = agent.terminate(Duration::from_secs(5));
    assert_eq!(code, Some(0), "exit status; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The kernel frees a program after an RCU grace period once its last fd closes.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut after = programs();
    while after.iter().any(|p| running.contains(p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = programs();
    }
    for (id, name) in &running {
        assert!(
            !after.iter().any(|(a, _)| a == id),
            "program {name} (id {id}) still loaded after exit"
        );
    }
}
