//! SDES: the SDP `a=crypto` attribute (RFC 4568) that carries SRTP master keys in an offer or
//! answer.
//!
//! This module owns the attribute's grammar (RFC 4568 §9.1, with the SRTP key parameters and
//! session parameters of §9.2), its canonical formatting, the conversion of its key
//! parameters into [`MasterKey`]s, and the generation of fresh key material from the
//! operating system's CSPRNG. It does no IO and keeps no clock; choosing which offered line to
//! accept is the caller's negotiation logic.
//!
//! ```text
//! a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32 KDR=0
//!          | |                       |      |                                        |    |    |
//!          | crypto-suite            |      key || salt, base64                      |    MKI  session-params
//!          tag (1*9DIGIT)            key-method                               lifetime    value:length
//!
//!          fields: 1*WSP apart; key-params: ";" apart; key-info fields: "|" apart
//! ```
//!
//! Keys never reach a `Debug` output or an error: [`KeyMaterial`] prints its length only, a
//! `FEC_KEY` session parameter prints as redacted, and [`SdesError`] carries positions and
//! lengths, never input text other than a suite or key-method name. [`CryptoAttribute`] has
//! no `Display`; writing it into SDP is the explicit [`CryptoAttribute::sdp_value`].
//!
//! Parsing is bounded (at most [`MAX_VALUE_LEN`] bytes and [`MAX_KEY_PARAMS`] key
//! parameters), rejects anything outside the grammar, and never panics.

use core::fmt;

use base64::{
    alphabet,
    engine::{
        general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD},
        DecodePaddingMode,
    },
    Engine as _,
};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{Error, MasterKey, Suite, MAX_MKI_LEN};

/// Longest attribute value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;

/// Most key parameters accepted in one attribute.
pub const MAX_KEY_PARAMS: usize = 16;

/// Largest tag: RFC 4568 §9.1 allows at most nine digits.
pub const MAX_TAG: u32 = 999_999_999;

/// Longest MKI the grammar allows, in bytes (RFC 4568 §9.2: `mki-length`, range 1..128).
/// The engine itself accepts at most [`MAX_MKI_LEN`]; [`KeyParam::master_key`] enforces that.
pub const MAX_SDES_MKI_LEN: u8 = 128;

/// Largest key lifetime accepted, as a power of two: RFC 3711 §8.2 caps a master key at 2^48
/// SRTP packets.
pub const MAX_LIFETIME_LOG2: u32 = 48;

/// Decodes `key-salt` with or without `=` padding. Trailing bits must be zero.
const KEY_DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest key-method name echoed in [`SdesError::UnsupportedKeyMethod`]; a longer "name" is
/// more likely a key without its `inline:` and is reported without its text.
const MAX_ECHOED_METHOD_LEN: usize = 16;

