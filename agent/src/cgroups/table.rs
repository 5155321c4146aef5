//! The user-space side of one per-cgroup kernel map ([`CounterTable`]): what upkeep took
//! out of the map for gone cgroups (final rows waiting for one scrape, and "other"), and the
//! rows a scrape exports, labelled by the [`CgroupTracker`](super::tracker::CgroupTracker)'s
//! assignments. The rules it keeps are in `cgroups::tracker`'s module doc;
//! `ebpf::per_cgroup` drives it for every family.
use std::{
    hash::Hash,
    ops::AddAssign,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap as HashMap;

use super::{
    exists_at,
    series::SeriesLabels,
    tracker::{Assignment, CgroupTracker, TrackerState},
};

/// A kernel map key that names a cgroup, plus other dimensions (device, operation).
pub trait CgroupKey: Copy + Eq + Hash + std::fmt::Debug {
    /// The dimensions besides the cgroup: the key of a row of "other".
    type Dims: Copy + Eq + Hash + Ord + std::fmt::Debug;
    fn cgroup(&self) -> u64;
    fn dims(&self) -> Self::Dims;
    /// The same dimensions for another cgroup.
    fn with_cgroup(&self, id: u64) -> Self;
}

impl CgroupKey for u64 {
    type Dims = ();
    fn cgroup(&self) -> u64 {
        *self
    }
    fn dims(&self) {}
    fn with_cgroup(&self, id: u64) -> Self {
        id
    }
}

/// What becomes of a gone tracked cgroup's final row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GoneRows {
    /// Exported by one scrape, then dropped (the series ends): the counters of work that
    /// ran, whose last value one scrape is enough to keep.
    #[default]
    ExportOnce,
    /// Exported by every scrape for this long after the cgroup went (and at least once),
    /// then moved into "other": rare events that an alert's window must still see after
    /// the cgroup is gone (OOM kills: a container killed and replaced at once).
    KeepFor(Duration),
}

/// The id of the "other" row.
pub const OTHER: u64 = u64::MAX;

/// One row to export; its labels are borrowed from the tracker (see [`Rows`]).
#[derive(Debug, Clone)]
pub struct Row<'t, D, V> {
    /// The cgroup id; `OTHER` for "other".
    pub id: u64,
    pub series: &'t SeriesLabels,
    pub dims: D,
    pub values: V,
}

/// A scrape's rows, sorted by id ("other" last), and the tracker state their labels point
/// into: both live while the caller holds the tracker lock.
pub struct Rows<'t, D, V> {
    pub rows: Vec<Row<'t, D, V>>,
    pub tracker: &'t TrackerState,
}

