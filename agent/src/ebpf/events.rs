//! Events the kernel pushes to user space through ring buffers: aya-log records and OOM
//! kills. Each reader is a task woken by the ring buffer's fd, never by a timer.
use std::{
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use agent_ebpf::OomEvent;
use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use super::{OomRow, Probes};
use crate::cgroups::{CgroupLabels, CgroupResolver};

/// Runs `drain` on `source` each time its fd becomes readable, until the fd fails.
fn spawn_on_readable<T: AsRawFd + Send + 'static>(
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

/// Drains OOM kill events, logs each kill, and attributes it to the victim's cgroup while
/// that still exists.
pub fn spawn_oom_reader(
    ring: RingBuf<MapData>,
    probes: Arc<Probes>,
    resolver: Arc<Mutex<CgroupResolver>>,
    procfs: PathBuf,
) {
    spawn_on_readable(ring, "OOM event reader", move |ring| {
        while let Some(item) = ring.next() {
            let Some(event) = parse_oom_event(&item) else {
                continue;
            };
            let labels = victim_labels(&event, &resolver, &procfs);
            tracing::info!(
                pid = event.pid,
                cgroup_id = event.cgroup_id,
                cgroup = %labels.cgroup,
                namespace = %labels.namespace,
                pod = %labels.pod,
                container = %labels.container,
                "OOM kill"
            );
            if let Some(loaded) = probes.loaded.get() {
                let mut table = loaded.oom.lock().unwrap_or_else(|p| p.into_inner());
                table
                    .rows
                    .entry(labels.cgroup.clone())
                    .or_insert_with(|| OomRow {
                        labels,
                        kills: 0,
                        gone: false,
                    })
                    .kills += 1;
            }
        }
    });
}

/// The victim's labels: from the cgroup id the kernel sent (tp_btf), else from
/// `/proc/<pid>/cgroup` if the victim is still there, else `cgroup="unknown"`.
fn victim_labels(
    event: &OomEvent,
    resolver: &Mutex<CgroupResolver>,
    procfs: &Path,
) -> CgroupLabels {
    let mut resolver = resolver.lock().unwrap_or_else(|p| p.into_inner());
    if event.cgroup_id != 0
        && let Some(labels) = resolver.labels(event.cgroup_id)
    {
        return labels;
    }
    let from_proc = std::fs::read_to_string(procfs.join(event.pid.to_string()).join("cgroup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(|p| p.trim_start_matches('/').to_owned())
        });
    match from_proc {
        Some(path) if path.is_empty() => resolver.labels_for_path("/".into()),
        Some(path) => resolver.labels_for_path(path),
        None => CgroupLabels {
            cgroup: "unknown".into(),
            ..Default::default()
        },
    }
}

fn parse_oom_event(bytes: &[u8]) -> Option<OomEvent> {
    let pid = u32::from_ne_bytes(bytes.get(0..4)?.try_into().ok()?);
    let cgroup_id = u64::from_ne_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some(OomEvent {
        pid,
        _pad: 0,
        cgroup_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_events_parse_and_short_buffers_do_not() {
        let mut bytes = [0u8; 16];
        bytes[0..4].copy_from_slice(&4242u32.to_ne_bytes());
        bytes[8..16].copy_from_slice(&77u64.to_ne_bytes());
        let e = parse_oom_event(&bytes).unwrap();
        assert_eq!((e.pid, e.cgroup_id), (4242, 77));
        assert!(parse_oom_event(&bytes[..12]).is_none());
    }
}
