//! Stream framing of SIP over TCP and TLS (RFC 3261 §18.3) and the RFC 5626 §3.5.1 CRLF
//! keepalive, IO-free.
//!
//! A byte stream carries SIP messages back to back; the only way to find where one ends is the
//! empty line closing the header section plus the `Content-Length` body that follows it. This
//! module owns exactly that question ("how long is the next message in this buffer?") and the
//! keepalive bytes that may sit between messages. It deliberately does not parse SIP: the
//! transport must cut messages before the SIP codec sees them, and it must stay independent of
//! that codec. It is hand-written because it is small, must enforce our own size limits before
//! any allocation grows, and must be lenient in exactly the ways RFC 3261 §7.5 asks (leading
//! CRLFs ignored, bare LF line ends tolerated).
//!
//! The one other piece of byte-level SIP the transport needs lives here too:
//! [`rewrite_top_via_transport`], which flips `SIP/2.0/UDP` to `SIP/2.0/TCP` in the top Via
//! when a large request moves from UDP to TCP (RFC 3261 §18.1.1). Both names are three bytes,
//! so the message length (and any `Content-Length`) is unchanged.

use thiserror::Error;

/// Size limits applied while framing a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramingLimits {
    /// Longest header section (start line, headers and the closing empty line).
    pub max_header_bytes: usize,
    /// Largest `Content-Length` accepted.
    pub max_body_bytes: usize,
}

impl FramingLimits {
    /// The largest message these limits let through.
    pub fn max_message_bytes(&self) -> usize {
        self.max_header_bytes.saturating_add(self.max_body_bytes)
    }
}

impl Default for FramingLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// What sits at the start of a stream receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete SIP message of this many bytes (headers and body).
    Message(usize),
    /// An RFC 5626 §3.5.1 keepalive ping (`CRLF CRLF`, 4 bytes): consume it and answer with a
    /// single CRLF pong.
    KeepalivePing,
    /// A lone CRLF (an RFC 5626 pong, or a stray line end that RFC 3261 §7.5 says to ignore
    /// before a start line), or a bare LF: consume this many bytes silently.
    Skip(usize),
}

impl Frame {
    /// Bytes to drop from the front of the buffer once this frame is handled.
    pub fn consumed(self) -> usize {
        match self {
            Frame::Message(len) | Frame::Skip(len) => len,
            Frame::KeepalivePing => PING.len(),
        }
    }
}

/// The keepalive ping of RFC 5626 §3.5.1.
pub const PING: &[u8] = b"\r\n\r\n";
/// The keepalive pong of RFC 5626 §3.5.1.
pub const PONG: &[u8] = b"\r\n";

/// Why a stream cannot be framed; the connection must be closed (RFC 3261 §18.3: without a
/// usable `Content-Length` the stream cannot be resynchronised).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    /// The header section is longer than the limit (or no end of headers within the limit).
    #[error("SIP header section longer than {limit} bytes")]
    HeadersTooLarge { limit: usize },
    /// `Content-Length` announces a body above the limit.
    #[error("SIP body of {length} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { length: u64, limit: usize },
    /// A message on a stream without `Content-Length` (RFC 3261 §18.3 makes it mandatory).
    #[error("SIP message on a stream without Content-Length")]
    MissingContentLength,
    /// `Content-Length` is not a decimal number.
    #[error("invalid Content-Length value {value:?}")]
    InvalidContentLength { value: String },
    /// Two `Content-Length` headers that disagree.
    #[error("conflicting Content-Length headers: {first} and {second}")]
    ConflictingContentLength { first: u64, second: u64 },
}

