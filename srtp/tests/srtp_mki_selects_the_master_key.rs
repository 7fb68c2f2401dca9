//! With several master keys, the MKI (RFC 3711 §3.1) on the wire names the key: the sender
//! writes the active key's MKI where the layout puts it (AES-CM: between the encrypted part and
//! the tag; GCM: after the tag, as libsrtp does), `set_active_key` switches keys mid-stream, the
//! receiver picks the key from the MKI (rewriting it breaks authentication), and an MKI no key
//! carries is `Error::UnknownMki`. Also: every policy the engine refuses, with its typed error.

#![allow(
    clippy::similar_names,
    reason = "srtp/srtcp and *_rtp/*_rtcp name the two packet kinds side by side"
)]

mod common;

use common::{material, payload, rtcp, rtp};
use srtp::{Context, Error, MasterKey, Policy, Suite, DEFAULT_REPLAY_WINDOW};

const MKI_0: [u8; 2] = [0x00, 0x01];
const MKI_1: [u8; 2] = [0xa5, 0x02];
const SSRC: u32 = 0x5151_0001;

fn key(suite: Suite, seed: u8, mki: &[u8]) -> MasterKey {
    MasterKey::from_material(suite, &material(suite, seed))
        .unwrap()
        .with_mki(mki)
}

/// Key 0 (MKI `00 01`) and key 1 (MKI `a5 02`), 2-byte MKIs.
fn two_key_policy(suite: Suite) -> Policy {
    let mut policy = Policy::new(key(suite, 0x40, &MKI_0));
    policy.keys.push(key(suite, 0x41, &MKI_1));
    policy.mki_len = 2;
    policy
}

/// Protects an RTP packet with `seq`; returns (plaintext, SRTP bytes).
fn protect_rtp(tx: &mut Context, seq: u16) -> (Vec<u8>, Vec<u8>) {
    let (mut p, len) = rtp(SSRC, seq, &payload(u32::from(seq), 37), 64);
    let plain = p[..len].to_vec();
    let n = tx.protect_rtp(&mut p, len).unwrap();
    p.truncate(n);
    (plain, p)
}

/// Protects an RTCP packet; returns (plaintext, SRTCP bytes).
fn protect_rtcp(tx: &mut Context) -> (Vec<u8>, Vec<u8>) {
    let (mut p, len) = rtcp(SSRC, 20, 64);
    let plain = p[..len].to_vec();
    let n = tx.protect_rtcp(&mut p, len).unwrap();
    p.truncate(n);
    (plain, p)
}

fn unprotect_rtp(rx: &mut Context, srtp: &[u8]) -> Result<Vec<u8>, Error> {
    let mut b = srtp.to_vec();
    let n = rx.unprotect_rtp(&mut b, srtp.len())?;
    b.truncate(n);
    Ok(b)
}

fn unprotect_rtcp(rx: &mut Context, srtcp: &[u8]) -> Result<Vec<u8>, Error> {
    let mut b = srtcp.to_vec();
    let n = rx.unprotect_rtcp(&mut b, srtcp.len())?;
    b.truncate(n);
    Ok(b)
}

/// Where the MKI sits in an SRTP packet of `len` bytes.
fn rtp_mki_at(suite: Suite, len: usize) -> usize {
    if suite.is_aead() {
        // header | ciphertext | tag (16) | MKI
        len - 2
    } else {
        // header | ciphertext | MKI | tag
        len - 2 - suite.rtp_tag_len()
    }
}

/// Where the MKI sits in an SRTCP packet of `len` bytes.
fn rtcp_mki_at(suite: Suite, len: usize) -> usize {
    if suite.is_aead() {
        // header | ciphertext | tag (16) | E+index | MKI
        len - 2
    } else {
        // header | ciphertext | E+index | MKI | tag (10)
        len - 2 - suite.rtcp_tag_len()
    }
}

