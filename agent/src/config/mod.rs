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
//!
//! The parts: [`settings`] declares every setting (flags, variables, file keys), `layers`
//! reads the file and merges it under the flags, this module validates the result into
//! [`Config`], and `remote_write` validates the push section.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::ValueEnum;

mod layers;
mod remote_write;
mod settings;
mod values;

use crate::ebpf::{
    families,
    family::{FamilySettings, cgroup_series_given},
};
pub use crate::{
    cgroups::settings::{CgroupConfig, PathLabel},
    collectors::CollectorName,
    ebpf::loader::ProbeAttach,
};
use layers::to_value;
pub use remote_write::{
    DEFAULT_REMOTE_WRITE_INTERVAL, DEFAULT_REMOTE_WRITE_MAX_SAMPLES, DEFAULT_REMOTE_WRITE_TIMEOUT,
    RemoteWriteAuth, RemoteWriteConfig,
};
pub use settings::{
    CgroupSettings, Cli, CollectorSettings, Command, RemoteWriteQueueSettings, RemoteWriteSettings,
    Settings,
};
pub use values::{ConfigError, duration};
use values::{invalid, parse_enum};

pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:9560";
pub const DEFAULT_MAX_CGROUPS: usize = 4096;
pub const DEFAULT_MAP_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

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
    /// Classic buckets beside native ones in a protobuf scrape.
    pub protobuf_classic_histograms: bool,
    pub keep_capabilities: bool,
    pub seccomp: SeccompMode,
    /// `None`: push is off.
    pub remote_write: Option<RemoteWriteConfig>,
    pub log_level: tracing::Level,
    pub log_format: LogFormat,
    /// The families' own settings, as each family validated them.
    pub family_settings: FamilySettings,
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
            protobuf_classic_histograms: s.protobuf_classic_histograms.unwrap_or(true),
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
    check_cgroup_series(merged)?;
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

