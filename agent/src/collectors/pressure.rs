//! Pressure stall information (`/proc/pressure/{cpu,io,memory}`), as node_exporter 1.5
//! exports it. Kernels without PSI (or booted with psi=0) have no such files; then the
//! collector emits nothing and still succeeds, as node_exporter does.
use std::path::{Path, PathBuf};

use prometheus_client::encoding::DescriptorEncoder;

use super::source::{HostPaths, parse_error};
use crate::metrics::{CollectError, Collector, counter};

#[derive(Debug)]
pub struct PressureCollector {
    dir: PathBuf,
}

impl PressureCollector {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            dir: paths.procfs.join("pressure"),
        }
    }
}

/// Reads one PSI file into its (some, full) totals in microseconds; `None` when absent.
/// `full` is 0 where the kernel has no such line (cpu before 5.13).
fn read(path: &Path) -> Result<Option<(u64, u64)>, CollectError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CollectError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    crate::psi::parse(&text)
        .map(Some)
        .map_err(|d| parse_error(path, d))
}

impl Collector for PressureCollector {
    fn name(&self) -> &'static str {
        "pressure"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let cpu = read(&self.dir.join("cpu"))?;
        let io = read(&self.dir.join("io"))?;
        let memory = read(&self.dir.join("memory"))?;
        let secs = |us: u64| us as f64 / 1e6;
        if let Some((some, _)) = cpu {
            counter(
                out,
                "node_pressure_cpu_waiting_seconds_total",
                "Total time in seconds that processes have waited for CPU time",
                secs(some),
            )?;
        }
        if let Some((some, full)) = io {
            counter(
                out,
                "node_pressure_io_stalled_seconds_total",
                "Total time in seconds no process could make progress due to IO congestion",
                secs(full),
            )?;
            counter(
                out,
                "node_pressure_io_waiting_seconds_total",
                "Total time in seconds that processes have waited due to IO congestion",
                secs(some),
            )?;
        }
        if let Some((some, full)) = memory {
            counter(
                out,
                "node_pressure_memory_stalled_seconds_total",
                "Total time in seconds no process could make progress due to memory congestion",
                secs(full),
            )?;
            counter(
                out,
                "node_pressure_memory_waiting_seconds_total",
                "Total time in seconds that processes have waited for memory",
                secs(some),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::testutil::{fixture, render};

    #[test]
    fn reads_fixture_and_tolerates_missing_psi() {
        let paths = |p: &str| HostPaths {
            procfs: fixture(p),
            rootfs: "/".into(),
        };
        let text = render(PressureCollector::new(&paths("proc")));
        assert!(
            text.contains("node_pressure_io_stalled_seconds_total "),
            "{text}"
        );
        let text = render(PressureCollector::new(&paths("does-not-exist")));
        assert!(!text.contains("node_pressure"), "{text}");
    }
}
