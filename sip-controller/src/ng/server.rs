//! The thin tokio driver: UDP and TCP sockets, the source allowlist, the retransmission
//! cache, bounded concurrency, and the delete-delay/timeout sweeper. Everything it decides
//! with comes from the IO-free parts ([`super::message`], [`super::cache`],
//! [`super::engine`]).
//!
//! UDP: one datagram is one message; the reply goes back from the same socket. TCP: the same
//! `cookie dictionary` framing back to back on the stream (rtpengine's tcp-ng), replies in
//! request order; a connection that sends something that is not an NG message is closed.
//! Sources outside `allow_from` are dropped without a reply (UDP) or disconnected (TCP).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{Mutex, Semaphore},
    task::JoinSet,
};

use super::{
    bencode::Value,
    cache::{Lookup, ReplyCache},
    engine::{Engine, EngineConfig, Now, Relay},
    message::{cookie_of, encode_reply, frame_len, parse_message, Encoding},
};

/// `[ng]`: the rtpengine-compatible control protocol server.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NgConfig {
    /// UDP listen addresses (rtpengine's `listen-ng`; Kamailio's `rtpengine_sock udp:...`).
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses (rtpengine's `listen-tcp-ng`).
    pub tcp: Vec<SocketAddr>,
    /// Sources allowed to send commands; others are dropped.
    pub allow_from: Vec<IpNet>,
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Most messages handled at once.
    pub max_in_flight: usize,
    /// Most TCP connections at once.
    pub max_tcp_connections: usize,
    /// Replies kept for retransmissions.
    pub cache_entries: usize,
    /// How long a reply is kept for retransmissions, in seconds.
    pub cache_ttl_secs: u64,
    /// relayd interface for sides that name none.
    pub default_interface: String,
    /// NG interface names (`direction`, `from-interface`, `to-interface`) → relayd interfaces.
    pub interfaces: std::collections::BTreeMap<String, String>,
    /// Drop media from other sources once latched, unless a request says `media-handover`
    /// (rtpengine's default is off; ours is on: it defeats RTP-bleed style hijacks).
    pub strict_source: bool,
    /// relayd's media timeout: answered calls silent this long are deleted.
    pub media_timeout_secs: u64,
    /// `delete-delay` when a request gives none (rtpengine's default: 30 s).
    pub delete_delay_secs: u64,
    /// Calls offered but never answered are deleted after this long.
    pub offer_timeout_secs: u64,
    /// Most calls at once.
    pub max_calls: usize,
}

impl Default for NgConfig {
    fn default() -> Self {
        let engine = EngineConfig::default();
        Self {
            udp: vec![SocketAddr::from(([127, 0, 0, 1], 2223))],
            tcp: Vec::new(),
            allow_from: [
                Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).map(IpNet::V4),
                Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).map(IpNet::V6),
            ]
            .into_iter()
            .flatten()
            .collect(),
            max_message_bytes: 65_535,
            max_in_flight: 256,
            max_tcp_connections: 64,
            cache_entries: 65_536,
            cache_ttl_secs: 30,
            default_interface: engine.default_interface,
            interfaces: engine.interfaces,
            strict_source: engine.strict_source,
            media_timeout_secs: engine.media_timeout_secs,
            delete_delay_secs: engine.delete_delay_secs,
            offer_timeout_secs: engine.offer_timeout_secs,
            max_calls: engine.max_calls,
        }
    }
}

