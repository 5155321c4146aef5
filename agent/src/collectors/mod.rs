//! Node collectors, one file per family of `/proc` and `/sys` metrics, plus the agent's own
//! (`bpf`: probe cost and map health, `process`). Each reads its source at scrape time,
//! parses all of it, and only then encodes, so a failed read leaves no half-written family
//! behind. The eBPF families collect themselves (`ebpf::families`).
use std::sync::Arc;

use serde::Serialize;

use crate::{
    ebpf::{
        families,
        loader::{FamilyCollector, Probes},
    },
    metrics::Collector,
};
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

type Build = fn(&HostPaths, &Arc<Probes>) -> Box<dyn Collector>;

/// The node collectors, which run before the eBPF families in a scrape.
const NODE: &[(&str, Build)] = &[
    ("cpu", |p, _| Box::new(cpu::CpuCollector::new(p))),
    ("stat", |p, _| Box::new(stat::StatCollector::new(p))),
    ("meminfo", |p, _| {
        Box::new(meminfo::MeminfoCollector::new(p))
    }),
    ("loadavg", |p, _| {
        Box::new(loadavg::LoadavgCollector::new(p))
    }),
    ("pressure", |p, _| {
        Box::new(pressure::PressureCollector::new(p))
    }),
    ("vmstat", |p, _| Box::new(vmstat::VmstatCollector::new(p))),
    ("uname", |_, _| Box::new(uname::UnameCollector)),
    ("diskstats", |p, _| {
        Box::new(diskstats::DiskstatsCollector::new(p))
    }),
    ("filesystem", |p, _| {
        Box::new(filesystem::FilesystemCollector::new(p))
    }),
];

/// The agent's own collectors, which run after the families.
const OWN: &[(&str, Build)] = &[
    ("bpf", |_, probes| {
        Box::new(bpf::BpfCollector::new(probes.clone()))
    }),
    ("process", |p, _| {
        Box::new(process::ProcessCollector::new(&p.procfs))
    }),
];

/// A collector, by the name `--collectors-enabled` and `--collectors-disabled` take: a node
/// collector, a probe family (each family names itself), or one of the agent's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CollectorName(&'static str);

impl CollectorName {
    /// Every collector, in the order they run in a scrape: node collectors, families (in
    /// load order), the agent's own.
    pub fn all() -> Vec<CollectorName> {
        let node = NODE.iter().map(|(name, _)| *name);
        let families = families::ALL.iter().map(|f| f.name());
        let own = OWN.iter().map(|(name, _)| *name);
        node.chain(families).chain(own).map(CollectorName).collect()
    }

    /// The collector a user wrote, by its name or a family's former name.
    pub fn parse(written: &str) -> Option<CollectorName> {
        let written = written.trim();
        if let Some(f) = families::ALL
            .iter()
            .find(|f| f.aliases().contains(&written))
        {
            return Some(CollectorName(f.name()));
        }
        Self::all().into_iter().find(|c| c.0 == written)
    }

    /// The name users write.
    pub fn name(self) -> &'static str {
        self.0
    }
}

/// The collector called `name`: a family's is its part of the loaded probes.
pub fn build(name: CollectorName, paths: &HostPaths, probes: &Arc<Probes>) -> Box<dyn Collector> {
    match NODE.iter().chain(OWN).find(|(n, _)| *n == name.0) {
        Some((_, build)) => build(paths, probes),
        None => Box::new(FamilyCollector {
            name: name.0,
            probes: probes.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_is_unique() {
        let all = CollectorName::all();
        for c in &all {
            assert_eq!(CollectorName::parse(c.name()), Some(*c));
        }
        let mut names: Vec<&str> = all.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "two collectors share a name");
        assert_eq!(
            CollectorName::parse("block").map(CollectorName::name),
            Some("disk")
        );
        assert_eq!(CollectorName::parse("blocks"), None);
    }

    #[test]
    fn families_run_between_the_node_collectors_and_the_agents_own() {
        let names: Vec<&str> = CollectorName::all().iter().map(|c| c.name()).collect();
        let first_family = names.iter().position(|n| *n == families::ALL[0].name());
        assert_eq!(first_family, Some(NODE.len()));
        assert_eq!(&names[names.len() - OWN.len()..], ["bpf", "process"]);
    }
}
