//! The XDP program's plain-forward action, run with `BPF_PROG_TEST_RUN` inside a network
//! namespace the test creates (so `bpf_fib_lookup` sees its routes and static neighbours):
//! expected action, expected output frame (MACs, addresses, ports, both checksums recomputed
//! from scratch and compared), exactly one expected counter; and every case the program leaves
//! to the stack passes the frame unmodified.
//!
//! Namespace layout (no traffic leaves it; addresses from the benchmarking ranges
//! `198.18.0.0/15` and `2001:2::/48`, RFC 2544 and RFC 5180):
//!
//! ```text
//!   fa 198.18.0.1/24 2001:2:0:a::1/64 (02:00:00:00:00:0a)
//!   fb 198.18.1.1/24 2001:2:0:b::1/64 (02:00:00:00:00:0b)
//!   neighbours: 198.18.0.2, 2001:2:0:a::2 -> 02:00:00:00:00:02 (fa)
//!               198.18.1.2, 2001:2:0:b::2 -> 02:00:00:00:01:02 (fb)
//! ```
//!
//! Crypto flows (`ToWorker`) get the same checks; without an AF_XDP socket on the receive
//! queue they are passed unmodified (the AF_XDP redirect itself is exercised end to end by
//! `xdp_transcrypts_through_af_xdp_workers`).

use relay_common::{Counter, FlowAction, FlowEntry, FlowKey};
use relay_userspace::xdp::{RelayXdp, XdpAction};
use tests::{
    netns::{unique_tag, Netns},
    require_root,
};

const FA_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const FB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0b];
const PEER_A_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x02];
const PEER_B_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0x02];

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap()
}

/// An Ethernet/IPv4/UDP frame with correct checksums (UDP checksum 0 when `no_udp_checksum`).
fn frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    payload: &[u8],
    no_udp_checksum: bool,
) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).unwrap();
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    ip.extend_from_slice(&src.0);
    ip.extend_from_slice(&dst.0);
    let ip_check = checksum(&ip);
    ip[10..12].copy_from_slice(&ip_check.to_be_bytes());
    let mut udp = Vec::new();
    udp.extend_from_slice(&src.1.to_be_bytes());
    udp.extend_from_slice(&dst.1.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    if !no_udp_checksum {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.0);
        pseudo.extend_from_slice(&dst.0);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        pseudo.extend_from_slice(&udp);
        let c = match checksum(&pseudo) {
            0 => 0xffff,
            c => c,
        };
        udp[6..8].copy_from_slice(&c.to_be_bytes());
    }
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

/// An Ethernet/IPv6/UDP frame with a correct UDP checksum.
fn frame6(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).unwrap();
    let mut udp = Vec::new();
    udp.extend_from_slice(&src.1.to_be_bytes());
    udp.extend_from_slice(&dst.1.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.0);
    pseudo.extend_from_slice(&dst.0);
    pseudo.extend_from_slice(&u32::from(udp_len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    pseudo.extend_from_slice(&udp);
    let c = match checksum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    // Version 6, traffic class 0, flow label 0x12345; payload length; next header UDP; hops.
    f.extend_from_slice(&[0x60, 0x01, 0x23, 0x45]);
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&udp);
    f
}

fn v6(last: u16, subnet: u16) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0..2].copy_from_slice(&0x2001u16.to_be_bytes());
    a[2..4].copy_from_slice(&2u16.to_be_bytes());
    a[6..8].copy_from_slice(&subnet.to_be_bytes());
    a[14..16].copy_from_slice(&last.to_be_bytes());
    a
}

struct Bed {
    ns: Netns,
    fa: u32,
    fb: u32,
}

