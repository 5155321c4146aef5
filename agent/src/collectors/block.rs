//! Block I/O latency and size per whole disk and operation, measured in the kernel
//! (`block_rq_issue` → `block_rq_complete`). Partition I/O is counted on its disk: the
//! block layer remaps it before a request is issued.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use agent_ebpf::{DISK_OP_NAMES, Log2Histogram};
use prometheus_client::encoding::DescriptorEncoder;

use super::{CollectError, Collector, map_error, sum_histograms};
use crate::{
    ebpf::Probes,
    metrics::{Log2Buckets, histogram},
};

/// Latency buckets: 2^10 ns (about 1 µs) to 2^36 ns (about 69 s).
pub const LATENCY_FIRST_SLOT: usize = 10;
pub const LATENCY_LAST_SLOT: usize = 36;
/// Size buckets: 512 B to 128 MiB.
pub const SIZE_FIRST_SLOT: usize = 9;
pub const SIZE_LAST_SLOT: usize = 27;

#[derive(Debug)]
pub struct BlockCollector {
    probes: Arc<Probes>,
    dev_block: PathBuf,
    /// Kernel dev_t to device name; names only change when a device goes away.
    names: Mutex<HashMap<u32, String>>,
}

impl BlockCollector {
    pub fn new(probes: Arc<Probes>, sysfs: &Path) -> Self {
        Self {
            probes,
            dev_block: sysfs.join("dev/block"),
            names: Mutex::new(HashMap::new()),
        }
    }

    /// `vda`, `nvme0n1`, `loop3`: the last component of `/sys/dev/block/MAJ:MIN`'s target.
    /// Falls back to `MAJ:MIN` when sysfs does not know the device (any more).
    fn device_name(&self, dev: u32) -> String {
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

impl Collector for BlockCollector {
    fn name(&self) -> &'static str {
        "block"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let Some(maps) = self.probes.loaded.get().and_then(|l| l.disk.as_ref()) else {
            return Ok(());
        };
        if !maps.up {
            return Ok(());
        }
        let mut rows: Vec<(String, &'static str, Log2Histogram, Log2Histogram)> = Vec::new();
        for item in maps.histograms.iter() {
            let (key, per_cpu) = item.map_err(|e| map_error("DISK_HISTOGRAMS", e))?;
            let latency = sum_histograms(per_cpu.iter().map(|h| &h.latency));
            let size = sum_histograms(per_cpu.iter().map(|h| &h.size));
            let op = DISK_OP_NAMES
                .get(key.op as usize)
                .copied()
                .unwrap_or("other");
            rows.push((self.device_name(key.dev), op, latency, size));
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
}
