//! SIP transport layer (RFC 3261 §18): the tokio drivers that carry SIP messages over UDP, TCP
//! and TLS for the IO-free core.
//!
//! It owns the sockets, the connection table, stream framing, TLS and RFC 5626 keepalives, and
//! nothing of SIP beyond that: messages go in and out as bytes. The core reads
//! [`TransportEvent`]s from one bounded channel and answers with [`TransportLayer::send`].
//!
//! ```text
//!                +----------------------------- TransportLayer ------------------------------+
//!  UDP socket -->| udp::receive_loop (drops STUN / CRLF keepalives)                          |
//!  TCP listener->| stream::accept_loop -> run_connection (framing, ping->pong, idle)         |
//!  TLS listener->| stream::accept_loop -> handshake (10 s) -> run_connection                 |
//!                |        every message and every close -> mpsc<TransportEvent> -> the core  |
//!  send(Outbound)| connection id open? -> reuse by (transport, remote)? -> connect (+TLS)    |
//!            --->| UDP request > 1300 B -> TCP (RFC 3261 §18.1.1, top Via rewritten)        |
//!                +---------------------------------------------------------------------------+
//! ```
//!
//! Each stream connection is one task owning its socket; sends reach it through a small command
//! channel and learn the outcome of their write. Framing ([`framing`]) and the TLS policy
//! ([`tls`]) are separate modules; the first is IO-free and unit-tested with literal buffers.

pub mod framing;
mod stream;
pub mod tls;
mod udp;

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError, Weak,
    },
    time::Duration,
};

use serde::Serialize;
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::{mpsc, watch},
};

pub use self::{
    framing::{FramingError, FramingLimits},
    tls::{
        CertificateFiles, ClientCertificatePolicy, ServerCertificate, SniCertificate, TlsInfo,
        TlsSettings,
    },
};
use self::{stream::ConnectionTable, tls::TlsContext};

/// RFC 3261 §18.1.1: a request larger than this (path MTU unknown) must not go over UDP.
pub const UDP_TO_TCP_THRESHOLD: usize = 1300;
/// Largest UDP payload over IPv4 (65535 - 20 - 8).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// A SIP transport (RFC 3261 §18, RFC 5630 for TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Transport {
    /// SIP over UDP, one message per datagram.
    Udp,
    /// SIP over TCP, framed by `Content-Length` (RFC 3261 §18.3).
    Tcp,
    /// SIP over TLS over TCP (RFC 3261 §26.2, RFC 5630), framed like TCP.
    Tls,
}

impl Transport {
    /// Whether messages need stream framing and connections.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The transport token of the Via header (RFC 3261 §20.42).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    fn index(self) -> usize {
        match self {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

/// One TCP or TLS connection, unique for the lifetime of a [`TransportLayer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// The number behind the id (for logs and flow tokens).
    pub fn get(self) -> u64 {
        self.0
    }

    /// The id behind a number from [`ConnectionId::get`] (flow tokens and transaction
    /// targets carry the number). An id whose connection has closed is simply not found.
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

/// A SIP message as it arrived.
#[derive(Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Transport it came over.
    pub transport: Transport,
    /// Our address it arrived on.
    pub local: SocketAddr,
    /// The peer's address (RFC 3261 §18.2.1 `received`/`rport`).
    pub source: SocketAddr,
    /// The stream connection it came on; `None` for UDP.
    pub connection: Option<ConnectionId>,
    /// What the TLS connection negotiated; `None` unless TLS.
    pub tls: Option<Arc<TlsInfo>>,
    /// The whole message (one datagram, or one framed stream message).
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes are a whole SIP message (possibly with credentials): length only.
        f.debug_struct("Inbound")
            .field("transport", &self.transport)
            .field("local", &self.local)
            .field("source", &self.source)
            .field("connection", &self.connection)
            .field("tls", &self.tls)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// What the transport layer reports to the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// A SIP message.
    Message(Inbound),
    /// A stream connection is gone (peer closed, idle timeout, error, framing error); flows
    /// bound to it (RFC 5626) are dead.
    Closed {
        /// The connection that closed.
        connection: ConnectionId,
        /// The peer's address.
        source: SocketAddr,
        /// TCP or TLS.
        transport: Transport,
    },
}

/// A message to send.
#[derive(Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Requested transport; UDP requests above [`UDP_TO_TCP_THRESHOLD`] go over TCP.
    pub transport: Transport,
    /// Where to send it.
    pub destination: SocketAddr,
    /// Send over this connection when it is still open: responses go back over the connection
    /// the request came on (RFC 3261 §18.2.2), requests to a registered flow over its
    /// connection (RFC 5626 §5.3). When it is closed, the destination is used instead.
    pub connection: Option<ConnectionId>,
    /// Our local address to send from (UDP: the socket the request came in on); `None` picks
    /// the first socket of the destination's address family.
    pub local: Option<SocketAddr>,
    /// TLS: SNI and the name the server certificate must match; `None` checks the
    /// destination IP address against the certificate.
    pub server_name: Option<String>,
    /// TLS: override [`TlsSettings::tls_verify_server`] for this send (`Some(false)` accepts
    /// any certificate, lab trunks only).
    pub tls_verify_server: Option<bool>,
    /// Requests may switch UDP → TCP (RFC 3261 §18.1.1); responses never do.
    pub is_request: bool,
    /// The whole message.
    pub bytes: Vec<u8>,
}

