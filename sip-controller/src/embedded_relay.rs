//! The relay inside the controller's process (`[relay] mode = "embedded"`): relayd's control
//! plane and datapaths (relay-userspace's [`Service`]) started here, programmed by direct
//! calls instead of HTTP.
//!
//! Why: the NG front is sipwise rtpengine's shape, one process that parses a command and
//! allocates the media sockets in the same turn. Split in two processes, every call costs three
//! HTTP exchanges over loopback TCP (JSON both ways, a blocking-pool hop in relayd per PUT) and
//! a context switch per request, which on a measured core is about half of the controller's and
//! all of relayd's control-plane CPU (docs/PERFORMANCE.md, "NG control protocol"). Embedded,
//! a PUT is a function call under the relay's lock. The separate relayd stays the default and
//! the right shape where the relay needs privileges (XDP) the signalling should not hold, or
//! runs on another host; both modes program the same relay code through the same
//! [`crate::relay_client::RelayClient`] calls, and report the same errors (relayd's problem
//! codes).
//!
//! The embedded relay can still serve relayd's HTTP API (`relay.relayd_api`), so `/metrics`,
//! `GET /v1/sessions` and the `OpenAPI` document stay available to operators.

use std::{path::Path, sync::Arc};

use anyhow::Context as _;
use relay_userspace::{
    api::Problem,
    model,
    relay::{Relay, RelayError as CoreError},
    service::Service,
};
use tokio::sync::broadcast::error::RecvError;

use crate::relay_client::{
    CryptoSpec, CryptoView, Health, KeySpec, LatchMode, LegCounters, LegSpec, LegView, LocalView,
    RelayError, Remote, SessionSpec, SessionView,
};

/// A handle to the in-process relay; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedRelay {
    relay: Arc<Relay>,
    boot_id: Arc<str>,
}

impl std::fmt::Debug for EmbeddedRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedRelay")
            .field("boot_id", &self.boot_id)
            .finish_non_exhaustive()
    }
}

/// Loads relayd's configuration for the embedded relay: the file at `path` (relayd's format,
/// deploy/relayd.toml), or relayd's loopback defaults when `path` is empty.
///
/// # Errors
/// The file cannot be read or is invalid (the message names the key).
pub fn load_config(path: &Path) -> anyhow::Result<relay_userspace::config::Config> {
    let config = if path.as_os_str().is_empty() {
        relay_userspace::config::Config::default()
    } else {
        relay_userspace::config::Config::load(path)
            .with_context(|| format!("relay.relayd_config {}", path.display()))?
    };
    config.validate()?;
    Ok(config)
}

impl EmbeddedRelay {
    /// A handle to `service`'s relay.
    pub fn new(service: &Service) -> Self {
        Self {
            relay: Arc::clone(service.relay()),
            boot_id: uuid::Uuid::new_v4().to_string().into(),
        }
    }

    /// The boot id never changes: the relay lives and dies with this process.
    pub fn health(&self) -> Health {
        Health {
            boot_id: self.boot_id.to_string(),
            sessions: self.relay.session_count(),
        }
    }

    /// Creates or replaces a session (relayd's `PUT /v1/sessions/{id}`).
    ///
    /// Runs inline on the caller's task: with the socket pool the work is a few map updates
    /// under the relay's lock (microseconds), cheaper than any hop to another thread. When
    /// the relay also writes its session store or programs XDP maps, the call is moved off the
    /// event loop ([`tokio::task::block_in_place`]).
    ///
    /// # Errors
    /// What relayd would answer, as [`RelayError::Status`].
    pub fn put_session(&self, id: &str, spec: &SessionSpec) -> Result<SessionView, RelayError> {
        self.blocking(|| {
            self.relay
                .put_session(id, to_model(spec))
                .map(|(view, _)| from_model(view))
                .map_err(|e| status("PUT", id, e))
        })
    }

    /// Runs `work` inline, or with [`tokio::task::block_in_place`] when relay changes may
    /// block (a session store, XDP) and the runtime allows it.
    fn blocking<T>(&self, work: impl FnOnce() -> T) -> T {
        let may_block = self.relay.changes_may_block()
            && tokio::runtime::Handle::try_current().is_ok_and(|handle| {
                handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            });
        if may_block {
            tokio::task::block_in_place(work)
        } else {
            work()
        }
    }

    /// One session (relayd's `GET /v1/sessions/{id}`).
    ///
    /// # Errors
    /// `404 not_found` for an unknown session.
    pub fn get_session(&self, id: &str) -> Result<SessionView, RelayError> {
        self.relay
            .get_session(id)
            .map(from_model)
            .map_err(|e| status("GET", id, e))
    }

