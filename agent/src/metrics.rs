//! What a collector is, and the helpers collectors use to emit const metrics.
//!
//! Collectors read at scrape time and write straight into the encoder (the largest
//! families, per-cgroup series, bypass it: `crate::render`). This module imports
//! nothing else from the agent, so every other module can use it.
use std::{fmt, path::PathBuf};

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet},
    metrics::MetricType,
};

/// Reads one source at scrape time and encodes its families. It parses all of its source
/// before encoding, so a failed read leaves no half-written family behind.
pub trait Collector: fmt::Debug + Send + Sync {
    fn name(&self) -> &'static str;
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("cannot read BPF map {map}: {detail}")]
    Map { map: &'static str, detail: String },
    #[error("encoding failed")]
    Encode(#[from] fmt::Error),
    /// The family writes its samples directly as text (`crate::render`), and the registry
    /// was encoded some other way.
    #[error("this family is written directly as text, which only crate::render::render does")]
    NotRendering,
}

impl CollectError {
    pub fn map(map: &'static str, detail: impl Into<String>) -> Self {
        Self::Map {
            map,
            detail: detail.into(),
        }
    }
}

/// A metric family with labelled samples. Counter names are written as exported, with
/// `_total`; the encoder adds that suffix itself, so it is stripped here.
pub fn family<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, f64)>,
) -> fmt::Result {
    let base = match kind {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    let mut metric = out.encode_descriptor(base, help, None, kind)?;
    for (labels, value) in samples {
        let mut sample = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => sample.encode_counter::<NoLabelSet, f64, f64>(&value, None)?,
            _ => sample.encode_gauge(&value)?,
        }
    }
    Ok(())
}

/// A counter family of whole numbers (events, switches), written as integers: cheaper to
/// format than floats, and exact.
pub fn counts<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let base = name.strip_suffix("_total").unwrap_or(name);
    let mut metric = out.encode_descriptor(base, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, u64>(&value, None)?;
    }
    Ok(())
}

/// A family with a single unlabelled sample.
pub fn single(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: f64,
) -> fmt::Result {
    family(out, name, help, kind, [(NoLabels, value)])
}

pub fn counter(out: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    single(out, name, help, MetricType::Counter, value)
}

pub fn gauge(out: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    single(out, name, help, MetricType::Gauge, value)
}

/// An empty label set for unlabelled samples.
#[derive(Debug, Clone, Copy)]
pub struct NoLabels;

impl EncodeLabelSet for NoLabels {
    fn encode(&self, _: &mut prometheus_client::encoding::LabelSetEncoder) -> fmt::Result {
        Ok(())
    }
}

/// Histogram from log2 slots: `slots[s]` counts values `<= 2^s` units (and above
/// `2^(s-1)`). Slots below `first_slot` fold into the first bucket, those above
/// `last_slot` into `+Inf`. `scale` turns the unit into the exported base unit
/// (1e-9 for nanoseconds to seconds, 1 for bytes).
pub struct Log2Buckets<'a> {
    pub slots: &'a [u64],
    pub sum: u64,
    pub first_slot: usize,
    pub last_slot: usize,
    pub scale: f64,
}

impl Log2Buckets<'_> {
    /// (upper bound, non-cumulative count) pairs, sum and count, as the encoder wants them.
    pub fn to_buckets(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let count: u64 = self.slots.iter().sum();
        let mut buckets = Vec::with_capacity(self.last_slot - self.first_slot + 2);
        let first: u64 = self.slots.iter().take(self.first_slot + 1).sum();
        buckets.push(((1u64 << self.first_slot) as f64 * self.scale, first));
        for slot in self.first_slot + 1..=self.last_slot {
            let n = self.slots.get(slot).copied().unwrap_or(0);
            buckets.push(((1u64 << slot) as f64 * self.scale, n));
        }
        let rest: u64 = self.slots.iter().skip(self.last_slot + 1).sum();
        buckets.push((f64::INFINITY, rest));
        (buckets, self.sum as f64 * self.scale, count)
    }
}

pub fn histogram<'a, L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, Log2Buckets<'a>)>,
) -> fmt::Result {
    let mut metric = out.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, hist) in samples {
        let (buckets, sum, count) = hist.to_buckets();
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

/// A native histogram's buckets, as the kernel keeps them: `counts[k]` is bucket
/// `first_index + k` of `schema` (upper bound `2^((first_index + k) / 2^schema)` in the
/// exported unit), and `zero_count` the values up to `zero_threshold`.
pub struct NativeBuckets<'a> {
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub first_index: i32,
    pub counts: &'a [u64],
}

/// The most empty buckets kept inside a span (as zero counts) rather than skipped by a new
/// span: client_golang's choice too.
const GAP_IN_SPAN: i32 = 2;

