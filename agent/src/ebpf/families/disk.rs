//! Disk family: block I/O latency and size per whole disk and operation, measured in the
//! kernel (`block_rq_issue` → `block_rq_complete`, biolatency semantics). Partition I/O is
//! counted on its disk: the block layer remaps it before a request is issued.
//!
//! With the `cgroup` collector on, each request also counts for the cgroup that owns it
//! (bytes, requests and device time per pod, device and op). Who owns a request depends on
//! the host (see agent-ebpf's `probes/disk.rs`): the cgroup its bio is charged to where the
//! io controller is on cgroup2, so writeback lands on the pod that dirtied the pages; the
//! issuing task's cgroup on hybrid hosts (blkio is a v1 controller there, whose cgroups are
//! not cgroup2's) and with classic tracepoints.
use std::{
    collections::HashMap as StdHashMap,
    path::{Path, PathBuf},
    sync::Mutex,
};

use agent_ebpf::{
    disk::names,
    disk::{
        COST_COMPLETE, COST_ISSUE, CgroupDiskKey, CgroupDiskStats, DISK_HISTOGRAM_ENTRIES,
        DISK_LAYOUT_GLOBAL, DISK_OP_NAMES, DiskCounters, DiskHistograms, DiskKey, DiskLayout,
        LATENCY_FIRST_SLOT, LATENCY_SLOTS, SIZE_FIRST_SLOT, SIZE_SLOTS,
    },
    histogram::{Log2Histogram, NativeHistogram},
};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap},
};
use prometheus_client::encoding::DescriptorEncoder;

use crate::{
    cgroups::{
        series,
        table::{CgroupKey, Row},
        tracker::Assignment,
    },
    ebpf::{
        batch,
        family::{
            Attached, CgroupSeriesName, ExerciseContext, Family, FamilyLayout, FillGauge, Health,
            KernelReads, KernelSources, LoadContext, LoadedFamily, ProbeCosts, ProbeSpec,
            SettingError, SettingsValue, Sweep, Workload, chosen_cgroup_series, global_bytes,
            map_error, take_map,
        },
        native::{native_seconds, read_agreeing},
        per_cgroup::{CgroupMap, PerCgroupMap, capacity_for},
    },
    metrics::{CollectError, Log2Buckets, histogram, histogram_with_native},
    render,
};

/// The kernel keeps exactly the exported buckets (agent-ebpf's `DiskHistograms`): from the
/// first slot to the one before the overflow slot.
const LATENCY_LAST_SLOT: usize = LATENCY_FIRST_SLOT + LATENCY_SLOTS - 2;
const SIZE_LAST_SLOT: usize = SIZE_FIRST_SLOT + SIZE_SLOTS - 2;

// Beside this file: build.rs registers every file of families/ as a family, so a family's
// own modules live in a directory of its name.
#[path = "disk/per_pod.rs"]
mod per_pod;

pub struct Disk;

/// The family's name, under which its settings are kept.
const NAME: &str = "disk";

/// Per-pod bytes are off by default: with CPU, run-queue wait and the per-pod requests and
/// device time (which give a pod's disk latency), they would take a node of 4,096 busy
/// pods past 3 MB a scrape, and a pod's device time tells who keeps a disk busy better
/// than its bytes do.
const SERIES: &[CgroupSeriesName] = &[CgroupSeriesName {
    name: "disk_bytes",
    default: false,
}];

/// Whether `nodelens_cgroup_disk_io_bytes_total` is exported (`disk_bytes`).
#[derive(Debug, Clone, Copy)]
struct PerCgroupBytes(bool);

/// (probe, slot in DISK_COST).
const COST_SLOTS: [(&str, u32); 2] = [
    ("block_rq_issue", COST_ISSUE),
    ("block_rq_complete", COST_COMPLETE),
];

