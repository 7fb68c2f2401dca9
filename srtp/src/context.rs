//! The SRTP/SRTCP context: session keys per master key, per-SSRC state, and the packet
//! transforms of RFC 3711 §3-4 (AES-CM + HMAC-SHA1) and RFC 7714 (AES-GCM).
//!
//! Every transform runs in three steps shared by the single-packet and the batch API:
//! 1. *prepare*: parse, pick the master key (MKI), estimate the packet index, check replay and
//!    key lifetime; nothing is modified yet;
//! 2. *keystream*: AES over the packet's counter blocks (the batch API does this for many
//!    packets in one pass);
//! 3. *finish*: encrypt or verify-and-decrypt, write or check the tag, and commit the stream
//!    state (rollover counter, replay window, lifetime counters).
//!
//! Packet layouts (RFC 3711 §3.1, §3.4; RFC 7714 §9, §10 as implemented by libsrtp):
//!
//! ```text
//! SRTP, AES-CM:   header | encrypted payload | MKI? | tag (10 or 4)
//! SRTP, GCM:      header | encrypted payload | tag (16) | MKI?
//! SRTCP, AES-CM:  header(8) | encrypted | E+index (4) | MKI? | tag (10)
//! SRTCP, GCM:     header(8) | encrypted | tag (16) | E+index (4) | MKI?
//! ```

use core::fmt;

use subtle::ConstantTimeEq as _;
use zeroize::Zeroize as _;

use crate::{
    cipher::{AesKey, Block},
    ghash::GhashKey,
    hmac_sha1::HmacSha1Key,
    kdf::{derive, Label},
    packet::{parse_rtcp, parse_rtp, RTCP_HEADER_LEN},
    replay::ReplayWindow,
    Error, Policy, Suite, MAX_MKI_LEN,
};

/// Largest packet the engine transforms, protected form included. RTP over UDP stays under the
/// path MTU; this leaves room for jumbo-ish tunnels while keeping the keystream on the stack.
pub const MAX_PACKET_LEN: usize = 2048;

/// Keystream blocks the largest packet needs (payload blocks plus the GCM tag mask).
pub(crate) const MAX_KEYSTREAM_BLOCKS: usize = MAX_PACKET_LEN / 16 + 2;

/// RFC 3711 §9.2: at most 2^48 SRTP packets per master key.
const RTP_LIFETIME_LIMIT: u64 = 1 << 48;
/// RFC 3711 §9.2: at most 2^31 SRTCP packets per master key.
const RTCP_LIFETIME_LIMIT: u64 = 1 << 31;
/// SRTCP E flag (RFC 3711 §3.4).
const SRTCP_E_FLAG: u32 = 0x8000_0000;
/// The first SRTCP index sent. RFC 3711 §3.4 starts at 0; libsrtp increments before the first
/// packet and sends 1. Receivers accept either; starting at 1 keeps our output byte-identical
/// to the reference implementation, which the cross-check tests rely on.
const FIRST_SRTCP_INDEX: u32 = 1;
const GCM_TAG_LEN: usize = 16;
const SRTCP_TRAILER_LEN: usize = 4;

/// Authentication state of one direction's session keys.
#[derive(Clone)]
enum Authenticator {
    /// HMAC-SHA1 keyed with the session auth key: the inner and outer states are computed once
    /// here.
    HmacSha1(HmacSha1Key),
    /// GHASH keyed with H = AES(K, 0^128).
    Ghash(Box<GhashKey>),
}

/// Session keys for SRTP or SRTCP.
#[derive(Clone)]
pub(crate) struct SessionKeys {
    cipher: AesKey,
    /// Session salt: 14 bytes for AES-CM, 12 for GCM (the rest zero).
    salt: [u8; 14],
    auth: Authenticator,
}

impl SessionKeys {
    fn derive(suite: Suite, master: &AesKey, master_salt: &[u8], rtcp: bool) -> Self {
        let (enc_label, auth_label, salt_label) = if rtcp {
            (
                Label::RtcpEncryption,
                Label::RtcpAuthentication,
                Label::RtcpSalt,
            )
        } else {
            (
                Label::RtpEncryption,
                Label::RtpAuthentication,
                Label::RtpSalt,
            )
        };
        let mut enc = [0u8; 32];
        let enc = &mut enc[..suite.master_key_len()];
        derive(master, master_salt, enc_label, enc);
        let cipher = AesKey::new(enc);
        enc.zeroize();
        let mut salt = [0u8; 14];
        derive(
            master,
            master_salt,
            salt_label,
            &mut salt[..suite.master_salt_len()],
        );
        let auth = if suite.is_aead() {
            let mut h = Block::default();
            cipher.encrypt_block(&mut h);
            let ghash = Box::new(GhashKey::new(&h));
            h.zeroize();
            Authenticator::Ghash(ghash)
        } else {
            let mut auth_key = [0u8; 20];
            derive(master, master_salt, auth_label, &mut auth_key);
            let key = HmacSha1Key::new(&auth_key);
            auth_key.zeroize();
            Authenticator::HmacSha1(key)
        };
        Self { cipher, salt, auth }
    }

    pub(crate) fn cipher(&self) -> &AesKey {
        &self.cipher
    }

    /// GCM session keys given directly (RFC 7714's test vectors skip the KDF).
    #[cfg(test)]
    fn gcm_from_session(key: &[u8], salt: &[u8]) -> Self {
        let cipher = AesKey::new(key);
        let mut h = Block::default();
        cipher.encrypt_block(&mut h);
        let mut session_salt = [0u8; 14];
        session_salt[..12].copy_from_slice(salt);
        Self {
            cipher,
            salt: session_salt,
            auth: Authenticator::Ghash(Box::new(GhashKey::new(&h))),
        }
    }
}

