//! Kernel memory of the agent's BPF maps: what the kernel charges for each (the `memlock:`
//! line of the map fd's fdinfo, which is what `bpftool map show` prints), and a model of it
//! from the map's type, entries, key and value sizes and the possible-CPU count, to size a
//! node before deploying (RSS does not show this memory).
//!
//! The model follows the kernel's own accounting (`map_mem_usage`, 6.4+) for the map types
//! nodelens uses. Its constants are the sizes of the kernel's map structures, fitted on
//! x86_64 6.x kernels; the kernel matrix checks it under qemu with 32 CPUs. Kernels before
//! 6.4 report a cruder figure in fdinfo, which the model does not try to match.
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use aya::{Ebpf, maps::Map};

// include/uapi/linux/bpf.h
const HASH: u32 = 1;
const ARRAY: u32 = 2;
const PERCPU_HASH: u32 = 5;
const PERCPU_ARRAY: u32 = 6;
const QUEUE: u32 = 22;
const STACK: u32 = 23;
const RINGBUF: u32 = 27;
const F_NO_PREALLOC: u32 = 1;
const F_MMAPABLE: u32 = 1 << 10;

/// sizeof(struct bpf_htab), (struct bpf_array), (struct bpf_queue_stack) and (struct
/// bpf_ringbuf_map) plus their fixed extras; sizeof(struct htab_elem) without its key and
/// value.
const HTAB_BASE: u64 = 832;
const ARRAY_BASE: u64 = 312;
const QUEUE_BASE: u64 = 312;
const RINGBUF_BASE: u64 = 304;
const HTAB_ELEM: u64 = 48;
const PAGE: u64 = 4096;

/// What the model needs to know about a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapShape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

fn round8(n: u32) -> u64 {
    u64::from(n).div_ceil(8) * 8
}

