//! Counting what arrived: a per-stream sequence tracker (unique, duplicate, out of order), the
//! per-direction tallies and latency histograms, the receiver's books that sort packets into
//! phases and count, per stream, the packets of a final window ([`ReceiveLedger`],
//! [`WindowCounter`], [`StreamHealth`]), and the report they add up to.

use std::{fmt::Write as _, ops::Range};

use serde::Serialize;

use super::{
    histogram::Histogram,
    pacer::PhasePlan,
    payload::{Direction, Mismatch, Verified},
};

/// A stream is alive in a window when it delivered at least this percentage of the packets
/// sent in it.
pub const ALIVE_PERCENT: u64 = 90;

/// Packets remembered behind the highest index seen, for duplicate detection.
pub const TRACK_WINDOW: u64 = 1024;
const WORDS: usize = (TRACK_WINDOW / 64) as usize;

/// What a stream's tracker concluded about one packet index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// First time seen, in order.
    InOrder,
    /// First time seen, after a higher index.
    Late,
    /// Seen before.
    Duplicate,
}

/// Tracks which packet indices of one stream arrived, in a sliding window of
/// [`TRACK_WINDOW`] packets behind the highest index. A packet older than the window counts as
/// late (it cannot be checked for duplication; with the generator's bounded reordering that
/// never happens on a sane path).
#[derive(Clone, Debug, Default)]
pub struct SequenceTracker {
    highest: Option<u64>,
    seen: [u64; WORDS],
}

impl SequenceTracker {
    /// Records `index`.
    pub fn observe(&mut self, index: u64) -> Arrival {
        let Some(highest) = self.highest else {
            self.highest = Some(index);
            self.set(index);
            return Arrival::InOrder;
        };
        if index > highest {
            let advance = index - highest;
            if advance >= TRACK_WINDOW {
                self.seen = [0; WORDS];
            } else {
                for i in highest + 1..index {
                    self.clear(i);
                }
            }
            self.highest = Some(index);
            self.set(index);
            return Arrival::InOrder;
        }
        if highest - index >= TRACK_WINDOW {
            return Arrival::Late;
        }
        if self.is_set(index) {
            return Arrival::Duplicate;
        }
        self.set(index);
        Arrival::Late
    }

    fn position(index: u64) -> (usize, u64) {
        let bit = index % TRACK_WINDOW;
        // bit / 64 < WORDS.
        #[allow(clippy::cast_possible_truncation)]
        let word = (bit / 64) as usize;
        (word, 1 << (bit % 64))
    }

    fn set(&mut self, index: u64) {
        let (word, mask) = Self::position(index);
        self.seen[word] |= mask;
    }

    fn clear(&mut self, index: u64) {
        let (word, mask) = Self::position(index);
        self.seen[word] &= !mask;
    }

    fn is_set(&self, index: u64) -> bool {
        let (word, mask) = Self::position(index);
        self.seen[word] & mask != 0
    }
}

/// Receive-side tallies of one direction.
#[derive(Clone, Debug, Default)]
pub struct ReceiveTally {
    /// Unique measured packets that verified.
    pub received: u64,
    /// Packets seen twice (or refused by SRTP as replays).
    pub duplicates: u64,
    /// Unique packets that arrived after a higher index.
    pub out_of_order: u64,
    /// Packets that did not verify (length, header, identity, content; SRTP errors other than
    /// authentication and replay).
    pub corrupt: u64,
    /// SRTP packets whose authentication tag did not verify.
    pub auth_failures: u64,
    /// Packets of another run (an earlier step) or of the warm-up: not counted.
    pub ignored: u64,
    /// One-way latency in ns of every measured packet.
    pub latency: Histogram,
}

impl ReceiveTally {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Self) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.corrupt += other.corrupt;
        self.auth_failures += other.auth_failures;
        self.ignored += other.ignored;
        self.latency.merge(&other.latency);
    }
}

/// Send-side tallies of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendTally {
    /// Measured packets the kernel accepted.
    pub sent: u64,
    /// Measured packets that could not be sent (socket errors, SRTP refusal).
    pub send_errors: u64,
}

