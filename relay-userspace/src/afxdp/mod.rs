//! The AF_XDP datapath: per-core workers that transform SRTP flows the XDP program redirects
//! to them.
//!
//! The XDP program pins a flow that needs SRTP ([`relay_common::FlowAction::ToWorker`]) by
//! checking its source, looking up the next hop, writing an [`relay_common::XdpMeta`] (flow id,
//! egress interface, MACs) in front of the frame and redirecting it to the AF_XDP socket of its
//! receive queue. Each worker owns one UMEM and one socket per (interface, queue) assigned to it
//! (queue `q` of every interface goes to worker `q % workers`), so it can transmit on every
//! interface without copying: a received frame is transformed in place and put on the TX ring
//! of the egress interface's socket; its completion brings it back to the worker's free list,
//! from which the fill rings are topped up.
//!
//! A worker drains up to a batch of frames per socket per turn and runs the SRTP engine over the
//! whole batch at once: decrypt (frames of any number of flows, each flow's context locked once
//! per batch), encrypt likewise, then rewrite headers (checksums recomputed) and transmit.
//! Contexts are the legs' [`LegCrypto`], shared with the socket datapath, so a flow's SRTP
//! state is one whichever path its packets take. Counters go to the legs' [`LegStats`] (packets
//! in are counted by the XDP program's per-flow counters) and to [`WorkerStats`].

pub mod frame;
mod worker;
pub mod xsk;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc, Arc, Mutex, PoisonError,
    },
    thread::JoinHandle,
};

use relay_common::xsk_slot;
use tracing::{info, warn};
pub use xsk::BindMode;

use crate::{
    datapath::{sys, LegCrypto, LegStats},
    xdp::RelayXdp,
};

/// Which transform a flow's packets need (by the port they arrive on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowKind {
    /// RTP only (the leg's RTP port without rtcp-mux).
    Rtp,
    /// RTCP only (the leg's RTCP port).
    Rtcp,
    /// Both on one port (RFC 5761), told apart by the packet type.
    Muxed,
}

/// A flow an AF_XDP worker serves: where its packets arrive, which contexts transform them,
/// where they go.
#[derive(Debug)]
pub struct CryptoFlow {
    /// The relay's (address, port) the packets arrive on; a frame whose destination differs is
    /// not this flow's (a stale flow id) and is dropped.
    pub local: SocketAddr,
    /// RTP, RTCP or both.
    pub kind: FlowKind,
    /// The receiving leg's contexts (its inbound one decrypts, when set).
    pub source_crypto: Arc<LegCrypto>,
    /// The target leg's contexts (its outbound one encrypts, when set).
    pub target_crypto: Arc<LegCrypto>,
    /// The receiving leg's counters (drops, SRTP failures).
    pub source_stats: Arc<LegStats>,
    /// The target leg's counters (packets and bytes out).
    pub target_stats: Arc<LegStats>,
    /// Egress source (the target leg's local transport).
    pub out_src: SocketAddr,
    /// Egress destination (the target leg's peer).
    pub out_dst: SocketAddr,
}

/// Why a worker dropped a frame that belongs to no leg (frames of a leg are counted on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum WorkerDrop {
    /// No or bad XDP metadata.
    BadMetadata,
    /// Metadata names a flow the worker does not have (removed meanwhile).
    UnknownFlow,
    /// The frame's destination is not the flow's (a flow id reused meanwhile).
    StaleFlow,
    /// The egress interface has no socket of this worker.
    NoEgressSocket,
    /// The egress TX ring was full.
    TxRingFull,
}

impl WorkerDrop {
    /// Every reason, in index order.
    pub const ALL: [Self; 5] = [
        Self::BadMetadata,
        Self::UnknownFlow,
        Self::StaleFlow,
        Self::NoEgressSocket,
        Self::TxRingFull,
    ];

    /// Stable name (metrics label).
    pub const fn name(self) -> &'static str {
        match self {
            Self::BadMetadata => "bad_metadata",
            Self::UnknownFlow => "unknown_flow",
            Self::StaleFlow => "stale_flow",
            Self::NoEgressSocket => "no_egress_socket",
            Self::TxRingFull => "tx_ring_full",
        }
    }
}

