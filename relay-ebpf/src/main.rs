//! The relay's XDP program.
//!
//! Parses Ethernet (with at most one 802.1Q/802.1ad tag), IPv4 or IPv6, and UDP, checking bounds
//! before every header access, and looks the packet's destination (address, UDP port) up in the
//! flow map ([`relay_common::FlowKey`] -> [`relay_common::FlowEntry`]). Every packet bumps exactly
//! one named per-CPU counter ([`relay_common::Counter`]). Anything that is not a programmed flow
//! gets `XDP_PASS`: unknown traffic is never harmed.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use relay_common::{Counter, FlowAction, FlowEntry, FlowKey, COUNTER_COUNT, FLOW_MAP_CAPACITY};

/// Programmed flows, written by relayd.
#[map(name = "RELAY_FLOWS")]
static RELAY_FLOWS: HashMap<FlowKey, FlowEntry> = HashMap::with_max_entries(FLOW_MAP_CAPACITY, 0);

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
    // One 802.1Q / 802.1ad tag: TCI(2) inner ethertype(2).
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
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
        None => pass(Counter::FlowUnknownAction),
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
#[link_section = "license"]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
