//! A master key's lifetime (the SDES `|2^n` parameter, RFC 4568 §6.1; RFC 3711 §9.2) caps the
//! packets it protects or accepts: with `MasterKey::with_lifetime(5)` the sixth SRTP packet is
//! refused with `Error::KeyLifetimeExhausted { limit: 5 }` by the sender and by the receiver,
//! SRTCP has its own count with the same limit, packets that fail authentication or replay do
//! not use up the lifetime, and the next master key (MKI) takes over when the first is spent.

#![allow(
    clippy::similar_names,
    reason = "srtp/srtcp and *_rtp/*_rtcp name the two packet kinds side by side"
)]

mod common;

use common::{material, payload, rtcp, rtp};
use srtp::{Context, Error, MasterKey, Policy, Suite};

const SSRC: u32 = 0x0005_0005;
const EXHAUSTED: Error = Error::KeyLifetimeExhausted { limit: 5 };

fn policy_with_lifetime(suite: Suite, lifetime: Option<u64>) -> Policy {
    let key = MasterKey::from_material(suite, &material(suite, 0x55)).unwrap();
    Policy::new(match lifetime {
        Some(packets) => key.with_lifetime(packets),
        None => key,
    })
}

/// The SRTP packets of seq `0..count`, protected by a context without a lifetime.
fn srtp_packets(suite: Suite, count: u16) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut tx = Context::new(&policy_with_lifetime(suite, None)).unwrap();
    (0..count)
        .map(|seq| {
            let (mut p, len) = rtp(SSRC, seq, &payload(u32::from(seq), 20), 32);
            let plain = p[..len].to_vec();
            let n = tx.protect_rtp(&mut p, len).unwrap();
            p.truncate(n);
            (plain, p)
        })
        .collect()
}

/// The first `count` SRTCP packets, protected by a context without a lifetime.
fn srtcp_packets(suite: Suite, count: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut tx = Context::new(&policy_with_lifetime(suite, None)).unwrap();
    (0..count)
        .map(|i| {
            let (mut p, len) = rtcp(SSRC, 4 * i, 64);
            let plain = p[..len].to_vec();
            let n = tx.protect_rtcp(&mut p, len).unwrap();
            p.truncate(n);
            (plain, p)
        })
        .collect()
}

#[test]
fn the_sender_refuses_the_sixth_packet_of_each_kind() {
    for suite in Suite::ALL {
        let mut tx = Context::new(&policy_with_lifetime(suite, Some(5))).unwrap();
        let reference = srtp_packets(suite, 6);
        for (seq, (plain, srtp)) in (0u16..).zip(&reference[..5]) {
            let mut b = plain.clone();
            b.resize(plain.len() + 32, 0);
            let n = tx.protect_rtp(&mut b, plain.len()).unwrap();
            assert_eq!(
                &b[..n],
                &srtp[..],
                "{suite}: packet {seq} is protected normally"
            );
        }
        let (plain, _) = &reference[5];
        let mut b = plain.clone();
        b.resize(plain.len() + 32, 0);
        let before = b.clone();
        assert_eq!(
            tx.protect_rtp(&mut b, plain.len()),
            Err(EXHAUSTED),
            "{suite}"
        );
        assert_eq!(b, before, "{suite}: the refused packet is left untouched");
        assert_eq!(
            tx.protect_rtp(&mut b, plain.len()),
            Err(EXHAUSTED),
            "{suite}: and stays refused"
        );

        // SRTCP has its own count: five more packets, then the same refusal.
        let reference = srtcp_packets(suite, 5);
        for (plain, srtcp) in &reference {
            let mut b = plain.clone();
            b.resize(plain.len() + 64, 0);
            let n = tx.protect_rtcp(&mut b, plain.len()).unwrap();
            assert_eq!(&b[..n], &srtcp[..], "{suite}");
        }
        let (mut b, len) = rtcp(SSRC, 8, 64);
        assert_eq!(tx.protect_rtcp(&mut b, len), Err(EXHAUSTED), "{suite}");
    }
}

