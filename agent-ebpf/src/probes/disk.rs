//! Block I/O: latency and size of each request, per whole disk and operation (biolatency
//! semantics). A request is remembered at `block_rq_issue` and recorded at
//! `block_rq_complete`, where latency and size go into the same map entry, so both
//! histograms always count the same requests.
//!
//! tp_btf programs key requests by their `struct request` address. Classic tracepoints do
//! not expose it, so those programs key by (dev, sector); both programs of the pair must
//! use the same attach type, which user space enforces.
//!
//! Requests in flight live in a direct-mapped array (`DISK_INFLIGHT`), not a hash map: the
//! key hashes to one slot, which holds the key itself to tell whose it is. A hash map's
//! insert and delete take a bucket lock and a free-list element each, about half of what
//! the two programs cost per I/O (some 1,200 ns by the kernel's statistics here, 590 ns
//! without them); an array slot is an address computation. A slot still holding another
//! request at issue (a collision, or a request whose completion never came) is taken
//! over and counted (`inflight_overwritten`); that other request, if it completes, is not
//! recorded. Slots are read and written without atomics: two CPUs issuing into one free
//! slot at the same instant, or a completion clearing a slot while another CPU takes it
//! over, lose one request uncounted. Both need a collision within a few instructions.
//!
//! With per-cgroup accounting on, each request also counts for the cgroup that owns it:
//! the cgroup its bio is charged to (`request->bio->bi_blkg->blkcg->css.cgroup`), which
//! under cgroup v2 is the cgroup that dirtied the pages even when a flusher thread submits
//! the writeback; or, where the io controller is not on cgroup2 (hybrid hosts) and with
//! classic tracepoints (no request pointer), the issuing task's cgroup. A request without
//! an owner (a flush has no bio) counts under cgroup id 0, "unknown".
use crate::probes::histogram::{NativeHistogram, POD_NATIVE_BUCKETS, RangeHistogram};

/// Block request operation, decoded from `rwbs` (classic tracepoint) or from the request's
/// `cmd_flags` (tp_btf). The values index [`DISK_OP_NAMES`].
pub const DISK_OP_READ: u32 = 0;
pub const DISK_OP_WRITE: u32 = 1;
pub const DISK_OP_DISCARD: u32 = 2;
pub const DISK_OP_FLUSH: u32 = 3;
pub const DISK_OP_OTHER: u32 = 4;
pub const DISK_OP_NAMES: [&str; 5] = ["read", "write", "discard", "flush", "other"];

/// Decodes the operation from the kernel's `rwbs` string (blk_fill_rwbs): an optional
/// leading `F` (preflush) followed by the operation letter.
#[inline(always)]
pub fn disk_op_from_rwbs(first: u8, second: u8) -> u32 {
    let op = match (first, second) {
        (b'F', b'R' | b'W' | b'D' | b'F') => second,
        _ => first,
    };
    match op {
        b'R' => DISK_OP_READ,
        b'W' => DISK_OP_WRITE,
        b'D' => DISK_OP_DISCARD,
        b'F' => DISK_OP_FLUSH,
        _ => DISK_OP_OTHER,
    }
}

/// Decodes the operation from `req_opf` (`cmd_flags & REQ_OP_MASK`).
#[inline(always)]
pub fn disk_op_from_req_op(op: u32) -> u32 {
    match op & 0xff {
        0 => DISK_OP_READ,
        1 => DISK_OP_WRITE,
        2 => DISK_OP_FLUSH,
        3 | 5 => DISK_OP_DISCARD, // REQ_OP_DISCARD, REQ_OP_SECURE_ERASE (rwbs "DE")
        _ => DISK_OP_OTHER,
    }
}

/// Histogram key: the whole disk (kernel dev_t, major << 20 | minor) and the operation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DiskKey {
    pub dev: u32,
    pub op: u32,
}

