//! The XDP program run on crafted frames with `BPF_PROG_TEST_RUN`: every frame gets the
//! expected action, bumps exactly the expected counter, and passed frames come out unchanged.
//!
//! Frames are hex literals laid out header by header. IP and UDP checksums are zero: the
//! program does not check them (the kernel stack does, after `XDP_PASS`).
//! Each test loads its own instance of the program, so its maps and counters are private.

use relay_common::{Counter, FlowAction, FlowEntry, FlowKey};
use relay_userspace::xdp::{RelayXdp, XdpAction};
use tests::{hex, require_root};

/// Ethernet header: dst 02:00:00:00:00:02, src 02:00:00:00:00:01, then the EtherType.
const ETH: &str = "020000000002 020000000001";
/// IPv4 198.18.0.1 -> 198.18.0.2, UDP, 32 bytes total, DF.
const IPV4_UDP: &str = "4500 0020 0001 4000 4011 0000 c6120001 c6120002";
/// UDP 40000 -> <port>, 12 bytes; the port is appended by [`udp`].
fn udp(dport: u16) -> String {
    format!("9c40 {dport:04x} 000c 0000 deadbeef")
}
/// IPv6 `2001:2::1` -> `2001:2::2` (RFC 5180 benchmarking range), hop limit 64, next header given.
fn ipv6(next_header: u8, payload_len: u16) -> String {
    format!(
        "6000 0000 {payload_len:04x} {next_header:02x} 40
         2001 0002 0000 0000 0000 0000 0000 0001
         2001 0002 0000 0000 0000 0000 0000 0002"
    )
}

const FLOW_PASS_PORT: u16 = 30_000;
const NO_FLOW_PORT: u16 = 30_001;
const FLOW_DROP_PORT: u16 = 30_002;
const FLOW_UNKNOWN_ACTION_PORT: u16 = 30_009;

struct Fixture {
    name: &'static str,
    frame: Vec<u8>,
    action: XdpAction,
    counter: Counter,
}

fn fixture(name: &'static str, frame: &str, action: XdpAction, counter: Counter) -> Fixture {
    Fixture {
        name,
        frame: hex(frame),
        action,
        counter,
    }
}