/// Counters of one worker, read by `/metrics`.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Frames received from the RX rings.
    pub rx_frames: AtomicU64,
    /// Frames put on TX rings.
    pub tx_frames: AtomicU64,
    /// Batches processed.
    pub batches: AtomicU64,
    /// Sleeps in poll(2) (idle).
    pub sleeps: AtomicU64,
    /// TX kicks (`sendto` calls that make the kernel transmit).
    pub tx_kicks: AtomicU64,
    /// Sockets the kernel reports in preferred-busy-polling mode (read back at start).
    pub busy_poll_sockets: AtomicU64,
    /// The kernel's counters of the worker's sockets, as of the worker's last copy (about
    /// once a second).
    pub kernel: KernelCounters,
    drops: [AtomicU64; WorkerDrop::ALL.len()],
}

/// The kernel's `XDP_STATISTICS` of a worker's sockets, summed.
#[derive(Debug, Default)]
pub struct KernelCounters {
    /// Frames the kernel dropped on the way to the sockets (e.g. no room).
    pub rx_dropped: AtomicU64,
    /// Frames dropped because an RX ring was full (the worker fell behind).
    pub rx_ring_full: AtomicU64,
    /// Times a frame arrived with no free frame in the fill ring.
    pub rx_fill_ring_empty: AtomicU64,
    /// Invalid RX or TX descriptors.
    pub invalid_descs: AtomicU64,
}

impl KernelCounters {
    fn publish(&self, s: &xsk::XskStatistics) {
        self.rx_dropped.store(s.rx_dropped, Relaxed);
        self.rx_ring_full.store(s.rx_ring_full, Relaxed);
        self.rx_fill_ring_empty
            .store(s.rx_fill_ring_empty_descs, Relaxed);
        self.invalid_descs
            .store(s.rx_invalid_descs + s.tx_invalid_descs, Relaxed);
    }
}

impl WorkerStats {
    fn drop_frames(&self, reason: WorkerDrop, count: u64) {
        self.drops[reason as usize].fetch_add(count, Relaxed);
    }

    /// Drops for one reason.
    pub fn drops(&self, reason: WorkerDrop) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }
}

/// Settings of the AF_XDP datapath.
#[derive(Clone, Debug)]
pub struct AfXdpOptions {
    /// Interfaces (names) the XDP program is attached to; every one gets sockets.
    pub interfaces: Vec<String>,
    /// Worker threads.
    pub workers: usize,
    /// CPUs to pin workers to (worker `i` to `cpus[i % len]`), empty for none.
    pub cpus: Vec<usize>,
    /// Frames per batch.
    pub batch: usize,
    /// Descriptors per ring (a power of two).
    pub ring_size: u32,
    /// Copy, zero-copy, or whichever works.
    pub bind: BindMode,
    /// Preferred busy polling: each worker runs its queues' NAPI itself, in its own receive
    /// and transmit calls, instead of being preempted by the device's interrupt or NAPI thread
    /// (see [`xsk::XskSocket::busy_poll`]).
    pub busy_poll: bool,
}

/// Errors starting the AF_XDP datapath.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AfXdpError {
    /// An interface's queues cannot be counted or it has too few.
    #[error("interface {interface}: {reason}")]
    Interface {
        /// The interface.
        interface: String,
        /// What is wrong.
        reason: String,
    },
    /// A socket or its UMEM could not be set up.
    #[error("AF_XDP socket on {interface} queue {queue}: {source}")]
    Socket {
        /// The interface.
        interface: String,
        /// The queue.
        queue: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The XSKMAP could not be programmed.
    #[error(transparent)]
    Map(#[from] crate::xdp::XdpError),
    /// A worker thread could not start.
    #[error("cannot start an AF_XDP worker: {0}")]
    Thread(#[source] std::io::Error),
}

enum Command {
    Insert { id: u32, flow: Arc<CryptoFlow> },
    Remove { id: u32 },
    Shutdown,
}

struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    wake: Arc<sys::EventFd>,
    stats: Arc<WorkerStats>,
    thread: Option<JoinHandle<()>>,
}

/// The running AF_XDP workers.
pub struct AfXdpDatapath {
    workers: Vec<WorkerHandle>,
    zero_copy: bool,
    /// XSKMAP slots this datapath filled (emptied again on drop).
    slots: Vec<u32>,
    xdp: Arc<Mutex<RelayXdp>>,
}

impl std::fmt::Debug for AfXdpDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpDatapath")
            .field("workers", &self.workers.len())
            .field("zero_copy", &self.zero_copy)
            .finish_non_exhaustive()
    }
}

