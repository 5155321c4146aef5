//! Per-cgroup totals, shared by the scheduler and memory programs: one slot per cgroup v2
//! id (the inode of the cgroup's directory), updated with atomic adds from every CPU. One
//! shared slot per cgroup, rather than one per CPU, keeps the maps small on large machines.
//!
//! The totals live in an array that the agent maps into its memory (`BPF_F_MMAPABLE`), so
//! that a scrape reads them without a system call: reading a hash map of 4,096 cgroups took
//! the kernel some 400 ns per entry, a third of a scrape. A hash (`CGROUP_SLOTS`) says
//! which slot a cgroup id has; a stack (`CGROUP_FREE_SLOTS`) holds the free slots, filled
//! by the agent with slot 0 on top. A program claims a slot for a new id from the stack;
//! the agent's upkeep task gives back the slots of cgroups that are gone. Nothing is
//! evicted silently: when the stack is empty, the update is counted as lost.
//!
//! A stack, so that slots given back are used again first: the slots ever used are then
//! always `0..CGROUP_SLOTS_USED`, as many as the most cgroups live at once, and the agent
//! reads (and keeps in its memory) only those, not the whole array.
use core::ops::AddAssign;

use crate::probes::histogram::POD_NATIVE_BUCKETS;

/// Default size of the per-cgroup map. User space sets it at load time from the tracked
/// cgroup cap (room for churn: gone cgroups stay until the upkeep task deletes them).
pub const CGROUP_STATS_ENTRIES: u32 = 16384;

/// Name of the `u32` global that turns per-cgroup accounting on (1) or off (0, the default:
/// the agent sets it only when it exports per-cgroup metrics, so that a node that does not
/// want them does not pay for them).
pub const CGROUP_ACCOUNTING_GLOBAL: &str = "CGROUP_ACCOUNTING";

/// Name of the `u32` global that turns the per-cgroup histogram of blocked times on (1; 0
/// by default): the agent sets it only when it exports that histogram (`--cgroup-series
/// blocked`), so that placing each blocked wait in its bucket costs nothing otherwise.
pub const CGROUP_BLOCKED_HISTOGRAM_GLOBAL: &str = "CGROUP_BLOCKED_HISTOGRAM";

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Time the cgroup's tasks spent on a CPU.
    pub cpu_ns: u64,
    /// Time the cgroup's tasks spent runnable, waiting for a CPU.
    pub runqueue_wait_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub reclaim_direct_ns: u64,
    pub reclaim_memcg_ns: u64,
    /// Time the cgroup's tasks spent blocked in uninterruptible sleep (D state) waiting for
    /// I/O (`in_iowait`), and for anything else (locks, page faults, vfork), until woken.
    pub blocked_io_ns: u64,
    pub blocked_other_ns: u64,
    /// The run-queue waits of `runqueue_wait_ns` one by one, as a native histogram of
    /// schema `histogram::POD_NATIVE_SCHEMA`: up to 2^-20 s, and then by power of two
    /// from `histogram::POD_NATIVE_FIRST_INDEX` (`histogram::pod_native_slot` places a
    /// wait).
    pub runqueue_wait_zero: u64,
    pub runqueue_wait_buckets: [u64; POD_NATIVE_BUCKETS],
    /// The blocked times of `blocked_io_ns` and `blocked_other_ns` one by one, whatever
    /// the cause, as a native histogram of the same schema.
    pub blocked_zero: u64,
    pub blocked_buckets: [u64; POD_NATIVE_BUCKETS],
}

impl AddAssign for CgroupStats {
    fn add_assign(&mut self, rhs: Self) {
        *self = self.zip_with(rhs, |a, b| a + b);
    }
}

