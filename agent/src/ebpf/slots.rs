//! The per-cgroup totals as the programs keep them (`agent_ebpf::cgroup`): an array of
//! slots that this process maps into its memory, a hash of cgroup id to slot, a stack of
//! free slots, and how many slots were ever used.
//!
//! A scrape reads the live slots straight from memory, where reading a hash map of 4,096
//! cgroups cost the kernel some 400 ns per entry (a third of a scrape at that size). It
//! reads only the slots ever used (one system call says how many), so the pages of the
//! array this process touches, and keeps in its RSS, are those of the most cgroups live at
//! once, not the whole array. The programs add to the slots with atomic adds while they are read; each
//! field is read as one aligned 64-bit load, so it is never torn, and a row's fields may be
//! a few nanoseconds apart, as with any map read.
//!
//! Slots are given back by the upkeep task, in two steps. [`CgroupSlots::take`] removes a
//! gone cgroup's `CGROUP_SLOTS` entry (so a late update claims a new slot, seen as a
//! recreated entry) and returns its values. A program that looked the slot up just before
//! may still add to it, so the slot waits: the next upkeep round that comes at least
//! [`MIN_WAIT`] later, [`CgroupSlots::release_waiting`] zeroes it, returns what was added
//! since (the caller adds it to the cgroup's final values) and puts it back on the free
//! stack. A program runs for microseconds.
use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use agent_ebpf::{
    cgroup::{CgroupSlot, CgroupStats, SLOT_FREED, SLOT_NEVER_USED, names},
    histogram::POD_NATIVE_BUCKETS,
};
use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap, MapData, Stack},
};

use super::batch;

/// How long a taken slot waits before it is zeroed and given back.
pub const MIN_WAIT: Duration = Duration::from_secs(1);

/// 64-bit words per slot: the id, then the totals (eight), then two native histograms
/// (the run-queue waits' and the blocked times', each a zero bucket and its buckets).
const WORDS: usize = size_of::<CgroupSlot>() / 8;
/// The first word of the run-queue histogram (its zero bucket), after the id and totals.
const HISTOGRAM_WORD: usize = 9;
/// The first word of the blocked-time histogram.
const BLOCKED_HISTOGRAM_WORD: usize = HISTOGRAM_WORD + 1 + POD_NATIVE_BUCKETS;
const _: () = {
    use std::mem::offset_of;
    assert!(size_of::<CgroupSlot>() == WORDS * 8);
    assert!(WORDS == BLOCKED_HISTOGRAM_WORD + 1 + POD_NATIVE_BUCKETS);
    assert!(offset_of!(CgroupStats, runqueue_wait_zero) == 64);
    assert!(offset_of!(CgroupStats, runqueue_wait_buckets) == 72);
    assert!(offset_of!(CgroupStats, blocked_zero) == (BLOCKED_HISTOGRAM_WORD - 1) * 8);
    assert!(offset_of!(CgroupStats, blocked_buckets) == BLOCKED_HISTOGRAM_WORD * 8);
    assert!(offset_of!(CgroupSlot, cgroup_id) == 0 && offset_of!(CgroupSlot, stats) == 8);
    assert!(offset_of!(CgroupStats, cpu_ns) == 0);
    assert!(offset_of!(CgroupStats, runqueue_wait_ns) == 8);
    assert!(offset_of!(CgroupStats, voluntary_switches) == 16);
    assert!(offset_of!(CgroupStats, involuntary_switches) == 24);
    assert!(offset_of!(CgroupStats, reclaim_direct_ns) == 32);
    assert!(offset_of!(CgroupStats, reclaim_memcg_ns) == 40);
};

/// The eight totals of a slot (its words 1 to 8, in [`CgroupStats`] field order): what every
/// format exports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupTotals {
    pub cpu_ns: u64,
    pub runqueue_wait_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub reclaim_direct_ns: u64,
    pub reclaim_memcg_ns: u64,
    pub blocked_io_ns: u64,
    pub blocked_other_ns: u64,
}

/// A slot's two native histograms (see [`CgroupStats`]): only a protobuf scrape exports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodHistograms {
    pub runqueue_wait_zero: u64,
    pub runqueue_wait_buckets: [u64; POD_NATIVE_BUCKETS],
    pub blocked_zero: u64,
    pub blocked_buckets: [u64; POD_NATIVE_BUCKETS],
}

