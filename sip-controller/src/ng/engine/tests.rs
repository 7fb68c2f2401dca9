use std::net::Ipv4Addr;

use super::*;
use crate::{
    ng::testing::{FakeRelay, Recorded},
    relay_client::LegCounters,
    sdp::tests::{ASTERISK_PLAIN, BARESIP_SRTP},
};

const KAMAILIO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

const PBX_ANSWER: &str = "v=0\r\n\
o=pbx 55 56 IN IP4 10.0.0.50\r\n\
s=pbx\r\n\
c=IN IP4 10.0.0.50\r\n\
t=0 0\r\n\
m=audio 18000 RTP/AVP 0 101\r\n\
a=rtcp:18001\r\n";

fn engine(config: EngineConfig) -> Engine<FakeRelay> {
    Engine::new(FakeRelay::default(), config)
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix: 1_700_000_000,
    }
}

fn request(command: &str, entries: Vec<(&'static str, Value<'static>)>) -> Value<'static> {
    let mut all = vec![("command", Value::string(command))];
    all.extend(entries);
    Value::dict(all)
}

fn s(text: &str) -> Value<'static> {
    Value::string(text)
}

fn result<'v>(reply: &'v Value<'_>) -> &'v str {
    reply.get("result").and_then(Value::as_str).unwrap_or("")
}

fn reason<'v>(reply: &'v Value<'_>) -> &'v str {
    reply
        .get("error-reason")
        .and_then(Value::as_str)
        .unwrap_or("")
}

async fn offer(
    engine: &Engine<FakeRelay>,
    call: &str,
    extra: Vec<(&'static str, Value<'static>)>,
) -> Value<'static> {
    let mut entries = vec![
        ("call-id", s(call)),
        ("from-tag", s("ft")),
        ("sdp", s(BARESIP_SRTP)),
        // The SRTP caller is bridged to a plain callee (the design's call).
        ("transport-protocol", s("RTP/AVP")),
    ];
    entries.extend(extra);
    engine
        .handle(&request("offer", entries), KAMAILIO, now())
        .await
}

async fn answer(engine: &Engine<FakeRelay>, call: &str) -> Value<'static> {
    let reply = engine
        .handle(
            &request(
                "answer",
                vec![
                    ("call-id", s(call)),
                    ("from-tag", s("ft")),
                    ("to-tag", s("tt")),
                    ("sdp", s(PBX_ANSWER)),
                ],
            ),
            KAMAILIO,
            now(),
        )
        .await;
    assert!(
        matches!(result(&reply), "ok") || reason(&reply) == "Unknown call-id",
        "{reply:?}"
    );
    reply
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let engine = engine(EngineConfig::default());
    let reply = engine
        .handle(&request("ping", vec![]), KAMAILIO, now())
        .await;
    assert_eq!(reply, Value::dict([("result", Value::str("pong"))]));
}

#[tokio::test]
async fn offer_answer_delete_program_and_release_the_relay() {
    let engine = engine(EngineConfig {
        delete_delay_secs: 0,
        ..EngineConfig::default()
    });
    let reply = offer(&engine, "call-1", vec![("ICE", s("remove"))]).await;
    assert_eq!(result(&reply), "ok", "{reply:?}");
    let sdp = reply.get("sdp").and_then(Value::as_str).expect("sdp");
    assert!(
        sdp.contains("m=audio 40002 RTP/AVP") && !sdp.contains("a=crypto"),
        "{sdp}"
    );
    assert_eq!(reply.get("warning"), None);

    let reply = answer(&engine, "call-1").await;
    assert_eq!(result(&reply), "ok", "{reply:?}");
    let sdp = reply.get("sdp").and_then(Value::as_str).expect("sdp");
    assert!(
        sdp.contains("m=audio 40000 RTP/SAVP") && sdp.contains("a=crypto:2 "),
        "{sdp}"
    );

    // The 200 OK after a 183 repeats the answer: same ports, same key.
    let again = answer(&engine, "call-1").await;
    assert_eq!(again.get("sdp"), reply.get("sdp"));

    let relay_id = crate::ng::session::relay_session_id("call-1");
    assert_eq!(engine.relay().session_count(), 1);
    let reply = engine
        .handle(
            &request(
                "delete",
                vec![("call-id", s("call-1")), ("from-tag", s("ft"))],
            ),
            KAMAILIO,
            now(),
        )
        .await;
    assert_eq!(result(&reply), "ok", "{reply:?}");
    assert!(reply.get("totals").is_some() && reply.get("tags").is_some());
    assert_eq!(engine.relay().session_count(), 0);
    assert_eq!(engine.call_count(), 0);
    assert_eq!(
        engine.relay().requests().last(),
        Some(&Recorded::Delete(relay_id))
    );
}