/// Why an `a=crypto` attribute was refused. Never contains key bytes; indices are 0-based.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdesError {
    /// The value is longer than [`MAX_VALUE_LEN`].
    #[error("a=crypto value of {len} bytes exceeds the {max}-byte limit")]
    TooLong {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// [`CryptoAttribute::parse_line`] got a line that is not `a=crypto:` or `crypto:`.
    #[error("not an a=crypto attribute")]
    NotCryptoAttribute,
    /// A byte that is neither a visible ASCII character nor a space or tab (RFC 4568 §9.1
    /// allows only VCHAR and WSP), such as a control character or non-ASCII text.
    #[error("byte {offset} of the a=crypto value is not a visible character or whitespace")]
    InvalidCharacter {
        /// Byte offset in the value.
        offset: usize,
    },
    /// A mandatory field is absent.
    #[error("the a=crypto value has no {field}")]
    MissingField {
        /// `"tag"`, `"crypto-suite"` or `"key-params"`.
        field: &'static str,
    },
    /// The tag is not 1 to 9 decimal digits (RFC 4568 §9.1).
    #[error("the tag must be 1 to 9 decimal digits")]
    InvalidTag,
    /// The crypto-suite field is not letters, digits and underscores (RFC 4568 §9.1).
    #[error("the crypto-suite must consist of letters, digits and underscores")]
    InvalidSuiteName,
    /// A well-formed suite name this engine does not implement. The caller may skip this line
    /// and consider the next `a=crypto` offer.
    #[error("crypto-suite {name} is not supported")]
    UnknownSuite {
        /// The suite name as offered.
        name: String,
    },
    /// A key method other than `inline` (RFC 4568 §9.2 defines only `inline` for SRTP).
    #[error("key parameter {index}: key method {method:?} is not supported (only inline)")]
    UnsupportedKeyMethod {
        /// Which key parameter.
        index: usize,
        /// The method name as offered.
        method: String,
    },
    /// More key parameters than [`MAX_KEY_PARAMS`].
    #[error("more than {max} key parameters")]
    TooManyKeys {
        /// The limit.
        max: usize,
    },
    /// A key parameter that does not follow `key-method ":" key-info`, or an `inline:` key-info
    /// that does not follow `key-salt ["|" lifetime] ["|" mki]` (RFC 4568 §9.2).
    #[error("key parameter {index}: {reason}")]
    InvalidKeyParam {
        /// Which key parameter.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The key material is not base64 (RFC 4648 §4 alphabet, padding optional).
    #[error("key parameter {index}: the key material is not valid base64")]
    InvalidBase64 {
        /// Which key parameter.
        index: usize,
    },
    /// The decoded key material is not the suite's master key plus master salt length.
    #[error("key parameter {index}: key material for {suite} must be {expected} bytes, got {got}")]
    InvalidKeyLength {
        /// Which key parameter.
        index: usize,
        /// The suite.
        suite: Suite,
        /// `suite.key_material_len()`.
        expected: usize,
        /// The decoded length.
        got: usize,
    },
    /// The lifetime is not `["2^"] 1*DIGIT` or is zero.
    #[error("key parameter {index}: lifetime {reason}")]
    InvalidLifetime {
        /// Which key parameter.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The lifetime exceeds 2^[`MAX_LIFETIME_LOG2`] packets.
    #[error("key parameter {index}: lifetime exceeds 2^48 packets (RFC 3711 §8.2)")]
    LifetimeTooLarge {
        /// Which key parameter.
        index: usize,
    },
    /// The MKI is not `1*DIGIT ":" 1*3DIGIT` with a length of 1 to 128 bytes.
    #[error("key parameter {index}: MKI {reason}")]
    InvalidMki {
        /// Which key parameter.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The MKI value does not fit in its declared length (or in 64 bits).
    #[error("key parameter {index}: MKI value does not fit in {len} bytes")]
    MkiValueTooLarge {
        /// Which key parameter.
        index: usize,
        /// The declared MKI length in bytes.
        len: u8,
    },
    /// A known session parameter with a malformed or out-of-range value.
    #[error("session parameter {index}: {reason}")]
    InvalidSessionParam {
        /// Which session parameter.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Master key followed by master salt, as carried base64-encoded after `inline:`. Zeroed on
/// drop; `Debug` prints only its length; equality is constant-time.
#[derive(Clone)]
pub struct KeyMaterial(Zeroizing<Vec<u8>>);

impl KeyMaterial {
    /// Copies `bytes` into zeroize-on-drop storage.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// `len` bytes from the operating system's CSPRNG.
    pub fn random(len: usize) -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new(vec![0_u8; len]);
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The key and salt bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial(<redacted>, {} bytes)", self.0.len())
    }
}

impl PartialEq for KeyMaterial {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for KeyMaterial {}

/// A master key identifier: `mki-value ":" mki-length` (RFC 4568 §9.2), the value in decimal
/// and the length in bytes. Invariant: 1 <= length <= [`MAX_SDES_MKI_LEN`] and the value fits
/// in that many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mki {
    value: u64,
    len: u8,
}

impl Mki {
    /// An MKI of `len` bytes holding `value`; `None` if `len` is not 1..=128 or `value` does
    /// not fit in `len` bytes.
    pub const fn new(value: u64, len: u8) -> Option<Self> {
        if len == 0 || len > MAX_SDES_MKI_LEN || !fits_in_bytes(value, len) {
            return None;
        }
        Some(Self { value, len })
    }

    /// The MKI value.
    pub const fn value(self) -> u64 {
        self.value
    }

    /// The MKI length in bytes (never 0).
    #[allow(
        clippy::len_without_is_empty,
        reason = "an MKI is 1 to 128 bytes, never empty"
    )]
    pub const fn len(self) -> u8 {
        self.len
    }

    /// The MKI as sent in each packet: `len` bytes, big-endian (RFC 3711 §3.1).
    pub fn to_bytes(self) -> Vec<u8> {
        let len = usize::from(self.len);
        let mut bytes = vec![0_u8; len];
        let be = self.value.to_be_bytes();
        let n = len.min(be.len());
        bytes[len - n..].copy_from_slice(&be[be.len() - n..]);
        bytes
    }
}

/// Whether `value` fits in `len` big-endian bytes.
const fn fits_in_bytes(value: u64, len: u8) -> bool {
    len >= 8 || value >> (8 * len) == 0
}

/// One `inline:` key parameter (RFC 4568 §9.2 `srtp-key-info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyParam {
    /// Master key || master salt, `suite.key_material_len()` bytes.
    pub material: KeyMaterial,
    /// Master key lifetime in packets (`|2^20` or `|1048576`), at most 2^48.
    pub lifetime: Option<u64>,
    /// The master key identifier (`|1:4`).
    pub mki: Option<Mki>,
}

impl KeyParam {
    /// A key parameter with no lifetime and no MKI.
    pub fn new(material: KeyMaterial) -> Self {
        Self {
            material,
            lifetime: None,
            mki: None,
        }
    }

    /// The engine's master key for `suite`, with this parameter's MKI bytes and lifetime.
    /// Fails if the material is not the suite's length or the MKI is longer than
    /// [`MAX_MKI_LEN`].
    pub fn master_key(&self, suite: Suite) -> Result<MasterKey, Error> {
        let mut key = MasterKey::from_material(suite, self.material.as_bytes())?;
        if let Some(mki) = self.mki {
            if usize::from(mki.len()) > MAX_MKI_LEN {
                return Err(Error::InvalidMki {
                    reason: "MKI longer than 16 bytes",
                });
            }
            key = key.with_mki(&mki.to_bytes());
        }
        if let Some(packets) = self.lifetime {
            key = key.with_lifetime(packets);
        }
        Ok(key)
    }

    /// RFC 4568 §9.2: `key-param = "inline:" key-salt ["|" lifetime] ["|" mki]`.
    fn parse(param: &str, suite: Suite, index: usize) -> Result<Self, SdesError> {
        let invalid = |reason| SdesError::InvalidKeyParam { index, reason };
        if param.is_empty() {
            return Err(invalid("empty key parameter"));
        }
        // RFC 4568 §9.1: key-param = key-method ":" key-info.
        let (method, info) = param
            .split_once(':')
            .ok_or(invalid("no key method (expected inline:)"))?;
        if method.is_empty() || !method.bytes().all(is_name_byte) {
            return Err(invalid("no key method (expected inline:)"));
        }
        // ABNF literals are case-insensitive (RFC 5234 §2.3).
        if !method.eq_ignore_ascii_case("inline") {
            if method.len() > MAX_ECHOED_METHOD_LEN {
                return Err(invalid("unsupported key method"));
            }
            return Err(SdesError::UnsupportedKeyMethod {
                index,
                method: method.to_owned(),
            });
        }
        let mut fields = info.split('|');
        let key_salt = fields.next().unwrap_or_default();
        let second = fields.next();
        let third = fields.next();
        if fields.next().is_some() {
            return Err(invalid("more than key|lifetime|mki"));
        }
        // RFC 4568 §9.2: the lifetime comes before the MKI, and either may be left out; an
        // MKI is told apart by its ':'.
        let (lifetime, mki) = match (second, third) {
            (None, _) => (None, None),
            (Some(only), None) if only.contains(':') => (None, Some(only)),
            (Some(only), None) => (Some(only), None),
            (Some(lifetime), Some(mki)) => (Some(lifetime), Some(mki)),
        };
        Ok(Self {
            material: decode_key_salt(key_salt, suite, index)?,
            lifetime: lifetime.map(|l| parse_lifetime(l, index)).transpose()?,
            mki: mki.map(|m| parse_mki(m, index)).transpose()?,
        })
    }

    /// Writes `inline:key-salt[|lifetime][|mki]`.
    fn write_sdp(&self, out: &mut String) {
        out.push_str("inline:");
        STANDARD.encode_string(self.material.as_bytes(), out);
        if let Some(packets) = self.lifetime {
            out.push('|');
            // RFC 4568 §9.2: lifetime = ["2^"] 1*DIGIT; powers of two in the short form.
            if packets.is_power_of_two() {
                out.push_str("2^");
                push_decimal(out, u64::from(packets.trailing_zeros()));
            } else {
                push_decimal(out, packets);
            }
        }
        if let Some(mki) = self.mki {
            out.push('|');
            push_decimal(out, mki.value());
            out.push(':');
            push_decimal(out, u64::from(mki.len()));
        }
    }
}

/// RFC 4568 §9.2 `srtp-session-param`, after the key parameters.
#[derive(Clone, PartialEq, Eq)]
pub enum SessionParam {
    /// `KDR=n`: key derivation rate 2^n, n in 0..=24.
    Kdr(u8),
    /// `UNENCRYPTED_SRTP`.
    UnencryptedSrtp,
    /// `UNENCRYPTED_SRTCP`.
    UnencryptedSrtcp,
    /// `UNAUTHENTICATED_SRTP`.
    UnauthenticatedSrtp,
    /// `FEC_ORDER=` followed by this value (`FEC_SRTP` or `SRTP_FEC`), kept raw.
    FecOrder(String),
    /// `FEC_KEY=` followed by this value (key parameters for FEC), kept raw. Contains key
    /// material: redacted in `Debug`.
    FecKey(String),
    /// `WSH=n`: SRTP replay window size hint in packets, at least 64.
    Wsh(u32),
    /// Any other parameter (`srtp-session-extension`), kept verbatim and written back as is.
    Other(String),
}

impl fmt::Debug for SessionParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kdr(rate) => f.debug_tuple("Kdr").field(rate).finish(),
            Self::UnencryptedSrtp => f.write_str("UnencryptedSrtp"),
            Self::UnencryptedSrtcp => f.write_str("UnencryptedSrtcp"),
            Self::UnauthenticatedSrtp => f.write_str("UnauthenticatedSrtp"),
            Self::FecOrder(order) => f.debug_tuple("FecOrder").field(order).finish(),
            Self::FecKey(_) => f.write_str("FecKey(<redacted>)"),
            Self::Wsh(window) => f.debug_tuple("Wsh").field(window).finish(),
            Self::Other(param) => f.debug_tuple("Other").field(param).finish(),
        }
    }
}

