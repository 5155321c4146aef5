//! Scheduler probes against the real kernel: known CPU contention and context switches,
//! checked against /proc/stat. Runs as root, one test at a time (`--test-threads=1`).
mod common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Agent, Metrics, proc_ctxt};

/// (upper bound in seconds, cumulative count) for the run-queue histogram.
fn buckets(m: &Metrics) -> Vec<(f64, f64)> {
    let mut b: Vec<(f64, f64)> = m
        .family("nodelens_runqueue_latency_seconds_bucket")
        .into_iter()
        .filter_map(|(series, v)| {
            let le = series.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v))
        })
        .collect();
    b.sort_by(|a, b| a.0.total_cmp(&b.0));
    b
}

/// Fraction of the events between two scrapes that waited longer than `threshold` seconds.
fn fraction_above(before: &Metrics, after: &Metrics, threshold: f64) -> (f64, f64) {
    let (b, a) = (buckets(before), buckets(after));
    let total = a.last().unwrap().1 - b.last().unwrap().1;
    let at_or_below = a
        .iter()
        .zip(&b)
        .filter(|((le, _), _)| *le <= threshold)
        .map(|((_, av), (_, bv))| av - bv)
        .next_back()
        .unwrap_or(0.0);
    (
        total,
        if total > 0.0 {
            (total - at_or_below) / total
        } else {
            0.0
        },
    )
}

/// Busy loops, killed on drop (a failed assertion must not leave them spinning).
struct BusyLoops(Vec<Child>);

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Busy loops pinned to CPU 0: more runnable tasks than the CPU can run at once.
fn pinned_busy_loops(n: usize) -> BusyLoops {
    BusyLoops(
        (0..n)
            .map(|_| {
                Command::new("taskset")
                    .args(["-c", "0", "sh", "-c", "while :; do :; done"])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("taskset (util-linux)")
            })
            .collect(),
    )
}

/// Two scrapes with at least `events` run-queue events between them: a window sized by
/// what happened in it rather than by the clock.
fn window(agent: &Agent, events: f64) -> (Metrics, Metrics) {
    let count = |m: &Metrics| m.value("nodelens_runqueue_latency_seconds_count");
    let first = agent.metrics();
    let start = count(&first);
    let last = agent.metrics_until(
        Duration::from_secs(30),
        &format!("{events} run-queue events"),
        |m| count(m) - start >= events,
    );
    (first, last)
}

/// user + system ticks of a process, from /proc/<pid>/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = common::read(format!("/proc/{pid}/stat"));
    // After the command's closing parenthesis: state, ppid, ... utime is the 12th field.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_ascii_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

#[test]
fn runqueue_latency_holds_the_waits_of_loops_saturating_a_cpu() {
    let agent = Agent::start(&[]);
    let busy = pinned_busy_loops(4);
    // The saturated window starts once every loop has run.
    common::wait_for("every busy loop to run", Duration::from_secs(10), || {
        busy.0.iter().all(|c| cpu_ticks(c.id()) > 0)
    });
    // The reference is the kernel's own: each loop's run-queue wait in its schedstat. The
    // node histogram holds every task's waits, so over the same window its sum is at least
    // the loops' (whatever else the machine runs), and four loops on one CPU wait for
    // each other: most of their time, in waits of a slice or more.
    let waits = |b: &BusyLoops| -> Vec<f64> {
        b.0.iter()
            .map(|c| common::schedstat(c.id() as i32).wait_seconds)
            .collect()
    };
    let loops_before = waits(&busy);
    let (busy0, busy1) = window(&agent, 500.0);
    let loops_after = waits(&busy);
    drop(busy);
    let loops_waited: f64 = loops_after
        .iter()
        .zip(&loops_before)
        .map(|(a, b)| a - b)
        .sum();
    let sum = busy1.value("nodelens_runqueue_latency_seconds_sum")
        - busy0.value("nodelens_runqueue_latency_seconds_sum");
    let (events, slow) = fraction_above(&busy0, &busy1, 0.001);
    eprintln!(
        "saturated: {events} events, {:.1}% > 1ms, {sum:.3} s of wait in all; the loops' own schedstat: {loops_waited:.3} s",
        slow * 100.0
    );
    assert!(events > 0.0, "count must grow under load");
    assert!(loops_waited > 0.0, "the loops waited for CPU 0");
    // The loops' waits in the window end when they next get the CPU, which may be after
    // the window's last scrape: one slice per loop (a few ms) of slack.
    assert!(
        sum >= loops_waited - 4.0 * 0.01,
        "the histogram's sum {sum} s holds less than the loops' own waits {loops_waited} s"
    );
    assert!(slow > 0.0, "some waits land above 1 ms");
}

fn ebpf_switches(m: &Metrics) -> f64 {
    m.value("nodelens_cpu_context_switches_total{kind=\"voluntary\"}")
        + m.value("nodelens_cpu_context_switches_total{kind=\"involuntary\"}")
}

