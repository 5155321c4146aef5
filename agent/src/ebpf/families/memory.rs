//! Memory family: reclaim stalls (direct and memcg, from the vmscan begin/end tracepoints)
//! and OOM kills (`oom:mark_victim`), attributed to the victim's cgroup.
//!
//! OOM kills come through a ring buffer, read by a task woken by its fd. What
//! `nodelens_oom_kills_total` exports is only what user space has counted, never the
//! kernel's count minus what was attributed so far: the two are read at different times, so
//! such a difference gives a kill to "unknown" for a moment and then takes it back (a
//! counter reset to Prometheus). The invariant, whatever the timing of scrapes, upkeep and
//! ring-buffer events:
//! - a series never decreases: rows only grow, and each kill is counted once, when its
//!   event is read;
//! - `cgroup="unknown"` holds the kills whose cgroup could not be found and the events the
//!   ring buffer had no room for (the kernel counts those as it drops them), so it only
//!   grows too;
//! - rows are kept by the shared per-cgroup upkeep (`ebpf::per_cgroup`), as every per-pod
//!   series: the tracker's labels, the cap and the "other" fold, include/exclude, one
//!   definition of "gone". A gone cgroup's row stays for `OOM_ROW_RETENTION` (and at least
//!   one scrape), then its kills move into `cgroup="other"`, so the node's sum never goes
//!   back; a cgroup made again at the same path (a restarted service) continues its row.
//!
//! A kill is counted for the victim's cgroup: the id the kernel sent (tp_btf on 6.x), else
//! the cgroup `/proc/<pid>/cgroup` names while the victim is still there (5.10, classic
//! tracepoints). The tracker is given the cgroup at once, with a fresh walk of the cgroup
//! tree when it has not seen it yet (a container that is OOM-killed as it starts), so its
//! labels are known even if it is gone before the next scrape.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agent_ebpf::{
    histogram::{Log2Histogram, NativeHistogram},
    memory::names,
    memory::{
        COST_DIRECT_BEGIN, COST_DIRECT_END, COST_MARK_VICTIM, COST_MEMCG_BEGIN, COST_MEMCG_END,
        MEMORY_LAYOUT_GLOBAL, MemoryCounters, MemoryLayout, OomEvent, RECLAIM_DIRECT,
        RECLAIM_KIND_NAMES, RECLAIM_MEMCG, RECLAIM_START_ENTRIES, ReclaimHistograms,
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
        settings::PathLabel,
        table::GoneRows,
        tracker::CgroupTracker,
    },
    ebpf::{
        events::spawn_on_readable,
        family::{
            AttachKind, Attached, ExerciseContext, Family, FamilyLayout, FillGauge, Health,
            KernelReads, KernelSources, LoadContext, LoadedFamily, ProbeCosts, ProbeSpec, Sweep,
            Workload, global_bytes, map_error, take_map,
        },
        native::{native_seconds, read_agreeing},
        per_cgroup::{PerCgroupMap, UserMap, capacity_for},
    },
    metrics::{CollectError, Log2Buckets, family, histogram_with_native},
    render,
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
        names::DIRECT_RECLAIM_BEGIN_BTF,
        names::DIRECT_RECLAIM_BEGIN_TP,
    ),
    vmscan(
        "mm_vmscan_direct_reclaim_end",
        "direct_reclaim",
        names::DIRECT_RECLAIM_END_BTF,
        names::DIRECT_RECLAIM_END_TP,
    ),
    vmscan(
        "mm_vmscan_memcg_reclaim_begin",
        "memcg_reclaim",
        names::MEMCG_RECLAIM_BEGIN_BTF,
        names::MEMCG_RECLAIM_BEGIN_TP,
    ),
    vmscan(
        "mm_vmscan_memcg_reclaim_end",
        "memcg_reclaim",
        names::MEMCG_RECLAIM_END_BTF,
        names::MEMCG_RECLAIM_END_TP,
    ),
    ProbeSpec {
        name: "mark_victim",
        category: "oom",
        group: "mark_victim",
        btf_program: names::MARK_VICTIM_BTF,
        tracepoint_program: names::MARK_VICTIM_TP,
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
    fn name(&self) -> &'static str {
        "memory"
    }

    fn kernel_reads(&self) -> KernelReads {
        KernelReads {
            // Only mark_victim reads offsets: the victim's pid and its cgroup's id.
            structs: &["task_struct", "css_set", "cgroup", "kernfs_node"],
            tracepoints: &["mark_victim"],
        }
    }

    fn exercise(&self, ctx: &ExerciseContext) -> Vec<Workload> {
        let outcome = match (ctx.cgroup_root, ctx.device) {
            (Some(root), Some(dev)) => reclaim_work(root, dev),
            (None, _) => Err("no cgroup2 mount".into()),
            (_, None) => Err("no disk to read".into()),
        };
        vec![Workload {
            name: "memory reclaim",
            outcome,
            // Not required: whether a memcg at its limit reclaims through the tracepoints
            // (rather than dropping clean cache on the fast path) depends on the kernel, and
            // OOM kills are not provoked. The probes must still attach.
            fires: &[],
        }]
    }

    fn maps(&self) -> &'static [&'static str] {
        names::MAPS
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
            reclaim: take_map(ebpf, names::RECLAIM_LATENCY)?,
            counters: take_map(ebpf, names::MEMORY_COUNTERS)?,
            costs: ProbeCosts::new(take_map(ebpf, names::MEMORY_COST)?, &COST_SLOTS),
            start: take_map(ebpf, names::RECLAIM_START)?,
            ring: Mutex::new(Some(take_map(ebpf, names::OOM_EVENTS)?)),
            direct_up: attached.all_up(&[
                "mm_vmscan_direct_reclaim_begin",
                "mm_vmscan_direct_reclaim_end",
            ]),
            memcg_up: attached.all_up(&[
                "mm_vmscan_memcg_reclaim_begin",
                "mm_vmscan_memcg_reclaim_end",
            ]),
            oom_up: attached.up("mark_victim"),
            oom: Arc::new(
                PerCgroupMap::new(
                    "oom_kills",
                    UserMap::default(),
                    capacity_for(ctx.max_cgroups),
                    ctx.cgroups.clone(),
                )
                .keeping_gone_rows(GoneRows::KeepFor(OOM_ROW_RETENTION)),
            ),
            cgroups: ctx.cgroups.clone(),
            procfs: ctx.procfs.clone(),
            start_fill: FillGauge::default(),
        }))
    }
}

