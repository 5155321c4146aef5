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

/// Schema of the native histograms: bucket `i` holds values in `(2^((i-1)/8), 2^(i/8)]`
/// seconds, eight buckets per power of two (each 9% wider than the last), Prometheus's
/// usual resolution (client_golang's bucket factor 1.1). Finer than the log2 buckets the
/// classic histograms keep, for the same 2 KiB per CPU.
pub const NATIVE_SCHEMA: i32 = 3;

/// The native bucket index of [`NATIVE_BOUNDS_NS`]`[0]`.
pub const NATIVE_FIRST_INDEX: i32 = -159;

/// Buckets of a [`NativeHistogram`].
pub const NATIVE_BUCKETS: usize = 256;

/// The zero bucket's threshold, `2^-20` s (about 954 ns): values up to it are counted in
/// the zero bucket, which Prometheus's spec has for them. In whole nanoseconds: a value is at
/// most 953.67... ns when it is at most 953.
pub const NATIVE_ZERO_THRESHOLD_NS: u64 = 953;

/// Upper bound of each native bucket in whole nanoseconds: entry `k` is bucket
/// `NATIVE_FIRST_INDEX + k`, whose bound is `2^((k - 159) / 8)` s, floored (a value in whole
/// nanoseconds is at most the bound exactly when it is at most its floor, so the spec's
/// inclusive upper bounds hold to the nanosecond). From about 1.04 µs to 4,096 s. A unit test
/// checks every entry against the formula.
pub const NATIVE_BOUNDS_NS: [u64; NATIVE_BUCKETS] = [
    1_039,
    1_134,
    1_236,
    1_348,
    1_470,
    1_603,
    1_749,
    1_907,
    2_079,
    2_268,
    2_473,
    2_697,
    2_941,
    3_207,
    3_498,
    3_814,
    4_159,
    4_536,
    4_947,
    5_394,
    5_883,
    6_415,
    6_996,
    7_629,
    8_319,
    9_072,
    9_894,
    10_789,
    11_766,
    12_831,
    13_992,
    15_258,
    16_639,
    18_145,
    19_788,
    21_579,
    23_532,
    25_662,
    27_984,
    30_517,
    33_279,
    36_291,
    39_576,
    43_158,
    47_064,
    51_324,
    55_969,
    61_035,
    66_559,
    72_583,
    79_152,
    86_316,
    94_129,
    102_648,
    111_938,
    122_070,
    133_118,
    145_166,
    158_305,
    172_633,
    188_258,
    205_296,
    223_877,
    244_140,
    266_237,
    290_333,
    316_611,
    345_266,
    376_516,
    410_593,
    447_755,
    488_281,
    532_474,
    580_667,
    633_222,
    690_533,
    753_032,
    821_187,
    895_511,
    976_562,
    1_064_948,
    1_161_335,
    1_266_444,
    1_381_067,
    1_506_065,
    1_642_375,
    1_791_023,
    1_953_125,
    2_129_897,
    2_322_670,
    2_532_889,
    2_762_135,
    3_012_130,
    3_284_751,
    3_582_047,
    3_906_250,
    4_259_795,
    4_645_340,
    5_065_779,
    5_524_271,
    6_024_261,
    6_569_503,
    7_164_094,
    7_812_500,
    8_519_591,
    9_290_680,
    10_131_559,
    11_048_543,
    12_048_522,
    13_139_006,
    14_328_188,
    15_625_000,
    17_039_183,
    18_581_361,
    20_263_118,
    22_097_086,
    24_097_044,
    26_278_012,
    28_656_376,
    31_250_000,
    34_078_366,
    37_162_722,
    40_526_236,
    44_194_173,
    48_194_088,
    52_556_025,
    57_312_752,
    62_500_000,
    68_156_733,
    74_325_444,
    81_052_472,
    88_388_347,
    96_388_176,
    105_112_051,
    114_625_505,
    125_000_000,
    136_313_466,
    148_650_889,
    162_104_944,
    176_776_695,
    192_776_353,
    210_224_103,
    229_251_010,
    250_000_000,
    272_626_933,
    297_301_778,
    324_209_888,
    353_553_390,
    385_552_706,
    420_448_207,
    458_502_021,
    500_000_000,
    545_253_866,
    594_603_557,
    648_419_777,
    707_106_781,
    771_105_412,
    840_896_415,
    917_004_043,
    1_000_000_000,
    1_090_507_732,
    1_189_207_115,
    1_296_839_554,
    1_414_213_562,
    1_542_210_825,
    1_681_792_830,
    1_834_008_086,
    2_000_000_000,
    2_181_015_465,
    2_378_414_230,
    2_593_679_109,
    2_828_427_124,
    3_084_421_650,
    3_363_585_661,
    3_668_016_172,
    4_000_000_000,
    4_362_030_930,
    4_756_828_460,
    5_187_358_218,
    5_656_854_249,
    6_168_843_301,
    6_727_171_322,
    7_336_032_345,
    8_000_000_000,
    8_724_061_861,
    9_513_656_920,
    10_374_716_437,
    11_313_708_498,
    12_337_686_603,
    13_454_342_644,
    14_672_064_691,
    16_000_000_000,
    17_448_123_722,
    19_027_313_840,
    20_749_432_874,
    22_627_416_997,
    24_675_373_206,
    26_908_685_288,
    29_344_129_382,
    32_000_000_000,
    34_896_247_445,
    38_054_627_680,
    41_498_865_748,
    45_254_833_995,
    49_350_746_413,
    53_817_370_576,
    58_688_258_765,
    64_000_000_000,
    69_792_494_890,
    76_109_255_360,
    82_997_731_497,
    90_509_667_991,
    98_701_492_826,
    107_634_741_152,
    117_376_517_530,
    128_000_000_000,
    139_584_989_781,
    152_218_510_720,
    165_995_462_995,
    181_019_335_983,
    197_402_985_652,
    215_269_482_304,
    234_753_035_060,
    256_000_000_000,
    279_169_979_562,
    304_437_021_440,
    331_990_925_990,
    362_038_671_967,
    394_805_971_304,
    430_538_964_609,
    469_506_070_120,
    512_000_000_000,
    558_339_959_124,
    608_874_042_881,
    663_981_851_981,
    724_077_343_935,
    789_611_942_608,
    861_077_929_219,
    939_012_140_241,
    1_024_000_000_000,
    1_116_679_918_249,
    1_217_748_085_762,
    1_327_963_703_962,
    1_448_154_687_870,
    1_579_223_885_217,
    1_722_155_858_439,
    1_878_024_280_483,
    2_048_000_000_000,
    2_233_359_836_498,
    2_435_496_171_525,
    2_655_927_407_925,
    2_896_309_375_740,
    3_158_447_770_435,
    3_444_311_716_879,
    3_756_048_560_966,
    4_096_000_000_000,
];

