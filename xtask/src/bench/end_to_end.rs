//! What applications pay: each load's own figure (ns per context switch, per I/O, per MiB
//! read under reclaim) with nothing attached, with nodelens, with the reference tool from
//! Debian's libbpf-tools, and with the floor (empty tp_btf programs on the tracepoints
//! nodelens uses), interleaved round by round so that drift hits every variant alike.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Daemon, LoopDevice, MemoryCgroup, free_addr, start};

/// One load: how to run it, and who attaches to what it exercises.
pub struct Load {
    pub name: &'static str,
    /// What the figure is: nanoseconds per this.
    pub unit: &'static str,
    /// The libbpf-tools program that measures the same thing, if there is one.
    pub reference: Option<&'static str>,
    /// Empty programs (agent-ebpf `probes/bench_floor.rs`) on the tracepoints nodelens
    /// attaches for this load.
    pub floor: &'static [(&'static str, &'static str)],
    /// The target for (nodelens − nothing) / (reference − nothing).
    pub target: Option<f64>,
    /// Rounds, as a multiple of the bench's: the disk load is the noisiest here (a loop
    /// device's worker threads share the VM's vCPUs), so it gets more.
    pub rounds_factor: usize,
    /// The variants it runs, interleaved.
    pub variants: &'static [Variant],
}

pub const LOADS: [Load; 3] = [
    Load {
        name: "stress-ng --switch 2",
        unit: "context switch",
        reference: Some("runqlat"),
        floor: &[("floor_sched_switch", "sched_switch")],
        target: Some(0.5),
        rounds_factor: 1,
        variants: &[
            Variant::Nothing,
            Variant::Nodelens,
            Variant::Reference,
            Variant::Floor,
        ],
    },
    Load {
        name: "fio 4 KiB O_DIRECT randread, libaio depth 16, loop on /dev/shm",
        unit: "I/O",
        reference: Some("biolatency"),
        floor: &[
            ("floor_block_rq_issue", "block_rq_issue"),
            ("floor_block_rq_complete", "block_rq_complete"),
        ],
        target: Some(1.0),
        rounds_factor: 3,
        // The loop device's worker switches for each I/O, which nodelens's defaults
        // measure and biolatency does not: hence the two like-with-like variants.
        variants: &[
            Variant::Nothing,
            Variant::Nodelens,
            Variant::NodelensWithoutSched,
            Variant::Reference,
            Variant::ReferenceWithRunqlat,
            Variant::Floor,
        ],
    },
    Load {
        name: "buffered reads in a 32 MiB memory cgroup",
        unit: "MiB read",
        reference: None,
        floor: &[
            ("floor_memcg_reclaim_begin", "mm_vmscan_memcg_reclaim_begin"),
            ("floor_memcg_reclaim_end", "mm_vmscan_memcg_reclaim_end"),
        ],
        target: None,
        rounds_factor: 1,
        variants: &[Variant::Nothing, Variant::Nodelens, Variant::Floor],
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Nothing,
    Nodelens,
    /// nodelens without its scheduler probes, on the disk load: an I/O through a loop
    /// device costs context switches too (its worker thread), which `sched_switch`
    /// measures and the reference tool does not, so this is the block probes' share.
    NodelensWithoutSched,
    Reference,
    /// runqlat beside the load's reference, on the disk load: the reference tools that
    /// measure what nodelens's defaults measure there (the loop worker's switches too).
    ReferenceWithRunqlat,
    Floor,
}

impl Variant {
    pub fn label(self, load: &Load) -> String {
        match self {
            Self::Nothing => "nothing".into(),
            Self::Nodelens => "nodelens (defaults)".into(),
            Self::NodelensWithoutSched => "nodelens, sched collector off".into(),
            Self::Reference => format!("{} (libbpf-tools)", load.reference.unwrap_or("-")),
            Self::ReferenceWithRunqlat => {
                format!("runqlat + {} (libbpf-tools)", load.reference.unwrap_or("-"))
            }
            Self::Floor => "floor: empty tp_btf programs".into(),
        }
    }
}

/// What the loads run on, made once.
pub struct Env {
    pub nodelens: PathBuf,
    pub object: PathBuf,
    pub loop_device: LoopDevice,
    pub memcg: MemoryCgroup,
    pub seconds: u64,
    pub reclaim_mib: u64,
}

/// ns per context switch, from stress-ng's own metric.
fn switch_load(seconds: u64) -> Result<f64> {
    let out = Command::new("stress-ng")
        .args(["--switch", "2", "--metrics-brief", "-t"])
        .arg(format!("{seconds}s"))
        .output()
        .context("stress-ng")?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("nanosecs per context switch"))
        .and_then(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "switch")
                .nth(1)?
                .parse()
                .ok()
        })
        .with_context(|| format!("no ns per context switch in stress-ng's output: {text}"))
}

/// ns per I/O (the inverse of IOPS), from fio's JSON.
fn randread_load(device: &str, seconds: u64) -> Result<f64> {
    let out = Command::new("fio")
        .args([
            "--name=nodelens-bench",
            "--direct=1",
            "--rw=randread",
            "--bs=4k",
            "--ioengine=libaio",
            "--iodepth=16",
            "--numjobs=1",
            "--time_based",
            "--output-format=json",
        ])
        .arg(format!("--filename={device}"))
        .arg(format!("--runtime={seconds}"))
        .output()
        .context("fio")?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "fio printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let iops = json["jobs"][0]["read"]["iops"].as_f64().unwrap_or(0.0);
    if iops <= 0.0 {
        bail!("fio measured no I/O");
    }
    Ok(1e9 / iops)
}

