//! Memory pressure measured in the kernel: reclaim stalls (direct and memcg) and OOM kills.
use std::sync::{Arc, Mutex};

use agent_ebpf::{Log2Histogram, RECLAIM_DIRECT, RECLAIM_KIND_NAMES, RECLAIM_MEMCG};
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::{CollectError, Collector, map_error, sum_histograms};
use crate::{
    cgroups::{CgroupLabels, CgroupResolver},
    ebpf::Probes,
    metrics::{Log2Buckets, family, histogram},
};

/// Stall buckets: 2^10 ns (about 1 µs) to 2^36 ns (about 69 s).
pub const STALL_FIRST_SLOT: usize = 10;
pub const STALL_LAST_SLOT: usize = 36;

#[derive(Debug)]
pub struct MemoryCollector {
    probes: Arc<Probes>,
    resolver: Arc<Mutex<CgroupResolver>>,
}

impl MemoryCollector {
    pub fn new(probes: Arc<Probes>, resolver: Arc<Mutex<CgroupResolver>>) -> Self {
        Self { probes, resolver }
    }

    /// Per-cgroup kills, plus `cgroup="unknown"` for kills the ring buffer could not
    /// attribute (the kernel's own count is the total). Rows of gone cgroups are exported
    /// one last time, then dropped.
    fn oom_rows(
        &self,
        loaded: &crate::ebpf::LoadedProbes,
        kernel_total: u64,
    ) -> Vec<(CgroupLabels, u64)> {
        let root = self
            .resolver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .root()
            .to_owned();
        let mut table = loaded.oom.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = table
            .rows
            .iter()
            .filter(|(_, r)| r.gone)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(row) = table.rows.remove(&key) {
                table.retired_kills += row.kills;
            }
        }
        let mut rows = Vec::with_capacity(table.rows.len() + 1);
        let mut attributed = table.retired_kills;
        for (path, row) in table.rows.iter_mut() {
            if path != "unknown" && !root.join(path.trim_start_matches('/')).is_dir() {
                row.gone = true;
            }
            attributed += row.kills;
            rows.push((row.labels.clone(), row.kills));
        }
        let unknown = kernel_total.saturating_sub(attributed);
        match rows.iter_mut().find(|(l, _)| l.cgroup == "unknown") {
            Some((_, kills)) => *kills += unknown,
            None => rows.push((
                CgroupLabels {
                    cgroup: "unknown".into(),
                    ..Default::default()
                },
                unknown,
            )),
        }
        rows.sort_by(|a, b| a.0.cgroup.cmp(&b.0.cgroup));
        rows
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
        let oom_rows = if maps.oom_up {
            let per_cpu = maps
                .counters
                .get(&0, 0)
                .map_err(|e| map_error("MEMORY_COUNTERS", e))?;
            let total = per_cpu.iter().map(|c| c.oom_kills).sum::<u64>();
            self.probes.loaded.get().map(|l| self.oom_rows(l, total))
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
        if let Some(rows) = oom_rows {
            family(
                out,
                "nodelens_oom_kills_total",
                "Processes killed by the OOM killer (oom:mark_victim), by the victim's cgroup.",
                MetricType::Counter,
                rows.iter()
                    .map(|(labels, kills)| (labels.as_array(), *kills as f64)),
            )?;
        }
        Ok(())
    }
}
