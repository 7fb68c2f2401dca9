//! The SDP layer's one error type, with its mapping to SIP status codes.
//!
//! | Variant group                         | SIP status | Warning (RFC 3261 §20.43)          |
//! |---------------------------------------|------------|------------------------------------|
//! | malformed SDP (parse, `a=rtcp`, ...)  | 400        | 399 Miscellaneous                  |
//! | unacceptable media / keying           | 488        | 302 / 304 / 305 / 306 (see each)   |
//! | our own plan or the CSPRNG failed     | 500        | none                               |
//!
//! Errors carry line numbers, media indices, suite names and tags, never SDP text that could
//! hold key material.

use srtp::{sdes::SdesError, Suite};

use super::negotiation::SkippedCrypto;

/// Why an SDP was refused, or why its media could not be negotiated.
///
/// `line` fields are 1-based line numbers in the SDP; `media` fields are 0-based indices of
/// the media section (`m=` line) in the SDP.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// SIP 400: the body is larger than [`super::MAX_SDP_LEN`].
    #[error("SDP of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// SIP 400: more lines than [`super::MAX_LINES`].
    #[error("SDP has more than {max} lines")]
    TooManyLines {
        /// The limit.
        max: usize,
    },
    /// SIP 400: more media sections than [`super::MAX_MEDIA_SECTIONS`].
    #[error("SDP has more than {max} media sections")]
    TooManyMediaSections {
        /// The limit.
        max: usize,
    },
    /// SIP 400: the body is not UTF-8 (RFC 8866 §5: SDP text is UTF-8 by default).
    #[error("SDP is not UTF-8 (byte {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// SIP 400: the first line is not `v=0` (RFC 8866 §5.1), so this is not SDP.
    #[error("SDP must start with v=0")]
    MissingVersion,
    /// SIP 400: a line that is not `<type>=<value>` or holds a NUL or a bare CR (RFC 8866 §5).
    #[error("line {line}: {reason}")]
    InvalidLine {
        /// The line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// SIP 400: a type letter RFC 8866 §5 does not define (the RFC allows rejecting the
    /// whole description).
    #[error("line {line}: unknown SDP line type {kind:?}")]
    UnknownLineType {
        /// The line number.
        line: usize,
        /// The type letter.
        kind: char,
    },
    /// SIP 400: a line that may appear only once per section, or only at session level, is
    /// repeated or misplaced (`v=`, `o=`, `c=`).
    #[error("line {line}: unexpected or repeated {kind}= line")]
    UnexpectedLine {
        /// The line number.
        line: usize,
        /// The type letter.
        kind: char,
    },
    /// SIP 400: no `o=` line (RFC 8866 §5.2).
    #[error("SDP has no o= line")]
    MissingOrigin,
    /// SIP 400: an `o=` line that does not follow RFC 8866 §5.2.
    #[error("line {line}: invalid o= line: {reason}")]
    InvalidOrigin {
        /// The line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// SIP 400: a `c=` line that does not follow RFC 8866 §5.7 (only `IN IP4`/`IN IP6`).
    #[error("line {line}: invalid c= line: {reason}")]
    InvalidConnection {
        /// The line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// SIP 400: an active media section with no `c=` line and no session-level `c=`
    /// (RFC 8866 §5.7).
    #[error("media {media} has no connection address")]
    MissingConnection {
        /// The media section.
        media: usize,
    },
    /// SIP 400: an `m=` line that does not follow RFC 8866 §5.14.
    #[error("line {line}: invalid m= line: {reason}")]
    InvalidMediaLine {
        /// The line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// SIP 400: an `m=` port that is not a decimal number up to 65535, or a port count of 0.
    #[error("line {line}: invalid m= port")]
    InvalidPort {
        /// The line number.
        line: usize,
    },
    /// SIP 400: an `a=rtcp` attribute that does not follow RFC 3605 §2.1.
    #[error("media {media}: invalid a=rtcp attribute: {reason}")]
    InvalidRtcp {
        /// The media section.
        media: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// SIP 400: a malformed `a=crypto` line in an answer (in an offer, malformed lines are
    /// skipped and reported, RFC 4568 §7.1.1).
    #[error("media {media}: invalid a=crypto line in the answer: {source}")]
    InvalidCrypto {
        /// The media section.
        media: usize,
        /// Why the line was refused (never contains key material).
        source: SdesError,
    },

    /// SIP 488 (Warning 302): DTLS-SRTP (`UDP/TLS/RTP/SAVP[F]`, RFC 5764) is not supported;
    /// this relay keys media with SDES only.
    #[error("media {media}: DTLS-SRTP transport {proto} is not supported")]
    DtlsSrtpNotSupported {
        /// The media section.
        media: usize,
        /// The offered transport protocol.
        proto: String,
    },
    /// SIP 488 (Warning 302): a non-RTP transport (such as `udptl` for T.38) where the SRTP
    /// policy is mandatory: it cannot be protected.
    #[error("media {media}: transport {proto} cannot carry SRTP, which is mandatory")]
    UnprotectableTransport {
        /// The media section.
        media: usize,
        /// The transport protocol.
        proto: String,
    },
    /// SIP 488 (Warning 302): plain RTP offered (no `a=crypto`) where SRTP is mandatory.
    #[error("media {media}: SRTP is required but the peer offered plain RTP")]
    SrtpRequired {
        /// The media section.
        media: usize,
    },
    /// SIP 488 (Warning 302): `RTP/SAVP[F]` offered where SRTP is off.
    #[error("media {media}: SRTP was offered but is disabled")]
    SrtpRefused {
        /// The media section.
        media: usize,
    },
    /// SIP 488 (Warning 305): SRTP is required (mandatory policy or an `RTP/SAVP[F]` offer) and
    /// no offered `a=crypto` line is acceptable (RFC 4568 §7.1.2).
    #[error("media {media}: none of the {} offered a=crypto lines is acceptable", skipped.len())]
    NoAcceptableCrypto {
        /// The media section.
        media: usize,
        /// Every offered line and why it was refused.
        skipped: Vec<SkippedCrypto>,
    },
    /// SIP 488: the answer's `a=crypto` tag is not one we offered (RFC 4568 §7.1.3).
    #[error("media {media}: the answer's a=crypto tag {tag} was not offered")]
    AnswerTagNotOffered {
        /// The media section.
        media: usize,
        /// The answered tag.
        tag: u32,
    },
    /// SIP 488: the answer's `a=crypto` line changed the suite of the offered line with the
    /// same tag (RFC 4568 §7.1.3).
    #[error("media {media}: tag {tag} was offered with {offered} but answered with {answered}")]
    AnswerSuiteMismatch {
        /// The media section.
        media: usize,
        /// The tag.
        tag: u32,
        /// The suite we offered with that tag.
        offered: Suite,
        /// The suite in the answer.
        answered: Suite,
    },
    /// SIP 488: an answer that breaks RFC 3264 §6 or RFC 4568 §7.1.2 (transport changed,
    /// several `a=crypto` lines, unacceptable session parameters, ...).
    #[error("media {media}: invalid answer: {reason}")]
    InvalidAnswer {
        /// The media section.
        media: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// SIP 488: the answer does not have one media section per offered one (RFC 3264 §6).
    #[error("the answer has {answered} media sections, the offer had {offered}")]
    MediaCountMismatch {
        /// Media sections offered.
        offered: usize,
        /// Media sections answered.
        answered: usize,
    },

    /// SIP 500: the operating system's CSPRNG failed while generating a key.
    #[error("key generation failed: {0}")]
    KeyGeneration(getrandom::Error),
    /// SIP 500: our own negotiation settings contradict each other (a configuration error).
    #[error("invalid SRTP settings: {reason}")]
    InvalidSettings {
        /// What is wrong.
        reason: &'static str,
    },
    /// SIP 500: a rewrite plan that does not fit the SDP it is applied to (a caller bug).
    #[error("invalid rewrite plan: {reason}")]
    InvalidPlan {
        /// What is wrong.
        reason: &'static str,
    },
    /// SIP 500: the rewritten SDP would exceed our own limits, so a peer using them would
    /// refuse it.
    #[error("the rewritten SDP would exceed the limits ({len} bytes, {lines} lines)")]
    RewriteTooLarge {
        /// The rewritten length in bytes.
        len: usize,
        /// The rewritten line count.
        lines: usize,
    },
}

impl SdpError {
    /// The SIP status a request carrying the offending SDP is answered with: 400 for malformed
    /// SDP, 488 for unacceptable media, 500 for our own failures.
    pub fn sip_status(&self) -> u16 {
        match self {
            Self::TooLarge { .. }
            | Self::TooManyLines { .. }
            | Self::TooManyMediaSections { .. }
            | Self::NotUtf8 { .. }
            | Self::MissingVersion
            | Self::InvalidLine { .. }
            | Self::UnknownLineType { .. }
            | Self::UnexpectedLine { .. }
            | Self::MissingOrigin
            | Self::InvalidOrigin { .. }
            | Self::InvalidConnection { .. }
            | Self::MissingConnection { .. }
            | Self::InvalidMediaLine { .. }
            | Self::InvalidPort { .. }
            | Self::InvalidRtcp { .. }
            | Self::InvalidCrypto { .. } => 400,
            Self::DtlsSrtpNotSupported { .. }
            | Self::UnprotectableTransport { .. }
            | Self::SrtpRequired { .. }
            | Self::SrtpRefused { .. }
            | Self::NoAcceptableCrypto { .. }
            | Self::AnswerTagNotOffered { .. }
            | Self::AnswerSuiteMismatch { .. }
            | Self::InvalidAnswer { .. }
            | Self::MediaCountMismatch { .. } => 488,
            Self::KeyGeneration(_)
            | Self::InvalidSettings { .. }
            | Self::InvalidPlan { .. }
            | Self::RewriteTooLarge { .. } => 500,
        }
    }

    /// A short reason phrase for the SIP status line or an NG `error-reason`, such as
    /// `"SRTP Required"`. Carries no SDP text.
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            Self::TooLarge { .. }
            | Self::TooManyLines { .. }
            | Self::TooManyMediaSections { .. } => "SDP Too Large",
            Self::NotUtf8 { .. }
            | Self::MissingVersion
            | Self::InvalidLine { .. }
            | Self::UnknownLineType { .. }
            | Self::UnexpectedLine { .. }
            | Self::MissingOrigin
            | Self::InvalidOrigin { .. }
            | Self::InvalidConnection { .. }
            | Self::MissingConnection { .. }
            | Self::InvalidMediaLine { .. }
            | Self::InvalidPort { .. }
            | Self::InvalidRtcp { .. } => "Malformed SDP",
            Self::InvalidCrypto { .. } => "Malformed Crypto Attribute",
            Self::DtlsSrtpNotSupported { .. } => "DTLS-SRTP Not Supported",
            Self::UnprotectableTransport { .. } => "Transport Cannot Carry SRTP",
            Self::SrtpRequired { .. } => "SRTP Required",
            Self::SrtpRefused { .. } => "SRTP Not Accepted",
            Self::NoAcceptableCrypto { .. } => "No Acceptable Crypto Suite",
            Self::AnswerTagNotOffered { .. } | Self::AnswerSuiteMismatch { .. } => {
                "Crypto Answer Does Not Match Offer"
            }
            Self::InvalidAnswer { .. } | Self::MediaCountMismatch { .. } => "Invalid SDP Answer",
            Self::KeyGeneration(_) => "Key Generation Failed",
            Self::InvalidSettings { .. } => "Invalid SRTP Settings",
            Self::InvalidPlan { .. } | Self::RewriteTooLarge { .. } => "SDP Rewrite Failed",
        }
    }

    /// The RFC 3261 §20.43 warn-code for a `Warning` header next to a 488, if one fits:
    /// 302 incompatible transport protocol, 305 incompatible media format, 399 miscellaneous.
    pub fn sip_warning_code(&self) -> Option<u16> {
        match self.sip_status() {
            400 => Some(399),
            488 => Some(match self {
                Self::DtlsSrtpNotSupported { .. }
                | Self::UnprotectableTransport { .. }
                | Self::SrtpRequired { .. }
                | Self::SrtpRefused { .. } => 302,
                Self::NoAcceptableCrypto { .. } => 305,
                _ => 399,
            }),
            _ => None,
        }
    }
}
