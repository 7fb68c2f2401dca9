//! Which legs' media XDP carries, and the bookkeeping of those kernel flows.
//!
//! A leg's media is pinned in XDP when its source and its target's destination are settled:
//! each is fixed by signalling (`latch: fixed`) or learned by the socket datapath and locked
//! (its latch window closed), and all four addresses are of one family. A pinned flow is
//! [`FlowAction::ForwardPlain`] when nothing on its path needs SRTP (forwarded entirely in XDP)
//! and [`FlowAction::ToWorker`] otherwise (SRTP in the AF_XDP workers), when relayd runs them.
//! A leg gets one flow for its RTP port and one for its RTCP port (none extra with rtcp-mux;
//! a muxed leg forwarding to a non-muxed one stays in userspace, which sends its RTCP to the
//! other port). Everything else stays on the socket datapath, which XDP reaches by passing the
//! packet: the latching itself (authenticated first on SRTP legs) always happens there.
//!
//! [`plan`] is pure, with time as an argument. [`XdpFlows`] applies a plan as a difference:
//! flows that did not change keep their id and counters; removed flows fold their final
//! counters into their legs' counters, so no counter ever goes backwards.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{atomic::Ordering::Relaxed, Arc, Mutex, PoisonError},
    time::Instant,
};

use relay_common::{FlowAction, FlowEntry, FlowKey, FlowStats, FLOW_MAP_CAPACITY};
use tracing::warn;

use crate::{
    afxdp::{AfXdpDatapath, CryptoFlow, FlowKind},
    datapath::{stats::Latched, LegCrypto, LegStats},
    model::{LatchMode, LegSpec},
    xdp::RelayXdp,
};

/// A leg as the planner sees it: its spec, its local transport, what its latches learned.
#[derive(Clone, Copy, Debug)]
pub struct LegLocal<'a> {
    /// The leg's spec.
    pub spec: &'a LegSpec,
    /// Its local address.
    pub address: IpAddr,
    /// Its RTP port (RTCP is +1 unless muxed).
    pub rtp_port: u16,
    /// What the socket datapath learned for it.
    pub latched: Latched,
}

impl LegLocal<'_> {
    fn rtcp_port(&self) -> u16 {
        if self.spec.rtcp_mux {
            self.rtp_port
        } else {
            self.rtp_port + 1
        }
    }

    /// The peer's RTP or RTCP transport when it is settled: fixed by signalling, or learned
    /// and locked.
    fn settled_peer(&self, rtcp: bool, now: Instant) -> Option<SocketAddr> {
        match self.spec.latch {
            LatchMode::Fixed => self.spec.remote.map(|r| {
                if rtcp {
                    SocketAddr::new(r.address, r.rtcp_port(self.spec.rtcp_mux))
                } else {
                    SocketAddr::new(r.address, r.rtp_port)
                }
            }),
            LatchMode::Learn => {
                let (learned, locks_at) = if rtcp {
                    (self.latched.rtcp, self.latched.rtcp_locks_at)
                } else {
                    (self.latched.rtp, self.latched.rtp_locks_at)
                };
                learned.filter(|_| locks_at.is_some_and(|at| at <= now))
            }
        }
    }
}

/// One kernel flow to install.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedFlow {
    /// The receiving leg (counts packets in).
    pub leg: usize,
    /// The target leg (counts packets out).
    pub target: usize,
    /// The relay's local (address, port) packets arrive on.
    pub local: SocketAddr,
    /// Where they must come from.
    pub peer: SocketAddr,
    /// Strict source.
    pub strict: bool,
    /// Egress source (the target leg's local transport).
    pub out_src: SocketAddr,
    /// Egress destination (the target leg's peer).
    pub out_dst: SocketAddr,
    /// RTP, RTCP or both.
    pub kind: FlowKind,
    /// SRTP on the way (decrypt, encrypt or both): an AF_XDP worker flow.
    pub crypto: bool,
}

