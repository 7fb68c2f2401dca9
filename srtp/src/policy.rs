//! Master keys and the policy a [`crate::Context`] is created from.

use core::fmt;

use zeroize::Zeroizing;

use crate::{Error, Suite};

/// Longest MKI accepted, in bytes. RFC 4568 allows up to 128; 16 covers every deployment seen
/// and keeps the MKI inline in the key table.
pub const MAX_MKI_LEN: usize = 16;

/// Default replay window in packets (RFC 3711 §3.3.2 requires at least 64).
pub const DEFAULT_REPLAY_WINDOW: usize = 128;

/// Default limit on SSRCs one context tracks.
pub const DEFAULT_MAX_STREAMS: usize = 64;

/// A master key and salt, with its optional MKI and lifetime. The key bytes are zeroed on drop
/// and never printed.
#[derive(Clone)]
pub struct MasterKey {
    suite: Suite,
    key: Zeroizing<Vec<u8>>,
    salt: Zeroizing<Vec<u8>>,
    mki: Vec<u8>,
    lifetime: Option<u64>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("suite", &self.suite)
            .field("key", &"<redacted>")
            .field("mki", &self.mki)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A master key and salt of the suite's lengths.
    pub fn new(suite: Suite, key: &[u8], salt: &[u8]) -> Result<Self, Error> {
        if key.len() != suite.master_key_len() {
            return Err(Error::InvalidKeyLength {
                suite,
                what: "master key",
                expected: suite.master_key_len(),
                got: key.len(),
            });
        }
        if salt.len() != suite.master_salt_len() {
            return Err(Error::InvalidKeyLength {
                suite,
                what: "master salt",
                expected: suite.master_salt_len(),
                got: salt.len(),
            });
        }
        Ok(Self {
            suite,
            key: Zeroizing::new(key.to_vec()),
            salt: Zeroizing::new(salt.to_vec()),
            mki: Vec::new(),
            lifetime: None,
        })
    }

    /// From SDES key material: key followed by salt (`inline:` decoded).
    pub fn from_material(suite: Suite, material: &[u8]) -> Result<Self, Error> {
        if material.len() != suite.key_material_len() {
            return Err(Error::InvalidKeyLength {
                suite,
                what: "key material",
                expected: suite.key_material_len(),
                got: material.len(),
            });
        }
        let (key, salt) = material.split_at(suite.master_key_len());
        Self::new(suite, key, salt)
    }

    /// Sets the MKI (its bytes as sent on the wire, big-endian).
    #[must_use]
    pub fn with_mki(mut self, mki: &[u8]) -> Self {
        self.mki = mki.to_vec();
        self
    }

    /// Sets a lifetime in packets (the SDES `|2^n` parameter); applies to SRTP and SRTCP
    /// packets separately, on top of the RFC 3711 limits (2^48 and 2^31).
    #[must_use]
    pub fn with_lifetime(mut self, packets: u64) -> Self {
        self.lifetime = Some(packets);
        self
    }

    /// The suite this key is for.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The MKI, empty when none.
    pub fn mki(&self) -> &[u8] {
        &self.mki
    }

    /// The lifetime set with [`Self::with_lifetime`].
    pub fn lifetime(&self) -> Option<u64> {
        self.lifetime
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    pub(crate) fn salt(&self) -> &[u8] {
        &self.salt
    }
}

/// Everything a [`crate::Context`] is created from.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The suite.
    pub suite: Suite,
    /// One or more master keys; with an MKI length above 0 each carries a distinct MKI, and
    /// the first is used for sending until [`crate::Context::set_active_key`] says otherwise.
    pub keys: Vec<MasterKey>,
    /// MKI length in bytes (0: no MKI field).
    pub mki_len: usize,
    /// Replay window in packets, 64..=32768.
    pub replay_window: usize,
    /// Key derivation rate (RFC 3711 §4.3.1); only 0 is supported.
    pub kdr: u64,
    /// Allow protecting the same RTP index twice (retransmissions with identical payload).
    /// Off by default: reusing an index with a different payload reuses keystream.
    pub allow_repeat_tx: bool,
    /// Most SSRCs the context tracks; more are refused, not allocated.
    pub max_streams: usize,
}

impl Policy {
    /// A policy with one master key and the defaults.
    pub fn new(key: MasterKey) -> Self {
        Self {
            suite: key.suite(),
            keys: vec![key],
            mki_len: 0,
            replay_window: DEFAULT_REPLAY_WINDOW,
            kdr: 0,
            allow_repeat_tx: false,
            max_streams: DEFAULT_MAX_STREAMS,
        }
    }

    /// Checks the policy; [`crate::Context::new`] calls this.
    pub fn validate(&self) -> Result<(), Error> {
        if self.keys.is_empty() {
            return Err(Error::NoMasterKey);
        }
        if self.kdr != 0 {
            return Err(Error::UnsupportedKdr { kdr: self.kdr });
        }
        if !(64..=32_768).contains(&self.replay_window) {
            return Err(Error::InvalidReplayWindow {
                size: self.replay_window,
            });
        }
        if self.mki_len > MAX_MKI_LEN {
            return Err(Error::InvalidMki {
                reason: "MKI longer than 16 bytes",
            });
        }
        for (i, key) in self.keys.iter().enumerate() {
            if key.suite() != self.suite {
                return Err(Error::InvalidKeyLength {
                    suite: self.suite,
                    what: "master key",
                    expected: self.suite.master_key_len(),
                    got: key.key().len(),
                });
            }
            if key.mki().len() != self.mki_len {
                return Err(Error::InvalidMki {
                    reason: "a key's MKI length differs from the policy's",
                });
            }
            if self.mki_len > 0 && self.keys[..i].iter().any(|k| k.mki() == key.mki()) {
                return Err(Error::InvalidMki {
                    reason: "two keys share an MKI",
                });
            }
        }
        if self.mki_len == 0 && self.keys.len() > 1 {
            return Err(Error::InvalidMki {
                reason: "several master keys need an MKI to tell them apart",
            });
        }
        Ok(())
    }
}
