//! SDES-SRTP offer/answer per media section (RFC 4568 §7 with RFC 3264, and RFC 8643
//! best-effort SRTP): which transport protocol and which `a=crypto` lines each leg gets, and
//! which keys the relay decrypts and encrypts with.
//!
//! It is a library shared by the B2BUA and the rtpengine-compatible NG server: no IO, no
//! clock, no per-call state. The caller keeps what it offered ([`MediaOffer`]) and feeds it
//! back with the answer. Fresh keys come from [`CryptoAttribute::generate`] (the OS CSPRNG).
//!
//! Three operations, one per role of the relay on a leg:
//!
//! ```text
//!   peer ──offer──▶ answer_offer()   chooses one offered line, makes our key (same tag/suite)
//!   peer ◀──offer── offer_media()    one fresh line per allowed suite (or kept keys)
//!   peer ──answer─▶ process_answer() matches the answered tag to what we offered
//! ```
//!
//! Each returns [`Negotiated`]: per SRTP media section, the peer's attribute (`inbound`: what
//! the relay decrypts) and ours (`outbound`: what the relay encrypts towards the peer).
//!
//! | offered proto       | `a=crypto` | Mandatory         | Optional          | Off            |
//! |---------------------|------------|-------------------|-------------------|----------------|
//! | RTP/SAVP[F]         | acceptable | SRTP              | SRTP              | 488 refused    |
//! | RTP/SAVP[F]         | none fits  | 488 no crypto     | 488 no crypto     | 488 refused    |
//! | RTP/AVP[F] (8643)   | acceptable | SRTP (proto AVP)  | SRTP (proto AVP)  | plain          |
//! | RTP/AVP[F] (8643)   | none fits  | 488 no crypto     | plain             | plain          |
//! | RTP/AVP[F]          | absent     | 488 SRTP required | plain             | plain          |
//! | UDP/TLS/RTP/SAVP[F] | any        | 488 DTLS          | 488 DTLS          | 488 DTLS       |
//! | other (udptl, ...)  | any        | 488 unprotectable | relayed as is     | relayed as is  |
//!
//! A section with port 0 is disabled and never keyed (RFC 3264 §6).

use srtp::{
    sdes::{CryptoAttribute, SdesError, SessionParam, MAX_TAG},
    Policy, Suite,
};

use super::{MediaSection, Sdp, SdpError, Transport, TransportProtocol};

/// Our suite preference when nothing else is configured: the suites every SDES peer speaks
/// first, then GCM (RFC 7714), then AES-256 (RFC 6188).
pub const DEFAULT_SUITES: [Suite; 6] = [
    Suite::AesCm128HmacSha1_80,
    Suite::AesCm128HmacSha1_32,
    Suite::AeadAes128Gcm,
    Suite::AesCm256HmacSha1_80,
    Suite::AesCm256HmacSha1_32,
    Suite::AeadAes256Gcm,
];

/// Largest key lifetime we write into a generated key (RFC 3711 §8.2: 2^48 packets).
const MAX_LIFETIME: u64 = 1 << 48;

/// Whether a leg's media must, may or must not be SRTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrtpPolicy {
    /// Only SRTP: a plain offer or answer is refused; our offers are `RTP/SAVP[F]`.
    Mandatory,
    /// SRTP when the peer can: offers are `RTP/AVP[F]` with `a=crypto` (RFC 8643); plain
    /// offers are answered plain.
    Optional,
    /// Only plain RTP: `RTP/SAVP[F]` offers are refused, best-effort `a=crypto` is ignored.
    Off,
}

/// Everything that decides SRTP for one leg. The NG options map onto fields: `SDES-only-X`
/// ([`Self::only_suites`]), `SDES-no-X` ([`Self::exclude_suite`]), `SDES-nonew`
/// ([`Self::no_new_suites`]), `SDES-lifetime` ([`Self::lifetime`]),
/// `SDES-unencrypted_srtp`/`_srtcp` ([`Self::offer_params`]) and `transport-protocol`
/// ([`Self::transport`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrtpSettings {
    /// Mandatory, optional or off.
    pub policy: SrtpPolicy,
    /// Allowed suites in preference order.
    pub suites: Vec<Suite>,
    /// Forces the profile of our offers (NG `transport-protocol`); `None` keeps the source's
    /// feedback-ness and picks security from the policy.
    pub transport: Option<TransportProtocol>,
    /// A lifetime (in packets, at most 2^48) written into every key we generate.
    pub lifetime: Option<u64>,
    /// Session parameters added to the lines we offer (NG `SDES-unencrypted_srtp`,
    /// `SDES-unencrypted_srtcp`, `SDES-unauthenticated_srtp`; RFC 4568 §6.3.2, §6.3.3).
    pub offer_params: UnprotectedParams,
    /// Whether an offered line with `UNENCRYPTED_SRTP`, `UNENCRYPTED_SRTCP` or
    /// `UNAUTHENTICATED_SRTP` may be chosen. Off by default; when on, the choice is reported
    /// in [`Negotiated::Srtp::unprotected`].
    pub accept_unprotected: bool,
    /// When re-offering with kept keys, do not add lines for suites the kept keys lack.
    pub no_new_suites: bool,
}

impl SrtpSettings {
    /// Settings with `policy`, [`DEFAULT_SUITES`] and nothing else.
    pub fn new(policy: SrtpPolicy) -> Self {
        Self {
            policy,
            suites: DEFAULT_SUITES.to_vec(),
            transport: None,
            lifetime: None,
            offer_params: UnprotectedParams::default(),
            accept_unprotected: false,
            no_new_suites: false,
        }
    }

    /// Keeps only the suites in `only`, in our preference order (NG `SDES-only-SUITE`).
    pub fn only_suites(&mut self, only: &[Suite]) {
        self.suites.retain(|s| only.contains(s));
    }

    /// Removes one suite (NG `SDES-no-SUITE`).
    pub fn exclude_suite(&mut self, suite: Suite) {
        self.suites.retain(|s| *s != suite);
    }

    fn validate(&self) -> Result<(), SdpError> {
        if self.policy != SrtpPolicy::Off && self.suites.is_empty() {
            return Err(SdpError::InvalidSettings {
                reason: "SRTP is allowed but no suite is",
            });
        }
        if self.lifetime.is_some_and(|l| l == 0 || l > MAX_LIFETIME) {
            return Err(SdpError::InvalidSettings {
                reason: "the key lifetime must be 1 to 2^48 packets",
            });
        }
        Ok(())
    }
}

impl Default for SrtpSettings {
    fn default() -> Self {
        Self::new(SrtpPolicy::Optional)
    }
}

/// The session parameters that weaken SRTP (RFC 4568 §6.3.2, §6.3.3). Reported, never
/// silently accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnprotectedParams {
    /// `UNENCRYPTED_SRTP`: RTP payloads are not encrypted.
    pub unencrypted_srtp: bool,
    /// `UNENCRYPTED_SRTCP`: RTCP payloads are not encrypted.
    pub unencrypted_srtcp: bool,
    /// `UNAUTHENTICATED_SRTP`: RTP packets carry no authentication tag.
    pub unauthenticated_srtp: bool,
}

impl UnprotectedParams {
    /// Whether any of the three is set.
    pub fn any(self) -> bool {
        self.unencrypted_srtp || self.unencrypted_srtcp || self.unauthenticated_srtp
    }

