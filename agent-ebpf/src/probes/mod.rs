//! One module per probe family. Each holds, at the top, the `#[repr(C)]` types it shares
//! with user space (the library target compiles only those) and, in its `programs`
//! submodule, the eBPF programs and the maps they write (the BPF binary compiles both).
//!
//! Adding a family is adding its file here (build.rs registers every module but the shared
//! ones below) and its user-space module in `agent/src/ebpf/families/` (see CONTRIBUTING).
pub mod histogram;
#[cfg(target_arch = "bpf")]
pub mod kernel;

pub mod bench_floor;
pub mod cost;

// The families: `pub mod <family>;` for each file but the shared ones.
include!(concat!(env!("OUT_DIR"), "/families.rs"));
