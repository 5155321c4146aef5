//! CPU throttling per cgroup: the CFS bandwidth periods of a cgroup with a CPU limit, the
//! periods in which the limit stopped it, and how long it was stopped, from the kernel's own
//! `cpu.stat`. Named as cAdvisor names them (`container_cpu_cfs_*`), with nodelens's prefix
//! and per-pod labels.
//!
//! Each cgroup's `cpu.stat` is read where the cgroup has it: in the cgroup2 hierarchy when
//! the cpu controller is on there (`nr_periods`, `nr_throttled`, `throttled_usec`), else in
//! the v1 cpu controller's hierarchy at the same path, as on a hybrid host (`nr_periods`,
//! `nr_throttled`, `throttled_time` in ns). A cgroup without a CPU limit has no periods and
//! gets no series. The files are read by the upkeep round as the pressure files are (see
//! `ebpf::cgroup_files`).
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use aya::Ebpf;
use prometheus_client::encoding::DescriptorEncoder;

use crate::{
    cgroups::{series, tracker::LiveCgroup},
    ebpf::{
        cgroup_files::{CgroupFiles, read_small, refresh_flag, refresh_setting},
        family::{
            Attached, CgroupSeriesName, Family, FamilyFlag, FamilyLayout, Health, KernelSources,
            LoadContext, LoadedFamily, ProbeSpec, SettingError, SettingsValue, Sweep,
            chosen_cgroup_series,
        },
        per_cgroup::capacity_for,
    },
    metrics::{CollectError, counter, counts, family},
};

pub struct CgroupThrottling;

/// The collector name.
const NAME: &str = "cgroup_throttling";

/// The file key of the refresh interval.
const REFRESH_KEY: &str = "cgroups.throttling_refresh_interval";

/// Off by default, as the pressure series are (`cgroup_pressure::SERIES` says why).
const SERIES: &[CgroupSeriesName] = &[CgroupSeriesName {
    name: "cpu_throttling",
    default: false,
}];

#[derive(Debug, Clone)]
struct Settings {
    refresh: Duration,
    exported: bool,
}

/// One cgroup's CFS bandwidth counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

impl std::ops::AddAssign for Throttling {
    fn add_assign(&mut self, o: Self) {
        self.periods += o.periods;
        self.throttled_periods += o.throttled_periods;
        self.throttled_ns += o.throttled_ns;
    }
}

/// Parses a `cpu.stat` (`key value` lines): v2 when it has `throttled_usec`, v1 when it has
/// `throttled_time`; `None` without `nr_periods` (no cpu controller there).
pub fn parse_cpu_stat(text: &str) -> Option<Throttling> {
    let (mut periods, mut throttled, mut ns) = (None, None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        match key {
            "nr_periods" => periods = Some(value),
            "nr_throttled" => throttled = Some(value),
            "throttled_usec" => ns = Some(value.saturating_mul(1000)),
            "throttled_time" => ns = Some(value),
            _ => {}
        }
    }
    Some(Throttling {
        periods: periods?,
        throttled_periods: throttled?,
        throttled_ns: ns?,
    })
}

/// Reads a cgroup's throttling where it has it: its cgroup2 `cpu.stat`, else the v1 cpu
/// controller's at the same path.
fn read_throttling(cgroup: &LiveCgroup, v1_cpu: Option<&Path>) -> Option<Throttling> {
    if let Some(t) = read_small(&cgroup.directory, "cpu.stat").and_then(|t| parse_cpu_stat(&t)) {
        return Some(t);
    }
    let v1 = v1_cpu?;
    let dir = match cgroup.path.as_str() {
        "/" => v1.to_owned(),
        path => v1.join(path),
    };
    read_small(&dir, "cpu.stat").and_then(|t| parse_cpu_stat(&t))
}

/// The v1 cpu controller's mount, on a hybrid host.
fn v1_cpu_root() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    crate::cgroups::cgroup1_mount(&mountinfo, "cpu")
}

impl Family for CgroupThrottling {
    fn name(&self) -> &'static str {
        NAME
    }

    fn flags(&self) -> Vec<FamilyFlag> {
        vec![refresh_flag(
            REFRESH_KEY,
            "cgroup-throttling-refresh-interval",
            "cgroup_throttling_refresh_interval",
            "NODELENS_CGROUP_THROTTLING_REFRESH_INTERVAL",
            "the cpu.stat of cgroups whose tasks ran is read",
        )]
    }

    fn cgroup_series(&self) -> &'static [CgroupSeriesName] {
        SERIES
    }

    fn settings(&self, merged: &serde_json::Value) -> Result<Option<SettingsValue>, SettingError> {
        let refresh = refresh_setting(merged, REFRESH_KEY)?;
        let exported = !chosen_cgroup_series(merged, SERIES).is_empty();
        Ok(Some(Arc::new(Settings { refresh, exported })))
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        &[]
    }

    fn maps(&self) -> &'static [&'static str] {
        &[]
    }

    fn layout(&self, _kernel: &KernelSources, ctx: &LoadContext) -> FamilyLayout {
        let mut layout = FamilyLayout::new(Vec::new(), Ok(()), Ok(()), Vec::new());
        let asked = ctx
            .settings
            .get::<Settings>(NAME)
            .is_some_and(|s| s.exported);
        layout.mode = Some(if !ctx.per_cgroup {
            "off: needs per-cgroup accounting (the cgroup collector)".into()
        } else if !asked {
            "off: its series is not asked for (--cgroup-series default,cpu_throttling); no file is read".into()
        } else {
            match v1_cpu_root() {
                Some(v1) => format!(
                    "from each cgroup's cpu.stat under {}, else under the v1 cpu controller at {}",
                    ctx.cgroup_root.display(),
                    v1.display()
                ),
                None => format!(
                    "from each cgroup's cpu.stat under {} (cgroups without the cpu controller have none)",
                    ctx.cgroup_root.display()
                ),
            }
        });
        layout
    }

    fn take(
        &self,
        _ebpf: &mut Ebpf,
        _attached: &Attached,
        ctx: &LoadContext,
    ) -> Result<Box<dyn LoadedFamily>, String> {
        let settings = ctx
            .settings
            .get::<Settings>(NAME)
            .cloned()
            .ok_or("no validated settings")?;
        let v1 = v1_cpu_root();
        Ok(Box::new(ThrottlingTables {
            files: CgroupFiles::new(
                "cgroup_throttling",
                ctx.cgroups.clone(),
                settings.refresh,
                capacity_for(ctx.max_cgroups),
                Box::new(move |c| read_throttling(c, v1.as_deref())),
            ),
            exported: settings.exported,
            up: ctx.per_cgroup,
        }))
    }
}

