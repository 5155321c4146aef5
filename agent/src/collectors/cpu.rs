//! `node_cpu_seconds_total{cpu,mode}` and `node_cpu_guest_seconds_total{cpu,mode}` from
//! `/proc/stat`, as node_exporter's cpu collector exports them.
//!
//! The kernel's per-CPU times can step back by a tick or two between reads (the sum of a
//! CPU's ticks is rescaled from its run time), so, as node_exporter does, each counter
//! keeps its last value when a read is lower; an idle time more than 5 s lower means the
//! CPU went offline and came back, and its counters start over.
use std::{collections::HashMap, path::PathBuf, sync::Mutex};

use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::{
    source::HostPaths,
    stat::{self, CpuTimes, USER_HZ},
};
use crate::metrics::{CollectError, Collector, family};

#[derive(Debug)]
pub struct CpuCollector {
    path: PathBuf,
    /// What each CPU's counters last showed.
    last: Mutex<HashMap<String, CpuTimes>>,
}

/// Idle time lost, in ticks, beyond which a CPU is taken to have been hot-plugged.
const HOTPLUG_IDLE_DROP: u64 = 5 * USER_HZ as u64;

/// `new` with no counter below `last`'s, unless the CPU was hot-plugged (idle fell by
/// more than 5 s): then `new` as it is.
fn monotonic(last: &CpuTimes, new: &CpuTimes) -> CpuTimes {
    if last.idle.saturating_sub(new.idle) > HOTPLUG_IDLE_DROP {
        return new.clone();
    }
    CpuTimes {
        cpu: new.cpu.clone(),
        user: new.user.max(last.user),
        nice: new.nice.max(last.nice),
        system: new.system.max(last.system),
        idle: new.idle.max(last.idle),
        iowait: new.iowait.max(last.iowait),
        irq: new.irq.max(last.irq),
        softirq: new.softirq.max(last.softirq),
        steal: new.steal.max(last.steal),
        guest: new.guest.max(last.guest),
        guest_nice: new.guest_nice.max(last.guest_nice),
    }
}

impl CpuCollector {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.procfs.join("stat"),
            last: Mutex::new(HashMap::new()),
        }
    }
}

impl Collector for CpuCollector {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let mut s = stat::read(&self.path)?;
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            for c in &mut s.cpus {
                if let Some(prev) = last.get(&c.cpu) {
                    *c = monotonic(prev, c);
                }
                last.insert(c.cpu.clone(), c.clone());
            }
        }
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

    #[test]
    fn counters_never_step_back_unless_the_cpu_was_replugged() {
        let t = |user, idle| CpuTimes {
            cpu: "cpu0".into(),
            user,
            idle,
            ..Default::default()
        };
        assert_eq!(monotonic(&t(100, 1000), &t(98, 1001)), t(100, 1001));
        assert_eq!(monotonic(&t(100, 1000), &t(101, 999)), t(101, 1000));
        // Idle 10 s lower: the CPU came back from offline; start over.
        assert_eq!(monotonic(&t(100, 2000), &t(5, 1000)), t(5, 1000));
    }
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
