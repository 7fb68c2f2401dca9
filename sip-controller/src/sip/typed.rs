//! Typed views of header field values, parsed on demand from the stored text: Via, `CSeq`,
//! name-addr (From, To, Contact, Route, Record-Route), Contact `*`, Call-ID, Max-Forwards,
//! Content-Type, Content-Length and Expires (RFC 3261 §20, grammar §25.1).
//!
//! Each view parses one comma-separated element (see [`Headers::values`](super::Headers::values))
//! and formats back to text with `Display`; parsing that text again gives an equal value.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use super::{
    error::HeaderError,
    grammar::{
        find_param, is_token, is_token_char, is_ws, parse_params, remove_param, scan_quoted,
        scan_token, set_param, skip_ws, unquote, write_params, Param,
    },
    message::Method,
    uri::{parse_port, Host, Transport, Uri},
};

/// Parses a run of decimal digits (leading zeros allowed, as RFC 4475 §3.1.1.1 exercises) into
/// a number no larger than `max`.
pub(crate) fn parse_decimal(s: &str, max: u64) -> Result<u64, HeaderError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::InvalidNumber);
    }
    let significant = s.trim_start_matches('0');
    if significant.len() > 19 {
        return Err(HeaderError::InvalidNumber);
    }
    let n = if significant.is_empty() {
        0
    } else {
        significant
            .parse::<u64>()
            .map_err(|_| HeaderError::InvalidNumber)?
    };
    if n > max {
        return Err(HeaderError::InvalidNumber);
    }
    Ok(n)
}

/// `Max-Forwards: 1*DIGIT`, 0..=255 (RFC 3261 §20.22, RFC 4475 §3.1.2.4).
pub fn parse_max_forwards(value: &str) -> Result<u8, HeaderError> {
    parse_decimal(value.trim(), 255)
        .and_then(|n| u8::try_from(n).map_err(|_| HeaderError::InvalidNumber))
}

/// `Content-Length: 1*DIGIT` (RFC 3261 §20.14); a negative value (RFC 4475 §3.1.2.3) fails.
pub fn parse_content_length(value: &str) -> Result<usize, HeaderError> {
    parse_decimal(value.trim(), u64::from(u32::MAX))
        .and_then(|n| usize::try_from(n).map_err(|_| HeaderError::InvalidNumber))
}

/// `Expires: delta-seconds`, at most 2^32-1 (RFC 3261 §20.19, §25.1 `delta-seconds`).
pub fn parse_expires(value: &str) -> Result<u32, HeaderError> {
    parse_decimal(value.trim(), u64::from(u32::MAX))
        .and_then(|n| u32::try_from(n).map_err(|_| HeaderError::InvalidNumber))
}

/// Validates `Call-ID: word ["@" word]` (RFC 3261 §20.8, §25.1 `callid`).
pub fn validate_call_id(value: &str) -> Result<&str, HeaderError> {
    let is_word_char = |c: u8| {
        is_token_char(c)
            || matches!(
                c,
                b'(' | b')'
                    | b'<'
                    | b'>'
                    | b':'
                    | b'\\'
                    | b'"'
                    | b'/'
                    | b'['
                    | b']'
                    | b'?'
                    | b'{'
                    | b'}'
            )
    };
    let value = value.trim();
    let mut parts = value.split('@');
    let valid_word =
        |w: Option<&str>| w.is_some_and(|w| !w.is_empty() && w.bytes().all(is_word_char));
    let first = parts.next();
    let second = parts.next();
    if !valid_word(first) || (second.is_some() && !valid_word(second)) || parts.next().is_some() {
        return Err(HeaderError::InvalidCallId);
    }
    Ok(value)
}

/// The `rport` parameter of a Via (RFC 3581).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rport {
    /// `;rport` without a value: the client asks for symmetric response routing.
    Requested,
    /// `;rport=N`, filled in by the server with the request's source port.
    Port(u16),
}

/// One Via value: `sent-protocol LWS sent-by *( SEMI via-params )` (RFC 3261 §20.42).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    protocol_name: String,
    protocol_version: String,
    transport: Transport,
    host: Host,
    port: Option<u16>,
    params: Vec<Param>,
}

