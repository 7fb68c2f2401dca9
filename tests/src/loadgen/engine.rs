//! The traffic engine: a sender thread that paces every stream and, on each tick, protects each
//! stream's due SRTP packets in one [`srtp::Batch`] and sends them with one `sendmmsg` on the
//! stream's socket,
//! and a receiver thread that drains ready sockets with `recvmmsg`, unprotects SRTP in batches,
//! verifies every packet and tallies loss, order and latency.
//!
//! ```text
//!            sender thread (--cpu)                      receiver thread (--rx-cpu)
//!  A socket ──SRTP──> relay A-leg ──RTP──> B socket ──> verify, track, latency  (a_to_b)
//!  B socket ──RTP───> relay B-leg ──SRTP─> A socket ──> unprotect, verify, ...  (b_to_a)
//! ```
//!
//! Both threads read one clock (`Instant`, `CLOCK_MONOTONIC`) relative to a shared start, so a
//! packet's one-way latency is its receive time minus the send time written in its payload.
//!
//! A drive runs one or more phases back to back on the same streams ([`PhasePlan`]): the pacer
//! changes rate at a phase boundary, and sequence numbers, packet indices and SRTP contexts run
//! on. Each phase is tallied on its own (a packet belongs to the phase of its index), and the
//! packets due in a final window of the last phase are counted per stream on both sides.

use std::{
    net::UdpSocket,
    ops::Range,
    os::fd::AsRawFd,
    slice,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use srtp::{Batch, BatchPacket, Context};

use super::{
    error::LoadgenError,
    net::{pin_current_thread, Epoll, MmsgReceiver, MmsgSender, SLOT},
    pacer::{Phase, PhasePlan, NANOS_PER_SEC},
    payload::{self, Direction, StreamIdentity},
    stats::{ReceiveLedger, ReceiveTally, SendTally, Tallies, WindowCounter},
};

/// Most packets of one stream built, protected and sent together (one `sendmmsg`).
const POOL: usize = 32;
/// How long the receiver waits in `epoll_wait` before checking whether to stop.
const EPOLL_TIMEOUT_MS: i32 = 5;
/// Longest the receiver keeps draining after it was told to stop.
const FINAL_PASS: Duration = Duration::from_millis(200);

/// The media of every call: sockets, SRTP contexts and stream identities.
#[derive(Debug)]
pub struct Media {
    /// Per call: `[A, B]`, each connected to its relay leg.
    pub sockets: Vec<[UdpSocket; 2]>,
    /// Per call: the context A protects with (empty when plain).
    pub tx: Vec<Context>,
    /// Per call: the context A unprotects the relay's SRTP with (empty when plain).
    pub rx: Vec<Context>,
    /// Per call, by [`Direction::index`].
    pub streams: Vec<[StreamIdentity; 2]>,
}

impl Media {
    fn calls(&self) -> usize {
        self.sockets.len()
    }

    fn srtp(&self) -> bool {
        !self.tx.is_empty()
    }
}

/// One phase of a drive: every stream at one rate for a while.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseParams {
    /// Its name in progress lines (empty: none).
    pub name: &'static str,
    /// Packets per second per stream.
    pub pps: u64,
    /// Its sending time.
    pub duration: Duration,
    /// Whether it is tallied (a warm-up is not).
    pub measured: bool,
}

/// How to drive one run.
#[derive(Clone, Debug)]
pub struct DriveParams {
    /// The phases, run back to back on the same streams; at least one is measured.
    pub phases: Vec<PhaseParams>,
    /// Per stream, count the packets sent and received among those due in this final stretch
    /// of the last phase (zero: count none).
    pub window: Duration,
    /// Time to keep receiving after the last send.
    pub drain: Duration,
    /// RTP payload bytes.
    pub payload_len: usize,
    /// Sender wake-up period.
    pub tick: Duration,
    /// CPU for the sender thread.
    pub tx_cpu: Option<usize>,
    /// CPU for the receiver thread.
    pub rx_cpu: Option<usize>,
    /// Print a progress line every second on stderr, prefixed with this label.
    pub progress: Option<String>,
}

