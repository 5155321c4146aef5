//! One HTTP(S) client for the receiver: a kept-alive HTTP/1.1 connection (re-made after any
//! error), rustls for https, and the response sorted into sent, retry or drop as the
//! remote_write spec and Prometheus's own sender do.
use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::{RemoteWriteAuth, RemoteWriteConfig};

/// How long an answer's body may take once its status is known, and how much of it is kept.
const BODY_WAIT: Duration = Duration::from_secs(2);
const BODY_KEEP: usize = 4096;
/// The longest `Retry-After` honoured: beyond it, the receiver's wish would stop delivery
/// for longer than any queue lasts.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// CA bundles of the common distributions, used for https when no CA file is given (and
/// Mozilla's roots, compiled in, when none exists, as in the `scratch` image).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// What to do with a batch after one attempt.
#[derive(Debug)]
pub enum Outcome {
    Sent,
    /// Network errors, timeouts, 5xx and 429: try the same batch again.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// Any other 4xx: the receiver will never take this batch.
    Drop {
        why: String,
    },
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct Client {
    config: Arc<RemoteWriteConfig>,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    connection: Option<SendRequest<Full<Bytes>>>,
    /// The addresses of the last lookup that worked, used while a new one fails.
    resolved: Vec<SocketAddr>,
    /// A name lookup still running on its own thread: at most one at a time, so that a DNS
    /// server that never answers cannot pile up threads.
    lookup: Option<tokio::sync::oneshot::Receiver<std::io::Result<Vec<SocketAddr>>>>,
}

impl Client {
    /// Checks the URL and reads the TLS files; errors name the setting.
    pub fn new(config: Arc<RemoteWriteConfig>) -> Result<Self, String> {
        let url = &config.url;
        let https = url.scheme_str() == Some("https");
        let host = url
            .host()
            .ok_or("remote_write.url: no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = config.server_name.clone().unwrap_or_else(|| host.clone());
            let server_name = ServerName::try_from(name.clone())
                .map_err(|e| format!("remote_write.server_name: {name:?}: {e}"))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&config)?));
            Some((connector, server_name))
        } else {
            None
        };
        let client = Self {
            config,
            host,
            port,
            tls,
            connection: None,
            resolved: Vec::new(),
            lookup: None,
        };
        // The credentials are read on every request, so rotation works; read them once
        // now too, so that a wrong path is a startup error, not an endless retry.
        client.authorization()?;
        Ok(client)
    }

    /// Sends one compressed `WriteRequest`. `remote_write.timeout` bounds the time to the
    /// answer's status, which alone decides the outcome; the body (the receiver's message)
    /// is read afterwards, briefly, for the log.
    pub async fn send(&mut self, body: Bytes) -> Outcome {
        let timeout = self.config.timeout;
        let answer = match tokio::time::timeout(timeout, self.exchange(body)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            )),
        };
        let (status, retry_after, sender, response_body) = match answer {
            Ok(a) => a,
            Err(why) => {
                self.connection = None;
                return Outcome::Retry { after: None, why };
            }
        };
        let (message, complete) = read_message(response_body).await;
        // The connection is reused only when the answer was read to its end.
        self.connection = complete.then_some(sender);
        if status.is_success() {
            Outcome::Sent
        } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Outcome::Retry {
                after: retry_after,
                why: format!("{status}: {message}"),
            }
        } else {
            Outcome::Drop {
                why: format!("{status}: {message}"),
            }
        }
    }

    /// The receiver's addresses: an IP literal as is, a name looked up on its own thread
    /// (getaddrinfo blocks), one lookup at a time. With addresses from an earlier lookup,
    /// a lookup that does not answer at once is left running and those are used; without,
    /// it gets half the request timeout.
    async fn addresses(&mut self) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        if self.lookup.is_none() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (host, port) = (self.host.clone(), self.port);
            std::thread::Builder::new()
                .name("remote-write-dns".into())
                .spawn(move || {
                    let _ = tx.send(
                        (host.as_str(), port)
                            .to_socket_addrs()
                            .map(Iterator::collect),
                    );
                })
                .map_err(|e| format!("resolve {}: {e}", self.host))?;
            self.lookup = Some(rx);
        }
        let wait = if self.resolved.is_empty() {
            self.config.timeout / 2
        } else {
            Duration::from_millis(50)
        };
        let Some(pending) = self.lookup.as_mut() else {
            return self.fallback(format!("resolve {}: no lookup", self.host));
        };
        let answer = match tokio::time::timeout(wait, pending).await {
            // Still running: it stays in `self.lookup`, polled again next time.
            Err(_) => {
                return self.fallback(format!(
                    "resolving {} takes longer than {}",
                    self.host,
                    humantime::format_duration(wait)
                ));
            }
            Ok(answer) => answer,
        };
        self.lookup = None;
        match answer {
            Ok(Ok(addresses)) if !Vec::is_empty(&addresses) => {
                self.resolved = addresses;
                Ok(self.resolved.clone())
            }
            Ok(Ok(_)) => self.fallback(format!("{} resolves to no address", self.host)),
            Ok(Err(e)) => self.fallback(format!("resolve {}: {e}", self.host)),
            Err(_) => self.fallback(format!("resolve {}: the lookup ended", self.host)),
        }
    }

    fn fallback(&self, why: String) -> Result<Vec<SocketAddr>, String> {
        if self.resolved.is_empty() {
            Err(why)
        } else {
            Ok(self.resolved.clone())
        }
    }

    async fn connect(&mut self) -> Result<SendRequest<Full<Bytes>>, String> {
        let addresses = self.addresses().await?;
        let tcp = tokio::net::TcpStream::connect(addresses.as_slice())
            .await
            .map_err(|e| format!("connect {}:{}: {e}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &self.tls {
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.host))?,
            ),
            None => Box::new(tcp),
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// One request, up to its answer's status: the status, Retry-After, the connection
    /// and the unread body. A kept-alive connection the receiver closed in the meantime
    /// fails before any answer: that attempt is made again at once on a new connection.
    async fn exchange(
        &mut self,
        body: Bytes,
    ) -> Result<
        (
            StatusCode,
            Option<Duration>,
            SendRequest<Full<Bytes>>,
            hyper::body::Incoming,
        ),
        String,
    > {
        let reused = self.connection.take().filter(|s| !s.is_closed());
        let was_reused = reused.is_some();
        let mut sender = match reused {
            Some(s) => s,
            None => self.connect().await?,
        };
        let response = match self.attempt(&mut sender, body.clone()).await {
            Ok(r) => r,
            Err(_) if was_reused => {
                sender = self.connect().await?;
                self.attempt(&mut sender, body).await?
            }
            Err(e) => return Err(e),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&s| s > 0)
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        Ok((status, retry_after, sender, response.into_body()))
    }

    async fn attempt(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let request = self.request(body)?;
        sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))
    }

    /// The Authorization header value, from the secret files as they are now.
    fn authorization(&self) -> Result<Option<HeaderValue>, String> {
        let value = match &self.config.auth {
            RemoteWriteAuth::None => return Ok(None),
            RemoteWriteAuth::Basic {
                username,
                password_file,
            } => {
                use base64::Engine as _;
                let password = read_secret("remote_write.password_file", password_file)?;
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                format!("Basic {token}")
            }
            RemoteWriteAuth::Bearer { token_file } => format!(
                "Bearer {}",
                read_secret("remote_write.bearer_token_file", token_file)?
            ),
        };
        HeaderValue::from_str(&value).map(Some).map_err(|_| {
            "remote_write: the credentials hold characters a header cannot carry".to_owned()
        })
    }

    fn request(&self, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
        let url: &Uri = &self.config.url;
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let host = url.authority().map_or(self.host.as_str(), |a| a.as_str());
        let mut request = Request::post(path)
            .header(header::HOST, host)
            .header(header::CONTENT_ENCODING, "snappy")
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .header(
                header::USER_AGENT,
                concat!("nodelens/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        // Secrets are read from their files on every request, so rotation needs no restart.
        if let Some(value) = self.authorization()? {
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        Ok(request)
    }
}

/// The first line of an answer's body, at most 200 characters of printable text, and
/// whether the body was read to its end (only then can the connection carry another
/// request). Bounded in size and time: it is outside input.
async fn read_message(mut body: hyper::body::Incoming) -> (String, bool) {
    let mut kept = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(data) = frame.data_ref() {
                if kept.len() + data.len() > BODY_KEEP {
                    kept.extend_from_slice(&data[..BODY_KEEP - kept.len()]);
                    return false;
                }
                kept.extend_from_slice(data);
            }
        }
        true
    };
    let complete = tokio::time::timeout(BODY_WAIT, read).await.unwrap_or(false);
    let message = String::from_utf8_lossy(&kept)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    (message, complete)
}

