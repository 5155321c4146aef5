//! The exercise's cgroups: one made for a workload, with its `cgroup` label, and how a
//! scrape's sample of it is found.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::cgroups::born::BornInside;

/// A cgroup the attribution check made: its directory and its `cgroup` label.
pub(super) struct ExerciseCgroup {
    pub(super) dir: PathBuf,
    pub(super) label: String,
}

impl ExerciseCgroup {
    pub(super) fn create(cgroup2: &Path, role: &str) -> Result<ExerciseCgroup, String> {
        let label = format!("nodelens-exercise-{role}-{}", std::process::id());
        let dir = cgroup2.join(&label);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        Ok(ExerciseCgroup { dir, label })
    }

    /// Runs a shell command inside the cgroup and waits for it.
    pub(super) fn run(&self, command: &str) -> Result<(), String> {
        crate::cgroups::run_inside(&self.dir, command)
    }

    /// The cgroup's `io.stat` line for a device, as key=value pairs.
    pub(super) fn io_stat(&self, dev: &str) -> HashMap<String, u64> {
        std::fs::read_to_string(self.dir.join("io.stat"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(dev))
            .flat_map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }
}

impl ExerciseCgroup {
    /// Starts a shell command born inside the cgroup (see [`BornInside`]), without
    /// waiting. Its output goes nowhere: preflight's standard output is its report.
    pub(super) fn spawn(&self, command: &str) -> Result<BornInside, String> {
        let script = format!("exec >/dev/null 2>&1; {command}");
        BornInside::spawn(&self.dir, "/bin/sh", &["sh", "-c", &script])
    }

    /// Runs a command born in the cgroup and waits for it.
    pub(super) fn run_born_inside(&self, command: &str) -> Result<(), String> {
        if self.spawn(command)?.wait()? {
            Ok(())
        } else {
            Err(format!("`{command}` in {} failed", self.label))
        }
    }

    /// `cpu.stat` `usage_usec`, in seconds.
    pub(super) fn cpu_usage_seconds(&self) -> f64 {
        std::fs::read_to_string(self.dir.join("cpu.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0.0, |usec| usec / 1e6)
    }
}

/// The value of the one sample of `family` whose labels include all of `labels`, 0 when
/// there is none (a series appears once it is non-zero).
pub(super) fn sample(scrape: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix(family)?.strip_prefix('{'))
        .filter_map(|l| l.rsplit_once("} "))
        .find(|(set, _)| {
            labels
                .iter()
                .all(|(k, v)| set.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0.0)
}
