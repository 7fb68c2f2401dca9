//! relayd's control API: authentication, validation errors as problem documents with stable
//! codes, idempotent PUT, re-programming that keeps ports, PATCH, DELETE, port exhaustion and
//! quarantine, size limits, the `OpenAPI` document and the metrics.

use serde_json::{json, Value};
use tests::{
    loadgen::http::{HttpClient, Token},
    relayd::{config, TestRelay, TOKEN},
};

fn two_legs() -> Value {
    json!({
        "legs": [
            { "id": "a", "remote": { "address": "127.0.0.1", "rtp_port": 41000 }, "forward_to": "b" },
            { "id": "b", "remote": { "address": "127.0.0.1", "rtp_port": 41002 }, "forward_to": "a" }
        ]
    })
}

fn ports(view: &Value) -> Vec<u64> {
    view["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["local"]["rtp_port"].as_u64().unwrap())
        .collect()
}

fn assert_problem(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], expected_status, "{body}");
    assert_eq!(body["type"], format!("urn:relayd:problem:{code}"), "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}

#[test]
fn every_request_needs_the_bearer_token() {
    let relay = TestRelay::start(config(31_000, 31_099));
    for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
        let client = HttpClient::new(
            &format!("http://{}", relay.addr),
            token.map(|t| Token::new(t.to_owned())),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        for (method, path) in [
            ("GET", "/v1/health"),
            ("GET", "/v1/sessions"),
            ("PUT", "/v1/sessions/x"),
            ("GET", "/metrics"),
            ("GET", "/v1/openapi.json"),
            ("GET", "/nowhere"),
        ] {
            let response = client.request(method, path, Some(b"{}")).unwrap();
            assert_eq!(response.status, 401, "{method} {path} with {token:?}");
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
            assert_eq!(
                response.header("content-type"),
                Some("application/problem+json")
            );
        }
    }
    let (status, health) = relay.json("GET", "/v1/health", None);
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["boot_id"].as_str().map(str::len), Some(36));
    assert!(!TOKEN.is_empty());
}

#[test]
fn invalid_requests_are_problem_documents_with_stable_codes() {
    let relay = TestRelay::start(config(31_100, 31_199));
    let key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("bad id", two_legs(), 422, "invalid_id"),
        (
            "one leg",
            json!({ "legs": [{ "id": "a" }] }),
            422,
            "leg_count",
        ),
        (
            "duplicate leg",
            json!({ "legs": [{ "id": "a" }, { "id": "a" }] }),
            422,
            "duplicate_leg",
        ),
        (
            "unknown target",
            json!({ "legs": [{ "id": "a", "forward_to": "c" }, { "id": "b" }] }),
            422,
            "unknown_target",
        ),
        (
            "fixed without remote",
            json!({ "legs": [{ "id": "a", "latch": "fixed" }, { "id": "b" }] }),
            422,
            "fixed_without_remote",
        ),
        (
            "remote port 0",
            json!({ "legs": [{ "id": "a", "remote": { "address": "127.0.0.1", "rtp_port": 0 } }, { "id": "b" }] }),
            422,
            "invalid_remote",
        ),
        (
            "unknown suite",
            json!({ "legs": [{ "id": "a", "inbound_crypto": { "suite": "F8_128_HMAC_SHA1_80", "keys": [{ "key": key }] } }, { "id": "b" }] }),
            422,
            "unknown_suite",
        ),
        (
            "short key",
            json!({ "legs": [{ "id": "a", "inbound_crypto": { "suite": "AES_CM_128_HMAC_SHA1_80", "keys": [{ "key": "c2hvcnQ=" }] } }, { "id": "b" }] }),
            422,
            "invalid_key",
        ),
        (
            "unknown interface",
            json!({ "legs": [{ "id": "a", "interface": "carrier" }, { "id": "b" }] }),
            422,
            "unknown_interface",
        ),
        (
            "unknown field",
            json!({ "legs": [{ "id": "a", "colour": "blue" }, { "id": "b" }] }),
            422,
            "invalid_request",
        ),
        (
            "timeout 0",
            json!({ "legs": [{ "id": "a" }, { "id": "b" }], "media_timeout_secs": 0 }),
            422,
            "invalid_timeout",
        ),
    ];
    for (name, body, status, code) in cases {
        let path = if code == "invalid_id" {
            "/v1/sessions/bad%20id"
        } else {
            "/v1/sessions/s1"
        };
        let (got, problem) = relay.json("PUT", path, Some(&body));
        assert_problem(got, &problem, status, code);
        let _ = name;
    }
    // A key never comes back in an error.
    let (_, problem) = relay.json(
        "PUT",
        "/v1/sessions/s1",
        Some(&json!({ "legs": [{ "id": "a", "inbound_crypto": { "suite": "AES_CM_128_HMAC_SHA1_80", "keys": [{ "key": "c2hvcnQ=" }] } }, { "id": "b" }] })),
    );
    assert!(!problem.to_string().contains("c2hvcnQ"), "{problem}");

    // Malformed JSON, wrong content type, unknown routes and methods.
    let response = relay
        .client
        .request("PUT", "/v1/sessions/s1", Some(b"{not json"))
        .unwrap();
    let problem: Value = serde_json::from_slice(&response.body).unwrap();
    assert_problem(response.status, &problem, 400, "malformed_json");
    let (status, problem) = relay.json("GET", "/v1/nowhere", None);
    assert_problem(status, &problem, 404, "not_found");
    let (status, problem) = relay.json("POST", "/v1/sessions/s1", Some(&two_legs()));
    assert_problem(status, &problem, 405, "method_not_allowed");
    let (status, problem) = relay.json("GET", "/v1/sessions/none", None);
    assert_problem(status, &problem, 404, "not_found");
    let (status, problem) = relay.json("DELETE", "/v1/sessions/none", None);
    assert_problem(status, &problem, 404, "not_found");
}

