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
//! Installing a session does not wake its worker: the control plane registers the new sockets
//! in the worker's epoll itself (choosing their slots, the epoll tokens) and queues the
//! program; the worker applies queued commands at the start of every wake-up, before it
//! handles any event, so the first packet on a new socket is already handled by its program,
//! and a re-programmed session's packets by the new one. Waking the worker per install cost
//! two context switches on a shared core at every call setup (docs/PERFORMANCE.md, NG). An
//! idle worker still wakes every 100 ms and applies what is queued. Removing a session works
//! the same way: its sockets leave the epoll at once (no packet of it is read any more) and
//! the worker drops its handles at its next wake-up; until then the relay's socket pool does
//! not hand those sockets out again ([`crate::socket_pool`]), so a port is never shared by two
//! sessions.
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
    /// Removes a session and stops reading its sockets.
    Remove {
        session: u64,
    },
    Shutdown,
}

struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    wake: Arc<sys::EventFd>,
    epoll: Arc<sys::Epoll>,
    /// The worker's epoll registrations, kept by the control plane (which makes them).
    registrations: Mutex<Registrations>,
    thread: Option<JoinHandle<()>>,
}

/// Which slot (epoll token, index of the worker's socket table) each socket of each session
/// of one worker has.
#[derive(Default)]
struct Registrations {
    /// Slots given back, reused first.
    free: Vec<usize>,
    /// The next slot never used.
    next: usize,
    /// Per session: its sockets and their slots.
    sessions: HashMap<u64, Vec<(usize, Arc<UdpSocket>)>>,
}

impl Registrations {
    fn take_slot(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        })
    }
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
}

impl std::fmt::Debug for SocketDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketDatapath")
            .field("workers", &self.workers.len())
            .finish()
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
                registrations: Mutex::new(Registrations::default()),
                thread: Some(thread),
            });
        }
        info!(
            workers = count,
            batch = options.batch,
            "socket datapath started"
        );
        Ok(Self { workers })
    }

    fn worker_of(&self, session: u64) -> &WorkerHandle {
        let index = usize::try_from(session % self.workers.len() as u64).unwrap_or(0);
        &self.workers[index]
    }

    /// Installs or re-programs a session: registers its new sockets in its worker's epoll,
    /// unregisters the ones it no longer has, and queues the program (without waking the
    /// worker, see the module docs).
    pub fn install(&self, session: u64, legs: Vec<LegProgram>) {
        let worker = self.worker_of(session);
        let mut registrations = worker
            .registrations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = registrations.sessions.remove(&session).unwrap_or_default();
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
                // A socket the session already had keeps its slot and registration.
                let slot =
                    if let Some(&(slot, _)) = old.iter().find(|(_, s)| Arc::ptr_eq(s, socket)) {
                        slot
                    } else {
                        let slot = registrations.take_slot();
                        if let Err(e) = worker.epoll.add(socket.as_raw_fd(), slot as u64) {
                            warn!(session, leg = leg.id, %e, "cannot watch media socket");
                            registrations.free.push(slot);
                            continue;
                        }
                        slot
                    };
                kept.push((slot, Arc::clone(socket)));
                slots.push(worker::SlotAssignment {
                    slot,
                    leg: index,
                    kind,
                });
            }
        }
        // The program first, then the slots of dropped sockets become reusable: a later
        // install that reuses one is queued after this one.
        let sent = worker
            .commands
            .send(Command::Install {
                session,
                legs,
                slots,
            })
            .is_ok();
        let mut dropped_any = false;
        for (slot, socket) in old {
            if !kept.iter().any(|(_, s)| Arc::ptr_eq(s, &socket)) {
                let _ = worker.epoll.remove(socket.as_raw_fd());
                registrations.free.push(slot);
                dropped_any = true;
            }
        }
        registrations.sessions.insert(session, kept);
        if !sent {
            warn!(session, "datapath worker is gone; session not installed");
        } else if dropped_any {
            // The worker holds the dropped sockets until it applies the program.
            worker.wake.notify();
        }
    }

    /// Removes a session: its sockets leave the worker's epoll now; the worker forgets the
    /// session (and drops its handles to the sockets) at its next wake-up.
    pub fn remove(&self, session: u64) {
        let worker = self.worker_of(session);
        let mut registrations = worker
            .registrations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = registrations.sessions.remove(&session).unwrap_or_default();
        for (_, socket) in &old {
            let _ = worker.epoll.remove(socket.as_raw_fd());
        }
        if worker.commands.send(Command::Remove { session }).is_err() {
            warn!(session, "datapath worker is gone; command dropped");
        }
        registrations
            .free
            .extend(old.into_iter().map(|(slot, _)| slot));
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