impl DriveParams {
    /// The phases placed for `streams` streams, and the per-stream packet indices of the final
    /// window.
    fn plan(&self, streams: usize) -> Result<(PhasePlan, Range<u64>), LoadgenError> {
        if streams == 0
            || self.phases.iter().any(|p| p.pps == 0)
            || !self.phases.iter().any(|p| p.measured)
        {
            return Err(LoadgenError::config("nothing to send"));
        }
        let phases: Vec<Phase> = self
            .phases
            .iter()
            .map(|p| Phase {
                rate: p.pps,
                duration_ns: duration_ns(p.duration),
            })
            .collect();
        let plan = PhasePlan::new(streams as u64, &phases);
        let window = match plan.phases().last() {
            Some(last) if !self.window.is_zero() => last.tail(duration_ns(self.window)),
            _ => 0..0,
        };
        Ok((plan, window))
    }
}

/// What a drive measured in one phase.
#[derive(Clone, Debug)]
pub struct PhaseOutcome {
    /// The tallies of the packets of the phase.
    pub tallies: Tallies,
    /// The phase's sending time: the configured duration, plus how late the sender was with
    /// its last packet (beyond wake-up jitter) when it fell behind.
    pub duration_s: f64,
}

/// What a drive measured.
#[derive(Clone, Debug)]
pub struct DriveOutcome {
    /// The measured phases, in order.
    pub phases: Vec<PhaseOutcome>,
    /// Per stream: packets of the final window sent.
    pub window_sent: WindowCounter,
    /// Per stream: unique packets of the final window received intact.
    pub window_received: WindowCounter,
}

/// Counters both threads bump and the progress display reads.
#[derive(Debug, Default)]
struct Live {
    sent: AtomicU64,
    received: AtomicU64,
}

fn ns_since(start: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs the traffic of `params` over `media` and returns what was measured.
pub fn drive(media: &mut Media, params: &DriveParams) -> Result<DriveOutcome, LoadgenError> {
    let streams = media.calls() * 2;
    let (plan, window) = params.plan(streams)?;
    let measured: Vec<bool> = params.phases.iter().map(|p| p.measured).collect();
    let tick_ns = duration_ns(params.tick).max(1);
    let live = Live::default();
    let stop = AtomicBool::new(false);
    let srtp = media.srtp();
    let Media {
        sockets,
        tx,
        rx,
        streams: identities,
    } = media;
    let sockets: &[[UdpSocket; 2]] = sockets;
    let identities: &[[StreamIdentity; 2]] = identities;
    let ledger = ReceiveLedger::new(plan.clone(), measured.clone(), streams, window.clone());
    let outcome = SenderOutcome::new(plan.phases().len(), streams, window);

    thread::scope(|scope| {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), LoadgenError>>();
        let (go_send, go_send_rx) = mpsc::channel::<Option<Instant>>();
        let (go_recv, go_recv_rx) = mpsc::channel::<Option<Instant>>();

        let receiver = {
            let ready = ready_tx.clone();
            let (live, stop) = (&live, &stop);
            let (cpu, payload_len) = (params.rx_cpu, params.payload_len);
            thread::Builder::new()
                .name("loadgen-rx".into())
                .spawn_scoped(scope, move || {
                    let Some(start) = pin_and_wait("receiver", cpu, &ready, &go_recv_rx) else {
                        return Ok(None);
                    };
                    Receiver::new(sockets, identities, rx, srtp, payload_len, ledger)
                        .run(start, stop, live)
                        .map(Some)
                })
                .map_err(|_| LoadgenError::Thread("receiver"))?
        };
        let sender = {
            let live = &live;
            let (cpu, payload_len) = (params.tx_cpu, params.payload_len);
            let (plan, measured) = (plan.clone(), measured.clone());
            thread::Builder::new()
                .name("loadgen-tx".into())
                .spawn_scoped(scope, move || {
                    let start = pin_and_wait("sender", cpu, &ready_tx, &go_send_rx)?;
                    let mut sender = Sender::new(sockets, identities, tx, srtp, plan, outcome);
                    sender.measured = measured;
                    sender.payload_len = payload_len;
                    sender.tick_ns = tick_ns;
                    sender.run(start, live);
                    Some(sender.outcome)
                })
                .map_err(|_| LoadgenError::Thread("sender"))?
        };

        let setup_error = (0..2)
            .filter_map(|_| match ready_rx.recv() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(LoadgenError::Thread("worker")),
            })
            .reduce(|first, _| first);
        if let Some(error) = setup_error {
            let _ = go_send.send(None);
            let _ = go_recv.send(None);
            let _ = sender.join();
            let _ = receiver.join();
            return Err(error);
        }
        // A moment in the future, so both threads are waiting when it comes.
        let start = Instant::now() + Duration::from_millis(20);
        let _ = go_recv.send(Some(start));
        let _ = go_send.send(Some(start));

        let mut display = Progress::new(start, params.progress.as_deref(), &live);
        display.phases = Some((&plan, &params.phases));
        display.until(|| sender.is_finished());
        let sent = sender
            .join()
            .map_err(|_| LoadgenError::Thread("sender"))?
            .ok_or(LoadgenError::Thread("sender"))?;
        let drain_until = Instant::now() + params.drain;
        display.until(|| Instant::now() >= drain_until);
        stop.store(true, Ordering::Release);
        let ledger = receiver
            .join()
            .map_err(|_| LoadgenError::Thread("receiver"))??
            .ok_or(LoadgenError::Thread("receiver"))?;
        let (received, window_received) = ledger.into_parts();
        Ok(DriveOutcome {
            phases: measured_outcomes(&plan, &params.phases, &sent, &received, tick_ns),
            window_sent: sent.window,
            window_received,
        })
    })
}

