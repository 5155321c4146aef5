//! The endpoint behind `--web-config-file` (exporter-toolkit's format): TLS with basic
//! auth, and mutual TLS with `client_allowed_sans`, scraped by a real Prometheus and probed
//! by a rustls client that checks what the agent refuses. Certificates come from rcgen.
mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use common::Agent;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

/// A CA, a server certificate for localhost and 127.0.0.1, and client certificates, as PEM
/// files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "nodelens test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
        };
        std::fs::write(pki.path("ca.crt"), pki.ca.pem()).unwrap();
        pki.server("server", "nodelens");
        pki.client("prometheus");
        pki.client("intruder");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `<name>.crt` and `<name>.key`; returns the certificate's DER.
    fn issue(&self, name: &str, sans: &[&str], cn: &str, eku: ExtendedKeyUsagePurpose) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![eku];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    fn server(&self, name: &str, cn: &str) -> Vec<u8> {
        self.issue(
            name,
            &["localhost", "127.0.0.1"],
            cn,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, name: &str) {
        self.issue(name, &[name], name, ExtendedKeyUsagePurpose::ClientAuth);
    }

    fn web_config(&self, text: &str) -> PathBuf {
        let path = self.path("web.yml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// What a rustls client got: the HTTP status (0 if the connection ended before one) and
/// body, and the server's certificate.
struct Reply {
    status: u16,
    body: String,
    server_cert: Vec<u8>,
}

fn tls_get(
    addr: &str,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    path: &str,
    auth: Option<(&str, &str)>,
) -> Result<Reply, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let authorization = auth
        .map(|(u, p)| {
            use base64::Engine as _;
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
        .unwrap_or_default();
    tls.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let read = tls.read_to_end(&mut raw);
    let server_cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    if raw.is_empty() {
        return Err(format!("no response: {read:?}"));
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok(Reply {
        status,
        body,
        server_cert,
    })
}

/// The agent with a web config, once /readyz answers over TLS.
fn start(config: &Path, ca: &Path, client: Option<(&Path, &Path)>) -> Agent {
    let agent = Agent::spawn(&["--web-config-file", config.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tls_get(&agent.addr, ca, client, "/readyz", None).is_ok_and(|r| r.status == 200) {
            return agent;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "nodelens with {} not ready over TLS within 20 s",
        config.display()
    );
}

/// Prometheus scraping one target with the given scrape options (`scheme`, `tls_config`,
/// `basic_auth`).
fn prometheus_scraping(target: &str, mut job: serde_json::Value) -> common::ScrapingPrometheus {
    job["job_name"] = "nodelens".into();
    job["static_configs"] = serde_json::json!([{"targets": [target]}]);
    common::ScrapingPrometheus::start(serde_json::json!([job]))
}

/// `up` of the target and the number of series of `metric` it scraped, once the target
/// was scraped at least once (or after 20 s).
fn scraped(prometheus: &common::ScrapingPrometheus, metric: &str) -> (f64, usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = prometheus
            .query("up")
            .first()
            .and_then(|r| r["value"][1].as_str()?.parse().ok())
            .unwrap_or(-1.0);
        let series = prometheus.query(metric).len();
        if up == 1.0 && series > 0 || Instant::now() > deadline {
            return (up, series);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn tls_with_basic_auth_is_scraped_and_wrong_credentials_are_refused() {
    let pki = Pki::new();
    let hash = bcrypt::hash("s3cret", 4)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    let config = pki.web_config(&format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\nbasic_auth_users:\n  prometheus: '{hash}'\n"
    ));
    let ca = pki.path("ca.crt");
    let agent = start(&config, &ca, None);
    let ok = tls_get(
        &agent.addr,
        &ca,
        None,
        "/metrics",
        Some(("prometheus", "s3cret")),
    )
    .unwrap();
    assert_eq!(ok.status, 200);
    assert!(
        ok.body.contains("nodelens_security_info{basic_auth=\"on\""),
        "{}",
        ok.body.len()
    );
    assert!(ok.body.contains("tls=\"on\""));
    let wrong = tls_get(
        &agent.addr,
        &ca,
        None,
        "/metrics",
        Some(("prometheus", "nope")),
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    let nobody = tls_get(&agent.addr, &ca, None, "/metrics", Some(("root", "s3cret"))).unwrap();
    assert_eq!(nobody.status, 401);
    assert_eq!(
        tls_get(&agent.addr, &ca, None, "/", None).unwrap().status,
        401
    );
    // Kubelet probes need no credentials.
    assert_eq!(
        tls_get(&agent.addr, &ca, None, "/healthz", None)
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        tls_get(&agent.addr, &ca, None, "/readyz", None)
            .unwrap()
            .status,
        200
    );
    // Plain HTTP on the TLS port gets Go's answer, not a hang.
    let (status, _, body) = common::http(&agent.addr, "GET", "/metrics", &[]).unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("HTTPS server"));

    // A real Prometheus scrapes it over TLS with basic auth.
    let prometheus = prometheus_scraping(
        &agent.addr,
        serde_json::json!({
            "scheme": "https",
            "tls_config": {"ca_file": ca, "server_name": "localhost"},
            "basic_auth": {"username": "prometheus", "password": "s3cret"},
        }),
    );
    let (up, series) = scraped(&prometheus, "nodelens_runqueue_latency_seconds_bucket");
    assert_eq!(up, 1.0, "Prometheus scraped over TLS with basic auth");
    assert!(series > 10, "{series} bucket series");
    drop(prometheus);

    // cert-manager replaces the files: the next connection presents the new certificate.
    let before = tls_get(&agent.addr, &ca, None, "/healthz", None)
        .unwrap()
        .server_cert;
    let rotated = pki.server("server", "nodelens rotated");
    assert_ne!(before, rotated);
    let after = tls_get(&agent.addr, &ca, None, "/healthz", None)
        .unwrap()
        .server_cert;
    assert_eq!(
        after, rotated,
        "the rotated certificate is served without a restart"
    );

    // A broken file at run time keeps the last good configuration.
    std::fs::write(&config, "tls_server_config: [").unwrap();
    let still = tls_get(
        &agent.addr,
        &ca,
        None,
        "/metrics",
        Some(("prometheus", "s3cret")),
    )
    .unwrap();
    assert_eq!(still.status, 200);
    std::fs::remove_file(&config).unwrap();
    let gone = tls_get(
        &agent.addr,
        &ca,
        None,
        "/metrics",
        Some(("prometheus", "s3cret")),
    )
    .unwrap();
    assert_eq!(
        gone.status, 200,
        "a deleted web config keeps the last good one"
    );
    let (code, stderr) = agent.terminate(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("keeping the last good configuration"),
        "{stderr}"
    );
}

#[test]
fn mutual_tls_requires_a_verified_certificate_with_an_allowed_name() {
    let pki = Pki::new();
    let config = pki.web_config(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  client_allowed_sans: [prometheus]\n  min_version: TLS12\n",
    );
    let ca = pki.path("ca.crt");
    let (crt, key) = (pki.path("prometheus.crt"), pki.path("prometheus.key"));
    let agent = start(&config, &ca, Some((&crt, &key)));
    let ok = tls_get(&agent.addr, &ca, Some((&crt, &key)), "/metrics", None).unwrap();
    assert_eq!(ok.status, 200);
    assert!(
        tls_get(&agent.addr, &ca, None, "/metrics", None).is_err(),
        "no client certificate: refused"
    );
    let (bad_crt, bad_key) = (pki.path("intruder.crt"), pki.path("intruder.key"));
    assert!(
        tls_get(
            &agent.addr,
            &ca,
            Some((&bad_crt, &bad_key)),
            "/metrics",
            None
        )
        .is_err(),
        "a certificate of the right CA with a name not in client_allowed_sans: refused"
    );
    let prometheus = prometheus_scraping(
        &agent.addr,
        serde_json::json!({
            "scheme": "https",
            "tls_config": {"ca_file": ca, "cert_file": crt, "key_file": key, "server_name": "localhost"},
        }),
    );
    let (up, series) = scraped(&prometheus, "nodelens_build_info");
    assert_eq!(up, 1.0, "Prometheus scraped over mutual TLS");
    assert_eq!(series, 1);
}

#[test]
fn web_config_errors_name_the_key_and_exit_2() {
    let pki = Pki::new();
    for (text, key) in [
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS11\n",
            "tls_server_config.min_version",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: missing.key\n",
            "tls_server_config.key_file",
        ),
        (
            "basic_auth_users:\n  prometheus: hunter2\n",
            "basic_auth_users.prometheus",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [TLS_RSA_WITH_3DES_EDE_CBC_SHA]\n",
            "tls_server_config.cipher_suites",
        ),
    ] {
        let path = pki.web_config(text);
        let out = Command::new(common::BIN)
            .args(["--web-config-file", path.to_str().unwrap()])
            .args([
                "--listen-address",
                &format!("127.0.0.1:{}", common::free_port()),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("nodelens: web_config_file: ") && stderr.contains(key),
            "{key}: {stderr}"
        );
    }
}
