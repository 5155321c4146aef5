//! `cargo xtask kernels`: prove every probe on Debian's 5.10, 6.1 and 6.12 kernels under
//! qemu, on amd64 and on arm64, besides the host's kernel.
//!
//! For each kernel series it downloads Debian's cloud kernel package (a private apt
//! sources list and state per architecture under target/kernels, never the machine's apt
//! configuration), extracts vmlinuz and the virtio modules, builds an initramfs from
//! busybox-static (the host's on amd64, Debian's arm64 package extracted on arm64) plus a
//! statically linked nodelens (cross-compiled for arm64), boots it with qemu (TCG), and runs
//! `nodelens preflight --exercise` inside. The report and one scrape come back over the
//! serial console; the scrape is checked with promtool. It also forces the fallbacks on one
//! kernel: classic tracepoints instead of tp_btf, and tracefs not mounted.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Result, bail};

use crate::{run_cmd, step, workspace_root};

mod apt;
mod guest;
mod guest_image;
mod lockdown;
mod report;

use apt::*;
use guest::*;
use guest_image::*;
use lockdown::*;
use report::*;

/// Debian kernel series to test: (series, package name prefix).
const KERNELS: &[(&str, &str)] = &[
    ("5.10", "linux-image-5.10."),
    ("6.1", "linux-image-6.1."),
    ("6.12", "linux-image-6.12."),
];

/// The kernel on which the fallback paths are forced.
const FALLBACK_KERNEL: &str = "6.1";

/// The kernel also booted with `MANY_CPUS` CPUs: per-CPU map memory and the cost per
/// context switch when one cgroup is busy on every CPU. 6.4+ charges map memory the way
/// the agent models it.
const MANY_CPU_KERNEL: &str = "6.12";
const MANY_CPUS: u32 = 32;

/// The arm64 kernels, booted under `qemu-system-aarch64 -machine virt -cpu max` (TCG): the
/// normal mode only, to keep the emulated time down.
const ARM64_KERNELS: &[(&str, &str)] = &[
    ("6.1", "linux-image-6.1."),
    ("6.12", "linux-image-6.12."),
    ("5.10", "linux-image-5.10."),
];

/// arm64 series tested when Debian's archive has them: bullseye's security suite lists a
/// 5.10 cloud-arm64 package that the mirror does not always carry.
const ARM64_OPTIONAL: &[&str] = &["5.10"];

/// A Debian architecture the matrix boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// What the qemu command is, and the serial console the kernel writes to.
    ///
    /// TCG runs single-threaded (`thread=single`): with one host thread per vCPU, the
    /// kernel's live text patching (int3 first, then the new bytes, as when a tracepoint's
    /// static key flips on attach) races with the other vCPUs' translated code, and guests
    /// die with "Oops: int3" in code being patched, with or without nodelens. One thread
    /// running every vCPU in turn sees each patch at once.
    fn qemu(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            Arch::Amd64 => (
                "qemu-system-x86_64",
                &["-accel", "tcg,thread=single", "-cpu", "max"],
                "ttyS0",
            ),
            Arch::Arm64 => (
                "qemu-system-aarch64",
                &[
                    "-machine",
                    "virt",
                    "-accel",
                    "tcg,thread=single",
                    "-cpu",
                    "max",
                ],
                "ttyAMA0",
            ),
        }
    }
}

/// Builds the static nodelens for `arch` (release); returns the binary. arm64 is
/// cross-built with Debian's gcc-aarch64-linux-gnu as linker and C compiler (ring has C).
pub fn build_static(arch: Arch) -> Result<PathBuf> {
    let target = arch.rust_target();
    step(&format!("building a static nodelens for {target}"));
    let mut cmd = Command::new("cargo");
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--package",
        "nodelens",
        "--target",
        target,
    ])
    .env("RUSTFLAGS", "-C target-feature=+crt-static")
    .current_dir(workspace_root());
    if arch == Arch::Arm64 {
        cmd.env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        )
        .env("CC_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-gcc")
        .env("AR_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-ar");
    }
    run_cmd(&mut cmd)?;
    Ok(workspace_root().join(format!("target/{target}/release/nodelens")))
}

/// A Debian kernel of the matrix, downloaded and extracted.
pub struct DebianKernel {
    pub arch: Arch,
    pub series: &'static str,
    /// `5.10.0-46-cloud-amd64`: the package name without `linux-image-`, which is the
    /// kernel's release string.
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules: Vec<PathBuf>,
}