/// The outcome of each measured phase, from the sender's and the receiver's tallies (by
/// phase).
fn measured_outcomes(
    plan: &PhasePlan,
    phases: &[PhaseParams],
    sent: &SenderOutcome,
    received: &[[ReceiveTally; 2]],
    tick_ns: u64,
) -> Vec<PhaseOutcome> {
    plan.phases()
        .iter()
        .zip(phases)
        .enumerate()
        .filter(|(_, (_, p))| p.measured)
        .map(|(i, (placed, p))| {
            // The schedule spreads a phase's packets over exactly its duration; a sender that
            // fell behind spread them over longer. Lateness within two ticks is wake-up
            // jitter.
            let lateness_ns = sent.last_send_ns[i]
                .saturating_sub(placed.last_due_ns())
                .saturating_sub(2 * tick_ns);
            #[allow(clippy::cast_precision_loss)]
            let duration_s = p.duration.as_secs_f64() + lateness_ns as f64 / 1e9;
            PhaseOutcome {
                tallies: Tallies {
                    send: sent.tallies[i],
                    receive: received[i].clone(),
                },
                duration_s,
            }
        })
        .collect()
}

/// A worker's start-up: pins the thread (if asked), reports the result, and waits for the
/// shared start time (`None`: the run was called off).
fn pin_and_wait(
    who: &str,
    cpu: Option<usize>,
    ready: &mpsc::Sender<Result<(), LoadgenError>>,
    go: &mpsc::Receiver<Option<Instant>>,
) -> Option<Instant> {
    let pinned = cpu.map_or(Ok(()), |cpu| {
        pin_current_thread(cpu).map_err(LoadgenError::io(format!("pinning the {who} to CPU {cpu}")))
    });
    let ok = pinned.is_ok();
    let _ = ready.send(pinned);
    if !ok {
        return None;
    }
    go.recv().ok().flatten()
}

/// The once-a-second progress line.
struct Progress<'a> {
    start: Instant,
    label: Option<&'a str>,
    live: &'a Live,
    /// The plan and the phases, to name the phase in progress.
    phases: Option<(&'a PhasePlan, &'a [PhaseParams])>,
    next_ns: u64,
    last_sent: u64,
    last_received: u64,
}

