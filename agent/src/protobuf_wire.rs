//! The Prometheus protobuf exposition format (`io.prometheus.client.MetricFamily`, length
//! delimited), written directly for the per-cgroup families: through prometheus_client's
//! encoder, each of a busy node's 25,000 per-pod samples became a message of its own with
//! a `String` per label name and value, and a scrape cost four times the text's. Here a
//! cgroup's labels are encoded once ([`labels`], kept by `cgroups::series::Rendered`) and
//! each sample is one copy of them and its value.
//!
//! Field numbers from Prometheus's `metrics.proto`: MetricFamily {name 1, help 2, type 3,
//! metric 4}, Metric {label 1, counter 3, histogram 7}, LabelPair {name 1, value 2},
//! Counter {value 1}, Histogram {sample_count 1, sample_sum 2, schema 5, zero_threshold 6,
//! zero_count 7, positive_span 12, positive_delta 13}, BucketSpan {offset 1, length 2}.

/// `MetricType.COUNTER` and `MetricType.HISTOGRAM`.
const COUNTER: u64 = 0;
const HISTOGRAM: u64 = 4;

/// Wire types: varint (0), 64-bit (1), length-delimited (2).
const fn tag(field: u32, wire_type: u32) -> u8 {
    ((field << 3) | wire_type) as u8
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A signed value as `sint32`/`sint64` encode it (zigzag).
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    out.push(tag(field, 2));
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The length of a LabelPair message.
fn pair_len(name: &str, value: &str) -> usize {
    2 + varint_len(name.len() as u64) + name.len() + varint_len(value.len() as u64) + value.len()
}

/// The length of a `Metric.label` field holding that pair.
fn label_len(name: &str, value: &str) -> usize {
    let pair = pair_len(name, value);
    1 + varint_len(pair as u64) + pair
}

/// One `Metric.label` field: a LabelPair message.
fn label(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(tag(1, 2));
    varint(out, pair_len(name, value) as u64);
    bytes_field(out, 1, name.as_bytes());
    bytes_field(out, 2, value.as_bytes());
}

/// A label set as the `Metric.label` fields of a message, encoded once for every sample
/// that carries it.
pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        label(&mut out, name, value);
    }
    out
}

/// The pairs of [`labels`]' bytes, read back. Bytes that are not such fields end the
/// pairs (they are only ever ours).
pub fn read_labels(mut bytes: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    std::iter::from_fn(move || {
        let (pair, rest) = delimited(bytes, tag(1, 2))?;
        bytes = rest;
        let (name, after) = delimited(pair, tag(1, 2))?;
        let (value, _) = delimited(after, tag(2, 2))?;
        Some((
            std::str::from_utf8(name).ok()?,
            std::str::from_utf8(value).ok()?,
        ))
    })
}

/// A length-delimited field with this tag at the start of `bytes`: (its bytes, the rest).
fn delimited(bytes: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (&first, mut rest) = bytes.split_first()?;
    if first != want {
        return None;
    }
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let (&b, after) = rest.split_first()?;
        rest = after;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let len = usize::try_from(len).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Room left before a family for its length, the longest a varint can be: the family is
/// written straight into the scrape's bytes, then moved back to sit right after its length.
const LENGTH_ROOM: usize = 10;

/// Starts a family in `out`: room for its length, then its name, help and type. Returns
/// where it starts, for [`end_family`].
fn begin_family(out: &mut Vec<u8>, name: &str, help: &str, kind: u64) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_ROOM]);
    bytes_field(out, 1, name.as_bytes());
    bytes_field(out, 2, help.as_bytes());
    out.push(tag(3, 0));
    varint(out, kind);
    start
}

