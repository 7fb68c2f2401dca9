//! One datapath worker thread: its sessions, its sockets, the receive-transform-send loop.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    sync::{atomic::Ordering::Relaxed, mpsc, Arc},
    time::Instant,
};

use srtp::{Batch, BatchPacket, Context};
use tracing::{debug, warn};

use super::{
    latch::Latch,
    stats::{unix_ms, DropReason, Latched, LegStats},
    sys::{from_raw, Epoll, EventFd, PacketBatch, SLOT_LEN},
    Command, LegCrypto, LegProgram, LegSettings,
};

/// Epoll token of the wake-up eventfd.
pub const WAKE_TOKEN: u64 = u64::MAX;

/// What a socket carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SocketKind {
    Rtp,
    Rtcp,
    /// RTP and RTCP on one port (RFC 5761).
    Muxed,
}

/// Where the control plane registered one socket of a session being installed.
#[derive(Clone, Copy, Debug)]
pub(super) struct SlotAssignment {
    /// Its epoll token: the index in the worker's socket table.
    pub slot: usize,
    /// The leg (index in the program) it belongs to.
    pub leg: usize,
    /// What it carries.
    pub kind: SocketKind,
}

/// One slot of the socket table.
#[derive(Default)]
enum Slot {
    #[default]
    Empty,
    /// A socket of a session.
    Live(SocketEntry),
    /// A socket of an ended session, still registered: what arrives is drained and dropped.
    Parked(Arc<UdpSocket>),
}

impl Slot {
    /// A live socket becomes parked; anything else stays as it is.
    fn park(&mut self) {
        if let Self::Live(entry) = std::mem::take(self) {
            *self = Self::Parked(entry.socket);
        }
    }
}

struct SocketEntry {
    session: u64,
    leg: usize,
    kind: SocketKind,
    socket: Arc<UdpSocket>,
}

struct LegRt {
    id: String,
    stats: Arc<LegStats>,
    rtp_socket: Arc<UdpSocket>,
    rtcp_socket: Option<Arc<UdpSocket>>,
    settings: LegSettings,
    rtp_latch: Latch,
    rtcp_latch: Latch,
    crypto: Arc<LegCrypto>,
}

impl LegRt {
    fn latch_mut(&mut self, rtcp: bool) -> &mut Latch {
        if rtcp && !self.settings.rtcp_mux {
            &mut self.rtcp_latch
        } else {
            &mut self.rtp_latch
        }
    }

    fn latch(&self, rtcp: bool) -> &Latch {
        if rtcp && !self.settings.rtcp_mux {
            &self.rtcp_latch
        } else {
            &self.rtp_latch
        }
    }

    fn socket(&self, rtcp: bool) -> &UdpSocket {
        match (&self.rtcp_socket, rtcp) {
            (Some(socket), true) => socket,
            _ => &self.rtp_socket,
        }
    }

    fn publish_latch(&self) {
        let rtcp = if self.settings.rtcp_mux {
            &self.rtp_latch
        } else {
            &self.rtcp_latch
        };
        self.stats.set_latched(Latched {
            rtp: self.rtp_latch.learned(),
            rtcp: rtcp.learned(),
            rtp_locks_at: self.rtp_latch.locks_at(),
            rtcp_locks_at: rtcp.locks_at(),
        });
    }
}

struct SessionRt {
    legs: Vec<LegRt>,
    /// Socket table slots of this session.
    slots: Vec<usize>,
}

/// Per-packet scratch of one batch.
#[derive(Clone, Copy)]
struct PacketState {
    rtcp: bool,
    source: Option<SocketAddr>,
    /// Still going (not dropped).
    alive: bool,
}

/// A datapath worker.
pub struct Worker {
    epoll: Arc<Epoll>,
    wake: Arc<EventFd>,
    commands: mpsc::Receiver<Command>,
    batch_size: usize,
    sessions: HashMap<u64, SessionRt>,
    /// By slot (epoll token); the control plane assigns slots (`SlotAssignment`).
    sockets: Vec<Slot>,
    packets: PacketBatch,
    states: Vec<PacketState>,
    srtp: Batch,
    sends: Vec<(usize, SocketAddr)>,
}

