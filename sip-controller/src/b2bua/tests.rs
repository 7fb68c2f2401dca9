//! Scenario tests of the B2BUA core: literal SIP messages in, bytes, relay requests and call
//! records out, on a simulated clock and a fake relayd that allocates ports
//! (`a<i>` → 127.0.0.1:30000+4i, `b<i>` → 127.0.0.1:30002+4i).
//!
//! Every scenario ends with [`Harness::assert_clean`]: after the timers run out, no call, dialog,
//! transaction, timer or relayed request is left behind.

#![allow(
    clippy::too_many_lines,
    reason = "each test is one call scenario, message by message"
)]

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Core, Identity, Output, RelayRequest, ALLOW};
use crate::{
    auth::{Algorithm, ClientCredentials},
    config::Config,
    relay_client::{CryptoView, LegCounters, LegView, LocalView, SessionSpec, SessionView},
    sip::{reason_phrase, Message, Method, Request, Response},
    transport::{ConnectionId, Inbound, Outbound, TlsInfo, Transport},
    verdict::{CallRecord, CallState, LegRole, SignallingTransport},
};

// ----- fixtures ---------------------------------------------------------------------------------

const OUR_HOST: &str = "192.0.2.1";
const CARRIER: &str = "198.51.100.10:40123";
const CARRIER_CONN: u64 = 7;
const PBX: &str = "10.0.0.20:5060";
const PBX_TLS: &str = "10.0.0.20:5061";
const PBX_CONN: u64 = 11;
const PBX_MEDIA: &str = "10.0.0.30";
/// The carrier's SDES inline key (RFC 4568 §9.1 example key).
const CARRIER_KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
/// The PBX's SDES inline key when it does SRTP.
const PBX_KEY: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk";
const SUITE_80: &str = "AES_CM_128_HMAC_SHA1_80";
const UNIX_MS_T0: u64 = 1_800_000_000_000;

/// Carrier (TLS, SRTP mandatory) → PBX (UDP, plain RTP), and back.
const CARRIER_TO_PBX: &str = r#"
[sip]
ring_timeout_secs = 30

[[trunks]]
name = "carrier"
uri = "sips:198.51.100.10:5061"
allow_from = ["198.51.100.0/24"]
srtp = "mandatory"

[[trunks]]
name = "pbx"
uri = "sip:10.0.0.20:5060;transport=udp"
allow_from = ["10.0.0.0/24"]
srtp = "off"

[[routes]]
name = "carrier-in"
from = "carrier"
to = "pbx"

[[routes]]
name = "pbx-out"
from = "pbx"
to = "carrier"
"#;

/// Both trunks TLS with SRTP mandatory.
const SECURE_BOTH: &str = r#"
[sip]
ring_timeout_secs = 30

[[trunks]]
name = "carrier"
uri = "sips:198.51.100.10:5061"
allow_from = ["198.51.100.0/24"]
srtp = "mandatory"

[[trunks]]
name = "pbx"
uri = "sips:10.0.0.20:5061"
allow_from = ["10.0.0.0/24"]
srtp = "mandatory"

[[routes]]
name = "carrier-in"
from = "carrier"
to = "pbx"
"#;

/// Carrier over UDP (SRTP optional) → PBX over UDP.
const UDP_BOTH: &str = r#"
[sip]
ring_timeout_secs = 30

[[trunks]]
name = "carrier"
uri = "sip:198.51.100.10:5060"
allow_from = ["198.51.100.0/24"]
srtp = "optional"

[[trunks]]
name = "pbx"
uri = "sip:10.0.0.20:5060;transport=udp"
allow_from = ["10.0.0.0/24"]
srtp = "off"

[[routes]]
name = "carrier-in"
from = "carrier"
to = "pbx"
"#;

/// Carrier calls go to registered users; users may register with digest credentials.
const REGISTRAR: &str = r#"
[sip]
ring_timeout_secs = 30

[registrar]
realm = "example.com"

[[registrar.users]]
username = "alice"
password = "wonderland"

[[trunks]]
name = "carrier"
uri = "sips:198.51.100.10:5061"
allow_from = ["198.51.100.0/24"]
srtp = "mandatory"

[[routes]]
name = "to-users"
from = "carrier"
to = "registrar"
"#;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn tls_info() -> Arc<TlsInfo> {
    Arc::new(TlsInfo {
        version: "TLSv1.3".to_owned(),
        cipher_suite: "TLS13_AES_256_GCM_SHA384".to_owned(),
        peer_subject: Some("CN=sbc.carrier.example".to_owned()),
        sni: None,
    })
}

/// Where a message comes from.
#[derive(Clone, Debug)]
struct Peer {
    transport: Transport,
    source: SocketAddr,
    local: SocketAddr,
    connection: Option<ConnectionId>,
    tls: Option<Arc<TlsInfo>>,
}

impl Peer {
    fn udp(source: &str) -> Self {
        Self {
            transport: Transport::Udp,
            source: addr(source),
            local: addr("192.0.2.1:5060"),
            connection: None,
            tls: None,
        }
    }

    fn tcp(source: &str, connection: u64) -> Self {
        Self {
            transport: Transport::Tcp,
            source: addr(source),
            local: addr("192.0.2.1:5060"),
            connection: Some(ConnectionId::from_raw(connection)),
            tls: None,
        }
    }

    fn tls(source: &str, connection: u64) -> Self {
        Self {
            transport: Transport::Tls,
            source: addr(source),
            local: addr("192.0.2.1:5061"),
            connection: Some(ConnectionId::from_raw(connection)),
            tls: Some(tls_info()),
        }
    }

    fn carrier() -> Self {
        Self::tls(CARRIER, CARRIER_CONN)
    }

    fn pbx() -> Self {
        Self::udp(PBX)
    }

    fn via_transport(&self) -> &'static str {
        match self.transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// One message the core sent, parsed back.
#[derive(Debug)]
struct Sent {
    outbound: Outbound,
    message: Message,
}

impl Sent {
    fn request(&self) -> &Request {
        match &self.message {
            Message::Request(r) => r,
            Message::Response(r) => panic!("expected a request, got {} {}", r.status, r.reason),
        }
    }

    fn response(&self) -> &Response {
        match &self.message {
            Message::Response(r) => r,
            Message::Request(r) => panic!("expected a response, got {}", r.method.as_str()),
        }
    }

    fn status(&self) -> Option<u16> {
        self.message.as_response().map(|r| r.status)
    }

    fn method(&self) -> Option<&str> {
        self.message.as_request().map(|r| r.method.as_str())
    }

    fn kind(&self) -> String {
        match &self.message {
            Message::Request(r) => r.method.as_str().to_owned(),
            Message::Response(r) => r.status.to_string(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.message.headers().get(name)
    }

    fn body(&self) -> &[u8] {
        self.message.body()
    }
}

fn kinds(sent: &[Sent]) -> Vec<String> {
    sent.iter().map(Sent::kind).collect()
}

/// The core, a fake clock and a fake relayd.
struct Harness {
    core: Core,
    now: Instant,
    t0: Instant,
    sent: Vec<Sent>,
    relay: VecDeque<(String, RelayRequest)>,
    /// The last spec PUT per session (what a DELETE reply reports).
    sessions: HashMap<String, SessionSpec>,
    updated: Vec<CallRecord>,
    ended: Vec<CallRecord>,
}

fn config(text: &str) -> Arc<Config> {
    let config: Config = toml::from_str(text).expect("test config parses");
    config.validate().expect("test config validates");
    Arc::new(config)
}

fn identity() -> Identity {
    Identity {
        host: OUR_HOST.to_owned(),
        udp: Some(5060),
        tcp: Some(5060),
        tls: Some(5061),
    }
}

fn leg_port(id: &str) -> u16 {
    let index: u16 = id[1..].parse().expect("leg index");
    let offset = if id.starts_with('b') { 2 } else { 0 };
    30_000 + 4 * index + offset
}

fn view_of(call: &str, spec: &SessionSpec, packets: u64) -> SessionView {
    SessionView {
        id: call.to_owned(),
        legs: spec
            .legs
            .iter()
            .map(|leg| {
                let port = leg_port(&leg.id);
                LegView {
                    id: leg.id.clone(),
                    interface: leg.interface.clone(),
                    local: LocalView {
                        address: IpAddr::from([127, 0, 0, 1]),
                        rtp_port: port,
                        rtcp_port: if leg.rtcp_mux { port } else { port + 1 },
                    },
                    rtcp_mux: leg.rtcp_mux,
                    inbound_crypto: leg.inbound_crypto.as_ref().map(|c| CryptoView {
                        suite: c.suite.clone(),
                    }),
                    outbound_crypto: leg.outbound_crypto.as_ref().map(|c| CryptoView {
                        suite: c.suite.clone(),
                    }),
                    latched_rtp: None,
                    media_timed_out: false,
                    counters: LegCounters {
                        packets_in: packets,
                        packets_out: packets + 1,
                        ..LegCounters::default()
                    },
                }
            })
            .collect(),
    }
}

impl Harness {
    fn new(config_text: &str) -> Self {
        let core = Core::new(config(config_text), HashMap::new(), identity()).expect("core");
        let t0 = Instant::now();
        Self {
            core,
            now: t0,
            t0,
            sent: Vec::new(),
            relay: VecDeque::new(),
            sessions: HashMap::new(),
            updated: Vec::new(),
            ended: Vec::new(),
        }
    }

    fn unix_ms(&self) -> u64 {
        UNIX_MS_T0 + u64::try_from((self.now - self.t0).as_millis()).expect("ms")
    }

    fn pump(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { outbound, .. } => {
                    let message = Message::parse(&outbound.bytes).unwrap_or_else(|e| {
                        panic!(
                            "the core sent unparseable SIP ({e}):\n{}",
                            String::from_utf8_lossy(&outbound.bytes)
                        )
                    });
                    self.sent.push(Sent { outbound, message });
                }
                Output::Relay { call, request } => self.relay.push_back((call, request)),
                Output::CallUpdated(record) => self.updated.push(record),
                Output::CallEnded(record) => self.ended.push(record),
            }
        }
    }

    fn deliver(&mut self, peer: &Peer, bytes: Vec<u8>) {
        let inbound = Inbound {
            transport: peer.transport,
            local: peer.local,
            source: peer.source,
            connection: peer.connection,
            tls: peer.tls.clone(),
            bytes,
        };
        let unix_ms = self.unix_ms();
        self.core.handle_inbound(self.now, unix_ms, &inbound);
        self.pump();
    }

    /// Moves the clock forward by `by`, firing every deadline on the way at its time.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        for _ in 0..100_000 {
            match self.core.poll_timeout() {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    let unix_ms = self.unix_ms();
                    self.core.handle_timeout(self.now, unix_ms);
                    self.pump();
                }
                _ => {
                    self.now = until;
                    let unix_ms = self.unix_ms();
                    self.core.handle_timeout(self.now, unix_ms);
                    self.pump();
                    return;
                }
            }
        }
        panic!("a deadline at or before now is never cleared");
    }

    fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.sent)
    }

    /// The one message sent since the last look.
    fn one_sent(&mut self) -> Sent {
        let mut sent = self.take_sent();
        assert_eq!(
            sent.len(),
            1,
            "expected one message, got {:?}",
            kinds(&sent)
        );
        sent.remove(0)
    }

    /// The pending relay request (there must be exactly one).
    fn relay_request(&mut self) -> (String, RelayRequest) {
        assert_eq!(
            self.relay.len(),
            1,
            "expected one relay request in flight: {:?}",
            self.relay
        );
        self.relay.front().cloned().expect("relay request")
    }

    /// The pending PUT's spec.
    fn relay_put(&mut self) -> (String, SessionSpec) {
        match self.relay_request() {
            (call, RelayRequest::Put(spec)) => (call, spec),
            (_, other) => panic!("expected a PUT, got {other:?}"),
        }
    }

    /// relayd answers the pending request successfully.
    fn relay_ok(&mut self) {
        let (call, request) = self.relay.pop_front().expect("a relay request");
        let view = match request {
            RelayRequest::Put(spec) => {
                let view = view_of(&call, &spec, 0);
                self.sessions.insert(call.clone(), spec);
                view
            }
            RelayRequest::Delete => {
                let spec = self
                    .sessions
                    .remove(&call)
                    .expect("deleting a session that was put");
                view_of(&call, &spec, 1000)
            }
        };
        let unix_ms = self.unix_ms();
        self.core
            .handle_relay_reply(self.now, unix_ms, &call, Ok(Some(view)));
        self.pump();
    }

    /// relayd fails the pending request.
    fn relay_fail(&mut self) {
        let (call, _) = self.relay.pop_front().expect("a relay request");
        let unix_ms = self.unix_ms();
        self.core.handle_relay_reply(
            self.now,
            unix_ms,
            &call,
            Err("connection refused".to_owned()),
        );
        self.pump();
    }

    /// Answers relay requests until none is pending (a DELETE ends the call).
    fn relay_drain(&mut self) {
        while !self.relay.is_empty() {
            self.relay_ok();
        }
    }

    fn ended(&mut self) -> CallRecord {
        assert_eq!(self.ended.len(), 1, "expected one ended call");
        self.ended.remove(0)
    }

    /// Nothing is left after the timers ran out.
    fn assert_clean(&mut self) {
        self.relay_drain();
        self.advance(Duration::from_secs(60));
        self.relay_drain();
        let core = &self.core;
        assert_eq!(core.call_count(), 0, "calls left");
        assert!(core.dialogs.is_empty(), "dialogs left: {:?}", core.dialogs);
        assert!(core.caller_invites.is_empty(), "caller INVITEs left");
        assert!(core.server_invites.is_empty(), "server INVITEs left");
        assert!(core.server_reinvites.is_empty(), "server re-INVITEs left");
        assert!(
            core.clients.is_empty(),
            "client transactions left: {:?}",
            core.clients
        );
        assert!(core.relayed.is_empty(), "relayed requests left");
        assert!(core.tx.is_empty(), "transactions left: {}", core.tx.len());
        assert!(core.timers.is_empty(), "timers left: {:?}", core.timers);
        assert!(core.poll_timeout().is_none(), "a deadline is left");
    }
}

// ----- SIP builders -----------------------------------------------------------------------------