impl NgConfig {
    /// The engine's part of the configuration.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            default_interface: self.default_interface.clone(),
            interfaces: self.interfaces.clone(),
            strict_source: self.strict_source,
            media_timeout_secs: self.media_timeout_secs,
            delete_delay_secs: self.delete_delay_secs,
            offer_timeout_secs: self.offer_timeout_secs,
            max_calls: self.max_calls,
        }
    }

    fn allows(&self, source: IpAddr) -> bool {
        let source = source.to_canonical();
        self.allow_from.iter().any(|net| net.contains(&source))
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A listen address could not be bound.
    #[error("NG {transport} listener on {address}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        transport: &'static str,
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid [ng] configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Bound NG sockets, ready to [`NgServer::run`].
#[derive(Debug)]
pub struct NgServer {
    config: NgConfig,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
}

impl NgServer {
    /// Binds every configured address.
    pub async fn bind(config: NgConfig) -> Result<Self, ServeError> {
        if config.max_message_bytes < 64 || config.max_in_flight == 0 {
            return Err(ServeError::Config {
                reason: "max_message_bytes must be at least 64 and max_in_flight at least 1",
            });
        }
        let mut udp = Vec::new();
        for &address in &config.udp {
            udp.push(
                UdpSocket::bind(address)
                    .await
                    .map_err(|source| ServeError::Bind {
                        transport: "udp",
                        address,
                        source,
                    })?,
            );
        }
        let mut tcp = Vec::new();
        for &address in &config.tcp {
            tcp.push(
                TcpListener::bind(address)
                    .await
                    .map_err(|source| ServeError::Bind {
                        transport: "tcp",
                        address,
                        source,
                    })?,
            );
        }
        Ok(Self { config, udp, tcp })
    }

    /// The bound UDP addresses (port 0 in the configuration becomes the real port).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// The bound TCP addresses.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Serves until every socket fails (it does not return in normal operation; abort the
    /// task to stop).
    pub async fn run<R: Relay>(self, relay: R) {
        let shared = Arc::new(Shared {
            engine: Engine::new(relay, self.config.engine()),
            cache: Mutex::new(ReplyCache::new(
                self.config.cache_entries,
                Duration::from_secs(self.config.cache_ttl_secs),
            )),
            permits: Arc::new(Semaphore::new(self.config.max_in_flight)),
            connections: Arc::new(Semaphore::new(self.config.max_tcp_connections.max(1))),
            config: self.config,
        });
        let mut tasks = JoinSet::new();
        for socket in self.udp {
            tasks.spawn(udp_loop(Arc::clone(&shared), Arc::new(socket)));
        }
        for listener in self.tcp {
            tasks.spawn(tcp_loop(Arc::clone(&shared), listener));
        }
        tasks.spawn(sweep_loop(Arc::clone(&shared)));
        while tasks.join_next().await.is_some() {}
    }
}

/// Binds and serves `[ng]` with `relay` (see [`NgServer`]).
pub async fn serve<R: Relay>(config: NgConfig, relay: R) -> Result<(), ServeError> {
    let server = NgServer::bind(config).await?;
    tracing::info!(udp = ?server.udp_addrs(), tcp = ?server.tcp_addrs(), "NG control protocol listening");
    server.run(relay).await;
    Ok(())
}

struct Shared<R> {
    engine: Engine<R>,
    cache: Mutex<ReplyCache>,
    permits: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    config: NgConfig,
}

/// Handles one message: cache, parse, engine, encode. `None`: nothing to send (a copy of a
/// message in progress, or no cookie to answer with).
async fn process<R: Relay>(shared: &Shared<R>, input: &[u8], source: IpAddr) -> Option<Arc<[u8]>> {
    let max = shared.config.max_message_bytes;
    let cookie = cookie_of(input)?;
    let now = Now::current();
    match shared.cache.lock().await.begin(source, cookie, now.instant) {
        Lookup::New => {}
        Lookup::InProgress => return None,
        Lookup::Replay(reply) => return Some(reply),
    }
    let reply = match parse_message(input, max) {
        Ok(message) => {
            let body = shared.engine.handle(&message.body, source, now).await;
            encode_reply(message.cookie, message.encoding, &body)
        }
        Err(error) => {
            let encoding = if input.get(cookie.len() + 1) == Some(&b'{') {
                Encoding::Json
            } else {
                Encoding::Bencode
            };
            let body = Value::dict([
                ("result", Value::str("error")),
                ("error-reason", Value::string(error.to_string())),
            ]);
            encode_reply(cookie, encoding, &body)
        }
    };
    let reply: Arc<[u8]> = Arc::from(reply);
    shared
        .cache
        .lock()
        .await
        .finish(source, cookie, Arc::clone(&reply));
    Some(reply)
}

async fn udp_loop<R: Relay>(shared: Arc<Shared<R>>, socket: Arc<UdpSocket>) {
    let mut buffer = vec![0u8; shared.config.max_message_bytes + 1];
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems: keep serving.
                tracing::debug!(error = %e, "ng: udp receive error");
                continue;
            }
        };
        if !shared.config.allows(peer.ip()) {
            tracing::debug!(%peer, "ng: source not allowed; dropped");
            continue;
        }
        if len > shared.config.max_message_bytes {
            tracing::debug!(%peer, len, "ng: oversized datagram dropped");
            continue;
        }
        let Ok(permit) = Arc::clone(&shared.permits).acquire_owned().await else {
            return;
        };
        let input = buffer[..len].to_vec();
        let shared = Arc::clone(&shared);
        let socket = Arc::clone(&socket);
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(reply) = process(&shared, &input, peer.ip().to_canonical()).await {
                if let Err(e) = socket.send_to(&reply, peer).await {
                    tracing::debug!(%peer, error = %e, "ng: udp send failed");
                }
            }
        });
    }
}