/// Both probes share the "block" group: with tp_btf the programs key requests by address,
/// with classic tracepoints by (dev, sector), so they must attach the same way.
const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        name: "block_rq_issue",
        category: "block",
        group: "block",
        btf_program: names::BLOCK_RQ_ISSUE_BTF,
        tracepoint_program: names::BLOCK_RQ_ISSUE_TP,
        core: true,
    },
    ProbeSpec {
        name: "block_rq_complete",
        category: "block",
        group: "block",
        btf_program: names::BLOCK_RQ_COMPLETE_BTF,
        tracepoint_program: names::BLOCK_RQ_COMPLETE_TP,
        core: true,
    },
];

fn btf_layout(kernel: &KernelSources, l: &mut DiskLayout) -> Result<Vec<(String, u32)>, String> {
    let btf = kernel.btf.clone()?;
    let m = |s: &str, f: &[&str]| {
        btf.member(s, f)
            .map(|m| m.offset)
            .map_err(|e| e.to_string())
    };
    // block_rq_issue lost its `struct request_queue *` argument in 5.11.
    let args = btf
        .tracepoint_args("block_rq_issue")
        .ok_or("BTF has no btf_trace_block_rq_issue")?;
    l.issue_rq_arg = args
        .iter()
        .position(|a| a == "struct request *")
        .ok_or_else(|| format!("block_rq_issue has no struct request * argument: {args:?}"))?
        as u32;
    if l.issue_rq_arg > 1 {
        return Err(format!("unexpected block_rq_issue arguments {args:?}"));
    }
    l.request_data_len = m("request", &["__data_len"])?;
    l.request_cmd_flags = m("request", &["cmd_flags"])?;
    let mut offsets = vec![
        ("block_rq_issue request argument".into(), l.issue_rq_arg),
        ("request.__data_len".into(), l.request_data_len),
        ("request.cmd_flags".into(), l.request_cmd_flags),
    ];
    // request.rq_disk went away in 5.19; the disk is request.q->disk since.
    if btf
        .has_member("request", "rq_disk")
        .map_err(|e| e.to_string())?
    {
        l.disk_in_request = 1;
        l.request_rq_disk = m("request", &["rq_disk"])?;
        offsets.push(("request.rq_disk".into(), l.request_rq_disk));
    } else {
        l.disk_in_request = 0;
        l.request_q = m("request", &["q"])?;
        l.queue_disk = m("request_queue", &["disk"])?;
        offsets.push(("request.q".into(), l.request_q));
        offsets.push(("request_queue.disk".into(), l.queue_disk));
    }
    l.gendisk_major = m("gendisk", &["major"])?;
    l.gendisk_first_minor = m("gendisk", &["first_minor"])?;
    offsets.push(("gendisk.major".into(), l.gendisk_major));
    offsets.push(("gendisk.first_minor".into(), l.gendisk_first_minor));
    Ok(offsets)
}

/// The path from a request to the cgroup its bio is charged to. An error says which member
/// this kernel lacks (bio.bi_blkg needs CONFIG_BLK_CGROUP).
fn owner_layout(kernel: &KernelSources, l: &mut DiskLayout) -> Result<Vec<(String, u32)>, String> {
    let btf = kernel.btf.clone()?;
    let m = |s: &str, f: &str| {
        btf.member(s, &[f])
            .map(|m| m.offset)
            .map_err(|e| e.to_string())
    };
    l.request_bio = m("request", "bio")?;
    l.bio_blkg = m("bio", "bi_blkg")?;
    l.blkg_blkcg = m("blkcg_gq", "blkcg")?;
    l.blkcg_cgroup = m("blkcg", "css")? + m("cgroup_subsys_state", "cgroup")?;
    l.cgroup_kn = m("cgroup", "kn")?;
    l.kernfs_node_id = m("kernfs_node", "id")?;
    Ok(vec![
        ("request.bio".into(), l.request_bio),
        ("bio.bi_blkg".into(), l.bio_blkg),
        ("blkcg_gq.blkcg".into(), l.blkg_blkcg),
        ("blkcg.css.cgroup".into(), l.blkcg_cgroup),
    ])
}

