//! HTTP: `/metrics`, `/healthz`, `/readyz` and `/`, on hyper 1 with graceful shutdown; TLS
//! and basic auth when `--web-config-file` asks (`crate::web`). `/healthz` and `/readyz`
//! never ask for credentials, so kubelet probes work.
use std::{convert::Infallible, io::Write as _, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use prometheus_client::registry::Registry;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{
    agent::{AgentState, REVISION, VERSION},
    web::{Web, tls::subject_alt_names},
};

pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Time given to requests in flight after a shutdown signal; the whole exit stays under 5 s.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Time a client gets to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    pub registry: Arc<Registry>,
    pub agent: Arc<AgentState>,
    pub web: Arc<Web>,
}

pub use crate::render::Format;

/// Picks the exposition format from `Accept`, honouring q-values: OpenMetrics or protobuf
/// only when the client prefers it (as Prometheus does when it scrapes; protobuf when its
/// native histograms are on), the 0.0.4 text format otherwise. Protobuf is the delimited
/// `io.prometheus.client.MetricFamily` encoding, the only one served.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Prometheus;
    };
    let mut best = (Format::Prometheus, 0.0f32, false);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<(String, &str)> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"')))
            .collect();
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let q = param("q")
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let format = match media.as_str() {
            "application/openmetrics-text" => Format::OpenMetrics,
            "text/plain" | "text/*" | "*/*" => Format::Prometheus,
            "application/vnd.google.protobuf"
                if param("proto") == Some("io.prometheus.client.MetricFamily")
                    && param("encoding") == Some("delimited") =>
            {
                Format::Protobuf
            }
            _ => continue,
        };
        if q > 0.0 && (q > best.1 || !best.2) {
            best = (format, q, true);
        }
    }
    best.0
}

/// Whether `Accept-Encoding` allows gzip (with a non-zero q).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|v| {
        v.split(',').any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let q = parts
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (name.eq_ignore_ascii_case("gzip") || name == "*") && q > 0.0
        })
    })
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Server {
    /// Encodes the registry. Runs the collectors, so it reads /proc and the BPF maps.
    pub fn render(&self, format: Format) -> Result<Vec<u8>, std::fmt::Error> {
        crate::render::render_bytes(&self.registry, format)
    }

    fn index_page(&self) -> String {
        let mut rows = String::new();
        for p in self.agent.statuses() {
            let state = if p.is_up() { "up" } else { "down" };
            let how = p.attach.as_str();
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{state}</td><td>{how}</td><td>{}</td></tr>\n",
                html_escape(p.name),
                html_escape(p.note.as_deref().unwrap_or(""))
            ));
        }
        if rows.is_empty() {
            let why = if self.agent.is_ready() {
                "no eBPF collector is enabled"
            } else {
                "probes are still loading"
            };
            rows.push_str(&format!("<tr><td colspan=4>{why}</td></tr>\n"));
        }
        let modes: String = self
            .agent
            .modes()
            .iter()
            .map(|m| format!("<li>{}</li>", html_escape(m)))
            .collect();
        let posture = self.agent.posture();
        let security = format!(
            "Privileges after attaching: capabilities {}, no_new_privs {}, seccomp {}. {}",
            posture.capabilities,
            u8::from(posture.no_new_privs),
            posture.seccomp,
            posture.notes.join("; ")
        );
        let stats = match self.agent.kernel_stats() {
            Some(Ok(())) => "Probe cost: measured by the probes themselves (1 run in 64 timed), and the kernel's BPF statistics are on (--kernel-bpf-stats)".to_owned(),
            Some(Err(why)) => format!(
                "Probe cost: measured by the probes themselves (1 run in 64 timed). {}",
                html_escape(&why)
            ),
            None => "Probe cost: measured by the probes themselves (1 run in 64 timed); the kernel's global BPF statistics stay off".to_owned(),
        };
        format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>nodelens</title></head><body>\n\
             <h1>nodelens {VERSION}</h1>\n<p>revision {REVISION}</p>\n\
             <ul><li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>\
             <li><a href=\"/healthz\">/healthz</a>: liveness</li>\
             <li><a href=\"/readyz\">/readyz</a>: readiness (every probe attempted)</li></ul>\n\
             <p>node {node}, machine-id {machine_id}, kernel {kernel}</p>\n<p>{security}</p>\n<h2>Probes</h2>\n<p>{stats}</p>\n<ul>{modes}</ul>\n<table border=1><tr><th>probe</th><th>status</th><th>attach</th><th>note</th></tr>\n{rows}</table>\n{preflight}</body></html>\n",
            security = html_escape(&security),
            node = html_escape(&self.agent.node.node),
            machine_id = html_escape(&self.agent.node.machine_id),
            kernel = html_escape(&self.agent.node.kernel),
            preflight = self
                .agent
                .preflight
                .as_deref()
                .map(|t| format!("<h2>Preflight</h2>\n<pre>{}</pre>\n", html_escape(t)))
                .unwrap_or_default()
        )
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let web = self.web.snapshot();
        let mut response = self.clone().respond(req, &web.config.users).await;
        for (name, value) in &web.config.headers {
            if let (Ok(n), Ok(v)) = (
                header::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                response.headers_mut().insert(n, v);
            }
        }
        Ok(response)
    }

    /// Whether the request carries the credentials of one of `users` (bcrypt runs on the
    /// blocking pool, not on the event loop).
    async fn authorized(
        self: Arc<Self>,
        users: &std::collections::BTreeMap<String, String>,
        req: &Request<Incoming>,
    ) -> bool {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let users = users.clone();
        tokio::task::spawn_blocking(move || self.web.auth.check(&users, header.as_deref()))
            .await
            .unwrap_or(false)
    }

    async fn respond(
        self: Arc<Self>,
        req: Request<Incoming>,
        users: &std::collections::BTreeMap<String, String>,
    ) -> Response<Full<Bytes>> {
        let head_only = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head_only {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let open = matches!(req.uri().path(), "/healthz" | "/readyz");
        if !open && !users.is_empty() && !self.clone().authorized(users, &req).await {
            let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"nodelens\", charset=\"UTF-8\""),
            );
            return r;
        }
        let mut response = match req.uri().path() {
            "/metrics" => {
                let headers = req.headers();
                let format = negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
                let gzip = accepts_gzip(
                    headers
                        .get(header::ACCEPT_ENCODING)
                        .and_then(|v| v.to_str().ok()),
                );
                // Rendered inline on the event loop: the reads are of /proc, /sys and BPF maps
                // (memory, never disk), about a millisecond on a node with few pods and some
                // 9 ms at 4,096 (docs/performance.md). Prometheus scrapes one at a time, and
                // handing each scrape to another thread would cost more at the usual sizes.
                match self.render(format) {
                    Ok(body) => metrics_response(body, format, gzip),
                    Err(_) => {
                        tracing::error!("encoding metrics failed");
                        text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "encoding metrics failed\n",
                        )
                    }
                }
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.agent.is_ready() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "probes are still loading\n",
                    )
                }
            }
            "/" => {
                let mut r = Response::new(Full::new(Bytes::from(self.index_page())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                r
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        };
        if head_only {
            *response.body_mut() = Full::new(Bytes::new());
        }
        response
    }
}