    /// The parameters of one attribute.
    pub fn of(attribute: &CryptoAttribute) -> Self {
        let mut flags = Self::default();
        for param in &attribute.session_params {
            match param {
                SessionParam::UnencryptedSrtp => flags.unencrypted_srtp = true,
                SessionParam::UnencryptedSrtcp => flags.unencrypted_srtcp = true,
                SessionParam::UnauthenticatedSrtp => flags.unauthenticated_srtp = true,
                _ => {}
            }
        }
        flags
    }

    fn session_params(self) -> Vec<SessionParam> {
        let mut params = Vec::new();
        if self.unencrypted_srtp {
            params.push(SessionParam::UnencryptedSrtp);
        }
        if self.unencrypted_srtcp {
            params.push(SessionParam::UnencryptedSrtcp);
        }
        if self.unauthenticated_srtp {
            params.push(SessionParam::UnauthenticatedSrtp);
        }
        params
    }
}

/// Why an offered `a=crypto` line was not chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The line does not parse, or names a suite the engine does not implement.
    Malformed(SdesError),
    /// The suite is not in our allowed list.
    SuiteNotAllowed(Suite),
    /// `KDR=n` with n above 0 (RFC 4568 §6.3.1): the engine derives keys once.
    KeyDerivationRate(u8),
    /// `FEC_ORDER` or `FEC_KEY` (RFC 4568 §6.3.4, §6.3.5): not supported.
    Fec,
    /// A session parameter we do not know and that is not marked optional with a leading
    /// `-` (RFC 4568 §6.3.7); the index among the line's session parameters.
    UnknownSessionParam {
        /// Index among the line's session parameters.
        index: usize,
    },
    /// `UNENCRYPTED_*` or `UNAUTHENTICATED_SRTP` while [`SrtpSettings::accept_unprotected`]
    /// is off.
    Unprotected(UnprotectedParams),
    /// Keys the engine cannot use (MKI over 16 bytes, MKI lengths that differ, two keys with
    /// one MKI, several keys without MKI).
    UnusableKeys(srtp::Error),
    /// A second line with a tag already seen (RFC 4568 §5.1: tags are unique per section).
    DuplicateTag,
}

/// An offered `a=crypto` line that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedCrypto {
    /// Position among the section's `a=crypto` lines, 0-based.
    pub position: usize,
    /// The line's tag, when it parsed.
    pub tag: Option<u32>,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// The keys of one SRTP media section, from the relay's point of view. `Debug` never shows
/// key material ([`CryptoAttribute`] redacts it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The peer's attribute: the relay decrypts what the peer sends with it.
    pub inbound: CryptoAttribute,
    /// Our attribute: the relay encrypts what it sends to the peer with it.
    pub outbound: CryptoAttribute,
}

/// The outcome of negotiating one media section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Negotiated {
    /// Port 0: the stream is disabled or rejected (RFC 3264 §6); nothing to key.
    Disabled,
    /// Not RTP (`udptl` for T.38, ...): relayed as is, never keyed.
    NotRtp,
    /// Plain RTP with this profile.
    Plain {
        /// The profile for our `m=` line.
        proto: TransportProtocol,
    },
    /// SRTP with this profile and these keys.
    Srtp {
        /// The profile for our `m=` line (`RTP/AVP[F]` for best-effort SRTP).
        proto: TransportProtocol,
        /// Inbound and outbound keys.
        keys: SrtpKeys,
        /// Weakening session parameters in force (both sides carry them).
        unprotected: UnprotectedParams,
    },
}

impl Negotiated {
    /// The profile for our `m=` line; `None` for disabled and non-RTP sections (keep theirs).
    pub fn proto(&self) -> Option<TransportProtocol> {
        match self {
            Self::Plain { proto } | Self::Srtp { proto, .. } => Some(*proto),
            Self::Disabled | Self::NotRtp => None,
        }
    }

    /// The suite, when SRTP.
    pub fn suite(&self) -> Option<Suite> {
        match self {
            Self::Srtp { keys, .. } => Some(keys.outbound.suite),
            _ => None,
        }
    }

    /// The `a=crypto` lines our SDP to the peer carries: our outbound attribute, or none.
    pub fn sdp_crypto(&self) -> &[CryptoAttribute] {
        match self {
            Self::Srtp { keys, .. } => std::slice::from_ref(&keys.outbound),
            _ => &[],
        }
    }
}

/// The outcome of answering one offered media section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerOutcome {
    /// What was negotiated.
    pub negotiated: Negotiated,
    /// Offered lines that were refused, for logs and diagnostics (lines that were acceptable
    /// but less preferred are not listed).
    pub skipped: Vec<SkippedCrypto>,
}

/// What we offered on one media section; keep it to process the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaOffer {
    /// Port 0 on the source section: offered disabled, no keys.
    Disabled,
    /// Not RTP: offered as is, no keys.
    NotRtp,
    /// RTP with this profile and these `a=crypto` lines (ours; empty for plain).
    Rtp {
        /// The profile for our `m=` line.
        proto: TransportProtocol,
        /// Our offered attributes, tags distinct, in preference order.
        crypto: Vec<CryptoAttribute>,
    },
}

impl MediaOffer {
    /// The profile for our `m=` line; `None` for disabled and non-RTP sections.
    pub fn proto(&self) -> Option<TransportProtocol> {
        match self {
            Self::Rtp { proto, .. } => Some(*proto),
            Self::Disabled | Self::NotRtp => None,
        }
    }

    /// The `a=crypto` lines our offer carries.
    pub fn crypto(&self) -> &[CryptoAttribute] {
        match self {
            Self::Rtp { crypto, .. } => crypto,
            Self::Disabled | Self::NotRtp => &[],
        }
    }
}

/// Whether a re-offer or re-answer keeps keys we offered or answered before.
#[derive(Clone, Copy, Debug)]
pub enum KeyReuse<'k> {
    /// New keys for every line: first offers, and re-offers after an address change or an
    /// explicit re-key.
    Fresh,
    /// Keep these attributes (tag, suite and key) for every suite still allowed, so a hold
    /// or resume re-INVITE does not re-key; fresh lines are added for other allowed suites
    /// unless [`SrtpSettings::no_new_suites`].
    Keep(&'k [CryptoAttribute]),
}

/// RFC 4568 §6.3: the session parameters and keys of `attribute` that we can honour. Returns
/// the weakening parameters it carries.
fn check_params(
    attribute: &CryptoAttribute,
    accept_unprotected: bool,
) -> Result<UnprotectedParams, SkipReason> {
    for (index, param) in attribute.session_params.iter().enumerate() {
        match param {
            // RFC 4568 §6.3.1: the engine only derives session keys once.
            SessionParam::Kdr(0)
            // RFC 4568 §6.3.6: WSH is declarative; our window is our own.
            | SessionParam::Wsh(_)
            | SessionParam::UnencryptedSrtp
            | SessionParam::UnencryptedSrtcp
            | SessionParam::UnauthenticatedSrtp => {}
            SessionParam::Kdr(rate) => return Err(SkipReason::KeyDerivationRate(*rate)),
            // RFC 4568 §6.3.4, §6.3.5.
            SessionParam::FecOrder(_) | SessionParam::FecKey(_) => return Err(SkipReason::Fec),
            // RFC 4568 §6.3.7: an extension starting with "-" may be ignored.
            SessionParam::Other(name) if name.starts_with('-') => {}
            SessionParam::Other(_) => return Err(SkipReason::UnknownSessionParam { index }),
        }
    }
    let flags = UnprotectedParams::of(attribute);
    if flags.any() && !accept_unprotected {
        return Err(SkipReason::Unprotected(flags));
    }
    // The keys must make an engine policy: MKI lengths agree, MKIs distinct and short enough.
    let keys = attribute.master_keys().map_err(SkipReason::UnusableKeys)?;
    let mki_len = attribute.mki_len().map_err(SkipReason::UnusableKeys)?;
    let first = keys
        .first()
        .cloned()
        .ok_or(SkipReason::UnusableKeys(srtp::Error::NoMasterKey))?;
    let mut policy = Policy::new(first);
    policy.keys = keys;
    policy.mki_len = mki_len;
    policy.validate().map_err(SkipReason::UnusableKeys)?;
    Ok(flags)
}

