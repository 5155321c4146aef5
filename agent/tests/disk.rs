//! Block probes against real I/O on a loop device the test creates: counts, bytes and
//! operations checked against the device's own /sys/block/<dev>/stat.
mod common;

use std::time::Duration;

use common::{Agent, LoopDevice, Metrics, run};

fn series(m: &Metrics, family: &str, dev: &str, op: &str) -> f64 {
    m.get(&format!("{family}{{device=\"{dev}\",op=\"{op}\"}}"))
        .unwrap_or(0.0)
}

#[test]
fn loop_device_writes_reads_flushes_and_discards_are_measured() {
    let lo = LoopDevice::new(128);
    let agent = Agent::start(&[]);
    let dev = lo.dev.as_str();
    let before = agent.metrics();
    let (r0, w0, d0, f0, ws0) = lo.stat();

    // 32 MiB of O_DIRECT writes in 256 KiB requests.
    let of = format!("of={}", lo.path().display());
    run(
        "dd",
        &[
            "if=/dev/zero",
            &of,
            "bs=256k",
            "count=128",
            "oflag=direct",
            "status=none",
        ],
    );
    let mid = agent.metrics();
    let (_, w1, _, _, ws1) = lo.stat();

    let writes = series(&mid, "nodelens_disk_io_size_bytes_count", dev, "write")
        - series(&before, "nodelens_disk_io_size_bytes_count", dev, "write");
    let bytes = series(&mid, "nodelens_disk_io_size_bytes_sum", dev, "write")
        - series(&before, "nodelens_disk_io_size_bytes_sum", dev, "write");
    let sys_writes = w1 - w0;
    let sys_bytes = (ws1 - ws0) * 512.0;
    eprintln!(
        "writes: eBPF {writes} requests {bytes} bytes; /sys/block stat {sys_writes} requests {sys_bytes} bytes"
    );
    assert!(sys_writes > 0.0);
    assert!(
        (writes / sys_writes - 1.0).abs() <= 0.10,
        "write requests {writes} vs {sys_writes}"
    );
    assert!(
        (bytes / (32.0 * 1048576.0) - 1.0).abs() <= 0.10,
        "bytes {bytes} vs 32 MiB written"
    );
    assert!(
        (bytes / sys_bytes - 1.0).abs() <= 0.10,
        "bytes {bytes} vs sectors {sys_bytes}"
    );

    // Reads, a flush (fsync on the device) and a discard each land in their own op.
    let input = format!("if={}", lo.path().display());
    run(
        "dd",
        &[
            &input,
            "of=/dev/null",
            "bs=256k",
            "count=32",
            "iflag=direct",
            "status=none",
        ],
    );
    run(
        "dd",
        &[
            "if=/dev/zero",
            &of,
            "bs=4k",
            "count=1",
            "conv=fsync,notrunc",
            "status=none",
        ],
    );
    run(
        "blkdiscard",
        &[
            "--offset",
            "0",
            "--length",
            "8388608",
            lo.path().to_str().unwrap(),
        ],
    );
    let after = agent.metrics();
    let (r2, _, d2, f2, _) = lo.stat();
    let delta = |op: &str| {
        series(&after, "nodelens_disk_io_size_bytes_count", dev, op)
            - series(&mid, "nodelens_disk_io_size_bytes_count", dev, op)
    };
    eprintln!(
        "reads {} (sys {}), flushes {} (sys {}), discards {} (sys {})",
        delta("read"),
        r2 - r0,
        delta("flush"),
        f2 - f0,
        delta("discard"),
        d2 - d0
    );
    assert!(delta("read") > 0.0, "reads land in op=read");
    assert!(
        delta("flush") >= 1.0 || delta("discard") >= 1.0,
        "a flush or discard is seen"
    );
    assert!(delta("discard") >= 1.0, "blkdiscard lands in op=discard");
    assert!(
        delta("flush") >= 1.0,
        "fsync on the device lands in op=flush"
    );

    // Latency and size are recorded together: equal counts for every (device, op).
    for op in ["read", "write", "flush", "discard"] {
        assert_eq!(
            series(&after, "nodelens_disk_io_latency_seconds_count", dev, op),
            series(&after, "nodelens_disk_io_size_bytes_count", dev, op),
            "latency and size counts for {op}"
        );
    }
    let lat_sum = series(&after, "nodelens_disk_io_latency_seconds_sum", dev, "write");
    assert!(
        lat_sum > 0.0 && lat_sum < 60.0,
        "write latency sum {lat_sum}"
    );
}

#[test]
fn probes_measure_their_own_cost_and_maps_report_their_fill() {
    let lo = LoopDevice::new(64);
    let agent = Agent::start(&[]);
    let of = format!("of={}", lo.path().display());
    run(
        "dd",
        &[
            "if=/dev/zero",
            &of,
            "bs=64k",
            "count=256",
            "oflag=direct",
            "status=none",
        ],
    );
    // Fill levels come from the agent's map upkeep (every second in tests).
    let m = agent.metrics_until(Duration::from_secs(5), "DISK_HISTOGRAMS filled", |m| {
        m.get("nodelens_map_entries{map=\"DISK_HISTOGRAMS\"}")
            .unwrap_or(0.0)
            >= 1.0
    });
    // sched_switch does the scheduler's work alone on kernels with BTF (no wakeup probes).
    for probe in ["sched_switch", "block_rq_issue", "block_rq_complete"] {
        let runs = m.value(&format!(
            "nodelens_probe_runs_total{{probe=\"{probe}\",source=\"sampled\"}}"
        ));
        let secs = m.value(&format!(
            "nodelens_probe_run_seconds_total{{probe=\"{probe}\",source=\"sampled\"}}"
        ));
        assert!(runs > 0.0, "{probe} ran");
        let ns = secs / runs * 1e9;
        eprintln!("{probe}: {runs} runs, {ns:.0} ns/event");
        assert!(
            ns > 0.0 && ns < 100_000.0,
            "{probe}: {ns} ns per event is implausible"
        );
    }
    for map in [
        "RUNQUEUE_START",
        "DISK_INFLIGHT",
        "DISK_HISTOGRAMS",
        "RECLAIM_START",
    ] {
        let cap = m.value(&format!("nodelens_map_capacity{{map=\"{map}\"}}"));
        let n = m.value(&format!("nodelens_map_entries{{map=\"{map}\"}}"));
        assert!(cap > 0.0 && n <= cap, "{map}: {n} of {cap}");
    }
    assert!(m.value("nodelens_map_entries{map=\"DISK_HISTOGRAMS\"}") >= 1.0);
}