/// Ends the family begun at `start`: its length in front of it, in as few bytes as the
/// varint takes. One move of the family's bytes, where writing it into a buffer of its own
/// copied it into the scrape and, as that buffer grew, a dozen times more.
fn end_family(out: &mut Vec<u8>, start: usize) {
    let body = start + LENGTH_ROOM;
    let (mut length, mut n, mut v) = ([0u8; LENGTH_ROOM], 0, (out.len() - body) as u64);
    while v >= 0x80 {
        length[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    length[n] = v as u8;
    n += 1;
    out.copy_within(body.., start + n);
    out[start..start + n].copy_from_slice(&length[..n]);
    out.truncate(out.len() - (LENGTH_ROOM - n));
}

/// One counter family being written into a scrape's bytes; [`Self::finish`] ends it (a
/// family left unfinished would leave the scrape without its length).
#[must_use = "a family is only whole once `finish` writes its length"]
pub struct CounterFamily<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> CounterFamily<'a> {
    /// `name` is the family's whole name, `_total` included, as Prometheus's own clients
    /// and prometheus_client name a counter family in this format.
    pub fn new(out: &'a mut Vec<u8>, name: &str, help: &str) -> Self {
        let start = begin_family(out, name, help, COUNTER);
        Self { out, start }
    }

    /// A sample: the encoded `labels`, more pairs after them, and the value.
    pub fn sample(&mut self, labels: &[u8], extra: &[(&str, &str)], value: f64) {
        counter_metric(self.out, labels, extra, value);
    }

    /// Samples encoded earlier by [`counter_metric`].
    pub fn encoded(&mut self, metrics: &[u8]) {
        self.out.extend_from_slice(metrics);
    }

    /// Ends the family: its length goes in front of it.
    pub fn finish(self) {
        end_family(self.out, self.start);
    }
}

/// A counter sample as a family's `metric` field, appended to `out`: the encoded `labels`,
/// more pairs after them, and the value. [`CounterFamily::encoded`] takes it as it is.
pub fn counter_metric(out: &mut Vec<u8>, labels: &[u8], extra: &[(&str, &str)], value: f64) {
    let extra_len: usize = extra.iter().map(|(name, v)| label_len(name, v)).sum();
    // Counter { value: double } is 9 bytes; as Metric.counter, 11.
    let metric_len = labels.len() + extra_len + 11;
    out.push(tag(4, 2));
    varint(out, metric_len as u64);
    out.extend_from_slice(labels);
    for (name, v) in extra {
        label(out, name, v);
    }
    out.push(tag(3, 2));
    out.push(9);
    out.push(tag(1, 1));
    out.extend_from_slice(&value.to_le_bytes());
}

/// A native histogram sample's numbers (`crate::metrics::NativeBuckets` gives the spans
/// and deltas).
pub struct Native<'a> {
    pub count: u64,
    pub sum: f64,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub spans: &'a [(i32, u32)],
    pub deltas: &'a [i64],
}

/// Encodes native histogram samples as a family's `metric` fields, with buffers reused
/// from sample to sample: a busy node has some 10,000 per-pod histograms in a scrape, and
/// allocating each one's spans, deltas and message was a tenth of the scrape.
#[derive(Default)]
pub struct NativeEncoder {
    histogram: Vec<u8>,
    packed: Vec<u8>,
    spans: Vec<(i32, u32)>,
    deltas: Vec<i64>,
}

impl NativeEncoder {
    /// A sample of a histogram the kernel keeps as `buckets`, with `sum` in the exported
    /// unit, appended to `out`: none when it holds no value (a cgroup that never waited has
    /// no series).
    pub fn sample_buckets(
        &mut self,
        out: &mut Vec<u8>,
        labels: &[u8],
        extra: &[(&str, &str)],
        buckets: &crate::metrics::NativeBuckets,
        sum: f64,
    ) {
        let count = buckets.zero_count + buckets.counts.iter().sum::<u64>();
        if count == 0 {
            return;
        }
        let (mut spans, mut deltas) = (
            std::mem::take(&mut self.spans),
            std::mem::take(&mut self.deltas),
        );
        buckets.spans_and_deltas_into(&mut spans, &mut deltas);
        self.sample(
            out,
            labels,
            extra,
            &Native {
                count,
                sum,
                schema: buckets.schema,
                zero_threshold: buckets.zero_threshold,
                zero_count: buckets.zero_count,
                spans: &spans,
                deltas: &deltas,
            },
        );
        (self.spans, self.deltas) = (spans, deltas);
    }

