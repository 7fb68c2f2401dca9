//! One AF_XDP worker: its UMEM, its sockets, the receive-transform-transmit loop.

use std::{
    collections::HashMap,
    mem::size_of,
    os::fd::AsRawFd,
    sync::{atomic::Ordering::Relaxed, mpsc, Arc, MutexGuard},
    time::{Duration, Instant},
};

use relay_common::{XdpMeta, XDP_META_MAGIC};
use srtp::{Batch, BatchPacket, Context};
use tracing::debug;

use super::{
    frame::{self, Parsed},
    xsk::{RingSizes, Umem, XskSocket, XskStatistics},
    AfXdpError, AfXdpOptions, Command, CryptoFlow, FlowKind, WorkerDrop, WorkerStats,
};
use crate::datapath::{stats::DropReason, sys::EventFd, LegCrypto, LegStats};

/// Bytes per UMEM frame: an MTU-1500 frame plus SRTP's tag and MKI fit after the kernel's
/// 256-byte headroom.
const FRAME_SIZE: u32 = 2048;
/// How long the worker keeps polling its rings after the last frame before it sleeps in
/// poll(2): above a few thousand frames per second it never sleeps.
const SPIN: Duration = Duration::from_micros(200);
/// Frames submitted to a TX ring before a kick is due even while more are being received.
const KICK_BURST: u32 = 32;
/// How often the worker copies its sockets' kernel counters into [`WorkerStats`].
const KERNEL_STATS_PERIOD: Duration = Duration::from_secs(1);
/// Busy polling: how long one receive call may spin in the device's NAPI, and its budget.
const BUSY_POLL_USECS: u32 = 20;
const BUSY_POLL_BUDGET: u32 = 64;
/// Longest sleep (commands also wake the worker through its eventfd).
const POLL_TIMEOUT_MS: i32 = 100;

/// A received frame on its way through the batch.
struct Pending {
    /// UMEM address of the frame's first byte.
    addr: u64,
    flow: Arc<CryptoFlow>,
    parsed: Parsed,
    meta: XdpMeta,
    rtcp: bool,
    /// UDP payload length now (changes with SRTP).
    payload_len: usize,
    alive: bool,
}

/// A worker, built on the starting thread (so setup errors reach the caller) and run on its own.
pub(super) struct Worker {
    // Sockets before the UMEM: they close (and unmap their rings) before it is unmapped.
    sockets: Vec<XskSocket>,
    /// Egress ifindex -> index of this worker's socket on it.
    egress: HashMap<u32, usize>,
    free: Vec<u64>,
    flows: HashMap<u32, Arc<CryptoFlow>>,
    pending: Vec<Pending>,
    /// Per socket: frames to transmit this batch (descriptor, flow, payload length).
    outgoing: Vec<Vec<(libc::xdp_desc, Arc<CryptoFlow>, usize)>>,
    /// Per socket: frames submitted to its TX ring since its last kick.
    unkicked: Vec<u32>,
    /// Busy polling: the worker drives its queues' NAPI with `recvfrom` when its RX rings are
    /// empty.
    busy_poll: bool,
    srtp: Batch,
    ring_size: u32,
    umem: Umem,
}