/// A message from header lines (LF or CRLF) and an optional SDP body.
fn message(head: &str, body: Option<&str>) -> Vec<u8> {
    let mut out = String::new();
    for line in head.trim().lines() {
        out.push_str(line.trim());
        out.push_str("\r\n");
    }
    let body = body.map(|b| {
        b.trim()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .fold(String::new(), |mut out, l| {
                out.push_str(l.trim());
                out.push_str("\r\n");
                out
            })
    });
    if let Some(body) = &body {
        if !head.contains("Content-Type:") {
            out.push_str("Content-Type: application/sdp\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n{body}", body.len());
    } else {
        out.push_str("Content-Length: 0\r\n\r\n");
    }
    out.into_bytes()
}

/// A response a UA sends to `request`: its Vias, From, To (tagged), Call-ID and `CSeq`.
fn reply(
    request: &Request,
    status: u16,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> Vec<u8> {
    let mut head = format!("SIP/2.0 {status} {}\n", reason_phrase(status));
    for via in request.headers.get_all("Via") {
        let _ = writeln!(head, "Via: {via}");
    }
    let to = request.headers.get("To").expect("To");
    let to = match to_tag {
        Some(tag) if !to.contains(";tag=") => format!("{to};tag={tag}"),
        _ => to.to_owned(),
    };
    let _ = write!(
        head,
        "From: {}\nTo: {to}\nCall-ID: {}\nCSeq: {}\n",
        request.headers.get("From").expect("From"),
        request.headers.get("Call-ID").expect("Call-ID"),
        request.headers.get("CSeq").expect("CSeq"),
    );
    for (name, value) in extra {
        let _ = writeln!(head, "{name}: {value}");
    }
    message(&head, body)
}

/// A user agent's side of one dialog with the core.
struct Ua {
    peer: Peer,
    /// Our From value, with tag.
    local: String,
    /// The core's To value (tag added once known).
    remote: String,
    call_id: String,
    cseq: u32,
    /// Request-URI of in-dialog requests (the core's Contact).
    target: String,
    contact: String,
    branches: u32,
}

impl Ua {
    fn via(&mut self) -> String {
        self.branches += 1;
        let port = match self.peer.transport {
            Transport::Udp => self.peer.source.port(),
            _ => 5061,
        };
        let call: String = self
            .call_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        format!(
            "Via: SIP/2.0/{} {}:{port};branch=z9hG4bK-{call}-{}",
            self.peer.via_transport(),
            self.peer.source.ip(),
            self.branches
        )
    }

    fn request_with(
        &mut self,
        method: &str,
        cseq: u32,
        extra: &[(&str, &str)],
        body: Option<&str>,
    ) -> Vec<u8> {
        let via = self.via();
        let mut head = format!(
            "{method} {} SIP/2.0\n{via}\nMax-Forwards: 70\nFrom: {}\nTo: {}\nCall-ID: {}\n\
             CSeq: {cseq} {method}\nContact: {}\n",
            self.target, self.local, self.remote, self.call_id, self.contact
        );
        for (name, value) in extra {
            let _ = writeln!(head, "{name}: {value}");
        }
        message(&head, body)
    }

    /// A new in-dialog request.
    fn request(&mut self, method: &str, body: Option<&str>) -> Vec<u8> {
        self.cseq += 1;
        self.request_with(method, self.cseq, &[], body)
    }

    /// The ACK for a 2xx to our INVITE with `cseq`.
    fn ack(&mut self, cseq: u32) -> Vec<u8> {
        self.request_with("ACK", cseq, &[], None)
    }

    /// The callee's side of the dialog an INVITE from the core sets up, answered with `tag`.
    fn callee(peer: Peer, invite: &Request, tag: &str) -> Self {
        let contact = invite
            .headers
            .get("Contact")
            .expect("Contact on our INVITE");
        Self {
            local: format!("{};tag={tag}", invite.headers.get("To").expect("To")),
            remote: invite.headers.get("From").expect("From").to_owned(),
            call_id: invite.headers.get("Call-ID").expect("Call-ID").to_owned(),
            cseq: 100,
            target: contact.trim_matches(['<', '>']).to_owned(),
            contact: if peer.transport == Transport::Tls {
                "<sips:pbx@10.0.0.20:5061>".to_owned()
            } else {
                "<sip:pbx@10.0.0.20:5060>".to_owned()
            },
            peer,
            branches: 0,
        }
    }
}

fn carrier_offer(extra: &str) -> String {
    format!(
        "v=0
        o=carrier 1000 1 IN IP4 198.51.100.20
        s=-
        c=IN IP4 198.51.100.20
        t=0 0
        m=audio 40000 RTP/SAVP 0 101
        a=rtpmap:0 PCMU/8000
        a=rtpmap:101 telephone-event/8000
        a=crypto:1 {SUITE_80} inline:{CARRIER_KEY}
        {extra}"
    )
}

fn plain_offer(address: &str, port: u16, extra: &str) -> String {
    format!(
        "v=0
        o=peer 3000 1 IN IP4 {address}
        s=-
        c=IN IP4 {address}
        t=0 0
        m=audio {port} RTP/AVP 0 101
        a=rtpmap:0 PCMU/8000
        a=rtpmap:101 telephone-event/8000
        {extra}"
    )
}

fn pbx_answer() -> String {
    plain_offer(PBX_MEDIA, 50000, "a=sendrecv")
}

/// The PBX's SRTP answer to our offer (it picks our tag 1).
fn pbx_srtp_answer(address: &str, port: u16, version: u32, extra: &str) -> String {
    format!(
        "v=0
        o=pbx 2000 {version} IN IP4 {address}
        s=-
        c=IN IP4 {address}
        t=0 0
        m=audio {port} RTP/SAVP 0 101
        a=rtpmap:0 PCMU/8000
        a=rtpmap:101 telephone-event/8000
        a=crypto:1 {SUITE_80} inline:{PBX_KEY}
        {extra}"
    )
}

/// The carrier's side of a call it starts with an INVITE carrying `sdp`.
fn carrier_ua(peer: Peer, call_id: &str) -> Ua {
    Ua {
        peer,
        local: "\"Carrier\" <sip:+4420555@carrier.example>;tag=car-1".to_owned(),
        remote: "<sip:+4930123456@192.0.2.1>".to_owned(),
        call_id: call_id.to_owned(),
        cseq: 1,
        target: "sip:+4930123456@192.0.2.1:5061;transport=tls".to_owned(),
        contact: "<sip:+4420555@198.51.100.10:5061;transport=tls>".to_owned(),
        branches: 0,
    }
}

fn invite_from(ua: &mut Ua, extra: &[(&str, &str)], sdp: Option<&str>) -> Vec<u8> {
    ua.request_with("INVITE", 1, extra, sdp)
}

// ----- SDP helpers ------------------------------------------------------------------------------

fn sdp_text(body: &[u8]) -> String {
    String::from_utf8(body.to_vec()).expect("SDP is UTF-8")
}

fn sdp_line(body: &[u8], prefix: &str) -> Option<String> {
    sdp_text(body)
        .lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_owned)
}

/// (tag, suite, inline key) of every `a=crypto`.
fn cryptos(body: &[u8]) -> Vec<(u32, String, String)> {
    sdp_text(body)
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|value| {
            let mut parts = value.split(' ');
            let tag = parts.next().and_then(|t| t.parse().ok()).expect("tag");
            let suite = parts.next().expect("suite").to_owned();
            let key = parts
                .next()
                .and_then(|k| k.strip_prefix("inline:"))
                .expect("inline key")
                .split('|')
                .next()
                .expect("key")
                .to_owned();
            (tag, suite, key)
        })
        .collect()
}

fn origin_version(body: &[u8]) -> u64 {
    sdp_line(body, "o=")
        .and_then(|o| o.split(' ').nth(2).map(str::to_owned))
        .and_then(|v| v.parse().ok())
        .expect("o= version")
}

fn spec_leg<'s>(spec: &'s SessionSpec, id: &str) -> &'s crate::relay_client::LegSpec {
    spec.legs
        .iter()
        .find(|l| l.id == id)
        .unwrap_or_else(|| panic!("leg {id} in {spec:?}"))
}

fn key_of(crypto: Option<&crate::relay_client::CryptoSpec>) -> String {
    crypto.expect("crypto").keys[0].key.clone()
}

// ----- scenario building blocks -----------------------------------------------------------------

/// A call from the carrier answered by the PBX, up to the 200 to the carrier; returns the
/// carrier's UA, the PBX's UA, the 200 and the relay session id.
struct Established {
    carrier: Ua,
    pbx: Ua,
    ok: Sent,
    invite_to_pbx: Request,
    call: String,
}

fn establish(
    h: &mut Harness,
    carrier_peer: &Peer,
    pbx_peer: &Peer,
    offer: &str,
    answer: &str,
) -> Established {
    establish_call(
        h,
        "call-1@198.51.100.10",
        carrier_peer,
        pbx_peer,
        offer,
        answer,
    )
}

fn establish_call(
    h: &mut Harness,
    call_id: &str,
    carrier_peer: &Peer,
    pbx_peer: &Peer,
    offer: &str,
    answer: &str,
) -> Established {
    let mut carrier = carrier_ua(carrier_peer.clone(), call_id);
    let invite = invite_from(&mut carrier, &[], Some(offer));
    h.deliver(carrier_peer, invite);
    assert_eq!(kinds(&h.take_sent()), ["100"]);
    let (call, _) = h.relay_put();
    h.relay_ok();
    let invite_to_pbx = h.one_sent();
    let invite_to_pbx = invite_to_pbx.request().clone();
    let mut pbx = Ua::callee(pbx_peer.clone(), &invite_to_pbx, "pbx-1");
    h.deliver(
        pbx_peer,
        reply(&invite_to_pbx, 180, Some("pbx-1"), &[], None),
    );
    assert_eq!(kinds(&h.take_sent()), ["180"]);
    let contact = pbx.contact.clone();
    h.deliver(
        pbx_peer,
        reply(
            &invite_to_pbx,
            200,
            Some("pbx-1"),
            &[("Contact", &contact)],
            Some(answer),
        ),
    );
    assert_eq!(kinds(&h.take_sent()), ["ACK"]);
    h.relay_ok();
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    carrier.remote = ok.header("To").expect("To").to_owned();
    carrier.target = ok
        .header("Contact")
        .expect("Contact")
        .trim_matches(['<', '>'])
        .to_owned();
    pbx.cseq = 100;
    Established {
        carrier,
        pbx,
        ok,
        invite_to_pbx,
        call,
    }
}

// ----- 1. carrier (TLS, SRTP) → PBX (UDP, RTP) --------------------------------------------------

#[test]
fn carrier_srtp_call_to_plain_pbx_end_to_end() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let carrier_peer = Peer::carrier();
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-1@198.51.100.10");
    let offer = carrier_offer("a=sendrecv");
    h.deliver(&carrier_peer, invite_from(&mut carrier, &[], Some(&offer)));

    // 100 Trying over the carrier's connection, then the relay is programmed.
    let trying = h.one_sent();
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.outbound.destination, addr(CARRIER));
    assert_eq!(
        trying.outbound.connection,
        Some(ConnectionId::from_raw(CARRIER_CONN))
    );
    assert_eq!(trying.outbound.transport, Transport::Tls);
    let (call, spec) = h.relay_put();
    let a0 = spec_leg(&spec, "a0");
    assert_eq!(
        a0.inbound_crypto.as_ref().expect("a0 inbound").suite,
        SUITE_80
    );
    assert_eq!(key_of(a0.inbound_crypto.as_ref()), CARRIER_KEY);
    let our_key = key_of(a0.outbound_crypto.as_ref());
    assert_ne!(our_key, CARRIER_KEY);
    assert_eq!(a0.forward_to.as_deref(), Some("b0"));
    assert_eq!(
        a0.remote.map(|r| (r.address, r.rtp_port)),
        Some((IpAddr::from([198, 51, 100, 20]), 40000))
    );
    let b0 = spec_leg(&spec, "b0");
    assert!(b0.inbound_crypto.is_none() && b0.outbound_crypto.is_none());
    assert!(b0.remote.is_none());
    assert_eq!(b0.forward_to.as_deref(), Some("a0"));
    assert!(
        h.take_sent().is_empty(),
        "no INVITE before the relay answered"
    );
    h.relay_ok();

    // The INVITE to the PBX: UDP, plain RTP through the relay.
    let invite = h.one_sent();
    assert_eq!(invite.outbound.transport, Transport::Udp);
    assert_eq!(invite.outbound.destination, addr(PBX));
    let request = invite.request().clone();
    assert_eq!(request.method, Method::Invite);
    assert_eq!(
        request.uri.to_string(),
        "sip:+4930123456@10.0.0.20:5060;transport=udp"
    );
    assert!(request
        .headers
        .get("Via")
        .expect("Via")
        .starts_with("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK"));
    assert_eq!(request.headers.get("Max-Forwards"), Some("69"));
    assert_ne!(
        request.headers.get("Call-ID"),
        Some("call-1@198.51.100.10"),
        "B2BUA: own Call-ID"
    );
    assert!(request
        .headers
        .get("Contact")
        .expect("Contact")
        .contains("192.0.2.1:5060"));
    assert_eq!(
        sdp_line(&request.body, "m="),
        Some("m=audio 30002 RTP/AVP 0 101".to_owned())
    );
    assert_eq!(
        sdp_line(&request.body, "c="),
        Some("c=IN IP4 127.0.0.1".to_owned())
    );
    assert!(
        cryptos(&request.body).is_empty(),
        "no a=crypto towards an srtp=off trunk"
    );
    assert!(sdp_text(&request.body).contains("a=rtpmap:101 telephone-event/8000"));

    // 180 from the PBX → 180 to the carrier with our To tag.
    let pbx_peer = Peer::pbx();
    h.deliver(&pbx_peer, reply(&request, 180, Some("pbx-1"), &[], None));
    let ringing = h.one_sent();
    assert_eq!(ringing.status(), Some(180));
    assert_eq!(
        ringing.outbound.connection,
        Some(ConnectionId::from_raw(CARRIER_CONN))
    );
    let to_tag = ringing
        .response()
        .headers
        .to()
        .expect("To")
        .tag()
        .expect("To tag")
        .to_owned();
    assert_eq!(ringing.header("Call-ID"), Some("call-1@198.51.100.10"));

    // 200 with SDP from the PBX → ACK to the PBX, relay PUT with b0's remote.
    h.deliver(
        &pbx_peer,
        reply(
            &request,
            200,
            Some("pbx-1"),
            &[("Contact", "<sip:pbx@10.0.0.20:5060>")],
            Some(&pbx_answer()),
        ),
    );
    let ack = h.one_sent();
    assert_eq!(ack.method(), Some("ACK"));
    assert_eq!(ack.outbound.destination, addr(PBX));
    assert_eq!(ack.request().uri.to_string(), "sip:pbx@10.0.0.20:5060");
    assert_eq!(ack.header("CSeq"), Some("1 ACK"));
    assert!(ack.header("To").expect("To").ends_with(";tag=pbx-1"));
    let (put_call, spec) = h.relay_put();
    assert_eq!(put_call, call);
    let b0 = spec_leg(&spec, "b0");
    assert_eq!(
        b0.remote.map(|r| (r.address, r.rtp_port)),
        Some((PBX_MEDIA.parse().expect("ip"), 50000))
    );
    assert!(b0.inbound_crypto.is_none() && b0.outbound_crypto.is_none());
    assert_eq!(
        key_of(spec_leg(&spec, "a0").outbound_crypto.as_ref()),
        our_key,
        "a0 keeps its key"
    );
    h.relay_ok();

    // 200 to the carrier: SRTP answer with our key, same tag and suite.
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        ok.outbound.connection,
        Some(ConnectionId::from_raw(CARRIER_CONN))
    );
    let ok_to = ok.response().headers.to().expect("To");
    assert_eq!(ok_to.tag(), Some(to_tag.as_str()));
    let contact = ok.header("Contact").expect("Contact").to_owned();
    // The carrier's INVITE used `sip:` over TLS: our Contact is `sip:...;transport=tls`
    // (RFC 3261 §12.1.1: `sips:` only for a `sips:` dialog).
    assert!(
        contact.starts_with("<sip:")
            && contact.contains("192.0.2.1:5061")
            && contact.contains(";transport=tls"),
        "{contact}"
    );
    assert_eq!(ok.header("Content-Type"), Some("application/sdp"));
    assert_eq!(
        sdp_line(ok.body(), "m="),
        Some("m=audio 30000 RTP/SAVP 0 101".to_owned())
    );
    assert_eq!(
        sdp_line(ok.body(), "c="),
        Some("c=IN IP4 127.0.0.1".to_owned())
    );
    let answer_crypto = cryptos(ok.body());
    assert_eq!(answer_crypto.len(), 1);
    assert_eq!(answer_crypto[0].0, 1);
    assert_eq!(answer_crypto[0].1, SUITE_80);
    assert_ne!(answer_crypto[0].2, CARRIER_KEY);
    assert_eq!(
        answer_crypto[0].2, our_key,
        "the answer carries the key relayd encrypts with"
    );
    assert!(h.relay.is_empty());

    // The carrier ACKs: nothing more is sent (TLS: no 2xx retransmission anyway).
    carrier.remote = ok.header("To").expect("To").to_owned();
    carrier.target = contact.trim_matches(['<', '>']).to_owned();
    h.deliver(&carrier_peer, carrier.ack(1));
    h.advance(Duration::from_secs(5));
    assert!(h.take_sent().is_empty());

    // BYE from the carrier → 200, BYE to the PBX, relay DELETE.
    h.deliver(&carrier_peer, carrier.request("BYE", None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["200", "BYE"]);
    assert_eq!(sent[0].header("CSeq"), Some("2 BYE"));
    let bye = sent[1].request().clone();
    assert_eq!(sent[1].outbound.destination, addr(PBX));
    assert_eq!(bye.uri.to_string(), "sip:pbx@10.0.0.20:5060");
    assert_eq!(bye.headers.get("CSeq"), Some("2 BYE"));
    assert_eq!(bye.headers.get("Call-ID"), request.headers.get("Call-ID"));
    assert!(bye.headers.get("To").expect("To").ends_with(";tag=pbx-1"));
    assert!(matches!(h.relay_request(), (c, RelayRequest::Delete) if c == call));
    h.deliver(&pbx_peer, reply(&bye, 200, None, &[], None));
    assert!(h.take_sent().is_empty());
    assert!(
        h.ended.is_empty(),
        "the call ends with relayd's final counters"
    );
    h.relay_ok();

    let record = h.ended();
    assert_eq!(record.id, call);
    assert_eq!(record.sip_call_id, "call-1@198.51.100.10");
    assert_eq!(record.route, "carrier-in");
    assert_eq!(record.state, CallState::Terminated);
    assert_eq!(record.status, Some(200));
    assert_eq!(record.end_reason.as_deref(), Some("bye_caller"));
    assert!(record.answered_unix_ms.is_some() && record.ended_unix_ms.is_some());
    assert_eq!(record.legs.len(), 2);
    let caller = &record.legs[0];
    assert_eq!(caller.role, LegRole::Caller);
    assert_eq!(caller.peer, "carrier");
    let signalling = caller.signalling.as_ref().expect("caller signalling");
    assert_eq!(signalling.transport, SignallingTransport::Tls);
    assert_eq!(signalling.tls_version.as_deref(), Some("TLSv1.3"));
    assert_eq!(
        signalling.peer_certificate_subject.as_deref(),
        Some("CN=sbc.carrier.example")
    );
    assert_eq!(caller.media.inbound_suite.as_deref(), Some(SUITE_80));
    assert_eq!(caller.media.outbound_suite.as_deref(), Some(SUITE_80));
    assert_eq!(caller.media.packets_in, 1000);
    assert_eq!(caller.media.packets_out, 1001);
    assert!(caller.secure);
    let callee = &record.legs[1];
    assert_eq!(callee.role, LegRole::Callee);
    assert_eq!(callee.peer, "pbx");
    assert_eq!(
        callee.signalling.as_ref().map(|s| s.transport),
        Some(SignallingTransport::Udp)
    );
    assert!(callee.media.inbound_suite.is_none() && callee.media.outbound_suite.is_none());
    assert_eq!(callee.media.packets_in, 1000);
    assert!(!callee.secure);
    assert!(!record.secure_end_to_end);
    assert!(h.updated.iter().any(|r| r.state == CallState::Confirmed));
    assert_eq!(h.core.stats().calls_answered, 1);
    h.assert_clean();
}

