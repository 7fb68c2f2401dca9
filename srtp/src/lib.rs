//! SRTP and SRTCP (RFC 3711) with the AES-CM/HMAC-SHA1 suites (RFC 4568, RFC 6188) and the
//! AEAD AES-GCM suites (RFC 7714), plus SDES `a=crypto` helpers (RFC 4568).
//!
//! Pure code: no IO, no clock, no allocation per packet. Packets are transformed in place in
//! caller-owned buffers that have room for the MKI and tag. A [`Context`] holds the session
//! keys derived from one or more master keys (AES key schedules and HMAC inner/outer states are
//! computed once per session key) and the per-SSRC state (rollover counter, replay window).
//! The batch API transforms many packets at once, generating the AES keystream for the whole
//! batch in one pass so that wide AES implementations (VAES, 64 blocks at a time) are used.
//!
//! Keys never appear in `Debug` output or error messages.

mod batch;
mod cipher;
mod context;
mod error;
mod ghash;
mod hmac_sha1;
mod kdf;
mod packet;
mod policy;
mod replay;
pub mod sdes;
mod suite;

pub use batch::{Batch, BatchPacket};
pub use context::{Context, MAX_PACKET_LEN};
pub use error::Error;
pub use policy::{MasterKey, Policy, DEFAULT_MAX_STREAMS, DEFAULT_REPLAY_WINDOW, MAX_MKI_LEN};
pub use suite::Suite;