/// Whether the io controller is on the cgroup2 hierarchy, so that a bio's blkcg is a
/// cgroup2 cgroup (on hybrid hosts it is blkio's, a v1 controller).
fn io_on_cgroup2(cgroup_root: &Path) -> bool {
    std::fs::read_to_string(cgroup_root.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "io"))
}

fn tracepoint_layout(kernel: &KernelSources, l: &mut DiskLayout) -> Result<(), String> {
    let f = |event: &str, field: &str| kernel.tp_field("block", event, field).map(|f| f.offset);
    l.tp_issue_dev = f("block_rq_issue", "dev")?;
    l.tp_issue_sector = f("block_rq_issue", "sector")?;
    l.tp_issue_bytes = f("block_rq_issue", "bytes")?;
    l.tp_issue_rwbs = f("block_rq_issue", "rwbs")?;
    l.tp_complete_dev = f("block_rq_complete", "dev")?;
    l.tp_complete_sector = f("block_rq_complete", "sector")?;
    Ok(())
}

/// `io_on_cgroup2`: whether the host's cgroup2 hierarchy has the io controller.
pub fn layout(kernel: &KernelSources, io_on_cgroup2: bool) -> (DiskLayout, FamilyLayout) {
    let mut l = DiskLayout::default();
    let btf = btf_layout(kernel, &mut l);
    let tracepoint = tracepoint_layout(kernel, &mut l);
    let mut offsets = btf.clone().unwrap_or_default();
    let mode = match owner_layout(kernel, &mut l) {
        Ok(more) if io_on_cgroup2 => {
            l.owner_from_blkcg = 1;
            offsets.extend(more);
            "per-pod disk I/O goes to the cgroup each bio is charged to (writeback to the pod that dirtied the pages); with classic tracepoints, to the issuing task's"
        }
        Ok(_) => {
            "per-pod disk I/O goes to the issuing task's cgroup2 cgroup: the io controller is not on cgroup2 here (a hybrid host's blkio is v1)"
        }
        Err(_) => {
            "per-pod disk I/O goes to the issuing task's cgroup: this kernel's BTF has no bio blkcg (CONFIG_BLK_CGROUP)"
        }
    };
    let mut family = FamilyLayout::new(
        vec![(DISK_LAYOUT_GLOBAL, global_bytes(&l))],
        btf.map(drop),
        tracepoint,
        offsets,
    );
    family.mode = Some(mode.to_owned());
    (l, family)
}