#[tokio::test]
async fn delete_delay_keeps_the_call_until_the_sweep() {
    let engine = engine(EngineConfig::default());
    offer(&engine, "call-2", vec![]).await;
    answer(&engine, "call-2").await;
    let t0 = now();
    let reply = engine
        .handle(
            &request(
                "delete",
                vec![("call-id", s("call-2")), ("delete-delay", Value::Int(5))],
            ),
            KAMAILIO,
            t0,
        )
        .await;
    assert_eq!(result(&reply), "ok");
    assert_eq!(engine.call_count(), 1);
    assert_eq!(engine.sweep(t0).await, 0);
    let later = Now {
        instant: t0.instant + Duration::from_secs(5),
        unix: t0.unix + 5,
    };
    assert_eq!(engine.sweep(later).await, 1);
    assert_eq!(
        (engine.call_count(), engine.relay().session_count()),
        (0, 0)
    );
}

#[tokio::test]
async fn unknown_calls_warn_on_delete_and_fail_on_query() {
    let engine = engine(EngineConfig::default());
    let reply = engine
        .handle(
            &request("delete", vec![("call-id", s("nope"))]),
            KAMAILIO,
            now(),
        )
        .await;
    assert_eq!(result(&reply), "ok");
    assert_eq!(
        reply.get("warning").and_then(Value::as_str),
        Some("Call-ID not found or tags didn't match")
    );
    let reply = engine
        .handle(
            &request(
                "delete",
                vec![
                    ("call-id", s("nope")),
                    ("flags", Value::List(vec![s("fatal")])),
                ],
            ),
            KAMAILIO,
            now(),
        )
        .await;
    assert_eq!(
        (result(&reply), reason(&reply)),
        ("error", "Call-ID not found or tags didn't match")
    );
    let reply = engine
        .handle(
            &request("query", vec![("call-id", s("nope"))]),
            KAMAILIO,
            now(),
        )
        .await;
    assert_eq!(
        (result(&reply), reason(&reply)),
        ("error", "Unknown call-id")
    );
    let reply = answer(&engine, "nope").await;
    assert_eq!(
        (result(&reply), reason(&reply)),
        ("error", "Unknown call-id")
    );
}

