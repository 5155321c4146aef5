//! Configuration: flags, `NODELENS_*` environment variables and an optional YAML or TOML
//! file, in that order of precedence, then the built-in defaults.
//!
//! Every error names the field that is wrong and how to fix it; `main` prints it on one
//! line and exits with code 2.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::collectors::COLLECTOR_NAMES;

pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:9560";

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
    pub flags: Flags,
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
        /// Write one scrape of /metrics here during --exercise.
        #[arg(long, requires = "exercise")]
        metrics_out: Option<PathBuf>,
    },
}

/// Flags that override the config file. All are optional here so that the file and the
/// defaults can fill what is not given.
#[derive(Debug, Args, Default)]
pub struct Flags {
    /// Config file, YAML (.yaml/.yml) or TOML (.toml). Keys are the flag names with `_`.
    #[arg(long, env = "NODELENS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address and port to serve on [default: 0.0.0.0:9560].
    #[arg(long, env = "NODELENS_LISTEN_ADDRESS", global = true)]
    pub listen_address: Option<String>,
    /// Only run these collectors (comma-separated) [default: all].
    #[arg(
        long,
        env = "NODELENS_COLLECTORS_ENABLED",
        value_delimiter = ',',
        global = true
    )]
    pub collectors_enabled: Option<Vec<String>>,
    /// Never run these collectors (comma-separated); applied after --collectors-enabled.
    #[arg(
        long,
        env = "NODELENS_COLLECTORS_DISABLED",
        value_delimiter = ',',
        global = true
    )]
    pub collectors_disabled: Option<Vec<String>>,
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
    /// The cgroup2 mount [default: found in /proc/self/mountinfo].
    #[arg(long, env = "NODELENS_CGROUP_ROOT", global = true)]
    pub cgroup_root: Option<PathBuf>,
    /// Most cgroups exported one by one; the rest fold into cgroup="other" [default: 4096].
    #[arg(long, env = "NODELENS_MAX_CGROUPS", global = true)]
    pub max_cgroups: Option<usize>,
    /// Only export cgroups whose path (relative to the cgroup2 root) matches this regex.
    #[arg(long, env = "NODELENS_CGROUP_INCLUDE", global = true)]
    pub cgroup_include: Option<String>,
    /// Never export cgroups whose path matches this regex (applied after the include).
    #[arg(long, env = "NODELENS_CGROUP_EXCLUDE", global = true)]
    pub cgroup_exclude: Option<String>,
    /// The kubelet's pod log directory, for pod names [default: /var/log/pods].
    #[arg(long, env = "NODELENS_POD_LOGS_DIR", global = true)]
    pub pod_logs_dir: Option<PathBuf>,
    /// The kubelet's container log links, for container names [default: /var/log/containers].
    #[arg(long, env = "NODELENS_CONTAINER_LOGS_DIR", global = true)]
    pub container_logs_dir: Option<PathBuf>,
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
    /// trace, debug, info, warn or error [default: info].
    #[arg(long, env = "NODELENS_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
    /// text or json [default: text].
    #[arg(long, env = "NODELENS_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
}

