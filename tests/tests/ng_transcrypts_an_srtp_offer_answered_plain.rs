//! Over the NG protocol alone (as Kamailio's or OpenSIPS's rtpengine module would send it), an
//! SRTP offer (`RTP/SAVP`, SDES key) asked to be presented as `transport-protocol=RTP/AVP` is
//! answered plain, and sip-controller has relayd transcrypt:
//!
//! ```text
//!  A (SRTP, libsrtp) ── SRTP ──▶ relayd ── RTP ──▶ B (plain)
//!                    ◀── SRTP ──        ◀── RTP ──
//! ```
//!
//! B is offered plain RTP without keys; A is answered `RTP/SAVP` with a key of the relay's own.
//! A's packets, protected by libsrtp (pylibsrtp) with A's key, reach B as the original plain
//! RTP; B's plain packets reach A as SRTP that libsrtp authenticates and decrypts with the
//! answered key. The `delete` reply then counts each leg's packets in rtpengine's shape, and
//! relayd keeps no session.
//!
//! The same call runs twice: with a separate relayd programmed over HTTP (`[relay] mode =
//! "http"`), and with the relay inside sip-controller (`mode = "embedded"`), whose relayd API
//! the test reads the sessions from.

use std::{net::SocketAddr, path::PathBuf};

use serde_json::{json, Value as Json};
use tests::{
    loadgen::{
        bencode::Value as Bencode,
        ng::{self, NgClient},
    },
    pylibsrtp::{self, Mode},
    relayd,
    sipctl::{
        audio_sdp, crypto_line, embedded_relay_section, eventually, free_port, http_relay_section,
        media_socket, receive, relay_session_ids, rtp_packet, AudioSection, InProcessRelay,
        NgController, Scratch, WAIT,
    },
};

const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";
const PACKETS: u8 = 20;
/// relayd's media ports (below the ephemeral range, apart from every other test's): the
/// separate relayd's, the embedded relay's.
const RELAYD_PORTS: (u16, u16) = (24_200, 24_299);
const EMBEDDED_PORTS: (u16, u16) = (24_300, 24_399);

/// A bencode reply as JSON (strings lossily as text), for assertions by path.
fn to_json(value: &Bencode<'_>) -> Json {
    match value {
        Bencode::Int(n) => json!(n),
        Bencode::Bytes(bytes) => Json::String(String::from_utf8_lossy(bytes).into_owned()),
        Bencode::List(items) => Json::Array(items.iter().map(to_json).collect()),
        Bencode::Dict(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), to_json(v)))
                .collect(),
        ),
    }
}

#[test]
fn an_srtp_offer_answered_plain_is_transcrypted_by_relayd() {
    const TEST: &str = "an_srtp_offer_answered_plain_is_transcrypted_by_relayd";
    let Some(python) = pylibsrtp::python(TEST) else {
        return;
    };
    let scratch = Scratch::new(TEST);
    let relay = InProcessRelay::start(
        relayd::config(RELAYD_PORTS.0, RELAYD_PORTS.1),
        ([127, 0, 0, 1], 0).into(),
    );
    let controller = NgController::start(&scratch.path, &http_relay_section(relay.addr));
    transcrypted_call(&python, &controller, RELAYD_PORTS, &|| relay.session_ids());
}

#[test]
fn the_embedded_relay_transcrypts_the_same_call() {
    const TEST: &str = "the_embedded_relay_transcrypts_the_same_call";
    let Some(python) = pylibsrtp::python(TEST) else {
        return;
    };
    let scratch = Scratch::new(TEST);
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let controller = NgController::start(
        &scratch.path,
        &embedded_relay_section(&scratch.path, api, EMBEDDED_PORTS),
    );
    let session_ids = || relay_session_ids(api);
    transcrypted_call(&python, &controller, EMBEDDED_PORTS, &session_ids);
}

