//! Per-leg counters, written by datapath workers and read by the control API without locks.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex, PoisonError,
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use crate::model::LegCountersView;

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// From a source other than the latched/fixed one on a strict leg.
    WrongSource,
    /// The target leg has no remote yet.
    NoRemote,
    /// The leg forwards nowhere.
    NotForwarded,
    /// Not an RTP/RTCP packet (too short, wrong version, truncated).
    Malformed,
    /// SRTP refused it for a reason other than authentication or replay (lifetime, MKI, ...).
    SrtpError,
    /// The kernel refused the send (buffer full, unreachable).
    SendError,
}

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [Self; 6] = [
        Self::WrongSource,
        Self::NoRemote,
        Self::NotForwarded,
        Self::Malformed,
        Self::SrtpError,
        Self::SendError,
    ];

    /// Stable name (JSON key and metrics label).
    pub const fn name(self) -> &'static str {
        match self {
            Self::WrongSource => "wrong_source",
            Self::NoRemote => "no_remote",
            Self::NotForwarded => "not_forwarded",
            Self::Malformed => "malformed",
            Self::SrtpError => "srtp_error",
            Self::SendError => "send_error",
        }
    }
}

/// Counters of one leg.
#[derive(Debug, Default)]
pub struct LegStats {
    /// Packets received on the leg's sockets.
    pub packets_in: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Packets sent to the leg's peer.
    pub packets_out: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// SRTP/SRTCP authentication failures.
    pub auth_failures: AtomicU64,
    /// SRTP/SRTCP replays and too-old packets.
    pub replays: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    /// Unix ms of the last packet received (0: none).
    pub last_packet_unix_ms: AtomicU64,
    /// Packets XDP received for this leg on flows that were removed since (those of live
    /// flows are read from the kernel); included in `packets_in`.
    pub xdp_packets: AtomicU64,
    latched: Mutex<Latched>,
}

/// What a leg's latches learned, as published by its worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latched {
    /// Learned RTP source.
    pub rtp: Option<SocketAddr>,
    /// Learned RTCP source (the RTP one with rtcp-mux).
    pub rtcp: Option<SocketAddr>,
    /// When the RTP latch stops following (its window closes), once it learned something.
    pub rtp_locks_at: Option<Instant>,
    /// When the RTCP latch stops following.
    pub rtcp_locks_at: Option<Instant>,
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl LegStats {
    /// Counts a drop.
    pub fn drop_packet(&self, reason: DropReason, packets: u64) {
        self.drops[reason as usize].fetch_add(packets, Relaxed);
    }

    /// Counts a packet the SRTP engine refused (both datapaths count alike).
    pub fn count_srtp_error(&self, error: &srtp::Error) {
        match error {
            srtp::Error::AuthenticationFailed => {
                self.auth_failures.fetch_add(1, Relaxed);
            }
            srtp::Error::Replayed { .. } | srtp::Error::TooOld { .. } => {
                self.replays.fetch_add(1, Relaxed);
            }
            srtp::Error::Truncated { .. } | srtp::Error::BadVersion { .. } => {
                self.drop_packet(DropReason::Malformed, 1);
            }
            _ => self.drop_packet(DropReason::SrtpError, 1),
        }
    }

    /// Drops for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }

    /// Records what the leg's latches learned.
    pub fn set_latched(&self, latched: Latched) {
        *self.latched.lock().unwrap_or_else(PoisonError::into_inner) = latched;
    }

    /// The sources the leg latched onto (RTP, RTCP).
    pub fn latched(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let l = self.latch_state();
        (l.rtp, l.rtcp)
    }

    /// What the leg's latches learned, with their lock times.
    pub fn latch_state(&self) -> Latched {
        *self.latched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A snapshot for the API.
    pub fn view(&self) -> LegCountersView {
        let last = self.last_packet_unix_ms.load(Relaxed);
        LegCountersView {
            packets_in: self.packets_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            packets_out: self.packets_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
            replays: self.replays.load(Relaxed),
            drops: DropReason::ALL
                .iter()
                .map(|&r| (r.name().to_owned(), self.drops(r)))
                .collect(),
            last_packet_unix_ms: (last != 0).then_some(last),
            xdp_packets: None,
        }
    }
}
