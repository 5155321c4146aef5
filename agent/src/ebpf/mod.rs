//! The eBPF side in user space: what a probe family is (`family`), the families themselves
//! (`families/`, one module each), loading and upkeep (`loader`), per-cgroup maps and their
//! sweep (`per_cgroup`), counters read from the cgroups' own files (`cgroup_files`), and
//! the kernel facts they
//! read (BTF, tracefs format files).
pub mod batch;
pub mod btf;
pub mod cgroup_files;
pub mod events;
pub mod families;
pub mod family;
pub mod loader;
pub mod map_memory;
pub mod native;
pub mod per_cgroup;
pub mod slots;
pub mod tracefs;