impl Worker {
    /// Maps the UMEM and binds one socket per (interface, queue) in `assigned`
    /// (`(ifindex, name, queue, slot)`), the first owning the UMEM.
    pub(super) fn build(
        assigned: &[(u32, String, u32, u32)],
        options: &AfXdpOptions,
    ) -> Result<Self, AfXdpError> {
        let ring_size = options.ring_size;
        let sizes = RingSizes {
            rx_tx: ring_size,
            fill_completion: ring_size,
        };
        // Per socket: a full fill ring plus as many again in RX/TX flight.
        let frames = u32::try_from(assigned.len()).unwrap_or(u32::MAX) * ring_size * 2;
        let first = assigned
            .first()
            .map_or((String::new(), 0), |a| (a.1.clone(), a.2));
        let umem = Umem::new(frames.max(1), FRAME_SIZE).map_err(|source| AfXdpError::Socket {
            interface: first.0.clone(),
            queue: first.1,
            source,
        })?;
        let mut sockets: Vec<XskSocket> = Vec::with_capacity(assigned.len());
        for (ifindex, name, queue, _) in assigned {
            let socket = XskSocket::bind(
                &umem,
                sockets.first(),
                *ifindex,
                *queue,
                sizes,
                options.bind,
            )
            .map_err(|source| AfXdpError::Socket {
                interface: name.clone(),
                queue: *queue,
                source,
            })?;
            if options.busy_poll {
                socket
                    .busy_poll(BUSY_POLL_USECS, BUSY_POLL_BUDGET)
                    .map_err(|source| AfXdpError::Socket {
                        interface: name.clone(),
                        queue: *queue,
                        source,
                    })?;
            }
            debug!(
                interface = name,
                queue,
                zero_copy = socket.zero_copy(),
                busy_poll = options.busy_poll,
                "AF_XDP socket bound"
            );
            sockets.push(socket);
        }
        let mut egress = HashMap::new();
        for (i, socket) in sockets.iter().enumerate() {
            egress.entry(socket.ifindex()).or_insert(i);
        }
        let free = (0..umem.frames())
            .rev()
            .map(|i| umem.frame_addr(i))
            .collect();
        let outgoing = sockets
            .iter()
            .map(|_| Vec::with_capacity(options.batch))
            .collect();
        let unkicked = vec![0; sockets.len()];
        let mut worker = Self {
            outgoing,
            unkicked,
            busy_poll: options.busy_poll,
            sockets,
            egress,
            free,
            flows: HashMap::new(),
            pending: Vec::with_capacity(options.batch),
            srtp: Batch::with_capacity(options.batch, FRAME_SIZE as usize),
            ring_size,
            umem,
        };
        worker.refill();
        Ok(worker)
    }

    pub(super) fn sockets(&self) -> &[XskSocket] {
        &self.sockets
    }

    /// How many of its sockets the kernel reports in preferred-busy-polling mode.
    pub(super) fn busy_polling_sockets(&self) -> usize {
        self.sockets
            .iter()
            .filter(|s| s.busy_polling().unwrap_or(false))
            .count()
    }

    pub(super) fn zero_copy(&self) -> bool {
        self.sockets.iter().any(XskSocket::zero_copy)
    }

    /// Runs until a shutdown command.
    pub(super) fn run(
        mut self,
        commands: &mpsc::Receiver<Command>,
        wake: &EventFd,
        stats: &WorkerStats,
        batch: usize,
    ) {
        let batch = u32::try_from(batch.max(1)).unwrap_or(64);
        let mut last_work = Instant::now();
        let mut polls: Vec<libc::pollfd> = self
            .sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        polls.push(libc::pollfd {
            fd: wake.raw(),
            events: libc::POLLIN,
            revents: 0,
        });
        let mut next_kernel_stats = Instant::now();
        loop {
            if !self.apply_commands(commands) {
                self.publish_kernel_stats(stats);
                return;
            }
            let mut received_any = false;
            for s in 0..self.sockets.len() {
                let received = self.sockets[s].rx.available(batch);
                if received == 0 {
                    continue;
                }
                received_any = true;
                self.receive(s, received, stats);
                self.process(stats);
            }
            // Transmit kicks are syscalls (which on veth also wake the receiving end): batch
            // them while frames keep coming, flush as soon as the receive rings are empty.
            // (Holding frames back for a few tens of microseconds to share kicks was measured
            // on veth: no gain in max clean rate, higher latency.)
            self.kick(!received_any, stats);
            let now = Instant::now();
            if now >= next_kernel_stats {
                self.publish_kernel_stats(stats);
                next_kernel_stats = now + KERNEL_STATS_PERIOD;
            }
            let completed = self.complete();
            self.refill();
            if self.busy_poll && !received_any {
                // Nothing on the RX rings: run the devices' receive (NAPI) here.
                for socket in &self.sockets {
                    socket.kick_rx();
                }
            }
            if received_any || completed {
                last_work = now;
                continue;
            }
            // Spin a while after the last frame (waking from poll costs more than a packet),
            // then sleep until a socket or a command wakes the worker; briefly while frames
            // still wait on a TX ring (a device refusing them must not make the worker spin).
            if now.saturating_duration_since(last_work) < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let timeout = if self.unkicked.iter().any(|&n| n > 0) {
                1
            } else {
                POLL_TIMEOUT_MS
            };
            stats.sleeps.fetch_add(1, Relaxed);
            // SAFETY: `polls` is a live array of pollfd of the length passed.
            let rc = unsafe {
                libc::poll(
                    polls.as_mut_ptr(),
                    libc::nfds_t::try_from(polls.len()).unwrap_or(0),
                    timeout,
                )
            };
            if rc > 0 && polls.last().is_some_and(|p| p.revents != 0) {
                wake.drain();
            }
            last_work = Instant::now();
        }
    }

