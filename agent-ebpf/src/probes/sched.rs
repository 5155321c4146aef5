//! Scheduler: run-queue latency (runqlat semantics), context switches, and each cgroup's
//! CPU time, run-queue wait and switches.
//!
//! Two ways to know how long a task waited for a CPU:
//! - Kernel timestamps (tp_btf, when the kernel's BTF has the fields): the scheduler keeps
//!   them itself. When `sched_switch` fires, `next->sched_info.last_queued` still holds when
//!   `next` was put on the run queue (woken, or preempted while runnable), in the run
//!   queue's clock, and `rq->clock` was just updated; `sched_info_arrive` clears it only
//!   after the tracepoint. So one program on `sched_switch` does all the work, with no
//!   wakeup programs and no pid-keyed map. A fair task's run time is the kernel's own
//!   `sum_exec_runtime - prev_sum_exec_runtime` (what `cpu.stat` adds up); other classes
//!   reset no such mark, so theirs is the run-queue clock between this CPU's switches.
//! - Wakeup programs (classic tracepoints, or a kernel without those fields): wakeups and
//!   preemptions store a timestamp per pid, and `sched_switch` takes it back (runqlat).
//!
//! The idle task (pid 0) is never recorded. Per-cgroup accounting costs one map update per
//! switch: when a task leaves a CPU, its cgroup (`current`'s) is charged its run time and
//! the wait it had before getting the CPU, kept per CPU until then.
use crate::probes::histogram::Log2Histogram;

/// Size of the map of wakeup timestamps, keyed by pid (as runqlat sizes it).
pub const RUNQUEUE_START_ENTRIES: u32 = 10240;

