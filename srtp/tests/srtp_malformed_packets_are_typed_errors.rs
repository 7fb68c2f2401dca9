//! Malformed input never panics and never gets through: for every suite, packets that are too
//! short, whose CSRC list or header extension runs past the end, whose version is not 2, that
//! do not fit the caller's buffer or exceed `MAX_PACKET_LEN` are refused with the exact typed
//! error, leaving the buffer and the context as they were. Then 20 000 pseudo-random byte
//! strings per suite are refused by `unprotect_rtp` and `unprotect_rtcp`, and random mutations
//! of a genuine packet (bit flips, truncation, trailing bytes) are never accepted.

#![allow(
    clippy::cast_possible_truncation,
    reason = "the pseudo-random generator truncates on purpose"
)]
#![allow(
    clippy::similar_names,
    reason = "srtp/srtcp and *_rtp/*_rtcp name the two packet kinds side by side"
)]

mod common;

use common::{pair, payload, rtcp, rtp};
use srtp::{Context, Error, Suite, MAX_PACKET_LEN};

const SSRC: u32 = 0x1234_5678;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A distinct generator seed per suite.
fn seed(suite: Suite) -> u64 {
    let position = Suite::ALL.iter().position(|&s| s == suite).expect("listed");
    0x1_0000 * (position as u64 + 1)
}

#[derive(Clone, Copy, Debug)]
enum Op {
    ProtectRtp,
    UnprotectRtp,
    ProtectRtcp,
    UnprotectRtcp,
}

impl Op {
    fn run(self, ctx: &mut Context, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        match self {
            Self::ProtectRtp => ctx.protect_rtp(buf, len),
            Self::UnprotectRtp => ctx.unprotect_rtp(buf, len),
            Self::ProtectRtcp => ctx.protect_rtcp(buf, len),
            Self::UnprotectRtcp => ctx.unprotect_rtcp(buf, len),
        }
    }
}

/// Runs `op` on `len` bytes of `buf` and asserts it fails with `expected`, leaving `buf` as it
/// was.
#[track_caller]
fn refused(ctx: &mut Context, op: Op, mut buf: Vec<u8>, len: usize, expected: &Error) {
    let before = buf.clone();
    let result = op.run(ctx, &mut buf, len);
    let suite = ctx.suite();
    assert_eq!(
        result.as_ref(),
        Err(expected),
        "{suite}: {op:?} of {len} bytes"
    );
    assert_eq!(
        buf, before,
        "{suite}: {op:?} left the refused buffer as it was"
    );
}

/// Like [`refused`], for errors whose fields are not pinned here.
#[track_caller]
fn refused_as(ctx: &mut Context, op: Op, mut buf: Vec<u8>, len: usize, ok: fn(&Error) -> bool) {
    let before = buf.clone();
    let result = op.run(ctx, &mut buf, len);
    let suite = ctx.suite();
    assert!(
        result.as_ref().is_err_and(ok),
        "{suite}: {op:?} of {len} bytes gave {result:?}"
    );
    assert_eq!(
        buf, before,
        "{suite}: {op:?} left the refused buffer as it was"
    );
}

/// `bytes` followed by `room` zero bytes.
fn with_room(bytes: &[u8], room: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b.resize(bytes.len() + room, 0);
    b
}

/// A 12-byte RTP header with the given first byte (V|P|X|CC).
fn rtp_header(first: u8) -> Vec<u8> {
    let mut h = vec![first, 0x60, 0x00, 0x07, 0x00, 0x00, 0x03, 0x20];
    h.extend_from_slice(&SSRC.to_be_bytes());
    h
}

/// Protects a valid RTP and RTCP packet and returns the SRTP and SRTCP bytes.
fn protect_genuine(tx: &mut Context) -> (Vec<u8>, Vec<u8>) {
    let (mut p, len) = rtp(SSRC, 77, &payload(77, 33), 64);
    let n = tx.protect_rtp(&mut p, len).unwrap();
    p.truncate(n);
    let (mut c, len) = rtcp(SSRC, 28, 64);
    let n = tx.protect_rtcp(&mut c, len).unwrap();
    c.truncate(n);
    (p, c)
}

#[test]
fn short_rtp_packets_are_truncated() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite, 0x31);
        let header = rtp_header(0x80);
        for len in [0, 1, 11] {
            let expected = Error::Truncated { len, needed: 12 };
            refused(
                &mut tx,
                Op::ProtectRtp,
                with_room(&header[..len], 64),
                len,
                &expected,
            );
        }
        // Unprotect needs the header and the tag.
        let needed = 12 + suite.rtp_tag_len();
        for len in [0, 11, 12, needed - 1] {
            let srtp = with_room(&header, 32);
            let expected = Error::Truncated { len, needed };
            refused(
                &mut rx,
                Op::UnprotectRtp,
                srtp[..len].to_vec(),
                len,
                &expected,
            );
        }
    }
}

