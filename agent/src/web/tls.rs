//! rustls server configuration from [`TlsSettings`]: the certificate chain, key and client
//! CAs read from their files (or inline PEM), the protocol versions, cipher suites and key
//! exchange groups asked for, and client certificate verification. The crypto is ring's;
//! there is no OpenSSL.
use std::sync::Arc;

use rustls::{
    RootCertStore, ServerConfig, SupportedCipherSuite,
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

use super::config::{CipherSuite, ClientAuth, Curve, Pem, TlsSettings, TlsVersion};

/// The bytes of every PEM input, so that a change to any of them (a rotated certificate) is
/// noticed.
pub fn material(settings: &TlsSettings) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    for (what, pem) in [
        ("cert_file", Some(&settings.cert)),
        ("key_file", Some(&settings.key)),
        ("client_ca_file", settings.client_ca.as_ref()),
    ] {
        if let Some(pem) = pem {
            all.extend(read(what, pem)?);
            all.push(0);
        }
    }
    Ok(all)
}

fn read(what: &str, pem: &Pem) -> Result<Vec<u8>, String> {
    match pem {
        Pem::File(path) => std::fs::read(path).map_err(|e| {
            format!(
                "tls_server_config.{what}: cannot read {}: {e}",
                path.display()
            )
        }),
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
    }
}

fn suite(s: CipherSuite) -> SupportedCipherSuite {
    use ring::cipher_suite as c;
    match s {
        CipherSuite::EcdheEcdsaAes128GcmSha256 => c::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheEcdsaAes256GcmSha384 => c::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheEcdsaChacha20Poly1305 => c::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite::EcdheRsaAes128GcmSha256 => c::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheRsaAes256GcmSha384 => c::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheRsaChacha20Poly1305 => c::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    }
}

/// The crypto provider with the suites and groups the settings name, in their order.
fn provider(settings: &TlsSettings) -> CryptoProvider {
    let mut provider = ring::default_provider();
    if let Some(wanted) = &settings.cipher_suites {
        let tls13: Vec<SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .copied()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .collect();
        provider.cipher_suites = tls13
            .into_iter()
            .chain(wanted.iter().map(|&s| suite(s)))
            .collect();
    }
    if let Some(curves) = &settings.curves {
        provider.kx_groups = curves
            .iter()
            .map(|c| match c {
                Curve::X25519 => ring::kx_group::X25519,
                Curve::P256 => ring::kx_group::SECP256R1,
                Curve::P384 => ring::kx_group::SECP384R1,
            })
            .collect();
    }
    provider
}

/// Builds the server configuration, reading the certificate, key and CA files now.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let cert_pem = read("cert_file", &settings.cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config.cert_file: not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("tls_server_config.cert_file: holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&read("key_file", &settings.key)?)
        .map_err(|e| format!("tls_server_config.key_file: no PEM private key: {e}"))?;
    let provider = Arc::new(provider(settings));
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (settings.min_version..=settings.max_version).contains(v))
    .map(|(_, p)| p)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match (settings.client_auth, &settings.client_ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let ca_pem = read("client_ca_file", ca)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&ca_pem) {
                let cert =
                    cert.map_err(|e| format!("tls_server_config.client_ca_file: not PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::VerifyIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?,
            )
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!("tls_server_config.key_file: does not match the certificate, or unsupported: {e}")
    })?;
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The subject alternative names of a client's certificate, as exporter-toolkit compares
/// them with `client_allowed_sans`: DNS names, e-mail addresses, IP addresses and URIs.
pub fn subject_alt_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            GeneralName::RFC822Name(e) => Some((*e).to_owned()),
            GeneralName::URI(u) => Some((*u).to_owned()),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => <[u8; 4]>::try_from(*ip)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*ip)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}