/// Downloads (once) and extracts the newest amd64 package of each series the matrix tests.
pub fn debian_kernels() -> Result<Vec<DebianKernel>> {
    debian_kernels_for(Arch::Amd64, KERNELS, &[], &mut Vec::new())
}

/// The kernels of `series`; an `optional` series that cannot be fetched is left out and
/// named in `skipped`, with the reason.
fn debian_kernels_for(
    arch: Arch,
    series: &[(&'static str, &str)],
    optional: &[&str],
    skipped: &mut Vec<String>,
) -> Result<Vec<DebianKernel>> {
    apt_update(arch)?;
    let mut out = Vec::new();
    for (series, prefix) in series {
        // The newest package first; an older one when the mirror lacks it (404).
        let fetched = newest_packages(arch, prefix).and_then(|candidates| {
            let mut last = None;
            let mut found = None;
            // The newest gets three attempts (mirror hiccups); older ones, tried when the
            // mirror lacks it (a 404), one each.
            for (i, candidate) in candidates.into_iter().take(12).enumerate() {
                match fetch_package(arch, &candidate, if i == 0 { 3 } else { 1 }) {
                    Ok(root) => {
                        found = Some((candidate, root));
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let (package, root) = match (found, last) {
                (Some(f), _) => f,
                (None, Some(e)) => return Err(e),
                (None, None) => bail!("no {prefix}* package"),
            };
            let (vmlinuz, modules) = kernel_files(&root)?;
            let vmlinuz = bootable_kernel(&vmlinuz)?;
            Ok(DebianKernel {
                arch,
                series,
                release: package
                    .strip_prefix("linux-image-")
                    .unwrap_or(&package)
                    .to_owned(),
                vmlinuz,
                modules,
            })
        });
        match fetched {
            Ok(kernel) => out.push(kernel),
            Err(e) if optional.contains(series) => {
                let why = format!("{series} {}: not fetched ({e:#})", arch.debian());
                step(&format!("{why}; left out"));
                skipped.push(why);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The kernels a matrix run boots, downloaded, and what it leaves out and why.
pub struct Prepared {
    debian: Vec<DebianKernel>,
    skipped: Vec<String>,
    /// Whether arm64 guests boot (the cross toolchain is there and they were asked for).
    pub arm64: bool,
}

/// Downloads the kernels of every architecture, or only `only`'s: the part of the matrix
/// that needs the network, not the CPU, so it can run while the static binaries build.
pub fn prepare(only: Option<Arch>) -> Result<Prepared> {
    let mut skipped = Vec::new();
    // arm64 needs the cross toolchain, which setup installs; without it, arm64 is left out
    // and the report says why.
    let cross_ready = crate::cmd_output("rustup", &["target", "list", "--installed"])
        .is_some_and(|t| t.lines().any(|l| l.trim() == Arch::Arm64.rust_target()))
        && crate::cmd_output("aarch64-linux-gnu-gcc", &["--version"]).is_some();
    if !cross_ready && only.is_none_or(|o| o == Arch::Arm64) {
        skipped.push(format!(
            "arm64: no cross toolchain (rustup target add {}; apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)",
            Arch::Arm64.rust_target()
        ));
    }
    let wanted =
        |arch: Arch| only.is_none_or(|o| o == arch) && (arch == Arch::Amd64 || cross_ready);
    let mut debian = if wanted(Arch::Amd64) {
        debian_kernels()?
    } else {
        Vec::new()
    };
    if wanted(Arch::Arm64) {
        debian.extend(debian_kernels_for(
            Arch::Arm64,
            ARM64_KERNELS,
            ARM64_OPTIONAL,
            &mut skipped,
        )?);
    }
    Ok(Prepared {
        debian,
        skipped,
        arm64: wanted(Arch::Arm64),
    })
}

/// Runs the matrix: every architecture, or only `only`'s guests (the host runs anyway).
pub fn kernels(only: Option<Arch>) -> Result<()> {
    let prepared = prepare(only)?;
    let nodelens = build_static(Arch::Amd64)?;
    let nodelens_arm64 = if prepared.arm64 {
        let started = std::time::Instant::now();
        let binary = build_static(Arch::Arm64)?;
        step(&format!(
            "arm64 cross build: {} s",
            started.elapsed().as_secs()
        ));
        Some(binary)
    } else {
        None
    };
    run(prepared, &nodelens, nodelens_arm64.as_deref())
}

/// Boots the prepared kernels with the static binaries given (amd64 always, arm64 when its
/// guests are prepared), and the host kernel, and checks every run.
pub fn run(prepared: Prepared, nodelens: &Path, nodelens_arm64: Option<&Path>) -> Result<()> {
    let Prepared {
        debian,
        mut skipped,
        arm64,
    } = prepared;
    let debian: Vec<DebianKernel> = if arm64 && nodelens_arm64.is_none() {
        skipped.push("arm64: no arm64 binary was built".into());
        debian
            .into_iter()
            .filter(|k| k.arch == Arch::Amd64)
            .collect()
    } else {
        debian
    };
    let nodelens_arm64 = nodelens_arm64.map(Path::to_path_buf).unwrap_or_default();
    let mut runs: Vec<Run> = Vec::new();

    step("host kernel: nodelens preflight --exercise");
    let host = Command::new(nodelens)
        .args(["preflight", "--exercise", "--json", "--log-level", "warn"])
        .output()?;
    let host_report: nodelens_report::Report =
        serde_json::from_slice(&host.stdout).map_err(|e| {
            anyhow::anyhow!(
                "the host's preflight --json printed no report ({e}): {}",
                String::from_utf8_lossy(&host.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )
        })?;
    let host_kernel = host_report.node.kernel.clone();
    runs.push((format!("{host_kernel} (host)"), host_report));

    // The two architectures' guests boot side by side, each on its own disks: a TCG guest
    // runs on one host thread, so the arm64 boots take the second core and add little to
    // the matrix's time.
    let (amd64, arm64): (Vec<&DebianKernel>, Vec<&DebianKernel>) =
        debian.iter().partition(|k| k.arch == Arch::Amd64);
    // An error on one side stops the other before its next boot.
    let stop = AtomicBool::new(false);
    let (amd64, arm64) = std::thread::scope(|scope| {
        let arm64 = scope.spawn(|| boot_all(&arm64, &nodelens_arm64, &stop));
        let amd64 = boot_all(&amd64, nodelens, &stop);
        let arm64 = arm64
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the arm64 guests' thread panicked")));
        (amd64, arm64)
    });
    let (amd64, more) = match (amd64, arm64) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(a), Err(b)) => bail!("amd64: {a:#}; arm64: {b:#}"),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let Boots {
        runs: mut booted,
        mut scrapes,
        mut lockdowns,
        mut failures,
        mut retries,
    } = amd64;
    booted.extend(more.runs);
    scrapes.extend(more.scrapes);
    lockdowns.extend(more.lockdowns);
    failures.extend(more.failures);
    retries.extend(more.retries);
    runs.extend(booted);

    for (column, report) in &runs {
        failures.extend(check_probes(column, report));
    }
    // The fallbacks give the same metric families as the normal run, but blocked time,
    // which needs the kernel's timestamps that only tp_btf reads (docs/metrics.md).
    const NEED_TP_BTF: &[&str] = &[
        "nodelens_blocked_seconds_total",
        "nodelens_cgroup_blocked_seconds_total",
    ];
    let families = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next().map(str::to_owned))
            .filter(|f| !NEED_TP_BTF.contains(&f.as_str()))
            .collect()
    };
    if let Some((_, normal)) = scrapes
        .iter()
        .find(|(c, _)| c.starts_with(FALLBACK_KERNEL) && !c.contains(','))
    {
        for (column, text) in scrapes.iter().filter(|(c, _)| c.contains(',')) {
            let (a, b) = (families(normal), families(text));
            let missing: Vec<_> = a.difference(&b).collect();
            if !missing.is_empty() {
                failures.push(format!(
                    "{column}: families missing compared with the normal run: {missing:?}"
                ));
            }
        }
    }

    let mut report = render(&runs);
    report.push_str(&many_cpu_summary(&runs));
    report.push_str(&attribution_table(&runs));
    report.push_str(&cpu_accounting_table(&runs));
    report.push_str(&slow_pod_table(&runs));
    report.push_str(&lockdown_table(&lockdowns));
    for why in &skipped {
        let _ = writeln!(report, "Left out: {why}.");
    }
    let _ = writeln!(
        report,
        "Boots retried after failing before /init's first line: {}{}",
        retries.len(),
        if retries.is_empty() {
            String::new()
        } else {
            format!(" ({})", retries.join(", "))
        }
    );
    println!("{report}");
    std::fs::write(dir().join("report.md"), &report)?;
    step(&format!(
        "report written to {}",
        dir().join("report.md").display()
    ));
    if !failures.is_empty() {
        bail!("kernel matrix failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// What one architecture's guests gave, in boot order: report columns, scrapes, the
/// serving agents' lockdowns, failures, and boots retried.
#[derive(Default)]
struct Boots {
    runs: Vec<Run>,
    scrapes: Vec<(String, String)>,
    lockdowns: Vec<(String, Lockdown)>,
    failures: Vec<String>,
    retries: Vec<String>,
}

/// Boots each of `kernels` (one architecture) in turn, in every mode it is tested in, with
/// `binary` in its initramfs, and checks each run. Stops before the next boot once `stop`
/// is set, and sets it on an error.
fn boot_all(kernels: &[&DebianKernel], binary: &Path, stop: &AtomicBool) -> Result<Boots> {
    let started = std::time::Instant::now();
    let booted = boot_each(kernels, binary, stop);
    if booted.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    if let Some(kernel) = kernels.first() {
        step(&format!(
            "{} guests done: {} s",
            kernel.arch.debian(),
            started.elapsed().as_secs()
        ));
    }
    booted
}

fn boot_each(kernels: &[&DebianKernel], binary: &Path, stop: &AtomicBool) -> Result<Boots> {
    let Some(arch) = kernels.first().map(|k| k.arch) else {
        return Ok(Boots::default());
    };
    let disk = dir().join(format!("disk-{}.img", arch.debian()));
    std::fs::File::create(&disk)?.set_len(64 << 20)?;
    let filesystem = dir().join(format!("filesystem-{}.img", arch.debian()));
    let mut boots = Boots::default();
    let Boots {
        runs,
        scrapes,
        lockdowns,
        failures,
        retries,
    } = &mut boots;
    for kernel in kernels {
        let DebianKernel {
            arch,
            series,
            release: package,
            vmlinuz,
            modules,
        } = kernel;
        let arch = *arch;
        let tag = match arch {
            Arch::Amd64 => series.to_string(),
            Arch::Arm64 => format!("{series}-arm64"),
        };
        let initramfs = dir().join(format!("initramfs-{tag}.cpio"));
        build_initramfs(&initramfs, binary, &busybox(arch)?, modules)?;
        let modes: &[&str] = if arch == Arch::Arm64 {
            &["normal"]
        } else if *series == FALLBACK_KERNEL {
            &["normal", "tracepoint", "notracefs"]
        } else if *series == MANY_CPU_KERNEL {
            &["normal", "many-cpus"]
        } else {
            &["normal"]
        };
        for mode in modes {
            if stop.load(Ordering::Relaxed) {
                bail!("stopped: the other architecture's guests failed");
            }
            step(&format!("booting {package} under qemu (mode {mode})"));
            let started = std::time::Instant::now();
            let log = dir().join(format!("console-{tag}-{mode}.log"));
            let cpus = if *mode == "many-cpus" { MANY_CPUS } else { 2 };
            let guest = Guest {
                arch,
                vmlinuz,
                initramfs: &initramfs,
                disk: &disk,
                filesystem: &filesystem,
                mode,
                cpus,
                log: &log,
            };
            let run = boot_with_retry(&guest, retries)?;
            step(&format!(
                "{package} (mode {mode}): {} s",
                started.elapsed().as_secs()
            ));
            let kernel: String = match &run.report {
                Ok(r) => r.node.kernel.clone(),
                Err(_) => (*series).to_owned(),
            };
            let column = match *mode {
                "normal" => kernel.clone(),
                "tracepoint" => format!("{kernel}, classic tracepoints forced"),
                "many-cpus" => format!("{kernel}, {MANY_CPUS} CPUs"),
                _ => format!("{kernel}, tracefs not mounted"),
            };
            if *mode == "normal" {
                match run.seccomp.as_deref().map(|t| Lockdown::parse(t, &kernel)) {
                    Some(lockdown) => {
                        failures.extend(lockdown.problems(&column));
                        lockdowns.push((column.clone(), lockdown));
                    }
                    None => failures.push(format!(
                        "{column}: the serving agent's check printed nothing"
                    )),
                }
            }
            match &run.report {
                Ok(report) => failures.extend(check_guest(&column, mode, report)),
                Err(why) => failures.push(format!("{column}: no preflight report: {why}")),
            }
            if run.exit != 0 {
                failures.push(format!(
                    "{column}: preflight --exercise exited {}: {}",
                    run.exit,
                    run.stderr.lines().last().unwrap_or("")
                ));
            }
            if run.metrics.is_empty() {
                failures.push(format!("{column}: no scrape came back"));
            } else {
                let problems = promtool_problems(&run.metrics)?;
                if !problems.is_empty() {
                    failures.push(format!("{column}: promtool check metrics: {problems:?}"));
                }
                scrapes.push((column.clone(), run.metrics.clone()));
            }
            if let Ok(report) = run.report {
                runs.push((column, report));
            }
        }
    }
    Ok(boots)
}
