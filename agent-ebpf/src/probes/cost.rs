//! What each program costs, measured by the program itself: every run is counted, and one
//! run in `COST_SAMPLE_EVERY` is timed (a clock read at entry and one at exit), as are the
//! first `COST_SAMPLE_EVERY` runs on each CPU, so that rare events (reclaim, OOM kills)
//! get an estimate too. User space estimates the run time as
//! `sampled_ns / sampled_runs * runs`.
//!
//! A timed run counts at most `COST_LONGEST_TIMED_NS`: longer, it was interrupted (a
//! hardware interrupt, its softirqs or an NMI ran inside it; no nodelens program runs that
//! long by itself). Counted whole, one interruption of 200 µs weighs 64 times over, as if
//! every untimed run had it too, where the kernel's BPF statistics weigh it once: under
//! disk load the suite once measured block_rq_issue at 270 ns a run against the kernel's
//! 176. On average the sampling is right either way; the cap makes one run's estimate
//! steadier, and at most 20 µs in 64 runs lower.
//!
//! What runs outside the clock is not counted: the kernel's indirect call into the program,
//! the first instructions (finding the cost slot, counting the run) and the last ones. So
//! the estimate reads lower than the kernel's statistics, which time the whole call: 20 to
//! 45 ns a run here (the bench: 23 for sched_switch, 38 for block_rq_issue, 41 for
//! block_rq_complete), more for programs that run rarely and start cold.
//!
//! The kernel's own BPF statistics (BPF_ENABLE_STATS) would do this too, but they are one
//! switch for the whole node: every BPF program, a CNI's packet path included, pays two
//! clock reads per run while they are on. This costs two clock reads per 64 runs of
//! nodelens's own programs, and needs no capability beyond BPF and PERFMON.

/// One run in this many is timed. A power of two: the check is a mask.
pub const COST_SAMPLE_EVERY: u64 = 64;

/// A timed run longer than this was interrupted, and counts this much (see the module
/// doc). The longest programs (a map insert on a cold cache) take a few microseconds.
pub const COST_LONGEST_TIMED_NS: u64 = 20_000;

/// Per program (a slot of its family's cost map) and per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeCost {
    pub runs: u64,
    pub sampled_runs: u64,
    pub sampled_ns: u64,
}

impl ProbeCost {
    /// Sums per-CPU values.
    pub fn merge(&mut self, other: &Self) {
        let ProbeCost {
            runs,
            sampled_runs,
            sampled_ns,
        } = *other;
        self.runs += runs;
        self.sampled_runs += sampled_runs;
        self.sampled_ns += sampled_ns;
    }

    /// Estimated total run time in nanoseconds, or `None` before the first timed run.
    pub fn estimated_ns(&self) -> Option<f64> {
        (self.sampled_runs > 0)
            .then(|| self.sampled_ns as f64 / self.sampled_runs as f64 * self.runs as f64)
    }
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] plain u64 data.
unsafe impl aya::Pod for ProbeCost {}

#[cfg(target_arch = "bpf")]
pub mod programs {
    use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::PerCpuArray};

    use super::{COST_LONGEST_TIMED_NS, COST_SAMPLE_EVERY, ProbeCost};

    /// A started measurement: `stop` it as the program's last step.
    pub struct Timer {
        cost: *mut ProbeCost,
        start: u64,
    }

    /// Counts this run in `slot` and, one run in `COST_SAMPLE_EVERY`, starts the clock.
    #[inline(always)]
    pub fn start(map: &PerCpuArray<ProbeCost>, slot: u32) -> Timer {
        let Some(cost) = map.get_ptr_mut(slot) else {
            return Timer {
                cost: core::ptr::null_mut(),
                start: 0,
            };
        };
        // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
        let c = unsafe { &mut *cost };
        c.runs += 1;
        let start = if c.runs <= COST_SAMPLE_EVERY || c.runs & (COST_SAMPLE_EVERY - 1) == 0 {
            unsafe { bpf_ktime_get_ns() }
        } else {
            0
        };
        Timer { cost, start }
    }

    impl Timer {
        #[inline(always)]
        pub fn stop(self) {
            if self.start == 0 || self.cost.is_null() {
                return;
            }
            let took = unsafe { bpf_ktime_get_ns() }.saturating_sub(self.start);
            // SAFETY: as in `start`.
            let c = unsafe { &mut *self.cost };
            c.sampled_ns += took.min(COST_LONGEST_TIMED_NS);
            c.sampled_runs += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_scales_the_sampled_mean_to_every_run() {
        let mut total = ProbeCost::default();
        total.merge(&ProbeCost {
            runs: 640,
            sampled_runs: 10,
            sampled_ns: 1000,
        });
        total.merge(&ProbeCost {
            runs: 64,
            sampled_runs: 1,
            sampled_ns: 100,
        });
        assert_eq!(total.estimated_ns(), Some(100.0 * 704.0));
        assert_eq!(ProbeCost::default().estimated_ns(), None);
    }
}
