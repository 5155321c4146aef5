//! Cgroup family: per-cgroup CPU time, run-queue wait, context switches and reclaim stalls,
//! labelled with namespace, pod and container, with bounded cardinality.
//!
//! It has no probes of its own. The scheduler and memory programs charge each cgroup in its
//! slot of `CGROUP_STATS`, but only while this family is loaded: it sets
//! `CGROUP_ACCOUNTING`, so a node that turns the `cgroup` collector off pays nothing for
//! it. This family keeps the slots (`ebpf::slots`: upkeep takes back the slots of gone
//! cgroups and keeps their final values, see `cgroups::table`) and exports them.
use std::sync::{Arc, Mutex};

use agent_ebpf::{
    cgroup::{CGROUP_ACCOUNTING_GLOBAL, names},
    histogram::POD_NATIVE_BUCKETS,
};
use aya::Ebpf;
use clap::ValueEnum;
use prometheus_client::encoding::DescriptorEncoder;

use crate::{
    cgroups::{
        series::{self, Rendered},
        table::Row,
        tracker::Assignment,
    },
    ebpf::{
        family::{
            Attached, CgroupSeriesName, Family, FamilyLayout, Health, KernelSources, LoadContext,
            LoadedFamily, ProbeSpec, SettingError, SettingsValue, Sweep, chosen_cgroup_series,
            global_bytes, take_map,
        },
        native::pod_native_seconds,
        per_cgroup::{CgroupMap, PerCgroupMap, capacity_for},
        slots::{CgroupSlots, CgroupTotals, CgroupValues},
    },
    metrics::{CollectError, counter, gauge},
    protobuf_wire,
    render::{self, Samples},
};

pub struct Cgroup;

/// The collector name.
pub const NAME: &str = "cgroup";

/// One per-cgroup series (`cgroups.series`): each is one metric family,
/// `nodelens_cgroup_<name>_..._total`, and costs about 120 bytes per pod per scrape (per
/// kind, where it has kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CgroupSeries {
    Cpu,
    #[value(name = "runqueue_wait")]
    RunqueueWait,
    /// Off by default: two series per pod (voluntary, involuntary), half a busy node's
    /// response, for what the wait series and the node-wide counters mostly tell.
    #[value(name = "context_switches")]
    ContextSwitches,
    #[value(name = "reclaim_stall")]
    ReclaimStall,
    /// Two series per pod (I/O, other) once it has blocked uninterruptibly, and in a
    /// protobuf scrape the native histogram of its blocked times.
    Blocked,
}

impl CgroupSeries {
    /// CPU time and run-queue wait: two lines a pod. With the per-pod disk series (three
    /// per disk and op used), that is what a node of 4,096 busy pods can export within
    /// 3 MB a scrape; the others are a `--cgroup-series` away (docs/metrics.md).
    pub const DEFAULT: [CgroupSeries; 2] = [Self::Cpu, Self::RunqueueWait];
}

/// The family's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFamilySettings {
    /// The per-cgroup series exported (each once, in catalog order).
    pub series: Vec<CgroupSeries>,
}

impl Default for CgroupFamilySettings {
    fn default() -> Self {
        Self {
            series: CgroupSeries::DEFAULT.to_vec(),
        }
    }
}

/// The per-cgroup series, as `cgroups.series` names them (the same names as
/// [`CgroupSeries`]'s, which a unit test checks).
const SERIES: &[CgroupSeriesName] = &[
    CgroupSeriesName {
        name: "cpu",
        default: true,
    },
    CgroupSeriesName {
        name: "runqueue_wait",
        default: true,
    },
    CgroupSeriesName {
        name: "context_switches",
        default: false,
    },
    CgroupSeriesName {
        name: "reclaim_stall",
        default: false,
    },
    CgroupSeriesName {
        name: "blocked",
        default: false,
    },
];