/// A fresh attribute with our key, the configured lifetime and `params`.
fn generate(
    tag: u32,
    suite: Suite,
    params: UnprotectedParams,
    settings: &SrtpSettings,
) -> Result<CryptoAttribute, SdpError> {
    let mut attribute = CryptoAttribute::generate(tag, suite).map_err(SdpError::KeyGeneration)?;
    if let Some(lifetime) = settings.lifetime {
        for key in &mut attribute.keys {
            key.lifetime = Some(lifetime);
        }
    }
    attribute.session_params = params.session_params();
    Ok(attribute)
}

/// Answers one offered media section (RFC 3264 §6, RFC 4568 §7.1.2, RFC 8643).
///
/// Among the offered `a=crypto` lines whose parameters we support, the one with the suite
/// earliest in our preference wins (the first such line in offer order if several share the
/// suite); our answer line gets a fresh key with the same tag and suite, and echoes any
/// accepted `UNENCRYPTED_*`/`UNAUTHENTICATED_SRTP` parameter (RFC 4568 §6.3.2, §6.3.3). The
/// answer's profile is the offer's (RFC 3264 §6.1).
///
/// With [`KeyReuse::Keep`] (a re-offer for hold or resume), our previous attribute of the
/// chosen suite is answered again under the offer's tag instead of a fresh key, so the relay
/// keeps its outbound context.
pub fn answer_offer(
    offer: &MediaSection<'_>,
    settings: &SrtpSettings,
    keys: KeyReuse<'_>,
) -> Result<AnswerOutcome, SdpError> {
    settings.validate()?;
    let media = offer.index();
    let description = offer.description();
    let outcome = |negotiated| AnswerOutcome {
        negotiated,
        skipped: Vec::new(),
    };
    // RFC 3264 §6: a stream offered with port 0 is answered with port 0.
    if description.is_disabled() {
        return Ok(outcome(Negotiated::Disabled));
    }
    let proto = match description.transport() {
        Transport::Rtp(proto) => proto,
        Transport::DtlsSrtp => {
            return Err(SdpError::DtlsSrtpNotSupported {
                media,
                proto: description.proto().to_owned(),
            })
        }
        Transport::Other if settings.policy == SrtpPolicy::Mandatory => {
            return Err(SdpError::UnprotectableTransport {
                media,
                proto: description.proto().to_owned(),
            })
        }
        Transport::Other => return Ok(outcome(Negotiated::NotRtp)),
    };
    let secure = proto.is_secure();
    if secure && settings.policy == SrtpPolicy::Off {
        return Err(SdpError::SrtpRefused { media });
    }
    if !secure && !offer.has_crypto() {
        if settings.policy == SrtpPolicy::Mandatory {
            return Err(SdpError::SrtpRequired { media });
        }
        return Ok(outcome(Negotiated::Plain { proto }));
    }
    // RFC 8643 §4: best-effort a=crypto on RTP/AVP may be ignored; with SRTP off it is.
    if !secure && settings.policy == SrtpPolicy::Off {
        return Ok(outcome(Negotiated::Plain { proto }));
    }

    let (mut candidates, skipped) = evaluate_offered(offer, settings);

    // RFC 4568 §7.1.2: the answerer picks one acceptable line; we pick by our preference.
    let chosen = settings.suites.iter().find_map(|suite| {
        candidates
            .iter()
            .position(|(attribute, _)| attribute.suite == *suite)
    });
    let Some(chosen) = chosen else {
        if secure || settings.policy == SrtpPolicy::Mandatory {
            return Err(SdpError::NoAcceptableCrypto { media, skipped });
        }
        // RFC 8643 §4: best effort failed, the answer is plain RTP/AVP.
        return Ok(AnswerOutcome {
            negotiated: Negotiated::Plain { proto },
            skipped,
        });
    };
    let (theirs, flags) = candidates.swap_remove(chosen);
    let ours = answer_key(&theirs, flags, settings, keys)?;
    Ok(AnswerOutcome {
        negotiated: Negotiated::Srtp {
            proto,
            keys: SrtpKeys {
                inbound: theirs,
                outbound: ours,
            },
            unprotected: flags,
        },
        skipped,
    })
}

/// An acceptable offered line and the weakening parameters it carries.
type Candidate = (CryptoAttribute, UnprotectedParams);

/// The offered lines we could accept, in offer order, and the refused ones with reasons.
fn evaluate_offered(
    offer: &MediaSection<'_>,
    settings: &SrtpSettings,
) -> (Vec<Candidate>, Vec<SkippedCrypto>) {
    let mut skipped = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut tags = Vec::new();
    for (position, line) in offer.crypto().enumerate() {
        let attribute = match line {
            Ok(attribute) => attribute,
            // RFC 4568 §7.1.1: a line the answerer does not understand is skipped.
            Err(error) => {
                skipped.push(SkippedCrypto {
                    position,
                    tag: None,
                    reason: SkipReason::Malformed(error),
                });
                continue;
            }
        };
        let skip = |reason| SkippedCrypto {
            position,
            tag: Some(attribute.tag),
            reason,
        };
        if tags.contains(&attribute.tag) {
            skipped.push(skip(SkipReason::DuplicateTag));
            continue;
        }
        tags.push(attribute.tag);
        if !settings.suites.contains(&attribute.suite) {
            skipped.push(skip(SkipReason::SuiteNotAllowed(attribute.suite)));
            continue;
        }
        match check_params(&attribute, settings.accept_unprotected) {
            Ok(flags) => candidates.push((attribute, flags)),
            Err(reason) => skipped.push(skip(reason)),
        }
    }
    (candidates, skipped)
}

/// Our answer line for their chosen line: a kept attribute of the same suite under their
/// tag, else a fresh key (RFC 4568 §7.1.2: same tag and suite, our own key).
fn answer_key(
    theirs: &CryptoAttribute,
    flags: UnprotectedParams,
    settings: &SrtpSettings,
    keys: KeyReuse<'_>,
) -> Result<CryptoAttribute, SdpError> {
    let kept = match keys {
        KeyReuse::Keep(kept) => kept.iter().find(|k| k.suite == theirs.suite),
        KeyReuse::Fresh => None,
    };
    match kept {
        Some(kept) => {
            let mut ours = kept.clone();
            ours.tag = theirs.tag;
            ours.session_params = flags.session_params();
            Ok(ours)
        }
        None => generate(theirs.tag, theirs.suite, flags, settings),
    }
}

