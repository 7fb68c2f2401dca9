//! A phone on 127.0.0.3 registers over TLS with digest authentication (it is outside
//! `allow_unauthenticated_from`): the first REGISTER is challenged (401, SHA-256 and MD5), a
//! wrong password is refused, the right one binds. Then `SIPp` calls the phone's AOR over UDP and
//! the controller delivers the INVITE over the phone's own TLS connection (RFC 5626 flow: same
//! connection id, nothing new dialled), the phone answers, `SIPp` hangs up, and the CDR shows a
//! UDP caller leg and a TLS callee leg.

use std::time::Duration;

use sip_controller::auth::digest::{Algorithm, ClientCredentials};
use tests::{
    relayd,
    sipctl::{
        audio_sdp, crypto_line, free_port, have_sipp, media_socket, request, response, token,
        AudioSection, Controller, InProcessRelay, Scratch, SipMessage, Sipp, TlsPeer, WAIT,
    },
};

const PASSWORD: &str = "wonderland-31415";

/// The parameters of a `Digest` challenge.
fn challenge_params(value: &str) -> Vec<(String, String)> {
    let rest = value.strip_prefix("Digest ").expect("a Digest challenge");
    rest.split(',')
        .filter_map(|p| p.trim().split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            )
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params.iter().find(|(k, _)| k == name).map_or_else(
        || panic!("challenge without {name}: {params:?}"),
        |(_, v)| v.as_str(),
    )
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "registration then one call, in order"
)]
fn a_digest_registered_tls_phone_is_called_over_its_own_connection() {
    if !have_sipp("a_digest_registered_tls_phone_is_called_over_its_own_connection") {
        return;
    }
    let scratch = Scratch::new("register-tls");
    let relay = InProcessRelay::start(relayd::config(27_500, 27_599), ([127, 0, 0, 1], 0).into());
    let controller = Controller::start(
        &scratch.path,
        relay.addr,
        &format!(
            "[registrar]\nallow_unauthenticated_from = [\"127.0.0.1/32\"]\n\n\
             [[registrar.users]]\nusername = \"alice\"\npassword = \"{PASSWORD}\"\n"
        ),
    );
    let mut phone = TlsPeer::start([127, 0, 0, 3], &scratch.path.join("phone-tls"));
    let phone_rtp = media_socket([127, 0, 0, 3]);
    let listen = phone.listen;
    let contact = format!("<sips:alice@{listen}>");
    let call_id = format!("{}@phone", token());
    let from = format!("<sip:alice@127.0.0.1>;tag={}", token());
    let register = |cseq: u32, authorization: Option<String>| {
        let mut headers = vec![
            (
                "Via",
                format!("SIP/2.0/TLS {listen};branch=z9hG4bK{};rport", token()),
            ),
            ("Max-Forwards", "70".to_owned()),
            ("From", from.clone()),
            ("To", "<sip:alice@127.0.0.1>".to_owned()),
            ("Call-ID", call_id.clone()),
            ("CSeq", format!("{cseq} REGISTER")),
            ("Contact", contact.clone()),
            ("Expires", "600".to_owned()),
        ];
        if let Some(authorization) = authorization {
            headers.push(("Authorization", authorization));
        }
        request("REGISTER", "sip:127.0.0.1", &headers, None)
    };
    let final_to =
        |phone: &mut TlsPeer, cseq: &str| -> (SipMessage, sip_controller::transport::Inbound) {
            phone
                .recv_where(WAIT, |m| {
                    m.status().is_some_and(|s| s >= 200) && m.header("CSeq") == Some(cseq)
                })
                .unwrap_or_else(|| panic!("no answer to {cseq}"))
        };

    // ---- 401 with a challenge per algorithm, SHA-256 first (RFC 8760 §2.4).
    let first = phone.send(controller.tls, &register(1, None));
    let connection = first.connection.expect("a TLS connection");
    let (challenge, _) = final_to(&mut phone, "1 REGISTER");
    assert_eq!(challenge.status(), Some(401), "{challenge}");
    // Each challenge is its own header field (their parameters contain commas).
    let offers: Vec<&str> = challenge
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(offers.len(), 2, "{challenge}");
    let sha = challenge_params(offers[0]);
    assert_eq!(param(&sha, "algorithm"), "SHA-256", "{challenge}");
    assert_eq!(
        param(&challenge_params(offers[1]), "algorithm"),
        "MD5",
        "{challenge}"
    );
    assert_eq!(param(&sha, "realm"), "sip-controller");
    assert_eq!(param(&sha, "qop"), "auth");

    let authorization = |password: &str, nc: &str| {
        let cnonce = token();
        let credentials = ClientCredentials {
            algorithm: Algorithm::Sha256,
            username: "alice",
            realm: param(&sha, "realm"),
            password,
            method: "REGISTER",
            digest_uri: "sip:127.0.0.1",
            nonce: param(&sha, "nonce"),
            nc,
            cnonce: &cnonce,
        };
        format!(
            "Digest username=\"alice\", realm=\"{}\", nonce=\"{}\", uri=\"sip:127.0.0.1\", \
             response=\"{}\", algorithm=SHA-256, cnonce=\"{cnonce}\", opaque=\"{}\", qop=auth, nc={nc}",
            param(&sha, "realm"),
            param(&sha, "nonce"),
            credentials.response(),
            param(&sha, "opaque"),
        )
    };

    // ---- A wrong password binds nothing.
    phone.send(
        controller.tls,
        &register(2, Some(authorization("not-the-password", "00000001"))),
    );
    let (refused, _) = final_to(&mut phone, "2 REGISTER");
    assert!(
        matches!(refused.status(), Some(401 | 403)),
        "a wrong password is refused: {refused}"
    );

    // ---- The right one binds the contact for its expiry.
    let sent = phone.send(
        controller.tls,
        &register(3, Some(authorization(PASSWORD, "00000002"))),
    );
    assert_eq!(
        sent.connection,
        Some(connection),
        "one connection for the whole session"
    );
    let (ok, _) = final_to(&mut phone, "3 REGISTER");
    assert_eq!(ok.status(), Some(200), "{ok}");
    let bound = ok.header("Contact").expect("the 200 lists the binding");
    assert!(
        bound.contains(&format!("sips:alice@{}", phone.listen)),
        "{ok}"
    );
    assert!(bound.contains("expires=600"), "{ok}");

    // ---- SIPp (UDP, from an allowed source) calls alice's AOR.
    let mut uac = Sipp::start(
        &scratch.path,
        "uac",
        &[
            "-sn",
            "uac",
            &controller.udp.to_string(),
            "-s",
            "alice",
            "-m",
            "1",
            "-d",
            "300",
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
            "-timeout",
            "30s",
            "-timeout_error",
        ]
        .map(str::to_owned),
    );
    let (invite, invite_in) = phone
        .recv_where(WAIT, |m| m.method() == Some("INVITE"))
        .unwrap_or_else(|| panic!("the phone got no INVITE:\n{}", uac.output()));
    assert_eq!(
        invite_in.connection,
        Some(connection),
        "the INVITE comes over the phone's registered connection"
    );
    assert_eq!(
        invite.request_uri(),
        Some(format!("sips:alice@{}", phone.listen).as_str()),
        "the Request-URI is the registered contact"
    );
    assert!(
        invite.header("Via").unwrap().starts_with("SIP/2.0/TLS "),
        "{invite}"
    );
    let offer = AudioSection::parse(&invite.body_text());
    assert_ne!(offer.port, 0, "{invite}");
    // Endpoints get optional SRTP: RTP/AVP with keys (RFC 4568 §7 best effort). The phone
    // accepts the first offered suite with a key of its own.
    assert!(
        !offer.cryptos.is_empty(),
        "keys are offered to the endpoint: {invite}"
    );
    assert!(
        offer.cryptos[0].starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "the configured suite order: {invite}"
    );
    let key: Vec<u8> = (0..30u8).map(|i| i ^ 0x5c).collect();
    let crypto = vec![crypto_line(1, "AES_CM_128_HMAC_SHA1_80", &key)];
    let answer = audio_sdp(phone_rtp.local_addr().unwrap(), &offer.proto, &crypto);
    let phone_tag = token();
    let contact_header = vec![("Contact", contact.clone())];
    phone.reply(
        &invite_in,
        &response(&invite, 180, "Ringing", &phone_tag, &contact_header, None),
    );
    phone.reply(
        &invite_in,
        &response(
            &invite,
            200,
            "OK",
            &phone_tag,
            &contact_header,
            Some(&answer),
        ),
    );
    let (_, ack_in) = phone
        .recv_where(WAIT, |m| m.method() == Some("ACK"))
        .expect("the 200 is ACKed");
    assert_eq!(
        ack_in.connection,
        Some(connection),
        "in-dialog requests use the same flow"
    );
    let (bye, bye_in) = phone
        .recv_where(Duration::from_secs(15), |m| m.method() == Some("BYE"))
        .unwrap_or_else(|| panic!("SIPp's BYE reaches the phone:\n{}", uac.output()));
    assert_eq!(bye_in.connection, Some(connection));
    phone.reply(&bye_in, &response(&bye, 200, "OK", &phone_tag, &[], None));
    let status = uac.wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "SIPp's call succeeded ({status}):\n{}",
        uac.output()
    );

    // ---- The verdict.
    let cdrs = controller.wait_for_cdrs(1);
    let cdr = &cdrs[0];
    assert_eq!(cdr["status"], 200, "{cdr}");
    assert_eq!(cdr["route"], "registered-users", "{cdr}");
    assert_eq!(cdr["end_reason"], "bye_caller", "{cdr}");
    let caller = &cdr["legs"][0];
    let callee = &cdr["legs"][1];
    assert_eq!(caller["signalling"]["transport"], "udp", "{cdr}");
    assert_eq!(callee["peer"], "endpoint:sip:alice@127.0.0.1", "{cdr}");
    assert_eq!(callee["signalling"]["transport"], "tls", "{cdr}");
    assert_eq!(
        callee["signalling"]["remote"],
        // The controller's view of the phone: our end of the TLS connection.
        invite_in.local.to_string().as_str(),
        "{cdr}"
    );
    assert!(callee["signalling"]["tls_version"].is_string(), "{cdr}");
    assert_eq!(
        callee["media"]["inbound_suite"], "AES_CM_128_HMAC_SHA1_80",
        "{cdr}"
    );
    assert_eq!(
        callee["media"]["outbound_suite"], "AES_CM_128_HMAC_SHA1_80",
        "{cdr}"
    );
    assert_eq!(
        callee["secure"], true,
        "TLS + SRTP makes the phone's leg secure: {cdr}"
    );
    assert_eq!(caller["secure"], false, "{cdr}");
    assert_eq!(
        cdr["secure_end_to_end"], false,
        "the SIPp leg is UDP: {cdr}"
    );
    assert!(
        tests::sipctl::eventually(WAIT, || relay.session_ids().is_empty()),
        "no relay session left: {:?}",
        relay.session_ids()
    );
}
