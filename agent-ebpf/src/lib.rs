//! Types shared between the eBPF programs (`src/main.rs`) and user space.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into maps and the
//! agent reads it back with the `user` feature, which adds `aya::Pod`.
#![cfg_attr(not(test), no_std)]

/// Number of log2 slots in a kernel-side histogram.
///
/// Slot `s` counts values `v` with `2^(s-1) < v <= 2^s` (slot 0 holds 0 and 1), so the
/// slot's upper bound is exactly `2^s` and maps onto a Prometheus `le` bucket without
/// rounding. 64 slots cover every `u64`.
pub const HISTOGRAM_SLOTS: usize = 64;

/// A log2 histogram of nanoseconds or bytes, kept per CPU (one map entry per histogram).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Log2Histogram {
    pub slots: [u64; HISTOGRAM_SLOTS],
    /// Sum of every recorded value, in the histogram's unit, for `_sum`.
    pub sum: u64,
}

impl Log2Histogram {
    pub const fn zeroed() -> Self {
        Self {
            slots: [0; HISTOGRAM_SLOTS],
            sum: 0,
        }
    }
}

/// Slot for `value`: the smallest `s` with `value <= 2^s`.
///
/// Written with shifts rather than `leading_zeros` so that the eBPF build never depends on
/// how LLVM lowers `ctlz` for the BPF target; the same function serves user-space tests.
#[inline(always)]
pub fn log2_slot(value: u64) -> usize {
    if value <= 1 {
        return 0;
    }
    // ceil(log2(v)) == floor(log2(v - 1)) + 1 for v >= 2.
    let mut v = value - 1;
    let mut r: usize = 0;
    if v >> 32 != 0 {
        v >>= 32;
        r += 32;
    }
    if v >> 16 != 0 {
        v >>= 16;
        r += 16;
    }
    if v >> 8 != 0 {
        v >>= 8;
        r += 8;
    }
    if v >> 4 != 0 {
        v >>= 4;
        r += 4;
    }
    if v >> 2 != 0 {
        v >>= 2;
        r += 2;
    }
    if v >> 1 != 0 {
        r += 1;
    }
    r + 1
}

/// Scheduler counters, run-queue histogram and per-CPU state: one entry per CPU, so each
/// sched_switch needs a single lookup for all of it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SchedCounters {
    /// `prev` gave up the CPU by blocking (it was not runnable and not preempted).
    pub voluntary_switches: u64,
    /// `prev` was preempted or yielded while still runnable.
    pub involuntary_switches: u64,
    /// A wakeup timestamp could not be stored because the start map was full.
    pub start_map_full: u64,
    /// A cgroup's statistics could not be stored because the cgroup map was full.
    pub cgroup_map_full: u64,
    /// When this CPU last switched tasks: the task leaving at the next switch has run
    /// since then. Per-CPU state rather than a counter; 0 until the first switch is seen.
    pub last_switch_ns: u64,
    /// How long the task now on this CPU waited for it. Charged to that task's cgroup when
    /// it leaves the CPU, together with its run time, in the same map update.
    pub pending_wait_ns: u64,
    /// Run-queue latency of every task this CPU switched in.
    pub runqueue_latency: Log2Histogram,
}

/// Per-cgroup totals, keyed by cgroup v2 id (the inode of the cgroup's directory), updated
/// with atomic adds: one shared entry per cgroup instead of one per CPU keeps the map small
/// on large machines.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupStats {
    /// Time the cgroup's tasks spent on a CPU.
    pub cpu_ns: u64,
    /// Time the cgroup's tasks spent runnable, waiting for a CPU.
    pub runqueue_wait_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub reclaim_direct_ns: u64,
    pub reclaim_memcg_ns: u64,
}

/// Default size of the per-cgroup map. User space sets it at load time from the tracked
/// cgroup cap (room for churn: gone cgroups stay until their last scrape).
pub const CGROUP_STATS_ENTRIES: u32 = 16384;

/// Size of the map of wakeup timestamps, keyed by pid (as runqlat sizes it).
pub const RUNQUEUE_START_ENTRIES: u32 = 10240;