impl Family for Disk {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cgroup_series(&self) -> &'static [CgroupSeriesName] {
        SERIES
    }

    fn settings(&self, merged: &serde_json::Value) -> Result<Option<SettingsValue>, SettingError> {
        let bytes = !chosen_cgroup_series(merged, SERIES).is_empty();
        Ok(Some(std::sync::Arc::new(PerCgroupBytes(bytes))))
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["block"]
    }

    fn kernel_reads(&self) -> KernelReads {
        KernelReads {
            // The request's size, op and disk; the path from its bio to the owning cgroup.
            structs: &[
                "request",
                "request_queue",
                "gendisk",
                "bio",
                "blkcg_gq",
                "blkcg",
                "cgroup_subsys_state",
                "cgroup",
                "kernfs_node",
            ],
            tracepoints: &["block_rq_issue", "block_rq_complete"],
        }
    }

    fn exercise(&self, ctx: &ExerciseContext) -> Vec<Workload> {
        // A disk the sandbox will not let us open directly can still be read through a
        // file on it: our own executable, with O_DIRECT.
        let outcome = ctx
            .device
            .map(block_work)
            .unwrap_or_else(|| Err("no disk found in sysfs".into()))
            .or_else(|disk_err| {
                let exe = std::env::current_exe()
                    .map_err(|e| format!("{disk_err}; no executable path: {e}"))?;
                block_work(&exe).map_err(|e| format!("{disk_err}; {e}"))
            });
        vec![Workload {
            name: "block",
            outcome,
            fires: &["block_rq_issue", "block_rq_complete"],
        }]
    }

    fn maps(&self) -> &'static [&'static str] {
        names::MAPS
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        PROBES
    }

    fn layout(&self, kernel: &KernelSources, ctx: &LoadContext) -> FamilyLayout {
        layout(kernel, io_on_cgroup2(&ctx.cgroup_root)).1
    }

    fn map_sizes(&self, ctx: &LoadContext) -> Vec<(&'static str, u32)> {
        vec![(names::CGROUP_DISK, capacity_for(ctx.max_cgroups))]
    }

    fn take(
        &self,
        ebpf: &mut Ebpf,
        attached: &Attached,
        ctx: &LoadContext,
    ) -> Result<Box<dyn LoadedFamily>, String> {
        Ok(Box::new(DiskMaps {
            histograms: take_map(ebpf, names::DISK_HISTOGRAMS)?,
            counters: take_map(ebpf, names::DISK_COUNTERS)?,
            costs: ProbeCosts::new(take_map(ebpf, names::DISK_COST)?, &COST_SLOTS),
            per_cgroup: if ctx.per_cgroup {
                Some(PerCgroupMap::new(
                    names::CGROUP_DISK,
                    CgroupDiskMap {
                        map: take_map(ebpf, names::CGROUP_DISK)?,
                        expected: 0,
                    },
                    capacity_for(ctx.max_cgroups),
                    ctx.cgroups.clone(),
                ))
            } else {
                None
            },
            per_cgroup_bytes: ctx
                .settings
                .get::<PerCgroupBytes>(NAME)
                .is_some_and(|b| b.0),
            up: attached.all_up(&["block_rq_issue", "block_rq_complete"]),
            names: DeviceNames::new(ctx.sysfs.join("dev/block")),
            histogram_fill: FillGauge::default(),
            protobuf_rows: Mutex::default(),
        }))
    }
}

struct DiskMaps {
    histograms: PerCpuHashMap<MapData, DiskKey, DiskHistograms>,
    counters: PerCpuArray<MapData, DiskCounters>,
    costs: ProbeCosts,
    /// Per-cgroup totals, when the `cgroup` collector is on.
    per_cgroup: Option<PerCgroupMap<CgroupDiskMap>>,
    /// Whether the per-cgroup bytes are exported (`disk_bytes`).
    per_cgroup_bytes: bool,
    /// block_rq_issue and block_rq_complete attached.
    up: bool,
    names: DeviceNames,
    histogram_fill: FillGauge,
    /// The per-pod rows' samples as the last protobuf scrape encoded them.
    protobuf_rows: Mutex<Vec<per_pod::KeptDiskRow>>,
}

/// A per-pod row of a scrape, by reference: (cgroup id, or `None` for requests of no known
/// cgroup; labels; (dev, op); totals).
type RowRef<'a> = (
    Option<u64>,
    &'a series::SeriesLabels,
    (u32, u32),
    &'a CgroupDiskStats,
);

/// The per-cgroup disk map, as the shared sweep sees it. Entries without an owner (cgroup
/// id 0) are "unknown", not a cgroup the tracker could resolve, and are never taken.
struct CgroupDiskMap {
    map: HashMap<MapData, CgroupDiskKey, CgroupDiskStats>,
    /// Entries the last read found, and room for an eighth more: the next read's.
    expected: usize,
}

impl CgroupMap for CgroupDiskMap {
    type Key = CgroupDiskKey;
    type Value = CgroupDiskStats;

    fn entries(&mut self) -> Result<Vec<(CgroupDiskKey, CgroupDiskStats)>, String> {
        let entries = batch::entries_expecting(&self.map, self.expected)?;
        self.expected = entries.len() + entries.len() / 8;
        Ok(entries)
    }

