//! relayd's socket datapath end to end on loopback with real UDP: plain RTP both ways, RTCP on
//! its own port and muxed, SRTP->RTP and RTP->SRTP checked by libsrtp (pylibsrtp) as the
//! independent peer, latching and strict source, an RTP-bleed attempt, and media timeouts.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test payloads derive bytes from sequence numbers"
)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{json, Value};
use tests::{
    pylibsrtp::{self, Mode},
    relayd::{config, TestRelay, TOKEN},
};

const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

fn port(s: &UdpSocket) -> u16 {
    s.local_addr().unwrap().port()
}

fn rtp(ssrc: u32, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn rtcp(ssrc: u32, filler: u8) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[filler; 24]);
    p
}

/// Receives until `count` datagrams arrived or nothing came for 300 ms.
fn receive(s: &UdpSocket, count: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < count {
        match s.recv_from(&mut buf) {
            Ok((n, from)) => got.push((buf[..n].to_vec(), from)),
            Err(_) => break,
        }
    }
    got
}

fn local(view: &Value, leg: usize) -> (u16, u16) {
    let l = &view["legs"][leg]["local"];
    (
        u16::try_from(l["rtp_port"].as_u64().unwrap()).unwrap(),
        u16::try_from(l["rtcp_port"].as_u64().unwrap()).unwrap(),
    )
}

fn relay_addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn counters(relay: &TestRelay, session: &str, leg: usize) -> Value {
    let (_, view) = relay.json("GET", &format!("/v1/sessions/{session}"), None);
    view["legs"][leg]["counters"].clone()
}

fn key(material: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(material)
}

#[test]
fn plain_rtp_and_rtcp_flow_both_ways() {
    let relay = TestRelay::start(config(32_000, 32_099));
    let (a, a_rtcp, b) = (socket(), socket(), socket());
    let (status, view) = relay.json(
        "PUT",
        "/v1/sessions/plain",
        Some(&json!({ "legs": [
            { "id": "a", "remote": { "address": "127.0.0.1", "rtp_port": port(&a), "rtcp_port": port(&a_rtcp) }, "forward_to": "b" },
            { "id": "b", "remote": { "address": "127.0.0.1", "rtp_port": port(&b) }, "rtcp_mux": true, "forward_to": "a" }
        ]})),
    );
    assert_eq!(status, 201, "{view}");
    let (a_port, a_rtcp_port) = local(&view, 0);
    let (b_port, b_rtcp_port) = local(&view, 1);
    assert_eq!(b_rtcp_port, b_port, "rtcp-mux leg has one port");

    for seq in 0..50u16 {
        a.send_to(&rtp(1, seq, &[seq as u8; 160]), relay_addr(a_port))
            .unwrap();
        b.send_to(&rtp(2, seq, &[!(seq as u8); 160]), relay_addr(b_port))
            .unwrap();
    }
    let at_b = receive(&b, 50);
    let at_a = receive(&a, 50);
    assert_eq!(at_b.len(), 50);
    assert_eq!(at_a.len(), 50);
    for (seq, (packet, from)) in at_b.iter().enumerate() {
        assert_eq!(packet, &rtp(1, seq as u16, &[seq as u8; 160]));
        assert_eq!(from.port(), b_port, "sent from the relay's b port");
    }
    assert_eq!(at_a[7].0, rtp(2, 7, &[!7u8; 160]));

    // RTCP: a's RTCP port -> relay's a RTCP port -> b (muxed onto b's port) and back.
    a_rtcp
        .send_to(&rtcp(1, 0x11), relay_addr(a_rtcp_port))
        .unwrap();
    let got = receive(&b, 1);
    assert_eq!(got[0].0, rtcp(1, 0x11));
    b.send_to(&rtcp(2, 0x22), relay_addr(b_port)).unwrap();
    let got = receive(&a_rtcp, 1);
    assert_eq!(got.len(), 1, "muxed RTCP from b reaches a's RTCP port");
    assert_eq!(got[0].0, rtcp(2, 0x22));

    let c = counters(&relay, "plain", 0);
    assert_eq!(c["packets_in"], 51);
    assert_eq!(c["packets_out"], 51);
    assert_eq!(c["bytes_in"], 50 * 172 + 32);
}

