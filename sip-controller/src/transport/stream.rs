//! SIP over TCP and TLS (RFC 3261 §18, RFC 5626 flows): listeners, outbound connects, the
//! connection table, and the per-connection task that frames, answers keepalives, writes and
//! times out.
//!
//! One task owns each connection's socket. Sends find the connection in the table and hand it
//! a [`Command`]; the task writes and answers with the outcome, so `send` reports a write
//! failure instead of losing the message silently. A connection that ends hands back the
//! messages it never wrote, so `send` can open a fresh connection for them.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{mpsc, oneshot, watch},
    time::{timeout, Duration, Instant},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{
    bump,
    framing::{self, Frame},
    lock, stopped, ConnectionId, ConnectionSlot, Inbound, Inner, Outbound, Sent, TlsInfo,
    Transport, TransportError, TransportEvent,
};

/// Queued writes per connection before senders wait.
const COMMAND_QUEUE: usize = 64;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// How long closing (TLS `close_notify`) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Who opened the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    Inbound,
    Outbound,
}

/// Why a write did not happen.
#[derive(Debug)]
pub(super) enum WriteFailure {
    /// The connection ended before writing; the message comes back for another connection.
    NotWritten(Vec<u8>),
    /// The write itself failed (the connection is closed now).
    Io(io::Error),
}

#[derive(Debug)]
pub(super) enum Command {
    Write {
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<(), WriteFailure>>,
    },
    Close,
}

/// One open connection as the table sees it.
#[derive(Clone, Debug)]
pub(super) struct ConnectionEntry {
    id: ConnectionId,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    direction: Direction,
    /// Outbound TLS only: the name the server certificate was verified against (the SNI name,
    /// or the IP address); `None` when not verified (or inbound).
    verified_name: Option<String>,
    tls: Option<Arc<TlsInfo>>,
    commands: mpsc::Sender<Command>,
}

impl ConnectionEntry {
    pub(super) fn request_close(&self) -> bool {
        self.commands.try_send(Command::Close).is_ok()
    }

    /// Whether a new request may reuse this connection (RFC 3261 §18.1.1 reuse by remote
    /// address): always for TCP; for TLS only if its server certificate was verified against
    /// the same name, unless this send does not verify.
    fn reusable_for(&self, verify: bool, expected_name: &str) -> bool {
        match self.transport {
            Transport::Tls if verify => self
                .verified_name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(expected_name)),
            _ => true,
        }
    }
}

/// Open connections by id, indexed by (transport, remote address) for reuse.
#[derive(Debug, Default)]
pub(super) struct ConnectionTable {
    by_id: HashMap<ConnectionId, ConnectionEntry>,
    by_remote: HashMap<(Transport, SocketAddr), Vec<ConnectionId>>,
}

impl ConnectionTable {
    pub(super) fn get(&self, id: ConnectionId) -> Option<&ConnectionEntry> {
        self.by_id.get(&id)
    }

    fn insert(&mut self, entry: ConnectionEntry) {
        self.by_remote
            .entry((entry.transport, entry.remote))
            .or_default()
            .push(entry.id);
        self.by_id.insert(entry.id, entry);
    }

    fn remove(&mut self, id: ConnectionId) -> Option<ConnectionEntry> {
        let entry = self.by_id.remove(&id)?;
        let key = (entry.transport, entry.remote);
        if let Some(ids) = self.by_remote.get_mut(&key) {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                self.by_remote.remove(&key);
            }
        }
        Some(entry)
    }

    /// The newest reusable connection to `remote`.
    fn find_reusable(
        &self,
        transport: Transport,
        remote: SocketAddr,
        verify: bool,
        expected_name: &str,
    ) -> Option<ConnectionEntry> {
        self.by_remote
            .get(&(transport, remote))?
            .iter()
            .rev()
            .filter_map(|id| self.by_id.get(id))
            .find(|e| e.reusable_for(verify, expected_name))
            .cloned()
    }
}

/// Accepts TCP (or TLS) connections until shutdown.
pub(super) async fn accept_loop(inner: Arc<Inner>, listener: TcpListener, transport: Transport) {
    let mut stop = inner.shutdown.subscribe();
    let listen = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listen = ?listen, error = %e, "{transport} accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let counters = inner.counters(transport);
        let Some(slot) = ConnectionSlot::acquire(&inner) else {
            bump(&counters.connections_rejected);
            tracing::warn!(
                %peer,
                limit = inner.limits.max_connections,
                "{transport} connection refused: connection limit reached"
            );
            continue;
        };
        bump(&counters.connections_accepted);
        inner.spawn(serve_inbound(inner.clone(), tcp, peer, transport, slot));
    }
}

