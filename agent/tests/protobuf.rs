//! The protobuf exposition (length-delimited `io.prometheus.client.MetricFamily`), served
//! when a scraper prefers it, as Prometheus does with its native histograms on: every family
//! of the text scrape is in it, with the same names, types, labels and values; and Debian's
//! Prometheus 2.42 (`--enable-feature=native-histograms`) asks for it and ingests it.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    time::Duration,
};

use common::{Agent, protobuf_scrape};
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
    LabelPair, MetricFamily, MetricType,
};
use serde_json::json;

/// The families only a protobuf scrape has: per-pod native histograms, which the text
/// formats cannot carry.
const PROTOBUF_ONLY: &[&str] = &[
    "nodelens_cgroup_runqueue_latency_seconds",
    "nodelens_cgroup_disk_io_latency_seconds",
    "nodelens_cgroup_blocked_latency_seconds",
];

/// A bucket bound as both sides write it here.
fn le(bound: f64) -> String {
    if bound == f64::INFINITY {
        "+Inf".to_owned()
    } else {
        format!("{bound:?}")
    }
}

/// `name{labels}` as `common::Metrics` keys a series: labels sorted, values escaped.
fn key(name: &str, labels: &[LabelPair], extra: Option<(&str, String)>) -> String {
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.clone()))
        .chain(extra)
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    if pairs.is_empty() {
        return name.to_owned();
    }
    pairs.sort();
    format!("{name}{{{}}}", pairs.join(","))
}

/// A sample's value, which its family's type says it has.
fn value(family: &MetricFamily, v: Option<f64>) -> f64 {
    v.unwrap_or_else(|| panic!("{}: a sample without its type's value", family.name))
}

/// Every sample of a protobuf scrape, keyed as the text scrape's, and each family's type.
fn samples(families: &[MetricFamily]) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for f in families {
        let kind = MetricType::try_from(f.r#type).expect("a known type");
        types.insert(f.name.clone(), kind.as_str_name().to_lowercase());
        for m in &f.metric {
            let mut put = |name: &str, extra, v: f64| {
                let k = key(name, &m.label, extra);
                assert!(samples.insert(k.clone(), v).is_none(), "{k} twice");
            };
            match kind {
                MetricType::Counter => {
                    put(&f.name, None, value(f, m.counter.as_ref().map(|c| c.value)))
                }
                MetricType::Gauge => {
                    put(&f.name, None, value(f, m.gauge.as_ref().map(|g| g.value)))
                }
                MetricType::Untyped => {
                    put(&f.name, None, value(f, m.untyped.as_ref().map(|u| u.value)))
                }
                MetricType::Histogram => {
                    let h = m.histogram.as_ref().unwrap();
                    for b in &h.bucket {
                        let bucket = format!("{}_bucket", f.name);
                        put(
                            &bucket,
                            Some(("le", le(b.upper_bound))),
                            b.cumulative_count as f64,
                        );
                    }
                    put(&format!("{}_sum", f.name), None, h.sample_sum);
                    put(&format!("{}_count", f.name), None, h.sample_count as f64);
                }
                other => panic!("{}: a {other:?} family", f.name),
            }
        }
    }
    (samples, types)
}

/// A text scrape's samples, bucket bounds written as [`le`] writes them.
fn text_samples(agent: &Agent) -> common::Metrics {
    let mut m = agent.metrics();
    m.samples = std::mem::take(&mut m.samples)
        .into_iter()
        .map(|(k, v)| {
            let Some((head, rest)) = k.split_once("le=\"") else {
                return (k, v);
            };
            let (bound, tail) = rest.split_once('"').expect("a quoted le");
            let bound: f64 = match bound {
                "+Inf" => f64::INFINITY,
                b => b.parse().expect("a numeric le"),
            };
            (format!("{head}le=\"{}\"{tail}", le(bound)), v)
        })
        .collect();
    m
}

