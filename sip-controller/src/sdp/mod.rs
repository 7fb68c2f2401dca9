//! SDP (RFC 8866) as the B2BUA and the NG server need it: a line-preserving model, the few
//! rewrites a media relay makes, and SDES-SRTP offer/answer negotiation (RFC 4568 with
//! RFC 3264).
//!
//! This module owns how SDP is read and written; [`negotiation`] owns which keys and
//! transports each leg gets, and [`leg`] combines both into "the SDP to send on the other
//! leg". Everything is IO-free and clock-free.
//!
//! Why hand-written rather than an SDP crate: a relay must forward SDP from one leg to the
//! other changing only what it must (`o=` version, `c=`, `m=` port and proto, `a=crypto`,
//! `a=rtcp`, ICE lines), so the model keeps every line verbatim with its own line ending and
//! serialises an untouched description byte for byte. Crates that parse into a structured
//! session and print it back normalise order, spacing and endings, and drop what they do not
//! model; peers then see changed `a=fmtp`, `a=rtpmap` or vendor lines.
//!
//! ```text
//! v=0                                  \
//! o=- 4858 4859 IN IP4 192.0.2.10       | session section: lines up to the first m=
//! s=-                                   | (o= and c= are parsed and checked)
//! c=IN IP4 192.0.2.10                   |
//! t=0 0                                /
//! m=audio 49170 RTP/SAVP 0 8 101       \  media section 0: the m= line and every line
//! a=crypto:1 AES_CM_128_HMAC_SHA1_80 ..  | up to the next m= (m= and c= parsed, the
//! a=rtcp-mux                           /   attributes on demand)
//! m=video 0 RTP/AVP 96                  - media section 1 (port 0: disabled)
//! ```
//!
//! Parsing borrows from the input ([`Sdp<'a>`] holds `Cow` lines), is bounded by
//! [`MAX_SDP_LEN`], [`MAX_LINES`] and [`MAX_MEDIA_SECTIONS`], rejects what is not SDP with a
//! typed [`SdpError`], and never panics. SDP carries keys (`a=crypto`), so [`Sdp`] has no
//! `Display`, and its `Debug` redacts `a=crypto`, `a=key-mgmt`, `a=ice-pwd` and `k=` lines.

use std::{borrow::Cow, fmt, net::IpAddr};

/// The SDES types this module's API speaks, re-exported for callers (the fuzz target, the NG
/// server) that do not depend on `srtp` themselves.
pub use srtp::{
    sdes::{CryptoAttribute, SdesError},
    Suite,
};

mod error;
pub mod leg;
pub mod negotiation;
mod rewrite;

pub use error::SdpError;
pub use leg::{rewrite_for_leg, LegSdpPlan, MediaPlan, OriginIdentity, OriginUpdate, RtcpPlan};
pub use negotiation::{
    answer_offer, answer_sdp, offer_media, offer_profile, offer_sdp, process_answer,
    process_answer_sdp, AnswerOutcome, KeyReuse, MediaOffer, Negotiated, SkipReason, SkippedCrypto,
    SrtpKeys, SrtpPolicy, SrtpSettings, UnprotectedParams, DEFAULT_SUITES,
};

/// Largest SDP body accepted, in bytes. A WebRTC offer with audio, two video sections, full
/// codec lists and a dozen candidates is about 12 KiB; twice that leaves room without letting
/// one message pin much memory.
pub const MAX_SDP_LEN: usize = 32 * 1024;

/// Most lines accepted in one SDP.
pub const MAX_LINES: usize = 512;

/// Most media sections (`m=` lines) accepted in one SDP.
pub const MAX_MEDIA_SECTIONS: usize = 32;

/// How a line ended in the input. New lines copy the ending of their neighbourhood, so an
/// LF-only SDP stays LF-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LineEnding {
    /// `\r\n`, as RFC 8866 §5 requires.
    CrLf,
    /// A bare `\n`, which RFC 8866 §5 asks parsers to accept.
    Lf,
    /// No ending: the last line of an input that stopped without one. Written back only when
    /// the line is still the last; elsewhere it is written as the SDP's usual ending.
    None,
}

impl LineEnding {
    /// The ending's bytes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CrLf => "\r\n",
            Self::Lf => "\n",
            Self::None => "",
        }
    }
}

/// One SDP line: its text without the ending (`a=rtcp-mux`) and the ending it had.
#[derive(Clone, PartialEq, Eq)]
pub struct Line<'a> {
    text: Cow<'a, str>,
    ending: LineEnding,
}

impl Line<'_> {
    /// A line made by a rewrite. `text` must be `<type>=<value>` without CR or LF.
    pub(crate) fn new(text: String, ending: LineEnding) -> Self {
        Self {
            text: Cow::Owned(text),
            ending,
        }
    }

    /// The whole line without its ending, such as `a=rtcp:53020`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// How the line ended.
    pub fn ending(&self) -> LineEnding {
        self.ending
    }

    /// The type letter (`v`, `o`, `c`, `m`, `a`, ...).
    pub fn kind(&self) -> u8 {
        self.text.as_bytes().first().copied().unwrap_or(0)
    }

    /// What follows `<type>=`.
    pub fn value(&self) -> &str {
        self.text.get(2..).unwrap_or_default()
    }

    /// The line as an attribute, if it is an `a=` line.
    pub fn attribute(&self) -> Option<Attribute<'_>> {
        (self.kind() == b'a').then(|| Attribute::parse(self.value()))
    }

    /// Whether the line is `a=<name>` or `a=<name>:...`.
    pub fn is_attribute(&self, name: &str) -> bool {
        self.attribute().is_some_and(|a| a.name == name)
    }

    fn into_owned(self) -> Line<'static> {
        Line {
            text: Cow::Owned(self.text.into_owned()),
            ending: self.ending,
        }
    }
}

/// The prefix of a line whose value is a secret and never reaches a `Debug` output.
fn secret_prefix(text: &str) -> Option<&'static str> {
    ["a=crypto:", "a=key-mgmt:", "a=ice-pwd:", "k="]
        .into_iter()
        .find(|prefix| text.starts_with(prefix))
}

impl fmt::Debug for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match secret_prefix(&self.text) {
            Some(prefix) => write!(f, "\"{prefix}<redacted>\""),
            None => fmt::Debug::fmt(&*self.text, f),
        }
    }
}

/// An attribute line's parts: `a=<name>` or `a=<name>:<value>` (RFC 8866 §5.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attribute<'l> {
    /// The attribute name, such as `rtcp-mux`.
    pub name: &'l str,
    /// The value after the first `:`, if any.
    pub value: Option<&'l str>,
}

