//! relayd's control API, as the controller uses it: over HTTP to a separate relayd (the
//! default), or directly on a relay running inside this process (`[relay] mode = "embedded"`,
//! see [`crate::embedded_relay`]).
//!
//! The wire types mirror relayd's `/v1` resources (relay-userspace `model.rs`, published as
//! `/v1/openapi.json`): the JSON is the contract between the two processes. Requests carry the
//! bearer token; every request has a deadline; problem-JSON errors come back as
//! [`RelayError::Status`] with relayd's stable `code` (the embedded relay reports its errors
//! the same way, so callers cannot tell the two apart).
//!
//! Transport: hyper's pooled HTTP/1.1 client (keep-alive connections to one relayd), because
//! call setup rates of hundreds per second must not pay a TCP handshake per request.

use std::{fmt, net::IpAddr, time::Duration};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Bytes,
    header::{AUTHORIZATION, CONTENT_TYPE},
    Method, Request, StatusCode,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Deadline for one request to relayd.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response body accepted from relayd.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// `PUT /v1/sessions/{id}` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionSpec {
    /// Two or more legs.
    pub legs: Vec<LegSpec>,
    /// Seconds of silence after which relayd reports a leg as timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_timeout_secs: Option<u64>,
}

/// One leg of a [`SessionSpec`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegSpec {
    /// Leg id, unique in the session.
    pub id: String,
    /// relayd interface name.
    pub interface: String,
    /// RTP and RTCP on one port (RFC 5761).
    pub rtcp_mux: bool,
    /// The peer's media address when signalling says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<Remote>,
    /// How the peer is learned.
    pub latch: LatchMode,
    /// Drop packets from any other source once latched or fixed.
    pub strict_source: bool,
    /// Verify and decrypt what the peer sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_crypto: Option<CryptoSpec>,
    /// Encrypt what is sent to the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_crypto: Option<CryptoSpec>,
    /// The leg receiving this leg's media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
}

/// A peer's media transport addresses.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Remote {
    /// Peer address.
    pub address: IpAddr,
    /// Peer RTP port.
    pub rtp_port: u16,
    /// Peer RTCP port (absent: RTP port + 1, or the RTP port with rtcp-mux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcp_port: Option<u16>,
}

/// How relayd learns a leg's peer.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LatchMode {
    /// Learn from the first accepted (authenticated on SRTP legs) packet, then lock.
    #[default]
    Learn,
    /// Use the signalled remote only.
    Fixed,
}

/// SRTP parameters for one direction of a leg. Debug never shows keys.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CryptoSpec {
    /// SDES suite name.
    pub suite: String,
    /// Master keys.
    pub keys: Vec<KeySpec>,
    /// MKI length in bytes.
    #[serde(default)]
    pub mki_len: usize,
}

impl fmt::Debug for CryptoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoSpec")
            .field("suite", &self.suite)
            .field("keys", &self.keys.len())
            .field("mki_len", &self.mki_len)
            .finish()
    }
}

impl CryptoSpec {
    /// The relay's form of an SDES attribute: every key (key || salt, base64) with its MKI and
    /// lifetime.
    pub fn from_sdes(attribute: &srtp::sdes::CryptoAttribute) -> Result<Self, RelayError> {
        let mki_len = attribute
            .mki_len()
            .map_err(|e| RelayError::Crypto(e.to_string()))?;
        let keys = attribute
            .keys
            .iter()
            .map(|key| KeySpec {
                key: BASE64.encode(key.material.as_bytes()),
                mki: key.mki.map(srtp::sdes::Mki::value),
                lifetime: key.lifetime,
            })
            .collect();
        Ok(Self {
            suite: attribute.suite.sdes_name().to_owned(),
            keys,
            mki_len,
        })
    }
}

