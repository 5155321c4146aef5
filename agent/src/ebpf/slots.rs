//! The per-cgroup totals as the programs keep them (`agent_ebpf::cgroup`): an array of
//! slots that this process maps into its memory, a hash of cgroup id to slot, and a queue
//! of free slots.
//!
//! A scrape reads every live slot straight from memory: no system call, where reading a
//! hash map of 4,096 cgroups cost the kernel some 400 ns per entry (a third of a scrape at
//! that size). The programs add to the slots with atomic adds while they are read; each
//! field is read as one aligned 64-bit load, so it is never torn, and a row's fields may be
//! a few nanoseconds apart, as with any map read.
//!
//! Slots are given back by the upkeep task, in two steps. [`CgroupSlots::take`] unmaps a
//! gone cgroup's id (so a late update claims a new slot, seen as a recreated entry) and
//! returns its totals. A program that looked the slot up just before may still add to it,
//! so the slot waits one upkeep round; [`CgroupSlots::release_waiting`] then returns what
//! was added since (the caller adds it to the cgroup's final values), zeroes the slot and
//! puts it back in the free queue. A program runs for microseconds; a round is 100 ms at
//! the least.
use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use agent_ebpf::cgroup::{CgroupSlot, CgroupStats};
use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap, MapData, Queue},
};

use super::batch;

/// 64-bit words per slot: the id, then the six totals.
const WORDS: usize = size_of::<CgroupSlot>() / 8;
const _: () = {
    use std::mem::offset_of;
    assert!(size_of::<CgroupSlot>() == WORDS * 8 && WORDS == 7);
    assert!(offset_of!(CgroupSlot, cgroup_id) == 0 && offset_of!(CgroupSlot, stats) == 8);
    assert!(offset_of!(CgroupStats, cpu_ns) == 0);
    assert!(offset_of!(CgroupStats, runqueue_wait_ns) == 8);
    assert!(offset_of!(CgroupStats, voluntary_switches) == 16);
    assert!(offset_of!(CgroupStats, involuntary_switches) == 24);
    assert!(offset_of!(CgroupStats, reclaim_direct_ns) == 32);
    assert!(offset_of!(CgroupStats, reclaim_memcg_ns) == 40);
};

/// The three maps behind the per-cgroup totals.
pub struct CgroupSlots {
    ids: HashMap<MapData, u64, u32>,
    free: Queue<MapData, u32>,
    view: SlotView,
    /// Slots taken from gone cgroups, waiting a round before they are reused.
    waiting: Vec<Waiting>,
}

/// A slot taken by [`CgroupSlots::take`]: whose it was, and its totals when taken.
struct Waiting {
    slot: u32,
    cgroup_id: u64,
    taken: CgroupStats,
}

impl CgroupSlots {
    /// Puts every slot in the free queue. Done before the programs are attached: until
    /// then, a program would find no free slot and count its update as lost.
    pub fn fill_free(ebpf: &mut Ebpf) -> Result<(), String> {
        let slots = ebpf
            .map("CGROUP_STATS")
            .ok_or_else(|| "map CGROUP_STATS missing from the eBPF object (a build bug)".to_owned())
            .and_then(|m| Array::<_, CgroupSlot>::try_from(m).map_err(|e| e.to_string()))?
            .len();
        let mut free = ebpf
            .map_mut("CGROUP_FREE_SLOTS")
            .ok_or_else(|| {
                "map CGROUP_FREE_SLOTS missing from the eBPF object (a build bug)".to_owned()
            })
            .and_then(|m| Queue::<_, u32>::try_from(m).map_err(|e| e.to_string()))?;
        for slot in 0..slots {
            free.push(slot, 0)
                .map_err(|e| format!("CGROUP_FREE_SLOTS: filling slot {slot}: {e}"))?;
        }
        Ok(())
    }

    /// Maps the slot array (its free queue filled by [`Self::fill_free`]).
    pub fn new(
        ids: HashMap<MapData, u64, u32>,
        free: Queue<MapData, u32>,
        stats: Array<MapData, CgroupSlot>,
    ) -> Result<Self, String> {
        Ok(Self {
            ids,
            free,
            view: SlotView::new(stats)?,
            waiting: Vec::new(),
        })
    }

