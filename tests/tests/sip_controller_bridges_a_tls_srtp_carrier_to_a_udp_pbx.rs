//! A carrier calls over TLS with SDES-SRTP (RTP/SAVP, `AES_CM_128_HMAC_SHA1_80`); sip-controller
//! bridges the call to a PBX over UDP with plain RTP/AVP and programs relayd to translate.
//!
//! The carrier is sip-controller's transport layer as a TLS client on 127.0.0.2, the PBX a UDP
//! socket on 127.0.0.1; libsrtp (pylibsrtp) protects what the carrier sends with the key it
//! offered and checks what it receives with the key the controller answered. Afterwards the
//! CDR line and `GET /v1/calls/{id}` must tell the truth about each leg, and relayd must have
//! no session left.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test payloads derive bytes from sequence numbers"
)]

use std::net::SocketAddr;

use serde_json::Value;
use tests::{
    pylibsrtp::{self, Mode},
    relayd,
    sipctl::{
        audio_sdp, crypto_line, eventually, free_port, media_socket, receive, relay_session_ids,
        request, response, rtp_packet, tag_of, token, uri_of, AudioSection, Controller,
        InProcessRelay, Scratch, TlsPeer, UdpPeer, WAIT,
    },
};

const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";
const PACKETS: u16 = 20;

fn assert_caller_leg_is_tls_srtp(leg: &Value, what: &str) {
    assert_eq!(leg["role"], "caller", "{what}: {leg}");
    assert_eq!(leg["peer"], "carrier", "{what}: {leg}");
    let signalling = &leg["signalling"];
    assert_eq!(signalling["transport"], "tls", "{what}: {leg}");
    assert!(
        signalling["tls_version"]
            .as_str()
            .is_some_and(|v| v.contains("TLS")),
        "{what}: the caller leg names its TLS version: {leg}"
    );
    assert!(
        signalling["tls_cipher_suite"]
            .as_str()
            .is_some_and(|s| s.starts_with("TLS")),
        "{what}: the caller leg names its cipher suite: {leg}"
    );
    assert_eq!(leg["media"]["inbound_suite"], SUITE, "{what}: {leg}");
    assert_eq!(leg["media"]["outbound_suite"], SUITE, "{what}: {leg}");
    assert_eq!(leg["secure"], true, "{what}: {leg}");
}

fn assert_callee_leg_is_udp_plain(leg: &Value, what: &str) {
    assert_eq!(leg["role"], "callee", "{what}: {leg}");
    assert_eq!(leg["peer"], "pbx", "{what}: {leg}");
    assert_eq!(leg["signalling"]["transport"], "udp", "{what}: {leg}");
    assert!(
        leg["signalling"].get("tls_version").is_none(),
        "{what}: {leg}"
    );
    assert!(leg["media"]["inbound_suite"].is_null(), "{what}: {leg}");
    assert!(leg["media"]["outbound_suite"].is_null(), "{what}: {leg}");
    assert_eq!(leg["secure"], false, "{what}: {leg}");
}

#[test]
fn tls_srtp_carrier_reaches_a_udp_pbx_with_media_both_ways() {
    carrier_call_to_the_pbx(
        "tls_srtp_carrier_reaches_a_udp_pbx_with_media_both_ways",
        false,
    );
}

/// The same call with the relay inside sip-controller (`[relay] mode = "embedded"`).
#[test]
fn the_same_call_with_the_relay_embedded_in_the_controller() {
    carrier_call_to_the_pbx(
        "the_same_call_with_the_relay_embedded_in_the_controller",
        true,
    );
}