#[test]
fn csrc_lists_and_extensions_running_past_the_end_are_truncated() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite, 0x32);
        let tag = suite.rtp_tag_len();

        // CC = 15 announces 60 bytes of CSRCs; 8 are there.
        let mut csrcs = rtp_header(0x8f);
        csrcs.extend_from_slice(&[0xcc; 8]);
        let expected = Error::Truncated {
            len: 20,
            needed: 12 + 60,
        };
        refused(
            &mut tx,
            Op::ProtectRtp,
            with_room(&csrcs, 64),
            20,
            &expected,
        );

        // X = 1 without room for the extension header.
        let bare = rtp_header(0x90);
        let expected = Error::Truncated {
            len: 12,
            needed: 16,
        };
        refused(&mut tx, Op::ProtectRtp, with_room(&bare, 64), 12, &expected);

        // X = 1 announcing 100 words; 8 bytes follow.
        let mut long_ext = rtp_header(0x90);
        long_ext.extend_from_slice(&[0xbe, 0xde, 0x00, 100, 1, 2, 3, 4, 5, 6, 7, 8]);
        let expected = Error::Truncated {
            len: 24,
            needed: 16 + 400,
        };
        refused(
            &mut tx,
            Op::ProtectRtp,
            with_room(&long_ext, 64),
            24,
            &expected,
        );

        // CC = 2 and X = 1: the extension header starts after the CSRCs (at 20), 1 word long.
        let mut both = rtp_header(0x92);
        both.extend_from_slice(&[0xcc; 8]);
        both.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0xee, 0xee]);
        let expected = Error::Truncated {
            len: 26,
            needed: 28,
        };
        refused(&mut tx, Op::ProtectRtp, with_room(&both, 64), 26, &expected);

        // The same headers as SRTP (followed by a would-be tag): the header is parsed without
        // the trailer and found short.
        for header in [&csrcs, &long_ext, &both] {
            let srtp = with_room(header, tag);
            let len = srtp.len();
            refused_as(
                &mut rx,
                Op::UnprotectRtp,
                srtp,
                len,
                |e| matches!(e, Error::Truncated { len, needed } if needed > len),
            );
        }

        // Nothing was committed: the next genuine packet is protected as by a fresh context.
        let (mut fresh, _) = pair(suite, 0x32);
        assert_eq!(
            protect_genuine(&mut tx),
            protect_genuine(&mut fresh),
            "{suite}"
        );
    }
}

#[test]
fn versions_other_than_2_are_bad_version() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite, 0x33);
        for version in [0u8, 1, 3] {
            let expected = Error::BadVersion { version };
            let mut packet = rtp_header(version << 6);
            packet.extend_from_slice(&[0xab; 40]);
            let len = packet.len();
            refused(
                &mut tx,
                Op::ProtectRtp,
                with_room(&packet, 64),
                len,
                &expected,
            );
            refused(&mut rx, Op::UnprotectRtp, packet.clone(), len, &expected);
            packet[1] = 200;
            refused(
                &mut tx,
                Op::ProtectRtcp,
                with_room(&packet, 64),
                len,
                &expected,
            );
            refused(&mut rx, Op::UnprotectRtcp, packet, len, &expected);
        }
    }
}

#[test]
fn short_rtcp_packets_are_truncated() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite, 0x34);
        let (packet, _) = rtcp(SSRC, 60, 0);
        for len in [0, 1, 7] {
            let expected = Error::Truncated { len, needed: 8 };
            refused(
                &mut tx,
                Op::ProtectRtcp,
                packet[..len].to_vec(),
                len,
                &expected,
            );
        }
        // Unprotect needs the 8-byte header and the trailer (E+index, tag).
        let needed = 8 + rx.rtcp_overhead();
        assert_eq!(needed, 8 + 4 + suite.rtcp_tag_len(), "{suite}");
        for len in [0, 7, 8, needed - 1] {
            let expected = Error::Truncated { len, needed };
            refused(
                &mut rx,
                Op::UnprotectRtcp,
                packet[..len].to_vec(),
                len,
                &expected,
            );
        }
    }
}

