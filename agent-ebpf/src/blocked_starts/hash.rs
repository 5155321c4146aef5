//! Blocked starts in a hash keyed by the task's `task_struct` address: the store of the
//! object that loads on every kernel (`agent-ebpf`). The other object
//! (`agent-ebpf-task-storage`) keeps them in task-local storage instead; the agent loads
//! that one where the kernel can allocate task storage safely inside `sched_switch`.
//!
//! Not an LRU hash, which would drop starts without a trace: a full map is counted
//! (`keep` returns false), and the agent's upkeep takes out starts whose task never came
//! back (a `sched_switch` that no tracepoint showed, or a task that exited blocked).
use aya_ebpf::{macros::map, maps::HashMap};

use crate::probes::sched::{BLOCKED_START_ENTRIES, BlockStart};

#[map]
static BLOCKED_START: HashMap<u64, BlockStart> =
    HashMap::with_max_entries(BLOCKED_START_ENTRIES, 0);

/// Keeps `start` for `task`, which is leaving its CPU blocked; false when the map is full.
#[inline(always)]
pub fn keep(task: *const u8, start: &BlockStart) -> bool {
    BLOCKED_START.insert(task as u64, start, 0).is_ok()
}

/// Takes out the start kept for `task`, if any.
#[inline(always)]
pub fn take(task: *const u8) -> Option<BlockStart> {
    let key = task as u64;
    // SAFETY: the value is copied out before the entry is removed.
    let start = (unsafe { BLOCKED_START.get(key) }).copied()?;
    let _ = BLOCKED_START.remove(key);
    Some(start)
}
