//! exporter-toolkit's web configuration file (node_exporter's `--web.config.file`), read
//! as it is, so a node_exporter web config works unchanged:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # or cert: <PEM>; paths are relative to this file
//!   key_file: server.key           # or key: <PEM>
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: ca.crt         # or client_ca: <PEM>
//!   client_allowed_sans: [prometheus.monitoring.svc]
//!   min_version: TLS12
//!   max_version: TLS13
//!   cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
//!   curve_preferences: [X25519, CurveP256]
//!   prefer_server_cipher_suites: true
//! http_server_config:
//!   http2: true                    # accepted; nodelens serves HTTP/1.1
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:
//!   prometheus: $2y$10$...        # bcrypt
//! ```
//!
//! Anything rustls cannot honour (TLS 1.0 or 1.1, a CBC cipher suite, P-521) is an error
//! naming the key, never a silent downgrade. This module only parses and validates; the
//! files it names are read by `web::tls`.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    client_ca_file: Option<String>,
    client_ca: Option<String>,
    client_auth_type: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// A validated web configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebConfig {
    /// `None`: plain HTTP.
    pub tls: Option<TlsSettings>,
    /// User name to bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Added to every response.
    pub headers: Vec<(String, String)>,
}

/// Where PEM data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (the default).
    None,
    /// `VerifyClientCertIfGiven`: a certificate is optional, but verified when sent.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`.
    RequireAndVerify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// TLS 1.2 cipher suites rustls implements (TLS 1.3's are always on, as in Go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherSuite {
    EcdheEcdsaAes128GcmSha256,
    EcdheEcdsaAes256GcmSha384,
    EcdheEcdsaChacha20Poly1305,
    EcdheRsaAes128GcmSha256,
    EcdheRsaAes256GcmSha384,
    EcdheRsaChacha20Poly1305,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    X25519,
    P256,
    P384,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_auth: ClientAuth,
    pub client_ca: Option<Pem>,
    pub client_allowed_sans: Vec<String>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// `None`: rustls's defaults.
    pub cipher_suites: Option<Vec<CipherSuite>>,
    pub curves: Option<Vec<Curve>>,
    pub prefer_server_cipher_suites: bool,
}

/// A problem with the file: the key it concerns and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfigError {
    pub key: String,
    pub detail: String,
}

impl std::fmt::Display for WebConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.detail)
        } else {
            write!(f, "{}: {}", self.key, self.detail)
        }
    }
}

fn err(key: &str, detail: impl Into<String>) -> WebConfigError {
    WebConfigError {
        key: key.to_owned(),
        detail: detail.into(),
    }
}

/// Response headers exporter-toolkit allows, with the values it allows where it limits them.
const HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

/// Go's names of TLS 1.2 suites rustls implements.
const SUITES: &[(&str, CipherSuite)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::EcdheEcdsaAes128GcmSha256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::EcdheEcdsaAes256GcmSha384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        CipherSuite::EcdheEcdsaChacha20Poly1305,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::EcdheEcdsaChacha20Poly1305,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::EcdheRsaAes128GcmSha256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::EcdheRsaAes256GcmSha384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        CipherSuite::EcdheRsaChacha20Poly1305,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::EcdheRsaChacha20Poly1305,
    ),
];

/// TLS 1.3 suites: Go accepts their names and ignores them (1.3 suites are not
/// configurable); so does nodelens.
const TLS13_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Suites Go knows that rustls does not implement (CBC, RSA key exchange, RC4, 3DES).
fn go_only_suite(name: &str) -> bool {
    name.starts_with("TLS_")
        && (name.contains("_CBC_") || name.contains("RC4") || name.starts_with("TLS_RSA_"))
}

