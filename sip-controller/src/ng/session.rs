//! One NG call: its two sides, what each media section negotiated on each side, the relayd
//! session that carries it, and the pure steps of offer, answer and query.
//!
//! ```text
//!   side A (from-tag of the first offer)            side B (the other tag)
//!   ──offer SDP──▶ [answer_offer: A's keys now]  ── our offer (offer_media) ──▶
//!   ◀─our answer── [A's relay legs o<i>]  relayd  [B's relay legs a<i>] ◀──answer SDP──
//!                                                 (process_answer: B's keys)
//! ```
//!
//! Each media section is two relayd legs forwarding to each other: `o<i>` faces side A (the
//! from-tag side of the first offer) and `a<i>` side B. A later offer may come from either
//! side (a re-INVITE from the callee): the sender is whichever side owns the message's
//! from-tag. The SDP negotiation and rewriting are the B2BUA's ([`crate::sdp`]); this module
//! adds the NG options (transport-protocol, SDES, rtcp-mux, replace, ...).
//!
//! Everything here is IO-free: the engine calls relayd between [`plan_offer`]/[`plan_answer`]
//! (which produce the [`SessionSpec`] to PUT) and [`Call::commit_offer`]/
//! [`Call::commit_answer`] (which render the SDP from relayd's view and update the state).

use std::{
    fmt::{self, Write as _},
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use sha2::{Digest, Sha256};

use super::{
    bencode::Value,
    options::{
        AddressSource, EndpointLearning, Options, RtcpMuxOptions, SuiteName, TransportOverride,
    },
};
use crate::{
    relay_client::{CryptoSpec, LatchMode, LegSpec, Remote, SessionSpec, SessionView},
    sdp::{
        answer_offer, offer_media, process_answer, rewrite_for_leg, Connection, KeyReuse,
        LegSdpPlan, MediaOffer, MediaPlan, MediaSection, Negotiated, OriginIdentity, OriginUpdate,
        Rtcp, RtcpPlan, Sdp, SdpError, SrtpPolicy, SrtpSettings, Suite, Transport,
        TransportProtocol, UnprotectedParams,
    },
};

/// Most active media sections in one call: two relayd legs each, and relayd allows 8 legs
/// per session.
pub const MAX_MEDIA: usize = 4;

/// The key lifetime `SDES-lifetime` writes (rtpengine's `2^31`).
const SDES_LIFETIME: u64 = 1 << 31;

/// Why a call step failed. The `Display` text is the NG `error-reason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The SDP did not parse or could not be negotiated or rewritten.
    #[error("{0}")]
    Sdp(#[from] SdpError),
    /// A required key is missing.
    #[error("No {key} in message")]
    Missing {
        /// The key (`sdp`, `call-id`, `from-tag`, `to-tag`).
        key: &'static str,
    },
    /// No active media section.
    #[error("the SDP has no active media stream")]
    NoActiveMedia,
    /// More active media sections than relayd can carry.
    #[error("the SDP has {count} active media streams; at most {MAX_MEDIA} are supported")]
    TooManyMedia {
        /// Active sections.
        count: usize,
    },
    /// An answer whose media count differs from the offer's (RFC 3264 §6).
    #[error("the answer has {answered} media sections but {offered} were offered (RFC 3264 §6)")]
    MediaCountMismatch {
        /// Sections offered.
        offered: usize,
        /// Sections answered.
        answered: usize,
    },
    /// An answer without an offer in this call, or from a side that did not receive it.
    #[error("no offer to answer: the last offer did not come from from-tag '{from_tag}'")]
    NoOffer {
        /// The from-tag of the answer.
        from_tag: String,
    },
    /// A tag that belongs to neither side of an answered call.
    #[error("Unknown tag '{tag}' in call")]
    UnknownTag {
        /// The tag.
        tag: String,
    },
    /// SDES options that leave nothing to offer.
    #[error("SDES options leave no SRTP suite to offer")]
    NoSuiteLeft,
    /// `transport-protocol` asks for SRTP while `SDES=off`.
    #[error("transport-protocol {proto} needs SDES keys, but SDES is off")]
    SecureWithoutSdes {
        /// The profile asked for.
        proto: TransportProtocol,
    },
    /// `transport-protocol` in an answer that differs from the negotiated profile.
    #[error("transport-protocol {asked} in an answer: the offerer negotiated {negotiated}")]
    AnswerTransport {
        /// What the answer asked for.
        asked: TransportProtocol,
        /// What the offerer's side negotiated.
        negotiated: TransportProtocol,
    },
    /// `address-family` that the relay interface cannot provide.
    #[error("address-family {asked} asked but the relay interface '{interface}' is {actual}")]
    AddressFamily {
        /// Asked for.
        asked: &'static str,
        /// The interface.
        interface: String,
        /// What it has.
        actual: &'static str,
    },
    /// `asymmetric` or `endpoint-learning=off` without a usable address in the SDP.
    #[error("media {media}: no latching requested but the SDP has no usable address")]
    FixedWithoutAddress {
        /// The media section.
        media: usize,
    },
    /// relayd's view lacks a leg we programmed.
    #[error("relayd did not return leg '{leg}'")]
    RelayLegMissing {
        /// The leg id.
        leg: String,
    },
    /// A relay key could not be expressed.
    #[error("relay crypto: {reason}")]
    Crypto {
        /// What failed (never key material).
        reason: String,
    },
}

/// One side of a call: A sent the first offer, B answered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The from-tag side of the first offer: relay legs `o<i>`.
    A,
    /// The to-tag side: relay legs `a<i>`.
    B,
}