impl Outbound {
    /// A request to `destination`, on a new or reused connection for stream transports.
    pub fn request(transport: Transport, destination: SocketAddr, bytes: Vec<u8>) -> Self {
        Self {
            transport,
            destination,
            connection: None,
            local: None,
            server_name: None,
            tls_verify_server: None,
            is_request: true,
            bytes,
        }
    }

    /// A response to `request`: same transport, its connection, its source address, sent from
    /// the local address it arrived on (RFC 3261 §18.2.2). Should the connection be gone, the
    /// layer connects to `destination`; for a stream client that is usually an ephemeral port,
    /// so the core may set `destination` to the `received` address and sent-by port instead.
    pub fn response_to(request: &Inbound, bytes: Vec<u8>) -> Self {
        Self {
            transport: request.transport,
            destination: request.source,
            connection: request.connection,
            local: Some(request.local),
            server_name: None,
            tls_verify_server: None,
            is_request: false,
            bytes,
        }
    }
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes are a whole SIP message (possibly with credentials): length only.
        f.debug_struct("Outbound")
            .field("transport", &self.transport)
            .field("destination", &self.destination)
            .field("connection", &self.connection)
            .field("local", &self.local)
            .field("server_name", &self.server_name)
            .field("tls_verify_server", &self.tls_verify_server)
            .field("is_request", &self.is_request)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// How a message went out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The transport actually used (TCP when a large UDP request switched).
    pub transport: Transport,
    /// The connection used; `None` for UDP.
    pub connection: Option<ConnectionId>,
    /// Our address it left from.
    pub local: SocketAddr,
    /// TLS parameters of the connection used.
    pub tls: Option<Arc<TlsInfo>>,
}

