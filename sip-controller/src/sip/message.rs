//! Messages: start line, header section and body; [`Message::parse`] for one datagram or one
//! stream frame, [`stream_frame`] to cut frames out of a TCP/TLS byte stream, `encode` to write
//! them, builders for requests and responses, and [`bad_request_response`] to answer what could
//! not be parsed.
//!
//! ```text
//! INVITE sip:bob@biloxi.example.com SIP/2.0      <- start line (§7.1) or SIP/2.0 200 OK (§7.2)
//! Via: SIP/2.0/TLS ...                            <- header fields, folded lines unfolded (§7.3.1)
//! ...
//! Content-Length: 142                             <- owned by the codec: always the body's length
//!                                                 <- empty line
//! v=0 ...                                         <- body: bytes, never decoded here
//! ```

use std::fmt;

use super::{
    error::{ParseError, UriError},
    grammar::{is_token, is_ws},
    headers::{names_match, Header, Headers},
    typed::{parse_content_length, NameAddr},
    uri::Uri,
    MAX_HEADERS, MAX_HEADER_LINE, MAX_MESSAGE_LEN, MAX_VIA,
};

/// A request method (RFC 3261 §7.1, §27.4; RFC 3262, 3311, 6086, 3428, 6665, 3515).
/// Methods are case-sensitive: `invite` is an extension method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE (RFC 3261).
    Invite,
    /// ACK (RFC 3261).
    Ack,
    /// BYE (RFC 3261).
    Bye,
    /// CANCEL (RFC 3261).
    Cancel,
    /// OPTIONS (RFC 3261).
    Options,
    /// REGISTER (RFC 3261).
    Register,
    /// PRACK (RFC 3262).
    Prack,
    /// UPDATE (RFC 3311).
    Update,
    /// INFO (RFC 6086).
    Info,
    /// MESSAGE (RFC 3428).
    Message,
    /// NOTIFY (RFC 6665).
    Notify,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// REFER (RFC 3515).
    Refer,
    /// Any other token. Build it with [`Method::from_token`] so that a standard method is never
    /// held here.
    Extension(String),
}

impl Method {
    const STANDARD: [(&'static str, Method); 13] = [
        ("INVITE", Method::Invite),
        ("ACK", Method::Ack),
        ("BYE", Method::Bye),
        ("CANCEL", Method::Cancel),
        ("OPTIONS", Method::Options),
        ("REGISTER", Method::Register),
        ("PRACK", Method::Prack),
        ("UPDATE", Method::Update),
        ("INFO", Method::Info),
        ("MESSAGE", Method::Message),
        ("NOTIFY", Method::Notify),
        ("SUBSCRIBE", Method::Subscribe),
        ("REFER", Method::Refer),
    ];

    /// The method for a token; `None` when `s` is not an RFC 3261 token.
    pub fn from_token(s: &str) -> Option<Self> {
        if !is_token(s) {
            return None;
        }
        Some(
            Self::STANDARD
                .into_iter()
                .find(|(name, _)| *name == s)
                .map_or_else(|| Self::Extension(s.to_owned()), |(_, m)| m),
        )
    }

    /// The method as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Extension(s) => s,
            standard => Self::STANDARD
                .iter()
                .find(|(_, m)| m == standard)
                .map_or("", |(name, _)| name),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request. `Debug` shows the body's length only: bodies carry SDES keys (`a=crypto`)
/// and requests are kept in call state that may be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// The header fields in order (Content-Length is rewritten by the encoder).
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("reason", &self.reason)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Request {
    /// A request with no header fields and no body; the caller adds Via, Max-Forwards, From,
    /// To, Call-ID and `CSeq` (RFC 3261 §8.1.1).
    pub fn new(method: Method, uri: Uri) -> Self {
        Self {
            method,
            uri,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Appends a header field (builder style).
    #[must_use]
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Sets the body and its Content-Type (builder style).
    #[must_use]
    pub fn with_body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.headers.set("Content-Type", content_type);
        self.body = body;
        self
    }

    /// Writes the request to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_sanitized(out, self.method.as_str());
        out.push(b' ');
        write_sanitized(out, &self.uri.to_string());
        out.extend_from_slice(b" SIP/2.0\r\n");
        encode_tail(&self.headers, &self.body, out);
    }

    /// The request as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        self.encode(&mut out);
        out
    }
}

/// A response. `Debug` shows the body's length only (SDP answers carry keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, 100..=699.
    pub status: u16,
    /// The reason phrase (may be empty).
    pub reason: String,
    /// The header fields in order (Content-Length is rewritten by the encoder).
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with no header fields; `reason` `None` takes the RFC 3261 §21 phrase.
    pub fn new(status: u16, reason: Option<&str>) -> Self {
        Self {
            status,
            reason: reason.unwrap_or_else(|| reason_phrase(status)).to_owned(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// A response to `request` (RFC 3261 §8.2.6.2): every Via in order, From, To, Call-ID and
    /// `CSeq` copied; for a 100 also Timestamp (§8.2.6.1). Add the To tag with
    /// [`Response::set_to_tag`] (every response but 100 needs one, §8.2.6.2). Record-Route is
    /// not copied: that belongs to the dialog layer (§12.1.1).
    pub fn from_request(request: &Request, status: u16, reason: Option<&str>) -> Self {
        let mut response = Self::new(status, reason);
        let mut copied: Vec<&str> = vec!["Via", "From", "To", "Call-ID", "CSeq"];
        if status == 100 {
            copied.push("Timestamp");
        }
        for field in &request.headers {
            if copied.iter().any(|name| field.is(name)) {
                response.headers.push(field.name(), field.value());
            }
        }
        response
    }

    /// Sets the tag of the To field (keeping an existing one is the caller's choice).
    pub fn set_to_tag(&mut self, tag: &str) -> Result<(), ParseError> {
        let mut to = self.headers.to()?;
        to.set_tag(tag)
            .map_err(|source| ParseError::InvalidHeader { name: "To", source })?;
        self.headers.set("To", to.to_string());
        Ok(())
    }

    /// Adds the To tag (builder style); an unusable To is left as it is.
    #[must_use]
    pub fn with_to_tag(mut self, tag: &str) -> Self {
        // The To was copied from a request the parser validated; a failure leaves it unchanged.
        let _ = self.set_to_tag(tag);
        self
    }

    /// Whether the status is 1xx.
    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }

    /// Writes the response to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("SIP/2.0 {} ", self.status).as_bytes());
        write_sanitized(out, &self.reason);
        out.extend_from_slice(b"\r\n");
        encode_tail(&self.headers, &self.body, out);
    }

    /// The response as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        self.encode(&mut out);
        out
    }
}

