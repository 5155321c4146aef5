//! `cargo xtask soak --minutes N`: the release agent (seccomp in kill mode, map upkeep
//! every second) under continuous cgroup churn, scheduler, disk and reclaim load, scraped
//! every second. It fails when a scrape fails, a counter of a live series goes backwards,
//! RSS grows more than 5% after the first minute, or open descriptors or BPF map entries
//! grow. The figures go to target/soak/report.md.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    bench::{self, LoopDevice, MemoryCgroup},
    step, workspace_root,
};

/// One scrape's samples: series -> value, and the family types.
struct Scrape {
    samples: BTreeMap<String, f64>,
    counters: Vec<String>,
}

/// Samples of counters and histograms (whose `_bucket`, `_sum` and `_count` only grow).
fn parse(text: &str) -> Scrape {
    let types = bench::exposition::types(text);
    let samples: BTreeMap<String, f64> = bench::exposition::sample_lines(text)
        .map(|(series, v)| (series.to_owned(), v))
        .collect();
    let counters = samples
        .keys()
        .filter(|series| {
            let name = series.split('{').next().unwrap_or(series);
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| types.get(f) == Some(&"histogram"));
            matches!(types.get(name), Some(&"counter"))
                || family.is_some()
                || types.get(name.strip_suffix("_total").unwrap_or("")) == Some(&"counter")
        })
        .cloned()
        .collect();
    Scrape { samples, counters }
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A background load that runs until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    children: Vec<Child>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Runs `command` in `cgroup` (cgroup2, and a v1 memory cgroup when given) and waits.
fn run_in(cgroups: &[&Path], command: &str) -> bool {
    let moves: String = cgroups
        .iter()
        .map(|c| format!("echo $$ > {}/cgroup.procs && ", c.display()))
        .collect();
    Command::new("sh")
        .args(["-c", &format!("{moves}exec {command}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_loads(
    seconds: u64,
    device: &str,
    memcg: &MemoryCgroup,
    churned: Arc<AtomicU64>,
) -> Result<Load> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Load {
        stop: stop.clone(),
        threads: Vec::new(),
        children: Vec::new(),
    };
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    };
    let mut switch = Command::new("stress-ng");
    switch.args(["--switch", "1", "--timeout", &format!("{seconds}s")]);
    quiet(&mut switch);
    load.children.push(switch.spawn().context("stress-ng")?);
    let mut fio = Command::new("fio");
    fio.args([
        "--name=soak",
        &format!("--filename={device}"),
        "--rw=randrw",
        "--bs=4k",
        "--direct=1",
        "--ioengine=psync",
        "--rate_iops=200",
        "--time_based",
        &format!("--runtime={seconds}"),
    ]);
    quiet(&mut fio);
    load.children.push(fio.spawn().context("fio")?);

    // Churn: short-lived cgroups, each running one process, about 20 a second.
    let root = bench::cgroup2_root()?.join(format!("nodelens-soak-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let s = stop.clone();
    load.threads.push(std::thread::spawn(move || {
        let mut i = 0u64;
        while !s.load(Ordering::Relaxed) {
            let dir = root.join(format!("c{i}"));
            if std::fs::create_dir(&dir).is_ok() {
                run_in(&[&dir], "true");
                std::thread::sleep(Duration::from_millis(50));
                let _ = std::fs::remove_dir(&dir);
                churned.fetch_add(1, Ordering::Relaxed);
            }
            i += 1;
        }
        let _ = std::fs::remove_dir(&root);
    }));

    // Reclaim: buffered reads through a 32 MiB memory cgroup, every few seconds.
    let s = stop.clone();
    let (memcg, device) = (memcg.0.clone(), device.to_owned());
    let v2 = bench::cgroup2_root()?.join(format!("nodelens-soak-reclaim-{}", std::process::id()));
    std::fs::create_dir_all(&v2)?;
    load.threads.push(std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            run_in(
                &[&memcg, &v2],
                &format!("dd if={device} of=/dev/null bs=1M count=64"),
            );
            std::thread::sleep(Duration::from_secs(3));
        }
        let _ = std::fs::remove_dir(&v2);
    }));
    Ok(load)
}