/// A cgroup's slot as user space carries it: the totals, and the histograms only when they
/// were read (a protobuf scrape that exports one; a slot taken, whole). Boxed, so that the
/// values of a text scrape's rows and of upkeep's copies are 72 bytes each rather than the
/// whole slot's 600: copying those made a text scrape of 4,096 idle pods half again as dear.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupValues {
    pub totals: CgroupTotals,
    pub histograms: Option<Box<PodHistograms>>,
}

impl From<CgroupStats> for CgroupValues {
    fn from(stats: CgroupStats) -> Self {
        // Destructured, so that a new field fails to compile until it is carried here too.
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
        } = stats;
        Self {
            totals: CgroupTotals {
                cpu_ns,
                runqueue_wait_ns,
                voluntary_switches,
                involuntary_switches,
                reclaim_direct_ns,
                reclaim_memcg_ns,
                blocked_io_ns,
                blocked_other_ns,
            },
            histograms: Some(Box::new(PodHistograms {
                runqueue_wait_zero,
                runqueue_wait_buckets,
                blocked_zero,
                blocked_buckets,
            })),
        }
    }
}

impl std::ops::AddAssign for CgroupTotals {
    fn add_assign(&mut self, rhs: Self) {
        let CgroupTotals {
            cpu_ns,
            runqueue_wait_ns,
            voluntary_switches,
            involuntary_switches,
            reclaim_direct_ns,
            reclaim_memcg_ns,
            blocked_io_ns,
            blocked_other_ns,
        } = rhs;
        self.cpu_ns += cpu_ns;
        self.runqueue_wait_ns += runqueue_wait_ns;
        self.voluntary_switches += voluntary_switches;
        self.involuntary_switches += involuntary_switches;
        self.reclaim_direct_ns += reclaim_direct_ns;
        self.reclaim_memcg_ns += reclaim_memcg_ns;
        self.blocked_io_ns += blocked_io_ns;
        self.blocked_other_ns += blocked_other_ns;
    }
}

impl std::ops::AddAssign for PodHistograms {
    fn add_assign(&mut self, rhs: Self) {
        let PodHistograms {
            runqueue_wait_zero,
            runqueue_wait_buckets,
            blocked_zero,
            blocked_buckets,
        } = rhs;
        let add = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        self.runqueue_wait_zero += runqueue_wait_zero;
        add(&mut self.runqueue_wait_buckets, &runqueue_wait_buckets);
        self.blocked_zero += blocked_zero;
        add(&mut self.blocked_buckets, &blocked_buckets);
    }
}

/// Histograms not read count as zero: a sum has them if either side does.
impl std::ops::AddAssign for CgroupValues {
    fn add_assign(&mut self, rhs: Self) {
        self.totals += rhs.totals;
        match (&mut self.histograms, rhs.histograms) {
            (Some(mine), Some(theirs)) => **mine += *theirs,
            (mine @ None, theirs @ Some(_)) => *mine = theirs,
            (_, None) => {}
        }
    }
}

/// The four maps behind the per-cgroup totals.
pub struct CgroupSlots {
    ids: HashMap<MapData, u64, u32>,
    free: Stack<MapData, u32>,
    /// How many slots were ever used: slots `0..n`.
    used: Array<MapData, u64>,
    view: SlotView,
    /// The words of a slot a protobuf scrape reads: the totals and the histograms that are
    /// exported ([`Self::reading_histograms`]).
    protobuf_words: usize,
    /// Slots taken from gone cgroups, waiting at least [`MIN_WAIT`] before they are reused.
    waiting: Vec<Waiting>,
}

/// A slot taken by [`CgroupSlots::take`]: whose it was, its values and when, and whether
/// what reaches it late is wanted (not for an excluded cgroup).
struct Waiting {
    slot: u32,
    cgroup_id: u64,
    taken: CgroupStats,
    at: Instant,
    keep_late: bool,
}