async fn tcp_loop<R: Relay>(shared: Arc<Shared<R>>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "ng: tcp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !shared.config.allows(peer.ip()) {
            tracing::debug!(%peer, "ng: source not allowed; disconnected");
            continue;
        }
        let Ok(connection) = Arc::clone(&shared.connections).try_acquire_owned() else {
            tracing::warn!(%peer, "ng: too many tcp connections; disconnected");
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _connection = connection;
            if let Err(e) = tcp_connection(&shared, stream, peer).await {
                tracing::debug!(%peer, error = %e, "ng: tcp connection closed");
            }
        });
    }
}

async fn tcp_connection<R: Relay>(
    shared: &Shared<R>,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> std::io::Result<()> {
    let max = shared.config.max_message_bytes;
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Every complete message in the buffer, in order.
        loop {
            let len = match frame_len(&buffer, max) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
            };
            let message: Vec<u8> = buffer.drain(..len).collect();
            // Separators some clients put between messages.
            let skip = buffer
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            buffer.drain(..skip);
            let permit = Arc::clone(&shared.permits)
                .acquire_owned()
                .await
                .map_err(std::io::Error::other)?;
            let reply = process(shared, &message, peer.ip().to_canonical()).await;
            drop(permit);
            if let Some(reply) = reply {
                stream.write_all(&reply).await?;
            }
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

async fn sweep_loop<R: Relay>(shared: Arc<Shared<R>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let deleted = shared.engine.sweep(Now::current()).await;
        if deleted > 0 {
            tracing::info!(deleted, "ng: calls deleted (delete-delay or timeout)");
        }
        shared.cache.lock().await.expire(std::time::Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_2223_and_allow_loopback_only() {
        let config = NgConfig::default();
        assert_eq!(config.udp, [SocketAddr::from(([127, 0, 0, 1], 2223))]);
        assert!(config.tcp.is_empty());
        assert!(config.allows("127.0.0.1".parse().expect("ip")));
        assert!(config.allows("127.9.9.9".parse().expect("ip")));
        assert!(config.allows("::1".parse().expect("ip")));
        assert!(config.allows("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!config.allows("192.0.2.1".parse().expect("ip")));
    }

    #[test]
    fn the_ng_section_deserialises_from_toml() {
        let config: NgConfig = toml::from_str(
            r#"
            udp = ["127.0.0.1:22222"]
            tcp = ["127.0.0.1:22223"]
            allow_from = ["10.0.0.0/8"]
            delete_delay_secs = 0
            interfaces = { pub = "external", priv = "internal" }
            "#,
        )
        .expect("valid [ng]");
        assert_eq!(config.udp, [SocketAddr::from(([127, 0, 0, 1], 22222))]);
        assert_eq!(config.tcp, [SocketAddr::from(([127, 0, 0, 1], 22223))]);
        assert!(config.allows("10.1.2.3".parse().expect("ip")));
        assert!(!config.allows("127.0.0.1".parse().expect("ip")));
        assert_eq!(config.engine().delete_delay_secs, 0);
        assert_eq!(
            config.engine().interfaces.get("pub").map(String::as_str),
            Some("external")
        );
        assert!(toml::from_str::<NgConfig>("bogus = 1").is_err());
    }
}