/// `cgroups.series`: a list of the families' per-cgroup series names, `all` or `default`,
/// naming at least one. Each family then picks its own (`family::chosen_cgroup_series`).
fn check_cgroup_series(merged: &serde_json::Value) -> Result<(), ConfigError> {
    let field = "cgroups.series";
    if let Some(value) = merged.pointer("/cgroups/series")
        && !value.is_array()
    {
        return Err(invalid(
            field,
            format!("{value} is not a list of series names"),
        ));
    }
    let Some(names) = cgroup_series_given(merged) else {
        return Ok(());
    };
    let known = layers::cgroup_series_names();
    for name in &names {
        if name != "all" && name != "default" && !known.iter().any(|s| s.name == name) {
            let list: Vec<&str> = known.iter().map(|s| s.name).collect();
            return Err(invalid(
                field,
                format!(
                    "{name:?} is not a per-cgroup series (use {}, all, or default)",
                    list.join(", ")
                ),
            ));
        }
    }
    if names.is_empty() {
        return Err(invalid(
            field,
            "names no series (to export none, turn the cgroup collector off)",
        ));
    }
    Ok(())
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
    use std::path::Path;

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
        use crate::ebpf::families::cgroup::{CgroupFamilySettings, CgroupSeries::*, NAME};
        let chosen = |c: Config| {
            c.family_settings
                .get::<CgroupFamilySettings>(NAME)
                .expect("the cgroup family's settings")
                .series
                .clone()
        };
        let series = |names: &[&str]| {
            let args = [
                "nodelens".to_owned(),
                format!("--cgroup-series={}", names.join(",")),
            ];
            let cli = Cli::from_command_line(args).unwrap();
            Config::resolve(cli.settings).map(chosen)
        };
        assert_eq!(
            chosen(Config::resolve(flags()).unwrap()),
            [Cpu, RunqueueWait]
        );
        assert_eq!(
            series(&["all"]).unwrap(),
            [Cpu, RunqueueWait, ContextSwitches, ReclaimStall, Blocked]
        );
        // `default` is the defaults, and adds to them.
        assert_eq!(
            series(&["default"]).unwrap(),
            chosen(Config::resolve(flags()).unwrap())
        );
        assert_eq!(
            series(&["blocked", "default"]).unwrap(),
            [Cpu, RunqueueWait, Blocked]
        );
        // Another family's name is valid, and none of this family's.
        assert_eq!(series(&["io_pressure"]).unwrap(), []);
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
        let msg = field_of(series(&[""]).unwrap_err());
        assert!(msg.starts_with("cgroups.series: \"\" is not"), "{msg}");
        let file = Settings::parse_file(Path::new("c.yaml"), "cgroups:\n  series: []\n").unwrap();
        let msg = field_of(Config::validate(file).unwrap_err());
        assert!(msg.starts_with("cgroups.series: names no series"), "{msg}");
        let yaml = "cgroups:\n  series: [cpu, context_switches]\n  max: 3\n";
        let file = Settings::parse_file(Path::new("c.yaml"), yaml).unwrap();
        assert_eq!(
            file.cgroups.max,
            Some(3),
            "the agent's keys beside a family's"
        );
        assert_eq!(
            chosen(Config::validate(file).unwrap()),
            [Cpu, ContextSwitches]
        );
        let toml = "[cgroups]\nseries = [\"context_switches\"]\n";
        let file = Settings::parse_file(Path::new("c.toml"), toml).unwrap();
        assert_eq!(chosen(Config::validate(file).unwrap()), [ContextSwitches]);
        // The flag over the file, as for the agent's own keys.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodelens.yaml");
        std::fs::write(&path, yaml).unwrap();
        let cli = Cli::from_command_line([
            "nodelens".to_owned(),
            format!("--config={}", path.display()),
            "--cgroup-series=cpu".to_owned(),
        ])
        .unwrap();
        assert_eq!(chosen(Config::resolve(cli.settings).unwrap()), [Cpu]);
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
    fn protobuf_classic_histograms_are_on_unless_turned_off() {
        assert!(
            Config::resolve(flags())
                .unwrap()
                .protobuf_classic_histograms
        );
        let cli =
            Cli::from_command_line(["nodelens", "--protobuf-classic-histograms=false"]).unwrap();
        assert!(
            !Config::resolve(cli.settings)
                .unwrap()
                .protobuf_classic_histograms
        );
        let file =
            Settings::parse_file(Path::new("c.toml"), "protobuf_classic_histograms = false\n")
                .unwrap();
        assert!(!Config::resolve(file).unwrap().protobuf_classic_histograms);
    }

    #[test]
    fn kernel_bpf_stats_is_off_unless_asked() {
        assert!(!Config::resolve(flags()).unwrap().kernel_bpf_stats);
        let cli = Cli::from_command_line(["nodelens", "--kernel-bpf-stats"]).unwrap();
        assert!(Config::resolve(cli.settings).unwrap().kernel_bpf_stats);
        let cli = Cli::from_command_line(["nodelens", "--kernel-bpf-stats=false"]).unwrap();
        assert!(!Config::resolve(cli.settings).unwrap().kernel_bpf_stats);
        let file = Settings::parse_file(Path::new("c.yaml"), "kernel_bpf_stats: true\n").unwrap();
        assert_eq!(file.kernel_bpf_stats, Some(true));
    }

    #[test]
    fn flags_parse_into_the_same_shape_as_the_file() {
        let cli = Cli::from_command_line([
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
        let msg = err.to_string();
        assert!(
            msg.starts_with("config: n.yaml: unknown key cgroups.maxx (known in cgroups: "),
            "{msg}"
        );
        // The section's keys, the family's among them.
        assert!(msg.contains(" max,") && msg.contains("series"), "{msg}");
        let err = Settings::parse_file(Path::new("n.toml"), "[remote_write.queue]\nmax = 1\n")
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(
                "unknown key remote_write.queue.max (known in remote_write.queue: max_samples;"
            ),
            "{msg}"
        );
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
