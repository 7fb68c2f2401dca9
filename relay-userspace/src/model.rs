//! The control API's resources, as JSON (serde), and their validation.
//!
//! A *session* has two or more *legs*. A leg owns a local RTP port (even) and RTCP port (odd,
//! or none with rtcp-mux) on one configured interface, knows where its peer is (fixed by
//! signalling, or learned by latching), how to verify/decrypt what arrives (inbound crypto) and
//! how to encrypt what it sends (outbound crypto), and which leg its media goes to.
//!
//! Keys are accepted in requests and never returned: views carry the suite only.

use std::{collections::HashSet, fmt, net::IpAddr};

use serde::{Deserialize, Serialize};
use srtp::{MasterKey, Policy, Suite};

/// Longest session or leg id.
pub const MAX_ID_LEN: usize = 64;
/// Most legs in one session.
pub const MAX_LEGS: usize = 8;

/// Body of `PUT /v1/sessions/{id}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// Two or more legs.
    pub legs: Vec<LegSpec>,
    /// Seconds of silence after which a leg is reported as timed out (default: relayd's
    /// `media.timeout_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_timeout_secs: Option<u64>,
}

/// One leg in a [`SessionSpec`].
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LegSpec {
    /// Unique within the session: `[A-Za-z0-9._-]{1,64}`.
    pub id: String,
    /// Configured interface name (default `default`).
    #[serde(default = "default_interface")]
    pub interface: String,
    /// RTP and RTCP on one port (RFC 5761).
    #[serde(default)]
    pub rtcp_mux: bool,
    /// Where the peer is, if signalling already says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<Remote>,
    /// How the remote is learned.
    #[serde(default)]
    pub latch: LatchMode,
    /// Once latched (or fixed), drop packets from any other source.
    #[serde(default = "default_true")]
    pub strict_source: bool,
    /// Verify and decrypt what arrives (SRTP/SRTCP); absent: plain RTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_crypto: Option<CryptoSpec>,
    /// Encrypt what is sent to this leg's peer; absent: plain RTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_crypto: Option<CryptoSpec>,
    /// The leg that receives this leg's media (absent: media is received and dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
}

fn default_interface() -> String {
    "default".to_owned()
}

const fn default_true() -> bool {
    true
}

/// The peer's transport addresses.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// Peer address.
    pub address: IpAddr,
    /// Peer RTP port.
    pub rtp_port: u16,
    /// Peer RTCP port (default: `rtp_port + 1`, or `rtp_port` with rtcp-mux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcp_port: Option<u16>,
}

/// How a leg learns its peer.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LatchMode {
    /// Learn the source of the first accepted packet (authenticated, on SRTP legs), and follow
    /// it while the latch window is open; then lock.
    #[default]
    Learn,
    /// Use `remote` only; never learn.
    Fixed,
}

/// SRTP parameters for one direction of a leg.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CryptoSpec {
    /// SDES suite name, e.g. `AES_CM_128_HMAC_SHA1_80`.
    pub suite: String,
    /// One or more master keys.
    pub keys: Vec<KeySpec>,
    /// MKI length in bytes (0: no MKI; required when there is more than one key).
    #[serde(default)]
    pub mki_len: usize,
    /// Replay window in packets (default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_window: Option<usize>,
}

impl fmt::Debug for CryptoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoSpec")
            .field("suite", &self.suite)
            .field("keys", &self.keys.len())
            .field("mki_len", &self.mki_len)
            .finish_non_exhaustive()
    }
}

/// One master key: `key` is base64 of master key || master salt (the SDES `inline:` value).
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// base64 (standard alphabet) of key || salt.
    pub key: String,
    /// MKI value (when `mki_len` > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mki: Option<u64>,
    /// Lifetime in packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<u64>,
}

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySpec")
            .field("key", &"<redacted>")
            .field("mki", &self.mki)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// Body of `PATCH /v1/sessions/{id}/legs/{leg}`: fields present are changed.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LegPatch {
    /// New remote (e.g. from the SDP answer); `null` clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub remote: Option<Option<Remote>>,
    /// New latch mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latch: Option<LatchMode>,
    /// New strictness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_source: Option<bool>,
    /// Re-key inbound; `null` makes the leg plain.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub inbound_crypto: Option<Option<CryptoSpec>>,
    /// Re-key outbound; `null` makes the leg plain.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub outbound_crypto: Option<Option<CryptoSpec>>,
    /// New forwarding target; `null` stops forwarding.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub forward_to: Option<Option<String>>,
}

