//! `SIPp`'s built-in UAC calls `SIPp`'s built-in UAS through sip-controller, 20 calls over UDP and
//! 20 over TCP: every call succeeds (`SIPp` exits 0), every call leaves one CDR line saying how
//! it went, and relayd keeps no session afterwards.

use std::time::Duration;

use tests::{
    relayd,
    sipctl::{eventually, free_port, have_sipp, Controller, InProcessRelay, Scratch, Sipp, WAIT},
};

const CALLS: usize = 20;

#[allow(
    clippy::too_many_lines,
    reason = "setup, run and verdict of one SIPp run"
)]
fn calls_complete(test: &str, transport: &str, port_min: u16) {
    if !have_sipp(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let relay = InProcessRelay::start(
        relayd::config(port_min, port_min + 99),
        ([127, 0, 0, 1], 0).into(),
    );
    let uas_port = free_port();
    let suffix = if transport == "tcp" {
        ";transport=tcp"
    } else {
        ""
    };
    let controller = Controller::start(
        &scratch.path,
        relay.addr,
        &format!(
            "[[trunks]]\nname = \"pbx\"\nuri = \"sip:127.0.0.1:{uas_port}{suffix}\"\nsrtp = \"off\"\n\n\
             [[routes]]\nname = \"to-pbx\"\nfrom = \"endpoints\"\nto = \"pbx\"\n"
        ),
    );
    let sipp_transport = if transport == "tcp" { "t1" } else { "u1" };
    let common = |port: u16| -> Vec<String> {
        [
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mp",
            &free_port().to_string(),
            "-t",
            sipp_transport,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let _uas = Sipp::start(
        &scratch.path,
        "uas",
        &[vec!["-sn".into(), "uas".into()], common(uas_port)].concat(),
    );
    let target = if transport == "tcp" {
        controller.tcp
    } else {
        controller.udp
    };
    let mut uac = Sipp::start(
        &scratch.path,
        "uac",
        &[
            vec![
                "-sn".into(),
                "uac".into(),
                target.to_string(),
                "-m".into(),
                CALLS.to_string(),
                "-r".into(),
                "10".into(),
                "-l".into(),
                "5".into(),
                "-timeout".into(),
                "60s".into(),
                "-timeout_error".into(),
                "-trace_screen".into(),
            ],
            common(free_port()),
        ]
        .concat(),
    );
    let status = uac.wait(Duration::from_secs(90));
    assert!(
        status.success(),
        "SIPp UAC failed ({status}):\n{}\n{}",
        uac.output(),
        screens(&scratch.path)
    );
    let screen = screens(&scratch.path);
    assert!(
        screen.lines().any(|l| {
            l.trim_start().starts_with("Successful call")
                && l.split_whitespace()
                    .filter_map(|w| w.parse::<usize>().ok())
                    .next_back()
                    == Some(CALLS)
        }),
        "SIPp counts {CALLS} successful calls:\n{screen}"
    );

    let cdrs = controller.wait_for_cdrs(CALLS);
    assert_eq!(cdrs.len(), CALLS);
    for cdr in &cdrs {
        assert_eq!(cdr["status"], 200, "{cdr}");
        assert_eq!(cdr["state"], "terminated", "{cdr}");
        assert_eq!(cdr["end_reason"], "bye_caller", "{cdr}");
        assert_eq!(cdr["route"], "to-pbx", "{cdr}");
        let legs = cdr["legs"].as_array().expect("legs");
        assert_eq!(legs.len(), 2, "{cdr}");
        for (leg, role) in legs.iter().zip(["caller", "callee"]) {
            assert_eq!(leg["role"], role, "{cdr}");
            assert_eq!(leg["signalling"]["transport"], transport, "{cdr}");
            assert!(leg["media"]["inbound_suite"].is_null(), "plain RTP: {cdr}");
            assert_eq!(leg["secure"], false, "{cdr}");
        }
        assert_eq!(legs[1]["peer"], "pbx", "{cdr}");
        assert_eq!(cdr["secure_end_to_end"], false, "{cdr}");
    }
    let mut ids: Vec<&str> = cdrs.iter().filter_map(|c| c["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), CALLS, "one CDR per call");
    assert!(
        eventually(WAIT, || relay.session_ids().is_empty()),
        "every relay session is deleted: {:?}",
        relay.session_ids()
    );
    let (status, health) = controller.api_get("/v1/health");
    assert_eq!(status, 200);
    assert_eq!(health["live_calls"], 0, "{health}");
    let (_, calls) = controller.api_get("/v1/calls");
    let finished = calls.as_array().map_or(0, Vec::len);
    assert_eq!(finished, CALLS, "the API lists the finished calls");
}

/// The screens `SIPp` dumped at exit (`-trace_screen`).
fn screens(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_screen.log"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn twenty_sipp_calls_complete_over_udp() {
    calls_complete("twenty_sipp_calls_complete_over_udp", "udp", 27_100);
}

#[test]
fn twenty_sipp_calls_complete_over_tcp() {
    calls_complete("twenty_sipp_calls_complete_over_tcp", "tcp", 27_200);
}
