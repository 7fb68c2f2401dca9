//! The B2BUA core (IO-free): calls between a caller leg and a callee leg, each its own SIP
//! dialog (RFC 3261 §12) with its own SDP and SDES keys, media through one relayd session.
//!
//! Inputs: SIP messages as they arrived ([`Core::handle_inbound`]), relayd replies
//! ([`Core::handle_relay_reply`]), relayd restarts and media timeouts, closed connections, and
//! time ([`Core::handle_timeout`]). Outputs, polled with [`Core::poll_output`]: bytes to send,
//! relay requests, call records. The binary's driver carries them out; tests drive the core
//! with literal messages and a fake clock.
//!
//! ```text
//!  caller            Core                    relayd               callee
//!    | INVITE (offer A) |                         |                    |
//!    |----------------->| answer A's offer (keys) |                    |
//!    |<-- 100 Trying ---| PUT session (a<i>,b<i>) |                    |
//!    |                  |------------------------>|                    |
//!    |                  |<----- ports ------------| INVITE (offer B)   |
//!    |                  |---------------------------------------------->|
//!    |                  |<---------------------------------- 200 (answer B)
//!    |                  | PUT session (b keys, remote) + ACK ---------->|
//!    |<-- 200 (answer A)|                         |                    |
//!    |--- ACK --------->|                         |                    |
//! ```
//!
//! Delayed offer (no SDP in the INVITE, RFC 3261 §13.2.1) is carried through the 2xx and
//! both ACKs. A registered user's contacts are tried one after the other (serial forking).
//! What it does not do (answered with a clear status): parallel forking, PRACK/100rel (not advertised), UPDATE
//! (501). In-dialog requests go over the flow the dialog was set up
//! on (the caller's source address and connection, the callee's next hop), with the peer's
//! route set in Route headers: NAT-safe for TLS phones, and what trunks expect from a B2BUA.

mod media;

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

use self::media::{MediaState, MAX_MEDIA};
use crate::{
    auth::{AuthOutcome, AuthRequest, ChallengeKind, DigestAuthenticator},
    config::Config,
    registrar::{self, Registrar},
    relay_client::{SessionSpec, SessionView},
    routing::{self, Destination, Resolved, Source},
    sdp::{
        self,
        leg::{LegSdpPlan, MediaPlan, OriginUpdate, RtcpPlan},
        negotiation::{KeyReuse, Negotiated, SrtpSettings},
        Sdp,
    },
    sip::{
        self, bad_request_response,
        transaction::{
            new_branch, ClientTxId, ServerTxId, Target, TransactionLayer, TxEvent, TxId,
        },
        Message, Method, NameAddr, Request, Response, Transport, Uri,
    },
    transport::{self, ConnectionId, Inbound, Outbound, TlsInfo},
    verdict::{CallRecord, CallState, LegRole, LegVerdict, Media, Signalling, SignallingTransport},
};

/// Methods we accept (Allow header).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO";
/// RFC 3261 §13.3.1.4: T1 (2xx retransmission start) and T2 (cap).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

/// Where our SIP is reachable (Via, Contact).
#[derive(Clone, Debug)]
pub struct Identity {
    /// Host in Via/Contact.
    pub host: String,
    /// UDP port, if listening.
    pub udp: Option<u16>,
    /// TCP port.
    pub tcp: Option<u16>,
    /// TLS port.
    pub tls: Option<u16>,
}

impl Identity {
    fn port(&self, transport: &Transport) -> u16 {
        match transport {
            Transport::Tls => self.tls,
            Transport::Tcp => self.tcp,
            _ => self.udp,
        }
        .unwrap_or_else(|| transport.default_port())
    }

    fn host_port(&self, transport: &Transport) -> String {
        format!("{}:{}", self.host, self.port(transport))
    }

    fn via(&self, transport: &Transport, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            transport.as_str(),
            self.host_port(transport)
        )
    }

    /// Our Contact for a dialog. `sips:` only when the dialog's URI is `sips:` (RFC 3261
    /// §8.1.1.8, §12.1.1); a TLS dialog set up with `sip:` gets `sip:...;transport=tls`
    /// (libre/baresip refuse in-dialog requests to a `sips:` target they did not ask for).
    fn contact(&self, transport: &Transport, user: &str, sips: bool) -> String {
        match transport {
            Transport::Tls if sips => format!("<sips:{user}@{}>", self.host_port(transport)),
            Transport::Tls => format!("<sip:{user}@{};transport=tls>", self.host_port(transport)),
            Transport::Tcp => format!("<sip:{user}@{};transport=tcp>", self.host_port(transport)),
            _ => format!("<sip:{user}@{}>", self.host_port(transport)),
        }
    }
}

/// A relayd request the driver carries out; its reply comes back through
/// [`Core::handle_relay_reply`] with the same `call`.
#[derive(Clone, Debug)]
pub enum RelayRequest {
    /// `PUT /v1/sessions/{call}`.
    Put(SessionSpec),
    /// `DELETE /v1/sessions/{call}`.
    Delete,
}

/// What the driver must do.
#[derive(Debug)]
pub enum Output {
    /// Send SIP bytes; on failure report it with [`Core::handle_send_failure`].
    Send {
        /// What and where.
        outbound: Outbound,
        /// The transaction to fail when sending fails.
        transaction: Option<TxId>,
    },
    /// Program relayd.
    Relay {
        /// Call (= relay session) id.
        call: String,
        /// The request.
        request: RelayRequest,
    },
    /// A call changed (for `/v1/calls`).
    CallUpdated(CallRecord),
    /// A call ended (CDR line, `/v1/calls`).
    CallEnded(CallRecord),
}

/// The result of a relay request.
pub type RelayResult = Result<Option<SessionView>, String>;

