//! Loading and attaching the eBPF programs, each probe on its own.
//!
//! Every probe is tried as a BTF tracepoint first (no tracefs needed, cheaper per event),
//! then as a classic tracepoint. A probe the kernel refuses is logged once with the
//! kernel's reason and reported as `nodelens_probe_up{...} 0`; the rest keep working.
use std::{
    os::fd::OwnedFd,
    path::Path,
    sync::{Mutex, OnceLock},
};

use agent_ebpf::{
    CGROUP_STATS_ENTRIES, CgroupStats, DISK_LAYOUT_GLOBAL, DiskCounters, DiskHistograms,
    DiskInFlight, DiskKey, Log2Histogram, MEMORY_LAYOUT_GLOBAL, MemoryCounters,
    SCHED_LAYOUT_GLOBAL, SchedCounters,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePoint, TracePoint},
};

use crate::config::ProbeAttach;

pub mod btf;
pub mod events;
pub mod layout;
pub mod tracefs;

/// The programs, built from `agent-ebpf` by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// How a probe ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachKind {
    TpBtf,
    Tracepoint,
}

impl AttachKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TpBtf => "tp_btf",
            Self::Tracepoint => "tracepoint",
        }
    }
}

/// A probe family: one collector reads its maps, and it loads only when that collector is
/// enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Sched = 0,
    Disk = 1,
    Memory = 2,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Sched, Family::Disk, Family::Memory];

    /// The collector that reads this family's maps.
    pub fn collector(self) -> &'static str {
        match self {
            Family::Sched => "sched",
            Family::Disk => "block",
            Family::Memory => "memory",
        }
    }
}

/// One kernel event and the two programs that can serve it (kunai's compat-table idea).
#[derive(Debug)]
pub struct ProbeSpec {
    /// The probe's name in metrics: the tracepoint's name.
    pub name: &'static str,
    pub category: &'static str,
    pub family: Family,
    /// Probes of one group attach with the same attach type, because their programs must
    /// agree on how they key shared state (block requests: address vs. dev and sector).
    pub group: &'static str,
    pub btf_program: &'static str,
    pub tracepoint_program: &'static str,
}

const fn probe(
    name: &'static str,
    category: &'static str,
    family: Family,
    group: &'static str,
    btf_program: &'static str,
    tracepoint_program: &'static str,
) -> ProbeSpec {
    ProbeSpec {
        name,
        category,
        family,
        group,
        btf_program,
        tracepoint_program,
    }
}

pub const PROBES: &[ProbeSpec] = &[
    probe(
        "sched_wakeup",
        "sched",
        Family::Sched,
        "sched_wakeup",
        "sched_wakeup_btf",
        "sched_wakeup_tp",
    ),
    probe(
        "sched_wakeup_new",
        "sched",
        Family::Sched,
        "sched_wakeup_new",
        "sched_wakeup_new_btf",
        "sched_wakeup_new_tp",
    ),
    probe(
        "sched_switch",
        "sched",
        Family::Sched,
        "sched_switch",
        "sched_switch_btf",
        "sched_switch_tp",
    ),
    probe(
        "block_rq_issue",
        "block",
        Family::Disk,
        "block",
        "block_rq_issue_btf",
        "block_rq_issue_tp",
    ),
    probe(
        "block_rq_complete",
        "block",
        Family::Disk,
        "block",
        "block_rq_complete_btf",
        "block_rq_complete_tp",
    ),
    probe(
        "mm_vmscan_direct_reclaim_begin",
        "vmscan",
        Family::Memory,
        "direct_reclaim",
        "direct_reclaim_begin_btf",
        "direct_reclaim_begin_tp",
    ),
    probe(
        "mm_vmscan_direct_reclaim_end",
        "vmscan",
        Family::Memory,
        "direct_reclaim",
        "direct_reclaim_end_btf",
        "direct_reclaim_end_tp",
    ),
    probe(
        "mm_vmscan_memcg_reclaim_begin",
        "vmscan",
        Family::Memory,
        "memcg_reclaim",
        "memcg_reclaim_begin_btf",
        "memcg_reclaim_begin_tp",
    ),
    probe(
        "mm_vmscan_memcg_reclaim_end",
        "vmscan",
        Family::Memory,
        "memcg_reclaim",
        "memcg_reclaim_end_btf",
        "memcg_reclaim_end_tp",
    ),
    probe(
        "mark_victim",
        "oom",
        Family::Memory,
        "mark_victim",
        "mark_victim_btf",
        "mark_victim_tp",
    ),
];

