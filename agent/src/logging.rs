//! Logging through tracing, as text or JSON. `log` records (aya-log's eBPF messages among
//! them) are forwarded into tracing.
use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

pub fn init(level: tracing::Level, format: LogFormat) {
    // RUST_LOG, when set, refines the level for developers (e.g. RUST_LOG=nodelens=trace).
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        // Colours only on a terminal: container logs must stay plain text.
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("nodelens: logging already initialised: {e}");
    }
}
