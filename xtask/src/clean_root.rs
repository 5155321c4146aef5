//! `cargo xtask clean-root`: the install steps, proven on a clean Debian 12 system.
//!
//! CI reuses a machine, so a package installed there once by hand hides a missing install
//! step (it happened: the aarch64 libc headers). This check builds a clean Debian 12 root
//! with debootstrap, from the same mirror as the host, gives it only what every machine of
//! this kind starts with, and runs there, as a newcomer would:
//!
//! 1. `cargo xtask setup --test-tools`
//! 2. `cargo xtask static --arch amd64`
//! 3. `cargo xtask static --arch arm64`
//!
//! What the root starts with, and nothing else:
//! - Debian's minimal base, plus the packages every machine of this kind has on its first
//!   day: [`MACHINE_PACKAGES`];
//! - the machine's certificate authorities (its egress goes through a TLS proxy);
//! - rustup and its stable and nightly toolchains, as the machine has them on its first day:
//!   the copy leaves out the nightly pinned by `agent-ebpf/rust-toolchain.toml` and every
//!   target but the host's, which setup must install itself;
//! - a clone of the workspace's committed HEAD (not the work tree).
//!
//! It needs root (debootstrap, chroot, mounts) and the network of the package registries,
//! and takes about half an hour. It need not run in every CI: run it whenever setup's
//! package lists change.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{apt_install, require_root, run_cmd, step, workspace_root};

/// The Debian release, as the host's.
const SUITE: &str = "bookworm";
/// The host's mirror (`/etc/apt/sources.list.d/debian.sources`).
const MIRROR: &str = "http://deb.debian.org/debian";
/// The same suites the host has: llvm-NN-dev for bpf-linker comes from bookworm-security.
const SOURCES_LIST: &str = "deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
";

/// What a new machine of this kind has besides Debian's base (gcc for crates that build C,
/// git, Python 3): setup may count on these and must install the rest. The machine's
/// Node.js (with npm) is not one of Debian's; setup installs Debian's when npm is missing.
const MACHINE_PACKAGES: &[&str] = &["build-essential", "ca-certificates", "git", "python3"];

/// Environment passed into the root: the machine's certificate settings (its egress goes
/// through a TLS proxy) and rustup's. Nothing else leaks in.
const PASSED_ENV: &[&str] = &[
    "LANG",
    "TERM",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "RUSTUP_AUTO_INSTALL",
];

/// The steps run inside the root, each timed, in order: a failure stops the rest.
const STEPS: &[(&str, &str)] = &[
    ("setup --test-tools", "cargo xtask setup --test-tools"),
    ("static build, amd64", "cargo xtask static --arch amd64"),
    ("static build, arm64", "cargo xtask static --arch arm64"),
];

pub fn clean_root(keep: bool) -> Result<()> {
    require_root("the clean-root check runs debootstrap, chroot and mount")?;
    apt_install(&["debootstrap".to_owned()])?;
    let root = workspace_root().join("target/clean-root");
    remove_root(&root)?;
    let mounts = build_root(&root)?;

    let mut timings = Vec::new();
    let mut failure = None;
    for (name, command) in STEPS {
        step(&format!("in the clean root: {command}"));
        let started = Instant::now();
        let result = in_root(&root, command);
        timings.push((*name, started.elapsed(), result.is_ok()));
        if let Err(e) = result {
            failure = Some(e.context(format!("in the clean root: {command}")));
            break;
        }
    }
    eprintln!(
        "\n{:<24} {:>9}  RESULT",
        "STEP (clean Debian 12 root)", "WALL"
    );
    for (name, wall, ok) in &timings {
        eprintln!(
            "{:<24} {:>6}:{:02}  {}",
            name,
            wall.as_secs() / 60,
            wall.as_secs() % 60,
            if *ok { "passed" } else { "FAILED" }
        );
    }
    drop(mounts);
    if keep {
        step(&format!("the root is kept at {}", root.display()));
    } else {
        remove_root(&root)?;
    }
    match failure {
        Some(e) => Err(e),
        None => {
            step("the install steps work on a clean Debian 12 root");
            Ok(())
        }
    }
}

