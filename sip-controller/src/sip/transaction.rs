//! The SIP transaction layer (RFC 3261 §17, with the RFC 6026 corrections for 2xx responses to
//! INVITE): client and server transactions for INVITE and non-INVITE requests, their
//! retransmission and timeout timers (RFC 3261 §17 Table 4), the ACK a client transaction sends
//! for a non-2xx final response (§17.1.1.3), and the matching of incoming messages to
//! transactions (§17.1.3, §17.2.3).
//!
//! **IO and time contract.** Sans-IO in the quinn-proto / str0m style: the driver feeds parsed
//! messages and the current [`Instant`] in ([`TransactionLayer::receive_request`],
//! [`TransactionLayer::receive_response`], [`TransactionLayer::handle_timeout`]), the TU (the
//! B2BUA core) calls [`TransactionLayer::send_request`] and [`TransactionLayer::respond`], and
//! both drain what the layer produced: bytes to send with
//! [`TransactionLayer::poll_transmit`], events for the TU with
//! [`TransactionLayer::poll_event`], and the next deadline with
//! [`TransactionLayer::poll_timeout`]. Nothing here reads a clock or touches a socket.
//!
//! ```text
//! INVITE client (§17.1.1, RFC 6026)
//!   Calling --1xx--> Proceeding
//!   Calling | Proceeding --2xx, to TU--> Accepted --Timer M--> Terminated
//!   Calling | Proceeding --300-699, to TU, send ACK--> Completed --Timer D--> Terminated
//!   Calling --Timer B, Timeout to TU--> Terminated
//! non-INVITE client (§17.1.2)
//!   Trying --1xx--> Proceeding --final, to TU--> Completed --Timer K--> Terminated
//!   Trying | Proceeding --Timer F, Timeout to TU--> Terminated
//! INVITE server (§17.2.1, RFC 6026)
//!   Proceeding --2xx from TU--> Accepted --Timer L--> Terminated
//!   Proceeding --300-699 from TU--> Completed --ACK--> Confirmed --Timer I--> Terminated
//!   Completed --Timer H, Timeout to TU--> Terminated
//! non-INVITE server (§17.2.2)
//!   Trying --1xx from TU--> Proceeding --final from TU--> Completed --Timer J--> Terminated
//! ```
//!
//! A transaction is destroyed the instant it enters `Terminated` (§17.1.1.2, §17.2.1); the TU
//! then gets [`TxEvent::Terminated`], so per-transaction state in the TU never leaks either.
//!
//! **Matching.** Responses match a client transaction by the top Via `branch` and the `CSeq`
//! method (§17.1.3). Requests match a server transaction by branch, sent-by and method, ACK
//! matching the INVITE (§17.2.3); a CANCEL is its own transaction and
//! [`TransactionLayer::find_invite_server_for_cancel`] finds the INVITE it cancels (§9.2).
//!
//! **RFC 2543 peers.** A request whose branch lacks the `z9hG4bK` magic cookie is not matched
//! by the §17.2.3 legacy rules: [`TransactionLayer::receive_request`] rejects it with
//! [`TxError::LegacyBranch`] (answered 400 by the TU), except an ACK, which is handed to the TU
//! like any ACK to a 2xx (the dialog layer may know it). Every RFC 3261 element sends the
//! cookie; the legacy rules compare six fields per request and are not worth their cost.
//!
//! **Left to the driver.** Stamping `received`/`rport` on a received request's top Via before
//! passing it in (§18.2.1, RFC 3581), choosing a stream transport for a request over 1300 bytes
//! (§18.1.1) when building the [`Target`], and, for a response whose connection has closed,
//! opening a new one to the [`Target`] address (§18.2.2). A failed send is reported back with
//! [`TransactionLayer::transport_error`] and the id in [`Transmit::transaction`].
//!
//! **Why hand-written.** These are a few small state machines bound to our codec's `Request` and
//! `Response` and to our sans-IO driver contract; the Rust SIP crates either own their sockets
//! and clocks or bring their own message types.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{error::ParseError, message::Method, Headers, Request, Response, Transport, Via};

/// The RFC 3261 branch prefix (§8.1.1.7): a branch starting with it was made by an RFC 3261
/// element and is unique across space and time.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Default limit on concurrent transactions (client and server together). A transaction holds
/// its request, parsed and encoded, and the last response: a few KiB each.
pub const DEFAULT_MAX_TRANSACTIONS: usize = 100_000;

/// How many distinct 2xx To tags (forks) an INVITE client transaction in `Accepted` remembers
/// to tell a retransmitted 2xx from a new fork (RFC 6026 on §17.1.1.2).
const MAX_ACCEPTED_TAGS: usize = 16;

/// Max-Forwards of the ACK and CANCEL the layer builds (RFC 3261 §8.1.1.6 recommends 70).
const MAX_FORWARDS: &str = "70";

/// Random bytes in a branch after the magic cookie (hex-encoded: 24 characters, 96 bits).
const BRANCH_RANDOM_BYTES: usize = 12;

/// Upper bounds accepted for the configured timer values (an operator typo must not make
/// `64 * T1` overflow or stall a transaction for days).
const MAX_T1: Duration = Duration::from_secs(60);
const MAX_T2_T4: Duration = Duration::from_secs(600);
const MAX_TIMER_D: Duration = Duration::from_secs(3600);
const MIN_T1: Duration = Duration::from_millis(1);

/// The timer base values of RFC 3261 §17 Table 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    /// T1, the RTT estimate (§17.1.1.1): 500 ms. Timers A, E and G start at T1; B, F, H, J,
    /// L and M last `64 * T1`.
    pub t1: Duration,
    /// T2, the longest retransmit interval for non-INVITE requests and INVITE responses: 4 s.
    pub t2: Duration,
    /// T4, the longest a message stays in the network: 5 s (Timers I and K on UDP).
    pub t4: Duration,
    /// Timer D on unreliable transports, "at least 32 s" (§17.1.1.2); zero on reliable ones.
    pub timer_d: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
        }
    }
}

impl TimerConfig {
    /// `64 * T1`: Timers B, F, H, J (UDP), L and M.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    fn validate(&self) -> Result<(), TxError> {
        let invalid = |field| Err(TxError::InvalidConfig { field });
        if self.t1 < MIN_T1 || self.t1 > MAX_T1 {
            return invalid("t1");
        }
        if self.t2 < self.t1 || self.t2 > MAX_T2_T4 {
            return invalid("t2");
        }
        if self.t4 > MAX_T2_T4 {
            return invalid("t4");
        }
        if self.timer_d > MAX_TIMER_D {
            return invalid("timer_d");
        }
        Ok(())
    }
}

/// Configuration of a [`TransactionLayer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransactionConfig {
    /// Timer base values.
    pub timers: TimerConfig,
    /// Most transactions alive at once, client and server together; beyond it new ones are
    /// refused with [`TxError::TooManyTransactions`] (the TU answers 503).
    pub max_transactions: usize,
    /// RFC 3261 §17.2.1: when the TU has sent no provisional response this long after an
    /// INVITE arrived, the server transaction sends `100 Trying` itself (200 ms). `None` when
    /// the TU always answers at once.
    pub trying_delay: Option<Duration>,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            timers: TimerConfig::default(),
            max_transactions: DEFAULT_MAX_TRANSACTIONS,
            trying_delay: Some(Duration::from_millis(200)),
        }
    }
}

/// Where a message goes, or where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The transport.
    pub transport: Transport,
    /// The peer's address: for a received request, its source address, where responses go
    /// (RFC 3261 §18.2.2 with RFC 3581 `rport`).
    pub address: SocketAddr,
    /// The connection (TCP/TLS) the message came on or should go on, as the driver numbers
    /// them; `None` for UDP or to let the driver pick or open one.
    pub connection: Option<u64>,
    /// The TLS server name to present and verify (SNI) when a connection must be opened.
    pub server_name: Option<String>,
}

impl Target {
    /// A UDP peer.
    pub fn udp(address: SocketAddr) -> Self {
        Self {
            transport: Transport::Udp,
            address,
            connection: None,
            server_name: None,
        }
    }

    /// A TCP peer, on a known connection or not.
    pub fn tcp(address: SocketAddr, connection: Option<u64>) -> Self {
        Self {
            transport: Transport::Tcp,
            address,
            connection,
            server_name: None,
        }
    }

    /// A TLS peer, on a known connection or not, with the server name to verify.
    pub fn tls(address: SocketAddr, connection: Option<u64>, server_name: Option<String>) -> Self {
        Self {
            transport: Transport::Tls,
            address,
            connection,
            server_name,
        }
    }

    /// Whether the transport is reliable (RFC 3261 §17.1.1.1: everything but UDP); reliable
    /// transports get no retransmissions and zero-length Timers D, I, J and K.
    pub fn is_reliable(&self) -> bool {
        !matches!(self.transport, Transport::Udp)
    }
}

/// A client transaction, as returned by [`TransactionLayer::send_request`]. Ids are never
/// reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(u64);

/// A server transaction, as announced by [`TxEvent::Request`]. Ids are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(u64);

/// Either kind of transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxId {
    /// A client transaction.
    Client(ClientTxId),
    /// A server transaction.
    Server(ServerTxId),
}

impl From<ClientTxId> for TxId {
    fn from(id: ClientTxId) -> Self {
        Self::Client(id)
    }
}

impl From<ServerTxId> for TxId {
    fn from(id: ServerTxId) -> Self {
        Self::Server(id)
    }
}

/// States of a client transaction (RFC 3261 §17.1.1.2, §17.1.2.2; RFC 6026 on §17.1.1.2). There is no
/// `Terminated`: a terminated transaction is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, no response yet.
    Calling,
    /// Non-INVITE request sent, no response yet.
    Trying,
    /// A provisional response was received.
    Proceeding,
    /// A final response was received (a non-2xx one for INVITE); absorbing retransmissions.
    Completed,
    /// A 2xx to the INVITE was received; further 2xx are passed to the TU (RFC 6026).
    Accepted,
}

/// States of a server transaction (RFC 3261 §17.2.1, §17.2.2; RFC 6026 on §17.2.1). There is no
/// `Terminated`: a terminated transaction is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE request received, nothing sent yet.
    Trying,
    /// INVITE received, or a provisional response sent.
    Proceeding,
    /// A final response was sent (a non-2xx one for INVITE).
    Completed,
    /// The ACK to the non-2xx final response was received.
    Confirmed,
    /// A 2xx to the INVITE was sent; the TU retransmits it (RFC 3261 §13.3.1.4).
    Accepted,
}

/// The timers of RFC 3261 §17 Table 4 and RFC 6026 (L, M).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE request retransmit interval, UDP only (starts at T1, doubles).
    A,
    /// INVITE transaction timeout (64*T1).
    B,
    /// Wait time for response retransmits (32 s UDP, 0 reliable).
    D,
    /// Non-INVITE request retransmit interval, UDP only (T1 doubling up to T2).
    E,
    /// Non-INVITE transaction timeout (64*T1).
    F,
    /// INVITE response retransmit interval, UDP only (T1 doubling up to T2).
    G,
    /// Wait time for ACK receipt (64*T1).
    H,
    /// Wait time for ACK retransmits (T4 UDP, 0 reliable).
    I,
    /// Wait time for non-INVITE request retransmits (64*T1 UDP, 0 reliable).
    J,
    /// Wait time for response retransmits (T4 UDP, 0 reliable).
    K,
    /// Wait time for accepted INVITE request retransmits (64*T1, RFC 6026).
    L,
    /// Wait time for retransmission of 2xx to INVITE or additional 2xx from other branches of
    /// a forked INVITE (64*T1, RFC 6026).
    M,
    /// The 200 ms after which an INVITE server transaction sends `100 Trying` itself if the TU
    /// has not answered (RFC 3261 §17.2.1).
    Trying,
}

impl Timer {
    /// The slot a timer occupies in its transaction: at most one timer per slot is armed.
    fn slot(self) -> usize {
        match self {
            Self::A | Self::E | Self::G => 0,
            Self::B | Self::F | Self::H => 1,
            Self::D | Self::I | Self::J | Self::K | Self::L | Self::M => 2,
            Self::Trying => 3,
        }
    }
}