impl Worker {
    /// A worker over `epoll` (which already watches `wake` as [`WAKE_TOKEN`]; the control
    /// plane adds and removes the media sockets).
    pub fn new(
        epoll: Arc<Epoll>,
        wake: Arc<EventFd>,
        commands: mpsc::Receiver<Command>,
        batch_size: usize,
    ) -> Self {
        Self {
            epoll,
            wake,
            commands,
            batch_size,
            sessions: HashMap::new(),
            sockets: Vec::new(),
            packets: PacketBatch::new(batch_size),
            states: vec![
                PacketState {
                    rtcp: false,
                    source: None,
                    alive: false,
                };
                batch_size
            ],
            srtp: Batch::with_capacity(batch_size, SLOT_LEN),
            sends: Vec::with_capacity(batch_size),
        }
    }

    /// Runs until a shutdown command.
    pub fn run(&mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let ready = match self.epoll.wait(&mut events, 100) {
                Ok(n) => n,
                Err(e) => {
                    warn!(%e, "epoll_wait failed");
                    0
                }
            };
            // Programs queued without a wake-up first: an event may be the first packet of a
            // session installed since the last turn.
            if !self.apply_commands() {
                return;
            }
            for event in &events[..ready] {
                let token = event.u64;
                if token == WAKE_TOKEN {
                    self.wake.drain();
                } else if let Ok(slot) = usize::try_from(token) {
                    self.service(slot);
                }
            }
        }
    }

    /// Applies pending commands; `false` on shutdown.
    fn apply_commands(&mut self) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Install {
                    session,
                    legs,
                    slots,
                } => self.install(session, legs, &slots),
                Command::Remove { session } => self.remove(session),
                Command::Forget { slot } => {
                    if let Some(entry) = self.sockets.get_mut(slot) {
                        *entry = Slot::Empty;
                    }
                }
                Command::Shutdown => return false,
            }
        }
        true
    }

    fn install(&mut self, session: u64, programs: Vec<LegProgram>, assigned: &[SlotAssignment]) {
        let old = self.sessions.remove(&session);
        let mut old_legs: HashMap<String, LegRt> = HashMap::new();
        let mut old_slots = Vec::new();
        if let Some(old) = old {
            old_slots = old.slots;
            for leg in old.legs {
                old_legs.insert(leg.id.clone(), leg);
            }
        }
        let mut legs = Vec::with_capacity(programs.len());
        for program in programs {
            let previous = old_legs.remove(&program.id);
            legs.push(Self::leg_runtime(program, previous));
        }
        // The socket table: old slots not reassigned are parked, the assigned ones are set (a
        // kept socket may now belong to another leg index).
        for slot in old_slots {
            if assigned.iter().all(|a| a.slot != slot) {
                if let Some(entry) = self.sockets.get_mut(slot) {
                    entry.park();
                }
            }
        }
        let mut slots = Vec::with_capacity(assigned.len());
        for assignment in assigned {
            let Some(leg) = legs.get(assignment.leg) else {
                continue;
            };
            let socket = match (assignment.kind, &leg.rtcp_socket) {
                (SocketKind::Rtcp, Some(rtcp)) => rtcp,
                (SocketKind::Rtcp, None) => continue,
                _ => &leg.rtp_socket,
            };
            if self.sockets.len() <= assignment.slot {
                self.sockets.resize_with(assignment.slot + 1, Slot::default);
            }
            self.sockets[assignment.slot] = Slot::Live(SocketEntry {
                session,
                leg: assignment.leg,
                kind: assignment.kind,
                socket: Arc::clone(socket),
            });
            slots.push(assignment.slot);
        }
        debug!(session, legs = legs.len(), "session installed");
        self.sessions.insert(session, SessionRt { legs, slots });
    }

    fn leg_runtime(program: LegProgram, previous: Option<LegRt>) -> LegRt {
        let settings = program.settings;
        let rtp_latch = Latch::new(
            settings.latch,
            settings.strict_source,
            settings.latch_window,
            settings.remote_rtp,
        );
        let rtcp_latch = Latch::new(
            settings.latch,
            settings.strict_source,
            settings.latch_window,
            settings.remote_rtcp,
        );
        let (rtp_latch, rtcp_latch) = if let Some(old) = previous {
            (
                if rtp_latch.same_settings(&old.rtp_latch) {
                    rtp_latch.carrying(&old.rtp_latch)
                } else {
                    rtp_latch
                },
                if rtcp_latch.same_settings(&old.rtcp_latch) {
                    rtcp_latch.carrying(&old.rtcp_latch)
                } else {
                    rtcp_latch
                },
            )
        } else {
            let now = Instant::now();
            let (rtp, rtcp) = program.learned;
            (rtp_latch.seeded(rtp, now), rtcp_latch.seeded(rtcp, now))
        };
        let leg = LegRt {
            id: program.id,
            stats: program.stats,
            rtp_socket: program.rtp_socket,
            rtcp_socket: program.rtcp_socket,
            settings,
            rtp_latch,
            rtcp_latch,
            crypto: program.crypto,
        };
        leg.publish_latch();
        leg
    }

    /// Forgets a session; its sockets stay registered, parked.
    fn remove(&mut self, session: u64) {
        if let Some(old) = self.sessions.remove(&session) {
            for slot in old.slots {
                if let Some(entry) = self.sockets.get_mut(slot) {
                    entry.park();
                }
            }
            debug!(session, "session removed");
        }
    }

    /// Reads one batch from the socket in `slot` and forwards it.
    fn service(&mut self, slot: usize) {
        let entry = match self.sockets.get(slot) {
            Some(Slot::Live(entry)) => entry,
            Some(Slot::Parked(socket)) => {
                // Strays to a port between calls: read and dropped (one batch per turn).
                let socket = Arc::clone(socket);
                if let Ok(n) = self.packets.recv(&socket, self.batch_size) {
                    if n > 0 {
                        debug!(
                            slot,
                            packets = n,
                            "stray packets to a parked media socket dropped"
                        );
                    }
                }
                return;
            }
            _ => return,
        };
        let (session_key, leg_index, kind) = (entry.session, entry.leg, entry.kind);
        let socket = Arc::clone(&entry.socket);
        let received = match self.packets.recv(&socket, self.batch_size) {
            Ok(n) => n,
            Err(e) => {
                debug!(%e, "recvmmsg failed");
                return;
            }
        };
        if received == 0 {
            return;
        }
        let Some(session) = self.sessions.get_mut(&session_key) else {
            return;
        };
        let now = Instant::now();
        forward_batch(
            session,
            leg_index,
            kind,
            received,
            now,
            &mut self.packets,
            &mut self.states,
            &mut self.srtp,
            &mut self.sends,
        );
    }
}

