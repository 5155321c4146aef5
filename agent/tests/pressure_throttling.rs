//! Per-cgroup pressure and CPU throttling (the `cgroup_pressure` and `cgroup_throttling`
//! families) against the kernel's own per-cgroup files, read in the same scrape window:
//! two CPU hogs sharing one CPU in a cgroup (its tasks wait), a memory-limited cgroup that
//! reads more than its limit (it stalls), and a busy loop under a 20% CPU limit in the v1
//! cpu controller of this hybrid host. Runs as root, one test at a time
//! (`--test-threads=1`).
mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::{Agent, Cgroups, Workload};

/// Whether nodelens's `ours` (seconds) is within 2% of the kernel's `theirs`.
fn within_2_percent(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= 0.02 * theirs
}

/// (some, full) of a cgroup's pressure file, in seconds.
fn psi(dir: &Path, file: &str) -> (f64, f64) {
    let (some, full) =
        nodelens::psi::parse(&common::read(dir.join(file))).unwrap_or_else(|e| panic!("{e}"));
    (some as f64 / 1e6, full as f64 / 1e6)
}

/// A cgroup2 cgroup (and, with `cpu_quota_us`, a v1 cpu cgroup of the same name with that
/// quota per 100 ms period), removed on drop.
fn cgroup(tag: &str, cpu_quota_us: Option<u32>) -> (Cgroups, PathBuf) {
    let name = format!("nodelens-{tag}-{}", std::process::id());
    let v2 = common::cgroup2_root().join(&name);
    std::fs::create_dir_all(&v2).unwrap();
    let mut dirs = Vec::new();
    if let Some(quota) = cpu_quota_us {
        let v1 = Path::new("/sys/fs/cgroup/cpu").join(&name);
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(v1.join("cpu.cfs_quota_us"), quota.to_string()).unwrap();
        dirs.push(v1);
    }
    dirs.push(v2.clone());
    (Cgroups(dirs), v2)
}

/// A series of `family` for the cgroup at `path` (relative to the cgroup2 root).
fn series(family: &str, path: &str) -> String {
    format!("{family}{{cgroup=\"{path}\"}}")
}

fn start_agent() -> Agent {
    common::require_root();
    common::mount_tracefs();
    Agent::start(&["--cgroup-series", "all"])
}

#[test]
fn cpu_and_memory_pressure_match_the_cgroups_own_files() {
    let agent = start_agent();
    // Two hogs on one CPU for 2 s: each waits about half the time, so the cgroup has
    // some CPU pressure nearly all along.
    let (_hogs_dirs, hogs) = cgroup("pressure-cpu", None);
    let hog = "taskset -c 0 timeout 2 sh -c 'while :; do :; done'; exit 0";
    let mut first = Workload::spawn_into(&hogs, &["/bin/sh", "-c", hog]);
    let mut second = Workload::spawn_into(&hogs, &["/bin/sh", "-c", hog]);
    first.reap_success();
    second.reap_success();
    // 64 MiB through the page cache in 16 MiB: reclaim, so memory pressure.
    let stalled = common::reclaim_in_a_limited_cgroup("pressure");
    let stalled_dir = common::cgroup2_root().join(stalled.name());
    let hogs_name = hogs
        .strip_prefix(common::cgroup2_root())
        .unwrap()
        .display()
        .to_string();

    let (cpu_some, _) = psi(&hogs, "cpu.pressure");
    assert!(
        cpu_some >= 0.5,
        "two hogs sharing a CPU for 2 s waited only {cpu_some} s by cpu.pressure"
    );
    let (memory_some, memory_full) = psi(&stalled_dir, "memory.pressure");
    assert!(
        memory_some > 0.0,
        "no memory pressure by the limited cgroup's own memory.pressure"
    );
    // Both cgroups are idle now, so their files hold still; nodelens reads them within a
    // few refreshes (1 s in tests).
    let mut last = String::new();
    agent.metrics_until(
        Duration::from_secs(20),
        "per-cgroup pressure equal to the files",
        |m| {
            let file_before = (
                psi(&hogs, "cpu.pressure"),
                psi(&stalled_dir, "memory.pressure"),
            );
            let ours = (
                m.get(&series(
                    "nodelens_cgroup_pressure_cpu_waiting_seconds_total",
                    &hogs_name,
                )),
                m.get(&series(
                    "nodelens_cgroup_pressure_memory_waiting_seconds_total",
                    &stalled.name(),
                )),
                m.get(&series(
                    "nodelens_cgroup_pressure_memory_stalled_seconds_total",
                    &stalled.name(),
                )),
            );
            let file_after = (
                psi(&hogs, "cpu.pressure"),
                psi(&stalled_dir, "memory.pressure"),
            );
            last = format!("files {file_before:?} then {file_after:?}, nodelens {ours:?}");
            let ((cpu, _), (mem_some, mem_full)) = file_after;
            file_before == file_after
                && ours.0.is_some_and(|v| within_2_percent(v, cpu))
                && ours.1.is_some_and(|v| within_2_percent(v, mem_some))
                && (mem_full == 0.0 || ours.2.is_some_and(|v| within_2_percent(v, mem_full)))
        },
    );
    assert!(!last.is_empty());
    eprintln!("cpu some {cpu_some} s, memory some {memory_some} s, full {memory_full} s: {last}");
}

