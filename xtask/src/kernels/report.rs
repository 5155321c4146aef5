//! The checks and tables over the guests' preflight reports, read as the agent's own
//! report type (`nodelens-report`), and promtool's verdict on their scrapes.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

use nodelens_report::{Exercise, Report};

use super::{MANY_CPU_KERNEL, MANY_CPUS};

/// promtool's complaints about a scrape, minus the camelCase lint node_exporter's names bring.
pub(super) fn promtool_problems(metrics: &str) -> Result<Vec<String>> {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(metrics.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .lines()
    .filter(|l| !l.trim().is_empty())
    .filter(|l| !(l.starts_with("node_memory_") && l.contains("camelCase")))
    .map(str::to_owned)
    .collect())
}

/// A probe's row in the table: (attach, events, ns/event, must see events: a core probe, or
/// one its family's exercise makes fire).
pub(super) type Cell = (String, u64, Option<f64>, bool);

/// A run: its column in the tables, and the report its preflight wrote.
pub(super) type Run = (String, Report);

/// The exercise's part of a report (empty when preflight ran without `--exercise`).
fn exercise(report: &Report) -> Option<&Exercise> {
    report.exercise.as_ref()
}

/// What the exercise said of one of its workloads, or that it did not run it.
fn workload<'a>(report: &'a Report, name: &str) -> &'a str {
    exercise(report)
        .and_then(|e| e.workloads.iter().find(|(w, _)| w == name))
        .map_or("the exercise did not run it", |(_, did)| did.as_str())
}

pub(super) fn cells(report: &Report) -> BTreeMap<String, Cell> {
    let core: BTreeSet<&str> = report
        .probes
        .iter()
        .filter(|p| p.core)
        .map(|p| p.probe.as_str())
        .collect();
    exercise(report)
        .map(|e| e.probes.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p.probe.clone(),
                (
                    p.attach.as_str().to_owned(),
                    p.events,
                    p.ns_per_event,
                    p.expect_events || core.contains(p.probe.as_str()),
                ),
            )
        })
        .collect()
}

/// Every probe attaches on every run; core probes, and those the families' exercises make
/// fire, see events.
pub(super) fn check_probes(column: &str, report: &Report) -> Vec<String> {
    let c = cells(report);
    if c.is_empty() {
        return vec![format!("{column}: the report lists no probes")];
    }
    c.iter()
        .filter(|(_, (attach, events, _, needs_events))| {
            attach == "none" || (*needs_events && *events == 0)
        })
        .map(|(probe, (attach, events, _, _))| {
            format!("{column}: {probe} {attach} with {events} events")
        })
        .collect()
}

/// The checks of one guest's report in its mode (`normal`, `tracepoint`, `notracefs`,
/// `many-cpus`): per-cgroup disk and CPU against the kernel's own accounting, map memory
/// with many CPUs, and every probe on classic tracepoints when those were forced.
pub(super) fn check_guest(column: &str, mode: &str, report: &Report) -> Vec<String> {
    let mut failures = Vec::new();
    if mode == "many-cpus" {
        failures.extend(check_map_memory(column, report));
    }
    failures.extend(check_attribution(column, mode, report));
    failures.extend(check_cpu_accounting(column, report));
    failures.extend(check_slow_pod(column, mode, report));
    if mode == "tracepoint" {
        for (probe, (attach, _, _, _)) in cells(report) {
            if attach != "tracepoint" {
                failures.push(format!(
                    "{column}: {probe} attached as {attach}, not tracepoint"
                ));
            }
        }
    }
    failures
}

pub(super) fn offsets(report: &Report) -> BTreeMap<String, u64> {
    exercise(report)
        .map(|e| e.offsets.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|(name, offset)| (name.clone(), u64::from(*offset)))
        .collect()
}

