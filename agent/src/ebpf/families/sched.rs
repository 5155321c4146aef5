//! Scheduler family: run-queue latency (runqlat semantics) and context switches, from
//! `sched_switch`, which reads the scheduler's own timestamps where the kernel's BTF has
//! them; `sched_wakeup` and `sched_wakeup_new` are only loaded where it cannot (classic
//! tracepoints, or a kernel without those fields). The programs also charge each cgroup's
//! CPU time, wait and switches (see the `cgroup` family, which exports them).
use agent_ebpf::{
    histogram::{HISTOGRAM_SLOTS, Log2Histogram, NativeHistogram},
    sched::names,
    sched::{
        BLOCKED_START_ENTRIES, BlockStart, COST_SWITCH, COST_WAKEUP, COST_WAKEUP_NEW,
        RUNQUEUE_START_ENTRIES, SCHED_LAYOUT_GLOBAL, SchedCounters, SchedLayout,
    },
};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray},
};
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};
use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    ebpf::{
        family::{
            AttachKind, Attached, ExerciseContext, Family, FamilyLayout, FillGauge, Health,
            KernelReads, KernelSources, LoadContext, LoadedFamily, ProbeCosts, ProbeSpec, Workload,
            global_bytes, map_error, take_map,
        },
        native::{native_seconds, read_agreeing},
    },
    metrics::{CollectError, Log2Buckets, NoLabels, family, histogram_with_native},
    render,
};

/// The task's pid and state, the run queue's clock through the task, the scheduler's own
/// timestamps; the switch and wakeup tracepoints' format fields.
const KERNEL_READS: KernelReads = KernelReads {
    structs: &[
        "task_struct",
        "sched_info",
        "sched_entity",
        "cfs_rq",
        "rq",
        // A blocked task's cgroup.
        "css_set",
        "cgroup",
        "kernfs_node",
        // Whether task-local storage is safe inside sched_switch (`blocked_starts_in`).
        "bpf_local_storage_map",
    ],
    tracepoints: &["sched_switch", "sched_wakeup", "sched_wakeup_new"],
};

/// Run-queue latency buckets: 2^10 ns (about 1 µs) up to 2^36 ns (about 69 s).
pub const RUNQUEUE_FIRST_SLOT: usize = 10;
pub const RUNQUEUE_LAST_SLOT: usize = 36;

pub struct Sched;

/// `sched_switch` first: whether the wakeup probes are needed depends on how it attached.
const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        name: "sched_switch",
        category: "sched",
        group: "sched_switch",
        btf_program: names::SCHED_SWITCH_BTF,
        tracepoint_program: names::SCHED_SWITCH_TP,
        core: true,
    },
    ProbeSpec {
        name: "sched_wakeup",
        category: "sched",
        group: "sched_wakeup",
        btf_program: names::SCHED_WAKEUP_BTF,
        tracepoint_program: names::SCHED_WAKEUP_TP,
        core: true,
    },
    ProbeSpec {
        name: "sched_wakeup_new",
        category: "sched",
        group: "sched_wakeup_new",
        btf_program: names::SCHED_WAKEUP_NEW_BTF,
        tracepoint_program: names::SCHED_WAKEUP_NEW_TP,
        core: false,
    },
];

/// The wakeup probes only serve the fallback mode.
const WAKEUP_PROBES: [&str; 2] = ["sched_wakeup", "sched_wakeup_new"];

/// (probe, slot in SCHED_COST).
const COST_SLOTS: [(&str, u32); 3] = [
    ("sched_switch", COST_SWITCH),
    ("sched_wakeup", COST_WAKEUP),
    ("sched_wakeup_new", COST_WAKEUP_NEW),
];

