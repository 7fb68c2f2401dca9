//! `libsrtp-oracle`: the system libsrtp 2.5 (Debian `libsrtp2-dev`) behind a small safe API, the
//! reference oracle for the `srtp` crate's cross-check tests and benchmarks. Test-only
//! (`publish = false`); no shipped crate depends on it.
//!
//! It owns one libsrtp session per [`LibSrtp`] and nothing else: no IO and no clock. Replay
//! windows, rollover counters and key-usage limits live inside the libsrtp session; packets go in
//! and out as byte buffers. `build.rs` links `-lsrtp2`, and `ffi.rs` declares the C items by hand
//! against `/usr/include/srtp2/srtp.h` (its unit test pins the struct layouts gcc reports).
//!
//! A session is built from an [`OracleConfig`]: one [`Profile`], one [`Direction`] (libsrtp's
//! `ssrc_any_outbound` / `ssrc_any_inbound` templates, so any SSRC is accepted), and either one
//! master key without MKI (`srtp_policy_t.key`) or up to 16 keys with MKIs
//! (`srtp_policy_t.keys`, RFC 3711 §3.1).
//!
//! What `protect` appends, as libsrtp 2.5 lays it out (RFC 3711 §3.1 and §3.4; RFC 7714 for
//! AEAD, where the tag is the last part of the ciphertext):
//!
//! ```text
//! SRTP, AES-CM:   | RTP header | encrypted payload | MKI (opt) | auth tag (10 or 4) |
//! SRTP, AES-GCM:  | RTP header | encrypted payload | tag (16) | MKI (opt) |
//! SRTCP, AES-CM:  | header (8) | encrypted body | E|index (4) | MKI (opt) | auth tag (10) |
//! SRTCP, AES-GCM: | header (8) | encrypted body | tag (16) | E|index (4) | MKI (opt) |
//! ```
//!
//! libsrtp writes that trailer in place after the packet, so protect needs
//! [`RTP_TRAILER_ROOM`] (`SRTP_MAX_TRAILER_LEN`) or [`RTCP_TRAILER_ROOM`] writable octets past
//! the packet; the `Vec` methods reserve them, the `*_in_place` fast paths check them.

mod ffi;
mod status;

use std::{
    ffi::{c_int, c_uint, c_ulong, c_void, CStr},
    fmt,
    ptr::{self, NonNull},
    sync::OnceLock,
};

pub use status::Status;

/// Writable octets `srtp_protect` may use after an RTP packet: `SRTP_MAX_TRAILER_LEN` (16-octet
/// tag + 128-octet MKI).
pub const RTP_TRAILER_ROOM: usize = ffi::SRTP_MAX_TRAILER_LEN;

/// Writable octets `srtp_protect_rtcp` may use after an RTCP packet: `SRTP_MAX_TRAILER_LEN` plus
/// the 4-octet E flag and SRTCP index (srtp.h: `SRTP_MAX_TRAILER_LEN+4`).
pub const RTCP_TRAILER_ROOM: usize = ffi::SRTP_MAX_TRAILER_LEN + 4;