    /// A sample, appended to `out`: the encoded `labels`, more pairs after them, and the
    /// histogram. A zero threshold above 0 is what tells Prometheus a histogram without
    /// buckets is native, so it is written then, and whenever the zero bucket holds values.
    /// A histogram with buckets and an empty zero bucket leaves it out (0): it describes the
    /// same values, since no bucket lies below the threshold, and saves 9 bytes on nearly
    /// every per-pod histogram (a node of 4,096 busy pods has some 9,000).
    pub fn sample(&mut self, out: &mut Vec<u8>, labels: &[u8], extra: &[(&str, &str)], h: &Native) {
        let m = &mut self.histogram;
        m.clear();
        m.push(tag(1, 0));
        varint(m, h.count);
        m.push(tag(2, 1));
        m.extend_from_slice(&h.sum.to_le_bytes());
        // Fields left out read as 0 (metrics.proto is proto2, every field optional): two
        // bytes less each for most of a busy node's 10,000 per-pod histograms. (Prometheus
        // tells a native histogram by its zero threshold, spans and counts, not its schema.)
        if h.schema != 0 {
            m.push(tag(5, 0));
            varint(m, zigzag(i64::from(h.schema)));
        }
        if h.zero_count != 0 || h.spans.is_empty() {
            m.push(tag(6, 1));
            m.extend_from_slice(&h.zero_threshold.to_le_bytes());
        }
        if h.zero_count != 0 {
            m.push(tag(7, 0));
            varint(m, h.zero_count);
        }
        for &(offset, length) in h.spans {
            let (offset, length) = (zigzag(i64::from(offset)), u64::from(length));
            m.push(tag(12, 2));
            let offset_len = if offset == 0 {
                0
            } else {
                1 + varint_len(offset)
            };
            varint(m, (offset_len + 1 + varint_len(length)) as u64);
            if offset != 0 {
                m.push(tag(1, 0));
                varint(m, offset);
            }
            m.push(tag(2, 0));
            varint(m, length);
        }
        if !h.deltas.is_empty() {
            let packed = &mut self.packed;
            packed.clear();
            for &d in h.deltas {
                varint(packed, zigzag(d));
            }
            bytes_field(m, 13, packed);
        }
        let histogram_len = 1 + varint_len(m.len() as u64) + m.len();
        let extra_len: usize = extra.iter().map(|(name, v)| label_len(name, v)).sum();
        out.push(tag(4, 2));
        varint(out, (labels.len() + extra_len + histogram_len) as u64);
        out.extend_from_slice(labels);
        for (name, v) in extra {
            label(out, name, v);
        }
        bytes_field(out, 7, &self.histogram);
    }
}

thread_local! {
    /// The buffers of the native histograms a scrape encodes outside any family: rows that
    /// keep their samples encoded between scrapes (the per-pod families) share them.
    static NATIVE_ENCODER: std::cell::RefCell<NativeEncoder> = std::cell::RefCell::default();
}

/// Runs `encode` with this thread's [`NativeEncoder`].
pub fn with_native_encoder<R>(encode: impl FnOnce(&mut NativeEncoder) -> R) -> R {
    NATIVE_ENCODER.with_borrow_mut(encode)
}

/// One family of native histograms (no classic buckets) being written into a scrape's
/// bytes; [`Self::finish`] ends it. It has an encoder of its own; rows that keep their
/// samples encoded between scrapes use one [`NativeEncoder`] outside any family.
#[must_use = "a family is only whole once `finish` writes its length"]
pub struct NativeHistogramFamily<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    encoder: NativeEncoder,
}

