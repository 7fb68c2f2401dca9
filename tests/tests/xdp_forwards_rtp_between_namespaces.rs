//! relayd with `datapath.kind = "xdp"` between a caller and a callee namespace
//! (`tests::topology`): a plain RTP session with fixed peers is forwarded entirely in XDP (the
//! leg counters show every packet as XDP-forwarded, i.e. userspace saw none of them), both
//! ways; unknown traffic (ping) still reaches the relay's stack.

use std::{net::UdpSocket, time::Duration};

use serde_json::json;
use tests::{
    netns::run_ok,
    require_root,
    topology::{Topology, CALLEE, CALLER},
};

fn receive(socket: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < count {
        match socket.recv(&mut buf) {
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    got
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x42; 160]);
    p
}

#[test]
fn plain_rtp_with_fixed_peers_is_forwarded_in_xdp_both_ways() {
    if !require_root("plain_rtp_with_fixed_peers_is_forwarded_in_xdp_both_ways") {
        return;
    }
    let bed = Topology::new(1);
    let relayd = bed.start_relayd(18_780, &bed.relayd_config(18_780, &bed.datapath("xdp", 1)));
    let (caller, callee) = (&bed.caller, &bed.callee);
    let caller_rtp = caller.run(|| UdpSocket::bind((CALLER, 40_000)).unwrap());
    let callee_rtp = callee.run(|| UdpSocket::bind((CALLEE, 50_000)).unwrap());
    let (status, view) = relayd.call(
        "PUT",
        "/v1/sessions/xdp-call",
        Some(&json!({ "legs": [
            { "id": "a", "interface": "caller", "latch": "fixed", "forward_to": "b",
              "remote": { "address": "198.18.0.2", "rtp_port": 40000 } },
            { "id": "b", "interface": "callee", "latch": "fixed", "forward_to": "a",
              "remote": { "address": "198.18.1.2", "rtp_port": 50000 } }
        ]})),
    );
    assert_eq!(status, 201, "{view}");
    let a_port = u16::try_from(view["legs"][0]["local"]["rtp_port"].as_u64().unwrap()).unwrap();
    let b_port = u16::try_from(view["legs"][1]["local"]["rtp_port"].as_u64().unwrap()).unwrap();

    for seq in 0..100u16 {
        caller_rtp
            .send_to(&rtp(seq, 1), ("198.18.0.1", a_port))
            .unwrap();
        callee_rtp
            .send_to(&rtp(seq, 2), ("198.18.1.1", b_port))
            .unwrap();
    }
    let at_callee = receive(&callee_rtp, 100);
    let at_caller = receive(&caller_rtp, 100);

    assert_eq!(at_callee.len(), 100, "caller -> callee");
    assert_eq!(at_caller.len(), 100, "callee -> caller");
    assert_eq!(at_callee[42], rtp(42, 1));
    assert_eq!(at_caller[7], rtp(7, 2));

    let (_, view) = relayd.call("GET", "/v1/sessions/xdp-call", None);
    for leg in 0..2 {
        let c = &view["legs"][leg]["counters"];
        assert_eq!(c["packets_in"], 100, "{c}");
        assert_eq!(c["xdp_packets"], 100, "every packet forwarded in XDP: {c}");
        assert_eq!(c["packets_out"], 100, "{c}");
        assert_eq!(
            c["bytes_in"],
            100 * 172,
            "UDP payload bytes, as userspace counts: {c}"
        );
    }
    assert_eq!(
        relayd.metric("relayd_xdp_packets_total{outcome=\"flow_forward_redirect\"}"),
        200
    );

    // Unknown traffic is untouched: the relay still answers ping.
    run_ok(
        caller
            .command("ping")
            .args(["-c", "2", "-i", "0.2", "-W", "2", "198.18.0.1"]),
    );

    // Deleting the session removes the kernel flows (their counts stay with the legs only
    // while the session lives): packets then reach the (closed) ports.
    let (status, _) = relayd.call("DELETE", "/v1/sessions/xdp-call", None);
    assert_eq!(status, 204);
    caller_rtp
        .send_to(&rtp(200, 1), ("198.18.0.1", a_port))
        .unwrap();
    assert!(receive(&callee_rtp, 1).is_empty(), "no flow after delete");
    assert!(relayd.stop().success(), "relayd exits cleanly");
}