#[test]
fn buffers_without_room_for_the_trailer_are_buffer_too_small() {
    for suite in Suite::ALL {
        let (mut tx, _) = pair(suite, 0x35);
        let (p, len) = rtp(SSRC, 1, &payload(1, 50), 0);
        let needed = len + tx.rtp_overhead();
        let expected = Error::BufferTooSmall {
            needed,
            capacity: needed - 1,
        };
        let short = with_room(&p, tx.rtp_overhead() - 1);
        refused(&mut tx, Op::ProtectRtp, short, len, &expected);
        refused(
            &mut tx,
            Op::ProtectRtp,
            p.clone(),
            len,
            &Error::BufferTooSmall {
                needed,
                capacity: len,
            },
        );

        let (c, len) = rtcp(SSRC, 16, 0);
        let needed = len + tx.rtcp_overhead();
        let expected = Error::BufferTooSmall {
            needed,
            capacity: needed - 1,
        };
        let short = with_room(&c, tx.rtcp_overhead() - 1);
        refused(&mut tx, Op::ProtectRtcp, short, len, &expected);

        // Exactly enough room is enough.
        let mut b = with_room(&p, tx.rtp_overhead());
        assert_eq!(tx.protect_rtp(&mut b, p.len()), Ok(b.len()), "{suite}");
        let mut b = with_room(&c, tx.rtcp_overhead());
        assert_eq!(tx.protect_rtcp(&mut b, c.len()), Ok(b.len()), "{suite}");
    }
}

#[test]
fn a_length_beyond_the_buffer_is_buffer_too_small() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite, 0x36);
        let (srtp, srtcp) = protect_genuine(&mut tx.clone());
        for (op, bytes) in [
            (Op::ProtectRtp, &srtp),
            (Op::UnprotectRtp, &srtp),
            (Op::ProtectRtcp, &srtcp),
            (Op::UnprotectRtcp, &srtcp),
        ] {
            let capacity = bytes.len();
            let expected = Error::BufferTooSmall {
                needed: capacity + 1,
                capacity,
            };
            let ctx = if matches!(op, Op::ProtectRtp | Op::ProtectRtcp) {
                &mut tx
            } else {
                &mut rx
            };
            refused(ctx, op, bytes.clone(), capacity + 1, &expected);
        }
        // The genuine packets are still accepted after all that.
        let mut b = srtp.clone();
        assert!(rx.unprotect_rtp(&mut b, srtp.len()).is_ok(), "{suite}");
        let mut b = srtcp.clone();
        assert!(rx.unprotect_rtcp(&mut b, srtcp.len()).is_ok(), "{suite}");
    }
}

#[test]
fn packets_beyond_max_packet_len_are_packet_too_large() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite, 0x37);
        let too_large = Error::PacketTooLarge {
            len: MAX_PACKET_LEN + 1,
            max: MAX_PACKET_LEN,
        };
        let body = payload(3, MAX_PACKET_LEN + 1 - 12);
        let (p, len) = rtp(SSRC, 1, &body, 64);
        assert_eq!(len, MAX_PACKET_LEN + 1);
        refused(&mut tx, Op::ProtectRtp, p.clone(), len, &too_large);
        refused(&mut rx, Op::UnprotectRtp, p.clone(), len, &too_large);
        let (c, len) = rtcp(SSRC, MAX_PACKET_LEN + 1 - 8, 64);
        refused(&mut tx, Op::ProtectRtcp, c.clone(), len, &too_large);
        refused(&mut rx, Op::UnprotectRtcp, c.clone(), len, &too_large);

        // A packet that fits but whose protected form would not.
        let len = MAX_PACKET_LEN - tx.rtp_overhead() + 1;
        refused(&mut tx, Op::ProtectRtp, p.clone(), len, &too_large);
        let len = MAX_PACKET_LEN - tx.rtcp_overhead() + 1;
        refused(&mut tx, Op::ProtectRtcp, c.clone(), len, &too_large);

        // The largest packets that fit round-trip to exactly MAX_PACKET_LEN bytes.
        let len = MAX_PACKET_LEN - tx.rtp_overhead();
        let mut b = p.clone();
        assert_eq!(tx.protect_rtp(&mut b, len), Ok(MAX_PACKET_LEN), "{suite}");
        assert_eq!(rx.unprotect_rtp(&mut b, MAX_PACKET_LEN), Ok(len), "{suite}");
        assert_eq!(b[..len], p[..len], "{suite}");
        let len = MAX_PACKET_LEN - tx.rtcp_overhead();
        let mut b = c.clone();
        assert_eq!(tx.protect_rtcp(&mut b, len), Ok(MAX_PACKET_LEN), "{suite}");
        assert_eq!(
            rx.unprotect_rtcp(&mut b, MAX_PACKET_LEN),
            Ok(len),
            "{suite}"
        );
        assert_eq!(b[..len], c[..len], "{suite}");
    }
}