/// How long an OOM row stays after its cgroup is gone: at least the window of the shipped
/// alert (`increase(...[10m])`), so a container that is OOM-killed and replaced at once is
/// still seen by it.
pub const OOM_ROW_RETENTION: Duration = Duration::from_secs(15 * 60);

/// OOM kills per victim cgroup id (0: the cgroup could not be found).
type OomKills = PerCgroupMap<UserMap<u64>>;

struct MemoryMaps {
    reclaim: PerCpuArray<MapData, ReclaimHistograms>,
    counters: PerCpuArray<MapData, MemoryCounters>,
    costs: ProbeCosts,
    start: HashMap<MapData, u64, u64>,
    ring: Mutex<Option<RingBuf<MapData>>>,
    direct_up: bool,
    memcg_up: bool,
    oom_up: bool,
    oom: Arc<OomKills>,
    cgroups: Arc<CgroupTracker>,
    procfs: PathBuf,
    start_fill: FillGauge,
}

impl MemoryMaps {
    /// Events the ring buffer had no room for, as the kernel counted them.
    fn oom_ring_lost(&self) -> Result<u64, CollectError> {
        let per_cpu = self
            .counters
            .get(&0, 0)
            .map_err(|e| map_error(names::MEMORY_COUNTERS, e))?;
        Ok(per_cpu.iter().map(|c| c.oom_ringbuf_full).sum())
    }