#[test]
fn srtp_to_rtp_and_rtp_to_srtp_are_checked_by_libsrtp() {
    let Some(python) = pylibsrtp::python("srtp_to_rtp_and_rtp_to_srtp_are_checked_by_libsrtp")
    else {
        return;
    };
    let relay = TestRelay::start(config(32_100, 32_199));
    let (a, a_rtcp, b, b_rtcp) = (socket(), socket(), socket(), socket());
    // a -> relay: encrypted with K_A; relay -> a: encrypted with K_R.
    let k_a: Vec<u8> = (0..30u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(1))
        .collect();
    let k_r: Vec<u8> = (0..30u8)
        .map(|i| i.wrapping_mul(11).wrapping_add(3))
        .collect();
    let crypto = |k: &[u8]| json!({ "suite": SUITE, "keys": [{ "key": key(k) }] });
    let (status, view) = relay.json(
        "PUT",
        "/v1/sessions/srtp",
        Some(&json!({ "legs": [
            { "id": "a", "remote": { "address": "127.0.0.1", "rtp_port": port(&a), "rtcp_port": port(&a_rtcp) },
              "inbound_crypto": crypto(&k_a), "outbound_crypto": crypto(&k_r), "forward_to": "b" },
            { "id": "b", "remote": { "address": "127.0.0.1", "rtp_port": port(&b), "rtcp_port": port(&b_rtcp) }, "forward_to": "a" }
        ]})),
    );
    assert_eq!(status, 201, "{view}");
    let (a_port, a_rtcp_port) = local(&view, 0);
    let (b_port, b_rtcp_port) = local(&view, 1);

    // SRTP -> RTP: libsrtp protects, the relay decrypts, b gets the plaintext.
    let plain: Vec<Vec<u8>> = (0..40u16)
        .map(|s| rtp(0xa, 65_520u16.wrapping_add(s), &[s as u8; 160]))
        .collect();
    let protected: Vec<Vec<u8>> = pylibsrtp::run(&python, SUITE, &k_a, Mode::ProtectRtp, &plain)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for p in &protected {
        a.send_to(p, relay_addr(a_port)).unwrap();
    }
    let at_b: Vec<Vec<u8>> = receive(&b, 40).into_iter().map(|(p, _)| p).collect();
    assert_eq!(at_b, plain, "decrypted across the sequence wrap");

    // RTP -> SRTP: b sends plain, libsrtp decrypts what a gets with K_R.
    let plain: Vec<Vec<u8>> = (0..40u16)
        .map(|s| rtp(0xb, s, &[0x5a ^ s as u8; 160]))
        .collect();
    for p in &plain {
        b.send_to(p, relay_addr(b_port)).unwrap();
    }
    let at_a: Vec<Vec<u8>> = receive(&a, 40).into_iter().map(|(p, _)| p).collect();
    assert_eq!(at_a.len(), 40);
    assert!(
        at_a.iter().all(|p| p.len() == 172 + 10),
        "SRTP adds the 80-bit tag"
    );
    let decrypted: Vec<Vec<u8>> = pylibsrtp::run(&python, SUITE, &k_r, Mode::UnprotectRtp, &at_a)
        .into_iter()
        .map(|r| r.expect("libsrtp authenticates the relay's SRTP"))
        .collect();
    assert_eq!(decrypted, plain);

    // SRTCP both ways.
    let srtcp = pylibsrtp::run(&python, SUITE, &k_a, Mode::ProtectRtcp, &[rtcp(0xa, 1)]);
    a_rtcp
        .send_to(srtcp[0].as_ref().unwrap(), relay_addr(a_rtcp_port))
        .unwrap();
    let got = receive(&b_rtcp, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, rtcp(0xa, 1));
    b_rtcp
        .send_to(&rtcp(0xb, 2), relay_addr(b_rtcp_port))
        .unwrap();
    let got = receive(&a_rtcp, 1);
    assert_eq!(got.len(), 1);
    let back = pylibsrtp::run(
        &python,
        SUITE,
        &k_r,
        Mode::UnprotectRtcp,
        &[got[0].0.clone()],
    );
    assert_eq!(back[0].as_ref().unwrap(), &rtcp(0xb, 2));

    let c = counters(&relay, "srtp", 0);
    assert_eq!(c["auth_failures"], 0);
    assert_eq!(c["packets_in"], 41);
}