impl Via {
    /// `SIP/2.0/<transport> host[:port];branch=<branch>`. The branch should start with the
    /// RFC 3261 magic cookie `z9hG4bK` (§8.1.1.7).
    pub fn new(transport: Transport, host: Host, port: Option<u16>, branch: &str) -> Self {
        Self {
            protocol_name: "SIP".into(),
            protocol_version: "2.0".into(),
            transport,
            host,
            port,
            params: vec![Param::new("branch", Some(branch.to_owned()))],
        }
    }

    /// Parses one Via value.
    pub fn parse(s: &str) -> Result<Self, HeaderError> {
        let b = s.as_bytes();
        let mut i = skip_ws(b, 0);
        if i == b.len() {
            return Err(HeaderError::Empty);
        }
        let mut parts = [""; 3];
        for (n, part) in parts.iter_mut().enumerate() {
            if n > 0 {
                i = skip_ws(b, i);
                if b.get(i) != Some(&b'/') {
                    return Err(HeaderError::InvalidSentProtocol);
                }
                i = skip_ws(b, i + 1);
            }
            let end = scan_token(b, i);
            if end == i {
                return Err(HeaderError::InvalidSentProtocol);
            }
            *part = &s[i..end];
            i = end;
        }
        let after_protocol = skip_ws(b, i);
        if after_protocol == i {
            return Err(HeaderError::InvalidSentProtocol);
        }
        i = after_protocol;
        let host_start = i;
        if b.get(i) == Some(&b'[') {
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
            i += 1;
        } else {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'.' | b'-' | b'_'))
            {
                i += 1;
            }
        }
        let host = s
            .get(host_start..i)
            .and_then(Host::parse)
            .ok_or(HeaderError::InvalidHost)?;
        let mut port = None;
        let j = skip_ws(b, i);
        if b.get(j) == Some(&b':') {
            let start = skip_ws(b, j + 1);
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            port = Some(parse_port(&s[start..end]).map_err(|_| HeaderError::InvalidPort)?);
            i = end;
        }
        let params = parse_params(s, i)?;
        for p in &params {
            validate_via_param(p)?;
        }
        Ok(Self {
            protocol_name: parts[0].to_owned(),
            protocol_version: parts[1].to_owned(),
            transport: Transport::from_token(parts[2]),
            host,
            port,
            params,
        })
    }

    /// The protocol name and version, `SIP` and `2.0`.
    pub fn protocol(&self) -> (&str, &str) {
        (&self.protocol_name, &self.protocol_version)
    }

    /// The transport of the sent-protocol.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The sent-by host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The sent-by port.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// All parameters in order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// A parameter by name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// Sets or appends a parameter.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        set_param(&mut self.params, name, value.map(str::to_owned));
    }

    /// Removes a parameter; returns whether it was present.
    pub fn remove_param(&mut self, name: &str) -> bool {
        remove_param(&mut self.params, name)
    }

    /// The `branch` parameter (RFC 3261 §8.1.1.7, §17.2.3 transaction matching).
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").and_then(Param::value)
    }

    /// The `received` parameter, as written.
    pub fn received(&self) -> Option<&str> {
        self.param("received").and_then(Param::value)
    }

    /// The `received` parameter as an address (validated when parsed).
    pub fn received_ip(&self) -> Option<IpAddr> {
        self.received()
            .and_then(|r| Host::parse_with(r, true))
            .and_then(|h| h.ip())
    }

    /// The `rport` parameter (RFC 3581).
    pub fn rport(&self) -> Option<Rport> {
        let p = self.param("rport")?;
        Some(match p.value().and_then(|v| parse_port(v).ok()) {
            Some(port) => Rport::Port(port),
            None => Rport::Requested,
        })
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&str> {
        self.param("maddr").and_then(Param::value)
    }

    /// Sets `received` (RFC 3261 §18.2.1); IPv6 is written without brackets as in §25.1.
    pub fn set_received(&mut self, ip: IpAddr) {
        self.set_param("received", Some(&ip.to_string()));
    }

    /// Sets `rport=port` (RFC 3581 §4).
    pub fn set_rport(&mut self, port: u16) {
        self.set_param("rport", Some(&port.to_string()));
    }

    /// What a server does to the topmost Via of a request received from `source`:
    /// RFC 3261 §18.2.1 adds `received` when the sent-by host is a name or another address;
    /// RFC 3581 §4 fills an empty `rport` with the source port and then always adds `received`.
    /// An IPv4-mapped source (`::ffff:a.b.c.d` from a dual-stack socket) counts as IPv4.
    pub fn stamp_received(&mut self, source: SocketAddr) {
        let ip = source.ip().to_canonical();
        let rport_requested = self.rport() == Some(Rport::Requested);
        if rport_requested || self.host.ip() != Some(ip) {
            self.set_received(ip);
        }
        if rport_requested {
            self.set_rport(source.port());
        }
    }

    /// Where a response to this Via goes (RFC 3261 §18.2.2 with RFC 3581 §4): the `received`
    /// address (else the sent-by host) and the `rport` value (else the sent-by port, else the
    /// transport's default port). `maddr` is not honoured (multicast is not used here).
    pub fn response_target(&self) -> (Host, u16) {
        let host = self
            .received_ip()
            .map_or_else(|| self.host.clone(), Host::from);
        let port = match self.rport() {
            Some(Rport::Port(p)) => p,
            _ => self.port.unwrap_or_else(|| self.transport.default_port()),
        };
        (host, port)
    }
}

