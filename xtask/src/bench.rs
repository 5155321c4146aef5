//! `cargo xtask bench`: nodelens against node_exporter in the same run, on this machine.
//!
//! A report, not a pass/fail test. It prints:
//! 1. the cost per kernel event of each probe, from the kernel's BPF statistics, under a
//!    scheduler load (stress-ng --switch), disk I/O (fio, O_DIRECT, on a loop device) and
//!    memcg reclaim (buffered reads inside a memory-limited cgroup);
//! 2. per agent: CPU time per scrape (from /proc/<pid>/stat), scrape latency p50/p99,
//!    response bytes, series, and RSS;
//! 3. the nodelens / node_exporter ratios.
//!
//! `--short` (used by `cargo xtask test`) runs the same steps with short loads and fewer
//! scrapes, to prove that the bench works and produces every figure.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, run_cmd, step, workspace_root};

/// node_exporter limited to the collectors whose families nodelens also serves.
const NODE_EXPORTER_ARGS: &[&str] = &[
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
];

pub struct Options {
    pub short: bool,
}

/// A child process killed on drop.
struct Daemon {
    child: Child,
    addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

fn start(name: &'static str, program: &Path, args: &[String], addr: String) -> Result<Daemon> {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let daemon = Daemon { child, addr };
    let ready = if name == "nodelens" {
        "/readyz"
    } else {
        "/metrics"
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if get(&daemon.addr, ready).is_ok() {
            return Ok(daemon);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{name} did not become ready on {}", daemon.addr)
}

fn get(addr: &str, path: &str) -> Result<Vec<u8>> {
    let mut response = ureq::get(&format!("http://{addr}{path}"))
        .call()
        .with_context(|| format!("GET http://{addr}{path}"))?;
    Ok(response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()?)
}

/// user + system CPU ticks of a process (fields 14 and 15 of /proc/<pid>/stat).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit_once(')').context("bad /proc/pid/stat")?.1;
    let fields: Vec<&str> = after_comm.split_ascii_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_ascii_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

#[derive(Debug, Default, Clone)]
struct ScrapeFigures {
    cpu_ms_per_scrape: f64,
    p50_ms: f64,
    p99_ms: f64,
    bytes: f64,
    series: f64,
    rss_mib: f64,
}

fn measure_scrapes(d: &Daemon, n: usize) -> Result<ScrapeFigures> {
    let pid = d.child.id();
    // Warm up: first scrapes fill caches and page in code.
    for _ in 0..5 {
        get(&d.addr, "/metrics")?;
    }
    let ticks0 = cpu_ticks(pid)?;
    let mut latencies = Vec::with_capacity(n);
    let mut body = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        body = get(&d.addr, "/metrics")?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let ticks1 = cpu_ticks(pid)?;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let text = String::from_utf8_lossy(&body);
    Ok(ScrapeFigures {
        // USER_HZ is 100: one tick is 10 ms.
        cpu_ms_per_scrape: (ticks1 - ticks0) as f64 * 10.0 / n as f64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        bytes: body.len() as f64,
        series: text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count() as f64,
        rss_mib: rss_bytes(pid)? as f64 / 1048576.0,
    })
}

/// (runs, run seconds) per probe from a nodelens scrape.
fn probe_stats(addr: &str) -> Result<BTreeMap<String, (f64, f64)>> {
    let text = String::from_utf8(get(addr, "/metrics")?)?;
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let (metric, is_runs) =
            if let Some(r) = line.strip_prefix("nodelens_probe_runs_total{probe=\"") {
                (r, true)
            } else if let Some(r) = line.strip_prefix("nodelens_probe_run_seconds_total{probe=\"") {
                (r, false)
            } else {
                continue;
            };
        let Some((probe, rest)) = metric.split_once('"') else {
            continue;
        };
        let value: f64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let entry = out.entry(probe.to_owned()).or_default();
        if is_runs {
            entry.0 = value;
        } else {
            entry.1 = value;
        }
    }
    Ok(out)
}

struct ProbeCost {
    probe: String,
    load: &'static str,
    events: f64,
    ns_per_event: f64,
}

/// Runs `load` and returns the per-event cost of the named probes during it.
fn probe_costs(
    addr: &str,
    load_name: &'static str,
    probes: &[&str],
    load: impl FnOnce() -> Result<()>,
) -> Result<Vec<ProbeCost>> {
    let before = probe_stats(addr)?;
    load()?;
    let after = probe_stats(addr)?;
    Ok(probes
        .iter()
        .map(|p| {
            let (r0, s0) = before.get(*p).copied().unwrap_or_default();
            let (r1, s1) = after.get(*p).copied().unwrap_or_default();
            let events = r1 - r0;
            ProbeCost {
                probe: (*p).to_owned(),
                load: load_name,
                events,
                ns_per_event: if events > 0.0 {
                    (s1 - s0) / events * 1e9
                } else {
                    f64::NAN
                },
            }
        })
        .collect())
}

/// A loop device over a sparse file, detached on drop.
struct LoopDevice {
    path: String,
    file: PathBuf,
}

impl LoopDevice {
    fn new(size_mb: u64) -> Result<LoopDevice> {
        let file = workspace_root().join("target/bench/loop.img");
        std::fs::create_dir_all(file.parent().context("no parent")?)?;
        std::fs::File::create(&file)?.set_len(size_mb << 20)?;
        let out = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(&file)
            .output()?;
        if !out.status.success() {
            bail!("losetup: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(LoopDevice {
            path: String::from_utf8(out.stdout)?.trim().to_owned(),
            file,
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Finds the cgroup2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
fn cgroup2_root() -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            (post.split(' ').next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .context("no cgroup2 mount in /proc/self/mountinfo")
}

/// `n` sibling cgroups under the cgroup2 root, removed on drop.
struct Cgroup2Set(Vec<PathBuf>);

impl Cgroup2Set {
    fn new(n: usize) -> Result<Cgroup2Set> {
        let root = cgroup2_root()?;
        let dirs: Vec<PathBuf> = (0..n)
            .map(|i| root.join(format!("nodelens-bench-{}-{i}", std::process::id())))
            .collect();
        for d in &dirs {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        Ok(Cgroup2Set(dirs))
    }

    /// Runs `command` once in every cgroup, all at the same time, and waits for them.
    fn run_in_each(&self, command: &str) -> Result<()> {
        let mut children = Vec::new();
        for d in &self.0 {
            let script = format!("echo $$ > {}/cgroup.procs && exec {command}", d.display());
            children.push(
                Command::new("sh")
                    .args(["-c", &script])
                    .stdout(Stdio::null())
                    .spawn()?,
            );
        }
        for mut c in children {
            c.wait()?;
        }
        Ok(())
    }
}

impl Drop for Cgroup2Set {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A cgroup v1 memory controller with a limit, removed on drop.
struct MemoryCgroup(PathBuf);

impl MemoryCgroup {
    fn new(limit: u64) -> Result<MemoryCgroup> {
        let dir = PathBuf::from(format!(
            "/sys/fs/cgroup/memory/nodelens-bench-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .context("cgroup v1 memory controller at /sys/fs/cgroup/memory")?;
        std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
        Ok(MemoryCgroup(dir))
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn quiet(cmd: &mut Command) -> Result<()> {
    run_cmd(cmd.stdout(Stdio::null()))
}

pub fn bench(opts: Options) -> Result<()> {
    let (load_secs, scrapes) = if opts.short { (1, 30) } else { (5, 500) };
    step("building nodelens (release)");
    cargo(&["build", "--release", "--package", "nodelens"])?;
    let binary = workspace_root().join("target/release/nodelens");

    let nl_addr = free_addr()?;
    let nodelens = start(
        "nodelens",
        &binary,
        &["--listen-address".into(), nl_addr.clone()],
        nl_addr,
    )?;
    let ne_addr = free_addr()?;
    let mut ne_args = vec![format!("--web.listen-address={ne_addr}")];
    ne_args.extend(NODE_EXPORTER_ARGS.iter().map(|s| s.to_string()));
    let node_exporter = start(
        "node_exporter",
        Path::new("/usr/bin/prometheus-node-exporter"),
        &ne_args,
        ne_addr,
    )?;

    step(&format!("probe cost under load ({load_secs} s per load)"));
    // The scheduler load runs in 50 cgroups at once, so sched_switch pays for per-cgroup
    // accounting across many live entries, as on a busy node.
    let cgroups = Cgroup2Set::new(50)?;
    let mut costs = probe_costs(
        &nodelens.addr,
        "stress-ng --switch in 50 cgroups",
        &["sched_switch", "sched_wakeup"],
        || {
            cgroups.run_in_each(&format!(
                "stress-ng --switch 1 --timeout {load_secs}s --quiet"
            ))
        },
    )?;
    drop(cgroups);
    let lo = LoopDevice::new(256)?;
    costs.extend(probe_costs(
        &nodelens.addr,
        "fio O_DIRECT 4k",
        &["block_rq_issue", "block_rq_complete"],
        || {
            quiet(Command::new("fio").args([
                "--name=nodelens-bench",
                &format!("--filename={}", lo.path),
                "--direct=1",
                "--rw=randrw",
                "--bs=4k",
                "--ioengine=psync",
                "--numjobs=2",
                "--size=128m",
                "--time_based",
                &format!("--runtime={load_secs}"),
            ]))
        },
    )?);
    drop(lo);
    let cg = MemoryCgroup::new(32 << 20)?;
    let file = workspace_root().join("target/bench/reclaim.img");
    quiet(Command::new("dd").args([
        "if=/dev/zero",
        "bs=1M",
        "count=256",
        "oflag=direct",
        "status=none",
        &format!("of={}", file.display()),
    ]))?;
    costs.extend(probe_costs(
        &nodelens.addr,
        "memcg reclaim",
        &[
            "mm_vmscan_memcg_reclaim_begin",
            "mm_vmscan_memcg_reclaim_end",
        ],
        || {
            let script = format!(
                "echo $$ > {}/cgroup.procs && exec dd if={} of=/dev/null bs=1M status=none",
                cg.0.display(),
                file.display()
            );
            quiet(Command::new("sh").args(["-c", &script]))
        },
    )?);
    let _ = std::fs::remove_file(&file);
    drop(cg);

    step(&format!(
        "scrape cost ({scrapes} sequential scrapes per agent)"
    ));
    let ours = measure_scrapes(&nodelens, scrapes)?;
    let theirs = measure_scrapes(&node_exporter, scrapes)?;

    let report = render(&costs, &ours, &theirs, scrapes, opts.short);
    println!("{report}");
    let path = workspace_root().join("target/bench/report.md");
    std::fs::create_dir_all(path.parent().context("no parent")?)?;
    std::fs::write(&path, &report)?;
    step(&format!("report written to {}", path.display()));

    let missing: Vec<&str> = costs
        .iter()
        .filter(|c| !c.ns_per_event.is_finite())
        .map(|c| c.probe.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(
            "no cost figure for {missing:?}: the load produced no events, or BPF statistics are off"
        );
    }
    Ok(())
}

fn target_for(probe: &str) -> &'static str {
    match probe {
        "sched_switch" => "<= 250",
        p if p.starts_with("block_") => "<= 400",
        _ => "",
    }
}

fn render(
    costs: &[ProbeCost],
    ours: &ScrapeFigures,
    theirs: &ScrapeFigures,
    scrapes: usize,
    short: bool,
) -> String {
    let mut s = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = crate::today();
    let _ = writeln!(
        s,
        "nodelens bench, {date}, kernel {}, {cpus} CPUs{}",
        kernel.trim(),
        if short {
            " (short mode: figures are rough)"
        } else {
            ""
        }
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| probe | load | events | ns/event | target |");
    let _ = writeln!(s, "|---|---|---:|---:|---|");
    for c in costs {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {} |",
            c.probe,
            c.load,
            c.events,
            c.ns_per_event,
            target_for(&c.probe)
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| per agent ({scrapes} scrapes, no gzip) | nodelens | node_exporter | ratio | target |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|");
    let rows: [(&str, f64, f64, &str); 6] = [
        (
            "CPU per scrape (ms)",
            ours.cpu_ms_per_scrape,
            theirs.cpu_ms_per_scrape,
            "<= 0.33",
        ),
        ("scrape latency p50 (ms)", ours.p50_ms, theirs.p50_ms, ""),
        (
            "scrape latency p99 (ms)",
            ours.p99_ms,
            theirs.p99_ms,
            "nodelens < 5 ms",
        ),
        ("response bytes", ours.bytes, theirs.bytes, ""),
        ("series", ours.series, theirs.series, ""),
        ("RSS (MiB)", ours.rss_mib, theirs.rss_mib, "<= 0.5"),
    ];
    for (name, a, b, target) in rows {
        let ratio = if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "n/a".into()
        };
        let _ = writeln!(s, "| {name} | {a:.2} | {b:.2} | {ratio} | {target} |");
    }
    s
}
