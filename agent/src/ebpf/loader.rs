//! Loading and attaching the eBPF programs, each probe on its own, and the upkeep task that
//! keeps the families' maps healthy.
//!
//! Every probe is tried as a BTF tracepoint first (no tracefs needed, cheaper per event),
//! then as a classic tracepoint. A probe the kernel refuses is logged once with the
//! kernel's reason and reported as `nodelens_probe_up{...} 0`; the rest keep working.
use std::{
    os::fd::OwnedFd,
    path::Path,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{BtfTracePoint, TracePoint},
};
use prometheus_client::encoding::DescriptorEncoder;

use super::{
    btf::Btf,
    families,
    family::{
        AttachKind, Attached, Family, FamilyLayout, Health, KernelSources, LoadContext,
        LoadedFamily, ProbeSpec, ProbeStatus, reason,
    },
    map_memory::MapMemory,
    tracefs,
};
use crate::metrics::{CollectError, Collector};

/// The programs, built from `agent-ebpf` by build.rs: the object that loads on every kernel.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));
/// The same programs with per-task state in task-local storage, for kernels where a family's
/// layout asks for it (`FamilyLayout::task_storage`). Two objects because the kernel
/// creates every map of an object before any program loads, and a kernel without task
/// storage (5.10) refuses the map and with it the whole object.
static EBPF_OBJECT_TASK_STORAGE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf-task-storage"));

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Which attach types the loader may use (`probe_attach`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeAttach {
    /// Prefer `tp_btf`, fall back to classic tracepoints.
    Auto,
    #[value(name = "tp_btf")]
    BtfOnly,
    #[value(name = "tracepoint")]
    TracepointOnly,
}

/// A loaded family and the name that enabled it.
pub struct LoadedEntry {
    pub name: &'static str,
    pub family: Box<dyn LoadedFamily>,
}

/// Everything loading produced. Dropping it detaches every program.
pub struct Loaded {
    pub statuses: Vec<ProbeStatus>,
    pub families: Vec<LoadedEntry>,
    /// The object, for BPF statistics on its programs; `None` when it could not load.
    ebpf: Mutex<Option<Ebpf>>,
    /// The kernel's BPF run-time statistics: `None` unless `--kernel-bpf-stats` asked for
    /// them, then on, or why not.
    pub kernel_stats: Option<Result<(), String>>,
    _bpf_stats_fd: Option<OwnedFd>,
    /// BTF-derived offsets by name, for reports that compare kernels.
    pub offsets: Vec<(String, u32)>,
    /// How each family works on this kernel (its layout's mode), for preflight.
    pub notes: Vec<String>,
    /// The kernel memory of every map of the object.
    pub map_memory: MapMemory,
    logger: Mutex<Option<aya_log::EbpfLogger<&'static dyn log::Log>>>,
    /// The per-cgroup tracker, whose upkeep rounds span every family's tables.
    context: LoadContext,
    /// The sampled run-time estimates as exported, kept from going back.
    run_time: HighWater,
}

/// Keeps an estimate that is exported as a counter from going back. The sampled run time
/// (the timed runs' mean times all runs) dips when a cheap timed run lowers the mean; a
/// rare probe (reclaim) with few timed runs dipped 20 times in an hour's soak. A dip is
/// held at the highest value exported until the estimate passes it again.
#[derive(Debug, Default)]
struct HighWater(Mutex<std::collections::HashMap<&'static str, f64>>);

impl HighWater {
    fn hold(&self, name: &'static str, estimate: f64) -> f64 {
        let mut highest = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let value = highest.entry(name).or_insert(estimate);
        *value = value.max(estimate);
        *value
    }
}

/// Shared between the loader, the collectors and the HTTP pages.
#[derive(Default)]
pub struct Probes {
    pub loaded: OnceLock<Loaded>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("loaded", &self.loaded.get().is_some())
            .finish()
    }
}

impl Probes {
    pub fn family(&self, name: &str) -> Option<&dyn LoadedFamily> {
        self.loaded
            .get()?
            .families
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.family.as_ref())
    }

    /// Detaches every program now (rather than at exit, so that logs saying so are true).
    pub fn detach(&self) {
        if let Some(loaded) = self.loaded.get() {
            loaded.ebpf.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }
}

impl Loaded {
    fn failed(statuses: Vec<ProbeStatus>, why: String, context: LoadContext) -> Self {
        Self {
            statuses,
            families: Vec::new(),
            ebpf: Mutex::new(None),
            kernel_stats: Some(Err(why)),
            _bpf_stats_fd: None,
            offsets: Vec::new(),
            notes: Vec::new(),
            map_memory: MapMemory::default(),
            logger: Mutex::new(None),
            context,
            run_time: HighWater::default(),
        }
    }

    /// (probe, run count, run time in seconds) for every attached probe, from the kernel's
    /// BPF statistics; empty unless `--kernel-bpf-stats` turned them on.
    pub fn kernel_program_stats(&self) -> Vec<(&'static str, u64, f64)> {
        if !matches!(self.kernel_stats, Some(Ok(()))) {
            return Vec::new();
        }
        let guard = self.ebpf.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ebpf) = guard.as_ref() else {
            return Vec::new();
        };
        self.statuses
            .iter()
            .filter_map(|s| {
                let program = ebpf.program(s.program?)?;
                let info = match s.attach {
                    AttachKind::TpBtf => <&BtfTracePoint>::try_from(program).ok()?.info(),
                    AttachKind::Tracepoint => <&TracePoint>::try_from(program).ok()?.info(),
                    AttachKind::None => return None,
                }
                .ok()?;
                Some((s.name, info.run_count(), info.run_time().as_secs_f64()))
            })
            .collect()
    }

    /// One upkeep round over every family. Per-cgroup tables share the tracker's round, so
    /// that a cgroup gone from one table is gone from all.
    pub fn upkeep(&self) {
        self.context.cgroups.lock().begin_round();
        for entry in &self.families {
            entry.family.upkeep();
            for map in entry.family.cgroup_maps() {
                map.sweep();
            }
        }
        self.context.cgroups.lock().end_round();
        self.map_memory.refresh();
    }

    /// Starts the tasks that wait for kernel events. Inside the async runtime only.
    pub fn spawn_event_readers(&self) {
        if let Some(logger) = self.logger.lock().unwrap_or_else(|p| p.into_inner()).take() {
            super::events::spawn_log_forwarder(logger);
        }
        for entry in &self.families {
            entry.family.spawn_event_readers();
        }
    }
}

