//! `node_disk_*{device}` from `/proc/diskstats`, plus `node_disk_info`, with node_exporter's
//! default device exclusions (partitions, loop, ram and floppy devices).
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
};

use procfs::DiskStat;
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};
use regex::Regex;

use super::source::{HostPaths, parse_error, read_to_string};
use crate::metrics::{CollectError, Collector, family};

/// node_exporter 1.5's `--collector.diskstats.device-exclude` default.
pub const DEFAULT_DEVICE_EXCLUDE: &str =
    r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme[0-9]+n[0-9]+p)[0-9]+$";

const SECTOR_BYTES: f64 = 512.0;
const MS: f64 = 0.001;

/// udev writes a device's properties when the device appears, so they are read again at
/// most this often (missing ones too: many nodes have no /run/udev).
const UDEV_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

type UdevCache = HashMap<(i32, i32), (std::time::Instant, UdevInfo)>;

#[derive(Debug)]
pub struct DiskstatsCollector {
    path: PathBuf,
    udev_data: PathBuf,
    exclude: Regex,
    udev: Mutex<UdevCache>,
}

impl DiskstatsCollector {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.procfs.join("diskstats"),
            udev_data: paths.rootfs.join("run/udev/data"),
            exclude: Regex::new(DEFAULT_DEVICE_EXCLUDE).expect("constant regex"),
            udev: Mutex::new(HashMap::new()),
        }
    }

    fn udev(&self, major: i32, minor: i32) -> UdevInfo {
        let mut cache = self.udev.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, info)) = cache.get(&(major, minor))
            && at.elapsed() < UDEV_REFRESH
        {
            return info.clone();
        }
        let info = udev_info(&self.udev_data, major, minor);
        cache.insert((major, minor), (std::time::Instant::now(), info.clone()));
        info
    }
}

pub fn parse(text: &str, exclude: &Regex) -> Result<Vec<DiskStat>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| DiskStat::from_line(l).map_err(|e| format!("{e} on line {l:?}")))
        .filter(|d| d.as_ref().map_or(true, |d| !exclude.is_match(&d.name)))
        .collect()
}

/// udev's properties for a block device, as node_disk_info labels.
#[derive(Debug, Default, Clone)]
pub(crate) struct UdevInfo {
    path: String,
    wwn: String,
    model: String,
    serial: String,
    revision: String,
}

fn udev_info(dir: &Path, major: i32, minor: i32) -> UdevInfo {
    let mut info = UdevInfo::default();
    // Missing udev data (containers without /run/udev, VMs) leaves the labels empty, as in
    // node_exporter.
    let Ok(text) = std::fs::read_to_string(dir.join(format!("b{major}:{minor}"))) else {
        return info;
    };
    parse_udev(&text, &mut info);
    info
}

/// The `E:KEY=value` lines of a udev data file that node_disk_info shows.
pub(crate) fn parse_udev(text: &str, info: &mut UdevInfo) {
    for line in text.lines() {
        let Some((key, value)) = line.strip_prefix("E:").and_then(|l| l.split_once('=')) else {
            continue;
        };
        let slot = match key {
            "ID_PATH" => &mut info.path,
            "ID_WWN" => &mut info.wwn,
            "ID_MODEL" => &mut info.model,
            "ID_SERIAL_SHORT" => &mut info.serial,
            "ID_REVISION" => &mut info.revision,
            _ => continue,
        };
        *slot = value.to_owned();
    }
}

