//! What a probe family is, to the loader: its probes, its kernel layout, its maps, and
//! what it does with them (upkeep, collection, health).
//!
//! A family is one module on each side: `agent-ebpf/src/probes/<family>.rs` (programs, maps
//! and the types they share with user space) and `agent/src/ebpf/families/<family>.rs`,
//! which implements [`Family`] and [`LoadedFamily`] here. The loader, the upkeep task, the
//! scrape and preflight only ever see these two traits.
use std::{
    any::Any,
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use agent_ebpf::cost::ProbeCost;
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use prometheus_client::encoding::DescriptorEncoder;

use super::{
    btf::{Btf, BtfError, Member},
    tracefs,
};
use crate::{cgroups::tracker::CgroupTracker, metrics::CollectError};

pub use nodelens_report::AttachKind;

/// One kernel event and the two programs that can serve it (kunai's compat-table idea).
#[derive(Debug)]
pub struct ProbeSpec {
    /// The probe's name in metrics: the tracepoint's name.
    pub name: &'static str,
    /// The tracepoint's category in tracefs (`events/<category>/<name>`).
    pub category: &'static str,
    /// Probes of one group attach with the same attach type, because their programs must
    /// agree on how they key shared state (block requests: address vs. dev and sector).
    pub group: &'static str,
    pub btf_program: &'static str,
    pub tracepoint_program: &'static str,
    /// nodelens is not worth running without it: preflight fails when it cannot attach.
    pub core: bool,
}

#[derive(Debug, Clone)]
pub struct ProbeStatus {
    pub name: &'static str,
    pub core: bool,
    pub attach: AttachKind,
    /// Program name in the object, for BPF stats.
    pub program: Option<&'static str>,
    /// Why it is not attached, or why the preferred attach type was not used.
    pub note: Option<String>,
}

impl ProbeStatus {
    pub fn is_up(&self) -> bool {
        self.attach != AttachKind::None
    }
}

/// The attach outcome of every probe of one family, for its `take`.
pub struct Attached<'a> {
    pub statuses: &'a [ProbeStatus],
    /// The globals the family's layout set before loading.
    pub globals: &'a [(&'static str, Vec<u8>)],
}

impl Attached<'_> {
    pub fn up(&self, probe: &str) -> bool {
        self.statuses.iter().any(|s| s.name == probe && s.is_up())
    }

    /// The value the layout gave the global `name`, if it set one of `T`'s size.
    pub fn global<T: aya::Pod>(&self, name: &str) -> Option<T> {
        let (_, bytes) = self.globals.iter().find(|(n, _)| *n == name)?;
        (bytes.len() == std::mem::size_of::<T>())
            // SAFETY: Pod types are plain data, valid for any bytes of their size.
            .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    pub fn all_up(&self, probes: &[&str]) -> bool {
        probes.iter().all(|p| self.up(p))
    }

    /// How `probe` attached, if it was tried at all.
    pub fn attach(&self, probe: &str) -> Option<AttachKind> {
        self.statuses
            .iter()
            .find(|s| s.name == probe)
            .map(|s| s.attach)
    }

    /// Whether `probe` was tried (fallback probes that were not needed are not).
    pub fn listed(&self, probe: &str) -> bool {
        self.statuses.iter().any(|s| s.name == probe)
    }
}

/// What a family reads from the kernel: the BTF structs whose members it resolves, and the
/// tracepoints whose BTF prototype or `format` file it reads. The family's layout can read
/// nothing else (see [`KernelSources`]), so this list is complete, and the BTF test fixtures
/// are pruned to the union of every family's.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelReads {
    pub structs: &'static [&'static str],
    /// Tracepoint names (`sched_switch`), whichever attach type reads them.
    pub tracepoints: &'static [&'static str],
}

