//! nodelens eBPF programs, built as `agent-ebpf-task-storage`: the same programs as
//! `main.rs` (`agent-ebpf`), with blocked starts kept in task-local storage
//! (`blocked_starts/task_storage.rs`). The agent loads this object where the kernel's
//! task storage is safe to use from `sched_switch` (6.4+), `agent-ebpf` elsewhere.
#![no_std]
#![no_main]
// The per-cgroup counters need the atomic add intrinsic; see probes/kernel.rs.
#![allow(internal_features)]
#![feature(core_intrinsics)]
// As in main.rs: the shared types are used in full only by user space.
#![allow(dead_code)]

mod probes;

#[path = "blocked_starts/task_storage.rs"]
mod blocked_starts;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: tp_btf programs, bpf_probe_read_kernel and task storage need it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
