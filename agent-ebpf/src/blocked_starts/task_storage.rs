//! Blocked starts in task-local storage (`BPF_MAP_TYPE_TASK_STORAGE`): a slot in each task
//! that has blocked, which the kernel frees with the task. No size limit, nothing to clean
//! up, and a lookup cheaper than a hash's. The store of `agent-ebpf-task-storage`; the
//! agent loads that object only where the kernel's BTF shows task storage allocating from
//! BPF's own pools (`bpf_local_storage_map.bpf_ma`, 6.4+): before, the first `keep` of a
//! task allocated with `GFP_ATOMIC` under the run-queue lock `sched_switch` holds, which
//! can wake kswapd onto that same run queue. Elsewhere the agent loads `agent-ebpf`, whose
//! store is a hash (`hash.rs`).
//!
//! aya-ebpf 0.2.1 has no task storage among its BTF maps, and its `btf_map_def` is private:
//! the definition below is the BTF map convention (libbpf's `__uint`/`__type`), which aya
//! reads from the object's BTF.
use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, task_struct},
    helpers::generated::bpf_task_storage_get,
};

use crate::probes::sched::BlockStart;

/// `BPF_MAP_TYPE_TASK_STORAGE`.
const TASK_STORAGE: usize = 29;

/// A BTF map definition: each field's type carries one attribute (an array's length is the
/// number), as libbpf's `__uint(type, ...)`, `__type(key, int)` and `__type(value, ...)`.
#[repr(C)]
pub struct TaskStorage<V> {
    r#type: *const [i32; TASK_STORAGE],
    key: *const i32,
    value: *const V,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: placeholders the loader replaces with the map; never dereferenced here.
unsafe impl<V> Sync for TaskStorage<V> {}

impl<V> TaskStorage<V> {
    const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    #[inline(always)]
    fn get(&self, task: *const u8, flags: u32) -> *mut V {
        // SAFETY: the helper checks `task` (a BTF-typed task_struct pointer, which the
        // verifier insists on) and returns NULL or the task's slot.
        unsafe {
            bpf_task_storage_get(
                ptr::from_ref(self).cast_mut().cast::<c_void>(),
                task.cast_mut().cast::<task_struct>(),
                ptr::null_mut(),
                u64::from(flags),
            )
        }
        .cast::<V>()
    }
}

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "BLOCKED_START_TASK")]
static BLOCKED_START_TASK: TaskStorage<BlockStart> = TaskStorage::new();

/// Keeps `start` in `task`'s slot, made the first time (zeroed); false when the kernel
/// could not make it (out of memory, or the storage busy on this CPU).
#[inline(always)]
pub fn keep(task: *const u8, start: &BlockStart) -> bool {
    let slot = BLOCKED_START_TASK.get(task, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if slot.is_null() {
        return false;
    }
    // SAFETY: the task's own slot, of the map's value type.
    unsafe { *slot = *start };
    true
}

/// Takes out the start kept in `task`'s slot, if one is there (`at` not 0: `keep` is only
/// called with a clock read, never 0). The slot stays, for the task's next wait.
#[inline(always)]
pub fn take(task: *const u8) -> Option<BlockStart> {
    let slot = BLOCKED_START_TASK.get(task, 0);
    if slot.is_null() {
        return None;
    }
    // SAFETY: the task's own slot, of the map's value type.
    unsafe {
        let start = *slot;
        if start.at == 0 {
            return None;
        }
        (*slot).at = 0;
        Some(start)
    }
}