/// This kernel's BTF as one family may read it: only the structs and tracepoints of its
/// [`KernelReads`]. Reading anything else is an error that names the struct, so a family
/// that forgets a declaration fails its layout tests at once.
#[derive(Clone, Copy)]
pub struct FamilyBtf<'a> {
    btf: &'a Btf<'a>,
    reads: KernelReads,
}

impl FamilyBtf<'_> {
    fn declared(&self, strukt: &str) -> Result<(), BtfError> {
        if self.reads.structs.contains(&strukt) {
            Ok(())
        } else {
            Err(BtfError::Undeclared(strukt.to_owned()))
        }
    }

    pub fn member(&self, strukt: &str, candidates: &[&str]) -> Result<Member, BtfError> {
        self.declared(strukt)?;
        self.btf.member(strukt, candidates)
    }

    /// Whether `strukt` has `field`; an undeclared struct is an error, never a silent `false`
    /// that would switch a layout branch.
    pub fn has_member(&self, strukt: &str, field: &str) -> Result<bool, BtfError> {
        self.declared(strukt)?;
        Ok(self.btf.has_member(strukt, field))
    }

    pub fn tracepoint_args(&self, event: &str) -> Option<Vec<String>> {
        if !self.reads.tracepoints.contains(&event) {
            tracing::error!("tracepoint {event} is not in the family's KernelReads (a build bug)");
            return None;
        }
        self.btf.tracepoint_args(event)
    }
}

/// Where offsets come from on this kernel, for one family: its BTF (read once, see
/// `loader::load`) and the tracepoint format files, each limited to the family's
/// [`KernelReads`].
pub struct KernelSources<'a> {
    pub btf: Result<FamilyBtf<'a>, String>,
    pub tracefs: Option<&'a std::path::Path>,
    reads: KernelReads,
}

impl<'a> KernelSources<'a> {
    /// The kernel as `family` may read it.
    pub fn for_family(
        family: &dyn Family,
        btf: Result<&'a Btf<'a>, String>,
        tracefs: Option<&'a std::path::Path>,
    ) -> Self {
        let reads = family.kernel_reads();
        Self {
            btf: btf.map(|btf| FamilyBtf { btf, reads }),
            tracefs,
            reads,
        }
    }

    /// Classic tracepoints can attach (tracefs is mounted), or why not: for a family whose
    /// classic programs read no `format` field.
    pub fn tracefs_mounted(&self) -> Result<(), String> {
        self.tracefs
            .map(drop)
            .ok_or_else(|| tracefs::NOT_MOUNTED.to_owned())
    }

    /// A `format` file field's offset, or why not.
    pub fn tp_field(
        &self,
        category: &str,
        event: &str,
        field: &str,
    ) -> Result<tracefs::Field, String> {
        if !self.reads.tracepoints.contains(&event) {
            return Err(format!(
                "tracepoint {event} is not in the family's KernelReads (a build bug)"
            ));
        }
        let dir = self.tracefs.ok_or(tracefs::NOT_MOUNTED)?;
        tracefs::field(dir, category, event, field)
    }
}

