//! Which legs' media XDP forwards by itself, and the bookkeeping of those kernel flows.
//!
//! A leg's media is pinned in XDP (`FlowAction::ForwardPlain`) when nothing on its path needs
//! userspace: it arrives as plain RTP (no inbound crypto), leaves as plain RTP (the target leg
//! has no outbound crypto), its source is fixed by signalling (`latch: fixed`), the target's
//! destination is fixed too, and all four addresses are of one family. Such a leg gets one flow for its RTP port
//! and one for its RTCP port (none extra with rtcp-mux). Everything else stays on the socket
//! datapath, which XDP reaches by passing the packet (no flow matches). [`plan`] is pure;
//! [`XdpFlows`] writes the plan into the maps and reads the per-flow counters back.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
};

use relay_common::{FlowEntry, FlowKey, FlowStats, FLOW_MAP_CAPACITY};
use tracing::warn;

use crate::{
    model::{LatchMode, LegSpec},
    xdp::RelayXdp,
};

/// A leg as the planner sees it: its spec and its local transport.
#[derive(Clone, Copy, Debug)]
pub struct LegLocal<'a> {
    /// The leg's spec.
    pub spec: &'a LegSpec,
    /// Its local address.
    pub address: IpAddr,
    /// Its RTP port (RTCP is +1 unless muxed).
    pub rtp_port: u16,
}

impl LegLocal<'_> {
    fn rtcp_port(&self) -> u16 {
        if self.spec.rtcp_mux {
            self.rtp_port
        } else {
            self.rtp_port + 1
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
}

/// The flows XDP can carry for a session (see the module doc).
pub fn plan(legs: &[LegLocal<'_>]) -> Vec<PlannedFlow> {
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
        let (Some(remote), Some(target_remote)) = (leg.spec.remote, to.spec.remote) else {
            continue;
        };
        let eligible = leg.spec.inbound_crypto.is_none()
            && to.spec.outbound_crypto.is_none()
            && leg.spec.latch == LatchMode::Fixed
            && to.spec.latch == LatchMode::Fixed
            && same_family(&[
                leg.address,
                to.address,
                remote.address,
                target_remote.address,
            ]);
        if !eligible {
            continue;
        }
        flows.push(PlannedFlow {
            leg: i,
            target,
            local: SocketAddr::new(leg.address, leg.rtp_port),
            peer: SocketAddr::new(remote.address, remote.rtp_port),
            strict: leg.spec.strict_source,
            out_src: SocketAddr::new(to.address, to.rtp_port),
            out_dst: SocketAddr::new(target_remote.address, target_remote.rtp_port),
        });
        if !leg.spec.rtcp_mux {
            flows.push(PlannedFlow {
                leg: i,
                target,
                local: SocketAddr::new(leg.address, leg.rtcp_port()),
                peer: SocketAddr::new(remote.address, remote.rtcp_port(false)),
                strict: leg.spec.strict_source,
                out_src: SocketAddr::new(to.address, to.rtcp_port()),
                out_dst: SocketAddr::new(
                    target_remote.address,
                    target_remote.rtcp_port(to.spec.rtcp_mux),
                ),
            });
        }
    }
    flows
}

/// XDP rewrites addresses but does not translate between IPv4 and IPv6.
fn same_family(addresses: &[IpAddr]) -> bool {
    addresses.iter().all(IpAddr::is_ipv4) || addresses.iter().all(IpAddr::is_ipv6)
}

#[derive(Clone, Copy, Debug)]
struct Installed {
    flow: PlannedFlow,
    id: u32,
}

/// The kernel flows of every session.
pub struct XdpFlows {
    xdp: Arc<Mutex<RelayXdp>>,
    by_session: HashMap<u64, Vec<Installed>>,
    free_ids: Vec<u32>,
    next_id: u32,
}

impl std::fmt::Debug for XdpFlows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpFlows")
            .field("sessions", &self.by_session.len())
            .finish_non_exhaustive()
    }
}

/// Packets XDP forwarded for one leg.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegXdpCounters {
    /// Packets received and forwarded in XDP.
    pub packets_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Packets sent to this leg's peer by XDP.
    pub packets_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Packets XDP dropped for a wrong source.
    pub wrong_source: u64,
}

impl XdpFlows {
    /// Bookkeeping over a loaded, attached program.
    pub fn new(xdp: Arc<Mutex<RelayXdp>>) -> Self {
        Self {
            xdp,
            by_session: HashMap::new(),
            free_ids: Vec::new(),
            next_id: 0,
        }
    }

    fn allocate_id(&mut self) -> Option<u32> {
        self.free_ids.pop().or_else(|| {
            (self.next_id < FLOW_MAP_CAPACITY).then(|| {
                self.next_id += 1;
                self.next_id - 1
            })
        })
    }