pub(super) fn render(runs: &[Run]) -> String {
    let mut s = String::new();
    let date = crate::today();
    let _ = writeln!(
        s,
        "Kernel matrix, {date}: attach type, events during `preflight --exercise`, ns/event (as the programs time themselves, 1 run in 64)."
    );
    let _ = writeln!(s);
    let _ = write!(s, "| probe |");
    for (c, _) in runs {
        let _ = write!(s, " {c} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|{}", "---|".repeat(runs.len()));
    let all: Vec<BTreeMap<String, Cell>> = runs.iter().map(|(_, r)| cells(r)).collect();
    let mut probes: Vec<String> = all.iter().flat_map(|c| c.keys().cloned()).collect();
    probes.sort();
    probes.dedup();
    for probe in probes {
        let _ = write!(s, "| {probe} |");
        for c in &all {
            match c.get(&probe) {
                Some((attach, events, ns, _)) => {
                    let ns = ns.map_or("-".into(), |n| format!("{n:.0} ns"));
                    let _ = write!(s, " {attach}, {events}, {ns} |");
                }
                None => {
                    let _ = write!(s, " - |");
                }
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Struct offsets each kernel's BTF gave (bytes; `*` where kernels differ):"
    );
    let _ = writeln!(s);
    let normal: Vec<&Run> = runs.iter().filter(|(c, _)| !c.contains(',')).collect();
    let offs: Vec<BTreeMap<String, u64>> = normal.iter().map(|(_, r)| offsets(r)).collect();
    let _ = write!(s, "| field |");
    for (c, _) in &normal {
        let _ = write!(s, " {c} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|{}", "---|".repeat(normal.len()));
    let mut fields: Vec<String> = offs.iter().flat_map(|o| o.keys().cloned()).collect();
    fields.sort();
    fields.dedup();
    for f in fields {
        let vals: Vec<Option<u64>> = offs.iter().map(|o| o.get(&f).copied()).collect();
        let differ = vals.iter().flatten().collect::<BTreeSet<_>>().len() > 1;
        let _ = write!(s, "| {f}{} |", if differ { " *" } else { "" });
        for v in vals {
            let _ = write!(s, " {} |", v.map_or("-".into(), |v| v.to_string()));
        }
        let _ = writeln!(s);
    }
    s
}

/// Per-cgroup disk I/O must match the cgroups' own `io.stat` within 2%, bytes and requests,
/// for the writer (buffered writes the flusher wrote back: only the bio's blkcg names the
/// writer) and the O_DIRECT reader. With classic tracepoints the owner is the issuing task,
/// so writeback goes to the flusher's cgroup, as docs/metrics.md says: only the reader is held
/// to io.stat there.
pub(super) fn check_attribution(column: &str, mode: &str, report: &Report) -> Vec<String> {
    let rows = exercise(report)
        .map(|e| e.attribution.as_slice())
        .unwrap_or_default();
    if rows.is_empty() {
        let why = workload(report, "disk attribution");
        return vec![format!("{column}: no per-cgroup disk attribution: {why}")];
    }
    const EXPECTED: f64 = 32.0 * 1048576.0;
    let mut failures = Vec::new();
    for r in rows {
        let (role, op) = (r.role.as_str(), r.op.as_str());
        let ours = (r.nodelens_bytes, r.nodelens_ios);
        let kernel = (r.io_stat_bytes as f64, r.io_stat_ios as f64);
        let main = (role, op) == ("writer", "write") || (role, op) == ("reader", "read");
        if main && kernel.0 < EXPECTED * 0.98 {
            failures.push(format!(
                "{column}: {role}'s io.stat shows {} B of {op}s, expected 32 MiB",
                kernel.0
            ));
        }
        if mode == "tracepoint" && role == "writer" {
            continue;
        }
        // Bytes within 2%. Requests: io.stat counts bios as they are submitted, nodelens
        // counts requests, after the block layer merged adjacent bios; so nodelens may count
        // fewer, never more (one more, for a split).
        let off = |a: f64, b: f64| (a - b).abs() > b.max(1.0) * 0.02 && (a - b).abs() > 1.0;
        let requests_off = ours.1 > kernel.1 + 1.0 || ours.1 < kernel.1 * 0.8;
        // With classic tracepoints the owner is the task that issues the request, and a
        // request the block layer dispatches later from its kblockd worker is charged to
        // that worker: most of the reads, not all, are the reader's (docs/metrics.md).
        let bytes_off = if mode == "tracepoint" {
            ours.0 < kernel.0 * 0.8 || ours.0 > kernel.0 * 1.02
        } else {
            off(ours.0, kernel.0)
        };
        if bytes_off || requests_off {
            failures.push(format!(
                "{column}: {role} {op}: nodelens {} B in {} requests, io.stat {} B in {} requests",
                ours.0, ours.1, kernel.0, kernel.1
            ));
        }
    }
    failures
}

/// The attribution rows of every run, as a table.
pub(super) fn attribution_table(runs: &[Run]) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Per-cgroup disk I/O against the cgroups' own io.stat (bytes, requests), 32 MiB written back after sync and read back with O_DIRECT:"
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| run | cgroup | op | nodelens | io.stat |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (column, report) in runs {
        for r in exercise(report)
            .map(|e| e.attribution.as_slice())
            .unwrap_or_default()
        {
            let _ = writeln!(
                s,
                "| {column} | {} | {} | {:.0} B, {:.0} | {} B, {} |",
                r.role, r.op, r.nodelens_bytes, r.nodelens_ios, r.io_stat_bytes, r.io_stat_ios
            );
        }
    }
    s
}

/// Per-cgroup CPU time against `cpu.stat` (tasks that exit, share a CPU or stop): every
/// workload's within 1%.
pub(super) fn check_cpu_accounting(column: &str, report: &Report) -> Vec<String> {
    let rows = exercise(report)
        .map(|e| e.cpu_accounting.as_slice())
        .unwrap_or_default();
    if rows.len() < 12 {
        return vec![format!(
            "{column}: {} of 12 per-cgroup CPU workloads ran: {}",
            rows.len(),
            workload(report, "cpu accounting")
        )];
    }
    rows.iter()
        .filter_map(|r| {
            let (ours, kernel) = (r.nodelens_seconds, r.cpu_stat_seconds);
            ((ours - kernel).abs() > kernel * 0.01 || kernel <= 0.0).then(|| {
                format!(
                    "{column}: {}: nodelens {ours:.6} s of CPU, cpu.stat {kernel:.6} s",
                    r.workload
                )
            })
        })
        .collect()
}

/// The "why is my pod slow" figures in a pure cgroup v2 guest: blocked I/O time against
/// delay accounting (at least its figure, at most twice it, under emulated CPUs; 5% on the
/// host's own test), I/O and memory pressure and CPU throttling against the cgroups' own
/// files (2%). Blocked time needs the kernel timestamps, which a run with
/// classic tracepoints forced does not use.
pub(super) fn check_slow_pod(column: &str, mode: &str, report: &Report) -> Vec<String> {
    let rows = exercise(report)
        .map(|e| e.slow_pod.as_slice())
        .unwrap_or_default();
    let mut want = vec![
        "I/O pressure",
        "memory pressure",
        "throttled periods",
        "throttled seconds",
    ];
    if mode != "tracepoint" {
        want.push("blocked on I/O");
    }
    let mut failures = Vec::new();
    for check in want {
        match rows.iter().find(|r| r.check == check) {
            None => failures.push(format!(
                "{column}: no {check} figure: {}",
                [
                    "slow pod: blocked on I/O",
                    "slow pod: memory pressure",
                    "slow pod: CPU throttling"
                ]
                .iter()
                .map(|w| format!("{w}: {}", workload(report, w)))
                .collect::<Vec<_>>()
                .join("; ")
            )),
            // Under the guests' emulated CPUs, each wait's two stamps differ by 4 to 60 µs
            // (docs/accuracy.md), a large share of a 4 KiB read's wait: no I/O wait lost,
            // and at most twice delay accounting's figure.
            Some(r)
                if check == "blocked on I/O"
                    && r.kernel > 0.0
                    && r.nodelens >= r.kernel * (1.0 - r.tolerance) - r.slack
                    && r.nodelens <= r.kernel * 2.0 + r.slack => {}
            Some(r) if !r.agrees() => failures.push(format!(
                "{column}: {check}: nodelens {} = {:.6}, {} = {:.6} (allowed {}% + {})",
                r.series,
                r.nodelens,
                r.kernel_source,
                r.kernel,
                r.tolerance * 100.0,
                r.slack
            )),
            Some(_) => {}
        }
    }
    failures
}

/// The slow-pod rows of every run, as a table.
pub(super) fn slow_pod_table(runs: &[Run]) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Why is my pod slow, per cgroup, against the kernel's own accounting (blocked I/O time: delay accounting, 5% plus a tick; pressure and throttling: the cgroup's files, 2%):"
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| run | figure | nodelens | kernel | source |");
    let _ = writeln!(s, "|---|---|---:|---:|---|");
    for (column, report) in runs {
        for r in exercise(report)
            .map(|e| e.slow_pod.as_slice())
            .unwrap_or_default()
        {
            let _ = writeln!(
                s,
                "| {column} | {} | {:.4} | {:.4} | {} |",
                r.check, r.nodelens, r.kernel, r.kernel_source
            );
        }
    }
    s
}

/// The CPU accounting rows of every run: the largest difference per run.
pub(super) fn cpu_accounting_table(runs: &[Run]) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Per-cgroup CPU time against the cgroups' own cpu.stat (12 cgroups: 1,000 short processes, ten busy loops that exit, one alone and nine sharing the CPUs, a loop stopped with SIGSTOP):"
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| run | cgroups | CPU seconds, nodelens | cpu.stat | largest difference |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (column, report) in runs {
        let rows = exercise(report)
            .map(|e| e.cpu_accounting.as_slice())
            .unwrap_or_default();
        let ours: f64 = rows.iter().map(|r| r.nodelens_seconds).sum();
        let kernel: f64 = rows.iter().map(|r| r.cpu_stat_seconds).sum();
        let worst = rows
            .iter()
            .filter(|r| r.cpu_stat_seconds > 0.0)
            .map(|r| (r.nodelens_seconds / r.cpu_stat_seconds - 1.0).abs() * 100.0)
            .fold(0.0, f64::max);
        let _ = writeln!(
            s,
            "| {column} | {} | {ours:.3} | {kernel:.3} | {worst:.3}% |",
            rows.len()
        );
    }
    s
}

