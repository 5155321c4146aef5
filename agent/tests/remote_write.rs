//! Push with remote_write, against real receivers on loopback: Prometheus (the Debian
//! package, with its remote-write receiver) and VictoriaMetrics, each also scraping the
//! same agent so that pushed and scraped data can be compared; an outage with a big and
//! a small queue; and receivers that misbehave (400, 500 then 204, no answer, nothing
//! listening), served by a small HTTP server in this file.
mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{Agent, LoopDevice};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::Value as Json;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Prometheus,
    VictoriaMetrics,
}

/// A receiver process with its storage, which survives a restart.
struct Receiver {
    kind: Kind,
    child: Option<Child>,
    addr: String,
    dir: tempfile::TempDir,
    /// An agent address to scrape beside the pushes (job "scraped").
    scrape: Option<String>,
}

impl Receiver {
    fn start(kind: Kind, scrape: Option<&str>) -> Receiver {
        Receiver::start_at(kind, &format!("127.0.0.1:{}", common::free_port()), scrape)
    }

    fn start_at(kind: Kind, addr: &str, scrape: Option<&str>) -> Receiver {
        let mut r = Receiver {
            kind,
            child: None,
            addr: addr.to_owned(),
            dir: tempfile::tempdir().unwrap(),
            scrape: scrape.map(str::to_owned),
        };
        r.run();
        r
    }