impl Side {
    /// The other side.
    #[must_use]
    pub const fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::A => 0,
            Self::B => 1,
        }
    }

    /// The relay leg id of media section `i` on this side.
    pub fn leg_id(self, i: usize) -> String {
        match self {
            Self::A => format!("o{i}"),
            Self::B => format!("a{i}"),
        }
    }
}

/// The relayd session id of a call: `ng-` and 40 hex digits of SHA-256(call-id), because
/// relayd ids are `[A-Za-z0-9._-]{1,64}` and SIP call-ids are not.
pub fn relay_session_id(call_id: &str) -> String {
    let digest = Sha256::digest(call_id.as_bytes());
    let mut id = String::with_capacity(43);
    id.push_str("ng-");
    for byte in digest.iter().take(20) {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// How the engine resolved policy for one message (interfaces, strictness).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// relayd interface facing the sender of the message.
    pub sender_interface: Option<String>,
    /// relayd interface facing the receiver.
    pub receiver_interface: Option<String>,
    /// The configured default strictness (`strict-source` unless `media-handover`).
    pub strict_source: bool,
    /// relayd's media timeout.
    pub media_timeout_secs: u64,
    /// The interface for sides that never named one.
    pub default_interface: String,
}

/// What we sent a side, to keep its `o=` and `s=` lines consistent (RFC 3264 §8). `Debug`
/// leaves out the SDP (it carries our keys).
#[derive(Clone, Default, PartialEq, Eq)]
struct Sent {
    /// Our `o=` version counter for this side.
    version: u64,
    /// The last SDP we sent this side.
    last: Option<Vec<u8>>,
    /// Our `o=` sess-id for this side (`origin-full`).
    origin_session: u64,
    /// The `o=` username fixed by `replace=username`.
    username: Option<String>,
    /// The `s=` value fixed by `replace=session-name`.
    session_name: Option<String>,
}

impl fmt::Debug for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sent")
            .field("version", &self.version)
            .field("last", &self.last.as_ref().map(Vec::len))
            .field("origin_session", &self.origin_session)
            .field("username", &self.username)
            .field("session_name", &self.session_name)
            .finish()
    }
}

/// One side of a call (rtpengine's "monologue"). `Debug` leaves out the SDP it sent (it
/// carries its keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Monologue {
    /// The SIP tag, once known.
    pub tag: Option<String>,
    /// `label`.
    pub label: Option<String>,
    /// `via-branch` of its last message.
    pub via_branch: Option<String>,
    /// When it was created (UNIX seconds).
    pub created_unix: u64,
    /// relayd interface.
    pub interface: String,
    /// Drop media from other sources once latched.
    pub strict_source: bool,
    /// Use the signalled address only.
    pub fixed_remote: bool,
    /// The last SDP this side sent (offer or answer): the template of what the other side
    /// gets.
    received_sdp: Option<String>,
    sent: Sent,
}

impl fmt::Debug for Monologue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monologue")
            .field("tag", &self.tag)
            .field("label", &self.label)
            .field("via_branch", &self.via_branch)
            .field("created_unix", &self.created_unix)
            .field("interface", &self.interface)
            .field("strict_source", &self.strict_source)
            .field("fixed_remote", &self.fixed_remote)
            .field("received_sdp", &self.received_sdp.as_ref().map(String::len))
            .field("sent", &self.sent)
            .finish()
    }
}

impl Monologue {
    fn new(tag: Option<String>, interface: String, created_unix: u64, strict: bool) -> Self {
        Self {
            tag,
            label: None,
            via_branch: None,
            created_unix,
            interface,
            strict_source: strict,
            fixed_remote: false,
            received_sdp: None,
            sent: Sent {
                origin_session: u64::from(getrandom::u32().unwrap_or(0x5eed_0001)),
                ..Sent::default()
            },
        }
    }
}

/// One side of one media section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SideMedia {
    /// Keys and profile negotiated for this side's leg.
    pub negotiated: Option<Negotiated>,
    /// What we last offered this side (to process its answer).
    pub offer: Option<MediaOffer>,
    /// The settings of that offer.
    settings: Option<SrtpSettings>,
    /// The peer's media address (signalled).
    pub remote: Option<Remote>,
    /// The relay leg multiplexes RTCP on the RTP port.
    pub mux: bool,
    /// The profile this side uses, for statistics.
    pub proto: Option<String>,
}

/// One media section of the call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaSlot {
    /// `audio`, `video`, ...
    pub kind: String,
    /// Whether relay legs exist for it (neither side disabled it).
    pub active: bool,
    sides: [SideMedia; 2],
}

impl MediaSlot {
    /// One side of the section.
    pub fn side(&self, side: Side) -> &SideMedia {
        &self.sides[side.index()]
    }

    fn side_mut(&mut self, side: Side) -> &mut SideMedia {
        &mut self.sides[side.index()]
    }
}

