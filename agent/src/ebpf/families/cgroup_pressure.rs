//! Pressure per cgroup: how long the cgroup's tasks waited for a CPU, for memory and for
//! I/O, from the kernel's own pressure stall totals in each cgroup2 cgroup's
//! `{cpu,memory,io}.pressure` (the `some` line: at least one task waited; `full`: all
//! non-idle tasks did at once). Named as cAdvisor and the kubelet name them (`waiting` is
//! some, `stalled` is full), with nodelens's prefix and per-pod labels.
//!
//! The files are read by the upkeep round, never by a scrape, and only for cgroups that
//! are due (see `ebpf::cgroup_files`): a value is at most one refresh interval old for a
//! busy cgroup, `cgroup_files::IDLE_REFRESHES` for an idle one. On a hybrid host the files are in the
//! unified hierarchy, whatever the v1 controllers. A kernel without PSI (`CONFIG_PSI` off,
//! `psi=0`) has no such files: the family says so once (preflight, the log) and exports
//! nothing rather than zeros.
use std::{sync::Arc, time::Duration};

use aya::Ebpf;
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

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
    metrics::{CollectError, counter, family, gauge},
};

pub struct CgroupPressure;

/// The collector name.
const NAME: &str = "cgroup_pressure";

/// The file key of the refresh interval.
const REFRESH_KEY: &str = "cgroups.pressure_refresh_interval";

/// The three resources, as the files and the series name them, each a `cgroups.series`
/// name (`cpu_pressure`: both of its series).
const RESOURCES: [Resource; 3] = [
    Resource {
        file: "cpu.pressure",
        series: "cpu_pressure",
        waiting: "nodelens_cgroup_pressure_cpu_waiting_seconds_total",
        stalled: "nodelens_cgroup_pressure_cpu_stalled_seconds_total",
        what: "a CPU",
    },
    Resource {
        file: "memory.pressure",
        series: "memory_pressure",
        waiting: "nodelens_cgroup_pressure_memory_waiting_seconds_total",
        stalled: "nodelens_cgroup_pressure_memory_stalled_seconds_total",
        what: "memory (reclaim, refaults, swap-in)",
    },
    Resource {
        file: "io.pressure",
        series: "io_pressure",
        waiting: "nodelens_cgroup_pressure_io_waiting_seconds_total",
        stalled: "nodelens_cgroup_pressure_io_stalled_seconds_total",
        what: "I/O",
    },
];

struct Resource {
    file: &'static str,
    series: &'static str,
    waiting: &'static str,
    stalled: &'static str,
    what: &'static str,
}

/// Off by default: a node of 4,096 busy pods has room for about five lines a pod in 3 MB a
/// scrape, which CPU time, run-queue wait and the disk series take (docs/metrics.md). CPU
/// pressure also repeats `runqueue_wait` (from the scheduler, summed over the tasks).
const SERIES: &[CgroupSeriesName] = &[
    CgroupSeriesName {
        name: "cpu_pressure",
        default: false,
    },
    CgroupSeriesName {
        name: "memory_pressure",
        default: false,
    },
    CgroupSeriesName {
        name: "io_pressure",
        default: false,
    },
];

/// The family's settings.
#[derive(Debug, Clone)]
struct Settings {
    refresh: Duration,
    /// Which of [`RESOURCES`] are exported.
    exported: [bool; 3],
}

/// The (some, full) totals in microseconds of the three files, in [`RESOURCES`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals([(u64, u64); 3]);

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, other: Self) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
        }
    }
}

/// One cgroup's totals; `None` when it has no pressure files (PSI off, or a kernel
/// without per-cgroup PSI) or one cannot be parsed.
fn read_totals(cgroup: &LiveCgroup, exported: [bool; 3]) -> Option<Totals> {
    let mut totals = Totals::default();
    for ((slot, resource), wanted) in totals.0.iter_mut().zip(&RESOURCES).zip(exported) {
        // Files of resources nobody exports are not read (cpu.pressure, by default).
        if wanted {
            *slot = crate::psi::parse(&read_small(&cgroup.directory, resource.file)?).ok()?;
        }
    }
    Some(totals)
}

/// Why this host has no per-cgroup pressure, if it has none: the cgroup2 root's files
/// (present wherever PSI is on) are the test.
fn unavailable(ctx: &LoadContext) -> Option<String> {
    if !ctx.per_cgroup {
        return Some("off: needs per-cgroup accounting (the cgroup collector)".into());
    }
    let file = ctx.cgroup_root.join("cpu.pressure");
    match std::fs::read_to_string(&file) {
        Ok(text) if crate::psi::parse(&text).is_ok() => None,
        Ok(_) => Some(format!("off: {} is not a PSI file", file.display())),
        Err(e) => Some(format!(
            "off: cannot read {} ({e}): PSI is off on this kernel (CONFIG_PSI, or booted with psi=0); exporting nothing",
            file.display()
        )),
    }
}