#[test]
fn a_protobuf_scrape_has_the_text_scrapes_families_labels_and_values() {
    common::require_root();
    common::mount_tracefs();
    // Every per-pod series (those written directly as text too), with per-pod work.
    let agent = Agent::start(&["--cgroup-series", "all"]);
    let _reclaimed = common::reclaim_in_a_limited_cgroup("protobuf");
    common::direct_reads(64);
    agent.metrics_until(Duration::from_secs(30), "per-cgroup reclaim stalls", |m| {
        m.samples
            .keys()
            .any(|k| k.starts_with("nodelens_cgroup_reclaim_stall_seconds_total{"))
    });
    // Other tests make and remove cgroups meanwhile: a series that ends, or a gauge that
    // moves and comes back, between the three scrapes is no disagreement, so the three are
    // taken again until they agree (each one's error says what did not).
    let mut agreed = None;
    common::poll_until(
        "a protobuf scrape that agrees with the text scrapes around it",
        Duration::from_secs(60),
        || {
            let before = text_samples(&agent);
            let families = protobuf_scrape(&agent);
            let after = text_samples(&agent);
            same_as_text(&before, &families, &after).inspect_err(|e| eprintln!("again: {e}"))?;
            agreed = Some(families);
            Ok(())
        },
    );
    check_native_runqueue_histogram(&agreed.expect("agreed"));
}

/// Whether a protobuf scrape taken between the text scrapes `before` and `after` has their
/// families, labels and values. A counter of all three that is out of order is no churn:
/// it panics at once.
fn same_as_text(
    before: &common::Metrics,
    families: &[MetricFamily],
    after: &common::Metrics,
) -> Result<(), String> {
    let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
    let (mut proto, mut types) = samples(families);
    for name in PROTOBUF_ONLY {
        check(
            types.remove(*name).as_deref() == Some("histogram"),
            format!("{name}: not a histogram family"),
        )?;
        proto.retain(|k, _| !k.starts_with(&format!("{name}_")));
    }

    // Families: the same names and types (the text declares counters with `_total`, as
    // prometheus_client's 0.0.4 encoder does, and the protobuf names them so).
    for (name, kind) in &types {
        check(
            before.types.get(name) == Some(kind),
            format!(
                "{name}: a {kind} in protobuf, {:?} in text",
                before.types.get(name)
            ),
        )?;
    }
    let text_families: BTreeSet<&String> = before.types.keys().collect();
    let proto_families: BTreeSet<&String> = types.keys().collect();
    check(
        text_families == proto_families,
        format!("not the same families: {text_families:?} and {proto_families:?}"),
    )?;

    // Series: those of both text scrapes are in the protobuf one, and it has no other.
    let both: BTreeSet<&String> = before
        .samples
        .keys()
        .filter(|k| after.samples.contains_key(*k))
        .collect();
    check(both.len() > 300, format!("{} series", both.len()))?;
    for k in &both {
        check(
            proto.contains_key(*k),
            format!("{k} is not in the protobuf scrape"),
        )?;
    }
    for k in proto.keys() {
        check(
            before.samples.contains_key(k) || after.samples.contains_key(k),
            format!("{k} is in no text scrape"),
        )?;
    }
    check(
        proto.keys().any(|k| {
            k.contains("kind=\"memcg\"")
                && k.starts_with("nodelens_cgroup_reclaim_stall_seconds_total{")
        }),
        "no per-cgroup reclaim stall (a directly written family with its own label)".into(),
    )?;

    // Values: a counter's lies between the two text scrapes'; a gauge that held still is
    // the same.
    let mut checked = 0;
    for k in both {
        let (b, a, p) = (before.samples[k], after.samples[k], proto[k]);
        let family = k.split('{').next().unwrap_or(k);
        let base = family
            .strip_suffix("_bucket")
            .or_else(|| family.strip_suffix("_sum"))
            .or_else(|| family.strip_suffix("_count"))
            .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            .unwrap_or(family);
        match types[base].as_str() {
            "counter" | "histogram" => {
                assert!(b <= p && p <= a, "{k}: not {b} <= {p} <= {a}");
                checked += 1;
            }
            // The agent's own process figures move while it renders the protobuf scrape.
            _ if a == b && !family.starts_with("process_") => {
                check(p == b, format!("{k}: {p} in protobuf, {b} in both texts"))?;
                checked += 1;
            }
            _ => {}
        }
    }
    check(checked > 300, format!("{checked} values checked"))
}