    /// Copies the kernel's counters of this worker's sockets (summed) into `stats`.
    fn publish_kernel_stats(&self, stats: &WorkerStats) {
        let mut sum = XskStatistics::default();
        for socket in &self.sockets {
            match socket.statistics() {
                Ok(s) => {
                    sum.rx_dropped += s.rx_dropped;
                    sum.rx_invalid_descs += s.rx_invalid_descs;
                    sum.tx_invalid_descs += s.tx_invalid_descs;
                    sum.rx_ring_full += s.rx_ring_full;
                    sum.rx_fill_ring_empty_descs += s.rx_fill_ring_empty_descs;
                }
                Err(e) => debug!(%e, ifindex = socket.ifindex(), "XDP_STATISTICS failed"),
            }
        }
        stats.kernel.publish(&sum);
    }

    /// Kicks the TX rings holding frames not yet kicked: all of them when `flush`, else those
    /// with a full burst waiting.
    fn kick(&mut self, flush: bool, stats: &WorkerStats) {
        for (socket, unkicked) in self.sockets.iter_mut().zip(self.unkicked.iter_mut()) {
            if *unkicked == 0 || (!flush && *unkicked < KICK_BURST) {
                continue;
            }
            // Copy mode transmits only when kicked; zero-copy when the driver asks.
            if socket.tx.needs_wakeup() || !socket.zero_copy() {
                stats.tx_kicks.fetch_add(1, Relaxed);
                if let Err(e) = socket.kick_tx() {
                    debug!(%e, ifindex = socket.ifindex(), "AF_XDP transmit kick failed");
                }
                // One kick transmits a bounded number of frames (the skb budget in copy
                // mode) and the device may refuse some: what the kernel left on the ring is
                // kicked again on the next turn instead of waiting for new frames.
                *unkicked = socket.tx.outstanding();
            } else {
                *unkicked = 0;
            }
        }
    }

