//! Types shared by the XDP program (relay-ebpf, `bpfel-unknown-none`) and relayd.
//!
//! Everything here is `#![no_std]`, `#[repr(C)]` and free of implicit padding, because the same
//! bytes are read by the kernel-side program and by userspace through BPF maps. Byte order is
//! stated on every field. With the `user` feature the types implement [`aya::Pod`] so relayd can
//! put them in maps. This crate does no IO and keeps no time.
#![no_std]

use core::net::{IpAddr, SocketAddr};

/// Name of the BPF hash map from [`FlowKey`] to [`FlowEntry`].
pub const FLOW_MAP_NAME: &str = "RELAY_FLOWS";
/// Name of the per-CPU array of `u64` outcome counters, indexed by [`Counter`].
pub const COUNTER_MAP_NAME: &str = "RELAY_COUNTERS";
/// Name of the device map (`BPF_MAP_TYPE_DEVMAP_HASH`, ifindex -> ifindex) that plain flows are
/// redirected through.
pub const DEVMAP_NAME: &str = "RELAY_DEVMAP";
/// Name of the per-CPU array of [`FlowStats`], indexed by [`FlowEntry::flow_id`].
pub const FLOW_STATS_MAP_NAME: &str = "RELAY_FLOW_STATS";
/// Name of the `BPF_MAP_TYPE_XSKMAP` that crypto flows are redirected through, indexed by
/// [`xsk_slot`].
pub const XSK_MAP_NAME: &str = "RELAY_XSKS";
/// Name of the hash map from ifindex to the interface's first slot in the XSKMAP.
pub const XSK_BASE_MAP_NAME: &str = "RELAY_XSK_BASE";
/// Version of the maps' layout (keys, values, capacities). relayd pins maps under a directory
/// named after it, so a relayd whose layout differs never adopts incompatible pinned maps.
/// Bump it whenever a pinned map's key, value or size changes.
pub const MAP_ABI_VERSION: u32 = 1;

/// Every map relayd pins, by name.
pub const PINNED_MAP_NAMES: [&str; 6] = [
    FLOW_MAP_NAME,
    COUNTER_MAP_NAME,
    DEVMAP_NAME,
    FLOW_STATS_MAP_NAME,
    XSK_MAP_NAME,
    XSK_BASE_MAP_NAME,
];

/// Name of the XDP program inside the object file.
pub const XDP_PROGRAM_NAME: &str = "relay_xdp";

/// Benchmark helper programs in the same object (`cargo xtask bench xdp`; never attached by
/// relayd). Each counts what it handles in slot 0 of [`BENCH_COUNTER_MAP_NAME`].
///
/// `XDP_DROP`s everything: the ceiling of an interface.
pub const BENCH_DROP_PROGRAM_NAME: &str = "relay_bench_drop";
/// Redirects IPv4/UDP to the AF_XDP socket of its receive queue (slot as for crypto flows),
/// passes the rest: a load generator's receiver.
pub const BENCH_TO_XSK_PROGRAM_NAME: &str = "relay_bench_to_xsk";
/// Redirects IPv4/UDP, untouched, to the interface in [`BENCH_EGRESS_MAP_NAME`] through the
/// devmap (as relayd's program forwards to another interface), passes the rest: the floor of
/// XDP forwarding on a device (no parsing, flow lookup, FIB lookup or rewrite).
pub const BENCH_REDIRECT_PROGRAM_NAME: &str = "relay_bench_redirect";
/// Array (one `u32` ifindex) the redirect benchmark program sends to.
pub const BENCH_EGRESS_MAP_NAME: &str = "RELAY_BENCH_EGRESS";
/// `XDP_TX`s everything: run with `BPF_PROG_RUN` live frames, an in-kernel packet generator.
pub const BENCH_TX_PROGRAM_NAME: &str = "relay_bench_tx";
/// Per-CPU `u64` array (one slot) the benchmark programs count in.
pub const BENCH_COUNTER_MAP_NAME: &str = "RELAY_BENCH_COUNTER";
/// Array (one [`BenchTemplate`]) the in-kernel generator restores frames from.
pub const BENCH_TEMPLATE_MAP_NAME: &str = "RELAY_BENCH_TEMPLATE";
/// Bytes of a frame [`BenchTemplate`] restores (Ethernet, IPv4 and UDP headers, and more).
pub const BENCH_TEMPLATE_LEN: usize = 64;

