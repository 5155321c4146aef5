//! Least privilege at run time: once the probes are attached, the agent holds no
//! capability on any thread, has `no_new_privs`, runs under its seccomp filter, and still
//! does its work. Checked from the kernel's side, in /proc/<pid>/task/*/status.
mod common;

use std::time::Duration;

use common::Agent;

/// Field `key` of every thread's status file.
fn thread_fields(pid: u32, key: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix(&format!("{key}:"))
                    .map(|v| v.trim().to_owned())
            })
        })
        .collect()
}

#[test]
fn after_attaching_no_thread_holds_a_capability_and_the_filter_is_on() {
    let agent = Agent::start(&[]);
    let pid = agent.child.id();
    for (key, want) in [
        ("CapEff", "0000000000000000"),
        ("CapPrm", "0000000000000000"),
        ("CapInh", "0000000000000000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
    ] {
        let values = thread_fields(pid, key);
        assert!(!values.is_empty(), "{key}: no threads read");
        assert!(
            values.iter().all(|v| v == want),
            "{key}: {values:?}, want {want}"
        );
    }
    // The work goes on: eBPF counters keep growing, with scrapes, upkeep and per-cgroup
    // accounting all under the filter (kill mode: a missing entry would end the process).
    let first = agent.metrics();
    let count = "nodelens_runqueue_latency_seconds_count";
    let second = agent.metrics_until(
        Duration::from_secs(10),
        "run-queue events keep coming",
        |m| m.value(count) > first.value(count),
    );
    let info = second.family("nodelens_security_info");
    assert_eq!(info.len(), 1, "{info:?}");
    for label in [
        "capabilities=\"none\"",
        "no_new_privs=\"1\"",
        "seccomp=\"kill\"",
        "tls=\"off\"",
    ] {
        assert!(info[0].0.contains(label), "{label} in {info:?}");
    }
    // SIGTERM still detaches and exits cleanly under the filter.
    let (code, stderr) = agent.terminate(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("privileges after attaching"), "{stderr}");
}

#[test]
fn keep_capabilities_and_seccomp_off_are_honoured_and_reported() {
    let agent = Agent::start(&["--keep-capabilities", "--seccomp", "off"]);
    let pid = agent.child.id();
    assert!(
        thread_fields(pid, "CapEff")
            .iter()
            .all(|v| v != "0000000000000000"),
        "capabilities kept"
    );
    assert!(thread_fields(pid, "Seccomp").iter().all(|v| v == "0"));
    let m = agent.metrics();
    let info = m.family("nodelens_security_info");
    assert!(info[0].0.contains("seccomp=\"off\""), "{info:?}");
    assert!(!info[0].0.contains("capabilities=\"none\""), "{info:?}");
}
