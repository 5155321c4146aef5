//! nodelens: eBPF node agent for Kubernetes. The binary: flags, then serving or preflight;
//! everything else lives in the library (`lib.rs`), which the fuzz targets also use.
use std::{process::ExitCode, sync::Arc};

use nodelens::{
    config::{Cli, Command, Config},
    ebpf, exercise, logging, node, preflight, remote_write,
    runtime::Runtime,
    security, server, web,
};

/// Usage and configuration errors.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    // One malloc arena: the agent's threads are few and mostly idle, and per-thread arenas
    // (64 MB of address space each, partly resident) would cost more memory than they save
    // in contention.
    // SAFETY: called before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let cli = match Cli::from_command_line(std::env::args_os()) {
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
    let config = match Config::resolve(cli.settings).and_then(|c| c.check_host_paths().map(|()| c))
    {
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
            exercise_filesystem,
            metrics_out,
        } => {
            let exercise = exercise.then_some(exercise::Options {
                device: exercise_device,
                filesystem: exercise_filesystem,
                metrics_out,
            });
            let config = match exercise {
                Some(_) => match every_cgroup_series() {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("nodelens: {e}");
                        return ExitCode::from(EXIT_USAGE);
                    }
                },
                None => config,
            };
            run_preflight(&config, json, output_dir.as_deref(), exercise.as_ref())
        }
    }
}

/// The configuration again (it was checked as given), with every per-cgroup series: the
/// exercise checks each against the kernel's own figures, whatever `--cgroup-series` (or the
/// file) says.
fn every_cgroup_series() -> Result<Config, String> {
    let mut cli = Cli::from_command_line(std::env::args_os()).map_err(|e| e.to_string())?;
    cli.settings.cgroups.series = Some(vec!["all".to_owned()]);
    Config::resolve(cli.settings).map_err(|e| e.to_string())
}

fn run_preflight(
    config: &Config,
    json: bool,
    output_dir: Option<&std::path::Path>,
    exercise: Option<&exercise::Options>,
) -> ExitCode {
    let report = preflight::run(config, exercise);
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
    nodelens::render::set_protobuf_classic_histograms(config.protobuf_classic_histograms);
    let web = match web::Web::load(config.web_config_file.as_deref()) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            eprintln!(
                "nodelens: web_config_file: {}: {e}",
                config
                    .web_config_file
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display()
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let pusher = match config.remote_write.clone().map(remote_write::Pusher::new) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("nodelens: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // One thread serves everything: a scrape is a short burst of reads from memory, and
    // probe loading runs once on the blocking pool.
    let executor = match tokio::runtime::Builder::new_current_thread()
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
    executor.block_on(async move {
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
        // The identity preflight found (it reads the host's machine id through a hostPath),
        // else what this container can see.
        let dir = config.preflight_dir.as_deref();
        let identity = dir
            .and_then(preflight::read_identity)
            .unwrap_or_else(|| node::identity(&config));
        let preflight_text = dir.and_then(preflight::read_report_text);
        let runtime = Arc::new(Runtime::build(config, identity, preflight_text));
        let _ = runtime.agent.web.set(web.clone());
        let server = Arc::new(server::Server {
            registry: runtime.registry.clone(),
            agent: runtime.agent.clone(),
            web: web.clone(),
        });
        let address = runtime.config.listen_address;
        let scheme = if web.tls() { "https" } else { "http" };
        tracing::info!(
            %address,
            collectors = ?runtime.config.collectors.iter().map(|c| c.name()).collect::<Vec<_>>(),
            "serving {scheme}://{address}/metrics"
        );

        // What stays after attaching: nothing, or CAP_BPF where old kernels need it.
        let (keep, why) = security::capabilities_to_keep(
            node::kernel_version(&runtime.agent.node.kernel),
            &runtime.config.procfs,
        );
        if let Some(why) = why {
            tracing::info!("{why}");
        }
        let drop_capabilities = !runtime.config.keep_capabilities;
        // Probes load while the server already answers /healthz; /readyz turns 200 after.
        let families = runtime.families();
        let loader = runtime.clone();
        let loader_keeps = keep.clone();
        let loading = tokio::task::spawn_blocking(move || {
            if !families.is_empty() {
                loader.load_probes(&families, std::path::Path::new(ebpf::loader::BTF_PATH));
            }
            // Capabilities are per thread: this pool thread drops its own.
            if drop_capabilities && let Err(e) = security::drop_thread_capabilities(&loader_keeps) {
                tracing::warn!("dropping the loader thread's capabilities failed: {e}");
            }
        });
        let serving = tokio::spawn(server::serve(listener, server, shutdown_signal()));
        if let Err(e) = loading.await {
            tracing::error!("loading probes failed: {e}");
        }
        // Before any other thread starts, so that every later thread inherits the result.
        let posture = security::lock_down(
            &keep,
            runtime.config.keep_capabilities,
            runtime.config.seccomp,
        );
        for note in &posture.notes {
            tracing::warn!("{note}");
        }
        tracing::info!(
            capabilities = %posture.capabilities,
            no_new_privs = posture.no_new_privs,
            seccomp = posture.seccomp,
            "privileges after attaching"
        );
        runtime.agent.set_posture(posture);
        // Denied system calls are logged by whoever looks first: a scrape, or this.
        tokio::spawn(async {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                tick.tick().await;
                security::denied();
            }
        });
        if let Some(loaded) = runtime.probes.loaded.get() {
            loaded.spawn_event_readers();
            // Kernel maps are kept by the agent on its own timer, whether or not anyone
            // scrapes.
            ebpf::loader::spawn_upkeep(runtime.probes.clone(), runtime.config.map_upkeep_interval);
        }
        runtime.agent.set_ready();
        // Push starts once the probes are in, so that its first round is complete.
        if let (Some(pusher), Some(stats)) = (pusher, runtime.remote_write.clone()) {
            pusher.start(runtime.registry.clone(), stats, &runtime.agent.node.node);
        }
        if let Err(e) = serving.await {
            tracing::error!("server task failed: {e}");
        }
        // Detach every program now rather than at process exit, so that the log line below
        // is true.
        runtime.probes.detach();
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
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