#[allow(
    clippy::too_many_lines,
    reason = "one call from INVITE to CDR, in order"
)]
fn carrier_call_to_the_pbx(test: &str, embedded: bool) {
    let Some(python) = pylibsrtp::python(test) else {
        return;
    };
    let scratch = Scratch::new(test);
    let pbx = UdpPeer::bind([127, 0, 0, 1]);
    let trunks = format!(
        "[[trunks]]\nname = \"carrier\"\nuri = \"sips:127.0.0.2:5061\"\n\
         allow_from = [\"127.0.0.2/32\"]\nsrtp = \"mandatory\"\n\n\
         [[trunks]]\nname = \"pbx\"\nuri = \"sip:{}\"\nsrtp = \"off\"\n\n\
         [[routes]]\nname = \"carrier-in\"\nfrom = \"carrier\"\nto = \"pbx\"\n",
        pbx.addr()
    );
    // A separate relay programmed over HTTP, or the controller's own (its API read directly).
    let separate = (!embedded)
        .then(|| InProcessRelay::start(relayd::config(27_000, 27_099), ([127, 0, 0, 1], 0).into()));
    let embedded_api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let controller = match &separate {
        Some(relay) => Controller::start(&scratch.path, relay.addr, &trunks),
        None => Controller::start_embedded(&scratch.path, embedded_api, (27_800, 27_899), &trunks),
    };
    let session_ids = || match &separate {
        Some(relay) => relay.session_ids(),
        None => relay_session_ids(embedded_api),
    };
    let mut carrier = TlsPeer::start([127, 0, 0, 2], &scratch.path.join("carrier-tls"));
    let carrier_rtp = media_socket([127, 0, 0, 2]);
    let pbx_rtp = media_socket([127, 0, 0, 1]);

    // ---- INVITE: carrier --TLS, RTP/SAVP--> controller --UDP, RTP/AVP--> PBX.
    let offered_key: Vec<u8> = (0..30u8)
        .map(|i| i.wrapping_mul(13).wrapping_add(5))
        .collect();
    let offer = audio_sdp(
        carrier_rtp.local_addr().unwrap(),
        "RTP/SAVP",
        &[crypto_line(1, SUITE, &offered_key)],
    );
    let call_id = format!("{}@carrier.example", token());
    let from_tag = token();
    let from = format!("<sips:+15559870000@carrier.example>;tag={from_tag}");
    let contact = format!("<sips:carrier@{}>", carrier.listen);
    let invite = request(
        "INVITE",
        &format!("sips:+15551230000@{}", controller.tls),
        &[
            (
                "Via",
                format!(
                    "SIP/2.0/TLS {};branch=z9hG4bK{};rport",
                    carrier.listen,
                    token()
                ),
            ),
            ("Max-Forwards", "70".to_owned()),
            ("From", from.clone()),
            ("To", "<sips:+15551230000@127.0.0.1>".to_owned()),
            ("Call-ID", call_id.clone()),
            ("CSeq", "1 INVITE".to_owned()),
            ("Contact", contact.clone()),
        ],
        Some(("application/sdp", offer.as_bytes())),
    );
    let sent = carrier.send(controller.tls, &invite);
    assert!(sent.tls.is_some(), "the carrier's INVITE went over TLS");

    let (pbx_invite, invite_from) = pbx
        .recv_where(WAIT, |m| m.method() == Some("INVITE"))
        .unwrap_or_else(|| panic!("the PBX got no INVITE:\n{}", controller.log()));
    assert_eq!(invite_from.ip(), controller.udp.ip());
    let uri = pbx_invite.request_uri().unwrap();
    assert!(
        uri.starts_with("sip:+15551230000@127.0.0.1"),
        "Request-URI towards the PBX: {uri}"
    );
    assert!(
        pbx_invite
            .header("Via")
            .unwrap()
            .starts_with("SIP/2.0/UDP "),
        "{pbx_invite}"
    );
    assert_ne!(
        pbx_invite.header("Call-ID"),
        Some(call_id.as_str()),
        "a B2BUA has its own Call-ID"
    );
    let pbx_offer = AudioSection::parse(&pbx_invite.body_text());
    assert_eq!(
        pbx_offer.proto, "RTP/AVP",
        "plain towards the PBX:\n{pbx_invite}"
    );
    assert!(
        pbx_offer.cryptos.is_empty(),
        "no keys towards an srtp=off trunk:\n{pbx_invite}"
    );
    assert_eq!(pbx_offer.address, std::net::IpAddr::from([127, 0, 0, 1]));
    assert_ne!(pbx_offer.port, 0);
    assert_eq!(pbx_offer.formats, vec!["0", "101"], "formats carried over");

    let pbx_tag = token();
    let pbx_answer = audio_sdp(pbx_rtp.local_addr().unwrap(), "RTP/AVP", &[]);
    let pbx_contact = vec![("Contact", format!("<sip:pbx@{}>", pbx.addr()))];
    pbx.send(
        invite_from,
        &response(&pbx_invite, 180, "Ringing", &pbx_tag, &pbx_contact, None),
    );
    pbx.send(
        invite_from,
        &response(
            &pbx_invite,
            200,
            "OK",
            &pbx_tag,
            &pbx_contact,
            Some(&pbx_answer),
        ),
    );
    let (ack, _) = pbx
        .recv_where(WAIT, |m| m.method() == Some("ACK"))
        .expect("the controller ACKs the PBX's 200");
    assert_eq!(ack.header("CSeq"), Some("1 ACK"));
    assert_eq!(
        tag_of(ack.header("To").unwrap()).as_deref(),
        Some(pbx_tag.as_str())
    );

    // The carrier sees the ringing and then the answer with the relay's SRTP key.
    let mut statuses = Vec::new();
    let (ok, ok_inbound) = carrier
        .recv_where(WAIT, |m| {
            if let Some(status) = m.status() {
                if status < 200 {
                    statuses.push(status);
                }
                return status >= 200;
            }
            false
        })
        .unwrap_or_else(|| panic!("no final response to the carrier:\n{}", controller.log()));
    assert_eq!(ok.status(), Some(200), "{ok}");
    assert!(
        statuses.contains(&180),
        "the PBX's 180 reached the carrier: {statuses:?}"
    );
    assert_eq!(
        ok_inbound.connection, sent.connection,
        "answered on the INVITE's connection"
    );
    assert_eq!(ok.header("Call-ID"), Some(call_id.as_str()));
    let carrier_to_tag = tag_of(ok.header("To").unwrap()).expect("the 200 has a To tag");
    let answer = AudioSection::parse(&ok.body_text());
    assert_eq!(answer.proto, "RTP/SAVP", "{ok}");
    assert_eq!(
        answer.cryptos.len(),
        1,
        "one crypto line answers one offered: {ok}"
    );
    assert!(
        answer.cryptos[0].starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{ok}"
    );
    let answer_key = answer.key_for(SUITE).expect("the answer's key");
    assert_eq!(answer_key.len(), 30);
    assert_ne!(answer_key, offered_key, "the relay sends with its own key");
    assert_eq!(answer.address, std::net::IpAddr::from([127, 0, 0, 1]));
    assert_ne!(answer.port, 0);
    let target = ok.contact_uri().expect("the 200 has a Contact");
    assert!(
        target.starts_with("sips:"),
        "a TLS leg's Contact is sips: {target}"
    );

    let to = format!("<sips:+15551230000@127.0.0.1>;tag={carrier_to_tag}");
    let in_dialog = |method: &str, cseq: u32| {
        request(
            method,
            &target,
            &[
                (
                    "Via",
                    format!(
                        "SIP/2.0/TLS {};branch=z9hG4bK{};rport",
                        carrier.listen,
                        token()
                    ),
                ),
                ("Max-Forwards", "70".to_owned()),
                ("From", from.clone()),
                ("To", to.clone()),
                ("Call-ID", call_id.clone()),
                ("CSeq", format!("{cseq} {method}")),
            ],
            None,
        )
    };
    carrier.send(controller.tls, &in_dialog("ACK", 1));

    // ---- Media: SRTP from the carrier arrives at the PBX as plain RTP, and back.
    let plain: Vec<Vec<u8>> = (0..PACKETS)
        .map(|i| rtp_packet(0, 0x00ca_11e5, 1000 + i, &[i as u8; 160]))
        .collect();
    let protected: Vec<Vec<u8>> =
        pylibsrtp::run(&python, SUITE, &offered_key, Mode::ProtectRtp, &plain)
            .into_iter()
            .map(Result::unwrap)
            .collect();
    for packet in &protected {
        carrier_rtp.send_to(packet, answer.rtp()).unwrap();
    }
    let at_pbx = receive(&pbx_rtp, plain.len());
    assert_eq!(
        at_pbx, plain,
        "the PBX gets the carrier's payloads as plain RTP"
    );

    let plain_back: Vec<Vec<u8>> = (0..PACKETS)
        .map(|i| rtp_packet(0, 0x0000_0b0b, 7000 + i, &[0xa5 ^ i as u8; 160]))
        .collect();
    for packet in &plain_back {
        pbx_rtp.send_to(packet, pbx_offer.rtp()).unwrap();
    }
    let at_carrier = receive(&carrier_rtp, plain_back.len());
    assert_eq!(
        at_carrier.len(),
        plain_back.len(),
        "SRTP reaches the carrier"
    );
    assert!(
        at_carrier.iter().all(|p| p.len() == 172 + 10),
        "80-bit tags"
    );
    let decrypted: Vec<Vec<u8>> =
        pylibsrtp::run(&python, SUITE, &answer_key, Mode::UnprotectRtp, &at_carrier)
            .into_iter()
            .map(|r| r.expect("libsrtp authenticates the relay's SRTP with the answered key"))
            .collect();
    assert_eq!(decrypted, plain_back);

    // While the call is up, the API shows it with its legs.
    let (status, calls) = controller.api_get("/v1/calls");
    assert_eq!(status, 200);
    let live = calls
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["sip_call_id"] == call_id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("the call is listed: {calls}"));
    assert_eq!(live["state"], "confirmed", "{live}");
    let id = live["id"].as_str().unwrap().to_owned();
    assert_eq!(session_ids(), vec![id.clone()], "the call's relay session");

    // ---- BYE from the carrier; the controller ends the PBX leg too.
    carrier.send(controller.tls, &in_dialog("BYE", 2));
    let (bye_ok, _) = carrier
        .recv_where(WAIT, |m| m.header("CSeq") == Some("2 BYE"))
        .expect("the BYE is answered");
    assert_eq!(bye_ok.status(), Some(200), "{bye_ok}");
    let (pbx_bye, bye_from) = pbx
        .recv_where(WAIT, |m| m.method() == Some("BYE"))
        .expect("the PBX gets a BYE");
    assert_eq!(
        uri_of(&format!("<{}>", pbx_bye.request_uri().unwrap())),
        format!("sip:pbx@{}", pbx.addr())
    );
    pbx.send(
        bye_from,
        &response(&pbx_bye, 200, "OK", &pbx_tag, &[], None),
    );

    // ---- The verdict: CDR line and API agree.
    let cdrs = controller.wait_for_cdrs(1);
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    let cdr = &cdrs[0];
    let (status, api) = controller.api_get(&format!("/v1/calls/{id}"));
    assert_eq!(status, 200, "{api}");
    for (what, record) in [("CDR", cdr), ("GET /v1/calls/{id}", &api)] {
        assert_eq!(record["id"], id.as_str(), "{what}: {record}");
        assert_eq!(record["sip_call_id"], call_id.as_str(), "{what}");
        assert_eq!(record["route"], "carrier-in", "{what}");
        assert_eq!(record["state"], "terminated", "{what}: {record}");
        assert_eq!(record["status"], 200, "{what}");
        assert_eq!(record["end_reason"], "bye_caller", "{what}: {record}");
        assert!(record["answered_unix_ms"].as_u64().is_some(), "{what}");
        let legs = record["legs"].as_array().unwrap();
        assert_eq!(legs.len(), 2, "{what}: {record}");
        assert_caller_leg_is_tls_srtp(&legs[0], what);
        assert_callee_leg_is_udp_plain(&legs[1], what);
        assert_eq!(
            record["secure_end_to_end"], false,
            "{what}: the PBX leg is plain"
        );
        for leg in legs {
            let media = &leg["media"];
            assert!(
                media["packets_in"].as_u64().unwrap() >= u64::from(PACKETS),
                "{what}: {leg}"
            );
            assert!(
                media["packets_out"].as_u64().unwrap() >= u64::from(PACKETS),
                "{what}: {leg}"
            );
            assert_eq!(media["auth_failures"], 0, "{what}: {leg}");
        }
    }
    assert_eq!(api, *cdr, "the API shows what the CDR recorded");
    assert!(
        eventually(WAIT, || session_ids().is_empty()),
        "relayd keeps no session after the call: {:?}",
        session_ids()
    );

    // Mid-call, the caller leg already had its TLS facts (the INVITE came over TLS).
    assert_caller_leg_is_tls_srtp(&live["legs"][0], "live call");
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one call from INVITE to CDR, in order"
)]
fn the_pbx_hangs_up_and_the_carrier_gets_the_bye_over_its_tls_connection() {
    let scratch = Scratch::new("bridges-pbx-bye");
    let relay = InProcessRelay::start(relayd::config(27_600, 27_699), ([127, 0, 0, 1], 0).into());
    let pbx = UdpPeer::bind([127, 0, 0, 1]);
    let controller = Controller::start(
        &scratch.path,
        relay.addr,
        &format!(
            "[[trunks]]\nname = \"carrier\"\nuri = \"sips:127.0.0.2:5061\"\n\
             allow_from = [\"127.0.0.2/32\"]\nsrtp = \"mandatory\"\n\n\
             [[trunks]]\nname = \"pbx\"\nuri = \"sip:{}\"\nsrtp = \"off\"\n\n\
             [[routes]]\nname = \"carrier-in\"\nfrom = \"carrier\"\nto = \"pbx\"\n",
            pbx.addr()
        ),
    );
    let mut carrier = TlsPeer::start([127, 0, 0, 2], &scratch.path.join("carrier-tls"));
    let (carrier_rtp, pbx_rtp) = (media_socket([127, 0, 0, 2]), media_socket([127, 0, 0, 1]));
    let key: Vec<u8> = (0..30u8).collect();
    let offer = audio_sdp(
        carrier_rtp.local_addr().unwrap(),
        "RTP/SAVP",
        &[crypto_line(1, SUITE, &key)],
    );
    let call_id = format!("{}@carrier.example", token());
    let from = format!("<sips:+15559870000@carrier.example>;tag={}", token());
    let listen = carrier.listen;
    let via = || format!("SIP/2.0/TLS {listen};branch=z9hG4bK{};rport", token());
    let invite = request(
        "INVITE",
        &format!("sips:+15551230000@{}", controller.tls),
        &[
            ("Via", via()),
            ("Max-Forwards", "70".to_owned()),
            ("From", from.clone()),
            ("To", "<sips:+15551230000@127.0.0.1>".to_owned()),
            ("Call-ID", call_id.clone()),
            ("CSeq", "1 INVITE".to_owned()),
            ("Contact", format!("<sips:carrier@{}>", carrier.listen)),
        ],
        Some(("application/sdp", offer.as_bytes())),
    );
    let sent = carrier.send(controller.tls, &invite);
    let (pbx_invite, invite_from) = pbx
        .recv_where(WAIT, |m| m.method() == Some("INVITE"))
        .unwrap_or_else(|| panic!("the PBX got no INVITE:\n{}", controller.log()));
    let pbx_tag = token();
    let answer = audio_sdp(pbx_rtp.local_addr().unwrap(), "RTP/AVP", &[]);
    pbx.send(
        invite_from,
        &response(
            &pbx_invite,
            200,
            "OK",
            &pbx_tag,
            &[("Contact", format!("<sip:pbx@{}>", pbx.addr()))],
            Some(&answer),
        ),
    );
    let (ok, _) = carrier
        .recv_where(WAIT, |m| m.status().is_some_and(|s| s >= 200))
        .expect("the carrier's INVITE is answered");
    assert_eq!(ok.status(), Some(200), "{ok}");
    let ack = request(
        "ACK",
        &ok.contact_uri().unwrap(),
        &[
            ("Via", via()),
            ("Max-Forwards", "70".to_owned()),
            ("From", from.clone()),
            ("To", ok.header("To").unwrap().to_owned()),
            ("Call-ID", call_id.clone()),
            ("CSeq", "1 ACK".to_owned()),
        ],
        None,
    );
    carrier.send(controller.tls, &ack);
    pbx.recv_where(WAIT, |m| m.method() == Some("ACK"))
        .expect("the PBX's 200 is ACKed");

    // ---- The PBX hangs up: its BYE goes to the controller's Contact.
    let controller_contact = pbx_invite.contact_uri().expect("the INVITE has a Contact");
    let pbx_to = format!("{};tag={pbx_tag}", pbx_invite.header("To").unwrap());
    let bye = request(
        "BYE",
        &controller_contact,
        &[
            (
                "Via",
                format!("SIP/2.0/UDP {};branch=z9hG4bK{};rport", pbx.addr(), token()),
            ),
            ("Max-Forwards", "70".to_owned()),
            ("From", pbx_to),
            ("To", pbx_invite.header("From").unwrap().to_owned()),
            ("Call-ID", pbx_invite.header("Call-ID").unwrap().to_owned()),
            ("CSeq", "1 BYE".to_owned()),
        ],
        None,
    );
    pbx.send(invite_from, &bye);
    let (bye_ok, _) = pbx
        .recv_where(WAIT, |m| m.header("CSeq") == Some("1 BYE"))
        .expect("the PBX's BYE is answered");
    assert_eq!(bye_ok.status(), Some(200), "{bye_ok}");

    // The carrier gets the BYE over the connection its INVITE came on (it listens too, but
    // a carrier behind NAT could not be reached there).
    let (carrier_bye, bye_in) = carrier
        .recv_where(WAIT, |m| m.method() == Some("BYE"))
        .unwrap_or_else(|| panic!("the carrier gets a BYE:\n{}", controller.log()));
    assert_eq!(
        bye_in.connection, sent.connection,
        "over the caller's TLS flow"
    );
    assert_eq!(carrier_bye.header("Call-ID"), Some(call_id.as_str()));
    assert_eq!(
        carrier_bye.request_uri(),
        Some(format!("sips:carrier@{}", carrier.listen).as_str()),
        "to the carrier's Contact"
    );
    assert_eq!(
        tag_of(carrier_bye.header("To").unwrap()),
        tag_of(&from),
        "the carrier's dialog: its From tag is now the To tag"
    );
    carrier.reply(
        &bye_in,
        &response(&carrier_bye, 200, "OK", "unused", &[], None),
    );

    let cdrs = controller.wait_for_cdrs(1);
    assert_eq!(cdrs[0]["end_reason"], "bye_callee", "{}", cdrs[0]);
    assert_eq!(cdrs[0]["status"], 200, "{}", cdrs[0]);
    assert!(
        eventually(WAIT, || relay.session_ids().is_empty()),
        "relayd keeps no session after the call: {:?}",
        relay.session_ids()
    );
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one cancelled call from INVITE to CDR, in order"
)]
fn a_carrier_cancel_while_ringing_cancels_the_pbx_leg() {
    let scratch = Scratch::new("bridges-cancel");
    let relay = InProcessRelay::start(relayd::config(27_700, 27_799), ([127, 0, 0, 1], 0).into());
    let pbx = UdpPeer::bind([127, 0, 0, 1]);
    let controller = Controller::start(
        &scratch.path,
        relay.addr,
        &format!(
            "[[trunks]]\nname = \"carrier\"\nuri = \"sips:127.0.0.2:5061\"\n\
             allow_from = [\"127.0.0.2/32\"]\nsrtp = \"mandatory\"\n\n\
             [[trunks]]\nname = \"pbx\"\nuri = \"sip:{}\"\nsrtp = \"off\"\n\n\
             [[routes]]\nname = \"carrier-in\"\nfrom = \"carrier\"\nto = \"pbx\"\n",
            pbx.addr()
        ),
    );
    let mut carrier = TlsPeer::start([127, 0, 0, 2], &scratch.path.join("carrier-tls"));
    let carrier_rtp = media_socket([127, 0, 0, 2]);
    let key: Vec<u8> = (0..30u8).rev().collect();
    let offer = audio_sdp(
        carrier_rtp.local_addr().unwrap(),
        "RTP/SAVP",
        &[crypto_line(1, SUITE, &key)],
    );
    let via = format!(
        "SIP/2.0/TLS {};branch=z9hG4bK{};rport",
        carrier.listen,
        token()
    );
    let uri = format!("sips:+15551230000@{}", controller.tls);
    let dialog = |method: &str, to: &str| {
        vec![
            ("Via", via.clone()),
            ("Max-Forwards", "70".to_owned()),
            (
                "From",
                "<sips:+15559870000@carrier.example>;tag=c4nc3l".to_owned(),
            ),
            ("To", to.to_owned()),
            ("Call-ID", "cancel-1@carrier.example".to_owned()),
            ("CSeq", format!("1 {method}")),
        ]
    };
    let mut headers = dialog("INVITE", "<sips:+15551230000@127.0.0.1>");
    headers.push(("Contact", format!("<sips:carrier@{}>", carrier.listen)));
    carrier.send(
        controller.tls,
        &request(
            "INVITE",
            &uri,
            &headers,
            Some(("application/sdp", offer.as_bytes())),
        ),
    );
    let (pbx_invite, invite_from) = pbx
        .recv_where(WAIT, |m| m.method() == Some("INVITE"))
        .unwrap_or_else(|| panic!("the PBX got no INVITE:\n{}", controller.log()));
    let pbx_tag = token();
    pbx.send(
        invite_from,
        &response(&pbx_invite, 180, "Ringing", &pbx_tag, &[], None),
    );
    carrier
        .recv_where(WAIT, |m| m.status() == Some(180))
        .expect("the carrier hears ringing");

    // ---- CANCEL (RFC 3261 §9.1: same Request-URI, Via, From, To, Call-ID; CSeq CANCEL).
    carrier.send(
        controller.tls,
        &request(
            "CANCEL",
            &uri,
            &dialog("CANCEL", "<sips:+15551230000@127.0.0.1>"),
            None,
        ),
    );
    let mut cancel_ok = None;
    let (terminated, _) = carrier
        .recv_where(WAIT, |m| {
            if m.header("CSeq") == Some("1 CANCEL") {
                cancel_ok = m.status();
            }
            m.header("CSeq") == Some("1 INVITE") && m.status().is_some_and(|s| s >= 200)
        })
        .expect("the INVITE is ended");
    assert_eq!(cancel_ok, Some(200), "the CANCEL is answered 200");
    assert_eq!(terminated.status(), Some(487), "{terminated}");
    carrier.send(
        controller.tls,
        &request(
            "ACK",
            &uri,
            &dialog("ACK", terminated.header("To").unwrap()),
            None,
        ),
    );

    // The PBX's INVITE is cancelled the same way.
    let (pbx_cancel, cancel_from) = pbx
        .recv_where(WAIT, |m| m.method() == Some("CANCEL"))
        .unwrap_or_else(|| panic!("the PBX gets a CANCEL:\n{}", controller.log()));
    assert_eq!(
        pbx_cancel.header("Via"),
        pbx_invite.header("Via"),
        "the CANCEL matches the INVITE's transaction"
    );
    assert_eq!(pbx_cancel.request_uri(), pbx_invite.request_uri());
    pbx.send(
        cancel_from,
        &response(&pbx_cancel, 200, "OK", &pbx_tag, &[], None),
    );
    pbx.send(
        invite_from,
        &response(&pbx_invite, 487, "Request Terminated", &pbx_tag, &[], None),
    );
    let (pbx_ack, _) = pbx
        .recv_where(WAIT, |m| m.method() == Some("ACK"))
        .expect("the controller ACKs the 487");
    assert_eq!(
        pbx_ack.header("Via"),
        pbx_invite.header("Via"),
        "hop-by-hop ACK (§17.1.1.3)"
    );

    let cdrs = controller.wait_for_cdrs(1);
    assert_eq!(cdrs[0]["status"], 487, "{}", cdrs[0]);
    assert_eq!(cdrs[0]["end_reason"], "cancel", "{}", cdrs[0]);
    assert!(cdrs[0]["answered_unix_ms"].is_null(), "{}", cdrs[0]);
    assert!(
        eventually(WAIT, || relay.session_ids().is_empty()),
        "relayd keeps no session after a cancelled call: {:?}",
        relay.session_ids()
    );
}