async fn serve_inbound(
    inner: Arc<Inner>,
    tcp: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    slot: ConnectionSlot,
) {
    let Ok(local) = tcp.local_addr() else {
        return;
    };
    // SIP messages are small and latency matters more than segment count.
    let _ = tcp.set_nodelay(true);
    match transport {
        Transport::Tls => {
            let Some(tls) = inner.tls.as_ref() else {
                return;
            };
            let acceptor = TlsAcceptor::from(tls.server.clone());
            let mut stop = inner.shutdown.subscribe();
            let handshake = timeout(inner.limits.tls_handshake_timeout, acceptor.accept(tcp));
            let result = tokio::select! {
                () = stopped(&mut stop) => return,
                result = handshake => result,
            };
            let stream = match result {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    bump(&inner.counters(Transport::Tls).tls_handshake_failures);
                    tracing::info!(%peer, error = %e, "inbound TLS handshake failed");
                    return;
                }
                Err(_) => {
                    bump(&inner.counters(Transport::Tls).tls_handshake_failures);
                    tracing::info!(%peer, "inbound TLS handshake timed out");
                    return;
                }
            };
            let (_, session) = stream.get_ref();
            let info = TlsInfo::from_connection(session, session.server_name().map(str::to_owned));
            tracing::debug!(
                %peer,
                version = %info.version,
                cipher = %info.cipher_suite,
                subject = ?info.peer_subject,
                sni = ?info.sni,
                "inbound TLS connection"
            );
            let (entry, commands) = register(
                &inner,
                Transport::Tls,
                local,
                peer,
                Direction::Inbound,
                None,
                Some(Arc::new(info)),
            );
            run_connection(inner, entry, stream, commands, slot).await;
        }
        Transport::Tcp | Transport::Udp => {
            let (entry, commands) = register(
                &inner,
                Transport::Tcp,
                local,
                peer,
                Direction::Inbound,
                None,
                None,
            );
            run_connection(inner, entry, tcp, commands, slot).await;
        }
    }
}

fn register(
    inner: &Arc<Inner>,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    direction: Direction,
    verified_name: Option<String>,
    tls: Option<Arc<TlsInfo>>,
) -> (ConnectionEntry, mpsc::Receiver<Command>) {
    let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let entry = ConnectionEntry {
        id: inner.next_connection_id(),
        transport,
        local,
        remote,
        direction,
        verified_name,
        tls,
        commands,
    };
    bump(&inner.counters(transport).connections_open);
    lock(&inner.connections).insert(entry.clone());
    (entry, commands_rx)
}

/// Why a connection ended (for the log).
#[derive(Debug)]
enum CloseReason {
    PeerClosed,
    ReadError(io::Error),
    WriteError(io::Error),
    Framing(framing::FramingError),
    IdleTimeout,
    Requested,
    Shutdown,
    NoConsumer,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::ReadError(e) => write!(f, "read error: {e}"),
            CloseReason::WriteError(e) => write!(f, "write error: {e}"),
            CloseReason::Framing(e) => write!(f, "framing error: {e}"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::Requested => f.write_str("closed by us"),
            CloseReason::Shutdown => f.write_str("shutdown"),
            CloseReason::NoConsumer => f.write_str("event channel closed"),
        }
    }
}

/// One connection's task state.
struct Connection<S> {
    inner: Arc<Inner>,
    entry: ConnectionEntry,
    stream: S,
    stop: watch::Receiver<bool>,
    /// Received bytes not yet framed; bounded by the framing limits plus one read chunk.
    buffer: Vec<u8>,
}