/// The config file's shape. Unknown keys are errors, so that a typo never goes unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen_address: Option<String>,
    pub collectors: Option<FileCollectors>,
    pub procfs: Option<PathBuf>,
    pub sysfs: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    pub probe_attach: Option<String>,
    pub cgroups: Option<FileCgroups>,
    pub node_name: Option<String>,
    pub machine_id_file: Option<PathBuf>,
    pub preflight_dir: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCgroups {
    pub root: Option<PathBuf>,
    pub max: Option<usize>,
    pub include: Option<String>,
    pub exclude: Option<String>,
    pub pod_logs_dir: Option<PathBuf>,
    pub container_logs_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCollectors {
    pub enabled: Option<Vec<String>>,
    pub disabled: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which attach types the loader may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAttach {
    /// Prefer `tp_btf`, fall back to classic tracepoints.
    Auto,
    BtfOnly,
    TracepointOnly,
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_address: SocketAddr,
    /// Enabled collectors, in the order they run.
    pub collectors: Vec<&'static str>,
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
    pub probe_attach: ProbeAttach,
    pub cgroups: CgroupConfig,
    pub node_name: Option<String>,
    pub machine_id_file: PathBuf,
    pub preflight_dir: Option<PathBuf>,
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
    pub pod_logs_dir: PathBuf,
    pub container_logs_dir: PathBuf,
}

pub const DEFAULT_MAX_CGROUPS: usize = 4096;

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

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
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
}

impl Config {
    /// Merges flags (and their environment variables) over the file over the defaults.
    pub fn resolve(flags: Flags) -> Result<Self, ConfigError> {
        let file = match &flags.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let file_collectors = file.collectors.unwrap_or_default();

        let listen = flags
            .listen_address
            .or(file.listen_address)
            .unwrap_or_else(|| DEFAULT_LISTEN_ADDRESS.to_owned());
        let listen_address = listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "listen_address",
                format!(
                    "{listen:?} is not an address:port (for example 0.0.0.0:9560 or [::]:9560)"
                ),
            )
        })?;

        let enabled = flags.collectors_enabled.or(file_collectors.enabled);
        let disabled = flags
            .collectors_disabled
            .or(file_collectors.disabled)
            .unwrap_or_default();
        let collectors = select_collectors(enabled.as_deref(), &disabled)?;

        let probe_attach = match flags
            .probe_attach
            .or(file.probe_attach)
            .as_deref()
            .unwrap_or("auto")
        {
            "auto" => ProbeAttach::Auto,
            "tp_btf" => ProbeAttach::BtfOnly,
            "tracepoint" => ProbeAttach::TracepointOnly,
            other => {
                return Err(invalid(
                    "probe_attach",
                    format!("{other:?} is not an attach mode (use auto, tp_btf or tracepoint)"),
                ));
            }
        };

        let file_cgroups = file.cgroups.unwrap_or_default();
        let pattern = |field: &'static str,
                       value: Option<String>|
         -> Result<Option<regex::Regex>, ConfigError> {
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
        };
        let max_tracked = flags
            .max_cgroups
            .or(file_cgroups.max)
            .unwrap_or(DEFAULT_MAX_CGROUPS);
        if max_tracked == 0 {
            return Err(invalid(
                "cgroups.max",
                "must be at least 1 (the default is 4096)",
            ));
        }
        let cgroups = CgroupConfig {
            root: flags.cgroup_root.or(file_cgroups.root),
            max_tracked,
            include: pattern(
                "cgroups.include",
                flags.cgroup_include.or(file_cgroups.include),
            )?,
            exclude: pattern(
                "cgroups.exclude",
                flags.cgroup_exclude.or(file_cgroups.exclude),
            )?,
            pod_logs_dir: flags
                .pod_logs_dir
                .or(file_cgroups.pod_logs_dir)
                .unwrap_or_else(|| "/var/log/pods".into()),
            container_logs_dir: flags
                .container_logs_dir
                .or(file_cgroups.container_logs_dir)
                .unwrap_or_else(|| "/var/log/containers".into()),
        };

        let level = flags
            .log_level
            .or(file.log_level)
            .unwrap_or_else(|| "info".into());
        let log_level = level.parse::<tracing::Level>().map_err(|_| {
            invalid(
                "log_level",
                format!("{level:?} is not a level (use trace, debug, info, warn or error)"),
            )
        })?;

        let format = flags
            .log_format
            .or(file.log_format)
            .unwrap_or_else(|| "text".into());
        let log_format = LogFormat::from_str(&format, true).map_err(|_| {
            invalid(
                "log_format",
                format!("{format:?} is not a format (use text or json)"),
            )
        })?;

        Ok(Self {
            listen_address,
            collectors,
            procfs: flags
                .procfs
                .or(file.procfs)
                .unwrap_or_else(|| "/proc".into()),
            sysfs: flags.sysfs.or(file.sysfs).unwrap_or_else(|| "/sys".into()),
            rootfs: flags.rootfs.or(file.rootfs).unwrap_or_else(|| "/".into()),
            probe_attach,
            cgroups,
            node_name: flags.node_name.or(file.node_name),
            machine_id_file: flags
                .machine_id_file
                .or(file.machine_id_file)
                .unwrap_or_else(|| "/etc/machine-id".into()),
            preflight_dir: flags.preflight_dir.or(file.preflight_dir),
            log_level,
            log_format,
        })
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

