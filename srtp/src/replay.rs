//! Replay protection (RFC 3711 §3.3.2): a sliding window of recently accepted packet indices.
//!
//! A ring bitmap: bit `index mod size` records whether `index` was accepted, for indices in
//! `(highest - size, highest]`. Moving the window forward clears the bits it passes over. The
//! size is rounded up to a power of two so that the ring position is a mask, not a division
//! (this runs once or twice per packet).

use crate::Error;

/// A replay window of at least `size` packets (a power of two, 64..=32768).
#[derive(Clone, Debug)]
pub(crate) struct ReplayWindow {
    bits: Vec<u64>,
    /// `size - 1`, for the ring position.
    mask: u64,
    /// Highest accepted index; `None` before the first packet.
    highest: Option<u64>,
}

impl ReplayWindow {
    /// A window of at least `size` packets (rounded up to a power of two, at least 64).
    pub(crate) fn new(size: usize) -> Self {
        let size = size.max(64).next_power_of_two();
        Self {
            bits: vec![0; size / 64],
            mask: size as u64 - 1,
            highest: None,
        }
    }

    fn size(&self) -> u64 {
        self.mask + 1
    }

    /// The highest accepted index.
    pub(crate) fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Whether `index` may be accepted: new, or inside the window and not yet seen.
    pub(crate) fn check(&self, index: u64) -> Result<(), Error> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if index > highest {
            return Ok(());
        }
        if highest - index >= self.size() {
            return Err(Error::TooOld { index });
        }
        if self.bit(index) {
            return Err(Error::Replayed { index });
        }
        Ok(())
    }

    /// Records `index` as accepted (after authentication). Call [`Self::check`] first.
    pub(crate) fn accept(&mut self, index: u64) {
        match self.highest {
            Some(highest) if index <= highest => {}
            Some(highest) => {
                let advance = index - highest;
                if advance >= self.size() {
                    self.bits.fill(0);
                } else {
                    for passed in highest + 1..index {
                        self.clear(passed);
                    }
                }
                self.clear(index);
                self.highest = Some(index);
            }
            None => {
                self.highest = Some(index);
            }
        }
        self.set(index);
    }

    fn slot(&self, index: u64) -> (usize, u64) {
        let position = index & self.mask;
        #[allow(clippy::cast_possible_truncation, reason = "position <= mask < 2^15")]
        let word = (position >> 6) as usize;
        (word, 1 << (position & 63))
    }

    fn bit(&self, index: u64) -> bool {
        let (word, mask) = self.slot(index);
        self.bits[word] & mask != 0
    }

    fn set(&mut self, index: u64) {
        let (word, mask) = self.slot(index);
        self.bits[word] |= mask;
    }

    fn clear(&mut self, index: u64) {
        let (word, mask) = self.slot(index);
        self.bits[word] &= !mask;
    }
}

#[cfg(test)]
mod tests {
    use super::ReplayWindow;
    use crate::Error;

    #[test]
    fn duplicates_and_old_indices_are_refused() {
        let mut w = ReplayWindow::new(128);
        for i in [1000, 1001, 999, 1005] {
            w.check(i).unwrap();
            w.accept(i);
        }
        assert_eq!(w.check(1001), Err(Error::Replayed { index: 1001 }));
        assert_eq!(w.check(999), Err(Error::Replayed { index: 999 }));
        // Skipped indices inside the window are still acceptable.
        assert_eq!(w.check(1003), Ok(()));
        assert_eq!(
            w.check(1005 - 128),
            Err(Error::TooOld { index: 1005 - 128 })
        );
        assert_eq!(w.check(1005 - 127), Ok(()));
        assert_eq!(w.highest(), Some(1005));
    }

    #[test]
    fn a_big_jump_clears_the_window() {
        let mut w = ReplayWindow::new(64);
        w.accept(5);
        w.accept(10_000);
        assert_eq!(w.check(5), Err(Error::TooOld { index: 5 }));
        // The bit for 5 + 64k must not linger after the jump.
        assert_eq!(w.check(10_000 - 5), Ok(()));
        assert_eq!(w.check(10_000), Err(Error::Replayed { index: 10_000 }));
    }

    #[test]
    fn passing_over_bits_clears_them() {
        let mut w = ReplayWindow::new(64);
        w.accept(0);
        w.accept(1);
        // Move forward by 63: slots of 0 is reused by 64 later; 1's slot is cleared when 65 passes.
        w.accept(64);
        assert_eq!(w.check(1), Err(Error::Replayed { index: 1 }));
        w.accept(66);
        assert_eq!(w.check(65), Ok(()));
        assert_eq!(w.check(2), Err(Error::TooOld { index: 2 }));
    }
}