#[tokio::test]
async fn query_list_and_statistics_report_calls_and_counters() {
    let engine = engine(EngineConfig::default());
    offer(&engine, "call-b", vec![("label", s("caller"))]).await;
    offer(&engine, "call-a", vec![]).await;
    answer(&engine, "call-a").await;
    engine.relay().set_counters(LegCounters {
        packets_in: 10,
        bytes_in: 1720,
        ..LegCounters::default()
    });
    let reply = engine
        .handle(
            &request("query", vec![("call-id", s("call-a"))]),
            KAMAILIO,
            now(),
        )
        .await;
    assert_eq!(result(&reply), "ok", "{reply:?}");
    let rtp = reply.get("totals").and_then(|t| t.get("RTP")).expect("RTP");
    assert_eq!(rtp.get("packets"), Some(&Value::Int(20)));
    assert!(reply.get("tags").and_then(|t| t.get("tt")).is_some());

    let reply = engine
        .handle(
            &request("list", vec![("limit", Value::Int(1))]),
            KAMAILIO,
            now(),
        )
        .await;
    assert_eq!(reply.get("calls"), Some(&Value::List(vec![s("call-a")])));

    let bad = engine
        .handle(
            &request("offer", vec![("call-id", s("x"))]),
            KAMAILIO,
            now(),
        )
        .await;
    assert_eq!(reason(&bad), "No from-tag in message");
    let reply = engine
        .handle(&request("statistics", vec![]), KAMAILIO, now())
        .await;
    let stats = reply.get("statistics").expect("statistics");
    let current = stats.get("currentstatistics").expect("current");
    assert_eq!(current.get("sessionsown"), Some(&Value::Int(2)));
    let total = stats.get("totalstatistics").expect("total");
    assert_eq!(total.get("managedsessions"), Some(&Value::Int(2)));
    let control = stats.get("controlstatistics").expect("control");
    assert_eq!(control.get("totaloffercount"), Some(&Value::Int(3)));
    assert_eq!(control.get("totalanswercount"), Some(&Value::Int(1)));
    assert_eq!(control.get("totalerrorcount"), Some(&Value::Int(1)));
    let Some(Value::List(proxies)) = control.get("proxies") else {
        panic!("proxies")
    };
    assert_eq!(
        proxies[0].get("proxy").and_then(Value::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(proxies[0].get("querycount"), Some(&Value::Int(1)));
}

#[tokio::test]
async fn refused_options_and_relay_failures_are_precise_errors() {
    let engine = engine(EngineConfig::default());
    let reply = offer(&engine, "call-3", vec![("DTLS", s("passive"))]).await;
    assert_eq!(
        reason(&reply),
        "option 'DTLS=passive' is not supported: DTLS-SRTP is not supported (SDES only)"
    );
    let reply = offer(
        &engine,
        "call-3",
        vec![("direction", Value::List(vec![s("pub"), s("priv")]))],
    )
    .await;
    assert_eq!(reason(&reply), "unknown interface 'pub'");
    let dtls = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                m=audio 4000 UDP/TLS/RTP/SAVPF 111\r\n";
    let reply = engine
        .handle(
            &request(
                "offer",
                vec![
                    ("call-id", s("call-4")),
                    ("from-tag", s("ft")),
                    ("sdp", s(dtls)),
                ],
            ),
            KAMAILIO,
            now(),
        )
        .await;
    assert_eq!(
        reason(&reply),
        "media 0: DTLS-SRTP transport UDP/TLS/RTP/SAVPF is not supported"
    );
    engine.relay().fail_next_put(503, "ports_exhausted");
    let reply = offer(&engine, "call-5", vec![]).await;
    assert_eq!(
        (result(&reply), reason(&reply)),
        ("error", "Ran out of ports")
    );
    // A failed first offer leaves nothing behind.
    assert_eq!(
        (engine.call_count(), engine.relay().session_count()),
        (0, 0)
    );
}

#[tokio::test]
async fn a_failed_reoffer_keeps_the_established_call() {
    let engine = engine(EngineConfig::default());
    offer(&engine, "call-6", vec![]).await;
    let first = answer(&engine, "call-6").await;
    engine.relay().fail_next_put(500, "internal");
    let reply = offer(&engine, "call-6", vec![]).await;
    assert_eq!(result(&reply), "error");
    assert!(reason(&reply).starts_with("relayd: "), "{}", reason(&reply));
    assert_eq!(engine.call_count(), 1);
    // The answer still works against the kept state.
    let again = answer(&engine, "call-6").await;
    assert_eq!(again.get("sdp"), first.get("sdp"));
}

#[tokio::test]
async fn interfaces_map_to_relay_interfaces_and_limits_hold() {
    let mut interfaces = BTreeMap::new();
    interfaces.insert("priv".to_owned(), "internal".to_owned());
    interfaces.insert("pub".to_owned(), "default".to_owned());
    let engine = engine(EngineConfig {
        interfaces,
        max_calls: 1,
        ..EngineConfig::default()
    });
    let reply = offer(
        &engine,
        "call-7",
        vec![("direction", Value::List(vec![s("priv"), s("pub")]))],
    )
    .await;
    assert_eq!(result(&reply), "ok", "{reply:?}");
    let spec = engine
        .relay()
        .spec(&crate::ng::session::relay_session_id("call-7"))
        .expect("spec");
    assert_eq!(spec.legs[0].interface, "internal");
    assert_eq!(spec.legs[1].interface, "default");
    let reply = offer(&engine, "call-8", vec![]).await;
    assert_eq!(reason(&reply), "Parallel session limit reached");
}

#[tokio::test]
async fn ice_in_the_sdp_is_removed_with_a_warning_unless_asked() {
    let engine = engine(EngineConfig::default());
    let with_ice = ASTERISK_PLAIN.replace(
        "a=sendrecv\r\n",
        "a=sendrecv\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghij01\r\n\
         a=candidate:1 1 udp 2130706431 203.0.113.5 14068 typ host\r\n",
    );
    let reply = engine
        .handle(
            &request(
                "offer",
                vec![
                    ("call-id", s("call-9")),
                    ("from-tag", s("ft")),
                    ("sdp", s(&with_ice)),
                    ("flags", Value::List(vec![s("frob")])),
                ],
            ),
            KAMAILIO,
            now(),
        )
        .await;
    assert_eq!(result(&reply), "ok");
    assert!(!reply
        .get("sdp")
        .and_then(Value::as_str)
        .unwrap_or("")
        .contains("ice-"));
    assert_eq!(
        reply.get("warning").and_then(Value::as_str),
        Some("unknown flag 'frob' ignored; ICE attributes were removed: the relay is the media endpoint and runs no ICE")
    );
}

#[tokio::test]
async fn silent_and_unanswered_calls_are_swept() {
    let engine = engine(EngineConfig {
        media_timeout_secs: 10,
        offer_timeout_secs: 20,
        ..EngineConfig::default()
    });
    let t0 = now();
    offer(&engine, "answered", vec![]).await;
    answer(&engine, "answered").await;
    offer(&engine, "unanswered", vec![]).await;
    let at = |secs| Now {
        instant: t0.instant + Duration::from_secs(secs),
        unix: t0.unix + secs,
    };
    // Media flows: nothing to do.
    assert_eq!(engine.sweep(at(11)).await, 0);
    engine.relay().set_timed_out();
    // Checked at most once per media timeout.
    assert_eq!(engine.sweep(at(12)).await, 0);
    assert_eq!(engine.sweep(at(22)).await, 2);
    assert_eq!(engine.call_count(), 0);
}