    /// Deletes a session: its last view, or `None` when it was unknown.
    ///
    /// # Errors
    /// None in practice (kept for the HTTP backend's shape).
    pub fn delete_session(&self, id: &str) -> Result<Option<SessionView>, RelayError> {
        let last = match self.relay.get_session(id) {
            Ok(view) => from_model(view),
            Err(CoreError::SessionNotFound { .. }) => return Ok(None),
            Err(e) => return Err(status("GET", id, e)),
        };
        match self.blocking(|| self.relay.delete_session(id)) {
            Ok(()) | Err(CoreError::SessionNotFound { .. }) => Ok(Some(last)),
            Err(e) => Err(status("DELETE", id, e)),
        }
    }

    /// Sends the session of every `media_timeout` event to `sink` until `sink` closes.
    pub async fn follow_events(&self, sink: &tokio::sync::mpsc::Sender<String>) {
        let mut events = self.relay.subscribe();
        loop {
            match events.recv().await {
                Ok(model::Event::MediaTimeout { session, .. }) => {
                    if sink.send(session).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "media-timeout events lost (the controller fell behind)"
                    );
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

/// A relay error as relayd's HTTP API would have reported it.
fn status(method: &'static str, id: &str, error: CoreError) -> RelayError {
    let problem = Problem::from(error);
    RelayError::Status {
        method,
        path: format!("/v1/sessions/{id}"),
        status: problem.status,
        code: problem.code.to_owned(),
        detail: problem.detail,
    }
}

fn to_model(spec: &SessionSpec) -> model::SessionSpec {
    model::SessionSpec {
        legs: spec.legs.iter().map(leg_to_model).collect(),
        media_timeout_secs: spec.media_timeout_secs,
    }
}

fn leg_to_model(leg: &LegSpec) -> model::LegSpec {
    model::LegSpec {
        id: leg.id.clone(),
        interface: leg.interface.clone(),
        rtcp_mux: leg.rtcp_mux,
        remote: leg.remote.map(remote_to_model),
        latch: match leg.latch {
            LatchMode::Learn => model::LatchMode::Learn,
            LatchMode::Fixed => model::LatchMode::Fixed,
        },
        strict_source: leg.strict_source,
        inbound_crypto: leg.inbound_crypto.as_ref().map(crypto_to_model),
        outbound_crypto: leg.outbound_crypto.as_ref().map(crypto_to_model),
        forward_to: leg.forward_to.clone(),
    }
}

const fn remote_to_model(remote: Remote) -> model::Remote {
    model::Remote {
        address: remote.address,
        rtp_port: remote.rtp_port,
        rtcp_port: remote.rtcp_port,
    }
}

fn crypto_to_model(crypto: &CryptoSpec) -> model::CryptoSpec {
    model::CryptoSpec {
        suite: crypto.suite.clone(),
        keys: crypto.keys.iter().map(key_to_model).collect(),
        mki_len: crypto.mki_len,
        replay_window: None,
    }
}

fn key_to_model(key: &KeySpec) -> model::KeySpec {
    model::KeySpec {
        key: key.key.clone(),
        mki: key.mki,
        lifetime: key.lifetime,
    }
}

fn from_model(view: model::SessionView) -> SessionView {
    SessionView {
        id: view.id,
        legs: view.legs.into_iter().map(leg_from_model).collect(),
    }
}

fn leg_from_model(leg: model::LegView) -> LegView {
    LegView {
        id: leg.id,
        interface: leg.interface,
        local: LocalView {
            address: leg.local.address,
            rtp_port: leg.local.rtp_port,
            rtcp_port: leg.local.rtcp_port,
        },
        rtcp_mux: leg.rtcp_mux,
        inbound_crypto: leg.inbound_crypto.map(|c| CryptoView { suite: c.suite }),
        outbound_crypto: leg.outbound_crypto.map(|c| CryptoView { suite: c.suite }),
        latched_rtp: leg.latched_rtp,
        media_timed_out: leg.media_timed_out,
        counters: LegCounters {
            packets_in: leg.counters.packets_in,
            bytes_in: leg.counters.bytes_in,
            packets_out: leg.counters.packets_out,
            bytes_out: leg.counters.bytes_out,
            auth_failures: leg.counters.auth_failures,
            replays: leg.counters.replays,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of the controller's spec reaches relayd's model with the meaning the JSON
    /// contract gives it: the conversion and the JSON must agree.
    #[test]
    fn the_conversion_agrees_with_the_json_contract() {
        let spec = SessionSpec {
            legs: vec![
                LegSpec {
                    id: "a0".to_owned(),
                    interface: "default".to_owned(),
                    rtcp_mux: true,
                    remote: Some(Remote {
                        address: "127.0.0.1".parse().unwrap(),
                        rtp_port: 4000,
                        rtcp_port: Some(4001),
                    }),
                    latch: LatchMode::Fixed,
                    strict_source: false,
                    inbound_crypto: Some(CryptoSpec {
                        suite: "AES_CM_128_HMAC_SHA1_80".to_owned(),
                        keys: vec![KeySpec {
                            key: "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz".to_owned(),
                            mki: Some(1),
                            lifetime: Some(1 << 20),
                        }],
                        mki_len: 4,
                    }),
                    outbound_crypto: None,
                    forward_to: Some("b0".to_owned()),
                },
                LegSpec {
                    id: "b0".to_owned(),
                    interface: "internal".to_owned(),
                    rtcp_mux: false,
                    remote: None,
                    latch: LatchMode::Learn,
                    strict_source: true,
                    inbound_crypto: None,
                    outbound_crypto: None,
                    forward_to: Some("a0".to_owned()),
                },
            ],
            media_timeout_secs: Some(30),
        };
        let via_json: model::SessionSpec =
            serde_json::from_slice(&serde_json::to_vec(&spec).unwrap()).unwrap();
        assert_eq!(to_model(&spec), via_json);

        let view = model::SessionView {
            id: "c1".to_owned(),
            media_timeout_secs: 30,
            created_unix_ms: 1,
            legs: vec![model::LegView {
                id: "a0".to_owned(),
                interface: "default".to_owned(),
                local: model::LocalView {
                    address: "127.0.0.1".parse().unwrap(),
                    rtp_port: 30_000,
                    rtcp_port: 30_001,
                },
                rtcp_mux: false,
                remote: None,
                latch: model::LatchMode::Learn,
                strict_source: true,
                latched_rtp: Some("127.0.0.1:4000".parse().unwrap()),
                latched_rtcp: None,
                inbound_crypto: Some(model::CryptoView {
                    suite: "AES_CM_128_HMAC_SHA1_80".to_owned(),
                    keys: 1,
                }),
                outbound_crypto: None,
                forward_to: Some("b0".to_owned()),
                media_timed_out: true,
                counters: model::LegCountersView {
                    packets_in: 1,
                    bytes_in: 2,
                    packets_out: 3,
                    bytes_out: 4,
                    auth_failures: 5,
                    replays: 6,
                    ..model::LegCountersView::default()
                },
            }],
        };
        let via_json: SessionView =
            serde_json::from_slice(&serde_json::to_vec(&view).unwrap()).unwrap();
        assert_eq!(from_model(view), via_json);
    }

    #[tokio::test]
    async fn sessions_are_programmed_without_http_and_errors_keep_relayds_codes() {
        let mut config = load_config(Path::new("")).unwrap();
        config.interfaces[0].port_min = 47_000;
        config.interfaces[0].port_max = 47_199;
        config.datapath.workers = 1;
        let service = Service::start(config).unwrap();
        let relay = EmbeddedRelay::new(&service);
        let leg = |id: &str, to: &str| LegSpec {
            id: id.to_owned(),
            interface: "default".to_owned(),
            rtcp_mux: false,
            remote: None,
            latch: LatchMode::Learn,
            strict_source: true,
            inbound_crypto: None,
            outbound_crypto: None,
            forward_to: Some(to.to_owned()),
        };
        let spec = SessionSpec {
            legs: vec![leg("a0", "b0"), leg("b0", "a0")],
            media_timeout_secs: None,
        };
        let view = relay.put_session("c1", &spec).unwrap();
        let port = view.leg("a0").unwrap().local.rtp_port;
        assert!((47_000..=47_199).contains(&port) && port.is_multiple_of(2));
        assert_eq!(relay.health().sessions, 1);
        assert_eq!(relay.get_session("c1").unwrap(), view);

        let bad = SessionSpec {
            legs: vec![leg("a0", "zz"), leg("b0", "a0")],
            media_timeout_secs: None,
        };
        match relay.put_session("c2", &bad) {
            Err(RelayError::Status { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (422, "unknown_target"));
            }
            other => panic!("expected a 422, got {other:?}"),
        }

        let last = relay.delete_session("c1").unwrap().expect("the last view");
        assert_eq!(last.leg("a0").unwrap().local.rtp_port, port);
        assert_eq!(relay.delete_session("c1").unwrap(), None);
        assert!(relay.get_session("c1").unwrap_err().is_not_found());
        assert_eq!(relay.health().sessions, 0);
        // The boot id stays: nothing can restart the relay under us.
        assert_eq!(relay.health().boot_id, relay.health().boot_id);
        drop(relay);
        service.stop().unwrap();
    }
}
