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
//! redirect. IPv4 and IPv6; VLAN-tagged frames are passed (the next hop of a VLAN lives on the
//! VLAN device, which the kernel stack handles).
//!
//! Crypto flows ([`relay_common::FlowAction::ToWorker`]) get the same source check and next-hop
//! lookup, then an [`relay_common::XdpMeta`] (flow id, egress, MACs) in front of the frame and a
//! redirect to the AF_XDP socket of the frame's receive queue, where relayd's workers run SRTP.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_xdp_adjust_meta},
    macros::{map, xdp},
    maps::{DevMapHash, HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
    EbpfContext as _,
};
use relay_common::{
    xsk_slot, BenchTemplate, Counter, FlowAction, FlowEntry, FlowKey, FlowStats, XdpMeta,
    BENCH_TEMPLATE_LEN, COUNTER_COUNT, FLOW_MAP_CAPACITY, FLOW_PEER_KNOWN, FLOW_STRICT_SOURCE,
    XDP_META_MAGIC, XSK_INTERFACES, XSK_MAP_CAPACITY,
};

// relayd pins the maps it wants to survive a restart itself (it chooses the directory), so
// none is declared pinned here.

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

/// AF_XDP sockets, one per (interface, receive queue), at [`xsk_slot`].
#[map(name = "RELAY_XSKS")]
static RELAY_XSKS: XskMap = XskMap::with_max_entries(XSK_MAP_CAPACITY, 0);

/// Interface (ifindex) -> its first slot in [`RELAY_XSKS`], written by relayd.
#[map(name = "RELAY_XSK_BASE")]
static RELAY_XSK_BASE: HashMap<u32, u32> = HashMap::with_max_entries(XSK_INTERFACES, 0);

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
const AF_INET6: u8 = 10;

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

/// Counter of the benchmark programs (slot 0).
#[map(name = "RELAY_BENCH_COUNTER")]
static RELAY_BENCH_COUNTER: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn bench_count() {
    if let Some(slot) = RELAY_BENCH_COUNTER.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *slot += 1 };
    }
}

/// Benchmark: drops everything (an interface's XDP ceiling). Never attached by relayd.
#[xdp]
pub fn relay_bench_drop(_ctx: XdpContext) -> u32 {
    bench_count();
    xdp_action::XDP_DROP
}

/// Headers the generator writes into every frame before sending it: live frames are recycled
/// without being re-initialised, and a relay downstream may have rewritten them.
#[map(name = "RELAY_BENCH_TEMPLATE")]
static RELAY_BENCH_TEMPLATE: aya_ebpf::maps::Array<BenchTemplate> =
    aya_ebpf::maps::Array::with_max_entries(1, 0);

/// Benchmark: bounces everything out of the ingress device, after writing the header template
/// (when set) over its first bytes; run with `BPF_PROG_RUN` live frames it is an in-kernel
/// packet generator. Never attached by relayd.
#[xdp]
pub fn relay_bench_tx(ctx: XdpContext) -> u32 {
    if let Some(template) = RELAY_BENCH_TEMPLATE.get(0) {
        let start = ctx.data();
        if template.enabled != 0 && start + BENCH_TEMPLATE_LEN <= ctx.data_end() {
            // SAFETY: the frame holds at least BENCH_TEMPLATE_LEN bytes, checked above.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    template.bytes.as_ptr(),
                    start as *mut u8,
                    BENCH_TEMPLATE_LEN,
                );
            }
        }
    }
    bench_count();
    xdp_action::XDP_TX
}

/// Where [`relay_bench_redirect`] sends (an ifindex, also in `RELAY_DEVMAP`).
#[map(name = "RELAY_BENCH_EGRESS")]
static RELAY_BENCH_EGRESS: aya_ebpf::maps::Array<u32> =
    aya_ebpf::maps::Array::with_max_entries(1, 0);

