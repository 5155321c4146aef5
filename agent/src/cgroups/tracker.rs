//! Per-cgroup accounting in user space, shared by every family that keeps counters per
//! cgroup in a kernel map.
//!
//! [`CgroupTracker`] decides, once per cgroup id, how the id is exported, and notices when
//! the cgroup is gone. Each per-cgroup kernel map has a `table::CounterTable` beside it:
//! the loader's upkeep task feeds it the map's entries and deletes what it says, and the
//! scrape asks it for the rows to export.
//!
//! Rules, so that sums stay whole and counters stay monotonic:
//! - The first `max_tracked` cgroups seen are exported one by one (tracked). Later ones
//!   fold into `cgroup="other"`, and stay there until they are gone (assignment is sticky,
//!   so "other" never shrinks while its members live).
//! - Ids that cannot be resolved to a path (gone before the first walk saw them) fold into
//!   "other" at once and are counted in `nodelens_cgroups_unknown_total`.
//! - Only upkeep deletes kernel entries, and only of cgroups that are gone. A gone tracked
//!   cgroup's final values stay in its table, and it keeps its tracked place, until a
//!   scrape has exported them once; then the row goes and the place is free again
//!   (`nodelens_cgroup_evictions_total`). So exported series never exceed the cap (+1 for
//!   "other"). A gone folded cgroup's final values move into "other" for good.
//! - If no scrape takes a final row within `FINAL_EXPORT_WAIT` (Prometheus is down), its
//!   values move into "other" too: nothing is lost, and an outage cannot pin the tracked
//!   places, or memory, forever.
//! - A cgroup made again at a gone one's path (a restarted systemd service) is the same
//!   series: labels carry the path, so two rows would be one series twice. The older id is
//!   its newer *twin*'s ([`TrackerState::live_twin`]), and tables carry its values into the
//!   newer one's rows, so the series goes on from where it was.
//! - A table may keep gone rows longer (`table::GoneRows::KeepFor`: OOM kills, 15
//!   minutes, so an alert's window sees them); such a cgroup keeps its tracked place as
//!   long.
//! - The scrape only reads kernel maps.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap as HashMap;

use super::settings::{CgroupConfig, PathLabel};
use super::{CgroupLabels, CgroupResolver, kubernetes, series::SeriesLabels};

/// How long a gone tracked cgroup's final row waits for a scrape before its values move
/// into "other".
pub const FINAL_EXPORT_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// Exported under its own labels.
    Tracked,
    /// Counted in `cgroup="other"`.
    Folded,
    /// Left out by `--cgroup-include` / `--cgroup-exclude`.
    Excluded,
}

#[derive(Debug)]
struct Slot {
    assignment: Assignment,
    labels: Arc<CgroupLabels>,
    /// The labels as series carry them, rendered once.
    series: Arc<SeriesLabels>,
    /// A tracked kubelet cgroup without its pod name yet: each verdict looks again (the
    /// kubelet writes its logs a moment after it creates the cgroup).
    awaiting_names: bool,
    gone: bool,
    /// Upkeep round in which existence was last checked.
    checked_round: u64,
    /// Upkeep round in which its counters in some per-cgroup table last moved (0: not
    /// since it was assigned): its tasks ran, so the files it keeps may have changed (see
    /// `ebpf::cgroup_files`).
    moved_round: u64,
    /// Final rows that tables still hold for this gone cgroup.
    holds: u32,
    /// A cgroup was made at its path after it (see [`TrackerState::live_twin`]).
    has_newer: bool,
}

/// A cgroup that is there, as [`TrackerState::live_cgroups`] lists it.
#[derive(Debug, Clone)]
pub struct LiveCgroup {
    pub id: u64,
    /// Its directory in the cgroup2 hierarchy.
    pub directory: PathBuf,
    /// Its path relative to the hierarchy's root (`/` for the root): the same in a v1
    /// hierarchy on a hybrid host, where systemd and the kubelet make every cgroup in each.
    pub path: String,
    pub moved_round: u64,
}

#[derive(Debug)]
pub struct TrackerState {
    resolver: CgroupResolver,
    /// The labels of "other", rendered once.
    other: Arc<SeriesLabels>,
    config: CgroupConfig,
    slots: HashMap<u64, Slot>,
    tracked: usize,
    evictions: u64,
    unknown: u64,
    other_used: bool,
    round: u64,
    /// How long final rows wait for a scrape (`FINAL_EXPORT_WAIT`; tests shorten it).
    final_wait: Duration,
    /// The newest id assigned at each path, by the path's hash (a collision only misses a
    /// twin): how a cgroup made again at a path finds its older twin.
    newest_at_path: HashMap<u64, u64>,
}

/// The hash of a cgroup path, for [`TrackerState::live_twin`].
fn path_hash(path: &str) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(path)
}

/// Ids to labels and assignments, shared by the families' tables, the upkeep task and the
/// scrape.
#[derive(Debug)]
pub struct CgroupTracker {
    state: Mutex<TrackerState>,
}

