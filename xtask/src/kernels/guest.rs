//! One qemu boot of a guest and what it printed between markers on its serial console.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

use super::Arch;
use crate::step;

/// One guest run's results.
pub(super) struct GuestRun {
    pub(super) exit: i32,
    /// The preflight report, or why there is none (not printed, or not one that parses).
    pub(super) report: Result<nodelens_report::Report, String>,
    pub(super) metrics: String,
    pub(super) stderr: String,
    /// The serving agent's lockdown check (normal mode only): `/proc/<pid>/status` lines,
    /// two scrapes' `first`/`second` lines, `exit N`, and its log.
    pub(super) seccomp: Option<String>,
}

pub(super) fn between<'a>(text: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let start = text.find(begin)? + begin.len();
    let stop = text[start..].find(end)? + start;
    Some(text[start..stop].trim_matches(['\r', '\n']))
}

/// One guest boot: the kernel and initramfs, two virtio disks (`disk`, vda, read raw;
/// `filesystem`, vdb, made ext2 by the guest), the mode passed to /init, the vCPUs, and
/// where the serial console goes.
pub(super) struct Guest<'a> {
    pub(super) arch: Arch,
    pub(super) vmlinuz: &'a Path,
    pub(super) initramfs: &'a Path,
    pub(super) disk: &'a Path,
    pub(super) filesystem: &'a Path,
    pub(super) mode: &'a str,
    pub(super) cpus: u32,
    pub(super) log: &'a Path,
}

/// Boots the guest once.
pub(super) fn boot(guest: &Guest) -> Result<GuestRun> {
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
    let report = between(&text, "NODELENS-REPORT-BEGIN", "NODELENS-REPORT-END")
        .ok_or_else(|| "the guest printed no report".to_owned())
        .and_then(|r| {
            serde_json::from_str(r).map_err(|e| format!("its report does not parse: {e}"))
        });
    Ok(GuestRun {
        exit,
        report,
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
pub(super) fn boot_with_retry(guest: &Guest, retries: &mut Vec<String>) -> Result<GuestRun> {
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