/// A request or a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Message {
    /// Parses one complete message: a UDP datagram or a frame cut by [`stream_frame`].
    ///
    /// CRLFs before the start line are skipped (RFC 3261 §7.5). The body is Content-Length
    /// bytes; bytes after it are discarded and a missing Content-Length takes the rest
    /// (§18.3, datagrams); a shorter body is an error. The parsed message carries exactly one
    /// Content-Length field equal to its body length (added at the bottom when absent).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge {
                size: bytes.len(),
                limit: MAX_MESSAGE_LEN,
            });
        }
        let skip = leading_crlf(bytes);
        if skip == bytes.len() {
            return Err(ParseError::Empty);
        }
        let head = parse_head(&bytes[skip..])?.ok_or(ParseError::Unterminated)?;
        let start = parse_start_line(head.start_line)?;
        let mut headers = head.headers;
        let available = &bytes[skip + head.len..];
        let body = match content_length(&headers)? {
            Some(declared) if declared > available.len() => {
                return Err(ParseError::BodyTooShort {
                    declared,
                    available: available.len(),
                });
            }
            Some(declared) => available[..declared].to_vec(),
            None => available.to_vec(),
        };
        normalize_content_length(&mut headers, body.len());
        let message = match start {
            StartLine::Request { method, uri } => {
                validate(&headers, Some(&method))?;
                Self::Request(Request {
                    method,
                    uri,
                    headers,
                    body,
                })
            }
            StartLine::Response { status, reason } => {
                validate(&headers, None)?;
                Self::Response(Response {
                    status,
                    reason,
                    headers,
                    body,
                })
            }
        };
        // What is accepted must also fit once written back (one SP after each colon, the
        // Content-Length field, CRLF line ends), so that it can be forwarded and parsed again.
        let size = message.encoded_len();
        if size > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge {
                size,
                limit: MAX_MESSAGE_LEN,
            });
        }
        Ok(message)
    }

    /// The length of [`Message::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        let (start_line, headers, body) = match self {
            // `Method SP Request-URI SP SIP/2.0 CRLF`
            Self::Request(r) => (
                r.method.as_str().len() + r.uri.to_string().len() + 11,
                &r.headers,
                &r.body,
            ),
            // `SIP/2.0 SP code SP reason CRLF`
            Self::Response(r) => (
                11 + r.status.to_string().len() + r.reason.len(),
                &r.headers,
                &r.body,
            ),
        };
        let length_digits = body.len().to_string().len();
        let mut total = start_line + 2 + body.len();
        let mut wrote_length = false;
        for h in headers {
            if h.is("Content-Length") {
                if !wrote_length {
                    total += h.name().len() + 4 + length_digits;
                    wrote_length = true;
                }
            } else {
                total += h.name().len() + h.value().len() + 4;
            }
        }
        if !wrote_length {
            total += "Content-Length: \r\n".len() + length_digits;
        }
        total
    }

    /// Writes the message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Request(r) => r.encode(out),
            Self::Response(r) => r.encode(out),
        }
    }

    /// The message as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Request(r) => r.to_bytes(),
            Self::Response(r) => r.to_bytes(),
        }
    }

    /// The header fields.
    pub fn headers(&self) -> &Headers {
        match self {
            Self::Request(r) => &r.headers,
            Self::Response(r) => &r.headers,
        }
    }

    /// The header fields, mutable.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Self::Request(r) => &mut r.headers,
            Self::Response(r) => &mut r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        match self {
            Self::Request(r) => &r.body,
            Self::Response(r) => &r.body,
        }
    }

    /// The request, if this is one.
    pub fn as_request(&self) -> Option<&Request> {
        match self {
            Self::Request(r) => Some(r),
            Self::Response(_) => None,
        }
    }

    /// The response, if this is one.
    pub fn as_response(&self) -> Option<&Response> {
        match self {
            Self::Request(_) => None,
            Self::Response(r) => Some(r),
        }
    }
}

/// What the front of a stream buffer holds (RFC 3261 §18.3 framing, RFC 5626 §3.5.1 keep-alives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFrame {
    /// More bytes are needed.
    Incomplete,
    /// CRLFs to consume: `ping` for a double CRLF (answer with one CRLF, RFC 5626 §4.4.1), a
    /// single CRLF (a pong, or a CRLF before a start line, §7.5) otherwise. A ping split after its
    /// first CRLF reads as two single CRLFs.
    KeepAlive {
        /// Bytes to consume.
        len: usize,
        /// Whether this is a double-CRLF ping.
        ping: bool,
    },
    /// A whole message of `len` bytes: pass `&buf[..len]` to [`Message::parse`].
    Message {
        /// Bytes of the message, header section and body.
        len: usize,
    },
}

/// Finds the next frame at the front of a TCP/TLS receive buffer. Content-Length is mandatory
/// on streams (§18.3); an error means the connection should be closed, as the framing is lost.
pub fn stream_frame(buf: &[u8]) -> Result<StreamFrame, ParseError> {
    match buf {
        [] | [b'\r'] | [b'\r', b'\n', b'\r'] => return Ok(StreamFrame::Incomplete),
        [b'\r', b'\n', b'\r', b'\n', ..] => {
            return Ok(StreamFrame::KeepAlive { len: 4, ping: true })
        }
        [b'\r', b'\n', ..] => {
            return Ok(StreamFrame::KeepAlive {
                len: 2,
                ping: false,
            })
        }
        [b'\n', ..] => {
            return Ok(StreamFrame::KeepAlive {
                len: 1,
                ping: false,
            })
        }
        [b'\r', ..] => return Err(ParseError::BareCr { line: 1 }),
        _ => {}
    }
    let window = &buf[..buf.len().min(MAX_MESSAGE_LEN)];
    let Some(head) = parse_head(window)? else {
        return if buf.len() >= MAX_MESSAGE_LEN {
            Err(ParseError::TooLarge {
                size: buf.len(),
                limit: MAX_MESSAGE_LEN,
            })
        } else {
            Ok(StreamFrame::Incomplete)
        };
    };
    let body = content_length(&head.headers)?.ok_or(ParseError::ContentLengthRequired)?;
    let len = head.len + body;
    if len > MAX_MESSAGE_LEN {
        return Err(ParseError::TooLarge {
            size: len,
            limit: MAX_MESSAGE_LEN,
        });
    }
    Ok(if buf.len() < len {
        StreamFrame::Incomplete
    } else {
        StreamFrame::Message { len }
    })
}