/// RFC 3261 §20.42 `via-params` with a fixed grammar: `ttl`, `maddr`, `received`, `branch`,
/// and RFC 3581 `rport`.
fn validate_via_param(p: &Param) -> Result<(), HeaderError> {
    let name = p.name();
    let value = p.value();
    let ok = if name.eq_ignore_ascii_case("branch") {
        value.is_some_and(is_token)
    } else if name.eq_ignore_ascii_case("received") {
        value.is_some_and(|v| Host::parse_with(v, true).is_some_and(|h| h.ip().is_some()))
    } else if name.eq_ignore_ascii_case("rport") {
        value.is_none_or(|v| parse_port(v).is_ok())
    } else if name.eq_ignore_ascii_case("maddr") {
        value.is_some_and(|v| Host::parse(v).is_some())
    } else if name.eq_ignore_ascii_case("ttl") {
        value.is_some_and(|v| parse_decimal(v, 255).is_ok())
    } else {
        true
    };
    if ok {
        Ok(())
    } else {
        Err(HeaderError::InvalidParam)
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} {}",
            self.protocol_name, self.protocol_version, self.transport, self.host
        )?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)
    }
}

/// `CSeq: 1*DIGIT LWS Method` (RFC 3261 §20.16).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number (RFC 3261 §8.1.1.5: a 32-bit unsigned integer).
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl CSeq {
    /// Parses a `CSeq` value; an overlarge number (RFC 4475 §3.1.2.4) fails.
    pub fn parse(s: &str) -> Result<Self, HeaderError> {
        let s = s.trim_matches([' ', '\t']);
        let digits_end = s.bytes().take_while(u8::is_ascii_digit).count();
        let seq = parse_decimal(&s[..digits_end], u64::from(u32::MAX))?;
        let rest = &s[digits_end..];
        let method = rest.trim_start_matches([' ', '\t']);
        if method.len() == rest.len() {
            return Err(if method.is_empty() {
                HeaderError::InvalidMethod
            } else {
                HeaderError::InvalidNumber
            });
        }
        let method = Method::from_token(method).ok_or(HeaderError::InvalidMethod)?;
        let seq = u32::try_from(seq).map_err(|_| HeaderError::InvalidNumber)?;
        Ok(Self { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// A display name (RFC 3261 §25.1 `display-name = *(token LWS) / quoted-string`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisplayName {
    /// A quoted-string; holds the text between the quotes with its `\` escapes as written.
    Quoted(String),
    /// Unquoted tokens separated by whitespace, as written.
    Tokens(String),
}

impl DisplayName {
    /// A display name for arbitrary text, quoted with `"` and `\` escaped.
    pub fn quoted(text: &str) -> Self {
        let mut inner = String::with_capacity(text.len());
        for c in text.chars() {
            if matches!(c, '"' | '\\') {
                inner.push('\\');
            }
            if !matches!(c, '\r' | '\n' | '\0') {
                inner.push(c);
            }
        }
        Self::Quoted(inner)
    }

    /// The text a person reads: escapes removed.
    pub fn text(&self) -> String {
        match self {
            Self::Quoted(inner) => unquote(&format!("\"{inner}\"")),
            Self::Tokens(t) => t.clone(),
        }
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Quoted(inner) => write!(f, "\"{inner}\""),
            Self::Tokens(t) => f.write_str(t),
        }
    }
}

/// `(name-addr / addr-spec) *( SEMI param )`: From, To, Contact, Route, Record-Route, Reply-To,
/// P-Asserted-Identity... (RFC 3261 §20.10, §20.20, §20.34, §20.39).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    display_name: Option<DisplayName>,
    uri: Uri,
    angle: bool,
    params: Vec<Param>,
}

impl NameAddr {
    /// `<uri>` with no display name or parameters.
    pub fn new(uri: Uri) -> Self {
        Self {
            display_name: None,
            uri,
            angle: true,
            params: Vec::new(),
        }
    }

    /// Adds a display name.
    #[must_use]
    pub fn with_display_name(mut self, name: DisplayName) -> Self {
        self.display_name = Some(name);
        self
    }

    /// Parses one value.
    pub fn parse(s: &str) -> Result<Self, HeaderError> {
        let b = s.as_bytes();
        let mut i = skip_ws(b, 0);
        if i == b.len() {
            return Err(HeaderError::Empty);
        }
        let mut display_name = None;
        let mut angle_at = None;
        if b[i] == b'"' {
            let end = scan_quoted(b, i)?;
            display_name = Some(DisplayName::Quoted(s[i + 1..end - 1].to_owned()));
            let lt = skip_ws(b, end);
            if b.get(lt) != Some(&b'<') {
                return Err(HeaderError::InvalidNameAddr);
            }
            angle_at = Some(lt);
        } else if b[i] == b'<' {
            angle_at = Some(i);
        } else {
            // `*(token LWS) "<"` is a name-addr; anything else is a bare addr-spec.
            let mut j = i;
            while j < b.len() && (is_token_char(b[j]) || is_ws(b[j])) {
                j += 1;
            }
            if b.get(j) == Some(&b'<') {
                let tokens = s[i..j].trim_end_matches([' ', '\t']);
                if !tokens.is_empty() {
                    display_name = Some(DisplayName::Tokens(tokens.to_owned()));
                }
                angle_at = Some(j);
            }
        }
        let (uri, angle, params_from) = if let Some(lt) = angle_at {
            let close = s[lt..].find('>').ok_or(HeaderError::InvalidNameAddr)? + lt;
            let uri = Uri::parse(&s[lt + 1..close]).map_err(HeaderError::InvalidUri)?;
            (uri, true, close + 1)
        } else {
            // RFC 3261 §20.10: without `<>` the URI ends at the first `;` and may not contain
            // `,` or `?` (RFC 4475 §3.1.2.13).
            let end = s[i..].find(';').map_or(b.len(), |e| e + i);
            let text = s[i..end].trim_end_matches([' ', '\t']);
            if text.contains([',', '?', ' ', '\t', '<', '>', '"']) {
                return Err(HeaderError::InvalidNameAddr);
            }
            i = end;
            (Uri::parse(text).map_err(HeaderError::InvalidUri)?, false, i)
        };
        let params = parse_params(s, params_from)?;
        Ok(Self {
            display_name,
            uri,
            angle,
            params,
        })
    }

    /// The display name as written.
    pub fn display_name(&self) -> Option<&DisplayName> {
        self.display_name.as_ref()
    }

    /// The URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The URI, mutable.
    pub fn uri_mut(&mut self) -> &mut Uri {
        &mut self.uri
    }

    /// The header parameters in order (`tag`, `expires`, `q`, `+sip.instance`, `reg-id`...).
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// A header parameter by name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// Sets or appends a header parameter. `name` must be a token and `value` a token or a
    /// quoted-string (the caller quotes), else nothing changes and an error is returned.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) -> Result<(), HeaderError> {
        let text = match value {
            Some(v) => format!(";{name}={v}"),
            None => format!(";{name}"),
        };
        let parsed = parse_params(&text, 0)?;
        if parsed.len() != 1 {
            return Err(HeaderError::InvalidParam);
        }
        set_param(&mut self.params, name, value.map(str::to_owned));
        Ok(())
    }

    /// Removes a header parameter; returns whether it was present.
    pub fn remove_param(&mut self, name: &str) -> bool {
        remove_param(&mut self.params, name)
    }

    /// The `tag` parameter (RFC 3261 §19.3).
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").and_then(Param::value)
    }

    /// Sets the `tag` parameter; the tag must be a token.
    pub fn set_tag(&mut self, tag: &str) -> Result<(), HeaderError> {
        if !is_token(tag) {
            return Err(HeaderError::InvalidParam);
        }
        self.set_param("tag", Some(tag))
    }

    /// The Contact `expires` parameter (RFC 3261 §20.10), `None` when absent.
    pub fn expires(&self) -> Option<Result<u32, HeaderError>> {
        self.param("expires").map(|p| {
            p.value()
                .map_or(Err(HeaderError::InvalidNumber), parse_expires)
        })
    }

    /// The Contact `q` parameter as written (RFC 3261 §20.10 `qvalue`).
    pub fn q(&self) -> Option<&str> {
        self.param("q").and_then(Param::value)
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = self.uri.to_string();
        // §20.10: a URI with `,`, `;` or `?` must be enclosed in `<>`.
        let angle = self.angle || self.display_name.is_some() || uri.contains([',', ';', '?']);
        if let Some(d) = &self.display_name {
            write!(f, "{d} ")?;
        }
        if angle {
            write!(f, "<{uri}>")?;
        } else {
            f.write_str(&uri)?;
        }
        write_params(f, &self.params)
    }
}