impl WebConfig {
    /// Parses the YAML text of a web config.
    pub fn parse(bytes: &[u8], dir: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|_| err("", "not UTF-8 text"))?;
        let raw: RawWebConfig = if text.trim().is_empty() {
            RawWebConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| {
                err(
                    "",
                    e.to_string()
                        .lines()
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            })?
        };
        let tls = match raw.tls_server_config {
            Some(t) => tls_settings(t, dir)?,
            None => None,
        };
        let mut users = BTreeMap::new();
        for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
            let key = format!("basic_auth_users.{user}");
            if user.contains(':') {
                return Err(err(&key, "a user name cannot contain ':'"));
            }
            if !is_bcrypt(&hash) {
                return Err(err(
                    &key,
                    "not a bcrypt hash (make one with htpasswd -nBC 10 \"\" | tr -d ':\\n')",
                ));
            }
            users.insert(user, hash);
        }
        let mut headers = Vec::new();
        let http = raw.http_server_config.unwrap_or_default();
        let _ = http.http2; // Accepted for compatibility: nodelens serves HTTP/1.1 only.
        for (name, value) in http.headers.unwrap_or_default() {
            let key = format!("http_server_config.headers.{name}");
            let Some((canonical, allowed)) =
                HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(&name))
            else {
                return Err(err(
                    &key,
                    format!(
                        "this header cannot be set (allowed: {})",
                        HEADERS
                            .iter()
                            .map(|(h, _)| *h)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            if let Some(allowed) = allowed
                && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value))
            {
                return Err(err(
                    &key,
                    format!("{value:?} is not allowed (use {})", allowed.join(" or ")),
                ));
            }
            if http::HeaderValue::from_str(&value).is_err() {
                return Err(err(&key, "the value is not a valid header value"));
            }
            headers.push(((*canonical).to_owned(), value));
        }
        Ok(WebConfig {
            tls,
            users,
            headers,
        })
    }
}

/// `$2a$`, `$2b$`, `$2x$` or `$2y$`, a two-digit cost from 04 to 31, `$`, and 53 characters
/// of bcrypt's base64 (22 of salt, 31 of hash).
fn is_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    b.len() == 60
        && b.starts_with(b"$2")
        && matches!(b[2], b'a' | b'b' | b'x' | b'y')
        && b[3] == b'$'
        && std::str::from_utf8(&b[4..6])
            .ok()
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| (4..=31).contains(&c))
        && b[6] == b'$'
        && b[7..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/')
}

fn pem(
    file: Option<String>,
    inline: Option<String>,
    file_key: &str,
    inline_key: &str,
    dir: &Path,
) -> Result<Option<Pem>, WebConfigError> {
    match (
        file.filter(|f| !f.is_empty()),
        inline.filter(|i| !i.is_empty()),
    ) {
        (Some(_), Some(_)) => Err(err(
            &format!("tls_server_config.{file_key}"),
            format!("set {file_key} or {inline_key}, not both"),
        )),
        (Some(f), None) => Ok(Some(Pem::File(dir.join(f)))),
        (None, Some(i)) => Ok(Some(Pem::Inline(i))),
        (None, None) => Ok(None),
    }
}

fn version(
    key: &str,
    value: Option<String>,
    default: TlsVersion,
) -> Result<TlsVersion, WebConfigError> {
    match value.as_deref() {
        None | Some("") => Ok(default),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some(v @ ("TLS10" | "TLS11")) => Err(err(
            key,
            format!("{v} cannot be honoured: rustls speaks TLS12 and TLS13 only"),
        )),
        Some(v) => Err(err(
            key,
            format!("{v:?} is not a TLS version (use TLS12 or TLS13)"),
        )),
    }
}