impl SessionParam {
    /// One session parameter (a field of VCHARs). Known names are matched case-insensitively
    /// (RFC 5234 §2.3); anything else is [`SessionParam::Other`].
    fn parse(param: &str, index: usize) -> Result<Self, SdesError> {
        let invalid = |reason| SdesError::InvalidSessionParam { index, reason };
        if param.eq_ignore_ascii_case("UNENCRYPTED_SRTP") {
            return Ok(Self::UnencryptedSrtp);
        }
        if param.eq_ignore_ascii_case("UNENCRYPTED_SRTCP") {
            return Ok(Self::UnencryptedSrtcp);
        }
        if param.eq_ignore_ascii_case("UNAUTHENTICATED_SRTP") {
            return Ok(Self::UnauthenticatedSrtp);
        }
        if let Some(rate) = strip_prefix_ignore_case(param, "KDR=") {
            // RFC 4568 §9.2: kdr = "KDR=" 1*2DIGIT, range 0..24.
            if rate.len() > 2 {
                return Err(invalid("KDR must be 1 or 2 digits"));
            }
            return match parse_decimal(rate) {
                Ok(n) if n <= 24 => Ok(Self::Kdr(u8::try_from(n).unwrap_or(u8::MAX))),
                Ok(_) => Err(invalid("KDR must be 0 to 24")),
                Err(_) => Err(invalid("KDR must be 1 or 2 digits")),
            };
        }
        if let Some(order) = strip_prefix_ignore_case(param, "FEC_ORDER=") {
            // RFC 4568 §9.2: fec-order = "FEC_ORDER=" fec-type.
            if order.is_empty() {
                return Err(invalid("FEC_ORDER has no value"));
            }
            return Ok(Self::FecOrder(order.to_owned()));
        }
        if let Some(key) = strip_prefix_ignore_case(param, "FEC_KEY=") {
            // RFC 4568 §9.2: fec-key = "FEC_KEY=" key-params.
            if key.is_empty() {
                return Err(invalid("FEC_KEY has no value"));
            }
            return Ok(Self::FecKey(key.to_owned()));
        }
        if let Some(window) = strip_prefix_ignore_case(param, "WSH=") {
            // RFC 4568 §9.2: wsh = "WSH=" 2*DIGIT; minimum value is 64.
            return match parse_decimal(window).map(u32::try_from) {
                Ok(Ok(n)) if n >= 64 => Ok(Self::Wsh(n)),
                Ok(Ok(_)) => Err(invalid("WSH must be at least 64")),
                Ok(Err(_)) | Err(Digits::Overflow) => Err(invalid("WSH exceeds 32 bits")),
                Err(Digits::NotDigits) => Err(invalid("WSH must be decimal digits")),
            };
        }
        Ok(Self::Other(param.to_owned()))
    }

