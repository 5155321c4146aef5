//! The standard `process_*` metrics about the agent itself, read through sysinfo.
use std::sync::Mutex;

use prometheus_client::encoding::DescriptorEncoder;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use super::{CollectError, Collector};
use crate::metrics::{counter, gauge};

#[derive(Debug)]
pub struct ProcessCollector {
    pid: Pid,
    // Refreshing only our own pid keeps this at one /proc/self read per scrape.
    system: Mutex<System>,
}

impl ProcessCollector {
    pub fn new() -> Self {
        Self {
            pid: Pid::from_u32(std::process::id()),
            system: Mutex::new(System::new()),
        }
    }
}

impl Collector for ProcessCollector {
    fn name(&self) -> &'static str {
        "process"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let mut system = self.system.lock().unwrap_or_else(|p| p.into_inner());
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            false,
            ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .with_tasks()
                .with_exe(UpdateKind::Never),
        );
        let Some(p) = system.process(self.pid) else {
            return Err(CollectError::Read {
                path: "/proc/self".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        };
        let cpu_seconds = p.accumulated_cpu_time() as f64 / 1000.0;
        let (rss, vsz, start) = (p.memory(), p.virtual_memory(), p.start_time());
        let open = p.open_files();
        let max = p.open_files_limit();
        drop(system);
        counter(
            out,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            cpu_seconds,
        )?;
        if let Some(max) = max {
            gauge(
                out,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max as f64,
            )?;
        }
        if let Some(open) = open {
            gauge(
                out,
                "process_open_fds",
                "Number of open file descriptors.",
                open as f64,
            )?;
        }
        gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss as f64,
        )?;
        gauge(
            out,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            start as f64,
        )?;
        gauge(
            out,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            vsz as f64,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::testutil::render;

    #[test]
    fn reports_own_rss_close_to_proc() {
        let text = render(ProcessCollector::new());
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vmrss_kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .parse()
            .unwrap();
        let ratio = rss / (vmrss_kb * 1024.0);
        assert!(
            (0.5..2.0).contains(&ratio),
            "rss {rss} vs VmRSS {vmrss_kb} kB"
        );
        assert!(text.contains("process_open_fds "), "{text}");
    }
}