/// A call as the NG server tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The SIP Call-ID.
    pub call_id: String,
    /// relayd's session id.
    pub relay_id: String,
    /// When it was created (UNIX seconds).
    pub created_unix: u64,
    /// Last offer/answer/delete (UNIX seconds).
    pub last_signal_unix: u64,
    /// Last offer/answer (monotonic).
    pub last_signal: Instant,
    /// Sides A and B.
    sides: [Monologue; 2],
    /// Media sections in m= order.
    pub media: Vec<MediaSlot>,
    /// Which side sent the last offer.
    pub last_offer_from: Option<Side>,
    /// How many media sections the last offer had.
    last_offer_len: usize,
    /// Whether an answer has been processed.
    pub answered: bool,
    /// When a delayed delete is due.
    pub delete_at: Option<Instant>,
    /// When relayd was last asked about media timeouts.
    pub last_media_check: Option<Instant>,
    /// relayd's last view (addresses when an answer needs no PUT).
    pub last_view: Option<SessionView>,
}

impl Call {
    /// A new call whose side A has `from_tag`.
    pub fn new(call_id: &str, from_tag: &str, policy: &Policy, now: Instant, unix: u64) -> Self {
        let interface = |name: &Option<String>| {
            name.clone()
                .unwrap_or_else(|| policy.default_interface.clone())
        };
        Self {
            call_id: call_id.to_owned(),
            relay_id: relay_session_id(call_id),
            created_unix: unix,
            last_signal_unix: unix,
            last_signal: now,
            sides: [
                Monologue::new(
                    Some(from_tag.to_owned()),
                    interface(&policy.sender_interface),
                    unix,
                    policy.strict_source,
                ),
                Monologue::new(
                    None,
                    interface(&policy.receiver_interface),
                    unix,
                    policy.strict_source,
                ),
            ],
            media: Vec::new(),
            last_offer_from: None,
            last_offer_len: 0,
            answered: false,
            delete_at: None,
            last_media_check: None,
            last_view: None,
        }
    }

    /// One side.
    pub fn side(&self, side: Side) -> &Monologue {
        &self.sides[side.index()]
    }

    fn side_mut(&mut self, side: Side) -> &mut Monologue {
        &mut self.sides[side.index()]
    }

    /// The side that sends an offer with `from_tag`. Before the call is answered an unknown
    /// from-tag takes over side A (a new offer replacing the first); afterwards it is an
    /// error.
    pub fn offer_side(&self, from_tag: &str) -> Result<Side, CallError> {
        if self.side(Side::A).tag.as_deref() == Some(from_tag) {
            return Ok(Side::A);
        }
        if self.side(Side::B).tag.as_deref() == Some(from_tag) {
            return Ok(Side::B);
        }
        if self.answered {
            return Err(CallError::UnknownTag {
                tag: from_tag.to_owned(),
            });
        }
        Ok(Side::A)
    }

    /// The side that sent the offer an answer (with `from_tag`) answers.
    pub fn answer_offerer(&self, from_tag: &str) -> Result<Side, CallError> {
        let offerer = [Side::A, Side::B]
            .into_iter()
            .find(|s| self.side(*s).tag.as_deref() == Some(from_tag))
            .ok_or_else(|| CallError::UnknownTag {
                tag: from_tag.to_owned(),
            })?;
        if self.last_offer_from != Some(offerer) {
            return Err(CallError::NoOffer {
                from_tag: from_tag.to_owned(),
            });
        }
        Ok(offerer)
    }

    /// Whether a message's tags name this call (a delete or query).
    pub fn matches_tag(&self, tag: &str) -> bool {
        self.sides.iter().any(|m| m.tag.as_deref() == Some(tag))
    }

    /// The relayd session for the media as known now (legs of active sections only).
    pub fn session_spec(&self, media_timeout_secs: u64) -> Result<SessionSpec, CallError> {
        let mut legs = Vec::new();
        for (i, slot) in self.media.iter().enumerate() {
            if !slot.active {
                continue;
            }
            for side in [Side::A, Side::B] {
                let mono = self.side(side);
                let media = slot.side(side);
                let (inbound, outbound) = match &media.negotiated {
                    Some(Negotiated::Srtp { keys, .. }) => {
                        (Some(crypto(&keys.inbound)?), Some(crypto(&keys.outbound)?))
                    }
                    _ => (None, None),
                };
                let fixed = mono.fixed_remote && media.remote.is_some();
                legs.push(LegSpec {
                    id: side.leg_id(i),
                    interface: mono.interface.clone(),
                    rtcp_mux: media.mux,
                    remote: media.remote,
                    latch: if fixed {
                        LatchMode::Fixed
                    } else {
                        LatchMode::Learn
                    },
                    strict_source: mono.strict_source,
                    inbound_crypto: inbound,
                    outbound_crypto: outbound,
                    forward_to: Some(side.other().leg_id(i)),
                });
            }
        }
        Ok(SessionSpec {
            legs,
            media_timeout_secs: Some(media_timeout_secs.clamp(1, 86_400)),
        })
    }
}

fn crypto(attribute: &crate::sdp::CryptoAttribute) -> Result<CryptoSpec, CallError> {
    CryptoSpec::from_sdes(attribute).map_err(|e| CallError::Crypto {
        reason: e.to_string(),
    })
}

