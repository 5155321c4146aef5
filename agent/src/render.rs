//! Rendering a scrape: the registry through prometheus_client's encoders, plus the families
//! too large for them, written straight as exposition text, or in a protobuf scrape
//! ([`render_bytes`]) straight as protobuf (`crate::protobuf_wire`). Label sets rendered
//! once as text give their pairs one by one to the encoder when [`protobuf`] says so.
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

/// The formats a scrape is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The Prometheus protobuf format: length-delimited `io.prometheus.client.MetricFamily`
    /// messages.
    Protobuf,
}

thread_local! {
    /// The direct text of the scrape this thread is rendering, if any.
    static DIRECT: RefCell<Option<DirectText>> = const { RefCell::new(None) };
    /// Whether this thread is rendering a protobuf scrape: label sets rendered once as
    /// text (`cgroups::series::Rendered`) then give their pairs one by one, and the
    /// families written directly as text go through the encoder.
    static PROTOBUF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is rendering a protobuf scrape ([`render_bytes`]).
pub fn protobuf() -> bool {
    PROTOBUF.get()
}

/// `protobuf_classic_histograms`: set once at startup, for every protobuf scrape.
static PROTOBUF_CLASSIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Sets `protobuf_classic_histograms` (on unless turned off).
pub fn set_protobuf_classic_histograms(on: bool) {
    PROTOBUF_CLASSIC.store(on, Ordering::Relaxed);
}

/// Whether a histogram that also has a native version gets its classic buckets in this
/// scrape: always in text, in protobuf unless `protobuf_classic_histograms` is off.
pub fn classic_beside_native() -> bool {
    !protobuf() || PROTOBUF_CLASSIC.load(Ordering::Relaxed)
}

/// Encodes `registry` in `format`, as the bytes of a response body.
pub fn render_bytes(registry: &Registry, format: Format) -> Result<Vec<u8>, fmt::Error> {
    if format != Format::Protobuf {
        return render(registry, format).map(String::into_bytes);
    }
    /// Puts the flag back when dropped, also when a collector panics.
    struct Flag(bool);
    impl Drop for Flag {
        fn drop(&mut self) {
            PROTOBUF.set(self.0);
        }
    }
    use prometheus_client::encoding::prometheus_protobuf::{
        encode,
        prometheus_data_model::{MetricType, Untyped},
    };
    use prost::Message as _;
    let _flag = Flag(PROTOBUF.replace(true));
    // The families collectors write directly (`crate::protobuf_wire`) come first.
    // Its bytes become the response: room for the whole of the last one.
    let capacity = LAST_PROTOBUF.load(Ordering::Relaxed) * 9 / 8;
    let installed = Installed::new(DirectText::new(Format::Protobuf, capacity));
    let families = encode(registry);
    let direct = installed.finish();
    let mut families = families?;
    let mut out = direct.map(|d| d.protobuf).unwrap_or_default();
    for family in &mut families {
        // prometheus_client 0.26 puts an untyped sample's value in the `gauge` field, where
        // Prometheus does not look for it (it reads `untyped` for an UNTYPED family, and
        // would store 0): moved to where it belongs.
        if family.r#type == MetricType::Untyped as i32 {
            for metric in &mut family.metric {
                if let Some(gauge) = metric.gauge.take() {
                    metric.untyped = Some(Untyped { value: gauge.value });
                }
            }
        }
        family
            .encode_length_delimited(&mut out)
            .map_err(|_| fmt::Error)?;
    }
    LAST_PROTOBUF.store(out.len(), Ordering::Relaxed);
    Ok(out)
}

/// The lengths of the last scrape's two parts, to size the next one's buffers up front: a
/// 2 MB scrape grown from empty would be copied some twenty times as its buffer doubles.
static LAST_ENCODED: AtomicUsize = AtomicUsize::new(64 * 1024);
static LAST_DIRECT: AtomicUsize = AtomicUsize::new(0);
static LAST_PROTOBUF: AtomicUsize = AtomicUsize::new(64 * 1024);

