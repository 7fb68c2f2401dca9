//! Media sockets kept bound between calls.
//!
//! A call used to cost four `socket()` + `bind()` and four `close()` (RTP and RTCP, two
//! legs), plus four epoll registrations and removals: at thousands of calls per second about a
//! quarter of the control plane's CPU (docs/PERFORMANCE.md, NG), spent building and tearing
//! down kernel state for a port that is bound again a little later. Released sockets are
//! parked here instead, still bound, and handed out again when their port comes back from the
//! allocator's quarantine.
//!
//! A parked socket stays registered with the socket datapath's worker it last served, which
//! drains and drops whatever strays to its port ([`crate::datapath`]); handed to a new session
//! on the same worker it keeps its epoll slot, so reuse costs no system call at all. Sockets
//! the datapath never registered (a request that failed before its session was installed) are
//! closed rather than parked. Late packets of an old call cannot reach a new one within the
//! allocator's quarantine (default 30 s): the worker drops them while the socket is parked.
//!
//! Parking spends file descriptors, so the pool keeps a budget for the relay's sockets, parked
//! and in use together (by default the open-file limit minus an eighth, at least 1024, kept
//! for everything else the process opens: SIP and API connections, files): a new socket
//! beyond it first closes a parked one, and a released socket beyond it is closed rather than
//! parked. With the budget below twice the port range, some released ports are bound from
//! scratch as before.

use std::{
    collections::{HashMap, VecDeque},
    io,
    net::{SocketAddr, UdpSocket},
    sync::Arc,
};

use crate::datapath::{sys, SocketDatapath};

/// Bound media sockets, parked by local address.
#[derive(Debug)]
pub struct SocketPool {
    /// Parked sockets and the number of their parking (see `order`).
    parked: HashMap<SocketAddr, (Arc<UdpSocket>, u64)>,
    /// Parkings, oldest first, by number (entries whose socket was taken since are stale and
    /// skipped): eviction takes the most recently parked, the furthest from reuse under the
    /// allocator's FIFO order.
    order: VecDeque<(SocketAddr, u64)>,
    /// Parkings so far.
    parkings: u64,
    /// Sockets handed out and not parked back.
    in_use: usize,
    /// Most sockets parked and in use together.
    budget: usize,
    /// Receive buffer of new sockets (bytes; 0: the system default).
    rcvbuf: usize,
}

impl SocketPool {
    /// A pool giving new sockets a receive buffer of `rcvbuf` bytes (0: system default), with
    /// at most `budget` sockets parked and in use together.
    pub fn new(rcvbuf: usize, budget: usize) -> Self {
        Self {
            parked: HashMap::new(),
            order: VecDeque::new(),
            parkings: 0,
            in_use: 0,
            budget,
            rcvbuf,
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

    /// A non-blocking socket bound to `at`: a parked one, or a new one.
    ///
    /// A parked socket is drained first: what waits on it arrived before its new session
    /// exists (late packets of the old call, strays), and must not reach the new one — the
    /// worker drains parked sockets as packets come, but the quarantine may be shorter than
    /// its turn (or zero).
    ///
    /// # Errors
    /// What `bind` or `setsockopt` reported.
    pub fn take(
        &mut self,
        at: SocketAddr,
        datapath: &SocketDatapath,
    ) -> io::Result<Arc<UdpSocket>> {
        if let Some((socket, _)) = self.parked.remove(&at) {
            drain(&socket);
            self.in_use += 1;
            return Ok(socket);
        }
        while self.parked.len() + self.in_use >= self.budget && self.evict_one(datapath) {}
        let socket = UdpSocket::bind(at)?;
        socket.set_nonblocking(true)?;
        if self.rcvbuf > 0 {
            sys::set_recv_buffer(&socket, self.rcvbuf)?;
        }
        self.in_use += 1;
        Ok(Arc::new(socket))
    }

    /// Parks `socket`, bound to `at`, for a later [`SocketPool::take`] of the same address,
    /// when the datapath holds it parked and the budget allows; otherwise it is unregistered
    /// and closed (when its last handle goes).
    pub fn park(&mut self, at: SocketAddr, socket: Arc<UdpSocket>, datapath: &SocketDatapath) {
        self.in_use = self.in_use.saturating_sub(1);
        if self.parked.len() + self.in_use < self.budget && datapath.is_parked(&socket) {
            self.parkings += 1;
            self.parked.insert(at, (socket, self.parkings));
            self.order.push_back((at, self.parkings));
            if self.order.len() > 2 * self.parked.len() + 64 {
                let parked = &self.parked;
                self.order
                    .retain(|(a, n)| parked.get(a).is_some_and(|(_, m)| m == n));
            }
        } else {
            datapath.forget(&socket);
        }
    }

    /// Closes the most recently parked socket; `false` when there is none.
    fn evict_one(&mut self, datapath: &SocketDatapath) -> bool {
        while let Some((at, n)) = self.order.pop_back() {
            if self.parked.get(&at).is_some_and(|(_, m)| *m == n) {
                if let Some((socket, _)) = self.parked.remove(&at) {
                    datapath.forget(&socket);
                }
                return true;
            }
        }
        false
    }
}

/// Most datagrams drained from a socket before reuse: a flood cannot stall the control plane
/// (the socket's buffer holds little more than this many RTP packets by default).
const MAX_DRAIN: usize = 1024;

/// Reads and discards what waits on `socket`.
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
    use std::time::{Duration, Instant};

    use super::*;
    use crate::datapath::{DatapathOptions, LegProgram, LegSettings, LegStats};

    fn datapath() -> SocketDatapath {
        SocketDatapath::start(&DatapathOptions {
            workers: 1,
            cpus: Vec::new(),
            batch: 8,
        })
        .unwrap()
    }

    fn loopback() -> SocketAddr {
        // An ephemeral port learned from a first bind, then taken through the pool.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = probe.local_addr().unwrap();
        drop(probe);
        at
    }

    /// A one-leg session on `socket` (muxed, dropping what it gets), installed and removed, so
    /// that the datapath holds the socket parked.
    fn serve_and_end(datapath: &SocketDatapath, session: u64, socket: &Arc<UdpSocket>) {
        let program = LegProgram {
            id: "a".to_owned(),
            stats: Arc::new(LegStats::default()),
            rtp_socket: Arc::clone(socket),
            rtcp_socket: None,
            settings: LegSettings {
                remote_rtp: None,
                remote_rtcp: None,
                latch: crate::model::LatchMode::Learn,
                strict_source: true,
                latch_window: Duration::ZERO,
                forward_to: None,
                rtcp_mux: true,
            },
            crypto: Arc::default(),
            learned: (None, None),
        };
        datapath.install(session, vec![program]);
        datapath.remove(session);
    }

    fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if condition() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        condition()
    }