/// Offsets for the tp_btf programs, from BTF. `state` became `__state` (and unsigned int)
/// in 5.14; the field's name goes into the offsets report.
fn btf_layout(kernel: &KernelSources, l: &mut SchedLayout) -> Result<Vec<(String, u32)>, String> {
    let btf = kernel.btf.clone()?;
    let pid = btf
        .member("task_struct", &["pid"])
        .map_err(|e| e.to_string())?;
    let state = btf
        .member("task_struct", &["__state", "state"])
        .map_err(|e| e.to_string())?;
    l.task_pid = pid.offset;
    l.task_state = state.offset;
    l.task_state_size = state.size;
    let field = if state.name_index == 0 {
        "__state"
    } else {
        "state"
    };
    Ok(vec![
        ("task_struct.pid".into(), pid.offset),
        (format!("task_struct.{field}"), state.offset),
        (format!("task_struct.{field} size"), state.size),
    ])
}

/// `struct_name.field`'s offset in this kernel's BTF; an error names what is missing.
fn member_offset(kernel: &KernelSources, struct_name: &str, field: &str) -> Result<u32, String> {
    kernel
        .btf
        .clone()?
        .member(struct_name, &[field])
        .map(|m| m.offset)
        .map_err(|e| e.to_string())
}

/// The run queue's task clock through the task (`task_struct.se.cfs_rq`, `cfs_rq.rq`,
/// `rq.clock_task`), which per-cgroup CPU time is measured with in every mode (see
/// agent-ebpf's `probes/sched.rs`); an error says which field this kernel lacks.
fn run_clock_layout(
    kernel: &KernelSources,
    l: &mut SchedLayout,
) -> Result<Vec<(String, u32)>, String> {
    let m = |s: &str, f: &str| member_offset(kernel, s, f);
    let se = m("task_struct", "se")?;
    let task_cfs_rq = se + m("sched_entity", "cfs_rq")?;
    // cfs_rq.rq exists with CONFIG_FAIR_GROUP_SCHED.
    let cfs_rq_rq = m("cfs_rq", "rq")?;
    let rq_clock_task = m("rq", "clock_task")?;
    let rq_clock = m("rq", "clock")?;
    // A task's own totals: what it ran, with tp_btf, and for a task whose arrival no
    // tracepoint showed.
    let sum_exec = se + m("sched_entity", "sum_exec_runtime")?;
    let sched_info = m("task_struct", "sched_info")?;
    let pcount = sched_info + m("sched_info", "pcount")?;
    let last_arrival = sched_info + m("sched_info", "last_arrival")?;
    l.task_cfs_rq = task_cfs_rq;
    l.cfs_rq_rq = cfs_rq_rq;
    l.rq_clock_task = rq_clock_task;
    l.rq_clock = rq_clock;
    l.task_sum_exec = sum_exec;
    l.task_pcount = pcount;
    l.task_last_arrival = last_arrival;
    l.task_clock = 1;
    Ok(vec![
        ("task_struct.se.cfs_rq".into(), l.task_cfs_rq),
        ("cfs_rq.rq".into(), l.cfs_rq_rq),
        ("rq.clock_task".into(), l.rq_clock_task),
        ("task_struct.se.sum_exec_runtime".into(), l.task_sum_exec),
        ("task_struct.sched_info.pcount".into(), l.task_pcount),
        (
            "task_struct.sched_info.last_arrival".into(),
            l.task_last_arrival,
        ),
    ])
}

/// The scheduler's own timestamps, for the kernel-timestamp mode (see agent-ebpf's
/// `probes/sched.rs`), on top of the run clock's path; an error says which field this
/// kernel lacks.
fn kernel_timestamp_layout(
    kernel: &KernelSources,
    l: &mut SchedLayout,
) -> Result<Vec<(String, u32)>, String> {
    let m = |s: &str, f: &str| member_offset(kernel, s, f);
    if l.task_clock == 0 {
        return Err("no path to the run queue's clock".into());
    }
    let sched_info = m("task_struct", "sched_info")?;
    l.task_last_queued = sched_info + m("sched_info", "last_queued")?;
    l.rq_clock = m("rq", "clock")?;
    Ok(vec![
        (
            "task_struct.sched_info.last_queued".into(),
            l.task_last_queued,
        ),
        ("rq.clock".into(), l.rq_clock),
    ])
}

