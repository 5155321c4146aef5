//! The disk family's per-pod series, written directly in the scrape's format
//! (`crate::render`, `crate::protobuf_wire`): a busy node has a few per pod, and through
//! prometheus_client's encoders they were a third of a text scrape of 4,096 pods and most
//! of a protobuf one. A series appears once it is non-zero; a protobuf scrape also has each
//! row's latencies as a native histogram.
//!
//! A protobuf scrape keeps each row's samples encoded ([`KeptDiskRow`]) and encodes them again
//! only when the row changes: most pods of a node do no I/O between two scrapes, and
//! encoding some 5,000 rows' histograms and counters was a fifth of a protobuf scrape of
//! 4,096 busy pods.
use std::sync::Mutex;

use agent_ebpf::disk::CgroupDiskStats;

use crate::{
    cgroups::series,
    ebpf::native::{pod_native_count, pod_native_seconds},
    kept::{self, Families, Kept},
    metrics::CollectError,
    protobuf_wire, render,
};

/// Writes the rows' families into the scrape being rendered. A protobuf scrape takes each
/// row's samples from `kept` where they are still right, and leaves this scrape's there.
pub(super) fn write(
    rows: &[DiskRow],
    exported: Exported,
    kept: &Mutex<Vec<KeptDiskRow>>,
) -> Result<(), CollectError> {
    render::direct(|out| {
        let out = out.ok_or(CollectError::NotRendering)?;
        match out.protobuf() {
            Some(out) => {
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                per_cgroup_protobuf(out, rows, exported, &mut kept)
            }
            None => per_cgroup_text(out, rows, exported),
        }
        Ok(())
    })
}

/// One per-cgroup disk row of a scrape: its cgroup's labels, disk, op and totals.
pub(super) struct DiskRow<'a> {
    pub labels: &'a series::Rendered,
    pub device: &'a str,
    pub op: &'static str,
    pub values: &'a CgroupDiskStats,
    /// Which row this is, for its kept encoding: `None` for requests of no known cgroup
    /// ("unknown"), which are encoded every scrape.
    pub identity: Option<Identity>,
}

/// A row's cgroup, disk and op, and the labels it is shown with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Identity {
    pub key: RowKey,
    /// `SeriesLabels::serial` of the row's cgroup: new when its labels change.
    pub serial: u64,
    /// Whether `series::choose` gave it the label set with the cgroup path.
    pub with_path: bool,
}

/// (cgroup id, dev, op): the order rows come in, and kept rows are found by.
pub(super) type RowKey = (u64, u32, u32);

impl DiskRow<'_> {
    /// Family `i` of [`PER_CGROUP_FAMILIES`]'s value: a whole number, or nanoseconds for
    /// the seconds family.
    fn value(&self, i: usize) -> u64 {
        match i {
            0 => self.values.bytes,
            1 => self.values.ios,
            _ => self.values.ns,
        }
    }

    fn extra(&self) -> [(&str, &str); 2] {
        [("device", self.device), ("op", self.op)]
    }
}

/// The per-cgroup families in the order they are written; the last one is in seconds. The
/// first (bytes) is exported only when `--cgroup-series` asks for `disk_bytes`.
const PER_CGROUP_FAMILIES: [(&str, &str); 3] = [
    (
        "nodelens_cgroup_disk_io_bytes_total",
        "Bytes of the cgroup's completed block requests, per whole disk and operation. Who owns a request: see docs/metrics.md (the bio's cgroup on cgroup v2 with the io controller, else the issuing task's).",
    ),
    (
        "nodelens_cgroup_disk_ios_total",
        "The cgroup's completed block requests, per whole disk and operation.",
    ),
    (
        "nodelens_cgroup_disk_io_seconds_total",
        "Summed issue-to-completion time of the cgroup's completed block requests: rate(seconds) / rate(ios) is its mean device latency.",
    ),
];

/// The index of the family in seconds.
const SECONDS: usize = 2;

/// Which of [`PER_CGROUP_FAMILIES`] are exported.
pub(super) type Exported = [bool; PER_CGROUP_FAMILIES.len()];

fn per_cgroup_text(out: &mut render::DirectText, rows: &[DiskRow], exported: Exported) {
    for (i, (name, help)) in PER_CGROUP_FAMILIES.iter().enumerate() {
        if !exported[i] {
            continue;
        }
        let mut samples = out.counter(name, help);
        for row in rows {
            match row.value(i) {
                0 => {}
                ns if i == SECONDS => {
                    samples.float(row.labels.text(), &row.extra(), ns as f64 / 1e9)
                }
                n => samples.count(row.labels.text(), &row.extra(), n),
            }
        }
    }
}