fn ifindex(interface: &str) -> Option<u32> {
    let name = std::ffi::CString::new(interface).ok()?;
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

impl AfXdpDatapath {
    /// Creates the sockets (every queue of every interface), puts them in the program's
    /// XSKMAP and starts the workers.
    pub fn start(options: &AfXdpOptions, xdp: Arc<Mutex<RelayXdp>>) -> Result<Self, AfXdpError> {
        let workers = options.workers.max(1);
        if !options.ring_size.is_power_of_two() || options.ring_size < 64 {
            return Err(AfXdpError::Interface {
                interface: String::new(),
                reason: format!(
                    "ring size {} is not a power of two of at least 64",
                    options.ring_size
                ),
            });
        }
        let interfaces = Self::interfaces(options, workers, &xdp)?;
        let mut datapath = Self {
            workers: Vec::with_capacity(workers),
            zero_copy: false,
            slots: Vec::new(),
            xdp,
        };
        for w in 0..workers {
            // This worker's (ifindex, name, queue, slot).
            let assigned: Vec<(u32, String, u32, u32)> = interfaces
                .iter()
                .flat_map(|(index, name, queues, base)| {
                    (0..*queues)
                        .filter(move |q| *q as usize % workers == w)
                        .filter_map(move |q| {
                            xsk_slot(*base, q).map(|slot| (*index, name.clone(), q, slot))
                        })
                })
                .collect();
            let built = worker::Worker::build(&assigned, options)?;
            datapath.zero_copy |= built.zero_copy();
            {
                let mut xdp = datapath.xdp.lock().unwrap_or_else(PoisonError::into_inner);
                for (socket, (_, _, _, slot)) in built.sockets().iter().zip(&assigned) {
                    xdp.set_xsk(*slot, socket.as_raw_fd())?;
                    datapath.slots.push(*slot);
                }
            }
            let (commands, receiver) = mpsc::channel();
            let wake = Arc::new(sys::EventFd::new().map_err(AfXdpError::Thread)?);
            let stats = Arc::new(WorkerStats::default());
            stats
                .busy_poll_sockets
                .store(built.busy_polling_sockets() as u64, Relaxed);
            let cpu = (!options.cpus.is_empty()).then(|| options.cpus[w % options.cpus.len()]);
            let (worker_wake, worker_stats) = (Arc::clone(&wake), Arc::clone(&stats));
            let batch = options.batch;
            let thread = std::thread::Builder::new()
                .name(format!("relay-xsk-{w}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(e) = sys::pin_to_cpu(cpu) {
                            warn!(cpu, %e, "cannot pin AF_XDP worker");
                        }
                    }
                    built.run(&receiver, &worker_wake, &worker_stats, batch);
                })
                .map_err(AfXdpError::Thread)?;
            datapath.workers.push(WorkerHandle {
                commands,
                wake,
                stats,
                thread: Some(thread),
            });
        }
        info!(
            workers,
            interfaces = options.interfaces.len(),
            zero_copy = datapath.zero_copy,
            "AF_XDP datapath started"
        );
        Ok(datapath)
    }

    /// `(ifindex, name, queues, XSKMAP base)` of every interface, each base programmed.
    fn interfaces(
        options: &AfXdpOptions,
        workers: usize,
        xdp: &Mutex<RelayXdp>,
    ) -> Result<Vec<(u32, String, u32, u32)>, AfXdpError> {
        let mut interfaces = Vec::new();
        for (position, name) in options.interfaces.iter().enumerate() {
            let index = ifindex(name).ok_or_else(|| AfXdpError::Interface {
                interface: name.clone(),
                reason: "no such interface".to_owned(),
            })?;
            let queues = xsk::queue_count(name).map_err(|e| AfXdpError::Interface {
                interface: name.clone(),
                reason: format!("cannot count its queues: {e}"),
            })?;
            let queues = queues.min(relay_common::XSK_QUEUES_PER_INTERFACE);
            if (queues as usize) < workers {
                return Err(AfXdpError::Interface {
                    interface: name.clone(),
                    reason: format!(
                        "it has {queues} queue(s) but there are {workers} AF_XDP workers; every \
                         worker needs a queue on every interface to transmit there (lower \
                         datapath.xdp_workers or add queues, e.g. `ethtool -L`)"
                    ),
                });
            }
            let base = u32::try_from(position).unwrap_or(u32::MAX)
                * relay_common::XSK_QUEUES_PER_INTERFACE;
            if position >= relay_common::XSK_INTERFACES as usize {
                return Err(AfXdpError::Interface {
                    interface: name.clone(),
                    reason: format!(
                        "at most {} interfaces can have AF_XDP sockets",
                        relay_common::XSK_INTERFACES
                    ),
                });
            }
            xdp.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .set_xsk_base(index, base)?;
            interfaces.push((index, name.clone(), queues, base));
        }
        Ok(interfaces)
    }

    fn broadcast(&self, command: impl Fn() -> Command) {
        for worker in &self.workers {
            if worker.commands.send(command()).is_ok() {
                worker.wake.notify();
            } else {
                warn!("AF_XDP worker is gone; command dropped");
            }
        }
    }

    /// Serves flow `id` (every worker: its frames may arrive on any queue). Call before the
    /// XDP map points the flow at the workers.
    pub fn insert_flow(&self, id: u32, flow: &Arc<CryptoFlow>) {
        self.broadcast(|| Command::Insert {
            id,
            flow: Arc::clone(flow),
        });
    }

    /// Stops serving flow `id`. Call after the XDP map stopped pointing at the workers.
    pub fn remove_flow(&self, id: u32) {
        self.broadcast(|| Command::Remove { id });
    }

    /// Whether the sockets run zero-copy.
    pub const fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Every worker's counters.
    pub fn stats(&self) -> Vec<Arc<WorkerStats>> {
        self.workers.iter().map(|w| Arc::clone(&w.stats)).collect()
    }

    /// Totals over workers.
    pub fn totals(&self) -> WorkerTotals {
        let mut totals = WorkerTotals::default();
        for w in &self.workers {
            let s = &w.stats;
            totals.rx_frames += s.rx_frames.load(Relaxed);
            totals.tx_frames += s.tx_frames.load(Relaxed);
            totals.tx_kicks += s.tx_kicks.load(Relaxed);
            totals.batches += s.batches.load(Relaxed);
            totals.sleeps += s.sleeps.load(Relaxed);
            totals.busy_poll_sockets += s.busy_poll_sockets.load(Relaxed);
            totals.kernel_rx_dropped += s.kernel.rx_dropped.load(Relaxed);
            totals.kernel_rx_ring_full += s.kernel.rx_ring_full.load(Relaxed);
            totals.kernel_rx_fill_ring_empty += s.kernel.rx_fill_ring_empty.load(Relaxed);
            totals.kernel_invalid_descs += s.kernel.invalid_descs.load(Relaxed);
            for reason in WorkerDrop::ALL {
                *totals.drops.entry(reason.name()).or_insert(0) += s.drops(reason);
            }
        }
        totals
    }
}

