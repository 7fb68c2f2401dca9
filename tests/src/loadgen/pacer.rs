//! Pacing, with no clock of its own: given the time since the run's start, which packets are
//! due.
//!
//! `n` streams send at `rate` packets per second each. Their packets form one global sequence,
//! round robin over the streams: global packet `g` is packet `g / n` of stream `g % n` and is
//! due at `ceil(g * 1 s / (rate * n))`. So stream `s` starts at phase `s / (rate * n)` and then
//! sends every `1 / rate` seconds: the streams are spread evenly over each interval instead of
//! leaving in one burst, and a tick costs time in proportion to the packets due, not to the
//! number of streams. All arithmetic is in integer nanoseconds from the start, so rounding
//! never accumulates: a sender that wakes late sends what it owes, and the long-run rate is
//! exact.

use std::ops::Range;

/// Nanoseconds per second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;
/// Most packets per stream a phase leaves unsent when its time is up and the sender is behind:
/// RTP sequence numbers then jump by that much, and a jump of 2^15 or more would make an SRTP
/// receiver guess the wrong rollover counter (RFC 3711 §3.3.1). A sender further behind keeps
/// sending the phase until it is within this.
pub const MAX_SKIP: u64 = 1 << 14;

/// The schedule of a set of streams at a common rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    rate: u64,
    streams: u64,
    total_per_stream: u64,
}

impl Schedule {
    /// `streams` streams at `rate` packets/s, each sending `total_per_stream` packets.
    ///
    /// # Panics
    /// When `rate` or `streams` is zero.
    pub fn new(rate: u64, streams: u64, total_per_stream: u64) -> Self {
        assert!(
            rate > 0 && streams > 0,
            "a schedule needs a rate and streams"
        );
        Self {
            rate,
            streams,
            total_per_stream,
        }
    }

    /// Packets per stream for `duration_ns` of sending at `rate`: floor(duration * rate).
    pub fn packets_in(rate: u64, duration_ns: u64) -> u64 {
        mul_div(duration_ns, rate, NANOS_PER_SEC)
    }

    /// Packets each stream sends in all.
    pub fn total_per_stream(&self) -> u64 {
        self.total_per_stream
    }

    /// Packets of all streams together.
    pub fn total(&self) -> u64 {
        self.total_per_stream.saturating_mul(self.streams)
    }

    /// The stream and the per-stream index of global packet `g`.
    pub fn split(&self, g: u64) -> (u64, u64) {
        (g % self.streams, g / self.streams)
    }

    /// How many packets of `stream` come before global packet `g`.
    pub fn stream_count_before(&self, stream: u64, g: u64) -> u64 {
        g.saturating_sub(stream).div_ceil(self.streams)
    }

    /// When global packet `g` is due, in ns since the start.
    pub fn due_at(&self, g: u64) -> u64 {
        let per_sec = u128::from(self.rate) * u128::from(self.streams);
        let ns = (u128::from(g) * u128::from(NANOS_PER_SEC)).div_ceil(per_sec);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// How many global packets are due `now_ns` after the start (never more than the total).
    pub fn due_total(&self, now_ns: u64) -> u64 {
        // g is due when ceil(g * 1e9 / (rate * n)) <= now, i.e. g <= now * rate * n / 1e9.
        let per_sec = u128::from(self.rate) * u128::from(self.streams);
        let due = u128::from(now_ns) * per_sec / u128::from(NANOS_PER_SEC) + 1;
        u64::try_from(due).unwrap_or(u64::MAX).min(self.total())
    }

    /// The global packets that became due after `sent` were sent, up to `now_ns`.
    pub fn due_range(&self, sent: u64, now_ns: u64) -> Range<u64> {
        sent..self.due_total(now_ns).max(sent)
    }

    /// How many packets `stream` should have sent `now_ns` after the start.
    pub fn due_by(&self, stream: u64, now_ns: u64) -> u64 {
        self.stream_count_before(stream, self.due_total(now_ns))
    }

    /// When the last packet is due (ns since the start; 0 with nothing to send).
    pub fn end_ns(&self) -> u64 {
        self.due_at(self.total().saturating_sub(1))
    }
}

/// One stretch of a run in which every stream sends at one rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    /// Packets per second per stream.
    pub rate: u64,
    /// Nominal length in ns: the next phase starts this long after this one.
    pub duration_ns: u64,
}

