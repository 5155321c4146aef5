//! Memory family: reclaim stalls (direct and memcg, from the vmscan begin/end tracepoints)
//! and OOM kills (`oom:mark_victim`), attributed to the victim's cgroup.
//!
//! OOM kills come through a ring buffer, read by a task woken by its fd. Each kill is
//! labelled with the victim's cgroup while that still exists; a row whose cgroup is gone is
//! exported one last time after upkeep notices, then dropped, its kills staying in the
//! total.
use std::{
    collections::HashMap as StdHashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use agent_ebpf::{
    histogram::Log2Histogram,
    memory::{
        COST_DIRECT_BEGIN, COST_DIRECT_END, COST_MARK_VICTIM, COST_MEMCG_BEGIN, COST_MEMCG_END,
        MEMORY_LAYOUT_GLOBAL, MemoryCounters, MemoryLayout, OomEvent, RECLAIM_DIRECT,
        RECLAIM_KIND_NAMES, RECLAIM_MEMCG, RECLAIM_START_ENTRIES,
    },
};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
};
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use crate::{
    cgroups::{
        CgroupLabels,
        series::{self, SeriesLabels},
        tracker::CgroupTracker,
    },
    config::{CollectorName, PathLabel},
    ebpf::{
        events::spawn_on_readable,
        family::{
            AttachKind, Attached, Family, FamilyLayout, FillGauge, Health, KernelSources,
            LoadContext,
            LoadedFamily, ProbeCosts, ProbeSpec, global_bytes, map_error, take_map,
        },
    },
    metrics::{CollectError, Log2Buckets, family, histogram},
};

/// Stall buckets: 2^10 ns (about 1 µs) to 2^36 ns (about 69 s).
pub const STALL_FIRST_SLOT: usize = 10;
pub const STALL_LAST_SLOT: usize = 36;

pub struct Memory;

const fn vmscan(
    name: &'static str,
    group: &'static str,
    btf_program: &'static str,
    tracepoint_program: &'static str,
) -> ProbeSpec {
    ProbeSpec {
        name,
        category: "vmscan",
        group,
        btf_program,
        tracepoint_program,
        core: false,
    }
}

const PROBES: &[ProbeSpec] = &[
    vmscan(
        "mm_vmscan_direct_reclaim_begin",
        "direct_reclaim",
        "direct_reclaim_begin_btf",
        "direct_reclaim_begin_tp",
    ),
    vmscan(
        "mm_vmscan_direct_reclaim_end",
        "direct_reclaim",
        "direct_reclaim_end_btf",
        "direct_reclaim_end_tp",
    ),
    vmscan(
        "mm_vmscan_memcg_reclaim_begin",
        "memcg_reclaim",
        "memcg_reclaim_begin_btf",
        "memcg_reclaim_begin_tp",
    ),
    vmscan(
        "mm_vmscan_memcg_reclaim_end",
        "memcg_reclaim",
        "memcg_reclaim_end_btf",
        "memcg_reclaim_end_tp",
    ),
    ProbeSpec {
        name: "mark_victim",
        category: "oom",
        group: "mark_victim",
        btf_program: "mark_victim_btf",
        tracepoint_program: "mark_victim_tp",
        core: false,
    },
];

/// (probe, slot in MEMORY_COST).
const COST_SLOTS: [(&str, u32); 5] = [
    ("mm_vmscan_direct_reclaim_begin", COST_DIRECT_BEGIN),
    ("mm_vmscan_direct_reclaim_end", COST_DIRECT_END),
    ("mm_vmscan_memcg_reclaim_begin", COST_MEMCG_BEGIN),
    ("mm_vmscan_memcg_reclaim_end", COST_MEMCG_END),
    ("mark_victim", COST_MARK_VICTIM),
];