/// What a family resolved for this kernel.
#[derive(Debug)]
pub struct FamilyLayout {
    /// Globals to set before loading: (name in the object, the value's bytes).
    pub globals: Vec<(&'static str, Vec<u8>)>,
    /// Offsets for the tp_btf programs came from BTF, or why not.
    pub btf: Result<(), String>,
    /// Offsets for the classic tracepoint programs came from format files, or why not.
    pub tracepoint: Result<(), String>,
    /// BTF-derived offsets by name, for reports that compare kernels.
    pub offsets: Vec<(String, u32)>,
    /// Probes that only serve as a fallback: they are attached only when the family's first
    /// probe did not attach as tp_btf (its tp_btf program does their work itself).
    pub fallback_probes: Vec<&'static str>,
    /// How the family works on this kernel, for logs and preflight (for example where the
    /// run-queue wait comes from).
    pub mode: Option<String>,
    /// One probe's own offsets are missing while the family's other probes need none of
    /// them: (probe, attach kind, why). Only that probe is refused.
    pub probe_failures: Vec<(&'static str, AttachKind, String)>,
    /// The family's programs keep per-task state in task-local storage on this kernel: the
    /// loader then loads the object built with it (`agent-ebpf-task-storage`).
    pub task_storage: bool,
}

impl FamilyLayout {
    /// A layout with the given globals and outcomes, no fallbacks and no mode note.
    pub fn new(
        globals: Vec<(&'static str, Vec<u8>)>,
        btf: Result<(), String>,
        tracepoint: Result<(), String>,
        offsets: Vec<(String, u32)>,
    ) -> Self {
        Self {
            globals,
            btf,
            tracepoint,
            offsets,
            fallback_probes: Vec::new(),
            mode: None,
            probe_failures: Vec::new(),
            task_storage: false,
        }
    }
}

/// The bytes of a `#[repr(C)]` layout struct, for `EbpfLoader::override_global`.
pub fn global_bytes<T: aya::Pod>(value: &T) -> Vec<u8> {
    // SAFETY: Pod types are plain data without padding-dependent invariants.
    unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
    .to_vec()
}

/// What every family may use while it loads and runs.
#[derive(Debug, Clone)]
pub struct LoadContext {
    /// Ids to paths and labels, and which cgroups are exported one by one.
    pub cgroups: Arc<CgroupTracker>,
    /// Per-cgroup accounting is on (the `cgroup` collector is enabled). When it is off, the
    /// programs skip their per-cgroup updates altogether.
    pub per_cgroup: bool,
    /// Each family's own settings, as it validated them ([`Family::settings`]).
    pub settings: FamilySettings,
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    /// The cgroup2 mount (to see which controllers it has).
    pub cgroup_root: PathBuf,
    pub max_cgroups: usize,
    /// Turn the kernel's global BPF statistics on too (`--kernel-bpf-stats`).
    pub kernel_bpf_stats: bool,
}

/// A family's settings, as the family validated them.
pub type SettingsValue = Arc<dyn Any + Send + Sync>;

/// Every family's validated settings, by family name: what [`Family::settings`] returned.
#[derive(Clone, Default)]
pub struct FamilySettings(BTreeMap<&'static str, SettingsValue>);

impl FamilySettings {
    pub fn insert(&mut self, family: &'static str, value: SettingsValue) {
        self.0.insert(family, value);
    }

    /// `family`'s settings, when it has some of type `T`.
    pub fn get<T: Any>(&self, family: &str) -> Option<&T> {
        self.0.get(family)?.downcast_ref()
    }
}

impl std::fmt::Debug for FamilySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// One of a family's own settings ([`Family::flags`]): a flag with its environment
/// variable, and where it goes in the config file.
#[derive(Debug, Clone)]
pub struct FamilyFlag {
    /// The file key, dotted (`cgroups.series`). The flag's value lands there in the merged
    /// settings, and errors name it.
    pub key: &'static str,
    /// The flag: long name, value name (the long name with `_`, as `--help` shows the
    /// others), `env` and help (with its default, as the others say it). With a value
    /// delimiter it takes a list, as the file's key does. `config` sets its id to `key` and
    /// makes it global.
    pub arg: clap::Arg,
}

/// A per-cgroup series a family exports ([`Family::cgroup_series`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupSeriesName {
    /// The name `cgroups.series` takes (`runqueue_wait`).
    pub name: &'static str,
    /// Exported when `cgroups.series` is not set. The defaults are chosen for a busy
    /// node's response size (docs/metrics.md gives each series' bytes per pod).
    pub default: bool,
}

/// The pointer of `cgroups.series` in the merged settings.
const CGROUP_SERIES_POINTER: &str = "/cgroups/series";

/// The names `cgroups.series` gives (trimmed), or `None` when it is not set. Config checks
/// them (a list, each some family's or `all`, at least one) before any family reads them.
pub fn cgroup_series_given(merged: &serde_json::Value) -> Option<Vec<String>> {
    match merged.pointer(CGROUP_SERIES_POINTER)? {
        serde_json::Value::Array(names) => Some(
            names
                .iter()
                .map(|n| n.as_str().unwrap_or_default().trim().to_ascii_lowercase())
                .collect(),
        ),
        serde_json::Value::Null => None,
        other => Some(vec![other.to_string()]),
    }
}

/// Which of a family's series (`own`, from its [`Family::cgroup_series`]) are chosen, in
/// `own`'s order: its defaults when `cgroups.series` is not set, all of them for `all`,
/// else those named, its defaults among them for `default` (so `default,cpu_pressure`
/// adds one to the defaults).
pub fn chosen_cgroup_series(
    merged: &serde_json::Value,
    own: &'static [CgroupSeriesName],
) -> Vec<&'static str> {
    let given = cgroup_series_given(merged);
    own.iter()
        .filter(|s| match &given {
            None => s.default,
            Some(names) => names
                .iter()
                .any(|n| n == "all" || n == s.name || (n == "default" && s.default)),
        })
        .map(|s| s.name)
        .collect()
}

/// A family's duration setting (`15s`, `500ms`) at the dotted file `key` of the merged
/// settings, at least `min`; `default` when it is not set.
pub fn duration_setting(
    merged: &serde_json::Value,
    key: &'static str,
    default: std::time::Duration,
    min: std::time::Duration,
) -> Result<std::time::Duration, SettingError> {
    let invalid = |detail: String| SettingError { field: key, detail };
    match merged.pointer(&format!("/{}", key.replace('.', "/"))) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(serde_json::Value::String(text)) => crate::duration::parse(text, min).map_err(invalid),
        Some(other) => Err(invalid(format!(
            "{other} is not a duration (write for example 5s, 500ms or 1m)"
        ))),
    }
}

/// A setting a family refused: the file key (flags and variables are named after it) and
/// what is wrong with the value, with the fix. `config` prints it on one line, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub field: &'static str,
    pub detail: String,
}