/// Finds the next frame at the start of `buf`: `Ok(None)` means more bytes are needed.
pub fn next_frame(buf: &[u8], limits: &FramingLimits) -> Result<Option<Frame>, FramingError> {
    // RFC 5626 §3.5.1 keepalives and RFC 3261 §7.5 "ignore any CRLF before the start-line".
    match buf {
        // Empty, or what could still become a CRLFCRLF ping: wait for more.
        [] | [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Ok(None),
        [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Some(Frame::KeepalivePing)),
        [b'\r', b'\n', ..] => return Ok(Some(Frame::Skip(2))),
        // A bare LF, or a CR not followed by LF: neither can start a message; drop it like a
        // stray line end.
        [b'\n' | b'\r', ..] => return Ok(Some(Frame::Skip(1))),
        _ => {}
    }

    let Some(header_len) = end_of_headers(buf) else {
        if buf.len() > limits.max_header_bytes {
            return Err(FramingError::HeadersTooLarge {
                limit: limits.max_header_bytes,
            });
        }
        return Ok(None);
    };
    if header_len > limits.max_header_bytes {
        return Err(FramingError::HeadersTooLarge {
            limit: limits.max_header_bytes,
        });
    }
    let body_len = content_length(&buf[..header_len])?.ok_or(FramingError::MissingContentLength)?;
    let body_len = usize::try_from(body_len)
        .ok()
        .filter(|&len| len <= limits.max_body_bytes)
        .ok_or(FramingError::BodyTooLarge {
            length: body_len,
            limit: limits.max_body_bytes,
        })?;
    let total = header_len + body_len;
    Ok((buf.len() >= total).then_some(Frame::Message(total)))
}

/// Length of the header section including the empty line, if complete. The empty line is a
/// line end right after a line end: CRLF CRLF, or (tolerated) LF LF, LF CRLF.
fn end_of_headers(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = buf[from..].iter().position(|&b| b == b'\n') {
        let lf = from + pos;
        match buf.get(lf + 1..) {
            Some([b'\n', ..]) => return Some(lf + 2),
            Some([b'\r', b'\n', ..]) => return Some(lf + 3),
            _ => from = lf + 1,
        }
    }
    None
}

/// The `Content-Length` (or compact `l`, RFC 3261 §7.3.3) of a header section; `None` when
/// absent. Header names are case-insensitive and may be followed by whitespace before the colon
/// (RFC 3261 §7.3.1).
fn content_length(headers: &[u8]) -> Result<Option<u64>, FramingError> {
    let mut found: Option<u64> = None;
    // The first line is the start line; continuation lines (leading SP/HTAB) never start a
    // header, so looking at line starts only is enough.
    for line in headers.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim_end(&line[..colon]);
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = trim(&line[colon + 1..]);
        let length = parse_decimal(value).ok_or_else(|| FramingError::InvalidContentLength {
            value: String::from_utf8_lossy(value).into_owned(),
        })?;
        match found {
            Some(first) if first != length => {
                return Err(FramingError::ConflictingContentLength {
                    first,
                    second: length,
                })
            }
            _ => found = Some(length),
        }
    }
    Ok(found)
}

fn parse_decimal(value: &[u8]) -> Option<u64> {
    // RFC 3261 §20.14: 1*DIGIT. Cap the digit count so the value cannot overflow.
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')),
    )
}

fn is_lws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| !is_lws(b)).map_or(0, |p| p + 1);
    &bytes[..end]
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_lws(b))
        .unwrap_or(bytes.len());
    trim_end(&bytes[start..])
}

/// Replaces the transport token of the top Via (`SIP/2.0/<from>` → `SIP/2.0/<to>`, both three
/// bytes, case-insensitive match) in place, as RFC 3261 §18.1.1 requires when a request changes
/// transport. Returns `false` (and leaves the message untouched) when the top Via does not carry
/// `from`. The header section ends at the first empty line; the body is never touched.
pub fn rewrite_top_via_transport(message: &mut [u8], from: &[u8; 3], to: &[u8; 3]) -> bool {
    let header_end = end_of_headers(message).unwrap_or(message.len());
    let mut line_start = match message[..header_end].iter().position(|&b| b == b'\n') {
        Some(pos) => pos + 1,
        None => return false,
    };
    while line_start < header_end {
        let line_end = message[line_start..header_end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header_end, |p| line_start + p);
        let line = &message[line_start..line_end];
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = trim_end(&line[..colon]);
            // RFC 3261 §7.3.3: `v` is the compact form of Via.
            if name.eq_ignore_ascii_case(b"via") || name.eq_ignore_ascii_case(b"v") {
                return match via_transport_offset(line, colon + 1) {
                    Some(offset) if line[offset..offset + 3].eq_ignore_ascii_case(from) => {
                        let at = line_start + offset;
                        message[at..at + 3].copy_from_slice(to);
                        true
                    }
                    _ => false,
                };
            }
        }
        line_start = line_end + 1;
    }
    false
}