impl<'l> Attribute<'l> {
    fn parse(text: &'l str) -> Self {
        match text.split_once(':') {
            Some((name, value)) => Self {
                name,
                value: Some(value),
            },
            None => Self {
                name: text,
                value: None,
            },
        }
    }
}

/// The address type of `o=` and `c=` lines (RFC 8866 §5.2, §5.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrType {
    /// `IP4`.
    Ip4,
    /// `IP6`.
    Ip6,
}

impl AddrType {
    /// `IP4` or `IP6`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ip4 => "IP4",
            Self::Ip6 => "IP6",
        }
    }

    /// The address type of an IP address.
    pub const fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::Ip4,
            IpAddr::V6(_) => Self::Ip6,
        }
    }

    fn parse(token: &str) -> Option<Self> {
        match token {
            "IP4" => Some(Self::Ip4),
            "IP6" => Some(Self::Ip6),
            _ => None,
        }
    }
}

/// The `o=` line (RFC 8866 §5.2):
/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    username: String,
    session_id: String,
    session_version: String,
    addr_type: AddrType,
    address: String,
}

impl Origin {
    /// The username (`-` when the originator has none).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The session id, a string of decimal digits.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The session version, a string of decimal digits (RFC 3264 §8: incremented on every
    /// change).
    pub fn session_version(&self) -> &str {
        &self.session_version
    }

    /// The session version as a number, if it fits 64 bits.
    pub fn session_version_u64(&self) -> Option<u64> {
        self.session_version.parse().ok()
    }

    /// The network type: always `IN`, the only one this parser accepts.
    pub fn net_type(&self) -> &'static str {
        "IN"
    }

    /// The address type.
    pub fn addr_type(&self) -> AddrType {
        self.addr_type
    }

    /// The unicast address (an IP literal or a host name).
    pub fn address(&self) -> &str {
        &self.address
    }

    fn parse(value: &str, line: usize) -> Result<Self, SdpError> {
        let invalid = |reason| SdpError::InvalidOrigin { line, reason };
        let mut fields = value.split(' ');
        let mut next = |what| fields.next().filter(|f| !f.is_empty()).ok_or(invalid(what));
        let username = next("missing username")?;
        let session_id = next("missing sess-id")?;
        let session_version = next("missing sess-version")?;
        let net_type = next("missing nettype")?;
        let addr_type = next("missing addrtype")?;
        let address = next("missing unicast-address")?;
        if fields.next().is_some() {
            return Err(invalid("more than six fields"));
        }
        if !is_visible(username) || !is_visible(address) {
            return Err(invalid("fields must be visible characters"));
        }
        // RFC 8866 §9: sess-id = 1*DIGIT, sess-version = 1*DIGIT.
        if !is_digits(session_id) || !is_digits(session_version) {
            return Err(invalid("sess-id and sess-version must be decimal digits"));
        }
        if net_type != "IN" {
            return Err(invalid("nettype must be IN"));
        }
        let addr_type = AddrType::parse(addr_type).ok_or(invalid("addrtype must be IP4 or IP6"))?;
        Ok(Self {
            username: username.to_owned(),
            session_id: session_id.to_owned(),
            session_version: session_version.to_owned(),
            addr_type,
            address: address.to_owned(),
        })
    }

    fn sdp_line(&self) -> String {
        format!(
            "o={} {} {} IN {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.addr_type.as_str(),
            self.address
        )
    }
}

/// A `c=` line (RFC 8866 §5.7): `c=IN <addrtype> <connection-address>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    addr_type: AddrType,
    address: String,
}

impl Connection {
    /// A connection line for an IP address.
    pub fn from_ip(addr: IpAddr) -> Self {
        Self {
            addr_type: AddrType::of(addr),
            address: addr.to_string(),
        }
    }

    /// The address type.
    pub fn addr_type(&self) -> AddrType {
        self.addr_type
    }

    /// The connection address as written, including any multicast `/ttl[/count]` suffix.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The address as an IP address, without a multicast suffix; `None` for a host name.
    pub fn ip(&self) -> Option<IpAddr> {
        let host = self.address.split('/').next().unwrap_or_default();
        host.parse().ok()
    }

    /// Whether the address is `0.0.0.0` or `::`: the RFC 2543 way of putting a stream on
    /// hold, still sent by some peers (RFC 3264 §8.4).
    pub fn is_unspecified(&self) -> bool {
        self.ip().is_some_and(|ip| ip.is_unspecified())
    }

    fn parse(value: &str, line: usize) -> Result<Self, SdpError> {
        let invalid = |reason| SdpError::InvalidConnection { line, reason };
        let mut fields = value.split(' ');
        let (Some(net_type), Some(addr_type), Some(address), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(invalid("expected IN <addrtype> <address>"));
        };
        if net_type != "IN" {
            return Err(invalid("nettype must be IN"));
        }
        let addr_type = AddrType::parse(addr_type).ok_or(invalid("addrtype must be IP4 or IP6"))?;
        if address.is_empty() || !is_visible(address) {
            return Err(invalid("missing or invalid address"));
        }
        let connection = Self {
            addr_type,
            address: address.to_owned(),
        };
        if connection
            .ip()
            .is_some_and(|ip| AddrType::of(ip) != addr_type)
        {
            return Err(invalid("address does not match addrtype"));
        }
        Ok(connection)
    }

    fn sdp_line(&self) -> String {
        format!("c=IN {} {}", self.addr_type.as_str(), self.address)
    }
}

/// An RTP profile a relay can convert between (RFC 3551, RFC 4585, RFC 3711, RFC 5124).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportProtocol {
    /// `RTP/AVP`.
    RtpAvp,
    /// `RTP/AVPF`.
    RtpAvpf,
    /// `RTP/SAVP`.
    RtpSavp,
    /// `RTP/SAVPF`.
    RtpSavpf,
}