    /// Writes the parameter as it appears in SDP.
    fn write_sdp(&self, out: &mut String) {
        match self {
            Self::Kdr(rate) => {
                out.push_str("KDR=");
                push_decimal(out, u64::from(*rate));
            }
            Self::UnencryptedSrtp => out.push_str("UNENCRYPTED_SRTP"),
            Self::UnencryptedSrtcp => out.push_str("UNENCRYPTED_SRTCP"),
            Self::UnauthenticatedSrtp => out.push_str("UNAUTHENTICATED_SRTP"),
            Self::FecOrder(order) => {
                out.push_str("FEC_ORDER=");
                out.push_str(order);
            }
            Self::FecKey(key) => {
                out.push_str("FEC_KEY=");
                out.push_str(key);
            }
            Self::Wsh(window) => {
                out.push_str("WSH=");
                push_decimal(out, u64::from(*window));
            }
            Self::Other(param) => out.push_str(param),
        }
    }
}

/// One `a=crypto` attribute (RFC 4568 §9.1). Deliberately has no `Display`: it holds keys.
/// `Debug` shows everything except key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// The tag that pairs an answer line with the offer line (at most [`MAX_TAG`]).
    pub tag: u32,
    /// The crypto suite.
    pub suite: Suite,
    /// The key parameters, at least one, at most [`MAX_KEY_PARAMS`].
    pub keys: Vec<KeyParam>,
    /// Session parameters in offer order.
    pub session_params: Vec<SessionParam>,
}

impl CryptoAttribute {
    /// A fresh attribute with one random key (from the OS CSPRNG), no lifetime, no MKI and no
    /// session parameters. `tag` must be at most [`MAX_TAG`] to be valid SDP.
    pub fn generate(tag: u32, suite: Suite) -> Result<Self, getrandom::Error> {
        Ok(Self {
            tag,
            suite,
            keys: vec![KeyParam::new(KeyMaterial::random(
                suite.key_material_len(),
            )?)],
            session_params: Vec::new(),
        })
    }

    /// Parses a whole SDP line, `a=crypto:<value>` or `crypto:<value>`; one trailing CRLF or
    /// LF is allowed.
    pub fn parse_line(line: &str) -> Result<Self, SdesError> {
        let line = line
            .strip_suffix("\r\n")
            .or_else(|| line.strip_suffix('\n'))
            .unwrap_or(line);
        let attribute = line.strip_prefix("a=").unwrap_or(line);
        let value = attribute
            .strip_prefix("crypto:")
            .ok_or(SdesError::NotCryptoAttribute)?;
        Self::parse(value)
    }