/// Runs [`Loaded::upkeep`] every `interval` (`--map-upkeep-interval`) on the blocking pool,
/// so that a slow round never delays a scrape, until the runtime stops.
pub fn spawn_upkeep(probes: Arc<Probes>, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let p = probes.clone();
            let round = tokio::task::spawn_blocking(move || {
                if let Some(loaded) = p.loaded.get() {
                    loaded.upkeep();
                }
            });
            if let Err(e) = round.await {
                tracing::error!("map upkeep failed: {e}");
            }
        }
    });
}

/// A family's metrics in the scrape: the collector named like the family.
#[derive(Debug)]
pub struct FamilyCollector {
    pub name: &'static str,
    pub probes: Arc<Probes>,
}

impl Collector for FamilyCollector {
    fn name(&self) -> &'static str {
        self.name
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        // Before loading, or when the object could not load, there is nothing to report;
        // nodelens_probe_up says why.
        match self.probes.family(self.name) {
            Some(family) => family.collect(out),
            None => Ok(()),
        }
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones use memcg and
/// ignore it. Raising it needs CAP_SYS_RESOURCE, so failure is only worth a debug line.
fn raise_memlock() {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let unlimited = Rlimit {
        current: None,
        maximum: None,
    };
    if let Err(e) = setrlimit(Resource::Memlock, unlimited) {
        tracing::debug!("cannot raise RLIMIT_MEMLOCK: {e} (only matters before kernel 5.11)");
    }
}

/// (probe, runs, estimated run time in seconds) for every attached probe, as its programs
/// measured themselves (agent-ebpf's `probes/cost.rs`).
impl Loaded {
    pub fn sampled_program_stats(&self) -> Vec<(&'static str, u64, f64)> {
        let health: Vec<Health> = self.families.iter().map(|e| e.family.health()).collect();
        self.sampled_costs(&health)
    }