    fn run(&mut self) {
        let scrape_configs = match &self.scrape {
            Some(target) => serde_json::json!([{
                "job_name": "scraped",
                "scrape_interval": "1s",
                "static_configs": [{"targets": [target]}],
            }]),
            None => serde_json::json!([]),
        };
        let config = self.dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            serde_json::json!({"global": {"scrape_interval": "1s"}, "scrape_configs": scrape_configs})
                .to_string(),
        )
        .unwrap();
        let child = match self.kind {
            Kind::Prometheus => common::prometheus(
                self.dir.path(),
                &self.addr,
                &["--web.enable-remote-write-receiver"],
            ),
            Kind::VictoriaMetrics => {
                let mut c = Command::new("victoria-metrics");
                c.arg(format!("-httpListenAddr={}", self.addr))
                    .arg(format!(
                        "-storageDataPath={}",
                        self.dir.path().join("data").display()
                    ))
                    // Answer queries up to now, and never from a cache of an older answer.
                    .arg("-search.latencyOffset=0s")
                    .arg("-search.disableCache");
                if self.scrape.is_some() {
                    c.arg(format!("-promscrape.config={}", config.display()));
                }
                c.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("victoria-metrics (cargo xtask setup --test-tools installs it)")
            }
        };
        self.child = Some(child);
        let ready = match self.kind {
            Kind::Prometheus => "/-/ready",
            Kind::VictoriaMetrics => "/health",
        };
        common::wait_for("the receiver to be ready", Duration::from_secs(30), || {
            common::http(&self.addr, "GET", ready, &[]).is_ok_and(|r| r.0 == 200)
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    fn query(&self, promql: &str) -> Vec<Json> {
        let (code, _, body) = common::http(
            &self.addr,
            "GET",
            &format!("/api/v1/query?query={}", common::url_encode(promql)),
            &[],
        )
        .expect("query");
        let v: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
        assert_eq!(code, 200, "{promql}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value of an instant query, if there is one.
    fn value(&self, promql: &str) -> Option<f64> {
        self.query(promql)
            .first()
            .and_then(|r| r["value"][1].as_str()?.parse().ok())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Direct 4 KiB reads of a loop device: disk histograms that then stay frozen.
fn disk_reads(disk: &LoopDevice, count: u32) {
    common::run(
        "dd",
        &[
            &format!("if={}", disk.path().display()),
            "of=/dev/null",
            "bs=4k",
            &format!("count={count}"),
            "iflag=direct",
            "status=none",
        ],
    );
}

/// Pushes to `receiver` (which also scrapes the agent) until the reads are in both, then checks the pushed
/// data: node basics with the external label, run-queue buckets, per-cgroup series, and
/// histogram_quantile over the pushed buckets equal to the same over the scraped ones.
fn pushed_matches_scraped(kind: Kind) {
    let disk = LoopDevice::new(64);
    // The agent pushes to the receiver, which scrapes the agent: the receiver's address
    // first, and until it is up the agent retries.
    let receiver_addr = format!("127.0.0.1:{}", common::free_port());
    let agent = Agent::start(&[
        "--remote-write-url",
        &format!("http://{receiver_addr}/api/v1/write"),
        "--remote-write-interval",
        "1s",
        "--remote-write-external-labels",
        "node=push-test,cluster=lab",
    ]);
    let receiver = Receiver::start_at(kind, &receiver_addr, Some(&agent.addr));
    disk_reads(&disk, 512);
    common::wait_for("pushed node basics", Duration::from_secs(30), || {
        receiver
            .value(
                "node_memory_MemTotal_bytes{node=\"push-test\",cluster=\"lab\",job=\"nodelens\"}",
            )
            .is_some()
    });
    let mem_total = receiver
        .value("node_memory_MemTotal_bytes{job=\"nodelens\"}")
        .unwrap();
    let proc_total = common::read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap()
        * 1024.0;
    assert_eq!(mem_total, proc_total, "MemTotal as /proc/meminfo says");
    let device = &disk.dev;
    let quantile = |job: &str| {
        receiver.value(&format!(
            "histogram_quantile(0.9, sum by (le) (nodelens_disk_io_latency_seconds_bucket{{device=\"{device}\",op=\"read\",job=\"{job}\"}}))"
        ))
    };
    let count = |job: &str| {
        receiver.value(&format!(
            "sum(nodelens_disk_io_latency_seconds_count{{device=\"{device}\",op=\"read\",job=\"{job}\"}})"
        ))
    };
    // The reads are done: once a push and a scrape both carry all of them, the two agree.
    common::wait_for(
        "every read in both the pushed and the scraped series",
        Duration::from_secs(60),
        || {
            count("nodelens").is_some_and(|c| c >= 512.0)
                && count("nodelens") == count("scraped")
                && quantile("nodelens") == quantile("scraped")
        },
    );
    assert!(
        !receiver
            .query("nodelens_runqueue_latency_seconds_bucket{job=\"nodelens\"}")
            .is_empty(),
        "run-queue buckets pushed"
    );
    assert!(
        !receiver
            .query("nodelens_cgroup_cpu_seconds_total{job=\"nodelens\"}")
            .is_empty(),
        "per-cgroup series pushed"
    );
    let (pushed, scraped) = (quantile("nodelens"), quantile("scraped"));
    assert!(pushed.is_some_and(|q| q > 0.0), "{pushed:?}");
    assert_eq!(pushed, scraped, "p90 from pushed and from scraped buckets");
    let m = agent.metrics();
    assert!(m.value("nodelens_remote_write_samples_total{result=\"sent\"}") > 0.0);
    assert_eq!(
        m.value("nodelens_remote_write_samples_total{result=\"dropped\"}"),
        0.0
    );
    assert!(m.value("nodelens_remote_write_last_success_timestamp_seconds") > 0.0);
}

#[test]
fn prometheus_receives_what_a_scrape_would_return() {
    pushed_matches_scraped(Kind::Prometheus);
}

#[test]
fn victoria_metrics_receives_what_a_scrape_would_return() {
    pushed_matches_scraped(Kind::VictoriaMetrics);
}

/// Raw sample timestamps (seconds) of one series over the last `window`.
fn raw_times(receiver: &Receiver, series: &str, window: &str) -> Vec<f64> {
    receiver
        .query(&format!("{series}[{window}]"))
        .first()
        .and_then(|r| r["values"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v[0].as_f64())
        .collect()
}

fn agent_value(agent: &Agent, series: &str) -> f64 {
    agent.metrics().value(series)
}

#[test]
fn an_outage_loses_nothing_while_the_queue_has_room() {
    let mut receiver = Receiver::start(Kind::Prometheus, None);
    let agent = Agent::start(&[
        "--remote-write-url",
        &receiver.url(),
        "--remote-write-interval",
        "1s",
        "--remote-write-timeout",
        "2s",
        "--remote-write-queue-max-samples",
        "1000000",
    ]);
    common::wait_for("first pushes", Duration::from_secs(20), || {
        receiver.value("nodelens_build_info").is_some()
    });
    receiver.stop();
    // An outage of at least 15 rounds, with requests failing and being retried.
    let stopped_at = agent_value(&agent, "nodelens_remote_write_rounds_total");
    common::wait_for(
        "15 rounds queued while the receiver is down",
        Duration::from_secs(60),
        || {
            let m = agent.metrics();
            m.value("nodelens_remote_write_rounds_total") >= stopped_at + 15.0
                && m.value("nodelens_remote_write_queue_samples") > 0.0
                && m.value("nodelens_remote_write_samples_total{result=\"retried\"}") > 0.0
        },
    );
    receiver.run();
    common::wait_for("the queue to drain", Duration::from_secs(60), || {
        agent_value(&agent, "nodelens_remote_write_queue_samples") < 2_000.0
    });
    // Every round up to now reaches the receiver, the last ones a moment later.
    let rounds = agent_value(&agent, "nodelens_remote_write_rounds_total");
    let mut times = Vec::new();
    common::wait_for(
        "every round at the receiver",
        Duration::from_secs(30),
        || {
            times = raw_times(&receiver, "nodelens_build_info", "10m");
            rounds - times.len() as f64 <= 2.0
        },
    );
    let worst = times.windows(2).map(|w| w[1] - w[0]).fold(0.0f64, f64::max);
    // One round per second; a late tick on a loaded machine stretches one gap, but a lost
    // round would leave two seconds or more.
    assert!(
        worst < 2.5,
        "a gap of {worst:.1} s in 1 s pushes across the outage"
    );
    assert_eq!(
        agent_value(
            &agent,
            "nodelens_remote_write_samples_total{result=\"dropped\"}"
        ),
        0.0
    );
}

#[test]
fn with_a_small_queue_the_dropped_count_matches_the_missing_samples() {
    let mut receiver = Receiver::start(Kind::Prometheus, None);
    // Node basics only, so every round has the same series.
    // A long timeout: a request that timed out but was stored would be sent twice.
    let agent = Agent::start(&[
        "--remote-write-url",
        &receiver.url(),
        "--remote-write-interval",
        "1s",
        "--remote-write-timeout",
        "10s",
        "--remote-write-queue-max-samples",
        "2000",
        "--collectors-enabled",
        "cpu,stat,meminfo,loadavg,vmstat,uname",
    ]);
    common::wait_for("first pushes", Duration::from_secs(20), || {
        receiver.value("nodelens_build_info").is_some()
    });
    receiver.stop();
    // Until the 2,000-sample queue has overflowed.
    common::wait_for("the queue to overflow", Duration::from_secs(60), || {
        agent_value(
            &agent,
            "nodelens_remote_write_samples_total{result=\"dropped\"}",
        ) > 0.0
    });
    receiver.run();
    common::wait_for("the queue to drain", Duration::from_secs(60), || {
        agent_value(&agent, "nodelens_remote_write_queue_samples") < 1.0
    });
    // Freeze the agent's counters by stopping it, then wait for its last rounds to land.
    let m = agent.metrics();
    let (code, _) = agent.terminate(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    let sent_so_far = m.value("nodelens_remote_write_samples_total{result=\"sent\"}");
    common::wait_for(
        "the last sent round at the receiver",
        Duration::from_secs(30),
        || {
            let held: usize = receiver
                .query("{job=\"nodelens\"}[10m]")
                .iter()
                .map(|series| series["values"].as_array().map_or(0, Vec::len))
                .sum();
            let per_round = receiver.value("count({job=\"nodelens\"})").unwrap_or(0.0);
            held as f64 >= sent_so_far - per_round
        },
    );
    let rounds = m.value("nodelens_remote_write_rounds_total");
    let sent = m.value("nodelens_remote_write_samples_total{result=\"sent\"}");
    let dropped = m.value("nodelens_remote_write_samples_total{result=\"dropped\"}");
    assert!(dropped > 0.0, "a 2,000-sample queue overflows in 20 s");
    // Every series is in every round: the samples per round, from the receiver.
    let per_round = receiver
        .value("count({job=\"nodelens\"})")
        .expect("series count");
    // The receiver holds every sample that was sent (no silent loss)...
    let held: usize = receiver
        .query("{job=\"nodelens\"}[10m]")
        .iter()
        .map(|series| series["values"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(
        (held as f64 - sent).abs() <= per_round,
        "held {held}, sent {sent} (stale markers aside)"
    );
    // ...and the rounds it lacks account for the dropped count.
    let missing_rounds = rounds - raw_times(&receiver, "nodelens_build_info", "10m").len() as f64;
    let missing = missing_rounds * per_round;
    assert!(
        (missing - dropped).abs() <= 2.0 * per_round,
        "missing {missing_rounds} rounds x {per_round} series = {missing}, dropped {dropped}"
    );
}

/// A scripted receiver: each request gets the next status of `script` (the last repeats);
/// status 0 means never answer. Requests are kept for the test to look at.
struct FakeReceiver {
    addr: String,
    requests: Arc<Seen>,
}

impl FakeReceiver {
    fn start(script: &[u16]) -> FakeReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (script, seen) = (script.to_vec(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (script, seen) = (script.clone(), seen.clone());
                std::thread::spawn(move || serve(stream, &script, &seen));
            }
        });
        FakeReceiver { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// Each request's headers (names lower-cased) and body.
type Seen = Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>;

fn serve(stream: TcpStream, script: &[u16], seen: &Seen) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = {
            let mut s = seen.lock().unwrap();
            s.push((headers, body));
            s.len()
        };
        let status = script[(n - 1).min(script.len() - 1)];
        if status == 0 {
            std::thread::sleep(Duration::from_secs(3600));
            return;
        }
        let message = if status == 400 {
            "out of bounds: sample too old"
        } else {
            ""
        };
        let _ = write!(
            out,
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{message}",
            message.len()
        );
    }
}

#[test]
fn a_400_drops_the_batch_counts_it_and_pushing_goes_on() {
    let fake = FakeReceiver::start(&[400]);
    let agent = Agent::start(&[
        "--remote-write-url",
        &fake.url(),
        "--remote-write-interval",
        "1s",
        "--collectors-enabled",
        "meminfo",
    ]);
    common::wait_for("three requests", Duration::from_secs(20), || {
        fake.count() >= 3
    });
    let m = agent.metrics();
    assert!(m.value("nodelens_remote_write_samples_total{result=\"dropped\"}") > 0.0);
    assert_eq!(
        m.value("nodelens_remote_write_samples_total{result=\"sent\"}"),
        0.0
    );
    assert_eq!(
        m.value("nodelens_remote_write_samples_total{result=\"retried\"}"),
        0.0
    );
    let (_, log) = agent.terminate(Duration::from_secs(5));
    assert!(
        log.contains("400") && log.contains("out of bounds: sample too old"),
        "the log names the status and the receiver's message: {log}"
    );
}

#[test]
fn a_500_is_retried_until_the_data_arrives_in_spec_form() {
    let fake = FakeReceiver::start(&[500, 500, 204]);
    let agent = Agent::start(&[
        "--remote-write-url",
        &fake.url(),
        "--remote-write-interval",
        "1s",
        "--collectors-enabled",
        "meminfo",
    ]);
    common::wait_for("a success after two 500s", Duration::from_secs(20), || {
        agent_value(
            &agent,
            "nodelens_remote_write_samples_total{result=\"sent\"}",
        ) > 0.0
    });
    let m = agent.metrics();
    assert!(m.value("nodelens_remote_write_samples_total{result=\"retried\"}") > 0.0);
    assert_eq!(
        m.value("nodelens_remote_write_samples_total{result=\"dropped\"}"),
        0.0
    );
    let requests = fake.requests.lock().unwrap();
    // The first batch, retried twice: three identical bodies.
    assert_eq!(requests[0].1, requests[2].1, "the same batch was retried");
    let (headers, body) = &requests[2];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("content-encoding"), Some("snappy"));
    assert_eq!(header("content-type"), Some("application/x-protobuf"));
    assert_eq!(header("x-prometheus-remote-write-version"), Some("0.1.0"));
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .expect("snappy block format");
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("node_memory_MemTotal_bytes"),
        "a WriteRequest with our series"
    );
}

#[test]
fn a_receiver_that_never_answers_times_out_without_slowing_scrapes() {
    let fake = FakeReceiver::start(&[0]);
    let agent = Agent::start(&[
        "--remote-write-url",
        &fake.url(),
        "--remote-write-interval",
        "1s",
        "--remote-write-timeout",
        "1s",
    ]);
    common::wait_for("two timed-out attempts", Duration::from_secs(20), || {
        agent_value(
            &agent,
            "nodelens_remote_write_samples_total{result=\"retried\"}",
        ) > 0.0
            && fake.count() >= 2
    });
    for _ in 0..5 {
        let started = Instant::now();
        let _ = agent.scrape();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a scrape took {:?} while push hangs",
            started.elapsed()
        );
    }
    let m = agent.metrics();
    assert!(m.value("nodelens_remote_write_request_duration_seconds_count") >= 1.0);
}

#[test]
fn an_unreachable_receiver_is_retried_and_the_agent_serves() {
    let closed = format!("http://127.0.0.1:{}/api/v1/write", common::free_port());
    let agent = Agent::start(&[
        "--remote-write-url",
        &closed,
        "--remote-write-interval",
        "1s",
    ]);
    common::wait_for("retries", Duration::from_secs(20), || {
        agent_value(
            &agent,
            "nodelens_remote_write_samples_total{result=\"retried\"}",
        ) > 0.0
    });
    assert!(agent.metrics().get("node_boot_time_seconds").is_some());
    let (code, log) = agent.terminate(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(log.contains("Connection refused"), "{log}");
}

#[test]
fn a_bad_remote_write_url_is_a_usage_error() {
    for (url, why) in [
        ("ftp://receiver/api/v1/write", "http or https"),
        ("not a url", "not a URL"),
    ] {
        let out = Command::new(common::BIN)
            .args(["--remote-write-url", url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{url}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("remote_write.url") && stderr.contains(why),
            "{stderr}"
        );
    }
    let out = Command::new(common::BIN)
        .args([
            "--remote-write-url",
            "https://receiver:443/api/v1/write",
            "--remote-write-ca-file",
            "/nonexistent/ca.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("remote_write.ca_file"));
}

#[test]
fn https_and_basic_auth_to_prometheus_by_host_name() {
    // A CA, and a certificate for "localhost" it signed.
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(path("ca.crt"), ca.pem()).unwrap();
    std::fs::write(path("server.crt"), cert.pem()).unwrap();
    std::fs::write(path("server.key"), key.serialize_pem()).unwrap();
    // Prometheus's receiver behind TLS and basic auth (its own web config).
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(
        path("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  nodelens: '{hash}'\n",
            path("server.crt").display(),
            path("server.key").display()
        ),
    )
    .unwrap();
    std::fs::write(path("prometheus.yml"), "global: {}\n").unwrap();
    let port = common::free_port();
    let _prometheus = common::KillOnDrop(common::prometheus(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &[
            &format!("--web.config.file={}", path("web.yml").display()),
            "--web.enable-remote-write-receiver",
        ],
    ));
    common::wait_for("Prometheus listening", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    std::fs::write(path("password"), "s3cret\n").unwrap();
    // By host name: the agent resolves "localhost" itself, under its seccomp filter.
    let agent = Agent::start(&[
        "--remote-write-url",
        &format!("https://localhost:{port}/api/v1/write"),
        "--remote-write-ca-file",
        path("ca.crt").to_str().unwrap(),
        "--remote-write-username",
        "nodelens",
        "--remote-write-password-file",
        path("password").to_str().unwrap(),
        "--remote-write-interval",
        "1s",
    ]);
    common::wait_for("a batch accepted over TLS", Duration::from_secs(30), || {
        agent_value(
            &agent,
            "nodelens_remote_write_samples_total{result=\"sent\"}",
        ) > 0.0
    });
    assert_eq!(
        agent_value(
            &agent,
            "nodelens_remote_write_samples_total{result=\"dropped\"}"
        ),
        0.0
    );
    // The password file is read for every request: a wrong one is refused (401, dropped).
    std::fs::write(path("password"), "wrong\n").unwrap();
    common::wait_for("a refused batch", Duration::from_secs(30), || {
        agent_value(
            &agent,
            "nodelens_remote_write_samples_total{result=\"dropped\"}",
        ) > 0.0
    });
    let (code, log) = agent.terminate(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("401"), "{log}");
}

#[test]
fn a_missing_credential_file_is_a_usage_error() {
    let out = Command::new(common::BIN)
        .args([
            "--remote-write-url",
            "http://127.0.0.1:9/api/v1/write",
            "--remote-write-bearer-token-file",
            "/nonexistent/token",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("remote_write.bearer_token_file"),
        "{stderr}"
    );
}
