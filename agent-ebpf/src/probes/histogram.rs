//! Log2 histograms, kept in the kernel and exposed as Prometheus `le` buckets.
//!
//! Slot `s` counts values `v` with `2^(s-1) < v <= 2^s` (slot 0 holds 0 and 1), so the
//! slot's upper bound is exactly `2^s` and maps onto a Prometheus bucket without rounding.
//! 64 slots cover every `u64` (values above 2^63 fold into slot 63).

/// Number of log2 slots in a kernel-side histogram.
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

    /// Adds `value`. Callers own the histogram (a per-CPU map value) while they run.
    #[inline(always)]
    pub fn add(&mut self, value: u64) {
        // The mask keeps the verifier certain the index is in bounds; log2_slot never
        // exceeds 64 and slot 64 (values above 2^63) folds into 63.
        let slot = log2_slot(value).min(HISTOGRAM_SLOTS - 1) & (HISTOGRAM_SLOTS - 1);
        if let Some(n) = self.slots.get_mut(slot) {
            *n += 1;
        }
        self.sum = self.sum.wrapping_add(value);
    }

    /// Adds another histogram into this one (user space sums the per-CPU copies).
    pub fn merge(&mut self, other: &Self) {
        for (t, v) in self.slots.iter_mut().zip(other.slots.iter()) {
            *t += v;
        }
        self.sum = self.sum.wrapping_add(other.sum);
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

/// A log2 histogram that keeps only the slots that become buckets: `N - 1` slots from
/// `FIRST` on (slot `FIRST` also holds every smaller value), and one overflow slot for
/// values above `2^(FIRST + N - 2)`, the `+Inf` bucket. For maps with one value per CPU and
/// many keys, where 64 slots would cost 1 KiB per key per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RangeHistogram<const FIRST: usize, const N: usize> {
    pub slots: [u64; N],
    pub sum: u64,
}

impl<const FIRST: usize, const N: usize> RangeHistogram<FIRST, N> {
    pub const fn zeroed() -> Self {
        Self {
            slots: [0; N],
            sum: 0,
        }
    }

    #[inline(always)]
    pub fn add(&mut self, value: u64) {
        let slot = log2_slot(value).saturating_sub(FIRST).min(N - 1);
        if let Some(n) = self.slots.get_mut(slot) {
            *n += 1;
        }
        self.sum = self.sum.wrapping_add(value);
    }

    /// The same counts on the full 64-slot scale (the overflow slot lands past the last
    /// bucket, so it is counted in `+Inf`).
    pub fn expand(&self) -> Log2Histogram {
        let mut full = Log2Histogram::zeroed();
        for (i, n) in self.slots.iter().enumerate() {
            if let Some(slot) = full.slots.get_mut(FIRST + i) {
                *slot += n;
            }
        }
        full.sum = self.sum;
        full
    }

    /// Adds another histogram into this one (user space sums the per-CPU copies).
    pub fn merge(&mut self, other: &Self) {
        for (t, v) in self.slots.iter_mut().zip(other.slots.iter()) {
            *t += v;
        }
        self.sum = self.sum.wrapping_add(other.sum);
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] plain u64 data.
    unsafe impl aya::Pod for super::Log2Histogram {}
    unsafe impl<const FIRST: usize, const N: usize> aya::Pod for super::RangeHistogram<FIRST, N> {}
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

    #[test]
    fn range_histogram_folds_the_ends_and_expands_onto_the_full_scale() {
        let mut h = RangeHistogram::<10, 4>::zeroed();
        for v in [1, 1024, 1025, 4096, 4097, u64::MAX] {
            h.add(v);
        }
        // slots: <= 2^10, 2^11, 2^12, overflow.
        assert_eq!(h.slots, [2, 1, 1, 2]);
        let full = h.expand();
        assert_eq!(full.slots[10], 2);
        assert_eq!(full.slots[12], 1);
        assert_eq!(
            full.slots[13], 2,
            "overflow lands past the last bucket, in +Inf"
        );
        assert_eq!(full.slots.iter().sum::<u64>(), 6);
    }

    #[test]
    fn add_and_merge_keep_count_and_sum() {
        let mut a = Log2Histogram::zeroed();
        a.add(3);
        a.add(u64::MAX);
        let mut b = Log2Histogram::zeroed();
        b.add(1);
        b.merge(&a);
        assert_eq!(b.slots[0], 1);
        assert_eq!(b.slots[2], 1);
        assert_eq!(b.slots[63], 1, "values above 2^63 fold into the last slot");
        assert_eq!(b.sum, 4u64.wrapping_add(u64::MAX));
    }
}
