//! sip-controller facing broken input over UDP and TCP: a request with an invalid `CSeq` gets 400
//! naming it (one without `CSeq` cannot be answered and is dropped), an INVITE with an unparseable SDP body 400/488 with a reason, SRTP offered to a trunk
//! whose policy is plain RTP 488, garbage gets no answer, and a 70 KB message over TCP closes
//! the connection. After each, the controller still answers OPTIONS.

use std::{net::SocketAddr, time::Duration};

use tests::{
    relayd,
    sipctl::{
        audio_sdp, crypto_line, media_socket, request, token, Controller, InProcessRelay, Scratch,
        SipMessage, TcpPeer, UdpPeer, WAIT,
    },
};

/// One way of talking to the controller (a UDP socket or one TCP connection).
enum Peer {
    Udp(UdpPeer, SocketAddr),
    Tcp(TcpPeer),
}

impl Peer {
    fn transport(&self) -> &'static str {
        match self {
            Self::Udp(..) => "UDP",
            Self::Tcp(_) => "TCP",
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Self::Udp(peer, _) => peer.addr(),
            Self::Tcp(peer) => peer.addr(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        match self {
            Self::Udp(peer, to) => peer.send(*to, bytes),
            Self::Tcp(peer) => assert!(peer.send(bytes), "the TCP connection is open"),
        }
    }

    fn recv(&mut self, within: Duration) -> Option<SipMessage> {
        match self {
            Self::Udp(peer, _) => peer.recv(within).map(|(m, _)| m),
            Self::Tcp(peer) => peer.recv(within),
        }
    }

    /// The final response to `CSeq` `cseq` (provisional ones skipped).
    fn final_response(&mut self, cseq: &str) -> Option<SipMessage> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            let m = self.recv(left)?;
            if m.status().is_some_and(|s| s >= 200) && m.header("CSeq") == Some(cseq) {
                return Some(m);
            }
        }
    }

    fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {};branch=z9hG4bK{};rport",
            self.transport(),
            self.addr(),
            token()
        )
    }
}

/// A request with the usual headers; `skip` leaves one of them out.
fn build(
    peer: &Peer,
    method: &str,
    cseq: u32,
    skip: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let headers: Vec<(&str, String)> = [
        ("Via", peer.via()),
        ("Max-Forwards", "70".to_owned()),
        (
            "From",
            format!("<sip:tester@{}>;tag={}", peer.addr(), token()),
        ),
        ("To", "<sip:+15550001111@127.0.0.1>".to_owned()),
        ("Call-ID", format!("{}@malformed", token())),
        ("CSeq", format!("{cseq} {method}")),
        ("Contact", format!("<sip:tester@{}>", peer.addr())),
    ]
    .into_iter()
    .filter(|(name, _)| Some(*name) != skip)
    .collect();
    request(method, "sip:+15550001111@127.0.0.1", &headers, body)
}

fn assert_alive(peer: &mut Peer, cseq: u32, after: &str) {
    let options = build(peer, "OPTIONS", cseq, None, None);
    peer.send(&options);
    let ok = peer
        .final_response(&format!("{cseq} OPTIONS"))
        .unwrap_or_else(|| panic!("{}: no answer to OPTIONS after {after}", peer.transport()));
    assert_eq!(
        ok.status(),
        Some(200),
        "{}: after {after}: {ok}",
        peer.transport()
    );
}