/// The peer's media address of a section under the address options: `media-address` wins,
/// then the SIP source (`SIP-source-address` with `received-from`), then the SDP. `None` for
/// port 0 or a hold address (`0.0.0.0`, RFC 3264 §8.4).
fn remote_of(
    sdp: &Sdp<'_>,
    section: &MediaSection<'_>,
    options: &Options,
) -> Result<Option<Remote>, SdpError> {
    let port = section.description().port();
    let sdp_address = section
        .connection()
        .or_else(|| sdp.connection())
        .and_then(Connection::ip);
    let Some(sdp_address) = sdp_address else {
        return Ok(None);
    };
    if port == 0 || sdp_address.is_unspecified() {
        return Ok(None);
    }
    let address = match (
        options.media_address,
        options.address_source,
        options.received_from,
    ) {
        (Some(address), _, _) | (None, AddressSource::SipSource, Some(address)) => address,
        _ => sdp_address,
    };
    let rtcp_port = section.rtcp()?.map(|rtcp| rtcp.port);
    let mux = section.rtcp_mux();
    Ok(Some(Remote {
        address,
        rtp_port: port,
        rtcp_port: if mux {
            None
        } else {
            Some(rtcp_port.unwrap_or_else(|| port.saturating_add(1)))
        },
    }))
}

/// Puts the suites named in `preferred` first, in that order.
fn reorder(suites: &mut Vec<Suite>, preferred: &[SuiteName]) {
    let mut ordered: Vec<Suite> = preferred
        .iter()
        .filter_map(|n| match n {
            SuiteName::Known(s) if suites.contains(s) => Some(*s),
            _ => None,
        })
        .collect();
    ordered.dedup();
    for suite in suites.iter() {
        if !ordered.contains(suite) {
            ordered.push(*suite);
        }
    }
    *suites = ordered;
}

/// Settings for answering the sender's offer on its own leg.
fn sender_settings(options: &Options) -> SrtpSettings {
    let mut settings = SrtpSettings::new(SrtpPolicy::Optional);
    reorder(&mut settings.suites, &options.sdes.offerer_pref);
    // rtpengine copies weakening parameters from the offer; we accept them only when the
    // request names them.
    settings.accept_unprotected = [
        options.sdes.unencrypted_srtp,
        options.sdes.unencrypted_srtcp,
        options.sdes.unauthenticated_srtp,
    ]
    .contains(&Some(true));
    settings
}

/// Settings for our offer to the receiver for one section the sender offered.
fn receiver_settings(
    section: &MediaSection<'_>,
    sender: Option<&Negotiated>,
    options: &Options,
) -> Result<SrtpSettings, CallError> {
    let sdes = &options.sdes;
    let mut settings = SrtpSettings::new(SrtpPolicy::Off);
    let original = match section.description().transport() {
        Transport::Rtp(proto) => Some(proto),
        _ => None,
    };
    match options.transport {
        Some(TransportOverride::Profile(proto)) => {
            if proto.is_secure() && sdes.off {
                return Err(CallError::SecureWithoutSdes { proto });
            }
            settings.transport = Some(proto);
            settings.policy = if proto.is_secure() {
                SrtpPolicy::Mandatory
            } else if options.osrtp_offer && !sdes.off {
                SrtpPolicy::Optional
            } else {
                SrtpPolicy::Off
            };
        }
        _ => {
            settings.policy = match original {
                Some(proto) if proto.is_secure() && sdes.off => {
                    return Err(CallError::SecureWithoutSdes { proto })
                }
                Some(proto) if proto.is_secure() => SrtpPolicy::Mandatory,
                // RFC 8643 best effort passes through, or is created by OSRTP=offer.
                Some(_) if !sdes.off && (section.has_crypto() || options.osrtp_offer) => {
                    SrtpPolicy::Optional
                }
                _ => SrtpPolicy::Off,
            };
        }
    }
    let known = |names: &[SuiteName]| -> Vec<Suite> {
        names
            .iter()
            .filter_map(|n| match n {
                SuiteName::Known(s) => Some(*s),
                SuiteName::Other(_) => None,
            })
            .collect()
    };
    if sdes.only.is_empty() {
        for suite in known(&sdes.exclude) {
            settings.exclude_suite(suite);
        }
    } else {
        settings.only_suites(&known(&sdes.only));
    }
    if sdes.nonew {
        let offered: Vec<Suite> = section
            .crypto()
            .filter_map(|c| c.ok().map(|c| c.suite))
            .collect();
        if !offered.is_empty() {
            settings.suites.retain(|s| offered.contains(s));
        }
        settings.no_new_suites = true;
    }
    reorder(&mut settings.suites, &sdes.order);
    if sdes.lifetime {
        settings.lifetime = Some(SDES_LIFETIME);
    }
    // Session parameters: as the sender's chosen line had them, unless the request says.
    let copied = match sender {
        Some(Negotiated::Srtp { unprotected, .. }) => *unprotected,
        _ => UnprotectedParams::default(),
    };
    settings.offer_params = UnprotectedParams {
        unencrypted_srtp: sdes.unencrypted_srtp.unwrap_or(copied.unencrypted_srtp),
        unencrypted_srtcp: sdes.unencrypted_srtcp.unwrap_or(copied.unencrypted_srtcp),
        unauthenticated_srtp: sdes
            .unauthenticated_srtp
            .unwrap_or(copied.unauthenticated_srtp),
    };
    settings.accept_unprotected = settings.offer_params.any();
    if settings.policy != SrtpPolicy::Off && settings.suites.is_empty() {
        return Err(CallError::NoSuiteLeft);
    }
    Ok(settings)
}

