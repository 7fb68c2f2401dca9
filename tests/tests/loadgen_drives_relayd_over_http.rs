//! The load generator sets calls up on relayd through its HTTP control API (bearer token,
//! `PUT`/`DELETE /v1/sessions/{id}`), sends SRTP on leg A and plain RTP on leg B through relayd's
//! socket datapath, and verifies every packet that comes back: nothing lost, relayd's SRTP
//! toward A authenticates with the key the generator gave it, and every session is deleted.

use std::time::Duration;

use serde_json::Value;
use srtp::Suite;
use tests::{
    loadgen::{self, Config, Control, Report, Token},
    relayd::{config, TestRelay, TOKEN},
};

/// A relay with 400 media ports of its own, below the ephemeral range: every test that runs
/// relayd or rtpengine under load has its own slot (`slot * 500 + 20_000`), so tests running in
/// parallel never compete for a port (slots 0-2 here; 3 overload; 4-5 rtpengine).
fn relay(slot: u16) -> TestRelay {
    let port_min = 20_000 + slot * 500;
    TestRelay::start(config(port_min, port_min + 399))
}

fn run(relay: &TestRelay, calls: u32, suite: Option<Suite>) -> Report {
    let mut config = Config::new(Control::Api {
        url: format!("http://{}", relay.addr),
        token: Some(Token::new(TOKEN.to_owned())),
    });
    config.calls = calls;
    config.pps = 50;
    config.duration = Duration::from_secs(3);
    config.drain = Duration::from_secs(1);
    config.suite = suite;
    let report = loadgen::run(&config).unwrap();
    eprintln!("{}", report.summary());
    report
}

fn assert_clean(report: &Report, relay: &TestRelay) {
    let expected = u64::from(report.calls) * 50 * 3;
    for (name, d) in [
        ("a_to_b", &report.per_direction.a_to_b),
        ("b_to_a", &report.per_direction.b_to_a),
    ] {
        assert_eq!(d.sent, expected, "{name}\n{}", report.summary());
        assert!(d.loss_ratio <= 0.001, "{name}\n{}", report.summary());
        assert_eq!(
            (d.auth_failures, d.corrupt, d.send_errors),
            (0, 0, 0),
            "{name}\n{}",
            report.summary()
        );
        assert!(d.latency_us.p50 > 0.0);
    }
    let (status, sessions) = relay.json("GET", "/v1/sessions", None);
    assert_eq!(status, 200);
    assert_eq!(
        sessions,
        Value::Array(Vec::new()),
        "every session was deleted"
    );
}

#[test]
fn srtp_on_leg_a_goes_through_relayd_without_loss() {
    let relay = relay(0);
    let report = run(&relay, 20, Some(Suite::AesCm128HmacSha1_80));
    assert_clean(&report, &relay);
}

#[test]
fn plain_rtp_goes_through_relayd_without_loss() {
    let relay = relay(1);
    let report = run(&relay, 10, None);
    assert_clean(&report, &relay);
}

#[test]
fn a_wrong_token_is_a_clear_error_and_sets_nothing_up() {
    let relay = relay(2);
    let mut config = Config::new(Control::Api {
        url: format!("http://{}", relay.addr),
        token: Some(Token::new("not-the-token".to_owned())),
    });
    config.calls = 2;
    let error = loadgen::run(&config).unwrap_err().to_string();
    assert!(error.contains("status 401"), "{error}");
    let (_, sessions) = relay.json("GET", "/v1/sessions", None);
    assert_eq!(sessions, Value::Array(Vec::new()));
}