/// Bytes to send.
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send them.
    pub target: Target,
    /// One encoded SIP message.
    pub bytes: Vec<u8>,
    /// The transaction that sent them, to report a failure with
    /// [`TransactionLayer::transport_error`]; `None` for stateless sends.
    pub transaction: Option<TxId>,
}

impl fmt::Debug for Transmit {
    // The bytes may carry credentials (Authorization headers): only their length is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("target", &self.target)
            .field("len", &self.bytes.len())
            .field("transaction", &self.transaction)
            .finish()
    }
}

/// What the layer tells the TU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxEvent {
    /// A new request (not a retransmission, not an ACK): answer it with
    /// [`TransactionLayer::respond`].
    Request {
        /// Its server transaction.
        id: ServerTxId,
        /// The request.
        request: Request,
        /// Where it came from.
        source: Target,
    },
    /// An ACK that is not part of an INVITE server transaction in `Completed`/`Confirmed`: the
    /// ACK to a 2xx (RFC 3261 §13.3.1.4, it belongs to the dialog) or a stray ACK.
    Ack {
        /// The ACK.
        request: Request,
        /// Where it came from.
        source: Target,
        /// The INVITE server transaction in `Accepted` it matched by branch (RFC 6026 on §17.2.1), if
        /// any; ACKs to 2xx from RFC 3261 peers carry a new branch and match none.
        invite: Option<ServerTxId>,
    },
    /// A response to a client transaction: every provisional, the final, and (RFC 6026 on §17.1.1.2)
    /// every 2xx to an INVITE while `Accepted`.
    Response {
        /// The client transaction.
        id: ClientTxId,
        /// The response.
        response: Response,
        /// A 2xx to an INVITE whose To tag was seen before on this transaction: a
        /// retransmission, which the TU answers by re-sending its ACK (§13.2.2.4).
        retransmission: bool,
    },
    /// A response that matches no client transaction (§17.1.3); the TU decides (a B2BUA
    /// re-ACKs a 2xx of its own dialogs).
    StrayResponse {
        /// The response.
        response: Response,
        /// Where it came from.
        source: Target,
    },
    /// Timer B or F (no final response) or Timer H (no ACK) fired (RFC 3261 §17.1.1.2,
    /// §17.1.2.2, §17.2.1). The transaction then terminates.
    Timeout {
        /// The transaction.
        id: TxId,
        /// B, F or H.
        timer: Timer,
    },
    /// A transmission of the transaction failed (§17.1.4, §17.2.4). It then terminates.
    TransportError {
        /// The transaction.
        id: TxId,
    },
    /// The transaction entered `Terminated` and is gone.
    Terminated {
        /// The transaction.
        id: TxId,
    },
}

/// Errors of the transaction layer. [`TxError::status_code`] maps the ones a received request
/// can hit to the response the TU sends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// The limit on concurrent transactions is reached.
    #[error("{limit} transactions in progress")]
    TooManyTransactions {
        /// The limit.
        limit: usize,
    },
    /// The top Via (or, for a request to send, the `CSeq`) is missing or invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(#[source] ParseError),
    /// The top Via has no `branch` parameter.
    #[error("top Via has no branch")]
    MissingBranch,
    /// The branch lacks the RFC 3261 magic cookie (an RFC 2543 peer, §17.2.3).
    #[error("Via branch lacks the z9hG4bK magic cookie")]
    LegacyBranch,
    /// The `CSeq` method of a request to send differs from its method (§8.1.1.5).
    #[error("CSeq method differs from the request method")]
    CSeqMethodMismatch,
    /// ACK is never sent in a client transaction: the ACK to a non-2xx is built by the
    /// transaction, the ACK to a 2xx is the TU's (§17.1.1.3, §13.2.2.4); send it with
    /// [`TransactionLayer::send_stateless`].
    #[error("ACK is not sent in a client transaction")]
    AckInTransaction,
    /// A client transaction with this branch and method exists already.
    #[error("a client transaction with this branch and method exists")]
    DuplicateTransaction,
    /// No transaction with this id (it never existed or has terminated).
    #[error("no transaction {id:?}")]
    UnknownTransaction {
        /// The id.
        id: TxId,
    },
    /// The status code is outside 100..=699.
    #[error("invalid status code {status}")]
    InvalidStatus {
        /// The status.
        status: u16,
    },
    /// The server transaction cannot send this response in its state (a second final response,
    /// a non-2xx after a 2xx...).
    #[error("cannot send a {status} response in state {state:?}")]
    ResponseNotAllowed {
        /// The status of the response.
        status: u16,
        /// The transaction's state.
        state: ServerState,
    },
    /// Only INVITE transactions are cancelled (RFC 3261 §9.1).
    #[error("only INVITE transactions can be cancelled")]
    NotInvite,
    /// No provisional response yet: a CANCEL must wait for one (RFC 3261 §9.1).
    #[error("no provisional response received yet")]
    NoProvisionalYet,
    /// A final response was received: there is nothing left to cancel (RFC 3261 §9.1).
    #[error("final response already received (state {state:?})")]
    AlreadyFinal {
        /// The transaction's state.
        state: ClientState,
    },
    /// A configuration value is out of range.
    #[error("invalid transaction configuration: {field}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
    },
}

impl TxError {
    /// The status of the response to a request rejected with this error: 503 when overloaded
    /// (RFC 3261 §21.5.4), 400 for a request the layer cannot match, 500 for the TU's own
    /// mistakes (which never reach a peer as such).
    pub fn status_code(&self) -> u16 {
        match self {
            Self::TooManyTransactions { .. } => 503,
            Self::InvalidRequest(_)
            | Self::MissingBranch
            | Self::LegacyBranch
            | Self::CSeqMethodMismatch => 400,
            _ => 500,
        }
    }
}

/// A received request that did not enter a transaction, given back so that the TU can answer
/// it (with [`TxError::status_code`]).
#[derive(Debug, thiserror::Error)]
#[error("request rejected: {error}")]
pub struct RequestRejected {
    /// Why.
    pub error: TxError,
    /// The request.
    pub request: Box<Request>,
}

/// A fresh branch: the magic cookie and 96 random bits in hex (RFC 3261 §8.1.1.7: unique across
/// space and time). Should the OS random source fail, the bits come from a process-wide counter
/// mixed with the clock: still unique, only no longer unpredictable.
pub fn new_branch() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut random = [0u8; BRANCH_RANDOM_BYTES];
    if getrandom::fill(&mut random).is_err() {
        random = fallback_branch_bits();
    }
    let mut branch = String::with_capacity(MAGIC_COOKIE.len() + 2 * BRANCH_RANDOM_BYTES);
    branch.push_str(MAGIC_COOKIE);
    for b in random {
        branch.push(char::from(HEX[usize::from(b >> 4)]));
        branch.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    branch
}

/// Counter plus clock through splitmix64, for when `getrandom` fails.
fn fallback_branch_bits() -> [u8; BRANCH_RANDOM_BYTES] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Truncation keeps the fast-changing low bits of the clock, which is all that is wanted.
    #[allow(clippy::cast_possible_truncation)]
    let seed = (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32);
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out = [0u8; BRANCH_RANDOM_BYTES];
    out[..8].copy_from_slice(&mix(seed.wrapping_add(count)).to_be_bytes());
    out[8..].copy_from_slice(&count.to_be_bytes()[4..]);
    out
}

/// A client transaction's key (§17.1.3): the branch of the top Via it sent and the method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientKey {
    branch: String,
    method: Method,
}

/// A server transaction's key (§17.2.3): branch, sent-by and method, ACK counted as INVITE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ServerKey {
    branch: String,
    /// The sent-by host, lower-cased (hosts compare case-insensitively, §19.1.4).
    host: String,
    /// The sent-by port, the transport's default when absent.
    port: u16,
    method: Method,
}

/// The (deadline, sequence) pair under which a timer is queued; at most one per slot.
type TimerKey = (Instant, u64);

/// All armed timers of all transactions, ordered by deadline, so that the next deadline is
/// found and the due timers popped in O(log n) without scanning transactions.
#[derive(Debug, Default)]
struct TimerQueue {
    deadlines: BTreeMap<TimerKey, (TxId, Timer)>,
    next_seq: u64,
}

/// The timers a transaction has armed, by [`Timer::slot`].
type ArmedTimers = [Option<TimerKey>; 4];

/// What a handler leaves of its transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Alive,
    Terminated,
}

/// Output queues and timers, borrowed by transaction handlers next to the transaction maps.
#[derive(Debug, Default)]
struct Outputs {
    timers: TimerQueue,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
}

impl Outputs {
    fn arm(&mut self, armed: &mut ArmedTimers, id: TxId, timer: Timer, at: Instant) {
        self.disarm(armed, timer);
        let key = (at, self.timers.next_seq);
        self.timers.next_seq += 1;
        self.timers.deadlines.insert(key, (id, timer));
        armed[timer.slot()] = Some(key);
    }

    /// Disarms whatever timer occupies `timer`'s slot.
    fn disarm(&mut self, armed: &mut ArmedTimers, timer: Timer) {
        if let Some(key) = armed[timer.slot()].take() {
            self.timers.deadlines.remove(&key);
        }
    }

    fn disarm_all(&mut self, armed: &mut ArmedTimers) {
        for key in armed.iter_mut().filter_map(Option::take) {
            self.timers.deadlines.remove(&key);
        }
    }

    fn transmit(&mut self, target: &Target, bytes: Vec<u8>, id: TxId) {
        self.transmits.push_back(Transmit {
            target: target.clone(),
            bytes,
            transaction: Some(id),
        });
    }

    fn event(&mut self, event: TxEvent) {
        self.events.push_back(event);
    }
}

/// One client transaction (§17.1).
#[derive(Debug)]
struct ClientTransaction {
    id: ClientTxId,
    invite: bool,
    state: ClientState,
    key: ClientKey,
    cseq: u32,
    request: Request,
    /// The encoded request, re-sent on Timers A and E.
    bytes: Vec<u8>,
    target: Target,
    /// Current interval of Timer A or E.
    interval: Duration,
    /// The encoded ACK for the non-2xx final response, re-sent on its retransmissions.
    ack: Option<Vec<u8>>,
    /// To tags of the 2xx received while `Accepted` (RFC 6026 on §17.1.1.2).
    accepted_tags: Vec<String>,
    timers: ArmedTimers,
}

impl ClientTransaction {
    fn tx_id(&self) -> TxId {
        TxId::Client(self.id)
    }

    fn arm(&mut self, io: &mut Outputs, timer: Timer, at: Instant) {
        let id = self.tx_id();
        io.arm(&mut self.timers, id, timer, at);
    }

    fn retransmit(&self, io: &mut Outputs) {
        io.transmit(&self.target, self.bytes.clone(), self.tx_id());
    }

    /// Sends the request for the first time and arms the timers (§17.1.1.2, §17.1.2.2).
    fn start(&mut self, io: &mut Outputs, timers: &TimerConfig, now: Instant) {
        self.retransmit(io);
        let reliable = self.target.is_reliable();
        let (retransmit, timeout) = if self.invite {
            (Timer::A, Timer::B)
        } else {
            (Timer::E, Timer::F)
        };
        if !reliable {
            self.arm(io, retransmit, now + timers.t1);
        }
        self.arm(io, timeout, now + timers.transaction_timeout());
    }

    fn on_response(
        &mut self,
        io: &mut Outputs,
        timers: &TimerConfig,
        now: Instant,
        response: Response,
        source: Target,
    ) -> Fate {
        if self.invite {
            self.on_invite_response(io, timers, now, response, source)
        } else {
            self.on_non_invite_response(io, timers, now, response)
        }
    }

