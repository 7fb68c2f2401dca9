//! Stateless, signed nonces and the nonce-count replay cache.
//!
//! A nonce carries its own issue time and is signed, so the server keeps no per-challenge
//! state and any worker that shares the secret can verify it:
//!
//! ```text
//!  0               8                              24                              40
//! +---------------+------------------------------+-------------------------------+
//! | issued_at     | salt                         | tag                           |
//! | u64 BE, unix s| 16 bytes, unique per nonce   | HMAC-SHA256(...)[..16]        |
//! +---------------+------------------------------+-------------------------------+
//!                        lowercase hex on the wire: 80 characters
//!
//! salt = HMAC-SHA256(secret, "salt\0"  || seed || counter)[..16]
//! tag  = HMAC-SHA256(secret, "nonce\0" || issued_at || salt || realm)[..16]
//! opaque = hex(HMAC-SHA256(secret, "opaque\0" || realm)[..8])
//! ```
//!
//! The salt is a pseudo-random function of a per-process seed and a counter: unique for every
//! nonce without a system call per challenge, and unpredictable without the secret. The tag
//! is truncated to 128 bits (RFC 2104 §5 allows truncation to half the hash output); it binds
//! the realm, so a nonce issued for one realm is refused in another. Expiry is judged by the
//! caller against its clock ([`nonce_age`]).
//!
//! Nonce counts (RFC 7616 §3.4 `nc`) need state: [`ReplayCache`] remembers the highest `nc`
//! accepted per nonce, for at most `capacity` nonces. Entries whose nonce has expired are
//! dropped first; when the cache is still full the oldest-issued nonce is evicted and the
//! cache remembers the issue time of everything evicted, so an evicted nonce is never
//! accepted again as if it were new (it is answered as stale, which makes the client retry
//! with a fresh nonce without asking its user).

use std::collections::{BTreeSet, HashMap};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::digest::{decode_hex, hex_lower};

type HmacSha256 = Hmac<Sha256>;

/// Length of the decoded nonce.
const NONCE_LEN: usize = 40;
/// Length of a nonce on the wire (lowercase hex).
pub(crate) const NONCE_HEX_LEN: usize = NONCE_LEN * 2;
const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// Identifies one issued nonce: `issued_at || salt`.
pub(crate) type NonceId = [u8; 24];

/// How far in the future an issue time may be before the nonce is refused: covers a clock
/// stepped backwards by NTP without accepting nonces minted for the far future.
pub(crate) const MAX_CLOCK_STEP_BACK_SECS: u64 = 60;

/// The keyed signer of nonces and opaque values.
pub(crate) struct NonceSigner {
    mac: HmacSha256,
    seed: [u8; 16],
    counter: u64,
}

impl core::fmt::Debug for NonceSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NonceSigner")
            .field("secret", &"<redacted>")
            .field("issued", &self.counter)
            .finish_non_exhaustive()
    }
}

/// A nonce whose tag verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VerifiedNonce {
    pub issued_at: u64,
    pub id: NonceId,
}

/// Where a verified nonce stands against the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NonceAge {
    /// Within its lifetime.
    Fresh,
    /// Older than its lifetime: re-challenge with `stale=true` (RFC 7616 §3.3).
    Expired,
    /// Issued in the future beyond [`MAX_CLOCK_STEP_BACK_SECS`]: not one of ours in practice.
    FromTheFuture,
}

/// Classifies `issued_at` against `now` for a nonce valid `lifetime_secs`.
pub(crate) fn nonce_age(issued_at: u64, now: u64, lifetime_secs: u64) -> NonceAge {
    if issued_at > now.saturating_add(MAX_CLOCK_STEP_BACK_SECS) {
        NonceAge::FromTheFuture
    } else if now > issued_at.saturating_add(lifetime_secs) {
        NonceAge::Expired
    } else {
        NonceAge::Fresh
    }
}

impl NonceSigner {
    /// A signer keyed with `secret`; `seed` makes salts differ between processes that share
    /// the secret.
    pub(crate) fn new(secret: &[u8; 32], seed: [u8; 16]) -> Option<Self> {
        // HMAC accepts any key length; the error branch is unreachable but not unwrapped.
        let mac = HmacSha256::new_from_slice(secret).ok()?;
        Some(Self {
            mac,
            seed,
            counter: 0,
        })
    }