/// Builds the response to a request that [`Message::parse`] rejected, from its raw lines: the
/// status and reason of `err` (400 mostly, 505, 513), every Via, From, To (with a To tag when it
/// has none and can be parsed), Call-ID and `CSeq`, as received. Returns `None` when the bytes do
/// not start with a request line, the method is ACK (never answered, RFC 3261 §17.2.1), or one
/// of those fields cannot be found as a UTF-8 line: the driver then drops the message.
///
/// The To tag is derived from the bytes, so a retransmission gets the same response.
pub fn bad_request_response(bytes: &[u8], err: &ParseError) -> Option<Vec<u8>> {
    let bytes = &bytes[leading_crlf(bytes)..];
    let bytes = &bytes[..bytes.len().min(MAX_MESSAGE_LEN)];
    let mut lines = RawLines::new(bytes);
    let request_line = lines.next().and_then(|l| std::str::from_utf8(l).ok())?;
    // Tolerant on purpose: the request line may be what was wrong (RFC 4475 §3.1.2.10).
    let (method, rest) = request_line.split_once(' ')?;
    let version = rest.trim_end_matches([' ', '\t']).rsplit(' ').next()?;
    let is_sip = version.len() > 4 && has_sip_prefix(version);
    if !is_token(method) || method == "ACK" || !is_sip || request_line.contains('\0') {
        return None;
    }
    let mut vias = Vec::new();
    let mut wanted: [(&str, Option<String>); 4] = [
        ("From", None),
        ("To", None),
        ("Call-ID", None),
        ("CSeq", None),
    ];
    let mut logical: Option<String> = None;
    let mut finish = |line: Option<String>, vias: &mut Vec<String>| {
        let Some(line) = line else { return };
        let Some((name, _)) = line.split_once(':') else {
            return;
        };
        let name = name.trim_end_matches([' ', '\t']);
        if names_match(name, "Via") {
            vias.push(line);
        } else if let Some(slot) = wanted
            .iter_mut()
            .find(|(n, v)| v.is_none() && names_match(name, n))
        {
            slot.1 = Some(line);
        }
    };
    for (count, raw) in lines.enumerate() {
        if raw.is_empty() || count > MAX_HEADERS * 4 {
            break;
        }
        let text = std::str::from_utf8(raw)
            .ok()
            .filter(|t| !t.contains(['\0', '\r']));
        if raw.first().copied().is_some_and(is_ws) {
            if let (Some(l), Some(t)) = (logical.as_mut(), text) {
                l.push(' ');
                l.push_str(t.trim_matches([' ', '\t']));
            }
            continue;
        }
        finish(logical.take(), &mut vias);
        logical = text.map(str::to_owned);
    }
    finish(logical.take(), &mut vias);
    if vias.is_empty() || wanted.iter().any(|(_, v)| v.is_none()) {
        return None;
    }
    let mut out = format!("SIP/2.0 {} {}\r\n", err.status_code(), err.reason()).into_bytes();
    for via in &vias {
        out.extend_from_slice(via.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, line) in &wanted {
        let line = line.as_deref().unwrap_or_default();
        out.extend_from_slice(line.as_bytes());
        if *name == "To" {
            let value = line.split_once(':').map_or("", |(_, v)| v);
            if NameAddr::parse(value).is_ok_and(|to| to.tag().is_none()) {
                out.extend_from_slice(format!(";tag={:016x}", fnv1a(bytes)).as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(out)
}

/// FNV-1a, 64 bits: a stable, dependency-free digest for the To tag of a rejected request.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The RFC 3261 §21 reason phrase of a status code (RFC 3262, 3265, 3329, 4028, 5079 too).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 | 606 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        494 => "Security Agreement Required",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        _ => match status / 100 {
            1 => "Session Progress",
            2 => "OK",
            3 => "Redirection",
            4 => "Request Failure",
            5 => "Server Failure",
            _ => "Global Failure",
        },
    }
}

/// Number of CR/LF bytes before the start line (RFC 3261 §7.5).
fn leading_crlf(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count()
}

/// Physical lines of a byte buffer, split on LF with a trailing CR removed. The last piece
/// (without LF) is not yielded: it is incomplete.
struct RawLines<'a> {
    rest: &'a [u8],
    consumed: usize,
}

impl<'a> RawLines<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            consumed: 0,
        }
    }
}

impl<'a> Iterator for RawLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let nl = self.rest.iter().position(|&b| b == b'\n')?;
        let line = &self.rest[..nl];
        self.rest = &self.rest[nl + 1..];
        self.consumed += nl + 1;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// The start line and header section, with the byte length they occupy (empty line included).
struct Head<'a> {
    start_line: &'a str,
    headers: Headers,
    len: usize,
}

/// Checks one physical line: no NUL, no bare CR, UTF-8 (RFC 3261 §7.3.1, §25.1 `TEXT-UTF8`).
fn check_line(raw: &[u8], line: usize) -> Result<&str, ParseError> {
    if raw.len() > MAX_HEADER_LINE {
        return Err(ParseError::HeaderLineTooLong {
            line,
            limit: MAX_HEADER_LINE,
        });
    }
    if raw.contains(&0) {
        return Err(ParseError::NulByte { line });
    }
    if raw.contains(&b'\r') {
        return Err(ParseError::BareCr { line });
    }
    std::str::from_utf8(raw).map_err(|_| ParseError::InvalidUtf8 { line })
}

/// Parses the start line and header fields, unfolding continuation lines (§7.3.1). `Ok(None)`
/// when no empty line ends the header section yet.
fn parse_head(bytes: &[u8]) -> Result<Option<Head<'_>>, ParseError> {
    let mut lines = RawLines::new(bytes);
    let Some(first) = lines.next() else {
        return Ok(None);
    };
    let start_line = check_line(first, 1)?;
    let mut fields: Vec<Header> = Vec::new();
    let mut field_line = 0;
    let mut counted = 0;
    let mut line_no = 1;
    loop {
        let Some(raw) = lines.next() else {
            return Ok(None);
        };
        line_no += 1;
        if raw.is_empty() {
            break;
        }
        let text = check_line(raw, line_no)?;
        if raw.first().copied().is_some_and(is_ws) {
            // §7.3.1: a line starting with whitespace continues the previous field; the CRLF
            // and the whitespace become one SP.
            let Some(last) = fields.last_mut() else {
                return Err(ParseError::MalformedHeader { line: line_no });
            };
            let more = text.trim_matches([' ', '\t']);
            if !more.is_empty() {
                let name_len = last.name().len();
                let value = last.value_mut();
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
                if name_len + value.len() + 2 > MAX_HEADER_LINE {
                    return Err(ParseError::HeaderLineTooLong {
                        line: field_line,
                        limit: MAX_HEADER_LINE,
                    });
                }
            }
            continue;
        }
        let (name, value) = text
            .split_once(':')
            .ok_or(ParseError::MalformedHeader { line: line_no })?;
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(ParseError::MalformedHeader { line: line_no });
        }
        // Content-Length is not counted: the parser adds one when it is missing, and the
        // encoded message must parse again.
        if !names_match(name, "Content-Length") {
            counted += 1;
            if counted > MAX_HEADERS {
                return Err(ParseError::TooManyHeaders { limit: MAX_HEADERS });
            }
        }
        field_line = line_no;
        let value = value.trim_matches([' ', '\t']);
        // Measured as it is written back (`name: value`), so an encoded message parses again.
        if name.len() + value.len() + 2 > MAX_HEADER_LINE {
            return Err(ParseError::HeaderLineTooLong {
                line: line_no,
                limit: MAX_HEADER_LINE,
            });
        }
        fields.push(Header::new(name, value));
    }
    let mut headers = Headers::new();
    *headers.fields_mut() = fields;
    Ok(Some(Head {
        start_line,
        headers,
        len: lines.consumed,
    }))
}

