pub mod cgroup;
pub mod disk;
pub mod histogram;
pub mod kernel;
pub mod memory;
pub mod sched;