/// The flows XDP can carry for a session at time `now` (see the module doc).
pub fn plan(legs: &[LegLocal<'_>], now: Instant) -> Vec<PlannedFlow> {
    let ids: Vec<&str> = legs.iter().map(|l| l.spec.id.as_str()).collect();
    let mut flows = Vec::new();
    for (i, leg) in legs.iter().enumerate() {
        let Some(target) = leg
            .spec
            .forward_to
            .as_deref()
            .and_then(|t| ids.iter().position(|id| *id == t))
        else {
            continue;
        };
        let to = &legs[target];
        if leg.spec.rtcp_mux && !to.spec.rtcp_mux {
            continue;
        }
        let crypto = leg.spec.inbound_crypto.is_some() || to.spec.outbound_crypto.is_some();
        let transports: &[(FlowKind, bool)] = if leg.spec.rtcp_mux {
            &[(FlowKind::Muxed, false)]
        } else {
            &[(FlowKind::Rtp, false), (FlowKind::Rtcp, true)]
        };
        for &(kind, rtcp) in transports {
            let (Some(peer), Some(out_dst)) =
                (leg.settled_peer(rtcp, now), to.settled_peer(rtcp, now))
            else {
                continue;
            };
            let local = SocketAddr::new(
                leg.address,
                if rtcp { leg.rtcp_port() } else { leg.rtp_port },
            );
            let out_src =
                SocketAddr::new(to.address, if rtcp { to.rtcp_port() } else { to.rtp_port });
            if !same_family(&[local.ip(), peer.ip(), out_src.ip(), out_dst.ip()]) {
                continue;
            }
            flows.push(PlannedFlow {
                leg: i,
                target,
                local,
                peer,
                strict: leg.spec.strict_source,
                out_src,
                out_dst,
                kind,
                crypto,
            });
        }
    }
    flows
}

/// XDP rewrites addresses but does not translate between IPv4 and IPv6.
fn same_family(addresses: &[IpAddr]) -> bool {
    addresses.iter().all(IpAddr::is_ipv4) || addresses.iter().all(IpAddr::is_ipv6)
}

/// A leg's shared runtime state, as the flows need it.
#[derive(Clone, Debug)]
pub struct LegShared {
    /// Its counters.
    pub stats: Arc<LegStats>,
    /// Its SRTP contexts.
    pub crypto: Arc<LegCrypto>,
}

#[derive(Clone, Debug)]
struct Installed {
    flow: PlannedFlow,
    id: u32,
    /// The legs' counters, to fold the flow's final counters into when it goes.
    source: Arc<LegStats>,
    target: Arc<LegStats>,
}

/// The kernel flows of every session.
pub struct XdpFlows {
    xdp: Arc<Mutex<RelayXdp>>,
    workers: Option<Arc<AfXdpDatapath>>,
    by_session: HashMap<u64, Vec<Installed>>,
    free_ids: Vec<u32>,
    next_id: u32,
    /// Flows a previous relayd left in the pinned map, not yet claimed by a restored session.
    adoptable: HashMap<FlowKey, FlowEntry>,
}

impl std::fmt::Debug for XdpFlows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpFlows")
            .field("sessions", &self.by_session.len())
            .field("workers", &self.workers.is_some())
            .finish_non_exhaustive()
    }
}

/// Packets XDP (and the AF_XDP workers' XDP side) forwarded for one leg, from live flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegXdpCounters {
    /// Packets received by XDP (forwarded in XDP, redirected to a worker, or dropped for their
    /// source).
    pub packets_in: u64,
    /// UDP payload bytes of the forwarded and redirected ones.
    pub bytes_in: u64,
    /// Packets sent to this leg's peer by XDP itself (workers count theirs on the leg).
    pub packets_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Packets XDP dropped for a wrong source.
    pub wrong_source: u64,
}

impl XdpFlows {
    /// Bookkeeping over a loaded, attached program; crypto flows are pinned only with
    /// `workers`.
    pub fn new(xdp: Arc<Mutex<RelayXdp>>, workers: Option<Arc<AfXdpDatapath>>) -> Self {
        Self {
            xdp,
            workers,
            by_session: HashMap::new(),
            free_ids: Vec::new(),
            next_id: 0,
            adoptable: HashMap::new(),
        }
    }

