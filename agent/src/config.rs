//! Configuration: flags, `NODELENS_*` environment variables and an optional YAML or TOML
//! file, in that order of precedence, then the built-in defaults.
//!
//! Every setting is declared once, in [`Settings`]: its clap attributes make it a flag with
//! an environment variable, and its serde shape is the file's. The flags and the file are
//! both read into `Settings`, merged key by key (flags over file), and then validated into
//! [`Config`], the typed configuration the agent runs with.
//!
//! Every error names the field that is wrong and how to fix it; `main` prints it on one
//! line and exits with code 2.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::ebpf::{families, family::FamilySettings};
pub use crate::{
    cgroups::settings::{CgroupConfig, PathLabel},
    collectors::CollectorName,
    ebpf::loader::ProbeAttach,
};

pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:9560";
pub const DEFAULT_MAX_CGROUPS: usize = 4096;
pub const DEFAULT_MAP_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "nodelens",
    version,
    about = "eBPF node agent: run-queue, disk and memory latency per node and per pod, on one Prometheus endpoint"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve metrics (the default when no subcommand is given).
    Run,
    /// Check what will and won't work on this node (kernel, BTF, tracefs, capabilities,
    /// memlock, cgroups, every probe), print it, and exit 0 when the core probes attach.
    Preflight {
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write the node identity and the report here, for the agent to show.
        #[arg(long, env = "NODELENS_PREFLIGHT_OUTPUT_DIR")]
        output_dir: Option<PathBuf>,
        /// Also generate work (scheduler, disk reads, memory reclaim) and report, per probe,
        /// the events seen and the cost per event; fails when a core probe sees none.
        #[arg(long)]
        exercise: bool,
        /// The disk to read from during --exercise [default: the first disk in sysfs].
        #[arg(long, requires = "exercise")]
        exercise_device: Option<PathBuf>,
        /// A mounted filesystem on a disk (not tmpfs) where --exercise checks per-cgroup disk
        /// attribution: one cgroup writes 32 MiB through the page cache (written back after
        /// `sync`), another reads it back with O_DIRECT, and both are compared with the
        /// cgroups' own io.stat. Needs cgroup2 with the io and memory controllers.
        #[arg(long, requires = "exercise")]
        exercise_filesystem: Option<PathBuf>,
        /// Write one scrape of /metrics here during --exercise.
        #[arg(long, requires = "exercise")]
        metrics_out: Option<PathBuf>,
    },
}

/// Every setting, as given: flags (with their environment variables) and file keys share
/// this one declaration. Values stay raw here; [`Config::resolve`] checks them, so that a
/// bad value from any source gets the same one-line error naming the file key.
#[derive(Debug, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Config file, YAML (.yaml/.yml) or TOML (.toml). Keys are the flag names with `_`.
    #[arg(long, env = "NODELENS_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address and port to serve on: `:9560`, `0.0.0.0:9560`, `[::]:9560` or
    /// `host:9560` [default: 0.0.0.0:9560].
    #[arg(long, env = "NODELENS_LISTEN_ADDRESS", global = true)]
    pub listen_address: Option<String>,
    #[command(flatten)]
    #[serde(default)]
    pub collectors: CollectorSettings,
    /// Root of the host's procfs; /host/proc in a container [default: /proc].
    #[arg(long, env = "NODELENS_PROCFS", global = true)]
    pub procfs: Option<PathBuf>,
    /// Root of the host's sysfs; /host/sys in a container [default: /sys].
    #[arg(long, env = "NODELENS_SYSFS", global = true)]
    pub sysfs: Option<PathBuf>,
    /// Where the host's root filesystem is visible, for filesystem statistics [default: /].
    #[arg(long, env = "NODELENS_ROOTFS", global = true)]
    pub rootfs: Option<PathBuf>,
    /// How probes attach: auto (tp_btf, else classic tracepoint), tp_btf or tracepoint [default: auto].
    #[arg(long, env = "NODELENS_PROBE_ATTACH", global = true)]
    pub probe_attach: Option<String>,
    #[command(flatten)]
    #[serde(default)]
    pub cgroups: CgroupSettings,
    /// This node's name, for nodelens_node_info (the DaemonSet passes spec.nodeName)
    /// [default: the host name].
    #[arg(long, env = "NODELENS_NODE_NAME", global = true)]
    pub node_name: Option<String>,
    /// The host's machine id [default: /etc/machine-id].
    #[arg(long, env = "NODELENS_MACHINE_ID_FILE", global = true)]
    pub machine_id_file: Option<PathBuf>,
    /// Where `nodelens preflight --output-dir` wrote the node identity and its report.
    #[arg(long, env = "NODELENS_PREFLIGHT_DIR", global = true)]
    pub preflight_dir: Option<PathBuf>,
    /// Also turn on the kernel's own BPF run-time statistics (BPF_ENABLE_STATS, needs
    /// CAP_SYS_ADMIN) and export them beside the probes' self-measured cost. They are one
    /// switch for the whole node: every BPF program pays two clock reads per run while they
    /// are on [default: false].
    #[arg(long, env = "NODELENS_KERNEL_BPF_STATS", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub kernel_bpf_stats: Option<bool>,
    /// exporter-toolkit web configuration (node_exporter's --web.config.file format): TLS,
    /// client certificates, basic auth and response headers. Re-read on each connection.
    #[arg(long, env = "NODELENS_WEB_CONFIG_FILE", global = true)]
    pub web_config_file: Option<PathBuf>,
    /// Keep the capabilities after attaching instead of dropping them all [default: false].
    #[arg(long, env = "NODELENS_KEEP_CAPABILITIES", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub keep_capabilities: Option<bool>,
    /// The syscall allowlist after startup: errno (others fail with EPERM, logged and
    /// counted), kill (others kill the agent) or off [default: errno].
    #[arg(long, env = "NODELENS_SECCOMP", global = true)]
    pub seccomp: Option<String>,
    /// How often the agent keeps its kernel maps, whether or not anyone scrapes: takes out
    /// the entries of gone cgroups, refreshes fill levels [default: 5s].
    #[arg(long, env = "NODELENS_MAP_UPKEEP_INTERVAL", global = true)]
    pub map_upkeep_interval: Option<String>,
    #[command(flatten)]
    #[serde(default)]
    pub remote_write: RemoteWriteSettings,
    /// trace, debug, info, warn or error [default: info].
    #[arg(long, env = "NODELENS_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
    /// text or json [default: text].
    #[arg(long, env = "NODELENS_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
}