/// Where a task's two one-bit flags are, for blocked time: `in_iowait` (it sleeps in
/// `io_schedule`) and `sched_contributes_to_load` (it last left its CPU in an
/// uninterruptible sleep); its `sched_info.run_delay`, and the path to its cgroup's id; an
/// error names what this kernel lacks.
fn blocked_layout(
    kernel: &KernelSources,
    l: &mut SchedLayout,
) -> Result<Vec<(String, u32)>, String> {
    let btf = kernel.btf.clone()?;
    let bit = |field: &str| {
        btf.member("task_struct", &[field])
            .map(|m| (m.bit_offset / 8, m.bit_offset % 8))
            .map_err(|e| e.to_string())
    };
    let (iowait, iowait_bit) = bit("in_iowait")?;
    let (load, load_bit) = bit("sched_contributes_to_load")?;
    let m = |s: &str, f: &[&str]| {
        btf.member(s, f)
            .map(|m| m.offset)
            .map_err(|e| e.to_string())
    };
    l.task_run_delay = m("task_struct", &["sched_info"])? + m("sched_info", &["run_delay"])?;
    l.task_cgroups = m("task_struct", &["cgroups"])?;
    l.css_set_dfl_cgrp = m("css_set", &["dfl_cgrp"])?;
    l.cgroup_kn = m("cgroup", &["kn"])?;
    l.kernfs_node_id = m("kernfs_node", &["id"])?;
    l.task_in_iowait = iowait;
    l.task_in_iowait_bit = iowait_bit;
    l.task_load_flag = load;
    l.task_load_flag_bit = load_bit;
    l.blocked = 1;
    Ok(vec![
        ("task_struct.sched_info.run_delay".into(), l.task_run_delay),
        ("task_struct.cgroups".into(), l.task_cgroups),
        ("css_set.dfl_cgrp".into(), l.css_set_dfl_cgrp),
        ("cgroup.kn".into(), l.cgroup_kn),
        ("kernfs_node.id".into(), l.kernfs_node_id),
        ("task_struct.in_iowait bit".into(), iowait * 8 + iowait_bit),
        (
            "task_struct.sched_contributes_to_load bit".into(),
            load * 8 + load_bit,
        ),
    ])
}

fn tracepoint_layout(kernel: &KernelSources, l: &mut SchedLayout) -> Result<(), String> {
    let f = |event: &str, field: &str| kernel.tp_field("sched", event, field);
    l.tp_wakeup_pid = f("sched_wakeup", "pid")?.offset;
    l.tp_switch_prev_pid = f("sched_switch", "prev_pid")?.offset;
    let prev_state = f("sched_switch", "prev_state")?;
    l.tp_switch_prev_state = prev_state.offset;
    l.tp_switch_prev_state_size = prev_state.size;
    l.tp_switch_next_pid = f("sched_switch", "next_pid")?.offset;
    Ok(())
}