    /// Takes stock of the flows a previous relayd left in the (pinned) flow map: restored
    /// sessions that plan the same flow keep it as it is (same id, counters running, never
    /// removed meanwhile). Call before restoring sessions; returns the flows found.
    pub fn adopt_existing(&mut self) -> usize {
        let found = match self
            .xdp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flows()
        {
            Ok(found) => found,
            Err(e) => {
                warn!(%e, "cannot read the pinned flow map; its flows will be replaced");
                Vec::new()
            }
        };
        self.adoptable = found.into_iter().collect();
        let ids: std::collections::HashSet<u32> =
            self.adoptable.values().map(|e| e.flow_id).collect();
        if let Some(&max) = ids.iter().max() {
            self.next_id = (max + 1).min(FLOW_MAP_CAPACITY);
            self.free_ids = (0..self.next_id)
                .rev()
                .filter(|id| !ids.contains(id))
                .collect();
        }
        self.adoptable.len()
    }

    /// Removes the flows found by [`XdpFlows::adopt_existing`] that no restored session
    /// claimed. Returns how many.
    pub fn drop_unadopted(&mut self) -> usize {
        let stale: Vec<(FlowKey, FlowEntry)> = self.adoptable.drain().collect();
        let mut xdp = self.xdp.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, entry) in &stale {
            if let Err(e) = xdp.remove_flow(key) {
                warn!(%e, "cannot remove a stale XDP flow");
            }
            self.free_ids.push(entry.flow_id);
        }
        stale.len()
    }

    fn allocate_id(&mut self) -> Option<u32> {
        self.free_ids.pop().or_else(|| {
            (self.next_id < FLOW_MAP_CAPACITY).then(|| {
                self.next_id += 1;
                self.next_id - 1
            })
        })
    }

    fn entry(flow: &PlannedFlow, id: u32) -> FlowEntry {
        let build = if flow.crypto {
            FlowEntry::to_worker
        } else {
            FlowEntry::forward_plain
        };
        build(id, Some(flow.peer), flow.strict, flow.out_src, flow.out_dst)
    }

    fn crypto_flow(flow: &PlannedFlow, legs: &[LegShared]) -> Option<Arc<CryptoFlow>> {
        let (source, target) = (legs.get(flow.leg)?, legs.get(flow.target)?);
        Some(Arc::new(CryptoFlow {
            local: flow.local,
            kind: flow.kind,
            source_crypto: Arc::clone(&source.crypto),
            target_crypto: Arc::clone(&target.crypto),
            source_stats: Arc::clone(&source.stats),
            target_stats: Arc::clone(&target.stats),
            out_src: flow.out_src,
            out_dst: flow.out_dst,
        }))
    }

    /// Makes session `session`'s kernel flows those of `flows` (legs' shared state in `legs`,
    /// by index). Unchanged flows are left alone.
    pub fn program(&mut self, session: u64, flows: &[PlannedFlow], legs: &[LegShared]) {
        let flows: Vec<PlannedFlow> = flows
            .iter()
            .filter(|f| !f.crypto || self.workers.is_some())
            .copied()
            .collect();
        let old = self.by_session.remove(&session).unwrap_or_default();
        let xdp = Arc::clone(&self.xdp);
        let mut xdp = xdp.lock().unwrap_or_else(PoisonError::into_inner);
        let mut kept: Vec<Installed> = Vec::with_capacity(flows.len());
        // Flows that went away (or whose port now carries another flow kind).
        let mut leftovers: Vec<Installed> = Vec::new();
        for installed in old {
            if flows.iter().any(|f| f.local == installed.flow.local) {
                kept.push(installed);
            } else {
                leftovers.push(installed);
            }
        }
        for installed in leftovers {
            self.retire(&mut xdp, session, &installed);
        }
        let mut result = Vec::with_capacity(flows.len());
        for flow in &flows {
            let (Some(source), Some(target)) = (legs.get(flow.leg), legs.get(flow.target)) else {
                continue;
            };
            let previous = kept
                .iter()
                .position(|k| k.flow.local == flow.local)
                .map(|i| kept.swap_remove(i));
            let unchanged = previous.as_ref().is_some_and(|p| {
                p.flow == *flow
                    && Arc::ptr_eq(&p.source, &source.stats)
                    && Arc::ptr_eq(&p.target, &target.stats)
            });
            if let (true, Some(previous)) = (unchanged, previous.clone()) {
                result.push(previous);
                continue;
            }
            let adopted = if previous.is_none() {
                self.adoptable
                    .remove(&FlowKey::from_socket_addr(flow.local))
            } else {
                None
            };
            if let Some(old) = adopted.filter(|old| *old == Self::entry(flow, old.flow_id)) {
                result.push(self.keep_adopted(flow, old.flow_id, legs));
                continue;
            }
            let id = if let Some(previous) = &previous {
                // Same port, new content: fold what the old content counted into its legs and
                // start the id's counters again.
                Self::fold_counters(&xdp, previous);
                previous.id
            } else if let Some(old) = adopted {
                // The previous relayd's flow on this port, with other content: reuse its id.
                old.flow_id
            } else if let Some(id) = self.allocate_id() {
                id
            } else {
                warn!(
                    session,
                    "XDP flow ids exhausted; the flow stays on the socket datapath"
                );
                continue;
            };
            if let Err(e) = xdp.reset_flow_stats(id) {
                warn!(%e, "cannot reset XDP flow counters");
            }
            let worker_flow = flow.crypto.then(|| Self::crypto_flow(flow, legs)).flatten();
            if let (Some(workers), Some(worker_flow)) = (&self.workers, &worker_flow) {
                // Workers first, so the first redirected frame finds its flow.
                workers.insert_flow(id, worker_flow);
            }
            match xdp.insert_flow(FlowKey::from_socket_addr(flow.local), Self::entry(flow, id)) {
                Ok(()) => result.push(Installed {
                    flow: *flow,
                    id,
                    source: Arc::clone(&source.stats),
                    target: Arc::clone(&target.stats),
                }),
                Err(e) => {
                    warn!(session, %e, "cannot program an XDP flow; it stays on the socket datapath");
                    let _ = xdp.remove_flow(&FlowKey::from_socket_addr(flow.local));
                    if let (Some(workers), true) = (&self.workers, flow.crypto) {
                        workers.remove_flow(id);
                    }
                    self.free_ids.push(id);
                }
            }
            if previous
                .as_ref()
                .is_some_and(|p| p.flow.crypto && !flow.crypto)
            {
                if let Some(workers) = &self.workers {
                    workers.remove_flow(id);
                }
            }
        }
        if !result.is_empty() {
            self.by_session.insert(session, result);
        }
    }

    /// A flow the previous relayd left exactly as planned: kept running untouched (its worker
    /// side, if any, registered again).
    fn keep_adopted(&self, flow: &PlannedFlow, id: u32, legs: &[LegShared]) -> Installed {
        if let (Some(workers), true) = (&self.workers, flow.crypto) {
            if let Some(worker_flow) = Self::crypto_flow(flow, legs) {
                workers.insert_flow(id, &worker_flow);
            }
        }
        Installed {
            flow: *flow,
            id,
            source: Arc::clone(&legs[flow.leg].stats),
            target: Arc::clone(&legs[flow.target].stats),
        }
    }

    /// Removes one installed flow: map entry first, then the workers; its counters go to its
    /// legs; its id is freed.
    fn retire(&mut self, xdp: &mut RelayXdp, session: u64, installed: &Installed) {
        if let Err(e) = xdp.remove_flow(&FlowKey::from_socket_addr(installed.flow.local)) {
            warn!(session, %e, "cannot remove an XDP flow");
        }
        if let (Some(workers), true) = (&self.workers, installed.flow.crypto) {
            workers.remove_flow(installed.id);
        }
        Self::fold_counters(xdp, installed);
        self.free_ids.push(installed.id);
    }

    /// Adds a flow's XDP counters to its legs' counters.
    fn fold_counters(xdp: &RelayXdp, installed: &Installed) {
        let stats: FlowStats = xdp.flow_stats(installed.id).unwrap_or_default();
        let source = &installed.source;
        // As on the socket datapath, packets dropped for their source were received too.
        source
            .packets_in
            .fetch_add(stats.packets + stats.wrong_source, Relaxed);
        source.bytes_in.fetch_add(stats.bytes, Relaxed);
        source.xdp_packets.fetch_add(stats.packets, Relaxed);
        source.drop_packet(crate::datapath::DropReason::WrongSource, stats.wrong_source);
        if !installed.flow.crypto {
            installed
                .target
                .packets_out
                .fetch_add(stats.packets, Relaxed);
            installed.target.bytes_out.fetch_add(stats.bytes, Relaxed);
        }
    }

    /// Removes session `session`'s kernel flows.
    pub fn remove(&mut self, session: u64) {
        let Some(installed) = self.by_session.remove(&session) else {
            return;
        };
        let xdp = Arc::clone(&self.xdp);
        let mut xdp = xdp.lock().unwrap_or_else(PoisonError::into_inner);
        for flow in &installed {
            self.retire(&mut xdp, session, flow);
        }
    }

    /// What live flows forwarded for each leg of session `session` (`legs` entries).
    pub fn counters(&self, session: u64, legs: usize) -> Vec<LegXdpCounters> {
        let mut counters = vec![LegXdpCounters::default(); legs];
        let Some(installed) = self.by_session.get(&session) else {
            return counters;
        };
        let xdp = self.xdp.lock().unwrap_or_else(PoisonError::into_inner);
        for flow in installed {
            let stats: FlowStats = xdp.flow_stats(flow.id).unwrap_or_default();
            if let Some(c) = counters.get_mut(flow.flow.leg) {
                // As on the socket datapath, packets dropped for their source were received.
                c.packets_in += stats.packets + stats.wrong_source;
                c.bytes_in += stats.bytes;
                c.wrong_source += stats.wrong_source;
            }
            if flow.flow.crypto {
                continue;
            }
            if let Some(c) = counters.get_mut(flow.flow.target) {
                c.packets_out += stats.packets;
                c.bytes_out += stats.bytes;
            }
        }
        counters
    }

    /// The action of each of session `session`'s live flows, by local transport (for tests
    /// and diagnostics).
    pub fn actions(&self, session: u64) -> Vec<(SocketAddr, FlowAction)> {
        self.by_session
            .get(&session)
            .map_or_else(Vec::new, |installed| {
                installed
                    .iter()
                    .map(|i| {
                        let action = if i.flow.crypto {
                            FlowAction::ToWorker
                        } else {
                            FlowAction::ForwardPlain
                        };
                        (i.flow.local, action)
                    })
                    .collect()
            })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr, SocketAddr},
        time::{Duration, Instant},
    };

    use super::{plan, LegLocal};
    use crate::{afxdp::FlowKind, datapath::stats::Latched, model::LegSpec};

    fn leg(json: serde_json::Value) -> LegSpec {
        serde_json::from_value(json).unwrap()
    }

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));

    fn local(spec: &LegSpec, rtp_port: u16) -> LegLocal<'_> {
        LegLocal {
            spec,
            address: LOCAL,
            rtp_port,
            latched: Latched::default(),
        }
    }

    #[test]
    fn fixed_plain_legs_get_rtp_and_rtcp_flows() {
        let now = Instant::now();
        let a = leg(
            serde_json::json!({ "id": "a", "latch": "fixed", "forward_to": "b",
            "remote": { "address": "198.18.0.2", "rtp_port": 4000 } }),
        );
        let b = leg(
            serde_json::json!({ "id": "b", "latch": "fixed", "forward_to": "a", "rtcp_mux": true,
            "remote": { "address": "198.18.1.2", "rtp_port": 5000 } }),
        );
        let flows = plan(&[local(&a, 30_000), local(&b, 30_002)], now);
        assert_eq!(
            flows.len(),
            2,
            "a: RTP + RTCP; b (muxed) to a (not muxed): userspace"
        );
        assert!(flows.iter().all(|f| !f.crypto));
        assert_eq!(
            (flows[0].local.port(), flows[0].kind),
            (30_000, FlowKind::Rtp)
        );
        assert_eq!(flows[0].out_src.port(), 30_002);
        assert_eq!(flows[0].out_dst.port(), 5000);
        assert_eq!(
            (flows[1].local.port(), flows[1].kind),
            (30_001, FlowKind::Rtcp)
        );
        assert_eq!(flows[1].peer.port(), 4001);
        assert_eq!(
            flows[1].out_src.port(),
            30_002,
            "b's RTCP shares its RTP port"
        );
        assert_eq!(flows[1].out_dst.port(), 5000);
    }

    #[test]
    fn crypto_on_either_side_makes_a_worker_flow() {
        let now = Instant::now();
        let key = serde_json::json!({ "suite": "AES_CM_128_HMAC_SHA1_80",
            "keys": [{ "key": "WnD8ZCF0Fs5xUv8iTrR6Ya2jgqB2H2TdVA4cXKVA" }] });
        let a = leg(
            serde_json::json!({ "id": "a", "latch": "fixed", "forward_to": "b",
            "rtcp_mux": true, "inbound_crypto": key, "outbound_crypto": key,
            "remote": { "address": "198.18.0.2", "rtp_port": 4000 } }),
        );
        let b = leg(
            serde_json::json!({ "id": "b", "latch": "fixed", "forward_to": "a",
            "rtcp_mux": true, "remote": { "address": "198.18.1.2", "rtp_port": 5000 } }),
        );
        let flows = plan(&[local(&a, 30_000), local(&b, 30_002)], now);
        assert_eq!(flows.len(), 2);
        assert!(flows.iter().all(|f| f.crypto && f.kind == FlowKind::Muxed));
    }

    #[test]
    fn a_learning_leg_is_pinned_once_its_latch_locks() {
        let t0 = Instant::now();
        let a = leg(
            serde_json::json!({ "id": "a", "forward_to": "b", "rtcp_mux": true,
            "remote": { "address": "198.18.0.2", "rtp_port": 4000 } }),
        );
        let b = leg(
            serde_json::json!({ "id": "b", "latch": "fixed", "forward_to": "a",
            "rtcp_mux": true, "remote": { "address": "198.18.1.2", "rtp_port": 5000 } }),
        );
        let mut la = local(&a, 30_000);
        let lb = local(&b, 30_002);
        assert_eq!(
            plan(&[la, lb], t0).len(),
            0,
            "nothing learned: userspace both ways"
        );
        let learned: SocketAddr = "198.18.0.9:4444".parse().unwrap();
        la.latched = Latched {
            rtp: Some(learned),
            rtcp: Some(learned),
            rtp_locks_at: Some(t0 + Duration::from_secs(10)),
            rtcp_locks_at: Some(t0 + Duration::from_secs(10)),
        };
        assert_eq!(plan(&[la, lb], t0).len(), 0, "learned but still following");
        let flows = plan(&[la, lb], t0 + Duration::from_secs(10));
        assert_eq!(flows.len(), 2);
        assert_eq!(
            flows[0].peer, learned,
            "a's packets must come from what it learned"
        );
        assert_eq!(flows[1].out_dst, learned, "and b's go there");
    }

    #[test]
    fn mixed_families_stay_in_userspace() {
        let a = leg(
            serde_json::json!({ "id": "a", "latch": "fixed", "forward_to": "b",
            "rtcp_mux": true, "remote": { "address": "2001:2::2", "rtp_port": 4000 } }),
        );
        let b = leg(
            serde_json::json!({ "id": "b", "latch": "fixed", "forward_to": "a",
            "rtcp_mux": true, "remote": { "address": "198.18.1.2", "rtp_port": 5000 } }),
        );
        assert!(plan(&[local(&a, 30_000), local(&b, 30_002)], Instant::now()).is_empty());
    }
}
