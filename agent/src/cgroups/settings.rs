//! How cgroups are found, named and bounded (`cgroups.*`, except `cgroups.series`, which
//! the `cgroup` family owns): validated by `config`, used by the tracker and the labels.
use std::path::PathBuf;

use clap::ValueEnum;

/// Whether per-cgroup series carry the cgroup path (`cgroups.path_label`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PathLabel {
    /// Only where namespace, pod and container do not identify the cgroup.
    Auto,
    Always,
}

/// Per-cgroup attribution settings.
#[derive(Debug, Clone)]
pub struct CgroupConfig {
    /// `None`: find the cgroup2 mount in /proc/self/mountinfo.
    pub root: Option<PathBuf>,
    pub max_tracked: usize,
    pub include: Option<regex::Regex>,
    pub exclude: Option<regex::Regex>,
    pub path_label: PathLabel,
    pub pod_logs_dir: PathBuf,
    pub container_logs_dir: PathBuf,
}
