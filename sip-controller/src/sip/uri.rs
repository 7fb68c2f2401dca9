//! URIs: `sip:` and `sips:` parsed into their parts (RFC 3261 §19.1.1, grammar §25.1), every
//! other absolute URI (`tel:`, `urn:`, ...) kept as scheme plus opaque text.
//!
//! Escapes (`%HH`) are validated but kept verbatim, as are parameter and header spellings, so a
//! URI the B2BUA forwards is written back as it came (only the scheme is lower-cased and IP
//! literals are written in their canonical form).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{
    error::UriError,
    grammar::{find_param, remove_param, set_param, write_params, Param},
};

/// A transport named by a Via `sent-protocol` or a `;transport=` URI parameter
/// (RFC 3261 §20.42, §19.1.1; RFC 7118 for WS/WSS).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// SCTP (RFC 4168).
    Sctp,
    /// TLS over SCTP (RFC 4168).
    TlsSctp,
    /// WebSocket (RFC 7118).
    Ws,
    /// Secure WebSocket (RFC 7118).
    Wss,
    /// Any other token, as written.
    Other(String),
}

impl Transport {
    /// Case-insensitive parse of a transport token; unknown tokens become [`Transport::Other`].
    pub fn from_token(token: &str) -> Self {
        const KNOWN: [(&str, Transport); 7] = [
            ("UDP", Transport::Udp),
            ("TCP", Transport::Tcp),
            ("TLS", Transport::Tls),
            ("SCTP", Transport::Sctp),
            ("TLS-SCTP", Transport::TlsSctp),
            ("WS", Transport::Ws),
            ("WSS", Transport::Wss),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(token))
            .map_or_else(|| Self::Other(token.to_owned()), |(_, t)| t)
    }

