//! sip-controller: the signalling side of the secure media path.
//!
//! It will own the IO-free SIP core (parser, RFC 3261 transactions, dialogs), the B2BUA with
//! per-leg SDES-SRTP negotiation (RFC 4568), the rtpengine-compatible NG server, and the thin
//! tokio drivers for UDP, TCP and TLS, programming relayd over its HTTP API. In this build the
//! crate holds only its identity; the capabilities arrive in order (see docs/ARCHITECTURE.md)
//! and `cargo xtask up` starts the binary once it serves something.

/// The crate version, reported by the binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
