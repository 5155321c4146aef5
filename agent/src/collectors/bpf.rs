//! The cost and health of the eBPF side: per-probe run counts and run time from the
//! kernel's BPF statistics (their ratio is the cost per event), how full each family's
//! bounded maps are, and events lost because a map was full or an entry went stale.
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
        let stats = loaded.program_stats();
        let health: Vec<_> = loaded.families.iter().map(|e| e.family.health()).collect();
        family(
            out,
            "nodelens_probe_runs_total",
            "Times each probe's program ran (kernel BPF statistics; 0 while they are off).",
            MetricType::Counter,
            stats
                .iter()
                .map(|(probe, runs, _)| ([("probe", *probe)], *runs as f64)),
        )?;
        family(
            out,
            "nodelens_probe_run_seconds_total",
            "CPU time spent in each probe's program (kernel BPF statistics). Divided by nodelens_probe_runs_total: the cost per event.",
            MetricType::Counter,
            stats
                .iter()
                .map(|(probe, _, secs)| ([("probe", *probe)], *secs)),
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