impl CgroupSlots {
    /// Puts every slot on the free stack, slot 0 on top. Done before the programs are
    /// attached: until then, a program would find no free slot and count its update as
    /// lost.
    pub fn fill_free(ebpf: &mut Ebpf) -> Result<(), String> {
        let missing = |name: &str| format!("map {name} missing from the eBPF object (a build bug)");
        let slots = ebpf
            .map(names::CGROUP_STATS)
            .ok_or_else(|| missing(names::CGROUP_STATS))
            .and_then(|m| Array::<_, CgroupSlot>::try_from(m).map_err(|e| e.to_string()))?
            .len();
        let mut free = ebpf
            .map_mut(names::CGROUP_FREE_SLOTS)
            .ok_or_else(|| missing(names::CGROUP_FREE_SLOTS))
            .and_then(|m| Stack::<_, u32>::try_from(m).map_err(|e| e.to_string()))?;
        for slot in (0..slots).rev() {
            free.push(slot, 0)
                .map_err(|e| format!("CGROUP_FREE_SLOTS: filling slot {slot}: {e}"))?;
        }
        Ok(())
    }

    /// The four maps, the free stack filled by [`Self::fill_free`]. The array is mapped
    /// into memory as its slots come into use, by [`Self::entries`].
    pub fn new(
        ids: HashMap<MapData, u64, u32>,
        free: Stack<MapData, u32>,
        used: Array<MapData, u64>,
        stats: Array<MapData, CgroupSlot>,
    ) -> Self {
        Self {
            ids,
            free,
            used,
            view: SlotView::new(stats),
            protobuf_words: WORDS,
            waiting: Vec::new(),
        }
    }

    /// Which native histograms a protobuf scrape reads (by default both). A slot is read
    /// from its first word on, so the blocked-time histogram's words are left zero when it
    /// is not exported, and both when neither is; with only `blocked` on, the run-queue
    /// histogram's are read too.
    pub fn reading_histograms(mut self, runqueue: bool, blocked: bool) -> Self {
        self.protobuf_words = match (runqueue, blocked) {
            (_, true) => WORDS,
            (true, false) => BLOCKED_HISTOGRAM_WORD,
            (false, false) => HISTOGRAM_WORD,
        };
        self
    }

    pub fn capacity(&self) -> u32 {
        self.view.slots
    }

    /// (cgroup id, values) of every live slot, in slot order. The histograms only in a
    /// protobuf scrape, the one place they go: most of a slot's words, that a text scrape
    /// and the upkeep round would read and carry for nothing. (Upkeep only tells moving
    /// entries from still ones with these; what it keeps of a gone cgroup comes from
    /// [`Self::take`], whole.)
    pub fn entries(&mut self) -> Result<Vec<(u64, CgroupValues)>, String> {
        let used = match self.used.get(&0, 0) {
            Ok(n) => n.min(u64::from(self.view.slots)) as u32,
            Err(e) => {
                // Never expected; reading them all is right, only dearer.
                tracing::warn!("CGROUP_SLOTS_USED: {e}");
                self.view.slots
            }
        };
        self.view.cover(used)?;
        let words = if crate::render::protobuf() {
            self.protobuf_words
        } else {
            HISTOGRAM_WORD
        };
        Ok(self.view.live(used, words))
    }

    /// Removes `cgroup_id`'s slot entry and returns its values (histograms too), or `None` if it has no
    /// slot. The slot waits for [`Self::release_waiting`], which reports what reached it
    /// late if `keep_late`.
    pub fn take(&mut self, cgroup_id: u64, keep_late: bool) -> Option<CgroupValues> {
        let slot = batch::take(&mut self.ids, &cgroup_id)?;
        // A slot from the kernel's map, normally one a scan has just found; anything else
        // (the map changed from outside) is left alone rather than trusted.
        if let Err(e) = self.view.cover(slot.saturating_add(1)) {
            tracing::warn!(slot, "CGROUP_SLOTS: {e}");
        }
        if slot >= self.view.mapped() {
            tracing::warn!(slot, cgroup_id, "CGROUP_SLOTS: no such slot");
            return None;
        }
        // Not live any more: scrapes skip it from here on.
        self.view.word(slot, 0).store(SLOT_FREED, Ordering::Relaxed);
        let (_, taken) = self.view.read(slot, WORDS);
        self.waiting.push(Waiting {
            slot,
            cgroup_id,
            taken,
            at: Instant::now(),
            keep_late,
        });
        Some(taken.into())
    }

