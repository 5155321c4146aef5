//! The "why is my pod slow" figures against the kernel's own accounting of the same
//! cgroups, for `preflight --exercise` and every guest of the kernel matrix:
//! - a cgroup whose only task reads the disk with O_DIRECT (pinned to one CPU): its
//!   blocked I/O time against
//!   the task's delay accounting (`delayacct_blkio_ticks`, read while it is a zombie), and
//!   its I/O pressure against its `io.pressure`;
//! - a cgroup limited to 8 MiB that reads 48 MiB through the page cache: its memory
//!   pressure against its `memory.pressure`;
//! - a cgroup limited to 20% of a CPU (`cpu.max`) that spins for a second: its throttled
//!   periods and seconds against its `cpu.stat`.
//!
//! Each needs what it needs from cgroup2 (the memory and cpu controllers); without it the
//! workload says why and makes no row. The kernel's figures are read after the scrape:
//! the work has ended, so they hold still.
use std::path::Path;

use nodelens_report::SlowPodRow;

use super::cgroups::{ExerciseCgroup, sample};
use crate::cgroups::born::BornInside;

/// O_DIRECT reads of 4 KiB: many waits, whose sum is long beside delay accounting's 10 ms
/// ticks even on a small virtual disk (larger reads end at its end too soon).
const DIRECT_READS: u32 = 8192;

/// What ran, and the kernel figures that had to be taken while it ran.
pub(super) struct SlowPodWork {
    reader: Option<(ExerciseCgroup, f64, f64)>,
    stalled: Option<ExerciseCgroup>,
    throttled: Option<ExerciseCgroup>,
}

/// Delay accounting, on for the exercise where the kernel lets it be turned off (5.14+),
/// then as it was.
struct DelayAccounting(Option<String>);

impl DelayAccounting {
    const SYSCTL: &str = "/proc/sys/kernel/task_delayacct";

    fn on() -> Self {
        let before = std::fs::read_to_string(Self::SYSCTL).ok();
        if before.is_some() {
            let _ = std::fs::write(Self::SYSCTL, "1");
        }
        DelayAccounting(before)
    }
}

impl Drop for DelayAccounting {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            let _ = std::fs::write(Self::SYSCTL, before.trim());
        }
    }
}

/// Clock ticks per second, the unit of `delayacct_blkio_ticks`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// Field `n` (1-based, as proc(5) numbers them) of `/proc/<pid>/stat`.
fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = text.rsplit_once(')')?;
    after.split_ascii_whitespace().nth(n - 3)?.parse().ok()
}