#[test]
fn a_learning_leg_latches_and_strict_source_drops_a_third_address() {
    let relay = TestRelay::start(config(32_200, 32_299));
    let (caller, callee, stranger) = (socket(), socket(), socket());
    // Leg a has no remote: it learns it from the first packet (window 0: locks at once).
    let (status, view) = relay.json(
        "PUT",
        "/v1/sessions/latch",
        Some(&json!({ "legs": [
            { "id": "a", "forward_to": "b" },
            { "id": "b", "remote": { "address": "127.0.0.1", "rtp_port": port(&callee) }, "forward_to": "a" }
        ]})),
    );
    assert_eq!(status, 201, "{view}");
    let (a_port, _) = local(&view, 0);
    let (b_port, _) = local(&view, 1);

    // Before a latches, b's media has nowhere to go: dropped and counted.
    callee
        .send_to(&rtp(2, 1, b"early"), relay_addr(b_port))
        .unwrap();
    assert!(receive(&caller, 1).is_empty());

    caller
        .send_to(&rtp(1, 1, b"first"), relay_addr(a_port))
        .unwrap();
    assert_eq!(receive(&callee, 1)[0].0, rtp(1, 1, b"first"));
    let (_, view) = relay.json("GET", "/v1/sessions/latch", None);
    assert_eq!(
        view["legs"][0]["latched_rtp"],
        caller.local_addr().unwrap().to_string()
    );
    // Media toward a now goes to the latched caller.
    callee
        .send_to(&rtp(2, 2, b"reply"), relay_addr(b_port))
        .unwrap();
    assert_eq!(receive(&caller, 1)[0].0, rtp(2, 2, b"reply"));

    // A third address: dropped, counted, and the latch does not move.
    for seq in 0..5 {
        stranger
            .send_to(&rtp(9, seq, b"intruder"), relay_addr(a_port))
            .unwrap();
    }
    assert!(
        receive(&callee, 1).is_empty(),
        "nothing from the stranger reaches b"
    );
    let (_, view) = relay.json("GET", "/v1/sessions/latch", None);
    assert_eq!(view["legs"][0]["counters"]["drops"]["wrong_source"], 5);
    assert_eq!(view["legs"][0]["counters"]["drops"]["no_remote"], 0);
    assert_eq!(
        view["legs"][0]["latched_rtp"],
        caller.local_addr().unwrap().to_string()
    );
    assert_eq!(
        view["legs"][1]["counters"]["drops"]["no_remote"], 1,
        "the early packet"
    );
}

