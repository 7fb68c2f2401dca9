//! The XDP program attached to a real veth (native mode) through relayd's loader, between two
//! network namespaces created by the test: UDP, ICMP and TCP all still arrive, programmed drop
//! flows are dropped, the counters move, and detaching restores the interface.
//!
//! Topology (addresses exist only inside the namespaces):
//!
//! ```text
//!   ns caller                      ns relay
//!   sa<tag> 198.18.0.1/24 <-veth-> sb<tag> 198.18.0.2/24  (XDP attached here)
//! ```

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream, UdpSocket},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use relay_common::{Counter, FlowAction, FlowEntry, FlowKey};
use relay_userspace::xdp::{AttachMode, RelayXdp};
use tests::{
    netns::{unique_tag, veth_pair, Netns},
    require_root, workspace_bin,
};

const RELAY_IP: [u8; 4] = [198, 18, 0, 2];
const PASS_FLOW_PORT: u16 = 30_000;
const NO_FLOW_PORT: u16 = 30_001;
const DROP_FLOW_PORT: u16 = 30_002;
const TCP_PORT: u16 = 30_010;
const DATAGRAMS: usize = 20;
/// relayd's API token in these tests.
const TOKEN: &str = "netns-test-token-0123456789";

struct Bed {
    caller: Netns,
    relay: Netns,
    relay_if: String,
}

fn bed() -> Bed {
    let caller = Netns::create("caller");
    let relay = Netns::create("relay");
    let tag = unique_tag();
    let relay_if = format!("sb{tag}");
    veth_pair(
        &caller,
        &format!("sa{tag}"),
        "198.18.0.1/24",
        &relay,
        &relay_if,
        "198.18.0.2/24",
    );
    Bed {
        caller,
        relay,
        relay_if,
    }
}

/// Whether `ip -d link show` reports an XDP program on the interface.
fn has_xdp(ns: &Netns, interface: &str) -> bool {
    let out = ns.ip(&["-d", "link", "show", "dev", interface]);
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

/// Receives datagrams until `expected` arrived or `timeout` passed; returns the count.
fn receive_count(socket: &UdpSocket, expected: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    let mut received = 0;
    while received < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buf) {
            Ok(_) => received += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    received
}

fn send_datagrams(sender: &UdpSocket, port: u16, count: usize) {
    for i in 0..count {
        let payload = format!("datagram {i} to {port}");
        sender
            .send_to(
                payload.as_bytes(),
                (std::net::Ipv4Addr::from(RELAY_IP), port),
            )
            .expect("send");
    }
}

#[test]
fn xdp_on_a_veth_passes_udp_icmp_and_tcp_and_counts_them() {
    if !require_root("xdp_on_a_veth_passes_udp_icmp_and_tcp_and_counts_them") {
        return;
    }
    let bed = bed();
    let mut xdp = bed.relay.run(|| {
        let mut xdp = RelayXdp::load().expect("load");
        xdp.attach(&bed.relay_if, AttachMode::Native)
            .expect("attach native XDP to the relay veth");
        xdp
    });
    assert!(has_xdp(&bed.relay, &bed.relay_if), "XDP shows on the link");
    xdp.insert_flow(
        FlowKey::v4(RELAY_IP, PASS_FLOW_PORT),
        FlowEntry::new(FlowAction::Pass, 1),
    )
    .unwrap();
    xdp.insert_flow(
        FlowKey::v4(RELAY_IP, DROP_FLOW_PORT),
        FlowEntry::new(FlowAction::Drop, 2),
    )
    .unwrap();

    let (pass_rx, no_flow_rx, drop_rx, tcp_listener) = bed.relay.run(|| {
        (
            UdpSocket::bind(("198.18.0.2", PASS_FLOW_PORT)).unwrap(),
            UdpSocket::bind(("198.18.0.2", NO_FLOW_PORT)).unwrap(),
            UdpSocket::bind(("198.18.0.2", DROP_FLOW_PORT)).unwrap(),
            TcpListener::bind(("198.18.0.2", TCP_PORT)).unwrap(),
        )
    });
    let sender = bed.caller.run(|| UdpSocket::bind("198.18.0.1:0").unwrap());

    // UDP: to a pass flow, to no flow, to a drop flow.
    send_datagrams(&sender, PASS_FLOW_PORT, DATAGRAMS);
    send_datagrams(&sender, NO_FLOW_PORT, DATAGRAMS);
    send_datagrams(&sender, DROP_FLOW_PORT, DATAGRAMS);
    assert_eq!(
        receive_count(&pass_rx, DATAGRAMS, Duration::from_secs(5)),
        DATAGRAMS,
        "every datagram to a pass flow arrives"
    );
    assert_eq!(
        receive_count(&no_flow_rx, DATAGRAMS, Duration::from_secs(5)),
        DATAGRAMS,
        "every datagram to an unprogrammed port arrives"
    );
    assert_eq!(
        receive_count(&drop_rx, DATAGRAMS, Duration::from_millis(500)),
        0,
        "datagrams to a drop flow are dropped in XDP"
    );

    // ICMP: ping from the caller namespace.
    let ping = bed
        .caller
        .command("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", "198.18.0.2"])
        .output()
        .expect("spawn ping");
    assert!(
        ping.status.success(),
        "ping through the XDP interface: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // TCP: connect, send, read the echo.
    let server = std::thread::spawn(move || {
        let (mut conn, _) = tcp_listener.accept().expect("accept");
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).expect("read");
        conn.write_all(&buf[..n]).expect("echo");
    });
    let mut client = bed.caller.run(|| {
        TcpStream::connect_timeout(
            &(std::net::Ipv4Addr::from(RELAY_IP), TCP_PORT).into(),
            Duration::from_secs(5),
        )
        .expect("TCP connect through the XDP interface")
    });
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.write_all(b"hello through xdp").unwrap();
    let mut echo = [0u8; 64];
    let n = client.read(&mut echo).expect("read echo");
    assert_eq!(&echo[..n], b"hello through xdp");
    server.join().unwrap();

    let counters = xdp.counters().expect("counters");
    assert_eq!(counters.get(Counter::FlowPass), DATAGRAMS as u64);
    assert_eq!(counters.get(Counter::FlowDrop), DATAGRAMS as u64);
    assert!(counters.get(Counter::PassNoFlow) >= DATAGRAMS as u64);
    // 3 echo requests plus at least SYN, ACK, data and FIN-side segments of the TCP exchange.
    assert!(
        counters.get(Counter::PassNotUdp) >= 3 + 3,
        "ICMP and TCP counted: {counters:?}"
    );
    // The caller's ARP request for 198.18.0.2 crossed the program too.
    assert!(
        counters.get(Counter::PassNotIp) >= 1,
        "ARP counted: {counters:?}"
    );

    // Detach: the link is clean and the former drop flow's traffic arrives again.
    bed.relay.run(|| xdp.detach_all()).expect("detach");
    assert!(
        !has_xdp(&bed.relay, &bed.relay_if),
        "XDP gone from the link"
    );
    send_datagrams(&sender, DROP_FLOW_PORT, 5);
    assert_eq!(receive_count(&drop_rx, 5, Duration::from_secs(5)), 5);
    bed.relay.run(move || drop(xdp));
}