fn read_secret(field: &str, path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|e| format!("{field}: cannot read {}: {e}", path.display()))
}

fn read_pem(field: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{field}: cannot read {}: {e}", path.display()))
}

/// rustls client configuration: the CA file (or the system bundle), and a client
/// certificate when one is configured.
fn client_config(config: &RemoteWriteConfig) -> Result<ClientConfig, String> {
    let field = "remote_write.ca_file";
    let ca_path = config.ca_file.clone().or_else(|| {
        SYSTEM_CA_BUNDLES
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
    });
    let mut roots = RootCertStore::empty();
    match &ca_path {
        Some(path) => {
            for cert in CertificateDer::pem_slice_iter(&read_pem(field, path)?) {
                let cert = cert.map_err(|e| format!("{field}: not PEM: {e}"))?;
                // A system bundle can hold certificates rustls refuses; skip those.
                let added = roots.add(cert);
                if config.ca_file.is_some() {
                    added.map_err(|e| format!("{field}: {e}"))?;
                }
            }
            if roots.is_empty() {
                return Err(format!("{field}: {} holds no certificate", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("remote_write TLS: {e}"))?
        .with_root_certificates(roots);
    match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(&read_pem("remote_write.cert_file", cert)?)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("remote_write.cert_file: not PEM: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&read_pem("remote_write.key_file", key)?)
                .map_err(|e| format!("remote_write.key_file: no PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("remote_write.cert_file: {e}"))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(
            "remote_write.cert_file and remote_write.key_file go together: set both or neither"
                .into(),
        ),
    }
}
