//! Setting calls up on the relay and tearing them down: relayd's HTTP API
//! ([`ApiController`]) or rtpengine's NG protocol ([`NgController`]), behind [`Controller`].

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use base64::Engine as _;
use relay_userspace::model::{CryptoSpec, KeySpec, LatchMode, LegSpec, Remote, SessionSpec};
use serde::Deserialize;
use srtp::sdes::CryptoAttribute;

use super::{
    error::{check_socket_addr, LoadgenError},
    http::{HttpClient, Token},
    ng::{self, NgClient},
    sdp,
};

/// How long one HTTP exchange with relayd may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// One call as the generator plans it, before the relay knows it.
#[derive(Clone, Debug)]
pub struct CallPlan {
    /// Call index (0-based).
    pub index: u32,
    /// Session id (relayd) or call-id (NG): `[A-Za-z0-9._-]`, unique per run.
    pub id: String,
    /// Endpoint A's address (SRTP unless plain).
    pub a: SocketAddr,
    /// Endpoint B's address (plain RTP).
    pub b: SocketAddr,
    /// The key A encrypts with (`None`: plain).
    pub a_key: Option<CryptoAttribute>,
}

/// Where the relay wants each endpoint's media, and the key it encrypts toward A with.
#[derive(Clone, Debug)]
pub struct RelayCall {
    /// Where A sends (the relay's A-facing port).
    pub a_to_relay: SocketAddr,
    /// Where B sends (the relay's B-facing port).
    pub b_to_relay: SocketAddr,
    /// The key the relay encrypts toward A with (`None`: plain).
    pub relay_key: Option<CryptoAttribute>,
}

/// Something that programs calls into a relay.
pub trait Controller {
    /// A short name for messages ("relayd API", "NG").
    fn name(&self) -> &'static str;
    /// Sets `call` up; the answer says where to send.
    fn create(&mut self, call: &CallPlan) -> Result<RelayCall, LoadgenError>;
    /// Tears `call` down.
    fn delete(&mut self, call: &CallPlan) -> Result<(), LoadgenError>;
}

/// Checks a relay's answer against the address policy and the call's protection.
pub fn check_relay_call(call: &CallPlan, relay: &RelayCall) -> Result<(), LoadgenError> {
    check_socket_addr("relay A-leg address", relay.a_to_relay)?;
    check_socket_addr("relay B-leg address", relay.b_to_relay)?;
    match (&call.a_key, &relay.relay_key) {
        (Some(ours), Some(theirs)) if ours.suite != theirs.suite => {
            Err(LoadgenError::Negotiation {
                call: call.id.clone(),
                reason: format!(
                    "relay answered suite {} for leg A, offered {}",
                    theirs.suite, ours.suite
                ),
            })
        }
        (Some(_), None) => Err(LoadgenError::Negotiation {
            call: call.id.clone(),
            reason: "relay gave no SRTP key for leg A".to_owned(),
        }),
        (None, Some(_)) => Err(LoadgenError::Negotiation {
            call: call.id.clone(),
            reason: "relay answered SRTP on a plain leg".to_owned(),
        }),
        _ => Ok(()),
    }
}

/// relayd's control API: `PUT /v1/sessions/{id}` and `DELETE /v1/sessions/{id}`.
#[derive(Debug)]
pub struct ApiController {
    client: HttpClient,
}

/// The parts of relayd's `SessionView` the generator reads (it ignores the rest, so counters
/// and other additions never break it).
#[derive(Debug, Deserialize)]
struct SessionViewSubset {
    legs: Vec<LegViewSubset>,
}

#[derive(Debug, Deserialize)]
struct LegViewSubset {
    id: String,
    local: LocalSubset,
}

#[derive(Debug, Deserialize)]
struct LocalSubset {
    address: IpAddr,
    rtp_port: u16,
}

/// Longest excerpt of an error body quoted in a message.
const BODY_EXCERPT: usize = 300;

impl ApiController {
    /// A controller for relayd at `base_url` (`http://127.0.0.1:8740`).
    pub fn new(base_url: &str, token: Option<Token>) -> Result<Self, LoadgenError> {
        let client = HttpClient::new(base_url, token, HTTP_TIMEOUT)?;
        super::error::check_address("relayd API address", client.addr().ip())?;
        Ok(Self { client })
    }