/// Serves one connection until it ends, then removes it and reports `Closed`.
async fn run_connection<S>(
    inner: Arc<Inner>,
    entry: ConnectionEntry,
    stream: S,
    mut commands: mpsc::Receiver<Command>,
    slot: ConnectionSlot,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let idle_timeout = match entry.direction {
        Direction::Inbound => inner.limits.inbound_idle_timeout,
        Direction::Outbound => inner.limits.outbound_idle_timeout,
    };
    let mut conn = Connection {
        stop: inner.shutdown.subscribe(),
        inner,
        entry,
        stream,
        buffer: Vec::with_capacity(READ_CHUNK),
    };
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut chunk = vec![0u8; READ_CHUNK];

    let reason = loop {
        let activity = tokio::select! {
            () = stopped(&mut conn.stop) => Err(CloseReason::Shutdown),
            () = &mut idle => Err(CloseReason::IdleTimeout),
            command = commands.recv() => match command {
                Some(Command::Write { bytes, done }) => conn.write(bytes, done).await,
                // `None` cannot happen while the table holds a sender; treat it as a close.
                Some(Command::Close) | None => Err(CloseReason::Requested),
            },
            read = conn.stream.read(&mut chunk) => match read {
                Ok(0) => Err(CloseReason::PeerClosed),
                Ok(n) => conn.received(&chunk[..n]).await,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(CloseReason::PeerClosed),
                Err(e) => Err(CloseReason::ReadError(e)),
            },
        };
        match activity {
            Ok(()) => idle.as_mut().reset(Instant::now() + idle_timeout),
            Err(reason) => break reason,
        }
    };
    conn.finish(reason, commands, slot).await;
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Writes one message for a sender and tells it the outcome.
    async fn write(
        &mut self,
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<(), WriteFailure>>,
    ) -> Result<(), CloseReason> {
        match write_message(&mut self.stream, &bytes, self.inner.limits.write_timeout).await {
            Ok(()) => {
                self.inner
                    .counters(self.entry.transport)
                    .message_out(bytes.len());
                let _ = done.send(Ok(()));
                Ok(())
            }
            Err(e) => {
                let reason = CloseReason::WriteError(io::Error::new(e.kind(), e.to_string()));
                let _ = done.send(Err(WriteFailure::Io(e)));
                Err(reason)
            }
        }
    }

    /// Appends received bytes and handles every complete frame (RFC 3261 §18.3).
    async fn received(&mut self, data: &[u8]) -> Result<(), CloseReason> {
        let counters = self.inner.counters(self.entry.transport);
        self.buffer.extend_from_slice(data);
        let mut start = 0;
        let outcome = loop {
            let frame = match framing::next_frame(&self.buffer[start..], &self.inner.framing) {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(()),
                Err(e) => {
                    bump(&counters.framing_errors);
                    break Err(CloseReason::Framing(e));
                }
            };
            match frame {
                Frame::Message(len) => {
                    counters.message_in(len);
                    let event = TransportEvent::Message(Inbound {
                        transport: self.entry.transport,
                        local: self.entry.local,
                        source: self.entry.remote,
                        connection: Some(self.entry.id),
                        tls: self.entry.tls.clone(),
                        bytes: self.buffer[start..start + len].to_vec(),
                    });
                    if !self.inner.deliver(event, &mut self.stop).await {
                        break Err(CloseReason::NoConsumer);
                    }
                }
                // RFC 5626 §3.5.1: answer a CRLFCRLF ping with a CRLF pong.
                Frame::KeepalivePing => {
                    bump(&counters.keepalives);
                    let limit = self.inner.limits.write_timeout;
                    if let Err(e) = write_message(&mut self.stream, framing::PONG, limit).await {
                        break Err(CloseReason::WriteError(e));
                    }
                }
                Frame::Skip(_) => {}
            }
            start += frame.consumed();
        };
        self.buffer.drain(..start);
        outcome
    }

    /// Removes the connection, hands back unwritten messages, closes the socket and reports
    /// `Closed`.
    async fn finish(
        mut self,
        reason: CloseReason,
        mut commands: mpsc::Receiver<Command>,
        slot: ConnectionSlot,
    ) {
        let entry = &self.entry;
        lock(&self.inner.connections).remove(entry.id);
        self.inner
            .counters(entry.transport)
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        // Hand queued messages back to their senders so they can use another connection.
        commands.close();
        while let Ok(command) = commands.try_recv() {
            if let Command::Write { bytes, done } = command {
                let _ = done.send(Err(WriteFailure::NotWritten(bytes)));
            }
        }
        if matches!(reason, CloseReason::Framing(_)) {
            tracing::info!(connection = %entry.id, peer = %entry.remote, %reason,
                "{} connection closed", entry.transport);
        } else {
            tracing::debug!(connection = %entry.id, peer = %entry.remote, %reason,
                "{} connection closed", entry.transport);
        }
        // Best effort: TLS close_notify, TCP FIN.
        let _ = timeout(CLOSE_TIMEOUT, self.stream.shutdown()).await;
        drop(self.stream);
        drop(slot);
        let closed = TransportEvent::Closed {
            connection: self.entry.id,
            source: self.entry.remote,
            transport: self.entry.transport,
        };
        self.inner.deliver(closed, &mut self.stop).await;
    }
}