/// The first bytes of the in-kernel generator's frame, written back before every send.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchTemplate {
    /// Non-zero: restore.
    pub enabled: u32,
    /// The bytes.
    pub bytes: [u8; BENCH_TEMPLATE_LEN],
}

/// Receive queues per interface that can have an AF_XDP socket.
pub const XSK_QUEUES_PER_INTERFACE: u32 = 64;
/// Interfaces that can have AF_XDP sockets.
pub const XSK_INTERFACES: u32 = 16;
/// XSKMAP capacity: one slot per (interface, receive queue).
pub const XSK_MAP_CAPACITY: u32 = XSK_INTERFACES * XSK_QUEUES_PER_INTERFACE;

/// The XSKMAP slot of receive queue `queue` of the interface whose base (from
/// [`XSK_BASE_MAP_NAME`]) is `base`; `None` for queues beyond [`XSK_QUEUES_PER_INTERFACE`].
pub const fn xsk_slot(base: u32, queue: u32) -> Option<u32> {
    if queue < XSK_QUEUES_PER_INTERFACE {
        Some(base + queue)
    } else {
        None
    }
}

/// Flow map capacity: tens of thousands of calls, two legs each, RTP and RTCP ports per leg.
pub const FLOW_MAP_CAPACITY: u32 = 1 << 18;

/// Key of the flow map: a local (address, UDP port) owned by the relay.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                                                               |
/// +      addr: IPv6 address, or ::ffff:a.b.c.d for IPv4           +
/// |      (network byte order, 16 bytes)                           |
/// +                                                               +
/// |                                                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  port (__be16, UDP destination) |  pad (always zero)           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Local IP address, network byte order. IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so
    /// one map serves both families.
    pub addr: [u8; 16],
    /// Local UDP port, network byte order (`__be16`): the packet's destination port.
    pub port_be: u16,
    /// Explicit padding so the key has no uninitialised bytes; always zero.
    pub pad: u16,
}

impl FlowKey {
    /// Key for an IPv4 address (octets in network order) and a host-order port.
    pub const fn v4(octets: [u8; 4], port: u16) -> Self {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12] = octets[0];
        addr[13] = octets[1];
        addr[14] = octets[2];
        addr[15] = octets[3];
        Self {
            addr,
            port_be: port.to_be(),
            pad: 0,
        }
    }

    /// Key for an IPv6 address (octets in network order) and a host-order port.
    pub const fn v6(octets: [u8; 16], port: u16) -> Self {
        Self {
            addr: octets,
            port_be: port.to_be(),
            pad: 0,
        }
    }

    /// Key for a socket address. IPv4-mapped IPv6 addresses and plain IPv4 give the same key.
    pub fn from_socket_addr(sa: SocketAddr) -> Self {
        match sa.ip() {
            IpAddr::V4(ip) => Self::v4(ip.octets(), sa.port()),
            IpAddr::V6(ip) => Self::v6(ip.octets(), sa.port()),
        }
    }

    /// The socket address this key stands for (IPv4-mapped keys come back as IPv4).
    pub fn socket_addr(&self) -> SocketAddr {
        let v6 = core::net::Ipv6Addr::from(self.addr);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, u16::from_be(self.port_be))
    }
}

/// What the XDP program does with a packet that hits a programmed flow.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowAction {
    /// Hand the packet to the kernel stack, where relayd's socket datapath reads it. Counted as
    /// [`Counter::FlowPass`].
    Pass = 0,
    /// Drop in XDP (a torn-down or blocked flow). Counted as [`Counter::FlowDrop`].
    Drop = 1,
    /// Plain RTP forwarded entirely in XDP: source checked against the peer, addresses and
    /// ports rewritten to [`FlowEntry`]'s egress, checksums updated incrementally, next hop from
    /// `bpf_fib_lookup`, out by `XDP_TX` or a `DEVMAP` redirect. Anything the program cannot
    /// handle (unknown source, no route, a VLAN tag) is passed to the kernel stack, where the
    /// socket datapath applies the same rules.
    ForwardPlain = 2,
    /// A flow that needs SRTP (decrypt, encrypt or both): source checked as for
    /// [`FlowAction::ForwardPlain`], next hop from `bpf_fib_lookup`, then an [`XdpMeta`] is
    /// written in front of the frame and the frame is redirected to the AF_XDP socket of its
    /// receive queue, whose worker transforms it, rewrites the headers and transmits it on the
    /// egress interface. No socket on that queue (or no route): passed to the stack unmodified.
    ToWorker = 3,
}

