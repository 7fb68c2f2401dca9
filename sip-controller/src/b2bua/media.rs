//! Per-call media state: what each media section negotiated on each leg, and the relay session
//! that carries it (one relayd leg per media section per side: `a<i>` faces the caller, `b<i>`
//! the callee, forwarding to each other).

use std::net::IpAddr;

use crate::{
    config::SrtpMode,
    relay_client::{CryptoSpec, LatchMode, LegSpec, Remote, SessionSpec, SessionView},
    sdp::{
        negotiation::{MediaOffer, Negotiated, SrtpPolicy, SrtpSettings},
        MediaSection, RtcpPlan, Sdp, SdpError,
    },
};

/// Most media sections a call may carry (two relay legs each, relayd allows 8 legs).
pub const MAX_MEDIA: usize = 4;

/// The SRTP settings for a configured mode and suites.
pub fn settings(mode: SrtpMode, suites: &[String]) -> SrtpSettings {
    let policy = match mode {
        SrtpMode::Mandatory => SrtpPolicy::Mandatory,
        SrtpMode::Optional => SrtpPolicy::Optional,
        SrtpMode::Off => SrtpPolicy::Off,
    };
    let mut settings = SrtpSettings::new(policy);
    let suites = crate::config::parse_suites(suites);
    if !suites.is_empty() {
        settings.suites = suites;
    }
    settings
}

/// One media section of a call.
#[derive(Clone, Debug)]
pub struct MediaState {
    /// What leg `a<i>` (caller side) negotiated.
    pub a: Option<Negotiated>,
    /// What leg `b<i>` (callee side) negotiated.
    pub b: Option<Negotiated>,
    /// Our offer in flight to the answering side (callee for the first INVITE, the other leg
    /// for re-INVITEs).
    pub offer: Option<MediaOffer>,
    /// The caller's media address from its SDP.
    pub a_remote: Option<Remote>,
    /// The callee's media address from its SDP.
    pub b_remote: Option<Remote>,
    /// The caller offered RTCP mux (we accept it on leg `a<i>`).
    pub a_mux: bool,
    /// Leg `b<i>` multiplexes RTCP: we offered it and the callee's answer accepted it.
    pub b_mux: bool,
    /// We offer RTCP mux to the callee (the caller offered it), with a fallback RTCP port for
    /// a callee that refuses it (RFC 5761 §5.1.1).
    pub b_mux_offered: bool,
}

impl MediaState {
    /// Whether the section is relayed (not disabled).
    pub fn active(&self) -> bool {
        !matches!(self.a, Some(Negotiated::Disabled))
            && !matches!(self.b, Some(Negotiated::Disabled))
    }

    /// The same section seen from the other side of the call: what was negotiated for the
    /// caller becomes the callee's and the other way round (delayed offer, where the callee
    /// makes the offer we answer).
    #[must_use]
    pub fn reversed(self) -> Self {
        Self {
            a: self.b,
            b: self.a,
            offer: self.offer,
            a_remote: self.b_remote,
            b_remote: self.a_remote,
            // We answer the callee's offer, accepting its mux; the caller is offered a
            // separate RTCP port (no mux) so its answer needs no renegotiation of the leg.
            a_mux: false,
            b_mux: self.a_mux,
            b_mux_offered: false,
        }
    }

    /// What `side` (`'a'` or `'b'`) negotiated.
    pub fn negotiated(&self, side: char) -> Option<&Negotiated> {
        if side == 'a' {
            self.a.as_ref()
        } else {
            self.b.as_ref()
        }
    }
}

/// The peer's media address of a section: `c=` (media level, else session level) and `m=`
/// port, `a=rtcp` when present. `None` for hold with an unspecified address or port 0.
pub fn remote_of(sdp: &Sdp<'_>, section: &MediaSection<'_>) -> Result<Option<Remote>, SdpError> {
    let port = section.description().port();
    let Some(connection) = section.connection().or_else(|| sdp.connection()) else {
        return Ok(None);
    };
    let Some(address) = connection.ip() else {
        return Ok(None);
    };
    if port == 0 || address.is_unspecified() {
        return Ok(None);
    }
    let rtcp_port = section.rtcp()?.map(|rtcp| rtcp.port);
    Ok(Some(Remote {
        address,
        rtp_port: port,
        rtcp_port: if section.rtcp_mux() { None } else { rtcp_port },
    }))
}

/// relayd crypto spec of one direction (the attribute comes from negotiation).
fn crypto(negotiated: Option<&Negotiated>, inbound: bool) -> Result<Option<CryptoSpec>, String> {
    match negotiated {
        Some(Negotiated::Srtp { keys, .. }) => {
            let attribute = if inbound {
                &keys.inbound
            } else {
                &keys.outbound
            };
            CryptoSpec::from_sdes(attribute)
                .map(Some)
                .map_err(|e| e.to_string())
        }
        _ => Ok(None),
    }
}