    fn take(&mut self, key: &CgroupDiskKey, _: Assignment) -> Option<CgroupDiskStats> {
        batch::take(&mut self.map, key)
    }
}

impl CgroupKey for CgroupDiskKey {
    type Dims = (u32, u32);
    fn cgroup(&self) -> u64 {
        self.cgroup
    }
    fn dims(&self) -> (u32, u32) {
        (self.dev, self.op)
    }
    fn with_cgroup(&self, id: u64) -> Self {
        Self {
            cgroup: id,
            ..*self
        }
    }
}

/// Kernel dev_t to device name (`vda`, `nvme0n1`, `loop3`): the last component of
/// `/sys/dev/block/MAJ:MIN`'s target. Names only change when a device goes away.
#[derive(Debug)]
pub struct DeviceNames {
    dev_block: PathBuf,
    names: Mutex<StdHashMap<u32, String>>,
}

impl DeviceNames {
    pub fn new(dev_block: PathBuf) -> Self {
        Self {
            dev_block,
            names: Mutex::new(StdHashMap::new()),
        }
    }

    /// The device's name, or `MAJ:MIN` when sysfs does not know it (any more).
    pub fn name(&self, dev: u32) -> String {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(name) = names.get(&dev) {
            return name.clone();
        }
        let (major, minor) = (dev >> 20, dev & 0xfffff);
        let resolved = std::fs::read_link(self.dev_block.join(format!("{major}:{minor}")))
            .ok()
            .and_then(|target| target.file_name().map(|n| n.to_string_lossy().into_owned()));
        match resolved {
            Some(name) => {
                names.insert(dev, name.clone());
                name
            }
            None => format!("{major}:{minor}"),
        }
    }
}

impl DiskMaps {
    /// The per-pod series: this scrape's rows, labelled, written by `per_pod`.
    fn collect_per_cgroup(&self, pc: &PerCgroupMap<CgroupDiskMap>) -> Result<(), CollectError> {
        pc.scrape(|scrape| {
            let unknown = series::SeriesLabels::new(
                &crate::cgroups::CgroupLabels {
                    cgroup: "unknown".into(),
                    ..Default::default()
                },
                crate::cgroups::settings::PathLabel::Always,
            );
            // By reference: an entry is about 300 bytes (its native histogram). The rows of
            // cgroups by (id, dev, op), the order kept encodings are found in (rows come by
            // id, a cgroup's disks and ops in no set order), then the unknown ones (by dev
            // and op).
            let mut owned: Vec<RowRef> = scrape
                .rows
                .rows
                .iter()
                .map(|r: &Row<(u32, u32), CgroupDiskStats>| {
                    (Some(r.id), r.series, r.dims, &r.values)
                })
                .collect();
            // The table gives rows sorted by id, so only each cgroup's few rows need sorting:
            // sorting them all was a twentieth of a protobuf scrape of 4,096 busy pods.
            for cgroup in owned.chunk_by_mut(|a, b| a.0 == b.0) {
                cgroup.sort_unstable_by_key(|(_, _, dims, _)| *dims);
            }
            let all: Vec<_> = owned
                .into_iter()
                .chain(
                    scrape
                        .unknown
                        .iter()
                        .map(|(k, v)| (None, &unknown, (k.dev, k.op), v)),
                )
                .collect();
            let labels = series::choose(all.iter().map(|(_, s, _, _)| *s));
            // A node has a few disks: their names looked up once a scrape, not once a row.
            let mut devices: Vec<(u32, String)> = Vec::new();
            for (_, _, (dev, _), _) in &all {
                if !devices.iter().any(|(d, _)| d == dev) {
                    devices.push((*dev, self.names.name(*dev)));
                }
            }
            let rows: Vec<per_pod::DiskRow> = all
                .iter()
                .zip(labels)
                .map(
                    |((id, series, (dev, op), values), labels)| per_pod::DiskRow {
                        labels,
                        device: devices
                            .iter()
                            .find(|(d, _)| d == dev)
                            .map_or("", |(_, name)| name.as_str()),
                        op: DISK_OP_NAMES.get(*op as usize).copied().unwrap_or("other"),
                        values,
                        identity: id.map(|id| per_pod::Identity {
                            key: (id, *dev, *op),
                            serial: series.serial(),
                            with_path: series.is_with_path(labels),
                        }),
                    },
                )
                .collect();
            per_pod::write(
                &rows,
                [self.per_cgroup_bytes, true, true],
                &self.protobuf_rows,
            )
        })
    }
}

