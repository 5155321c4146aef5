//! nodelens as a library: every module of the agent. The `nodelens` binary (`main.rs`)
//! is a thin front over it, and the fuzz targets (`agent/fuzz/`) call its parsers
//! directly.
pub mod agent;
pub mod cgroups;
pub mod collectors;
pub mod config;
pub mod duration;
pub mod ebpf;
pub mod exercise;
pub mod fuzzing;
pub mod kept;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod preflight;
pub mod protobuf_wire;
pub mod psi;
pub mod remote_write;
pub mod render;
pub mod runtime;
pub mod security;
pub mod server;
pub mod web;