/// Errors of the transport layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A listener could not bind.
    #[error("cannot bind {transport} listener on {address}: {source}")]
    Bind {
        transport: Transport,
        address: SocketAddr,
        source: io::Error,
    },
    /// The transport has no listener (UDP, TCP) or no TLS settings (TLS).
    #[error("transport {transport} is not configured")]
    NotConfigured { transport: Transport },
    /// No UDP socket of the destination's address family.
    #[error("no UDP socket can reach {destination}")]
    NoUdpSocket { destination: SocketAddr },
    /// TCP connect failed.
    #[error("{transport} connect to {destination} failed: {source}")]
    ConnectFailed {
        transport: Transport,
        destination: SocketAddr,
        source: io::Error,
    },
    /// TCP connect did not complete in time.
    #[error("{transport} connect to {destination} timed out after {timeout:?}")]
    ConnectTimeout {
        transport: Transport,
        destination: SocketAddr,
        timeout: Duration,
    },
    /// The TLS handshake failed; `reason` is the rustls error text.
    #[error("TLS handshake with {peer} failed: {reason}")]
    TlsHandshakeFailed { peer: SocketAddr, reason: String },
    /// The TLS handshake did not complete in time.
    #[error("TLS handshake with {peer} timed out after {timeout:?}")]
    TlsHandshakeTimeout { peer: SocketAddr, timeout: Duration },
    /// `server_name` is not a valid DNS name.
    #[error("invalid TLS server name {name:?}")]
    InvalidServerName { name: String },
    /// The connection closed before the message was written.
    #[error("connection {connection} closed")]
    ConnectionClosed { connection: ConnectionId },
    /// Writing to the connection failed (the connection is closed afterwards).
    #[error("write on {connection} failed: {source}")]
    WriteFailed {
        connection: ConnectionId,
        source: io::Error,
    },
    /// Sending a datagram failed.
    #[error("UDP send to {destination} failed: {source}")]
    SendFailed {
        destination: SocketAddr,
        source: io::Error,
    },
    /// The connection table is full.
    #[error("connection limit of {limit} reached")]
    ConnectionLimit { limit: usize },
    /// The message is larger than the transport can carry.
    #[error("{transport} message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        transport: Transport,
        size: usize,
        limit: usize,
    },
    /// A certificate or key file could not be used.
    #[error("TLS certificate or key {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    /// The TLS configuration is unusable (rustls or rcgen error text).
    #[error("TLS configuration: {reason}")]
    TlsConfig { reason: String },
    /// The state directory of the self-signed certificate is not writable.
    #[error("TLS state directory {path}: {source}")]
    StateDir { path: PathBuf, source: io::Error },
    /// The transport layer has been shut down.
    #[error("transport layer shut down")]
    ShutDown,
}

/// Connection limits and timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most simultaneously open TCP and TLS connections (inbound and outbound together,
    /// handshakes in progress included); more are refused.
    pub max_connections: usize,
    /// An inbound connection without traffic for this long is closed.
    pub inbound_idle_timeout: Duration,
    /// An outbound connection without traffic for this long is closed.
    pub outbound_idle_timeout: Duration,
    /// A TLS handshake must complete within this.
    pub tls_handshake_timeout: Duration,
    /// An outbound TCP connect must complete within this.
    pub connect_timeout: Duration,
    /// One write must complete within this, or the connection is closed (a stalled peer).
    pub write_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            inbound_idle_timeout: Duration::from_secs(600),
            outbound_idle_timeout: Duration::from_secs(300),
            tls_handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Configuration of the transport layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// UDP listen addresses. An address with port 0 that also appears in `tcp` gets the same
    /// (ephemeral) port as the TCP listener, as SIP expects UDP and TCP on one port.
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses; outbound TCP needs at least one.
    pub tcp: Vec<SocketAddr>,
    /// TLS listen addresses.
    pub tls: Vec<SocketAddr>,
    /// TLS settings; needed for TLS listeners and outbound TLS.
    pub tls_settings: Option<TlsSettings>,
    /// Connection limits and timers.
    pub limits: ConnectionLimits,
    /// Stream framing limits, which also bound every connection's read buffer.
    pub framing: FramingLimits,
    /// Capacity of the event channel; a full channel slows the readers down (backpressure).
    pub event_queue: usize,
    /// RFC 3261 §18.1.1 UDP → TCP switch threshold; `None` disables the switch.
    pub udp_to_tcp_threshold: Option<usize>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            udp: Vec::new(),
            tcp: Vec::new(),
            tls: Vec::new(),
            tls_settings: None,
            limits: ConnectionLimits::default(),
            framing: FramingLimits::default(),
            event_queue: 4096,
            udp_to_tcp_threshold: Some(UDP_TO_TCP_THRESHOLD),
        }
    }
}