    /// Replaces session `session`'s kernel flows with `flows`.
    pub fn program(&mut self, session: u64, flows: &[PlannedFlow]) {
        self.remove(session);
        let xdp = Arc::clone(&self.xdp);
        let mut xdp = xdp.lock().unwrap_or_else(PoisonError::into_inner);
        let mut installed = Vec::with_capacity(flows.len());
        for flow in flows {
            let Some(id) = self.allocate_id() else {
                warn!(
                    session,
                    "XDP flow ids exhausted; the flow stays on the socket datapath"
                );
                break;
            };
            if let Err(e) = xdp.reset_flow_stats(id) {
                warn!(%e, "cannot reset XDP flow counters");
            }
            let entry = FlowEntry::forward_plain(
                id,
                Some(flow.peer),
                flow.strict,
                flow.out_src,
                flow.out_dst,
            );
            match xdp.insert_flow(FlowKey::from_socket_addr(flow.local), entry) {
                Ok(()) => installed.push(Installed { flow: *flow, id }),
                Err(e) => {
                    warn!(session, %e, "cannot program an XDP flow; it stays on the socket datapath");
                    self.free_ids.push(id);
                }
            }
        }
        if !installed.is_empty() {
            self.by_session.insert(session, installed);
        }
    }

    /// Removes session `session`'s kernel flows.
    pub fn remove(&mut self, session: u64) {
        let Some(installed) = self.by_session.remove(&session) else {
            return;
        };
        let mut xdp = self.xdp.lock().unwrap_or_else(PoisonError::into_inner);
        for flow in installed {
            if let Err(e) = xdp.remove_flow(&FlowKey::from_socket_addr(flow.flow.local)) {
                warn!(session, %e, "cannot remove an XDP flow");
            }
            self.free_ids.push(flow.id);
        }
    }

    /// What XDP forwarded for each leg of session `session` (`legs` entries).
    pub fn counters(&self, session: u64, legs: usize) -> Vec<LegXdpCounters> {
        let mut counters = vec![LegXdpCounters::default(); legs];
        let Some(installed) = self.by_session.get(&session) else {
            return counters;
        };
        let xdp = self.xdp.lock().unwrap_or_else(PoisonError::into_inner);
        for flow in installed {
            let stats: FlowStats = xdp.flow_stats(flow.id).unwrap_or_default();
            if let Some(c) = counters.get_mut(flow.flow.leg) {
                c.packets_in += stats.packets;
                c.bytes_in += stats.bytes;
                c.wrong_source += stats.wrong_source;
            }
            if let Some(c) = counters.get_mut(flow.flow.target) {
                c.packets_out += stats.packets;
                c.bytes_out += stats.bytes;
            }
        }
        counters
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::{plan, LegLocal};
    use crate::model::LegSpec;

    fn leg(json: serde_json::Value) -> LegSpec {
        serde_json::from_value(json).unwrap()
    }

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));

    #[test]
    fn fixed_plain_legs_get_rtp_and_rtcp_flows_and_the_rest_stays_in_userspace() {
        let a = leg(
            serde_json::json!({ "id": "a", "latch": "fixed", "forward_to": "b",
            "remote": { "address": "198.18.0.2", "rtp_port": 4000 } }),
        );
        let b = leg(
            serde_json::json!({ "id": "b", "latch": "fixed", "forward_to": "a", "rtcp_mux": true,
            "remote": { "address": "198.18.1.2", "rtp_port": 5000 } }),
        );
        let legs = [
            LegLocal {
                spec: &a,
                address: LOCAL,
                rtp_port: 30_000,
            },
            LegLocal {
                spec: &b,
                address: LOCAL,
                rtp_port: 30_002,
            },
        ];
        let flows = plan(&legs);
        assert_eq!(flows.len(), 3, "a: RTP + RTCP; b (muxed): one");
        assert_eq!(flows[0].local.port(), 30_000);
        assert_eq!(flows[0].out_src.port(), 30_002);
        assert_eq!(flows[0].out_dst.port(), 5000);
        assert_eq!(flows[1].local.port(), 30_001);
        assert_eq!(flows[1].peer.port(), 4001);
        assert_eq!(
            flows[1].out_src.port(),
            30_002,
            "b's RTCP shares its RTP port"
        );
        assert_eq!(flows[1].out_dst.port(), 5000);
        assert_eq!(flows[2].out_dst.port(), 4000);

        // A learning leg, or crypto on either side, keeps the path in userspace.
        let learning = leg(serde_json::json!({ "id": "a", "forward_to": "b",
            "remote": { "address": "198.18.0.2", "rtp_port": 4000 } }));
        let legs = [
            LegLocal {
                spec: &learning,
                address: LOCAL,
                rtp_port: 30_000,
            },
            LegLocal {
                spec: &b,
                address: LOCAL,
                rtp_port: 30_002,
            },
        ];
        assert!(
            plan(&legs).is_empty(),
            "a learns its peer: neither direction is pinned"
        );
    }
}