/// Counters the core keeps (the driver exports them).
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreStats {
    /// Calls created.
    pub calls_started: u64,
    /// Calls answered.
    pub calls_answered: u64,
    /// Calls ended without an answer.
    pub calls_failed: u64,
    /// Finished calls secure end to end.
    pub calls_secure: u64,
    /// Requests rejected by the core.
    pub rejected: u64,
    /// Unparseable messages.
    pub parse_errors: u64,
    /// Failed relay requests.
    pub relay_errors: u64,
    /// Relay restarts seen.
    pub relay_restarts: u64,
    /// Accepted REGISTERs.
    pub registrations: u64,
    /// Digest failures.
    pub auth_failures: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

/// One dialog of a call.
#[derive(Debug)]
struct Leg {
    role: LegRole,
    peer: String,
    /// The dialog was set up with a `sips:` URI (our Contact is `sips:` too).
    sips: bool,
    /// Where requests and responses of this leg go.
    flow: Target,
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    /// Our From/To value (without tag).
    local_uri: String,
    /// Their From/To value (without tag).
    remote_uri: String,
    /// Their Contact.
    remote_target: Option<Uri>,
    /// Their Record-Route set, in the order our requests carry it.
    route_set: Vec<String>,
    local_cseq: u32,
    remote_cseq: Option<u32>,
    settings: SrtpSettings,
    interface: String,
    origin_session: u64,
    origin_version: u64,
    signalling: Option<Signalling>,
    /// The last SDP body this leg's peer sent (the template of what we send the other leg).
    last_sdp: Vec<u8>,
    /// The last SDP we sent this leg.
    sent_sdp: Option<Vec<u8>>,
}

impl Leg {
    fn transport(&self) -> &Transport {
        &self.flow.transport
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// PUT in flight before the callee INVITE.
    OfferRelay,
    /// INVITE sent to the callee.
    Calling,
    /// The callee answered (2xx); PUT in flight before we answer the caller.
    AnswerRelay,
    /// 2xx sent to the caller.
    Confirmed,
    /// Tearing down (relay delete pending).
    Ending,
}

/// A re-INVITE being carried from one leg to the other.
#[derive(Debug)]
struct ReInvite {
    /// The leg that sent the re-INVITE.
    from: Side,
    server_tx: ServerTxId,
    request: Request,
    client_tx: Option<ClientTxId>,
    /// The other leg answered; the relay is being programmed before we answer `from`.
    answered: bool,
    /// Media state before the re-INVITE, restored when the other leg refuses it.
    previous: Vec<MediaState>,
    /// The sender's SDP before the re-INVITE, restored with `previous`.
    previous_sdp: Vec<u8>,
}

/// A 2xx being retransmitted to the caller until its ACK (§13.3.1.4).
#[derive(Debug)]
struct OkRetransmit {
    /// The leg it goes to.
    side: Side,
    /// Its server transaction, while the layer still holds it.
    tx: Option<ServerTxId>,
    response: Response,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// One call. Its flags are independent facts of the call's progress (cancelled, delayed
/// offer, answered, relay used), not an encoded state machine: that is `phase`.
#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)]
struct Call {
    id: String,
    phase: Phase,
    a: Leg,
    b: Leg,
    a_invite: Option<ServerTxId>,
    a_invite_request: Request,
    b_invite: Option<ClientTxId>,
    b_request: Option<Request>,
    b_ack: Option<Request>,
    /// The callee's INVITE was cancelled (or its CANCEL deferred until a provisional).
    callee_cancelled: bool,
    /// The caller sent no offer (RFC 3261 §13.2.1 delayed offer): the callee offers in its
    /// 2xx, we offer that to the caller in our 2xx, the caller answers in its ACK and we
    /// answer the callee in ours.
    delayed_offer: bool,
    /// Delayed offer: the callee's 2xx waits for its ACK until the caller's answer is
    /// programmed into relayd.
    callee_ack_pending: Option<Response>,
    /// Delayed offer: the caller's answer is being programmed.
    caller_answered: bool,
    /// A relay session was requested (a call that ends before it had media has none to
    /// delete).
    relay_used: bool,
    /// Registered contacts still to try, best first, when the current one fails.
    alternates: Vec<(Uri, Target)>,
    media: Vec<MediaState>,
    relay_view: Option<SessionView>,
    relay_in_flight: bool,
    relay_next: Option<RelayRequest>,
    final_response: Option<Response>,
    ok: Option<OkRetransmit>,
    ring_deadline: Option<Instant>,
    reinvite: Option<ReInvite>,
    record: CallRecord,
}

/// The B2BUA.
#[derive(Debug)]
pub struct Core {
    config: Arc<Config>,
    resolved: Resolved,
    identity: Identity,
    tx: TransactionLayer,
    auth: DigestAuthenticator,
    registrar: Registrar,
    calls: HashMap<String, Call>,
    /// (Call-ID, our tag) → (call, side).
    dialogs: HashMap<(String, String), (String, Side)>,
    /// Caller INVITE server transactions → call.
    server_invites: HashMap<ServerTxId, String>,
    /// Client transactions → (call, side, method).
    clients: HashMap<ClientTxId, (String, Side, Method)>,
    /// Re-INVITE server transactions → call.
    server_reinvites: HashMap<ServerTxId, String>,
    /// (Call-ID, From tag) of each call's INVITE → (call, `CSeq`), to spot merged requests.
    caller_invites: HashMap<(String, String), (String, u32)>,
    /// Relayed in-dialog requests (INFO): our client transaction → the server transaction
    /// and request it answers.
    relayed: HashMap<ClientTxId, (ServerTxId, Request)>,
    /// Callee INVITEs to CANCEL once a provisional arrives (§9.1), even after the call ended.
    pending_cancels: BTreeSet<ClientTxId>,
    timers: BTreeSet<(Instant, String)>,
    outputs: VecDeque<Output>,
    relay_boot: Option<String>,
    next_call: u64,
    stats: CoreStats,
    /// Our Via branch prefix (`z9hG4bK-scx<random>-`): marks requests we sent (loop detection).
    branch_prefix: String,
    /// Callee INVITEs of ended calls (top Via branch → where the INVITE went), kept for 64*T1:
    /// a late 2xx gets its ACK and a BYE there, never wherever a packet claims to come from.
    ended_invites: HashMap<String, Target>,
    /// Expiry order of `ended_invites`.
    ended_invites_order: VecDeque<(Instant, String)>,
    /// TLS facts of the message being handled (the caller leg of a new INVITE takes them).
    inbound_tls: Option<Arc<TlsInfo>>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // getrandom failing means the OS has no entropy source: nothing safe can run.
    getrandom::fill(&mut buf).unwrap_or_else(|e| panic!("no OS randomness: {e}"));
    buf.iter()
        .fold(String::with_capacity(bytes * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn to_sip_transport(transport: transport::Transport) -> Transport {
    match transport {
        transport::Transport::Udp => Transport::Udp,
        transport::Transport::Tcp => Transport::Tcp,
        transport::Transport::Tls => Transport::Tls,
    }
}

fn to_wire_transport(transport: &Transport) -> transport::Transport {
    match transport {
        Transport::Tcp => transport::Transport::Tcp,
        Transport::Tls => transport::Transport::Tls,
        _ => transport::Transport::Udp,
    }
}

fn signalling_of(target: &Target, tls: Option<&TlsInfo>) -> Signalling {
    Signalling {
        transport: match target.transport {
            Transport::Tls => SignallingTransport::Tls,
            Transport::Tcp => SignallingTransport::Tcp,
            _ => SignallingTransport::Udp,
        },
        remote: target.address,
        tls_version: tls.map(|t| t.version.clone()),
        tls_cipher_suite: tls.map(|t| t.cipher_suite.clone()),
        peer_certificate_subject: tls.and_then(|t| t.peer_subject.clone()),
    }
}

/// Strips the tag from a From/To value.
fn without_tag(value: &NameAddr) -> String {
    let mut value = value.clone();
    value.remove_param("tag");
    value.to_string()
}

impl Core {
    /// A core for `config`.
    pub fn new(
        config: Arc<Config>,
        resolved: Resolved,
        identity: Identity,
    ) -> Result<Self, String> {
        let tx = TransactionLayer::new(sip::transaction::TransactionConfig {
            max_transactions: config.sip.max_transactions,
            ..sip::transaction::TransactionConfig::default()
        })
        .map_err(|e| e.to_string())?;
        let reg = &config.registrar;
        let store = crate::auth::CredentialStore::new(reg.users.iter().map(|user| {
            crate::auth::CredentialEntry {
                username: user.username.clone(),
                realm: reg.realm.clone(),
                password: Some(user.password.clone()),
                ha1_md5: None,
                ha1_sha256: None,
            }
        }))
        .map_err(|e| e.to_string())?;
        let auth_config = crate::auth::AuthConfig {
            nonce_lifetime_secs: reg.nonce_lifetime_secs,
            ..crate::auth::AuthConfig::default()
        };
        let auth = DigestAuthenticator::new(auth_config, store).map_err(|e| e.to_string())?;
        let registrar = Registrar::new(registrar::RegistrarConfig {
            default_expires: reg.default_expires,
            min_expires: reg.min_expires,
            max_expires: reg.max_expires,
            max_contacts_per_aor: reg.max_contacts_per_aor,
            max_bindings: reg.max_bindings,
        })
        .map_err(|e| e.to_string())?;
        let mut salt = [0u8; 8];
        getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
        Ok(Self {
            config,
            resolved,
            identity,
            tx,
            auth,
            registrar,
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            server_invites: HashMap::new(),
            clients: HashMap::new(),
            server_reinvites: HashMap::new(),
            caller_invites: HashMap::new(),
            relayed: HashMap::new(),
            pending_cancels: BTreeSet::new(),
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            relay_boot: None,
            next_call: 0,
            stats: CoreStats::default(),
            branch_prefix: format!("z9hG4bK-scx{:x}-", u64::from_le_bytes(salt) & 0xffff_ffff),
            ended_invites: HashMap::new(),
            ended_invites_order: VecDeque::new(),
            inbound_tls: None,
        })
    }

    /// Counters.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    /// Live calls.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// The registrar (its bindings, for diagnostics and tests).
    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.drain_tx();
        self.outputs.pop_front()
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ours = self.timers.iter().next().map(|(at, _)| *at);
        match (ours, self.tx.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A sent message failed (connection refused, TLS handshake failure, ...).
    pub fn handle_send_failure(&mut self, now: Instant, unix_ms: u64, transaction: TxId) {
        self.tx.transport_error(transaction);
        self.process_tx_events(now, unix_ms);
    }

    /// A TCP/TLS connection closed: registrations over it are gone (RFC 5626 §4.4).
    pub fn handle_connection_closed(
        &mut self,
        connection: ConnectionId,
        source: SocketAddr,
        transport: transport::Transport,
    ) {
        let flow = registrar::FlowToken {
            transport: match transport {
                transport::Transport::Tls => registrar::Transport::Tls,
                transport::Transport::Tcp => registrar::Transport::Tcp,
                transport::Transport::Udp => registrar::Transport::Udp,
            },
            source,
            connection_id: Some(connection.get()),
        };
        let removed = self.registrar.remove_flow(&flow);
        if removed > 0 {
            info!(%connection, removed, "bindings over a closed connection removed");
        }
    }

    /// relayd's boot id as the driver last saw it; a change means relayd lost its sessions:
    /// every live call's session is programmed again.
    pub fn handle_relay_boot(&mut self, boot_id: &str) {
        let changed = self.relay_boot.as_deref().is_some_and(|old| old != boot_id);
        self.relay_boot = Some(boot_id.to_owned());
        if !changed {
            return;
        }
        self.stats.relay_restarts += 1;
        warn!(
            calls = self.calls.len(),
            "relayd restarted: re-programming live sessions"
        );
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            self.program_relay(&id);
        }
    }

    /// relayd reported a leg silent for the media timeout: the call ends.
    pub fn handle_media_timeout(&mut self, now: Instant, unix_ms: u64, session: &str) {
        if self
            .calls
            .get(session)
            .is_some_and(|c| c.phase == Phase::Confirmed)
        {
            info!(call = session, "media timeout: ending the call");
            self.hang_up_both(now, unix_ms, session, "media_timeout");
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        self.tx.handle_timeout(now);
        self.process_tx_events(now, unix_ms);
        while let Some((at, id)) = self.timers.iter().next().cloned() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id.clone()));
            self.call_timer(now, unix_ms, &id);
        }
    }

    /// A SIP message arrived.
    pub fn handle_inbound(&mut self, now: Instant, unix_ms: u64, inbound: &Inbound) {
        let source = Target {
            transport: to_sip_transport(inbound.transport),
            address: inbound.source,
            connection: inbound.connection.map(ConnectionId::get),
            server_name: None,
        };
        let message = match Message::parse(&inbound.bytes) {
            Ok(message) => message,
            Err(e) => {
                self.stats.parse_errors += 1;
                debug!(source = %inbound.source, error = %e, "unparseable SIP");
                if let Some(bytes) = bad_request_response(&inbound.bytes, &e) {
                    self.outputs.push_back(Output::Send {
                        outbound: Outbound::response_to(inbound, bytes),
                        transaction: None,
                    });
                }
                return;
            }
        };
        match message {
            Message::Request(mut request) => {
                // RFC 3261 §18.2.1 and RFC 3581: record where it really came from.
                if request.headers.stamp_top_via(inbound.source).is_err() {
                    self.stats.parse_errors += 1;
                    return;
                }
                self.note_tls(&request, inbound.tls.as_deref(), &source);
                self.inbound_tls.clone_from(&inbound.tls);
                if let Err(rejected) = self.tx.receive_request(now, request, source.clone()) {
                    let status = rejected.error.status_code();
                    let response = Response::from_request(&rejected.request, status, None);
                    self.stats.rejected += 1;
                    self.tx.send_stateless(response.to_bytes(), source);
                }
            }
            Message::Response(response) => {
                self.note_tls_response(&response, inbound.tls.as_deref(), &source);
                self.tx.receive_response(now, response, source);
            }
        }
        self.process_tx_events(now, unix_ms);
        self.inbound_tls = None;
    }

    /// Records TLS facts of a request's leg (caller side, in-dialog from either side).
    fn note_tls(&mut self, request: &Request, tls: Option<&TlsInfo>, source: &Target) {
        let (Ok(call_id), Ok(to)) = (request.headers.call_id(), request.headers.to()) else {
            return;
        };
        let Some(tag) = to.tag() else { return };
        if let Some((call, side)) = self.dialogs.get(&(call_id.to_owned(), tag.to_owned())) {
            if let Some(call) = self.calls.get_mut(call) {
                let leg = match side {
                    Side::A => &mut call.a,
                    Side::B => &mut call.b,
                };
                leg.signalling = Some(signalling_of(source, tls));
            }
        }
    }

    /// Records the callee leg's transport facts from its responses.
    fn note_tls_response(&mut self, response: &Response, tls: Option<&TlsInfo>, source: &Target) {
        let (Ok(call_id), Ok(from)) = (response.headers.call_id(), response.headers.from()) else {
            return;
        };
        let Some(tag) = from.tag() else { return };
        if let Some((call, Side::B)) = self.dialogs.get(&(call_id.to_owned(), tag.to_owned())) {
            if let Some(call) = self.calls.get_mut(call) {
                call.b.signalling = Some(signalling_of(source, tls));
            }
        }
    }

    fn drain_tx(&mut self) {
        while let Some(transmit) = self.tx.poll_transmit() {
            let target = transmit.target;
            let mut outbound = Outbound::request(
                to_wire_transport(&target.transport),
                target.address,
                transmit.bytes,
            );
            outbound.connection = target.connection.map(ConnectionId::from_raw);
            outbound.server_name = target.server_name;
            outbound.is_request = outbound.bytes.first().is_some_and(|b| *b != b'S');
            self.outputs.push_back(Output::Send {
                outbound,
                transaction: transmit.transaction,
            });
        }
    }

    fn process_tx_events(&mut self, now: Instant, unix_ms: u64) {
        while let Some(event) = self.tx.poll_event() {
            match event {
                TxEvent::Request {
                    id,
                    request,
                    source,
                } => self.on_request(now, unix_ms, id, request, &source),
                TxEvent::Ack {
                    request, source, ..
                } => self.on_ack(now, unix_ms, &request, &source),
                TxEvent::Response {
                    id,
                    response,
                    retransmission,
                } => self.on_response(now, unix_ms, id, response, retransmission),
                TxEvent::StrayResponse { response, .. } => {
                    self.on_stray_response(now, &response);
                }
                TxEvent::Timeout { id, .. } | TxEvent::TransportError { id } => {
                    self.on_tx_failure(now, unix_ms, id);
                }
                TxEvent::Terminated { id } => {
                    if let TxId::Client(client) = id {
                        self.clients.remove(&client);
                        self.pending_cancels.remove(&client);
                        self.relayed.remove(&client);
                    }
                    if let TxId::Server(server) = id {
                        self.server_invites.remove(&server);
                        self.server_reinvites.remove(&server);
                    }
                }
            }
        }
        self.drain_tx();
    }

    fn respond(&mut self, now: Instant, id: ServerTxId, response: &Response) {
        if let Err(e) = self.tx.respond(now, id, response) {
            debug!(error = %e, status = response.status, "response not sent");
        }
    }

    fn reject(
        &mut self,
        now: Instant,
        id: ServerTxId,
        request: &Request,
        status: u16,
        reason: &str,
    ) {
        self.stats.rejected += 1;
        let mut response = Response::from_request(request, status, Some(reason));
        if request.headers.to().is_ok_and(|to| to.tag().is_none()) && status != 100 {
            let _ = response.set_to_tag(&random_hex(8));
        }
        if status == 405 || status == 501 {
            response.headers.push("Allow", ALLOW);
        }
        self.respond(now, id, &response);
    }

    fn on_request(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: ServerTxId,
        request: Request,
        source: &Target,
    ) {
        let in_dialog = request.headers.to().is_ok_and(|to| to.tag().is_some());
        match (&request.method, in_dialog) {
            (Method::Register, _) => self.on_register(now, unix_ms, id, &request, source),
            (Method::Cancel, _) => self.on_cancel(now, unix_ms, id, &request),
            (Method::Invite, false) => self.on_invite(now, unix_ms, id, &request, source),
            (Method::Options, false) => {
                let mut response = Response::from_request(&request, 200, None);
                let _ = response.set_to_tag(&random_hex(8));
                response.headers.push("Allow", ALLOW);
                response.headers.push("Accept", "application/sdp");
                response
                    .headers
                    .push("Server", self.config.sip.user_agent.as_str());
                self.respond(now, id, &response);
            }
            (_, true) => self.on_in_dialog(now, unix_ms, id, request),
            (Method::Ack, false) => {}
            _ => self.reject(now, id, &request, 405, "Method Not Allowed"),
        }
    }

    // ----- REGISTER ---------------------------------------------------------------------------

    fn on_register(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: ServerTxId,
        request: &Request,
        source: &Target,
    ) {
        let Ok(to) = request.headers.to() else {
            return self.reject(now, id, request, 400, "Bad To");
        };
        let Some(sip_uri) = to.uri().as_sip() else {
            return self.reject(now, id, request, 416, "Unsupported URI Scheme");
        };
        let aor = routing::aor_of(
            sip_uri.user().unwrap_or(""),
            &routing::host_text(sip_uri.host()),
        );
        let allowed = self.unauthenticated_allowed(source.address.ip());
        if !allowed {
            match self.authenticate(request, ChallengeKind::Origin, unix_ms, source) {
                Ok(Some(username)) => {
                    if sip_uri.user() != Some(username.as_str()) {
                        self.stats.auth_failures += 1;
                        return self.reject(
                            now,
                            id,
                            request,
                            403,
                            "Username does not match the AOR",
                        );
                    }
                }
                Ok(None) => {
                    return self.challenge(now, unix_ms, id, request, ChallengeKind::Origin, false)
                }
                Err((status, reason)) => return self.reject(now, id, request, status, &reason),
            }
        }
        let contacts = match request.headers.contacts() {
            Ok(contacts) => contacts,
            Err(e) => return self.reject(now, id, request, 400, &e.reason()),
        };
        let expires_header = match request.headers.expires() {
            Ok(e) => e,
            Err(e) => return self.reject(now, id, request, 400, &e.reason()),
        };
        let Ok(cseq) = request.headers.cseq() else {
            return self.reject(now, id, request, 400, "Bad CSeq");
        };
        let call_id = request.headers.call_id().unwrap_or_default().to_owned();
        let contacts = match registrar_contacts(&contacts) {
            Ok(c) => c,
            Err(reason) => return self.reject(now, id, request, 400, &reason),
        };
        let register = registrar::RegisterRequest {
            aor,
            contacts,
            expires_header,
            call_id,
            cseq: cseq.seq,
            flow: registrar::FlowToken {
                transport: match source.transport {
                    Transport::Tls => registrar::Transport::Tls,
                    Transport::Tcp => registrar::Transport::Tcp,
                    _ => registrar::Transport::Udp,
                },
                source: source.address,
                connection_id: source.connection,
            },
            received_at: unix_ms / 1000,
        };
        match self.registrar.register(&register) {
            Ok(result) => {
                self.stats.registrations += 1;
                let mut response = Response::from_request(request, 200, None);
                let _ = response.set_to_tag(&random_hex(8));
                for value in result.contact_header_values() {
                    response.headers.push("Contact", value);
                }
                if result.outbound {
                    response.headers.push("Require", "outbound");
                }
                self.respond(now, id, &response);
            }
            Err(e) => {
                let mut response =
                    Response::from_request(request, e.sip_status(), Some(e.reason_phrase()));
                let _ = response.set_to_tag(&random_hex(8));
                if let Some(min) = e.min_expires() {
                    response.headers.push("Min-Expires", min.to_string());
                }
                self.stats.rejected += 1;
                self.respond(now, id, &response);
            }
        }
    }

    fn unauthenticated_allowed(&self, ip: IpAddr) -> bool {
        self.config
            .registrar
            .allow_unauthenticated_from
            .iter()
            .any(|net| net.contains(&ip))
    }

    /// `Ok(Some(user))` authenticated, `Ok(None)` needs a challenge, `Err` a final answer.
    fn authenticate(
        &mut self,
        request: &Request,
        kind: ChallengeKind,
        unix_ms: u64,
        source: &Target,
    ) -> Result<Option<String>, (u16, String)> {
        let credentials: Vec<&str> = request.headers.get_all(kind.credentials_header()).collect();
        if credentials.is_empty() {
            return Ok(None);
        }
        let uri = request.uri.to_string();
        let auth_request = AuthRequest {
            realm: &self.config.registrar.realm,
            method: request.method.as_str(),
            request_uri: Some(&uri),
            credentials: &credentials,
            source: Some(source.address.ip()),
        };
        match self.auth.authenticate(&auth_request, unix_ms / 1000) {
            Ok(AuthOutcome::Authenticated { username, .. }) => Ok(Some(username)),
            Ok(AuthOutcome::Challenge { .. }) => {
                self.stats.auth_failures += 1;
                Ok(None)
            }
            Ok(AuthOutcome::Forbidden { .. }) => {
                self.stats.auth_failures += 1;
                Err((403, "Forbidden".to_owned()))
            }
            Err(e) => Err((e.sip_status(), e.reason_phrase().to_owned())),
        }
    }

    fn challenge(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: ServerTxId,
        request: &Request,
        kind: ChallengeKind,
        stale: bool,
    ) {
        let realm = self.config.registrar.realm.clone();
        let mut response = Response::from_request(request, kind.status(), None);
        let _ = response.set_to_tag(&random_hex(8));
        for value in self.auth.challenge(&realm, unix_ms / 1000, stale) {
            response.headers.push(kind.challenge_header(), value);
        }
        self.respond(now, id, &response);
    }

    // ----- new calls ---------------------------------------------------------------------------

    /// A new INVITE: hop and loop checks, where it comes from (trunk, allowed or authenticated
    /// endpoint), the route, both legs' media policies and the caller's offer, then the call
    /// and its first relay request. One linear RFC 3261 §16-style check list; splitting it
    /// would scatter the early returns that answer each failure.
    #[allow(clippy::too_many_lines)]
    fn on_invite(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: ServerTxId,
        request: &Request,
        source: &Target,
    ) {
        // RFC 3261 §16.3 step 3 / §8.2.2.2-style loop and hop checks for a B2BUA.
        let max_forwards = request.headers.max_forwards().ok().flatten().unwrap_or(70);
        if max_forwards == 0 {
            return self.reject(now, id, request, 483, "Too Many Hops");
        }
        if let Ok(vias) = request.headers.vias() {
            let ours = vias.iter().skip(1).any(|via| {
                via.branch()
                    .is_some_and(|b| b.starts_with(&self.branch_prefix))
            });
            if ours {
                return self.reject(now, id, request, 482, "Loop Detected");
            }
        }
        if self.is_merged(request) {
            return self.reject(now, id, request, 482, "Loop Detected (merged request)");
        }
        if self.calls.len() >= self.config.sip.max_calls {
            return self.reject(now, id, request, 503, "Call Limit Reached");
        }
        // Where it comes from: a trunk (by source address), else an endpoint that is allowed
        // without credentials or authenticates (407, RFC 3261 §22.3).
        let origin = match self.config.trunk_for_source(source.address.ip()) {
            Some(trunk) => Source::Trunk(trunk.name.clone()),
            None if self.unauthenticated_allowed(source.address.ip()) => Source::Endpoint,
            None => match self.authenticate(request, ChallengeKind::Proxy, unix_ms, source) {
                Ok(Some(_)) => Source::Endpoint,
                Ok(None) => {
                    return self.challenge(now, unix_ms, id, request, ChallengeKind::Proxy, false)
                }
                Err((status, reason)) => return self.reject(now, id, request, status, &reason),
            },
        };
        let config = Arc::clone(&self.config);
        let (route, destination) =
            match routing::route(&config, &self.resolved, &origin, &request.uri) {
                Ok(found) => found,
                Err(e) => {
                    let reason = e.to_string();
                    return self.reject(now, id, request, e.sip_status(), &reason);
                }
            };
        let mut alternates = Vec::new();
        let (b_trunk, b_uri, b_target, b_peer) = match destination {
            Destination::Trunk {
                trunk,
                request_uri,
                next_hop,
            } => {
                let target = Target {
                    transport: next_hop.transport,
                    address: next_hop.address,
                    connection: None,
                    server_name: next_hop.server_name,
                };
                (Some(trunk.clone()), request_uri, target, trunk)
            }
            Destination::Registrar { aor } => {
                let bindings = self.registrar.lookup(&aor, unix_ms / 1000);
                if bindings.len() > MAX_CONTACTS_TRIED {
                    debug!(%aor, bindings = bindings.len(), "only the best contacts are tried");
                }
                let Some(binding) = bindings.first() else {
                    return self.reject(
                        now,
                        id,
                        request,
                        480,
                        "Temporarily Unavailable (not registered)",
                    );
                };
                let Some((uri, target)) = binding_target(binding) else {
                    return self.reject(now, id, request, 500, "Registered contact does not parse");
                };
                // The other contacts are tried in turn if this one fails (serial forking,
                // RFC 3261 §16.6 ordering by q).
                alternates = bindings
                    .iter()
                    .skip(1)
                    .take(MAX_CONTACTS_TRIED - 1)
                    .filter_map(binding_target)
                    .collect();
                (None, uri, target, format!("endpoint:{aor}"))
            }
        };
        // The caller's offer.
        let is_sdp = request
            .headers
            .content_type()
            .ok()
            .flatten()
            .is_some_and(|t| t.is_sdp());
        let delayed_offer = request.body.is_empty();
        if !delayed_offer && !is_sdp {
            return self.reject(now, id, request, 415, "Unsupported Media Type (SDP only)");
        }
        let a_trunk = match &origin {
            Source::Trunk(name) => Some(name.as_str()),
            Source::Endpoint => None,
        };
        let (a_mode, a_suites, a_interface) = routing::media_policy(&config, a_trunk);
        let (b_mode, b_suites, b_interface) = routing::media_policy(&config, b_trunk.as_deref());
        let a_settings = media::settings(a_mode, a_suites);
        let b_settings = media::settings(b_mode, b_suites);
        let media = if delayed_offer {
            Vec::new()
        } else {
            let offer = match Sdp::parse(&request.body) {
                Ok(sdp) => sdp,
                Err(e) => return self.reject(now, id, request, e.sip_status(), e.reason_phrase()),
            };
            match negotiate_offer(&offer, &a_settings, &b_settings) {
                Ok(media) => media,
                Err((status, reason)) => return self.reject(now, id, request, status, &reason),
            }
        };
        // 100 Trying (§17.2.1: a TU answering later sends one at once).
        let trying = Response::from_request(request, 100, None);
        self.respond(now, id, &trying);

        self.next_call += 1;
        let call_id = format!("c{:x}-{}", self.next_call, random_hex(6));
        let Ok(from) = request.headers.from() else {
            return;
        };
        let Ok(to) = request.headers.to() else { return };
        let a = Leg {
            role: LegRole::Caller,
            sips: request.uri.is_sips(),
            peer: match &origin {
                Source::Trunk(name) => name.clone(),
                Source::Endpoint => format!(
                    "endpoint:{}",
                    routing::aor_of(
                        from.uri().user().unwrap_or(""),
                        &from
                            .uri()
                            .host()
                            .map(routing::host_text)
                            .unwrap_or_default(),
                    )
                ),
            },
            flow: source.clone(),
            call_id: request.headers.call_id().unwrap_or_default().to_owned(),
            local_tag: random_hex(8),
            remote_tag: from.tag().map(str::to_owned),
            local_uri: without_tag(&to),
            remote_uri: without_tag(&from),
            remote_target: request
                .headers
                .contacts()
                .ok()
                .and_then(|c| c.into_iter().find_map(contact_uri)),
            route_set: request
                .headers
                .record_routes()
                .map(|r| r.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            local_cseq: 0,
            remote_cseq: request.headers.cseq().ok().map(|c| c.seq),
            settings: a_settings,
            interface: a_interface.to_owned(),
            origin_session: u64::from_le_bytes(random_bytes8()) >> 1,
            origin_version: 1,
            signalling: Some(signalling_of(source, self.inbound_tls.as_deref())),
            last_sdp: request.body.clone(),
            sent_sdp: None,
        };
        let mut b_from = from.clone();
        b_from.remove_param("tag");
        if let Some(sip_uri) = b_from.uri_mut().as_sip_mut() {
            sip_uri.set_host_port(
                sip::Host::parse(&self.identity.host)
                    .unwrap_or(sip::Host::Domain(self.identity.host.clone())),
                None,
            );
        }
        let b = Leg {
            role: LegRole::Callee,
            sips: b_uri.is_sips(),
            peer: b_peer,
            flow: b_target,
            call_id: format!("{}@{}", random_hex(12), self.identity.host),
            local_tag: random_hex(8),
            remote_tag: None,
            local_uri: b_from.to_string(),
            remote_uri: NameAddr::new(b_uri.clone()).to_string(),
            remote_target: Some(b_uri),
            route_set: Vec::new(),
            local_cseq: 0,
            remote_cseq: None,
            settings: b_settings,
            interface: b_interface.to_owned(),
            origin_session: u64::from_le_bytes(random_bytes8()) >> 1,
            origin_version: 1,
            signalling: None,
            last_sdp: Vec::new(),
            sent_sdp: None,
        };
        let record = CallRecord {
            id: call_id.clone(),
            sip_call_id: a.call_id.clone(),
            from: from.uri().to_string(),
            to: request.uri.to_string(),
            route: route.name.clone(),
            state: CallState::Proceeding,
            status: None,
            end_reason: None,
            started_unix_ms: unix_ms,
            answered_unix_ms: None,
            ended_unix_ms: None,
            legs: Vec::new(),
            secure_end_to_end: false,
        };
        self.dialogs.insert(
            (a.call_id.clone(), a.local_tag.clone()),
            (call_id.clone(), Side::A),
        );
        self.dialogs.insert(
            (b.call_id.clone(), b.local_tag.clone()),
            (call_id.clone(), Side::B),
        );
        self.server_invites.insert(id, call_id.clone());
        if let (Some(tag), Some(seq)) = (a.remote_tag.clone(), a.remote_cseq) {
            self.caller_invites
                .insert((a.call_id.clone(), tag), (call_id.clone(), seq));
        }
        let ring_deadline = now + Duration::from_secs(self.config.sip.ring_timeout_secs);
        self.timers.insert((ring_deadline, call_id.clone()));
        let call = Call {
            id: call_id.clone(),
            phase: Phase::OfferRelay,
            a,
            b,
            a_invite: Some(id),
            a_invite_request: request.clone(),
            b_invite: None,
            b_request: None,
            b_ack: None,
            callee_cancelled: false,
            delayed_offer,
            callee_ack_pending: None,
            caller_answered: false,
            relay_used: false,
            alternates,
            media,
            relay_view: None,
            relay_in_flight: false,
            relay_next: None,
            final_response: None,
            ok: None,
            ring_deadline: Some(ring_deadline),
            reinvite: None,
            record,
        };
        info!(call = %call_id, route = %route.name, from = %call.record.from, to = %call.record.to, "call started");
        self.stats.calls_started += 1;
        self.calls.insert(call_id.clone(), call);
        self.publish(&call_id);
        if delayed_offer {
            // No media yet: the relay session is created once the callee offers.
            self.send_callee_invite(now, unix_ms, &call_id);
        } else {
            self.program_relay(&call_id);
        }
    }

    /// §8.2.2.2: the same INVITE (From tag, Call-ID, `CSeq`) arriving again by another path.
    fn is_merged(&self, request: &Request) -> bool {
        let headers = &request.headers;
        match (headers.call_id(), headers.from(), headers.cseq()) {
            (Ok(call_id), Ok(from), Ok(cseq)) => from.tag().is_some_and(|tag| {
                self.caller_invites
                    .get(&(call_id.to_owned(), tag.to_owned()))
                    .is_some_and(|(_, seq)| *seq == cseq.seq)
            }),
            _ => false,
        }
    }

    fn new_branch(&self) -> String {
        // Our own prefix marks requests we sent, for loop detection.
        let fresh = new_branch();
        format!(
            "{}{}",
            self.branch_prefix,
            fresh.trim_start_matches("z9hG4bK")
        )
    }

    // ----- relay ------------------------------------------------------------------------------

    /// Queues a PUT of the call's current media (coalesced: one request in flight per call).
    fn program_relay(&mut self, id: &str) {
        let timeout = self.config.relay.media_timeout_secs;
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.phase == Phase::Ending {
            return;
        }
        match media::session_spec(&call.media, &call.a.interface, &call.b.interface, timeout) {
            Ok(spec) => {
                call.relay_used = true;
                Self::queue_relay(&mut self.outputs, call, RelayRequest::Put(spec));
            }
            Err(reason) => warn!(call = id, %reason, "relay session not expressible"),
        }
    }

    fn queue_relay(outputs: &mut VecDeque<Output>, call: &mut Call, request: RelayRequest) {
        if call.relay_in_flight {
            // A delete supersedes anything queued; a put replaces an older put.
            if !matches!(call.relay_next, Some(RelayRequest::Delete)) {
                call.relay_next = Some(request);
            }
            return;
        }
        call.relay_in_flight = true;
        outputs.push_back(Output::Relay {
            call: call.id.clone(),
            request,
        });
    }

    /// relayd answered the call's request.
    pub fn handle_relay_reply(
        &mut self,
        now: Instant,
        unix_ms: u64,
        call_id: &str,
        result: RelayResult,
    ) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        call.relay_in_flight = false;
        let ending = call.phase == Phase::Ending;
        if ending && call.relay_next.is_none() {
            // The delete's reply (or the last put before it): finalize.
            match &result {
                Ok(Some(view)) => call.relay_view = Some(view.clone()),
                Ok(None) => {}
                Err(reason) => {
                    self.stats.relay_errors += 1;
                    warn!(call = call_id, %reason, "relayd session delete failed");
                }
            }
            self.finish(now, unix_ms, call_id);
            return;
        }
        match result {
            Ok(view) => {
                if let Some(view) = view {
                    call.relay_view = Some(view);
                }
                if let Some(next) = call.relay_next.take() {
                    call.relay_in_flight = true;
                    self.outputs.push_back(Output::Relay {
                        call: call_id.to_owned(),
                        request: next,
                    });
                    return;
                }
                match call.phase {
                    Phase::OfferRelay => self.send_callee_invite(now, unix_ms, call_id),
                    Phase::AnswerRelay => self.answer_caller(now, unix_ms, call_id),
                    _ => {
                        self.continue_delayed_answer(now, unix_ms, call_id);
                        self.continue_reinvite(now, unix_ms, call_id);
                    }
                }
            }
            Err(reason) => {
                self.stats.relay_errors += 1;
                warn!(call = call_id, %reason, "relayd request failed");
                if let Some(next) = call.relay_next.take() {
                    call.relay_in_flight = true;
                    self.outputs.push_back(Output::Relay {
                        call: call_id.to_owned(),
                        request: next,
                    });
                    return;
                }
                match call.phase {
                    Phase::OfferRelay => {
                        self.fail_caller(
                            now,
                            unix_ms,
                            call_id,
                            503,
                            "Media Relay Unavailable",
                            "relay_error",
                        );
                    }
                    Phase::AnswerRelay => {
                        self.hang_up_both(now, unix_ms, call_id, "relay_error");
                    }
                    Phase::Confirmed if call.reinvite.as_ref().is_some_and(|re| re.answered) => {
                        // The other leg already moved to the new media, relayd did not: the
                        // re-INVITE cannot be completed and the media is broken.
                        self.refuse_reinvite(now, unix_ms, call_id, 500, "Media Relay Failure");
                        self.hang_up_both(now, unix_ms, call_id, "relay_error");
                    }
                    _ => {}
                }
            }
        }
    }

    // ----- callee INVITE ----------------------------------------------------------------------

    fn send_callee_invite(&mut self, now: Instant, unix_ms: u64, id: &str) {
        let branch = self.new_branch();
        let identity = self.identity.clone();
        let user_agent = self.config.sip.user_agent.clone();
        let delayed = self.calls.get(id).is_some_and(|c| c.delayed_offer);
        let body = if delayed {
            None
        } else {
            match self.sdp_to(id, Side::B, true) {
                Ok(body) => Some(body),
                Err((status, reason)) => {
                    return self.fail_caller(now, unix_ms, id, status, &reason, "sdp_error");
                }
            }
        };
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let max_forwards = call
            .a_invite_request
            .headers
            .max_forwards()
            .ok()
            .flatten()
            .unwrap_or(70)
            .saturating_sub(1)
            .min(70);
        call.b.local_cseq = 1;
        let Some(uri) = call.b.remote_target.clone() else {
            return;
        };
        let transport = call.b.transport().clone();
        let mut request = Request::new(Method::Invite, uri)
            .with_header("Via", identity.via(&transport, &branch))
            .with_header("Max-Forwards", max_forwards.to_string())
            .with_header(
                "From",
                format!("{};tag={}", call.b.local_uri, call.b.local_tag),
            )
            .with_header("To", call.b.remote_uri.clone())
            .with_header("Call-ID", call.b.call_id.clone())
            .with_header("CSeq", "1 INVITE")
            .with_header(
                "Contact",
                identity.contact(&transport, &call.id, call.b.sips),
            )
            .with_header("Allow", ALLOW)
            .with_header("User-Agent", user_agent);
        if let Some(body) = body {
            request = request.with_body("application/sdp", body);
        }
        call.b_request = Some(request.clone());
        call.phase = Phase::Calling;
        match self.tx.send_request(now, request, call.b.flow.clone()) {
            Ok(tx) => {
                call.b_invite = Some(tx);
                self.clients
                    .insert(tx, (id.to_owned(), Side::B, Method::Invite));
            }
            Err(e) => {
                warn!(call = id, error = %e, "callee INVITE not sent");
                self.fail_caller(now, unix_ms, id, 500, "Server Internal Error", "internal");
            }
        }
    }

    fn on_response(
        &mut self,
        now: Instant,
        unix_ms: u64,
        tx: ClientTxId,
        response: Response,
        retransmission: bool,
    ) {
        // §9.1: a CANCEL waiting for the first provisional goes now (the call may be gone).
        if response.status > 100 && response.status < 200 && self.pending_cancels.remove(&tx) {
            if let Err(e) = self.tx.send_cancel(now, tx) {
                debug!(error = %e, "deferred CANCEL not sent");
            }
            return;
        }
        if self.relayed.contains_key(&tx) {
            // Relayed in-dialog requests are answered even when the call has ended since.
            return self.on_relayed_response(now, tx, &response);
        }
        let Some((call_id, side, method)) = self.clients.get(&tx).cloned() else {
            // A 2xx to an INVITE of a call that has ended: that dialog must not stay up.
            let is_invite = response
                .headers
                .cseq()
                .is_ok_and(|c| c.method == Method::Invite);
            if is_invite && (200..300).contains(&response.status) {
                if let Some(flow) = self.tx.client_target(tx).cloned() {
                    self.ack_and_bye(now, &response, flow, !retransmission);
                }
            }
            return;
        };
        match method {
            Method::Invite
                if side == Side::B
                    && self
                        .calls
                        .get(&call_id)
                        .is_some_and(|c| c.b_invite == Some(tx)) =>
            {
                self.on_callee_invite_response(now, unix_ms, &call_id, response, retransmission);
            }
            Method::Invite => {
                self.on_reinvite_response(now, unix_ms, &call_id, side, tx, &response);
            }
            Method::Bye | Method::Cancel => {}
            _ => self.on_relayed_response(now, tx, &response),
        }
    }

    fn on_callee_invite_response(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: &str,
        response: Response,
        retransmission: bool,
    ) {
        let status = response.status;
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if (200..300).contains(&status) {
            if call.phase == Phase::Ending {
                // Answered after a CANCEL or a failure: ACK it and end that dialog too (§15).
                let flow = call.b.flow.clone();
                return self.ack_and_bye(now, &response, flow, !retransmission);
            }
            // ACK every 2xx, retransmissions included (§13.2.2.4); with a delayed offer the
            // ACK carries our answer, so it waits for the caller's.
            if let (true, Some(ack)) = (retransmission, call.b_ack.as_ref()) {
                let (bytes, flow) = (ack.to_bytes(), call.b.flow.clone());
                self.tx.send_stateless(bytes, flow);
            } else if !call.delayed_offer && call.b_ack.is_none() {
                self.ack_callee(id, &response, None);
            }
            let Some(call) = self.calls.get_mut(id) else {
                return;
            };
            if retransmission || call.phase != Phase::Calling {
                return;
            }
            call.b.remote_tag = response
                .headers
                .to()
                .ok()
                .and_then(|to| to.tag().map(str::to_owned));
            call.b.remote_target = response
                .headers
                .contacts()
                .ok()
                .and_then(|c| c.into_iter().find_map(contact_uri))
                .or(call.b.remote_target.take());
            // UAC route set: Record-Route in reverse order (§12.1.2).
            call.b.route_set = response
                .headers
                .record_routes()
                .map(|r| r.iter().rev().map(ToString::to_string).collect())
                .unwrap_or_default();
            if call.delayed_offer {
                return self.on_callee_offer(now, unix_ms, id, response);
            }
            if let Err((code, reason)) = apply_answer(call, Side::B, &response.body) {
                warn!(call = id, code, %reason, "callee answer refused");
                call.final_response = None;
                self.send_bye(now, id, Side::B);
                return self.fail_caller(now, unix_ms, id, code, &reason, "callee_sdp_refused");
            }
            call.phase = Phase::AnswerRelay;
            call.final_response = Some(response);
            self.program_relay(id);
        } else if status >= 300 {
            if call.phase == Phase::Ending || call.phase == Phase::Confirmed {
                return;
            }
            // Another registered contact of the callee? (6xx is a global refusal, §21.6.)
            if status < 600 && !call.callee_cancelled && !call.alternates.is_empty() {
                return self.try_next_contact(now, unix_ms, id, status);
            }
            // Pass the failure on (3xx become 480: a B2BUA does not let callers redirect
            // through it to arbitrary targets).
            let (code, reason) = if status < 400 {
                (480, "Temporarily Unavailable".to_owned())
            } else {
                (status, response.reason.clone())
            };
            self.fail_caller(now, unix_ms, id, code, &reason, "rejected");
        } else if status > 100 {
            if call.phase != Phase::Calling {
                return;
            }
            // 18x: ringing to the caller; with SDP it is early media and goes through the
            // relay like an answer would (RFC 3261 §13.3.1.1, RFC 3960 gateway model).
            let early_sdp = !response.body.is_empty();
            if early_sdp {
                if let Err((code, reason)) = apply_answer(call, Side::B, &response.body) {
                    debug!(call = id, code, %reason, "early SDP refused; forwarding as ringing");
                    self.send_provisional(now, id, status, &response.reason, None);
                    return;
                }
                self.program_relay(id);
                let sdp = self.sdp_to(id, Side::A, false).ok();
                self.send_provisional(now, id, status, &response.reason.clone(), sdp);
            } else {
                self.send_provisional(now, id, status, &response.reason.clone(), None);
            }
        }
    }

    /// The callee's contact failed with `status`: a new callee dialog to the next registered
    /// contact (new Call-ID and tag; the relay session and the caller's side are unchanged).
    fn try_next_contact(&mut self, now: Instant, unix_ms: u64, id: &str, status: u16) {
        let host = self.identity.host.clone();
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.alternates.is_empty() {
            return;
        }
        let (uri, target) = call.alternates.remove(0);
        info!(call = id, status, next = %uri, "callee contact failed: trying the next one");
        self.dialogs
            .remove(&(call.b.call_id.clone(), call.b.local_tag.clone()));
        call.b.sips = uri.is_sips();
        call.b.flow = target;
        call.b.remote_uri = NameAddr::new(uri.clone()).to_string();
        call.b.remote_target = Some(uri);
        call.b.remote_tag = None;
        call.b.route_set.clear();
        call.b.remote_cseq = None;
        call.b.signalling = None;
        call.b.call_id = format!("{}@{host}", random_hex(12));
        call.b.local_tag = random_hex(8);
        call.b.origin_version = 1;
        call.b.sent_sdp = None;
        call.b_invite = None;
        call.b_ack = None;
        self.dialogs.insert(
            (call.b.call_id.clone(), call.b.local_tag.clone()),
            (id.to_owned(), Side::B),
        );
        self.send_callee_invite(now, unix_ms, id);
    }

    fn ack_callee(&mut self, id: &str, response: &Response, sdp: Option<Vec<u8>>) {
        let branch = self.new_branch();
        let identity = self.identity.clone();
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let to = response
            .headers
            .get("To")
            .map_or_else(|| call.b.remote_uri.clone(), str::to_owned);
        let uri = response
            .headers
            .contacts()
            .ok()
            .and_then(|c| c.into_iter().find_map(contact_uri))
            .or_else(|| call.b.remote_target.clone());
        let Some(uri) = uri else { return };
        let transport = call.b.transport().clone();
        let mut ack = Request::new(Method::Ack, uri)
            .with_header("Via", identity.via(&transport, &branch))
            .with_header("Max-Forwards", "70")
            .with_header(
                "From",
                format!("{};tag={}", call.b.local_uri, call.b.local_tag),
            )
            .with_header("To", to)
            .with_header("Call-ID", call.b.call_id.clone())
            .with_header("CSeq", "1 ACK");
        let routes: Vec<String> = response
            .headers
            .record_routes()
            .map(|r| r.iter().rev().map(ToString::to_string).collect())
            .unwrap_or_default();
        for route in routes {
            ack.headers.push("Route", route);
        }
        if let Some(sdp) = sdp {
            ack = ack.with_body("application/sdp", sdp);
        }
        let bytes = ack.to_bytes();
        call.b_ack = Some(ack);
        self.tx.send_stateless(bytes, call.b.flow.clone());
    }

    /// The SDP we send to `side`: the other leg's last SDP with every relay-owned line
    /// rewritten for `side` (our offer when `offering`, else our answer). The `o=` line is ours
    /// for the leg (RFC 3264 §8): same username and session id throughout, version bumped
    /// whenever the content changes.
    fn sdp_to(&mut self, id: &str, side: Side, offering: bool) -> Result<Vec<u8>, (u16, String)> {
        let internal = |reason: &str| (500, reason.to_owned());
        let call = self
            .calls
            .get_mut(id)
            .ok_or_else(|| internal("no such call"))?;
        let view = call
            .relay_view
            .clone()
            .ok_or_else(|| internal("relay session missing"))?;
        let (template, ch) = match side {
            Side::A => (call.b.last_sdp.clone(), 'a'),
            Side::B => (call.a.last_sdp.clone(), 'b'),
        };
        let template = Sdp::parse(&template).map_err(|e| (488, e.reason_phrase().to_owned()))?;
        let address =
            media::relay_address(&view, ch).ok_or_else(|| internal("relay leg missing"))?;
        let plans: Vec<MediaPlan> = call
            .media
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mux = if ch == 'a' { m.a_mux } else { m.b_mux };
                let (port, rtcp) = media::relay_port(&view, ch, i, mux);
                // RFC 5761 §5.1.1: offer mux with the RTCP port as a fallback.
                let rtcp = match rtcp {
                    RtcpPlan::Port(fallback) if offering && ch == 'b' && m.b_mux_offered => {
                        RtcpPlan::MuxWithFallback(fallback)
                    }
                    other => other,
                };
                let port = if m.active() { port } else { 0 };
                let plan = if offering {
                    m.offer
                        .as_ref()
                        .map(|o| MediaPlan::from_offer(o, port, rtcp))
                } else {
                    m.negotiated(ch)
                        .map(|n| MediaPlan::from_negotiated(n, port, rtcp))
                };
                plan.unwrap_or(MediaPlan {
                    port: 0,
                    proto: None,
                    crypto: Vec::new(),
                    rtcp,
                })
            })
            .collect();
        let leg = match side {
            Side::A => &mut call.a,
            Side::B => &mut call.b,
        };
        let render = |version: u64| {
            let plan = LegSdpPlan {
                address,
                origin: OriginUpdate {
                    version,
                    identity: Some(sdp::OriginIdentity {
                        username: "-",
                        session_id: leg.origin_session,
                        address,
                    }),
                },
                media: plans.clone(),
            };
            sdp::rewrite_for_leg(&template, &plan)
                .map(|s| s.to_bytes())
                .map_err(|e| (e.sip_status(), e.reason_phrase().to_owned()))
        };
        let mut body = render(leg.origin_version)?;
        if leg.sent_sdp.as_ref().is_some_and(|sent| *sent != body) {
            leg.origin_version += 1;
            body = render(leg.origin_version)?;
        }
        leg.sent_sdp = Some(body.clone());
        Ok(body)
    }

    fn caller_response(
        &self,
        call: &Call,
        status: u16,
        reason: &str,
        sdp: Option<Vec<u8>>,
    ) -> Response {
        let mut response = Response::from_request(&call.a_invite_request, status, Some(reason));
        let _ = response.set_to_tag(&call.a.local_tag);
        if (101..300).contains(&status) {
            response.headers.push(
                "Contact",
                self.identity
                    .contact(call.a.transport(), &call.id, call.a.sips),
            );
            for route in call.a_invite_request.headers.get_all("Record-Route") {
                response.headers.push("Record-Route", route);
            }
        }
        if status >= 200 {
            response.headers.push("Allow", ALLOW);
        }
        response
            .headers
            .push("Server", self.config.sip.user_agent.as_str());
        if let Some(body) = sdp {
            response.headers.push("Content-Type", "application/sdp");
            response.body = body;
        }
        response
    }

    fn send_provisional(
        &mut self,
        now: Instant,
        id: &str,
        status: u16,
        reason: &str,
        sdp: Option<Vec<u8>>,
    ) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let Some(tx) = call.a_invite else { return };
        let response = self.caller_response(call, status, reason, sdp);
        self.respond(now, tx, &response);
    }

    fn answer_caller(&mut self, now: Instant, unix_ms: u64, id: &str) {
        // With a delayed offer our 2xx carries the offer (the callee's, rewritten).
        let offering = self.calls.get(id).is_some_and(|c| c.delayed_offer);
        let sdp = match self.sdp_to(id, Side::A, offering) {
            Ok(sdp) => sdp,
            Err((status, reason)) => {
                self.send_bye(now, id, Side::B);
                return self.fail_caller(now, unix_ms, id, status, &reason, "sdp_error");
            }
        };
        let sdp = Some(sdp);
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let Some(tx) = call.a_invite else { return };
        let response = self.caller_response(call, 200, "OK", sdp);
        let reliable = call.a.flow.transport != Transport::Udp;
        self.respond(now, tx, &response);
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        call.phase = Phase::Confirmed;
        if let Some(at) = call.ring_deadline.take() {
            self.timers.remove(&(at, id.to_owned()));
        }
        call.record.state = CallState::Confirmed;
        call.record.status = Some(200);
        call.record.answered_unix_ms = Some(unix_ms);
        self.stats.calls_answered += 1;
        // §13.3.1.4: retransmit over UDP until the ACK; on any transport, no ACK within
        // 64*T1 ends the call (a reliable transport only skips the retransmissions).
        {
            let next = if reliable { now + T1 * 64 } else { now + T1 };
            call.ok = Some(OkRetransmit {
                side: Side::A,
                tx: Some(tx),
                response,
                next,
                interval: T1,
                give_up: now + T1 * 64,
            });
            self.timers.insert((next, id.to_owned()));
        }
        info!(call = id, "call answered");
        self.publish(id);
    }

    fn on_ack(&mut self, now: Instant, unix_ms: u64, request: &Request, _source: &Target) {
        let (Ok(call_id), Ok(to)) = (request.headers.call_id(), request.headers.to()) else {
            return;
        };
        let Some(tag) = to.tag() else { return };
        let Some((id, side)) = self
            .dialogs
            .get(&(call_id.to_owned(), tag.to_owned()))
            .cloned()
        else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(ok) = call.ok.take_if(|ok| ok.side == side) {
            self.timers.remove(&(ok.next, id.clone()));
        }
        if side == Side::A && call.callee_ack_pending.is_some() && !call.caller_answered {
            // Delayed offer: the caller's ACK carries its answer (§13.2.1).
            if request.body.is_empty() {
                warn!(call = %id, "delayed offer: the caller's ACK carries no answer");
                return self.hang_up_both(now, unix_ms, &id, "caller_sent_no_answer");
            }
            if let Err((status, reason)) = apply_answer(call, Side::A, &request.body) {
                warn!(call = %id, status, %reason, "delayed offer: the caller's answer is refused");
                return self.hang_up_both(now, unix_ms, &id, "caller_sdp_refused");
            }
            call.caller_answered = true;
            self.program_relay(&id);
        }
    }

    /// Delayed offer: the callee's 2xx carried its offer. We answer it (leg `b` keys), offer
    /// the caller (leg `a`), program relayd and then send the caller our offer in the 2xx.
    fn on_callee_offer(&mut self, now: Instant, unix_ms: u64, id: &str, response: Response) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let negotiated = Sdp::parse(&response.body)
            .map_err(|e| (488, e.reason_phrase().to_owned()))
            .and_then(|offer| {
                negotiate_offer(&offer, &call.b.settings, &call.a.settings)
                    .map(|media| media.into_iter().map(MediaState::reversed).collect())
            });
        let media: Vec<MediaState> = match negotiated {
            Ok(media) if !response.body.is_empty() => media,
            Ok(_) | Err(_) => {
                let reason = match &negotiated {
                    Err((_, reason)) => reason.clone(),
                    Ok(_) => "callee answered an offerless INVITE without an offer".to_owned(),
                };
                warn!(call = id, %reason, "delayed offer: the callee's offer is refused");
                self.ack_callee(id, &response, None);
                self.send_bye(now, id, Side::B);
                return self.fail_caller(now, unix_ms, id, 488, &reason, "callee_sdp_refused");
            }
        };
        call.media = media;
        call.b.last_sdp.clone_from(&response.body);
        call.phase = Phase::AnswerRelay;
        call.callee_ack_pending = Some(response.clone());
        call.final_response = Some(response);
        self.program_relay(id);
    }

    /// Delayed offer: the caller's answer is programmed; ACK the callee with ours.
    fn continue_delayed_answer(&mut self, now: Instant, unix_ms: u64, id: &str) {
        let ready = self
            .calls
            .get(id)
            .is_some_and(|c| c.caller_answered && c.callee_ack_pending.is_some());
        if !ready {
            return;
        }
        let Some(response) = self
            .calls
            .get_mut(id)
            .and_then(|c| c.callee_ack_pending.take())
        else {
            return;
        };
        match self.sdp_to(id, Side::B, false) {
            Ok(sdp) => self.ack_callee(id, &response, Some(sdp)),
            Err((_, reason)) => {
                warn!(call = id, %reason, "delayed offer: no answer for the callee");
                self.ack_callee(id, &response, None);
                self.hang_up_both(now, unix_ms, id, "sdp_error");
            }
        }
        self.publish(id);
    }

    fn on_stray_response(&mut self, now: Instant, response: &Response) {
        // A 2xx retransmission for a dialog whose INVITE transaction has gone: ACK it again.
        if !(200..300).contains(&response.status) {
            return;
        }
        let Ok(cseq) = response.headers.cseq() else {
            return;
        };
        if cseq.method != Method::Invite {
            return;
        }
        let (Ok(call_id), Ok(from)) = (response.headers.call_id(), response.headers.from()) else {
            return;
        };
        let Some(tag) = from.tag() else { return };
        if let Some((id, side)) = self
            .dialogs
            .get(&(call_id.to_owned(), tag.to_owned()))
            .cloned()
        {
            if side == Side::B && cseq.seq == 1 {
                // The callee's answer to our first INVITE: the same ACK again.
                if let Some(ack) = self
                    .calls
                    .get(&id)
                    .and_then(|c| c.b_ack.clone().map(|a| (a, c.b.flow.clone())))
                {
                    self.tx.send_stateless(ack.0.to_bytes(), ack.1);
                }
            } else {
                // A 2xx to one of our re-INVITEs in a live dialog.
                self.ack_in_dialog(&id, side, response);
            }
            return;
        }
        // Not a live dialog, but the INVITE of a call that ended before this 2xx: ACK and BYE
        // it where that INVITE went (a forged 2xx cannot aim us at another address).
        let target = response.headers.top_via().ok().and_then(|via| {
            via.branch()
                .and_then(|b| self.ended_invites.get(b))
                .cloned()
        });
        if let Some(target) = target {
            self.ack_and_bye(now, response, target, true);
        }
    }

    /// Remembers the callee INVITE of a call that has ended, for late 2xx responses.
    fn remember_ended_invite(&mut self, now: Instant, call: &Call) {
        /// Bound on remembered INVITEs (the oldest go first).
        const MAX_ENDED_INVITES: usize = 100_000;
        while let Some((at, branch)) = self.ended_invites_order.front() {
            if *at > now && self.ended_invites_order.len() < MAX_ENDED_INVITES {
                break;
            }
            self.ended_invites.remove(branch);
            self.ended_invites_order.pop_front();
        }
        let branch = call
            .b_request
            .as_ref()
            .and_then(|r| r.headers.top_via().ok())
            .and_then(|via| via.branch().map(str::to_owned));
        if let Some(branch) = branch {
            self.ended_invites
                .insert(branch.clone(), call.b.flow.clone());
            self.ended_invites_order.push_back((now + T1 * 64, branch));
        }
    }

    fn on_tx_failure(&mut self, now: Instant, unix_ms: u64, id: TxId) {
        match id {
            TxId::Client(client) => {
                if let Some((server, request)) = self.relayed.remove(&client) {
                    // The other leg never answered the relayed request (§8.1.3.1: 408).
                    let response = Response::from_request(&request, 408, Some("Request Timeout"));
                    self.respond(now, server, &response);
                }
                let Some((call_id, _, method)) = self.clients.remove(&client) else {
                    return;
                };
                let is_invite = self
                    .calls
                    .get(&call_id)
                    .is_some_and(|c| c.b_invite == Some(client));
                if method == Method::Invite && is_invite {
                    let hunt = self.calls.get(&call_id).is_some_and(|c| {
                        c.phase == Phase::Calling && !c.callee_cancelled && !c.alternates.is_empty()
                    });
                    if hunt {
                        self.try_next_contact(now, unix_ms, &call_id, 408);
                    } else if self
                        .calls
                        .get(&call_id)
                        .is_some_and(|c| c.phase == Phase::Calling)
                    {
                        self.fail_caller(
                            now,
                            unix_ms,
                            &call_id,
                            408,
                            "Request Timeout",
                            "callee_timeout",
                        );
                    }
                } else if method == Method::Invite {
                    // A re-INVITE got no answer: the dialog is gone (§14.1).
                    self.refuse_reinvite(now, unix_ms, &call_id, 408, "Request Timeout");
                    self.hang_up_both(now, unix_ms, &call_id, "reinvite_timeout");
                }
            }
            TxId::Server(server) => {
                // No ACK for a failure response: the transaction ends; nothing else to do.
                self.server_invites.remove(&server);
            }
        }
    }

    // ----- CANCEL, BYE, failures ------------------------------------------------------------------

    fn on_cancel(&mut self, now: Instant, unix_ms: u64, id: ServerTxId, request: &Request) {
        let Some(invite) = self.tx.find_invite_server_for_cancel(request) else {
            return self.reject(now, id, request, 481, "Call/Transaction Does Not Exist");
        };
        let ok = Response::from_request(request, 200, None);
        self.respond(now, id, &ok);
        let Some(call_id) = self.server_invites.get(&invite).cloned() else {
            return;
        };
        let phase = self.calls.get(&call_id).map(|c| c.phase);
        if matches!(
            phase,
            Some(Phase::OfferRelay | Phase::Calling | Phase::AnswerRelay)
        ) {
            self.cancel_callee(now, &call_id);
            self.fail_caller(now, unix_ms, &call_id, 487, "Request Terminated", "cancel");
        }
    }

    fn cancel_callee(&mut self, now: Instant, id: &str) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        match (call.phase, call.b_invite) {
            (Phase::Calling, Some(tx)) if !call.callee_cancelled => {
                call.callee_cancelled = true;
                match self.tx.send_cancel(now, tx) {
                    Ok(cancel) => {
                        self.clients
                            .insert(cancel, (id.to_owned(), Side::B, Method::Cancel));
                    }
                    // §9.1: no provisional yet, CANCEL once one arrives.
                    Err(sip::transaction::TxError::NoProvisionalYet) => {
                        self.pending_cancels.insert(tx);
                    }
                    // A final response arrived or the transaction is gone: nothing to cancel.
                    Err(e) => debug!(call = id, error = %e, "CANCEL not sent"),
                }
            }
            (Phase::AnswerRelay, _) => {
                // The callee already answered: end that dialog.
                self.send_bye(now, id, Side::B);
            }
            _ => {}
        }
    }

    /// Fails the caller's INVITE with `status` and ends the call.
    fn fail_caller(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: &str,
        status: u16,
        reason: &str,
        end: &str,
    ) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        if let Some(tx) = call.a_invite {
            if call.phase != Phase::Confirmed {
                let response = self.caller_response(call, status, reason, None);
                self.respond(now, tx, &response);
            }
        }
        if let Some(call) = self.calls.get_mut(id) {
            call.record.status = Some(status);
        }
        self.end_call(now, unix_ms, id, end);
    }

    /// Sends BYE on both legs (as far as they exist) and ends the call.
    fn hang_up_both(&mut self, now: Instant, unix_ms: u64, id: &str, reason: &str) {
        let phase = self.calls.get(id).map(|c| c.phase);
        match phase {
            Some(Phase::Confirmed) => {
                self.send_bye(now, id, Side::A);
                self.send_bye(now, id, Side::B);
            }
            Some(Phase::AnswerRelay) => {
                self.send_bye(now, id, Side::B);
                self.fail_caller(now, unix_ms, id, 500, "Media Relay Failure", reason);
                return;
            }
            Some(Phase::Calling | Phase::OfferRelay) => {
                self.cancel_callee(now, id);
                self.fail_caller(now, unix_ms, id, 500, "Server Internal Error", reason);
                return;
            }
            _ => {}
        }
        self.end_call(now, unix_ms, id, reason);
    }

    fn send_bye(&mut self, now: Instant, id: &str, side: Side) {
        let branch = self.new_branch();
        let identity = self.identity.clone();
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let leg = match side {
            Side::A => &mut call.a,
            Side::B => &mut call.b,
        };
        let Some(bye) = dialog_request(&identity, leg, &branch, Method::Bye, leg.local_cseq + 1)
        else {
            return;
        };
        leg.local_cseq += 1;
        let flow = leg.flow.clone();
        match self.tx.send_request(now, bye, flow) {
            Ok(tx) => {
                self.clients.insert(tx, (id.to_owned(), side, Method::Bye));
            }
            Err(e) => debug!(call = id, error = %e, "BYE not sent"),
        }
    }

    /// Marks the call ending and deletes its relay session; [`Self::finish`] completes it.
    fn end_call(&mut self, now: Instant, unix_ms: u64, id: &str, reason: &str) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        if call.phase == Phase::Ending {
            return;
        }
        if call.reinvite.is_some() {
            // A re-INVITE still waiting for the other leg gets its final response now.
            self.refuse_reinvite(now, unix_ms, id, 487, "Request Terminated");
        }
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        info!(call = id, reason, "call ending");
        call.phase = Phase::Ending;
        if let Some(ok) = call.ok.take() {
            self.timers.remove(&(ok.next, id.to_owned()));
        }
        if let Some(at) = call.ring_deadline.take() {
            self.timers.remove(&(at, id.to_owned()));
        }
        call.record.end_reason = Some(reason.to_owned());
        call.record.ended_unix_ms = Some(unix_ms);
        if call.relay_used {
            Self::queue_relay(&mut self.outputs, call, RelayRequest::Delete);
        } else {
            self.finish(now, unix_ms, id);
        }
    }

    fn finish(&mut self, now: Instant, unix_ms: u64, id: &str) {
        let Some(mut call) = self.calls.remove(id) else {
            return;
        };
        // (`end_call` already took the call's timers.)
        self.remember_ended_invite(now, &call);
        self.dialogs
            .remove(&(call.a.call_id.clone(), call.a.local_tag.clone()));
        if let Some(tag) = call.a.remote_tag.clone() {
            let key = (call.a.call_id.clone(), tag);
            if self.caller_invites.get(&key).is_some_and(|(c, _)| c == id) {
                self.caller_invites.remove(&key);
            }
        }
        self.dialogs
            .remove(&(call.b.call_id.clone(), call.b.local_tag.clone()));
        self.server_invites.retain(|_, c| c != id);
        self.server_reinvites.retain(|_, c| c != id);
        self.clients.retain(|_, (c, _, _)| c != id);
        if call.record.ended_unix_ms.is_none() {
            call.record.ended_unix_ms = Some(unix_ms);
        }
        call.record.state = CallState::Terminated;
        Self::fill_record(&mut call);
        if call.record.answered_unix_ms.is_none() {
            self.stats.calls_failed += 1;
        }
        if call.record.secure_end_to_end {
            self.stats.calls_secure += 1;
        }
        self.outputs.push_back(Output::CallEnded(call.record));
    }

    fn fill_record(call: &mut Call) {
        let counters = |side: char| {
            call.relay_view.as_ref().map(|view| {
                view.legs
                    .iter()
                    .filter(|leg| leg.id.starts_with(side))
                    .fold((0, 0, 0), |(i, o, a), leg| {
                        (
                            i + leg.counters.packets_in,
                            o + leg.counters.packets_out,
                            a + leg.counters.auth_failures,
                        )
                    })
            })
        };
        let mut legs = Vec::new();
        for (leg, side) in [(&call.a, 'a'), (&call.b, 'b')] {
            let (inbound_suite, outbound_suite) = media::suites(&call.media, side);
            let (packets_in, packets_out, auth_failures) = counters(side).unwrap_or_default();
            legs.push(LegVerdict {
                role: leg.role,
                peer: leg.peer.clone(),
                signalling: leg.signalling.clone(),
                media: Media {
                    inbound_suite,
                    outbound_suite,
                    packets_in,
                    packets_out,
                    auth_failures,
                },
                secure: false,
            });
        }
        call.record.legs = legs;
        call.record.refresh();
    }

    fn publish(&mut self, id: &str) {
        if let Some(call) = self.calls.get_mut(id) {
            Self::fill_record(call);
            self.outputs
                .push_back(Output::CallUpdated(call.record.clone()));
        }
    }

    fn call_timer(&mut self, now: Instant, unix_ms: u64, id: &str) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if let Some(ok) = &mut call.ok {
            if now >= ok.give_up {
                // §13.3.1.4: no ACK for 64*T1: the session is over.
                call.ok = None;
                return self.hang_up_both(now, unix_ms, id, "no_ack");
            }
            if now >= ok.next {
                let response = ok.response.clone();
                ok.interval = (ok.interval * 2).min(T2);
                // The last wait ends at 64*T1 itself, when the call is given up.
                ok.next = (now + ok.interval).min(ok.give_up);
                let next = ok.next;
                let flow = match ok.side {
                    Side::A => call.a.flow.clone(),
                    Side::B => call.b.flow.clone(),
                };
                let sent = ok
                    .tx
                    .is_some_and(|tx| self.tx.respond(now, tx, &response).is_ok());
                if !sent {
                    // The transaction is gone (Timer L): the TU sends it itself.
                    self.tx.send_stateless(response.to_bytes(), flow);
                }
                self.timers.insert((next, id.to_owned()));
            }
        }
        let Some(call) = self.calls.get(id) else {
            return;
        };
        if call.ring_deadline.is_some_and(|at| now >= at)
            && matches!(call.phase, Phase::Calling | Phase::OfferRelay)
        {
            self.cancel_callee(now, id);
            self.fail_caller(
                now,
                unix_ms,
                id,
                408,
                "Request Timeout (no answer)",
                "ring_timeout",
            );
        }
        self.process_tx_events(now, unix_ms);
    }

    // ----- in-dialog requests -----------------------------------------------------------------

    fn on_in_dialog(&mut self, now: Instant, unix_ms: u64, id: ServerTxId, request: Request) {
        let (Ok(call_id), Ok(to)) = (request.headers.call_id(), request.headers.to()) else {
            return self.reject(now, id, &request, 400, "Bad Request");
        };
        let tag = to.tag().unwrap_or_default().to_owned();
        let Some((call, side)) = self.dialogs.get(&(call_id.to_owned(), tag)).cloned() else {
            if request.method == Method::Ack {
                return;
            }
            return self.reject(now, id, &request, 481, "Call/Transaction Does Not Exist");
        };
        // §12.2.2: CSeq must grow.
        if let (Ok(cseq), Some(c)) = (request.headers.cseq(), self.calls.get_mut(&call)) {
            let leg = match side {
                Side::A => &mut c.a,
                Side::B => &mut c.b,
            };
            if leg.remote_cseq.is_some_and(|last| cseq.seq <= last) {
                return self.reject(now, id, &request, 500, "CSeq Out of Order");
            }
            leg.remote_cseq = Some(cseq.seq);
            if leg.remote_tag.is_none() {
                leg.remote_tag = request
                    .headers
                    .from()
                    .ok()
                    .and_then(|f| f.tag().map(str::to_owned));
            }
        }
        match request.method {
            Method::Bye => {
                let ok = Response::from_request(&request, 200, None);
                self.respond(now, id, &ok);
                let reason = if side == Side::A {
                    "bye_caller"
                } else {
                    "bye_callee"
                };
                let phase = self.calls.get(&call).map(|c| c.phase);
                match phase {
                    Some(Phase::Confirmed) => {
                        self.send_bye(now, &call, side.other());
                        self.end_call(now, unix_ms, &call, reason);
                    }
                    Some(Phase::Calling | Phase::OfferRelay | Phase::AnswerRelay)
                        if side == Side::A =>
                    {
                        self.cancel_callee(now, &call);
                        self.fail_caller(now, unix_ms, &call, 487, "Request Terminated", reason);
                    }
                    Some(Phase::Calling | Phase::AnswerRelay) => {
                        // The callee ended its dialog before the caller was answered.
                        self.fail_caller(
                            now,
                            unix_ms,
                            &call,
                            480,
                            "Temporarily Unavailable",
                            reason,
                        );
                    }
                    _ => self.end_call(now, unix_ms, &call, reason),
                }
            }
            Method::Invite => self.on_reinvite(now, unix_ms, id, &request, &call, side),
            Method::Options => {
                let mut ok = Response::from_request(&request, 200, None);
                ok.headers.push("Allow", ALLOW);
                self.respond(now, id, &ok);
            }
            Method::Info => self.relay_request(now, id, request, &call, side),
            Method::Update | Method::Prack => {
                self.reject(now, id, &request, 501, "Not Implemented");
            }
            _ => self.reject(now, id, &request, 405, "Method Not Allowed"),
        }
    }

    /// Carries an in-dialog request (INFO) to the other leg; its final response comes back.
    fn relay_request(
        &mut self,
        now: Instant,
        id: ServerTxId,
        request: Request,
        call_id: &str,
        side: Side,
    ) {
        let Some(mut out) = self.in_dialog_request(call_id, side.other(), &request.method) else {
            return self.reject(now, id, &request, 481, "Call/Transaction Does Not Exist");
        };
        if !request.body.is_empty() {
            let content_type = request
                .headers
                .get("Content-Type")
                .unwrap_or("application/octet-stream")
                .to_owned();
            out = out.with_body(&content_type, request.body.clone());
        }
        let flow = self.leg(call_id, side.other()).map(|l| l.flow.clone());
        let Some(flow) = flow else { return };
        match self.tx.send_request(now, out, flow) {
            Ok(tx) => {
                self.clients.insert(
                    tx,
                    (call_id.to_owned(), side.other(), request.method.clone()),
                );
                self.relayed.insert(tx, (id, request));
            }
            Err(_) => self.reject(now, id, &request, 500, "Server Internal Error"),
        }
    }

    fn on_relayed_response(&mut self, now: Instant, tx: ClientTxId, response: &Response) {
        if response.status < 200 {
            return;
        }
        if let Some((server, request)) = self.relayed.remove(&tx) {
            let reason = response.reason.clone();
            let mut out = Response::from_request(&request, response.status, Some(&reason));
            out.headers.push("Allow", ALLOW);
            self.respond(now, server, &out);
        }
    }

    // ----- re-INVITE ----------------------------------------------------------------------------

    /// A re-INVITE from `side` (hold, resume, re-key, address change, session refresh): we
    /// answer it only after the other leg accepted our matching re-offer and relayd carries
    /// the new media (RFC 3261 §14, RFC 4568 §7.1.4).
    fn on_reinvite(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: ServerTxId,
        request: &Request,
        call_id: &str,
        side: Side,
    ) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        if call.phase != Phase::Confirmed {
            return self.reject(now, id, request, 491, "Request Pending");
        }
        if let Some(re) = &call.reinvite {
            if re.from == side {
                // §14.2: their previous INVITE is still unanswered: 500 with a Retry-After
                // of 0 to 10 seconds.
                let mut response =
                    Response::from_request(request, 500, Some("Previous INVITE Pending"));
                response
                    .headers
                    .push("Retry-After", (random_bytes8()[0] % 11).to_string());
                self.stats.rejected += 1;
                return self.respond(now, id, &response);
            }
            // §14.2: glare with our own re-INVITE on this dialog.
            return self.reject(now, id, request, 491, "Request Pending");
        }
        if request.body.is_empty() {
            // Offerless re-INVITE (a session refresh): our current SDP is the offer, and the
            // answer in the ACK leaves the media as it is.
            let sdp = match self.sdp_to(call_id, side, false) {
                Ok(sdp) => sdp,
                Err((status, reason)) => return self.reject(now, id, request, status, &reason),
            };
            return self.answer_reinvite(now, call_id, side, id, request, sdp);
        }
        let offer = match Sdp::parse(&request.body) {
            Ok(offer) => offer,
            Err(e) => return self.reject(now, id, request, e.sip_status(), e.reason_phrase()),
        };
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if offer.media().len() != call.media.len() {
            return self.reject(
                now,
                id,
                request,
                488,
                "Changing the number of media streams is not supported",
            );
        }
        let (settings, other_settings) = match side {
            Side::A => (call.a.settings.clone(), call.b.settings.clone()),
            Side::B => (call.b.settings.clone(), call.a.settings.clone()),
        };
        let previous = call.media.clone();
        let updated = match renegotiate(&call.media, &offer, side, &settings, &other_settings) {
            Ok(updated) => updated,
            Err((status, reason)) => return self.reject(now, id, request, status, &reason),
        };
        call.media = updated;
        let leg = match side {
            Side::A => &mut call.a,
            Side::B => &mut call.b,
        };
        let previous_sdp = std::mem::replace(&mut leg.last_sdp, request.body.clone());
        // §12.2.2: a re-INVITE refreshes the remote target.
        if let Some(target) = contact_target(&request.headers) {
            leg.remote_target = Some(target);
        }
        call.reinvite = Some(ReInvite {
            from: side,
            server_tx: id,
            request: request.clone(),
            client_tx: None,
            answered: false,
            previous,
            previous_sdp,
        });
        self.server_reinvites.insert(id, call_id.to_owned());
        let body = match self.sdp_to(call_id, side.other(), true) {
            Ok(body) => body,
            Err((status, reason)) => {
                return self.refuse_reinvite(now, unix_ms, call_id, status, &reason)
            }
        };
        let Some(out) = self.in_dialog_request(call_id, side.other(), &Method::Invite) else {
            return self.refuse_reinvite(now, unix_ms, call_id, 500, "Dialog incomplete");
        };
        let out = out.with_body("application/sdp", body);
        let Some(flow) = self.leg(call_id, side.other()).map(|l| l.flow.clone()) else {
            return;
        };
        match self.tx.send_request(now, out, flow) {
            Ok(tx) => {
                self.clients
                    .insert(tx, (call_id.to_owned(), side.other(), Method::Invite));
                if let Some(re) = self
                    .calls
                    .get_mut(call_id)
                    .and_then(|c| c.reinvite.as_mut())
                {
                    re.client_tx = Some(tx);
                }
            }
            Err(_) => self.refuse_reinvite(now, unix_ms, call_id, 500, "Server Internal Error"),
        }
    }

    /// Answers the pending re-INVITE with `status`, restoring the media state.
    fn refuse_reinvite(
        &mut self,
        now: Instant,
        _unix_ms: u64,
        call_id: &str,
        status: u16,
        reason: &str,
    ) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(re) = call.reinvite.take() else {
            return;
        };
        call.media = re.previous;
        match re.from {
            Side::A => call.a.last_sdp = re.previous_sdp,
            Side::B => call.b.last_sdp = re.previous_sdp,
        }
        let mut response = Response::from_request(&re.request, status, Some(reason));
        response.headers.push("Allow", ALLOW);
        self.stats.rejected += 1;
        self.respond(now, re.server_tx, &response);
    }

    /// 200 to a re-INVITE from `side`, retransmitted over UDP until its ACK.
    fn answer_reinvite(
        &mut self,
        now: Instant,
        call_id: &str,
        side: Side,
        tx: ServerTxId,
        request: &Request,
        sdp: Vec<u8>,
    ) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let leg = if side == Side::A { &call.a } else { &call.b };
        let mut response = Response::from_request(request, 200, None);
        response.headers.push(
            "Contact",
            self.identity.contact(leg.transport(), call_id, leg.sips),
        );
        response.headers.push("Allow", ALLOW);
        response.headers.push("Content-Type", "application/sdp");
        response.body = sdp;
        let reliable = leg.flow.transport != Transport::Udp;
        self.respond(now, tx, &response);
        {
            let Some(call) = self.calls.get_mut(call_id) else {
                return;
            };
            let next = if reliable { now + T1 * 64 } else { now + T1 };
            call.ok = Some(OkRetransmit {
                side,
                tx: Some(tx),
                response,
                next,
                interval: T1,
                give_up: now + T1 * 64,
            });
            self.timers.insert((next, call_id.to_owned()));
        }
    }

    fn on_reinvite_response(
        &mut self,
        now: Instant,
        unix_ms: u64,
        call_id: &str,
        side: Side,
        tx: ClientTxId,
        response: &Response,
    ) {
        if response.status < 200 {
            return;
        }
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let ours = call
            .reinvite
            .as_ref()
            .is_some_and(|re| re.client_tx == Some(tx));
        if (200..300).contains(&response.status) {
            // §12.2.1.2: a 2xx to a re-INVITE refreshes the remote target.
            if let Some(target) = contact_target(&response.headers) {
                match side {
                    Side::A => call.a.remote_target = Some(target),
                    Side::B => call.b.remote_target = Some(target),
                }
            }
            self.ack_in_dialog(call_id, side, response);
            let Some(call) = self.calls.get_mut(call_id) else {
                return;
            };
            if !ours || call.reinvite.as_ref().is_some_and(|re| re.answered) {
                return;
            }
            if let Err((status, reason)) = apply_answer(call, side, &response.body) {
                warn!(call = call_id, status, %reason, "re-INVITE answer refused: ending the call");
                self.refuse_reinvite(now, unix_ms, call_id, status, &reason);
                return self.hang_up_both(now, unix_ms, call_id, "reinvite_sdp_refused");
            }
            if let Some(re) = call.reinvite.as_mut() {
                re.answered = true;
            }
            self.program_relay(call_id);
        } else if ours {
            let reason = response.reason.clone();
            self.refuse_reinvite(now, unix_ms, call_id, response.status, &reason);
            // §14.1: 481 or 408 to a re-INVITE ends the dialog.
            if matches!(response.status, 408 | 481) {
                self.hang_up_both(now, unix_ms, call_id, "reinvite_failed");
            }
        }
    }

    /// relayd carries the re-negotiated media: answer the re-INVITE's sender.
    fn continue_reinvite(&mut self, now: Instant, unix_ms: u64, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(re) = call.reinvite.as_ref() else {
            return;
        };
        if !re.answered {
            return;
        }
        let Some(re) = call.reinvite.take() else {
            return;
        };
        match self.sdp_to(call_id, re.from, false) {
            Ok(sdp) => self.answer_reinvite(now, call_id, re.from, re.server_tx, &re.request, sdp),
            Err((status, reason)) => {
                if let Some(call) = self.calls.get_mut(call_id) {
                    call.reinvite = Some(re);
                }
                self.refuse_reinvite(now, unix_ms, call_id, status, &reason);
            }
        }
        self.publish(call_id);
    }

    /// ACK for a 2xx to our in-dialog INVITE on `side` (§13.2.2.4: same `CSeq` number).
    fn ack_in_dialog(&mut self, call_id: &str, side: Side, response: &Response) {
        let Ok(cseq) = response.headers.cseq() else {
            return;
        };
        let branch = self.new_branch();
        let identity = self.identity.clone();
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let leg = if side == Side::A { &call.a } else { &call.b };
        // §13.2.2.4: the ACK to a 2xx carries the INVITE's CSeq number.
        let Some(ack) = dialog_request(&identity, leg, &branch, Method::Ack, cseq.seq) else {
            return;
        };
        self.tx.send_stateless(ack.to_bytes(), leg.flow.clone());
    }

    /// ACKs a 2xx to one of our INVITEs whose dialog we do not want (the call ended first) and,
    /// with `bye`, ends that dialog (RFC 3261 §13.2.2.4, §15): built from the response alone,
    /// since the call may be gone.
    fn ack_and_bye(&mut self, now: Instant, response: &Response, flow: Target, bye: bool) {
        let headers = &response.headers;
        let (Ok(cseq), Ok(call_id), Some(from), Some(to)) = (
            headers.cseq(),
            headers.call_id(),
            headers.get("From"),
            headers.get("To"),
        ) else {
            return;
        };
        let Some(uri) = contact_target(headers) else {
            return;
        };
        // UAC route set: Record-Route in reverse order (§12.1.2).
        let routes: Vec<String> = headers
            .record_routes()
            .map(|r| r.iter().rev().map(ToString::to_string).collect())
            .unwrap_or_default();
        let identity = self.identity.clone();
        let build = |method: Method, seq: u32, branch: &str| {
            let mut request = Request::new(method.clone(), uri.clone())
                .with_header("Via", identity.via(&flow.transport, branch))
                .with_header("Max-Forwards", "70")
                .with_header("From", from)
                .with_header("To", to)
                .with_header("Call-ID", call_id)
                .with_header("CSeq", format!("{seq} {}", method.as_str()));
            for route in &routes {
                request.headers.push("Route", route.clone());
            }
            request
        };
        let ack = build(Method::Ack, cseq.seq, &self.new_branch());
        self.tx.send_stateless(ack.to_bytes(), flow.clone());
        if bye {
            let request = build(Method::Bye, cseq.seq.saturating_add(1), &self.new_branch());
            if let Err(e) = self.tx.send_request(now, request, flow) {
                debug!(error = %e, "BYE for an unwanted dialog not sent");
            }
        }
    }

    fn leg(&self, call_id: &str, side: Side) -> Option<&Leg> {
        self.calls.get(call_id).map(|c| match side {
            Side::A => &c.a,
            Side::B => &c.b,
        })
    }

    /// A new in-dialog request on `side` (§12.2.1.1).
    fn in_dialog_request(&mut self, call_id: &str, side: Side, method: &Method) -> Option<Request> {
        let branch = self.new_branch();
        let identity = self.identity.clone();
        let call = self.calls.get_mut(call_id)?;
        let leg = match side {
            Side::A => &mut call.a,
            Side::B => &mut call.b,
        };
        let request = dialog_request(&identity, leg, &branch, method.clone(), leg.local_cseq + 1)?;
        leg.local_cseq += 1;
        let contact = identity.contact(leg.transport(), call_id, leg.sips);
        Some(request.with_header("Contact", contact))
    }
}

