pub mod histogram;
pub mod sched;
