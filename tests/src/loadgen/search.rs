//! The `--find-max` search, with no IO: it proposes a per-stream rate, is told how the step at
//! that rate went, and proposes the next, until the gap between the highest clean rate and the
//! lowest failing rate is within [`RESOLUTION`] or the step budget is spent.
//!
//! Ramp: double the rate while steps are clean (or halve it while they fail and nothing clean
//! is known yet). Bisect: once a clean and a failing rate are known, try the middle.
//!
//! The calls are fixed (`--calls`) and the per-stream rate varies. "Equivalent calls at 50 pps
//! per direction" is then derived from the total rate: total / 100. Varying the call count
//! instead would make each step measure signalling and port allocation as much as forwarding,
//! and a relay's per-packet cost hardly depends on the flow count at these sizes; keeping the
//! call count fixed also matches how the reference figures were taken (200 calls, rate ramped).

use serde::Serialize;

/// Stop bisecting when the failing rate is within this fraction above the clean one.
pub const RESOLUTION: f64 = 0.05;

/// How one step went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Loss within the limit, nothing corrupt, no authentication failure.
    Clean,
    /// Too much loss, or corruption, or authentication failures.
    Failed,
    /// Everything offered came through, but the generator could not offer the rate.
    GeneratorLimited,
}

/// The search state.
#[derive(Clone, Debug)]
pub struct Search {
    clean: Option<u64>,
    failed: Option<u64>,
    next: Option<u64>,
    steps: u32,
    max_steps: u32,
    max_rate: u64,
    generator_limited: bool,
}

impl Search {
    /// A search starting at `start` pps per stream, taking at most `max_steps` steps, never
    /// above `max_rate`.
    pub fn new(start: u64, max_steps: u32, max_rate: u64) -> Self {
        let max_rate = max_rate.max(1);
        Self {
            clean: None,
            failed: None,
            next: (max_steps > 0).then_some(start.clamp(1, max_rate)),
            steps: 0,
            max_steps,
            max_rate,
            generator_limited: false,
        }
    }

    /// The rate to try next, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<u64> {
        self.next
    }

    /// Steps recorded.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The highest clean rate found.
    pub fn best(&self) -> Option<u64> {
        self.clean
    }

    /// Whether a step was limited by the generator rather than the relay.
    pub fn generator_limited(&self) -> bool {
        self.generator_limited
    }

    /// Records the outcome of a step at `rate` and picks the next rate.
    pub fn record(&mut self, rate: u64, verdict: Verdict) {
        self.steps += 1;
        match verdict {
            Verdict::Clean => self.clean = Some(self.clean.map_or(rate, |c| c.max(rate))),
            Verdict::Failed | Verdict::GeneratorLimited => {
                self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
                self.generator_limited |= verdict == Verdict::GeneratorLimited;
            }
        }
        self.next = if self.steps >= self.max_steps {
            None
        } else {
            match (self.clean, self.failed) {
                (Some(clean), None) => {
                    (clean < self.max_rate).then(|| clean.saturating_mul(2).min(self.max_rate))
                }
                (None, Some(failed)) => (failed > 1).then_some(failed / 2),
                (Some(clean), Some(failed)) => {
                    #[allow(
                        clippy::cast_precision_loss,
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss
                    )]
                    let gap = ((clean as f64 * RESOLUTION) as u64).max(1);
                    (failed > clean.saturating_add(gap)).then(|| clean + (failed - clean) / 2)
                }
                (None, None) => None,
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a relay that is clean up to `capacity` pps per stream.
    fn search_against(capacity: u64, start: u64, max_steps: u32) -> (Search, Vec<u64>) {
        let mut search = Search::new(start, max_steps, 100_000);
        let mut tried = Vec::new();
        while let Some(rate) = search.next_rate() {
            tried.push(rate);
            let verdict = if rate <= capacity {
                Verdict::Clean
            } else {
                Verdict::Failed
            };
            search.record(rate, verdict);
        }
        (search, tried)
    }

    #[test]
    fn ramps_then_bisects_to_within_the_resolution() {
        let (search, tried) = search_against(1_234, 50, 20);
        assert_eq!(&tried[..7], &[50, 100, 200, 400, 800, 1600, 1200]);
        let best = search.best().unwrap();
        assert!(best <= 1_234, "never reports a failing rate: {best}");
        #[allow(clippy::cast_precision_loss)]
        let shortfall = (1_234 - best) as f64 / 1_234.0;
        assert!(shortfall <= RESOLUTION, "{best} after {tried:?}");
        assert!(!search.generator_limited());
    }

    #[test]
    fn the_step_budget_bounds_the_search() {
        let (search, tried) = search_against(1_000_000, 1, 12);
        assert_eq!(tried.len(), 12);
        assert_eq!(search.steps(), 12);
        assert_eq!(search.best(), Some(2048));
    }

    #[test]
    fn halves_down_when_the_start_already_fails() {
        let (search, tried) = search_against(30, 200, 12);
        assert_eq!(&tried[..3], &[200, 100, 50]);
        assert!(search.best().is_some_and(|b| (28..=30).contains(&b)));
        let (search, _) = search_against(0, 4, 12);
        assert_eq!(search.best(), None, "nothing clean, ends at 1 pps");
    }

    #[test]
    fn stops_at_the_rate_cap_and_flags_generator_limits() {
        let mut search = Search::new(60_000, 12, 100_000);
        search.record(60_000, Verdict::Clean);
        assert_eq!(search.next_rate(), Some(100_000));
        search.record(100_000, Verdict::Clean);
        assert_eq!(search.next_rate(), None);

        let mut search = Search::new(1000, 12, 100_000);
        search.record(1000, Verdict::Clean);
        search.record(2000, Verdict::GeneratorLimited);
        assert!(search.generator_limited());
        assert_eq!(search.next_rate(), Some(1500));
        assert_eq!(Search::new(5, 0, 10).next_rate(), None);
    }
}
