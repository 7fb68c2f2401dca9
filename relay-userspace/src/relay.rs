//! The control plane: sessions, port allocation, programming the datapath, media timeouts.
//!
//! The HTTP layer ([`crate::api`]) turns requests into calls on [`Relay`]; the relay validates,
//! allocates ports and binds sockets (so that errors surface in the response), then hands the
//! session's legs to the datapath. Counters are read from the datapath's shared atomics.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::{
    config::Config,
    datapath::{
        stats::{unix_ms, Latched},
        CryptoChange, DropReason, LegCrypto, LegProgram, LegSettings, LegStats, SocketDatapath,
    },
    model::{
        validate_id, CryptoSpec, CryptoView, Event, LatchMode, LegPatch, LegSpec, LegView,
        LocalView, SessionSpec, SessionSummary, SessionView, SpecError,
    },
    ports::PortAllocator,
    socket_pool::SocketPool,
    state::{SessionStore, StoredLeg, StoredSession},
    xdp_flows::{plan, LegLocal, LegShared, XdpFlows},
};

/// How often a port is retried when the OS says it is taken by someone else.
const BIND_ATTEMPTS: usize = 16;

/// Why a control request failed; each maps to one HTTP status and problem code in the API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The request body is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A leg names an interface relayd does not have.
    #[error("leg {leg:?} names unknown interface {interface:?}")]
    UnknownInterface {
        /// The leg.
        leg: String,
        /// The interface named.
        interface: String,
    },
    /// No free port pair on an interface.
    #[error("no free media ports on interface {interface:?} (all {capacity} pairs in use or quarantined)")]
    PortsExhausted {
        /// The interface.
        interface: String,
        /// Pairs the range holds.
        capacity: usize,
    },
    /// The session limit is reached.
    #[error("the relay already has its maximum of {max} sessions")]
    TooManySessions {
        /// The limit.
        max: usize,
    },
    /// A socket could not be bound.
    #[error("cannot bind a media socket on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No such session.
    #[error("no session {id:?}")]
    SessionNotFound {
        /// The id.
        id: String,
    },
    /// No such leg.
    #[error("session {session:?} has no leg {leg:?}")]
    LegNotFound {
        /// The session.
        session: String,
        /// The leg.
        leg: String,
    },
}

struct LegRecord {
    spec: LegSpec,
    address: IpAddr,
    rtp_port: u16,
    rtp_socket: Arc<UdpSocket>,
    rtcp_socket: Option<Arc<UdpSocket>>,
    stats: Arc<LegStats>,
    crypto: Arc<LegCrypto>,
    created: Instant,
    timed_out: bool,
    /// Packets XDP forwarded for this leg at the last media-timeout check, and when that count
    /// last moved (XDP-forwarded packets never reach the socket counters' clock).
    xdp_seen: (u64, Option<Instant>),
    /// What the leg's latches had learned when its kernel flows were last planned.
    planned_latch: Latched,
}

struct SessionRecord {
    key: u64,
    spec: SessionSpec,
    created_unix_ms: u64,
    media_timeout: Duration,
    legs: Vec<LegRecord>,
}

struct State {
    sessions: HashMap<String, SessionRecord>,
    next_key: u64,
    ports: HashMap<String, PortAllocator>,
    /// Released media sockets, still bound, for their ports' next allocation.
    sockets: SocketPool,
}

