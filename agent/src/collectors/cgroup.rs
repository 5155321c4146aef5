//! Per-cgroup CPU time, run-queue wait, context switches and reclaim stalls, labelled with
//! namespace, pod and container, with bounded cardinality.
//!
//! Rules, so that sums stay whole and counters stay monotonic:
//! - The first `max_tracked` cgroups seen are exported one by one. Later ones fold into
//!   `cgroup="other"`, and stay there until they are gone (assignment is sticky, so "other"
//!   never shrinks while its members live).
//! - Cgroups whose id cannot be resolved to a path (gone before the first walk saw them)
//!   fold into "other" too, and are counted in `nodelens_cgroups_unknown_total`.
//! - A cgroup that is gone is exported one last time, then its kernel entry is deleted and
//!   its series disappears (`nodelens_cgroup_evictions_total`). A folded one leaves its
//!   final totals in "other".
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use agent_ebpf::CgroupStats;
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::{CollectError, Collector, map_error};
use crate::{
    cgroups::{CgroupLabels, CgroupResolver, kubernetes},
    config::CgroupConfig,
    ebpf::Probes,
    metrics::{counter, family, gauge},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assignment {
    Tracked,
    Folded,
    Excluded,
}

#[derive(Debug)]
struct Slot {
    assignment: Assignment,
    labels: CgroupLabels,
    last: CgroupStats,
    /// Seen gone at the previous scrape, which exported it one last time.
    gone: bool,
}

#[derive(Debug, Default)]
struct Tracker {
    slots: HashMap<u64, Slot>,
    tracked: usize,
    /// Totals of folded and unresolvable cgroups that are gone: part of "other" forever.
    other_retired: CgroupStats,
    /// Whether "other" ever had a member (then it is exported from then on).
    other_used: bool,
    evictions: u64,
    unknown: u64,
}

#[derive(Debug)]
pub struct CgroupCollector {
    probes: Arc<Probes>,
    resolver: Arc<Mutex<CgroupResolver>>,
    config: CgroupConfig,
    tracker: Mutex<Tracker>,
}

fn add(into: &mut CgroupStats, s: &CgroupStats) {
    into.cpu_ns += s.cpu_ns;
    into.runqueue_wait_ns += s.runqueue_wait_ns;
    into.voluntary_switches += s.voluntary_switches;
    into.involuntary_switches += s.involuntary_switches;
    into.reclaim_direct_ns += s.reclaim_direct_ns;
    into.reclaim_memcg_ns += s.reclaim_memcg_ns;
}

fn same(a: &CgroupStats, b: &CgroupStats) -> bool {
    a.cpu_ns == b.cpu_ns
        && a.runqueue_wait_ns == b.runqueue_wait_ns
        && a.voluntary_switches == b.voluntary_switches
        && a.involuntary_switches == b.involuntary_switches
        && a.reclaim_direct_ns == b.reclaim_direct_ns
        && a.reclaim_memcg_ns == b.reclaim_memcg_ns
}

impl CgroupCollector {
    pub fn new(
        probes: Arc<Probes>,
        resolver: Arc<Mutex<CgroupResolver>>,
        config: CgroupConfig,
    ) -> Self {
        Self {
            probes,
            resolver,
            config,
            tracker: Mutex::new(Tracker::default()),
        }
    }

    fn included(&self, path: &str) -> bool {
        self.config
            .include
            .as_ref()
            .is_none_or(|re| re.is_match(path))
            && !self
                .config
                .exclude
                .as_ref()
                .is_some_and(|re| re.is_match(path))
    }
}

/// One exported row.
struct Row {
    labels: CgroupLabels,
    stats: CgroupStats,
}

impl Collector for CgroupCollector {
    fn name(&self) -> &'static str {
        "cgroup"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let Some(map) = self
            .probes
            .loaded
            .get()
            .and_then(|l| l.cgroup_stats.as_ref())
        else {
            return Ok(());
        };
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries: Vec<(u64, CgroupStats)> = Vec::new();
        for item in map.iter() {
            entries.push(item.map_err(|e| map_error("CGROUP_STATS", e))?);
        }
        let mut resolver = self.resolver.lock().unwrap_or_else(|p| p.into_inner());
        let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        let mut delete: Vec<u64> = Vec::new();

        // Retire the cgroups that were exported one last time at the previous scrape.
        let retired: Vec<u64> = t
            .slots
            .iter()
            .filter(|(_, s)| s.gone)
            .map(|(id, _)| *id)
            .collect();
        for id in retired {
            let Some(slot) = t.slots.remove(&id) else {
                continue;
            };
            match slot.assignment {
                Assignment::Tracked => {
                    t.tracked -= 1;
                    t.evictions += 1;
                }
                Assignment::Folded => add(&mut t.other_retired, &slot.last),
                Assignment::Excluded => {}
            }
            resolver.forget(id);
            delete.push(id);
        }
        let retired_now: std::collections::HashSet<u64> = delete.iter().copied().collect();

        let mut other = CgroupStats::default();
        for (id, stats) in entries {
            if retired_now.contains(&id) {
                continue;
            }
            if !t.slots.contains_key(&id) {
                let Some(labels) = resolver.labels(id) else {
                    // Unresolvable: fold its totals into "other" and drop the kernel entry,
                    // which starts again from zero if the id shows up again.
                    t.unknown += 1;
                    t.other_used = true;
                    add(&mut t.other_retired, &stats);
                    delete.push(id);
                    continue;
                };
                let assignment = if !self.included(&labels.cgroup) {
                    Assignment::Excluded
                } else if t.tracked < self.config.max_tracked {
                    t.tracked += 1;
                    Assignment::Tracked
                } else {
                    t.other_used = true;
                    Assignment::Folded
                };
                t.slots.insert(
                    id,
                    Slot {
                        assignment,
                        labels,
                        last: CgroupStats::default(),
                        gone: false,
                    },
                );
            }
            let Some(slot) = t.slots.get_mut(&id) else {
                continue;
            };
            // Only a cgroup whose counters stopped moving can be gone: check just those.
            if same(&slot.last, &stats) && !resolver.exists(id) {
                slot.gone = true;
            }
            // Names can appear after the cgroup (the kubelet writes logs a moment later).
            if slot.assignment == Assignment::Tracked
                && slot.labels.pod.is_empty()
                && kubernetes::parse(&slot.labels.cgroup).is_some()
            {
                slot.labels = resolver.labels_for_path(slot.labels.cgroup.clone());
            }
            slot.last = stats;
            if slot.assignment == Assignment::Folded {
                add(&mut other, &stats);
            }
        }
        drop(resolver);
        for id in delete {
            // Already gone from the map is fine.
            let _ = map.remove(&id);
        }
        drop(map);

        let mut rows: Vec<Row> = t
            .slots
            .values()
            .filter(|s| s.assignment == Assignment::Tracked)
            .map(|s| Row {
                labels: s.labels.clone(),
                stats: s.last,
            })
            .collect();
        if t.other_used {
            add(&mut other, &t.other_retired);
            rows.push(Row {
                labels: CgroupLabels::other(),
                stats: other,
            });
        }
        let (tracked, evictions, unknown) = (t.tracked, t.evictions, t.unknown);
        drop(t);
        rows.sort_by(|a, b| a.labels.cgroup.cmp(&b.labels.cgroup));
        encode(out, &rows)?;
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
}

fn encode(out: &mut DescriptorEncoder, rows: &[Row]) -> Result<(), CollectError> {
    let secs = |ns: u64| ns as f64 / 1e9;
    family(
        out,
        "nodelens_cgroup_cpu_seconds_total",
        "Time the cgroup's tasks spent on a CPU, measured at sched_switch.",
        MetricType::Counter,
        rows.iter()
            .map(|r| (r.labels.as_array(), secs(r.stats.cpu_ns))),
    )?;
    family(
        out,
        "nodelens_cgroup_runqueue_wait_seconds_total",
        "Time the cgroup's tasks spent runnable but waiting for a CPU.",
        MetricType::Counter,
        rows.iter()
            .map(|r| (r.labels.as_array(), secs(r.stats.runqueue_wait_ns))),
    )?;
    family(
        out,
        "nodelens_cgroup_context_switches_total",
        "Context switches of the cgroup's tasks: voluntary (blocked) or involuntary (preempted).",
        MetricType::Counter,
        rows.iter().flat_map(|r| {
            [
                ("voluntary", r.stats.voluntary_switches),
                ("involuntary", r.stats.involuntary_switches),
            ]
            .map(|(kind, n)| (with_kind(&r.labels, kind), n as f64))
        }),
    )?;
    family(
        out,
        "nodelens_cgroup_reclaim_stall_seconds_total",
        "Time the cgroup's tasks spent stalled in memory reclaim: direct or memcg.",
        MetricType::Counter,
        rows.iter().flat_map(|r| {
            [
                ("direct", r.stats.reclaim_direct_ns),
                ("memcg", r.stats.reclaim_memcg_ns),
            ]
            .map(|(kind, ns)| (with_kind(&r.labels, kind), secs(ns)))
        }),
    )?;
    Ok(())
}

fn with_kind<'a>(labels: &'a CgroupLabels, kind: &'static str) -> [(&'static str, &'a str); 5] {
    let [a, b, c, d] = labels.as_array();
    [a, b, ("kind", kind), c, d]
}
