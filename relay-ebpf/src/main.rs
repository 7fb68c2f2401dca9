//! The relay's XDP program.
//!
//! Parses Ethernet (with at most one 802.1Q/802.1ad tag), IPv4 or IPv6, and UDP, checking bounds
//! before every header access, and looks the packet's destination (address, UDP port) up in the
//! flow map ([`relay_common::FlowKey`] -> [`relay_common::FlowEntry`]). Every packet bumps exactly
//! one named per-CPU counter ([`relay_common::Counter`]). Anything that is not a programmed flow
//! gets `XDP_PASS`: unknown traffic is never harmed.
//!
//! Plain flows ([`relay_common::FlowAction::ForwardPlain`]) are forwarded here: the source is
//! checked against the flow's peer (strict flows drop strangers; an unlatched flow passes the
//! packet so userspace can latch it), the next hop comes from `bpf_fib_lookup` *before* the
//! packet is touched (no route: passed unmodified), then addresses and ports are rewritten with
//! incremental checksum updates (RFC 1624) and the frame leaves by `XDP_TX` or a `DEVMAP`
//! redirect. IPv4 without VLAN tags for now; the rest is passed to the socket datapath.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated::bpf_fib_lookup as fib_lookup,
    macros::{map, xdp},
    maps::{DevMapHash, HashMap, PerCpuArray},
    programs::XdpContext,
    EbpfContext as _,
};
use relay_common::{
    Counter, FlowAction, FlowEntry, FlowKey, FlowStats, COUNTER_COUNT, FLOW_MAP_CAPACITY,
    FLOW_PEER_KNOWN, FLOW_STRICT_SOURCE,
};

/// Programmed flows, written by relayd.
#[map(name = "RELAY_FLOWS")]
static RELAY_FLOWS: HashMap<FlowKey, FlowEntry> = HashMap::with_max_entries(FLOW_MAP_CAPACITY, 0);

/// Per-flow counters, indexed by flow id (ids at or above the capacity are not counted).
#[map(name = "RELAY_FLOW_STATS")]
static RELAY_FLOW_STATS: PerCpuArray<FlowStats> =
    PerCpuArray::with_max_entries(FLOW_MAP_CAPACITY, 0);

/// Egress interfaces for redirects (ifindex -> ifindex), written by relayd.
#[map(name = "RELAY_DEVMAP")]
static RELAY_DEVMAP: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// Outcome counters, one slot per [`Counter`], per CPU.
#[map(name = "RELAY_COUNTERS")]
static RELAY_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;

// EtherTypes, as they appear on the wire (big endian).
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPPROTO_UDP: u8 = 17;
const AF_INET: u8 = 2;

/// The outcome of parsing one frame: the XDP action and the counter that explains it.
struct Verdict {
    action: u32,
    counter: Counter,
}

const fn pass(counter: Counter) -> Verdict {
    Verdict {
        action: xdp_action::XDP_PASS,
        counter,
    }
}

#[xdp]
pub fn relay_xdp(ctx: XdpContext) -> u32 {
    let verdict = classify(&ctx);
    if let Some(slot) = RELAY_COUNTERS.get_ptr_mut(verdict.counter.index()) {
        // SAFETY: the slot is this CPU's copy of a u64 in a per-CPU array; no one else writes it
        // while this program runs on this CPU.
        unsafe { *slot += 1 };
    }
    verdict.action
}

/// Returns `len` bytes at `offset` from the start of the frame, or `None` when the frame is
/// shorter. This is the bounds check the verifier needs before every access.
#[inline(always)]
fn bytes_at<const LEN: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; LEN]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + LEN > end {
        return None;
    }
    // SAFETY: [start + offset, start + offset + LEN) lies inside the packet, checked above; the
    // read is unaligned because headers are not naturally aligned after VLAN tags or IP options.
    Some(unsafe { ((start + offset) as *const [u8; LEN]).read_unaligned() })
}

