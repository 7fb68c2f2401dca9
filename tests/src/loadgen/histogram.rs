//! A fixed-size log-linear histogram in the manner of `HdrHistogram`: values below
//! 2^[`SUB_BITS`] have a bucket each; above, every power-of-two range is split into
//! 2^([`SUB_BITS`] - 1) equal buckets, so a reported percentile is within 1/2^([`SUB_BITS`] - 1)
//! (about 1.6 %) of the true value. Recording is a few integer operations and never allocates.
//!
//! ```text
//! value v < 2^S          -> bucket v
//! value v in [2^e, 2^e+1), e >= S
//!                        -> bucket 2^S + (e - S) * 2^(S-1) + (v >> (e - S + 1)) - 2^(S-1)
//! ```

/// Bits of linear resolution.
pub const SUB_BITS: u32 = 7;
const LINEAR: usize = 1 << SUB_BITS;
const HALF: usize = LINEAR / 2;
/// Buckets: the linear ones, then `HALF` per power of two from 2^S to 2^63.
const BUCKETS: usize = LINEAR + (64 - SUB_BITS as usize) * HALF;

/// A histogram of `u64` values (the generator records nanoseconds).
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.total)
            .field("min", &self.min())
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram (one allocation of a few KiB, here and never again).
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        self.counts[bucket_of(value)] += 1;
        self.total += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += u128::from(value);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The smallest value recorded (0 when empty).
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// The mean (0 when empty).
    pub fn mean(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            u64::try_from(self.sum / u128::from(self.total)).unwrap_or(u64::MAX)
        }
    }

    /// The value at quantile `q` (0.0..=1.0): the upper end of the bucket that holds the
    /// ceil(q * count)-th smallest value, never above the maximum recorded (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let q = q.clamp(0.0, 1.0);
        // Rank in 1..=total; counts are far below 2^52, so the float math is exact enough.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_upper(bucket).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// The bucket of `value`.
fn bucket_of(value: u64) -> usize {
    if value < LINEAR as u64 {
        // Below 2^SUB_BITS: fits usize.
        #[allow(clippy::cast_possible_truncation)]
        return value as usize;
    }
    let exponent = value.ilog2(); // >= SUB_BITS
    let shift = exponent - SUB_BITS + 1;
    // (value >> shift) is in [HALF, LINEAR).
    #[allow(clippy::cast_possible_truncation)]
    let sub = (value >> shift) as usize - HALF;
    LINEAR + (exponent - SUB_BITS) as usize * HALF + sub
}

/// The largest value that falls into `bucket`.
fn bucket_upper(bucket: usize) -> u64 {
    if bucket < LINEAR {
        return bucket as u64;
    }
    let rest = bucket - LINEAR;
    // rest / HALF < 64 - SUB_BITS.
    #[allow(clippy::cast_possible_truncation)]
    let exponent = (rest / HALF) as u32 + SUB_BITS;
    let sub = (rest % HALF + HALF) as u64;
    let shift = exponent - SUB_BITS + 1;
    // The bucket holds [sub << shift, (sub + 1) << shift); the top bucket ends at u64::MAX.
    ((sub + 1) << shift).wrapping_sub(1).max(sub << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_in_order() {
        let mut previous_upper = None;
        for bucket in 0..BUCKETS {
            let upper = bucket_upper(bucket);
            assert_eq!(bucket_of(upper), bucket, "upper end of {bucket}");
            if let Some(prev) = previous_upper {
                assert_eq!(bucket_of(prev + 1), bucket, "start of {bucket}");
                assert!(upper > prev);
            }
            previous_upper = Some(upper);
        }
        assert_eq!(bucket_upper(BUCKETS - 1), u64::MAX);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn relative_error_is_bounded() {
        let mut v = 1_u64;
        while v < u64::MAX / 3 {
            let upper = bucket_upper(bucket_of(v));
            #[allow(clippy::cast_precision_loss)]
            let (error, bound) = ((upper - v) as f64 / v as f64, 1.0 / HALF as f64);
            assert!(error <= bound, "{v}: {upper}");
            v = v * 3 / 2 + 1;
        }
    }

    #[test]
    fn percentiles_of_a_uniform_run() {
        let mut h = Histogram::new();
        for v in 1..=10_000_u64 {
            h.record(v * 1000);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.min(), 1000);
        assert_eq!(h.max(), 10_000_000);
        assert_eq!(h.mean(), 5_000_500);
        let p50 = h.quantile(0.5);
        let p99 = h.quantile(0.99);
        assert!(
            (5_000_000..=5_000_000 + 5_000_000 / 64).contains(&p50),
            "{p50}"
        );
        assert!(
            (9_900_000..=9_900_000 + 9_900_000 / 64).contains(&p99),
            "{p99}"
        );
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(h.quantile(0.0), h.quantile(0.000_01));
    }

    #[test]
    fn small_values_are_exact_and_empty_is_zero() {
        let mut h = Histogram::new();
        assert_eq!((h.quantile(0.5), h.max(), h.min(), h.mean()), (0, 0, 0, 0));
        for v in [3, 3, 3, 7] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 3);
        assert_eq!(h.quantile(0.75), 3);
        assert_eq!(h.quantile(0.76), 7);
    }

    #[test]
    fn merge_adds_counts_and_extremes() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(1_000_000);
        b.record(5);
        a.merge(&b);
        assert_eq!((a.count(), a.min(), a.max()), (3, 5, 1_000_000));
        assert_eq!(a.quantile(0.5), 10);
    }
}