#[derive(Debug, Clone)]
pub struct ProbeStatus {
    pub name: &'static str,
    pub attach: Option<AttachKind>,
    /// Program name in the object, for BPF stats.
    pub program: Option<&'static str>,
    /// Why it is not attached, or why the preferred attach type was not used.
    pub note: Option<String>,
}

impl ProbeStatus {
    pub fn is_up(&self) -> bool {
        self.attach.is_some()
    }
}

/// Scheduler maps, read at scrape time.
pub struct SchedMaps {
    pub counters: PerCpuArray<MapData, SchedCounters>,
    pub start: HashMap<MapData, u32, u64>,
    /// All of sched_wakeup, sched_wakeup_new and sched_switch attached.
    pub runqueue_complete: bool,
    /// sched_switch attached.
    pub switch_up: bool,
}

/// Block I/O maps.
pub struct DiskMaps {
    pub histograms: PerCpuHashMap<MapData, DiskKey, DiskHistograms>,
    /// Behind a lock: the stale-entry sweep removes from it.
    pub inflight: Mutex<HashMap<MapData, u64, DiskInFlight>>,
    pub counters: PerCpuArray<MapData, DiskCounters>,
    /// block_rq_issue and block_rq_complete attached.
    pub up: bool,
}

/// Reclaim and OOM maps.
pub struct MemoryMaps {
    pub reclaim: PerCpuArray<MapData, Log2Histogram>,
    pub counters: PerCpuArray<MapData, MemoryCounters>,
    pub start: HashMap<MapData, u64, u64>,
    pub direct_up: bool,
    pub memcg_up: bool,
    pub oom_up: bool,
}

/// Everything loading produced. Dropping it detaches every program.
pub struct LoadedProbes {
    pub statuses: Vec<ProbeStatus>,
    /// The object, for BPF statistics on its programs; `None` when it could not load.
    pub ebpf: Mutex<Option<Ebpf>>,
    pub sched: Option<SchedMaps>,
    pub disk: Option<DiskMaps>,
    pub memory: Option<MemoryMaps>,
    /// Per-cgroup totals (sched and memory probes write them). Behind a lock: user space
    /// deletes the entries of cgroups that are gone.
    pub cgroup_stats: Option<Mutex<HashMap<MapData, u64, CgroupStats>>>,
    /// The per-cgroup map's size, set at load time.
    pub cgroup_stats_capacity: u32,
    /// Kernel BPF run-time statistics are on, or why not.
    pub bpf_stats: Result<(), String>,
    _bpf_stats_fd: Option<OwnedFd>,
    /// OOM kills by the victim's cgroup, filled from the ring buffer.
    pub oom: Mutex<OomTable>,
}

/// OOM kills per victim cgroup, keyed by the cgroup's path.
#[derive(Debug, Default)]
pub struct OomTable {
    pub rows: std::collections::HashMap<String, OomRow>,
    /// Kills of rows removed after their cgroup was gone; still part of the node total.
    pub retired_kills: u64,
}

#[derive(Debug)]
pub struct OomRow {
    pub labels: crate::cgroups::CgroupLabels,
    pub kills: u64,
    /// Seen gone at the previous scrape, which exported it one last time.
    pub gone: bool,
}

/// Shared between the loader, the collectors and the HTTP pages.
#[derive(Default)]
pub struct Probes {
    pub loaded: OnceLock<LoadedProbes>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("loaded", &self.loaded.get().is_some())
            .finish()
    }
}

impl LoadedProbes {
    fn empty(statuses: Vec<ProbeStatus>, bpf_stats: Result<(), String>) -> Self {
        Self {
            statuses,
            ebpf: Mutex::new(None),
            sched: None,
            disk: None,
            memory: None,
            cgroup_stats: None,
            cgroup_stats_capacity: 0,
            bpf_stats,
            _bpf_stats_fd: None,
            oom: Mutex::new(OomTable::default()),
        }
    }