fn malformed_requests_are_answered(peer: &mut Peer) {
    let t = peer.transport();
    assert_alive(peer, 1, "nothing");

    // A CSeq that does not parse (RFC 3261 §20.16: a number and the method): 400 naming it.
    let bad_cseq = build(peer, "OPTIONS", 2, Some("CSeq"), None);
    let bad_cseq = String::from_utf8(bad_cseq)
        .unwrap()
        .replace("Contact:", "CSeq: two OPTIONS\r\nContact:");
    peer.send(bad_cseq.as_bytes());
    let answer = peer
        .recv(Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{t}: a request with an invalid CSeq is answered"));
    assert_eq!(answer.status(), Some(400), "{t}: {answer}");
    assert_eq!(
        answer.reason(),
        "Invalid CSeq",
        "{t}: the reason names the field: {answer}"
    );
    assert_eq!(
        answer.header("CSeq"),
        Some("two OPTIONS"),
        "{t}: echoed as received"
    );
    assert_alive(peer, 3, "a request with an invalid CSeq");

    // Without any CSeq no valid response can be built (every response carries the request's
    // CSeq, RFC 3261 §8.2.6.2 and §20): the request is dropped, and nothing else breaks.
    let no_cseq = build(peer, "OPTIONS", 2, Some("CSeq"), None);
    peer.send(&no_cseq);
    if let Some(m) = peer.recv(Duration::from_millis(700)) {
        panic!("{t}: a request without CSeq cannot be answered validly, got {m}");
    }
    assert_alive(peer, 4, "a request without CSeq");

    // An INVITE whose body is not SDP at all.
    let broken = b"v=0\r\nthis is not SDP\r\nm=audio port RTP/AVP\r\n".as_slice();
    let invite = build(peer, "INVITE", 4, None, Some(("application/sdp", broken)));
    peer.send(&invite);
    let answer = peer
        .final_response("4 INVITE")
        .unwrap_or_else(|| panic!("{t}: an INVITE with a broken SDP body is answered"));
    assert!(
        matches!(answer.status(), Some(400 | 488)),
        "{t}: broken SDP: {answer}"
    );
    assert!(
        answer.reason().len() > 3 && answer.reason() != "Bad Request",
        "{t}: the reason says what is wrong with the SDP: {answer}"
    );
    peer.send(&ack_for(&invite, &answer));
    assert_alive(peer, 5, "a broken SDP body");

    // SRTP only (RTP/SAVP), from a trunk whose policy is plain RTP: 488 Not Acceptable Here.
    let rtp = media_socket([127, 0, 0, 1]);
    let key: Vec<u8> = (0..30).collect();
    let sdp = audio_sdp(
        rtp.local_addr().unwrap(),
        "RTP/SAVP",
        &[crypto_line(1, "AES_CM_128_HMAC_SHA1_80", &key)],
    );
    let invite = build(
        peer,
        "INVITE",
        6,
        None,
        Some(("application/sdp", sdp.as_bytes())),
    );
    peer.send(&invite);
    let answer = peer
        .final_response("6 INVITE")
        .unwrap_or_else(|| panic!("{t}: an SRTP offer to a plain trunk is answered"));
    assert_eq!(answer.status(), Some(488), "{t}: {answer}");
    assert!(!answer.reason().is_empty(), "{t}: {answer}");
    peer.send(&ack_for(&invite, &answer));
    assert_alive(peer, 7, "an SRTP offer from a plain trunk");

    // Garbage: no answer at all (there is nobody to answer), and the controller lives on.
    peer.send(b"\x16\x03\x01\x00\x05hello garbage \xff\xfe\r\n\r\n");
    if let Some(m) = peer.recv(Duration::from_millis(700)) {
        panic!("{t}: garbage is not answered, got {m}");
    }
    if matches!(peer, Peer::Udp(..)) {
        assert_alive(peer, 8, "garbage");
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3: same branch, To with the tag).
fn ack_for(invite: &[u8], answer: &SipMessage) -> Vec<u8> {
    let invite = SipMessage::parse(invite).expect("our INVITE parses");
    let cseq = invite.header("CSeq").unwrap().replace("INVITE", "ACK");
    request(
        "ACK",
        invite.request_uri().unwrap(),
        &[
            ("Via", invite.header("Via").unwrap().to_owned()),
            ("Max-Forwards", "70".to_owned()),
            ("From", invite.header("From").unwrap().to_owned()),
            ("To", answer.header("To").unwrap().to_owned()),
            ("Call-ID", invite.header("Call-ID").unwrap().to_owned()),
            ("CSeq", cseq),
        ],
        None,
    )
}

fn start(scratch: &Scratch, relay: &InProcessRelay) -> Controller {
    Controller::start(
        &scratch.path,
        relay.addr,
        "[[trunks]]\nname = \"plain-carrier\"\nuri = \"sip:127.0.0.1:9\"\n\
         allow_from = [\"127.0.0.1/32\"]\nsrtp = \"off\"\n\n\
         [[trunks]]\nname = \"pbx\"\nuri = \"sip:127.0.0.1:9\"\nsrtp = \"off\"\n\n\
         [[routes]]\nname = \"in\"\nfrom = \"plain-carrier\"\nto = \"pbx\"\n",
    )
}

#[test]
fn malformed_sip_over_udp_is_answered_or_dropped() {
    let scratch = Scratch::new("malformed-udp");
    let relay = InProcessRelay::start(relayd::config(27_300, 27_349), ([127, 0, 0, 1], 0).into());
    let mut controller = start(&scratch, &relay);
    let mut peer = Peer::Udp(UdpPeer::bind([127, 0, 0, 1]), controller.udp);
    malformed_requests_are_answered(&mut peer);
    assert!(controller.is_running());
    assert!(
        relay.session_ids().is_empty(),
        "no relay session for refused calls"
    );
}

#[test]
fn malformed_sip_over_tcp_is_answered_or_the_connection_closed() {
    let scratch = Scratch::new("malformed-tcp");
    let relay = InProcessRelay::start(relayd::config(27_350, 27_399), ([127, 0, 0, 1], 0).into());
    let mut controller = start(&scratch, &relay);
    let mut peer = Peer::Tcp(TcpPeer::connect(controller.tcp));
    malformed_requests_are_answered(&mut peer);
    // Garbage on a stream breaks its framing: the controller drops the connection.
    let Peer::Tcp(ref mut garbled) = peer else {
        unreachable!()
    };
    assert!(
        garbled.closed_within(Duration::from_secs(3)),
        "a stream that stopped being SIP is closed"
    );
    let mut fresh = Peer::Tcp(TcpPeer::connect(controller.tcp));
    assert_alive(&mut fresh, 1, "garbage on another connection");

    // 70 KB in one message: more than the controller frames; the connection is closed.
    let mut big = Peer::Tcp(TcpPeer::connect(controller.tcp));
    let body = vec![b'a'; 70 * 1024];
    let message = build(&big, "MESSAGE", 1, None, Some(("text/plain", &body)));
    let Peer::Tcp(ref mut stream) = big else {
        unreachable!()
    };
    let _ = stream.send(&message);
    assert!(
        stream.closed_within(Duration::from_secs(3)),
        "a 70 KB message closes the connection"
    );
    assert!(
        controller.is_running(),
        "the controller survives a 70 KB message"
    );
    let mut after = Peer::Tcp(TcpPeer::connect(controller.tcp));
    assert_alive(&mut after, 1, "a 70 KB message");
    assert!(
        relay.session_ids().is_empty(),
        "no relay session for refused calls"
    );
}