/// The O_DIRECT reader, in a cgroup of its own: the cgroup, its delay accounting in
/// seconds, and the tick. The kernel now and then shows an exited task's
/// `delayacct_blkio_ticks` as garbage (more than the task lived: seen on 6.18 about once
/// in 30 exits); such a run is done again, in a new cgroup, up to 3 times.
fn read_directly(cgroup2: &Path, device: &Path) -> Result<(ExerciseCgroup, f64, f64), String> {
    let mut last = String::new();
    for attempt in 0..3 {
        let cg = ExerciseCgroup::create(cgroup2, &format!("slow-reader{attempt}"))?;
        let started = std::time::Instant::now();
        match read_directly_once(&cg, device) {
            Ok((seconds, tick)) if seconds <= started.elapsed().as_secs_f64() + tick => {
                return Ok((cg, seconds, tick));
            }
            Ok((seconds, _)) => {
                last = format!(
                    "delay accounting said {seconds:.2} s of a {:.2} s life",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => last = e,
        }
        let _ = std::fs::remove_dir(&cg.dir);
    }
    Err(last)
}

fn read_directly_once(cg: &ExerciseCgroup, device: &Path) -> Result<(f64, f64), String> {
    let _delayacct = DelayAccounting::on();
    // Pinned to one CPU (exec keeps the pid): a wakeup that moves a task to another CPU
    // ends delay accounting's wait before the task is queued there, and nodelens's when
    // it is queued (docs/accuracy.md); on its own CPU both end when it is queued.
    let script = format!(
        "exec taskset -c 0 dd if={} of=/dev/null bs=4096 count={DIRECT_READS} iflag=direct 2>/dev/null",
        device.display()
    );
    let mut dd = BornInside::spawn(&cg.dir, "/bin/sh", &["sh", "-c", &script])?;
    dd.wait_exited()?;
    // Field 42: delayacct_blkio_ticks.
    let ticks = stat_field(dd.id(), 42).ok_or("no delayacct_blkio_ticks in its stat")?;
    if !dd.wait()? {
        return Err("dd failed".into());
    }
    let hz = ticks_per_second();
    Ok((ticks as f64 / hz, 1.0 / hz))
}

/// A cgroup with one limit (`file` set to a value) in which `work` ran; removed again when
/// either fails.
fn limited_work(
    cgroup2: &Path,
    role: &str,
    (file, value): (&str, &str),
    work: impl FnOnce(&ExerciseCgroup) -> Result<(), String>,
) -> Result<ExerciseCgroup, String> {
    let cg = ExerciseCgroup::create(cgroup2, role)?;
    let ran = std::fs::write(cg.dir.join(file), value)
        .map_err(|e| format!("{file}: {e}"))
        .and_then(|()| work(&cg));
    match ran {
        Ok(()) => Ok(cg),
        Err(e) => {
            let _ = std::fs::remove_dir(&cg.dir);
            Err(e)
        }
    }
}

/// Whether cgroup2 here offers `controller` to its children (enabling it if it can).
fn controller(cgroup2: &Path, controller: &str) -> Result<(), String> {
    let available = std::fs::read_to_string(cgroup2.join("cgroup.controllers")).unwrap_or_default();
    if !available.split_whitespace().any(|c| c == controller) {
        return Err(format!(
            "no {controller} controller in {} (a hybrid host keeps it in v1)",
            cgroup2.display()
        ));
    }
    let _ = std::fs::write(
        cgroup2.join("cgroup.subtree_control"),
        format!("+{controller}"),
    );
    Ok(())
}

impl SlowPodWork {
    /// Runs the three workloads; each says what it did, or why it did not run.
    pub(super) fn run(
        cgroup2: &Path,
        device: Option<&Path>,
        workloads: &mut Vec<(String, String)>,
    ) -> Self {
        let mut work = SlowPodWork {
            reader: None,
            stalled: None,
            throttled: None,
        };
        let mut note = |name: &str, what: Result<String, String>| {
            workloads.push((
                name.to_owned(),
                what.unwrap_or_else(|e| format!("not run: {e}")),
            ));
        };
        // The disk, else (a sandbox that will not let us open it) a file on it: our own
        // executable, as the disk family's exercise does.
        let exe = std::env::current_exe().ok();
        let sources: Vec<&Path> = device.into_iter().chain(exe.as_deref()).collect();
        let reader = (|| {
            let mut errors = Vec::new();
            for source in &sources {
                match read_directly(cgroup2, source) {
                    Ok(read) => return Ok(read),
                    Err(e) => errors.push(format!("{}: {e}", source.display())),
                }
            }
            Err(if errors.is_empty() {
                "nothing to read".to_owned()
            } else {
                errors.join("; ")
            })
        })();
        note(
            "slow pod: blocked on I/O",
            reader
                .as_ref()
                .map(|(_, seconds, _)| {
                    format!(
                        "up to {DIRECT_READS} O_DIRECT reads of 4 KiB; {seconds:.2} s by delay accounting"
                    )
                })
                .map_err(Clone::clone),
        );
        work.reader = reader.ok();

        let stalled = controller(cgroup2, "memory").and_then(|()| {
            limited_work(cgroup2, "slow-memory", ("memory.max", "8388608"), |cg| {
                let source = sources.first().ok_or("nothing to read")?;
                cg.run_born_inside(&format!(
                    "dd if={} of=/dev/null bs=1048576 count=48",
                    source.display()
                ))
            })
        });
        note(
            "slow pod: memory pressure",
            stalled
                .as_ref()
                .map(|_| "48 MiB read through the page cache in 8 MiB".to_owned())
                .map_err(Clone::clone),
        );
        work.stalled = stalled.ok();

        let throttled = controller(cgroup2, "cpu").and_then(|()| {
            limited_work(
                cgroup2,
                "slow-throttled",
                ("cpu.max", "20000 100000"),
                |cg| cg.run_born_inside("timeout 1 sh -c 'while :; do :; done'; exit 0"),
            )
        });
        note(
            "slow pod: CPU throttling",
            throttled
                .as_ref()
                .map(|_| "a 1 s busy loop under cpu.max 20000 100000".to_owned())
                .map_err(Clone::clone),
        );
        work.throttled = throttled.ok();
        work
    }

    /// nodelens's figures (one scrape) against the kernel's.
    pub(super) fn rows(&self, scrape: &str) -> Vec<SlowPodRow> {
        let mut rows = Vec::new();
        let mut row = |check: &str,
                       cg: &ExerciseCgroup,
                       family: &str,
                       kind: Option<&str>,
                       kernel: f64,
                       kernel_source: &str,
                       tolerance: f64,
                       slack: f64| {
            let mut labels = vec![("cgroup", cg.label.as_str())];
            labels.extend(kind.map(|k| ("kind", k)));
            rows.push(SlowPodRow {
                check: check.to_owned(),
                cgroup: cg.label.clone(),
                series: match kind {
                    Some(k) => format!("{family}{{kind=\"{k}\"}}"),
                    None => family.to_owned(),
                },
                nodelens: sample(scrape, family, &labels),
                kernel,
                kernel_source: kernel_source.to_owned(),
                tolerance,
                slack,
            });
        };
        if let Some((cg, seconds, tick)) = &self.reader {
            row(
                "blocked on I/O",
                cg,
                "nodelens_cgroup_blocked_seconds_total",
                Some("io"),
                *seconds,
                "delayacct_blkio_ticks of the reader",
                0.05,
                *tick,
            );
            row(
                "I/O pressure",
                cg,
                "nodelens_cgroup_pressure_io_waiting_seconds_total",
                None,
                psi_some(&cg.dir, "io.pressure"),
                "io.pressure some",
                0.02,
                0.0,
            );
        }
        if let Some(cg) = &self.stalled {
            row(
                "memory pressure",
                cg,
                "nodelens_cgroup_pressure_memory_waiting_seconds_total",
                None,
                psi_some(&cg.dir, "memory.pressure"),
                "memory.pressure some",
                0.02,
                0.0,
            );
        }
        if let Some(cg) = &self.throttled {
            let stat = std::fs::read_to_string(cg.dir.join("cpu.stat")).unwrap_or_default();
            let get = |key: &str| {
                stat.lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            row(
                "throttled periods",
                cg,
                "nodelens_cgroup_cpu_cfs_throttled_periods_total",
                None,
                get("nr_throttled"),
                "cpu.stat nr_throttled",
                0.02,
                0.0,
            );
            row(
                "throttled seconds",
                cg,
                "nodelens_cgroup_cpu_cfs_throttled_seconds_total",
                None,
                get("throttled_usec") / 1e6,
                "cpu.stat throttled_usec",
                0.02,
                0.0,
            );
        }
        rows
    }

    pub(super) fn remove(self) {
        let cgroups = [
            self.reader.map(|(cg, _, _)| cg),
            self.stalled,
            self.throttled,
        ];
        for cg in cgroups.into_iter().flatten() {
            let _ = std::fs::remove_dir(&cg.dir);
        }
    }
}

/// A pressure file's `some` total, in seconds.
fn psi_some(dir: &Path, file: &str) -> f64 {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|t| crate::psi::parse(&t).ok())
        .map_or(0.0, |(some, _)| some as f64 / 1e6)
}