/// Kernel layout passed to the programs at load time (`EbpfLoader::override_global`).
///
/// The eBPF side has no CO-RE relocations, so every struct offset comes from the running
/// kernel's BTF or from the tracepoint's `format` file, never from a constant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedLayout {
    /// `task_struct.pid` offset in bytes (BTF).
    pub task_pid: u32,
    /// `task_struct.__state` (5.14+) or `task_struct.state` offset in bytes (BTF).
    pub task_state: u32,
    /// Size of that state field: 4 for `unsigned int __state`, 8 for `long state`.
    pub task_state_size: u32,
    /// `sched_wakeup` / `sched_wakeup_new` format: offset of `pid`.
    pub tp_wakeup_pid: u32,
    /// `sched_switch` format: offsets of `prev_pid`, `prev_state`, `next_pid`.
    pub tp_switch_prev_pid: u32,
    pub tp_switch_prev_state: u32,
    /// Size of `prev_state` in the format file (`long`: 8 on 64-bit kernels).
    pub tp_switch_prev_state_size: u32,
    pub tp_switch_next_pid: u32,
}

/// Name of the global holding [`SchedLayout`] in the eBPF object.
pub const SCHED_LAYOUT_GLOBAL: &str = "SCHED_LAYOUT";

/// Block request operation, decoded from `rwbs` (classic tracepoint) or from the request's
/// `cmd_flags` (tp_btf). The values index `DISK_OP_NAMES`.
pub const DISK_OP_READ: u32 = 0;
pub const DISK_OP_WRITE: u32 = 1;
pub const DISK_OP_DISCARD: u32 = 2;
pub const DISK_OP_FLUSH: u32 = 3;
pub const DISK_OP_OTHER: u32 = 4;
pub const DISK_OP_NAMES: [&str; 5] = ["read", "write", "discard", "flush", "other"];

/// Decodes the operation from the kernel's `rwbs` string (blk_fill_rwbs): an optional
/// leading `F` (preflush) followed by the operation letter.
#[inline(always)]
pub fn disk_op_from_rwbs(first: u8, second: u8) -> u32 {
    let op = match (first, second) {
        (b'F', b'R' | b'W' | b'D' | b'F') => second,
        _ => first,
    };
    match op {
        b'R' => DISK_OP_READ,
        b'W' => DISK_OP_WRITE,
        b'D' => DISK_OP_DISCARD,
        b'F' => DISK_OP_FLUSH,
        _ => DISK_OP_OTHER,
    }
}

/// Decodes the operation from `req_opf` (`cmd_flags & REQ_OP_MASK`).
#[inline(always)]
pub fn disk_op_from_req_op(op: u32) -> u32 {
    match op & 0xff {
        0 => DISK_OP_READ,
        1 => DISK_OP_WRITE,
        2 => DISK_OP_FLUSH,
        3 | 5 => DISK_OP_DISCARD, // REQ_OP_DISCARD, REQ_OP_SECURE_ERASE (rwbs "DE")
        _ => DISK_OP_OTHER,
    }
}

/// Histogram key: the whole disk (kernel dev_t, major << 20 | minor) and the operation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DiskKey {
    pub dev: u32,
    pub op: u32,
}

/// Latency (ns) and size (bytes) of completed requests, recorded together at completion so
/// that both histograms always have the same count.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DiskHistograms {
    pub latency: Log2Histogram,
    pub size: Log2Histogram,
}

/// A request between issue and completion.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskInFlight {
    pub issued_ns: u64,
    pub bytes: u32,
    pub dev: u32,
    pub op: u32,
    pub _pad: u32,
}

/// Requests in flight at once, node-wide. Deep NVMe queues reach a few thousand.
pub const DISK_INFLIGHT_ENTRIES: u32 = 16384;
/// Distinct (disk, op) pairs.
pub const DISK_HISTOGRAM_ENTRIES: u32 = 1024;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskCounters {
    /// An issue could not be recorded: the in-flight map was full.
    pub inflight_map_full: u64,
    /// A (disk, op) histogram could not be created: the histogram map was full.
    pub histogram_map_full: u64,
}

/// Offsets for the tp_btf block programs, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskLayout {
    /// Argument index of `struct request *` in block_rq_issue (0 since 5.11, 1 before).
    pub issue_rq_arg: u32,
    pub request_data_len: u32,
    pub request_cmd_flags: u32,
    /// 1: the disk is `request.rq_disk` (before 5.19); 0: `request.q->disk`.
    pub disk_in_request: u32,
    pub request_rq_disk: u32,
    pub request_q: u32,
    pub queue_disk: u32,
    pub gendisk_major: u32,
    pub gendisk_first_minor: u32,
    /// Classic tracepoint fields.
    pub tp_issue_dev: u32,
    pub tp_issue_sector: u32,
    pub tp_issue_bytes: u32,
    pub tp_issue_rwbs: u32,
    pub tp_complete_dev: u32,
    pub tp_complete_sector: u32,
}