impl TransportProtocol {
    /// The `m=` proto token.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RtpAvp => "RTP/AVP",
            Self::RtpAvpf => "RTP/AVPF",
            Self::RtpSavp => "RTP/SAVP",
            Self::RtpSavpf => "RTP/SAVPF",
        }
    }

    /// Parses one of the four tokens (ASCII case-insensitively, as some peers send
    /// `rtp/avp`).
    pub fn from_sdp(token: &str) -> Option<Self> {
        [Self::RtpAvp, Self::RtpAvpf, Self::RtpSavp, Self::RtpSavpf]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(token))
    }

    /// Whether this is a secure profile (`RTP/SAVP`, `RTP/SAVPF`).
    pub const fn is_secure(self) -> bool {
        matches!(self, Self::RtpSavp | Self::RtpSavpf)
    }

    /// Whether this is a feedback profile (`RTP/AVPF`, `RTP/SAVPF`).
    pub const fn has_feedback(self) -> bool {
        matches!(self, Self::RtpAvpf | Self::RtpSavpf)
    }

    /// The profile with the same feedback-ness and the given security.
    #[must_use]
    pub const fn with_security(self, secure: bool) -> Self {
        match (self.has_feedback(), secure) {
            (false, false) => Self::RtpAvp,
            (true, false) => Self::RtpAvpf,
            (false, true) => Self::RtpSavp,
            (true, true) => Self::RtpSavpf,
        }
    }
}

impl fmt::Display for TransportProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an `m=` proto token means to the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// RTP over UDP with one of the profiles the relay handles.
    Rtp(TransportProtocol),
    /// DTLS-SRTP (`UDP/TLS/RTP/SAVP[F]`, RFC 5764; `TCP/DTLS/RTP/SAVP[F]`, RFC 7850), which
    /// this relay does not key.
    DtlsSrtp,
    /// Anything else (`udptl` for T.38, `TCP/RTP/AVP`, `TCP/BFCP`, ...): relayed as is.
    Other,
}

impl Transport {
    /// Classifies a proto token.
    pub fn classify(proto: &str) -> Self {
        if let Some(profile) = TransportProtocol::from_sdp(proto) {
            return Self::Rtp(profile);
        }
        let upper = proto.to_ascii_uppercase();
        if [
            "UDP/TLS/RTP/",
            "TCP/TLS/RTP/",
            "TCP/DTLS/RTP/",
            "DCCP/TLS/RTP/",
        ]
        .iter()
        .any(|prefix| upper.starts_with(prefix))
        {
            Self::DtlsSrtp
        } else {
            Self::Other
        }
    }
}

/// The `m=` line (RFC 8866 §5.14):
/// `m=<media> <port>[/<number of ports>] <proto> <fmt> ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDescription {
    media: String,
    port: u16,
    port_count: Option<String>,
    proto: String,
    formats: String,
}

impl MediaDescription {
    /// The media type (`audio`, `video`, `image`, `application`, ...).
    pub fn media(&self) -> &str {
        &self.media
    }

    /// The transport port; 0 marks a disabled or rejected stream (RFC 3264 §5.1, §6).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The number of ports, if given (`49170/2`).
    pub fn port_count(&self) -> Option<u32> {
        self.port_count.as_deref().and_then(|c| c.parse().ok())
    }

    /// The transport protocol token as written.
    pub fn proto(&self) -> &str {
        &self.proto
    }

    /// The transport protocol, classified.
    pub fn transport(&self) -> Transport {
        Transport::classify(&self.proto)
    }

    /// The format list as written (`0 8 101`).
    pub fn formats(&self) -> &str {
        &self.formats
    }

    /// Whether the port is 0.
    pub fn is_disabled(&self) -> bool {
        self.port == 0
    }

    fn parse(value: &str, line: usize) -> Result<Self, SdpError> {
        let invalid = |reason| SdpError::InvalidMediaLine { line, reason };
        let (media, rest) = value.split_once(' ').ok_or(invalid("missing port"))?;
        let (port_field, rest) = rest.split_once(' ').ok_or(invalid("missing proto"))?;
        let (proto, formats) = rest.split_once(' ').ok_or(invalid("missing formats"))?;
        if media.is_empty() || !is_visible(media) {
            return Err(invalid("missing or invalid media type"));
        }
        if proto.is_empty() || !is_visible(proto) {
            return Err(invalid("missing or invalid proto"));
        }
        // RFC 8866 §9: media-field = ... proto 1*(SP fmt).
        if formats.split(' ').all(str::is_empty) || !is_text(formats) {
            return Err(invalid("missing or invalid formats"));
        }
        let (port, port_count) = match port_field.split_once('/') {
            Some((port, count)) => (port, Some(count)),
            None => (port_field, None),
        };
        let port = parse_port(port).ok_or(SdpError::InvalidPort { line })?;
        if let Some(count) = port_count {
            if !is_digits(count) || count.len() > 5 || count.bytes().all(|b| b == b'0') {
                return Err(SdpError::InvalidPort { line });
            }
        }
        Ok(Self {
            media: media.to_owned(),
            port,
            port_count: port_count.map(str::to_owned),
            proto: proto.to_owned(),
            formats: formats.to_owned(),
        })
    }

    fn sdp_line(&self) -> String {
        let mut line = format!("m={} {}", self.media, self.port);
        if let Some(count) = &self.port_count {
            line.push('/');
            line.push_str(count);
        }
        line.push(' ');
        line.push_str(&self.proto);
        line.push(' ');
        line.push_str(&self.formats);
        line
    }
}

/// A media direction attribute (RFC 8866 §6.7, RFC 3264 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    fn from_attribute(name: &str) -> Option<Self> {
        match name {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }
}

/// The `a=rtcp` attribute (RFC 3605 §2.1): `a=rtcp:<port> [IN <addrtype> <address>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rtcp {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address when it differs from the media's `c=`.
    pub connection: Option<Connection>,
}

impl Rtcp {
    fn parse(value: &str, media: usize) -> Result<Self, SdpError> {
        let invalid = |reason| SdpError::InvalidRtcp { media, reason };
        let (port, rest) = match value.split_once(' ') {
            Some((port, rest)) => (port, Some(rest)),
            None => (value, None),
        };
        let port = parse_port(port).ok_or(invalid("port is not 0 to 65535"))?;
        let connection = rest
            .map(|rest| Connection::parse(rest, 0))
            .transpose()
            .map_err(|_| invalid("address is not IN IP4/IP6 <address>"))?;
        Ok(Self { port, connection })
    }

    /// The attribute line, `a=rtcp:53021` or `a=rtcp:53021 IN IP4 192.0.2.1`.
    pub fn sdp_line(&self) -> String {
        match &self.connection {
            Some(c) => format!(
                "a=rtcp:{} IN {} {}",
                self.port,
                c.addr_type.as_str(),
                c.address
            ),
            None => format!("a=rtcp:{}", self.port),
        }
    }
}