/// `collectors.*` in the file.
#[derive(Debug, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorSettings {
    /// Only run these collectors (comma-separated) [default: all].
    #[arg(
        id = "collectors_enabled",
        long = "collectors-enabled",
        env = "NODELENS_COLLECTORS_ENABLED",
        value_delimiter = ',',
        global = true
    )]
    pub enabled: Option<Vec<String>>,
    /// Never run these collectors (comma-separated); applied after --collectors-enabled.
    #[arg(
        id = "collectors_disabled",
        long = "collectors-disabled",
        env = "NODELENS_COLLECTORS_DISABLED",
        value_delimiter = ',',
        global = true
    )]
    pub disabled: Option<Vec<String>>,
}

/// `cgroups.*` in the file.
#[derive(Debug, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupSettings {
    /// The cgroup2 mount [default: found in /proc/self/mountinfo].
    #[arg(
        id = "cgroup_root",
        long = "cgroup-root",
        env = "NODELENS_CGROUP_ROOT",
        global = true
    )]
    pub root: Option<PathBuf>,
    /// Most cgroups exported one by one; the rest fold into cgroup="other" [default: 4096].
    #[arg(
        id = "max_cgroups",
        long = "max-cgroups",
        env = "NODELENS_MAX_CGROUPS",
        global = true
    )]
    pub max: Option<usize>,
    /// Only export cgroups whose path (relative to the cgroup2 root) matches this regex.
    #[arg(
        id = "cgroup_include",
        long = "cgroup-include",
        env = "NODELENS_CGROUP_INCLUDE",
        global = true
    )]
    pub include: Option<String>,
    /// Never export cgroups whose path matches this regex (applied after the include).
    #[arg(
        id = "cgroup_exclude",
        long = "cgroup-exclude",
        env = "NODELENS_CGROUP_EXCLUDE",
        global = true
    )]
    pub exclude: Option<String>,
    /// auto: leave the cgroup path out of per-cgroup series when namespace, pod and
    /// container identify a kubelet cgroup; always: keep it [default: auto].
    #[arg(
        id = "cgroup_path_label",
        long = "cgroup-path-label",
        env = "NODELENS_CGROUP_PATH_LABEL",
        global = true
    )]
    pub path_label: Option<String>,
    /// Which per-cgroup series to export (comma-separated): cpu, runqueue_wait,
    /// context_switches, reclaim_stall, or all [default: cpu,runqueue_wait,reclaim_stall].
    #[arg(
        id = "cgroup_series",
        long = "cgroup-series",
        env = "NODELENS_CGROUP_SERIES",
        value_delimiter = ',',
        global = true
    )]
    pub series: Option<Vec<String>>,
    /// The kubelet's pod log directory, for pod names [default: /var/log/pods].
    #[arg(long, env = "NODELENS_POD_LOGS_DIR", global = true)]
    pub pod_logs_dir: Option<PathBuf>,
    /// The kubelet's container log links, for container names [default: /var/log/containers].
    #[arg(long, env = "NODELENS_CONTAINER_LOGS_DIR", global = true)]
    pub container_logs_dir: Option<PathBuf>,
}

