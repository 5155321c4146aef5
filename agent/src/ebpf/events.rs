//! Events the kernel pushes to user space through ring buffers (aya-log records, OOM
//! kills). Each reader is a task woken by the ring buffer's fd, never by a timer.
use std::os::fd::AsRawFd;

use tokio::io::{Interest, unix::AsyncFd};

/// Runs `drain` on `source` each time its fd becomes readable, until the fd fails.
pub fn spawn_on_readable<T: AsRawFd + Send + 'static>(
    source: T,
    what: &'static str,
    mut drain: impl FnMut(&mut T) + Send + 'static,
) {
    // SAFETY: both sources (aya-log's logger and a ring buffer map) own their fd and keep it
    // open, unchanged, until they are dropped together with the AsyncFd.
    let mut fd = match unsafe { AsyncFd::register_with_interest(source, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("{what} disabled: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!("{what} stopped: {e}");
                    return;
                }
            };
            drain(guard.get_inner_mut());
            guard.clear_ready();
        }
    });
}

/// Forwards aya-log records from the programs into `log`, and so into tracing.
pub fn spawn_log_forwarder(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    spawn_on_readable(logger, "eBPF log forwarding", |logger| logger.flush());
}
