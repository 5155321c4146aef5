//! The cost and health of the eBPF side: per-probe run counts and run time (their ratio is
//! the cost per event) as the programs measure themselves (`source="sampled"`) and, with
//! `--kernel-bpf-stats`, as the kernel's BPF statistics say (`source="kernel"`); how full
//! each family's bounded maps are; and events lost because a map was full or an entry
//! went stale.
//!
//! Fill levels come from the families' upkeep, which walks the maps on its own timer; this
//! collector only reads.
use std::sync::Arc;

use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use crate::{
    ebpf::loader::Probes,
    metrics::family,
    metrics::{CollectError, Collector},
};

#[derive(Debug)]
pub struct BpfCollector {
    probes: Arc<Probes>,
}

impl BpfCollector {
    pub fn new(probes: Arc<Probes>) -> Self {
        Self { probes }
    }
}

impl Collector for BpfCollector {
    fn name(&self) -> &'static str {
        "bpf"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let Some(loaded) = self.probes.loaded.get() else {
            return Ok(());
        };
        let health: Vec<_> = loaded.families.iter().map(|e| e.family.health()).collect();
        let stats: Vec<(&str, &str, u64, f64)> = loaded
            .sampled_costs(&health)
            .into_iter()
            .map(|(p, runs, secs)| (p, "sampled", runs, secs))
            .chain(
                loaded
                    .kernel_program_stats()
                    .into_iter()
                    .map(|(p, runs, secs)| (p, "kernel", runs, secs)),
            )
            .collect();
        family(
            out,
            "nodelens_probe_runs_total",
            "Times each probe's program ran: counted by the program (source=\"sampled\"), or by the kernel's BPF statistics with --kernel-bpf-stats (source=\"kernel\").",
            MetricType::Counter,
            stats.iter().map(|(probe, source, runs, _)| {
                ([("probe", *probe), ("source", *source)], *runs as f64)
            }),
        )?;
        family(
            out,
            "nodelens_probe_run_seconds_total",
            "CPU time spent in each probe's program: estimated from 1 in 64 runs the program times itself (source=\"sampled\"), or the kernel's BPF statistics (source=\"kernel\"). Divided by nodelens_probe_runs_total: the cost per event.",
            MetricType::Counter,
            stats
                .iter()
                .map(|(probe, source, _, secs)| ([("probe", *probe), ("source", *source)], *secs)),
        )?;
        let maps = || health.iter().flat_map(|h| h.maps.iter());
        family(
            out,
            "nodelens_map_entries",
            "Entries in each bounded BPF map (refreshed by the agent's map upkeep, every --map-upkeep-interval).",
            MetricType::Gauge,
            maps().map(|m| ([("map", m.map)], m.entries as f64)),
        )?;
        family(
            out,
            "nodelens_map_capacity",
            "Maximum entries of each bounded BPF map.",
            MetricType::Gauge,
            maps().map(|m| ([("map", m.map)], f64::from(m.capacity))),
        )?;
        family(
            out,
            "nodelens_map_memory_bytes",
            "Kernel memory each BPF map of the agent takes, as the kernel charges it (fdinfo memlock, what bpftool map show prints). Not part of the process's RSS.",
            MetricType::Gauge,
            loaded
                .map_memory
                .last()
                .iter()
                .map(|(map, bytes)| ([("map", map.as_str())], *bytes as f64)),
        )?;
        family(
            out,
            "nodelens_events_lost_total",
            "Kernel events that could not be recorded, by reason.",
            MetricType::Counter,
            health
                .iter()
                .flat_map(|h| h.lost.iter())
                .map(|(reason, n)| ([("reason", *reason)], *n as f64)),
        )?;
        Ok(())
    }
}
