//! Per-cgroup counters that the kernel keeps in each cgroup's own files (`cpu.pressure`,
//! `cpu.stat`), for the families that export them per pod.
//!
//! Reading files per pod per scrape is how agents get expensive: 4 files of 4,096 cgroups
//! every 5 s is 3,300 reads a second. So a scrape never reads them. The loader's upkeep
//! round reads them, once per `refresh` interval, for:
//! - the cgroups whose counters in a per-cgroup table moved since their files were last
//!   read (their tasks ran, or their file counters themselves moved), and
//! - every other live cgroup once per [`IDLE_REFRESHES`] intervals: a task blocked for
//!   long does not run, yet its cgroup's pressure grows;
//!
//! and, in any round, the files of cgroups it has not read yet (a new pod).
//!
//! So a value is at most one interval old for a busy cgroup, and [`IDLE_REFRESHES`]
//! intervals for an idle one (docs/metrics.md says so), and an idle node costs few reads.
//! The cgroups are the ones the tracker knows (those with tasks that ran since the agent
//! started, through the `cgroup` family), not excluded; folded ones are read too, for
//! "other".
//!
//! The values live in a user-space map (`per_cgroup::UserMap`) that the shared per-cgroup sweep
//! keeps like a kernel map (`ebpf::per_cgroup`): a gone cgroup's last values go into its
//! final row or "other", folded cgroups sum into "other", and no counter goes back.
use std::{
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap as HashMap;

use super::{
    family::{FamilyFlag, Health, SettingError, duration_setting},
    per_cgroup::{PerCgroupMap, UserMap},
};
use crate::cgroups::tracker::{CgroupTracker, LiveCgroup};

/// How many refresh intervals an idle cgroup's files wait between reads.
pub const IDLE_REFRESHES: u32 = 4;

/// A file family's refresh interval by default: a scrape interval's worth of staleness at
/// most, and about 1,100 reads a second at 4,096 busy pods.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(15);

/// A file family's refresh interval setting: `--<long>` and `NODELENS_<LONG>` (with `_`),
/// at the file `key`; `files_read` completes "How often ..." in `--help`.
pub fn refresh_flag(
    key: &'static str,
    long: &'static str,
    value_name: &'static str,
    env: &'static str,
    files_read: &str,
) -> FamilyFlag {
    FamilyFlag {
        key,
        arg: clap::Arg::new(key)
            .long(long)
            .value_name(value_name)
            .env(env)
            .help(format!(
                "How often {files_read} (idle ones: every {IDLE_REFRESHES}th time); at least the map upkeep interval [default: {}s]",
                DEFAULT_REFRESH.as_secs()
            )),
    }
}

/// The refresh interval set at `key` (see [`refresh_flag`]), at least 100 ms.
pub fn refresh_setting(
    merged: &serde_json::Value,
    key: &'static str,
) -> Result<Duration, SettingError> {
    duration_setting(merged, key, DEFAULT_REFRESH, Duration::from_millis(100))
}

/// Reads one cgroup's files; `None` when it has none of them (left out, not zero).
pub type ReadFiles<V> = Box<dyn Fn(&LiveCgroup) -> Option<V> + Send + Sync>;

/// A family's per-cgroup file counters: when to read, what was read, and the table.
pub struct CgroupFiles<V>
where
    V: Copy + Default + PartialEq + std::ops::AddAssign + Send,
{
    map: PerCgroupMap<UserMap<V>>,
    tracker: std::sync::Arc<CgroupTracker>,
    refresh: Duration,
    read: ReadFiles<V>,
    schedule: Mutex<Schedule>,
    /// Cgroups whose files were read, for the family's cost metric.
    reads: AtomicU64,
}

#[derive(Debug, Default)]
struct Schedule {
    last_refresh: Option<Instant>,
    /// Per cgroup: the upkeep round and time of its last read.
    read: HashMap<u64, (u64, Instant)>,
}

impl<V> CgroupFiles<V>
where
    V: Copy + Default + PartialEq + std::ops::AddAssign + Send,
{
    pub fn new(
        name: &'static str,
        tracker: std::sync::Arc<CgroupTracker>,
        refresh: Duration,
        capacity: u32,
        read: ReadFiles<V>,
    ) -> Self {
        Self {
            map: PerCgroupMap::new(name, UserMap::default(), capacity, tracker.clone()),
            tracker,
            refresh,
            read,
            schedule: Mutex::default(),
            reads: AtomicU64::new(0),
        }
    }

    /// The table, for the scrape and for the loader's sweep.
    pub fn map(&self) -> &PerCgroupMap<UserMap<V>> {
        &self.map
    }

    /// The family's health: its table's fill level.
    pub fn health(&self) -> Health {
        Health {
            maps: vec![self.map.fill()],
            lost: Vec::new(),
            costs: Vec::new(),
        }
    }

    /// Cgroups whose files were read since the start.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Reads the files of the cgroups that are due (see the module doc), when a refresh
    /// interval has passed. Called by the family's upkeep, in the loader's round, before
    /// the sweep; the files are read holding no lock that a scrape takes.
    pub fn refresh(&self) {
        let now = Instant::now();
        let (round, live) = {
            let tracker = self.tracker.lock();
            (tracker.round(), tracker.live_cgroups())
        };
        let due: Vec<LiveCgroup> = {
            let mut schedule = self.schedule.lock().unwrap_or_else(|p| p.into_inner());
            // Upkeep rounds come on a timer whose ticks land a hair either side of a
            // multiple of the interval; a tenth of slack keeps a 15 s refresh on 5 s
            // rounds at 15 s, not 20.
            let slack = self.refresh / 10;
            let interval_passed = schedule
                .last_refresh
                .is_none_or(|at| now.duration_since(at) + slack >= self.refresh);
            if interval_passed {
                schedule.last_refresh = Some(now);
                // Forget cgroups no longer there.
                let there: rustc_hash::FxHashSet<u64> = live.iter().map(|c| c.id).collect();
                schedule.read.retain(|id, _| there.contains(id));
            }
            let idle_wait = self.refresh * IDLE_REFRESHES;
            // A cgroup never read is read at once, in any round: a new pod has values from
            // its first round on, and the reads are only those of new cgroups.
            live.into_iter()
                .filter(|c| match schedule.read.get(&c.id) {
                    None => true,
                    Some(_) if !interval_passed => false,
                    Some((read_round, read_at)) => {
                        c.moved_round > *read_round
                            || now.duration_since(*read_at) + self.refresh / 2 >= idle_wait
                    }
                })
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let read: Vec<(u64, V)> = due
            .iter()
            .filter_map(|c| Some((c.id, (self.read)(c)?)))
            .collect();
        self.reads.fetch_add(due.len() as u64, Ordering::Relaxed);
        let mut schedule = self.schedule.lock().unwrap_or_else(|p| p.into_inner());
        for c in &due {
            schedule.read.insert(c.id, (round, now));
        }
        drop(schedule);
        self.map.with_map(|m| m.set(read));
    }
}

/// Reads a small file of a cgroup; `None` when it is not there or cannot be read.
pub fn read_small(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}