pub const DISK_LAYOUT_GLOBAL: &str = "DISK_LAYOUT";

/// Reclaim stall kinds, indexing the per-CPU reclaim histograms.
pub const RECLAIM_DIRECT: u32 = 0;
pub const RECLAIM_MEMCG: u32 = 1;
pub const RECLAIM_KIND_NAMES: [&str; 2] = ["direct", "memcg"];
/// Threads inside reclaim at once.
pub const RECLAIM_START_ENTRIES: u32 = 8192;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryCounters {
    pub reclaim_start_map_full: u64,
    pub cgroup_map_full: u64,
    pub oom_kills: u64,
    /// An OOM event could not be sent to user space: the ring buffer was full.
    pub oom_ringbuf_full: u64,
}

/// Sent through the ring buffer for each OOM kill.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OomEvent {
    pub pid: u32,
    pub _pad: u32,
    /// The victim's cgroup v2 id (inode of its cgroup directory); 0 when unknown.
    pub cgroup_id: u64,
}

/// Offsets for the tp_btf mark_victim program, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryLayout {
    /// 1: mark_victim's first argument is `struct task_struct *` (6.x); 0: `int pid`.
    pub oom_arg_is_task: u32,
    pub task_pid: u32,
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// Classic tracepoint: offset of `pid` in mark_victim.
    pub tp_victim_pid: u32,
    pub _pad: u32,
}

pub const MEMORY_LAYOUT_GLOBAL: &str = "MEMORY_LAYOUT";

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are #[repr(C)] structs of u64/u32 fields with explicit padding.
    unsafe impl aya::Pod for super::Log2Histogram {}
    unsafe impl aya::Pod for super::SchedCounters {}
    unsafe impl aya::Pod for super::SchedLayout {}
    unsafe impl aya::Pod for super::CgroupStats {}
    unsafe impl aya::Pod for super::DiskKey {}
    unsafe impl aya::Pod for super::DiskHistograms {}
    unsafe impl aya::Pod for super::DiskCounters {}
    unsafe impl aya::Pod for super::DiskInFlight {}
    unsafe impl aya::Pod for super::DiskLayout {}
    unsafe impl aya::Pod for super::MemoryCounters {}
    unsafe impl aya::Pod for super::OomEvent {}
    unsafe impl aya::Pod for super::MemoryLayout {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rwbs_decoding_follows_blk_fill_rwbs() {
        let op = |s: &[u8]| disk_op_from_rwbs(s[0], *s.get(1).unwrap_or(&0));
        assert_eq!(op(b"R"), DISK_OP_READ);
        assert_eq!(op(b"RA"), DISK_OP_READ);
        assert_eq!(op(b"WS"), DISK_OP_WRITE);
        assert_eq!(op(b"FWS"), DISK_OP_WRITE, "preflush then write");
        assert_eq!(op(b"WFS"), DISK_OP_WRITE, "write with FUA");
        assert_eq!(op(b"F"), DISK_OP_FLUSH);
        assert_eq!(op(b"FF"), DISK_OP_FLUSH);
        assert_eq!(op(b"FS"), DISK_OP_FLUSH);
        assert_eq!(op(b"D"), DISK_OP_DISCARD);
        assert_eq!(op(b"DE"), DISK_OP_DISCARD);
        assert_eq!(op(b"N"), DISK_OP_OTHER);
        assert_eq!(disk_op_from_req_op(0), DISK_OP_READ);
        assert_eq!(disk_op_from_req_op(1 | 1 << 11), DISK_OP_WRITE);
        assert_eq!(disk_op_from_req_op(2), DISK_OP_FLUSH);
        assert_eq!(disk_op_from_req_op(3), DISK_OP_DISCARD);
        assert_eq!(disk_op_from_req_op(9), DISK_OP_OTHER);
    }

    #[test]
    fn slot_upper_bound_is_exact_power_of_two() {
        assert_eq!(log2_slot(0), 0);
        assert_eq!(log2_slot(1), 0);
        assert_eq!(log2_slot(2), 1);
        assert_eq!(log2_slot(3), 2);
        assert_eq!(log2_slot(4), 2);
        assert_eq!(log2_slot(4096), 12);
        assert_eq!(log2_slot(4097), 13);
        assert_eq!(log2_slot(u64::MAX), 64);
        for s in 1..63 {
            let v = 1u64 << s;
            assert_eq!(log2_slot(v), s, "2^{s} lands in the bucket le=2^{s}");
            assert_eq!(log2_slot(v + 1), s + 1);
        }
    }
}
