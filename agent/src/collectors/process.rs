//! The standard `process_*` metrics about the agent itself: one read of /proc/self/stat,
//! one listing of /proc/self/fd and one getrlimit per scrape.
//!
//! Read directly rather than through sysinfo, whose process refresh cost four times as much
//! per scrape in `cargo xtask bench`.
use std::path::Path;

use prometheus_client::encoding::DescriptorEncoder;

use super::source::{parse_error, read_to_string};
use super::stat::USER_HZ;
use crate::metrics::{CollectError, Collector, counter, gauge};

#[derive(Debug)]
pub struct ProcessCollector {
    page_size: f64,
    /// Boot time in seconds since the epoch, to turn the start tick count into a time.
    boot_time: f64,
}

impl ProcessCollector {
    /// `procfs` is only used for the boot time (`btime`), which is the same in every pid
    /// namespace.
    pub fn new(procfs: &Path) -> Self {
        let page_size = rustix::param::page_size() as f64;
        let boot_time = super::stat::read(&procfs.join("stat"))
            .map(|s| s.btime as f64)
            .unwrap_or(0.0);
        Self {
            page_size,
            boot_time,
        }
    }
}

/// (utime + stime ticks, starttime ticks, vsize bytes, rss pages) from /proc/<pid>/stat.
pub fn parse_stat(text: &str) -> Option<(u64, u64, u64, u64)> {
    // comm may contain spaces and parentheses: fields resume after the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_ascii_whitespace().collect();
    let num = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((
        num(11)?.checked_add(num(12)?)?,
        num(19)?,
        num(20)?,
        num(21)?,
    ))
}

impl Collector for ProcessCollector {
    fn name(&self) -> &'static str {
        "process"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let path = Path::new("/proc/self/stat");
        let text = read_to_string(path)?;
        let (cpu_ticks, start_ticks, vsize, rss_pages) =
            parse_stat(&text).ok_or_else(|| parse_error(path, "too few fields"))?;
        let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).ok();
        let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map(|n| n as f64);

        counter(
            out,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            cpu_ticks as f64 / USER_HZ,
        )?;
        if let Some(max) = max_fds {
            gauge(
                out,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max,
            )?;
        }
        if let Some(open) = open_fds {
            // The listing itself holds one descriptor while it runs.
            gauge(
                out,
                "process_open_fds",
                "Number of open file descriptors.",
                open.saturating_sub(1) as f64,
            )?;
        }
        gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss_pages as f64 * self.page_size,
        )?;
        gauge(
            out,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            self.boot_time + start_ticks as f64 / USER_HZ,
        )?;
        gauge(
            out,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            vsize as f64,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::testutil::render;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let line = "42 (my (odd) proc) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 12345 1048576 300 18446744073709551615";
        assert_eq!(parse_stat(line), Some((300, 12345, 1048576, 300)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn reports_own_rss_and_start_time_close_to_proc() {
        let text = render(ProcessCollector::new(Path::new("/proc")));
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in {text}"))
                .parse()
                .unwrap()
        };
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vmrss_kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .parse()
            .unwrap();
        let ratio = value("process_resident_memory_bytes") / (vmrss_kb * 1024.0);
        assert!((0.8..1.25).contains(&ratio), "rss vs VmRSS ratio {ratio}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "start {start} vs now {now}"
        );
        assert!(value("process_open_fds") >= 3.0);
    }
}