#[test]
fn forged_srtp_from_another_address_never_latches_or_leaks() {
    let relay = TestRelay::start(config(32_300, 32_399));
    let (caller, callee, attacker) = (socket(), socket(), socket());
    let k_a: Vec<u8> = (0..30).map(|i| i ^ 0x5c).collect();
    let (status, view) = relay.json(
        "PUT",
        "/v1/sessions/bleed",
        Some(&json!({ "legs": [
            { "id": "a", "inbound_crypto": { "suite": SUITE, "keys": [{ "key": key(&k_a) }] }, "forward_to": "b" },
            { "id": "b", "remote": { "address": "127.0.0.1", "rtp_port": port(&callee) }, "forward_to": "a" }
        ]})),
    );
    assert_eq!(status, 201, "{view}");
    let (a_port, _) = local(&view, 0);
    // The attacker guesses: well-formed RTP/SRTP packets with garbage tags, first.
    for seq in 0..20u16 {
        let mut forged = rtp(0x77, seq, &[0xee; 160]);
        forged.extend_from_slice(&[0xab; 10]);
        attacker.send_to(&forged, relay_addr(a_port)).unwrap();
    }
    assert!(
        receive(&callee, 1).is_empty(),
        "forged media never reaches b"
    );
    let (_, view) = relay.json("GET", "/v1/sessions/bleed", None);
    assert_eq!(view["legs"][0]["counters"]["auth_failures"], 20);
    assert!(
        view["legs"][0].get("latched_rtp").is_none(),
        "no latch from forged packets"
    );

    // The genuine caller's authenticated packet latches.
    let policy = srtp::Policy::new(
        srtp::MasterKey::from_material(srtp::Suite::AesCm128HmacSha1_80, &k_a).unwrap(),
    );
    let mut tx = srtp::Context::new(&policy).unwrap();
    let mut genuine = rtp(0x11, 1, &[0x42; 160]);
    let len = genuine.len();
    genuine.resize(len + 10, 0);
    tx.protect_rtp(&mut genuine, len).unwrap();
    caller.send_to(&genuine, relay_addr(a_port)).unwrap();
    assert_eq!(receive(&callee, 1)[0].0, rtp(0x11, 1, &[0x42; 160]));
    let (_, view) = relay.json("GET", "/v1/sessions/bleed", None);
    assert_eq!(
        view["legs"][0]["latched_rtp"],
        caller.local_addr().unwrap().to_string()
    );
    // After the latch the attacker is dropped before any crypto.
    attacker.send_to(&genuine, relay_addr(a_port)).unwrap();
    assert!(receive(&callee, 1).is_empty());
    let (_, view) = relay.json("GET", "/v1/sessions/bleed", None);
    assert_eq!(view["legs"][0]["counters"]["drops"]["wrong_source"], 1);
    assert_eq!(view["legs"][0]["counters"]["auth_failures"], 20);
}

#[test]
fn a_silent_leg_is_reported_as_timed_out() {
    let relay = TestRelay::start(config(32_400, 32_499));
    // Subscribe to the event stream first.
    let mut events = TcpStream::connect(relay.addr).unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        events,
        "GET /v1/events HTTP/1.1\r\nHost: relayd\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(events);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");

    let active = socket();
    let (status, view) = relay.json(
        "PUT",
        "/v1/sessions/quiet",
        Some(&json!({ "media_timeout_secs": 1, "legs": [
            { "id": "a", "remote": { "address": "127.0.0.1", "rtp_port": port(&active) }, "forward_to": "b" },
            { "id": "b", "forward_to": "a" }
        ]})),
    );
    assert_eq!(status, 201, "{view}");
    let (a_port, _) = local(&view, 0);
    // Keep leg a busy; leg b stays silent.
    let deadline = Instant::now() + Duration::from_millis(1800);
    let mut seq = 0;
    while Instant::now() < deadline {
        active
            .send_to(&rtp(1, seq, b"keepalive"), relay_addr(a_port))
            .unwrap();
        seq += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, view) = relay.json("GET", "/v1/sessions/quiet", None);
    assert_eq!(view["legs"][0]["media_timed_out"], false);
    assert_eq!(view["legs"][1]["media_timed_out"], true);
    let (_, list) = relay.json("GET", "/v1/sessions", None);
    assert_eq!(list[0]["media_timed_out"], true);

    // The event stream carried exactly that leg.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut data = None;
    let mut line = String::new();
    while Instant::now() < deadline && data.is_none() {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(rest) = line.trim().strip_prefix("data:") {
            data = Some(serde_json::from_str::<Value>(rest.trim()).unwrap());
        }
    }
    assert_eq!(
        data,
        Some(json!({ "kind": "media_timeout", "session": "quiet", "leg": "b", "silent_secs": 1 }))
    );
}

