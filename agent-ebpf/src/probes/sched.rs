//! Scheduler: run-queue latency (runqlat semantics), context switches, and each cgroup's
//! CPU time, run-queue wait and switches.
//!
//! Two ways to know how long a task waited for a CPU:
//! - Kernel timestamps (tp_btf, when the kernel's BTF has the fields): the scheduler keeps
//!   them itself. When `sched_switch` fires, `next->sched_info.last_queued` still holds when
//!   `next` was put on the run queue (woken, or preempted while runnable), in the run
//!   queue's clock, and `rq->clock` was just updated; `sched_info_arrive` clears it only
//!   after the tracepoint. So one program on `sched_switch` does all the work, with no
//!   wakeup programs and no pid-keyed map.
//! - Wakeup programs (classic tracepoints, or a kernel without those fields): wakeups and
//!   preemptions store a timestamp per pid, and `sched_switch` takes it back (runqlat).
//!
//! CPU time per cgroup, and why it adds up to what `cpu.stat`'s `usage_usec` adds up: the
//! kernel charges a task's CPU time (`update_curr`, for every scheduling class) as
//! `rq->clock_task` minus the task's `exec_start`, and sets `exec_start` to `clock_task`
//! when the task gets the CPU, so its `sum_exec_runtime` grows by exactly what it is
//! charged while it has a CPU. With tp_btf the program keeps the arriving task's
//! `sum_exec_runtime` per CPU at each switch and, at the next one, charges what the
//! leaving task's grew by to its cgroup (`current` is still `prev`). Without a task pointer
//! (classic tracepoints) it keeps `clock_task` instead and charges the clock's difference:
//! the same, except that a CPU about to go idle balances after the leaving task's last
//! update (`sched_balance_newidle`, with the run queue unlocked) and moves the clock on,
//! which the difference also counts (µs, and once 25 ms under the matrix's emulated CPUs).
//! That holds for every kind of switch:
//! - blocking (voluntary) and preemption (involuntary): `prev` is charged its stretch;
//! - a task's last switch (`TASK_DEAD`, after `do_exit`): charged like any other, to the
//!   cgroup it ran in (`cgroup_exit` unlinks the task but keeps its `css_set` until it is
//!   freed). An earlier version charged `sum_exec_runtime - prev_sum_exec_runtime`, but
//!   `do_exit` moves the task's scheduling group (`sched_autogroup_exit_task`), which resets
//!   `prev_sum_exec_runtime`: a task's last stretch was lost, all of its run time when it
//!   had never switched out (a busy loop alone on its CPU);
//! - the same task picked again (its slice ended, nothing else runnable): no tracepoint,
//!   and none is needed, since the stretch simply goes on;
//! - the idle task (pid 0): never charged; its stretch is idle time.
//!
//! What is kept per CPU belongs to the task that arrived at the last switch the program
//! saw, so each switch first checks that `prev` is that task. The kernel does not always
//! fire `sched_switch`: on the development VMs, a switch away from the guest agent's own
//! threads has none (ftrace shows the same gaps), and a patched or future kernel may hide
//! others. A `prev` that arrived unseen is never charged the stretch and wait of the task
//! that left unseen (charging them to whoever switched out next put seconds of one task's
//! wait on another cgroup). Its own wait for that arrival is lost, and the switch counted
//! (`nodelens_events_lost_total{reason="sched_switch_unseen"}`). Its run time is exact
//! when it is the task that left this CPU at the last seen switch and got a CPU once since
//! (its `sum_exec_runtime` gained exactly this stretch); otherwise it is the run queue's
//! clock since the kernel's note of its arrival (`sched_info.last_arrival`), which also
//! counts interrupt and steal time.
//!
//! `clock_task` leaves out interrupt and steal time, as `cpu.stat` does. Kernels whose BTF
//! lacks those fields (or no BTF at all) fall back to `bpf_ktime_get_ns`, which counts the
//! interrupts that hit a running task as its time.
//!
//! The idle task (pid 0) is never recorded. Per-cgroup accounting costs one map update per
//! switch: when a task leaves a CPU, its cgroup is charged its run time and the wait it had
//! before getting the CPU, kept per CPU until then.
use crate::probes::histogram::{Log2Histogram, NativeHistogram};

