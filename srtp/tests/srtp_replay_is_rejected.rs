//! Replayed and too-old packets are refused with typed errors, for RTP and RTCP, every suite.

mod common;

use common::{pair, payload, rtcp, rtp};
use srtp::{Context, Error, Suite};

#[test]
fn a_replayed_rtp_packet_is_refused_and_changes_nothing() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite, 1);
        let mut sent = Vec::new();
        for seq in 100..110u16 {
            let (mut p, len) = rtp(7, seq, &payload(u32::from(seq), 160), 32);
            let n = tx.protect_rtp(&mut p, len).unwrap();
            p.truncate(n);
            sent.push(p);
        }
        for p in &sent {
            let mut b = p.clone();
            rx.unprotect_rtp(&mut b, p.len()).unwrap();
        }
        let mut again = sent[4].clone();
        assert_eq!(
            rx.unprotect_rtp(&mut again, sent[4].len()),
            Err(Error::Replayed { index: 104 }),
            "{suite}"
        );
        assert_eq!(
            again, sent[4],
            "{suite}: a refused packet is left as it was"
        );
    }
}

#[test]
fn packets_older_than_the_window_are_refused_but_reordering_inside_it_is_fine() {
    let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80, 2);
    let mut protected = Vec::new();
    for seq in 0..300u16 {
        let (mut p, len) = rtp(9, seq, &payload(u32::from(seq), 20), 32);
        let n = tx.protect_rtp(&mut p, len).unwrap();
        p.truncate(n);
        protected.push(p);
    }
    // Deliver 0..=299 except 150 and 200, then the stragglers.
    for (seq, p) in protected.iter().enumerate() {
        if seq == 150 || seq == 200 {
            continue;
        }
        let mut b = p.clone();
        rx.unprotect_rtp(&mut b, p.len()).unwrap();
    }
    // 299 - 200 = 99 < 128: inside the default window.
    let mut b = protected[200].clone();
    assert!(rx.unprotect_rtp(&mut b, protected[200].len()).is_ok());
    // 299 - 150 = 149 >= 128: too old.
    let mut b = protected[150].clone();
    assert_eq!(
        rx.unprotect_rtp(&mut b, protected[150].len()),
        Err(Error::TooOld { index: 150 })
    );
}

#[test]
fn a_larger_configured_window_accepts_older_packets() {
    let mut policy = common::policy(Suite::AeadAes128Gcm, 3);
    policy.replay_window = 1024;
    let mut tx = Context::new(&policy).unwrap();
    let mut rx = Context::new(&policy).unwrap();
    let mut late = None;
    for seq in 0..600u16 {
        let (mut p, len) = rtp(1, seq, &payload(u32::from(seq), 40), 32);
        let n = tx.protect_rtp(&mut p, len).unwrap();
        p.truncate(n);
        if seq == 10 {
            late = Some(p);
            continue;
        }
        rx.unprotect_rtp(&mut p.clone(), n).unwrap();
    }
    let mut late = late.unwrap();
    let n = late.len();
    assert!(
        rx.unprotect_rtp(&mut late, n).is_ok(),
        "590 behind, window 1024"
    );
}

#[test]
fn replayed_srtcp_is_refused() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite, 4);
        let (mut p, len) = rtcp(5, 24, 64);
        let n = tx.protect_rtcp(&mut p, len).unwrap();
        let copy = p[..n].to_vec();
        assert_eq!(rx.unprotect_rtcp(&mut p, n), Ok(len));
        let mut again = copy.clone();
        assert_eq!(
            rx.unprotect_rtcp(&mut again, n),
            Err(Error::Replayed { index: 1 }),
            "{suite}"
        );
    }
}

#[test]
fn protecting_the_same_index_twice_is_refused_unless_allowed() {
    let (mut tx, _) = pair(Suite::AesCm128HmacSha1_80, 5);
    let (mut p, len) = rtp(3, 42, &[1; 10], 32);
    tx.protect_rtp(&mut p, len).unwrap();
    let (mut p, len) = rtp(3, 42, &[2; 10], 32);
    assert_eq!(
        tx.protect_rtp(&mut p, len),
        Err(Error::Replayed { index: 42 })
    );

    let mut policy = common::policy(Suite::AesCm128HmacSha1_80, 5);
    policy.allow_repeat_tx = true;
    let mut tx = Context::new(&policy).unwrap();
    for _ in 0..2 {
        let (mut p, len) = rtp(3, 42, &[1; 10], 32);
        assert!(tx.protect_rtp(&mut p, len).is_ok());
    }
}