#[allow(
    clippy::too_many_lines,
    reason = "one call: offer, answer, media both ways, delete"
)]
fn transcrypted_call(
    python: &PathBuf,
    controller: &NgController,
    ports: (u16, u16),
    session_ids: &dyn Fn() -> Vec<String>,
) {
    let mut client = NgClient::connect(controller.ng, 0x75c).expect("NG client");

    let a_rtp = media_socket([127, 0, 0, 1]);
    let b_rtp = media_socket([127, 0, 0, 1]);
    let a_key: Vec<u8> = (0u8..30).map(|i| i.wrapping_mul(7) ^ 0x5a).collect();
    let (call_id, from_tag, to_tag) = ("transcrypt-1@test", "a-tag-1", "b-tag-1");

    // ---- offer: A's SRTP, presented to B as plain RTP.
    let a_sdp = audio_sdp(
        a_rtp.local_addr().expect("addr"),
        "RTP/SAVP",
        &[crypto_line(1, SUITE, &a_key)],
    );
    let to_b = client
        .request(
            &ng::offer(call_id, from_tag, &a_sdp, "RTP/AVP"),
            ng::reply_sdp,
        )
        .expect("offer");
    let to_b_audio = AudioSection::parse(&to_b);
    assert_eq!(
        to_b_audio.proto, "RTP/AVP",
        "B is offered plain RTP:\n{to_b}"
    );
    assert!(to_b_audio.cryptos.is_empty(), "no key toward B:\n{to_b}");
    assert_eq!(to_b_audio.address, a_rtp.local_addr().expect("addr").ip());
    assert!(
        (ports.0..=ports.1).contains(&to_b_audio.port),
        "B is offered a relayd port:\n{to_b}"
    );
    assert_eq!(session_ids().len(), 1, "the offer opened a relayd session");

    // ---- answer: B's plain RTP, answered to A as SRTP with the relay's own key.
    let b_sdp = audio_sdp(b_rtp.local_addr().expect("addr"), "RTP/AVP", &[]);
    let to_a = client
        .request(
            &ng::answer(call_id, from_tag, to_tag, &b_sdp, "RTP/SAVP"),
            ng::reply_sdp,
        )
        .expect("answer");
    let to_a_audio = AudioSection::parse(&to_a);
    assert_eq!(to_a_audio.proto, "RTP/SAVP", "A is answered SRTP:\n{to_a}");
    assert!(
        (ports.0..=ports.1).contains(&to_a_audio.port) && to_a_audio.port != to_b_audio.port,
        "A is answered another relayd port:\n{to_a}"
    );
    assert_eq!(to_a_audio.cryptos.len(), 1, "one answered key:\n{to_a}");
    assert!(
        to_a_audio.cryptos[0].starts_with(&format!("1 {SUITE} inline:")),
        "the answer accepts A's tag 1 and suite:\n{to_a}"
    );
    let relay_key = to_a_audio.key_for(SUITE).expect("the answered key");
    assert_eq!(relay_key.len(), 30);
    assert_ne!(relay_key, a_key, "the relay answers with a key of its own");

    // ---- A -> B: SRTP in, plain RTP out.
    let from_a: Vec<Vec<u8>> = (0..PACKETS)
        .map(|i| rtp_packet(8, 0x00a1_1ce5, 100 + u16::from(i), &[i; 160]))
        .collect();
    let protected: Vec<Vec<u8>> = pylibsrtp::run(python, SUITE, &a_key, Mode::ProtectRtp, &from_a)
        .into_iter()
        .map(|r| r.expect("libsrtp protects"))
        .collect();
    for packet in &protected {
        a_rtp.send_to(packet, to_a_audio.rtp()).expect("send SRTP");
    }
    let at_b = receive(&b_rtp, from_a.len());
    assert_eq!(at_b, from_a, "B gets A's packets as the original plain RTP");

    // ---- B -> A: plain RTP in, SRTP out.
    let from_b: Vec<Vec<u8>> = (0..PACKETS)
        .map(|i| rtp_packet(8, 0x0000_0b0b, 9000 + u16::from(i), &[0xa5 ^ i; 160]))
        .collect();
    for packet in &from_b {
        b_rtp.send_to(packet, to_b_audio.rtp()).expect("send RTP");
    }
    let at_a = receive(&a_rtp, from_b.len());
    assert_eq!(at_a.len(), from_b.len(), "SRTP reaches A");
    assert!(
        at_a.iter().all(|p| p.len() == 172 + 10),
        "each packet carries an 80-bit tag"
    );
    let decrypted: Vec<Vec<u8>> =
        pylibsrtp::run(python, SUITE, &relay_key, Mode::UnprotectRtp, &at_a)
            .into_iter()
            .map(|r| r.expect("libsrtp authenticates the relay's SRTP with the answered key"))
            .collect();
    assert_eq!(decrypted, from_b, "A decrypts B's packets");

    // ---- delete: per-leg packet counts in rtpengine's shape.
    let deleted = client
        .request(&ng::delete(call_id, from_tag), |reply| Ok(to_json(reply)))
        .expect("delete");
    let packets = i64::from(PACKETS);
    let stream = |tag: &str| &deleted["tags"][tag]["medias"][0]["streams"][0];
    assert_eq!(
        stream(from_tag)["stats"]["packets"],
        packets,
        "A's leg counts A's packets: {deleted:#}"
    );
    assert_eq!(
        stream(to_tag)["stats"]["packets"],
        packets,
        "B's leg counts B's packets: {deleted:#}"
    );
    for tag in [from_tag, to_tag] {
        assert_eq!(stream(tag)["stats"]["errors"], 0, "{deleted:#}");
        assert_eq!(
            stream(tag)["stats"]["bytes"],
            // RTP 172 bytes each; A's arrive with the 10-byte tag.
            if tag == from_tag {
                packets * 182
            } else {
                packets * 172
            },
            "{deleted:#}"
        );
    }
    assert_eq!(
        stream(from_tag)["crypto suite"],
        SUITE,
        "A's leg is SRTP: {deleted:#}"
    );
    assert!(
        stream(to_tag).get("crypto suite").is_none(),
        "B's leg is plain: {deleted:#}"
    );
    assert_eq!(
        deleted["tags"][from_tag]["medias"][0]["protocol"], "RTP/SAVP",
        "{deleted:#}"
    );
    assert_eq!(
        deleted["tags"][to_tag]["medias"][0]["protocol"], "RTP/AVP",
        "{deleted:#}"
    );
    assert_eq!(
        deleted["totals"]["RTP"]["packets"],
        2 * packets,
        "{deleted:#}"
    );
    assert!(
        eventually(WAIT, || session_ids().is_empty()),
        "relayd keeps no session after the delete: {:?}",
        session_ids()
    );
}
