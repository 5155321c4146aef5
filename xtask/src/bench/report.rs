//! The bench's report: every figure beside its target, as markdown.
use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    EndToEnd, ProbeCost, ScrapeFigures,
    end_to_end::{self, LOADS, Variant},
    exposition::PodFamily,
    load_rounds, push,
};

pub(super) struct Figures<'a> {
    pub(super) e2e: &'a [EndToEnd],
    pub(super) costs: &'a [ProbeCost],
    pub(super) ours: &'a ScrapeFigures,
    pub(super) theirs: &'a ScrapeFigures,
    /// nodelens with every collector on.
    pub(super) full: &'a ScrapeFigures,
    pub(super) scaled: &'a ScrapeFigures,
    /// The same 4,096 pods, each busy (every per-pod series non-zero).
    pub(super) busy: &'a ScrapeFigures,
    /// Per-pod family -> what the bench's pods have in it, in the busy scrape.
    pub(super) busy_pods: &'a BTreeMap<String, PodFamily>,
    /// The same busy pods, scraped from an agent that exports every per-pod series.
    pub(super) every: &'a ScrapeFigures,
    /// Per-pod family -> what the bench's pods have in it, in `every`'s scrape.
    pub(super) every_pods: &'a BTreeMap<String, PodFamily>,
    /// Protobuf scrapes of the busy pods with the default series: (CPU ms per scrape, p99
    /// ms, bytes).
    pub(super) busy_protobuf: (f64, f64, f64),
    /// The scaled agent's CPU with nobody scraping, in % of one CPU.
    pub(super) idle_cpu_percent: f64,
    pub(super) push: &'a push::PushFigures,
    /// (charged here, possible CPUs here, modeled for 192 CPUs), bytes.
    pub(super) memory: (f64, u64, f64),
    pub(super) scrapes: usize,
    pub(super) rounds: usize,
    pub(super) short: bool,
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

