//! Migrations family: `nodelens_cpu_migrations_total`, tasks the scheduler moved to another
//! CPU (agent-ebpf's `probes/migrations.rs`), per node. Read beside run-queue wait: many
//! migrations with little wait is the balancer spreading work; many with long waits is
//! work chasing free CPUs.
use agent_ebpf::migrations::{COST_MIGRATE, MigrationCounters, names};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use prometheus_client::encoding::DescriptorEncoder;

use crate::{
    ebpf::family::{
        Attached, ExerciseContext, Family, FamilyLayout, Health, KernelSources, LoadContext,
        LoadedFamily, ProbeCosts, ProbeSpec, Workload, map_error, take_map,
    },
    metrics::{CollectError, counter},
};

pub struct Migrations;

const PROBES: &[ProbeSpec] = &[ProbeSpec {
    name: "sched_migrate_task",
    category: "sched",
    group: "migrations",
    btf_program: names::SCHED_MIGRATE_TASK_BTF,
    tracepoint_program: names::SCHED_MIGRATE_TASK_TP,
    core: false,
}];

const COST_SLOTS: [(&str, u32); 1] = [("sched_migrate_task", COST_MIGRATE)];

/// Times the exercise moves its thread from one CPU to the next.
const EXERCISE_HOPS: usize = 200;

impl Family for Migrations {
    fn name(&self) -> &'static str {
        "migrations"
    }

    fn maps(&self) -> &'static [&'static str] {
        names::MAPS
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        PROBES
    }

    fn layout(&self, kernel: &KernelSources, _ctx: &LoadContext) -> FamilyLayout {
        // The programs read nothing from the kernel: tp_btf works anywhere, the classic
        // tracepoint wherever tracefs is mounted.
        FamilyLayout::new(Vec::new(), Ok(()), kernel.tracefs_mounted(), Vec::new())
    }

    fn exercise(&self, _ctx: &ExerciseContext) -> Vec<Workload> {
        vec![Workload {
            name: "cpu migrations",
            outcome: hop_between_cpus(EXERCISE_HOPS),
            fires: &["sched_migrate_task"],
        }]
    }

    fn take(
        &self,
        ebpf: &mut Ebpf,
        attached: &Attached,
        _ctx: &LoadContext,
    ) -> Result<Box<dyn LoadedFamily>, String> {
        Ok(Box::new(MigrationMaps {
            counters: take_map(ebpf, names::MIGRATION_COUNTERS)?,
            costs: ProbeCosts::new(take_map(ebpf, names::MIGRATIONS_COST)?, &COST_SLOTS),
            up: attached.up("sched_migrate_task"),
        }))
    }
}

struct MigrationMaps {
    counters: PerCpuArray<MapData, MigrationCounters>,
    costs: ProbeCosts,
    up: bool,
}

impl LoadedFamily for MigrationMaps {
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        // Not attached: no series rather than a counter stuck at 0 (probe_up says why).
        if !self.up {
            return Ok(());
        }
        let per_cpu = self
            .counters
            .get(&0, 0)
            .map_err(|e| map_error(names::MIGRATION_COUNTERS, e))?;
        let migrations: u64 = per_cpu.iter().map(|c| c.migrations).sum();
        counter(
            out,
            "nodelens_cpu_migrations_total",
            "Times the scheduler moved a task to another CPU (sched:sched_migrate_task).",
            migrations as f64,
        )?;
        Ok(())
    }

    fn health(&self) -> Health {
        Health {
            maps: Vec::new(),
            lost: Vec::new(),
            costs: self.costs.read(),
        }
    }
}

/// Moves a new thread across the CPUs this process may use, `hops` times, by changing its
/// affinity: each change to another CPU migrates it.
fn hop_between_cpus(hops: usize) -> Result<String, String> {
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
    let allowed = sched_getaffinity(None).map_err(|e| format!("sched_getaffinity: {e}"))?;
    let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
        .filter(|&c| allowed.is_set(c))
        .collect();
    if cpus.len() < 2 {
        return Err(format!(
            "{} CPU allowed: no other CPU to move to",
            cpus.len()
        ));
    }
    let worker = std::thread::spawn(move || -> Result<(), String> {
        for hop in 0..hops {
            let mut one = CpuSet::new();
            one.set(cpus[hop % cpus.len()]);
            sched_setaffinity(None, &one).map_err(|e| format!("sched_setaffinity: {e}"))?;
        }
        Ok(())
    });
    worker
        .join()
        .map_err(|_| "the hopping thread panicked".to_owned())??;
    Ok(format!(
        "{hops} affinity changes of one thread across its CPUs"
    ))
}