/// The RTCP-mux decision for one section: (sender leg muxed, receiver leg muxed).
fn mux_decision(sender_offered: bool, options: RtcpMuxOptions) -> (bool, bool) {
    let sender = sender_offered && !options.reject;
    let receiver =
        (sender_offered && !options.demux && !options.reject) || options.offer || options.require;
    (sender, receiver)
}

/// The previous outbound keys of a side's section, to keep them on a re-offer.
fn kept_keys(media: &SideMedia) -> Vec<crate::sdp::CryptoAttribute> {
    match (&media.negotiated, &media.offer) {
        (Some(Negotiated::Srtp { keys, .. }), _) => vec![keys.outbound.clone()],
        (_, Some(offer)) => offer.crypto().to_vec(),
        _ => Vec::new(),
    }
}

/// Applies an offer from `from` to the call: negotiates the sender's leg, prepares our offer
/// to the other side, and updates addresses and interfaces. Returns the previous state for
/// rollback if the relay refuses.
pub fn plan_offer(
    call: &mut Call,
    from: Side,
    sdp_text: &str,
    options: &Options,
    policy: &Policy,
) -> Result<(), CallError> {
    let sdp = Sdp::parse_str(sdp_text)?;
    let active = sdp
        .media()
        .iter()
        .filter(|m| !m.description().is_disabled())
        .count();
    if active == 0 {
        return Err(CallError::NoActiveMedia);
    }
    if active > MAX_MEDIA {
        return Err(CallError::TooManyMedia { count: active });
    }
    let to = from.other();
    let sender = sender_settings(options);
    let mut media = call.media.clone();
    media.resize_with(media.len().max(sdp.media().len()), MediaSlot::default);
    for (i, section) in sdp.media().iter().enumerate() {
        let slot = &mut media[i];
        let kept_sender = kept_keys(slot.side(from));
        let answered = answer_offer(section, &sender, KeyReuse::Keep(&kept_sender))?;
        let settings = receiver_settings(section, Some(&answered.negotiated), options)?;
        let kept_receiver = kept_keys(slot.side(to));
        let offer = offer_media(section, &settings, KeyReuse::Keep(&kept_receiver))?;
        let (sender_mux, mut receiver_mux) = mux_decision(section.rtcp_mux(), options.rtcp_mux);
        // A receiver that already multiplexes keeps doing so (and keeps its port).
        receiver_mux |= slot.side(to).mux && !options.rtcp_mux.demux && !options.rtcp_mux.reject;
        let remote = remote_of(&sdp, section, options)?;
        section.description().media().clone_into(&mut slot.kind);
        slot.active = !section.description().is_disabled();
        let s = slot.side_mut(from);
        s.proto = Some(section.description().proto().to_owned());
        s.negotiated = Some(answered.negotiated);
        s.remote = remote.or(s.remote);
        s.mux = sender_mux;
        let r = slot.side_mut(to);
        r.proto = offer
            .proto()
            .map(|p| p.as_str().to_owned())
            .or(r.proto.take());
        r.offer = Some(offer);
        r.settings = Some(settings);
        r.mux = receiver_mux;
    }
    // Sections the new offer no longer lists are gone.
    for slot in media.iter_mut().skip(sdp.media().len()) {
        slot.active = false;
    }
    let fixed = options.asymmetric || options.endpoint_learning == Some(EndpointLearning::Off);
    if fixed {
        if let Some((i, _)) = media
            .iter()
            .enumerate()
            .find(|(_, m)| m.active && m.side(from).remote.is_none())
        {
            return Err(CallError::FixedWithoutAddress { media: i });
        }
    }
    call.media = media;
    let sender_mono = call.side_mut(from);
    sender_mono.received_sdp = Some(sdp_text.to_owned());
    sender_mono.fixed_remote = fixed;
    if let Some(strict) = options.strict_source {
        sender_mono.strict_source = strict;
    }
    if let Some(interface) = &policy.sender_interface {
        sender_mono.interface.clone_from(interface);
    }
    if options.label.is_some() {
        sender_mono.label.clone_from(&options.label);
    }
    if options.via_branch.is_some() {
        sender_mono.via_branch.clone_from(&options.via_branch);
    }
    if let Some(interface) = &policy.receiver_interface {
        call.side_mut(to).interface.clone_from(interface);
    }
    call.last_offer_from = Some(from);
    call.last_offer_len = sdp.media().len();
    Ok(())
}