    fn on_invite_response(
        &mut self,
        io: &mut Outputs,
        timers: &TimerConfig,
        now: Instant,
        response: Response,
        source: Target,
    ) -> Fate {
        let status = response.status;
        match self.state {
            ClientState::Calling | ClientState::Proceeding => {
                // §17.1.1.2: any response stops the retransmissions and Timer B.
                io.disarm(&mut self.timers, Timer::A);
                io.disarm(&mut self.timers, Timer::B);
                if status < 200 {
                    // §17.1.1.2: Calling --1xx--> Proceeding, every provisional to the TU.
                    self.state = ClientState::Proceeding;
                    self.pass_up(io, response, false);
                    Fate::Alive
                } else if status < 300 {
                    // RFC 6026 on §17.1.1.2: 2xx --> Accepted, Timer M; the TU sends the ACK.
                    self.state = ClientState::Accepted;
                    self.remember_accepted_tag(&response);
                    self.arm(io, Timer::M, now + timers.transaction_timeout());
                    self.pass_up(io, response, false);
                    Fate::Alive
                } else {
                    // §17.1.1.2: 300-699 --> Completed; send the ACK (§17.1.1.3), Timer D.
                    let ack = build_ack(&self.request, self.cseq, &response).to_bytes();
                    io.transmit(&self.target, ack.clone(), self.tx_id());
                    self.ack = Some(ack);
                    self.state = ClientState::Completed;
                    self.pass_up(io, response, false);
                    if self.target.is_reliable() || timers.timer_d.is_zero() {
                        return Fate::Terminated;
                    }
                    self.arm(io, Timer::D, now + timers.timer_d);
                    Fate::Alive
                }
            }
            ClientState::Completed if status >= 300 => {
                // §17.1.1.2: a retransmitted final response is answered with the ACK again,
                // not passed to the TU.
                if let Some(ack) = &self.ack {
                    io.transmit(&self.target, ack.clone(), self.tx_id());
                }
                Fate::Alive
            }
            ClientState::Completed if (200..300).contains(&status) => {
                // A 2xx after a non-2xx final: not this transaction's business any more; the
                // TU may ACK and BYE it.
                io.event(TxEvent::StrayResponse { response, source });
                Fate::Alive
            }
            ClientState::Accepted if (200..300).contains(&status) => {
                // RFC 6026 on §17.1.1.2: every 2xx in Accepted goes to the TU (retransmission or fork).
                let seen = self.remember_accepted_tag(&response);
                self.pass_up(io, response, seen);
                Fate::Alive
            }
            // Late provisionals, or a non-2xx after a 2xx: absorbed.
            _ => Fate::Alive,
        }
    }

    fn on_non_invite_response(
        &mut self,
        io: &mut Outputs,
        timers: &TimerConfig,
        now: Instant,
        response: Response,
    ) -> Fate {
        match self.state {
            ClientState::Trying | ClientState::Proceeding if response.status < 200 => {
                // §17.1.2.2: Trying --1xx--> Proceeding; Timer E keeps running (at T2).
                self.state = ClientState::Proceeding;
                self.pass_up(io, response, false);
                Fate::Alive
            }
            ClientState::Trying | ClientState::Proceeding => {
                // §17.1.2.2: final --> Completed, Timer K (T4 on UDP, zero on reliable).
                io.disarm(&mut self.timers, Timer::E);
                io.disarm(&mut self.timers, Timer::F);
                self.state = ClientState::Completed;
                self.pass_up(io, response, false);
                if self.target.is_reliable() || timers.t4.is_zero() {
                    return Fate::Terminated;
                }
                self.arm(io, Timer::K, now + timers.t4);
                Fate::Alive
            }
            // §17.1.2.2: retransmitted responses in Completed are absorbed.
            _ => Fate::Alive,
        }
    }

    fn pass_up(&self, io: &mut Outputs, response: Response, retransmission: bool) {
        io.event(TxEvent::Response {
            id: self.id,
            response,
            retransmission,
        });
    }

    /// Records the To tag of a 2xx; returns whether it was seen before.
    fn remember_accepted_tag(&mut self, response: &Response) -> bool {
        let tag = to_tag(response).unwrap_or_default();
        if self.accepted_tags.contains(&tag) {
            return true;
        }
        if self.accepted_tags.len() < MAX_ACCEPTED_TAGS {
            self.accepted_tags.push(tag);
        }
        false
    }

    fn on_timer(
        &mut self,
        io: &mut Outputs,
        timers: &TimerConfig,
        now: Instant,
        timer: Timer,
    ) -> Fate {
        match (timer, self.state) {
            (Timer::A, ClientState::Calling) => {
                // §17.1.1.2: retransmit, double the interval.
                self.retransmit(io);
                self.interval = self.interval.saturating_mul(2);
                self.arm(io, Timer::A, now + self.interval);
                Fate::Alive
            }
            (Timer::E, ClientState::Trying | ClientState::Proceeding) => {
                // §17.1.2.2: retransmit; double up to T2 in Trying, T2 in Proceeding.
                self.retransmit(io);
                self.interval = if self.state == ClientState::Trying {
                    self.interval.saturating_mul(2).min(timers.t2)
                } else {
                    timers.t2
                };
                self.arm(io, Timer::E, now + self.interval);
                Fate::Alive
            }
            (Timer::B, ClientState::Calling | ClientState::Proceeding)
            | (Timer::F, ClientState::Trying | ClientState::Proceeding) => {
                // §17.1.1.2, §17.1.2.2: inform the TU of the timeout.
                io.event(TxEvent::Timeout {
                    id: self.tx_id(),
                    timer,
                });
                Fate::Terminated
            }
            (Timer::D | Timer::K, ClientState::Completed) | (Timer::M, ClientState::Accepted) => {
                Fate::Terminated
            }
            // A timer of another state cannot be armed (state changes disarm them).
            _ => Fate::Alive,
        }
    }
}

/// One server transaction (§17.2).
#[derive(Debug)]
struct ServerTransaction {
    id: ServerTxId,
    invite: bool,
    state: ServerState,
    key: ServerKey,
    request: Request,
    /// Where responses go: the request's source (§18.2.2), updated by retransmissions.
    source: Target,
    /// The encoded last response, re-sent on request retransmissions and Timer G.
    last_response: Option<Vec<u8>>,
    /// Current interval of Timer G.
    interval: Duration,
    timers: ArmedTimers,
}

impl ServerTransaction {
    fn tx_id(&self) -> TxId {
        TxId::Server(self.id)
    }

    fn arm(&mut self, io: &mut Outputs, timer: Timer, at: Instant) {
        let id = self.tx_id();
        io.arm(&mut self.timers, id, timer, at);
    }

    fn resend_last_response(&self, io: &mut Outputs) {
        if let Some(bytes) = &self.last_response {
            io.transmit(&self.source, bytes.clone(), self.tx_id());
        }
    }

    /// A retransmission of the request (§17.2.1, §17.2.2; RFC 6026 on §17.2.1).
    fn on_retransmission(&mut self, io: &mut Outputs, source: Target) {
        // Responses follow the latest copy: a NAT rebinding or a new TCP connection.
        self.source = source;
        match self.state {
            // §17.2.1/§17.2.2: re-send the last provisional (Proceeding) or final (Completed).
            ServerState::Proceeding | ServerState::Completed => self.resend_last_response(io),
            // §17.2.2: Trying absorbs; §17.2.1: Confirmed absorbs; RFC 6026 on §17.2.1: Accepted
            // absorbs (the TU retransmits the 2xx).
            ServerState::Trying | ServerState::Confirmed | ServerState::Accepted => {}
        }
    }

    /// An ACK matching this INVITE transaction (§17.2.1, RFC 6026 on §17.2.1).
    fn on_ack(
        &mut self,
        io: &mut Outputs,
        timers: &TimerConfig,
        now: Instant,
        ack: Request,
        source: Target,
    ) -> Fate {
        match self.state {
            ServerState::Completed => {
                // §17.2.1: Completed --ACK--> Confirmed, Timer I (T4 on UDP, zero on reliable).
                io.disarm(&mut self.timers, Timer::G);
                io.disarm(&mut self.timers, Timer::H);
                self.state = ServerState::Confirmed;
                if self.source.is_reliable() || timers.t4.is_zero() {
                    return Fate::Terminated;
                }
                self.arm(io, Timer::I, now + timers.t4);
                Fate::Alive
            }
            ServerState::Accepted => {
                // RFC 6026 on §17.2.1: an ACK matching an Accepted transaction goes to the TU.
                io.event(TxEvent::Ack {
                    request: ack,
                    source,
                    invite: Some(self.id),
                });
                Fate::Alive
            }
            // Confirmed: ACK retransmissions are absorbed (§17.2.1); Proceeding: nothing to
            // acknowledge yet, dropped.
            ServerState::Trying | ServerState::Proceeding | ServerState::Confirmed => Fate::Alive,
        }
    }

    fn respond(
        &mut self,
        io: &mut Outputs,
        timers: &TimerConfig,
        now: Instant,
        response: &Response,
    ) -> Result<Fate, TxError> {
        let status = response.status;
        if !(100..=699).contains(&status) {
            return Err(TxError::InvalidStatus { status });
        }
        let fate = if self.invite {
            self.respond_invite(io, timers, now, status)?
        } else {
            self.respond_non_invite(io, timers, now, status)?
        };
        let bytes = response.to_bytes();
        io.transmit(&self.source, bytes.clone(), self.tx_id());
        self.last_response = Some(bytes);
        Ok(fate)
    }

    /// State change for a response from the TU to an INVITE (§17.2.1, RFC 6026 on §17.2.1); the
    /// caller sends it.
    fn respond_invite(
        &mut self,
        io: &mut Outputs,
        timers: &TimerConfig,
        now: Instant,
        status: u16,
    ) -> Result<Fate, TxError> {
        match self.state {
            ServerState::Proceeding => {
                io.disarm(&mut self.timers, Timer::Trying);
                if status < 200 {
                    // §17.2.1: provisionals keep Proceeding.
                } else if status < 300 {
                    // RFC 6026 on §17.2.1: 2xx --> Accepted, Timer L; no 2xx retransmissions here.
                    self.state = ServerState::Accepted;
                    self.arm(io, Timer::L, now + timers.transaction_timeout());
                } else {
                    // §17.2.1: 300-699 --> Completed, Timer G on UDP, Timer H.
                    self.state = ServerState::Completed;
                    if !self.source.is_reliable() {
                        self.interval = timers.t1;
                        self.arm(io, Timer::G, now + timers.t1);
                    }
                    self.arm(io, Timer::H, now + timers.transaction_timeout());
                }
                Ok(Fate::Alive)
            }
            // RFC 6026 on §17.2.1: the TU's 2xx retransmissions pass through to the transport.
            ServerState::Accepted if (200..300).contains(&status) => Ok(Fate::Alive),
            state => Err(TxError::ResponseNotAllowed { status, state }),
        }
    }

    /// State change for a response from the TU to a non-INVITE request (§17.2.2).
    fn respond_non_invite(
        &mut self,
        io: &mut Outputs,
        timers: &TimerConfig,
        now: Instant,
        status: u16,
    ) -> Result<Fate, TxError> {
        match self.state {
            ServerState::Trying | ServerState::Proceeding if status < 200 => {
                self.state = ServerState::Proceeding;
                Ok(Fate::Alive)
            }
            ServerState::Trying | ServerState::Proceeding => {
                // §17.2.2: final --> Completed, Timer J (64*T1 on UDP, zero on reliable).
                self.state = ServerState::Completed;
                if self.source.is_reliable() {
                    return Ok(Fate::Terminated);
                }
                self.arm(io, Timer::J, now + timers.transaction_timeout());
                Ok(Fate::Alive)
            }
            state => Err(TxError::ResponseNotAllowed { status, state }),
        }
    }

    fn on_timer(
        &mut self,
        io: &mut Outputs,
        timers: &TimerConfig,
        now: Instant,
        timer: Timer,
    ) -> Fate {
        match (timer, self.state) {
            (Timer::G, ServerState::Completed) => {
                // §17.2.1: re-send the final response, double the interval up to T2.
                self.resend_last_response(io);
                self.interval = self.interval.saturating_mul(2).min(timers.t2);
                self.arm(io, Timer::G, now + self.interval);
                Fate::Alive
            }
            (Timer::H, ServerState::Completed) => {
                // §17.2.1: no ACK; inform the TU.
                io.event(TxEvent::Timeout {
                    id: self.tx_id(),
                    timer,
                });
                Fate::Terminated
            }
            (Timer::Trying, ServerState::Proceeding) if self.last_response.is_none() => {
                // §17.2.1: the TU has not answered within 200 ms: send 100 Trying (§8.2.6.1).
                let bytes = Response::from_request(&self.request, 100, None).to_bytes();
                io.transmit(&self.source, bytes.clone(), self.tx_id());
                self.last_response = Some(bytes);
                Fate::Alive
            }
            (Timer::I, ServerState::Confirmed)
            | (Timer::J, ServerState::Completed)
            | (Timer::L, ServerState::Accepted) => Fate::Terminated,
            _ => Fate::Alive,
        }
    }
}