/// A native (exponential) histogram of nanoseconds, exported in seconds: Prometheus schema
/// [`NATIVE_SCHEMA`]'s buckets, each value placed against [`NATIVE_BOUNDS_NS`] when it is
/// recorded, so that every bucket boundary is exact in seconds (the log2 buckets are powers
/// of two in nanoseconds, which are no bucket boundary of any schema in seconds). Values
/// above 4,096 s are counted in the last bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NativeHistogram {
    pub zero: u64,
    pub buckets: [u64; NATIVE_BUCKETS],
}

impl NativeHistogram {
    pub const fn zeroed() -> Self {
        Self {
            zero: 0,
            buckets: [0; NATIVE_BUCKETS],
        }
    }

    /// Adds `ns`. The count and sum are the classic histogram's, which records the same
    /// values. Callers own the histogram (a per-CPU map value) while they run.
    #[inline(always)]
    pub fn add(&mut self, ns: u64) {
        self.add_at(native_entry(ns));
    }

    /// Adds a value already placed by [`native_entry`].
    #[inline(always)]
    pub fn add_at(&mut self, entry: Option<usize>) {
        let Some(entry) = entry else {
            self.zero += 1;
            return;
        };
        if let Some(n) = self.buckets.get_mut(entry) {
            *n += 1;
        }
    }