impl Collector for DiskstatsCollector {
    fn name(&self) -> &'static str {
        "diskstats"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let text = read_to_string(&self.path)?;
        let disks = parse(&text, &self.exclude).map_err(|d| parse_error(&self.path, d))?;
        type Field = fn(&DiskStat) -> Option<f64>;
        let families: [(&str, &str, MetricType, Field); 17] = [
            (
                "node_disk_discard_time_seconds_total",
                "This is the total number of seconds spent by all discards.",
                MetricType::Counter,
                |d| d.time_discarding.map(|v| v as f64 * MS),
            ),
            (
                "node_disk_discarded_sectors_total",
                "The total number of sectors discarded successfully.",
                MetricType::Counter,
                |d| d.sectors_discarded.map(|v| v as f64),
            ),
            (
                "node_disk_discards_completed_total",
                "The total number of discards completed successfully.",
                MetricType::Counter,
                |d| d.discards.map(|v| v as f64),
            ),
            (
                "node_disk_discards_merged_total",
                "The total number of discards merged.",
                MetricType::Counter,
                |d| d.discards_merged.map(|v| v as f64),
            ),
            (
                "node_disk_flush_requests_time_seconds_total",
                "This is the total number of seconds spent by all flush requests.",
                MetricType::Counter,
                |d| d.time_flushing.map(|v| v as f64 * MS),
            ),
            (
                "node_disk_flush_requests_total",
                "The total number of flush requests completed successfully",
                MetricType::Counter,
                |d| d.flushes.map(|v| v as f64),
            ),
            (
                "node_disk_io_now",
                "The number of I/Os currently in progress.",
                MetricType::Gauge,
                |d| Some(d.in_progress as f64),
            ),
            (
                "node_disk_io_time_seconds_total",
                "Total seconds spent doing I/Os.",
                MetricType::Counter,
                |d| Some(d.time_in_progress as f64 * MS),
            ),
            (
                "node_disk_io_time_weighted_seconds_total",
                "The weighted # of seconds spent doing I/Os.",
                MetricType::Counter,
                |d| Some(d.weighted_time_in_progress as f64 * MS),
            ),
            (
                "node_disk_read_bytes_total",
                "The total number of bytes read successfully.",
                MetricType::Counter,
                |d| Some(d.sectors_read as f64 * SECTOR_BYTES),
            ),
            (
                "node_disk_read_time_seconds_total",
                "The total number of seconds spent by all reads.",
                MetricType::Counter,
                |d| Some(d.time_reading as f64 * MS),
            ),
            (
                "node_disk_reads_completed_total",
                "The total number of reads completed successfully.",
                MetricType::Counter,
                |d| Some(d.reads as f64),
            ),
            (
                "node_disk_reads_merged_total",
                "The total number of reads merged.",
                MetricType::Counter,
                |d| Some(d.merged as f64),
            ),
            (
                "node_disk_write_time_seconds_total",
                "This is the total number of seconds spent by all writes.",
                MetricType::Counter,
                |d| Some(d.time_writing as f64 * MS),
            ),
            (
                "node_disk_writes_completed_total",
                "The total number of writes completed successfully.",
                MetricType::Counter,
                |d| Some(d.writes as f64),
            ),
            (
                "node_disk_writes_merged_total",
                "The number of writes merged.",
                MetricType::Counter,
                |d| Some(d.writes_merged as f64),
            ),
            (
                "node_disk_written_bytes_total",
                "The total number of bytes written successfully.",
                MetricType::Counter,
                |d| Some(d.sectors_written as f64 * SECTOR_BYTES),
            ),
        ];
        for (name, help, kind, field) in families {
            if !disks.iter().any(|d| field(d).is_some()) {
                continue; // an older kernel without discard or flush columns
            }
            family(
                out,
                name,
                help,
                kind,
                disks
                    .iter()
                    .filter_map(|d| Some(([("device", d.name.as_str())], field(d)?))),
            )?;
        }
        let infos: Vec<_> = disks
            .iter()
            .map(|d| (d, self.udev(d.major, d.minor)))
            .collect();
        let numbers: Vec<_> = disks
            .iter()
            .map(|d| (d.major.to_string(), d.minor.to_string()))
            .collect();
        family(
            out,
            "node_disk_info",
            "Info of /sys/block/<block_device>.",
            MetricType::Gauge,
            infos.iter().zip(&numbers).map(|((d, u), (major, minor))| {
                (
                    [
                        ("device", d.name.as_str()),
                        ("major", major.as_str()),
                        ("minor", minor.as_str()),
                        ("model", u.model.as_str()),
                        ("path", u.path.as_str()),
                        ("revision", u.revision.as_str()),
                        ("serial", u.serial.as_str()),
                        ("wwn", u.wwn.as_str()),
                    ],
                    1.0,
                )
            }),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::testutil::fixture;

    #[test]
    fn default_exclusions_match_node_exporter() {
        let re = Regex::new(DEFAULT_DEVICE_EXCLUDE).unwrap();
        for excluded in [
            "loop0",
            "ram12",
            "sda1",
            "vda2",
            "xvda1",
            "nvme0n1p3",
            "fd0",
        ] {
            assert!(re.is_match(excluded), "{excluded}");
        }
        for kept in ["vda", "sda", "nvme0n1", "zram0", "dm-0", "md0"] {
            assert!(!re.is_match(kept), "{kept}");
        }
    }

    #[test]
    fn parses_fixture_and_rejects_garbage() {
        let re = Regex::new(DEFAULT_DEVICE_EXCLUDE).unwrap();
        let text = std::fs::read_to_string(fixture("proc/diskstats")).unwrap();
        let disks = parse(&text, &re).unwrap();
        assert!(disks.iter().any(|d| d.name == "vda" && d.flushes.is_some()));
        assert!(!disks.iter().any(|d| d.name.starts_with("loop")));
        assert!(parse("254 0 vda x y z\n", &re).is_err());
    }
}