impl FlowAction {
    /// Decodes the `action` field of a [`FlowEntry`]; `None` for values this build does not know.
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::Pass),
            1 => Some(Self::Drop),
            2 => Some(Self::ForwardPlain),
            3 => Some(Self::ToWorker),
            _ => None,
        }
    }
}

/// [`FlowEntry::flags`]: a packet must come from [`FlowEntry::peer_addr`]:[`FlowEntry::peer_port_be`].
pub const FLOW_STRICT_SOURCE: u32 = 1;
/// [`FlowEntry::flags`]: the peer fields hold the latched (or fixed) source.
pub const FLOW_PEER_KNOWN: u32 = 2;

/// Value of the flow map.
///
/// ```text
///  0: action (u32)          4: flow_id (u32)        8: flags (u32)      12: pad (u32)
/// 16: peer_addr (16, network order, IPv4-mapped)   32: peer_port_be    34: pad
/// 36: out_src_addr (16)    52: out_src_port_be      54: out_dst_addr (16) 70: out_dst_port_be
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    /// A [`FlowAction`] as `u32` (host byte order). Unknown values are passed and counted as
    /// [`Counter::FlowUnknownAction`], so an older program never harms a newer relayd's flows.
    pub action: u32,
    /// Relay-wide flow id (host byte order), chosen by relayd; identifies the flow in counters
    /// and, for AF_XDP flows, in XDP metadata.
    pub flow_id: u32,
    /// [`FLOW_STRICT_SOURCE`] | [`FLOW_PEER_KNOWN`] (host byte order).
    pub flags: u32,
    /// Explicit padding; zero.
    pub pad0: u32,
    /// The peer packets must come from (with [`FLOW_PEER_KNOWN`]); network order, IPv4-mapped.
    pub peer_addr: [u8; 16],
    /// The peer's UDP port, network order.
    pub peer_port_be: u16,
    /// Explicit padding; zero.
    pub pad1: u16,
    /// Egress source: the forwarding target leg's local address (network order, IPv4-mapped).
    pub out_src_addr: [u8; 16],
    /// Egress source port (the target leg's local port), network order.
    pub out_src_port_be: u16,
    /// Egress destination: the target leg's peer (network order, IPv4-mapped).
    pub out_dst_addr: [u8; 16],
    /// Egress destination port, network order.
    pub out_dst_port_be: u16,
}

impl FlowEntry {
    /// An entry with the given action and flow id, and no peer or egress.
    pub const fn new(action: FlowAction, flow_id: u32) -> Self {
        Self {
            action: action as u32,
            flow_id,
            flags: 0,
            pad0: 0,
            peer_addr: [0; 16],
            peer_port_be: 0,
            pad1: 0,
            out_src_addr: [0; 16],
            out_src_port_be: 0,
            out_dst_addr: [0; 16],
            out_dst_port_be: 0,
        }
    }

    /// A plain forward: from `peer` (strict or not; `None` while not latched yet), out as
    /// `out_src` -> `out_dst`.
    pub fn forward_plain(
        flow_id: u32,
        peer: Option<SocketAddr>,
        strict: bool,
        out_src: SocketAddr,
        out_dst: SocketAddr,
    ) -> Self {
        Self::forward(
            FlowAction::ForwardPlain,
            flow_id,
            peer,
            strict,
            (out_src, out_dst),
        )
    }

    /// A forward through an AF_XDP worker ([`FlowAction::ToWorker`]); fields as for
    /// [`FlowEntry::forward_plain`].
    pub fn to_worker(
        flow_id: u32,
        peer: Option<SocketAddr>,
        strict: bool,
        out_src: SocketAddr,
        out_dst: SocketAddr,
    ) -> Self {
        Self::forward(
            FlowAction::ToWorker,
            flow_id,
            peer,
            strict,
            (out_src, out_dst),
        )
    }

    fn forward(
        action: FlowAction,
        flow_id: u32,
        peer: Option<SocketAddr>,
        strict: bool,
        (out_src, out_dst): (SocketAddr, SocketAddr),
    ) -> Self {
        let mut entry = Self::new(action, flow_id);
        if let Some(peer) = peer {
            let key = FlowKey::from_socket_addr(peer);
            entry.peer_addr = key.addr;
            entry.peer_port_be = key.port_be;
            entry.flags |= FLOW_PEER_KNOWN;
        }
        if strict {
            entry.flags |= FLOW_STRICT_SOURCE;
        }
        let src = FlowKey::from_socket_addr(out_src);
        entry.out_src_addr = src.addr;
        entry.out_src_port_be = src.port_be;
        let dst = FlowKey::from_socket_addr(out_dst);
        entry.out_dst_addr = dst.addr;
        entry.out_dst_port_be = dst.port_be;
        entry
    }
}