/// Latency buckets: 2^10 ns (about 1 µs) to 2^36 ns (about 69 s), then +Inf.
pub const LATENCY_FIRST_SLOT: usize = 10;
pub const LATENCY_SLOTS: usize = 36 - LATENCY_FIRST_SLOT + 2;
/// Size buckets: 512 B to 128 MiB, then +Inf.
pub const SIZE_FIRST_SLOT: usize = 9;
pub const SIZE_SLOTS: usize = 27 - SIZE_FIRST_SLOT + 2;

/// Latency (ns) and size (bytes) of completed requests, recorded together at completion so
/// that both histograms always have the same count. Only the exported buckets are kept:
/// 400 bytes per (disk, op) per CPU, and the latencies again as a native histogram (schema
/// 3, exact bounds in seconds: `histogram::NativeHistogram`), 2 KiB more.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DiskHistograms {
    pub latency: RangeHistogram<LATENCY_FIRST_SLOT, LATENCY_SLOTS>,
    pub size: RangeHistogram<SIZE_FIRST_SLOT, SIZE_SLOTS>,
    pub latency_native: NativeHistogram,
}

/// The zeroed values new map entries start from (`DISK_ZERO`, never written): both are
/// too large for the 512-byte BPF stack next to everything else.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DiskZero {
    pub histograms: DiskHistograms,
    pub cgroup: CgroupDiskStats,
}

/// A request between issue and completion: one slot of `DISK_INFLIGHT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskInFlight {
    /// Whose slot this is: the request's key (address, or hashed dev and sector); 0: free.
    pub request: u64,
    pub issued_ns: u64,
    pub bytes: u32,
    pub dev: u32,
    pub op: u32,
    /// 1: count it for `cgroup` too (per-cgroup accounting is on).
    pub per_cgroup: u32,
    /// The owner's cgroup v2 id; 0 when it has none.
    pub cgroup: u64,
}

/// Per-cgroup disk key: the owner's cgroup v2 id (0: unknown), the whole disk, the op.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupDiskKey {
    pub cgroup: u64,
    pub dev: u32,
    pub op: u32,
}

/// A cgroup's completed requests on one disk with one op, updated with atomic adds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupDiskStats {
    pub bytes: u64,
    pub ios: u64,
    /// Summed issue-to-completion time.
    pub ns: u64,
    /// The latencies of `ns` one by one, as a native histogram of schema
    /// `histogram::POD_NATIVE_SCHEMA`, as the per-pod run-queue waits are
    /// (`cgroup::CgroupStats::runqueue_wait_buckets`): 264 bytes per entry, not per CPU.
    pub latency_zero: u64,
    pub latency_buckets: [u64; POD_NATIVE_BUCKETS],
}

impl core::ops::AddAssign for CgroupDiskStats {
    fn add_assign(&mut self, rhs: Self) {
        // Destructured, so that a new field fails to compile until it is added here too.
        let CgroupDiskStats {
            bytes,
            ios,
            ns,
            latency_zero,
            latency_buckets,
        } = rhs;
        self.bytes += bytes;
        self.ios += ios;
        self.ns += ns;
        self.latency_zero += latency_zero;
        for (t, v) in self.latency_buckets.iter_mut().zip(latency_buckets) {
            *t += v;
        }
    }
}

/// Default size of the per-cgroup disk map; user space sizes it from the tracked-cgroup
/// cap, as the per-cgroup CPU map.
pub const CGROUP_DISK_ENTRIES: u32 = 16384;

/// Slots of `DISK_COST`, one per program.
pub const COST_ISSUE: u32 = 0;
pub const COST_COMPLETE: u32 = 1;
pub const COST_SLOTS: u32 = 2;

/// Slots for requests in flight, node-wide (a power of two: the slot is the top bits of a
/// hash). Deep NVMe queues reach a few thousand requests in flight; with 64 Ki slots a
/// request's slot is taken by another before it completes about once per 64 Ki / (requests
/// in flight) requests. 40 bytes each: 2.5 MiB.
pub const DISK_INFLIGHT_SLOTS_LOG2: u32 = 16;
pub const DISK_INFLIGHT_ENTRIES: u32 = 1 << DISK_INFLIGHT_SLOTS_LOG2;

