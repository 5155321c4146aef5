//! `cargo xtask bench`: what nodelens costs the node, beside the reference tools, in one run
//! on this machine. A report, not a pass/fail test; each row says its target and whether
//! this run met it.
//!
//! 1. End to end, first: what applications pay per context switch, per I/O and per MiB read
//!    under reclaim, with nothing attached, nodelens, the reference tool (libbpf-tools'
//!    runqlat, biolatency) and the floor (empty tp_btf programs), interleaved over several
//!    rounds (`end_to_end.rs`).
//! 2. Per probe: events and cost per event as the programs measure themselves, beside the
//!    kernel's BPF statistics (`--kernel-bpf-stats`), under the same loads.
//! 3. Per agent beside node_exporter: CPU per scrape, latency, bytes, series, RSS.
//! 4. Scale: the same with 4,096 pods' cgroups, kubelet paths and names (`scale.rs`).
//! 5. Kernel memory of the maps: charged here, modeled for 192 CPUs.
//!
//! `--short` (used by `cargo xtask test --full`) runs every step with short loads, two rounds and
//! fewer scrapes, to prove that the bench works and produces every figure.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{step, workspace_root};

mod end_to_end;
pub mod leftovers;
mod push;
mod scale;

use end_to_end::{Env, LOADS, Variant};

/// nodelens's collectors for the same families.
const NODE_BASICS: &str = "cpu,stat,meminfo,loadavg,pressure,vmstat,uname,diskstats,filesystem";

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
    /// The static amd64 agent to measure (`cargo xtask test --full` builds it once for the
    /// soak, the matrix and the bench); built here when `None`.
    pub nodelens: Option<PathBuf>,
}

