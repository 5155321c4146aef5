//! remote_write's own metrics, served on /metrics beside everything else.
use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
};

use crate::metrics::{self, CollectError, Collector, NoLabels};

/// Upper bounds of the request duration histogram, seconds.
const DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default)]
pub struct Stats {
    sent: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    bytes: AtomicU64,
    rounds: AtomicU64,
    queued: AtomicU64,
    in_flight: AtomicU64,
    last_success_ms: AtomicU64,
    /// Non-cumulative counts per bucket (the last is +Inf), and the sum in microseconds.
    durations: Mutex<([u64; DURATION_BUCKETS.len() + 1], u64)>,
}

impl Stats {
    pub fn sampled(&self, _taken: usize, dropped: usize, queued: usize) {
        self.rounds.fetch_add(1, Relaxed);
        self.dropped.fetch_add(dropped as u64, Relaxed);
        self.queued.store(queued as u64, Relaxed);
    }

    pub fn queued(&self, queued: usize) {
        self.queued.store(queued as u64, Relaxed);
    }

    pub fn in_flight(&self, n: usize) {
        self.in_flight.store(n as u64, Relaxed);
    }

    pub fn sent(&self, n: usize, bytes: usize) {
        self.sent.fetch_add(n as u64, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_success_ms.store(now, Relaxed);
    }

    pub fn retried(&self, n: usize) {
        self.retried.fetch_add(n as u64, Relaxed);
    }

    pub fn dropped(&self, n: usize) {
        self.dropped.fetch_add(n as u64, Relaxed);
    }

    pub fn request(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let slot = DURATION_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        let mut d = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        d.0[slot] += 1;
        d.1 += took.as_micros() as u64;
    }
}

/// Encodes [`Stats`] as the `nodelens_remote_write_*` families.
#[derive(Debug)]
pub struct RemoteWriteCollector(pub std::sync::Arc<Stats>);

impl Collector for RemoteWriteCollector {
    fn name(&self) -> &'static str {
        "remote_write"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let s = &self.0;
        metrics::counts(
            out,
            "nodelens_remote_write_samples_total",
            "Samples pushed with remote_write, by result: sent (accepted by the receiver), retried (each sample of each failed attempt that is tried again), dropped (refused with a 4xx, or the oldest when the queue was full).",
            [
                ([("result", "sent")], s.sent.load(Relaxed)),
                ([("result", "retried")], s.retried.load(Relaxed)),
                ([("result", "dropped")], s.dropped.load(Relaxed)),
            ],
        )?;
        metrics::counts(
            out,
            "nodelens_remote_write_sent_bytes_total",
            "Compressed request bodies accepted by the receiver, bytes.",
            [(NoLabels, s.bytes.load(Relaxed))],
        )?;
        metrics::counts(
            out,
            "nodelens_remote_write_rounds_total",
            "Times the registry was sampled for remote_write.",
            [(NoLabels, s.rounds.load(Relaxed))],
        )?;
        metrics::gauge(
            out,
            "nodelens_remote_write_queue_samples",
            "Samples waiting to be sent, including the batch in flight.",
            (s.queued.load(Relaxed) + s.in_flight.load(Relaxed)) as f64,
        )?;
        metrics::gauge(
            out,
            "nodelens_remote_write_last_success_timestamp_seconds",
            "When the receiver last accepted a batch (Unix time; 0 before the first).",
            s.last_success_ms.load(Relaxed) as f64 / 1000.0,
        )?;
        let (counts, sum_us) = *s.durations.lock().unwrap_or_else(|e| e.into_inner());
        let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(counts)
            .collect();
        let mut metric = out.encode_descriptor(
            "nodelens_remote_write_request_duration_seconds",
            "Time of each remote_write request, from sending to the answer (or the timeout).",
            None,
            MetricType::Histogram,
        )?;
        metric
            .encode_family(&NoLabels)?
            .encode_histogram::<NoLabelSet>(
                sum_us as f64 / 1e6,
                counts.iter().sum(),
                &buckets,
                None,
            )?;
        Ok(())
    }
}
