//! One per-cgroup kernel map with its user-space table: the upkeep sweep, the scrape's
//! read and the fill level, written once for every family that counts per cgroup.
//!
//! A family wraps its map in a [`CgroupMap`] (how to list the entries and take one out)
//! and hands it to [`PerCgroupMap`]; the loader's upkeep round sweeps every family's
//! per-cgroup maps ([`Sweep`], through `LoadedFamily::cgroup_maps`) inside the tracker's
//! round, so there is one definition of "gone" (the tracker's), one lock order (tracker,
//! then map, in the sweep and in the scrape alike) and one place where a gone cgroup's
//! values move into its final row or into "other" ([`CounterTable::upkeep`]).
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{
    cgroups::{
        table::{CgroupKey, CounterTable, GoneRows, Rows},
        tracker::{Assignment, CgroupTracker},
    },
    ebpf::family::{FillGauge, MapFill, Sweep},
    metrics::CollectError,
};

/// The kernel's default size of a per-cgroup map (`CGROUP_STATS_ENTRIES`), kept as the
/// floor of [`capacity_for`].
const MIN_CAPACITY: u32 = agent_ebpf::cgroup::CGROUP_STATS_ENTRIES;

/// Entries of a per-cgroup map for a cap on exported cgroups: room for the cap, the
/// cgroups folded into "other", and gone ones waiting for upkeep.
pub fn capacity_for(max_tracked: usize) -> u32 {
    (max_tracked.saturating_mul(4) as u32).max(MIN_CAPACITY)
}

/// A map's entries: (key, value).
pub type Entries<M> = Vec<(<M as CgroupMap>::Key, <M as CgroupMap>::Value)>;

/// A per-cgroup kernel map, as the sweep and the scrape use it.
pub trait CgroupMap: Send {
    type Key: CgroupKey<Dims: Send> + Send;
    type Value: Clone + Default + PartialEq + std::ops::AddAssign + Send;
    /// Every entry. Entries of cgroup id 0 (no owner known) are the family's own
    /// ("unknown"): the sweep never takes them.
    fn entries(&mut self) -> Result<Entries<Self>, String>;
    /// Takes a gone cgroup's entry out of the map and returns its value at that moment.
    fn take(&mut self, key: &Self::Key, assignment: Assignment) -> Option<Self::Value>;
    /// What reached entries taken earlier, now that it is safe to read (see `ebpf::slots`).
    fn late(&mut self) -> Entries<Self> {
        Vec::new()
    }
    /// Entries taken but not yet free in the kernel: they still fill the map.
    fn waiting(&self) -> usize {
        0
    }
}

/// Per-cgroup values kept in user space (read from the cgroups' files, counted from
/// events), as a per-cgroup "map" that the sweep keeps like a kernel one.
#[derive(Debug)]
pub struct UserMap<V> {
    values: rustc_hash::FxHashMap<u64, V>,
}

impl<V> Default for UserMap<V> {
    fn default() -> Self {
        Self {
            values: Default::default(),
        }
    }
}

impl<V: Clone + Default + std::ops::AddAssign> UserMap<V> {
    /// Sets cgroups' values.
    pub fn set(&mut self, values: impl IntoIterator<Item = (u64, V)>) {
        self.values.extend(values);
    }

    /// Adds to a cgroup's value (0: the family's own "unknown").
    pub fn add(&mut self, id: u64, value: V) {
        *self.values.entry(id).or_default() += value;
    }

    /// A cgroup's value.
    pub fn get(&self, id: u64) -> V {
        self.values.get(&id).cloned().unwrap_or_default()
    }
}

impl<V> CgroupMap for UserMap<V>
where
    V: Clone + Default + PartialEq + std::ops::AddAssign + Send,
{
    type Key = u64;
    type Value = V;

    fn entries(&mut self) -> Result<Entries<Self>, String> {
        Ok(self.values.iter().map(|(k, v)| (*k, v.clone())).collect())
    }

    fn take(&mut self, id: &u64, _: Assignment) -> Option<V> {
        self.values.remove(id)
    }
}