    /// The same, from health the caller already read.
    pub fn sampled_costs(&self, health: &[Health]) -> Vec<(&'static str, u64, f64)> {
        let attached: Vec<&str> = self
            .statuses
            .iter()
            .filter(|s| s.is_up())
            .map(|s| s.name)
            .collect();
        health
            .iter()
            .flat_map(|h| h.costs.iter())
            .filter(|(probe, _)| attached.contains(probe))
            .map(|(probe, c)| {
                let seconds = c.estimated_ns().unwrap_or(0.0) / 1e9;
                (*probe, c.runs, self.run_time.hold(probe, seconds))
            })
            .collect()
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
                    "--kernel-bpf-stats: cannot turn the kernel's BPF statistics on: {} (needs CAP_SYS_ADMIN, or set sysctl kernel.bpf_stats_enabled=1 on the host); the probes' own measurements (source=\"sampled\") still work",
                    reason(&e)
                );
                tracing::warn!("{why}");
                (Err(why), None)
            }
        }
    }
}

/// The families of these collectors, in registration order.
pub fn families_for(names: &[&str]) -> Vec<&'static dyn Family> {
    families::ALL
        .iter()
        .copied()
        .filter(|f| names.contains(&f.name()))
        .collect()
}

/// Loads the object, attaches every probe of `wanted`, and lets each family take its maps.
/// Never fails as a whole: what cannot work is reported in the statuses.
pub fn load(
    wanted: &[&'static dyn Family],
    mode: ProbeAttach,
    btf_path: &Path,
    context: LoadContext,
) -> Loaded {
    raise_memlock();
    let tracefs_dir = tracefs::find();
    if tracefs_dir.is_none() && mode != ProbeAttach::BtfOnly {
        tracing::info!(
            "{}; classic tracepoints are unavailable",
            tracefs::NOT_MOUNTED
        );
    }
    // The kernel's BTF is read once: our reader indexes these bytes for offsets, and aya
    // parses the same bytes to load tp_btf programs.
    let btf_bytes = std::fs::read(btf_path).map_err(|e| {
        format!(
            "cannot read {}: {e} (the kernel needs CONFIG_DEBUG_INFO_BTF, 5.4+)",
            btf_path.display()
        )
    });
    let layouts: Vec<FamilyLayout> = {
        let own = btf_bytes
            .as_deref()
            .map_err(Clone::clone)
            .and_then(|b| Btf::parse(b).map_err(|e| e.to_string()));
        wanted
            .iter()
            .map(|f| {
                let btf = own.as_ref().map_err(Clone::clone);
                let sources = KernelSources::for_family(*f, btf, tracefs_dir.as_deref());
                f.layout(&sources, &context)
            })
            .collect()
    };
    let aya_btf = btf_bytes
        .as_deref()
        .ok()
        .and_then(|b| aya::Btf::parse(b, aya::Endianness::default()).ok());
    drop(btf_bytes);
    let offsets: Vec<(String, u32)> = layouts.iter().flat_map(|l| l.offsets.clone()).collect();
    tracing::debug!(?layouts, "kernel layout");

    let all_probes = |why: &str| -> Vec<ProbeStatus> {
        wanted
            .iter()
            .flat_map(|f| f.probes())
            .map(|p| ProbeStatus {
                name: p.name,
                core: p.core,
                attach: AttachKind::None,
                program: None,
                note: Some(why.to_owned()),
            })
            .collect()
    };
    let task_storage = layouts.iter().any(|l| l.task_storage);
    let object = if task_storage {
        EBPF_OBJECT_TASK_STORAGE
    } else {
        EBPF_OBJECT
    };
    let mut loader = EbpfLoader::new();
    loader.btf(aya_btf.as_ref());
    // aya has no type for task storage maps; the programs use them, user space does not.
    loader.allow_unsupported_maps();
    for f in wanted {
        for (map, size) in f.map_sizes(&context) {
            loader.map_max_entries(map, size);
        }
    }
    for layout in &layouts {
        for (name, bytes) in &layout.globals {
            loader.override_global(name, bytes.as_slice(), true);
        }
    }
    let mut ebpf = match loader.load(object) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            let why = format!(
                "cannot load the eBPF object: {} (needs CAP_BPF and CAP_PERFMON, or root)",
                reason(&e)
            );
            tracing::error!("{why}");
            return Loaded::failed(all_probes(&why), why, context);
        }
    };
    let map_memory = MapMemory::of(&ebpf);
    let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("eBPF log forwarding disabled: {}", reason(&e));
            None
        }
    };
    // The kernel's statistics tax every BPF program on the node while on: only on request.
    let (kernel_stats, stats_fd) = if context.kernel_bpf_stats {
        let (on, fd) = enable_bpf_stats();
        (Some(on), fd)
    } else {
        (None, None)
    };

    // A family whose maps could not be readied is not taken: it fails as a collector,
    // rather than export what its programs could not count.
    let prepared: Vec<bool> = wanted
        .iter()
        .map(|family| match family.prepare(&mut ebpf) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(family = family.name(), "{e}");
                false
            }
        })
        .collect();
    let mut statuses: Vec<ProbeStatus> = Vec::new();
    let mut families = Vec::with_capacity(wanted.len());
    let mut notes = Vec::new();
    for ((family, layout), prepared) in wanted.iter().zip(&layouts).zip(prepared) {
        let first = statuses.len();
        if let Some(mode) = &layout.mode {
            tracing::info!(family = family.name(), "{mode}");
            notes.push(format!("{}: {mode}", family.name()));
        }
        let mut groups: Vec<&str> = family.probes().iter().map(|p| p.group).collect();
        groups.dedup();
        for group in groups {
            let members: Vec<&ProbeSpec> = family
                .probes()
                .iter()
                .filter(|p| p.group == group)
                .collect();
            // Fallback probes are left out when the family's first probe attached as tp_btf:
            // its program does their work.
            let first_is_btf = statuses
                .get(first)
                .is_some_and(|s: &ProbeStatus| s.attach == AttachKind::TpBtf);
            if first_is_btf
                && members
                    .iter()
                    .all(|m| layout.fallback_probes.contains(&m.name))
            {
                tracing::debug!(
                    group,
                    "not needed: {} attached as tp_btf",
                    statuses[first].name
                );
                continue;
            }
            for status in attach_group(&mut ebpf, &members, mode, aya_btf.as_ref(), layout) {
                log_status(&status);
                statuses.push(status);
            }
        }
        if !prepared {
            continue;
        }
        let attached = Attached {
            statuses: &statuses[first..],
            globals: &layout.globals,
        };
        match family.take(&mut ebpf, &attached, &context) {
            Ok(loaded) => families.push(LoadedEntry {
                name: family.name(),
                family: loaded,
            }),
            Err(e) => tracing::error!(family = family.name(), "{e}"),
        }
    }
    Loaded {
        statuses,
        families,
        ebpf: Mutex::new(Some(ebpf)),
        kernel_stats,
        _bpf_stats_fd: stats_fd,
        offsets,
        notes,
        map_memory,
        logger: Mutex::new(logger),
        context,
        run_time: HighWater::default(),
    }
}