// ----- 2. TLS + SRTP on both legs ---------------------------------------------------------------

#[test]
fn tls_and_srtp_on_both_legs_is_secure_end_to_end() {
    let mut h = Harness::new(SECURE_BOTH);
    let carrier_peer = Peer::carrier();
    let pbx_peer = Peer::tls(PBX_TLS, PBX_CONN);
    let offer = carrier_offer("a=sendrecv");
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-2@198.51.100.10");
    h.deliver(&carrier_peer, invite_from(&mut carrier, &[], Some(&offer)));
    assert_eq!(kinds(&h.take_sent()), ["100"]);
    h.relay_ok();
    let invite = h.one_sent();
    assert_eq!(invite.outbound.transport, Transport::Tls);
    assert_eq!(invite.outbound.destination, addr(PBX_TLS));
    let request = invite.request().clone();
    assert_eq!(request.uri.to_string(), "sips:+4930123456@10.0.0.20:5061");
    assert!(request
        .headers
        .get("Via")
        .expect("Via")
        .starts_with("SIP/2.0/TLS 192.0.2.1:5061;"));
    assert_eq!(
        sdp_line(&request.body, "m="),
        Some("m=audio 30002 RTP/SAVP 0 101".to_owned())
    );
    let offered = cryptos(&request.body);
    assert_eq!(offered[0].0, 1);
    assert_eq!(offered[0].1, SUITE_80, "preferred suite first");
    assert!(
        offered.iter().all(|(_, _, key)| key != CARRIER_KEY),
        "never the carrier's key"
    );

    h.deliver(&pbx_peer, reply(&request, 180, Some("pbx-2"), &[], None));
    assert_eq!(kinds(&h.take_sent()), ["180"]);
    h.deliver(
        &pbx_peer,
        reply(
            &request,
            200,
            Some("pbx-2"),
            &[("Contact", "<sips:pbx@10.0.0.20:5061>")],
            Some(&pbx_srtp_answer(PBX_MEDIA, 50000, 1, "a=sendrecv")),
        ),
    );
    let ack = h.one_sent();
    assert_eq!(ack.method(), Some("ACK"));
    assert_eq!(ack.outbound.transport, Transport::Tls);
    let (_, spec) = h.relay_put();
    let b0 = spec_leg(&spec, "b0");
    assert_eq!(key_of(b0.inbound_crypto.as_ref()), PBX_KEY);
    assert_eq!(
        key_of(b0.outbound_crypto.as_ref()),
        offered[0].2,
        "b0 encrypts with the key we offered under tag 1"
    );
    h.relay_ok();
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    let record = h.updated.last().expect("published").clone();
    assert_eq!(record.state, CallState::Confirmed);
    assert!(record.secure_end_to_end, "{record:?}");
    assert_eq!(
        record.legs[1]
            .signalling
            .as_ref()
            .and_then(|s| s.tls_cipher_suite.as_deref()),
        Some("TLS13_AES_256_GCM_SHA384")
    );

    carrier.remote = ok.header("To").expect("To").to_owned();
    h.deliver(&carrier_peer, carrier.ack(1));
    // The PBX hangs up this time.
    let mut pbx = Ua::callee(pbx_peer.clone(), &request, "pbx-2");
    pbx.contact = "<sips:pbx@10.0.0.20:5061>".to_owned();
    h.deliver(&pbx_peer, pbx.request("BYE", None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["200", "BYE"]);
    assert_eq!(
        sent[1].outbound.connection,
        Some(ConnectionId::from_raw(CARRIER_CONN))
    );
    assert_eq!(
        sent[1].request().uri.to_string(),
        "sip:+4420555@198.51.100.10:5061;transport=tls"
    );
    let bye = sent[1].request().clone();
    h.deliver(&carrier_peer, reply(&bye, 200, None, &[], None));
    h.relay_ok();
    let record = h.ended();
    assert_eq!(record.end_reason.as_deref(), Some("bye_callee"));
    assert!(record.secure_end_to_end);
    assert!(record.legs.iter().all(|l| l.secure));
    assert_eq!(h.core.stats().calls_secure, 1);
    h.assert_clean();
}

// ----- 3. 2xx retransmission to a UDP caller ----------------------------------------------------

fn udp_carrier() -> (Peer, Ua) {
    let peer = Peer::udp("198.51.100.10:5060");
    let mut ua = carrier_ua(peer.clone(), "call-3@198.51.100.10");
    ua.target = "sip:+4930123456@192.0.2.1:5060".to_owned();
    ua.contact = "<sip:+4420555@198.51.100.10:5060>".to_owned();
    (peer, ua)
}

/// Times (ms after the first 200) at which the 200 was sent again within `window`.
fn retransmissions(h: &mut Harness, window: Duration) -> Vec<u128> {
    let start = h.now;
    let mut at = Vec::new();
    while h.now < start + window {
        h.advance(Duration::from_millis(50));
        for sent in h.take_sent() {
            assert_eq!(sent.status(), Some(200), "only the 200 is retransmitted");
            at.push((h.now - start).as_millis());
        }
    }
    at
}

#[test]
fn ok_to_udp_caller_is_retransmitted_until_ack() {
    let mut h = Harness::new(UDP_BOTH);
    let (peer, mut carrier) = udp_carrier();
    let offer = plain_offer("198.51.100.20", 40000, "a=sendrecv");
    let mut e = establish(&mut h, &peer, &Peer::pbx(), &offer, &pbx_answer());
    std::mem::swap(&mut e.carrier, &mut carrier);
    carrier.remote = e.ok.header("To").expect("To").to_owned();
    assert_eq!(e.ok.outbound.destination, addr("198.51.100.10:5060"));
    // T1, 2T1, 4T1, then capped at T2 (sends at 0.5, 1.5, 3.5, 7.5, 11.5 s).
    let at = retransmissions(&mut h, Duration::from_secs(12));
    assert_eq!(at, [500, 1500, 3500, 7500, 11500]);
    h.deliver(&peer, carrier.ack(1));
    assert!(
        retransmissions(&mut h, Duration::from_secs(20)).is_empty(),
        "ACK stops them"
    );
    assert_eq!(h.core.call_count(), 1, "the call goes on");
    // The PBX hangs up.
    h.deliver(&Peer::pbx(), e.pbx.request("BYE", None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["200", "BYE"]);
    let bye = sent[1].request().clone();
    h.deliver(&peer, reply(&bye, 200, None, &[], None));
    h.relay_ok();
    assert_eq!(h.ended().end_reason.as_deref(), Some("bye_callee"));
    h.assert_clean();
}

#[test]
fn no_ack_for_64_t1_ends_the_call_with_bye_on_both_legs() {
    let mut h = Harness::new(UDP_BOTH);
    let (peer, _) = udp_carrier();
    let offer = plain_offer("198.51.100.20", 40000, "a=sendrecv");
    let e = establish(&mut h, &peer, &Peer::pbx(), &offer, &pbx_answer());
    let answered = h.now;
    let mut byes = Vec::new();
    while h.now < answered + Duration::from_secs(40) && byes.is_empty() {
        h.advance(Duration::from_millis(100));
        for sent in h.take_sent() {
            if sent.method() == Some("BYE") {
                byes.push(sent);
            } else {
                assert_eq!(sent.status(), Some(200));
            }
        }
    }
    let elapsed = h.now - answered;
    assert!(
        elapsed >= Duration::from_secs(32) && elapsed <= Duration::from_millis(32_100),
        "gave up after {elapsed:?}, expected 64*T1"
    );
    assert_eq!(byes.len(), 2, "BYE to both legs");
    let destinations: Vec<_> = byes.iter().map(|b| b.outbound.destination).collect();
    assert!(
        destinations.contains(&addr("198.51.100.10:5060")) && destinations.contains(&addr(PBX))
    );
    let caller_bye = byes
        .iter()
        .find(|b| b.outbound.destination == addr("198.51.100.10:5060"))
        .expect("caller BYE");
    assert_eq!(
        caller_bye.request().headers.get("Call-ID"),
        Some("call-1@198.51.100.10")
    );
    assert_eq!(
        caller_bye.request().headers.get("From"),
        e.ok.header("To"),
        "our From is the To of our 200"
    );
    assert!(matches!(h.relay_request(), (_, RelayRequest::Delete)));
    for bye in &byes {
        let peer = if bye.outbound.destination == addr(PBX) {
            Peer::pbx()
        } else {
            peer.clone()
        };
        h.deliver(&peer, reply(bye.request(), 200, None, &[], None));
    }
    h.relay_ok();
    let record = h.ended();
    assert_eq!(record.end_reason.as_deref(), Some("no_ack"));
    assert_eq!(record.status, Some(200));
    h.assert_clean();
}

// ----- 4. CANCEL --------------------------------------------------------------------------------

fn cancel_for(invite: &[u8]) -> Vec<u8> {
    let Ok(Message::Request(invite)) = Message::parse(invite) else {
        panic!("invite")
    };
    let mut head = format!("CANCEL {} SIP/2.0\n", invite.uri);
    for name in ["Via", "From", "To", "Call-ID"] {
        let _ = writeln!(head, "{name}: {}", invite.headers.get(name).expect(name));
    }
    head.push_str("Max-Forwards: 70\nCSeq: 1 CANCEL\n");
    message(&head, None)
}

#[test]
fn cancel_while_ringing_cancels_the_callee() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let carrier_peer = Peer::carrier();
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-4@198.51.100.10");
    let invite = invite_from(&mut carrier, &[], Some(&carrier_offer("a=sendrecv")));
    h.deliver(&carrier_peer, invite.clone());
    h.take_sent();
    let (call, _) = h.relay_put();
    h.relay_ok();
    let to_pbx = h.one_sent().request().clone();
    h.deliver(&Peer::pbx(), reply(&to_pbx, 180, Some("pbx-4"), &[], None));
    assert_eq!(kinds(&h.take_sent()), ["180"]);

    h.deliver(&carrier_peer, cancel_for(&invite));
    let sent = h.take_sent();
    assert_eq!(
        kinds(&sent),
        ["200", "CANCEL", "487"],
        "200 to CANCEL, CANCEL on, 487 to INVITE"
    );
    assert_eq!(sent[0].header("CSeq"), Some("1 CANCEL"));
    assert_eq!(sent[2].header("CSeq"), Some("1 INVITE"));
    let cancel = sent[1].request().clone();
    assert_eq!(sent[1].outbound.destination, addr(PBX));
    assert_eq!(cancel.uri, to_pbx.uri);
    assert_eq!(
        cancel.headers.get("Via"),
        to_pbx.headers.get("Via"),
        "§9.1: same branch"
    );
    assert_eq!(cancel.headers.get("CSeq"), Some("1 CANCEL"));
    assert!(matches!(h.relay_request(), (c, RelayRequest::Delete) if c == call));

    // The PBX answers the CANCEL and 487s its INVITE: the transaction layer ACKs the 487.
    h.deliver(&Peer::pbx(), reply(&cancel, 200, Some("pbx-4"), &[], None));
    h.deliver(&Peer::pbx(), reply(&to_pbx, 487, Some("pbx-4"), &[], None));
    let ack = h.one_sent();
    assert_eq!(ack.method(), Some("ACK"));
    assert_eq!(
        ack.header("Via"),
        to_pbx.headers.get("Via"),
        "§17.1.1.3: the INVITE's branch"
    );
    // The carrier ACKs the 487 (§17.1.1.3: the INVITE's branch, the 487's To tag): absorbed.
    carrier.remote = sent[2].header("To").expect("To").to_owned();
    carrier.branches -= 1;
    let ack = carrier.request_with("ACK", 1, &[], None);
    h.deliver(&carrier_peer, ack);
    assert!(h.take_sent().is_empty());
    h.relay_ok();
    let record = h.ended();
    assert_eq!(record.status, Some(487));
    assert_eq!(record.end_reason.as_deref(), Some("cancel"));
    assert!(record.answered_unix_ms.is_none());
    assert_eq!(h.core.stats().calls_failed, 1);
    h.assert_clean();
}

#[test]
fn cancel_before_any_provisional_is_sent_once_the_180_arrives() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let carrier_peer = Peer::carrier();
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-4b@198.51.100.10");
    let invite = invite_from(&mut carrier, &[], Some(&carrier_offer("a=sendrecv")));
    h.deliver(&carrier_peer, invite.clone());
    h.take_sent();
    h.relay_ok();
    let to_pbx = h.one_sent().request().clone();

    h.deliver(&carrier_peer, cancel_for(&invite));
    assert_eq!(
        kinds(&h.take_sent()),
        ["200", "487"],
        "§9.1: no CANCEL before a provisional"
    );
    h.relay_ok();
    // The PBX's 100 Trying is not enough either; its 180 releases the CANCEL.
    h.deliver(&Peer::pbx(), reply(&to_pbx, 100, None, &[], None));
    assert!(h.take_sent().is_empty());
    h.deliver(&Peer::pbx(), reply(&to_pbx, 180, Some("pbx-4b"), &[], None));
    let cancel = h.one_sent();
    assert_eq!(cancel.method(), Some("CANCEL"));
    assert_eq!(cancel.header("Via"), to_pbx.headers.get("Via"));
    let cancel = cancel.request().clone();
    h.deliver(&Peer::pbx(), reply(&cancel, 200, Some("pbx-4b"), &[], None));
    h.deliver(&Peer::pbx(), reply(&to_pbx, 487, Some("pbx-4b"), &[], None));
    assert_eq!(kinds(&h.take_sent()), ["ACK"]);
    let record = h.ended();
    assert_eq!(record.end_reason.as_deref(), Some("cancel"));
    h.assert_clean();
}

