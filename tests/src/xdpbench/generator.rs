//! The benchmark's load generator on AF_XDP: RTP (or SRTP) streams transmitted from the
//! caller's veth end, received on the callee's, every packet under the generator's control.
//!
//! A socket generator tops out near 0.4 Mpps on this machine; AF_XDP TX in copy mode reaches
//! 1-2 Mpps (see ../shared/design.md), enough to overload every relay measured. Each packet
//! carries its send time (`CLOCK_MONOTONIC` ns) and stream index in the first 12 bytes of the
//! RTP payload, so the receiver measures one-way latency and loss per stream. SRTP streams are
//! protected with the srtp crate's batch API right before transmission (sequence numbers keep
//! growing across steps, so nothing is ever a replay).
//!
//! ```text
//!  frame: Ethernet | IPv4 | UDP | RTP header (12) | send ns (8) | stream (4) | filler | [tag]
//! ```
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "rates, fractions and ratios of a benchmark report"
)]

use std::{
    net::{IpAddr, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use relay_userspace::afxdp::{
    frame,
    xsk::{BindMode, RingSizes, Umem, XskSocket},
};
use srtp::{Batch, BatchPacket, Context};

use crate::loadgen::histogram::Histogram;

/// RTP payload bytes (20 ms of G.711).
pub const PAYLOAD_LEN: usize = 160;
const RTP_HEADER_LEN: usize = 12;
const HEADERS_LEN: usize = 14 + 20 + 8;
/// First SSRC; stream `i` uses `SSRC_BASE + i`.
pub const SSRC_BASE: u32 = 0x5244_0000;
const FRAME_SIZE: u32 = 2048;
const RING: u32 = 2048;
/// Packets built and submitted together.
const TX_BATCH: usize = 64;

/// One stream the generator sends.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// Source (the caller endpoint).
    pub source: SocketAddrV4,
    /// Destination (the relay's port for this stream).
    pub destination: SocketAddrV4,
    /// SRTP context to protect with (`None`: plain RTP).
    pub srtp: Option<std::sync::Arc<std::sync::Mutex<Context>>>,
    /// SRTP context to unprotect what the relay delivers with (`None`: it delivers plain
    /// RTP).
    pub rx_srtp: Option<std::sync::Arc<std::sync::Mutex<Context>>>,
}

/// The generator's two ends.
#[derive(Clone, Copy, Debug)]
pub struct Ends {
    /// Transmitting interface (in the caller namespace) and its MAC.
    pub tx_ifindex: u32,
    /// Its MAC address (frames' source).
    pub tx_mac: [u8; 6],
    /// The next hop's MAC (the relay's end of the veth).
    pub next_hop_mac: [u8; 6],
    /// Receiving interface (in the callee namespace).
    pub rx_ifindex: u32,
}

/// What one step measured.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// Rate asked for.
    pub offered_pps: u64,
    /// Packets transmitted.
    pub sent: u64,
    /// Packets received (within the step and its drain time).
    pub received: u64,
    /// Received packets that were not of any stream, or malformed.
    pub foreign: u64,
    /// Time spent transmitting.
    pub elapsed: Duration,
    /// One-way latency, nanoseconds.
    pub latency: Histogram,
    /// Times the generator could not transmit because no frame or ring slot was free.
    pub stalls: u64,
}

impl StepReport {
    /// The rate actually transmitted.
    pub fn sent_pps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Lost fraction.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - (self.received.min(self.sent) as f64 / self.sent as f64)
    }
}

struct Stream {
    spec: StreamSpec,
    seq: u16,
    timestamp: u32,
}