/// `remote_write.*` in the file: push to a Prometheus remote_write receiver.
#[derive(Debug, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteSettings {
    /// Push to this remote_write URL (http or https), besides serving /metrics
    /// [default: off].
    #[arg(
        id = "remote_write_url",
        long = "remote-write-url",
        env = "NODELENS_REMOTE_WRITE_URL",
        global = true
    )]
    pub url: Option<String>,
    /// How often the metrics are sampled and queued for the receiver [default: 15s].
    #[arg(
        id = "remote_write_interval",
        long = "remote-write-interval",
        env = "NODELENS_REMOTE_WRITE_INTERVAL",
        global = true
    )]
    pub interval: Option<String>,
    /// Labels added to every pushed series unless it has them, name=value,...; a map in
    /// the file [default: job=nodelens, instance=the node name].
    #[arg(
        id = "remote_write_external_labels",
        long = "remote-write-external-labels",
        env = "NODELENS_REMOTE_WRITE_EXTERNAL_LABELS",
        value_delimiter = ',',
        global = true
    )]
    #[serde(default, deserialize_with = "labels_from_map_or_list")]
    pub external_labels: Option<Vec<String>>,
    /// Basic auth user name (the password comes from --remote-write-password-file).
    #[arg(
        id = "remote_write_username",
        long = "remote-write-username",
        env = "NODELENS_REMOTE_WRITE_USERNAME",
        global = true
    )]
    pub username: Option<String>,
    /// File holding the basic auth password, read on every request.
    #[arg(
        id = "remote_write_password_file",
        long = "remote-write-password-file",
        env = "NODELENS_REMOTE_WRITE_PASSWORD_FILE",
        global = true
    )]
    pub password_file: Option<PathBuf>,
    /// File holding a bearer token, read on every request (so rotation needs no restart).
    #[arg(
        id = "remote_write_bearer_token_file",
        long = "remote-write-bearer-token-file",
        env = "NODELENS_REMOTE_WRITE_BEARER_TOKEN_FILE",
        global = true
    )]
    pub bearer_token_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign the receiver's certificate [default: the system bundle].
    #[arg(
        id = "remote_write_ca_file",
        long = "remote-write-ca-file",
        env = "NODELENS_REMOTE_WRITE_CA_FILE",
        global = true
    )]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for receivers that require one.
    #[arg(
        id = "remote_write_cert_file",
        long = "remote-write-cert-file",
        env = "NODELENS_REMOTE_WRITE_CERT_FILE",
        global = true
    )]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(
        id = "remote_write_key_file",
        long = "remote-write-key-file",
        env = "NODELENS_REMOTE_WRITE_KEY_FILE",
        global = true
    )]
    pub key_file: Option<PathBuf>,
    /// The name the receiver's certificate must carry [default: the URL's host].
    #[arg(
        id = "remote_write_server_name",
        long = "remote-write-server-name",
        env = "NODELENS_REMOTE_WRITE_SERVER_NAME",
        global = true
    )]
    pub server_name: Option<String>,
    /// How long one request may take before it is retried [default: 10s].
    #[arg(
        id = "remote_write_timeout",
        long = "remote-write-timeout",
        env = "NODELENS_REMOTE_WRITE_TIMEOUT",
        global = true
    )]
    pub timeout: Option<String>,
    #[command(flatten)]
    #[serde(default)]
    pub queue: RemoteWriteQueueSettings,
}

/// `remote_write.queue.*` in the file.
#[derive(Debug, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteQueueSettings {
    /// Most samples kept while the receiver is unreachable; past it the oldest are dropped
    /// and counted [default: 250000, about 6 MiB].
    #[arg(
        id = "remote_write_queue_max_samples",
        long = "remote-write-queue-max-samples",
        env = "NODELENS_REMOTE_WRITE_QUEUE_MAX_SAMPLES",
        global = true
    )]
    pub max_samples: Option<usize>,
}

/// `external_labels` as a map (`{node: a}`) or a list (`["node=a"]`, as the flag takes it).
fn labels_from_map_or_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    /// A value as YAML and TOML write it: `shard: 1` is the label value "1".
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Float(f64),
        Bool(bool),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Labels {
        Map(std::collections::BTreeMap<String, Scalar>),
        List(Vec<String>),
    }
    let text = |v: Scalar| match v {
        Scalar::Text(s) => s,
        Scalar::Integer(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
    };
    Ok(Option::<Labels>::deserialize(d)?.map(|l| match l {
        Labels::Map(m) => m
            .into_iter()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect(),
        Labels::List(l) => l,
    }))
}

/// What happens to a system call outside the allowlist (`seccomp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeccompMode {
    /// It fails with EPERM; the agent logs and counts it.
    Errno,
    /// The kernel kills the agent.
    Kill,
    /// No filter.
    Off,
}

