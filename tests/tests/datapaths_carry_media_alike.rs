//! The same end-to-end scenarios against both datapaths, in the caller/relay/callee namespaces
//! (see `tests::topology`): relayd with `kind = "socket"`, and with `kind = "xdp"` where plain
//! flows are forwarded in XDP and SRTP flows go through the AF_XDP workers.
//!
//! - SRTP->RTP and RTP->SRTP (RTP and RTCP) checked by libsrtp (pylibsrtp) on the SRTP side; a
//!   tampered packet and a replay are refused and counted.
//! - A learning, strict leg latches onto its peer (in userspace, authenticated first on SRTP
//!   legs), is then pinned in XDP, and drops a third address.
//! - An RTP-bleed attempt on a learning SRTP leg never latches and never reaches the callee.
//!
//! Under `xdp` the counters also prove where the media went: `xdp_packets` counts what the
//! XDP program took (forwarded or handed to a worker), the AF_XDP metrics what the workers sent.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test payloads derive bytes from sequence numbers"
)]

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{json, Value};
use tests::{
    netns::Netns,
    pylibsrtp::{self, Mode},
    require_root,
    topology::{RelaydProcess, Topology, CALLEE, CALLER, RELAY_CALLEE_SIDE, RELAY_CALLER_SIDE},
};

const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";
const API_PORT: u16 = 18_790;

