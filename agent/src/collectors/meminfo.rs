//! `node_memory_<Field>[_bytes]` for every line of `/proc/meminfo`, named as node_exporter
//! names them: `Active(anon)` becomes `Active_anon`, and fields in kB become `_bytes`.
//!
//! Hand-written because procfs' `Meminfo` is a fixed struct, and node_exporter exports
//! every field the running kernel has, including ones newer than any crate.
use std::path::PathBuf;

use prometheus_client::encoding::DescriptorEncoder;

use super::source::{HostPaths, parse_error, read_to_string};
use crate::metrics::{CollectError, Collector, gauge};

#[derive(Debug)]
pub struct MeminfoCollector {
    path: PathBuf,
}

impl MeminfoCollector {
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            path: paths.procfs.join("meminfo"),
        }
    }
}

/// (metric name, value) for each field.
pub fn parse(text: &str) -> Result<Vec<(String, f64)>, String> {
    let mut fields = Vec::with_capacity(64);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            return Err(format!("bad line {line:?}"));
        };
        let key = key.strip_suffix(':').unwrap_or(key);
        let mut value: f64 = value
            .parse()
            .map_err(|_| format!("bad value on line {line:?}"))?;
        let mut name = String::with_capacity(key.len() + 20);
        name.push_str("node_memory_");
        // "Active(anon)" -> "Active_anon", as node_exporter's regexp does.
        for ch in key.chars() {
            match ch {
                '(' => name.push('_'),
                ')' => {}
                c if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                _ => name.push('_'),
            }
        }
        match parts.next() {
            Some("kB") => {
                value *= 1024.0;
                name.push_str("_bytes");
            }
            Some(unit) => return Err(format!("unknown unit {unit:?} on line {line:?}")),
            None => {}
        }
        fields.push((name, value));
    }
    if fields.is_empty() {
        return Err("no fields".into());
    }
    Ok(fields)
}

impl Collector for MeminfoCollector {
    fn name(&self) -> &'static str {
        "meminfo"
    }

    fn collect(&self, out: &mut DescriptorEncoder) -> Result<(), CollectError> {
        let text = read_to_string(&self.path)?;
        let fields = parse(&text).map_err(|d| parse_error(&self.path, d))?;
        let mut help = String::with_capacity(64);
        for (name, value) in fields {
            help.clear();
            help.push_str("Memory information field ");
            help.push_str(&name["node_memory_".len()..]);
            help.push('.');
            gauge(out, &name, &help, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::testutil::fixture;

    #[test]
    fn names_match_node_exporter() {
        let text = std::fs::read_to_string(fixture("proc/meminfo")).unwrap();
        let fields = parse(&text).unwrap();
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert!(get("node_memory_MemTotal_bytes").unwrap() > 0.0);
        assert!(get("node_memory_Active_anon_bytes").is_some());
        assert!(
            get("node_memory_HugePages_Total").is_some(),
            "no unit, no _bytes"
        );
        assert_eq!(fields.len(), text.lines().count());
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(parse("").is_err());
        assert!(parse("MemTotal:\n").is_err());
        assert!(parse("MemTotal: x kB\n").is_err());
        assert!(parse("MemTotal: 1 MB\n").is_err());
    }
}