/// Encodes `registry` in `format`, with every family collectors wrote through [`direct`].
/// The direct families come first: families may come in any order, the end stays as
/// prometheus_client writes it (OpenMetrics' `# EOF`), and a family declared without
/// samples (which these can be) is never the last thing in the text, where some parsers
/// refuse it.
/// A text format only: [`render_bytes`] renders them all.
pub fn render(registry: &Registry, format: Format) -> Result<String, fmt::Error> {
    if format == Format::Protobuf {
        return Err(fmt::Error);
    }
    let encoded_guess = LAST_ENCODED.load(Ordering::Relaxed);
    let direct_guess = LAST_DIRECT.load(Ordering::Relaxed);
    // The direct text becomes the whole scrape: room for both parts, when there is one.
    let direct_capacity = match direct_guess {
        0 => 0,
        n => n + n / 8 + encoded_guess + encoded_guess / 8,
    };
    let installed = Installed::new(DirectText::new(format, direct_capacity));
    let mut encoded = String::with_capacity(encoded_guess + encoded_guess / 8);
    let result = match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut encoded, registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut encoded, registry),
        Format::Protobuf => Err(fmt::Error),
    };
    let direct = installed.finish();
    result?;
    LAST_ENCODED.store(encoded.len(), Ordering::Relaxed);
    let Some(DirectText { text: mut out, .. }) = direct.filter(|d| !d.text.is_empty()) else {
        LAST_DIRECT.store(0, Ordering::Relaxed);
        return Ok(encoded);
    };
    LAST_DIRECT.store(out.len(), Ordering::Relaxed);
    out.push_str(&encoded);
    Ok(out)
}

/// This render's direct text, in place for the collectors. Dropping it, also when a collector
/// panics, puts back what was there before (nothing, or the text of a render this one runs
/// inside), so no text is left behind to swallow a later scrape's families.
struct Installed {
    previous: Option<DirectText>,
    finished: bool,
}

impl Installed {
    fn new(text: DirectText) -> Self {
        Self {
            previous: DIRECT.replace(Some(text)),
            finished: false,
        }
    }

    /// Takes this render's text back, and puts back the one before it.
    fn finish(mut self) -> Option<DirectText> {
        self.finished = true;
        DIRECT.replace(self.previous.take())
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.finished {
            DIRECT.set(self.previous.take());
        }
    }
}

/// Runs `f` on the direct text of the scrape this thread is rendering. `None` when the
/// registry is being encoded some other way than [`render`].
pub fn direct<R>(f: impl FnOnce(Option<&mut DirectText>) -> R) -> R {
    DIRECT.with_borrow_mut(|d| f(d.as_mut()))
}

/// Families written directly, in the format of the scrape: exposition text, or in a
/// protobuf scrape delimited `MetricFamily` messages.
#[derive(Debug)]
pub struct DirectText {
    format: Format,
    text: String,
    protobuf: Vec<u8>,
}

impl DirectText {
    fn new(format: Format, capacity: usize) -> Self {
        let (text, protobuf) = match format {
            Format::Protobuf => (String::new(), Vec::with_capacity(capacity)),
            _ => (String::with_capacity(capacity), Vec::new()),
        };
        Self {
            format,
            text,
            protobuf,
        }
    }

    /// The bytes of a protobuf scrape, to write families to with
    /// [`crate::protobuf_wire`]; `None` when the scrape is text.
    pub fn protobuf(&mut self) -> Option<&mut Vec<u8>> {
        (self.format == Format::Protobuf).then_some(&mut self.protobuf)
    }

    /// Starts a counter family: its HELP and TYPE lines, written even if no sample
    /// follows, as prometheus_client declares every family. `name` ends in `_total`:
    /// OpenMetrics names the family without it and its samples with it, the 0.0.4 format
    /// names both with it (as prometheus_client does).
    pub fn counter<'a>(&'a mut self, name: &'a str, help: &str) -> Samples<'a> {
        debug_assert!(
            name.ends_with("_total"),
            "{name}: a counter's name ends in _total"
        );
        let family = match self.format {
            Format::OpenMetrics => name.strip_suffix("_total").unwrap_or(name),
            // (A protobuf scrape has no direct text.)
            Format::Prometheus | Format::Protobuf => name,
        };
        let help = match self.format {
            // 0.0.4 escapes backslashes and newlines in HELP; OpenMetrics writes it as is.
            Format::Prometheus | Format::Protobuf => {
                help.replace('\\', "\\\\").replace('\n', "\\n")
            }
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
            name,
        }
    }
}

/// The samples of one family.
pub struct Samples<'a> {
    text: &'a mut String,
    name: &'a str,
}

impl<'a> Samples<'a> {
    /// Sample lines of family `name` written into `text`, any string: a collector that keeps
    /// rendered lines between scrapes writes them with this and copies them in with
    /// [`Self::lines`]. Sample lines are the same in both formats; only the HELP and TYPE
    /// lines differ.
    pub fn into_string(text: &'a mut String, name: &'a str) -> Self {
        Self { text, name }
    }

