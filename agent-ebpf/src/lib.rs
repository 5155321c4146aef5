//! Types shared between the eBPF programs (`src/main.rs`) and user space.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into maps and the
//! agent reads it back with the `user` feature, which adds `aya::Pod`.
#![cfg_attr(not(test), no_std)]

/// Number of log2 slots in a kernel-side histogram.
///
/// Slot `s` counts values `v` with `2^(s-1) < v <= 2^s` (slot 0 holds 0 and 1), so the
/// slot's upper bound is exactly `2^s` and maps onto a Prometheus `le` bucket without
/// rounding. 64 slots cover every `u64`.
pub const HISTOGRAM_SLOTS: usize = 64;

/// A log2 histogram of nanoseconds or bytes, kept per CPU (one map entry per histogram).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Log2Histogram {
    pub slots: [u64; HISTOGRAM_SLOTS],
    /// Sum of every recorded value, in the histogram's unit, for `_sum`.
    pub sum: u64,
}

impl Log2Histogram {
    pub const fn zeroed() -> Self {
        Self {
            slots: [0; HISTOGRAM_SLOTS],
            sum: 0,
        }
    }
}

/// Slot for `value`: the smallest `s` with `value <= 2^s`.
///
/// Written with shifts rather than `leading_zeros` so that the eBPF build never depends on
/// how LLVM lowers `ctlz` for the BPF target; the same function serves user-space tests.
#[inline(always)]
pub fn log2_slot(value: u64) -> usize {
    if value <= 1 {
        return 0;
    }
    // ceil(log2(v)) == floor(log2(v - 1)) + 1 for v >= 2.
    let mut v = value - 1;
    let mut r: usize = 0;
    if v >> 32 != 0 {
        v >>= 32;
        r += 32;
    }
    if v >> 16 != 0 {
        v >>= 16;
        r += 16;
    }
    if v >> 8 != 0 {
        v >>= 8;
        r += 8;
    }
    if v >> 4 != 0 {
        v >>= 4;
        r += 4;
    }
    if v >> 2 != 0 {
        v >>= 2;
        r += 2;
    }
    if v >> 1 != 0 {
        r += 1;
    }
    r + 1
}

/// Scheduler counters, one entry per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SchedCounters {
    /// `prev` gave up the CPU by blocking (it was not runnable and not preempted).
    pub voluntary_switches: u64,
    /// `prev` was preempted or yielded while still runnable.
    pub involuntary_switches: u64,
    /// A wakeup timestamp could not be stored because the start map was full.
    pub start_map_full: u64,
}

/// Index of the run-queue latency histogram in its per-CPU array.
pub const RUNQUEUE_HISTOGRAM_INDEX: u32 = 0;

/// Size of the map of wakeup timestamps, keyed by pid (as runqlat sizes it).
pub const RUNQUEUE_START_ENTRIES: u32 = 10240;

/// Kernel layout passed to the programs at load time (`EbpfLoader::override_global`).
///
/// The eBPF side has no CO-RE relocations, so every struct offset comes from the running
/// kernel's BTF or from the tracepoint's `format` file, never from a constant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedLayout {
    /// `task_struct.pid` offset in bytes (BTF).
    pub task_pid: u32,
    /// `task_struct.__state` (5.14+) or `task_struct.state` offset in bytes (BTF).
    pub task_state: u32,
    /// Size of that state field: 4 for `unsigned int __state`, 8 for `long state`.
    pub task_state_size: u32,
    /// `sched_wakeup` / `sched_wakeup_new` format: offset of `pid`.
    pub tp_wakeup_pid: u32,
    /// `sched_switch` format: offsets of `prev_pid`, `prev_state`, `next_pid`.
    pub tp_switch_prev_pid: u32,
    pub tp_switch_prev_state: u32,
    /// Size of `prev_state` in the format file (`long`: 8 on 64-bit kernels).
    pub tp_switch_prev_state_size: u32,
    pub tp_switch_next_pid: u32,
}

/// Name of the global holding [`SchedLayout`] in the eBPF object.
pub const SCHED_LAYOUT_GLOBAL: &str = "SCHED_LAYOUT";

#[cfg(feature = "user")]
mod user {
    // SAFETY: all three are #[repr(C)] structs of u64/u32 with no padding-sensitive invariants.
    unsafe impl aya::Pod for super::Log2Histogram {}
    unsafe impl aya::Pod for super::SchedCounters {}
    unsafe impl aya::Pod for super::SchedLayout {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_upper_bound_is_exact_power_of_two() {
        assert_eq!(log2_slot(0), 0);
        assert_eq!(log2_slot(1), 0);
        assert_eq!(log2_slot(2), 1);
        assert_eq!(log2_slot(3), 2);
        assert_eq!(log2_slot(4), 2);
        assert_eq!(log2_slot(4096), 12);
        assert_eq!(log2_slot(4097), 13);
        assert_eq!(log2_slot(u64::MAX), 64);
        for s in 1..63 {
            let v = 1u64 << s;
            assert_eq!(log2_slot(v), s, "2^{s} lands in the bucket le=2^{s}");
            assert_eq!(log2_slot(v + 1), s + 1);
        }
    }
}