impl<'a> Progress<'a> {
    fn new(start: Instant, label: Option<&'a str>, live: &'a Live) -> Self {
        Self {
            start,
            label,
            live,
            phases: None,
            next_ns: NANOS_PER_SEC,
            last_sent: 0,
            last_received: 0,
        }
    }

    /// Waits (in 50 ms naps) until `done`, printing a line every second if enabled.
    fn until(&mut self, done: impl Fn() -> bool) {
        while !done() {
            thread::sleep(Duration::from_millis(50));
            self.tick();
        }
    }

    fn tick(&mut self) {
        let Some(label) = self.label else {
            return;
        };
        let now = ns_since(self.start);
        if now < self.next_ns {
            return;
        }
        self.next_ns += NANOS_PER_SEC;
        let sent = self.live.sent.load(Ordering::Relaxed);
        let received = self.live.received.load(Ordering::Relaxed);
        let loss = super::stats::ratio(sent.saturating_sub(received), sent) * 100.0;
        #[allow(clippy::cast_precision_loss)]
        let elapsed = now as f64 / 1e9;
        let phase = self
            .phases
            .map(|(plan, params)| params[plan.phase_at(now)].name)
            .filter(|name| !name.is_empty())
            .map_or_else(String::new, |name| format!(" {name}:"));
        eprintln!(
            "{label}[{elapsed:6.1} s]{phase} offered {:>8} pps  received {:>8} pps  loss so far \
             {loss:.3}%",
            sent.saturating_sub(self.last_sent),
            received.saturating_sub(self.last_received),
        );
        self.last_sent = sent;
        self.last_received = received;
    }
}

/// What the sender counted.
#[derive(Clone, Debug)]
struct SenderOutcome {
    /// Per phase, by [`Direction::index`].
    tallies: Vec<[SendTally; 2]>,
    /// Per phase: when its last packet left, in ns since the start.
    last_send_ns: Vec<u64>,
    /// Per stream: packets of the final window sent.
    window: WindowCounter,
}

impl SenderOutcome {
    fn new(phases: usize, streams: usize, window: Range<u64>) -> Self {
        Self {
            tallies: vec![[SendTally::default(); 2]; phases],
            last_send_ns: vec![0; phases],
            window: WindowCounter::new(streams, window),
        }
    }
}

/// One packet in the sender's pool.
#[derive(Clone, Copy, Debug)]
struct Entry {
    call: usize,
    direction: Direction,
    len: usize,
    /// Its phase.
    phase: usize,
    /// Its per-stream index.
    index: u64,
    /// Protection succeeded (or was not needed).
    ok: bool,
    /// The kernel took it.
    sent: bool,
}

impl Entry {
    fn stream(&self) -> usize {
        self.call * 2 + self.direction.index()
    }
}

struct Sender<'a> {
    sockets: &'a [[UdpSocket; 2]],
    identities: &'a [[StreamIdentity; 2]],
    tx: &'a mut [Context],
    srtp: bool,
    plan: PhasePlan,
    /// Per phase: whether its packets count toward the live progress line.
    measured: Vec<bool>,
    payload_len: usize,
    tick_ns: u64,
    pool: Box<[u8]>,
    entries: Vec<Entry>,
    batch: Batch,
    mmsg: MmsgSender,
    outcome: SenderOutcome,
}

impl<'a> Sender<'a> {
    fn new(
        sockets: &'a [[UdpSocket; 2]],
        identities: &'a [[StreamIdentity; 2]],
        tx: &'a mut [Context],
        srtp: bool,
        plan: PhasePlan,
        outcome: SenderOutcome,
    ) -> Self {
        Self {
            sockets,
            identities,
            tx,
            srtp,
            measured: vec![true; plan.phases().len()],
            plan,
            payload_len: payload::MIN_PAYLOAD,
            tick_ns: NANOS_PER_SEC / 1000,
            pool: vec![0; POOL * SLOT].into_boxed_slice(),
            entries: Vec::with_capacity(POOL),
            batch: Batch::with_capacity(POOL, SLOT),
            mmsg: MmsgSender::new(),
            outcome,
        }
    }