pub fn layout(kernel: &KernelSources) -> (SchedLayout, FamilyLayout) {
    let mut l = SchedLayout::default();
    let btf = btf_layout(kernel, &mut l);
    let tracepoint = tracepoint_layout(kernel, &mut l);
    let mut offsets = btf.clone().unwrap_or_default();
    let mut fallback_probes = Vec::new();
    let run_clock = match run_clock_layout(kernel, &mut l) {
        Ok(more) if btf.is_ok() => {
            offsets.extend(more);
            "CPU time per cgroup from the kernel's own run-time totals (sum_exec_runtime; the run queue's task clock with classic tracepoints)".to_owned()
        }
        Ok(_) => {
            l.task_clock = 0;
            "CPU time per cgroup from bpf_ktime_get_ns (no BTF: includes interrupt time)".to_owned()
        }
        Err(why) => {
            format!("CPU time per cgroup from bpf_ktime_get_ns ({why}: includes interrupt time)")
        }
    };
    let wait = match kernel_timestamp_layout(kernel, &mut l) {
        Ok(more) if btf.is_ok() => {
            l.kernel_timestamps = 1;
            offsets.extend(more);
            fallback_probes.extend(WAKEUP_PROBES);
            "run-queue wait from the kernel's sched_info and run queue clock; the wakeup probes load only if sched_switch falls back to a classic tracepoint".to_owned()
        }
        Ok(_) => "run-queue wait from wakeup timestamps (no BTF)".to_owned(),
        Err(why) => format!("run-queue wait from wakeup timestamps ({why})"),
    };
    let mut task_storage = false;
    let blocked = if l.kernel_timestamps == 0 {
        "no blocked time (it needs the kernel's timestamps)".to_owned()
    } else {
        match blocked_layout(kernel, &mut l) {
            Ok(more) => {
                offsets.extend(more);
                let (in_task_storage, starts) = blocked_starts_in(kernel);
                task_storage = in_task_storage;
                format!(
                    "blocked time from uninterruptible sleeps at sched_switch, split by task_struct.in_iowait, starts kept {starts}"
                )
            }
            Err(why) => format!("no blocked time ({why})"),
        }
    };
    let mode = format!("{wait}; {run_clock}; {blocked}");
    let mut family = FamilyLayout::new(
        vec![(SCHED_LAYOUT_GLOBAL, global_bytes(&l))],
        btf.map(drop),
        tracepoint,
        offsets,
    );
    family.fallback_probes = fallback_probes;
    family.mode = Some(mode);
    family.task_storage = task_storage;
    (l, family)
}

/// Where blocked starts are kept on this kernel, and the words for the mode line. In
/// task-local storage where its slots come from BPF's own pools, which the kernel's BTF
/// shows as `bpf_local_storage_map.bpf_ma` (6.4+): a slot is then made without calling
/// the allocator under the run-queue lock that sched_switch holds (from 5.12 to 6.3 it
/// was a `GFP_ATOMIC` allocation there, which can wake kswapd onto that same run queue).
/// Elsewhere in a hash of [`BLOCKED_START_ENTRIES`] tasks: also on a kernel whose local
/// storage allocates some other way (a later allocator may replace `bpf_ma`), until that
/// way is known to be safe there.
fn blocked_starts_in(kernel: &KernelSources) -> (bool, String) {
    let safe = kernel.btf.as_ref().map_err(Clone::clone).and_then(|btf| {
        btf.has_member("bpf_local_storage_map", "bpf_ma")
            .map_err(|e| e.to_string())
    });
    match safe {
        Ok(true) => (true, "in task-local storage".to_owned()),
        Ok(false) => (
            false,
            format!(
                "in a hash of {BLOCKED_START_ENTRIES} tasks (no bpf_local_storage_map.bpf_ma in this kernel's BTF: its task-local storage may allocate under the run-queue lock, as before 6.4)"
            ),
        ),
        Err(why) => (
            false,
            format!("in a hash of {BLOCKED_START_ENTRIES} tasks ({why})"),
        ),
    }
}

