//! What a guest boots: a kernel image qemu can load (an arm64 EFI zboot image is
//! unpacked) and an initramfs, a newc cpio archive written here. The archive is four
//! fields of hex and some padding per file, so a cpio crate would add more than it saves;
//! the tests read it back with busybox's cpio.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The guest's /init: mounts, modules, the exercise, then the results between markers on
/// The guest's /init: mounts, modules, the exercise, then the results between markers on
/// the serial console. `nodelens.mode=` on the kernel command line picks a fallback run.
pub(super) const INIT: &str = r#"#!/bin/busybox sh
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

/// Appends one file to a newc cpio archive.
pub(super) fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
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

/// An EFI zboot image's compressed kernel and its compression, or `None` when `data` is
/// not one. The header (linux `drivers/firmware/efi/libstub/zboot-header.S`): "zimg" at 4,
/// the payload's offset at 8 and size at 12 (little-endian), the compression's name,
/// NUL-padded, at 24..56.
pub(super) fn zboot_payload(data: &[u8]) -> Result<Option<(String, &[u8])>> {
    if data.get(4..8) != Some(b"zimg") {
        return Ok(None);
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
        .get(offset..offset.saturating_add(size))
        .context("zboot payload past the end")?;
    Ok(Some((kind, payload)))
}

/// A kernel image qemu can load with -kernel. Debian's arm64 `vmlinuz` may be an EFI zboot
/// image (a PE file whose header says where the compressed Image is and how it is
/// compressed), which qemu 7.2 cannot load: the Image is taken out of it. Anything else
/// (bzImage, a gzipped Image) is used as is.
pub(super) fn bootable_kernel(vmlinuz: &Path) -> Result<PathBuf> {
    let data = std::fs::read(vmlinuz)?;
    let Some((kind, payload)) = zboot_payload(&data)? else {
        return Ok(vmlinuz.to_owned());
    };
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

pub(super) fn build_initramfs(
    out: &Path,
    nodelens: &Path,
    busybox: &Path,
    modules: &[PathBuf],
) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// A zboot header around `payload`, as the kernel's zboot-header.S lays it out.
    fn zboot(kind: &str, payload: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 64];
        image[0..2].copy_from_slice(b"MZ");
        image[4..8].copy_from_slice(b"zimg");
        image[8..12].copy_from_slice(&64u32.to_le_bytes());
        image[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image[24..24 + kind.len()].copy_from_slice(kind.as_bytes());
        image.extend_from_slice(payload);
        image.extend_from_slice(b"trailing signature");
        image
    }

    #[test]
    fn a_zboot_image_gives_its_payload_and_compression() {
        let image = zboot("zstd22", b"compressed kernel");
        let (kind, payload) = zboot_payload(&image).unwrap().unwrap();
        assert_eq!(kind, "zstd22");
        assert_eq!(payload, b"compressed kernel");
        // A bzImage or a gzipped Image is not zboot: used as it is.
        assert!(zboot_payload(b"MZ\0\0HdrS and the rest").unwrap().is_none());
        // A header that points past the end is an error, never a panic.
        let mut short = zboot("gzip", b"x");
        short.truncate(60);
        assert!(zboot_payload(&short).is_err());
        assert!(zboot_payload(&image[..20]).is_err());
    }

    #[test]
    fn a_gzip_zboot_kernel_is_unpacked_for_qemu() {
        let kernel = b"ARM64 Image bytes".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&kernel).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let vmlinuz = dir.path().join("vmlinuz");
        std::fs::write(&vmlinuz, zboot("gzip", &gz.finish().unwrap())).unwrap();
        let image = bootable_kernel(&vmlinuz).unwrap();
        assert_eq!(std::fs::read(image).unwrap(), kernel);
        let plain = dir.path().join("bzImage");
        std::fs::write(&plain, b"not zboot").unwrap();
        assert_eq!(bootable_kernel(&plain).unwrap(), plain);
    }

    #[test]
    fn the_cpio_writer_makes_archives_busybox_unpacks() {
        let mut cpio = Vec::new();
        cpio_entry(&mut cpio, 1, "bin", 0o040755, &[]);
        // Odd lengths, so that the name and data padding both matter.
        cpio_entry(&mut cpio, 2, "bin/tool", 0o100755, b"#!/bin/sh\necho hi\n");
        cpio_entry(&mut cpio, 3, "odd", 0o100644, b"12345");
        cpio_entry(&mut cpio, 0, "TRAILER!!!", 0, &[]);
        assert_eq!(cpio.len() % 4, 0, "entries end on a 4-byte boundary");
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("busybox")
            .args(["cpio", "-i", "-d"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("busybox (package busybox-static, installed by cargo xtask setup)");
        child.stdin.take().unwrap().write_all(&cpio).unwrap();
        assert!(child.wait().unwrap().success(), "busybox cpio -i");
        let read = |p: &str| std::fs::read(dir.path().join(p)).unwrap();
        assert_eq!(read("bin/tool"), b"#!/bin/sh\necho hi\n");
        assert_eq!(read("odd"), b"12345");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("bin/tool"), 0o755);
        assert_eq!(mode("odd"), 0o644);
    }
}