    /// The token as written on the wire (upper case for the known ones).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
            Self::Sctp => "SCTP",
            Self::TlsSctp => "TLS-SCTP",
            Self::Ws => "WS",
            Self::Wss => "WSS",
            Self::Other(s) => s,
        }
    }

    /// Whether the transport is secured by TLS.
    pub fn is_secure(&self) -> bool {
        matches!(self, Self::Tls | Self::TlsSctp | Self::Wss)
    }

    /// The default port when a sent-by or URI has none (RFC 3261 §18.2.2, §19.1.2).
    pub fn default_port(&self) -> u16 {
        if self.is_secure() {
            5061
        } else {
            5060
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host: a domain name, an IPv4 address or an IPv6 reference (RFC 3261 §25.1 `host`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A hostname, as written.
    Domain(String),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address, written `[...]`.
    Ipv6(Ipv6Addr),
}

impl Host {
    /// Parses `hostname / IPv4address / IPv6reference`. A bare IPv6 address (no brackets) is
    /// accepted only when `allow_bare_ipv6` is set (the Via `received` parameter).
    pub(crate) fn parse_with(s: &str, allow_bare_ipv6: bool) -> Option<Self> {
        if let Some(inner) = s.strip_prefix('[') {
            return inner
                .strip_suffix(']')
                .and_then(|v6| v6.parse().ok())
                .map(Self::Ipv6);
        }
        if allow_bare_ipv6 && s.contains(':') {
            return s.parse().ok().map(Self::Ipv6);
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return s.parse().ok().map(Self::Ipv4);
        }
        is_hostname(s).then(|| Self::Domain(s.to_owned()))
    }

    /// Parses `hostname / IPv4address / IPv6reference`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::parse_with(s, false)
    }

    /// The IP address, for an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Domain(_) => None,
            Self::Ipv4(a) => Some(IpAddr::V4(*a)),
            Self::Ipv6(a) => Some(IpAddr::V6(*a)),
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self::Ipv4(a),
            IpAddr::V6(a) => Self::Ipv6(a),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(d) => f.write_str(d),
            Self::Ipv4(a) => write!(f, "{a}"),
            Self::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// RFC 3261 `hostname = *( domainlabel "." ) toplabel [ "." ]`; `_` is tolerated inside labels
/// because deployed equipment uses it in SRV-style names.
fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

/// RFC 3261 `unreserved = alphanum / mark`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// Checks that every byte is allowed by `extra` or unreserved, and that every `%` starts a
/// `%HH` escape.
fn valid_escaped(s: &str, extra: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() || !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else if is_unreserved(b[i]) || extra(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// A `sip:` or `sips:` URI (RFC 3261 §19.1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipUri {
    secure: bool,
    user: Option<String>,
    password: Option<String>,
    host: Host,
    port: Option<u16>,
    params: Vec<Param>,
    headers: Option<String>,
}

impl SipUri {
    /// `sip:host` (or `sips:host`) with no user, port, parameters or headers.
    pub fn new(secure: bool, host: Host) -> Self {
        Self {
            secure,
            user: None,
            password: None,
            host,
            port: None,
            params: Vec::new(),
            headers: None,
        }
    }

    /// Sets the user part (escapes as written); `None` removes it.
    pub fn set_user(&mut self, user: Option<&str>) -> Result<(), UriError> {
        if let Some(u) = user {
            if u.is_empty() || !valid_escaped(u, is_user_unreserved) {
                return Err(UriError::InvalidUser);
            }
        }
        self.user = user.map(str::to_owned);
        if self.user.is_none() {
            self.password = None;
        }
        Ok(())
    }

    /// Whether the scheme is `sips`.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The user part, escapes kept verbatim.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The password (RFC 3261 §19.1.1 discourages it; kept so that forwarding is lossless).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The explicit port.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Replaces host and port.
    pub fn set_host_port(&mut self, host: Host, port: Option<u16>) {
        self.host = host;
        self.port = port;
    }

    /// The URI parameters in order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// A URI parameter by name (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// Sets or appends a URI parameter. The name must be a non-empty run of `paramchar`s and the
    /// value, when present, too.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) -> Result<(), UriError> {
        let ok = |s: &str| !s.is_empty() && valid_escaped(s, is_param_unreserved);
        if !ok(name) || !value.is_none_or(ok) {
            return Err(UriError::InvalidParam);
        }
        set_param(&mut self.params, name, value.map(str::to_owned));
        Ok(())
    }

    /// Removes a URI parameter; returns whether it was present.
    pub fn remove_param(&mut self, name: &str) -> bool {
        remove_param(&mut self.params, name)
    }

    /// The `?headers` part, without the `?`, as written.
    pub fn headers(&self) -> Option<&str> {
        self.headers.as_deref()
    }

    /// Drops the `?headers` part (RFC 3261 §19.1.5: not used in Request-URIs).
    pub fn clear_headers(&mut self) {
        self.headers = None;
    }

    /// The `transport` parameter.
    pub fn transport(&self) -> Option<Transport> {
        self.param("transport")
            .and_then(Param::value)
            .map(Transport::from_token)
    }

    /// Parses the text after `sip:` / `sips:`.
    fn parse_rest(secure: bool, rest: &str) -> Result<Self, UriError> {
        let (userinfo, hostpart) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.find(':') {
                    Some(c) => (&ui[..c], Some(&ui[c + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() || !valid_escaped(u, is_user_unreserved) {
                    return Err(UriError::InvalidUser);
                }
                if let Some(p) = p {
                    if !valid_escaped(p, |b| matches!(b, b'&' | b'=' | b'+' | b'$' | b',')) {
                        return Err(UriError::InvalidPassword);
                    }
                }
                (Some(u.to_owned()), p.map(str::to_owned))
            }
        };
        let (before_headers, headers) = match hostpart.find('?') {
            Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
            None => (hostpart, None),
        };
        if let Some(h) = headers {
            let valid = !h.is_empty()
                && valid_escaped(h, |b| {
                    matches!(
                        b,
                        b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$' | b'=' | b'&'
                    )
                });
            if !valid {
                return Err(UriError::InvalidHeaders);
            }
        }
        let (hostport, params_text) = match before_headers.find(';') {
            Some(s) => (&before_headers[..s], Some(&before_headers[s + 1..])),
            None => (before_headers, None),
        };
        let (host_text, port_text) = split_host_port(hostport)?;
        let host = Host::parse(host_text).ok_or(UriError::InvalidHost)?;
        let port = port_text.map(parse_port).transpose()?;
        let mut params = Vec::new();
        if let Some(pt) = params_text {
            for p in pt.split(';') {
                let (name, value) = match p.find('=') {
                    Some(e) => (&p[..e], Some(&p[e + 1..])),
                    None => (p, None),
                };
                let ok = |s: &str| !s.is_empty() && valid_escaped(s, is_param_unreserved);
                if !ok(name) || !value.is_none_or(ok) {
                    return Err(UriError::InvalidParam);
                }
                params.push(Param::new(name, value.map(str::to_owned)));
            }
        }
        Ok(Self {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers: headers.map(str::to_owned),
        })
    }
}

/// RFC 3261 `user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"`.
fn is_user_unreserved(b: u8) -> bool {
    matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

/// RFC 3261 `param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"`.
fn is_param_unreserved(b: u8) -> bool {
    matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

/// Splits `host[:port]`, minding the colons of an IPv6 reference.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, Option<&str>), UriError> {
    if s.starts_with('[') {
        let close = s.find(']').ok_or(UriError::InvalidHost)?;
        let rest = &s[close + 1..];
        return match rest.strip_prefix(':') {
            Some(port) => Ok((&s[..=close], Some(port))),
            None if rest.is_empty() => Ok((s, None)),
            None => Err(UriError::InvalidHost),
        };
    }
    Ok(match s.find(':') {
        Some(c) => (&s[..c], Some(&s[c + 1..])),
        None => (s, None),
    })
}

/// `port = 1*DIGIT`, at most 65535 (five digits, so leading zeros cannot hide an overflow).
pub(crate) fn parse_port(s: &str) -> Result<u16, UriError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::InvalidPort);
    }
    s.parse().map_err(|_| UriError::InvalidPort)
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(pw) = &self.password {
                write!(f, ":{pw}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// A Request-URI or the URI of a name-addr: SIP/SIPS parsed, any other scheme opaque.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// Any other absolute URI (`tel:`, `urn:`, `mailto:`...), as written after the scheme.
    Other {
        /// The scheme, as written.
        scheme: String,
        /// Everything after `scheme:`.
        rest: String,
    },
}

impl Uri {
    /// Parses a whole URI; no surrounding whitespace or brackets.
    pub fn parse(s: &str) -> Result<Self, UriError> {
        if s.is_empty() {
            return Err(UriError::Empty);
        }
        let colon = s.find(':').ok_or(UriError::InvalidScheme)?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        let scheme_ok = scheme
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(UriError::InvalidScheme);
        }
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            return SipUri::parse_rest(scheme.len() == 4, rest).map(Self::Sip);
        }
        let rest_ok = !rest.is_empty()
            && rest.bytes().all(|b| {
                b.is_ascii_graphic()
                    && !matches!(
                        b,
                        b'<' | b'>' | b'"' | b'\\' | b'{' | b'}' | b'|' | b'^' | b'`'
                    )
            });
        if !rest_ok {
            return Err(UriError::InvalidCharacter);
        }
        Ok(Self::Other {
            scheme: scheme.to_owned(),
            rest: rest.to_owned(),
        })
    }

    /// The SIP URI, when the scheme is `sip` or `sips`.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Self::Sip(u) => Some(u),
            Self::Other { .. } => None,
        }
    }

    /// The SIP URI, mutable.
    pub fn as_sip_mut(&mut self) -> Option<&mut SipUri> {
        match self {
            Self::Sip(u) => Some(u),
            Self::Other { .. } => None,
        }
    }

    /// Whether the scheme is `sips` (RFC 3261 §26.2.2: TLS on every hop).
    pub fn is_sips(&self) -> bool {
        self.as_sip().is_some_and(SipUri::is_secure)
    }

    /// The `transport` URI parameter of a SIP URI.
    pub fn transport(&self) -> Option<Transport> {
        self.as_sip().and_then(SipUri::transport)
    }

    /// The host of a SIP URI.
    pub fn host(&self) -> Option<&Host> {
        self.as_sip().map(SipUri::host)
    }

    /// The explicit port of a SIP URI.
    pub fn port(&self) -> Option<u16> {
        self.as_sip().and_then(SipUri::port)
    }

    /// The user part of a SIP URI, escapes verbatim.
    pub fn user(&self) -> Option<&str> {
        self.as_sip().and_then(SipUri::user)
    }

    /// A URI parameter of a SIP URI by name (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.as_sip().and_then(|u| u.param(name))
    }

    /// Replaces host and port of a SIP URI; returns `false` (and changes nothing) for other
    /// schemes.
    pub fn set_host_port(&mut self, host: Host, port: Option<u16>) -> bool {
        match self.as_sip_mut() {
            Some(u) => {
                u.set_host_port(host, port);
                true
            }
            None => false,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sip(u) => write!(f, "{u}"),
            Self::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

impl std::str::FromStr for Uri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn full_sip_uri_parts_and_round_trip() {
        let text = "sip:alice:secret@atlanta.example.com:5070;transport=tcp;lr;maddr=239.255.255.1?subject=project%20x&priority=urgent";
        let u = sip(text);
        assert!(!u.is_secure());
        assert_eq!(u.user(), Some("alice"));
        assert_eq!(u.password(), Some("secret"));
        assert_eq!(u.host(), &Host::Domain("atlanta.example.com".into()));
        assert_eq!(u.port(), Some(5070));
        assert_eq!(u.transport(), Some(Transport::Tcp));
        assert_eq!(u.param("LR").map(Param::value), Some(None));
        assert_eq!(
            u.param("maddr").and_then(Param::value),
            Some("239.255.255.1")
        );
        assert_eq!(u.headers(), Some("subject=project%20x&priority=urgent"));
        assert_eq!(u.to_string(), text);
    }

    #[test]
    fn sips_and_ipv6_hosts() {
        let u = Uri::parse("sips:[2001:db8::10]:5061;transport=tls").unwrap();
        assert!(u.is_sips());
        assert_eq!(u.host(), Some(&Host::Ipv6("2001:db8::10".parse().unwrap())));
        assert_eq!(u.port(), Some(5061));
        assert_eq!(u.transport(), Some(Transport::Tls));
        assert_eq!(u.to_string(), "sips:[2001:db8::10]:5061;transport=tls");
        let v6 = sip("sip:bob@[2001:db8::1]");
        assert_eq!(v6.port(), None);
        assert_eq!(Uri::parse("sip:[2001:db8::1"), Err(UriError::InvalidHost));
        assert_eq!(Uri::parse("sip:[2001:db8::1]x"), Err(UriError::InvalidHost));
        assert_eq!(Uri::parse("sip:[zz::1]"), Err(UriError::InvalidHost));
    }

    #[test]
    fn escapes_are_kept_verbatim() {
        let text = "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31";
        let u = sip(text);
        assert_eq!(u.user(), Some("cal%6Cer"));
        assert_eq!(u.params()[0].name(), "%6C%72");
        assert_eq!(u.to_string(), text);
        assert_eq!(Uri::parse("sip:a%4@b"), Err(UriError::InvalidUser));
        assert_eq!(Uri::parse("sip:a%@b"), Err(UriError::InvalidUser));
    }

    #[test]
    fn user_may_hold_semicolons_and_question_marks() {
        // RFC 4475 §3.1.1.9 (semiuri) and §3.1.1.2 (intmeth).
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user(), Some("user;par=u%40example.net"));
        assert!(u.params().is_empty());
        let u = sip("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(
            u.user(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
    }

    #[test]
    fn other_schemes_are_opaque() {
        let u = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(
            u,
            Uri::Other {
                scheme: "tel".into(),
                rest: "+1-201-555-0123;phone-context=example.com".into()
            }
        );
        assert_eq!(u.host(), None);
        assert!(!u.is_sips());
        assert_eq!(
            u.to_string(),
            "tel:+1-201-555-0123;phone-context=example.com"
        );
        assert!(Uri::parse("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6").is_ok());
        assert_eq!(Uri::parse("tel:+1 2"), Err(UriError::InvalidCharacter));
        assert_eq!(Uri::parse("tel:"), Err(UriError::InvalidCharacter));
    }

    #[test]
    fn malformed_uris_are_rejected() {
        assert_eq!(Uri::parse(""), Err(UriError::Empty));
        assert_eq!(Uri::parse("<sip:a@b>"), Err(UriError::InvalidScheme));
        assert_eq!(Uri::parse("nocolon"), Err(UriError::InvalidScheme));
        assert_eq!(
            Uri::parse("sip:user@example.com;"),
            Err(UriError::InvalidParam)
        );
        assert_eq!(
            Uri::parse("sip:user@example.com; lr"),
            Err(UriError::InvalidParam)
        );
        assert_eq!(Uri::parse("sip:@example.com"), Err(UriError::InvalidUser));
        assert_eq!(Uri::parse("sip:a@b:99999"), Err(UriError::InvalidPort));
        assert_eq!(Uri::parse("sip:a@b:"), Err(UriError::InvalidPort));
        assert_eq!(Uri::parse("sip:a@-b.com"), Err(UriError::InvalidHost));
        assert_eq!(Uri::parse("sip:a@b..com"), Err(UriError::InvalidHost));
        assert_eq!(Uri::parse("sip:a@300.1.1.1"), Err(UriError::InvalidHost));
        assert_eq!(Uri::parse("sip:a@b?"), Err(UriError::InvalidHeaders));
        assert_eq!(Uri::parse("sip:a@b c"), Err(UriError::InvalidHost));
    }

    #[test]
    fn helpers_edit_host_port_and_params() {
        let mut u = Uri::parse("SIP:bob@biloxi.example.com").unwrap();
        assert_eq!(u.to_string(), "sip:bob@biloxi.example.com");
        assert!(u.set_host_port(Host::Ipv4(Ipv4Addr::new(192, 0, 2, 4)), Some(5080)));
        u.as_sip_mut()
            .unwrap()
            .set_param("transport", Some("tcp"))
            .unwrap();
        u.as_sip_mut().unwrap().set_param("lr", None).unwrap();
        assert_eq!(u.to_string(), "sip:bob@192.0.2.4:5080;transport=tcp;lr");
        assert!(u.as_sip_mut().unwrap().remove_param("TRANSPORT"));
        assert_eq!(u.to_string(), "sip:bob@192.0.2.4:5080;lr");
        assert_eq!(
            u.as_sip_mut().unwrap().set_param("bad name", None),
            Err(UriError::InvalidParam)
        );
        let mut tel = Uri::parse("tel:+15551234").unwrap();
        assert!(!tel.set_host_port(Host::Domain("x.example".into()), None));
    }

    #[test]
    fn transports_parse_case_insensitively() {
        assert_eq!(Transport::from_token("tls"), Transport::Tls);
        assert_eq!(
            Transport::from_token("UNKNOWN"),
            Transport::Other("UNKNOWN".into())
        );
        assert_eq!(Transport::Tls.default_port(), 5061);
        assert_eq!(Transport::Udp.default_port(), 5060);
    }
}
