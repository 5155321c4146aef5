//! Everything the agent runs with, built in one place from a validated [`Config`]: host
//! paths, the cgroup2 root and resolver, the per-cgroup tracker, the probes and the
//! registry. `nodelens` (serving) and `nodelens preflight --exercise` both start here, so
//! they cannot disagree about how the node is seen.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use prometheus_client::registry::Registry;

use crate::{
    agent::{self, AgentState},
    cgroups::{self, CgroupResolver, tracker::CgroupTracker},
    collectors::{self, HostPaths},
    config::Config,
    ebpf::{
        families,
        family::{Family, LoadContext},
        loader::{self, Probes},
    },
    metrics::Collector,
    node::NodeIdentity,
    remote_write,
};

pub struct Runtime {
    pub config: Config,
    pub probes: Arc<Probes>,
    pub agent: Arc<AgentState>,
    pub registry: Arc<Registry>,
    /// remote_write's counters, when push is on (served with the rest).
    pub remote_write: Option<Arc<remote_write::Stats>>,
    context: LoadContext,
}

/// The cgroup2 hierarchy: `--cgroup-root`, or the cgroup2 mount in our own mountinfo (the
/// host's /sys/fs/cgroup is mounted into the pod at the same place).
pub fn cgroup_root(config: &Config) -> Option<PathBuf> {
    config.cgroups.root.clone().or_else(|| {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        cgroups::cgroup2_mount(&mountinfo)
    })
}

impl Runtime {
    pub fn build(config: Config, identity: NodeIdentity, preflight: Option<String>) -> Self {
        let root = cgroup_root(&config).unwrap_or_else(|| {
            tracing::warn!(
                "no cgroup2 mount in /proc/self/mountinfo: per-cgroup metrics fold into cgroup=\"other\" (mount the host's /sys/fs/cgroup, or set --cgroup-root)"
            );
            "/sys/fs/cgroup".into()
        });
        tracing::info!(root = %root.display(), "cgroup2 hierarchy");
        let resolver = CgroupResolver::new(
            root.clone(),
            &config.cgroups.pod_logs_dir,
            &config.cgroups.container_logs_dir,
        );
        let context = LoadContext {
            cgroups: Arc::new(CgroupTracker::new(resolver, config.cgroups.clone())),
            per_cgroup: config.enabled(families::cgroup::NAME),
            settings: config.family_settings.clone(),
            procfs: config.procfs.clone(),
            sysfs: config.sysfs.clone(),
            cgroup_root: root,
            max_cgroups: config.cgroups.max_tracked,
            kernel_bpf_stats: config.kernel_bpf_stats,
        };
        let probes = Arc::new(Probes::default());
        let agent = Arc::new(AgentState::new(probes.clone(), identity, preflight));
        let paths = HostPaths {
            procfs: config.procfs.clone(),
            rootfs: config.rootfs.clone(),
        };
        let mut collectors: Vec<Box<dyn Collector>> = config
            .collectors
            .iter()
            .map(|&name| collectors::build(name, &paths, &probes))
            .collect();
        let remote_write = config.remote_write.as_ref().map(|_| {
            let stats = Arc::new(remote_write::Stats::default());
            collectors.push(Box::new(remote_write::RemoteWriteCollector(stats.clone())));
            stats
        });
        let registry = Arc::new(agent::registry(collectors, agent.clone()));
        Self {
            config,
            probes,
            agent,
            registry,
            remote_write,
            context,
        }
    }

    /// The probe families of the enabled collectors.
    pub fn families(&self) -> Vec<&'static dyn Family> {
        let names: Vec<&str> = self.config.collectors.iter().map(|c| c.name()).collect();
        loader::families_for(&names)
    }

    /// Loads and attaches the enabled families (blocking: run it off the event loop).
    pub fn load_probes(&self, families: &[&'static dyn Family], btf: &Path) {
        let loaded = loader::load(
            families,
            self.config.probe_attach,
            btf,
            self.context.clone(),
        );
        // Loading runs once per process, so this is the only set.
        let _ = self.probes.loaded.set(loaded);
        return_freed_heap();
    }

    /// Every family, whatever the collectors say (preflight checks them all).
    pub fn all_families() -> Vec<&'static dyn Family> {
        families::ALL.to_vec()
    }

    /// Encodes one scrape in the Prometheus text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        crate::render::render(&self.registry, crate::render::Format::Prometheus)
    }
}

/// aya parses the kernel's BTF (5 MB, some 150,000 types) into many small allocations to
/// load the tp_btf programs, and drops them right after. glibc keeps that freed heap (15
/// MB here) unless asked; ask once, after loading.
fn return_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
