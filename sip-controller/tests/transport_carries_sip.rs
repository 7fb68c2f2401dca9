//! The transport layer carries SIP over UDP, TCP and TLS on loopback: round trips, stream
//! framing, connection reuse and responses over the request's connection, TLS versions,
//! client certificates and SNI, the RFC 3261 §18.1.1 UDP → TCP switch, RFC 5626 keepalives,
//! framing limits, closed-connection events and the persisted self-signed certificate.

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use sip_controller::transport::{
    CertificateFiles, ClientCertificatePolicy, ConnectionId, Inbound, Outbound, SniCertificate,
    TlsSettings, Transport, TransportConfig, TransportError, TransportEvent, TransportLayer,
    TransportStats,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    sync::mpsc::Receiver,
    time::timeout,
};
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("sipc-transport-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A request with a top Via of `transport` and a body of `body_len` bytes.
fn request(method: &str, transport: &str, branch: &str, body_len: usize) -> Vec<u8> {
    let mut msg = format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 127.0.0.1:5060;branch=z9hG4bK{branch}\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {branch}@example.com\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: {body_len}\r\n\r\n"
    )
    .into_bytes();
    msg.resize(msg.len() + body_len, b'x');
    msg
}

fn response(branch: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 200 OK\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK{branch}\r\n\
         Call-ID: {branch}@example.com\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

async fn start(config: TransportConfig) -> (TransportLayer, Receiver<TransportEvent>) {
    TransportLayer::start(config).await.unwrap()
}

fn udp_tcp_config() -> TransportConfig {
    TransportConfig {
        udp: vec![loopback()],
        tcp: vec![loopback()],
        ..TransportConfig::default()
    }
}

async fn next_event(events: &mut Receiver<TransportEvent>) -> TransportEvent {
    timeout(WAIT, events.recv())
        .await
        .expect("no transport event within 5 s")
        .expect("event channel closed")
}

async fn next_message(events: &mut Receiver<TransportEvent>) -> Inbound {
    match next_event(events).await {
        TransportEvent::Message(inbound) => inbound,
        other @ TransportEvent::Closed { .. } => panic!("expected a message, got {other:?}"),
    }
}

/// Polls the stats until `check` holds (counters are bumped by other tasks).
async fn wait_for_stats(layer: &TransportLayer, check: impl Fn(&TransportStats) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check(&layer.stats()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never matched: {:?}",
            layer.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_exactly(stream: &mut (impl AsyncReadExt + Unpin), len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .unwrap();
    buf
}

fn tls_server_config(dir: &Path) -> TransportConfig {
    TransportConfig {
        tls: vec![loopback()],
        tls_settings: Some(TlsSettings::self_signed(dir)),
        ..TransportConfig::default()
    }
}

/// A client-only layer (no listeners) that trusts `trusted` for outbound TLS.
fn tls_client_config(dir: &Path, trusted: &Path) -> TransportConfig {
    let mut settings = TlsSettings::self_signed(dir);
    settings.trusted_ca_files = vec![trusted.to_owned()];
    TransportConfig {
        tls_settings: Some(settings),
        ..TransportConfig::default()
    }
}

fn roots_from(file: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[tokio::test]
async fn udp_round_trip_and_keepalives_dropped() {
    let (layer, mut events) = start(udp_tcp_config()).await;
    let server = layer.local_addrs(Transport::Udp)[0];
    let peer = UdpSocket::bind(loopback()).await.unwrap();

    // RFC 5626 keepalives on UDP are not SIP: a CRLFCRLF and a STUN Binding request vanish.
    peer.send_to(b"\r\n\r\n", server).await.unwrap();
    let stun = [
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    peer.send_to(&stun, server).await.unwrap();
    let options = request("OPTIONS", "UDP", "udp1", 0);
    peer.send_to(&options, server).await.unwrap();

    let inbound = next_message(&mut events).await;
    assert_eq!(inbound.transport, Transport::Udp);
    assert_eq!(inbound.source, peer.local_addr().unwrap());
    assert_eq!(inbound.local, server);
    assert_eq!(inbound.connection, None);
    assert_eq!(inbound.tls, None);
    assert_eq!(inbound.bytes, options);

    let ok = response("udp1");
    let sent = layer
        .send(Outbound::response_to(&inbound, ok.clone()))
        .await
        .unwrap();
    assert_eq!(sent.transport, Transport::Udp);
    assert_eq!(sent.local, server);
    assert_eq!(sent.connection, None);
    let mut buf = vec![0; 2048];
    let (len, from) = timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, server);
    assert_eq!(&buf[..len], ok);

    let stats = layer.stats();
    assert_eq!(stats.udp.messages_in, 1);
    assert_eq!(stats.udp.messages_out, 1);
    assert_eq!(stats.udp.bytes_in, options.len() as u64);
    assert_eq!(stats.udp.bytes_out, ok.len() as u64);
    assert_eq!(stats.udp.keepalives, 2);
}

#[tokio::test]
async fn tcp_pipelined_and_split_messages_are_framed() {
    let (layer, mut events) = start(udp_tcp_config()).await;
    let server = layer.local_addrs(Transport::Tcp)[0];
    let mut peer = TcpStream::connect(server).await.unwrap();
    let first = request("OPTIONS", "TCP", "p1", 0);
    let second = request("MESSAGE", "TCP", "p2", 11);
    let third = request("INFO", "TCP", "p3", 40);

    let mut pipelined = first.clone();
    pipelined.extend_from_slice(&second);
    peer.write_all(&pipelined).await.unwrap();
    // The third message arrives in two pieces, split inside the headers.
    peer.write_all(&third[..30]).await.unwrap();
    peer.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    peer.write_all(&third[30..]).await.unwrap();

    let got: Vec<Inbound> = vec![
        next_message(&mut events).await,
        next_message(&mut events).await,
        next_message(&mut events).await,
    ];
    assert_eq!(got[0].bytes, first);
    assert_eq!(got[1].bytes, second);
    assert_eq!(got[2].bytes, third);
    let id = got[0].connection.expect("TCP message without connection");
    for inbound in &got {
        assert_eq!(inbound.transport, Transport::Tcp);
        assert_eq!(inbound.connection, Some(id));
        assert_eq!(inbound.source, peer.local_addr().unwrap());
        assert_eq!(inbound.local, server);
    }
    assert_eq!(layer.stats().tcp.messages_in, 3);
    assert!(layer.is_open(id));
}

#[tokio::test]
async fn response_goes_back_over_the_inbound_connection() {
    let (layer, mut events) = start(udp_tcp_config()).await;
    let server = layer.local_addrs(Transport::Tcp)[0];
    let mut peer = TcpStream::connect(server).await.unwrap();
    peer.write_all(&request("OPTIONS", "TCP", "r1", 0))
        .await
        .unwrap();
    let inbound = next_message(&mut events).await;

    let ok = response("r1");
    let sent = layer
        .send(Outbound::response_to(&inbound, ok.clone()))
        .await
        .unwrap();
    assert_eq!(sent.transport, Transport::Tcp);
    assert_eq!(sent.connection, inbound.connection);
    assert_eq!(sent.local, server);
    assert_eq!(read_exactly(&mut peer, ok.len()).await, ok);
    let stats = layer.stats();
    assert_eq!(stats.tcp.connections_accepted, 1);
    assert_eq!(stats.tcp.connections_opened, 0);
    assert_eq!(stats.tcp.connections_open, 1);
}

#[tokio::test]
async fn second_request_reuses_the_connection() {
    let (server, mut server_events) = start(udp_tcp_config()).await;
    let (client, mut client_events) = start(udp_tcp_config()).await;
    let destination = server.local_addrs(Transport::Tcp)[0];

    let first = client
        .send(Outbound::request(
            Transport::Tcp,
            destination,
            request("OPTIONS", "TCP", "c1", 0),
        ))
        .await
        .unwrap();
    let second = client
        .send(Outbound::request(
            Transport::Tcp,
            destination,
            request("OPTIONS", "TCP", "c2", 0),
        ))
        .await
        .unwrap();
    assert_eq!(first.transport, Transport::Tcp);
    let id = first.connection.expect("no connection id");
    assert_eq!(second.connection, Some(id));
    assert_eq!(second.local, first.local);

    let a = next_message(&mut server_events).await;
    let b = next_message(&mut server_events).await;
    assert_eq!(a.connection, b.connection);
    assert_eq!(a.source, first.local);
    assert_eq!(server.stats().tcp.connections_accepted, 1);
    assert_eq!(client.stats().tcp.connections_opened, 1);

    // The response comes back over that connection and reaches the client's channel too.
    server
        .send(Outbound::response_to(&a, response("c1")))
        .await
        .unwrap();
    let back = next_message(&mut client_events).await;
    assert_eq!(back.connection, Some(id));
    assert_eq!(back.bytes, response("c1"));
    assert_eq!(back.source, destination);
}

#[tokio::test]
async fn tls_with_self_signed_certificate_reports_tls13_and_checks_sni() {
    let server_dir = TempDir::new("tls-server");
    let client_dir = TempDir::new("tls-client");
    let (server, mut server_events) = start(tls_server_config(server_dir.path())).await;
    let cert_file = server.tls_certificate_file().unwrap().to_owned();
    let (client, _client_events) = start(tls_client_config(client_dir.path(), &cert_file)).await;
    let destination = server.local_addrs(Transport::Tls)[0];

    let mut out = Outbound::request(
        Transport::Tls,
        destination,
        request("OPTIONS", "TLS", "t1", 0),
    );
    out.server_name = Some("localhost".to_owned());
    let sent = client.send(out.clone()).await.unwrap();
    assert_eq!(sent.transport, Transport::Tls);
    let client_tls = sent.tls.expect("no TLS info on send");
    assert_eq!(client_tls.version, "TLSv1.3");
    assert_eq!(
        client_tls.peer_subject.as_deref(),
        Some("CN=sip-controller self-signed")
    );
    assert_eq!(client_tls.sni.as_deref(), Some("localhost"));

    let inbound = next_message(&mut server_events).await;
    assert_eq!(inbound.transport, Transport::Tls);
    assert_eq!(inbound.bytes, out.bytes);
    let tls = inbound.tls.expect("no TLS info on inbound");
    assert_eq!(tls.version, "TLSv1.3");
    assert!(
        tls.cipher_suite.starts_with("TLS13_"),
        "{}",
        tls.cipher_suite
    );
    assert_eq!(tls.cipher_suite, client_tls.cipher_suite);
    assert_eq!(tls.sni.as_deref(), Some("localhost"));
    assert_eq!(tls.peer_subject, None);

    // A name the certificate does not carry fails verification.
    out.server_name = Some("wrong.example.com".to_owned());
    let err = client.send(out).await.unwrap_err();
    let TransportError::TlsHandshakeFailed { reason, .. } = &err else {
        panic!("expected a TLS handshake failure, got {err:?}");
    };
    assert!(reason.contains("certificate"), "{reason}");
    assert_eq!(client.stats().tls.tls_handshake_failures, 1);
    assert_eq!(client.stats().tls.connections_opened, 1);
}

#[tokio::test]
async fn tls12_only_client_is_served_tls12() {
    let dir = TempDir::new("tls12");
    let (server, mut events) = start(tls_server_config(dir.path())).await;
    let cert_file = server.tls_certificate_file().unwrap().to_owned();
    let config = rustls::ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots_from(&cert_file))
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.local_addrs(Transport::Tls)[0])
        .await
        .unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let msg = request("OPTIONS", "TLS", "t12", 0);
    tls.write_all(&msg).await.unwrap();
    tls.flush().await.unwrap();

    let inbound = next_message(&mut events).await;
    assert_eq!(inbound.bytes, msg);
    let info = inbound.tls.clone().unwrap();
    assert_eq!(info.version, "TLSv1.2");
    assert!(
        info.cipher_suite.starts_with("TLS_ECDHE_"),
        "{}",
        info.cipher_suite
    );
    assert_eq!(info.sni.as_deref(), Some("localhost"));

    // And the response goes back over it.
    server
        .send(Outbound::response_to(&inbound, response("t12")))
        .await
        .unwrap();
    assert_eq!(
        read_exactly(&mut tls, response("t12").len()).await,
        response("t12")
    );
}

/// A test CA: its certificate, key and PEM file in `dir`.
fn make_ca(dir: &Path) -> (rcgen::Certificate, rcgen::KeyPair, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Test SIP CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    (ca, ca_key, ca_file)
}

/// A certificate for `name` (CN and SAN, O = `org`) signed by the CA, as PEM files in `dir`.
fn issue(
    ca: &(rcgen::Certificate, rcgen::KeyPair, PathBuf),
    dir: &Path,
    name: &str,
    org: &str,
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> CertificateFiles {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, name);
    dn.push(rcgen::DnType::OrganizationName, org);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![usage];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    let files = CertificateFiles {
        cert_file: dir.join(format!("{name}.pem")),
        key_file: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert_file, cert.pem()).unwrap();
    std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
    files
}

/// A CA, and a client certificate it signed for `pbx.example.com`.
fn make_ca_and_client(dir: &Path) -> (PathBuf, CertificateFiles) {
    let ca = make_ca(dir);
    let files = issue(
        &ca,
        dir,
        "pbx.example.com",
        "Example PBX",
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    (ca.2, files)
}

#[tokio::test]
async fn required_client_certificate_is_enforced_and_reported() {
    let dir = TempDir::new("mtls");
    let (ca_file, client_files) = make_ca_and_client(dir.path());
    let mut config = tls_server_config(&dir.path().join("server"));
    if let Some(settings) = config.tls_settings.as_mut() {
        settings.client_certificates = ClientCertificatePolicy::Required { ca_file };
    }
    let (server, mut events) = start(config).await;
    let cert_file = server.tls_certificate_file().unwrap().to_owned();
    let destination = server.local_addrs(Transport::Tls)[0];

    // Without a certificate: the server refuses the handshake.
    let no_cert = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots_from(&cert_file))
        .with_no_client_auth();
    let tcp = TcpStream::connect(destination).await.unwrap();
    // TLS 1.3 finishes on the client side before the server has judged the certificate; the
    // refusal shows as an alert or EOF on the first read.
    if let Ok(mut tls) = TlsConnector::from(Arc::new(no_cert))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        let _ = tls.write_all(&request("OPTIONS", "TLS", "m0", 0)).await;
        let mut buf = [0u8; 64];
        let read = timeout(WAIT, tls.read(&mut buf)).await.unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    wait_for_stats(&server, |s| s.tls.tls_handshake_failures == 1).await;
    assert_eq!(server.stats().tls.messages_in, 0);

    // With a certificate signed by the CA: accepted, and its subject reported.
    let mut client_settings = TlsSettings::self_signed(dir.path().join("client"));
    client_settings.trusted_ca_files = vec![cert_file];
    client_settings.client_certificate = Some(client_files);
    let (client, _client_events) = start(TransportConfig {
        tls_settings: Some(client_settings),
        ..TransportConfig::default()
    })
    .await;
    let mut out = Outbound::request(
        Transport::Tls,
        destination,
        request("OPTIONS", "TLS", "m1", 0),
    );
    out.server_name = Some("localhost".to_owned());
    client.send(out).await.unwrap();
    let inbound = next_message(&mut events).await;
    let subject = inbound.tls.unwrap().peer_subject.clone().unwrap();
    assert!(subject.contains("CN=pbx.example.com"), "{subject}");
    assert!(subject.contains("O=Example PBX"), "{subject}");
    assert_eq!(server.stats().tls.tls_handshake_failures, 1);
}

#[tokio::test]
async fn large_udp_request_switches_to_tcp() {
    let (server, mut server_events) = start(udp_tcp_config()).await;
    let (client, _client_events) = start(udp_tcp_config()).await;
    let destination = server.local_addrs(Transport::Udp)[0];
    // UDP and TCP share the port, as SIP expects.
    assert_eq!(server.local_addrs(Transport::Tcp)[0], destination);

    let big = request("MESSAGE", "UDP", "big", 1500);
    assert!(big.len() > 1500);
    assert!(client.switches_to_tcp(true, big.len()));
    let sent = client
        .send(Outbound::request(Transport::Udp, destination, big.clone()))
        .await
        .unwrap();
    assert_eq!(sent.transport, Transport::Tcp);
    assert!(sent.connection.is_some());

    let inbound = next_message(&mut server_events).await;
    assert_eq!(inbound.transport, Transport::Tcp);
    assert_eq!(inbound.bytes.len(), big.len());
    // RFC 3261 §18.1.1: the top Via names the transport actually used.
    let expected =
        String::from_utf8(big)
            .unwrap()
            .replacen("Via: SIP/2.0/UDP", "Via: SIP/2.0/TCP", 1);
    assert_eq!(String::from_utf8(inbound.bytes).unwrap(), expected);

    // Small requests and large responses stay on UDP.
    let small = client
        .send(Outbound::request(
            Transport::Udp,
            destination,
            request("OPTIONS", "UDP", "small", 0),
        ))
        .await
        .unwrap();
    assert_eq!(small.transport, Transport::Udp);
    let mut large_response = Outbound::request(Transport::Udp, destination, response("x"));
    large_response.bytes.resize(1500, b' ');
    large_response.is_request = false;
    assert_eq!(
        client.send(large_response).await.unwrap().transport,
        Transport::Udp
    );
}

#[tokio::test]
async fn crlfcrlf_ping_gets_a_crlf_pong() {
    let (layer, mut events) = start(udp_tcp_config()).await;
    let mut peer = TcpStream::connect(layer.local_addrs(Transport::Tcp)[0])
        .await
        .unwrap();
    peer.write_all(b"\r\n\r\n").await.unwrap();
    assert_eq!(read_exactly(&mut peer, 2).await, b"\r\n");
    // The connection stays usable and the ping was not a message.
    let msg = request("OPTIONS", "TCP", "k1", 0);
    peer.write_all(&msg).await.unwrap();
    assert_eq!(next_message(&mut events).await.bytes, msg);
    let stats = layer.stats();
    assert_eq!(stats.tcp.keepalives, 1);
    assert_eq!(stats.tcp.messages_in, 1);
}

#[tokio::test]
async fn oversize_message_closes_the_connection() {
    let (layer, mut events) = start(udp_tcp_config()).await;
    let mut peer = TcpStream::connect(layer.local_addrs(Transport::Tcp)[0])
        .await
        .unwrap();
    let peer_addr = peer.local_addr().unwrap();
    peer.write_all(b"MESSAGE sip:bob@example.com SIP/2.0\r\nContent-Length: 70000\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = timeout(WAIT, peer.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    match next_event(&mut events).await {
        TransportEvent::Closed {
            source, transport, ..
        } => {
            assert_eq!(source, peer_addr);
            assert_eq!(transport, Transport::Tcp);
        }
        other @ TransportEvent::Message(_) => panic!("expected Closed, got {other:?}"),
    }
    let stats = layer.stats();
    assert_eq!(stats.tcp.framing_errors, 1);
    assert_eq!(stats.tcp.messages_in, 0);
    assert_eq!(stats.tcp.connections_open, 0);
}

#[tokio::test]
async fn closed_event_follows_peer_disconnect() {
    let (layer, mut events) = start(udp_tcp_config()).await;
    let mut peer = TcpStream::connect(layer.local_addrs(Transport::Tcp)[0])
        .await
        .unwrap();
    let peer_addr = peer.local_addr().unwrap();
    peer.write_all(&request("REGISTER", "TCP", "d1", 0))
        .await
        .unwrap();
    let id: ConnectionId = next_message(&mut events).await.connection.unwrap();
    drop(peer);
    assert_eq!(
        next_event(&mut events).await,
        TransportEvent::Closed {
            connection: id,
            source: peer_addr,
            transport: Transport::Tcp
        }
    );
    assert!(!layer.is_open(id));
    // A response for the gone connection falls back to a new connection to the source,
    // which nobody listens on any more.
    let err = layer
        .send(Outbound {
            connection: Some(id),
            ..Outbound::request(Transport::Tcp, peer_addr, response("d1"))
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectFailed { .. }),
        "{err:?}"
    );
    assert_eq!(layer.stats().tcp.connections_failed, 1);
}

#[tokio::test]
async fn self_signed_certificate_is_persisted_and_reused() {
    let dir = TempDir::new("persist");
    let (first, _events) = start(tls_server_config(dir.path())).await;
    let cert_file = first.tls_certificate_file().unwrap().to_owned();
    assert!(cert_file.starts_with(dir.path()));
    let pem = std::fs::read(&cert_file).unwrap();
    let key_file = dir
        .path()
        .join(sip_controller::transport::tls::SELF_SIGNED_KEY_FILE);
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = std::fs::read(&key_file).unwrap();
    let old_addr = first.local_addrs(Transport::Tls)[0];
    first.shutdown_and_wait().await;
    // The listener is gone.
    assert!(TcpStream::connect(old_addr).await.is_err());

    let (second, mut events) = start(tls_server_config(dir.path())).await;
    assert_eq!(second.tls_certificate_file(), Some(cert_file.as_path()));
    assert_eq!(std::fs::read(&cert_file).unwrap(), pem);
    assert_eq!(std::fs::read(&key_file).unwrap(), key);

    // A client that trusted the first instance's certificate trusts the second.
    let client_dir = TempDir::new("persist-client");
    let (client, _client_events) = start(tls_client_config(client_dir.path(), &cert_file)).await;
    let mut out = Outbound::request(
        Transport::Tls,
        second.local_addrs(Transport::Tls)[0],
        request("OPTIONS", "TLS", "s2", 0),
    );
    out.server_name = Some("localhost".to_owned());
    client.send(out).await.unwrap();
    assert_eq!(
        next_message(&mut events).await.tls.unwrap().version,
        "TLSv1.3"
    );
}

#[tokio::test]
async fn sni_selects_the_matching_certificate() {
    let dir = TempDir::new("sni");
    let ca = make_ca(dir.path());
    let trunk = issue(
        &ca,
        dir.path(),
        "trunk.example.net",
        "Example Trunk",
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let mut config = tls_server_config(&dir.path().join("server"));
    if let Some(settings) = config.tls_settings.as_mut() {
        settings.sni_certificates = vec![SniCertificate {
            server_name: "trunk.example.net".to_owned(),
            files: trunk,
        }];
    }
    let (server, mut events) = start(config).await;
    let (client, _client_events) =
        start(tls_client_config(&dir.path().join("client"), &ca.2)).await;
    let destination = server.local_addrs(Transport::Tls)[0];

    let mut out = Outbound::request(
        Transport::Tls,
        destination,
        request("OPTIONS", "TLS", "sni", 0),
    );
    out.server_name = Some("trunk.example.net".to_owned());
    let sent = client.send(out.clone()).await.unwrap();
    let trunk_connection = sent.connection.unwrap();
    let subject = sent.tls.unwrap().peer_subject.clone().unwrap();
    assert!(subject.contains("CN=trunk.example.net"), "{subject}");
    let inbound = next_message(&mut events).await;
    assert_eq!(
        inbound.tls.unwrap().sni.as_deref(),
        Some("trunk.example.net")
    );

    // Without SNI (IP address) the default, self-signed certificate is served, which the
    // client does not trust: the verified trunk connection is not reused for another name.
    out.server_name = None;
    let err = client.send(out.clone()).await.unwrap_err();
    assert!(
        matches!(err, TransportError::TlsHandshakeFailed { .. }),
        "{err:?}"
    );
    // A send that accepts any certificate (lab trunks) may reuse any TLS connection to the
    // address...
    out.tls_verify_server = Some(false);
    let sent = client.send(out.clone()).await.unwrap();
    assert_eq!(sent.connection, Some(trunk_connection));
    // ...and, once that is closed, connects without verifying.
    assert!(client.close(trunk_connection));
    wait_for_stats(&client, |s| s.tls.connections_open == 0).await;
    let sent = client.send(out).await.unwrap();
    assert_ne!(sent.connection, Some(trunk_connection));
    assert_eq!(
        sent.tls.unwrap().peer_subject.as_deref(),
        Some("CN=sip-controller self-signed")
    );
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let mut config = udp_tcp_config();
    config.limits.inbound_idle_timeout = Duration::from_millis(200);
    let (layer, mut events) = start(config).await;
    let mut peer = TcpStream::connect(layer.local_addrs(Transport::Tcp)[0])
        .await
        .unwrap();
    peer.write_all(&request("OPTIONS", "TCP", "i1", 0))
        .await
        .unwrap();
    let id = next_message(&mut events).await.connection.unwrap();
    let started = tokio::time::Instant::now();
    match next_event(&mut events).await {
        TransportEvent::Closed { connection, .. } => assert_eq!(connection, id),
        other @ TransportEvent::Message(_) => panic!("expected Closed, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(150));
    let mut buf = [0u8; 4];
    assert!(matches!(
        timeout(WAIT, peer.read(&mut buf)).await.unwrap(),
        Ok(0) | Err(_)
    ));
}

#[tokio::test]
async fn connections_above_the_limit_are_refused() {
    let mut config = udp_tcp_config();
    config.limits.max_connections = 1;
    let (layer, mut events) = start(config).await;
    let server = layer.local_addrs(Transport::Tcp)[0];
    let mut first = TcpStream::connect(server).await.unwrap();
    first
        .write_all(&request("OPTIONS", "TCP", "l1", 0))
        .await
        .unwrap();
    next_message(&mut events).await;
    let mut second = TcpStream::connect(server).await.unwrap();
    let mut buf = [0u8; 4];
    assert!(matches!(
        timeout(WAIT, second.read(&mut buf)).await.unwrap(),
        Ok(0) | Err(_)
    ));
    let stats = layer.stats();
    assert_eq!(stats.tcp.connections_rejected, 1);
    assert_eq!(stats.tcp.connections_accepted, 1);
    assert_eq!(stats.tcp.connections_open, 1);
    // Outbound connects count against the same limit.
    let err = layer
        .send(Outbound::request(
            Transport::Tcp,
            SocketAddr::from(([127, 0, 0, 1], 9)),
            request("OPTIONS", "TCP", "l2", 0),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectionLimit { limit: 1 }),
        "{err:?}"
    );
}
