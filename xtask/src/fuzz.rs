//! `cargo xtask fuzz --seconds N`: runs every cargo-fuzz target under `agent/fuzz/` for N
//! seconds with libFuzzer on the pinned nightly, with debug assertions (overflow checks)
//! and no sanitizer: the parsers are safe Rust, where a panic is the bug to find, and
//! AddressSanitizer would triple the build time (ring's C code and every dependency).
//! `cargo xtask fuzz --seconds 600 btf` runs one target. `--jobs` targets run at once
//! (two by default: one per core here). Each run starts from the corpus kept in the repo
//! (agent/fuzz/seeds, the test fixtures and the kept regressions) plus what earlier runs
//! found under target/fuzz/corpus. A crash fails the run, and its input is copied to agent/fuzz/regressions/<target>/, where the unit
//! test in `agent/src/fuzzing.rs` replays it on every `cargo test` from then on.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd_output, pinned_nightly, run_cmd, step, workspace_root};

/// Test fixtures that also seed a target's corpus.
const FIXTURE_SEEDS: &[(&str, &str)] = &[
    ("btf", "agent/tests/fixtures/btf"),
    ("tracefs_format", "agent/tests/fixtures/tracefs"),
];

fn fuzz_dir() -> PathBuf {
    workspace_root().join("agent/fuzz")
}

/// The targets, from agent/fuzz/Cargo.toml's `[[bin]]` names.
fn targets() -> Result<Vec<String>> {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml"))?;
    let targets: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "nodelens-fuzz")
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("no fuzz targets in agent/fuzz/Cargo.toml");
    }
    Ok(targets)
}

/// Installs cargo-fuzz when missing.
pub fn install_cargo_fuzz() -> Result<()> {
    if cmd_output("cargo", &["fuzz", "--version"]).is_some() {
        step("cargo-fuzz present");
        return Ok(());
    }
    step("installing cargo-fuzz (cargo install)");
    run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

pub fn fuzz(seconds: u64, only: &[String], jobs: usize) -> Result<()> {
    install_cargo_fuzz()?;
    let nightly = pinned_nightly()?;
    let mut targets = targets()?;
    if let Some(unknown) = only.iter().find(|t| !targets.contains(t)) {
        bail!(
            "no fuzz target {unknown}; the targets are: {}",
            targets.join(", ")
        );
    }
    if !only.is_empty() {
        targets.retain(|t| only.contains(t));
    }
    step(&format!(
        "building {} fuzz targets with {nightly} (libFuzzer, overflow checks)",
        targets.len()
    ));
    run_cmd(
        Command::new("cargo")
            .arg(format!("+{nightly}"))
            .args([
                "fuzz",
                "build",
                "-O",
                "--debug-assertions",
                "--sanitizer",
                "none",
            ])
            .current_dir(workspace_root().join("agent")),
    )?;
    let out = workspace_root().join("target/fuzz");
    let mut crashes = Vec::new();
    let jobs = jobs.max(1);
    for (batch, group) in targets.chunks(jobs).enumerate() {
        step(&format!(
            "fuzzing {} for {seconds} s ({} of {} targets)",
            group.join(" and "),
            batch * jobs + group.len(),
            targets.len()
        ));
        let mut running = Vec::new();
        for target in group {
            let artifacts = out.join("artifacts").join(target);
            running.push((
                target,
                artifacts.clone(),
                start(target, seconds, &out, &artifacts)?,
            ));
        }
        for (target, artifacts, mut child) in running {
            let status = child.wait().context("cargo fuzz run")?;
            if !status.success() {
                let kept = keep_crashes(target, &artifacts)?;
                if kept.is_empty() {
                    bail!(
                        "cargo fuzz run {target} failed without a crash input ({status}): see above"
                    );
                }
                crashes.extend(kept);
            }
        }
    }
    if !crashes.is_empty() {
        bail!(
            "fuzzing found crashes; their inputs are kept as regression tests:\n  {}",
            crashes.join("\n  ")
        );
    }
    step(&format!(
        "fuzzing: {} targets, {seconds} s each, no crash",
        targets.len()
    ));
    Ok(())
}

/// Starts libFuzzer on `target` for `seconds`: its corpus under `out`, seeded from the
/// repository's seeds, fixtures and regressions.
fn start(target: &str, seconds: u64, out: &Path, artifacts: &Path) -> Result<std::process::Child> {
    let nightly = pinned_nightly()?;
    let corpus = out.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(artifacts)?;
    let mut seeds: Vec<PathBuf> = vec![fuzz_dir().join("seeds").join(target)];
    seeds.extend(
        FIXTURE_SEEDS
            .iter()
            .filter(|(t, _)| *t == target)
            .map(|(_, dir)| workspace_root().join(dir)),
    );
    seeds.push(fuzz_dir().join("regressions").join(target));
    Command::new("cargo")
        .arg(format!("+{nightly}"))
        .args([
            "fuzz",
            "run",
            "-O",
            "--debug-assertions",
            "--sanitizer",
            "none",
            target,
        ])
        .arg(&corpus)
        .args(seeds.iter().filter(|d| d.is_dir()))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .current_dir(workspace_root().join("agent"))
        .spawn()
        .context("cargo fuzz run")
}

/// Copies libFuzzer's crash inputs into agent/fuzz/regressions/<target>/.
fn keep_crashes(target: &str, artifacts: &Path) -> Result<Vec<String>> {
    let keep = fuzz_dir().join("regressions").join(target);
    std::fs::create_dir_all(&keep)?;
    let mut kept = Vec::new();
    for entry in std::fs::read_dir(artifacts)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ["crash-", "oom-", "timeout-", "leak-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            let dest = keep.join(&name);
            std::fs::copy(entry.path(), &dest)?;
            kept.push(dest.display().to_string());
        }
    }
    if kept.is_empty() {
        kept.push(format!(
            "{target}: cargo fuzz failed without a crash input (see its output)"
        ));
    }
    Ok(kept)
}
