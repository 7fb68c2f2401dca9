//! relayd, the media relay: its control plane and its datapaths.
//!
//! This crate owns the XDP loader ([`xdp`]: load the embedded `relay-ebpf` object, attach it to
//! interfaces, program flows, read counters) and relayd's HTTP service ([`api`]: health with a
//! boot id, Prometheus metrics). The flow-control API, the socket datapath and the AF_XDP workers
//! join it in later steps (see docs/ARCHITECTURE.md). IO lives here, at the edge: the packet
//! parsing and flow decisions are in the XDP program and in IO-free cores.

pub mod api;
pub mod config;
pub mod datapath;
pub mod model;
pub mod ports;
pub mod relay;
pub mod xdp;
pub mod xdp_flows;
