//! Memory probes against real memory pressure inside cgroups the test creates. On this
//! hybrid host the limit lives in a cgroup v1 memory controller, while a cgroup2 directory
//! gives the process the identity the probes report (DESIGN.md, Testing).
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::Agent;

const V1_MEMORY: &str = "/sys/fs/cgroup/memory";

/// A v1 memory cgroup with a limit plus a v2 cgroup, both removed on drop.
struct TestCgroup {
    v1: PathBuf,
    v2: PathBuf,
}

impl TestCgroup {
    fn new(name: &str, limit_bytes: u64) -> TestCgroup {
        common::require_root();
        let v1 = Path::new(V1_MEMORY).join(format!("{name}-{}", std::process::id()));
        let v2 = common::cgroup2_root().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&v1).expect("create v1 memory cgroup");
        std::fs::create_dir_all(&v2).expect("create cgroup2 directory");
        std::fs::write(v1.join("memory.limit_in_bytes"), limit_bytes.to_string()).unwrap();
        TestCgroup { v1, v2 }
    }

    /// Runs `script` with sh inside both cgroups; returns (exit status, the shell's pid).
    fn run(&self, script: &str) -> (std::process::ExitStatus, u32) {
        let wrapped = format!(
            "echo $$ > {}/cgroup.procs && echo $$ > {}/cgroup.procs && exec {script}",
            self.v1.display(),
            self.v2.display()
        );
        let mut child = Command::new("sh").args(["-c", &wrapped]).spawn().unwrap();
        let pid = child.id();
        (child.wait().unwrap(), pid)
    }

    fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.v2).unwrap().ino()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Processes are gone by now; empty cgroups can be removed.
        let _ = std::fs::remove_dir(&self.v1);
        let _ = std::fs::remove_dir(&self.v2);
    }
}

#[test]
fn memcg_reclaim_is_measured() {
    let agent = Agent::start(&[]);
    let cg = TestCgroup::new("nodelens-reclaim", 32 << 20);
    let dir = tempfile::Builder::new()
        .prefix("nodelens-reclaim-")
        .tempdir_in("/var/tmp")
        .unwrap();
    // Written with O_DIRECT, so none of it sits in the page cache yet.
    let file = dir.path().join("fill");
    let status = Command::new("dd")
        .args([
            "if=/dev/zero",
            "bs=1M",
            "count=256",
            "oflag=direct",
            "status=none",
        ])
        .arg(format!("of={}", file.display()))
        .status()
        .unwrap();
    assert!(status.success(), "creating the file failed");
    let before = agent.metrics();
    // Reading 256 MiB through the page cache inside a 32 MiB cgroup: the memcg must reclaim
    // (clean pages, so reclaim always succeeds and nothing is OOM-killed).
    let (status, _) = cg.run(&format!(
        "dd if={} of=/dev/null bs=1M status=none",
        file.display()
    ));
    assert!(status.success(), "dd inside the cgroup failed");
    let after = agent.metrics();
    let key = "nodelens_memory_reclaim_stall_seconds_count{kind=\"memcg\"}";
    let stalls = after.value(key) - before.value(key);
    let sum_key = "nodelens_memory_reclaim_stall_seconds_sum{kind=\"memcg\"}";
    let secs = after.value(sum_key) - before.value(sum_key);
    eprintln!("memcg reclaim: {stalls} stalls, {secs} s");
    assert!(stalls > 0.0, "memcg reclaim histogram must grow");
    assert!(secs > 0.0, "stall time is recorded");
    // In a protobuf scrape the stalls are a native histogram too (schema 3), in the same
    // sample as the classic buckets: every stall in one native bucket, as many as in the
    // classic ones, and at least those the text scrapes saw.
    let families = common::protobuf_scrape(&agent);
    let family = families
        .iter()
        .find(|f| f.name == "nodelens_memory_reclaim_stall_seconds")
        .expect("the reclaim histogram");
    let h = family
        .metric
        .iter()
        .find(|m| common::protobuf_labels(m).contains(&("kind", "memcg")))
        .and_then(|m| m.histogram.as_ref())
        .expect("the memcg stalls");
    assert_eq!(h.schema, 3);
    let native = common::native_buckets(h);
    let total = h.zero_count + native.iter().map(|(_, n)| n).sum::<u64>();
    assert_eq!(total, h.sample_count, "every stall in one native bucket");
    assert_eq!(h.bucket.last().map(|b| b.cumulative_count), Some(total));
    assert!(total as f64 >= after.value(key), "{total} stalls");
}

#[test]
fn oom_kill_in_a_limited_cgroup_is_counted_exactly_once() {
    let agent = Agent::start(&[]);
    let cg = TestCgroup::new("nodelens-oom", 32 << 20);
    let total = |m: &common::Metrics| {
        m.family("nodelens_oom_kills_total")
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    let before = total(&agent.metrics());
    // dd's 256 MiB buffer cannot fit in 32 MiB without swap: the memcg OOM killer takes dd,
    // the only task in the cgroup, and nothing outside it.
    let (status, pid) = cg.run("dd if=/dev/zero of=/dev/null bs=256M count=1 status=none");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "dd should be OOM-killed, got {status:?}"
    );
    let series = format!(
        "nodelens_oom_kills_total{{cgroup=\"{}\"}}",
        cg.v2.file_name().unwrap().to_string_lossy()
    );
    // The kill reaches user space through a ring buffer: wait for it to be counted.
    let after = agent.metrics_until(Duration::from_secs(10), "the kill counted", |m| {
        m.get(&series).is_some()
    });
    assert_eq!(total(&after) - before, 1.0, "exactly one OOM kill");
    assert_eq!(
        after.get(&series),
        Some(1.0),
        "the kill is labelled with the victim's cgroup: {series}"
    );
    let oom_control = common::read(cg.v1.join("memory.oom_control"));
    assert!(
        oom_control.contains("oom_kill 1"),
        "the kill happened in the test cgroup: {oom_control}"
    );

    // The ring buffer carried the victim's pid and its cgroup2 id (the directory's inode).
    let inode = cg.inode();
    let (_, stderr) = agent.terminate(Duration::from_secs(5));
    let line = stderr
        .lines()
        .find(|l| l.contains("OOM kill"))
        .unwrap_or_else(|| panic!("no OOM kill log line in:\n{stderr}"));
    assert!(
        line.contains(&format!("pid={pid}")),
        "victim pid {pid}: {line}"
    );
    assert!(
        line.contains(&format!("cgroup_id={inode}")),
        "victim cgroup {inode}: {line}"
    );
}

