//! Counting what arrived: a per-stream sequence tracker (unique, duplicate, out of order), the
//! per-direction tallies and latency histograms, and the report they add up to.

use std::fmt::Write as _;

use serde::Serialize;

use super::{histogram::Histogram, payload::Direction};

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
