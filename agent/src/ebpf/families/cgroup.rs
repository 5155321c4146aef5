//! Cgroup family: per-cgroup CPU time, run-queue wait, context switches and reclaim stalls,
//! labelled with namespace, pod and container, with bounded cardinality.
//!
//! It has no probes of its own. The scheduler and memory programs charge each cgroup in
//! `CGROUP_STATS`, but only while this family is loaded: it sets `CGROUP_ACCOUNTING`, so a
//! node that turns the `cgroup` collector off pays nothing for it. This family keeps the
//! map (upkeep takes out the entries of gone cgroups and keeps their final values, see
//! `cgroups::tracker`) and exports it.
use std::sync::{Arc, Mutex};

use agent_ebpf::cgroup::{CGROUP_ACCOUNTING_GLOBAL, CGROUP_STATS_ENTRIES, CgroupStats};
use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use prometheus_client::encoding::DescriptorEncoder;

use crate::{
    cgroups::{
        series::{self, Rendered},
        tracker::{CgroupTracker, CounterTable, Row},
    },
    config::CollectorName,
    ebpf::{
        batch,
        family::{
            Attached, Family, FamilyLayout, FillGauge, Health, KernelSources, LoadContext,
            LoadedFamily, ProbeSpec, global_bytes, take_map,
        },
    },
    metrics::{CollectError, counter, gauge},
    render,
};

pub struct Cgroup;

/// Size of the per-cgroup map for a cap on exported cgroups: room for the cap, the cgroups
/// folded into "other", and gone ones waiting for upkeep.
pub fn stats_capacity(max_tracked: usize) -> u32 {
    (max_tracked.saturating_mul(4) as u32).max(CGROUP_STATS_ENTRIES)
}

impl Family for Cgroup {
    fn name(&self) -> CollectorName {
        CollectorName::Cgroup
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        &[]
    }

    fn layout(&self, _kernel: &KernelSources, ctx: &LoadContext) -> FamilyLayout {
        FamilyLayout::new(
            vec![(
                CGROUP_ACCOUNTING_GLOBAL,
                global_bytes(&u32::from(ctx.per_cgroup)),
            )],
            Ok(()),
            Ok(()),
            Vec::new(),
        )
    }

    fn map_sizes(&self, ctx: &LoadContext) -> Vec<(&'static str, u32)> {
        vec![("CGROUP_STATS", stats_capacity(ctx.max_cgroups))]
    }

    fn take(
        &self,
        ebpf: &mut Ebpf,
        _attached: &Attached,
        ctx: &LoadContext,
    ) -> Result<Box<dyn LoadedFamily>, String> {
        Ok(Box::new(CgroupMaps {
            stats: Mutex::new(take_map(ebpf, "CGROUP_STATS")?),
            capacity: stats_capacity(ctx.max_cgroups),
            table: CounterTable::default(),
            tracker: ctx.cgroups.clone(),
            fill: FillGauge::default(),
        }))
    }
}

struct CgroupMaps {
    /// Behind a lock: upkeep takes out the entries of gone cgroups.
    stats: Mutex<HashMap<MapData, u64, CgroupStats>>,
    capacity: u32,
    table: CounterTable<u64, CgroupStats>,
    tracker: Arc<CgroupTracker>,
    fill: FillGauge,
}

impl CgroupMaps {
    fn entries(&self) -> Result<Vec<(u64, CgroupStats)>, CollectError> {
        let map = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        batch::entries(&map).map_err(|e| CollectError::map("CGROUP_STATS", e))
    }
}

impl LoadedFamily for CgroupMaps {
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        // The map is read under the tracker lock, so that upkeep cannot move a gone
        // cgroup's values into the table in between (see `CounterTable::upkeep`).
        let mut tracker = self.tracker.lock();
        let entries = self.entries()?;
        let rows = self.table.rows(&mut tracker, entries);
        let (tracked, evictions, unknown) = tracker.counts();
        drop(tracker);
        encode(&rows)?;
        gauge(
            out,
            "nodelens_cgroups_tracked",
            "Cgroups exported one by one (the rest fold into cgroup=\"other\").",
            tracked as f64,
        )?;
        counter(
            out,
            "nodelens_cgroup_evictions_total",
            "Tracked cgroups dropped after they were gone and scraped one last time.",
            evictions as f64,
        )?;
        counter(
            out,
            "nodelens_cgroups_unknown_total",
            "Cgroup ids that could not be resolved to a path; their totals went to cgroup=\"other\".",
            unknown as f64,
        )?;
        Ok(())
    }

    fn upkeep(&self) {
        let read_at = std::time::Instant::now();
        let entries = match self.entries() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("cgroup upkeep: {e}");
                return;
            }
        };
        let live = entries.len() as u64;
        self.table.check_idle(&self.tracker, &entries);
        // Lock order: tracker, then the map (as the scrape takes them).
        let mut tracker = self.tracker.lock();
        let mut map = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let taken = self
            .table
            .upkeep(&mut tracker, entries, read_at, |id| batch::take(&mut map, id));
        self.fill.set(live.saturating_sub(taken.len() as u64));
    }

    fn health(&self) -> Health {
        Health {
            maps: vec![self.fill.fill("CGROUP_STATS", self.capacity)],
            lost: Vec::new(),
            costs: Vec::new(),
        }
    }
}

/// The four families, each series only once it is non-zero (a cgroup that never waited or
/// reclaimed adds no series for it). Written directly as text (`crate::render`): these are
/// most of the samples of a node with many pods.
fn encode(rows: &[Row<(), CgroupStats>]) -> Result<(), CollectError> {
    let labels = series::choose(rows.iter().map(|r| r.series.as_ref()));
    let rows: Vec<(&str, &CgroupStats)> = labels
        .into_iter()
        .map(Rendered::text)
        .zip(rows.iter().map(|r| &r.values))
        .collect();
    let secs = |ns: u64| ns as f64 / 1e9;
    render::direct(|out| {
        let out = out.ok_or(CollectError::NotRendering)?;
        let mut cpu = out.counter(
            "nodelens_cgroup_cpu_seconds_total",
            "Time the cgroup's tasks spent on a CPU, measured at sched_switch.",
        );
        for (l, v) in rows.iter().filter(|(_, v)| v.cpu_ns != 0) {
            cpu.float(l, None, secs(v.cpu_ns));
        }
        let mut wait = out.counter(
            "nodelens_cgroup_runqueue_wait_seconds_total",
            "Time the cgroup's tasks spent runnable but waiting for a CPU.",
        );
        for (l, v) in rows.iter().filter(|(_, v)| v.runqueue_wait_ns != 0) {
            wait.float(l, None, secs(v.runqueue_wait_ns));
        }
        let mut switches = out.counter(
            "nodelens_cgroup_context_switches_total",
            "Context switches of the cgroup's tasks: voluntary (blocked) or involuntary (preempted).",
        );
        for (l, v) in &rows {
            for (kind, n) in [
                ("voluntary", v.voluntary_switches),
                ("involuntary", v.involuntary_switches),
            ] {
                if n != 0 {
                    switches.count(l, Some(("kind", kind)), n);
                }
            }
        }
        let mut reclaim = out.counter(
            "nodelens_cgroup_reclaim_stall_seconds_total",
            "Time the cgroup's tasks spent stalled in memory reclaim: direct or memcg.",
        );
        for (l, v) in &rows {
            for (kind, ns) in [("direct", v.reclaim_direct_ns), ("memcg", v.reclaim_memcg_ns)] {
                if ns != 0 {
                    reclaim.float(l, Some(("kind", kind)), secs(ns));
                }
            }
        }
        Ok(())
    })
}