/// Total charged and modeled map memory of a run, in bytes.
pub(super) fn map_memory(report: &Report) -> (f64, f64) {
    let rows = exercise(report)
        .map(|e| e.map_memory.as_slice())
        .unwrap_or_default();
    (
        rows.iter().map(|r| r.charged as f64).sum(),
        rows.iter().map(|r| r.modeled as f64).sum(),
    )
}

/// The agent's model of map memory must match what the kernel charges with many CPUs,
/// where the per-CPU terms dominate: within 2% in total.
pub(super) fn check_map_memory(column: &str, report: &Report) -> Option<String> {
    let (charged, modeled) = map_memory(report);
    let cpus = exercise(report).map_or(0, |e| e.possible_cpus);
    if cpus != u64::from(MANY_CPUS) {
        return Some(format!("{column}: the guest saw {cpus} possible CPUs"));
    }
    ((modeled - charged).abs() > charged * 0.02 || charged == 0.0).then(|| {
        format!("{column}: map memory modeled {modeled} B, the kernel charged {charged} B")
    })
}

/// sched_switch's cost per event with many CPUs busy in one cgroup, against 2 CPUs, and the
/// map memory check; TCG emulates the timings, so only the ratio means something.
pub(super) fn many_cpu_summary(runs: &[Run]) -> String {
    let find = |suffix: &str| {
        runs.iter().find(|(c, _)| {
            c.starts_with(MANY_CPU_KERNEL)
                && if suffix.is_empty() {
                    !c.contains(',')
                } else {
                    c.ends_with(suffix)
                }
        })
    };
    let many = format!("{MANY_CPUS} CPUs");
    let (Some((_, two)), Some((column, lots))) = (find(""), find(&many)) else {
        return String::new();
    };
    let ns = |r: &Report| cells(r).get("sched_switch").and_then(|c| c.2);
    let (charged, modeled) = map_memory(lots);
    let mut s = String::new();
    let _ = writeln!(s);
    if let (Some(a), Some(b)) = (ns(two), ns(lots)) {
        let _ = writeln!(
            s,
            "sched_switch with one cgroup busy on every CPU, {column} against 2 CPUs: {:.0} ns against {:.0} ns per event under TCG, ratio {:.2}.",
            b,
            a,
            b / a
        );
    }
    let _ = writeln!(
        s,
        "Map memory with {MANY_CPUS} CPUs: the kernel charged {:.0} KiB, the agent's model says {:.0} KiB.",
        charged / 1024.0,
        modeled / 1024.0
    );
    s
}