    /// (probe, run count, run time in seconds) for every attached probe, from the kernel's
    /// BPF statistics. Zero while statistics are off.
    pub fn program_stats(&self) -> Vec<(&'static str, u64, f64)> {
        let guard = self.ebpf.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ebpf) = guard.as_ref() else {
            return Vec::new();
        };
        self.statuses
            .iter()
            .filter_map(|s| {
                let program = ebpf.program(s.program?)?;
                let info = match s.attach? {
                    AttachKind::TpBtf => <&BtfTracePoint>::try_from(program).ok()?.info(),
                    AttachKind::Tracepoint => <&TracePoint>::try_from(program).ok()?.info(),
                }
                .ok()?;
                Some((s.name, info.run_count(), info.run_time().as_secs_f64()))
            })
            .collect()
    }
}

/// One line out of an error chain; verifier logs are cut to their last line, which is the
/// one that says why.
pub fn reason(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        let text = match text.split_once("Verifier output:") {
            Some((head, log)) => {
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                format!("{}(verifier: {})", head, last.trim())
            }
            None => text,
        };
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text.lines().next().unwrap_or("").to_owned());
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones use memcg and
/// ignore it. Raising it needs CAP_SYS_RESOURCE, so failure is only worth a debug line.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "cannot raise RLIMIT_MEMLOCK: {} (only matters before kernel 5.11)",
            std::io::Error::last_os_error()
        );
    }
}

/// Turns on the kernel's per-program run time and count (BPF_ENABLE_STATS, which needs
/// CAP_SYS_ADMIN), or finds them already on through `kernel.bpf_stats_enabled`.
fn enable_bpf_stats() -> (Result<(), String>, Option<OwnedFd>) {
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => (Ok(()), Some(fd)),
        Err(e) => {
            let sysctl =
                std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
            if sysctl.trim() == "1" {
                (Ok(()), None)
            } else {
                let why = format!(
                    "BPF run-time statistics are off: {} (needs CAP_SYS_ADMIN, or set sysctl kernel.bpf_stats_enabled=1 on the host); nodelens_probe_run* stay 0",
                    reason(&e)
                );
                tracing::warn!("{why}");
                (Err(why), None)
            }
        }
    }
}

/// Loads the object, attaches every probe of the enabled families, and returns the maps.
/// Never fails as a whole: what cannot work is reported in the statuses.
/// What `load` hands back: the probes for the collectors, and the two event sources that
/// need a task on the async runtime.
pub struct Loaded {
    pub probes: LoadedProbes,
    /// The offsets resolved for this kernel.
    pub layout: layout::Layout,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub oom_ring: Option<RingBuf<MapData>>,
}

/// Size of the per-cgroup map for a cap on exported cgroups: room for the cap, the cgroups
/// folded into "other", and gone ones waiting for their last scrape.
pub fn cgroup_stats_capacity(max_tracked: usize) -> u32 {
    (max_tracked.saturating_mul(4) as u32).max(CGROUP_STATS_ENTRIES)
}