/// Everything derived from one master key.
#[derive(Clone)]
struct KeySet {
    mki: [u8; MAX_MKI_LEN],
    rtp: SessionKeys,
    rtcp: SessionKeys,
    rtp_limit: u64,
    rtcp_limit: u64,
    rtp_used: u64,
    rtcp_used: u64,
}

/// Per-SSRC state.
#[derive(Clone, Debug)]
struct Stream {
    ssrc: u32,
    rtp: Option<RtpState>,
    rtcp: Option<RtcpState>,
}

#[derive(Clone, Debug)]
struct RtpState {
    /// Rollover counter (RFC 3711 §3.3.1).
    roc: u32,
    /// Highest sequence number accepted.
    s_l: u16,
    window: ReplayWindow,
}

#[derive(Clone, Debug)]
struct RtcpState {
    /// Next SRTCP index to send.
    next_index: u32,
    window: ReplayWindow,
}

/// What a transform is doing; selects the layout and the finish step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    ProtectRtp,
    UnprotectRtp,
    ProtectRtcp,
    UnprotectRtcp,
}

impl Op {
    pub(crate) fn is_rtcp(self) -> bool {
        matches!(self, Self::ProtectRtcp | Self::UnprotectRtcp)
    }
}

/// A prepared packet: what the keystream pass and the finish step need.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Job {
    pub(crate) op: Op,
    /// Master key (index into the context's key sets).
    pub(crate) key: usize,
    /// Counter block base: AES-CM IV, or the GCM nonce (bytes 0..12).
    base: [u8; 16],
    /// Keystream blocks (GCM: one more, for the tag mask).
    pub(crate) blocks: usize,
    /// Encrypted region of the packet.
    enc_start: usize,
    enc_end: usize,
    /// Packet length after the transform.
    pub(crate) len_out: usize,
    /// RTP: packet index (ROC * 2^16 + SEQ); RTCP: SRTCP index.
    pub(crate) index: u64,
    pub(crate) ssrc: u32,
    /// Position of the stream in the table; `None` for a stream not yet tracked.
    stream: Option<usize>,
    /// SRTCP: whether the payload is (to be) encrypted.
    encrypted: bool,
}

impl Job {
    /// The ROC and SEQ of an SRTP job's index.
    pub(crate) fn roc_and_seq(&self) -> (u32, u16) {
        (roc_of(self.index), seq_of(self.index))
    }

    /// What HMAC-SHA1 covers (RFC 3711 §4.2): SRTP: header and encrypted payload, then the ROC
    /// (4 bytes, returned as the suffix); SRTCP: header, encrypted part and the E+index word.
    /// The MKI is never authenticated. Returns the end of the covered bytes and the suffix.
    pub(crate) fn auth_span(&self) -> (usize, [u8; 4], usize) {
        if self.op.is_rtcp() {
            (self.enc_end + SRTCP_TRAILER_LEN, [0; 4], 0)
        } else {
            (self.enc_end, roc_of(self.index).to_be_bytes(), 4)
        }
    }
}

/// An SRTP/SRTCP context for one session direction: its master keys and the state of every SSRC
/// seen. Use one context to protect and another to unprotect.
#[derive(Clone)]
pub struct Context {
    suite: Suite,
    mki_len: usize,
    keys: Vec<KeySet>,
    active_key: usize,
    replay_window: usize,
    allow_repeat_tx: bool,
    max_streams: usize,
    streams: Vec<Stream>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("suite", &self.suite)
            .field("master_keys", &self.keys.len())
            .field("mki_len", &self.mki_len)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Creates a context, deriving the session keys of every master key.
    pub fn new(policy: &Policy) -> Result<Self, Error> {
        policy.validate()?;
        let suite = policy.suite;
        let keys = policy
            .keys
            .iter()
            .map(|master| {
                let master_cipher = AesKey::new(master.key());
                let mut mki = [0u8; MAX_MKI_LEN];
                mki[..master.mki().len()].copy_from_slice(master.mki());
                let lifetime = master.lifetime().unwrap_or(u64::MAX);
                KeySet {
                    mki,
                    rtp: SessionKeys::derive(suite, &master_cipher, master.salt(), false),
                    rtcp: SessionKeys::derive(suite, &master_cipher, master.salt(), true),
                    rtp_limit: lifetime.min(RTP_LIFETIME_LIMIT),
                    rtcp_limit: lifetime.min(RTCP_LIFETIME_LIMIT),
                    rtp_used: 0,
                    rtcp_used: 0,
                }
            })
            .collect();
        Ok(Self {
            suite,
            mki_len: policy.mki_len,
            keys,
            active_key: 0,
            replay_window: policy.replay_window,
            allow_repeat_tx: policy.allow_repeat_tx,
            max_streams: policy.max_streams,
            streams: Vec::new(),
        })
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Selects the master key used for sending (by position in the policy's key list).
    pub fn set_active_key(&mut self, position: usize) -> Result<(), Error> {
        if position >= self.keys.len() {
            return Err(Error::InvalidMki {
                reason: "no master key at that position",
            });
        }
        self.active_key = position;
        Ok(())
    }

    /// Bytes SRTP adds to an RTP packet (MKI and tag).
    pub fn rtp_overhead(&self) -> usize {
        self.mki_len + self.suite.rtp_tag_len()
    }

    /// Bytes SRTCP adds to an RTCP packet (index, MKI and tag).
    pub fn rtcp_overhead(&self) -> usize {
        SRTCP_TRAILER_LEN + self.mki_len + self.suite.rtcp_tag_len()
    }

    /// The rollover counter of an SSRC's SRTP stream, if the stream is known.
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        self.stream_slot(ssrc)
            .and_then(|i| self.streams[i].rtp.as_ref())
            .map(|s| s.roc)
    }

    /// Sets the rollover counter and highest sequence number of an SSRC's SRTP stream, e.g.
    /// when joining a stream in progress (RFC 3711 §3.3.1 leaves this to signalling).
    pub fn set_roc(&mut self, ssrc: u32, roc: u32, seq: u16) -> Result<(), Error> {
        let slot = self.stream_slot_or_insert(ssrc)?;
        let window = ReplayWindow::new(self.replay_window);
        self.streams[slot].rtp = Some(RtpState {
            roc,
            s_l: seq,
            window,
        });
        Ok(())
    }

    /// Protects an RTP packet of `len` bytes in place; `buf` must have room for
    /// [`Self::rtp_overhead`] more bytes. Returns the SRTP packet length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        self.transform_one(Op::ProtectRtp, buf, len)
    }