impl State {
    /// A datapath key for a new session.
    fn new_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key - 1
    }

    /// Gives a leg's port pair back (into quarantine at `now`, or at once with `None`: never
    /// used) and parks its sockets for the pair's next allocation.
    fn release_leg(&mut self, leg: LegRecord, now: Option<Instant>, datapath: &SocketDatapath) {
        if let Some(ports) = self.ports.get_mut(&leg.spec.interface) {
            match now {
                Some(now) => ports.release(leg.rtp_port, now),
                None => ports.put_back(leg.rtp_port),
            }
        }
        self.sockets.park(
            SocketAddr::new(leg.address, leg.rtp_port),
            leg.rtp_socket,
            datapath,
        );
        if let Some(rtcp) = leg.rtcp_socket {
            self.sockets.park(
                SocketAddr::new(leg.address, leg.rtp_port + 1),
                rtcp,
                datapath,
            );
        }
    }

    /// The sockets of a leg on `port` (RTP) and `port + 1` (RTCP, unless muxed): parked ones
    /// or new ones. On failure nothing is kept.
    fn bind_pair(
        &mut self,
        address: IpAddr,
        port: u16,
        rtcp_mux: bool,
        datapath: &SocketDatapath,
    ) -> Result<(Arc<UdpSocket>, Option<Arc<UdpSocket>>), RelayError> {
        let mut take = |port: u16| {
            let at = SocketAddr::new(address, port);
            self.sockets
                .take(at, datapath)
                .map_err(|source| RelayError::Bind {
                    address: at,
                    source,
                })
        };
        let rtp = take(port)?;
        let rtcp = if rtcp_mux {
            None
        } else {
            match take(port + 1) {
                Ok(rtcp) => Some(rtcp),
                Err(e) => {
                    self.sockets
                        .park(SocketAddr::new(address, port), rtp, datapath);
                    return Err(e);
                }
            }
        };
        Ok((rtp, rtcp))
    }
}

