//! sip-controller: the signalling side of the secure media path.
//!
//! It owns the IO-free SIP core (parser and serializer, RFC 3261 transactions, dialogs), the
//! B2BUA with per-leg SDES-SRTP negotiation (RFC 4568 with RFC 3264), digest authentication and
//! a registrar, and the thin tokio drivers for UDP, TCP and TLS that carry it; it programs relayd
//! over its HTTP API. Cores take time as an input and never touch a socket: the drivers in
//! [`transport`] and the binary feed them bytes and instants and carry out what they return.

pub mod api;
pub mod auth;
pub mod b2bua;
pub mod config;
pub mod embedded_relay;
pub mod ng;
pub mod registrar;
pub mod relay_client;
pub mod routing;
pub mod sdp;
pub mod sip;
pub mod transport;
pub mod verdict;

/// The crate version, reported by the binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