fn metrics_response(body: Vec<u8>, format: Format, gzip: bool) -> Response<Full<Bytes>> {
    let content_type = match format {
        Format::Prometheus => PROMETHEUS_TEXT,
        Format::OpenMetrics => OPENMETRICS_TEXT,
        Format::Protobuf => PROTOBUF,
    };
    let mut encoded = None;
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        if enc.write_all(&body).is_ok()
            && let Ok(bytes) = enc.finish()
        {
            encoded = Some(bytes);
        }
    }
    let gzipped = encoded.is_some();
    let mut r = Response::new(Full::new(match encoded {
        Some(bytes) => Bytes::from(bytes),
        None => Bytes::from(body),
    }));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if gzipped {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Serves until `shutdown` resolves, then stops accepting, drains requests in flight for at
/// most `DRAIN_TIMEOUT`, and returns.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Slow clients must not hold connections open forever.
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let connection = Connection {
                    server: server.clone(),
                    http: http.clone(),
                    watcher: graceful.watcher(),
                };
                if server.web.tls() {
                    tokio::spawn(connection.serve_tls(stream));
                } else {
                    tokio::spawn(connection.serve(stream));
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing"),
    }
}

/// One accepted connection.
struct Connection {
    server: Arc<Server>,
    http: hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Connection {
    /// HTTP over `stream`, plain or already decrypted.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, stream: S) {
        let server = self.server;
        let conn = self.http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| server.clone().handle(req)),
        );
        if let Err(e) = self.watcher.watch(conn).await {
            tracing::debug!("connection error: {e}");
        }
    }

    /// TLS with the certificate in force now, the client's SANs checked against
    /// `client_allowed_sans`, then HTTP. A client speaking plain HTTP gets Go's answer.
    async fn serve_tls(self, stream: TcpStream) {
        let mut first = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
            // A TLS handshake record.
            Ok(Ok(1)) if first[0] == 0x16 => {}
            Ok(Ok(n)) if n > 0 => {
                let mut stream = stream;
                let _ = stream
                    .write_all(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                    .await;
                let _ = stream.shutdown().await;
                return;
            }
            _ => return,
        }
        let web = self.server.web.snapshot();
        let Some(config) = web.tls.clone() else {
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!("TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        };
        if let Some(settings) = &web.config.tls
            && !settings.client_allowed_sans.is_empty()
        {
            let sans = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(subject_alt_names)
                .unwrap_or_default();
            if !sans
                .iter()
                .any(|s| settings.client_allowed_sans.contains(s))
            {
                tracing::warn!(
                    ?sans,
                    "client certificate refused: none of its names is in client_allowed_sans"
                );
                return;
            }
        }
        self.serve(tls).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_prometheus_scrapes() {
        assert_eq!(negotiate(None), Format::Prometheus);
        assert_eq!(negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            negotiate(Some("text/plain;version=0.0.4")),
            Format::Prometheus
        );
        let prometheus_default = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prometheus_default)), Format::OpenMetrics);
        let prefers_text = "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5";
        assert_eq!(negotiate(Some(prefers_text)), Format::Prometheus);
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Prometheus
        );
        assert_eq!(negotiate(Some("garbage;;;q=zz,,")), Format::Prometheus);
        // Prometheus 2.42 to 3.x with native histograms on.
        let protobuf_first = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(protobuf_first)), Format::Protobuf);
        // The text encoding of the messages, or another message, is not served.
        let text_encoding =
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text";
        assert_eq!(negotiate(Some(text_encoding)), Format::Prometheus);
        assert_eq!(
            negotiate(Some(
                "application/vnd.google.protobuf;proto=other;encoding=delimited"
            )),
            Format::Prometheus
        );
        assert_eq!(
            negotiate(Some(
                "application/vnd.google.protobuf; proto=\"io.prometheus.client.MetricFamily\"; encoding=delimited;q=0.9,text/plain;q=0.5"
            )),
            Format::Protobuf
        );
    }

    #[test]
    fn gzip_only_when_accepted() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, gzip;q=0.5")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }
}