/// Counters of one transport, as read for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransportCounters {
    /// SIP messages received.
    pub messages_in: u64,
    /// SIP messages sent.
    pub messages_out: u64,
    /// Bytes of SIP messages received.
    pub bytes_in: u64,
    /// Bytes of SIP messages sent.
    pub bytes_out: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Inbound connections accepted.
    pub connections_accepted: u64,
    /// Outbound connections established.
    pub connections_opened: u64,
    /// Outbound connects that failed (refused, timeout, TLS).
    pub connections_failed: u64,
    /// Connections refused at the connection limit.
    pub connections_rejected: u64,
    /// TLS handshakes that failed or timed out (both directions).
    pub tls_handshake_failures: u64,
    /// Connections closed because the stream could not be framed.
    pub framing_errors: u64,
    /// RFC 5626 pings answered (streams) or keepalives dropped (UDP: CRLF, STUN).
    pub keepalives: u64,
}

/// Counters of all transports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransportStats {
    /// SIP over UDP.
    pub udp: TransportCounters,
    /// SIP over TCP.
    pub tcp: TransportCounters,
    /// SIP over TLS.
    pub tls: TransportCounters,
}

impl TransportStats {
    /// The counters of one transport.
    pub fn get(&self, transport: Transport) -> &TransportCounters {
        match transport {
            Transport::Udp => &self.udp,
            Transport::Tcp => &self.tcp,
            Transport::Tls => &self.tls,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    connections_opened: AtomicU64,
    connections_failed: AtomicU64,
    connections_rejected: AtomicU64,
    tls_handshake_failures: AtomicU64,
    framing_errors: AtomicU64,
    keepalives: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Counters {
    fn message_in(&self, len: usize) {
        bump(&self.messages_in);
        self.bytes_in.fetch_add(as_u64(len), Ordering::Relaxed);
    }

    fn message_out(&self, len: usize) {
        bump(&self.messages_out);
        self.bytes_out.fetch_add(as_u64(len), Ordering::Relaxed);
    }

    fn snapshot(&self) -> TransportCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportCounters {
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            connections_open: get(&self.connections_open),
            connections_accepted: get(&self.connections_accepted),
            connections_opened: get(&self.connections_opened),
            connections_failed: get(&self.connections_failed),
            connections_rejected: get(&self.connections_rejected),
            tls_handshake_failures: get(&self.tls_handshake_failures),
            framing_errors: get(&self.framing_errors),
            keepalives: get(&self.keepalives),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code path panics while holding these locks; if one ever did, the table is still
    // structurally sound, so carry on rather than poison every later send.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Per-destination connect locks, held weakly (see `stream::connect_lock`).
type ConnectLocks = HashMap<(Transport, SocketAddr), Weak<tokio::sync::Mutex<()>>>;

/// State shared by the handle and every task.
#[derive(Debug)]
struct Inner {
    limits: ConnectionLimits,
    framing: FramingLimits,
    udp_to_tcp_threshold: Option<usize>,
    events: mpsc::Sender<TransportEvent>,
    udp_sockets: Mutex<Vec<Arc<UdpSocket>>>,
    tcp_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    tls: Option<TlsContext>,
    tls_verify_server: bool,
    connections: Mutex<ConnectionTable>,
    /// One async lock per (transport, destination) so concurrent sends to a new destination
    /// open one connection, not several.
    connect_locks: Mutex<ConnectLocks>,
    next_connection: AtomicU64,
    open_connections: AtomicUsize,
    counters: [Counters; 3],
    shutdown: watch::Sender<bool>,
    /// Every task holds a clone; `None` once shutting down (no new tasks).
    task_token: Mutex<Option<mpsc::Sender<()>>>,
    tasks_done: tokio::sync::Mutex<Option<mpsc::Receiver<()>>>,
}

impl Inner {
    fn counters(&self, transport: Transport) -> &Counters {
        &self.counters[transport.index()]
    }

    fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn next_connection_id(&self) -> ConnectionId {
        ConnectionId(self.next_connection.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Spawns a task that shutdown waits for; once shutting down it drops `task` unstarted
    /// and returns `false`.
    fn spawn<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(token) = lock(&self.task_token).clone() else {
            return false;
        };
        tokio::spawn(async move {
            task.await;
            drop(token);
        });
        true
    }

    /// Hands an event to the core; `false` when nobody listens any more or on shutdown.
    async fn deliver(&self, event: TransportEvent, stop: &mut watch::Receiver<bool>) -> bool {
        if *stop.borrow() {
            return self.events.try_send(event).is_ok();
        }
        tokio::select! {
            sent = self.events.send(event) => sent.is_ok(),
            () = stopped(stop) => false,
        }
    }
}

/// Resolves once shutdown is signalled (or the signal is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Holds one place in the connection limit; released on drop.
#[derive(Debug)]
struct ConnectionSlot(Arc<Inner>);

impl ConnectionSlot {
    fn acquire(inner: &Arc<Inner>) -> Option<Self> {
        let max = inner.limits.max_connections;
        inner
            .open_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(inner.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The running transport layer. Dropping it (or [`TransportLayer::shutdown`]) stops the
/// listeners and closes every connection.
#[derive(Debug)]
pub struct TransportLayer {
    inner: Arc<Inner>,
    udp_addrs: Vec<SocketAddr>,
    tls_certificate_file: Option<PathBuf>,
}

impl TransportLayer {
    /// Binds every listener and starts receiving; returns the handle and the event channel.
    pub async fn start(
        config: TransportConfig,
    ) -> Result<(Self, mpsc::Receiver<TransportEvent>), TransportError> {
        if !config.tls.is_empty() && config.tls_settings.is_none() {
            return Err(TransportError::TlsConfig {
                reason: "TLS listeners configured without TLS settings".to_owned(),
            });
        }
        let tls = match &config.tls_settings {
            Some(settings) => {
                let ips: Vec<IpAddr> = config.tls.iter().map(SocketAddr::ip).collect();
                Some(TlsContext::build(settings, &ips)?)
            }
            None => None,
        };

        let mut tcp_listeners = Vec::new();
        for &address in &config.tcp {
            tcp_listeners.push((address, bind_tcp(Transport::Tcp, address).await?));
        }
        let mut tls_listeners = Vec::new();
        for &address in &config.tls {
            tls_listeners.push((address, bind_tcp(Transport::Tls, address).await?));
        }
        let mut udp_sockets = Vec::new();
        let mut paired = vec![false; tcp_listeners.len()];
        for &address in &config.udp {
            udp_sockets.push(bind_udp(address, &tcp_listeners, &mut paired).await?);
        }

        let (events, events_rx) = mpsc::channel(config.event_queue.max(1));
        let (task_token, tasks_done) = mpsc::channel(1);
        let local = |listeners: &[(SocketAddr, TcpListener)]| {
            listeners
                .iter()
                .map(|(configured, l)| l.local_addr().unwrap_or(*configured))
                .collect::<Vec<_>>()
        };
        let udp_addrs: Vec<SocketAddr> = udp_sockets
            .iter()
            .zip(&config.udp)
            .map(|(s, configured)| s.local_addr().unwrap_or(*configured))
            .collect();
        let tls_certificate_file = tls.as_ref().map(|t| t.certificate_file.clone());
        let inner = Arc::new(Inner {
            limits: config.limits,
            framing: config.framing,
            udp_to_tcp_threshold: config.udp_to_tcp_threshold,
            events,
            udp_sockets: Mutex::new(udp_sockets.clone()),
            tcp_addrs: local(&tcp_listeners),
            tls_addrs: local(&tls_listeners),
            tls_verify_server: config
                .tls_settings
                .as_ref()
                .is_none_or(|s| s.tls_verify_server),
            tls,
            connections: Mutex::new(ConnectionTable::default()),
            connect_locks: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
            open_connections: AtomicUsize::new(0),
            counters: Default::default(),
            shutdown: watch::Sender::new(false),
            task_token: Mutex::new(Some(task_token)),
            tasks_done: tokio::sync::Mutex::new(Some(tasks_done)),
        });

        for (socket, local) in udp_sockets.into_iter().zip(udp_addrs.iter().copied()) {
            inner.spawn(udp::receive_loop(inner.clone(), socket, local));
        }
        for (_, listener) in tcp_listeners {
            inner.spawn(stream::accept_loop(inner.clone(), listener, Transport::Tcp));
        }
        for (_, listener) in tls_listeners {
            inner.spawn(stream::accept_loop(inner.clone(), listener, Transport::Tls));
        }
        tracing::info!(
            udp = ?udp_addrs,
            tcp = ?inner.tcp_addrs,
            tls = ?inner.tls_addrs,
            "SIP transport listening"
        );
        Ok((
            Self {
                inner,
                udp_addrs,
                tls_certificate_file,
            },
            events_rx,
        ))
    }

    /// Sends one message (see [`Outbound`] for how the connection is chosen).
    pub async fn send(&self, mut out: Outbound) -> Result<Sent, TransportError> {
        if self.inner.is_shut_down() {
            return Err(TransportError::ShutDown);
        }
        if out.transport == Transport::Udp && self.switches_to_tcp(out.is_request, out.bytes.len())
        {
            // RFC 3261 §18.1.1: a request above 1300 bytes (path MTU unknown) MUST use a
            // congestion-controlled transport, and the top Via MUST say so.
            framing::rewrite_top_via_transport(&mut out.bytes, b"UDP", b"TCP");
            tracing::debug!(
                destination = %out.destination,
                len = out.bytes.len(),
                "large UDP request sent over TCP (RFC 3261 §18.1.1)"
            );
            out.transport = Transport::Tcp;
            out.connection = None;
            out.local = None;
        }
        match out.transport {
            Transport::Udp => udp::send(&self.inner, out).await,
            Transport::Tcp | Transport::Tls => stream::send(&self.inner, out).await,
        }
    }

    /// Whether a UDP message of `len` bytes would go over TCP instead (RFC 3261 §18.1.1), so
    /// that the core can write the right transport into the Via before encoding. `send` applies
    /// the same rule (and rewrites a UDP top Via itself).
    pub fn switches_to_tcp(&self, is_request: bool, len: usize) -> bool {
        is_request
            && !self.inner.tcp_addrs.is_empty()
            && self.inner.udp_to_tcp_threshold.is_some_and(|t| len > t)
    }

    /// Bound listen addresses of a transport (useful with port 0).
    pub fn local_addrs(&self, transport: Transport) -> Vec<SocketAddr> {
        match transport {
            Transport::Udp => self.udp_addrs.clone(),
            Transport::Tcp => self.inner.tcp_addrs.clone(),
            Transport::Tls => self.inner.tls_addrs.clone(),
        }
    }

    /// The default server certificate's PEM file (the generated one when self-signed).
    pub fn tls_certificate_file(&self) -> Option<&Path> {
        self.tls_certificate_file.as_deref()
    }

    /// Whether a connection is still open.
    pub fn is_open(&self, connection: ConnectionId) -> bool {
        lock(&self.inner.connections).get(connection).is_some()
    }

    /// Closes a connection (a `Closed` event follows); `false` if it was not open.
    pub fn close(&self, connection: ConnectionId) -> bool {
        let entry = lock(&self.inner.connections).get(connection).cloned();
        entry.is_some_and(|e| e.request_close())
    }

    /// Counter snapshot.
    pub fn stats(&self) -> TransportStats {
        let c = |t| self.inner.counters(t).snapshot();
        TransportStats {
            udp: c(Transport::Udp),
            tcp: c(Transport::Tcp),
            tls: c(Transport::Tls),
        }
    }

    /// Stops the listeners and closes every connection (without waiting; see
    /// [`TransportLayer::shutdown_and_wait`]). Later sends fail with
    /// [`TransportError::ShutDown`].
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        lock(&self.inner.task_token).take();
        lock(&self.inner.udp_sockets).clear();
    }

    /// [`TransportLayer::shutdown`], then waits until every listener and connection task ended
    /// (sockets closed, TLS `close_notify` sent).
    pub async fn shutdown_and_wait(&self) {
        self.shutdown();
        let mut done = self.inner.tasks_done.lock().await;
        if let Some(rx) = done.as_mut() {
            // Returns None once every task dropped its token.
            while rx.recv().await.is_some() {}
        }
        done.take();
    }
}

impl Drop for TransportLayer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn bind_tcp(
    transport: Transport,
    address: SocketAddr,
) -> Result<TcpListener, TransportError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| TransportError::Bind {
            transport,
            address,
            source,
        })
}

/// Binds a UDP socket; port 0 shares the port of an unpaired TCP listener configured with the
/// same address (SIP serves UDP and TCP on one port).
async fn bind_udp(
    address: SocketAddr,
    tcp_listeners: &[(SocketAddr, TcpListener)],
    paired: &mut [bool],
) -> Result<Arc<UdpSocket>, TransportError> {
    let bind_error = |source| TransportError::Bind {
        transport: Transport::Udp,
        address,
        source,
    };
    if address.port() == 0 {
        let partner = tcp_listeners
            .iter()
            .enumerate()
            .find(|(i, (configured, _))| *configured == address && !paired[*i]);
        if let Some((i, (_, listener))) = partner {
            if let Ok(tcp_local) = listener.local_addr() {
                match UdpSocket::bind(SocketAddr::new(address.ip(), tcp_local.port())).await {
                    Ok(socket) => {
                        paired[i] = true;
                        return Ok(Arc::new(socket));
                    }
                    Err(e) => tracing::debug!(
                        port = tcp_local.port(),
                        error = %e,
                        "UDP port of the TCP listener taken; using another ephemeral port"
                    ),
                }
            }
        }
    }
    UdpSocket::bind(address)
        .await
        .map(Arc::new)
        .map_err(bind_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_debug_hides_the_message() {
        let out = Outbound::request(
            Transport::Udp,
            SocketAddr::from(([192, 0, 2, 1], 5060)),
            b"REGISTER sip:x SIP/2.0\r\nAuthorization: Digest response=\"secret\"\r\n\r\n".to_vec(),
        );
        let debug = format!("{out:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("len: 67"), "{debug}");
    }

    #[test]
    fn response_goes_back_the_way_the_request_came() {
        let request = Inbound {
            transport: Transport::Tls,
            local: SocketAddr::from(([127, 0, 0, 1], 5061)),
            source: SocketAddr::from(([192, 0, 2, 7], 40_000)),
            connection: Some(ConnectionId(7)),
            tls: None,
            bytes: Vec::new(),
        };
        let out = Outbound::response_to(&request, b"SIP/2.0 200 OK\r\n\r\n".to_vec());
        assert_eq!(out.transport, Transport::Tls);
        assert_eq!(out.destination, request.source);
        assert_eq!(out.connection, Some(ConnectionId(7)));
        assert_eq!(out.local, Some(request.local));
        assert!(!out.is_request);
    }

    #[test]
    fn via_tokens_and_ids_display() {
        assert_eq!(Transport::Tls.to_string(), "TLS");
        assert_eq!(ConnectionId(3).to_string(), "conn-3");
        assert!(Transport::Tcp.is_stream());
        assert!(!Transport::Udp.is_stream());
    }

    #[tokio::test]
    async fn tls_listener_without_settings_is_refused() {
        let config = TransportConfig {
            tls: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..TransportConfig::default()
        };
        assert!(matches!(
            TransportLayer::start(config).await,
            Err(TransportError::TlsConfig { .. })
        ));
    }

    #[tokio::test]
    async fn udp_and_tcp_on_port_zero_share_one_port() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (layer, _events) = TransportLayer::start(TransportConfig {
            udp: vec![any],
            tcp: vec![any],
            ..TransportConfig::default()
        })
        .await
        .unwrap();
        let udp = layer.local_addrs(Transport::Udp);
        let tcp = layer.local_addrs(Transport::Tcp);
        assert_eq!(udp.len(), 1);
        assert_eq!(udp, tcp);
        assert_ne!(udp[0].port(), 0);
        layer.shutdown_and_wait().await;
        assert!(matches!(
            layer
                .send(Outbound::request(Transport::Udp, udp[0], b"x".to_vec()))
                .await,
            Err(TransportError::ShutDown)
        ));
    }

    #[tokio::test]
    async fn unconfigured_transports_are_reported() {
        let (layer, _events) = TransportLayer::start(TransportConfig::default())
            .await
            .unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], 9));
        for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            let err = layer
                .send(Outbound::request(transport, to, b"x".to_vec()))
                .await
                .unwrap_err();
            assert!(
                matches!(err, TransportError::NotConfigured { transport: t } if t == transport),
                "{err:?}"
            );
        }
    }
}