/// The SRTP protection profile (RFC 4568 §6.2 crypto-suite names; RFC 6188 for AES-256;
/// RFC 7714 for AES-GCM), mapped to libsrtp's crypto policy setters.
///
/// RTCP follows libsrtp's `srtp_crypto_policy_set_from_profile_for_rtcp`: the `_32` profiles
/// still protect SRTCP with the 80-bit tag, libsrtp never honours a 32-bit SRTCP tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// `AES_CM_128_HMAC_SHA1_80`: AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`: AES-128 counter mode, 32-bit SRTP tag (80-bit SRTCP tag).
    AesCm128HmacSha1_32,
    /// `AES_256_CM_HMAC_SHA1_80` (RFC 6188): AES-256 counter mode, 80-bit HMAC-SHA1 tag.
    AesCm256HmacSha1_80,
    /// `AES_256_CM_HMAC_SHA1_32` (RFC 6188): 32-bit SRTP tag (80-bit SRTCP tag).
    AesCm256HmacSha1_32,
    /// `AEAD_AES_128_GCM` (RFC 7714): AES-128-GCM with a 16-octet tag.
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM` (RFC 7714): AES-256-GCM with a 16-octet tag.
    AeadAes256Gcm,
}

/// The libsrtp function that fills one `srtp_crypto_policy_t`.
type PolicySetter = unsafe extern "C" fn(*mut ffi::srtp_crypto_policy_t);

impl Profile {
    /// Every profile, for tests that sweep them.
    pub const ALL: [Self; 6] = [
        Self::AesCm128HmacSha1_80,
        Self::AesCm128HmacSha1_32,
        Self::AesCm256HmacSha1_80,
        Self::AesCm256HmacSha1_32,
        Self::AeadAes128Gcm,
        Self::AeadAes256Gcm,
    ];

    /// Master key length in octets (16 for AES-128, 32 for AES-256).
    pub const fn master_key_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 | Self::AesCm128HmacSha1_32 | Self::AeadAes128Gcm => 16,
            Self::AesCm256HmacSha1_80 | Self::AesCm256HmacSha1_32 | Self::AeadAes256Gcm => 32,
        }
    }

    /// Master salt length in octets (14 for AES-CM, RFC 3711; 12 for AES-GCM, RFC 7714).
    pub const fn master_salt_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => 12,
            _ => 14,
        }
    }

    /// Length of [`OracleKey::material`] (master key || master salt): 30, 46, 28 or 44 octets.
    pub const fn material_len(self) -> usize {
        self.master_key_len() + self.master_salt_len()
    }

    /// Authentication tag octets that protect appends to an RTP packet.
    pub const fn rtp_auth_tag_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 | Self::AesCm256HmacSha1_80 => 10,
            Self::AesCm128HmacSha1_32 | Self::AesCm256HmacSha1_32 => 4,
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => 16,
        }
    }

    /// Authentication tag octets that protect appends to an RTCP packet (besides the 4-octet
    /// E flag and SRTCP index).
    pub const fn rtcp_auth_tag_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => 16,
            _ => 10,
        }
    }

    fn rtp_policy_setter(self) -> PolicySetter {
        match self {
            // srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80 is a macro for the RTP default.
            Self::AesCm128HmacSha1_80 => ffi::srtp_crypto_policy_set_rtp_default,
            Self::AesCm128HmacSha1_32 => ffi::srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32,
            Self::AesCm256HmacSha1_80 => ffi::srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80,
            Self::AesCm256HmacSha1_32 => ffi::srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32,
            Self::AeadAes128Gcm => ffi::srtp_crypto_policy_set_aes_gcm_128_16_auth,
            Self::AeadAes256Gcm => ffi::srtp_crypto_policy_set_aes_gcm_256_16_auth,
        }
    }

    fn rtcp_policy_setter(self) -> PolicySetter {
        match self {
            Self::AesCm128HmacSha1_80 | Self::AesCm128HmacSha1_32 => {
                ffi::srtp_crypto_policy_set_rtp_default
            }
            Self::AesCm256HmacSha1_80 | Self::AesCm256HmacSha1_32 => {
                ffi::srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80
            }
            Self::AeadAes128Gcm => ffi::srtp_crypto_policy_set_aes_gcm_128_16_auth,
            Self::AeadAes256Gcm => ffi::srtp_crypto_policy_set_aes_gcm_256_16_auth,
        }
    }
}

fn crypto_policy(setter: PolicySetter) -> ffi::srtp_crypto_policy_t {
    let mut policy = ffi::srtp_crypto_policy_t::default();
    // SAFETY: every PolicySetter is one of libsrtp's srtp_crypto_policy_set_* functions, which
    // only write the six fields of the valid, exclusively borrowed struct they are given.
    unsafe { setter(&raw mut policy) };
    policy
}

/// Which way a session transforms packets. libsrtp sessions are one-way: an `Outbound` session
/// protects, an `Inbound` one unprotects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `ssrc_any_inbound`: unprotects packets of any SSRC.
    Inbound,
    /// `ssrc_any_outbound`: protects packets of any SSRC.
    Outbound,
}

impl Direction {
    const fn ssrc_type(self) -> ffi::srtp_ssrc_type_t {
        match self {
            Self::Inbound => ffi::SSRC_ANY_INBOUND,
            Self::Outbound => ffi::SSRC_ANY_OUTBOUND,
        }
    }
}

/// One master key. The `Debug` output shows the MKI (it travels in clear on the wire) but never
/// the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct OracleKey {
    /// Master key || master salt: 30, 46, 28 or 44 octets (see [`Profile::material_len`]).
    pub material: Vec<u8>,
    /// Master key identifier (RFC 3711 §3.1); empty means no MKI.
    pub mki: Vec<u8>,
}

impl OracleKey {
    /// A key without MKI.
    pub fn new(material: Vec<u8>) -> Self {
        Self {
            material,
            mki: Vec::new(),
        }
    }

    /// A key identified by `mki` on the wire.
    pub fn with_mki(material: Vec<u8>, mki: Vec<u8>) -> Self {
        Self { material, mki }
    }
}

impl fmt::Debug for OracleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OracleKey")
            .field(
                "material",
                &format_args!("<{} octets redacted>", self.material.len()),
            )
            .field("mki", &self.mki)
            .finish()
    }
}

/// Everything [`LibSrtp::new`] turns into an `srtp_policy_t`.
///
/// Key rules the oracle checks before calling libsrtp (a breach is [`Status::BAD_PARAM`]):
/// every `material` is [`Profile::material_len`] octets; either exactly one key with an empty
/// MKI (`srtp_policy_t.key`), or 1 to 16 keys that all have an MKI of 1 to 128 octets
/// (`srtp_policy_t.keys`, MKI mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OracleConfig {
    /// Crypto suite for both SRTP and SRTCP.
    pub profile: Profile,
    /// Protecting (outbound) or unprotecting (inbound) session.
    pub direction: Direction,
    /// The master keys; in MKI mode their order gives the `mki_index` of the `*_mki` methods.
    pub keys: Vec<OracleKey>,
    /// Replay window in packets: 0 for libsrtp's default (128), otherwise 64 to 32767 (libsrtp
    /// answers `bad_param` outside that range).
    pub window_size: u64,
    /// Whether an outbound session may protect the same sequence number again (libsrtp's
    /// `allow_repeat_tx`); when false that is `replay_fail`.
    pub allow_repeat_tx: bool,
}

impl OracleConfig {
    /// One master key without MKI, libsrtp's default replay window, no repeated transmissions.
    pub fn single_key(profile: Profile, direction: Direction, material: Vec<u8>) -> Self {
        Self {
            profile,
            direction,
            keys: vec![OracleKey::new(material)],
            window_size: 0,
            allow_repeat_tx: false,
        }
    }

    /// Checks the key rules above; `Ok(true)` means MKI mode.
    fn uses_mki(&self) -> Result<bool, Status> {
        let material_len = self.profile.material_len();
        if self.keys.is_empty()
            || self.keys.len() > ffi::SRTP_MAX_NUM_MASTER_KEYS
            || self
                .keys
                .iter()
                .any(|key| key.material.len() != material_len)
        {
            return Err(Status::BAD_PARAM);
        }
        let uses_mki = self.keys.iter().any(|key| !key.mki.is_empty());
        let keys_fit_mode = if uses_mki {
            self.keys
                .iter()
                .all(|key| (1..=ffi::SRTP_MAX_MKI_LEN).contains(&key.mki.len()))
        } else {
            self.keys.len() == 1
        };
        if keys_fit_mode {
            Ok(uses_mki)
        } else {
            Err(Status::BAD_PARAM)
        }
    }
}

/// Runs `srtp_init` once per process and reports its status to every caller.
fn init_libsrtp() -> Result<(), Status> {
    static INIT_STATUS: OnceLock<ffi::srtp_err_status_t> = OnceLock::new();
    // SAFETY: srtp_init takes no arguments; the OnceLock runs it exactly once, before any other
    // libsrtp call this crate makes.
    Status::check(*INIT_STATUS.get_or_init(|| unsafe { ffi::srtp_init() }))
}

/// The version string of the linked libsrtp, e.g. `"libsrtp2 2.5.0"`.
pub fn libsrtp_version() -> &'static str {
    // SAFETY: srtp_get_version_string has no preconditions and returns a pointer to a static,
    // NUL-terminated string literal that lives as long as the library (i.e. the process).
    let version = unsafe { CStr::from_ptr(ffi::srtp_get_version_string()) };
    version
        .to_str()
        .unwrap_or("libsrtp2 (version string is not UTF-8)")
}

/// One libsrtp session (`srtp_t`), created by [`LibSrtp::new`] and freed with `srtp_dealloc` on
/// drop.
///
/// Every method takes `&mut self`, so a session is never used by two threads at once (libsrtp
/// has no locking); it is `Send` but not `Sync`. On error the packet's content is unspecified
/// (AES-GCM decrypts in place before the tag check fails), only its length is restored.
pub struct LibSrtp {
    session: NonNull<ffi::srtp_ctx_t>,
    profile: Profile,
    direction: Direction,
}

// SAFETY: the session is heap memory owned solely by this value, with no thread affinity:
// libsrtp keeps no thread-locals and the NSS contexts behind its ciphers may be used from any
// thread. The only requirement, no concurrent use of one session, holds because every call goes
// through `&mut self` (and the type is not Sync).
unsafe impl Send for LibSrtp {}

/// One libsrtp packet transform and the MKI arguments it passes.
#[derive(Debug, Clone, Copy)]
enum Transform {
    /// `srtp_protect`, or `srtp_protect_mki(use_mki = 1, mki_index)` with an index.
    ProtectRtp { mki_index: Option<u32> },
    /// `srtp_protect_rtcp`, or `srtp_protect_rtcp_mki(use_mki = 1, mki_index)`.
    ProtectRtcp { mki_index: Option<u32> },
    /// `srtp_unprotect`, or `srtp_unprotect_mki(use_mki = 1)`.
    UnprotectRtp { use_mki: bool },
    /// `srtp_unprotect_rtcp`, or `srtp_unprotect_rtcp_mki(use_mki = 1)`.
    UnprotectRtcp { use_mki: bool },
}

impl Transform {
    /// Writable octets libsrtp may use past the packet.
    const fn trailer_room(self) -> usize {
        match self {
            Self::ProtectRtp { .. } => RTP_TRAILER_ROOM,
            Self::ProtectRtcp { .. } => RTCP_TRAILER_ROOM,
            Self::UnprotectRtp { .. } | Self::UnprotectRtcp { .. } => 0,
        }
    }
}

impl LibSrtp {
    /// Creates a libsrtp session (`srtp_create`) for `config`. libsrtp copies the keys, so
    /// `config` need not outlive the session.
    pub fn new(config: &OracleConfig) -> Result<Self, Status> {
        init_libsrtp()?;
        let uses_mki = config.uses_mki()?;

        // MKI mode: an array of srtp_master_key_t and an array of pointers to them, both alive
        // until srtp_create returns. libsrtp only reads through the `*mut` pointers (srtp_create
        // takes a `const srtp_policy_t *` and copies keys and MKIs).
        let mut master_keys = Vec::new();
        if uses_mki {
            for key in &config.keys {
                master_keys.push(ffi::srtp_master_key_t {
                    key: key.material.as_ptr().cast_mut(),
                    mki_id: key.mki.as_ptr().cast_mut(),
                    mki_size: c_uint::try_from(key.mki.len()).map_err(|_| Status::BAD_PARAM)?,
                });
            }
        }
        let mut master_key_ptrs: Vec<*mut ffi::srtp_master_key_t> =
            master_keys.iter_mut().map(ptr::from_mut).collect();
        let (key, keys) = match config.keys.first() {
            Some(single) if !uses_mki => (single.material.as_ptr().cast_mut(), ptr::null_mut()),
            _ => (ptr::null_mut(), master_key_ptrs.as_mut_ptr()),
        };

        let policy = ffi::srtp_policy_t {
            ssrc: ffi::srtp_ssrc_t {
                type_: config.direction.ssrc_type(),
                value: 0,
            },
            rtp: crypto_policy(config.profile.rtp_policy_setter()),
            rtcp: crypto_policy(config.profile.rtcp_policy_setter()),
            key,
            keys,
            num_master_keys: c_ulong::try_from(master_key_ptrs.len())
                .map_err(|_| Status::BAD_PARAM)?,
            deprecated_ekt: ptr::null_mut(),
            window_size: c_ulong::try_from(config.window_size).map_err(|_| Status::BAD_PARAM)?,
            allow_repeat_tx: c_int::from(config.allow_repeat_tx),
            enc_xtn_hdr: ptr::null_mut(),
            enc_xtn_hdr_count: 0,
            next: ptr::null_mut(),
        };

        let mut session: ffi::srtp_t = ptr::null_mut();
        // SAFETY: srtp_init has succeeded. `policy` is a fully initialised srtp_policy_t whose
        // pointers are valid for the whole call: `key` points to `material_len` octets (checked by
        // `uses_mki`), or `keys` to `num_master_keys` entries whose key and MKI buffers have the
        // checked lengths; `next`, `enc_xtn_hdr` and `deprecated_ekt` are null. `session` is a
        // writable srtp_t.
        Status::check(unsafe { ffi::srtp_create(&raw mut session, &raw const policy) })?;
        // libsrtp never reports ok with a null session; treat it as an unspecified failure.
        let session = NonNull::new(session).ok_or(Status::FAIL)?;
        Ok(Self {
            session,
            profile: config.profile,
            direction: config.direction,
        })
    }

    /// The profile the session was created with.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The direction the session was created with.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// `srtp_protect`: turns the RTP packet in `packet` into an SRTP packet (the `Vec` grows by
    /// the trailer; no MKI is written even in MKI mode).
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), Status> {
        self.transform_vec(packet, Transform::ProtectRtp { mki_index: None })
    }

    /// `srtp_unprotect`: verifies and decrypts the SRTP packet in `packet` (the `Vec` shrinks to
    /// the RTP packet). Not for MKI-mode sessions: use [`LibSrtp::unprotect_rtp_mki`].
    pub fn unprotect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), Status> {
        self.transform_vec(packet, Transform::UnprotectRtp { use_mki: false })
    }

    /// `srtp_protect_rtcp`: turns the RTCP packet in `packet` into an SRTCP packet.
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), Status> {
        self.transform_vec(packet, Transform::ProtectRtcp { mki_index: None })
    }

    /// `srtp_unprotect_rtcp`: verifies and decrypts the SRTCP packet in `packet`.
    pub fn unprotect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), Status> {
        self.transform_vec(packet, Transform::UnprotectRtcp { use_mki: false })
    }

    /// `srtp_protect_mki(use_mki = 1)`: protects with the master key at `mki_index` (its
    /// position in [`OracleConfig::keys`]) and writes that key's MKI into the packet. An index
    /// past the last key is `bad_mki`.
    pub fn protect_rtp_mki(&mut self, packet: &mut Vec<u8>, mki_index: u32) -> Result<(), Status> {
        self.transform_vec(
            packet,
            Transform::ProtectRtp {
                mki_index: Some(mki_index),
            },
        )
    }

    /// `srtp_protect_rtcp_mki(use_mki = 1)`: as [`LibSrtp::protect_rtp_mki`] for RTCP.
    pub fn protect_rtcp_mki(&mut self, packet: &mut Vec<u8>, mki_index: u32) -> Result<(), Status> {
        self.transform_vec(
            packet,
            Transform::ProtectRtcp {
                mki_index: Some(mki_index),
            },
        )
    }

    /// `srtp_unprotect_mki(use_mki = 1)`: finds the master key by the packet's MKI, then
    /// verifies and decrypts. An unknown MKI is `bad_mki`.
    pub fn unprotect_rtp_mki(&mut self, packet: &mut Vec<u8>) -> Result<(), Status> {
        self.transform_vec(packet, Transform::UnprotectRtp { use_mki: true })
    }

    /// `srtp_unprotect_rtcp_mki(use_mki = 1)`: as [`LibSrtp::unprotect_rtp_mki`] for SRTCP.
    pub fn unprotect_rtcp_mki(&mut self, packet: &mut Vec<u8>) -> Result<(), Status> {
        self.transform_vec(packet, Transform::UnprotectRtcp { use_mki: true })
    }

    /// Allocation-free `srtp_protect` for benchmarks: the RTP packet is `buf[..len]`, the SRTP
    /// packet is written in place and its length returned. `buf` must hold at least
    /// `len + RTP_TRAILER_ROOM` octets and start on a 4-octet boundary (srtp.h's alignment
    /// requirement), else `bad_param`.
    pub fn protect_rtp_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Status> {
        self.transform_in_place(buf, len, Transform::ProtectRtp { mki_index: None })
    }

    /// Allocation-free `srtp_unprotect` for benchmarks: the SRTP packet is `buf[..len]`, the RTP
    /// packet is written in place and its length returned. `buf` must start on a 4-octet
    /// boundary, else `bad_param`.
    pub fn unprotect_rtp_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Status> {
        self.transform_in_place(buf, len, Transform::UnprotectRtp { use_mki: false })
    }

    /// Allocation-free `srtp_protect_rtcp`: as [`LibSrtp::protect_rtp_in_place`] with
    /// `len + RTCP_TRAILER_ROOM` octets of `buf`.
    pub fn protect_rtcp_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Status> {
        self.transform_in_place(buf, len, Transform::ProtectRtcp { mki_index: None })
    }

    /// Allocation-free `srtp_unprotect_rtcp`: as [`LibSrtp::unprotect_rtp_in_place`].
    pub fn unprotect_rtcp_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Status> {
        self.transform_in_place(buf, len, Transform::UnprotectRtcp { use_mki: false })
    }

    /// Grows `packet` by the trailer room, transforms it in place, and leaves it at the length
    /// libsrtp reports (at its original length on error).
    fn transform_vec(&mut self, packet: &mut Vec<u8>, transform: Transform) -> Result<(), Status> {
        let len = packet.len();
        packet.resize(len + transform.trailer_room(), 0);
        match self.transform_in_place(packet, len, transform) {
            Ok(new_len) => {
                packet.truncate(new_len);
                Ok(())
            }
            Err(status) => {
                packet.truncate(len);
                Err(status)
            }
        }
    }

    fn transform_in_place(
        &mut self,
        buf: &mut [u8],
        len: usize,
        transform: Transform,
    ) -> Result<usize, Status> {
        let room = transform.trailer_room();
        let writable_end = len.checked_add(room).ok_or(Status::BAD_PARAM)?;
        if writable_end > buf.len() || !buf.as_ptr().addr().is_multiple_of(4) {
            return Err(Status::BAD_PARAM);
        }
        let mut c_len = c_int::try_from(len).map_err(|_| Status::BAD_PARAM)?;

        let ctx = self.session.as_ptr();
        let hdr = buf.as_mut_ptr().cast::<c_void>();
        let len_ptr = &raw mut c_len;
        // SAFETY: `ctx` is the live session this value owns (from srtp_create, freed only in
        // Drop), used exclusively through `&mut self`. `hdr` is the start of `buf`, 4-octet
        // aligned and writable for `len + room` octets (both checked above): srtp.h lets protect
        // write SRTP_MAX_TRAILER_LEN (RTCP: +4) octets past the packet, and unprotect touches only
        // the `*len_ptr` octets it is given. `len_ptr` points to a live c_int holding `len`.
        let raw_status = unsafe {
            match transform {
                Transform::ProtectRtp { mki_index: None } => ffi::srtp_protect(ctx, hdr, len_ptr),
                Transform::ProtectRtp {
                    mki_index: Some(index),
                } => ffi::srtp_protect_mki(ctx, hdr, len_ptr, 1, index),
                Transform::ProtectRtcp { mki_index: None } => {
                    ffi::srtp_protect_rtcp(ctx, hdr, len_ptr)
                }
                Transform::ProtectRtcp {
                    mki_index: Some(index),
                } => ffi::srtp_protect_rtcp_mki(ctx, hdr, len_ptr, 1, index),
                Transform::UnprotectRtp { use_mki: false } => {
                    ffi::srtp_unprotect(ctx, hdr, len_ptr)
                }
                Transform::UnprotectRtp { use_mki: true } => {
                    ffi::srtp_unprotect_mki(ctx, hdr, len_ptr, 1)
                }
                Transform::UnprotectRtcp { use_mki: false } => {
                    ffi::srtp_unprotect_rtcp(ctx, hdr, len_ptr)
                }
                Transform::UnprotectRtcp { use_mki: true } => {
                    ffi::srtp_unprotect_rtcp_mki(ctx, hdr, len_ptr, 1)
                }
            }
        };
        Status::check(raw_status)?;
        let new_len = usize::try_from(c_len)
            .ok()
            .filter(|&new_len| new_len <= writable_end);
        Ok(new_len.expect("libsrtp reported a packet length outside the buffer it was given"))
    }
}

impl fmt::Debug for LibSrtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LibSrtp")
            .field("profile", &self.profile)
            .field("direction", &self.direction)
            .finish_non_exhaustive()
    }
}

impl Drop for LibSrtp {
    fn drop(&mut self) {
        // SAFETY: the session came from srtp_create, is freed only here, and nothing borrowed
        // from it outlives `self`.
        let raw_status = unsafe { ffi::srtp_dealloc(self.session.as_ptr()) };
        debug_assert_eq!(
            raw_status,
            Status::OK.0,
            "srtp_dealloc: {}",
            Status(raw_status)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packets and keys are written as hex literals; whitespace is ignored.
    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
        digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).expect("ASCII hex");
                u8::from_str_radix(pair, 16).expect("hex digit")
            })
            .collect()
    }

    /// Distinct, obviously synthetic material of the right length for `profile`.
    fn material(profile: Profile, first: u8) -> Vec<u8> {
        (first..).take(profile.material_len()).collect()
    }

    fn session(profile: Profile, direction: Direction, first: u8) -> LibSrtp {
        LibSrtp::new(&OracleConfig::single_key(
            profile,
            direction,
            material(profile, first),
        ))
        .expect("srtp_create")
    }

    /// RTP v2, PT 0x0f, the given sequence number, timestamp 0xdecafbad, SSRC 0xcafebabe, then
    /// 16 octets of 0xab.
    fn rtp_packet(seq: u16) -> Vec<u8> {
        let mut packet = hex("800f");
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend(hex("decafbad cafebabe abababab abababab abababab abababab"));
        packet
    }

    /// RTCP sender report header (V=2, RC=1, PT=200, length 11) for SSRC 0xcafebabe, then 16
    /// octets of 0xab.
    fn rtcp_packet() -> Vec<u8> {
        hex("81c8000b cafebabe abababab abababab abababab abababab")
    }

    #[test]
    fn linked_library_is_libsrtp_2() {
        assert!(
            libsrtp_version().starts_with("libsrtp2 2."),
            "{}",
            libsrtp_version()
        );
    }

    #[test]
    fn protect_then_unprotect_round_trips_every_profile() {
        for profile in Profile::ALL {
            let mut sender = session(profile, Direction::Outbound, 1);
            let mut receiver = session(profile, Direction::Inbound, 1);
            for seq in [1, 2, 3, 0x8000] {
                let plain = rtp_packet(seq);
                let mut packet = plain.clone();
                sender.protect_rtp(&mut packet).expect("protect_rtp");
                assert_eq!(
                    packet.len(),
                    plain.len() + profile.rtp_auth_tag_len(),
                    "{profile:?}"
                );
                assert_eq!(packet[..12], plain[..12], "{profile:?}: header stays clear");
                assert_ne!(
                    packet[12..plain.len()],
                    plain[12..],
                    "{profile:?}: encrypted"
                );
                receiver.unprotect_rtp(&mut packet).expect("unprotect_rtp");
                assert_eq!(packet, plain, "{profile:?} seq {seq}");
            }
            for index in 1..=3_u32 {
                let plain = rtcp_packet();
                let mut packet = plain.clone();
                sender.protect_rtcp(&mut packet).expect("protect_rtcp");
                assert_eq!(
                    packet.len(),
                    plain.len() + 4 + profile.rtcp_auth_tag_len(),
                    "{profile:?}"
                );
                assert_eq!(
                    packet[..8],
                    plain[..8],
                    "{profile:?}: first 8 octets stay clear"
                );
                // RFC 3711 §3.4 (AES-GCM: after the tag, see the crate docs): E flag set, SRTCP
                // index counting from 1.
                let e_and_index_at = match profile {
                    Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => plain.len() + 16,
                    _ => plain.len(),
                };
                assert_eq!(
                    packet[e_and_index_at..e_and_index_at + 4],
                    (0x8000_0000 | index).to_be_bytes(),
                    "{profile:?}"
                );
                receiver
                    .unprotect_rtcp(&mut packet)
                    .expect("unprotect_rtcp");
                assert_eq!(packet, plain, "{profile:?} SRTCP index {index}");
            }
        }
    }

    #[test]
    fn tampered_tag_is_auth_fail() {
        for profile in Profile::ALL {
            let mut sender = session(profile, Direction::Outbound, 7);
            let mut receiver = session(profile, Direction::Inbound, 7);

            let mut packet = rtp_packet(10);
            sender.protect_rtp(&mut packet).expect("protect_rtp");
            let protected_len = packet.len();
            *packet.last_mut().expect("tag") ^= 0x01;
            let status = receiver.unprotect_rtp(&mut packet).expect_err("tampered");
            assert_eq!(status.name(), "auth_fail", "{profile:?}");
            assert_eq!(packet.len(), protected_len, "length restored on error");

            let mut packet = rtcp_packet();
            sender.protect_rtcp(&mut packet).expect("protect_rtcp");
            // The last octet is in the tag for AES-CM, and in the E|index word for AES-GCM (no
            // MKI here), which GCM authenticates as associated data: both fail authentication.
            *packet.last_mut().expect("trailer") ^= 0x01;
            let status = receiver.unprotect_rtcp(&mut packet).expect_err("tampered");
            assert_eq!(status.name(), "auth_fail", "{profile:?} RTCP");
        }
    }

    #[test]
    fn replayed_packet_is_replay_fail() {
        for profile in Profile::ALL {
            let mut sender = session(profile, Direction::Outbound, 9);
            let mut receiver = session(profile, Direction::Inbound, 9);

            let mut protected = rtp_packet(42);
            sender.protect_rtp(&mut protected).expect("protect_rtp");
            let mut first = protected.clone();
            receiver.unprotect_rtp(&mut first).expect("first copy");
            let mut replay = protected;
            let status = receiver.unprotect_rtp(&mut replay).expect_err("replay");
            assert_eq!(status, Status::REPLAY_FAIL, "{profile:?}");

            let mut protected = rtcp_packet();
            sender.protect_rtcp(&mut protected).expect("protect_rtcp");
            let mut first = protected.clone();
            receiver.unprotect_rtcp(&mut first).expect("first copy");
            let mut replay = protected;
            let status = receiver.unprotect_rtcp(&mut replay).expect_err("replay");
            assert_eq!(status.name(), "replay_fail", "{profile:?} RTCP");
        }
    }

    #[test]
    fn repeated_protect_needs_allow_repeat_tx() {
        let profile = Profile::AesCm128HmacSha1_80;
        let mut strict = session(profile, Direction::Outbound, 3);
        let mut packet = rtp_packet(5);
        strict.protect_rtp(&mut packet).expect("first");
        let mut again = rtp_packet(5);
        assert_eq!(strict.protect_rtp(&mut again), Err(Status::REPLAY_FAIL));
        assert_eq!(again, rtp_packet(5), "length restored on error");

        let mut config =
            OracleConfig::single_key(profile, Direction::Outbound, material(profile, 3));
        config.allow_repeat_tx = true;
        let mut lenient = LibSrtp::new(&config).expect("srtp_create");
        let mut first = rtp_packet(5);
        lenient.protect_rtp(&mut first).expect("first");
        let mut second = rtp_packet(5);
        lenient.protect_rtp(&mut second).expect("repeat allowed");
        assert_eq!(first, second, "same index, same keystream and tag");
    }

    fn mki_config(direction: Direction) -> OracleConfig {
        let profile = Profile::AesCm128HmacSha1_80;
        OracleConfig {
            profile,
            direction,
            keys: vec![
                OracleKey::with_mki(material(profile, 0x10), hex("00000001")),
                OracleKey::with_mki(material(profile, 0x40), hex("00000002")),
            ],
            window_size: 128,
            allow_repeat_tx: false,
        }
    }

    #[test]
    fn mki_selects_the_master_key() {
        let mut sender = LibSrtp::new(&mki_config(Direction::Outbound)).expect("sender");
        let mut receiver = LibSrtp::new(&mki_config(Direction::Inbound)).expect("receiver");

        for (seq, mki_index, mki) in [(1, 1, "00000002"), (2, 0, "00000001"), (3, 1, "00000002")] {
            let plain = rtp_packet(seq);
            let mut packet = plain.clone();
            sender
                .protect_rtp_mki(&mut packet, mki_index)
                .expect("protect_rtp_mki");
            // | RTP packet | MKI (4) | tag (10) |
            assert_eq!(packet.len(), plain.len() + 4 + 10);
            assert_eq!(packet[plain.len()..plain.len() + 4], hex(mki));
            receiver
                .unprotect_rtp_mki(&mut packet)
                .expect("unprotect_rtp_mki");
            assert_eq!(packet, plain);
        }

        let plain = rtcp_packet();
        let mut packet = plain.clone();
        sender
            .protect_rtcp_mki(&mut packet, 1)
            .expect("protect_rtcp_mki");
        // | RTCP packet | E|index (4) | MKI (4) | tag (10) |
        assert_eq!(packet.len(), plain.len() + 4 + 4 + 10);
        assert_eq!(packet[plain.len() + 4..plain.len() + 8], hex("00000002"));
        receiver
            .unprotect_rtcp_mki(&mut packet)
            .expect("unprotect_rtcp_mki");
        assert_eq!(packet, plain);

        let mut packet = rtp_packet(4);
        assert_eq!(
            sender.protect_rtp_mki(&mut packet, 2).map_err(Status::name),
            Err("bad_mki")
        );
    }

    #[test]
    fn unknown_mki_is_bad_mki() {
        let mut sender = LibSrtp::new(&mki_config(Direction::Outbound)).expect("sender");
        let mut receiver = LibSrtp::new(&mki_config(Direction::Inbound)).expect("receiver");
        let mut packet = rtp_packet(1);
        sender
            .protect_rtp_mki(&mut packet, 0)
            .expect("protect_rtp_mki");
        let mki_at = rtp_packet(1).len();
        packet[mki_at + 3] = 0x09;
        assert_eq!(
            receiver.unprotect_rtp_mki(&mut packet),
            Err(Status::BAD_MKI)
        );
    }

    #[test]
    fn invalid_configs_are_bad_param() {
        let profile = Profile::AeadAes256Gcm;
        let short_key = OracleConfig::single_key(profile, Direction::Outbound, vec![0; 43]);
        assert_eq!(LibSrtp::new(&short_key).map(drop), Err(Status::BAD_PARAM));

        let mut no_keys = short_key.clone();
        no_keys.keys.clear();
        assert_eq!(LibSrtp::new(&no_keys).map(drop), Err(Status::BAD_PARAM));

        let mut two_keys_without_mki =
            OracleConfig::single_key(profile, Direction::Outbound, material(profile, 0));
        two_keys_without_mki
            .keys
            .push(OracleKey::new(material(profile, 1)));
        assert_eq!(
            LibSrtp::new(&two_keys_without_mki).map(drop),
            Err(Status::BAD_PARAM)
        );

        let mut mixed = mki_config(Direction::Inbound);
        mixed.keys[0].mki.clear();
        assert_eq!(LibSrtp::new(&mixed).map(drop), Err(Status::BAD_PARAM));

        // libsrtp's own check: a replay window must be 64..0x8000 packets.
        let mut small_window =
            OracleConfig::single_key(profile, Direction::Inbound, material(profile, 0));
        small_window.window_size = 32;
        assert_eq!(
            LibSrtp::new(&small_window).map(drop),
            Err(Status::BAD_PARAM)
        );
    }

    #[test]
    fn key_debug_shows_no_material() {
        let key = OracleKey::with_mki(hex("e1f97a0d3e018be0d64fa32c06de4139"), hex("0102"));
        let debug = format!("{key:?}");
        assert_eq!(
            debug,
            "OracleKey { material: <16 octets redacted>, mki: [1, 2] }"
        );
    }

    #[test]
    fn in_place_fast_path_matches_vec_api_and_checks_room() {
        let profile = Profile::AesCm128HmacSha1_80;
        let mut by_vec = session(profile, Direction::Outbound, 5);
        let mut by_slice = session(profile, Direction::Outbound, 5);
        let mut receiver = session(profile, Direction::Inbound, 5);

        let plain = rtp_packet(77);
        let mut expected = plain.clone();
        by_vec.protect_rtp(&mut expected).expect("protect_rtp");

        let mut buf = vec![0_u8; plain.len() + RTP_TRAILER_ROOM];
        buf[..plain.len()].copy_from_slice(&plain);
        let protected_len = by_slice
            .protect_rtp_in_place(&mut buf, plain.len())
            .expect("protect_rtp_in_place");
        assert_eq!(buf[..protected_len], expected[..]);

        let plain_len = receiver
            .unprotect_rtp_in_place(&mut buf, protected_len)
            .expect("unprotect_rtp_in_place");
        assert_eq!(buf[..plain_len], plain[..]);

        let mut cramped = vec![0_u8; plain.len() + RTP_TRAILER_ROOM - 1];
        cramped[..plain.len()].copy_from_slice(&rtp_packet(78));
        assert_eq!(
            by_slice.protect_rtp_in_place(&mut cramped, plain.len()),
            Err(Status::BAD_PARAM)
        );
        let past_the_end = cramped.len() + 1;
        assert_eq!(
            by_slice.protect_rtp_in_place(&mut cramped, past_the_end),
            Err(Status::BAD_PARAM)
        );

        let mut rtcp = vec![0_u8; 24 + RTCP_TRAILER_ROOM];
        rtcp[..24].copy_from_slice(&rtcp_packet());
        let protected_len = by_slice
            .protect_rtcp_in_place(&mut rtcp, 24)
            .expect("protect");
        assert_eq!(protected_len, 24 + 4 + 10);
        let plain_len = receiver
            .unprotect_rtcp_in_place(&mut rtcp, protected_len)
            .expect("unprotect");
        assert_eq!(rtcp[..plain_len], rtcp_packet()[..]);
    }

    // Known answers from libsrtp 2.5's test/srtp_driver.c (srtp_validate, srtp_validate_aes_256,
    // srtp_validate_gcm): SSRC 0xcafebabe, sequence number 0x1234, first packet of the session.

    /// `test_key` (first 30 octets: 16-octet key || 14-octet salt).
    const AES_CM_128_MATERIAL: &str =
        "e1f97a0d3e018be0d64fa32c06de4139 0ec675ad498afeebb6960b3aabe6";
    const PLAIN_RTP: &str = "800f1234decafbadcafebabe abababababababababababababababab";
    const PLAIN_RTCP: &str = "81c8000bcafebabe abababababababababababababababab";

    fn known_answer(profile: Profile, material: &str, plain: &str, rtcp: bool, expected: &str) {
        let config = |direction| OracleConfig {
            profile,
            direction,
            keys: vec![OracleKey::new(hex(material))],
            window_size: 128,
            allow_repeat_tx: false,
        };
        let mut sender = LibSrtp::new(&config(Direction::Outbound)).expect("sender");
        let mut receiver = LibSrtp::new(&config(Direction::Inbound)).expect("receiver");
        let mut packet = hex(plain);
        if rtcp {
            sender.protect_rtcp(&mut packet).expect("protect_rtcp");
        } else {
            sender.protect_rtp(&mut packet).expect("protect_rtp");
        }
        assert_eq!(packet, hex(expected), "{profile:?} protect");
        if rtcp {
            receiver
                .unprotect_rtcp(&mut packet)
                .expect("unprotect_rtcp");
        } else {
            receiver.unprotect_rtp(&mut packet).expect("unprotect_rtp");
        }
        assert_eq!(packet, hex(plain), "{profile:?} unprotect");
    }

    #[test]
    fn aes_cm_128_hmac_sha1_80_matches_libsrtp_reference_packets() {
        known_answer(
            Profile::AesCm128HmacSha1_80,
            AES_CM_128_MATERIAL,
            PLAIN_RTP,
            false,
            "800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb",
        );
        known_answer(
            Profile::AesCm128HmacSha1_80,
            AES_CM_128_MATERIAL,
            PLAIN_RTCP,
            true,
            "81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798",
        );
    }

    #[test]
    fn aes_cm_256_hmac_sha1_80_matches_libsrtp_reference_packet() {
        known_answer(
            Profile::AesCm256HmacSha1_80,
            "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6 \
             3b04803de51ee7c96423ab5b78d2",
            PLAIN_RTP,
            false,
            "800f1234decafbadcafebabe f1d9de17ff251ff1aa007774b0b4b40d a08d9d9a5b3a55d8873b",
        );
    }

    #[test]
    fn aead_aes_128_gcm_matches_libsrtp_reference_packets() {
        const GCM_128_MATERIAL: &str = "000102030405060708090a0b0c0d0e0f a0a1a2a3a4a5a6a7a8a9aaab";
        known_answer(
            Profile::AeadAes128Gcm,
            GCM_128_MATERIAL,
            PLAIN_RTP,
            false,
            "800f1234decafbadcafebabe c5002ede04cfdd2eb91159e0880aa06e \
             d2976826f796b201df3131a127e8a392",
        );
        known_answer(
            Profile::AeadAes128Gcm,
            GCM_128_MATERIAL,
            PLAIN_RTCP,
            true,
            "81c8000bcafebabe c98b8b5df0392a55852b6c21ac8e7025 \
             c52c6fbea2b3b446ea31123ba88ce61e 80000001",
        );
    }

    #[test]
    fn sessions_can_move_to_another_thread() {
        let profile = Profile::AeadAes256Gcm;
        let mut sender = session(profile, Direction::Outbound, 11);
        let receiver = session(profile, Direction::Inbound, 11);
        let mut packet = rtp_packet(1);
        sender.protect_rtp(&mut packet).expect("protect_rtp");
        let plain = std::thread::spawn(move || {
            let mut receiver = receiver;
            receiver.unprotect_rtp(&mut packet).map(|()| packet)
        })
        .join()
        .expect("thread");
        assert_eq!(plain, Ok(rtp_packet(1)));
    }
}
