//! Memory: reclaim stalls (direct and memcg, vmscan begin/end pairs per thread) and OOM
//! kills (`oom:mark_victim`), whose victim pid and cgroup go to user space through a ring
//! buffer.

/// Reclaim stall kinds, indexing the per-CPU reclaim histograms.
pub const RECLAIM_DIRECT: u32 = 0;
pub const RECLAIM_MEMCG: u32 = 1;
pub const RECLAIM_KIND_NAMES: [&str; 2] = ["direct", "memcg"];
/// Slots of `MEMORY_COST`, one per program.
pub const COST_DIRECT_BEGIN: u32 = 0;
pub const COST_DIRECT_END: u32 = 1;
pub const COST_MEMCG_BEGIN: u32 = 2;
pub const COST_MEMCG_END: u32 = 3;
pub const COST_MARK_VICTIM: u32 = 4;
pub const COST_SLOTS: u32 = 5;

/// One reclaim kind's stalls on one CPU: the log2 histogram the classic buckets come from,
/// and the same stalls as a native histogram (schema 3, exact bounds in seconds), added
/// one after the other by the same program run.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ReclaimHistograms {
    pub latency: crate::probes::histogram::Log2Histogram,
    pub native: crate::probes::histogram::NativeHistogram,
}

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

/// Name of the global holding [`MemoryLayout`] in the eBPF object.
pub const MEMORY_LAYOUT_GLOBAL: &str = "MEMORY_LAYOUT";

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] structs of u64/u32 fields with explicit padding.
    unsafe impl aya::Pod for super::MemoryCounters {}
    unsafe impl aya::Pod for super::ReclaimHistograms {}
    unsafe impl aya::Pod for super::OomEvent {}
    unsafe impl aya::Pod for super::MemoryLayout {}
}

