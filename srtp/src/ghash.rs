//! GHASH (NIST SP 800-38D §6.4) for the AEAD suites, with PCLMULQDQ on `x86_64`.
//!
//! Why not the `ghash` crate alone: its API hashes one message per keyed instance, so each
//! SRTP packet clones the instance (a large expanded-key state) and pays a fixed per-call
//! cost that, for 160-byte payloads, exceeds the multiplications. Here the key is a table of
//! powers of H computed once per session key, messages are hashed from a borrowed table with no
//! copy, and four blocks are multiplied per reduction (aggregated reduction, the method of
//! Gueron and Kounavis' carry-less multiplication paper). Without PCLMULQDQ the `ghash` crate is
//! used. Both are pinned against each other and against the GCM vectors in the tests.

use ghash::universal_hash::UniversalHash as _;

use crate::cipher::Block;

/// A GHASH key: H, and on `x86_64` with PCLMULQDQ the powers H^1..H^16 in the byte-reflected
/// form the carry-less code works in.
#[derive(Clone)]
pub(crate) struct GhashKey {
    fallback: ghash::GHash,
    #[cfg(target_arch = "x86_64")]
    powers: Option<clmul::Powers>,
}

impl GhashKey {
    /// The key for `h = AES(K, 0^128)`.
    pub(crate) fn new(h: &Block) -> Self {
        Self {
            fallback: ghash::GHash::new(h),
            #[cfg(target_arch = "x86_64")]
            powers: clmul::available().then(|| {
                // SAFETY: PCLMULQDQ, SSSE3 and SSE2 are available (checked just above).
                unsafe { clmul::Powers::new(h) }
            }),
        }
    }

    /// GHASH of the concatenation of `segments`, each a whole number of 16-byte blocks.
    pub(crate) fn hash(&self, segments: &[&[u8]]) -> [u8; 16] {
        debug_assert!(segments.iter().all(|s| s.len() % 16 == 0));
        #[cfg(target_arch = "x86_64")]
        if let Some(powers) = &self.powers {
            // SAFETY: `powers` exists only when the CPU has the features (see `new`).
            return unsafe { powers.hash(segments) };
        }
        let mut ghash = self.fallback.clone();
        for segment in segments {
            ghash.update_padded(segment);
        }
        ghash.finalize().into()
    }
}

#[cfg(target_arch = "x86_64")]
mod clmul {
    use core::arch::x86_64::{
        __m128i, _mm_clmulepi64_si128, _mm_loadu_si128, _mm_or_si128, _mm_set_epi8,
        _mm_setzero_si128, _mm_shuffle_epi8, _mm_slli_epi32, _mm_slli_si128, _mm_srli_epi32,
        _mm_srli_si128, _mm_storeu_si128, _mm_xor_si128,
    };
    use std::sync::OnceLock;