/// Per-stream counts of the packets whose per-stream index falls in one range (the packets
/// due in the final window of a phase). Streams are numbered `call * 2 + direction index`; the
/// array is allocated once, before the run, and counting never allocates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowCounter {
    indices: Range<u64>,
    counts: Box<[u64]>,
}

impl WindowCounter {
    /// Counters for `streams` streams over the packet indices `indices` (an empty range counts
    /// nothing).
    pub fn new(streams: usize, indices: Range<u64>) -> Self {
        Self {
            indices,
            counts: vec![0; streams].into_boxed_slice(),
        }
    }

    /// Counts packet `index` of `stream` if it is in the window (a stream out of range is
    /// ignored).
    pub fn record(&mut self, stream: usize, index: u64) {
        if self.indices.contains(&index) {
            if let Some(count) = self.counts.get_mut(stream) {
                *count += 1;
            }
        }
    }

    /// The window's per-stream packet indices.
    pub fn indices(&self) -> Range<u64> {
        self.indices.clone()
    }

    /// The count of every stream.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }
}

/// How the streams fared in a window: alive (delivered at least [`ALIVE_PERCENT`] % of what
/// was sent in it), dead (delivered nothing of it), out of every stream of the run. A stream
/// in neither count delivered part of its packets (or had none sent in the window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamHealth {
    /// Every stream (two per call).
    pub streams_total: u64,
    /// Streams that delivered at least [`ALIVE_PERCENT`] % of their packets in the window.
    pub streams_alive: u64,
    /// Streams that delivered none of their packets in the window.
    pub streams_dead: u64,
}

impl StreamHealth {
    /// Classifies every stream by what it sent and delivered in the window, given as
    /// `(sent, received)` per stream.
    pub fn classify(streams: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut health = Self::default();
        for (sent, received) in streams {
            health.streams_total += 1;
            if sent == 0 {
                continue;
            }
            if received == 0 {
                health.streams_dead += 1;
            } else if received.saturating_mul(100) >= sent.saturating_mul(ALIVE_PERCENT) {
                health.streams_alive += 1;
            }
        }
        health
    }
}

/// The receiver's books, with no IO: they put every packet in a phase and a stream and count
/// it. A packet that verified belongs to the phase of its index (whenever it arrives); one that
/// did not (corrupt, forged, replayed) is charged to the phase in progress when it arrived, or
/// to the first measured phase after it while unmeasured phases (the warm-up) run.
#[derive(Clone, Debug)]
pub struct ReceiveLedger {
    plan: PhasePlan,
    measured: Vec<bool>,
    /// Per phase: where a packet that arrives during it and cannot be placed is charged.
    charge_to: Vec<usize>,
    tallies: Vec<[ReceiveTally; 2]>,
    trackers: Vec<SequenceTracker>,
    window: WindowCounter,
}

impl ReceiveLedger {
    /// Books for `streams` streams through the phases of `plan`, `measured[i]` telling whether
    /// phase `i` is counted, counting per stream the packets whose index is in `window`.
    ///
    /// # Panics
    /// When `measured` does not have one entry per phase or marks no phase measured.
    pub fn new(plan: PhasePlan, measured: Vec<bool>, streams: usize, window: Range<u64>) -> Self {
        let phases = plan.phases().len();
        assert_eq!(measured.len(), phases, "one measured flag per phase");
        let charge_to = (0..phases)
            .map(|phase| {
                (phase..phases)
                    .find(|&p| measured[p])
                    .or_else(|| (0..phase).rfind(|&p| measured[p]))
                    .expect("a measured phase")
            })
            .collect();
        Self {
            plan,
            measured,
            charge_to,
            tallies: vec![[ReceiveTally::default(), ReceiveTally::default()]; phases],
            trackers: vec![SequenceTracker::default(); streams],
            window: WindowCounter::new(streams, window),
        }
    }