/// Magic value of [`XdpMeta::magic`].
pub const XDP_META_MAGIC: u32 = 0x5244_4c59;

/// Metadata the XDP program writes in front of a frame it redirects to an AF_XDP socket
/// (`bpf_xdp_adjust_meta`; the socket sees it in the `size_of::<XdpMeta>()` bytes before the
/// frame). Everything the worker needs that only the kernel knows: which flow, and the next hop
/// from `bpf_fib_lookup`.
///
/// ```text
///  0: magic (u32, host order)   4: flow_id (u32)   8: egress_ifindex (u32)
/// 12: dst_mac (6)              18: src_mac (6)
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpMeta {
    /// [`XDP_META_MAGIC`]: tells metadata from whatever a driver left there.
    pub magic: u32,
    /// The [`FlowEntry::flow_id`] the frame matched.
    pub flow_id: u32,
    /// Interface the transformed frame leaves by (host order).
    pub egress_ifindex: u32,
    /// Next hop's MAC address.
    pub dst_mac: [u8; 6],
    /// Egress interface's MAC address.
    pub src_mac: [u8; 6],
}

/// Packets and bytes a flow forwarded in XDP (one per flow id, per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Packets forwarded (`XDP_TX` or redirect).
    pub packets: u64,
    /// UDP payload bytes forwarded (as the socket datapath counts bytes).
    pub bytes: u64,
    /// Packets dropped for a wrong source.
    pub wrong_source: u64,
}

/// Named indices of the per-CPU outcome counter array. Every packet the program sees bumps
/// exactly one of them, so their sum is the number of packets seen.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Frame shorter than an Ethernet header (or its VLAN tag).
    PassTruncatedEthernet = 0,
    /// EtherType is neither IPv4 nor IPv6 (ARP, LLDP, ...).
    PassNotIp = 1,
    /// More than one VLAN tag (QinQ): not parsed further.
    PassStackedVlan = 2,
    /// IP header truncated, of the wrong version for its EtherType, or with an IHL below 5.
    PassBadIpHeader = 3,
    /// IPv4 fragment (first or later): the UDP header is not reliably there.
    PassIpFragment = 4,
    /// IPv6 with an extension header before the transport header.
    PassIpv6ExtensionHeader = 5,
    /// Transport protocol is not UDP (ICMP, TCP, ...).
    PassNotUdp = 6,
    /// UDP header incomplete.
    PassTruncatedUdp = 7,
    /// UDP packet to an (address, port) that is not a programmed flow.
    PassNoFlow = 8,
    /// Programmed flow whose action is [`FlowAction::Pass`].
    FlowPass = 9,
    /// Programmed flow whose action is [`FlowAction::Drop`].
    FlowDrop = 10,
    /// Programmed flow whose action this program does not know: passed.
    FlowUnknownAction = 11,
    /// Plain flow forwarded out of the receiving interface (`XDP_TX`).
    FlowForwardTx = 12,
    /// Plain flow forwarded to another interface (`DEVMAP` redirect).
    FlowForwardRedirect = 13,
    /// Forwarded flow, packet from a source other than its peer on a strict flow: dropped.
    FlowDropWrongSource = 14,
    /// Forwarded flow whose peer is not known yet: passed, so userspace can latch it.
    FlowPassUnlatched = 15,
    /// Forwarded flow, packet from another source on a non-strict flow: passed to userspace.
    FlowPassOtherSource = 16,
    /// Forwarded flow without a route or neighbour for the egress (or egress not relayd's).
    FlowPassNoRoute = 17,
    /// Forwarded flow the program does not forward itself (VLAN-tagged, mixed families).
    FlowPassUnsupported = 18,
    /// Crypto flow redirected to the AF_XDP socket of its receive queue.
    FlowRedirectWorker = 19,
    /// Crypto flow with no AF_XDP socket on its receive queue (or no room for metadata):
    /// passed to the stack unmodified.
    FlowPassNoWorker = 20,
}