#[test]
fn packets_of_either_key_carry_its_mki_and_decrypt_with_it() {
    for suite in Suite::ALL {
        let policy = two_key_policy(suite);
        let mut tx = Context::new(&policy).unwrap();
        let mut rx = Context::new(&policy).unwrap();
        assert_eq!(tx.rtp_overhead(), 2 + suite.rtp_tag_len(), "{suite}");
        assert_eq!(tx.rtcp_overhead(), 4 + 2 + suite.rtcp_tag_len(), "{suite}");

        let (plain_a, srtp_a) = protect_rtp(&mut tx, 10);
        let (rtcp_plain_a, srtcp_a) = protect_rtcp(&mut tx);
        tx.set_active_key(1).unwrap();
        let (plain_b, srtp_b) = protect_rtp(&mut tx, 11);
        let (rtcp_plain_b, srtcp_b) = protect_rtcp(&mut tx);

        for (srtp, plain, mki) in [(&srtp_a, &plain_a, MKI_0), (&srtp_b, &plain_b, MKI_1)] {
            assert_eq!(srtp.len(), plain.len() + 2 + suite.rtp_tag_len(), "{suite}");
            let at = rtp_mki_at(suite, srtp.len());
            assert_eq!(srtp[at..at + 2], mki, "{suite}: SRTP MKI position");
            assert_eq!(
                unprotect_rtp(&mut rx, srtp).as_ref(),
                Ok(plain),
                "{suite}: MKI {mki:02x?}"
            );
        }
        for (srtcp, plain, mki) in [
            (&srtcp_a, &rtcp_plain_a, MKI_0),
            (&srtcp_b, &rtcp_plain_b, MKI_1),
        ] {
            assert_eq!(srtcp.len(), plain.len() + tx.rtcp_overhead(), "{suite}");
            let at = rtcp_mki_at(suite, srtcp.len());
            assert_eq!(srtcp[at..at + 2], mki, "{suite}: SRTCP MKI position");
            assert_eq!(
                unprotect_rtcp(&mut rx, srtcp).as_ref(),
                Ok(plain),
                "{suite}: SRTCP MKI {mki:02x?}"
            );
        }
    }
}

#[test]
fn the_mki_not_the_receivers_guess_selects_the_key() {
    for suite in Suite::ALL {
        let policy = two_key_policy(suite);
        let mut tx = Context::new(&policy).unwrap();
        tx.set_active_key(1).unwrap();
        let (plain, srtp) = protect_rtp(&mut tx, 500);

        // A packet of key 1 relabelled as key 0 is checked with key 0 and fails.
        let mut relabelled = srtp.clone();
        let at = rtp_mki_at(suite, srtp.len());
        relabelled[at..at + 2].copy_from_slice(&MKI_0);
        let mut rx = Context::new(&policy).unwrap();
        assert_eq!(
            unprotect_rtp(&mut rx, &relabelled),
            Err(Error::AuthenticationFailed),
            "{suite}"
        );

        // A receiver holding only key 1 (same MKI) decrypts it: the MKI, not the position,
        // names the key.
        let mut only_key_1 = Policy::new(key(suite, 0x41, &MKI_1));
        only_key_1.mki_len = 2;
        let mut rx = Context::new(&only_key_1).unwrap();
        assert_eq!(unprotect_rtp(&mut rx, &srtp), Ok(plain), "{suite}");
    }
}

#[test]
fn an_mki_the_receiver_does_not_know_is_unknown_mki() {
    for suite in Suite::ALL {
        let mut tx = Context::new(&two_key_policy(suite)).unwrap();
        tx.set_active_key(1).unwrap();
        let (_, srtp) = protect_rtp(&mut tx, 1);
        let (_, srtcp) = protect_rtcp(&mut tx);

        let mut only_key_0 = Policy::new(key(suite, 0x40, &MKI_0));
        only_key_0.mki_len = 2;
        let mut rx = Context::new(&only_key_0).unwrap();
        assert_eq!(
            unprotect_rtp(&mut rx, &srtp),
            Err(Error::UnknownMki),
            "{suite}"
        );
        assert_eq!(
            unprotect_rtcp(&mut rx, &srtcp),
            Err(Error::UnknownMki),
            "{suite}"
        );
        assert_eq!(
            rx.roc(SSRC),
            None,
            "{suite}: a refused packet creates no stream"
        );
    }
}

#[test]
fn selecting_a_key_that_does_not_exist_is_an_error_and_keeps_the_active_key() {
    for suite in Suite::ALL {
        let mut tx = Context::new(&two_key_policy(suite)).unwrap();
        tx.set_active_key(1).unwrap();
        assert!(
            matches!(tx.set_active_key(5), Err(Error::InvalidMki { .. })),
            "{suite}"
        );
        assert!(
            matches!(tx.set_active_key(2), Err(Error::InvalidMki { .. })),
            "{suite}"
        );
        let (_, srtp) = protect_rtp(&mut tx, 1);
        let at = rtp_mki_at(suite, srtp.len());
        assert_eq!(srtp[at..at + 2], MKI_1, "{suite}: key 1 is still active");
    }
}