fn bed() -> Bed {
    let ns = Netns::create("fwd");
    let tag = unique_tag();
    let (a, b) = (format!("fa{tag}"), format!("fb{tag}"));
    // Both ends of one veth pair live in this namespace: two interfaces, two subnets.
    ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
    ns.ip(&["link", "set", &a, "address", "02:00:00:00:00:0a"]);
    ns.ip(&["link", "set", &b, "address", "02:00:00:00:00:0b"]);
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", &a]);
    ns.ip(&["addr", "add", "198.18.1.1/24", "dev", &b]);
    ns.ip(&["-6", "addr", "add", "2001:2:0:a::1/64", "dev", &a, "nodad"]);
    ns.ip(&["-6", "addr", "add", "2001:2:0:b::1/64", "dev", &b, "nodad"]);
    ns.ip(&["link", "set", &a, "up"]);
    ns.ip(&["link", "set", &b, "up"]);
    for (addr, mac, dev) in [
        ("198.18.0.2", "02:00:00:00:00:02", &a),
        ("198.18.0.3", "02:00:00:00:00:03", &a),
        ("198.18.1.2", "02:00:00:00:01:02", &b),
        ("2001:2:0:a::2", "02:00:00:00:00:02", &a),
        ("2001:2:0:b::2", "02:00:00:00:01:02", &b),
    ] {
        ns.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }
    let (fa, fb) = ns.run(|| {
        // bpf_fib_lookup answers forwarding lookups only with forwarding enabled (/proc/sys/net
        // is this thread's namespace's).
        std::fs::write("/proc/sys/net/ipv4/conf/all/forwarding", "1")
            .expect("enable forwarding in the namespace");
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
            .expect("enable IPv6 forwarding in the namespace");
        let index = |name: &str| {
            let c = std::ffi::CString::new(name).unwrap();
            // SAFETY: a valid NUL-terminated name.
            unsafe { libc::if_nametoindex(c.as_ptr()) }
        };
        (index(&a), index(&b))
    });
    assert!(fa > 0 && fb > 0);
    Bed { ns, fa, fb }
}

const RELAY_A: [u8; 4] = [198, 18, 0, 1];
const RELAY_B: [u8; 4] = [198, 18, 1, 1];
const PEER_A: [u8; 4] = [198, 18, 0, 2];
const PEER_B: [u8; 4] = [198, 18, 1, 2];

fn entry(peer: Option<([u8; 4], u16)>, strict: bool, out_dst: ([u8; 4], u16)) -> FlowEntry {
    FlowEntry::forward_plain(
        7,
        peer.map(|(ip, port)| (ip, port).into()),
        strict,
        (RELAY_B, 30_002).into(),
        out_dst.into(),
    )
}

