//! Rendering a scrape: the registry through prometheus_client's encoders, plus the families
//! too large for them, written straight as exposition text.
//!
//! A node with 4,096 pods has some 16,000 per-cgroup series. Through the encoder each
//! sample costs a descriptor lookup, a label encoder and a dozen small buffered writes;
//! written directly it is one copy of its label text, rendered once per cgroup, and its
//! value. Collectors reach the direct text of the scrape being rendered on their thread
//! through [`direct`]: prometheus_client's `Collector::encode` cannot carry it, and a scrape
//! renders on one thread from start to end (the HTTP server and the remote_write sampler
//! may render at the same time, each on its own thread).
use std::{
    cell::RefCell,
    fmt,
    sync::atomic::{AtomicUsize, Ordering},
};

use prometheus_client::registry::Registry;

/// The two text formats a scrape is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

thread_local! {
    /// The direct text of the scrape this thread is rendering, if any.
    static DIRECT: RefCell<Option<DirectText>> = const { RefCell::new(None) };
}

/// The length of the last scrape rendered, to size the next one's buffer up front: a 2 MB
/// scrape grown from empty would be copied some twenty times as the buffer doubles.
static LAST_LENGTH: AtomicUsize = AtomicUsize::new(64 * 1024);

/// Encodes `registry` in `format`, with every family collectors wrote through [`direct`].
pub fn render(registry: &Registry, format: Format) -> Result<String, fmt::Error> {
    let guess = LAST_LENGTH.load(Ordering::Relaxed);
    DIRECT.with_borrow_mut(|d| *d = Some(DirectText::new(format, guess / 2)));
    let mut out = String::with_capacity(guess + guess / 8);
    let encoded = match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry),
    };
    let direct = DIRECT.with_borrow_mut(Option::take);
    encoded?;
    if let Some(direct) = direct.filter(|d| !d.text.is_empty()) {
        // Families may come in any order, but OpenMetrics ends with `# EOF`.
        let eof = match format {
            Format::OpenMetrics if out.ends_with("# EOF\n") => Some(out.len() - "# EOF\n".len()),
            _ => None,
        };
        match eof {
            Some(at) => out.insert_str(at, &direct.text),
            None => out.push_str(&direct.text),
        }
    }
    LAST_LENGTH.store(out.len(), Ordering::Relaxed);
    Ok(out)
}

/// Runs `f` on the direct text of the scrape this thread is rendering. `None` when the
/// registry is being encoded some other way than [`render`].
pub fn direct<R>(f: impl FnOnce(Option<&mut DirectText>) -> R) -> R {
    DIRECT.with_borrow_mut(|d| f(d.as_mut()))
}

/// Families written as exposition text, in the format of the scrape.
#[derive(Debug)]
pub struct DirectText {
    format: Format,
    text: String,
}

impl DirectText {
    fn new(format: Format, capacity: usize) -> Self {
        Self {
            format,
            text: String::with_capacity(capacity),
        }
    }

    /// Starts a counter family. `name` ends in `_total`: OpenMetrics names the family
    /// without it and its samples with it, the 0.0.4 format names both with it (as
    /// prometheus_client does).
    pub fn counter(&mut self, name: &str, help: &str) -> Samples<'_> {
        let family = match self.format {
            Format::OpenMetrics => name.strip_suffix("_total").unwrap_or(name),
            Format::Prometheus => name,
        };
        let help = match self.format {
            // 0.0.4 escapes backslashes and newlines in HELP; OpenMetrics writes it as is.
            Format::Prometheus => help.replace('\\', "\\\\").replace('\n', "\\n"),
            Format::OpenMetrics => help.to_owned(),
        };
        for (kind, rest) in [("HELP", help.as_str()), ("TYPE", "counter")] {
            self.text.push_str("# ");
            self.text.push_str(kind);
            self.text.push(' ');
            self.text.push_str(family);
            self.text.push(' ');
            self.text.push_str(rest);
            self.text.push('\n');
        }
        Samples {
            text: &mut self.text,
            name: name.to_owned(),
        }
    }
}

