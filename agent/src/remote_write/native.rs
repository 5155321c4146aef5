//! Native histograms for remote_write (`remote_write.native_histograms`). The text
//! exposition the samples are read from cannot carry them, so a round with them on also
//! renders the protobuf exposition and takes from it each histogram that has native
//! buckets, as the one series Prometheus stores for it when it scrapes protobuf. The
//! classic `_bucket`, `_sum` and `_count` series still come from the text.
use std::sync::Arc;

use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
    MetricFamily, MetricType,
};
use prost::Message as _;

use super::wire::{self, Point, Series};

/// The native histograms of a protobuf exposition, each with its labels (`__name__`
/// first). A histogram with classic buckets only (no zero threshold, no spans) is not one.
pub fn histograms(mut exposition: &[u8]) -> Vec<(Series, Point)> {
    let mut out = Vec::new();
    while !exposition.is_empty() {
        // Our own bytes: a family that does not decode ends the reading (never a panic).
        let Ok(family) = MetricFamily::decode_length_delimited(&mut exposition) else {
            tracing::debug!("remote_write: a protobuf family did not decode");
            break;
        };
        if family.r#type != MetricType::Histogram as i32 {
            continue;
        }
        for metric in &family.metric {
            let Some(h) = &metric.histogram else {
                continue;
            };
            if h.zero_threshold <= 0.0 && h.positive_span.is_empty() {
                continue;
            }
            let mut labels = vec![("__name__".to_owned(), family.name.clone())];
            labels.extend(
                metric
                    .label
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone())),
            );
            let histogram = wire::Histogram {
                count_int: h.sample_count,
                sum: h.sample_sum,
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                zero_count_int: h.zero_count,
                positive_spans: h
                    .positive_span
                    .iter()
                    .map(|s| wire::BucketSpan {
                        offset: s.offset,
                        length: s.length,
                    })
                    .collect(),
                positive_deltas: h.positive_delta.clone(),
                timestamp: 0,
            };
            out.push((labels, Point::Histogram(Arc::new(histogram))));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf_wire::{CounterFamily, Native, NativeHistogramFamily, labels};

    #[test]
    fn native_histograms_are_taken_and_other_families_left() {
        let mut exposition = Vec::new();
        let mut counter = CounterFamily::new(&mut exposition, "c_total", "A counter.");
        counter.sample(&labels([("pod", "a")]), &[], 1.0);
        counter.finish();
        let mut family = NativeHistogramFamily::new(&mut exposition, "h_seconds", "Waits.");
        family.sample(
            &labels([("pod", "a")]),
            &[],
            &Native {
                count: 4,
                sum: 0.5,
                schema: 0,
                zero_threshold: 2f64.powi(-20),
                zero_count: 1,
                spans: &[(-2, 2)],
                deltas: &[2, -1],
            },
        );
        // With an empty zero bucket the threshold is left out: its spans make it native.
        family.sample(
            &labels([("pod", "b")]),
            &[],
            &Native {
                count: 3,
                sum: 0.25,
                schema: 0,
                zero_threshold: 2f64.powi(-20),
                zero_count: 0,
                spans: &[(-3, 1)],
                deltas: &[3],
            },
        );
        family.finish();
        // A truncated family after them ends the reading.
        exposition.extend_from_slice(&[0x20, 0x0a]);
        let got = histograms(&exposition);
        assert_eq!(got.len(), 2);
        let Point::Histogram(b) = &got[1].1 else {
            panic!("a histogram")
        };
        assert_eq!(
            (b.count_int, b.zero_threshold, b.zero_count_int),
            (3, 0.0, 0)
        );
        let (labels, point) = &got[0];
        assert_eq!(
            labels,
            &[
                ("__name__".to_owned(), "h_seconds".to_owned()),
                ("pod".to_owned(), "a".to_owned())
            ]
        );
        let Point::Histogram(h) = point else {
            panic!("a histogram")
        };
        assert_eq!((h.count_int, h.zero_count_int, h.schema), (4, 1, 0));
        assert_eq!(h.positive_deltas, [2, -1]);
        assert_eq!(
            (h.positive_spans[0].offset, h.positive_spans[0].length),
            (-2, 2)
        );
    }
}
