//! Fuzz target: untrusted bytes through the SRTP/SRTCP receive paths of every suite, plus a
//! protect/unprotect round trip.
//!
//! The first input byte picks the suite; the rest is the packet. `unprotect_rtp` and
//! `unprotect_rtcp` must return (an error, for anything not made with the fixed key) without
//! panicking, and never report a length beyond the input. When the bytes parse as an RTP (or
//! RTCP) packet, protecting them must succeed and a receiver with the same key must restore
//! them exactly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp::{Context, MasterKey, Policy, Suite};

/// A fixed-key context for `suite`.
fn context(suite: Suite) -> Context {
    let material: Vec<u8> = (0..suite.key_material_len())
        .map(|i| u8::try_from(i).expect("below 256").wrapping_mul(0x3d) ^ 0xa7)
        .collect();
    let key = MasterKey::from_material(suite, &material).expect("suite-sized material");
    Context::new(&Policy::new(key)).expect("valid policy")
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    let suite = Suite::ALL[usize::from(selector) % Suite::ALL.len()];
    let mut rx = context(suite);

    // Receive paths: no panic, and an accepted packet only ever shrinks.
    let mut buf = packet.to_vec();
    if let Ok(n) = rx.unprotect_rtp(&mut buf, packet.len()) {
        assert!(n <= packet.len());
    }
    let mut buf = packet.to_vec();
    if let Ok(n) = rx.unprotect_rtcp(&mut buf, packet.len()) {
        assert!(n <= packet.len());
    }

    // Round trips with fresh contexts.
    let mut tx = context(suite);
    let mut rx = context(suite);
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + tx.rtp_overhead(), 0);
    if let Ok(n) = tx.protect_rtp(&mut buf, packet.len()) {
        assert_eq!(n, packet.len() + tx.rtp_overhead());
        assert_eq!(
            rx.unprotect_rtp(&mut buf, n),
            Ok(packet.len()),
            "{suite}: RTP round trip"
        );
        assert_eq!(&buf[..packet.len()], packet, "{suite}: RTP round trip");
    }
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + tx.rtcp_overhead(), 0);
    if let Ok(n) = tx.protect_rtcp(&mut buf, packet.len()) {
        assert_eq!(n, packet.len() + tx.rtcp_overhead());
        assert_eq!(
            rx.unprotect_rtcp(&mut buf, n),
            Ok(packet.len()),
            "{suite}: RTCP round trip"
        );
        assert_eq!(&buf[..packet.len()], packet, "{suite}: RTCP round trip");
    }
});