/// A child process killed on drop.
pub struct Daemon {
    child: Child,
    addr: String,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running (not exited, not killed).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_addr() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

pub fn start(name: &'static str, program: &Path, args: &[String], addr: String) -> Result<Daemon> {
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

pub(crate) fn get(addr: &str, path: &str) -> Result<Vec<u8>> {
    // A plain HTTP/1.0 GET on std's socket, read to the end: the latency figures are the
    // agent's, not an HTTP client's. (xtask builds unoptimized, and ureq then took longer
    // to read a 2 MB scrape than the agent took to write it; Prometheus's own client is
    // compiled Go.)
    use std::io::{Read as _, Write as _};
    let url = format!("http://{addr}{path}");
    let socket = addr
        .parse::<std::net::SocketAddr>()
        .with_context(|| format!("{addr}: not an IP address and port"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(5))
        .with_context(|| format!("GET {url}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("GET {url}"))?;
    let mut response = Vec::with_capacity(64 << 10);
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("GET {url}: reading the response"))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("GET {url}: no end of headers"))?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = response.split_off(split + 4);
    let status = head.lines().next().unwrap_or("no status line");
    if status.split_ascii_whitespace().nth(1) != Some("200") {
        bail!("GET {url}: {status}");
    }
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    if let Some(length) = length
        && length != body.len()
    {
        bail!(
            "GET {url}: {} of {length} bytes before the connection closed",
            body.len()
        );
    }
    Ok(body)
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

pub(crate) fn rss_bytes(pid: u32) -> Result<u64> {
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
    /// Cgroups with their own CPU series (`nodelens_cgroup_cpu_seconds_total`, "other"
    /// included): how many a scrape exports one by one.
    cgroup_series: f64,
    /// Of those, the bench's pods (their pod label starts with `app-`).
    pods: f64,
    /// A few of the others, for the error when too few are pods.
    not_pods: Vec<String>,
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
    let cpu_series = text
        .lines()
        .filter(|l| l.starts_with("nodelens_cgroup_cpu_seconds_total{"));
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
        cgroup_series: cpu_series.clone().count() as f64,
        pods: cpu_series
            .clone()
            .filter(|l| l.contains("pod=\"app-"))
            .count() as f64,
        not_pods: cpu_series
            .filter(|l| !l.contains("pod=\"app-"))
            .take(3)
            .map(str::to_owned)
            .collect(),
        rss_mib: rss_bytes(pid)? as f64 / 1048576.0,
    })
}

/// A loop device over a file in /dev/shm (memory, so the device is not the bottleneck),
/// detached on drop.
pub struct LoopDevice {
    pub path: String,
    file: PathBuf,
}

impl LoopDevice {
    pub(crate) fn new(size_mb: u64) -> Result<LoopDevice> {
        let file = PathBuf::from(format!(
            "/dev/shm/nodelens-bench-{}.img",
            std::process::id()
        ));
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
pub fn cgroup2_root() -> Result<PathBuf> {
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

/// A cgroup v1 memory controller with a limit, removed on drop.
pub struct MemoryCgroup(pub PathBuf);

impl MemoryCgroup {
    pub(crate) fn new(limit: u64) -> Result<MemoryCgroup> {
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

/// (probe, source) -> (runs, run seconds), from a nodelens scrape.
fn probe_stats(addr: &str) -> Result<BTreeMap<(String, String), (f64, f64)>> {
    let text = String::from_utf8(get(addr, "/metrics")?)?;
    let mut out: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let (rest, is_runs) = if let Some(r) = line.strip_prefix("nodelens_probe_runs_total{") {
            (r, true)
        } else if let Some(r) = line.strip_prefix("nodelens_probe_run_seconds_total{") {
            (r, false)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        let entry = out.entry((label("probe"), label("source"))).or_default();
        if is_runs {
            entry.0 = value;
        } else {
            entry.1 = value;
        }
    }
    Ok(out)
}

/// One probe's cost under one load, as the program measured it and as the kernel did.
struct ProbeCost {
    probe: String,
    load: &'static str,
    events: f64,
    sampled_ns: f64,
    kernel_ns: f64,
}

/// The end-to-end figures of one load: per variant, the ns per unit of every round.
struct EndToEnd {
    load: usize,
    rounds: Vec<(Variant, Vec<f64>)>,
}

/// Rounds of `load`: the disk load is noisier and gets more (`rounds_factor`), except in
/// the short bench, which only checks that every figure is produced.
fn load_rounds(load: &end_to_end::Load, rounds: usize, short: bool) -> usize {
    if short {
        rounds
    } else {
        rounds * load.rounds_factor
    }
}

fn end_to_end(env: &Env, rounds: usize, short: bool) -> Result<Vec<EndToEnd>> {
    let mut out = Vec::new();
    for (index, load) in LOADS.iter().enumerate() {
        let variants = load.variants;
        let mut figures: Vec<(Variant, Vec<f64>)> =
            variants.iter().map(|v| (*v, Vec::new())).collect();
        let rounds = load_rounds(load, rounds, short);
        for round in 0..rounds {
            // Each round starts with the next variant, so none always runs first.
            for k in 0..variants.len() {
                let v = variants[(round + k) % variants.len()];
                step(&format!(
                    "{}: round {}/{rounds}, {}",
                    load.name,
                    round + 1,
                    v.label(load)
                ));
                let ns = end_to_end::run(env, index, v)?;
                if let Some((_, f)) = figures.iter_mut().find(|(x, _)| *x == v) {
                    f.push(ns);
                }
            }
        }
        out.push(EndToEnd {
            load: index,
            rounds: figures,
        });
    }
    Ok(out)
}

/// Per-probe costs under the three loads, nodelens running with --kernel-bpf-stats.
fn probe_costs(env: &Env) -> Result<Vec<ProbeCost>> {
    let addr = free_addr()?;
    let agent = start(
        "nodelens",
        &env.nodelens,
        &[
            "--listen-address".into(),
            addr.clone(),
            "--kernel-bpf-stats".into(),
        ],
        addr,
    )?;
    let probes: [&[&str]; 3] = [
        &["sched_switch"],
        &["block_rq_issue", "block_rq_complete"],
        &[
            "mm_vmscan_memcg_reclaim_begin",
            "mm_vmscan_memcg_reclaim_end",
        ],
    ];
    let mut out = Vec::new();
    for (index, load) in LOADS.iter().enumerate() {
        let before = probe_stats(&agent.addr)?;
        end_to_end::run(env, index, Variant::Nothing)?;
        let after = probe_stats(&agent.addr)?;
        for probe in probes[index] {
            let delta = |source: &str| {
                let key = ((*probe).to_owned(), source.to_owned());
                let (r0, s0) = before.get(&key).copied().unwrap_or_default();
                let (r1, s1) = after.get(&key).copied().unwrap_or_default();
                (r1 - r0, s1 - s0)
            };
            let (events, sampled) = delta("sampled");
            let (kernel_events, kernel) = delta("kernel");
            out.push(ProbeCost {
                probe: (*probe).to_owned(),
                load: load.name,
                events,
                sampled_ns: if events > 0.0 {
                    sampled / events * 1e9
                } else {
                    f64::NAN
                },
                kernel_ns: if kernel_events > 0.0 {
                    kernel / kernel_events * 1e9
                } else {
                    f64::NAN
                },
            });
        }
    }
    drop(agent);
    Ok(out)
}

/// Kernel memory of the maps, from `preflight --exercise`: (charged here, possible CPUs
/// here, modeled for 192 CPUs).
fn map_memory(nodelens: &Path) -> Result<(f64, u64, f64)> {
    let out = Command::new(nodelens)
        .args(["preflight", "--exercise", "--json", "--log-level", "error"])
        .output()?;
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("preflight --json")?;
    let rows = report["exercise"]["map_memory"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let total = |key: &str| rows.iter().filter_map(|r| r[key].as_f64()).sum::<f64>();
    Ok((
        total("charged"),
        report["exercise"]["possible_cpus"].as_u64().unwrap_or(0),
        total("modeled_192_cpus"),
    ))
}

/// Waits until the agent tracks at least `n` cgroups (the tree's processes ran and its
/// resolver found them), and names all but 256 of them as the bench's pods.
fn wait_for_tracked(agent: &Daemon, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = String::from_utf8(get(&agent.addr, "/metrics")?)?;
        let tracked = text
            .lines()
            .find_map(|l| l.strip_prefix("nodelens_cgroups_tracked "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        // And named: the agent rescans the kubelet's log directories for names it lacks at
        // most every 5 s, so pods created after the last rescan are named a moment later.
        let named = text
            .lines()
            .filter(|l| {
                l.starts_with("nodelens_cgroup_cpu_seconds_total{") && l.contains("pod=\"app-")
            })
            .count();
        if tracked >= n as f64 && named + 256 >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nodelens tracks {tracked} cgroups, not {n}, and names {named} of the pods");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The newest eBPF object build.rs made for the binary at `nodelens` (its build directory
/// is beside it), for the floor programs.
fn ebpf_object(nodelens: &Path) -> Result<PathBuf> {
    let build = nodelens
        .parent()
        .context("the agent binary has no directory")?
        .join("build");
    std::fs::read_dir(&build)?
        .flatten()
        .map(|e| e.path().join("out/agent-ebpf"))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .with_context(|| format!("no agent-ebpf object under {}", build.display()))
}

pub fn bench(opts: Options) -> Result<()> {
    let (seconds, rounds, scrapes, reclaim_mib) = if opts.short {
        (2, 2, 30, 64)
    } else {
        (8, 5, 500, 256)
    };
    leftovers::clear();
    let nodelens = match opts.nodelens {
        Some(built) => built,
        None => crate::kernels::build_static(crate::kernels::Arch::Amd64)?,
    };
    let env = Env {
        object: ebpf_object(&nodelens)?,
        nodelens,
        // Sparse, in memory: reading its holes costs no RAM but page cache, which the
        // reclaim load's memory cgroup has to reclaim.
        loop_device: LoopDevice::new(2048)?,
        memcg: MemoryCgroup::new(32 << 20)?,
        seconds,
        reclaim_mib,
    };

    step(&format!("end to end: {rounds} interleaved rounds per load"));
    let e2e = end_to_end(&env, rounds, opts.short)?;
    step("per-probe cost: self-measured and kernel BPF statistics");
    let costs = probe_costs(&env)?;

    // Like with like: nodelens on the collectors node_exporter runs, then with everything.
    let nl_addr = free_addr()?;
    let nodelens = start(
        "nodelens",
        &env.nodelens,
        &[
            "--listen-address".into(),
            nl_addr.clone(),
            "--collectors-enabled".into(),
            NODE_BASICS.into(),
        ],
        nl_addr,
    )?;
    let full_addr = free_addr()?;
    let nodelens_full = start(
        "nodelens",
        &env.nodelens,
        &["--listen-address".into(), full_addr.clone()],
        full_addr,
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
    step(&format!(
        "scrape cost ({scrapes} sequential scrapes per agent)"
    ));
    let ours = measure_scrapes(&nodelens, scrapes)?;
    let theirs = measure_scrapes(&node_exporter, scrapes)?;
    let full = measure_scrapes(&nodelens_full, scrapes)?;
    drop((nodelens, node_exporter, nodelens_full));

    step("scale: 4,096 pods' cgroups with kubelet paths and names");
    let logs = scale::KubeletLogs::new(&workspace_root())?;
    let addr = free_addr()?;
    // The agent first: it sees the processes that run in the new cgroups.
    let scaled_agent = start(
        "nodelens",
        &env.nodelens,
        &[
            "--listen-address".into(),
            addr.clone(),
            "--pod-logs-dir".into(),
            logs.pods(),
            "--container-logs-dir".into(),
            logs.containers(),
        ],
        addr,
    )?;
    let tree = scale::KubeletTree::new(4096, &logs)?;
    wait_for_tracked(&scaled_agent, 4096)?;
    let scaled = measure_scrapes(&scaled_agent, scrapes.min(200))?;
    drop(scaled_agent);
    drop(tree);
    drop(logs);

    step(&format!(
        "push cost ({}s of remote_write every second)",
        seconds * 4
    ));
    let push = push::measure(&env.nodelens, seconds * 4)?;

    step("kernel memory of the maps");
    let memory = map_memory(&env.nodelens)?;

    let report = render(&Figures {
        e2e: &e2e,
        costs: &costs,
        ours: &ours,
        theirs: &theirs,
        full: &full,
        scaled: &scaled,
        push: &push,
        memory,
        scrapes,
        rounds,
        short: opts.short,
    });
    println!("{report}");
    let path = workspace_root().join("target/bench/report.md");
    std::fs::create_dir_all(path.parent().context("no parent")?)?;
    std::fs::write(&path, &report)?;
    step(&format!("report written to {}", path.display()));

    let mut missing: Vec<String> = Vec::new();
    for e in &e2e {
        for (v, f) in &e.rounds {
            if f.len() != load_rounds(&LOADS[e.load], rounds, opts.short)
                || f.iter().any(|x| !x.is_finite() || *x <= 0.0)
            {
                missing.push(format!(
                    "{}: {}",
                    LOADS[e.load].name,
                    v.label(&LOADS[e.load])
                ));
            }
        }
    }
    missing.extend(
        costs
            .iter()
            .filter(|c| !c.sampled_ns.is_finite())
            .map(|c| format!("{} sampled cost", c.probe)),
    );
    if push.pushes < 1.0 || !push.cpu_ms_per_push.is_finite() || push.bytes_per_push <= 0.0 {
        missing.push("push row".into());
    }
    // Series per cgroup depend on what its process did (a cgroup that never waited has no
    // wait series), so the check is on cgroups: the tracked places are (nearly) all filled.
    // The system's own cgroups take a few of the 4,096 places, so the last pods fold into
    // "other", and a cgroup seen only through reclaim has no CPU series.
    if scaled.cgroup_series < 4000.0 || scaled.pods < 4096.0 - 256.0 {
        missing.push(format!(
            "scale row: only {} cgroups ({} of the 4096 pods) exported one by one; others: {:?}",
            scaled.cgroup_series, scaled.pods, scaled.not_pods
        ));
    }
    if !missing.is_empty() {
        bail!(
            "the bench did not produce every figure: {}",
            missing.join("; ")
        );
    }
    Ok(())
}

struct Figures<'a> {
    e2e: &'a [EndToEnd],
    costs: &'a [ProbeCost],
    ours: &'a ScrapeFigures,
    theirs: &'a ScrapeFigures,
    /// nodelens with every collector on.
    full: &'a ScrapeFigures,
    scaled: &'a ScrapeFigures,
    push: &'a push::PushFigures,
    /// (charged here, possible CPUs here, modeled for 192 CPUs), bytes.
    memory: (f64, u64, f64),
    scrapes: usize,
    rounds: usize,
    short: bool,
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn render(f: &Figures) -> String {
    let mut s = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let _ = writeln!(
        s,
        "nodelens bench, {}, kernel {}, {cpus} CPUs{}",
        crate::today(),
        kernel.trim(),
        if f.short {
            " (short mode: figures are rough)"
        } else {
            ""
        }
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "What applications pay, {} interleaved rounds per load ({} for the disk): ns per unit, median [min-max], and added over nothing (the median of each round's difference, so that drift between rounds cancels). The ratios are against the reference tool. On the disk load the loop device's worker thread switches for each I/O, which nodelens's defaults measure and biolatency does not: the defaults' row also gives its ratio against runqlat and biolatency together, and nodelens without its sched collector (the block probes alone) is compared with biolatency.",
        f.rounds,
        LOADS
            .iter()
            .map(|l| load_rounds(l, f.rounds, f.short))
            .max()
            .unwrap_or(f.rounds)
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| load | attached | ns per unit | added ns | vs reference | target |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---|");
    for e in f.e2e {
        let load = &LOADS[e.load];
        let Some(nothing) = e
            .rounds
            .iter()
            .find(|(x, _)| *x == Variant::Nothing)
            .map(|(_, r)| r.as_slice())
        else {
            continue;
        };
        let added_by = |v: Variant| {
            e.rounds
                .iter()
                .find(|(x, _)| *x == v)
                .map(|(_, r)| end_to_end::paired_added(r, nothing))
        };
        // The target is against the reference tool. On the disk load the defaults also
        // measure the loop worker's context switches, so two more ratios compare like with
        // like: the defaults against runqlat and biolatency together, and the block probes
        // alone (sched off) against biolatency.
        let reference = added_by(Variant::Reference);
        let references = added_by(Variant::ReferenceWithRunqlat);
        for (v, rounds) in &e.rounds {
            let (m, lo, hi) = end_to_end::summary(rounds);
            let added = end_to_end::paired_added(rounds, nothing);
            let (ratio, target) = match (v, reference, load.target) {
                (Variant::Nodelens | Variant::NodelensWithoutSched, Some(r), Some(t))
                    if r > 0.0 =>
                {
                    let ratio = added / r;
                    let mut shown = format!("{ratio:.2}");
                    if let (Variant::Nodelens, Some(both)) = (v, references.filter(|b| *b > 0.0)) {
                        shown += &format!(
                            " ({:.2} against {})",
                            added / both,
                            Variant::ReferenceWithRunqlat.label(load)
                        );
                    }
                    (shown, format!("<= {t} ({})", met(ratio <= t)))
                }
                _ => (String::new(), String::new()),
            };
            let added = if *v == Variant::Nothing {
                String::new()
            } else {
                format!("{added:+.0}")
            };
            let _ = writeln!(
                s,
                "| {} (ns per {}) | {} | {m:.0} [{lo:.0}-{hi:.0}] | {added} | {ratio} | {target} |",
                load.name,
                load.unit,
                v.label(load)
            );
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Per probe, same loads: cost per event as the programs measure it (1 run in 64 timed) and as the kernel's BPF statistics say."
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| probe | load | events | ns/event (self) | ns/event (kernel) | agreement |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    for c in f.costs {
        let agreement = if c.kernel_ns > 0.0 {
            format!("{:+.0}%", (c.sampled_ns / c.kernel_ns - 1.0) * 100.0)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {agreement} |",
            c.probe, c.load, c.events, c.sampled_ns, c.kernel_ns
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Per scrape, {} sequential scrapes each, no gzip: nodelens on node_exporter's collectors (the same families), node_exporter, and nodelens with every collector on (eBPF families and per-cgroup series too).",
        f.scrapes
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| per agent | nodelens, same collectors | node_exporter | ratio | target | nodelens, all collectors |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|---:|");
    let (ours, theirs, full) = (f.ours, f.theirs, f.full);
    let cpu_ratio = ours.cpu_ms_per_scrape / theirs.cpu_ms_per_scrape;
    let rows: [(&str, f64, f64, String, f64); 6] = [
        (
            "CPU per scrape (ms)",
            ours.cpu_ms_per_scrape,
            theirs.cpu_ms_per_scrape,
            format!("<= 0.2 ({})", met(cpu_ratio <= 0.2)),
            full.cpu_ms_per_scrape,
        ),
        (
            "scrape latency p50 (ms)",
            ours.p50_ms,
            theirs.p50_ms,
            String::new(),
            full.p50_ms,
        ),
        (
            "scrape latency p99 (ms)",
            ours.p99_ms,
            theirs.p99_ms,
            format!("all collectors < 5 ms ({})", met(full.p99_ms < 5.0)),
            full.p99_ms,
        ),
        (
            "response bytes",
            ours.bytes,
            theirs.bytes,
            String::new(),
            full.bytes,
        ),
        (
            "series",
            ours.series,
            theirs.series,
            String::new(),
            full.series,
        ),
        (
            "RSS (MiB)",
            ours.rss_mib,
            theirs.rss_mib,
            format!(
                "all collectors <= 0.5 x ({})",
                met(full.rss_mib / theirs.rss_mib <= 0.5)
            ),
            full.rss_mib,
        ),
    ];
    for (name, a, b, target, all) in rows {
        let ratio = if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            s,
            "| {name} | {a:.2} | {b:.2} | {ratio} | {target} | {all:.2} |"
        );
    }
    let _ = writeln!(s);
    let p = f.push;
    let _ = writeln!(
        s,
        "Push (remote_write every second, all collectors, {:.0} pushes): CPU per push {:.2} ms (over an identical agent that does not push; a scrape of the same agent costs {:.2} ms), {:.0} compressed bytes and {:.0} samples per push.",
        p.pushes, p.cpu_ms_per_push, full.cpu_ms_per_scrape, p.bytes_per_push, p.samples_per_push
    );
    let _ = writeln!(s);
    let sc = f.scaled;
    let _ = writeln!(
        s,
        "Scale: 4,096 pods (one container each, kubelet systemd paths and log names), {} scrapes.",
        f.scrapes.min(200)
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| figure | nodelens | target |");
    let _ = writeln!(s, "|---|---:|---|");
    let _ = writeln!(
        s,
        "| CPU per scrape (ms) | {:.2} | <= 5 ({}) |",
        sc.cpu_ms_per_scrape,
        met(sc.cpu_ms_per_scrape <= 5.0)
    );
    let _ = writeln!(s, "| scrape latency p50 (ms) | {:.2} | |", sc.p50_ms);
    let _ = writeln!(
        s,
        "| scrape latency p99 (ms) | {:.2} | <= 15 ({}) |",
        sc.p99_ms,
        met(sc.p99_ms <= 15.0)
    );
    let _ = writeln!(
        s,
        "| response bytes | {:.0} | <= 1.5 MB ({}) |",
        sc.bytes,
        met(sc.bytes <= 1.5e6)
    );
    let _ = writeln!(s, "| series | {:.0} | |", sc.series);
    let _ = writeln!(
        s,
        "| cgroups exported one by one (pods among them) | {:.0} ({:.0}) | |",
        sc.cgroup_series, sc.pods
    );
    let _ = writeln!(s, "| RSS (MiB) | {:.1} | |", sc.rss_mib);
    let _ = writeln!(s);
    let (charged, here, big) = f.memory;
    let _ = writeln!(
        s,
        "Kernel memory of the maps: {:.1} MiB charged here ({here} possible CPUs); modeled for 192 CPUs: {:.1} MiB (target <= 32 MiB: {}).",
        charged / 1048576.0,
        big / 1048576.0,
        met(big <= 32.0 * 1048576.0)
    );
    s
}