    /// Copies in complete sample lines of this family, made by [`Self::into_string`] with
    /// the same name.
    pub fn lines(&mut self, lines: &str) {
        self.text.push_str(lines);
    }

    /// Starts a sample line. `labels` is the label text between the braces, escaped, with
    /// or without a trailing comma (`a="x",b="y"`; empty for none), and `extra` more pairs
    /// after it (a family's own labels, such as `kind`, or `device` and `op`).
    fn start(&mut self, labels: &str, extra: &[(&str, &str)]) {
        self.text.push_str(self.name);
        let labels = labels.strip_suffix(',').unwrap_or(labels);
        if !labels.is_empty() || !extra.is_empty() {
            self.text.push('{');
            self.text.push_str(labels);
            let mut first = labels.is_empty();
            for (key, value) in extra {
                if !first {
                    self.text.push(',');
                }
                first = false;
                self.text.push_str(key);
                self.text.push_str("=\"");
                escape_into(self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
    }

    /// A sample with a float value: the digits prometheus_client writes for finite values,
    /// and `+Inf`, `-Inf` or `NaN` (which both formats spell so) for the others.
    pub fn float(&mut self, labels: &str, extra: &[(&str, &str)], value: f64) {
        self.start(labels, extra);
        if value.is_finite() {
            self.text.push_str(dtoa::Buffer::new().format_finite(value));
        } else if value.is_nan() {
            self.text.push_str("NaN");
        } else if value > 0.0 {
            self.text.push_str("+Inf");
        } else {
            self.text.push_str("-Inf");
        }
        self.text.push('\n');
    }

    /// A sample with a whole-number value.
    pub fn count(&mut self, labels: &str, extra: &[(&str, &str)], value: u64) {
        self.start(labels, extra);
        self.text.push_str(itoa::Buffer::new().format(value));
        self.text.push('\n');
    }
}

/// A label value as [`escape_into`] writes it, read back: `s` starts after its opening
/// quote; returns the value unescaped and what follows its closing quote.
pub fn read_quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    let end = loop {
        match chars.next()? {
            (i, '"') => break i,
            (_, '\\') => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            (_, c) => value.push(c),
        }
    };
    Some((value, &s[end + 1..]))
}

/// A label value as the text formats write it: backslash, double quote and newline escaped.
pub fn escape_into(out: &mut String, value: &str) {
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
                x.float("pod=\"a\",namespace=\"b\\\"q\",", &[], 0.001262962);
                x.float("pod=\"a\",namespace=\"b\\\"q\"", &[], 3.0);
                let mut y = d.counter("y_total", HELP);
                y.count("", &[("kind", "v")], 7);
                y.count("pod=\"a\",", &[("kind", "w\"\n")], 8);
                // Declared, without samples.
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

    /// Direct families come before the encoded ones, whatever the collectors' order.
    #[test]
    fn direct_families_come_first() {
        #[derive(Debug)]
        struct Mixed;
        impl prometheus_client::collector::Collector for Mixed {
            fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
                crate::metrics::gauge(&mut out, "encoded", "Encoded.", 1.0)?;
                direct(|d| {
                    d.expect("rendering")
                        .counter("direct_total", "Direct.")
                        .count("", &[], 2)
                });
                Ok(())
            }
        }
        let mut r = Registry::default();
        r.register_collector(Box::new(Mixed));
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let text = render(&r, format).unwrap();
            let at = |needle: &str| text.find(needle).expect(needle);
            assert!(at("direct_total 2") < at("# HELP encoded"), "{text}");
        }
    }

    /// A collector that panics mid-scrape leaves no direct text behind on its thread.
    #[test]
    fn a_panicking_collector_leaves_nothing_installed() {
        #[derive(Debug)]
        struct Panics;
        impl prometheus_client::collector::Collector for Panics {
            fn encode(&self, _: DescriptorEncoder) -> fmt::Result {
                direct(|d| {
                    d.expect("rendering")
                        .counter("a_total", "A.")
                        .count("", &[], 1)
                });
                panic!("a collector bug");
            }
        }
        let mut r = Registry::default();
        r.register_collector(Box::new(Panics));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            render(&r, Format::Prometheus)
        }));
        assert!(caught.is_err());
        assert!(direct(|d| d.is_none()), "nothing left installed");
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
