//! Builds the eBPF programs in `agent-ebpf` (nightly, bpfel target, bpf-linker) through
//! aya-build; `src/ebpf/mod.rs` embeds the object with `include_bytes_aligned!`.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "agent-ebpf")
        .ok_or_else(|| anyhow!("agent-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    // The nightly the eBPF crate pins in its rust-toolchain.toml.
    let toolchain_file = root_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={toolchain_file}");
    let channel = pinned_channel(
        &std::fs::read_to_string(&toolchain_file)
            .with_context(|| format!("reading {toolchain_file}"))?,
    )
    .ok_or_else(|| anyhow!("{toolchain_file}: no channel = \"...\" line"))?;
    aya_build::build_ebpf([package], Toolchain::Custom(&channel)).with_context(|| {
        format!("building agent-ebpf with {channel} (run `cargo xtask setup` if that toolchain or bpf-linker is missing)")
    })?;

    // nodelens_build_info{revision}: the commit this binary was built from, when known.
    println!("cargo:rerun-if-env-changed=NODELENS_REVISION");
    let revision = std::env::var("NODELENS_REVISION").ok().or_else(|| {
        std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    });
    println!(
        "cargo:rustc-env=NODELENS_REVISION={}",
        revision.unwrap_or_else(|| "unknown".into())
    );
    Ok(())
}

/// The `channel = "..."` of a rust-toolchain.toml.
fn pinned_channel(toml: &str) -> Option<String> {
    toml.lines().find_map(|l| {
        let (key, value) = l.split_once('=')?;
        (key.trim() == "channel").then(|| value.trim().trim_matches('"').to_owned())
    })
}
