//! The labels a per-cgroup series carries, the same for every family, rendered once per
//! cgroup rather than once per series per scrape (a node with 4,096 pods has 16,000 such
//! series).
//!
//! `namespace`, `pod` and `container` are set for kubelet cgroups; empty ones are left out
//! (an empty label and a missing one are the same to Prometheus). The `cgroup` path is left
//! out too when the names identify a kubelet cgroup, which is most of the bytes of a
//! scrape on a busy node, unless `--cgroup-path-label always` keeps it. When two rows of one
//! scrape would end up with the same labels (a restarted container's old cgroup, exported
//! one last time, and its new one), both keep their path, so no series is ever duplicated.
//! A family's own label (`kind`, `device`, `op`) comes after these.
use std::hash::{Hash, Hasher};

use rustc_hash::FxHashMap;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

use super::CgroupLabels;
use super::settings::PathLabel;

/// One label set, rendered: `head` is every pair but the last value, written as the text
/// format has it (`container="app",namespace="team-a",pod`), and `tail` that last value,
/// unescaped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    head: String,
    tail: String,
    /// Every pair, with a trailing `,`: the prefix when a family adds a label of its own.
    full: String,
    /// The pairs as protobuf label fields, made at the first protobuf scrape that needs
    /// them (a node scraped only as text never pays for them).
    protobuf: std::sync::OnceLock<Vec<u8>>,
}

/// A label value as the text format writes it.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    crate::render::escape_into(&mut out, value);
    out
}

impl Rendered {
    fn new(pairs: &[(&str, &str)]) -> Self {
        let Some(((last_key, last_value), rest)) = pairs.split_last() else {
            return Self::default();
        };
        let mut head = String::new();
        for (k, v) in rest {
            head.push_str(k);
            head.push_str("=\"");
            head.push_str(&escape(v));
            head.push_str("\",");
        }
        let mut full = head.clone();
        full.push_str(last_key);
        full.push_str("=\"");
        full.push_str(&escape(last_value));
        full.push_str("\",");
        head.push_str(last_key);
        Self {
            head,
            tail: (*last_value).to_owned(),
            full,
            protobuf: std::sync::OnceLock::new(),
        }
    }

    /// Every pair as the text formats write it between the braces, with a trailing comma
    /// (empty for none).
    pub fn text(&self) -> &str {
        &self.full
    }

    /// Every pair as protobuf `Metric.label` fields (`crate::protobuf_wire::labels`).
    pub fn protobuf(&self) -> &[u8] {
        self.protobuf.get_or_init(|| {
            let pairs: Vec<(&str, String)> = pairs(&self.full).collect();
            crate::protobuf_wire::labels(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        })
    }

    /// These labels and then every pair of `extra`.
    pub fn and_all<'a, const N: usize>(
        &'a self,
        extra: [(&'static str, &'a str); N],
    ) -> WithLabels<'a, N> {
        WithLabels { base: self, extra }
    }
}

/// The pairs of label text as [`Rendered`] writes it (`a="x",b="y\"z",`), values unescaped.
fn pairs(text: &str) -> impl Iterator<Item = (&str, String)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let (key, after) = rest.split_once("=\"")?;
        let (value, after) = crate::render::read_quoted(after)?;
        rest = after.strip_prefix(',').unwrap_or(after);
        Some((key, value))
    })
}

/// Encodes pairs one label each, as the protobuf format wants them.
fn encode_pairs<'a>(
    encoder: &mut LabelSetEncoder,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> std::fmt::Result {
    use std::fmt::Write as _;
    for (k, v) in pairs {
        let mut label = encoder.encode_label();
        let mut key = label.encode_label_key()?;
        key.write_str(k)?;
        let mut value = key.encode_label_value()?;
        value.write_str(v)?;
        value.finish()?;
    }
    Ok(())
}

impl EncodeLabelSet for Rendered {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        if self.head.is_empty() {
            return Ok(());
        }
        if crate::render::protobuf() {
            return encode_pairs(encoder, crate::protobuf_wire::read_labels(self.protobuf()));
        }
        use std::fmt::Write as _;
        let mut label = encoder.encode_label();
        // Keys are written as given: the rendered head carries the earlier pairs with their
        // values already escaped, and the encoder escapes the last value itself.
        let mut key = label.encode_label_key()?;
        key.write_str(&self.head)?;
        let mut value = key.encode_label_value()?;
        value.write_str(&self.tail)?;
        value.finish()
    }
}

impl EncodeLabelSet for &Rendered {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        (*self).encode(encoder)
    }
}

/// A rendered label set with more pairs after it (a family's own: kind, device, op).
pub struct WithLabels<'a, const N: usize> {
    base: &'a Rendered,
    extra: [(&'static str, &'a str); N],
}