impl Family for Sched {
    fn name(&self) -> &'static str {
        "sched"
    }

    fn kernel_reads(&self) -> KernelReads {
        KERNEL_READS
    }

    fn exercise(&self, _ctx: &ExerciseContext) -> Vec<Workload> {
        vec![Workload {
            name: "scheduler",
            outcome: Ok(sched_work()),
            // Its threads block and wake each other, and are created.
            fires: &["sched_switch", "sched_wakeup", "sched_wakeup_new"],
        }]
    }

    fn maps(&self) -> &'static [&'static str] {
        names::MAPS
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        PROBES
    }

    fn layout(&self, kernel: &KernelSources, _ctx: &LoadContext) -> FamilyLayout {
        layout(kernel).1
    }

    fn take(
        &self,
        ebpf: &mut Ebpf,
        attached: &Attached,
        _ctx: &LoadContext,
    ) -> Result<Box<dyn LoadedFamily>, String> {
        // The histogram is whole when sched_switch does all the work itself, or when the
        // wakeup probes it falls back on are attached too.
        let self_sufficient = attached.attach("sched_switch") == Some(AttachKind::TpBtf)
            && !attached.listed("sched_wakeup");
        Ok(Box::new(SchedMaps {
            counters: take_map(ebpf, names::SCHED_COUNTERS)?,
            start: take_map(ebpf, names::RUNQUEUE_START)?,
            // The object the loader chose has one of the two stores; only the hash needs
            // upkeep (task storage goes with its task).
            blocked_start: match ebpf.map(names::BLOCKED_START) {
                Some(_) => Some(Mutex::new(take_map(ebpf, names::BLOCKED_START)?)),
                None => None,
            },
            // Kernel timestamps are on exactly when sched_switch does the work alone; the
            // layout says whether this kernel has what blocked time also reads.
            blocked_up: self_sufficient
                && attached
                    .global::<SchedLayout>(SCHED_LAYOUT_GLOBAL)
                    .is_some_and(|l| l.blocked != 0),
            blocked_fill: FillGauge::default(),
            blocked_stale: AtomicU64::new(0),
            costs: ProbeCosts::new(take_map(ebpf, names::SCHED_COST)?, &COST_SLOTS),
            runqueue_complete: attached.up("sched_switch")
                && (self_sufficient || attached.all_up(&WAKEUP_PROBES)),
            switch_up: attached.up("sched_switch"),
            start_fill: FillGauge::default(),
        }))
    }
}

struct SchedMaps {
    counters: PerCpuArray<MapData, SchedCounters>,
    start: HashMap<MapData, u32, u64>,
    /// The hash of blocked starts, in the object without task storage.
    blocked_start: Option<Mutex<HashMap<MapData, u64, BlockStart>>>,
    /// Blocked time is measured (sched_switch with the kernel's timestamps).
    blocked_up: bool,
    blocked_fill: FillGauge,
    /// Starts taken out by upkeep because their task never came back.
    blocked_stale: AtomicU64,
    costs: ProbeCosts,
    /// All of sched_wakeup, sched_wakeup_new and sched_switch attached.
    runqueue_complete: bool,
    switch_up: bool,
    start_fill: FillGauge,
}

/// Whether a CPU's classic and native run-queue histograms hold the same waits.
fn histograms_agree(c: &SchedCounters) -> bool {
    let native = c.runqueue_native;
    c.runqueue_latency.slots.iter().sum::<u64>() == native.zero + native.buckets.iter().sum::<u64>()
}