/// Generates context switches for `secs` and compares the eBPF count with /proc/stat.
fn assert_switches_match_proc_stat(agent: &Agent) {
    let m0 = agent.metrics();
    let c0 = proc_ctxt();
    let status = Command::new("stress-ng")
        .args(["--switch", "2", "--timeout", "2s", "--quiet"])
        .status()
        .expect("stress-ng (cargo xtask setup --test-tools installs it)");
    assert!(status.success(), "stress-ng failed");
    let c1 = proc_ctxt();
    let m1 = agent.metrics();
    let ebpf = ebpf_switches(&m1) - ebpf_switches(&m0);
    let proc = (c1 - c0) as f64;
    eprintln!("context switches: eBPF {ebpf}, /proc/stat ctxt {proc}");
    assert!(
        proc > 10_000.0,
        "stress-ng should switch a lot, /proc/stat saw {proc}"
    );
    let ratio = ebpf / proc;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "eBPF {ebpf} vs /proc/stat {proc}: ratio {ratio:.3}"
    );
    let voluntary = m1.value("nodelens_cpu_context_switches_total{kind=\"voluntary\"}")
        - m0.value("nodelens_cpu_context_switches_total{kind=\"voluntary\"}");
    assert!(
        voluntary > 0.0,
        "stress-ng --switch blocks on pipes: voluntary switches"
    );
}

#[test]
fn context_switches_agree_with_proc_stat() {
    let agent = Agent::start(&[]);
    assert_switches_match_proc_stat(&agent);
}

/// The nodelens families of a scrape, once the scheduler and the disk have been seen: a
/// family's series appear with their first event, so a little O_DIRECT reading first.
fn nodelens_families(agent: &Agent) -> std::collections::BTreeSet<String> {
    common::direct_reads(16);
    let m = agent.metrics_until(
        Duration::from_secs(10),
        "the run-queue and disk histograms, per node and per cgroup",
        |m| {
            m.get("nodelens_runqueue_latency_seconds_count")
                .is_some_and(|c| c > 0.0)
                && !m
                    .family("nodelens_disk_io_latency_seconds_count")
                    .is_empty()
                && !m.family("nodelens_cgroup_disk_ios_total").is_empty()
        },
    );
    m.names()
        .into_iter()
        .filter(|n| n.starts_with("nodelens_"))
        .collect()
}

#[test]
fn classic_tracepoint_fallback_gives_the_same_families_and_numbers() {
    let btf = Agent::start(&[]);
    let with_btf = nodelens_families(&btf);
    drop(btf);
    let mounted = common::mount_tracefs();
    let agent = Agent::start(&["--probe-attach", "tracepoint"]);
    let m = agent.metrics();
    let up = m.family("nodelens_probe_up");
    assert!(!up.is_empty(), "probes are listed");
    for (series, v) in up {
        assert!(
            series.contains("attach=\"tracepoint\"") && v == 1.0,
            "{series} {v}"
        );
    }
    let classic = nodelens_families(&agent);
    assert!(!with_btf.is_empty(), "the tp_btf run has families");
    // Blocked time needs the kernel's timestamps, which only tp_btf reads (docs/metrics.md):
    // those families are the only difference.
    let needs_btf = [
        "nodelens_blocked_seconds_total",
        "nodelens_cgroup_blocked_seconds_total",
    ];
    let expected: std::collections::BTreeSet<String> = with_btf
        .iter()
        .filter(|f| !needs_btf.contains(&f.as_str()))
        .cloned()
        .collect();
    assert!(
        with_btf.contains("nodelens_blocked_seconds_total"),
        "tp_btf measures blocked time"
    );
    assert_eq!(
        classic, expected,
        "classic tracepoints give the families tp_btf gives, blocked time aside"
    );
    assert_switches_match_proc_stat(&agent);
    drop(agent);
    if mounted {
        common::umount_tracefs();
    }
}

#[test]
fn missing_tracefs_is_reported_not_fatal() {
    if std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        common::umount_tracefs();
    }
    assert!(
        !std::path::Path::new("/sys/kernel/tracing/events").is_dir(),
        "tracefs still mounted; this test needs it unmounted"
    );
    let agent = Agent::start(&["--probe-attach", "tracepoint"]);
    let text = agent.scrape();
    let m = Metrics::parse(&text);
    let up = m.family("nodelens_probe_up");
    assert!(!up.is_empty(), "probes are listed, as not attached");
    for (series, v) in up {
        assert!(
            series.contains("attach=\"none\"") && v == 0.0,
            "{series} {v}"
        );
    }
    assert!(
        m.family("nodelens_runqueue_latency_seconds_count")
            .is_empty(),
        "no fake zeros"
    );
    assert!(
        m.get("node_boot_time_seconds").is_some(),
        "everything else keeps working"
    );
    let (_, _, page) = common::http(&agent.addr, "GET", "/", &[]).unwrap();
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("tracefs not mounted"),
        "the / page says why: {page}"
    );
    let (code, stderr) = agent.terminate(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("tracefs not mounted"),
        "the log says why: {stderr}"
    );
}
