//! relayd, the media relay: its control plane and its datapaths.
//!
//! This crate owns relayd's control plane ([`relay`]: sessions, ports, media timeouts) and its
//! HTTP API ([`api`]), the socket datapath ([`datapath`]: per-core workers on
//! recvmmsg/sendmmsg), the XDP loader ([`xdp`]: load the embedded `relay-ebpf` object, attach
//! it, program flows, read counters), the choice of what XDP pins ([`xdp_flows`]) and the
//! AF_XDP workers that run SRTP for pinned crypto flows ([`afxdp`]). IO lives here, at the
//! edge: latching decisions, frame parsing and rewriting, and SRTP are IO-free cores with time
//! as an argument (see docs/ARCHITECTURE.md).

pub mod afxdp;
pub mod api;
pub mod config;
pub mod datapath;
pub mod model;
pub mod ports;
pub mod relay;
pub mod service;
pub mod socket_pool;
pub mod state;
pub mod xdp;
pub mod xdp_flows;
