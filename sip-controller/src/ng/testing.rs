//! A relayd stand-in for the NG unit tests: it allocates ports the way relayd does (a leg
//! keeps its port while its id, interface and rtcp-mux stay the same), records every request,
//! and can be told to fail.

use std::{
    collections::HashMap,
    future::{ready, Future},
    net::IpAddr,
    sync::Mutex,
};

use super::engine::Relay;
use crate::relay_client::{
    CryptoView, LegCounters, LegView, LocalView, RelayError, SessionSpec, SessionView,
};

/// A recorded relay request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// `PUT` with its body.
    Put(String, SessionSpec),
    /// `GET`.
    Get(String),
    /// `DELETE`.
    Delete(String),
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<String, SessionView>,
    specs: HashMap<String, SessionSpec>,
    next_port: u16,
    requests: Vec<Recorded>,
    fail_put: Option<(u16, String)>,
    counters: LegCounters,
    timed_out: bool,
}

/// The fake relay.
#[derive(Debug, Default)]
pub struct FakeRelay {
    state: Mutex<State>,
}

/// The relay address of an interface name.
pub fn interface_address(interface: &str) -> IpAddr {
    let text = match interface {
        "default" => "203.0.113.1",
        "internal" => "10.0.0.1",
        "v6" => "2001:db8::1",
        _ => "198.51.100.1",
    };
    text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

impl FakeRelay {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The last PUT body of session `id`.
    pub fn spec(&self, id: &str) -> Option<SessionSpec> {
        self.state().specs.get(id).cloned()
    }

    /// The current view of session `id`.
    pub fn current(&self, id: &str) -> Option<SessionView> {
        Self::view(&self.state(), id)
    }

    /// Sessions held.
    pub fn session_count(&self) -> usize {
        self.state().sessions.len()
    }

    /// The next PUT fails with this status and problem code.
    pub fn fail_next_put(&self, status: u16, code: &str) {
        self.state().fail_put = Some((status, code.to_owned()));
    }

    /// Counters every leg reports from now on.
    pub fn set_counters(&self, counters: LegCounters) {
        self.state().counters = counters;
    }

    /// Every leg reports a media timeout from now on.
    pub fn set_timed_out(&self) {
        self.state().timed_out = true;
    }

    fn not_found(method: &'static str, id: &str) -> RelayError {
        RelayError::Status {
            method,
            path: format!("/v1/sessions/{id}"),
            status: 404,
            code: "not_found".to_owned(),
            detail: "no such session".to_owned(),
        }
    }

    fn view(state: &State, id: &str) -> Option<SessionView> {
        let mut view = state.sessions.get(id)?.clone();
        for leg in &mut view.legs {
            leg.counters = state.counters.clone();
            leg.media_timed_out = state.timed_out;
        }
        Some(view)
    }

    pub fn put(&self, id: &str, spec: &SessionSpec) -> Result<SessionView, RelayError> {
        let mut state = self.state();
        state
            .requests
            .push(Recorded::Put(id.to_owned(), spec.clone()));
        if let Some((status, code)) = state.fail_put.take() {
            return Err(RelayError::Status {
                method: "PUT",
                path: format!("/v1/sessions/{id}"),
                status,
                code,
                detail: "refused by the fake".to_owned(),
            });
        }
        if state.next_port == 0 {
            state.next_port = 40_000;
        }
        let old = state.sessions.get(id).cloned();
        let mut legs = Vec::new();
        for leg in &spec.legs {
            let reused = old.as_ref().and_then(|view| {
                view.legs.iter().find(|l| {
                    l.id == leg.id && l.interface == leg.interface && l.rtcp_mux == leg.rtcp_mux
                })
            });
            let rtp_port = if let Some(reused) = reused {
                reused.local.rtp_port
            } else {
                let port = state.next_port;
                state.next_port += 2;
                port
            };
            legs.push(LegView {
                id: leg.id.clone(),
                interface: leg.interface.clone(),
                local: LocalView {
                    address: interface_address(&leg.interface),
                    rtp_port,
                    rtcp_port: if leg.rtcp_mux { rtp_port } else { rtp_port + 1 },
                },
                rtcp_mux: leg.rtcp_mux,
                inbound_crypto: leg.inbound_crypto.as_ref().map(|c| CryptoView {
                    suite: c.suite.clone(),
                }),
                outbound_crypto: leg.outbound_crypto.as_ref().map(|c| CryptoView {
                    suite: c.suite.clone(),
                }),
                latched_rtp: None,
                media_timed_out: false,
                counters: LegCounters::default(),
            });
        }
        state.sessions.insert(
            id.to_owned(),
            SessionView {
                id: id.to_owned(),
                legs,
            },
        );
        state.specs.insert(id.to_owned(), spec.clone());
        Self::view(&state, id).ok_or_else(|| Self::not_found("PUT", id))
    }
}

impl Relay for FakeRelay {
    fn put_session(
        &self,
        id: &str,
        spec: &SessionSpec,
    ) -> impl Future<Output = Result<SessionView, RelayError>> + Send {
        ready(self.put(id, spec))
    }

    fn get_session(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<SessionView, RelayError>> + Send {
        let mut state = self.state();
        state.requests.push(Recorded::Get(id.to_owned()));
        ready(Self::view(&state, id).ok_or_else(|| Self::not_found("GET", id)))
    }

    fn delete_session(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<SessionView>, RelayError>> + Send {
        let mut state = self.state();
        state.requests.push(Recorded::Delete(id.to_owned()));
        let last = Self::view(&state, id);
        state.sessions.remove(id);
        state.specs.remove(id);
        ready(Ok(last))
    }
}