enum StartLine {
    Request { method: Method, uri: Uri },
    Response { status: u16, reason: String },
}

/// Whether the text starts with `SIP/`, any case.
fn has_sip_prefix(s: &str) -> bool {
    s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
}

/// Checks `SIP-Version` (case-insensitive, §7.1): SIP/2.0 is accepted, another `SIP/x.y` is
/// [`ParseError::UnsupportedVersion`], anything else a malformed start line.
fn check_version(v: &str) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        Ok(())
    } else if v.len() > 4 && has_sip_prefix(v) {
        Err(ParseError::UnsupportedVersion)
    } else {
        Err(ParseError::MalformedStartLine)
    }
}

/// `Request-Line = Method SP Request-URI SP SIP-Version` (§7.1, exactly one SP each, RFC 4475
/// §3.1.2.9 and §3.1.2.10) or `Status-Line = SIP-Version SP Status-Code SP Reason-Phrase`
/// (§7.2; an empty reason, with or without its SP, is accepted as in RFC 4475 §3.1.1.13).
fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if has_sip_prefix(line) {
        let (version, rest) = line.split_once(' ').ok_or(ParseError::MalformedStartLine)?;
        check_version(version)?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::InvalidStatusCode);
        }
        let status: u16 = code.parse().map_err(|_| ParseError::InvalidStatusCode)?;
        if !(100..=699).contains(&status) {
            return Err(ParseError::InvalidStatusCode);
        }
        return Ok(StartLine::Response {
            status,
            reason: reason.to_owned(),
        });
    }
    let (method, rest) = line.split_once(' ').ok_or(ParseError::MalformedStartLine)?;
    let (uri, version) = rest
        .rsplit_once(' ')
        .ok_or(ParseError::MalformedStartLine)?;
    let method = Method::from_token(method).ok_or(ParseError::InvalidMethod)?;
    if uri.is_empty() || uri.starts_with(' ') || uri.ends_with(' ') || version.is_empty() {
        return Err(ParseError::MalformedStartLine);
    }
    check_version(version)?;
    let uri = Uri::parse(uri).map_err(ParseError::InvalidRequestUri)?;
    if uri.as_sip().and_then(super::uri::SipUri::headers).is_some() {
        return Err(ParseError::InvalidRequestUri(UriError::HeadersNotAllowed));
    }
    Ok(StartLine::Request { method, uri })
}

/// The Content-Length value; a second Content-Length field is an error (its framing is ambiguous).
fn content_length(headers: &Headers) -> Result<Option<usize>, ParseError> {
    if headers.get_all("Content-Length").nth(1).is_some() {
        return Err(ParseError::DuplicateHeader {
            name: "Content-Length",
        });
    }
    headers
        .get("Content-Length")
        .map(parse_content_length)
        .transpose()
        .map_err(|source| ParseError::InvalidHeader {
            name: "Content-Length",
            source,
        })
}

/// Makes the Content-Length field say `len`, appending one when there is none.
fn normalize_content_length(headers: &mut Headers, len: usize) {
    let len = len.to_string();
    if let Some(h) = headers
        .fields_mut()
        .iter_mut()
        .find(|h| h.is("Content-Length"))
    {
        *h.value_mut() = len;
    } else {
        headers.push("Content-Length", len);
    }
}

/// The checks of RFC 3261 §8.1.1 / §8.2 a message must pass before any layer looks at it:
/// single-valued fields appear once, the mandatory ones are present and parse, and for a request
/// the `CSeq` method matches (§8.2.3). Every Via, Contact, Route and Record-Route value and the
/// optional Max-Forwards and Content-Type are parsed too, so later layers can rely on them.
fn validate(headers: &Headers, method: Option<&Method>) -> Result<(), ParseError> {
    for name in [
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Max-Forwards",
        "Content-Type",
    ] {
        if headers.get_all(name).nth(1).is_some() {
            return Err(ParseError::DuplicateHeader { name });
        }
    }
    if headers.values("Via").len() > MAX_VIA {
        return Err(ParseError::TooManyVia { limit: MAX_VIA });
    }
    if headers.vias()?.is_empty() {
        return Err(ParseError::MissingHeader { name: "Via" });
    }
    headers.from()?;
    headers.to()?;
    headers.call_id()?;
    let cseq = headers.cseq()?;
    if let Some(method) = method {
        if &cseq.method != method {
            return Err(ParseError::CSeqMethodMismatch);
        }
    }
    headers.max_forwards()?;
    headers.contacts()?;
    headers.routes()?;
    headers.record_routes()?;
    headers.content_type()?;
    Ok(())
}

/// Writes text with CR, LF and NUL replaced by SP, so that no value can end a line early.
fn write_sanitized(out: &mut Vec<u8>, text: &str) {
    out.extend(text.bytes().map(|b| {
        if matches!(b, b'\r' | b'\n' | 0) {
            b' '
        } else {
            b
        }
    }));
}

