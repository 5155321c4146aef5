//! Scheduler metrics measured in the kernel: run-queue latency and context switches.
//! Reads two per-CPU maps per scrape, one lookup each, and sums the CPUs.
use std::sync::Arc;

use agent_ebpf::HISTOGRAM_SLOTS;
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::{CollectError, Collector, map_error, sum_histograms};
use crate::{
    ebpf::Probes,
    metrics::{Log2Buckets, NoLabels, family, histogram},
};

/// Run-queue latency buckets: 2^10 ns (about 1 µs) up to 2^36 ns (about 69 s).
pub const RUNQUEUE_FIRST_SLOT: usize = 10;
pub const RUNQUEUE_LAST_SLOT: usize = 36;

#[derive(Debug)]
pub struct SchedCollector {
    probes: Arc<Probes>,
}

impl SchedCollector {
    pub fn new(probes: Arc<Probes>) -> Self {
        Self { probes }
    }
}

impl Collector for SchedCollector {
    fn name(&self) -> &'static str {
        "sched"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        // Before the probes are loaded, or when none could be, there is nothing to report;
        // nodelens_probe_up says why.
        let Some(maps) = self.probes.loaded.get().and_then(|l| l.sched.as_ref()) else {
            return Ok(());
        };
        let counters = maps
            .counters
            .get(&0, 0)
            .map_err(|e| map_error("SCHED_COUNTERS", e))?;
        let (mut voluntary, mut involuntary) = (0u64, 0u64);
        for c in counters.iter() {
            voluntary += c.voluntary_switches;
            involuntary += c.involuntary_switches;
        }
        let latency = maps
            .runqueue_complete
            .then(|| sum_histograms(counters.iter().map(|c| &c.runqueue_latency)));

        if maps.switch_up {
            family(
                out,
                "nodelens_cpu_context_switches_total",
                "Context switches seen by sched_switch: voluntary (the task blocked) or involuntary (preempted while runnable).",
                MetricType::Counter,
                [
                    ([("kind", "voluntary")], voluntary as f64),
                    ([("kind", "involuntary")], involuntary as f64),
                ],
            )?;
        }
        if let Some(latency) = latency {
            histogram(
                out,
                "nodelens_runqueue_latency_seconds",
                "Time tasks spent runnable on a run queue before getting a CPU (wakeup or preemption to sched_switch).",
                [(
                    NoLabels,
                    Log2Buckets {
                        slots: &latency.slots[..HISTOGRAM_SLOTS],
                        sum: latency.sum,
                        first_slot: RUNQUEUE_FIRST_SLOT,
                        last_slot: RUNQUEUE_LAST_SLOT,
                        scale: 1e-9,
                    },
                )],
            )?;
        }
        Ok(())
    }
}