/// The `DISK_INFLIGHT` slot of a request key: Fibonacci hashing, so that request addresses,
/// a few hundred bytes apart, spread over all slots.
#[inline(always)]
pub fn inflight_slot(key: u64) -> u32 {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - DISK_INFLIGHT_SLOTS_LOG2)) as u32
}
/// Distinct (disk, op) pairs. Entries are allocated on first use (BPF_F_NO_PREALLOC), so
/// memory follows the pairs a node really has: 470 KB per pair on a 192-CPU node.
pub const DISK_HISTOGRAM_ENTRIES: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskCounters {
    /// An issue took over a slot still holding another request (see the module's doc).
    pub inflight_overwritten: u64,
    /// A (disk, op) histogram could not be created: the histogram map was full.
    pub histogram_map_full: u64,
    /// A (cgroup, disk, op) entry could not be created: the per-cgroup map was full.
    pub cgroup_map_full: u64,
}

/// Offsets for the tp_btf block programs, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskLayout {
    /// Argument index of `struct request *` in block_rq_issue (0 since 5.11, 1 before).
    pub issue_rq_arg: u32,
    pub request_data_len: u32,
    pub request_cmd_flags: u32,
    /// 1: the disk is `request.rq_disk` (before 5.19); 0: `request.q->disk`.
    pub disk_in_request: u32,
    pub request_rq_disk: u32,
    pub request_q: u32,
    pub queue_disk: u32,
    pub gendisk_major: u32,
    pub gendisk_first_minor: u32,
    /// 1: the owner is the bio's blkcg (the io controller is on cgroup2); 0: the issuing
    /// task's cgroup2 cgroup.
    pub owner_from_blkcg: u32,
    /// `request.bio`, `bio.bi_blkg`, `blkcg_gq.blkcg`, `blkcg.css` + `css.cgroup`,
    /// `cgroup.kn`, `kernfs_node.id`.
    pub request_bio: u32,
    pub bio_blkg: u32,
    pub blkg_blkcg: u32,
    pub blkcg_cgroup: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// Classic tracepoint fields.
    pub tp_issue_dev: u32,
    pub tp_issue_sector: u32,
    pub tp_issue_bytes: u32,
    pub tp_issue_rwbs: u32,
    pub tp_complete_dev: u32,
    pub tp_complete_sector: u32,
}

/// Name of the global holding [`DiskLayout`] in the eBPF object.
pub const DISK_LAYOUT_GLOBAL: &str = "DISK_LAYOUT";

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] structs of u64/u32 fields with explicit padding.
    unsafe impl aya::Pod for super::DiskKey {}
    unsafe impl aya::Pod for super::DiskHistograms {}
    unsafe impl aya::Pod for super::DiskZero {}
    unsafe impl aya::Pod for super::DiskCounters {}
    unsafe impl aya::Pod for super::DiskInFlight {}
    unsafe impl aya::Pod for super::CgroupDiskKey {}
    unsafe impl aya::Pod for super::CgroupDiskStats {}
    unsafe impl aya::Pod for super::DiskLayout {}
}

