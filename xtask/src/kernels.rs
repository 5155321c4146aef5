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
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{run_cmd, step, workspace_root};

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

/// Modules the guest needs for its virtio disk, in load order.
const MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
];

const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security trixie-security main
";

/// The guest's /init: mounts, modules, the exercise, then the results between markers on
/// the serial console. `nodelens.mode=` on the kernel command line picks a fallback run.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /bin /proc /sys /dev /tmp /run
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mode=normal
for arg in $(cat /proc/cmdline); do
  case "$arg" in nodelens.mode=*) mode="${arg#nodelens.mode=}";; esac
done
[ "$mode" = notracefs ] || mount -t tracefs nodev /sys/kernel/tracing
for pass in 1 2; do
  for m in /modules/*.ko; do insmod "$m" 2>/dev/null; done
done
sleep 1
# A filesystem on the second disk for the per-cgroup attribution check (writeback needs a
# filesystem; ext2 is mounted by the ext4 driver, which supports cgroup writeback).
filesystem=
if mke2fs -q /dev/vdb >/dev/null 2>&1 && mount -t ext2 /dev/vdb /mnt; then
  filesystem="--exercise-filesystem /mnt"
fi
attach=auto
[ "$mode" = tracepoint ] && attach=tracepoint
echo "NODELENS-MODE $mode"
/nodelens preflight --exercise --json --probe-attach "$attach" --exercise-device /dev/vda $filesystem \
  --metrics-out /tmp/metrics.txt --cgroup-root /sys/fs/cgroup --log-level warn > /tmp/report.json 2>/tmp/stderr.txt
echo "NODELENS-EXIT $?"
echo "NODELENS-REPORT-BEGIN"; cat /tmp/report.json; echo "NODELENS-REPORT-END"
echo "NODELENS-METRICS-BEGIN"; cat /tmp/metrics.txt; echo "NODELENS-METRICS-END"
echo "NODELENS-STDERR-BEGIN"; cat /tmp/stderr.txt; echo "NODELENS-STDERR-END"
if [ "$mode" = normal ]; then
  # The serving agent as it runs on a node, its seccomp filter in kill mode: a system call
  # missing from this kernel's allowlist ends the process, and the checks below see it.
  ip link set lo up
  /nodelens --listen-address 127.0.0.1:9560 --seccomp kill --cgroup-root /sys/fs/cgroup \
    --log-level warn 2>/tmp/agent.txt &
  agent=$!
  for i in $(seq 1 120); do
    wget -q -O /dev/null http://127.0.0.1:9560/readyz 2>/dev/null && break
    sleep 1
  done
  wget -q -O /tmp/scrape1.txt http://127.0.0.1:9560/metrics
  dd if=/dev/vda of=/dev/null bs=64k count=512 2>/dev/null
  sleep 2
  wget -q -O /tmp/scrape2.txt http://127.0.0.1:9560/metrics
  echo "NODELENS-SECCOMP-BEGIN"
  grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/$agent/status
  grep -E '^nodelens_(security_info|seccomp_denied_total|cpu_context_switches_total)' /tmp/scrape1.txt | sed 's/^/first /'
  grep -E '^nodelens_(security_info|seccomp_denied_total|cpu_context_switches_total)' /tmp/scrape2.txt | sed 's/^/second /'
  kill -TERM $agent
  wait $agent
  echo "exit $?"
  sed 's/^/log /' /tmp/agent.txt
  echo "NODELENS-SECCOMP-END"
fi
sync
poweroff -f
"#;

fn dir() -> PathBuf {
    workspace_root().join("target/kernels")
}

/// The private apt state of one architecture (amd64 keeps the original `apt` directory).
fn apt_dir(arch: Arch) -> PathBuf {
    match arch {
        Arch::Amd64 => dir().join("apt"),
        Arch::Arm64 => dir().join("apt-arm64"),
    }
}

fn apt_args(arch: Arch) -> Vec<String> {
    let d = apt_dir(arch);
    vec![
        format!("-o=APT::Architecture={}", arch.debian()),
        format!("-o=APT::Architectures={}", arch.debian()),
        format!(
            "-o=Dir::Etc::sourcelist={}",
            d.join("sources.list").display()
        ),
        "-o=Dir::Etc::sourceparts=-".into(),
        format!("-o=Dir::State::Lists={}", d.join("lists").display()),
        format!("-o=Dir::Cache={}", d.join("cache").display()),
        "-o=APT::Sandbox::User=root".into(),
    ]
}

/// Runs an apt command, retrying twice: a mirror hiccup should not fail the matrix.
fn apt_retry(make: impl FnMut() -> Command) -> Result<()> {
    apt_attempts(3, make)
}

fn apt_attempts(attempts: u32, mut make: impl FnMut() -> Command) -> Result<()> {
    let mut last = None;
    for attempt in 1..=attempts {
        let mut cmd = make();
        let out = cmd
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr
            .lines()
            .rfind(|l| l.starts_with("E:"))
            .unwrap_or("")
            .to_owned();
        step(&format!(
            "apt attempt {attempt} failed ({}): {why}",
            out.status
        ));
        last = Some(anyhow::anyhow!("{cmd:?} failed with {}: {why}", out.status));
        // The mirror does not have it: asking again will not help.
        if stderr.contains("404") {
            break;
        }
        if attempt < attempts {
            std::thread::sleep(Duration::from_secs(5));
        }
    }
    Err(last.context("no attempt made")?)
}

/// Refreshes the private package lists (at most once a day).
fn apt_update(arch: Arch) -> Result<()> {
    let d = apt_dir(arch);
    std::fs::create_dir_all(d.join("lists/partial"))?;
    std::fs::create_dir_all(d.join("cache/archives/partial"))?;
    std::fs::write(d.join("sources.list"), SOURCES)?;
    let stamp = d.join("lists/.updated");
    let fresh = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(86_400));
    if !fresh {
        step(&format!(
            "updating the private Debian package lists (bullseye, bookworm, trixie; {})",
            arch.debian()
        ));
        apt_retry(|| {
            let mut c = Command::new("apt-get");
            c.args(apt_args(arch))
                .args(["-q", "update"])
                .stdout(Stdio::null());
            c
        })?;
        std::fs::write(&stamp, "")?;
    }
    Ok(())
}

/// The `linux-image-<series>...-cloud-<arch>` packages, newest first.
fn newest_packages(arch: Arch, prefix: &str) -> Result<Vec<String>> {
    let out = Command::new("apt-cache")
        .args(apt_args(arch))
        .args([
            "search",
            "--names-only",
            &format!("^linux-image-.*-cloud-{}$", arch.debian()),
        ])
        .output()?;
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(' ').next())
        .filter(|n| n.starts_with(prefix) && !n.contains("-dbg") && !n.contains("unsigned"))
        .map(str::to_owned)
        .collect();
    // Version order: compare the numeric runs.
    names.sort_by_key(|n| {
        n.split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse::<u64>().ok())
            .collect::<Vec<_>>()
    });
    if names.is_empty() {
        bail!(
            "no {prefix}*-cloud-{} package in the Debian lists",
            arch.debian()
        );
    }
    names.reverse();
    Ok(names)
}

/// Downloads and extracts the package; returns the extracted root.
fn fetch_kernel(arch: Arch, package: &str) -> Result<PathBuf> {
    fetch_package(arch, package, 3)
}

fn fetch_package(arch: Arch, package: &str, attempts: u32) -> Result<PathBuf> {
    let root = dir().join("extracted").join(package);
    if root.join("boot").is_dir() {
        return Ok(root);
    }
    let debs = dir().join("debs");
    std::fs::create_dir_all(&debs)?;
    step(&format!("downloading {package}"));
    apt_attempts(attempts, || {
        let mut c = Command::new("apt-get");
        c.args(apt_args(arch))
            .args(["-q", "download", package])
            .current_dir(&debs);
        c
    })?;
    let deb = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .context("downloaded .deb not found")?;
    std::fs::create_dir_all(&root)?;
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    Ok(root)
}

/// vmlinuz and the virtio modules (decompressed) of an extracted kernel package.
fn kernel_files(root: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    let vmlinuz = std::fs::read_dir(root.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .context("no vmlinuz in the package")?;
    let mut all = Vec::new();
    let mut stack = vec![root.join("lib/modules"), root.join("usr/lib/modules")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                all.push(p);
            }
        }
    }
    let mut modules = Vec::new();
    for name in MODULES {
        let Some(found) = all.iter().find(|p| {
            let f = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            f == format!("{name}.ko")
                || f == format!("{name}.ko.xz")
                || f == format!("{name}.ko.zst")
        }) else {
            // Built in on this kernel, or absent on older ones (virtio_pci_*_dev).
            continue;
        };
        let path = if found.extension().is_some_and(|e| e == "xz") {
            let out = found.with_extension("");
            if !out.exists() {
                run_cmd(Command::new("xz").args(["-dk"]).arg(found))?;
            }
            out
        } else if found.extension().is_some_and(|e| e == "zst") {
            let out = found.with_extension("");
            if !out.exists() {
                run_cmd(Command::new("zstd").args(["-dq"]).arg(found))?;
            }
            out
        } else {
            found.clone()
        };
        modules.push(path);
    }
    Ok((vmlinuz, modules))
}

/// Appends one file to a newc cpio archive.
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let header = format!(
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
        0, // uid
        0, // gid
        1, // nlink
        0, // mtime
        data.len(),
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        name.len() + 1,
        0, // check
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// busybox-static for the guest: the host's on amd64; on arm64 Debian's
/// `busybox-static:arm64`, downloaded through the private apt state and extracted (never
/// installed).
fn busybox(arch: Arch) -> Result<PathBuf> {
    if arch == Arch::Amd64 {
        return Ok(PathBuf::from("/bin/busybox"));
    }
    // Merged /usr (trixie) puts it in usr/bin.
    let find = |root: &Path| {
        ["bin/busybox", "usr/bin/busybox"]
            .iter()
            .map(|p| root.join(p))
            .find(|p| p.exists())
    };
    let root = dir().join("extracted").join("busybox-static");
    if let Some(path) = find(&root) {
        return Ok(path);
    }
    let root = fetch_kernel(arch, "busybox-static")?;
    find(&root).with_context(|| format!("no busybox binary in busybox-static:{}", arch.debian()))
}

/// A kernel image qemu can load with -kernel. Debian's arm64 `vmlinuz` may be an EFI zboot
/// image (a PE file whose header says where the compressed Image is and how it is
/// compressed), which qemu 7.2 cannot load: the Image is taken out of it. Anything else
/// (bzImage, a gzipped Image) is used as is.
fn bootable_kernel(vmlinuz: &Path) -> Result<PathBuf> {
    let data = std::fs::read(vmlinuz)?;
    if data.get(4..8) != Some(b"zimg") {
        return Ok(vmlinuz.to_owned());
    }
    let u32_at = |at: usize| -> Result<usize> {
        Ok(u32::from_le_bytes(
            data.get(at..at + 4)
                .context("short zboot header")?
                .try_into()?,
        ) as usize)
    };
    let (offset, size) = (u32_at(8)?, u32_at(12)?);
    let kind: String = data
        .get(24..56)
        .context("short zboot header")?
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let payload = data
        .get(offset..offset + size)
        .context("zboot payload past the end")?;
    let image = vmlinuz.with_extension("image");
    if image.exists() {
        return Ok(image);
    }
    let tool = match kind.as_str() {
        "gzip" => "gzip",
        k if k.starts_with("zstd") => "zstd",
        "xzkern" | "xz" => "xz",
        "lzma" => "lzma",
        other => bail!(
            "{}: zboot compression {other:?} is not supported",
            vmlinuz.display()
        ),
    };
    let compressed = vmlinuz.with_extension("payload");
    std::fs::write(&compressed, payload)?;
    let out = Command::new(tool).arg("-dc").arg(&compressed).output()?;
    if !out.status.success() {
        bail!(
            "{tool} -dc of the zboot payload of {} failed",
            vmlinuz.display()
        );
    }
    std::fs::write(&image, out.stdout)?;
    Ok(image)
}

fn build_initramfs(out: &Path, nodelens: &Path, busybox: &Path, modules: &[PathBuf]) -> Result<()> {
    let busybox = std::fs::read(busybox)
        .with_context(|| format!("{} (package busybox-static)", busybox.display()))?;
    let mut cpio = Vec::new();
    let mut ino = 1;
    let mut add = |cpio: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]| {
        cpio_entry(cpio, ino, name, mode, data);
        ino += 1;
    };
    for d in ["bin", "modules", "proc", "sys", "dev", "tmp", "run", "mnt"] {
        add(&mut cpio, d, 0o040755, &[]);
    }
    add(&mut cpio, "bin/busybox", 0o100755, &busybox);
    add(&mut cpio, "init", 0o100755, INIT.as_bytes());
    add(&mut cpio, "nodelens", 0o100755, &std::fs::read(nodelens)?);
    for (i, m) in modules.iter().enumerate() {
        let name = format!(
            "modules/{i:02}-{}",
            m.file_name().unwrap_or_default().to_string_lossy()
        );
        add(&mut cpio, &name, 0o100644, &std::fs::read(m)?);
    }
    cpio_entry(&mut cpio, 0, "TRAILER!!!", 0, &[]);
    std::fs::write(out, cpio)?;
    Ok(())
}

/// One guest run's results.
struct GuestRun {
    exit: i32,
    report: serde_json::Value,
    metrics: String,
    stderr: String,
    /// The serving agent's lockdown check (normal mode only): `/proc/<pid>/status` lines,
    /// two scrapes' `first`/`second` lines, `exit N`, and its log.
    seccomp: Option<String>,
}

fn between<'a>(text: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let start = text.find(begin)? + begin.len();
    let stop = text[start..].find(end)? + start;
    Some(text[start..stop].trim_matches(['\r', '\n']))
}

/// One guest boot: the kernel and initramfs, two virtio disks (`disk`, vda, read raw;
/// `filesystem`, vdb, made ext2 by the guest), the mode passed to /init, the vCPUs, and
/// where the serial console goes.
struct Guest<'a> {
    arch: Arch,
    vmlinuz: &'a Path,
    initramfs: &'a Path,
    disk: &'a Path,
    filesystem: &'a Path,
    mode: &'a str,
    cpus: u32,
    log: &'a Path,
}

/// Boots the guest once.
fn boot(guest: &Guest) -> Result<GuestRun> {
    let Guest {
        arch,
        vmlinuz,
        initramfs,
        disk,
        filesystem,
        mode,
        cpus,
        log,
    } = *guest;
    let (qemu, machine, console) = arch.qemu();
    // arm64 under TCG emulates a different instruction set, and 32 vCPUs share one host
    // thread: those get more time.
    let limit = if arch == Arch::Arm64 || cpus > 2 {
        "900"
    } else {
        "300"
    };
    let out = Command::new("timeout")
        .args([limit, qemu])
        .args(machine)
        .args(["-m", if cpus > 2 { "2048" } else { "1024" }, "-smp"])
        .arg(cpus.to_string())
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "console={console} panic=-1 loglevel=3 nodelens.mode={mode}"
        ))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", disk.display()))
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw",
            filesystem.display()
        ))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{qemu} (packages qemu-system-x86, qemu-system-arm)"))?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    std::fs::write(log, &text)?;
    let exit = between(&text, "NODELENS-EXIT ", "\n")
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("the guest printed no result (see {})", log.display()))?;
    let report = between(&text, "NODELENS-REPORT-BEGIN", "NODELENS-REPORT-END").unwrap_or("null");
    Ok(GuestRun {
        exit,
        report: serde_json::from_str(report).unwrap_or(serde_json::Value::Null),
        // The text format ends with a newline; the markers' trimming took it.
        metrics: between(&text, "NODELENS-METRICS-BEGIN", "NODELENS-METRICS-END")
            .map(|m| format!("{m}\n"))
            .unwrap_or_default(),
        stderr: between(&text, "NODELENS-STDERR-BEGIN", "NODELENS-STDERR-END")
            .unwrap_or("")
            .to_owned(),
        seccomp: between(&text, "NODELENS-SECCOMP-BEGIN", "NODELENS-SECCOMP-END")
            .map(str::to_owned),
    })
}

/// Boots once more, at most, when the guest died before /init printed its first line (a TCG
/// boot sometimes oopses during early text patching, with no nodelens involved). A failure
/// after /init started is never retried. Each boot gets a fresh, empty second disk: the
/// guest makes its filesystem.
fn boot_with_retry(guest: &Guest, retries: &mut Vec<String>) -> Result<GuestRun> {
    let (filesystem, log) = (guest.filesystem, guest.log);
    for attempt in 0..2 {
        // A console log left by an earlier run must not decide whether to retry.
        let _ = std::fs::remove_file(log);
        let fs_img = std::fs::File::create(filesystem)?;
        fs_img.set_len(0)?;
        fs_img.set_len(96 << 20)?;
        match boot(guest) {
            Ok(run) => return Ok(run),
            Err(e) => {
                let console = std::fs::read_to_string(log).unwrap_or_default();
                if attempt == 0 && !console.contains("NODELENS-MODE ") {
                    let name = log.file_name().unwrap_or_default().to_string_lossy();
                    step(&format!(
                        "the guest died before /init started ({name}); booting once more"
                    ));
                    std::fs::copy(log, log.with_extension("log.first"))?;
                    retries.push(name.into_owned());
                    continue;
                }
                return Err(e);
            }
        }
    }
    unreachable!("the loop returns on its second attempt")
}

/// What the serving agent showed in a guest: its lockdown and that it kept counting.
struct Lockdown {
    kernel: (u32, u32),
    seccomp: Option<String>,
    no_new_privs: Option<String>,
    cap_eff: Option<String>,
    switches: (f64, f64),
    info: Option<String>,
    exit: Option<i32>,
    log: String,
}

/// CAP_BPF (bit 39), which the agent keeps before 5.19 when unprivileged BPF is disabled.
const CAP_BPF_ONLY: &str = "0000008000000000";

impl Lockdown {
    fn parse(text: &str, release: &str) -> Lockdown {
        let mut version = release
            .split(['.', '-'])
            .filter_map(|v| v.parse::<u32>().ok());
        let kernel = (version.next().unwrap_or(0), version.next().unwrap_or(0));
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let sum = |prefix: &str| -> f64 {
            text.lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .filter(|l| l.starts_with("nodelens_cpu_context_switches_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Lockdown {
            kernel,
            seccomp: field("Seccomp:"),
            no_new_privs: field("NoNewPrivs:"),
            cap_eff: field("CapEff:"),
            switches: (sum("first "), sum("second ")),
            info: text
                .lines()
                .find_map(|l| l.strip_prefix("second nodelens_security_info"))
                .map(str::to_owned),
            exit: field("exit ").and_then(|v| v.parse().ok()),
            log: text
                .lines()
                .filter_map(|l| l.strip_prefix("log "))
                .collect::<Vec<_>>()
                .join(" / "),
        }
    }

    fn problems(&self, column: &str) -> Vec<String> {
        let mut out = Vec::new();
        let caps_ok = match self.cap_eff.as_deref() {
            Some("0000000000000000") => true,
            Some(CAP_BPF_ONLY) => self.kernel < (5, 19),
            _ => false,
        };
        if self.seccomp.as_deref() != Some("2")
            || self.no_new_privs.as_deref() != Some("1")
            || !caps_ok
        {
            out.push(format!(
                "{column}: serving agent not locked down: Seccomp {:?}, NoNewPrivs {:?}, CapEff {:?} (log: {})",
                self.seccomp, self.no_new_privs, self.cap_eff, self.log
            ));
        }
        if !self
            .info
            .as_deref()
            .is_some_and(|i| i.contains("seccomp=\"kill\""))
        {
            out.push(format!(
                "{column}: no nodelens_security_info with seccomp=\"kill\" in the second scrape"
            ));
        }
        if self.switches.1 <= self.switches.0 {
            out.push(format!(
                "{column}: context switches did not grow between scrapes under seccomp ({} then {})",
                self.switches.0, self.switches.1
            ));
        }
        if self.exit != Some(0) {
            out.push(format!(
                "{column}: the serving agent exited {:?} after SIGTERM (log: {})",
                self.exit, self.log
            ));
        }
        out
    }
}

fn lockdown_table(lockdowns: &[(String, Lockdown)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "The serving agent in each guest, `--seccomp kill`: its `/proc/<pid>/status` once ready, context switches it counted between two scrapes 2 s apart, and its exit code after SIGTERM:"
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| kernel | Seccomp | NoNewPrivs | CapEff | switches counted | exit |"
    );
    let _ = writeln!(s, "|---|---|---|---|---:|---|");
    for (column, l) in lockdowns {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let caps = match l.cap_eff.as_deref() {
            Some(CAP_BPF_ONLY) => format!("{CAP_BPF_ONLY} (CAP_BPF kept)"),
            other => other.unwrap_or("-").to_owned(),
        };
        let _ = writeln!(
            s,
            "| {column} | {} | {} | {caps} | {} | {} |",
            opt(&l.seccomp),
            opt(&l.no_new_privs),
            l.switches.1 - l.switches.0,
            l.exit.map_or("-".into(), |e| e.to_string())
        );
    }
    let _ = writeln!(s);
    s
}

/// promtool's complaints about a scrape, minus the camelCase lint node_exporter's names bring.
fn promtool_problems(metrics: &str) -> Result<Vec<String>> {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(metrics.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .lines()
    .filter(|l| !l.trim().is_empty())
    .filter(|l| !(l.starts_with("node_memory_") && l.contains("camelCase")))
    .map(str::to_owned)
    .collect())
}

/// A probe's row in the table: (attach, events, ns/event, must see events: a core probe, or
/// one its family's exercise makes fire).
type Cell = (String, u64, Option<f64>, bool);

fn cells(report: &serde_json::Value) -> BTreeMap<String, Cell> {
    report["exercise"]["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["probe"].as_str().unwrap_or("").to_owned(),
                (
                    p["attach"].as_str().unwrap_or("").to_owned(),
                    p["events"].as_u64().unwrap_or(0),
                    p["ns_per_event"].as_f64(),
                    p["expect_events"].as_bool() == Some(true)
                        || core_probes(report).contains(p["probe"].as_str().unwrap_or("")),
                ),
            )
        })
        .collect()
}

/// The probes preflight marks core.
fn core_probes(report: &serde_json::Value) -> std::collections::BTreeSet<&str> {
    report["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["core"].as_bool() == Some(true))
        .filter_map(|p| p["probe"].as_str())
        .collect()
}

fn offsets(report: &serde_json::Value) -> BTreeMap<String, u64> {
    report["exercise"]["offsets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| Some((o[0].as_str()?.to_owned(), o[1].as_u64()?)))
        .collect()
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
    // (column name, report)
    let mut runs: Vec<(String, serde_json::Value)> = Vec::new();

    step("host kernel: nodelens preflight --exercise");
    let host = Command::new(nodelens)
        .args(["preflight", "--exercise", "--json", "--log-level", "warn"])
        .output()?;
    let host_report: serde_json::Value =
        serde_json::from_slice(&host.stdout).unwrap_or(serde_json::Value::Null);
    let host_kernel = host_report["node"]["kernel"]
        .as_str()
        .unwrap_or("host")
        .to_owned();
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

    // Every probe attaches on every run; core probes, and those the families' exercises
    // make fire, see events.
    for (column, report) in &runs {
        let c = cells(report);
        if c.is_empty() {
            failures.push(format!("{column}: the report lists no probes"));
        }
        for (probe, (attach, events, _, needs_events)) in &c {
            if attach == "none" || (*needs_events && *events == 0) {
                failures.push(format!("{column}: {probe} {attach} with {events} events"));
            }
        }
    }
    // The fallbacks give the same metric families as the normal run.
    let families = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next().map(str::to_owned))
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

fn render(runs: &[(String, serde_json::Value)]) -> String {
    let mut s = String::new();
    let date = crate::today();
    let _ = writeln!(
        s,
        "Kernel matrix, {date}: attach type, events during `preflight --exercise`, ns/event (as the programs time themselves, 1 run in 64)."
    );
    let _ = writeln!(s);
    let _ = write!(s, "| probe |");
    for (c, _) in runs {
        let _ = write!(s, " {c} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|{}", "---|".repeat(runs.len()));
    let all: Vec<BTreeMap<String, Cell>> = runs.iter().map(|(_, r)| cells(r)).collect();
    let mut probes: Vec<String> = all.iter().flat_map(|c| c.keys().cloned()).collect();
    probes.sort();
    probes.dedup();
    for probe in probes {
        let _ = write!(s, "| {probe} |");
        for c in &all {
            match c.get(&probe) {
                Some((attach, events, ns, _)) => {
                    let ns = ns.map_or("-".into(), |n| format!("{n:.0} ns"));
                    let _ = write!(s, " {attach}, {events}, {ns} |");
                }
                None => {
                    let _ = write!(s, " - |");
                }
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Struct offsets each kernel's BTF gave (bytes; `*` where kernels differ):"
    );
    let _ = writeln!(s);
    let normal: Vec<&(String, serde_json::Value)> =
        runs.iter().filter(|(c, _)| !c.contains(',')).collect();
    let offs: Vec<BTreeMap<String, u64>> = normal.iter().map(|(_, r)| offsets(r)).collect();
    let _ = write!(s, "| field |");
    for (c, _) in &normal {
        let _ = write!(s, " {c} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|{}", "---|".repeat(normal.len()));
    let mut fields: Vec<String> = offs.iter().flat_map(|o| o.keys().cloned()).collect();
    fields.sort();
    fields.dedup();
    for f in fields {
        let vals: Vec<Option<u64>> = offs.iter().map(|o| o.get(&f).copied()).collect();
        let differ = vals
            .iter()
            .flatten()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1;
        let _ = write!(s, "| {f}{} |", if differ { " *" } else { "" });
        for v in vals {
            let _ = write!(s, " {} |", v.map_or("-".into(), |v| v.to_string()));
        }
        let _ = writeln!(s);
    }
    s
}

/// Per-cgroup disk I/O must match the cgroups' own `io.stat` within 2%, bytes and requests,
/// for the writer (buffered writes the flusher wrote back: only the bio's blkcg names the
/// writer) and the O_DIRECT reader. With classic tracepoints the owner is the issuing task,
/// so writeback goes to the flusher's cgroup, as docs/metrics.md says: only the reader is held
/// to io.stat there.
fn check_attribution(column: &str, mode: &str, report: &serde_json::Value) -> Vec<String> {
    let rows = report["exercise"]["attribution"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if rows.is_empty() {
        let why = report["exercise"]["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w[0] == "disk attribution")
            .and_then(|w| w[1].as_str())
            .unwrap_or("the exercise did not run it");
        return vec![format!("{column}: no per-cgroup disk attribution: {why}")];
    }
    const EXPECTED: f64 = 32.0 * 1048576.0;
    let mut failures = Vec::new();
    for r in &rows {
        let (role, op) = (
            r["role"].as_str().unwrap_or(""),
            r["op"].as_str().unwrap_or(""),
        );
        let ours = (
            r["nodelens_bytes"].as_f64().unwrap_or(0.0),
            r["nodelens_ios"].as_f64().unwrap_or(0.0),
        );
        let kernel = (
            r["io_stat_bytes"].as_f64().unwrap_or(0.0),
            r["io_stat_ios"].as_f64().unwrap_or(0.0),
        );
        let main = (role, op) == ("writer", "write") || (role, op) == ("reader", "read");
        if main && kernel.0 < EXPECTED * 0.98 {
            failures.push(format!(
                "{column}: {role}'s io.stat shows {} B of {op}s, expected 32 MiB",
                kernel.0
            ));
        }
        if mode == "tracepoint" && role == "writer" {
            continue;
        }
        // Bytes within 2%. Requests: io.stat counts bios as they are submitted, nodelens
        // counts requests, after the block layer merged adjacent bios; so nodelens may count
        // fewer, never more (one more, for a split).
        let off = |a: f64, b: f64| (a - b).abs() > b.max(1.0) * 0.02 && (a - b).abs() > 1.0;
        let requests_off = ours.1 > kernel.1 + 1.0 || ours.1 < kernel.1 * 0.8;
        // With classic tracepoints the owner is the task that issues the request, and a
        // request the block layer dispatches later from its kblockd worker is charged to
        // that worker: most of the reads, not all, are the reader's (docs/metrics.md).
        let bytes_off = if mode == "tracepoint" {
            ours.0 < kernel.0 * 0.8 || ours.0 > kernel.0 * 1.02
        } else {
            off(ours.0, kernel.0)
        };
        if bytes_off || requests_off {
            failures.push(format!(
                "{column}: {role} {op}: nodelens {} B in {} requests, io.stat {} B in {} requests",
                ours.0, ours.1, kernel.0, kernel.1
            ));
        }
    }
    failures
}

/// The attribution rows of every run, as a table.
fn attribution_table(runs: &[(String, serde_json::Value)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Per-cgroup disk I/O against the cgroups' own io.stat (bytes, requests), 32 MiB written back after sync and read back with O_DIRECT:"
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| run | cgroup | op | nodelens | io.stat |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (column, report) in runs {
        for r in report["exercise"]["attribution"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let n = |key: &str| r[key].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                s,
                "| {column} | {} | {} | {:.0} B, {:.0} | {:.0} B, {:.0} |",
                r["role"].as_str().unwrap_or(""),
                r["op"].as_str().unwrap_or(""),
                n("nodelens_bytes"),
                n("nodelens_ios"),
                n("io_stat_bytes"),
                n("io_stat_ios")
            );
        }
    }
    s
}

/// Per-cgroup CPU time against `cpu.stat` (tasks that exit, share a CPU or stop): every
/// workload's within 1%.
fn check_cpu_accounting(column: &str, report: &serde_json::Value) -> Vec<String> {
    let rows = report["exercise"]["cpu_accounting"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let why = || {
        report["exercise"]["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w[0] == "cpu accounting")
            .and_then(|w| w[1].as_str())
            .unwrap_or("the exercise did not run it")
            .to_owned()
    };
    if rows.len() < 12 {
        return vec![format!(
            "{column}: {} of 12 per-cgroup CPU workloads ran: {}",
            rows.len(),
            why()
        )];
    }
    rows.iter()
        .filter_map(|r| {
            let ours = r["nodelens_seconds"].as_f64().unwrap_or(0.0);
            let kernel = r["cpu_stat_seconds"].as_f64().unwrap_or(0.0);
            ((ours - kernel).abs() > kernel * 0.01 || kernel <= 0.0).then(|| {
                format!(
                    "{column}: {}: nodelens {ours:.6} s of CPU, cpu.stat {kernel:.6} s",
                    r["workload"].as_str().unwrap_or("?")
                )
            })
        })
        .collect()
}

/// The CPU accounting rows of every run: the largest difference per run.
fn cpu_accounting_table(runs: &[(String, serde_json::Value)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Per-cgroup CPU time against the cgroups' own cpu.stat (12 cgroups: 1,000 short processes, ten busy loops that exit, one alone and nine sharing the CPUs, a loop stopped with SIGSTOP):"
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| run | cgroups | CPU seconds, nodelens | cpu.stat | largest difference |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (column, report) in runs {
        let rows = report["exercise"]["cpu_accounting"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let n = |r: &serde_json::Value, key: &str| r[key].as_f64().unwrap_or(0.0);
        let ours: f64 = rows.iter().map(|r| n(r, "nodelens_seconds")).sum();
        let kernel: f64 = rows.iter().map(|r| n(r, "cpu_stat_seconds")).sum();
        let worst = rows
            .iter()
            .filter(|r| n(r, "cpu_stat_seconds") > 0.0)
            .map(|r| (n(r, "nodelens_seconds") / n(r, "cpu_stat_seconds") - 1.0).abs() * 100.0)
            .fold(0.0, f64::max);
        let _ = writeln!(
            s,
            "| {column} | {} | {ours:.3} | {kernel:.3} | {worst:.3}% |",
            rows.len()
        );
    }
    s
}

/// Total charged and modeled map memory of a run, in bytes.
fn map_memory(report: &serde_json::Value) -> (f64, f64) {
    let rows = report["exercise"]["map_memory"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let total = |key: &str| rows.iter().filter_map(|r| r[key].as_f64()).sum::<f64>();
    (total("charged"), total("modeled"))
}

/// The agent's model of map memory must match what the kernel charges with many CPUs,
/// where the per-CPU terms dominate: within 2% in total.
fn check_map_memory(column: &str, report: &serde_json::Value) -> Option<String> {
    let (charged, modeled) = map_memory(report);
    let cpus = report["exercise"]["possible_cpus"].as_u64().unwrap_or(0);
    if cpus != u64::from(MANY_CPUS) {
        return Some(format!("{column}: the guest saw {cpus} possible CPUs"));
    }
    ((modeled - charged).abs() > charged * 0.02 || charged == 0.0).then(|| {
        format!("{column}: map memory modeled {modeled} B, the kernel charged {charged} B")
    })
}

/// sched_switch's cost per event with many CPUs busy in one cgroup, against 2 CPUs, and the
/// map memory check; TCG emulates the timings, so only the ratio means something.
fn many_cpu_summary(runs: &[(String, serde_json::Value)]) -> String {
    let find = |suffix: &str| {
        runs.iter().find(|(c, _)| {
            c.starts_with(MANY_CPU_KERNEL)
                && if suffix.is_empty() {
                    !c.contains(',')
                } else {
                    c.ends_with(suffix)
                }
        })
    };
    let many = format!("{MANY_CPUS} CPUs");
    let (Some((_, two)), Some((column, lots))) = (find(""), find(&many)) else {
        return String::new();
    };
    let ns = |r: &serde_json::Value| cells(r).get("sched_switch").and_then(|c| c.2);
    let (charged, modeled) = map_memory(lots);
    let mut s = String::new();
    let _ = writeln!(s);
    if let (Some(a), Some(b)) = (ns(two), ns(lots)) {
        let _ = writeln!(
            s,
            "sched_switch with one cgroup busy on every CPU, {column} against 2 CPUs: {:.0} ns against {:.0} ns per event under TCG, ratio {:.2}.",
            b,
            a,
            b / a
        );
    }
    let _ = writeln!(
        s,
        "Map memory with {MANY_CPUS} CPUs: the kernel charged {:.0} KiB, the agent's model says {:.0} KiB.",
        charged / 1024.0,
        modeled / 1024.0
    );
    s
}

/// What one architecture's guests gave, in boot order: report columns, scrapes, the
/// serving agents' lockdowns, failures, and boots retried.
#[derive(Default)]
struct Boots {
    runs: Vec<(String, serde_json::Value)>,
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
            let kernel = run.report["node"]["kernel"]
                .as_str()
                .unwrap_or(series)
                .to_owned();
            let column = match *mode {
                "normal" => kernel.clone(),
                "tracepoint" => format!("{kernel}, classic tracepoints forced"),
                "many-cpus" => format!("{kernel}, {MANY_CPUS} CPUs"),
                _ => format!("{kernel}, tracefs not mounted"),
            };
            if *mode == "many-cpus" {
                failures.extend(check_map_memory(&column, &run.report));
            }
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
            failures.extend(check_attribution(&column, mode, &run.report));
            failures.extend(check_cpu_accounting(&column, &run.report));
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
            if *mode == "tracepoint" {
                for (probe, (attach, _, _, _)) in cells(&run.report) {
                    if attach != "tracepoint" {
                        failures.push(format!(
                            "{column}: {probe} attached as {attach}, not tracepoint"
                        ));
                    }
                }
            }
            runs.push((column, run.report));
        }
    }
    Ok(boots)
}