pub fn load(mode: ProbeAttach, families: &[Family], max_cgroups: usize) -> Loaded {
    raise_memlock();
    let wanted: Vec<&ProbeSpec> = PROBES
        .iter()
        .filter(|p| families.contains(&p.family))
        .collect();
    let tracefs_dir = tracefs::find();
    if tracefs_dir.is_none() && mode != ProbeAttach::BtfOnly {
        tracing::info!(
            "{}; classic tracepoints are unavailable",
            tracefs::NOT_MOUNTED
        );
    }
    let own_btf = btf::Btf::from_file(Path::new(BTF_PATH));
    let aya_btf = aya::Btf::from_sys_fs().ok();
    let layout = layout::resolve(
        own_btf.as_ref().map_err(|e| e.to_string()),
        tracefs_dir.as_deref(),
    );
    drop(own_btf); // several MB; only the offsets are kept
    tracing::debug!(?layout, "kernel layout");

    let down = |why: &str| -> Vec<ProbeStatus> {
        wanted
            .iter()
            .map(|p| ProbeStatus {
                name: p.name,
                attach: None,
                program: None,
                note: Some(why.to_owned()),
            })
            .collect()
    };
    let cgroup_capacity = cgroup_stats_capacity(max_cgroups);
    let mut ebpf = match EbpfLoader::new()
        .btf(aya_btf.as_ref())
        .map_max_entries("CGROUP_STATS", cgroup_capacity)
        .override_global(SCHED_LAYOUT_GLOBAL, &layout.sched, true)
        .override_global(DISK_LAYOUT_GLOBAL, &layout.disk, true)
        .override_global(MEMORY_LAYOUT_GLOBAL, &layout.memory, true)
        .load(EBPF_OBJECT)
    {
        Ok(ebpf) => ebpf,
        Err(e) => {
            let why = format!(
                "cannot load the eBPF object: {} (needs CAP_BPF and CAP_PERFMON, or root)",
                reason(&e)
            );
            tracing::error!("{why}");
            return Loaded {
                probes: LoadedProbes::empty(down(&why), Err(why.clone())),
                layout,
                logger: None,
                oom_ring: None,
            };
        }
    };
    let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("eBPF log forwarding disabled: {}", reason(&e));
            None
        }
    };
    let (bpf_stats, stats_fd) = enable_bpf_stats();

    let mut statuses: Vec<ProbeStatus> = Vec::with_capacity(wanted.len());
    let mut groups: Vec<&str> = wanted.iter().map(|p| p.group).collect();
    groups.dedup();
    for group in groups {
        let members: Vec<&ProbeSpec> = wanted
            .iter()
            .copied()
            .filter(|p| p.group == group)
            .collect();
        for status in attach_group(&mut ebpf, &members, mode, aya_btf.as_ref(), &layout) {
            match (&status.attach, &status.note) {
                (Some(kind), None) => tracing::info!(
                    probe = status.name,
                    attach = kind.as_str(),
                    "probe attached"
                ),
                (Some(kind), Some(note)) => tracing::info!(
                    probe = status.name,
                    attach = kind.as_str(),
                    "probe attached ({note})"
                ),
                (None, note) => tracing::warn!(
                    probe = status.name,
                    "probe not attached: {}",
                    note.as_deref().unwrap_or("unknown reason")
                ),
            }
            statuses.push(status);
        }
    }

    let up = |name: &str| statuses.iter().any(|s| s.name == name && s.is_up());
    let enabled = |f: Family| families.contains(&f);
    let sched = enabled(Family::Sched)
        .then(|| {
            Some(SchedMaps {
                counters: PerCpuArray::try_from(ebpf.take_map("SCHED_COUNTERS")?).ok()?,
                start: HashMap::try_from(ebpf.take_map("RUNQUEUE_START")?).ok()?,
                runqueue_complete: up("sched_wakeup")
                    && up("sched_wakeup_new")
                    && up("sched_switch"),
                switch_up: up("sched_switch"),
            })
        })
        .flatten();
    let disk = enabled(Family::Disk)
        .then(|| {
            Some(DiskMaps {
                histograms: PerCpuHashMap::try_from(ebpf.take_map("DISK_HISTOGRAMS")?).ok()?,
                inflight: Mutex::new(HashMap::try_from(ebpf.take_map("DISK_INFLIGHT")?).ok()?),
                counters: PerCpuArray::try_from(ebpf.take_map("DISK_COUNTERS")?).ok()?,
                up: up("block_rq_issue") && up("block_rq_complete"),
            })
        })
        .flatten();
    let memory = enabled(Family::Memory)
        .then(|| {
            Some(MemoryMaps {
                reclaim: PerCpuArray::try_from(ebpf.take_map("RECLAIM_LATENCY")?).ok()?,
                counters: PerCpuArray::try_from(ebpf.take_map("MEMORY_COUNTERS")?).ok()?,
                start: HashMap::try_from(ebpf.take_map("RECLAIM_START")?).ok()?,
                direct_up: up("mm_vmscan_direct_reclaim_begin")
                    && up("mm_vmscan_direct_reclaim_end"),
                memcg_up: up("mm_vmscan_memcg_reclaim_begin") && up("mm_vmscan_memcg_reclaim_end"),
                oom_up: up("mark_victim"),
            })
        })
        .flatten();
    for (family, present) in [
        (Family::Sched, sched.is_some()),
        (Family::Disk, disk.is_some()),
        (Family::Memory, memory.is_some()),
    ] {
        if enabled(family) && !present {
            tracing::error!(
                "{} maps missing from the eBPF object; this is a build bug",
                family.collector()
            );
        }
    }
    let oom_ring = if enabled(Family::Memory) {
        ebpf.take_map("OOM_EVENTS")
            .and_then(|m| RingBuf::try_from(m).ok())
    } else {
        None
    };
    let cgroup_stats = (enabled(Family::Sched) || enabled(Family::Memory))
        .then(|| {
            ebpf.take_map("CGROUP_STATS")
                .and_then(|m| HashMap::try_from(m).ok())
        })
        .flatten()
        .map(Mutex::new);
    let loaded = LoadedProbes {
        statuses,
        ebpf: Mutex::new(Some(ebpf)),
        sched,
        disk,
        memory,
        cgroup_stats,
        cgroup_stats_capacity: cgroup_capacity,
        bpf_stats,
        _bpf_stats_fd: stats_fd,
        oom: Mutex::new(OomTable::default()),
    };
    Loaded {
        probes: loaded,
        layout,
        logger,
        oom_ring,
    }
}