impl<'a> NativeHistogramFamily<'a> {
    pub fn new(out: &'a mut Vec<u8>, name: &str, help: &str) -> Self {
        let start = begin_family(out, name, help, HISTOGRAM);
        Self {
            out,
            start,
            encoder: NativeEncoder::default(),
        }
    }

    /// [`NativeEncoder::sample_buckets`], into this family.
    pub fn sample_buckets(
        &mut self,
        labels: &[u8],
        extra: &[(&str, &str)],
        buckets: &crate::metrics::NativeBuckets,
        sum: f64,
    ) {
        self.encoder
            .sample_buckets(self.out, labels, extra, buckets, sum);
    }

    /// [`NativeEncoder::sample`], into this family.
    pub fn sample(&mut self, labels: &[u8], extra: &[(&str, &str)], h: &Native) {
        self.encoder.sample(self.out, labels, extra, h);
    }

    /// Samples encoded earlier by a [`NativeEncoder`].
    pub fn encoded(&mut self, metrics: &[u8]) {
        self.out.extend_from_slice(metrics);
    }

    /// Ends the family: its length goes in front of it.
    pub fn finish(self) {
        end_family(self.out, self.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
        MetricFamily, MetricType,
    };
    use prost::Message as _;

    #[test]
    fn a_family_written_here_decodes_as_prometheus_reads_it() {
        let long = "v".repeat(300);
        let labels = labels([("namespace", "team-a"), ("pod", long.as_str())]);
        assert_eq!(
            read_labels(&labels).collect::<Vec<_>>(),
            [("namespace", "team-a"), ("pod", long.as_str())]
        );
        let mut out = vec![];
        let mut family = CounterFamily::new(
            &mut out,
            "nodelens_x_seconds_total",
            "Help, with \"quotes\"",
        );
        family.sample(&labels, &[("kind", "io")], 1.5);
        family.sample(&labels, &[], 0.0);
        family.sample(&[], &[], f64::MAX);
        family.finish();
        let mut rest = out.as_slice();
        let decoded = MetricFamily::decode_length_delimited(&mut rest).expect("decodes");
        assert!(rest.is_empty(), "nothing after the family");
        assert_eq!(decoded.name, "nodelens_x_seconds_total");
        assert_eq!(decoded.help, "Help, with \"quotes\"");
        assert_eq!(decoded.r#type, MetricType::Counter as i32);
        let got: Vec<(Vec<(String, String)>, f64)> = decoded
            .metric
            .iter()
            .map(|m| {
                (
                    m.label
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect(),
                    m.counter.as_ref().expect("a counter").value,
                )
            })
            .collect();
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            got,
            [
                (
                    vec![
                        pair("namespace", "team-a"),
                        pair("pod", &long),
                        pair("kind", "io")
                    ],
                    1.5
                ),
                (vec![pair("namespace", "team-a"), pair("pod", &long)], 0.0),
                (vec![], f64::MAX),
            ]
        );
    }

    #[test]
    fn a_native_histogram_written_here_decodes_with_its_spans_and_deltas() {
        let labels = labels([("pod", "web-0")]);
        let mut out = vec![];
        let mut family = NativeHistogramFamily::new(&mut out, "nodelens_x_seconds", "Waits.");
        family.sample(
            &labels,
            &[("device", "vda"), ("op", "read")],
            &Native {
                count: 9,
                sum: 0.25,
                schema: 0,
                zero_threshold: 2f64.powi(-20),
                zero_count: 1,
                spans: &[(-19, 2), (3, 1)],
                deltas: &[3, -1, 2],
            },
        );
        family.sample(
            &[],
            &[],
            &Native {
                count: 0,
                sum: 0.0,
                schema: -2,
                zero_threshold: 2f64.powi(-20),
                zero_count: 0,
                spans: &[],
                deltas: &[],
            },
        );
        family.sample(
            &[],
            &[],
            &Native {
                count: 2,
                sum: 0.5,
                schema: 0,
                zero_threshold: 2f64.powi(-20),
                zero_count: 0,
                spans: &[(-1, 1)],
                deltas: &[2],
            },
        );
        family.finish();
        let decoded = MetricFamily::decode_length_delimited(out.as_slice()).expect("decodes");
        assert_eq!(decoded.r#type, MetricType::Histogram as i32);
        assert_eq!(decoded.metric.len(), 3);
        let h = decoded.metric[0].histogram.as_ref().expect("a histogram");
        let pairs: Vec<(&str, &str)> = decoded.metric[0]
            .label
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(pairs, [("pod", "web-0"), ("device", "vda"), ("op", "read")]);
        assert_eq!((h.sample_count, h.sample_sum), (9, 0.25));
        assert_eq!((h.schema, h.zero_count), (0, 1));
        assert_eq!(h.zero_threshold, 2f64.powi(-20));
        let spans: Vec<(i32, u32)> = h
            .positive_span
            .iter()
            .map(|s| (s.offset, s.length))
            .collect();
        assert_eq!(spans, [(-19, 2), (3, 1)]);
        assert_eq!(h.positive_delta, [3, -1, 2]);
        assert!(h.bucket.is_empty(), "native only");
        let empty = decoded.metric[1].histogram.as_ref().expect("a histogram");
        assert_eq!(empty.sample_count, 0);
        // A schema other than 0 is written (0 is left out, and reads back as 0 above).
        assert_eq!(empty.schema, -2);
        // Without buckets, the zero threshold is what makes it native: it stays.
        assert_eq!(empty.zero_threshold, 2f64.powi(-20));
        // With buckets and an empty zero bucket it is left out, and reads back as 0.
        let no_zeros = decoded.metric[2].histogram.as_ref().expect("a histogram");
        assert_eq!((no_zeros.zero_threshold, no_zeros.zero_count), (0.0, 0));
        assert_eq!(no_zeros.positive_span.len(), 1);
    }

    #[test]
    fn families_of_every_length_size_follow_each_other() {
        // Families whose lengths take one, two and three bytes, written one after the
        // other into the same bytes: each is moved back behind its length.
        let labels = labels([("pod", "web-0")]);
        let mut out = vec![];
        for samples in [0, 10, 2_000] {
            let mut family = CounterFamily::new(&mut out, "c_total", "C.");
            for k in 0..samples {
                family.sample(&labels, &[], k as f64);
            }
            family.finish();
        }
        let mut rest = out.as_slice();
        let mut lengths = vec![];
        while !rest.is_empty() {
            let before = rest.len();
            let decoded = MetricFamily::decode_length_delimited(&mut rest).expect("decodes");
            lengths.push((decoded.metric.len(), before - rest.len()));
            let values: Vec<f64> = decoded
                .metric
                .iter()
                .map(|m| m.counter.as_ref().expect("a counter").value)
                .collect();
            assert!(
                values
                    .iter()
                    .copied()
                    .eq((0..values.len()).map(|k| k as f64))
            );
        }
        let counts: Vec<usize> = lengths.iter().map(|(n, _)| *n).collect();
        assert_eq!(counts, [0, 10, 2_000]);
        // The whole families are 16, about 300 and about 54,000 bytes: length prefixes of
        // one, two and three bytes.
        assert!(lengths[0].1 < 128 && lengths[1].1 > 130 && lengths[2].1 > 16_400);
    }

    #[test]
    fn label_lengths_match_the_encoding() {
        for (name, value) in [("a", ""), ("kind", "io"), ("pod", &"x".repeat(200))] {
            let mut out = vec![];
            label(&mut out, name, value);
            assert_eq!(out.len(), label_len(name, value), "{name}");
        }
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = vec![];
            varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }
}
