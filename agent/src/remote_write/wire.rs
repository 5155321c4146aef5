//! Prometheus remote_write 1.0 on the wire: the four protobuf messages of
//! `prompb/remote.proto` and `prompb/types.proto` (derived with prost, no protoc), and the
//! body: a `WriteRequest`, compressed with snappy's block format (not the framed one).
//!
//! Spec: <https://prometheus.io/docs/specs/prw/remote_write_spec/>.
use std::{collections::HashMap, sync::Arc};

use prost::Message as _;

use super::queue::{Entry, Series};

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

/// Groups a batch by series, keeping the batch's order (oldest first) within each series,
/// and returns the compressed body.
pub fn encode(batch: &[Entry]) -> Vec<u8> {
    let mut index: HashMap<*const Series, usize> = HashMap::new();
    let mut request = WriteRequest::default();
    for entry in batch {
        let at = *index.entry(Arc::as_ptr(&entry.series)).or_insert_with(|| {
            request.timeseries.push(TimeSeries {
                labels: entry
                    .series
                    .iter()
                    .map(|(name, value)| Label {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: Vec::new(),
            });
            request.timeseries.len() - 1
        });
        request.timeseries[at].samples.push(Sample {
            value: entry.value,
            timestamp: entry.timestamp_ms,
        });
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
    use crate::remote_write::queue::STALE_NAN;

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
        let batch = vec![
            Entry {
                series: a.clone(),
                timestamp_ms: 1,
                value: 1.0,
            },
            Entry {
                series: b.clone(),
                timestamp_ms: 1,
                value: 5.0,
            },
            Entry {
                series: a.clone(),
                timestamp_ms: 2,
                value: 2.0,
            },
            Entry {
                series: b,
                timestamp_ms: 2,
                value: f64::from_bits(STALE_NAN),
            },
        ];
        let body = encode(&batch);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let request = WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(request.timeseries.len(), 2);
        let first = &request.timeseries[0];
        assert_eq!(first.labels[0].name, "__name__");
        assert_eq!(first.labels[0].value, "up");
        let times: Vec<i64> = first.samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(times, [1, 2]);
        assert_eq!(request.timeseries[1].samples[1].value.to_bits(), STALE_NAN);
    }
}