    /// Sends every phase's packets on schedule. Bounded: each pass sends what is due (at most
    /// `max_pass` packets), and a phase ends once its last packet (a fixed count) is sent or,
    /// for all but the last, after the first pass that starts once its time is up
    /// ([`PhasePlan::is_done`]).
    fn run(&mut self, start: Instant, live: &Live) {
        let wait = start.saturating_duration_since(Instant::now());
        thread::sleep(wait);
        let streams = self.identities.len() as u64 * 2;
        // Most packets sent in one pass: a sender that fell behind sends its backlog in
        // passes this size, checking the clock between them (so a phase whose time is up is
        // left on time).
        let max_pass = streams * POOL as u64;
        let mut phase_index = 0;
        let mut sent = 0;
        while let Some(&phase) = self.plan.phases().get(phase_index) {
            let now = ns_since(start);
            let owed = phase.due_range(sent, now);
            let due = owed.start..owed.end.min(owed.start + max_pass);
            // Stream by stream: stamp, build, protect and send each stream's due packets
            // together, so the send time in a payload is at most one small batch old when the
            // packet leaves (one batch across streams would add the sending time of every
            // other stream's packets to the measured latency).
            if due.end - due.start < streams {
                // Each stream owes at most one packet: take them in schedule order.
                for g in due.clone() {
                    let (stream, index) = phase.packet(g);
                    self.build(phase_index, stream, index, start);
                    self.flush(start, live);
                }
            } else {
                // Every stream owes at least one: send each stream's share as a batch.
                for stream in 0..streams {
                    let from = phase.index_before(stream, due.start);
                    let to = phase.index_before(stream, due.end);
                    for index in from..to {
                        self.build(phase_index, stream, index, start);
                        if self.entries.len() == POOL {
                            self.flush(start, live);
                        }
                    }
                    self.flush(start, live);
                }
            }
            sent = due.end;
            // Checked after the pass, so a sender that woke after the phase's time was up
            // still sends what fell due before (one pass); only a longer backlog is left.
            if self.plan.is_done(phase_index, sent, now) {
                // The next phase at once: a sender that ran late owes some of it already.
                phase_index += 1;
                sent = 0;
                continue;
            }
            if due.end < owed.end {
                // Behind: the next pass at once.
                continue;
            }
            let wake = (now / self.tick_ns + 1) * self.tick_ns;
            let left = wake.saturating_sub(ns_since(start));
            if left > 0 {
                thread::sleep(Duration::from_nanos(left));
            }
        }
    }

    fn build(&mut self, phase: usize, stream: u64, index: u64, start: Instant) {
        // stream < 2 * calls, which is a usize.
        #[allow(clippy::cast_possible_truncation)]
        let (call, direction) = (
            (stream / 2) as usize,
            Direction::BOTH[(stream % 2) as usize],
        );
        let slot = self.entries.len();
        let buf = &mut self.pool[slot * SLOT..(slot + 1) * SLOT];
        let len = self.identities[call][direction.index()].write(
            buf,
            index,
            ns_since(start),
            self.payload_len,
        );
        self.entries.push(Entry {
            call,
            direction,
            len,
            phase,
            index,
            ok: true,
            sent: false,
        });
    }

    fn flush(&mut self, start: Instant, live: &Live) {
        if self.entries.is_empty() {
            return;
        }
        if self.srtp {
            self.protect();
        }
        let mut i = 0;
        while i < self.entries.len() {
            let first = self.entries[i];
            let run_end = self.entries[i..]
                .iter()
                .position(|e| e.call != first.call || e.direction != first.direction)
                .map_or(self.entries.len(), |n| i + n);
            self.send_run(i, run_end);
            i = run_end;
        }
        let now = ns_since(start);
        let mut measured_sent = 0;
        for entry in self.entries.iter().filter(|e| e.sent) {
            self.outcome.last_send_ns[entry.phase] = now;
            if self.measured[entry.phase] {
                measured_sent += 1;
            }
        }
        if measured_sent > 0 {
            live.sent.fetch_add(measured_sent, Ordering::Relaxed);
        }
        self.entries.clear();
    }