#[inline(always)]
fn be16_at(ctx: &XdpContext, offset: usize) -> Option<u16> {
    bytes_at::<2>(ctx, offset).map(u16::from_be_bytes)
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Verdict {
    // Ethernet: dst(6) src(6) ethertype(2).
    let Some(mut ethertype) = be16_at(ctx, 12) else {
        return pass(Counter::PassTruncatedEthernet);
    };
    let mut l3 = ETH_HEADER_LEN;
    let mut tagged = false;
    // One 802.1Q / 802.1ad tag: TCI(2) inner ethertype(2).
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        tagged = true;
        let Some(inner) = be16_at(ctx, l3 + 2) else {
            return pass(Counter::PassTruncatedEthernet);
        };
        if inner == ETH_P_8021Q || inner == ETH_P_8021AD {
            return pass(Counter::PassStackedVlan);
        }
        ethertype = inner;
        l3 += VLAN_TAG_LEN;
    }
    let (key_addr, l4) = match ethertype {
        ETH_P_IPV4 => match parse_ipv4(ctx, l3) {
            Ok(parsed) => parsed,
            Err(counter) => return pass(counter),
        },
        ETH_P_IPV6 => match parse_ipv6(ctx, l3) {
            Ok(parsed) => parsed,
            Err(counter) => return pass(counter),
        },
        _ => return pass(Counter::PassNotIp),
    };
    // UDP: src port(2) dst port(2) length(2) checksum(2).
    let Some(udp) = bytes_at::<UDP_HEADER_LEN>(ctx, l4) else {
        return pass(Counter::PassTruncatedUdp);
    };
    let key = FlowKey {
        addr: key_addr,
        port_be: u16::from_ne_bytes([udp[2], udp[3]]),
        pad: 0,
    };
    // SAFETY: the value is copied out before any other map operation on this CPU.
    let Some(entry) = (unsafe { RELAY_FLOWS.get(&key) }).copied() else {
        return pass(Counter::PassNoFlow);
    };
    match FlowAction::from_u32(entry.action) {
        Some(FlowAction::Pass) => pass(Counter::FlowPass),
        Some(FlowAction::Drop) => Verdict {
            action: xdp_action::XDP_DROP,
            counter: Counter::FlowDrop,
        },
        Some(FlowAction::ForwardPlain) => {
            if tagged || ethertype != ETH_P_IPV4 || !is_v4_mapped(&entry.out_dst_addr) {
                return pass(Counter::FlowPassUnsupported);
            }
            forward_ipv4(ctx, l3, l4, &udp, &entry)
        }
        None => pass(Counter::FlowUnknownAction),
    }
}

const fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    addr[0] == 0
        && addr[1] == 0
        && addr[2] == 0
        && addr[3] == 0
        && addr[4] == 0
        && addr[5] == 0
        && addr[6] == 0
        && addr[7] == 0
        && addr[8] == 0
        && addr[9] == 0
        && addr[10] == 0xff
        && addr[11] == 0xff
}

/// Adds 16-bit words to a one's-complement sum (RFC 1071).
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 eqn. 3: the checksum after the 16-bit words `old` became `new`.
#[inline(always)]
fn checksum_update(check: u16, old: &[u16; 6], new: &[u16; 6]) -> u16 {
    let mut sum = u32::from(!check);
    let mut i = 0;
    while i < 6 {
        sum += u32::from(!old[i]) + u32::from(new[i]);
        i += 1;
    }
    !fold(sum)
}

#[inline(always)]
fn words(addr: [u8; 4], port: [u8; 2]) -> [u16; 3] {
    [
        u16::from_be_bytes([addr[0], addr[1]]),
        u16::from_be_bytes([addr[2], addr[3]]),
        u16::from_be_bytes(port),
    ]
}