impl LoadedFamily for DiskMaps {
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        if !self.up {
            return Ok(());
        }
        let mut rows: Vec<(
            String,
            &'static str,
            Log2Histogram,
            Log2Histogram,
            NativeHistogram,
        )> = Vec::new();
        for item in self.histograms.iter() {
            let (key, per_cpu) = item.map_err(|e| map_error(names::DISK_HISTOGRAMS, e))?;
            let read = || {
                self.histograms
                    .get(&key, 0)
                    .map_err(|e| map_error(names::DISK_HISTOGRAMS, e))
            };
            let per_cpu = read_agreeing(per_cpu, read, histograms_agree)?;
            let mut total = *per_cpu.iter().next().ok_or_else(|| {
                CollectError::map(names::DISK_HISTOGRAMS, "an entry with no per-CPU values")
            })?;
            for h in per_cpu.iter().skip(1) {
                total.latency.merge(&h.latency);
                total.size.merge(&h.size);
                total.latency_native.merge(&h.latency_native);
            }
            let (latency, size) = (total.latency.expand(), total.size.expand());
            let op = DISK_OP_NAMES
                .get(key.op as usize)
                .copied()
                .unwrap_or("other");
            rows.push((
                self.names.name(key.dev),
                op,
                latency,
                size,
                total.latency_native,
            ));
        }
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        // Native beside classic in a protobuf scrape; the text formats cannot carry it.
        let protobuf = render::protobuf();
        histogram_with_native(
            out,
            "nodelens_disk_io_latency_seconds",
            "Block request latency from issue to completion, per whole disk and operation.",
            rows.iter().map(|(device, op, latency, _, native)| {
                (
                    [("device", device.as_str()), ("op", *op)],
                    Log2Buckets {
                        slots: &latency.slots,
                        sum: latency.sum,
                        first_slot: LATENCY_FIRST_SLOT,
                        last_slot: LATENCY_LAST_SLOT,
                        scale: 1e-9,
                    },
                    protobuf.then(|| native_seconds(native)),
                )
            }),
        )?;
        histogram(
            out,
            "nodelens_disk_io_size_bytes",
            "Block request size at issue, per whole disk and operation.",
            rows.iter().map(|(device, op, _, size, _)| {
                (
                    [("device", device.as_str()), ("op", *op)],
                    Log2Buckets {
                        slots: &size.slots,
                        sum: size.sum,
                        first_slot: SIZE_FIRST_SLOT,
                        last_slot: SIZE_LAST_SLOT,
                        scale: 1.0,
                    },
                )
            }),
        )?;
        if let Some(pc) = &self.per_cgroup {
            self.collect_per_cgroup(pc)?;
        }
        Ok(())
    }

    fn cgroup_maps(&self) -> Vec<&dyn Sweep> {
        self.per_cgroup.iter().map(|pc| pc as &dyn Sweep).collect()
    }

    fn upkeep(&self) {
        self.histogram_fill
            .set(self.histograms.keys().count() as u64);
    }

    fn health(&self) -> Health {
        let (mut overwritten, mut histogram_full, mut cgroup_full) = (0, 0, 0);
        if let Ok(per_cpu) = self.counters.get(&0, 0) {
            for c in per_cpu.iter() {
                overwritten += c.inflight_overwritten;
                histogram_full += c.histogram_map_full;
                cgroup_full += c.cgroup_map_full;
            }
        }
        // DISK_INFLIGHT is an array: it has no fill level, only slots taken over.
        let mut maps = vec![
            self.histogram_fill
                .fill(names::DISK_HISTOGRAMS, DISK_HISTOGRAM_ENTRIES),
        ];
        if let Some(pc) = &self.per_cgroup {
            maps.push(pc.fill());
        }
        Health {
            maps,
            lost: vec![
                ("disk_inflight_overwritten", overwritten),
                ("disk_histogram_map_full", histogram_full),
                ("cgroup_map_full_disk", cgroup_full),
            ],
            costs: self.costs.read(),
        }
    }
}