#[test]
fn the_receiver_refuses_the_sixth_packet_of_each_kind() {
    for suite in Suite::ALL {
        let mut rx = Context::new(&policy_with_lifetime(suite, Some(5))).unwrap();
        let packets = srtp_packets(suite, 6);
        for (plain, srtp) in &packets[..5] {
            let mut b = srtp.clone();
            assert_eq!(rx.unprotect_rtp(&mut b, srtp.len()), Ok(plain.len()));
            assert_eq!(&b[..plain.len()], &plain[..], "{suite}");
        }
        let (_, srtp) = &packets[5];
        let mut b = srtp.clone();
        assert_eq!(
            rx.unprotect_rtp(&mut b, srtp.len()),
            Err(EXHAUSTED),
            "{suite}"
        );
        assert_eq!(&b, srtp, "{suite}: the refused packet is not decrypted");

        let packets = srtcp_packets(suite, 6);
        for (plain, srtcp) in &packets[..5] {
            let mut b = srtcp.clone();
            assert_eq!(rx.unprotect_rtcp(&mut b, srtcp.len()), Ok(plain.len()));
            assert_eq!(&b[..plain.len()], &plain[..], "{suite}");
        }
        let (_, srtcp) = &packets[5];
        let mut b = srtcp.clone();
        assert_eq!(
            rx.unprotect_rtcp(&mut b, srtcp.len()),
            Err(EXHAUSTED),
            "{suite}"
        );
    }
}

#[test]
fn forged_and_replayed_packets_do_not_use_up_the_lifetime() {
    for suite in Suite::ALL {
        let mut rx = Context::new(&policy_with_lifetime(suite, Some(5))).unwrap();
        let packets = srtp_packets(suite, 5);
        // Ten forgeries of packet 0 (last tag byte changed), then packet 0 and nine replays.
        for flip in 1..=10u8 {
            let mut forged = packets[0].1.clone();
            let last = forged.len() - 1;
            forged[last] ^= flip;
            let n = forged.len();
            assert_eq!(
                rx.unprotect_rtp(&mut forged, n),
                Err(Error::AuthenticationFailed),
                "{suite}"
            );
        }
        let mut b = packets[0].1.clone();
        assert!(
            rx.unprotect_rtp(&mut b, packets[0].1.len()).is_ok(),
            "{suite}"
        );
        for _ in 0..9 {
            let mut b = packets[0].1.clone();
            assert_eq!(
                rx.unprotect_rtp(&mut b, packets[0].1.len()),
                Err(Error::Replayed { index: 0 }),
                "{suite}"
            );
        }
        // Only one packet was counted: the other four genuine ones are still accepted.
        for (plain, srtp) in &packets[1..] {
            let mut b = srtp.clone();
            assert_eq!(
                rx.unprotect_rtp(&mut b, srtp.len()),
                Ok(plain.len()),
                "{suite}"
            );
        }
    }
}

#[test]
fn each_master_key_has_its_own_lifetime() {
    let suite = Suite::AesCm128HmacSha1_32;
    let mut policy = Policy::new(
        MasterKey::from_material(suite, &material(suite, 1))
            .unwrap()
            .with_mki(&[1])
            .with_lifetime(5),
    );
    policy.keys.push(
        MasterKey::from_material(suite, &material(suite, 2))
            .unwrap()
            .with_mki(&[2])
            .with_lifetime(5),
    );
    policy.mki_len = 1;
    let mut tx = Context::new(&policy).unwrap();
    let mut rx = Context::new(&policy).unwrap();
    // Ten packets: five with key 0, then (re-keyed) five with key 1.
    for seq in 0..10u16 {
        let (mut p, len) = rtp(SSRC, seq, &payload(u32::from(seq), 8), 32);
        let n = match tx.protect_rtp(&mut p, len) {
            Ok(n) => n,
            Err(EXHAUSTED) => {
                assert_eq!(seq, 5, "the first key is spent after 5 packets");
                tx.set_active_key(1).unwrap();
                tx.protect_rtp(&mut p, len).unwrap()
            }
            Err(e) => panic!("seq {seq}: {e}"),
        };
        assert_eq!(p[len], if seq < 5 { 1 } else { 2 }, "seq {seq}: MKI");
        let mut b = p[..n].to_vec();
        assert_eq!(rx.unprotect_rtp(&mut b, n), Ok(len), "seq {seq}");
    }
    let (mut p, len) = rtp(SSRC, 10, &[0; 8], 32);
    assert_eq!(
        tx.protect_rtp(&mut p, len),
        Err(EXHAUSTED),
        "both keys are spent"
    );
}