/// A request within `leg`'s dialog (RFC 3261 §12.2.1.1): Request-URI = the remote target,
/// From/To with both tags, the dialog's Call-ID, `cseq`, our Via, and the route set. `None`
/// until the dialog is established (no remote tag or target yet).
fn dialog_request(
    identity: &Identity,
    leg: &Leg,
    branch: &str,
    method: Method,
    cseq: u32,
) -> Option<Request> {
    let remote_tag = leg.remote_tag.as_deref()?;
    let uri = leg.remote_target.clone()?;
    let cseq = format!("{cseq} {}", method.as_str());
    let mut request = Request::new(method, uri)
        .with_header("Via", identity.via(leg.transport(), branch))
        .with_header("Max-Forwards", "70")
        .with_header("From", format!("{};tag={}", leg.local_uri, leg.local_tag))
        .with_header("To", format!("{};tag={remote_tag}", leg.remote_uri))
        .with_header("Call-ID", leg.call_id.clone())
        .with_header("CSeq", cseq);
    for route in &leg.route_set {
        request.headers.push("Route", route.clone());
    }
    Some(request)
}

fn random_bytes8() -> [u8; 8] {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap_or_else(|e| panic!("no OS randomness: {e}"));
    b
}

/// Registered contacts tried for one call, at most (serial forking).
const MAX_CONTACTS_TRIED: usize = 10;

