//! The kernel's pressure stall information files: `/proc/pressure/{cpu,io,memory}` for the
//! node (the `pressure` collector) and `{cpu,io,memory}.pressure` in every cgroup2 cgroup
//! (the `cgroup_pressure` family). Both have the same format.

/// Parses `some avg10=.. avg60=.. avg300=.. total=N` and the optional `full` line into the
/// (some, full) totals in microseconds. `full` is 0 where the kernel has no such line (cpu
/// before 5.13).
pub fn parse(text: &str) -> Result<(u64, u64), String> {
    let (mut some, mut full) = (None, 0);
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let kind = parts.next();
        let total = parts
            .find_map(|p| p.strip_prefix("total="))
            .and_then(|v| v.parse::<u64>().ok());
        match (kind, total) {
            (Some("some"), Some(t)) => some = Some(t),
            (Some("full"), Some(t)) => full = t,
            (None, _) => {}
            _ => return Err(format!("bad line {line:?}")),
        }
    }
    some.map(|s| (s, full))
        .ok_or_else(|| "no 'some' line".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_optional_full() {
        let some = "some avg10=0.00 avg60=0.10 avg300=0.00 total=9936827\n";
        assert_eq!(parse(some).unwrap(), (9936827, 0));
        let both = format!("{some}full avg10=0.00 avg60=0.00 avg300=0.00 total=42\n");
        assert_eq!(parse(&both).unwrap(), (9936827, 42));
        assert!(parse("").is_err());
        assert!(parse("some avg10=0.00 total=x\n").is_err());
    }
}
