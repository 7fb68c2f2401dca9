//! The rtpengine-compatible NG control protocol server: Kamailio's and OpenSIPS's `rtpengine`
//! modules (and `rtpengine-ng-client`) drive us as they drive sipwise rtpengine, so a
//! deployment switches by changing `rtpengine_sock`.
//!
//! ```text
//!  UDP/TCP ──▶ message (cookie + bencode/JSON) ──▶ cache (retransmissions)
//!                                                   │ new
//!                                                   ▼
//!              options (typed request, rtpp_flags) ──▶ engine (per-call lock, counters)
//!                                                   │
//!                      session (negotiation via crate::sdp, relay spec, SDP, stats)
//!                                                   │
//!                                      Relay trait ──▶ relayd HTTP (RelayClient)
//! ```
//!
//! What each part owns: [`bencode`] the wire encoding; [`message`] framing, JSON, cookies;
//! [`cache`] retransmission replies; [`options`] what a request means and which options are
//! honoured, accepted, warned about or refused; [`session`] the call model and the pure
//! offer/answer/query steps; [`engine`] command handling over a [`Relay`]; [`server`] the
//! tokio sockets. All but `engine` (which awaits the relay) and `server` are IO-free and
//! take time as an input.
//!
//! Hand-written rather than a crate: no maintained Rust crate speaks NG, and the SDP work must
//! be the B2BUA's own ([`crate::sdp`]) so both fronts negotiate SDES identically.

pub mod bencode;
pub mod cache;
pub mod engine;
pub mod message;
pub mod options;
pub mod server;
pub mod session;
#[cfg(test)]
mod testing;

pub use engine::{Engine, EngineConfig, Now, Relay};
pub use server::{serve, NgConfig, NgServer, ServeError};