/// `Option<Option<T>>` where an absent field is `None` and `null` is `Some(None)`.
#[allow(
    clippy::option_option,
    reason = "absent, null and a value are three different requests"
)]
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(deserializer).map(Some)
    }

    #[allow(
        clippy::ref_option,
        reason = "serde's `with` passes the field by reference"
    )]
    pub fn serialize<T, S>(value: &Option<Option<T>>, serializer: S) -> Result<S::Ok, S::Error>
    where
        T: Serialize,
        S: Serializer,
    {
        match value {
            Some(inner) => inner.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }
}

/// Why a spec is refused: each maps to a stable problem code (HTTP 422).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// An id with characters outside `[A-Za-z0-9._-]` or of the wrong length.
    #[error("invalid {what} id {id:?}: use 1-64 of A-Z a-z 0-9 . _ -")]
    InvalidId {
        /// "session" or "leg".
        what: &'static str,
        /// The id.
        id: String,
    },
    /// Fewer than two or more than [`MAX_LEGS`] legs.
    #[error("a session needs 2 to {MAX_LEGS} legs, got {count}")]
    LegCount {
        /// Legs given.
        count: usize,
    },
    /// Two legs with one id.
    #[error("leg id {id:?} is used twice")]
    DuplicateLeg {
        /// The id.
        id: String,
    },
    /// `forward_to` names no leg of the session, or the leg itself.
    #[error("leg {leg:?} forwards to {target:?}, which is not another leg of this session")]
    UnknownTarget {
        /// The leg.
        leg: String,
        /// The target named.
        target: String,
    },
    /// `latch: fixed` without a remote.
    #[error("leg {leg:?} has latch \"fixed\" but no remote")]
    FixedWithoutRemote {
        /// The leg.
        leg: String,
    },
    /// A remote port of 0, or an unspecified/multicast address.
    #[error("leg {leg:?} has an invalid remote: {reason}")]
    InvalidRemote {
        /// The leg.
        leg: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An unknown suite name.
    #[error("leg {leg:?}: unknown SRTP suite {suite:?}")]
    UnknownSuite {
        /// The leg.
        leg: String,
        /// The name given.
        suite: String,
    },
    /// Key material that is not base64, or the wrong length, or a bad MKI/lifetime.
    #[error("leg {leg:?}: invalid key: {reason}")]
    InvalidKey {
        /// The leg.
        leg: String,
        /// What is wrong (never the key itself).
        reason: String,
    },
    /// A media timeout of 0 or above a day.
    #[error("media_timeout_secs must be 1..=86400, got {value}")]
    InvalidTimeout {
        /// The value given.
        value: u64,
    },
}

/// Checks an id: `[A-Za-z0-9._-]{1,64}`.
pub fn validate_id(what: &'static str, id: &str) -> Result<(), SpecError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::InvalidId {
            what,
            id: id.to_owned(),
        })
    }
}

impl SessionSpec {
    /// Checks everything that can be checked without the relay's state (interfaces and ports
    /// are checked when allocating).
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(2..=MAX_LEGS).contains(&self.legs.len()) {
            return Err(SpecError::LegCount {
                count: self.legs.len(),
            });
        }
        if let Some(value) = self.media_timeout_secs {
            if !(1..=86_400).contains(&value) {
                return Err(SpecError::InvalidTimeout { value });
            }
        }
        let mut ids = HashSet::new();
        for leg in &self.legs {
            validate_id("leg", &leg.id)?;
            if !ids.insert(leg.id.as_str()) {
                return Err(SpecError::DuplicateLeg { id: leg.id.clone() });
            }
        }
        for leg in &self.legs {
            leg.validate(&ids)?;
        }
        Ok(())
    }
}

impl LegSpec {
    /// Checks one leg against the ids of its session.
    pub fn validate(&self, leg_ids: &HashSet<&str>) -> Result<(), SpecError> {
        if let Some(target) = &self.forward_to {
            if target == &self.id || !leg_ids.contains(target.as_str()) {
                return Err(SpecError::UnknownTarget {
                    leg: self.id.clone(),
                    target: target.clone(),
                });
            }
        }
        if self.latch == LatchMode::Fixed && self.remote.is_none() {
            return Err(SpecError::FixedWithoutRemote {
                leg: self.id.clone(),
            });
        }
        if let Some(remote) = &self.remote {
            remote.validate(&self.id)?;
        }
        for crypto in [&self.inbound_crypto, &self.outbound_crypto]
            .into_iter()
            .flatten()
        {
            crypto.policy(&self.id)?;
        }
        Ok(())
    }
}