    /// Parses an attribute value (what follows `a=crypto:`).
    ///
    /// RFC 4568 §9.1: `tag 1*WSP crypto-suite 1*WSP key-params *(1*WSP session-param)`.
    /// Runs of spaces and tabs separate fields; trailing whitespace is ignored, anything else
    /// outside the grammar is an error.
    pub fn parse(value: &str) -> Result<Self, SdesError> {
        if value.len() > MAX_VALUE_LEN {
            return Err(SdesError::TooLong {
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        // Only VCHAR and WSP may appear; every later slice is then on an ASCII boundary.
        if let Some(offset) = value.bytes().position(|b| !is_vchar(b) && !is_wsp(b)) {
            return Err(SdesError::InvalidCharacter { offset });
        }

        let (tag, rest) = next_field(value);
        let tag = parse_tag(tag)?;

        let (suite_name, rest) = next_field(rest);
        let suite = parse_suite(suite_name)?;

        // RFC 4568 §9.1: key-params = key-param *(";" key-param).
        let (key_params, mut rest) = next_field(rest);
        if key_params.is_empty() {
            return Err(SdesError::MissingField {
                field: "key-params",
            });
        }
        let mut keys = Vec::new();
        for (index, param) in key_params.split(';').enumerate() {
            if index >= MAX_KEY_PARAMS {
                return Err(SdesError::TooManyKeys {
                    max: MAX_KEY_PARAMS,
                });
            }
            keys.push(KeyParam::parse(param, suite, index)?);
        }

        // RFC 4568 §9.1: *(1*WSP session-param), session-param = 1*(VCHAR).
        let mut session_params = Vec::new();
        while !rest.is_empty() {
            let (param, tail) = next_field(rest);
            session_params.push(SessionParam::parse(param, session_params.len())?);
            rest = tail;
        }

        Ok(Self {
            tag,
            suite,
            keys,
            session_params,
        })
    }

    /// The attribute value in canonical form, without `a=crypto:`: single spaces, key
    /// material in padded base64, lifetimes that are powers of two as `2^n`. Contains the
    /// keys: put it in SDP, never in a log.
    pub fn sdp_value(&self) -> String {
        let mut out = String::with_capacity(64 + 80 * self.keys.len());
        push_decimal(&mut out, u64::from(self.tag));
        out.push(' ');
        out.push_str(self.suite.sdes_name());
        out.push(' ');
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            key.write_sdp(&mut out);
        }
        for param in &self.session_params {
            out.push(' ');
            param.write_sdp(&mut out);
        }
        out
    }

    /// The whole SDP line without its CRLF: `a=crypto:` followed by [`Self::sdp_value`].
    pub fn sdp_line(&self) -> String {
        let mut line = String::from("a=crypto:");
        line.push_str(&self.sdp_value());
        line
    }

    /// Every key parameter as an engine master key, in order.
    pub fn master_keys(&self) -> Result<Vec<MasterKey>, Error> {
        self.keys
            .iter()
            .map(|key| key.master_key(self.suite))
            .collect()
    }

    /// The MKI length in bytes shared by every key parameter, 0 when they carry none. Fails
    /// if the key parameters disagree (including some with an MKI and some without).
    pub fn mki_len(&self) -> Result<usize, Error> {
        let mut lens = self
            .keys
            .iter()
            .map(|key| key.mki.map_or(0, |mki| usize::from(mki.len())));
        let first = lens.next().unwrap_or(0);
        if lens.all(|len| len == first) {
            Ok(first)
        } else {
            Err(Error::InvalidMki {
                reason: "the key parameters disagree on the MKI length",
            })
        }
    }
}

/// RFC 5234 WSP: space or horizontal tab.
const fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// RFC 5234 VCHAR: visible ASCII, `!` to `~`.
const fn is_vchar(b: u8) -> bool {
    matches!(b, 0x21..=0x7e)
}

/// `ALPHA / DIGIT / "_"`, the alphabet of crypto-suite and key-method names.
const fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Splits off the next field and skips the whitespace after it.
fn next_field(s: &str) -> (&str, &str) {
    let end = s.bytes().position(is_wsp).unwrap_or(s.len());
    let (field, rest) = s.split_at(end);
    (field, rest.trim_start_matches([' ', '\t']))
}

/// RFC 4568 §9.1: `tag = 1*9DIGIT`.
fn parse_tag(tag: &str) -> Result<u32, SdesError> {
    if tag.is_empty() {
        return Err(SdesError::MissingField { field: "tag" });
    }
    if tag.len() > 9 {
        return Err(SdesError::InvalidTag);
    }
    parse_decimal(tag)
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(SdesError::InvalidTag)
}

/// RFC 4568 §9.1: `crypto-suite = 1*(ALPHA / DIGIT / "_")`.
fn parse_suite(name: &str) -> Result<Suite, SdesError> {
    if name.is_empty() {
        return Err(SdesError::MissingField {
            field: "crypto-suite",
        });
    }
    if !name.bytes().all(is_name_byte) {
        return Err(SdesError::InvalidSuiteName);
    }
    Suite::from_sdes_name(name).ok_or_else(|| SdesError::UnknownSuite {
        name: name.to_owned(),
    })
}

/// RFC 4568 §9.2: `key-salt = 1*(base64)`, key || salt of the suite's lengths (§6.1).
fn decode_key_salt(key_salt: &str, suite: Suite, index: usize) -> Result<KeyMaterial, SdesError> {
    if key_salt.is_empty() {
        return Err(SdesError::InvalidKeyParam {
            index,
            reason: "no key material",
        });
    }
    let mut bytes = Zeroizing::new(vec![0_u8; base64::decoded_len_estimate(key_salt.len())]);
    let len = KEY_DECODER
        .decode_slice(key_salt, &mut bytes)
        .map_err(|_| SdesError::InvalidBase64 { index })?;
    bytes.truncate(len);
    if len != suite.key_material_len() {
        return Err(SdesError::InvalidKeyLength {
            index,
            suite,
            expected: suite.key_material_len(),
            got: len,
        });
    }
    Ok(KeyMaterial(bytes))
}

/// RFC 4568 §9.2: `lifetime = ["2^"] 1*(DIGIT)`, at most 2^48 packets (RFC 3711 §8.2).
fn parse_lifetime(lifetime: &str, index: usize) -> Result<u64, SdesError> {
    let too_large = SdesError::LifetimeTooLarge { index };
    let not_digits = SdesError::InvalidLifetime {
        index,
        reason: "is not [2^]digits",
    };
    let packets = if let Some(exponent) = lifetime.strip_prefix("2^") {
        match parse_decimal(exponent) {
            Ok(n) if n <= u64::from(MAX_LIFETIME_LOG2) => 1_u64 << n,
            Ok(_) | Err(Digits::Overflow) => return Err(too_large),
            Err(Digits::NotDigits) => return Err(not_digits),
        }
    } else {
        match parse_decimal(lifetime) {
            Ok(n) if n <= 1_u64 << MAX_LIFETIME_LOG2 => n,
            Ok(_) | Err(Digits::Overflow) => return Err(too_large),
            Err(Digits::NotDigits) => return Err(not_digits),
        }
    };
    if packets == 0 {
        return Err(SdesError::InvalidLifetime {
            index,
            reason: "is zero",
        });
    }
    Ok(packets)
}

/// RFC 4568 §9.2: `mki = mki-value ":" mki-length`, `mki-value = 1*DIGIT`,
/// `mki-length = 1*3DIGIT` (range 1..128).
fn parse_mki(mki: &str, index: usize) -> Result<Mki, SdesError> {
    let invalid = |reason| SdesError::InvalidMki { index, reason };
    let (value, len) = mki.split_once(':').ok_or(invalid("is not value:length"))?;
    if len.len() > 3 {
        return Err(invalid("length is not 1 to 3 digits"));
    }
    let len = match parse_decimal(len) {
        Ok(n) if (1..=u64::from(MAX_SDES_MKI_LEN)).contains(&n) => {
            u8::try_from(n).unwrap_or(MAX_SDES_MKI_LEN)
        }
        Ok(_) => return Err(invalid("length is not 1 to 128 bytes")),
        Err(_) => return Err(invalid("length is not 1 to 3 digits")),
    };
    let value = match parse_decimal(value) {
        Ok(n) => n,
        Err(Digits::Overflow) => return Err(SdesError::MkiValueTooLarge { index, len }),
        Err(Digits::NotDigits) => return Err(invalid("value is not decimal digits")),
    };
    Mki::new(value, len).ok_or(SdesError::MkiValueTooLarge { index, len })
}

/// Why [`parse_decimal`] refused its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digits {
    /// Empty, or a byte other than `0`-`9`.
    NotDigits,
    /// More than `u64::MAX`.
    Overflow,
}

/// `1*DIGIT` as a `u64`. Unlike `str::parse`, refuses a leading `+`.
fn parse_decimal(digits: &str) -> Result<u64, Digits> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Digits::NotDigits);
    }
    digits.bytes().try_fold(0_u64, |n, b| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(Digits::Overflow)
    })
}

