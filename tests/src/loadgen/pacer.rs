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
    fn packet_counts_follow_duration_and_rate() {
        assert_eq!(Schedule::packets_in(50, 10 * NANOS_PER_SEC), 500);
        assert_eq!(Schedule::packets_in(333, 3 * NANOS_PER_SEC), 999);
        assert_eq!(Schedule::packets_in(u64::MAX, u64::MAX), u64::MAX);
    }
}
