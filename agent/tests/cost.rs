//! What nodelens measures about itself and others, checked against references no one here
//! wrote: the kernel's per-cgroup CPU accounting (`cpu.stat`), libbpf-tools' runqlat, the
//! kernel's BPF statistics, and bpftool's view of a third party's program.
mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{Agent, LoopDevice, Metrics};

/// A cgroup under the cgroup2 root, removed on drop.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Cgroup {
        let dir =
            common::cgroup2_root().join(format!("nodelens-cost-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        Cgroup(dir)
    }

    fn rel(&self) -> String {
        self.0
            .strip_prefix(common::cgroup2_root())
            .unwrap()
            .display()
            .to_string()
    }

    /// Runs `script` with sh inside this cgroup and waits for it.
    fn run(&self, script: &str) {
        // `;`, not `&&`: with `&` in the script, `echo && a & b` would move only a subshell.
        let full = format!(
            "echo $$ > {}/cgroup.procs || exit 1; {script}",
            self.0.display()
        );
        let status = Command::new("sh").args(["-c", &full]).status().unwrap();
        assert!(status.success(), "{script}");
    }

    /// `usage_usec` of cpu.stat, in seconds: the kernel's own CPU time of the cgroup.
    fn usage_seconds(&self) -> f64 {
        common::read(self.0.join("cpu.stat"))
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("usage_usec in cpu.stat")
            / 1e6
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn cpu_seconds(m: &Metrics, cgroup: &str) -> f64 {
    m.get(&format!(
        "nodelens_cgroup_cpu_seconds_total{{cgroup=\"{cgroup}\"}}"
    ))
    .unwrap_or(0.0)
}

#[test]
fn cgroup_cpu_time_is_within_one_percent_of_cpu_stat() {
    let agent = Agent::start(&[]);
    // Different shapes of work: a busy loop (few, long stints on a CPU), a switch-heavy
    // load (many short ones), and both together on one CPU.
    let busy = Cgroup::new("busy");
    let switching = Cgroup::new("switching");
    let shared = Cgroup::new("shared");
    std::thread::scope(|s| {
        s.spawn(|| busy.run("timeout 3 sh -c 'while :; do :; done'; true"));
        s.spawn(|| switching.run("stress-ng --switch 2 -t 3s --quiet"));
        s.spawn(|| {
            shared.run("taskset -c 0 timeout 3 sh -c 'while :; do :; done' & taskset -c 0 stress-ng --switch 1 -t 3s --quiet; wait; true")
        });
    });
    // Every task has left its CPU for good, so every stint has been charged.
    let m = agent.metrics();
    for cg in [&busy, &switching, &shared] {
        let ours = cpu_seconds(&m, &cg.rel());
        let kernel = cg.usage_seconds();
        eprintln!("{}: nodelens {ours:.4} s, cpu.stat {kernel:.4} s", cg.rel());
        // That the load ran at all: 3 s of a loop gets at least this much CPU even with
        // stress-ng beside it, and 1% of it is still a millisecond, far above the
        // nanosecond clocks both sides count with.
        assert!(kernel > 0.1, "{}: the load ran ({kernel} s)", cg.rel());
        assert!(
            (ours - kernel).abs() <= kernel * 0.01,
            "{}: nodelens {ours} s vs cpu.stat usage_usec {kernel} s",
            cg.rel()
        );
    }
}

/// A libbpf-tools program, attached: returns once it prints that it is tracing, with its
/// later output on the receiver.
fn start_tool(tool: &str, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new("stdbuf")
        .arg("-oL")
        .arg(format!("/usr/sbin/{tool}"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} (Debian package libbpf-tools): {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.starts_with("Tracing") => return (child, rx),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{tool} did not start tracing");
            }
        }
    }
}

/// The sum of the counts of a libbpf-tools log2 histogram (`low -> high : count |***|`).
fn histogram_events(lines: &[String]) -> f64 {
    lines
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once(':')?;
            rest.split('|').next()?.trim().parse::<f64>().ok()
        })
        .sum()
}

#[test]
fn runqueue_events_are_within_two_percent_of_runqlats() {
    let agent = Agent::start(&[]);
    let mut load = Command::new("stress-ng")
        .args(["--switch", "2", "-t", "12s", "--quiet"])
        .spawn()
        .expect("stress-ng");
    // Not a wait for a condition: the load gets going before the window both tools count
    // over; what is compared is only what happens inside that window.
    std::thread::sleep(Duration::from_secs(1));
    let count = |m: &Metrics| m.value("nodelens_runqueue_latency_seconds_count");
    // One report after 5 s, then runqlat exits.
    let (mut runqlat, rx) = start_tool("runqlat", &["5", "1"]);
    let before = count(&agent.metrics());
    let status = runqlat.wait().unwrap();
    let after = count(&agent.metrics());
    let _ = load.wait();
    assert!(status.success(), "runqlat: {status}");
    let report: Vec<String> = rx.try_iter().collect();
    let theirs = histogram_events(&report);
    let ours = after - before;
    eprintln!("run-queue events in the same window: nodelens {ours}, runqlat {theirs}");
    assert!(
        theirs > 10_000.0,
        "the load made run-queue events: {report:?}"
    );
    assert!(
        (ours - theirs).abs() <= theirs * 0.02,
        "nodelens counted {ours}, runqlat {theirs}"
    );
}

