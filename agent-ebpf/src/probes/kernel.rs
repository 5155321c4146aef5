//! Reading kernel memory at offsets resolved by user space, and the one atomic add the
//! programs need. BPF target only.
use aya_ebpf::helpers::bpf_probe_read_kernel;

#[inline(always)]
pub unsafe fn read_u32(base: *const u8, offset: u32) -> Result<u32, i32> {
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const u32) }
}

#[inline(always)]
pub unsafe fn read_u64(base: *const u8, offset: u32) -> Result<u64, i32> {
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const u64) }
}

#[inline(always)]
pub unsafe fn read_ptr(base: *const u8, offset: u32) -> Result<*const u8, i32> {
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const *const u8) }
}

/// A direct load through a BTF-typed pointer (a tp_btf argument, or a pointer loaded from
/// one) at an offset the verifier knows: offsets come from the read-only globals, which the
/// verifier reads as constants. It checks the offset and size against the kernel's BTF and
/// emits a fault-safe load, which is much cheaper than a bpf_probe_read_kernel call. A NULL
/// or bad pointer reads as zero instead of faulting.
#[inline(always)]
pub unsafe fn btf_load<T: Copy>(base: *const u8, offset: u32) -> T {
    unsafe { core::ptr::read_volatile(base.add(offset as usize) as *const T) }
}

/// Atomically adds `value` to a u64 in a map value shared by every CPU.
///
/// The BPF target has no compare-and-swap, so core offers no `AtomicU64::fetch_add` there
/// (`target_has_atomic = "64"` is unset). LLVM does lower an atomic add whose result is
/// unused to the BPF atomic add instruction, which every kernel with BPF has; the only way
/// to ask for it is the `atomic_xadd` intrinsic. Its signature has changed between
/// nightlies, which is why the nightly is pinned (`rust-toolchain.toml` in this crate) and
/// why this is the only place that names it: `cargo xtask lint` builds and lints this crate
/// for the BPF target, so a nightly that changes it fails there, loudly, first.
#[inline(always)]
pub fn atomic_add(field: *mut u64, value: u64) {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};
    // SAFETY: `field` points into a map value, which outlives the program run.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, value) };
}