    fn prf(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    fn tag(&self, issued_at: [u8; 8], salt: &[u8], realm: &str) -> [u8; 32] {
        self.prf(&[b"nonce\0", &issued_at, salt, realm.as_bytes()])
    }

    /// Mints a nonce for `realm` at `now` (unix seconds).
    pub(crate) fn issue(&mut self, realm: &str, now: u64) -> String {
        self.counter = self.counter.wrapping_add(1);
        let salt_full = self.prf(&[b"salt\0", &self.seed, &self.counter.to_be_bytes()]);
        let issued_at = now.to_be_bytes();
        let salt = &salt_full[..SALT_LEN];
        let tag = self.tag(issued_at, salt, realm);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&issued_at);
        nonce[8..8 + SALT_LEN].copy_from_slice(salt);
        nonce[8 + SALT_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        hex_lower(&nonce)
    }

    /// Verifies a nonce's format and tag for `realm`. `None` for anything not minted by this
    /// secret for this realm. The tag comparison is constant-time.
    pub(crate) fn verify(&self, nonce: &str, realm: &str) -> Option<VerifiedNonce> {
        if nonce.len() != NONCE_HEX_LEN {
            return None;
        }
        let decoded: [u8; NONCE_LEN] = decode_hex(nonce)?;
        let mut issued_at = [0u8; 8];
        issued_at.copy_from_slice(&decoded[..8]);
        let salt = &decoded[8..8 + SALT_LEN];
        let expected = self.tag(issued_at, salt, realm);
        if !bool::from(expected[..TAG_LEN].ct_eq(&decoded[8 + SALT_LEN..])) {
            return None;
        }
        let mut id = [0u8; 24];
        id.copy_from_slice(&decoded[..24]);
        Some(VerifiedNonce {
            issued_at: u64::from_be_bytes(issued_at),
            id,
        })
    }

    /// The `opaque` value for `realm`: constant per secret and realm, so it needs no state.
    pub(crate) fn opaque(&self, realm: &str) -> String {
        let full = self.prf(&[b"opaque\0", realm.as_bytes()]);
        hex_lower(&full[..8])
    }
}

/// The verdict on a nonce count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NonceCountCheck {
    /// Higher than any count accepted before for this nonce; now recorded.
    Accepted,
    /// Not higher than the highest count already accepted: a replay (RFC 7616 §3.4 `nc`).
    Replayed,
    /// The nonce was evicted from the cache under pressure; its history is unknown.
    Forgotten,
}

#[derive(Clone, Copy, Debug)]
struct ReplayEntry {
    highest_nc: u32,
}

