//! Reading kernel memory at offsets resolved by user space.
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