async fn write_message<S>(stream: &mut S, bytes: &[u8], limit: Duration) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    timeout(limit, write)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?
}

/// Sends over TCP or TLS: the named connection if open, else a reusable one to the
/// destination, else a new one.
pub(super) async fn send(inner: &Arc<Inner>, out: Outbound) -> Result<Sent, TransportError> {
    let transport = out.transport;
    let configured = match transport {
        Transport::Tcp => !inner.tcp_addrs.is_empty(),
        Transport::Tls => inner.tls.is_some(),
        Transport::Udp => false,
    };
    if !configured {
        return Err(TransportError::NotConfigured { transport });
    }
    let limit = inner.framing.max_message_bytes();
    if out.bytes.len() > limit {
        return Err(TransportError::MessageTooLarge {
            transport,
            size: out.bytes.len(),
            limit,
        });
    }
    let verify = out.tls_verify_server.unwrap_or(inner.tls_verify_server);
    let expected_name = out
        .server_name
        .clone()
        .unwrap_or_else(|| out.destination.ip().to_string());
    let mut bytes = out.bytes;

    // RFC 3261 §18.2.2 responses, RFC 5626 §5.3 requests over a flow: the named connection.
    if let Some(id) = out.connection {
        let entry = lock(&inner.connections)
            .get(id)
            .filter(|e| e.transport == transport)
            .cloned();
        if let Some(entry) = entry {
            match write_via(&entry, bytes).await? {
                Ok(sent) => return Ok(sent),
                Err(returned) => bytes = returned,
            }
        }
    }

    // RFC 3261 §18.1.1 / RFC 5923: reuse an open connection to the destination.
    let find = || {
        lock(&inner.connections).find_reusable(transport, out.destination, verify, &expected_name)
    };
    if let Some(entry) = find() {
        match write_via(&entry, bytes).await? {
            Ok(sent) => return Ok(sent),
            // It ended under us: fall through to a fresh connection.
            Err(returned) => bytes = returned,
        }
    }
    // Connect, once per destination even under concurrent sends.
    let entry = {
        let connect_lock = connect_lock(inner, transport, out.destination);
        let _connecting = connect_lock.lock().await;
        // Someone may have connected while we waited.
        match find() {
            Some(entry) => entry,
            None => {
                connect(
                    inner,
                    transport,
                    out.destination,
                    out.server_name.as_deref(),
                    verify,
                )
                .await?
            }
        }
    };
    match write_via(&entry, bytes).await? {
        Ok(sent) => Ok(sent),
        Err(_) => Err(TransportError::ConnectionClosed {
            connection: entry.id,
        }),
    }
}

fn connect_lock(
    inner: &Inner,
    transport: Transport,
    destination: SocketAddr,
) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = lock(&inner.connect_locks);
    // Forget locks nobody holds any more, so the map stays as small as the destinations
    // being connected to right now.
    locks.retain(|_, weak| weak.strong_count() > 0);
    if let Some(existing) = locks
        .get(&(transport, destination))
        .and_then(std::sync::Weak::upgrade)
    {
        return existing;
    }
    let fresh = Arc::new(tokio::sync::Mutex::new(()));
    locks.insert((transport, destination), Arc::downgrade(&fresh));
    fresh
}

/// Hands the message to the connection's task: `Ok(Ok(sent))` when written,
/// `Ok(Err(bytes))` when the connection ended before writing (try another), `Err` when the
/// write failed.
async fn write_via(
    entry: &ConnectionEntry,
    bytes: Vec<u8>,
) -> Result<Result<Sent, Vec<u8>>, TransportError> {
    let (done, outcome) = oneshot::channel();
    if let Err(mpsc::error::SendError(command)) =
        entry.commands.send(Command::Write { bytes, done }).await
    {
        return Ok(Err(match command {
            Command::Write { bytes, .. } => bytes,
            Command::Close => Vec::new(),
        }));
    }
    match outcome.await {
        Ok(Ok(())) => Ok(Ok(Sent {
            transport: entry.transport,
            connection: Some(entry.id),
            local: entry.local,
            tls: entry.tls.clone(),
        })),
        Ok(Err(WriteFailure::NotWritten(bytes))) => Ok(Err(bytes)),
        Ok(Err(WriteFailure::Io(source))) => Err(TransportError::WriteFailed {
            connection: entry.id,
            source,
        }),
        // The task is gone without answering (runtime shutting down).
        Err(_) => Err(TransportError::ConnectionClosed {
            connection: entry.id,
        }),
    }
}

