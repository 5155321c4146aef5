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
    /// Address and port to serve on [default: 0.0.0.0:9560].
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
    /// How often the agent keeps its kernel maps, whether or not anyone scrapes: sweeps
    /// stale entries, deletes those of gone cgroups, refreshes fill levels [default: 5s].
    #[arg(long, env = "NODELENS_MAP_UPKEEP_INTERVAL", global = true)]
    pub map_upkeep_interval: Option<String>,
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
    /// The kubelet's pod log directory, for pod names [default: /var/log/pods].
    #[arg(long, env = "NODELENS_POD_LOGS_DIR", global = true)]
    pub pod_logs_dir: Option<PathBuf>,
    /// The kubelet's container log links, for container names [default: /var/log/containers].
    #[arg(long, env = "NODELENS_CONTAINER_LOGS_DIR", global = true)]
    pub container_logs_dir: Option<PathBuf>,
}

/// A collector, by the name `--collectors-enabled` and `--collectors-disabled` take. The
/// order here is the order they run in a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectorName {
    Cpu,
    Stat,
    Meminfo,
    Loadavg,
    Pressure,
    Vmstat,
    Uname,
    Diskstats,
    Filesystem,
    /// eBPF: run-queue latency and context switches.
    Sched,
    /// eBPF: block I/O latency and size (`block` is accepted as its former name).
    #[value(alias = "block")]
    Disk,
    /// eBPF: reclaim stalls and OOM kills.
    Memory,
    /// eBPF: per-cgroup (per-pod) accounting.
    Cgroup,
    /// The probes' own cost and map health.
    Bpf,
    Process,
}

impl CollectorName {
    /// The name users write; a test checks that clap parses each one back.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Stat => "stat",
            Self::Meminfo => "meminfo",
            Self::Loadavg => "loadavg",
            Self::Pressure => "pressure",
            Self::Vmstat => "vmstat",
            Self::Uname => "uname",
            Self::Diskstats => "diskstats",
            Self::Filesystem => "filesystem",
            Self::Sched => "sched",
            Self::Disk => "disk",
            Self::Memory => "memory",
            Self::Cgroup => "cgroup",
            Self::Bpf => "bpf",
            Self::Process => "process",
        }
    }

    pub fn all() -> &'static [CollectorName] {
        Self::value_variants()
    }
}

/// Whether per-cgroup series carry the cgroup path (`cgroups.path_label`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PathLabel {
    /// Only where namespace, pod and container do not identify the cgroup.
    Auto,
    Always,
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

/// Which attach types the loader may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeAttach {
    /// Prefer `tp_btf`, fall back to classic tracepoints.
    Auto,
    #[value(name = "tp_btf")]
    BtfOnly,
    #[value(name = "tracepoint")]
    TracepointOnly,
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
    pub log_level: tracing::Level,
    pub log_format: LogFormat,
}

/// Per-cgroup attribution settings.
#[derive(Debug, Clone)]
pub struct CgroupConfig {
    /// `None`: find the cgroup2 mount in /proc/self/mountinfo.
    pub root: Option<PathBuf>,
    pub max_tracked: usize,
    pub include: Option<regex::Regex>,
    pub exclude: Option<regex::Regex>,
    pub path_label: PathLabel,
    pub pod_logs_dir: PathBuf,
    pub container_logs_dir: PathBuf,
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
        let known: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        invalid(
            field,
            format!("{value:?} is not {what} (use {})", known.join(", ")),
        )
    })
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
        let listen = s
            .listen_address
            .unwrap_or_else(|| DEFAULT_LISTEN_ADDRESS.to_owned());
        let listen_address = listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "listen_address",
                format!(
                    "{listen:?} is not an address:port (for example 0.0.0.0:9560 or [::]:9560)"
                ),
            )
        })?;
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
            log_level,
            log_format,
        })
    }

    pub fn enabled(&self, collector: CollectorName) -> bool {
        self.collectors.contains(&collector)
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
                CollectorName::from_str(name.trim(), false).map_err(|_| {
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
        .iter()
        .copied()
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
    fn collector_names_are_the_documented_ones() {
        let names: Vec<&str> = CollectorName::all().iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "cpu",
                "stat",
                "meminfo",
                "loadavg",
                "pressure",
                "vmstat",
                "uname",
                "diskstats",
                "filesystem",
                "sched",
                "disk",
                "memory",
                "cgroup",
                "bpf",
                "process"
            ]
        );
        for c in CollectorName::all() {
            assert_eq!(CollectorName::from_str(c.name(), false), Ok(*c));
        }
        assert_eq!(
            CollectorName::from_str("block", false),
            Ok(CollectorName::Disk)
        );
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
        assert_eq!(
            Config::resolve(f).unwrap().collectors,
            [CollectorName::Cpu, CollectorName::Sched]
        );
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
        assert!(!c.enabled(CollectorName::Filesystem));
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
        assert!(!c.enabled(CollectorName::Cpu) && !c.enabled(CollectorName::Disk));
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
