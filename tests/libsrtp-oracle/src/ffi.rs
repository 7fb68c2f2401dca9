//! Hand-written declarations for the part of `/usr/include/srtp2/srtp.h` (libsrtp 2.5.0, Debian
//! `libsrtp2-dev`) that the oracle calls. No bindgen: every item below mirrors the header field
//! by field, C enums are `c_int`, and `layouts_match_the_c_header` at the bottom pins the sizes
//! and offsets that gcc reports for the header on `x86_64` Linux.

// The C names are kept so that every item greps straight to its declaration in srtp.h.
#![allow(non_camel_case_types)]

use std::{
    ffi::{c_char, c_int, c_uint, c_ulong, c_void},
    marker::{PhantomData, PhantomPinned},
};

/// `#define SRTP_MAX_TAG_LEN 16`
pub const SRTP_MAX_TAG_LEN: usize = 16;
/// `#define SRTP_MAX_MKI_LEN 128`
pub const SRTP_MAX_MKI_LEN: usize = 128;
/// `#define SRTP_MAX_TRAILER_LEN (SRTP_MAX_TAG_LEN + SRTP_MAX_MKI_LEN)`: the room
/// `srtp_protect` may write after the RTP packet. `srtp_protect_rtcp` needs 4 more octets (the
/// SRTCP E flag and index).
pub const SRTP_MAX_TRAILER_LEN: usize = SRTP_MAX_TAG_LEN + SRTP_MAX_MKI_LEN;
/// `#define SRTP_MAX_NUM_MASTER_KEYS 16`
pub const SRTP_MAX_NUM_MASTER_KEYS: usize = 16;

/// `srtp_err_status_t` (a C enum; `srtp_err_status_ok` is 0). The names live in
/// [`crate::Status::name`].
pub type srtp_err_status_t = c_int;
/// `typedef uint32_t srtp_cipher_type_id_t;`
pub type srtp_cipher_type_id_t = u32;
/// `typedef uint32_t srtp_auth_type_id_t;`
pub type srtp_auth_type_id_t = u32;
/// `srtp_sec_serv_t` (C enum: `sec_serv_none` 0 to `sec_serv_conf_and_auth` 3). Only ever
/// written by the libsrtp policy setters.
pub type srtp_sec_serv_t = c_int;
/// `srtp_ssrc_type_t` (C enum).
pub type srtp_ssrc_type_t = c_int;

/// `ssrc_any_inbound = 2`: the policy is a template for every SSRC that `srtp_unprotect` sees.
pub const SSRC_ANY_INBOUND: srtp_ssrc_type_t = 2;
/// `ssrc_any_outbound = 3`: the policy is a template for every SSRC that `srtp_protect` sees.
pub const SSRC_ANY_OUTBOUND: srtp_ssrc_type_t = 3;

/// `struct srtp_ctx_t_`: opaque, only ever behind a pointer (`srtp_t`).
#[repr(C)]
pub struct srtp_ctx_t {
    _opaque: [u8; 0],
    _not_send_sync_unpin: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `typedef srtp_ctx_t *srtp_t;`
pub type srtp_t = *mut srtp_ctx_t;

/// `srtp_crypto_policy_t`: cipher, authenticator and tag length of one direction of one stream.
/// Filled only by the `srtp_crypto_policy_set_*` functions below.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct srtp_crypto_policy_t {
    pub cipher_type: srtp_cipher_type_id_t,
    /// Cipher key length in octets, salt included.
    pub cipher_key_len: c_int,
    pub auth_type: srtp_auth_type_id_t,
    pub auth_key_len: c_int,
    pub auth_tag_len: c_int,
    pub sec_serv: srtp_sec_serv_t,
}

/// `srtp_ssrc_t`: a specific SSRC or one of the wildcards.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct srtp_ssrc_t {
    pub type_: srtp_ssrc_type_t,
    /// SSRC in host order; unused for the wildcards.
    pub value: c_uint,
}

/// `srtp_master_key_t`: one master key (key || salt) with its MKI. libsrtp copies both during
/// `srtp_create`.
#[repr(C)]
#[derive(Debug)]
pub struct srtp_master_key_t {
    pub key: *mut u8,
    pub mki_id: *mut u8,
    pub mki_size: c_uint,
}