/// Forwards an IPv4/UDP packet of a plain flow (see the module doc).
#[inline(always)]
fn forward_ipv4(
    ctx: &XdpContext,
    l3: usize,
    l4: usize,
    udp: &[u8; UDP_HEADER_LEN],
    entry: &FlowEntry,
) -> Verdict {
    let Some(ip) = bytes_at::<IPV4_MIN_HEADER_LEN>(ctx, l3) else {
        return pass(Counter::PassBadIpHeader);
    };
    let src_addr = [ip[12], ip[13], ip[14], ip[15]];
    let dst_addr = [ip[16], ip[17], ip[18], ip[19]];
    let src_port = [udp[0], udp[1]];
    let dst_port = [udp[2], udp[3]];
    // Source check.
    if entry.flags & FLOW_PEER_KNOWN == 0 {
        return pass(Counter::FlowPassUnlatched);
    }
    let peer = &entry.peer_addr;
    let from_peer = peer[12] == src_addr[0]
        && peer[13] == src_addr[1]
        && peer[14] == src_addr[2]
        && peer[15] == src_addr[3]
        && entry.peer_port_be.to_ne_bytes() == src_port;
    if !from_peer {
        return if entry.flags & FLOW_STRICT_SOURCE != 0 {
            if let Some(stats) = RELAY_FLOW_STATS.get_ptr_mut(entry.flow_id) {
                // SAFETY: this CPU's slot of a per-CPU array.
                unsafe { (*stats).wrong_source += 1 };
            }
            Verdict {
                action: xdp_action::XDP_DROP,
                counter: Counter::FlowDropWrongSource,
            }
        } else {
            pass(Counter::FlowPassOtherSource)
        };
    }
    let new_src = [
        entry.out_src_addr[12],
        entry.out_src_addr[13],
        entry.out_src_addr[14],
        entry.out_src_addr[15],
    ];
    let new_dst = [
        entry.out_dst_addr[12],
        entry.out_dst_addr[13],
        entry.out_dst_addr[14],
        entry.out_dst_addr[15],
    ];
    let new_sport = entry.out_src_port_be.to_ne_bytes();
    let new_dport = entry.out_dst_port_be.to_ne_bytes();

    // Next hop first: without one, the packet goes to the stack untouched.
    // SAFETY: bpf_fib_lookup is plain old data; all-zero is a valid starting value.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = IPPROTO_UDP;
    params.sport = u16::from_ne_bytes(new_sport);
    params.dport = u16::from_ne_bytes(new_dport);
    params.__bindgen_anon_1.tot_len = u16::from_be_bytes([ip[2], ip[3]]);
    params.ifindex = ctx.ingress_ifindex() as u32;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(new_src);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(new_dst);
    // A forwarding lookup from the ingress device: the kernel answers only when IP forwarding
    // is enabled on it (relayd enables it on its XDP interfaces).
    // SAFETY: `params` is a live bpf_fib_lookup of the size passed; the context is the
    // program's own.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return pass(Counter::FlowPassNoRoute);
    }
    let egress = params.ifindex;
    let ingress = ctx.ingress_ifindex() as u32;
    // The redirect target must be an interface relayd put in the devmap; check before
    // rewriting so a miss passes the packet unmodified.
    let action = if egress == ingress {
        xdp_action::XDP_TX
    } else {
        match RELAY_DEVMAP.redirect(egress, u64::from(xdp_action::XDP_PASS)) {
            Ok(action) => action,
            Err(_) => return pass(Counter::FlowPassNoRoute),
        }
    };

    // Rewrite: MACs, IPv4 addresses (header checksum), UDP ports (UDP checksum, if any).
    let start = ctx.data();
    let end = ctx.data_end();
    if start + l4 + UDP_HEADER_LEN > end || start + l3 + IPV4_MIN_HEADER_LEN > end {
        return pass(Counter::PassTruncatedUdp);
    }
    let old = {
        let s = words(src_addr, src_port);
        let d = words(dst_addr, dst_port);
        [s[0], s[1], d[0], d[1], s[2], d[2]]
    };
    let new = {
        let s = words(new_src, new_sport);
        let d = words(new_dst, new_dport);
        [s[0], s[1], d[0], d[1], s[2], d[2]]
    };
    let old_ip = [old[0], old[1], old[2], old[3], 0, 0];
    let new_ip = [new[0], new[1], new[2], new[3], 0, 0];
    let ip_check = checksum_update(u16::from_be_bytes([ip[10], ip[11]]), &old_ip, &new_ip);
    let udp_check_old = u16::from_be_bytes([udp[6], udp[7]]);
    let udp_check = if udp_check_old == 0 {
        0
    } else {
        match checksum_update(udp_check_old, &old, &new) {
            0 => 0xffff,
            c => c,
        }
    };
    // SAFETY: every write below lies inside [start, end), checked above (the Ethernet header is
    // inside l3, which is at least 14).
    unsafe {
        let eth = start as *mut u8;
        core::ptr::copy_nonoverlapping(params.dmac.as_ptr(), eth, 6);
        core::ptr::copy_nonoverlapping(params.smac.as_ptr(), eth.add(6), 6);
        let ip = (start + l3) as *mut u8;
        core::ptr::copy_nonoverlapping(new_src.as_ptr(), ip.add(12), 4);
        core::ptr::copy_nonoverlapping(new_dst.as_ptr(), ip.add(16), 4);
        core::ptr::copy_nonoverlapping(ip_check.to_be_bytes().as_ptr(), ip.add(10), 2);
        let udp = (start + l4) as *mut u8;
        core::ptr::copy_nonoverlapping(new_sport.as_ptr(), udp, 2);
        core::ptr::copy_nonoverlapping(new_dport.as_ptr(), udp.add(2), 2);
        core::ptr::copy_nonoverlapping(udp_check.to_be_bytes().as_ptr(), udp.add(6), 2);
    }
    if let Some(stats) = RELAY_FLOW_STATS.get_ptr_mut(entry.flow_id) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += (end - start) as u64;
        }
    }
    Verdict {
        action,
        counter: if action == xdp_action::XDP_TX {
            Counter::FlowForwardTx
        } else {
            Counter::FlowForwardRedirect
        },
    }
}

