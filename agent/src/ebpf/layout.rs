//! The kernel layout the programs need, resolved at startup from this kernel's BTF and
//! tracepoint format files (DESIGN.md, kernel portability rule 2). Nothing is hard-coded:
//! a part that cannot be resolved disables only the attach type that needs it.
use std::path::Path;

use agent_ebpf::{DiskLayout, MemoryLayout, SchedLayout};

use super::{Family, btf::Btf, tracefs};

#[derive(Debug, Clone)]
pub struct Layout {
    pub sched: SchedLayout,
    pub disk: DiskLayout,
    pub memory: MemoryLayout,
    /// `__state` (5.14+) or `state`: which task state field this kernel has.
    pub task_state_field: &'static str,
    /// Per family: offsets for tp_btf programs came from BTF, or why not.
    btf: [Result<(), String>; 3],
    /// Per family: offsets for classic tracepoints came from format files, or why not.
    tracepoint: [Result<(), String>; 3],
}

impl Layout {
    pub fn btf_ok(&self, family: Family) -> Result<(), String> {
        self.btf[family as usize].clone()
    }

    pub fn tracepoint_ok(&self, family: Family) -> Result<(), String> {
        self.tracepoint[family as usize].clone()
    }

    /// The BTF-derived offsets by name, for reports that compare kernels. Empty when the
    /// kernel has no BTF.
    pub fn btf_offsets(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        if self.btf_ok(Family::Sched).is_ok() {
            let (s, f) = (&self.sched, self.task_state_field);
            out.push(("task_struct.pid".into(), s.task_pid));
            out.push((format!("task_struct.{f}"), s.task_state));
            out.push((format!("task_struct.{f} size"), s.task_state_size));
        }
        if self.btf_ok(Family::Disk).is_ok() {
            let d = &self.disk;
            out.push(("block_rq_issue request argument".into(), d.issue_rq_arg));
            out.push(("request.__data_len".into(), d.request_data_len));
            out.push(("request.cmd_flags".into(), d.request_cmd_flags));
            if d.disk_in_request != 0 {
                out.push(("request.rq_disk".into(), d.request_rq_disk));
            } else {
                out.push(("request.q".into(), d.request_q));
                out.push(("request_queue.disk".into(), d.queue_disk));
            }
            out.push(("gendisk.major".into(), d.gendisk_major));
            out.push(("gendisk.first_minor".into(), d.gendisk_first_minor));
        }
        if self.btf_ok(Family::Memory).is_ok() && self.memory.oom_arg_is_task != 0 {
            let m = &self.memory;
            out.push(("task_struct.cgroups".into(), m.task_cgroups));
            out.push(("css_set.dfl_cgrp".into(), m.css_set_dfl_cgrp));
            out.push(("cgroup.kn".into(), m.cgroup_kn));
            out.push(("kernfs_node.id".into(), m.kernfs_node_id));
        }
        out
    }
}

type BtfResult = Result<(), String>;

fn sched_btf(btf: &Btf, l: &mut SchedLayout, state_field: &mut &'static str) -> BtfResult {
    let pid = btf
        .member("task_struct", &["pid"])
        .map_err(|e| e.to_string())?;
    // `state` became `__state` (and unsigned int) in 5.14.
    let state = btf
        .member("task_struct", &["__state", "state"])
        .map_err(|e| e.to_string())?;
    l.task_pid = pid.offset;
    l.task_state = state.offset;
    l.task_state_size = state.size;
    *state_field = if state.name_index == 0 {
        "__state"
    } else {
        "state"
    };
    Ok(())
}

fn disk_btf(btf: &Btf, l: &mut DiskLayout) -> BtfResult {
    let m = |s: &str, f: &[&str]| {
        btf.member(s, f)
            .map(|m| m.offset)
            .map_err(|e| e.to_string())
    };
    // block_rq_issue lost its `struct request_queue *` argument in 5.11.
    let args = btf
        .tracepoint_args("block_rq_issue")
        .ok_or("BTF has no btf_trace_block_rq_issue")?;
    l.issue_rq_arg = args
        .iter()
        .position(|a| a == "struct request *")
        .ok_or_else(|| format!("block_rq_issue has no struct request * argument: {args:?}"))?
        as u32;
    if l.issue_rq_arg > 1 {
        return Err(format!("unexpected block_rq_issue arguments {args:?}"));
    }
    l.request_data_len = m("request", &["__data_len"])?;
    l.request_cmd_flags = m("request", &["cmd_flags"])?;
    // request.rq_disk went away in 5.19; the disk is request.q->disk since.
    if btf.has_member("request", "rq_disk") {
        l.disk_in_request = 1;
        l.request_rq_disk = m("request", &["rq_disk"])?;
    } else {
        l.disk_in_request = 0;
        l.request_q = m("request", &["q"])?;
        l.queue_disk = m("request_queue", &["disk"])?;
    }
    l.gendisk_major = m("gendisk", &["major"])?;
    l.gendisk_first_minor = m("gendisk", &["first_minor"])?;
    Ok(())
}