    /// The session relayd is asked for: leg `a` decrypts with A's key and encrypts toward A
    /// with `relay_key`; leg `b` is plain; each forwards to the other; remotes are fixed.
    pub fn session_spec(call: &CallPlan, relay_key: Option<&CryptoAttribute>) -> SessionSpec {
        let crypto = |attribute: &CryptoAttribute| CryptoSpec {
            suite: attribute.suite.sdes_name().to_owned(),
            keys: attribute
                .keys
                .iter()
                .map(|key| KeySpec {
                    key: base64::engine::general_purpose::STANDARD.encode(key.material.as_bytes()),
                    mki: None,
                    lifetime: None,
                })
                .collect(),
            mki_len: 0,
            replay_window: None,
        };
        let leg = |id: &str, remote: SocketAddr, to: &str| LegSpec {
            id: id.to_owned(),
            interface: "default".to_owned(),
            rtcp_mux: false,
            remote: Some(Remote {
                address: remote.ip(),
                rtp_port: remote.port(),
                rtcp_port: None,
            }),
            latch: LatchMode::Fixed,
            strict_source: true,
            inbound_crypto: None,
            outbound_crypto: None,
            forward_to: Some(to.to_owned()),
        };
        let mut a = leg("a", call.a, "b");
        a.inbound_crypto = call.a_key.as_ref().map(crypto);
        a.outbound_crypto = relay_key.map(crypto);
        SessionSpec {
            legs: vec![a, leg("b", call.b, "a")],
            media_timeout_secs: None,
        }
    }

    fn api_error(method: &'static str, path: &str, reason: String) -> LoadgenError {
        LoadgenError::Api {
            method,
            path: path.to_owned(),
            reason,
        }
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)]);
    text.trim().replace(['\r', '\n'], " ")
}

impl Controller for ApiController {
    fn name(&self) -> &'static str {
        "relayd API"
    }

    fn create(&mut self, call: &CallPlan) -> Result<RelayCall, LoadgenError> {
        let relay_key = match &call.a_key {
            Some(ours) => Some(CryptoAttribute::generate(ours.tag, ours.suite)?),
            None => None,
        };
        let spec = Self::session_spec(call, relay_key.as_ref());
        let body = serde_json::to_vec(&spec).map_err(|e| LoadgenError::config(e.to_string()))?;
        let path = format!("/v1/sessions/{}", call.id);
        let response = self.client.request("PUT", &path, Some(&body))?;
        if !matches!(response.status, 200 | 201) {
            return Err(Self::api_error(
                "PUT",
                &path,
                format!("status {}: {}", response.status, excerpt(&response.body)),
            ));
        }
        let view: SessionViewSubset = serde_json::from_slice(&response.body).map_err(|e| {
            Self::api_error("PUT", &path, format!("response is not a session: {e}"))
        })?;
        let local = |id: &str| {
            view.legs
                .iter()
                .find(|leg| leg.id == id)
                .map(|leg| SocketAddr::new(leg.local.address, leg.local.rtp_port))
                .ok_or_else(|| Self::api_error("PUT", &path, format!("response has no leg {id:?}")))
        };
        let relay = RelayCall {
            a_to_relay: local("a")?,
            b_to_relay: local("b")?,
            relay_key,
        };
        check_relay_call(call, &relay)?;
        Ok(relay)
    }

    fn delete(&mut self, call: &CallPlan) -> Result<(), LoadgenError> {
        let path = format!("/v1/sessions/{}", call.id);
        let response = self.client.request("DELETE", &path, None)?;
        if (200..300).contains(&response.status) {
            Ok(())
        } else {
            Err(Self::api_error(
                "DELETE",
                &path,
                format!("status {}: {}", response.status, excerpt(&response.body)),
            ))
        }
    }
}

/// rtpengine's NG protocol: `offer` with A's SDP, `answer` with B's, `delete`.
#[derive(Debug)]
pub struct NgController {
    client: NgClient,
}

impl NgController {
    /// A controller for the NG server at `server`; `tag` makes cookies unique per run.
    pub fn new(server: SocketAddr, tag: u64) -> Result<Self, LoadgenError> {
        check_socket_addr("NG server", server)?;
        Ok(Self {
            client: NgClient::connect(server, tag)?,
        })
    }

    /// Pings the server until it answers or `patience` passes.
    pub fn wait_ready(&mut self, patience: Duration) -> Result<(), LoadgenError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match self.client.ping() {
                Ok(()) => return Ok(()),
                Err(e) if std::time::Instant::now() >= deadline => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn from_tag(call: &CallPlan) -> String {
        format!("{}-a", call.id)
    }

    fn to_tag(call: &CallPlan) -> String {
        format!("{}-b", call.id)
    }
}

impl Controller for NgController {
    fn name(&self) -> &'static str {
        "NG"
    }