impl<const N: usize> EncodeLabelSet for WithLabels<'_, N> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        use std::fmt::Write as _;
        if crate::render::protobuf() {
            let base = crate::protobuf_wire::read_labels(self.base.protobuf());
            let extra = self.extra.iter().map(|(k, v)| (*k, *v));
            return encode_pairs(encoder, base.chain(extra));
        }
        let Some(((last_key, last_value), rest)) = self.extra.split_last() else {
            return self.base.encode(encoder);
        };
        let mut label = encoder.encode_label();
        let mut key = label.encode_label_key()?;
        key.write_str(&self.base.full)?;
        for (k, v) in rest {
            key.write_str(k)?;
            key.write_str("=\"")?;
            key.write_str(&escape(v))?;
            key.write_str("\",")?;
        }
        key.write_str(last_key)?;
        let mut value = key.encode_label_value()?;
        value.write_str(last_value)?;
        value.finish()
    }
}

/// A cgroup's labels, rendered both ways, and what identifies it by name.
#[derive(Debug, Clone, Default)]
pub struct SeriesLabels {
    with_path: Rendered,
    /// Without the path: only for kubelet cgroups whose names identify them.
    without_path: Option<Rendered>,
    /// Hash of (namespace, pod, container), to find rows that would collide.
    names: u64,
    /// Which label sets these are: a number no other `SeriesLabels::new` gives (a clone
    /// shares it, with the same text), so that text rendered with them can be told apart
    /// from text rendered with labels that were dropped since (an address could be
    /// reused).
    serial: u64,
}