    /// Verifies and decrypts an SRTP packet of `len` bytes in place. Returns the RTP packet
    /// length. A packet that fails changes no state.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        self.transform_one(Op::UnprotectRtp, buf, len)
    }

    /// Protects an RTCP packet (compound or not) of `len` bytes in place; `buf` must have room
    /// for [`Self::rtcp_overhead`] more bytes. Returns the SRTCP packet length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        self.transform_one(Op::ProtectRtcp, buf, len)
    }

    /// Verifies and decrypts an SRTCP packet of `len` bytes in place. Returns the RTCP length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        self.transform_one(Op::UnprotectRtcp, buf, len)
    }

    /// Whether a received SRTP job's index is what the committed state estimates now (always,
    /// outside batches; in a batch, unless an earlier packet it relied on was refused).
    pub(crate) fn index_is_current(&self, job: &Job) -> bool {
        if job.op != Op::UnprotectRtp {
            return true;
        }
        let seq = seq_of(job.index);
        let expected = match self
            .stream_slot(job.ssrc)
            .and_then(|i| self.streams[i].rtp.as_ref())
        {
            Some(state) => estimate_index(state.roc, state.s_l, seq),
            None => Ok(u64::from(seq)),
        };
        expected == Ok(job.index)
    }

    pub(crate) fn transform_one(
        &mut self,
        op: Op,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, Error> {
        let job = self.prepare(op, buf, len, None)?;
        let mut keystream = [Block::default(); MAX_KEYSTREAM_BLOCKS];
        let keystream = &mut keystream[..job.blocks];
        self.fill_keystream(&job, keystream);
        match op {
            Op::ProtectRtp | Op::ProtectRtcp => {
                self.encrypt(&job, buf, keystream);
                if let Some(tag) = self.hmac_tag(&job, buf) {
                    self.write_tag(&job, buf, &tag);
                }
                Ok(job.len_out)
            }
            Op::UnprotectRtp | Op::UnprotectRtcp => {
                let tag = self.hmac_tag(&job, buf);
                self.open(&job, buf, keystream, tag.as_ref())
            }
        }
    }

    fn stream_slot(&self, ssrc: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.ssrc == ssrc)
    }

    fn stream_slot_or_insert(&mut self, ssrc: u32) -> Result<usize, Error> {
        if let Some(slot) = self.stream_slot(ssrc) {
            return Ok(slot);
        }
        if self.streams.len() >= self.max_streams {
            return Err(Error::TooManyStreams {
                max: self.max_streams,
            });
        }
        self.streams.push(Stream {
            ssrc,
            rtp: None,
            rtcp: None,
        });
        Ok(self.streams.len() - 1)
    }

    /// Finds the master key named by the packet's MKI (or the only key).
    fn key_for_mki(&self, mki: &[u8]) -> Result<usize, Error> {
        if self.mki_len == 0 {
            return Ok(0);
        }
        self.keys
            .iter()
            .position(|k| &k.mki[..self.mki_len] == mki)
            .ok_or(Error::UnknownMki)
    }

    /// Step 1: parse and check. Sending reserves the packet's index right away (so packets of
    /// one batch get distinct indices); receiving changes nothing until the tag is verified.
    ///
    /// `hint` is the (ROC, highest SEQ) to estimate a received SRTP index from instead of the
    /// committed state: a batch passes the state its earlier packets of the same stream will
    /// leave once verified, so a batch may cross a sequence wrap. [`Self::index_is_current`]
    /// tells, before finishing, whether the guess still holds.
    pub(crate) fn prepare(
        &mut self,
        op: Op,
        buf: &[u8],
        len: usize,
        hint: Option<(u32, u16)>,
    ) -> Result<Job, Error> {
        let job = self.check(op, buf, len, hint)?;
        match op {
            Op::ProtectRtp => self.commit_rtp(&job)?,
            Op::ProtectRtcp => self.commit_rtcp(&job)?,
            Op::UnprotectRtp | Op::UnprotectRtcp => {}
        }
        Ok(job)
    }

    fn check(
        &self,
        op: Op,
        buf: &[u8],
        len: usize,
        hint: Option<(u32, u16)>,
    ) -> Result<Job, Error> {
        if len > buf.len() {
            return Err(Error::BufferTooSmall {
                needed: len,
                capacity: buf.len(),
            });
        }
        if len > MAX_PACKET_LEN {
            return Err(Error::PacketTooLarge {
                len,
                max: MAX_PACKET_LEN,
            });
        }
        match op {
            Op::ProtectRtp => self.prepare_protect_rtp(buf, len),
            Op::UnprotectRtp => self.prepare_unprotect_rtp(buf, len, hint),
            Op::ProtectRtcp => self.prepare_protect_rtcp(buf, len),
            Op::UnprotectRtcp => self.prepare_unprotect_rtcp(buf, len),
        }
    }

    /// Checks that a packet growing to `len_out` fits `buf` and the engine's limit, and that the
    /// active master key has lifetime left; returns the active key.
    fn sending_key(&self, buf: &[u8], len_out: usize, rtcp: bool) -> Result<usize, Error> {
        if len_out > buf.len() {
            return Err(Error::BufferTooSmall {
                needed: len_out,
                capacity: buf.len(),
            });
        }
        if len_out > MAX_PACKET_LEN {
            return Err(Error::PacketTooLarge {
                len: len_out,
                max: MAX_PACKET_LEN,
            });
        }
        let keys = &self.keys[self.active_key];
        let (used, limit) = if rtcp {
            (keys.rtcp_used, keys.rtcp_limit)
        } else {
            (keys.rtp_used, keys.rtp_limit)
        };
        if used >= limit {
            return Err(Error::KeyLifetimeExhausted { limit });
        }
        Ok(self.active_key)
    }

    fn prepare_protect_rtp(&self, buf: &[u8], len: usize) -> Result<Job, Error> {
        let header = parse_rtp(&buf[..len])?;
        let len_out = len + self.rtp_overhead();
        let key = self.sending_key(buf, len_out, false)?;
        let stream = self.stream_slot(header.ssrc);
        let index = match stream.and_then(|i| self.streams[i].rtp.as_ref()) {
            Some(state) => {
                let index = estimate_index(state.roc, state.s_l, header.seq)?;
                if !self.allow_repeat_tx {
                    state.window.check(index)?;
                }
                index
            }
            None => u64::from(header.seq),
        };
        if stream.is_none() && self.streams.len() >= self.max_streams {
            return Err(Error::TooManyStreams {
                max: self.max_streams,
            });
        }
        Ok(self.rtp_job(
            Op::ProtectRtp,
            key,
            header.ssrc,
            header.seq,
            index,
            header.len,
            len,
            len_out,
            stream,
        ))
    }

    fn prepare_unprotect_rtp(
        &self,
        buf: &[u8],
        len: usize,
        hint: Option<(u32, u16)>,
    ) -> Result<Job, Error> {
        let tag_len = self.suite.rtp_tag_len();
        let trailer = tag_len + self.mki_len;
        if len < trailer + crate::packet::RTP_HEADER_LEN {
            return Err(Error::Truncated {
                len,
                needed: trailer + crate::packet::RTP_HEADER_LEN,
            });
        }
        let payload_end = len - trailer;
        // Report lengths of the whole packet, trailer included.
        let header = parse_rtp(&buf[..payload_end]).map_err(|e| match e {
            Error::Truncated { needed, .. } => Error::Truncated {
                len,
                needed: needed + trailer,
            },
            other => other,
        })?;
        let mki = if self.suite.is_aead() {
            &buf[len - self.mki_len..len]
        } else {
            &buf[payload_end..payload_end + self.mki_len]
        };
        let key = self.key_for_mki(mki)?;
        let keys = &self.keys[key];
        if keys.rtp_used >= keys.rtp_limit {
            return Err(Error::KeyLifetimeExhausted {
                limit: keys.rtp_limit,
            });
        }
        let stream = self.stream_slot(header.ssrc);
        let state = stream.and_then(|i| self.streams[i].rtp.as_ref());
        let index = match (hint, state) {
            (Some((roc, s_l)), _) => estimate_index(roc, s_l, header.seq)?,
            (None, Some(state)) => estimate_index(state.roc, state.s_l, header.seq)?,
            (None, None) => u64::from(header.seq),
        };
        if let Some(state) = state {
            state.window.check(index)?;
        }
        Ok(self.rtp_job(
            Op::UnprotectRtp,
            key,
            header.ssrc,
            header.seq,
            index,
            header.len,
            len,
            payload_end,
            stream,
        ))
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one constructor for both RTP directions"
    )]
    fn rtp_job(
        &self,
        op: Op,
        key: usize,
        ssrc: u32,
        seq: u16,
        index: u64,
        header_len: usize,
        len_in: usize,
        len_out: usize,
        stream: Option<usize>,
    ) -> Job {
        let keys = &self.keys[key].rtp;
        let enc_end = if op == Op::ProtectRtp {
            len_in
        } else {
            len_out
        };
        let payload = enc_end - header_len;
        let mut base = [0u8; 16];
        let blocks = if self.suite.is_aead() {
            // RFC 7714 §8.1: IV = (0x0000 || SSRC || ROC || SEQ) XOR salt.
            base[2..6].copy_from_slice(&ssrc.to_be_bytes());
            base[6..10].copy_from_slice(&roc_of(index).to_be_bytes());
            base[10..12].copy_from_slice(&seq.to_be_bytes());
            for (b, s) in base[..12].iter_mut().zip(&keys.salt[..12]) {
                *b ^= s;
            }
            payload.div_ceil(16) + 1
        } else {
            // RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16).
            base[..14].copy_from_slice(&keys.salt);
            for (b, s) in base[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
                *b ^= s;
            }
            for (b, s) in base[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
                *b ^= s;
            }
            payload.div_ceil(16)
        };
        Job {
            op,
            key,
            base,
            blocks,
            enc_start: header_len,
            enc_end,
            len_out,
            index,
            ssrc,
            stream,
            encrypted: true,
        }
    }

    fn prepare_protect_rtcp(&self, buf: &[u8], len: usize) -> Result<Job, Error> {
        let ssrc = parse_rtcp(&buf[..len])?;
        let len_out = len + self.rtcp_overhead();
        let key = self.sending_key(buf, len_out, true)?;
        let stream = self.stream_slot(ssrc);
        let index = stream
            .and_then(|i| self.streams[i].rtcp.as_ref())
            .map_or(FIRST_SRTCP_INDEX, |s| s.next_index);
        if u64::from(index) >= RTCP_LIFETIME_LIMIT {
            return Err(Error::KeyLifetimeExhausted {
                limit: RTCP_LIFETIME_LIMIT,
            });
        }
        if stream.is_none() && self.streams.len() >= self.max_streams {
            return Err(Error::TooManyStreams {
                max: self.max_streams,
            });
        }
        Ok(self.rtcp_job(
            Op::ProtectRtcp,
            key,
            ssrc,
            index,
            len_out,
            len,
            stream,
            true,
        ))
    }

    fn prepare_unprotect_rtcp(&self, buf: &[u8], len: usize) -> Result<Job, Error> {
        let tag_len = self.suite.rtcp_tag_len();
        let trailer = SRTCP_TRAILER_LEN + self.mki_len + tag_len;
        if len < RTCP_HEADER_LEN + trailer {
            return Err(Error::Truncated {
                len,
                needed: RTCP_HEADER_LEN + trailer,
            });
        }
        let ssrc = parse_rtcp(&buf[..len])?;
        let enc_end = len - trailer;
        let (index_at, mki_at) = if self.suite.is_aead() {
            (enc_end + tag_len, enc_end + tag_len + SRTCP_TRAILER_LEN)
        } else {
            (enc_end, enc_end + SRTCP_TRAILER_LEN)
        };
        let word = u32::from_be_bytes([
            buf[index_at],
            buf[index_at + 1],
            buf[index_at + 2],
            buf[index_at + 3],
        ]);
        let index = word & !SRTCP_E_FLAG;
        let encrypted = word & SRTCP_E_FLAG != 0;
        let key = self.key_for_mki(&buf[mki_at..mki_at + self.mki_len])?;
        let keys = &self.keys[key];
        if keys.rtcp_used >= keys.rtcp_limit {
            return Err(Error::KeyLifetimeExhausted {
                limit: keys.rtcp_limit,
            });
        }
        let stream = self.stream_slot(ssrc);
        if let Some(state) = stream.and_then(|i| self.streams[i].rtcp.as_ref()) {
            state.window.check(u64::from(index))?;
        }
        Ok(self.rtcp_job(
            Op::UnprotectRtcp,
            key,
            ssrc,
            index,
            enc_end,
            enc_end,
            stream,
            encrypted,
        ))
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one constructor for both RTCP directions"
    )]
    fn rtcp_job(
        &self,
        op: Op,
        key: usize,
        ssrc: u32,
        index: u32,
        len_out: usize,
        enc_end: usize,
        stream: Option<usize>,
        encrypted: bool,
    ) -> Job {
        let keys = &self.keys[key].rtcp;
        let payload = enc_end - RTCP_HEADER_LEN;
        let mut base = [0u8; 16];
        let blocks = if self.suite.is_aead() {
            // RFC 7714 §9.1: IV = (0x0000 || SSRC || 0x0000 || 0 || SRTCP index) XOR salt.
            base[2..6].copy_from_slice(&ssrc.to_be_bytes());
            base[8..12].copy_from_slice(&index.to_be_bytes());
            for (b, s) in base[..12].iter_mut().zip(&keys.salt[..12]) {
                *b ^= s;
            }
            // The tag mask is needed whether or not the payload is encrypted.
            let data_blocks = if encrypted { payload.div_ceil(16) } else { 0 };
            data_blocks + 1
        } else {
            base[..14].copy_from_slice(&keys.salt);
            for (b, s) in base[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
                *b ^= s;
            }
            for (b, s) in base[10..14].iter_mut().zip(index.to_be_bytes()) {
                *b ^= s;
            }
            if encrypted {
                payload.div_ceil(16)
            } else {
                0
            }
        };
        Job {
            op,
            key,
            base,
            blocks,
            enc_start: RTCP_HEADER_LEN,
            enc_end,
            len_out,
            index: u64::from(index),
            ssrc,
            stream,
            encrypted,
        }
    }

    /// The session keys a job uses.
    pub(crate) fn session_keys(&self, job: &Job) -> &SessionKeys {
        let keys = &self.keys[job.key];
        if job.op.is_rtcp() {
            &keys.rtcp
        } else {
            &keys.rtp
        }
    }

    /// Writes the job's counter blocks into `out` (`job.blocks` of them).
    pub(crate) fn write_counters(&self, job: &Job, out: &mut [Block]) {
        write_counter_blocks(&job.base, self.suite.is_aead(), out);
    }

    /// Step 2 for one packet: counter blocks, then AES over all of them in one call.
    pub(crate) fn fill_keystream(&self, job: &Job, out: &mut [Block]) {
        self.write_counters(job, out);
        self.session_keys(job).cipher().encrypt_blocks(out);
    }

    /// The HMAC key a job authenticates with (`None` for the AEAD suites).
    pub(crate) fn hmac_key(&self, job: &Job) -> Option<&HmacSha1Key> {
        match &self.session_keys(job).auth {
            Authenticator::HmacSha1(key) => Some(key),
            Authenticator::Ghash(_) => None,
        }
    }

    /// Where the HMAC tag sits and how long it is.
    fn tag_at(&self, job: &Job) -> (usize, usize) {
        if job.op.is_rtcp() {
            (
                job.enc_end + SRTCP_TRAILER_LEN + self.mki_len,
                self.suite.rtcp_tag_len(),
            )
        } else {
            (job.enc_end + self.mki_len, self.suite.rtp_tag_len())
        }
    }

    /// Computes a job's HMAC tag over `buf` (single-packet path; batches use multi-buffer).
    fn hmac_tag(&self, job: &Job, buf: &[u8]) -> Option<[u8; 20]> {
        let key = self.hmac_key(job)?;
        let (end, suffix, suffix_len) = job.auth_span();
        Some(key.tag(&buf[..end], &suffix[..suffix_len]))
    }

    /// Step 3 of sending, first half: encrypt and lay out the trailer. GCM suites are complete
    /// after this; HMAC suites then need [`Self::write_tag`] with the tag of
    /// [`Self::auth_span`].
    pub(crate) fn encrypt(&self, job: &Job, buf: &mut [u8], keystream: &[Block]) {
        let keys = &self.keys[job.key];
        let mki = &keys.mki[..self.mki_len];
        let end = job.enc_end;
        let aead = self.suite.is_aead();
        let data_keystream = if aead { &keystream[1..] } else { keystream };
        xor_keystream(&mut buf[job.enc_start..end], data_keystream);
        match (job.op, &self.session_keys(job).auth) {
            (Op::ProtectRtp, Authenticator::HmacSha1(_)) => {
                buf[end..end + mki.len()].copy_from_slice(mki);
            }
            (Op::ProtectRtp, Authenticator::Ghash(ghash)) => {
                let tag = gcm_tag(
                    ghash,
                    &keystream[0],
                    &buf[..job.enc_start],
                    &[],
                    &buf[job.enc_start..end],
                );
                buf[end..end + GCM_TAG_LEN].copy_from_slice(&tag);
                buf[end + GCM_TAG_LEN..end + GCM_TAG_LEN + mki.len()].copy_from_slice(mki);
            }
            (Op::ProtectRtcp, Authenticator::HmacSha1(_)) => {
                let word = (SRTCP_E_FLAG | srtcp_index_of(job.index)).to_be_bytes();
                buf[end..end + SRTCP_TRAILER_LEN].copy_from_slice(&word);
                let at = end + SRTCP_TRAILER_LEN;
                buf[at..at + mki.len()].copy_from_slice(mki);
            }
            (Op::ProtectRtcp, Authenticator::Ghash(ghash)) => {
                let word = (SRTCP_E_FLAG | srtcp_index_of(job.index)).to_be_bytes();
                // RFC 7714 §9.2: AAD = header (8) || E+index; the ciphertext follows.
                let tag = gcm_tag(
                    ghash,
                    &keystream[0],
                    &buf[..job.enc_start],
                    &word,
                    &buf[job.enc_start..end],
                );
                buf[end..end + GCM_TAG_LEN].copy_from_slice(&tag);
                let at = end + GCM_TAG_LEN;
                buf[at..at + SRTCP_TRAILER_LEN].copy_from_slice(&word);
                let at = at + SRTCP_TRAILER_LEN;
                buf[at..at + mki.len()].copy_from_slice(mki);
            }
            (Op::UnprotectRtp | Op::UnprotectRtcp, _) => {
                unreachable!("encrypt is for sending jobs")
            }
        }
    }

    /// Step 3 of sending, second half for HMAC suites: writes the (truncated) tag.
    pub(crate) fn write_tag(&self, job: &Job, buf: &mut [u8], tag: &[u8; 20]) {
        let (at, len) = self.tag_at(job);
        buf[at..at + len].copy_from_slice(&tag[..len]);
    }

    /// Step 3 of receiving: re-check replay and lifetime, verify the tag (HMAC suites: against
    /// `hmac`, computed over [`Self::auth_span`] before this call; GCM: here), decrypt, commit.
    /// On any error the packet is left as received and no state changes.
    pub(crate) fn open(
        &mut self,
        job: &Job,
        buf: &mut [u8],
        keystream: &[Block],
        hmac: Option<&[u8; 20]>,
    ) -> Result<usize, Error> {
        // An earlier packet of the same batch may have moved the window or used up the key.
        self.recheck(job)?;
        let end = job.enc_end;
        let authentic = match (&self.session_keys(job).auth, hmac) {
            (Authenticator::HmacSha1(_), Some(expected)) => {
                let (at, len) = self.tag_at(job);
                bool::from(expected[..len].ct_eq(&buf[at..at + len]))
            }
            (Authenticator::HmacSha1(_), None) => false,
            (Authenticator::Ghash(ghash), _) => {
                let expected = if job.op.is_rtcp() {
                    let word_at = end + GCM_TAG_LEN;
                    let mut word = [0u8; 4];
                    word.copy_from_slice(&buf[word_at..word_at + 4]);
                    if job.encrypted {
                        gcm_tag(
                            ghash,
                            &keystream[0],
                            &buf[..job.enc_start],
                            &word,
                            &buf[job.enc_start..end],
                        )
                    } else {
                        // Unencrypted SRTCP with GCM: everything is AAD (RFC 7714 §9.3).
                        gcm_tag(ghash, &keystream[0], &buf[..end], &word, &[])
                    }
                } else {
                    gcm_tag(
                        ghash,
                        &keystream[0],
                        &buf[..job.enc_start],
                        &[],
                        &buf[job.enc_start..end],
                    )
                };
                bool::from(expected.ct_eq(&buf[end..end + GCM_TAG_LEN]))
            }
        };
        if !authentic {
            return Err(Error::AuthenticationFailed);
        }
        if job.encrypted {
            let data_keystream = if self.suite.is_aead() {
                &keystream[1..]
            } else {
                keystream
            };
            xor_keystream(&mut buf[job.enc_start..end], data_keystream);
        }
        if job.op.is_rtcp() {
            self.commit_rtcp(job)?;
        } else {
            self.commit_rtp(job)?;
        }
        Ok(job.len_out)
    }

    /// The receive checks of [`Self::check`] that depend on state other packets change.
    fn recheck(&self, job: &Job) -> Result<(), Error> {
        let keys = &self.keys[job.key];
        let (used, limit) = if job.op.is_rtcp() {
            (keys.rtcp_used, keys.rtcp_limit)
        } else {
            (keys.rtp_used, keys.rtp_limit)
        };
        if used >= limit {
            return Err(Error::KeyLifetimeExhausted { limit });
        }
        let stream = self.stream_slot(job.ssrc).map(|i| &self.streams[i]);
        match job.op {
            Op::ProtectRtp | Op::ProtectRtcp => Ok(()),
            Op::UnprotectRtp => stream
                .and_then(|s| s.rtp.as_ref())
                .map_or(Ok(()), |s| s.window.check(job.index)),
            Op::UnprotectRtcp => stream
                .and_then(|s| s.rtcp.as_ref())
                .map_or(Ok(()), |s| s.window.check(job.index)),
        }
    }

    /// Records an accepted or sent SRTP packet: window, ROC and `s_l`, lifetime.
    fn commit_rtp(&mut self, job: &Job) -> Result<(), Error> {
        let slot = match job.stream {
            Some(slot) if self.streams.get(slot).is_some_and(|s| s.ssrc == job.ssrc) => slot,
            _ => self.stream_slot_or_insert(job.ssrc)?,
        };
        let window_size = self.replay_window;
        let state = self.streams[slot].rtp.get_or_insert_with(|| RtpState {
            roc: roc_of(job.index),
            s_l: seq_of(job.index),
            window: ReplayWindow::new(window_size),
        });
        if state.window.highest().is_none_or(|h| job.index > h) {
            state.roc = roc_of(job.index);
            state.s_l = seq_of(job.index);
        }
        state.window.accept(job.index);
        self.keys[job.key].rtp_used += 1;
        Ok(())
    }

    /// Records an accepted or sent SRTCP packet.
    fn commit_rtcp(&mut self, job: &Job) -> Result<(), Error> {
        let slot = match job.stream {
            Some(slot) if self.streams.get(slot).is_some_and(|s| s.ssrc == job.ssrc) => slot,
            _ => self.stream_slot_or_insert(job.ssrc)?,
        };
        let window_size = self.replay_window;
        let state = self.streams[slot].rtcp.get_or_insert_with(|| RtcpState {
            next_index: 0,
            window: ReplayWindow::new(window_size),
        });
        match job.op {
            Op::ProtectRtcp => state.next_index = srtcp_index_of(job.index) + 1,
            _ => state.window.accept(job.index),
        }
        self.keys[job.key].rtcp_used += 1;
        Ok(())
    }
}