/// The names of this family's maps and programs in the object, shared with user space
/// (`take_map`, `ProbeSpec`): each is the identifier of a static or a function in
/// `programs`, and the agent's unit tests check every one against the built object.
pub mod names {
    pub const RECLAIM_START: &str = "RECLAIM_START";
    pub const RECLAIM_LATENCY: &str = "RECLAIM_LATENCY";
    pub const MEMORY_COUNTERS: &str = "MEMORY_COUNTERS";
    pub const MEMORY_COST: &str = "MEMORY_COST";
    pub const OOM_EVENTS: &str = "OOM_EVENTS";
    pub const DIRECT_RECLAIM_BEGIN_BTF: &str = "direct_reclaim_begin_btf";
    pub const DIRECT_RECLAIM_END_BTF: &str = "direct_reclaim_end_btf";
    pub const MEMCG_RECLAIM_BEGIN_BTF: &str = "memcg_reclaim_begin_btf";
    pub const MEMCG_RECLAIM_END_BTF: &str = "memcg_reclaim_end_btf";
    pub const DIRECT_RECLAIM_BEGIN_TP: &str = "direct_reclaim_begin_tp";
    pub const DIRECT_RECLAIM_END_TP: &str = "direct_reclaim_end_tp";
    pub const MEMCG_RECLAIM_BEGIN_TP: &str = "memcg_reclaim_begin_tp";
    pub const MEMCG_RECLAIM_END_TP: &str = "memcg_reclaim_end_tp";
    pub const MARK_VICTIM_BTF: &str = "mark_victim_btf";
    pub const MARK_VICTIM_TP: &str = "mark_victim_tp";
    /// Every map of the family.
    pub const MAPS: &[&str] = &[
        RECLAIM_START,
        RECLAIM_LATENCY,
        MEMORY_COUNTERS,
        MEMORY_COST,
        OOM_EVENTS,
    ];
}

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        Global,
        helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
        macros::{btf_tracepoint, map, tracepoint},
        maps::{HashMap, PerCpuArray, RingBuf},
        programs::{BtfTracePointContext, TracePointContext},
    };

    use super::{
        COST_DIRECT_BEGIN, COST_DIRECT_END, COST_MARK_VICTIM, COST_MEMCG_BEGIN, COST_MEMCG_END,
        COST_SLOTS, MemoryCounters, MemoryLayout, OomEvent, RECLAIM_DIRECT, RECLAIM_MEMCG,
        RECLAIM_START_ENTRIES, ReclaimHistograms,
    };
    use crate::probes::{
        cgroup::programs as cgroup,
        cost::{ProbeCost, programs as cost},
        kernel,
    };

    #[unsafe(no_mangle)]
    // Zeroed until user space sets it before loading (`override_global`).
    // SAFETY: all-integer #[repr(C)] data, for which zero is a valid value.
    static MEMORY_LAYOUT: Global<MemoryLayout> = Global::new(unsafe { core::mem::zeroed() });

    /// Reclaim start time per (thread id << 1 | kind).
    #[map]
    static RECLAIM_START: HashMap<u64, u64> = HashMap::with_max_entries(RECLAIM_START_ENTRIES, 0);

    /// Index RECLAIM_DIRECT or RECLAIM_MEMCG.
    #[map]
    static RECLAIM_LATENCY: PerCpuArray<ReclaimHistograms> = PerCpuArray::with_max_entries(2, 0);

    #[map]
    static MEMORY_COUNTERS: PerCpuArray<MemoryCounters> = PerCpuArray::with_max_entries(1, 0);

    #[map]
    static MEMORY_COST: PerCpuArray<ProbeCost> = PerCpuArray::with_max_entries(COST_SLOTS, 0);

    /// Runs `body` as one measured run of the program in `slot`.
    #[inline(always)]
    fn measured(slot: u32, body: impl FnOnce() -> u32) -> u32 {
        let t = cost::start(&MEMORY_COST, slot);
        let r = body();
        t.stop();
        r
    }

    /// OOM kills are rare: 256 events of 16 bytes fit in one page with room to spare.
    #[map]
    static OOM_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

    #[inline(always)]
    fn count(f: impl FnOnce(&mut MemoryCounters)) {
        if let Some(c) = MEMORY_COUNTERS.get_ptr_mut(0) {
            // SAFETY: per-CPU slot.
            f(unsafe { &mut *c });
        }
    }

    #[inline(always)]
    fn reclaim_key(kind: u32) -> u64 {
        let tid = bpf_get_current_pid_tgid() as u32;
        (u64::from(tid) << 1) | u64::from(kind)
    }

    #[inline(always)]
    fn reclaim_begin(kind: u32) -> u32 {
        let now = unsafe { bpf_ktime_get_ns() };
        if RECLAIM_START.insert(reclaim_key(kind), now, 0).is_err() {
            count(|c| c.reclaim_start_map_full += 1);
        }
        0
    }

    #[inline(always)]
    fn reclaim_end(kind: u32) -> u32 {
        let key = reclaim_key(kind);
        // SAFETY: copied out before removal.
        let Some(start) = (unsafe { RECLAIM_START.get(key) }).copied() else {
            return 0;
        };
        let _ = RECLAIM_START.remove(key);
        let now = unsafe { bpf_ktime_get_ns() };
        let stalled = now.saturating_sub(start);
        if let Some(hist) = RECLAIM_LATENCY.get_ptr_mut(kind) {
            // SAFETY: per-CPU entry, only this CPU writes it while the program runs.
            unsafe {
                (*hist).latency.add(stalled);
                (*hist).native.add(stalled);
            }
        }
        if !cgroup::enabled() {
            return 0;
        }
        // The stalled task is `current`: charge its cgroup.
        match cgroup::stats(unsafe { bpf_get_current_cgroup_id() }) {
            Some(stats) => {
                let field = if kind == RECLAIM_DIRECT {
                    unsafe { &raw mut (*stats).reclaim_direct_ns }
                } else {
                    unsafe { &raw mut (*stats).reclaim_memcg_ns }
                };
                cgroup::add(field, stalled);
            }
            None => count(|c| c.cgroup_map_full += 1),
        }
        0
    }

    #[btf_tracepoint(function = "mm_vmscan_direct_reclaim_begin")]
    pub fn direct_reclaim_begin_btf(_ctx: BtfTracePointContext) -> u32 {
        measured(COST_DIRECT_BEGIN, || reclaim_begin(RECLAIM_DIRECT))
    }

    #[btf_tracepoint(function = "mm_vmscan_direct_reclaim_end")]
    pub fn direct_reclaim_end_btf(_ctx: BtfTracePointContext) -> u32 {
        measured(COST_DIRECT_END, || reclaim_end(RECLAIM_DIRECT))
    }

    #[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
    pub fn memcg_reclaim_begin_btf(_ctx: BtfTracePointContext) -> u32 {
        measured(COST_MEMCG_BEGIN, || reclaim_begin(RECLAIM_MEMCG))
    }

    #[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
    pub fn memcg_reclaim_end_btf(_ctx: BtfTracePointContext) -> u32 {
        measured(COST_MEMCG_END, || reclaim_end(RECLAIM_MEMCG))
    }

    #[tracepoint]
    pub fn direct_reclaim_begin_tp(_ctx: TracePointContext) -> u32 {
        measured(COST_DIRECT_BEGIN, || reclaim_begin(RECLAIM_DIRECT))
    }

    #[tracepoint]
    pub fn direct_reclaim_end_tp(_ctx: TracePointContext) -> u32 {
        measured(COST_DIRECT_END, || reclaim_end(RECLAIM_DIRECT))
    }

    #[tracepoint]
    pub fn memcg_reclaim_begin_tp(_ctx: TracePointContext) -> u32 {
        measured(COST_MEMCG_BEGIN, || reclaim_begin(RECLAIM_MEMCG))
    }

    #[tracepoint]
    pub fn memcg_reclaim_end_tp(_ctx: TracePointContext) -> u32 {
        measured(COST_MEMCG_END, || reclaim_end(RECLAIM_MEMCG))
    }

    #[inline(always)]
    fn oom_kill(pid: u32, cgroup_id: u64) {
        count(|c| c.oom_kills += 1);
        let event = OomEvent {
            pid,
            _pad: 0,
            cgroup_id,
        };
        if OOM_EVENTS.output::<OomEvent>(&event, 0).is_err() {
            count(|c| c.oom_ringbuf_full += 1);
        }
    }

    /// task->cgroups->dfl_cgrp->kn->id: the victim's cgroup v2 id. mark_victim runs in the
    /// context of whoever triggered the OOM killer, so the current task's cgroup would be wrong.
    #[inline(always)]
    unsafe fn task_cgroup_id(task: *const u8, l: &MemoryLayout) -> Result<u64, i32> {
        let css_set = unsafe { kernel::read_ptr(task, l.task_cgroups)? };
        let cgroup = unsafe { kernel::read_ptr(css_set, l.css_set_dfl_cgrp)? };
        let kn = unsafe { kernel::read_ptr(cgroup, l.cgroup_kn)? };
        unsafe { kernel::read_u64(kn, l.kernfs_node_id) }
    }

    #[btf_tracepoint(function = "mark_victim")]
    pub fn mark_victim_btf(ctx: BtfTracePointContext) -> u32 {
        measured(COST_MARK_VICTIM, || mark_victim_btf_body(&ctx))
    }

    #[inline(always)]
    fn mark_victim_btf_body(ctx: &BtfTracePointContext) -> u32 {
        let l = MEMORY_LAYOUT.load();
        if l.oom_arg_is_task != 0 {
            let task: *const u8 = ctx.arg(0);
            let pid = unsafe { kernel::read_u32(task, l.task_pid) }.unwrap_or(0);
            let cgroup_id = unsafe { task_cgroup_id(task, &l) }.unwrap_or(0);
            oom_kill(pid, cgroup_id);
        } else {
            let pid: u64 = ctx.arg(0);
            oom_kill(pid as u32, 0);
        }
        0
    }

    #[tracepoint]
    pub fn mark_victim_tp(ctx: TracePointContext) -> u32 {
        measured(COST_MARK_VICTIM, || mark_victim_tp_body(&ctx))
    }

    #[inline(always)]
    fn mark_victim_tp_body(ctx: &TracePointContext) -> u32 {
        let l = MEMORY_LAYOUT.load();
        let pid = unsafe { ctx.read_at::<u32>(l.tp_victim_pid as usize) }.unwrap_or(0);
        oom_kill(pid, 0);
        0
    }
}
