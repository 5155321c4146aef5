//! tracefs: where classic tracepoints live, and the field offsets in their `format` files.
use std::path::{Path, PathBuf};

/// The places tracefs is found, newest first. aya looks in the same two.
const TRACEFS_CANDIDATES: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The mounted tracefs, if any. A directory without `events/` is an unmounted mount point.
pub fn find() -> Option<PathBuf> {
    TRACEFS_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

pub const NOT_MOUNTED: &str = "tracefs not mounted at /sys/kernel/tracing (mount it: mount -t tracefs nodev /sys/kernel/tracing, or use a kernel with BTF so tp_btf works)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// Reads `events/<category>/<event>/format` and returns `field`'s offset and size.
pub fn field(tracefs: &Path, category: &str, event: &str, field: &str) -> Result<Field, String> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_field(&text, field).ok_or_else(|| format!("{}: no field {field}", path.display()))
}

/// Finds `field:<type> <name>;\toffset:N;\tsize:M;` in a format file.
pub fn parse_field(format: &str, name: &str) -> Option<Field> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let decl_name = decl.rsplit([' ', '*']).next()?;
        let decl_name = decl_name.split('[').next()?;
        if decl_name != name {
            return None;
        }
        let mut offset = None;
        let mut size = None;
        for p in parts {
            if let Some(v) = p.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = p.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        Some(Field {
            offset: offset?,
            size: size?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::testutil::fixture;

    #[test]
    fn parses_sched_switch_format() {
        let text = std::fs::read_to_string(fixture("tracefs/sched_switch.format")).unwrap();
        assert_eq!(
            parse_field(&text, "prev_pid"),
            Some(Field {
                offset: 24,
                size: 4
            })
        );
        assert_eq!(
            parse_field(&text, "prev_state"),
            Some(Field {
                offset: 32,
                size: 8
            })
        );
        assert_eq!(
            parse_field(&text, "next_pid"),
            Some(Field {
                offset: 56,
                size: 4
            })
        );
        assert_eq!(
            parse_field(&text, "prev_comm"),
            Some(Field {
                offset: 8,
                size: 16
            })
        );
        assert_eq!(parse_field(&text, "nope"), None);
        assert_eq!(parse_field("field:int x;\toffset:zz;\tsize:4;", "x"), None);
    }
}
