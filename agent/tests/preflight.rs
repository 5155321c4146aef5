//! `nodelens preflight` and least privilege: the report, the files it shares with the agent,
//! a refusal when capabilities are missing, and the agent running with only BPF and PERFMON.
mod common;

use std::process::Command;

use common::Agent;

#[test]
fn preflight_reports_and_hands_the_node_identity_to_the_agent() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN)
        .args(["preflight", "--output-dir"])
        .arg(dir.path())
        .env("NODELENS_NODE_NAME", "node-under-test")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "preflight failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "kernel",
        "btf",
        "tracefs",
        "capabilities",
        "memlock",
        "cgroup2",
        "container logs",
        "sched_switch (core)",
        "tp_btf",
        "result: ok",
    ] {
        assert!(text.contains(want), "report lacks {want}:\n{text}");
    }
    let node: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("node.json")).unwrap())
            .unwrap();
    let machine_id = common::read("/etc/machine-id").trim().to_owned();
    assert_eq!(node["machine_id"], machine_id.as_str());
    assert_eq!(node["node"], "node-under-test");

    let json = Command::new(common::BIN)
        .args(["preflight", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("--json prints JSON");
    assert_eq!(report["ok"], true);
    // Every probe the report lists attached; the wakeup probes are only listed where
    // sched_switch falls back to them.
    let probes = report["probes"].as_array().unwrap();
    assert!(probes.len() >= 8, "{probes:?}");
    for p in probes {
        assert_ne!(p["attach"], "none", "{p}");
    }
    for core in [
        "sched_switch",
        "block_rq_issue",
        "block_rq_complete",
        "mark_victim",
    ] {
        assert!(probes.iter().any(|p| p["probe"] == core), "{core} listed");
    }

    let agent = Agent::start(&[
        "--preflight-dir",
        dir.path().to_str().unwrap(),
        "--collectors-enabled",
        "stat",
    ]);
    let m = agent.metrics();
    let info = m.family("nodelens_node_info");
    assert_eq!(info.len(), 1);
    assert!(
        info[0].0.contains(&format!("machine_id=\"{machine_id}\""))
            && info[0].0.contains("node=\"node-under-test\""),
        "{info:?}"
    );
    let (_, _, page) = common::http(&agent.addr, "GET", "/", &[]).unwrap();
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("Preflight") && page.contains("node-under-test"),
        "{page}"
    );
}

#[test]
fn preflight_refuses_without_bpf_capabilities_and_says_what_to_add() {
    common::require_root();
    // Drop BPF, PERFMON and SYS_ADMIN from the bounding set: even root then lacks them.
    let out = Command::new("setpriv")
        .args(["--bounding-set=-bpf,-perfmon,-sys_admin", "--"])
        .arg(common::BIN)
        .arg("preflight")
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(
        out.status.code(),
        Some(0),
        "must fail without BPF:\n{stdout}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("add capability BPF") && stderr.contains("add capability PERFMON"),
        "{stderr}"
    );
    assert!(stdout.contains("result: FAILED"), "{stdout}");
}

#[test]
fn agent_works_with_only_bpf_and_perfmon() {
    common::require_root();
    let addr = format!("127.0.0.1:{}", common::free_port());
    // Only what the DaemonSet grants: BPF and PERFMON (plus DAC_READ_SEARCH-free root reads).
    let mut child = Command::new("setpriv")
        .args(["--bounding-set=-all,+bpf,+perfmon", "--inh-caps=-all", "--"])
        .arg(common::BIN)
        .args(["--listen-address", &addr])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut ready = false;
    while std::time::Instant::now() < deadline {
        if let Ok((200, _, _)) = common::http(&addr, "GET", "/readyz", &[]) {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let scrape = common::http(&addr, "GET", "/metrics", &[]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "agent never became ready with only BPF and PERFMON");
    let m = common::Metrics::parse(&String::from_utf8(scrape.unwrap().2).unwrap());
    let up = m.family("nodelens_probe_up");
    assert!(!up.is_empty(), "probes are listed");
    for (series, v) in up {
        assert_eq!(v, 1.0, "{series} should attach with BPF and PERFMON alone");
    }
    assert!(m.value("nodelens_runqueue_latency_seconds_count") > 0.0);
}
