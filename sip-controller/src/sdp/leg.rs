//! "The SDP to send on leg B": the SDP received on leg A with every line the relay owns
//! rewritten for leg B, and every other line copied verbatim.
//!
//! The caller (the B2BUA, or the NG server) has negotiated each media section (see
//! [`super::negotiation`]) and allocated relay ports; it describes leg B in a
//! [`LegSdpPlan`]. [`rewrite_for_leg`] then:
//!
//! - sets the `o=` sess-version to the leg's own counter (RFC 3264 §8: the B2BUA keeps one
//!   origin per leg and increments its version on every change), and optionally the whole
//!   origin identity;
//! - points every `c=` at the relay; a `c=` holding `0.0.0.0`/`::` (RFC 2543 hold, RFC 3264
//!   §8.4) becomes the unspecified address of the relay's family, so the hold survives;
//! - sets each `m=` port and proto; a section received with port 0 stays port 0;
//! - replaces the `a=crypto` lines with leg B's (none for plain or disabled sections), so
//!   leg A's keys never reach leg B; session-level `a=crypto`, `a=key-mgmt` and `k=` lines
//!   are removed for the same reason;
//! - sets `a=rtcp` / `a=rtcp-mux` for leg B's RTCP (removes `a=rtcp` on disabled sections);
//! - removes ICE (the relay is the media endpoint; it does not run ICE).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use srtp::sdes::CryptoAttribute;

use super::{
    negotiation::{MediaOffer, Negotiated},
    Connection, Rtcp, Sdp, SdpError, TransportProtocol, MAX_LINES, MAX_SDP_LEN,
};

/// The origin identity a leg uses in place of the received one (topology hiding, NG
/// `replace-origin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginIdentity<'p> {
    /// `o=` username (visible ASCII without spaces, `-` for none).
    pub username: &'p str,
    /// `o=` sess-id.
    pub session_id: u64,
    /// `o=` unicast address.
    pub address: IpAddr,
}

/// How the `o=` line changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginUpdate<'p> {
    /// The leg's own sess-version counter (RFC 3264 §8).
    pub version: u64,
    /// A replacement identity, or `None` to keep the received username, sess-id and address.
    pub identity: Option<OriginIdentity<'p>>,
}

/// The relay's RTCP on one media section of a leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RtcpPlan {
    /// RTCP on its own port: `a=rtcp:<port>`, no `a=rtcp-mux`.
    Port(u16),
    /// RTCP multiplexed on the RTP port (RFC 5761): `a=rtcp-mux`, no `a=rtcp`.
    Mux,
    /// An offer of RTCP mux with a fallback port for peers that refuse it
    /// (RFC 5761 §5.1.1): `a=rtcp-mux` and `a=rtcp:<port>`.
    MuxWithFallback(u16),
}

/// Leg B's side of one media section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaPlan {
    /// The relay's RTP port on leg B; 0 disables the stream.
    pub port: u16,
    /// The profile for the `m=` line; `None` keeps the received proto (non-RTP media).
    pub proto: Option<TransportProtocol>,
    /// The `a=crypto` lines to send (our offered lines, or our one answer line); empty for
    /// plain RTP.
    pub crypto: Vec<CryptoAttribute>,
    /// The relay's RTCP.
    pub rtcp: RtcpPlan,
}

impl MediaPlan {
    /// The plan for answering with what [`super::answer_offer`] or
    /// [`super::process_answer`] negotiated.
    pub fn from_negotiated(negotiated: &Negotiated, port: u16, rtcp: RtcpPlan) -> Self {
        let port = if matches!(negotiated, Negotiated::Disabled) {
            0
        } else {
            port
        };
        Self {
            port,
            proto: negotiated.proto(),
            crypto: negotiated.sdp_crypto().to_vec(),
            rtcp,
        }
    }