/// The relay session for a call's media as known so far.
pub fn session_spec(
    media: &[MediaState],
    a_interface: &str,
    b_interface: &str,
    media_timeout_secs: u64,
) -> Result<SessionSpec, String> {
    let mut legs = Vec::new();
    for (i, m) in media.iter().enumerate() {
        if !m.active() {
            continue;
        }
        let (a_id, b_id) = (format!("a{i}"), format!("b{i}"));
        legs.push(LegSpec {
            id: a_id.clone(),
            interface: a_interface.to_owned(),
            rtcp_mux: m.a_mux,
            remote: m.a_remote,
            latch: LatchMode::Learn,
            strict_source: true,
            inbound_crypto: crypto(m.a.as_ref(), true)?,
            outbound_crypto: crypto(m.a.as_ref(), false)?,
            forward_to: Some(b_id.clone()),
        });
        legs.push(LegSpec {
            id: b_id,
            interface: b_interface.to_owned(),
            rtcp_mux: m.b_mux,
            remote: m.b_remote,
            latch: LatchMode::Learn,
            strict_source: true,
            inbound_crypto: crypto(m.b.as_ref(), true)?,
            outbound_crypto: crypto(m.b.as_ref(), false)?,
            forward_to: Some(a_id),
        });
    }
    Ok(SessionSpec {
        legs,
        media_timeout_secs: Some(media_timeout_secs),
    })
}

/// The relay's RTP port and RTCP plan of leg `<side><i>` (0 for a disabled section).
pub fn relay_port(view: &SessionView, side: char, index: usize, mux: bool) -> (u16, RtcpPlan) {
    view.leg(&format!("{side}{index}"))
        .map_or((0, RtcpPlan::Mux), |leg| {
            let rtcp = if mux || leg.rtcp_mux {
                RtcpPlan::Mux
            } else {
                RtcpPlan::Port(leg.local.rtcp_port)
            };
            (leg.local.rtp_port, rtcp)
        })
}

/// The relay's address on one side (first leg of that side), for `c=`.
pub fn relay_address(view: &SessionView, side: char) -> Option<IpAddr> {
    view.legs
        .iter()
        .find(|leg| leg.id.starts_with(side))
        .map(|leg| leg.local.address)
}

/// The suite names of leg `<side>` for the verdict: (inbound, outbound) of its first active
/// section when every active section is SRTP, else none.
pub fn suites(media: &[MediaState], side: char) -> (Option<String>, Option<String>) {
    // A leg is only as protected as its weakest stream: one plain stream (say, video next to
    // SRTP audio) makes the whole leg plain in the verdict.
    let mut active = media.iter().filter(|m| m.active()).peekable();
    if active.peek().is_none() {
        return (None, None);
    }
    let mut first = None;
    for m in active {
        match m.negotiated(side) {
            Some(Negotiated::Srtp { keys, .. }) => {
                first.get_or_insert((keys.inbound.suite, keys.outbound.suite));
            }
            _ => return (None, None),
        }
    }
    first.map_or((None, None), |(inbound, outbound)| {
        (
            Some(inbound.sdes_name().to_owned()),
            Some(outbound.sdes_name().to_owned()),
        )
    })
}

#[cfg(test)]
mod tests {
    use srtp::{sdes::CryptoAttribute, Suite};

    use super::*;
    use crate::sdp::{negotiation::SrtpKeys, TransportProtocol};

    fn state(a: Negotiated) -> MediaState {
        MediaState {
            a: Some(a),
            b: None,
            offer: None,
            a_remote: None,
            b_remote: None,
            a_mux: false,
            b_mux: false,
            b_mux_offered: false,
        }
    }

    fn srtp() -> Negotiated {
        let key = |tag| CryptoAttribute::generate(tag, Suite::AesCm128HmacSha1_80).expect("key");
        Negotiated::Srtp {
            proto: TransportProtocol::RtpSavp,
            keys: SrtpKeys {
                inbound: key(1),
                outbound: key(1),
            },
            unprotected: crate::sdp::UnprotectedParams::default(),
        }
    }

    #[test]
    fn a_leg_with_one_plain_stream_has_no_suite_in_the_verdict() {
        let plain = Negotiated::Plain {
            proto: TransportProtocol::RtpAvp,
        };
        let both = [state(srtp()), state(srtp())];
        assert_eq!(
            suites(&both, 'a'),
            (
                Some("AES_CM_128_HMAC_SHA1_80".to_owned()),
                Some("AES_CM_128_HMAC_SHA1_80".to_owned())
            )
        );
        assert_eq!(suites(&[state(srtp()), state(plain)], 'a'), (None, None));
        // A disabled stream does not count.
        assert!(suites(&[state(srtp()), state(Negotiated::Disabled)], 'a')
            .0
            .is_some());
        assert_eq!(suites(&[], 'a'), (None, None));
    }
}