/// (runs, run seconds) of a probe from `source` ("sampled" or "kernel").
fn probe(m: &Metrics, probe: &str, source: &str) -> (f64, f64) {
    let series = |name: &str| {
        m.get(&format!("{name}{{probe=\"{probe}\",source=\"{source}\"}}"))
            .unwrap_or(0.0)
    };
    (
        series("nodelens_probe_runs_total"),
        series("nodelens_probe_run_seconds_total"),
    )
}

/// What a program cannot time of itself, which the kernel's statistics include: the
/// kernel's indirect call into it, its first instructions (finding its cost slot, counting
/// the run) and its last ones. It measured 20 to 45 ns a run here, whatever the program;
/// at 150 to 250 ns a run, that is 10 to 25% of it.
const UNTIMED_NS: f64 = 45.0;

/// At most 25% above the kernel's figure, and at most 25% and `UNTIMED_NS` below it. The
/// 25% either way is what the 1-in-64 sampling may miss by over a few seconds of load (the
/// suite under `stress-ng --cpu 2 --hdd 1` found block_rq_issue 26% below the kernel's 254
/// ns once, where the kernel's figure is usually 180 to 220).
#[test]
fn self_measured_cost_agrees_with_the_kernels_bpf_statistics() {
    let lo = LoopDevice::new(256);
    let agent = Agent::start(&["--kernel-bpf-stats"]);
    let before = agent.metrics();
    let filename = format!("--filename={}", lo.path().display());
    std::thread::scope(|s| {
        s.spawn(|| common::run("stress-ng", &["--switch", "2", "-t", "4s", "--quiet"]));
        s.spawn(|| {
            common::run(
                "fio",
                &[
                    "--name=nodelens-cost",
                    &filename,
                    "--direct=1",
                    "--rw=randread",
                    "--bs=4k",
                    "--ioengine=libaio",
                    "--iodepth=16",
                    "--time_based",
                    "--runtime=4",
                    "--output=/dev/null",
                ],
            )
        });
    });
    let after = agent.metrics();
    for name in ["sched_switch", "block_rq_issue", "block_rq_complete"] {
        let ns = |source: &str| {
            let (r0, s0) = probe(&before, name, source);
            let (r1, s1) = probe(&after, name, source);
            assert!(r1 - r0 > 1000.0, "{name} ({source}) ran: {}", r1 - r0);
            (s1 - s0) / (r1 - r0) * 1e9
        };
        let (sampled, kernel) = (ns("sampled"), ns("kernel"));
        eprintln!("{name}: {sampled:.0} ns/event self-measured, {kernel:.0} kernel");
        assert!(
            sampled <= kernel * 1.25 && sampled >= kernel * 0.75 - UNTIMED_NS,
            "{name}: self-measured {sampled} ns vs kernel {kernel} ns"
        );
    }
}

/// `run_cnt` of the sched_switch programs of process `pid`, from bpftool.
fn run_count_of(pid: u32) -> f64 {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool");
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    progs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["pids"].as_array().is_some_and(|pids| {
                pids.iter()
                    .any(|x| x["pid"].as_u64() == Some(u64::from(pid)))
            }) && p["name"].as_str().is_some_and(|n| n.contains("switch"))
        })
        .map(|p| p["run_cnt"].as_f64().unwrap_or(0.0))
        .sum()
}

#[test]
fn a_third_party_program_beside_the_agent_pays_nothing_for_statistics() {
    if Path::new("/proc/sys/kernel/bpf_stats_enabled").exists() {
        assert_eq!(
            common::read("/proc/sys/kernel/bpf_stats_enabled").trim(),
            "0",
            "the host itself has BPF statistics on; this test needs them off"
        );
    }
    let _agent = Agent::start(&[]);
    let (mut runqlat, _rx) = start_tool("runqlat", &["3600", "1"]);
    let ctxt0 = common::proc_ctxt();
    let runs0 = run_count_of(runqlat.id());
    let mut load = Command::new("stress-ng")
        .args(["--switch", "1", "-t", "20s", "--quiet"])
        .spawn()
        .expect("stress-ng");
    let _ = load.wait();
    let switches = (common::proc_ctxt() - ctxt0) as f64;
    let counted = run_count_of(runqlat.id()) - runs0;
    let _ = Command::new("kill")
        .args(["-INT", &runqlat.id().to_string()])
        .status();
    let _ = runqlat.wait();
    eprintln!("{switches} context switches in 20 s; runqlat's run_cnt grew by {counted}");
    assert!(switches > 100_000.0, "the load switched");
    assert!(
        counted <= switches * 0.05,
        "runqlat's programs paid for statistics on {counted} of {switches} switches: someone turned BPF statistics on"
    );
}
