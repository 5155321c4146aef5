//! Disk family: block I/O latency and size per whole disk and operation, measured in the
//! kernel (`block_rq_issue` → `block_rq_complete`, biolatency semantics). Partition I/O is
//! counted on its disk: the block layer remaps it before a request is issued.
use std::{
    collections::HashMap as StdHashMap,
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use agent_ebpf::{
    disk::{
        COST_COMPLETE, COST_ISSUE, DISK_HISTOGRAM_ENTRIES, DISK_INFLIGHT_ENTRIES,
        DISK_LAYOUT_GLOBAL, DISK_OP_NAMES, DiskCounters, DiskHistograms, DiskInFlight, DiskKey,
        DiskLayout, LATENCY_FIRST_SLOT, LATENCY_SLOTS, SIZE_FIRST_SLOT, SIZE_SLOTS,
    },
    histogram::Log2Histogram,
};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap},
};
use prometheus_client::encoding::DescriptorEncoder;

use crate::{
    config::CollectorName,
    ebpf::family::{
        Attached, Family, FamilyLayout, FillGauge, Health, KernelSources, LoadContext,
        LoadedFamily, ProbeCosts, ProbeSpec, global_bytes, map_error, take_map,
    },
    metrics::{CollectError, Log2Buckets, histogram},
};

/// The kernel keeps exactly the exported buckets (agent-ebpf's `DiskHistograms`): from the
/// first slot to the one before the overflow slot.
const LATENCY_LAST_SLOT: usize = LATENCY_FIRST_SLOT + LATENCY_SLOTS - 2;
const SIZE_LAST_SLOT: usize = SIZE_FIRST_SLOT + SIZE_SLOTS - 2;

/// An in-flight request older than this lost its completion (for example a device that
/// vanished mid-request): upkeep removes and counts it, never records it as latency.
pub const INFLIGHT_STALE_NS: u64 = 60 * 1_000_000_000;

