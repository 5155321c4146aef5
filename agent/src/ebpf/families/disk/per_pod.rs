//! The disk family's per-pod series, written directly in the scrape's format
//! (`crate::render`, `crate::protobuf_wire`): a busy node has a few per pod, and through
//! prometheus_client's encoders they were a third of a text scrape of 4,096 pods and most
//! of a protobuf one. A series appears once it is non-zero; a protobuf scrape also has each
//! row's latencies as a native histogram.
use agent_ebpf::disk::CgroupDiskStats;

use crate::{
    cgroups::series, ebpf::native::pod_native_seconds, metrics::CollectError, protobuf_wire, render,
};

/// Writes the rows' families into the scrape being rendered.
pub(super) fn write(rows: &[DiskRow], exported: Exported) -> Result<(), CollectError> {
    render::direct(|out| {
        let out = out.ok_or(CollectError::NotRendering)?;
        match out.protobuf() {
            Some(out) => per_cgroup_protobuf(out, rows, exported),
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
}

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

fn per_cgroup_protobuf(out: &mut Vec<u8>, rows: &[DiskRow], exported: Exported) {
    // The latencies one by one, per pod: a native histogram, which only protobuf carries.
    let mut latency = protobuf_wire::NativeHistogramFamily::new(
        out,
        "nodelens_cgroup_disk_io_latency_seconds",
        "Latencies of the cgroup's completed block requests, issue to completion, per whole disk and operation: a native histogram, in a protobuf scrape only.",
    );
    for row in rows {
        latency.sample_buckets(
            row.labels.protobuf(),
            &row.extra(),
            &pod_native_seconds(row.values.latency_zero, &row.values.latency_buckets),
            row.values.ns as f64 / 1e9,
        );
    }
    latency.finish();
    for (i, (name, help)) in PER_CGROUP_FAMILIES.iter().enumerate() {
        if !exported[i] {
            continue;
        }
        let mut family = protobuf_wire::CounterFamily::new(out, name, help);
        for row in rows {
            match row.value(i) {
                0 => {}
                ns if i == SECONDS => {
                    family.sample(row.labels.protobuf(), &row.extra(), ns as f64 / 1e9)
                }
                n => family.sample(row.labels.protobuf(), &row.extra(), n as f64),
            }
        }
        family.finish();
    }
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
                    })
                    .collect();
                render::direct(|out| {
                    let out = out.expect("rendering");
                    match out.protobuf() {
                        Some(out) => per_cgroup_protobuf(out, &rows, self.1),
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
}