/// The SIP transaction layer: every client and server transaction of one element.
pub struct TransactionLayer {
    config: TransactionConfig,
    next_id: u64,
    clients: HashMap<ClientTxId, ClientTransaction>,
    servers: HashMap<ServerTxId, ServerTransaction>,
    client_index: HashMap<ClientKey, ClientTxId>,
    server_index: HashMap<ServerKey, ServerTxId>,
    io: Outputs,
}

impl fmt::Debug for TransactionLayer {
    // Transactions hold whole messages (credentials included): only counts are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionLayer")
            .field("config", &self.config)
            .field("clients", &self.clients.len())
            .field("servers", &self.servers.len())
            .field("timers", &self.io.timers.deadlines.len())
            .field("transmits", &self.io.transmits.len())
            .field("events", &self.io.events.len())
            .finish_non_exhaustive()
    }
}

impl TransactionLayer {
    /// A layer with no transactions.
    pub fn new(config: TransactionConfig) -> Result<Self, TxError> {
        config.timers.validate()?;
        if config.max_transactions == 0 {
            return Err(TxError::InvalidConfig {
                field: "max_transactions",
            });
        }
        if config.trying_delay.is_some_and(|d| d > MAX_T1) {
            return Err(TxError::InvalidConfig {
                field: "trying_delay",
            });
        }
        Ok(Self {
            config,
            next_id: 0,
            clients: HashMap::new(),
            servers: HashMap::new(),
            client_index: HashMap::new(),
            server_index: HashMap::new(),
            io: Outputs::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TransactionConfig {
        &self.config
    }

    /// Transactions alive, client and server.
    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    /// Whether no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_capacity(&self) -> Result<(), TxError> {
        if self.len() >= self.config.max_transactions {
            return Err(TxError::TooManyTransactions {
                limit: self.config.max_transactions,
            });
        }
        Ok(())
    }

    fn allocate_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Starts a client transaction (§17.1.1, §17.1.2) and queues the first transmission.
    ///
    /// The request must be complete (§8.1.1) with its top Via carrying a fresh branch from
    /// [`new_branch`]; a CANCEL carries the branch of the INVITE it cancels (§9.1, see
    /// [`TransactionLayer::cancel_request`]). ACK is refused: see
    /// [`TransactionLayer::send_stateless`].
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Request,
        target: Target,
    ) -> Result<ClientTxId, TxError> {
        if request.method == Method::Ack {
            return Err(TxError::AckInTransaction);
        }
        let branch = top_branch(&request.headers)?;
        let cseq = request.headers.cseq().map_err(TxError::InvalidRequest)?;
        if cseq.method != request.method {
            return Err(TxError::CSeqMethodMismatch);
        }
        let key = ClientKey {
            branch,
            method: request.method.clone(),
        };
        if self.client_index.contains_key(&key) {
            return Err(TxError::DuplicateTransaction);
        }
        self.check_capacity()?;
        let id = ClientTxId(self.allocate_id());
        let invite = request.method == Method::Invite;
        let mut tx = ClientTransaction {
            id,
            invite,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            key: key.clone(),
            cseq: cseq.seq,
            bytes: request.to_bytes(),
            request,
            target,
            interval: self.config.timers.t1,
            ack: None,
            accepted_tags: Vec::new(),
            timers: ArmedTimers::default(),
        };
        tx.start(&mut self.io, &self.config.timers, now);
        tracing::debug!(?id, branch = %key.branch, method = %key.method, "client transaction started");
        self.client_index.insert(key, id);
        self.clients.insert(id, tx);
        Ok(id)
    }

    /// Queues a message outside any transaction: the ACK to a 2xx (§13.2.2.4, re-sent by the
    /// TU for each retransmitted 2xx) or a stateless response (§8.2.7).
    pub fn send_stateless(&mut self, bytes: Vec<u8>, target: Target) {
        self.io.transmits.push_back(Transmit {
            target,
            bytes,
            transaction: None,
        });
    }

    /// Builds the CANCEL for an INVITE client transaction (§9.1): same Request-URI, Call-ID,
    /// From, To (without a tag) and `CSeq` number, method CANCEL, the one Via of the INVITE (same
    /// branch) and its Route fields. Send it with [`TransactionLayer::send_request`] to
    /// [`TransactionLayer::client_target`], or use [`TransactionLayer::send_cancel`]. The TU may
    /// add a Reason field (RFC 3326) first.
    pub fn cancel_request(&self, id: ClientTxId) -> Result<Request, TxError> {
        let tx = self
            .clients
            .get(&id)
            .ok_or(TxError::UnknownTransaction { id: id.into() })?;
        if !tx.invite {
            return Err(TxError::NotInvite);
        }
        match tx.state {
            // §9.1: "MUST NOT" send a CANCEL before a provisional response.
            ClientState::Calling => Err(TxError::NoProvisionalYet),
            ClientState::Proceeding => Ok(build_cancel(&tx.request, tx.cseq)),
            state => Err(TxError::AlreadyFinal { state }),
        }
    }

    /// Builds the CANCEL for an INVITE client transaction ([`TransactionLayer::cancel_request`])
    /// and sends it in a new client transaction to the INVITE's target.
    pub fn send_cancel(&mut self, now: Instant, id: ClientTxId) -> Result<ClientTxId, TxError> {
        let cancel = self.cancel_request(id)?;
        let target = self
            .client_target(id)
            .cloned()
            .ok_or(TxError::UnknownTransaction { id: id.into() })?;
        let cancel_id = self.send_request(now, cancel, target)?;
        // §9.1: an INVITE with no final response 64*T1 after its CANCEL is considered
        // cancelled and destroyed (Timer B's slot is free once the transaction is
        // `Proceeding`).
        let deadline = now + self.config.timers.transaction_timeout();
        if let Some(tx) = self.clients.get_mut(&id) {
            tx.arm(&mut self.io, Timer::B, deadline);
        }
        Ok(cancel_id)
    }

    /// A request received from `source` (already stamped with `received`/`rport` by the driver,
    /// §18.2.1). A new request starts a server transaction and becomes [`TxEvent::Request`]; a
    /// retransmission is absorbed (re-sending the last response where §17.2 says so); an ACK
    /// is absorbed by the INVITE transaction it acknowledges, or becomes [`TxEvent::Ack`].
    ///
    /// Errors give the request back so that the TU can answer it with
    /// [`TxError::status_code`] (an ACK is never refused).
    pub fn receive_request(
        &mut self,
        now: Instant,
        request: Request,
        source: Target,
    ) -> Result<(), RequestRejected> {
        let key = match server_key(&request) {
            Ok(key) => key,
            Err(error) => {
                if request.method == Method::Ack {
                    // An ACK without a usable branch (RFC 2543 peer) is never answered: the
                    // dialog layer decides.
                    self.io.event(TxEvent::Ack {
                        request,
                        source,
                        invite: None,
                    });
                    return Ok(());
                }
                return Err(RequestRejected {
                    error,
                    request: Box::new(request),
                });
            }
        };
        let existing = self.server_index.get(&key).copied();
        if request.method == Method::Ack {
            self.receive_ack(now, existing, request, source);
            return Ok(());
        }
        if let Some(id) = existing {
            if let Some(tx) = self.servers.get_mut(&id) {
                tracing::trace!(?id, "request retransmission absorbed");
                tx.on_retransmission(&mut self.io, source);
            }
            return Ok(());
        }
        if let Err(error) = self.check_capacity() {
            return Err(RequestRejected {
                error,
                request: Box::new(request),
            });
        }
        let id = ServerTxId(self.allocate_id());
        let invite = request.method == Method::Invite;
        let mut tx = ServerTransaction {
            id,
            invite,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            key: key.clone(),
            request: request.clone(),
            source: source.clone(),
            last_response: None,
            interval: self.config.timers.t1,
            timers: ArmedTimers::default(),
        };
        if let (true, Some(delay)) = (invite, self.config.trying_delay) {
            // §17.2.1: 100 Trying unless the TU sends a provisional within 200 ms.
            tx.arm(&mut self.io, Timer::Trying, now + delay);
        }
        tracing::debug!(?id, branch = %key.branch, method = %key.method, "server transaction started");
        self.server_index.insert(key, id);
        self.servers.insert(id, tx);
        self.io.event(TxEvent::Request {
            id,
            request,
            source,
        });
        Ok(())
    }

    fn receive_ack(
        &mut self,
        now: Instant,
        invite: Option<ServerTxId>,
        ack: Request,
        source: Target,
    ) {
        let Some((id, tx)) = invite.and_then(|id| self.servers.get_mut(&id).map(|tx| (id, tx)))
        else {
            // No INVITE transaction: the ACK to a 2xx (new branch, §17.1.1.3) or a stray.
            self.io.event(TxEvent::Ack {
                request: ack,
                source,
                invite: None,
            });
            return;
        };
        if tx.on_ack(&mut self.io, &self.config.timers, now, ack, source) == Fate::Terminated {
            self.remove_server(id);
        }
    }

    /// Sends a response in a server transaction (§17.2.1, §17.2.2), to the request's source
    /// (§18.2.2: the address and connection it came from, which honours `rport`). A 2xx to an
    /// INVITE moves the transaction to `Accepted`; the TU retransmits that 2xx itself
    /// (§13.3.1.4) through this same call.
    pub fn respond(
        &mut self,
        now: Instant,
        id: ServerTxId,
        response: &Response,
    ) -> Result<(), TxError> {
        let tx = self
            .servers
            .get_mut(&id)
            .ok_or(TxError::UnknownTransaction { id: id.into() })?;
        let fate = tx.respond(&mut self.io, &self.config.timers, now, response)?;
        if fate == Fate::Terminated {
            self.remove_server(id);
        }
        Ok(())
    }

    /// A response received from `source`: passed to its client transaction (§17.1.3), or
    /// reported as [`TxEvent::StrayResponse`].
    pub fn receive_response(&mut self, now: Instant, response: Response, source: Target) {
        let id = client_key(&response).and_then(|key| self.client_index.get(&key).copied());
        let Some((id, tx)) = id.and_then(|id| self.clients.get_mut(&id).map(|tx| (id, tx))) else {
            self.io.event(TxEvent::StrayResponse { response, source });
            return;
        };
        if tx.on_response(&mut self.io, &self.config.timers, now, response, source)
            == Fate::Terminated
        {
            self.remove_client(id);
        }
    }

    /// The INVITE server transaction a received CANCEL applies to (§9.2: matched by the
    /// §17.2.3 rules with the method taken as INVITE), whatever its state.
    pub fn find_invite_server_for_cancel(&self, cancel: &Request) -> Option<ServerTxId> {
        if cancel.method != Method::Cancel {
            return None;
        }
        let mut key = server_key(cancel).ok()?;
        key.method = Method::Invite;
        self.server_index.get(&key).copied()
    }

    /// A transmission of this transaction failed (connection refused or reset, TLS handshake
    /// failure, ICMP unreachable): the TU is told and the transaction terminates (§17.1.4,
    /// §17.2.4). Unknown (already terminated) ids are ignored.
    pub fn transport_error(&mut self, id: TxId) {
        let known = match id {
            TxId::Client(c) => self.clients.contains_key(&c),
            TxId::Server(s) => self.servers.contains_key(&s),
        };
        if !known {
            return;
        }
        tracing::debug!(?id, "transport error");
        self.io.event(TxEvent::TransportError { id });
        match id {
            TxId::Client(c) => self.remove_client(c),
            TxId::Server(s) => self.remove_server(s),
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.io.timers.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, (id, timer)) = entry.remove_entry();
            match id {
                TxId::Client(c) => {
                    let Some(tx) = self.clients.get_mut(&c) else {
                        continue;
                    };
                    // Disarming removes a timer from the queue, so a popped timer is always
                    // the one armed in its slot; anything else would be stale and is skipped.
                    if tx.timers[timer.slot()] != Some(key) {
                        continue;
                    }
                    tx.timers[timer.slot()] = None;
                    if tx.on_timer(&mut self.io, &self.config.timers, now, timer)
                        == Fate::Terminated
                    {
                        self.remove_client(c);
                    }
                }
                TxId::Server(s) => {
                    let Some(tx) = self.servers.get_mut(&s) else {
                        continue;
                    };
                    if tx.timers[timer.slot()] != Some(key) {
                        continue;
                    }
                    tx.timers[timer.slot()] = None;
                    if tx.on_timer(&mut self.io, &self.config.timers, now, timer)
                        == Fate::Terminated
                    {
                        self.remove_server(s);
                    }
                }
            }
        }
    }