/// Applies an answer from `answerer` (to the offer `answerer.other()` sent).
pub fn plan_answer(
    call: &mut Call,
    answerer: Side,
    sdp_text: &str,
    options: &Options,
) -> Result<(), CallError> {
    let sdp = Sdp::parse_str(sdp_text)?;
    let offered = call.last_offer_len;
    if sdp.media().len() != offered {
        return Err(CallError::MediaCountMismatch {
            offered,
            answered: sdp.media().len(),
        });
    }
    let offerer = answerer.other();
    if let Some(TransportOverride::Profile(asked)) = options.transport {
        let negotiated = call.media.iter().filter(|m| m.active).find_map(|m| {
            m.side(offerer)
                .negotiated
                .as_ref()
                .and_then(Negotiated::proto)
        });
        if let Some(negotiated) = negotiated.filter(|n| *n != asked) {
            return Err(CallError::AnswerTransport { asked, negotiated });
        }
    }
    let mut media = call.media.clone();
    for (i, section) in sdp.media().iter().enumerate() {
        let slot = &mut media[i];
        let side = slot.side(answerer);
        let (Some(offer), Some(settings)) = (&side.offer, &side.settings) else {
            continue;
        };
        let negotiated = process_answer(section, offer, settings)?;
        let remote = remote_of(&sdp, section, options)?;
        if matches!(negotiated, Negotiated::Disabled) {
            slot.active = false;
        }
        let s = slot.side_mut(answerer);
        s.proto = Some(section.description().proto().to_owned());
        s.negotiated = Some(negotiated);
        s.remote = remote.or(s.remote);
    }
    let fixed = options.asymmetric || options.endpoint_learning == Some(EndpointLearning::Off);
    call.media = media;
    let mono = call.side_mut(answerer);
    mono.received_sdp = Some(sdp_text.to_owned());
    mono.fixed_remote = fixed;
    if let Some(strict) = options.strict_source {
        mono.strict_source = strict;
    }
    if options.label.is_some() {
        mono.label.clone_from(&options.label);
    }
    if options.via_branch.is_some() {
        mono.via_branch.clone_from(&options.via_branch);
    }
    call.answered = true;
    Ok(())
}

/// Sets the tag of a side (the answerer's to-tag; a new to-tag replaces the old one, as
/// rtpengine treats an unexpected to-tag as an alias of the known one).
pub fn set_tag(call: &mut Call, side: Side, tag: &str) {
    call.side_mut(side).tag = Some(tag.to_owned());
}

/// Which SDP we render: our offer to a side, or our answer to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rendering {
    /// Our offer (what [`plan_offer`] prepared) to the side.
    Offer,
    /// Our answer (what was negotiated on its leg) to the side.
    Answer,
}