/// ICE attributes of one section (RFC 8839 §5), borrowed from the lines.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IceAttributes<'l> {
    /// `a=ice-ufrag`.
    pub ufrag: Option<&'l str>,
    /// `a=ice-pwd` (a credential: redacted in `Debug`).
    pub pwd: Option<&'l str>,
    /// `a=ice-options`.
    pub options: Option<&'l str>,
    /// `a=ice-lite` (session level).
    pub lite: bool,
    /// `a=ice-mismatch`.
    pub mismatch: bool,
    /// Every `a=candidate` value in order.
    pub candidates: Vec<&'l str>,
    /// `a=remote-candidates`.
    pub remote_candidates: Option<&'l str>,
    /// `a=end-of-candidates` (RFC 8840).
    pub end_of_candidates: bool,
}

impl IceAttributes<'_> {
    /// Whether the section carries any ICE attribute.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Debug for IceAttributes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceAttributes")
            .field("ufrag", &self.ufrag)
            .field("pwd", &self.pwd.map(|_| "<redacted>"))
            .field("options", &self.options)
            .field("lite", &self.lite)
            .field("mismatch", &self.mismatch)
            .field("candidates", &self.candidates)
            .field("remote_candidates", &self.remote_candidates)
            .field("end_of_candidates", &self.end_of_candidates)
            .finish()
    }
}

/// Attribute names that belong to ICE (RFC 8839 §5, RFC 8840 §8.2): what "remove ICE"
/// removes.
pub const ICE_ATTRIBUTES: [&str; 9] = [
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
    "remote-candidates",
    "end-of-candidates",
];

/// DTLS attributes of one section (RFC 8122 §5, RFC 4145 §4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DtlsAttributes<'l> {
    /// Every `a=fingerprint` value.
    pub fingerprints: Vec<&'l str>,
    /// `a=setup` (`active`, `passive`, `actpass`, `holdconn`).
    pub setup: Option<&'l str>,
}

/// Accessors shared by the session section and media sections.
fn attributes<'l>(lines: &'l [Line<'_>]) -> impl Iterator<Item = Attribute<'l>> {
    lines.iter().filter_map(Line::attribute)
}

fn attribute_value<'l>(lines: &'l [Line<'_>], name: &str) -> Option<&'l str> {
    attributes(lines)
        .find(|a| a.name == name)
        .and_then(|a| a.value)
}

fn has_attribute(lines: &[Line<'_>], name: &str) -> bool {
    attributes(lines).any(|a| a.name == name)
}

fn direction_of(lines: &[Line<'_>]) -> Option<Direction> {
    attributes(lines).find_map(|a| {
        if a.value.is_none() {
            Direction::from_attribute(a.name)
        } else {
            None
        }
    })
}

fn ice_of<'l>(lines: &'l [Line<'_>]) -> IceAttributes<'l> {
    let mut ice = IceAttributes::default();
    for a in attributes(lines) {
        match a.name {
            "ice-ufrag" => ice.ufrag = a.value,
            "ice-pwd" => ice.pwd = a.value,
            "ice-options" => ice.options = a.value,
            "ice-lite" => ice.lite = true,
            "ice-mismatch" => ice.mismatch = true,
            "candidate" => ice.candidates.extend(a.value),
            "remote-candidates" => ice.remote_candidates = a.value,
            "end-of-candidates" => ice.end_of_candidates = true,
            _ => {}
        }
    }
    ice
}

fn dtls_of<'l>(lines: &'l [Line<'_>]) -> DtlsAttributes<'l> {
    let mut dtls = DtlsAttributes::default();
    for a in attributes(lines) {
        match a.name {
            "fingerprint" => dtls.fingerprints.extend(a.value),
            "setup" => dtls.setup = a.value,
            _ => {}
        }
    }
    dtls
}

/// One media section: the `m=` line and every line up to the next `m=` (RFC 8866 §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSection<'a> {
    /// The lines, `m=` first.
    lines: Vec<Line<'a>>,
    /// The parsed `m=` line, kept equal to `lines[0]`.
    description: MediaDescription,
    /// The parsed media-level `c=` line, if any.
    connection: Option<Connection>,
    /// This section's index in the SDP (for errors).
    index: usize,
}

impl<'a> MediaSection<'a> {
    /// The parsed `m=` line.
    pub fn description(&self) -> &MediaDescription {
        &self.description
    }

    /// The media-level `c=` line, if the section has one.
    pub fn connection(&self) -> Option<&Connection> {
        self.connection.as_ref()
    }

    /// The section's index in the SDP (0 for the first `m=`).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Every line, `m=` first, verbatim.
    pub fn lines(&self) -> &[Line<'a>] {
        &self.lines
    }

    /// Every attribute in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'_>> {
        attributes(&self.lines)
    }

    /// The value of the first attribute called `name` (`None` if absent or valueless).
    pub fn attribute_value(&self, name: &str) -> Option<&str> {
        attribute_value(&self.lines, name)
    }

    /// Whether an attribute called `name` is present.
    pub fn has_attribute(&self, name: &str) -> bool {
        has_attribute(&self.lines, name)
    }

    /// Every `a=crypto` line, parsed, in offer order. A line that does not parse is an `Err`
    /// (RFC 4568 §7.1.1: the answerer skips it and considers the next).
    pub fn crypto(&self) -> impl Iterator<Item = Result<CryptoAttribute, SdesError>> + '_ {
        self.attributes()
            .filter(|a| a.name == "crypto")
            .map(|a| CryptoAttribute::parse(a.value.unwrap_or_default()))
    }

    /// Whether the section has any `a=crypto` line.
    pub fn has_crypto(&self) -> bool {
        self.has_attribute("crypto")
    }

    /// The `a=rtcp` attribute (RFC 3605), if present.
    pub fn rtcp(&self) -> Result<Option<Rtcp>, SdpError> {
        self.attributes()
            .find(|a| a.name == "rtcp")
            .map(|a| Rtcp::parse(a.value.unwrap_or_default(), self.index))
            .transpose()
    }

    /// Whether `a=rtcp-mux` (RFC 5761 §5.1.1) is present.
    pub fn rtcp_mux(&self) -> bool {
        self.has_attribute("rtcp-mux")
    }

    /// The media-level direction attribute, if any (see [`Sdp::direction`] for the
    /// effective one).
    pub fn direction(&self) -> Option<Direction> {
        direction_of(&self.lines)
    }

    /// The media-level ICE attributes.
    pub fn ice(&self) -> IceAttributes<'_> {
        ice_of(&self.lines)
    }

    /// The media-level DTLS attributes.
    pub fn dtls(&self) -> DtlsAttributes<'_> {
        dtls_of(&self.lines)
    }

    fn into_owned(self) -> MediaSection<'static> {
        MediaSection {
            lines: self.lines.into_iter().map(Line::into_owned).collect(),
            description: self.description,
            connection: self.connection,
            index: self.index,
        }
    }
}