fn log_status(status: &ProbeStatus) {
    match (status.attach, &status.note) {
        (AttachKind::None, note) => tracing::warn!(
            probe = status.name,
            "probe not attached: {}",
            note.as_deref().unwrap_or("unknown reason")
        ),
        (kind, None) => tracing::info!(
            probe = status.name,
            attach = kind.as_str(),
            "probe attached"
        ),
        (kind, Some(note)) => tracing::info!(
            probe = status.name,
            attach = kind.as_str(),
            "probe attached ({note})"
        ),
    }
}

/// Attaches every probe of a group with one attach type: tp_btf first, then classic
/// tracepoints. A member that fails with a type unloads the others before the next try.
fn attach_group(
    ebpf: &mut Ebpf,
    members: &[&ProbeSpec],
    mode: ProbeAttach,
    btf: Option<&aya::Btf>,
    layout: &FamilyLayout,
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
                        core: spec.core,
                        attach: kind,
                        program: Some(program),
                        note: note.clone(),
                    })
                    .collect();
            }
            Some(why) => {
                for program in attached {
                    unload(ebpf, program, kind);
                }
                notes.push(why);
            }
        }
    }
    members
        .iter()
        .map(|spec| ProbeStatus {
            name: spec.name,
            core: spec.core,
            attach: AttachKind::None,
            program: None,
            note: Some(notes.join("; ")),
        })
        .collect()
}