/// Number of entries in the counter array.
pub const COUNTER_COUNT: u32 = 21;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Self; COUNTER_COUNT as usize] = [
        Self::PassTruncatedEthernet,
        Self::PassNotIp,
        Self::PassStackedVlan,
        Self::PassBadIpHeader,
        Self::PassIpFragment,
        Self::PassIpv6ExtensionHeader,
        Self::PassNotUdp,
        Self::PassTruncatedUdp,
        Self::PassNoFlow,
        Self::FlowPass,
        Self::FlowDrop,
        Self::FlowUnknownAction,
        Self::FlowForwardTx,
        Self::FlowForwardRedirect,
        Self::FlowDropWrongSource,
        Self::FlowPassUnlatched,
        Self::FlowPassOtherSource,
        Self::FlowPassNoRoute,
        Self::FlowPassUnsupported,
        Self::FlowRedirectWorker,
        Self::FlowPassNoWorker,
    ];

    /// Stable `snake_case` name, used as the `outcome` label in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PassTruncatedEthernet => "pass_truncated_ethernet",
            Self::PassNotIp => "pass_not_ip",
            Self::PassStackedVlan => "pass_stacked_vlan",
            Self::PassBadIpHeader => "pass_bad_ip_header",
            Self::PassIpFragment => "pass_ip_fragment",
            Self::PassIpv6ExtensionHeader => "pass_ipv6_extension_header",
            Self::PassNotUdp => "pass_not_udp",
            Self::PassTruncatedUdp => "pass_truncated_udp",
            Self::PassNoFlow => "pass_no_flow",
            Self::FlowPass => "flow_pass",
            Self::FlowDrop => "flow_drop",
            Self::FlowUnknownAction => "flow_unknown_action",
            Self::FlowForwardTx => "flow_forward_tx",
            Self::FlowForwardRedirect => "flow_forward_redirect",
            Self::FlowDropWrongSource => "flow_drop_wrong_source",
            Self::FlowPassUnlatched => "flow_pass_unlatched",
            Self::FlowPassOtherSource => "flow_pass_other_source",
            Self::FlowPassNoRoute => "flow_pass_no_route",
            Self::FlowPassUnsupported => "flow_pass_unsupported",
            Self::FlowRedirectWorker => "flow_redirect_worker",
            Self::FlowPassNoWorker => "flow_pass_no_worker",
        }
    }

    /// Index into the counter array.
    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both types are #[repr(C)], Copy, contain only integers and byte arrays, and have no
    // implicit padding (FlowKey: 16 + 2 + 2 bytes, FlowEntry: 72 bytes laid out in its doc), so
    // every bit pattern is valid and no byte is uninitialised.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::FlowEntry {}
    // SAFETY: three u64, no padding.
    unsafe impl aya::Pod for super::FlowStats {}
    // SAFETY: #[repr(C)], three u32 then two [u8; 6]: 24 bytes, no padding.
    unsafe impl aya::Pod for super::XdpMeta {}
    // SAFETY: #[repr(C)], a u32 then 64 bytes: 68 bytes, no padding (alignment 4).
    unsafe impl aya::Pod for super::BenchTemplate {}
}

#[cfg(test)]
mod tests {
    use core::{mem::size_of, net::SocketAddr};

    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<FlowKey>(), 20);
        assert_eq!(size_of::<FlowEntry>(), 72);
        assert_eq!(
            size_of::<XdpMeta>(),
            24,
            "a multiple of 4, at most 32 (adjust_meta)"
        );
    }

    #[test]
    fn v4_key_is_v4_mapped_with_big_endian_port() {
        let key = FlowKey::v4([198, 18, 0, 2], 30_000);
        assert_eq!(
            key.addr,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2]
        );
        assert_eq!(key.port_be.to_ne_bytes(), [0x75, 0x30]);
        let sa: SocketAddr = "198.18.0.2:30000".parse().unwrap();
        assert_eq!(FlowKey::from_socket_addr(sa), key);
        assert_eq!(key.socket_addr(), sa);
    }

    #[test]
    fn v6_key_round_trips() {
        let sa: SocketAddr = "[2001:db8::1]:40002".parse().unwrap();
        assert_eq!(FlowKey::from_socket_addr(sa).socket_addr(), sa);
    }

    #[test]
    fn counter_table_is_in_index_order_with_unique_names() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i);
            for other in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), other.name());
            }
        }
    }

    #[test]
    fn unknown_actions_decode_to_none() {
        assert_eq!(FlowAction::from_u32(0), Some(FlowAction::Pass));
        assert_eq!(FlowAction::from_u32(1), Some(FlowAction::Drop));
        assert_eq!(FlowAction::from_u32(2), Some(FlowAction::ForwardPlain));
        assert_eq!(FlowAction::from_u32(3), Some(FlowAction::ToWorker));
        assert_eq!(FlowAction::from_u32(7), None);
    }
}