/// A parsed SDP whose lines are kept verbatim: serialising it without changes gives back the
/// input byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sdp<'a> {
    /// Session-level lines, `v=0` first.
    session: Vec<Line<'a>>,
    /// The parsed `o=` line, kept equal to its line.
    origin: Origin,
    /// The parsed session-level `c=` line, if any.
    connection: Option<Connection>,
    /// The media sections in order.
    media: Vec<MediaSection<'a>>,
}

impl<'a> Sdp<'a> {
    /// Parses an SDP body (RFC 8866 §5, §9).
    pub fn parse(input: &'a [u8]) -> Result<Self, SdpError> {
        if input.len() > MAX_SDP_LEN {
            return Err(SdpError::TooLarge {
                len: input.len(),
                max: MAX_SDP_LEN,
            });
        }
        let text = std::str::from_utf8(input).map_err(|e| SdpError::NotUtf8 {
            offset: e.valid_up_to(),
        })?;
        Self::parse_str(text)
    }

    /// Parses an SDP body that is already text.
    pub fn parse_str(input: &'a str) -> Result<Self, SdpError> {
        if input.len() > MAX_SDP_LEN {
            return Err(SdpError::TooLarge {
                len: input.len(),
                max: MAX_SDP_LEN,
            });
        }
        let mut session: Vec<Line<'a>> = Vec::new();
        let mut origin = None;
        let mut connection = None;
        let mut media: Vec<MediaSection<'a>> = Vec::new();

        for (index, (text, ending)) in split_lines(input).enumerate() {
            let number = index + 1;
            if number > MAX_LINES {
                return Err(SdpError::TooManyLines { max: MAX_LINES });
            }
            // RFC 8866 §5.1: the first line is v=0; anything else is not SDP.
            if number == 1 && text != "v=0" {
                return Err(SdpError::MissingVersion);
            }
            let kind = check_line(text, number)?;
            let line = Line {
                text: Cow::Borrowed(text),
                ending,
            };
            if number == 1 {
                session.push(line);
                continue;
            }
            match (kind, media.last_mut()) {
                (b'v', _) => {
                    return Err(SdpError::UnexpectedLine {
                        line: number,
                        kind: 'v',
                    })
                }
                (b'm', _) => {
                    if media.len() == MAX_MEDIA_SECTIONS {
                        return Err(SdpError::TooManyMediaSections {
                            max: MAX_MEDIA_SECTIONS,
                        });
                    }
                    media.push(MediaSection {
                        description: MediaDescription::parse(line.value(), number)?,
                        lines: vec![line],
                        connection: None,
                        index: media.len(),
                    });
                }
                (b'o', None) if origin.is_none() => {
                    origin = Some(Origin::parse(line.value(), number)?);
                    session.push(line);
                }
                (b'o', _) => {
                    return Err(SdpError::UnexpectedLine {
                        line: number,
                        kind: 'o',
                    })
                }
                (b'c', None) => {
                    if connection.is_some() {
                        return Err(SdpError::UnexpectedLine {
                            line: number,
                            kind: 'c',
                        });
                    }
                    connection = Some(Connection::parse(line.value(), number)?);
                    session.push(line);
                }
                (b'c', Some(section)) => {
                    if section.connection.is_some() {
                        return Err(SdpError::UnexpectedLine {
                            line: number,
                            kind: 'c',
                        });
                    }
                    section.connection = Some(Connection::parse(line.value(), number)?);
                    section.lines.push(line);
                }
                (_, None) => session.push(line),
                (_, Some(section)) => section.lines.push(line),
            }
        }
        if session.is_empty() {
            return Err(SdpError::MissingVersion);
        }
        let origin = origin.ok_or(SdpError::MissingOrigin)?;
        check_connection_coverage(connection.as_ref(), &media)?;
        Ok(Self {
            session,
            origin,
            connection,
            media,
        })
    }

    /// The `o=` line.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The session-level `c=` line, if any.
    pub fn connection(&self) -> Option<&Connection> {
        self.connection.as_ref()
    }

    /// The session-level lines, `v=0` first, verbatim.
    pub fn session_lines(&self) -> &[Line<'a>] {
        &self.session
    }

    /// Every session-level attribute in order.
    pub fn session_attributes(&self) -> impl Iterator<Item = Attribute<'_>> {
        attributes(&self.session)
    }

    /// The value of the first session-level attribute called `name`.
    pub fn session_attribute_value(&self, name: &str) -> Option<&str> {
        attribute_value(&self.session, name)
    }

    /// Whether a session-level attribute called `name` is present.
    pub fn has_session_attribute(&self, name: &str) -> bool {
        has_attribute(&self.session, name)
    }

    /// The session-level direction attribute, if any.
    pub fn session_direction(&self) -> Option<Direction> {
        direction_of(&self.session)
    }

    /// The session-level ICE attributes (`ice-lite`, and `ice-ufrag`/`ice-pwd` when shared).
    pub fn session_ice(&self) -> IceAttributes<'_> {
        ice_of(&self.session)
    }

    /// The session-level DTLS attributes.
    pub fn session_dtls(&self) -> DtlsAttributes<'_> {
        dtls_of(&self.session)
    }

    /// The media sections.
    pub fn media(&self) -> &[MediaSection<'a>] {
        &self.media
    }

    /// The effective direction of media section `index` (RFC 8866 §6.7: media level, else
    /// session level, else `sendrecv`); `None` if there is no such section.
    pub fn direction(&self, index: usize) -> Option<Direction> {
        let section = self.media.get(index)?;
        Some(
            section
                .direction()
                .or_else(|| self.session_direction())
                .unwrap_or(Direction::SendRecv),
        )
    }

    /// The connection that applies to media section `index`: its own `c=`, else the
    /// session's.
    pub fn media_connection(&self, index: usize) -> Option<&Connection> {
        let section = self.media.get(index)?;
        section.connection.as_ref().or(self.connection.as_ref())
    }

    /// Every line of the SDP in order.
    pub fn lines(&self) -> impl Iterator<Item = &Line<'a>> {
        self.session
            .iter()
            .chain(self.media.iter().flat_map(|m| m.lines.iter()))
    }

    /// Writes the SDP. Lines keep their own endings; a line without one that is no longer
    /// last gets the ending of the `v=` line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let usual = self.usual_ending();
        let total = self.lines().count();
        for (i, line) in self.lines().enumerate() {
            out.extend_from_slice(line.text.as_bytes());
            let ending = match line.ending {
                LineEnding::None if i + 1 < total => usual,
                ending => ending,
            };
            out.extend_from_slice(ending.as_str().as_bytes());
        }
    }

    /// The SDP as bytes (see [`Self::encode`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lines().map(|l| l.text.len() + 2).sum());
        self.encode(&mut out);
        out
    }

    /// A copy that owns its lines, to keep beyond the input buffer.
    pub fn into_owned(self) -> Sdp<'static> {
        Sdp {
            session: self.session.into_iter().map(Line::into_owned).collect(),
            origin: self.origin,
            connection: self.connection,
            media: self
                .media
                .into_iter()
                .map(MediaSection::into_owned)
                .collect(),
        }
    }

    /// The ending new lines and ending-less inner lines get: the `v=` line's, CRLF if it has
    /// none.
    fn usual_ending(&self) -> LineEnding {
        match self.session.first().map(Line::ending) {
            Some(LineEnding::Lf) => LineEnding::Lf,
            _ => LineEnding::CrLf,
        }
    }
}

