//! The SIP message codec (RFC 3261 §7, §18.3, §19, §20, §25): parse one datagram or stream
//! frame into a [`Message`], edit it, and encode it back. IO-free and clock-free: bytes in,
//! values out, so the transaction and dialog layers and the B2BUA can be tested with literal
//! messages and the parser fuzzed (`fuzz/fuzz_targets/sip_parse.rs`).
//!
//! **Owned model.** Unlike our other parsers, which borrow from their input, a [`Message`] owns
//! its text (`String`s, `Vec<u8>` body): the B2BUA keeps messages across events (transactions
//! retransmit them, dialogs store them) and rewrites them before forwarding, which a borrowed
//! view cannot outlive or change. Parsing copies each header once; that is small next to the
//! TLS and SDP work per message.
//!
//! **What is kept as received.** Header order, name spelling (`v`, `MaX-fOrWaRdS`), values
//! (unfolded: a folded line is joined with one SP, §7.3.1), URI escapes and parameter order.
//! Typed views ([`Via`], [`CSeq`], [`NameAddr`], [`Contact`], [`MediaType`], [`Uri`]) parse a
//! value on demand and format it back; parsing their output gives an equal value. The codec owns
//! one thing: Content-Length always states the body's length.
//!
//! **What is rejected.** Messages over [`MAX_MESSAGE_LEN`], more than [`MAX_HEADERS`] fields,
//! a field over [`MAX_HEADER_LINE`], more than [`MAX_VIA`] Via values, NUL bytes, bare CR or
//! invalid UTF-8 in the start line and header fields (the body is bytes), versions other than
//! SIP/2.0, a missing or malformed Via, From, To, Call-ID or `CSeq`, duplicated single-valued
//! fields, a `CSeq` method that differs from the request's (§8.2.3), malformed Contact, Route,
//! Record-Route, Max-Forwards, Content-Type or Content-Length, and a body shorter than its
//! Content-Length. [`bad_request_response`] turns such a request into a 400 (or 505/513) with the
//! reason, from its raw lines, so malformed SIP is answered and never crashes the B2BUA.
//!
//! **Why hand-written.** The Rust SIP crates either borrow (and cannot be rewritten in place),
//! parse leniently without the RFC 4475 rejections above, or bring an async stack with them; the
//! grammar we need is a few hundred lines and is tested here against RFC 4475's torture messages.

mod error;
mod grammar;
pub mod headers;
pub mod message;
pub mod transaction;
mod typed;
pub mod uri;

#[cfg(test)]
mod rfc4475_tests;

pub use error::{HeaderError, ParseError, UriError};
pub use grammar::Param;
pub use headers::{Header, Headers};
pub use message::{
    bad_request_response, reason_phrase, stream_frame, Message, Method, Request, Response,
    StreamFrame,
};
pub use typed::{
    parse_content_length, parse_expires, parse_max_forwards, validate_call_id, CSeq, Contact,
    DisplayName, MediaType, NameAddr, Rport, Via,
};
pub use uri::{Host, SipUri, Transport, Uri};

/// Largest message accepted, header section and body (64 KiB, the UDP datagram bound).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Most header fields in one message.
pub const MAX_HEADERS: usize = 256;
/// Longest header field after unfolding, name and value (8 KiB).
pub const MAX_HEADER_LINE: usize = 8 * 1024;
/// Most Via values in one message.
pub const MAX_VIA: usize = 64;