/// A binding's Contact URI and the flow it registered over (RFC 5626: requests go back over
/// that connection, from the address it came from).
fn binding_target(binding: &registrar::Binding) -> Option<(Uri, Target)> {
    let uri = Uri::parse(&binding.contact).ok()?;
    let flow = &binding.flow;
    let target = Target {
        transport: match flow.transport {
            registrar::Transport::Tls => Transport::Tls,
            registrar::Transport::Tcp => Transport::Tcp,
            registrar::Transport::Udp => Transport::Udp,
        },
        address: flow.source,
        connection: flow.connection_id,
        server_name: None,
    };
    Some((uri, target))
}

fn contact_uri(contact: sip::Contact) -> Option<Uri> {
    match contact {
        sip::Contact::Address(addr) => Some(addr.uri().clone()),
        sip::Contact::Wildcard => None,
    }
}

/// The URI of the first Contact (a dialog's remote target).
fn contact_target(headers: &sip::Headers) -> Option<Uri> {
    headers
        .contacts()
        .ok()
        .and_then(|c| c.into_iter().find_map(contact_uri))
}

/// Negotiates a re-INVITE's offer from `side` on a copy of the call's media (a section refused
/// half-way leaves the call untouched): our answer per section, keeping our key when the peer
/// kept its own and did not move (no re-key on hold/resume), and our re-offer to the other leg
/// with that leg's keys kept. Errors carry the SIP status and reason.
fn renegotiate(
    media: &[MediaState],
    offer: &Sdp<'_>,
    side: Side,
    settings: &SrtpSettings,
    other_settings: &SrtpSettings,
) -> Result<Vec<MediaState>, (u16, String)> {
    let err = |e: sdp::SdpError| (e.sip_status(), e.reason_phrase().to_owned());
    let answers = sdp::answer_sdp(offer, settings, &[]).map_err(err)?;
    let mut updated = media.to_vec();
    let (ch, other) = if side == Side::A {
        ('a', 'b')
    } else {
        ('b', 'a')
    };
    for (i, (section, mut answer)) in offer.media().iter().zip(answers).enumerate() {
        let remote =
            media::remote_of(offer, section).map_err(|_| (488, "Bad media address".to_owned()))?;
        let state = &mut updated[i];
        let old_remote = if side == Side::A {
            state.a_remote
        } else {
            state.b_remote
        };
        let moved = remote.is_some() && old_remote.is_some() && remote != old_remote;
        if let (Some(Negotiated::Srtp { keys: old, .. }), Negotiated::Srtp { keys: new, .. }) =
            (state.negotiated(ch), &mut answer.negotiated)
        {
            if !moved && old.inbound == new.inbound {
                new.outbound = old.outbound.clone();
            }
        }
        let kept: Vec<_> = state
            .negotiated(other)
            .map(|n| n.sdp_crypto().to_vec())
            .unwrap_or_default();
        let reuse = if kept.is_empty() {
            KeyReuse::Fresh
        } else {
            KeyReuse::Keep(&kept)
        };
        let re_offer =
            sdp::negotiation::offer_media(section, other_settings, reuse).map_err(err)?;
        let remote = remote.or(old_remote);
        match side {
            Side::A => {
                state.a = Some(answer.negotiated);
                state.a_remote = remote;
            }
            Side::B => {
                state.b = Some(answer.negotiated);
                state.b_remote = remote;
            }
        }
        state.offer = Some(re_offer);
    }
    Ok(updated)
}

