//! relayd restarts under a live call (a new process on the same API address: new boot id, no
//! sessions). sip-controller notices the new boot id and programs the call's session again,
//! both legs (`a0` towards the caller, `b0` towards the callee) with the peers' media addresses;
//! the call then ends normally and the new relay is left clean.

use std::{net::IpAddr, time::Duration};

use serde_json::Value;
use tests::{
    relayd,
    sipctl::{
        audio_sdp, eventually, media_socket, request, response, tag_of, token, AudioSection,
        Controller, InProcessRelay, Scratch, UdpPeer, WAIT,
    },
};

fn legs(relay: &InProcessRelay, session: &str) -> Option<Vec<Value>> {
    let (status, view) = relay.json("GET", &format!("/v1/sessions/{session}"));
    (status == 200).then(|| view["legs"].as_array().cloned().unwrap_or_default())
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one call across a relay restart, in order"
)]
fn a_live_call_is_reprogrammed_on_a_restarted_relay() {
    let scratch = Scratch::new("relay-restart");
    let relay = InProcessRelay::start(relayd::config(27_400, 27_499), ([127, 0, 0, 1], 0).into());
    let api = relay.addr;
    let pbx = UdpPeer::bind([127, 0, 0, 1]);
    let controller = Controller::start(
        &scratch.path,
        api,
        &format!(
            "[[trunks]]\nname = \"pbx\"\nuri = \"sip:{}\"\nsrtp = \"off\"\n\n\
             [[routes]]\nname = \"to-pbx\"\nfrom = \"endpoints\"\nto = \"pbx\"\n",
            pbx.addr()
        ),
    );
    // The controller learns the first boot id before the restart.
    std::thread::sleep(Duration::from_millis(500));

    // ---- A call from a phone (UDP, plain) to the PBX.
    let phone = UdpPeer::bind([127, 0, 0, 1]);
    let (phone_rtp, pbx_rtp) = (media_socket([127, 0, 0, 1]), media_socket([127, 0, 0, 1]));
    let call_id = format!("{}@phone", token());
    let from = format!("<sip:alice@127.0.0.1>;tag={}", token());
    let invite = request(
        "INVITE",
        &format!("sip:2000@{}", controller.udp),
        &[
            (
                "Via",
                format!(
                    "SIP/2.0/UDP {};branch=z9hG4bK{};rport",
                    phone.addr(),
                    token()
                ),
            ),
            ("Max-Forwards", "70".to_owned()),
            ("From", from.clone()),
            ("To", "<sip:2000@127.0.0.1>".to_owned()),
            ("Call-ID", call_id.clone()),
            ("CSeq", "1 INVITE".to_owned()),
            ("Contact", format!("<sip:alice@{}>", phone.addr())),
        ],
        Some((
            "application/sdp",
            audio_sdp(phone_rtp.local_addr().unwrap(), "RTP/AVP", &[]).as_bytes(),
        )),
    );
    phone.send(controller.udp, &invite);
    let (pbx_invite, invite_from) = pbx
        .recv_where(WAIT, |m| m.method() == Some("INVITE"))
        .unwrap_or_else(|| panic!("the PBX got no INVITE:\n{}", controller.log()));
    let pbx_tag = token();
    let contact = vec![("Contact", format!("<sip:pbx@{}>", pbx.addr()))];
    let answer = audio_sdp(pbx_rtp.local_addr().unwrap(), "RTP/AVP", &[]);
    pbx.send(
        invite_from,
        &response(&pbx_invite, 200, "OK", &pbx_tag, &contact, Some(&answer)),
    );
    let (ok, _) = phone
        .recv_where(WAIT, |m| m.status().is_some_and(|s| s >= 200))
        .expect("the phone gets a final response");
    assert_eq!(ok.status(), Some(200), "{ok}");
    let to = ok.header("To").unwrap().to_owned();
    assert!(tag_of(&to).is_some());
    let target = ok.contact_uri().expect("Contact");
    let in_dialog = |method: &str, cseq: u32| {
        request(
            method,
            &target,
            &[
                (
                    "Via",
                    format!(
                        "SIP/2.0/UDP {};branch=z9hG4bK{};rport",
                        phone.addr(),
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
    phone.send(controller.udp, &in_dialog("ACK", 1));
    let phone_side = AudioSection::parse(&ok.body_text());
    let (_, calls) = controller.api_get("/v1/calls");
    let id = calls[0]["id"].as_str().expect("the live call").to_owned();
    assert_eq!(relay.session_ids(), vec![id.clone()]);
    let before = legs(&relay, &id).expect("the session");
    let old_boot = relay.boot_id.clone();

    // ---- relayd goes away and comes back on the same address with nothing.
    relay.stop();
    std::thread::sleep(Duration::from_millis(600));
    let relay = InProcessRelay::start(relayd::config(27_400, 27_499), api);
    assert_eq!(relay.addr, api, "the same API address");
    assert_ne!(relay.boot_id, old_boot, "a new boot id");
    assert!(
        eventually(Duration::from_secs(5), || legs(&relay, &id).is_some()),
        "the controller re-creates the call's session within 5 s (sessions: {:?}):\n{}",
        relay.session_ids(),
        controller.log()
    );
    let after = legs(&relay, &id).unwrap();
    let ids: Vec<&str> = after.iter().filter_map(|l| l["id"].as_str()).collect();
    assert_eq!(ids, vec!["a0", "b0"], "{after:?}");
    let remote = |legs: &[Value], id: &str| {
        let leg = legs.iter().find(|l| l["id"] == id).unwrap();
        (
            leg["remote"]["address"]
                .as_str()
                .map(|a| a.parse::<IpAddr>().unwrap()),
            leg["remote"]["rtp_port"].as_u64(),
        )
    };
    let phone_port = u64::from(phone_rtp.local_addr().unwrap().port());
    let pbx_port = u64::from(pbx_rtp.local_addr().unwrap().port());
    assert_eq!(
        remote(&after, "a0"),
        (Some(IpAddr::from([127, 0, 0, 1])), Some(phone_port))
    );
    assert_eq!(
        remote(&after, "b0"),
        (Some(IpAddr::from([127, 0, 0, 1])), Some(pbx_port))
    );
    assert_eq!(
        remote(&before, "a0"),
        remote(&after, "a0"),
        "same peers as before"
    );
    assert_eq!(after[0]["forward_to"], "b0", "{after:?}");
    assert_eq!(after[1]["forward_to"], "a0", "{after:?}");

    // Media flows through the re-created session when it kept the ports the peers know.
    let a_port = after[0]["local"]["rtp_port"].as_u64().unwrap();
    if a_port == u64::from(phone_side.port) {
        phone_rtp
            .send_to(
                &tests::sipctl::rtp_packet(0, 7, 1, &[9; 160]),
                phone_side.rtp(),
            )
            .unwrap();
        let got = tests::sipctl::receive(&pbx_rtp, 1);
        assert_eq!(got.len(), 1, "RTP through the re-programmed relay");
    }

    // ---- The call ends normally; the new relay is left clean.
    phone.send(controller.udp, &in_dialog("BYE", 2));
    let (pbx_bye, bye_from) = pbx
        .recv_where(WAIT, |m| m.method() == Some("BYE"))
        .expect("the PBX gets a BYE");
    pbx.send(
        bye_from,
        &response(&pbx_bye, 200, "OK", &pbx_tag, &[], None),
    );
    let (bye_ok, _) = phone
        .recv_where(WAIT, |m| m.header("CSeq") == Some("2 BYE"))
        .expect("the BYE is answered");
    assert_eq!(bye_ok.status(), Some(200));
    let cdrs = controller.wait_for_cdrs(1);
    assert_eq!(cdrs[0]["id"], id.as_str());
    assert_eq!(cdrs[0]["end_reason"], "bye_caller", "{}", cdrs[0]);
    assert!(
        eventually(WAIT, || relay.session_ids().is_empty()),
        "the session is deleted on the new relay: {:?}",
        relay.session_ids()
    );
    let (_, metrics) = controller.api_get("/v1/health");
    assert_eq!(metrics["live_calls"], 0, "{metrics}");
}