    use crate::cipher::Block;

    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("pclmulqdq")
                && std::arch::is_x86_feature_detected!("ssse3")
        })
    }

    /// Blocks multiplied per reduction.
    const AGGREGATE: usize = 16;

    /// H^1..H^16 (`powers[k]` is H^(k+1)), byte-reflected.
    #[derive(Clone, Copy)]
    pub(super) struct Powers([__m128i; AGGREGATE]);

    #[inline]
    #[target_feature(enable = "ssse3")]
    fn byte_reverse(x: __m128i) -> __m128i {
        _mm_shuffle_epi8(
            x,
            _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        )
    }

    /// The 256-bit carry-less product `a * b` as (low, high) halves (Karatsuba-free: four
    /// multiplications pipeline better than three plus fix-ups).
    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn multiply(a: __m128i, b: __m128i) -> (__m128i, __m128i) {
        let lo = _mm_clmulepi64_si128::<0x00>(a, b);
        let mid = _mm_xor_si128(
            _mm_clmulepi64_si128::<0x10>(a, b),
            _mm_clmulepi64_si128::<0x01>(a, b),
        );
        let hi = _mm_clmulepi64_si128::<0x11>(a, b);
        (
            _mm_xor_si128(lo, _mm_slli_si128::<8>(mid)),
            _mm_xor_si128(hi, _mm_srli_si128::<8>(mid)),
        )
    }

    /// Reduces a 256-bit product modulo x^128 + x^7 + x^2 + x + 1 in GCM's reflected bit order:
    /// shift left by one bit (the reflection), then fold the low half into the high half.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn reduce(lo: __m128i, hi: __m128i) -> __m128i {
        // Shift the 256-bit value (hi:lo) left by 1.
        let lo_carry = _mm_srli_epi32::<31>(lo);
        let hi_carry = _mm_srli_epi32::<31>(hi);
        let lo = _mm_slli_epi32::<1>(lo);
        let hi = _mm_slli_epi32::<1>(hi);
        let cross = _mm_srli_si128::<12>(lo_carry);
        let hi_carry = _mm_slli_si128::<4>(hi_carry);
        let lo_carry = _mm_slli_si128::<4>(lo_carry);
        let lo = _mm_or_si128(lo, lo_carry);
        let hi = _mm_or_si128(_mm_or_si128(hi, hi_carry), cross);
        // First phase.
        let left31 = _mm_slli_epi32::<31>(lo);
        let left30 = _mm_slli_epi32::<30>(lo);
        let left25 = _mm_slli_epi32::<25>(lo);
        let first = _mm_xor_si128(_mm_xor_si128(left31, left30), left25);
        let spill = _mm_srli_si128::<4>(first);
        let lo = _mm_xor_si128(lo, _mm_slli_si128::<12>(first));
        // Second phase.
        let right1 = _mm_srli_epi32::<1>(lo);
        let right2 = _mm_srli_epi32::<2>(lo);
        let right7 = _mm_srli_epi32::<7>(lo);
        let second = _mm_xor_si128(_mm_xor_si128(_mm_xor_si128(right1, right2), right7), spill);
        _mm_xor_si128(hi, _mm_xor_si128(lo, second))
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn mul(a: __m128i, b: __m128i) -> __m128i {
        let (lo, hi) = multiply(a, b);
        reduce(lo, hi)
    }

    impl Powers {
        /// # Safety
        /// The CPU must have PCLMULQDQ, SSSE3 and SSE2.
        #[target_feature(enable = "pclmulqdq,ssse3,sse2")]
        pub(super) unsafe fn new(h: &Block) -> Self {
            // SAFETY: `h` is 16 bytes.
            let h1 = byte_reverse(unsafe { _mm_loadu_si128(h.as_ptr().cast()) });
            let mut powers = [h1; AGGREGATE];
            for k in 1..AGGREGATE {
                powers[k] = mul(powers[k - 1], h1);
            }
            Self(powers)
        }

        /// GHASH of whole blocks: `Y_i = (Y_{i-1} xor X_i) * H`, evaluated as
        /// `Y = (Y_0 xor X_1) H^m xor X_2 H^(m-1) xor ... xor X_m H` over chunks of up to
        /// [`AGGREGATE`] blocks, with one reduction per chunk.
        ///
        /// # Safety
        /// The CPU must have PCLMULQDQ, SSSE3 and SSE2.
        #[target_feature(enable = "pclmulqdq,ssse3,sse2")]
        pub(super) unsafe fn hash(&self, segments: &[&[u8]]) -> [u8; 16] {
            let mut remaining: usize = segments.iter().map(|s| s.len() / 16).sum();
            let mut chunk = remaining.min(AGGREGATE);
            let mut position = 0;
            let mut y = _mm_setzero_si128();
            let (mut lo, mut hi) = (_mm_setzero_si128(), _mm_setzero_si128());
            for segment in segments {
                for block in segment.chunks_exact(16) {
                    // SAFETY: `block` is 16 bytes.
                    let mut x = byte_reverse(unsafe { _mm_loadu_si128(block.as_ptr().cast()) });
                    if position == 0 {
                        x = _mm_xor_si128(x, y);
                    }
                    let (l, h) = multiply(x, self.0[chunk - position - 1]);
                    lo = _mm_xor_si128(lo, l);
                    hi = _mm_xor_si128(hi, h);
                    position += 1;
                    if position == chunk {
                        y = reduce(lo, hi);
                        lo = _mm_setzero_si128();
                        hi = _mm_setzero_si128();
                        remaining -= chunk;
                        chunk = remaining.min(AGGREGATE);
                        position = 0;
                    }
                }
            }
            let mut out = [0u8; 16];
            // SAFETY: `out` is 16 bytes.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), byte_reverse(y)) };
            out
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test data")]
mod tests {
    use ghash::universal_hash::UniversalHash as _;

    use super::GhashKey;
    use crate::cipher::Block;

    #[test]
    fn matches_the_ghash_crate_for_every_length_and_many_keys() {
        let data: Vec<u8> = (0..1024u32).map(|i| (i * 131 + 7) as u8).collect();
        for k in 0..20u8 {
            let h = Block::from([k.wrapping_mul(37) ^ 0x5a; 16]);
            let mut h = h;
            h[k as usize % 16] ^= 0xff;
            let key = GhashKey::new(&h);
            for blocks in 0..40 {
                let input = &data[usize::from(k)..usize::from(k) + blocks * 16];
                let mut reference = ghash::GHash::new(&h);
                reference.update_padded(input);
                let expected: [u8; 16] = reference.finalize().into();
                assert_eq!(key.hash(&[input]), expected, "key {k}, {blocks} blocks");
                // Split into segments at every block boundary: same result.
                let (a, b) = input.split_at(blocks / 2 * 16);
                assert_eq!(key.hash(&[a, &[], b]), expected, "key {k}, split");
            }
        }
    }
}
