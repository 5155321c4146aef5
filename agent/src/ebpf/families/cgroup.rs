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
    cgroup::{CGROUP_ACCOUNTING_GLOBAL, CGROUP_BLOCKED_HISTOGRAM_GLOBAL, names},
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
        native::{pod_native_count, pod_native_seconds},
        per_cgroup::{CgroupMap, PerCgroupMap, capacity_for},
        slots::{CgroupSlots, CgroupTotals, CgroupValues},
    },
    kept::{self, Families, Kept},
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
        // The histogram of blocked times is counted only where it is exported.
        let blocked_histogram = ctx.per_cgroup && exported_in(ctx)[BLOCKED];
        FamilyLayout::new(
            vec![
                (
                    CGROUP_ACCOUNTING_GLOBAL,
                    global_bytes(&u32::from(ctx.per_cgroup)),
                ),
                (
                    CGROUP_BLOCKED_HISTOGRAM_GLOBAL,
                    global_bytes(&u32::from(blocked_histogram)),
                ),
            ],
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
        let exported = exported_in(ctx);
        let slots = slots.reading_histograms(exported[RUNQUEUE_WAIT], exported[BLOCKED]);
        let capacity = slots.capacity();
        Ok(Box::new(CgroupMaps {
            stats: PerCgroupMap::new(names::CGROUP_STATS, slots, capacity, ctx.cgroups.clone()),
            texts: Mutex::default(),
            protobufs: Mutex::default(),
            exported,
        }))
    }
}