struct ThrottlingTables {
    files: CgroupFiles<Throttling>,
    exported: bool,
    up: bool,
}

impl LoadedFamily for ThrottlingTables {
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        counter(
            out,
            "nodelens_cgroup_throttling_reads_total",
            "Cgroups whose cpu.stat the agent read, for its cost.",
            self.files.reads() as f64,
        )?;
        if !self.exported {
            return Ok(());
        }
        // Only cgroups with a CPU limit: periods only count under one.
        let rows: Vec<(series::Rendered, Throttling)> = self.files.map().scrape(|scrape| {
            let limited: Vec<_> = scrape
                .rows
                .rows
                .iter()
                .filter(|r| r.values.periods != 0)
                .collect();
            let labels = series::choose(limited.iter().map(|r| r.series));
            Ok(labels
                .into_iter()
                .zip(limited)
                .map(|(l, r)| (l.clone(), r.values))
                .collect())
        })?;
        counts(
            out,
            "nodelens_cgroup_cpu_cfs_periods_total",
            "CFS bandwidth periods that elapsed for the cgroup's CPU limit (cpu.stat nr_periods).",
            rows.iter().map(|(l, t)| (l, t.periods)),
        )?;
        // As every per-pod series, each once it is non-zero: a pod under a limit that never
        // used it up has its periods only.
        counts(
            out,
            "nodelens_cgroup_cpu_cfs_throttled_periods_total",
            "Periods in which the cgroup used up its CPU limit and was throttled (cpu.stat nr_throttled).",
            rows.iter()
                .filter(|(_, t)| t.throttled_periods != 0)
                .map(|(l, t)| (l, t.throttled_periods)),
        )?;
        family(
            out,
            "nodelens_cgroup_cpu_cfs_throttled_seconds_total",
            "Time the cgroup's tasks were stopped by its CPU limit (cpu.stat throttled_usec, or throttled_time on v1).",
            prometheus_client::metrics::MetricType::Counter,
            rows.iter()
                .filter(|(_, t)| t.throttled_ns != 0)
                .map(|(l, t)| (l, t.throttled_ns as f64 / 1e9)),
        )?;
        Ok(())
    }

    fn upkeep(&self) {
        if self.up && self.exported {
            self.files.refresh();
        }
    }

    fn cgroup_maps(&self) -> Vec<&dyn Sweep> {
        vec![self.files.map()]
    }

    fn health(&self) -> Health {
        self.files.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v2_and_v1_cpu_stat() {
        let v2 = "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 30\nnr_throttled 12\nthrottled_usec 2500\nnr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            parse_cpu_stat(v2),
            Some(Throttling {
                periods: 30,
                throttled_periods: 12,
                throttled_ns: 2_500_000
            })
        );
        let v1 =
            "nr_periods 7\nnr_throttled 3\nthrottled_time 123456789\nnr_bursts 0\nburst_time 0\n";
        assert_eq!(
            parse_cpu_stat(v1),
            Some(Throttling {
                periods: 7,
                throttled_periods: 3,
                throttled_ns: 123_456_789
            })
        );
        // The cgroup2 core file without the cpu controller.
        assert_eq!(
            parse_cpu_stat("usage_usec 100\nuser_usec 60\nsystem_usec 40\n"),
            None
        );
        assert_eq!(parse_cpu_stat("nr_periods x\n\n garbage"), None);
    }

    #[test]
    fn falls_back_to_the_v1_controller_at_the_same_path() {
        let v2 = tempfile::tempdir().unwrap();
        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(v1.path().join("a/b")).unwrap();
        std::fs::write(v2.path().join("cpu.stat"), "usage_usec 1\n").unwrap();
        std::fs::write(
            v1.path().join("a/b/cpu.stat"),
            "nr_periods 2\nnr_throttled 1\nthrottled_time 5\n",
        )
        .unwrap();
        let cgroup = LiveCgroup {
            id: 9,
            directory: v2.path().to_owned(),
            path: "a/b".into(),
            moved_round: 0,
        };
        assert_eq!(read_throttling(&cgroup, None), None);
        assert_eq!(
            read_throttling(&cgroup, Some(v1.path())),
            Some(Throttling {
                periods: 2,
                throttled_periods: 1,
                throttled_ns: 5
            })
        );
    }
}
