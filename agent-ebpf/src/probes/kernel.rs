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
