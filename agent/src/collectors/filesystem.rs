//! `node_filesystem_*{device,fstype,mountpoint}`: statfs(2) of every mounted filesystem the
//! host's init sees (`<procfs>/1/mounts`), with node_exporter's default exclusions.
//!
//! In a pod, statfs needs the host's root filesystem mounted at `--rootfs` (for example
//! `/host/root`); mount points are reported as the host sees them.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};
use regex::Regex;

use super::source::{HostPaths, read_to_string};
use crate::metrics::{CollectError, Collector, family};

/// node_exporter 1.5's `--collector.filesystem.mount-points-exclude` default.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter 1.5's `--collector.filesystem.fs-types-exclude` default.
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";

#[derive(Debug)]
pub struct FilesystemCollector {
    procfs: PathBuf,
    rootfs: PathBuf,
    mount_points_exclude: Regex,
    fs_types_exclude: Regex,
}

impl FilesystemCollector {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            procfs: paths.procfs.clone(),
            rootfs: paths.rootfs.clone(),
            mount_points_exclude: Regex::new(DEFAULT_MOUNT_POINTS_EXCLUDE).expect("constant regex"),
            fs_types_exclude: Regex::new(DEFAULT_FS_TYPES_EXCLUDE).expect("constant regex"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
    pub read_only: bool,
}

/// Undoes the octal escapes the kernel writes for space, tab, newline and backslash.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the `mounts` format: `device mountpoint fstype options dump pass`.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let (device, mount_point, fs_type, options) =
                (f.next()?, f.next()?, f.next()?, f.next()?);
            Some(Mount {
                device: unescape(device),
                mount_point: unescape(mount_point),
                fs_type: fs_type.to_owned(),
                read_only: options.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, Default)]
struct FsStats {
    size: f64,
    free: f64,
    avail: f64,
    files: f64,
    files_free: f64,
}

fn statfs(path: &Path) -> std::io::Result<FsStats> {
    let s = rustix::fs::statfs(path)?;
    let bsize = s.f_bsize as f64;
    Ok(FsStats {
        size: s.f_blocks as f64 * bsize,
        free: s.f_bfree as f64 * bsize,
        avail: s.f_bavail as f64 * bsize,
        files: s.f_files as f64,
        files_free: s.f_ffree as f64,
    })
}

impl Collector for FilesystemCollector {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        // The host's init sees the host's mounts, even from inside a pod's mount namespace.
        let text = read_to_string(&self.procfs.join("1/mounts"))
            .or_else(|_| read_to_string(&self.procfs.join("mounts")))?;
        let mut seen = HashSet::new();
        let mut rows = Vec::new();
        for m in parse_mounts(&text) {
            if self.mount_points_exclude.is_match(&m.mount_point)
                || self.fs_types_exclude.is_match(&m.fs_type)
                || !seen.insert((m.device.clone(), m.mount_point.clone(), m.fs_type.clone()))
            {
                continue;
            }
            let target = self.rootfs.join(m.mount_point.trim_start_matches('/'));
            let stats = statfs(&target);
            if let Err(e) = &stats {
                tracing::debug!(mount_point = %m.mount_point, "statfs failed: {e}");
            }
            rows.push((m, stats.ok()));
        }
        let labels = |m: &Mount| {
            [
                ("device", m.device.clone()),
                ("fstype", m.fs_type.clone()),
                ("mountpoint", m.mount_point.clone()),
            ]
        };
        type Field = fn(&FsStats) -> f64;
        let families: [(&str, &str, Field); 5] = [
            (
                "node_filesystem_avail_bytes",
                "Filesystem space available to non-root users in bytes.",
                |s| s.avail,
            ),
            (
                "node_filesystem_files",
                "Filesystem total file nodes.",
                |s| s.files,
            ),
            (
                "node_filesystem_files_free",
                "Filesystem total free file nodes.",
                |s| s.files_free,
            ),
            (
                "node_filesystem_free_bytes",
                "Filesystem free space in bytes.",
                |s| s.free,
            ),
            (
                "node_filesystem_size_bytes",
                "Filesystem size in bytes.",
                |s| s.size,
            ),
        ];
        family(
            out,
            "node_filesystem_device_error",
            "Whether an error occurred while getting statistics for the given device.",
            MetricType::Gauge,
            rows.iter()
                .map(|(m, s)| (labels(m), if s.is_some() { 0.0 } else { 1.0 })),
        )?;
        family(
            out,
            "node_filesystem_readonly",
            "Filesystem read-only status.",
            MetricType::Gauge,
            rows.iter()
                .filter(|(_, s)| s.is_some())
                .map(|(m, _)| (labels(m), f64::from(u8::from(m.read_only)))),
        )?;
        for (name, help, field) in families {
            family(
                out,
                name,
                help,
                MetricType::Gauge,
                rows.iter()
                    .filter_map(|(m, s)| Some((labels(m), field(s.as_ref()?)))),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::testutil::fixture;

    #[test]
    fn parses_mounts_with_escapes() {
        let m = parse_mounts(
            "/dev/vda / ext4 rw,relatime 0 0\n/dev/sdb /mnt/my\\040disk xfs ro,noatime 0 0\nshort line\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mount_point, "/mnt/my disk");
        assert!(m[1].read_only && !m[0].read_only);
    }

    #[test]
    fn default_exclusions_keep_only_real_filesystems() {
        let text = std::fs::read_to_string(fixture("proc/1/mounts")).unwrap();
        let c = FilesystemCollector::new(&HostPaths {
            procfs: fixture("proc"),
            rootfs: "/".into(),
        });
        let kept: Vec<_> = parse_mounts(&text)
            .into_iter()
            .filter(|m| {
                !c.mount_points_exclude.is_match(&m.mount_point)
                    && !c.fs_types_exclude.is_match(&m.fs_type)
            })
            .map(|m| m.mount_point)
            .collect();
        assert!(kept.contains(&"/".to_owned()), "{kept:?}");
        assert!(
            !kept
                .iter()
                .any(|p| p.starts_with("/sys") || p.starts_with("/proc")),
            "{kept:?}"
        );
    }
}
