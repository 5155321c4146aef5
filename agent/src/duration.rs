//! Durations as the settings write them (`5s`, `500ms`, `1m`), for config and for the
//! families' own settings alike.
use std::time::Duration;

/// Parses a duration of at least `min`; the error says what is wrong and how to write one.
pub fn parse(value: &str, min: Duration) -> Result<Duration, String> {
    // humantime 2 panics when seconds near u64::MAX meet a nanosecond carry
    // (chronotope/humantime#66, found by fuzzing): no useful duration has a number of more
    // than 9 digits, so refuse those first.
    let longest_number = value
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest_number > 9 || value.len() > 64 {
        return Err(format!(
            "{value:?} is not a duration (too long; write for example 5s, 500ms or 1m)"
        ));
    }
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        format!("{value:?} is not a duration ({e}; write for example 5s, 500ms or 1m)")
    })?;
    if d < min {
        return Err(format!(
            "{value:?} is too short (at least {})",
            humantime::format_duration(min)
        ));
    }
    Ok(d)
}