/// The run-queue histogram carries its native buckets beside the classic ones: schema 3,
/// zero bucket up to 2^-20 s, every event in exactly one bucket, and the two bucketings of
/// the same events (read at once) agree: the events up to a native bound are at most those
/// up to any classic bound above it.
fn check_native_runqueue_histogram(families: &[MetricFamily]) {
    let family = families
        .iter()
        .find(|f| f.name == "nodelens_runqueue_latency_seconds")
        .expect("the run-queue histogram");
    let h = family.metric[0].histogram.as_ref().unwrap();
    assert_eq!(h.schema, 3);
    assert_eq!(h.zero_threshold, 2f64.powi(-20));
    assert!(h.negative_span.is_empty() && h.negative_delta.is_empty());
    // Native buckets by index, as Prometheus reads spans and deltas.
    let native = common::native_buckets(h);
    assert!(native.iter().any(|(_, n)| *n > 0), "no native bucket");
    let total = h.zero_count + native.iter().map(|(_, n)| n).sum::<u64>();
    assert_eq!(total, h.sample_count, "every event in one native bucket");
    assert!(h.sample_count > 100, "{} events", h.sample_count);
    let inf = h.bucket.last().unwrap();
    assert_eq!(inf.upper_bound, f64::INFINITY);
    assert_eq!(inf.cumulative_count, h.sample_count);
    let bound = |index: i32| 2f64.powf(index as f64 / 8.0);
    let native_up_to = |le: f64| {
        h.zero_count
            + native
                .iter()
                .filter(|(i, _)| bound(*i) <= le)
                .map(|(_, n)| n)
                .sum::<u64>()
    };
    for classic in h.bucket.iter().filter(|b| b.upper_bound.is_finite()) {
        assert!(
            native_up_to(classic.upper_bound) <= classic.cumulative_count,
            "le={}: native {} > classic {}",
            classic.upper_bound,
            native_up_to(classic.upper_bound),
            classic.cumulative_count
        );
    }
}

#[test]
fn protobuf_classic_histograms_off_leaves_native_only_where_there_is_one() {
    common::mount_tracefs();
    let agent = Agent::start(&["--protobuf-classic-histograms=false"]);
    let mut families = Vec::new();
    common::wait_for(
        "run-queue waits and disk requests in a protobuf scrape",
        Duration::from_secs(10),
        || {
            // A read of our own executable past the page cache: a disk request.
            let _ = std::process::Command::new("dd")
                .args([
                    "of=/dev/null",
                    "bs=4k",
                    "count=1",
                    "iflag=direct",
                    "status=none",
                ])
                .arg(format!("if={}", std::env::current_exe().unwrap().display()))
                .status();
            families = protobuf_scrape(&agent);
            let count = |name: &str| {
                families
                    .iter()
                    .filter(|f| f.name == name)
                    .flat_map(|f| &f.metric)
                    .filter_map(|m| m.histogram.as_ref())
                    .map(|h| h.sample_count)
                    .sum::<u64>()
            };
            count("nodelens_runqueue_latency_seconds") > 100
                && count("nodelens_disk_io_latency_seconds") > 0
        },
    );
    let histograms = |name: &str| {
        let family = families.iter().find(|f| f.name == name).expect(name);
        assert!(!family.metric.is_empty(), "{name}: no sample");
        family
            .metric
            .iter()
            .map(|m| m.histogram.clone().expect("a histogram"))
            .collect::<Vec<_>>()
    };
    for h in histograms("nodelens_runqueue_latency_seconds") {
        assert!(h.bucket.is_empty(), "classic buckets: {:?}", h.bucket);
        assert_eq!(h.schema, 3);
        let native: i64 = h.positive_span.iter().map(|s| i64::from(s.length)).sum();
        assert!(native > 0, "no native bucket");
    }
    for h in histograms("nodelens_disk_io_latency_seconds") {
        assert!(h.bucket.is_empty(), "classic buckets: {:?}", h.bucket);
    }
    // A histogram without a native version keeps its classic buckets.
    for h in histograms("nodelens_disk_io_size_bytes") {
        assert!(
            !h.bucket.is_empty(),
            "the disk size histogram lost its buckets"
        );
        assert!(h.positive_span.is_empty());
    }
    // Text scrapes are not affected.
    let text = agent.scrape();
    assert!(
        text.contains("nodelens_runqueue_latency_seconds_bucket{le=\"+Inf\"}"),
        "the text scrape lost the classic buckets"
    );
}

/// A per-pod native histogram as a scrape had it.
struct PodHistogram {
    count: u64,
    sum: f64,
    /// (schema-0 index, count) of the buckets its spans name (empty ones among them).
    buckets: Vec<(i32, u64)>,
}