/// Size of the map of wakeup timestamps, keyed by pid (as runqlat sizes it).
pub const RUNQUEUE_START_ENTRIES: u32 = 10240;

/// Tasks that can be blocked in uninterruptible sleep at once and still be measured, where
/// the starts are kept in a hash (`BLOCKED_START`, the object for kernels without safe task
/// storage): a node with more has bigger problems, and each loss is counted.
pub const BLOCKED_START_ENTRIES: u32 = 16384;

/// When a task went to sleep uninterruptibly, and whether it was waiting for I/O.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockStart {
    /// The run queue's clock when it left the CPU.
    pub at: u64,
    /// 1: `in_iowait` was set (it slept in `io_schedule`).
    pub io: u64,
    /// Its `sched_info.pcount` then: the same task gets its next CPU with the same count
    /// (the kernel adds one after the tracepoint), so a start left by an unseen switch, or
    /// by a task whose address a new one took, is never charged to a later arrival.
    pub arrivals: u64,
    /// Its `sched_info.run_delay` then: what it grows by until the task gets a CPU is a
    /// queue wait that ended without running (woken onto one CPU, moved to another), which
    /// is not blocked time.
    pub run_delay: u64,
}

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
    /// The run clock at this CPU's last switch: `rq->clock_task` where the layout has it
    /// (see the module doc), else `bpf_ktime_get_ns`. The task leaving at the next switch
    /// has run for the difference, where its `sum_exec_runtime` at arrival is not known
    /// (`arrived_sum_exec_known`). Per-CPU state rather than a counter; 0 until the first
    /// switch is seen.
    pub last_switch_run_clock: u64,
    /// How long the task now on this CPU waited for it. Charged to that task's cgroup when
    /// it leaves the CPU, together with its run time, in the same map update.
    pub pending_wait_ns: u64,
    /// That wait's slot in its cgroup's native histogram (`histogram::pod_native_slot`),
    /// placed when it was recorded here.
    pub pending_wait_slot: u64,
    /// Which task arrived at this CPU's last switch (its `task_struct` address with tp_btf,
    /// `1 << 32 | pid` with classic tracepoints; 0 before the first): the one the two
    /// fields above belong to.
    pub arrived_task: u64,
    /// That task's `sum_exec_runtime` when it arrived, where the program can read it
    /// (tp_btf; `arrived_sum_exec_known` 1): what it ran is then what the total gained,
    /// the kernel's own figure. The clock difference from the switch that brought it
    /// would also count a newly idle CPU's balancing after its last update, which runs
    /// with the run queue unlocked and moves its clock on (25 ms once, under emulated CPUs).
    pub arrived_sum_exec: u64,
    pub arrived_sum_exec_known: u64,
    /// Which task left at that switch, and its `sum_exec_runtime` and `sched_info.pcount`
    /// then: what a task that comes back without a tracepoint is charged from.
    pub departed_task: u64,
    pub departed_sum_exec: u64,
    pub departed_arrivals: u64,
    /// Switches whose `prev` was not `arrived_task`: the kernel switched without the
    /// tracepoint in between (see the module doc).
    pub switch_unseen: u64,
    /// Time tasks spent blocked in uninterruptible sleep until woken: waiting for I/O
    /// (`in_iowait`), and for anything else. Counted when the task gets a CPU again.
    pub blocked_io_ns: u64,
    pub blocked_other_ns: u64,
    /// A blocked task's start could not be stored (`BLOCKED_START` full, or no task storage
    /// slot): that task's blocked time is lost.
    pub blocked_start_full: u64,
    /// Run-queue latency of every task this CPU switched in.
    pub runqueue_latency: Log2Histogram,
    /// The same latencies in native-histogram buckets (protobuf scrapes).
    pub runqueue_native: NativeHistogram,
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
    /// 1: `task_cfs_rq`, `cfs_rq_rq` and `rq_clock_task` are set, and run time is measured
    /// with the kernel's own totals (tp_btf) or the run queue's task clock (see the module
    /// doc); 0: with `bpf_ktime_get_ns`.
    pub task_clock: u32,
    /// `rq.clock_task`: the clock the kernel charges run time with.
    pub rq_clock_task: u32,
    /// `task_struct.se.sum_exec_runtime` and `task_struct.sched_info.pcount`: a task's
    /// totals, read at every tp_btf switch (what a task ran is what its total grew by),
    /// and for a task whose arrival no tracepoint showed (see `leaving`). Set with
    /// `task_clock`.
    pub task_sum_exec: u32,
    pub task_pcount: u32,
    /// `task_struct.sched_info.last_arrival`, in the run queue's clock: when a task that
    /// arrived unseen got the CPU (tp_btf).
    pub task_last_arrival: u32,
    pub _pad: u32,
    /// `sched_wakeup` / `sched_wakeup_new` format: offset of `pid`.
    pub tp_wakeup_pid: u32,
    /// `sched_switch` format: offsets of `prev_pid`, `prev_state`, `next_pid`.
    pub tp_switch_prev_pid: u32,
    pub tp_switch_prev_state: u32,
    /// Size of `prev_state` in the format file (`long`: 8 on 64-bit kernels).
    pub tp_switch_prev_state_size: u32,
    pub tp_switch_next_pid: u32,
    /// 1: blocked time is measured (kernel timestamps, and the two flags below found).
    pub blocked: u32,
    /// `task_struct.in_iowait`: a one-bit field, at this byte and bit (little-endian).
    pub task_in_iowait: u32,
    pub task_in_iowait_bit: u32,
    /// `task_struct.sched_contributes_to_load`, set when a task last left its CPU in an
    /// uninterruptible sleep: only such an arriving task's blocked start is looked up.
    pub task_load_flag: u32,
    pub task_load_flag_bit: u32,
    /// `task_struct.sched_info.run_delay` (see `BlockStart::run_delay`).
    pub task_run_delay: u32,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id`: the cgroup
    /// of a task that is not `current`, which a blocked task's time is charged to when it
    /// gets its CPU back.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
}

/// Name of the global holding [`SchedLayout`] in the eBPF object.
pub const SCHED_LAYOUT_GLOBAL: &str = "SCHED_LAYOUT";

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] structs of u64/u32 fields without implicit padding.
    unsafe impl aya::Pod for super::SchedCounters {}
    unsafe impl aya::Pod for super::SchedLayout {}
    unsafe impl aya::Pod for super::BlockStart {}
}

/// The names of this family's maps and programs in the object, shared with user space
/// (`take_map`, `ProbeSpec`): each is the identifier of a static or a function in
/// `programs`, and the agent's unit tests check every one against the built object.
pub mod names {
    pub const RUNQUEUE_START: &str = "RUNQUEUE_START";
    /// The blocked starts: a hash in `agent-ebpf`, task storage in `agent-ebpf-task-storage`
    /// (each object has one of the two).
    pub const BLOCKED_START: &str = "BLOCKED_START";
    pub const BLOCKED_START_TASK: &str = "BLOCKED_START_TASK";
    pub const SCHED_COUNTERS: &str = "SCHED_COUNTERS";
    pub const SCHED_COST: &str = "SCHED_COST";
    pub const SCHED_WAKEUP_BTF: &str = "sched_wakeup_btf";
    pub const SCHED_WAKEUP_NEW_BTF: &str = "sched_wakeup_new_btf";
    pub const SCHED_SWITCH_BTF: &str = "sched_switch_btf";
    pub const SCHED_WAKEUP_TP: &str = "sched_wakeup_tp";
    pub const SCHED_WAKEUP_NEW_TP: &str = "sched_wakeup_new_tp";
    pub const SCHED_SWITCH_TP: &str = "sched_switch_tp";
    /// Every map of the family that both objects have.
    pub const MAPS: &[&str] = &[RUNQUEUE_START, SCHED_COUNTERS, SCHED_COST];
}

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        EbpfContext, Global,
        helpers::{
            bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
            bpf_ktime_get_ns,
        },
        macros::{btf_tracepoint, map, tracepoint},
        maps::{HashMap, PerCpuArray},
        programs::{BtfTracePointContext, TracePointContext},
    };
    use aya_log_ebpf::warn;

    use super::{
        BlockStart, COST_SLOTS, COST_SWITCH, COST_WAKEUP, COST_WAKEUP_NEW, RUNQUEUE_START_ENTRIES,
        SchedCounters, SchedLayout,
    };
    // Where blocked starts are kept: each object's root picks the store (`src/blocked_starts/`).
    use crate::blocked_starts;
    use crate::probes::{
        cgroup::programs as cgroup,
        cost::{ProbeCost, programs as cost},
        histogram::{native_entry, pod_native_slot},
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
    /// `TASK_UNINTERRUPTIBLE`, and `TASK_NOLOAD`, which kernel threads that wait for work
    /// add to it (`TASK_IDLE`): such a wait is idleness, not a blocked task (the kernel
    /// leaves it out of the load average for the same reason).
    const TASK_UNINTERRUPTIBLE: u64 = 0x2;
    const TASK_NOLOAD: u64 = 0x400;

    /// `current`'s totals, for the classic tracepoint: two reads, where the layout has the
    /// offsets; else zeros.
    #[inline(always)]
    fn current_totals(layout: &SchedLayout) -> Totals {
        if layout.task_clock == 0 {
            return Totals {
                sum_exec: 0,
                arrivals: 0,
            };
        }
        let task = unsafe { bpf_get_current_task() } as *const u8;
        // SAFETY: bpf_probe_read_kernel checks every address.
        unsafe {
            Totals {
                sum_exec: kernel::read_u64(task, layout.task_sum_exec).unwrap_or(0),
                arrivals: kernel::read_u64(task, layout.task_pcount).unwrap_or(0),
            }
        }
    }

    /// How long `current` has run since the kernel's note of its arrival, in the run queue's
    /// clock, for the classic tracepoint: four reads; 0 without the offsets.
    #[inline(always)]
    fn current_since_arrival(layout: &SchedLayout) -> u64 {
        if layout.task_clock == 0 {
            return 0;
        }
        let task = unsafe { bpf_get_current_task() } as *const u8;
        // SAFETY: bpf_probe_read_kernel checks every address.
        let read = unsafe {
            kernel::read_ptr(task, layout.task_cfs_rq)
                .and_then(|cfs_rq| kernel::read_ptr(cfs_rq, layout.cfs_rq_rq))
                .and_then(|rq| kernel::read_u64(rq, layout.rq_clock))
                .and_then(|now| Ok((now, kernel::read_u64(task, layout.task_last_arrival)?)))
        };
        read.map_or(0, |(now, arrived)| ran_since(now, arrived))
    }

    /// `now - arrived` in the run queue's clock, 0 for an unknown arrival.
    #[inline(always)]
    fn ran_since(now: u64, arrived: u64) -> u64 {
        if arrived != 0 && now > arrived {
            now - arrived
        } else {
            0
        }
    }

    /// A task's totals through its BTF-typed pointer (tp_btf).
    #[inline(always)]
    fn task_totals(layout: &SchedLayout, task: *const u8) -> Totals {
        if layout.task_clock == 0 {
            return Totals {
                sum_exec: 0,
                arrivals: 0,
            };
        }
        // SAFETY: direct loads through a BTF-typed pointer.
        unsafe {
            Totals {
                sum_exec: kernel::btf_load::<u64>(task, layout.task_sum_exec),
                arrivals: kernel::btf_load::<u64>(task, layout.task_pcount),
            }
        }
    }

    /// The run clock of the CPU running `current`, for the classic tracepoint, which has no
    /// task pointer: `current->se.cfs_rq->rq->clock_task` with three reads, where the
    /// layout has the offsets; else `bpf_ktime_get_ns`.
    #[inline(always)]
    fn current_run_clock(layout: &SchedLayout) -> u64 {
        if layout.task_clock != 0 {
            let task = unsafe { bpf_get_current_task() } as *const u8;
            // SAFETY: bpf_probe_read_kernel checks every address.
            let clock = unsafe {
                kernel::read_ptr(task, layout.task_cfs_rq)
                    .and_then(|cfs_rq| kernel::read_ptr(cfs_rq, layout.cfs_rq_rq))
                    .and_then(|rq| kernel::read_u64(rq, layout.rq_clock_task))
            };
            if let Ok(clock) = clock {
                return clock;
            }
        }
        unsafe { bpf_ktime_get_ns() }
    }

    /// `prev` as the kernel counts it when it leaves: its `sum_exec_runtime` and how many
    /// times it got a CPU (`sched_info.pcount`); zeros where the layout cannot say.
    #[derive(Clone, Copy)]
    struct Totals {
        sum_exec: u64,
        arrivals: u64,
    }

    /// What `prev` is charged at this switch: the run time of the stretch that ends here and
    /// the wait before it. Keeps the run clock, the arriving task and the leaving one's
    /// totals for the next switch.
    ///
    /// When `prev` is not the task whose arrival this CPU saw last (counted), its wait is
    /// lost, and its run time is known only when it is the task that left at that switch
    /// and got a CPU exactly once since (here): then it is what its own total gained. This
    /// is the common case on the development VMs, where a switch away from the guest
    /// agent's threads has no tracepoint. Otherwise `None`.
    #[inline(always)]
    fn leaving(
        cpu: &mut SchedCounters,
        prev: u64,
        prev_totals: Totals,
        next: u64,
        next_sum_exec: Option<u64>,
        run_clock: u64,
    ) -> Option<Charge> {
        let since = cpu.last_switch_run_clock;
        let waited = cpu.pending_wait_ns;
        let wait_slot = cpu.pending_wait_slot;
        let arrived = cpu.arrived_task;
        let arrived_sum = (cpu.arrived_sum_exec_known != 0).then_some(cpu.arrived_sum_exec);
        let (departed, departed_sum, departed_arrivals) = (
            cpu.departed_task,
            cpu.departed_sum_exec,
            cpu.departed_arrivals,
        );
        cpu.last_switch_run_clock = run_clock;
        cpu.pending_wait_ns = 0;
        cpu.arrived_task = next;
        cpu.arrived_sum_exec = next_sum_exec.unwrap_or(0);
        cpu.arrived_sum_exec_known = u64::from(next_sum_exec.is_some());
        cpu.departed_task = prev;
        cpu.departed_sum_exec = prev_totals.sum_exec;
        cpu.departed_arrivals = prev_totals.arrivals;
        if arrived == prev {
            let ran = match arrived_sum {
                Some(arrived_sum) => prev_totals.sum_exec.saturating_sub(arrived_sum),
                None if since != 0 && run_clock != 0 => run_clock.saturating_sub(since),
                None => 0,
            };
            return Some(Charge {
                ran,
                waited,
                wait_slot,
            });
        }
        // 0 before this CPU's first switch: the start, not a gap.
        if arrived != 0 {
            cpu.switch_unseen += 1;
        }
        (prev == departed && departed_sum != 0 && prev_totals.arrivals == departed_arrivals + 1)
            .then(|| Charge::ran(prev_totals.sum_exec.saturating_sub(departed_sum)))
    }

    /// What a leaving task's cgroup is charged (see [`leaving`]).
    #[derive(Clone, Copy)]
    struct Charge {
        ran: u64,
        waited: u64,
        /// `waited`'s slot in the cgroup's native histogram.
        wait_slot: u64,
    }

    impl Charge {
        /// Run time only: the task's wait was not seen.
        #[inline(always)]
        fn ran(ran: u64) -> Self {
            Charge {
                ran,
                waited: 0,
                wait_slot: 0,
            }
        }
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
    fn charge_cgroup(cpu: &mut SchedCounters, charge: Charge, prev_runnable: bool) {
        let Charge {
            ran,
            waited,
            wait_slot,
        } = charge;
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
                cgroup::count_native(
                    &raw mut (*stats).runqueue_wait_zero,
                    &raw mut (*stats).runqueue_wait_buckets,
                    wait_slot,
                );
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

    /// A task's identity in `arrived_task` when only its pid is known.
    #[inline(always)]
    fn classic_identity(pid: u32) -> u64 {
        (1 << 32) | u64::from(pid)
    }

    /// Wakeup-timestamp mode. Lookups per switch: this CPU's entry, the leaving task's
    /// cgroup, and the arriving task's wait start (plus an insert when the leaving task was
    /// preempted). `run_clock` is the CPU's run clock now and `prev_totals` what the kernel
    /// counts of `prev` (see [`leaving`]); `since_arrival` says how long `prev` has run
    /// since the kernel's note of its arrival, for a `prev` that arrived unseen.
    #[inline(always)]
    fn on_switch<C: EbpfContext>(
        ctx: &C,
        prev_pid: u32,
        prev_runnable: bool,
        next_pid: u32,
        run_clock: u64,
        prev_totals: Totals,
        since_arrival: impl FnOnce() -> u64,
    ) {
        let now = unsafe { bpf_ktime_get_ns() };
        let Some(cpu) = SCHED_COUNTERS.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: per-CPU slot, only this CPU touches it.
        let cpu = unsafe { &mut *cpu };
        count_switch(cpu, prev_runnable);
        let charge = leaving(
            cpu,
            classic_identity(prev_pid),
            prev_totals,
            classic_identity(next_pid),
            // Classic tracepoints have no pointer to `next`, and tp_btf comes here only
            // without the kernel timestamps: the clock it is.
            None,
            run_clock,
        );

        // The idle task's time is idle, not any cgroup's CPU time.
        if prev_pid != 0 {
            let charge = charge.unwrap_or_else(|| Charge::ran(since_arrival()));
            charge_cgroup(cpu, charge, prev_runnable);
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
        let entry = native_entry(waited);
        cpu.runqueue_native.add_at(entry);
        cpu.pending_wait_ns = waited;
        cpu.pending_wait_slot = pod_native_slot(entry);
    }

    /// Kernel-timestamp mode: no helper but the cgroup id, one map update per switch; a
    /// task that gets its CPU back from an uninterruptible sleep costs a lookup in
    /// the blocked starts (`blocked_starts::take`), four helper reads for its cgroup and a
    /// second update (`blocked_end`).
    #[inline(always)]
    fn on_switch_kernel_timestamps(
        layout: &SchedLayout,
        prev: *const u8,
        prev_pid: u32,
        prev_state: u64,
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
        let (now, run_clock) = unsafe {
            let cfs_rq: *const u8 = kernel::btf_load(prev, layout.task_cfs_rq);
            let rq: *const u8 = kernel::btf_load(cfs_rq, layout.cfs_rq_rq);
            (
                kernel::btf_load::<u64>(rq, layout.rq_clock),
                kernel::btf_load::<u64>(rq, layout.rq_clock_task),
            )
        };
        let charge = leaving(
            cpu,
            prev as u64,
            task_totals(layout, prev),
            next as u64,
            // SAFETY: a direct load through the BTF-typed `next`.
            (layout.task_clock != 0)
                .then(|| unsafe { kernel::btf_load::<u64>(next, layout.task_sum_exec) }),
            run_clock,
        );
        if prev_pid != 0 {
            let charge = charge.unwrap_or_else(|| {
                // Arrived unseen from elsewhere: since the kernel's note of its arrival, in
                // the run queue's clock (which also counts interrupts and steal time).
                // SAFETY: a direct load through the BTF-typed `prev`.
                let arrived = unsafe { kernel::btf_load::<u64>(prev, layout.task_last_arrival) };
                Charge::ran(ran_since(now, arrived))
            });
            charge_cgroup(cpu, charge, prev_runnable);
            if layout.blocked != 0
                && !prev_runnable
                && prev_state & (TASK_UNINTERRUPTIBLE | TASK_NOLOAD) == TASK_UNINTERRUPTIBLE
                && now != 0
            {
                blocked_start(cpu, layout, prev, now);
            }
        }
        let next_pid = unsafe { kernel::btf_load::<u32>(next, layout.task_pid) };
        if next_pid == 0 || now == 0 {
            return;
        }
        // `next` last left a CPU in an uninterruptible sleep: its start is taken out here
        // whatever follows, and charged below when its wakeup time is known.
        let slept = layout.blocked != 0
            && task_flag(next, layout.task_load_flag, layout.task_load_flag_bit);
        let queued = unsafe { kernel::btf_load::<u64>(next, layout.task_last_queued) };
        if queued == 0 || queued > now {
            if slept {
                let _ = blocked_starts::take(next);
            }
            return;
        }
        let waited = now - queued;
        cpu.runqueue_latency.add(waited);
        let entry = native_entry(waited);
        cpu.runqueue_native.add_at(entry);
        cpu.pending_wait_ns = waited;
        cpu.pending_wait_slot = pod_native_slot(entry);
        if slept {
            blocked_end(cpu, layout, next, queued);
        }
    }

    /// A one-bit field of a task, through its BTF-typed pointer.
    #[inline(always)]
    fn task_flag(task: *const u8, byte: u32, bit: u32) -> bool {
        // SAFETY: a direct load through a BTF-typed pointer.
        let b = unsafe { kernel::btf_load::<u8>(task, byte) };
        (b >> (bit & 7)) & 1 != 0
    }

    /// `prev` leaves its CPU in an uninterruptible sleep at `now`: keep when, and whether
    /// it waits for I/O.
    #[inline(always)]
    fn blocked_start(cpu: &mut SchedCounters, layout: &SchedLayout, prev: *const u8, now: u64) {
        let start = BlockStart {
            at: now,
            io: u64::from(task_flag(
                prev,
                layout.task_in_iowait,
                layout.task_in_iowait_bit,
            )),
            // SAFETY: direct loads through a BTF-typed pointer.
            arrivals: unsafe { kernel::btf_load::<u64>(prev, layout.task_pcount) },
            run_delay: unsafe { kernel::btf_load::<u64>(prev, layout.task_run_delay) },
        };
        if !blocked_starts::keep(prev, &start) {
            cpu.blocked_start_full += 1;
        }
    }

    /// `next`, which last left a CPU in an uninterruptible sleep, gets one; it was woken
    /// (put on a run queue) at `queued`, which ends its blocked time. The time is charged to
    /// its cgroup here, not when it next leaves with its run time: that charge needs this
    /// CPU to see the task leave, and a switch it does not see (more of them under load)
    /// would lose the whole wait.
    #[inline(always)]
    fn blocked_end(cpu: &mut SchedCounters, layout: &SchedLayout, next: *const u8, queued: u64) {
        let Some(start) = blocked_starts::take(next) else {
            return;
        };
        // SAFETY: direct loads through a BTF-typed pointer.
        let (arrivals, run_delay) = unsafe {
            (
                kernel::btf_load::<u64>(next, layout.task_pcount),
                kernel::btf_load::<u64>(next, layout.task_run_delay),
            )
        };
        if arrivals != start.arrivals || queued <= start.at {
            return;
        }
        // A queue wait that ended without a CPU (moved to this CPU's queue before it ran)
        // is in run_delay by now, and `queued` is the second queueing: not blocked time.
        let queued_elsewhere = run_delay.saturating_sub(start.run_delay);
        let blocked = (queued - start.at).saturating_sub(queued_elsewhere);
        if blocked == 0 {
            return;
        }
        if start.io != 0 {
            cpu.blocked_io_ns += blocked;
        } else {
            cpu.blocked_other_ns += blocked;
        }
        if !cgroup::enabled() {
            return;
        }
        // SAFETY: bpf_probe_read_kernel checks every address.
        let Ok(id) = (unsafe { task_cgroup_id(next, layout) }) else {
            return;
        };
        let Some(stats) = cgroup::stats(id) else {
            cpu.cgroup_map_full += 1;
            return;
        };
        // SAFETY: the entry lives in the map; fields are updated atomically.
        unsafe {
            if start.io != 0 {
                cgroup::add(&raw mut (*stats).blocked_io_ns, blocked);
            } else {
                cgroup::add(&raw mut (*stats).blocked_other_ns, blocked);
            }
            if cgroup::blocked_histogram() {
                cgroup::count_native(
                    &raw mut (*stats).blocked_zero,
                    &raw mut (*stats).blocked_buckets,
                    pod_native_slot(native_entry(blocked)),
                );
            }
        }
    }

    /// task->cgroups->dfl_cgrp->kn->id: the cgroup v2 id of a task that is not `current`.
    /// Helper reads rather than direct loads: `cgroups` is an RCU pointer, which verifiers
    /// of different kernels type differently, and this runs only once per blocked wait.
    #[inline(always)]
    unsafe fn task_cgroup_id(task: *const u8, l: &SchedLayout) -> Result<u64, i32> {
        let css_set = unsafe { kernel::read_ptr(task, l.task_cgroups)? };
        let cgroup = unsafe { kernel::read_ptr(css_set, l.css_set_dfl_cgrp)? };
        let kn = unsafe { kernel::read_ptr(cgroup, l.cgroup_kn)? };
        unsafe { kernel::read_u64(kn, l.kernfs_node_id) }
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
            on_switch_kernel_timestamps(&layout, prev, prev_pid, state, prev_runnable, next);
        } else {
            let next_pid = unsafe { kernel::btf_load::<u32>(next, layout.task_pid) };
            let run_clock = if layout.task_clock != 0 {
                unsafe {
                    let cfs_rq: *const u8 = kernel::btf_load(prev, layout.task_cfs_rq);
                    let rq: *const u8 = kernel::btf_load(cfs_rq, layout.cfs_rq_rq);
                    kernel::btf_load::<u64>(rq, layout.rq_clock_task)
                }
            } else {
                unsafe { bpf_ktime_get_ns() }
            };
            on_switch(
                &ctx,
                prev_pid,
                prev_runnable,
                next_pid,
                run_clock,
                task_totals(&layout, prev),
                || {
                    if layout.task_clock == 0 {
                        return 0;
                    }
                    // SAFETY: direct loads through the BTF-typed `prev`.
                    unsafe {
                        let cfs_rq: *const u8 = kernel::btf_load(prev, layout.task_cfs_rq);
                        let rq: *const u8 = kernel::btf_load(cfs_rq, layout.cfs_rq_rq);
                        let now = kernel::btf_load::<u64>(rq, layout.rq_clock);
                        let arrived = kernel::btf_load::<u64>(prev, layout.task_last_arrival);
                        ran_since(now, arrived)
                    }
                },
            );
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
        let run_clock = current_run_clock(&layout);
        on_switch(
            ctx,
            prev_pid,
            (state & TASK_STATE_MASK) == 0,
            next_pid,
            run_clock,
            current_totals(&layout),
            || current_since_arrival(&layout),
        );
        Ok(())
    }
}
