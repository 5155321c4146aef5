//! `nodelens preflight`: what will and will not work on this node, and why. It is the first
//! init container of the DaemonSet, and a command users can run by hand.
//!
//! It checks the kernel, BTF, tracefs, capabilities, the memlock limit, the cgroup layout
//! and the kubelet's log directories, then really loads and attaches every probe (and
//! detaches them again) to report how each one attaches. It writes the node identity and
//! the report to `--output-dir`, where the agent picks them up for `nodelens_node_info`
//! and its `/` page.
use std::{fmt::Write as _, path::Path};

use caps::{CapSet, Capability};
use serde::Serialize;

use crate::{
    config::Config,
    ebpf::{family::AttachKind, loader::BTF_PATH, tracefs},
    exercise,
    node::{self, NodeIdentity},
    runtime::{Runtime, cgroup_root},
};

/// Files preflight writes into its output directory (an emptyDir shared with the agent).
pub const NODE_FILE: &str = "node.json";
pub const REPORT_JSON: &str = "preflight.json";
pub const REPORT_TEXT: &str = "preflight.txt";

pub use nodelens_report::{Check, ProbeReport, Report};

/// `exercise`: also run `--exercise` with these options.
pub fn run(config: &Config, exercise: Option<&exercise::Options>) -> Report {
    let node = node::identity(config);
    let host = node::host_facts();
    let mut checks = Vec::new();
    let mut fixes = Vec::new();
    let version = node::kernel_version(&node.kernel);
    checks.push(Check {
        name: "kernel".into(),
        ok: version.is_some_and(|v| v >= (5, 4)),
        detail: format!("{} (tp_btf needs 5.5+, CAP_BPF 5.8+)", node.kernel),
    });

    checks.push(Check {
        name: "host".into(),
        ok: true,
        detail: format!(
            "{}, {} CPUs, {:.1} GiB of memory",
            if host.os.is_empty() {
                "unknown OS"
            } else {
                &host.os
            },
            host.cpus,
            host.memory_bytes as f64 / f64::from(1u32 << 30)
        ),
    });

    let btf = Path::new(BTF_PATH);
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

    let tracefs = tracefs::find();
    checks.push(Check {
        name: "tracefs".into(),
        ok: tracefs.is_some(),
        detail: match &tracefs {
            Some(p) => format!("mounted at {}", p.display()),
            None => tracefs::NOT_MOUNTED.into(),
        },
    });

    let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
    let has = |cap: Capability| effective.contains(&cap);
    let named = [
        ("BPF", Capability::CAP_BPF),
        ("PERFMON", Capability::CAP_PERFMON),
        ("SYS_ADMIN", Capability::CAP_SYS_ADMIN),
        ("SYS_RESOURCE", Capability::CAP_SYS_RESOURCE),
    ];
    let held: Vec<&str> = named
        .iter()
        .filter(|(_, c)| has(*c))
        .map(|(n, _)| *n)
        .collect();
    let pre_5_8 = version.is_some_and(|v| v < (5, 8));
    let caps_ok = has(Capability::CAP_SYS_ADMIN)
        || (!pre_5_8 && has(Capability::CAP_BPF) && has(Capability::CAP_PERFMON));
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
            for (name, cap) in [
                ("BPF", Capability::CAP_BPF),
                ("PERFMON", Capability::CAP_PERFMON),
            ] {
                if !has(cap) {
                    fixes.push(format!("add capability {name}"));
                }
            }
        }
    }

    let memlock = rustix::process::getrlimit(rustix::process::Resource::Memlock).current;
    let memlock_ok = memlock.is_none_or(|bytes| bytes >= 64 << 20)
        || version.is_some_and(|v| v >= (5, 11))
        || has(Capability::CAP_SYS_RESOURCE);
    checks.push(Check {
        name: "memlock".into(),
        ok: memlock_ok,
        detail: match memlock {
            None => "unlimited".into(),
            Some(bytes) => format!("{} KiB (only limits BPF before kernel 5.11)", bytes / 1024),
        },
    });
    if !memlock_ok {
        fixes.push(
            "kernel before 5.11 charges BPF maps to memlock: add capability SYS_RESOURCE".into(),
        );
    }

    let cgroup2 = cgroup_root(config);
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

    // Really load and attach every probe, through the same runtime the agent builds.
    let runtime = Runtime::build(config.clone(), node.clone(), None);
    runtime.load_probes(&Runtime::all_families(), Path::new(BTF_PATH));
    let statuses = runtime.agent.statuses();
    if let Some(loaded) = runtime.probes.loaded.get() {
        for note in &loaded.notes {
            let (family, how) = note.split_once(": ").unwrap_or(("probes", note));
            checks.push(Check {
                name: format!("{family} mode"),
                ok: true,
                detail: how.to_owned(),
            });
        }
    }
    let probes: Vec<ProbeReport> = statuses
        .iter()
        .map(|s| ProbeReport {
            probe: s.name.into(),
            attach: s.attach,
            core: s.core,
            reason: s.note.clone().unwrap_or_default(),
        })
        .collect();
    let exercise = exercise.map(|options| exercise::run(&runtime, options));
    runtime.probes.detach();
    let missing: Vec<&str> = probes
        .iter()
        .filter(|p| p.core && p.attach == AttachKind::None)
        .map(|p| p.probe.as_str())
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
    let mut ok = missing.is_empty();
    if let Some(e) = &exercise
        && !e.failed_core.is_empty()
    {
        ok = false;
        fixes.push(format!(
            "core probes saw no events: {}",
            e.failed_core.join(", ")
        ));
    }
    Report {
        node,
        host: Some(host),
        checks,
        probes,
        ok,
        fixes,
        exercise,
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
        let core = if p.core { " (core)" } else { "" };
        let _ = writeln!(
            s,
            "{:<32} {:<12} {}",
            format!("{}{core}", p.probe),
            p.attach.as_str(),
            p.reason
        );
    }
    let _ = writeln!(s);
    if let Some(e) = &r.exercise {
        s.push_str(&exercise::render_text(e));
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
    fn identity_round_trips_through_the_shared_directory() {
        let dir = tempfile::tempdir().unwrap();
        let report = Report {
            node: NodeIdentity {
                node: "node-a".into(),
                machine_id: "0123456789abcdef0123456789abcdef".into(),
                kernel: "6.1.0".into(),
            },
            host: None,
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
