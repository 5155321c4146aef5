//! Helpers for the collectors' unit tests.
use std::path::PathBuf;

use prometheus_client::{encoding::DescriptorEncoder, registry::Registry};

use crate::metrics::Collector;

/// Fixture files captured from this project's development machine (see fixtures/README).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[derive(Debug)]
struct One<C>(C);
impl<C: Collector + 'static> prometheus_client::collector::Collector for One<C> {
    fn encode(&self, mut out: DescriptorEncoder) -> std::fmt::Result {
        self.0.collect(&mut out).map_err(|_| std::fmt::Error)
    }
}

/// Renders one collector in the Prometheus text format.
pub fn render<C: Collector + 'static>(c: C) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(One(c)));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
    out
}