/// What a family's exercise may use.
#[derive(Debug, Clone, Copy)]
pub struct ExerciseContext<'a> {
    /// A disk to read from: `--exercise-device`, or the first disk in sysfs.
    pub device: Option<&'a std::path::Path>,
    /// The cgroup2 hierarchy, where the agent may create a cgroup.
    pub cgroup_root: Option<&'a std::path::Path>,
}

/// One piece of work a family's exercise did.
#[derive(Debug)]
pub struct Workload {
    /// Its row in the report (`scheduler`, `block`).
    pub name: &'static str,
    /// What it did, or why it could not run.
    pub outcome: Result<String, String>,
    /// The probes that must see events when it ran: with none, the probe does not work on
    /// this kernel. Preflight marks them (`expect_events`) and the kernel matrix fails on
    /// them; preflight itself fails only on core probes.
    pub fires: &'static [&'static str],
}

/// A probe family, before loading.
pub trait Family: Sync {
    /// One name everywhere: the collector that enables it (`--collectors-enabled`), its
    /// modules, its settings, its docs/metrics.md rows.
    fn name(&self) -> &'static str;
    /// Former names `--collectors-enabled` still accepts.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// Its own flags, each with its environment variable and file key: `config` adds them
    /// to the command line beside the agent's own and accepts their keys in the file.
    fn flags(&self) -> Vec<FamilyFlag> {
        Vec::new()
    }
    /// Its per-cgroup series, by the names `cgroups.series` (`--cgroup-series`) takes:
    /// config lists and checks them with every other family's, and the family finds which
    /// are chosen with [`chosen_cgroup_series`].
    fn cgroup_series(&self) -> &'static [CgroupSeriesName] {
        &[]
    }
    /// Its own settings: read from the merged settings (flags over file, as JSON keyed by
    /// the file keys; its [`Self::flags`] are there under their keys), checked, and
    /// returned for its `take` to find in [`LoadContext::settings`].
    fn settings(&self, _merged: &serde_json::Value) -> Result<Option<SettingsValue>, SettingError> {
        Ok(None)
    }
    fn probes(&self) -> &'static [ProbeSpec];
    /// Its maps' names in the object (agent-ebpf's `names::MAPS`), checked against the
    /// built object by a unit test.
    fn maps(&self) -> &'static [&'static str];
    /// What its layout reads from the kernel's BTF and tracepoints.
    fn kernel_reads(&self) -> KernelReads {
        KernelReads::default()
    }
    /// Offsets and flags its programs need, from this kernel.
    fn layout(&self, kernel: &KernelSources, ctx: &LoadContext) -> FamilyLayout;
    /// Map sizes to set before loading, where the default does not fit.
    fn map_sizes(&self, _ctx: &LoadContext) -> Vec<(&'static str, u32)> {
        Vec::new()
    }
    /// Work that makes its probes fire, for `preflight --exercise` (which the kernel matrix
    /// runs in every guest): run with every family loaded, before the report is made.
    fn exercise(&self, _ctx: &ExerciseContext) -> Vec<Workload> {
        Vec::new()
    }
    /// Readies its maps once the object is loaded, before any program of any family is
    /// attached (programs may use them from their first run).
    fn prepare(&self, _ebpf: &mut Ebpf) -> Result<(), String> {
        Ok(())
    }
    /// Takes its maps out of the loaded object once every probe has been tried.
    fn take(
        &self,
        ebpf: &mut Ebpf,
        attached: &Attached,
        ctx: &LoadContext,
    ) -> Result<Box<dyn LoadedFamily>, String>;
}

