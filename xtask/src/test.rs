//! `cargo xtask test`: the project's test command, in two tiers.
//!
//! - The quick tier (`cargo xtask test`), a newcomer's first answer: setup without the
//!   kernel-matrix and fuzzing tools, lint, unit tests and every integration test against
//!   the running kernel (`--no-fail-fast`, so one failing binary does not hide the others).
//!   It ends by naming what it did not run.
//! - The full tier (`cargo xtask test --full`, what CI runs): the quick tier, then one static
//!   release build of the agent for each architecture (the kernels download meanwhile:
//!   network, not CPU), the image made of them and run under containerd, the soak, the
//!   kernel matrix and fuzzing, and the short bench last, alone on the machine, since it
//!   measures time. Each long stage runs even if an earlier one failed.
//!
//! Every stage prints its wall time, and the run ends with a table of every stage, its
//! time and its outcome.
//!
//! `cargo xtask test --repeat N --under-load` runs the integration tests N times while
//! stress-ng keeps both CPUs and the disk busy: how flaky the suite is, measured.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{
    Tools, bench, cargo, fuzz, image, is_root, kernels, lint, run_cmd, setup, soak, step,
    tools_dir, workspace_root,
};

pub struct Options {
    pub full: bool,
    /// Run only the integration tests, this many times.
    pub repeat: Option<u32>,
    /// With `repeat`: under stress-ng load.
    pub under_load: bool,
}

enum Outcome {
    Passed,
    Failed(String),
}

struct Stage {
    name: String,
    wall: Duration,
    outcome: Outcome,
}

/// The stages run so far, each timed.
#[derive(Default)]
struct Stages(Vec<Stage>);

impl Stages {
    /// Runs one stage, prints its wall time, and keeps its outcome.
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Option<T> {
        step(&format!("stage: {name}"));
        let started = Instant::now();
        let result = f();
        let wall = started.elapsed();
        let (outcome, value) = match result {
            Ok(v) => (Outcome::Passed, Some(v)),
            Err(e) => (Outcome::Failed(format!("{e:#}")), None),
        };
        step(&format!(
            "stage {name}: {} in {}",
            match &outcome {
                Outcome::Passed => "passed",
                Outcome::Failed(_) => "FAILED",
            },
            minutes(wall)
        ));
        // The table at the end keeps one line per stage: the whole reason goes here.
        if let Outcome::Failed(why) = &outcome
            && why.lines().nth(1).is_some()
        {
            eprintln!("{why}");
        }
        self.0.push(Stage {
            name: name.to_owned(),
            wall,
            outcome,
        });
        value
    }

    fn failed(&self) -> Vec<&Stage> {
        self.0
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
            .collect()
    }

    fn table(&self, total: Duration) -> String {
        let width = self
            .0
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0)
            .max(5);
        let mut s = String::new();
        let _ = writeln!(s, "\n{:<width$} {:>9}  RESULT", "STAGE", "WALL");
        for stage in &self.0 {
            let _ = writeln!(
                s,
                "{:<width$} {:>9}  {}",
                stage.name,
                minutes(stage.wall),
                match &stage.outcome {
                    Outcome::Passed => "passed".to_owned(),
                    Outcome::Failed(why) => format!("FAILED: {}", why.lines().next().unwrap_or("")),
                }
            );
        }
        let _ = writeln!(s, "{:<width$} {:>9}", "total", minutes(total));
        s
    }
}

/// `m:ss`.
fn minutes(d: Duration) -> String {
    format!("{}:{:02}", d.as_secs() / 60, d.as_secs() % 60)
}

/// What the full tier adds, named at the end of a quick run.
const FULL_ONLY: &str = "the image under containerd, the soak, the kernel matrix (Debian 5.10, 6.1, 6.12 under qemu, amd64 and arm64), fuzzing and the short bench";