/// The rows in a stable order for readers and diffs: by id alone (comparing label strings
/// cost a tenth of the scrape at 4,096 cgroups), then as they came. Sorted through their
/// indices and moved once: a row may be large (a per-pod disk row carries its native
/// histogram, 288 bytes), and sorting the rows themselves moved each a dozen times.
fn sorted_by_id<D, V>(rows: Vec<Row<'_, D, V>>) -> Vec<Row<'_, D, V>> {
    let mut order: Vec<(u64, usize)> = rows.iter().map(|r| r.id).zip(0..).collect();
    order.sort_unstable();
    let mut rows: Vec<Option<Row<'_, D, V>>> = rows.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|(_, i)| rows[i].take())
        .collect()
}

/// The user-space side of one per-cgroup kernel map.
#[derive(Debug)]
pub struct CounterTable<K: CgroupKey, V> {
    state: Mutex<TableState<K, V>>,
    gone_rows: GoneRows,
}

#[derive(Debug)]
struct TableState<K: CgroupKey, V> {
    /// Values seen at the last upkeep, to tell which cgroups still move.
    last: HashMap<K, V>,
    /// Final values of gone tracked cgroups, waiting for one scrape: (values, since when,
    /// exported by a scrape).
    finals: HashMap<K, (V, Instant, bool)>,
    /// Totals of gone folded cgroups, and of final rows that waited too long: part of
    /// "other" forever.
    retired: HashMap<K::Dims, V>,
    /// Values of gone cgroups carried into their live twin's rows (a cgroup made again at
    /// the same path, `TrackerState::live_twin`), keyed by the twin's key: added to its
    /// entry in every scrape, and to its final row when it goes.
    carried: HashMap<K, V>,
    /// Gone cgroups whose values went straight into their twin's rows: each keeps its place
    /// in the tracker until the next upkeep, so that what reaches it late (`add_late`, an
    /// entry made again) still finds the twin.
    twin_holds: Vec<u64>,
}

impl<K, V> TableState<K, V>
where
    K: CgroupKey,
    V: Clone + Default + AddAssign,
{
    /// Moves carried values whose cgroup has a live twin of its own now (a service made
    /// again twice: A's values carried into B, B made again as C) into that twin, so that
    /// one path is always one row.
    fn follow_twins(&mut self, tracker: &TrackerState) {
        if self.carried.is_empty() {
            return;
        }
        let moved: Vec<(K, u64)> = self
            .carried
            .keys()
            .filter_map(|k| Some((*k, tracker.live_twin(k.cgroup())?)))
            .collect();
        for (key, twin) in moved {
            if let Some(v) = self.carried.remove(&key) {
                *self.carried.entry(key.with_cgroup(twin)).or_default() += v;
            }
        }
    }

    /// Keeps a gone tracked cgroup's last values as its final row (see [`GoneRows`]).
    fn add_final(&mut self, tracker: &mut TrackerState, key: K, value: V) {
        // Add, not set: an exiting task can recreate the entry once more.
        match self.finals.get_mut(&key) {
            Some((v, _, exported)) => {
                *v += value;
                *exported = false;
            }
            None => {
                self.finals.insert(key, (value, tracker.now(), false));
                tracker.hold(key.cgroup());
            }
        }
    }
}

impl<K: CgroupKey, V> CounterTable<K, V> {
    pub fn new(gone_rows: GoneRows) -> Self {
        Self {
            state: Mutex::new(TableState {
                last: HashMap::default(),
                finals: HashMap::default(),
                retired: HashMap::default(),
                carried: HashMap::default(),
                twin_holds: Vec::new(),
            }),
            gone_rows,
        }
    }
}

impl<K, V> Default for CounterTable<K, V>
where
    K: CgroupKey,
{
    fn default() -> Self {
        Self::new(GoneRows::default())
    }
}

impl<K, V> CounterTable<K, V>
where
    K: CgroupKey,
    V: Clone + Default + PartialEq + AddAssign,
{
    fn lock(&self) -> MutexGuard<'_, TableState<K, V>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks whether the cgroups whose counters stopped moving since the last upkeep still
    /// exist, holding neither lock while it looks: a stat per idle cgroup is most of an
    /// upkeep round (some 6 ms at 4,096 idle pods), and a scrape must not wait for it.
    /// [`Self::upkeep`], called next with the same entries, finds them checked. A cgroup
    /// removed in between is noticed one round later.
    pub fn check_idle(&self, tracker: &CgroupTracker, entries: &[(K, V)]) {
        let idle: Vec<u64> = {
            let t = self.lock();
            entries
                .iter()
                .filter(|(key, value)| t.last.get(key) == Some(value))
                .map(|(key, _)| key.cgroup())
                .collect()
        };
        if idle.is_empty() {
            return;
        }
        let directories = tracker.lock().unchecked(idle);
        let checks = directories
            .into_iter()
            .map(|(id, path)| (id, exists_at(&path, id)))
            .collect();
        tracker.lock().record_checks(checks);
    }

    /// One upkeep pass over every entry of the kernel map, read at `read_at`. Entries of
    /// gone cgroups are taken out of the map with `take` (which deletes the entry and
    /// returns its value at that moment), and this table keeps their values from then on.
    /// Returns the keys taken.
    ///
    /// The caller holds the tracker lock from before `take` until after, and a scrape holds
    /// it while it reads the map ([`Self::rows`]): so a scrape sees a gone cgroup's values
    /// either in the map or in this table, never in both (once counted twice, the next
    /// scrape would go back). `take` reads the value again rather than using `entries`',
    /// since a scrape may have exported a later one since.
    pub fn upkeep(
        &self,
        tracker: &mut TrackerState,
        entries: Vec<(K, V)>,
        read_at: Instant,
        mut take: impl FnMut(&K, Assignment) -> Option<V>,
    ) -> Vec<K> {
        let mut t = self.lock();
        for id in std::mem::take(&mut t.twin_holds) {
            tracker.release(id);
        }
        t.follow_twins(tracker);
        let mut delete = Vec::new();
        let mut last = HashMap::with_capacity_and_hasher(entries.len(), Default::default());
        for (key, value) in entries {
            let id = key.cgroup();
            let assignment = tracker.settle(id, read_at);
            let moved = t.last.get(&key) != Some(&value);
            if !tracker.check_gone(id, moved) {
                last.insert(key, value);
                continue;
            }
            // Not there any more: nothing to keep (only upkeep deletes, so this is rare).
            let Some(value) = take(&key, assignment) else {
                continue;
            };
            delete.push(key);
            match assignment {
                Assignment::Tracked => match tracker.live_twin(id) {
                    Some(twin) => {
                        let mut value = value;
                        if let Some(carried) = t.carried.remove(&key) {
                            value += carried;
                        }
                        *t.carried.entry(key.with_cgroup(twin)).or_default() += value;
                        tracker.hold(id);
                        t.twin_holds.push(id);
                    }
                    None => {
                        let mut value = value;
                        if let Some(carried) = t.carried.remove(&key) {
                            value += carried;
                        }
                        t.add_final(tracker, key, value);
                    }
                },
                Assignment::Folded => *t.retired.entry(key.dims()).or_default() += value,
                Assignment::Excluded => {}
            }
        }
        t.last = last;
        // Values carried into a cgroup that is gone now, where it had no entry left to
        // take: its final row, like its entries'.
        let gone_carried: Vec<K> = t
            .carried
            .keys()
            .filter(|k| tracker.is_gone(k.cgroup()))
            .copied()
            .collect();
        for key in gone_carried {
            if let Some(value) = t.carried.remove(&key) {
                if tracker.knows(key.cgroup()) {
                    t.add_final(tracker, key, value);
                } else {
                    *t.retired.entry(key.dims()).or_default() += value;
                    tracker.use_other();
                }
            }
        }
        let now = tracker.now();
        let (keep, then_other) = match self.gone_rows {
            GoneRows::ExportOnce => (Duration::ZERO, false),
            GoneRows::KeepFor(keep) => (keep, true),
        };
        // Final rows exported by a scrape since the last round (and kept long enough) are
        // done, unless the loop above just added a recreated entry to one (a dying task's
        // last switch, writeback of a deleted pod's pages): that row was exported with the
        // entry added, so it must be exported once more with it, never again without it.
        // Nobody scrapes: final rows that waited too long move into "other" too, so that
        // their values stay exported and their tracked places come free.
        let wait = tracker.final_wait().max(keep);
        let done: Vec<(K, bool)> = t
            .finals
            .iter()
            .filter_map(|(k, (_, since, exported))| {
                let age = now.duration_since(*since);
                if *exported && age >= keep {
                    Some((*k, then_other))
                } else if !*exported && age >= wait {
                    Some((*k, true))
                } else {
                    None
                }
            })
            .collect();
        for (k, into_other) in done {
            if let Some((v, _, _)) = t.finals.remove(&k) {
                tracker.release(k.cgroup());
                if into_other {
                    *t.retired.entry(k.dims()).or_default() += v;
                    tracker.use_other();
                }
            }
        }
        delete
    }

    /// Adds what reached a gone cgroup's kernel entry after upkeep took it (an update
    /// already under way when the entry went, see `ebpf::slots`; never for an excluded
    /// cgroup, see [`Self::upkeep`]): to its final row if that still waits for a scrape
    /// (exported once more, with it), else to "other", so that sums stay whole and nothing
    /// goes back.
    pub fn add_late(&self, tracker: &mut TrackerState, key: K, value: V) {
        let mut t = self.lock();
        if let Some((v, _, exported)) = t.finals.get_mut(&key) {
            *v += value;
            *exported = false;
            return;
        }
        if let Some(twin) = tracker.live_twin(key.cgroup()) {
            *t.carried.entry(key.with_cgroup(twin)).or_default() += value;
            return;
        }
        *t.retired.entry(key.dims()).or_default() += value;
        tracker.use_other();
    }

    /// The rows a scrape exports, from the kernel map's current entries: tracked cgroups
    /// one by one (final rows of gone ones included, once), and "other" per dimension. The
    /// caller reads `entries` while it holds the tracker lock (see [`Self::upkeep`]), and
    /// keeps holding it while it uses the rows.
    pub fn rows<'t>(
        &self,
        tracker: &'t mut TrackerState,
        entries: Vec<(K, V)>,
    ) -> Rows<'t, K::Dims, V> {
        let mut t = self.lock();
        let keep_exporting = matches!(self.gone_rows, GoneRows::KeepFor(_));
        // Every verdict first (they may assign ids or refresh labels); then the rows borrow
        // the labels.
        for key in entries.iter().map(|(k, _)| k).chain(t.finals.keys()) {
            tracker.verdict(key.cgroup());
        }
        t.follow_twins(tracker);
        // A final row whose cgroup was made again at its path: carried into the new one's
        // rows for good, so the series goes on rather than appear twice.
        let twinned: Vec<(K, u64)> = t
            .finals
            .keys()
            .filter_map(|k| Some((*k, tracker.live_twin(k.cgroup())?)))
            .collect();
        for (key, twin) in twinned {
            if let Some((v, _, _)) = t.finals.remove(&key) {
                *t.carried.entry(key.with_cgroup(twin)).or_default() += v;
                tracker.release(key.cgroup());
            }
        }
        let pending: Vec<K> = t
            .finals
            .iter()
            .filter(|(_, (_, _, exported))| keep_exporting || !exported)
            .map(|(k, _)| *k)
            .collect();
        let tracker: &'t TrackerState = tracker;
        // What goes into a live twin's rows: what was carried, and the entries of its older
        // twin that upkeep has not taken yet.
        let mut entries = entries;
        let mut into_twin = t.carried.clone();
        for (key, value) in entries.extract_if(.., |(k, _)| tracker.live_twin(k.cgroup()).is_some())
        {
            if let Some(twin) = tracker.live_twin(key.cgroup()) {
                *into_twin.entry(key.with_cgroup(twin)).or_default() += value;
            }
        }
        let mut rows = Vec::with_capacity(entries.len() + pending.len() + into_twin.len() + 1);
        let mut other: HashMap<K::Dims, V> = HashMap::default();
        // Final rows exported with their recreated entry, not again on their own.
        let mut merged: Vec<K> = Vec::new();
        // In the rows' order (see `sorted_by_id`), so that the rows are mostly sorted as
        // they are made: each entry is copied once, in this loop.
        let mut order: Vec<(u64, usize)> =
            entries.iter().map(|(k, _)| k.cgroup()).zip(0..).collect();
        order.sort_unstable();
        for (key, mut value) in order
            .into_iter()
            .map(|(_, i)| (entries[i].0, std::mem::take(&mut entries[i].1)))
        {
            let (assignment, series) = tracker.series(key.cgroup());
            match assignment {
                Assignment::Tracked => {
                    // A gone cgroup's entry recreated after upkeep moved its value into
                    // finals: export the sum, never less than before.
                    if let Some((v, _, exported)) = t.finals.get_mut(&key) {
                        value += v.clone();
                        *exported = true;
                        merged.push(key);
                    }
                    if !into_twin.is_empty()
                        && let Some(carried) = into_twin.remove(&key)
                    {
                        value += carried;
                    }
                    rows.push(Row {
                        id: key.cgroup(),
                        series,
                        dims: key.dims(),
                        values: value,
                    });
                }
                Assignment::Folded => *other.entry(key.dims()).or_default() += value,
                Assignment::Excluded => {}
            }
        }
        // Carried values of a twin without an entry of these dimensions.
        for (key, value) in into_twin {
            match tracker.series(key.cgroup()) {
                (Assignment::Tracked, series) => rows.push(Row {
                    id: key.cgroup(),
                    series,
                    dims: key.dims(),
                    values: value,
                }),
                _ => *other.entry(key.dims()).or_default() += value,
            }
        }
        for key in pending {
            if merged.contains(&key) {
                continue;
            }
            let (_, series) = tracker.series(key.cgroup());
            if let Some((v, _, exported)) = t.finals.get_mut(&key)
                && (keep_exporting || !*exported)
            {
                *exported = true;
                rows.push(Row {
                    id: key.cgroup(),
                    series,
                    dims: key.dims(),
                    values: v.clone(),
                });
            }
        }
        if tracker.other_used() {
            for (dims, v) in &t.retired {
                *other.entry(*dims).or_default() += v.clone();
            }
            let series = tracker.other_series();
            rows.extend(other.into_iter().map(|(dims, values)| Row {
                id: OTHER,
                series,
                dims,
                values,
            }));
        }
        // Rows of finals and twins came after the entries' and need a sort; "other" is last.
        if !rows.is_sorted_by_key(|r| r.id) {
            rows = sorted_by_id(rows);
        }
        Rows { rows, tracker }
    }

    /// Rows waiting for their final export.
    #[cfg(test)]
    pub fn finals_waiting(&self) -> usize {
        self.lock().finals.len()
    }
}