    /// Protects the A-to-B packets of the pool in one batch.
    fn protect(&mut self) {
        let entries = &mut self.entries;
        let mut packets: Vec<BatchPacket<'_>> = self
            .pool
            .chunks_mut(SLOT)
            .zip(entries.iter())
            .filter(|(_, e)| e.direction == Direction::AToB)
            .map(|(buf, e)| BatchPacket::new(e.call, buf, e.len))
            .collect();
        if packets.is_empty() {
            return;
        }
        self.batch.protect_rtp(self.tx, &mut packets);
        let mut results = packets.iter().map(|p| p.result.clone());
        for entry in entries
            .iter_mut()
            .filter(|e| e.direction == Direction::AToB)
        {
            match results.next() {
                Some(Ok(len)) => entry.len = len,
                _ => entry.ok = false,
            }
        }
    }

    /// Sends entries `from..to` (one stream, so one socket), counting what went out in the
    /// tally of each packet's phase and in the stream's window count.
    fn send_run(&mut self, from: usize, to: usize) {
        let first = self.entries[from];
        let socket = &self.sockets[first.call][match first.direction {
            Direction::AToB => 0,
            Direction::BToA => 1,
        }];
        let outcome = &mut self.outcome;
        let direction = first.direction.index();
        // Refused by SRTP: never sent.
        for entry in &self.entries[from..to] {
            if !entry.ok {
                outcome.tallies[entry.phase][direction].send_errors += 1;
            }
        }
        let mut packets: [&[u8]; POOL] = [&[]; POOL];
        let mut slots = [0_usize; POOL];
        let mut count = 0;
        for (slot, entry) in self.entries.iter().enumerate().take(to).skip(from) {
            if entry.ok {
                packets[count] = &self.pool[slot * SLOT..slot * SLOT + entry.len];
                slots[count] = slot;
                count += 1;
            }
        }
        let mut done = 0;
        while done < count {
            match self.mmsg.send(socket.as_raw_fd(), &packets[done..count]) {
                Ok(0) | Err(_) => {
                    // The first datagram failed (e.g. ICMP port unreachable came back, or
                    // ENOBUFS): count it and go on with the rest.
                    let entry = &self.entries[slots[done]];
                    outcome.tallies[entry.phase][direction].send_errors += 1;
                    done += 1;
                }
                Ok(n) => {
                    for &slot in &slots[done..done + n] {
                        let entry = &mut self.entries[slot];
                        entry.sent = true;
                        outcome.tallies[entry.phase][direction].sent += 1;
                        outcome.window.record(entry.stream(), entry.index);
                    }
                    done += n;
                }
            }
        }
    }
}

struct Receiver<'a> {
    sockets: &'a [[UdpSocket; 2]],
    identities: &'a [[StreamIdentity; 2]],
    rx: &'a mut [Context],
    srtp: bool,
    payload_len: usize,
    ledger: ReceiveLedger,
    mmsg: MmsgReceiver,
    batch: Batch,
}

impl<'a> Receiver<'a> {
    fn new(
        sockets: &'a [[UdpSocket; 2]],
        identities: &'a [[StreamIdentity; 2]],
        rx: &'a mut [Context],
        srtp: bool,
        payload_len: usize,
        ledger: ReceiveLedger,
    ) -> Self {
        Self {
            sockets,
            identities,
            rx,
            srtp,
            payload_len,
            ledger,
            mmsg: MmsgReceiver::new(),
            batch: Batch::with_capacity(MmsgReceiver::BATCH, SLOT),
        }
    }