struct CgroupMaps {
    stats: PerCgroupMap<CgroupSlots>,
    /// The last scrape's rows as text, and as protobuf, sorted by id (see `crate::kept`).
    texts: Mutex<Vec<RowText>>,
    protobufs: Mutex<Vec<RowProtobuf>>,
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

/// Which of [`FAMILIES`] are exported.
type Exported = [bool; FAMILIES.len()];

/// Which of [`FAMILIES`] the settings export.
fn exported_in(ctx: &LoadContext) -> Exported {
    exported(
        &ctx.settings
            .get::<CgroupFamilySettings>(NAME)
            .cloned()
            .unwrap_or_default()
            .series,
    )
}

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

/// The numbers of a row's samples, to tell whether its kept encoding is still right.
fn sample_values(v: &CgroupTotals) -> [u64; SAMPLES] {
    row_samples(v).map(|(_, _, value)| match value {
        Value::Seconds(n) | Value::Count(n) => n,
    })
}

/// What a row's kept encoding shows, in either format: the labels it was encoded with (the
/// `SeriesLabels::serial` of the row's, and which of its label sets `series::choose`
/// picked, with the cgroup path or without) and its totals ([`row_samples`]).
#[derive(Debug, PartialEq, Eq)]
struct Shown {
    serial: u64,
    with_path: bool,
    values: [u64; SAMPLES],
}

impl Shown {
    fn of(row: &Row<(), CgroupValues>, labels: &Rendered) -> Self {
        Self {
            serial: row.series.serial(),
            with_path: row.series.is_with_path(labels),
            values: sample_values(&row.values.totals),
        }
    }
}

/// One row's sample lines, kept from scrape to scrape (`crate::kept`): each of
/// [`FAMILIES`]'s.
type RowText = Kept<u64, Shown, String, { FAMILIES.len() }>;

/// A row's protobuf samples, kept as [`RowText`] keeps its lines: each family's `metric`
/// fields (the counters of [`FAMILIES`], then the histograms of [`NATIVE_FAMILIES`]). What
/// they show adds each native histogram's count (zero bucket and buckets added): a bucket
/// only ever grows (a row's counters never go back), so an unchanged count is unchanged
/// buckets, and the totals include each histogram's sum.
type RowProtobuf = Kept<
    u64,
    (Shown, [u64; NATIVE_FAMILIES.len()]),
    Vec<u8>,
    { FAMILIES.len() + NATIVE_FAMILIES.len() },
>;

/// This scrape's rows encoded in one format, each from its kept encoding of the last
/// scrape where that still shows the row (`kept::encode`; rows come sorted by id). `shown`
/// is what a row's samples show, and `write` encodes them.
fn kept_rows<S: PartialEq, B: kept::Buffer, const N: usize>(
    last: Vec<Kept<u64, S, B, N>>,
    rows: &[Row<(), CgroupValues>],
    shown: impl Fn(&Row<(), CgroupValues>, &Rendered) -> S,
    mut write: impl FnMut(&Row<(), CgroupValues>, &Rendered, &mut Families<B, N>),
) -> Vec<Kept<u64, S, B, N>> {
    let labels = series::choose(rows.iter().map(|r| r.series));
    kept::encode(
        last,
        rows.iter().zip(labels),
        |(row, _)| Some(row.id),
        |(row, labels)| shown(row, labels),
        |(row, labels), families| write(row, labels, families),
    )
}

/// The rows' lines, kept from the last text scrape's `last`.
fn kept_texts(
    last: Vec<RowText>,
    rows: &[Row<(), CgroupValues>],
    exported: Exported,
) -> Vec<RowText> {
    kept_rows(last, rows, Shown::of, |row, labels, families| {
        render_text(row, labels, exported, families)
    })
}

/// The rows' protobuf samples, kept from the last protobuf scrape's `last`.
fn kept_protobufs(
    last: Vec<RowProtobuf>,
    rows: &[Row<(), CgroupValues>],
    exported: Exported,
) -> Vec<RowProtobuf> {
    protobuf_wire::with_native_encoder(|encoder| {
        kept_rows(
            last,
            rows,
            |row, labels| (Shown::of(row, labels), native_counts(&row.values)),
            |row, labels, families| render_protobuf(row, labels, exported, encoder, families),
        )
    })
}

/// Renders a row's lines of the exported families (the others get none).
fn render_text(
    row: &Row<(), CgroupValues>,
    labels: &Rendered,
    exported: Exported,
    families: &mut Families<String, { FAMILIES.len() }>,
) {
    let l = labels.text();
    for (family, kind, value) in row_samples(&row.values.totals) {
        if !exported[family] || value.is_zero() {
            continue;
        }
        families.start(family);
        let mut samples = Samples::into_string(&mut families.buf, FAMILIES[family].1);
        let kind = kind.map(|k| ("kind", k));
        let kind = kind.as_slice();
        match value {
            Value::Seconds(ns) => samples.float(l, kind, ns as f64 / 1e9),
            Value::Count(n) => samples.count(l, kind, n),
        }
    }
}

/// The counts [`RowProtobuf`] compares.
fn native_counts(v: &CgroupValues) -> [u64; NATIVE_FAMILIES.len()] {
    NATIVE_FAMILIES
        .map(|(_, _, _, of)| of(v).map_or(0, |(zero, buckets, _)| pod_native_count(zero, buckets)))
}

/// Encodes a row's samples of the exported families: the counters, then the histograms.
fn render_protobuf(
    row: &Row<(), CgroupValues>,
    labels: &Rendered,
    exported: Exported,
    encoder: &mut protobuf_wire::NativeEncoder,
    families: &mut Families<Vec<u8>, { FAMILIES.len() + NATIVE_FAMILIES.len() }>,
) {
    let l = labels.protobuf();
    for (family, kind, value) in row_samples(&row.values.totals) {
        if !exported[family] || value.is_zero() {
            continue;
        }
        families.start(family);
        let kind = kind.map(|k| ("kind", k));
        let value = match value {
            Value::Seconds(ns) => ns as f64 / 1e9,
            Value::Count(n) => n as f64,
        };
        protobuf_wire::counter_metric(&mut families.buf, l, kind.as_slice(), value);
    }
    for (k, (brought_by, _, _, of)) in NATIVE_FAMILIES.iter().enumerate() {
        if exported[*brought_by]
            && let Some((zero, buckets, sum_ns)) = of(&row.values)
        {
            families.start(FAMILIES.len() + k);
            encoder.sample_buckets(
                &mut families.buf,
                l,
                &[],
                &pod_native_seconds(zero, buckets),
                sum_ns as f64 / 1e9,
            );
        }
    }
}

impl CgroupMaps {
    /// A protobuf scrape's families, written directly (`crate::protobuf_wire`) from each
    /// row's samples, kept encoded from the last protobuf scrape ([`RowProtobuf`]).
    fn encode_protobuf(&self, rows: &[Row<(), CgroupValues>]) -> Result<(), CollectError> {
        let mut kept = self.protobufs.lock().unwrap_or_else(|p| p.into_inner());
        let encoded = kept_protobufs(std::mem::take(&mut *kept), rows, self.exported);
        let written = render::direct(|out| {
            let out = out
                .and_then(|o| o.protobuf())
                .ok_or(CollectError::NotRendering)?;
            for (i, (_, name, help)) in FAMILIES.iter().enumerate() {
                if !self.exported[i] {
                    continue;
                }
                let mut family = protobuf_wire::CounterFamily::new(out, name, help);
                for row in &encoded {
                    family.encoded(row.family(i));
                }
                family.finish();
            }
            for (k, (brought_by, name, help, _)) in NATIVE_FAMILIES.iter().enumerate() {
                if !self.exported[*brought_by] {
                    continue;
                }
                let mut family = protobuf_wire::NativeHistogramFamily::new(out, name, help);
                for row in &encoded {
                    family.encoded(row.family(FAMILIES.len() + k));
                }
                family.finish();
            }
            Ok(())
        });
        *kept = encoded;
        written
    }