    /// The earliest deadline of all armed timers: call [`TransactionLayer::handle_timeout`]
    /// then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.io
            .timers
            .deadlines
            .first_key_value()
            .map(|((at, _), _)| *at)
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.io.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.io.events.pop_front()
    }

    /// The state of a client transaction; `None` once it has terminated.
    pub fn client_state(&self, id: ClientTxId) -> Option<ClientState> {
        self.clients.get(&id).map(|tx| tx.state)
    }

    /// The state of a server transaction; `None` once it has terminated.
    pub fn server_state(&self, id: ServerTxId) -> Option<ServerState> {
        self.servers.get(&id).map(|tx| tx.state)
    }

    /// The request a client transaction sent.
    pub fn client_request(&self, id: ClientTxId) -> Option<&Request> {
        self.clients.get(&id).map(|tx| &tx.request)
    }

    /// Where a client transaction sends.
    pub fn client_target(&self, id: ClientTxId) -> Option<&Target> {
        self.clients.get(&id).map(|tx| &tx.target)
    }

    /// The request that created a server transaction.
    pub fn server_request(&self, id: ServerTxId) -> Option<&Request> {
        self.servers.get(&id).map(|tx| &tx.request)
    }

    /// Where a server transaction's responses go.
    pub fn server_source(&self, id: ServerTxId) -> Option<&Target> {
        self.servers.get(&id).map(|tx| &tx.source)
    }

    fn remove_client(&mut self, id: ClientTxId) {
        if let Some(mut tx) = self.clients.remove(&id) {
            self.io.disarm_all(&mut tx.timers);
            self.client_index.remove(&tx.key);
            tracing::debug!(?id, "client transaction terminated");
            self.io.event(TxEvent::Terminated { id: id.into() });
        }
    }

    fn remove_server(&mut self, id: ServerTxId) {
        if let Some(mut tx) = self.servers.remove(&id) {
            self.io.disarm_all(&mut tx.timers);
            self.server_index.remove(&tx.key);
            tracing::debug!(?id, "server transaction terminated");
            self.io.event(TxEvent::Terminated { id: id.into() });
        }
    }
}

/// The branch of a Via, which must carry the magic cookie (§8.1.1.7, §17.2.3).
fn rfc3261_branch(via: &Via) -> Result<&str, TxError> {
    let branch = via.branch().ok_or(TxError::MissingBranch)?;
    if !branch.starts_with(MAGIC_COOKIE) {
        return Err(TxError::LegacyBranch);
    }
    Ok(branch)
}

/// The branch of the top Via of a request to send.
fn top_branch(headers: &Headers) -> Result<String, TxError> {
    let via = headers.top_via().map_err(TxError::InvalidRequest)?;
    rfc3261_branch(&via).map(str::to_owned)
}

/// The §17.2.3 key of a received request; an ACK gets the INVITE's.
fn server_key(request: &Request) -> Result<ServerKey, TxError> {
    let via = request.headers.top_via().map_err(TxError::InvalidRequest)?;
    let branch = rfc3261_branch(&via)?;
    let method = match &request.method {
        Method::Ack => Method::Invite,
        other => other.clone(),
    };
    Ok(ServerKey {
        branch: branch.to_owned(),
        host: via.host().to_string().to_ascii_lowercase(),
        port: via.port().unwrap_or_else(|| via.transport().default_port()),
        method,
    })
}

/// The §17.1.3 key of a received response: top Via branch and `CSeq` method.
fn client_key(response: &Response) -> Option<ClientKey> {
    let via = response.headers.top_via().ok()?;
    let branch = via.branch()?.to_owned();
    let method = response.headers.cseq().ok()?.method;
    Some(ClientKey { branch, method })
}

/// The To tag of a response.
fn to_tag(response: &Response) -> Option<String> {
    let to = response.headers.to().ok()?;
    to.tag().map(str::to_owned)
}

/// A request built hop-by-hop from the one a client transaction sent, as §17.1.1.3 (ACK) and
/// §9.1 (CANCEL) describe: same Request-URI, Call-ID, From and `CSeq` number, the given To, the
/// top Via only, and the Route fields.
fn build_hop_request(original: &Request, method: &Method, cseq: u32, to: Option<&str>) -> Request {
    let mut request = Request::new(method.clone(), original.uri.clone());
    if let Some(via) = original.headers.first_value("Via") {
        request.headers.push("Via", via);
    }
    request.headers.push("Max-Forwards", MAX_FORWARDS);
    for name in ["From", "To", "Call-ID"] {
        let value = if name == "To" {
            to.or_else(|| original.headers.get("To"))
        } else {
            original.headers.get(name)
        };
        if let Some(value) = value {
            request.headers.push(name, value);
        }
    }
    request.headers.push("CSeq", format!("{cseq} {method}"));
    for route in original.headers.get_all("Route") {
        request.headers.push("Route", route);
    }
    request
}

/// §17.1.1.3: the ACK to a non-2xx final response, with the response's To (and its tag).
fn build_ack(invite: &Request, cseq: u32, response: &Response) -> Request {
    build_hop_request(invite, &Method::Ack, cseq, response.headers.get("To"))
}