#[test]
fn oversized_bodies_are_refused_with_413() {
    let mut config = config(31_200, 31_299);
    config.http.max_body_bytes = 2048;
    let relay = TestRelay::start(config);
    let big = json!({ "legs": [{ "id": "a", "padding": "x".repeat(4096) }, { "id": "b" }] });
    let (status, problem) = relay.json("PUT", "/v1/sessions/s1", Some(&big));
    assert_problem(status, &problem, 413, "payload_too_large");
}

#[test]
fn put_is_idempotent_and_replacing_keeps_the_ports_of_unchanged_legs() {
    let relay = TestRelay::start(config(31_300, 31_399));
    let (status, first) = relay.json("PUT", "/v1/sessions/call-1", Some(&two_legs()));
    assert_eq!(status, 201, "{first}");
    let first_ports = ports(&first);
    assert!(first_ports
        .iter()
        .all(|p| p % 2 == 0 && (31_300..31_400).contains(p)));
    assert_eq!(first["legs"][0]["local"]["rtcp_port"], first_ports[0] + 1);

    // The same body again: 200, nothing changes.
    let (status, again) = relay.json("PUT", "/v1/sessions/call-1", Some(&two_legs()));
    assert_eq!(status, 200);
    assert_eq!(ports(&again), first_ports);

    // A changed body: legs a and b keep their ports, a new leg c gets its own.
    let mut changed = two_legs();
    changed["legs"][1]["remote"]["rtp_port"] = json!(42_000);
    changed["legs"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "id": "c", "rtcp_mux": true }));
    let (status, replaced) = relay.json("PUT", "/v1/sessions/call-1", Some(&changed));
    assert_eq!(status, 200, "{replaced}");
    let replaced_ports = ports(&replaced);
    assert_eq!(&replaced_ports[..2], &first_ports[..]);
    assert!(!first_ports.contains(&replaced_ports[2]));
    assert_eq!(
        replaced["legs"][2]["local"]["rtcp_port"], replaced_ports[2],
        "rtcp-mux"
    );
    assert_eq!(replaced["legs"][1]["remote"]["rtp_port"], 42_000);

    // GET and list agree; keys never appear.
    let (status, got) = relay.json("GET", "/v1/sessions/call-1", None);
    assert_eq!(status, 200);
    assert_eq!(ports(&got), replaced_ports);
    let (_, list) = relay.json("GET", "/v1/sessions", None);
    assert_eq!(
        list,
        json!([{ "id": "call-1", "legs": 3, "created_unix_ms": got["created_unix_ms"], "media_timed_out": false }])
    );

    // DELETE, then it is gone.
    let response = relay.call("DELETE", "/v1/sessions/call-1", None);
    assert_eq!(response.status, 204);
    let (status, _) = relay.json("GET", "/v1/sessions/call-1", None);
    assert_eq!(status, 404);
}