/// ns per MiB of buffered reads of the loop device inside the memory cgroup: its page
/// cache is charged to the cgroup, which has to reclaim all the time.
fn reclaim_load(memcg: &MemoryCgroup, device: &str, mib: u64) -> Result<f64> {
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec dd if={device} of=/dev/null bs=1M count={mib} status=none",
        memcg.0.display()
    );
    let started = Instant::now();
    let status = Command::new("sh").args(["-c", &script]).status()?;
    if !status.success() {
        bail!("dd in the memory cgroup failed: {status}");
    }
    Ok(started.elapsed().as_nanos() as f64 / mib as f64)
}

/// The reference tool, attached: returns once it says it is tracing.
fn start_reference(tool: &str) -> Result<Child> {
    // Line-buffered: into a pipe, the tools' stdout would hold "Tracing..." until exit.
    let mut child = Command::new("stdbuf")
        .arg("-oL")
        .arg(format!("/usr/sbin/{tool}"))
        // One report after an hour: it only has to stay attached.
        .args(["3600", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("/usr/sbin/{tool} (Debian package libbpf-tools)"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("Tracing") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .with_context(|| format!("{tool} did not start tracing"))?;
    Ok(child)
}

/// Attaches the load's empty programs; they stay attached while the returned object lives.
fn start_floor(object: &Path, programs: &[(&str, &str)]) -> Result<aya::Ebpf> {
    let btf = aya::Btf::from_sys_fs().context("kernel BTF")?;
    let mut ebpf = aya::EbpfLoader::new()
        .btf(Some(&btf))
        .load_file(object)
        .with_context(|| format!("loading {}", object.display()))?;
    for (program, tracepoint) in programs {
        let p: &mut aya::programs::BtfTracePoint = ebpf
            .program_mut(program)
            .with_context(|| format!("{program} missing from {}", object.display()))?
            .try_into()?;
        p.load(tracepoint, &btf)?;
        p.attach()?;
    }
    Ok(ebpf)
}

/// What stays attached while a variant's load runs; dropping it detaches.
#[derive(Default)]
struct Attached {
    _agent: Option<Daemon>,
    _floor: Option<aya::Ebpf>,
    tools: Vec<Child>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        for child in &mut self.tools {
            // SIGINT: the tools detach and print on it.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// Runs `load` once with `variant` attached; returns ns per unit.
pub fn run(env: &Env, index: usize, variant: Variant) -> Result<f64> {
    let load = &LOADS[index];
    let mut attached = Attached::default();
    match variant {
        Variant::Nothing => {}
        Variant::Nodelens | Variant::NodelensWithoutSched => {
            let addr = free_addr()?;
            let mut args = vec!["--listen-address".to_owned(), addr.clone()];
            if variant == Variant::NodelensWithoutSched {
                args.extend(["--collectors-disabled".to_owned(), "sched".to_owned()]);
            }
            attached._agent = Some(start("nodelens", &env.nodelens, &args, addr)?);
        }
        Variant::Reference | Variant::ReferenceWithRunqlat => {
            let tool = load.reference.context("no reference tool for this load")?;
            attached.tools.push(start_reference(tool)?);
            if variant == Variant::ReferenceWithRunqlat {
                attached.tools.push(start_reference("runqlat")?);
            }
        }
        Variant::Floor => attached._floor = Some(start_floor(&env.object, load.floor)?),
    }
    let device = env.loop_device.path.as_str();
    let ns = match index {
        0 => switch_load(env.seconds),
        1 => randread_load(device, env.seconds),
        _ => reclaim_load(&env.memcg, device, env.reclaim_mib),
    };
    drop(attached);
    ns
}

/// The median of per-round differences `variant − nothing`: each round runs every variant
/// back to back, so drift between rounds cancels.
pub fn paired_added(variant: &[f64], nothing: &[f64]) -> f64 {
    let diffs: Vec<f64> = variant.iter().zip(nothing).map(|(v, n)| v - n).collect();
    summary(&diffs).0
}

/// Median, min and max.
pub fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (
        median,
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_differences_cancel_drift() {
        // Every round slower than the last; the variant always adds 10.
        let nothing = [100.0, 200.0, 300.0];
        let variant = [110.0, 210.0, 310.0];
        assert_eq!(paired_added(&variant, &nothing), 10.0);
    }

    #[test]
    fn every_load_runs_nothing_nodelens_and_its_reference_tool() {
        for load in &LOADS {
            let has = |v| load.variants.contains(&v);
            assert!(
                has(Variant::Nothing) && has(Variant::Nodelens),
                "{}",
                load.name
            );
            assert_eq!(
                has(Variant::Reference),
                load.reference.is_some(),
                "{}",
                load.name
            );
            assert!(!has(Variant::ReferenceWithRunqlat) || load.reference.is_some());
        }
    }

    #[test]
    fn summary_takes_the_median_of_even_and_odd_counts() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert!(summary(&[]).0.is_nan());
    }
}