/// The per-pod latency histogram, which only protobuf carries; written before the
/// counters of [`PER_CGROUP_FAMILIES`].
const LATENCY_FAMILY: (&str, &str) = (
    "nodelens_cgroup_disk_io_latency_seconds",
    "Latencies of the cgroup's completed block requests, issue to completion, per whole disk and operation: a native histogram, in a protobuf scrape only.",
);

/// A row's protobuf samples kept from scrape to scrape (`crate::kept`): the latency
/// histogram's, then each counter family's `metric` fields.
pub(super) type KeptDiskRow = Kept<RowKey, Shown, Vec<u8>, { 1 + PER_CGROUP_FAMILIES.len() }>;

/// What a row's kept samples show: its labels (the `SeriesLabels::serial` of its cgroup's
/// and whether `series::choose` gave it the set with the path), the families exported, its
/// device's name and its [`shown_values`].
#[derive(Debug, PartialEq)]
pub(super) struct Shown {
    serial: u64,
    with_path: bool,
    exported: Exported,
    device: DeviceName,
    values: [u64; 4],
}

impl Shown {
    fn of(row: &DiskRow, exported: Exported) -> Self {
        Self {
            serial: row.identity.map_or(0, |i| i.serial),
            with_path: row.identity.is_some_and(|i| i.with_path),
            exported,
            device: DeviceName::new(row.device),
            values: shown_values(row.values),
        }
    }
}

/// A device's name as a kept row keeps it: in place, so that comparing names does not
/// reach into another allocation for every row (that was a twentieth of a protobuf scrape
/// of 4,096 busy pods). The kernel's names are at most 31 bytes (`DISK_NAME_LEN`), and so
/// is `MAJ:MIN`; a longer one would be boxed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DeviceName {
    Short { len: u8, bytes: [u8; 31] },
    Long(Box<str>),
}

impl DeviceName {
    fn new(name: &str) -> Self {
        let mut bytes = [0; 31];
        match bytes.get_mut(..name.len()) {
            Some(start) => {
                start.copy_from_slice(name.as_bytes());
                Self::Short {
                    len: name.len() as u8,
                    bytes,
                }
            }
            None => Self::Long(name.into()),
        }
    }
}

/// The numbers a row's samples show: its three totals and its histogram's count. A bucket
/// only grows (a row's counters never go back), so an unchanged count is unchanged buckets;
/// the histogram's sum is the seconds total.
fn shown_values(v: &CgroupDiskStats) -> [u64; 4] {
    let count = pod_native_count(v.latency_zero, &v.latency_buckets);
    [v.bytes, v.ios, v.ns, count]
}

/// Encodes a row's samples: its latency histogram, then the exported counter families'.
fn encode(
    row: &DiskRow,
    exported: Exported,
    encoder: &mut protobuf_wire::NativeEncoder,
    families: &mut Families<Vec<u8>, { 1 + PER_CGROUP_FAMILIES.len() }>,
) {
    let (labels, extra) = (row.labels.protobuf(), row.extra());
    encoder.sample_buckets(
        &mut families.buf,
        labels,
        &extra,
        &pod_native_seconds(row.values.latency_zero, &row.values.latency_buckets),
        row.values.ns as f64 / 1e9,
    );
    for (i, exported) in exported.iter().enumerate() {
        let value = match row.value(i) {
            _ if !exported => continue,
            0 => continue,
            ns if i == SECONDS => ns as f64 / 1e9,
            n => n as f64,
        };
        families.start(1 + i);
        protobuf_wire::counter_metric(&mut families.buf, labels, &extra, value);
    }
}

/// This scrape's rows encoded, each from its kept encoding of the last scrape where there
/// is one (`kept::encode`). Rows come sorted by key, the unknown ones (no key) last.
fn encoded_rows(last: Vec<KeptDiskRow>, rows: &[DiskRow], exported: Exported) -> Vec<KeptDiskRow> {
    debug_assert!(
        rows.is_sorted_by_key(|r| r.identity.map_or((1, (0, 0, 0)), |i| (0, i.key))),
        "rows by key, the unknown ones last"
    );
    protobuf_wire::with_native_encoder(|encoder| {
        kept::encode(
            last,
            rows,
            |row| row.identity.map(|i| i.key),
            |row| Shown::of(row, exported),
            |row, families| encode(row, exported, encoder, families),
        )
    })
}