/// Modeled kernel memory in bytes, for `cpus` possible CPUs and, for maps that allocate
/// on use (BPF_F_NO_PREALLOC), `in_use` entries.
pub fn model(s: MapShape, cpus: u64, in_use: u64) -> u64 {
    let (k, v, e) = (
        round8(s.key_size),
        round8(s.value_size),
        u64::from(s.max_entries),
    );
    match s.map_type {
        // An mmap-able array's header and values each take whole pages.
        ARRAY if s.flags & F_MMAPABLE != 0 => {
            ARRAY_BASE.div_ceil(PAGE) * PAGE + (e * v).div_ceil(PAGE) * PAGE
        }
        ARRAY => ARRAY_BASE + e * v,
        // One spare element (head == tail means empty), values not rounded up.
        QUEUE | STACK => QUEUE_BASE + (e + 1) * u64::from(s.value_size),
        PERCPU_ARRAY => ARRAY_BASE + e * 8 + e * v * cpus,
        HASH | PERCPU_HASH => {
            let percpu = s.map_type == PERCPU_HASH;
            // Buckets, and 8 bucket locks per CPU.
            let base = HTAB_BASE + 16 * e.next_power_of_two() + 4 * 8 * cpus;
            let elem = HTAB_ELEM + k + if percpu { 8 } else { v };
            if s.flags & F_NO_PREALLOC != 0 {
                // An llist node per element, and per CPU values for per-CPU maps.
                let per_entry = elem + 8 + if percpu { 16 + v * cpus } else { 0 };
                base + in_use * per_entry
            } else if percpu {
                base + elem * e + v * cpus * e
            } else {
                // One spare element per CPU, and a pointer to it.
                base + elem * (e + cpus) + 8 * cpus
            }
        }
        RINGBUF => {
            // Data pages are mapped twice (pointers only); 3 meta pages.
            let data = e.div_ceil(PAGE);
            RINGBUF_BASE + (3 + data) * PAGE + (3 + 2 * data) * 8
        }
        _ => 0,
    }
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`, e.g. `0-191`), which
/// is what per-CPU maps are sized by, whether or not the CPUs are online.
pub fn possible_cpus(sysfs: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(sysfs.join("devices/system/cpu/possible")).ok()?;
    parse_cpu_list(&text)
}

/// `0-3,8-11` as a count (8). A range that runs backwards is not a CPU list.
pub fn parse_cpu_list(text: &str) -> Option<u64> {
    let mut n: u64 = 0;
    for part in text.trim().split(',') {
        let count = match part.split_once('-') {
            Some((a, b)) => b
                .trim()
                .parse::<u64>()
                .ok()?
                .checked_sub(a.trim().parse::<u64>().ok()?)?
                .checked_add(1)?,
            None => {
                part.trim().parse::<u64>().ok()?;
                1
            }
        };
        n = n.checked_add(count)?;
    }
    Some(n)
}

/// One map of the loaded object: its name, its shape, and a duplicate of its fd, so that
/// its fdinfo can be read whoever holds the map.
struct Tracked {
    name: String,
    shape: MapShape,
    fd: OwnedFd,
}

/// Every map of the loaded object.
#[derive(Default)]
pub struct MapMemory {
    maps: Vec<Tracked>,
    /// The last `measured()`, refreshed by the agent's map upkeep: scrapes read this rather
    /// than a file per map.
    last: std::sync::Mutex<Vec<(String, u64)>>,
}

fn data(map: &Map) -> Option<&aya::maps::MapData> {
    match map {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuHashMap(m)
        | Map::Queue(m)
        | Map::Stack(m)
        | Map::PerCpuLruHashMap(m)
        | Map::RingBuf(m)
        // Task storage (aya has no type for it): its fdinfo still has its memlock.
        | Map::Unsupported(m) => Some(m),
        _ => None,
    }
}

impl MapMemory {
    /// Call right after loading, before the families take their maps.
    pub fn of(ebpf: &Ebpf) -> Self {
        let maps = ebpf
            .maps()
            .filter_map(|(name, map)| {
                let data = data(map)?;
                let info = data.info().ok()?;
                let shape = MapShape {
                    map_type: info.map_type().ok()? as u32,
                    key_size: info.key_size(),
                    value_size: info.value_size(),
                    max_entries: info.max_entries(),
                    flags: info.map_flags(),
                };
                let fd = data.fd().as_fd().try_clone_to_owned().ok()?;
                Some(Tracked {
                    name: name.to_owned(),
                    shape,
                    fd,
                })
            })
            .collect();
        let memory = Self {
            maps,
            last: Default::default(),
        };
        memory.refresh();
        memory
    }

    /// Reads fdinfo again (upkeep calls this).
    pub fn refresh(&self) {
        let now: Vec<(String, u64)> = self
            .measured()
            .into_iter()
            .map(|(m, b)| (m.to_owned(), b))
            .collect();
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// What the last refresh found.
    pub fn last(&self) -> Vec<(String, u64)> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// (map, bytes the kernel charges for it), from fdinfo.
    pub fn measured(&self) -> Vec<(&str, u64)> {
        self.maps
            .iter()
            .filter_map(|m| {
                let path = format!("/proc/self/fdinfo/{}", m.fd.as_raw_fd());
                let text = std::fs::read_to_string(path).ok()?;
                let bytes = text
                    .lines()
                    .find_map(|l| l.strip_prefix("memlock:"))?
                    .trim()
                    .parse()
                    .ok()?;
                Some((m.name.as_str(), bytes))
            })
            .collect()
    }

    /// (map, modeled bytes) for `cpus` possible CPUs, with `in_use(map)` entries of the maps
    /// that allocate on use.
    pub fn modeled(&self, cpus: u64, in_use: impl Fn(&str) -> u64) -> Vec<(&str, u64)> {
        self.maps
            .iter()
            .map(|m| (m.name.as_str(), model(m.shape, cpus, in_use(&m.name))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        flags: u32,
    ) -> MapShape {
        MapShape {
            map_type,
            key_size,
            value_size,
            max_entries,
            flags,
        }
    }

    #[test]
    fn model_matches_what_a_6_18_kernel_charged_with_two_cpus() {
        // (shape, entries in use, bytes in fdinfo's memlock), read with bpftool on this
        // project's 2-CPU development VM, kernel 6.18.
        for (s, in_use, charged) in [
            (shape(HASH, 4, 8, 10240, 0), 0, 918_544),
            (shape(HASH, 8, 8, 8192, 0), 0, 656_400),
            (shape(HASH, 8, 24, 16384, 0), 0, 1_573_936),
            (shape(HASH, 8, 48, 16384, 0), 0, 1_967_200),
            (shape(HASH, 8, 4, 16384, 0), 0, 1_311_760),
            (shape(ARRAY, 4, 56, 16384, F_MMAPABLE), 0, 921_600),
            (shape(QUEUE, 0, 4, 16384, 0), 0, 65_852),
            (shape(STACK, 0, 4, 16384, 0), 0, 65_852),
            (shape(PERCPU_ARRAY, 4, 568, 1, 0), 0, 1_456),
            (shape(PERCPU_ARRAY, 4, 24, 3, 0), 0, 480),
            (shape(PERCPU_ARRAY, 4, 520, 2, 0), 0, 2_408),
            (shape(PERCPU_HASH, 8, 400, 512, F_NO_PREALLOC), 1, 9_976),
            (shape(RINGBUF, 0, 0, 131_072, 0), 0, 144_200),
            (shape(RINGBUF, 0, 0, 4096, 0), 0, 16_728),
        ] {
            assert_eq!(model(s, 2, in_use), charged, "{s:?}");
        }
    }

    #[test]
    fn per_cpu_terms_scale_with_the_cpu_count() {
        // DISK_HISTOGRAMS: the classic latency and size buckets and the native latency
        // histogram, per CPU.
        let value = size_of::<agent_ebpf::disk::DiskHistograms>() as u32;
        assert_eq!(value, 2_456);
        let hist = shape(PERCPU_HASH, 8, value, 256, F_NO_PREALLOC);
        let one_pair = model(hist, 192, 1) - model(hist, 192, 0);
        assert_eq!(
            one_pair,
            88 + u64::from(value) * 192,
            "about 470 KB per (disk, op) pair at 192 CPUs"
        );
    }

    #[test]
    fn parses_possible_cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-191"), Some(192));
        assert_eq!(parse_cpu_list("0,2-3,8"), Some(4));
        assert_eq!(parse_cpu_list("garbage"), None);
        assert_eq!(
            parse_cpu_list("3-1"),
            None,
            "a backwards range, not an overflow"
        );
        assert_eq!(parse_cpu_list("0-18446744073709551615"), None);
    }
}
