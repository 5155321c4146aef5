//! Recording into per-CPU log2 histograms.
use agent_ebpf::{HISTOGRAM_SLOTS, Log2Histogram, log2_slot};
use aya_ebpf::maps::PerCpuArray;

/// Adds `value` to a histogram this CPU owns.
#[inline(always)]
pub fn add(hist: &mut Log2Histogram, value: u64) {
    // The mask keeps the verifier certain the index is in bounds; log2_slot never exceeds 64
    // and slot 64 (values above 2^63) folds into 63.
    let slot = log2_slot(value).min(HISTOGRAM_SLOTS - 1) & (HISTOGRAM_SLOTS - 1);
    // SAFETY: slot < HISTOGRAM_SLOTS, checked above.
    unsafe { *hist.slots.get_unchecked_mut(slot) += 1 };
    hist.sum += value;
}

/// Adds `value` to the histogram at `index` of a per-CPU array: one map lookup per event.
#[inline(always)]
pub fn record(map: &PerCpuArray<Log2Histogram>, index: u32, value: u64) {
    let Some(hist) = map.get_ptr_mut(index) else {
        return;
    };
    // SAFETY: per-CPU entry, only this CPU writes it while the program runs.
    add(unsafe { &mut *hist }, value);
}
