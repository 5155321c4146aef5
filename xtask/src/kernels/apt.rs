//! Debian's kernel and busybox packages for the guests: a private apt sources list and
//! state per architecture under target/kernels (never the machine's apt configuration),
//! downloads with retries, and the files the guest needs out of an extracted package.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::Arch;
use crate::{run_cmd, step, workspace_root};

/// Modules the guest needs for its virtio disk, in load order.
pub(super) const MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
];

pub(super) const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security trixie-security main
";

pub(super) fn dir() -> PathBuf {
    workspace_root().join("target/kernels")
}

/// The private apt state of one architecture (amd64 keeps the original `apt` directory).
pub(super) fn apt_dir(arch: Arch) -> PathBuf {
    match arch {
        Arch::Amd64 => dir().join("apt"),
        Arch::Arm64 => dir().join("apt-arm64"),
    }
}

pub(super) fn apt_args(arch: Arch) -> Vec<String> {
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
pub(super) fn apt_retry(make: impl FnMut() -> Command) -> Result<()> {
    apt_attempts(3, make)
}

pub(super) fn apt_attempts(attempts: u32, mut make: impl FnMut() -> Command) -> Result<()> {
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
pub(super) fn apt_update(arch: Arch) -> Result<()> {
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
pub(super) fn newest_packages(arch: Arch, prefix: &str) -> Result<Vec<String>> {
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
pub(super) fn fetch_kernel(arch: Arch, package: &str) -> Result<PathBuf> {
    fetch_package(arch, package, 3)
}

pub(super) fn fetch_package(arch: Arch, package: &str, attempts: u32) -> Result<PathBuf> {
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
pub(super) fn kernel_files(root: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
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

/// busybox-static for the guest: the host's on amd64; on arm64 Debian's
/// `busybox-static:arm64`, downloaded through the private apt state and extracted (never
/// installed).
pub(super) fn busybox(arch: Arch) -> Result<PathBuf> {
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