/// Bounded memory of the highest `nc` accepted per nonce.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    capacity: usize,
    entries: HashMap<NonceId, ReplayEntry>,
    /// The same keys ordered by issue time, for expiry and eviction.
    by_issue_time: BTreeSet<(u64, NonceId)>,
    /// The latest issue time among evicted (not expired) nonces: a nonce issued at or before
    /// it that is not in the cache may have been seen before.
    evicted_through: Option<u64>,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            by_issue_time: BTreeSet::new(),
            evicted_through: None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops entries of nonces that have expired: they are refused as stale anyway.
    fn purge_expired(&mut self, now: u64, lifetime_secs: u64) {
        while let Some(&(issued_at, id)) = self.by_issue_time.first() {
            if nonce_age(issued_at, now, lifetime_secs) != NonceAge::Expired {
                break;
            }
            self.by_issue_time.pop_first();
            self.entries.remove(&id);
        }
    }

    /// Checks `nc` for a verified, fresh nonce and records it when accepted. Call only after
    /// the digest response verified, so that forged requests cannot advance the count.
    pub(crate) fn check_and_record(
        &mut self,
        nonce: VerifiedNonce,
        nc: u32,
        now: u64,
        lifetime_secs: u64,
    ) -> NonceCountCheck {
        self.purge_expired(now, lifetime_secs);
        if let Some(entry) = self.entries.get_mut(&nonce.id) {
            if nc <= entry.highest_nc {
                return NonceCountCheck::Replayed;
            }
            entry.highest_nc = nc;
            return NonceCountCheck::Accepted;
        }
        if self
            .evicted_through
            .is_some_and(|through| nonce.issued_at <= through)
        {
            return NonceCountCheck::Forgotten;
        }
        self.entries
            .insert(nonce.id, ReplayEntry { highest_nc: nc });
        self.by_issue_time.insert((nonce.issued_at, nonce.id));
        while self.entries.len() > self.capacity {
            let Some((issued_at, id)) = self.by_issue_time.pop_first() else {
                break;
            };
            self.entries.remove(&id);
            self.evicted_through =
                Some(self.evicted_through.map_or(issued_at, |t| t.max(issued_at)));
        }
        NonceCountCheck::Accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NonceSigner {
        NonceSigner::new(&[7u8; 32], [1u8; 16]).unwrap()
    }

    #[test]
    fn issued_nonce_verifies_for_its_realm_only() {
        let mut signer = signer();
        let nonce = signer.issue("example.com", 1_700_000_000);
        assert_eq!(nonce.len(), NONCE_HEX_LEN);
        assert!(nonce
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let verified = signer.verify(&nonce, "example.com").unwrap();
        assert_eq!(verified.issued_at, 1_700_000_000);
        assert_eq!(signer.verify(&nonce, "example.org"), None);
    }

    #[test]
    fn nonces_are_unique() {
        let mut signer = signer();
        let a = signer.issue("r", 5);
        let b = signer.issue("r", 5);
        assert_ne!(a, b);
    }

    #[test]
    fn tampered_nonce_is_refused() {
        let mut signer = signer();
        let nonce = signer.issue("r", 1000);
        // Move the timestamp forward by one second: the tag no longer matches.
        let mut bytes: [u8; NONCE_LEN] = decode_hex(&nonce).unwrap();
        bytes[7] ^= 1;
        assert_eq!(signer.verify(&hex_lower(&bytes), "r"), None);
        // Flip a tag bit.
        let mut bytes: [u8; NONCE_LEN] = decode_hex(&nonce).unwrap();
        bytes[NONCE_LEN - 1] ^= 0x80;
        assert_eq!(signer.verify(&hex_lower(&bytes), "r"), None);
        // Wrong length, non-hex.
        assert_eq!(signer.verify(&nonce[..78], "r"), None);
        assert_eq!(signer.verify(&nonce.replace('0', "z"), "r"), None);
        // Another secret.
        let other = NonceSigner::new(&[8u8; 32], [1u8; 16]).unwrap();
        assert_eq!(other.verify(&nonce, "r"), None);
    }

    #[test]
    fn opaque_is_stable_per_realm() {
        let signer = signer();
        assert_eq!(signer.opaque("a"), signer.opaque("a"));
        assert_ne!(signer.opaque("a"), signer.opaque("b"));
        assert_eq!(signer.opaque("a").len(), 16);
    }

    #[test]
    fn age_classification() {
        assert_eq!(nonce_age(1000, 1000, 300), NonceAge::Fresh);
        assert_eq!(nonce_age(1000, 1300, 300), NonceAge::Fresh);
        assert_eq!(nonce_age(1000, 1301, 300), NonceAge::Expired);
        assert_eq!(nonce_age(1060, 1000, 300), NonceAge::Fresh);
        assert_eq!(nonce_age(1061, 1000, 300), NonceAge::FromTheFuture);
    }

    fn nonce(issued_at: u64, n: u8) -> VerifiedNonce {
        let mut id = [n; 24];
        id[..8].copy_from_slice(&issued_at.to_be_bytes());
        VerifiedNonce { issued_at, id }
    }

    #[test]
    fn nonce_count_must_increase() {
        let mut cache = ReplayCache::new(10);
        let n = nonce(100, 1);
        assert_eq!(
            cache.check_and_record(n, 1, 100, 300),
            NonceCountCheck::Accepted
        );
        assert_eq!(
            cache.check_and_record(n, 1, 101, 300),
            NonceCountCheck::Replayed
        );
        assert_eq!(
            cache.check_and_record(n, 3, 102, 300),
            NonceCountCheck::Accepted
        );
        assert_eq!(
            cache.check_and_record(n, 2, 103, 300),
            NonceCountCheck::Replayed
        );
        // Another nonce has its own count.
        assert_eq!(
            cache.check_and_record(nonce(100, 2), 1, 103, 300),
            NonceCountCheck::Accepted
        );
    }

    #[test]
    fn expired_entries_are_dropped() {
        let mut cache = ReplayCache::new(10);
        cache.check_and_record(nonce(100, 1), 1, 100, 300);
        cache.check_and_record(nonce(200, 2), 1, 200, 300);
        assert_eq!(cache.len(), 2);
        cache.check_and_record(nonce(450, 3), 1, 450, 300);
        assert_eq!(cache.len(), 2, "the nonce issued at 100 expired at 400");
    }

    #[test]
    fn eviction_is_bounded_and_evicted_nonces_are_not_new_again() {
        let mut cache = ReplayCache::new(2);
        let oldest = nonce(100, 1);
        cache.check_and_record(oldest, 5, 100, 300);
        cache.check_and_record(nonce(101, 2), 1, 101, 300);
        cache.check_and_record(nonce(102, 3), 1, 102, 300);
        assert_eq!(cache.len(), 2);
        // The evicted nonce must not restart at nc=1.
        assert_eq!(
            cache.check_and_record(oldest, 1, 103, 300),
            NonceCountCheck::Forgotten
        );
        // A nonce issued after the eviction horizon is new.
        assert_eq!(
            cache.check_and_record(nonce(103, 4), 1, 103, 300),
            NonceCountCheck::Accepted
        );
    }
}
