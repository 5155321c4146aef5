//! One module per probe family. Each holds, at the top, the `#[repr(C)]` types it shares
//! with user space (the library target compiles only those) and, in its `programs`
//! submodule, the eBPF programs and the maps they write (the BPF binary compiles both).
//!
//! Adding a family: a new file here, its `pub mod` line below, and its user-space module
//! in `agent/src/ebpf/families/` (see the README's developer section).
pub mod histogram;
#[cfg(target_arch = "bpf")]
pub mod kernel;

pub mod bench_floor;
pub mod cgroup;
pub mod cost;
pub mod disk;
pub mod memory;
pub mod sched;