#[test]
fn callee_answering_after_the_call_ended_gets_ack_and_bye() {
    // 200 crossing the CANCEL: the callee's dialog must not be left up.
    let mut h = Harness::new(CARRIER_TO_PBX);
    let carrier_peer = Peer::carrier();
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-4c@198.51.100.10");
    let invite = invite_from(&mut carrier, &[], Some(&carrier_offer("a=sendrecv")));
    h.deliver(&carrier_peer, invite.clone());
    h.take_sent();
    h.relay_ok();
    let to_pbx = h.one_sent().request().clone();
    h.deliver(&Peer::pbx(), reply(&to_pbx, 180, Some("pbx-4c"), &[], None));
    h.take_sent();
    h.deliver(&carrier_peer, cancel_for(&invite));
    assert_eq!(kinds(&h.take_sent()), ["200", "CANCEL", "487"]);
    h.relay_ok();
    assert_eq!(h.ended().end_reason.as_deref(), Some("cancel"));
    // A forged 2xx with our branch prefix but a branch we never sent: ignored.
    let attacker = Peer::udp("192.0.2.66:5060");
    let mut forged = to_pbx.clone();
    let via = forged.headers.get("Via").expect("Via").to_owned();
    let branch_at = via.find("branch=").expect("branch") + "branch=".len();
    let branch_end = via[branch_at..]
        .find(';')
        .map_or(via.len(), |i| branch_at + i);
    let forged_via = format!("{}ffff{}", &via[..branch_end - 4], &via[branch_end..]);
    assert!(forged_via[branch_at..].starts_with("z9hG4bK-scx"));
    assert_ne!(forged_via, via);
    forged.headers.set("Via", forged_via);
    h.deliver(
        &attacker,
        reply(
            &forged,
            200,
            Some("x"),
            &[("Contact", "<sip:x@192.0.2.66>")],
            Some(&pbx_answer()),
        ),
    );
    let sent = h.take_sent();
    assert!(
        sent.is_empty(),
        "no ACK/BYE for an INVITE we never sent: {:?}",
        kinds(&sent)
    );
    // The PBX had already answered; its 2xx (here arriving from another address, as
    // through a NAT rebinding or a spoofer) is answered where our INVITE went.
    h.deliver(
        &attacker,
        reply(
            &to_pbx,
            200,
            Some("pbx-4c"),
            &[("Contact", "<sip:pbx@10.0.0.20:5060>")],
            Some(&pbx_answer()),
        ),
    );
    let sent = h.take_sent();
    assert_eq!(
        kinds(&sent),
        ["ACK", "BYE"],
        "§15: ACK and BYE a 2xx that is no longer wanted"
    );
    // Both go where our INVITE went, not to wherever the 2xx came from.
    assert!(sent.iter().all(|s| s.outbound.destination == addr(PBX)));
    assert_eq!(sent[0].request().uri.to_string(), "sip:pbx@10.0.0.20:5060");
    let bye = sent[1].request().clone();
    assert_eq!(bye.uri.to_string(), "sip:pbx@10.0.0.20:5060");
    assert!(bye.headers.get("To").expect("To").ends_with(";tag=pbx-4c"));
    assert_eq!(bye.headers.get("Call-ID"), to_pbx.headers.get("Call-ID"));
    h.deliver(&Peer::pbx(), reply(&bye, 200, None, &[], None));
    h.assert_clean();
}

// ----- 5. failures ------------------------------------------------------------------------------

fn start_call(h: &mut Harness, call_id: &str) -> (Peer, Ua, Request) {
    let carrier_peer = Peer::carrier();
    let mut carrier = carrier_ua(carrier_peer.clone(), call_id);
    h.deliver(
        &carrier_peer,
        invite_from(&mut carrier, &[], Some(&carrier_offer("a=sendrecv"))),
    );
    assert_eq!(kinds(&h.take_sent()), ["100"]);
    h.relay_ok();
    let to_pbx = h.one_sent().request().clone();
    (carrier_peer, carrier, to_pbx)
}

#[test]
fn callee_busy_is_passed_on_and_the_session_deleted() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let (_, _, to_pbx) = start_call(&mut h, "call-5a@198.51.100.10");
    h.deliver(&Peer::pbx(), reply(&to_pbx, 486, Some("pbx-5"), &[], None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["ACK", "486"]);
    assert_eq!(sent[1].response().reason, "Busy Here");
    assert!(sent[1].response().headers.to().expect("To").tag().is_some());
    assert!(matches!(h.relay_request(), (_, RelayRequest::Delete)));
    h.relay_ok();
    let record = h.ended();
    assert_eq!(record.status, Some(486));
    assert_eq!(record.end_reason.as_deref(), Some("rejected"));
    h.assert_clean();
}

#[test]
fn callee_silence_is_a_408_after_timer_b() {
    let mut h =
        Harness::new(&CARRIER_TO_PBX.replace("ring_timeout_secs = 30", "ring_timeout_secs = 60"));
    let (_, _, _) = start_call(&mut h, "call-5b@198.51.100.10");
    let start = h.now;
    let mut final_at = None;
    while final_at.is_none() && h.now < start + Duration::from_secs(40) {
        h.advance(Duration::from_millis(500));
        for sent in h.take_sent() {
            match sent.kind().as_str() {
                "INVITE" => assert_eq!(
                    sent.outbound.destination,
                    addr(PBX),
                    "Timer A retransmission"
                ),
                "408" => final_at = Some(h.now - start),
                other => panic!("unexpected {other} at {:?}", h.now - start),
            }
        }
    }
    let final_at = final_at.expect("408 to the caller");
    assert!(
        final_at >= Duration::from_secs(32) && final_at <= Duration::from_millis(32_500),
        "{final_at:?}"
    );
    h.relay_ok();
    let record = h.ended();
    assert_eq!(record.status, Some(408));
    assert_eq!(record.end_reason.as_deref(), Some("callee_timeout"));
    h.assert_clean();
}

#[test]
fn ringing_too_long_is_a_408_and_a_cancel() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let (_, _, to_pbx) = start_call(&mut h, "call-5r@198.51.100.10");
    h.deliver(&Peer::pbx(), reply(&to_pbx, 180, Some("pbx-5r"), &[], None));
    assert_eq!(kinds(&h.take_sent()), ["180"]);
    h.advance(Duration::from_millis(29_900));
    assert!(h.take_sent().is_empty());
    h.advance(Duration::from_millis(100));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["CANCEL", "408"]);
    let cancel = sent[0].request().clone();
    h.deliver(&Peer::pbx(), reply(&cancel, 200, Some("pbx-5r"), &[], None));
    h.deliver(&Peer::pbx(), reply(&to_pbx, 487, Some("pbx-5r"), &[], None));
    assert_eq!(kinds(&h.take_sent()), ["ACK"]);
    h.relay_ok();
    let record = h.ended();
    assert_eq!(record.status, Some(408));
    assert_eq!(record.end_reason.as_deref(), Some("ring_timeout"));
    h.assert_clean();
}

#[test]
fn relay_failure_at_the_offer_is_503_without_calling_the_callee() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let carrier_peer = Peer::carrier();
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-5c@198.51.100.10");
    h.deliver(
        &carrier_peer,
        invite_from(&mut carrier, &[], Some(&carrier_offer("a=sendrecv"))),
    );
    assert_eq!(kinds(&h.take_sent()), ["100"]);
    h.relay_fail();
    let failed = h.one_sent();
    assert_eq!(failed.status(), Some(503));
    assert!(
        matches!(h.relay_request(), (_, RelayRequest::Delete)),
        "clean up whatever relayd holds"
    );
    h.relay_fail();
    let record = h.ended();
    assert_eq!(record.status, Some(503));
    assert_eq!(record.end_reason.as_deref(), Some("relay_error"));
    assert_eq!(h.core.stats().relay_errors, 2);
    h.assert_clean();
}

#[test]
fn plain_answer_to_a_mandatory_srtp_callee_is_bye_and_488() {
    let mut h = Harness::new(SECURE_BOTH);
    let carrier_peer = Peer::carrier();
    let pbx_peer = Peer::tls(PBX_TLS, PBX_CONN);
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-5d@198.51.100.10");
    h.deliver(
        &carrier_peer,
        invite_from(&mut carrier, &[], Some(&carrier_offer("a=sendrecv"))),
    );
    h.take_sent();
    h.relay_ok();
    let to_pbx = h.one_sent().request().clone();
    h.deliver(
        &pbx_peer,
        reply(
            &to_pbx,
            200,
            Some("pbx-5d"),
            &[("Contact", "<sips:pbx@10.0.0.20:5061>")],
            Some(&pbx_answer()),
        ),
    );
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["ACK", "BYE", "488"]);
    assert!(sent[1].header("To").expect("To").ends_with(";tag=pbx-5d"));
    assert_eq!(sent[1].request().uri.to_string(), "sips:pbx@10.0.0.20:5061");
    assert_eq!(
        sent[2].outbound.connection,
        Some(ConnectionId::from_raw(CARRIER_CONN))
    );
    let bye = sent[1].request().clone();
    h.deliver(&pbx_peer, reply(&bye, 200, None, &[], None));
    h.relay_ok();
    let record = h.ended();
    assert_eq!(record.status, Some(488));
    assert_eq!(record.end_reason.as_deref(), Some("callee_sdp_refused"));
    h.assert_clean();
}

#[test]
fn plain_offer_from_a_mandatory_srtp_carrier_is_488_without_relay() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let carrier_peer = Peer::carrier();
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-5e@198.51.100.10");
    let offer = plain_offer("198.51.100.20", 40000, "a=sendrecv");
    h.deliver(&carrier_peer, invite_from(&mut carrier, &[], Some(&offer)));
    let sent = h.one_sent();
    assert_eq!(sent.status(), Some(488));
    assert!(
        !sent.response().reason.is_empty() && sent.response().reason != "Not Acceptable Here",
        "a specific reason: {}",
        sent.response().reason
    );
    assert!(sent.response().headers.to().expect("To").tag().is_some());
    assert!(h.relay.is_empty());
    assert!(
        h.ended.is_empty() && h.updated.is_empty(),
        "no call was created"
    );
    // The carrier ACKs the 488 (same branch as the INVITE: hop-by-hop).
    let to = sent.header("To").expect("To").to_owned();
    carrier.remote = to;
    carrier.branches -= 1;
    h.deliver(&carrier_peer, carrier.request_with("ACK", 1, &[], None));
    assert!(h.take_sent().is_empty());
    h.assert_clean();
}

/// RFC 3261 §13.2.1 delayed offer: an INVITE without SDP. The callee offers in its 2xx, the
/// caller gets that offer (rewritten, keyed for its SRTP policy) in our 2xx and answers in its
/// ACK; the callee gets our answer in its ACK, sent only once relayd carries both legs.
#[test]
fn delayed_offer_is_carried_through_both_acks() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let carrier_peer = Peer::carrier();
    let pbx_peer = Peer::pbx();
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-5f@198.51.100.10");
    h.deliver(&carrier_peer, invite_from(&mut carrier, &[], None));
    // No media yet: no relay request; the callee gets an offerless INVITE at once.
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["100", "INVITE"]);
    assert!(h.relay.is_empty());
    let invite_to_pbx = sent[1].request().clone();
    assert!(invite_to_pbx.body.is_empty());
    // The PBX offers plain RTP in its 200: no ACK yet, the relay is programmed first.
    let pbx = Ua::callee(pbx_peer.clone(), &invite_to_pbx, "pbx-5f");
    let contact = pbx.contact.clone();
    h.deliver(
        &pbx_peer,
        reply(
            &invite_to_pbx,
            200,
            Some("pbx-5f"),
            &[("Contact", &contact)],
            Some(&pbx_answer()),
        ),
    );
    assert!(
        h.take_sent().is_empty(),
        "the callee's ACK waits for the caller's answer"
    );
    let (_, spec) = h.relay_put();
    let b0 = spec_leg(&spec, "b0");
    assert_eq!(
        b0.remote.map(|r| r.address.to_string()),
        Some(PBX_MEDIA.to_owned())
    );
    assert!(b0.inbound_crypto.is_none() && b0.outbound_crypto.is_none());
    h.relay_ok();
    // Our 200 to the carrier carries our offer: SRTP (the carrier trunk is mandatory).
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    let offer = sdp_text(ok.body());
    assert!(offer.contains("RTP/SAVP"), "{offer}");
    assert!(!cryptos(ok.body()).is_empty(), "{offer}");
    assert_eq!(
        sdp_line(ok.body(), "m=audio")
            .as_deref()
            .map(|m| m.contains(" 30000 ")),
        Some(true)
    );
    // The carrier answers in its ACK with tag 1.
    carrier.remote = ok.header("To").expect("To").to_owned();
    carrier.target = ok
        .header("Contact")
        .expect("Contact")
        .trim_matches(['<', '>'])
        .to_owned();
    let answer = carrier_offer("");
    h.deliver(
        &carrier_peer,
        carrier.request_with("ACK", 1, &[], Some(&answer)),
    );
    let (_, spec) = h.relay_put();
    assert_eq!(
        key_of(spec_leg(&spec, "a0").inbound_crypto.as_ref()),
        CARRIER_KEY
    );
    assert!(spec_leg(&spec, "a0").outbound_crypto.is_some());
    h.relay_ok();
    // Now the PBX gets its ACK with our plain answer pointing at the relay's b0 port.
    let ack = h.one_sent();
    assert_eq!(ack.method(), Some("ACK"));
    let body = sdp_text(ack.body());
    assert!(
        body.contains("RTP/AVP") && !body.contains("a=crypto"),
        "{body}"
    );
    assert_eq!(
        sdp_line(ack.body(), "m=audio")
            .as_deref()
            .map(|m| m.contains(" 30002 ")),
        Some(true)
    );
    // A retransmitted 200 from the PBX gets the same ACK again.
    h.deliver(
        &pbx_peer,
        reply(
            &invite_to_pbx,
            200,
            Some("pbx-5f"),
            &[("Contact", &contact)],
            Some(&pbx_answer()),
        ),
    );
    let again = h.take_sent();
    assert!(
        again
            .iter()
            .all(|s| s.method() == Some("ACK") && s.body() == ack.body()),
        "{:?}",
        kinds(&again)
    );
    // The carrier hangs up: the call ends as usual.
    h.deliver(&carrier_peer, carrier.request("BYE", None));
    let sent = h.take_sent();
    assert!(
        kinds(&sent).contains(&"200".to_owned()) && kinds(&sent).contains(&"BYE".to_owned()),
        "{:?}",
        kinds(&sent)
    );
    h.relay_drain();
    let record = h.ended();
    assert_eq!(record.end_reason.as_deref(), Some("bye_caller"));
    assert_eq!(
        record.legs[0].media.inbound_suite.as_deref(),
        Some(SUITE_80)
    );
    h.assert_clean();
}

/// A callee that answers an offerless INVITE without an offer is hung up; the caller gets 488.
#[test]
fn delayed_offer_without_an_offer_from_the_callee_fails_the_call() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let carrier_peer = Peer::carrier();
    let pbx_peer = Peer::pbx();
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-5f2@198.51.100.10");
    h.deliver(&carrier_peer, invite_from(&mut carrier, &[], None));
    let sent = h.take_sent();
    let invite_to_pbx = sent[1].request().clone();
    h.deliver(
        &pbx_peer,
        reply(
            &invite_to_pbx,
            200,
            Some("pbx-x"),
            &[("Contact", "<sip:pbx@10.0.0.20:5060>")],
            None,
        ),
    );
    let sent = h.take_sent();
    let kinds = kinds(&sent);
    assert!(
        kinds.contains(&"ACK".to_owned())
            && kinds.contains(&"BYE".to_owned())
            && kinds.contains(&"488".to_owned()),
        "{kinds:?}"
    );
    h.relay_drain();
    let record = h.ended();
    assert_eq!(record.status, Some(488));
    h.assert_clean();
}

#[test]
fn max_forwards_zero_is_483() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let carrier_peer = Peer::carrier();
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-5g@198.51.100.10");
    let invite = invite_from(&mut carrier, &[], Some(&carrier_offer("")));
    let invite = String::from_utf8(invite)
        .expect("utf8")
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    h.deliver(&carrier_peer, invite.into_bytes());
    assert_eq!(h.one_sent().status(), Some(483));
    assert!(h.relay.is_empty());
    h.assert_clean();
}

#[test]
fn unknown_source_without_route_is_refused() {
    // With no users configured, 127.0.0.1 is allowed unauthenticated: no route → 404.
    let mut h = Harness::new(CARRIER_TO_PBX);
    let phone = Peer::udp("127.0.0.1:5070");
    let mut ua = carrier_ua(phone.clone(), "call-5h@127.0.0.1");
    h.deliver(&phone, invite_from(&mut ua, &[], Some(&carrier_offer(""))));
    let sent = h.one_sent();
    assert_eq!(sent.status(), Some(404));
    assert_eq!(sent.outbound.destination, addr("127.0.0.1:5070"));
    // A source that is neither a trunk nor allowed is challenged (407) before any routing.
    let stranger = Peer::udp("203.0.113.9:5060");
    let mut ua = carrier_ua(stranger.clone(), "call-5i@203.0.113.9");
    h.deliver(
        &stranger,
        invite_from(&mut ua, &[], Some(&carrier_offer(""))),
    );
    let sent = h.one_sent();
    assert_eq!(sent.status(), Some(407));
    let challenges: Vec<&str> = sent
        .response()
        .headers
        .get_all("Proxy-Authenticate")
        .collect();
    assert_eq!(challenges.len(), 2);
    assert!(h.relay.is_empty());
    h.assert_clean();
}

