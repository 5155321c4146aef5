//! `/proc/stat`: boot time, context switches, forks, interrupts, runnable and blocked
//! processes. The parser also serves the `cpu` collector.
//!
//! Hand-written rather than procfs' `KernelStats`, which leaves out the `intr` total that
//! node_exporter exports as `node_intr_total`.
use std::path::PathBuf;

use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::source::{HostPaths, parse_error, read_to_string};
use crate::metrics::{CollectError, Collector, counter, gauge};

/// Clock ticks per second in /proc/stat. USER_HZ is 100 on every Linux architecture's ABI,
/// and node_exporter assumes the same.
pub const USER_HZ: f64 = 100.0;

/// One `cpuN` line, in ticks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuTimes {
    pub cpu: String,
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
    pub guest: u64,
    pub guest_nice: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcStat {
    pub cpus: Vec<CpuTimes>,
    pub intr: u64,
    pub ctxt: u64,
    pub btime: u64,
    pub processes: u64,
    pub procs_running: u64,
    pub procs_blocked: u64,
}

pub fn parse(text: &str) -> Result<ProcStat, String> {
    let mut stat = ProcStat::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        let first = || -> Result<u64, String> {
            line.split_ascii_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("bad value on line {line:?}"))
        };
        match key {
            "intr" => stat.intr = first()?,
            "ctxt" => stat.ctxt = first()?,
            "btime" => stat.btime = first()?,
            "processes" => stat.processes = first()?,
            "procs_running" => stat.procs_running = first()?,
            "procs_blocked" => stat.procs_blocked = first()?,
            k if k.starts_with("cpu") && k.len() > 3 => {
                let mut v = [0u64; 10];
                for (slot, field) in v.iter_mut().zip(fields) {
                    *slot = field
                        .parse()
                        .map_err(|_| format!("bad cpu time {field:?} on line {line:?}"))?;
                }
                stat.cpus.push(CpuTimes {
                    cpu: k[3..].to_owned(),
                    user: v[0],
                    nice: v[1],
                    system: v[2],
                    idle: v[3],
                    iowait: v[4],
                    irq: v[5],
                    softirq: v[6],
                    steal: v[7],
                    guest: v[8],
                    guest_nice: v[9],
                });
            }
            _ => {}
        }
    }
    if stat.btime == 0 {
        return Err("no btime line".into());
    }
    Ok(stat)
}

/// How long one reading of /proc/stat is shared: the `cpu` and `stat` collectors both need
/// it, microseconds apart in the same scrape. It is the costliest file of a scrape on a big
/// node (the kernel sums every CPU's counters to write it), so it is read once.
const SHARED_FOR: std::time::Duration = std::time::Duration::from_millis(250);

type SharedStat = Option<(PathBuf, std::time::Instant, ProcStat)>;
static SHARED: std::sync::Mutex<SharedStat> = std::sync::Mutex::new(None);

pub fn read(path: &std::path::Path) -> Result<ProcStat, CollectError> {
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((p, at, stat)) = shared.as_ref()
        && p == path
        && at.elapsed() < SHARED_FOR
    {
        return Ok(stat.clone());
    }
    let text = read_to_string(path)?;
    let stat = parse(&text).map_err(|d| parse_error(path, d))?;
    *shared = Some((path.to_owned(), std::time::Instant::now(), stat.clone()));
    Ok(stat)
}

#[derive(Debug)]
pub struct StatCollector {
    path: PathBuf,
}

impl StatCollector {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.procfs.join("stat"),
        }
    }
}

impl Collector for StatCollector {
    fn name(&self) -> &'static str {
        "stat"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let s = read(&self.path)?;
        gauge(
            out,
            "node_boot_time_seconds",
            "Node boot time, in unixtime.",
            s.btime as f64,
        )?;
        counter(
            out,
            "node_context_switches_total",
            "Total number of context switches.",
            s.ctxt as f64,
        )?;
        counter(
            out,
            "node_forks_total",
            "Total number of forks.",
            s.processes as f64,
        )?;
        counter(
            out,
            "node_intr_total",
            "Total number of interrupts serviced.",
            s.intr as f64,
        )?;
        crate::metrics::single(
            out,
            "node_procs_blocked",
            "Number of processes blocked waiting for I/O to complete.",
            MetricType::Gauge,
            s.procs_blocked as f64,
        )?;
        gauge(
            out,
            "node_procs_running",
            "Number of processes in runnable state.",
            s.procs_running as f64,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::testutil::{fixture, render};

    #[test]
    fn parses_fixture() {
        let s = read(&fixture("proc/stat")).unwrap();
        assert!(s.cpus.len() >= 2, "per-cpu lines, not the aggregate");
        assert_eq!(s.cpus[0].cpu, "0");
        assert!(s.ctxt > 0 && s.btime > 1_600_000_000 && s.intr > 0 && s.processes > 0);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(parse("").is_err());
        assert!(parse("cpu0 a b c\nbtime 5\n").is_err());
        assert!(parse("btime\n").is_err());
        assert!(
            parse("cpu0 1 2\nbtime 5\n").is_ok(),
            "old kernels have fewer columns"
        );
    }

    #[test]
    fn renders_node_exporter_names() {
        let text = render(StatCollector::new(&HostPaths {
            procfs: fixture("proc"),
            rootfs: "/".into(),
        }));
        for name in [
            "# TYPE node_boot_time_seconds gauge",
            "# TYPE node_context_switches_total counter",
            "node_forks_total ",
            "node_intr_total ",
            "node_procs_blocked ",
            "node_procs_running ",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