/// The generator: a TX socket on the caller's end, an RX socket on the callee's.
pub struct Generator {
    // Sockets before their UMEMs (they close first).
    tx: XskSocket,
    rx: XskSocket,
    tx_umem: Umem,
    rx_umem: Umem,
    free: Vec<u64>,
    /// Received frames not yet back on the fill ring.
    rx_spare: Vec<u64>,
    streams: Vec<Stream>,
    ends: Ends,
    srtp: Batch,
    clock_origin: Instant,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// Binds the two sockets (copy mode, queue 0): `tx` is created by `in_caller` (a closure
    /// that runs its argument in the caller namespace), `rx` by `in_callee`. The returned RX
    /// socket must be put in the callee program's XSKMAP by the caller of this function.
    pub fn new(
        ends: Ends,
        streams: Vec<StreamSpec>,
        make_tx: impl FnOnce(&Umem) -> std::io::Result<XskSocket>,
        make_rx: impl FnOnce(&Umem) -> std::io::Result<XskSocket>,
    ) -> std::io::Result<Self> {
        let tx_umem = Umem::new(RING * 2, FRAME_SIZE)?;
        let rx_umem = Umem::new(RING * 2, FRAME_SIZE)?;
        let tx = make_tx(&tx_umem)?;
        let mut rx = make_rx(&rx_umem)?;
        // Every RX frame goes to the fill ring once, and back after each read.
        let fill = rx.fill.free(RING);
        for i in 0..fill {
            rx.fill.write(i, rx_umem.frame_addr(i));
        }
        rx.fill.submit(fill);
        let free = (0..tx_umem.frames())
            .map(|i| tx_umem.frame_addr(i))
            .collect();
        Ok(Self {
            tx,
            rx,
            tx_umem,
            rx_umem,
            free,
            rx_spare: Vec::with_capacity(RING as usize),
            streams: streams
                .into_iter()
                .map(|spec| Stream {
                    spec,
                    seq: 0,
                    timestamp: 0,
                })
                .collect(),
            ends,
            srtp: Batch::with_capacity(TX_BATCH, 256),
            clock_origin: Instant::now(),
        })
    }

    /// The receiving socket (to put in the receiver program's XSKMAP).
    pub fn rx_socket(&self) -> &XskSocket {
        &self.rx
    }

    /// One plain packet of stream 0, as the generator sends it (for the in-kernel generator).
    pub fn sample_frame(&self) -> Vec<u8> {
        let mut stream = Stream {
            spec: StreamSpec {
                srtp: None,
                ..self.streams[0].spec.clone()
            },
            seq: 0,
            timestamp: 0,
        };
        let len = HEADERS_LEN + RTP_HEADER_LEN + PAYLOAD_LEN;
        let mut buf = vec![0u8; len];
        write_packet(&mut buf, &self.ends, &mut stream, 0, 0);
        finish_headers(&mut buf, &self.ends, &stream.spec, len);
        buf
    }

    /// Socket options for binding the generator's sockets.
    pub fn ring_sizes() -> RingSizes {
        RingSizes {
            rx_tx: RING,
            fill_completion: RING,
        }
    }

    /// Bind mode of the generator's sockets (veth has no zero-copy).
    pub const BIND: BindMode = BindMode::Copy;