/// A scrape's view: the rows to export (tracker locked while they live) and the entries
/// without a known owner.
pub struct Scrape<'t, M: CgroupMap> {
    pub rows: Rows<'t, <M::Key as CgroupKey>::Dims, M::Value>,
    pub unknown: Entries<M>,
}

/// A per-cgroup map and its table.
pub struct PerCgroupMap<M: CgroupMap> {
    name: &'static str,
    map: Mutex<M>,
    capacity: u32,
    table: CounterTable<M::Key, M::Value>,
    tracker: Arc<CgroupTracker>,
    fill: FillGauge,
}

/// Entries split by whether their cgroup is known.
type Split<M> = (Entries<M>, Entries<M>);

impl<M: CgroupMap> PerCgroupMap<M> {
    pub fn new(name: &'static str, map: M, capacity: u32, tracker: Arc<CgroupTracker>) -> Self {
        Self {
            name,
            map: Mutex::new(map),
            capacity,
            table: CounterTable::default(),
            tracker,
            fill: FillGauge::default(),
        }
    }

    /// Keeps gone cgroups' final rows as `gone_rows` says (by default, one scrape).
    pub fn keeping_gone_rows(mut self, gone_rows: GoneRows) -> Self {
        self.table = CounterTable::new(gone_rows);
        self
    }

    fn map(&self) -> MutexGuard<'_, M> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entries(&self) -> Result<Split<M>, String> {
        let mut owned = self.map().entries()?;
        // The few entries without an owner (the slot map never has any), moved out one by
        // one: removing them in place moved every entry after the first of them, and a
        // protobuf scrape's per-pod disk entries are 300 bytes each. The owned ones' order
        // does not matter (the table sorts its rows by id); the unknown ones are put in the
        // order of their dimensions.
        let mut unknown: Entries<M> = Vec::new();
        let mut i = 0;
        while i < owned.len() {
            if owned[i].0.cgroup() == 0 {
                unknown.push(owned.swap_remove(i));
            } else {
                i += 1;
            }
        }
        unknown.sort_unstable_by_key(|(k, _)| k.dims());
        Ok((owned, unknown))
    }

    /// Reads the map and builds the rows, under the tracker lock (so that upkeep cannot
    /// move a gone cgroup's values into the table in between, see
    /// [`CounterTable::upkeep`]), and hands them to `encode`.
    pub fn scrape<R>(
        &self,
        encode: impl FnOnce(Scrape<'_, M>) -> Result<R, CollectError>,
    ) -> Result<R, CollectError> {
        let mut tracker = self.tracker.lock();
        let (owned, unknown) = self
            .entries()
            .map_err(|e| CollectError::map(self.name, e))?;
        let rows = self.table.rows(&mut tracker, owned);
        encode(Scrape { rows, unknown })
    }

    /// Changes the map itself: a user-space map (`ebpf::cgroup_files`) is filled this way.
    pub fn with_map<R>(&self, change: impl FnOnce(&mut M) -> R) -> R {
        change(&mut self.map())
    }

    /// The map's fill level, as the last sweep counted it.
    pub fn fill(&self) -> MapFill {
        self.fill.fill(self.name, self.capacity)
    }
}

impl<M: CgroupMap> Sweep for PerCgroupMap<M> {
    fn sweep(&self) {
        let read_at = std::time::Instant::now();
        let late = self.map().late();
        let (owned, unknown) = match self.entries() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(map = self.name, "per-cgroup upkeep: {e}");
                return;
            }
        };
        let live = (owned.len() + unknown.len()) as u64;
        // Existence checks of idle cgroups happen here, without the tracker lock.
        self.table.check_idle(&self.tracker, &owned);
        // Lock order: tracker, then the map (as the scrape takes them).
        let mut tracker = self.tracker.lock();
        let mut map = self.map();
        for (key, added) in late {
            self.table.add_late(&mut tracker, key, added);
        }
        let taken = self
            .table
            .upkeep(&mut tracker, owned, read_at, |key, how| map.take(key, how));
        // Taken entries that are not free yet count as filled.
        self.fill
            .set(live.saturating_sub(taken.len() as u64) + map.waiting() as u64);
    }
}