#[cfg(test)]
mod tests {
    use nodelens_report::{
        AttachKind, AttributionRow, CpuAccountingRow, NodeIdentity, ProbeExercise, ProbeReport,
        SlowPodRow,
    };

    use super::*;

    fn probe(name: &str, attach: AttachKind, events: u64, expect_events: bool) -> ProbeExercise {
        ProbeExercise {
            probe: name.into(),
            attach,
            events,
            ns_per_event: (events > 0).then_some(100.0),
            expect_events,
            reason: String::new(),
        }
    }

    /// A guest's report: sched_switch core, every workload's rows given.
    fn report(probes: Vec<ProbeExercise>) -> Report {
        let mib32 = 32 << 20;
        let io = |role: &str, op: &str, bytes: u64| AttributionRow {
            role: role.into(),
            cgroup: format!("nodelens-exercise-{role}"),
            device: "vdb".into(),
            op: op.into(),
            nodelens_bytes: bytes as f64,
            io_stat_bytes: bytes,
            nodelens_ios: 256.0,
            io_stat_ios: 256,
        };
        Report {
            node: NodeIdentity {
                node: "guest".into(),
                machine_id: "0".into(),
                kernel: "6.1.0-40-cloud-amd64".into(),
            },
            host: None,
            checks: Vec::new(),
            probes: vec![ProbeReport {
                probe: "sched_switch".into(),
                attach: AttachKind::TpBtf,
                core: true,
                reason: String::new(),
            }],
            ok: true,
            fixes: Vec::new(),
            exercise: Some(Exercise {
                probes,
                offsets: vec![("task_struct.pid".into(), 1234)],
                workloads: vec![("cpu accounting".into(), "12 cgroups".into())],
                failed_core: Vec::new(),
                possible_cpus: 2,
                map_memory: Vec::new(),
                attribution: vec![io("writer", "write", mib32), io("reader", "read", mib32)],
                cpu_accounting: (0..12)
                    .map(|i| CpuAccountingRow {
                        workload: format!("workload {i}"),
                        cgroup: format!("cg{i}"),
                        nodelens_seconds: 1.0,
                        cpu_stat_seconds: 1.0,
                    })
                    .collect(),
                slow_pod: [
                    "blocked on I/O",
                    "I/O pressure",
                    "memory pressure",
                    "throttled periods",
                    "throttled seconds",
                ]
                .map(|check| SlowPodRow {
                    check: check.into(),
                    cgroup: "cg".into(),
                    series: "s".into(),
                    nodelens: 1.0,
                    kernel: 1.0,
                    kernel_source: "k".into(),
                    tolerance: 0.02,
                    slack: 0.0,
                })
                .to_vec(),
            }),
        }
    }