/// RFC 8866 §5.7: every active media section needs a `c=` of its own or the session's.
fn check_connection_coverage(
    session: Option<&Connection>,
    media: &[MediaSection<'_>],
) -> Result<(), SdpError> {
    if session.is_some() {
        return Ok(());
    }
    match media
        .iter()
        .find(|m| m.connection.is_none() && !m.description.is_disabled())
    {
        Some(section) => Err(SdpError::MissingConnection {
            media: section.index,
        }),
        None => Ok(()),
    }
}

/// Splits the input into (text, ending) pairs. A final line without an ending is kept with
/// [`LineEnding::None`]; the empty remainder after a final newline is not a line.
fn split_lines(input: &str) -> impl Iterator<Item = (&str, LineEnding)> {
    let mut rest = input;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, ending) = match rest.find('\n') {
            Some(end) => {
                let (line, tail) = rest.split_at(end);
                rest = tail.get(1..).unwrap_or_default();
                match line.strip_suffix('\r') {
                    Some(line) => (line, LineEnding::CrLf),
                    None => (line, LineEnding::Lf),
                }
            }
            None => (std::mem::take(&mut rest), LineEnding::None),
        };
        Some((line, ending))
    })
}

/// RFC 8866 §5: `<type>=<value>`, a known type letter, no NUL and no CR in the text.
/// Returns the type letter.
fn check_line(text: &str, line: usize) -> Result<u8, SdpError> {
    let bytes = text.as_bytes();
    let (Some(&kind), Some(b'=')) = (bytes.first(), bytes.get(1)) else {
        return Err(SdpError::InvalidLine {
            line,
            reason: if text.is_empty() {
                "empty line"
            } else {
                "not <type>=<value>"
            },
        });
    };
    if bytes.iter().any(|&b| b == 0 || b == b'\r') {
        return Err(SdpError::InvalidLine {
            line,
            reason: "contains a NUL or a bare CR",
        });
    }
    // RFC 8866 §5 (and RFC 4566's k=, which RFC 8866 keeps for compatibility).
    if !b"voseiupcbtrzkam".contains(&kind) {
        return Err(SdpError::UnknownLineType {
            line,
            kind: char::from(kind),
        });
    }
    Ok(kind)
}

/// Whether `s` is 1 or more visible ASCII characters (no spaces).
fn is_visible(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether `s` has no control characters (space and tab allowed).
fn is_text(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || !b.is_ascii_control())
}