    /// Books a packet of `stream` (going `direction`) received `now_ns` after the run's
    /// start, by what its verification found.
    pub fn record(
        &mut self,
        stream: usize,
        direction: Direction,
        verification: Result<Verified, Mismatch>,
        now_ns: u64,
    ) {
        match verification {
            Ok(packet) => self.verified(stream, direction, packet, now_ns),
            // Another run's packets (an earlier find-max step) are not counted.
            Err(Mismatch::OtherRun) => self.by_time(direction, now_ns).ignored += 1,
            Err(Mismatch::Corrupt(_)) => self.by_time(direction, now_ns).corrupt += 1,
        }
    }

    /// Books a packet of `stream` (going `direction`) that verified as `packet`, received
    /// `now_ns` after the run's start.
    pub fn verified(&mut self, stream: usize, direction: Direction, packet: Verified, now_ns: u64) {
        let Some(phase) = self.plan.phase_of_index(packet.index) else {
            // Verified, so ours, but past the last phase: only a corrupt sender makes one.
            self.by_time(direction, now_ns).corrupt += 1;
            return;
        };
        let tally = &mut self.tallies[phase][direction.index()];
        if !self.measured[phase] {
            tally.ignored += 1;
            return;
        }
        let Some(tracker) = self.trackers.get_mut(stream) else {
            tally.corrupt += 1;
            return;
        };
        match tracker.observe(packet.index) {
            Arrival::Duplicate => tally.duplicates += 1,
            arrival => {
                tally.received += 1;
                if arrival == Arrival::Late {
                    tally.out_of_order += 1;
                }
                tally.latency.record(now_ns.saturating_sub(packet.sent_ns));
                self.window.record(stream, packet.index);
            }
        }
    }

    /// The tally of `direction` a packet that cannot be placed by its index is charged to,
    /// when it arrives `now_ns` after the run's start.
    pub fn by_time(&mut self, direction: Direction, now_ns: u64) -> &mut ReceiveTally {
        let phase = self.charge_to[self.plan.phase_at(now_ns)];
        &mut self.tallies[phase][direction.index()]
    }

    /// Unique measured packets of `direction` received so far, over every phase.
    pub fn received(&self, direction: Direction) -> u64 {
        self.tallies
            .iter()
            .map(|t| t[direction.index()].received)
            .sum()
    }