impl LoadedFamily for SchedMaps {
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        // Copies where the classic and native histograms hold the same waits.
        let read = || {
            self.counters
                .get(&0, 0)
                .map_err(|e| map_error(names::SCHED_COUNTERS, e))
        };
        let counters = read_agreeing(read()?, read, histograms_agree)?;
        let (mut voluntary, mut involuntary) = (0u64, 0u64);
        let (mut blocked_io, mut blocked_other) = (0u64, 0u64);
        let mut latency = Log2Histogram::zeroed();
        let mut native = NativeHistogram::zeroed();
        for c in counters.iter() {
            voluntary += c.voluntary_switches;
            involuntary += c.involuntary_switches;
            blocked_io += c.blocked_io_ns;
            blocked_other += c.blocked_other_ns;
            latency.merge(&c.runqueue_latency);
            native.merge(&c.runqueue_native);
        }
        if self.blocked_up {
            family(
                out,
                "nodelens_blocked_seconds_total",
                "Time tasks spent blocked in uninterruptible sleep (D state) until woken: waiting for I/O (in_iowait), or for anything else (locks, page faults, vfork).",
                MetricType::Counter,
                [
                    ([("kind", "io")], blocked_io as f64 / 1e9),
                    ([("kind", "other")], blocked_other as f64 / 1e9),
                ],
            )?;
        }
        if self.switch_up {
            family(
                out,
                "nodelens_cpu_context_switches_total",
                "Context switches seen by sched_switch: voluntary (the task blocked) or involuntary (preempted while runnable).",
                MetricType::Counter,
                [
                    ([("kind", "voluntary")], voluntary as f64),
                    ([("kind", "involuntary")], involuntary as f64),
                ],
            )?;
        }
        if self.runqueue_complete {
            // Native beside classic in a protobuf scrape; the text formats cannot carry it.
            let native = render::protobuf().then(|| native_seconds(&native));
            histogram_with_native(
                out,
                "nodelens_runqueue_latency_seconds",
                "Time tasks spent runnable on a run queue before getting a CPU (wakeup or preemption to sched_switch).",
                [(
                    NoLabels,
                    Log2Buckets {
                        slots: &latency.slots[..HISTOGRAM_SLOTS],
                        sum: latency.sum,
                        first_slot: RUNQUEUE_FIRST_SLOT,
                        last_slot: RUNQUEUE_LAST_SLOT,
                        scale: 1e-9,
                    },
                    native,
                )],
            )?;
        }
        Ok(())
    }

    fn upkeep(&self) {
        // Entries are consumed when their task gets a CPU; only the fill level is kept.
        self.start_fill.set(self.start.keys().count() as u64);
        if self.blocked_up {
            self.keep_blocked_starts();
        }
    }

    fn health(&self) -> Health {
        let (mut start_full, mut cgroup_full, mut unseen, mut blocked_full) = (0, 0, 0, 0);
        if let Ok(per_cpu) = self.counters.get(&0, 0) {
            for c in per_cpu.iter() {
                start_full += c.start_map_full;
                cgroup_full += c.cgroup_map_full;
                unseen += c.switch_unseen;
                blocked_full += c.blocked_start_full;
            }
        }
        Health {
            maps: std::iter::once(
                self.start_fill
                    .fill(names::RUNQUEUE_START, RUNQUEUE_START_ENTRIES),
            )
            .chain(self.blocked_start.as_ref().map(|_| {
                self.blocked_fill
                    .fill(names::BLOCKED_START, BLOCKED_START_ENTRIES)
            }))
            .collect(),
            lost: vec![
                ("runqueue_start_map_full", start_full),
                ("cgroup_map_full_sched", cgroup_full),
                // A switch the kernel made without sched_switch: the arriving task's wait
                // and the leaving one's stretch were not recorded.
                ("sched_switch_unseen", unseen),
                // A task blocked while the map of blocked starts was full, or whose start
                // waited longer than a task ever sleeps uninterruptibly: its blocked time.
                ("blocked_start_map_full", blocked_full),
                (
                    "blocked_start_stale",
                    self.blocked_stale.load(Ordering::Relaxed),
                ),
            ],
            costs: self.costs.read(),
        }
    }
}

/// How long a blocked start may wait for its task before upkeep takes it out, when the map
/// is half full: far longer than a task sleeps uninterruptibly (the kernel's hung-task
/// warning is at 2 minutes), so what is older most likely belongs to a task whose return
/// no tracepoint showed.
const BLOCKED_START_STALE: Duration = Duration::from_secs(3600);