/// The series `cgroups.series` chooses, in catalog order (config checked the names).
fn series_setting(merged: &serde_json::Value) -> CgroupFamilySettings {
    let chosen = chosen_cgroup_series(merged, SERIES);
    let series = CgroupSeries::value_variants()
        .iter()
        .copied()
        .filter(|s| {
            s.to_possible_value()
                .is_some_and(|v| chosen.contains(&v.get_name()))
        })
        .collect();
    CgroupFamilySettings { series }
}

impl Family for Cgroup {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cgroup_series(&self) -> &'static [CgroupSeriesName] {
        SERIES
    }

    fn settings(&self, merged: &serde_json::Value) -> Result<Option<SettingsValue>, SettingError> {
        Ok(Some(Arc::new(series_setting(merged))))
    }

    fn maps(&self) -> &'static [&'static str] {
        names::MAPS
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        &[]
    }

    fn layout(&self, _kernel: &KernelSources, ctx: &LoadContext) -> FamilyLayout {
        FamilyLayout::new(
            vec![(
                CGROUP_ACCOUNTING_GLOBAL,
                global_bytes(&u32::from(ctx.per_cgroup)),
            )],
            Ok(()),
            Ok(()),
            Vec::new(),
        )
    }

    fn map_sizes(&self, ctx: &LoadContext) -> Vec<(&'static str, u32)> {
        let slots = capacity_for(ctx.max_cgroups);
        vec![
            (names::CGROUP_STATS, slots),
            (names::CGROUP_SLOTS, slots),
            (names::CGROUP_FREE_SLOTS, slots),
        ]
    }

    fn prepare(&self, ebpf: &mut Ebpf) -> Result<(), String> {
        CgroupSlots::fill_free(ebpf)
    }

    fn take(
        &self,
        ebpf: &mut Ebpf,
        _attached: &Attached,
        ctx: &LoadContext,
    ) -> Result<Box<dyn LoadedFamily>, String> {
        let slots = CgroupSlots::new(
            take_map(ebpf, names::CGROUP_SLOTS)?,
            take_map(ebpf, names::CGROUP_FREE_SLOTS)?,
            take_map(ebpf, names::CGROUP_SLOTS_USED)?,
            take_map(ebpf, names::CGROUP_STATS)?,
        );
        let exported = exported(
            &ctx.settings
                .get::<CgroupFamilySettings>(NAME)
                .cloned()
                .unwrap_or_default()
                .series,
        );
        let slots = slots.reading_histograms(exported[RUNQUEUE_WAIT], exported[BLOCKED]);
        let capacity = slots.capacity();
        Ok(Box::new(CgroupMaps {
            stats: PerCgroupMap::new(names::CGROUP_STATS, slots, capacity, ctx.cgroups.clone()),
            texts: Mutex::default(),
            exported,
        }))
    }
}

struct CgroupMaps {
    stats: PerCgroupMap<CgroupSlots>,
    /// The last scrape's rows as text, sorted by id (see [`RowText`]).
    texts: Mutex<Vec<RowText>>,
    exported: Exported,
}

/// The slots as the shared sweep sees them: a slot taken from a gone cgroup waits before
/// it is free again, and what reached it meanwhile comes back as late values (see
/// `ebpf::slots`).
impl CgroupMap for CgroupSlots {
    type Key = u64;
    type Value = CgroupValues;

    fn entries(&mut self) -> Result<Vec<(u64, CgroupValues)>, String> {
        CgroupSlots::entries(self)
    }

    fn take(&mut self, id: &u64, assignment: Assignment) -> Option<CgroupValues> {
        CgroupSlots::take(self, *id, assignment != Assignment::Excluded)
    }

    fn late(&mut self) -> Vec<(u64, CgroupValues)> {
        self.release_waiting()
    }

    fn waiting(&self) -> usize {
        CgroupSlots::waiting(self)
    }
}

