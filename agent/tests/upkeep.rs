//! The agent keeps its kernel maps itself, on its own timer: with nobody scraping, and with
//! the `cgroup` collector off, churn never fills `CGROUP_STATS` and nothing is lost. The
//! map's fill is read with bpftool, not from nodelens.
mod common;

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::Agent;

const CHURN: usize = 20_000;

/// Cgroups holding a slot of CGROUP_STATS: the entries of CGROUP_SLOTS (id to slot), from
/// bpftool. Tests run one at a time, so the only such map is this test's agent's.
fn cgroup_slots_in_use() -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "name", "CGROUP_SLOTS"])
        .output()
        .expect("bpftool (cargo xtask setup --test-tools installs it)");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Runs one short process in each of `n` fresh cgroups under `parent`, removing each
/// cgroup after its process exits, so every cgroup gets a kernel entry and then goes away.
fn churn(parent: &Path, n: usize) {
    for i in 0..n {
        let dir = parent.join(format!("c{i}"));
        std::fs::create_dir(&dir).unwrap();
        let procs = File::options()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .unwrap();
        let fd = procs.as_raw_fd();
        let mut cmd = Command::new("true");
        // SAFETY: after fork, write(2) on an fd opened before it is async-signal-safe. "0"
        // moves the writer, the child, into the cgroup before it execs.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        assert!(cmd.status().unwrap().success());
        drop(procs);
        std::fs::remove_dir(&dir).unwrap();
    }
}

/// Churns while sampling the map's fill every 500 ms; returns the highest fill seen.
fn churn_and_watch(tag: &str) -> usize {
    let root = common::cgroup2_root();
    let parent = root.join(format!("nodelens-upkeep-{tag}-{}", std::process::id()));
    std::fs::create_dir(&parent).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let max = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (done, max) = (done.clone(), max.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                max.fetch_max(cgroup_slots_in_use(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let started = std::time::Instant::now();
    churn(&parent, CHURN);
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    std::fs::remove_dir(&parent).unwrap();
    let max = max.load(Ordering::Relaxed);
    eprintln!(
        "{tag}: {CHURN} cgroups in {:.0?}, at most {max} slots of CGROUP_STATS in use",
        started.elapsed()
    );
    max
}

fn lost(m: &common::Metrics, reason: &str) -> f64 {
    m.get(&format!(
        "nodelens_events_lost_total{{reason=\"{reason}\"}}"
    ))
    .unwrap_or(0.0)
}

#[test]
fn churn_without_the_cgroup_collector_costs_no_map_entries() {
    let agent = Agent::start(&["--collectors-disabled", "cgroup"]);
    let max = churn_and_watch("off");
    let m = agent.metrics();
    // The programs account per cgroup only when the collector is on: not one slot is
    // claimed, whatever the churn.
    assert_eq!(
        max, 0,
        "{max} slots of CGROUP_STATS in use with per-cgroup accounting off"
    );
    // The map belongs to the cgroup family, which is not running: nodelens reports neither
    // its fill nor its capacity.
    assert_eq!(
        m.get("nodelens_map_entries{map=\"CGROUP_STATS\"}"),
        None,
        "no fill reported for a map of a family that is off"
    );
    for reason in ["cgroup_map_full_sched", "cgroup_map_full_reclaim"] {
        assert_eq!(lost(&m, reason), 0.0, "{reason}");
    }
}

#[test]
fn churn_with_nobody_scraping_stays_below_half_the_map() {
    let agent = Agent::start(&[]);
    // One scrape before, so that the capacity is known; none during the churn.
    let capacity = agent
        .metrics()
        .value("nodelens_map_capacity{map=\"CGROUP_STATS\"}") as usize;
    let max = churn_and_watch("on");
    assert!(
        max < capacity / 2,
        "{max} of {capacity} slots of CGROUP_STATS in use with nobody scraping"
    );
    let m = agent.metrics();
    for reason in ["cgroup_map_full_sched", "cgroup_map_full_reclaim"] {
        assert_eq!(lost(&m, reason), 0.0, "{reason}");
    }
    let entries = m.value("nodelens_map_entries{map=\"CGROUP_STATS\"}");
    assert!(
        entries < capacity as f64 / 2.0,
        "nodelens agrees: {entries}"
    );
    assert!(
        m.value("nodelens_cgroups_tracked") <= 4096.0,
        "tracked stays within --max-cgroups"
    );
}
