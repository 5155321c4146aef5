//! `nodelens preflight --exercise`: does nodelens work on this kernel? With every probe
//! loaded by preflight's runtime, it generates a little of each kind of work (scheduler
//! wakeups and switches, O_DIRECT reads from a disk, memcg reclaim where a cgroup2 memory
//! controller allows it), and reports per probe the attach type, the events seen and the
//! cost per event from the kernel's BPF statistics. With a filesystem to write to, it also
//! checks per-cgroup disk attribution against the cgroups' own `io.stat`. It checks per-cgroup
//! CPU time against `cpu.stat` on workloads whose tasks exit, share a CPU or stop. It also renders
//! one scrape of /metrics to a file.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    cgroups::born::BornInside,
    ebpf::{
        family::{AttachKind, ExerciseContext},
        loader::Loaded,
        map_memory::possible_cpus,
    },
    runtime::{Runtime, cgroup_root},
};

/// What `preflight --exercise` was given.
#[derive(Debug, Default)]
pub struct Options {
    /// The disk to read from; the first disk in sysfs when `None`.
    pub device: Option<PathBuf>,
    /// A mounted disk filesystem for the attribution check.
    pub filesystem: Option<PathBuf>,
    /// Where to write one scrape.
    pub metrics_out: Option<PathBuf>,
}

pub use nodelens_report::{
    AttributionRow, CpuAccountingRow, Exercise, MapMemoryRow, ProbeExercise,
};

mod cgroups;
mod slow_pod;

use cgroups::{ExerciseCgroup, sample};