/// One Contact value: `*` or an address (RFC 3261 §20.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contact {
    /// `*`, only in a REGISTER that removes every binding (§10.2.2).
    Wildcard,
    /// An address with its parameters.
    Address(NameAddr),
}

impl Contact {
    /// Parses one Contact value.
    pub fn parse(s: &str) -> Result<Self, HeaderError> {
        if s.trim_matches([' ', '\t']) == "*" {
            Ok(Self::Wildcard)
        } else {
            NameAddr::parse(s).map(Self::Address)
        }
    }
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wildcard => f.write_str("*"),
            Self::Address(a) => write!(f, "{a}"),
        }
    }
}

/// `Content-Type: m-type SLASH m-subtype *(SEMI m-parameter)` (RFC 3261 §20.15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaType {
    kind: String,
    subtype: String,
    params: Vec<Param>,
}

impl MediaType {
    /// `type/subtype` with no parameters; both must be tokens.
    pub fn new(kind: &str, subtype: &str) -> Result<Self, HeaderError> {
        if !is_token(kind) || !is_token(subtype) {
            return Err(HeaderError::InvalidMediaType);
        }
        Ok(Self {
            kind: kind.to_owned(),
            subtype: subtype.to_owned(),
            params: Vec::new(),
        })
    }

    /// `application/sdp`.
    pub fn sdp() -> Self {
        Self {
            kind: "application".into(),
            subtype: "sdp".into(),
            params: Vec::new(),
        }
    }