fn select_collectors(
    enabled: Option<&[String]>,
    disabled: &[String],
) -> Result<Vec<&'static str>, ConfigError> {
    let check = |field: &'static str, names: &[String]| -> Result<(), ConfigError> {
        for name in names {
            if !COLLECTOR_NAMES.contains(&name.trim()) {
                return Err(invalid(
                    field,
                    format!(
                        "unknown collector {name:?} (known: {})",
                        COLLECTOR_NAMES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    };
    if let Some(enabled) = enabled {
        check("collectors.enabled", enabled)?;
    }
    check("collectors.disabled", disabled)?;
    Ok(COLLECTOR_NAMES
        .iter()
        .copied()
        .filter(|c| enabled.is_none_or(|e| e.iter().any(|n| n.trim() == *c)))
        .filter(|c| !disabled.iter().any(|n| n.trim() == *c))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Flags {
        Flags::default()
    }

    fn field_of(err: ConfigError) -> String {
        err.to_string()
    }

    #[test]
    fn defaults_enable_every_collector() {
        let c = Config::resolve(flags()).unwrap();
        assert_eq!(c.listen_address.to_string(), DEFAULT_LISTEN_ADDRESS);
        assert_eq!(c.collectors, COLLECTOR_NAMES);
        assert_eq!(c.procfs, PathBuf::from("/proc"));
        assert_eq!(c.probe_attach, ProbeAttach::Auto);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn bad_listen_address_names_the_field() {
        let f = Flags {
            listen_address: Some("nonsense".into()),
            ..flags()
        };
        let msg = field_of(Config::resolve(f).unwrap_err());
        assert!(msg.starts_with("listen_address: \"nonsense\""), "{msg}");
    }

    #[test]
    fn unknown_collector_names_the_field_and_lists_known_ones() {
        let f = Flags {
            collectors_disabled: Some(vec!["cpuu".into()]),
            ..flags()
        };
        let msg = field_of(Config::resolve(f).unwrap_err());
        assert!(
            msg.starts_with("collectors.disabled: unknown collector \"cpuu\""),
            "{msg}"
        );
        assert!(msg.contains("meminfo"), "{msg}");
    }

    #[test]
    fn enabled_then_disabled() {
        let f = Flags {
            collectors_enabled: Some(vec!["cpu".into(), "meminfo".into(), "sched".into()]),
            collectors_disabled: Some(vec!["meminfo".into()]),
            ..flags()
        };
        assert_eq!(Config::resolve(f).unwrap().collectors, ["cpu", "sched"]);
    }

    #[test]
    fn bad_log_level_and_format_name_their_fields() {
        let f = Flags {
            log_level: Some("loud".into()),
            ..flags()
        };
        assert!(field_of(Config::resolve(f).unwrap_err()).starts_with("log_level: "));
        let f = Flags {
            log_format: Some("xml".into()),
            ..flags()
        };
        assert!(field_of(Config::resolve(f).unwrap_err()).starts_with("log_format: "));
        let f = Flags {
            probe_attach: Some("kprobe".into()),
            ..flags()
        };
        assert!(field_of(Config::resolve(f).unwrap_err()).starts_with("probe_attach: "));
    }

    #[test]
    fn cgroup_settings_are_checked() {
        let c = Config::resolve(flags()).unwrap();
        assert_eq!(c.cgroups.max_tracked, DEFAULT_MAX_CGROUPS);
        assert_eq!(c.cgroups.pod_logs_dir, PathBuf::from("/var/log/pods"));
        let f = Flags {
            cgroup_exclude: Some("system\\.slice/(".into()),
            ..flags()
        };
        let msg = field_of(Config::resolve(f).unwrap_err());
        assert!(msg.starts_with("cgroups.exclude: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let f = Flags {
            max_cgroups: Some(0),
            ..flags()
        };
        assert!(field_of(Config::resolve(f).unwrap_err()).starts_with("cgroups.max: "));
        let yaml = "cgroups:\n  max: 10\n  include: '^kubepods'\n";
        let file = FileConfig::parse(Path::new("c.yaml"), yaml).unwrap();
        assert_eq!(file.cgroups.unwrap().max, Some(10));
    }

    #[test]
    fn yaml_and_toml_files_and_flag_precedence() {
        let yaml = "listen_address: 127.0.0.1:9999\ncollectors:\n  disabled: [filesystem]\nlog_format: json\n";
        let file = FileConfig::parse(Path::new("c.yaml"), yaml).unwrap();
        assert_eq!(file.listen_address.as_deref(), Some("127.0.0.1:9999"));
        let toml = "procfs = \"/host/proc\"\n[collectors]\nenabled = [\"cpu\"]\n";
        let file = FileConfig::parse(Path::new("c.toml"), toml).unwrap();
        assert_eq!(file.procfs, Some(PathBuf::from("/host/proc")));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodelens.yaml");
        std::fs::write(&path, yaml).unwrap();
        let f = Flags {
            config: Some(path),
            listen_address: Some("127.0.0.1:1234".into()),
            ..flags()
        };
        let c = Config::resolve(f).unwrap();
        assert_eq!(c.listen_address.port(), 1234, "flag beats file");
        assert_eq!(c.log_format, LogFormat::Json, "file beats default");
        assert!(!c.collectors.contains(&"filesystem"));
    }

    #[test]
    fn malformed_files_are_one_line_errors_naming_the_file() {
        let err =
            FileConfig::parse(Path::new("/etc/n.yaml"), "listen_address: [1, 2\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("config: /etc/n.yaml: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let err = FileConfig::parse(Path::new("n.toml"), "listen_adress = \"x\"").unwrap_err();
        assert!(err.to_string().contains("listen_adress"), "{err}");
        let err = FileConfig::parse(Path::new("n.json"), "{}").unwrap_err();
        assert!(err.to_string().contains("unknown extension"), "{err}");
    }

    #[test]
    fn unreadable_procfs_root_names_the_field() {
        let f = Flags {
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