/// The cgroup's per-pod run-queue histogram in a protobuf scrape.
fn pod_runqueue_histogram(agent: &Agent, cgroup: &str) -> Option<PodHistogram> {
    let families = protobuf_scrape(agent);
    let family = families
        .iter()
        .find(|f| f.name == "nodelens_cgroup_runqueue_latency_seconds")?;
    let m = family.metric.iter().find(|m| {
        m.label
            .iter()
            .any(|l| l.name == "cgroup" && l.value == cgroup)
    })?;
    let h = m.histogram.as_ref()?;
    assert_eq!(h.schema, 0, "per-pod histograms have schema 0");
    assert!(h.bucket.is_empty(), "native only");
    let buckets = common::native_buckets(h);
    let total = h.zero_count + buckets.iter().map(|(_, n)| n).sum::<u64>();
    assert_eq!(total, h.sample_count, "every wait in one bucket");
    Some(PodHistogram {
        count: h.sample_count,
        sum: h.sample_sum,
        buckets,
    })
}

/// How many times the cgroup's threads got a CPU (`/proc/<tid>/schedstat`, third field),
/// and how many threads it has.
fn arrivals(dir: &std::path::Path) -> (u64, u64) {
    let threads = common::read(dir.join("cgroup.threads"));
    let tids: Vec<&str> = threads.split_whitespace().collect();
    assert!(!tids.is_empty(), "threads in {}", dir.display());
    let sum = tids
        .iter()
        .map(|tid| {
            std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(2)?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    (sum, tids.len() as u64)
}

/// Two hogs sharing CPU 0 for `seconds` in a cgroup of their own, each waiting for the
/// other's slices: (the cgroup's label, its directory, the hogs, the directory's guard).
fn hogs_waiting_in_a_cgroup(
    tag: &str,
    seconds: u32,
) -> (
    String,
    std::path::PathBuf,
    Vec<common::Workload>,
    common::Cgroups,
) {
    let name = format!("nodelens-{tag}-{}", std::process::id());
    let dir = common::cgroup2_root().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let guard = common::Cgroups(vec![dir.clone()]);
    let hog = format!("taskset -c 0 timeout {seconds} sh -c 'while :; do :; done'; exit 0");
    let hogs = (0..2)
        .map(|_| common::Workload::spawn_into(&dir, &["/bin/sh", "-c", &hog]))
        .collect();
    // Labelled by its path below the cgroup2 root.
    (name, dir, hogs, guard)
}

#[test]
fn a_pods_run_queue_waits_are_a_native_histogram_with_a_p99() {
    common::require_root();
    common::mount_tracefs();
    let agent = Agent::start(&[]);
    let prometheus = common::ScrapingPrometheus::start_with(
        json!([{"job_name": "nodelens", "static_configs": [{"targets": [agent.addr]}]}]),
        &["--enable-feature=native-histograms"],
    );
    // Long enough to outlast the checks on a loaded machine; reaped at the end.
    let (cgroup, dir, mut hogs, _dirs) = hogs_waiting_in_a_cgroup("podhist", 8);
    agent.metrics_until(Duration::from_secs(10), "the hogs waited", |m| {
        m.get(&format!(
            "nodelens_cgroup_runqueue_wait_seconds_total{{cgroup=\"{cgroup}\"}}"
        ))
        .is_some_and(|v| v > 0.2)
    });
    // The kernel's count of arrivals before and after a scrape: every wait the histogram
    // has was an arrival, and every arrival but each thread's current one was charged
    // when its thread left the CPU.
    let (before, threads) = arrivals(&dir);
    let PodHistogram {
        count,
        sum,
        buckets,
    } = pod_runqueue_histogram(&agent, &cgroup).expect("the histogram");
    let (after, _) = arrivals(&dir);
    eprintln!("{count} waits in the histogram, {before}..{after} arrivals, {threads} threads");
    assert!(count <= after, "{count} waits, {after} arrivals");
    assert!(
        count as f64 >= (before - threads) as f64 * 0.95,
        "{count} waits, {before} arrivals of {threads} threads"
    );
    assert!(sum > 0.2 && buckets.len() > 1, "{sum} s in {buckets:?}");
    // Prometheus takes its p99.
    let p99 = format!(
        "histogram_quantile(0.99, nodelens_cgroup_runqueue_latency_seconds{{cgroup=\"{cgroup}\"}})"
    );
    common::wait_for(
        "Prometheus has the cgroup's per-pod histogram",
        Duration::from_secs(30),
        || !prometheus.query(&format!("{p99} > 0")).is_empty(),
    );
    let p99: f64 = prometheus.query(&p99)[0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // A slice of the other hog, at most: well under the seconds they ran.
    assert!(p99 > 0.0 && p99 < 1.0, "p99 {p99} s");
    eprintln!("p99 run-queue wait of the two hogs: {p99} s");
    for hog in &mut hogs {
        hog.reap_success();
    }
}

#[test]
fn remote_write_sends_the_native_histograms_a_scrape_has() {
    common::require_root();
    common::mount_tracefs();
    let prometheus = common::ScrapingPrometheus::start_with(
        json!([]),
        &[
            "--enable-feature=native-histograms",
            "--web.enable-remote-write-receiver",
        ],
    );
    let url = format!("http://{}/api/v1/write", prometheus.addr);
    let agent = Agent::start(&[
        "--remote-write-url",
        &url,
        "--remote-write-interval",
        "1s",
        "--remote-write-native-histograms",
    ]);
    let (cgroup, _dir, mut hogs, _dirs) = hogs_waiting_in_a_cgroup("pushhist", 8);
    common::wait_for(
        "the node's and a pod's native histograms pushed",
        Duration::from_secs(30),
        || {
            let has = |q: &str| !prometheus.query(q).is_empty();
            has("histogram_count(nodelens_runqueue_latency_seconds{job=\"nodelens\"}) > 0")
                && has(&format!(
                    "histogram_count(nodelens_cgroup_runqueue_latency_seconds{{cgroup=\"{cgroup}\"}}) > 0"
                ))
                // The classic series still come, from the text.
                && has("nodelens_runqueue_latency_seconds_count{job=\"nodelens\"} > 0")
        },
    );
    // The pushed count of a round stamped after a text scrape lies between that scrape's
    // and one taken after the round arrived: every sample of a round has its timestamp.
    let count = |m: &common::Metrics| m.value("nodelens_runqueue_latency_seconds_count");
    let before = count(&agent.metrics());
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut at = 0.0;
    common::wait_for(
        "a round after the text scrape",
        Duration::from_secs(10),
        || {
            let t = prometheus.query("timestamp(node_memory_MemTotal_bytes{job=\"nodelens\"})");
            at = t
                .first()
                .and_then(|r| r["value"][1].as_str()?.parse().ok())
                .unwrap_or(0.0);
            at > asked
        },
    );
    let after = count(&agent.metrics());
    let pushed = prometheus.query_at(
        "histogram_count(nodelens_runqueue_latency_seconds{job=\"nodelens\"})",
        at,
    );
    let pushed: f64 = pushed[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(
        before <= pushed && pushed <= after,
        "{before} <= {pushed} <= {after}"
    );
    let dropped = agent
        .metrics()
        .get("nodelens_remote_write_samples_total{result=\"dropped\"}")
        .unwrap_or(0.0);
    assert_eq!(dropped, 0.0, "the receiver refused nothing");
    for hog in &mut hogs {
        hog.reap_success();
    }
}

/// Records the `Accept` header of the first request it gets, and answers 404.
fn accept_header_of_one_request() -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut accept = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("accept")
            {
                accept = value.trim().to_owned();
            }
            line.clear();
        }
        let _ = (&stream).write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        accept
    });
    (addr, handle)
}