    /// The tallies of every phase (by phase, then [`Direction::index`]) and the window's
    /// per-stream counts of unique packets received.
    pub fn into_parts(self) -> (Vec<[ReceiveTally; 2]>, WindowCounter) {
        (self.tallies, self.window)
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencyReport {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl LatencyReport {
    /// From a histogram of nanoseconds.
    pub fn from_histogram(h: &Histogram) -> Self {
        Self {
            p50: micros(h.quantile(0.50)),
            p99: micros(h.quantile(0.99)),
            max: micros(h.max()),
        }
    }
}

fn micros(ns: u64) -> f64 {
    // Rounded to 0.1 us; the histogram's resolution is coarser than that anyway.
    #[allow(clippy::cast_precision_loss)]
    let us = ns as f64 / 1000.0;
    (us * 10.0).round() / 10.0
}

/// Counts of one direction (or both together).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DirectionReport {
    /// Offered packets per second (sent / duration).
    pub offered_pps: f64,
    /// Received packets per second (received / duration).
    pub received_pps: f64,
    /// Packets sent.
    pub sent: u64,
    /// Unique packets received intact.
    pub received: u64,
    /// sent - received (never negative).
    pub lost: u64,
    /// lost / sent.
    pub loss_ratio: f64,
    /// Duplicate packets.
    pub duplicates: u64,
    /// Packets received after a higher index.
    pub out_of_order: u64,
    /// Packets that failed verification.
    pub corrupt: u64,
    /// SRTP authentication failures.
    pub auth_failures: u64,
    /// Packets that could not be sent.
    pub send_errors: u64,
    /// One-way latency.
    pub latency_us: LatencyReport,
}

impl DirectionReport {
    /// Builds the report of `send` and `receive` over `duration_s`.
    pub fn new(send: SendTally, receive: &ReceiveTally, duration_s: f64) -> Self {
        let lost = send.sent.saturating_sub(receive.received);
        Self {
            offered_pps: rate(send.sent, duration_s),
            received_pps: rate(receive.received, duration_s),
            sent: send.sent,
            received: receive.received,
            lost,
            loss_ratio: ratio(lost, send.sent),
            duplicates: receive.duplicates,
            out_of_order: receive.out_of_order,
            corrupt: receive.corrupt,
            auth_failures: receive.auth_failures,
            send_errors: send.send_errors,
            latency_us: LatencyReport::from_histogram(&receive.latency),
        }
    }
}

/// Both directions.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PerDirection {
    /// A (SRTP) to B (plain).
    pub a_to_b: DirectionReport,
    /// B (plain) to A (SRTP).
    pub b_to_a: DirectionReport,
}

/// The result of one load run (or one find-max step).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Calls (each two streams, one per direction).
    pub calls: u32,
    /// Measured sending time in seconds (warm-up and drain excluded).
    pub duration_s: f64,
    /// Per-stream rate asked for.
    pub pps_per_stream: u64,
    /// Total rate asked for (calls * 2 * `pps_per_stream`).
    pub target_pps: u64,
    /// SRTP suite on the A leg, or `null` with `--plain`.
    pub srtp_suite: Option<String>,
    /// Bytes per RTP packet before SRTP (12-byte header + payload).
    pub packet_bytes: usize,
    /// Total offered packets per second.
    pub offered_pps: f64,
    /// Total received packets per second.
    pub received_pps: f64,
    /// Packets sent.
    pub sent: u64,
    /// Unique packets received intact.
    pub received: u64,
    /// Packets lost.
    pub lost: u64,
    /// lost / sent.
    pub loss_ratio: f64,
    /// Duplicates.
    pub duplicates: u64,
    /// Out-of-order arrivals.
    pub out_of_order: u64,
    /// Failed verification.
    pub corrupt: u64,
    /// SRTP authentication failures.
    pub auth_failures: u64,
    /// Packets that could not be sent.
    pub send_errors: u64,
    /// One-way latency over both directions.
    pub latency_us: LatencyReport,
    /// Each direction on its own.
    pub per_direction: PerDirection,
}

/// Everything a run measured, before it is summarised.
#[derive(Clone, Debug, Default)]
pub struct Tallies {
    /// Send side, by [`Direction::index`].
    pub send: [SendTally; 2],
    /// Receive side, by [`Direction::index`].
    pub receive: [ReceiveTally; 2],
}

/// What a run was asked to do, for the report.
#[derive(Clone, Debug)]
pub struct RunShape {
    /// Calls.
    pub calls: u32,
    /// Per-stream rate.
    pub pps_per_stream: u64,
    /// Measured window in seconds.
    pub duration_s: f64,
    /// Suite name or `None`.
    pub srtp_suite: Option<String>,
    /// RTP packet size.
    pub packet_bytes: usize,
}

impl Report {
    /// Sums up `tallies`.
    pub fn new(shape: &RunShape, tallies: &Tallies) -> Self {
        let d = shape.duration_s;
        let a_to_b = DirectionReport::new(
            tallies.send[Direction::AToB.index()],
            &tallies.receive[Direction::AToB.index()],
            d,
        );
        let b_to_a = DirectionReport::new(
            tallies.send[Direction::BToA.index()],
            &tallies.receive[Direction::BToA.index()],
            d,
        );
        let mut both = tallies.receive[0].clone();
        both.merge(&tallies.receive[1]);
        let sent = a_to_b.sent + b_to_a.sent;
        let lost = a_to_b.lost + b_to_a.lost;
        Self {
            calls: shape.calls,
            duration_s: d,
            pps_per_stream: shape.pps_per_stream,
            target_pps: u64::from(shape.calls) * 2 * shape.pps_per_stream,
            srtp_suite: shape.srtp_suite.clone(),
            packet_bytes: shape.packet_bytes,
            offered_pps: rate(sent, d),
            received_pps: rate(both.received, d),
            sent,
            received: both.received,
            lost,
            loss_ratio: ratio(lost, sent),
            duplicates: both.duplicates,
            out_of_order: both.out_of_order,
            corrupt: both.corrupt,
            auth_failures: both.auth_failures,
            send_errors: a_to_b.send_errors + b_to_a.send_errors,
            latency_us: LatencyReport::from_histogram(&both.latency),
            per_direction: PerDirection { a_to_b, b_to_a },
        }
    }