/// What the soak measured.
#[derive(Default)]
struct Figures {
    scrapes: u64,
    failed_scrapes: Vec<String>,
    backwards: Vec<String>,
    counters_checked: u64,
    rss_first_minute: u64,
    rss_max_after: u64,
    rss_end: u64,
    fds_first_minute: usize,
    fds_max_after: usize,
    /// map -> (max during the first half after warm-up, max during the second half)
    map_entries: BTreeMap<String, (f64, f64)>,
    churned: u64,
}

/// Soaks the static amd64 agent at `nodelens` (`cargo xtask test --full` builds it once for
/// the soak, the matrix and the bench), or one built here.
pub fn soak(minutes: u64, nodelens: Option<&Path>) -> Result<()> {
    if minutes < 2 {
        bail!("--minutes must be at least 2 (the first minute is warm-up)");
    }
    bench::leftovers::clear();
    let nodelens = match nodelens {
        Some(built) => built.to_path_buf(),
        None => crate::kernels::build_static(crate::kernels::Arch::Amd64)?,
    };
    let device = LoopDevice::new(256)?;
    let memcg = MemoryCgroup::new(32 << 20)?;
    let addr = bench::free_addr()?;
    let args: Vec<String> = [
        "--listen-address",
        &addr,
        "--seccomp",
        "kill",
        "--map-upkeep-interval",
        "1s",
        "--log-level",
        "warn",
        // Every per-pod series, the ones off by default too, is soaked.
        "--cgroup-series",
        "all",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let agent = bench::start("nodelens", &nodelens, &args, addr.clone())?;
    let pid = agent.pid();
    let total = Duration::from_secs(minutes * 60);
    let churned = Arc::new(AtomicU64::new(0));
    let loads = start_loads(total.as_secs() + 5, &device.path, &memcg, churned.clone())?;
    step(&format!(
        "soaking for {minutes} min: cgroup churn, stress-ng --switch, fio at 200 IOPS, memcg reclaim; a scrape a second"
    ));
    let started = Instant::now();
    let warm_up = Duration::from_secs(60);
    let half = warm_up + (total - warm_up) / 2;
    let mut f = Figures::default();
    let mut last: Option<Scrape> = None;
    let mut next_report = Duration::from_secs(60);
    while started.elapsed() < total {
        let tick = Instant::now();
        let t = started.elapsed();
        f.scrapes += 1;
        match bench::get(&addr, "/metrics").map(|b| String::from_utf8_lossy(&b).into_owned()) {
            Err(e) => f
                .failed_scrapes
                .push(format!("{:.0} s: {e:#}", t.as_secs_f64())),
            Ok(text) => {
                let scrape = parse(&text);
                if let Some(prev) = &last {
                    for series in &scrape.counters {
                        if let (Some(a), Some(b)) =
                            (prev.samples.get(series), scrape.samples.get(series))
                        {
                            f.counters_checked += 1;
                            if b < a && f.backwards.len() < 20 {
                                f.backwards.push(format!("{series}: {a} -> {b}"));
                            }
                        }
                    }
                }
                for (series, v) in &scrape.samples {
                    if let Some(map) = series
                        .strip_prefix("nodelens_map_entries{map=\"")
                        .and_then(|s| s.strip_suffix("\"}"))
                        && t >= warm_up
                    {
                        let e = f.map_entries.entry(map.to_owned()).or_default();
                        if t < half {
                            e.0 = e.0.max(*v);
                        } else {
                            e.1 = e.1.max(*v);
                        }
                    }
                }
                last = Some(scrape);
            }
        }
        let rss = bench::rss_bytes(pid).unwrap_or(0);
        let fds = open_fds(pid);
        if t < warm_up {
            f.rss_first_minute = f.rss_first_minute.max(rss);
            f.fds_first_minute = f.fds_first_minute.max(fds);
        } else {
            f.rss_max_after = f.rss_max_after.max(rss);
            f.fds_max_after = f.fds_max_after.max(fds);
        }
        f.rss_end = rss;
        if t >= next_report {
            step(&format!(
                "{:.0} min: {} scrapes, {} failed, RSS {:.2} MiB, {fds} fds, {} cgroups churned",
                t.as_secs_f64() / 60.0,
                f.scrapes,
                f.failed_scrapes.len(),
                rss as f64 / 1048576.0,
                churned.load(Ordering::Relaxed)
            ));
            next_report += Duration::from_secs(60);
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    f.churned = churned.load(Ordering::Relaxed);
    drop(loads);
    let mut agent = agent;
    let alive = agent.alive();
    drop(agent);

    let mut problems = Vec::new();
    if !alive {
        problems.push("the agent died (a seccomp kill shows as SIGSYS in dmesg)".to_owned());
    }
    if !f.failed_scrapes.is_empty() {
        problems.push(format!("failed scrapes: {:?}", f.failed_scrapes));
    }
    if !f.backwards.is_empty() {
        problems.push(format!("counters went backwards: {:?}", f.backwards));
    }
    let growth = f.rss_max_after as f64 / f.rss_first_minute.max(1) as f64 - 1.0;
    if growth > 0.05 {
        problems.push(format!(
            "RSS grew {:.1}% after the first minute ({} -> {} bytes)",
            growth * 100.0,
            f.rss_first_minute,
            f.rss_max_after
        ));
    }
    // A scrape in flight holds one socket; a second would be a leak.
    if f.fds_max_after > f.fds_first_minute + 1 {
        problems.push(format!(
            "open descriptors grew from {} to {}",
            f.fds_first_minute, f.fds_max_after
        ));
    }
    for (map, (first, second)) in &f.map_entries {
        if *second > first * 1.25 + 32.0 {
            problems.push(format!("{map} entries grew from {first} to {second}"));
        }
    }
    let report = render(minutes, &f, growth);
    let dir = workspace_root().join("target/soak");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("report.md"), &report)?;
    println!("{report}");
    if !problems.is_empty() {
        bail!("soak failed:\n  {}", problems.join("\n  "));
    }
    step("soak: ok");
    Ok(())
}

fn render(minutes: u64, f: &Figures, growth: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Soak, {}: {minutes} min, cgroup churn ({} cgroups), stress-ng --switch, fio randrw at 200 IOPS, memcg reclaim every 3 s; one scrape a second; seccomp in kill mode.",
        crate::today(),
        f.churned
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| figure | value |");
    let _ = writeln!(s, "|---|---|");
    let _ = writeln!(
        s,
        "| scrapes (failed) | {} ({}) |",
        f.scrapes,
        f.failed_scrapes.len()
    );
    let _ = writeln!(
        s,
        "| counter samples compared, went backwards | {}, {} |",
        f.counters_checked,
        f.backwards.len()
    );
    let mib = |b: u64| b as f64 / 1048576.0;
    let _ = writeln!(
        s,
        "| RSS: max in the first minute, max after, at the end | {:.2} MiB, {:.2} MiB ({:+.1}%), {:.2} MiB |",
        mib(f.rss_first_minute),
        mib(f.rss_max_after),
        growth * 100.0,
        mib(f.rss_end)
    );
    let _ = writeln!(
        s,
        "| open descriptors: first minute, after | {}, {} |",
        f.fds_first_minute, f.fds_max_after
    );
    for (map, (a, b)) in &f.map_entries {
        let _ = writeln!(
            s,
            "| `{map}` entries: max, first half, second half | {a}, {b} |"
        );
    }
    s
}