fn registrar_contacts(contacts: &[sip::Contact]) -> Result<registrar::Contacts, String> {
    if contacts.iter().any(|c| matches!(c, sip::Contact::Wildcard)) {
        return Ok(registrar::Contacts::Wildcard);
    }
    let mut list = Vec::new();
    for contact in contacts {
        let sip::Contact::Address(addr) = contact else {
            continue;
        };
        let expires = match addr.expires() {
            Some(Ok(e)) => Some(e),
            Some(Err(e)) => return Err(e.to_string()),
            None => None,
        };
        let q = match addr.q() {
            Some(q) => {
                Some(registrar::QValue::parse(q).ok_or_else(|| format!("bad q value {q:?}"))?)
            }
            None => None,
        };
        list.push(registrar::ContactParam {
            uri: addr.uri().to_string(),
            expires,
            q,
            instance: addr
                .param("+sip.instance")
                .and_then(sip::Param::unquoted_value),
            reg_id: addr
                .param("reg-id")
                .and_then(|p| p.value())
                .and_then(|v| v.parse().ok()),
        });
    }
    Ok(registrar::Contacts::List(list))
}

/// Negotiates the caller's offer: our answer per section (leg a keys) and our offer towards
/// the callee (leg b keys offered). Errors carry the SIP status and reason.
fn negotiate_offer(
    offer: &Sdp<'_>,
    a_settings: &SrtpSettings,
    b_settings: &SrtpSettings,
) -> Result<Vec<MediaState>, (u16, String)> {
    let err = |e: sdp::SdpError| (e.sip_status(), e.reason_phrase().to_owned());
    let answers = sdp::answer_sdp(offer, a_settings, &[]).map_err(err)?;
    let offers = sdp::offer_sdp(offer, b_settings, &[]).map_err(err)?;
    let active = answers
        .iter()
        .filter(|a| !matches!(a.negotiated, Negotiated::Disabled))
        .count();
    if active == 0 {
        return Err((488, "No usable media stream".to_owned()));
    }
    if active > MAX_MEDIA {
        return Err((488, format!("At most {MAX_MEDIA} media streams")));
    }
    let mut media = Vec::new();
    for ((section, answer), b_offer) in offer.media().iter().zip(answers).zip(offers) {
        media.push(MediaState {
            a_remote: media::remote_of(offer, section).map_err(err)?,
            a_mux: section.rtcp_mux(),
            // Until the callee's answer says otherwise, leg b keeps a separate RTCP port.
            b_mux: false,
            b_mux_offered: section.rtcp_mux(),
            a: Some(answer.negotiated),
            offer: Some(b_offer),
            b: None,
            b_remote: None,
        });
    }
    Ok(media)
}