pub(super) fn render(f: &Figures) -> String {
    let mut s = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let _ = writeln!(
        s,
        "nodelens bench, {}, kernel {}, {cpus} CPUs{}",
        crate::today(),
        kernel.trim(),
        if f.short {
            " (short mode: figures are rough)"
        } else {
            ""
        }
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "What applications pay, {} interleaved rounds per load ({} for the disk): ns per unit, median [min-max], and added over nothing (the median of each round's difference, so that drift between rounds cancels). The ratios are against the reference tool. On the disk load the loop device's worker thread switches for each I/O, which nodelens's defaults measure and biolatency does not: the defaults' row also gives its ratio against runqlat and biolatency together, and nodelens without its sched collector (the block probes alone) is compared with biolatency.",
        f.rounds,
        LOADS
            .iter()
            .map(|l| load_rounds(l, f.rounds, f.short))
            .max()
            .unwrap_or(f.rounds)
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| load | attached | ns per unit | added ns | vs reference | target |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---|");
    for e in f.e2e {
        let load = &LOADS[e.load];
        let Some(nothing) = e
            .rounds
            .iter()
            .find(|(x, _)| *x == Variant::Nothing)
            .map(|(_, r)| r.as_slice())
        else {
            continue;
        };
        let added_by = |v: Variant| {
            e.rounds
                .iter()
                .find(|(x, _)| *x == v)
                .map(|(_, r)| end_to_end::paired_added(r, nothing))
        };
        // The target is against the reference tool. On the disk load the defaults also
        // measure the loop worker's context switches, so two more ratios compare like with
        // like: the defaults against runqlat and biolatency together, and the block probes
        // alone (sched off) against biolatency.
        let reference = added_by(Variant::Reference);
        let references = added_by(Variant::ReferenceWithRunqlat);
        let floor = added_by(Variant::Floor).filter(|f| *f > 0.0);
        for (v, rounds) in &e.rounds {
            let (m, lo, hi) = end_to_end::summary(rounds);
            let added = end_to_end::paired_added(rounds, nothing);
            let (ratio, target) = match (v, reference, load.target) {
                (Variant::Nodelens | Variant::NodelensWithoutSched, Some(r), Some(t))
                    if r > 0.0 =>
                {
                    let ratio = added / r;
                    let mut shown = format!("{ratio:.2}");
                    if let (Variant::Nodelens, Some(both)) = (v, references.filter(|b| *b > 0.0)) {
                        shown += &format!(
                            " ({:.2} against {})",
                            added / both,
                            Variant::ReferenceWithRunqlat.label(load)
                        );
                    }
                    // What the programs add beyond attaching at all: the floor's empty
                    // programs on the same tracepoints.
                    if let (Variant::Nodelens, Some(floor)) = (v, floor) {
                        shown += &format!("; {:.2}x the floor's", added / floor);
                    }
                    (shown, format!("<= {t} ({})", met(ratio <= t)))
                }
                _ => (String::new(), String::new()),
            };
            let added = if *v == Variant::Nothing {
                String::new()
            } else {
                format!("{added:+.0}")
            };
            let _ = writeln!(
                s,
                "| {} (ns per {}) | {} | {m:.0} [{lo:.0}-{hi:.0}] | {added} | {ratio} | {target} |",
                load.name,
                load.unit,
                v.label(load)
            );
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Per probe, same loads: cost per event as the programs measure it (1 run in 64 timed) and as the kernel's BPF statistics say."
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| probe | load | events | ns/event (self) | ns/event (kernel) | agreement |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    for c in f.costs {
        let agreement = if c.kernel_ns > 0.0 {
            format!("{:+.0}%", (c.sampled_ns / c.kernel_ns - 1.0) * 100.0)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {agreement} |",
            c.probe, c.load, c.events, c.sampled_ns, c.kernel_ns
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Per scrape, {} sequential scrapes each, no gzip: nodelens on node_exporter's collectors (the same families), node_exporter, and nodelens with every collector on (eBPF families and per-cgroup series too).",
        f.scrapes
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| per agent | nodelens, same collectors | node_exporter | ratio | target | nodelens, all collectors |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|---:|");
    let (ours, theirs, full) = (f.ours, f.theirs, f.full);
    let cpu_ratio = ours.cpu_ms_per_scrape / theirs.cpu_ms_per_scrape;
    let rows: [(&str, f64, f64, String, f64); 6] = [
        (
            "CPU per scrape (ms)",
            ours.cpu_ms_per_scrape,
            theirs.cpu_ms_per_scrape,
            format!("<= 0.2 ({})", met(cpu_ratio <= 0.2)),
            full.cpu_ms_per_scrape,
        ),
        (
            "scrape latency p50 (ms)",
            ours.p50_ms,
            theirs.p50_ms,
            String::new(),
            full.p50_ms,
        ),
        (
            "scrape latency p99 (ms)",
            ours.p99_ms,
            theirs.p99_ms,
            format!("all collectors < 5 ms ({})", met(full.p99_ms < 5.0)),
            full.p99_ms,
        ),
        (
            "response bytes",
            ours.bytes,
            theirs.bytes,
            String::new(),
            full.bytes,
        ),
        (
            "series",
            ours.series,
            theirs.series,
            String::new(),
            full.series,
        ),
        (
            "RSS (MiB)",
            ours.rss_mib,
            theirs.rss_mib,
            format!(
                "all collectors <= 0.5 x ({})",
                met(full.rss_mib / theirs.rss_mib <= 0.5)
            ),
            full.rss_mib,
        ),
    ];
    for (name, a, b, target, all) in rows {
        let ratio = if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            s,
            "| {name} | {a:.2} | {b:.2} | {ratio} | {target} | {all:.2} |"
        );
    }
    let _ = writeln!(s);
    let p = f.push;
    let _ = writeln!(
        s,
        "Push (remote_write every second, all collectors, {:.0} pushes): CPU per push {:.2} ms (over an identical agent that does not push; a scrape of the same agent costs {:.2} ms), {:.0} compressed bytes and {:.0} samples per push.",
        p.pushes, p.cpu_ms_per_push, full.cpu_ms_per_scrape, p.bytes_per_push, p.samples_per_push
    );
    let _ = writeln!(s);
    let sc = f.scaled;
    let _ = writeln!(
        s,
        "Scale: 4,096 pods (one container each, kubelet systemd paths and log names), {} scrapes.",
        f.scrapes.min(200)
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| figure | nodelens | target |");
    let _ = writeln!(s, "|---|---:|---|");
    let _ = writeln!(
        s,
        "| CPU per scrape (ms) | {:.2} | <= 5 ({}) |",
        sc.cpu_ms_per_scrape,
        met(sc.cpu_ms_per_scrape <= 5.0)
    );
    let _ = writeln!(s, "| scrape latency p50 (ms) | {:.2} | |", sc.p50_ms);
    let _ = writeln!(
        s,
        "| scrape latency p99 (ms) | {:.2} | <= 15 ({}) |",
        sc.p99_ms,
        met(sc.p99_ms <= 15.0)
    );
    let _ = writeln!(
        s,
        "| response bytes | {:.0} | <= 1.5 MB ({}) |",
        sc.bytes,
        met(sc.bytes <= 1.5e6)
    );
    let _ = writeln!(s, "| series | {:.0} | |", sc.series);
    let _ = writeln!(
        s,
        "| cgroups exported one by one (pods among them) | {:.0} ({:.0}) | |",
        sc.cgroup_series, sc.pods
    );
    let _ = writeln!(s, "| RSS (MiB) | {:.1} | |", sc.rss_mib);
    let _ = writeln!(
        s,
        "| agent CPU with nobody scraping: upkeep and cgroup file refresh (% of one CPU) | {:.2} | <= 1 ({}) |",
        f.idle_cpu_percent,
        met(f.idle_cpu_percent <= 1.0)
    );
    let _ = writeln!(s);
    let b = f.busy;
    let _ = writeln!(
        s,
        "Scale, every pod busy: the same 4,096 pods after each ran work over a CPU limit, queued behind another task, reclaimed in a 32 MiB memory cgroup and blocked on reads, so that each per-pod series is out for (nearly) every pod; {} scrapes of an agent with the default series in each format, {} of one with every series.",
        f.scrapes.min(200),
        f.scrapes.min(50)
    );
    let _ = writeln!(s);
    let e = f.every;
    let _ = writeln!(
        s,
        "| figure | nodelens (default series) | target | every per-pod series (`--cgroup-series all`) |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|");
    let _ = writeln!(
        s,
        "| CPU per scrape (ms) | {:.2} | <= 10 ({}) | {:.2} |",
        b.cpu_ms_per_scrape,
        met(b.cpu_ms_per_scrape <= 10.0),
        e.cpu_ms_per_scrape
    );
    let _ = writeln!(
        s,
        "| scrape latency p50 (ms) | {:.2} | | {:.2} |",
        b.p50_ms, e.p50_ms
    );
    let _ = writeln!(
        s,
        "| scrape latency p99 (ms) | {:.2} | <= 25 ({}) | {:.2} |",
        b.p99_ms,
        met(b.p99_ms <= 25.0),
        e.p99_ms
    );
    let _ = writeln!(
        s,
        "| response bytes | {:.0} | <= 3 MB ({}) | {:.0} |",
        b.bytes,
        met(b.bytes <= 3e6),
        e.bytes
    );
    let (pb_cpu, pb_p99, pb_bytes) = f.busy_protobuf;
    let _ = writeln!(
        s,
        "| protobuf scrape (as Prometheus with native histograms asks): CPU (ms), p99 (ms), bytes | {pb_cpu:.2}, {pb_p99:.2}, {pb_bytes:.0} | <= 10 ms, <= 3 MB ({}) | |",
        met(pb_cpu <= 10.0 && pb_bytes <= 3e6)
    );
    let _ = writeln!(s, "| series | {:.0} | | {:.0} |", b.series, e.series);
    let _ = writeln!(s, "| RSS (MiB) | {:.1} | | {:.1} |", b.rss_mib, e.rss_mib);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Per-pod families in the busy scrapes: the pods with a series in each, and its lines and bytes per such pod (from the agent with every series on; \"default\" says whether `--cgroup-series` exports it by default)."
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| family | default | pods | lines per pod | bytes per pod |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|");
    for (family, fam) in f.every_pods {
        let per_pod = |n: usize| n as f64 / fam.pods.max(1) as f64;
        let _ = writeln!(
            s,
            "| `{family}` | {} | {} | {:.1} | {:.0} |",
            if f.busy_pods.contains_key(family) {
                "yes"
            } else {
                "no"
            },
            fam.pods,
            per_pod(fam.lines),
            per_pod(fam.bytes)
        );
    }
    let _ = writeln!(s);
    let (charged, here, big) = f.memory;
    let _ = writeln!(
        s,
        "Kernel memory of the maps: {:.1} MiB charged here ({here} possible CPUs); modeled for 192 CPUs: {:.1} MiB (target <= 32 MiB: {}).",
        charged / 1048576.0,
        big / 1048576.0,
        met(big <= 32.0 * 1048576.0)
    );
    s
}
