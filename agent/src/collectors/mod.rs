//! Collectors: one file per family. Each reads its source at scrape time, parses all of it,
//! and only then encodes, so a failed read leaves no half-written family behind.
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use agent_ebpf::Log2Histogram;
use prometheus_client::encoding::DescriptorEncoder;

use crate::{cgroups::CgroupResolver, config::Config, ebpf::Probes};

pub mod block;
pub mod bpf;
pub mod cgroup;
pub mod cpu;
pub mod diskstats;
pub mod filesystem;
pub mod loadavg;
pub mod meminfo;
pub mod memory;
pub mod pressure;
pub mod process;
pub mod sched;
pub mod stat;
pub mod uname;
pub mod vmstat;

/// Every collector name accepted by `--collectors-enabled` / `--collectors-disabled`, in the
/// order they run in a scrape.
pub const COLLECTOR_NAMES: &[&str] = &[
    "cpu",
    "stat",
    "meminfo",
    "loadavg",
    "pressure",
    "vmstat",
    "uname",
    "diskstats",
    "filesystem",
    "sched",
    "block",
    "memory",
    "cgroup",
    "bpf",
    "process",
];

pub trait Collector: fmt::Debug + Send + Sync {
    fn name(&self) -> &'static str;
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("cannot read BPF map {map}: {detail}")]
    Map { map: &'static str, detail: String },
    #[error("encoding failed")]
    Encode(#[from] fmt::Error),
}

/// A BPF map read that failed, as a collector error.
pub fn map_error(map: &'static str, e: aya::maps::MapError) -> CollectError {
    CollectError::Map {
        map,
        detail: crate::ebpf::reason(&e),
    }
}

/// Sums a per-CPU histogram across CPUs.
pub fn sum_histograms<'a>(per_cpu: impl IntoIterator<Item = &'a Log2Histogram>) -> Log2Histogram {
    let mut total = Log2Histogram::zeroed();
    for h in per_cpu {
        for (t, v) in total.slots.iter_mut().zip(h.slots.iter()) {
            *t += v;
        }
        total.sum += h.sum;
    }
    total
}

pub fn read_to_string(path: &Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|source| CollectError::Read {
        path: path.to_owned(),
        source,
    })
}

pub fn parse_error(path: &Path, detail: impl Into<String>) -> CollectError {
    CollectError::Parse {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// Where the host's pseudo-filesystems are visible (`/proc`, or `/host/proc` in a pod).
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub procfs: PathBuf,
    pub rootfs: PathBuf,
}

/// Builds the enabled collectors, in `COLLECTOR_NAMES` order.
pub fn build(
    config: &Config,
    probes: Arc<Probes>,
    resolver: Arc<Mutex<CgroupResolver>>,
) -> Vec<Box<dyn Collector>> {
    let paths = HostPaths {
        procfs: config.procfs.clone(),
        rootfs: config.rootfs.clone(),
    };
    config
        .collectors
        .iter()
        .map(|name| -> Box<dyn Collector> {
            match *name {
                "cpu" => Box::new(cpu::CpuCollector::new(&paths)),
                "stat" => Box::new(stat::StatCollector::new(&paths)),
                "meminfo" => Box::new(meminfo::MeminfoCollector::new(&paths)),
                "loadavg" => Box::new(loadavg::LoadavgCollector::new(&paths)),
                "pressure" => Box::new(pressure::PressureCollector::new(&paths)),
                "vmstat" => Box::new(vmstat::VmstatCollector::new(&paths)),
                "uname" => Box::new(uname::UnameCollector),
                "diskstats" => Box::new(diskstats::DiskstatsCollector::new(&paths)),
                "filesystem" => Box::new(filesystem::FilesystemCollector::new(&paths)),
                "sched" => Box::new(sched::SchedCollector::new(probes.clone())),
                "block" => Box::new(block::BlockCollector::new(probes.clone(), &config.sysfs)),
                "memory" => Box::new(memory::MemoryCollector::new(
                    probes.clone(),
                    resolver.clone(),
                )),
                "cgroup" => Box::new(cgroup::CgroupCollector::new(
                    probes.clone(),
                    resolver.clone(),
                    config.cgroups.clone(),
                )),
                "bpf" => Box::new(bpf::BpfCollector::new(probes.clone())),
                "process" => Box::new(process::ProcessCollector::new(&paths.procfs)),
                other => unreachable!("config validated collector name {other}"),
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;

    use prometheus_client::{encoding::DescriptorEncoder, registry::Registry};

    use super::Collector;

    /// Fixture files captured from this project's development machine (see fixtures/README).
    pub fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[derive(Debug)]
    struct One<C>(C);
    impl<C: Collector + 'static> prometheus_client::collector::Collector for One<C> {
        fn encode(&self, mut out: DescriptorEncoder) -> std::fmt::Result {
            self.0.collect(&mut out).map_err(|_| std::fmt::Error)
        }
    }

    /// Renders one collector in the Prometheus text format.
    pub fn render<C: Collector + 'static>(c: C) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(One(c)));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }
}
