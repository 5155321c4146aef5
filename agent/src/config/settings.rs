//! Every setting of the agent's own, declared once: its clap attributes make it a flag with
//! an environment variable, and its serde shape is the file's. The probe families declare
//! theirs in their modules (`Family::flags`); `layers` adds them to the command line and
//! the file. Values stay raw here (see the parent module for their validation).
//!
//! The structs do not deny unknown fields: the file's reader collects the keys they leave
//! out, takes the families' keys among them, and refuses the rest with a list of the keys
//! the section knows (see `layers`).
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

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
        /// Exports every per-cgroup series, whatever --cgroup-series says.
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
/// this one declaration (the families' beside it, in `family_keys`). Values stay raw here; [`Config::resolve`] checks them, so that a
/// bad value from any source gets the same one-line error naming the file key.
#[derive(Debug, Default, Args, Serialize, Deserialize)]
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
    /// In a protobuf scrape, serve the histograms that also have a native version (the
    /// node's run-queue, disk and reclaim stall latency) with their classic buckets beside it. Off: native only
    /// there, for a Prometheus that scrapes no classic histograms; text scrapes keep the
    /// classic buckets [default: true].
    #[arg(long, env = "NODELENS_PROTOBUF_CLASSIC_HISTOGRAMS", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub protobuf_classic_histograms: Option<bool>,
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
    /// The probe families' own settings ([`crate::ebpf::family::Family::flags`]), nested
    /// under their file keys as the file writes them: from their flags, or from the file.
    #[arg(skip)]
    #[serde(skip)]
    pub family_keys: serde_json::Map<String, serde_json::Value>,
}

/// `collectors.*` in the file.
#[derive(Debug, Default, Args, Serialize, Deserialize)]
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
    /// Which per-cgroup series to export (comma-separated), or all. The probe families
    /// name their series (`Family::cgroup_series`); `--help` lists them all, with the
    /// defaults (see `layers::command`).
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
    /// Also send native histograms (remote_write 1.0's `TimeSeries.histograms`): the
    /// run-queue and disk latency per node and per pod, the reclaim stalls per node. Only for receivers that take them
    /// (Prometheus with native histograms on, Mimir, VictoriaMetrics); others refuse them
    /// [default: false].
    #[arg(
        id = "remote_write_native_histograms",
        long = "remote-write-native-histograms",
        env = "NODELENS_REMOTE_WRITE_NATIVE_HISTOGRAMS",
        global = true,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub native_histograms: Option<bool>,
    #[command(flatten)]
    #[serde(default)]
    pub queue: RemoteWriteQueueSettings,
}

/// `remote_write.queue.*` in the file.
#[derive(Debug, Default, Args, Serialize, Deserialize)]
pub struct RemoteWriteQueueSettings {
    /// Most samples kept while the receiver is unreachable; past it the oldest are dropped
    /// and counted [default: 250000, about 8 MiB].
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