/// Benchmark: IPv4/UDP goes, untouched, out of the interface in `RELAY_BENCH_EGRESS` through
/// the devmap, as relayd's program forwards a pinned flow to another interface but without
/// its work (parse, flow lookup, source check, FIB lookup, rewrite, counters): the floor of
/// XDP forwarding. Everything else goes to the stack. Never attached by relayd.
#[xdp]
pub fn relay_bench_redirect(ctx: XdpContext) -> u32 {
    if !is_untagged_udp4(&ctx) {
        return xdp_action::XDP_PASS;
    }
    let Some(&egress) = RELAY_BENCH_EGRESS.get(0) else {
        return xdp_action::XDP_PASS;
    };
    counted(RELAY_DEVMAP.redirect(egress, u64::from(xdp_action::XDP_PASS)))
}

/// Benchmark: IPv4/UDP goes to the AF_XDP socket of its receive queue (a load generator's
/// receiver), everything else (ARP above all) to the stack. Never attached by relayd.
#[xdp]
pub fn relay_bench_to_xsk(ctx: XdpContext) -> u32 {
    if !is_untagged_udp4(&ctx) {
        return xdp_action::XDP_PASS;
    }
    let ingress = ctx.ingress_ifindex() as u32;
    // SAFETY: a plain u32, copied out at once.
    let Some(base) = (unsafe { RELAY_XSK_BASE.get(&ingress) }).copied() else {
        return xdp_action::XDP_PASS;
    };
    let Some(slot) = xsk_slot(base, ctx.rx_queue_index()) else {
        return xdp_action::XDP_PASS;
    };
    counted(RELAY_XSKS.redirect(slot, u64::from(xdp_action::XDP_PASS)))
}

/// Benchmark programs: an untagged Ethernet frame carrying IPv4/UDP.
#[inline(always)]
fn is_untagged_udp4(ctx: &XdpContext) -> bool {
    be16_at(ctx, 12) == Some(ETH_P_IPV4)
        && bytes_at::<1>(ctx, ETH_HEADER_LEN + 9) == Some([IPPROTO_UDP])
}