#[test]
fn malformed_sip_is_400_with_a_reason_and_garbage_is_dropped() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let peer = Peer::udp("198.51.100.10:5060");
    // A Max-Forwards that is not a number.
    let bad = message(
        "OPTIONS sip:192.0.2.1 SIP/2.0
         Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-bad-1
         Max-Forwards: lots
         From: <sip:a@198.51.100.10>;tag=x
         To: <sip:192.0.2.1>
         Call-ID: bad-1
         CSeq: 1 OPTIONS",
        None,
    );
    h.deliver(&peer, bad);
    let sent = h.one_sent();
    assert_eq!(sent.status(), Some(400));
    assert!(
        sent.response().reason.contains("Max-Forwards"),
        "{}",
        sent.response().reason
    );
    assert_eq!(sent.header("CSeq"), Some("1 OPTIONS"));
    assert!(sent.response().headers.to().expect("To").tag().is_some());
    assert_eq!(sent.outbound.destination, addr("198.51.100.10:5060"));
    // Missing CSeq: a response could not carry one, so nothing is sent (RFC 3261 §8.2.6.2).
    let no_cseq = message(
        "OPTIONS sip:192.0.2.1 SIP/2.0
         Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-bad-2
         Max-Forwards: 70
         From: <sip:a@198.51.100.10>;tag=x
         To: <sip:192.0.2.1>
         Call-ID: bad-2",
        None,
    );
    h.deliver(&peer, no_cseq);
    assert!(h.take_sent().is_empty());
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"",
        b"\r\n\r\n",
        b"HELLO\r\n\r\n",
        &[0xff; 300],
    ] {
        h.deliver(&peer, garbage.to_vec());
        assert!(h.take_sent().is_empty());
    }
    assert_eq!(h.core.stats().parse_errors, 7);
    h.assert_clean();
}

// ----- 6. re-INVITEs ----------------------------------------------------------------------------

/// A confirmed TLS/SRTP call on both legs, the carrier's ACK sent.
fn secure_call(h: &mut Harness) -> Established {
    let mut e = establish(
        h,
        &Peer::carrier(),
        &Peer::tls(PBX_TLS, PBX_CONN),
        &carrier_offer("a=sendrecv"),
        &pbx_srtp_answer(PBX_MEDIA, 50000, 1, "a=sendrecv"),
    );
    e.pbx.contact = "<sips:pbx@10.0.0.20:5061>".to_owned();
    let ack = e.carrier.ack(1);
    h.deliver(&Peer::carrier(), ack);
    assert!(h.take_sent().is_empty());
    e
}

#[test]
fn hold_from_the_caller_keeps_every_key_and_bumps_each_origin_once() {
    let mut h = Harness::new(SECURE_BOTH);
    let mut e = secure_call(&mut h);
    let b_key = cryptos(&e.invite_to_pbx.body)[0].2.clone();
    let a_key = cryptos(e.ok.body())[0].2.clone();
    let b_version = origin_version(&e.invite_to_pbx.body);
    let a_version = origin_version(e.ok.body());

    // Hold: the same key, sendonly, the carrier's o= version bumped.
    let hold = carrier_offer("a=sendonly").replace("o=carrier 1000 1 ", "o=carrier 1000 2 ");
    let reinvite = e.carrier.request("INVITE", Some(&hold));
    h.deliver(&Peer::carrier(), reinvite);
    let to_pbx = h.one_sent();
    assert_eq!(to_pbx.outbound.transport, Transport::Tls);
    let to_pbx = to_pbx.request().clone();
    assert_eq!(to_pbx.method, Method::Invite);
    assert_eq!(
        to_pbx.uri.to_string(),
        "sips:pbx@10.0.0.20:5061",
        "the callee's Contact"
    );
    assert_eq!(to_pbx.headers.get("CSeq"), Some("2 INVITE"));
    assert!(to_pbx
        .headers
        .get("To")
        .expect("To")
        .ends_with(";tag=pbx-1"));
    assert!(sdp_text(&to_pbx.body).contains("a=sendonly"));
    let offered = cryptos(&to_pbx.body);
    assert_eq!(
        (offered[0].0, offered[0].1.as_str(), offered[0].2.as_str()),
        (1, SUITE_80, b_key.as_str()),
        "no re-key on hold"
    );
    assert_eq!(origin_version(&to_pbx.body), b_version + 1);
    assert!(
        h.relay.is_empty(),
        "relayd changes once the callee accepted"
    );

    // The PBX accepts (recvonly, its same key).
    let answer = pbx_srtp_answer(PBX_MEDIA, 50000, 2, "a=recvonly");
    h.deliver(
        &e.pbx.peer.clone(),
        reply(
            &to_pbx,
            200,
            None,
            &[("Contact", "<sips:pbx2@10.0.0.20:5061>")],
            Some(&answer),
        ),
    );
    let ack = h.one_sent();
    assert_eq!(ack.method(), Some("ACK"));
    assert_eq!(
        ack.request().uri.to_string(),
        "sips:pbx2@10.0.0.20:5061",
        "§12.2.1.2 target refresh"
    );
    assert_eq!(ack.header("CSeq"), Some("2 ACK"));
    let (_, spec) = h.relay_put();
    assert_eq!(
        key_of(spec_leg(&spec, "a0").outbound_crypto.as_ref()),
        a_key
    );
    assert_eq!(
        key_of(spec_leg(&spec, "a0").inbound_crypto.as_ref()),
        CARRIER_KEY
    );
    assert_eq!(
        key_of(spec_leg(&spec, "b0").outbound_crypto.as_ref()),
        b_key
    );
    assert_eq!(
        key_of(spec_leg(&spec, "b0").inbound_crypto.as_ref()),
        PBX_KEY
    );
    h.relay_ok();
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.header("CSeq"), Some("2 INVITE"));
    assert!(sdp_text(ok.body()).contains("a=recvonly"));
    let answered = cryptos(ok.body());
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].2, a_key, "the caller's key is unchanged");
    assert_eq!(origin_version(ok.body()), a_version + 1);
    assert_eq!(
        sdp_line(ok.body(), "m="),
        Some("m=audio 30000 RTP/SAVP 0 101".to_owned())
    );
    let ack = e.carrier.ack(2);
    h.deliver(&Peer::carrier(), ack);
    assert!(h.take_sent().is_empty());

    // Hang up.
    h.deliver(&Peer::carrier(), e.carrier.request("BYE", None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["200", "BYE"]);
    assert_eq!(sent[1].header("CSeq"), Some("3 BYE"));
    assert_eq!(
        sent[1].request().uri.to_string(),
        "sips:pbx2@10.0.0.20:5061"
    );
    let bye = sent[1].request().clone();
    h.deliver(&e.pbx.peer.clone(), reply(&bye, 200, None, &[], None));
    h.relay_ok();
    assert_eq!(h.ended().end_reason.as_deref(), Some("bye_caller"));
    h.assert_clean();
}

#[test]
fn callee_moving_its_media_reprograms_the_relay_and_glare_is_491() {
    let mut h = Harness::new(SECURE_BOTH);
    let mut e = secure_call(&mut h);
    let pbx_peer = e.pbx.peer.clone();
    let moved = pbx_srtp_answer("10.0.0.31", 50010, 2, "a=sendrecv");
    h.deliver(&pbx_peer, e.pbx.request("INVITE", Some(&moved)));
    let to_carrier = h.one_sent();
    assert_eq!(
        to_carrier.outbound.connection,
        Some(ConnectionId::from_raw(CARRIER_CONN))
    );
    let to_carrier = to_carrier.request().clone();
    assert_eq!(
        to_carrier.uri.to_string(),
        "sip:+4420555@198.51.100.10:5061;transport=tls"
    );
    assert_eq!(
        to_carrier.headers.get("From"),
        e.ok.header("To"),
        "our side of the caller's dialog"
    );
    assert_eq!(
        sdp_line(&to_carrier.body, "m="),
        Some("m=audio 30000 RTP/SAVP 0 101".to_owned())
    );

    // Glare: the carrier's own re-INVITE crosses ours: 491 (RFC 3261 §14.2); the PBX
    // sending a second one before its first is answered: 500 with Retry-After.
    h.deliver(
        &Peer::carrier(),
        e.carrier
            .request("INVITE", Some(&carrier_offer("a=sendrecv"))),
    );
    let glare = h.one_sent();
    assert_eq!(glare.status(), Some(491));
    assert!(glare.response().headers.to().expect("To").tag().is_some());
    h.deliver(&pbx_peer, e.pbx.request("INVITE", Some(&moved)));
    let pending = h.one_sent();
    assert_eq!(pending.status(), Some(500));
    assert!(pending.header("Retry-After").is_some());

    // The carrier answers our re-offer with its same key.
    let answer = carrier_offer("a=sendrecv").replace("o=carrier 1000 1 ", "o=carrier 1000 2 ");
    h.deliver(
        &Peer::carrier(),
        reply(
            &to_carrier,
            200,
            None,
            &[("Contact", "<sip:+4420555@198.51.100.10:5061;transport=tls>")],
            Some(&answer),
        ),
    );
    let ack = h.one_sent();
    assert_eq!(ack.method(), Some("ACK"));
    assert_eq!(
        ack.outbound.connection,
        Some(ConnectionId::from_raw(CARRIER_CONN))
    );
    let (_, spec) = h.relay_put();
    let b0 = spec_leg(&spec, "b0");
    assert_eq!(
        b0.remote.map(|r| (r.address, r.rtp_port)),
        Some((IpAddr::from([10, 0, 0, 31]), 50010))
    );
    assert_eq!(key_of(b0.inbound_crypto.as_ref()), PBX_KEY);
    h.relay_ok();
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.outbound.transport, Transport::Tls);
    assert_eq!(
        ok.header("CSeq"),
        Some(format!("{} INVITE", e.pbx.cseq - 1).as_str())
    );
    assert_eq!(
        sdp_line(ok.body(), "m="),
        Some("m=audio 30002 RTP/SAVP 0 101".to_owned())
    );
    assert_eq!(cryptos(ok.body()).len(), 1);
    let ack = e.pbx.ack(e.pbx.cseq - 1);
    h.deliver(&pbx_peer, ack);
    assert!(h.take_sent().is_empty());
    // The carrier's 200 retransmitted after our transaction is gone: ACKed again, no BYE.
    h.advance(Duration::from_secs(40));
    assert!(h.take_sent().is_empty());
    h.deliver(
        &Peer::carrier(),
        reply(
            &to_carrier,
            200,
            None,
            &[("Contact", "<sip:+4420555@198.51.100.10:5061;transport=tls>")],
            Some(&answer),
        ),
    );
    let again = h.one_sent();
    assert_eq!(again.method(), Some("ACK"));
    assert_eq!(
        again.header("CSeq"),
        to_carrier
            .headers
            .get("CSeq")
            .map(|c| c.replace("INVITE", "ACK"))
            .as_deref()
    );
    assert_eq!(h.core.call_count(), 1);
    h.deliver(&pbx_peer, e.pbx.request("BYE", None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["200", "BYE"]);
    let bye = sent[1].request().clone();
    h.deliver(&Peer::carrier(), reply(&bye, 200, None, &[], None));
    h.relay_ok();
    assert_eq!(h.ended().end_reason.as_deref(), Some("bye_callee"));
    h.assert_clean();
}

// ----- 7. in-dialog and out-of-dialog requests --------------------------------------------------

#[test]
fn bye_for_an_unknown_dialog_is_481_and_options_is_answered() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let peer = Peer::carrier();
    let mut ua = carrier_ua(peer.clone(), "nobody@198.51.100.10");
    ua.remote = "<sip:+4930123456@192.0.2.1>;tag=unknown".to_owned();
    h.deliver(&peer, ua.request("BYE", None));
    let sent = h.one_sent();
    assert_eq!(sent.status(), Some(481));
    assert_eq!(sent.header("Call-ID"), Some("nobody@198.51.100.10"));

    let mut ua = carrier_ua(peer.clone(), "options@198.51.100.10");
    h.deliver(&peer, ua.request_with("OPTIONS", 1, &[], None));
    let sent = h.one_sent();
    assert_eq!(sent.status(), Some(200));
    assert_eq!(sent.header("Allow"), Some(ALLOW));
    assert_eq!(sent.header("Accept"), Some("application/sdp"));
    assert!(sent.response().headers.to().expect("To").tag().is_some());
    // Out of dialog, anything else is 405 with Allow.
    h.deliver(&peer, ua.request_with("MESSAGE", 2, &[], None));
    let sent = h.one_sent();
    assert_eq!(sent.status(), Some(405));
    assert_eq!(sent.header("Allow"), Some(ALLOW));
    h.assert_clean();
}

#[test]
fn info_is_relayed_to_the_other_leg_and_its_answer_back() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let mut e = establish(
        &mut h,
        &Peer::carrier(),
        &Peer::pbx(),
        &carrier_offer("a=sendrecv"),
        &pbx_answer(),
    );
    h.deliver(&Peer::carrier(), e.carrier.ack(1));
    let dtmf = "Signal=5\nDuration=160";
    let info = e.carrier.request_with(
        "INFO",
        2,
        &[("Content-Type", "application/dtmf-relay")],
        Some(dtmf),
    );
    e.carrier.cseq = 2;
    h.deliver(&Peer::carrier(), info);
    let out = h.one_sent();
    assert_eq!(out.outbound.destination, addr(PBX));
    let out = out.request().clone();
    assert_eq!(out.method, Method::Info);
    assert_eq!(out.uri.to_string(), "sip:pbx@10.0.0.20:5060");
    assert_eq!(
        out.headers.get("Content-Type"),
        Some("application/dtmf-relay")
    );
    assert_eq!(out.body, b"Signal=5\r\nDuration=160\r\n");
    assert_eq!(out.headers.get("CSeq"), Some("2 INFO"));
    assert_eq!(
        out.headers.get("Call-ID"),
        e.invite_to_pbx.headers.get("Call-ID")
    );
    h.deliver(&Peer::pbx(), reply(&out, 200, None, &[], None));
    let back = h.one_sent();
    assert_eq!(back.status(), Some(200));
    assert_eq!(back.header("CSeq"), Some("2 INFO"));
    assert_eq!(
        back.outbound.connection,
        Some(ConnectionId::from_raw(CARRIER_CONN))
    );

    // An INFO the PBX never answers is 408 to the carrier after Timer F.
    h.deliver(&Peer::carrier(), e.carrier.request("INFO", None));
    assert_eq!(kinds(&h.take_sent()), ["INFO"]);
    let mut statuses = Vec::new();
    for _ in 0..70 {
        h.advance(Duration::from_millis(500));
        statuses.extend(h.take_sent().iter().filter_map(Sent::status));
    }
    assert_eq!(statuses, [408]);

    // An in-dialog request with an old CSeq is refused (§12.2.2).
    h.deliver(
        &Peer::carrier(),
        e.carrier.request_with("INFO", 1, &[], None),
    );
    assert_eq!(h.one_sent().status(), Some(500));
    // UPDATE is not supported.
    h.deliver(&Peer::carrier(), e.carrier.request("UPDATE", None));
    assert_eq!(h.one_sent().status(), Some(501));

    h.core.handle_media_timeout(h.now, UNIX_MS_T0, &e.call);
    h.pump();
    assert_eq!(kinds(&h.take_sent()), ["BYE", "BYE"]);
    h.relay_ok();
    assert_eq!(h.ended().end_reason.as_deref(), Some("media_timeout"));
    h.assert_clean();
}

// ----- 8. registrar -----------------------------------------------------------------------------