    /// Whether the run is clean at `max_loss`: loss at most that, nothing corrupt, no
    /// authentication failure and nothing unsendable.
    pub fn is_clean(&self, max_loss: f64) -> bool {
        self.loss_ratio <= max_loss
            && self.corrupt == 0
            && self.auth_failures == 0
            && self.send_errors == 0
            && self.sent > 0
    }

    /// A few human lines.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} calls x 2 streams at {} pps ({} pps target), {} bytes/packet, {}, {:.1} s\n",
            self.calls,
            self.pps_per_stream,
            self.target_pps,
            self.packet_bytes,
            self.srtp_suite
                .as_deref()
                .map_or_else(|| "plain RTP".to_owned(), |s| format!("SRTP {s} on leg A")),
            self.duration_s
        );
        let _ = writeln!(
            out,
            "total:  offered {:.0} pps, received {:.0} pps; sent {} received {} lost {} \
             ({:.4}%); dup {} ooo {} corrupt {} auth-fail {} send-err {}; latency p50 {} us \
             p99 {} us max {} us",
            self.offered_pps,
            self.received_pps,
            self.sent,
            self.received,
            self.lost,
            self.loss_ratio * 100.0,
            self.duplicates,
            self.out_of_order,
            self.corrupt,
            self.auth_failures,
            self.send_errors,
            self.latency_us.p50,
            self.latency_us.p99,
            self.latency_us.max
        );
        for (name, d) in [
            ("A->B", &self.per_direction.a_to_b),
            ("B->A", &self.per_direction.b_to_a),
        ] {
            let _ = writeln!(
                out,
                "{name}:   sent {} received {} lost {} ({:.4}%); dup {} ooo {} corrupt {} \
                 auth-fail {}; latency p50 {} us p99 {} us max {} us",
                d.sent,
                d.received,
                d.lost,
                d.loss_ratio * 100.0,
                d.duplicates,
                d.out_of_order,
                d.corrupt,
                d.auth_failures,
                d.latency_us.p50,
                d.latency_us.p99,
                d.latency_us.max
            );
        }
        out
    }
}

/// `count / seconds` (0 for an empty window).
pub fn rate(count: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let count = count as f64;
    count / seconds
}