/// A phase placed on the run's time line and in the streams' packet indices.
///
/// ```text
///  time   0 ......... start_ns ........................ start_ns + duration_ns
///  index  earlier phases | first_index .. first_index + total_per_stream | later phases
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedPhase {
    /// Its pacing, relative to `start_ns`.
    pub schedule: Schedule,
    /// When it starts, in ns since the run's start.
    pub start_ns: u64,
    /// Its nominal length.
    pub duration_ns: u64,
    /// Per-stream index of its first packet: the packets of earlier phases come before it, so
    /// sequence numbers (and SRTP indices) run on across phases.
    pub first_index: u64,
}

impl PlacedPhase {
    /// The phase's global packets that became due after `sent` of them were sent, up to
    /// `now_ns` after the run's start (none before the phase starts).
    pub fn due_range(&self, sent: u64, now_ns: u64) -> Range<u64> {
        match now_ns.checked_sub(self.start_ns) {
            Some(local) => self.schedule.due_range(sent, local),
            None => sent..sent,
        }
    }

    /// The stream and the per-stream (run-wide) index of the phase's global packet `g`.
    pub fn packet(&self, g: u64) -> (u64, u64) {
        let (stream, index) = self.schedule.split(g);
        (stream, self.first_index + index)
    }

    /// How many packets of `stream` come before the phase's global packet `g`, counted from
    /// the start of the run.
    pub fn index_before(&self, stream: u64, g: u64) -> u64 {
        self.first_index + self.schedule.stream_count_before(stream, g)
    }

    /// The per-stream indices of the phase's packets.
    pub fn indices(&self) -> Range<u64> {
        self.first_index..self.first_index + self.schedule.total_per_stream()
    }

    /// The per-stream indices of the packets due in the phase's last `tail_ns` (all of them
    /// when the tail is longer than the phase).
    pub fn tail(&self, tail_ns: u64) -> Range<u64> {
        let indices = self.indices();
        let count =
            Schedule::packets_in(self.schedule.rate, tail_ns).min(self.schedule.total_per_stream());
        indices.end - count..indices.end
    }

    /// When its last packet is due, in ns since the run's start.
    pub fn last_due_ns(&self) -> u64 {
        self.start_ns.saturating_add(self.schedule.end_ns())
    }

    /// When its time is up (the next phase starts), in ns since the run's start.
    pub fn end_ns(&self) -> u64 {
        self.start_ns.saturating_add(self.duration_ns)
    }
}

/// Consecutive phases over the same streams, with no pause and no restart between them: phase
/// `i + 1` starts when phase `i`'s nominal time is up, and its packet indices continue where
/// phase `i`'s stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhasePlan {
    phases: Vec<PlacedPhase>,
}

impl PhasePlan {
    /// `streams` streams through `phases` in order; a phase sends at least one packet per
    /// stream.
    ///
    /// # Panics
    /// When `streams` is zero, a rate is zero or there is no phase.
    pub fn new(streams: u64, phases: &[Phase]) -> Self {
        assert!(!phases.is_empty(), "a plan needs a phase");
        let mut start_ns = 0_u64;
        let mut first_index = 0_u64;
        let placed = phases
            .iter()
            .map(|phase| {
                let per_stream = Schedule::packets_in(phase.rate, phase.duration_ns).max(1);
                let placed = PlacedPhase {
                    schedule: Schedule::new(phase.rate, streams, per_stream),
                    start_ns,
                    duration_ns: phase.duration_ns,
                    first_index,
                };
                start_ns = start_ns.saturating_add(phase.duration_ns);
                first_index = first_index.saturating_add(per_stream);
                placed
            })
            .collect();
        Self { phases: placed }
    }

    /// The phases in order.
    pub fn phases(&self) -> &[PlacedPhase] {
        &self.phases
    }

    /// The phase a per-stream packet index belongs to (`None` past the last).
    pub fn phase_of_index(&self, index: u64) -> Option<usize> {
        self.phases
            .iter()
            .position(|p| p.indices().contains(&index))
    }

    /// Whether a sender that has sent `sent` of phase `phase`'s global packets by `now_ns` is
    /// done with it: it sent them all, or (for any phase but the last) the phase's time is up
    /// and leaving the rest unsent skips at most [`MAX_SKIP`] packets per stream. So a sender
    /// that fell behind starts the next phase on time (its rate, not a burst of the backlog)
    /// and the packets it could not offer are not offered; the last phase is always sent in
    /// full.
    pub fn is_done(&self, phase: usize, sent: u64, now_ns: u64) -> bool {
        let Some(placed) = self.phases.get(phase) else {
            return true;
        };
        let schedule = &placed.schedule;
        let left = schedule.total().saturating_sub(sent);
        left == 0
            || (phase + 1 < self.phases.len()
                && now_ns >= placed.end_ns()
                && left.div_ceil(schedule.streams) <= MAX_SKIP)
    }