fn register(source: &str, transport: &str, cseq: u32, extra: &str) -> Vec<u8> {
    message(
        &format!(
            "REGISTER sip:example.com SIP/2.0
             Via: SIP/2.0/{transport} {source};branch=z9hG4bK-reg-{cseq}
             Max-Forwards: 70
             From: <sip:alice@example.com>;tag=reg1
             To: <sip:alice@example.com>
             Call-ID: reg-1@{source}
             CSeq: {cseq} REGISTER
             Contact: <sip:alice@{source};transport={}>
             Expires: 600
             {extra}",
            transport.to_ascii_lowercase()
        ),
        None,
    )
}

#[test]
fn registered_user_is_called_over_the_flow_it_registered_from() {
    let mut h = Harness::new(REGISTRAR);
    let phone = Peer::tcp("127.0.0.1:5070", 9);
    h.deliver(&phone, register("127.0.0.1:5070", "TCP", 1, ""));
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.outbound.connection, Some(ConnectionId::from_raw(9)));
    let contact = ok.header("Contact").expect("Contact");
    assert!(
        contact.starts_with("<sip:alice@127.0.0.1:5070;transport=tcp>"),
        "{contact}"
    );
    assert!(contact.contains("expires=600"), "{contact}");

    let carrier_peer = Peer::carrier();
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-8@198.51.100.10");
    carrier.target = "sip:alice@example.com".to_owned();
    h.deliver(
        &carrier_peer,
        invite_from(&mut carrier, &[], Some(&carrier_offer("a=sendrecv"))),
    );
    assert_eq!(kinds(&h.take_sent()), ["100"]);
    h.relay_ok();
    let invite = h.one_sent();
    assert_eq!(invite.outbound.transport, Transport::Tcp);
    assert_eq!(invite.outbound.destination, addr("127.0.0.1:5070"));
    assert_eq!(
        invite.outbound.connection,
        Some(ConnectionId::from_raw(9)),
        "the registered flow"
    );
    let invite = invite.request().clone();
    assert_eq!(
        invite.uri.to_string(),
        "sip:alice@127.0.0.1:5070;transport=tcp"
    );
    assert!(invite
        .headers
        .get("Via")
        .expect("Via")
        .starts_with("SIP/2.0/TCP "));
    // Endpoints default to best-effort SRTP (RFC 8643): RTP/AVP with a=crypto.
    assert_eq!(
        sdp_line(&invite.body, "m="),
        Some("m=audio 30002 RTP/AVP 0 101".to_owned())
    );
    assert!(!cryptos(&invite.body).is_empty());
    h.deliver(&phone, reply(&invite, 486, Some("alice-1"), &[], None));
    assert_eq!(kinds(&h.take_sent()), ["ACK", "486"]);
    h.relay_ok();
    assert_eq!(h.ended().legs[1].peer, "endpoint:sip:alice@example.com");

    // An AOR nobody registered is 480.
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-8b@198.51.100.10");
    carrier.target = "sip:bob@example.com".to_owned();
    h.deliver(
        &carrier_peer,
        invite_from(&mut carrier, &[], Some(&carrier_offer("a=sendrecv"))),
    );
    assert_eq!(h.one_sent().status(), Some(480));
    // The connection closes: the binding is gone.
    h.core.handle_connection_closed(
        ConnectionId::from_raw(9),
        addr("127.0.0.1:5070"),
        Transport::Tcp,
    );
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-8c@198.51.100.10");
    carrier.target = "sip:alice@example.com".to_owned();
    h.deliver(
        &carrier_peer,
        invite_from(&mut carrier, &[], Some(&carrier_offer("a=sendrecv"))),
    );
    assert_eq!(h.one_sent().status(), Some(480));
    h.assert_clean();
}

fn param<'v>(challenge: &'v str, name: &str) -> &'v str {
    let start = challenge.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
    let rest = &challenge[start..];
    &rest[..rest.find('"').expect("closing quote")]
}

fn authorization(challenge: &str, password: &str, nc: &str) -> String {
    let (algorithm, token) = if challenge.contains("algorithm=SHA-256") {
        (Algorithm::Sha256, "SHA-256")
    } else {
        (Algorithm::Md5, "MD5")
    };
    let nonce = param(challenge, "nonce");
    let response = ClientCredentials {
        algorithm,
        username: "alice",
        realm: "example.com",
        password,
        method: "REGISTER",
        digest_uri: "sip:example.com",
        nonce,
        nc,
        cnonce: "0a4f113b",
    }
    .response();
    format!(
        "Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", \
         uri=\"sip:example.com\", response=\"{response}\", algorithm={token}, cnonce=\"0a4f113b\", \
         opaque=\"{}\", qop=auth, nc={nc}",
        param(challenge, "opaque")
    )
}

#[test]
fn register_from_elsewhere_needs_digest_credentials() {
    let mut h = Harness::new(REGISTRAR);
    let phone = Peer::udp("203.0.113.5:5060");
    h.deliver(&phone, register("203.0.113.5:5060", "UDP", 1, ""));
    let challenge = h.one_sent();
    assert_eq!(challenge.status(), Some(401));
    let values: Vec<String> = challenge
        .response()
        .headers
        .get_all("WWW-Authenticate")
        .map(str::to_owned)
        .collect();
    assert_eq!(values.len(), 2);
    assert!(values[0].contains("algorithm=SHA-256") && values[0].contains("realm=\"example.com\""));
    assert!(values[1].contains("algorithm=MD5"));
    assert_eq!(
        h.core
            .registrar()
            .lookup("sip:alice@example.com", UNIX_MS_T0 / 1000)
            .len(),
        0
    );

    // The right password (SHA-256) registers.
    h.deliver(
        &phone,
        register(
            "203.0.113.5:5060",
            "UDP",
            2,
            &authorization(&values[0], "wonderland", "00000001"),
        ),
    );
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    assert!(ok
        .header("Contact")
        .expect("Contact")
        .contains("expires=600"));
    assert_eq!(
        h.core
            .registrar()
            .lookup("sip:alice@example.com", UNIX_MS_T0 / 1000)
            .len(),
        1
    );
    // MD5 works too.
    h.deliver(
        &phone,
        register(
            "203.0.113.5:5060",
            "UDP",
            3,
            &authorization(&values[1], "wonderland", "00000002"),
        ),
    );
    assert_eq!(h.one_sent().status(), Some(200));

    // A wrong password is challenged again.
    h.deliver(
        &phone,
        register(
            "203.0.113.5:5060",
            "UDP",
            4,
            &authorization(&values[0], "looking-glass", "00000003"),
        ),
    );
    let again = h.one_sent();
    assert_eq!(again.status(), Some(401));
    assert_eq!(
        again.response().headers.get_all("WWW-Authenticate").count(),
        2
    );
    assert_eq!(h.core.stats().auth_failures, 1);
    assert_eq!(h.core.stats().registrations, 2);
    h.assert_clean();
}

// ----- 9. relayd restarts and media timeouts ----------------------------------------------------

#[test]
fn relay_restart_reprograms_every_live_call_and_media_timeout_ends_one() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let e = establish(
        &mut h,
        &Peer::carrier(),
        &Peer::pbx(),
        &carrier_offer("a=sendrecv"),
        &pbx_answer(),
    );
    let (_, _, ringing) = start_call(&mut h, "call-9@198.51.100.10");
    h.deliver(&Peer::pbx(), reply(&ringing, 180, Some("pbx-9"), &[], None));
    h.take_sent();
    assert_eq!(h.core.call_count(), 2);

    h.core.handle_relay_boot("boot-x");
    h.core.handle_relay_boot("boot-x");
    h.pump();
    assert!(
        h.relay.is_empty(),
        "the first boot id seen and the same one again change nothing"
    );
    h.core.handle_relay_boot("boot-y");
    h.pump();
    let mut calls: Vec<String> = h
        .relay
        .iter()
        .map(|(call, request)| {
            let RelayRequest::Put(spec) = request else {
                panic!("expected PUTs")
            };
            assert_eq!(spec.legs.len(), 2);
            call.clone()
        })
        .collect();
    calls.sort();
    assert_eq!(calls.len(), 2);
    assert!(calls.contains(&e.call));
    let confirmed_put = h
        .relay
        .iter()
        .find(|(c, _)| *c == e.call)
        .cloned()
        .expect("put");
    let RelayRequest::Put(spec) = confirmed_put.1 else {
        unreachable!()
    };
    assert_eq!(
        spec_leg(&spec, "b0").remote.map(|r| r.rtp_port),
        Some(50000)
    );
    assert_eq!(
        key_of(spec_leg(&spec, "a0").inbound_crypto.as_ref()),
        CARRIER_KEY
    );
    h.relay_drain();
    assert!(h.take_sent().is_empty(), "re-programming sends no SIP");
    assert_eq!(h.core.stats().relay_restarts, 1);

    // Media timeout: only confirmed calls are ended.
    let ringing_call = calls
        .iter()
        .find(|c| **c != e.call)
        .expect("ringing")
        .clone();
    h.core
        .handle_media_timeout(h.now, UNIX_MS_T0, &ringing_call);
    h.pump();
    assert!(h.take_sent().is_empty());
    h.core.handle_media_timeout(h.now, UNIX_MS_T0, &e.call);
    h.pump();
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["BYE", "BYE"]);
    assert_eq!(
        sent[0].outbound.connection,
        Some(ConnectionId::from_raw(CARRIER_CONN))
    );
    assert_eq!(sent[1].outbound.destination, addr(PBX));
    h.deliver(
        &Peer::carrier(),
        reply(sent[0].request(), 200, None, &[], None),
    );
    h.deliver(&Peer::pbx(), reply(sent[1].request(), 200, None, &[], None));
    h.relay_ok();
    let record = h.ended();
    assert_eq!(record.end_reason.as_deref(), Some("media_timeout"));
    // The ringing call gives up at its ring timeout.
    h.relay_drain();
    h.advance(Duration::from_secs(30));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["CANCEL", "408"]);
    h.deliver(
        &Peer::pbx(),
        reply(sent[0].request(), 200, Some("pbx-9"), &[], None),
    );
    h.deliver(&Peer::pbx(), reply(&ringing, 487, Some("pbx-9"), &[], None));
    assert_eq!(kinds(&h.take_sent()), ["ACK"]);
    h.assert_clean();
}

/// RFC 3261 §9.1: "If no final response is received within 64*T1 seconds after the CANCEL
/// was sent, the client transaction SHOULD be destroyed": a callee that ignores our CANCEL
/// must not leak its INVITE client transaction.
#[test]
fn callee_ignoring_cancel_does_not_leak_its_invite_transaction() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let (_, _, to_pbx) = start_call(&mut h, "call-9i@198.51.100.10");
    h.deliver(&Peer::pbx(), reply(&to_pbx, 180, Some("pbx-9i"), &[], None));
    assert_eq!(kinds(&h.take_sent()), ["180"]);
    h.advance(Duration::from_secs(30));
    assert_eq!(kinds(&h.take_sent()), ["CANCEL", "408"]);
    h.relay_ok();
    // The PBX ignores the CANCEL and never answers the INVITE.
    assert_eq!(
        h.core.tx.len(),
        3,
        "INVITE server, INVITE client, CANCEL client"
    );
    h.advance(Duration::from_secs(64));
    assert_eq!(
        h.core.tx.len(),
        0,
        "64*T1 after the CANCEL the INVITE transaction is gone"
    );
    h.assert_clean();
}

// ----- more paths -------------------------------------------------------------------------------

#[test]
fn early_media_goes_through_the_relay_and_the_answer_keeps_the_origin() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let (carrier_peer, mut carrier, to_pbx) = start_call(&mut h, "call-em@198.51.100.10");
    h.deliver(
        &Peer::pbx(),
        reply(
            &to_pbx,
            183,
            Some("pbx-em"),
            &[("Contact", "<sip:pbx@10.0.0.20:5060>")],
            Some(&pbx_answer()),
        ),
    );
    let (_, spec) = h.relay_put();
    assert_eq!(
        spec_leg(&spec, "b0").remote.map(|r| r.rtp_port),
        Some(50000)
    );
    let progress = h.one_sent();
    assert_eq!(progress.status(), Some(183));
    assert_eq!(
        sdp_line(progress.body(), "m="),
        Some("m=audio 30000 RTP/SAVP 0 101".to_owned())
    );
    let early_key = cryptos(progress.body())[0].2.clone();
    let early_version = origin_version(progress.body());
    h.relay_ok();
    assert!(h.take_sent().is_empty());
    h.deliver(
        &Peer::pbx(),
        reply(
            &to_pbx,
            200,
            Some("pbx-em"),
            &[("Contact", "<sip:pbx@10.0.0.20:5060>")],
            Some(&pbx_answer()),
        ),
    );
    assert_eq!(kinds(&h.take_sent()), ["ACK"]);
    h.relay_ok();
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(cryptos(ok.body())[0].2, early_key);
    assert_eq!(
        origin_version(ok.body()),
        early_version,
        "same SDP, same version"
    );
    carrier.remote = ok.header("To").expect("To").to_owned();
    carrier.target = "sip:c@192.0.2.1:5061;transport=tls".to_owned();
    h.deliver(&carrier_peer, carrier.ack(1));
    h.deliver(&carrier_peer, carrier.request("BYE", None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["200", "BYE"]);
    h.deliver(&Peer::pbx(), reply(sent[1].request(), 200, None, &[], None));
    h.relay_ok();
    assert_eq!(h.ended().status, Some(200));
    h.assert_clean();
}

#[test]
fn refused_reinvite_is_passed_back_and_the_call_goes_on() {
    let mut h = Harness::new(SECURE_BOTH);
    let mut e = secure_call(&mut h);
    let hold = carrier_offer("a=sendonly").replace("o=carrier 1000 1 ", "o=carrier 1000 2 ");
    h.deliver(&Peer::carrier(), e.carrier.request("INVITE", Some(&hold)));
    let to_pbx = h.one_sent().request().clone();
    h.deliver(&e.pbx.peer.clone(), reply(&to_pbx, 488, None, &[], None));
    let sent = h.take_sent();
    assert_eq!(
        kinds(&sent),
        ["ACK", "488"],
        "the layer ACKs the 488; the carrier gets it"
    );
    assert_eq!(sent[1].header("CSeq"), Some("2 INVITE"));
    assert!(h.relay.is_empty(), "relayd unchanged");
    assert_eq!(h.core.call_count(), 1);
    // A later re-INVITE works again and still keeps the keys.
    let b_key = cryptos(&e.invite_to_pbx.body)[0].2.clone();
    let hold = carrier_offer("a=sendonly").replace("o=carrier 1000 1 ", "o=carrier 1000 3 ");
    h.deliver(&Peer::carrier(), e.carrier.request("INVITE", Some(&hold)));
    let to_pbx = h.one_sent().request().clone();
    assert_eq!(cryptos(&to_pbx.body)[0].2, b_key);
    h.deliver(
        &e.pbx.peer.clone(),
        reply(
            &to_pbx,
            200,
            None,
            &[("Contact", "<sips:pbx@10.0.0.20:5061>")],
            Some(&pbx_srtp_answer(PBX_MEDIA, 50000, 2, "a=recvonly")),
        ),
    );
    assert_eq!(kinds(&h.take_sent()), ["ACK"]);
    h.relay_ok();
    assert_eq!(h.one_sent().status(), Some(200));
    // The callee ends the dialog with 481 to a re-INVITE: the call is over (§14.1).
    h.deliver(
        &Peer::carrier(),
        e.carrier.request(
            "INVITE",
            Some(&carrier_offer("a=sendrecv").replace("o=carrier 1000 1 ", "o=carrier 1000 4 ")),
        ),
    );
    let to_pbx = h.one_sent().request().clone();
    h.deliver(&e.pbx.peer.clone(), reply(&to_pbx, 481, None, &[], None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["ACK", "481", "BYE", "BYE"]);
    for bye in &sent[2..] {
        let peer = if bye.outbound.connection == Some(ConnectionId::from_raw(CARRIER_CONN)) {
            Peer::carrier()
        } else {
            e.pbx.peer.clone()
        };
        h.deliver(&peer, reply(bye.request(), 200, None, &[], None));
    }
    h.relay_ok();
    assert_eq!(h.ended().end_reason.as_deref(), Some("reinvite_failed"));
    h.assert_clean();
}

#[test]
fn reinvite_answer_to_a_udp_peer_is_retransmitted_until_ack() {
    let mut h = Harness::new(UDP_BOTH);
    let (peer, mut carrier) = udp_carrier();
    let offer = plain_offer("198.51.100.20", 40000, "a=sendrecv");
    let e = establish_call(
        &mut h,
        "call-3@198.51.100.10",
        &peer,
        &Peer::pbx(),
        &offer,
        &pbx_answer(),
    );
    carrier.remote = e.ok.header("To").expect("To").to_owned();
    h.deliver(&peer, carrier.ack(1));
    // Session refresh without SDP: answered at once with our current SDP as the offer.
    h.deliver(&peer, carrier.request("INVITE", None));
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.header("CSeq"), Some("2 INVITE"));
    assert_eq!(
        origin_version(ok.body()),
        origin_version(e.ok.body()),
        "nothing changed"
    );
    assert_eq!(
        retransmissions(&mut h, Duration::from_millis(1600)),
        [500, 1500]
    );
    h.deliver(&peer, carrier.ack(2));
    assert!(retransmissions(&mut h, Duration::from_secs(5)).is_empty());
    h.deliver(&peer, carrier.request("BYE", None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["200", "BYE"]);
    h.deliver(&Peer::pbx(), reply(sent[1].request(), 200, None, &[], None));
    h.relay_ok();
    h.assert_clean();
}

#[test]
fn callee_2xx_retransmissions_are_acked_again() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let mut e = establish(
        &mut h,
        &Peer::carrier(),
        &Peer::pbx(),
        &carrier_offer("a=sendrecv"),
        &pbx_answer(),
    );
    h.deliver(&Peer::carrier(), e.carrier.ack(1));
    let ok_again = reply(
        &e.invite_to_pbx,
        200,
        Some("pbx-1"),
        &[("Contact", "<sip:pbx@10.0.0.20:5060>")],
        Some(&pbx_answer()),
    );
    h.deliver(&Peer::pbx(), ok_again.clone());
    let ack = h.one_sent();
    assert_eq!(ack.method(), Some("ACK"));
    assert_eq!(ack.header("CSeq"), Some("1 ACK"));
    assert!(h.relay.is_empty(), "a retransmission changes nothing");
    // After the transaction is gone (Timer M), the dialog still re-ACKs.
    h.advance(Duration::from_secs(40));
    h.take_sent();
    h.deliver(&Peer::pbx(), ok_again);
    assert_eq!(h.one_sent().method(), Some("ACK"));
    h.deliver(&Peer::carrier(), e.carrier.request("BYE", None));
    let sent = h.take_sent();
    h.deliver(&Peer::pbx(), reply(sent[1].request(), 200, None, &[], None));
    h.relay_ok();
    h.assert_clean();
}