    /// Writes the exported families directly as text (`crate::render`): these are most of
    /// the samples of a node with many pods.
    fn encode(&self, rows: &[Row<(), CgroupValues>]) -> Result<(), CollectError> {
        let mut kept = self.texts.lock().unwrap_or_else(|p| p.into_inner());
        let texts = kept_texts(std::mem::take(&mut *kept), rows, self.exported);
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

    /// A row's text rendered from scratch.
    fn text_of(row: &Row<(), CgroupValues>, exported: Exported) -> RowText {
        kept_texts(Vec::new(), std::slice::from_ref(row), exported).remove(0)
    }

    /// A row's kept text, updated for `row`.
    fn update(kept: RowText, row: &Row<(), CgroupValues>) -> RowText {
        kept_texts(vec![kept], std::slice::from_ref(row), ALL).remove(0)
    }

    /// The kept text against one rendered from scratch, family by family.
    fn assert_fresh(kept: &RowText, row: &Row<(), CgroupValues>) {
        let fresh = text_of(row, ALL);
        for i in 0..FAMILIES.len() {
            assert_eq!(kept.family(i), fresh.family(i), "family {i}");
        }
    }

    /// The texts of a scrape, each as one string, in row order.
    fn whole(texts: &[RowText]) -> Vec<String> {
        texts.iter().map(|t| t.all().clone()).collect()
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
        let fresh = |rows: &[Row<(), CgroupValues>]| whole(&kept_texts(Vec::new(), rows, ALL));

        let first = [
            at(0, 10, 1_000_000),
            at(1, 20, 2_000_000),
            at(2, 30, 3_000_000),
        ];
        let mut kept = kept_texts(Vec::new(), &first, ALL);
        assert_eq!(whole(&kept), fresh(&first));
        // A mark after 20's lines: gone if its text were rendered again. And one after
        // 10's, which no other row may get.
        kept[1].buf_mut().push_str("#kept");
        kept[0].buf_mut().push_str("#gone");

        // 10 gone, 20 unchanged, 25 new, 30 moved, 40 new at the end.
        let second = [
            at(1, 20, 2_000_000),
            at(3, 25, 5_000_000),
            at(2, 30, 3_500_000),
            at(0, 40, 1_000_000),
        ];
        let mut kept = kept_texts(kept, &second, ALL);
        assert!(
            kept[0].all().ends_with("#kept"),
            "20's text is kept, not rendered again"
        );
        let marked = kept[0].all().len() - "#kept".len();
        kept[0].buf_mut().truncate(marked);
        assert_eq!(whole(&kept), fresh(&second));
        assert!(kept[3].all().contains("pod=\"a\""));
        assert!(
            kept.iter().all(|k| !k.all().contains("#gone")),
            "40 has the labels and values 10 had, and not its kept text"
        );

        // Everything gone, then back.
        let kept = kept_texts(kept, &[], ALL);
        assert!(kept.is_empty());
        let kept = kept_texts(kept, &first, ALL);
        assert_eq!(whole(&kept), fresh(&first));
    }

    #[test]
    fn kept_protobuf_rows_are_encoded_again_when_a_total_or_a_histogram_moves() {
        use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::Metric;
        use prost::Message as _;

        let labels = series("a", "kubepods.slice/pod-a.slice/c.scope");
        let with_waits = |cpu_ns: u64, waits_in_bucket_3: u64, zero: u64| {
            let mut r = row(&labels, cpu_ns, 0);
            r.values.totals.runqueue_wait_ns = 5_000;
            let mut h = crate::ebpf::slots::PodHistograms {
                runqueue_wait_zero: zero,
                ..Default::default()
            };
            h.runqueue_wait_buckets[3] = waits_in_bucket_3;
            r.values.histograms = Some(Box::new(h));
            r
        };
        let fresh = |r: &Row<(), CgroupValues>| {
            let kept = kept_protobufs(Vec::new(), std::slice::from_ref(r), ALL);
            kept.into_iter().next().expect("one row").all().clone()
        };
        // Every family's samples of one row, decoded as Prometheus reads a `metric` field.
        let decode = |bytes: &[u8]| -> Vec<Metric> {
            let mut rest = bytes;
            let mut metrics = vec![];
            while !rest.is_empty() {
                assert_eq!(rest[0], 0x22, "a MetricFamily.metric field");
                rest = &rest[1..];
                metrics.push(Metric::decode_length_delimited(&mut rest).expect("decodes"));
            }
            metrics
        };

        let first = with_waits(1_000_000, 4, 0);
        let kept = kept_protobufs(Vec::new(), std::slice::from_ref(&first), ALL);
        let metrics = decode(kept[0].all());
        // cpu, runqueue wait, voluntary switches, reclaim (memcg), then the histogram.
        assert_eq!(metrics.len(), 5, "{metrics:?}");
        let native = metrics[4].histogram.as_ref().expect("the native histogram");
        assert_eq!((native.sample_count, native.sample_sum), (4, 5e-6));
        // A mark after the samples (no family's bytes reach it): gone once the row is
        // encoded again, which clears its bytes.
        let mut kept = kept;
        kept[0].buf_mut().push(0xAA);

        // Unchanged: kept as it was.
        let kept = kept_protobufs(kept, std::slice::from_ref(&first), ALL);
        assert_eq!(kept[0].all().last(), Some(&0xAA), "not encoded again");
        // A wait of 0 ns moves the histogram (its zero bucket) and no total.
        let zero_wait = with_waits(1_000_000, 4, 1);
        let kept = kept_protobufs(kept, std::slice::from_ref(&zero_wait), ALL);
        assert_eq!(*kept[0].all(), fresh(&zero_wait), "encoded again");
        let native = decode(kept[0].all())[4].histogram.clone().expect("native");
        assert_eq!((native.sample_count, native.zero_count), (5, 1));
        // A total alone.
        let more_cpu = with_waits(3_000_000, 4, 1);
        let kept = kept_protobufs(kept, std::slice::from_ref(&more_cpu), ALL);
        assert_eq!(*kept[0].all(), fresh(&more_cpu));
        assert_eq!(
            decode(kept[0].all())[0].counter.as_ref().map(|c| c.value),
            Some(0.003)
        );
    }

    #[test]
    fn a_kept_row_text_changes_with_its_values_and_labels_only() {
        let unnamed = series("", "kubepods.slice/pod-x.slice/c.scope");
        let first = row(&unnamed, 2_000_000, 0);
        let text = text_of(&first, ALL);
        assert_eq!(
            text.family(0),
            "nodelens_cgroup_cpu_seconds_total{cgroup=\"kubepods.slice/pod-x.slice/c.scope\",\
             container=\"app\",namespace=\"team-a\"} 0.002\n"
        );
        assert_eq!(text.family(1), "", "no wait yet: no series");
        assert!(text.family(2).ends_with("kind=\"voluntary\"} 3\n"));
        assert!(text.family(3).ends_with("kind=\"memcg\"} 0.0015\n"));

        // Unchanged: the very same text, not rendered again (a mark after it stays).
        let mut text = text;
        text.buf_mut().push('#');
        let mut text = update(text, &first);
        assert_eq!(text.buf_mut().pop(), Some('#'), "not rendered again");
        assert_fresh(&text, &first);

        // A value moved, one series appeared.
        let moved = row(&unnamed, 2_500_000, 1);
        let text = update(text, &moved);
        assert_fresh(&text, &moved);
        assert!(text.family(2).contains("kind=\"involuntary\"} 1\n"));

        // Same values, new labels (the pod got its name): rendered again.
        let named = series("web-1", "kubepods.slice/pod-x.slice/c.scope");
        let renamed = row(&named, 2_500_000, 1);
        let text = update(text, &renamed);
        assert_fresh(&text, &renamed);
        assert!(text.family(0).contains("pod=\"web-1\""));
    }

    #[test]
    fn families_not_asked_for_get_no_lines() {
        let labels = series("web-1", "kubepods.slice/pod-x.slice/c.scope");
        let r = row(&labels, 2_000_000, 4);
        let default = exported(&CgroupSeries::DEFAULT);
        assert_eq!(default, [true, true, false, false, false]);
        let text = text_of(&r, default);
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
        let all = text_of(&r, ALL);
        assert!(all.family(3).ends_with("kind=\"memcg\"} 0.0015\n"));
        assert_eq!(
            text.all().len() + (2..5).map(|f| all.family(f).len()).sum::<usize>(),
            all.all().len(),
            "everything else the same"
        );
        let only_switches = text_of(&r, exported(&[CgroupSeries::ContextSwitches]));
        assert_eq!(only_switches.all(), all.family(2));
    }
}