/// `part / whole` (0 when `whole` is 0).
pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let r = part as f64 / whole as f64;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::pacer::{Phase, NANOS_PER_SEC};

    /// Two streams (one call): an unmeasured warm-up of 1 s, 1 s at 100 pps (indices
    /// 50..150), then 2 s at 25 pps (indices 150..200), the last second of it (indices
    /// 175..200) the window.
    fn ledger() -> ReceiveLedger {
        let plan = PhasePlan::new(
            2,
            &[
                Phase {
                    rate: 50,
                    duration_ns: NANOS_PER_SEC,
                },
                Phase {
                    rate: 100,
                    duration_ns: NANOS_PER_SEC,
                },
                Phase {
                    rate: 25,
                    duration_ns: 2 * NANOS_PER_SEC,
                },
            ],
        );
        let window = plan.phases()[2].tail(NANOS_PER_SEC);
        assert_eq!(window, 175..200);
        ReceiveLedger::new(plan, vec![false, true, true], 2, window)
    }

    fn packet(index: u64) -> Verified {
        Verified {
            index,
            sent_ns: 1_000,
        }
    }

    #[test]
    fn a_packet_is_booked_to_the_phase_of_its_index_whenever_it_arrives() {
        let mut books = ledger();
        let (a_to_b, b_to_a) = (Direction::AToB, Direction::BToA);
        books.record(0, a_to_b, Ok(packet(10)), 5_000);
        books.record(0, a_to_b, Ok(packet(50)), 5_000);
        books.record(0, a_to_b, Ok(packet(51)), 5_000);
        // Index 149 (the overload phase) arriving during the recovery still counts for the
        // overload; index 150 for the recovery.
        books.record(1, b_to_a, Ok(packet(149)), 3 * NANOS_PER_SEC);
        books.record(1, b_to_a, Ok(packet(150)), 3 * NANOS_PER_SEC);
        books.record(1, b_to_a, Ok(packet(150)), 3 * NANOS_PER_SEC);
        books.record(1, b_to_a, Ok(packet(199)), 3 * NANOS_PER_SEC);
        books.record(1, b_to_a, Ok(packet(180)), 3 * NANOS_PER_SEC);
        assert_eq!(books.received(a_to_b), 2);
        assert_eq!(books.received(b_to_a), 4);
        let (tallies, window) = books.into_parts();
        let [warmup, overload, recovery] = tallies.as_slice() else {
            panic!("three phases")
        };
        assert_eq!(warmup[0].ignored, 1, "the warm-up is not counted");
        assert_eq!(warmup[0].received, 0);
        assert_eq!((overload[0].received, overload[1].received), (2, 1));
        assert_eq!(recovery[1].received, 3);
        assert_eq!(recovery[1].duplicates, 1);
        assert_eq!(recovery[1].out_of_order, 1, "180 after 199");
        assert_eq!(recovery[1].latency.count(), 3);
        assert_eq!(
            window.counts(),
            &[0, 2],
            "199 and 180 are in the window; the duplicate is not counted twice"
        );
    }

    #[test]
    fn a_packet_that_cannot_be_placed_is_charged_to_the_phase_in_progress() {
        let mut books = ledger();
        let d = Direction::BToA;
        // During the warm-up: charged to the first measured phase, never lost in the warm-up.
        books.record(1, d, Err(Mismatch::Corrupt("filler")), 0);
        books.by_time(d, NANOS_PER_SEC - 1).auth_failures += 1;
        books.by_time(d, NANOS_PER_SEC).auth_failures += 1;
        books.record(1, d, Err(Mismatch::OtherRun), 2 * NANOS_PER_SEC);
        // During the drain, after the last phase's time: the last phase.
        books.by_time(d, 60 * NANOS_PER_SEC).duplicates += 1;
        // A verified index past the plan is no packet of this run's schedule.
        books.record(1, d, Ok(packet(200)), 60 * NANOS_PER_SEC);
        let (tallies, window) = books.into_parts();
        let t = |phase: usize| &tallies[phase][d.index()];
        assert_eq!((t(0).corrupt, t(0).auth_failures), (0, 0));
        assert_eq!((t(1).corrupt, t(1).auth_failures), (1, 2));
        assert_eq!(t(2).ignored, 1);
        assert_eq!((t(2).duplicates, t(2).corrupt), (1, 1));
        assert_eq!(window.counts(), &[0, 0]);
    }

    #[test]
    fn a_window_counts_only_its_indices_and_known_streams() {
        let mut window = WindowCounter::new(3, 10..20);
        for (stream, index) in [(0, 9), (0, 10), (0, 19), (0, 20), (2, 15), (3, 15)] {
            window.record(stream, index);
        }
        assert_eq!(window.counts(), &[2, 0, 1]);
        let mut none = WindowCounter::new(2, 0..0);
        none.record(0, 0);
        assert_eq!(none.counts(), &[0, 0]);
    }

    #[test]
    fn streams_are_alive_at_ninety_percent_and_dead_at_nothing() {
        let health = StreamHealth::classify([
            (100, 100), // alive
            (100, 90),  // alive, just
            (100, 89),  // partly
            (100, 1),   // partly
            (100, 0),   // dead
            (0, 0),     // nothing sent in the window: neither
            (3, 3),     // alive
        ]);
        assert_eq!(
            health,
            StreamHealth {
                streams_total: 7,
                streams_alive: 3,
                streams_dead: 1,
            }
        );
        let json = serde_json::to_value(health).unwrap();
        assert_eq!(json["streams_alive"], 3);
        assert_eq!(json["streams_dead"], 1);
        assert_eq!(json["streams_total"], 7);
    }

    #[test]
    fn tracker_tells_order_duplicates_and_lateness() {
        let mut t = SequenceTracker::default();
        assert_eq!(t.observe(5), Arrival::InOrder);
        assert_eq!(t.observe(6), Arrival::InOrder);
        assert_eq!(t.observe(9), Arrival::InOrder);
        assert_eq!(t.observe(7), Arrival::Late);
        assert_eq!(t.observe(7), Arrival::Duplicate);
        assert_eq!(t.observe(9), Arrival::Duplicate);
        assert_eq!(t.observe(8), Arrival::Late);
        // Jump past the window: the old bits are forgotten, not mistaken for the new ones.
        assert_eq!(t.observe(9 + TRACK_WINDOW + 3), Arrival::InOrder);
        assert_eq!(t.observe(9 + TRACK_WINDOW + 1), Arrival::Late);
        assert_eq!(t.observe(9 + TRACK_WINDOW + 1), Arrival::Duplicate);
        assert_eq!(t.observe(9), Arrival::Late, "older than the window");
    }

    #[test]
    fn tracker_clears_the_slots_it_moves_over() {
        let mut t = SequenceTracker::default();
        for i in 0..TRACK_WINDOW {
            assert_eq!(t.observe(i), Arrival::InOrder);
        }
        // Index TRACK_WINDOW + 5 reuses the slots of 0..=5; 1..=4 (skipped) must read as unseen.
        assert_eq!(t.observe(TRACK_WINDOW + 5), Arrival::InOrder);
        assert_eq!(t.observe(TRACK_WINDOW + 2), Arrival::Late);
        assert_eq!(t.observe(TRACK_WINDOW + 2), Arrival::Duplicate);
    }

    #[test]
    fn report_adds_up_both_directions() {
        let mut tallies = Tallies::default();
        tallies.send[0] = SendTally {
            sent: 1000,
            send_errors: 0,
        };
        tallies.send[1] = SendTally {
            sent: 1000,
            send_errors: 0,
        };
        tallies.receive[0].received = 1000;
        tallies.receive[1].received = 998;
        tallies.receive[1].auth_failures = 1;
        for v in [100_000, 200_000] {
            tallies.receive[0].latency.record(v);
        }
        tallies.receive[1].latency.record(300_000);
        let shape = RunShape {
            calls: 10,
            pps_per_stream: 50,
            duration_s: 2.0,
            srtp_suite: Some("AES_CM_128_HMAC_SHA1_80".into()),
            packet_bytes: 172,
        };
        let report = Report::new(&shape, &tallies);
        assert_eq!(report.target_pps, 1000);
        assert_eq!((report.sent, report.received, report.lost), (2000, 1998, 2));
        assert!((report.loss_ratio - 0.001).abs() < 1e-12);
        assert!((report.offered_pps - 1000.0).abs() < 1e-9);
        assert_eq!(report.per_direction.b_to_a.lost, 2);
        assert_eq!(report.auth_failures, 1);
        assert!(!report.is_clean(0.001), "an auth failure is never clean");
        assert!((report.latency_us.max - 300.0).abs() < 1e-9);
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "calls",
            "duration_s",
            "offered_pps",
            "received_pps",
            "sent",
            "received",
            "lost",
            "loss_ratio",
            "duplicates",
            "out_of_order",
            "corrupt",
            "auth_failures",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert!(json["latency_us"]["p99"].is_number());
        assert!(json["per_direction"]["a_to_b"]["sent"].is_number());
        assert!(json["per_direction"]["b_to_a"]["latency_us"]["p50"].is_number());
        assert!(report.summary().contains("lost 2"));
    }
}