/// A family's maps after loading, and what is done with them.
pub trait LoadedFamily: Send + Sync {
    /// Encodes its metrics. Reads the maps; never changes them.
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError>;
    /// Keeps the maps healthy: refreshes fill levels, keeps what is not a kernel map (OOM
    /// rows). The loader's upkeep task calls it on a timer, whether or not anyone scrapes;
    /// per-cgroup maps are swept apart, through [`Self::cgroup_maps`].
    fn upkeep(&self) {}
    /// Its per-cgroup maps, which the loader's upkeep round sweeps inside the tracker's
    /// round (see `ebpf::per_cgroup`), whether or not anyone scrapes.
    fn cgroup_maps(&self) -> Vec<&dyn Sweep> {
        Vec::new()
    }
    /// Fill levels and losses, for the `bpf` collector.
    fn health(&self) -> Health {
        Health::default()
    }
    /// Starts tasks that wait for kernel events (ring buffers). Called once, inside the
    /// agent's async runtime; `preflight` never calls it.
    fn spawn_event_readers(&self) {}
}

/// One upkeep pass over a per-cgroup map (`ebpf::per_cgroup`), as the loader drives it.
pub trait Sweep: Send + Sync {
    fn sweep(&self);
}

/// One bounded map's fill level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u32,
}

#[derive(Debug, Default)]
pub struct Health {
    pub maps: Vec<MapFill>,
    /// Events the kernel could not record, or entries upkeep removed, by reason.
    pub lost: Vec<(&'static str, u64)>,
    /// What each probe's programs cost, as they measured it themselves.
    pub costs: Vec<(&'static str, ProbeCost)>,
}

/// A family's cost map (`agent-ebpf`'s `probes/cost.rs`): one slot per probe, per CPU.
pub struct ProbeCosts {
    map: PerCpuArray<MapData, ProbeCost>,
    slots: &'static [(&'static str, u32)],
}