    /// Adds another histogram into this one (user space sums the per-CPU copies).
    pub fn merge(&mut self, other: &Self) {
        self.zero += other.zero;
        for (t, v) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *t += v;
        }
    }
}

/// The entry of [`NATIVE_BOUNDS_NS`] whose bucket holds `ns`, or `None` for the zero bucket.
#[inline(always)]
pub fn native_entry(ns: u64) -> Option<usize> {
    (ns > NATIVE_ZERO_THRESHOLD_NS).then(|| native_bucket(ns))
}

/// Schema of the per-pod native histograms: bucket `i` holds `(2^(i-1), 2^i]` seconds, one
/// bucket per power of two. Coarser than the node's ([`NATIVE_SCHEMA`]) because every
/// cgroup has one, in the slot its totals share by every CPU: 33 counters a cgroup. Each
/// bucket is eight of the node's, so its bounds are exact too.
pub const POD_NATIVE_SCHEMA: i32 = 0;

/// The schema-0 bucket index of [`PodNativeHistogram::buckets`]`[0]`: `(2^-20, 2^-19]` s.
pub const POD_NATIVE_FIRST_INDEX: i32 = -19;

/// Buckets of a per-pod native histogram: indices -19 to 12, up to 4,096 s.
pub const POD_NATIVE_BUCKETS: usize = 32;

/// A per-pod native histogram slot for a value placed by [`native_entry`]: 0 for the zero
/// bucket, else 1 + the index into the buckets. A schema-3 bucket `j` lies in schema-0
/// bucket `ceil(j / 8)`; with `j = entry - 159`, that is `(entry + 8) / 8 - 20`.
#[inline(always)]
pub fn pod_native_slot(entry: Option<usize>) -> u64 {
    entry.map_or(0, |e| ((e + 8) / 8) as u64)
}