#[allow(clippy::too_many_lines, reason = "one row per fixture")]
fn fixtures() -> Vec<Fixture> {
    use XdpAction::{Drop, Pass};
    let v4 = |port: u16| format!("{ETH} 0800 {IPV4_UDP} {}", udp(port));
    vec![
        fixture(
            "ipv4 udp, no flow",
            &v4(NO_FLOW_PORT),
            Pass,
            Counter::PassNoFlow,
        ),
        fixture(
            "ipv4 udp, pass flow",
            &v4(FLOW_PASS_PORT),
            Pass,
            Counter::FlowPass,
        ),
        fixture(
            "ipv4 udp, drop flow",
            &v4(FLOW_DROP_PORT),
            Drop,
            Counter::FlowDrop,
        ),
        fixture(
            "ipv4 udp, flow with an action this program does not know",
            &v4(FLOW_UNKNOWN_ACTION_PORT),
            Pass,
            Counter::FlowUnknownAction,
        ),
        fixture(
            "802.1Q vlan 100, ipv4 udp, drop flow",
            &format!("{ETH} 8100 0064 0800 {IPV4_UDP} {}", udp(FLOW_DROP_PORT)),
            Drop,
            Counter::FlowDrop,
        ),
        fixture(
            "802.1ad vlan 100, ipv4 udp, no flow",
            &format!("{ETH} 88a8 0064 0800 {IPV4_UDP} {}", udp(NO_FLOW_PORT)),
            Pass,
            Counter::PassNoFlow,
        ),
        fixture(
            "stacked vlan tags (QinQ)",
            &format!(
                "{ETH} 88a8 0064 8100 00c8 0800 {IPV4_UDP} {}",
                udp(FLOW_DROP_PORT)
            ),
            Pass,
            Counter::PassStackedVlan,
        ),
        fixture(
            "ipv4 with options (IHL 6), drop flow",
            &format!(
                "{ETH} 0800 4600 0024 0001 4000 4011 0000 c6120001 c6120002 01010100 {}",
                udp(FLOW_DROP_PORT)
            ),
            Drop,
            Counter::FlowDrop,
        ),
        fixture(
            "ipv6 udp, drop flow",
            &format!("{ETH} 86dd {} {}", ipv6(17, 12), udp(FLOW_DROP_PORT)),
            Drop,
            Counter::FlowDrop,
        ),
        fixture(
            "ipv6 udp, pass flow",
            &format!("{ETH} 86dd {} {}", ipv6(17, 12), udp(FLOW_PASS_PORT)),
            Pass,
            Counter::FlowPass,
        ),
        fixture(
            "ipv6 udp, no flow",
            &format!("{ETH} 86dd {} {}", ipv6(17, 12), udp(NO_FLOW_PORT)),
            Pass,
            Counter::PassNoFlow,
        ),
        fixture(
            "ipv6 hop-by-hop header before udp",
            &format!(
                "{ETH} 86dd {} 1100 0104 00000000 {}",
                ipv6(0, 20),
                udp(FLOW_DROP_PORT)
            ),
            Pass,
            Counter::PassIpv6ExtensionHeader,
        ),
        fixture(
            "ipv4 tcp to a flow's port",
            &format!(
                "{ETH} 0800 4500 0028 0001 4000 4006 0000 c6120001 c6120002
                 9c40 7532 00000001 00000000 5002 ffff 0000 0000"
            ),
            Pass,
            Counter::PassNotUdp,
        ),
        fixture(
            "ipv4 icmp echo request",
            &format!(
                "{ETH} 0800 4500 0020 0001 4000 4001 0000 c6120001 c6120002
                 0800 0000 0001 0001 deadbeef"
            ),
            Pass,
            Counter::PassNotUdp,
        ),
        fixture(
            "ipv6 icmpv6 echo request",
            &format!("{ETH} 86dd {} 8000 0000 0001 0001", ipv6(58, 8)),
            Pass,
            Counter::PassNotUdp,
        ),
        fixture(
            "arp request",
            &format!("{ETH} 0806 0001 0800 06 04 0001 020000000001 c6120001 000000000000 c6120002"),
            Pass,
            Counter::PassNotIp,
        ),
        fixture(
            "ipv4 first fragment (MF) to a drop flow",
            &format!(
                "{ETH} 0800 4500 0020 0001 2000 4011 0000 c6120001 c6120002 {}",
                udp(FLOW_DROP_PORT)
            ),
            Pass,
            Counter::PassIpFragment,
        ),
        fixture(
            "ipv4 later fragment (offset 185)",
            &format!("{ETH} 0800 4500 0020 0001 00b9 4011 0000 c6120001 c6120002 deadbeef"),
            Pass,
            Counter::PassIpFragment,
        ),
        // A frame shorter than 14 bytes cannot be fed: BPF_PROG_TEST_RUN refuses it (EINVAL), as
        // no driver delivers one. A truncated VLAN tag exercises the same counter.
        fixture(
            "truncated vlan tag",
            &format!("{ETH} 8100 00"),
            Pass,
            Counter::PassTruncatedEthernet,
        ),
        fixture(
            "truncated ipv4 header",
            &format!("{ETH} 0800 4500 0020 0001"),
            Pass,
            Counter::PassBadIpHeader,
        ),
        fixture(
            "truncated ipv6 header",
            &format!("{ETH} 86dd 6000 0000 000c 1140 2001 0002"),
            Pass,
            Counter::PassBadIpHeader,
        ),
        fixture(
            "ipv4 ethertype carrying an ipv6 header",
            &format!("{ETH} 0800 {} {}", ipv6(17, 12), udp(FLOW_DROP_PORT)),
            Pass,
            Counter::PassBadIpHeader,
        ),
        fixture(
            "ipv4 with IHL 4",
            &format!(
                "{ETH} 0800 4400 0020 0001 4000 4011 0000 c6120001 c6120002 {}",
                udp(30_002)
            ),
            Pass,
            Counter::PassBadIpHeader,
        ),
        fixture(
            "truncated udp header",
            &format!("{ETH} 0800 {IPV4_UDP} 9c40 75"),
            Pass,
            Counter::PassTruncatedUdp,
        ),
        fixture(
            "ipv4 options run past the frame",
            &format!(
                "{ETH} 0800 4f00 0020 0001 4000 4011 0000 c6120001 c6120002 {}",
                udp(30_002)
            ),
            Pass,
            Counter::PassTruncatedUdp,
        ),
    ]
}

/// Loads a private instance of the program (its own maps) with the fixture flows programmed.
fn loaded_program() -> RelayXdp {
    let mut xdp = RelayXdp::load().expect("load the XDP program");
    let v4 = [198, 18, 0, 2];
    let v6 = [0x20, 0x01, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02];
    let flows = [
        (
            FlowKey::v4(v4, FLOW_PASS_PORT),
            FlowEntry::new(FlowAction::Pass, 1),
        ),
        (
            FlowKey::v4(v4, FLOW_DROP_PORT),
            FlowEntry::new(FlowAction::Drop, 2),
        ),
        (
            FlowKey::v4(v4, FLOW_UNKNOWN_ACTION_PORT),
            FlowEntry {
                action: 9,
                ..FlowEntry::new(FlowAction::Pass, 3)
            },
        ),
        (
            FlowKey::v6(v6, FLOW_PASS_PORT),
            FlowEntry::new(FlowAction::Pass, 4),
        ),
        (
            FlowKey::v6(v6, FLOW_DROP_PORT),
            FlowEntry::new(FlowAction::Drop, 5),
        ),
    ];
    for (key, entry) in flows {
        xdp.insert_flow(key, entry).expect("insert flow");
    }
    xdp
}

