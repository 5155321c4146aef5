//! Per-cgroup totals shared by the scheduler and memory probes.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use agent_ebpf::{CGROUP_STATS_ENTRIES, CgroupStats};
use aya_ebpf::{macros::map, maps::HashMap};

#[map]
static CGROUP_STATS: HashMap<u64, CgroupStats> = HashMap::with_max_entries(CGROUP_STATS_ENTRIES, 0);

const BPF_NOEXIST: u64 = 1;

/// The entry for `cgroup_id`, created on first use; `None` when the map is full.
#[inline(always)]
pub fn stats(cgroup_id: u64) -> Option<*mut CgroupStats> {
    if let Some(s) = CGROUP_STATS.get_ptr_mut(cgroup_id) {
        return Some(s);
    }
    // Another CPU may create it first: NOEXIST then lookup again either way.
    let _ = CGROUP_STATS.insert(cgroup_id, CgroupStats::default(), BPF_NOEXIST);
    CGROUP_STATS.get_ptr_mut(cgroup_id)
}

/// Atomically adds to one field of a shared entry.
#[inline(always)]
pub fn add(field: *mut u64, value: u64) {
    // The BPF target has no `AtomicU64::fetch_add` in core (no compare-and-swap), but LLVM
    // lowers this intrinsic, result unused, to the BPF atomic add instruction.
    // SAFETY: the field lives in a map value that outlives the program run.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, value) };
}
