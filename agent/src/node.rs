//! Who and what this node is: its identity for `nodelens_node_info` (shared by preflight,
//! which writes it, and the agent, which shows it) and the host facts preflight reports.

use crate::config::Config;

pub use nodelens_report::{HostFacts, NodeIdentity};

pub fn host_facts() -> HostFacts {
    use sysinfo::System;
    let memory_bytes = System::new()
        .map(|mut s| {
            s.refresh_memory();
            s.total_memory()
        })
        .unwrap_or(0);
    HostFacts {
        host_name: System::host_name().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        os: System::long_os_version().unwrap_or_default(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_bytes,
    }
}

/// (major, minor) of a kernel release such as `6.18.44-fc-v669`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The node's identity: the node name from the downward API (or the host name), the host's
/// machine id, and the kernel release.
pub fn identity(config: &Config) -> NodeIdentity {
    let machine_id = std::fs::read_to_string(&config.machine_id_file)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    NodeIdentity {
        node: config
            .node_name
            .clone()
            .or_else(|| sysinfo::System::host_name().ok())
            .unwrap_or_default(),
        machine_id,
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0-28-cloud-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("garbage"), None);
        assert_eq!(kernel_version(""), None);
    }

    #[test]
    fn host_facts_agree_with_proc() {
        let facts = host_facts();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(facts.kernel, release.trim());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        assert_eq!(facts.memory_bytes, total_kb * 1024);
        assert!(facts.cpus >= 1);
    }
}
