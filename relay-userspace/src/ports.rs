//! Media port allocation per interface: even RTP ports, RTCP on the next odd port, a released
//! pair kept out of use for a quarantine (late packets of the old call must not reach a new
//! one). IO-free: time is an argument.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// Allocates port pairs `(p, p + 1)`, `p` even, from a range.
#[derive(Debug)]
pub struct PortAllocator {
    /// Free pairs, by their even port, oldest-released first.
    free: VecDeque<u16>,
    /// Released pairs waiting out the quarantine, in release order.
    quarantined: VecDeque<(Instant, u16)>,
    quarantine: Duration,
    total: usize,
}

impl PortAllocator {
    /// Pairs from `[min, max]` (the first even port at or above `min`; a pair whose RTCP port
    /// would pass `max` is left out).
    pub fn new(min: u16, max: u16, quarantine: Duration) -> Self {
        let first = u32::from(min).next_multiple_of(2);
        let free: VecDeque<u16> = (first..u32::from(max))
            .step_by(2)
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        let total = free.len();
        Self {
            free,
            quarantined: VecDeque::new(),
            quarantine,
            total,
        }
    }

    /// Takes a pair; `None` when every pair is in use or quarantined.
    pub fn allocate(&mut self, now: Instant) -> Option<u16> {
        self.release_expired(now);
        self.free.pop_front()
    }

    /// Takes a specific pair (to re-adopt a port), if it is free.
    pub fn take(&mut self, port: u16, now: Instant) -> bool {
        self.release_expired(now);
        match self.free.iter().position(|&p| p == port) {
            Some(i) => {
                self.free.remove(i);
                true
            }
            None => false,
        }
    }

    /// Returns a pair; it is handed out again only after the quarantine.
    pub fn release(&mut self, port: u16, now: Instant) {
        self.quarantined.push_back((now, port));
    }

    /// Puts back a pair that was allocated but never used (a failed bind, a refused request):
    /// no quarantine, since no packet could have been sent to it.
    pub fn put_back(&mut self, port: u16) {
        self.free.push_front(port);
    }

    fn release_expired(&mut self, now: Instant) {
        while let Some(&(at, port)) = self.quarantined.front() {
            if now.saturating_duration_since(at) < self.quarantine {
                break;
            }
            self.quarantined.pop_front();
            self.free.push_back(port);
        }
    }

    /// Pairs the range holds.
    pub fn capacity(&self) -> usize {
        self.total
    }

    /// Pairs available now.
    pub fn available(&mut self, now: Instant) -> usize {
        self.release_expired(now);
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::PortAllocator;

    #[test]
    fn pairs_are_even_and_inside_the_range() {
        let now = Instant::now();
        let mut ports = PortAllocator::new(30_001, 30_010, Duration::from_secs(30));
        let mut got = Vec::new();
        while let Some(p) = ports.allocate(now) {
            got.push(p);
        }
        assert_eq!(got, vec![30_002, 30_004, 30_006, 30_008]);
        assert_eq!(ports.capacity(), 4);
    }

    #[test]
    fn released_pairs_wait_out_the_quarantine() {
        let t0 = Instant::now();
        let mut ports = PortAllocator::new(40_000, 40_003, Duration::from_secs(30));
        let a = ports.allocate(t0).unwrap();
        let b = ports.allocate(t0).unwrap();
        assert_eq!(ports.allocate(t0), None, "exhausted");
        ports.release(a, t0);
        assert_eq!(
            ports.allocate(t0 + Duration::from_secs(29)),
            None,
            "still quarantined"
        );
        assert_eq!(ports.allocate(t0 + Duration::from_secs(30)), Some(a));
        ports.put_back(b);
        assert_eq!(
            ports.allocate(t0 + Duration::from_secs(30)),
            Some(b),
            "no quarantine"
        );
    }

    #[test]
    fn a_specific_free_pair_can_be_taken() {
        let now = Instant::now();
        let mut ports = PortAllocator::new(40_000, 40_009, Duration::ZERO);
        assert!(ports.take(40_004, now));
        assert!(!ports.take(40_004, now));
        assert_eq!(ports.available(now), 4);
    }
}