impl CgroupStats {
    /// `f` applied field by field to `self` and `other`: destructured, so that a new field
    /// fails to compile until it is added (here, and where the agent splits the fields into
    /// totals and histograms, `ebpf::slots`).
    #[inline(always)]
    pub fn zip_with(self, other: Self, f: impl Fn(u64, u64) -> u64) -> Self {
        let CgroupStats {
            cpu_ns,
            runqueue_wait_ns,
            voluntary_switches,
            involuntary_switches,
            reclaim_direct_ns,
            reclaim_memcg_ns,
            blocked_io_ns,
            blocked_other_ns,
            runqueue_wait_zero,
            runqueue_wait_buckets,
            blocked_zero,
            blocked_buckets,
        } = other;
        Self {
            cpu_ns: f(self.cpu_ns, cpu_ns),
            runqueue_wait_ns: f(self.runqueue_wait_ns, runqueue_wait_ns),
            voluntary_switches: f(self.voluntary_switches, voluntary_switches),
            involuntary_switches: f(self.involuntary_switches, involuntary_switches),
            reclaim_direct_ns: f(self.reclaim_direct_ns, reclaim_direct_ns),
            reclaim_memcg_ns: f(self.reclaim_memcg_ns, reclaim_memcg_ns),
            blocked_io_ns: f(self.blocked_io_ns, blocked_io_ns),
            blocked_other_ns: f(self.blocked_other_ns, blocked_other_ns),
            runqueue_wait_zero: f(self.runqueue_wait_zero, runqueue_wait_zero),
            runqueue_wait_buckets: core::array::from_fn(|i| {
                f(self.runqueue_wait_buckets[i], runqueue_wait_buckets[i])
            }),
            blocked_zero: f(self.blocked_zero, blocked_zero),
            blocked_buckets: core::array::from_fn(|i| {
                f(self.blocked_buckets[i], blocked_buckets[i])
            }),
        }
    }

    /// What was added since `earlier`, field by field (a field never goes back: 0 if it
    /// did, rather than a wrapped huge count).
    pub fn since(self, earlier: Self) -> Self {
        self.zip_with(earlier, u64::saturating_sub)
    }
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] plain u64 data.
unsafe impl aya::Pod for CgroupStats {}

/// One slot of `CGROUP_STATS`: which cgroup holds it, and its totals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupSlot {
    /// The cgroup id, written by the program that claimed the slot once the id is its own;
    /// [`SLOT_NEVER_USED`] or [`SLOT_FREED`] for a free slot (no cgroup has either id). The
    /// agent reads it to find the live slots.
    pub cgroup_id: u64,
    pub stats: CgroupStats,
}

/// `cgroup_id` of a slot no cgroup has had yet.
pub const SLOT_NEVER_USED: u64 = 0;
/// `cgroup_id` of a slot the agent took back (a cgroup had it).
pub const SLOT_FREED: u64 = u64::MAX;

/// `BPF_F_MMAPABLE` (include/uapi/linux/bpf.h, 5.5+).
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] plain u64 data.
unsafe impl aya::Pod for CgroupSlot {}

/// The names of this family's maps and programs in the object, shared with user space
/// (`take_map`, `ProbeSpec`): each is the identifier of a static or a function in
/// `programs`, and the agent's unit tests check every one against the built object.
pub mod names {
    pub const CGROUP_SLOTS: &str = "CGROUP_SLOTS";
    pub const CGROUP_STATS: &str = "CGROUP_STATS";
    pub const CGROUP_FREE_SLOTS: &str = "CGROUP_FREE_SLOTS";
    pub const CGROUP_SLOTS_USED: &str = "CGROUP_SLOTS_USED";
    pub const CGROUP_LAST_SLOT: &str = "CGROUP_LAST_SLOT";
    /// Every map of the family.
    pub const MAPS: &[&str] = &[
        CGROUP_SLOTS,
        CGROUP_STATS,
        CGROUP_FREE_SLOTS,
        CGROUP_SLOTS_USED,
        CGROUP_LAST_SLOT,
    ];
}

#[cfg(target_arch = "bpf")]
pub mod programs {
    use aya_ebpf::{
        Global,
        bindings::BPF_NOEXIST,
        macros::map,
        maps::{Array, HashMap, PerCpuArray, Stack},
    };

    use super::{
        BPF_F_MMAPABLE, CGROUP_STATS_ENTRIES, CgroupSlot, CgroupStats, SLOT_FREED, SLOT_NEVER_USED,
    };
    use crate::probes::histogram::POD_NATIVE_BUCKETS;
    pub use crate::probes::kernel::atomic_add as add;

