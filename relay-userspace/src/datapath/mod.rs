//! The socket datapath: userspace media forwarding with per-core workers.
//!
//! Each session lives on one worker (so its legs forward to each other without crossing
//! threads); a worker owns an epoll instance over its sessions' sockets and reads each ready
//! socket for at most one batch per turn (`recvmmsg`), then transforms and forwards the batch
//! (`sendmmsg`). Level-triggered epoll plus the per-turn quantum is the fairness rule: under
//! overload every socket keeps getting its turn and the excess is dropped by the kernel, so no
//! stream is ever abandoned and service resumes as soon as the load drops. The control plane
//! programs workers through a command channel and reads counters from shared atomics.
//!
//! Session changes do not wake the worker: the control plane registers the new sockets in the
//! worker's epoll itself (choosing their slots, the epoll tokens) and queues the program; the
//! worker applies queued commands at the start of every wake-up, before it handles any event,
//! so the first packet on a new socket is already handled by its program, and a re-programmed
//! session's packets by the new one. An idle worker still wakes every 100 ms. Waking the
//! worker per change cost two context switches on a shared core at every call setup and
//! teardown (docs/PERFORMANCE.md, NG).
//!
//! Sockets of ended sessions stay registered, *parked*: the worker drains and discards what
//! strays to them, and when the relay's socket pool ([`crate::socket_pool`]) hands one to a
//! new session on the same worker, it keeps its slot, so a call costs no `epoll_ctl` at all.
//! [`SocketDatapath::forget`] unregisters a parked socket the pool closes.
//!
//! These semantics (latching, strict source, SRTP-authenticated latching, transcrypting, RTCP
//! on separate or muxed ports, drop reasons) are the reference the XDP datapath matches.

pub mod latch;
pub mod stats;
pub mod sys;
mod worker;

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::Duration,
};

use srtp::Context;
pub use stats::{DropReason, LegStats};
use tracing::{info, warn};

use crate::model::LatchMode;

/// How a leg's peer and forwarding are set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegSettings {
    /// RTP destination from signalling.
    pub remote_rtp: Option<SocketAddr>,
    /// RTCP destination from signalling.
    pub remote_rtcp: Option<SocketAddr>,
    /// Latch mode.
    pub latch: LatchMode,
    /// Strict source.
    pub strict_source: bool,
    /// Latch window.
    pub latch_window: Duration,
    /// Index of the leg this leg's media goes to.
    pub forward_to: Option<usize>,
    /// RTP and RTCP on one port.
    pub rtcp_mux: bool,
}

/// What to do with a leg direction's SRTP context when (re-)programming.
#[derive(Debug)]
pub enum CryptoChange {
    /// Keep the current context and its state (rollover counters, replay windows).
    Keep,
    /// Plain RTP.
    Plain,
    /// A new context from this policy.
    Set(Box<srtp::Policy>),
}

/// A leg's SRTP contexts: inbound (verify and decrypt what the leg receives) and outbound
/// (encrypt what is sent to the leg's peer).
///
/// Owned by the control plane and shared with every path that handles the leg's packets (the
/// socket worker and, with the XDP datapath, any AF_XDP worker), so that rollover counters,
/// replay windows and key lifetimes are *one* state whichever path a packet takes: two states
/// would let a replay through on the other path, or re-use keystream after a rollover one of
/// them missed. Workers lock a context once per batch, never per packet.
#[derive(Default)]
pub struct LegCrypto {
    inbound: Mutex<Option<Context>>,
    outbound: Mutex<Option<Context>>,
}

impl std::fmt::Debug for LegCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the contexts: they hold keys. `try_lock`: formatting must not wait for (or
        // deadlock with) a worker holding the context for its batch.
        let state = |context: &Mutex<Option<Context>>| match context.try_lock() {
            Ok(guard) => {
                if guard.is_some() {
                    "srtp"
                } else {
                    "plain"
                }
            }
            Err(std::sync::TryLockError::Poisoned(e)) => {
                if e.get_ref().is_some() {
                    "srtp"
                } else {
                    "plain"
                }
            }
            Err(std::sync::TryLockError::WouldBlock) => "locked",
        };
        f.debug_struct("LegCrypto")
            .field("inbound", &state(&self.inbound))
            .field("outbound", &state(&self.outbound))
            .finish()
    }
}

