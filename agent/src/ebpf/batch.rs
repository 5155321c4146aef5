//! Reading a whole hash map in a few syscalls (`BPF_MAP_LOOKUP_BATCH`, kernel 5.6+) rather
//! than two per key (`get_next_key`, then `lookup`): with 4,096 cgroups that is 4 syscalls
//! instead of 8,192. aya 0.14 has no batch API, so this is one of the agent's two raw
//! `bpf(2)` calls. Kernels without batch support (or maps that refuse it) fall back to
//! aya's iterator. The other is [`take`], a lookup-and-delete in one call, which aya 0.14
//! does not offer for hash maps either.
use std::{
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicBool, Ordering},
};

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
    entries_expecting(map, 0)
}

/// [`entries`], with room made for `expected` of them up front (the last read's count, say):
/// a per-pod map of thousands of entries, grown as it is read, was copied a dozen times.
pub fn entries_expecting<K: Pod, V: Pod>(
    map: &HashMap<MapData, K, V>,
    expected: usize,
) -> Result<Vec<(K, V)>, String> {
    match lookup_batch(map, expected) {
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
    expected: usize,
) -> Result<Vec<(K, V)>, std::io::Error> {
    let fd = map_fd(map);
    let mut out: Vec<(K, V)> = Vec::with_capacity(expected);
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

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` from include/uapi/linux/bpf.h (hash maps: 5.14+).
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// The element-operation member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Deletes `key`'s entry and returns the value it had when deleted, or `None` if there is
/// none. One atomic call where the kernel has it, so an update landing between a read and
/// the delete is not lost; else a lookup, then a delete.
pub fn take<K: Pod, V: Pod>(map: &mut HashMap<MapData, K, V>, key: &K) -> Option<V> {
    if NO_LOOKUP_AND_DELETE.load(Ordering::Relaxed) {
        return lookup_then_delete(map, key);
    }
    let mut value = std::mem::MaybeUninit::<V>::uninit();
    let mut attr = ElemAttr {
        map_fd: map_fd(map) as u32,
        key: std::ptr::from_ref(key) as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: key and value point at a K and room for a V, whose sizes aya checked against
    // the map's when it typed the map; the kernel writes at most one value.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            &raw mut attr,
            std::mem::size_of::<ElemAttr>(),
        )
    };
    if ret == 0 {
        // SAFETY: on success the kernel wrote the value.
        return Some(unsafe { value.assume_init() });
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOENT) => None,
        // Before 5.14 hash maps have no lookup-and-delete: remembered, so that later takes
        // go straight to the two calls.
        _ => {
            NO_LOOKUP_AND_DELETE.store(true, Ordering::Relaxed);
            lookup_then_delete(map, key)
        }
    }
}

/// Set once the kernel refused `BPF_MAP_LOOKUP_AND_DELETE_ELEM` on a hash map.
static NO_LOOKUP_AND_DELETE: AtomicBool = AtomicBool::new(false);

fn lookup_then_delete<K: Pod, V: Pod>(map: &mut HashMap<MapData, K, V>, key: &K) -> Option<V> {
    let value = map.get(key, 0).ok()?;
    map.remove(key).ok().map(|()| value)
}

fn map_fd<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> i32 {
    use aya::maps::IterableMap;
    map.map().fd().as_fd().as_raw_fd()
}