    /// Counts one value in a per-pod native histogram (a zero bucket and its buckets, in a
    /// map entry every CPU adds to) at `slot` (`histogram::pod_native_slot`). The index is
    /// checked as it is used, so that every verifier sees its bounds.
    ///
    /// # Safety
    /// Both pointers point into a live map entry.
    #[inline(always)]
    pub unsafe fn count_native(zero: *mut u64, buckets: *mut [u64; POD_NATIVE_BUCKETS], slot: u64) {
        let index = slot.wrapping_sub(1);
        // SAFETY: the caller's entry; the index is below the buckets' length.
        unsafe {
            if slot == 0 {
                add(zero, 1);
            } else if index < POD_NATIVE_BUCKETS as u64 {
                add(buckets.cast::<u64>().add(index as usize), 1);
            }
        }
    }

    #[unsafe(no_mangle)]
    static CGROUP_ACCOUNTING: Global<u32> = Global::new(0);

    /// Whether the programs should account per cgroup.
    #[inline(always)]
    pub fn enabled() -> bool {
        CGROUP_ACCOUNTING.load() != 0
    }

    #[unsafe(no_mangle)]
    static CGROUP_BLOCKED_HISTOGRAM: Global<u32> = Global::new(0);

    /// Whether the blocked times go into each cgroup's histogram too.
    #[inline(always)]
    pub fn blocked_histogram() -> bool {
        CGROUP_BLOCKED_HISTOGRAM.load() != 0
    }

    /// Cgroup id to its slot in `CGROUP_STATS`.
    #[map]
    static CGROUP_SLOTS: HashMap<u64, u32> = HashMap::with_max_entries(CGROUP_STATS_ENTRIES, 0);

    #[map]
    static CGROUP_STATS: Array<CgroupSlot> =
        Array::with_max_entries(CGROUP_STATS_ENTRIES, BPF_F_MMAPABLE);

    /// Slots no cgroup holds, with zero totals: the agent fills it at load (slot 0 on top)
    /// and gives back slots.
    #[map]
    static CGROUP_FREE_SLOTS: Stack<u32> = Stack::with_max_entries(CGROUP_STATS_ENTRIES, 0);

    /// How many slots have ever been used: they are `0..n` (see the module's doc).
    #[map]
    static CGROUP_SLOTS_USED: Array<u64> = Array::with_max_entries(1, 0);

    /// The cgroup this CPU charged last, and its slot: most charges on a CPU are to the
    /// cgroup charged before (the task that leaves a CPU is often the one that left it
    /// last), and checking that costs two array reads where looking the id up in
    /// `CGROUP_SLOTS` hashes it and walks a bucket.
    #[map]
    static CGROUP_LAST_SLOT: PerCpuArray<LastSlot> = PerCpuArray::with_max_entries(1, 0);

    #[repr(C)]
    struct LastSlot {
        cgroup_id: u64,
        slot: u32,
        _pad: u32,
    }

    /// The totals of `cgroup_id`, in a slot claimed on first use; `None` when no slot is
    /// free.
    #[inline(always)]
    pub fn stats(cgroup_id: u64) -> Option<*mut CgroupStats> {
        let last = CGROUP_LAST_SLOT.get_ptr_mut(0);
        // Either way gives the slot's number; one lookup of it below gives the pointer.
        let slot = match last.and_then(|last| last_slot(last, cgroup_id)) {
            Some(slot) => slot,
            None => {
                let slot = match CGROUP_SLOTS.get_ptr(cgroup_id) {
                    // SAFETY: a map value the kernel returned, valid for this program run.
                    Some(slot) => unsafe { *slot },
                    None => claim(cgroup_id)?,
                };
                if let Some(last) = last {
                    // SAFETY: this CPU's entry.
                    unsafe {
                        (*last).cgroup_id = cgroup_id;
                        (*last).slot = slot;
                    }
                }
                slot
            }
        };
        let s = CGROUP_STATS.get_ptr_mut(slot)?;
        // SAFETY: an array element the kernel returned.
        Some(unsafe { &raw mut (*s).stats })
    }

