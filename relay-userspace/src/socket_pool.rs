//! Media sockets kept bound between calls.
//!
//! A call used to cost four `socket()` + `bind()` and four `close()` (RTP and RTCP, two
//! legs): at thousands of calls per second about a fifth of the control plane's CPU
//! (docs/PERFORMANCE.md, NG), spent allocating and tearing down kernel socket state for a port
//! that is bound again a little later. Released sockets are parked here instead, still bound,
//! and handed out again when their port comes back from the allocator's quarantine.
//!
//! A parked socket keeps receiving whatever strays to its port, so while parked its receive
//! buffer is shrunk to the kernel's minimum (a few KiB: a port sweep cannot pin memory), and
//! before reuse it is drained, so no late packet of an old call reaches a new one (a stronger
//! form of the quarantine's promise). The datapath worker may still hold a released socket
//! for a moment (until it applies the removal, at its next wake-up: within 100 ms); such a
//! socket is not handed out, its port is reported busy and the allocator moves on (with the
//! default 30 s quarantine this does not happen).
//!
//! Parking spends file descriptors, so the pool keeps a budget for the relay's sockets, parked
//! and in use together (by default the open-file limit minus an eighth, at least 1024, kept
//! for everything else the process opens: SIP and API connections, files): a new socket
//! beyond it first closes a parked one, and a released socket beyond it is closed rather than
//! parked. With the budget below twice the port range, some released ports are re-bound from
//! scratch as before.

use std::{
    collections::HashMap,
    io,
    net::{SocketAddr, UdpSocket},
    sync::Arc,
};

use crate::datapath::sys;

/// Most datagrams drained from a parked socket before reuse (a flood cannot stall the
/// control plane; what is left is at most a minimum-size buffer's worth).
const MAX_DRAIN: usize = 256;

/// Bound media sockets, parked by local address.
#[derive(Debug)]
pub struct SocketPool {
    parked: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// Sockets handed out and not parked back.
    in_use: usize,
    /// Most sockets parked and in use together.
    budget: usize,
    /// Receive buffer for sockets in use (bytes; 0: the system default, learned from the
    /// first socket bound).
    rcvbuf: usize,
    /// The system default receive buffer, as `SO_RCVBUF` is set (half what the kernel reports).
    default_rcvbuf: Option<usize>,
}

impl SocketPool {
    /// A pool giving sockets in use a receive buffer of `rcvbuf` bytes (0: system default),
    /// with at most `budget` sockets parked and in use together.
    pub fn new(rcvbuf: usize, budget: usize) -> Self {
        Self {
            parked: HashMap::new(),
            in_use: 0,
            budget,
            rcvbuf,
            default_rcvbuf: None,
        }
    }

    /// The budget for an open-file limit of `limit`: all but an eighth of it (at least 1024
    /// descriptors stay for the rest of the process).
    pub fn budget_for(limit: u64) -> usize {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        limit.saturating_sub((limit / 8).max(1024))
    }

    /// Sockets parked now.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// A non-blocking socket bound to `at`: a parked one, drained, or a new one.
    ///
    /// # Errors
    /// `ResourceBusy` when the socket parked there is still held elsewhere (the worker has
    /// not let go yet); otherwise what `bind` or `setsockopt` reported.
    pub fn take(&mut self, at: SocketAddr) -> io::Result<Arc<UdpSocket>> {
        if let Some(socket) = self.parked.remove(&at) {
            if Arc::strong_count(&socket) > 1 {
                self.parked.insert(at, socket);
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    "the port's previous socket is still held by the datapath",
                ));
            }
            drain(&socket);
            sys::set_recv_buffer(&socket, self.in_use_rcvbuf())?;
            self.in_use += 1;
            return Ok(socket);
        }
        while self.parked.len() + self.in_use >= self.budget && self.evict_one() {}
        let socket = UdpSocket::bind(at)?;
        socket.set_nonblocking(true)?;
        if self.default_rcvbuf.is_none() {
            self.default_rcvbuf = Some(sys::recv_buffer(&socket)? / 2);
        }
        if self.rcvbuf > 0 {
            sys::set_recv_buffer(&socket, self.rcvbuf)?;
        }
        self.in_use += 1;
        Ok(Arc::new(socket))
    }

    /// Parks `socket`, bound to `at`, for a later [`SocketPool::take`] of the same address.
    /// A socket whose buffer cannot be shrunk is closed instead (when the last handle goes).
    /// Beyond the budget it is closed instead.
    pub fn park(&mut self, at: SocketAddr, socket: Arc<UdpSocket>) {
        self.in_use = self.in_use.saturating_sub(1);
        if self.parked.len() + self.in_use < self.budget && sys::set_recv_buffer(&socket, 1).is_ok()
        {
            self.parked.insert(at, socket);
        }
    }

    /// Closes one parked socket nobody else holds; `false` when there is none.
    fn evict_one(&mut self) -> bool {
        let Some(at) = self
            .parked
            .iter()
            .find(|(_, socket)| Arc::strong_count(socket) == 1)
            .map(|(at, _)| *at)
        else {
            return false;
        };
        self.parked.remove(&at);
        true
    }

    fn in_use_rcvbuf(&self) -> usize {
        if self.rcvbuf > 0 {
            self.rcvbuf
        } else {
            // Learned when the first socket was bound, before anything could be parked.
            self.default_rcvbuf.unwrap_or(212_992)
        }
    }
}