impl LegCrypto {
    /// The inbound context (`None`: the leg receives plain RTP).
    pub fn inbound(&self) -> MutexGuard<'_, Option<Context>> {
        self.inbound.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The outbound context (`None`: the leg's peer gets plain RTP).
    pub fn outbound(&self) -> MutexGuard<'_, Option<Context>> {
        self.outbound.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a (re-)programming.
    pub fn apply(&self, inbound: CryptoChange, outbound: CryptoChange) {
        fn change(slot: &mut Option<Context>, change: CryptoChange) {
            match change {
                CryptoChange::Keep => {}
                CryptoChange::Plain => *slot = None,
                CryptoChange::Set(policy) => {
                    *slot = match Context::new(&policy) {
                        Ok(context) => Some(context),
                        Err(e) => {
                            // Policies are validated by the control plane before they get here.
                            warn!(%e, "SRTP policy refused by the engine; the leg drops its media");
                            None
                        }
                    }
                }
            }
        }
        change(&mut self.inbound(), inbound);
        change(&mut self.outbound(), outbound);
    }
}

/// A leg as handed to a worker.
#[derive(Debug)]
pub struct LegProgram {
    /// Leg id (matches legs across re-programming).
    pub id: String,
    /// Counters shared with the control plane.
    pub stats: Arc<LegStats>,
    /// RTP socket (RTP and RTCP with rtcp-mux).
    pub rtp_socket: Arc<UdpSocket>,
    /// RTCP socket, absent with rtcp-mux.
    pub rtcp_socket: Option<Arc<UdpSocket>>,
    /// Peer and forwarding.
    pub settings: LegSettings,
    /// SRTP contexts, shared with the control plane.
    pub crypto: Arc<LegCrypto>,
    /// Peers (RTP, RTCP) a learning leg starts out latched and locked onto, when the leg is
    /// new to the worker (a restarted relayd resuming what it had learned).
    pub learned: (Option<SocketAddr>, Option<SocketAddr>),
}

enum Command {
    /// Installs a session, or replaces its program (legs matched by id keep their state where
    /// their settings say so). Its sockets are already in the worker's epoll, at `slots`.
    Install {
        session: u64,
        legs: Vec<LegProgram>,
        slots: Vec<worker::SlotAssignment>,
    },
    /// Removes a session; its sockets stay registered, parked (drained, nothing forwarded).
    Remove {
        session: u64,
    },
    /// Forgets a parked socket (unregistered by the control plane).
    Forget {
        slot: usize,
    },
    Shutdown,
}

struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    wake: Arc<sys::EventFd>,
    epoll: Arc<sys::Epoll>,
    thread: Option<JoinHandle<()>>,
}

/// The control plane's record of the workers' epoll registrations (it makes them).
#[derive(Default)]
struct Registry {
    /// Per worker: slots given back (reused first) and the next slot never used.
    slots: Vec<(Vec<usize>, usize)>,
    /// Per session: its sockets and their slots on its worker.
    sessions: HashMap<u64, Vec<(usize, Arc<UdpSocket>)>>,
    /// Sockets of ended sessions, still registered: by socket identity (the map holds the
    /// `Arc`, so the address is stable), their worker and slot.
    parked: HashMap<usize, (usize, usize, Arc<UdpSocket>)>,
}

impl Registry {
    fn take_slot(&mut self, worker: usize) -> usize {
        let (free, next) = &mut self.slots[worker];
        free.pop().unwrap_or_else(|| {
            *next += 1;
            *next - 1
        })
    }
}

/// A socket's identity for [`Registry::parked`].
fn identity(socket: &Arc<UdpSocket>) -> usize {
    Arc::as_ptr(socket) as usize
}

/// Datapath settings.
#[derive(Clone, Debug)]
pub struct DatapathOptions {
    /// Worker threads.
    pub workers: usize,
    /// CPUs to pin workers to (worker `i` to `cpus[i % len]`), empty for none.
    pub cpus: Vec<usize>,
    /// Packets per socket per turn.
    pub batch: usize,
}