    fn now_ns(&self) -> u64 {
        u64::try_from(self.clock_origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Sends `count` packets (one per stream in turn, starting at stream `first`); returns how
    /// many went on the TX ring.
    fn transmit(&mut self, first: usize, count: usize) -> usize {
        self.reclaim();
        let room = self.tx.tx.free(u32::try_from(count).unwrap_or(u32::MAX)) as usize;
        let count = count.min(room).min(self.free.len());
        if count == 0 {
            // A full ring (or no free frame) waits on the kernel, which in copy mode moves
            // only when kicked: kick, or nothing ever completes again.
            let _ = self.tx.kick_tx();
            return 0;
        }
        let now = self.now_ns();
        let n = self.streams.len();
        let mut addrs = Vec::with_capacity(count);
        for k in 0..count {
            let stream_index = (first + k) % n;
            let addr = self.free.pop().expect("count <= free");
            // SAFETY: the frame came off the free list: this generator owns it.
            let buf = unsafe { self.tx_umem.frame_mut(addr) };
            let stream = &mut self.streams[stream_index];
            write_packet(buf, &self.ends, stream, stream_index, now);
            addrs.push((
                addr,
                stream_index,
                HEADERS_LEN + RTP_HEADER_LEN + PAYLOAD_LEN,
            ));
        }
        // SRTP: protect the RTP part of every frame whose stream has a context, in one batch.
        let mut guards = Vec::new();
        let mut contexts: Vec<&mut Context> = Vec::new();
        let mut owners: Vec<usize> = Vec::new();
        for (_, stream_index, _) in &addrs {
            if let Some(srtp) = &self.streams[*stream_index].spec.srtp {
                if !owners.contains(stream_index) {
                    owners.push(*stream_index);
                    guards.push(
                        srtp.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner),
                    );
                }
            }
        }
        for guard in &mut guards {
            contexts.push(&mut **guard);
        }
        if !contexts.is_empty() {
            let umem = &self.tx_umem;
            let mut batch: Vec<BatchPacket<'_>> = Vec::with_capacity(count);
            let mut members = Vec::with_capacity(count);
            for (i, (addr, stream_index, _)) in addrs.iter().enumerate() {
                if let Some(position) = owners.iter().position(|o| o == stream_index) {
                    // SAFETY: distinct frames owned by this generator.
                    let buf = unsafe { umem.frame_mut(addr + HEADERS_LEN as u64) };
                    batch.push(BatchPacket::new(
                        position,
                        buf,
                        RTP_HEADER_LEN + PAYLOAD_LEN,
                    ));
                    members.push(i);
                }
            }
            self.srtp.protect_rtp(&mut contexts, &mut batch);
            for (packet, &i) in batch.iter().zip(&members) {
                if let Ok(len) = packet.result {
                    addrs[i].2 = HEADERS_LEN + len;
                }
            }
        }
        drop(contexts);
        drop(guards);
        for (i, (addr, stream_index, len)) in addrs.iter().enumerate() {
            // SAFETY: as above.
            let buf = unsafe { self.tx_umem.frame_mut(*addr) };
            finish_headers(buf, &self.ends, &self.streams[*stream_index].spec, *len);
            self.tx.tx.write(
                u32::try_from(i).unwrap_or(0),
                libc::xdp_desc {
                    addr: *addr,
                    len: u32::try_from(*len).unwrap_or(0),
                    options: 0,
                },
            );
        }
        self.tx.tx.submit(u32::try_from(count).unwrap_or(0));
        let _ = self.tx.kick_tx();
        count
    }

    /// Takes completed TX frames back.
    fn reclaim(&mut self) {
        let done = self.tx.completion.available(RING);
        for i in 0..done {
            let addr = self.tx.completion.read(i);
            self.free.push(self.tx_umem.frame_base(addr));
        }
        self.tx.completion.release(done);
    }

    /// Drains the RX ring into `report` and gives the frames back to the fill ring; returns
    /// the frames read.
    fn receive(&mut self, report: &mut StepReport) -> u32 {
        let ready = self.rx.rx.available(RING);
        if ready > 0 {
            let now = self.now_ns();
            for i in 0..ready {
                let desc = self.rx.rx.read(i);
                // SAFETY: the frame came off the RX ring: this generator owns it until it is
                // given back to the fill ring below.
                let buf = unsafe { &mut self.rx_umem.frame_mut(desc.addr)[..desc.len as usize] };
                match read_packet(buf, &self.streams) {
                    Some(sent_ns) => {
                        report.received += 1;
                        report.latency.record(now.saturating_sub(sent_ns));
                    }
                    None => report.foreign += 1,
                }
                self.rx_spare.push(self.rx_umem.frame_base(desc.addr));
            }
            self.rx.rx.release(ready);
        }
        if !self.rx_spare.is_empty() {
            let want = u32::try_from(self.rx_spare.len()).unwrap_or(u32::MAX);
            let room = self.rx.fill.free(want);
            for i in 0..room {
                let addr = self.rx_spare.pop().expect("room <= spare");
                self.rx.fill.write(i, addr);
            }
            self.rx.fill.submit(room);
        }
        ready
    }

    /// Sends at `pps` (round-robin over the streams) for `duration`, then keeps receiving
    /// for `drain`.
    pub fn step(&mut self, pps: u64, duration: Duration, drain: Duration) -> StepReport {
        let mut report = StepReport {
            offered_pps: pps,
            sent: 0,
            received: 0,
            foreign: 0,
            elapsed: Duration::ZERO,
            latency: Histogram::new(),
            stalls: 0,
        };
        let start = Instant::now();
        let mut next_stream = 0;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= duration {
                break;
            }
            let due = u64::try_from(u128::from(pps) * elapsed.as_nanos() / 1_000_000_000)
                .unwrap_or(u64::MAX)
                .saturating_sub(report.sent);
            if due > 0 {
                let want = usize::try_from(due).unwrap_or(TX_BATCH).min(TX_BATCH);
                let sent = self.transmit(next_stream, want);
                if sent < want {
                    report.stalls += 1;
                }
                next_stream = (next_stream + sent) % self.streams.len();
                report.sent += sent as u64;
            }
            self.receive(&mut report);
        }
        report.elapsed = start.elapsed();
        let drain_until = Instant::now() + drain;
        while Instant::now() < drain_until {
            self.reclaim();
            if self.receive(&mut report) == 0 {
                std::hint::spin_loop();
            }
        }
        report
    }
}