fn unload(ebpf: &mut Ebpf, program: &str, kind: AttachKind) {
    if let Some(p) = ebpf.program_mut(program) {
        let _ = match kind {
            AttachKind::TpBtf => <&mut BtfTracePoint>::try_from(p).map(|p| p.unload()),
            AttachKind::Tracepoint => <&mut TracePoint>::try_from(p).map(|p| p.unload()),
            AttachKind::None => return,
        };
    }
}

/// Loads and attaches one program; returns its name in the object.
fn attach_one(
    ebpf: &mut Ebpf,
    spec: &ProbeSpec,
    kind: AttachKind,
    btf: Option<&aya::Btf>,
    layout: &FamilyLayout,
) -> Result<&'static str, String> {
    if let Some((_, _, why)) = layout
        .probe_failures
        .iter()
        .find(|(probe, k, _)| *probe == spec.name && *k == kind)
    {
        return Err(why.clone());
    }
    match kind {
        AttachKind::TpBtf => {
            layout
                .btf
                .clone()
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
            layout.tracepoint.clone()?;
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
        AttachKind::None => Err("not attached".into()),
    }
}

#[cfg(test)]
mod tests {
    use agent_ebpf::sched::names::{BLOCKED_START, BLOCKED_START_TASK};

    use super::{EBPF_OBJECT, EBPF_OBJECT_TASK_STORAGE, HighWater, families};

    #[test]
    fn every_name_a_family_uses_is_in_both_objects() {
        for (bytes, store, not) in [
            (EBPF_OBJECT, BLOCKED_START, BLOCKED_START_TASK),
            (EBPF_OBJECT_TASK_STORAGE, BLOCKED_START_TASK, BLOCKED_START),
        ] {
            let object = aya_obj::Object::parse(bytes).expect("the built eBPF object parses");
            assert!(object.maps.contains_key(store), "no {store} in the object");
            assert!(
                !object.maps.contains_key(not),
                "{not} in the object with {store}"
            );
            every_name_in(&object);
        }
        let with = aya_obj::Object::parse(EBPF_OBJECT_TASK_STORAGE).expect("parses");
        let map = &with.maps[BLOCKED_START_TASK];
        assert_eq!(map.map_type(), 29, "BPF_MAP_TYPE_TASK_STORAGE");
        assert_eq!(map.key_size(), 4);
        assert_eq!(
            map.value_size() as usize,
            size_of::<agent_ebpf::sched::BlockStart>()
        );
    }

    fn every_name_in(object: &aya_obj::Object) {
        assert!(!families::ALL.is_empty());
        for family in families::ALL {
            for map in family.maps() {
                assert!(
                    object.maps.contains_key(*map),
                    "{}: no map {map} in the object",
                    family.name()
                );
            }
            for spec in family.probes() {
                for program in [spec.btf_program, spec.tracepoint_program] {
                    assert!(
                        object.programs.contains_key(program),
                        "{}: no program {program} in the object",
                        family.name()
                    );
                }
            }
        }
    }

    #[test]
    fn a_dipping_estimate_is_held_until_it_passes_its_highest() {
        let held = HighWater::default();
        assert_eq!(held.hold("p", 2.0), 2.0);
        assert_eq!(held.hold("p", 1.5), 2.0, "held at the highest");
        assert_eq!(held.hold("q", 1.0), 1.0, "per probe");
        assert_eq!(
            held.hold("p", 2.5),
            2.5,
            "then it follows the estimate again"
        );
    }
}