/// debootstrap, then what every machine of this kind has, then a clone of the workspace.
fn build_root(root: &Path) -> Result<Mounts> {
    fs::create_dir_all(root)?;
    let log = root.with_extension("debootstrap.log");
    step(&format!(
        "debootstrap {SUITE} into {} (a few minutes; log: {})",
        root.display(),
        log.display()
    ));
    let started = Instant::now();
    let out = fs::File::create(&log)?;
    run_cmd(
        Command::new("debootstrap")
            .args([
                "--variant=minbase",
                &format!("--include={}", MACHINE_PACKAGES.join(",")),
                SUITE,
            ])
            .arg(root)
            .arg(MIRROR)
            .stdout(out.try_clone()?)
            .stderr(out),
    )
    .with_context(|| format!("debootstrap failed: see {}", log.display()))?;
    step(&format!(
        "debootstrap done in {} s",
        started.elapsed().as_secs()
    ));
    fs::write(root.join("etc/apt/sources.list"), SOURCES_LIST)?;
    // No service starts in the root when a package is installed (prometheus and
    // victoria-metrics ship init scripts): they would listen on the host's network and keep
    // the root's mounts busy.
    let policy = root.join("usr/sbin/policy-rc.d");
    fs::write(&policy, "#!/bin/sh\nexit 101\n")?;
    fs::set_permissions(&policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf"))
        .context("copying /etc/resolv.conf into the root")?;
    copy_machine_certificates(root)?;
    copy_rustup(root)?;
    step("cloning the workspace's HEAD into the root's /src");
    if !Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(workspace_root())
        .output()?
        .stdout
        .is_empty()
    {
        step("note: the work tree has uncommitted changes; the root gets HEAD without them");
    }
    run_cmd(
        Command::new("git")
            .args(["clone", "--quiet", "--no-hardlinks"])
            .arg(workspace_root())
            .arg(root.join("src")),
    )?;
    let mounts = Mounts::mount(root)?;
    // The copied stable toolchain is the machine's first-day one: the host's later targets
    // (arm64, added by setup) go, so that setup has to add them again.
    in_root(
        root,
        "for t in $(rustup target list --installed --toolchain stable); do \
           case $t in x86_64-unknown-linux-gnu) ;; *) rustup target remove --toolchain stable $t ;; esac; \
         done",
    )?;
    Ok(mounts)
}

/// The machine's extra certificate authorities, trusted in the root as on the host.
fn copy_machine_certificates(root: &Path) -> Result<()> {
    let source = Path::new("/usr/local/share/ca-certificates");
    let target = root.join("usr/local/share/ca-certificates");
    fs::create_dir_all(&target)?;
    if let Ok(entries) = fs::read_dir(source) {
        for entry in entries.flatten() {
            copy_tree(&entry.path(), &target.join(entry.file_name()))?;
        }
    }
    let status = Command::new("chroot")
        .arg(root)
        .args(["update-ca-certificates", "--fresh"])
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("update-ca-certificates failed in the root");
    }
    Ok(())
}