    fn run(
        mut self,
        start: Instant,
        stop: &AtomicBool,
        live: &Live,
    ) -> Result<ReceiveLedger, LoadgenError> {
        let epoll = Epoll::new().map_err(LoadgenError::io("epoll_create"))?;
        for (call, pair) in self.sockets.iter().enumerate() {
            for (side, socket) in pair.iter().enumerate() {
                epoll
                    .add(socket.as_raw_fd(), (call * 2 + side) as u64)
                    .map_err(LoadgenError::io("epoll_ctl"))?;
            }
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut tokens = Vec::with_capacity(events.len());
        let mut final_pass_until: Option<Instant> = None;
        loop {
            // Read the flag before waiting: after it is set, the sockets are drained until
            // they are empty (or, against a peer that keeps sending, for FINAL_PASS at most).
            let stopping = stop.load(Ordering::Acquire);
            if stopping {
                let until = *final_pass_until.get_or_insert_with(|| Instant::now() + FINAL_PASS);
                if Instant::now() >= until {
                    break;
                }
            }
            let timeout = if stopping { 0 } else { EPOLL_TIMEOUT_MS };
            epoll
                .wait(&mut events, &mut tokens, timeout)
                .map_err(LoadgenError::io("epoll_wait"))?;
            for &token in &tokens {
                let Ok(token) = usize::try_from(token) else {
                    continue;
                };
                self.drain_socket(token / 2, token % 2, start, live)?;
            }
            if stopping && tokens.is_empty() {
                break;
            }
        }
        Ok(self.ledger)
    }

    /// Reads everything waiting on socket `side` (0: A, 1: B) of `call`.
    fn drain_socket(
        &mut self,
        call: usize,
        side: usize,
        start: Instant,
        live: &Live,
    ) -> Result<(), LoadgenError> {
        let fd = self.sockets[call][side].as_raw_fd();
        // A receives what B sent, and B what A sent.
        let direction = if side == 0 {
            Direction::BToA
        } else {
            Direction::AToB
        };
        loop {
            let n = self.mmsg.recv(fd).map_err(LoadgenError::io("recvmmsg"))?;
            if n == 0 {
                return Ok(());
            }
            let now = ns_since(start);
            let before = self.ledger.received(direction);
            self.process(call, direction, n, now);
            live.received
                .fetch_add(self.ledger.received(direction) - before, Ordering::Relaxed);
            if n < MmsgReceiver::BATCH {
                return Ok(());
            }
        }
    }

    fn process(&mut self, call: usize, direction: Direction, n: usize, now: u64) {
        let identity = self.identities[call][direction.index()];
        let stream = call * 2 + direction.index();
        let payload_len = self.payload_len;
        let (bufs, lens, truncated) = self.mmsg.slots_mut();
        let ledger = &mut self.ledger;
        if self.srtp && direction == Direction::BToA {
            let mut packets: Vec<BatchPacket<'_>> = bufs
                .chunks_mut(SLOT)
                .take(n)
                .zip(lens.iter())
                .map(|(buf, &len)| BatchPacket::new(0, buf, len))
                .collect();
            self.batch
                .unprotect_rtp(slice::from_mut(&mut self.rx[call]), &mut packets);
            for (packet, &cut) in packets.iter().zip(truncated.iter()) {
                if cut {
                    ledger.by_time(direction, now).corrupt += 1;
                    continue;
                }
                match &packet.result {
                    Ok(len) => ledger.record(
                        stream,
                        direction,
                        identity.verify(&packet.buf[..*len], payload_len),
                        now,
                    ),
                    Err(srtp::Error::AuthenticationFailed) => {
                        ledger.by_time(direction, now).auth_failures += 1;
                    }
                    Err(srtp::Error::Replayed { .. }) => {
                        ledger.by_time(direction, now).duplicates += 1;
                    }
                    // Older than the replay window: it cannot be verified, so it stays lost.
                    Err(srtp::Error::TooOld { .. }) => {
                        ledger.by_time(direction, now).out_of_order += 1;
                    }
                    Err(_) => ledger.by_time(direction, now).corrupt += 1,
                }
            }
        } else {
            for i in 0..n {
                if truncated[i] {
                    ledger.by_time(direction, now).corrupt += 1;
                    continue;
                }
                let packet = &bufs[i * SLOT..i * SLOT + lens[i]];
                ledger.record(stream, direction, identity.verify(packet, payload_len), now);
            }
        }
    }
}
