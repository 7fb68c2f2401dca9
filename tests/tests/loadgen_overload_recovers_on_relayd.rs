//! The load generator's overload mode against relayd: the calls are set up once, driven at
//! twice a base rate, then at half of it on the same streams (sequence numbers and SRTP
//! contexts running on), and every stream (both directions of every call) must still deliver
//! in the last window of the recovery: relayd never gives up on a socket.

use std::time::Duration;

use serde_json::Value;
use srtp::Suite;
use tests::{
    loadgen::{self, Config, Control, OverloadParams, StreamHealth, Token},
    relayd::{config, TestRelay, TOKEN},
};

fn relay() -> TestRelay {
    // 400 media ports below the ephemeral range, in this test's own slot (slot 3; see
    // loadgen_drives_relayd_over_http.rs for the others).
    let port_min = 20_000 + 3 * 500;
    TestRelay::start(config(port_min, port_min + 399))
}

#[test]
fn every_stream_is_alive_after_an_overload_on_relayd() {
    let relay = relay();
    let mut config = Config::new(Control::Api {
        url: format!("http://{}", relay.addr),
        token: Some(Token::new(TOKEN.to_owned())),
    });
    config.calls = 20;
    config.suite = Some(Suite::AesCm128HmacSha1_80);
    config.drain = Duration::from_secs(1);
    config.alive_window = Duration::from_secs(2);
    let params = OverloadParams {
        pps_per_stream: 100,
        overload: Duration::from_secs(2),
        recover: Duration::from_secs(3),
    };
    let report = loadgen::overload(&config, &params).unwrap();
    let summary = report.summary();
    eprint!("{summary}");

    let result = &report.overload;
    let (overload, recovery) = (&result.overload, &result.recovery);
    assert_eq!(
        (overload.pps_per_stream, recovery.report.pps_per_stream),
        (200, 50)
    );
    assert_eq!(overload.sent, 20 * 2 * 200 * 2, "{summary}");
    assert_eq!(recovery.report.sent, 20 * 2 * 50 * 3, "{summary}");
    assert_eq!(
        recovery.health,
        StreamHealth {
            streams_total: 40,
            streams_alive: 40,
            streams_dead: 0,
        },
        "{summary}"
    );
    for phase in [overload, &recovery.report] {
        assert_eq!(
            (phase.corrupt, phase.auth_failures, phase.duplicates),
            (0, 0, 0),
            "{summary}"
        );
    }
    assert!(recovery.report.loss_ratio <= 0.01, "{summary}");

    let (status, sessions) = relay.json("GET", "/v1/sessions", None);
    assert_eq!(status, 200);
    assert_eq!(
        sessions,
        Value::Array(Vec::new()),
        "every session was deleted after the recovery"
    );
}
