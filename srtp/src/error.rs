//! The engine's error type: one enum, structured fields, no strings.

use crate::Suite;

/// Why a packet, a key or a policy was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The packet is shorter than its headers, MKI and tag need.
    #[error("packet of {len} bytes is shorter than the {needed} bytes its headers and tag need")]
    Truncated {
        /// The packet length.
        len: usize,
        /// The minimum length for this packet.
        needed: usize,
    },
    /// The RTP/RTCP version field is not 2.
    #[error("RTP/RTCP version {version}, expected 2")]
    BadVersion {
        /// The version found.
        version: u8,
    },
    /// The caller's buffer has no room for the MKI and the tag.
    #[error("buffer of {capacity} bytes cannot hold the {needed} bytes of the protected packet")]
    BufferTooSmall {
        /// Bytes the protected packet needs.
        needed: usize,
        /// The buffer's length.
        capacity: usize,
    },
    /// The packet is longer than the engine accepts.
    #[error("packet of {len} bytes exceeds the {max}-byte limit")]
    PacketTooLarge {
        /// The packet length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The authentication tag does not match: forged, corrupted or wrong key.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The packet index was already seen (replay, or a repeated send).
    #[error("packet index {index} was already processed (replay)")]
    Replayed {
        /// The packet index (RTP: ROC * 2^16 + SEQ; RTCP: SRTCP index).
        index: u64,
    },
    /// The packet index is older than the replay window.
    #[error("packet index {index} is older than the replay window")]
    TooOld {
        /// The packet index.
        index: u64,
    },
    /// The packet's MKI names no configured master key.
    #[error("the packet's MKI matches no master key")]
    UnknownMki,
    /// The master key reached its lifetime (RFC 3711 §9.2, or the SDES lifetime): re-key.
    #[error("the master key's lifetime of {limit} packets is exhausted; re-key")]
    KeyLifetimeExhausted {
        /// The lifetime that was reached.
        limit: u64,
    },
    /// A key or salt of the wrong length for the suite.
    #[error("{what} for {suite} must be {expected} bytes, got {got}")]
    InvalidKeyLength {
        /// The suite.
        suite: Suite,
        /// "master key", "master salt" or "key material".
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A non-zero key derivation rate (RFC 3711 §4.3.1); only 0 is implemented.
    #[error("key derivation rate {kdr} is not supported (only 0)")]
    UnsupportedKdr {
        /// The rate asked for.
        kdr: u64,
    },
    /// An MKI length that is not 0..=16, or MKIs that are missing, duplicated or of a length
    /// other than the policy's.
    #[error("invalid MKI configuration: {reason}")]
    InvalidMki {
        /// What is wrong.
        reason: &'static str,
    },
    /// A replay window outside 64..=32768 packets.
    #[error("replay window of {size} packets is outside 64..=32768")]
    InvalidReplayWindow {
        /// The size asked for.
        size: usize,
    },
    /// The policy has no master key.
    #[error("the policy has no master key")]
    NoMasterKey,
    /// The context already tracks its maximum number of SSRCs.
    #[error("the context already tracks {max} SSRCs")]
    TooManyStreams {
        /// The limit.
        max: usize,
    },
}