/// The last `SeriesLabels::serial` given.
static SERIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl SeriesLabels {
    pub fn new(l: &CgroupLabels, policy: PathLabel) -> Self {
        let pairs = |path: bool| -> Vec<(&str, &str)> {
            [
                ("cgroup", if path { l.cgroup.as_str() } else { "" }),
                ("container", l.container.as_str()),
                ("namespace", l.namespace.as_str()),
                ("pod", l.pod.as_str()),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect()
        };
        let mut h = rustc_hash::FxHasher::default();
        (&l.namespace, &l.pod, &l.container).hash(&mut h);
        Self {
            with_path: Rendered::new(&pairs(true)),
            without_path: (policy == PathLabel::Auto && l.identified && !l.cgroup.is_empty())
                .then(|| Rendered::new(&pairs(false))),
            names: h.finish(),
            serial: SERIALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
        }
    }

    /// See the field.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Whether `labels` (one of these, from [`choose`]) is the set with the cgroup path.
    pub fn is_with_path(&self, labels: &Rendered) -> bool {
        std::ptr::eq(labels, &self.with_path)
    }
}

/// Picks each row's label set: without the path where no other cgroup of this scrape has
/// the same names. Rows of one cgroup (a family's rows per disk and op) share its labels,
/// so a pod that reads two disks keeps its short labels on both.
pub fn choose<'a>(rows: impl IntoIterator<Item = &'a SeriesLabels> + Clone) -> Vec<&'a Rendered> {
    // Names -> (the first cgroup's serial, whether another cgroup has them too).
    let rows_hint = rows.clone().into_iter().size_hint().0;
    let mut named: FxHashMap<u64, (u64, bool)> =
        FxHashMap::with_capacity_and_hasher(rows_hint, Default::default());
    for s in rows.clone() {
        if s.without_path.is_some() {
            let seen = named.entry(s.names).or_insert((s.serial, false));
            seen.1 |= seen.0 != s.serial;
        }
    }
    rows.into_iter()
        .map(|s| match &s.without_path {
            Some(short) if named.get(&s.names).is_some_and(|(_, shared)| !shared) => short,
            _ => &s.with_path,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

    use super::*;
    use crate::metrics::family;

    fn container(pod: &str, name: &str, path: &str) -> CgroupLabels {
        CgroupLabels {
            namespace: "team-a".into(),
            pod: pod.into(),
            container: name.into(),
            cgroup: path.into(),
            identified: true,
        }
    }

    /// The text format of one family with these label sets, each with `kind` if given.
    fn render(sets: &[&Rendered], kind: Option<&str>) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry(sets, kind))
            .unwrap();
        text
    }

    /// A registry of one family with these label sets, each with `kind` if given.
    fn registry(sets: &[&Rendered], kind: Option<&str>) -> prometheus_client::registry::Registry {
        #[derive(Debug)]
        struct One(Vec<Rendered>, Option<String>);
        impl prometheus_client::collector::Collector for One {
            fn encode(&self, mut out: DescriptorEncoder) -> std::fmt::Result {
                match self.1.as_deref() {
                    Some(k) => family(
                        &mut out,
                        "x_total",
                        "help",
                        MetricType::Counter,
                        self.0.iter().map(|r| (r.and_all([("kind", k)]), 1.0)),
                    ),
                    None => family(
                        &mut out,
                        "x_total",
                        "help",
                        MetricType::Counter,
                        self.0.iter().map(|r| (r.clone(), 1.0)),
                    ),
                }
            }
        }
        let one = One(
            sets.iter().map(|r| (*r).clone()).collect(),
            kind.map(str::to_owned),
        );
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(one));
        registry
    }

    #[test]
    fn a_protobuf_scrape_gets_each_pair_unescaped() {
        use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily;
        use prost::Message as _;
        let odd = container("we\"b\\x\ny", "app", "kubepods/p/c");
        let rows = [SeriesLabels::new(&odd, PathLabel::Always)];
        for kind in [None, Some("io")] {
            let registry = registry(&choose(rows.iter()), kind);
            let bytes =
                crate::render::render_bytes(&registry, crate::render::Format::Protobuf).unwrap();
            let family = MetricFamily::decode_length_delimited(bytes.as_slice()).unwrap();
            assert_eq!(family.name, "x_total");
            let labels: Vec<(&str, &str)> = family.metric[0]
                .label
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect();
            let mut want = vec![
                ("cgroup", "kubepods/p/c"),
                ("container", "app"),
                ("namespace", "team-a"),
                ("pod", "we\"b\\x\ny"),
            ];
            want.extend(kind.map(|k| ("kind", k)));
            assert_eq!(labels, want);
            assert!(!crate::render::protobuf(), "the flag is put back");
        }
    }

    #[test]
    fn kubelet_names_replace_the_path_unless_asked_to_keep_it() {
        let pod = container("web", "app", "kubepods/burstable/pod1/aaa");
        let system = CgroupLabels {
            cgroup: "system.slice/containerd.service".into(),
            ..Default::default()
        };
        let rows = [
            SeriesLabels::new(&pod, PathLabel::Auto),
            SeriesLabels::new(&system, PathLabel::Auto),
        ];
        let text = render(&choose(rows.iter()), None);
        assert!(
            text.contains("x_total{container=\"app\",namespace=\"team-a\",pod=\"web\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("x_total{cgroup=\"system.slice/containerd.service\"} 1"),
            "{text}"
        );
        let always = [SeriesLabels::new(&pod, PathLabel::Always)];
        let text = render(&choose(always.iter()), Some("voluntary"));
        assert!(
            text.contains(
                "x_total{cgroup=\"kubepods/burstable/pod1/aaa\",container=\"app\",namespace=\"team-a\",pod=\"web\",kind=\"voluntary\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_restarted_containers_two_cgroups_keep_their_paths() {
        let rows = [
            SeriesLabels::new(
                &container("web", "app", "kubepods/pod1/old"),
                PathLabel::Auto,
            ),
            SeriesLabels::new(
                &container("web", "app", "kubepods/pod1/new"),
                PathLabel::Auto,
            ),
            SeriesLabels::new(
                &container("web", "side", "kubepods/pod1/s"),
                PathLabel::Auto,
            ),
        ];
        let text = render(&choose(rows.iter()), None);
        assert!(text.contains("cgroup=\"kubepods/pod1/old\""), "{text}");
        assert!(text.contains("cgroup=\"kubepods/pod1/new\""), "{text}");
        assert!(text.contains("x_total{container=\"side\""), "{text}");
    }

    #[test]
    fn a_cgroups_rows_for_two_disks_keep_its_short_labels() {
        let pod = SeriesLabels::new(&container("web", "app", "kubepods/pod1/c"), PathLabel::Auto);
        // One row per disk and op, each with the cgroup's labels (a clone shares them).
        let same = pod.clone();
        let text = render(&choose([&pod, &same, &pod]), Some("read"));
        assert_eq!(
            text.matches("x_total{container=\"app\"").count(),
            3,
            "{text}"
        );
        assert!(!text.contains("cgroup="), "{text}");
    }

    #[test]
    fn values_are_escaped_once() {
        let odd = CgroupLabels {
            cgroup: "a\"b\\c".into(),
            pod: "p\"q".into(),
            ..Default::default()
        };
        let rows = [SeriesLabels::new(&odd, PathLabel::Auto)];
        let text = render(&choose(rows.iter()), Some("k"));
        assert!(
            text.contains(r#"x_total{cgroup="a\"b\\c",pod="p\"q",kind="k"} 1"#),
            "{text}"
        );
        let text = render(&choose(rows.iter()), None);
        assert!(
            text.contains(r#"x_total{cgroup="a\"b\\c",pod="p\"q"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn several_extra_labels_follow_the_cgroups() {
        #[derive(Debug)]
        struct Disk(Rendered);
        impl prometheus_client::collector::Collector for Disk {
            fn encode(&self, mut out: DescriptorEncoder) -> std::fmt::Result {
                family(
                    &mut out,
                    "d_total",
                    "help",
                    MetricType::Counter,
                    [(self.0.and_all([("device", "vda"), ("op", "read")]), 1.0)],
                )
            }
        }
        let s = SeriesLabels::new(&container("web", "app", "kubepods/x"), PathLabel::Auto);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Disk(choose([&s])[0].clone())));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "d_total{container=\"app\",namespace=\"team-a\",pod=\"web\",device=\"vda\",op=\"read\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_root_cgroup_and_other_render_with_their_path() {
        let rows = [SeriesLabels::new(&CgroupLabels::other(), PathLabel::Auto)];
        let text = render(&choose(rows.iter()), None);
        assert!(text.contains("x_total{cgroup=\"other\"} 1"), "{text}");
    }
}
