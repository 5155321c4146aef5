//! The agent's view of itself (build, probe status, readiness), shared by `/metrics`,
//! `/readyz` and the `/` page, and the registry each scrape encodes.
use std::{
    fmt,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType, registry::Registry};

use crate::{
    ebpf::{family::ProbeStatus, loader::Probes},
    metrics::{CollectError, Collector, family},
    node::NodeIdentity,
    security::{self, Posture},
    web::Web,
};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("NODELENS_REVISION");

#[derive(Debug)]
pub struct AgentState {
    pub probes: Arc<Probes>,
    pub node: NodeIdentity,
    /// The preflight init container's report, shown on the `/` page.
    pub preflight: Option<String>,
    /// Every probe has been attempted, whatever the outcome.
    ready: AtomicBool,
    /// Privileges after attaching (`security::lock_down`).
    posture: Mutex<Posture>,
    /// The port's web configuration, once serving.
    pub web: OnceLock<Arc<Web>>,
}

impl AgentState {
    pub fn new(probes: Arc<Probes>, node: NodeIdentity, preflight: Option<String>) -> Self {
        Self {
            probes,
            node,
            preflight,
            ready: AtomicBool::new(false),
            posture: Mutex::new(Posture::unlocked()),
            web: OnceLock::new(),
        }
    }

    pub fn set_posture(&self, posture: Posture) {
        *self.posture.lock().unwrap_or_else(|p| p.into_inner()) = posture;
    }

    pub fn posture(&self) -> Posture {
        self.posture
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `on` when the port speaks TLS, and when it asks for basic auth, as configured now.
    fn web_flags(&self) -> (&'static str, &'static str) {
        let on = |b: bool| if b { "on" } else { "off" };
        match self.web.get() {
            Some(web) => {
                let now = web.snapshot();
                (on(now.tls.is_some()), on(!now.config.users.is_empty()))
            }
            None => ("off", "off"),
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn statuses(&self) -> Vec<ProbeStatus> {
        self.probes
            .loaded
            .get()
            .map(|l| l.statuses.clone())
            .unwrap_or_default()
    }

    /// How each family measures on this kernel ("sched: run-queue wait from ..."), as
    /// preflight shows them.
    pub fn modes(&self) -> Vec<String> {
        self.probes
            .loaded
            .get()
            .map(|l| l.notes.clone())
            .unwrap_or_default()
    }

    /// The kernel's BPF statistics: `None` before loading or when not asked for, else on
    /// or why not.
    pub fn kernel_stats(&self) -> Option<Result<(), String>> {
        self.probes
            .loaded
            .get()
            .and_then(|l| l.kernel_stats.clone())
    }

    pub fn encode(&self, out: &mut DescriptorEncoder) -> std::fmt::Result {
        family(
            out,
            "nodelens_build_info",
            "nodelens build: version and source revision.",
            MetricType::Gauge,
            [([("revision", REVISION), ("version", VERSION)], 1.0)],
        )?;
        family(
            out,
            "nodelens_node_info",
            "The node this agent runs on: name, host machine id and kernel release.",
            MetricType::Gauge,
            [(
                [
                    ("kernel", self.node.kernel.as_str()),
                    ("machine_id", self.node.machine_id.as_str()),
                    ("node", self.node.node.as_str()),
                ],
                1.0,
            )],
        )?;
        let posture = self.posture();
        let (tls, basic_auth) = self.web_flags();
        family(
            out,
            "nodelens_security_info",
            "The agent's privileges after attaching: capabilities still held (none once dropped), no_new_privs, the seccomp mode (errno, kill or off), and whether the port speaks TLS and asks for basic auth.",
            MetricType::Gauge,
            [(
                [
                    ("basic_auth", basic_auth),
                    ("capabilities", posture.capabilities.as_str()),
                    ("no_new_privs", if posture.no_new_privs { "1" } else { "0" }),
                    ("seccomp", posture.seccomp),
                    ("tls", tls),
                ],
                1.0,
            )],
        )?;
        let denied = security::denied();
        if !denied.is_empty() {
            family(
                out,
                "nodelens_seccomp_denied_total",
                "System calls the seccomp filter refused with EPERM, by number (this architecture's). Any is a missing allowlist entry: please report it.",
                MetricType::Counter,
                denied
                    .iter()
                    .map(|(nr, count)| ([("syscall", nr.to_string())], *count as f64)),
            )?;
        }
        let probes = self.statuses();
        if probes.is_empty() {
            // No eBPF collector enabled: no family rather than a header without samples.
            return Ok(());
        }
        family(
            out,
            "nodelens_probe_up",
            "Whether each probe is attached (1) or not (0), and how: tp_btf, tracepoint or none.",
            MetricType::Gauge,
            probes.iter().map(|p| {
                (
                    [("attach", p.attach.as_str()), ("probe", p.name)],
                    f64::from(u8::from(p.is_up())),
                )
            }),
        )
    }
}

/// Runs every enabled collector on each scrape, then reports on itself.
#[derive(Debug)]
struct Scrape {
    collectors: Vec<Box<dyn Collector>>,
    agent: Arc<AgentState>,
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let mut results = Vec::with_capacity(self.collectors.len());
        for collector in &self.collectors {
            let started = Instant::now();
            let ok = match collector.collect(&mut out) {
                Ok(()) => true,
                Err(CollectError::Encode(e)) => return Err(e),
                Err(e) => {
                    // A failed read skips that collector; the scrape itself never fails.
                    tracing::warn!(collector = collector.name(), "collector failed: {e}");
                    false
                }
            };
            results.push((collector.name(), started.elapsed().as_secs_f64(), ok));
        }
        family(
            &mut out,
            "nodelens_collector_duration_seconds",
            "Time each collector took in this scrape.",
            MetricType::Gauge,
            results.iter().map(|(c, d, _)| ([("collector", *c)], *d)),
        )?;
        family(
            &mut out,
            "nodelens_collector_success",
            "Whether each collector succeeded in this scrape (1) or failed (0).",
            MetricType::Gauge,
            results
                .iter()
                .map(|(c, _, ok)| ([("collector", *c)], f64::from(u8::from(*ok)))),
        )?;
        self.agent.encode(&mut out)
    }
}

/// The registry served at `/metrics`.
pub fn registry(collectors: Vec<Box<dyn Collector>>, agent: Arc<AgentState>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { collectors, agent }));
    registry
}