impl Family for CgroupPressure {
    fn name(&self) -> &'static str {
        NAME
    }

    fn flags(&self) -> Vec<FamilyFlag> {
        vec![refresh_flag(
            REFRESH_KEY,
            "cgroup-pressure-refresh-interval",
            "cgroup_pressure_refresh_interval",
            "NODELENS_CGROUP_PRESSURE_REFRESH_INTERVAL",
            "the pressure files of cgroups whose tasks ran are read",
        )]
    }

    fn cgroup_series(&self) -> &'static [CgroupSeriesName] {
        SERIES
    }

    fn settings(&self, merged: &serde_json::Value) -> Result<Option<SettingsValue>, SettingError> {
        let refresh = refresh_setting(merged, REFRESH_KEY)?;
        let chosen = chosen_cgroup_series(merged, SERIES);
        let exported = RESOURCES.map(|r| chosen.contains(&r.series));
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
            .is_some_and(|s| s.exported.iter().any(|e| *e));
        layout.mode = Some(match unavailable(ctx) {
            Some(why) => why,
            None if !asked => {
                "off: no pressure series asked for (--cgroup-series default,memory_pressure,io_pressure); no file is read".into()
            }
            None => format!(
                "from each cgroup's {{cpu,memory,io}}.pressure under {}",
                ctx.cgroup_root.display()
            ),
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
        let up = unavailable(ctx).is_none();
        Ok(Box::new(PressureTables {
            files: CgroupFiles::new(
                "cgroup_pressure",
                ctx.cgroups.clone(),
                settings.refresh,
                capacity_for(ctx.max_cgroups),
                Box::new(move |c| read_totals(c, settings.exported)),
            ),
            exported: settings.exported,
            up,
        }))
    }
}

struct PressureTables {
    files: CgroupFiles<Totals>,
    exported: [bool; 3],
    /// This host has per-cgroup pressure files.
    up: bool,
}

impl LoadedFamily for PressureTables {
    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        gauge(
            out,
            "nodelens_cgroup_pressure_up",
            "1 when the cgroups' pressure files can be read (PSI on), 0 when not: then no per-cgroup pressure series are exported.",
            f64::from(u8::from(self.up)),
        )?;
        counter(
            out,
            "nodelens_cgroup_pressure_reads_total",
            "Cgroups whose pressure files the agent read (three files each), for its cost.",
            self.files.reads() as f64,
        )?;
        if !self.up {
            return Ok(());
        }
        // Owned labels, so that the tracker's lock is not held while encoding.
        let rows: Vec<(series::Rendered, Totals)> = self.files.map().scrape(|scrape| {
            let labels = series::choose(scrape.rows.rows.iter().map(|r| r.series));
            Ok(labels
                .into_iter()
                .zip(&scrape.rows.rows)
                .map(|(l, r)| (l.clone(), r.values))
                .collect())
        })?;
        let secs = |us: u64| us as f64 / 1e6;
        for (i, resource) in RESOURCES.iter().enumerate() {
            if !self.exported[i] {
                continue;
            }
            for (name, full, how) in [
                (resource.waiting, false, "at least one of"),
                (resource.stalled, true, "all non-idle"),
            ] {
                let help = format!(
                    "Time {how} the cgroup's tasks waited for {} ({}, {}).",
                    resource.what,
                    resource.file,
                    if full { "full" } else { "some" }
                );
                family(
                    out,
                    name,
                    &help,
                    MetricType::Counter,
                    rows.iter().filter_map(|(labels, totals)| {
                        let (some, all) = totals.0[i];
                        let us = if full { all } else { some };
                        (us != 0).then(|| (labels, secs(us)))
                    }),
                )?;
            }
        }
        Ok(())
    }

    fn upkeep(&self) {
        if self.up && self.exported.iter().any(|e| *e) {
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
    fn reads_the_three_files_and_none_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = LiveCgroup {
            id: 1,
            directory: dir.path().to_owned(),
            path: "a".into(),
            moved_round: 0,
        };
        assert_eq!(read_totals(&cgroup, [true; 3]), None);
        let line = |some: u64, full: u64| {
            format!(
                "some avg10=0.00 avg60=0.00 avg300=0.00 total={some}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total={full}\n"
            )
        };
        std::fs::write(dir.path().join("cpu.pressure"), line(10, 1)).unwrap();
        std::fs::write(dir.path().join("memory.pressure"), line(20, 2)).unwrap();
        assert_eq!(
            read_totals(&cgroup, [true; 3]),
            None,
            "io.pressure is missing"
        );
        assert_eq!(
            read_totals(&cgroup, [true, true, false]),
            Some(Totals([(10, 1), (20, 2), (0, 0)])),
            "a file not exported is not read"
        );
        std::fs::write(dir.path().join("io.pressure"), line(30, 3)).unwrap();
        assert_eq!(
            read_totals(&cgroup, [true; 3]),
            Some(Totals([(10, 1), (20, 2), (30, 3)]))
        );
    }

    #[test]
    fn each_resource_is_a_series_name() {
        let names: Vec<&str> = RESOURCES.iter().map(|r| r.series).collect();
        assert_eq!(names, SERIES.iter().map(|s| s.name).collect::<Vec<_>>());
    }
}
