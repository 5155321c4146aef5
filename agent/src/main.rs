//! nodelens: eBPF node agent for Kubernetes.
use std::{process::ExitCode, sync::Arc};

use clap::Parser;

mod agent;
mod cgroups;
mod collectors;
mod config;
mod ebpf;
mod exercise;
mod logging;
mod metrics;
mod preflight;
mod server;

use config::{Cli, Command, Config};

/// Usage and configuration errors.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    // One malloc arena: the agent's threads are few and mostly idle, and per-thread arenas
    // (64 MB of address space each, partly resident) would cost more memory than they save
    // in contention.
    // SAFETY: called before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's own message spans several lines; keep the first, which names the flag.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("nodelens: {first} (see 'nodelens --help')");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = match Config::resolve(cli.flags).and_then(|c| c.check_host_paths().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nodelens: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    logging::init(config.log_level, config.log_format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(config),
        Command::Preflight {
            json,
            output_dir,
            exercise,
            exercise_device,
            metrics_out,
        } => {
            let exercise = exercise.then_some((exercise_device.as_deref(), metrics_out.as_deref()));
            run_preflight(&config, json, output_dir.as_deref(), exercise)
        }
    }
}

/// `exercise`: Some((device, metrics file)) for `--exercise`.
type ExerciseArgs<'a> = Option<(Option<&'a std::path::Path>, Option<&'a std::path::Path>)>;

fn run_preflight(
    config: &Config,
    json: bool,
    output_dir: Option<&std::path::Path>,
    exercise: ExerciseArgs,
) -> ExitCode {
    let mut report = preflight::run(config);
    if let Some((device, metrics_out)) = exercise {
        let e = exercise::run(config, device, metrics_out);
        if !e.failed_core.is_empty() {
            report.ok = false;
            report.fixes.push(format!(
                "core probes saw no events: {}",
                e.failed_core.join(", ")
            ));
        }
        report.exercise = Some(e);
    }
    if json {
        print!("{}", preflight::to_json(&report));
    } else {
        print!("{}", preflight::render_text(&report));
    }
    if let Some(dir) = output_dir
        && let Err(e) = preflight::write(dir, &report)
    {
        eprintln!(
            "nodelens: preflight: cannot write to {}: {e} (mount a writable emptyDir there)",
            dir.display()
        );
        return ExitCode::FAILURE;
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        for fix in &report.fixes {
            eprintln!("nodelens: preflight: {fix}");
        }
        ExitCode::FAILURE
    }
}

fn run(config: Config) -> ExitCode {
    // One thread serves everything: a scrape is a short burst of reads from memory, and
    // probe loading runs once on the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nodelens: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen_address).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "nodelens: listen_address: cannot listen on {}: {e} (choose a free port with --listen-address)",
                    config.listen_address
                );
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let probes = Arc::new(ebpf::Probes::default());
        // The identity preflight found (it reads the host's machine id through a hostPath),
        // else what this container can see.
        let dir = config.preflight_dir.as_deref();
        let identity = dir
            .and_then(preflight::read_identity)
            .unwrap_or_else(|| preflight::node_identity(&config));
        let preflight_text = dir.and_then(preflight::read_report_text);
        let agent = Arc::new(agent::AgentState::new(probes.clone(), identity, preflight_text));
        let resolver = Arc::new(std::sync::Mutex::new(cgroup_resolver(&config)));
        let registry = metrics::registry(
            collectors::build(&config, probes.clone(), resolver.clone()),
            agent.clone(),
        );
        let server = Arc::new(server::Server {
            registry: Arc::new(registry),
            agent: agent.clone(),
        });
        tracing::info!(
            address = %config.listen_address,
            collectors = ?config.collectors,
            "serving http://{}/metrics",
            config.listen_address
        );

        // Probes load while the server already answers /healthz; /readyz turns 200 after.
        let mode = config.probe_attach;
        let families: Vec<ebpf::Family> = ebpf::Family::ALL
            .into_iter()
            .filter(|f| config.collectors.contains(&f.collector()))
            .collect();
        let loader_probes = probes.clone();
        let max_cgroups = config.cgroups.max_tracked;
        let loading = tokio::task::spawn_blocking(move || {
            if families.is_empty() {
                return (None, None);
            }
            let loaded = ebpf::load(mode, &families, max_cgroups);
            // Only this task sets it, once.
            let _ = loader_probes.loaded.set(loaded.probes);
            // Parsing the kernel's BTF (twice: ours for offsets, aya's for loading) leaves
            // ~18 MB of freed heap that glibc keeps; hand it back to the kernel.
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
            (loaded.logger, loaded.oom_ring)
        });
        let serving = tokio::spawn(server::serve(listener, server, shutdown_signal()));
        match loading.await {
            Ok((logger, oom_ring)) => {
                if let Some(logger) = logger {
                    ebpf::events::spawn_log_forwarder(logger);
                }
                if let Some(ring) = oom_ring {
                    ebpf::events::spawn_oom_reader(ring, probes.clone(), resolver.clone(), config.procfs.clone());
                }
            }
            Err(e) => tracing::error!("loading probes failed: {e}"),
        }
        agent.set_ready();
        if let Err(e) = serving.await {
            tracing::error!("server task failed: {e}");
        }
        // Detach every program now rather than at process exit, so that the log line below
        // is true.
        if let Some(loaded) = probes.loaded.get() {
            loaded.ebpf.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// The resolver over the cgroup2 hierarchy: `--cgroup-root`, or the cgroup2 mount in our
/// own mountinfo (the host's /sys/fs/cgroup is mounted into the pod at the same place).
fn cgroup_resolver(config: &Config) -> cgroups::CgroupResolver {
    let root = config.cgroups.root.clone().or_else(|| {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        cgroups::cgroup2_mount(&mountinfo)
    });
    let root = root.unwrap_or_else(|| {
        tracing::warn!(
            "no cgroup2 mount in /proc/self/mountinfo: per-cgroup metrics fold into cgroup=\"other\" (mount the host's /sys/fs/cgroup, or set --cgroup-root)"
        );
        "/sys/fs/cgroup".into()
    });
    tracing::info!(root = %root.display(), "cgroup2 hierarchy");
    cgroups::CgroupResolver::new(
        root,
        &config.cgroups.pod_logs_dir,
        &config.cgroups.container_logs_dir,
    )
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install SIGTERM handler: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