impl Remote {
    /// Checks the address and ports.
    pub fn validate(&self, leg: &str) -> Result<(), SpecError> {
        let invalid = |reason| SpecError::InvalidRemote {
            leg: leg.to_owned(),
            reason,
        };
        if self.address.is_unspecified() {
            return Err(invalid("unspecified address"));
        }
        if self.address.is_multicast() {
            return Err(invalid("multicast address"));
        }
        if self.rtp_port == 0 || self.rtcp_port == Some(0) {
            return Err(invalid("port 0"));
        }
        Ok(())
    }

    /// The RTCP port: given, or RTP + 1 (RTP with rtcp-mux).
    pub fn rtcp_port(&self, rtcp_mux: bool) -> u16 {
        self.rtcp_port.unwrap_or(if rtcp_mux {
            self.rtp_port
        } else {
            self.rtp_port.saturating_add(1)
        })
    }
}

impl CryptoSpec {
    /// The suite, parsed.
    pub fn suite(&self, leg: &str) -> Result<Suite, SpecError> {
        Suite::from_sdes_name(&self.suite).ok_or_else(|| SpecError::UnknownSuite {
            leg: leg.to_owned(),
            suite: self.suite.clone(),
        })
    }

    /// The SRTP policy this spec describes.
    pub fn policy(&self, leg: &str) -> Result<Policy, SpecError> {
        use base64::Engine as _;
        let suite = self.suite(leg)?;
        let invalid = |reason: String| SpecError::InvalidKey {
            leg: leg.to_owned(),
            reason,
        };
        if self.keys.is_empty() {
            return Err(invalid("no keys".to_owned()));
        }
        let mut keys = Vec::with_capacity(self.keys.len());
        for (i, spec) in self.keys.iter().enumerate() {
            let material = base64::engine::general_purpose::STANDARD
                .decode(spec.key.trim_end_matches('=').as_bytes())
                .or_else(|_| base64::engine::general_purpose::STANDARD.decode(&spec.key))
                .map_err(|_| invalid(format!("key {i} is not base64")))?;
            let mut key = MasterKey::from_material(suite, &material)
                .map_err(|e| invalid(format!("key {i}: {e}")))?;
            if self.mki_len > 0 {
                let value = spec
                    .mki
                    .ok_or_else(|| invalid(format!("key {i} has no mki but mki_len > 0")))?;
                let bytes = value.to_be_bytes();
                if self.mki_len > 8 || (self.mki_len < 8 && value >> (8 * self.mki_len) != 0) {
                    return Err(invalid(format!(
                        "key {i}: mki {value} does not fit mki_len"
                    )));
                }
                key = key.with_mki(&bytes[8 - self.mki_len..]);
            }
            if let Some(lifetime) = spec.lifetime {
                key = key.with_lifetime(lifetime);
            }
            keys.push(key);
        }
        let mut policy = Policy::new(keys.remove(0));
        policy.keys.extend(keys);
        policy.mki_len = self.mki_len;
        if let Some(window) = self.replay_window {
            policy.replay_window = window;
        }
        policy.validate().map_err(|e| invalid(e.to_string()))?;
        Ok(policy)
    }
}

/// A local transport address of a leg.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalView {
    /// The interface's address.
    pub address: IpAddr,
    /// RTP port (even).
    pub rtp_port: u16,
    /// RTCP port (odd; equal to `rtp_port` with rtcp-mux).
    pub rtcp_port: u16,
}

/// The crypto of a leg direction as shown: the suite, never the keys.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CryptoView {
    /// SDES suite name.
    pub suite: String,
    /// Number of master keys.
    pub keys: usize,
}

/// Per-leg counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegCountersView {
    /// Packets received on this leg's ports (before any check).
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Packets sent to this leg's peer.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// SRTP/SRTCP packets whose tag did not verify.
    pub auth_failures: u64,
    /// SRTP/SRTCP packets refused as replays or too old.
    pub replays: u64,
    /// Drops by reason (`wrong_source`, `no_remote`, `no_target`, `malformed`, `srtp_error`,
    /// `send_error`, `not_forwarded`).
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Unix time (ms) of the last packet received, if any (packets forwarded in XDP do not
    /// update it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_packet_unix_ms: Option<u64>,
    /// Of `packets_in`, how many XDP forwarded without userspace (absent when the leg has no
    /// kernel flow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_packets: Option<u64>,
}