/// RFC 5761 §4: on a muxed port, RTCP packet types 192-223 sit where RTP's marker and payload
/// type are; RTP payload types 64-95 are not used there.
fn looks_like_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 2 && (192..=223).contains(&packet[1])
}

/// Classifies each packet (RTP or RTCP), drops the malformed and, on strict legs, those from
/// the wrong source, before any crypto is spent on them.
fn classify_and_admit(
    leg: &LegRt,
    kind: SocketKind,
    received: usize,
    now: Instant,
    packets: &PacketBatch,
    states: &mut [PacketState],
) {
    let mut malformed = 0;
    let mut wrong_source = 0;
    for (i, state) in states.iter_mut().enumerate().take(received) {
        let packet = packets.packet(i);
        let rtcp = match kind {
            SocketKind::Rtp => false,
            SocketKind::Rtcp => true,
            SocketKind::Muxed => looks_like_rtcp(packet),
        };
        let minimum = if rtcp { 8 } else { 12 };
        let source = from_raw(&packets.addrs[i]);
        let mut alive = packet.len() >= minimum && packet[0] >> 6 == 2 && source.is_some();
        if !alive {
            malformed += 1;
        } else if let Some(source) = source {
            if !leg.latch(rtcp).admits(source, now) {
                alive = false;
                wrong_source += 1;
            }
        }
        *state = PacketState {
            rtcp,
            source,
            alive,
        };
    }
    if malformed > 0 {
        leg.stats.drop_packet(DropReason::Malformed, malformed);
    }
    if wrong_source > 0 {
        leg.stats.drop_packet(DropReason::WrongSource, wrong_source);
    }
}