/// One master key.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeySpec {
    /// base64 of key || salt.
    pub key: String,
    /// MKI value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mki: Option<u64>,
    /// Lifetime in packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<u64>,
}

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySpec")
            .field("key", &"<redacted>")
            .field("mki", &self.mki)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// `GET /v1/sessions/{id}` (and PUT replies).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// The legs.
    pub legs: Vec<LegView>,
}

impl SessionView {
    /// The leg with this id.
    pub fn leg(&self, id: &str) -> Option<&LegView> {
        self.legs.iter().find(|leg| leg.id == id)
    }
}

/// One leg as relayd reports it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct LegView {
    /// Leg id.
    pub id: String,
    /// Interface name.
    pub interface: String,
    /// The relay's address and ports for this leg.
    pub local: LocalView,
    /// RTP and RTCP share the RTP port.
    pub rtcp_mux: bool,
    /// Inbound crypto suite, if any.
    #[serde(default)]
    pub inbound_crypto: Option<CryptoView>,
    /// Outbound crypto suite, if any.
    #[serde(default)]
    pub outbound_crypto: Option<CryptoView>,
    /// Source learned by latching.
    #[serde(default)]
    pub latched_rtp: Option<std::net::SocketAddr>,
    /// Silent for longer than the media timeout.
    #[serde(default)]
    pub media_timed_out: bool,
    /// Per-leg counters.
    pub counters: LegCounters,
}

/// The relay's local media address of a leg.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct LocalView {
    /// Address the peer sends to.
    pub address: IpAddr,
    /// RTP port (even).
    pub rtp_port: u16,
    /// RTCP port (odd, or the RTP port with rtcp-mux).
    pub rtcp_port: u16,
}

/// Suite of one crypto direction.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct CryptoView {
    /// SDES suite name.
    pub suite: String,
}

/// Per-leg counters (subset the controller reports).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct LegCounters {
    /// Packets received from the peer.
    pub packets_in: u64,
    /// Bytes received from the peer.
    pub bytes_in: u64,
    /// Packets sent to the peer.
    pub packets_out: u64,
    /// Bytes sent to the peer.
    pub bytes_out: u64,
    /// SRTP authentication failures.
    #[serde(default)]
    pub auth_failures: u64,
    /// SRTP replays.
    #[serde(default)]
    pub replays: u64,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Health {
    /// Changes on every relayd start: a new value means relayd lost its sessions.
    pub boot_id: String,
    /// Sessions relayd holds.
    pub sessions: usize,
}

/// Errors talking to relayd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The relay URL is not `http://host:port`.
    #[error("invalid relay url {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Connection or protocol failure.
    #[error("relayd {method} {path}: {reason}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// What failed.
        reason: String,
    },
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("relayd {method} {path}: no answer within {REQUEST_TIMEOUT:?}")]
    Timeout {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
    },
    /// relayd answered with an error (problem JSON).
    #[error("relayd {method} {path}: {status} {code}: {detail}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// relayd's stable problem code (e.g. `ports_exhausted`).
        code: String,
        /// relayd's explanation.
        detail: String,
    },
    /// relayd's answer did not decode.
    #[error("relayd {method} {path}: undecodable answer: {reason}")]
    Decode {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// Decoder message.
        reason: String,
    },
    /// SDES key material that cannot be expressed to relayd.
    #[error("crypto parameters not accepted: {0}")]
    Crypto(String),
}

impl RelayError {
    /// relayd reported `404 not_found`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }
}

#[derive(Deserialize)]
struct MediaTimeoutEvent {
    session: String,
}

/// Incremental `text/event-stream` parser (WHATWG HTML §9.2.6, the subset relayd emits:
/// `event:` and `data:` lines, events ended by a blank line, comments ignored). Bounded: an
/// event over 64 KiB is dropped.
#[derive(Debug, Default)]
struct SseParser {
    line: Vec<u8>,
    event: String,
    data: String,
}

impl SseParser {
    const MAX_EVENT: usize = 64 * 1024;

    fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        let mut done = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                if self.line.len() < Self::MAX_EVENT {
                    self.line.push(byte);
                }
                continue;
            }
            let line = String::from_utf8_lossy(&self.line)
                .trim_end_matches('\r')
                .to_owned();
            self.line.clear();
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    done.push((
                        std::mem::take(&mut self.event),
                        std::mem::take(&mut self.data),
                    ));
                }
            } else if let Some(value) = line.strip_prefix("event:") {
                value.trim_start().clone_into(&mut self.event);
            } else if let Some(value) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                if self.data.len() < Self::MAX_EVENT {
                    self.data.push_str(value.trim_start());
                }
            }
        }
        done
    }
}

#[derive(Deserialize)]
struct Problem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    detail: String,
}

/// A handle to one relay; cheap to clone (shares the connection pool, or the embedded relay).
#[derive(Clone, Debug)]
pub struct RelayClient {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Http(HttpRelay),
    Embedded(crate::embedded_relay::EmbeddedRelay),
}

impl RelayClient {
    /// A client for relayd at `url` (`http://host:port`, no path) with its bearer token.
    pub fn new(url: &str, token: String) -> Result<Self, RelayError> {
        Ok(Self {
            backend: Backend::Http(HttpRelay::new(url, token)?),
        })
    }