fn family_name(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

/// The relay's address on side `to` (`c=`): its first active leg's.
fn relay_address(call: &Call, to: Side, view: &SessionView) -> IpAddr {
    (0..call.media.len())
        .filter(|i| call.media[*i].active)
        .find_map(|i| view.leg(&to.leg_id(i)).map(|leg| leg.local.address))
        .or_else(|| {
            view.legs
                .iter()
                .find(|l| l.id.starts_with(if to == Side::A { 'o' } else { 'a' }))
                .map(|l| l.local.address)
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// One media plan per section of the template for side `to`.
fn media_plans(
    call: &Call,
    to: Side,
    rendering: Rendering,
    view: &SessionView,
    options: &Options,
    sections: usize,
) -> Result<Vec<MediaPlan>, CallError> {
    let mut plans = Vec::with_capacity(sections);
    for i in 0..sections {
        let slot = call.media.get(i).cloned().unwrap_or_default();
        let side = slot.side(to);
        let leg_id = to.leg_id(i);
        let (port, rtcp) = if slot.active {
            let leg = view
                .leg(&leg_id)
                .ok_or(CallError::RelayLegMissing { leg: leg_id })?;
            let rtcp = match (side.mux, rendering, options.rtcp_mux.require) {
                (true, Rendering::Offer, false) => RtcpPlan::MuxWithFallback(leg.local.rtp_port),
                (true, _, _) => RtcpPlan::Mux,
                (false, _, _) => RtcpPlan::Port(leg.local.rtcp_port),
            };
            (leg.local.rtp_port, rtcp)
        } else {
            (0, RtcpPlan::Mux)
        };
        let plan = match rendering {
            Rendering::Offer => side
                .offer
                .as_ref()
                .map(|o| MediaPlan::from_offer(o, port, rtcp)),
            Rendering::Answer => side.negotiated.as_ref().map(|n| {
                if slot.active {
                    MediaPlan::from_negotiated(n, port, rtcp)
                } else {
                    MediaPlan::from_negotiated(&Negotiated::Disabled, 0, rtcp)
                }
            }),
        };
        plans.push(plan.unwrap_or(MediaPlan {
            port: 0,
            proto: None,
            crypto: Vec::new(),
            rtcp,
        }));
    }
    Ok(plans)
}

/// `replace=zero-address`, `no-rtcp-attribute` and `full-rtcp-attribute` on a rewritten SDP.
fn apply_line_options(out: &mut Sdp<'_>, address: IpAddr, options: &Options) {
    if options.replace.zero_address {
        out.set_connection_address(address);
    }
    for section in out.media_mut() {
        if section.description().is_disabled() {
            continue;
        }
        if options.no_rtcp_attribute {
            section.set_rtcp(None);
        } else if options.full_rtcp_attribute {
            if let Ok(Some(rtcp)) = section.rtcp() {
                section.set_rtcp(Some(&Rtcp {
                    port: rtcp.port,
                    connection: Some(Connection::from_ip(address)),
                }));
            }
        }
    }
}

/// Renders the SDP for side `to`: the other side's last SDP rewritten with `to`'s relay legs
/// from `view`, and the `replace`/RTCP options applied. Updates what was sent to `to`.
pub fn render_for(
    call: &mut Call,
    to: Side,
    rendering: Rendering,
    view: &SessionView,
    options: &Options,
) -> Result<Vec<u8>, CallError> {
    let template_text = call
        .side(to.other())
        .received_sdp
        .clone()
        .ok_or(CallError::Missing { key: "sdp" })?;
    let template = Sdp::parse_str(&template_text)?;
    let interface = call.side(to).interface.clone();
    let address = relay_address(call, to, view);
    if let Some(asked) = options.address_family {
        if crate::sdp::AddrType::of(address) != asked {
            return Err(CallError::AddressFamily {
                asked: asked.as_str(),
                interface,
                actual: family_name(address),
            });
        }
    }
    let plans = media_plans(call, to, rendering, view, options, template.media().len())?;
    let replace = options.replace;
    let received = template.origin();
    let own_version = replace.sdp_version || replace.origin_full || replace.force_increment;
    let sent = call.side(to).sent.clone();
    let username = if replace.origin_full {
        "-".to_owned()
    } else if replace.username {
        sent.username
            .clone()
            .unwrap_or_else(|| received.username().to_owned())
    } else {
        received.username().to_owned()
    };
    let session_name = replace.session_name.then(|| {
        sent.session_name.clone().unwrap_or_else(|| {
            template
                .session_lines()
                .iter()
                .find(|l| l.kind() == b's')
                .map_or_else(|| "-".to_owned(), |l| l.value().to_owned())
        })
    });
    let received_address = received.address().parse::<IpAddr>().ok();
    let identity = if replace.origin_full || replace.origin || replace.username {
        let session_id = if replace.origin_full {
            sent.origin_session
        } else {
            received.session_id().parse().unwrap_or(sent.origin_session)
        };
        let origin_address = if replace.origin_full || replace.origin {
            address
        } else {
            received_address.unwrap_or(address)
        };
        Some((username.clone(), session_id, origin_address))
    } else {
        None
    };
    let render = |version: u64| -> Result<Vec<u8>, CallError> {
        let plan = LegSdpPlan {
            address,
            origin: OriginUpdate {
                version,
                identity: identity.as_ref().map(|(u, id, a)| OriginIdentity {
                    username: u,
                    session_id: *id,
                    address: *a,
                }),
            },
            media: plans.clone(),
        };
        let mut out = rewrite_for_leg(&template, &plan)?;
        apply_line_options(&mut out, address, options);
        let bytes = out.to_bytes();
        Ok(match &session_name {
            Some(name) => replace_session_name(&bytes, name),
            None => bytes,
        })
    };
    let (body, version) = if own_version {
        let mut version = sent.version.max(1);
        let mut body = render(version)?;
        let changed = sent.last.as_ref().is_some_and(|last| *last != body);
        if changed || (replace.force_increment && sent.last.is_some()) {
            version += 1;
            body = render(version)?;
        }
        (body, version)
    } else {
        // rtpengine's default: the sender's version passes through.
        let version = received.session_version_u64().unwrap_or(sent.version);
        (render(version)?, sent.version)
    };
    let sent = &mut call.side_mut(to).sent;
    sent.version = version;
    sent.last = Some(body.clone());
    if replace.username || replace.origin_full {
        sent.username.get_or_insert(username);
    }
    if let Some(name) = session_name {
        sent.session_name.get_or_insert(name);
    }
    Ok(body)
}

/// Replaces the session-level `s=` value (the first `s=` line before any `m=` line).
fn replace_session_name(sdp: &[u8], name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(sdp.len() + name.len());
    let mut done = false;
    for line in sdp.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"m=") {
            done = true;
        }
        if !done && line.starts_with(b"s=") {
            let ending: &[u8] = if line.ends_with(b"\r\n") {
                b"\r\n"
            } else if line.ends_with(b"\n") {
                b"\n"
            } else {
                b""
            };
            out.extend_from_slice(b"s=");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(ending);
            done = true;
            continue;
        }
        out.extend_from_slice(line);
    }
    out
}

/// Whether `sdp` carries ICE attributes (which the rewrite removes).
pub fn has_ice(sdp_text: &str) -> bool {
    Sdp::parse_str(sdp_text).is_ok_and(|sdp| {
        !sdp.session_ice().is_empty() || sdp.media().iter().any(|m| !m.ice().is_empty())
    })
}

fn endpoint(address: IpAddr, port: u16) -> Value<'static> {
    Value::dict([
        (
            "family",
            Value::str(match address {
                IpAddr::V4(_) => "IPv4",
                IpAddr::V6(_) => "IPv6",
            }),
        ),
        ("address", Value::string(address.to_string())),
        ("port", Value::Int(i64::from(port))),
    ])
}

fn stats(packets: u64, bytes: u64, errors: u64) -> Value<'static> {
    Value::dict([
        ("packets", Value::count(packets)),
        ("bytes", Value::count(bytes)),
        ("errors", Value::count(errors)),
    ])
}

