//! Blocked time per cgroup (uninterruptible sleep, from `sched_switch`) against the
//! kernel's delay accounting: a cgroup whose only task reads a file with O_DIRECT (every
//! read waits on the disk in `io_schedule`), and a cgroup whose task blocks in `vfork`
//! until its child exits (an uninterruptible wait that is not I/O). Runs as root, one test
//! at a time (`--test-threads=1`).
mod common;

use std::{path::Path, time::Duration};

use common::{Agent, Cgroups, Workload};

const BLOCKED: &str = "nodelens_cgroup_blocked_seconds_total";

/// A cgroup2 cgroup for this test, removed on drop.
fn cgroup(tag: &str) -> (Cgroups, String) {
    let name = format!("nodelens-blocked-{tag}-{}", std::process::id());
    let dir = common::cgroup2_root().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    (Cgroups(vec![dir]), name)
}

fn blocked(m: &common::Metrics, cgroup: &str, kind: &str) -> f64 {
    m.get(&format!("{BLOCKED}{{cgroup=\"{cgroup}\",kind=\"{kind}\"}}"))
        .unwrap_or(0.0)
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat`'s `delayacct_blkio_ticks`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

#[test]
fn io_wait_matches_delay_accounting() {
    common::require_root();
    common::mount_tracefs();
    // Delay accounting is off by default since 5.14; the kernel counts only while it is on.
    let before = common::read("/proc/sys/kernel/task_delayacct");
    std::fs::write("/proc/sys/kernel/task_delayacct", "1").unwrap();
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write("/proc/sys/kernel/task_delayacct", self.0.trim());
        }
    }
    let _restore = Restore(before);
    let agent = Agent::start(&["--cgroup-series", "default,blocked"]);
    // 128 MiB written with O_DIRECT, so that none of it is cached: each 4 KiB read waits.
    let file = tempfile::Builder::new()
        .prefix("nodelens-blocked-")
        .tempfile_in("/var/tmp")
        .unwrap();
    let f = file.path().display().to_string();
    common::run(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={f}"),
            "bs=1M",
            "count=128",
            "oflag=direct",
            "status=none",
        ],
    );
    // Pinned to one CPU: a wakeup that moves the task to another CPU ends delay
    // accounting's wait before the task is queued there, nodelens's when it is queued
    // (docs/accuracy.md); staying on its CPU, both end when it is queued. The kernel now
    // and then shows an exited task's delayacct_blkio_ticks as garbage (more than it
    // lived): such a run is done again, in a new cgroup.
    let mut attempt = 0;
    let (_dirs, name, ticks, kernel, reader_stats, lifetime) = loop {
        attempt += 1;
        let (dirs, name) = cgroup(&format!("io{attempt}"));
        let dir = common::cgroup2_root().join(&name);
        let started = std::time::Instant::now();
        let reader = Workload::spawn_into(
            &dir,
            &[
                "/usr/bin/taskset",
                "-c",
                "0",
                "/bin/dd",
                &format!("if={f}"),
                "of=/dev/null",
                "bs=4k",
                "iflag=direct",
                "status=none",
            ],
        );
        // Field 42: delayacct_blkio_ticks, the task's waits for block I/O in clock ticks.
        let exited = reader.exited_stats(42);
        // At least the reader's life: from before its start to after its exit was seen.
        let lifetime = started.elapsed().as_secs_f64();
        let kernel = exited.value as f64 / ticks_per_second();
        if kernel <= lifetime + 1.0 / ticks_per_second() {
            break (dirs, name, exited.value, kernel, exited.schedstat, lifetime);
        }
        assert!(attempt < 3, "delay accounting said {kernel} s, three times");
    };
    let queued = reader_stats.wait_seconds;
    let tick = 1.0 / ticks_per_second();
    assert!(
        kernel >= 0.5,
        "32,768 O_DIRECT reads waited only {kernel} s by delay accounting"
    );
    // The reader's life less its time on a CPU and on a run queue: what it can have spent
    // blocked at most (it sleeps in nothing else), by the kernel's scheduler accounting.
    let not_running = lifetime - reader_stats.run_seconds - queued;
    // Delay accounting loses an I/O wait when the scheduler delayed the sleeper's dequeue
    // (EEVDF's DELAY_DEQUEUE, 6.12+): its wakeup (`ttwu_runnable`) does not end the wait,
    // and the next wait's start overwrites it. That happens to a task that ran more than its
    // share, so not to the reader alone on its CPU, and often when it shares the CPU
    // (the suite under stress-ng): it then waited for a CPU as long as it was blocked or
    // more, against some 5% unloaded. Then delay accounting is only the bound below, and
    // the bound above is the time the reader was neither on a CPU nor queued for one
    // (docs/accuracy.md, "Blocked time").
    let contended = queued > 0.25 * kernel;
    let mut last = (0.0, 0.0);
    agent.metrics_until(
        Duration::from_secs(15),
        &if contended {
            format!(
                "the cgroup's blocked time within 5% below delay accounting's I/O wait and at most the reader's {not_running:.3} s neither on a CPU nor queued (it waited {queued:.3} s for a CPU; the last scrapes are printed)"
            )
        } else {
            "the cgroup's I/O wait within 5% of delay accounting (the last scrapes are printed)"
                .to_owned()
        },
        |m| {
            last = (blocked(m, &name, "io"), blocked(m, &name, "other"));
            // Plus the tick the kernel's figure is rounded down to.
            let above_kernel = last.0 >= kernel * 0.95 - tick;
            let ok = above_kernel
                && if contended {
                    last.0 + last.1 <= not_running
                } else {
                    last.0 <= kernel * 1.05 + tick
                };
            if !ok {
                eprintln!(
                    "nodelens {} s (other {} s), delay accounting {kernel} s ({ticks} ticks), neither running nor queued {not_running:.3} s; switches unseen {:?}",
                    last.0,
                    last.1,
                    m.get("nodelens_events_lost_total{reason=\"sched_switch_unseen\"}")
                );
            }
            ok
        },
    );
    eprintln!(
        "delay accounting {kernel} s ({ticks} ticks), nodelens io {} s, other {} s; the reader was neither running nor queued {not_running:.3} s, waited {queued:.3} s for a CPU",
        last.0, last.1
    );
    // Where the starts were kept: in task-local storage when the kernel's BTF shows it
    // allocating from BPF's own pools (`bpf_local_storage_map.bpf_ma`, 6.4+), which
    // bpftool reads independently; the agent's own maps say which it loaded.
    let btf = common::output(
        "bpftool",
        &[
            "btf",
            "dump",
            "file",
            "/sys/kernel/btf/vmlinux",
            "format",
            "raw",
        ],
    );
    let bpf_ma = btf
        .split("\n[")
        .find(|t| t.contains("STRUCT 'bpf_local_storage_map'"))
        .is_some_and(|t| t.contains("'bpf_ma'"));
    let m = agent.metrics();
    let has = |map: &str| {
        m.get(&format!("nodelens_map_memory_bytes{{map=\"{map}\"}}"))
            .is_some()
    };
    assert_eq!(
        (has("BLOCKED_START_TASK"), has("BLOCKED_START")),
        (bpf_ma, !bpf_ma),
        "bpf_local_storage_map.bpf_ma in the kernel's BTF: {bpf_ma}"
    );
}

/// The vfork test's child process: when it runs in the test's cgroup (started there by
/// [`vfork_parent_blocks_in_other_not_io`]), it starts a child as vfork does (the parent
/// waits, uninterruptibly, until the child execs or exits) that sleeps a second before it
/// exits. Run as part of the whole suite, it does nothing.
#[test]
fn vfork_helper() {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if !cgroup.contains("nodelens-blocked-vfork-") {
        return;
    }
    // clone(CLONE_VM | CLONE_VFORK), as vfork does, but with a stack of the child's own,
    // so that nothing the child does can touch this thread's frames.
    extern "C" fn child(_: *mut libc::c_void) -> libc::c_int {
        // SAFETY: usleep and _exit are async-signal-safe and touch no shared state.
        unsafe {
            libc::usleep(1_000_000);
            libc::_exit(0)
        }
    }
    let mut stack = vec![0u8; 256 * 1024];
    // SAFETY: the stack is ours and outlives the child (this thread waits in clone until
    // the child exits); the stack grows down from its end, aligned to 16 bytes.
    unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        let pid = libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::null_mut(),
        );
        assert!(pid > 0, "clone failed");
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

#[test]
fn vfork_parent_blocks_in_other_not_io() {
    common::require_root();
    common::mount_tracefs();
    let agent = Agent::start(&["--cgroup-series", "default,blocked"]);
    let (_dirs, name) = cgroup("vfork");
    let dir = common::cgroup2_root().join(&name);
    let me = std::env::current_exe().unwrap();
    let me = me.to_str().unwrap();
    Workload::spawn_into(
        Path::new(&dir),
        &[me, "vfork_helper", "--exact", "--test-threads=1", "--quiet"],
    )
    .reap_success();
    let mut last = (0.0, 0.0);
    agent.metrics_until(
        Duration::from_secs(15),
        "a second blocked in vfork, as other",
        |m| {
            last = (blocked(m, &name, "other"), blocked(m, &name, "io"));
            last.0 >= 0.95
        },
    );
    assert!(
        last.0 < 1.5,
        "one second in vfork counted as {} s of other",
        last.0
    );
    assert!(last.1 < 0.05, "vfork's wait counted as I/O: {last:?}");
    eprintln!("other {} s, io {} s", last.0, last.1);
    // The cgroup's blocked times one by one, in a protobuf scrape: the vfork wait is at
    // least the child's second of sleep and well under two, so schema-0 bucket 1, (1, 2] s,
    // holds exactly it, and nothing else the helper did blocked that long. The cgroup has
    // no task left, so its histogram and its text totals no longer move.
    let families = common::protobuf_scrape(&agent);
    let m = families
        .iter()
        .find(|f| f.name == "nodelens_cgroup_blocked_latency_seconds")
        .and_then(|f| {
            f.metric
                .iter()
                .find(|m| common::protobuf_labels(m).contains(&("cgroup", name.as_str())))
        })
        .expect("the cgroup's blocked-time histogram");
    let h = m.histogram.as_ref().expect("a histogram");
    assert_eq!((h.schema, h.bucket.len()), (0, 0), "schema 0, native only");
    let buckets = common::native_buckets(h);
    let total = h.zero_count + buckets.iter().map(|(_, n)| n).sum::<u64>();
    assert_eq!(total, h.sample_count, "every blocked time in one bucket");
    let long: Vec<(i32, u64)> = buckets
        .iter()
        .copied()
        .filter(|&(i, n)| i >= 1 && n > 0)
        .collect();
    assert_eq!(
        long,
        [(1, 1)],
        "the vfork wait alone in (1, 2] s: {buckets:?}"
    );
    let text = agent.metrics();
    let seconds = blocked(&text, &name, "other") + blocked(&text, &name, "io");
    assert!(
        (h.sample_sum - seconds).abs() < 1e-6,
        "the histogram's sum {} s is the cgroup's blocked time {seconds} s",
        h.sample_sum
    );
    eprintln!(
        "blocked-time histogram: {} waits, {} s, buckets {buckets:?}",
        h.sample_count, h.sample_sum
    );
}
