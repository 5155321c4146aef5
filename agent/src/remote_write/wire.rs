//! Prometheus remote_write 1.0 on the wire: the four protobuf messages of
//! `prompb/remote.proto` and `prompb/types.proto` (derived with prost, no protoc), and the
//! body: a `WriteRequest`, compressed with snappy's block format (not the framed one).
//!
//! Spec: <https://prometheus.io/docs/specs/prw/remote_write_spec/>.
use std::{collections::HashMap, sync::Arc};

use prost::Message as _;

/// A series' labels, sorted by name (so `__name__` comes first for nodelens's names).
pub type Series = Vec<(String, String)>;

/// A sample's value: a float, or a native histogram (`remote_write.native_histograms`).
#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    Float(f64),
    Histogram(Arc<Histogram>),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Native histograms, which remote_write 1.0 receivers that know them take (Prometheus
    /// with native histograms on); others refuse or drop them.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

/// `prompb.Histogram` with integer counts: the `count_int` and `zero_count_int` members of
/// its oneofs (each encoded as a plain field), positive buckets only.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(uint64, tag = "1")]
    pub count_int: u64,
    #[prost(double, tag = "3")]
    pub sum: f64,
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    #[prost(uint64, tag = "6")]
    pub zero_count_int: u64,
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Groups a batch of (series, timestamp in ms, value) by series, keeping the batch's order
/// (oldest first) within each series, and returns the compressed body.
pub fn encode<'a>(batch: impl IntoIterator<Item = (&'a Arc<Series>, i64, &'a Point)>) -> Vec<u8> {
    let mut index: HashMap<*const Series, usize> = HashMap::new();
    let mut request = WriteRequest::default();
    for (labels, timestamp_ms, value) in batch {
        let at = *index.entry(Arc::as_ptr(labels)).or_insert_with(|| {
            request.timeseries.push(TimeSeries {
                labels: labels
                    .iter()
                    .map(|(name, value)| Label {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: Vec::new(),
                histograms: Vec::new(),
            });
            request.timeseries.len() - 1
        });
        let series = &mut request.timeseries[at];
        match value {
            Point::Float(value) => series.samples.push(Sample {
                value: *value,
                timestamp: timestamp_ms,
            }),
            Point::Histogram(h) => series.histograms.push(Histogram {
                timestamp: timestamp_ms,
                ..(**h).clone()
            }),
        }
    }
    let raw = request.encode_to_vec();
    // Compressing a Vec in memory fails only past snappy's 4 GiB block limit, far above
    // a batch of 2,000 samples; an empty body is then refused by the receiver and counted.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::queue::{Entry, STALE_NAN};

    fn series(labels: &[(&str, &str)]) -> Arc<Series> {
        Arc::new(
            labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_batch_decodes_back_grouped_by_series_in_time_order() {
        let a = series(&[("__name__", "up"), ("job", "x")]);
        let b = series(&[("__name__", "z"), ("job", "x")]);
        let batch = [
            Entry {
                series: a.clone(),
                timestamp_ms: 1,
                value: Point::Float(1.0),
            },
            Entry {
                series: b.clone(),
                timestamp_ms: 1,
                value: Point::Float(5.0),
            },
            Entry {
                series: a.clone(),
                timestamp_ms: 2,
                value: Point::Float(2.0),
            },
            Entry {
                series: b,
                timestamp_ms: 2,
                value: Point::Float(f64::from_bits(STALE_NAN)),
            },
            Entry {
                series: series(&[("__name__", "h"), ("job", "x")]),
                timestamp_ms: 3,
                value: Point::Histogram(Arc::new(Histogram {
                    count_int: 3,
                    sum: 0.5,
                    schema: 0,
                    zero_threshold: 2f64.powi(-20),
                    zero_count_int: 1,
                    positive_spans: vec![BucketSpan {
                        offset: -3,
                        length: 1,
                    }],
                    positive_deltas: vec![2],
                    timestamp: 0,
                })),
            },
        ];
        let body = encode(batch.iter().map(|e| (&e.series, e.timestamp_ms, &e.value)));
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let request = WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(request.timeseries.len(), 3);
        let h = &request.timeseries[2].histograms[0];
        assert_eq!((h.count_int, h.timestamp, h.positive_deltas[0]), (3, 3, 2));
        assert!(request.timeseries[2].samples.is_empty());
        let first = &request.timeseries[0];
        assert_eq!(first.labels[0].name, "__name__");
        assert_eq!(first.labels[0].value, "up");
        let times: Vec<i64> = first.samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(times, [1, 2]);
        assert_eq!(request.timeseries[1].samples[1].value.to_bits(), STALE_NAN);
    }
}