impl ProbeCosts {
    pub fn new(
        map: PerCpuArray<MapData, ProbeCost>,
        slots: &'static [(&'static str, u32)],
    ) -> Self {
        Self { map, slots }
    }

    /// (probe, the sum over CPUs) for every slot that could be read.
    pub fn read(&self) -> Vec<(&'static str, ProbeCost)> {
        self.slots
            .iter()
            .filter_map(|(probe, slot)| {
                let per_cpu = self.map.get(slot, 0).ok()?;
                let mut total = ProbeCost::default();
                per_cpu.iter().for_each(|c| total.merge(c));
                Some((*probe, total))
            })
            .collect()
    }
}

/// A map's entry count, refreshed by upkeep (counting walks every bucket, so scrapes only
/// read the last count).
#[derive(Debug, Default)]
pub struct FillGauge(AtomicU64);

impl FillGauge {
    pub fn set(&self, entries: u64) {
        self.0.store(entries, Ordering::Relaxed);
    }

    pub fn fill(&self, map: &'static str, capacity: u32) -> MapFill {
        MapFill {
            map,
            entries: self.0.load(Ordering::Relaxed),
            capacity,
        }
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
                tracing::debug!("verifier output:{log}");
                // The statistics lines close every log, failed or not: the reason is the
                // line before them.
                let last = log
                    .lines()
                    .rev()
                    .map(str::trim)
                    .find(|l| {
                        !l.is_empty()
                            && !l.starts_with("processed ")
                            && !l.starts_with("verification time")
                            && !l.starts_with("stack depth")
                    })
                    .unwrap_or("");
                format!("{}(verifier: {})", head, last)
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

/// A map read that failed, as a collector error.
pub fn map_error(map: &'static str, e: aya::maps::MapError) -> CollectError {
    CollectError::map(map, reason(&e))
}

/// Takes a map out of the object as the given aya map type, or says which one is missing.
pub fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, String>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| format!("map {name} missing from the eBPF object (a build bug)"))?;
    M::try_from(map).map_err(|e| format!("map {name}: {}", reason(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::{
        btf::fixtures,
        families::{cgroup::Cgroup, sched::Sched},
    };

    #[test]
    fn a_family_reads_only_what_it_declared() {
        let (release, bytes) = fixtures::all().into_iter().next().expect("a BTF fixture");
        let btf = Btf::parse(&bytes).unwrap();
        let sched = KernelSources::for_family(&Sched, Ok(&btf), None);
        let sched_btf = sched.btf.as_ref().unwrap();
        assert!(
            sched_btf.member("task_struct", &["pid"]).is_ok(),
            "{release}"
        );
        // The cgroup family declares no kernel reads: the same lookups are refused.
        let cgroup = KernelSources::for_family(&Cgroup, Ok(&btf), None);
        let cgroup_btf = cgroup.btf.as_ref().unwrap();
        let refused = cgroup_btf.member("task_struct", &["pid"]).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("task_struct is not in the family's KernelReads")
        );
        assert!(cgroup_btf.has_member("task_struct", "pid").is_err());
        assert_eq!(cgroup_btf.tracepoint_args("sched_switch"), None);
        let tp = cgroup
            .tp_field("sched", "sched_switch", "prev_pid")
            .unwrap_err();
        assert!(tp.contains("not in the family's KernelReads"), "{tp}");
    }

    #[test]
    fn the_fixtures_hold_every_declared_struct() {
        let wanted = fixtures::structs();
        assert!(wanted.contains(&"task_struct") && wanted.contains(&"request"));
        for (release, bytes) in fixtures::all() {
            let btf = Btf::parse(&bytes).unwrap();
            for strukt in &wanted {
                // Every kernel the fixtures cover has these structs (a member of each
                // resolves); a family's new struct needs `cargo xtask btf-fixtures`.
                let found = btf.member(strukt, &["__nonexistent__"]).unwrap_err();
                assert!(
                    matches!(found, crate::ebpf::btf::BtfError::NoField { .. }),
                    "{release}: {strukt}: {found}"
                );
            }
        }
    }
}