fn per_cgroup_protobuf(
    out: &mut Vec<u8>,
    rows: &[DiskRow],
    exported: Exported,
    kept: &mut Vec<KeptDiskRow>,
) {
    let encoded = encoded_rows(std::mem::take(kept), rows, exported);
    // The latencies one by one, per pod: a native histogram, which only protobuf carries.
    let (name, help) = LATENCY_FAMILY;
    let mut latency = protobuf_wire::NativeHistogramFamily::new(out, name, help);
    for row in &encoded {
        latency.encoded(row.family(0));
    }
    latency.finish();
    for (i, (name, help)) in PER_CGROUP_FAMILIES.iter().enumerate() {
        if !exported[i] {
            continue;
        }
        let mut family = protobuf_wire::CounterFamily::new(out, name, help);
        for row in &encoded {
            family.encoded(row.family(1 + i));
        }
        family.finish();
    }
    // The unknown rows' encodings are not kept: their labels are made anew each scrape.
    *kept = encoded.into_iter().filter(|k| k.key().is_some()).collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::DescriptorEncoder;

    /// The per-pod disk families as prometheus_client wrote them before they were written
    /// directly: the golden reference, so no dashboard sees another byte.
    fn through_the_encoder(rows: &[DiskRow]) -> prometheus_client::registry::Registry {
        use crate::metrics::{counts, family};
        #[derive(Debug)]
        struct Encoder(Vec<(series::Rendered, String, &'static str, CgroupDiskStats)>);
        impl prometheus_client::collector::Collector for Encoder {
            fn encode(&self, mut out: DescriptorEncoder) -> std::fmt::Result {
                type Owned = (series::Rendered, String, &'static str, CgroupDiskStats);
                fn labelled((l, dev, op, _): &Owned) -> series::WithLabels<'_, 2> {
                    l.and_all([("device", dev.as_str()), ("op", *op)])
                }
                let [bytes, ios, seconds] = PER_CGROUP_FAMILIES;
                let rows = &self.0;
                counts(
                    &mut out,
                    bytes.0,
                    bytes.1,
                    rows.iter()
                        .filter(|r| r.3.bytes != 0)
                        .map(|r| (labelled(r), r.3.bytes)),
                )?;
                counts(
                    &mut out,
                    ios.0,
                    ios.1,
                    rows.iter()
                        .filter(|r| r.3.ios != 0)
                        .map(|r| (labelled(r), r.3.ios)),
                )?;
                family(
                    &mut out,
                    seconds.0,
                    seconds.1,
                    prometheus_client::metrics::MetricType::Counter,
                    rows.iter()
                        .filter(|r| r.3.ns != 0)
                        .map(|r| (labelled(r), r.3.ns as f64 / 1e9)),
                )
            }
        }
        let owned = rows
            .iter()
            .map(|r| (r.labels.clone(), r.device.to_owned(), r.op, *r.values))
            .collect();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Encoder(owned)));
        registry
    }

    /// The same rows written directly, in a registry of their own.
    fn written_directly(
        rows: &[DiskRow],
        exported: Exported,
    ) -> prometheus_client::registry::Registry {
        #[derive(Debug)]
        struct Direct(
            Vec<(series::Rendered, String, &'static str, CgroupDiskStats)>,
            Exported,
        );
        impl prometheus_client::collector::Collector for Direct {
            fn encode(&self, _: DescriptorEncoder) -> std::fmt::Result {
                let rows: Vec<DiskRow> = self
                    .0
                    .iter()
                    .map(|(labels, device, op, values)| DiskRow {
                        labels,
                        device,
                        op,
                        values,
                        identity: None,
                    })
                    .collect();
                render::direct(|out| {
                    let out = out.expect("rendering");
                    match out.protobuf() {
                        Some(out) => per_cgroup_protobuf(out, &rows, self.1, &mut Vec::new()),
                        None => per_cgroup_text(out, &rows, self.1),
                    }
                });
                Ok(())
            }
        }
        let owned = rows
            .iter()
            .map(|r| (r.labels.clone(), r.device.to_owned(), r.op, *r.values))
            .collect();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Direct(owned, exported)));
        registry
    }

    #[test]
    fn per_pod_disk_families_are_byte_for_byte_what_the_encoder_wrote() {
        assert_eq!(
            PER_CGROUP_FAMILIES[0].0, "nodelens_cgroup_disk_io_bytes_total",
            "disk_bytes chooses the first"
        );
        use crate::cgroups::{CgroupLabels, settings::PathLabel};
        let pod = |pod: &str, path: &str| {
            series::SeriesLabels::new(
                &CgroupLabels {
                    namespace: "team-a".into(),
                    pod: pod.into(),
                    container: "app".into(),
                    cgroup: path.into(),
                    identified: !pod.is_empty(),
                },
                PathLabel::Auto,
            )
        };
        let sets = [
            pod("web-1", "kubepods/pod1/c"),
            pod("we\"b\\x\ny", "kubepods/pod2/c"),
            pod("", "system.slice/containerd.service"),
        ];
        let labels = series::choose(sets.iter());
        let stats = |bytes, ios, ns| CgroupDiskStats {
            bytes,
            ios,
            ns,
            ..Default::default()
        };
        let rows = [
            (0, "vda", "read", stats(4096, 1, 252_556)),
            (
                0,
                "loop0",
                "write",
                stats(1 << 30, 262_144, 168_535_823_001),
            ),
            (1, "nvme0n1", "read", stats(0, 3, 0)),
            (2, "dm-\"0", "discard", stats(512, 0, 1)),
            (2, "vda", "flush", stats(0, 0, 0)),
        ];
        let mut rows = rows;
        // The first row's request took 252,556 ns: schema-0 bucket (2^-12, 2^-11] s, slot
        // -11 - (-19) = 8 of the per-pod buckets.
        rows[0].3.latency_buckets[8] = 1;
        let rows: Vec<DiskRow> = rows
            .iter()
            .map(|(i, device, op, values)| DiskRow {
                labels: labels[*i],
                device,
                op,
                values,
                identity: None,
            })
            .collect();
        for format in [render::Format::Prometheus, render::Format::OpenMetrics] {
            let want = render::render(&through_the_encoder(&rows), format).unwrap();
            let got = render::render(&written_directly(&rows, [true; 3]), format).unwrap();
            assert_eq!(got, want, "{format:?}");
            assert!(want.contains("op=\"write\"} 1073741824\n"), "{want}");
            // Without `disk_bytes`: the same, less the bytes family.
            let bytes = want.find("# HELP nodelens_cgroup_disk_io_bytes").unwrap();
            let ios = want.find("# HELP nodelens_cgroup_disk_ios").unwrap();
            let want = format!("{}{}", &want[..bytes], &want[ios..]);
            let got = render::render(&written_directly(&rows, [false, true, true]), format);
            assert_eq!(got.unwrap(), want, "{format:?}");
        }
        // Protobuf: the same families, samples, labels and values, as Prometheus decodes them.
        use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily;
        use prost::Message as _;
        let decode = |bytes: Vec<u8>| {
            let mut bytes = bytes.as_slice();
            let mut families = Vec::new();
            while !bytes.is_empty() {
                families.push(MetricFamily::decode_length_delimited(&mut bytes).unwrap());
            }
            families
        };
        let want = decode(
            render::render_bytes(&through_the_encoder(&rows), render::Format::Protobuf).unwrap(),
        );
        let got = decode(
            render::render_bytes(
                &written_directly(&rows, [true; 3]),
                render::Format::Protobuf,
            )
            .unwrap(),
        );
        // And, only in protobuf, the per-pod native latency histogram of each row that has
        // one.
        let (native, got): (Vec<_>, Vec<_>) = got
            .into_iter()
            .partition(|f| f.name == "nodelens_cgroup_disk_io_latency_seconds");
        assert_eq!(got.len(), 3);
        assert_eq!(got, want);
        let [native] = native.as_slice() else {
            panic!("one native family: {native:?}")
        };
        let [metric] = native.metric.as_slice() else {
            panic!("only the first row has latencies: {native:?}")
        };
        let h = metric.histogram.as_ref().unwrap();
        assert_eq!((h.sample_count, h.sample_sum), (1, 0.000252556));
        assert_eq!((h.schema, h.positive_span[0].offset), (0, -11));
        let pairs: Vec<_> = metric.label.iter().map(|l| (&*l.name, &*l.value)).collect();
        assert_eq!(
            pairs,
            [
                ("container", "app"),
                ("namespace", "team-a"),
                ("pod", "web-1"),
                ("device", "vda"),
                ("op", "read")
            ]
        );
    }

    /// A protobuf scrape's bytes of `rows`, every family exported, with `kept` encodings.
    fn scrape_protobuf(rows: &[DiskRow], kept: &mut Vec<KeptDiskRow>) -> Vec<u8> {
        scrape_exporting(rows, kept, [true; 3])
    }

    fn scrape_exporting(
        rows: &[DiskRow],
        kept: &mut Vec<KeptDiskRow>,
        exported: Exported,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        per_cgroup_protobuf(&mut out, rows, exported, kept);
        out
    }

    #[test]
    fn a_kept_row_is_encoded_again_only_when_it_changes() {
        use crate::cgroups::{CgroupLabels, settings::PathLabel};
        let pod = series::SeriesLabels::new(
            &CgroupLabels {
                namespace: "team-a".into(),
                pod: "web-1".into(),
                container: "app".into(),
                cgroup: "kubepods/pod1/c".into(),
                identified: true,
            },
            PathLabel::Auto,
        );
        let labels = series::choose([&pod]);
        let mut read = CgroupDiskStats {
            bytes: 4096,
            ios: 1,
            ns: 252_556,
            ..Default::default()
        };
        read.latency_buckets[8] = 1;
        let write = CgroupDiskStats {
            bytes: 8192,
            ios: 2,
            ns: 1_000_000,
            latency_zero: 2,
            ..Default::default()
        };
        let row = |id: u64, device, op, values| DiskRow {
            labels: labels[0],
            device,
            op,
            values,
            identity: Some(Identity {
                key: (id, 0, if op == "read" { 0 } else { 1 }),
                serial: pod.serial(),
                with_path: pod.is_with_path(labels[0]),
            }),
        };
        let rows = [row(7, "vda", "read", &read), row(7, "vda", "write", &write)];
        let fresh = scrape_protobuf(&rows, &mut Vec::new());
        let mut kept = Vec::new();
        assert_eq!(scrape_protobuf(&rows, &mut kept), fresh);
        assert_eq!(kept.len(), 2);
        // A mark after each kept row's bytes: a row encoded again loses it.
        let mark = |kept: &mut Vec<KeptDiskRow>| {
            for k in kept.iter_mut() {
                k.buf_mut().push(0xAA);
            }
        };
        let marked = |kept: &[KeptDiskRow]| {
            kept.iter()
                .map(|k| k.all().last() == Some(&0xAA))
                .collect::<Vec<_>>()
        };
        mark(&mut kept);
        scrape_protobuf(&rows, &mut kept);
        assert_eq!(
            marked(&kept),
            [true, true],
            "unchanged rows are not encoded again"
        );
        // One more request in the write row's zero bucket: its count moved, no total did.
        let mut more = write;
        more.latency_zero += 1;
        let rows = [row(7, "vda", "read", &read), row(7, "vda", "write", &more)];
        assert_eq!(
            scrape_protobuf(&rows, &mut kept),
            scrape_protobuf(&rows, &mut Vec::new())
        );
        assert_eq!(marked(&kept), [true, false]);
        // A device whose name changed (MAJ:MIN until sysfs named it) is encoded again.
        mark(&mut kept);
        let rows = [row(7, "vdb", "read", &read), row(7, "vda", "write", &more)];
        assert_eq!(
            scrape_protobuf(&rows, &mut kept),
            scrape_protobuf(&rows, &mut Vec::new())
        );
        assert_eq!(marked(&kept), [false, true]);
        // Other labels (a new serial) or other families exported: every row again.
        mark(&mut kept);
        let mut relabelled = [row(7, "vdb", "read", &read), row(7, "vda", "write", &more)];
        for r in &mut relabelled {
            r.identity.as_mut().unwrap().serial += 1;
        }
        assert_eq!(
            scrape_protobuf(&relabelled, &mut kept),
            scrape_protobuf(&relabelled, &mut Vec::new())
        );
        assert_eq!(marked(&kept), [false, false]);
        mark(&mut kept);
        let without_bytes = [false, true, true];
        assert_eq!(
            scrape_exporting(&relabelled, &mut kept, without_bytes),
            scrape_exporting(&relabelled, &mut Vec::new(), without_bytes)
        );
        assert_eq!(marked(&kept), [false, false]);
        // A row gone is dropped; an unknown row (no identity) is encoded but not kept.
        let mut unknown = row(0, "vda", "read", &read);
        unknown.identity = None;
        let rows = [row(7, "vda", "write", &more), unknown];
        assert_eq!(
            scrape_protobuf(&rows, &mut kept),
            scrape_protobuf(&rows, &mut Vec::new())
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].key(), Some((7, 0, 1)));
    }
}