/// Writes the RTP header and payload of the next packet of `stream` (headers come later).
fn write_packet(buf: &mut [u8], _ends: &Ends, stream: &mut Stream, index: usize, now_ns: u64) {
    let rtp = &mut buf[HEADERS_LEN..HEADERS_LEN + RTP_HEADER_LEN + PAYLOAD_LEN];
    rtp[0] = 0x80;
    rtp[1] = 0x00;
    rtp[2..4].copy_from_slice(&stream.seq.to_be_bytes());
    rtp[4..8].copy_from_slice(&stream.timestamp.to_be_bytes());
    let ssrc = SSRC_BASE + u32::try_from(index).unwrap_or(0);
    rtp[8..12].copy_from_slice(&ssrc.to_be_bytes());
    rtp[12..20].copy_from_slice(&now_ns.to_be_bytes());
    rtp[20..24].copy_from_slice(&u32::try_from(index).unwrap_or(0).to_be_bytes());
    rtp[24..].fill(0xd5);
    stream.seq = stream.seq.wrapping_add(1);
    stream.timestamp = stream.timestamp.wrapping_add(160);
}

/// Writes Ethernet, IPv4 and UDP headers for a UDP payload of `len - HEADERS_LEN` bytes, with
/// correct checksums.
fn finish_headers(buf: &mut [u8], ends: &Ends, spec: &StreamSpec, len: usize) {
    buf[0..6].copy_from_slice(&ends.next_hop_mac);
    buf[6..12].copy_from_slice(&ends.tx_mac);
    buf[12..14].copy_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(len - 14).unwrap_or(u16::MAX);
    let ip = &mut buf[14..34];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..8].copy_from_slice(&[0, 0, 0x40, 0]);
    ip[8] = 64;
    ip[9] = 17;
    let udp_len = u16::try_from(len - 34).unwrap_or(u16::MAX);
    buf[38..40].copy_from_slice(&udp_len.to_be_bytes());
    let parsed = frame::Parsed {
        l3: 14,
        l4: 34,
        v6: false,
        source: SocketAddr::V4(spec.source),
        destination: SocketAddr::V4(spec.destination),
        payload_len: len - HEADERS_LEN,
    };
    // rewrite() fills addresses, ports, lengths and both checksums.
    let _ = frame::rewrite(
        &mut buf[..len],
        &parsed,
        len - HEADERS_LEN,
        (ends.next_hop_mac, ends.tx_mac),
        SocketAddr::V4(spec.source),
        SocketAddr::V4(spec.destination),
    );
}