/// Whether a cgroup's verdicts should look for its pod name again (see `Slot`).
fn awaiting_names(assignment: Assignment, labels: &CgroupLabels) -> bool {
    assignment == Assignment::Tracked
        && labels.pod.is_empty()
        && kubernetes::parse(&labels.cgroup).is_some()
}

impl CgroupTracker {
    pub fn new(resolver: CgroupResolver, config: CgroupConfig) -> Self {
        Self {
            state: Mutex::new(TrackerState {
                other: Arc::new(SeriesLabels::new(&CgroupLabels::other(), config.path_label)),
                resolver,
                config,
                slots: HashMap::default(),
                tracked: 0,
                evictions: 0,
                unknown: 0,
                other_used: false,
                round: 0,
                final_wait: FINAL_EXPORT_WAIT,
                newest_at_path: HashMap::default(),
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TrackerState {
    /// The resolver's clock (tests inject one).
    pub(super) fn now(&self) -> Instant {
        self.resolver.now()
    }

    /// How long final rows wait for a scrape.
    pub(super) fn final_wait(&self) -> Duration {
        self.final_wait
    }

    pub fn resolver(&mut self) -> &mut CgroupResolver {
        &mut self.resolver
    }

    /// Whether series carry the cgroup path (`--cgroup-path-label`).
    pub fn path_label(&self) -> PathLabel {
        self.config.path_label
    }

    fn included(&self, path: &str) -> bool {
        self.config
            .include
            .as_ref()
            .is_none_or(|re| re.is_match(path))
            && !self
                .config
                .exclude
                .as_ref()
                .is_some_and(|re| re.is_match(path))
    }

    /// The verdict for `id`, assigning it on first sight. An id the resolver does not know
    /// yet is folded into "other" for this scrape only; upkeep settles it (see
    /// [`Self::settle`]).
    pub fn verdict(&mut self, id: u64) -> Assignment {
        if let Some(assignment) = self.existing(id) {
            return assignment;
        }
        match self.resolver.labels(id) {
            Some(labels) => self.assign(id, labels),
            None => {
                self.other_used = true;
                Assignment::Folded
            }
        }
    }

    /// `id`'s assignment and labels, after its [`Self::verdict`]: its own labels, or
    /// "other"'s for an id with no slot (not known yet). Rows use them only for tracked
    /// ids; folded ones are exported as "other" ([`Self::other_series`]). Borrowed: a
    /// scrape's rows point into the tracker while its lock is held, rather than clone a
    /// shared pointer per row (an atomic on a cold line, which was most of the tracker's
    /// share of a 4,096-pod scrape).
    pub fn series(&self, id: u64) -> (Assignment, &SeriesLabels) {
        match self.slots.get(&id) {
            Some(slot) => (slot.assignment, &slot.series),
            None => (Assignment::Folded, &self.other),
        }
    }

    /// The labels of "other".
    pub fn other_series(&self) -> &SeriesLabels {
        &self.other
    }

    /// The verdict for `id` during upkeep: an unknown id gets a fresh walk unless one
    /// started after its map entry was read (`read_at`), and if that does not find it, it
    /// is gone for good (its counts go to "other"). A walk from before the read could have
    /// missed a cgroup created in between, so it does not count.
    pub(super) fn settle(&mut self, id: u64, read_at: Instant) -> Assignment {
        if let Some(assignment) = self.existing(id) {
            return assignment;
        }
        match self.resolver.labels_walked_since(id, read_at) {
            Some(labels) => self.assign(id, labels),
            None => {
                self.unknown += 1;
                self.other_used = true;
                self.slots.insert(
                    id,
                    Slot {
                        assignment: Assignment::Folded,
                        labels: Arc::new(CgroupLabels::other()),
                        series: self.other.clone(),
                        awaiting_names: false,
                        gone: true,
                        checked_round: self.round,
                        moved_round: 0,
                        holds: 0,
                        has_newer: false,
                    },
                );
                Assignment::Folded
            }
        }
    }

    /// Gives a new id its place (tracked, folded past the cap, or excluded) and labels.
    fn assign(&mut self, id: u64, labels: CgroupLabels) -> Assignment {
        let assignment = if !self.included(&labels.cgroup) {
            Assignment::Excluded
        } else if self.tracked < self.config.max_tracked {
            self.tracked += 1;
            Assignment::Tracked
        } else {
            self.other_used = true;
            Assignment::Folded
        };
        let series = Arc::new(SeriesLabels::new(&labels, self.config.path_label));
        let hash = path_hash(&labels.cgroup);
        if let Some(older) = self.newest_at_path.insert(hash, id)
            && older != id
            && let Some(slot) = self.slots.get_mut(&older)
            && slot.labels.cgroup == labels.cgroup
        {
            slot.has_newer = true;
        }
        self.slots.insert(
            id,
            Slot {
                assignment,
                awaiting_names: awaiting_names(assignment, &labels),
                labels: Arc::new(labels),
                series,
                gone: false,
                checked_round: self.round,
                moved_round: 0,
                holds: 0,
                has_newer: false,
            },
        );
        assignment
    }

    /// The tracked cgroup made at tracked `id`'s path after it, while that one is there:
    /// `id` is gone (two cgroups are never at one path at once: cgroup2 directories cannot
    /// be renamed), and its values belong in the twin's rows. One lookup for the common case, an id without one.
    pub fn live_twin(&self, id: u64) -> Option<u64> {
        let slot = self.slots.get(&id)?;
        if !slot.has_newer || slot.assignment != Assignment::Tracked {
            return None;
        }
        let newer = *self.newest_at_path.get(&path_hash(&slot.labels.cgroup))?;
        let twin = self.slots.get(&newer)?;
        (newer != id
            && !twin.gone
            && twin.assignment == Assignment::Tracked
            && twin.labels.cgroup == slot.labels.cgroup)
            .then_some(newer)
    }

    /// Whether `id` is known to be gone (or forgotten).
    pub fn is_gone(&self, id: u64) -> bool {
        self.slots.get(&id).is_none_or(|s| s.gone)
    }

    /// Whether the tracker still has a place for `id`.
    pub fn knows(&self, id: u64) -> bool {
        self.slots.contains_key(&id)
    }

    /// The assignment of an id that has a slot (one lookup, the scrape's common case),
    /// looking for its pod name again while it has none; `None` for an id without one.
    fn existing(&mut self, id: u64) -> Option<Assignment> {
        let policy = self.config.path_label;
        let slot = self.slots.get_mut(&id)?;
        // Names can appear after the cgroup (the kubelet writes logs a moment later).
        if slot.awaiting_names && !slot.gone {
            let fresh = self.resolver.labels_for_path(slot.labels.cgroup.clone());
            if fresh.pod != slot.labels.pod {
                slot.awaiting_names = awaiting_names(slot.assignment, &fresh);
                slot.series = Arc::new(SeriesLabels::new(&fresh, policy));
                slot.labels = Arc::new(fresh);
            }
        }
        Some(slot.assignment)
    }

    /// Whether `id` is gone, checked at most once per upkeep round and only for cgroups
    /// whose counters stopped moving (`moved` false): a cgroup with moving counters has
    /// tasks.
    pub fn check_gone(&mut self, id: u64, moved: bool) -> bool {
        let round = self.round;
        let Some(slot) = self.slots.get_mut(&id) else {
            return false;
        };
        if moved {
            slot.moved_round = round;
        }
        if slot.gone || moved || slot.checked_round == round {
            return slot.gone;
        }
        slot.checked_round = round;
        if !self.resolver.exists(id) {
            slot.gone = true;
        }
        slot.gone
    }

    /// The cgroups still there and not excluded, for families that read the cgroups' own
    /// files (`ebpf::cgroup_files`): where each is, and in which upkeep round its counters
    /// last moved.
    pub fn live_cgroups(&self) -> Vec<LiveCgroup> {
        self.slots
            .iter()
            .filter(|(_, s)| !s.gone && s.assignment != Assignment::Excluded)
            .filter_map(|(id, s)| {
                Some(LiveCgroup {
                    id: *id,
                    directory: self.resolver.directory(*id)?,
                    path: s.labels.cgroup.clone(),
                    moved_round: s.moved_round,
                })
            })
            .collect()
    }

    /// The current upkeep round.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Directories of the cgroups among `ids` still to be checked for existence this round
    /// (see `table::CounterTable::check_idle`).
    pub(super) fn unchecked(&self, mut ids: Vec<u64>) -> Vec<(u64, PathBuf)> {
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter(|id| {
                self.slots
                    .get(id)
                    .is_some_and(|s| !s.gone && s.checked_round != self.round)
            })
            .filter_map(|id| Some((id, self.resolver.directory(id)?)))
            .collect()
    }

    /// Records existence checked outside the lock: [`Self::check_gone`] then uses these
    /// results for the rest of the round.
    pub(super) fn record_checks(&mut self, checks: Vec<(u64, bool)>) {
        for (id, exists) in checks {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.checked_round = self.round;
                slot.gone |= !exists;
            }
        }
    }

    /// A table keeps a final row for a gone cgroup.
    pub fn hold(&mut self, id: u64) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.holds += 1;
        }
    }

    /// A table dropped a final row.
    pub fn release(&mut self, id: u64) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.holds = slot.holds.saturating_sub(1);
        }
    }