/// Offset in `line` of the transport token of `sent-protocol` (RFC 3261 §25.1:
/// `protocol-name SLASH protocol-version SLASH transport`, SLASH = SWS "/" SWS).
fn via_transport_offset(line: &[u8], mut at: usize) -> Option<usize> {
    let skip_ws = |mut i: usize| {
        while line.get(i).copied().is_some_and(is_lws) {
            i += 1;
        }
        i
    };
    let expect = |i: usize, token: &[u8]| {
        line.get(i..i + token.len())
            .filter(|s| s.eq_ignore_ascii_case(token))
            .map(|_| i + token.len())
    };
    at = skip_ws(at);
    at = expect(at, b"SIP")?;
    at = skip_ws(at);
    at = expect(at, b"/")?;
    at = skip_ws(at);
    at = expect(at, b"2.0")?;
    at = skip_ws(at);
    at = expect(at, b"/")?;
    at = skip_ws(at);
    // The token must be exactly three characters, followed by whitespace.
    let token = line.get(at..at + 3)?;
    let after = line.get(at + 3).copied();
    (token.iter().all(u8::is_ascii_alphabetic) && after.is_some_and(is_lws)).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
Content-Length: 0\r\n\
\r\n";

    const MESSAGE_WITH_BODY: &[u8] = b"MESSAGE sip:a@example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK2\r\n\
Content-Type: text/plain\r\n\
Content-Length: 5\r\n\
\r\n\
hello";

    fn frame(buf: &[u8]) -> Result<Option<Frame>, FramingError> {
        next_frame(buf, &FramingLimits::default())
    }

    #[test]
    fn complete_message_without_body() {
        assert_eq!(frame(OPTIONS), Ok(Some(Frame::Message(OPTIONS.len()))));
    }

    #[test]
    fn complete_message_with_body() {
        assert_eq!(
            frame(MESSAGE_WITH_BODY),
            Ok(Some(Frame::Message(MESSAGE_WITH_BODY.len())))
        );
    }

    #[test]
    fn every_strict_prefix_needs_more() {
        for cut in 1..MESSAGE_WITH_BODY.len() {
            assert_eq!(frame(&MESSAGE_WITH_BODY[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_messages_are_cut_one_by_one() {
        let mut stream = OPTIONS.to_vec();
        stream.extend_from_slice(MESSAGE_WITH_BODY);
        stream.extend_from_slice(&OPTIONS[..10]);
        let first = frame(&stream).unwrap().unwrap();
        assert_eq!(first, Frame::Message(OPTIONS.len()));
        let rest = &stream[first.consumed()..];
        let second = frame(rest).unwrap().unwrap();
        assert_eq!(second, Frame::Message(MESSAGE_WITH_BODY.len()));
        assert_eq!(&rest[..second.consumed()], MESSAGE_WITH_BODY);
        assert_eq!(frame(&rest[second.consumed()..]), Ok(None));
    }

    #[test]
    fn compact_content_length_with_space_before_colon() {
        let msg = b"MESSAGE sip:a@example.com SIP/2.0\r\nl :3\r\n\r\nabcEXTRA";
        assert_eq!(frame(msg), Ok(Some(Frame::Message(msg.len() - 5))));
        let msg = b"MESSAGE sip:a@example.com SIP/2.0\r\nCONTENT-LENGTH\t:  3 \r\n\r\nabc";
        assert_eq!(frame(msg), Ok(Some(Frame::Message(msg.len()))));
    }

    #[test]
    fn header_ending_in_l_is_not_content_length() {
        let msg = b"MESSAGE sip:a SIP/2.0\r\nUrl: 9\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(frame(msg), Ok(Some(Frame::Message(msg.len()))));
    }

    #[test]
    fn bare_lf_line_ends_are_tolerated() {
        let msg = b"OPTIONS sip:a SIP/2.0\nContent-Length: 2\n\nok";
        assert_eq!(frame(msg), Ok(Some(Frame::Message(msg.len()))));
    }

    #[test]
    fn missing_content_length_is_an_error() {
        let msg = b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n";
        assert_eq!(frame(msg), Err(FramingError::MissingContentLength));
    }

    #[test]
    fn bad_content_length_values_are_errors() {
        for value in ["", "-1", "1x", "0x10", "99999999999999999999", "1 2"] {
            let msg = format!("OPTIONS sip:a SIP/2.0\r\nContent-Length: {value}\r\n\r\n");
            assert!(
                matches!(
                    frame(msg.as_bytes()),
                    Err(FramingError::InvalidContentLength { .. })
                ),
                "{value:?}"
            );
        }
    }

    #[test]
    fn conflicting_content_lengths_are_an_error() {
        let msg = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nxx";
        assert_eq!(
            frame(msg),
            Err(FramingError::ConflictingContentLength {
                first: 1,
                second: 2
            })
        );
        let same = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 1\r\nl: 1\r\n\r\nx";
        assert_eq!(frame(same), Ok(Some(Frame::Message(same.len()))));
    }

    #[test]
    fn body_above_limit_is_an_error() {
        let msg = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 65537\r\n\r\n";
        assert_eq!(
            frame(msg),
            Err(FramingError::BodyTooLarge {
                length: 65537,
                limit: 65536
            })
        );
        let at_limit = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 65536\r\n\r\n";
        assert_eq!(frame(at_limit), Ok(None));
    }

    #[test]
    fn header_section_above_limit_is_an_error() {
        let limits = FramingLimits {
            max_header_bytes: 64,
            max_body_bytes: 10,
        };
        let unterminated = [b'A'; 65];
        assert_eq!(
            next_frame(&unterminated, &limits),
            Err(FramingError::HeadersTooLarge { limit: 64 })
        );
        assert_eq!(next_frame(&unterminated[..64], &limits), Ok(None));
        let mut long = b"OPTIONS sip:a SIP/2.0\r\nX-Pad: ".to_vec();
        long.resize(70, b'p');
        long.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            next_frame(&long, &limits),
            Err(FramingError::HeadersTooLarge { limit: 64 })
        );
    }

    #[test]
    fn crlfcrlf_is_a_ping() {
        assert_eq!(frame(b"\r\n\r\n"), Ok(Some(Frame::KeepalivePing)));
        assert_eq!(Frame::KeepalivePing.consumed(), 4);
        let mut buf = b"\r\n\r\n".to_vec();
        buf.extend_from_slice(OPTIONS);
        assert_eq!(frame(&buf), Ok(Some(Frame::KeepalivePing)));
        assert_eq!(frame(&buf[4..]), Ok(Some(Frame::Message(OPTIONS.len()))));
    }

    #[test]
    fn partial_ping_waits() {
        assert_eq!(frame(b""), Ok(None));
        assert_eq!(frame(b"\r"), Ok(None));
        assert_eq!(frame(b"\r\n"), Ok(None));
        assert_eq!(frame(b"\r\n\r"), Ok(None));
    }

    #[test]
    fn lone_crlf_before_a_message_is_skipped() {
        let mut buf = b"\r\n".to_vec();
        buf.extend_from_slice(OPTIONS);
        assert_eq!(frame(&buf), Ok(Some(Frame::Skip(2))));
        assert_eq!(frame(b"\nOPT"), Ok(Some(Frame::Skip(1))));
        assert_eq!(frame(b"\rOPT"), Ok(Some(Frame::Skip(1))));
    }

    #[test]
    fn via_transport_is_rewritten_in_place() {
        let mut msg = b"INVITE sip:b@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK3\r\n\
Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK9\r\n\
Content-Length: 0\r\n\r\n"
            .to_vec();
        let len = msg.len();
        assert!(rewrite_top_via_transport(&mut msg, b"UDP", b"TCP"));
        assert_eq!(msg.len(), len);
        assert_eq!(
            msg,
            b"INVITE sip:b@example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK3\r\n\
Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK9\r\n\
Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn compact_via_with_spaces_is_rewritten() {
        let mut msg = b"INVITE sip:b SIP/2.0\r\n\
From: <sip:a>\r\n\
v : SIP / 2.0 / udp h;branch=z9hG4bK4\r\n\
l: 0\r\n\r\n"
            .to_vec();
        assert!(rewrite_top_via_transport(&mut msg, b"UDP", b"TCP"));
        assert_eq!(
            msg,
            b"INVITE sip:b SIP/2.0\r\n\
From: <sip:a>\r\n\
v : SIP / 2.0 / TCP h;branch=z9hG4bK4\r\n\
l: 0\r\n\r\n"
        );
    }

    #[test]
    fn via_with_other_transport_is_left_alone() {
        let original = b"INVITE sip:b SIP/2.0\r\n\
Via: SIP/2.0/TLS h;branch=z9hG4bK5\r\n\
Via: SIP/2.0/UDP g\r\n\r\n";
        let mut msg = original.to_vec();
        assert!(!rewrite_top_via_transport(&mut msg, b"UDP", b"TCP"));
        assert_eq!(msg, original);
        let mut no_via = b"INVITE sip:b SIP/2.0\r\n\r\nVia: SIP/2.0/UDP in-body\r\n".to_vec();
        assert!(!rewrite_top_via_transport(&mut no_via, b"UDP", b"TCP"));
        assert_eq!(
            no_via,
            b"INVITE sip:b SIP/2.0\r\n\r\nVia: SIP/2.0/UDP in-body\r\n"
        );
    }
}