    /// The slot this CPU charged last, if it was `cgroup_id`'s and still is.
    #[inline(always)]
    fn last_slot(last: *mut LastSlot, cgroup_id: u64) -> Option<u32> {
        // SAFETY: this CPU's entry. A program that interrupts this one between the two
        // writes in `stats` may leave an id with another id's slot: the check finds that.
        let (id, slot) = unsafe { ((*last).cgroup_id, (*last).slot) };
        // The two marks of a free slot are no cgroup's id: never a hit.
        if id != cgroup_id || cgroup_id == SLOT_NEVER_USED || cgroup_id == SLOT_FREED {
            return None;
        }
        let s = CGROUP_STATS.get_ptr(slot)?;
        // Still this id's slot: a slot is named for one id only once it is that id's, and
        // marked freed when the agent takes it back.
        // SAFETY: an array element the kernel returned.
        (unsafe { core::ptr::read_volatile(&raw const (*s).cgroup_id) } == cgroup_id)
            .then_some(slot)
    }

    /// Gives `cgroup_id` a free slot; if another CPU gave it one first, that one.
    #[inline(always)]
    fn claim(cgroup_id: u64) -> Option<u32> {
        let slot = CGROUP_FREE_SLOTS.pop().ok()??;
        let s = CGROUP_STATS.get_ptr_mut(slot)?;
        // SAFETY: an array element the kernel returned, this program's alone while it holds
        // the slot.
        let id = unsafe { &raw mut (*s).cgroup_id };
        // Never-used slots come off the stack in order (0, 1, 2, ...), each once: counting
        // them here says which slots were ever used.
        // SAFETY: as above.
        if unsafe { core::ptr::read_volatile(id) } == SLOT_NEVER_USED
            && let Some(used) = CGROUP_SLOTS_USED.get_ptr_mut(0)
        {
            add(used, 1);
        }
        if CGROUP_SLOTS
            .insert(cgroup_id, slot, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            // Named only once it is this id's, so the agent never sees two slots with one
            // id.
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(id, cgroup_id) };
            return Some(slot);
        }
        // Another CPU gave the id a slot first: this one goes back on the stack, counted
        // (so marked used), with zero totals.
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(id, SLOT_FREED) };
        let _ = CGROUP_FREE_SLOTS.push(slot, 0);
        // SAFETY: a map value the kernel returned, valid for this program run.
        CGROUP_SLOTS.get_ptr(cgroup_id).map(|slot| unsafe { *slot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field different: 1 to 8, 9 for the zero bucket, then 10, 11, ...; the blocked
    /// histogram's zero bucket 100, its buckets 101, 102, ...
    const ONE_TO_EIGHT: CgroupStats = CgroupStats {
        cpu_ns: 1,
        runqueue_wait_ns: 2,
        voluntary_switches: 3,
        involuntary_switches: 4,
        reclaim_direct_ns: 5,
        reclaim_memcg_ns: 6,
        blocked_io_ns: 7,
        blocked_other_ns: 8,
        runqueue_wait_zero: 9,
        runqueue_wait_buckets: counting_from(10),
        blocked_zero: 100,
        blocked_buckets: counting_from(101),
    };

    const fn counting_from(first: u64) -> [u64; POD_NATIVE_BUCKETS] {
        let mut b = [0; POD_NATIVE_BUCKETS];
        let mut i = 0;
        while i < POD_NATIVE_BUCKETS {
            b[i] = first + i as u64;
            i += 1;
        }
        b
    }

    #[test]
    fn add_assign_adds_every_field() {
        let one = ONE_TO_EIGHT;
        let mut sum = one;
        sum += one;
        assert_eq!(
            sum,
            CgroupStats {
                cpu_ns: 2,
                runqueue_wait_ns: 4,
                voluntary_switches: 6,
                involuntary_switches: 8,
                reclaim_direct_ns: 10,
                reclaim_memcg_ns: 12,
                blocked_io_ns: 14,
                blocked_other_ns: 16,
                runqueue_wait_zero: 18,
                runqueue_wait_buckets: core::array::from_fn(|i| 2 * (10 + i as u64)),
                blocked_zero: 200,
                blocked_buckets: core::array::from_fn(|i| 2 * (101 + i as u64)),
            }
        );
    }

    #[test]
    fn since_subtracts_every_field_and_never_wraps() {
        let earlier = ONE_TO_EIGHT;
        let mut later = earlier;
        later += earlier;
        assert_eq!(later.since(earlier), earlier);
        assert_eq!(earlier.since(later), CgroupStats::default());
    }
}
