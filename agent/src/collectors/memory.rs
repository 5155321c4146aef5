//! Memory pressure measured in the kernel: reclaim stalls (direct and memcg) and OOM kills.
use std::sync::Arc;

use agent_ebpf::{Log2Histogram, RECLAIM_DIRECT, RECLAIM_KIND_NAMES, RECLAIM_MEMCG};
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::{
    CollectError, Collector,
    sched::{map_error, sum_histograms},
};
use crate::{
    ebpf::Probes,
    metrics::{Log2Buckets, family, histogram},
};

/// Stall buckets: 2^10 ns (about 1 µs) to 2^36 ns (about 69 s).
pub const STALL_FIRST_SLOT: usize = 10;
pub const STALL_LAST_SLOT: usize = 36;

#[derive(Debug)]
pub struct MemoryCollector {
    probes: Arc<Probes>,
}

impl MemoryCollector {
    pub fn new(probes: Arc<Probes>) -> Self {
        Self { probes }
    }
}

impl Collector for MemoryCollector {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let Some(maps) = self.probes.loaded.get().and_then(|l| l.memory.as_ref()) else {
            return Ok(());
        };
        let mut stalls: Vec<(&'static str, Log2Histogram)> = Vec::with_capacity(2);
        for (kind, up) in [
            (RECLAIM_DIRECT, maps.direct_up),
            (RECLAIM_MEMCG, maps.memcg_up),
        ] {
            if up {
                let per_cpu = maps
                    .reclaim
                    .get(&kind, 0)
                    .map_err(|e| map_error("RECLAIM_LATENCY", e))?;
                stalls.push((
                    RECLAIM_KIND_NAMES[kind as usize],
                    sum_histograms(per_cpu.iter()),
                ));
            }
        }
        let oom_kills = if maps.oom_up {
            let per_cpu = maps
                .counters
                .get(&0, 0)
                .map_err(|e| map_error("MEMORY_COUNTERS", e))?;
            Some(per_cpu.iter().map(|c| c.oom_kills).sum::<u64>())
        } else {
            None
        };
        if !stalls.is_empty() {
            histogram(
                out,
                "nodelens_memory_reclaim_stall_seconds",
                "Time tasks spent stalled in memory reclaim: direct (the allocating task reclaims) or memcg (a cgroup hit its limit).",
                stalls.iter().map(|(kind, h)| {
                    (
                        [("kind", *kind)],
                        Log2Buckets {
                            slots: &h.slots,
                            sum: h.sum,
                            first_slot: STALL_FIRST_SLOT,
                            last_slot: STALL_LAST_SLOT,
                            scale: 1e-9,
                        },
                    )
                }),
            )?;
        }
        if let Some(kills) = oom_kills {
            family(
                out,
                "nodelens_oom_kills_total",
                "Processes killed by the OOM killer (oom:mark_victim).",
                MetricType::Counter,
                [(crate::metrics::NoLabels, kills as f64)],
            )?;
        }
        Ok(())
    }
}
