//! The NG server answers rtpengine's own client, `rtpengine-ng-client` (Debian
//! rtpengine-utils, Perl `NGCP::Rtpengine`), over real UDP sockets on loopback: ping, offer
//! (SRTP offer bridged to plain RTP), answer, query, list, statistics and delete, in bencode
//! and JSON; refused options come back as errors the client reports. Raw sockets check what
//! the client cannot: a retransmitted cookie gets the same bytes without a second relay
//! request, TCP carries back-to-back messages, and sources outside the allowlist get nothing.
//!
//! relayd is replaced by an in-process recorder behind the `Relay` trait (the controller's
//! integration tests cannot start relayd from the tests crate); the real relayd is exercised by
//! the workspace's Kamailio + `SIPp` test.

use std::{
    collections::HashMap,
    future::{ready, Future},
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use sip_controller::{
    ng::{NgConfig, NgServer, Relay},
    relay_client::{LegCounters, LegView, LocalView, RelayError, SessionSpec, SessionView},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

const WAIT: Duration = Duration::from_secs(5);

/// baresip offering SDES-SRTP (two suites) with rtcp-mux.
const SRTP_OFFER: &str = "v=0\r\n\
o=- 1916440744 3217383367 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 10316 RTP/SAVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:u2Yx6ouT9Ikn7BAjqr6IyYKOPZk4o1PW5fDUu9zD\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:RfQpSxhZkU7RpoR8hTW1i6kSOdLUuWHPaKPWCmVl\r\n";

/// A PBX answering plain RTP.
const PLAIN_ANSWER: &str = "v=0\r\n\
o=pbx 55 56 IN IP4 10.0.0.50\r\n\
s=pbx\r\n\
c=IN IP4 10.0.0.50\r\n\
t=0 0\r\n\
m=audio 18000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=rtcp:18001\r\n";

/// relayd as far as the NG server can tell: ports per leg, a view per session, counters.
#[derive(Debug, Default)]
struct RecordingRelay {
    sessions: Mutex<HashMap<String, SessionView>>,
    log: Mutex<Vec<String>>,
}

impl RecordingRelay {
    fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn put(&self, id: &str, spec: &SessionSpec) -> SessionView {
        let mut sessions = self.sessions.lock().expect("relay lock");
        let old = sessions.get(id).cloned();
        let next = 30_000 + 2 * u16::try_from(sessions.len() * 8).expect("small");
        let legs = spec
            .legs
            .iter()
            .enumerate()
            .map(|(i, leg)| {
                let reused = old
                    .as_ref()
                    .and_then(|v| v.leg(&leg.id))
                    .filter(|l| l.rtcp_mux == leg.rtcp_mux)
                    .map(|l| l.local.rtp_port);
                let port = reused.unwrap_or(next + 2 * u16::try_from(i).expect("small"));
                LegView {
                    id: leg.id.clone(),
                    interface: leg.interface.clone(),
                    local: LocalView {
                        address: "127.0.0.1".parse().expect("ip"),
                        rtp_port: port,
                        rtcp_port: if leg.rtcp_mux { port } else { port + 1 },
                    },
                    rtcp_mux: leg.rtcp_mux,
                    inbound_crypto: None,
                    outbound_crypto: None,
                    latched_rtp: None,
                    media_timed_out: false,
                    counters: LegCounters {
                        packets_in: 50,
                        bytes_in: 8600,
                        packets_out: 50,
                        bytes_out: 8600,
                        auth_failures: 0,
                        replays: 0,
                    },
                }
            })
            .collect();
        let view = SessionView {
            id: id.to_owned(),
            legs,
        };
        sessions.insert(id.to_owned(), view.clone());
        view
    }
}

fn not_found(id: &str) -> RelayError {
    RelayError::Status {
        method: "GET",
        path: format!("/v1/sessions/{id}"),
        status: 404,
        code: "not_found".to_owned(),
        detail: String::new(),
    }
}

/// The server's handle on the recorder (the test keeps another).
struct SharedRelay(Arc<RecordingRelay>);

impl Relay for SharedRelay {
    fn put_session(
        &self,
        id: &str,
        spec: &SessionSpec,
    ) -> impl Future<Output = Result<SessionView, RelayError>> + Send {
        let relay = &self.0;
        relay
            .log
            .lock()
            .expect("log")
            .push(format!("PUT {id} {}", spec.legs.len()));
        ready(Ok(relay.put(id, spec)))
    }

    fn get_session(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<SessionView, RelayError>> + Send {
        let relay = &self.0;
        relay.log.lock().expect("log").push(format!("GET {id}"));
        let view = relay.sessions.lock().expect("relay lock").get(id).cloned();
        ready(view.ok_or_else(|| not_found(id)))
    }

    fn delete_session(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<SessionView>, RelayError>> + Send {
        let relay = &self.0;
        relay.log.lock().expect("log").push(format!("DELETE {id}"));
        ready(Ok(relay.sessions.lock().expect("relay lock").remove(id)))
    }
}

struct Running {
    udp: SocketAddr,
    tcp: SocketAddr,
    relay: Arc<RecordingRelay>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(config: NgConfig) -> Running {
    let config = NgConfig {
        udp: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        tcp: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        delete_delay_secs: 0,
        ..config
    };
    let server = NgServer::bind(config).await.expect("bind");
    let udp = server.udp_addrs()[0];
    let tcp = server.tcp_addrs()[0];
    let relay = Arc::new(RecordingRelay::default());
    let task = tokio::spawn(server.run(SharedRelay(Arc::clone(&relay))));
    Running {
        udp,
        tcp,
        relay,
        task,
    }
}

/// Runs `rtpengine-ng-client <args>` against `server`; returns (success, stdout, stderr).
async fn ng_client(server: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new("timeout");
    command
        .arg("10")
        .arg("rtpengine-ng-client")
        .arg("--proxy-address=127.0.0.1")
        .arg(format!("--proxy-port={}", server.port()))
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("rtpengine-ng-client (Debian rtpengine-utils) must be installed");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The SDP between the client's `New SDP:` scissors.
fn new_sdp(stdout: &str) -> String {
    let start = stdout
        .find("New SDP:")
        .unwrap_or_else(|| panic!("no new SDP in {stdout}"));
    let body = &stdout[start..];
    let body = &body[body.find('\n').map_or(0, |i| i + 1)..];
    let body = &body[body.find('\n').map_or(0, |i| i + 1)..];
    body[..body.find("----->8").unwrap_or(body.len())].to_owned()
}

#[tokio::test]
async fn rtpengine_ng_client_drives_a_call_through_every_command() {
    let server = start(NgConfig::default()).await;

    let (ok, out, err) = ng_client(server.udp, &["ping"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("result => 'pong'"), "{out}");

    let offer = [
        "offer",
        "--call-id=ng-client-call",
        "--from-tag=caller",
        "--protocol=RTP/AVP",
        "--trust-address",
        "--replace-origin",
        "--ICE=remove",
        "--strict-source",
        "--rtcp-mux=accept",
        "--SDES=no-AES_CM_128_HMAC_SHA1_32",
    ];
    let sdp_arg = format!("--sdp={SRTP_OFFER}");
    let args: Vec<&str> = offer.iter().copied().chain([sdp_arg.as_str()]).collect();
    let (ok, out, err) = ng_client(server.udp, &args).await;
    assert!(ok, "{out}{err}");
    let to_callee = new_sdp(&out);
    assert!(
        to_callee.contains("m=audio 30002 RTP/AVP 0 8 101"),
        "{to_callee}"
    );
    assert!(to_callee.contains("c=IN IP4 127.0.0.1"), "{to_callee}");
    assert!(
        to_callee.contains("o=- 1916440744 3217383367 IN IP4 127.0.0.1"),
        "{to_callee}"
    );
    assert!(
        !to_callee.contains("a=crypto"),
        "keys never reach the plain side: {to_callee}"
    );

    let answer_arg = format!("--sdp={PLAIN_ANSWER}");
    let (ok, out, err) = ng_client(
        server.udp,
        &[
            "answer",
            "--call-id=ng-client-call",
            "--from-tag=caller",
            "--to-tag=callee",
            "--trust-address",
            &answer_arg,
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let to_caller = new_sdp(&out);
    assert!(
        to_caller.contains("m=audio 30000 RTP/SAVP 0 101"),
        "{to_caller}"
    );
    assert!(
        to_caller.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{to_caller}"
    );
    assert!(!to_caller.contains("RfQpSxhZkU7RpoR8hTW1i6kSOdLUuWHPaKPWCmVl"));

    let (ok, out, err) = ng_client(server.udp, &["query", "--call-id=ng-client-call"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("totals => {"), "{out}");
    assert!(out.contains("packets => '100'"), "{out}");
    assert!(
        out.contains("callee => {") && out.contains("caller => {"),
        "{out}"
    );
    assert!(out.contains("'in dialogue with' => 'callee'"), "{out}");

    let (ok, out, err) = ng_client(server.udp, &["list"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("'ng-client-call'"), "{out}");

    let (ok, out, err) = ng_client(server.udp, &["statistics"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("totaloffercount => '1'"), "{out}");
    assert!(out.contains("sessionsown => '1'"), "{out}");

    let (ok, out, err) = ng_client(
        server.udp,
        &["delete", "--call-id=ng-client-call", "--from-tag=caller"],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("totals => {"), "{out}");
    let log = server.relay.log();
    assert!(
        log.last().is_some_and(|l| l.starts_with("DELETE ng-")),
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.starts_with("PUT ")).count(),
        2,
        "{log:?}"
    );

    let (ok, out, err) = ng_client(server.udp, &["list"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("calls => []"), "{out}");
}

#[tokio::test]
async fn json_requests_get_json_replies_and_refusals_are_errors() {
    let server = start(NgConfig::default()).await;
    let (ok, out, err) = ng_client(server.udp, &["--json", "ping"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("result => 'pong'"), "{out}");

    let sdp_arg = format!("--sdp={SRTP_OFFER}");
    let (ok, out, err) = ng_client(
        server.udp,
        &[
            "--json",
            "offer",
            "--call-id=j1",
            "--from-tag=a",
            "--protocol=RTP/AVP",
            &sdp_arg,
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(new_sdp(&out).contains("RTP/AVP"), "{out}");

    let (ok, out, err) = ng_client(
        server.udp,
        &[
            "offer",
            "--call-id=j2",
            "--from-tag=a",
            "--DTLS=passive",
            &sdp_arg,
        ],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        err.contains(
            "option 'DTLS=passive' is not supported: DTLS-SRTP is not supported (SDES only)"
        ),
        "{err}"
    );
    let (ok, _, err) = ng_client(server.udp, &["query", "--call-id=unknown"]).await;
    assert!(!ok);
    assert!(err.contains("Unknown call-id"), "{err}");
}

async fn exchange(socket: &UdpSocket, message: &[u8]) -> Vec<u8> {
    socket.send(message).await.expect("send");
    let mut buffer = vec![0u8; 65_536];
    let len = timeout(WAIT, socket.recv(&mut buffer))
        .await
        .expect("reply in time")
        .expect("recv");
    buffer.truncate(len);
    buffer
}

fn bencode_str(s: &str) -> String {
    format!("{}:{s}", s.len())
}

#[tokio::test]
async fn a_retransmitted_cookie_gets_the_same_reply_without_a_second_offer() {
    let server = start(NgConfig::default()).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(server.udp).await.expect("connect");
    let offer = format!(
        "kam_17 d7:call-id{}7:command5:offer8:from-tag{}3:sdp{}e",
        bencode_str("retx"),
        bencode_str("a"),
        bencode_str(PLAIN_ANSWER)
    );
    let first = exchange(&socket, offer.as_bytes()).await;
    assert!(
        first.starts_with(b"kam_17 d"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    assert!(String::from_utf8_lossy(&first).contains("6:result2:ok"));
    let second = exchange(&socket, offer.as_bytes()).await;
    assert_eq!(first, second, "same cookie, same bytes");
    let puts = server
        .relay
        .log()
        .iter()
        .filter(|l| l.starts_with("PUT "))
        .count();
    assert_eq!(puts, 1);

    // No cookie: nothing to answer. Undecodable body: an error with the cookie.
    let reply = exchange(&socket, b"c9 d7:command").await;
    assert!(
        String::from_utf8_lossy(&reply).starts_with("c9 d12:error-reason"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

#[tokio::test]
async fn tcp_carries_back_to_back_messages_in_order() {
    let server = start(NgConfig::default()).await;
    let mut stream = TcpStream::connect(server.tcp).await.expect("connect");
    stream
        .write_all(b"t1 d7:command4:pinget2 {\"command\":\"ping\"}")
        .await
        .expect("write");
    let expected = b"t1 d6:result4:ponget2 {\"result\":\"pong\"}";
    let mut got = vec![0u8; expected.len()];
    timeout(WAIT, stream.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(got, expected);
}

#[tokio::test]
async fn sources_outside_the_allowlist_get_no_reply() {
    let server = start(NgConfig {
        allow_from: vec!["10.0.0.0/8".parse().expect("net")],
        ..NgConfig::default()
    })
    .await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket
        .send_to(b"p1 d7:command4:pinge", server.udp)
        .await
        .expect("send");
    let mut buffer = [0u8; 256];
    assert!(
        timeout(Duration::from_millis(500), socket.recv(&mut buffer))
            .await
            .is_err(),
        "a refused source must get nothing"
    );
}