#[test]
fn patch_changes_one_leg_and_validates_it() {
    let relay = TestRelay::start(config(31_400, 31_499));
    let mut body = two_legs();
    body["legs"][1].as_object_mut().unwrap().remove("remote");
    let (status, _) = relay.json("PUT", "/v1/sessions/p", Some(&body));
    assert_eq!(status, 201);
    let key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    let (status, view) = relay.json(
        "PATCH",
        "/v1/sessions/p/legs/b",
        Some(&json!({
            "remote": { "address": "127.0.0.1", "rtp_port": 43000 },
            "outbound_crypto": { "suite": "AES_CM_128_HMAC_SHA1_80", "keys": [{ "key": key }] }
        })),
    );
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["legs"][1]["remote"]["rtp_port"], 43_000);
    assert_eq!(
        view["legs"][1]["outbound_crypto"],
        json!({ "suite": "AES_CM_128_HMAC_SHA1_80", "keys": 1 })
    );
    assert!(!view.to_string().contains(key));
    // null clears.
    let (status, view) = relay.json(
        "PATCH",
        "/v1/sessions/p/legs/b",
        Some(&json!({ "outbound_crypto": null, "forward_to": null })),
    );
    assert_eq!(status, 200);
    assert!(view["legs"][1].get("outbound_crypto").is_none());
    assert!(view["legs"][1].get("forward_to").is_none());
    // Invalid patches.
    let (status, problem) = relay.json(
        "PATCH",
        "/v1/sessions/p/legs/b",
        Some(&json!({ "forward_to": "b" })),
    );
    assert_problem(status, &problem, 422, "unknown_target");
    let (status, problem) = relay.json("PATCH", "/v1/sessions/p/legs/z", Some(&json!({})));
    assert_problem(status, &problem, 404, "not_found");
}

#[test]
fn port_exhaustion_is_a_503_and_ports_come_back_after_the_quarantine() {
    // Four port pairs: two sessions of two legs.
    let mut config = config(31_500, 31_507);
    config.media.port_quarantine_secs = 1;
    let relay = TestRelay::start(config);
    for id in ["s1", "s2"] {
        let (status, view) = relay.json("PUT", &format!("/v1/sessions/{id}"), Some(&two_legs()));
        assert_eq!(status, 201, "{view}");
    }
    let (status, problem) = relay.json("PUT", "/v1/sessions/s3", Some(&two_legs()));
    assert_problem(status, &problem, 503, "ports_exhausted");
    // A failed PUT leaks nothing: the existing sessions are intact.
    let (_, list) = relay.json("GET", "/v1/sessions", None);
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    // Deleting frees the ports, but only after the quarantine.
    assert_eq!(relay.call("DELETE", "/v1/sessions/s1", None).status, 204);
    let (status, problem) = relay.json("PUT", "/v1/sessions/s3", Some(&two_legs()));
    assert_problem(status, &problem, 503, "ports_exhausted");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (status, view) = relay.json("PUT", "/v1/sessions/s3", Some(&two_legs()));
    assert_eq!(status, 201, "{view}");
    // The metrics count what is left.
    let metrics = String::from_utf8(relay.call("GET", "/metrics", None).body).unwrap();
    assert!(metrics.contains("relayd_sessions 2\n"), "{metrics}");
    assert!(
        metrics.contains("relayd_ports_available{interface=\"default\"} 0\n"),
        "{metrics}"
    );
}

#[test]
fn the_openapi_document_describes_every_route() {
    let relay = TestRelay::start(config(31_600, 31_699));
    let (status, doc) = relay.json("GET", "/v1/openapi.json", None);
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/health",
        "/v1/sessions",
        "/v1/sessions/{id}",
        "/v1/sessions/{id}/legs/{leg}",
        "/v1/events",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "missing {path}");
    }
    for method in ["put", "get", "delete"] {
        assert!(doc["paths"]["/v1/sessions/{id}"].get(method).is_some());
    }
    // Every problem code the server can send is in the document's enum.
    let codes = doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap();
    for code in [
        "unauthorized",
        "ports_exhausted",
        "invalid_key",
        "payload_too_large",
    ] {
        assert!(codes.contains(&json!(code)), "{code}");
    }
}