/// Attaches every probe of a group with one attach type: tp_btf first, then classic
/// tracepoints. A member that fails with a type unloads the others before the next try.
fn attach_group(
    ebpf: &mut Ebpf,
    members: &[&ProbeSpec],
    mode: ProbeAttach,
    btf: Option<&aya::Btf>,
    layout: &layout::Layout,
) -> Vec<ProbeStatus> {
    let kinds: &[AttachKind] = match mode {
        ProbeAttach::Auto => &[AttachKind::TpBtf, AttachKind::Tracepoint],
        ProbeAttach::BtfOnly => &[AttachKind::TpBtf],
        ProbeAttach::TracepointOnly => &[AttachKind::Tracepoint],
    };
    let mut notes: Vec<String> = Vec::new();
    for &kind in kinds {
        let mut attached: Vec<&'static str> = Vec::new();
        let mut failure = None;
        for spec in members {
            match attach_one(ebpf, spec, kind, btf, layout) {
                Ok(program) => attached.push(program),
                Err(e) => {
                    failure = Some(format!("{}: {e}", kind.as_str()));
                    break;
                }
            }
        }
        match failure {
            None => {
                let note = (!notes.is_empty()).then(|| notes.join("; "));
                return members
                    .iter()
                    .zip(attached)
                    .map(|(spec, program)| ProbeStatus {
                        name: spec.name,
                        attach: Some(kind),
                        program: Some(program),
                        note: note.clone(),
                    })
                    .collect();
            }
            Some(why) => {
                for program in attached {
                    if let Some(p) = ebpf.program_mut(program) {
                        let _ = match kind {
                            AttachKind::TpBtf => {
                                <&mut BtfTracePoint>::try_from(p).map(|p| p.unload())
                            }
                            AttachKind::Tracepoint => {
                                <&mut TracePoint>::try_from(p).map(|p| p.unload())
                            }
                        };
                    }
                }
                notes.push(why);
            }
        }
    }
    members
        .iter()
        .map(|spec| ProbeStatus {
            name: spec.name,
            attach: None,
            program: None,
            note: Some(notes.join("; ")),
        })
        .collect()
}

/// Loads and attaches one program; returns its name in the object.
fn attach_one(
    ebpf: &mut Ebpf,
    spec: &ProbeSpec,
    kind: AttachKind,
    btf: Option<&aya::Btf>,
    layout: &layout::Layout,
) -> Result<&'static str, String> {
    match kind {
        AttachKind::TpBtf => {
            layout
                .btf_ok(spec.family)
                .map_err(|e| format!("no BTF offsets: {e}"))?;
            let btf = btf.ok_or("no kernel BTF at /sys/kernel/btf/vmlinux")?;
            let program: &mut BtfTracePoint = ebpf
                .program_mut(spec.btf_program)
                .ok_or("program missing from object")?
                .try_into()
                .map_err(|e| reason(&e))?;
            program.load(spec.name, btf).map_err(|e| reason(&e))?;
            if let Err(e) = program.attach() {
                let _ = program.unload();
                return Err(reason(&e));
            }
            Ok(spec.btf_program)
        }
        AttachKind::Tracepoint => {
            layout.tracepoint_ok(spec.family)?;
            let program: &mut TracePoint = ebpf
                .program_mut(spec.tracepoint_program)
                .ok_or("program missing from object")?
                .try_into()
                .map_err(|e| reason(&e))?;
            program.load().map_err(|e| reason(&e))?;
            if let Err(e) = program.attach(spec.category, spec.name) {
                let _ = program.unload();
                return Err(reason(&e));
            }
            Ok(spec.tracepoint_program)
        }
    }
}