impl SeccompMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Errno => "errno",
            Self::Kill => "kill",
            Self::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_address: SocketAddr,
    /// Enabled collectors, in the order they run.
    pub collectors: Vec<CollectorName>,
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
    pub probe_attach: ProbeAttach,
    pub cgroups: CgroupConfig,
    pub node_name: Option<String>,
    pub machine_id_file: PathBuf,
    pub preflight_dir: Option<PathBuf>,
    pub map_upkeep_interval: Duration,
    pub kernel_bpf_stats: bool,
    pub web_config_file: Option<PathBuf>,
    pub keep_capabilities: bool,
    pub seccomp: SeccompMode,
    /// `None`: push is off.
    pub remote_write: Option<RemoteWriteConfig>,
    pub log_level: tracing::Level,
    pub log_format: LogFormat,
    /// The families' own settings, as each family validated them.
    pub family_settings: FamilySettings,
}

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

    fn validate(s: RemoteWriteSettings) -> Result<Option<Self>, ConfigError> {
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
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: cannot read {path}: {source} (check the --config path)")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config: {path}: {detail} (fix the file; keys are the flag names with '_')")]
    ParseFile { path: PathBuf, detail: String },
    #[error("config: {path}: unknown extension (use .yaml, .yml or .toml)")]
    FileExtension { path: PathBuf },
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
}

fn invalid(field: &'static str, detail: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        detail: detail.into(),
    }
}

/// Parses a `ValueEnum` value, or names the field and lists what it takes.
fn parse_enum<T: ValueEnum>(
    field: &'static str,
    value: &str,
    what: &str,
) -> Result<T, ConfigError> {
    T::from_str(value.trim(), true).map_err(|_| {
        invalid(
            field,
            format!(
                "{value:?} is not {what} (use {})",
                value_names::<T>().join(", ")
            ),
        )
    })
}

/// The names a `ValueEnum` takes, as written on the command line.
fn value_names<T: ValueEnum>() -> Vec<String> {
    T::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
        .collect()
}

impl Settings {
    /// Reads a config file into the same shape the flags have.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_file(path, &text)
    }

    pub fn parse_file(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let parse_err = |detail: String| ConfigError::ParseFile {
            path: path.to_owned(),
            // serde_yaml and toml errors span several lines; the user gets one.
            detail: detail.lines().map(str::trim).collect::<Vec<_>>().join(" "),
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {
                if text.trim().is_empty() {
                    return Ok(Self::default());
                }
                serde_yaml::from_str(text).map_err(|e| parse_err(e.to_string()))
            }
            Some("toml") => toml::from_str(text).map_err(|e| parse_err(e.to_string())),
            _ => Err(ConfigError::FileExtension {
                path: path.to_owned(),
            }),
        }
    }

    /// `self` over `lower`, key by key: a key set here wins, an unset one falls through.
    pub fn over(self, lower: Settings) -> Settings {
        let config = self.config.clone();
        let mut merged = to_value(&lower);
        merge_values(&mut merged, to_value(&self));
        // Both sides came from this type, so the merge deserializes back into it.
        let mut out: Settings = serde_json::from_value(merged).unwrap_or_default();
        out.config = config;
        out
    }
}

fn to_value(s: &Settings) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    strip_nulls(&mut v);
    v
}