/// §9.1: the CANCEL of an INVITE, with the INVITE's To.
fn build_cancel(invite: &Request, cseq: u32) -> Request {
    build_hop_request(invite, &Method::Cancel, cseq, None)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::sip::Message;

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK74bf9;rport\r\n\
        Max-Forwards: 70\r\n\
        Route: <sip:edge1.example.net;lr>, <sip:edge2.example.net;lr>\r\n\
        From: \"Alice\" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
        To: <sip:bob@biloxi.example.com>\r\n\
        Call-ID: 3848276298220188511@atlanta.example.com\r\n\
        CSeq: 2 INVITE\r\n\
        Contact: <sip:alice@198.51.100.10>\r\n\
        Content-Length: 0\r\n\r\n";

    const OPTIONS: &str = "OPTIONS sip:carrier.example.net SIP/2.0\r\n\
        Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bKopt1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:ping@atlanta.example.com>;tag=77\r\n\
        To: <sip:carrier.example.net>\r\n\
        Call-ID: opt-1@atlanta.example.com\r\n\
        CSeq: 1 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";

    const BYE: &str = "BYE sip:alice@198.51.100.10 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKbye1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:bob@biloxi.example.com>;tag=8321234356\r\n\
        To: \"Alice\" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
        Call-ID: 3848276298220188511@atlanta.example.com\r\n\
        CSeq: 1 BYE\r\n\
        Content-Length: 0\r\n\r\n";

    fn request(text: &str) -> Request {
        match Message::parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    /// `text` with its branch replaced.
    fn with_branch(text: &str, from: &str, to: &str) -> Request {
        request(&text.replace(from, to))
    }

    fn reply(request: &Request, status: u16, tag: Option<&str>) -> Response {
        let response = Response::from_request(request, status, None);
        match tag {
            Some(tag) => response.with_to_tag(tag),
            None => response,
        }
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 10], 5060))
    }

    fn layer() -> TransactionLayer {
        TransactionLayer::new(TransactionConfig::default()).expect("default config is valid")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn transmits(layer: &mut TransactionLayer) -> Vec<Transmit> {
        std::iter::from_fn(|| layer.poll_transmit()).collect()
    }

    fn events(layer: &mut TransactionLayer) -> Vec<TxEvent> {
        std::iter::from_fn(|| layer.poll_event()).collect()
    }

    fn text(transmit: &Transmit) -> String {
        String::from_utf8(transmit.bytes.clone()).expect("UTF-8")
    }

    /// What happened when, relative to the start of a test.
    type Timeline<T> = Vec<(Duration, T)>;

    /// Jumps from deadline to deadline until none is left; returns when (relative to `t0`)
    /// each transmission happened, and the events.
    fn run_to_idle(
        layer: &mut TransactionLayer,
        t0: Instant,
    ) -> (Timeline<Transmit>, Timeline<TxEvent>) {
        let mut sent = Vec::new();
        let mut seen = Vec::new();
        while let Some(at) = layer.poll_timeout() {
            layer.handle_timeout(at);
            sent.extend(transmits(layer).into_iter().map(|t| (at - t0, t)));
            seen.extend(events(layer).into_iter().map(|e| (at - t0, e)));
        }
        assert!(layer.is_empty(), "transactions left: {layer:?}");
        (sent, seen)
    }

    fn times<T>(list: &[(Duration, T)]) -> Vec<Duration> {
        list.iter().map(|(at, _)| *at).collect()
    }

    fn response_event(event: &TxEvent) -> (ClientTxId, u16, bool) {
        match event {
            TxEvent::Response {
                id,
                response,
                retransmission,
            } => (*id, response.status, *retransmission),
            other => panic!("not a response event: {other:?}"),
        }
    }

    fn new_request_id(layer: &mut TransactionLayer) -> ServerTxId {
        match events(layer).as_slice() {
            [TxEvent::Request { id, .. }] => *id,
            other => panic!("expected one request event: {other:?}"),
        }
    }

    #[test]
    fn invite_client_over_udp_retransmits_on_timer_a_until_timer_b() {
        let t0 = Instant::now();
        let mut layer = layer();
        let id = layer
            .send_request(t0, request(INVITE), Target::udp(peer()))
            .unwrap();
        let first = transmits(&mut layer);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].bytes, request(INVITE).to_bytes());
        assert_eq!(first[0].target, Target::udp(peer()));
        assert_eq!(first[0].transaction, Some(TxId::Client(id)));
        assert_eq!(layer.client_state(id), Some(ClientState::Calling));
        assert_eq!(layer.poll_timeout(), Some(t0 + ms(500)));

        let (sent, seen) = run_to_idle(&mut layer, t0);
        // Timer A: T1, 2*T1, 4*T1... after each send (§17.1.1.2).
        assert_eq!(
            times(&sent),
            [500, 1500, 3500, 7500, 15500, 31500].map(ms).to_vec()
        );
        assert!(sent.iter().all(|(_, t)| t.bytes == first[0].bytes));
        // Timer B: 64*T1.
        assert_eq!(
            seen,
            vec![
                (
                    ms(32_000),
                    TxEvent::Timeout {
                        id: id.into(),
                        timer: Timer::B
                    }
                ),
                (ms(32_000), TxEvent::Terminated { id: id.into() }),
            ]
        );
        assert_eq!(layer.client_state(id), None);
    }

    #[test]
    fn invite_client_acks_a_non_2xx_final_and_its_retransmissions() {
        let t0 = Instant::now();
        let mut layer = layer();
        let invite = request(INVITE);
        let id = layer
            .send_request(t0, invite.clone(), Target::udp(peer()))
            .unwrap();
        transmits(&mut layer);

        layer.receive_response(
            t0 + ms(100),
            reply(&invite, 180, Some("8321234356")),
            Target::udp(peer()),
        );
        assert_eq!(
            events(&mut layer)
                .iter()
                .map(response_event)
                .collect::<Vec<_>>(),
            vec![(id, 180, false)]
        );
        assert_eq!(layer.client_state(id), Some(ClientState::Proceeding));
        // Proceeding stops Timers A and B.
        assert_eq!(layer.poll_timeout(), None);

        let busy = reply(&invite, 486, Some("8321234356"));
        layer.receive_response(t0 + ms(2000), busy.clone(), Target::udp(peer()));
        assert_eq!(
            events(&mut layer)
                .iter()
                .map(response_event)
                .collect::<Vec<_>>(),
            vec![(id, 486, false)]
        );
        let ack = transmits(&mut layer);
        assert_eq!(ack.len(), 1);
        assert_eq!(ack[0].target, Target::udp(peer()));
        // §17.1.1.3: Request-URI, top Via, From, Call-ID and Route of the INVITE, To of the
        // response, CSeq number with ACK.
        assert_eq!(
            text(&ack[0]),
            "ACK sip:bob@biloxi.example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK74bf9;rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"Alice\" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
             To: <sip:bob@biloxi.example.com>;tag=8321234356\r\n\
             Call-ID: 3848276298220188511@atlanta.example.com\r\n\
             CSeq: 2 ACK\r\n\
             Route: <sip:edge1.example.net;lr>, <sip:edge2.example.net;lr>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        assert_eq!(layer.client_state(id), Some(ClientState::Completed));

        // A retransmitted 486 is answered with the same ACK and not passed up.
        layer.receive_response(t0 + ms(2500), busy.clone(), Target::udp(peer()));
        assert_eq!(events(&mut layer), vec![]);
        let again = transmits(&mut layer);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].bytes, ack[0].bytes);

        // Timer D: 32 s after the final response; then nothing is left.
        let (sent, seen) = run_to_idle(&mut layer, t0);
        assert!(sent.is_empty());
        assert_eq!(
            seen,
            vec![(ms(34_000), TxEvent::Terminated { id: id.into() })]
        );
        layer.receive_response(t0 + ms(40_000), busy.clone(), Target::udp(peer()));
        assert_eq!(
            events(&mut layer),
            vec![TxEvent::StrayResponse {
                response: busy,
                source: Target::udp(peer())
            }]
        );
        assert!(transmits(&mut layer).is_empty());
    }

    #[test]
    fn invite_client_accepted_passes_every_2xx_up_until_timer_m() {
        let t0 = Instant::now();
        let mut layer = layer();
        let invite = request(INVITE);
        let id = layer
            .send_request(t0, invite.clone(), Target::udp(peer()))
            .unwrap();
        transmits(&mut layer);

        let ok = reply(&invite, 200, Some("a1"));
        layer.receive_response(t0 + ms(1000), ok.clone(), Target::udp(peer()));
        assert_eq!(
            events(&mut layer)
                .iter()
                .map(response_event)
                .collect::<Vec<_>>(),
            vec![(id, 200, false)]
        );
        // RFC 6026 on §17.1.1.2: no ACK from the transaction, no retransmission of the INVITE.
        assert!(transmits(&mut layer).is_empty());
        assert_eq!(layer.client_state(id), Some(ClientState::Accepted));
        assert_eq!(layer.poll_timeout(), Some(t0 + ms(33_000)));

        // A retransmitted 200 is passed up flagged; a 200 of another fork is new.
        layer.receive_response(t0 + ms(1500), ok.clone(), Target::udp(peer()));
        layer.receive_response(
            t0 + ms(1600),
            reply(&invite, 200, Some("b2")),
            Target::udp(peer()),
        );
        // A late non-2xx is absorbed.
        layer.receive_response(
            t0 + ms(1700),
            reply(&invite, 486, Some("c3")),
            Target::udp(peer()),
        );
        assert_eq!(
            events(&mut layer)
                .iter()
                .map(response_event)
                .collect::<Vec<_>>(),
            vec![(id, 200, true), (id, 200, false)]
        );
        assert!(transmits(&mut layer).is_empty());

        let (sent, seen) = run_to_idle(&mut layer, t0);
        assert!(sent.is_empty());
        assert_eq!(
            seen,
            vec![(ms(33_000), TxEvent::Terminated { id: id.into() })]
        );
    }

    #[test]
    fn invite_client_over_tcp_never_retransmits() {
        let t0 = Instant::now();
        let mut layer = layer();
        let invite = request(INVITE);
        let target = Target::tcp(peer(), Some(7));
        let id = layer
            .send_request(t0, invite.clone(), target.clone())
            .unwrap();
        assert_eq!(transmits(&mut layer).len(), 1);
        // Only Timer B is armed.
        assert_eq!(layer.poll_timeout(), Some(t0 + ms(32_000)));
        layer.handle_timeout(t0 + ms(31_999));
        assert!(transmits(&mut layer).is_empty());

        // Timer D is zero on reliable transports: the ACK goes out and the transaction ends.
        layer.receive_response(
            t0 + ms(1000),
            reply(&invite, 603, Some("x")),
            target.clone(),
        );
        let ack = transmits(&mut layer);
        assert_eq!(ack.len(), 1);
        assert_eq!(ack[0].target, target);
        assert!(text(&ack[0]).starts_with("ACK sip:bob@biloxi.example.com SIP/2.0\r\n"));
        let seen = events(&mut layer);
        assert_eq!(response_event(&seen[0]), (id, 603, false));
        assert_eq!(seen[1], TxEvent::Terminated { id: id.into() });
        assert!(layer.is_empty());
        assert_eq!(layer.poll_timeout(), None);
    }

    #[test]
    fn invite_client_over_tcp_times_out_on_timer_b_without_retransmitting() {
        let t0 = Instant::now();
        let mut layer = layer();
        let id = layer
            .send_request(
                t0,
                request(INVITE),
                Target::tls(peer(), None, Some("carrier.example.net".into())),
            )
            .unwrap();
        assert_eq!(transmits(&mut layer).len(), 1);
        let (sent, seen) = run_to_idle(&mut layer, t0);
        assert!(sent.is_empty());
        assert_eq!(
            seen[0],
            (
                ms(32_000),
                TxEvent::Timeout {
                    id: id.into(),
                    timer: Timer::B
                }
            )
        );
    }

    #[test]
    fn non_invite_client_timer_e_doubles_up_to_t2_until_timer_f() {
        let t0 = Instant::now();
        let mut layer = layer();
        let id = layer
            .send_request(t0, request(OPTIONS), Target::udp(peer()))
            .unwrap();
        assert_eq!(layer.client_state(id), Some(ClientState::Trying));
        assert_eq!(transmits(&mut layer).len(), 1);
        let (sent, seen) = run_to_idle(&mut layer, t0);
        // Timer E: 500, 1000, 2000, then T2 = 4 s (§17.1.2.2).
        assert_eq!(
            times(&sent),
            [500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
                .map(ms)
                .to_vec()
        );
        assert_eq!(
            seen,
            vec![
                (
                    ms(32_000),
                    TxEvent::Timeout {
                        id: id.into(),
                        timer: Timer::F
                    }
                ),
                (ms(32_000), TxEvent::Terminated { id: id.into() }),
            ]
        );
    }

    #[test]
    fn non_invite_client_proceeding_retransmits_at_t2_and_absorbs_in_completed() {
        let t0 = Instant::now();
        let mut layer = layer();
        let bye = request(BYE);
        let id = layer
            .send_request(t0, bye.clone(), Target::udp(peer()))
            .unwrap();
        transmits(&mut layer);
        layer.receive_response(t0 + ms(100), reply(&bye, 100, None), Target::udp(peer()));
        assert_eq!(layer.client_state(id), Some(ClientState::Proceeding));
        // E still fires at 500 ms, then every T2 in Proceeding.
        layer.handle_timeout(t0 + ms(500));
        assert_eq!(transmits(&mut layer).len(), 1);
        assert_eq!(layer.poll_timeout(), Some(t0 + ms(4500)));
        layer.handle_timeout(t0 + ms(4500));
        assert_eq!(transmits(&mut layer).len(), 1);
        assert_eq!(layer.poll_timeout(), Some(t0 + ms(8500)));

        let ok = reply(&bye, 200, None);
        layer.receive_response(t0 + ms(5000), ok.clone(), Target::udp(peer()));
        layer.receive_response(t0 + ms(5100), ok.clone(), Target::udp(peer()));
        assert_eq!(
            events(&mut layer)
                .iter()
                .map(response_event)
                .collect::<Vec<_>>(),
            vec![(id, 100, false), (id, 200, false)]
        );
        assert_eq!(layer.client_state(id), Some(ClientState::Completed));
        // Timer K = T4.
        let (sent, seen) = run_to_idle(&mut layer, t0);
        assert!(sent.is_empty());
        assert_eq!(
            seen,
            vec![(ms(10_000), TxEvent::Terminated { id: id.into() })]
        );
    }

    #[test]
    fn non_invite_client_over_tcp_ends_with_the_final_response() {
        let t0 = Instant::now();
        let mut layer = layer();
        let bye = request(BYE);
        let id = layer
            .send_request(t0, bye.clone(), Target::tcp(peer(), Some(1)))
            .unwrap();
        transmits(&mut layer);
        assert_eq!(layer.poll_timeout(), Some(t0 + ms(32_000)));
        layer.receive_response(
            t0 + ms(50),
            reply(&bye, 200, None),
            Target::tcp(peer(), Some(1)),
        );
        let seen = events(&mut layer);
        assert_eq!(response_event(&seen[0]), (id, 200, false));
        assert_eq!(seen[1], TxEvent::Terminated { id: id.into() });
        assert!(layer.is_empty());
    }

    #[test]
    fn invite_server_retransmits_non_2xx_on_timer_g_until_timer_h() {
        let t0 = Instant::now();
        let mut layer = layer();
        let invite = request(INVITE);
        layer
            .receive_request(t0, invite.clone(), Target::udp(peer()))
            .unwrap();
        let seen = events(&mut layer);
        let TxEvent::Request {
            id,
            request: got,
            source,
        } = &seen[0]
        else {
            panic!("{seen:?}")
        };
        let id = *id;
        assert_eq!(got, &invite);
        assert_eq!(source, &Target::udp(peer()));
        assert_eq!(layer.server_state(id), Some(ServerState::Proceeding));

        layer
            .respond(t0 + ms(10), id, &reply(&invite, 100, None))
            .unwrap();
        let ringing = reply(&invite, 180, Some("srv1"));
        layer.respond(t0 + ms(20), id, &ringing).unwrap();
        assert_eq!(transmits(&mut layer).len(), 2);
        // A retransmitted INVITE gets the last provisional again (§17.2.1).
        layer
            .receive_request(t0 + ms(300), invite.clone(), Target::udp(peer()))
            .unwrap();
        assert!(events(&mut layer).is_empty());
        let again = transmits(&mut layer);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].bytes, ringing.to_bytes());
        assert_eq!(again[0].target, Target::udp(peer()));

        let busy = reply(&invite, 486, Some("srv1"));
        layer.respond(t0 + ms(1000), id, &busy).unwrap();
        assert_eq!(transmits(&mut layer)[0].bytes, busy.to_bytes());
        assert_eq!(layer.server_state(id), Some(ServerState::Completed));
        // A second final response is refused.
        assert_eq!(
            layer.respond(t0 + ms(1001), id, &reply(&invite, 500, Some("srv1"))),
            Err(TxError::ResponseNotAllowed {
                status: 500,
                state: ServerState::Completed
            })
        );
        // A retransmitted INVITE in Completed gets the final response.
        layer
            .receive_request(t0 + ms(1200), invite.clone(), Target::udp(peer()))
            .unwrap();
        assert_eq!(transmits(&mut layer)[0].bytes, busy.to_bytes());

        let (sent, seen) = run_to_idle(&mut layer, t0);
        // Timer G: T1 doubling, capped at T2; Timer H at 64*T1 (§17.2.1).
        assert_eq!(
            times(&sent),
            [1500, 2500, 4500, 8500, 12_500, 16_500, 20_500, 24_500, 28_500, 32_500]
                .map(ms)
                .to_vec()
        );
        assert!(sent.iter().all(|(_, t)| t.bytes == busy.to_bytes()));
        assert_eq!(
            seen,
            vec![
                (
                    ms(33_000),
                    TxEvent::Timeout {
                        id: id.into(),
                        timer: Timer::H
                    }
                ),
                (ms(33_000), TxEvent::Terminated { id: id.into() }),
            ]
        );
    }

    #[test]
    fn invite_server_absorbs_the_ack_to_a_non_2xx_then_timer_i() {
        let t0 = Instant::now();
        let mut layer = layer();
        let invite = request(INVITE);
        layer
            .receive_request(t0, invite.clone(), Target::udp(peer()))
            .unwrap();
        let id = new_request_id(&mut layer);
        let busy = reply(&invite, 486, Some("srv1"));
        layer.respond(t0, id, &busy).unwrap();
        transmits(&mut layer);

        let ack = build_ack(&invite, 2, &busy);
        layer
            .receive_request(t0 + ms(200), ack.clone(), Target::udp(peer()))
            .unwrap();
        assert_eq!(layer.server_state(id), Some(ServerState::Confirmed));
        // Retransmissions of the ACK and of the INVITE are absorbed silently.
        layer
            .receive_request(t0 + ms(300), ack, Target::udp(peer()))
            .unwrap();
        layer
            .receive_request(t0 + ms(400), invite, Target::udp(peer()))
            .unwrap();
        assert!(events(&mut layer).is_empty());
        assert!(transmits(&mut layer).is_empty());

        // Timer I = T4 after the ACK; G and H are gone.
        let (sent, seen) = run_to_idle(&mut layer, t0);
        assert!(sent.is_empty());
        assert_eq!(
            seen,
            vec![(ms(5200), TxEvent::Terminated { id: id.into() })]
        );
    }

    #[test]
    fn invite_server_over_tcp_ends_on_the_ack() {
        let t0 = Instant::now();
        let mut layer = layer();
        let invite = request(INVITE);
        let source = Target::tcp(peer(), Some(3));
        layer
            .receive_request(t0, invite.clone(), source.clone())
            .unwrap();
        let id = new_request_id(&mut layer);
        let busy = reply(&invite, 486, Some("srv1"));
        layer.respond(t0, id, &busy).unwrap();
        let sent = transmits(&mut layer);
        assert_eq!(sent[0].target, source);
        // No Timer G on reliable transports: only H is pending.
        assert_eq!(layer.poll_timeout(), Some(t0 + ms(32_000)));
        layer
            .receive_request(t0 + ms(100), build_ack(&invite, 2, &busy), source)
            .unwrap();
        assert_eq!(
            events(&mut layer),
            vec![TxEvent::Terminated { id: id.into() }]
        );
        assert!(layer.is_empty());
    }

    #[test]
    fn invite_server_accepted_leaves_2xx_to_the_tu_and_passes_acks_up() {
        let t0 = Instant::now();
        let mut layer = layer();
        let invite = request(INVITE);
        layer
            .receive_request(t0, invite.clone(), Target::udp(peer()))
            .unwrap();
        let id = new_request_id(&mut layer);
        let ok = reply(&invite, 200, Some("srv1"));
        layer.respond(t0 + ms(1000), id, &ok).unwrap();
        assert_eq!(transmits(&mut layer)[0].bytes, ok.to_bytes());
        assert_eq!(layer.server_state(id), Some(ServerState::Accepted));
        // No Timer G for a 2xx: only Timer L (RFC 6026 on §17.2.1).
        assert_eq!(layer.poll_timeout(), Some(t0 + ms(33_000)));

        // INVITE retransmissions are absorbed; the TU's 2xx retransmissions go out.
        layer
            .receive_request(t0 + ms(1100), invite.clone(), Target::udp(peer()))
            .unwrap();
        assert!(transmits(&mut layer).is_empty());
        layer.respond(t0 + ms(1500), id, &ok).unwrap();
        assert_eq!(transmits(&mut layer)[0].bytes, ok.to_bytes());
        assert_eq!(
            layer.respond(t0 + ms(1600), id, &reply(&invite, 486, Some("srv1"))),
            Err(TxError::ResponseNotAllowed {
                status: 486,
                state: ServerState::Accepted
            })
        );

        // The ACK to the 2xx has its own branch (§17.1.1.3): passed up without a transaction.
        let mut ack = build_ack(&invite, 2, &ok);
        ack.headers.replace_first_value(
            "Via",
            "SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bKack2xx;rport",
        );
        layer
            .receive_request(t0 + ms(1700), ack.clone(), Target::udp(peer()))
            .unwrap();
        // An ACK reusing the INVITE's branch matches the Accepted transaction.
        let same_branch = build_ack(&invite, 2, &ok);
        layer
            .receive_request(t0 + ms(1800), same_branch.clone(), Target::udp(peer()))
            .unwrap();
        assert_eq!(
            events(&mut layer),
            vec![
                TxEvent::Ack {
                    request: ack,
                    source: Target::udp(peer()),
                    invite: None
                },
                TxEvent::Ack {
                    request: same_branch,
                    source: Target::udp(peer()),
                    invite: Some(id)
                },
            ]
        );

        let (sent, seen) = run_to_idle(&mut layer, t0);
        assert!(sent.is_empty());
        assert_eq!(
            seen,
            vec![(ms(33_000), TxEvent::Terminated { id: id.into() })]
        );
    }

    #[test]
    fn invite_server_sends_100_trying_when_the_tu_is_silent_for_200_ms() {
        let t0 = Instant::now();
        let mut layer = layer();
        let invite = request(INVITE);
        layer
            .receive_request(t0, invite.clone(), Target::udp(peer()))
            .unwrap();
        let id = new_request_id(&mut layer);
        assert_eq!(layer.poll_timeout(), Some(t0 + ms(200)));
        layer.handle_timeout(t0 + ms(200));
        let trying = transmits(&mut layer);
        assert_eq!(trying.len(), 1);
        assert_eq!(
            text(&trying[0]),
            "SIP/2.0 100 Trying\r\n\
             Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK74bf9;rport\r\n\
             From: \"Alice\" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
             To: <sip:bob@biloxi.example.com>\r\n\
             Call-ID: 3848276298220188511@atlanta.example.com\r\n\
             CSeq: 2 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        );
        // It is the last provisional, re-sent on a retransmitted INVITE.
        layer
            .receive_request(t0 + ms(500), invite.clone(), Target::udp(peer()))
            .unwrap();
        assert_eq!(transmits(&mut layer)[0].bytes, trying[0].bytes);
        layer
            .respond(t0 + ms(600), id, &reply(&invite, 200, Some("t")))
            .unwrap();
        transmits(&mut layer);
        run_to_idle(&mut layer, t0);

        // A TU that answers within 200 ms gets no extra 100.
        let t1 = t0 + ms(60_000);
        layer
            .receive_request(t1, invite.clone(), Target::udp(peer()))
            .unwrap();
        let id = new_request_id(&mut layer);
        layer
            .respond(t1 + ms(50), id, &reply(&invite, 180, Some("t")))
            .unwrap();
        assert_eq!(transmits(&mut layer).len(), 1);
        assert_eq!(layer.poll_timeout(), None);
        layer.transport_error(id.into());
        assert!(layer.is_empty());
    }

    #[test]
    fn non_invite_server_absorbs_retransmissions_until_timer_j() {
        let t0 = Instant::now();
        let mut layer = layer();
        let options = request(OPTIONS);
        layer
            .receive_request(t0, options.clone(), Target::udp(peer()))
            .unwrap();
        let id = new_request_id(&mut layer);
        assert_eq!(layer.server_state(id), Some(ServerState::Trying));
        // Trying: a retransmission is absorbed and nothing is sent.
        layer
            .receive_request(t0 + ms(500), options.clone(), Target::udp(peer()))
            .unwrap();
        assert!(events(&mut layer).is_empty());
        assert!(transmits(&mut layer).is_empty());
        // No timer before the final response (no 100 for non-INVITE).
        assert_eq!(layer.poll_timeout(), None);

        let ok = reply(&options, 200, Some("o1"));
        layer.respond(t0 + ms(600), id, &ok).unwrap();
        assert_eq!(transmits(&mut layer)[0].bytes, ok.to_bytes());
        assert_eq!(layer.server_state(id), Some(ServerState::Completed));
        // Completed: retransmissions get the final response again.
        layer
            .receive_request(t0 + ms(1500), options.clone(), Target::udp(peer()))
            .unwrap();
        assert!(events(&mut layer).is_empty());
        assert_eq!(transmits(&mut layer)[0].bytes, ok.to_bytes());

        // Timer J = 64*T1.
        let (sent, seen) = run_to_idle(&mut layer, t0);
        assert!(sent.is_empty());
        assert_eq!(
            seen,
            vec![(ms(32_600), TxEvent::Terminated { id: id.into() })]
        );
        // After J the same request is new again.
        layer
            .receive_request(t0 + ms(40_000), options, Target::udp(peer()))
            .unwrap();
        let again = new_request_id(&mut layer);
        assert_ne!(again, id);
        layer.transport_error(again.into());
        assert!(layer.is_empty());
    }

    #[test]
    fn non_invite_server_over_tls_ends_with_the_final_response() {
        let t0 = Instant::now();
        let mut layer = layer();
        let options = request(OPTIONS);
        let source = Target::tls(peer(), Some(9), None);
        layer
            .receive_request(t0, options.clone(), source.clone())
            .unwrap();
        let id = new_request_id(&mut layer);
        layer.respond(t0, id, &reply(&options, 100, None)).unwrap();
        assert_eq!(layer.server_state(id), Some(ServerState::Proceeding));
        layer
            .respond(t0 + ms(5), id, &reply(&options, 200, Some("o")))
            .unwrap();
        let sent = transmits(&mut layer);
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|t| t.target == source));
        assert_eq!(
            events(&mut layer),
            vec![TxEvent::Terminated { id: id.into() }]
        );
        assert!(layer.is_empty());
        assert_eq!(
            layer.respond(t0 + ms(6), id, &reply(&options, 200, Some("o"))),
            Err(TxError::UnknownTransaction { id: id.into() })
        );
    }

    #[test]
    fn cancel_is_its_own_transaction_and_finds_the_invite() {
        let t0 = Instant::now();
        let mut layer = layer();
        let invite = request(INVITE);
        layer
            .receive_request(t0, invite.clone(), Target::udp(peer()))
            .unwrap();
        let invite_id = new_request_id(&mut layer);
        layer
            .respond(t0, invite_id, &reply(&invite, 180, Some("c")))
            .unwrap();

        let cancel = build_cancel(&invite, 2);
        layer
            .receive_request(t0 + ms(100), cancel.clone(), Target::udp(peer()))
            .unwrap();
        let cancel_id = new_request_id(&mut layer);
        assert_ne!(TxId::from(cancel_id), TxId::from(invite_id));
        assert_eq!(
            layer.find_invite_server_for_cancel(&cancel),
            Some(invite_id)
        );
        // Another branch or another sent-by does not match (§17.2.3).
        let other_branch = with_branch(
            &String::from_utf8(cancel.to_bytes()).unwrap(),
            "z9hG4bK74bf9",
            "z9hG4bK74bf0",
        );
        assert_eq!(layer.find_invite_server_for_cancel(&other_branch), None);
        let other_port = with_branch(
            &String::from_utf8(cancel.to_bytes()).unwrap(),
            "198.51.100.10:5060",
            "198.51.100.10:5070",
        );
        assert_eq!(layer.find_invite_server_for_cancel(&other_port), None);
        // The sent-by host compares case-insensitively, the default port is 5060.
        let spelled = with_branch(INVITE, "198.51.100.10:5060", "PBX.example.com")
            .headers
            .clone();
        let mut host_invite = invite.clone();
        host_invite.headers = spelled;
        let mut host_cancel = build_cancel(&host_invite, 2);
        layer
            .receive_request(t0 + ms(110), host_invite.clone(), Target::udp(peer()))
            .unwrap();
        let host_invite_id = new_request_id(&mut layer);
        host_cancel.headers.replace_first_value(
            "Via",
            "SIP/2.0/UDP pbx.EXAMPLE.com:5060;branch=z9hG4bK74bf9;rport",
        );
        assert_eq!(
            layer.find_invite_server_for_cancel(&host_cancel),
            Some(host_invite_id)
        );
        // The INVITE is not found from a non-CANCEL request.
        assert_eq!(layer.find_invite_server_for_cancel(&invite), None);

        // A retransmitted CANCEL is absorbed.
        layer
            .receive_request(t0 + ms(200), cancel.clone(), Target::udp(peer()))
            .unwrap();
        assert!(events(&mut layer).is_empty());
        layer
            .respond(t0 + ms(200), cancel_id, &reply(&cancel, 200, Some("c")))
            .unwrap();
        let terminated = reply(&invite, 487, Some("c"));
        layer.respond(t0 + ms(200), invite_id, &terminated).unwrap();
        layer
            .receive_request(
                t0 + ms(300),
                build_ack(&invite, 2, &terminated),
                Target::udp(peer()),
            )
            .unwrap();
        assert_eq!(layer.server_state(invite_id), Some(ServerState::Confirmed));
        layer.transport_error(host_invite_id.into());
        run_to_idle(&mut layer, t0);
    }

    #[test]
    fn invite_client_cancel_waits_for_a_provisional_and_copies_the_invite() {
        let t0 = Instant::now();
        let mut layer = layer();
        let invite = request(INVITE);
        let id = layer
            .send_request(t0, invite.clone(), Target::udp(peer()))
            .unwrap();
        transmits(&mut layer);
        // §9.1: no CANCEL before a provisional response.
        assert_eq!(layer.send_cancel(t0, id), Err(TxError::NoProvisionalYet));

        layer.receive_response(
            t0 + ms(100),
            reply(&invite, 180, Some("r")),
            Target::udp(peer()),
        );
        let cancel_id = layer.send_cancel(t0 + ms(200), id).unwrap();
        let sent = transmits(&mut layer);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].target, Target::udp(peer()));
        assert_eq!(
            text(&sent[0]),
            "CANCEL sip:bob@biloxi.example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK74bf9;rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"Alice\" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
             To: <sip:bob@biloxi.example.com>\r\n\
             Call-ID: 3848276298220188511@atlanta.example.com\r\n\
             CSeq: 2 CANCEL\r\n\
             Route: <sip:edge1.example.net;lr>, <sip:edge2.example.net;lr>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        // Same branch, different CSeq method: each response finds its own transaction.
        let cancel = layer.client_request(cancel_id).unwrap().clone();
        layer.receive_response(
            t0 + ms(300),
            reply(&cancel, 200, Some("r")),
            Target::udp(peer()),
        );
        layer.receive_response(
            t0 + ms(310),
            reply(&invite, 487, Some("r")),
            Target::udp(peer()),
        );
        let seen = events(&mut layer);
        assert_eq!(response_event(&seen[0]), (id, 180, false));
        assert_eq!(response_event(&seen[1]), (cancel_id, 200, false));
        assert_eq!(response_event(&seen[2]), (id, 487, false));
        assert!(text(&transmits(&mut layer)[0]).starts_with("ACK "));
        // After the final response there is nothing to cancel.
        assert_eq!(
            layer.send_cancel(t0 + ms(400), id),
            Err(TxError::AlreadyFinal {
                state: ClientState::Completed
            })
        );
        run_to_idle(&mut layer, t0);
    }

    #[test]
    fn responses_match_by_branch_and_cseq_method() {
        let t0 = Instant::now();
        let mut layer = layer();
        let invite = request(INVITE);
        let id = layer
            .send_request(t0, invite.clone(), Target::udp(peer()))
            .unwrap();
        transmits(&mut layer);
        let mut wrong_method = reply(&invite, 200, Some("w"));
        wrong_method.headers.set("CSeq", "2 OPTIONS");
        let mut wrong_branch = reply(&invite, 200, Some("w"));
        wrong_branch.headers.replace_first_value(
            "Via",
            "SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK74bf9x;rport",
        );
        for stray in [wrong_method, wrong_branch] {
            layer.receive_response(t0 + ms(10), stray.clone(), Target::udp(peer()));
            assert_eq!(
                events(&mut layer),
                vec![TxEvent::StrayResponse {
                    response: stray,
                    source: Target::udp(peer())
                }]
            );
        }
        assert_eq!(layer.client_state(id), Some(ClientState::Calling));
        layer.transport_error(id.into());
        assert_eq!(
            events(&mut layer),
            vec![
                TxEvent::TransportError { id: id.into() },
                TxEvent::Terminated { id: id.into() }
            ]
        );
        assert!(layer.is_empty());
        assert_eq!(layer.poll_timeout(), None);
        // An unknown id is ignored.
        layer.transport_error(id.into());
        assert!(events(&mut layer).is_empty());
    }

    #[test]
    fn requests_without_the_magic_cookie_are_rejected_except_ack() {
        let t0 = Instant::now();
        let mut layer = layer();
        let legacy = with_branch(INVITE, "branch=z9hG4bK74bf9", "branch=74bf9");
        let err = layer
            .receive_request(t0, legacy.clone(), Target::udp(peer()))
            .unwrap_err();
        assert_eq!(err.error, TxError::LegacyBranch);
        assert_eq!(err.error.status_code(), 400);
        assert_eq!(*err.request, legacy);

        let no_branch = with_branch(INVITE, ";branch=z9hG4bK74bf9", "");
        let err = layer
            .receive_request(t0, no_branch, Target::udp(peer()))
            .unwrap_err();
        assert_eq!(err.error, TxError::MissingBranch);
        assert_eq!(err.error.status_code(), 400);

        let legacy_ack = build_ack(&legacy, 2, &reply(&legacy, 200, Some("l")));
        layer
            .receive_request(t0, legacy_ack.clone(), Target::udp(peer()))
            .unwrap();
        assert_eq!(
            events(&mut layer),
            vec![TxEvent::Ack {
                request: legacy_ack,
                source: Target::udp(peer()),
                invite: None
            }]
        );
        assert!(layer.is_empty());
    }

    #[test]
    fn the_transaction_limit_refuses_new_transactions_only() {
        let t0 = Instant::now();
        let mut layer = TransactionLayer::new(TransactionConfig {
            max_transactions: 2,
            ..TransactionConfig::default()
        })
        .unwrap();
        let first = request(OPTIONS);
        layer
            .receive_request(t0, first.clone(), Target::udp(peer()))
            .unwrap();
        let first_id = new_request_id(&mut layer);
        layer
            .send_request(t0, request(BYE), Target::udp(peer()))
            .unwrap();
        transmits(&mut layer);

        let third = with_branch(OPTIONS, "z9hG4bKopt1", "z9hG4bKopt2");
        let err = layer
            .receive_request(t0, third.clone(), Target::udp(peer()))
            .unwrap_err();
        assert_eq!(err.error, TxError::TooManyTransactions { limit: 2 });
        assert_eq!(err.error.status_code(), 503);
        assert_eq!(*err.request, third);
        assert_eq!(
            layer.send_request(
                t0,
                with_branch(BYE, "z9hG4bKbye1", "z9hG4bKbye2"),
                Target::udp(peer())
            ),
            Err(TxError::TooManyTransactions { limit: 2 })
        );
        // Retransmissions and ACKs need no new transaction.
        layer
            .receive_request(t0, first.clone(), Target::udp(peer()))
            .unwrap();
        let ack = build_ack(
            &request(INVITE),
            2,
            &reply(&request(INVITE), 200, Some("a")),
        );
        layer.receive_request(t0, ack, Target::udp(peer())).unwrap();
        assert!(matches!(
            events(&mut layer).as_slice(),
            [TxEvent::Ack { invite: None, .. }]
        ));
        assert_eq!(layer.len(), 2);

        layer
            .respond(t0, first_id, &reply(&first, 200, Some("f")))
            .unwrap();
        run_to_idle(&mut layer, t0);
        layer
            .receive_request(t0 + ms(60_000), third, Target::udp(peer()))
            .unwrap();
        assert_eq!(layer.len(), 1);
        let third_id = new_request_id(&mut layer);
        layer.transport_error(third_id.into());
        assert!(layer.is_empty());
    }

    #[test]
    fn send_request_checks_its_request() {
        let t0 = Instant::now();
        let mut layer = layer();
        let ack = build_ack(
            &request(INVITE),
            2,
            &reply(&request(INVITE), 486, Some("a")),
        );
        assert_eq!(
            layer.send_request(t0, ack, Target::udp(peer())),
            Err(TxError::AckInTransaction)
        );
        assert_eq!(
            layer.send_request(
                t0,
                with_branch(OPTIONS, "z9hG4bKopt1", "opt1"),
                Target::udp(peer())
            ),
            Err(TxError::LegacyBranch)
        );
        let mut mismatched = request(OPTIONS);
        mismatched.headers.set("CSeq", "1 INFO");
        assert_eq!(
            layer.send_request(t0, mismatched, Target::udp(peer())),
            Err(TxError::CSeqMethodMismatch)
        );
        layer
            .send_request(t0, request(OPTIONS), Target::udp(peer()))
            .unwrap();
        assert_eq!(
            layer.send_request(t0, request(OPTIONS), Target::udp(peer())),
            Err(TxError::DuplicateTransaction)
        );
        assert_eq!(layer.len(), 1);
        // The stateless path bypasses transactions entirely.
        transmits(&mut layer);
        layer.send_stateless(b"ACK".to_vec(), Target::udp(peer()));
        assert_eq!(transmits(&mut layer)[0].transaction, None);
        run_to_idle(&mut layer, t0);
    }

    #[test]
    fn poll_timeout_is_the_earliest_deadline_of_many_transactions() {
        let t0 = Instant::now();
        let mut layer = layer();
        for i in 0..1000u64 {
            let branch = format!("z9hG4bKmany{i}");
            let options = with_branch(OPTIONS, "z9hG4bKopt1", &branch);
            layer
                .send_request(t0 + ms(1000 - i), options, Target::tcp(peer(), Some(i)))
                .unwrap();
        }
        assert_eq!(layer.len(), 1000);
        assert_eq!(transmits(&mut layer).len(), 1000);
        // Sent last, at t0 + 1 ms: its Timer F is the earliest.
        assert_eq!(layer.poll_timeout(), Some(t0 + ms(32_001)));
        let (sent, seen) = run_to_idle(&mut layer, t0);
        assert!(sent.is_empty());
        let timeouts = seen
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    TxEvent::Timeout {
                        timer: Timer::F,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(timeouts, 1000);
        assert_eq!(times(&seen).last(), Some(&ms(33_000)));
    }

    #[test]
    fn new_branches_carry_the_cookie_and_are_unique() {
        let branches: std::collections::HashSet<String> = (0..1000).map(|_| new_branch()).collect();
        assert_eq!(branches.len(), 1000);
        for b in &branches {
            assert!(b.starts_with(MAGIC_COOKIE));
            assert_eq!(b.len(), MAGIC_COOKIE.len() + 24);
            assert!(b[MAGIC_COOKIE.len()..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit()));
        }
        assert_ne!(fallback_branch_bits(), fallback_branch_bits());
    }

    #[test]
    fn configuration_is_validated() {
        let with = |timers: TimerConfig| {
            TransactionLayer::new(TransactionConfig {
                timers,
                ..TransactionConfig::default()
            })
            .map(|_| ())
        };
        let base = TimerConfig::default();
        assert_eq!(
            with(TimerConfig {
                t1: Duration::ZERO,
                ..base
            }),
            Err(TxError::InvalidConfig { field: "t1" })
        );
        assert_eq!(
            with(TimerConfig {
                t2: ms(100),
                ..base
            }),
            Err(TxError::InvalidConfig { field: "t2" })
        );
        assert_eq!(
            with(TimerConfig {
                timer_d: Duration::from_secs(86_400),
                ..base
            }),
            Err(TxError::InvalidConfig { field: "timer_d" })
        );
        assert_eq!(
            TransactionLayer::new(TransactionConfig {
                max_transactions: 0,
                ..TransactionConfig::default()
            })
            .map(|_| ()),
            Err(TxError::InvalidConfig {
                field: "max_transactions"
            })
        );
        // A short T1 (a LAN profile) scales every timer.
        let mut layer = TransactionLayer::new(TransactionConfig {
            timers: TimerConfig {
                t1: ms(100),
                t2: ms(400),
                t4: ms(500),
                timer_d: Duration::from_secs(32),
            },
            ..TransactionConfig::default()
        })
        .unwrap();
        let t0 = Instant::now();
        layer
            .send_request(t0, request(OPTIONS), Target::udp(peer()))
            .unwrap();
        transmits(&mut layer);
        let (sent, seen) = run_to_idle(&mut layer, t0);
        assert_eq!(times(&sent)[..4], [100, 300, 700, 1100].map(ms));
        assert_eq!(seen[0].0, ms(6400));
    }
}