#[test]
fn send_failure_towards_the_callee_fails_the_call() {
    let mut h = Harness::new(SECURE_BOTH);
    let carrier_peer = Peer::carrier();
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-sf@198.51.100.10");
    h.deliver(
        &carrier_peer,
        invite_from(&mut carrier, &[], Some(&carrier_offer("a=sendrecv"))),
    );
    h.take_sent();
    h.relay_ok();
    // Grab the transaction of the INVITE from the output itself.
    let _ = h.one_sent();
    let tx = h
        .core
        .calls
        .values()
        .find_map(|c| c.b_invite)
        .expect("callee INVITE transaction");
    let unix_ms = h.unix_ms();
    h.core.handle_send_failure(h.now, unix_ms, tx.into());
    h.pump();
    let failed = h.one_sent();
    assert!(
        matches!(failed.status(), Some(408 | 502 | 503)),
        "{:?}",
        failed.status()
    );
    h.relay_ok();
    assert!(h.ended().end_reason.is_some());
    h.assert_clean();
}

#[test]
fn our_own_invite_coming_back_is_a_loop() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let (_, _, to_pbx) = start_call(&mut h, "call-loop@198.51.100.10");
    // The PBX routes it straight back to us (adding its own Via on top).
    let mut looped = String::from_utf8(to_pbx.to_bytes()).expect("utf8");
    looped = looped.replacen(
        "Via: ",
        "Via: SIP/2.0/UDP 10.0.0.20:5060;branch=z9hG4bK-pbx-loop\r\nVia: ",
        1,
    );
    h.deliver(&Peer::pbx(), looped.into_bytes());
    let sent = h.one_sent();
    assert_eq!(sent.status(), Some(482));
    assert_eq!(h.core.call_count(), 1);
    h.deliver(&Peer::pbx(), reply(&to_pbx, 503, Some("x"), &[], None));
    h.take_sent();
    h.relay_ok();
    h.assert_clean();
}

#[test]
fn calls_beyond_max_calls_get_503() {
    let mut h = Harness::new(&CARRIER_TO_PBX.replace("[sip]\n", "[sip]\nmax_calls = 1\n"));
    let (_, _, to_pbx) = start_call(&mut h, "call-max1@198.51.100.10");
    let carrier_peer = Peer::carrier();
    let mut second = carrier_ua(carrier_peer.clone(), "call-max2@198.51.100.10");
    h.deliver(
        &carrier_peer,
        invite_from(&mut second, &[], Some(&carrier_offer(""))),
    );
    assert_eq!(h.one_sent().status(), Some(503));
    h.deliver(&Peer::pbx(), reply(&to_pbx, 404, Some("x"), &[], None));
    assert_eq!(kinds(&h.take_sent()), ["ACK", "404"]);
    h.relay_ok();
    h.assert_clean();
}

#[test]
fn pending_reinvite_is_answered_when_the_call_ends_under_it() {
    let mut h = Harness::new(SECURE_BOTH);
    let mut e = secure_call(&mut h);
    let pbx_peer = e.pbx.peer.clone();
    let hold = carrier_offer("a=sendonly").replace("o=carrier 1000 1 ", "o=carrier 1000 2 ");
    h.deliver(&Peer::carrier(), e.carrier.request("INVITE", Some(&hold)));
    let to_pbx = h.one_sent().request().clone();
    // The PBX hangs up instead of answering.
    h.deliver(&pbx_peer, e.pbx.request("BYE", None));
    let sent = h.take_sent();
    assert_eq!(
        kinds(&sent),
        ["200", "BYE", "487"],
        "the carrier's re-INVITE is answered"
    );
    assert_eq!(sent[2].header("CSeq"), Some("2 INVITE"));
    assert_eq!(
        sent[1].header("CSeq"),
        Some("1 BYE"),
        "our own CSeq space in the carrier's dialog"
    );
    h.deliver(
        &Peer::carrier(),
        reply(sent[1].request(), 200, None, &[], None),
    );
    // The PBX's late 487 to our re-INVITE is ACKed by the layer.
    h.deliver(&pbx_peer, reply(&to_pbx, 487, None, &[], None));
    assert_eq!(kinds(&h.take_sent()), ["ACK"]);
    h.relay_ok();
    assert_eq!(h.ended().end_reason.as_deref(), Some("bye_callee"));
    h.assert_clean();
}

#[test]
fn reinvite_without_answer_is_408_and_ends_the_call() {
    let mut h = Harness::new(UDP_BOTH);
    let (peer, mut carrier) = udp_carrier();
    let offer = plain_offer("198.51.100.20", 40000, "a=sendrecv");
    let e = establish_call(
        &mut h,
        "call-3@198.51.100.10",
        &peer,
        &Peer::pbx(),
        &offer,
        &pbx_answer(),
    );
    carrier.remote = e.ok.header("To").expect("To").to_owned();
    h.deliver(&peer, carrier.ack(1));
    h.deliver(
        &peer,
        carrier.request(
            "INVITE",
            Some(&plain_offer("198.51.100.20", 40000, "a=sendonly")),
        ),
    );
    assert_eq!(kinds(&h.take_sent()), ["INVITE"]);
    let mut seen = Vec::new();
    for _ in 0..70 {
        h.advance(Duration::from_millis(500));
        seen.extend(
            h.take_sent()
                .into_iter()
                .filter(|s| s.method() != Some("INVITE")),
        );
    }
    let got: Vec<String> = seen
        .iter()
        .map(Sent::kind)
        .filter(|k| k != "BYE" && k != "100")
        .collect();
    assert_eq!(
        got.first().map(String::as_str),
        Some("408"),
        "{:?}",
        kinds(&seen)
    );
    assert!(seen.iter().filter(|s| s.method() == Some("BYE")).count() >= 2);
    for bye in seen.iter().filter(|s| s.method() == Some("BYE")) {
        let peer = if bye.outbound.destination == addr(PBX) {
            Peer::pbx()
        } else {
            peer.clone()
        };
        h.deliver(&peer, reply(bye.request(), 200, None, &[], None));
    }
    h.relay_ok();
    assert_eq!(h.ended().end_reason.as_deref(), Some("reinvite_timeout"));
    h.assert_clean();
}

#[test]
fn info_answer_after_the_call_ended_still_reaches_the_sender() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let mut e = establish(
        &mut h,
        &Peer::carrier(),
        &Peer::pbx(),
        &carrier_offer("a=sendrecv"),
        &pbx_answer(),
    );
    h.deliver(&Peer::carrier(), e.carrier.ack(1));
    h.deliver(&Peer::carrier(), e.carrier.request("INFO", None));
    let info = h.one_sent().request().clone();
    h.core.handle_media_timeout(h.now, UNIX_MS_T0, &e.call);
    h.pump();
    let byes = h.take_sent();
    assert_eq!(kinds(&byes), ["BYE", "BYE"]);
    h.relay_ok();
    assert_eq!(h.ended().end_reason.as_deref(), Some("media_timeout"));
    h.deliver(&Peer::pbx(), reply(&info, 200, None, &[], None));
    let back = h.one_sent();
    assert_eq!(back.status(), Some(200));
    assert_eq!(back.header("CSeq"), Some("2 INFO"));
    h.deliver(
        &Peer::carrier(),
        reply(byes[0].request(), 200, None, &[], None),
    );
    h.deliver(&Peer::pbx(), reply(byes[1].request(), 200, None, &[], None));
    h.assert_clean();
}

#[test]
fn relay_failure_under_a_reinvite_answers_it_and_ends_the_call() {
    let mut h = Harness::new(SECURE_BOTH);
    let mut e = secure_call(&mut h);
    let hold = carrier_offer("a=sendonly").replace("o=carrier 1000 1 ", "o=carrier 1000 2 ");
    h.deliver(&Peer::carrier(), e.carrier.request("INVITE", Some(&hold)));
    let to_pbx = h.one_sent().request().clone();
    let answer = pbx_srtp_answer(PBX_MEDIA, 50000, 2, "a=recvonly");
    h.deliver(
        &e.pbx.peer.clone(),
        reply(&to_pbx, 200, None, &[], Some(&answer)),
    );
    assert_eq!(kinds(&h.take_sent()), ["ACK"]);
    h.relay_fail();
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["500", "BYE", "BYE"]);
    assert_eq!(sent[0].header("CSeq"), Some("2 INVITE"));
    h.deliver(
        &Peer::carrier(),
        reply(sent[1].request(), 200, None, &[], None),
    );
    h.deliver(
        &e.pbx.peer.clone(),
        reply(sent[2].request(), 200, None, &[], None),
    );
    h.relay_ok();
    assert_eq!(h.ended().end_reason.as_deref(), Some("relay_error"));
    h.assert_clean();
}

#[test]
fn refused_reinvites_leave_the_media_as_it_was() {
    let mut h = Harness::new(SECURE_BOTH);
    let mut e = secure_call(&mut h);
    // A second stream would change the number of streams: refused, nothing changes.
    let two = format!("{}\nm=video 40002 RTP/SAVP 96\na=rtpmap:96 H264/90000\na=crypto:1 {SUITE_80} inline:{CARRIER_KEY}", carrier_offer("a=sendrecv"));
    h.deliver(&Peer::carrier(), e.carrier.request("INVITE", Some(&two)));
    assert_eq!(h.one_sent().status(), Some(488));
    // An offer the carrier's policy refuses (plain RTP on a mandatory trunk): 488 too.
    h.deliver(
        &Peer::carrier(),
        e.carrier
            .request("INVITE", Some(&plain_offer("198.51.100.20", 40000, ""))),
    );
    assert_eq!(h.one_sent().status(), Some(488));
    // An offerless refresh still shows the unchanged media and origin.
    h.deliver(&Peer::carrier(), e.carrier.request("INVITE", None));
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        sdp_text(ok.body()),
        sdp_text(e.ok.body()),
        "same SDP, same o= version"
    );
    h.deliver(&Peer::carrier(), e.carrier.request("BYE", None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["200", "BYE"]);
    h.deliver(
        &e.pbx.peer.clone(),
        reply(sent[1].request(), 200, None, &[], None),
    );
    h.relay_ok();
    h.assert_clean();
}

#[test]
fn reinvite_refused_on_its_second_stream_leaves_the_first_untouched() {
    // Carrier plain/optional over UDP, PBX SRTP mandatory over TLS, two audio streams.
    let config = UDP_BOTH.replace(
        "uri = \"sip:10.0.0.20:5060;transport=udp\"\nallow_from = [\"10.0.0.0/24\"]\nsrtp = \"off\"",
        "uri = \"sips:10.0.0.20:5061\"\nallow_from = [\"10.0.0.0/24\"]\nsrtp = \"mandatory\"",
    );
    let mut h = Harness::new(&config);
    let (peer, mut carrier) = udp_carrier();
    let second = "m=audio 40002 RTP/AVP 0\na=rtpmap:0 PCMU/8000";
    let offer = format!("{}\n{second}", plain_offer("198.51.100.20", 40000, ""));
    let pbx_peer = Peer::tls(PBX_TLS, PBX_CONN);
    let answer = format!(
        "{}\nm=audio 50002 RTP/SAVP 0\na=rtpmap:0 PCMU/8000\na=crypto:1 {SUITE_80} inline:{PBX_KEY}",
        pbx_srtp_answer(PBX_MEDIA, 50000, 1, "")
    );
    let e = establish_call(
        &mut h,
        "call-3@198.51.100.10",
        &peer,
        &pbx_peer,
        &offer,
        &answer,
    );
    carrier.remote = e.ok.header("To").expect("To").to_owned();
    h.deliver(&peer, carrier.ack(1));
    // Stream 0 moves, stream 1 becomes T.38, which an SRTP-mandatory leg cannot carry.
    let reoffer = format!(
        "{}\nm=image 40004 udptl t38",
        plain_offer("198.51.100.20", 41000, "").replace("3000 1 IN", "3000 2 IN")
    );
    h.deliver(&peer, carrier.request("INVITE", Some(&reoffer)));
    let refused = h.take_sent();
    assert_eq!(kinds(&refused), ["488"]);
    // relayd is re-programmed (restart): stream 0 still points at the old port.
    h.core.handle_relay_boot("a");
    h.core.handle_relay_boot("b");
    h.pump();
    let (_, spec) = h.relay_put();
    assert_eq!(
        spec_leg(&spec, "a0").remote.map(|r| r.rtp_port),
        Some(40000)
    );
    assert_eq!(
        spec_leg(&spec, "a1").remote.map(|r| r.rtp_port),
        Some(40002)
    );
    h.relay_ok();
    h.deliver(&peer, carrier.request("BYE", None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["200", "BYE"]);
    h.deliver(&pbx_peer, reply(sent[1].request(), 200, None, &[], None));
    h.relay_ok();
    h.assert_clean();
}

#[test]
fn endpoint_invite_from_elsewhere_is_challenged_then_accepted_with_proxy_credentials() {
    let mut h = Harness::new(&format!(
        "{REGISTRAR}\n[[routes]]\nname = \"out\"\nfrom = \"endpoints\"\nto = \"carrier\"\n"
    ));
    let phone = Peer::udp("203.0.113.5:5060");
    let mut ua = carrier_ua(phone.clone(), "out-1@203.0.113.5");
    ua.local = "<sip:alice@example.com>;tag=al-1".to_owned();
    ua.target = "sip:+4420555@example.com".to_owned();
    let offer = plain_offer("203.0.113.5", 20000, "");
    h.deliver(&phone, invite_from(&mut ua, &[], Some(&offer)));
    let challenge = h.one_sent();
    assert_eq!(challenge.status(), Some(407));
    let value = challenge
        .response()
        .headers
        .get("Proxy-Authenticate")
        .expect("challenge")
        .to_owned();
    // The ACK for the 407 (same branch), then the INVITE again with credentials.
    ua.branches -= 1;
    ua.remote = challenge.header("To").expect("To").to_owned();
    h.deliver(&phone, ua.request_with("ACK", 1, &[], None));
    ua.remote = "<sip:+4930123456@192.0.2.1>".to_owned();
    let nonce = param(&value, "nonce");
    let response = ClientCredentials {
        algorithm: Algorithm::Sha256,
        username: "alice",
        realm: "example.com",
        password: "wonderland",
        method: "INVITE",
        digest_uri: "sip:+4420555@example.com",
        nonce,
        nc: "00000001",
        cnonce: "c1",
    }
    .response();
    let credentials = format!(
        "Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", \
         uri=\"sip:+4420555@example.com\", response=\"{response}\", algorithm=SHA-256, \
         cnonce=\"c1\", opaque=\"{}\", qop=auth, nc=00000001",
        param(&value, "opaque")
    );
    h.deliver(
        &phone,
        ua.request_with(
            "INVITE",
            2,
            &[("Proxy-Authorization", &credentials)],
            Some(&offer),
        ),
    );
    assert_eq!(kinds(&h.take_sent()), ["100"]);
    let (_, spec) = h.relay_put();
    assert!(
        spec_leg(&spec, "a0").inbound_crypto.is_none(),
        "plain offer from the phone"
    );
    h.relay_ok();
    let invite = h.one_sent();
    assert_eq!(invite.outbound.transport, Transport::Tls);
    assert_eq!(
        invite.request().uri.to_string(),
        "sips:+4420555@198.51.100.10:5061"
    );
    assert!(
        invite
            .request()
            .headers
            .get("Proxy-Authorization")
            .is_none(),
        "credentials stay here"
    );
    assert_eq!(
        sdp_line(invite.body(), "m="),
        Some("m=audio 30002 RTP/SAVP 0 101".to_owned())
    );
    let invite = invite.request().clone();
    h.deliver(
        &Peer::tls("198.51.100.10:5061", 21),
        reply(&invite, 603, Some("c"), &[], None),
    );
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["ACK", "603"]);
    h.relay_ok();
    let record = h.ended();
    assert_eq!(record.legs[0].peer, "endpoint:sip:alice@example.com");
    assert_eq!(record.status, Some(603));
    h.assert_clean();
}