    /// Parses a media type.
    pub fn parse(s: &str) -> Result<Self, HeaderError> {
        let b = s.as_bytes();
        let start = skip_ws(b, 0);
        let kind_end = scan_token(b, start);
        let slash = skip_ws(b, kind_end);
        if kind_end == start || b.get(slash) != Some(&b'/') {
            return Err(HeaderError::InvalidMediaType);
        }
        let sub_start = skip_ws(b, slash + 1);
        let sub_end = scan_token(b, sub_start);
        if sub_end == sub_start {
            return Err(HeaderError::InvalidMediaType);
        }
        Ok(Self {
            kind: s[start..kind_end].to_owned(),
            subtype: s[sub_start..sub_end].to_owned(),
            params: parse_params(s, sub_end)?,
        })
    }

    /// The type (`application`).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The subtype (`sdp`).
    pub fn subtype(&self) -> &str {
        &self.subtype
    }

    /// The parameters (`boundary`, `charset`...).
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Case-insensitive comparison with `kind/subtype`.
    pub fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// Whether this is `application/sdp`.
    pub fn is_sdp(&self) -> bool {
        self.is("application", "sdp")
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.subtype)?;
        write_params(f, &self.params)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::sip::error::UriError;

    #[test]
    fn via_with_lws_everywhere_parses_and_round_trips() {
        // RFC 4475 §3.1.1.1 (wsinv), after unfolding.
        let v = Via::parse("SIP  /   2.0 /UDP 192.0.2.2;rport;branch=390skdjuw").unwrap();
        assert_eq!(v.protocol(), ("SIP", "2.0"));
        assert_eq!(v.transport(), &Transport::Udp);
        assert_eq!(v.host(), &Host::Ipv4(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(v.port(), None);
        assert_eq!(v.rport(), Some(Rport::Requested));
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 192.0.2.2;rport;branch=390skdjuw"
        );
        let v =
            Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.host(), &Host::Domain("spindle.example.com".into()));
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(Via::parse(&v.to_string()).unwrap(), v);
    }