/// relayd itself: attaches on start, serves health naming the interface, detaches on SIGTERM
/// and exits 0.
#[test]
fn relayd_attaches_on_start_and_detaches_on_sigterm() {
    if !require_root("relayd_attaches_on_start_and_detaches_on_sigterm") {
        return;
    }
    let bed = bed();
    let relayd = workspace_bin("relayd");
    let mut child = bed
        .relay
        .command(relayd.to_str().unwrap())
        .args([
            "--xdp-interface",
            &bed.relay_if,
            "--http-listen",
            "127.0.0.1:18740",
        ])
        .env("RELAYD_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn relayd");
    // `ip netns exec` execs relayd, so the child's pid is relayd's.
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|l| !l.starts_with("relayd: xdp"))
            .count()
    });
    let started = Instant::now();
    while !lines.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "relayd did not report its XDP attachment within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    lines.join().unwrap();
    assert!(has_xdp(&bed.relay, &bed.relay_if), "relayd attached XDP");

    let health = bed.relay.run(|| http_get("127.0.0.1:18740", "/v1/health"));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"boot_id\""), "{health}");
    assert!(health.contains(&bed.relay_if), "{health}");
    let metrics = bed.relay.run(|| http_get("127.0.0.1:18740", "/metrics"));
    assert!(
        metrics.contains("relayd_xdp_packets_total{outcome=\"pass_no_flow\"}"),
        "{metrics}"
    );

    // SAFETY: kill with a valid pid of our own child and a valid signal number.
    assert_eq!(
        unsafe { libc::kill(pid.try_into().unwrap(), libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "relayd did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "relayd exit {status}: {stderr}");
    assert!(stderr.contains("XDP program detached"), "{stderr}");
    assert!(!has_xdp(&bed.relay, &bed.relay_if), "relayd detached XDP");
}

/// relayd refuses an unknown interface with a one-line error naming it, and exits non-zero.
#[test]
fn relayd_names_an_unknown_interface_and_exits_non_zero() {
    if !require_root("relayd_names_an_unknown_interface_and_exits_non_zero") {
        return;
    }
    let relay = Netns::create("relay");
    let out = relay
        .command(workspace_bin("relayd").to_str().unwrap())
        .args(["--xdp-interface", "nosuch0", "--http-listen", "127.0.0.1:0"])
        .env("RELAYD_TOKEN", TOKEN)
        .output()
        .expect("spawn relayd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("relayd: no network interface named \"nosuch0\""),
        "{stderr}"
    );
}

/// Minimal HTTP/1.1 GET over a plain TCP stream (inside the caller's namespace).
fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect relayd");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: relayd\r\nAuthorization: Bearer {TOKEN}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}

#[test]
fn generic_mode_is_available_where_native_is_not() {
    if !require_root("generic_mode_is_available_where_native_is_not") {
        return;
    }
    // A namespace's loopback has no native XDP: native attach fails with a hint, generic works.
    let relay = Netns::create("relay");
    relay.run(|| {
        let mut xdp = RelayXdp::load().expect("load");
        let err = xdp
            .attach("lo", AttachMode::Native)
            .expect_err("loopback has no native XDP");
        assert!(
            err.to_string().contains("generic mode works everywhere"),
            "{err}"
        );
        xdp.attach("lo", AttachMode::Generic)
            .expect("generic attach to lo");
        let out = Command::new("ip")
            .args(["-d", "link", "show", "dev", "lo"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("prog/xdp"));
        xdp.detach_all().expect("detach");
    });
}
