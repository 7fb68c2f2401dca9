//! The errors of the SIP codec: one enum for a whole message ([`ParseError`]), one for a typed
//! header view ([`HeaderError`]) and one for a URI ([`UriError`]).
//!
//! Every variant carries the structured facts (which header, which line, which limit) and
//! [`ParseError::reason`] turns it into a short phrase fit for the reason phrase of the 4xx/5xx
//! the driver sends back (RFC 3261 §21.4.1: 400 "SHOULD" say what was wrong).

use std::borrow::Cow;

/// What is wrong with a URI (RFC 3261 §19.1, §25.1 `SIP-URI`, RFC 3986 `absoluteURI`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The text is empty.
    #[error("empty URI")]
    Empty,
    /// No `scheme:` prefix, or the scheme has characters outside RFC 3986 §3.1.
    #[error("missing or invalid URI scheme")]
    InvalidScheme,
    /// The user part has a character outside `unreserved / escaped / user-unreserved`.
    #[error("invalid user part")]
    InvalidUser,
    /// The password has a character outside RFC 3261 §25.1 `password`.
    #[error("invalid password")]
    InvalidPassword,
    /// The host is neither a hostname, an IPv4 address nor a bracketed IPv6 reference.
    #[error("invalid host")]
    InvalidHost,
    /// The port is not a decimal number in 0..=65535.
    #[error("invalid port")]
    InvalidPort,
    /// A `;uri-parameter` is empty or has a character outside `paramchar`.
    #[error("invalid URI parameter")]
    InvalidParam,
    /// The `?headers` part is empty or has a character outside `hnv-unreserved / unreserved`.
    #[error("invalid URI headers")]
    InvalidHeaders,
    /// A Request-URI carries `?headers` (RFC 3261 §19.1.5 forbids them there; RFC 4475
    /// §3.1.2.11).
    #[error("headers not allowed in a Request-URI")]
    HeadersNotAllowed,
    /// A non-SIP absolute URI has whitespace, quotes, angle brackets or control characters.
    #[error("invalid character in URI")]
    InvalidCharacter,
}

/// What is wrong with one header field value, found by a typed view (Via, `CSeq`, name-addr...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The value (or one comma-separated element of it) is empty.
    #[error("empty value")]
    Empty,
    /// Via `sent-protocol` is not `name/version/transport` (RFC 3261 §20.42).
    #[error("invalid sent-protocol")]
    InvalidSentProtocol,
    /// A host (Via sent-by, `received`, `maddr`) is not a hostname or IP address.
    #[error("invalid host")]
    InvalidHost,
    /// A port is not a decimal number in 0..=65535.
    #[error("invalid port")]
    InvalidPort,
    /// A `;name=value` parameter is empty, has a non-token name or an invalid value.
    #[error("invalid parameter")]
    InvalidParam,
    /// A number is missing, has non-digits, or is out of the field's range.
    #[error("invalid number")]
    InvalidNumber,
    /// A method is not an RFC 3261 `token`.
    #[error("invalid method")]
    InvalidMethod,
    /// A Call-ID is not `word ["@" word]` (RFC 3261 §25.1).
    #[error("invalid Call-ID")]
    InvalidCallId,
    /// A quoted string has no closing quote.
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    /// An unquoted display name has a non-token character (RFC 3261 §25.1 `display-name`).
    #[error("invalid display name")]
    InvalidDisplayName,
    /// `<` without `>`, or an addr-spec in a form RFC 3261 §20.10 requires to be enclosed in `<>`.
    #[error("invalid name-addr")]
    InvalidNameAddr,
    /// The URI of a name-addr is invalid.
    #[error("invalid URI: {0}")]
    InvalidUri(#[source] UriError),
    /// Contact `*` mixed with addresses (RFC 3261 §10.2.2).
    #[error("wildcard Contact mixed with addresses")]
    WildcardMixed,
    /// A media type is not `type/subtype *(;param)` (RFC 3261 §20.15).
    #[error("invalid media type")]
    InvalidMediaType,
    /// Characters are left over after a complete value.
    #[error("trailing characters")]
    Trailing,
}