/// The ROC part of a 48-bit SRTP packet index.
#[allow(clippy::cast_possible_truncation, reason = "the index is below 2^48")]
const fn roc_of(index: u64) -> u32 {
    (index >> 16) as u32
}

/// An SRTCP index kept in a `u64` job field (always below 2^31).
#[allow(
    clippy::cast_possible_truncation,
    reason = "SRTCP indices are below 2^31"
)]
const fn srtcp_index_of(index: u64) -> u32 {
    (index & 0x7fff_ffff) as u32
}

/// The SEQ part of an SRTP packet index.
#[allow(
    clippy::cast_possible_truncation,
    reason = "keeps the low 16 bits on purpose"
)]
const fn seq_of(index: u64) -> u16 {
    index as u16
}

/// RFC 3711 Appendix A: the index of a packet with sequence number `seq`, given the stream's
/// ROC and highest sequence number `s_l`. As in libsrtp, a stream whose ROC is 0 never guesses
/// ROC - 1: a packet "before" the stream start is a forward jump in the first cycle.
fn estimate_index(roc: u32, s_l: u16, seq: u16) -> Result<u64, Error> {
    let roc = u64::from(roc);
    let v = if s_l < 0x8000 {
        if i32::from(seq) - i32::from(s_l) > 0x8000 {
            roc.saturating_sub(1)
        } else {
            roc
        }
    } else if i32::from(s_l) - 0x8000 > i32::from(seq) {
        roc + 1
    } else {
        roc
    };
    let index = (v << 16) | u64::from(seq);
    if index >= RTP_LIFETIME_LIMIT {
        return Err(Error::KeyLifetimeExhausted {
            limit: RTP_LIFETIME_LIMIT,
        });
    }
    Ok(index)
}

