//! Arbitrary bytes as SDP: whatever parses must serialise back to exactly the input, and the
//! leg rewrite of it (relay address, ports, fresh crypto, RTCP, ICE removed, origin) must
//! either be refused with a typed error or parse again, and serialise stably.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sip_controller::sdp::{
    rewrite_for_leg, CryptoAttribute, LegSdpPlan, MediaPlan, OriginIdentity, OriginUpdate,
    RtcpPlan, Sdp, SdpError, Suite, TransportProtocol,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = Sdp::parse(data) else {
        return;
    };
    assert_eq!(
        sdp.to_bytes(),
        data,
        "an untouched SDP must round-trip byte for byte"
    );

    // Derive the plan's shape from the input so that every branch gets exercised.
    let seed = data
        .iter()
        .fold(0_u32, |h, b| h.rotate_left(5) ^ u32::from(*b));
    let address = if seed & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))
    };
    let Ok(crypto) = CryptoAttribute::generate(1, Suite::AesCm128HmacSha1_80) else {
        return;
    };
    let media = (0..sdp.media().len())
        .map(|i| {
            let pick = (seed >> (i % 24)) & 3;
            let (proto, crypto, rtcp) = match pick {
                0 => (
                    Some(TransportProtocol::RtpSavp),
                    vec![crypto.clone()],
                    RtcpPlan::Mux,
                ),
                1 => (
                    Some(TransportProtocol::RtpAvp),
                    vec![],
                    RtcpPlan::Port(40001),
                ),
                2 => (
                    Some(TransportProtocol::RtpAvpf),
                    vec![crypto.clone()],
                    RtcpPlan::MuxWithFallback(40001),
                ),
                _ => (None, vec![], RtcpPlan::Port(40001)),
            };
            MediaPlan {
                port: if pick == 3 && seed & 2 == 0 { 0 } else { 40000 },
                proto,
                crypto,
                rtcp,
            }
        })
        .collect();
    let plan = LegSdpPlan {
        address,
        origin: OriginUpdate {
            version: u64::from(seed),
            identity: (seed & 4 == 0).then_some(OriginIdentity {
                username: "relay",
                session_id: 1,
                address,
            }),
        },
        media,
    };
    let rewritten = match rewrite_for_leg(&sdp, &plan) {
        Ok(rewritten) => rewritten,
        // The only refusal a well-formed plan can meet: the result would exceed our limits.
        Err(SdpError::RewriteTooLarge { .. }) => return,
        Err(other) => panic!("rewrite refused: {other}"),
    };
    let bytes = rewritten.to_bytes();
    let again = match Sdp::parse(&bytes) {
        Ok(again) => again,
        Err(e) => panic!("the rewritten SDP does not parse: {e}"),
    };
    assert_eq!(again.to_bytes(), bytes);
    assert_eq!(again.media().len(), sdp.media().len());
    for (section, before) in again.media().iter().zip(sdp.media()) {
        assert!(section.ice().is_empty());
        if before.description().is_disabled() {
            assert!(section.description().is_disabled(), "port 0 must stay 0");
            assert!(!section.has_crypto());
        }
    }
});
