//! Helpers shared by the srtp integration tests.
#![allow(dead_code, reason = "each test file uses a subset")]
#![allow(
    clippy::cast_possible_truncation,
    reason = "test data generators truncate on purpose"
)]

use srtp::{Context, MasterKey, Policy, Suite};

/// Deterministic key material for a suite (distinct per `seed`).
pub fn material(suite: Suite, seed: u8) -> Vec<u8> {
    (0..suite.key_material_len())
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn policy(suite: Suite, seed: u8) -> Policy {
    Policy::new(MasterKey::from_material(suite, &material(suite, seed)).unwrap())
}

/// A sender and a receiver context with the same key.
pub fn pair(suite: Suite, seed: u8) -> (Context, Context) {
    let p = policy(suite, seed);
    (Context::new(&p).unwrap(), Context::new(&p).unwrap())
}

/// An RTP packet with the given SSRC, sequence number and payload, plus `room` spare bytes.
pub fn rtp(ssrc: u32, seq: u16, payload: &[u8], room: usize) -> (Vec<u8>, usize) {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&u32::from(seq).wrapping_mul(160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    let len = p.len();
    p.resize(len + room, 0);
    (p, len)
}

/// An RTCP receiver report with the given SSRC and `extra` filler bytes, plus `room`.
pub fn rtcp(ssrc: u32, extra: usize, room: usize) -> (Vec<u8>, usize) {
    let mut p = vec![0x81, 201, 0, 0];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..extra).map(|i| i as u8));
    let len = p.len();
    p.resize(len + room, 0);
    (p, len)
}

/// Payload of `len` bytes that differs with `n`.
pub fn payload(n: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32 ^ n.wrapping_mul(7)) as u8)
        .collect()
}