/// One call on the relay's only two port pairs, ended; late packets to its ports; a new call
/// on the same ports at once (no quarantine). The new call's media flows, from the same
/// sockets (kept bound between calls), and nothing of the old call reaches anyone.
fn ports_reused_at_once_carry_only_the_new_call(workers: usize, ports: (u16, u16)) {
    let mut relay_config = config(ports.0, ports.0 + 3);
    relay_config.datapath.workers = workers;
    let relay = TestRelay::start(relay_config);
    let session = |id: &str, a: &UdpSocket, b: &UdpSocket| {
        let (status, view) = relay.json(
            "PUT",
            &format!("/v1/sessions/{id}"),
            Some(&json!({ "legs": [
                { "id": "a", "remote": { "address": "127.0.0.1", "rtp_port": port(a) }, "latch": "fixed", "forward_to": "b" },
                { "id": "b", "remote": { "address": "127.0.0.1", "rtp_port": port(b) }, "latch": "fixed", "forward_to": "a" }
            ]})),
        );
        assert_eq!(status, 201, "{view}");
        (local(&view, 0).0, local(&view, 1).0)
    };
    let (old_a, old_b) = (socket(), socket());
    let (a_port, b_port) = session("old", &old_a, &old_b);
    old_a
        .send_to(&rtp(1, 1, &[1; 160]), relay_addr(a_port))
        .unwrap();
    assert_eq!(receive(&old_b, 1).len(), 1, "the old call's media flows");
    let (status, _) = relay.json("DELETE", "/v1/sessions/old", None);
    assert_eq!(status, 204);
    // Late packets of the old call, to both of its ports (RTP and RTCP).
    for seq in 2..12u16 {
        old_a
            .send_to(&rtp(1, seq, &[2; 160]), relay_addr(a_port))
            .unwrap();
        old_b
            .send_to(&rtp(2, seq, &[3; 160]), relay_addr(b_port + 1))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(150));

    for call in 0..3u16 {
        let (new_a, new_b) = (socket(), socket());
        let id = format!("new{call}");
        let (new_a_port, new_b_port) = session(&id, &new_a, &new_b);
        assert_eq!(
            (new_a_port, new_b_port),
            (a_port, b_port),
            "the only two pairs, reused at once"
        );
        for seq in 0..10u16 {
            new_a
                .send_to(&rtp(7, seq, &[7; 160]), relay_addr(new_a_port))
                .unwrap();
            new_b
                .send_to(&rtp(8, seq, &[8; 160]), relay_addr(new_b_port))
                .unwrap();
        }
        let at_b = receive(&new_b, 11);
        let at_a = receive(&new_a, 11);
        assert_eq!(
            at_b.len(),
            10,
            "call {call}: exactly the new call's packets reach b"
        );
        assert!(at_b.iter().all(|(p, _)| p[8..12] == 7u32.to_be_bytes()));
        assert_eq!(at_a.len(), 10, "call {call}: and a");
        assert!(at_a.iter().all(|(p, _)| p[8..12] == 8u32.to_be_bytes()));
        let (status, _) = relay.json("DELETE", &format!("/v1/sessions/{id}"), None);
        assert_eq!(status, 204);
    }
    assert!(
        receive(&old_a, 1).is_empty() && receive(&old_b, 1).is_empty(),
        "nothing reaches the old call's peers"
    );
}

#[test]
fn ports_reused_at_once_on_one_worker_carry_only_the_new_call() {
    ports_reused_at_once_carry_only_the_new_call(1, (32_600, 32_603));
}

#[test]
fn ports_reused_at_once_across_workers_carry_only_the_new_call() {
    ports_reused_at_once_carry_only_the_new_call(2, (32_700, 32_703));
}