/// The first whole disk in sysfs: not a loop, RAM, zram or optical device, with a size.
fn find_disk(sysfs: &Path) -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(sysfs.join("block"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["loop", "ram", "zram", "sr", "fd", "nbd"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .filter(|n| {
            std::fs::read_to_string(sysfs.join("block").join(n).join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_some_and(|s| s > 0)
        })
        .collect();
    names.sort();
    names.first().map(|n| PathBuf::from("/dev").join(n))
}

/// The two cgroups of the attribution check and the device their I/O went to.
struct Attribution {
    writer: ExerciseCgroup,
    reader: ExerciseCgroup,
    /// `MAJ:MIN`, as `io.stat` keys it.
    dev: String,
    /// The name nodelens labels the device with.
    device: String,
}

impl Attribution {
    /// nodelens's counters (from one scrape) against `io.stat`, per cgroup and direction.
    fn rows(&self, scrape: &str) -> Vec<AttributionRow> {
        let mut rows = Vec::new();
        for (role, cg) in [("writer", &self.writer), ("reader", &self.reader)] {
            let stat = cg.io_stat(&self.dev);
            for (op, short) in [("read", 'r'), ("write", 'w')] {
                let labels = [
                    ("cgroup", cg.label.as_str()),
                    ("device", &self.device),
                    ("op", op),
                ];
                rows.push(AttributionRow {
                    role: role.into(),
                    cgroup: cg.label.clone(),
                    device: self.device.clone(),
                    op: op.into(),
                    nodelens_bytes: sample(scrape, "nodelens_cgroup_disk_io_bytes_total", &labels),
                    io_stat_bytes: stat.get(&format!("{short}bytes")).copied().unwrap_or(0),
                    nodelens_ios: sample(scrape, "nodelens_cgroup_disk_ios_total", &labels),
                    io_stat_ios: stat.get(&format!("{short}ios")).copied().unwrap_or(0),
                });
            }
        }
        rows
    }

    fn remove(self) {
        for cg in [self.writer, self.reader] {
            let _ = std::fs::remove_dir(&cg.dir);
        }
    }
}

/// Busy-loop lengths, in seconds: one alone on the machine first, then nine at once, more
/// than there are CPUs on the machines the matrix boots, so that they share.
const ALONE_LOOP_SECONDS: u32 = 1;
const SHARED_LOOP_SECONDS: [u32; 9] = [1, 1, 2, 2, 2, 3, 3, 3, 3];

/// Cgroups whose CPU time the exercise compares with `cpu.stat`, and the stopped loop,
/// killed once they have been compared.
struct CpuAccounting {
    cgroups: Vec<(String, ExerciseCgroup)>,
    stopped: Option<BornInside>,
}

impl CpuAccounting {
    fn rows(&self, scrape: &str) -> Vec<CpuAccountingRow> {
        self.cgroups
            .iter()
            .map(|(workload, cg)| CpuAccountingRow {
                workload: workload.clone(),
                cgroup: cg.label.clone(),
                nodelens_seconds: sample(
                    scrape,
                    "nodelens_cgroup_cpu_seconds_total",
                    &[("cgroup", cg.label.as_str())],
                ),
                cpu_stat_seconds: cg.cpu_usage_seconds(),
            })
            .collect()
    }

    fn remove(mut self) {
        // Killed and reaped before its cgroup can be removed.
        drop(self.stopped.take());
        for (_, cg) in self.cgroups {
            let _ = std::fs::remove_dir(&cg.dir);
        }
    }
}

/// CPU work whose per-cgroup accounting is easy to get wrong, each in its own cgroup: a
/// shell loop of 1,000 short processes; ten busy loops that exit, one alone and nine at
/// once (sharing the CPUs); and a busy loop stopped with SIGSTOP after half a second of
/// CPU. Their CPU time is compared with `cpu.stat` after the scrape.
fn cpu_accounting_work(cgroup2: &Path) -> (String, CpuAccounting) {
    let mut work = CpuAccounting {
        cgroups: Vec::new(),
        stopped: None,
    };
    let done = (|| -> Result<(), String> {
        let short = ExerciseCgroup::create(cgroup2, "cpu-short")?;
        let ran = short.run_born_inside("for i in $(seq 1000); do /bin/true; done");
        work.cgroups.push(("1,000 short processes".into(), short));
        ran?;
        let busy = |seconds: u32| format!("timeout {seconds} sh -c 'while :; do :; done'");
        let alone = ExerciseCgroup::create(cgroup2, "cpu-alone")?;
        let _ = alone.run_born_inside(&busy(ALONE_LOOP_SECONDS));
        work.cgroups
            .push((format!("a {ALONE_LOOP_SECONDS} s loop alone"), alone));
        let mut children = Vec::new();
        for (i, seconds) in SHARED_LOOP_SECONDS.iter().enumerate() {
            let cg = ExerciseCgroup::create(cgroup2, &format!("cpu-shared{i}"))?;
            children.push(cg.spawn(&busy(*seconds))?);
            work.cgroups
                .push((format!("a {seconds} s loop among nine"), cg));
        }
        for mut child in children {
            let _ = child.wait();
        }
        let stopped = ExerciseCgroup::create(cgroup2, "cpu-stopped")?;
        let child = stopped.spawn("while :; do :; done");
        work.cgroups
            .push(("a loop stopped with SIGSTOP".into(), stopped));
        let child = child?;
        let pid = child.id();
        work.stopped = Some(child);
        let used = |cg: &ExerciseCgroup| cg.cpu_usage_seconds();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Some((_, cg)) = work.cgroups.last()
            && used(cg) < 0.5
        {
            if std::time::Instant::now() > deadline {
                return Err("the loop to stop did not get half a second of CPU in 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).ok_or("no pid")?,
            rustix::process::Signal::STOP,
        )
        .map_err(|e| format!("SIGSTOP: {e}"))?;
        Ok(())
    })();
    let what = match done {
        Ok(()) => format!(
            "{} cgroups: 1,000 short processes, {} busy loops that exit, a stopped loop",
            work.cgroups.len(),
            1 + SHARED_LOOP_SECONDS.len()
        ),
        Err(e) => format!("stopped early: {e}"),
    };
    (what, work)
}

/// Disk attribution work on a filesystem: one cgroup writes 32 MiB through the page cache,
/// `sync` from outside it has the flusher write them back (so the issuing task is a kworker
/// and only the bio's blkcg names the writer), and a second cgroup reads the file back with
/// O_DIRECT. Needs cgroup2 with the io and memory controllers (cgroup writeback).
fn attribution_work(cgroup2: &Path, fs: &Path, sysfs: &Path) -> Result<Attribution, String> {
    let controllers =
        std::fs::read_to_string(cgroup2.join("cgroup.controllers")).unwrap_or_default();
    for needed in ["io", "memory"] {
        if !controllers.split_whitespace().any(|c| c == needed) {
            return Err(format!(
                "no {needed} controller in {} (cgroup writeback needs io and memory)",
                cgroup2.display()
            ));
        }
    }
    let _ = std::fs::write(cgroup2.join("cgroup.subtree_control"), "+io +memory");
    let st = rustix::fs::stat(fs).map_err(|e| format!("stat {}: {e}", fs.display()))?;
    let (major, minor) = (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
    let dev = format!("{major}:{minor}");
    let device = std::fs::read_link(sysfs.join("dev/block").join(&dev))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| format!("{} is not on a block device ({dev})", fs.display()))?;
    let writer = ExerciseCgroup::create(cgroup2, "writer")?;
    let reader = ExerciseCgroup::create(cgroup2, "reader")?;
    let file = fs.join(format!("nodelens-exercise-{}", std::process::id()));
    let done = (|| {
        writer.run(&format!(
            "exec dd if=/dev/zero of={} bs=1048576 count=32",
            file.display()
        ))?;
        rustix::fs::sync();
        reader.run(&format!(
            "exec dd if={} of=/dev/null bs=1048576 iflag=direct",
            file.display()
        ))
    })();
    let _ = std::fs::remove_file(&file);
    let attribution = Attribution {
        writer,
        reader,
        dev,
        device,
    };
    match done {
        Ok(()) => Ok(attribution),
        Err(e) => {
            attribution.remove();
            Err(e)
        }
    }
}

fn stats_by_probe(loaded: &Loaded) -> HashMap<&'static str, (u64, f64)> {
    loaded
        .sampled_program_stats()
        .into_iter()
        .map(|(p, runs, secs)| (p, (runs, secs)))
        .collect()
}

/// Runs the exercise; writes one scrape to `options.metrics_out` when given.
pub fn run(runtime: &Runtime, options: &Options) -> Exercise {
    let config = &runtime.config;
    let Some(l) = runtime.probes.loaded.get() else {
        return Exercise {
            probes: Vec::new(),
            offsets: Vec::new(),
            workloads: vec![("probes".into(), "not loaded".into())],
            failed_core: vec!["all".into()],
            possible_cpus: 0,
            map_memory: Vec::new(),
            attribution: Vec::new(),
            cpu_accounting: Vec::new(),
            slow_pod: Vec::new(),
        };
    };
    let offsets = l.offsets.clone();
    let before = stats_by_probe(l);

    let device = options.device.clone().or_else(|| find_disk(&config.sysfs));
    let cgroup2 = cgroup_root(config);
    let context = ExerciseContext {
        device: device.as_deref(),
        cgroup_root: cgroup2.as_deref(),
    };
    // Each loaded family makes its own probes fire.
    let mut workloads = Vec::new();
    let mut expect_events: Vec<&'static str> = Vec::new();
    let loaded = crate::runtime::Runtime::all_families()
        .into_iter()
        .filter(|f| l.families.iter().any(|e| e.name == f.name()));
    for family in loaded {
        for w in family.exercise(&context) {
            let what = match w.outcome {
                Ok(did) => {
                    expect_events.extend(w.fires);
                    did
                }
                Err(why) => format!("not run: {why}"),
            };
            workloads.push((w.name.to_owned(), what));
        }
    }
    let attribution_cgroups = options.filesystem.as_deref().map(|fs| {
        let done = cgroup2
            .as_deref()
            .ok_or_else(|| "no cgroup2 mount".to_owned())
            .and_then(|root| attribution_work(root, fs, &config.sysfs));
        let what = match &done {
            Ok(a) => format!(
                "32 MiB buffered writes by {} (written back after sync), read back with O_DIRECT by {}, on {}",
                a.writer.label, a.reader.label, a.device
            ),
            Err(e) => format!("not run: {e}"),
        };
        workloads.push(("disk attribution".into(), what));
        done
    });
    let cpu_accounting = cgroup2.as_deref().map(|root| {
        let (what, work) = cpu_accounting_work(root);
        workloads.push(("cpu accounting".into(), what));
        work
    });
    let slow_pod = cgroup2
        .as_deref()
        .map(|root| slow_pod::SlowPodWork::run(root, device.as_deref(), &mut workloads));
    // Let completions and the last switches land, and keep the maps as the agent would.
    std::thread::sleep(Duration::from_millis(200));
    l.upkeep();
    let after = stats_by_probe(l);

    let probes_report: Vec<ProbeExercise> = l
        .statuses
        .iter()
        .map(|s| {
            let (r0, t0) = before.get(s.name).copied().unwrap_or_default();
            let expected = s.core || expect_events.contains(&s.name);
            let (r1, t1) = after.get(s.name).copied().unwrap_or_default();
            let events = r1.saturating_sub(r0);
            ProbeExercise {
                probe: s.name.into(),
                attach: s.attach,
                events,
                ns_per_event: (events > 0 && t1 > t0).then(|| (t1 - t0) / events as f64 * 1e9),
                expect_events: expected,
                reason: s.note.clone().unwrap_or_default(),
            }
        })
        .collect();
    let failed_core: Vec<String> = l
        .statuses
        .iter()
        .filter(|s| s.core)
        .filter(|s| {
            !probes_report
                .iter()
                .any(|p| p.probe == s.name && p.attach != AttachKind::None && p.events > 0)
        })
        .map(|s| s.name.to_owned())
        .collect();

    runtime.agent.set_ready();
    let scrape = runtime.render().map_err(|_| "encoding failed".to_owned());
    let attribution = match (&attribution_cgroups, &scrape) {
        (Some(Ok(a)), Ok(text)) => a.rows(text),
        _ => Vec::new(),
    };
    if let Some(Ok(a)) = attribution_cgroups {
        a.remove();
    }
    let cpu_accounting = cpu_accounting.map_or_else(Vec::new, |work| {
        let rows = scrape
            .as_ref()
            .map_or_else(|_| Vec::new(), |t| work.rows(t));
        work.remove();
        rows
    });
    let slow_pod = slow_pod.map_or_else(Vec::new, |work| {
        let rows = scrape
            .as_ref()
            .map_or_else(|_| Vec::new(), |t| work.rows(t));
        work.remove();
        rows
    });
    if let Some(path) = &options.metrics_out {
        let written = scrape
            .clone()
            .and_then(|text| std::fs::write(path, text).map_err(|e| e.to_string()));
        if let Err(e) = written {
            workloads.push((
                "metrics".into(),
                format!("cannot write {}: {e}", path.display()),
            ));
        }
    }
    let possible_cpus = possible_cpus(&config.sysfs).unwrap_or(0);
    Exercise {
        probes: probes_report,
        offsets,
        workloads,
        failed_core,
        possible_cpus,
        map_memory: map_memory_rows(l, possible_cpus),
        attribution,
        cpu_accounting,
        slow_pod,
    }
}

/// Charged and modeled memory of every map; maps that allocate on use are modeled with the
/// entries upkeep last counted.
fn map_memory_rows(l: &Loaded, cpus: u64) -> Vec<MapMemoryRow> {
    let fills: HashMap<&str, u64> = l
        .families
        .iter()
        .flat_map(|e| e.family.health().maps)
        .map(|m| (m.map, m.entries))
        .collect();
    let in_use = |map: &str| fills.get(map).copied().unwrap_or(0);
    let modeled: HashMap<&str, u64> = l.map_memory.modeled(cpus, in_use).into_iter().collect();
    let big: HashMap<&str, u64> = l.map_memory.modeled(192, in_use).into_iter().collect();
    l.map_memory
        .measured()
        .into_iter()
        .map(|(map, charged)| MapMemoryRow {
            map: map.to_owned(),
            charged,
            modeled: modeled.get(map).copied().unwrap_or(0),
            modeled_192_cpus: big.get(map).copied().unwrap_or(0),
        })
        .collect()
}

pub fn render_text(e: &Exercise) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "\nEXERCISE");
    for (what, did) in &e.workloads {
        let _ = writeln!(s, "{what:<16} {did}");
    }
    let _ = writeln!(
        s,
        "\n{:<32} {:<12} {:>10} {:>10}",
        "PROBE", "ATTACH", "EVENTS", "NS/EVENT"
    );
    for p in &e.probes {
        let ns = p.ns_per_event.map_or("-".into(), |n| format!("{n:.0}"));
        let _ = writeln!(
            s,
            "{:<32} {:<12} {:>10} {:>10}",
            p.probe,
            p.attach.as_str(),
            p.events,
            ns
        );
    }
    if !e.offsets.is_empty() {
        let _ = writeln!(s, "\nOFFSETS FROM BTF");
        for (name, off) in &e.offsets {
            let _ = writeln!(s, "{name:<36} {off}");
        }
    }
    if !e.map_memory.is_empty() {
        let total = |f: fn(&MapMemoryRow) -> u64| e.map_memory.iter().map(f).sum::<u64>();
        let _ = writeln!(
            s,
            "\nMAP MEMORY: {} KiB charged by the kernel, {} KiB modeled, for {} possible CPUs; {} KiB modeled for 192 CPUs",
            total(|r| r.charged) / 1024,
            total(|r| r.modeled) / 1024,
            e.possible_cpus,
            total(|r| r.modeled_192_cpus) / 1024
        );
    }
    if !e.attribution.is_empty() {
        let _ = writeln!(
            s,
            "\nPER-CGROUP DISK I/O, nodelens against io.stat\n{:<8} {:<6} {:>14} {:>14} {:>10} {:>10}",
            "CGROUP", "OP", "BYTES", "IO.STAT", "IOS", "IO.STAT"
        );
        for r in &e.attribution {
            let _ = writeln!(
                s,
                "{:<8} {:<6} {:>14} {:>14} {:>10} {:>10}",
                r.role, r.op, r.nodelens_bytes, r.io_stat_bytes, r.nodelens_ios, r.io_stat_ios
            );
        }
    }
    if !e.cpu_accounting.is_empty() {
        let _ = writeln!(
            s,
            "\nPER-CGROUP CPU, nodelens against cpu.stat\n{:<30} {:>12} {:>12} {:>8}",
            "WORKLOAD", "NODELENS S", "CPU.STAT S", "OFF"
        );
        for r in &e.cpu_accounting {
            let off = if r.cpu_stat_seconds > 0.0 {
                format!(
                    "{:+.2}%",
                    (r.nodelens_seconds / r.cpu_stat_seconds - 1.0) * 100.0
                )
            } else {
                "-".into()
            };
            let _ = writeln!(
                s,
                "{:<30} {:>12.6} {:>12.6} {:>8}",
                r.workload, r.nodelens_seconds, r.cpu_stat_seconds, off
            );
        }
    }
    if !e.slow_pod.is_empty() {
        let _ = writeln!(
            s,
            "\nWHY IS MY POD SLOW, nodelens against the kernel's own accounting\n{:<20} {:>12} {:>12} {:>4} SOURCE",
            "FIGURE", "NODELENS", "KERNEL", "OK"
        );
        for r in &e.slow_pod {
            let _ = writeln!(
                s,
                "{:<20} {:>12.6} {:>12.6} {:>4} {}",
                r.check,
                r.nodelens,
                r.kernel,
                if r.agrees() { "yes" } else { "NO" },
                r.kernel_source
            );
        }
    }
    if e.failed_core.is_empty() {
        let _ = writeln!(
            s,
            "\nexercise: ok, every core probe attached and saw events"
        );
    } else {
        let _ = writeln!(
            s,
            "\nexercise: FAILED, core probes without events: {}",
            e.failed_core.join(", ")
        );
    }
    s
}
