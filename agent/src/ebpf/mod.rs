//! Loading and attaching the eBPF programs, each probe on its own.
//!
//! Every probe is tried as a BTF tracepoint first (no tracefs needed, cheaper per event),
//! then as a classic tracepoint. A probe the kernel refuses is logged once with the
//! kernel's reason and reported as `nodelens_probe_up{...} 0`; the rest keep working.
use std::{path::Path, sync::OnceLock};

use agent_ebpf::{Log2Histogram, SCHED_LAYOUT_GLOBAL, SchedCounters};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray},
    programs::{BtfTracePoint, TracePoint},
};

use crate::config::ProbeAttach;

pub mod btf;
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

/// One kernel event and the two programs that can serve it (kunai's compat-table idea).
#[derive(Debug)]
pub struct ProbeSpec {
    /// The probe's name in metrics: the tracepoint's name.
    pub name: &'static str,
    pub category: &'static str,
    pub btf_program: &'static str,
    pub tracepoint_program: &'static str,
}

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        name: "sched_wakeup",
        category: "sched",
        btf_program: "sched_wakeup_btf",
        tracepoint_program: "sched_wakeup_tp",
    },
    ProbeSpec {
        name: "sched_wakeup_new",
        category: "sched",
        btf_program: "sched_wakeup_new_btf",
        tracepoint_program: "sched_wakeup_new_tp",
    },
    ProbeSpec {
        name: "sched_switch",
        category: "sched",
        btf_program: "sched_switch_btf",
        tracepoint_program: "sched_switch_tp",
    },
];

#[derive(Debug, Clone)]
pub struct ProbeStatus {
    pub name: &'static str,
    pub attach: Option<AttachKind>,
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
    pub runqueue_latency: PerCpuArray<MapData, Log2Histogram>,
    pub counters: PerCpuArray<MapData, SchedCounters>,
    /// All of sched_wakeup, sched_wakeup_new and sched_switch attached.
    pub runqueue_complete: bool,
    /// sched_switch attached.
    pub switch_up: bool,
}

/// The maps collectors read, filled once the probes are loaded.
#[derive(Default)]
pub struct ProbeMaps {
    pub sched: OnceLock<SchedMaps>,
}

impl std::fmt::Debug for ProbeMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeMaps")
            .field("sched", &self.sched.get().is_some())
            .finish()
    }
}

/// What loading produced. Dropping `ebpf` detaches every program.
pub struct Loaded {
    /// Held only so the programs stay attached while the agent runs.
    #[expect(
        dead_code,
        reason = "kept alive for its Drop, which detaches the programs"
    )]
    pub ebpf: Ebpf,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
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

/// Loads the object, attaches every probe it can, and publishes the maps in `maps`.
/// Never fails as a whole: what cannot work is reported in the statuses.
pub fn load(mode: ProbeAttach, maps: &ProbeMaps) -> (Vec<ProbeStatus>, Option<Loaded>) {
    raise_memlock();
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
        own_btf.as_ref().ok(),
        own_btf.as_ref().err().map(|e| e.to_string()).as_deref(),
        tracefs_dir.as_deref(),
    );
    drop(own_btf); // several MB; only the offsets are kept
    tracing::debug!(?layout, "kernel layout");

    let all_down = |why: String| -> Vec<ProbeStatus> {
        PROBES
            .iter()
            .map(|p| ProbeStatus {
                name: p.name,
                attach: None,
                note: Some(why.clone()),
            })
            .collect()
    };
    let mut ebpf = match EbpfLoader::new()
        .btf(aya_btf.as_ref())
        .override_global(SCHED_LAYOUT_GLOBAL, &layout.sched, true)
        .load(EBPF_OBJECT)
    {
        Ok(ebpf) => ebpf,
        Err(e) => {
            let why = format!(
                "cannot load the eBPF object: {} (needs CAP_BPF and CAP_PERFMON, or root)",
                reason(&e)
            );
            tracing::error!("{why}");
            return (all_down(why), None);
        }
    };
    let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("eBPF log forwarding disabled: {}", reason(&e));
            None
        }
    };

    let mut statuses = Vec::with_capacity(PROBES.len());
    for spec in PROBES {
        let status = attach(&mut ebpf, spec, mode, aya_btf.as_ref(), &layout);
        match (&status.attach, &status.note) {
            (Some(kind), None) => {
                tracing::info!(probe = spec.name, attach = kind.as_str(), "probe attached")
            }
            (Some(kind), Some(note)) => tracing::info!(
                probe = spec.name,
                attach = kind.as_str(),
                "probe attached ({note})"
            ),
            (None, note) => tracing::warn!(
                probe = spec.name,
                "probe not attached: {}",
                note.as_deref().unwrap_or("unknown reason")
            ),
        }
        statuses.push(status);
    }

    let up = |name: &str| statuses.iter().any(|s| s.name == name && s.is_up());
    let sched = (|| {
        let runqueue_latency = PerCpuArray::try_from(ebpf.take_map("RUNQUEUE_LATENCY")?).ok()?;
        let counters = PerCpuArray::try_from(ebpf.take_map("SCHED_COUNTERS")?).ok()?;
        Some(SchedMaps {
            runqueue_latency,
            counters,
            runqueue_complete: up("sched_wakeup") && up("sched_wakeup_new") && up("sched_switch"),
            switch_up: up("sched_switch"),
        })
    })();
    match sched {
        Some(s) => {
            let _ = maps.sched.set(s);
        }
        None => tracing::error!("scheduler maps missing from the eBPF object; this is a build bug"),
    }
    (statuses, Some(Loaded { ebpf, logger }))
}

fn attach(
    ebpf: &mut Ebpf,
    spec: &ProbeSpec,
    mode: ProbeAttach,
    btf: Option<&aya::Btf>,
    layout: &layout::Layout,
) -> ProbeStatus {
    let mut notes = Vec::new();
    if mode != ProbeAttach::TracepointOnly {
        let result = (|| -> Result<(), String> {
            layout
                .btf_ok
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
            Ok(())
        })();
        match result {
            Ok(()) => {
                return ProbeStatus {
                    name: spec.name,
                    attach: Some(AttachKind::TpBtf),
                    note: None,
                };
            }
            Err(e) => notes.push(format!("tp_btf: {e}")),
        }
    }
    if mode != ProbeAttach::BtfOnly {
        let result = (|| -> Result<(), String> {
            layout.tracepoint_ok.clone()?;
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
            Ok(())
        })();
        match result {
            Ok(()) => {
                return ProbeStatus {
                    name: spec.name,
                    attach: Some(AttachKind::Tracepoint),
                    note: (!notes.is_empty()).then(|| notes.join("; ")),
                };
            }
            Err(e) => notes.push(format!("tracepoint: {e}")),
        }
    }
    ProbeStatus {
        name: spec.name,
        attach: None,
        note: Some(notes.join("; ")),
    }
}

/// Forwards aya-log records from the programs into `log`, and so into tracing. Woken by the
/// ring buffer, never by a timer.
pub fn spawn_log_forwarder(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    use tokio::io::{Interest, unix::AsyncFd};
    // SAFETY: the logger owns its ring buffer fd and keeps it open, unchanged, until it is
    // dropped together with the AsyncFd.
    let mut fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("eBPF log forwarding disabled: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!("eBPF log forwarding stopped: {e}");
                    return;
                }
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