/// Answers every media section of an offer, in order; `reuse[i]` says whether section `i`
/// keeps our previous key (missing entries are [`KeyReuse::Fresh`]).
pub fn answer_sdp(
    offer: &Sdp<'_>,
    settings: &SrtpSettings,
    reuse: &[KeyReuse<'_>],
) -> Result<Vec<AnswerOutcome>, SdpError> {
    offer
        .media()
        .iter()
        .enumerate()
        .map(|(i, section)| {
            let keys = reuse.get(i).copied().unwrap_or(KeyReuse::Fresh);
            answer_offer(section, settings, keys)
        })
        .collect()
}
/// What we offer on a leg for a media section we received on the other leg (`source`).
pub fn offer_media(
    source: &MediaSection<'_>,
    settings: &SrtpSettings,
    keys: KeyReuse<'_>,
) -> Result<MediaOffer, SdpError> {
    settings.validate()?;
    let media = source.index();
    let description = source.description();
    if description.is_disabled() {
        return Ok(MediaOffer::Disabled);
    }
    match description.transport() {
        Transport::Rtp(original) => offer_profile(original, settings, keys),
        Transport::DtlsSrtp => Err(SdpError::DtlsSrtpNotSupported {
            media,
            proto: description.proto().to_owned(),
        }),
        Transport::Other if settings.policy == SrtpPolicy::Mandatory => {
            Err(SdpError::UnprotectableTransport {
                media,
                proto: description.proto().to_owned(),
            })
        }
        Transport::Other => Ok(MediaOffer::NotRtp),
    }
}

/// What we offer for an RTP section whose source profile is `original`.
///
/// The profile is [`SrtpSettings::transport`] if set, else `original`'s feedback-ness with
/// `SAVP` for a mandatory policy and `AVP` otherwise. Lines: mandatory, one per allowed
/// suite; optional, the same on `RTP/AVP[F]` (RFC 8643 best effort); off, none. Fresh tags
/// are the smallest unused, from 1.
pub fn offer_profile(
    original: TransportProtocol,
    settings: &SrtpSettings,
    keys: KeyReuse<'_>,
) -> Result<MediaOffer, SdpError> {
    settings.validate()?;
    let proto = settings
        .transport
        .unwrap_or_else(|| original.with_security(settings.policy == SrtpPolicy::Mandatory));
    let with_crypto = match (proto.is_secure(), settings.policy) {
        (true, SrtpPolicy::Off) => {
            return Err(SdpError::InvalidSettings {
                reason: "a secure transport protocol is forced while SRTP is off",
            })
        }
        (false, SrtpPolicy::Mandatory) => {
            return Err(SdpError::InvalidSettings {
                reason: "a plain transport protocol is forced while SRTP is mandatory",
            })
        }
        (true, _) | (false, SrtpPolicy::Optional) => true,
        (false, SrtpPolicy::Off) => false,
    };
    let crypto = if with_crypto {
        offer_crypto(settings, keys)?
    } else {
        Vec::new()
    };
    Ok(MediaOffer::Rtp { proto, crypto })
}

/// Our offered lines, in preference order.
fn offer_crypto(
    settings: &SrtpSettings,
    keys: KeyReuse<'_>,
) -> Result<Vec<CryptoAttribute>, SdpError> {
    let mut offered: Vec<CryptoAttribute> = Vec::new();
    let kept = match keys {
        KeyReuse::Keep(kept) => kept,
        KeyReuse::Fresh => &[],
    };
    for suite in &settings.suites {
        if let Some(attribute) = kept.iter().find(|a| {
            a.suite == *suite && !offered.iter().any(|o| o.tag == a.tag || o.suite == a.suite)
        }) {
            offered.push(attribute.clone());
        }
    }
    let add_new = offered.is_empty() || !settings.no_new_suites;
    if add_new {
        let params = settings.offer_params;
        for suite in &settings.suites {
            if offered.iter().any(|o| o.suite == *suite) {
                continue;
            }
            // At most six suites: a free tag is always found well below MAX_TAG.
            let tag = (1..=MAX_TAG)
                .find(|t| !offered.iter().any(|o| o.tag == *t))
                .unwrap_or(MAX_TAG);
            offered.push(generate(tag, *suite, params, settings)?);
        }
    }
    let rank = |suite: Suite| settings.suites.iter().position(|s| *s == suite);
    offered.sort_by_key(|a| rank(a.suite));
    Ok(offered)
}

/// Offers for every media section of `source`; `reuse[i]` says whether section `i` keeps
/// keys (missing entries are [`KeyReuse::Fresh`]).
pub fn offer_sdp(
    source: &Sdp<'_>,
    settings: &SrtpSettings,
    reuse: &[KeyReuse<'_>],
) -> Result<Vec<MediaOffer>, SdpError> {
    source
        .media()
        .iter()
        .enumerate()
        .map(|(i, section)| {
            let keys = reuse.get(i).copied().unwrap_or(KeyReuse::Fresh);
            offer_media(section, settings, keys)
        })
        .collect()
}

/// Why an answer's line with the right tag and suite is still unacceptable.
fn answer_param_reason(reason: &SkipReason) -> &'static str {
    match reason {
        SkipReason::KeyDerivationRate(_) => "the answer's a=crypto asks for a KDR other than 0",
        SkipReason::Fec => "the answer's a=crypto uses FEC parameters",
        SkipReason::UnknownSessionParam { .. } => {
            "the answer's a=crypto has an unknown session parameter"
        }
        SkipReason::UnusableKeys(_) => "the answer's a=crypto keys cannot be used (MKI)",
        _ => "the answer's a=crypto line is not acceptable",
    }
}

/// Processes the answer to one media section we offered (RFC 3264 §6, RFC 4568 §7.1.3):
/// the answered line must carry one of our tags with the same suite. Result: their attribute
/// inbound, our offered attribute with that tag outbound.
pub fn process_answer(
    answer: &MediaSection<'_>,
    offered: &MediaOffer,
    settings: &SrtpSettings,
) -> Result<Negotiated, SdpError> {
    let media = answer.index();
    let invalid = |reason| SdpError::InvalidAnswer { media, reason };
    let description = answer.description();
    // RFC 3264 §6: port 0 in the answer rejects the stream.
    if description.is_disabled() {
        return Ok(Negotiated::Disabled);
    }
    let (offered_proto, offered_crypto) = match offered {
        MediaOffer::Disabled => {
            return Err(invalid(
                "a stream offered with port 0 was answered with a port (RFC 3264 §6)",
            ))
        }
        MediaOffer::NotRtp => return Ok(Negotiated::NotRtp),
        MediaOffer::Rtp { proto, crypto } => (*proto, crypto),
    };
    let proto = match description.transport() {
        Transport::Rtp(proto) => proto,
        Transport::DtlsSrtp => {
            return Err(SdpError::DtlsSrtpNotSupported {
                media,
                proto: description.proto().to_owned(),
            })
        }
        Transport::Other => return Err(invalid("the answer changed the transport protocol")),
    };
    // RFC 3264 §6.1: the answer keeps the offered profile. AVP/AVPF differences are
    // tolerated; a change of security is not.
    if proto.is_secure() != offered_proto.is_secure() {
        return Err(invalid(
            "the answer changed the transport protocol (RFC 3264 §6.1)",
        ));
    }
    let mut lines: Vec<_> = answer.crypto().collect();
    if offered_crypto.is_empty() {
        if !lines.is_empty() {
            return Err(invalid(
                "a=crypto in the answer to an offer without a=crypto",
            ));
        }
        return Ok(Negotiated::Plain { proto });
    }
    let theirs = match lines.len() {
        0 if proto.is_secure() => {
            return Err(invalid(
                "RTP/SAVP answer without a=crypto (RFC 4568 §7.1.2)",
            ))
        }
        0 if settings.policy == SrtpPolicy::Mandatory => {
            return Err(SdpError::SrtpRequired { media })
        }
        // RFC 8643 §4: best-effort SRTP declined.
        0 => return Ok(Negotiated::Plain { proto }),
        1 => lines
            .pop()
            .ok_or(invalid("missing a=crypto"))?
            .map_err(|source| SdpError::InvalidCrypto { media, source })?,
        _ => {
            return Err(invalid(
                "more than one a=crypto line in the answer (RFC 4568 §7.1.2)",
            ))
        }
    };
    // RFC 4568 §7.1.3: the tag selects our offered line; the suite must be the same.
    let ours = offered_crypto.iter().find(|o| o.tag == theirs.tag).ok_or(
        SdpError::AnswerTagNotOffered {
            media,
            tag: theirs.tag,
        },
    )?;
    if ours.suite != theirs.suite {
        return Err(SdpError::AnswerSuiteMismatch {
            media,
            tag: theirs.tag,
            offered: ours.suite,
            answered: theirs.suite,
        });
    }
    let flags =
        check_params(&theirs, true).map_err(|reason| invalid(answer_param_reason(&reason)))?;
    // RFC 4568 §6.3.2, §6.3.3: both sides agree on the weakening parameters.
    if flags != UnprotectedParams::of(ours) {
        return Err(invalid(
            "the answer's UNENCRYPTED/UNAUTHENTICATED parameters differ from the offer's",
        ));
    }
    Ok(Negotiated::Srtp {
        proto,
        keys: SrtpKeys {
            inbound: theirs,
            outbound: ours.clone(),
        },
        unprotected: flags,
    })
}

/// Processes a whole answer against what we offered (one [`MediaOffer`] per section).
pub fn process_answer_sdp(
    answer: &Sdp<'_>,
    offered: &[MediaOffer],
    settings: &SrtpSettings,
) -> Result<Vec<Negotiated>, SdpError> {
    // RFC 3264 §6: one m= line in the answer per m= line in the offer.
    if answer.media().len() != offered.len() {
        return Err(SdpError::MediaCountMismatch {
            offered: offered.len(),
            answered: answer.media().len(),
        });
    }
    answer
        .media()
        .iter()
        .zip(offered)
        .map(|(section, offer)| process_answer(section, offer, settings))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{
        super::tests::{
            ASTERISK_PLAIN, BARESIP_SRTP, HELD_AND_REJECTED, IPV6_BEST_EFFORT, WEBRTC_DTLS,
        },
        *,
    };

    /// 30 bytes: an `AES_CM_128` key and salt.
    const KEY_A: &str = "u2Yx6ouT9Ikn7BAjqr6IyYKOPZk4o1PW5fDUu9zD";
    /// 46 bytes: an `AES_256_CM` key and salt.
    const KEY_256: &str = "MjM0NTY3ODk6Ozw9Pj9AQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpbXF1eXw==";

    const HEAD: &str = "v=0\r\no=- 7 7 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n";

    fn sdp(media: &str) -> String {
        format!("{HEAD}{media}")
    }

    fn parse(input: &str) -> Sdp<'_> {
        match Sdp::parse(input.as_bytes()) {
            Ok(sdp) => sdp,
            Err(e) => panic!("{e}: {input}"),
        }
    }

    fn settings(policy: SrtpPolicy) -> SrtpSettings {
        SrtpSettings::new(policy)
    }

    fn answer(input: &str, settings: &SrtpSettings) -> Result<AnswerOutcome, SdpError> {
        answer_offer(&parse(input).media()[0], settings, KeyReuse::Fresh)
    }

    fn srtp(negotiated: &Negotiated) -> (&TransportProtocol, &SrtpKeys, UnprotectedParams) {
        match negotiated {
            Negotiated::Srtp {
                proto,
                keys,
                unprotected,
            } => (proto, keys, *unprotected),
            other => panic!("expected SRTP, got {other:?}"),
        }
    }

    #[test]
    fn savp_offer_is_answered_with_the_preferred_suite_and_a_fresh_key() {
        let outcome = answer(BARESIP_SRTP, &settings(SrtpPolicy::Mandatory)).expect("answer");
        let (proto, keys, unprotected) = srtp(&outcome.negotiated);
        assert_eq!(*proto, TransportProtocol::RtpSavp);
        // Offered: tag 1 = _32, tag 2 = _80; _80 comes first in our preference.
        assert_eq!(
            (keys.inbound.tag, keys.inbound.suite),
            (2, Suite::AesCm128HmacSha1_80)
        );
        assert_eq!(
            keys.inbound.sdp_line(),
            "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:RfQpSxhZkU7RpoR8hTW1i6kSOdLUuWHPaKPWCmVl"
        );
        assert_eq!(
            (keys.outbound.tag, keys.outbound.suite),
            (2, Suite::AesCm128HmacSha1_80)
        );
        assert_ne!(
            keys.outbound.keys[0].material,
            keys.inbound.keys[0].material
        );
        assert_eq!(keys.outbound.keys[0].material.len(), 30);
        assert!(!unprotected.any());
        assert!(outcome.skipped.is_empty());
        assert_eq!(
            outcome.negotiated.sdp_crypto(),
            std::slice::from_ref(&keys.outbound)
        );
        assert_eq!(outcome.negotiated.suite(), Some(Suite::AesCm128HmacSha1_80));

        // Our preference decides, not the offer order.
        let mut prefer_32 = settings(SrtpPolicy::Optional);
        prefer_32.suites = vec![Suite::AesCm128HmacSha1_32, Suite::AesCm128HmacSha1_80];
        let outcome = answer(BARESIP_SRTP, &prefer_32).expect("answer");
        assert_eq!(srtp(&outcome.negotiated).1.inbound.tag, 1);
    }

    #[test]
    fn re_answers_keep_our_key_for_the_same_suite() {
        let mandatory = settings(SrtpPolicy::Mandatory);
        let first = answer(BARESIP_SRTP, &mandatory).expect("answer");
        let ours = srtp(&first.negotiated).1.outbound.clone();
        // The hold re-INVITE offers the same lines: our answer line is unchanged.
        let again = answer_offer(
            &parse(BARESIP_SRTP).media()[0],
            &mandatory,
            KeyReuse::Keep(std::slice::from_ref(&ours)),
        )
        .expect("answer");
        assert_eq!(srtp(&again.negotiated).1.outbound, ours);
        // A re-offer under another tag keeps the key and takes the new tag.
        let retagged = BARESIP_SRTP.replace("a=crypto:2 ", "a=crypto:7 ");
        let moved = answer_offer(
            &parse(&retagged).media()[0],
            &mandatory,
            KeyReuse::Keep(std::slice::from_ref(&ours)),
        )
        .expect("answer");
        let moved = &srtp(&moved.negotiated).1.outbound;
        assert_eq!((moved.tag, &moved.keys), (7, &ours.keys));
        // Only _32 allowed now: no kept key of that suite, so a fresh one.
        let mut only_32 = mandatory.clone();
        only_32.only_suites(&[Suite::AesCm128HmacSha1_32]);
        let fresh = answer_offer(
            &parse(BARESIP_SRTP).media()[0],
            &only_32,
            KeyReuse::Keep(std::slice::from_ref(&ours)),
        )
        .expect("answer");
        assert_eq!(
            srtp(&fresh.negotiated).1.outbound.suite,
            Suite::AesCm128HmacSha1_32
        );
    }

    #[test]
    fn srtp_off_refuses_savp_offers() {
        let error = answer(BARESIP_SRTP, &settings(SrtpPolicy::Off)).expect_err("refused");
        assert!(
            matches!(error, SdpError::SrtpRefused { media: 0 }),
            "{error:?}"
        );
        assert_eq!(error.sip_status(), 488);
        assert_eq!(error.sip_warning_code(), Some(302));
    }

    #[test]
    fn plain_offers_are_answered_plain_unless_srtp_is_mandatory() {
        for policy in [SrtpPolicy::Optional, SrtpPolicy::Off] {
            let outcome = answer(ASTERISK_PLAIN, &settings(policy)).expect("answer");
            assert_eq!(
                outcome.negotiated,
                Negotiated::Plain {
                    proto: TransportProtocol::RtpAvp
                }
            );
            assert!(outcome.negotiated.sdp_crypto().is_empty());
        }
        let error = answer(ASTERISK_PLAIN, &settings(SrtpPolicy::Mandatory)).expect_err("488");
        assert!(matches!(error, SdpError::SrtpRequired { media: 0 }));
        assert_eq!(
            (error.sip_status(), error.reason_phrase()),
            (488, "SRTP Required")
        );
    }

    #[test]
    fn best_effort_offers_follow_the_policy() {
        // RFC 8643: RTP/AVP with a=crypto (GCM tag 1, _80 tag 2 with lifetime and MKI).
        let off = answer(IPV6_BEST_EFFORT, &settings(SrtpPolicy::Off)).expect("answer");
        assert_eq!(
            off.negotiated,
            Negotiated::Plain {
                proto: TransportProtocol::RtpAvp
            }
        );
        for policy in [SrtpPolicy::Optional, SrtpPolicy::Mandatory] {
            let outcome = answer(IPV6_BEST_EFFORT, &settings(policy)).expect("answer");
            let (proto, keys, _) = srtp(&outcome.negotiated);
            assert_eq!(
                *proto,
                TransportProtocol::RtpAvp,
                "best effort keeps RTP/AVP"
            );
            assert_eq!(keys.inbound.tag, 2);
            assert_eq!(keys.inbound.keys[0].lifetime, Some(1 << 20));
            // Our key is ours: no MKI, no lifetime unless configured.
            assert_eq!(keys.outbound.keys[0].mki, None);
            assert_eq!(keys.outbound.keys[0].lifetime, None);
        }
        let mut gcm_only = settings(SrtpPolicy::Optional);
        gcm_only.only_suites(&[Suite::AeadAes128Gcm]);
        let outcome = answer(IPV6_BEST_EFFORT, &gcm_only).expect("answer");
        let (_, keys, _) = srtp(&outcome.negotiated);
        assert_eq!(
            (keys.outbound.tag, keys.outbound.suite),
            (1, Suite::AeadAes128Gcm)
        );
        assert_eq!(keys.outbound.keys[0].material.len(), 28);
    }

    #[test]
    fn best_effort_without_an_acceptable_line_is_plain_when_optional_and_488_when_mandatory() {
        let mut only_256 = settings(SrtpPolicy::Optional);
        only_256.only_suites(&[Suite::AesCm256HmacSha1_80]);
        let outcome = answer(IPV6_BEST_EFFORT, &only_256).expect("answer");
        assert_eq!(
            outcome.negotiated,
            Negotiated::Plain {
                proto: TransportProtocol::RtpAvp
            }
        );
        assert_eq!(
            outcome.skipped,
            [
                SkippedCrypto {
                    position: 0,
                    tag: Some(1),
                    reason: SkipReason::SuiteNotAllowed(Suite::AeadAes128Gcm)
                },
                SkippedCrypto {
                    position: 1,
                    tag: Some(2),
                    reason: SkipReason::SuiteNotAllowed(Suite::AesCm128HmacSha1_80)
                },
            ]
        );
        only_256.policy = SrtpPolicy::Mandatory;
        let error = answer(IPV6_BEST_EFFORT, &only_256).expect_err("488");
        assert!(
            matches!(&error, SdpError::NoAcceptableCrypto { media: 0, skipped } if skipped.len() == 2)
        );
        assert_eq!(error.sip_warning_code(), Some(305));
    }

    #[test]
    fn every_unacceptable_line_is_skipped_with_its_reason() {
        let offer = sdp(&format!(
            "m=audio 4000 RTP/SAVP 0\r\n\
             a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} KDR=1\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} FEC_ORDER=FEC_SRTP\r\n\
             a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} FUTURE_PARAM\r\n\
             a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} UNENCRYPTED_SRTP\r\n\
             a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^20|1:32\r\n\
             a=crypto:6 F8_128_HMAC_SHA1_80 inline:{KEY_A}\r\n\
             a=crypto:5 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}\r\n\
             a=crypto:7 AES_256_CM_HMAC_SHA1_80 inline:{KEY_256}\r\n"
        ));
        let mut mandatory = settings(SrtpPolicy::Mandatory);
        mandatory.exclude_suite(Suite::AesCm256HmacSha1_80);
        let SdpError::NoAcceptableCrypto { media, skipped } =
            answer(&offer, &mandatory).expect_err("488")
        else {
            panic!("expected NoAcceptableCrypto");
        };
        assert_eq!(media, 0);
        let reasons: Vec<_> = skipped
            .iter()
            .map(|s| (s.position, s.tag, s.reason.clone()))
            .collect();
        assert_eq!(reasons[0], (0, Some(1), SkipReason::KeyDerivationRate(1)));
        assert_eq!(reasons[1], (1, Some(2), SkipReason::Fec));
        assert_eq!(
            reasons[2],
            (2, Some(3), SkipReason::UnknownSessionParam { index: 0 })
        );
        assert_eq!(
            reasons[3],
            (
                3,
                Some(4),
                SkipReason::Unprotected(UnprotectedParams {
                    unencrypted_srtp: true,
                    ..UnprotectedParams::default()
                })
            )
        );
        assert!(matches!(
            reasons[4],
            (4, Some(5), SkipReason::UnusableKeys(_))
        ));
        assert!(matches!(
            &reasons[5],
            (
                5,
                None,
                SkipReason::Malformed(SdesError::UnknownSuite { .. })
            )
        ));
        assert_eq!(reasons[6], (6, Some(5), SkipReason::DuplicateTag));
        assert_eq!(
            reasons[7],
            (
                7,
                Some(7),
                SkipReason::SuiteNotAllowed(Suite::AesCm256HmacSha1_80)
            )
        );
        assert_eq!(reasons.len(), 8);
        // The error never carries key material.
        let printed = format!("{skipped:?}");
        assert!(!printed.contains("u2Yx6"), "{printed}");
    }

    #[test]
    fn unprotected_params_are_accepted_only_when_allowed_and_are_reported() {
        let offer = sdp(&format!(
            "m=audio 4000 RTP/SAVP 0\r\n\
             a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} UNENCRYPTED_SRTCP WSH=128 -X_VENDOR\r\n"
        ));
        assert!(matches!(
            answer(&offer, &settings(SrtpPolicy::Optional)),
            Err(SdpError::NoAcceptableCrypto { .. })
        ));
        let mut lenient = settings(SrtpPolicy::Optional);
        lenient.accept_unprotected = true;
        let outcome = answer(&offer, &lenient).expect("answer");
        let (_, keys, unprotected) = srtp(&outcome.negotiated);
        assert_eq!(
            unprotected,
            UnprotectedParams {
                unencrypted_srtcp: true,
                ..UnprotectedParams::default()
            }
        );
        // RFC 4568 §6.3.2: our answer carries it too; WSH and the "-" extension are not ours.
        assert_eq!(
            keys.outbound.session_params,
            [SessionParam::UnencryptedSrtcp]
        );
    }

    #[test]
    fn dtls_disabled_and_non_rtp_sections() {
        let error = answer(WEBRTC_DTLS, &settings(SrtpPolicy::Optional)).expect_err("DTLS");
        assert!(matches!(
            &error,
            SdpError::DtlsSrtpNotSupported { media: 0, proto } if proto == "UDP/TLS/RTP/SAVPF"
        ));
        assert_eq!(error.sip_status(), 488);

        let held = parse(HELD_AND_REJECTED);
        let outcomes = answer_sdp(&held, &settings(SrtpPolicy::Optional), &[]).expect("answer");
        assert_eq!(outcomes[1].negotiated, Negotiated::Disabled);
        // A disabled DTLS section is not an error: nothing is negotiated on it.
        let disabled_dtls = sdp("m=audio 0 UDP/TLS/RTP/SAVPF 0\r\n");
        assert_eq!(
            answer(&disabled_dtls, &settings(SrtpPolicy::Mandatory))
                .expect("answer")
                .negotiated,
            Negotiated::Disabled
        );

        let t38 = sdp("m=image 5004 udptl t38\r\n");
        assert_eq!(
            answer(&t38, &settings(SrtpPolicy::Optional))
                .expect("answer")
                .negotiated,
            Negotiated::NotRtp
        );
        assert!(matches!(
            answer(&t38, &settings(SrtpPolicy::Mandatory)),
            Err(SdpError::UnprotectableTransport { media: 0, .. })
        ));
    }

    fn offer(source: &str, settings: &SrtpSettings, keys: KeyReuse<'_>) -> MediaOffer {
        match offer_media(&parse(source).media()[0], settings, keys) {
            Ok(offer) => offer,
            Err(e) => panic!("{e}"),
        }
    }

    fn tags_and_suites(offer: &MediaOffer) -> Vec<(u32, Suite)> {
        offer.crypto().iter().map(|c| (c.tag, c.suite)).collect()
    }

    #[test]
    fn offers_follow_the_policy_and_keep_the_feedback_profile() {
        let mandatory = offer(
            ASTERISK_PLAIN,
            &settings(SrtpPolicy::Mandatory),
            KeyReuse::Fresh,
        );
        assert_eq!(mandatory.proto(), Some(TransportProtocol::RtpSavp));
        assert_eq!(
            tags_and_suites(&mandatory),
            DEFAULT_SUITES
                .iter()
                .zip(1..)
                .map(|(s, t)| (t, *s))
                .collect::<Vec<_>>()
        );
        let avpf = sdp("m=video 4000 RTP/AVPF 96\r\n");
        assert_eq!(
            offer(&avpf, &settings(SrtpPolicy::Mandatory), KeyReuse::Fresh).proto(),
            Some(TransportProtocol::RtpSavpf)
        );

        // Optional: RFC 8643 best effort, RTP/AVP with a=crypto.
        let optional = offer(
            BARESIP_SRTP,
            &settings(SrtpPolicy::Optional),
            KeyReuse::Fresh,
        );
        assert_eq!(optional.proto(), Some(TransportProtocol::RtpAvp));
        assert_eq!(optional.crypto().len(), DEFAULT_SUITES.len());
        let optional_f = offer(&avpf, &settings(SrtpPolicy::Optional), KeyReuse::Fresh);
        assert_eq!(optional_f.proto(), Some(TransportProtocol::RtpAvpf));

        let off = offer(BARESIP_SRTP, &settings(SrtpPolicy::Off), KeyReuse::Fresh);
        assert_eq!(
            off,
            MediaOffer::Rtp {
                proto: TransportProtocol::RtpAvp,
                crypto: vec![]
            }
        );

        let held = parse(HELD_AND_REJECTED);
        let offers = offer_sdp(&held, &settings(SrtpPolicy::Mandatory), &[]).expect("offers");
        assert_eq!(offers[1], MediaOffer::Disabled);
        assert!(offers[1].crypto().is_empty());
    }

    #[test]
    fn offer_hooks_restrict_suites_and_shape_generated_keys() {
        let mut ng = settings(SrtpPolicy::Optional);
        ng.only_suites(&[Suite::AeadAes128Gcm, Suite::AesCm128HmacSha1_80]);
        ng.exclude_suite(Suite::AeadAes128Gcm);
        ng.lifetime = Some(1 << 31);
        ng.offer_params = UnprotectedParams {
            unencrypted_srtp: true,
            unencrypted_srtcp: true,
            unauthenticated_srtp: false,
        };
        ng.transport = Some(TransportProtocol::RtpSavpf);
        let made = offer(ASTERISK_PLAIN, &ng, KeyReuse::Fresh);
        assert_eq!(made.proto(), Some(TransportProtocol::RtpSavpf));
        assert_eq!(tags_and_suites(&made), [(1, Suite::AesCm128HmacSha1_80)]);
        let line = made.crypto()[0].sdp_line();
        assert!(
            line.starts_with("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{line}"
        );
        assert!(
            line.ends_with("|2^31 UNENCRYPTED_SRTP UNENCRYPTED_SRTCP"),
            "{line}"
        );

        // transport-protocol conversion the other way: SAVP source, plain target.
        let mut to_plain = settings(SrtpPolicy::Off);
        to_plain.transport = Some(TransportProtocol::RtpAvp);
        assert_eq!(
            offer(BARESIP_SRTP, &to_plain, KeyReuse::Fresh).proto(),
            Some(TransportProtocol::RtpAvp)
        );
    }

    #[test]
    fn contradictory_settings_are_refused() {
        let source = parse(ASTERISK_PLAIN);
        let section = &source.media()[0];
        let mut off_but_secure = settings(SrtpPolicy::Off);
        off_but_secure.transport = Some(TransportProtocol::RtpSavp);
        let mut mandatory_but_plain = settings(SrtpPolicy::Mandatory);
        mandatory_but_plain.transport = Some(TransportProtocol::RtpAvp);
        let mut no_suites = settings(SrtpPolicy::Mandatory);
        no_suites.only_suites(&[]);
        let mut zero_lifetime = settings(SrtpPolicy::Optional);
        zero_lifetime.lifetime = Some(0);
        for bad in [
            off_but_secure,
            mandatory_but_plain,
            no_suites,
            zero_lifetime,
        ] {
            let error = offer_media(section, &bad, KeyReuse::Fresh).expect_err("refused");
            assert!(
                matches!(error, SdpError::InvalidSettings { .. }),
                "{error:?}"
            );
            assert_eq!(error.sip_status(), 500);
        }
    }

    #[test]
    fn re_offers_keep_keys_unless_re_keyed() {
        let mut two = settings(SrtpPolicy::Mandatory);
        two.suites = vec![Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32];
        let first = offer(ASTERISK_PLAIN, &two, KeyReuse::Fresh);
        let kept = offer(ASTERISK_PLAIN, &two, KeyReuse::Keep(first.crypto()));
        assert_eq!(
            kept, first,
            "hold/resume re-offer keeps tags, suites and keys"
        );
        let rekeyed = offer(ASTERISK_PLAIN, &two, KeyReuse::Fresh);
        assert_eq!(tags_and_suites(&rekeyed), tags_and_suites(&first));
        assert_ne!(rekeyed.crypto()[0], first.crypto()[0]);

        // Keeping the one line we answered with (tag 3, _32): the _80 line is new and gets
        // the smallest free tag; preference order is kept.
        let answered = CryptoAttribute::generate(3, Suite::AesCm128HmacSha1_32).expect("CSPRNG");
        let reoffer = offer(
            ASTERISK_PLAIN,
            &two,
            KeyReuse::Keep(std::slice::from_ref(&answered)),
        );
        assert_eq!(
            tags_and_suites(&reoffer),
            [
                (1, Suite::AesCm128HmacSha1_80),
                (3, Suite::AesCm128HmacSha1_32)
            ]
        );
        assert_eq!(reoffer.crypto()[1], answered);

        // nonew: only the kept line.
        two.no_new_suites = true;
        let nonew = offer(
            ASTERISK_PLAIN,
            &two,
            KeyReuse::Keep(std::slice::from_ref(&answered)),
        );
        assert_eq!(nonew.crypto(), std::slice::from_ref(&answered));
        // A kept suite that is no longer allowed is dropped; with nothing left, fresh keys.
        two.suites = vec![Suite::AesCm128HmacSha1_80];
        let fallback = offer(
            ASTERISK_PLAIN,
            &two,
            KeyReuse::Keep(std::slice::from_ref(&answered)),
        );
        assert_eq!(
            tags_and_suites(&fallback),
            [(1, Suite::AesCm128HmacSha1_80)]
        );
    }

    /// Our offer on a leg, the peer's answer SDP built around `answer_media`, processed.
    fn answered(
        offered: &MediaOffer,
        answer_media: &str,
        settings: &SrtpSettings,
    ) -> Result<Negotiated, SdpError> {
        let text = sdp(answer_media);
        process_answer(&parse(&text).media()[0], offered, settings)
    }

    fn mandatory_offer() -> MediaOffer {
        let mut two = settings(SrtpPolicy::Mandatory);
        two.suites = vec![Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32];
        offer(ASTERISK_PLAIN, &two, KeyReuse::Fresh)
    }

    #[test]
    fn answers_select_one_of_our_tags() {
        let ours = mandatory_offer();
        let result = answered(
            &ours,
            &format!(
                "m=audio 5000 RTP/SAVP 0\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}\r\n"
            ),
            &settings(SrtpPolicy::Mandatory),
        )
        .expect("answer");
        let (proto, keys, _) = srtp(&result);
        assert_eq!(*proto, TransportProtocol::RtpSavp);
        assert_eq!(keys.outbound, ours.crypto()[1]);
        assert_eq!(
            keys.inbound.sdp_line(),
            format!("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}")
        );
    }

    #[test]
    fn answers_that_break_rfc_4568_are_refused() {
        let ours = mandatory_offer();
        let mandatory = settings(SrtpPolicy::Mandatory);
        let check = |media: &str| answered(&ours, media, &mandatory).expect_err("refused");

        let error = check(&format!(
            "m=audio 5000 RTP/SAVP 0\r\na=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}\r\n"
        ));
        assert!(matches!(
            error,
            SdpError::AnswerTagNotOffered { media: 0, tag: 9 }
        ));

        let error = check(&format!(
            "m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}\r\n"
        ));
        assert!(matches!(
            error,
            SdpError::AnswerSuiteMismatch {
                tag: 1,
                offered: Suite::AesCm128HmacSha1_80,
                answered: Suite::AesCm128HmacSha1_32,
                ..
            }
        ));

        let error = check(&format!(
            "m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}\r\n"
        ));
        assert!(matches!(error, SdpError::InvalidAnswer { .. }), "{error:?}");

        let error = check("m=audio 5000 RTP/SAVP 0\r\n");
        assert!(matches!(error, SdpError::InvalidAnswer { .. }), "{error:?}");

        let error = check("m=audio 5000 RTP/AVP 0\r\n");
        assert!(matches!(error, SdpError::InvalidAnswer { .. }), "{error:?}");

        let error = check(&format!(
            "m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} KDR=2\r\n"
        ));
        assert!(matches!(error, SdpError::InvalidAnswer { .. }), "{error:?}");

        let error = check(&format!(
            "m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} UNENCRYPTED_SRTP\r\n"
        ));
        assert!(matches!(error, SdpError::InvalidAnswer { .. }), "{error:?}");

        let error =
            check("m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:short\r\n");
        assert!(
            matches!(error, SdpError::InvalidCrypto { media: 0, .. }),
            "{error:?}"
        );
        assert_eq!(error.sip_status(), 400);

        let error = check("m=audio 5000 UDP/TLS/RTP/SAVP 0\r\n");
        assert!(
            matches!(error, SdpError::DtlsSrtpNotSupported { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn best_effort_and_plain_answers() {
        let optional = settings(SrtpPolicy::Optional);
        let best_effort = offer(ASTERISK_PLAIN, &optional, KeyReuse::Fresh);
        // Declined best effort: plain.
        assert_eq!(
            answered(&best_effort, "m=audio 5000 RTP/AVP 0\r\n", &optional).expect("plain"),
            Negotiated::Plain {
                proto: TransportProtocol::RtpAvp
            }
        );
        // Accepted best effort: SRTP on RTP/AVP.
        let tag = best_effort.crypto()[0].tag;
        let accepted = answered(
            &best_effort,
            &format!("m=audio 5000 RTP/AVP 0\r\na=crypto:{tag} AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}\r\n"),
            &optional,
        )
        .expect("SRTP");
        assert_eq!(srtp(&accepted).0, &TransportProtocol::RtpAvp);
        // A mandatory policy with a best-effort offer (forced RTP/AVP is refused earlier, but
        // a Keep'd best-effort offer processed under a stricter policy) refuses a plain answer.
        assert!(matches!(
            answered(
                &best_effort,
                "m=audio 5000 RTP/AVP 0\r\n",
                &settings(SrtpPolicy::Mandatory)
            ),
            Err(SdpError::SrtpRequired { media: 0 })
        ));

        let off = settings(SrtpPolicy::Off);
        let plain = offer(ASTERISK_PLAIN, &off, KeyReuse::Fresh);
        assert_eq!(
            answered(&plain, "m=audio 5000 RTP/AVP 0\r\n", &off).expect("plain"),
            Negotiated::Plain {
                proto: TransportProtocol::RtpAvp
            }
        );
        assert!(matches!(
            answered(
                &plain,
                &format!("m=audio 5000 RTP/AVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}\r\n"),
                &off
            ),
            Err(SdpError::InvalidAnswer { .. })
        ));
        // Rejected stream; and a stream we offered disabled must stay disabled.
        assert_eq!(
            answered(&plain, "m=audio 0 RTP/AVP 0\r\n", &off).expect("rejected"),
            Negotiated::Disabled
        );
        assert!(matches!(
            answered(&MediaOffer::Disabled, "m=audio 5000 RTP/AVP 0\r\n", &off),
            Err(SdpError::InvalidAnswer { .. })
        ));
        assert_eq!(
            answered(&MediaOffer::NotRtp, "m=image 5000 udptl t38\r\n", &off).expect("t38"),
            Negotiated::NotRtp
        );
    }

    #[test]
    fn answer_media_count_must_match_the_offer() {
        let answer = parse(ASTERISK_PLAIN);
        let error = process_answer_sdp(
            &answer,
            &[MediaOffer::NotRtp, MediaOffer::NotRtp],
            &settings(SrtpPolicy::Off),
        )
        .expect_err("mismatch");
        assert!(matches!(
            error,
            SdpError::MediaCountMismatch {
                offered: 2,
                answered: 1
            }
        ));
    }
}
