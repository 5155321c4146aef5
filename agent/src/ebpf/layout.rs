//! The kernel layout the programs need, resolved at startup from this kernel's BTF and
//! tracepoint format files (DESIGN.md, kernel portability rule 2).
use std::path::Path;

use agent_ebpf::SchedLayout;

use super::{btf::Btf, tracefs};

/// What could be resolved, and why the rest could not. A missing part disables only the
/// attach type that needs it.
#[derive(Debug, Clone)]
pub struct Layout {
    pub sched: SchedLayout,
    /// Offsets for tp_btf programs came from BTF.
    pub btf_ok: Result<(), String>,
    /// Offsets for classic tracepoints came from tracefs format files.
    pub tracepoint_ok: Result<(), String>,
}

pub fn resolve(btf: Option<&Btf>, btf_error: Option<&str>, tracefs: Option<&Path>) -> Layout {
    let mut sched = SchedLayout::default();
    let btf_ok = match btf {
        Some(btf) => (|| {
            let pid = btf.member("task_struct", &["pid"])?;
            // `state` became `__state` (and unsigned int) in 5.14.
            let state = btf.member("task_struct", &["__state", "state"])?;
            sched.task_pid = pid.offset;
            sched.task_state = state.offset;
            sched.task_state_size = state.size;
            Ok::<_, super::btf::BtfError>(())
        })()
        .map_err(|e| e.to_string()),
        None => Err(btf_error.unwrap_or("no BTF").to_owned()),
    };
    let tracepoint_ok = match tracefs {
        Some(tfs) => (|| {
            let wakeup = tracefs::field(tfs, "sched", "sched_wakeup", "pid")?;
            let prev_pid = tracefs::field(tfs, "sched", "sched_switch", "prev_pid")?;
            let prev_state = tracefs::field(tfs, "sched", "sched_switch", "prev_state")?;
            let next_pid = tracefs::field(tfs, "sched", "sched_switch", "next_pid")?;
            sched.tp_wakeup_pid = wakeup.offset;
            sched.tp_switch_prev_pid = prev_pid.offset;
            sched.tp_switch_prev_state = prev_state.offset;
            sched.tp_switch_prev_state_size = prev_state.size;
            sched.tp_switch_next_pid = next_pid.offset;
            Ok::<_, String>(())
        })(),
        None => Err(tracefs::NOT_MOUNTED.to_owned()),
    };
    Layout {
        sched,
        btf_ok,
        tracepoint_ok,
    }
}