    /// One row per victim cgroup, "other" once rows have left, and "unknown" (always, so
    /// that a first unattributed kill is an increase from 0): the kills whose cgroup could
    /// not be found and `ring_lost`, the events the ring buffer had no room for.
    fn oom_rows(&self, ring_lost: u64) -> Result<Vec<(series::Rendered, u64)>, CollectError> {
        self.oom.scrape(|scrape| {
            let unknown = scrape.unknown.iter().map(|(_, v)| *v).sum::<u64>() + ring_lost;
            let unknown_labels = SeriesLabels::new(
                &CgroupLabels {
                    cgroup: "unknown".into(),
                    ..Default::default()
                },
                PathLabel::Always,
            );
            let mut all: Vec<(&SeriesLabels, u64)> = scrape
                .rows
                .rows
                .iter()
                .map(|r| (r.series, r.values))
                .collect();
            all.push((&unknown_labels, unknown));
            let labels = series::choose(all.iter().map(|(s, _)| *s));
            Ok(labels
                .into_iter()
                .zip(all.iter())
                .map(|(l, (_, kills))| (l.clone(), *kills))
                .collect())
        })
    }
}

impl LoadedFamily for MemoryMaps {
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let mut stalls: Vec<(&'static str, Log2Histogram, NativeHistogram)> = Vec::with_capacity(2);
        for (kind, up) in [
            (RECLAIM_DIRECT, self.direct_up),
            (RECLAIM_MEMCG, self.memcg_up),
        ] {
            if up {
                let read = || {
                    self.reclaim
                        .get(&kind, 0)
                        .map_err(|e| map_error(names::RECLAIM_LATENCY, e))
                };
                let per_cpu = read_agreeing(read()?, read, histograms_agree)?;
                let (mut total, mut native) = (Log2Histogram::zeroed(), NativeHistogram::zeroed());
                for h in per_cpu.iter() {
                    total.merge(&h.latency);
                    native.merge(&h.native);
                }
                stalls.push((RECLAIM_KIND_NAMES[kind as usize], total, native));
            }
        }
        let oom_rows = if self.oom_up {
            Some(self.oom_rows(self.oom_ring_lost()?)?)
        } else {
            None
        };
        if !stalls.is_empty() {
            // Native beside classic in a protobuf scrape; the text formats cannot carry it.
            let protobuf = render::protobuf();
            histogram_with_native(
                out,
                "nodelens_memory_reclaim_stall_seconds",
                "Time tasks spent stalled in memory reclaim: direct (the allocating task reclaims) or memcg (a cgroup hit its limit).",
                stalls.iter().map(|(kind, h, native)| {
                    (
                        [("kind", *kind)],
                        Log2Buckets {
                            slots: &h.slots,
                            sum: h.sum,
                            first_slot: STALL_FIRST_SLOT,
                            last_slot: STALL_LAST_SLOT,
                            scale: 1e-9,
                        },
                        protobuf.then(|| native_seconds(native)),
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
                rows.iter().map(|(l, kills)| (l, *kills as f64)),
            )?;
        }
        Ok(())
    }

    fn upkeep(&self) {
        self.start_fill.set(self.start.keys().count() as u64);
    }

    fn cgroup_maps(&self) -> Vec<&dyn Sweep> {
        if self.oom_up {
            vec![&*self.oom]
        } else {
            Vec::new()
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
            maps: vec![
                self.start_fill
                    .fill(names::RECLAIM_START, RECLAIM_START_ENTRIES),
            ],
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
            // A cgroup the tracker has not seen is looked for with a walk that starts after
            // this: at most one walk per wakeup, however many kills it brings.
            let woken = Instant::now();
            while let Some(item) = ring.next() {
                let Some(event) = parse_oom_event(&item) else {
                    continue;
                };
                let (id, labels) = victim(&event, &cgroups, &procfs, woken);
                tracing::info!(
                    pid = event.pid,
                    cgroup_id = id,
                    cgroup = %labels.cgroup,
                    namespace = %labels.namespace,
                    pod = %labels.pod,
                    container = %labels.container,
                    "OOM kill"
                );
                oom.with_map(|kills| kills.add(id, 1));
            }
        });
    }
}

/// The victim's cgroup id and labels: the id the kernel sent (tp_btf), else the cgroup
/// `/proc/<pid>/cgroup` names if the victim is still there; the tracker is given it now
/// (walking the cgroup tree unless a walk started after `woken` already looked for it), so
/// its labels are kept even if it goes before the next scrape. Id 0 and `cgroup="unknown"`
/// when it cannot be found.
fn victim(
    event: &OomEvent,
    cgroups: &CgroupTracker,
    procfs: &Path,
    woken: Instant,
) -> (u64, CgroupLabels) {
    let mut tracker = cgroups.lock();
    let id = if event.cgroup_id != 0 {
        event.cgroup_id
    } else {
        let root = tracker.resolver().root().to_owned();
        std::fs::read_to_string(procfs.join(event.pid.to_string()).join("cgroup"))
            .ok()
            .and_then(|text| {
                let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
                let dir = root.join(path.trim_start_matches('/'));
                std::fs::metadata(dir).ok().map(|m| m.ino())
            })
            .unwrap_or(0)
    };
    if id != 0
        && let Some(labels) = tracker.resolver().labels_walked_since(id, woken)
    {
        tracker.verdict(id);
        return (id, labels);
    }
    (
        0,
        CgroupLabels {
            cgroup: "unknown".into(),
            ..Default::default()
        },
    )
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

/// Memory work: buffered reads of 48 MiB from the disk inside a cgroup limited to 8 MiB, so
/// the memcg must reclaim. Needs a cgroup2 memory controller, `sh` and `dd`.
fn reclaim_work(cgroup2: &std::path::Path, device: &std::path::Path) -> Result<String, String> {
    let controllers =
        std::fs::read_to_string(cgroup2.join("cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err(format!(
            "no memory controller in {} (cgroup v1 host)",
            cgroup2.display()
        ));
    }
    let _ = std::fs::write(cgroup2.join("cgroup.subtree_control"), "+memory");
    let dir = cgroup2.join(format!("nodelens-exercise-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let result = (|| {
        std::fs::write(dir.join("memory.max"), "8388608")
            .map_err(|e| format!("memory.max: {e}"))?;
        let dd = format!(
            "exec dd if={} of=/dev/null bs=1048576 count=48",
            device.display()
        );
        crate::cgroups::run_inside(&dir, &dd)?;
        Ok(format!(
            "48 MiB buffered reads from {} in an 8 MiB memory cgroup",
            device.display()
        ))
    })();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Whether a CPU's classic and native histograms of one reclaim kind hold the same stalls.
fn histograms_agree(h: &ReclaimHistograms) -> bool {
    h.latency.slots.iter().sum::<u64>() == h.native.zero + h.native.buckets.iter().sum::<u64>()
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
            ("6.1.0-57-cloud-amd64", [3600, 128, 248, 104]),
            ("6.12.118+deb13-cloud-amd64", [3584, 128, 256, 96]),
        ] {
            let bytes = fixtures::load(release);
            let btf = Btf::parse(&bytes).unwrap();
            let (l, family) = layout(&KernelSources::for_family(&Memory, Ok(&btf), None));
            assert_eq!(family.btf, Ok(()), "{release}");
            assert_eq!(l.oom_arg_is_task, 1, "{release}");
            assert_eq!(
                [
                    l.task_cgroups,
                    l.css_set_dfl_cgrp,
                    l.cgroup_kn,
                    l.kernfs_node_id
                ],
                chain,
                "{release}"
            );
        }
    }
}
