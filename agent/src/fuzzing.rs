//! The fuzz targets' bodies: every parser that reads input from outside the agent, each
//! behind one `fn(&[u8])` that must never panic, whatever the bytes. `agent/fuzz/` wraps
//! each in a libFuzzer target (`cargo xtask fuzz`); the unit test below replays the seed
//! corpora and every input that once crashed (`agent/fuzz/regressions/<target>/`), so a
//! fixed crash stays fixed in every `cargo test`.
use std::path::Path;

use crate::{
    cgroups::{self, kubernetes},
    collectors::{diskstats, filesystem, loadavg, meminfo, process, stat, vmstat},
    config::{Config, Settings},
    ebpf::{btf::Btf, map_memory, tracefs},
    node, server,
    web::{self, auth},
};

/// A target's body: takes any bytes, must not panic.
pub type Body = fn(&[u8]);

/// Every target: its name (also the fuzz target's and the corpus directories') and body.
pub const TARGETS: &[(&str, Body)] = &[
    ("proc_stat", proc_stat),
    ("proc_meminfo_vmstat", proc_meminfo_vmstat),
    ("sys_files", sys_files),
    ("proc_loadavg_pressure", proc_loadavg_pressure),
    ("proc_diskstats", proc_diskstats),
    ("proc_mounts", proc_mounts),
    ("config_file", config_file),
    ("web_config", web_config),
    ("cgroup_paths", cgroup_paths),
    ("kubelet_names", kubelet_names),
    ("btf", btf),
    ("tracefs_format", tracefs_format),
    ("http_headers", http_headers),
];

/// Text parsers get text: the agent reads these files with `read_to_string`, which refuses
/// invalid UTF-8 before any parser sees it.
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// `/proc/stat`: CPU times, context switches, boot time.
pub fn proc_stat(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ = stat::parse(t);
    }
}

/// `/proc/meminfo` and `/proc/vmstat`.
pub fn proc_meminfo_vmstat(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ = meminfo::parse(t);
        let _ = vmstat::parse(t);
    }
}

/// `/sys/devices/system/cpu/possible`, udev's data files (`/run/udev/data/b*`), and the
/// kernel release.
pub fn sys_files(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ = map_memory::parse_cpu_list(t);
        let mut info = diskstats::UdevInfo::default();
        diskstats::parse_udev(t, &mut info);
        let _ = node::kernel_version(t);
    }
}

/// `/proc/loadavg` and `/proc/pressure/*`, and `/proc/self/stat` (process collector).
pub fn proc_loadavg_pressure(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ = loadavg::parse(t);
        let _ = crate::psi::parse(t);
        let _ = process::parse_stat(t);
    }
}

/// `/proc/diskstats`, with node_exporter's default device exclusion.
pub fn proc_diskstats(data: &[u8]) {
    if let Some(t) = text(data)
        && let Ok(exclude) = regex::Regex::new(diskstats::DEFAULT_DEVICE_EXCLUDE)
    {
        let _ = diskstats::parse(t, &exclude);
    }
}

/// `/proc/1/mounts` (filesystem collector) and `/proc/self/mountinfo` (the cgroup2 mount).
pub fn proc_mounts(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ = filesystem::parse_mounts(t);
        let _ = cgroups::cgroup2_mount(t);
        let _ = cgroups::cgroup1_mount(t, "cpu");
    }
}

/// The config file, as YAML and as TOML, then validated as the agent would.
pub fn config_file(data: &[u8]) {
    let Some(t) = text(data) else {
        return;
    };
    for name in ["nodelens.yaml", "nodelens.toml"] {
        if let Ok(mut settings) = Settings::parse_file(Path::new(name), t) {
            // A host name would be resolved: no DNS lookups while fuzzing.
            if settings
                .listen_address
                .as_deref()
                .is_some_and(|a| !a.starts_with(':') && a.parse::<std::net::SocketAddr>().is_err())
            {
                settings.listen_address = None;
            }
            let _ = Config::resolve(settings);
        }
    }
}

/// The web config file (exporter-toolkit's format).
pub fn web_config(data: &[u8]) {
    let _ = web::WebConfig::parse(data, Path::new("/nonexistent"));
}

/// Cgroup paths, both kubelet cgroup drivers.
pub fn cgroup_paths(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ = kubernetes::parse(t);
    }
}

/// Names in the kubelet's log directories.
pub fn kubelet_names(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ = kubernetes::pod_log_dir(t);
        let _ = kubernetes::container_log_link(t);
    }
}

/// The kernel's BTF, then the lookups the families make.
pub fn btf(data: &[u8]) {
    if let Ok(btf) = Btf::parse(data) {
        for (strukt, fields) in [
            ("task_struct", &["pid", "__state", "state"][..]),
            ("request", &["q", "__data_len", "bio"][..]),
            ("cgroup", &["kn"][..]),
        ] {
            let _ = btf.member(strukt, fields);
        }
        let _ = btf.member("task_struct", &["sched_info", "last_queued"]);
        let _ = btf.tracepoint_args("sched_switch");
        let _ = btf.tracepoint_args("block_rq_issue");
    }
}

/// A tracepoint's `format` file.
pub fn tracefs_format(data: &[u8]) {
    if let Some(t) = text(data) {
        for field in ["prev_state", "next_pid", "dev", "rwbs", "nr_sector"] {
            let _ = tracefs::parse_field(t, field);
        }
    }
}

/// `Accept`, `Accept-Encoding` and `Authorization` header values.
pub fn http_headers(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ = server::negotiate(Some(t));
        let _ = server::accepts_gzip(Some(t));
        let _ = auth::credentials(Some(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds and crash regressions of every target, through the target's body.
    #[test]
    fn every_seed_and_every_past_crash_parses_without_panicking() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut inputs = 0;
        for (name, body) in TARGETS {
            for kind in ["seeds", "regressions"] {
                let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(name)) else {
                    continue;
                };
                for entry in dir.flatten() {
                    let data = std::fs::read(entry.path()).unwrap();
                    body(&data);
                    inputs += 1;
                }
            }
        }
        assert!(
            inputs >= TARGETS.len(),
            "every target has seeds: {inputs} inputs"
        );
    }
}
