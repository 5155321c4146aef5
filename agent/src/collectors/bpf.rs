//! The cost and health of the eBPF side: per-probe run counts and run time from the
//! kernel's BPF statistics (their ratio is the cost per event), how full the bounded maps
//! are, and events lost because a map was full or an entry went stale.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use agent_ebpf::{
    DISK_HISTOGRAM_ENTRIES, DISK_INFLIGHT_ENTRIES, RECLAIM_START_ENTRIES, RUNQUEUE_START_ENTRIES,
};
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::{CollectError, Collector, map_error};
use crate::{ebpf::Probes, metrics::family};

/// An in-flight block request older than this lost its completion (for example a device
/// that vanished mid-request): it is removed and counted, never recorded as latency.
pub const DISK_INFLIGHT_STALE_NS: u64 = 60 * 1_000_000_000;

/// Counting a hash map's entries walks every bucket of it (the kernel has no entry count
/// for preallocated hash maps), which costs tens of microseconds per large map. So the
/// counts, and the stale-request sweep that shares the walk, refresh at most this often.
pub const MAP_WALK_INTERVAL: Duration = Duration::from_secs(10);

/// (map name, entries, capacity).
type MapFill = (&'static str, u64, u32);

#[derive(Debug)]
pub struct BpfCollector {
    probes: Arc<Probes>,
    disk_inflight_stale: AtomicU64,
    /// Last walk: when, and (map, entries, capacity).
    walked: Mutex<Option<(Instant, Vec<MapFill>)>>,
}

impl BpfCollector {
    pub fn new(probes: Arc<Probes>) -> Self {
        Self {
            probes,
            disk_inflight_stale: AtomicU64::new(0),
            walked: Mutex::new(None),
        }
    }

    /// Map fill levels, walking the maps only when the last walk is older than
    /// `MAP_WALK_INTERVAL`.
    fn map_entries(
        &self,
        loaded: &crate::ebpf::LoadedProbes,
    ) -> Result<Vec<MapFill>, CollectError> {
        let mut walked = self.walked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, maps)) = walked.as_ref()
            && at.elapsed() < MAP_WALK_INTERVAL
        {
            return Ok(maps.clone());
        }
        let mut maps = Vec::new();
        if let Some(s) = &loaded.sched {
            maps.push((
                "RUNQUEUE_START",
                s.start.keys().count() as u64,
                RUNQUEUE_START_ENTRIES,
            ));
        }
        if let Some(d) = &loaded.disk {
            maps.push((
                "DISK_INFLIGHT",
                self.sweep_disk_inflight(d)?,
                DISK_INFLIGHT_ENTRIES,
            ));
            maps.push((
                "DISK_HISTOGRAMS",
                d.histograms.keys().count() as u64,
                DISK_HISTOGRAM_ENTRIES,
            ));
        }
        if let Some(m) = &loaded.memory {
            maps.push((
                "RECLAIM_START",
                m.start.keys().count() as u64,
                RECLAIM_START_ENTRIES,
            ));
        }
        if let Some(c) = &loaded.cgroup_stats {
            let entries = c.lock().unwrap_or_else(|p| p.into_inner()).keys().count() as u64;
            maps.push(("CGROUP_STATS", entries, loaded.cgroup_stats_capacity));
        }
        *walked = Some((Instant::now(), maps.clone()));
        Ok(maps)
    }

    /// Removes in-flight requests older than `DISK_INFLIGHT_STALE_NS`, counts them, and
    /// returns how many entries remain.
    fn sweep_disk_inflight(&self, d: &crate::ebpf::DiskMaps) -> Result<u64, CollectError> {
        let now = monotonic_ns();
        let mut inflight = d.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries = 0u64;
        let mut stale = Vec::new();
        for item in inflight.iter() {
            let (key, req) = item.map_err(|e| map_error("DISK_INFLIGHT", e))?;
            entries += 1;
            if now.saturating_sub(req.issued_ns) > DISK_INFLIGHT_STALE_NS {
                stale.push(key);
            }
        }
        for key in &stale {
            // Gone already means it completed after all: not stale.
            if inflight.remove(key).is_ok() {
                self.disk_inflight_stale.fetch_add(1, Ordering::Relaxed);
                entries = entries.saturating_sub(1);
            }
        }
        Ok(entries)
    }
}

/// CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns reads.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Collector for BpfCollector {
    fn name(&self) -> &'static str {
        "bpf"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let Some(loaded) = self.probes.loaded.get() else {
            return Ok(());
        };
        let stats = loaded.program_stats();
        let maps = self.map_entries(loaded)?;
        let mut lost: Vec<(&'static str, u64)> = Vec::new();
        if let Some(s) = &loaded.sched {
            let c = s
                .counters
                .get(&0, 0)
                .map_err(|e| map_error("SCHED_COUNTERS", e))?;
            lost.push((
                "runqueue_start_map_full",
                c.iter().map(|c| c.start_map_full).sum(),
            ));
            lost.push((
                "cgroup_map_full_sched",
                c.iter().map(|c| c.cgroup_map_full).sum(),
            ));
        }
        if let Some(d) = &loaded.disk {
            let c = d
                .counters
                .get(&0, 0)
                .map_err(|e| map_error("DISK_COUNTERS", e))?;
            lost.push((
                "disk_inflight_map_full",
                c.iter().map(|c| c.inflight_map_full).sum(),
            ));
            lost.push((
                "disk_histogram_map_full",
                c.iter().map(|c| c.histogram_map_full).sum(),
            ));
            lost.push((
                "disk_inflight_stale",
                self.disk_inflight_stale.load(Ordering::Relaxed),
            ));
        }
        if let Some(m) = &loaded.memory {
            let c = m
                .counters
                .get(&0, 0)
                .map_err(|e| map_error("MEMORY_COUNTERS", e))?;
            lost.push((
                "reclaim_start_map_full",
                c.iter().map(|c| c.reclaim_start_map_full).sum(),
            ));
            lost.push((
                "oom_ringbuf_full",
                c.iter().map(|c| c.oom_ringbuf_full).sum(),
            ));
            lost.push((
                "cgroup_map_full_reclaim",
                c.iter().map(|c| c.cgroup_map_full).sum(),
            ));
        }

        family(
            out,
            "nodelens_probe_runs_total",
            "Times each probe's program ran (kernel BPF statistics; 0 while they are off).",
            MetricType::Counter,
            stats
                .iter()
                .map(|(probe, runs, _)| ([("probe", *probe)], *runs as f64)),
        )?;
        family(
            out,
            "nodelens_probe_run_seconds_total",
            "CPU time spent in each probe's program (kernel BPF statistics). Divided by nodelens_probe_runs_total: the cost per event.",
            MetricType::Counter,
            stats
                .iter()
                .map(|(probe, _, secs)| ([("probe", *probe)], *secs)),
        )?;
        family(
            out,
            "nodelens_map_entries",
            "Entries in each bounded BPF map (refreshed at most every 10 s).",
            MetricType::Gauge,
            maps.iter().map(|(map, n, _)| ([("map", *map)], *n as f64)),
        )?;
        family(
            out,
            "nodelens_map_capacity",
            "Maximum entries of each bounded BPF map.",
            MetricType::Gauge,
            maps.iter()
                .map(|(map, _, cap)| ([("map", *map)], f64::from(*cap))),
        )?;
        family(
            out,
            "nodelens_events_lost_total",
            "Kernel events that could not be recorded, by reason.",
            MetricType::Counter,
            lost.iter()
                .map(|(reason, n)| ([("reason", *reason)], *n as f64)),
        )?;
        Ok(())
    }
}
