//! `node_vmstat_*` for node_exporter's default fields: oom_kill, pgpg*, pswp*, pg*fault.
//! node_exporter exports them untyped, so do we.
use std::path::PathBuf;

use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::source::{HostPaths, parse_error, read_to_string};
use crate::metrics::{CollectError, Collector, single};

#[derive(Debug)]
pub struct VmstatCollector {
    path: PathBuf,
}

impl VmstatCollector {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.procfs.join("vmstat"),
        }
    }
}

/// node_exporter's default `--collector.vmstat.fields`: `^(oom_kill|pgpg|pswp|pg.*fault).*`.
/// The fields node_exporter exports by default, from `/proc/vmstat`.
pub fn parse(text: &str) -> Result<Vec<(&str, f64)>, String> {
    let mut fields = Vec::with_capacity(8);
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !is_default_field(name) {
            continue;
        }
        let value: f64 = value
            .parse()
            .map_err(|_| format!("bad value on line {line:?}"))?;
        fields.push((name, value));
    }
    Ok(fields)
}

pub fn is_default_field(name: &str) -> bool {
    name.starts_with("oom_kill")
        || name.starts_with("pgpg")
        || name.starts_with("pswp")
        || (name.starts_with("pg") && name[2..].contains("fault"))
}

impl Collector for VmstatCollector {
    fn name(&self) -> &'static str {
        "vmstat"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let text = read_to_string(&self.path)?;
        let fields = parse(&text).map_err(|e| parse_error(&self.path, e))?;
        for (name, value) in fields {
            single(
                out,
                &format!("node_vmstat_{name}"),
                &format!("/proc/vmstat information field {name}."),
                MetricType::Unknown,
                value,
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
    fn default_fields_match_node_exporter() {
        for f in [
            "oom_kill",
            "pgpgin",
            "pgpgout",
            "pswpin",
            "pswpout",
            "pgfault",
            "pgmajfault",
        ] {
            assert!(is_default_field(f), "{f}");
        }
        for f in [
            "nr_free_pages",
            "pgfree",
            "workingset_refault_anon",
            "pgscan_kswapd",
        ] {
            assert!(!is_default_field(f), "{f}");
        }
    }

    #[test]
    fn renders_untyped() {
        let text = render(VmstatCollector::new(&HostPaths {
            procfs: fixture("proc"),
            rootfs: "/".into(),
        }));
        assert!(
            text.contains("# TYPE node_vmstat_pgfault untyped"),
            "{text}"
        );
        assert!(text.contains("node_vmstat_oom_kill "), "{text}");
    }
}
