//! Node collectors, one file per family of `/proc` and `/sys` metrics, plus the agent's own
//! (`bpf`: probe cost and map health, `process`). Each reads its source at scrape time,
//! parses all of it, and only then encodes, so a failed read leaves no half-written family
//! behind. The eBPF families collect themselves (`ebpf::families`).
use std::sync::Arc;

use crate::{config::CollectorName, ebpf::loader::Probes, metrics::Collector};
pub use source::HostPaths;

pub mod bpf;
pub mod cpu;
pub mod diskstats;
pub mod filesystem;
pub mod loadavg;
pub mod meminfo;
pub mod pressure;
pub mod process;
pub mod source;
pub mod stat;
#[cfg(test)]
pub mod testutil;
pub mod uname;
pub mod vmstat;

/// The collector called `name`, or `None` for names an eBPF family serves.
pub fn build(
    name: CollectorName,
    paths: &HostPaths,
    probes: &Arc<Probes>,
) -> Option<Box<dyn Collector>> {
    Some(match name {
        CollectorName::Cpu => Box::new(cpu::CpuCollector::new(paths)),
        CollectorName::Stat => Box::new(stat::StatCollector::new(paths)),
        CollectorName::Meminfo => Box::new(meminfo::MeminfoCollector::new(paths)),
        CollectorName::Loadavg => Box::new(loadavg::LoadavgCollector::new(paths)),
        CollectorName::Pressure => Box::new(pressure::PressureCollector::new(paths)),
        CollectorName::Vmstat => Box::new(vmstat::VmstatCollector::new(paths)),
        CollectorName::Uname => Box::new(uname::UnameCollector),
        CollectorName::Diskstats => Box::new(diskstats::DiskstatsCollector::new(paths)),
        CollectorName::Filesystem => Box::new(filesystem::FilesystemCollector::new(paths)),
        CollectorName::Bpf => Box::new(bpf::BpfCollector::new(probes.clone())),
        CollectorName::Process => Box::new(process::ProcessCollector::new(&paths.procfs)),
        CollectorName::Sched
        | CollectorName::Disk
        | CollectorName::Memory
        | CollectorName::Cgroup => {
            return None;
        }
    })
}
