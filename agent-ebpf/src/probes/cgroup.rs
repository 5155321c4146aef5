//! Per-cgroup totals, shared by the scheduler and memory programs: one entry per cgroup v2
//! id (the inode of the cgroup's directory), updated with atomic adds from every CPU. One
//! shared entry per cgroup, rather than one per CPU, keeps the map small on large machines.
//!
//! The map is a plain hash, not an LRU, so a busy cgroup is never evicted silently: the
//! agent's upkeep task deletes the entries of cgroups that are gone.
use core::ops::AddAssign;

/// Default size of the per-cgroup map. User space sets it at load time from the tracked
/// cgroup cap (room for churn: gone cgroups stay until the upkeep task deletes them).
pub const CGROUP_STATS_ENTRIES: u32 = 16384;

/// Name of the `u32` global that turns per-cgroup accounting on (1) or off (0, the default:
/// the agent sets it only when it exports per-cgroup metrics, so that a node that does not
/// want them does not pay for them).
pub const CGROUP_ACCOUNTING_GLOBAL: &str = "CGROUP_ACCOUNTING";

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Time the cgroup's tasks spent on a CPU.
    pub cpu_ns: u64,
    /// Time the cgroup's tasks spent runnable, waiting for a CPU.
    pub runqueue_wait_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub reclaim_direct_ns: u64,
    pub reclaim_memcg_ns: u64,
}

impl AddAssign for CgroupStats {
    fn add_assign(&mut self, rhs: Self) {
        // Destructured, so that a new field fails to compile until it is added here too.
        let CgroupStats {
            cpu_ns,
            runqueue_wait_ns,
            voluntary_switches,
            involuntary_switches,
            reclaim_direct_ns,
            reclaim_memcg_ns,
        } = rhs;
        self.cpu_ns += cpu_ns;
        self.runqueue_wait_ns += runqueue_wait_ns;
        self.voluntary_switches += voluntary_switches;
        self.involuntary_switches += involuntary_switches;
        self.reclaim_direct_ns += reclaim_direct_ns;
        self.reclaim_memcg_ns += reclaim_memcg_ns;
    }
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] plain u64 data.
unsafe impl aya::Pod for CgroupStats {}

#[cfg(target_arch = "bpf")]
pub mod programs {
    use aya_ebpf::{Global, bindings::BPF_NOEXIST, macros::map, maps::HashMap};

    use super::{CGROUP_STATS_ENTRIES, CgroupStats};
    pub use crate::probes::kernel::atomic_add as add;

    #[unsafe(no_mangle)]
    static CGROUP_ACCOUNTING: Global<u32> = Global::new(0);

    /// Whether the programs should account per cgroup.
    #[inline(always)]
    pub fn enabled() -> bool {
        CGROUP_ACCOUNTING.load() != 0
    }

    #[map]
    static CGROUP_STATS: HashMap<u64, CgroupStats> =
        HashMap::with_max_entries(CGROUP_STATS_ENTRIES, 0);

    /// The entry for `cgroup_id`, created on first use; `None` when the map is full.
    #[inline(always)]
    pub fn stats(cgroup_id: u64) -> Option<*mut CgroupStats> {
        if let Some(s) = CGROUP_STATS.get_ptr_mut(cgroup_id) {
            return Some(s);
        }
        // Another CPU may create it first: NOEXIST, then look up again either way.
        let _ = CGROUP_STATS.insert(cgroup_id, CgroupStats::default(), u64::from(BPF_NOEXIST));
        CGROUP_STATS.get_ptr_mut(cgroup_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_assign_adds_every_field() {
        let one = CgroupStats {
            cpu_ns: 1,
            runqueue_wait_ns: 2,
            voluntary_switches: 3,
            involuntary_switches: 4,
            reclaim_direct_ns: 5,
            reclaim_memcg_ns: 6,
        };
        let mut sum = one;
        sum += one;
        assert_eq!(
            sum,
            CgroupStats {
                cpu_ns: 2,
                runqueue_wait_ns: 4,
                voluntary_switches: 6,
                involuntary_switches: 8,
                reclaim_direct_ns: 10,
                reclaim_memcg_ns: 12,
            }
        );
    }
}