/// `cpu.stat` of a v1 cpu cgroup: (periods, throttled periods, throttled seconds).
fn cpu_stat(dir: &Path) -> (f64, f64, f64) {
    let text = common::read(dir.join("cpu.stat"));
    let get = |key: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {key} in cpu.stat:\n{text}"))
    };
    (
        get("nr_periods"),
        get("nr_throttled"),
        get("throttled_time") / 1e9,
    )
}

#[test]
fn throttling_matches_cpu_stat_of_the_v1_cpu_controller() {
    let agent = start_agent();
    let (dirs, v2) = cgroup("throttled", Some(20_000));
    let v1 = dirs.0[0].clone();
    let name = v2
        .strip_prefix(common::cgroup2_root())
        .unwrap()
        .display()
        .to_string();
    // The busy loop joins the v1 cpu cgroup itself, then spins for 3 s under 20% of a CPU.
    let script = format!(
        "echo $$ > {}/cgroup.procs || exit 1; timeout 3 sh -c 'while :; do :; done'; exit 0",
        v1.display()
    );
    Workload::spawn_into(&v2, &["/bin/sh", "-c", &script]).reap_success();
    let (periods, throttled, seconds) = cpu_stat(&v1);
    assert!(
        throttled >= 15.0 && seconds >= 1.5,
        "a busy loop under 20% of a CPU for 3 s: {throttled} throttled periods, {seconds} s by cpu.stat"
    );
    let mut last = String::new();
    agent.metrics_until(
        Duration::from_secs(20),
        "per-cgroup throttling equal to cpu.stat",
        |m| {
            let before = cpu_stat(&v1);
            let ours = [
                "nodelens_cgroup_cpu_cfs_periods_total",
                "nodelens_cgroup_cpu_cfs_throttled_periods_total",
                "nodelens_cgroup_cpu_cfs_throttled_seconds_total",
            ]
            .map(|f| m.get(&series(f, &name)));
            let after = cpu_stat(&v1);
            last = format!("cpu.stat {before:?} then {after:?}, nodelens {ours:?}");
            before == after
                && ours[0].is_some_and(|v| within_2_percent(v, after.0))
                && ours[1].is_some_and(|v| within_2_percent(v, after.1))
                && ours[2].is_some_and(|v| within_2_percent(v, after.2))
        },
    );
    eprintln!("{periods} periods, {throttled} throttled, {seconds} s: {last}");
}

#[test]
fn without_pressure_files_the_family_says_so_and_exports_nothing() {
    common::require_root();
    common::mount_tracefs();
    // A cgroup root with no pressure files, as on a kernel without PSI.
    let root = tempfile::tempdir().unwrap();
    let root_arg = root.path().display().to_string();
    let agent = Agent::start(&["--cgroup-series", "all", "--cgroup-root", &root_arg]);
    let m = agent.metrics_until(Duration::from_secs(10), "the family's status", |m| {
        m.get("nodelens_cgroup_pressure_up").is_some()
    });
    assert_eq!(m.value("nodelens_cgroup_pressure_up"), 0.0);
    let names = m.names();
    let pressure: Vec<_> = names
        .iter()
        .filter(|n| n.starts_with("nodelens_cgroup_pressure_") && n.ends_with("_seconds_total"))
        .collect();
    assert!(
        pressure.is_empty(),
        "zeros rather than nothing: {pressure:?}"
    );
    let out = std::process::Command::new(common::BIN)
        .args(["preflight", "--cgroup-root", &root_arg])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("cgroup_pressure mode")
            && l.contains("off: cannot read")
            && l.contains("psi=0")),
        "preflight does not say why there is no per-cgroup pressure:\n{text}"
    );
}
