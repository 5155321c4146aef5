//! `node_cpu_seconds_total{cpu,mode}` and `node_cpu_guest_seconds_total{cpu,mode}` from
//! `/proc/stat`, as node_exporter's cpu collector exports them.
use std::path::PathBuf;

use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::{
    source::HostPaths,
    stat::{self, USER_HZ},
};
use crate::metrics::{CollectError, Collector, family};

#[derive(Debug)]
pub struct CpuCollector {
    path: PathBuf,
}

impl CpuCollector {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.procfs.join("stat"),
        }
    }
}

impl Collector for CpuCollector {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let s = stat::read(&self.path)?;
        let secs = |ticks: u64| ticks as f64 / USER_HZ;
        family(
            out,
            "node_cpu_guest_seconds_total",
            "Seconds the CPUs spent in guests (VMs) for each mode.",
            MetricType::Counter,
            s.cpus.iter().flat_map(|c| {
                [
                    (
                        [("cpu", c.cpu.as_str()), ("mode", "nice")],
                        secs(c.guest_nice),
                    ),
                    ([("cpu", c.cpu.as_str()), ("mode", "user")], secs(c.guest)),
                ]
            }),
        )?;
        family(
            out,
            "node_cpu_seconds_total",
            "Seconds the CPUs spent in each mode.",
            MetricType::Counter,
            s.cpus.iter().flat_map(|c| {
                [
                    ("idle", c.idle),
                    ("iowait", c.iowait),
                    ("irq", c.irq),
                    ("nice", c.nice),
                    ("softirq", c.softirq),
                    ("steal", c.steal),
                    ("system", c.system),
                    ("user", c.user),
                ]
                .map(|(mode, ticks)| ([("cpu", c.cpu.as_str()), ("mode", mode)], secs(ticks)))
            }),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::testutil::{fixture, render};

    #[test]
    fn renders_every_mode_for_every_cpu() {
        let text = render(CpuCollector::new(&HostPaths {
            procfs: fixture("proc"),
            rootfs: "/".into(),
        }));
        let s = stat::read(&fixture("proc/stat")).unwrap();
        let user0 = format!(
            "node_cpu_seconds_total{{cpu=\"0\",mode=\"user\"}} {}",
            s.cpus[0].user as f64 / USER_HZ
        );
        assert!(text.contains(&user0), "{user0} not in\n{text}");
        assert_eq!(
            text.matches("node_cpu_seconds_total{").count(),
            8 * s.cpus.len()
        );
        assert_eq!(
            text.matches("node_cpu_guest_seconds_total{").count(),
            2 * s.cpus.len()
        );
    }
}