/// The samples of one family.
pub struct Samples<'a> {
    text: &'a mut String,
    name: String,
}

impl Samples<'_> {
    /// Starts a sample line. `labels` is the label text between the braces, escaped, with
    /// or without a trailing comma (`a="x",b="y"`; empty for none), and `extra` one more
    /// pair after it (a family's own label, such as `kind`).
    fn start(&mut self, labels: &str, extra: Option<(&str, &str)>) {
        self.text.push_str(&self.name);
        let labels = labels.strip_suffix(',').unwrap_or(labels);
        if !labels.is_empty() || extra.is_some() {
            self.text.push('{');
            self.text.push_str(labels);
            if let Some((key, value)) = extra {
                if !labels.is_empty() {
                    self.text.push(',');
                }
                self.text.push_str(key);
                self.text.push_str("=\"");
                escape_into(self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
    }

    /// A sample with a float value, written as prometheus_client writes floats.
    pub fn float(&mut self, labels: &str, extra: Option<(&str, &str)>, value: f64) {
        self.start(labels, extra);
        self.text.push_str(dtoa::Buffer::new().format(value));
        self.text.push('\n');
    }

    /// A sample with a whole-number value.
    pub fn count(&mut self, labels: &str, extra: Option<(&str, &str)>, value: u64) {
        self.start(labels, extra);
        self.text.push_str(itoa::Buffer::new().format(value));
        self.text.push('\n');
    }
}

/// A label value as the text formats write it: backslash, double quote and newline escaped.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{NoLabels, counts, family};
    use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

    /// Writes the same two counter families through the encoder and directly.
    #[derive(Debug)]
    struct Both {
        direct: bool,
    }

    const HELP: &str = "Help with a \\ backslash.";

    impl prometheus_client::collector::Collector for Both {
        fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
            let labels = [("pod", "a"), ("namespace", "b\"q")];
            if !self.direct {
                family(
                    &mut out,
                    "x_seconds_total",
                    HELP,
                    MetricType::Counter,
                    [(labels, 0.001262962), (labels, 3.0)],
                )?;
                counts(
                    &mut out,
                    "y_total",
                    HELP,
                    [
                        (vec![("kind", "v")], 7u64),
                        (vec![("pod", "a"), ("kind", "w\"\n")], 8),
                    ],
                )?;
                return counts(
                    &mut out,
                    "z_total",
                    HELP,
                    std::iter::empty::<(NoLabels, u64)>(),
                );
            }
            direct(|d| {
                let d = d.expect("rendering");
                let mut x = d.counter("x_seconds_total", HELP);
                // With and without the trailing comma Rendered's text carries.
                x.float("pod=\"a\",namespace=\"b\\\"q\",", None, 0.001262962);
                x.float("pod=\"a\",namespace=\"b\\\"q\"", None, 3.0);
                let mut y = d.counter("y_total", HELP);
                y.count("", Some(("kind", "v")), 7);
                y.count("pod=\"a\",", Some(("kind", "w\"\n")), 8);
                d.counter("z_total", HELP);
            });
            Ok(())
        }
    }

    fn registry(direct: bool) -> Registry {
        let mut r = Registry::default();
        r.register_collector(Box::new(Both { direct }));
        r
    }

    #[test]
    fn direct_text_matches_the_encoder_in_both_formats() {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let encoded = render(&registry(false), format).unwrap();
            let written = render(&registry(true), format).unwrap();
            assert_eq!(written, encoded, "{format:?}");
            if format == Format::OpenMetrics {
                assert!(written.ends_with("# EOF\n"), "{written}");
                assert_eq!(written.matches("# EOF").count(), 1);
            }
        }
    }

    #[test]
    fn without_render_there_is_no_direct_text() {
        assert!(direct(|d| d.is_none()));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry(false)).unwrap();
        assert!(
            direct(|d| d.is_none()),
            "a plain encode leaves nothing behind"
        );
    }
}
