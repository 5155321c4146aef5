//! `cargo xtask btf-fixtures`: the BTF of every kernel the matrix boots (and of the host),
//! pruned to what nodelens reads, as test fixtures in `agent/tests/fixtures/btf`. With
//! them, the layout tests check offset resolution against real kernels on any host.
//!
//! A Debian kernel package has no separate BTF: it sits in the `.BTF` section of the
//! compressed vmlinux inside vmlinuz. This finds the compressed payload by its magic,
//! decompresses it with the matching tool, and cuts the blob out by its header. The
//! pruning itself is the agent's own BTF reader (an ignored test in `ebpf/btf/fixtures.rs`), so
//! there is only one BTF parser in the project.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{kernels, run_cmd, step, workspace_root};

/// Compression magics the kernel's self-decompressor knows, and the tool that undoes each.
const COMPRESSORS: &[(&[u8], &str)] = &[
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
    (&[0x1f, 0x8b, 0x08], "gzip"),
    // LZ4's legacy frame, which the kernel uses (Debian's 5.10).
    (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
];

/// Where an x86 bzImage keeps its compressed vmlinux: the boot protocol's setup header says
/// (`setup_sects` at 0x1f1, `payload_offset` at 0x248, since protocol 2.08).
fn bzimage_payload(data: &[u8]) -> Option<usize> {
    if data.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let setup_sects = match *data.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let offset = u32::from_le_bytes(data.get(0x248..0x24c)?.try_into().ok()?) as usize;
    Some((setup_sects + 1) * 512 + offset)
}

/// A BTF header: magic, version 1, flags 0, header length 24.
const BTF_HEADER: &[u8] = &[0x9f, 0xeb, 1, 0, 24, 0, 0, 0];

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decompresses `data` with `tool`; trailing bytes after the stream make the tools exit
/// non-zero, so what counts is the output.
fn decompress(tool: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {tool}"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out.stdout)
}

/// The BTF blob inside a decompressed kernel image, cut out by its header's lengths.
fn btf_in(image: &[u8]) -> Option<Vec<u8>> {
    let mut from = 0;
    while let Some(at) = find(&image[from..], BTF_HEADER).map(|i| i + from) {
        let u32_at = |o: usize| -> Option<usize> {
            Some(u32::from_le_bytes(image.get(at + o..at + o + 4)?.try_into().ok()?) as usize)
        };
        if let (Some(type_len), Some(str_off), Some(str_len)) = (u32_at(12), u32_at(16), u32_at(20))
        {
            let end = at + 24 + str_off + str_len;
            // The kernel's BTF has tens of thousands of types; a stray match is tiny.
            if str_off == type_len && type_len > 1 << 20 && end <= image.len() {
                return Some(image[at..end].to_vec());
            }
        }
        from = at + 1;
    }
    None
}

pub fn extract_btf(vmlinuz: &Path) -> Result<Vec<u8>> {
    let data = std::fs::read(vmlinuz)?;
    // The bzImage header points at the payload; otherwise (arm64's gzip-compressed Image)
    // the first magic of a known compressor marks it.
    let payload = bzimage_payload(&data);
    for (magic, tool) in COMPRESSORS {
        let at = match payload {
            Some(at) if data.get(at..at + magic.len()) == Some(magic) => at,
            Some(_) => continue,
            None => match find(&data, magic) {
                Some(at) => at,
                None => continue,
            },
        };
        let image = decompress(tool, &data[at..])?;
        if let Some(btf) = btf_in(&image) {
            return Ok(btf);
        }
    }
    bail!("no BTF found in {}", vmlinuz.display())
}

pub fn btf_fixtures() -> Result<()> {
    let sources = workspace_root().join("target/btf");
    std::fs::create_dir_all(&sources)?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    step(&format!(
        "host kernel {}: /sys/kernel/btf/vmlinux",
        release.trim()
    ));
    std::fs::copy(
        "/sys/kernel/btf/vmlinux",
        sources.join(format!("{}.btf", release.trim())),
    )
    .context("/sys/kernel/btf/vmlinux")?;
    for kernel in kernels::debian_kernels()? {
        step(&format!(
            "{}: BTF from {}",
            kernel.release,
            kernel.vmlinuz.display()
        ));
        let btf = extract_btf(&kernel.vmlinuz)?;
        std::fs::write(sources.join(format!("{}.btf", kernel.release)), btf)?;
    }
    step("pruning to what nodelens reads (agent/tests/fixtures/btf)");
    run_cmd(
        Command::new("cargo")
            .args([
                "test",
                "--package",
                "nodelens",
                // The agent's unit tests live in its library.
                "--lib",
                "--",
                "--ignored",
                "--exact",
                "ebpf::btf::fixtures::regenerate",
                "--nocapture",
            ])
            .env("NODELENS_BTF_SOURCES", &sources)
            .current_dir(workspace_root()),
    )
}

/// Where the fixtures live, for the docs.
#[allow(dead_code)]
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("agent/tests/fixtures/btf")
}
