//! The probe families. Each module implements [`Family`](super::family::Family) and is
//! registered below with one line; nothing else in the agent lists families by hand.
//! The order here is the order they load and attach in.
macro_rules! families {
    ($($module:ident => $family:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every family, in load order.
        pub static ALL: &[&dyn super::family::Family] = &[$(&$module::$family),*];
    };
}

families! {
    sched => Sched,
    disk => Disk,
    memory => Memory,
    cgroup => Cgroup,
}