fn strip_nulls(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = v {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

fn merge_values(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge_values(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

impl Config {
    /// Merges the flags (and their environment variables) over the file, then checks every
    /// value and fills the defaults.
    pub fn resolve(flags: Settings) -> Result<Self, ConfigError> {
        let file = match &flags.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        Self::validate(flags.over(file))
    }

    fn validate(s: Settings) -> Result<Self, ConfigError> {
        let family_settings = family_settings(&to_value(&s))?;
        let listen = s
            .listen_address
            .unwrap_or_else(|| DEFAULT_LISTEN_ADDRESS.to_owned());
        let listen_address =
            listen_address(&listen).map_err(|why| invalid("listen_address", why))?;
        let collectors = select_collectors(
            s.collectors.enabled.as_deref(),
            s.collectors.disabled.as_deref().unwrap_or_default(),
        )?;
        let probe_attach = match s.probe_attach.as_deref() {
            Some(v) => parse_enum("probe_attach", v, "an attach mode")?,
            None => ProbeAttach::Auto,
        };
        let c = s.cgroups;
        let max_tracked = c.max.unwrap_or(DEFAULT_MAX_CGROUPS);
        if max_tracked == 0 {
            return Err(invalid(
                "cgroups.max",
                "must be at least 1 (the default is 4096)",
            ));
        }
        let cgroups = CgroupConfig {
            root: c.root,
            max_tracked,
            include: pattern("cgroups.include", c.include)?,
            exclude: pattern("cgroups.exclude", c.exclude)?,
            path_label: match c.path_label.as_deref() {
                Some(v) => parse_enum("cgroups.path_label", v, "a path label policy")?,
                None => PathLabel::Auto,
            },
            pod_logs_dir: c.pod_logs_dir.unwrap_or_else(|| "/var/log/pods".into()),
            container_logs_dir: c
                .container_logs_dir
                .unwrap_or_else(|| "/var/log/containers".into()),
        };
        let map_upkeep_interval = match s.map_upkeep_interval.as_deref() {
            Some(v) => duration("map_upkeep_interval", v, Duration::from_millis(100))?,
            None => DEFAULT_MAP_UPKEEP_INTERVAL,
        };
        let level = s.log_level.unwrap_or_else(|| "info".into());
        let log_level = level.parse::<tracing::Level>().map_err(|_| {
            invalid(
                "log_level",
                format!("{level:?} is not a level (use trace, debug, info, warn or error)"),
            )
        })?;
        let log_format = match s.log_format.as_deref() {
            Some(v) => parse_enum("log_format", v, "a format")?,
            None => LogFormat::Text,
        };
        let seccomp = match s.seccomp.as_deref() {
            Some(v) => parse_enum("seccomp", v, "a seccomp mode")?,
            None => SeccompMode::Errno,
        };
        let remote_write = RemoteWriteConfig::validate(s.remote_write)?;
        Ok(Self {
            listen_address,
            collectors,
            procfs: s.procfs.unwrap_or_else(|| "/proc".into()),
            sysfs: s.sysfs.unwrap_or_else(|| "/sys".into()),
            rootfs: s.rootfs.unwrap_or_else(|| "/".into()),
            probe_attach,
            cgroups,
            node_name: s.node_name,
            machine_id_file: s
                .machine_id_file
                .unwrap_or_else(|| "/etc/machine-id".into()),
            preflight_dir: s.preflight_dir,
            map_upkeep_interval,
            kernel_bpf_stats: s.kernel_bpf_stats.unwrap_or(false),
            web_config_file: s.web_config_file,
            keep_capabilities: s.keep_capabilities.unwrap_or(false),
            seccomp,
            remote_write,
            log_level,
            log_format,
            family_settings,
        })
    }

    /// Whether the collector called `name` is enabled.
    pub fn enabled(&self, name: &str) -> bool {
        self.collectors.iter().any(|c| c.name() == name)
    }

    /// Checks that the host paths are usable, so that a wrong mount fails at startup with a
    /// clear message instead of as empty scrapes.
    pub fn check_host_paths(&self) -> Result<(), ConfigError> {
        let stat = self.procfs.join("stat");
        if let Err(e) = std::fs::read(&stat) {
            return Err(invalid(
                "procfs",
                format!(
                    "cannot read {}: {e} (point --procfs at the host's /proc, for example /host/proc)",
                    stat.display()
                ),
            ));
        }
        let block = self.sysfs.join("block");
        if let Err(e) = std::fs::read_dir(&block) {
            return Err(invalid(
                "sysfs",
                format!(
                    "cannot read {}: {e} (point --sysfs at the host's /sys, for example /host/sys)",
                    block.display()
                ),
            ));
        }
        Ok(())
    }
}

/// `--listen-address` as node_exporter users write it: `0.0.0.0:9560`, `[::]:9560`
/// (dual-stack), `:9560` (every interface, like `--web.listen-address=:9100`: IPv6 and
/// IPv4 when the kernel has IPv6, else IPv4), or `host:9560`, resolved once, here, preferring
/// an IPv4 address as Go does.
pub fn listen_address(value: &str) -> Result<SocketAddr, String> {
    use std::net::{Ipv4Addr, Ipv6Addr, ToSocketAddrs as _};
    let example = "for example :9560, 0.0.0.0:9560, [::]:9560 or localhost:9560";
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!("{value:?} has no port ({example})"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{value:?}: {port:?} is not a port ({example})"))?;
    if host.is_empty() {
        let ipv6 = std::path::Path::new("/proc/net/if_inet6").exists();
        return Ok(if ipv6 {
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
        });
    }
    let resolved: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{value:?}: cannot resolve {host:?} ({e}; {example})"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{value:?}: {host:?} resolves to no address ({example})"))
}

/// A duration such as `5s`, `500ms` or `1m`, at least `min`.
pub fn duration(field: &'static str, value: &str, min: Duration) -> Result<Duration, ConfigError> {
    // humantime 2 panics when seconds near u64::MAX meet a nanosecond carry
    // (chronotope/humantime#66, found by fuzzing): no useful duration has a number of more
    // than 9 digits, so refuse those first.
    let longest_number = value
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest_number > 9 || value.len() > 64 {
        return Err(invalid(
            field,
            format!("{value:?} is not a duration (too long; write for example 5s, 500ms or 1m)"),
        ));
    }
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        invalid(
            field,
            format!("{value:?} is not a duration ({e}; write for example 5s, 500ms or 1m)"),
        )
    })?;
    if d < min {
        return Err(invalid(
            field,
            format!(
                "{value:?} is too short (at least {})",
                humantime::format_duration(min)
            ),
        ));
    }
    Ok(d)
}

fn pattern(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<regex::Regex>, ConfigError> {
    value
        .map(|p| {
            regex::Regex::new(&p).map_err(|e| {
                let first = e.to_string().lines().last().unwrap_or("").trim().to_owned();
                invalid(
                    field,
                    format!("{p:?} is not a valid regular expression: {first}"),
                )
            })
        })
        .transpose()
}

/// Every family's own settings, each read and checked by its family.
fn family_settings(merged: &serde_json::Value) -> Result<FamilySettings, ConfigError> {
    let mut settings = FamilySettings::default();
    for family in families::ALL {
        let value = family
            .settings(merged)
            .map_err(|e| invalid(e.field, e.detail))?;
        if let Some(value) = value {
            settings.insert(family.name(), value);
        }
    }
    Ok(settings)
}

fn select_collectors(
    enabled: Option<&[String]>,
    disabled: &[String],
) -> Result<Vec<CollectorName>, ConfigError> {
    let parse = |field: &'static str,
                 names: &[String]|
     -> Result<Vec<CollectorName>, ConfigError> {
        names
            .iter()
            .map(|name| {
                CollectorName::parse(name).ok_or_else(|| {
                    let known: Vec<&str> = CollectorName::all().iter().map(|c| c.name()).collect();
                    invalid(
                        field,
                        format!("unknown collector {name:?} (known: {})", known.join(", ")),
                    )
                })
            })
            .collect()
    };
    let enabled = enabled
        .map(|e| parse("collectors.enabled", e))
        .transpose()?;
    let disabled = parse("collectors.disabled", disabled)?;
    Ok(CollectorName::all()
        .into_iter()
        .filter(|c| enabled.as_ref().is_none_or(|e| e.contains(c)))
        .filter(|c| !disabled.contains(c))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Settings {
        Settings::default()
    }

    fn field_of(err: ConfigError) -> String {
        err.to_string()
    }

    #[test]
    fn defaults_enable_every_collector() {
        let c = Config::resolve(flags()).unwrap();
        assert_eq!(c.listen_address.to_string(), DEFAULT_LISTEN_ADDRESS);
        assert_eq!(c.collectors, CollectorName::all());
        assert_eq!(c.procfs, PathBuf::from("/proc"));
        assert_eq!(c.probe_attach, ProbeAttach::Auto);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn remote_write_from_the_file_and_from_flags() {
        let yaml = "remote_write:\n  url: https://mimir.example/api/v1/push\n  interval: 30s\n  external_labels: {cluster: prod, shard: 1}\n  bearer_token_file: /t\n  queue:\n    max_samples: 5000\n";
        let file = Settings::parse_file(Path::new("n.yaml"), yaml).unwrap();
        let c = Config::validate(flags().over(file)).unwrap();
        let rw = c.remote_write.unwrap();
        assert_eq!(rw.interval, Duration::from_secs(30));
        assert_eq!(rw.max_samples, 5000);
        assert_eq!(
            rw.external_labels,
            [
                ("cluster".into(), "prod".into()),
                ("shard".into(), "1".into())
            ]
        );
        assert!(matches!(rw.auth, RemoteWriteAuth::Bearer { .. }));
        let rw = rw.with_defaults("node-1");
        let names: Vec<&str> = rw.external_labels.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cluster", "instance", "job", "shard"]);
        // Flags take name=value lists, and push stays off without a URL.
        let mut f = flags();
        f.remote_write.url = Some("http://127.0.0.1:9090/api/v1/write".into());
        f.remote_write.external_labels = Some(vec!["node=a".into()]);
        let rw = Config::validate(f).unwrap().remote_write.unwrap();
        assert_eq!(rw.external_labels, [("node".into(), "a".into())]);
        assert!(Config::validate(flags()).unwrap().remote_write.is_none());
    }

    #[test]
    fn remote_write_mistakes_name_the_field() {
        type Case = (&'static str, fn(&mut RemoteWriteSettings), &'static str);
        let cases: [Case; 7] = [
            (
                "remote_write.url",
                |s| s.url = Some("ftp://x/".into()),
                "http or https",
            ),
            (
                "remote_write.url",
                |s| s.url = Some("https://u:p@x/".into()),
                "credentials",
            ),
            (
                "remote_write.external_labels",
                |s| s.external_labels = Some(vec!["a=".into()]),
                "empty",
            ),
            (
                "remote_write.external_labels",
                |s| s.external_labels = Some(vec!["a=1".into(), "a=2".into()]),
                "twice",
            ),
            (
                "remote_write.external_labels",
                |s| s.external_labels = Some(vec!["__x=1".into()]),
                "label name",
            ),
            (
                "remote_write.username",
                |s| s.username = Some("u".into()),
                "password_file",
            ),
            (
                "remote_write.queue.max_samples",
                |s| s.queue.max_samples = Some(10),
                "2000",
            ),
        ];
        for (field, set, why) in cases {
            let mut f = flags();
            f.remote_write.url = Some("http://x:9090/api/v1/write".into());
            set(&mut f.remote_write);
            let msg = field_of(Config::validate(f).unwrap_err());
            assert!(msg.starts_with(field) && msg.contains(why), "{msg}");
        }
    }

    #[test]
    fn listen_addresses_as_node_exporter_users_write_them() {
        assert_eq!(
            listen_address("127.0.0.1:9560").unwrap().to_string(),
            "127.0.0.1:9560"
        );
        assert_eq!(
            listen_address("[::]:9560").unwrap().to_string(),
            "[::]:9560"
        );
        let any = listen_address(":9560").unwrap();
        assert!(any.ip().is_unspecified() && any.port() == 9560, "{any}");
        let local = listen_address("localhost:9560").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 9560, "{local}");
        for bad in [
            "9560",
            ":http",
            "localhost:99999",
            "no-such-host.invalid:9560",
        ] {
            assert!(listen_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_listen_address_names_the_field() {
        let f = Settings {
            listen_address: Some("nonsense".into()),
            ..flags()
        };
        let msg = field_of(Config::resolve(f).unwrap_err());
        assert!(msg.starts_with("listen_address: \"nonsense\""), "{msg}");
    }

    #[test]
    fn unknown_collector_names_the_field_and_lists_known_ones() {
        let mut f = flags();
        f.collectors.disabled = Some(vec!["cpuu".into()]);
        let msg = field_of(Config::resolve(f).unwrap_err());
        assert!(
            msg.starts_with("collectors.disabled: unknown collector \"cpuu\""),
            "{msg}"
        );
        assert!(msg.contains("meminfo"), "{msg}");
    }

    #[test]
    fn enabled_then_disabled() {
        let mut f = flags();
        f.collectors.enabled = Some(vec!["cpu".into(), "meminfo".into(), "sched".into()]);
        f.collectors.disabled = Some(vec!["meminfo".into()]);
        let names: Vec<&str> = Config::resolve(f)
            .unwrap()
            .collectors
            .iter()
            .map(|c| c.name())
            .collect();
        assert_eq!(names, ["cpu", "sched"]);
    }

    #[test]
    fn bad_log_level_and_format_name_their_fields() {
        let f = Settings {
            log_level: Some("loud".into()),
            ..flags()
        };
        assert!(field_of(Config::resolve(f).unwrap_err()).starts_with("log_level: "));
        let f = Settings {
            log_format: Some("xml".into()),
            ..flags()
        };
        let msg = field_of(Config::resolve(f).unwrap_err());
        assert!(msg.starts_with("log_format: "), "{msg}");
        assert!(msg.contains("text, json"), "{msg}");
        let f = Settings {
            probe_attach: Some("kprobe".into()),
            ..flags()
        };
        let msg = field_of(Config::resolve(f).unwrap_err());
        assert!(msg.starts_with("probe_attach: "), "{msg}");
        assert!(msg.contains("auto, tp_btf, tracepoint"), "{msg}");
        let f = Settings {
            probe_attach: Some("tp_btf".into()),
            ..flags()
        };
        assert_eq!(
            Config::resolve(f).unwrap().probe_attach,
            ProbeAttach::BtfOnly
        );
    }

    #[test]
    fn durations_are_checked() {
        let c = Config::resolve(flags()).unwrap();
        assert_eq!(c.map_upkeep_interval, DEFAULT_MAP_UPKEEP_INTERVAL);
        let f = Settings {
            map_upkeep_interval: Some("1500ms".into()),
            ..flags()
        };
        assert_eq!(
            Config::resolve(f).unwrap().map_upkeep_interval,
            Duration::from_millis(1500)
        );
        for bad in ["often", "1ns", "-1s"] {
            let f = Settings {
                map_upkeep_interval: Some(bad.into()),
                ..flags()
            };
            let msg = field_of(Config::resolve(f).unwrap_err());
            assert!(msg.starts_with("map_upkeep_interval: "), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn cgroup_settings_are_checked() {
        let c = Config::resolve(flags()).unwrap();
        assert_eq!(c.cgroups.max_tracked, DEFAULT_MAX_CGROUPS);
        assert_eq!(c.cgroups.pod_logs_dir, PathBuf::from("/var/log/pods"));
        let mut f = flags();
        f.cgroups.exclude = Some("system\\.slice/(".into());
        let msg = field_of(Config::resolve(f).unwrap_err());
        assert!(msg.starts_with("cgroups.exclude: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let mut f = flags();
        f.cgroups.max = Some(0);
        assert!(field_of(Config::resolve(f).unwrap_err()).starts_with("cgroups.max: "));
        let yaml = "cgroups:\n  max: 10\n  include: '^kubepods'\n";
        let file = Settings::parse_file(Path::new("c.yaml"), yaml).unwrap();
        assert_eq!(file.cgroups.max, Some(10));
    }

    #[test]
    fn cgroup_series_default_all_and_mistakes() {
        use crate::ebpf::families::cgroup::{CgroupSeries::*, CgroupSettings, NAME};
        let chosen = |c: Config| {
            c.family_settings
                .get::<CgroupSettings>(NAME)
                .expect("the cgroup family's settings")
                .series
                .clone()
        };
        let series = |names: &[&str]| {
            let mut f = flags();
            f.cgroups.series = Some(names.iter().map(|n| n.to_string()).collect());
            Config::resolve(f).map(chosen)
        };
        assert_eq!(
            chosen(Config::resolve(flags()).unwrap()),
            [Cpu, RunqueueWait, ReclaimStall]
        );
        assert_eq!(
            series(&["all"]).unwrap(),
            [Cpu, RunqueueWait, ContextSwitches, ReclaimStall]
        );
        // Catalog order, each once, whatever the order given.
        assert_eq!(
            series(&["context_switches", " cpu", "cpu"]).unwrap(),
            [Cpu, ContextSwitches]
        );
        let msg = field_of(series(&["cpu", "switches"]).unwrap_err());
        assert!(
            msg.starts_with("cgroups.series: \"switches\" is not"),
            "{msg}"
        );
        assert!(msg.contains("context_switches"), "{msg}");
        let msg = field_of(series(&[]).unwrap_err());
        assert!(msg.starts_with("cgroups.series: names no series"), "{msg}");
        let yaml = "cgroups:\n  series: [cpu, context_switches]\n";
        let file = Settings::parse_file(Path::new("c.yaml"), yaml).unwrap();
        assert_eq!(
            chosen(Config::validate(file).unwrap()),
            [Cpu, ContextSwitches]
        );
    }

    #[test]
    fn yaml_and_toml_files_and_flag_precedence() {
        let yaml = "listen_address: 127.0.0.1:9999\ncollectors:\n  disabled: [filesystem]\nlog_format: json\ncgroups:\n  max: 7\n";
        let file = Settings::parse_file(Path::new("c.yaml"), yaml).unwrap();
        assert_eq!(file.listen_address.as_deref(), Some("127.0.0.1:9999"));
        let toml = "procfs = \"/host/proc\"\n[collectors]\nenabled = [\"cpu\"]\n";
        let file = Settings::parse_file(Path::new("c.toml"), toml).unwrap();
        assert_eq!(file.procfs, Some(PathBuf::from("/host/proc")));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodelens.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut f = Settings {
            config: Some(path),
            listen_address: Some("127.0.0.1:1234".into()),
            ..flags()
        };
        f.cgroups.include = Some("^kubepods".into());
        let c = Config::resolve(f).unwrap();
        assert_eq!(c.listen_address.port(), 1234, "flag beats file");
        assert_eq!(c.log_format, LogFormat::Json, "file beats default");
        assert!(!c.enabled("filesystem"));
        assert_eq!(
            c.cgroups.max_tracked, 7,
            "nested file keys survive the merge"
        );
        assert!(c.cgroups.include.is_some(), "nested flags too");
    }

    #[test]
    fn kernel_bpf_stats_is_off_unless_asked() {
        assert!(!Config::resolve(flags()).unwrap().kernel_bpf_stats);
        let cli = Cli::try_parse_from(["nodelens", "--kernel-bpf-stats"]).unwrap();
        assert!(Config::resolve(cli.settings).unwrap().kernel_bpf_stats);
        let cli = Cli::try_parse_from(["nodelens", "--kernel-bpf-stats=false"]).unwrap();
        assert!(!Config::resolve(cli.settings).unwrap().kernel_bpf_stats);
        let file = Settings::parse_file(Path::new("c.yaml"), "kernel_bpf_stats: true\n").unwrap();
        assert_eq!(file.kernel_bpf_stats, Some(true));
    }

    #[test]
    fn flags_parse_into_the_same_shape_as_the_file() {
        let cli = Cli::try_parse_from([
            "nodelens",
            "--max-cgroups",
            "9",
            "--collectors-disabled",
            "cpu,block",
            "preflight",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.settings.cgroups.max, Some(9));
        let c = Config::resolve(cli.settings).unwrap();
        assert!(!c.enabled("cpu") && !c.enabled("disk"));
    }

    #[test]
    fn malformed_files_are_one_line_errors_naming_the_file() {
        let err =
            Settings::parse_file(Path::new("/etc/n.yaml"), "listen_address: [1, 2\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("config: /etc/n.yaml: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let err = Settings::parse_file(Path::new("n.toml"), "listen_adress = \"x\"").unwrap_err();
        assert!(err.to_string().contains("listen_adress"), "{err}");
        let err = Settings::parse_file(Path::new("n.yaml"), "cgroups:\n  maxx: 3\n").unwrap_err();
        assert!(err.to_string().contains("maxx"), "{err}");
        let err = Settings::parse_file(Path::new("n.json"), "{}").unwrap_err();
        assert!(err.to_string().contains("unknown extension"), "{err}");
    }

    #[test]
    fn unreadable_procfs_root_names_the_field() {
        let f = Settings {
            procfs: Some("/nonexistent/proc".into()),
            ..flags()
        };
        let err = Config::resolve(f).unwrap().check_host_paths().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("procfs: cannot read /nonexistent/proc/stat")
        );
    }
}
