//! The report `nodelens preflight --json` writes, as types shared by the agent (which
//! writes it) and xtask (whose kernel matrix checks it in every guest): one definition, so
//! a renamed field is a compile error on both sides rather than a silent `null`.
//!
//! Plain serde data only: xtask builds before `cargo xtask setup` has installed anything,
//! so this crate must not need the eBPF toolchain.
use serde::{Deserialize, Serialize};

/// How a probe ended up attached, or `None`: one word for "not attached" everywhere
/// (metrics, preflight, the `/` page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachKind {
    TpBtf,
    Tracepoint,
    None,
}

impl AttachKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TpBtf => "tp_btf",
            Self::Tracepoint => "tracepoint",
            Self::None => "none",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node: String,
    pub machine_id: String,
    pub kernel: String,
}

/// Startup facts about the host, from sysinfo (read once; never on the scrape path, where
/// direct reads of /proc cost a quarter as much).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostFacts {
    pub host_name: String,
    pub kernel: String,
    pub os: String,
    pub cpus: usize,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReport {
    pub probe: String,
    /// `tp_btf`, `tracepoint` or `none`.
    pub attach: AttachKind,
    /// nodelens is not worth running without it.
    #[serde(default)]
    pub core: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub node: NodeIdentity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostFacts>,
    pub checks: Vec<Check>,
    pub probes: Vec<ProbeReport>,
    /// Every core probe attaches.
    pub ok: bool,
    /// What to change, when something does not work.
    pub fixes: Vec<String>,
    /// `--exercise`: events and cost per probe under generated work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exercise: Option<Exercise>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeExercise {
    pub probe: String,
    /// `tp_btf`, `tracepoint` or `none`.
    pub attach: AttachKind,
    /// Program runs during the exercise.
    pub events: u64,
    /// A core probe, or one a workload that ran is meant to make fire (its family's
    /// exercise says which): without events, it does not work on this kernel.
    #[serde(default)]
    pub expect_events: bool,
    /// Run time per run, as the programs measured themselves (1 run in 64 timed); `None`
    /// without events.
    pub ns_per_event: Option<f64>,
    pub reason: String,
}

/// One map's kernel memory: what the kernel charges, and the model for this machine and
/// for a 192-CPU node (agent `ebpf/map_memory.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapMemoryRow {
    pub map: String,
    pub charged: u64,
    pub modeled: u64,
    pub modeled_192_cpus: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exercise {
    pub probes: Vec<ProbeExercise>,
    /// Offsets resolved from this kernel's BTF, by name.
    pub offsets: Vec<(String, u32)>,
    /// What each workload did, or why it could not run.
    pub workloads: Vec<(String, String)>,
    /// Core probes that failed to attach or saw no events.
    pub failed_core: Vec<String>,
    /// Possible CPUs of this machine (what per-CPU maps are sized by).
    #[serde(default)]
    pub possible_cpus: u64,
    #[serde(default)]
    pub map_memory: Vec<MapMemoryRow>,
    /// Per-cgroup disk I/O as nodelens counted it against the cgroups' `io.stat`; empty
    /// without `--exercise-filesystem`.
    #[serde(default)]
    pub attribution: Vec<AttributionRow>,
    /// Per-cgroup CPU time as nodelens counted it against the cgroups' `cpu.stat`, for
    /// workloads whose tasks exit, share a CPU or stop.
    #[serde(default)]
    pub cpu_accounting: Vec<CpuAccountingRow>,
    /// The "why is my pod slow" families (blocked time, pressure, throttling) against the
    /// kernel's own accounting of the same cgroups.
    #[serde(default)]
    pub slow_pod: Vec<SlowPodRow>,
}

/// One figure of a cgroup, as nodelens exported it and as the kernel accounts it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlowPodRow {
    /// What ran in the cgroup, and which figure (`blocked io`, `io pressure`, ...).
    pub check: String,
    pub cgroup: String,
    /// The series compared, with its labels.
    pub series: String,
    pub nodelens: f64,
    /// The kernel's figure and where it comes from (`io.pressure some`, delay accounting).
    pub kernel: f64,
    pub kernel_source: String,
    /// Allowed difference: a share of the kernel's figure, plus an absolute slack (the
    /// resolution of the kernel's figure).
    pub tolerance: f64,
    pub slack: f64,
}

impl SlowPodRow {
    /// Whether nodelens's figure is within the tolerance of a non-zero kernel figure.
    pub fn agrees(&self) -> bool {
        self.kernel > 0.0
            && (self.nodelens - self.kernel).abs() <= self.kernel * self.tolerance + self.slack
    }
}

/// One cgroup's CPU time: nodelens's `nodelens_cgroup_cpu_seconds_total` against the
/// cgroup's own `cpu.stat` `usage_usec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpuAccountingRow {
    /// What ran in the cgroup.
    pub workload: String,
    pub cgroup: String,
    pub nodelens_seconds: f64,
    pub cpu_stat_seconds: f64,
}

/// One cgroup's I/O in one direction on the filesystem's device: nodelens's per-cgroup
/// counters against the kernel's own `io.stat` of that cgroup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttributionRow {
    /// `writer` (buffered writes, written back by the flusher) or `reader` (O_DIRECT).
    pub role: String,
    pub cgroup: String,
    pub device: String,
    /// `read` or `write`.
    pub op: String,
    pub nodelens_bytes: f64,
    pub io_stat_bytes: u64,
    pub nodelens_ios: f64,
    pub io_stat_ios: u64,
}
