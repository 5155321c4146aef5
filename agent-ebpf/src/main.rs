//! nodelens eBPF programs. One module per probe family, maps next to the programs that
//! write them (`probes/`). Entry points are thin: the logic lives in fallible functions.
//!
//! This root builds `agent-ebpf`, the object that loads on every kernel. `task_storage.rs`
//! builds `agent-ebpf-task-storage` from the same programs; the two differ only in where
//! blocked starts are kept (`blocked_starts/`), and the agent picks one per kernel.
#![no_std]
#![no_main]
// The per-cgroup counters need the atomic add intrinsic; see probes/kernel.rs.
#![allow(internal_features)]
#![feature(core_intrinsics)]
// Each family module starts with the types it shares with user space; the agent uses all
// of them through the library target, the programs only some.
#![allow(dead_code)]

mod probes;

#[path = "blocked_starts/hash.rs"]
mod blocked_starts;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: tp_btf programs and bpf_probe_read_kernel need it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