pub struct Disk;

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
        btf_program: "block_rq_issue_btf",
        tracepoint_program: "block_rq_issue_tp",
        core: true,
    },
    ProbeSpec {
        name: "block_rq_complete",
        category: "block",
        group: "block",
        btf_program: "block_rq_complete_btf",
        tracepoint_program: "block_rq_complete_tp",
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
    if btf.has_member("request", "rq_disk") {
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

pub fn layout(kernel: &KernelSources) -> (DiskLayout, FamilyLayout) {
    let mut l = DiskLayout::default();
    let btf = btf_layout(kernel, &mut l);
    let tracepoint = tracepoint_layout(kernel, &mut l);
    let offsets = btf.clone().unwrap_or_default();
    let family = FamilyLayout::new(
        vec![(DISK_LAYOUT_GLOBAL, global_bytes(&l))],
        btf.map(drop),
        tracepoint,
        offsets,
    );
    (l, family)
}

impl Family for Disk {
    fn name(&self) -> CollectorName {
        CollectorName::Disk
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
        Ok(Box::new(DiskMaps {
            histograms: take_map(ebpf, "DISK_HISTOGRAMS")?,
            inflight: Mutex::new(take_map(ebpf, "DISK_INFLIGHT")?),
            counters: take_map(ebpf, "DISK_COUNTERS")?,
            costs: ProbeCosts::new(take_map(ebpf, "DISK_COST")?, &COST_SLOTS),
            up: attached.all_up(&["block_rq_issue", "block_rq_complete"]),
            names: DeviceNames::new(ctx.sysfs.join("dev/block")),
            stale: AtomicU64::new(0),
            inflight_fill: FillGauge::default(),
            histogram_fill: FillGauge::default(),
        }))
    }
}

struct DiskMaps {
    histograms: PerCpuHashMap<MapData, DiskKey, DiskHistograms>,
    /// Behind a lock: upkeep removes stale entries from it.
    inflight: Mutex<HashMap<MapData, u64, DiskInFlight>>,
    counters: PerCpuArray<MapData, DiskCounters>,
    costs: ProbeCosts,
    /// block_rq_issue and block_rq_complete attached.
    up: bool,
    names: DeviceNames,
    /// In-flight requests upkeep removed because they never completed.
    stale: AtomicU64,
    inflight_fill: FillGauge,
    histogram_fill: FillGauge,
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

/// CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns reads.
fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl DiskMaps {
    /// Removes in-flight requests older than `INFLIGHT_STALE_NS`, counts them, and returns
    /// how many entries remain.
    fn sweep_inflight(&self) -> u64 {
        let now = monotonic_ns();
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries = 0u64;
        let mut stale = Vec::new();
        for (key, req) in inflight.iter().flatten() {
            entries += 1;
            if now.saturating_sub(req.issued_ns) > INFLIGHT_STALE_NS {
                stale.push(key);
            }
        }
        for key in &stale {
            // Gone already means it completed after all: not stale.
            if inflight.remove(key).is_ok() {
                self.stale.fetch_add(1, Ordering::Relaxed);
                entries = entries.saturating_sub(1);
            }
        }
        entries
    }
}

impl LoadedFamily for DiskMaps {
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        if !self.up {
            return Ok(());
        }
        let mut rows: Vec<(String, &'static str, Log2Histogram, Log2Histogram)> = Vec::new();
        for item in self.histograms.iter() {
            let (key, per_cpu) = item.map_err(|e| map_error("DISK_HISTOGRAMS", e))?;
            let mut total = *per_cpu.iter().next().ok_or_else(|| {
                CollectError::map("DISK_HISTOGRAMS", "an entry with no per-CPU values")
            })?;
            for h in per_cpu.iter().skip(1) {
                total.latency.merge(&h.latency);
                total.size.merge(&h.size);
            }
            let (latency, size) = (total.latency.expand(), total.size.expand());
            let op = DISK_OP_NAMES
                .get(key.op as usize)
                .copied()
                .unwrap_or("other");
            rows.push((self.names.name(key.dev), op, latency, size));
        }
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        histogram(
            out,
            "nodelens_disk_io_latency_seconds",
            "Block request latency from issue to completion, per whole disk and operation.",
            rows.iter().map(|(device, op, latency, _)| {
                (
                    [("device", device.as_str()), ("op", *op)],
                    Log2Buckets {
                        slots: &latency.slots,
                        sum: latency.sum,
                        first_slot: LATENCY_FIRST_SLOT,
                        last_slot: LATENCY_LAST_SLOT,
                        scale: 1e-9,
                    },
                )
            }),
        )?;
        histogram(
            out,
            "nodelens_disk_io_size_bytes",
            "Block request size at issue, per whole disk and operation.",
            rows.iter().map(|(device, op, _, size)| {
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
        Ok(())
    }

    fn upkeep(&self) {
        self.inflight_fill.set(self.sweep_inflight());
        self.histogram_fill
            .set(self.histograms.keys().count() as u64);
    }

    fn health(&self) -> Health {
        let (mut inflight_full, mut histogram_full) = (0, 0);
        if let Ok(per_cpu) = self.counters.get(&0, 0) {
            for c in per_cpu.iter() {
                inflight_full += c.inflight_map_full;
                histogram_full += c.histogram_map_full;
            }
        }
        Health {
            maps: vec![
                self.inflight_fill.fill("DISK_INFLIGHT", DISK_INFLIGHT_ENTRIES),
                self.histogram_fill
                    .fill("DISK_HISTOGRAMS", DISK_HISTOGRAM_ENTRIES),
            ],
            lost: vec![
                ("disk_inflight_map_full", inflight_full),
                ("disk_histogram_map_full", histogram_full),
                ("disk_inflight_stale", self.stale.load(Ordering::Relaxed)),
            ],
            costs: self.costs.read(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::btf::{Btf, fixtures};

    fn resolve(release: &str) -> DiskLayout {
        let bytes = fixtures::load(release);
        let btf = Btf::parse(&bytes).unwrap();
        let (l, family) = layout(&KernelSources {
            btf: Ok(&btf),
            tracefs: None,
        });
        assert_eq!(family.btf, Ok(()), "{release}");
        l
    }

    #[test]
    fn finds_the_disk_through_rq_disk_before_5_19_and_the_queue_after() {
        let old = resolve("5.10.0-46-cloud-amd64");
        assert_eq!(old.issue_rq_arg, 0, "5.11 dropped the queue argument; Debian backported it");
        assert_eq!((old.disk_in_request, old.request_rq_disk), (1, 160));
        assert_eq!(old.request_data_len, 40);
        for (release, queue_disk) in [
            ("6.1.0-56-cloud-amd64", 160),
            ("6.12.118+deb13-cloud-amd64", 104),
        ] {
            let l = resolve(release);
            assert_eq!(l.disk_in_request, 0, "{release}");
            assert_eq!((l.request_q, l.queue_disk), (0, queue_disk), "{release}");
            assert_eq!(l.request_data_len, 44, "{release}");
        }
        for (release, _) in fixtures::all() {
            let l = resolve(&release);
            assert_eq!((l.gendisk_major, l.gendisk_first_minor), (0, 4), "{release}");
            assert_eq!(l.request_cmd_flags, 24, "{release}");
        }
    }
}
