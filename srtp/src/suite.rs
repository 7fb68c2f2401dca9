//! SRTP crypto suites and their parameters (RFC 3711, RFC 4568, RFC 6188, RFC 7714).

use core::fmt;

/// An SRTP protection profile, named as in SDES `a=crypto` lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suite {
    /// `AES_CM_128_HMAC_SHA1_80` (RFC 4568 §6.2.1): AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32` (RFC 4568 §6.2.2): as above with a 32-bit SRTP tag (SRTCP
    /// keeps 80 bits).
    AesCm128HmacSha1_32,
    /// `AES_256_CM_HMAC_SHA1_80` (RFC 6188): AES-256 counter mode, 80-bit HMAC-SHA1 tag.
    AesCm256HmacSha1_80,
    /// `AES_256_CM_HMAC_SHA1_32` (RFC 6188): as above with a 32-bit SRTP tag.
    AesCm256HmacSha1_32,
    /// `AEAD_AES_128_GCM` (RFC 7714): AES-128-GCM with a 128-bit tag.
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM` (RFC 7714): AES-256-GCM with a 128-bit tag.
    AeadAes256Gcm,
}

impl Suite {
    /// Every suite, strongest-preference order is not implied.
    pub const ALL: [Self; 6] = [
        Self::AesCm128HmacSha1_80,
        Self::AesCm128HmacSha1_32,
        Self::AesCm256HmacSha1_80,
        Self::AesCm256HmacSha1_32,
        Self::AeadAes128Gcm,
        Self::AeadAes256Gcm,
    ];

    /// The SDES name (RFC 4568 §6.2, RFC 6188 §7.1, RFC 7714 §14.2).
    pub const fn sdes_name(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Self::AesCm256HmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            Self::AesCm256HmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            Self::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Self::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// Parses an SDES suite name (case-sensitive, as RFC 4568 registers them).
    pub fn from_sdes_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.sdes_name() == name)
    }

    /// Master key length in bytes.
    pub const fn master_key_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 | Self::AesCm128HmacSha1_32 | Self::AeadAes128Gcm => 16,
            Self::AesCm256HmacSha1_80 | Self::AesCm256HmacSha1_32 | Self::AeadAes256Gcm => 32,
        }
    }

    /// Master salt length in bytes: 112 bits for counter mode, 96 bits for GCM (RFC 7714 §12).
    pub const fn master_salt_len(self) -> usize {
        if self.is_aead() {
            12
        } else {
            14
        }
    }

    /// `master_key_len + master_salt_len`: the length of the SDES `inline:` key material.
    pub const fn key_material_len(self) -> usize {
        self.master_key_len() + self.master_salt_len()
    }

    /// SRTP authentication tag length in bytes.
    pub const fn rtp_tag_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 | Self::AesCm256HmacSha1_80 => 10,
            Self::AesCm128HmacSha1_32 | Self::AesCm256HmacSha1_32 => 4,
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => 16,
        }
    }

    /// SRTCP authentication tag length in bytes: the `_32` suites keep 80 bits for SRTCP
    /// (RFC 4568 §6.2.2, RFC 6188 §5).
    pub const fn rtcp_tag_len(self) -> usize {
        if self.is_aead() {
            16
        } else {
            10
        }
    }

    /// Whether the suite is an AEAD (GCM) suite.
    pub const fn is_aead(self) -> bool {
        matches!(self, Self::AeadAes128Gcm | Self::AeadAes256Gcm)
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdes_name())
    }
}

#[cfg(test)]
mod tests {
    use super::Suite;

    #[test]
    fn names_round_trip() {
        for suite in Suite::ALL {
            assert_eq!(Suite::from_sdes_name(suite.sdes_name()), Some(suite));
        }
        assert_eq!(Suite::from_sdes_name("F8_128_HMAC_SHA1_80"), None);
    }

    #[test]
    fn key_material_lengths_match_the_rfcs() {
        assert_eq!(Suite::AesCm128HmacSha1_80.key_material_len(), 30);
        assert_eq!(Suite::AesCm256HmacSha1_32.key_material_len(), 46);
        assert_eq!(Suite::AeadAes128Gcm.key_material_len(), 28);
        assert_eq!(Suite::AeadAes256Gcm.key_material_len(), 44);
    }
}