    fn create(&mut self, call: &CallPlan) -> Result<RelayCall, LoadgenError> {
        let from_tag = Self::from_tag(call);
        let to_tag = Self::to_tag(call);
        let srtp = call.a_key.is_some();
        let a_proto = if srtp { "RTP/SAVP" } else { "RTP/AVP" };
        let session = u64::from(call.index) + 1;

        let a_sdp = sdp::endpoint_sdp(session, call.a, call.a_key.as_ref());
        let offered = self.client.request(
            &ng::offer(&call.id, &from_tag, &a_sdp, "RTP/AVP"),
            ng::reply_sdp,
        )?;
        let toward_b = sdp::parse_audio(&offered).map_err(|source| LoadgenError::Sdp {
            call: call.id.clone(),
            source,
        })?;

        let b_sdp = sdp::endpoint_sdp(session, call.b, None);
        let answered = self.client.request(
            &ng::answer(&call.id, &from_tag, &to_tag, &b_sdp, a_proto),
            ng::reply_sdp,
        )?;
        let toward_a = sdp::parse_audio(&answered).map_err(|source| LoadgenError::Sdp {
            call: call.id.clone(),
            source,
        })?;
        if toward_a.proto != a_proto {
            return Err(LoadgenError::Negotiation {
                call: call.id.clone(),
                reason: format!(
                    "relay answered {} toward A, expected {a_proto}",
                    toward_a.proto
                ),
            });
        }
        // RFC 4568 §5.1.2: the answer's crypto line carries the tag of the offer line it accepts.
        let relay_key = call.a_key.as_ref().and_then(|ours| {
            toward_a
                .crypto
                .iter()
                .find(|c| c.tag == ours.tag && c.suite == ours.suite)
                .or_else(|| toward_a.crypto.iter().find(|c| c.suite == ours.suite))
                .or_else(|| toward_a.crypto.first())
                .cloned()
        });
        let relay = RelayCall {
            a_to_relay: toward_a.rtp,
            b_to_relay: toward_b.rtp,
            relay_key,
        };
        check_relay_call(call, &relay)?;
        Ok(relay)
    }

