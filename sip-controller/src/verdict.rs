//! The per-call security verdict: how each leg was signalled and how its media was protected,
//! and whether the whole call was secure end to end (every leg TLS + SRTP both ways).
//!
//! Served live on `/v1/calls` and written as one JSON line per finished call (the CDR). IO-free:
//! the B2BUA fills the records, the drivers serialise them.

use std::net::SocketAddr;

use serde::Serialize;

/// Signalling transport of a leg.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignallingTransport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS.
    Tls,
}

/// How a leg's SIP was carried.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Signalling {
    /// Transport.
    pub transport: SignallingTransport,
    /// The peer's address.
    pub remote: SocketAddr,
    /// TLS protocol version, e.g. `TLSv1.3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// TLS cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cipher_suite: Option<String>,
    /// Subject of the peer's certificate, when it presented one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_certificate_subject: Option<String>,
}

/// How a leg's media was protected and how much of it flowed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Media {
    /// Suite protecting what the peer sends us (`None`: plain RTP).
    pub inbound_suite: Option<String>,
    /// Suite protecting what we send the peer.
    pub outbound_suite: Option<String>,
    /// Packets received from the peer (relay counters).
    pub packets_in: u64,
    /// Packets sent to the peer.
    pub packets_out: u64,
    /// SRTP authentication failures on this leg.
    pub auth_failures: u64,
}

impl Media {
    /// Both directions are SRTP.
    pub fn is_protected(&self) -> bool {
        self.inbound_suite.is_some() && self.outbound_suite.is_some()
    }
}

/// Which side of the B2BUA a leg is.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LegRole {
    /// The side that sent the INVITE.
    Caller,
    /// The side we sent the INVITE to.
    Callee,
}

/// The verdict of one leg.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LegVerdict {
    /// Caller or callee side.
    pub role: LegRole,
    /// Trunk name, or `endpoint:<aor>` for registered endpoints.
    pub peer: String,
    /// Signalling (absent until the leg has exchanged a message).
    pub signalling: Option<Signalling>,
    /// Media.
    pub media: Media,
    /// Signalled over TLS and media SRTP in both directions.
    pub secure: bool,
}

impl LegVerdict {
    /// Recomputes `secure` from the facts.
    pub fn refresh(&mut self) {
        self.secure = self
            .signalling
            .as_ref()
            .is_some_and(|s| s.transport == SignallingTransport::Tls)
            && self.media.is_protected();
    }
}

/// Where a call is.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// INVITE sent on, no final answer yet.
    Proceeding,
    /// Answered (2xx).
    Confirmed,
    /// Finished.
    Terminated,
}

/// One call as the API and the CDR show it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CallRecord {
    /// Our call id (also the relay session id).
    pub id: String,
    /// The caller side's Call-ID header.
    pub sip_call_id: String,
    /// From URI as received.
    pub from: String,
    /// Request-URI as received.
    pub to: String,
    /// Route that matched.
    pub route: String,
    /// State.
    pub state: CallState,
    /// Final status sent to the caller (200 when answered).
    pub status: Option<u16>,
    /// Why it ended: `bye_caller`, `bye_callee`, `cancel`, `rejected`, `media_timeout`, ...
    pub end_reason: Option<String>,
    /// Unix ms of the INVITE.
    pub started_unix_ms: u64,
    /// Unix ms of the 2xx.
    pub answered_unix_ms: Option<u64>,
    /// Unix ms of the end.
    pub ended_unix_ms: Option<u64>,
    /// Caller leg then callee leg.
    pub legs: Vec<LegVerdict>,
    /// Every leg secure (TLS + SRTP both ways).
    pub secure_end_to_end: bool,
}

impl CallRecord {
    /// Recomputes every leg's `secure` and the call's `secure_end_to_end`.
    pub fn refresh(&mut self) {
        for leg in &mut self.legs {
            leg.refresh();
        }
        self.secure_end_to_end = !self.legs.is_empty() && self.legs.iter().all(|leg| leg.secure);
    }

    /// The CDR line (JSON, no trailing newline).
    pub fn cdr_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(role: LegRole, transport: SignallingTransport, suites: bool) -> LegVerdict {
        LegVerdict {
            role,
            peer: "carrier".to_owned(),
            signalling: Some(Signalling {
                transport,
                remote: SocketAddr::from(([127, 0, 0, 1], 5061)),
                tls_version: (transport == SignallingTransport::Tls).then(|| "TLSv1.3".to_owned()),
                tls_cipher_suite: None,
                peer_certificate_subject: None,
            }),
            media: Media {
                inbound_suite: suites.then(|| "AES_CM_128_HMAC_SHA1_80".to_owned()),
                outbound_suite: suites.then(|| "AES_CM_128_HMAC_SHA1_80".to_owned()),
                ..Media::default()
            },
            secure: false,
        }
    }

    fn call(legs: Vec<LegVerdict>) -> CallRecord {
        let mut record = CallRecord {
            id: "c1".to_owned(),
            sip_call_id: "abc@host".to_owned(),
            from: "sip:a@x".to_owned(),
            to: "sip:b@y".to_owned(),
            route: "r".to_owned(),
            state: CallState::Terminated,
            status: Some(200),
            end_reason: Some("bye_caller".to_owned()),
            started_unix_ms: 1,
            answered_unix_ms: Some(2),
            ended_unix_ms: Some(3),
            legs,
            secure_end_to_end: false,
        };
        record.refresh();
        record
    }

    #[test]
    fn secure_end_to_end_needs_tls_and_srtp_on_every_leg() {
        let tls = SignallingTransport::Tls;
        let udp = SignallingTransport::Udp;
        assert!(
            call(vec![
                leg(LegRole::Caller, tls, true),
                leg(LegRole::Callee, tls, true)
            ])
            .secure_end_to_end
        );
        let mixed = call(vec![
            leg(LegRole::Caller, tls, true),
            leg(LegRole::Callee, udp, false),
        ]);
        assert!(!mixed.secure_end_to_end);
        assert!(mixed.legs[0].secure);
        assert!(!mixed.legs[1].secure);
        assert!(
            !call(vec![
                leg(LegRole::Caller, tls, false),
                leg(LegRole::Callee, tls, true)
            ])
            .secure_end_to_end
        );
        assert!(
            !call(vec![
                leg(LegRole::Caller, udp, true),
                leg(LegRole::Callee, tls, true)
            ])
            .secure_end_to_end
        );
        assert!(!call(Vec::new()).secure_end_to_end);
    }

    #[test]
    fn one_direction_of_srtp_is_not_protected() {
        let mut half = leg(LegRole::Caller, SignallingTransport::Tls, true);
        half.media.outbound_suite = None;
        half.refresh();
        assert!(!half.secure);
    }

    #[test]
    fn cdr_line_is_one_json_object() {
        let line = call(vec![leg(LegRole::Caller, SignallingTransport::Tls, true)]).cdr_line();
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["secure_end_to_end"], true);
        assert_eq!(value["legs"][0]["signalling"]["transport"], "tls");
        assert_eq!(
            value["legs"][0]["media"]["inbound_suite"],
            "AES_CM_128_HMAC_SHA1_80"
        );
    }
}