/// The names of this family's maps and programs in the object, shared with user space
/// (`take_map`, `ProbeSpec`): each is the identifier of a static or a function in
/// `programs`, and the agent's unit tests check every one against the built object.
pub mod names {
    pub const DISK_INFLIGHT: &str = "DISK_INFLIGHT";
    pub const DISK_HISTOGRAMS: &str = "DISK_HISTOGRAMS";
    pub const DISK_ZERO: &str = "DISK_ZERO";
    pub const DISK_COUNTERS: &str = "DISK_COUNTERS";
    pub const CGROUP_DISK: &str = "CGROUP_DISK";
    pub const DISK_ADDRESS: &str = "DISK_ADDRESS";
    pub const DISK_COST: &str = "DISK_COST";
    pub const BLOCK_RQ_ISSUE_BTF: &str = "block_rq_issue_btf";
    pub const BLOCK_RQ_COMPLETE_BTF: &str = "block_rq_complete_btf";
    pub const BLOCK_RQ_ISSUE_TP: &str = "block_rq_issue_tp";
    pub const BLOCK_RQ_COMPLETE_TP: &str = "block_rq_complete_tp";
    /// Every map of the family.
    pub const MAPS: &[&str] = &[
        DISK_INFLIGHT,
        DISK_HISTOGRAMS,
        DISK_ZERO,
        DISK_COUNTERS,
        CGROUP_DISK,
        DISK_ADDRESS,
        DISK_COST,
    ];
}

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        Global,
        bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
        helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
        macros::{btf_tracepoint, map, tracepoint},
        maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
        programs::{BtfTracePointContext, TracePointContext},
    };

    use super::{
        CGROUP_DISK_ENTRIES, COST_COMPLETE, COST_ISSUE, COST_SLOTS, CgroupDiskKey, CgroupDiskStats,
        DISK_HISTOGRAM_ENTRIES, DISK_INFLIGHT_ENTRIES, DiskCounters, DiskHistograms, DiskInFlight,
        DiskKey, DiskLayout, DiskZero, disk_op_from_req_op, disk_op_from_rwbs, inflight_slot,
    };
    use crate::probes::{
        cgroup::programs as cgroup,
        cost::{ProbeCost, programs as cost},
        histogram::{native_entry, pod_native_slot},
        kernel,
    };

    #[unsafe(no_mangle)]
    // Zeroed until user space sets it before loading (`override_global`).
    // SAFETY: all-integer #[repr(C)] data, for which zero is a valid value.
    static DISK_LAYOUT: Global<DiskLayout> = Global::new(unsafe { core::mem::zeroed() });

    #[map]
    static DISK_INFLIGHT: Array<DiskInFlight> = Array::with_max_entries(DISK_INFLIGHT_ENTRIES, 0);

    #[map]
    static DISK_HISTOGRAMS: PerCpuHashMap<DiskKey, DiskHistograms> =
        PerCpuHashMap::with_max_entries(DISK_HISTOGRAM_ENTRIES, BPF_F_NO_PREALLOC);

    /// Never written: the zeroed values new entries start from (see [`DiskZero`]).
    #[map]
    static DISK_ZERO: Array<DiskZero> = Array::with_max_entries(1, 0);

    #[map]
    static DISK_COUNTERS: PerCpuArray<DiskCounters> = PerCpuArray::with_max_entries(1, 0);

    /// Per (owner cgroup, disk, op) totals, shared by every CPU (atomic adds). The agent's
    /// upkeep deletes the entries of cgroups that are gone.
    #[map]
    static CGROUP_DISK: HashMap<CgroupDiskKey, CgroupDiskStats> =
        HashMap::with_max_entries(CGROUP_DISK_ENTRIES, 0);

    /// Per CPU, one u64 per program that a request's address passes through (see
    /// [`address`]); one per program, since a completion interrupt can run in the middle
    /// of an issue.
    #[map]
    static DISK_ADDRESS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COST_SLOTS, 0);

    #[map]
    static DISK_COST: PerCpuArray<ProbeCost> = PerCpuArray::with_max_entries(COST_SLOTS, 0);

    #[inline(always)]
    fn count(f: impl FnOnce(&mut DiskCounters)) {
        if let Some(c) = DISK_COUNTERS.get_ptr_mut(0) {
            // SAFETY: per-CPU slot.
            f(unsafe { &mut *c });
        }
    }

    /// A request's address as a plain number, to hash (0 if the cell is missing). The
    /// verifier allows no arithmetic on a BTF-typed pointer, not even when it is cast; a
    /// value stored in a map and loaded back is a number (storing a pointer needs
    /// CAP_PERFMON, which loading needs anyway). `program` is the cell's index.
    #[inline(always)]
    fn address(rq: *const u8, program: u32) -> u64 {
        let Some(cell) = DISK_ADDRESS.get_ptr_mut(program) else {
            return 0;
        };
        // SAFETY: this program's per-CPU cell (like every per-CPU value here, it assumes one
        // run of a program per CPU at a time); volatile, so that the compiler keeps the
        // store and the load.
        unsafe {
            core::ptr::write_volatile(cell, rq as u64);
            core::ptr::read_volatile(cell)
        }
    }

    #[inline(always)]
    fn on_issue(key: u64, dev: u32, op: u32, bytes: u32, owner: Option<u64>) {
        if key == 0 {
            return;
        }
        let Some(slot) = DISK_INFLIGHT.get_ptr_mut(inflight_slot(key)) else {
            return;
        };
        // SAFETY: a slot of the array; another CPU writes it only for a request with the
        // same slot at the same time, which the key check at completion tells apart.
        let slot = unsafe { &mut *slot };
        // The same request issued again (requeued) is not another request.
        if slot.request != 0 && slot.request != key {
            count(|c| c.inflight_overwritten += 1);
        }
        *slot = DiskInFlight {
            request: key,
            issued_ns: unsafe { bpf_ktime_get_ns() },
            bytes,
            dev,
            op,
            per_cgroup: u32::from(owner.is_some()),
            cgroup: owner.unwrap_or(0),
        };
    }

    #[inline(always)]
    fn on_complete(key: u64) {
        let Some(slot) = DISK_INFLIGHT.get_ptr_mut(inflight_slot(key)) else {
            return;
        };
        // SAFETY: as in on_issue.
        let slot = unsafe { &mut *slot };
        // Not this request's: issued before nodelens attached, taken over by another
        // request (counted at that issue), or a second completion event of one request
        // (partial completions; the flush sequence ends a request twice).
        if slot.request != key || key == 0 {
            return;
        }
        let inflight = *slot;
        slot.request = 0;
        let latency = unsafe { bpf_ktime_get_ns() }.saturating_sub(inflight.issued_ns);
        let hkey = DiskKey {
            dev: inflight.dev,
            op: inflight.op,
        };
        let hist = match DISK_HISTOGRAMS.get_ptr_mut(hkey) {
            Some(h) => h,
            None => {
                let Some(zero) = DISK_ZERO.get_ptr(0) else {
                    return;
                };
                // By reference: a copy of the value would not fit the 512-byte stack.
                // SAFETY: the zero entry is never written.
                #[allow(clippy::needless_borrows_for_generic_args)]
                let _ = DISK_HISTOGRAMS.insert(
                    hkey,
                    unsafe { &(*zero).histograms },
                    u64::from(BPF_NOEXIST),
                );
                match DISK_HISTOGRAMS.get_ptr_mut(hkey) {
                    Some(h) => h,
                    None => {
                        count(|c| c.histogram_map_full += 1);
                        return;
                    }
                }
            }
        };
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        let hist = unsafe { &mut *hist };
        hist.latency.add(latency);
        hist.size.add(u64::from(inflight.bytes));
        // Placed once, for the node's native histogram and the cgroup's.
        let entry = native_entry(latency);
        hist.latency_native.add_at(entry);
        if inflight.per_cgroup != 0 {
            charge_cgroup(&inflight, latency, pod_native_slot(entry));
        }
    }

    /// Adds a completed request to its owner's (cgroup, disk, op) entry; `slot` is its
    /// latency's per-pod native bucket (`histogram::pod_native_slot`).
    #[inline(always)]
    fn charge_cgroup(inflight: &DiskInFlight, latency: u64, slot: u64) {
        let key = CgroupDiskKey {
            cgroup: inflight.cgroup,
            dev: inflight.dev,
            op: inflight.op,
        };
        let stats = match CGROUP_DISK.get_ptr_mut(key) {
            Some(s) => s,
            None => {
                let Some(zero) = DISK_ZERO.get_ptr(0) else {
                    return;
                };
                // Another CPU may create it first: NOEXIST, then look up again either way.
                // By reference: a copy of the value would not fit the 512-byte stack.
                // SAFETY: the zero entry is never written.
                #[allow(clippy::needless_borrows_for_generic_args)]
                let _ = CGROUP_DISK.insert(key, unsafe { &(*zero).cgroup }, u64::from(BPF_NOEXIST));
                match CGROUP_DISK.get_ptr_mut(key) {
                    Some(s) => s,
                    None => {
                        count(|c| c.cgroup_map_full += 1);
                        return;
                    }
                }
            }
        };
        // SAFETY: the entry lives in the map; fields are updated atomically.
        unsafe {
            cgroup::add(&raw mut (*stats).bytes, u64::from(inflight.bytes));
            cgroup::add(&raw mut (*stats).ios, 1);
            cgroup::add(&raw mut (*stats).ns, latency);
            cgroup::count_native(
                &raw mut (*stats).latency_zero,
                &raw mut (*stats).latency_buckets,
                slot,
            );
        }
    }

    /// The issuing task's cgroup2 id, when per-cgroup accounting is on.
    #[inline(always)]
    fn current_owner() -> Option<u64> {
        cgroup::enabled().then(|| unsafe { bpf_get_current_cgroup_id() })
    }

    /// The owner of a request (see the module's doc), when per-cgroup accounting is on.
    /// Direct loads: a NULL anywhere on the way (a flush has no bio) reads as 0, unknown.
    #[inline(always)]
    unsafe fn request_owner(rq: *const u8, layout: &DiskLayout) -> Option<u64> {
        if !cgroup::enabled() {
            return None;
        }
        if layout.owner_from_blkcg == 0 {
            return current_owner();
        }
        unsafe {
            let bio: *const u8 = kernel::btf_load(rq, layout.request_bio);
            let blkg: *const u8 = kernel::btf_load(bio, layout.bio_blkg);
            let blkcg: *const u8 = kernel::btf_load(blkg, layout.blkg_blkcg);
            let cgrp: *const u8 = kernel::btf_load(blkcg, layout.blkcg_cgroup);
            let kn: *const u8 = kernel::btf_load(cgrp, layout.cgroup_kn);
            Some(kernel::btf_load::<u64>(kn, layout.kernfs_node_id))
        }
    }

    /// Kernel dev_t (major << 20 | minor) of the request's whole disk. Direct loads through
    /// the BTF-typed request (see kernel::btf_load): no helper calls; a NULL on the way
    /// reads as 0.
    #[inline(always)]
    unsafe fn request_dev(rq: *const u8, layout: &DiskLayout) -> u32 {
        let disk: *const u8 = if layout.disk_in_request != 0 {
            unsafe { kernel::btf_load(rq, layout.request_rq_disk) }
        } else {
            let q: *const u8 = unsafe { kernel::btf_load(rq, layout.request_q) };
            unsafe { kernel::btf_load(q, layout.queue_disk) }
        };
        let major: u32 = unsafe { kernel::btf_load(disk, layout.gendisk_major) };
        let minor: u32 = unsafe { kernel::btf_load(disk, layout.gendisk_first_minor) };
        (major << 20) | (minor & 0xfffff)
    }

    #[btf_tracepoint(function = "block_rq_issue")]
    pub fn block_rq_issue_btf(ctx: BtfTracePointContext) -> u32 {
        let t = cost::start(&DISK_COST, COST_ISSUE);
        let layout = DISK_LAYOUT.load();
        // The verifier needs a constant context offset, hence the branch.
        let rq: *const u8 = if layout.issue_rq_arg == 1 {
            ctx.arg(1)
        } else {
            ctx.arg(0)
        };
        unsafe { issue_btf(rq, &layout) };
        t.stop();
        0
    }

    #[inline(always)]
    unsafe fn issue_btf(rq: *const u8, layout: &DiskLayout) {
        let bytes: u32 = unsafe { kernel::btf_load(rq, layout.request_data_len) };
        let flags: u32 = unsafe { kernel::btf_load(rq, layout.request_cmd_flags) };
        let dev = unsafe { request_dev(rq, layout) };
        let owner = unsafe { request_owner(rq, layout) };
        on_issue(
            address(rq, COST_ISSUE),
            dev,
            disk_op_from_req_op(flags),
            bytes,
            owner,
        );
    }

    #[btf_tracepoint(function = "block_rq_complete")]
    pub fn block_rq_complete_btf(ctx: BtfTracePointContext) -> u32 {
        let t = cost::start(&DISK_COST, COST_COMPLETE);
        let rq: *const u8 = ctx.arg(0);
        on_complete(address(rq, COST_COMPLETE));
        t.stop();
        0
    }

    /// (dev, sector) folded into one key for the classic tracepoints.
    #[inline(always)]
    fn dev_sector_key(dev: u32, sector: u64) -> u64 {
        sector.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(dev)
    }

    #[tracepoint]
    pub fn block_rq_issue_tp(ctx: TracePointContext) -> u32 {
        let t = cost::start(&DISK_COST, COST_ISSUE);
        let _ = unsafe { try_issue_tp(&ctx) };
        t.stop();
        0
    }

    unsafe fn try_issue_tp(ctx: &TracePointContext) -> Result<(), i32> {
        let l = DISK_LAYOUT.load();
        let dev = unsafe { ctx.read_at::<u32>(l.tp_issue_dev as usize)? };
        let sector = unsafe { ctx.read_at::<u64>(l.tp_issue_sector as usize)? };
        let bytes = unsafe { ctx.read_at::<u32>(l.tp_issue_bytes as usize)? };
        let rwbs = unsafe { ctx.read_at::<[u8; 2]>(l.tp_issue_rwbs as usize)? };
        // No request pointer here: the owner is the issuing task.
        on_issue(
            dev_sector_key(dev, sector),
            dev,
            disk_op_from_rwbs(rwbs[0], rwbs[1]),
            bytes,
            current_owner(),
        );
        Ok(())
    }

    #[tracepoint]
    pub fn block_rq_complete_tp(ctx: TracePointContext) -> u32 {
        let t = cost::start(&DISK_COST, COST_COMPLETE);
        let l = DISK_LAYOUT.load();
        let dev = unsafe { ctx.read_at::<u32>(l.tp_complete_dev as usize) };
        let sector = unsafe { ctx.read_at::<u64>(l.tp_complete_sector as usize) };
        if let (Ok(dev), Ok(sector)) = (dev, sector) {
            on_complete(dev_sector_key(dev, sector));
        }
        t.stop();
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_of_one_tag_set_land_in_distinct_inflight_slots() {
        // A tag set's requests sit in one array, a fixed stride apart (struct request plus
        // the driver's data, cache-line aligned): a queue's worth of them must not collide.
        for stride in [320u64, 384, 448, 512, 576] {
            let base = 0xffff_8880_1234_0000u64;
            let mut slots: Vec<u32> = (0..4096)
                .map(|i| inflight_slot(base + i * stride))
                .collect();
            slots.sort_unstable();
            slots.dedup();
            assert_eq!(slots.len(), 4096, "stride {stride}");
        }
        assert!((0..1000u64).all(|k| inflight_slot(k * 7919) < DISK_INFLIGHT_ENTRIES));
    }

    #[test]
    fn rwbs_decoding_follows_blk_fill_rwbs() {
        let op = |s: &[u8]| disk_op_from_rwbs(s[0], *s.get(1).unwrap_or(&0));
        assert_eq!(op(b"R"), DISK_OP_READ);
        assert_eq!(op(b"RA"), DISK_OP_READ);
        assert_eq!(op(b"WS"), DISK_OP_WRITE);
        assert_eq!(op(b"FWS"), DISK_OP_WRITE, "preflush then write");
        assert_eq!(op(b"WFS"), DISK_OP_WRITE, "write with FUA");
        assert_eq!(op(b"F"), DISK_OP_FLUSH);
        assert_eq!(op(b"FF"), DISK_OP_FLUSH);
        assert_eq!(op(b"FS"), DISK_OP_FLUSH);
        assert_eq!(op(b"D"), DISK_OP_DISCARD);
        assert_eq!(op(b"DE"), DISK_OP_DISCARD);
        assert_eq!(op(b"N"), DISK_OP_OTHER);
        assert_eq!(disk_op_from_req_op(0), DISK_OP_READ);
        assert_eq!(disk_op_from_req_op(1 | 1 << 11), DISK_OP_WRITE);
        assert_eq!(disk_op_from_req_op(2), DISK_OP_FLUSH);
        assert_eq!(disk_op_from_req_op(3), DISK_OP_DISCARD);
        assert_eq!(disk_op_from_req_op(9), DISK_OP_OTHER);
    }
}
