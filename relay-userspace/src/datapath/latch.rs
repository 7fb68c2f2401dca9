//! Latching (learning the peer's transport address from its packets) and strict source: the
//! decisions only, IO-free, with time as an argument.
//!
//! A learning leg takes the source of the first *accepted* packet, and follows the source of
//! accepted packets while its latch window (counted from that first packet) is open; then it
//! locks. "Accepted" means authenticated for SRTP legs: the datapath asks [`Latch::admits`]
//! before spending crypto on a packet and calls [`Latch::accept`] only after the packet
//! verified, so a forged packet never moves a latch (RTP-bleed defence). A fixed leg never
//! learns. On a strict leg, once locked (or fixed), packets from any other source are dropped.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::model::LatchMode;

/// Latch state of one transport (RTP or RTCP) of a leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latch {
    mode: LatchMode,
    strict: bool,
    window: Duration,
    /// From signalling.
    signalled: Option<SocketAddr>,
    /// Learned from packets.
    learned: Option<SocketAddr>,
    /// First accepted packet.
    first_at: Option<Instant>,
}

impl Latch {
    /// A latch with nothing learned yet.
    pub fn new(
        mode: LatchMode,
        strict: bool,
        window: Duration,
        signalled: Option<SocketAddr>,
    ) -> Self {
        Self {
            mode,
            strict,
            window,
            signalled,
            learned: None,
            first_at: None,
        }
    }

    /// Same settings (so learned state can be carried over a re-programming).
    pub fn same_settings(&self, other: &Self) -> bool {
        self.mode == other.mode && self.signalled == other.signalled
    }

    /// A learning latch that already learned `learned` and is locked (its window closed at
    /// `now`): how a restarted relayd resumes what its predecessor learned.
    #[must_use]
    pub fn seeded(mut self, learned: Option<SocketAddr>, now: Instant) -> Self {
        if let (LatchMode::Learn, Some(address)) = (self.mode, learned) {
            self.learned = Some(address);
            self.first_at = Some(now.checked_sub(self.window).unwrap_or(now));
        }
        self
    }

    /// Takes the learned state of `old`, keeping this latch's strictness and window.
    #[must_use]
    pub fn carrying(mut self, old: &Self) -> Self {
        self.learned = old.learned;
        self.first_at = old.first_at;
        self
    }

    fn locked(&self, now: Instant) -> bool {
        match self.mode {
            LatchMode::Fixed => true,
            LatchMode::Learn => self
                .first_at
                .is_some_and(|first| now.saturating_duration_since(first) >= self.window),
        }
    }

    /// The address this transport expects packets from and sends packets to.
    pub fn destination(&self) -> Option<SocketAddr> {
        match self.mode {
            LatchMode::Fixed => self.signalled,
            LatchMode::Learn => self.learned.or(self.signalled),
        }
    }

    /// When a learning latch stops following (its window, counted from the first accepted
    /// packet, closes); `None` before any packet and for fixed latches.
    pub fn locks_at(&self) -> Option<Instant> {
        match self.mode {
            LatchMode::Fixed => None,
            LatchMode::Learn => self.first_at.map(|first| first + self.window),
        }
    }

    /// The learned source, if any.
    pub fn learned(&self) -> Option<SocketAddr> {
        self.learned
    }

    /// Whether a packet from `source` may be processed at all.
    pub fn admits(&self, source: SocketAddr, now: Instant) -> bool {
        match self.destination() {
            None => true,
            Some(expected) if expected == source => true,
            Some(_) => !(self.strict && self.locked(now)),
        }
    }

    /// Records an accepted (authenticated, on SRTP legs) packet from `source`; returns whether
    /// the latch moved.
    pub fn accept(&mut self, source: SocketAddr, now: Instant) -> bool {
        let open = !self.locked(now);
        self.first_at.get_or_insert(now);
        if self.mode == LatchMode::Learn && open && self.learned != Some(source) {
            self.learned = Some(source);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Latch;
    use crate::model::LatchMode;

    fn addr(port: u16) -> std::net::SocketAddr {
        ([127, 0, 0, 1], port).into()
    }

    #[test]
    fn learning_follows_within_the_window_then_locks() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let mut latch = Latch::new(LatchMode::Learn, true, window, Some(addr(5000)));
        assert_eq!(
            latch.destination(),
            Some(addr(5000)),
            "signalled until learned"
        );
        assert!(
            latch.admits(addr(6000), t0),
            "anyone before the first packet"
        );
        assert!(latch.accept(addr(6000), t0));
        assert_eq!(latch.destination(), Some(addr(6000)));
        // Inside the window the latch follows (a NAT rebinding at call start).
        assert!(latch.admits(addr(6001), t0 + Duration::from_secs(5)));
        assert!(latch.accept(addr(6001), t0 + Duration::from_secs(5)));
        // After the window: strict drops others, and nothing moves.
        let later = t0 + window;
        assert!(!latch.admits(addr(6002), later));
        assert!(latch.admits(addr(6001), later));
        assert!(!latch.accept(addr(6002), later));
        assert_eq!(latch.destination(), Some(addr(6001)));
    }

    #[test]
    fn a_seeded_latch_is_locked_on_its_address() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let latch = Latch::new(LatchMode::Learn, true, window, None).seeded(Some(addr(9)), t0);
        assert_eq!(latch.destination(), Some(addr(9)));
        assert!(
            !latch.admits(addr(8), t0),
            "locked: strangers are refused at once"
        );
        assert!(latch
            .locks_at()
            .is_some_and(|at| at <= t0 + Duration::from_millis(1)));
        let fixed =
            Latch::new(LatchMode::Fixed, true, window, Some(addr(7))).seeded(Some(addr(9)), t0);
        assert_eq!(
            fixed.destination(),
            Some(addr(7)),
            "a fixed latch ignores seeds"
        );
    }

    #[test]
    fn non_strict_admits_others_without_moving() {
        let t0 = Instant::now();
        let mut latch = Latch::new(LatchMode::Learn, false, Duration::ZERO, None);
        assert!(latch.accept(addr(1), t0));
        assert!(latch.admits(addr(2), t0 + Duration::from_secs(1)));
        assert!(!latch.accept(addr(2), t0 + Duration::from_secs(1)));
        assert_eq!(latch.destination(), Some(addr(1)));
    }

    #[test]
    fn fixed_never_learns_and_strict_fixed_drops_strangers() {
        let t0 = Instant::now();
        let mut latch = Latch::new(
            LatchMode::Fixed,
            true,
            Duration::from_secs(10),
            Some(addr(7)),
        );
        assert!(!latch.admits(addr(8), t0));
        assert!(!latch.accept(addr(8), t0));
        assert!(latch.admits(addr(7), t0));
        assert_eq!(latch.destination(), Some(addr(7)));
    }
}