/// [`WorkerStats`] summed over workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerTotals {
    /// Frames taken off RX rings.
    pub rx_frames: u64,
    /// Frames put on TX rings.
    pub tx_frames: u64,
    /// Transmit kicks.
    pub tx_kicks: u64,
    /// Receive batches.
    pub batches: u64,
    /// Idle sleeps.
    pub sleeps: u64,
    /// Sockets in preferred-busy-polling mode.
    pub busy_poll_sockets: u64,
    /// [`KernelCounters::rx_dropped`].
    pub kernel_rx_dropped: u64,
    /// [`KernelCounters::rx_ring_full`].
    pub kernel_rx_ring_full: u64,
    /// [`KernelCounters::rx_fill_ring_empty`].
    pub kernel_rx_fill_ring_empty: u64,
    /// [`KernelCounters::invalid_descs`].
    pub kernel_invalid_descs: u64,
    /// Drops outside any leg, by reason name.
    pub drops: BTreeMap<&'static str, u64>,
}

impl Drop for AfXdpDatapath {
    fn drop(&mut self) {
        {
            let mut xdp = self.xdp.lock().unwrap_or_else(PoisonError::into_inner);
            for slot in self.slots.drain(..) {
                if let Err(e) = xdp.unset_xsk(slot) {
                    warn!(slot, %e, "cannot empty an XSKMAP slot");
                }
            }
        }
        self.broadcast(|| Command::Shutdown);
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