/// The `streams` of one relay leg: RTP, and RTCP when not multiplexed. Adds the leg's
/// counters to `totals` (packets, bytes, errors).
fn leg_streams(
    leg: &crate::relay_client::LegView,
    media: &SideMedia,
    totals: &mut (u64, u64, u64),
) -> Vec<Value<'static>> {
    let counters = &leg.counters;
    let errors = counters.auth_failures.saturating_add(counters.replays);
    totals.0 = totals.0.saturating_add(counters.packets_in);
    totals.1 = totals.1.saturating_add(counters.bytes_in);
    totals.2 = totals.2.saturating_add(errors);
    let suite = leg.inbound_crypto.as_ref().map(|c| c.suite.clone());
    let advertised = media.remote;
    let learned = leg.latched_rtp;
    let flags = [
        Some("RTP"),
        advertised.map(|_| "filled"),
        learned.map(|_| "confirmed"),
    ];
    let mut rtp = vec![
        ("local port", Value::Int(i64::from(leg.local.rtp_port))),
        (
            "flags",
            Value::List(flags.into_iter().flatten().map(Value::str).collect()),
        ),
        (
            "stats",
            stats(counters.packets_in, counters.bytes_in, errors),
        ),
    ];
    let rtp_endpoint = learned
        .map(|a| (a.ip(), a.port()))
        .or(advertised.map(|r| (r.address, r.rtp_port)));
    if let Some((address, port)) = rtp_endpoint {
        rtp.push(("endpoint", endpoint(address, port)));
    }
    if let Some(remote) = advertised {
        rtp.push((
            "advertised endpoint",
            endpoint(remote.address, remote.rtp_port),
        ));
    }
    if let Some(suite) = &suite {
        rtp.push(("crypto suite", Value::string(suite.clone())));
    }
    let mut streams = vec![Value::dict(rtp)];
    if !leg.rtcp_mux {
        let mut rtcp = vec![
            ("local port", Value::Int(i64::from(leg.local.rtcp_port))),
            ("flags", Value::List(vec![Value::str("RTCP")])),
            ("stats", stats(0, 0, 0)),
        ];
        if let Some(remote) = advertised {
            let port = remote
                .rtcp_port
                .unwrap_or(remote.rtp_port.saturating_add(1));
            rtcp.push(("endpoint", endpoint(remote.address, port)));
            rtcp.push(("advertised endpoint", endpoint(remote.address, port)));
        }
        if let Some(suite) = &suite {
            rtcp.push(("crypto suite", Value::string(suite.clone())));
        }
        streams.push(Value::dict(rtcp));
    }
    streams
}

/// The `query` (and `delete`) reply keys in rtpengine's shape: `created`, `last signal`,
/// `tags` → `medias` → `streams` (with `stats`), and `totals` (`RTP`, `RTCP`).
///
/// relayd counts RTP and RTCP of a leg together, so a stream's `stats` and the `RTP` totals
/// carry both, and `RTCP` totals are zero; `errors` are SRTP authentication failures plus
/// replays. `stats` count what the relay received from that endpoint, as rtpengine's do.
pub fn call_stats(call: &Call, view: Option<&SessionView>) -> Vec<(String, Value<'static>)> {
    let mut totals = (0u64, 0u64, 0u64);
    let mut tags = Vec::new();
    for side in [Side::A, Side::B] {
        let mono = call.side(side);
        let mut medias = Vec::new();
        for (i, slot) in call.media.iter().enumerate() {
            let media = slot.side(side);
            let leg = view.and_then(|v| v.leg(&side.leg_id(i)));
            let mut flags = vec![Value::str("initialized")];
            if media.mux {
                flags.push(Value::str("rtcp-mux"));
            }
            if matches!(media.negotiated, Some(Negotiated::Srtp { .. })) {
                flags.push(Value::str("SDES"));
            }
            let streams = match (leg, slot.active) {
                (Some(leg), true) => leg_streams(leg, media, &mut totals),
                _ => Vec::new(),
            };
            let mut entry = vec![
                ("index", Value::count(i as u64 + 1)),
                ("type", Value::string(slot.kind.clone())),
                ("flags", Value::List(flags)),
                ("streams", Value::List(streams)),
            ];
            if let Some(proto) = &media.proto {
                entry.push(("protocol", Value::string(proto.clone())));
            }
            medias.push(Value::dict(entry));
        }
        let tag = mono.tag.clone().unwrap_or_default();
        let mut entry = vec![
            ("tag", Value::string(tag.clone())),
            ("created", Value::count(mono.created_unix)),
            ("medias", Value::List(medias)),
        ];
        if let Some(label) = &mono.label {
            entry.push(("label", Value::string(label.clone())));
        }
        if let Some(branch) = &mono.via_branch {
            entry.push(("via-branch", Value::string(branch.clone())));
        }
        if let Some(other) = &call.side(side.other()).tag {
            entry.push(("in dialogue with", Value::string(other.clone())));
        }
        tags.push((tag, Value::dict(entry)));
    }
    vec![
        ("created".to_owned(), Value::count(call.created_unix)),
        ("created_us".to_owned(), Value::Int(0)),
        (
            "last signal".to_owned(),
            Value::count(call.last_signal_unix),
        ),
        ("tags".to_owned(), Value::dict(tags)),
        (
            "totals".to_owned(),
            Value::dict([
                ("RTP", stats(totals.0, totals.1, totals.2)),
                ("RTCP", stats(0, 0, 0)),
            ]),
        ),
    ]
}

#[cfg(test)]
mod tests;
