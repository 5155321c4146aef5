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
//!
//! This module runs the steps; the parts are `daemon` (the processes measured), `http` (the
//! GET that times them), `fixtures` (loop device and cgroups, shared with the soak),
//! `exposition` (reading scrapes), `end_to_end`, `scale`, `push` and `report` (the
//! markdown).
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{step, workspace_root};

mod daemon;
mod end_to_end;
pub mod exposition;
mod fixtures;
mod http;
pub mod leftovers;
mod push;
mod report;
mod scale;

use daemon::cpu_ticks;
pub use daemon::{Daemon, free_addr, rss_bytes, start};
pub use fixtures::{LoopDevice, MemoryCgroup, cgroup2_root};
pub use http::get;
use report::{Figures, render};

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
    /// Only the 4,096-pod rows, printed and not written to the report: to see what a change
    /// does to the scrape's cost without the whole bench.
    pub scale_only: bool,
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

/// `n` sequential scrapes with `headers`, after five to warm up: (CPU ms per scrape, p50
/// and p99 latency in ms, the last response).
fn time_scrapes(
    d: &Daemon,
    n: usize,
    headers: &[(&str, &str)],
) -> Result<(f64, f64, f64, Vec<u8>)> {
    let pid = d.child.id();
    // Warm up: first scrapes fill caches and page in code.
    for _ in 0..5 {
        http::get_with(&d.addr, "/metrics", headers)?;
    }
    let ticks0 = cpu_ticks(pid)?;
    let mut latencies = Vec::with_capacity(n);
    let mut body = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        body = http::get_with(&d.addr, "/metrics", headers)?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let ticks1 = cpu_ticks(pid)?;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    // USER_HZ is 100: one tick is 10 ms.
    let cpu_ms = (ticks1 - ticks0) as f64 * 10.0 / n as f64;
    Ok((cpu_ms, pct(0.50), pct(0.99), body))
}