    pub fn capacity(&self) -> u32 {
        self.view.slots
    }

    /// (cgroup id, totals) of every live slot, in slot order.
    pub fn entries(&self) -> Vec<(u64, CgroupStats)> {
        (0..self.view.slots)
            .filter(|&slot| self.view.word(slot, 0).load(Ordering::Relaxed) != 0)
            .map(|slot| self.view.read(slot))
            .filter(|&(id, _)| id != 0)
            .collect()
    }

    /// Unmaps `cgroup_id` and returns its totals, or `None` if it has no slot. Its slot
    /// waits for [`Self::release_waiting`].
    pub fn take(&mut self, cgroup_id: u64) -> Option<CgroupStats> {
        let slot = batch::take(&mut self.ids, &cgroup_id)?;
        // Not live any more: scrapes skip it from here on.
        self.view.word(slot, 0).store(0, Ordering::Relaxed);
        let (_, taken) = self.view.read(slot);
        self.waiting.push(Waiting {
            slot,
            cgroup_id,
            taken,
        });
        Some(taken)
    }

    /// Gives back the slots taken before this call, and returns what programs added to
    /// them after they were taken (by cgroup id, only where non-zero).
    pub fn release_waiting(&mut self) -> Vec<(u64, CgroupStats)> {
        let mut late = Vec::new();
        for w in std::mem::take(&mut self.waiting) {
            let (_, now) = self.view.read(w.slot);
            let added = now.since(w.taken);
            if added != CgroupStats::default() {
                late.push((w.cgroup_id, added));
            }
            for word in 0..WORDS {
                self.view.word(w.slot, word).store(0, Ordering::Relaxed);
            }
            if let Err(e) = self.free.push(w.slot, 0) {
                // Only if something else filled the queue; the slot is lost, not reused.
                tracing::warn!(slot = w.slot, "CGROUP_FREE_SLOTS: giving a slot back: {e}");
            }
        }
        late
    }
}

/// The slot array, mapped shared into this process.
struct SlotView {
    base: NonNull<AtomicU64>,
    len: usize,
    slots: u32,
    /// Keeps the map's fd open while it is mapped.
    _map: Array<MapData, CgroupSlot>,
}

// SAFETY: the mapping is only reached through atomics, and lives as long as the view.
unsafe impl Send for SlotView {}
// SAFETY: as above.
unsafe impl Sync for SlotView {}

impl SlotView {
    fn new(map: Array<MapData, CgroupSlot>) -> Result<Self, String> {
        let slots = map.len();
        let bytes = slots as usize * size_of::<CgroupSlot>();
        // SAFETY: a fresh mapping of the map's whole value area (an mmap-able array's
        // values start at offset 0 of its fd), checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.map().fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "CGROUP_STATS: mapping it into memory: {} (needs BPF_F_MMAPABLE, kernel 5.5+)",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Self {
            base: NonNull::new(ptr.cast()).ok_or("CGROUP_STATS: mapped at address 0")?,
            len: bytes,
            slots,
            _map: map,
        })
    }

    /// Word `word` of slot `slot` (0 is the id).
    fn word(&self, slot: u32, word: usize) -> &AtomicU64 {
        assert!(slot < self.slots && word < WORDS, "slot {slot} word {word}");
        // SAFETY: in bounds (checked above) of a mapping that lives as long as `self`,
        // 8-byte aligned (page-aligned base, 56-byte slots), and only ever accessed as
        // atomics here and by the kernel's atomic adds.
        unsafe { &*self.base.as_ptr().add(slot as usize * WORDS + word) }
    }

    fn read(&self, slot: u32) -> (u64, CgroupStats) {
        let w = |i| self.word(slot, i).load(Ordering::Relaxed);
        (
            w(0),
            CgroupStats {
                cpu_ns: w(1),
                runqueue_wait_ns: w(2),
                voluntary_switches: w(3),
                involuntary_switches: w(4),
                reclaim_direct_ns: w(5),
                reclaim_memcg_ns: w(6),
            },
        )
    }
}

impl Drop for SlotView {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