/// Reads and discards what waits on `socket` (bounded by [`MAX_DRAIN`]).
fn drain(socket: &UdpSocket) {
    let mut buffer = [0u8; 2048];
    for _ in 0..MAX_DRAIN {
        if socket.recv(&mut buffer).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_room_for_the_rest_of_the_process() {
        assert_eq!(SocketPool::budget_for(20_000), 17_500);
        assert_eq!(SocketPool::budget_for(4096), 3072);
        assert_eq!(SocketPool::budget_for(512), 0);
    }

    #[test]
    fn parked_and_live_sockets_stay_within_the_budget() {
        let mut pool = SocketPool::new(0, 2);
        let (a, b, c) = (loopback(), loopback(), loopback());
        let first = pool.take(a).unwrap();
        let second = pool.take(b).unwrap();
        pool.park(a, first);
        pool.park(b, second);
        assert_eq!(pool.parked(), 2);
        // A third address: a parked socket is closed to stay within two.
        let third = pool.take(c).unwrap();
        assert_eq!(pool.parked(), 1);
        // Released beyond the budget: closed, not parked.
        let fourth = pool
            .take(if pool.parked.contains_key(&a) { b } else { a })
            .unwrap();
        assert_eq!(pool.parked(), 0);
        pool.park(c, third);
        assert_eq!(pool.parked(), 1);
        drop(fourth);
    }

    fn loopback() -> SocketAddr {
        // An ephemeral port learned from a first bind, then taken through the pool.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = probe.local_addr().unwrap();
        drop(probe);
        at
    }

    #[test]
    fn a_parked_socket_is_reused_drained_and_with_its_buffer_back() {
        let mut pool = SocketPool::new(0, 100);
        let at = loopback();
        let socket = pool.take(at).unwrap();
        let default = sys::recv_buffer(&socket).unwrap();
        pool.park(at, Arc::clone(&socket));
        // The worker still holds it: not handed out, the port is busy.
        assert_eq!(
            pool.take(at).unwrap_err().kind(),
            io::ErrorKind::ResourceBusy
        );
        let parked_buffer = sys::recv_buffer(&socket).unwrap();
        assert!(parked_buffer < default, "{parked_buffer} < {default}");
        // A late packet of the old call arrives while parked.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"late", at).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(socket);
        let again = pool.take(at).unwrap();
        assert_eq!(pool.parked(), 0);
        assert_eq!(again.local_addr().unwrap(), at);
        assert_eq!(sys::recv_buffer(&again).unwrap(), default);
        let mut buffer = [0u8; 64];
        assert_eq!(
            again.recv(&mut buffer).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "the old call's packet was drained"
        );
        peer.send_to(b"new", at).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(again.recv(&mut buffer).unwrap(), 3);
    }

    #[test]
    fn a_configured_buffer_applies_to_new_and_reused_sockets() {
        let mut pool = SocketPool::new(64 * 1024, 100);
        let at = loopback();
        let socket = pool.take(at).unwrap();
        let configured = sys::recv_buffer(&socket).unwrap();
        pool.park(at, socket);
        let again = pool.take(at).unwrap();
        assert_eq!(sys::recv_buffer(&again).unwrap(), configured);
    }
}