/// `s` without `prefix`, compared ASCII-case-insensitively.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn push_decimal(out: &mut String, n: u64) {
    out.push_str(&n.to_string());
}

#[cfg(test)]
mod tests {
    use super::{CryptoAttribute, KeyMaterial, Mki, SdesError, SessionParam, MAX_VALUE_LEN};
    use crate::{Error, Suite};

    /// The example attribute of RFC 4568 §4.
    const RFC_EXAMPLE: &str =
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32";
    const RFC_KEY_B64: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
    /// A key from RFC 4568's examples: 30 bytes, key || salt for the `AES_CM_128` suites.
    const KEY_A: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    const KEY_B: &str = "MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm";
    /// Bytes 0..28: key || salt for `AEAD_AES_128_GCM`.
    const KEY_28: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
    /// Bytes 0..46: key || salt for the `AES_256_CM` suites.
    const KEY_46: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLQ==";

    fn parse(value: &str) -> CryptoAttribute {
        CryptoAttribute::parse(value).unwrap_or_else(|e| panic!("{value:?} refused: {e}"))
    }

    fn refuse(value: &str) -> SdesError {
        match CryptoAttribute::parse(value) {
            Ok(attr) => panic!("{value:?} accepted as {attr:?}"),
            Err(e) => e,
        }
    }

    fn b64(text: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("test key is base64")
    }

    #[test]
    fn rfc_example_parses_to_its_fields_and_round_trips() {
        let attr = parse(RFC_EXAMPLE);
        assert_eq!(attr.tag, 1);
        assert_eq!(attr.suite, Suite::AesCm128HmacSha1_80);
        assert_eq!(attr.keys.len(), 1);
        let key = &attr.keys[0];
        assert_eq!(key.material.as_bytes(), b64(RFC_KEY_B64).as_slice());
        assert_eq!(key.material.len(), 30);
        assert_eq!(key.lifetime, Some(1 << 20));
        assert_eq!(key.mki, Mki::new(1, 32));
        assert!(attr.session_params.is_empty());
        assert_eq!(attr.sdp_value(), RFC_EXAMPLE);
        assert_eq!(attr.sdp_line(), format!("a=crypto:{RFC_EXAMPLE}"));
        assert_eq!(attr.mki_len(), Ok(32));
    }

    #[test]
    fn parse_line_accepts_both_prefixes_and_refuses_other_attributes() {
        let expected = parse(RFC_EXAMPLE);
        for line in [
            format!("a=crypto:{RFC_EXAMPLE}"),
            format!("crypto:{RFC_EXAMPLE}"),
            format!("a=crypto:{RFC_EXAMPLE}\r\n"),
        ] {
            assert_eq!(CryptoAttribute::parse_line(&line), Ok(expected.clone()));
        }
        assert_eq!(
            CryptoAttribute::parse_line("a=fingerprint:sha-256 00:11"),
            Err(SdesError::NotCryptoAttribute)
        );
        assert_eq!(
            CryptoAttribute::parse_line(&format!("a=crypto:{RFC_EXAMPLE}\r\n\r\n")),
            Err(SdesError::InvalidCharacter {
                offset: RFC_EXAMPLE.len()
            })
        );
    }

    #[test]
    fn two_keys_with_mkis_parse_and_become_master_keys() {
        let value =
            format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}|2^20|1:4;inline:{KEY_B}|2^20|2:4");
        let attr = parse(&value);
        assert_eq!(attr.tag, 2);
        assert_eq!(attr.suite, Suite::AesCm128HmacSha1_32);
        assert_eq!(attr.keys.len(), 2);
        assert_eq!(attr.keys[0].mki, Mki::new(1, 4));
        assert_eq!(attr.keys[1].mki, Mki::new(2, 4));
        assert_eq!(attr.keys[1].material.as_bytes(), b64(KEY_B).as_slice());
        assert_eq!(attr.sdp_value(), value);
        assert_eq!(attr.mki_len(), Ok(4));