fn tls_settings(t: RawTls, dir: &Path) -> Result<Option<TlsSettings>, WebConfigError> {
    let cert = pem(t.cert_file, t.cert, "cert_file", "cert", dir)?;
    let key = pem(t.key_file, t.key, "key_file", "key", dir)?;
    let client_ca = pem(
        t.client_ca_file,
        t.client_ca,
        "client_ca_file",
        "client_ca",
        dir,
    )?;
    let auth_type = t.client_auth_type.unwrap_or_default();
    // exporter-toolkit serves plain HTTP when nothing of TLS is set.
    if cert.is_none() && key.is_none() && client_ca.is_none() && auth_type.is_empty() {
        return Ok(None);
    }
    let cert = cert.ok_or_else(|| {
        err(
            "tls_server_config.cert_file",
            "missing: set cert_file or cert",
        )
    })?;
    let key =
        key.ok_or_else(|| err("tls_server_config.key_file", "missing: set key_file or key"))?;
    let client_auth = match auth_type.as_str() {
        "" | "NoClientCert" => ClientAuth::None,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
        v @ ("RequestClientCert" | "RequireAnyClientCert") => {
            return Err(err(
                "tls_server_config.client_auth_type",
                format!(
                    "{v} accepts certificates nobody verified, which nodelens does not do (use VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
                ),
            ));
        }
        v => {
            return Err(err(
                "tls_server_config.client_auth_type",
                format!(
                    "{v:?} is not a client auth type (use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
                ),
            ));
        }
    };
    match (client_auth, &client_ca) {
        (ClientAuth::None, Some(_)) => {
            return Err(err(
                "tls_server_config.client_ca_file",
                "client CAs are set without client_auth_type (set RequireAndVerifyClientCert or VerifyClientCertIfGiven)",
            ));
        }
        (ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify, None) => {
            return Err(err(
                "tls_server_config.client_ca_file",
                "missing: verifying client certificates needs client_ca_file or client_ca",
            ));
        }
        _ => {}
    }
    let client_allowed_sans = t.client_allowed_sans.unwrap_or_default();
    if !client_allowed_sans.is_empty() && client_auth == ClientAuth::None {
        return Err(err(
            "tls_server_config.client_allowed_sans",
            "needs verified client certificates (set client_auth_type)",
        ));
    }
    let min_version = version(
        "tls_server_config.min_version",
        t.min_version,
        TlsVersion::Tls12,
    )?;
    let max_version = version(
        "tls_server_config.max_version",
        t.max_version,
        TlsVersion::Tls13,
    )?;
    if min_version > max_version {
        return Err(err("tls_server_config.min_version", "is above max_version"));
    }
    let cipher_suites = match t.cipher_suites {
        None => None,
        Some(names) => {
            let mut suites = Vec::new();
            for name in names {
                let key = "tls_server_config.cipher_suites";
                if let Some((_, s)) = SUITES.iter().find(|(n, _)| *n == name) {
                    if !suites.contains(s) {
                        suites.push(*s);
                    }
                } else if TLS13_SUITES.contains(&name.as_str()) {
                    continue;
                } else if go_only_suite(&name) {
                    return Err(err(
                        key,
                        format!(
                            "{name} cannot be honoured: rustls implements only the AEAD suites with ECDHE (for example TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)"
                        ),
                    ));
                } else {
                    return Err(err(key, format!("{name:?} is not a cipher suite name")));
                }
            }
            if suites.is_empty() && min_version == TlsVersion::Tls12 {
                return Err(err(
                    "tls_server_config.cipher_suites",
                    "no TLS 1.2 suite left (name one, or set min_version: TLS13)",
                ));
            }
            Some(suites)
        }
    };
    let curves = match t.curve_preferences {
        None => None,
        Some(names) => {
            let mut curves = Vec::new();
            for name in names {
                let curve = match name.as_str() {
                    "X25519" => Curve::X25519,
                    "CurveP256" => Curve::P256,
                    "CurveP384" => Curve::P384,
                    "CurveP521" => {
                        return Err(err(
                            "tls_server_config.curve_preferences",
                            "CurveP521 cannot be honoured by rustls (use X25519, CurveP256 or CurveP384)",
                        ));
                    }
                    _ => {
                        return Err(err(
                            "tls_server_config.curve_preferences",
                            format!("{name:?} is not a curve (use X25519, CurveP256 or CurveP384)"),
                        ));
                    }
                };
                if !curves.contains(&curve) {
                    curves.push(curve);
                }
            }
            if curves.is_empty() {
                return Err(err("tls_server_config.curve_preferences", "is empty"));
            }
            Some(curves)
        }
    };
    Ok(Some(TlsSettings {
        cert,
        key,
        client_auth,
        client_ca,
        client_allowed_sans,
        min_version,
        max_version,
        cipher_suites,
        curves,
        prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(false),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(text.as_bytes(), Path::new("/etc/nodelens"))
    }

    const HASH: &str = "$2y$10$FfQv1z8Ns6q2qNY0pBv3W.HdGQhZ6S1v4CtBmNT0S3kG2pLDpLbMi";

    #[test]
    fn an_empty_file_serves_plain_http_without_auth() {
        assert_eq!(parse("").unwrap(), WebConfig::default());
        assert_eq!(
            parse("tls_server_config: {}\n").unwrap(),
            WebConfig::default()
        );
    }

    #[test]
    fn reads_node_exporters_format() {
        let c = parse(&format!(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: /keys/tls.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  client_allowed_sans: [prometheus]\n  min_version: TLS13\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n  curve_preferences: [X25519]\nhttp_server_config:\n  http2: false\n  headers:\n    x-frame-options: deny\nbasic_auth_users:\n  prometheus: '{HASH}'\n"
        ))
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, Pem::File("/etc/nodelens/tls.crt".into()));
        assert_eq!(tls.key, Pem::File("/keys/tls.key".into()));
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerify);
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(
            tls.cipher_suites,
            Some(vec![CipherSuite::EcdheRsaAes128GcmSha256])
        );
        assert_eq!(tls.curves, Some(vec![Curve::X25519]));
        assert_eq!(c.headers, vec![("X-Frame-Options".into(), "deny".into())]);
        assert_eq!(c.users.get("prometheus").map(String::as_str), Some(HASH));
    }

    #[test]
    fn what_rustls_cannot_honour_is_an_error_naming_the_key() {
        let base = "tls_server_config:\n  cert_file: a\n  key_file: b\n";
        for (extra, key) in [
            ("  min_version: TLS11\n", "tls_server_config.min_version"),
            ("  max_version: TLS10\n", "tls_server_config.max_version"),
            (
                "  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
                "tls_server_config.cipher_suites",
            ),
            (
                "  cipher_suites: [TLS_FANCY]\n",
                "tls_server_config.cipher_suites",
            ),
            (
                "  curve_preferences: [CurveP521]\n",
                "tls_server_config.curve_preferences",
            ),
            (
                "  client_auth_type: RequireAnyClientCert\n",
                "tls_server_config.client_auth_type",
            ),
            (
                "  client_auth_type: RequireAndVerifyClientCert\n",
                "tls_server_config.client_ca_file",
            ),
            ("  client_ca_file: ca\n", "tls_server_config.client_ca_file"),
        ] {
            let e = parse(&format!("{base}{extra}")).unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e}");
        }
        assert_eq!(
            parse("tls_server_config:\n  cert_file: a\n")
                .unwrap_err()
                .key,
            "tls_server_config.key_file"
        );
        assert_eq!(
            parse("basic_auth_users:\n  bob: plaintext\n")
                .unwrap_err()
                .key,
            "basic_auth_users.bob"
        );
        assert_eq!(
            parse("http_server_config:\n  headers:\n    Set-Cookie: a=b\n")
                .unwrap_err()
                .key,
            "http_server_config.headers.Set-Cookie"
        );
        assert!(
            parse("tls_server_config:\n  cert_fil: a\n")
                .unwrap_err()
                .to_string()
                .contains("cert_fil")
        );
    }

    #[test]
    fn recognises_bcrypt_hashes_as_htpasswd_writes_them() {
        assert!(is_bcrypt(HASH));
        assert!(is_bcrypt(&HASH.replace("$2y$", "$2b$")));
        assert!(!is_bcrypt(&HASH.replace("$10$", "$99$")));
        assert!(!is_bcrypt(&HASH[..59]));
        assert!(!is_bcrypt("$1$abc"));
    }
}