    /// The phase in progress `now_ns` after the run's start: the last one that has started
    /// (the last phase stays current after its time is up).
    pub fn phase_at(&self, now_ns: u64) -> usize {
        self.phases
            .iter()
            .rposition(|p| p.start_ns <= now_ns)
            .unwrap_or(0)
    }
}

/// `a * b / c` rounded down, in 128-bit arithmetic (saturating at `u64::MAX`).
fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    u64::try_from(u128::from(a) * u128::from(b) / u128::from(c)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stream_at_50_pps_sends_every_20_ms() {
        let s = Schedule::new(50, 1, 500);
        assert_eq!(s.due_by(0, 0), 1, "packet 0 leaves at once");
        assert_eq!(s.due_by(0, 19_999_999), 1);
        assert_eq!(s.due_by(0, 20_000_000), 2);
        assert_eq!(s.due_by(0, 9_980_000_000), 500);
        assert_eq!(s.due_by(0, 60 * NANOS_PER_SEC), 500, "capped at the total");
        assert_eq!(s.end_ns(), 9_980_000_000);
    }

    #[test]
    fn streams_are_spread_over_the_interval() {
        let s = Schedule::new(50, 4, 10);
        let starts: Vec<u64> = (0..4).map(|g| s.due_at(g)).collect();
        assert_eq!(starts, vec![0, 5_000_000, 10_000_000, 15_000_000]);
        assert_eq!(s.split(4), (0, 1));
        assert_eq!(
            s.due_at(4),
            20_000_000,
            "stream 0's second packet, one interval on"
        );
        assert_eq!(s.due_by(3, 14_999_999), 0);
        assert_eq!(s.due_by(3, 15_000_000), 1);
        assert_eq!(s.due_range(0, 14_999_999), 0..3);
        assert_eq!(s.due_range(3, 14_999_999), 3..3);
        assert_eq!(s.end_ns(), 195_000_000);
        assert_eq!(s.due_total(u64::MAX), 40);
    }

    #[test]
    fn long_run_rate_is_exact_whatever_the_tick() {
        // 333 pps does not divide 1 s evenly; sample at an awkward tick.
        let s = Schedule::new(333, 7, u64::MAX / 8);
        let mut per_stream = [0_u64; 7];
        let mut sent = 0;
        let mut now = 0;
        let mut max_burst = [0_u64; 7];
        while now <= 10 * NANOS_PER_SEC {
            let range = s.due_range(sent, now);
            let mut burst = [0_u64; 7];
            for g in range.clone() {
                let (stream, index) = s.split(g);
                let stream = usize::try_from(stream).unwrap();
                assert_eq!(index, per_stream[stream], "in order, none skipped");
                per_stream[stream] += 1;
                burst[stream] += 1;
            }
            for (m, b) in max_burst.iter_mut().zip(burst) {
                *m = (*m).max(b);
            }
            sent = range.end;
            now += 1_234_567;
        }
        for (stream, &count) in per_stream.iter().enumerate() {
            // 10 s at 333 pps: 3330 packets, give or take the phase and the last sample.
            assert!((3329..=3331).contains(&count), "stream {stream}: {count}");
        }
        assert!(
            max_burst.iter().all(|&b| b <= 1),
            "a 1.2 ms tick never owes a stream two packets at 333 pps"
        );
    }

    #[test]
    fn due_times_and_due_counts_agree() {
        let s = Schedule::new(997, 3, 1000);
        for g in [0, 1, 2, 3, 500, 1501, 2999] {
            let at = s.due_at(g);
            assert_eq!(s.due_total(at), g + 1, "{g}");
            if at > 0 {
                assert_eq!(s.due_total(at - 1), g, "{g}");
            }
        }
    }

    #[test]
    fn per_stream_counts_follow_the_round_robin() {
        let s = Schedule::new(50, 3, 100);
        // Global packets 0..7 are streams 0,1,2,0,1,2,0.
        assert_eq!(s.stream_count_before(0, 7), 3);
        assert_eq!(s.stream_count_before(1, 7), 2);
        assert_eq!(s.stream_count_before(2, 7), 2);
        assert_eq!(s.stream_count_before(2, 2), 0);
        assert_eq!(s.stream_count_before(2, 3), 1);
    }

    #[test]
    fn phases_follow_each_other_and_continue_the_indices() {
        let plan = PhasePlan::new(
            2,
            &[
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
        let [fast, slow] = plan.phases() else {
            panic!("two phases")
        };
        assert_eq!((fast.start_ns, fast.indices()), (0, 0..100));
        assert_eq!((slow.start_ns, slow.indices()), (NANOS_PER_SEC, 100..150));
        assert_eq!(
            slow.due_range(0, NANOS_PER_SEC - 1),
            0..0,
            "not started yet"
        );
        assert_eq!(slow.due_range(0, NANOS_PER_SEC), 0..1);
        assert_eq!(slow.packet(0), (0, 100), "stream 0 goes on at index 100");
        assert_eq!(slow.packet(3), (1, 101));
        assert_eq!(slow.index_before(1, 3), 101);
        assert_eq!(slow.index_before(0, 3), 102);
        // Stream 1's packets at 25 pps over 2 streams: 20 ms phase, 40 ms apart.
        assert_eq!(slow.last_due_ns(), NANOS_PER_SEC + 1_980_000_000);
        assert_eq!(fast.last_due_ns(), 995_000_000);
        assert_eq!(
            slow.tail(NANOS_PER_SEC),
            125..150,
            "the last second: 25 packets"
        );
        assert_eq!(
            slow.tail(10 * NANOS_PER_SEC),
            100..150,
            "capped at the phase"
        );
        assert_eq!(plan.phase_of_index(99), Some(0));
        assert_eq!(plan.phase_of_index(100), Some(1));
        assert_eq!(plan.phase_of_index(150), None);
        assert_eq!(plan.phase_at(0), 0);
        assert_eq!(plan.phase_at(NANOS_PER_SEC - 1), 0);
        assert_eq!(plan.phase_at(NANOS_PER_SEC), 1);
        assert_eq!(
            plan.phase_at(60 * NANOS_PER_SEC),
            1,
            "the last phase stays current"
        );
    }

    #[test]
    fn a_late_sender_leaves_a_phase_on_time_unless_the_jump_is_too_long() {
        let phase = |rate, secs| Phase {
            rate,
            duration_ns: secs * NANOS_PER_SEC,
        };
        let plan = PhasePlan::new(2, &[phase(100, 1), phase(10, 1)]);
        let total = plan.phases()[0].schedule.total();
        assert_eq!(total, 200);
        assert_eq!(plan.phases()[0].end_ns(), NANOS_PER_SEC);
        assert!(plan.is_done(0, total, 0), "all sent");
        assert!(!plan.is_done(0, 150, NANOS_PER_SEC - 1), "time is not up");
        assert!(
            plan.is_done(0, 150, NANOS_PER_SEC),
            "25 per stream left unsent"
        );
        assert!(plan.is_done(0, 0, 5 * NANOS_PER_SEC));
        assert!(
            !plan.is_done(1, 10, 60 * NANOS_PER_SEC),
            "the last phase is sent in full"
        );
        assert!(plan.is_done(1, 20, 0));
        assert!(plan.is_done(2, 0, 0), "past the plan");

        // 2^15 packets per stream in one second: a late sender may skip 2^14 of them, no more.
        let plan = PhasePlan::new(2, &[phase(1 << 15, 1), phase(1, 1)]);
        let total = plan.phases()[0].schedule.total();
        assert!(!plan.is_done(0, total - 2 * MAX_SKIP - 2, NANOS_PER_SEC));
        assert!(plan.is_done(0, total - 2 * MAX_SKIP, NANOS_PER_SEC));
    }

    #[test]
    fn a_phase_shorter_than_a_packet_interval_still_sends_one() {
        let plan = PhasePlan::new(
            3,
            &[Phase {
                rate: 1,
                duration_ns: 1,
            }],
        );
        assert_eq!(plan.phases()[0].indices(), 0..1);
        assert_eq!(plan.phases()[0].schedule.total(), 3);
    }

    #[test]
    fn packet_counts_follow_duration_and_rate() {
        assert_eq!(Schedule::packets_in(50, 10 * NANOS_PER_SEC), 500);
        assert_eq!(Schedule::packets_in(333, 3 * NANOS_PER_SEC), 999);
        assert_eq!(Schedule::packets_in(u64::MAX, u64::MAX), u64::MAX);
    }
}