impl LoadedFamily for CgroupMaps {
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let (tracked, evictions, unknown) = self.stats.scrape(|scrape| {
            if render::protobuf() {
                self.encode_protobuf(&scrape.rows.rows)?;
            } else {
                self.encode(&scrape.rows.rows)?;
            }
            Ok(scrape.rows.tracker.counts())
        })?;
        gauge(
            out,
            "nodelens_cgroups_tracked",
            "Cgroups exported one by one (the rest fold into cgroup=\"other\").",
            tracked as f64,
        )?;
        counter(
            out,
            "nodelens_cgroup_evictions_total",
            "Tracked cgroups dropped after they were gone and scraped one last time.",
            evictions as f64,
        )?;
        counter(
            out,
            "nodelens_cgroups_unknown_total",
            "Cgroup ids that could not be resolved to a path; their totals went to cgroup=\"other\".",
            unknown as f64,
        )?;
        Ok(())
    }

    fn cgroup_maps(&self) -> Vec<&dyn Sweep> {
        vec![&self.stats]
    }

    fn health(&self) -> Health {
        Health {
            maps: vec![self.stats.fill()],
            lost: Vec::new(),
            costs: Vec::new(),
        }
    }
}

/// The five families, in the order they are written, each with the `--cgroup-series` name
/// that exports it: each series only once it is non-zero (a cgroup that never waited or
/// reclaimed adds no series for it).
const FAMILIES: [(CgroupSeries, &str, &str); 5] = [
    (
        CgroupSeries::Cpu,
        "nodelens_cgroup_cpu_seconds_total",
        "Time the cgroup's tasks spent on a CPU, measured at sched_switch.",
    ),
    (
        CgroupSeries::RunqueueWait,
        "nodelens_cgroup_runqueue_wait_seconds_total",
        "Time the cgroup's tasks spent runnable but waiting for a CPU.",
    ),
    (
        CgroupSeries::ContextSwitches,
        "nodelens_cgroup_context_switches_total",
        "Context switches of the cgroup's tasks: voluntary (blocked) or involuntary (preempted).",
    ),
    (
        CgroupSeries::ReclaimStall,
        "nodelens_cgroup_reclaim_stall_seconds_total",
        "Time the cgroup's tasks spent stalled in memory reclaim: direct or memcg.",
    ),
    (
        CgroupSeries::Blocked,
        "nodelens_cgroup_blocked_seconds_total",
        "Time the cgroup's tasks spent blocked in uninterruptible sleep (D state) until woken: waiting for I/O (in_iowait), or for anything else (locks, page faults, vfork).",
    ),
];

/// The indices of `runqueue_wait` and `blocked` in [`FAMILIES`]: in a protobuf scrape each
/// also brings a per-pod native histogram ([`NATIVE_FAMILIES`]).
const RUNQUEUE_WAIT: usize = 1;
const BLOCKED: usize = 4;
const _: () = assert!(
    matches!(FAMILIES[RUNQUEUE_WAIT].0, CgroupSeries::RunqueueWait)
        && matches!(FAMILIES[BLOCKED].0, CgroupSeries::Blocked)
);

/// A row's native histogram: (zero bucket, buckets, sum in nanoseconds); `None` if its
/// histograms were not read (never in a protobuf scrape that exports it).
type NativeOf = fn(&CgroupValues) -> Option<(u64, &[u64; POD_NATIVE_BUCKETS], u64)>;

/// The per-pod native histograms, each with the family of [`FAMILIES`] that brings it: one
/// sample per cgroup with a value, schema 0, from the buckets the kernel keeps in the
/// cgroup's slot. Its count is the buckets' total, its sum the family's total (both kinds
/// of blocked time). Protobuf only: the text formats cannot carry them.
const NATIVE_FAMILIES: [(usize, &str, &str, NativeOf); 2] = [
    (
        RUNQUEUE_WAIT,
        "nodelens_cgroup_runqueue_latency_seconds",
        "Run-queue waits of the cgroup's tasks, one by one: a native histogram, in a protobuf scrape only.",
        |v| {
            let h = v.histograms.as_deref()?;
            Some((
                h.runqueue_wait_zero,
                &h.runqueue_wait_buckets,
                v.totals.runqueue_wait_ns,
            ))
        },
    ),
    (
        BLOCKED,
        "nodelens_cgroup_blocked_latency_seconds",
        "Blocked times of the cgroup's tasks (uninterruptible sleep until woken, I/O or other), one by one: a native histogram, in a protobuf scrape only.",
        |v| {
            let h = v.histograms.as_deref()?;
            Some((
                h.blocked_zero,
                &h.blocked_buckets,
                v.totals.blocked_io_ns + v.totals.blocked_other_ns,
            ))
        },
    ),
];