/// The running socket datapath.
pub struct SocketDatapath {
    workers: Vec<WorkerHandle>,
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for SocketDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketDatapath")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl SocketDatapath {
    /// Starts the workers.
    pub fn start(options: &DatapathOptions) -> std::io::Result<Self> {
        let count = options.workers.max(1);
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let (commands, receiver) = mpsc::channel();
            let wake = Arc::new(sys::EventFd::new()?);
            let epoll = Arc::new(sys::Epoll::new()?);
            epoll.add(wake.raw(), worker::WAKE_TOKEN)?;
            let worker_epoll = Arc::clone(&epoll);
            let cpu = (!options.cpus.is_empty()).then(|| options.cpus[index % options.cpus.len()]);
            let worker_wake = Arc::clone(&wake);
            let batch = options.batch;
            let thread = std::thread::Builder::new()
                .name(format!("relay-worker-{index}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(e) = sys::pin_to_cpu(cpu) {
                            warn!(cpu, %e, "cannot pin datapath worker");
                        }
                    }
                    // Built on its own thread: its batch buffers hold raw pointers into
                    // themselves and never leave it.
                    worker::Worker::new(worker_epoll, worker_wake, receiver, batch).run();
                })?;
            workers.push(WorkerHandle {
                commands,
                wake,
                epoll,
                thread: Some(thread),
            });
        }
        info!(
            workers = count,
            batch = options.batch,
            "socket datapath started"
        );
        let registry = Registry {
            slots: vec![(Vec::new(), 0); count],
            ..Registry::default()
        };
        Ok(Self {
            workers,
            registry: Mutex::new(registry),
        })
    }

    fn worker_of(&self, session: u64) -> usize {
        usize::try_from(session % self.workers.len() as u64).unwrap_or(0)
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Installs or re-programs a session: registers its sockets in its worker's epoll (a
    /// socket it already had, or one parked on the same worker, keeps its slot; one parked on
    /// another worker moves), parks the sockets it no longer has, and queues the program
    /// (without waking the worker, see the module docs).
    pub fn install(&self, session: u64, legs: Vec<LegProgram>) {
        let w = self.worker_of(session);
        let worker = &self.workers[w];
        let mut registry = self.registry();
        let old = registry.sessions.remove(&session).unwrap_or_default();
        let mut kept: Vec<(usize, Arc<UdpSocket>)> = Vec::new();
        let mut slots = Vec::new();
        for (index, leg) in legs.iter().enumerate() {
            let sockets = match &leg.rtcp_socket {
                Some(rtcp) => vec![
                    (&leg.rtp_socket, worker::SocketKind::Rtp),
                    (rtcp, worker::SocketKind::Rtcp),
                ],
                None => vec![(&leg.rtp_socket, worker::SocketKind::Muxed)],
            };
            for (socket, kind) in sockets {
                let slot =
                    if let Some(&(slot, _)) = old.iter().find(|(_, s)| Arc::ptr_eq(s, socket)) {
                        slot
                    } else {
                        match registry.parked.remove(&identity(socket)) {
                            Some((pw, slot, _)) if pw == w => slot,
                            parked => {
                                if let Some((pw, slot, _)) = parked {
                                    self.unregister(&mut registry, pw, slot, socket);
                                }
                                let slot = registry.take_slot(w);
                                if let Err(e) = worker.epoll.add(socket.as_raw_fd(), slot as u64) {
                                    warn!(session, leg = leg.id, %e, "cannot watch media socket");
                                    registry.slots[w].0.push(slot);
                                    continue;
                                }
                                slot
                            }
                        }
                    };
                kept.push((slot, Arc::clone(socket)));
                slots.push(worker::SlotAssignment {
                    slot,
                    leg: index,
                    kind,
                });
            }
        }
        if worker
            .commands
            .send(Command::Install {
                session,
                legs,
                slots,
            })
            .is_err()
        {
            warn!(session, "datapath worker is gone; session not installed");
        }
        // Sockets the session no longer has stay registered, parked (the worker parks the
        // slots the new program does not reassign).
        for (slot, socket) in old {
            if !kept.iter().any(|(_, s)| Arc::ptr_eq(s, &socket)) {
                registry.parked.insert(identity(&socket), (w, slot, socket));
            }
        }
        registry.sessions.insert(session, kept);
    }

    /// Removes a session: the worker stops forwarding its media at its next wake-up, and its
    /// sockets stay registered, parked, for the socket pool.
    pub fn remove(&self, session: u64) {
        let w = self.worker_of(session);
        let mut registry = self.registry();
        let old = registry.sessions.remove(&session).unwrap_or_default();
        if self.workers[w]
            .commands
            .send(Command::Remove { session })
            .is_err()
        {
            warn!(session, "datapath worker is gone; command dropped");
        }
        for (slot, socket) in old {
            registry.parked.insert(identity(&socket), (w, slot, socket));
        }
    }

    /// Whether `socket` is parked (registered, of no session).
    pub fn is_parked(&self, socket: &Arc<UdpSocket>) -> bool {
        self.registry().parked.contains_key(&identity(socket))
    }

    /// Unregisters a parked socket about to be closed: out of the epoll now, and the worker is
    /// woken to drop its handle, so the socket closes and its port can be bound again at once.
    /// `false` when it was not parked.
    pub fn forget(&self, socket: &Arc<UdpSocket>) -> bool {
        let mut registry = self.registry();
        match registry.parked.remove(&identity(socket)) {
            Some((w, slot, _)) => {
                self.unregister(&mut registry, w, slot, socket);
                self.workers[w].wake.notify();
                true
            }
            None => false,
        }
    }

    /// Takes `socket` out of worker `w`'s epoll and table; its slot is reusable after that.
    fn unregister(&self, registry: &mut Registry, w: usize, slot: usize, socket: &UdpSocket) {
        let worker = &self.workers[w];
        let _ = worker.epoll.remove(socket.as_raw_fd());
        // Queued before any later install that reuses the slot.
        let _ = worker.commands.send(Command::Forget { slot });
        registry.slots[w].0.push(slot);
    }
}

impl Drop for SocketDatapath {
    fn drop(&mut self) {
        for worker in &self.workers {
            let _ = worker.commands.send(Command::Shutdown);
            worker.wake.notify();
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