    /// "other" is used from now on (a table moved final values into it).
    pub fn use_other(&mut self) {
        self.other_used = true;
    }

    pub fn other_used(&self) -> bool {
        self.other_used
    }

    /// Starts an upkeep round.
    pub fn begin_round(&mut self) {
        self.round += 1;
    }

    /// Ends an upkeep round: forgets gone cgroups whose final rows are all gone, which frees
    /// their tracked places.
    pub fn end_round(&mut self) {
        let done: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.gone && s.holds == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let Some(slot) = self.slots.remove(&id) else {
                continue;
            };
            if slot.assignment == Assignment::Tracked {
                self.tracked -= 1;
                self.evictions += 1;
            }
            let hash = path_hash(&slot.labels.cgroup);
            if self.newest_at_path.get(&hash) == Some(&id) {
                self.newest_at_path.remove(&hash);
            }
            self.resolver.forget(id);
        }
    }

    /// (tracked, evictions, unknown).
    pub fn counts(&self) -> (usize, u64, u64) {
        (self.tracked, self.evictions, self.unknown)
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::MetadataExt, path::Path};

    use super::*;
    use crate::cgroups::table::*;

    fn tracker(root: &Path, max: usize) -> CgroupTracker {
        tracker_excluding(root, max, None)
    }

    fn tracker_excluding(root: &Path, max: usize, exclude: Option<&str>) -> CgroupTracker {
        tracker_with_clock(root, max, exclude, crate::cgroups::Clock::manual())
    }

    /// A tracker whose clock only moves when the test moves it.
    fn tracker_with_clock(
        root: &Path,
        max: usize,
        exclude: Option<&str>,
        clock: crate::cgroups::Clock,
    ) -> CgroupTracker {
        let resolver = CgroupResolver::new(
            root.to_owned(),
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        )
        .with_clock(clock);
        CgroupTracker::new(
            resolver,
            CgroupConfig {
                root: Some(root.to_owned()),
                max_tracked: max,
                include: None,
                exclude: exclude.map(|re| regex::Regex::new(re).unwrap()),
                path_label: PathLabel::Auto,
                pod_logs_dir: "/nonexistent".into(),
                container_logs_dir: "/nonexistent".into(),
            },
        )
    }

    /// Plain directories stand in for cgroups: the resolver only walks and stats.
    fn dir(root: &Path, name: &str) -> u64 {
        let p = root.join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::metadata(&p).unwrap().ino()
    }

    /// Upkeep with a kernel map that holds exactly `entries`.
    fn upkeep(
        table: &CounterTable<u64, u64>,
        t: &mut TrackerState,
        entries: Vec<(u64, u64)>,
    ) -> Vec<u64> {
        let mut map: HashMap<u64, u64> = entries.iter().copied().collect();
        let read_at = t.resolver().now();
        table.upkeep(t, entries, read_at, |k, _| map.remove(k))
    }

    /// One whole upkeep round: begin, upkeep with a kernel map holding exactly `entries`,
    /// end. Returns the keys taken.
    fn round(
        table: &CounterTable<u64, u64>,
        t: &mut TrackerState,
        entries: Vec<(u64, u64)>,
    ) -> Vec<u64> {
        t.begin_round();
        let taken = upkeep(table, t, entries);
        t.end_round();
        taken
    }

    fn value_of(rows: &Rows<(), u64>, id: u64) -> Option<u64> {
        rows.rows.iter().find(|r| r.id == id).map(|r| r.values)
    }

    #[test]
    fn late_adds_go_to_the_final_row_while_it_waits_else_to_other() {
        let root = tempfile::tempdir().unwrap();
        let tr = tracker(root.path(), 4);
        let table: CounterTable<u64, u64> = CounterTable::default();
        let a = dir(root.path(), "a");
        let b = dir(root.path(), "b");
        let mut t = tr.lock();
        table.rows(&mut t, vec![(a, 10), (b, 20)]);
        std::fs::remove_dir(root.path().join("a")).unwrap();
        std::fs::remove_dir(root.path().join("b")).unwrap();
        round(&table, &mut t, vec![(a, 10), (b, 20)]);
        assert_eq!(round(&table, &mut t, vec![(a, 10), (b, 20)]).len(), 2);
        // a's final row waits for a scrape: a late add joins it.
        table.add_late(&mut t, a, 3);
        let rows = table.rows(&mut t, vec![]);
        assert_eq!(value_of(&rows, a), Some(13));
        assert_eq!(value_of(&rows, b), Some(20));
        assert_eq!(value_of(&rows, OTHER), None);
        // Exported, the final rows go at the next round; a late add after that goes to
        // "other", so the sum over the family never goes back.
        round(&table, &mut t, vec![]);
        table.add_late(&mut t, b, 2);
        let rows = table.rows(&mut t, vec![]);
        assert_eq!(value_of(&rows, b), None);
        assert_eq!(value_of(&rows, OTHER), Some(2));
    }

    #[test]
    fn take_is_told_when_a_cgroup_was_excluded() {
        let root = tempfile::tempdir().unwrap();
        let tr = tracker_excluding(root.path(), 4, Some("^skip"));
        let table: CounterTable<u64, u64> = CounterTable::default();
        let x = dir(root.path(), "skip-me");
        let a = dir(root.path(), "a");
        let mut t = tr.lock();
        table.rows(&mut t, vec![(x, 10), (a, 1)]);
        std::fs::remove_dir(root.path().join("skip-me")).unwrap();
        std::fs::remove_dir(root.path().join("a")).unwrap();
        let mut told = Vec::new();
        for _ in 0..2 {
            t.begin_round();
            let read_at = t.resolver().now();
            table.upkeep(&mut t, vec![(x, 10), (a, 1)], read_at, |k, how| {
                told.push((*k, how));
                Some(0)
            });
            t.end_round();
        }
        told.sort_by_key(|(k, _)| *k);
        let mut want = vec![(x, Assignment::Excluded), (a, Assignment::Tracked)];
        want.sort_by_key(|(k, _)| *k);
        assert_eq!(told, want);
    }

    #[test]
    fn a_cgroup_created_after_another_familys_walk_is_still_found() {
        let root = tempfile::tempdir().unwrap();
        let clock = crate::cgroups::Clock::manual();
        let tr = tracker_with_clock(root.path(), 10, None, clock.clone());
        let (first, second): (CounterTable<u64, u64>, CounterTable<u64, u64>) =
            (CounterTable::default(), CounterTable::default());
        let a = dir(root.path(), "a");
        let mut t = tr.lock();
        t.begin_round();
        // One family's upkeep walks the tree for `a`...
        upkeep(&first, &mut t, vec![(a, 1)]);
        // ...then a pod starts, and the next family reads its map in the same round.
        clock.advance(Duration::from_millis(5));
        let b = dir(root.path(), "b");
        upkeep(&second, &mut t, vec![(b, 1)]);
        t.end_round();
        let rows = second.rows(&mut t, vec![(b, 2)]);
        assert_eq!(
            value_of(&rows, b),
            Some(2),
            "b is tracked, not folded as gone"
        );
        assert_eq!(t.counts().2, 0, "nothing unknown");
    }

    #[test]
    fn idle_cgroups_are_checked_before_upkeep_which_uses_the_result() {
        let root = tempfile::tempdir().unwrap();
        let tr = tracker(root.path(), 10);
        let table: CounterTable<u64, u64> = CounterTable::default();
        let (a, b) = (dir(root.path(), "a"), dir(root.path(), "b"));
        let round = |entries: Vec<(u64, u64)>, remove: Option<&str>| -> Vec<u64> {
            tr.lock().begin_round();
            table.check_idle(&tr, &entries);
            if let Some(name) = remove {
                std::fs::remove_dir(root.path().join(name)).unwrap();
            }
            let mut t = tr.lock();
            let deleted = upkeep(&table, &mut t, entries);
            t.end_round();
            deleted
        };
        assert!(round(vec![(a, 1), (b, 1)], None).is_empty(), "new entries");
        // a is idle and checked (it exists), then goes: upkeep keeps the round's check.
        assert!(round(vec![(a, 1), (b, 2)], Some("a")).is_empty());
        {
            let t = tr.lock();
            assert_ne!(t.slots[&b].checked_round, t.round, "b moved: not looked at");
        }
        // The next round's check sees it gone, and upkeep deletes its entry.
        assert_eq!(round(vec![(a, 1), (b, 3)], None), vec![a]);
    }

    #[test]
    fn gone_cgroups_export_once_then_go_and_other_never_shrinks() {
        let root = tempfile::tempdir().unwrap();
        let tr = tracker(root.path(), 1);
        let table: CounterTable<u64, u64> = CounterTable::default();
        let a = dir(root.path(), "a");
        let b = dir(root.path(), "b");

        let mut t = tr.lock();
        let rows = table.rows(&mut t, vec![(a, 10), (b, 5)]);
        assert_eq!(value_of(&rows, a), Some(10));
        assert_eq!(value_of(&rows, OTHER), Some(5), "b is past the cap");

        // Both go away; upkeep sees unmoved counters twice and deletes both entries.
        std::fs::remove_dir(root.path().join("a")).unwrap();
        std::fs::remove_dir(root.path().join("b")).unwrap();
        t.begin_round();
        assert!(
            upkeep(&table, &mut t, vec![(a, 12), (b, 7)]).is_empty(),
            "they moved"
        );
        t.end_round();
        t.begin_round();
        let mut deleted = upkeep(&table, &mut t, vec![(a, 12), (b, 7)]);
        deleted.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(deleted, want);
        t.end_round();
        assert_eq!(
            t.counts().0,
            1,
            "a keeps its tracked place until its final export"
        );

        // The next scrape exports a's final value once, and b's in "other".
        let rows = table.rows(&mut t, vec![]);
        assert_eq!(value_of(&rows, a), Some(12));
        assert_eq!(value_of(&rows, OTHER), Some(7));
        round(&table, &mut t, vec![]);
        assert_eq!(t.counts().0, 0, "then its place is free");
        let rows = table.rows(&mut t, vec![]);
        assert_eq!(value_of(&rows, a), None, "exported once, then gone");
        assert_eq!(value_of(&rows, OTHER), Some(7), "other keeps b for good");
        assert_eq!(t.counts().1, 1, "one eviction");
    }

    #[test]
    fn a_gone_cgroup_is_kept_at_its_value_when_taken_so_other_never_goes_back() {
        let root = tempfile::tempdir().unwrap();
        let tr = tracker(root.path(), 0);
        let table: CounterTable<u64, u64> = CounterTable::default();
        let a = dir(root.path(), "a");
        let mut t = tr.lock();
        assert!(round(&table, &mut t, vec![(a, 5)]).is_empty());
        std::fs::remove_dir(root.path().join("a")).unwrap();
        // Upkeep read 5, then the exiting task's last switch made it 7, and a scrape
        // exported that before upkeep took the entry.
        let before = value_of(&table.rows(&mut t, vec![(a, 7)]), OTHER).unwrap();
        t.begin_round();
        let mut kernel: HashMap<u64, u64> = [(a, 7)].into_iter().collect();
        let read_at = t.resolver().now();
        let taken = table.upkeep(&mut t, vec![(a, 5)], read_at, |k, _| kernel.remove(k));
        t.end_round();
        assert_eq!(taken, vec![a]);
        assert!(kernel.is_empty(), "the entry is out of the kernel map");
        let after = value_of(&table.rows(&mut t, vec![]), OTHER).unwrap();
        assert_eq!(
            (before, after),
            (7, 7),
            "other keeps the value taken, not the one read"
        );
    }

    #[test]
    fn an_entry_recreated_after_its_final_row_keeps_the_row_whole() {
        let root = tempfile::tempdir().unwrap();
        let tr = tracker(root.path(), 10);
        let table: CounterTable<u64, u64> = CounterTable::default();
        let a = dir(root.path(), "a");
        let mut t = tr.lock();
        round(&table, &mut t, vec![(a, 7)]);
        std::fs::remove_dir(root.path().join("a")).unwrap();
        assert_eq!(round(&table, &mut t, vec![(a, 7)]), vec![a], "gone: taken");
        // A dying task's last switch recreates the entry; the scrape adds it to the final row.
        assert_eq!(value_of(&table.rows(&mut t, vec![(a, 1)]), a), Some(8));
        // Upkeep takes the recreated entry into the same final row...
        assert_eq!(round(&table, &mut t, vec![(a, 1)]), vec![a]);
        // ...so the next scrape exports it whole once more, never 1.
        assert_eq!(value_of(&table.rows(&mut t, vec![]), a), Some(8));
        round(&table, &mut t, vec![]);
        assert_eq!(
            value_of(&table.rows(&mut t, vec![]), a),
            None,
            "then it is done"
        );
    }

    /// The directory that will take `name`'s place (see [`remake`]): made in `aside` (out
    /// of the tracker's sight) while `name` is still there, so that the file system cannot
    /// give it the old inode number back.
    fn successor(aside: &Path, name: &str) -> u64 {
        dir(aside, name)
    }

    /// `name` made again in `root` (gone before): its [`successor`] moved into its place.
    fn remake(aside: &Path, root: &Path, name: &str, clock: &crate::cgroups::Clock) {
        std::fs::rename(aside.join(name), root.join(name)).unwrap();
        // Past the resolver's rate limit, so that the next verdict walks the tree again.
        clock.advance(Duration::from_secs(60));
    }

    fn rows_at(rows: &Rows<(), u64>, path: &str) -> Vec<u64> {
        rows.rows
            .iter()
            .filter(|r| {
                crate::cgroups::series::choose([r.series])[0]
                    .text()
                    .contains(&format!("cgroup=\"{path}\""))
            })
            .map(|r| r.values)
            .collect()
    }

    #[test]
    fn a_cgroup_made_again_at_its_path_continues_its_series() {
        let root = tempfile::tempdir().unwrap();
        let clock = crate::cgroups::Clock::manual();
        let tr = tracker_with_clock(root.path(), 10, None, clock.clone());
        let table: CounterTable<u64, u64> = CounterTable::default();
        let a = dir(root.path(), "svc");
        let mut t = tr.lock();
        round(&table, &mut t, vec![(a, 5)]);
        assert_eq!(rows_at(&table.rows(&mut t, vec![(a, 5)]), "svc"), vec![5]);
        // The service restarts: its cgroup is made again before upkeep noticed the old one
        // went. One series, never two with the same labels.
        let aside = tempfile::tempdir_in(root.path().parent().unwrap()).unwrap();
        let b = successor(aside.path(), "svc");
        std::fs::remove_dir(root.path().join("svc")).unwrap();
        remake(aside.path(), root.path(), "svc", &clock);
        assert_eq!(
            rows_at(&table.rows(&mut t, vec![(a, 5), (b, 1)]), "svc"),
            vec![6]
        );
        // Upkeep takes the old entry: carried into the new row, not a final row of its own.
        assert_eq!(round(&table, &mut t, vec![(a, 5), (b, 1)]), vec![a]);
        assert_eq!(table.finals_waiting(), 0);
        for (value, want) in [(1, 6), (2, 7)] {
            assert_eq!(
                rows_at(&table.rows(&mut t, vec![(b, value)]), "svc"),
                vec![want]
            );
            round(&table, &mut t, vec![(b, value)]);
        }
        // The new one goes too: its final row holds what was carried.
        std::fs::remove_dir(root.path().join("svc")).unwrap();
        round(&table, &mut t, vec![(b, 2)]);
        assert_eq!(rows_at(&table.rows(&mut t, vec![]), "svc"), vec![7]);
        round(&table, &mut t, vec![]);
        assert!(rows_at(&table.rows(&mut t, vec![]), "svc").is_empty());
    }

    #[test]
    fn a_service_made_again_twice_stays_one_series_that_never_goes_back() {
        let root = tempfile::tempdir().unwrap();
        let aside = tempfile::tempdir_in(root.path().parent().unwrap()).unwrap();
        let clock = crate::cgroups::Clock::manual();
        let tr = tracker_with_clock(root.path(), 10, None, clock.clone());
        let table: CounterTable<u64, u64> = CounterTable::default();
        let a = dir(root.path(), "svc");
        // Both successors now, while every id is taken: ids are never reused by cgroups.
        let (b_aside, c_aside) = (aside.path().join("b"), aside.path().join("c"));
        let (b, c) = (successor(&b_aside, "svc"), successor(&c_aside, "svc"));
        let mut t = tr.lock();
        round(&table, &mut t, vec![(a, 5)]);
        std::fs::remove_dir(root.path().join("svc")).unwrap();
        remake(&b_aside, root.path(), "svc", &clock);
        round(&table, &mut t, vec![(a, 5), (b, 1)]);
        assert_eq!(rows_at(&table.rows(&mut t, vec![(b, 1)]), "svc"), vec![6]);
        // Made again once more, before upkeep saw b go: a's values follow to c.
        std::fs::remove_dir(root.path().join("svc")).unwrap();
        remake(&c_aside, root.path(), "svc", &clock);
        // b's entry stays in the map until upkeep takes it (it moved in the first round).
        let mut seen: Vec<u64> = Vec::new();
        for entries in [vec![(b, 2), (c, 1)], vec![(b, 2), (c, 1)]] {
            let values = rows_at(&table.rows(&mut t, entries.clone()), "svc");
            assert_eq!(values.len(), 1, "one series: {values:?}");
            seen.push(values[0]);
            round(&table, &mut t, entries);
        }
        // The next sweep first adds a late value for b (an update under way when its entry
        // was taken): it joins c too.
        t.begin_round();
        table.add_late(&mut t, b, 1);
        upkeep(&table, &mut t, vec![(c, 3)]);
        t.end_round();
        let rows = table.rows(&mut t, vec![(c, 3)]);
        seen.extend(rows_at(&rows, "svc"));
        assert_eq!(seen, vec![8, 8, 11], "5 + 2 + 1 late + c's own");
        assert_eq!(value_of(&rows, OTHER), None, "nothing went into other");
    }

    #[test]
    fn a_final_row_is_carried_into_a_cgroup_made_at_its_path_after_it() {
        let root = tempfile::tempdir().unwrap();
        let clock = crate::cgroups::Clock::manual();
        let tr = tracker_with_clock(root.path(), 10, None, clock.clone());
        let table: CounterTable<u64, u64> =
            CounterTable::new(GoneRows::KeepFor(Duration::from_secs(900)));
        let a = dir(root.path(), "svc");
        let aside = tempfile::tempdir_in(root.path().parent().unwrap()).unwrap();
        let b = successor(aside.path(), "svc");
        let mut t = tr.lock();
        round(&table, &mut t, vec![(a, 2)]);
        std::fs::remove_dir(root.path().join("svc")).unwrap();
        round(&table, &mut t, vec![(a, 2)]);
        assert_eq!(table.finals_waiting(), 1, "a's final row is kept");
        assert_eq!(rows_at(&table.rows(&mut t, vec![]), "svc"), vec![2]);
        // Made again; another family's upkeep sees it (this table has no entry for it yet).
        remake(aside.path(), root.path(), "svc", &clock);
        t.begin_round();
        upkeep(&CounterTable::default(), &mut t, vec![(b, 9)]);
        t.end_round();
        assert_eq!(rows_at(&table.rows(&mut t, vec![]), "svc"), vec![2]);
        assert_eq!(table.finals_waiting(), 0, "carried into b's rows");
        assert_eq!(rows_at(&table.rows(&mut t, vec![(b, 1)]), "svc"), vec![3]);
        // Long after a's retention, nothing went back.
        clock.advance(Duration::from_secs(3600));
        round(&table, &mut t, vec![(b, 1)]);
        let rows = table.rows(&mut t, vec![(b, 1)]);
        assert_eq!(rows_at(&rows, "svc"), vec![3]);
        assert_eq!(value_of(&rows, OTHER), None);
    }

    #[test]
    fn kept_final_rows_are_exported_by_every_scrape_then_move_into_other() {
        let root = tempfile::tempdir().unwrap();
        let clock = crate::cgroups::Clock::manual();
        let tr = tracker_with_clock(root.path(), 10, None, clock.clone());
        let keep = Duration::from_secs(900);
        let table: CounterTable<u64, u64> = CounterTable::new(GoneRows::KeepFor(keep));
        let a = dir(root.path(), "a");
        let mut t = tr.lock();
        round(&table, &mut t, vec![(a, 2)]);
        std::fs::remove_dir(root.path().join("a")).unwrap();
        round(&table, &mut t, vec![(a, 2)]);
        for _ in 0..3 {
            clock.advance(keep / 4);
            assert_eq!(value_of(&table.rows(&mut t, vec![]), a), Some(2));
            round(&table, &mut t, vec![]);
        }
        clock.advance(keep / 4);
        round(&table, &mut t, vec![]);
        let rows = table.rows(&mut t, vec![]);
        assert_eq!(value_of(&rows, a), None, "left after its retention");
        assert_eq!(value_of(&rows, OTHER), Some(2), "its count moved, not lost");
        assert_eq!(t.counts().1, 1, "its place is free");
    }

    #[test]
    fn a_kept_final_row_is_exported_at_least_once() {
        let root = tempfile::tempdir().unwrap();
        let clock = crate::cgroups::Clock::manual();
        let tr = tracker_with_clock(root.path(), 10, None, clock.clone());
        let keep = Duration::from_secs(900);
        let table: CounterTable<u64, u64> = CounterTable::new(GoneRows::KeepFor(keep));
        let a = dir(root.path(), "a");
        let mut t = tr.lock();
        round(&table, &mut t, vec![(a, 1)]);
        std::fs::remove_dir(root.path().join("a")).unwrap();
        round(&table, &mut t, vec![(a, 1)]);
        // Past the retention but not past the wait for a scrape: it stays.
        clock.advance(keep.max(FINAL_EXPORT_WAIT) - Duration::from_secs(1));
        round(&table, &mut t, vec![]);
        assert_eq!(value_of(&table.rows(&mut t, vec![]), a), Some(1));
        clock.advance(Duration::from_secs(1));
        round(&table, &mut t, vec![]);
        assert_eq!(value_of(&table.rows(&mut t, vec![]), OTHER), Some(1));
    }

    #[test]
    fn an_entry_gone_before_upkeep_takes_it_is_not_counted() {
        let root = tempfile::tempdir().unwrap();
        let tr = tracker(root.path(), 0);
        let table: CounterTable<u64, u64> = CounterTable::default();
        let a = dir(root.path(), "a");
        let mut t = tr.lock();
        round(&table, &mut t, vec![(a, 5)]);
        std::fs::remove_dir(root.path().join("a")).unwrap();
        t.begin_round();
        let read_at = t.resolver().now();
        let taken = table.upkeep(&mut t, vec![(a, 5)], read_at, |_, _| None);
        t.end_round();
        assert!(taken.is_empty());
        assert_eq!(value_of(&table.rows(&mut t, vec![]), OTHER), None);
    }

    #[test]
    fn without_scrapes_final_rows_move_into_other_and_free_their_places() {
        let root = tempfile::tempdir().unwrap();
        let clock = crate::cgroups::Clock::manual();
        let tr = tracker_with_clock(root.path(), 100, None, clock.clone());
        let table: CounterTable<u64, u64> = CounterTable::default();
        let mut t = tr.lock();
        t.final_wait = Duration::from_millis(20);
        let mut total = 0;
        // Created up front: a directory's inode is reused once it is removed, which real
        // cgroup ids never are.
        let ids: Vec<u64> = (0..50)
            .map(|i| dir(root.path(), &format!("c{i}")))
            .collect();
        for (i, &id) in ids.iter().enumerate() {
            let i = i as u64;
            round(&table, &mut t, vec![(id, i + 1)]);
            std::fs::remove_dir(root.path().join(format!("c{i}"))).unwrap();
            assert_eq!(round(&table, &mut t, vec![(id, i + 1)]), vec![id]);
            total += i + 1;
        }
        clock.advance(Duration::from_millis(30));
        round(&table, &mut t, vec![]);
        assert_eq!(table.finals_waiting(), 0);
        assert_eq!(t.counts().0, 0, "every tracked place is free again");
        let rows = table.rows(&mut t, vec![]);
        let sum: u64 = rows.rows.iter().map(|r| r.values).sum();
        assert_eq!(sum, total, "every count is still exported somewhere");
        assert!(value_of(&rows, OTHER).is_some());
    }

    #[test]
    fn unresolvable_ids_fold_into_other_and_are_counted() {
        let root = tempfile::tempdir().unwrap();
        let tr = tracker(root.path(), 10);
        let table: CounterTable<u64, u64> = CounterTable::default();
        let mut t = tr.lock();
        assert_eq!(round(&table, &mut t, vec![(u64::MAX, 3)]), vec![u64::MAX]);
        let rows = table.rows(&mut t, vec![]);
        assert_eq!(value_of(&rows, OTHER), Some(3));
        assert_eq!(t.counts().2, 1);
    }
}