/// The control plane.
pub struct Relay {
    config: Config,
    datapath: SocketDatapath,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    /// Plain flows pinned in XDP (with `datapath.kind = "xdp"`).
    xdp_flows: Option<Mutex<XdpFlows>>,
    /// Where sessions are persisted, if anywhere.
    store: Option<SessionStore>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

/// Totals for `/metrics`.
#[derive(Debug, Default)]
pub struct Totals {
    /// Sessions.
    pub sessions: u64,
    /// Legs.
    pub legs: u64,
    /// Legs currently timed out.
    pub legs_timed_out: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// SRTP authentication failures.
    pub auth_failures: u64,
    /// SRTP replays.
    pub replays: u64,
    /// Drops by reason.
    pub drops: Vec<(DropReason, u64)>,
    /// Available port pairs per interface.
    pub ports_available: Vec<(String, usize)>,
}

impl Relay {
    /// A relay over a running datapath.
    pub fn new(config: Config, datapath: SocketDatapath) -> Self {
        let quarantine = Duration::from_secs(config.media.port_quarantine_secs);
        let ports = config
            .interfaces
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    PortAllocator::new(i.port_min, i.port_max, quarantine),
                )
            })
            .collect();
        let (events, _) = broadcast::channel(1024);
        let sockets = SocketPool::new(
            config.datapath.socket_rcvbuf,
            SocketPool::budget_for(crate::datapath::sys::nofile_limit()),
        );
        Self {
            config,
            datapath,
            state: Mutex::new(State {
                sessions: HashMap::new(),
                next_key: 1,
                ports,
                sockets,
            }),
            events,
            xdp_flows: None,
            store: None,
        }
    }

    /// Persists sessions in `store` from now on (see [`crate::state`]).
    #[must_use]
    pub fn with_store(mut self, store: SessionStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Writes a session's record (a failure is logged: the session itself is fine).
    fn persist(&self, id: &str, session: &SessionRecord) {
        let Some(store) = &self.store else {
            return;
        };
        let now = Instant::now();
        let settled = |address: Option<SocketAddr>, locks_at: Option<Instant>| {
            address.filter(|_| locks_at.is_some_and(|at| at <= now))
        };
        let record = StoredSession {
            id: id.to_owned(),
            spec: session.spec.clone(),
            created_unix_ms: session.created_unix_ms,
            legs: session
                .legs
                .iter()
                .map(|leg| {
                    let latched = leg.stats.latch_state();
                    StoredLeg {
                        id: leg.spec.id.clone(),
                        address: leg.address,
                        rtp_port: leg.rtp_port,
                        latched_rtp: settled(latched.rtp, latched.rtp_locks_at),
                        latched_rtcp: settled(latched.rtcp, latched.rtcp_locks_at),
                    }
                })
                .collect(),
        };
        if let Err(e) = store.save(&record) {
            warn!(session = id, %e, "cannot persist the session; a restart will not restore it");
        }
    }

    /// Removes the kernel flows a previous relayd left that no restored session claimed (call
    /// after [`Relay::restore`]). Returns how many.
    pub fn drop_unadopted_flows(&self) -> usize {
        self.xdp_flows.as_ref().map_or(0, |flows| {
            flows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drop_unadopted()
        })
    }

    /// Re-creates the sessions a previous relayd persisted: same ports, specs and learned
    /// peers; their kernel flows are re-adopted where still programmed. A record that cannot
    /// be restored (its port taken, its interface gone) is logged and dropped. Returns the
    /// sessions restored.
    pub fn restore(&self) -> usize {
        let Some(store) = &self.store else {
            return 0;
        };
        let (records, unreadable) = match store.load_all() {
            Ok(loaded) => loaded,
            Err(e) => {
                warn!(%e, "cannot read the persisted sessions");
                return 0;
            }
        };
        for bad in unreadable {
            warn!(path = %bad.path.display(), reason = bad.reason, "unreadable session record left in place");
        }
        let mut restored = 0;
        for record in records {
            match self.restore_one(&record) {
                Ok(()) => restored += 1,
                Err(e) => {
                    warn!(session = record.id, %e, "cannot restore the session; dropping its record");
                    let _ = store.remove(&record.id);
                }
            }
        }
        if restored > 0 {
            info!(sessions = restored, "sessions restored");
        }
        restored
    }

    fn restore_one(&self, record: &StoredSession) -> Result<(), RelayError> {
        validate_id("session", &record.id)?;
        record.spec.validate()?;
        let now = Instant::now();
        let mut state = self.lock();
        if state.sessions.contains_key(&record.id) {
            return Ok(());
        }
        let mut legs: Vec<LegRecord> = Vec::with_capacity(record.spec.legs.len());
        let mut failure = None;
        for (spec, stored) in record.spec.legs.iter().zip(&record.legs) {
            match self.readopt_leg(&mut state, spec, stored, now) {
                Ok(leg) => legs.push(leg),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() && legs.len() != record.spec.legs.len() {
            failure = Some(RelayError::Spec(SpecError::InvalidId {
                what: "stored leg list",
                id: record.id.clone(),
            }));
        }
        let crypto = match failure {
            None => crypto_plan(&record.spec, &[], |_| None).map_err(RelayError::from),
            Some(error) => Err(error),
        };
        let crypto = match crypto {
            Ok(crypto) => crypto,
            Err(error) => {
                for leg in legs {
                    state.release_leg(leg, None, &self.datapath);
                }
                return Err(error);
            }
        };
        for (leg, (inbound, outbound)) in legs.iter().zip(crypto) {
            leg.crypto.apply(inbound, outbound);
        }
        let key = state.new_key();
        let mut programs = self.programs(&record.spec, &legs);
        for (program, stored) in programs.iter_mut().zip(&record.legs) {
            program.learned = (stored.latched_rtp, stored.latched_rtcp);
        }
        self.datapath.install(key, programs);
        self.program_xdp(key, &mut legs);
        let media_timeout = Duration::from_secs(
            record
                .spec
                .media_timeout_secs
                .unwrap_or(self.config.media.timeout_secs),
        );
        state.sessions.insert(
            record.id.clone(),
            SessionRecord {
                key,
                spec: record.spec.clone(),
                created_unix_ms: record.created_unix_ms,
                media_timeout,
                legs,
            },
        );
        info!(session = record.id, "session restored");
        Ok(())
    }

    /// Binds a stored leg's exact ports again and seeds what it had learned.
    fn readopt_leg(
        &self,
        state: &mut State,
        spec: &LegSpec,
        stored: &StoredLeg,
        now: Instant,
    ) -> Result<LegRecord, RelayError> {
        let interface = self
            .config
            .interface(&spec.interface)
            .filter(|i| i.address == stored.address && stored.id == spec.id)
            .ok_or_else(|| RelayError::UnknownInterface {
                leg: spec.id.clone(),
                interface: spec.interface.clone(),
            })?;
        let ports = state
            .ports
            .get_mut(&spec.interface)
            .expect("an allocator per configured interface");
        if !ports.take(stored.rtp_port, now) {
            return Err(RelayError::Bind {
                address: SocketAddr::new(stored.address, stored.rtp_port),
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "the port is outside the range or already allocated",
                ),
            });
        }
        let (rtp, rtcp) = match state.bind_pair(
            interface.address,
            stored.rtp_port,
            spec.rtcp_mux,
            &self.datapath,
        ) {
            Ok(sockets) => sockets,
            Err(e) => {
                if let Some(ports) = state.ports.get_mut(&spec.interface) {
                    ports.put_back(stored.rtp_port);
                }
                return Err(e);
            }
        };
        let stats = Arc::new(LegStats::default());
        // Published at once, so the flows are planned (and re-adopted) with the learned peers;
        // the worker publishes the same when it installs the leg.
        if spec.latch == LatchMode::Learn {
            let locked = |a: Option<SocketAddr>| a.map(|_| now);
            let rtcp_peer = if spec.rtcp_mux {
                stored.latched_rtp
            } else {
                stored.latched_rtcp
            };
            stats.set_latched(Latched {
                rtp: stored.latched_rtp,
                rtcp: rtcp_peer,
                rtp_locks_at: locked(stored.latched_rtp),
                rtcp_locks_at: locked(rtcp_peer),
            });
        }
        Ok(LegRecord {
            spec: spec.clone(),
            address: interface.address,
            rtp_port: stored.rtp_port,
            rtp_socket: rtp,
            rtcp_socket: rtcp,
            stats,
            crypto: Arc::new(LegCrypto::default()),
            created: now,
            timed_out: false,
            xdp_seen: (0, None),
            planned_latch: Latched::default(),
        })
    }

    /// Pins eligible plain flows in XDP from now on (see [`crate::xdp_flows`]).
    #[must_use]
    pub fn with_xdp_flows(mut self, flows: XdpFlows) -> Self {
        self.xdp_flows = Some(Mutex::new(flows));
        self
    }

    /// (Re-)programs a session's kernel flows after its legs (or what they learned) changed.
    fn program_xdp(&self, key: u64, legs: &mut [LegRecord]) {
        let Some(flows) = &self.xdp_flows else {
            return;
        };
        for leg in legs.iter_mut() {
            leg.planned_latch = leg.stats.latch_state();
        }
        let locals: Vec<LegLocal<'_>> = legs
            .iter()
            .map(|l| LegLocal {
                spec: &l.spec,
                address: l.address,
                rtp_port: l.rtp_port,
                latched: l.planned_latch,
            })
            .collect();
        let shared: Vec<LegShared> = legs
            .iter()
            .map(|l| LegShared {
                stats: Arc::clone(&l.stats),
                crypto: Arc::clone(&l.crypto),
            })
            .collect();
        flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .program(key, &plan(&locals, Instant::now()), &shared);
    }

    /// Pins the flows of legs whose learned peers have locked since their session was last
    /// planned (the socket datapath learns; XDP carries the media from then on). Called
    /// periodically; returns the sessions re-planned.
    pub fn sync_learned_peers(&self) -> usize {
        if self.xdp_flows.is_none() {
            return 0;
        }
        let now = Instant::now();
        let mut state = self.lock();
        let mut replanned = 0;
        for (id, session) in &mut state.sessions {
            let due = session.legs.iter().any(|leg| {
                let latched = leg.stats.latch_state();
                latched != leg.planned_latch
                    && [latched.rtp_locks_at, latched.rtcp_locks_at]
                        .iter()
                        .flatten()
                        .any(|at| *at <= now)
            });
            if due {
                self.program_xdp(session.key, &mut session.legs);
                self.persist(id, session);
                replanned += 1;
            }
        }
        replanned
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes to events (media timeouts).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Creates or replaces a session. Returns its view and whether it was created. A PUT with
    /// the same body as the session already has changes nothing (idempotent); a different body
    /// re-programs it, keeping the ports, sockets, counters and SRTP state of legs whose id,
    /// interface, rtcp-mux and crypto are unchanged.
    pub fn put_session(
        &self,
        id: &str,
        spec: SessionSpec,
    ) -> Result<(SessionView, bool), RelayError> {
        validate_id("session", id)?;
        spec.validate()?;
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(existing) = state.sessions.get(id) {
            if existing.spec == spec {
                return Ok((self.view(id, existing), false));
            }
        } else if state.sessions.len() >= self.config.media.max_sessions {
            return Err(RelayError::TooManySessions {
                max: self.config.media.max_sessions,
            });
        }
        // Crypto first: it is the last thing that can fail on the request alone.
        let old_specs: Vec<LegSpec> = state
            .sessions
            .get(id)
            .map_or_else(Vec::new, |s| s.spec.legs.clone());
        let reusable = |leg: &LegSpec| {
            old_specs.iter().position(|o| {
                o.id == leg.id && o.interface == leg.interface && o.rtcp_mux == leg.rtcp_mux
            })
        };
        let crypto_changes = crypto_plan(&spec, &old_specs, reusable)?;
        let mut old = state.sessions.remove(id);
        let mut old_legs: Vec<Option<LegRecord>> = old
            .as_mut()
            .map(|s| s.legs.drain(..).map(Some).collect())
            .unwrap_or_default();

        // Allocate (or reuse) every leg; on failure, undo this request's allocations.
        let mut legs: Vec<LegRecord> = Vec::with_capacity(spec.legs.len());
        // For each leg: the position of the old leg it reuses.
        let mut reused_from: Vec<Option<usize>> = Vec::with_capacity(spec.legs.len());
        let mut failure = None;
        for leg_spec in &spec.legs {
            if let Some(i) = reusable(leg_spec).filter(|&i| old_legs[i].is_some()) {
                let mut record = old_legs[i].take().expect("checked");
                record.spec = old_specs[i].clone();
                legs.push(record);
                reused_from.push(Some(i));
                continue;
            }
            match self.allocate_leg(&mut state, leg_spec, now) {
                Ok(record) => {
                    legs.push(record);
                    reused_from.push(None);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(error) = failure {
            Self::roll_back(
                &mut state,
                &self.datapath,
                id,
                old,
                old_legs,
                legs,
                reused_from,
            );
            return Err(error);
        }
        for (leg, spec_leg) in legs.iter_mut().zip(&spec.legs) {
            leg.spec = spec_leg.clone();
        }
        let created = old.is_none();
        let key = old.as_ref().map_or_else(|| state.new_key(), |o| o.key);
        let media_timeout = Duration::from_secs(
            spec.media_timeout_secs
                .unwrap_or(self.config.media.timeout_secs),
        );
        for (leg, (inbound, outbound)) in legs.iter().zip(crypto_changes) {
            leg.crypto.apply(inbound, outbound);
        }
        let programs = self.programs(&spec, &legs);
        self.datapath.install(key, programs);
        // Legs of the old session that are gone: their ports go into quarantine, their
        // sockets (parked by the install just now) into the pool.
        for leg in old_legs.into_iter().flatten() {
            state.release_leg(leg, Some(now), &self.datapath);
        }
        self.program_xdp(key, &mut legs);
        let record = SessionRecord {
            key,
            spec,
            created_unix_ms: old.as_ref().map_or_else(unix_ms, |o| o.created_unix_ms),
            media_timeout,
            legs,
        };
        let view = self.view(id, &record);
        self.persist(id, &record);
        state.sessions.insert(id.to_owned(), record);
        if created {
            info!(session = id, "session created");
        } else {
            info!(session = id, "session re-programmed");
        }
        Ok((view, created))
    }

    /// Undoes a failed `put_session`: new allocations go back without quarantine (nothing was
    /// ever sent to them); the old session, if any, is restored as it was.
    fn roll_back(
        state: &mut State,
        datapath: &SocketDatapath,
        id: &str,
        old: Option<SessionRecord>,
        mut old_legs: Vec<Option<LegRecord>>,
        legs: Vec<LegRecord>,
        reused_from: Vec<Option<usize>>,
    ) {
        for (leg, from) in legs.into_iter().zip(reused_from) {
            match from {
                Some(i) => old_legs[i] = Some(leg),
                None => state.release_leg(leg, None, datapath),
            }
        }
        if let Some(mut old) = old {
            old.legs = old_legs.into_iter().flatten().collect();
            state.sessions.insert(id.to_owned(), old);
        }
    }

    fn allocate_leg(
        &self,
        state: &mut State,
        spec: &LegSpec,
        now: Instant,
    ) -> Result<LegRecord, RelayError> {
        let interface =
            self.config
                .interface(&spec.interface)
                .ok_or_else(|| RelayError::UnknownInterface {
                    leg: spec.id.clone(),
                    interface: spec.interface.clone(),
                })?;
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            let ports = state
                .ports
                .get_mut(&spec.interface)
                .expect("an allocator per configured interface");
            let Some(port) = ports.allocate(now) else {
                return Err(RelayError::PortsExhausted {
                    interface: spec.interface.clone(),
                    capacity: ports.capacity(),
                });
            };
            match state.bind_pair(interface.address, port, spec.rtcp_mux, &self.datapath) {
                Ok((rtp_socket, rtcp_socket)) => {
                    return Ok(LegRecord {
                        spec: spec.clone(),
                        address: interface.address,
                        rtp_port: port,
                        rtp_socket,
                        rtcp_socket,
                        stats: Arc::new(LegStats::default()),
                        crypto: Arc::new(LegCrypto::default()),
                        created: now,
                        timed_out: false,
                        xdp_seen: (0, None),
                        planned_latch: Latched::default(),
                    });
                }
                Err(e) => {
                    // Taken by another process: keep it out of rotation for a quarantine.
                    warn!(port, interface = spec.interface, error = %e, "media port busy, trying another");
                    if let Some(ports) = state.ports.get_mut(&spec.interface) {
                        ports.release(port, now);
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn programs(&self, spec: &SessionSpec, legs: &[LegRecord]) -> Vec<LegProgram> {
        let window = Duration::from_secs(self.config.media.latch_window_secs);
        legs.iter()
            .map(|leg| {
                let s = &leg.spec;
                LegProgram {
                    id: s.id.clone(),
                    stats: Arc::clone(&leg.stats),
                    rtp_socket: Arc::clone(&leg.rtp_socket),
                    rtcp_socket: leg.rtcp_socket.clone(),
                    settings: LegSettings {
                        remote_rtp: s.remote.map(|r| SocketAddr::new(r.address, r.rtp_port)),
                        remote_rtcp: s
                            .remote
                            .map(|r| SocketAddr::new(r.address, r.rtcp_port(s.rtcp_mux))),
                        latch: s.latch,
                        strict_source: s.strict_source,
                        latch_window: window,
                        forward_to: s
                            .forward_to
                            .as_ref()
                            .and_then(|t| spec.legs.iter().position(|l| &l.id == t)),
                        rtcp_mux: s.rtcp_mux,
                    },
                    crypto: Arc::clone(&leg.crypto),
                    learned: (None, None),
                }
            })
            .collect()
    }

    /// Changes some settings of one leg (e.g. the remote from the SDP answer, or a re-key).
    pub fn patch_leg(
        &self,
        id: &str,
        leg_id: &str,
        patch: LegPatch,
    ) -> Result<SessionView, RelayError> {
        let mut state = self.lock();
        let session = state
            .sessions
            .get_mut(id)
            .ok_or_else(|| RelayError::SessionNotFound { id: id.to_owned() })?;
        let index = session
            .spec
            .legs
            .iter()
            .position(|l| l.id == leg_id)
            .ok_or_else(|| RelayError::LegNotFound {
                session: id.to_owned(),
                leg: leg_id.to_owned(),
            })?;
        let mut leg = session.spec.legs[index].clone();
        if let Some(remote) = patch.remote {
            leg.remote = remote;
        }
        if let Some(latch) = patch.latch {
            leg.latch = latch;
        }
        if let Some(strict) = patch.strict_source {
            leg.strict_source = strict;
        }
        if let Some(crypto) = patch.inbound_crypto.clone() {
            leg.inbound_crypto = crypto;
        }
        if let Some(crypto) = patch.outbound_crypto.clone() {
            leg.outbound_crypto = crypto;
        }
        if let Some(target) = patch.forward_to {
            leg.forward_to = target;
        }
        let ids = session.spec.legs.iter().map(|l| l.id.as_str()).collect();
        leg.validate(&ids)?;
        let inbound = match &patch.inbound_crypto {
            Some(new) => crypto_change(None, new.as_ref(), leg_id)?,
            None => CryptoChange::Keep,
        };
        let outbound = match &patch.outbound_crypto {
            Some(new) => crypto_change(None, new.as_ref(), leg_id)?,
            None => CryptoChange::Keep,
        };
        session.legs[index].crypto.apply(inbound, outbound);
        session.spec.legs[index] = leg.clone();
        session.legs[index].spec = leg;
        let programs = self.programs(&session.spec, &session.legs);
        self.datapath.install(session.key, programs);
        self.program_xdp(session.key, &mut session.legs);
        self.persist(id, session);
        Ok(self.view(id, session))
    }

    /// Deletes a session; its ports go into quarantine.
    pub fn delete_session(&self, id: &str) -> Result<(), RelayError> {
        let now = Instant::now();
        let mut state = self.lock();
        let session = state
            .sessions
            .remove(id)
            .ok_or_else(|| RelayError::SessionNotFound { id: id.to_owned() })?;
        self.datapath.remove(session.key);
        if let Some(store) = &self.store {
            if let Err(e) = store.remove(id) {
                warn!(session = id, %e, "cannot remove the persisted session");
            }
        }
        if let Some(flows) = &self.xdp_flows {
            flows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(session.key);
        }
        for leg in session.legs {
            state.release_leg(leg, Some(now), &self.datapath);
        }
        info!(session = id, "session deleted");
        Ok(())
    }

    /// One session.
    pub fn get_session(&self, id: &str) -> Result<SessionView, RelayError> {
        let state = self.lock();
        let session = state
            .sessions
            .get(id)
            .ok_or_else(|| RelayError::SessionNotFound { id: id.to_owned() })?;
        Ok(self.view(id, session))
    }

    /// Whether session changes may block for longer than a few socket calls: they write the
    /// session store, or program XDP maps (an embedding async caller should move them off its
    /// event loop).
    pub fn changes_may_block(&self) -> bool {
        self.store.is_some() || self.xdp_flows.is_some()
    }

    /// How many sessions there are.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Every session, briefly.
    pub fn list(&self) -> Vec<SessionSummary> {
        let state = self.lock();
        let mut list: Vec<SessionSummary> = state
            .sessions
            .iter()
            .map(|(id, s)| SessionSummary {
                id: id.clone(),
                legs: s.legs.len(),
                created_unix_ms: s.created_unix_ms,
                media_timed_out: s.legs.iter().any(|l| l.timed_out),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Marks legs silent for longer than their session's media timeout and publishes one
    /// event per leg when it times out (again after packets resumed). Called periodically.
    pub fn check_media_timeouts(&self) -> usize {
        let now_ms = unix_ms();
        let now = Instant::now();
        let mut state = self.lock();
        let mut fired = 0;
        for (id, session) in &mut state.sessions {
            let xdp = self.xdp_flows.as_ref().map(|f| {
                f.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .counters(session.key, session.legs.len())
            });
            for (i, leg) in session.legs.iter_mut().enumerate() {
                if let Some(x) = xdp.as_ref().and_then(|x| x.get(i)) {
                    // Packets XDP dropped for their source do not keep a leg alive.
                    let total = x.packets_in - x.wrong_source
                        + leg
                            .stats
                            .xdp_packets
                            .load(std::sync::atomic::Ordering::Relaxed);
                    if total != leg.xdp_seen.0 {
                        leg.xdp_seen = (total, Some(now));
                    }
                }
                let last = leg
                    .stats
                    .last_packet_unix_ms
                    .load(std::sync::atomic::Ordering::Relaxed);
                let socket_silence = if last == 0 {
                    now.saturating_duration_since(leg.created)
                } else {
                    Duration::from_millis(now_ms.saturating_sub(last))
                };
                let silent = match leg.xdp_seen.1 {
                    Some(at) => socket_silence.min(now.saturating_duration_since(at)),
                    None => socket_silence,
                };
                let timed_out = silent >= session.media_timeout;
                if timed_out && !leg.timed_out {
                    fired += 1;
                    let _ = self.events.send(Event::MediaTimeout {
                        session: id.clone(),
                        leg: leg.spec.id.clone(),
                        silent_secs: silent.as_secs(),
                    });
                    info!(
                        session = id,
                        leg = leg.spec.id,
                        silent_secs = silent.as_secs(),
                        "media timeout"
                    );
                }
                leg.timed_out = timed_out;
            }
        }
        fired
    }

    /// Totals for metrics.
    pub fn totals(&self) -> Totals {
        use std::sync::atomic::Ordering::Relaxed;
        let now = Instant::now();
        let mut state = self.lock();
        let mut totals = Totals {
            drops: DropReason::ALL.iter().map(|&r| (r, 0)).collect(),
            ..Totals::default()
        };
        for session in state.sessions.values() {
            totals.sessions += 1;
            for leg in &session.legs {
                let s = &leg.stats;
                totals.legs += 1;
                totals.legs_timed_out += u64::from(leg.timed_out);
                totals.packets_in += s.packets_in.load(Relaxed);
                totals.bytes_in += s.bytes_in.load(Relaxed);
                totals.packets_out += s.packets_out.load(Relaxed);
                totals.bytes_out += s.bytes_out.load(Relaxed);
                totals.auth_failures += s.auth_failures.load(Relaxed);
                totals.replays += s.replays.load(Relaxed);
                for (reason, count) in &mut totals.drops {
                    *count += s.drops(*reason);
                }
            }
        }
        let mut ports: Vec<(String, usize)> = state
            .ports
            .iter_mut()
            .map(|(name, p)| (name.clone(), p.available(now)))
            .collect();
        ports.sort();
        totals.ports_available = ports;
        totals
    }

    fn view(&self, id: &str, session: &SessionRecord) -> SessionView {
        let xdp = self.xdp_flows.as_ref().map(|f| {
            f.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .counters(session.key, session.legs.len())
        });
        SessionView {
            id: id.to_owned(),
            media_timeout_secs: session.media_timeout.as_secs(),
            created_unix_ms: session.created_unix_ms,
            legs: session
                .legs
                .iter()
                .enumerate()
                .map(|(i, leg)| {
                    let (latched_rtp, latched_rtcp) = leg.stats.latched();
                    let mut counters = leg.stats.view();
                    if let Some(x) = xdp.as_ref().and_then(|x| x.get(i)) {
                        counters.packets_in += x.packets_in;
                        counters.bytes_in += x.bytes_in;
                        counters.packets_out += x.packets_out;
                        counters.bytes_out += x.bytes_out;
                        *counters.drops.entry("wrong_source".to_owned()).or_insert(0) +=
                            x.wrong_source;
                        counters.xdp_packets = Some(
                            x.packets_in - x.wrong_source
                                + leg
                                    .stats
                                    .xdp_packets
                                    .load(std::sync::atomic::Ordering::Relaxed),
                        );
                    }
                    let s = &leg.spec;
                    LegView {
                        id: s.id.clone(),
                        interface: s.interface.clone(),
                        local: LocalView {
                            address: leg.address,
                            rtp_port: leg.rtp_port,
                            rtcp_port: if s.rtcp_mux {
                                leg.rtp_port
                            } else {
                                leg.rtp_port + 1
                            },
                        },
                        rtcp_mux: s.rtcp_mux,
                        remote: s.remote,
                        latch: s.latch,
                        strict_source: s.strict_source,
                        latched_rtp,
                        latched_rtcp,
                        inbound_crypto: s.inbound_crypto.as_ref().map(crypto_view),
                        outbound_crypto: s.outbound_crypto.as_ref().map(crypto_view),
                        forward_to: s.forward_to.clone(),
                        media_timed_out: leg.timed_out,
                        counters,
                    }
                })
                .collect(),
        }
    }
}

fn crypto_view(spec: &CryptoSpec) -> CryptoView {
    CryptoView {
        suite: spec.suite.clone(),
        keys: spec.keys.len(),
    }
}

/// The SRTP change of every leg of `spec`, given the legs of the session it replaces.
fn crypto_plan(
    spec: &SessionSpec,
    old_specs: &[LegSpec],
    reusable: impl Fn(&LegSpec) -> Option<usize>,
) -> Result<Vec<(CryptoChange, CryptoChange)>, SpecError> {
    spec.legs
        .iter()
        .map(|leg| {
            let old = reusable(leg).map(|i| &old_specs[i]);
            Ok((
                crypto_change(
                    old.and_then(|o| o.inbound_crypto.as_ref()),
                    leg.inbound_crypto.as_ref(),
                    &leg.id,
                )?,
                crypto_change(
                    old.and_then(|o| o.outbound_crypto.as_ref()),
                    leg.outbound_crypto.as_ref(),
                    &leg.id,
                )?,
            ))
        })
        .collect()
}

/// Keep the context when the spec is unchanged (its ROC and replay state stay), else build one.
fn crypto_change(
    old: Option<&CryptoSpec>,
    new: Option<&CryptoSpec>,
    leg: &str,
) -> Result<CryptoChange, SpecError> {
    if old.is_some() && old == new {
        return Ok(CryptoChange::Keep);
    }
    Ok(match new {
        Some(spec) => CryptoChange::Set(Box::new(spec.policy(leg)?)),
        None => CryptoChange::Plain,
    })
}
