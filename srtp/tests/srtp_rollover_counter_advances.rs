//! The SRTP rollover counter (RFC 3711 §3.3.1, Appendix A) follows the 16-bit sequence number
//! across its wrap: after more than 2^16 packets the receiver's ROC for the stream is 1, the
//! same payload and sequence number encrypt differently in the new cycle, a late packet from
//! the previous cycle still decrypts (and only once), and `set_roc` lets a receiver join a
//! stream in its fourth cycle, which fails authentication without it. Shown for an AES-CM suite
//! (the ROC is authenticated after the packet) and a GCM suite (the ROC is in the IV).

#![allow(
    clippy::cast_possible_truncation,
    reason = "packet counters are cut to 16-bit sequence numbers on purpose"
)]

mod common;

use common::{pair, payload, rtp};
use srtp::{Context, Error, Suite};

const SUITES: [Suite; 2] = [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm];
const SSRC: u32 = 0x0bad_cafe;

/// Protects the RTP packet (`SSRC`, `seq`, `body`) and returns the SRTP bytes.
fn protect(tx: &mut Context, seq: u16, body: &[u8]) -> Vec<u8> {
    let (mut p, len) = rtp(SSRC, seq, body, 32);
    let n = tx
        .protect_rtp(&mut p, len)
        .unwrap_or_else(|e| panic!("{}: protect seq {seq}: {e}", tx.suite()));
    p.truncate(n);
    p
}

/// Unprotects `srtp` and returns the result with the recovered RTP bytes.
fn unprotect(rx: &mut Context, srtp: &[u8]) -> Result<Vec<u8>, Error> {
    let mut b = srtp.to_vec();
    let n = rx.unprotect_rtp(&mut b, srtp.len())?;
    b.truncate(n);
    Ok(b)
}

fn plain(seq: u16, body: &[u8]) -> Vec<u8> {
    let (mut p, len) = rtp(SSRC, seq, body, 0);
    p.truncate(len);
    p
}

#[test]
fn the_receivers_roc_becomes_1_after_the_sequence_number_wraps() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite, 0x21);
        // 65536 packets of cycle 0 (seq 0..=65535), then seq 0..100 of cycle 1: 65636 packets.
        // Seq 65530 of cycle 0 is held back and delivered after seq 5 of cycle 1.
        let mut held_back = None;
        let mut cycle0_seq5 = Vec::new();
        for n in 0..65_636u32 {
            let seq = (n & 0xffff) as u16;
            // A 4-byte payload that repeats every cycle, so cycles can be compared.
            let body = seq.to_be_bytes().repeat(2);
            let srtp = protect(&mut tx, seq, &body);
            if n == 5 {
                cycle0_seq5.clone_from(&srtp);
            }
            if n == 65_536 + 5 {
                assert_ne!(
                    srtp, cycle0_seq5,
                    "{suite}: the same seq and payload encrypt differently in the next cycle"
                );
            }
            if n == 65_530 {
                held_back = Some(srtp);
                continue;
            }
            assert_eq!(
                unprotect(&mut rx, &srtp).as_deref(),
                Ok(&plain(seq, &body)[..]),
                "{suite}: packet {n} (seq {seq})"
            );
            if n == 65_535 {
                assert_eq!(rx.roc(SSRC), Some(0), "{suite}: still cycle 0 at seq 65535");
            }
            if n == 65_536 {
                assert_eq!(rx.roc(SSRC), Some(1), "{suite}: cycle 1 from seq 0 on");
            }
            if n == 65_536 + 5 {
                // The late packet: index 65530, 11 behind the highest (65541), inside the window.
                let late = held_back.take().expect("seq 65530 was held back");
                let body = 65_530u16.to_be_bytes().repeat(2);
                assert_eq!(
                    unprotect(&mut rx, &late).as_deref(),
                    Ok(&plain(65_530, &body)[..]),
                    "{suite}: a late packet from the previous cycle decrypts"
                );
                assert_eq!(
                    unprotect(&mut rx, &late),
                    Err(Error::Replayed { index: 65_530 }),
                    "{suite}: and only once"
                );
                assert_eq!(
                    rx.roc(SSRC),
                    Some(1),
                    "{suite}: a late packet does not move the ROC back"
                );
            }
        }
        assert_eq!(tx.roc(SSRC), Some(1), "{suite}: sender");
        assert_eq!(rx.roc(SSRC), Some(1), "{suite}: receiver");
        assert!(held_back.is_none());
    }
}

#[test]
fn set_roc_lets_a_receiver_join_a_stream_in_its_fourth_cycle() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite, 0x22);
        // The sender is in cycle 3 (it has sent 3 * 2^16 + 40_000 packets).
        tx.set_roc(SSRC, 3, 40_000).unwrap();
        let body = payload(1, 24);
        let first = protect(&mut tx, 40_001, &body);
        assert_eq!(tx.roc(SSRC), Some(3), "{suite}: sender");

        // A receiver that assumes ROC 0 computes the wrong index: the tag does not verify.
        assert_eq!(
            unprotect(&mut rx, &first),
            Err(Error::AuthenticationFailed),
            "{suite}: without set_roc"
        );
        assert_eq!(
            rx.roc(SSRC),
            None,
            "{suite}: a failed packet creates no stream"
        );

        // Told the ROC by signalling, the same receiver decrypts the same packet.
        rx.set_roc(SSRC, 3, 40_000).unwrap();
        assert_eq!(
            unprotect(&mut rx, &first).as_deref(),
            Ok(&plain(40_001, &body)[..]),
            "{suite}: with set_roc"
        );
        assert_eq!(rx.roc(SSRC), Some(3), "{suite}: receiver");

        // The joined stream then follows the sender through the next wrap, to ROC 4.
        for n in 0..30_000u16 {
            let seq = 40_002u16.wrapping_add(n);
            let body = payload(u32::from(n), 3);
            let srtp = protect(&mut tx, seq, &body);
            assert_eq!(
                unprotect(&mut rx, &srtp).as_deref(),
                Ok(&plain(seq, &body)[..]),
                "{suite}: seq {seq}"
            );
        }
        assert_eq!(tx.roc(SSRC), Some(4), "{suite}: sender after the wrap");
        assert_eq!(rx.roc(SSRC), Some(4), "{suite}: receiver after the wrap");
    }
}
