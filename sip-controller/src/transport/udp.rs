//! SIP over UDP (RFC 3261 §18): one receive task per socket, and datagram sends.
//!
//! A datagram is a whole message, so there is no framing; the only filtering is of keepalives,
//! which are not SIP: RFC 5626 §3.5.2 keeps UDP flows alive with STUN, and some devices send
//! bare CRLFs. Both are counted and dropped.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::UdpSocket;

use super::{
    lock, stopped, Inbound, Inner, Outbound, Sent, Transport, TransportError, TransportEvent,
    MAX_UDP_PAYLOAD,
};

/// STUN magic cookie (RFC 5389 §6).
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Whether a datagram is a keepalive rather than SIP: empty, only CR/LF bytes (the stream
/// keepalive sent over UDP by some devices), or a STUN message (RFC 5389 §6: two zero top
/// bits, length a multiple of 4 matching the datagram, magic cookie).
pub(super) fn is_keepalive(datagram: &[u8]) -> bool {
    if datagram.iter().all(|&b| b == b'\r' || b == b'\n') {
        return true;
    }
    if datagram.len() < 20 || datagram[0] & 0xC0 != 0 || datagram[4..8] != STUN_MAGIC_COOKIE {
        return false;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    length % 4 == 0 && length + 20 == datagram.len()
}

pub(super) async fn receive_loop(inner: Arc<Inner>, socket: Arc<UdpSocket>, local: SocketAddr) {
    let mut stop = inner.shutdown.subscribe();
    // Room for the largest datagram, so nothing is silently truncated.
    let mut buf = vec![0u8; 65_536];
    let counters = inner.counters(Transport::Udp);
    loop {
        let received = tokio::select! {
            () = stopped(&mut stop) => break,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, source) = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors surface here on some systems; the socket stays usable.
                tracing::debug!(%local, error = %e, "UDP receive error");
                continue;
            }
        };
        let datagram = &buf[..len];
        if is_keepalive(datagram) {
            bump_keepalive(&inner);
            continue;
        }
        counters.message_in(len);
        let event = TransportEvent::Message(Inbound {
            transport: Transport::Udp,
            local,
            source,
            connection: None,
            tls: None,
            bytes: datagram.to_vec(),
        });
        if !inner.deliver(event, &mut stop).await {
            break;
        }
    }
}

fn bump_keepalive(inner: &Inner) {
    super::bump(&inner.counters(Transport::Udp).keepalives);
}

/// Sends one datagram from the socket bound to `out.local`, or the first socket of the
/// destination's address family.
pub(super) async fn send(inner: &Inner, out: Outbound) -> Result<Sent, TransportError> {
    if out.bytes.len() > MAX_UDP_PAYLOAD {
        return Err(TransportError::MessageTooLarge {
            transport: Transport::Udp,
            size: out.bytes.len(),
            limit: MAX_UDP_PAYLOAD,
        });
    }
    let socket = {
        let sockets = lock(&inner.udp_sockets);
        if sockets.is_empty() {
            return Err(TransportError::NotConfigured {
                transport: Transport::Udp,
            });
        }
        let bound = |s: &Arc<UdpSocket>| s.local_addr().ok();
        let by_local = out
            .local
            .and_then(|local| sockets.iter().find(|s| bound(s) == Some(local)));
        by_local
            .or_else(|| {
                sockets
                    .iter()
                    .find(|s| bound(s).is_some_and(|a| a.is_ipv4() == out.destination.is_ipv4()))
            })
            .cloned()
            .ok_or(TransportError::NoUdpSocket {
                destination: out.destination,
            })?
    };
    let local = socket
        .local_addr()
        .map_err(|source| TransportError::SendFailed {
            destination: out.destination,
            source,
        })?;
    socket
        .send_to(&out.bytes, out.destination)
        .await
        .map_err(|source| TransportError::SendFailed {
            destination: out.destination,
            source,
        })?;
    inner.counters(Transport::Udp).message_out(out.bytes.len());
    Ok(Sent {
        transport: Transport::Udp,
        connection: None,
        local,
        tls: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_keepalives_are_not_sip() {
        assert!(is_keepalive(b""));
        assert!(is_keepalive(b"\r\n\r\n"));
        assert!(is_keepalive(b"\r\n"));
        assert!(!is_keepalive(b"OPTIONS sip:a SIP/2.0\r\n\r\n"));
    }

    #[test]
    fn stun_binding_request_is_a_keepalive() {
        // RFC 5769 §2.1-style Binding Request header without attributes.
        let stun = [
            0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 0xB7, 0xE7, 0xA7, 0x01, 0xBC, 0x34,
            0xD6, 0x86, 0xFA, 0x87, 0xDF, 0xAE,
        ];
        assert!(is_keepalive(&stun));
        let mut wrong_cookie = stun;
        wrong_cookie[4] = 0x22;
        assert!(!is_keepalive(&wrong_cookie));
        let mut wrong_length = stun;
        wrong_length[3] = 4;
        assert!(!is_keepalive(&wrong_length));
        // A SIP message starting with 20+ bytes never has the two top bits clear and the
        // cookie at offset 4.
        assert!(!is_keepalive(
            b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
        ));
    }
}
