//! `nodelens preflight`: what will and will not work on this node, and why. It is the first
//! init container of the DaemonSet, and a command users can run by hand.
//!
//! It checks the kernel, BTF, tracefs, capabilities, the memlock limit, the cgroup layout
//! and the kubelet's log directories, then really loads and attaches every probe (and
//! detaches them again) to report how each one attaches. It writes the node identity and
//! the report to `--output-dir`, where the agent picks them up for `nodelens_node_info`
//! and its `/` page.
use std::{fmt::Write as _, path::Path};

use serde::{Deserialize, Serialize};

use crate::{cgroups, collectors::uname, config::Config, ebpf};

/// Probes without which nodelens is not worth running.
pub const CORE_PROBES: &[&str] = &[
    "sched_wakeup",
    "sched_switch",
    "block_rq_issue",
    "block_rq_complete",
];

/// Files preflight writes into its output directory (an emptyDir shared with the agent).
pub const NODE_FILE: &str = "node.json";
pub const REPORT_JSON: &str = "preflight.json";
pub const REPORT_TEXT: &str = "preflight.txt";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node: String,
    pub machine_id: String,
    pub kernel: String,
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
    /// `tp_btf`, `tracepoint` or `unavailable`.
    pub attach: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub node: NodeIdentity,
    pub checks: Vec<Check>,
    pub probes: Vec<ProbeReport>,
    /// Every core probe attaches.
    pub ok: bool,
    /// What to change, when something does not work.
    pub fixes: Vec<String>,
    /// `--exercise`: events and cost per probe under generated work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exercise: Option<crate::exercise::Exercise>,
}

/// Capability bits from linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// (major, minor) of a kernel release such as `6.18.44-fc-v669`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The node's identity: the node name from the downward API (or the host name), the host's
/// machine id, and the kernel release.
pub fn node_identity(config: &Config) -> NodeIdentity {
    let u = uname::uname().unwrap_or_default();
    let machine_id = std::fs::read_to_string(&config.machine_id_file)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    NodeIdentity {
        node: config.node_name.clone().unwrap_or(u.nodename),
        machine_id,
        kernel: u.release,
    }
}

pub fn run(config: &Config) -> Report {
    let node = node_identity(config);
    let mut checks = Vec::new();
    let mut fixes = Vec::new();
    let version = kernel_version(&node.kernel);
    checks.push(Check {
        name: "kernel".into(),
        ok: version.is_some_and(|v| v >= (5, 4)),
        detail: format!("{} (tp_btf needs 5.5+, CAP_BPF 5.8+)", node.kernel),
    });

    let btf = Path::new(ebpf::BTF_PATH);
    let btf_ok = std::fs::metadata(btf).is_ok();
    checks.push(Check {
        name: "btf".into(),
        ok: btf_ok,
        detail: if btf_ok {
            format!("{} present", btf.display())
        } else {
            format!(
                "{} missing: tp_btf unavailable, classic tracepoints only",
                btf.display()
            )
        },
    });

    let tracefs = ebpf::tracefs::find();
    checks.push(Check {
        name: "tracefs".into(),
        ok: tracefs.is_some(),
        detail: match &tracefs {
            Some(p) => format!("mounted at {}", p.display()),
            None => ebpf::tracefs::NOT_MOUNTED.into(),
        },
    });

    let caps = effective_caps();
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    let named = [
        ("BPF", CAP_BPF),
        ("PERFMON", CAP_PERFMON),
        ("SYS_ADMIN", CAP_SYS_ADMIN),
        ("SYS_RESOURCE", CAP_SYS_RESOURCE),
    ];
    let held: Vec<&str> = named
        .iter()
        .filter(|(_, b)| has(*b))
        .map(|(n, _)| *n)
        .collect();
    let pre_5_8 = version.is_some_and(|v| v < (5, 8));
    let caps_ok = has(CAP_SYS_ADMIN) || (!pre_5_8 && has(CAP_BPF) && has(CAP_PERFMON));
    checks.push(Check {
        name: "capabilities".into(),
        ok: caps_ok,
        detail: format!(
            "effective: {}",
            if held.is_empty() {
                "none of BPF, PERFMON, SYS_ADMIN, SYS_RESOURCE".into()
            } else {
                held.join(", ")
            }
        ),
    });
    if !caps_ok {
        if pre_5_8 {
            fixes.push("kernel before 5.8 has no CAP_BPF: add capability SYS_ADMIN".into());
        } else {
            for (name, bit) in [("BPF", CAP_BPF), ("PERFMON", CAP_PERFMON)] {
                if !has(bit) {
                    fixes.push(format!("add capability {name}"));
                }
            }
        }
    }

    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    let memlock_ok = limit.rlim_cur == libc::RLIM_INFINITY
        || limit.rlim_cur >= 64 << 20
        || version.is_some_and(|v| v >= (5, 11))
        || has(CAP_SYS_RESOURCE);
    checks.push(Check {
        name: "memlock".into(),
        ok: memlock_ok,
        detail: if limit.rlim_cur == libc::RLIM_INFINITY {
            "unlimited".into()
        } else {
            format!(
                "{} KiB (only limits BPF before kernel 5.11)",
                limit.rlim_cur / 1024
            )
        },
    });
    if !memlock_ok {
        fixes.push(
            "kernel before 5.11 charges BPF maps to memlock: add capability SYS_RESOURCE".into(),
        );
    }

    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup2 = config
        .cgroups
        .root
        .clone()
        .or_else(|| cgroups::cgroup2_mount(&mountinfo));
    checks.push(Check {
        name: "cgroup2".into(),
        ok: cgroup2.is_some(),
        detail: match &cgroup2 {
            Some(p) if p.ends_with("unified") => format!("{} (hybrid: v1 controllers, v2 for identity)", p.display()),
            Some(p) => format!("{} (unified v2)", p.display()),
            None => "not mounted: per-pod metrics fold into cgroup=\"other\" (mount the host's /sys/fs/cgroup)".into(),
        },
    });
    let logs_ok = config.cgroups.container_logs_dir.is_dir();
    checks.push(Check {
        name: "container logs".into(),
        ok: logs_ok,
        detail: if logs_ok {
            format!("{} present", config.cgroups.container_logs_dir.display())
        } else {
            format!(
                "{} missing: pod and container names stay empty (mount /var/log/containers and /var/log/pods)",
                config.cgroups.container_logs_dir.display()
            )
        },
    });

    // Really load and attach every probe, then let go of them.
    let loaded = ebpf::load(
        config.probe_attach,
        &ebpf::Family::ALL,
        config.cgroups.max_tracked,
    );
    let probes: Vec<ProbeReport> = loaded
        .probes
        .statuses
        .iter()
        .map(|s| ProbeReport {
            probe: s.name.into(),
            attach: s.attach.map_or("unavailable", |a| a.as_str()).into(),
            reason: s.note.clone().unwrap_or_default(),
        })
        .collect();
    drop(loaded);
    let missing: Vec<&str> = CORE_PROBES
        .iter()
        .copied()
        .filter(|c| {
            !probes
                .iter()
                .any(|p| p.probe == *c && p.attach != "unavailable")
        })
        .collect();
    if !missing.is_empty() {
        if !btf_ok && tracefs.is_none() {
            fixes.push("kernel lacks BTF and tracefs is not mounted: mount the host's /sys/kernel/tracing so classic tracepoints work".into());
        }
        if fixes.is_empty() {
            fixes.push(format!(
                "core probes {} cannot attach: see the reasons above",
                missing.join(", ")
            ));
        }
    }
    Report {
        node,
        checks,
        probes,
        ok: missing.is_empty(),
        fixes,
        exercise: None,
    }
}

pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "nodelens preflight on {} (kernel {}, machine-id {})",
        r.node.node,
        r.node.kernel,
        if r.node.machine_id.is_empty() {
            "unknown"
        } else {
            &r.node.machine_id
        }
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "{:<16} {:<6} DETAIL", "CHECK", "STATUS");
    for c in &r.checks {
        let _ = writeln!(
            s,
            "{:<16} {:<6} {}",
            c.name,
            if c.ok { "ok" } else { "WARN" },
            c.detail
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "{:<32} {:<12} REASON", "PROBE", "ATTACH");
    for p in &r.probes {
        let core = if CORE_PROBES.contains(&p.probe.as_str()) {
            " (core)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "{:<32} {:<12} {}",
            format!("{}{core}", p.probe),
            p.attach,
            p.reason
        );
    }
    let _ = writeln!(s);
    if let Some(e) = &r.exercise {
        s.push_str(&crate::exercise::render_text(e));
        let _ = writeln!(s);
    }
    if r.ok {
        let _ = writeln!(s, "result: ok, the core probes attach");
    } else {
        let _ = writeln!(s, "result: FAILED");
    }
    for f in &r.fixes {
        let _ = writeln!(s, "fix: {f}");
    }
    s
}

/// Writes the node identity and the report where the agent will find them.
pub fn write(dir: &Path, r: &Report) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(NODE_FILE), to_json(&r.node))?;
    std::fs::write(dir.join(REPORT_JSON), to_json(r))?;
    std::fs::write(dir.join(REPORT_TEXT), render_text(r))
}

/// The identity preflight wrote, if the directory holds one.
pub fn read_identity(dir: &Path) -> Option<NodeIdentity> {
    let text = std::fs::read_to_string(dir.join(NODE_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn read_report_text(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(REPORT_TEXT)).ok()
}

pub fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0-28-cloud-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("garbage"), None);
        assert_eq!(kernel_version(""), None);
    }

    #[test]
    fn identity_round_trips_through_the_shared_directory() {
        let dir = tempfile::tempdir().unwrap();
        let report = Report {
            node: NodeIdentity {
                node: "node-a".into(),
                machine_id: "0123456789abcdef0123456789abcdef".into(),
                kernel: "6.1.0".into(),
            },
            checks: vec![Check {
                name: "btf".into(),
                ok: false,
                detail: "missing".into(),
            }],
            probes: vec![],
            ok: false,
            fixes: vec!["add capability BPF".into()],
            exercise: None,
        };
        write(dir.path(), &report).unwrap();
        assert_eq!(read_identity(dir.path()), Some(report.node.clone()));
        let text = read_report_text(dir.path()).unwrap();
        assert!(
            text.contains("fix: add capability BPF") && text.contains("result: FAILED"),
            "{text}"
        );
        assert_eq!(read_identity(Path::new("/nonexistent")), None);
    }
}