/// What a scraper polling every 10 ms saw of `nodelens_oom_kills_total`.
#[derive(Default)]
struct OomWatch {
    /// The last value of every series.
    last: BTreeMap<String, f64>,
    /// Every series that went back or left, with the two values.
    violations: Vec<String>,
    /// The highest value the "unknown" row ever had.
    max_unknown: f64,
    scrapes: u64,
    /// Every total of the family a scrape saw: partial totals show that scrapes came
    /// between kills, which is what the watch is for.
    totals: BTreeSet<u64>,
}

impl OomWatch {
    fn see(&mut self, m: &common::Metrics) {
        self.scrapes += 1;
        let now: BTreeMap<String, f64> = m
            .family("nodelens_oom_kills_total")
            .into_iter()
            .map(|(s, v)| (s.to_owned(), v))
            .collect();
        for (series, before) in &self.last {
            match now.get(series) {
                Some(v) if v < before => self
                    .violations
                    .push(format!("{series} went back from {before} to {v}")),
                None => self
                    .violations
                    .push(format!("{series} left while at {before}")),
                _ => {}
            }
        }
        self.totals.insert(now.values().sum::<f64>() as u64);
        if let Some(v) = now.get("nodelens_oom_kills_total{cgroup=\"unknown\"}") {
            self.max_unknown = self.max_unknown.max(*v);
        }
        self.last = now;
    }
}

#[test]
fn forty_oom_kills_each_counted_once_in_its_own_cgroup_while_no_series_goes_back() {
    let agent = Arc::new(Agent::start(&[]));
    // One v1 memory cgroup holds the limit for every kill (hybrid host); the identities the
    // probes see are cgroup2 directories: one made before the first kill, and twenty made
    // just before their only process is killed (a container that OOMs as it starts).
    let limit = TestCgroup::new("nodelens-oom40", 32 << 20);
    let steady = limit.v2.clone();
    let fresh_dir = |i: usize| {
        common::cgroup2_root().join(format!("nodelens-oom40-fresh{i}-{}", std::process::id()))
    };
    let watch = Arc::new(Mutex::new(OomWatch::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (agent, watch, stop) = (agent.clone(), watch.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let m = agent.metrics();
                watch.lock().unwrap().see(&m);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut fresh = common::Cgroups(Vec::new());
    for i in 0..40 {
        let v2 = if i % 2 == 1 {
            let dir = fresh_dir(i);
            std::fs::create_dir(&dir).expect("create a fresh cgroup2 directory");
            fresh.0.push(dir.clone());
            dir
        } else {
            steady.clone()
        };
        let script = format!(
            "echo $$ > {}/cgroup.procs && echo $$ > {}/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=256M count=1 status=none",
            limit.v1.display(),
            v2.display()
        );
        let status = Command::new("sh").args(["-c", &script]).status().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "kill {i}: dd should be OOM-killed"
        );
    }
    let name = |dir: &Path| dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut expected: BTreeMap<String, f64> = fresh
        .0
        .iter()
        .map(|d| {
            (
                format!("nodelens_oom_kills_total{{cgroup=\"{}\"}}", name(d)),
                1.0,
            )
        })
        .collect();
    expected.insert(
        format!("nodelens_oom_kills_total{{cgroup=\"{}\"}}", name(&steady)),
        20.0,
    );
    let m = agent.metrics_until(Duration::from_secs(20), "all 40 kills counted", |m| {
        expected.iter().all(|(s, v)| m.get(s) == Some(*v))
    });
    stop.store(true, Ordering::Relaxed);
    scraper.join().expect("the scraper");
    let watch = watch.lock().unwrap();
    eprintln!(
        "{} scrapes during 40 kills, seeing {} different totals",
        watch.scrapes,
        watch.totals.len()
    );
    // Scrapes came between the kills: besides the totals before and after, at least a few
    // partial ones (of 39 possible). How many depends on the machine's speed: an idle one
    // kills 40 in about a second and sees some 35; a loaded one kills and scrapes more
    // slowly.
    assert!(
        watch.totals.len() >= 5,
        "the scraper polled through the kills: totals seen {:?}",
        watch.totals
    );
    assert!(
        watch.violations.is_empty(),
        "OOM series went back or left:\n{}",
        watch.violations.join("\n")
    );
    assert_eq!(watch.max_unknown, 0.0, "no kill ever went to \"unknown\"");
    // Nothing but these 21 rows and "unknown" moved.
    let others: BTreeSet<&str> = m
        .family("nodelens_oom_kills_total")
        .into_iter()
        .filter(|(s, v)| *v > 0.0 && !expected.contains_key(*s))
        .map(|(s, _)| s)
        .collect();
    assert!(others.is_empty(), "kills counted elsewhere: {others:?}");
    let oom_control = common::read(limit.v1.join("memory.oom_control"));
    assert!(
        oom_control.contains("oom_kill 40"),
        "the kernel counted 40 kills in the limited cgroup: {oom_control}"
    );
}
