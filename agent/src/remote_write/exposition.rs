//! Reads the agent's own text exposition back into samples, so that a push carries exactly
//! what a scrape returns: the same names and labels, histograms as their `_bucket`, `_sum`
//! and `_count` series, as Prometheus would store them after scraping.
//!
//! Only the subset nodelens writes is understood (no timestamps, no exemplars); a line it
//! cannot read is skipped and counted, never a panic.

/// One sample: its labels, `__name__` first and the rest in the order written, and value.
#[derive(Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// The samples of a text exposition, and how many lines could not be read.
pub fn parse(text: &str) -> (Vec<Sample>, usize) {
    let mut samples = Vec::new();
    let mut skipped = 0;
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Some(sample) => samples.push(sample),
            None => skipped += 1,
        }
    }
    (samples, skipped)
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut labels = vec![("__name__".to_owned(), name.to_owned())];
    let mut rest = &line[name_end..];
    if let Some(inside) = rest.strip_prefix('{') {
        rest = parse_labels(inside, &mut labels)?;
    }
    let value = rest.split_ascii_whitespace().next()?;
    Some(Sample {
        labels,
        value: parse_value(value)?,
    })
}

/// Parses `name="value",...}` and returns what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Vec<(String, String)>) -> Option<&'a str> {
    loop {
        s = s.trim_start_matches(',');
        if let Some(after) = s.strip_prefix('}') {
            return Some(after);
        }
        let (name, after) = s.split_once("=\"")?;
        let (value, rest) = crate::render::read_quoted(after)?;
        labels.push((name.to_owned(), value));
        s = rest;
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_escapes_and_special_values() {
        let text = "# HELP a x\n# TYPE a counter\na_total 3\n\
                    b{x=\"1\",y=\"q\\\"uo\\\\te\\nnl\"} 2.5\n\
                    h_bucket{le=\"+Inf\"} 7\nc +Inf\nd NaN\nbroken{x=\"1\" 2\n";
        let (samples, skipped) = parse(text);
        assert_eq!(skipped, 1);
        assert_eq!(samples[0].labels, [("__name__".into(), "a_total".into())]);
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(
            samples[1].labels[2],
            ("y".to_owned(), "q\"uo\\te\nnl".to_owned())
        );
        assert_eq!(samples[2].labels[1], ("le".into(), "+Inf".into()));
        assert_eq!(samples[3].value, f64::INFINITY);
        assert!(samples[4].value.is_nan());
    }
}