/// Benchmark programs: a redirect's action, counted when the redirect was set up.
#[inline(always)]
fn counted(redirect: Result<u32, u32>) -> u32 {
    match redirect {
        Ok(action) => {
            bench_count();
            action
        }
        Err(action) => action,
    }
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
    let Some(entry) = RELAY_FLOWS.get_ptr(&key) else {
        return pass(Counter::PassNoFlow);
    };
    // SAFETY: a hash map value stays valid for the whole program run (RCU); relayd replaces
    // entries whole, so a concurrent update can at worst mix old and new fields of one flow.
    let entry = unsafe { &*entry };
    match FlowAction::from_u32(entry.action) {
        Some(FlowAction::Pass) => pass(Counter::FlowPass),
        Some(FlowAction::Drop) => Verdict {
            action: xdp_action::XDP_DROP,
            counter: Counter::FlowDrop,
        },
        Some(action @ (FlowAction::ForwardPlain | FlowAction::ToWorker)) => {
            let v6 = ethertype == ETH_P_IPV6;
            // The egress must be of the packet's family, and both addresses of the peer too.
            if tagged
                || is_v4_mapped(&entry.out_dst_addr) == v6
                || is_v4_mapped(&entry.out_src_addr) == v6
            {
                return pass(Counter::FlowPassUnsupported);
            }
            forward(
                ctx,
                Offsets { l3, l4, v6 },
                entry,
                action == FlowAction::ToWorker,
            )
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

/// RFC 1624 eqn. 3, one word: adds `~old + new` to a running sum.
#[inline(always)]
fn replace_word(sum: u32, old: [u8; 2], new: [u8; 2]) -> u32 {
    // Folding early keeps the running sum far from overflow however many words are replaced.
    u32::from(fold(
        sum + u32::from(!u16::from_be_bytes(old)) + u32::from(u16::from_be_bytes(new)),
    ))
}

/// [`replace_word`] over the words of an address: `LEN` bytes at `old` become
/// `new[16 - LEN..]` (4 for IPv4-mapped, 16 for IPv6).
///
/// # Safety
///
/// `old` must be valid for reads of `LEN` bytes.
#[inline(always)]
unsafe fn replace_address<const LEN: usize>(mut sum: u32, old: *const u8, new: &[u8; 16]) -> u32 {
    let mut i = 0;
    while i + 1 < LEN {
        // SAFETY: i + 1 < LEN, which the caller vouches for.
        let was = unsafe { [*old.add(i), *old.add(i + 1)] };
        sum = replace_word(sum, was, [new[16 - LEN + i], new[16 - LEN + i + 1]]);
        i += 2;
    }
    sum
}

/// Header offsets of a parsed frame.
#[derive(Clone, Copy)]
struct Offsets {
    l3: usize,
    l4: usize,
    v6: bool,
}

/// Whether the packet comes from the flow's peer (address and UDP source port).
#[inline(always)]
fn from_peer(ctx: &XdpContext, at: Offsets, entry: &FlowEntry) -> Option<bool> {
    let port = be16_at(ctx, at.l4)?;
    if port != u16::from_be(entry.peer_port_be) {
        return Some(false);
    }
    let peer = &entry.peer_addr;
    if at.v6 {
        let src = bytes_at::<16>(ctx, at.l3 + 8)?;
        let mut i = 0;
        while i < 16 {
            if src[i] != peer[i] {
                return Some(false);
            }
            i += 1;
        }
        Some(true)
    } else {
        let src = bytes_at::<4>(ctx, at.l3 + 12)?;
        Some(src[0] == peer[12] && src[1] == peer[13] && src[2] == peer[14] && src[3] == peer[15])
    }
}

#[inline(always)]
fn count_flow(flow_id: u32, bytes: usize, wrong_source: bool) {
    if let Some(stats) = RELAY_FLOW_STATS.get_ptr_mut(flow_id) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe {
            if wrong_source {
                (*stats).wrong_source += 1;
            } else {
                (*stats).packets += 1;
                (*stats).bytes += bytes as u64;
            }
        }
    }
}

/// Forwards a packet of a [`FlowAction::ForwardPlain`] or [`FlowAction::ToWorker`] flow (see
/// the module doc).
#[inline(always)]
fn forward(ctx: &XdpContext, at: Offsets, entry: &FlowEntry, to_worker: bool) -> Verdict {
    // Source check.
    if entry.flags & FLOW_PEER_KNOWN == 0 {
        return pass(Counter::FlowPassUnlatched);
    }
    let Some(from_peer) = from_peer(ctx, at, entry) else {
        return pass(Counter::PassTruncatedUdp);
    };
    if !from_peer {
        return if entry.flags & FLOW_STRICT_SOURCE != 0 {
            count_flow(entry.flow_id, 0, true);
            Verdict {
                action: xdp_action::XDP_DROP,
                counter: Counter::FlowDropWrongSource,
            }
        } else {
            pass(Counter::FlowPassOtherSource)
        };
    }

    // Next hop first: without one, the packet goes to the stack untouched.
    // SAFETY: bpf_fib_lookup is plain old data; all-zero is a valid starting value.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.l4_protocol = IPPROTO_UDP;
    params.sport = entry.out_src_port_be;
    params.dport = entry.out_dst_port_be;
    params.ifindex = ctx.ingress_ifindex() as u32;
    let src = &entry.out_src_addr;
    let dst = &entry.out_dst_addr;
    if at.v6 {
        let Some(payload_len) = be16_at(ctx, at.l3 + 4) else {
            return pass(Counter::PassBadIpHeader);
        };
        params.family = AF_INET6;
        params.__bindgen_anon_1.tot_len = payload_len.saturating_add(IPV6_HEADER_LEN as u16);
        let mut i = 0;
        while i < 4 {
            let s = [src[4 * i], src[4 * i + 1], src[4 * i + 2], src[4 * i + 3]];
            let d = [dst[4 * i], dst[4 * i + 1], dst[4 * i + 2], dst[4 * i + 3]];
            // SAFETY: writing plain integers into the IPv6 member of a POD union.
            unsafe {
                params.__bindgen_anon_3.ipv6_src[i] = u32::from_ne_bytes(s);
                params.__bindgen_anon_4.ipv6_dst[i] = u32::from_ne_bytes(d);
            }
            i += 1;
        }
    } else {
        let Some(tot_len) = be16_at(ctx, at.l3 + 2) else {
            return pass(Counter::PassBadIpHeader);
        };
        params.family = AF_INET;
        params.__bindgen_anon_1.tot_len = tot_len;
        params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([src[12], src[13], src[14], src[15]]);
        params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([dst[12], dst[13], dst[14], dst[15]]);
    }
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
    // Counted as the socket datapath counts: UDP payload bytes.
    let payload_bytes = (ctx.data_end() - ctx.data()).saturating_sub(at.l4 + UDP_HEADER_LEN);
    if to_worker {
        return redirect_to_worker(ctx, entry, &params, payload_bytes);
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
    if !rewrite(ctx, at, entry, &params) {
        return pass(Counter::PassTruncatedUdp);
    }
    count_flow(entry.flow_id, payload_bytes, false);
    Verdict {
        action,
        counter: if action == xdp_action::XDP_TX {
            Counter::FlowForwardTx
        } else {
            Counter::FlowForwardRedirect
        },
    }
}

/// Rewrites MACs, IP addresses and UDP ports to the flow's egress, updating the IPv4 header
/// checksum and the UDP checksum (when the sender set one; IPv6 always has one) by RFC 1624.
/// Returns false, touching nothing, when the headers are not all inside the frame.
#[inline(always)]
fn rewrite(ctx: &XdpContext, at: Offsets, entry: &FlowEntry, params: &bpf_fib_lookup) -> bool {
    let start = ctx.data();
    let end = ctx.data_end();
    let ip_len = if at.v6 {
        IPV6_HEADER_LEN
    } else {
        IPV4_MIN_HEADER_LEN
    };
    if start + at.l4 + UDP_HEADER_LEN > end || start + at.l3 + ip_len > end {
        return false;
    }
    let ip = (start + at.l3) as *mut u8;
    let udp = (start + at.l4) as *mut u8;
    // Where the addresses are, and how long.
    let (src_at, dst_at, addr_len) = if at.v6 { (8, 24, 16) } else { (12, 16, 4) };
    // SAFETY: every access below lies inside [start, end), checked above: the addresses and
    // the IPv4 checksum inside the IP header, ports and checksum inside the UDP header, the MACs
    // inside the Ethernet header (l3 is at least 14).
    unsafe {
        let old_udp_check = [*udp.add(6), *udp.add(7)];
        // IP addresses: in the IPv4 header checksum and in the UDP pseudo-header.
        let addr_sum = if at.v6 {
            let sum = replace_address::<16>(0, ip.add(src_at), &entry.out_src_addr);
            replace_address::<16>(sum, ip.add(dst_at), &entry.out_dst_addr)
        } else {
            let sum = replace_address::<4>(0, ip.add(src_at), &entry.out_src_addr);
            replace_address::<4>(sum, ip.add(dst_at), &entry.out_dst_addr)
        };
        if !at.v6 {
            let check = [*ip.add(10), *ip.add(11)];
            let sum = u32::from(!u16::from_be_bytes(check)) + addr_sum;
            let new = !fold(sum);
            core::ptr::copy_nonoverlapping(new.to_be_bytes().as_ptr(), ip.add(10), 2);
        }
        // IPv4 UDP without a checksum (zero) keeps none.
        if at.v6 || old_udp_check != [0, 0] {
            let mut sum = u32::from(!u16::from_be_bytes(old_udp_check)) + addr_sum;
            sum = replace_word(
                sum,
                [*udp, *udp.add(1)],
                entry.out_src_port_be.to_ne_bytes(),
            );
            sum = replace_word(
                sum,
                [*udp.add(2), *udp.add(3)],
                entry.out_dst_port_be.to_ne_bytes(),
            );
            let new = match !fold(sum) {
                0 => 0xffff,
                c => c,
            };
            core::ptr::copy_nonoverlapping(new.to_be_bytes().as_ptr(), udp.add(6), 2);
        }
        let skip = 16 - addr_len;
        core::ptr::copy_nonoverlapping(
            entry.out_src_addr.as_ptr().add(skip),
            ip.add(src_at),
            addr_len,
        );
        core::ptr::copy_nonoverlapping(
            entry.out_dst_addr.as_ptr().add(skip),
            ip.add(dst_at),
            addr_len,
        );
        core::ptr::copy_nonoverlapping(entry.out_src_port_be.to_ne_bytes().as_ptr(), udp, 2);
        core::ptr::copy_nonoverlapping(entry.out_dst_port_be.to_ne_bytes().as_ptr(), udp.add(2), 2);
        let eth = start as *mut u8;
        core::ptr::copy_nonoverlapping(params.dmac.as_ptr(), eth, 6);
        core::ptr::copy_nonoverlapping(params.smac.as_ptr(), eth.add(6), 6);
    }
    true
}

/// Writes the [`XdpMeta`] and redirects the frame to the AF_XDP socket of its receive queue;
/// without one (or without room for the metadata) the frame is passed unmodified.
#[inline(always)]
fn redirect_to_worker(
    ctx: &XdpContext,
    entry: &FlowEntry,
    params: &bpf_fib_lookup,
    payload_bytes: usize,
) -> Verdict {
    let ingress = ctx.ingress_ifindex() as u32;
    // The egress must be one of relayd's interfaces: workers transmit only there.
    if RELAY_DEVMAP.get(params.ifindex).is_none() {
        return pass(Counter::FlowPassNoRoute);
    }
    // SAFETY: the value is a plain u32, copied out at once.
    let Some(base) = (unsafe { RELAY_XSK_BASE.get(&ingress) }).copied() else {
        return pass(Counter::FlowPassNoWorker);
    };
    let Some(slot) = xsk_slot(base, ctx.rx_queue_index()) else {
        return pass(Counter::FlowPassNoWorker);
    };
    if RELAY_XSKS.get(slot).is_none() {
        return pass(Counter::FlowPassNoWorker);
    }
    let meta_len = size_of::<XdpMeta>() as i32;
    // SAFETY: the context is the program's own; a negative delta grows the metadata area.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -meta_len) } != 0 {
        return pass(Counter::FlowPassNoWorker);
    }
    let meta = ctx.metadata();
    if meta + size_of::<XdpMeta>() > ctx.data() {
        return pass(Counter::FlowPassNoWorker);
    }
    let value = XdpMeta {
        magic: XDP_META_MAGIC,
        flow_id: entry.flow_id,
        egress_ifindex: params.ifindex,
        dst_mac: params.dmac,
        src_mac: params.smac,
    };
    // SAFETY: [meta, meta + size_of::<XdpMeta>()) is the metadata area, checked above.
    unsafe { (meta as *mut XdpMeta).write_unaligned(value) };
    match RELAY_XSKS.redirect(slot, u64::from(xdp_action::XDP_PASS)) {
        Ok(action) => {
            count_flow(entry.flow_id, payload_bytes, false);
            Verdict {
                action,
                counter: Counter::FlowRedirectWorker,
            }
        }
        Err(_) => pass(Counter::FlowPassNoWorker),
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
