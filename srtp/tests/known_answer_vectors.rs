//! Known-answer tests: RFC 3711 / libsrtp `srtp_validate*` packets, byte for byte, both ways.

use srtp::{Context, MasterKey, Policy, Suite};

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn context(suite: Suite, material: &str) -> Context {
    let key = MasterKey::from_material(suite, &unhex(material)).unwrap();
    Context::new(&Policy::new(key)).unwrap()
}

const RTP_PLAIN: &str = "800f1234 decafbad cafebabe abababab abababab abababab abababab";
const RTCP_PLAIN: &str = "81c8000b cafebabe abababab abababab abababab abababab";
const KEY_128: &str = "e1f97a0d3e018be0d64fa32c06de4139 0ec675ad498afeebb6960b3aabe6";
const KEY_256: &str = "f0f04914b513f2763a1b1fa130f10e29 98f6f6e43e4309d1e622a0e332b9f1b6
                       3b04803de51ee7c96423ab5b78d2";
const KEY_GCM_128: &str = "000102030405060708090a0b0c0d0e0f a0a1a2a3a4a5a6a7a8a9aaab";

fn check(suite: Suite, material: &str, rtcp: bool, plain: &str, protected: &str) {
    let plain = unhex(plain);
    let protected = unhex(protected);
    let mut tx = context(suite, material);
    let mut buf = plain.clone();
    buf.resize(plain.len() + 64, 0);
    let n = if rtcp {
        tx.protect_rtcp(&mut buf, plain.len())
    } else {
        tx.protect_rtp(&mut buf, plain.len())
    }
    .unwrap();
    assert_eq!(&buf[..n], &protected[..], "{suite} protect (rtcp: {rtcp})");

    let mut rx = context(suite, material);
    let mut buf = protected.clone();
    let n = if rtcp {
        rx.unprotect_rtcp(&mut buf, protected.len())
    } else {
        rx.unprotect_rtp(&mut buf, protected.len())
    }
    .unwrap();
    assert_eq!(&buf[..n], &plain[..], "{suite} unprotect (rtcp: {rtcp})");
}

#[test]
fn aes_cm_128_hmac_sha1_80_rtp() {
    check(
        Suite::AesCm128HmacSha1_80,
        KEY_128,
        false,
        RTP_PLAIN,
        "800f1234 decafbad cafebabe 4e55dc4c e79978d8 8ca4d215 949d2402 b78d6acc99ea179b8dbb",
    );
}

#[test]
fn aes_cm_128_hmac_sha1_80_rtcp() {
    check(
        Suite::AesCm128HmacSha1_80,
        KEY_128,
        true,
        RTCP_PLAIN,
        "81c8000b cafebabe 7128035b e487b9bd bef89041 f977a5a8 80000001 993e08cd54d6c1230798",
    );
}

#[test]
fn aes_256_cm_hmac_sha1_80_rtp() {
    check(
        Suite::AesCm256HmacSha1_80,
        KEY_256,
        false,
        RTP_PLAIN,
        "800f1234 decafbad cafebabe f1d9de17 ff251ff1 aa007774 b0b4b40d a08d9d9a5b3a55d8873b",
    );
}

#[test]
fn aead_aes_128_gcm_rtp() {
    check(
        Suite::AeadAes128Gcm,
        KEY_GCM_128,
        false,
        RTP_PLAIN,
        "800f1234 decafbad cafebabe c5002ede 04cfdd2e b91159e0 880aa06e
         d2976826 f796b201 df3131a1 27e8a392",
    );
}

#[test]
fn aead_aes_128_gcm_rtcp() {
    check(
        Suite::AeadAes128Gcm,
        KEY_GCM_128,
        true,
        RTCP_PLAIN,
        "81c8000b cafebabe c98b8b5d f0392a55 852b6c21 ac8e7025
         c52c6fbe a2b3b446 ea31123b a88ce61e 80000001",
    );
}