/// `srtp_policy_t`. Either `key` (one master key, no MKI) or `keys`/`num_master_keys` (MKI mode,
/// used when `key` is null) carries the keys.
#[repr(C)]
#[derive(Debug)]
pub struct srtp_policy_t {
    pub ssrc: srtp_ssrc_t,
    pub rtp: srtp_crypto_policy_t,
    pub rtcp: srtp_crypto_policy_t,
    pub key: *mut u8,
    pub keys: *mut *mut srtp_master_key_t,
    pub num_master_keys: c_ulong,
    pub deprecated_ekt: *mut c_void,
    /// Replay window in packets; 0 means libsrtp's default of 128; otherwise 64..0x8000.
    pub window_size: c_ulong,
    /// 0 or 1 (libsrtp rejects anything else).
    pub allow_repeat_tx: c_int,
    pub enc_xtn_hdr: *mut c_int,
    pub enc_xtn_hdr_count: c_int,
    pub next: *mut srtp_policy_t,
}

unsafe extern "C" {
    pub fn srtp_init() -> srtp_err_status_t;
    pub fn srtp_get_version_string() -> *const c_char;

    pub fn srtp_create(session: *mut srtp_t, policy: *const srtp_policy_t) -> srtp_err_status_t;
    pub fn srtp_dealloc(session: srtp_t) -> srtp_err_status_t;

    pub fn srtp_protect(
        ctx: srtp_t,
        rtp_hdr: *mut c_void,
        len_ptr: *mut c_int,
    ) -> srtp_err_status_t;
    pub fn srtp_protect_mki(
        ctx: srtp_t,
        rtp_hdr: *mut c_void,
        pkt_octet_len: *mut c_int,
        use_mki: c_uint,
        mki_index: c_uint,
    ) -> srtp_err_status_t;
    pub fn srtp_unprotect(
        ctx: srtp_t,
        srtp_hdr: *mut c_void,
        len_ptr: *mut c_int,
    ) -> srtp_err_status_t;
    pub fn srtp_unprotect_mki(
        ctx: srtp_t,
        srtp_hdr: *mut c_void,
        len_ptr: *mut c_int,
        use_mki: c_uint,
    ) -> srtp_err_status_t;

    pub fn srtp_protect_rtcp(
        ctx: srtp_t,
        rtcp_hdr: *mut c_void,
        pkt_octet_len: *mut c_int,
    ) -> srtp_err_status_t;
    pub fn srtp_protect_rtcp_mki(
        ctx: srtp_t,
        rtcp_hdr: *mut c_void,
        pkt_octet_len: *mut c_int,
        use_mki: c_uint,
        mki_index: c_uint,
    ) -> srtp_err_status_t;
    pub fn srtp_unprotect_rtcp(
        ctx: srtp_t,
        srtcp_hdr: *mut c_void,
        pkt_octet_len: *mut c_int,
    ) -> srtp_err_status_t;
    pub fn srtp_unprotect_rtcp_mki(
        ctx: srtp_t,
        srtcp_hdr: *mut c_void,
        pkt_octet_len: *mut c_int,
        use_mki: c_uint,
    ) -> srtp_err_status_t;

    /// `srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80` is a macro for this function.
    pub fn srtp_crypto_policy_set_rtp_default(p: *mut srtp_crypto_policy_t);
    pub fn srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(p: *mut srtp_crypto_policy_t);
    pub fn srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(p: *mut srtp_crypto_policy_t);
    pub fn srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32(p: *mut srtp_crypto_policy_t);
    pub fn srtp_crypto_policy_set_aes_gcm_128_16_auth(p: *mut srtp_crypto_policy_t);
    pub fn srtp_crypto_policy_set_aes_gcm_256_16_auth(p: *mut srtp_crypto_policy_t);
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of, size_of};

    use super::*;

    /// Numbers printed by a C program compiled with gcc against /usr/include/srtp2/srtp.h
    /// (libsrtp 2.5.0-3, `x86_64` Linux) using `sizeof`, `_Alignof` and `offsetof`.
    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn layouts_match_the_c_header() {
        assert_eq!(size_of::<srtp_crypto_policy_t>(), 24);
        assert_eq!(align_of::<srtp_crypto_policy_t>(), 4);
        assert_eq!(offset_of!(srtp_crypto_policy_t, cipher_type), 0);
        assert_eq!(offset_of!(srtp_crypto_policy_t, cipher_key_len), 4);
        assert_eq!(offset_of!(srtp_crypto_policy_t, auth_type), 8);
        assert_eq!(offset_of!(srtp_crypto_policy_t, auth_key_len), 12);
        assert_eq!(offset_of!(srtp_crypto_policy_t, auth_tag_len), 16);
        assert_eq!(offset_of!(srtp_crypto_policy_t, sec_serv), 20);

        assert_eq!(size_of::<srtp_ssrc_t>(), 8);
        assert_eq!(align_of::<srtp_ssrc_t>(), 4);
        assert_eq!(offset_of!(srtp_ssrc_t, type_), 0);
        assert_eq!(offset_of!(srtp_ssrc_t, value), 4);

        assert_eq!(size_of::<srtp_master_key_t>(), 24);
        assert_eq!(align_of::<srtp_master_key_t>(), 8);
        assert_eq!(offset_of!(srtp_master_key_t, key), 0);
        assert_eq!(offset_of!(srtp_master_key_t, mki_id), 8);
        assert_eq!(offset_of!(srtp_master_key_t, mki_size), 16);

        assert_eq!(size_of::<srtp_policy_t>(), 128);
        assert_eq!(align_of::<srtp_policy_t>(), 8);
        assert_eq!(offset_of!(srtp_policy_t, ssrc), 0);
        assert_eq!(offset_of!(srtp_policy_t, rtp), 8);
        assert_eq!(offset_of!(srtp_policy_t, rtcp), 32);
        assert_eq!(offset_of!(srtp_policy_t, key), 56);
        assert_eq!(offset_of!(srtp_policy_t, keys), 64);
        assert_eq!(offset_of!(srtp_policy_t, num_master_keys), 72);
        assert_eq!(offset_of!(srtp_policy_t, deprecated_ekt), 80);
        assert_eq!(offset_of!(srtp_policy_t, window_size), 88);
        assert_eq!(offset_of!(srtp_policy_t, allow_repeat_tx), 96);
        assert_eq!(offset_of!(srtp_policy_t, enc_xtn_hdr), 104);
        assert_eq!(offset_of!(srtp_policy_t, enc_xtn_hdr_count), 112);
        assert_eq!(offset_of!(srtp_policy_t, next), 120);

        // srtp_err_status_t, srtp_sec_serv_t and srtp_ssrc_type_t are 4-byte C enums.
        assert_eq!(size_of::<srtp_err_status_t>(), 4);
        assert_eq!(size_of::<srtp_sec_serv_t>(), 4);
        assert_eq!(size_of::<srtp_ssrc_type_t>(), 4);

        assert_eq!(SRTP_MAX_TRAILER_LEN, 144);
        assert_eq!(SRTP_MAX_NUM_MASTER_KEYS, 16);
    }

    /// The policy setters fill the fields the way the header documents (AES-GCM-128: 28-octet
    /// key with salt, 16-octet tag, confidentiality and authentication).
    #[test]
    fn policy_setters_write_the_documented_fields() {
        let mut policy = srtp_crypto_policy_t::default();
        // SAFETY: `policy` is a valid, writable srtp_crypto_policy_t; the setter only writes it.
        unsafe { srtp_crypto_policy_set_aes_gcm_128_16_auth(&raw mut policy) };
        assert_eq!(policy.cipher_key_len, 28);
        assert_eq!(policy.auth_tag_len, 16);
        assert_eq!(policy.sec_serv, 3);

        let mut policy = srtp_crypto_policy_t::default();
        // SAFETY: as above.
        unsafe { srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&raw mut policy) };
        assert_eq!(policy.cipher_key_len, 30);
        assert_eq!(policy.auth_key_len, 20);
        assert_eq!(policy.auth_tag_len, 4);
    }
}
