//! Native histograms of nanoseconds, as the kernel keeps them
//! (`agent_ebpf::histogram::NativeHistogram`), for the exposition: Prometheus schema 3 in
//! seconds, the zero bucket up to 2^-20 s. Only a protobuf scrape carries them.
use agent_ebpf::histogram::{
    NATIVE_FIRST_INDEX, NATIVE_SCHEMA, NativeHistogram, POD_NATIVE_BUCKETS, POD_NATIVE_FIRST_INDEX,
    POD_NATIVE_SCHEMA,
};

use crate::metrics::NativeBuckets;

/// The zero bucket's threshold in seconds: `2^-20`, which the kernel's
/// `NATIVE_ZERO_THRESHOLD_NS` is in whole nanoseconds.
pub const ZERO_THRESHOLD_SECONDS: f64 = 1.0 / (1u64 << 20) as f64;

/// `h`'s buckets for [`crate::metrics::histogram_with_native`].
pub fn native_seconds(h: &NativeHistogram) -> NativeBuckets<'_> {
    NativeBuckets {
        schema: NATIVE_SCHEMA,
        zero_threshold: ZERO_THRESHOLD_SECONDS,
        zero_count: h.zero,
        first_index: NATIVE_FIRST_INDEX,
        counts: &h.buckets,
    }
}

/// Per-CPU copies of a classic and a native histogram that hold the same values: `first`,
/// or `read` again (at most three times more) until every CPU's copy `agree`s. A program
/// adds each value to the classic histogram and then to the native one, so a copy taken in
/// between has one more in the first; a native histogram's buckets must add up to its
/// count, or Prometheus refuses it. After three tries the last copies are used as they are.
pub fn read_agreeing<T: aya::Pod, E>(
    first: aya::maps::PerCpuValues<T>,
    read: impl Fn() -> Result<aya::maps::PerCpuValues<T>, E>,
    agree: impl Fn(&T) -> bool,
) -> Result<aya::maps::PerCpuValues<T>, E> {
    let mut values = first;
    for _ in 0..3 {
        if values.iter().all(&agree) {
            break;
        }
        values = read()?;
    }
    Ok(values)
}

/// A per-pod native histogram of nanoseconds as the kernel keeps it in a cgroup's entry
/// (`histogram::pod_native_slot`: the zero bucket, then schema 0 from
/// `POD_NATIVE_FIRST_INDEX`), in seconds.
pub fn pod_native_seconds(zero: u64, buckets: &[u64; POD_NATIVE_BUCKETS]) -> NativeBuckets<'_> {
    NativeBuckets {
        schema: POD_NATIVE_SCHEMA,
        zero_threshold: ZERO_THRESHOLD_SECONDS,
        zero_count: zero,
        first_index: POD_NATIVE_FIRST_INDEX,
        counts: buckets,
    }
}

/// How many values a per-pod native histogram holds (its zero bucket and its buckets). A
/// bucket only grows, so a kept encoding whose count is unchanged has unchanged buckets
/// (`crate::kept`).
pub fn pod_native_count(zero: u64, buckets: &[u64; POD_NATIVE_BUCKETS]) -> u64 {
    zero + buckets.iter().sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_ebpf::histogram::NATIVE_ZERO_THRESHOLD_NS;

    #[test]
    fn the_zero_threshold_is_the_kernels_in_seconds() {
        // 2^-20 s is 953.67... ns: the whole nanoseconds at most it are those at most 953.
        let ns = ZERO_THRESHOLD_SECONDS * 1e9;
        assert_eq!(ns.floor() as u64, NATIVE_ZERO_THRESHOLD_NS);
        assert_eq!(ZERO_THRESHOLD_SECONDS, 2f64.powi(-20));
    }
}
