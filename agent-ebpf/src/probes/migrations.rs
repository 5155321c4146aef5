//! CPU migrations: each time the scheduler moves a task to another CPU
//! (`sched:sched_migrate_task`, fired by `set_task_cpu`: load balancing, wakeups placed on
//! another CPU, affinity changes). A migrated task loses its warm caches, so a high rate
//! beside run-queue wait says the scheduler is shuffling work rather than running it.
//!
//! One per-CPU counter, and nothing read from the task: the program needs no offsets, so it
//! attaches the same way on every kernel.

/// Slot of `MIGRATIONS_COST`.
pub const COST_MIGRATE: u32 = 0;
pub const COST_SLOTS: u32 = 1;

/// Per CPU: the CPU that fired the tracepoint (the one doing the move, not always the
/// task's old or new CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MigrationCounters {
    pub migrations: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: #[repr(C)] plain u64 data.
    unsafe impl aya::Pod for super::MigrationCounters {}
}

/// The names of this family's maps and programs in the object, shared with user space
/// (`take_map`, `ProbeSpec`): each is the identifier of a static or a function in
/// `programs`, and the agent's unit tests check every one against the built object.
pub mod names {
    pub const MIGRATION_COUNTERS: &str = "MIGRATION_COUNTERS";
    pub const MIGRATIONS_COST: &str = "MIGRATIONS_COST";
    pub const SCHED_MIGRATE_TASK_BTF: &str = "sched_migrate_task_btf";
    pub const SCHED_MIGRATE_TASK_TP: &str = "sched_migrate_task_tp";
    /// Every map of the family.
    pub const MAPS: &[&str] = &[MIGRATION_COUNTERS, MIGRATIONS_COST];
}

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        macros::{btf_tracepoint, map, tracepoint},
        maps::PerCpuArray,
        programs::{BtfTracePointContext, TracePointContext},
    };

    use super::{COST_MIGRATE, COST_SLOTS, MigrationCounters};
    use crate::probes::cost::{ProbeCost, programs as cost};

    #[map]
    static MIGRATION_COUNTERS: PerCpuArray<MigrationCounters> = PerCpuArray::with_max_entries(1, 0);

    #[map]
    static MIGRATIONS_COST: PerCpuArray<ProbeCost> = PerCpuArray::with_max_entries(COST_SLOTS, 0);

    #[inline(always)]
    fn migrated() -> u32 {
        let t = cost::start(&MIGRATIONS_COST, COST_MIGRATE);
        if let Some(c) = MIGRATION_COUNTERS.get_ptr_mut(0) {
            // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
            unsafe { (*c).migrations += 1 };
        }
        t.stop();
        0
    }

    #[btf_tracepoint(function = "sched_migrate_task")]
    pub fn sched_migrate_task_btf(_ctx: BtfTracePointContext) -> u32 {
        migrated()
    }

    #[tracepoint]
    pub fn sched_migrate_task_tp(_ctx: TracePointContext) -> u32 {
        migrated()
    }
}
