//! Block I/O: latency and size of each request, per whole disk and operation (biolatency
//! semantics). A request is remembered at `block_rq_issue` and recorded at
//! `block_rq_complete`, where latency and size go into the same map entry, so both
//! histograms always count the same requests.
//!
//! tp_btf programs key requests by their `struct request` address. Classic tracepoints do
//! not expose it, so those programs key by (dev, sector); both programs of the pair must
//! use the same attach type, which user space enforces.
use agent_ebpf::{
    DISK_HISTOGRAM_ENTRIES, DISK_INFLIGHT_ENTRIES, DiskCounters, DiskHistograms, DiskInFlight,
    DiskKey, DiskLayout, disk_op_from_req_op, disk_op_from_rwbs,
};
use aya_ebpf::{
    Global,
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map, tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};

use super::{histogram, kernel};

#[unsafe(no_mangle)]
static DISK_LAYOUT: Global<DiskLayout> = Global::new(DiskLayout {
    issue_rq_arg: 0,
    request_data_len: 0,
    request_cmd_flags: 0,
    disk_in_request: 0,
    request_rq_disk: 0,
    request_q: 0,
    queue_disk: 0,
    gendisk_major: 0,
    gendisk_first_minor: 0,
    tp_issue_dev: 0,
    tp_issue_sector: 0,
    tp_issue_bytes: 0,
    tp_issue_rwbs: 0,
    tp_complete_dev: 0,
    tp_complete_sector: 0,
});

#[map]
static DISK_INFLIGHT: HashMap<u64, DiskInFlight> =
    HashMap::with_max_entries(DISK_INFLIGHT_ENTRIES, 0);

#[map]
static DISK_HISTOGRAMS: PerCpuHashMap<DiskKey, DiskHistograms> =
    PerCpuHashMap::with_max_entries(DISK_HISTOGRAM_ENTRIES, 0);

/// Never written: the zeroed value a new histogram entry starts from (1 KiB is more than
/// the 512-byte BPF stack can hold).
#[map]
static DISK_ZERO: PerCpuArray<DiskHistograms> = PerCpuArray::with_max_entries(1, 0);

#[map]
static DISK_COUNTERS: PerCpuArray<DiskCounters> = PerCpuArray::with_max_entries(1, 0);

const BPF_NOEXIST: u64 = 1;

#[inline(always)]
fn count(f: impl FnOnce(&mut DiskCounters)) {
    if let Some(c) = DISK_COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        f(unsafe { &mut *c });
    }
}

#[inline(always)]
fn on_issue(key: u64, dev: u32, op: u32, bytes: u32) {
    let inflight = DiskInFlight {
        issued_ns: unsafe { bpf_ktime_get_ns() },
        bytes,
        dev,
        op,
        _pad: 0,
    };
    if DISK_INFLIGHT.insert(key, inflight, 0).is_err() {
        count(|c| c.inflight_map_full += 1);
    }
}

#[inline(always)]
fn on_complete(key: u64) {
    // A completion without an issue (attached mid-request) is not recorded at all.
    // SAFETY: copied out before the entry is removed.
    let Some(inflight) = (unsafe { DISK_INFLIGHT.get(key) }).copied() else {
        return;
    };
    let _ = DISK_INFLIGHT.remove(key);
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
            // SAFETY: the zero entry is never written.
            let _ = DISK_HISTOGRAMS.insert(hkey, unsafe { &*zero }, BPF_NOEXIST);
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
    histogram::add(&mut hist.latency, latency);
    histogram::add(&mut hist.size, u64::from(inflight.bytes));
}

/// Kernel dev_t (major << 20 | minor) of the request's whole disk.
#[inline(always)]
unsafe fn request_dev(rq: *const u8, layout: &DiskLayout) -> Result<u32, i32> {
    let disk = if layout.disk_in_request != 0 {
        unsafe { kernel::read_ptr(rq, layout.request_rq_disk)? }
    } else {
        let q = unsafe { kernel::read_ptr(rq, layout.request_q)? };
        if q.is_null() {
            return Ok(0);
        }
        unsafe { kernel::read_ptr(q, layout.queue_disk)? }
    };
    if disk.is_null() {
        return Ok(0);
    }
    let major = unsafe { kernel::read_u32(disk, layout.gendisk_major)? };
    let minor = unsafe { kernel::read_u32(disk, layout.gendisk_first_minor)? };
    Ok((major << 20) | (minor & 0xfffff))
}

#[btf_tracepoint(function = "block_rq_issue")]
pub fn block_rq_issue_btf(ctx: BtfTracePointContext) -> u32 {
    let layout = DISK_LAYOUT.load();
    // The verifier needs a constant context offset, hence the branch.
    let rq: *const u8 = if layout.issue_rq_arg == 1 {
        ctx.arg(1)
    } else {
        ctx.arg(0)
    };
    let _ = unsafe { try_issue_btf(rq, &layout) };
    0
}

unsafe fn try_issue_btf(rq: *const u8, layout: &DiskLayout) -> Result<(), i32> {
    let bytes = unsafe { kernel::read_u32(rq, layout.request_data_len)? };
    let flags = unsafe { kernel::read_u32(rq, layout.request_cmd_flags)? };
    let dev = unsafe { request_dev(rq, layout)? };
    on_issue(rq as u64, dev, disk_op_from_req_op(flags), bytes);
    Ok(())
}

#[btf_tracepoint(function = "block_rq_complete")]
pub fn block_rq_complete_btf(ctx: BtfTracePointContext) -> u32 {
    let rq: *const u8 = ctx.arg(0);
    on_complete(rq as u64);
    0
}

/// (dev, sector) folded into one key for the classic tracepoints.
#[inline(always)]
fn dev_sector_key(dev: u32, sector: u64) -> u64 {
    sector.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(dev)
}

#[tracepoint]
pub fn block_rq_issue_tp(ctx: TracePointContext) -> u32 {
    let _ = unsafe { try_issue_tp(&ctx) };
    0
}

unsafe fn try_issue_tp(ctx: &TracePointContext) -> Result<(), i32> {
    let l = DISK_LAYOUT.load();
    let dev = unsafe { ctx.read_at::<u32>(l.tp_issue_dev as usize)? };
    let sector = unsafe { ctx.read_at::<u64>(l.tp_issue_sector as usize)? };
    let bytes = unsafe { ctx.read_at::<u32>(l.tp_issue_bytes as usize)? };
    let rwbs = unsafe { ctx.read_at::<[u8; 2]>(l.tp_issue_rwbs as usize)? };
    on_issue(
        dev_sector_key(dev, sector),
        dev,
        disk_op_from_rwbs(rwbs[0], rwbs[1]),
        bytes,
    );
    Ok(())
}

#[tracepoint]
pub fn block_rq_complete_tp(ctx: TracePointContext) -> u32 {
    let l = DISK_LAYOUT.load();
    let dev = unsafe { ctx.read_at::<u32>(l.tp_complete_dev as usize) };
    let sector = unsafe { ctx.read_at::<u64>(l.tp_complete_sector as usize) };
    if let (Ok(dev), Ok(sector)) = (dev, sector) {
        on_complete(dev_sector_key(dev, sector));
    }
    0
}