    #[test]
    fn slow_pod_figures_off_or_missing_are_named() {
        let mut r = report(Vec::new());
        assert!(check_slow_pod("6.12", "normal", &r).is_empty());
        let rows = &mut r.exercise.as_mut().unwrap().slow_pod;
        rows[1].nodelens = 1.03; // I/O pressure 3% off: more than its 2%
        rows[0].tolerance = 0.05;
        rows[0].nodelens = 1.04; // blocked I/O 4% over: within what it is allowed
        rows.retain(|row| row.check != "throttled seconds");
        let failures = check_slow_pod("6.12", "normal", &r);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(
            failures[0].contains("I/O pressure: nodelens"),
            "{failures:?}"
        );
        assert!(
            failures[1].contains("no throttled seconds figure"),
            "{failures:?}"
        );
        // Blocked I/O below delay accounting (a wait lost), or more than twice it: named.
        for off in [0.9, 2.5] {
            let mut r = report(Vec::new());
            r.exercise.as_mut().unwrap().slow_pod[0].nodelens = off;
            let failures = check_slow_pod("5.10", "normal", &r);
            assert!(
                failures.len() == 1 && failures[0].contains("blocked on I/O: nodelens"),
                "{off}: {failures:?}"
            );
        }
        // With classic tracepoints forced, blocked time is not measured: not asked for.
        r.exercise.as_mut().unwrap().slow_pod.remove(0);
        assert_eq!(check_slow_pod("6.1", "tracepoint", &r).len(), 2);
    }