    /// Slots taken and not given back yet.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Gives back the slots taken at least [`MIN_WAIT`] ago, and returns what programs
    /// added to them after they were taken (by cgroup id, only where non-zero and wanted).
    pub fn release_waiting(&mut self) -> Vec<(u64, CgroupValues)> {
        let mut late = Vec::new();
        let (ready, waiting) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.at.elapsed() >= MIN_WAIT);
        self.waiting = waiting;
        for w in ready {
            let added = self.view.zero(w.slot).since(w.taken);
            if w.keep_late && added != CgroupStats::default() {
                late.push((w.cgroup_id, added.into()));
            }
            if let Err(e) = self.free.push(w.slot, 0) {
                // Only if something else filled the stack; the slot is lost, not reused.
                tracing::warn!(slot = w.slot, "CGROUP_FREE_SLOTS: giving a slot back: {e}");
            }
        }
        late
    }
}

/// The slot array, mapped shared into this process: only its first slots, as many as have
/// been used. The kernel maps every page of an mmap-able array's mapping up front, and they
/// count in this process's RSS; the slots never used are not worth that.
struct SlotView {
    /// The map, whose fd is mapped (`None`: anonymous memory, in tests).
    map: Option<Array<MapData, CgroupSlot>>,
    /// Slots in the array.
    slots: u32,
    mapping: Option<Mapping>,
}

/// One mapping of the array's first `slots` slots.
struct Mapping {
    base: NonNull<AtomicU64>,
    len: usize,
    slots: u32,
}

// SAFETY: the mapping is only reached through atomics, and lives as long as its owner.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: a mapping made by `SlotView`, not reachable after this.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

impl SlotView {
    /// The array, none of it mapped yet (see [`Self::cover`]).
    fn new(map: Array<MapData, CgroupSlot>) -> Self {
        Self {
            slots: map.len(),
            map: Some(map),
            mapping: None,
        }
    }