/// Takes an SDP answer from `side` to our offer into the call's media state.
fn apply_answer(call: &mut Call, side: Side, body: &[u8]) -> Result<(), (u16, String)> {
    let refuse = |e: sdp::SdpError| (488, e.reason_phrase().to_owned());
    let answer = Sdp::parse(body).map_err(refuse)?;
    let offers: Vec<_> = call
        .media
        .iter()
        .map(|m| {
            m.offer
                .clone()
                .unwrap_or(sdp::negotiation::MediaOffer::Disabled)
        })
        .collect();
    let settings = match side {
        Side::A => &call.a.settings,
        Side::B => &call.b.settings,
    };
    let negotiated = sdp::process_answer_sdp(&answer, &offers, settings).map_err(refuse)?;
    for ((state, section), negotiated) in call.media.iter_mut().zip(answer.media()).zip(negotiated)
    {
        let remote = media::remote_of(&answer, section).map_err(refuse)?;
        match side {
            Side::A => {
                state.a_remote = remote.or(state.a_remote);
                state.a = Some(negotiated);
            }
            Side::B => {
                state.b_remote = remote.or(state.b_remote);
                state.b = Some(negotiated);
                // RFC 5761 §5.1.1: mux only when offered and accepted.
                state.b_mux = state.b_mux_offered && section.rtcp_mux();
            }
        }
    }
    match side {
        Side::A => call.a.last_sdp = body.to_vec(),
        Side::B => call.b.last_sdp = body.to_vec(),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