#[test]
fn prometheus_with_native_histograms_on_asks_for_protobuf_and_ingests_it() {
    common::require_root();
    common::mount_tracefs();
    let agent = Agent::start(&[]);
    let (recorder, accept) = accept_header_of_one_request();
    let prometheus = common::ScrapingPrometheus::start_with(
        json!([
            {"job_name": "nodelens", "static_configs": [{"targets": [agent.addr]}]},
            {"job_name": "recorder", "static_configs": [{"targets": [recorder]}]},
        ]),
        &["--enable-feature=native-histograms"],
    );
    let accept = accept.join().unwrap();
    assert_eq!(
        nodelens::server::negotiate(Some(&accept)),
        nodelens::server::Format::Protobuf,
        "Prometheus asked with {accept:?}"
    );
    common::wait_for(
        "Prometheus ingests the node's and the pods' series through protobuf",
        Duration::from_secs(60),
        || {
            let has = |q: &str| !prometheus.query(q).is_empty();
            has("up{job=\"nodelens\"} == 1")
                && has("histogram_count(nodelens_runqueue_latency_seconds{job=\"nodelens\"}) > 0")
                && has("histogram_count(nodelens_disk_io_latency_seconds{job=\"nodelens\"}) > 0")
                && has("histogram_count(nodelens_cgroup_disk_io_latency_seconds{job=\"nodelens\"}) > 0")
                // Classic only: the disk request sizes have no native buckets.
                && has("nodelens_disk_io_size_bytes_bucket{job=\"nodelens\",le=\"+Inf\"} > 0")
                && has("nodelens_cgroup_cpu_seconds_total{job=\"nodelens\"} > 0")
                && has("node_memory_MemTotal_bytes{job=\"nodelens\"} > 0")
                // Untyped, as node_exporter has it (a value Prometheus reads elsewhere).
                && has("node_vmstat_pgpgin{job=\"nodelens\"} > 0")
        },
    );
    // The native run-queue histogram: its count at a scrape between two text scrapes lies
    // between their classic counts (Prometheus 2.42 keeps only the native one when a
    // histogram has both, so the two cannot be compared at one timestamp there).
    let count = |m: &common::Metrics| m.value("nodelens_runqueue_latency_seconds_count");
    let before = count(&agent.metrics());
    // A scrape stamped later than this started after the text scrape, though Prometheus may
    // stamp a scrape up to 2 ms off to keep its timestamps regular.
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 0.005;
    let mut at = 0.0;
    common::wait_for(
        "a scrape after the first text scrape",
        Duration::from_secs(10),
        || {
            let t = prometheus.query("timestamp(up{job=\"nodelens\"})");
            at = t
                .first()
                .and_then(|r| r["value"][1].as_str()?.parse().ok())
                .unwrap_or(0.0);
            at > asked
        },
    );
    let after = count(&agent.metrics());
    let native = prometheus.query_at(
        "histogram_count(nodelens_runqueue_latency_seconds{job=\"nodelens\"})",
        at,
    );
    let native: f64 = native[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(
        before <= native && native <= after,
        "{before} <= {native} <= {after}"
    );
    let p99 = prometheus.query(
        "histogram_quantile(0.99, rate(nodelens_runqueue_latency_seconds{job=\"nodelens\"}[1m]))",
    );
    assert!(!p99.is_empty(), "a p99 of the native histogram");
    // As many series as a text scrape has samples (a few come and go between scrapes).
    let text = agent.metrics().samples.len() as f64;
    let stored = prometheus.query("scrape_samples_scraped{job=\"nodelens\"}");
    let stored: f64 = stored[0]["value"][1].as_str().unwrap().parse().unwrap();
    // Less the run-queue, disk latency and reclaim stall histograms' classic series, each
    // histogram one native series; plus the per-pod native histograms, one per cgroup that waited and
    // per cgroup, disk and op that did I/O.
    let m = agent.metrics();
    let count = |prefix: &str| m.samples.keys().filter(|k| k.starts_with(prefix)).count() as f64;
    let classic = count("nodelens_runqueue_latency_seconds_")
        + count("nodelens_disk_io_latency_seconds_")
        + count("nodelens_memory_reclaim_stall_seconds_");
    let native = 1.0
        + count("nodelens_disk_io_latency_seconds_count")
        + count("nodelens_memory_reclaim_stall_seconds_count");
    let per_pod = count("nodelens_cgroup_runqueue_wait_seconds_total")
        + count("nodelens_cgroup_disk_ios_total");
    let text = text - classic + native + per_pod;
    assert!(
        (stored - text).abs() <= text * 0.05,
        "Prometheus scraped {stored} samples, a text scrape has {text}"
    );
}

/// The waiter's side of [`waits_of_a_known_length_land_in_the_bucket_the_spec_says`]: on
/// one CPU, a SCHED_FIFO parent wakes its child through a pipe and then spins for 1.96 ms
/// before it blocks, so each of the child's waits for the CPU lasts 1.96 ms and a little,
/// just above the schema-0 edge of 2^-9 s (1.953 ms). Run once it reads a line on stdin,
/// so that the waits of starting up are before the test's first scrape.
const KNOWN_WAITS: &str = r#"
import os, sys, time
N, D = int(sys.argv[1]), int(sys.argv[2])
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
r1, w1 = os.pipe(); r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    for _ in range(N):
        os.read(r1, 1); os.write(w2, b"x")
    os._exit(0)
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
print("ready", flush=True)
sys.stdin.readline()
for _ in range(N):
    os.write(w1, b"x")
    end = time.perf_counter_ns() + D
    while time.perf_counter_ns() < end:
        pass
    os.read(r2, 1)
os.waitpid(pid, 0)
print("done", flush=True)
sys.stdin.readline()
"#;

/// Exact boundaries, end to end: waits of a known length (1.96 ms and a few µs) land in
/// the schema-0 bucket (2^-9, 2^-8] s the spec says, not in the one below. Buckets in
/// powers of two of nanoseconds relabelled as seconds would put the edge at 2^21 ns
/// (2.097 ms), and every one of these waits below it.
#[test]
fn waits_of_a_known_length_land_in_the_bucket_the_spec_says() {
    use std::io::{BufRead as _, Write as _};
    common::require_root();
    common::mount_tracefs();
    const WAITS: u64 = 200;
    const SPIN_NS: u64 = 1_960_000;
    let agent = Agent::start(&[]);
    let name = format!("nodelens-known-{}", std::process::id());
    let dir = common::cgroup2_root().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let _guard = common::Cgroups(vec![dir.clone()]);
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let child = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs && exec python3 -c \"$0\" {WAITS} {SPIN_NS}",
                dir.display()
            ),
            KNOWN_WAITS,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .expect("python3");
    // Killed before its cgroup is removed, also when an assertion fails.
    let mut child = common::KillOnDrop(child);
    let mut stdin = child.0.stdin.take().unwrap();
    let lines = {
        let stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        lines
    };
    let expect = |what: &str, limit: Duration| match lines.recv_timeout(limit) {
        Ok(line) if line == what => {}
        got => panic!(
            "the waiter did not say {what:?} within {limit:?} ({got:?}); its stderr: {}",
            std::fs::read_to_string(stderr.path()).unwrap_or_default()
        ),
    };
    expect("ready", Duration::from_secs(30));
    // The cgroup's histogram before: its start-up waits, once the agent has seen them.
    let mut before = None;
    common::wait_for(
        "the waiter's cgroup in a protobuf scrape",
        Duration::from_secs(10),
        || {
            before = pod_runqueue_histogram(&agent, &name);
            before.is_some()
        },
    );
    let before = before.unwrap();
    writeln!(stdin, "go").unwrap();
    // 200 spins of 1.96 ms: 0.4 s, far longer on a loaded machine.
    expect("done", Duration::from_secs(60));
    // The waits are charged as the waiter leaves the CPU: its last one by now, as it
    // blocks on stdin.
    let mut after = None;
    common::wait_for("every known wait counted", Duration::from_secs(10), || {
        after = pod_runqueue_histogram(&agent, &name);
        after
            .as_ref()
            .is_some_and(|a| a.count >= before.count + WAITS)
    });
    let after = after.unwrap();
    writeln!(stdin).unwrap();
    let _ = child.0.wait();
    let in_bucket = |h: &PodHistogram, index: i32| {
        h.buckets
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let added = |index: i32| in_bucket(&after, index) - in_bucket(&before, index);
    let from = |lowest: i32| (lowest..=12).map(added).sum::<u64>();
    eprintln!(
        "known waits: {} more waits; by bucket -11..=-7: {:?}",
        after.count - before.count,
        (-11..=-7).map(added).collect::<Vec<_>>()
    );
    // The child's waits: each at least the parent's spin, so in (2^-9, 2^-8] s or above
    // (longer when something else took CPU 0 first). The parent's: a few µs each (it is
    // SCHED_FIFO, and runs as soon as it is woken).
    assert!(
        from(-8) >= WAITS - 1,
        "{} of {WAITS} waits above 2^-9 s",
        from(-8)
    );
    assert!(
        added(-8) >= WAITS * 9 / 10 || from(-7) > WAITS / 10,
        "most known waits in (2^-9, 2^-8] s: {}",
        added(-8)
    );
    let just_below: u64 = (-11..=-9).map(added).sum();
    assert!(
        just_below <= WAITS / 10,
        "{just_below} waits in (2^-12, 2^-9] s: the bucket edge is off"
    );
    assert!(
        after.sum - before.sum >= (WAITS - 1) as f64 * SPIN_NS as f64 / 1e9,
        "the sum of the waits is at least the spins"
    );
}