fn bind(ns: &Netns, address: &str, port: u16) -> UdpSocket {
    ns.run(|| {
        let s = UdpSocket::bind((address, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        s
    })
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

/// Receives until `count` datagrams arrived or nothing came for 400 ms.
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

fn payloads(got: Vec<(Vec<u8>, SocketAddr)>) -> Vec<Vec<u8>> {
    got.into_iter().map(|(p, _)| p).collect()
}

fn key(material: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(material)
}

fn crypto(material: &[u8]) -> Value {
    json!({ "suite": SUITE, "keys": [{ "key": key(material) }] })
}

fn local(view: &Value, leg: usize) -> (u16, u16) {
    let l = &view["legs"][leg]["local"];
    (
        u16::try_from(l["rtp_port"].as_u64().unwrap()).unwrap(),
        u16::try_from(l["rtcp_port"].as_u64().unwrap()).unwrap(),
    )
}

fn counters(relayd: &RelaydProcess<'_>, session: &str, leg: usize) -> Value {
    let (status, view) = relayd.call("GET", &format!("/v1/sessions/{session}"), None);
    assert_eq!(status, 200, "{view}");
    view["legs"][leg]["counters"].clone()
}

fn caller_side(port: u16) -> SocketAddr {
    (RELAY_CALLER_SIDE.parse::<std::net::IpAddr>().unwrap(), port).into()
}

fn callee_side(port: u16) -> SocketAddr {
    (RELAY_CALLEE_SIDE.parse::<std::net::IpAddr>().unwrap(), port).into()
}

/// Sends `probe()` from `from` to `to` every 100 ms until `pinned()` (at most 8 s); returns the
/// probes sent.
fn until_pinned(
    from: &UdpSocket,
    to: SocketAddr,
    mut probe: impl FnMut(u16) -> Vec<u8>,
    mut pinned: impl FnMut() -> bool,
) -> u16 {
    let started = Instant::now();
    let mut sent = 0;
    while !pinned() {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the flow was not pinned in XDP within 8 s"
        );
        from.send_to(&probe(sent), to).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    sent
}

/// SRTP caller <-> plain callee, RTP and RTCP both ways, with a tampered packet and a replay.
#[allow(
    clippy::too_many_lines,
    reason = "one call, both directions, checked step by step"
)]
fn srtp_transcrypting(kind: &str) {
    let Some(python) = pylibsrtp::python(&format!("srtp_transcrypting ({kind})")) else {
        return;
    };
    let bed = Topology::new(2);
    if kind == "xdp-busy-poll" {
        // The mode's device side: the kernel leaves receive processing to the polling worker
        // and takes it back 50 us after the worker stops polling.
        for dev in [&bed.r0, &bed.r1] {
            tests::topology::defer_napi(&bed.relay, dev, 50_000);
        }
    }
    let relayd = bed.start_relayd(
        API_PORT,
        &bed.relayd_config(API_PORT, &bed.datapath(kind, 2)),
    );
    let (a, a_rtcp) = (
        bind(&bed.caller, CALLER, 40_000),
        bind(&bed.caller, CALLER, 40_001),
    );
    let (b, b_rtcp) = (
        bind(&bed.callee, CALLEE, 50_000),
        bind(&bed.callee, CALLEE, 50_001),
    );
    let k_a: Vec<u8> = (0..30u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(1))
        .collect();
    let k_r: Vec<u8> = (0..30u8)
        .map(|i| i.wrapping_mul(11).wrapping_add(3))
        .collect();
    let (status, view) = relayd.call(
        "PUT",
        "/v1/sessions/srtp",
        Some(&json!({ "legs": [
            { "id": "a", "interface": "caller", "latch": "fixed", "forward_to": "b",
              "remote": { "address": CALLER, "rtp_port": 40_000 },
              "inbound_crypto": crypto(&k_a), "outbound_crypto": crypto(&k_r) },
            { "id": "b", "interface": "callee", "latch": "fixed", "forward_to": "a",
              "remote": { "address": CALLEE, "rtp_port": 50_000 } }
        ]})),
    );
    assert_eq!(status, 201, "{view}");
    let (a_port, a_rtcp_port) = local(&view, 0);
    let (b_port, b_rtcp_port) = local(&view, 1);

    // SRTP -> RTP across a sequence wrap: libsrtp protects, the relay decrypts.
    let mut plain: Vec<Vec<u8>> = (0..41u16)
        .map(|s| rtp(0xa, 65_520u16.wrapping_add(s), &[s as u8; 160]))
        .collect();
    let protected: Vec<Vec<u8>> = pylibsrtp::run(&python, SUITE, &k_a, Mode::ProtectRtp, &plain)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // The 41st is kept back, to be tampered with.
    plain.pop();
    for p in &protected[..40] {
        a.send_to(p, caller_side(a_port)).unwrap();
    }
    let at_b = receive(&b, 40);
    assert!(
        at_b.iter().all(|(_, from)| *from == callee_side(b_port)),
        "sent from the relay's b port"
    );
    assert_eq!(
        payloads(at_b),
        plain,
        "{kind}: decrypted, in order, across the wrap"
    );

    // A tampered packet and a replay are refused and counted, and never reach b.
    let mut tampered = protected[40].clone();
    tampered[20] ^= 0x01;
    a.send_to(&tampered, caller_side(a_port)).unwrap();
    a.send_to(&protected[5], caller_side(a_port)).unwrap();
    assert!(
        receive(&b, 1).is_empty(),
        "{kind}: nothing forged or replayed gets through"
    );

    // RTP -> SRTP: b sends plain, libsrtp authenticates and decrypts what a gets.
    let plain: Vec<Vec<u8>> = (0..40u16)
        .map(|s| rtp(0xb, s, &[0x5a ^ s as u8; 160]))
        .collect();
    for p in &plain {
        b.send_to(p, callee_side(b_port)).unwrap();
    }
    let at_a = payloads(receive(&a, 40));
    assert_eq!(at_a.len(), 40, "{kind}: callee -> caller");
    assert!(
        at_a.iter().all(|p| p.len() == 172 + 10),
        "SRTP adds the 80-bit tag"
    );
    let decrypted: Vec<Vec<u8>> = pylibsrtp::run(&python, SUITE, &k_r, Mode::UnprotectRtp, &at_a)
        .into_iter()
        .map(|r| r.expect("libsrtp authenticates the relay's SRTP"))
        .collect();
    assert_eq!(decrypted, plain);

    // SRTCP -> RTCP and back, on the RTCP ports.
    let srtcp = pylibsrtp::run(
        &python,
        SUITE,
        &k_a,
        Mode::ProtectRtcp,
        &[rtcp(0xa, 1), rtcp(0xa, 2)],
    );
    for p in &srtcp {
        a_rtcp
            .send_to(p.as_ref().unwrap(), caller_side(a_rtcp_port))
            .unwrap();
    }
    assert_eq!(
        payloads(receive(&b_rtcp, 2)),
        vec![rtcp(0xa, 1), rtcp(0xa, 2)]
    );
    b_rtcp
        .send_to(&rtcp(0xb, 3), callee_side(b_rtcp_port))
        .unwrap();
    let got = payloads(receive(&a_rtcp, 1));
    assert_eq!(got.len(), 1, "{kind}: RTCP -> SRTCP");
    let back = pylibsrtp::run(&python, SUITE, &k_r, Mode::UnprotectRtcp, &got);
    assert_eq!(back[0].as_ref().unwrap(), &rtcp(0xb, 3));

    let a_counters = counters(&relayd, "srtp", 0);
    let b_counters = counters(&relayd, "srtp", 1);
    assert_eq!(a_counters["packets_in"], 40 + 2 + 2, "{a_counters}");
    assert_eq!(a_counters["auth_failures"], 1, "{a_counters}");
    assert_eq!(a_counters["replays"], 1, "{a_counters}");
    assert_eq!(a_counters["packets_out"], 41, "{a_counters}");
    assert_eq!(b_counters["packets_in"], 41, "{b_counters}");
    assert_eq!(b_counters["packets_out"], 42, "{b_counters}");
    if kind.starts_with("xdp") {
        // Every packet went through XDP to the workers; the socket datapath saw none.
        assert_eq!(a_counters["xdp_packets"], 44, "{a_counters}");
        assert_eq!(b_counters["xdp_packets"], 41, "{b_counters}");
        assert_eq!(
            relayd.metric("relayd_xdp_packets_total{outcome=\"flow_redirect_worker\"}"),
            85
        );
        assert_eq!(relayd.metric("relayd_afxdp_tx_frames_total"), 83);
        assert_eq!(relayd.metric("relayd_afxdp_rx_frames_total"), 85);
        // One kick per transmitted batch at most, and at least one.
        let kicks = relayd.metric("relayd_afxdp_tx_kicks_total");
        assert!((1..=83).contains(&kicks), "{kicks} kicks");
        assert!(relayd.metric("relayd_afxdp_batches_total") >= 1);
        // Busy polling, as the kernel reports it: every socket of the two workers (one per
        // queue of each of the two interfaces) in that mode, or none.
        let busy = relayd.metric("relayd_afxdp_busy_poll_sockets");
        assert_eq!(busy, if kind == "xdp-busy-poll" { 4 } else { 0 });
        // The kernel's socket counters are exported, and nothing was lost on the way in.
        let metrics = relayd.metrics();
        for name in [
            "relayd_afxdp_kernel_rx_dropped_total",
            "relayd_afxdp_kernel_rx_ring_full_total",
            "relayd_afxdp_kernel_fill_ring_empty_total",
            "relayd_afxdp_kernel_invalid_descs_total",
        ] {
            assert!(
                metrics.contains(&format!("\n{name} 0\n")),
                "{name}: {metrics}"
            );
        }
        assert_eq!(
            relayd.metric("relayd_xdp_packets_total{outcome=\"flow_pass_no_worker\"}"),
            0
        );
    }
    let (status, _) = relayd.call("DELETE", "/v1/sessions/srtp", None);
    assert_eq!(status, 204);
    a.send_to(&protected[0], caller_side(a_port)).unwrap();
    assert!(receive(&b, 1).is_empty(), "{kind}: no flow after delete");
    assert!(relayd.stop().success());
}

/// A learning, strict, plain leg: latched in userspace, then (xdp) pinned in XDP; a third
/// address is dropped either way.
fn learning_then_strict(kind: &str) {
    let bed = Topology::new(2);
    let relayd = bed.start_relayd(
        API_PORT,
        &bed.relayd_config(API_PORT, &bed.datapath(kind, 2)),
    );
    let a = bind(&bed.caller, CALLER, 40_000);
    let stranger = bind(&bed.caller, CALLER, 40_100);
    let b = bind(&bed.callee, CALLEE, 50_000);
    let (status, view) = relayd.call(
        "PUT",
        "/v1/sessions/latch",
        Some(&json!({ "legs": [
            { "id": "a", "interface": "caller", "rtcp_mux": true, "strict_source": true,
              "forward_to": "b" },
            { "id": "b", "interface": "callee", "rtcp_mux": true, "latch": "fixed",
              "forward_to": "a", "remote": { "address": CALLEE, "rtp_port": 50_000 } }
        ]})),
    );
    assert_eq!(status, 201, "{view}");
    let (a_port, _) = local(&view, 0);
    let (b_port, _) = local(&view, 1);

    a.send_to(&rtp(1, 0, b"first"), caller_side(a_port))
        .unwrap();
    assert_eq!(payloads(receive(&b, 1)), vec![rtp(1, 0, b"first")]);
    let (_, view) = relayd.call("GET", "/v1/sessions/latch", None);
    assert_eq!(view["legs"][0]["latched_rtp"], format!("{CALLER}:40000"));

    // The latch locks after its 1 s window; under xdp the flow is then pinned in the kernel.
    let mut probes = 0;
    if kind.starts_with("xdp") {
        probes = until_pinned(
            &a,
            caller_side(a_port),
            |i| rtp(1, 1 + i, b"probe"),
            || {
                counters(&relayd, "latch", 0)["xdp_packets"]
                    .as_u64()
                    .unwrap_or(0)
                    > 0
            },
        );
        let _ = receive(&b, usize::from(probes));
    } else {
        std::thread::sleep(Duration::from_millis(1200));
    }
    let base = 1 + probes;
    for s in 0..20 {
        a.send_to(&rtp(1, base + s, b"media"), caller_side(a_port))
            .unwrap();
        b.send_to(&rtp(2, s, b"back"), callee_side(b_port)).unwrap();
    }
    assert_eq!(receive(&b, 20).len(), 20, "{kind}: caller -> callee");
    let back = receive(&a, 20);
    assert_eq!(back.len(), 20, "{kind}: callee -> the latched caller");
    assert!(back.iter().all(|(_, from)| *from == caller_side(a_port)));

    // A third address is dropped (locked and strict) and counted.
    stranger
        .send_to(&rtp(9, 0, b"hijack"), caller_side(a_port))
        .unwrap();
    assert!(receive(&b, 1).is_empty(), "{kind}: strict source");
    let c = counters(&relayd, "latch", 0);
    assert_eq!(c["drops"]["wrong_source"], 1, "{kind}: {c}");
    assert_eq!(
        c["packets_in"].as_u64().unwrap(),
        1 + u64::from(probes) + 20 + 1,
        "{c}"
    );
    if kind.starts_with("xdp") {
        assert!(
            c["xdp_packets"].as_u64().unwrap() >= 20,
            "the media after the lock went through XDP: {c}"
        );
        assert!(relayd.metric("relayd_xdp_packets_total{outcome=\"flow_drop_wrong_source\"}") >= 1);
    }
    assert!(relayd.stop().success());
}

/// RTP bleed: forged SRTP from a third address to a learning SRTP leg, before and after the
/// genuine peer, never latches and never reaches the callee.
fn rtp_bleed_on_a_learning_srtp_leg(kind: &str) {
    let Some(python) = pylibsrtp::python(&format!("rtp_bleed ({kind})")) else {
        return;
    };
    let bed = Topology::new(2);
    let relayd = bed.start_relayd(
        API_PORT,
        &bed.relayd_config(API_PORT, &bed.datapath(kind, 2)),
    );
    let a = bind(&bed.caller, CALLER, 40_000);
    let attacker = bind(&bed.caller, CALLER, 40_200);
    let b = bind(&bed.callee, CALLEE, 50_000);
    let k_a: Vec<u8> = (0..30u8).map(|i| i ^ 0x5c).collect();
    let (status, view) = relayd.call(
        "PUT",
        "/v1/sessions/bleed",
        Some(&json!({ "legs": [
            { "id": "a", "interface": "caller", "rtcp_mux": true, "strict_source": true,
              "forward_to": "b", "inbound_crypto": crypto(&k_a) },
            { "id": "b", "interface": "callee", "rtcp_mux": true, "latch": "fixed",
              "forward_to": "a", "remote": { "address": CALLEE, "rtp_port": 50_000 } }
        ]})),
    );
    assert_eq!(status, 201, "{view}");
    let (a_port, _) = local(&view, 0);
    // Forged: right shape, wrong key.
    let forged = pylibsrtp::run(
        &python,
        SUITE,
        &[0x11; 30],
        Mode::ProtectRtp,
        &[rtp(7, 1, b"forged")],
    );
    attacker
        .send_to(forged[0].as_ref().unwrap(), caller_side(a_port))
        .unwrap();
    assert!(
        receive(&b, 1).is_empty(),
        "{kind}: forged packet not forwarded"
    );
    let (_, view) = relayd.call("GET", "/v1/sessions/bleed", None);
    assert_eq!(
        view["legs"][0]["latched_rtp"],
        Value::Null,
        "{kind}: no latch"
    );
    assert_eq!(view["legs"][0]["counters"]["auth_failures"], 1);

    let genuine: Vec<Vec<u8>> = (0..5u16).map(|s| rtp(0xa, s, &[s as u8; 160])).collect();
    let protected = pylibsrtp::run(&python, SUITE, &k_a, Mode::ProtectRtp, &genuine);
    for p in &protected {
        a.send_to(p.as_ref().unwrap(), caller_side(a_port)).unwrap();
    }
    assert_eq!(payloads(receive(&b, 5)), genuine);
    let (_, view) = relayd.call("GET", "/v1/sessions/bleed", None);
    assert_eq!(view["legs"][0]["latched_rtp"], format!("{CALLER}:40000"));
    attacker
        .send_to(forged[0].as_ref().unwrap(), caller_side(a_port))
        .unwrap();
    assert!(
        receive(&b, 1).is_empty(),
        "{kind}: still nothing from the attacker"
    );
    let (_, view) = relayd.call("GET", "/v1/sessions/bleed", None);
    assert_eq!(view["legs"][0]["latched_rtp"], format!("{CALLER}:40000"));
    assert!(relayd.stop().success());
}

#[test]
fn srtp_transcrypting_on_the_socket_datapath() {
    if require_root("srtp_transcrypting_on_the_socket_datapath") {
        srtp_transcrypting("socket");
    }
}

#[test]
fn srtp_transcrypting_through_af_xdp_workers() {
    if require_root("srtp_transcrypting_through_af_xdp_workers") {
        srtp_transcrypting("xdp");
    }
}

#[test]
fn srtp_transcrypting_through_busy_polling_af_xdp_workers() {
    if require_root("srtp_transcrypting_through_busy_polling_af_xdp_workers") {
        srtp_transcrypting("xdp-busy-poll");
    }
}

#[test]
fn learning_then_strict_source_on_the_socket_datapath() {
    if require_root("learning_then_strict_source_on_the_socket_datapath") {
        learning_then_strict("socket");
    }
}

#[test]
fn learning_then_strict_source_pinned_in_xdp() {
    if require_root("learning_then_strict_source_pinned_in_xdp") {
        learning_then_strict("xdp");
    }
}

#[test]
fn rtp_bleed_is_refused_on_the_socket_datapath() {
    if require_root("rtp_bleed_is_refused_on_the_socket_datapath") {
        rtp_bleed_on_a_learning_srtp_leg("socket");
    }
}

#[test]
fn rtp_bleed_is_refused_with_the_xdp_datapath() {
    if require_root("rtp_bleed_is_refused_with_the_xdp_datapath") {
        rtp_bleed_on_a_learning_srtp_leg("xdp");
    }
}

/// With relayd's xdp datapath running and a session pinned, traffic that is not a programmed
/// flow reaches the relay's stack untouched: ping, TCP, and SIP over UDP on 5060.
#[test]
fn unknown_traffic_is_untouched_by_the_xdp_datapath() {
    if !require_root("unknown_traffic_is_untouched_by_the_xdp_datapath") {
        return;
    }
    let bed = Topology::new(2);
    let relayd = bed.start_relayd(
        API_PORT,
        &bed.relayd_config(API_PORT, &bed.datapath("xdp", 2)),
    );
    let (status, view) = relayd.call(
        "PUT",
        "/v1/sessions/busy",
        Some(&json!({ "legs": [
            { "id": "a", "interface": "caller", "latch": "fixed", "forward_to": "b",
              "remote": { "address": CALLER, "rtp_port": 40_000 } },
            { "id": "b", "interface": "callee", "latch": "fixed", "forward_to": "a",
              "remote": { "address": CALLEE, "rtp_port": 50_000 } }
        ]})),
    );
    assert_eq!(status, 201, "{view}");
    tests::netns::run_ok(bed.caller.command("ping").args([
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        RELAY_CALLER_SIDE,
    ]));
    let sip = bind(&bed.relay, RELAY_CALLER_SIDE, 5060);
    let tcp = bed
        .relay
        .run(|| std::net::TcpListener::bind((RELAY_CALLER_SIDE, 5061)).unwrap());
    let options = b"OPTIONS sip:relay@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let caller = bind(&bed.caller, CALLER, 5060);
    caller.send_to(options, caller_side(5060)).unwrap();
    let got = receive(&sip, 1);
    assert_eq!(got.len(), 1, "SIP on 5060 reaches the relay's stack");
    assert_eq!(got[0].0, options.to_vec());
    let mut stream = bed
        .caller
        .run(|| std::net::TcpStream::connect((RELAY_CALLER_SIDE, 5061)).unwrap());
    let (mut accepted, _) = tcp.accept().unwrap();
    std::io::Write::write_all(&mut stream, b"hello over TCP").unwrap();
    let mut buf = [0u8; 14];
    std::io::Read::read_exact(&mut accepted, &mut buf).unwrap();
    assert_eq!(&buf, b"hello over TCP");
    assert!(relayd.metric("relayd_xdp_packets_total{outcome=\"pass_not_udp\"}") >= 3);
    assert!(relayd.metric("relayd_xdp_packets_total{outcome=\"pass_no_flow\"}") >= 1);
    assert!(relayd.stop().success());
}