/// Counter blocks from `base`: AES-CM counts in the low 16 bits from 0 (RFC 3711 §4.1.1);
/// GCM counts in the low 32 bits from 1, block 0 being J0, the tag mask (NIST SP 800-38D).
pub(crate) fn write_counter_blocks(base: &[u8; 16], aead: bool, out: &mut [Block]) {
    if aead {
        let mut counter: u32 = 1;
        for block in out {
            block.copy_from_slice(base);
            block[12..16].copy_from_slice(&counter.to_be_bytes());
            counter = counter.wrapping_add(1);
        }
    } else {
        let mut counter: u16 = 0;
        for block in out {
            block.copy_from_slice(base);
            block[14..16].copy_from_slice(&counter.to_be_bytes());
            counter = counter.wrapping_add(1);
        }
    }
}

/// XORs `data` with the keystream, 16 bytes at a time.
#[inline]
fn xor_keystream(data: &mut [u8], keystream: &[Block]) {
    let (whole, tail) = data.as_chunks_mut::<16>();
    for (chunk, ks) in whole.iter_mut().zip(keystream) {
        let ks: [u8; 16] = (*ks).into();
        *chunk = (u128::from_ne_bytes(*chunk) ^ u128::from_ne_bytes(ks)).to_ne_bytes();
    }
    if let Some(ks) = keystream.get(whole.len()) {
        for (d, k) in tail.iter_mut().zip(ks.iter()) {
            *d ^= k;
        }
    }
}

