//! The samples waiting to be sent, oldest first, bounded by `remote_write.queue.max_samples`:
//! while the receiver is down the queue fills, and past the bound the oldest samples are
//! dropped and counted. Series labels are shared between the samples of one series.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

/// The NaN Prometheus writes to mark a series stale: it ended, so queries stop returning
/// it at once rather than five minutes later.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

pub use super::wire::{Point, Series};

pub struct Entry {
    pub series: Arc<Series>,
    pub timestamp_ms: i64,
    pub value: Point,
}

pub struct Queue {
    entries: VecDeque<Entry>,
    max_samples: usize,
}

impl Queue {
    pub fn new(max_samples: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            max_samples,
        }
    }

    /// Appends one round of samples; returns how many of the oldest were dropped to stay
    /// within the bound.
    pub fn push(&mut self, round: impl IntoIterator<Item = Entry>) -> usize {
        self.entries.extend(round);
        let excess = self.entries.len().saturating_sub(self.max_samples);
        self.entries.drain(..excess);
        excess
    }

    /// Takes up to `n` of the oldest samples.
    pub fn take(&mut self, n: usize) -> Vec<Entry> {
        let n = n.min(self.entries.len());
        self.entries.drain(..n).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Turns each round's samples into queue entries: adds the external labels, sorts label
/// names, shares one `Arc` per series across rounds, and marks series that disappeared
/// since the last round stale (a gone cgroup's series end at once in queries).
#[derive(Default)]
pub struct Rounds {
    /// Series of the previous round, by their labels.
    live: HashMap<Arc<Series>, ()>,
}

impl Rounds {
    /// A round's entries from its samples: (labels, value) each.
    pub fn entries(
        &mut self,
        samples: impl ExactSizeIterator<Item = (Series, Point)>,
        external: &[(String, String)],
        timestamp_ms: i64,
    ) -> Vec<Entry> {
        let mut out = Vec::with_capacity(samples.len() + 8);
        let mut seen: HashSet<Arc<Series>> = HashSet::with_capacity(samples.len());
        for (labels, value) in samples {
            let mut labels = labels;
            // The spec forbids empty label values; Prometheus reads an empty one as absent.
            labels.retain(|(_, value)| !value.is_empty());
            for (name, value) in external {
                if !labels.iter().any(|(n, _)| n == name) {
                    labels.push((name.clone(), value.clone()));
                }
            }
            labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let series = match self.live.get_key_value(&labels) {
                Some((known, ())) => known.clone(),
                None => Arc::new(labels),
            };
            if !seen.insert(series.clone()) {
                // The same series twice in one exposition: keep the first.
                continue;
            }
            out.push(Entry {
                series,
                timestamp_ms,
                value,
            });
        }
        for (gone, ()) in self.live.drain() {
            if !seen.contains(&gone) {
                // A float stale marker ends a histogram series too (Prometheus turns it into
                // the histogram's own).
                out.push(Entry {
                    series: gone,
                    timestamp_ms,
                    value: Point::Float(f64::from_bits(STALE_NAN)),
                });
            }
        }
        self.live = seen.into_iter().map(|s| (s, ())).collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn sample(name: &str, cgroup: &str, value: f64) -> (Series, Point) {
        (
            vec![
                ("__name__".into(), name.into()),
                ("cgroup".into(), cgroup.into()),
            ],
            Point::Float(value),
        )
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let mut q = Queue::new(3);
        let round = |t: i64| {
            (0..2).map(move |_| Entry {
                series: Arc::new(vec![("__name__".to_owned(), "x".to_owned())]),
                timestamp_ms: t,
                value: Point::Float(0.0),
            })
        };
        assert_eq!(q.push(round(1)), 0);
        assert_eq!(q.push(round(2)), 1);
        let left = q.take(10);
        assert_eq!(
            left.iter().map(|e| e.timestamp_ms).collect::<Vec<_>>(),
            [1, 2, 2]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn labels_sorted_external_added_and_gone_series_marked_stale() {
        let mut rounds = Rounds::default();
        let external = [("node".to_owned(), "n1".to_owned())];
        let first = rounds.entries(
            vec![sample("a", "x", 1.0), sample("a", "y", 2.0)].into_iter(),
            &external,
            1000,
        );
        assert_eq!(first.len(), 2);
        let names: Vec<&str> = first[0].series.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["__name__", "cgroup", "node"]);
        let second = rounds.entries(vec![sample("a", "x", 3.0)].into_iter(), &external, 2000);
        assert_eq!(second.len(), 2);
        assert!(
            Arc::ptr_eq(&first[0].series, &second[0].series),
            "labels shared"
        );
        assert!(matches!(second[1].value, Point::Float(v) if v.to_bits() == STALE_NAN));
        assert_eq!(second[1].series[1].1, "y");
        let third = rounds.entries(vec![sample("a", "x", 4.0)].into_iter(), &external, 3000);
        assert_eq!(third.len(), 1, "a stale marker is sent once");
    }
}