/// The entry of [`NATIVE_BOUNDS_NS`] whose bucket holds `ns`: the first bound `ns` is at
/// most (the last entry for larger values). Eight halvings of the 256 entries, a fixed loop
/// the verifier sees the end of.
#[inline(always)]
pub fn native_bucket(ns: u64) -> usize {
    let (mut lo, mut hi) = (0usize, NATIVE_BUCKETS - 1);
    for _ in 0..8 {
        let mid = (lo + hi) / 2;
        let bound = NATIVE_BOUNDS_NS
            .get(mid & (NATIVE_BUCKETS - 1))
            .copied()
            .unwrap_or(u64::MAX);
        if ns <= bound {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo & (NATIVE_BUCKETS - 1)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] plain u64 data.
    unsafe impl aya::Pod for super::Log2Histogram {}
    unsafe impl<const FIRST: usize, const N: usize> aya::Pod for super::RangeHistogram<FIRST, N> {}
    unsafe impl aya::Pod for super::NativeHistogram {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_bucket_lies_in_the_pod_bucket_the_slot_names() {
        // Node bucket j (schema 3) is (2^((j-1)/8), 2^(j/8)]; pod bucket i (schema 0) is
        // (2^(i-1), 2^i]: j's lies in i's exactly when 8(i-1) <= j-1 and j <= 8i.
        for entry in 0..NATIVE_BUCKETS {
            let j = entry as i32 + NATIVE_FIRST_INDEX;
            let slot = pod_native_slot(Some(entry));
            assert!((1..=POD_NATIVE_BUCKETS as u64).contains(&slot), "{entry}");
            let i = POD_NATIVE_FIRST_INDEX + slot as i32 - 1;
            assert!(
                8 * (i - 1) < j && j <= 8 * i,
                "entry {entry}: node {j} in pod {i}"
            );
        }
        assert_eq!(pod_native_slot(None), 0, "the zero bucket");
        // A value on a pod bucket's edge, and 1 ns above: 2^-19 s is 1907.3 ns.
        assert_eq!(pod_native_slot(native_entry(1_907)), 1);
        assert_eq!(pod_native_slot(native_entry(1_908)), 2);
        assert_eq!(pod_native_slot(native_entry(953)), 0);
        assert_eq!(pod_native_slot(native_entry(954)), 1);
        // 1 s is the edge of bucket 0: at most 1 s is slot 20, more is slot 21.
        assert_eq!(pod_native_slot(native_entry(1_000_000_000)), 20);
        assert_eq!(pod_native_slot(native_entry(1_000_000_001)), 21);
    }

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

    /// The bound of native bucket `index` in nanoseconds, `1e9 * 2^(index / 8)`, floored:
    /// with integers where `index` is a multiple of 8 (a shift of 1e9), else from a float
    /// far enough from a whole number for its floor to be certain.
    fn bound_from_the_formula(index: i32) -> u64 {
        if index % 8 == 0 {
            let power = index / 8;
            return if power >= 0 {
                1_000_000_000u64 << power
            } else {
                // 1e9 / 2^-power, floored (exact when 2^-power divides 1e9 = 2^9 * 5^9).
                1_000_000_000u64 >> -power
            };
        }
        let b = 1e9 * 2f64.powf(index as f64 / 8.0);
        let fraction = b - b.floor();
        assert!(
            fraction > 1e-6 && fraction < 1.0 - 1e-6,
            "bucket {index}: {b} is too near a whole number to floor with a float"
        );
        b.floor() as u64
    }

    #[test]
    fn native_bounds_follow_the_schema_formula() {
        for (k, bound) in NATIVE_BOUNDS_NS.iter().enumerate() {
            let index = NATIVE_FIRST_INDEX + k as i32;
            assert_eq!(*bound, bound_from_the_formula(index), "bucket {index}");
        }
        assert_eq!(NATIVE_SCHEMA, 3, "the table is for schema 3");
        assert_eq!(
            bound_from_the_formula(NATIVE_FIRST_INDEX - 1),
            NATIVE_ZERO_THRESHOLD_NS,
            "the zero bucket ends where the first bucket starts"
        );
        assert_eq!(NATIVE_BOUNDS_NS[159], 1_000_000_000, "bucket 0 ends at 1 s");
        assert_eq!(
            NATIVE_BOUNDS_NS[255], 4_096_000_000_000,
            "the last at 2^12 s"
        );
    }

    #[test]
    fn native_buckets_hold_their_upper_bound_and_not_one_ns_more() {
        let bucket_of = |ns: u64| {
            let mut h = NativeHistogram::zeroed();
            h.add(ns);
            if h.zero == 1 {
                return None;
            }
            let k = h.buckets.iter().position(|n| *n == 1).expect("one bucket");
            assert_eq!(h.buckets.iter().sum::<u64>(), 1);
            Some(k)
        };
        assert_eq!(bucket_of(0), None);
        assert_eq!(bucket_of(NATIVE_ZERO_THRESHOLD_NS), None);
        assert_eq!(bucket_of(NATIVE_ZERO_THRESHOLD_NS + 1), Some(0));
        for (k, bound) in NATIVE_BOUNDS_NS.iter().enumerate() {
            assert_eq!(bucket_of(*bound), Some(k), "on the edge of {k}");
            assert_eq!(bucket_of(bound - 1), Some(k), "1 ns under the edge of {k}");
            let above = if k == NATIVE_BUCKETS - 1 { k } else { k + 1 };
            assert_eq!(
                bucket_of(bound + 1),
                Some(above),
                "1 ns over the edge of {k}"
            );
        }
        assert_eq!(bucket_of(u64::MAX), Some(NATIVE_BUCKETS - 1));
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