#[test]
fn cancel_for_nothing_is_481() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let mut ua = carrier_ua(Peer::carrier(), "ghost@198.51.100.10");
    let invite = invite_from(&mut ua, &[], None);
    h.deliver(&Peer::carrier(), cancel_for(&invite));
    assert_eq!(h.one_sent().status(), Some(481));
    h.assert_clean();
}

/// RFC 5761 §5.1.1: mux is offered to the callee with a fallback RTCP port, and leg `b0`
/// multiplexes only when the callee's answer accepts it.
#[test]
fn rtcp_mux_towards_the_callee_follows_its_answer() {
    for (answer_mux, expect_mux) in [(false, false), (true, true)] {
        let mut h = Harness::new(CARRIER_TO_PBX);
        let carrier_peer = Peer::carrier();
        let mut carrier = carrier_ua(carrier_peer.clone(), "call-mux@198.51.100.10");
        let offer = carrier_offer("a=rtcp-mux");
        h.deliver(&carrier_peer, invite_from(&mut carrier, &[], Some(&offer)));
        h.take_sent();
        let (_, spec) = h.relay_put();
        assert!(
            spec_leg(&spec, "a0").rtcp_mux,
            "the caller's mux is accepted"
        );
        assert!(
            !spec_leg(&spec, "b0").rtcp_mux,
            "b0 keeps an RTCP port until the callee says"
        );
        h.relay_ok();
        let invite = h.one_sent().request().clone();
        let text = sdp_text(&invite.body);
        assert!(text.contains("a=rtcp-mux\r\n"), "{text}");
        assert!(text.contains("a=rtcp:30003\r\n"), "fallback port: {text}");
        let answer = if answer_mux {
            plain_offer(PBX_MEDIA, 50000, "a=rtcp-mux")
        } else {
            pbx_answer()
        };
        h.deliver(
            &Peer::pbx(),
            reply(
                &invite,
                200,
                Some("pbx-mux"),
                &[("Contact", "<sip:pbx@10.0.0.20:5060>")],
                Some(&answer),
            ),
        );
        assert_eq!(kinds(&h.take_sent()), ["ACK"]);
        let (_, spec) = h.relay_put();
        assert_eq!(spec_leg(&spec, "b0").rtcp_mux, expect_mux);
        assert!(spec_leg(&spec, "a0").rtcp_mux);
        h.relay_ok();
        let ok = h.one_sent();
        assert!(sdp_text(ok.body()).contains("a=rtcp-mux\r\n"));
        assert!(!sdp_text(ok.body()).contains("a=rtcp:"));
        carrier.remote = ok.header("To").expect("To").to_owned();
        h.deliver(&carrier_peer, carrier.ack(1));
        h.deliver(&carrier_peer, carrier.request("BYE", None));
        let sent = h.take_sent();
        h.deliver(&Peer::pbx(), reply(sent[1].request(), 200, None, &[], None));
        h.relay_ok();
        h.assert_clean();
    }
}

/// RFC 3261 §8.2.2.2: the same INVITE (From tag, Call-ID, `CSeq`) arriving again on another
/// path (another branch) is a merged request: 482, not a second call.
#[test]
fn merged_invite_is_482_and_a_retransmission_is_absorbed() {
    let mut h = Harness::new(UDP_BOTH);
    let (peer, mut carrier) = udp_carrier();
    let offer = plain_offer("198.51.100.20", 40000, "");
    let invite = invite_from(&mut carrier, &[], Some(&offer));
    h.deliver(&peer, invite.clone());
    assert_eq!(kinds(&h.take_sent()), ["100"]);
    // A retransmission: the transaction answers it, the core sees nothing new.
    h.deliver(&peer, invite);
    assert_eq!(kinds(&h.take_sent()), ["100"]);
    // The same request forked back to us on another branch.
    let merged = invite_from(&mut carrier, &[], Some(&offer));
    h.deliver(&peer, merged);
    assert_eq!(h.one_sent().status(), Some(482));
    assert_eq!(h.core.call_count(), 1);
    assert_eq!(h.relay.len(), 1);
    h.relay_ok();
    let to_pbx = h.one_sent().request().clone();
    h.deliver(&Peer::pbx(), reply(&to_pbx, 480, Some("p"), &[], None));
    assert_eq!(kinds(&h.take_sent()), ["ACK", "480"]);
    h.relay_ok();
    h.assert_clean();
}

/// RFC 3261 §14.2: a second re-INVITE from the side whose first is still pending is 500 with
/// Retry-After (491 is for glare with our own re-INVITE on that dialog).
#[test]
fn second_reinvite_from_the_same_side_is_500_with_retry_after() {
    let mut h = Harness::new(SECURE_BOTH);
    let mut e = secure_call(&mut h);
    let hold = carrier_offer("a=sendonly").replace("o=carrier 1000 1 ", "o=carrier 1000 2 ");
    h.deliver(&Peer::carrier(), e.carrier.request("INVITE", Some(&hold)));
    let to_pbx = h.one_sent().request().clone();
    h.deliver(&Peer::carrier(), e.carrier.request("INVITE", Some(&hold)));
    let second = h.one_sent();
    assert_eq!(second.status(), Some(500));
    assert!(second.header("Retry-After").is_some());
    let answer = pbx_srtp_answer(PBX_MEDIA, 50000, 2, "a=recvonly");
    h.deliver(
        &e.pbx.peer.clone(),
        reply(&to_pbx, 200, None, &[], Some(&answer)),
    );
    assert_eq!(kinds(&h.take_sent()), ["ACK"]);
    h.relay_ok();
    assert_eq!(h.one_sent().header("CSeq"), Some("2 INVITE"));
    h.deliver(&Peer::carrier(), e.carrier.request("BYE", None));
    let sent = h.take_sent();
    h.deliver(
        &e.pbx.peer.clone(),
        reply(sent[1].request(), 200, None, &[], None),
    );
    h.relay_ok();
    h.assert_clean();
}

#[test]
fn pbx_plain_call_goes_out_to_the_carrier_as_srtp_over_tls() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let pbx_peer = Peer::pbx();
    let mut pbx = Ua {
        peer: pbx_peer.clone(),
        local: "<sip:200@10.0.0.20>;tag=pbx-out".to_owned(),
        remote: "<sip:+4420555@192.0.2.1>".to_owned(),
        call_id: "out-1@10.0.0.20".to_owned(),
        cseq: 1,
        target: "sip:+4420555@192.0.2.1:5060".to_owned(),
        contact: "<sip:200@10.0.0.20:5060>".to_owned(),
        branches: 0,
    };
    let offer = plain_offer(PBX_MEDIA, 50000, "a=sendrecv");
    h.deliver(&pbx_peer, invite_from(&mut pbx, &[], Some(&offer)));
    assert_eq!(kinds(&h.take_sent()), ["100"]);
    let (_, spec) = h.relay_put();
    assert!(spec_leg(&spec, "a0").inbound_crypto.is_none());
    h.relay_ok();
    let invite = h.one_sent();
    assert_eq!(invite.outbound.transport, Transport::Tls);
    assert_eq!(invite.outbound.destination, addr("198.51.100.10:5061"));
    let invite = invite.request().clone();
    assert_eq!(invite.uri.to_string(), "sips:+4420555@198.51.100.10:5061");
    assert_eq!(
        sdp_line(&invite.body, "m="),
        Some("m=audio 30002 RTP/SAVP 0 101".to_owned())
    );
    let offered = cryptos(&invite.body);
    assert_eq!(offered.len(), 6, "every allowed suite offered");
    let carrier_peer = Peer::tls("198.51.100.10:5061", 31);
    let answer = carrier_offer("a=sendrecv");
    h.deliver(
        &carrier_peer,
        reply(
            &invite,
            200,
            Some("car-out"),
            &[("Contact", "<sips:+4420555@198.51.100.10:5061>")],
            Some(&answer),
        ),
    );
    assert_eq!(kinds(&h.take_sent()), ["ACK"]);
    let (_, spec) = h.relay_put();
    let b0 = spec_leg(&spec, "b0");
    assert_eq!(key_of(b0.inbound_crypto.as_ref()), CARRIER_KEY);
    assert_eq!(key_of(b0.outbound_crypto.as_ref()), offered[0].2);
    h.relay_ok();
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.outbound.destination, addr(PBX));
    assert_eq!(
        sdp_line(ok.body(), "m="),
        Some("m=audio 30000 RTP/AVP 0 101".to_owned())
    );
    assert!(cryptos(ok.body()).is_empty());
    pbx.remote = ok.header("To").expect("To").to_owned();
    h.deliver(&pbx_peer, pbx.ack(1));
    assert!(retransmissions(&mut h, Duration::from_secs(2)).is_empty());
    h.deliver(&pbx_peer, pbx.request("BYE", None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["200", "BYE"]);
    assert_eq!(
        sent[1].request().uri.to_string(),
        "sips:+4420555@198.51.100.10:5061"
    );
    h.deliver(
        &carrier_peer,
        reply(sent[1].request(), 200, None, &[], None),
    );
    h.relay_ok();
    let record = h.ended();
    assert_eq!(record.route, "pbx-out");
    assert_eq!(record.legs[1].peer, "carrier");
    assert!(record.legs[1].secure && !record.legs[0].secure);
    h.assert_clean();
}

/// The callee answers and hangs up before relayd confirmed the answer: the caller still gets
/// a final response (not a 200 to a dialog that is already gone).
#[test]
fn callee_bye_before_the_caller_is_answered_fails_the_caller() {
    let mut h = Harness::new(CARRIER_TO_PBX);
    let (_, _, to_pbx) = start_call(&mut h, "call-bb@198.51.100.10");
    h.deliver(
        &Peer::pbx(),
        reply(
            &to_pbx,
            200,
            Some("pbx-bb"),
            &[("Contact", "<sip:pbx@10.0.0.20:5060>")],
            Some(&pbx_answer()),
        ),
    );
    assert_eq!(kinds(&h.take_sent()), ["ACK"]);
    let mut pbx = Ua::callee(Peer::pbx(), &to_pbx, "pbx-bb");
    h.deliver(&Peer::pbx(), pbx.request("BYE", None));
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["200", "480"]);
    assert_eq!(
        sent[1].outbound.connection,
        Some(ConnectionId::from_raw(CARRIER_CONN))
    );
    h.relay_drain();
    let record = h.ended();
    assert_eq!(record.status, Some(480));
    assert_eq!(record.end_reason.as_deref(), Some("bye_callee"));
    assert!(h.take_sent().is_empty(), "no 200 to the caller afterwards");
    h.assert_clean();
}

/// A user registered from two phones: the best contact (q) is called first; when it fails
/// (480) the next one rings, over its own registered flow, and answers (serial forking).
#[test]
fn a_failed_contact_hands_the_call_to_the_next_registered_one() {
    let mut h = Harness::new(REGISTRAR);
    let desk = Peer::tcp("127.0.0.1:5070", 9);
    let mobile = Peer::tcp("127.0.0.1:5072", 10);
    let desk_register = String::from_utf8(register("127.0.0.1:5070", "TCP", 1, ""))
        .expect("utf8")
        .replace(";transport=tcp>", ";transport=tcp>;q=1.0");
    h.deliver(&desk, desk_register.into_bytes());
    assert_eq!(h.one_sent().status(), Some(200));
    let mobile_register = String::from_utf8(register("127.0.0.1:5072", "TCP", 2, ""))
        .expect("utf8")
        .replace("Call-ID: reg-1@", "Call-ID: reg-2@")
        .replace(";transport=tcp>", ";transport=tcp>;q=0.5");
    h.deliver(&mobile, mobile_register.into_bytes());
    assert_eq!(h.one_sent().status(), Some(200));

    let carrier_peer = Peer::carrier();
    let mut carrier = carrier_ua(carrier_peer.clone(), "call-8f@198.51.100.10");
    carrier.target = "sip:alice@example.com".to_owned();
    h.deliver(
        &carrier_peer,
        invite_from(&mut carrier, &[], Some(&carrier_offer("a=sendrecv"))),
    );
    assert_eq!(kinds(&h.take_sent()), ["100"]);
    h.relay_ok();
    let first = h.one_sent();
    assert_eq!(first.outbound.connection, Some(ConnectionId::from_raw(9)));
    let first = first.request().clone();
    h.deliver(&desk, reply(&first, 480, Some("desk-1"), &[], None));
    // The desk phone's failure is ACKed; the mobile gets a new INVITE (new dialog), the
    // caller hears nothing of the failure.
    let sent = h.take_sent();
    assert_eq!(kinds(&sent), ["ACK", "INVITE"], "{:?}", kinds(&sent));
    assert_eq!(
        sent[1].outbound.connection,
        Some(ConnectionId::from_raw(10))
    );
    let second = sent[1].request().clone();
    assert_eq!(
        second.uri.to_string(),
        "sip:alice@127.0.0.1:5072;transport=tcp"
    );
    assert_ne!(
        second.headers.get("Call-ID"),
        first.headers.get("Call-ID"),
        "a new callee dialog"
    );
    assert_eq!(
        sdp_line(&second.body, "m="),
        sdp_line(&first.body, "m="),
        "the same relay leg"
    );
    // The mobile answers: the caller gets its 200.
    let answer = pbx_answer();
    h.deliver(
        &mobile,
        reply(
            &second,
            200,
            Some("mobile-1"),
            &[("Contact", "<sip:alice@127.0.0.1:5072;transport=tcp>")],
            Some(&answer),
        ),
    );
    assert_eq!(kinds(&h.take_sent()), ["ACK"]);
    h.relay_ok();
    let ok = h.one_sent();
    assert_eq!(ok.status(), Some(200));
    // The carrier hangs up; the call's callee leg is the mobile's dialog.
    carrier.remote = ok.header("To").expect("To").to_owned();
    carrier.target = ok
        .header("Contact")
        .expect("Contact")
        .trim_matches(['<', '>'])
        .to_owned();
    h.deliver(&carrier_peer, carrier.ack(1));
    h.deliver(&carrier_peer, carrier.request("BYE", None));
    let sent = h.take_sent();
    let bye = sent
        .iter()
        .find(|s| s.method() == Some("BYE"))
        .expect("BYE to the mobile");
    assert_eq!(bye.outbound.connection, Some(ConnectionId::from_raw(10)));
    h.relay_drain();
    assert_eq!(h.ended().end_reason.as_deref(), Some("bye_caller"));
    h.assert_clean();
}