/// The send time of a received packet of one of `streams` streams, if it is one.
fn read_packet(buf: &mut [u8], streams: &[Stream]) -> Option<u64> {
    let parsed = frame::parse(buf).ok()?;
    if !matches!(parsed.destination.ip(), IpAddr::V4(_)) {
        return None;
    }
    let rtp = buf.get_mut(parsed.payload()..parsed.payload() + parsed.payload_len)?;
    if rtp.len() < RTP_HEADER_LEN + 12 {
        return None;
    }
    // The SSRC is in the clear with SRTP too.
    let ssrc = u32::from_be_bytes(rtp[8..12].try_into().ok()?);
    let index = ssrc.checked_sub(SSRC_BASE)? as usize;
    let stream = streams.get(index)?;
    if let Some(srtp) = &stream.spec.rx_srtp {
        let len = rtp.len();
        srtp.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unprotect_rtp(rtp, len)
            .ok()?;
    }
    Some(u64::from_be_bytes(rtp[12..20].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn a_built_packet_parses_back_with_its_send_time() {
        let ends = Ends {
            tx_ifindex: 1,
            tx_mac: [2, 0, 0, 0, 0, 1],
            next_hop_mac: [2, 0, 0, 0, 0, 2],
            rx_ifindex: 2,
        };
        let spec = StreamSpec {
            source: "198.18.0.2:40000".parse().unwrap(),
            destination: "198.18.0.1:30000".parse().unwrap(),
            srtp: None,
            rx_srtp: None,
        };
        let mut stream = Stream {
            spec: spec.clone(),
            seq: 7,
            timestamp: 0,
        };
        let mut buf = vec![0u8; 2048];
        write_packet(&mut buf, &ends, &mut stream, 3, 123_456);
        let len = HEADERS_LEN + RTP_HEADER_LEN + PAYLOAD_LEN;
        finish_headers(&mut buf, &ends, &spec, len);
        assert_eq!(frame::checksum(&buf[14..34]), 0, "IPv4 header checksum");
        let streams = |n: usize, rx_srtp: Option<Arc<Mutex<Context>>>| -> Vec<Stream> {
            (0..n)
                .map(|_| Stream {
                    spec: StreamSpec {
                        rx_srtp: rx_srtp.clone(),
                        ..spec.clone()
                    },
                    seq: 0,
                    timestamp: 0,
                })
                .collect()
        };
        assert_eq!(
            read_packet(&mut buf.clone()[..len], &streams(4, None)),
            Some(123_456)
        );
        assert_eq!(
            read_packet(&mut buf.clone()[..len], &streams(3, None)),
            None,
            "stream 3 of 3 does not exist"
        );
        assert_eq!(stream.seq, 8);

        // What a relay delivers as SRTP is unprotected with the stream's receive context
        // (the SSRC, in the clear, picks the stream); a forged tag is not counted.
        let key =
            srtp::sdes::CryptoAttribute::generate(1, srtp::Suite::AesCm128HmacSha1_80).unwrap();
        let mut tx = Context::new(&crate::loadgen::policy(&key, None).unwrap()).unwrap();
        let rx = Arc::new(Mutex::new(
            Context::new(&crate::loadgen::policy(&key, Some(64)).unwrap()).unwrap(),
        ));
        let mut protected = buf.clone();
        let rtp_len = RTP_HEADER_LEN + PAYLOAD_LEN;
        let srtp_len = tx
            .protect_rtp(&mut protected[HEADERS_LEN..], rtp_len)
            .unwrap();
        let total = HEADERS_LEN + srtp_len;
        finish_headers(&mut protected, &ends, &spec, total);
        let mut forged = protected.clone();
        forged[total - 1] ^= 1;
        assert_eq!(
            read_packet(&mut forged[..total], &streams(4, Some(Arc::clone(&rx)))),
            None
        );
        assert_eq!(
            read_packet(&mut protected[..total], &streams(4, Some(rx))),
            Some(123_456)
        );
        let parsed = frame::parse(&buf[..len]).unwrap();
        assert_eq!(parsed.destination, "198.18.0.1:30000".parse().unwrap());
        assert_eq!(parsed.payload_len, RTP_HEADER_LEN + PAYLOAD_LEN);
    }
}