    /// Applies pending commands; `false` on shutdown.
    fn apply_commands(&mut self, commands: &mpsc::Receiver<Command>) -> bool {
        loop {
            match commands.try_recv() {
                Ok(Command::Insert { id, flow }) => {
                    self.flows.insert(id, flow);
                }
                Ok(Command::Remove { id }) => {
                    self.flows.remove(&id);
                }
                Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    /// Gives free frames to every fill ring, and wakes the kernel where it asks.
    fn refill(&mut self) {
        for socket in &mut self.sockets {
            let want = u32::try_from(self.free.len())
                .unwrap_or(u32::MAX)
                .min(self.ring_size);
            if want == 0 {
                break;
            }
            let room = socket.fill.free(want);
            for i in 0..room {
                let addr = self.free.pop().expect("room <= free frames");
                socket.fill.write(i, addr);
            }
            if room > 0 {
                socket.fill.submit(room);
                if socket.fill.needs_wakeup() {
                    socket.kick_rx();
                }
            }
        }
    }

    /// Takes transmitted frames back from the completion rings; whether any came back.
    fn complete(&mut self) -> bool {
        let mut any = false;
        for socket in &mut self.sockets {
            let done = socket.completion.available(self.ring_size);
            for i in 0..done {
                let addr = socket.completion.read(i);
                self.free.push(self.umem.frame_base(addr));
            }
            if done > 0 {
                socket.completion.release(done);
                any = true;
            }
        }
        any
    }

    /// Reads `count` frames off socket `s`'s RX ring into `pending` (dropping what is not a
    /// served flow's).
    fn receive(&mut self, s: usize, count: u32, stats: &WorkerStats) {
        stats.rx_frames.fetch_add(u64::from(count), Relaxed);
        stats.batches.fetch_add(1, Relaxed);
        self.pending.clear();
        for i in 0..count {
            let desc = self.sockets[s].rx.read(i);
            let (addr, len) = (desc.addr, desc.len as usize);
            if !self.umem.contains(addr) || len > self.umem.room(addr) {
                // The kernel never hands out such a descriptor; do not touch memory for it.
                stats.drop_frames(WorkerDrop::BadMetadata, 1);
                continue;
            }
            match self.admit(addr, len) {
                Ok(pending) => self.pending.push(pending),
                Err(reason) => {
                    if let Some(reason) = reason {
                        stats.drop_frames(reason, 1);
                    }
                    self.free.push(self.umem.frame_base(addr));
                }
            }
        }
        self.sockets[s].rx.release(count);
    }

    /// Checks one received frame: metadata, flow, headers, RTP/RTCP shape. `Err(None)` when
    /// the drop was counted on a leg.
    fn admit(&self, addr: u64, len: usize) -> Result<Pending, Option<WorkerDrop>> {
        // SAFETY: the frame came off the RX ring, so this worker owns it; the bytes are read.
        let meta = unsafe { self.umem.before(addr, size_of::<XdpMeta>()) }
            .map(|bytes| {
                // SAFETY: `bytes` holds size_of::<XdpMeta>() bytes; XdpMeta is plain old data.
                unsafe { bytes.as_ptr().cast::<XdpMeta>().read_unaligned() }
            })
            .filter(|m| m.magic == XDP_META_MAGIC)
            .ok_or(Some(WorkerDrop::BadMetadata))?;
        let flow = self
            .flows
            .get(&meta.flow_id)
            .ok_or(Some(WorkerDrop::UnknownFlow))?;
        // SAFETY: as above; the slice is dropped before any other access to this frame.
        let bytes = unsafe { &self.umem.frame_mut(addr)[..len] };
        let Ok(parsed) = frame::parse(bytes) else {
            flow.source_stats.drop_packet(DropReason::Malformed, 1);
            return Err(None);
        };
        if parsed.destination != flow.local {
            return Err(Some(WorkerDrop::StaleFlow));
        }
        let payload = &bytes[parsed.payload()..parsed.payload() + parsed.payload_len];
        let rtcp = match flow.kind {
            FlowKind::Rtp => false,
            FlowKind::Rtcp => true,
            // RFC 5761 section 4: RTCP packet types 192-223 sit where RTP's marker and type are.
            FlowKind::Muxed => payload.len() >= 2 && (192..=223).contains(&payload[1]),
        };
        let minimum = if rtcp { 8 } else { 12 };
        if payload.len() < minimum || payload[0] >> 6 != 2 {
            flow.source_stats.drop_packet(DropReason::Malformed, 1);
            return Err(None);
        }
        Ok(Pending {
            addr,
            flow: Arc::clone(flow),
            payload_len: parsed.payload_len,
            parsed,
            meta,
            rtcp,
            alive: true,
        })
    }

    /// Decrypts, encrypts, rewrites and transmits the pending frames.
    fn process(&mut self, stats: &WorkerStats) {
        if self.pending.is_empty() {
            return;
        }
        for protect in [false, true] {
            self.transform(protect);
        }
        self.transmit(stats);
    }

    /// Runs SRTP over the live pending frames whose flow has a context for this direction:
    /// inbound contexts of the receiving legs (`protect = false`) or outbound contexts of the
    /// target legs. Each context is locked once, in address order (so workers never deadlock),
    /// and every frame of the batch goes through the engine in two calls (RTP, RTCP).
    fn transform(&mut self, protect: bool) {
        let crypto_of = |p: &Pending| -> Arc<LegCrypto> {
            if protect {
                Arc::clone(&p.flow.target_crypto)
            } else {
                Arc::clone(&p.flow.source_crypto)
            }
        };
        let mut legs: Vec<Arc<LegCrypto>> = self
            .pending
            .iter()
            .filter(|p| p.alive)
            .map(crypto_of)
            .collect();
        legs.sort_by_key(Arc::as_ptr);
        legs.dedup_by_key(|c| Arc::as_ptr(c));
        let mut guards: Vec<MutexGuard<'_, Option<Context>>> = legs
            .iter()
            .map(|c| if protect { c.outbound() } else { c.inbound() })
            .collect();
        // Position of each leg's context among those that have one.
        let mut position = Vec::with_capacity(guards.len());
        let mut next = 0;
        for guard in &guards {
            position.push(guard.is_some().then(|| {
                next += 1;
                next - 1
            }));
        }
        if next == 0 {
            return;
        }
        let mut contexts: Vec<&mut Context> = guards
            .iter_mut()
            .filter_map(|guard| guard.as_mut())
            .collect();
        let umem = &self.umem;
        for rtcp in [false, true] {
            let mut batch: Vec<BatchPacket<'_>> = Vec::with_capacity(self.pending.len());
            let mut members: Vec<usize> = Vec::with_capacity(self.pending.len());
            for (i, p) in self.pending.iter().enumerate() {
                if !p.alive || p.rtcp != rtcp {
                    continue;
                }
                let leg = if protect {
                    Arc::as_ptr(&p.flow.target_crypto)
                } else {
                    Arc::as_ptr(&p.flow.source_crypto)
                };
                let Ok(at) = legs.binary_search_by_key(&leg, Arc::as_ptr) else {
                    continue;
                };
                let Some(context) = position[at] else {
                    continue;
                };
                // SAFETY: every pending frame is a distinct frame this worker owns (taken off
                // the RX ring and not yet given back), so the slices do not overlap.
                let buf = unsafe { umem.frame_mut(p.addr + p.parsed.payload() as u64) };
                batch.push(BatchPacket::new(context, buf, p.payload_len));
                members.push(i);
            }
            if batch.is_empty() {
                continue;
            }
            match (protect, rtcp) {
                (false, false) => self.srtp.unprotect_rtp(&mut contexts, &mut batch),
                (false, true) => self.srtp.unprotect_rtcp(&mut contexts, &mut batch),
                (true, false) => self.srtp.protect_rtp(&mut contexts, &mut batch),
                (true, true) => self.srtp.protect_rtcp(&mut contexts, &mut batch),
            }
            let results: Vec<Result<usize, srtp::Error>> =
                batch.into_iter().map(|packet| packet.result).collect();
            for (result, &i) in results.into_iter().zip(&members) {
                let p = &mut self.pending[i];
                match result {
                    Ok(len) => p.payload_len = len,
                    Err(error) => {
                        p.alive = false;
                        let stats = if protect {
                            &p.flow.target_stats
                        } else {
                            &p.flow.source_stats
                        };
                        stats.count_srtp_error(&error);
                    }
                }
            }
        }
    }

    /// Rewrites the live frames for their egress and puts them on the egress sockets' TX
    /// rings (one publication per ring per batch); every other frame goes back to the free
    /// list.
    fn transmit(&mut self, stats: &WorkerStats) {
        for p in self.pending.drain(..) {
            let base = self.umem.frame_base(p.addr);
            if !p.alive {
                self.free.push(base);
                continue;
            }
            let Some(&s) = self.egress.get(&p.meta.egress_ifindex) else {
                stats.drop_frames(WorkerDrop::NoEgressSocket, 1);
                p.flow.target_stats.drop_packet(DropReason::SendError, 1);
                self.free.push(base);
                continue;
            };
            // SAFETY: this worker owns the frame; no other slice of it is live.
            let buf = unsafe { self.umem.frame_mut(p.addr) };
            let rewritten = frame::rewrite(
                buf,
                &p.parsed,
                p.payload_len,
                (p.meta.dst_mac, p.meta.src_mac),
                p.flow.out_src,
                p.flow.out_dst,
            );
            let Ok(len) = rewritten else {
                p.flow.target_stats.drop_packet(DropReason::SendError, 1);
                self.free.push(base);
                continue;
            };
            let desc = libc::xdp_desc {
                addr: p.addr,
                len: u32::try_from(len).unwrap_or(0),
                options: 0,
            };
            self.outgoing[s].push((desc, p.flow, p.payload_len));
        }
        for (s, outgoing) in self.outgoing.iter_mut().enumerate() {
            if outgoing.is_empty() {
                continue;
            }
            let socket = &mut self.sockets[s];
            let want = u32::try_from(outgoing.len()).unwrap_or(u32::MAX);
            let room = socket.tx.free(want);
            for (i, (desc, flow, payload_len)) in outgoing.drain(..).enumerate() {
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                if i < room {
                    socket.tx.write(i, desc);
                    let target: &LegStats = &flow.target_stats;
                    target.packets_out.fetch_add(1, Relaxed);
                    target.bytes_out.fetch_add(payload_len as u64, Relaxed);
                } else {
                    stats.drop_frames(WorkerDrop::TxRingFull, 1);
                    flow.target_stats.drop_packet(DropReason::SendError, 1);
                    self.free.push(self.umem.frame_base(desc.addr));
                }
            }
            if room > 0 {
                socket.tx.submit(room);
                stats.tx_frames.fetch_add(u64::from(room), Relaxed);
                self.unkicked[s] += room;
            }
        }
    }
}