/// IPv4 (RFC 791): returns the destination as an IPv4-mapped key address and the offset of the
/// UDP header.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Result<([u8; 16], usize), Counter> {
    let Some(header) = bytes_at::<IPV4_MIN_HEADER_LEN>(ctx, l3) else {
        return Err(Counter::PassBadIpHeader);
    };
    let version = header[0] >> 4;
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if version != 4 || header_len < IPV4_MIN_HEADER_LEN {
        return Err(Counter::PassBadIpHeader);
    }
    // Flags and fragment offset: MF (0x2000) or a non-zero offset (0x1fff) mark a fragment.
    if u16::from_be_bytes([header[6], header[7]]) & 0x3fff != 0 {
        return Err(Counter::PassIpFragment);
    }
    if header[9] != IPPROTO_UDP {
        return Err(Counter::PassNotUdp);
    }
    let mut addr = [0u8; 16];
    addr[10] = 0xff;
    addr[11] = 0xff;
    addr[12] = header[16];
    addr[13] = header[17];
    addr[14] = header[18];
    addr[15] = header[19];
    // Options (IHL > 5) are skipped; the UDP bounds check covers the variable offset.
    Ok((addr, l3 + header_len))
}

/// IPv6 (RFC 8200): returns the destination address and the offset of the UDP header when UDP
/// is the first next header.
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize) -> Result<([u8; 16], usize), Counter> {
    let Some(first) = bytes_at::<8>(ctx, l3) else {
        return Err(Counter::PassBadIpHeader);
    };
    let Some(dst) = bytes_at::<16>(ctx, l3 + 24) else {
        return Err(Counter::PassBadIpHeader);
    };
    if first[0] >> 4 != 6 {
        return Err(Counter::PassBadIpHeader);
    }
    match first[6] {
        IPPROTO_UDP => Ok((dst, l3 + IPV6_HEADER_LEN)),
        // Hop-by-hop, routing, fragment, destination options, AH, mobility, HIP, shim6 and the
        // experimental values (RFC 8200 section 4, RFC 7045).
        0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 | 253 | 254 => {
            Err(Counter::PassIpv6ExtensionHeader)
        }
        _ => Err(Counter::PassNotUdp),
    }
}

const _: () = assert!(size_of::<FlowKey>() == 20);
const _: () = assert!(size_of::<FlowEntry>() == 72);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
#[link_section = "license"]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