/// GCM tag: `GHASH(A = aad || aad_tail, C) XOR E(K, J0)` (NIST SP 800-38D §7.1). `aad_tail` is
/// the SRTCP E+index word (at most 4 bytes), which follows the header in the AAD. The GHASH
/// input is handed over as whole-block segments, straight from the packet where possible.
fn gcm_tag(ghash: &GhashKey, mask: &Block, aad: &[u8], aad_tail: &[u8], ct: &[u8]) -> [u8; 16] {
    // AAD: `aad || aad_tail`, zero-padded as one string.
    let aad_whole = aad.len() - aad.len() % 16;
    let mut aad_rest = [0u8; 32];
    let rest = aad.len() - aad_whole;
    aad_rest[..rest].copy_from_slice(&aad[aad_whole..]);
    aad_rest[rest..rest + aad_tail.len()].copy_from_slice(aad_tail);
    let aad_rest = &aad_rest[..(rest + aad_tail.len()).div_ceil(16) * 16];
    // Ciphertext, zero-padded.
    let ct_whole = ct.len() - ct.len() % 16;
    let mut ct_rest = [0u8; 16];
    ct_rest[..ct.len() - ct_whole].copy_from_slice(&ct[ct_whole..]);
    let ct_rest = if ct_whole < ct.len() {
        &ct_rest[..]
    } else {
        &ct_rest[..0]
    };
    let aad_len = aad.len() + aad_tail.len();
    let mut lengths = [0u8; 16];
    lengths[..8].copy_from_slice(&(aad_len as u64 * 8).to_be_bytes());
    lengths[8..].copy_from_slice(&(ct.len() as u64 * 8).to_be_bytes());
    let s = ghash.hash(&[
        &aad[..aad_whole],
        aad_rest,
        &ct[..ct_whole],
        ct_rest,
        &lengths,
    ]);
    let mut tag = [0u8; 16];
    for ((t, s), m) in tag.iter_mut().zip(s.iter()).zip(mask.iter()) {
        *t = s ^ m;
    }
    tag
}