/// Whether a CPU's classic and native latency histograms hold the same requests.
fn histograms_agree(h: &DiskHistograms) -> bool {
    let native = &h.latency_native;
    h.latency.slots.iter().sum::<u64>() == native.zero + native.buckets.iter().sum::<u64>()
}

/// Block work: up to 256 O_DIRECT reads of 4 KiB from the start of a disk or file. Reads
/// only.
fn block_work(device: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(device)
        .map_err(|e| format!("cannot open {} with O_DIRECT: {e}", device.display()))?;
    // O_DIRECT needs a buffer aligned to the logical block size: 4096 covers every disk.
    let mut backing = vec![0u8; 8192];
    let offset = backing.as_ptr().align_offset(4096);
    let buf = &mut backing[offset..offset + 4096];
    let mut reads = 0;
    for i in 0..256u64 {
        match file.read_at(buf, i * 4096) {
            Ok(n) if n > 0 => reads += 1,
            Ok(_) => break,
            Err(e) => return Err(format!("read from {}: {e}", device.display())),
        }
    }
    Ok(format!(
        "{reads} O_DIRECT reads of 4 KiB from {}",
        device.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::btf::{Btf, fixtures};

    fn resolve(release: &str) -> DiskLayout {
        let bytes = fixtures::load(release);
        let btf = Btf::parse(&bytes).unwrap();
        let (l, family) = layout(&KernelSources::for_family(&Disk, Ok(&btf), None), true);
        assert_eq!(family.btf, Ok(()), "{release}");
        l
    }

    #[test]
    fn every_kernel_leads_from_a_request_to_its_bios_cgroup() {
        for (release, _) in fixtures::all() {
            let l = resolve(&release);
            assert_eq!(l.owner_from_blkcg, 1, "{release}");
            // css is blkcg's first member and cgroup the css's: 0 is a real offset there.
            assert!(l.request_bio > 0 && l.bio_blkg > 0, "{release}");
            assert!(l.cgroup_kn > 0 && l.kernfs_node_id > 0, "{release}");
        }
    }

    #[test]
    fn finds_the_disk_through_rq_disk_before_5_19_and_the_queue_after() {
        let old = resolve("5.10.0-46-cloud-amd64");
        assert_eq!(
            old.issue_rq_arg, 0,
            "5.11 dropped the queue argument; Debian backported it"
        );
        assert_eq!((old.disk_in_request, old.request_rq_disk), (1, 160));
        assert_eq!(old.request_data_len, 40);
        for (release, queue_disk) in [
            ("6.1.0-57-cloud-amd64", 160),
            ("6.12.118+deb13-cloud-amd64", 104),
        ] {
            let l = resolve(release);
            assert_eq!(l.disk_in_request, 0, "{release}");
            assert_eq!((l.request_q, l.queue_disk), (0, queue_disk), "{release}");
            assert_eq!(l.request_data_len, 44, "{release}");
        }
        for (release, _) in fixtures::all() {
            let l = resolve(&release);
            assert_eq!(
                (l.gendisk_major, l.gendisk_first_minor),
                (0, 4),
                "{release}"
            );
            assert_eq!(l.request_cmd_flags, 24, "{release}");
        }
    }
}