    #[test]
    fn the_budget_leaves_room_for_the_rest_of_the_process() {
        assert_eq!(SocketPool::budget_for(20_000), 17_500);
        assert_eq!(SocketPool::budget_for(4096), 3072);
        assert_eq!(SocketPool::budget_for(512), 0);
    }

    #[test]
    fn a_parked_socket_is_handed_out_again_and_its_strays_are_dropped() {
        let datapath = datapath();
        let mut pool = SocketPool::new(0, 100);
        let at = loopback();
        let socket = pool.take(at, &datapath).unwrap();
        serve_and_end(&datapath, 1, &socket);
        assert!(datapath.is_parked(&socket));
        pool.park(at, Arc::clone(&socket), &datapath);
        assert_eq!(pool.parked(), 1);
        // Strays while parked: the worker reads and drops them.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..5 {
            peer.send_to(b"late", at).unwrap();
        }
        let mut buffer = [0u8; 64];
        assert!(
            wait_for(|| socket.peek(&mut buffer).is_err()),
            "the worker drained the parked socket"
        );
        let again = pool.take(at, &datapath).unwrap();
        assert!(Arc::ptr_eq(&again, &socket), "the same socket, still bound");
        assert_eq!(pool.parked(), 0);
    }

    #[test]
    fn a_socket_the_datapath_never_served_is_closed_not_parked() {
        let datapath = datapath();
        let mut pool = SocketPool::new(0, 100);
        let at = loopback();
        let socket = pool.take(at, &datapath).unwrap();
        pool.park(at, socket, &datapath);
        assert_eq!(pool.parked(), 0);
        // Closed: the address is free for anyone.
        assert!(UdpSocket::bind(at).is_ok());
    }

    #[test]
    fn parked_and_live_sockets_stay_within_the_budget() {
        let datapath = datapath();
        let mut pool = SocketPool::new(0, 2);
        let (a, b, c) = (loopback(), loopback(), loopback());
        let first = pool.take(a, &datapath).unwrap();
        let second = pool.take(b, &datapath).unwrap();
        serve_and_end(&datapath, 1, &first);
        serve_and_end(&datapath, 2, &second);
        pool.park(a, first, &datapath);
        pool.park(b, second, &datapath);
        assert_eq!(pool.parked(), 2);
        // A third address: the most recently parked socket (b's, the furthest from reuse in
        // the allocator's FIFO order) is unregistered and closed to stay within two.
        let third = pool.take(c, &datapath).unwrap();
        assert_eq!(pool.parked(), 1);
        assert!(pool.parked.contains_key(&a), "a's socket stays parked");
        serve_and_end(&datapath, 3, &third);
        let evicted = b;
        assert!(
            wait_for(|| UdpSocket::bind(evicted).is_ok()),
            "the evicted socket is closed once the worker forgot it"
        );
        let _ = pool.take(evicted, &datapath).unwrap();
        pool.park(c, third, &datapath);
        assert_eq!(pool.parked(), 1);
    }

    #[test]
    fn the_parking_order_stays_bounded_when_the_same_ports_come_and_go() {
        let datapath = datapath();
        let mut pool = SocketPool::new(0, 100);
        let (a, b) = (loopback(), loopback());
        for round in 0..300u64 {
            for (i, at) in [a, b].into_iter().enumerate() {
                let socket = pool.take(at, &datapath).unwrap();
                serve_and_end(&datapath, round * 2 + i as u64, &socket);
                pool.park(at, socket, &datapath);
            }
            assert!(
                pool.order.len() <= 2 * pool.parked() + 64,
                "{}",
                pool.order.len()
            );
        }
        assert_eq!(pool.parked(), 2);
    }

    #[test]
    fn a_socket_released_beyond_the_budget_is_closed() {
        let datapath = datapath();
        let mut pool = SocketPool::new(0, 1);
        let (a, b) = (loopback(), loopback());
        let first = pool.take(a, &datapath).unwrap();
        let _second = pool.take(b, &datapath).unwrap();
        serve_and_end(&datapath, 1, &first);
        // One socket still in use fills the budget of one.
        pool.park(a, first, &datapath);
        assert_eq!(pool.parked(), 0);
        assert!(
            wait_for(|| UdpSocket::bind(a).is_ok()),
            "closed once the worker forgot it"
        );
    }

    #[test]
    fn a_configured_buffer_applies_to_new_sockets() {
        let datapath = datapath();
        let mut pool = SocketPool::new(64 * 1024, 100);
        let default = UdpSocket::bind("127.0.0.1:0").unwrap();
        let socket = pool.take(loopback(), &datapath).unwrap();
        assert_ne!(
            sys::recv_buffer(&socket).unwrap(),
            sys::recv_buffer(&default).unwrap()
        );
    }
}