/// What Prometheus sends with its native histograms on: protobuf first.
const PROTOBUF_ACCEPT: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Protobuf scrapes, as Prometheus with native histograms on makes them: (CPU ms per
/// scrape, p99 ms, bytes).
fn measure_protobuf_scrapes(d: &Daemon, n: usize) -> Result<(f64, f64, f64)> {
    let (cpu_ms, _, p99, body) = time_scrapes(d, n, &[("Accept", PROTOBUF_ACCEPT)])?;
    Ok((cpu_ms, p99, body.len() as f64))
}

fn measure_scrapes(d: &Daemon, n: usize) -> Result<ScrapeFigures> {
    let pid = d.child.id();
    let (cpu_ms_per_scrape, p50_ms, p99_ms, body) = time_scrapes(d, n, &[])?;
    let text = String::from_utf8_lossy(&body);
    let (cgroup_series, pods, not_pods) = exposition::cgroup_cpu_series(&text);
    Ok(ScrapeFigures {
        cpu_ms_per_scrape,
        p50_ms,
        p99_ms,
        bytes: body.len() as f64,
        series: exposition::samples(&text) as f64,
        cgroup_series: cgroup_series as f64,
        pods: pods as f64,
        not_pods,
        rss_mib: rss_bytes(pid)? as f64 / 1048576.0,
    })
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
        let before = exposition::probe_stats(&String::from_utf8(get(&agent.addr, "/metrics")?)?);
        end_to_end::run(env, index, Variant::Nothing)?;
        let after = exposition::probe_stats(&String::from_utf8(get(&agent.addr, "/metrics")?)?);
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
/// The share of one CPU a daemon uses over `span` while nothing asks it anything.
fn cpu_percent_alone(d: &Daemon, span: Duration) -> Result<f64> {
    let pid = d.child.id();
    let before = (cpu_ticks(pid)?, Instant::now());
    std::thread::sleep(span);
    let ticks = cpu_ticks(pid)? - before.0;
    // USER_HZ is 100: one tick is 10 ms.
    Ok(ticks as f64 / 100.0 / before.1.elapsed().as_secs_f64() * 100.0)
}

/// The per-pod families the busy scale row expects for (nearly) every pod: one per series
/// the busy work makes non-zero, and whether `--cgroup-series` exports it by default.
/// Nearly: the first pods' reads fill the memory cgroup without reclaiming, and the
/// system's own cgroups take some places.
const BUSY_SLACK: usize = 512;

/// See [`BUSY_SLACK`].
pub(super) const BUSY_FAMILIES: &[(&str, bool)] = &[
    ("nodelens_cgroup_cpu_seconds_total", true),
    ("nodelens_cgroup_runqueue_wait_seconds_total", true),
    ("nodelens_cgroup_disk_ios_total", true),
    ("nodelens_cgroup_reclaim_stall_seconds_total", false),
    ("nodelens_cgroup_blocked_seconds_total", false),
    (
        "nodelens_cgroup_pressure_memory_waiting_seconds_total",
        false,
    ),
    ("nodelens_cgroup_pressure_io_waiting_seconds_total", false),
    ("nodelens_cgroup_cpu_cfs_throttled_periods_total", false),
];

/// Keeps one scrape of `agent` as target/bench/`name`, to see what a row's bytes are.
fn save_scrape(agent: &Daemon, name: &str, headers: &[(&str, &str)]) -> Result<()> {
    let path = workspace_root().join("target/bench").join(name);
    std::fs::write(&path, http::get_with(&agent.addr, "/metrics", headers)?)
        .with_context(|| format!("write {}", path.display()))
}

/// The [`BUSY_FAMILIES`] an agent exports: every one, or (not `every`) the defaults.
fn busy_families(every: bool) -> impl Iterator<Item = &'static str> {
    BUSY_FAMILIES
        .iter()
        .filter(move |(_, default)| every || *default)
        .map(|(f, _)| *f)
}

/// Waits until the busy pods' series are out (the cgroup files are read on the families'
/// refresh interval, 15 s by default), at most 90 s; returns how many pods each per-pod
/// family has then.
fn wait_for_busy_series(
    agent: &Daemon,
    every: bool,
) -> Result<std::collections::BTreeMap<String, exposition::PodFamily>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = String::from_utf8(get(&agent.addr, "/metrics")?)?;
        let families = exposition::per_pod_families(&text);
        let all = busy_families(every)
            .all(|f| families.get(f).map_or(0, |f| f.pods) + BUSY_SLACK >= 4096);
        if all || Instant::now() > deadline {
            return Ok(families);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

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

/// The 4,096-pod rows: the agent idle and with nobody scraping, then every pod busy (text
/// and protobuf scrapes of the defaults, and a second agent with every series).
struct Scale {
    scaled: ScrapeFigures,
    idle_cpu_percent: f64,
    busy: ScrapeFigures,
    busy_pods: std::collections::BTreeMap<String, exposition::PodFamily>,
    busy_protobuf: (f64, f64, f64),
    every: ScrapeFigures,
    every_pods: std::collections::BTreeMap<String, exposition::PodFamily>,
}

fn scale_rows(env: &Env, scrapes: usize, short: bool) -> Result<Scale> {
    step("scale: 4,096 pods' cgroups with kubelet paths and names");
    let logs = scale::KubeletLogs::new(&workspace_root())?;
    let addr = free_addr()?;
    // The agent first: it sees the processes that run in the new cgroups.
    let scaled_args = |addr: &str, series: &str| -> Vec<String> {
        vec![
            "--listen-address".into(),
            addr.into(),
            "--pod-logs-dir".into(),
            logs.pods(),
            "--container-logs-dir".into(),
            logs.containers(),
            "--cgroup-series".into(),
            series.into(),
        ]
    };
    let scaled_agent = start(
        "nodelens",
        &env.nodelens,
        &scaled_args(&addr, "default"),
        addr.clone(),
    )?;
    let tree = scale::KubeletTree::new(4096, &logs)?;
    wait_for_tracked(&scaled_agent, 4096)?;
    let quiet = if short { 20 } else { 60 };
    step(&format!(
        "scale: the agent's own CPU over {quiet} s with nobody scraping (upkeep, cgroup file refresh)"
    ));
    let idle_cpu_percent = cpu_percent_alone(&scaled_agent, Duration::from_secs(quiet))?;
    let scaled = measure_scrapes(&scaled_agent, scrapes.min(200))?;
    step("scale: every pod busy (CPU over a limit, queued, reclaiming, blocked on reads)");
    let mut tree = tree;
    // A second agent exports every per-pod series (`all`), to show what the ones off by
    // default would cost. Started before the busy work, so that it sees all of it.
    let addr = free_addr()?;
    let every_agent = start(
        "nodelens",
        &env.nodelens,
        &scaled_args(&addr, "all"),
        addr.clone(),
    )?;
    // The end-to-end loads' loop device and memory cgroup (its limit makes reads reclaim).
    tree.make_busy(&env.loop_device.path, &env.memcg.0)?;
    let busy_pods = wait_for_busy_series(&scaled_agent, false)?;
    // The second agent is stopped while the first is measured: its upkeep and file
    // refreshes would take CPU from it (its programs stay attached, and cost per event).
    let busy = {
        let _stopped = every_agent.stop()?;
        measure_scrapes(&scaled_agent, scrapes.min(200))?
    };
    // As many scrapes as the text's: the agent's background work (upkeep, the cgroup files'
    // refresh) falls into either window, and shared over fewer scrapes it weighed more.
    let busy_protobuf = {
        let _stopped = every_agent.stop()?;
        measure_protobuf_scrapes(&scaled_agent, scrapes.min(200))?
    };
    save_scrape(&scaled_agent, "busy-default.prom", &[])?;
    save_scrape(
        &scaled_agent,
        "busy-default.pb",
        &[("Accept", PROTOBUF_ACCEPT)],
    )?;
    drop(scaled_agent);
    let every_pods = wait_for_busy_series(&every_agent, true)?;
    let every = measure_scrapes(&every_agent, scrapes.min(50))?;
    save_scrape(&every_agent, "busy-all.prom", &[])?;
    drop(every_agent);
    drop(tree);
    drop(logs);

    Ok(Scale {
        scaled,
        idle_cpu_percent,
        busy,
        busy_pods,
        busy_protobuf,
        every,
        every_pods,
    })
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

    if opts.scale_only {
        let s = scale_rows(&env, scrapes, opts.short)?;
        let row = |name: &str, f: &ScrapeFigures| {
            println!(
                "{name}: {:.2} ms CPU a scrape, p99 {:.2} ms, {:.0} B, {:.0} series",
                f.cpu_ms_per_scrape, f.p99_ms, f.bytes, f.series
            )
        };
        row("4,096 idle pods", &s.scaled);
        println!("nobody scraping: {:.2}% of a CPU", s.idle_cpu_percent);
        row("4,096 busy pods, defaults", &s.busy);
        let (cpu, p99, bytes) = s.busy_protobuf;
        println!("the same, protobuf: {cpu:.2} ms CPU a scrape, p99 {p99:.2} ms, {bytes:.0} B");
        row("4,096 busy pods, every series", &s.every);
        return Ok(());
    }
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

    let scale = scale_rows(&env, scrapes, opts.short)?;

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
        scaled: &scale.scaled,
        busy: &scale.busy,
        busy_pods: &scale.busy_pods,
        every: &scale.every,
        every_pods: &scale.every_pods,
        busy_protobuf: scale.busy_protobuf,
        idle_cpu_percent: scale.idle_cpu_percent,
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
    if scale.scaled.cgroup_series < 4000.0 || scale.scaled.pods < 4096.0 - 256.0 {
        missing.push(format!(
            "scale row: only {} cgroups ({} of the 4096 pods) exported one by one; others: {:?}",
            scale.scaled.cgroup_series, scale.scaled.pods, scale.scaled.not_pods
        ));
    }
    let short_of_busy: Vec<String> = [(false, &scale.busy_pods), (true, &scale.every_pods)]
        .into_iter()
        .flat_map(|(every, pods)| busy_families(every).map(move |f| (f, pods)))
        .map(|(f, pods)| (f, pods.get(f).map_or(0, |f| f.pods)))
        .filter(|(_, pods)| pods + BUSY_SLACK < 4096)
        .map(|(f, pods)| format!("{f}: {pods} pods"))
        .collect();
    if !short_of_busy.is_empty() {
        missing.push(format!(
            "busy scale row: series missing for many pods ({})",
            short_of_busy.join(", ")
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