    #[test]
    fn via_ipv6_sent_by_and_received() {
        let v = Via::parse(
            "SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKa;received=2001:db8::1;rport=40000",
        )
        .unwrap();
        assert_eq!(v.host(), &Host::Ipv6("2001:db8::9".parse().unwrap()));
        assert_eq!(v.port(), Some(5061));
        assert_eq!(v.received_ip(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(v.rport(), Some(Rport::Port(40000)));
        assert_eq!(
            v.response_target(),
            (Host::Ipv6("2001:db8::1".parse().unwrap()), 40000)
        );
        assert_eq!(Via::parse(&v.to_string()).unwrap(), v);
    }

    #[test]
    fn via_stamping_follows_rfc3261_and_rfc3581() {
        let src: SocketAddr = "198.51.100.7:38211".parse().unwrap();
        // Domain sent-by: received added (§18.2.1); no rport requested: rport untouched.
        let mut v = Via::parse("SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776").unwrap();
        v.stamp_received(src);
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776;received=198.51.100.7"
        );
        assert_eq!(
            v.response_target(),
            (Host::Ipv4(Ipv4Addr::new(198, 51, 100, 7)), 5060)
        );
        // Same address, no rport: nothing added.
        let mut v = Via::parse("SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1").unwrap();
        v.stamp_received(src);
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1"
        );
        // rport requested: value filled and received added even if identical (RFC 3581 §4).
        let mut v = Via::parse("SIP/2.0/UDP 198.51.100.7:5060;rport;branch=z9hG4bK1").unwrap();
        v.stamp_received(src);
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 198.51.100.7:5060;rport=38211;branch=z9hG4bK1;received=198.51.100.7"
        );
        assert_eq!(v.response_target().1, 38211);
        // A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6.
        let mut v = Via::parse("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1").unwrap();
        v.stamp_received("[::ffff:198.51.100.7]:5060".parse().unwrap());
        assert_eq!(v.received(), None);
        // TLS default port.
        let v = Via::new(
            Transport::Tls,
            Host::Domain("edge.example.net".into()),
            None,
            "z9hG4bKx",
        );
        assert_eq!(
            v.to_string(),
            "SIP/2.0/TLS edge.example.net;branch=z9hG4bKx"
        );
        assert_eq!(v.response_target().1, 5061);
    }

    #[test]
    fn via_errors() {
        assert_eq!(Via::parse(""), Err(HeaderError::Empty));
        assert_eq!(
            Via::parse("SIP/2.0 host"),
            Err(HeaderError::InvalidSentProtocol)
        );
        assert_eq!(
            Via::parse("SIP/2.0/UDP"),
            Err(HeaderError::InvalidSentProtocol)
        );
        assert_eq!(
            Via::parse("SIP/2.0/UDP ;branch=x"),
            Err(HeaderError::InvalidHost)
        );
        assert_eq!(
            Via::parse("SIP/2.0/UDP h:70000"),
            Err(HeaderError::InvalidPort)
        );
        assert_eq!(
            Via::parse("SIP/2.0/UDP 192.0.2.15;;"),
            Err(HeaderError::InvalidParam)
        );
        assert_eq!(
            Via::parse("SIP/2.0/UDP h;received=h.example"),
            Err(HeaderError::InvalidParam)
        );
        assert_eq!(
            Via::parse("SIP/2.0/UDP h;rport=x"),
            Err(HeaderError::InvalidParam)
        );
        assert_eq!(
            Via::parse("SIP/2.0/UDP h;branch"),
            Err(HeaderError::InvalidParam)
        );
        assert_eq!(Via::parse("SIP/2.0/UDP h x"), Err(HeaderError::Trailing));
    }

    #[test]
    fn cseq_parses_leading_zeros_and_rejects_overflow() {
        assert_eq!(
            CSeq::parse("0009  INVITE").unwrap(),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert_eq!(CSeq::parse("4294967295 BYE").unwrap().seq, u32::MAX);
        assert_eq!(
            CSeq::parse("4294967296 BYE"),
            Err(HeaderError::InvalidNumber)
        );
        assert_eq!(
            CSeq::parse("36893488147419103232 REGISTER"),
            Err(HeaderError::InvalidNumber)
        );
        assert_eq!(CSeq::parse("1"), Err(HeaderError::InvalidMethod));
        assert_eq!(CSeq::parse("1INVITE"), Err(HeaderError::InvalidNumber));
        assert_eq!(CSeq::parse("1 INVITE x"), Err(HeaderError::InvalidMethod));
        assert_eq!(CSeq::parse("INVITE"), Err(HeaderError::InvalidNumber));
        assert_eq!(
            CSeq::parse("7 NEWMETHOD").unwrap().to_string(),
            "7 NEWMETHOD"
        );
    }

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(
            a.display_name(),
            Some(&DisplayName::Quoted(r#"J Rosenberg \\\""#.into()))
        );
        assert_eq!(a.display_name().unwrap().text(), r#"J Rosenberg \""#);
        assert_eq!(a.tag(), Some("98asjd8"));
        assert_eq!(NameAddr::parse(&a.to_string()).unwrap(), a);

        // RFC 4475 §3.1.1.6 (lwsdisp): no LWS between display name and `<`.
        let a = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(
            a.display_name(),
            Some(&DisplayName::Tokens("caller".into()))
        );
        assert_eq!(a.to_string(), "caller <sip:caller@example.com>;tag=323");

        // Bare addr-spec: URI parameters after `;` are header parameters (§20.10).
        let a =
            NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(a.uri().param("tag"), None);
        assert_eq!(a.tag(), Some("1918181833n"));
        assert_eq!(
            a.to_string(),
            "sip:vivekg@chair-dnrc.example.com;tag=1918181833n"
        );

        let a = NameAddr::parse(r#"<sip:alice@192.0.2.4:5060;transport=tcp;ob>;expires=3600;q=0.7;+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1"#).unwrap();
        assert_eq!(a.uri().param("ob").map(Param::value), Some(None));
        assert_eq!(a.expires(), Some(Ok(3600)));
        assert_eq!(a.q(), Some("0.7"));
        assert_eq!(
            a.param("+sip.instance")
                .and_then(Param::unquoted_value)
                .as_deref(),
            Some("<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>")
        );
        let names: Vec<_> = a.params().iter().map(Param::name).collect();
        assert_eq!(names, ["expires", "q", "+sip.instance", "reg-id"]);
        assert_eq!(NameAddr::parse(&a.to_string()).unwrap(), a);

        let a = NameAddr::parse("<tel:+15551234;phone-context=example.com>").unwrap();
        assert!(matches!(a.uri(), Uri::Other { .. }));
    }

    #[test]
    fn name_addr_errors() {
        assert_eq!(NameAddr::parse("  "), Err(HeaderError::Empty));
        assert_eq!(
            NameAddr::parse(r#""Mr. J. User <sip:j.user@example.com>"#),
            Err(HeaderError::UnterminatedQuote)
        );
        assert_eq!(
            NameAddr::parse("<sip:a@b"),
            Err(HeaderError::InvalidNameAddr)
        );
        assert_eq!(
            NameAddr::parse(r#""x" sip:a@b"#),
            Err(HeaderError::InvalidNameAddr)
        );
        assert_eq!(
            NameAddr::parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E"),
            Err(HeaderError::InvalidNameAddr)
        );
        assert_eq!(
            NameAddr::parse("< sip:t.watson@example.org >"),
            Err(HeaderError::InvalidUri(UriError::InvalidScheme))
        );
        assert_eq!(
            NameAddr::parse("Watson, Thomas <sip:t.watson@example.org>"),
            Err(HeaderError::InvalidNameAddr)
        );
        assert_eq!(
            NameAddr::parse("\"Joe\" <sip:joe@example.org>;;;;"),
            Err(HeaderError::InvalidParam)
        );
        assert_eq!(
            NameAddr::parse("<sip:a@b> junk"),
            Err(HeaderError::Trailing)
        );
    }

    #[test]
    fn name_addr_setters() {
        let mut a = NameAddr::new(Uri::parse("sip:bob@biloxi.example.com").unwrap())
            .with_display_name(DisplayName::quoted("Bob \"B\""));
        a.set_tag("a6c85cf").unwrap();
        assert_eq!(
            a.to_string(),
            r#""Bob \"B\"" <sip:bob@biloxi.example.com>;tag=a6c85cf"#
        );
        assert_eq!(a.display_name().unwrap().text(), "Bob \"B\"");
        assert_eq!(a.set_tag("bad tag"), Err(HeaderError::InvalidParam));
        assert_eq!(a.set_param("x", Some("a b")), Err(HeaderError::Trailing));
        assert!(a.remove_param("TAG"));
        // A URI with parameters is enclosed even when it was bare.
        let mut bare = NameAddr::parse("sip:a@b.example").unwrap();
        bare.uri_mut()
            .as_sip_mut()
            .unwrap()
            .set_param("lr", None)
            .unwrap();
        assert_eq!(bare.to_string(), "<sip:a@b.example;lr>");
    }

    #[test]
    fn contact_wildcard() {
        assert_eq!(Contact::parse(" * ").unwrap(), Contact::Wildcard);
        assert_eq!(Contact::Wildcard.to_string(), "*");
        assert!(matches!(
            Contact::parse("<sip:a@b>").unwrap(),
            Contact::Address(_)
        ));
    }

    #[test]
    fn scalars() {
        assert_eq!(parse_max_forwards("0068"), Ok(68));
        assert_eq!(parse_max_forwards("300"), Err(HeaderError::InvalidNumber));
        assert_eq!(parse_content_length(" 150 "), Ok(150));
        assert_eq!(
            parse_content_length("-999"),
            Err(HeaderError::InvalidNumber)
        );
        assert_eq!(parse_expires("4294967295"), Ok(u32::MAX));
        assert_eq!(
            parse_expires("10000000000000000000000000000"),
            Err(HeaderError::InvalidNumber)
        );
        assert_eq!(
            validate_call_id("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"),
            Ok("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
        );
        assert_eq!(validate_call_id("a@b@c"), Err(HeaderError::InvalidCallId));
        assert_eq!(validate_call_id("a b"), Err(HeaderError::InvalidCallId));
        assert_eq!(validate_call_id(""), Err(HeaderError::InvalidCallId));
    }

    #[test]
    fn media_types() {
        let m = MediaType::parse("multipart/mixed;boundary=7a9cbec02ceef655").unwrap();
        assert!(m.is("MULTIPART", "Mixed"));
        assert_eq!(m.params()[0].value(), Some("7a9cbec02ceef655"));
        assert_eq!(m.to_string(), "multipart/mixed;boundary=7a9cbec02ceef655");
        assert!(MediaType::parse("application / sdp").unwrap().is_sdp());
        assert_eq!(MediaType::sdp().to_string(), "application/sdp");
        assert_eq!(
            MediaType::parse("application"),
            Err(HeaderError::InvalidMediaType)
        );
        assert_eq!(
            MediaType::parse("application/sdp x"),
            Err(HeaderError::Trailing)
        );
    }
}