fn native_family(
    out: &mut Vec<u8>,
    rows: &[Row<(), CgroupValues>],
    labels: &[&Rendered],
    (name, help, of): (&str, &str, NativeOf),
) {
    let mut family = protobuf_wire::NativeHistogramFamily::new(out, name, help);
    for (row, l) in rows.iter().zip(labels) {
        let Some((zero, buckets, sum_ns)) = of(&row.values) else {
            continue;
        };
        family.sample_buckets(
            l.protobuf(),
            &[],
            &pod_native_seconds(zero, buckets),
            sum_ns as f64 / 1e9,
        );
    }
    family.finish();
}

/// Which of [`FAMILIES`] are exported.
type Exported = [bool; FAMILIES.len()];

fn exported(series: &[CgroupSeries]) -> Exported {
    FAMILIES.map(|(s, _, _)| series.contains(&s))
}

/// A sample's value: nanoseconds, exported as seconds, or a count.
#[derive(Debug, Clone, Copy)]
enum Value {
    Seconds(u64),
    Count(u64),
}

impl Value {
    fn is_zero(self) -> bool {
        matches!(self, Value::Seconds(0) | Value::Count(0))
    }
}

/// Samples a row has in every format, one per total of [`CgroupTotals`].
const SAMPLES: usize = 8;