    #[test]
    fn probes_that_must_fire_and_did_not_are_named() {
        let good = report(vec![
            probe("sched_switch", AttachKind::TpBtf, 500, false),
            probe("sched_migrate_task", AttachKind::TpBtf, 20, true),
            probe("mark_victim", AttachKind::TpBtf, 0, false),
        ]);
        assert!(check_probes("6.1", &good).is_empty());
        assert!(check_guest("6.1", "normal", &good).is_empty());
        let bad = report(vec![
            // core (from the report's probe list), no events
            probe("sched_switch", AttachKind::TpBtf, 0, false),
            // its family's exercise makes it fire, no events
            probe("sched_migrate_task", AttachKind::TpBtf, 0, true),
            // not attached at all
            probe("mark_victim", AttachKind::None, 0, false),
        ]);
        let failures = check_probes("6.1", &bad);
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(
            failures
                .iter()
                .any(|f| f.contains("sched_migrate_task tp_btf with 0 events"))
        );
        assert_eq!(
            check_probes("6.1", &report(Vec::new())),
            ["6.1: the report lists no probes"]
        );
    }

    #[test]
    fn forced_tracepoints_must_be_tracepoints() {
        let r = report(vec![probe("sched_switch", AttachKind::TpBtf, 5, false)]);
        let failures = check_guest("6.1, classic tracepoints forced", "tracepoint", &r);
        assert_eq!(
            failures,
            ["6.1, classic tracepoints forced: sched_switch attached as tp_btf, not tracepoint"]
        );
    }

    #[test]
    fn accounting_off_by_more_than_its_allowance_fails() {
        let mut r = report(vec![probe("sched_switch", AttachKind::TpBtf, 5, false)]);
        let e = r.exercise.as_mut().unwrap();
        e.cpu_accounting[3].nodelens_seconds = 1.02;
        e.attribution[1].nodelens_bytes *= 0.95;
        let failures = check_guest("6.1", "normal", &r);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("reader read"), "{failures:?}");
        assert!(failures[1].contains("workload 3"), "{failures:?}");
        // Within the allowances: 1% CPU, 2% bytes.
        let mut r = report(vec![probe("sched_switch", AttachKind::TpBtf, 5, false)]);
        let e = r.exercise.as_mut().unwrap();
        e.cpu_accounting[3].nodelens_seconds = 1.009;
        e.attribution[1].nodelens_bytes *= 0.99;
        assert!(check_guest("6.1", "normal", &r).is_empty());
        // A workload that did not run says why.
        let mut r = report(vec![probe("sched_switch", AttachKind::TpBtf, 5, false)]);
        r.exercise.as_mut().unwrap().cpu_accounting.truncate(3);
        assert_eq!(
            check_cpu_accounting("6.1", &r),
            ["6.1: 3 of 12 per-cgroup CPU workloads ran: 12 cgroups"]
        );
    }

    #[test]
    fn the_agents_own_json_is_what_is_checked() {
        // The report as preflight --json writes it round-trips through the shared type.
        let r = report(vec![probe(
            "sched_switch",
            AttachKind::Tracepoint,
            5,
            false,
        )]);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"attach\":\"tracepoint\""), "{json}");
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(cells(&back), cells(&r));
        assert_eq!(offsets(&back)["task_struct.pid"], 1234);
    }
}