/// Why a message was rejected by [`Message::parse`](super::Message::parse).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Nothing but CRLFs (a keep-alive) or nothing at all.
    #[error("empty message")]
    Empty,
    /// The message is larger than [`MAX_MESSAGE_LEN`](super::MAX_MESSAGE_LEN).
    #[error("message of {size} bytes exceeds {limit} bytes")]
    TooLarge {
        /// Size of the message (or of what was buffered so far).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// No empty line ends the header section.
    #[error("header section not terminated by an empty line")]
    Unterminated,
    /// More header fields than [`MAX_HEADERS`](super::MAX_HEADERS).
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// A header field (after unfolding) is longer than [`MAX_HEADER_LINE`](super::MAX_HEADER_LINE).
    #[error("header field on line {line} exceeds {limit} bytes")]
    HeaderLineTooLong {
        /// 1-based line number of the field's first line.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// More Via values than [`MAX_VIA`](super::MAX_VIA).
    #[error("more than {limit} Via values")]
    TooManyVia {
        /// The limit.
        limit: usize,
    },
    /// A NUL byte in the start line or a header field.
    #[error("NUL byte on line {line}")]
    NulByte {
        /// 1-based line number.
        line: usize,
    },
    /// Invalid UTF-8 in the start line or a header field (RFC 3261 §7.3.1: UTF-8 text).
    #[error("invalid UTF-8 on line {line}")]
    InvalidUtf8 {
        /// 1-based line number.
        line: usize,
    },
    /// A CR not followed by LF inside a line.
    #[error("bare CR on line {line}")]
    BareCr {
        /// 1-based line number.
        line: usize,
    },
    /// The first line is neither `Method SP Request-URI SP SIP-Version` nor
    /// `SIP-Version SP Status-Code SP Reason-Phrase` (RFC 3261 §7.1, §7.2).
    #[error("malformed start line")]
    MalformedStartLine,
    /// A SIP version other than SIP/2.0 (answered with 505, RFC 3261 §21.5.7).
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    /// The method of the request line is not a token.
    #[error("invalid method")]
    InvalidMethod,
    /// The status code is not three digits in 100..=699 (RFC 3261 §7.2).
    #[error("invalid status code")]
    InvalidStatusCode,
    /// The Request-URI is invalid.
    #[error("invalid Request-URI: {0}")]
    InvalidRequestUri(#[source] UriError),
    /// A header line has no colon or a non-token name, or a continuation line comes first.
    #[error("malformed header field on line {line}")]
    MalformedHeader {
        /// 1-based line number.
        line: usize,
    },
    /// A mandatory header field is absent (RFC 3261 §8.1.1).
    #[error("missing {name} header")]
    MissingHeader {
        /// Canonical header name.
        name: &'static str,
    },
    /// A header field that takes one value appears more than once (RFC 4475 `multi01`).
    #[error("duplicate {name} header")]
    DuplicateHeader {
        /// Canonical header name.
        name: &'static str,
    },
    /// A header field's value is invalid for its grammar.
    #[error("invalid {name} header: {source}")]
    InvalidHeader {
        /// Canonical header name.
        name: &'static str,
        /// What is wrong with it.
        #[source]
        source: HeaderError,
    },
    /// The `CSeq` method differs from the request method (RFC 3261 §8.2.3 answers 400).
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// The body is shorter than Content-Length says (RFC 3261 §18.3).
    #[error("body of {available} bytes is shorter than Content-Length {declared}")]
    BodyTooShort {
        /// Content-Length value.
        declared: usize,
        /// Bytes present after the header section.
        available: usize,
    },
    /// A stream frame has no Content-Length (RFC 3261 §18.3, §20.14: mandatory on streams).
    #[error("missing Content-Length on a stream transport")]
    ContentLengthRequired,
}

impl ParseError {
    /// The status code to answer a request rejected with this error: 505 for another SIP version
    /// (RFC 3261 §21.5.7), 513 for an oversized message (§21.5.8), 400 otherwise.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::UnsupportedVersion => 505,
            Self::TooLarge { .. } => 513,
            _ => 400,
        }
    }

    /// A short reason phrase (printable ASCII, no CR/LF) for the response's status line.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            Self::Empty => "Empty Message".into(),
            Self::TooLarge { .. } => "Message Too Large".into(),
            Self::Unterminated => "Unterminated Header Section".into(),
            Self::TooManyHeaders { .. } => "Too Many Header Fields".into(),
            Self::HeaderLineTooLong { .. } => "Header Field Too Long".into(),
            Self::TooManyVia { .. } => "Too Many Via".into(),
            Self::NulByte { .. } => "NUL Byte In Header".into(),
            Self::InvalidUtf8 { .. } => "Invalid UTF-8".into(),
            Self::BareCr { .. } => "Bare CR".into(),
            Self::MalformedStartLine => "Malformed Request Line".into(),
            Self::UnsupportedVersion => "Version Not Supported".into(),
            Self::InvalidMethod => "Invalid Method".into(),
            Self::InvalidStatusCode => "Invalid Status Code".into(),
            Self::InvalidRequestUri(_) => "Invalid Request-URI".into(),
            Self::MalformedHeader { .. } => "Malformed Header Field".into(),
            Self::MissingHeader { name } => format!("Missing {name}").into(),
            Self::DuplicateHeader { name } => format!("Duplicate {name}").into(),
            Self::InvalidHeader { name, .. } => format!("Invalid {name}").into(),
            Self::CSeqMethodMismatch => "CSeq Method Mismatch".into(),
            Self::BodyTooShort { .. } => "Content-Length Exceeds Body".into(),
            Self::ContentLengthRequired => "Content-Length Required".into(),
        }
    }
}