fn btf_layout(kernel: &KernelSources, l: &mut MemoryLayout) -> Result<Vec<(String, u32)>, String> {
    let btf = kernel.btf.clone()?;
    let m = |s: &str, f: &[&str]| {
        btf.member(s, f)
            .map(|m| m.offset)
            .map_err(|e| e.to_string())
    };
    let args = btf
        .tracepoint_args("mark_victim")
        .ok_or("BTF has no btf_trace_mark_victim")?;
    // mark_victim passes the task since 6.x; older kernels pass only the pid.
    if args.first().map(String::as_str) != Some("struct task_struct *") {
        l.oom_arg_is_task = 0;
        return Ok(Vec::new());
    }
    l.oom_arg_is_task = 1;
    l.task_pid = m("task_struct", &["pid"])?;
    l.task_cgroups = m("task_struct", &["cgroups"])?;
    l.css_set_dfl_cgrp = m("css_set", &["dfl_cgrp"])?;
    l.cgroup_kn = m("cgroup", &["kn"])?;
    l.kernfs_node_id = m("kernfs_node", &["id"])?;
    Ok(vec![
        ("task_struct.cgroups".into(), l.task_cgroups),
        ("css_set.dfl_cgrp".into(), l.css_set_dfl_cgrp),
        ("cgroup.kn".into(), l.cgroup_kn),
        ("kernfs_node.id".into(), l.kernfs_node_id),
    ])
}

pub fn layout(kernel: &KernelSources) -> (MemoryLayout, FamilyLayout) {
    let mut l = MemoryLayout::default();
    let btf = btf_layout(kernel, &mut l);
    let tracepoint = kernel
        .tp_field("oom", "mark_victim", "pid")
        .map(|f| l.tp_victim_pid = f.offset);
    let offsets = btf.clone().unwrap_or_default();
    // Only mark_victim reads offsets: the reclaim probes attach whatever happens to it.
    let mut family = FamilyLayout::new(
        vec![(MEMORY_LAYOUT_GLOBAL, global_bytes(&l))],
        kernel.btf.clone().map(drop),
        Ok(()),
        offsets,
    );
    if let Err(e) = btf {
        family
            .probe_failures
            .push(("mark_victim", AttachKind::TpBtf, e));
    }
    if let Err(e) = tracepoint {
        family
            .probe_failures
            .push(("mark_victim", AttachKind::Tracepoint, e));
    }
    (l, family)
}

impl Family for Memory {
    fn name(&self) -> CollectorName {
        CollectorName::Memory
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        PROBES
    }

    fn layout(&self, kernel: &KernelSources, _ctx: &LoadContext) -> FamilyLayout {
        layout(kernel).1
    }

    fn take(
        &self,
        ebpf: &mut Ebpf,
        attached: &Attached,
        ctx: &LoadContext,
    ) -> Result<Box<dyn LoadedFamily>, String> {
        Ok(Box::new(MemoryMaps {
            reclaim: take_map(ebpf, "RECLAIM_LATENCY")?,
            counters: take_map(ebpf, "MEMORY_COUNTERS")?,
            costs: ProbeCosts::new(take_map(ebpf, "MEMORY_COST")?, &COST_SLOTS),
            start: take_map(ebpf, "RECLAIM_START")?,
            ring: Mutex::new(Some(take_map(ebpf, "OOM_EVENTS")?)),
            direct_up: attached.all_up(&[
                "mm_vmscan_direct_reclaim_begin",
                "mm_vmscan_direct_reclaim_end",
            ]),
            memcg_up: attached.all_up(&[
                "mm_vmscan_memcg_reclaim_begin",
                "mm_vmscan_memcg_reclaim_end",
            ]),
            oom_up: attached.up("mark_victim"),
            oom: Arc::new(Mutex::new(OomTable::default())),
            path_label: ctx.cgroups.lock().path_label(),
            cgroups: ctx.cgroups.clone(),
            procfs: ctx.procfs.clone(),
            start_fill: FillGauge::default(),
        }))
    }
}

/// OOM kills per victim cgroup, keyed by the cgroup's path.
#[derive(Debug, Default)]
struct OomTable {
    rows: StdHashMap<String, OomRow>,
    /// Kills of rows removed after their cgroup was gone; still part of the node total.
    retired_kills: u64,
}

#[derive(Debug)]
struct OomRow {
    labels: CgroupLabels,
    kills: u64,
    /// Upkeep saw its cgroup gone; the next scrape exports it one last time.
    gone: bool,
    /// Exported by a scrape since `gone` was set.
    exported_gone: bool,
}