    /// The plan for sending what [`super::offer_media`] decided.
    pub fn from_offer(offer: &MediaOffer, port: u16, rtcp: RtcpPlan) -> Self {
        let port = if matches!(offer, MediaOffer::Disabled) {
            0
        } else {
            port
        };
        Self {
            port,
            proto: offer.proto(),
            crypto: offer.crypto().to_vec(),
            rtcp,
        }
    }
}

/// Everything leg B's SDP needs from the relay and the negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegSdpPlan<'p> {
    /// The relay's media address on leg B (IPv4 or IPv6; `c=` follows its family).
    pub address: IpAddr,
    /// The `o=` change.
    pub origin: OriginUpdate<'p>,
    /// One plan per media section of the received SDP, in order.
    pub media: Vec<MediaPlan>,
}

/// The address a `c=` line gets: the relay's, or the relay family's unspecified address for
/// a held stream.
fn relay_address(current: &Connection, relay: IpAddr) -> IpAddr {
    if !current.is_unspecified() {
        return relay;
    }
    match relay {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Produces the SDP to send on leg B from the SDP received on leg A (see the module doc for
/// what changes). The result is checked against [`MAX_SDP_LEN`] and [`MAX_LINES`] so that we
/// never send what we would refuse.
pub fn rewrite_for_leg<'a>(received: &Sdp<'a>, plan: &LegSdpPlan<'_>) -> Result<Sdp<'a>, SdpError> {
    if plan.media.len() != received.media().len() {
        return Err(SdpError::InvalidPlan {
            reason: "one media plan per media section is needed",
        });
    }
    if plan.media.iter().any(|m| {
        m.port != 0 && m.crypto.is_empty() && m.proto.is_some_and(TransportProtocol::is_secure)
    }) {
        return Err(SdpError::InvalidPlan {
            reason: "an RTP/SAVP section needs a=crypto lines",
        });
    }
    let mut out = received.clone();
    if let Some(identity) = plan.origin.identity {
        out.set_origin_identity(identity.username, identity.session_id, identity.address)?;
    }
    out.set_origin_version(plan.origin.version);
    if let Some(current) = out.connection() {
        let address = relay_address(current, plan.address);
        out.set_session_connection(address);
    }
    out.remove_ice();
    out.remove_foreign_keying();
    for (section, media) in out.media_mut().iter_mut().zip(&plan.media) {
        if let Some(current) = section.connection() {
            let address = relay_address(current, plan.address);
            section.set_connection(address);
        }
        if let Some(proto) = media.proto {
            section.set_transport(proto);
        }
        // RFC 3264 §8.2: a disabled stream stays disabled; it carries no keys and no RTCP.
        if section.description().is_disabled() || media.port == 0 {
            section.set_port(0);
            section.replace_crypto(&[]);
            section.set_rtcp(None);
            continue;
        }
        section.set_port(media.port);
        section.replace_crypto(&media.crypto);
        match media.rtcp {
            RtcpPlan::Port(port) => {
                section.set_rtcp(Some(&Rtcp {
                    port,
                    connection: None,
                }));
                section.set_rtcp_mux(false);
            }
            RtcpPlan::Mux => {
                section.set_rtcp(None);
                section.set_rtcp_mux(true);
            }
            RtcpPlan::MuxWithFallback(port) => {
                section.set_rtcp(Some(&Rtcp {
                    port,
                    connection: None,
                }));
                section.set_rtcp_mux(true);
            }
        }
    }
    let lines = out.lines().count();
    let len = out.to_bytes().len();
    if lines > MAX_LINES || len > MAX_SDP_LEN {
        return Err(SdpError::RewriteTooLarge { len, lines });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use srtp::Suite;

    use super::{
        super::{
            answer_offer, offer_media, process_answer,
            tests::{BARESIP_SRTP, HELD_AND_REJECTED, IPV6_BEST_EFFORT},
            KeyReuse, SrtpPolicy, SrtpSettings,
        },
        *,
    };

    const RELAY_A: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    const RELAY_B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    fn parse(input: &str) -> Sdp<'_> {
        match Sdp::parse(input.as_bytes()) {
            Ok(sdp) => sdp,
            Err(e) => panic!("{e}"),
        }
    }

    fn text(sdp: &Sdp<'_>) -> String {
        String::from_utf8(sdp.to_bytes()).expect("UTF-8")
    }

    fn plan(version: u64, media: Vec<MediaPlan>) -> LegSdpPlan<'static> {
        LegSdpPlan {
            address: RELAY_B,
            origin: OriginUpdate {
                version,
                identity: None,
            },
            media,
        }
    }

    /// The PBX's plain answer to our leg B offer.
    const PBX_ANSWER: &str = "v=0\r\n\
o=pbx 55 56 IN IP4 10.0.0.50\r\n\
s=pbx\r\n\
c=IN IP4 10.0.0.50\r\n\
t=0 0\r\n\
m=audio 18000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=rtcp:18001\r\n";

    /// The design's call: the carrier offers SAVP over TLS, the PBX gets plain RTP via the
    /// relay, the PBX's answer goes back to the carrier with our key.
    #[test]
    fn carrier_srtp_offer_becomes_plain_pbx_offer_and_back() {
        let carrier_offer = parse(BARESIP_SRTP);
        let leg_a = SrtpSettings::new(SrtpPolicy::Mandatory);
        let leg_b = SrtpSettings::new(SrtpPolicy::Off);

        // Leg A: decide now (a 488 before the PBX is bothered).
        let a =
            answer_offer(&carrier_offer.media()[0], &leg_a, KeyReuse::Fresh).expect("acceptable");
        // Leg B: plain offer towards the PBX, relay leg B ports 40000 (RTCP 40001).
        let b_offer =
            offer_media(&carrier_offer.media()[0], &leg_b, KeyReuse::Fresh).expect("offer");
        let to_pbx = rewrite_for_leg(
            &carrier_offer,
            &plan(
                1,
                vec![MediaPlan::from_offer(
                    &b_offer,
                    40000,
                    RtcpPlan::Port(40001),
                )],
            ),
        )
        .expect("rewrite");
        assert_eq!(
            text(&to_pbx),
            "v=0\r\n\
o=- 1916440744 1 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 10.0.0.1\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 96 0 8 101\r\n\
b=AS:64\r\n\
a=rtcp:40001\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
a=label:1\r\n\
a=ssrc:1873393283 cname:e1a0a8a9-57b2-4d0c-a4e4-6c0c4e6f6a52\r\n\
a=ptime:20\r\n"
        );

        // The PBX answers plain; the carrier gets relay leg A with our key, same tag/suite.
        let pbx = parse(PBX_ANSWER);
        let b = process_answer(&pbx.media()[0], &b_offer, &leg_b).expect("plain answer");
        assert_eq!(b.sdp_crypto(), []);
        let to_carrier = rewrite_for_leg(
            &pbx,
            &LegSdpPlan {
                address: RELAY_A,
                origin: OriginUpdate {
                    version: 1,
                    identity: Some(OriginIdentity {
                        username: "-",
                        session_id: 900,
                        address: RELAY_A,
                    }),
                },
                media: vec![MediaPlan::from_negotiated(
                    &a.negotiated,
                    30000,
                    RtcpPlan::Mux,
                )],
            },
        )
        .expect("rewrite");
        let ours = a.negotiated.sdp_crypto()[0].sdp_line();
        assert!(
            ours.starts_with("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{ours}"
        );
        assert_eq!(
            text(&to_carrier),
            format!(
                "v=0\r\n\
o=- 900 1 IN IP4 203.0.113.1\r\n\
s=pbx\r\n\
c=IN IP4 203.0.113.1\r\n\
t=0 0\r\n\
m=audio 30000 RTP/SAVP 0 101\r\n\
a=rtcp-mux\r\n\
{ours}\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n"
            )
        );
        // What we send parses back, and carries our key, never theirs.
        let again = Sdp::parse_str(&text(&to_carrier)).expect("parses").media()[0]
            .crypto()
            .collect::<Result<Vec<_>, _>>()
            .expect("valid crypto");
        let (_, keys, _) = match &a.negotiated {
            Negotiated::Srtp {
                proto,
                keys,
                unprotected,
            } => (proto, keys, unprotected),
            other => panic!("{other:?}"),
        };
        assert_eq!(again, std::slice::from_ref(&keys.outbound));
        assert!(
            !text(&to_pbx).contains("RfQpSxhZ"),
            "leg A's key leaked to leg B"
        );
    }

    #[test]
    fn held_stream_stays_held_and_rejected_stream_stays_rejected() {
        let held = parse(HELD_AND_REJECTED);
        let relay_v6 = IpAddr::V6("2001:db8::99".parse::<Ipv6Addr>().expect("v6"));
        let crypto = CryptoAttribute::generate(1, Suite::AesCm128HmacSha1_80).expect("CSPRNG");
        let out = rewrite_for_leg(
            &held,
            &LegSdpPlan {
                address: relay_v6,
                origin: OriginUpdate {
                    version: 12,
                    identity: None,
                },
                media: vec![
                    MediaPlan {
                        port: 41000,
                        proto: Some(TransportProtocol::RtpSavp),
                        crypto: vec![crypto.clone()],
                        rtcp: RtcpPlan::MuxWithFallback(41001),
                    },
                    // The caller asks for a port, but the stream was rejected on leg A.
                    MediaPlan {
                        port: 42000,
                        proto: Some(TransportProtocol::RtpSavp),
                        crypto: vec![crypto.clone()],
                        rtcp: RtcpPlan::Port(42001),
                    },
                ],
            },
        )
        .expect("rewrite");
        assert_eq!(
            text(&out),
            format!(
                "v=0\n\
o=alice 2890844526 12 IN IP4 198.51.100.1\n\
s=-\n\
c=IN IP6 ::\n\
t=0 0\n\
m=audio 41000 RTP/SAVP 0\n\
a=rtcp-mux\n\
a=rtcp:41001\n\
{}\n\
a=sendonly\n\
m=video 0 RTP/SAVP 31\n\
a=rtpmap:31 H261/90000\n",
                crypto.sdp_line()
            )
        );
        assert_eq!(out.direction(0), Some(crate::sdp::Direction::SendOnly));
    }

    #[test]
    fn ipv6_best_effort_offer_to_ipv4_plain_leg_removes_keys_and_ice() {
        let with_ice = format!(
            "{IPV6_BEST_EFFORT}a=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\n\
             a=candidate:1 1 udp 2130706431 2001:db8::5 30000 typ host\r\n"
        );
        let received = parse(&with_ice);
        let out = rewrite_for_leg(
            &received,
            &plan(
                3,
                vec![MediaPlan {
                    port: 40010,
                    proto: Some(TransportProtocol::RtpAvp),
                    crypto: vec![],
                    rtcp: RtcpPlan::Port(40011),
                }],
            ),
        )
        .expect("rewrite");
        assert_eq!(
            text(&out),
            "v=0\r\n\
o=FreeSWITCH 1700000000 3 IN IP6 2001:db8::5\r\n\
s=FreeSWITCH\r\n\
c=IN IP4 10.0.0.1\r\n\
t=0 0\r\n\
m=audio 40010 RTP/AVP 0 101\r\n\
a=rtcp:40011\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=ptime:20\r\n"
        );
    }

    #[test]
    fn plans_that_do_not_fit_are_refused() {
        let received = parse(BARESIP_SRTP);
        let error = rewrite_for_leg(&received, &plan(1, vec![])).expect_err("count");
        assert!(matches!(error, SdpError::InvalidPlan { .. }));
        assert_eq!(error.sip_status(), 500);
        let savp_without_keys = MediaPlan {
            port: 4000,
            proto: Some(TransportProtocol::RtpSavp),
            crypto: vec![],
            rtcp: RtcpPlan::Mux,
        };
        assert!(matches!(
            rewrite_for_leg(&received, &plan(1, vec![savp_without_keys])),
            Err(SdpError::InvalidPlan { .. })
        ));
        let bad_user = LegSdpPlan {
            address: RELAY_B,
            origin: OriginUpdate {
                version: 1,
                identity: Some(OriginIdentity {
                    username: "two words",
                    session_id: 1,
                    address: RELAY_B,
                }),
            },
            media: vec![MediaPlan::from_negotiated(
                &Negotiated::Plain {
                    proto: TransportProtocol::RtpAvp,
                },
                4000,
                RtcpPlan::Mux,
            )],
        };
        assert!(matches!(
            rewrite_for_leg(&received, &bad_user),
            Err(SdpError::InvalidPlan { .. })
        ));
    }

    #[test]
    fn a_rewrite_that_would_exceed_the_limits_is_refused() {
        // 32 sections of 15 lines: 485 lines in; a=rtcp-mux, a=rtcp and a=crypto per section
        // make 581 out.
        let section = format!("m=audio 4000 RTP/AVP 0\r\n{}", "a=x\r\n".repeat(14));
        let input = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n{}",
            section.repeat(32)
        );
        let received = parse(&input);
        let crypto = CryptoAttribute::generate(1, Suite::AesCm128HmacSha1_80).expect("CSPRNG");
        let media = (0..32)
            .map(|_| MediaPlan {
                port: 5000,
                proto: Some(TransportProtocol::RtpSavp),
                crypto: vec![crypto.clone()],
                rtcp: RtcpPlan::MuxWithFallback(5001),
            })
            .collect();
        let error = rewrite_for_leg(&received, &plan(2, media)).expect_err("too large");
        assert!(
            matches!(error, SdpError::RewriteTooLarge { lines: 581, .. }),
            "{error:?}"
        );
    }

    /// Deterministic xorshift64*, so a failure names a reproducible round.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).expect("small")).expect("small")
        }
    }

    /// The fuzz target in miniature: mutated SDPs never panic the parser; what it accepts
    /// round-trips byte for byte, and its leg rewrite parses again.
    #[test]
    fn mutated_sdp_round_trips_and_rewrites_to_valid_sdp() {
        let seeds = [
            BARESIP_SRTP,
            HELD_AND_REJECTED,
            IPV6_BEST_EFFORT,
            PBX_ANSWER,
        ];
        let alphabet: &[u8] = b" =:/\r\n0123456789amcov\0\xc3";
        let crypto = CryptoAttribute::generate(1, Suite::AesCm128HmacSha1_80).expect("CSPRNG");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for round in 0..5_000 {
            let mut bytes = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len() + 1);
                let byte = alphabet[rng.below(alphabet.len())];
                match rng.below(3) {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ if at < bytes.len() => bytes[at] = byte,
                    _ => bytes.push(byte),
                }
            }
            let Ok(sdp) = Sdp::parse(&bytes) else {
                continue;
            };
            accepted += 1;
            assert_eq!(sdp.to_bytes(), bytes, "round {round}");
            let media = sdp
                .media()
                .iter()
                .map(|_| MediaPlan {
                    port: 40000,
                    proto: Some(TransportProtocol::RtpSavp),
                    crypto: vec![crypto.clone()],
                    rtcp: RtcpPlan::Port(40001),
                })
                .collect();
            let out = rewrite_for_leg(&sdp, &plan(9, media)).expect("rewrite");
            let out_bytes = out.to_bytes();
            let again = Sdp::parse(&out_bytes).expect("the rewrite parses");
            assert_eq!(again.to_bytes(), out_bytes, "round {round}");
        }
        assert!(
            accepted > 500,
            "only {accepted} mutated inputs were accepted"
        );
    }
}