    fn delete(&mut self, call: &CallPlan) -> Result<(), LoadgenError> {
        let from_tag = Self::from_tag(call);
        self.client
            .request(&ng::delete(&call.id, &from_tag), |_| Ok(()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use relay_userspace::model::{CryptoView, LegCountersView, LegView, LocalView, SessionView};
    use srtp::Suite;

    use super::{super::http::tests::TestServer, *};

    fn plan(srtp: bool) -> CallPlan {
        CallPlan {
            index: 3,
            id: "lg-00c0ffee-3".to_owned(),
            a: "127.0.0.1:41000".parse().unwrap(),
            b: "127.0.0.1:41002".parse().unwrap(),
            a_key: srtp.then(|| CryptoAttribute::generate(1, Suite::AesCm128HmacSha1_80).unwrap()),
        }
    }

    fn leg_view(id: &str, port: u16, srtp: bool) -> LegView {
        LegView {
            id: id.to_owned(),
            interface: "default".to_owned(),
            local: LocalView {
                address: "127.0.0.1".parse().unwrap(),
                rtp_port: port,
                rtcp_port: port + 1,
            },
            rtcp_mux: false,
            remote: None,
            latch: LatchMode::Fixed,
            strict_source: true,
            latched_rtp: None,
            latched_rtcp: None,
            inbound_crypto: srtp.then(|| CryptoView {
                suite: "AES_CM_128_HMAC_SHA1_80".to_owned(),
                keys: 1,
            }),
            outbound_crypto: None,
            forward_to: Some(if id == "a" { "b" } else { "a" }.to_owned()),
            media_timed_out: false,
            counters: LegCountersView::default(),
        }
    }

    fn http_response(status: &str, body: &[u8]) -> Vec<u8> {
        [
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
            body,
        ]
        .concat()
    }

    #[test]
    fn api_put_sends_a_valid_spec_and_reads_the_view() {
        let view = SessionView {
            id: "lg-00c0ffee-3".to_owned(),
            media_timeout_secs: 60,
            created_unix_ms: 1,
            legs: vec![leg_view("a", 30_000, true), leg_view("b", 30_002, false)],
        };
        let server = TestServer::start(vec![
            http_response("201 Created", &serde_json::to_vec(&view).unwrap()),
            http_response("204 No Content", b""),
        ]);
        let mut api = ApiController::new(&server.url(), Some(Token::new("t0k".into()))).unwrap();
        let call = plan(true);
        let relay = api.create(&call).unwrap();
        assert_eq!(relay.a_to_relay, "127.0.0.1:30000".parse().unwrap());
        assert_eq!(relay.b_to_relay, "127.0.0.1:30002".parse().unwrap());
        let relay_key = relay.relay_key.clone().unwrap();
        assert_ne!(
            relay_key,
            call.a_key.clone().unwrap(),
            "a second, fresh key"
        );

        let (head, body) = server.requests.recv().unwrap();
        assert!(head.starts_with("PUT /v1/sessions/lg-00c0ffee-3 HTTP/1.1"));
        assert!(head.contains("Authorization: Bearer t0k"));
        // The body is the contract: relayd's own model parses and validates it.
        let spec: SessionSpec = serde_json::from_slice(&body).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.legs[0].id, "a");
        assert_eq!(spec.legs[0].latch, LatchMode::Fixed);
        assert_eq!(spec.legs[0].remote.unwrap().rtp_port, 41_000);
        assert_eq!(spec.legs[0].forward_to.as_deref(), Some("b"));
        let inbound = spec.legs[0].inbound_crypto.as_ref().unwrap();
        assert_eq!(inbound.suite, "AES_CM_128_HMAC_SHA1_80");
        assert_eq!(
            inbound.keys[0].key,
            base64::engine::general_purpose::STANDARD
                .encode(call.a_key.as_ref().unwrap().keys[0].material.as_bytes())
        );
        let outbound = spec.legs[0].outbound_crypto.as_ref().unwrap();
        assert_eq!(
            outbound.keys[0].key,
            base64::engine::general_purpose::STANDARD.encode(relay_key.keys[0].material.as_bytes())
        );
        assert!(spec.legs[0]
            .inbound_crypto
            .as_ref()
            .unwrap()
            .policy("a")
            .is_ok());
        assert_eq!(spec.legs[1].id, "b");
        assert!(spec.legs[1].inbound_crypto.is_none() && spec.legs[1].outbound_crypto.is_none());
        assert_eq!(spec.legs[1].remote.unwrap().rtp_port, 41_002);

        api.delete(&call).unwrap();
        let (head, _) = server.requests.recv().unwrap();
        assert!(head.starts_with("DELETE /v1/sessions/lg-00c0ffee-3 HTTP/1.1"));
    }

    #[test]
    fn api_errors_quote_status_and_body_and_refuse_foreign_addresses() {
        let mut foreign = SessionView {
            id: "x".to_owned(),
            media_timeout_secs: 60,
            created_unix_ms: 1,
            legs: vec![leg_view("a", 30_000, false), leg_view("b", 30_002, false)],
        };
        foreign.legs[1].local.address = "10.1.2.3".parse().unwrap();
        let server = TestServer::start(vec![
            http_response("422 Unprocessable Entity", b"{\"code\":\"invalid_key\"}"),
            http_response("200 OK", b"not json"),
            http_response("200 OK", &serde_json::to_vec(&foreign).unwrap()),
        ]);
        let mut api = ApiController::new(&server.url(), None).unwrap();
        let err = api.create(&plan(false)).unwrap_err().to_string();
        assert!(
            err.contains("status 422") && err.contains("invalid_key"),
            "{err}"
        );
        let err = api.create(&plan(false)).unwrap_err().to_string();
        assert!(err.contains("not a session"), "{err}");
        let err = api.create(&plan(false)).unwrap_err();
        assert!(
            matches!(err, LoadgenError::AddressNotAllowed { .. }),
            "{err}"
        );
        assert!(matches!(
            ApiController::new("http://192.0.2.1:8740", None),
            Err(LoadgenError::AddressNotAllowed { .. })
        ));
    }

    #[test]
    fn relay_answers_must_match_the_protection_asked_for() {
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let relay = |key: Option<CryptoAttribute>| RelayCall {
            a_to_relay: addr,
            b_to_relay: addr,
            relay_key: key,
        };
        let srtp = plan(true);
        assert!(check_relay_call(&srtp, &relay(None)).is_err());
        let other_suite = CryptoAttribute::generate(1, Suite::AeadAes128Gcm).unwrap();
        assert!(check_relay_call(&srtp, &relay(Some(other_suite.clone()))).is_err());
        assert!(check_relay_call(&plan(false), &relay(Some(other_suite))).is_err());
        assert!(check_relay_call(&plan(false), &relay(None)).is_ok());
    }
}