/// Why `Context::new` refuses the policy, if it does (`Policy::validate` must agree).
fn refusal(policy: &Policy) -> Option<Error> {
    let from_validate = policy.validate().err();
    let from_new = Context::new(policy).err();
    assert_eq!(from_validate, from_new, "Context::new validates the policy");
    from_new
}

fn invalid_mki_reason(error: Option<Error>) -> &'static str {
    match error {
        Some(Error::InvalidMki { reason }) => reason,
        other => panic!("expected InvalidMki, got {other:?}"),
    }
}

#[test]
fn inconsistent_mki_configurations_are_invalid_mki() {
    let suite = Suite::AesCm128HmacSha1_80;

    // Two keys sharing an MKI.
    let mut duplicate = Policy::new(key(suite, 1, &MKI_0));
    duplicate.keys.push(key(suite, 2, &MKI_0));
    duplicate.mki_len = 2;
    assert!(invalid_mki_reason(refusal(&duplicate)).contains("share"));

    // A 3-byte MKI in a policy of 2-byte MKIs, and a key without MKI in it.
    let mut mismatch = two_key_policy(suite);
    mismatch.keys[1] = key(suite, 2, &[1, 2, 3]);
    assert!(invalid_mki_reason(refusal(&mismatch)).contains("length"));
    let mut missing = two_key_policy(suite);
    missing.keys[1] = key(suite, 2, &[]);
    assert!(invalid_mki_reason(refusal(&missing)).contains("length"));

    // Several keys and no MKI field to tell them apart.
    let mut no_mki = Policy::new(key(suite, 1, &[]));
    no_mki.keys.push(key(suite, 2, &[]));
    assert!(invalid_mki_reason(refusal(&no_mki)).contains("several"));

    // 17-byte MKIs are longer than MAX_MKI_LEN; 16 bytes are fine.
    let mut too_long = Policy::new(key(suite, 1, &[0x17; 17]));
    too_long.mki_len = 17;
    assert!(invalid_mki_reason(refusal(&too_long)).contains("16"));
    let mut longest = Policy::new(key(suite, 1, &[0x16; 16]));
    longest.mki_len = 16;
    assert_eq!(refusal(&longest), None);
}

#[test]
fn unsupported_kdr_and_replay_windows_are_refused() {
    let suite = Suite::AeadAes256Gcm;
    let mut kdr = Policy::new(key(suite, 1, &[]));
    kdr.kdr = 1 << 24;
    assert_eq!(refusal(&kdr), Some(Error::UnsupportedKdr { kdr: 1 << 24 }));

    for size in [0, 32, 63, 32_769, 40_000] {
        let mut window = Policy::new(key(suite, 1, &[]));
        window.replay_window = size;
        assert_eq!(
            refusal(&window),
            Some(Error::InvalidReplayWindow { size }),
            "window {size}"
        );
    }
    for size in [64, DEFAULT_REPLAY_WINDOW, 32_768] {
        let mut window = Policy::new(key(suite, 1, &[]));
        window.replay_window = size;
        assert_eq!(refusal(&window), None, "window {size}");
    }
}

#[test]
fn a_policy_without_keys_is_no_master_key() {
    let mut empty = Policy::new(key(Suite::AesCm128HmacSha1_32, 1, &[]));
    empty.keys.clear();
    assert_eq!(refusal(&empty), Some(Error::NoMasterKey));
}

#[test]
fn keys_of_the_wrong_length_are_invalid_key_length() {
    let suite = Suite::AesCm128HmacSha1_80;
    assert_eq!(
        MasterKey::new(suite, &[0x11; 15], &[0x22; 14]).err(),
        Some(Error::InvalidKeyLength {
            suite,
            what: "master key",
            expected: 16,
            got: 15
        })
    );
    assert_eq!(
        MasterKey::new(suite, &[0x11; 16], &[0x22; 12]).err(),
        Some(Error::InvalidKeyLength {
            suite,
            what: "master salt",
            expected: 14,
            got: 12
        })
    );
    assert_eq!(
        MasterKey::from_material(Suite::AeadAes128Gcm, &[0x33; 30]).err(),
        Some(Error::InvalidKeyLength {
            suite: Suite::AeadAes128Gcm,
            what: "key material",
            expected: 28,
            got: 30
        })
    );
    // A 128-bit key in an AES-256 policy.
    let mut mixed = Policy::new(key(suite, 1, &[]));
    mixed.suite = Suite::AesCm256HmacSha1_80;
    assert_eq!(
        refusal(&mixed),
        Some(Error::InvalidKeyLength {
            suite: Suite::AesCm256HmacSha1_80,
            what: "master key",
            expected: 32,
            got: 16
        })
    );
}