/// Slots of `SCHED_COST`, one per program (both attach types of a probe share it).
pub const COST_SWITCH: u32 = 0;
pub const COST_WAKEUP: u32 = 1;
pub const COST_WAKEUP_NEW: u32 = 2;
pub const COST_SLOTS: u32 = 3;

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
    /// When this CPU last switched tasks (`bpf_ktime_get_ns`, or the run queue's clock in
    /// kernel-timestamp mode): the task leaving at the next switch has run since then.
    /// Per-CPU state rather than a counter; 0 until the first switch is seen.
    pub last_switch_ns: u64,
    /// How long the task now on this CPU waited for it. Charged to that task's cgroup when
    /// it leaves the CPU, together with its run time, in the same map update.
    pub pending_wait_ns: u64,
    /// Run-queue latency of every task this CPU switched in.
    pub runqueue_latency: Log2Histogram,
}

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
    /// 1: the tp_btf `sched_switch` reads the kernel's timestamps (the fields below) and the
    /// wakeup programs are not loaded; 0: it takes wakeup timestamps from RUNQUEUE_START.
    pub kernel_timestamps: u32,
    /// `task_struct.sched_info.last_queued`.
    pub task_last_queued: u32,
    /// `task_struct.se.cfs_rq`, `cfs_rq.rq`, `rq.clock`: the run queue's clock, through the
    /// task (the per-CPU `runqueues` variable has no portable path).
    pub task_cfs_rq: u32,
    pub cfs_rq_rq: u32,
    pub rq_clock: u32,
    /// `task_struct.se.sum_exec_runtime` and `.prev_sum_exec_runtime`.
    pub task_sum_exec: u32,
    pub task_prev_sum_exec: u32,
    /// `task_struct.policy`: SCHED_NORMAL, SCHED_BATCH and SCHED_IDLE are fair.
    pub task_policy: u32,
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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] structs of u64/u32 fields without implicit padding.
    unsafe impl aya::Pod for super::SchedCounters {}
    unsafe impl aya::Pod for super::SchedLayout {}
}

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        EbpfContext, Global,
        helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
        macros::{btf_tracepoint, map, tracepoint},
        maps::{HashMap, PerCpuArray},
        programs::{BtfTracePointContext, TracePointContext},
    };
    use aya_log_ebpf::warn;

    use super::{
        COST_SLOTS, COST_SWITCH, COST_WAKEUP, COST_WAKEUP_NEW, RUNQUEUE_START_ENTRIES,
        SchedCounters, SchedLayout,
    };
    use crate::probes::{
        cgroup::programs as cgroup,
        cost::{ProbeCost, programs as cost},
        kernel,
    };

    #[unsafe(no_mangle)]
    // Zeroed until user space sets it before loading (`override_global`).
    // SAFETY: all-integer #[repr(C)] data, for which zero is a valid value.
    static SCHED_LAYOUT: Global<SchedLayout> = Global::new(unsafe { core::mem::zeroed() });

    /// Wakeup (or preemption) timestamp per pid, consumed when the task gets a CPU. Only
    /// written without kernel timestamps.
    #[map]
    static RUNQUEUE_START: HashMap<u32, u64> = HashMap::with_max_entries(RUNQUEUE_START_ENTRIES, 0);

    /// Counters, the run-queue histogram and per-CPU state, in one entry per CPU.
    #[map]
    static SCHED_COUNTERS: PerCpuArray<SchedCounters> = PerCpuArray::with_max_entries(1, 0);

    #[map]
    static SCHED_COST: PerCpuArray<ProbeCost> = PerCpuArray::with_max_entries(COST_SLOTS, 0);

    /// Task states in the low byte of `prev_state`; the classic tracepoint sets bit 8
    /// (TASK_REPORT_MAX) instead when the task was preempted.
    const TASK_STATE_MASK: u64 = 0xff;

    /// SCHED_NORMAL, SCHED_BATCH, SCHED_IDLE: the fair class, which marks
    /// `prev_sum_exec_runtime` each time it picks a task.
    #[inline(always)]
    fn is_fair(policy: u32) -> bool {
        matches!(policy, 0 | 3 | 5)
    }

    #[inline(always)]
    fn enqueue<C: EbpfContext>(ctx: &C, pid: u32, now: u64) {
        if pid == 0 {
            return;
        }
        if RUNQUEUE_START.insert(pid, now, 0).is_err()
            && let Some(c) = SCHED_COUNTERS.get_ptr_mut(0)
        {
            // SAFETY: per-CPU slot.
            unsafe {
                // Log the first loss on each CPU only: the counter carries the rest.
                if (*c).start_map_full == 0 {
                    warn!(
                        ctx,
                        "runqueue start map full: run-queue latency samples are being lost"
                    );
                }
                (*c).start_map_full += 1;
            }
        }
    }

    #[inline(always)]
    fn on_wakeup<C: EbpfContext>(ctx: &C, pid: u32) {
        enqueue(ctx, pid, unsafe { bpf_ktime_get_ns() });
    }

    /// Charges the leaving task's cgroup (`current` is still `prev`) its run time, the wait
    /// it had before it got the CPU, and the switch.
    #[inline(always)]
    fn charge_cgroup(cpu: &mut SchedCounters, ran: u64, waited: u64, prev_runnable: bool) {
        if !cgroup::enabled() {
            return;
        }
        let Some(stats) = cgroup::stats(unsafe { bpf_get_current_cgroup_id() }) else {
            cpu.cgroup_map_full += 1;
            return;
        };
        // SAFETY: the entry lives in the map; fields are updated atomically.
        unsafe {
            if ran != 0 {
                cgroup::add(&raw mut (*stats).cpu_ns, ran);
            }
            if waited != 0 {
                cgroup::add(&raw mut (*stats).runqueue_wait_ns, waited);
            }
            if prev_runnable {
                cgroup::add(&raw mut (*stats).involuntary_switches, 1);
            } else {
                cgroup::add(&raw mut (*stats).voluntary_switches, 1);
            }
        }
    }

    #[inline(always)]
    fn count_switch(cpu: &mut SchedCounters, prev_runnable: bool) {
        if prev_runnable {
            cpu.involuntary_switches += 1;
        } else {
            cpu.voluntary_switches += 1;
        }
    }

    /// Wakeup-timestamp mode. Lookups per switch: this CPU's entry, the leaving task's
    /// cgroup, and the arriving task's wait start (plus an insert when the leaving task was
    /// preempted).
    #[inline(always)]
    fn on_switch<C: EbpfContext>(ctx: &C, prev_pid: u32, prev_runnable: bool, next_pid: u32) {
        let now = unsafe { bpf_ktime_get_ns() };
        let Some(cpu) = SCHED_COUNTERS.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: per-CPU slot, only this CPU touches it.
        let cpu = unsafe { &mut *cpu };
        count_switch(cpu, prev_runnable);
        let ran_since = cpu.last_switch_ns;
        let waited = cpu.pending_wait_ns;
        cpu.last_switch_ns = now;
        cpu.pending_wait_ns = 0;

        // The idle task's time is idle, not any cgroup's CPU time.
        if prev_pid != 0 {
            let ran = if ran_since != 0 {
                now.saturating_sub(ran_since)
            } else {
                0
            };
            charge_cgroup(cpu, ran, waited, prev_runnable);
            if prev_runnable {
                enqueue(ctx, prev_pid, now);
            }
        }
        if next_pid == 0 {
            return;
        }
        // SAFETY: the value is copied out before the entry is removed.
        let Some(start) = (unsafe { RUNQUEUE_START.get(next_pid) }).copied() else {
            return;
        };
        let _ = RUNQUEUE_START.remove(next_pid);
        let waited = now.saturating_sub(start);
        cpu.runqueue_latency.add(waited);
        cpu.pending_wait_ns = waited;
    }

    /// Kernel-timestamp mode: no helper but the cgroup id, one map update per switch.
    #[inline(always)]
    fn on_switch_kernel_timestamps(
        layout: &SchedLayout,
        prev: *const u8,
        prev_pid: u32,
        prev_runnable: bool,
        next: *const u8,
    ) {
        let Some(cpu) = SCHED_COUNTERS.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: per-CPU slot, only this CPU touches it.
        let cpu = unsafe { &mut *cpu };
        count_switch(cpu, prev_runnable);
        // Direct loads through BTF-typed pointers (kernel::btf_load); a NULL on the way
        // reads as 0, and a zero clock records nothing.
        let now = unsafe {
            let cfs_rq: *const u8 = kernel::btf_load(prev, layout.task_cfs_rq);
            let rq: *const u8 = kernel::btf_load(cfs_rq, layout.cfs_rq_rq);
            kernel::btf_load::<u64>(rq, layout.rq_clock)
        };
        let ran_since = cpu.last_switch_ns;
        let waited = cpu.pending_wait_ns;
        cpu.last_switch_ns = now;
        cpu.pending_wait_ns = 0;
        if prev_pid != 0 {
            let policy = unsafe { kernel::btf_load::<u32>(prev, layout.task_policy) };
            let ran = if is_fair(policy) {
                let sum = unsafe { kernel::btf_load::<u64>(prev, layout.task_sum_exec) };
                let mark = unsafe { kernel::btf_load::<u64>(prev, layout.task_prev_sum_exec) };
                sum.saturating_sub(mark)
            } else if ran_since != 0 {
                now.saturating_sub(ran_since)
            } else {
                0
            };
            charge_cgroup(cpu, ran, waited, prev_runnable);
        }
        let next_pid = unsafe { kernel::btf_load::<u32>(next, layout.task_pid) };
        if next_pid == 0 || now == 0 {
            return;
        }
        let queued = unsafe { kernel::btf_load::<u64>(next, layout.task_last_queued) };
        if queued == 0 || queued > now {
            return;
        }
        let waited = now - queued;
        cpu.runqueue_latency.add(waited);
        cpu.pending_wait_ns = waited;
    }

    // ---- BTF tracepoints -------------------------------------------------------------------

    #[btf_tracepoint(function = "sched_wakeup")]
    pub fn sched_wakeup_btf(ctx: BtfTracePointContext) -> u32 {
        let t = cost::start(&SCHED_COST, COST_WAKEUP);
        let pid = unsafe { kernel::btf_load::<u32>(ctx.arg(0), SCHED_LAYOUT.load().task_pid) };
        on_wakeup(&ctx, pid);
        t.stop();
        0
    }

    #[btf_tracepoint(function = "sched_wakeup_new")]
    pub fn sched_wakeup_new_btf(ctx: BtfTracePointContext) -> u32 {
        let t = cost::start(&SCHED_COST, COST_WAKEUP_NEW);
        let pid = unsafe { kernel::btf_load::<u32>(ctx.arg(0), SCHED_LAYOUT.load().task_pid) };
        on_wakeup(&ctx, pid);
        t.stop();
        0
    }

    #[btf_tracepoint(function = "sched_switch")]
    pub fn sched_switch_btf(ctx: BtfTracePointContext) -> u32 {
        let t = cost::start(&SCHED_COST, COST_SWITCH);
        // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, ...):
        // the first three arguments are the same on every kernel since tp_btf exists.
        let preempt: u64 = ctx.arg(0);
        let prev: *const u8 = ctx.arg(1);
        let next: *const u8 = ctx.arg(2);
        let layout = SCHED_LAYOUT.load();
        // Direct loads through the BTF-typed arguments (see kernel::btf_load): no helper
        // calls on the hottest path.
        let state: u64 = if layout.task_state_size == 8 {
            unsafe { kernel::btf_load::<u64>(prev, layout.task_state) }
        } else {
            u64::from(unsafe { kernel::btf_load::<u32>(prev, layout.task_state) })
        };
        // Matches the kernel's own nvcsw/nivcsw split in __schedule().
        let prev_runnable = (preempt & 1) != 0 || (state & TASK_STATE_MASK) == 0;
        // prev is still `current` here.
        let prev_pid = bpf_get_current_pid_tgid() as u32;
        if layout.kernel_timestamps != 0 {
            on_switch_kernel_timestamps(&layout, prev, prev_pid, prev_runnable, next);
        } else {
            let next_pid = unsafe { kernel::btf_load::<u32>(next, layout.task_pid) };
            on_switch(&ctx, prev_pid, prev_runnable, next_pid);
        }
        t.stop();
        0
    }

    // ---- classic tracepoints (fallback: need tracefs) -----------------------------------

    #[tracepoint]
    pub fn sched_wakeup_tp(ctx: TracePointContext) -> u32 {
        let t = cost::start(&SCHED_COST, COST_WAKEUP);
        let offset = SCHED_LAYOUT.load().tp_wakeup_pid as usize;
        if let Ok(pid) = unsafe { ctx.read_at::<u32>(offset) } {
            on_wakeup(&ctx, pid);
        }
        t.stop();
        0
    }

    #[tracepoint]
    pub fn sched_wakeup_new_tp(ctx: TracePointContext) -> u32 {
        let t = cost::start(&SCHED_COST, COST_WAKEUP_NEW);
        let offset = SCHED_LAYOUT.load().tp_wakeup_pid as usize;
        if let Ok(pid) = unsafe { ctx.read_at::<u32>(offset) } {
            on_wakeup(&ctx, pid);
        }
        t.stop();
        0
    }

    #[tracepoint]
    pub fn sched_switch_tp(ctx: TracePointContext) -> u32 {
        let t = cost::start(&SCHED_COST, COST_SWITCH);
        let _ = unsafe { try_sched_switch_tp(&ctx) };
        t.stop();
        0
    }

    unsafe fn try_sched_switch_tp(ctx: &TracePointContext) -> Result<(), i32> {
        let layout = SCHED_LAYOUT.load();
        let state: u64 = if layout.tp_switch_prev_state_size == 8 {
            unsafe { ctx.read_at::<u64>(layout.tp_switch_prev_state as usize)? }
        } else {
            u64::from(unsafe { ctx.read_at::<u32>(layout.tp_switch_prev_state as usize)? })
        };
        let prev_pid = unsafe { ctx.read_at::<u32>(layout.tp_switch_prev_pid as usize)? };
        let next_pid = unsafe { ctx.read_at::<u32>(layout.tp_switch_next_pid as usize)? };
        on_switch(ctx, prev_pid, (state & TASK_STATE_MASK) == 0, next_pid);
        Ok(())
    }
}