    /// `slots` slots of zeroed anonymous memory, all mapped, for tests.
    #[cfg(test)]
    fn anonymous(slots: u32) -> Self {
        let len = slots as usize * size_of::<CgroupSlot>();
        // SAFETY: a fresh private anonymous mapping.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        Self {
            map: None,
            slots,
            mapping: Some(Mapping {
                base: NonNull::new(ptr.cast()).unwrap(),
                len,
                slots,
            }),
        }
    }

    /// Slots mapped, from the first.
    fn mapped(&self) -> u32 {
        self.mapping.as_ref().map_or(0, |m| m.slots)
    }

    /// Maps at least the first `n` slots (whole pages of them), in place of a smaller
    /// mapping. Mappings only grow: a slot once used is read until the agent stops.
    fn cover(&mut self, n: u32) -> Result<(), String> {
        let n = n.min(self.slots);
        if n <= self.mapped() {
            return Ok(());
        }
        let Some(map) = &self.map else {
            return Ok(());
        };
        let whole = self.slots as usize * size_of::<CgroupSlot>();
        let len = (n as usize * size_of::<CgroupSlot>())
            .next_multiple_of(page_size())
            .min(whole);
        // SAFETY: a fresh shared mapping of the start of the map's value area (an
        // mmap-able array's values start at offset 0 of its fd), checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.map().fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "CGROUP_STATS: mapping {len} bytes of it into memory: {} (needs BPF_F_MMAPABLE, kernel 5.5+)",
                std::io::Error::last_os_error()
            ));
        }
        let base = NonNull::new(ptr.cast()).ok_or("CGROUP_STATS: mapped at address 0")?;
        // The old mapping, if any, is unmapped as it is dropped here.
        self.mapping = Some(Mapping {
            base,
            len,
            slots: (len / size_of::<CgroupSlot>()) as u32,
        });
        Ok(())
    }

    /// Slot `slot`'s words (word 0 is the id); the slot must be mapped. One bounds check a
    /// slot: checked a word at a time, reading 4,096 slots' histograms was a twentieth of a
    /// protobuf scrape.
    fn words(&self, slot: u32) -> &[AtomicU64; WORDS] {
        let m = self
            .mapping
            .as_ref()
            .filter(|m| slot < m.slots)
            .unwrap_or_else(|| panic!("slot {slot} is not mapped"));
        // SAFETY: in bounds (checked above) of a mapping that lives as long as `self`
        // borrows it, 8-byte aligned (page-aligned base, slots of whole words), and only ever
        // accessed as atomics here and by the kernel's atomic adds.
        unsafe { &*m.base.as_ptr().add(slot as usize * WORDS).cast() }
    }

    /// Word `word` of slot `slot` (0 is the id), which must be mapped.
    fn word(&self, slot: u32, word: usize) -> &AtomicU64 {
        &self.words(slot)[word]
    }

    /// Word `i` of a slot's `words`, if `i` is among the first `read` of them; else 0.
    fn read_word(words: &[AtomicU64; WORDS], read: usize, i: usize) -> u64 {
        if i < read {
            words[i].load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// A slot's id and totals from its first `words` words (the others left zero).
    fn read(&self, slot: u32, words: usize) -> (u64, CgroupStats) {
        let slot = self.words(slot);
        let w = |i| Self::read_word(slot, words, i);
        (w(0), slot_stats(w))
    }

    /// (cgroup id, values) of the live slots among the first `n` (mapped ones), read from
    /// their first `words` words: the histograms only if `words` reaches them, those past
    /// `words` left zero.
    fn live(&self, n: u32, words: usize) -> Vec<(u64, CgroupValues)> {
        let n = n.min(self.mapped());
        // Room for every slot at once: grown as it fills, the vector of 4,096 slots was
        // copied a dozen times.
        let mut live = Vec::with_capacity(n as usize);
        for slot in 0..n {
            let slot = self.words(slot);
            let id = slot[0].load(Ordering::Relaxed);
            if id == SLOT_NEVER_USED || id == SLOT_FREED {
                continue;
            }
            let w = |i| Self::read_word(slot, words, i);
            live.push((
                id,
                CgroupValues {
                    totals: slot_totals(w),
                    histograms: (words > HISTOGRAM_WORD).then(|| Box::new(slot_histograms(w))),
                },
            ));
        }
        live
    }

    /// Zeroes slot `slot`'s totals, marks it freed, and returns the totals it had: each
    /// word swapped for 0, so an add that lands meanwhile is either in the result or in the
    /// zeroed slot, never lost.
    fn zero(&self, slot: u32) -> CgroupStats {
        let words = self.words(slot);
        words[0].store(SLOT_FREED, Ordering::Relaxed);
        slot_stats(|i| words[i].swap(0, Ordering::Relaxed))
    }
}

/// A slot's totals from its words 1 to 8, as [`slot_stats`] reads them.
fn slot_totals(word: impl Fn(usize) -> u64) -> CgroupTotals {
    CgroupTotals {
        cpu_ns: word(1),
        runqueue_wait_ns: word(2),
        voluntary_switches: word(3),
        involuntary_switches: word(4),
        reclaim_direct_ns: word(5),
        reclaim_memcg_ns: word(6),
        blocked_io_ns: word(7),
        blocked_other_ns: word(8),
    }
}

/// A slot's histograms from its words [`HISTOGRAM_WORD`] on, as [`slot_stats`] reads them.
fn slot_histograms(word: impl Fn(usize) -> u64) -> PodHistograms {
    PodHistograms {
        runqueue_wait_zero: word(HISTOGRAM_WORD),
        runqueue_wait_buckets: std::array::from_fn(|i| word(HISTOGRAM_WORD + 1 + i)),
        blocked_zero: word(BLOCKED_HISTOGRAM_WORD),
        blocked_buckets: std::array::from_fn(|i| word(BLOCKED_HISTOGRAM_WORD + 1 + i)),
    }
}

/// A slot's whole `CgroupStats` from its words 1 on, in field order.
fn slot_stats(word: impl Fn(usize) -> u64) -> CgroupStats {
    CgroupStats {
        cpu_ns: word(1),
        runqueue_wait_ns: word(2),
        voluntary_switches: word(3),
        involuntary_switches: word(4),
        reclaim_direct_ns: word(5),
        reclaim_memcg_ns: word(6),
        blocked_io_ns: word(7),
        blocked_other_ns: word(8),
        runqueue_wait_zero: word(HISTOGRAM_WORD),
        runqueue_wait_buckets: std::array::from_fn(|i| word(HISTOGRAM_WORD + 1 + i)),
        blocked_zero: word(BLOCKED_HISTOGRAM_WORD),
        blocked_buckets: std::array::from_fn(|i| word(BLOCKED_HISTOGRAM_WORD + 1 + i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(view: &SlotView, slot: u32, cpu_ns: u64, reclaim_memcg_ns: u64) {
        view.word(slot, 1).fetch_add(cpu_ns, Ordering::Relaxed);
        view.word(slot, 6)
            .fetch_add(reclaim_memcg_ns, Ordering::Relaxed);
    }

    #[test]
    fn words_land_in_their_fields_and_zero_returns_what_was_there() {
        let view = SlotView::anonymous(3);
        view.word(2, 0).store(77, Ordering::Relaxed);
        add(&view, 2, 5, 9);
        let (id, stats) = view.read(2, WORDS);
        assert_eq!(id, 77);
        assert_eq!((stats.cpu_ns, stats.reclaim_memcg_ns), (5, 9));
        assert_eq!(
            view.read(1, WORDS),
            (0, CgroupStats::default()),
            "neighbours untouched"
        );
        // What a taken slot gained since, then a zeroed slot for the next cgroup.
        let taken = stats;
        add(&view, 2, 1, 0);
        let late = view.zero(2).since(taken);
        assert_eq!(
            late,
            CgroupStats {
                cpu_ns: 1,
                ..Default::default()
            }
        );
        assert_eq!(view.read(2, WORDS), (SLOT_FREED, CgroupStats::default()));
        assert!(view.live(3, WORDS).is_empty(), "a freed slot is not live");
        view.word(0, 0).store(5, Ordering::Relaxed);
        assert_eq!(
            view.live(3, WORDS),
            [(5, CgroupValues::from(CgroupStats::default()))]
        );
        assert!(
            view.live(0, WORDS).is_empty(),
            "only the slots ever used are read"
        );
        // The histograms' words only when asked for: each lands in its own field.
        view.word(0, HISTOGRAM_WORD + 3).store(7, Ordering::Relaxed);
        view.word(0, BLOCKED_HISTOGRAM_WORD)
            .store(13, Ordering::Relaxed);
        view.word(0, WORDS - 1).store(17, Ordering::Relaxed);
        view.word(0, 2).store(11, Ordering::Relaxed);
        let read = |words| {
            let [(_, values)] = &view.live(1, words)[..] else {
                panic!("one live slot")
            };
            values.clone()
        };
        let all = read(WORDS);
        let h = all.histograms.expect("read");
        assert_eq!(
            (
                h.runqueue_wait_buckets[2],
                all.totals.runqueue_wait_ns,
                h.blocked_zero,
                h.blocked_buckets[POD_NATIVE_BUCKETS - 1]
            ),
            (7, 11, 13, 17)
        );
        let runqueue_only = read(BLOCKED_HISTOGRAM_WORD).histograms.expect("read");
        assert_eq!(runqueue_only.runqueue_wait_buckets[2], 7);
        assert_eq!(
            (runqueue_only.blocked_zero, runqueue_only.blocked_buckets),
            (0, [0; POD_NATIVE_BUCKETS])
        );
        // A text scrape's read: the totals, no histograms at all.
        assert_eq!(
            read(HISTOGRAM_WORD),
            CgroupValues {
                totals: CgroupTotals {
                    runqueue_wait_ns: 11,
                    ..Default::default()
                },
                histograms: None,
            }
        );
    }

    #[test]
    fn values_add_with_histograms_not_read_as_zero() {
        let whole = |cpu_ns, bucket| {
            let mut stats = CgroupStats {
                cpu_ns,
                ..Default::default()
            };
            stats.runqueue_wait_buckets[3] = bucket;
            CgroupValues::from(stats)
        };
        let totals_only = |cpu_ns| CgroupValues {
            totals: CgroupTotals {
                cpu_ns,
                ..Default::default()
            },
            histograms: None,
        };
        // Into a row without histograms (an "other" row starts as the default).
        let mut sum = totals_only(1);
        sum += whole(2, 5);
        sum += totals_only(4);
        sum += whole(8, 6);
        assert_eq!(sum.totals.cpu_ns, 15);
        let h = sum
            .histograms
            .as_deref()
            .expect("taken from the whole ones");
        assert_eq!(h.runqueue_wait_buckets[3], 11);
        assert_eq!(
            h.runqueue_wait_buckets.iter().sum::<u64>() + h.blocked_buckets.iter().sum::<u64>(),
            11,
            "nothing else"
        );
        // Neither side read: still none.
        let mut none = totals_only(1);
        none += totals_only(2);
        assert_eq!(none, totals_only(3));
    }

    #[test]
    #[should_panic(expected = "slot 3 is not mapped")]
    fn a_slot_past_the_end_is_refused() {
        SlotView::anonymous(3).word(3, 0);
    }
}