fn memory_btf(btf: &Btf, l: &mut MemoryLayout) -> BtfResult {
    let m = |s: &str, f: &[&str]| {
        btf.member(s, f)
            .map(|m| m.offset)
            .map_err(|e| e.to_string())
    };
    let args = btf
        .tracepoint_args("mark_victim")
        .ok_or("BTF has no btf_trace_mark_victim")?;
    // mark_victim passes the task since 6.x; older kernels pass only the pid.
    if args.first().map(String::as_str) == Some("struct task_struct *") {
        l.oom_arg_is_task = 1;
        l.task_pid = m("task_struct", &["pid"])?;
        l.task_cgroups = m("task_struct", &["cgroups"])?;
        l.css_set_dfl_cgrp = m("css_set", &["dfl_cgrp"])?;
        l.cgroup_kn = m("cgroup", &["kn"])?;
        l.kernfs_node_id = m("kernfs_node", &["id"])?;
    } else {
        l.oom_arg_is_task = 0;
    }
    Ok(())
}

fn sched_tp(tfs: &Path, l: &mut SchedLayout) -> Result<(), String> {
    let f = |event: &str, field: &str| tracefs::field(tfs, "sched", event, field);
    l.tp_wakeup_pid = f("sched_wakeup", "pid")?.offset;
    l.tp_switch_prev_pid = f("sched_switch", "prev_pid")?.offset;
    let prev_state = f("sched_switch", "prev_state")?;
    l.tp_switch_prev_state = prev_state.offset;
    l.tp_switch_prev_state_size = prev_state.size;
    l.tp_switch_next_pid = f("sched_switch", "next_pid")?.offset;
    Ok(())
}

fn disk_tp(tfs: &Path, l: &mut DiskLayout) -> Result<(), String> {
    let f = |event: &str, field: &str| tracefs::field(tfs, "block", event, field).map(|f| f.offset);
    l.tp_issue_dev = f("block_rq_issue", "dev")?;
    l.tp_issue_sector = f("block_rq_issue", "sector")?;
    l.tp_issue_bytes = f("block_rq_issue", "bytes")?;
    l.tp_issue_rwbs = f("block_rq_issue", "rwbs")?;
    l.tp_complete_dev = f("block_rq_complete", "dev")?;
    l.tp_complete_sector = f("block_rq_complete", "sector")?;
    Ok(())
}

fn memory_tp(tfs: &Path, l: &mut MemoryLayout) -> Result<(), String> {
    l.tp_victim_pid = tracefs::field(tfs, "oom", "mark_victim", "pid")?.offset;
    Ok(())
}

pub fn resolve(btf: Result<&Btf, String>, tracefs: Option<&Path>) -> Layout {
    let (mut sched, mut disk, mut memory) = Default::default();
    let mut task_state_field = "__state";
    let btf_results = match btf {
        Ok(btf) => [
            sched_btf(btf, &mut sched, &mut task_state_field),
            disk_btf(btf, &mut disk),
            memory_btf(btf, &mut memory),
        ],
        Err(e) => [Err(e.clone()), Err(e.clone()), Err(e)],
    };
    let tp_results = match tracefs {
        Some(tfs) => [
            sched_tp(tfs, &mut sched),
            disk_tp(tfs, &mut disk),
            memory_tp(tfs, &mut memory),
        ],
        None => std::array::from_fn(|_| Err(tracefs::NOT_MOUNTED.to_owned())),
    };
    Layout {
        sched,
        disk,
        memory,
        task_state_field,
        btf: btf_results,
        tracepoint: tp_results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_family_from_this_kernels_btf() {
        let btf = Btf::from_file(Path::new(super::super::BTF_PATH)).unwrap();
        let l = resolve(Ok(&btf), None);
        for family in [Family::Sched, Family::Disk, Family::Memory] {
            assert_eq!(l.btf_ok(family), Ok(()), "{family:?}");
            assert!(
                l.tracepoint_ok(family)
                    .unwrap_err()
                    .contains("tracefs not mounted")
            );
        }
        assert_eq!(l.disk.issue_rq_arg, 0, "6.x passes only the request");
        assert_eq!(l.disk.disk_in_request, 0, "rq_disk is gone since 5.19");
        assert_eq!(l.memory.oom_arg_is_task, 1);
        assert!(l.sched.task_pid > 0 && l.memory.task_cgroups > 0);
        assert!(
            l.disk.gendisk_first_minor > l.disk.gendisk_major,
            "major comes first in gendisk"
        );
    }

    #[test]
    fn no_btf_disables_only_tp_btf() {
        let l = resolve(Err("no BTF here".into()), None);
        assert_eq!(l.btf_ok(Family::Disk), Err("no BTF here".into()));
    }
}