struct MemoryMaps {
    reclaim: PerCpuArray<MapData, Log2Histogram>,
    counters: PerCpuArray<MapData, MemoryCounters>,
    costs: ProbeCosts,
    start: HashMap<MapData, u64, u64>,
    ring: Mutex<Option<RingBuf<MapData>>>,
    direct_up: bool,
    memcg_up: bool,
    oom_up: bool,
    oom: Arc<Mutex<OomTable>>,
    path_label: PathLabel,
    cgroups: Arc<CgroupTracker>,
    procfs: PathBuf,
    start_fill: FillGauge,
}

impl MemoryMaps {
    fn oom_kills_total(&self) -> Result<u64, CollectError> {
        let per_cpu = self
            .counters
            .get(&0, 0)
            .map_err(|e| map_error("MEMORY_COUNTERS", e))?;
        Ok(per_cpu.iter().map(|c| c.oom_kills).sum())
    }

    /// Per-cgroup kills, plus `cgroup="unknown"` for kills the ring buffer could not
    /// attribute (the kernel's own count is the total).
    fn oom_rows(&self, kernel_total: u64) -> Vec<(CgroupLabels, u64)> {
        let mut table = self.oom.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows = Vec::with_capacity(table.rows.len() + 1);
        let mut attributed = table.retired_kills;
        for row in table.rows.values_mut() {
            row.exported_gone |= row.gone;
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

impl LoadedFamily for MemoryMaps {
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let mut stalls: Vec<(&'static str, Log2Histogram)> = Vec::with_capacity(2);
        for (kind, up) in [
            (RECLAIM_DIRECT, self.direct_up),
            (RECLAIM_MEMCG, self.memcg_up),
        ] {
            if up {
                let per_cpu = self
                    .reclaim
                    .get(&kind, 0)
                    .map_err(|e| map_error("RECLAIM_LATENCY", e))?;
                let mut total = Log2Histogram::zeroed();
                per_cpu.iter().for_each(|h| total.merge(h));
                stalls.push((RECLAIM_KIND_NAMES[kind as usize], total));
            }
        }
        let oom_rows = if self.oom_up {
            Some(self.oom_rows(self.oom_kills_total()?))
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
            let rendered: Vec<SeriesLabels> = rows
                .iter()
                .map(|(l, _)| SeriesLabels::new(l, self.path_label))
                .collect();
            family(
                out,
                "nodelens_oom_kills_total",
                "Processes killed by the OOM killer (oom:mark_victim), by the victim's cgroup.",
                MetricType::Counter,
                series::choose(rendered.iter())
                    .into_iter()
                    .zip(rows.iter())
                    .map(|(l, (_, kills))| (l, *kills as f64)),
            )?;
        }
        Ok(())
    }

    fn upkeep(&self) {
        self.start_fill.set(self.start.keys().count() as u64);
        // Rows of gone cgroups: marked here, exported once by a scrape, dropped here next.
        let root = self.cgroups.lock().resolver().root().to_owned();
        let mut table = self.oom.lock().unwrap_or_else(|p| p.into_inner());
        let done: Vec<String> = table
            .rows
            .iter()
            .filter(|(_, r)| r.exported_gone)
            .map(|(k, _)| k.clone())
            .collect();
        for key in done {
            if let Some(row) = table.rows.remove(&key) {
                table.retired_kills += row.kills;
            }
        }
        for (path, row) in table.rows.iter_mut() {
            if path != "unknown" && !root.join(path.trim_start_matches('/')).is_dir() {
                row.gone = true;
            }
        }
    }

    fn health(&self) -> Health {
        let (mut start_full, mut ring_full, mut cgroup_full) = (0, 0, 0);
        if let Ok(per_cpu) = self.counters.get(&0, 0) {
            for c in per_cpu.iter() {
                start_full += c.reclaim_start_map_full;
                ring_full += c.oom_ringbuf_full;
                cgroup_full += c.cgroup_map_full;
            }
        }
        Health {
            maps: vec![self.start_fill.fill("RECLAIM_START", RECLAIM_START_ENTRIES)],
            lost: vec![
                ("reclaim_start_map_full", start_full),
                ("oom_ringbuf_full", ring_full),
                ("cgroup_map_full_reclaim", cgroup_full),
            ],
            costs: self.costs.read(),
        }
    }

    fn spawn_event_readers(&self) {
        let Some(ring) = self.ring.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let (oom, cgroups, procfs) = (self.oom.clone(), self.cgroups.clone(), self.procfs.clone());
        spawn_on_readable(ring, "OOM event reader", move |ring| {
            while let Some(item) = ring.next() {
                let Some(event) = parse_oom_event(&item) else {
                    continue;
                };
                let labels = victim_labels(&event, &cgroups, &procfs);
                tracing::info!(
                    pid = event.pid,
                    cgroup_id = event.cgroup_id,
                    cgroup = %labels.cgroup,
                    namespace = %labels.namespace,
                    pod = %labels.pod,
                    container = %labels.container,
                    "OOM kill"
                );
                let mut table = oom.lock().unwrap_or_else(|p| p.into_inner());
                table
                    .rows
                    .entry(labels.cgroup.clone())
                    .or_insert_with(|| OomRow {
                        labels,
                        kills: 0,
                        gone: false,
                        exported_gone: false,
                    })
                    .kills += 1;
            }
        });
    }
}

/// The victim's labels: from the cgroup id the kernel sent (tp_btf), else from
/// `/proc/<pid>/cgroup` if the victim is still there, else `cgroup="unknown"`.
fn victim_labels(event: &OomEvent, cgroups: &CgroupTracker, procfs: &Path) -> CgroupLabels {
    let mut tracker = cgroups.lock();
    let resolver = tracker.resolver();
    if event.cgroup_id != 0
        && let Some(labels) = resolver.labels(event.cgroup_id)
    {
        return labels;
    }
    let from_proc = std::fs::read_to_string(procfs.join(event.pid.to_string()).join("cgroup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(|p| p.trim_start_matches('/').to_owned())
        });
    match from_proc {
        Some(path) if path.is_empty() => resolver.labels_for_path("/".into()),
        Some(path) => resolver.labels_for_path(path),
        None => CgroupLabels {
            cgroup: "unknown".into(),
            ..Default::default()
        },
    }
}

fn parse_oom_event(bytes: &[u8]) -> Option<OomEvent> {
    let pid = u32::from_ne_bytes(bytes.get(0..4)?.try_into().ok()?);
    let cgroup_id = u64::from_ne_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some(OomEvent {
        pid,
        _pad: 0,
        cgroup_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_events_parse_and_short_buffers_do_not() {
        let mut bytes = [0u8; 16];
        bytes[0..4].copy_from_slice(&4242u32.to_ne_bytes());
        bytes[8..16].copy_from_slice(&77u64.to_ne_bytes());
        let e = parse_oom_event(&bytes).unwrap();
        assert_eq!((e.pid, e.cgroup_id), (4242, 77));
        assert!(parse_oom_event(&bytes[..12]).is_none());
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::ebpf::btf::{Btf, fixtures};

    #[test]
    fn resolves_the_victims_cgroup_path_on_each_kernel() {
        // task_struct.cgroups, css_set.dfl_cgrp, cgroup.kn, kernfs_node.id.
        for (release, chain) in [
            ("5.10.0-46-cloud-amd64", [3328, 120, 248, 104]),
            ("6.1.0-56-cloud-amd64", [3600, 128, 248, 104]),
            ("6.12.118+deb13-cloud-amd64", [3584, 128, 256, 96]),
        ] {
            let bytes = fixtures::load(release);
            let btf = Btf::parse(&bytes).unwrap();
            let (l, family) = layout(&KernelSources {
                btf: Ok(&btf),
                tracefs: None,
            });
            assert_eq!(family.btf, Ok(()), "{release}");
            assert_eq!(l.oom_arg_is_task, 1, "{release}");
            assert_eq!(
                [l.task_cgroups, l.css_set_dfl_cgrp, l.cgroup_kn, l.kernfs_node_id],
                chain,
                "{release}"
            );
        }
    }
}