impl NativeBuckets<'_> {
    /// The positive buckets as Prometheus encodes them: spans of consecutive buckets
    /// (`(offset, length)`, the first offset the first bucket's index, each later one the
    /// empty buckets skipped before it), and the counts as deltas, each from the bucket
    /// before it in the spans. A gap of up to [`GAP_IN_SPAN`] empty buckets stays in its
    /// span as zero counts, as client_golang writes it: a zero costs a byte, a new span six.
    pub fn spans_and_deltas(&self) -> (Vec<(i32, u32)>, Vec<i64>) {
        let (mut spans, mut deltas) = (Vec::new(), Vec::new());
        self.spans_and_deltas_into(&mut spans, &mut deltas);
        (spans, deltas)
    }

    /// [`Self::spans_and_deltas`], into vectors the caller reuses (cleared first).
    pub fn spans_and_deltas_into(&self, spans: &mut Vec<(i32, u32)>, deltas: &mut Vec<i64>) {
        spans.clear();
        deltas.clear();
        let (mut next_index, mut previous) = (None::<i32>, 0i64);
        for (k, count) in self.counts.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            let index = self.first_index + k as i32;
            match (spans.last_mut(), next_index) {
                (Some((_, length)), Some(next)) if index - next <= GAP_IN_SPAN => {
                    for _ in next..index {
                        deltas.push(-previous);
                        previous = 0;
                    }
                    *length += (index - next) as u32 + 1;
                }
                _ => spans.push((next_index.map_or(index, |next| index - next), 1)),
            }
            next_index = Some(index + 1);
            deltas.push(*count as i64 - previous);
            previous = *count as i64;
        }
    }
}

/// [`histogram`], and in a protobuf scrape (when `native` is given) the same values as a
/// native histogram beside the classic buckets, in one sample: count and sum are shared.
/// The count is then the native buckets' total, which Prometheus requires them to add up to
/// (the classic buckets, kept apart in the kernel, may have been read a wait apart).
pub fn histogram_with_native<'a, L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, Log2Buckets<'a>, Option<NativeBuckets<'a>>)>,
) -> fmt::Result {
    let mut metric = out.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, hist, native) in samples {
        let (buckets, sum, count) = hist.to_buckets();
        let mut sample = metric.encode_family(&labels)?;
        let Some(native) = native else {
            sample.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            continue;
        };
        let count = native.zero_count + native.counts.iter().sum::<u64>();
        let (spans, deltas) = native.spans_and_deltas();
        // Native only (`protobuf_classic_histograms` off): no bucket, not even +Inf.
        let buckets = if crate::render::classic_beside_native() {
            buckets
        } else {
            Vec::new()
        };
        let native = prometheus_client::encoding::NativeHistogram {
            schema: native.schema,
            zero_threshold: native.zero_threshold,
            zero_count: native.zero_count,
            negative: prometheus_client::encoding::NativeHistogramBuckets {
                spans: &[],
                deltas: &[],
            },
            positive: prometheus_client::encoding::NativeHistogramBuckets {
                spans: &spans,
                deltas: &deltas,
            },
            created: None,
        };
        sample.encode_histogram_with_native::<NoLabelSet>(sum, count, &buckets, None, native)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_buckets_become_spans_and_deltas() {
        // Buckets -3, -2, then 0 and 1 after one empty bucket (kept in the span as a zero),
        // then 5 after three (a span of its own), then 7 after one again.
        let counts = [2, 5, 0, 1, 1, 0, 0, 0, 4, 0, 3];
        let native = NativeBuckets {
            schema: 3,
            zero_threshold: 0.0,
            zero_count: 0,
            first_index: -3,
            counts: &counts,
        };
        let (spans, deltas) = native.spans_and_deltas();
        assert_eq!(spans, [(-3, 5), (3, 3)]);
        assert_eq!(deltas, [2, 3, -5, 1, 0, 3, -4, 3]);
        // Read back as Prometheus does: counts in index order.
        let (mut index, mut count, mut back) = (0i32, 0i64, Vec::new());
        let mut d = deltas.iter();
        for (i, (offset, length)) in spans.iter().enumerate() {
            index = if i == 0 { *offset } else { index + offset };
            for _ in 0..*length {
                count += d.next().unwrap();
                back.push((index, count));
                index += 1;
            }
        }
        assert_eq!(
            back,
            [
                (-3, 2),
                (-2, 5),
                (-1, 0),
                (0, 1),
                (1, 1),
                (5, 4),
                (6, 0),
                (7, 3)
            ]
        );
        let empty = NativeBuckets {
            counts: &[0, 0],
            ..native
        };
        assert_eq!(empty.spans_and_deltas(), (vec![], vec![]));
    }

    #[test]
    fn log2_buckets_fold_edges_and_keep_count() {
        let mut slots = [0u64; 64];
        slots[0] = 1; // <= 1
        slots[3] = 2; // <= 8
        slots[10] = 4; // <= 1024
        slots[40] = 8; // > last bucket
        let (buckets, sum, count) = Log2Buckets {
            slots: &slots,
            sum: 5000,
            first_slot: 3,
            last_slot: 12,
            scale: 1.0,
        }
        .to_buckets();
        assert_eq!(count, 15);
        assert_eq!(sum, 5000.0);
        assert_eq!(buckets.first(), Some(&(8.0, 3)));
        assert!(buckets.contains(&(1024.0, 4)));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 8)));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), count);
    }
}