    /// A client of a relay running in this process.
    pub fn embedded(relay: crate::embedded_relay::EmbeddedRelay) -> Self {
        Self {
            backend: Backend::Embedded(relay),
        }
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, RelayError> {
        match &self.backend {
            Backend::Http(http) => http.health().await,
            Backend::Embedded(relay) => Ok(relay.health()),
        }
    }

    /// `PUT /v1/sessions/{id}`: creates or replaces a session.
    pub async fn put_session(
        &self,
        id: &str,
        spec: &SessionSpec,
    ) -> Result<SessionView, RelayError> {
        match &self.backend {
            Backend::Http(http) => http.put_session(id, spec).await,
            Backend::Embedded(relay) => relay.put_session(id, spec),
        }
    }

    /// `GET /v1/sessions/{id}`.
    pub async fn get_session(&self, id: &str) -> Result<SessionView, RelayError> {
        match &self.backend {
            Backend::Http(http) => http.get_session(id).await,
            Backend::Embedded(relay) => relay.get_session(id),
        }
    }

    /// `DELETE /v1/sessions/{id}`: the final view (the counters the CDR reports), or `None`
    /// when the relay did not know the session.
    pub async fn delete_session(&self, id: &str) -> Result<Option<SessionView>, RelayError> {
        match &self.backend {
            Backend::Http(http) => http.delete_session(id).await,
            Backend::Embedded(relay) => relay.delete_session(id),
        }
    }

    /// Follows the relay's events and returns the sessions of `media_timeout` events through
    /// `sink` until the stream ends or fails. The caller reconnects (and should re-check
    /// health: a new boot id means sessions were lost).
    pub async fn follow_events(
        &self,
        sink: &tokio::sync::mpsc::Sender<String>,
    ) -> Result<(), RelayError> {
        match &self.backend {
            Backend::Http(http) => http.follow_events(sink).await,
            Backend::Embedded(relay) => {
                relay.follow_events(sink).await;
                Ok(())
            }
        }
    }
}

/// relayd over HTTP.
#[derive(Clone)]
struct HttpRelay {
    authority: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl fmt::Debug for HttpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRelay")
            .field("authority", &self.authority)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl HttpRelay {
    fn new(url: &str, token: String) -> Result<Self, RelayError> {
        let invalid = |reason| RelayError::Url {
            url: url.to_owned(),
            reason,
        };
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(|| {
                invalid("only http:// is supported (relayd listens on a local address)")
            })?
            .trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(invalid("expected http://host:port"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            authority: authority.to_owned(),
            token,
            client,
        })
    }

    /// `GET /v1/health`.
    async fn health(&self) -> Result<Health, RelayError> {
        self.call(Method::GET, "/v1/health".to_owned(), None).await
    }

    /// `PUT /v1/sessions/{id}`: creates or replaces a session.
    async fn put_session(&self, id: &str, spec: &SessionSpec) -> Result<SessionView, RelayError> {
        let body = serde_json::to_vec(spec).map_err(|e| RelayError::Transport {
            method: "PUT",
            path: format!("/v1/sessions/{id}"),
            reason: format!("encoding the session: {e}"),
        })?;
        self.call(Method::PUT, format!("/v1/sessions/{id}"), Some(body))
            .await
    }

    /// `GET /v1/sessions/{id}`.
    async fn get_session(&self, id: &str) -> Result<SessionView, RelayError> {
        self.call(Method::GET, format!("/v1/sessions/{id}"), None)
            .await
    }

    /// `DELETE /v1/sessions/{id}`: the final view, or `None` when relayd did not know it.
    ///
    /// relayd answers a DELETE with `204 No Content`, so the final view (the counters the CDR
    /// reports) is read with a `GET` just before; packets relayed in between are not counted.
    async fn delete_session(&self, id: &str) -> Result<Option<SessionView>, RelayError> {
        let last = match self.get_session(id).await {
            Ok(view) => view,
            // Nothing to delete (relayd restarted, or an earlier DELETE got through).
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        match self
            .exchange(Method::DELETE, format!("/v1/sessions/{id}"), None)
            .await
        {
            Ok(_) => Ok(Some(last)),
            // Deleted in between: the view read just before is still the last one.
            Err(e) if e.is_not_found() => Ok(Some(last)),
            Err(e) => Err(e),
        }
    }

    /// Follows `GET /v1/events` (server-sent events) and returns the sessions of
    /// `media_timeout` events through `sink` until the stream ends or fails. The caller
    /// reconnects (and should re-check health: a new boot id means sessions were lost).
    async fn follow_events(
        &self,
        sink: &tokio::sync::mpsc::Sender<String>,
    ) -> Result<(), RelayError> {
        let path = "/v1/events".to_owned();
        let transport = |reason: String| RelayError::Transport {
            method: "GET",
            path: path.clone(),
            reason,
        };
        let request = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{}{path}", self.authority))
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .body(Full::new(Bytes::new()))
            .map_err(|e| transport(e.to_string()))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| RelayError::Timeout {
                method: "GET",
                path: path.clone(),
            })?
            .map_err(|e| transport(e.to_string()))?;
        if response.status() != StatusCode::OK {
            return Err(RelayError::Status {
                method: "GET",
                path: path.clone(),
                status: response.status().as_u16(),
                code: String::new(),
                detail: "event stream refused".to_owned(),
            });
        }
        let mut body = response.into_body();
        let mut parser = SseParser::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| transport(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for (event, payload) in parser.push(&data) {
                if event == "media_timeout" {
                    if let Ok(MediaTimeoutEvent { session }) = serde_json::from_str(&payload) {
                        if sink.send(session).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<T, RelayError> {
        let name = method_name(&method);
        let body = self.exchange(method, path.clone(), body).await?;
        serde_json::from_slice(&body).map_err(|e| RelayError::Decode {
            method: name,
            path,
            reason: e.to_string(),
        })
    }

    /// One request; the body of a 2xx answer, or the problem relayd reported.
    async fn exchange(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, RelayError> {
        let name = method_name(&method);
        let transport = |reason: String| RelayError::Transport {
            method: name,
            path: path.clone(),
            reason,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.authority))
            .header(AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| transport(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| transport(e.to_string()))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            Ok::<_, RelayError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| RelayError::Timeout {
                method: name,
                path: path.clone(),
            })??;
        if !status.is_success() {
            let problem: Problem = serde_json::from_slice(&body).unwrap_or(Problem {
                code: String::new(),
                detail: String::from_utf8_lossy(&body).into_owned(),
            });
            return Err(RelayError::Status {
                method: name,
                path,
                status: status.as_u16(),
                code: problem.code,
                detail: problem.detail,
            });
        }
        Ok(body)
    }
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "POST",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_spec_carries_the_inline_key_and_hides_it() {
        let line = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4";
        let attribute = srtp::sdes::CryptoAttribute::parse_line(line).expect("valid line");
        let spec = CryptoSpec::from_sdes(&attribute).expect("expressible");
        assert_eq!(spec.suite, "AES_CM_128_HMAC_SHA1_80");
        assert_eq!(spec.mki_len, 4);
        assert_eq!(spec.keys.len(), 1);
        assert_eq!(spec.keys[0].key, "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz");
        assert_eq!(spec.keys[0].mki, Some(1));
        assert_eq!(spec.keys[0].lifetime, Some(1 << 20));
        assert!(!format!("{spec:?}").contains("WVNf"));
    }

    #[test]
    fn sse_events_are_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser
            .push(b"event: media_timeout\ndata: {\"kind\":\"media_timeout\",")
            .is_empty());
        let events = parser
            .push(b"\"session\":\"c1\",\"leg\":\"a0\",\"silent_secs\":61}\n\n:keep-alive\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, "media_timeout");
        let parsed: MediaTimeoutEvent = serde_json::from_str(&events[0].1).unwrap();
        assert_eq!(parsed.session, "c1");
    }

    /// A one-connection HTTP/1.1 peer that answers each request (head only: these carry no
    /// body) with the next scripted response and records the request lines.
    async fn scripted_relay(
        answers: Vec<&'static str>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = Vec::new();
            for answer in answers {
                while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    let n = stream.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return seen;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                }
                let end = buffer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let head: Vec<u8> = buffer.drain(..end).collect();
                let head = String::from_utf8(head).unwrap();
                seen.push(head.lines().next().unwrap_or_default().to_owned());
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
            seen
        });
        (url, task)
    }

    #[tokio::test]
    async fn delete_returns_the_counters_read_before_relayd_answers_204() {
        let view = r#"{"id":"c1","legs":[{"id":"a0","interface":"default","local":{"address":"127.0.0.1","rtp_port":30000,"rtcp_port":30001},"rtcp_mux":false,"counters":{"packets_in":20,"bytes_in":3640,"packets_out":20,"bytes_out":3440}}]}"#;
        let get = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{view}",
                view.len()
            )
            .into_boxed_str(),
        );
        let (url, relay) = scripted_relay(vec![get, "HTTP/1.1 204 No Content\r\n\r\n"]).await;
        let client = RelayClient::new(&url, "t".to_owned()).unwrap();
        let last = client.delete_session("c1").await.expect("a 204 is success");
        let last = last.expect("the final view");
        assert_eq!(last.legs[0].counters.packets_in, 20);
        assert_eq!(last.legs[0].counters.packets_out, 20);
        drop(client);
        assert_eq!(
            relay.await.unwrap(),
            vec![
                "GET /v1/sessions/c1 HTTP/1.1".to_owned(),
                "DELETE /v1/sessions/c1 HTTP/1.1".to_owned()
            ]
        );
    }

    #[tokio::test]
    async fn deleting_an_unknown_session_is_not_an_error() {
        let body = r#"{"code":"not_found","detail":"no such session"}"#;
        let not_found = Box::leak(
            format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let (url, _relay) = scripted_relay(vec![not_found]).await;
        let client = RelayClient::new(&url, "t".to_owned()).unwrap();
        assert_eq!(client.delete_session("gone").await.unwrap(), None);
    }

    #[test]
    fn urls_other_than_plain_http_authority_are_refused() {
        assert!(RelayClient::new("https://127.0.0.1:8080", String::new()).is_err());
        assert!(RelayClient::new("http://127.0.0.1:8080/v1", String::new()).is_err());
        assert!(RelayClient::new("http://", String::new()).is_err());
    }
}