/// A row's samples in [`FAMILIES`] order: (family index, its `kind` label, value). Only
/// the non-zero ones of exported families are written, in either format.
fn row_samples(v: &CgroupTotals) -> [(usize, Option<&'static str>, Value); SAMPLES] {
    use Value::{Count, Seconds};
    [
        (0, None, Seconds(v.cpu_ns)),
        (1, None, Seconds(v.runqueue_wait_ns)),
        (2, Some("voluntary"), Count(v.voluntary_switches)),
        (2, Some("involuntary"), Count(v.involuntary_switches)),
        (3, Some("direct"), Seconds(v.reclaim_direct_ns)),
        (3, Some("memcg"), Seconds(v.reclaim_memcg_ns)),
        (4, Some("io"), Seconds(v.blocked_io_ns)),
        (4, Some("other"), Seconds(v.blocked_other_ns)),
    ]
}

/// The numbers of a row's samples, to tell whether its text is still right.
fn sample_values(v: &CgroupTotals) -> [u64; SAMPLES] {
    row_samples(v).map(|(_, _, value)| match value {
        Value::Seconds(n) | Value::Count(n) => n,
    })
}

/// One row's sample lines, kept from scrape to scrape and rendered again only when its
/// values or its labels change. Most cgroups of a node (pause containers, idle pods) do not
/// move between two scrapes, and formatting their lines was a fifth of a 4,096-pod scrape.
struct RowText {
    id: u64,
    /// The labels it was rendered with: the `SeriesLabels::serial` of the row's, and which
    /// of its label sets `series::choose` picked (with the cgroup path or without).
    serial: u64,
    with_path: bool,
    /// The values its lines show: the totals ([`row_samples`]).
    values: [u64; SAMPLES],
    /// The row's lines of every family, one after the other; family i's lines end at
    /// `ends[i]`.
    text: String,
    ends: [usize; FAMILIES.len()],
}

impl RowText {
    fn new(row: &Row<(), CgroupValues>, labels: &Rendered, exported: Exported) -> Self {
        let mut text = Self {
            id: row.id,
            serial: row.series.serial(),
            with_path: false,
            values: sample_values(&row.values.totals),
            text: String::new(),
            ends: [0; FAMILIES.len()],
        };
        text.render(row, labels, exported);
        text
    }

    /// This row's text, rendered again (into the same buffer) unless it is still right.
    fn update(&mut self, row: &Row<(), CgroupValues>, labels: &Rendered, exported: Exported) {
        let values = sample_values(&row.values.totals);
        if !(self.serial == row.series.serial()
            && self.with_path == row.series.is_with_path(labels)
            && self.values == values)
        {
            self.serial = row.series.serial();
            self.values = values;
            self.render(row, labels, exported);
        }
    }

    /// Renders the exported families (the others get no lines).
    fn render(&mut self, row: &Row<(), CgroupValues>, labels: &Rendered, exported: Exported) {
        self.with_path = row.series.is_with_path(labels);
        self.text.clear();
        let l = labels.text();
        let text = &mut self.text;
        // Family i's lines end where family i + 1's first sample starts.
        let mut ended = 0;
        for (family, kind, value) in row_samples(&row.values.totals) {
            while ended < family {
                self.ends[ended] = text.len();
                ended += 1;
            }
            if !exported[family] || value.is_zero() {
                continue;
            }
            let mut samples = Samples::into_string(text, FAMILIES[family].1);
            let kind = kind.map(|k| ("kind", k));
            let kind = kind.as_slice();
            match value {
                Value::Seconds(ns) => samples.float(l, kind, ns as f64 / 1e9),
                Value::Count(n) => samples.count(l, kind, n),
            }
        }
        for end in &mut self.ends[ended..] {
            *end = text.len();
        }
    }

    /// Family i's lines.
    fn family(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }
}

/// This scrape's rows as text, from the last scrape's: rows come sorted by id, and so do
/// the kept texts, so a merge finds each row's text of the last scrape and drops those of
/// rows that are gone. (Out of order, rows would only miss their kept text, never get
/// another row's.)
fn row_texts(
    last: Vec<RowText>,
    rows: &[Row<(), CgroupValues>],
    exported: Exported,
) -> Vec<RowText> {
    let labels = series::choose(rows.iter().map(|r| r.series));
    let mut last = last.into_iter().peekable();
    let mut texts = Vec::with_capacity(rows.len());
    for (row, labels) in rows.iter().zip(labels) {
        while last.next_if(|t| t.id < row.id).is_some() {}
        texts.push(match last.next_if(|t| t.id == row.id) {
            Some(mut text) => {
                text.update(row, labels, exported);
                text
            }
            None => RowText::new(row, labels, exported),
        });
    }
    texts
}

impl CgroupMaps {
    /// A protobuf scrape's families, written directly (`crate::protobuf_wire`) with each
    /// cgroup's labels encoded once; the kept text is of no use there.
    fn encode_protobuf(&self, rows: &[Row<(), CgroupValues>]) -> Result<(), CollectError> {
        let labels = series::choose(rows.iter().map(|r| r.series));
        render::direct(|out| {
            let out = out
                .and_then(|o| o.protobuf())
                .ok_or(CollectError::NotRendering)?;
            for (i, (_, name, help)) in FAMILIES.iter().enumerate() {
                if !self.exported[i] {
                    continue;
                }
                let mut family = protobuf_wire::CounterFamily::new(out, name, help);
                for (row, l) in rows.iter().zip(&labels) {
                    let samples = row_samples(&row.values.totals).into_iter();
                    for (_, kind, value) in samples.filter(|(f, _, v)| *f == i && !v.is_zero()) {
                        let value = match value {
                            Value::Seconds(ns) => ns as f64 / 1e9,
                            Value::Count(n) => n as f64,
                        };
                        let kind = kind.map(|k| ("kind", k));
                        family.sample(l.protobuf(), kind.as_slice(), value);
                    }
                }
                family.finish();
            }
            for (brought_by, name, help, of) in NATIVE_FAMILIES {
                if self.exported[brought_by] {
                    native_family(out, rows, &labels, (name, help, of));
                }
            }
            Ok(())
        })
    }

    /// Writes the exported families directly as text (`crate::render`): these are most of
    /// the samples of a node with many pods.
    fn encode(&self, rows: &[Row<(), CgroupValues>]) -> Result<(), CollectError> {
        let mut kept = self.texts.lock().unwrap_or_else(|p| p.into_inner());
        let texts = row_texts(std::mem::take(&mut *kept), rows, self.exported);
        let written = render::direct(|out| {
            let out = out.ok_or(CollectError::NotRendering)?;
            for (i, (_, name, help)) in FAMILIES.iter().enumerate() {
                if !self.exported[i] {
                    continue;
                }
                let mut samples = out.counter(name, help);
                for text in &texts {
                    samples.lines(text.family(i));
                }
            }
            Ok(())
        });
        *kept = texts;
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_names_are_the_enums_and_the_defaults_agree() {
        let names: Vec<&str> = CgroupSeries::value_variants()
            .iter()
            .filter_map(|s| s.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .map(|n| SERIES.iter().find(|s| s.name == n).expect("in SERIES").name)
            .collect();
        assert_eq!(names, SERIES.iter().map(|s| s.name).collect::<Vec<_>>());
        assert_eq!(
            series_setting(&serde_json::json!({})).series,
            CgroupSeries::DEFAULT
        );
    }
    use crate::{
        cgroups::settings::PathLabel,
        cgroups::{CgroupLabels, series::SeriesLabels},
    };

    /// Every family exported (`--cgroup-series all`).
    const ALL: Exported = [true; FAMILIES.len()];

    fn series(pod: &str, path: &str) -> SeriesLabels {
        let labels = CgroupLabels {
            namespace: "team-a".into(),
            pod: pod.into(),
            container: "app".into(),
            cgroup: path.into(),
            identified: !pod.is_empty(),
        };
        SeriesLabels::new(&labels, PathLabel::Auto)
    }

    fn row(series: &SeriesLabels, cpu_ns: u64, involuntary: u64) -> Row<'_, (), CgroupValues> {
        Row {
            id: 7,
            series,
            dims: (),
            values: CgroupValues {
                totals: CgroupTotals {
                    cpu_ns,
                    voluntary_switches: 3,
                    involuntary_switches: involuntary,
                    reclaim_memcg_ns: 1_500_000,
                    ..Default::default()
                },
                histograms: None,
            },
        }
    }

    fn chosen<'a>(row: &Row<'a, (), CgroupValues>) -> &'a Rendered {
        series::choose([row.series])[0]
    }

    /// The kept text against one rendered from scratch, family by family.
    fn assert_fresh(kept: &RowText, row: &Row<(), CgroupValues>) {
        let fresh = RowText::new(row, chosen(row), ALL);
        for i in 0..FAMILIES.len() {
            assert_eq!(kept.family(i), fresh.family(i), "family {i}");
        }
    }

    /// The texts of a scrape, each as one string, in row order.
    fn whole(texts: &[RowText]) -> Vec<String> {
        texts.iter().map(|t| t.text.clone()).collect()
    }

    #[test]
    fn kept_texts_follow_rows_that_come_and_go() {
        let labels: Vec<SeriesLabels> = ["a", "b", "c", "d"]
            .iter()
            .map(|pod| series(pod, &format!("kubepods.slice/pod-{pod}.slice/c.scope")))
            .collect();
        let at = |i: usize, id: u64, cpu_ns: u64| Row {
            id,
            ..row(&labels[i], cpu_ns, 0)
        };
        let fresh = |rows: &[Row<(), CgroupValues>]| whole(&row_texts(Vec::new(), rows, ALL));

        let first = [
            at(0, 10, 1_000_000),
            at(1, 20, 2_000_000),
            at(2, 30, 3_000_000),
        ];
        let kept = row_texts(Vec::new(), &first, ALL);
        assert_eq!(whole(&kept), fresh(&first));
        let b = kept[1].text.as_ptr();

        // 10 gone, 20 unchanged, 25 new, 30 moved, 40 new at the end.
        let second = [
            at(1, 20, 2_000_000),
            at(3, 25, 5_000_000),
            at(2, 30, 3_500_000),
            at(0, 40, 1_000_000),
        ];
        let kept = row_texts(kept, &second, ALL);
        assert_eq!(whole(&kept), fresh(&second));
        assert_eq!(
            kept[0].text.as_ptr(),
            b,
            "20's text is kept, not rendered again"
        );
        assert!(kept[3].text.contains("pod=\"a\""), "40 is not 10's text");

        // Everything gone, then back.
        let kept = row_texts(kept, &[], ALL);
        assert!(kept.is_empty());
        let kept = row_texts(kept, &first, ALL);
        assert_eq!(whole(&kept), fresh(&first));
    }

    #[test]
    fn a_kept_row_text_changes_with_its_values_and_labels_only() {
        let unnamed = series("", "kubepods.slice/pod-x.slice/c.scope");
        let first = row(&unnamed, 2_000_000, 0);
        let mut text = RowText::new(&first, chosen(&first), ALL);
        assert_eq!(
            text.family(0),
            "nodelens_cgroup_cpu_seconds_total{cgroup=\"kubepods.slice/pod-x.slice/c.scope\",\
             container=\"app\",namespace=\"team-a\"} 0.002\n"
        );
        assert_eq!(text.family(1), "", "no wait yet: no series");
        assert!(text.family(2).ends_with("kind=\"voluntary\"} 3\n"));
        assert!(text.family(3).ends_with("kind=\"memcg\"} 0.0015\n"));

        // Unchanged: the very same text, not rendered again.
        let before = text.text.as_ptr();
        text.update(&first, chosen(&first), ALL);
        assert_eq!(text.text.as_ptr(), before);
        assert_fresh(&text, &first);

        // A value moved, one series appeared.
        let moved = row(&unnamed, 2_500_000, 1);
        text.update(&moved, chosen(&moved), ALL);
        assert_fresh(&text, &moved);
        assert!(text.family(2).contains("kind=\"involuntary\"} 1\n"));

        // Same values, new labels (the pod got its name): rendered again.
        let named = series("web-1", "kubepods.slice/pod-x.slice/c.scope");
        let renamed = row(&named, 2_500_000, 1);
        text.update(&renamed, chosen(&renamed), ALL);
        assert_fresh(&text, &renamed);
        assert!(text.family(0).contains("pod=\"web-1\""));
    }

    #[test]
    fn families_not_asked_for_get_no_lines() {
        let labels = series("web-1", "kubepods.slice/pod-x.slice/c.scope");
        let r = row(&labels, 2_000_000, 4);
        let default = exported(&CgroupSeries::DEFAULT);
        assert_eq!(default, [true, true, false, false, false]);
        let text = RowText::new(&r, chosen(&r), default);
        assert!(text.family(0).contains("pod=\"web-1\"} 0.002\n"));
        for (family, what) in [
            (2, "context switches"),
            (3, "reclaim stalls"),
            (4, "blocked time"),
        ] {
            assert_eq!(
                text.family(family),
                "",
                "{what} are not exported by default"
            );
        }
        let all = RowText::new(&r, chosen(&r), ALL);
        assert!(all.family(3).ends_with("kind=\"memcg\"} 0.0015\n"));
        assert_eq!(
            text.text.len() + (2..5).map(|f| all.family(f).len()).sum::<usize>(),
            all.text.len(),
            "everything else the same"
        );
        let only_switches =
            RowText::new(&r, chosen(&r), exported(&[CgroupSeries::ContextSwitches]));
        assert_eq!(only_switches.text, all.family(2));
    }
}
