//! Randomized cross-checks against libsrtp 2.5 (Debian's libsrtp2, through `libsrtp-oracle`),
//! for every suite, both directions: byte-identical output for the same input, each side
//! decrypting the other's packets, across a sequence-number rollover (ROC), with several
//! SSRCs, SRTCP, MKI, tampered tags and replays.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test data generators truncate on purpose"
)]

mod common;

use libsrtp_oracle::{Direction, LibSrtp, OracleConfig, OracleKey, Profile, Status};
use srtp::{Context, Error, MasterKey, Policy, Suite};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn profile(suite: Suite) -> Profile {
    match suite {
        Suite::AesCm128HmacSha1_80 => Profile::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32 => Profile::AesCm128HmacSha1_32,
        Suite::AesCm256HmacSha1_80 => Profile::AesCm256HmacSha1_80,
        Suite::AesCm256HmacSha1_32 => Profile::AesCm256HmacSha1_32,
        Suite::AeadAes128Gcm => Profile::AeadAes128Gcm,
        Suite::AeadAes256Gcm => Profile::AeadAes256Gcm,
        _ => unreachable!("every suite is mapped"),
    }
}

fn libsrtp(suite: Suite, direction: Direction, material: &[u8]) -> LibSrtp {
    LibSrtp::new(&OracleConfig::single_key(
        profile(suite),
        direction,
        material.to_vec(),
    ))
    .expect("libsrtp session")
}

fn ours(suite: Suite, material: &[u8]) -> Context {
    Context::new(&Policy::new(
        MasterKey::from_material(suite, material).unwrap(),
    ))
    .unwrap()
}

/// An RTP packet: random header fields (with CSRCs and an extension now and then), payload.
fn random_rtp(rng: &mut Rng, ssrc: u32, seq: u16) -> Vec<u8> {
    let csrcs = if rng.below(8) == 0 {
        rng.below(3) as u8
    } else {
        0
    };
    let extension = rng.below(8) == 0;
    let mut p = vec![
        0x80 | csrcs | if extension { 0x10 } else { 0 },
        rng.below(128) as u8,
    ];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for _ in 0..csrcs {
        p.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    }
    if extension {
        let words = rng.below(3) as u16;
        p.extend_from_slice(&[0xbe, 0xde]);
        p.extend_from_slice(&words.to_be_bytes());
        let ext = rng.bytes(4 * usize::from(words));
        p.extend_from_slice(&ext);
    }
    let len = rng.below(1200) as usize;
    let payload = rng.bytes(len);
    p.extend_from_slice(&payload);
    p
}

fn random_rtcp(rng: &mut Rng, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200 + rng.below(5) as u8, 0, 0];
    p.extend_from_slice(&ssrc.to_be_bytes());
    let len = 4 * rng.below(60) as usize;
    let body = rng.bytes(len);
    p.extend_from_slice(&body);
    p
}

#[test]
fn srtp_output_is_byte_identical_to_libsrtp_and_each_decrypts_the_other() {
    for suite in Suite::ALL {
        let mut rng = Rng(0x5eed ^ suite.master_key_len() as u64 ^ suite.rtp_tag_len() as u64);
        let material = rng.bytes(suite.key_material_len());
        let mut our_tx = ours(suite, &material);
        let mut our_rx = ours(suite, &material);
        let mut lib_tx = libsrtp(suite, Direction::Outbound, &material);
        let mut lib_rx = libsrtp(suite, Direction::Inbound, &material);
        // Three SSRCs; sequence numbers start just below the wrap so the ROC moves to 1.
        let ssrcs = [0x1111_1111u32, 0xcafe_babe, rng.next() as u32];
        let mut seqs = [65_000u16, 65_400, 1];
        for n in 0..1500 {
            let which = rng.below(3) as usize;
            let seq = seqs[which];
            seqs[which] = seq.wrapping_add(1);
            let plain = random_rtp(&mut rng, ssrcs[which], seq);

            let mut mine = plain.clone();
            mine.resize(plain.len() + 32, 0);
            let len = our_tx.protect_rtp(&mut mine, plain.len()).unwrap();
            mine.truncate(len);
            let mut theirs = plain.clone();
            lib_tx.protect_rtp(&mut theirs).unwrap();
            assert_eq!(
                mine, theirs,
                "{suite}: packet {n} (seq {seq}) differs from libsrtp"
            );

            // libsrtp decrypts ours, we decrypt libsrtp's.
            let mut b = mine.clone();
            lib_rx.unprotect_rtp(&mut b).unwrap();
            assert_eq!(b, plain, "{suite}: libsrtp decrypting ours");
            let mut b = theirs.clone();
            let n = our_rx.unprotect_rtp(&mut b, theirs.len()).unwrap();
            assert_eq!(&b[..n], &plain[..], "{suite}: decrypting libsrtp's");
        }
        assert_eq!(
            our_rx.roc(0xcafe_babe),
            Some(1),
            "{suite}: ROC moved with the wrap"
        );
    }
}

#[test]
fn srtcp_output_is_byte_identical_to_libsrtp_and_each_decrypts_the_other() {
    for suite in Suite::ALL {
        let mut rng = Rng(0x00c0_ffee ^ suite.rtp_tag_len() as u64 ^ suite.master_key_len() as u64);
        let material = rng.bytes(suite.key_material_len());
        let mut our_tx = ours(suite, &material);
        let mut our_rx = ours(suite, &material);
        let mut lib_tx = libsrtp(suite, Direction::Outbound, &material);
        let mut lib_rx = libsrtp(suite, Direction::Inbound, &material);
        let ssrcs = [7u32, rng.next() as u32];
        for n in 0..300 {
            let plain = random_rtcp(&mut rng, ssrcs[n % 2]);
            let mut mine = plain.clone();
            mine.resize(plain.len() + 64, 0);
            let len = our_tx.protect_rtcp(&mut mine, plain.len()).unwrap();
            mine.truncate(len);
            let mut theirs = plain.clone();
            lib_tx.protect_rtcp(&mut theirs).unwrap();
            assert_eq!(
                mine, theirs,
                "{suite}: SRTCP packet {n} differs from libsrtp"
            );
            let mut b = mine.clone();
            lib_rx.unprotect_rtcp(&mut b).unwrap();
            assert_eq!(b, plain);
            let mut b = theirs.clone();
            let n = our_rx.unprotect_rtcp(&mut b, theirs.len()).unwrap();
            assert_eq!(&b[..n], &plain[..]);
        }
    }
}