        let keys = attr.master_keys().expect("valid keys");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].mki(), [0, 0, 0, 1]);
        assert_eq!(keys[1].mki(), [0, 0, 0, 2]);
        assert_eq!(keys[1].lifetime(), Some(1 << 20));
        assert_eq!(keys[1].suite(), Suite::AesCm128HmacSha1_32);
    }

    #[test]
    fn mki_without_lifetime_is_told_apart_by_its_colon() {
        // RFC 4568's examples include a key with an MKI and no lifetime (`|1066:4`).
        let attr = parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|1066:4"));
        assert_eq!(attr.keys[0].lifetime, None);
        assert_eq!(attr.keys[0].mki, Mki::new(1066, 4));
    }

    #[test]
    fn power_of_two_and_decimal_lifetimes_mean_the_same() {
        let short = parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^20"));
        let long = parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|1048576"));
        assert_eq!(short.keys[0].lifetime, Some(1_048_576));
        assert_eq!(short, long);
        assert_eq!(long.sdp_value(), short.sdp_value());

        let odd = parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|1000"));
        assert_eq!(odd.keys[0].lifetime, Some(1000));
        assert!(odd.sdp_value().ends_with("|1000"), "{}", odd.sdp_value());

        let max = parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^48"));
        assert_eq!(max.keys[0].lifetime, Some(1 << 48));
    }

    #[test]
    fn session_params_including_unknown_ones_round_trip() {
        let value = format!(
            "7 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} KDR=3 UNENCRYPTED_SRTCP \
             UNENCRYPTED_SRTP UNAUTHENTICATED_SRTP FEC_ORDER=FEC_SRTP \
             FEC_KEY=inline:{KEY_B}|2^20 WSH=128 -X_VENDOR=1 FUTURE_PARAM"
        );
        let attr = parse(&value);
        assert_eq!(
            attr.session_params,
            [
                SessionParam::Kdr(3),
                SessionParam::UnencryptedSrtcp,
                SessionParam::UnencryptedSrtp,
                SessionParam::UnauthenticatedSrtp,
                SessionParam::FecOrder("FEC_SRTP".to_owned()),
                SessionParam::FecKey(format!("inline:{KEY_B}|2^20")),
                SessionParam::Wsh(128),
                SessionParam::Other("-X_VENDOR=1".to_owned()),
                SessionParam::Other("FUTURE_PARAM".to_owned()),
            ]
        );
        assert_eq!(attr.sdp_value(), value);
    }

    #[test]
    fn runs_of_spaces_and_tabs_separate_fields() {
        let spaced = parse(&format!(
            "1 \t AES_CM_128_HMAC_SHA1_80\t\tinline:{KEY_A}|2^20|1:4  KDR=0 \t"
        ));
        let single = parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^20|1:4 KDR=0"
        ));
        assert_eq!(spaced, single);
    }

    #[test]
    fn key_material_is_accepted_with_or_without_padding() {
        // 46 bytes for the AES-256 suites: base64 with "==" padding.
        let material: Vec<u8> = (0..46).collect();
        let padded = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&material)
        };
        assert!(padded.ends_with("=="));
        let unpadded = padded.trim_end_matches('=');
        for key in [padded.as_str(), unpadded] {
            let attr = parse(&format!("3 AES_256_CM_HMAC_SHA1_80 inline:{key}"));
            assert_eq!(attr.keys[0].material.as_bytes(), material.as_slice());
            assert_eq!(
                attr.sdp_value(),
                format!("3 AES_256_CM_HMAC_SHA1_80 inline:{padded}")
            );
        }
    }

    /// Each value is refused with exactly the expected error.
    fn assert_refused(cases: &[(String, SdesError)]) {
        for (value, expected) in cases {
            assert_eq!(&refuse(value), expected, "{value:?}");
        }
    }

    /// An `AES_CM_128_HMAC_SHA1_80` attribute whose first key parameter is `inline:KEY_A`
    /// followed by `tail`.
    fn with_key_a(tail: &str) -> String {
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}{tail}")
    }

    #[test]
    fn malformed_fields_are_refused() {
        assert_refused(&[
            (
                format!("1 F8_128_HMAC_SHA1_80 inline:{KEY_A}"),
                SdesError::UnknownSuite {
                    name: "F8_128_HMAC_SHA1_80".to_owned(),
                },
            ),
            (
                format!("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}"),
                SdesError::InvalidTag,
            ),
            (
                format!("1 AES-CM inline:{KEY_A}"),
                SdesError::InvalidSuiteName,
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80".to_owned(),
                SdesError::MissingField {
                    field: "key-params",
                },
            ),
            (
                // Trailing garbage: a NUL after the last field.
                with_key_a("|2^20|1:4 \0"),
                SdesError::InvalidCharacter { offset: 83 },
            ),
        ]);
    }

    #[test]
    fn malformed_key_params_are_refused() {
        assert_refused(&[
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}!", &KEY_A[..39]),
                SdesError::InvalidBase64 { index: 0 },
            ),
            (
                // 46 bytes of AES-256 material offered for a 30-byte suite.
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_46}"),
                SdesError::InvalidKeyLength {
                    index: 0,
                    suite: Suite::AesCm128HmacSha1_80,
                    expected: 30,
                    got: 46,
                },
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 {KEY_A}|2^20"),
                SdesError::InvalidKeyParam {
                    index: 0,
                    reason: "no key method (expected inline:)",
                },
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 uri:{KEY_A}"),
                SdesError::UnsupportedKeyMethod {
                    index: 0,
                    method: "uri".to_owned(),
                },
            ),
            (
                with_key_a("|2^20|1:4|9"),
                SdesError::InvalidKeyParam {
                    index: 0,
                    reason: "more than key|lifetime|mki",
                },
            ),
            (
                with_key_a("|2^20|1:4;"),
                SdesError::InvalidKeyParam {
                    index: 1,
                    reason: "empty key parameter",
                },
            ),
        ]);
    }

    #[test]
    fn malformed_lifetimes_and_mkis_are_refused() {
        assert_refused(&[
            (
                with_key_a("|2^20|1:4x"),
                SdesError::InvalidMki {
                    index: 0,
                    reason: "length is not 1 to 3 digits",
                },
            ),
            (
                with_key_a("|2^20|256:1"),
                SdesError::MkiValueTooLarge { index: 0, len: 1 },
            ),
            (
                with_key_a("|2^20|1:129"),
                SdesError::InvalidMki {
                    index: 0,
                    reason: "length is not 1 to 128 bytes",
                },
            ),
            (
                with_key_a("|2^49"),
                SdesError::LifetimeTooLarge { index: 0 },
            ),
            (
                with_key_a("|281474976710657"),
                SdesError::LifetimeTooLarge { index: 0 },
            ),
            (
                with_key_a("|0"),
                SdesError::InvalidLifetime {
                    index: 0,
                    reason: "is zero",
                },
            ),
        ]);
    }

    #[test]
    fn malformed_session_params_are_refused() {
        assert_refused(&[
            (
                with_key_a(" WSH=32"),
                SdesError::InvalidSessionParam {
                    index: 0,
                    reason: "WSH must be at least 64",
                },
            ),
            (
                with_key_a(" UNENCRYPTED_SRTP KDR=25"),
                SdesError::InvalidSessionParam {
                    index: 1,
                    reason: "KDR must be 0 to 24",
                },
            ),
        ]);
    }

    #[test]
    fn key_count_and_value_length_are_bounded() {
        let seventeen = vec![format!("inline:{KEY_A}"); 17].join(";");
        assert_eq!(
            refuse(&format!("1 AES_CM_128_HMAC_SHA1_80 {seventeen}")),
            SdesError::TooManyKeys { max: 16 }
        );
        let sixteen = vec![format!("inline:{KEY_A}"); 16].join(";");
        assert_eq!(
            parse(&format!("1 AES_CM_128_HMAC_SHA1_80 {sixteen}"))
                .keys
                .len(),
            16
        );
        let long = format!("{RFC_EXAMPLE} {}", "X".repeat(MAX_VALUE_LEN));
        assert_eq!(
            refuse(&long),
            SdesError::TooLong {
                len: long.len(),
                max: MAX_VALUE_LEN
            }
        );
    }

    #[test]
    fn mki_values_must_fit_their_length() {
        assert_eq!(Mki::new(255, 1).map(Mki::to_bytes), Some(vec![0xff]));
        assert_eq!(Mki::new(256, 1), None);
        assert_eq!(Mki::new(0x0102, 2).map(Mki::to_bytes), Some(vec![1, 2]));
        assert_eq!(Mki::new(1, 0), None);
        assert_eq!(Mki::new(1, 129), None);
        let wide = Mki::new(u64::MAX, 10).expect("fits").to_bytes();
        assert_eq!(wide, [0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn mki_longer_than_the_engine_accepts_is_refused_at_conversion() {
        // RFC 4568's own example uses a 32-byte MKI; the engine stops at 16.
        let attr = parse(RFC_EXAMPLE);
        assert_eq!(
            attr.master_keys().err(),
            Some(Error::InvalidMki {
                reason: "MKI longer than 16 bytes"
            })
        );
    }

    #[test]
    fn mki_len_is_zero_without_mki_and_an_error_when_keys_disagree() {
        let none = parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}"));
        assert_eq!(none.mki_len(), Ok(0));
        let key = none.master_keys().expect("valid key");
        assert_eq!(key[0].mki(), [0_u8; 0]);
        assert_eq!(key[0].lifetime(), None);

        let mixed = parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|1:4;inline:{KEY_B}|2:2"
        ));
        assert!(matches!(mixed.mki_len(), Err(Error::InvalidMki { .. })));
    }

    #[test]
    fn generated_keys_are_fresh_and_of_the_suite_length() {
        for suite in Suite::ALL {
            let first = CryptoAttribute::generate(5, suite).expect("CSPRNG");
            let second = CryptoAttribute::generate(5, suite).expect("CSPRNG");
            assert_eq!(first.keys.len(), 1);
            assert_eq!(first.keys[0].material.len(), suite.key_material_len());
            assert_eq!(first.keys[0].lifetime, None);
            assert_eq!(first.keys[0].mki, None);
            assert_ne!(first.keys[0].material, second.keys[0].material);
            // What we send, we can read back.
            assert_eq!(
                CryptoAttribute::parse(&first.sdp_value()),
                Ok(first.clone())
            );
            assert!(first.master_keys().is_ok());
        }
        assert_eq!(KeyMaterial::random(7).expect("CSPRNG").len(), 7);
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let attr = parse(&format!("{RFC_EXAMPLE} FEC_KEY=inline:{KEY_B}|2^20 KDR=1"));
        let printed = format!("{attr:?} {:#?}", attr.keys[0].material);
        for secret in [RFC_KEY_B64, "PS1uQ", KEY_B, "MTIzN"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(
            printed.contains("KeyMaterial(<redacted>, 30 bytes)"),
            "{printed}"
        );
        assert!(printed.contains("FecKey(<redacted>)"), "{printed}");
        assert!(printed.contains("Kdr(1)"), "{printed}");
    }

    #[test]
    fn errors_never_echo_key_material() {
        let key_as_method = format!("1 AES_CM_128_HMAC_SHA1_80 {RFC_KEY_B64}:1");
        for value in [
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_B64}x"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_B64}AAAA"),
            key_as_method,
        ] {
            let error = refuse(&value);
            let printed = format!("{error} {error:?}");
            assert!(!printed.contains("PS1uQ"), "{printed}");
        }
    }

    /// Deterministic xorshift64*, so a failure names a reproducible seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).expect("small")).expect("small")
        }
    }

    /// A fuzz target in miniature: mutated attributes never panic the parser, and whatever
    /// it accepts, it writes back in a form it reads as the same attribute.
    #[test]
    fn parse_never_panics_and_accepted_input_round_trips() {
        let seeds = [
            RFC_EXAMPLE.to_owned(),
            format!(
                "2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}|2^20|1:4;inline:{KEY_B}|1000|2:4 \
                 KDR=0 WSH=64 FEC_ORDER=SRTP_FEC -ext"
            ),
            format!("9 AEAD_AES_128_GCM inline:{KEY_28}"),
        ];
        let alphabet: &[u8] = b" \t;:|^=+/_-0123456789AZaz\0\x7f\xc3\xa9\r\n";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].clone().into_bytes();
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len() + 1);
                let byte = alphabet[rng.below(alphabet.len())];
                match rng.below(3) {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ if at < bytes.len() => bytes[at] = byte,
                    _ => bytes.push(byte),
                }
            }
            let input = String::from_utf8_lossy(&bytes);
            if let Ok(attr) = CryptoAttribute::parse(&input) {
                accepted += 1;
                assert_eq!(
                    CryptoAttribute::parse(&attr.sdp_value()).as_ref(),
                    Ok(&attr),
                    "round {round}: {input:?}"
                );
            }
        }
        // The mutations must exercise the accepting paths too, not only the errors.
        assert!(
            accepted > 100,
            "only {accepted} mutated inputs were accepted"
        );
    }
}
