//! The push section (`remote_write.*`), validated.
use std::{path::PathBuf, time::Duration};

use super::{
    settings::RemoteWriteSettings,
    values::{ConfigError, duration, invalid},
};

/// Push settings, validated.
#[derive(Debug, Clone)]
pub struct RemoteWriteConfig {
    pub url: http::Uri,
    pub interval: Duration,
    /// Sorted by name; `job` and `instance` defaults are added by [`Self::with_defaults`].
    pub external_labels: Vec<(String, String)>,
    pub auth: RemoteWriteAuth,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub max_samples: usize,
    pub timeout: Duration,
    /// Also send native histograms (`TimeSeries.histograms`), for receivers that take them.
    pub native_histograms: bool,
}

#[derive(Debug, Clone)]
pub enum RemoteWriteAuth {
    None,
    Basic {
        username: String,
        password_file: PathBuf,
    },
    Bearer {
        token_file: PathBuf,
    },
}

pub const DEFAULT_REMOTE_WRITE_INTERVAL: Duration = Duration::from_secs(15);
pub const DEFAULT_REMOTE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_REMOTE_WRITE_MAX_SAMPLES: usize = 250_000;

impl RemoteWriteConfig {
    /// Adds `job="nodelens"` and `instance="<node>"` unless the user set them, so that the
    /// dashboard's `instance` variable and `job` matchers work for pushed data too.
    pub fn with_defaults(mut self, node: &str) -> Self {
        for (name, value) in [("job", "nodelens"), ("instance", node)] {
            if !self.external_labels.iter().any(|(n, _)| n == name) {
                self.external_labels
                    .push((name.to_owned(), value.to_owned()));
            }
        }
        self.external_labels.sort();
        self
    }

    pub(super) fn validate(s: RemoteWriteSettings) -> Result<Option<Self>, ConfigError> {
        let Some(url) = s.url.filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let example = "for example https://prometheus.example:9090/api/v1/write";
        let url: http::Uri = url.trim().parse().map_err(|e| {
            invalid(
                "remote_write.url",
                format!("{url:?} is not a URL ({e}; {example})"),
            )
        })?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(invalid(
                "remote_write.url",
                format!("{url} must be an http or https URL with a host ({example})"),
            ));
        }
        if url.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(invalid(
                "remote_write.url",
                "holds credentials: use remote_write.username and remote_write.password_file, which stay out of logs",
            ));
        }
        let mut external_labels = Vec::new();
        for pair in s.external_labels.unwrap_or_default() {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                invalid(
                    "remote_write.external_labels",
                    format!("{pair:?} is not name=value"),
                )
            })?;
            let name = name.trim();
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with("__");
            if !valid {
                return Err(invalid(
                    "remote_write.external_labels",
                    format!(
                        "{name:?} is not a label name (letters, digits and _, not starting with __)"
                    ),
                ));
            }
            if value.is_empty() {
                return Err(invalid(
                    "remote_write.external_labels",
                    format!("{name:?} has an empty value (remote_write forbids empty values)"),
                ));
            }
            if external_labels.iter().any(|(n, _)| n == name) {
                return Err(invalid(
                    "remote_write.external_labels",
                    format!("{name:?} is given twice"),
                ));
            }
            external_labels.push((name.to_owned(), value.to_owned()));
        }
        external_labels.sort();
        let auth = match (s.username, s.password_file, s.bearer_token_file) {
            (None, None, None) => RemoteWriteAuth::None,
            (Some(username), Some(password_file), None) => RemoteWriteAuth::Basic {
                username,
                password_file,
            },
            (None, None, Some(token_file)) => RemoteWriteAuth::Bearer { token_file },
            (_, _, Some(_)) => {
                return Err(invalid(
                    "remote_write.bearer_token_file",
                    "use basic auth or a bearer token, not both",
                ));
            }
            _ => {
                return Err(invalid(
                    "remote_write.username",
                    "basic auth needs both remote_write.username and remote_write.password_file",
                ));
            }
        };
        let max_samples = s
            .queue
            .max_samples
            .unwrap_or(DEFAULT_REMOTE_WRITE_MAX_SAMPLES);
        if max_samples < 2_000 {
            return Err(invalid(
                "remote_write.queue.max_samples",
                format!("{max_samples} is below one batch (at least 2000)"),
            ));
        }
        Ok(Some(Self {
            url,
            interval: match s.interval {
                Some(v) => duration("remote_write.interval", &v, Duration::from_secs(1))?,
                None => DEFAULT_REMOTE_WRITE_INTERVAL,
            },
            external_labels,
            auth,
            ca_file: s.ca_file,
            cert_file: s.cert_file,
            key_file: s.key_file,
            server_name: s.server_name,
            max_samples,
            timeout: match s.timeout {
                Some(v) => duration("remote_write.timeout", &v, Duration::from_millis(100))?,
                None => DEFAULT_REMOTE_WRITE_TIMEOUT,
            },
            native_histograms: s.native_histograms.unwrap_or(false),
        }))
    }
}