/// Runs one frame and checks the action, the single counter that moved, and the output.
fn expect(
    xdp: &RelayXdp,
    ingress: u32,
    input: &[u8],
    action: XdpAction,
    counter: Counter,
    output: &[u8],
) {
    let before = xdp.counters().unwrap();
    let outcome = xdp.test_run_on(input, ingress).expect("BPF_PROG_TEST_RUN");
    let delta = xdp.counters().unwrap().since(&before);
    assert_eq!(
        outcome.action,
        Some(action),
        "{counter:?}: moved {:?}",
        delta.iter().filter(|(_, v)| *v != 0).collect::<Vec<_>>()
    );
    assert_eq!(delta.get(counter), 1, "counter {counter:?}: {delta:?}");
    assert_eq!(delta.total(), 1);
    assert_eq!(outcome.frame_out, output, "{counter:?}: output frame");
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario per action, in one namespace"
)]
fn plain_flows_are_rewritten_and_forwarded_in_xdp() {
    if !require_root("plain_flows_are_rewritten_and_forwarded_in_xdp") {
        return;
    }
    let bed = bed();
    bed.ns.run(|| {
        let mut xdp = RelayXdp::load().expect("load");
        xdp.add_egress(bed.fb).unwrap();
        xdp.add_egress(bed.fa).unwrap();
        let key = FlowKey::v4(RELAY_A, 30_000);
        let payload = [0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0xaa, 0xbb, 0xcc];
        let input = frame(
            FA_MAC,
            PEER_A_MAC,
            (PEER_A, 40_000),
            (RELAY_A, 30_000),
            &payload,
            false,
        );

        // To the other interface: redirect, rewritten, checksums still right.
        xdp.insert_flow(key, entry(Some((PEER_A, 40_000)), true, (PEER_B, 50_000)))
            .unwrap();
        let expected = frame(
            PEER_B_MAC,
            FB_MAC,
            (RELAY_B, 30_002),
            (PEER_B, 50_000),
            &payload,
            false,
        );
        expect(
            &xdp,
            bed.fa,
            &input,
            XdpAction::Redirect,
            Counter::FlowForwardRedirect,
            &expected,
        );

        // A zero UDP checksum (allowed on IPv4) stays zero.
        let input0 = frame(
            FA_MAC,
            PEER_A_MAC,
            (PEER_A, 40_000),
            (RELAY_A, 30_000),
            &payload,
            true,
        );
        let expected0 = frame(
            PEER_B_MAC,
            FB_MAC,
            (RELAY_B, 30_002),
            (PEER_B, 50_000),
            &payload,
            true,
        );
        expect(
            &xdp,
            bed.fa,
            &input0,
            XdpAction::Redirect,
            Counter::FlowForwardRedirect,
            &expected0,
        );

        // Back out of the receiving interface: XDP_TX (source fixed up to fa's subnet peer).
        let mut back = entry(Some((PEER_A, 40_000)), true, ([198, 18, 0, 3], 50_000));
        let src = FlowKey::v4(RELAY_A, 30_004);
        back.out_src_addr = src.addr;
        back.out_src_port_be = src.port_be;
        xdp.insert_flow(key, back).unwrap();
        let expected_tx = frame(
            [2, 0, 0, 0, 0, 3],
            FA_MAC,
            (RELAY_A, 30_004),
            ([198, 18, 0, 3], 50_000),
            &payload,
            false,
        );
        expect(
            &xdp,
            bed.fa,
            &input,
            XdpAction::Tx,
            Counter::FlowForwardTx,
            &expected_tx,
        );

        // Strict flow, wrong source port: dropped, untouched.
        xdp.insert_flow(key, entry(Some((PEER_A, 40_000)), true, (PEER_B, 50_000)))
            .unwrap();
        let stranger = frame(
            FA_MAC,
            PEER_A_MAC,
            (PEER_A, 40_001),
            (RELAY_A, 30_000),
            &payload,
            false,
        );
        expect(
            &xdp,
            bed.fa,
            &stranger,
            XdpAction::Drop,
            Counter::FlowDropWrongSource,
            &stranger,
        );

        // Not strict: the stranger goes to the stack (userspace decides), untouched.
        xdp.insert_flow(key, entry(Some((PEER_A, 40_000)), false, (PEER_B, 50_000)))
            .unwrap();
        expect(
            &xdp,
            bed.fa,
            &stranger,
            XdpAction::Pass,
            Counter::FlowPassOtherSource,
            &stranger,
        );

        // Not latched yet: to the stack, so userspace can latch.
        xdp.insert_flow(key, entry(None, true, (PEER_B, 50_000)))
            .unwrap();
        expect(
            &xdp,
            bed.fa,
            &input,
            XdpAction::Pass,
            Counter::FlowPassUnlatched,
            &input,
        );

        // No route to the egress destination: to the stack, untouched.
        xdp.insert_flow(
            key,
            entry(Some((PEER_A, 40_000)), true, ([198, 19, 9, 9], 50_000)),
        )
        .unwrap();
        expect(
            &xdp,
            bed.fa,
            &input,
            XdpAction::Pass,
            Counter::FlowPassNoRoute,
            &input,
        );

        // VLAN-tagged frames are left to the stack for now.
        xdp.insert_flow(key, entry(Some((PEER_A, 40_000)), true, (PEER_B, 50_000)))
            .unwrap();
        let mut tagged = input[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        tagged.extend_from_slice(&input[12..]);
        expect(
            &xdp,
            bed.fa,
            &tagged,
            XdpAction::Pass,
            Counter::FlowPassUnsupported,
            &tagged,
        );
    });
}

#[test]
fn an_egress_interface_outside_the_devmap_is_not_redirected() {
    if !require_root("an_egress_interface_outside_the_devmap_is_not_redirected") {
        return;
    }
    let bed = bed();
    bed.ns.run(|| {
        let mut xdp = RelayXdp::load().expect("load");
        // fb is not an egress: relayd did not put it in the devmap.
        xdp.add_egress(bed.fa).unwrap();
        let key = FlowKey::v4(RELAY_A, 30_000);
        xdp.insert_flow(key, entry(Some((PEER_A, 40_000)), true, (PEER_B, 50_000)))
            .unwrap();
        let input = frame(
            FA_MAC,
            PEER_A_MAC,
            (PEER_A, 40_000),
            (RELAY_A, 30_000),
            b"rtp",
            false,
        );
        expect(
            &xdp,
            bed.fa,
            &input,
            XdpAction::Pass,
            Counter::FlowPassNoRoute,
            &input,
        );
        assert_eq!(FlowAction::from_u32(2), Some(FlowAction::ForwardPlain));
    });
}

#[test]
fn ipv6_plain_flows_are_rewritten_and_forwarded_in_xdp() {
    if !require_root("ipv6_plain_flows_are_rewritten_and_forwarded_in_xdp") {
        return;
    }
    let bed = bed();
    bed.ns.run(|| {
        let mut xdp = RelayXdp::load().expect("load");
        xdp.add_egress(bed.fb).unwrap();
        xdp.add_egress(bed.fa).unwrap();
        let (relay_a, relay_b, peer_a, peer_b) = (v6(1, 0xa), v6(1, 0xb), v6(2, 0xa), v6(2, 0xb));
        let key = FlowKey::v6(relay_a, 30_000);
        let payload = [0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0xaa, 0xbb, 0xcc];
        let input = frame6(
            FA_MAC,
            PEER_A_MAC,
            (peer_a, 40_000),
            (relay_a, 30_000),
            &payload,
        );
        let flow = |peer: Option<([u8; 16], u16)>, strict: bool, out_dst: ([u8; 16], u16)| {
            FlowEntry::forward_plain(
                9,
                peer.map(|(ip, port)| (ip, port).into()),
                strict,
                (relay_b, 30_002).into(),
                out_dst.into(),
            )
        };
        xdp.insert_flow(key, flow(Some((peer_a, 40_000)), true, (peer_b, 50_000)))
            .unwrap();
        let expected = frame6(
            PEER_B_MAC,
            FB_MAC,
            (relay_b, 30_002),
            (peer_b, 50_000),
            &payload,
        );
        expect(
            &xdp,
            bed.fa,
            &input,
            XdpAction::Redirect,
            Counter::FlowForwardRedirect,
            &expected,
        );

        // Strict, wrong source address (same port): dropped.
        let stranger = frame6(
            FA_MAC,
            PEER_A_MAC,
            (v6(3, 0xa), 40_000),
            (relay_a, 30_000),
            &payload,
        );
        expect(
            &xdp,
            bed.fa,
            &stranger,
            XdpAction::Drop,
            Counter::FlowDropWrongSource,
            &stranger,
        );

        // An IPv4 egress for an IPv6 packet is not translated here: to the stack.
        xdp.insert_flow(
            key,
            FlowEntry::forward_plain(
                9,
                Some((peer_a, 40_000).into()),
                true,
                (RELAY_B, 30_002).into(),
                (PEER_B, 50_000).into(),
            ),
        )
        .unwrap();
        expect(
            &xdp,
            bed.fa,
            &input,
            XdpAction::Pass,
            Counter::FlowPassUnsupported,
            &input,
        );

        // No route for the egress: to the stack, untouched.
        xdp.insert_flow(
            key,
            flow(Some((peer_a, 40_000)), true, (v6(2, 0xc), 50_000)),
        )
        .unwrap();
        expect(
            &xdp,
            bed.fa,
            &input,
            XdpAction::Pass,
            Counter::FlowPassNoRoute,
            &input,
        );
    });
}

#[test]
fn crypto_flows_without_an_af_xdp_socket_go_to_the_stack_untouched() {
    if !require_root("crypto_flows_without_an_af_xdp_socket_go_to_the_stack_untouched") {
        return;
    }
    let bed = bed();
    bed.ns.run(|| {
        let mut xdp = RelayXdp::load().expect("load");
        xdp.add_egress(bed.fb).unwrap();
        xdp.add_egress(bed.fa).unwrap();
        let key = FlowKey::v4(RELAY_A, 30_000);
        let input = frame(
            FA_MAC,
            PEER_A_MAC,
            (PEER_A, 40_000),
            (RELAY_A, 30_000),
            b"srtp-ish",
            false,
        );
        let worker = |peer: Option<([u8; 4], u16)>| {
            FlowEntry::to_worker(
                11,
                peer.map(|(ip, port)| (ip, port).into()),
                true,
                (RELAY_B, 30_002).into(),
                (PEER_B, 50_000).into(),
            )
        };
        xdp.insert_flow(key, worker(Some((PEER_A, 40_000))))
            .unwrap();
        // The interface has no XSKMAP slots at all.
        expect(
            &xdp,
            bed.fa,
            &input,
            XdpAction::Pass,
            Counter::FlowPassNoWorker,
            &input,
        );
        // Slots, but no socket in the receive queue's slot.
        xdp.set_xsk_base(bed.fa, 0).unwrap();
        expect(
            &xdp,
            bed.fa,
            &input,
            XdpAction::Pass,
            Counter::FlowPassNoWorker,
            &input,
        );
        // The source checks come first, as for plain flows.
        let stranger = frame(
            FA_MAC,
            PEER_A_MAC,
            (PEER_A, 40_001),
            (RELAY_A, 30_000),
            b"srtp-ish",
            false,
        );
        expect(
            &xdp,
            bed.fa,
            &stranger,
            XdpAction::Drop,
            Counter::FlowDropWrongSource,
            &stranger,
        );
        xdp.insert_flow(key, worker(None)).unwrap();
        expect(
            &xdp,
            bed.fa,
            &input,
            XdpAction::Pass,
            Counter::FlowPassUnlatched,
            &input,
        );
    });
}

/// The benchmark's in-kernel generator (`BPF_PROG_RUN` live frames of the bounce program) sends
/// what its template says: live frames are recycled without being re-initialised, so the
/// program writes the template's headers into every frame before it leaves.
#[test]
fn the_live_frames_generator_sends_its_template() {
    if !require_root("the_live_frames_generator_sends_its_template") {
        return;
    }
    let bed = bed();
    bed.ns.run(|| {
        // The receiving end drops what it gets on port 30000 and counts it.
        let mut receiver = RelayXdp::load().expect("load");
        receiver
            .attach(
                &bed_name(&bed, bed.fb),
                relay_userspace::xdp::AttachMode::Native,
            )
            .unwrap();
        let key = FlowKey::v4(RELAY_B, 30_000);
        receiver
            .insert_flow(key, FlowEntry::new(FlowAction::Drop, 1))
            .unwrap();
        let mut generator =
            RelayXdp::load_bench(relay_common::BENCH_TX_PROGRAM_NAME).expect("verifier");
        let to = |port: u16| {
            frame(
                FB_MAC,
                FA_MAC,
                (RELAY_A, 40_000),
                (RELAY_B, port),
                &[0x80; 172],
                false,
            )
        };
        // The frame handed to the kernel goes to port 39999; the template says 30000.
        generator.set_bench_template(&to(30_000)).unwrap();
        let before = receiver.counters().unwrap();
        generator
            .run_live_frames(&to(39_999), bed.fa, 10_000, 64)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let delta = receiver.counters().unwrap().since(&before);
        assert_eq!(generator.bench_count().unwrap(), 10_000);
        assert!(
            delta.get(Counter::FlowDrop) > 0 && delta.get(Counter::PassNoFlow) == 0,
            "every frame carries the template's port: {delta:?}"
        );
    });
}

fn bed_name(bed: &Bed, index: u32) -> String {
    bed.ns.run(|| {
        let mut name = [0u8; 16];
        // SAFETY: a 16-byte buffer (IFNAMSIZ) for a valid index.
        let p = unsafe { libc::if_indextoname(index, name.as_mut_ptr().cast()) };
        assert!(!p.is_null(), "no interface {index}");
        let end = name.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&name[..end]).into_owned()
    })
}
