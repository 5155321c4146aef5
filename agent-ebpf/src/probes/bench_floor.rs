//! Empty programs on the tracepoints nodelens uses, for `cargo xtask bench`: attached alone,
//! they measure the floor, what any BPF program on those tracepoints costs an application
//! before doing any work. The agent never loads them.

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

    #[btf_tracepoint(function = "sched_switch")]
    pub fn floor_sched_switch(_ctx: BtfTracePointContext) -> u32 {
        0
    }

    #[btf_tracepoint(function = "block_rq_issue")]
    pub fn floor_block_rq_issue(_ctx: BtfTracePointContext) -> u32 {
        0
    }

    #[btf_tracepoint(function = "block_rq_complete")]
    pub fn floor_block_rq_complete(_ctx: BtfTracePointContext) -> u32 {
        0
    }

    #[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
    pub fn floor_memcg_reclaim_begin(_ctx: BtfTracePointContext) -> u32 {
        0
    }

    #[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
    pub fn floor_memcg_reclaim_end(_ctx: BtfTracePointContext) -> u32 {
        0
    }
}