/// Opens an outbound connection (TCP connect, then the TLS handshake for TLS) and starts its
/// task.
async fn connect(
    inner: &Arc<Inner>,
    transport: Transport,
    destination: SocketAddr,
    server_name: Option<&str>,
    verify: bool,
) -> Result<ConnectionEntry, TransportError> {
    let counters = inner.counters(transport);
    let slot = ConnectionSlot::acquire(inner).ok_or_else(|| {
        bump(&counters.connections_rejected);
        TransportError::ConnectionLimit {
            limit: inner.limits.max_connections,
        }
    })?;
    if transport != Transport::Tls {
        let tcp = tcp_connect(inner, transport, destination).await?;
        let local = local_addr(&tcp, transport, destination)?;
        bump(&counters.connections_opened);
        let (entry, commands) = register(
            inner,
            Transport::Tcp,
            local,
            destination,
            Direction::Outbound,
            None,
            None,
        );
        return launch(inner, entry, tcp, commands, slot);
    }

    let (name, config) = tls_client_setup(inner, destination, server_name, verify)?;
    let tcp = tcp_connect(inner, transport, destination).await?;
    let local = local_addr(&tcp, transport, destination)?;
    let handshake = TlsConnector::from(config).connect(name, tcp);
    let handshake_failed = |error| {
        bump(&counters.tls_handshake_failures);
        bump(&counters.connections_failed);
        error
    };
    let stream = match timeout(inner.limits.tls_handshake_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return Err(handshake_failed(TransportError::TlsHandshakeFailed {
                peer: destination,
                reason: e.to_string(),
            }))
        }
        Err(_) => {
            return Err(handshake_failed(TransportError::TlsHandshakeTimeout {
                peer: destination,
                timeout: inner.limits.tls_handshake_timeout,
            }))
        }
    };
    bump(&counters.connections_opened);
    let (_, session) = stream.get_ref();
    // SNI is only sent for DNS names (RFC 6066 §3).
    let sni = server_name.filter(|n| n.parse::<IpAddr>().is_err());
    let info = TlsInfo::from_connection(session, sni.map(str::to_owned));
    let verified_name =
        verify.then(|| server_name.map_or_else(|| destination.ip().to_string(), str::to_owned));
    tracing::debug!(
        %destination,
        version = %info.version,
        cipher = %info.cipher_suite,
        subject = ?info.peer_subject,
        "outbound TLS connection"
    );
    let (entry, commands) = register(
        inner,
        Transport::Tls,
        local,
        destination,
        Direction::Outbound,
        verified_name,
        Some(Arc::new(info)),
    );
    launch(inner, entry, stream, commands, slot)
}

/// Starts the task of a freshly registered outbound connection.
fn launch<S>(
    inner: &Arc<Inner>,
    entry: ConnectionEntry,
    stream: S,
    commands: mpsc::Receiver<Command>,
    slot: ConnectionSlot,
) -> Result<ConnectionEntry, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if inner.spawn(run_connection(
        inner.clone(),
        entry.clone(),
        stream,
        commands,
        slot,
    )) {
        return Ok(entry);
    }
    // Shutting down: the task never ran (socket and slot are dropped), undo the registration.
    lock(&inner.connections).remove(entry.id);
    inner
        .counters(entry.transport)
        .connections_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    Err(TransportError::ShutDown)
}

/// The server name to send and verify, and the client configuration for this send.
fn tls_client_setup(
    inner: &Inner,
    destination: SocketAddr,
    server_name: Option<&str>,
    verify: bool,
) -> Result<(ServerName<'static>, Arc<rustls::ClientConfig>), TransportError> {
    let tls = inner.tls.as_ref().ok_or(TransportError::NotConfigured {
        transport: Transport::Tls,
    })?;
    let name = match server_name {
        Some(name) => ServerName::try_from(name.to_owned()).map_err(|_| {
            TransportError::InvalidServerName {
                name: name.to_owned(),
            }
        })?,
        None => ServerName::from(destination.ip()),
    };
    let config = if verify {
        tls.client_verifying.clone()
    } else {
        tracing::warn!(
            %destination,
            server_name = ?server_name,
            "outbound TLS without server certificate verification (tls_verify_server = false)"
        );
        tls.client_accept_any.clone()
    };
    Ok((name, config))
}

