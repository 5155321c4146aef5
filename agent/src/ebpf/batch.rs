//! Reading a whole hash map in a few syscalls (`BPF_MAP_LOOKUP_BATCH`, kernel 5.6+) rather
//! than two per key (`get_next_key`, then `lookup`): with 4,096 cgroups that is 4 syscalls
//! instead of 8,192. aya 0.14 has no batch API, so this is the one raw `bpf(2)` call in the
//! agent. Kernels without batch support (or maps that refuse it) fall back to aya's
//! iterator.
use std::os::fd::{AsFd, AsRawFd};

use aya::{
    Pod,
    maps::{HashMap, MapData},
};

/// `BPF_MAP_LOOKUP_BATCH` from include/uapi/linux/bpf.h.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked for per call.
const BATCH: u32 = 1024;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every (key, value) of a (non per-CPU) hash map.
pub fn entries<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> Result<Vec<(K, V)>, String> {
    match lookup_batch(map) {
        Ok(all) => Ok(all),
        // EINVAL/ENOTSUPP: no batch ops on this kernel or map; the iterator always works.
        Err(_) => map
            .iter()
            .map(|item| item.map_err(|e| super::family::reason(&e)))
            .collect(),
    }
}

fn lookup_batch<K: Pod, V: Pod>(
    map: &HashMap<MapData, K, V>,
) -> Result<Vec<(K, V)>, std::io::Error> {
    let fd = map_fd(map);
    let mut out: Vec<(K, V)> = Vec::new();
    let mut keys: Vec<K> = Vec::with_capacity(BATCH as usize);
    let mut values: Vec<V> = Vec::with_capacity(BATCH as usize);
    // The cursor for hash maps is a bucket index (u32); 8 bytes leave room either way.
    let (mut cursor_in, mut cursor_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &raw const cursor_in as u64
            },
            out_batch: &raw mut cursor_out as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: attr points at buffers of `BATCH` keys and values of the map's sizes
        // (aya checked K and V against the map's key and value sizes when it typed the map),
        // and the kernel writes at most `count` of each.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let err = (ret < 0).then(std::io::Error::last_os_error);
        let filled = attr.count.min(BATCH) as usize;
        // SAFETY: the kernel initialized the first `count` entries of both buffers.
        unsafe {
            keys.set_len(filled);
            values.set_len(filled);
        }
        out.extend(keys.drain(..).zip(values.drain(..)));
        match err {
            None => {}
            // ENOENT: the last batch (possibly empty) has been returned.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Some(e) => return Err(e),
        }
        cursor_in = cursor_out;
        first = false;
    }
}

fn map_fd<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> i32 {
    use aya::maps::IterableMap;
    map.map().fd().as_fd().as_raw_fd()
}