/// A leg as returned by the API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegView {
    /// Leg id.
    pub id: String,
    /// Interface name.
    pub interface: String,
    /// Local ports.
    pub local: LocalView,
    /// RTP/RTCP on one port.
    pub rtcp_mux: bool,
    /// Remote from signalling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<Remote>,
    /// Latch mode.
    pub latch: LatchMode,
    /// Strict source.
    pub strict_source: bool,
    /// Source the leg latched onto for RTP, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latched_rtp: Option<std::net::SocketAddr>,
    /// Source the leg latched onto for RTCP, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latched_rtcp: Option<std::net::SocketAddr>,
    /// Inbound crypto (suite only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_crypto: Option<CryptoView>,
    /// Outbound crypto (suite only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_crypto: Option<CryptoView>,
    /// Forwarding target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
    /// No packet for longer than the media timeout.
    pub media_timed_out: bool,
    /// Counters.
    pub counters: LegCountersView,
}

/// A session as returned by the API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// Media timeout in seconds.
    pub media_timeout_secs: u64,
    /// Unix time (ms) the session was created.
    pub created_unix_ms: u64,
    /// Legs.
    pub legs: Vec<LegView>,
}

/// An entry of `GET /v1/sessions`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionSummary {
    /// Session id.
    pub id: String,
    /// Number of legs.
    pub legs: usize,
    /// Unix time (ms) the session was created.
    pub created_unix_ms: u64,
    /// Whether any leg timed out.
    pub media_timed_out: bool,
}

/// An event on `GET /v1/events` (server-sent events, `event:` is the `kind`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A leg has been silent for its media timeout.
    MediaTimeout {
        /// Session id.
        session: String,
        /// Leg id.
        leg: String,
        /// Seconds since the last packet (or since the leg was created).
        silent_secs: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(id: &str, to: &str) -> LegSpec {
        serde_json::from_value(serde_json::json!({ "id": id, "forward_to": to })).unwrap()
    }

    #[test]
    fn defaults_apply() {
        let l = leg("a", "b");
        assert_eq!(l.interface, "default");
        assert!(!l.rtcp_mux);
        assert_eq!(l.latch, LatchMode::Learn);
        assert!(l.strict_source);
    }

    #[test]
    fn validation_names_the_problem() {
        let spec = SessionSpec {
            legs: vec![leg("a", "b")],
            media_timeout_secs: None,
        };
        assert_eq!(spec.validate(), Err(SpecError::LegCount { count: 1 }));
        let spec = SessionSpec {
            legs: vec![leg("a", "c"), leg("b", "a")],
            media_timeout_secs: None,
        };
        assert!(matches!(
            spec.validate(),
            Err(SpecError::UnknownTarget { .. })
        ));
        let spec = SessionSpec {
            legs: vec![leg("a", "b"), leg("a", "b")],
            media_timeout_secs: None,
        };
        assert!(matches!(
            spec.validate(),
            Err(SpecError::DuplicateLeg { .. })
        ));
        assert!(validate_id("leg", "with space").is_err());
        assert!(validate_id("leg", "caller-1.a_b").is_ok());
    }

    #[test]
    fn crypto_specs_become_policies_and_hide_their_keys() {
        let spec: CryptoSpec = serde_json::from_value(serde_json::json!({
            "suite": "AES_CM_128_HMAC_SHA1_80",
            "keys": [{ "key": "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz" }]
        }))
        .unwrap();
        let policy = spec.policy("a").unwrap();
        assert_eq!(policy.suite, Suite::AesCm128HmacSha1_80);
        assert!(!format!("{spec:?}").contains("WVNf"));
        let bad = CryptoSpec {
            suite: "AES_CM_128_HMAC_SHA1_80".into(),
            keys: vec![KeySpec {
                key: "c2hvcnQ=".into(),
                mki: None,
                lifetime: None,
            }],
            mki_len: 0,
            replay_window: None,
        };
        assert!(matches!(bad.policy("a"), Err(SpecError::InvalidKey { .. })));
    }

    #[test]
    fn patch_distinguishes_absent_from_null() {
        let p: LegPatch = serde_json::from_str(r#"{"remote": null}"#).unwrap();
        assert_eq!(p.remote, Some(None));
        let p: LegPatch = serde_json::from_str("{}").unwrap();
        assert_eq!(p.remote, None);
        assert!(serde_json::from_str::<LegPatch>(r#"{"bogus": 1}"#).is_err());
    }
}