#[cfg(test)]
mod tests {
    use super::{estimate_index, Context, SessionKeys};
    use crate::{MasterKey, Policy, Suite};

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 7714 §16.1.1: `AEAD_AES_128_GCM` with the session key and salt given directly.
    #[test]
    fn rfc7714_aead_aes_128_gcm_rtp_vector() {
        let suite = Suite::AeadAes128Gcm;
        let master = MasterKey::from_material(suite, &[0; 28]).unwrap();
        let mut tx = Context::new(&Policy::new(master)).unwrap();
        let mut rx = tx.clone();
        let session = SessionKeys::gcm_from_session(
            &unhex("000102030405060708090a0b0c0d0e0f"),
            &unhex("517569642070726f2071756f"),
        );
        tx.keys[0].rtp = session.clone();
        rx.keys[0].rtp = session;
        let plain = unhex(
            "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
             69736120 696e2070 61727465 73207472 6573",
        );
        let protected = unhex(
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
             0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
        );
        let mut buf = plain.clone();
        buf.resize(plain.len() + 16, 0);
        let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
        assert_eq!(&buf[..n], &protected[..]);
        let mut buf = protected.clone();
        let n = rx.unprotect_rtp(&mut buf, protected.len()).unwrap();
        assert_eq!(&buf[..n], &plain[..]);
    }

    #[test]
    fn index_estimation_follows_rfc3711_appendix_a() {
        // In the middle of a cycle.
        assert_eq!(estimate_index(3, 1000, 1001), Ok(3 * 65_536 + 1001));
        // Wrap forward: s_l near the top, seq small.
        assert_eq!(estimate_index(3, 65_500, 10), Ok(4 * 65_536 + 10));
        // A late packet from the previous cycle.
        assert_eq!(estimate_index(4, 10, 65_500), Ok(3 * 65_536 + 65_500));
        // ROC 0 never goes negative (libsrtp behaviour).
        assert_eq!(estimate_index(0, 10, 65_500), Ok(65_500));
        // The 2^48 limit.
        assert!(estimate_index(u32::MAX, 65_500, 10).is_err());
    }
}
