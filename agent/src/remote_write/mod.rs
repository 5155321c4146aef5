//! Push: Prometheus remote_write 1.0 from the agent itself, for stores that cannot scrape
//! node IPs (managed Prometheus, Mimir, Thanos Receive, VictoriaMetrics, nodes behind NAT).
//!
//! Two tasks share a bounded queue. The sampler renders the registry every
//! `remote_write.interval`, exactly as a scrape would, and queues the samples with the
//! external labels, staleness markers for series that ended, and one timestamp per round.
//! The sender takes batches of at most 2,000 samples, oldest first, and retries network
//! errors, 5xx and 429 with backoff (30 ms doubling to 5 s, or the receiver's
//! `Retry-After`), so nothing is lost while the queue has room. Other 4xx answers drop the
//! batch, counted and logged with the receiver's message. Pull keeps working beside it.
//! With `remote_write.native_histograms` the native histograms go too (`native`).
mod client;
mod exposition;
mod native;
pub mod queue;
mod stats;
pub mod wire;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

pub use self::stats::{RemoteWriteCollector, Stats};
use self::{
    client::{Client, Outcome},
    queue::{Point, Queue, Rounds},
};
use crate::config::RemoteWriteConfig;

/// Samples per request, as Prometheus's sender (`max_samples_per_send`).
const MAX_BATCH: usize = 2_000;
const MIN_BACKOFF: Duration = Duration::from_millis(30);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Push, checked and ready to start: the URL, credentials and TLS files are read at
/// startup, so a mistake is a one-line error and exit code 2, not a silent retry loop.
pub struct Pusher {
    config: Arc<RemoteWriteConfig>,
    client: Client,
}

impl Pusher {
    pub fn new(config: RemoteWriteConfig) -> Result<Self, String> {
        let config = Arc::new(config);
        let client = Client::new(config.clone())?;
        Ok(Self { config, client })
    }

    /// Starts the sampler and the sender on the current runtime; `node` is the default
    /// `instance` label.
    pub fn start(self, registry: Arc<Registry>, stats: Arc<Stats>, node: &str) {
        let config = Arc::new((*self.config).clone().with_defaults(node));
        start(config, self.client, registry, stats);
    }
}

fn start(
    config: Arc<RemoteWriteConfig>,
    client: Client,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
) {
    let queue = Arc::new(Mutex::new(Queue::new(config.max_samples)));
    let wake = Arc::new(Notify::new());
    tracing::info!(
        url = %config.url,
        interval = %humantime::format_duration(config.interval),
        max_samples = config.max_samples,
        "pushing with remote_write"
    );
    tokio::spawn(sample(
        config,
        registry,
        queue.clone(),
        wake.clone(),
        stats.clone(),
    ));
    tokio::spawn(deliver(client, queue, wake, stats));
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Renders the registry every interval and queues the samples.
async fn sample(
    config: Arc<RemoteWriteConfig>,
    registry: Arc<Registry>,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    stats: Arc<Stats>,
) {
    let mut rounds = Rounds::default();
    let mut last_ms = 0;
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Never backwards, even if the wall clock steps back: receivers refuse samples
        // older than a series' last one.
        let timestamp_ms = now_ms().max(last_ms + 1);
        last_ms = timestamp_ms;
        let registry = registry.clone();
        let external = config.external_labels.clone();
        let native_histograms = config.native_histograms;
        // Collectors read /proc and the maps, and a big node has tens of thousands of
        // samples to sort: all of it off the event loop, which serves scrapes.
        let round = tokio::task::spawn_blocking(move || {
            let rendered = crate::render::render(&registry, crate::render::Format::Prometheus);
            let entries = rendered.ok().and_then(|text| {
                let (samples, unreadable) = exposition::parse(&text);
                if unreadable > 0 {
                    tracing::debug!(unreadable, "remote_write: exposition lines not understood");
                }
                // The native histograms first: a round's batches go in order, so a float of
                // the round arriving means its histograms have.
                let mut points: Vec<(queue::Series, Point)> = Vec::new();
                if native_histograms {
                    let protobuf =
                        crate::render::render_bytes(&registry, crate::render::Format::Protobuf);
                    // Without them this round would mark every histogram series stale.
                    points = native::histograms(&protobuf.ok()?);
                }
                points.extend(
                    samples
                        .into_iter()
                        .map(|s| (s.labels, Point::Float(s.value))),
                );
                Some(rounds.entries(points.into_iter(), &external, timestamp_ms))
            });
            (rounds, entries)
        })
        .await;
        let entries = match round {
            Ok((kept, entries)) => {
                rounds = kept;
                entries
            }
            Err(e) => {
                // The task panicked: start the staleness tracking afresh.
                tracing::warn!("remote_write: sampling failed ({e}); this round is skipped");
                rounds = Rounds::default();
                None
            }
        };
        let Some(entries) = entries else {
            tracing::warn!("remote_write: rendering the registry failed; this round is skipped");
            continue;
        };
        let taken = entries.len();
        let (dropped, queued) = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            let dropped = q.push(entries);
            (dropped, q.len())
        };
        stats.sampled(taken, dropped, queued);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "remote_write: queue full ({} samples): dropped the oldest",
                config.max_samples
            );
        }
        wake.notify_one();
    }
}

/// Sends batches, oldest first, retrying what the receiver may take later.
async fn deliver(
    mut client: Client,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    stats: Arc<Stats>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut failing_since: Option<(Instant, String)> = None;
    let mut last_refusal: Option<String> = None;
    loop {
        let batch = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            let batch = q.take(MAX_BATCH);
            stats.queued(q.len());
            batch
        };
        if batch.is_empty() {
            stats.in_flight(0);
            wake.notified().await;
            continue;
        }
        let n = batch.len();
        stats.in_flight(n);
        let body = Bytes::from(wire::encode(
            batch.iter().map(|e| (&e.series, e.timestamp_ms, &e.value)),
        ));
        drop(batch);
        loop {
            let started = Instant::now();
            let outcome = client.send(body.clone()).await;
            stats.request(started.elapsed());
            match outcome {
                Outcome::Sent => {
                    stats.sent(n, body.len());
                    if let Some((since, _)) = failing_since.take() {
                        tracing::info!(
                            "remote_write: delivering again after {}",
                            humantime::format_duration(Duration::from_secs(
                                since.elapsed().as_secs()
                            ))
                        );
                    }
                    backoff = MIN_BACKOFF;
                    break;
                }
                Outcome::Drop { why } => {
                    stats.dropped(n);
                    // One line per distinct refusal, not one per batch.
                    if last_refusal.as_deref() != Some(why.as_str()) {
                        tracing::warn!(
                            "remote_write: the receiver refused a batch of {n} samples ({why}); dropped (further refusals for the same reason are only counted)"
                        );
                        last_refusal = Some(why);
                    }
                    backoff = MIN_BACKOFF;
                    break;
                }
                Outcome::Retry { after, why } => {
                    stats.retried(n);
                    // One line when it starts failing, and when the reason changes.
                    if failing_since.as_ref().is_none_or(|(_, last)| *last != why) {
                        tracing::warn!("remote_write: {why}; retrying");
                        failing_since =
                            Some((failing_since.map_or_else(Instant::now, |(t, _)| t), why));
                    }
                    // The receiver's Retry-After, but never sooner than our own backoff.
                    tokio::time::sleep(after.map_or(backoff, |a| a.max(backoff))).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    // While it waits, the queue may have overflowed: what is in flight stays.
                    let queued = queue.lock().unwrap_or_else(|e| e.into_inner()).len();
                    stats.queued(queued);
                }
            }
        }
    }
}
