//! relayd with `datapath.kind = "xdp"` between a caller and a callee namespace: a plain RTP
//! session with fixed peers is forwarded entirely in XDP (the leg counters show every packet
//! as XDP-forwarded, i.e. userspace saw none of them), both ways; unknown traffic (ping) still
//! reaches the relay's stack.
//!
//! ```text
//!   caller ns                  relay ns (relayd, XDP on r0 and r1)           callee ns
//!   c0 198.18.0.2/24 <-veth-> r0 198.18.0.1/24    r1 198.18.1.1/24 <-veth-> e1 198.18.1.2/24
//! ```
//! The peers' veth ends carry the XDP program too (without flows it passes everything): veth
//! delivers `XDP_TX`/redirected frames only to an end with an XDP program.

use std::{
    io::Read as _,
    net::UdpSocket,
    process::Stdio,
    time::{Duration, Instant},
};

use relay_userspace::xdp::{AttachMode, RelayXdp};
use serde_json::{json, Value};
use tests::{
    loadgen::http::{HttpClient, Token},
    netns::{run_ok, unique_tag, Netns},
    require_root, workspace_bin,
};

const TOKEN: &str = "xdp-netns-token-0123456789";

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
#[allow(clippy::too_many_lines, reason = "one topology, one scenario")]
fn plain_rtp_with_fixed_peers_is_forwarded_in_xdp_both_ways() {
    if !require_root("plain_rtp_with_fixed_peers_is_forwarded_in_xdp_both_ways") {
        return;
    }
    let (caller, relay, callee) = (
        Netns::create("caller"),
        Netns::create("relay"),
        Netns::create("callee"),
    );
    let tag = unique_tag();
    let (c0, r0, r1, e1) = (
        format!("c{tag}"),
        format!("r{tag}a"),
        format!("r{tag}b"),
        format!("e{tag}"),
    );
    run_ok(std::process::Command::new("ip").args([
        "link",
        "add",
        &c0,
        "netns",
        caller.name(),
        "type",
        "veth",
        "peer",
        "name",
        &r0,
        "netns",
        relay.name(),
    ]));
    run_ok(std::process::Command::new("ip").args([
        "link",
        "add",
        &e1,
        "netns",
        callee.name(),
        "type",
        "veth",
        "peer",
        "name",
        &r1,
        "netns",
        relay.name(),
    ]));
    caller.ip(&["addr", "add", "198.18.0.2/24", "dev", &c0]);
    relay.ip(&["addr", "add", "198.18.0.1/24", "dev", &r0]);
    relay.ip(&["addr", "add", "198.18.1.1/24", "dev", &r1]);
    callee.ip(&["addr", "add", "198.18.1.2/24", "dev", &e1]);
    for (ns, dev) in [(&caller, &c0), (&relay, &r0), (&relay, &r1), (&callee, &e1)] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    // Senders compute full UDP checksums, as a real NIC delivers them: with veth's checksum
    // offload a local sender leaves only the pseudo-header sum in the packet, which an XDP
    // rewrite cannot complete (XDP frames lose the offload state on redirect).
    for (ns, dev) in [(&caller, &c0), (&callee, &e1)] {
        run_ok(ns.command("ethtool").args(["-K", dev, "tx", "off"]));
    }
    // Resolve the neighbours once, so the XDP program finds next hops from the first packet.
    for target in ["198.18.0.2", "198.18.1.2"] {
        run_ok(relay.command("ping").args(["-c", "1", "-W", "2", target]));
    }
    // The peers' ends get the program (no flows: it passes everything).
    let caller_xdp = caller.run(|| {
        let mut x = RelayXdp::load().unwrap();
        x.attach(&c0, AttachMode::Native).unwrap();
        x
    });
    let callee_xdp = callee.run(|| {
        let mut x = RelayXdp::load().unwrap();
        x.attach(&e1, AttachMode::Native).unwrap();
        x
    });

    let config = std::env::temp_dir().join(format!("relayd-xdp-{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:18780\"\ntoken_file = \"/dev/null\"\n\
             [datapath]\nkind = \"xdp\"\nworkers = 1\nxdp_interfaces = [\"{r0}\", \"{r1}\"]\n\
             [[interface]]\nname = \"caller\"\naddress = \"198.18.0.1\"\nport_min = 30000\nport_max = 30099\n\
             [[interface]]\nname = \"callee\"\naddress = \"198.18.1.1\"\nport_min = 31000\nport_max = 31099\n"
        ),
    )
    .unwrap();
    let mut relayd = relay
        .command(workspace_bin("relayd").to_str().unwrap())
        .arg("--config")
        .arg(&config)
        .env("RELAYD_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = HttpClient::new(
        "http://127.0.0.1:18780",
        Some(Token::new(TOKEN.to_owned())),
        Duration::from_secs(5),
    )
    .unwrap();
    let call = |method: &str, path: &str, body: Option<Value>| -> (u16, Value) {
        relay.run(|| {
            let body = body.map(|b| serde_json::to_vec(&b).unwrap());
            let response = client.request(method, path, body.as_deref()).unwrap();
            let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            (response.status, value)
        })
    };
    let started = Instant::now();
    while relay.run(|| std::net::TcpStream::connect("127.0.0.1:18780").is_err()) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "relayd did not start"
        );
        if let Ok(Some(status)) = relayd.try_wait() {
            let mut stderr = String::new();
            relayd
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("relayd exited ({status}): {stderr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let caller_rtp = caller.run(|| UdpSocket::bind("198.18.0.2:40000").unwrap());
    let callee_rtp = callee.run(|| UdpSocket::bind("198.18.1.2:50000").unwrap());
    let (status, view) = call(
        "PUT",
        "/v1/sessions/xdp-call",
        Some(json!({ "legs": [
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

    let (_, view) = call("GET", "/v1/sessions/xdp-call", None);
    for leg in 0..2 {
        let c = &view["legs"][leg]["counters"];
        assert_eq!(c["packets_in"], 100, "{c}");
        assert_eq!(c["xdp_packets"], 100, "every packet forwarded in XDP: {c}");
        assert_eq!(c["packets_out"], 100, "{c}");
    }
    let metrics = relay.run(|| client.request("GET", "/metrics", None).unwrap());
    let metrics = String::from_utf8(metrics.body).unwrap();
    assert!(
        metrics.contains("relayd_xdp_packets_total{outcome=\"flow_forward_redirect\"} 200"),
        "{metrics}"
    );

    // Unknown traffic is untouched: the relay still answers ping.
    run_ok(
        caller
            .command("ping")
            .args(["-c", "2", "-i", "0.2", "-W", "2", "198.18.0.1"]),
    );

    // Deleting the session removes the kernel flows: packets then reach the (closed) ports.
    let (status, _) = call("DELETE", "/v1/sessions/xdp-call", None);
    assert_eq!(status, 204);
    caller_rtp
        .send_to(&rtp(200, 1), ("198.18.0.1", a_port))
        .unwrap();
    assert!(receive(&callee_rtp, 1).is_empty(), "no flow after delete");

    // SAFETY: signals our own child.
    unsafe { libc::kill(i32::try_from(relayd.id()).unwrap(), libc::SIGTERM) };
    let status = relayd.wait().unwrap();
    assert!(status.success(), "relayd exit {status}");
    drop(caller_xdp);
    drop(callee_xdp);
    let _ = std::fs::remove_file(&config);
}