/// TCP connect with the connect timeout, from the listening IP when there is a specific one.
async fn tcp_connect(
    inner: &Inner,
    transport: Transport,
    destination: SocketAddr,
) -> Result<TcpStream, TransportError> {
    let counters = inner.counters(transport);
    let connect_failed = |source| {
        bump(&counters.connections_failed);
        TransportError::ConnectFailed {
            transport,
            destination,
            source,
        }
    };
    let socket = if destination.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(connect_failed)?;
    // Leave from the listening address (so the peer sees the address our Via names), on an
    // ephemeral port.
    if let Some(ip) = source_ip(inner, transport, destination) {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(connect_failed)?;
    }
    let tcp = match timeout(inner.limits.connect_timeout, socket.connect(destination)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(connect_failed(e)),
        Err(_) => {
            bump(&counters.connections_failed);
            return Err(TransportError::ConnectTimeout {
                transport,
                destination,
                timeout: inner.limits.connect_timeout,
            });
        }
    };
    // SIP messages are small and latency matters more than segment count.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

fn local_addr(
    tcp: &TcpStream,
    transport: Transport,
    destination: SocketAddr,
) -> Result<SocketAddr, TransportError> {
    tcp.local_addr()
        .map_err(|source| TransportError::ConnectFailed {
            transport,
            destination,
            source,
        })
}

/// The specific IP of a listener of this transport in the destination's family, if any.
fn source_ip(inner: &Inner, transport: Transport, destination: SocketAddr) -> Option<IpAddr> {
    let listeners = match transport {
        Transport::Tls => &inner.tls_addrs,
        _ => &inner.tcp_addrs,
    };
    listeners
        .iter()
        .map(SocketAddr::ip)
        .find(|ip| !ip.is_unspecified() && ip.is_ipv4() == destination.is_ipv4())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, transport: Transport, verified_name: Option<&str>) -> ConnectionEntry {
        let (commands, _rx) = mpsc::channel(1);
        ConnectionEntry {
            id: ConnectionId(id),
            transport,
            local: SocketAddr::from(([127, 0, 0, 1], 5061)),
            remote: SocketAddr::from(([192, 0, 2, 1], 5061)),
            direction: Direction::Outbound,
            verified_name: verified_name.map(str::to_owned),
            tls: None,
            commands,
        }
    }

    #[test]
    fn tls_reuse_requires_the_same_verified_name() {
        let verified = entry(1, Transport::Tls, Some("trunk.example.com"));
        assert!(verified.reusable_for(true, "TRUNK.example.com"));
        assert!(!verified.reusable_for(true, "other.example.com"));
        assert!(verified.reusable_for(false, "anything"));
        let unverified = entry(2, Transport::Tls, None);
        assert!(!unverified.reusable_for(true, "trunk.example.com"));
        assert!(unverified.reusable_for(false, "trunk.example.com"));
        assert!(entry(3, Transport::Tcp, None).reusable_for(true, "x"));
    }

    #[test]
    fn table_finds_newest_reusable_and_forgets_removed() {
        let mut table = ConnectionTable::default();
        let remote = SocketAddr::from(([192, 0, 2, 1], 5061));
        table.insert(entry(1, Transport::Tls, Some("a")));
        table.insert(entry(2, Transport::Tls, Some("b")));
        table.insert(entry(3, Transport::Tls, Some("a")));
        let found = |t: &ConnectionTable, name| {
            t.find_reusable(Transport::Tls, remote, true, name)
                .map(|e| e.id)
        };
        assert_eq!(found(&table, "a"), Some(ConnectionId(3)));
        assert_eq!(found(&table, "b"), Some(ConnectionId(2)));
        assert!(table
            .find_reusable(Transport::Tcp, remote, true, "a")
            .is_none());
        table.remove(ConnectionId(3));
        assert_eq!(found(&table, "a"), Some(ConnectionId(1)));
        table.remove(ConnectionId(1));
        table.remove(ConnectionId(2));
        assert!(table.by_remote.is_empty());
        assert!(table.by_id.is_empty());
    }
}
