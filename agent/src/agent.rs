//! The agent's view of itself: build, probe status and readiness, shared by `/metrics`,
//! `/readyz` and the `/` page.
use std::sync::{
    RwLock,
    atomic::{AtomicBool, Ordering},
};

use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use crate::{ebpf::ProbeStatus, metrics::family};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("NODELENS_REVISION");

#[derive(Debug, Default)]
pub struct AgentState {
    probes: RwLock<Vec<ProbeStatus>>,
    /// Every probe has been attempted, whatever the outcome.
    ready: AtomicBool,
}

impl AgentState {
    pub fn set_probes(&self, probes: Vec<ProbeStatus>) {
        *self.probes.write().unwrap_or_else(|p| p.into_inner()) = probes;
        self.ready.store(true, Ordering::Release);
    }

    pub fn probes(&self) -> Vec<ProbeStatus> {
        self.probes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn encode(&self, out: &mut DescriptorEncoder) -> std::fmt::Result {
        family(
            out,
            "nodelens_build_info",
            "nodelens build: version and source revision.",
            MetricType::Gauge,
            [([("revision", REVISION), ("version", VERSION)], 1.0)],
        )?;
        let probes = self.probes();
        family(
            out,
            "nodelens_probe_up",
            "Whether each probe is attached (1) or not (0), and how: tp_btf, tracepoint or none.",
            MetricType::Gauge,
            probes.iter().map(|p| {
                (
                    [
                        ("attach", p.attach.map_or("none", |a| a.as_str())),
                        ("probe", p.name),
                    ],
                    f64::from(u8::from(p.is_up())),
                )
            }),
        )
    }
}