impl SchedMaps {
    /// Counts the blocked starts, and takes out the stale ones (counted).
    fn keep_blocked_starts(&self) {
        let Some(map) = &self.blocked_start else {
            return;
        };
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        // The run queue's clock and CLOCK_MONOTONIC both count from boot, close enough
        // for an hour's margin.
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32).as_nanos() as u64;
        let stale_before = now.saturating_sub(BLOCKED_START_STALE.as_nanos() as u64);
        let mut live = 0u64;
        let mut stale = Vec::new();
        for (task, start) in map.iter().flatten() {
            if start.at < stale_before {
                stale.push(task);
            } else {
                live += 1;
            }
        }
        // Only to make room: a real sleep may last hours (a hung NFS mount), and its start
        // is only charged to its own task (`BlockStart::arrivals`).
        if (live + stale.len() as u64) * 2 < u64::from(BLOCKED_START_ENTRIES) {
            self.blocked_fill.set(live + stale.len() as u64);
            return;
        }
        for task in &stale {
            let _ = map.remove(task);
        }
        self.blocked_stale
            .fetch_add(stale.len() as u64, Ordering::Relaxed);
        self.blocked_fill.set(live);
    }
}

/// Scheduler work: pairs of threads that wake each other through channels (one pair per two
/// CPUs, at least two pairs, so that every CPU switches tasks of this one cgroup at once),
/// and thread creation.
fn sched_work() -> String {
    let round_trips = 5_000;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pairs = (cpus / 2).max(2);
    let mut handles = Vec::new();
    for _ in 0..pairs {
        let (to_peer, from_main) = std::sync::mpsc::channel::<u32>();
        let (to_main, from_peer) = std::sync::mpsc::channel::<u32>();
        let peer = std::thread::spawn(move || {
            while let Ok(v) = from_main.recv() {
                if to_main.send(v + 1).is_err() {
                    break;
                }
            }
        });
        let driver = std::thread::spawn(move || {
            for i in 0..round_trips {
                if to_peer.send(i).is_err() || from_peer.recv().is_err() {
                    break;
                }
            }
        });
        handles.push(peer);
        handles.push(driver);
    }
    for h in handles {
        let _ = h.join();
    }
    format!(
        "{} thread round trips through channels, {pairs} pairs on {cpus} CPUs",
        pairs * round_trips as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::btf::{Btf, fixtures};

    fn resolve(release: &str) -> (SchedLayout, FamilyLayout) {
        let bytes = fixtures::load(release);
        let btf = Btf::parse(&bytes).unwrap();
        layout(&KernelSources::for_family(&Sched, Ok(&btf), None))
    }

    #[test]
    fn resolves_task_struct_on_each_kernel() {
        // (kernel, pid offset, state offset, state size), as each kernel's BTF has them.
        for (release, pid, state, size) in [
            ("5.10.0-46-cloud-amd64", 2232, 16, 8),
            ("6.1.0-57-cloud-amd64", 2416, 24, 4),
            ("6.12.118+deb13-cloud-amd64", 2432, 24, 4),
        ] {
            let (l, family) = resolve(release);
            assert_eq!(family.btf, Ok(()), "{release}");
            assert_eq!(
                (l.task_pid, l.task_state, l.task_state_size),
                (pid, state, size),
                "{release}"
            );
            let field = if size == 8 { "state" } else { "__state" };
            assert!(
                family
                    .offsets
                    .contains(&(format!("task_struct.{field}"), state)),
                "{release}: 5.14 renamed state to __state"
            );
        }
    }

    #[test]
    fn every_kernel_offers_the_schedulers_own_timestamps() {
        for (release, _) in fixtures::all() {
            let (l, family) = resolve(&release);
            assert_eq!(l.kernel_timestamps, 1, "{release}: {:?}", family.mode);
            assert_eq!(family.fallback_probes, WAKEUP_PROBES, "{release}");
            // se.cfs_rq, cfs_rq.rq and rq.clock: pointers and a u64, all past offset 0
            // except possibly cfs_rq.rq's neighbours; the run queue clock is never first.
            assert!(
                l.task_last_queued > 0 && l.task_cfs_rq > 0 && l.rq_clock > 0,
                "{release}"
            );
            // Run time is measured with the task clock, which rq keeps right after clock.
            assert_eq!(l.task_clock, 1, "{release}");
            assert!(
                l.rq_clock_task > l.rq_clock,
                "{release}: rq.clock_task follows rq.clock"
            );
            // sched_info: pcount, run_delay, last_arrival, last_queued, in that order.
            assert!(
                l.task_pcount < l.task_last_arrival && l.task_last_arrival < l.task_last_queued,
                "{release}: sched_info's fields in order"
            );
        }
    }

    #[test]
    fn blocked_starts_go_to_task_storage_from_6_4() {
        // (kernel, task storage): 6.4 made task storage allocate from BPF's own pools.
        let expected = [
            ("5.10.0-46-cloud-amd64", false),
            ("6.1.0-57-cloud-amd64", false),
            ("6.12.118+deb13-cloud-amd64", true),
        ];
        for (release, task_storage) in expected {
            let (_, family) = resolve(release);
            assert_eq!(family.task_storage, task_storage, "{release}");
            let mode = family.mode.unwrap_or_default();
            let words = if task_storage {
                "starts kept in task-local storage"
            } else {
                "starts kept in a hash of 16384 tasks (no bpf_local_storage_map.bpf_ma in this kernel's BTF: its task-local storage may allocate under the run-queue lock, as before 6.4)"
            };
            assert!(mode.contains(words), "{release}: {mode}");
        }
        // Without the BTF, no task storage, and the mode says why.
        let (_, family) = layout(&KernelSources::for_family(
            &Sched,
            Err("no BTF".into()),
            None,
        ));
        assert!(!family.task_storage);
    }

    #[test]
    fn every_kernel_offers_blocked_time_and_its_two_flags() {
        let fixtures = fixtures::all();
        assert!(!fixtures.is_empty());
        for (release, _) in fixtures {
            let (l, family) = resolve(&release);
            assert_eq!(l.blocked, 1, "{release}: {:?}", family.mode);
            // Both are one-bit fields of task_struct, far from its start, in two different
            // groups of flags (`in_iowait` after the `:0` that separates those only
            // `current` writes).
            assert!(l.task_in_iowait_bit < 8 && l.task_load_flag_bit < 8);
            assert!(
                l.task_load_flag > l.task_pid / 2 && l.task_in_iowait > l.task_load_flag,
                "{release}: sched_contributes_to_load at {}.{}, in_iowait at {}.{}",
                l.task_load_flag,
                l.task_load_flag_bit,
                l.task_in_iowait,
                l.task_in_iowait_bit
            );
            // sched_info: pcount, run_delay, last_arrival.
            assert_eq!(l.task_run_delay, l.task_pcount + 8, "{release}");
            // The path to a task's cgroup id: the memory family's, resolved alike.
            let memory = crate::ebpf::families::memory::layout(&KernelSources::for_family(
                &crate::ebpf::families::memory::Memory,
                Ok(&Btf::parse(&fixtures::load(&release)).unwrap()),
                None,
            ))
            .0;
            assert_eq!(
                [
                    l.task_cgroups,
                    l.css_set_dfl_cgrp,
                    l.cgroup_kn,
                    l.kernfs_node_id
                ],
                [
                    memory.task_cgroups,
                    memory.css_set_dfl_cgrp,
                    memory.cgroup_kn,
                    memory.kernfs_node_id
                ],
                "{release}"
            );
            assert!(l.task_cgroups > 0, "{release}");
        }
    }

    #[test]
    fn without_btf_or_tracefs_each_attach_type_says_why() {
        let (_, family) = layout(&KernelSources::for_family(
            &Sched,
            Err("no BTF here".into()),
            None,
        ));
        assert_eq!(family.btf, Err("no BTF here".into()));
        assert!(
            family
                .tracepoint
                .unwrap_err()
                .contains("tracefs not mounted")
        );
    }
}
