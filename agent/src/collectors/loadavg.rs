//! `node_load1`, `node_load5`, `node_load15` from `/proc/loadavg`.
//!
//! Parsed as f64 directly: procfs' `LoadAverage` holds f32, which would turn 0.44 into
//! 0.4399999976 and break equality with node_exporter.
use std::path::PathBuf;

use prometheus_client::encoding::DescriptorEncoder;

use super::source::{HostPaths, parse_error, read_to_string};
use crate::metrics::{CollectError, Collector, gauge};

#[derive(Debug)]
pub struct LoadavgCollector {
    path: PathBuf,
}

impl LoadavgCollector {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.procfs.join("loadavg"),
        }
    }
}

pub fn parse(text: &str) -> Result<[f64; 3], String> {
    let mut it = text.split_ascii_whitespace().map(str::parse::<f64>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Ok([a, b, c]),
        _ => Err(format!(
            "expected three load averages, got {:?}",
            text.trim()
        )),
    }
}

impl Collector for LoadavgCollector {
    fn name(&self) -> &'static str {
        "loadavg"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let text = read_to_string(&self.path)?;
        let [one, five, fifteen] = parse(&text).map_err(|d| parse_error(&self.path, d))?;
        gauge(out, "node_load1", "1m load average.", one)?;
        gauge(out, "node_load15", "15m load average.", fifteen)?;
        gauge(out, "node_load5", "5m load average.", five)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            parse("1.30 0.44 0.16 3/180 4242\n").unwrap(),
            [1.3, 0.44, 0.16]
        );
        assert!(parse("").is_err());
        assert!(parse("1.0 x 2.0").is_err());
    }
}