/// The whole path of one received batch: count, classify, admit, decrypt, latch, encrypt, send.
#[allow(
    clippy::too_many_arguments,
    reason = "the worker's scratch buffers, split for borrows"
)]
fn forward_batch(
    session: &mut SessionRt,
    from: usize,
    kind: SocketKind,
    received: usize,
    now: Instant,
    packets: &mut PacketBatch,
    states: &mut [PacketState],
    srtp: &mut Batch,
    sends: &mut Vec<(usize, SocketAddr)>,
) {
    let leg = &mut session.legs[from];
    let stats = Arc::clone(&leg.stats);
    let bytes: usize = packets.lens[..received].iter().sum();
    stats.packets_in.fetch_add(received as u64, Relaxed);
    stats.bytes_in.fetch_add(bytes as u64, Relaxed);
    stats.last_packet_unix_ms.store(unix_ms(), Relaxed);

    classify_and_admit(leg, kind, received, now, packets, states);

    // Verify and decrypt: RTP and RTCP in separate batches (they use different transforms).
    if let Some(context) = leg.crypto.inbound().as_mut() {
        for rtcp in [false, true] {
            transform(
                context,
                srtp,
                packets,
                &mut states[..received],
                rtcp,
                false,
                &stats,
            );
        }
    }

    // Latch on what was accepted (authenticated, on SRTP legs).
    let mut moved = false;
    for state in &states[..received] {
        if let (true, Some(source)) = (state.alive, state.source) {
            moved |= leg.latch_mut(state.rtcp).accept(source, now);
        }
    }
    if moved {
        leg.publish_latch();
    }

    // Forward.
    let alive = states[..received].iter().filter(|s| s.alive).count() as u64;
    if alive == 0 {
        return;
    }
    let Some(to) = leg
        .settings
        .forward_to
        .filter(|&to| to < session.legs.len())
    else {
        stats.drop_packet(DropReason::NotForwarded, alive);
        return;
    };
    let target = &session.legs[to];
    let target_stats = Arc::clone(&target.stats);
    if let Some(context) = target.crypto.outbound().as_mut() {
        for rtcp in [false, true] {
            transform(
                context,
                srtp,
                packets,
                &mut states[..received],
                rtcp,
                true,
                &target_stats,
            );
        }
    }
    send_to(target, &stats, received, packets, states, sends);
}

/// Sends the live packets of a batch to `target`'s peer, RTP and RTCP to their destinations.
fn send_to(
    target: &LegRt,
    source_stats: &LegStats,
    received: usize,
    packets: &mut PacketBatch,
    states: &[PacketState],
    sends: &mut Vec<(usize, SocketAddr)>,
) {
    let target_stats = &target.stats;
    for rtcp in [false, true] {
        let Some(destination) = target.latch(rtcp).destination() else {
            let count = states[..received]
                .iter()
                .filter(|s| s.alive && s.rtcp == rtcp)
                .count() as u64;
            if count > 0 {
                source_stats.drop_packet(DropReason::NoRemote, count);
            }
            continue;
        };
        sends.clear();
        sends.extend(
            states[..received]
                .iter()
                .enumerate()
                .filter(|(_, s)| s.alive && s.rtcp == rtcp)
                .map(|(i, _)| (i, destination)),
        );
        if sends.is_empty() {
            continue;
        }
        let sent = packets.send_segmented(target.socket(rtcp), sends);
        let sent_bytes: usize = sends[..sent].iter().map(|&(i, _)| packets.lens[i]).sum();
        target_stats.packets_out.fetch_add(sent as u64, Relaxed);
        target_stats.bytes_out.fetch_add(sent_bytes as u64, Relaxed);
        if sent < sends.len() {
            target_stats.drop_packet(DropReason::SendError, (sends.len() - sent) as u64);
        }
    }
}

/// Runs SRTP over the live packets of one kind (RTP or RTCP) in place, marking failures dead
/// and counting them on `stats`.
fn transform(
    context: &mut Context,
    srtp: &mut Batch,
    packets: &mut PacketBatch,
    states: &mut [PacketState],
    rtcp: bool,
    protect: bool,
    stats: &LegStats,
) {
    let (slots, lens, _) = packets.parts_mut();
    let mut indices = [0usize; 1024];
    let mut count = 0;
    let mut batch: Vec<BatchPacket<'_>> = Vec::with_capacity(states.len());
    for (i, (slot, &len)) in slots
        .iter_mut()
        .zip(lens.iter())
        .enumerate()
        .take(states.len())
    {
        if states[i].alive && states[i].rtcp == rtcp && count < indices.len() {
            indices[count] = i;
            count += 1;
            batch.push(BatchPacket::new(0, &mut slot[..], len));
        }
    }
    if batch.is_empty() {
        return;
    }
    let contexts = std::slice::from_mut(context);
    match (protect, rtcp) {
        (false, false) => srtp.unprotect_rtp(contexts, &mut batch),
        (false, true) => srtp.unprotect_rtcp(contexts, &mut batch),
        (true, false) => srtp.protect_rtp(contexts, &mut batch),
        (true, true) => srtp.protect_rtcp(contexts, &mut batch),
    }
    let results: Vec<Result<usize, srtp::Error>> = batch.into_iter().map(|p| p.result).collect();
    for (k, result) in results.into_iter().enumerate() {
        let i = indices[k];
        match result {
            Ok(len) => lens[i] = len,
            Err(error) => {
                states[i].alive = false;
                stats.count_srtp_error(&error);
            }
        }
    }
}
