use std::time::Instant;

use super::*;
use crate::{
    ng::{
        options::{Replace, SdesOptions},
        testing::FakeRelay,
    },
    relay_client::LegCounters,
    sdp::tests::{ASTERISK_PLAIN, BARESIP_SRTP},
};

/// The PBX's plain answer to our offer.
const PBX_ANSWER: &str = "v=0\r\n\
o=pbx 55 56 IN IP4 10.0.0.50\r\n\
s=pbx\r\n\
c=IN IP4 10.0.0.50\r\n\
t=0 0\r\n\
m=audio 18000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=rtcp:18001\r\n";

/// Key of `BARESIP_SRTP`'s tag 2 (`AES_CM_128_HMAC_SHA1_80`).
const CALLER_KEY_80: &str = "RfQpSxhZkU7RpoR8hTW1i6kSOdLUuWHPaKPWCmVl";
const CALLEE_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

fn policy(sender: Option<&str>) -> Policy {
    Policy {
        sender_interface: sender.map(str::to_owned),
        receiver_interface: None,
        strict_source: true,
        media_timeout_secs: 60,
        default_interface: "default".to_owned(),
    }
}

fn new_call(sender: Option<&str>) -> Call {
    Call::new(
        "c1@example",
        "from-a",
        &policy(sender),
        Instant::now(),
        1_700_000_000,
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

/// Replaces every inline key with `KEY` (keys are random).
fn mask(sdp: &str) -> String {
    sdp.split("\r\n")
        .map(|line| match line.split_once("inline:") {
            Some((head, tail)) => {
                let rest = tail.find('|').map_or("", |i| &tail[i..]);
                format!("{head}inline:KEY{rest}")
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn offer(call: &mut Call, relay: &FakeRelay, from: Side, sdp: &str, options: &Options) -> String {
    plan_offer(call, from, sdp, options, &policy(None)).expect("offer negotiates");
    let view = relay
        .put(&call.relay_id, &call.session_spec(60).expect("spec"))
        .expect("relay");
    text(&render_for(call, from.other(), Rendering::Offer, &view, options).expect("render"))
}

fn answer(call: &mut Call, relay: &FakeRelay, from: Side, sdp: &str, options: &Options) -> String {
    set_tag(call, from, "to-b");
    plan_answer(call, from, sdp, options).expect("answer negotiates");
    let view = relay
        .put(&call.relay_id, &call.session_spec(60).expect("spec"))
        .expect("relay");
    text(&render_for(call, from.other(), Rendering::Answer, &view, options).expect("render"))
}

fn with_transport(proto: TransportProtocol) -> Options {
    Options {
        transport: Some(TransportOverride::Profile(proto)),
        ..Options::default()
    }
}

#[test]
fn srtp_offer_answered_plain_with_transport_rtp_avp_transcrypts() {
    let relay = FakeRelay::default();
    let mut call = new_call(Some("internal"));
    let options = with_transport(TransportProtocol::RtpAvp);
    plan_offer(
        &mut call,
        Side::A,
        BARESIP_SRTP,
        &options,
        &policy(Some("internal")),
    )
    .expect("offer");
    let view = relay
        .put(&call.relay_id, &call.session_spec(60).expect("spec"))
        .expect("relay");
    let to_b =
        text(&render_for(&mut call, Side::B, Rendering::Offer, &view, &options).expect("render"));
    // Towards the answerer: plain RTP/AVP, no key of the caller's, the relay's address and
    // port, rtcp-mux passed on with the RTP port as fallback (RFC 5761 §5.1.3).
    assert_eq!(
        to_b,
        "v=0\r\n\
o=- 1916440744 3217383367 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 203.0.113.1\r\n\
t=0 0\r\n\
m=audio 40002 RTP/AVP 96 0 8 101\r\n\
b=AS:64\r\n\
a=rtcp:40002\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
a=label:1\r\n\
a=rtcp-mux\r\n\
a=ssrc:1873393283 cname:e1a0a8a9-57b2-4d0c-a4e4-6c0c4e6f6a52\r\n\
a=ptime:20\r\n"
    );

    let to_a = answer(&mut call, &relay, Side::B, PBX_ANSWER, &Options::default());
    // Towards the offerer: RTP/SAVP with our key under the chosen tag and suite.
    assert_eq!(
        mask(&to_a),
        "v=0\r\n\
o=pbx 55 56 IN IP4 10.0.0.50\r\n\
s=pbx\r\n\
c=IN IP4 10.0.0.1\r\n\
t=0 0\r\n\
m=audio 40000 RTP/SAVP 0 101\r\n\
a=rtcp-mux\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:KEY\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n"
    );
    assert!(
        !to_a.contains(CALLER_KEY_80),
        "the caller's key never goes back"
    );

    // relayd: o0 decrypts with the caller's key and encrypts with ours; a0 is plain.
    let spec = relay.spec(&call.relay_id).expect("programmed");
    let o0 = &spec.legs[0];
    assert_eq!((o0.id.as_str(), o0.interface.as_str()), ("o0", "internal"));
    assert!(o0.rtcp_mux && o0.strict_source);
    assert_eq!(o0.forward_to.as_deref(), Some("a0"));
    assert_eq!(
        o0.remote,
        Some(Remote {
            address: "192.0.2.10".parse().expect("ip"),
            rtp_port: 10316,
            rtcp_port: None
        })
    );
    let inbound = o0.inbound_crypto.as_ref().expect("inbound");
    assert_eq!(inbound.suite, "AES_CM_128_HMAC_SHA1_80");
    assert_eq!(inbound.keys[0].key, CALLER_KEY_80);
    let ours = to_a
        .split("inline:")
        .nth(1)
        .and_then(|t| t.split("\r\n").next())
        .expect("our key");
    assert_eq!(
        o0.outbound_crypto.as_ref().expect("outbound").keys[0].key,
        ours
    );
    let a0 = &spec.legs[1];
    assert_eq!((a0.id.as_str(), a0.interface.as_str()), ("a0", "default"));
    assert!(a0.inbound_crypto.is_none() && a0.outbound_crypto.is_none());
    assert_eq!(
        a0.remote,
        Some(Remote {
            address: "10.0.0.50".parse().expect("ip"),
            rtp_port: 18000,
            rtcp_port: Some(18001)
        })
    );
}

#[test]
fn plain_offer_with_transport_rtp_savp_offers_keys_and_takes_the_answered_one() {
    let relay = FakeRelay::default();
    let mut call = new_call(None);
    let options = with_transport(TransportProtocol::RtpSavp);
    let to_b = offer(&mut call, &relay, Side::A, ASTERISK_PLAIN, &options);
    assert!(
        to_b.contains("m=audio 40002 RTP/SAVP 8 0 101\r\n"),
        "{to_b}"
    );
    let crypto: Vec<&str> = to_b
        .lines()
        .filter(|l| l.starts_with("a=crypto:"))
        .collect();
    assert_eq!(crypto.len(), 6, "one line per default suite: {to_b}");
    assert!(crypto[0].starts_with("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"));
    assert!(to_b.contains("a=rtcp:40003\r\n"), "{to_b}");
    assert!(!to_b.contains("a=rtcp-mux"));

    let callee = PBX_ANSWER.replace("RTP/AVP", "RTP/SAVP").replace(
        "a=rtcp:18001\r\n",
        &format!("a=rtcp:18001\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{CALLEE_KEY}\r\n"),
    );
    let to_a = answer(&mut call, &relay, Side::B, &callee, &Options::default());
    assert!(to_a.contains("m=audio 40000 RTP/AVP 0 101\r\n"), "{to_a}");
    assert!(to_a.contains("a=rtcp:40001\r\n"), "{to_a}");
    assert!(!to_a.contains("a=crypto"), "{to_a}");
    let spec = relay.spec(&call.relay_id).expect("programmed");
    let a0 = &spec.legs[1];
    assert_eq!(
        a0.inbound_crypto.as_ref().expect("in").keys[0].key,
        CALLEE_KEY
    );
    let offered_tag_1 = crypto[0].split("inline:").nth(1).expect("key");
    assert_eq!(
        a0.outbound_crypto.as_ref().expect("out").keys[0].key,
        offered_tag_1
    );
    assert!(spec.legs[0].inbound_crypto.is_none());
}

#[test]
fn srtp_offer_without_transport_option_is_rekeyed_towards_the_answerer() {
    let relay = FakeRelay::default();
    let mut call = new_call(None);
    let to_b = offer(
        &mut call,
        &relay,
        Side::A,
        BARESIP_SRTP,
        &Options::default(),
    );
    assert!(to_b.contains("RTP/SAVP"));
    assert!(!to_b.contains(CALLER_KEY_80) && !to_b.contains("u2Yx6ouT9"));
    assert_eq!(to_b.matches("a=crypto:").count(), 6);
}

#[test]
fn sdes_options_shape_our_offer() {
    let relay = FakeRelay::default();
    let mut call = new_call(None);
    let options = Options {
        transport: Some(TransportOverride::Profile(TransportProtocol::RtpSavp)),
        sdes: SdesOptions {
            only: vec![SuiteName::Known(Suite::AesCm128HmacSha1_32)],
            lifetime: true,
            unencrypted_srtcp: Some(true),
            ..SdesOptions::default()
        },
        ..Options::default()
    };
    let to_b = offer(&mut call, &relay, Side::A, ASTERISK_PLAIN, &options);
    let crypto: Vec<&str> = to_b
        .lines()
        .filter(|l| l.starts_with("a=crypto:"))
        .collect();
    assert_eq!(crypto.len(), 1, "{to_b}");
    assert!(crypto[0].starts_with("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:"));
    assert!(
        crypto[0].ends_with("|2^31 UNENCRYPTED_SRTCP"),
        "{}",
        crypto[0]
    );

    let mut call = new_call(None);
    let options = Options {
        transport: Some(TransportOverride::Profile(TransportProtocol::RtpSavp)),
        sdes: SdesOptions {
            exclude: vec![
                SuiteName::Known(Suite::AesCm128HmacSha1_80),
                SuiteName::Other("NULL_HMAC_SHA1_32".to_owned()),
            ],
            order: vec![SuiteName::Known(Suite::AeadAes256Gcm)],
            ..SdesOptions::default()
        },
        ..Options::default()
    };
    let to_b = offer(&mut call, &relay, Side::A, ASTERISK_PLAIN, &options);
    let suites: Vec<&str> = to_b
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    assert_eq!(
        suites,
        [
            "AEAD_AES_256_GCM",
            "AES_CM_128_HMAC_SHA1_32",
            "AEAD_AES_128_GCM",
            "AES_256_CM_HMAC_SHA1_80",
            "AES_256_CM_HMAC_SHA1_32"
        ]
    );

    // nonew: only what the caller offered (SHA1_32 and SHA1_80).
    let mut call = new_call(None);
    let options = Options {
        sdes: SdesOptions {
            nonew: true,
            ..SdesOptions::default()
        },
        ..Options::default()
    };
    let to_b = offer(&mut call, &relay, Side::A, BARESIP_SRTP, &options);
    assert_eq!(to_b.matches("a=crypto:").count(), 2, "{to_b}");

    // Nothing left to offer, or SAVP with SDES off: precise errors.
    let mut call = new_call(None);
    let options = Options {
        transport: Some(TransportOverride::Profile(TransportProtocol::RtpSavp)),
        sdes: SdesOptions {
            only: vec![SuiteName::Other("NULL_HMAC_SHA1_80".to_owned())],
            ..SdesOptions::default()
        },
        ..Options::default()
    };
    assert_eq!(
        plan_offer(&mut call, Side::A, ASTERISK_PLAIN, &options, &policy(None)),
        Err(CallError::NoSuiteLeft)
    );
    let options = Options {
        sdes: SdesOptions {
            off: true,
            ..SdesOptions::default()
        },
        ..Options::default()
    };
    assert_eq!(
        plan_offer(&mut call, Side::A, BARESIP_SRTP, &options, &policy(None))
            .map_err(|e| e.to_string()),
        Err("transport-protocol RTP/SAVP needs SDES keys, but SDES is off".to_owned())
    );
}

#[test]
fn rtcp_mux_options_decide_each_leg() {
    let relay = FakeRelay::default();
    // demux: the caller's mux is accepted, not offered on.
    let mut call = new_call(None);
    let mut options = Options::default();
    options.rtcp_mux.demux = true;
    let to_b = offer(&mut call, &relay, Side::A, BARESIP_SRTP, &options);
    assert!(!to_b.contains("a=rtcp-mux"), "{to_b}");
    assert!(to_b.contains("a=rtcp:40003\r\n"), "{to_b}");
    let spec = call.session_spec(60).expect("spec");
    assert_eq!(
        (spec.legs[0].rtcp_mux, spec.legs[1].rtcp_mux),
        (true, false)
    );

    // require on a plain offer without mux: mux only, no a=rtcp.
    let mut call = new_call(None);
    let mut options = Options::default();
    options.rtcp_mux.require = true;
    let to_b = offer(&mut call, &relay, Side::A, ASTERISK_PLAIN, &options);
    assert!(
        to_b.contains("a=rtcp-mux\r\n") && !to_b.contains("a=rtcp:"),
        "{to_b}"
    );

    // reject: neither side muxes.
    let mut call = new_call(None);
    let mut options = with_transport(TransportProtocol::RtpAvp);
    options.rtcp_mux.reject = true;
    offer(&mut call, &relay, Side::A, BARESIP_SRTP, &options);
    options.transport = None;
    let spec = call.session_spec(60).expect("spec");
    assert_eq!(
        (spec.legs[0].rtcp_mux, spec.legs[1].rtcp_mux),
        (false, false)
    );
    let to_a = answer(&mut call, &relay, Side::B, PBX_ANSWER, &options);
    assert!(
        !to_a.contains("a=rtcp-mux") && to_a.contains("a=rtcp:"),
        "{to_a}"
    );
}

#[test]
fn replace_options_rewrite_origin_session_name_and_version() {
    let relay = FakeRelay::default();
    let mut call = new_call(None);
    let options = Options {
        replace: Replace {
            origin: true,
            session_name: true,
            sdp_version: true,
            ..Replace::default()
        },
        ..Options::default()
    };
    let first = offer(&mut call, &relay, Side::A, ASTERISK_PLAIN, &options);
    assert!(
        first.contains("o=- 1681921427 1 IN IP4 203.0.113.1\r\n"),
        "{first}"
    );
    assert!(first.contains("s=Asterisk\r\n"));
    // Same offer again: same SDP, same version.
    let again = offer(&mut call, &relay, Side::A, ASTERISK_PLAIN, &options);
    assert_eq!(again, first);
    // A changed offer with another session name: version 2, first session name kept.
    let changed = ASTERISK_PLAIN
        .replace("s=Asterisk", "s=Other")
        .replace("a=ptime:20", "a=ptime:30");
    let second = offer(&mut call, &relay, Side::A, &changed, &options);
    assert!(
        second.contains("o=- 1681921427 2 IN IP4 203.0.113.1\r\n"),
        "{second}"
    );
    assert!(
        second.contains("s=Asterisk\r\n") && second.contains("a=ptime:30"),
        "{second}"
    );

    let full = Options {
        replace: Replace {
            origin_full: true,
            ..Replace::default()
        },
        ..Options::default()
    };
    let mut call = new_call(None);
    let out = offer(&mut call, &relay, Side::A, ASTERISK_PLAIN, &full);
    let origin = out.lines().find(|l| l.starts_with("o=")).expect("o=");
    assert!(
        origin.starts_with("o=- ") && origin.ends_with(" 1 IN IP4 203.0.113.1"),
        "{origin}"
    );
    assert!(!origin.contains("1681921427"));
}

#[test]
fn rtcp_attribute_flags_and_zero_address() {
    let relay = FakeRelay::default();
    let mut call = new_call(None);
    let options = Options {
        no_rtcp_attribute: true,
        ..Options::default()
    };
    let out = offer(&mut call, &relay, Side::A, ASTERISK_PLAIN, &options);
    assert!(!out.contains("a=rtcp"), "{out}");
    let mut call = new_call(None);
    let options = Options {
        full_rtcp_attribute: true,
        ..Options::default()
    };
    let out = offer(&mut call, &relay, Side::A, ASTERISK_PLAIN, &options);
    assert!(out.contains("a=rtcp:40003 IN IP4 203.0.113.1\r\n"), "{out}");

    let held = ASTERISK_PLAIN.replace("c=IN IP4 203.0.113.5", "c=IN IP4 0.0.0.0");
    let mut call = new_call(None);
    let out = offer(&mut call, &relay, Side::A, &held, &Options::default());
    assert!(out.contains("c=IN IP4 0.0.0.0\r\n"), "hold survives: {out}");
    let mut call = new_call(None);
    let options = Options {
        replace: Replace {
            zero_address: true,
            ..Replace::default()
        },
        ..Options::default()
    };
    let out = offer(&mut call, &relay, Side::A, &held, &options);
    assert!(out.contains("c=IN IP4 203.0.113.1\r\n"), "{out}");
}

#[test]
fn address_options_choose_the_peer_address_and_latching() {
    let relay = FakeRelay::default();
    let mut call = new_call(None);
    let options = Options {
        address_source: AddressSource::SipSource,
        received_from: Some("198.51.100.77".parse().expect("ip")),
        ..Options::default()
    };
    offer(&mut call, &relay, Side::A, ASTERISK_PLAIN, &options);
    let remote = call.media[0].side(Side::A).remote.expect("remote");
    assert_eq!(
        (
            remote.address.to_string(),
            remote.rtp_port,
            remote.rtcp_port
        ),
        ("198.51.100.77".to_owned(), 14068, Some(14069))
    );
    let mut call = new_call(None);
    let options = Options {
        media_address: Some("192.0.2.99".parse().expect("ip")),
        asymmetric: true,
        strict_source: Some(false),
        ..Options::default()
    };
    offer(&mut call, &relay, Side::A, ASTERISK_PLAIN, &options);
    let spec = call.session_spec(60).expect("spec");
    let o0 = &spec.legs[0];
    assert_eq!(
        o0.remote.map(|r| r.address.to_string()).as_deref(),
        Some("192.0.2.99")
    );
    assert_eq!(o0.latch, LatchMode::Fixed);
    assert!(!o0.strict_source);
    // The answerer still latches.
    assert_eq!(spec.legs[1].latch, LatchMode::Learn);

    let held = ASTERISK_PLAIN.replace("c=IN IP4 203.0.113.5", "c=IN IP4 0.0.0.0");
    let mut call = new_call(None);
    let options = Options {
        asymmetric: true,
        ..Options::default()
    };
    assert_eq!(
        plan_offer(&mut call, Side::A, &held, &options, &policy(None)),
        Err(CallError::FixedWithoutAddress { media: 0 })
    );
}

#[test]
fn address_family_must_match_the_interface() {
    let relay = FakeRelay::default();
    let mut call = new_call(None);
    let options = Options {
        address_family: Some(crate::sdp::AddrType::Ip6),
        ..Options::default()
    };
    plan_offer(&mut call, Side::A, ASTERISK_PLAIN, &options, &policy(None)).expect("offer");
    let view = relay
        .put(&call.relay_id, &call.session_spec(60).expect("spec"))
        .expect("relay");
    assert_eq!(
        render_for(&mut call, Side::B, Rendering::Offer, &view, &options)
            .map_err(|e| e.to_string()),
        Err("address-family IP6 asked but the relay interface 'default' is IP4".to_owned())
    );
}

#[test]
fn answers_must_match_the_offer() {
    let relay = FakeRelay::default();
    let mut call = new_call(None);
    offer(
        &mut call,
        &relay,
        Side::A,
        ASTERISK_PLAIN,
        &Options::default(),
    );
    let two = format!("{PBX_ANSWER}m=video 0 RTP/AVP 31\r\n");
    assert_eq!(
        plan_answer(&mut call, Side::B, &two, &Options::default()),
        Err(CallError::MediaCountMismatch {
            offered: 1,
            answered: 2
        })
    );
    assert_eq!(
        call.answer_offerer("nobody"),
        Err(CallError::UnknownTag {
            tag: "nobody".to_owned()
        })
    );
    set_tag(&mut call, Side::B, "to-b");
    assert_eq!(
        call.answer_offerer("to-b"),
        Err(CallError::NoOffer {
            from_tag: "to-b".to_owned()
        })
    );
    assert_eq!(call.answer_offerer("from-a"), Ok(Side::A));
    let options = with_transport(TransportProtocol::RtpSavp);
    assert_eq!(
        plan_answer(&mut call, Side::B, PBX_ANSWER, &options),
        Err(CallError::AnswerTransport {
            asked: TransportProtocol::RtpSavp,
            negotiated: TransportProtocol::RtpAvp
        })
    );
}

#[test]
fn a_reinvite_from_the_callee_keeps_keys_and_ports() {
    let relay = FakeRelay::default();
    let mut call = new_call(None);
    let options = with_transport(TransportProtocol::RtpAvp);
    offer(&mut call, &relay, Side::A, BARESIP_SRTP, &options);
    let first = answer(&mut call, &relay, Side::B, PBX_ANSWER, &Options::default());
    // The callee re-offers (hold): its from-tag is B's.
    assert_eq!(call.offer_side("to-b"), Ok(Side::B));
    let hold = PBX_ANSWER.replace("a=rtcp:18001\r\n", "a=rtcp:18001\r\na=sendonly\r\n");
    let to_a = offer(&mut call, &relay, Side::B, &hold, &options_for_caller());
    // Our key towards the caller is kept (no re-key on hold), the port too.
    let key = |sdp: &str| {
        sdp.split("inline:")
            .nth(1)
            .and_then(|t| t.split(['\r', '|']).next())
            .map(str::to_owned)
    };
    assert!(to_a.contains("m=audio 40000 RTP/SAVP"), "{to_a}");
    assert!(to_a.contains("a=sendonly"));
    assert_eq!(key(&to_a), key(&first));
}

/// Towards the caller the profile is SAVP (it offered SAVP).
fn options_for_caller() -> Options {
    with_transport(TransportProtocol::RtpSavp)
}

#[test]
fn statistics_have_rtpengines_shape() {
    let relay = FakeRelay::default();
    let mut call = new_call(None);
    call.side_mut(Side::A).label = Some("caller".to_owned());
    offer(
        &mut call,
        &relay,
        Side::A,
        ASTERISK_PLAIN,
        &Options::default(),
    );
    answer(&mut call, &relay, Side::B, PBX_ANSWER, &Options::default());
    relay.set_counters(LegCounters {
        packets_in: 50,
        bytes_in: 8600,
        packets_out: 49,
        bytes_out: 8428,
        auth_failures: 1,
        replays: 2,
    });
    let view = relay.current(&call.relay_id).expect("programmed");
    let stats = Value::dict(call_stats(&call, Some(&view)));
    let totals = stats
        .get("totals")
        .and_then(|t| t.get("RTP"))
        .expect("totals");
    assert_eq!(totals.get("packets"), Some(&Value::Int(100)));
    assert_eq!(totals.get("bytes"), Some(&Value::Int(17200)));
    assert_eq!(totals.get("errors"), Some(&Value::Int(6)));
    assert_eq!(stats.get("created"), Some(&Value::Int(1_700_000_000)));
    let tags = stats.get("tags").expect("tags");
    let a = tags.get("from-a").expect("tag a");
    assert_eq!(a.get("label").and_then(Value::as_str), Some("caller"));
    assert_eq!(
        a.get("in dialogue with").and_then(Value::as_str),
        Some("to-b")
    );
    let Some(Value::List(medias)) = a.get("medias") else {
        panic!("medias")
    };
    assert_eq!(medias[0].get("index"), Some(&Value::Int(1)));
    assert_eq!(medias[0].get("type").and_then(Value::as_str), Some("audio"));
    assert_eq!(
        medias[0].get("protocol").and_then(Value::as_str),
        Some("RTP/AVP")
    );
    let Some(Value::List(streams)) = medias[0].get("streams") else {
        panic!("streams")
    };
    // Not muxed: an RTP and an RTCP stream.
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[0].get("local port"), Some(&Value::Int(40000)));
    assert_eq!(streams[1].get("local port"), Some(&Value::Int(40001)));
    let endpoint = streams[0].get("endpoint").expect("endpoint");
    assert_eq!(endpoint.get("family").and_then(Value::as_str), Some("IPv4"));
    assert_eq!(
        endpoint.get("address").and_then(Value::as_str),
        Some("203.0.113.5")
    );
    assert_eq!(endpoint.get("port"), Some(&Value::Int(14068)));
    let stats0 = streams[0].get("stats").expect("stats");
    assert_eq!(stats0.get("packets"), Some(&Value::Int(50)));
    assert!(tags.get("to-b").is_some());
}

#[test]
fn session_ids_are_relay_safe_and_stable() {
    let id = relay_session_id("a84b4c76e66710@pc33.atlanta.example.com");
    assert_eq!(id.len(), 43);
    assert!(id.starts_with("ng-"));
    assert!(id[3..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        id,
        relay_session_id("a84b4c76e66710@pc33.atlanta.example.com")
    );
    assert_ne!(id, relay_session_id("other"));
}

#[test]
fn too_many_or_no_active_media_are_refused() {
    let mut call = new_call(None);
    let none = ASTERISK_PLAIN.replace("m=audio 14068", "m=audio 0");
    assert_eq!(
        plan_offer(
            &mut call,
            Side::A,
            &none,
            &Options::default(),
            &policy(None)
        ),
        Err(CallError::NoActiveMedia)
    );
    let five = format!("{ASTERISK_PLAIN}{}", "m=audio 5000 RTP/AVP 0\r\n".repeat(4));
    assert_eq!(
        plan_offer(
            &mut call,
            Side::A,
            &five,
            &Options::default(),
            &policy(None)
        ),
        Err(CallError::TooManyMedia { count: 5 })
    );
}