/// Whether `s` is 1 or more ASCII digits.
fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A decimal port, 0 to 65535, at most 5 digits.
fn parse_port(s: &str) -> Option<u16> {
    if !is_digits(s) || s.len() > 5 {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use srtp::Suite;

    use super::*;

    /// baresip over TLS offering SDES-SRTP with two suites and rtcp-mux.
    pub const BARESIP_SRTP: &str = "v=0\r\n\
o=- 1916440744 3217383367 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 10316 RTP/SAVP 96 0 8 101\r\n\
b=AS:64\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
a=label:1\r\n\
a=rtcp-mux\r\n\
a=ssrc:1873393283 cname:e1a0a8a9-57b2-4d0c-a4e4-6c0c4e6f6a52\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:u2Yx6ouT9Ikn7BAjqr6IyYKOPZk4o1PW5fDUu9zD\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:RfQpSxhZkU7RpoR8hTW1i6kSOdLUuWHPaKPWCmVl\r\n\
a=ptime:20\r\n";

    /// Asterisk-style plain offer with a=rtcp and a telephone-event.
    pub const ASTERISK_PLAIN: &str = "v=0\r\n\
o=- 1681921427 1681921427 IN IP4 203.0.113.5\r\n\
s=Asterisk\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 14068 RTP/AVP 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=rtcp:14069\r\n\
a=ptime:20\r\n\
a=maxptime:150\r\n\
a=sendrecv\r\n";

    /// A WebRTC-ish offer: ICE candidates, DTLS fingerprint, BUNDLE, SAVPF.
    pub const WEBRTC_DTLS: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=msid-semantic: WMS\r\n\
a=ice-lite\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:842163049 1 udp 1677729535 198.51.100.7 40418 typ srflx raddr 0.0.0.0 rport 0 generation 0\r\n\
a=candidate:3885250869 1 udp 2122260223 10.0.0.2 40418 typ host generation 0\r\n\
a=end-of-candidates\r\n\
a=ice-ufrag:4ZcD\r\n\
a=ice-pwd:2/1muCWoOi3uLifh0NuRHlmI\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-mux\r\n";

    /// IPv6, `FreeSWITCH` style, with SDES on a best-effort RTP/AVP line (RFC 8643).
    pub const IPV6_BEST_EFFORT: &str = "v=0\r\n\
o=FreeSWITCH 1700000000 1700000001 IN IP6 2001:db8::5\r\n\
s=FreeSWITCH\r\n\
c=IN IP6 2001:db8::5\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=crypto:1 AEAD_AES_128_GCM inline:ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+fw==\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n\
a=ptime:20\r\n";

    /// A held stream (old-style c=0.0.0.0 plus sendonly) and a rejected video stream.
    pub const HELD_AND_REJECTED: &str = "v=0\n\
o=alice 2890844526 2890844527 IN IP4 198.51.100.1\n\
s=-\n\
c=IN IP4 0.0.0.0\n\
t=0 0\n\
m=audio 49170 RTP/AVP 0\n\
a=sendonly\n\
m=video 0 RTP/AVP 31\n\
a=rtpmap:31 H261/90000\n";

    fn parse(input: &str) -> Sdp<'_> {
        match Sdp::parse(input.as_bytes()) {
            Ok(sdp) => sdp,
            Err(e) => panic!("{e}: {input}"),
        }
    }

    fn refuse(input: &[u8]) -> SdpError {
        match Sdp::parse(input) {
            Ok(sdp) => panic!("accepted {sdp:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_fixture_round_trips_byte_for_byte() {
        for input in [
            BARESIP_SRTP,
            ASTERISK_PLAIN,
            WEBRTC_DTLS,
            IPV6_BEST_EFFORT,
            HELD_AND_REJECTED,
        ] {
            let sdp = parse(input);
            assert_eq!(String::from_utf8(sdp.to_bytes()).as_deref(), Ok(input));
            assert_eq!(sdp.clone().into_owned().to_bytes(), input.as_bytes());
        }
    }

    #[test]
    fn mixed_and_missing_final_endings_round_trip() {
        let mixed = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\ns=-\r\nc=IN IP4 192.0.2.1\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 0\na=sendrecv";
        let sdp = parse(mixed);
        assert_eq!(sdp.to_bytes(), mixed.as_bytes());
        let endings: Vec<_> = sdp.lines().map(Line::ending).collect();
        assert_eq!(endings[0], LineEnding::CrLf);
        assert_eq!(endings[1], LineEnding::Lf);
        assert_eq!(endings.last(), Some(&LineEnding::None));
    }

    #[test]
    fn origin_and_connection_fields_are_parsed() {
        let sdp = parse(BARESIP_SRTP);
        let o = sdp.origin();
        assert_eq!(
            (
                o.username(),
                o.session_id(),
                o.session_version(),
                o.net_type()
            ),
            ("-", "1916440744", "3217383367", "IN")
        );
        assert_eq!((o.addr_type(), o.address()), (AddrType::Ip4, "192.0.2.10"));
        assert_eq!(o.session_version_u64(), Some(3_217_383_367));
        let c = sdp.connection().expect("session c=");
        assert_eq!(c.ip(), Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))));
        assert_eq!(sdp.media_connection(0), Some(c));

        let v6 = parse(IPV6_BEST_EFFORT);
        assert_eq!(v6.origin().addr_type(), AddrType::Ip6);
        let c = v6.connection().expect("session c=");
        assert_eq!(c.addr_type(), AddrType::Ip6);
        assert_eq!(
            c.ip(),
            Some(IpAddr::V6("2001:db8::5".parse::<Ipv6Addr>().expect("v6")))
        );
    }

    #[test]
    fn media_lines_and_attributes_are_parsed() {
        let sdp = parse(BARESIP_SRTP);
        let audio = &sdp.media()[0];
        let m = audio.description();
        assert_eq!(
            (m.media(), m.port(), m.port_count(), m.proto(), m.formats()),
            ("audio", 10316, None, "RTP/SAVP", "96 0 8 101")
        );
        assert_eq!(m.transport(), Transport::Rtp(TransportProtocol::RtpSavp));
        assert!(audio.rtcp_mux());
        assert_eq!(audio.rtcp().expect("valid"), None);
        assert_eq!(audio.direction(), Some(Direction::SendRecv));
        let crypto: Vec<_> = audio.crypto().map(|c| c.expect("valid crypto")).collect();
        assert_eq!(
            crypto.iter().map(|c| (c.tag, c.suite)).collect::<Vec<_>>(),
            [
                (1, Suite::AesCm128HmacSha1_32),
                (2, Suite::AesCm128HmacSha1_80)
            ]
        );
        assert_eq!(audio.attribute_value("ptime"), Some("20"));
        assert!(audio.ice().is_empty());

        let plain = parse(ASTERISK_PLAIN);
        let rtcp = plain.media()[0].rtcp().expect("valid").expect("present");
        assert_eq!(
            rtcp,
            Rtcp {
                port: 14069,
                connection: None
            }
        );
        assert!(!plain.media()[0].rtcp_mux());
        assert!(!plain.media()[0].has_crypto());
    }

    #[test]
    fn ice_and_dtls_attributes_are_parsed() {
        let sdp = parse(WEBRTC_DTLS);
        assert!(sdp.session_ice().lite);
        let audio = &sdp.media()[0];
        assert_eq!(audio.description().transport(), Transport::DtlsSrtp);
        let ice = audio.ice();
        assert_eq!(ice.ufrag, Some("4ZcD"));
        assert_eq!(ice.pwd, Some("2/1muCWoOi3uLifh0NuRHlmI"));
        assert_eq!(ice.options, Some("trickle"));
        assert_eq!(ice.candidates.len(), 2);
        assert!(ice.candidates[1].ends_with("typ host generation 0"));
        assert!(ice.end_of_candidates);
        let dtls = audio.dtls();
        assert_eq!(dtls.setup, Some("actpass"));
        assert!(dtls.fingerprints[0].starts_with("sha-256 7B:8B"));
        let rtcp = audio.rtcp().expect("valid").expect("present");
        assert_eq!(rtcp.port, 9);
        assert_eq!(
            rtcp.connection.map(|c| c.address().to_owned()).as_deref(),
            Some("0.0.0.0")
        );
        assert_eq!(
            sdp.media_connection(0).map(Connection::is_unspecified),
            Some(true)
        );
    }

    #[test]
    fn held_and_rejected_streams_are_recognised() {
        let sdp = parse(HELD_AND_REJECTED);
        assert_eq!(sdp.connection().map(Connection::is_unspecified), Some(true));
        assert_eq!(sdp.direction(0), Some(Direction::SendOnly));
        assert_eq!(sdp.direction(1), Some(Direction::SendRecv));
        assert_eq!(sdp.direction(2), None);
        assert!(sdp.media()[1].description().is_disabled());
        assert!(sdp.lines().all(|l| l.ending() == LineEnding::Lf));
    }

    #[test]
    fn port_counts_and_non_rtp_transports_are_kept() {
        let input = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                     m=video 49170/2 RTP/AVP 31\r\nm=image 5004 udptl t38\r\n";
        let sdp = parse(input);
        assert_eq!(sdp.media()[0].description().port_count(), Some(2));
        assert_eq!(sdp.media()[1].description().transport(), Transport::Other);
        assert_eq!(sdp.to_bytes(), input.as_bytes());
    }

    #[test]
    fn debug_output_redacts_keys_and_ice_passwords() {
        let printed = format!("{:?}", parse(BARESIP_SRTP));
        assert!(!printed.contains("u2Yx6ouT9"), "{printed}");
        assert!(printed.contains("a=crypto:<redacted>"), "{printed}");
        let webrtc = parse(WEBRTC_DTLS);
        let printed = format!("{webrtc:?} {:?}", webrtc.media()[0].ice());
        assert!(!printed.contains("2/1muCWoOi3u"), "{printed}");
    }

    const HEAD: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n";

    fn with_head(tail: &str) -> Vec<u8> {
        format!("{HEAD}{tail}").into_bytes()
    }

    #[test]
    fn what_is_not_sdp_is_refused() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "MissingVersion"),
            (b"v=1\r\n".to_vec(), "MissingVersion"),
            (b"INVITE sip:a@b SIP/2.0\r\n".to_vec(), "MissingVersion"),
            (with_head("\r\n"), "InvalidLine"),
            (
                with_head("m=audio 4000 RTP/AVP 0\r\nhello\r\n"),
                "InvalidLine",
            ),
            (with_head("a=x\0y\r\n"), "InvalidLine"),
            (with_head("a=x\ry\r\n"), "InvalidLine"),
            (with_head("x=1\r\n"), "UnknownLineType"),
            (with_head("v=0\r\n"), "UnexpectedLine"),
            (with_head("o=- 1 1 IN IP4 192.0.2.1\r\n"), "UnexpectedLine"),
            (with_head("c=IN IP4 192.0.2.2\r\n"), "UnexpectedLine"),
            (
                with_head("m=audio 1 RTP/AVP 0\r\nc=IN IP4 192.0.2.2\r\nc=IN IP4 192.0.2.3\r\n"),
                "UnexpectedLine",
            ),
            (b"v=0\r\ns=-\r\n".to_vec(), "MissingOrigin"),
            (b"v=0\r\no=- 1 x IN IP4 a\r\n".to_vec(), "InvalidOrigin"),
            (b"v=0\r\no=- 1 1 IN IP4\r\n".to_vec(), "InvalidOrigin"),
            (b"v=0\r\no=- 1 1 ATM NSAP a\r\n".to_vec(), "InvalidOrigin"),
            (b"v=0\r\no=- 1 1 IN IP4 a b\r\n".to_vec(), "InvalidOrigin"),
            (
                b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 ::1\r\n".to_vec(),
                "InvalidConnection",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP5 a\r\n".to_vec(),
                "InvalidConnection",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 4000 RTP/AVP 0\r\n".to_vec(),
                "MissingConnection",
            ),
            (with_head("m=audio 4000 RTP/AVP\r\n"), "InvalidMediaLine"),
            (with_head("m=audio 4000 RTP/AVP \r\n"), "InvalidMediaLine"),
            (with_head("m=audio  4000 RTP/AVP 0\r\n"), "InvalidPort"),
            (with_head("m=audio 65536 RTP/AVP 0\r\n"), "InvalidPort"),
            (with_head("m=audio -1 RTP/AVP 0\r\n"), "InvalidPort"),
            (with_head("m=audio 4000/0 RTP/AVP 0\r\n"), "InvalidPort"),
            (with_head("m=audio 04000x RTP/AVP 0\r\n"), "InvalidPort"),
        ];
        for (input, expected) in cases {
            let error = refuse(&input);
            let name = format!("{error:?}");
            assert!(
                name.starts_with(expected),
                "{:?}: expected {expected}, got {name}",
                String::from_utf8_lossy(&input)
            );
            assert_eq!(error.sip_status(), 400, "{error}");
        }
        assert!(matches!(
            refuse(b"v=0\r\n\xff\r\n"),
            SdpError::NotUtf8 { offset: 5 }
        ));
    }

    #[test]
    fn limits_are_enforced() {
        let big = with_head(&format!("a=x:{}\r\n", "y".repeat(MAX_SDP_LEN)));
        assert!(matches!(refuse(&big), SdpError::TooLarge { .. }));
        let many_lines = with_head(&"a=x\r\n".repeat(MAX_LINES));
        assert!(matches!(
            refuse(&many_lines),
            SdpError::TooManyLines { max: MAX_LINES }
        ));
        let at_limit = with_head(&"a=x\r\n".repeat(MAX_LINES - 5));
        assert!(Sdp::parse(&at_limit).is_ok());
        let many_media = with_head(&"m=audio 4000 RTP/AVP 0\r\n".repeat(MAX_MEDIA_SECTIONS + 1));
        assert!(matches!(
            refuse(&many_media),
            SdpError::TooManyMediaSections {
                max: MAX_MEDIA_SECTIONS
            }
        ));
        let max_media = with_head(&"m=audio 4000 RTP/AVP 0\r\n".repeat(MAX_MEDIA_SECTIONS));
        assert_eq!(parse_bytes(&max_media).media().len(), MAX_MEDIA_SECTIONS);
    }

    fn parse_bytes(input: &[u8]) -> Sdp<'_> {
        match Sdp::parse(input) {
            Ok(sdp) => sdp,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn malformed_rtcp_attribute_is_a_typed_error() {
        let input = with_head("m=audio 4000 RTP/AVP 0\r\na=rtcp:70000\r\n");
        let sdp = parse_bytes(&input);
        assert!(matches!(
            sdp.media()[0].rtcp(),
            Err(SdpError::InvalidRtcp { media: 0, .. })
        ));
        let input = with_head("m=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP4\r\n");
        assert!(parse_bytes(&input).media()[0].rtcp().is_err());
    }

    #[test]
    fn transport_protocols_convert() {
        use TransportProtocol::{RtpAvp, RtpAvpf, RtpSavp, RtpSavpf};
        assert_eq!(RtpAvp.with_security(true), RtpSavp);
        assert_eq!(RtpAvpf.with_security(true), RtpSavpf);
        assert_eq!(RtpSavpf.with_security(false), RtpAvpf);
        assert_eq!(RtpSavp.with_security(false), RtpAvp);
        assert_eq!(TransportProtocol::from_sdp("rtp/savp"), Some(RtpSavp));
        assert_eq!(Transport::classify("UDP/TLS/RTP/SAVP"), Transport::DtlsSrtp);
        assert_eq!(
            Transport::classify("TCP/DTLS/RTP/SAVPF"),
            Transport::DtlsSrtp
        );
        assert_eq!(Transport::classify("udptl"), Transport::Other);
    }
}
