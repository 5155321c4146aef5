//! Types shared between the eBPF programs and user space, one module per probe family.
//!
//! The probe modules (`src/probes/`) are compiled twice: by the BPF binary (`src/main.rs`),
//! with their programs and maps, and by this library for user space, which gets only their
//! `#[repr(C)]` plain data. The `user` feature adds `aya::Pod` impls so the agent can read
//! that data out of maps.
#![cfg_attr(not(test), no_std)]

#[cfg(not(target_arch = "bpf"))]
mod probes;
#[cfg(not(target_arch = "bpf"))]
pub use probes::*;