#[test]
fn mki_selected_keys_match_libsrtp() {
    for suite in Suite::ALL {
        let mut rng = Rng(0x004d_4b49 ^ suite.rtp_tag_len() as u64);
        let keys: Vec<(Vec<u8>, Vec<u8>)> = (0..2u8)
            .map(|i| (rng.bytes(suite.key_material_len()), vec![0, 0, 0, i + 1]))
            .collect();
        let lib_config = |direction| OracleConfig {
            profile: profile(suite),
            direction,
            keys: keys
                .iter()
                .map(|(m, mki)| OracleKey::with_mki(m.clone(), mki.clone()))
                .collect(),
            window_size: 128,
            allow_repeat_tx: false,
        };
        let mut policy = Policy::new(
            MasterKey::from_material(suite, &keys[0].0)
                .unwrap()
                .with_mki(&keys[0].1),
        );
        policy.keys.push(
            MasterKey::from_material(suite, &keys[1].0)
                .unwrap()
                .with_mki(&keys[1].1),
        );
        policy.mki_len = 4;
        let mut our_tx = Context::new(&policy).unwrap();
        our_tx.set_active_key(1).unwrap();
        let mut our_rx = Context::new(&policy).unwrap();
        let mut lib_tx = LibSrtp::new(&lib_config(Direction::Outbound)).unwrap();
        let mut lib_rx = LibSrtp::new(&lib_config(Direction::Inbound)).unwrap();
        for seq in 0..50u16 {
            let plain = random_rtp(&mut rng, 99, seq);
            let mut mine = plain.clone();
            mine.resize(plain.len() + 32, 0);
            let len = our_tx.protect_rtp(&mut mine, plain.len()).unwrap();
            mine.truncate(len);
            let mut theirs = plain.clone();
            lib_tx.protect_rtp_mki(&mut theirs, 1).unwrap();
            assert_eq!(mine, theirs, "{suite}: MKI packet {seq}");
            let mut b = mine.clone();
            lib_rx.unprotect_rtp_mki(&mut b).unwrap();
            assert_eq!(b, plain);
            let mut b = theirs.clone();
            let n = our_rx.unprotect_rtp(&mut b, theirs.len()).unwrap();
            assert_eq!(&b[..n], &plain[..]);

            let rtcp = random_rtcp(&mut rng, 99);
            let mut mine = rtcp.clone();
            mine.resize(rtcp.len() + 64, 0);
            let len = our_tx.protect_rtcp(&mut mine, rtcp.len()).unwrap();
            mine.truncate(len);
            let mut theirs = rtcp.clone();
            lib_tx.protect_rtcp_mki(&mut theirs, 1).unwrap();
            assert_eq!(mine, theirs, "{suite}: MKI SRTCP packet {seq}");
            let mut b = theirs.clone();
            let n = our_rx.unprotect_rtcp(&mut b, theirs.len()).unwrap();
            assert_eq!(&b[..n], &rtcp[..]);
        }
    }
}

#[test]
fn tampering_and_replays_are_refused_by_both() {
    for suite in Suite::ALL {
        let mut rng = Rng(0x7a3 ^ suite.rtp_tag_len() as u64);
        let material = rng.bytes(suite.key_material_len());
        let mut our_tx = ours(suite, &material);
        let mut our_rx = ours(suite, &material);
        let mut lib_tx = libsrtp(suite, Direction::Outbound, &material);
        let mut lib_rx = libsrtp(suite, Direction::Inbound, &material);
        for seq in 0..20u16 {
            let plain = random_rtp(&mut rng, 5, seq);
            let mut theirs = plain.clone();
            lib_tx.protect_rtp(&mut theirs).unwrap();
            let mut mine = plain.clone();
            mine.resize(plain.len() + 32, 0);
            let len = our_tx.protect_rtp(&mut mine, plain.len()).unwrap();
            mine.truncate(len);

            // Flip a bit of the tag: both refuse the other's packet.
            let last = theirs.len() - 1;
            let mut forged = theirs.clone();
            forged[last] ^= 1;
            let n = forged.len();
            assert_eq!(
                our_rx.unprotect_rtp(&mut forged, n),
                Err(Error::AuthenticationFailed)
            );
            let mut forged = mine.clone();
            forged[last] ^= 1;
            assert_eq!(lib_rx.unprotect_rtp(&mut forged), Err(Status::AUTH_FAIL));

            // Genuine once, then a replay.
            let mut b = theirs.clone();
            our_rx.unprotect_rtp(&mut b, theirs.len()).unwrap();
            let mut b = theirs.clone();
            assert_eq!(
                our_rx.unprotect_rtp(&mut b, theirs.len()),
                Err(Error::Replayed {
                    index: u64::from(seq)
                })
            );
            let mut b = mine.clone();
            lib_rx.unprotect_rtp(&mut b).unwrap();
            let mut b = mine.clone();
            assert_eq!(lib_rx.unprotect_rtp(&mut b), Err(Status::REPLAY_FAIL));
        }
    }
}