#[test]
fn random_bytes_are_always_refused_and_never_panic() {
    for suite in Suite::ALL {
        let mut rng = Rng(0x6d61_6c66 + seed(suite));
        let (mut tx, mut rx) = pair(suite, 0x38);
        // The receiver knows the stream, so inputs naming its SSRC reach index estimation and
        // the replay window too.
        let (srtp, srtcp) = protect_genuine(&mut tx);
        assert!(rx.unprotect_rtp(&mut srtp.clone(), srtp.len()).is_ok());
        assert!(rx.unprotect_rtcp(&mut srtcp.clone(), srtcp.len()).is_ok());
        let mut refusals = [0usize; 4];
        for i in 0..20_000 {
            let len = rng.below(300);
            let mut bytes = rng.bytes(len);
            // Half the inputs get version 2, a quarter the known SSRC (RTP and RTCP offsets).
            if !bytes.is_empty() && rng.below(2) == 0 {
                bytes[0] = 0x80 | (bytes[0] & 0x3f);
            }
            if bytes.len() >= 12 && rng.below(4) == 0 {
                bytes[4..8].copy_from_slice(&SSRC.to_be_bytes());
                bytes[8..12].copy_from_slice(&SSRC.to_be_bytes());
            }
            // Now and then a length that is not the buffer's.
            let len = match rng.below(16) {
                0 => bytes.len() + 1 + rng.below(4),
                1 => rng.below(bytes.len() + 1),
                _ => bytes.len(),
            };
            for op in [Op::UnprotectRtp, Op::UnprotectRtcp] {
                let mut b = bytes.clone();
                let result = op.run(&mut rx, &mut b, len);
                assert!(
                    result.is_err(),
                    "{suite}: input {i} {op:?} accepted: {bytes:02x?}"
                );
                assert_eq!(
                    b, bytes,
                    "{suite}: input {i} {op:?} modified a refused buffer"
                );
                refusals[match result {
                    Err(Error::Truncated { .. }) => 0,
                    Err(Error::BadVersion { .. }) => 1,
                    Err(Error::AuthenticationFailed) => 2,
                    _ => 3,
                }] += 1;
            }
        }
        // The inputs reached every check, authentication included.
        assert!(refusals.iter().all(|&n| n > 0), "{suite}: {refusals:?}");
        assert!(refusals[2] > 5_000, "{suite}: {refusals:?}");
    }
}

/// A copy of `genuine` with 1 to 4 distinct bytes changed, and now and then cut short or
/// extended: never equal to `genuine`.
fn mutate(rng: &mut Rng, genuine: &[u8]) -> Vec<u8> {
    let mut m = genuine.to_vec();
    match rng.below(8) {
        0 => m.truncate(rng.below(genuine.len())),
        1 => {
            let len = 1 + rng.below(16);
            let extra = rng.bytes(len);
            m.extend_from_slice(&extra);
        }
        _ => {
            let mut positions = Vec::new();
            while positions.len() < 1 + rng.below(4) {
                let at = rng.below(m.len());
                if !positions.contains(&at) {
                    positions.push(at);
                }
            }
            for at in positions {
                m[at] ^= 1 + rng.below(255) as u8;
            }
        }
    }
    assert_ne!(m, genuine);
    m
}

#[test]
fn mutated_packets_are_never_accepted() {
    for suite in Suite::ALL {
        let mut rng = Rng(0x6d75_7461 + seed(suite));
        let (mut tx, mut rx) = pair(suite, 0x39);
        // An RTP packet with a CSRC and a header extension, so the mutations hit every field.
        let mut plain_rtp = rtp_header(0x91);
        plain_rtp.extend_from_slice(&0xc5c5_c5c5u32.to_be_bytes());
        plain_rtp.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00]);
        plain_rtp.extend_from_slice(&payload(9, 45));
        let mut srtp = with_room(&plain_rtp, 64);
        let n = tx.protect_rtp(&mut srtp, plain_rtp.len()).unwrap();
        srtp.truncate(n);
        let (mut srtcp, len) = rtcp(SSRC, 36, 64);
        let plain_rtcp = srtcp[..len].to_vec();
        let n = tx.protect_rtcp(&mut srtcp, len).unwrap();
        srtcp.truncate(n);

        for i in 0..5_000 {
            let mut m = mutate(&mut rng, &srtp);
            let len = m.len();
            let result = rx.unprotect_rtp(&mut m, len);
            assert!(
                result.is_err(),
                "{suite}: RTP mutation {i} accepted: {result:?}"
            );
            let mut m = mutate(&mut rng, &srtcp);
            let len = m.len();
            let result = rx.unprotect_rtcp(&mut m, len);
            assert!(
                result.is_err(),
                "{suite}: RTCP mutation {i} accepted: {result:?}"
            );
        }
        // The refusals left no trace: the genuine packets are accepted, once, and decrypt.
        let mut b = srtp.clone();
        assert_eq!(rx.unprotect_rtp(&mut b, srtp.len()), Ok(plain_rtp.len()));
        assert_eq!(b[..plain_rtp.len()], plain_rtp[..], "{suite}");
        let mut b = srtcp.clone();
        assert_eq!(rx.unprotect_rtcp(&mut b, srtcp.len()), Ok(plain_rtcp.len()));
        assert_eq!(b[..plain_rtcp.len()], plain_rtcp[..], "{suite}");
    }
}