/// Header fields, the empty line and the body. Content-Length is written with the body's
/// length where the first such field stands (others dropped), or last when there is none.
fn encode_tail(headers: &Headers, body: &[u8], out: &mut Vec<u8>) {
    let len = body.len().to_string();
    let mut wrote_length = false;
    for h in headers {
        let is_length = h.is("Content-Length");
        if is_length && wrote_length {
            continue;
        }
        write_sanitized(out, h.name());
        out.extend_from_slice(b": ");
        if is_length {
            out.extend_from_slice(len.as_bytes());
            wrote_length = true;
        } else {
            write_sanitized(out, h.value());
        }
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(len.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{HeaderError, Host, Transport, Via};

    /// Writes a message with LF line ends as the CRLF wire form.
    fn crlf(text: &str) -> Vec<u8> {
        text.replace('\n', "\r\n").into_bytes()
    }

    fn request(bytes: &[u8]) -> Request {
        match Message::parse(bytes) {
            Ok(Message::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn response(bytes: &[u8]) -> Response {
        match Message::parse(bytes) {
            Ok(Message::Response(r)) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    const SDP: &str = "v=0\n\
o=carrier 2890844526 2890844526 IN IP4 198.51.100.10\n\
s=-\n\
c=IN IP4 198.51.100.10\n\
t=0 0\n\
m=audio 49170 RTP/SAVP 0 8 101\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\n\
a=rtpmap:101 telephone-event/8000\n";

    fn invite() -> Vec<u8> {
        let body = SDP.replace('\n', "\r\n");
        let mut head = crlf(&format!(
            "INVITE sips:+15551230000@pbx.customer.example;user=phone SIP/2.0\n\
Via: SIP/2.0/TLS sbc1.carrier.example:5061;branch=z9hG4bK74bf9;rport\n\
Via: SIP/2.0/TLS [2001:db8::20]:5061;branch=z9hG4bK1d2;received=2001:db8::20\n\
Max-Forwards: 69\n\
Record-Route: <sip:sbc1.carrier.example;transport=tls;lr>\n\
From: \"Alice Caller\" <sips:+15559870000@carrier.example>;tag=9fxced76sl\n\
To: <sips:+15551230000@customer.example>\n\
Call-ID: 3848276298220188511@carrier.example\n\
CSeq: 314159 INVITE\n\
Contact: <sips:+15559870000@sbc1.carrier.example:5061;transport=tls>\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE\n\
Supported: 100rel, timer\n\
Content-Type: application/sdp\n\
Content-Length: {}\n\
\n",
            body.len()
        ));
        head.extend_from_slice(body.as_bytes());
        head
    }

    #[test]
    fn realistic_invite_with_sdp() {
        let bytes = invite();
        let r = request(&bytes);
        assert_eq!(r.method, Method::Invite);
        assert!(r.uri.is_sips());
        assert_eq!(r.uri.user(), Some("+15551230000"));
        assert_eq!(r.uri.param("user").and_then(Param::value), Some("phone"));
        let vias = r.headers.vias().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].transport(), &Transport::Tls);
        assert_eq!(vias[0].port(), Some(5061));
        assert_eq!(vias[1].host(), &Host::Ipv6("2001:db8::20".parse().unwrap()));
        assert_eq!(r.headers.max_forwards(), Ok(Some(69)));
        assert_eq!(r.headers.from().unwrap().tag(), Some("9fxced76sl"));
        assert_eq!(r.headers.to().unwrap().tag(), None);
        assert_eq!(
            r.headers.call_id(),
            Ok("3848276298220188511@carrier.example")
        );
        assert_eq!(r.headers.cseq().unwrap().seq, 314_159);
        assert_eq!(r.headers.values("Allow").len(), 7);
        assert!(r.headers.content_type().unwrap().unwrap().is_sdp());
        assert_eq!(
            r.headers.record_routes().unwrap()[0].uri().transport(),
            Some(Transport::Tls)
        );
        assert_eq!(r.body, SDP.replace('\n', "\r\n").into_bytes());
        // Nothing was changed, so encoding gives back the received bytes.
        assert_eq!(r.to_bytes(), bytes);
        assert_eq!(Message::Request(r).encoded_len(), bytes.len());
    }

    use crate::sip::Param;

    #[test]
    fn responses_parse_and_round_trip() {
        let bytes = crlf(
            "SIP/2.0 180 Ringing\n\
Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds8;received=192.0.2.4\n\
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\n\
Call-ID: a84b4c76e66710\n\
Contact: <sip:bob@192.0.2.4>\n\
CSeq: 314159 INVITE\n\
Content-Length: 0\n\
\n",
        );
        let r = response(&bytes);
        assert_eq!(r.status, 180);
        assert_eq!(r.reason, "Ringing");
        assert!(r.is_provisional());
        assert_eq!(r.headers.to().unwrap().tag(), Some("a6c85cf"));
        assert_eq!(r.to_bytes(), bytes);
        assert_eq!(Message::Response(r).encoded_len(), bytes.len());
        // Any SIP/2.0 case is accepted; the reason phrase is free text.
        let r = response(&crlf(
            "sip/2.0 603 Decline: try later, please\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\nTo: <sip:c@d>;tag=2\nCall-ID: x\nCSeq: 1 INVITE\n\n",
        ));
        assert_eq!(r.reason, "Decline: try later, please");
    }

    #[test]
    fn compact_forms_are_found_and_kept() {
        let bytes = crlf(
            "OPTIONS sip:carol@chicago.example.com SIP/2.0\n\
v: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKhjhs8ass877\n\
t: <sip:carol@chicago.example.com>\n\
f: Alice <sip:alice@atlanta.example.com>;tag=1928301774\n\
i: a84b4c76e66710\n\
CSeq: 63104 OPTIONS\n\
m: <sip:alice@pc33.example.com>\n\
k: 100rel\n\
c: application/sdp\n\
l: 0\n\
\n",
        );
        let r = request(&bytes);
        assert_eq!(r.headers.call_id(), Ok("a84b4c76e66710"));
        assert_eq!(r.headers.get("Supported"), Some("100rel"));
        assert_eq!(r.headers.contacts().unwrap().len(), 1);
        assert_eq!(r.headers.content_length(), Ok(Some(0)));
        assert_eq!(r.to_bytes(), bytes);
    }

    #[test]
    fn folded_lines_are_unfolded() {
        let r = request(&crlf(
            "BYE sip:bob@192.0.2.4 SIP/2.0\n\
Via: SIP/2.0/UDP pc33.example.com\n\t;branch=z9hG4bKnashds7\n\
Subject: I know you're there,\n   pick up the phone\n   and talk to me!\n\
From:\n <sip:alice@atlanta.example.com>;tag=1\n\
To: <sip:bob@biloxi.example.com>;tag=2\n\
Call-ID: f81d4\n\
CSeq: 2 BYE\n\
\n",
        ));
        assert_eq!(
            r.headers.get("Subject"),
            Some("I know you're there, pick up the phone and talk to me!")
        );
        assert_eq!(
            r.headers.top_via().unwrap().branch(),
            Some("z9hG4bKnashds7")
        );
        assert_eq!(
            r.headers.get("From"),
            Some("<sip:alice@atlanta.example.com>;tag=1")
        );
    }

    #[test]
    fn multi_value_fields_and_combined_via() {
        let r = request(&crlf(
            "REGISTER sip:registrar.example.com SIP/2.0\n\
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com;branch=z9hG4bK2\n\
From: <sip:bob@example.com>;tag=456248\n\
To: <sip:bob@example.com>\n\
Call-ID: 843817637684230@998sdasdh09\n\
CSeq: 1826 REGISTER\n\
Contact: \"Mr. Watson, at home\" <sip:watson@192.0.2.1>;q=0.7;expires=3600, <mailto:watson@example.com>;q=0.1\n\
Contact: <sip:watson@[2001:db8::1]:5070;ob>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1\n\
Authorization: Digest username=\"bob\", realm=\"example.com\", nonce=\"ea9c8e88df84f1cec4341ae6cbe5a359\", uri=\"sip:example.com\", response=\"dfe56131d1958046689d83306477ecc\"\n\
Expires: 7200\n\
Content-Length: 0\n\
\n",
        ));
        assert_eq!(r.headers.vias().unwrap().len(), 2);
        let contacts = r.headers.contacts().unwrap();
        assert_eq!(contacts.len(), 3);
        let crate::sip::Contact::Address(first) = &contacts[0] else {
            panic!("address expected")
        };
        assert_eq!(first.display_name().unwrap().text(), "Mr. Watson, at home");
        assert_eq!(first.expires(), Some(Ok(3600)));
        let crate::sip::Contact::Address(third) = &contacts[2] else {
            panic!("address expected")
        };
        assert_eq!(
            third.uri().host(),
            Some(&Host::Ipv6("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(third.param("reg-id").and_then(Param::value), Some("1"));
        assert_eq!(r.headers.values("Authorization").len(), 1);
        assert_eq!(r.headers.expires(), Ok(Some(7200)));
    }

    #[test]
    fn content_length_rules() {
        let head = "MESSAGE sip:a@b.example SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:c@d>;tag=1\nTo: <sip:a@b.example>\nCall-ID: m1\nCSeq: 1 MESSAGE\n";
        // Datagram without Content-Length: the rest is the body, and a Content-Length is added.
        let mut bytes = crlf(head);
        bytes.extend_from_slice(b"\r\nhello");
        let r = request(&bytes);
        assert_eq!(r.body, b"hello");
        assert_eq!(r.headers.get("Content-Length"), Some("5"));
        // Bytes after Content-Length are discarded (§18.3).
        let mut bytes = crlf(&format!("{head}Content-Length: 2\n\n"));
        bytes.extend_from_slice(b"hello");
        assert_eq!(request(&bytes).body, b"he");
        // A shorter body is an error.
        let mut bytes = crlf(&format!("{head}Content-Length: 9\n\n"));
        bytes.extend_from_slice(b"hello");
        assert_eq!(
            Message::parse(&bytes),
            Err(ParseError::BodyTooShort {
                declared: 9,
                available: 5
            })
        );
        // Two Content-Length fields are ambiguous framing.
        let bytes = crlf(&format!("{head}Content-Length: 0\nl: 0\n\n"));
        assert_eq!(
            Message::parse(&bytes),
            Err(ParseError::DuplicateHeader {
                name: "Content-Length"
            })
        );
        // The encoder writes the real length whatever the field says.
        let mut r = request(&crlf(&format!("{head}Content-Length: 0\n\n")));
        r.body = b"changed body".to_vec();
        r.headers.set("Content-Length", "999");
        let out = r.to_bytes();
        assert!(String::from_utf8_lossy(&out).contains("Content-Length: 12\r\n\r\nchanged body"));
        assert_eq!(Message::Request(r.clone()).encoded_len(), out.len());
        assert_eq!(request(&out).body, b"changed body");
    }

    #[test]
    fn requests_are_built_and_answered() {
        let uri = Uri::parse("sip:pbx.customer.example;transport=udp").unwrap();
        let via = Via::new(
            Transport::Udp,
            Host::Domain("b2bua.example.net".into()),
            Some(5060),
            "z9hG4bKb2b1",
        );
        let req = Request::new(Method::Options, uri)
            .with_header("Via", via.to_string())
            .with_header("Max-Forwards", "70")
            .with_header("From", "<sip:ping@b2bua.example.net>;tag=k1")
            .with_header("To", "<sip:pbx.customer.example>")
            .with_header("Call-ID", "opt-1@b2bua.example.net")
            .with_header("CSeq", "1 OPTIONS")
            .with_header("Timestamp", "54");
        let bytes = req.to_bytes();
        assert_eq!(
            bytes,
            crlf(
                "OPTIONS sip:pbx.customer.example;transport=udp SIP/2.0\n\
Via: SIP/2.0/UDP b2bua.example.net:5060;branch=z9hG4bKb2b1\n\
Max-Forwards: 70\n\
From: <sip:ping@b2bua.example.net>;tag=k1\n\
To: <sip:pbx.customer.example>\n\
Call-ID: opt-1@b2bua.example.net\n\
CSeq: 1 OPTIONS\n\
Timestamp: 54\n\
Content-Length: 0\n\n"
            )
        );
        let parsed = request(&bytes);
        let mut ok = Response::from_request(&parsed, 200, None).with_to_tag("t9");
        assert_eq!(ok.reason, "OK");
        assert_eq!(
            ok.to_bytes(),
            crlf(
                "SIP/2.0 200 OK\n\
Via: SIP/2.0/UDP b2bua.example.net:5060;branch=z9hG4bKb2b1\n\
From: <sip:ping@b2bua.example.net>;tag=k1\n\
To: <sip:pbx.customer.example>;tag=t9\n\
Call-ID: opt-1@b2bua.example.net\n\
CSeq: 1 OPTIONS\n\
Content-Length: 0\n\n"
            )
        );
        assert_eq!(
            ok.set_to_tag("bad tag"),
            Err(ParseError::InvalidHeader {
                name: "To",
                source: HeaderError::InvalidParam
            })
        );
        let trying = Response::from_request(&parsed, 100, None);
        assert_eq!(trying.headers.get("Timestamp"), Some("54"));
        let sdp = Request::new(Method::Invite, Uri::parse("sip:x@y.example").unwrap())
            .with_body("application/sdp", b"v=0\r\n".to_vec());
        assert!(String::from_utf8_lossy(&sdp.to_bytes())
            .ends_with("Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"));
    }

    #[test]
    fn encoder_never_writes_line_breaks_from_values() {
        let mut r = Response::new(400, Some("Bad\r\nInjected: yes"));
        r.headers.push("X-Note", "a\r\nVia: evil");
        let out = String::from_utf8(r.to_bytes()).unwrap();
        assert_eq!(
            out,
            "SIP/2.0 400 Bad  Injected: yes\r\nX-Note: a  Via: evil\r\nContent-Length: 0\r\n\r\n"
        );
    }

    fn minimal(extra: &str) -> Vec<u8> {
        crlf(&format!(
            "OPTIONS sip:a@b.example SIP/2.0\nVia: SIP/2.0/UDP h.example;branch=z9hG4bK1\nFrom: <sip:c@d.example>;tag=1\nTo: <sip:a@b.example>\nCall-ID: lim\nCSeq: 1 OPTIONS\n{extra}\n"
        ))
    }

    #[test]
    fn limits_are_enforced() {
        // Whole message.
        let mut big = minimal("");
        big.resize(MAX_MESSAGE_LEN + 1, b'x');
        assert_eq!(
            Message::parse(&big),
            Err(ParseError::TooLarge {
                size: MAX_MESSAGE_LEN + 1,
                limit: MAX_MESSAGE_LEN
            })
        );
        // A message that fits as received but not once written back (an SP after each colon).
        let fields = (0..200)
            .map(|i| format!("X-{i:03}:v\n"))
            .collect::<Vec<_>>()
            .concat();
        let mut near = minimal(&fields);
        let body_len = MAX_MESSAGE_LEN - near.len();
        near.resize(MAX_MESSAGE_LEN, b'b');
        assert!(matches!(
            Message::parse(&near),
            Err(ParseError::TooLarge { .. })
        ));
        near.truncate(near.len() - 250);
        let fits = request(&near);
        assert_eq!(fits.body.len(), body_len - 250);
        assert_eq!(request(&fits.to_bytes()), fits);
        // Header count: 5 mandatory + 251 extensions = 256 is fine (Content-Length is not
        // counted, the parser adds it), one more is not.
        let fields = |n: usize| {
            (0..n)
                .map(|i| format!("X-H{i}: {i}\n"))
                .collect::<Vec<_>>()
                .concat()
        };
        let max = request(&minimal(&fields(251)));
        assert_eq!(max.headers.len(), MAX_HEADERS + 1);
        assert_eq!(request(&max.to_bytes()), max);
        assert!(Message::parse(&minimal(&format!("{}l: 0\n", fields(251)))).is_ok());
        assert_eq!(
            Message::parse(&minimal(&fields(252))),
            Err(ParseError::TooManyHeaders { limit: MAX_HEADERS })
        );
        // Field length, physical and after unfolding.
        let long = format!("X-Long: {}\n", "a".repeat(MAX_HEADER_LINE));
        assert_eq!(
            Message::parse(&minimal(&long)),
            Err(ParseError::HeaderLineTooLong {
                line: 7,
                limit: MAX_HEADER_LINE
            })
        );
        let folded = format!("X-Long: a\n {}\n {}\n", "b".repeat(5000), "c".repeat(5000));
        assert_eq!(
            Message::parse(&minimal(&folded)),
            Err(ParseError::HeaderLineTooLong {
                line: 7,
                limit: MAX_HEADER_LINE
            })
        );
        // Via count.
        let vias = |n: usize| {
            (0..n)
                .map(|i| format!("Via: SIP/2.0/UDP p{i}.example;branch=z9hG4bK{i}\n"))
                .collect::<Vec<_>>()
                .concat()
        };
        assert!(Message::parse(&minimal(&vias(63))).is_ok());
        assert_eq!(
            Message::parse(&minimal(&vias(64))),
            Err(ParseError::TooManyVia { limit: MAX_VIA })
        );
    }

    #[test]
    fn byte_level_errors() {
        assert_eq!(Message::parse(b""), Err(ParseError::Empty));
        assert_eq!(Message::parse(b"\r\n\r\n"), Err(ParseError::Empty));
        assert_eq!(
            Message::parse(&minimal("")[..60]),
            Err(ParseError::Unterminated)
        );
        assert_eq!(
            Message::parse(&minimal("X: a\0b\n")),
            Err(ParseError::NulByte { line: 7 })
        );
        assert_eq!(
            Message::parse(&minimal("X: a\rb\n")),
            Err(ParseError::BareCr { line: 7 })
        );
        let mut bad_utf8 = minimal("X: \u{e9}\n");
        let at = bad_utf8.iter().position(|&b| b == 0xc3).unwrap();
        bad_utf8[at] = 0xff;
        assert_eq!(
            Message::parse(&bad_utf8),
            Err(ParseError::InvalidUtf8 { line: 7 })
        );
        let mut nul_start = minimal("");
        nul_start[3] = 0;
        assert_eq!(
            Message::parse(&nul_start),
            Err(ParseError::NulByte { line: 1 })
        );
        // UTF-8 in values and bytes of any kind in the body are fine.
        let mut ok = minimal("Subject: caf\u{e9}\n");
        ok.extend_from_slice(&[0, 0xff, 0xfe]);
        let r = request(&ok);
        assert_eq!(r.headers.get("Subject"), Some("caf\u{e9}"));
        assert_eq!(r.body, [0, 0xff, 0xfe]);
    }

    #[test]
    fn header_and_start_line_errors() {
        assert_eq!(
            Message::parse(&minimal("NoColon\n")),
            Err(ParseError::MalformedHeader { line: 7 })
        );
        assert_eq!(
            Message::parse(&minimal("Bad Name: x\n")),
            Err(ParseError::MalformedHeader { line: 7 })
        );
        let leading_fold = crlf("OPTIONS sip:a@b SIP/2.0\n folded\n\n");
        assert_eq!(
            Message::parse(&leading_fold),
            Err(ParseError::MalformedHeader { line: 2 })
        );
        let line = |start: &str| {
            let mut m = minimal("");
            let end = m.iter().position(|&b| b == b'\r').unwrap();
            m.splice(..end, start.bytes());
            Message::parse(&m)
        };
        assert_eq!(
            line("OPTIONS sip:a@b.example SIP/3.0"),
            Err(ParseError::UnsupportedVersion)
        );
        assert_eq!(
            line("OPTIONS sip:a@b.example HTTP/1.1"),
            Err(ParseError::MalformedStartLine)
        );
        assert_eq!(line("OPTIONS"), Err(ParseError::MalformedStartLine));
        assert_eq!(
            line("OPTIONS sip:a@b.example"),
            Err(ParseError::MalformedStartLine)
        );
        assert_eq!(
            line("OPT/IONS sip:a@b.example SIP/2.0"),
            Err(ParseError::InvalidMethod)
        );
        assert_eq!(
            line("OPTIONS sip:a@b.example:x SIP/2.0"),
            Err(ParseError::InvalidRequestUri(UriError::InvalidPort))
        );
        assert_eq!(
            line("SIP/2.0 99 Too Low"),
            Err(ParseError::InvalidStatusCode)
        );
        assert_eq!(
            line("SIP/2.0 700 Too High"),
            Err(ParseError::InvalidStatusCode)
        );
        assert_eq!(line("SIP/2.0 20x OK"), Err(ParseError::InvalidStatusCode));
        assert_eq!(line("SIP/2.0"), Err(ParseError::MalformedStartLine));
        assert!(matches!(line("SIP/2.0 200 OK"), Ok(Message::Response(_))));
    }

    #[test]
    fn mandatory_and_single_valued_fields() {
        let base = [
            "Via: SIP/2.0/UDP h.example;branch=z9hG4bK1",
            "From: <sip:c@d.example>;tag=1",
            "To: <sip:a@b.example>",
            "Call-ID: m1",
            "CSeq: 1 OPTIONS",
        ];
        for (skip, name) in ["Via", "From", "To", "Call-ID", "CSeq"]
            .into_iter()
            .enumerate()
        {
            let fields: String = base
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, f)| format!("{f}\n"))
                .collect::<Vec<_>>()
                .concat();
            let bytes = crlf(&format!("OPTIONS sip:a@b.example SIP/2.0\n{fields}\n"));
            assert_eq!(
                Message::parse(&bytes),
                Err(ParseError::MissingHeader { name }),
                "{name}"
            );
        }
        assert_eq!(
            Message::parse(&minimal("t: <sip:other@b.example>\n")),
            Err(ParseError::DuplicateHeader { name: "To" })
        );
        assert_eq!(
            Message::parse(&minimal("Max-Forwards: 70\nMax-Forwards: 69\n")),
            Err(ParseError::DuplicateHeader {
                name: "Max-Forwards"
            })
        );
        assert_eq!(
            Message::parse(&minimal("Max-Forwards: 256\n")),
            Err(ParseError::InvalidHeader {
                name: "Max-Forwards",
                source: HeaderError::InvalidNumber
            })
        );
        assert_eq!(
            Message::parse(&minimal("Route: <sip:p1.example;lr\n")),
            Err(ParseError::InvalidHeader {
                name: "Route",
                source: HeaderError::InvalidNameAddr
            })
        );
        assert_eq!(
            Message::parse(&minimal("Content-Type: sdp\n")),
            Err(ParseError::InvalidHeader {
                name: "Content-Type",
                source: HeaderError::InvalidMediaType
            })
        );
        assert_eq!(
            Message::parse(&minimal("Contact: *\nContact: <sip:a@b>\n")),
            Err(ParseError::InvalidHeader {
                name: "Contact",
                source: HeaderError::WildcardMixed
            })
        );
        let mut star = minimal("Contact: *\nExpires: 0\n");
        let first = star.iter().position(|&b| b == b' ').unwrap();
        star.splice(..first, *b"REGISTER");
        let star = String::from_utf8(star)
            .unwrap()
            .replace("1 OPTIONS", "1 REGISTER");
        assert_eq!(
            request(star.as_bytes()).headers.contacts(),
            Ok(vec![crate::sip::Contact::Wildcard])
        );
        // Max-Forwards is optional.
        assert_eq!(request(&minimal("")).headers.max_forwards(), Ok(None));
    }

    #[test]
    fn stream_framing() {
        let msg = minimal("Content-Length: 4\n");
        let mut buf = b"\r\n\r\n".to_vec();
        assert_eq!(
            stream_frame(&buf),
            Ok(StreamFrame::KeepAlive { len: 4, ping: true })
        );
        assert_eq!(
            stream_frame(b"\r\n"),
            Ok(StreamFrame::KeepAlive {
                len: 2,
                ping: false
            })
        );
        assert_eq!(stream_frame(b"\r\n\r"), Ok(StreamFrame::Incomplete));
        assert_eq!(stream_frame(b"\rX"), Err(ParseError::BareCr { line: 1 }));
        buf.clear();
        buf.extend_from_slice(&msg);
        assert_eq!(
            stream_frame(&buf[..msg.len() - 10]),
            Ok(StreamFrame::Incomplete)
        );
        assert_eq!(stream_frame(&buf), Ok(StreamFrame::Incomplete));
        buf.extend_from_slice(b"bodyNEXT");
        assert_eq!(
            stream_frame(&buf),
            Ok(StreamFrame::Message { len: msg.len() + 4 })
        );
        assert_eq!(request(&buf[..msg.len() + 4]).body, b"body");
        assert_eq!(
            stream_frame(&minimal("")),
            Err(ParseError::ContentLengthRequired)
        );
        assert_eq!(
            stream_frame(&minimal("Content-Length: 70000\n")),
            Err(ParseError::TooLarge {
                size: minimal("Content-Length: 70000\n").len() + 70000,
                limit: MAX_MESSAGE_LEN
            })
        );
        let endless = vec![b'a'; MAX_MESSAGE_LEN];
        assert_eq!(
            stream_frame(&endless),
            Err(ParseError::TooLarge {
                size: MAX_MESSAGE_LEN,
                limit: MAX_MESSAGE_LEN
            })
        );
    }

    #[test]
    fn malformed_requests_get_a_400_with_the_reason() {
        let bytes = crlf(
            "INVITE sip:bob@biloxi.example.com SIP/2.0\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776\n\
v: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK1\n\
Max-Forwards: 70\n\
To: Bob\n <sip:bob@biloxi.example.com>\n\
From: <sip:alice@atlanta.example.com>;tag=1928\n\
Call-ID: a84b4c76e66710\n\
CSeq: 1 BYE\n\
Content-Length: 0\n\n",
        );
        let err = Message::parse(&bytes).unwrap_err();
        assert_eq!(err, ParseError::CSeqMethodMismatch);
        let answer = bad_request_response(&bytes, &err).unwrap();
        let tag = format!("{:016x}", fnv1a(&bytes));
        assert_eq!(
            String::from_utf8(answer.clone()).unwrap(),
            format!(
                "SIP/2.0 400 CSeq Method Mismatch\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776\r\n\
v: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK1\r\n\
From: <sip:alice@atlanta.example.com>;tag=1928\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag={tag}\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 1 BYE\r\n\
Content-Length: 0\r\n\r\n"
            )
        );
        // The answer itself is a valid response.
        assert_eq!(response(&answer).status, 400);
        // Same bytes, same answer (retransmissions).
        assert_eq!(bad_request_response(&bytes, &err), Some(answer));
    }

    #[test]
    fn no_answer_for_ack_responses_or_unusable_requests() {
        let ack = crlf("ACK sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:c@d>;tag=1\nTo: <sip:a@b>\nCall-ID: x\nCSeq: 1 INVITE\n\n");
        let err = Message::parse(&ack).unwrap_err();
        assert_eq!(err, ParseError::CSeqMethodMismatch);
        assert_eq!(bad_request_response(&ack, &err), None);
        let resp = crlf("SIP/2.0 200 OK\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:c@d>;tag=1\nTo: <sip:a@b>\nCall-ID: x\nCSeq: x INVITE\n\n");
        let err = Message::parse(&resp).unwrap_err();
        assert_eq!(bad_request_response(&resp, &err), None);
        let no_call_id = crlf("BYE sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:c@d>;tag=1\nTo: <sip:a@b>\nCSeq: 1 BYE\n\n");
        let err = Message::parse(&no_call_id).unwrap_err();
        assert_eq!(err, ParseError::MissingHeader { name: "Call-ID" });
        assert_eq!(bad_request_response(&no_call_id, &err), None);
        assert_eq!(
            bad_request_response(b"\x16\x03\x01\x02\x00", &ParseError::Empty),
            None
        );
    }

    #[test]
    fn methods() {
        assert_eq!(Method::from_token("INVITE"), Some(Method::Invite));
        assert_eq!(
            Method::from_token("invite"),
            Some(Method::Extension("invite".into()))
        );
        assert_eq!(
            Method::from_token("REFER")
                .map(|m| m.to_string())
                .as_deref(),
            Some("REFER")
        );
        assert_eq!(Method::from_token("BAD METHOD"), None);
        assert_eq!(Method::from_token(""), None);
        assert_eq!(reason_phrase(486), "Busy Here");
        assert_eq!(reason_phrase(499), "Request Failure");
    }
}