/// rustup and its stable and nightly toolchains, as a new machine has them: not the
/// pinned nightly, and no bpf-linker or cargo-fuzz (setup installs those).
fn copy_rustup(root: &Path) -> Result<()> {
    let home = PathBuf::from(std::env::var("HOME").context("HOME is not set")?);
    let rustup = std::env::var("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| home.join(".rustup"));
    let cargo_bin = home.join(".cargo/bin");
    let pinned = crate::pinned_nightly()?;
    step(&format!(
        "copying rustup's stable and nightly toolchains into the root (not {pinned})"
    ));
    let target = root.join("root/.rustup");
    fs::create_dir_all(target.join("toolchains"))?;
    for entry in fs::read_dir(&rustup)? {
        let entry = entry?;
        if entry.file_name() == "toolchains" {
            continue;
        }
        copy_tree(&entry.path(), &target.join(entry.file_name()))?;
    }
    for entry in fs::read_dir(rustup.join("toolchains"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&pinned) {
            continue;
        }
        copy_tree(&entry.path(), &target.join("toolchains").join(&name))?;
    }
    // rustup itself and its proxies (symlinks to it); nothing cargo installed.
    let bin = root.join("root/.cargo/bin");
    fs::create_dir_all(&bin)?;
    let rustup_bin = cargo_bin.join("rustup");
    let rustup_inode = fs::metadata(&rustup_bin)?.ino();
    for entry in fs::read_dir(&cargo_bin)? {
        let entry = entry?;
        let path = entry.path();
        let is_rustup = fs::metadata(&path).is_ok_and(|m| m.ino() == rustup_inode);
        if is_rustup {
            copy_tree(&path, &bin.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    run_cmd(Command::new("cp").arg("-a").arg(from).arg(to))
}

/// Runs a shell command in the root, as root, in /src, with a clean environment.
fn in_root(root: &Path, command: &str) -> Result<()> {
    let mut cmd = Command::new("chroot");
    cmd.arg(root)
        .args(["/usr/bin/env", "-i"])
        .arg("HOME=/root")
        .arg("PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .arg("DEBIAN_FRONTEND=noninteractive");
    for name in PASSED_ENV {
        if let Ok(value) = std::env::var(name) {
            cmd.arg(format!("{name}={value}"));
        }
    }
    run_cmd(cmd.args(["sh", "-c"]).arg(format!("cd /src && {command}")))
}

/// /proc, /sys and /dev in the root while it is used; unmounted when dropped, after the
/// processes still running in the root are killed.
struct Mounts {
    root: PathBuf,
    points: Vec<PathBuf>,
}

impl Mounts {
    fn mount(root: &Path) -> Result<Mounts> {
        let mut mounts = Mounts {
            root: root.to_owned(),
            points: Vec::new(),
        };
        for (what, args) in [
            ("proc", &["-t", "proc", "proc"][..]),
            ("sys", &["-t", "sysfs", "sysfs"][..]),
            ("dev", &["--bind", "/dev"][..]),
        ] {
            let point = root.join(what);
            run_cmd(Command::new("mount").args(args).arg(&point))?;
            mounts.points.push(point.clone());
            // A slave: what happens under it in the root (an unmount) never reaches the
            // host, even where the host's /dev is a shared mount.
            run_cmd(Command::new("mount").arg("--make-rslave").arg(&point))?;
        }
        Ok(mounts)
    }

    /// Kills every process whose root directory is inside the root (a daemon a package
    /// started despite policy-rc.d, a build left behind), so that nothing keeps the
    /// mounts busy.
    fn kill_processes_inside(&self) {
        let Ok(entries) = fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if fs::read_link(entry.path().join("root")).is_ok_and(|r| r.starts_with(&self.root)) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        self.kill_processes_inside();
        for point in self.points.iter().rev() {
            let ok = Command::new("umount")
                .arg("--recursive")
                .arg(point)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                step(&format!(
                    "warning: cannot unmount {}: unmount it before removing the root (umount -R {})",
                    point.display(),
                    point.display()
                ));
            }
        }
    }
}

/// Removes a root from an earlier run, unmounting first whatever is still mounted in it:
/// a bind mount of /dev must never be removed through.
fn remove_root(root: &Path) -> Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    // Mount points are the fifth field, with spaces escaped as \040.
    let mut inside: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|point| point.replace("\\040", " "))
        .filter(|point| Path::new(point).starts_with(root))
        .collect();
    // Deepest first.
    inside.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in &inside {
        run_cmd(
            Command::new("umount")
                .arg("--recursive")
                .arg(point.as_str()),
        )
        .with_context(|| format!("unmounting {point} before removing the old root"))?;
    }
    step(&format!("removing the old root {}", root.display()));
    // --one-file-system: should a mount survive, rm stops at it instead of going through.
    run_cmd(
        Command::new("rm")
            .args(["-rf", "--one-file-system"])
            .arg(root),
    )
}