pub fn test(opts: Options) -> Result<()> {
    if !is_root() {
        bail!(
            "the integration tests load eBPF programs and create cgroups: run as root (sudo -E cargo xtask test)"
        );
    }
    if let Some(n) = opts.repeat {
        return repeat(n, opts.under_load);
    }
    let started = Instant::now();
    let mut stages = Stages::default();
    let tools = if opts.full { Tools::Full } else { Tools::Quick };
    if stages.run("setup", || setup(tools)).is_none() {
        eprintln!("{}", stages.table(started.elapsed()));
        bail!("setup failed: nothing else can run (see above)");
    }
    stages.run("lint", lint);
    stages.run("unit tests", unit_tests);
    stages.run("integration tests", integration_tests);
    if opts.full {
        full_tier(&mut stages);
    }
    eprintln!("{}", stages.table(started.elapsed()));
    if !opts.full {
        eprintln!("Not run here: {FULL_ONLY}. `cargo xtask test --full` runs them too (CI does).");
    }
    let failed = stages.failed();
    if !failed.is_empty() {
        bail!(
            "{} of {} stages failed: {}",
            failed.len(),
            stages.0.len(),
            failed
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// The long stages, each run even if an earlier one failed.
fn full_tier(stages: &mut Stages) {
    // One static release build per architecture serves the soak, the matrix and the bench;
    // the kernels download while it builds.
    let built = stages.run(
        "static builds (kernels download meanwhile)",
        || -> Result<(PathBuf, Option<PathBuf>, kernels::Prepared)> {
            std::thread::scope(|scope| {
                let download = scope.spawn(|| kernels::prepare(None));
                let amd64 = kernels::build_static(kernels::Arch::Amd64);
                let prepared = download
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the download thread panicked")));
                let amd64 = amd64?;
                let prepared = prepared?;
                let arm64 = if prepared.arm64 {
                    Some(kernels::build_static(kernels::Arch::Arm64)?)
                } else {
                    None
                };
                Ok((amd64, arm64, prepared))
            })
        },
    );
    let (amd64, arm64, prepared) = match built {
        Some((a, b, p)) => (Some(a), b, Some(p)),
        None => (None, None, None),
    };
    let archive = stages.run("image: an OCI archive of both static builds", || {
        let Some(amd64) = &amd64 else {
            bail!("not run: the static builds failed");
        };
        let mut binaries = vec![image::Binary {
            arch: kernels::Arch::Amd64,
            path: amd64.clone(),
        }];
        let Some(arm64) = &arm64 else {
            bail!("no arm64 build: the image must hold both platforms");
        };
        binaries.push(image::Binary {
            arch: kernels::Arch::Arm64,
            path: arm64.clone(),
        });
        image::assemble(&binaries)
    });
    stages.run(
        "the image under containerd, as the DaemonSet runs it",
        || {
            let Some(archive) = &archive else {
                bail!("not run: no image");
            };
            nodelens_tests("image", &["--ignored"], Some(archive))
        },
    );
    stages.run("soak, 3 minutes", || soak::soak(3, amd64.as_deref()));
    stages.run("kernel matrix", || match (prepared, &amd64) {
        (Some(prepared), Some(amd64)) => kernels::run(prepared, amd64, arm64.as_deref()),
        _ => bail!("not run: the static builds failed"),
    });
    stages.run("fuzzing, 30 s per target, two at a time", || {
        fuzz::fuzz(30, &[], 2)
    });
    // Last and alone: it measures time.
    stages.run("short bench", || {
        bench::bench(bench::Options {
            short: true,
            nodelens: amd64.clone(),
            scale_only: false,
        })
    });
}

/// Unit tests of every crate. The kernel's own BTF is hidden from the agent's (a tmpfs over
/// /sys/kernel/btf in a private mount namespace): layout tests must pass on fixtures alone,
/// on any host. The bench's clean-up of killed runs makes cgroups and loop devices, so its
/// test runs as root, with the others.
fn unit_tests() -> Result<()> {
    let mut failures = Vec::new();
    let mut attempt = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            failures.push(format!("{what}: {e:#}"));
        }
    };
    attempt(
        "agent and xtask, BTF hidden",
        run_cmd(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg("mount -t tmpfs nodelens-no-btf /sys/kernel/btf && test ! -e /sys/kernel/btf/vmlinux && cargo test --package nodelens --lib && exec cargo test --package xtask --bins")
                .current_dir(workspace_root()),
        ),
    );
    attempt(
        "agent-ebpf",
        cargo(&["test", "--package", "agent-ebpf", "--lib"]),
    );
    attempt(
        "xtask, as root",
        cargo(&[
            "test",
            "--package",
            "xtask",
            "--bins",
            "--",
            "--ignored",
            "leftovers",
        ]),
    );
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// Every integration test binary, one test at a time (they share kernel state: probes,
/// tracefs, CPUs), all of them even when one fails.
fn integration_tests() -> Result<()> {
    nodelens_tests("*", &[], None)
}

/// `cargo test` of the agent's integration test binaries matching `test`, one test at a
/// time, with the test tools' directory and, for the image test, the image's archive.
fn nodelens_tests(test: &str, test_args: &[&str], image_archive: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.args([
        "test",
        "--package",
        "nodelens",
        "--no-fail-fast",
        "--test",
        test,
    ])
    .args(["--", "--test-threads=1"])
    .args(test_args)
    .env("NODELENS_TOOLS_DIR", tools_dir())
    .current_dir(workspace_root());
    if let Some(archive) = image_archive {
        cmd.env("NODELENS_IMAGE_ARCHIVE", archive);
    }
    run_cmd(&mut cmd)
}

/// stress-ng keeping both CPUs and the disk busy until dropped.
struct Load(Child);

impl Load {
    fn start() -> Result<Load> {
        let child = Command::new("stress-ng")
            .args(["--cpu", "2", "--hdd", "1", "--timeout", "0", "--quiet"])
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("stress-ng: {e}"))?;
        Ok(Load(child))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
        // stress-ng's workers leave with their parent; make sure of it.
        let _ = Command::new("pkill")
            .args(["-KILL", "-x", "stress-ng-cpu"])
            .status();
        let _ = Command::new("pkill")
            .args(["-KILL", "-x", "stress-ng-hdd"])
            .status();
    }
}

/// The integration tests `n` times, under load if asked: a table of runs and outcomes.
fn repeat(n: u32, under_load: bool) -> Result<()> {
    setup(Tools::Quick)?;
    step("building the integration tests");
    run_cmd(
        Command::new("cargo")
            .args(["test", "--package", "nodelens", "--no-run", "--test", "*"])
            .current_dir(workspace_root()),
    )?;
    let started = Instant::now();
    let mut stages = Stages::default();
    for i in 1..=n {
        let load = if under_load {
            Some(Load::start()?)
        } else {
            None
        };
        let name = format!(
            "integration tests, run {i} of {n}{}",
            if under_load {
                " (stress-ng --cpu 2 --hdd 1)"
            } else {
                ""
            }
        );
        stages.run(&name, integration_tests);
        drop(load);
    }
    eprintln!("{}", stages.table(started.elapsed()));
    let failed = stages.failed().len();
    if failed > 0 {
        bail!("{failed} of {n} runs failed");
    }
    step(&format!("{n} of {n} runs passed"));
    Ok(())
}