#[test]
fn every_fixture_gets_its_action_and_exactly_one_counter() {
    if !require_root("every_fixture_gets_its_action_and_exactly_one_counter") {
        return;
    }
    let xdp = loaded_program();
    for fixture in fixtures() {
        let before = xdp.counters().expect("read counters");
        let outcome = xdp.test_run(&fixture.frame).expect("BPF_PROG_TEST_RUN");
        let delta = xdp.counters().expect("read counters").since(&before);
        assert_eq!(
            outcome.action,
            Some(fixture.action),
            "{}: action (raw {})",
            fixture.name,
            outcome.return_value
        );
        assert_eq!(
            delta.get(fixture.counter),
            1,
            "{}: expected counter {} to move, deltas: {:?}",
            fixture.name,
            fixture.counter.name(),
            delta.iter().filter(|(_, v)| *v != 0).collect::<Vec<_>>()
        );
        assert_eq!(
            delta.total(),
            1,
            "{}: exactly one counter moves",
            fixture.name
        );
        if fixture.action == XdpAction::Pass {
            assert_eq!(
                outcome.frame_out, fixture.frame,
                "{}: a passed frame is not modified",
                fixture.name
            );
        }
    }
}

#[test]
fn counters_add_up_to_the_frames_seen_over_many_runs() {
    if !require_root("counters_add_up_to_the_frames_seen_over_many_runs") {
        return;
    }
    let xdp = loaded_program();
    let all = fixtures();
    let rounds = 50;
    for _ in 0..rounds {
        for fixture in &all {
            xdp.test_run(&fixture.frame).expect("BPF_PROG_TEST_RUN");
        }
    }
    let counters = xdp.counters().expect("read counters");
    assert_eq!(counters.total(), (rounds * all.len()) as u64);
    let expected_drops = all
        .iter()
        .filter(|f| f.counter == Counter::FlowDrop)
        .count();
    assert_eq!(
        counters.get(Counter::FlowDrop),
        (rounds * expected_drops) as u64
    );
}

#[test]
fn removing_a_flow_returns_its_traffic_to_the_kernel() {
    if !require_root("removing_a_flow_returns_its_traffic_to_the_kernel") {
        return;
    }
    let mut xdp = loaded_program();
    let frame = hex(&format!("{ETH} 0800 {IPV4_UDP} {}", udp(FLOW_DROP_PORT)));
    let key = FlowKey::v4([198, 18, 0, 2], FLOW_DROP_PORT);
    assert_eq!(xdp.test_run(&frame).unwrap().action, Some(XdpAction::Drop));
    assert_eq!(
        xdp.flow(&key).unwrap(),
        Some(FlowEntry::new(FlowAction::Drop, 2))
    );
    xdp.remove_flow(&key).expect("remove flow");
    assert_eq!(xdp.flow(&key).unwrap(), None);
    assert_eq!(xdp.test_run(&frame).unwrap().action, Some(XdpAction::Pass));
    // Removing again is not an error.
    xdp.remove_flow(&key).expect("remove a missing flow");
    let counters = xdp.counters().unwrap();
    assert_eq!(counters.get(Counter::FlowDrop), 1);
    assert_eq!(counters.get(Counter::PassNoFlow), 1);
}

/// The benchmark helper programs of the same object pass the verifier and do what
/// `cargo xtask bench xdp` relies on: drop and count, bounce and count, and hand only IPv4/UDP
/// to an AF_XDP socket (ARP and the rest go to the stack; without a socket, UDP passes too).
#[test]
fn benchmark_programs_drop_bounce_and_pick_udp_for_af_xdp() {
    if !require_root("benchmark_programs_drop_bounce_and_pick_udp_for_af_xdp") {
        return;
    }
    let udp_frame = hex(&format!("{ETH} 0800 {IPV4_UDP} {}", udp(NO_FLOW_PORT)));
    let arp = hex(&format!(
        "{ETH} 0806 0001 0800 0604 0001 020000000001 c6120001 000000000000 c6120002"
    ));
    let drop = RelayXdp::load_bench(relay_common::BENCH_DROP_PROGRAM_NAME).expect("verifier");
    for _ in 0..3 {
        assert_eq!(
            drop.test_run(&udp_frame).unwrap().action,
            Some(XdpAction::Drop)
        );
    }
    assert_eq!(drop.bench_count().unwrap(), 3);
    let bounce = RelayXdp::load_bench(relay_common::BENCH_TX_PROGRAM_NAME).expect("verifier");
    assert_eq!(bounce.test_run(&arp).unwrap().action, Some(XdpAction::Tx));
    assert_eq!(bounce.bench_count().unwrap(), 1);
    let to_xsk = RelayXdp::load_bench(relay_common::BENCH_TO_XSK_PROGRAM_NAME).expect("verifier");
    for frame in [&arp, &udp_frame] {
        let outcome = to_xsk.test_run(frame).unwrap();
        assert_eq!(outcome.action, Some(XdpAction::Pass));
        assert_eq!(&outcome.frame_out, frame);
    }
    assert_eq!(
        to_xsk.bench_count().unwrap(),
        0,
        "no socket: nothing redirected"
    );
}
