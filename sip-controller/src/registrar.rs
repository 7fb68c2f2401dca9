//! The registrar's location service (RFC 3261 §10.3), with RFC 5626 (SIP Outbound) flows.
//!
//! This module owns the bindings from addresses of record to contacts and the REGISTER
//! processing rules that change them: expiry choice, the wildcard, Call-ID/`CSeq` ordering,
//! instance-id/reg-id replacement, and the per-AOR and global limits. It is IO-free: the
//! message layer extracts the To AOR (already normalised), the Contact values with their
//! parameters, Expires, Call-ID, `CSeq` and the flow the request arrived on, and passes the
//! time (unix seconds); the registrar returns the bindings to list in the 200 OK, or an
//! error that names its SIP status. Authentication (§10.3 step 3) and authorization of the
//! AOR (step 4) happen before, in [`crate::auth`] and the B2BUA.
//!
//! Hand-written: there is no sans-IO Rust registrar, and the rules are short but exact.
//!
//! # Decisions
//!
//! * **Out-of-order requests** (§10.3 step 7: same Call-ID, `CSeq` not higher than the
//!   stored one) abort the whole request with **500** ("the update MUST be aborted and the
//!   request fails"; §10.3 makes every failed update a 500). Nothing is committed.
//! * **Updates are atomic** (§10.3 step 7): the request is applied to a copy of the AOR's
//!   bindings and committed only when every contact succeeded and the limits hold.
//! * **Per-AOR limit** ([`RegistrarConfig::max_contacts_per_aor`]): a request that would
//!   grow an AOR beyond it gets **403** ("Too Many Registered Contacts"): a policy refusal that
//!   retrying will not change. Refreshes and removals are always allowed.
//! * **Global limit** ([`RegistrarConfig::max_bindings`]): growth beyond it gets **503**, a
//!   capacity condition that may clear.
//! * **Closed connections** ([`Registrar::remove_flow`]): every binding registered over the
//!   flow is removed. For RFC 5626 bindings that is what §5.3/§6 intend (the flow is the only
//!   way to reach the UA, and a request over a dead flow earns a 430); for connection-
//!   oriented bindings without outbound it is this server's policy, because the phones it
//!   serves sit behind NAT and cannot be reached by a new connection; they re-register
//!   when they reconnect.
//! * **Contact equality**: RFC 3261 §19.1.4 compares URIs component-wise. Bindings are keyed
//!   by the Contact URI with its scheme and host part lowercased (user part and parameters
//!   compared exactly), by `+sip.instance` when present (RFC 5626 §6), and by instance plus
//!   `reg-id` for outbound registrations.
//! * **q ordering**: a contact without `q` sorts as `q=1.0`.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    net::SocketAddr,
};

use serde::{Deserialize, Serialize, Serializer};

/// Longest AOR, Contact URI or Call-ID accepted.
pub const MAX_URI_LEN: usize = 1024;
/// Longest Call-ID accepted.
pub const MAX_CALL_ID_LEN: usize = 256;
/// Longest `+sip.instance` value accepted.
pub const MAX_INSTANCE_LEN: usize = 256;
/// Most Contact values accepted in one REGISTER.
pub const MAX_CONTACTS_PER_REQUEST: usize = 64;

/// The transport a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// Whether the transport has connections that can close.
    pub const fn is_connection_oriented(self) -> bool {
        matches!(self, Self::Tcp | Self::Tls)
    }
}

/// The flow a REGISTER arrived on (RFC 5626 §3.2 "flow"): transport, the peer's address, and
/// for TCP/TLS the driver's id of the connection. Requests for the registered UA are sent
/// back over it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowToken {
    /// The transport.
    pub transport: Transport,
    /// The peer's address (the packet's source, after any NAT).
    pub source: SocketAddr,
    /// The connection id for TCP/TLS; `None` for UDP.
    pub connection_id: Option<u64>,
}

/// A `q` value (RFC 3261 §20.10, grammar in §25.1) in thousandths: 0 to 1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QValue(u16);

impl QValue {
    /// `q=1`.
    pub const ONE: Self = Self(1000);

    /// From thousandths; `None` above 1000.
    pub const fn from_milli(milli: u16) -> Option<Self> {
        if milli <= 1000 {
            Some(Self(milli))
        } else {
            None
        }
    }

    /// In thousandths.
    pub const fn milli(self) -> u16 {
        self.0
    }

    /// Parses `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
    pub fn parse(text: &str) -> Option<Self> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut milli: u16 = 0;
        for (index, digit) in fraction.bytes().enumerate() {
            let scale = [100, 10, 1][index];
            milli += u16::from(digit - b'0') * scale;
        }
        match whole {
            "0" => Some(Self(milli)),
            "1" if milli == 0 => Some(Self::ONE),
            _ => None,
        }
    }
}

impl fmt::Display for QValue {
    /// The shortest grammatical form: `1`, `0`, `0.5`, `0.125`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1000 => f.write_str("1"),
            0 => f.write_str("0"),
            milli => {
                let digits = format!("{milli:03}");
                write!(f, "0.{}", digits.trim_end_matches('0'))
            }
        }
    }
}

impl Serialize for QValue {
    /// As a JSON number, e.g. `0.5`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(f64::from(self.0) / 1000.0)
    }
}

/// One Contact value of a REGISTER, as extracted by the message layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactParam {
    /// The Contact URI (without the angle brackets).
    pub uri: String,
    /// The `expires` parameter.
    pub expires: Option<u32>,
    /// The `q` parameter.
    pub q: Option<QValue>,
    /// The `+sip.instance` value without its double quotes, e.g.
    /// `<urn:uuid:00000000-0000-1000-8000-000A95A0E128>` (RFC 5626 §4.1).
    pub instance: Option<String>,
    /// The `reg-id` parameter (RFC 5626 §4.2).
    pub reg_id: Option<u32>,
}

/// The Contact header fields of a REGISTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *` (alone).
    Wildcard,
    /// Contact values; empty for a query (§10.3 step 6 finds none, step 8 lists bindings).
    List(Vec<ContactParam>),
}

/// A REGISTER, as extracted by the message layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The address of record from the To header, normalised (e.g. `sip:alice@example.com`).
    pub aor: String,
    /// The Contact header fields.
    pub contacts: Contacts,
    /// The Expires header.
    pub expires_header: Option<u32>,
    /// The Call-ID.
    pub call_id: String,
    /// The `CSeq` number.
    pub cseq: u32,
    /// The flow the request arrived on.
    pub flow: FlowToken,
    /// Arrival time, unix seconds.
    pub received_at: u64,
}

/// Registrar settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarConfig {
    /// Expiration when neither the contact nor the request gives one (§10.3 step 7).
    pub default_expires: u32,
    /// Shortest non-zero expiration accepted; shorter gets 423 with Min-Expires.
    pub min_expires: u32,
    /// Longest expiration granted; longer is shortened to it.
    pub max_expires: u32,
    /// Most bindings per AOR.
    pub max_contacts_per_aor: usize,
    /// Most bindings in the whole registrar.
    pub max_bindings: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            default_expires: 3600,
            min_expires: 60,
            max_expires: 7200,
            max_contacts_per_aor: 10,
            max_bindings: 100_000,
        }
    }
}

/// Why a REGISTER was refused, or the registrar could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrarError {
    /// A field the message layer passed is unusable (empty, too long, forbidden characters).
    #[error("invalid REGISTER: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: &'static str,
    },
    /// `Contact: *` without `Expires: 0` (§10.3 step 6).
    #[error("Contact: * requires Expires: 0, got {expires:?}")]
    WildcardRequiresZeroExpires {
        /// The Expires header received.
        expires: Option<u32>,
    },
    /// `*` together with other Contact values (§10.3 step 6).
    #[error("Contact: * must be the only contact")]
    WildcardNotAlone,
    /// A Contact with `+sip.instance` and `reg-id` alongside other Contact values: an
    /// outbound REGISTER registers exactly one flow (RFC 5626 §4.2.1, §6).
    #[error("a Contact with reg-id must be the only contact")]
    RegIdNotAlone,
    /// A non-zero expiration below the minimum (§10.3 step 7): 423 with `Min-Expires`.
    #[error("expiration below the minimum of {min_expires} s")]
    IntervalTooBrief {
        /// The value for the Min-Expires header.
        min_expires: u32,
    },
    /// Same Call-ID with a `CSeq` not higher than the stored one (§10.3 step 7).
    #[error("CSeq {received_cseq} is not higher than the stored {stored_cseq} for this Call-ID")]
    OutOfOrder {
        /// The stored `CSeq`.
        stored_cseq: u32,
        /// The `CSeq` received.
        received_cseq: u32,
    },
    /// The AOR would exceed its binding limit.
    #[error("the AOR would exceed its limit of {max} contacts")]
    TooManyContacts {
        /// The limit.
        max: usize,
    },
    /// The registrar would exceed its total binding limit.
    #[error("the registrar is full ({max} bindings)")]
    RegistrarFull {
        /// The limit.
        max: usize,
    },
    /// The configuration is inconsistent.
    #[error("invalid registrar configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
}

impl RegistrarError {
    /// The SIP status code for the REGISTER response.
    pub fn sip_status(&self) -> u16 {
        match self {
            Self::InvalidRequest { .. }
            | Self::WildcardRequiresZeroExpires { .. }
            | Self::WildcardNotAlone
            | Self::RegIdNotAlone => 400,
            Self::TooManyContacts { .. } => 403,
            Self::IntervalTooBrief { .. } => 423,
            Self::OutOfOrder { .. } | Self::InvalidConfig { .. } => 500,
            Self::RegistrarFull { .. } => 503,
        }
    }

    /// The reason phrase for the status line.
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } | Self::RegIdNotAlone => "Bad Request",
            Self::WildcardRequiresZeroExpires { .. } | Self::WildcardNotAlone => {
                "Invalid Wildcard Contact"
            }
            Self::TooManyContacts { .. } => "Too Many Registered Contacts",
            Self::IntervalTooBrief { .. } => "Interval Too Brief",
            Self::OutOfOrder { .. } => "Out of Order",
            Self::InvalidConfig { .. } => "Server Internal Error",
            Self::RegistrarFull { .. } => "Service Unavailable",
        }
    }

    /// The Min-Expires value to send with a 423.
    pub fn min_expires(&self) -> Option<u32> {
        match self {
            Self::IntervalTooBrief { min_expires } => Some(*min_expires),
            _ => None,
        }
    }
}

/// One binding of an AOR to a contact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Binding {
    /// The Contact URI.
    pub contact: String,
    /// The `q` value, if the UA gave one.
    pub q: Option<QValue>,
    /// `+sip.instance` (RFC 5626 §4.1).
    pub instance: Option<String>,
    /// `reg-id` (RFC 5626 §4.2); only kept together with an instance.
    pub reg_id: Option<u32>,
    /// The Call-ID of the REGISTER that last updated the binding.
    pub call_id: String,
    /// Its `CSeq`.
    pub cseq: u32,
    /// The flow it arrived on.
    pub flow: FlowToken,
    /// When the binding was created (unix seconds).
    pub registered_at: u64,
    /// When it was last refreshed.
    pub updated_at: u64,
    /// When it expires.
    pub expires_at: u64,
    /// Registrar-wide update order, to order equal timestamps by recency.
    #[serde(skip)]
    sequence: u64,
}

impl Binding {
    /// Seconds left at `now`; 0 once expired.
    pub fn expires_in(&self, now: u64) -> u32 {
        u32::try_from(self.expires_at.saturating_sub(now)).unwrap_or(u32::MAX)
    }

    /// Whether the binding is expired at `now`.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at <= now
    }

    /// Whether the binding was registered with SIP Outbound (instance and reg-id).
    pub fn is_outbound(&self) -> bool {
        self.instance.is_some() && self.reg_id.is_some()
    }

    /// The Contact header value for a 200 OK at `now` (§10.3 step 8: every value carries
    /// `expires`):
    ///
    /// ```text
    /// <sip:alice@192.0.2.4:5061;transport=tls>;expires=3599;q=0.5;
    ///     +sip.instance="<urn:uuid:...>";reg-id=1                        (one line)
    /// ```
    pub fn contact_header_value(&self, now: u64) -> String {
        use fmt::Write as _;
        let mut value = format!("<{}>;expires={}", self.contact, self.expires_in(now));
        if let Some(q) = self.q {
            let _ = write!(value, ";q={q}");
        }
        if let Some(instance) = &self.instance {
            let _ = write!(value, ";+sip.instance=\"{instance}\"");
        }
        if let Some(reg_id) = self.reg_id {
            let _ = write!(value, ";reg-id={reg_id}");
        }
        value
    }

    fn effective_q(&self) -> QValue {
        self.q.unwrap_or(QValue::ONE)
    }
}

/// Lookup order: q descending, then most recently updated first.
fn lookup_order(a: &Binding, b: &Binding) -> std::cmp::Ordering {
    b.effective_q()
        .cmp(&a.effective_q())
        .then(b.updated_at.cmp(&a.updated_at))
        .then(b.sequence.cmp(&a.sequence))
}

/// The result of a successful REGISTER: what the 200 OK lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterResponse {
    /// The AOR's current bindings after the update, in lookup order.
    pub bindings: Vec<Binding>,
    /// The request registered an RFC 5626 flow: the 200 OK must carry `Require: outbound`
    /// (RFC 5626 §6).
    pub outbound: bool,
    /// The time the response describes.
    pub at: u64,
}

impl RegisterResponse {
    /// The Contact header values for the 200 OK, with remaining expirations.
    pub fn contact_header_values(&self) -> Vec<String> {
        self.bindings
            .iter()
            .map(|binding| binding.contact_header_value(self.at))
            .collect()
    }
}

/// A binding with its remaining lifetime, for the JSON listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BindingSnapshot {
    /// The binding.
    #[serde(flatten)]
    pub binding: Binding,
    /// Seconds left.
    pub expires_in: u32,
}

/// One AOR in the listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AorSnapshot {
    /// The address of record.
    pub aor: String,
    /// Its live bindings, in lookup order.
    pub bindings: Vec<BindingSnapshot>,
}

/// The whole location service, for the JSON API. Holds no secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegistrarSnapshot {
    /// When the snapshot was taken.
    pub at: u64,
    /// Live bindings in total.
    pub bindings: usize,
    /// AORs in lexical order.
    pub aors: Vec<AorSnapshot>,
}

/// What identifies a binding within an AOR.
#[derive(Debug, PartialEq, Eq)]
enum BindingKey {
    /// RFC 5626 §6: AOR + instance-id + reg-id.
    Flow { instance: String, reg_id: u32 },
    /// RFC 5626 §6 without reg-id: AOR + instance-id, RFC 3261 rules otherwise.
    Instance(String),
    /// RFC 3261 §10.3 step 7: the Contact URI (§19.1.4, see [`uri_key`]).
    Uri(String),
}

impl BindingKey {
    fn of(uri: &str, instance: Option<&str>, reg_id: Option<u32>) -> Self {
        match (instance, reg_id) {
            (Some(instance), Some(reg_id)) => Self::Flow {
                instance: instance.to_ascii_lowercase(),
                reg_id,
            },
            (Some(instance), None) => Self::Instance(instance.to_ascii_lowercase()),
            (None, _) => Self::Uri(uri_key(uri)),
        }
    }

    fn of_binding(binding: &Binding) -> Self {
        Self::of(
            &binding.contact,
            binding.instance.as_deref(),
            binding.reg_id,
        )
    }
}

/// A comparison key for a Contact URI: scheme and host part lowercased (RFC 3261 §19.1.4:
/// both compare case-insensitively), user part and parameters kept as they are.
fn uri_key(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return uri.to_owned();
    };
    let mut key = scheme.to_ascii_lowercase();
    key.push(':');
    // An unescaped '@' only appears after the userinfo (§25.1).
    let (user, host_and_params) = match rest.split_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, rest),
    };
    if let Some(user) = user {
        key.push_str(user);
        key.push('@');
    }
    let host_end = host_and_params
        .find([';', '?'])
        .unwrap_or(host_and_params.len());
    key.push_str(&host_and_params[..host_end].to_ascii_lowercase());
    key.push_str(&host_and_params[host_end..]);
    key
}

fn valid_text(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"'))
}

fn validate(request: &RegisterRequest) -> Result<(), RegistrarError> {
    let invalid = |reason| Err(RegistrarError::InvalidRequest { reason });
    if !valid_text(&request.aor, MAX_URI_LEN) {
        return invalid("AOR must be 1..=1024 visible ASCII characters without <, > or \"");
    }
    if request.call_id.is_empty()
        || request.call_id.len() > MAX_CALL_ID_LEN
        || !request.call_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return invalid("Call-ID must be 1..=256 visible ASCII characters");
    }
    let Contacts::List(contacts) = &request.contacts else {
        return Ok(());
    };
    if contacts.len() > MAX_CONTACTS_PER_REQUEST {
        return invalid("more than 64 Contact values");
    }
    for contact in contacts {
        if contact.uri == "*" {
            return Err(RegistrarError::WildcardNotAlone);
        }
        // The URI is written back between angle brackets in the 200 OK.
        if !valid_text(&contact.uri, MAX_URI_LEN) {
            return invalid(
                "Contact URI must be 1..=1024 visible ASCII characters without <, > or \"",
            );
        }
        if let Some(instance) = &contact.instance {
            // Written back inside a quoted string.
            if instance.is_empty()
                || instance.len() > MAX_INSTANCE_LEN
                || !instance
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\'))
            {
                return invalid(
                    "+sip.instance must be 1..=256 visible ASCII characters without \" or \\",
                );
            }
        }
        // RFC 5626 §4.2: reg-id = 1*DIGIT, 1 to 2^31-1.
        if contact
            .reg_id
            .is_some_and(|reg_id| reg_id == 0 || reg_id > 0x7fff_ffff)
        {
            return invalid("reg-id must be 1..=2147483647");
        }
    }
    // RFC 5626 §6: a REGISTER with reg-id (and an instance) carries that one Contact only.
    if contacts.len() > 1
        && contacts
            .iter()
            .any(|c| c.instance.is_some() && c.reg_id.is_some())
    {
        return Err(RegistrarError::RegIdNotAlone);
    }
    Ok(())
}

/// A binding in the working copy, and whether this request already wrote it.
struct Tentative {
    binding: Binding,
    written: bool,
}

/// The location service.
#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    aors: HashMap<String, Vec<Binding>>,
    /// AORs having at least one binding over each flow, for [`Registrar::remove_flow`].
    flows: HashMap<FlowToken, BTreeSet<String>>,
    /// Stored bindings, expired ones not yet purged included.
    stored: usize,
    sequence: u64,
}

impl Registrar {
    /// A registrar with `config`; the expiration bounds must satisfy
    /// `0 < min_expires <= default_expires <= max_expires`.
    pub fn new(config: RegistrarConfig) -> Result<Self, RegistrarError> {
        if config.min_expires == 0 {
            return Err(RegistrarError::InvalidConfig {
                reason: "min_expires must be at least 1",
            });
        }
        if config.min_expires > config.default_expires
            || config.default_expires > config.max_expires
        {
            return Err(RegistrarError::InvalidConfig {
                reason: "need min_expires <= default_expires <= max_expires",
            });
        }
        if config.max_contacts_per_aor == 0 || config.max_bindings == 0 {
            return Err(RegistrarError::InvalidConfig {
                reason: "binding limits must be at least 1",
            });
        }
        Ok(Self {
            config,
            aors: HashMap::new(),
            flows: HashMap::new(),
            stored: 0,
            sequence: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// Stored bindings (expired ones count until [`Registrar::purge`] or the next REGISTER
    /// for their AOR removes them).
    pub fn len(&self) -> usize {
        self.stored
    }

    /// Whether no binding is stored.
    pub fn is_empty(&self) -> bool {
        self.stored == 0
    }

    /// Processes a REGISTER (RFC 3261 §10.3 steps 6 to 8).
    pub fn register(
        &mut self,
        request: &RegisterRequest,
    ) -> Result<RegisterResponse, RegistrarError> {
        validate(request)?;
        let now = request.received_at;
        let stored = self.aors.get(&request.aor).map_or(&[][..], Vec::as_slice);
        let stored_len = stored.len();
        // Expired bindings are gone for every purpose (§10.2.1.1, §10.3 step 8).
        let mut working: Vec<Tentative> = stored
            .iter()
            .filter(|binding| !binding.is_expired(now))
            .map(|binding| Tentative {
                binding: binding.clone(),
                written: false,
            })
            .collect();
        let live_len = working.len();
        let mut outbound = false;

        match &request.contacts {
            Contacts::Wildcard => {
                // §10.3 step 6: "*" only with Expires: 0 (and alone, which the type ensures).
                if request.expires_header != Some(0) {
                    return Err(RegistrarError::WildcardRequiresZeroExpires {
                        expires: request.expires_header,
                    });
                }
                // §10.3 step 6: a binding with the same Call-ID is removed only if the CSeq is
                // higher, "otherwise, the update MUST be aborted and the request fails".
                for entry in &working {
                    check_order(&entry.binding, request)?;
                }
                working.clear();
            }
            Contacts::List(contacts) => {
                for contact in contacts {
                    outbound |= self.apply_contact(&mut working, contact, request)?;
                }
            }
        }

        let new_len = working.len();
        if new_len > live_len {
            if new_len > self.config.max_contacts_per_aor {
                return Err(RegistrarError::TooManyContacts {
                    max: self.config.max_contacts_per_aor,
                });
            }
            if self.stored - stored_len + new_len > self.config.max_bindings {
                return Err(RegistrarError::RegistrarFull {
                    max: self.config.max_bindings,
                });
            }
        }

        // Commit (§10.3 step 7: all or nothing).
        let mut bindings: Vec<Binding> = working.into_iter().map(|entry| entry.binding).collect();
        bindings.sort_by(lookup_order);
        self.replace_aor(&request.aor, bindings.clone());
        Ok(RegisterResponse {
            bindings,
            outbound,
            at: now,
        })
    }

    /// §10.3 step 7 for one Contact value. Returns whether it registered an outbound flow.
    fn apply_contact(
        &mut self,
        working: &mut Vec<Tentative>,
        contact: &ContactParam,
        request: &RegisterRequest,
    ) -> Result<bool, RegistrarError> {
        let now = request.received_at;
        // §10.3 step 7: the expires parameter, else the Expires header, else the default.
        let requested = contact
            .expires
            .or(request.expires_header)
            .unwrap_or(self.config.default_expires);
        if requested != 0 && requested < self.config.min_expires {
            return Err(RegistrarError::IntervalTooBrief {
                min_expires: self.config.min_expires,
            });
        }
        // §10.3 step 7: "the registrar MAY shorten" an expiration above its maximum.
        let expires = requested.min(self.config.max_expires);
        // RFC 5626 §6: reg-id without +sip.instance is ignored (RFC 3261 rules apply).
        let reg_id = contact.instance.as_ref().and(contact.reg_id);
        let key = BindingKey::of(&contact.uri, contact.instance.as_deref(), reg_id);
        let existing = working
            .iter()
            .position(|entry| BindingKey::of_binding(&entry.binding) == key);

        if let Some(index) = existing {
            // Several values of one request for the same binding: the last one wins.
            if !working[index].written {
                check_order(&working[index].binding, request)?;
            }
            if expires == 0 {
                working.remove(index);
                return Ok(false);
            }
        } else if expires == 0 {
            // Removing a binding that does not exist is a no-op.
            return Ok(false);
        }

        self.sequence += 1;
        let registered_at = existing.map_or(now, |index| working[index].binding.registered_at);
        let binding = Binding {
            // RFC 5626 §6: a matching instance + reg-id replaces the old Contact URI and flow.
            contact: contact.uri.clone(),
            q: contact.q,
            instance: contact.instance.clone(),
            reg_id,
            call_id: request.call_id.clone(),
            cseq: request.cseq,
            flow: request.flow.clone(),
            registered_at,
            updated_at: now,
            expires_at: now.saturating_add(u64::from(expires)),
            sequence: self.sequence,
        };
        let entry = Tentative {
            binding,
            written: true,
        };
        match existing {
            Some(index) => working[index] = entry,
            None => working.push(entry),
        }
        Ok(reg_id.is_some())
    }

    /// Stores `bindings` as the AOR's, keeping the count and the flow index true.
    fn replace_aor(&mut self, aor: &str, bindings: Vec<Binding>) {
        let old = if bindings.is_empty() {
            self.aors.remove(aor).unwrap_or_default()
        } else {
            self.aors
                .insert(aor.to_owned(), bindings)
                .unwrap_or_default()
        };
        self.stored = self.stored - old.len() + self.aors.get(aor).map_or(0, Vec::len);
        for binding in &old {
            if let Some(aors) = self.flows.get_mut(&binding.flow) {
                aors.remove(aor);
                if aors.is_empty() {
                    self.flows.remove(&binding.flow);
                }
            }
        }
        if let Some(new) = self.aors.get(aor) {
            for binding in new {
                self.flows
                    .entry(binding.flow.clone())
                    .or_default()
                    .insert(aor.to_owned());
            }
        }
    }

    /// The AOR's live bindings at `now`, q descending then most recent first (the order a
    /// proxy tries them in, RFC 3261 §16.6).
    pub fn lookup(&self, aor: &str, now: u64) -> Vec<Binding> {
        let mut bindings: Vec<Binding> = self
            .aors
            .get(aor)
            .into_iter()
            .flatten()
            .filter(|binding| !binding.is_expired(now))
            .cloned()
            .collect();
        bindings.sort_by(lookup_order);
        bindings
    }

    /// Removes every binding expired at `now`; returns how many.
    pub fn purge(&mut self, now: u64) -> usize {
        let affected: Vec<String> = self
            .aors
            .iter()
            .filter(|(_, bindings)| bindings.iter().any(|binding| binding.is_expired(now)))
            .map(|(aor, _)| aor.clone())
            .collect();
        let before = self.stored;
        for aor in affected {
            let kept: Vec<Binding> = self
                .aors
                .get(&aor)
                .into_iter()
                .flatten()
                .filter(|binding| !binding.is_expired(now))
                .cloned()
                .collect();
            self.replace_aor(&aor, kept);
        }
        before - self.stored
    }

    /// Removes every binding registered over `flow`, whose connection closed (see the module
    /// documentation); returns how many.
    pub fn remove_flow(&mut self, flow: &FlowToken) -> usize {
        let Some(aors) = self.flows.get(flow).cloned() else {
            return 0;
        };
        let before = self.stored;
        for aor in aors {
            let kept: Vec<Binding> = self
                .aors
                .get(&aor)
                .into_iter()
                .flatten()
                .filter(|binding| binding.flow != *flow)
                .cloned()
                .collect();
            self.replace_aor(&aor, kept);
        }
        before - self.stored
    }

    /// Every live binding at `now`, for the JSON listing.
    pub fn snapshot(&self, now: u64) -> RegistrarSnapshot {
        let mut aors: Vec<AorSnapshot> = self
            .aors
            .keys()
            .map(|aor| AorSnapshot {
                aor: aor.clone(),
                bindings: self
                    .lookup(aor, now)
                    .into_iter()
                    .map(|binding| BindingSnapshot {
                        expires_in: binding.expires_in(now),
                        binding,
                    })
                    .collect(),
            })
            .filter(|aor| !aor.bindings.is_empty())
            .collect();
        aors.sort_by(|a, b| a.aor.cmp(&b.aor));
        RegistrarSnapshot {
            at: now,
            bindings: aors.iter().map(|aor| aor.bindings.len()).sum(),
            aors,
        }
    }
}

/// §10.3 step 7: with the same Call-ID, the `CSeq` must be higher than the stored one.
fn check_order(binding: &Binding, request: &RegisterRequest) -> Result<(), RegistrarError> {
    if binding.call_id == request.call_id && request.cseq <= binding.cseq {
        return Err(RegistrarError::OutOfOrder {
            stored_cseq: binding.cseq,
            received_cseq: request.cseq,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AOR: &str = "sip:alice@example.com";
    const T0: u64 = 1_700_000_000;

    fn flow(port: u16, connection_id: Option<u64>) -> FlowToken {
        FlowToken {
            transport: if connection_id.is_some() {
                Transport::Tls
            } else {
                Transport::Udp
            },
            source: SocketAddr::from(([192, 0, 2, 10], port)),
            connection_id,
        }
    }

    fn contact(uri: &str) -> ContactParam {
        ContactParam {
            uri: uri.into(),
            expires: None,
            q: None,
            instance: None,
            reg_id: None,
        }
    }

    fn register(contacts: Vec<ContactParam>, cseq: u32, at: u64) -> RegisterRequest {
        RegisterRequest {
            aor: AOR.into(),
            contacts: Contacts::List(contacts),
            expires_header: None,
            call_id: "a84b4c76e66710@pc33.example.com".into(),
            cseq,
            flow: flow(5060, None),
            received_at: at,
        }
    }

    fn registrar() -> Registrar {
        Registrar::new(RegistrarConfig::default()).unwrap()
    }

    fn contacts_of(response: &RegisterResponse) -> Vec<String> {
        response.contact_header_values()
    }

    #[test]
    fn registration_lists_the_binding_with_its_expiry() {
        let mut r = registrar();
        let response = r
            .register(&register(vec![contact("sip:alice@192.0.2.10:5060")], 1, T0))
            .unwrap();
        assert_eq!(
            contacts_of(&response),
            ["<sip:alice@192.0.2.10:5060>;expires=3600"]
        );
        assert!(!response.outbound);
        assert_eq!(r.len(), 1);
        let found = r.lookup(AOR, T0 + 10);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].expires_in(T0 + 10), 3590);
        assert_eq!(found[0].flow, flow(5060, None));
        assert!(r.lookup("sip:bob@example.com", T0).is_empty());
    }

    #[test]
    fn expires_comes_from_param_then_header_then_default_and_is_clamped() {
        let mut r = registrar();
        let mut request = register(
            vec![
                ContactParam {
                    expires: Some(120),
                    ..contact("sip:a@192.0.2.1")
                },
                contact("sip:b@192.0.2.1"),
                ContactParam {
                    expires: Some(100_000),
                    ..contact("sip:c@192.0.2.1")
                },
            ],
            1,
            T0,
        );
        request.expires_header = Some(600);
        let response = r.register(&request).unwrap();
        let mut values = contacts_of(&response);
        values.sort();
        assert_eq!(
            values,
            [
                "<sip:a@192.0.2.1>;expires=120",
                "<sip:b@192.0.2.1>;expires=600",
                "<sip:c@192.0.2.1>;expires=7200",
            ]
        );
    }

    #[test]
    fn refresh_extends_and_keeps_registration_time() {
        let mut r = registrar();
        r.register(&register(vec![contact("sip:alice@192.0.2.10")], 1, T0))
            .unwrap();
        let response = r
            .register(&register(
                vec![contact("sip:alice@192.0.2.10")],
                2,
                T0 + 1800,
            ))
            .unwrap();
        assert_eq!(response.bindings.len(), 1);
        assert_eq!(response.bindings[0].registered_at, T0);
        assert_eq!(response.bindings[0].updated_at, T0 + 1800);
        assert_eq!(response.bindings[0].expires_at, T0 + 1800 + 3600);
        assert_eq!(r.len(), 1);
        // The scheme and host compare case-insensitively (§19.1.4): still one binding.
        r.register(&register(
            vec![contact("SIP:alice@192.0.2.10")],
            3,
            T0 + 1900,
        ))
        .unwrap();
        assert_eq!(r.len(), 1);
        // The user part does not.
        r.register(&register(
            vec![contact("sip:Alice@192.0.2.10")],
            4,
            T0 + 1900,
        ))
        .unwrap();
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn expiry_with_simulated_time_and_purge() {
        let mut r = registrar();
        r.register(&register(
            vec![ContactParam {
                expires: Some(60),
                ..contact("sip:alice@192.0.2.10")
            }],
            1,
            T0,
        ))
        .unwrap();
        assert_eq!(r.lookup(AOR, T0 + 59).len(), 1);
        assert!(r.lookup(AOR, T0 + 60).is_empty());
        assert_eq!(r.len(), 1, "stored until purged");
        assert_eq!(r.snapshot(T0 + 60).bindings, 0);
        assert_eq!(r.purge(T0 + 59), 0);
        assert_eq!(r.purge(T0 + 60), 1);
        assert!(r.is_empty());
        assert_eq!(r.purge(T0 + 61), 0);
    }

    #[test]
    fn zero_expires_removes_one_binding() {
        let mut r = registrar();
        r.register(&register(
            vec![contact("sip:a@192.0.2.1"), contact("sip:b@192.0.2.1")],
            1,
            T0,
        ))
        .unwrap();
        let response = r
            .register(&register(
                vec![ContactParam {
                    expires: Some(0),
                    ..contact("sip:a@192.0.2.1")
                }],
                2,
                T0 + 1,
            ))
            .unwrap();
        assert_eq!(contacts_of(&response), ["<sip:b@192.0.2.1>;expires=3599"]);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn wildcard_removes_all_bindings() {
        let mut r = registrar();
        r.register(&register(
            vec![contact("sip:a@192.0.2.1"), contact("sip:b@192.0.2.1")],
            1,
            T0,
        ))
        .unwrap();
        let mut request = register(vec![], 2, T0 + 5);
        request.contacts = Contacts::Wildcard;
        request.expires_header = Some(0);
        let response = r.register(&request).unwrap();
        assert!(response.bindings.is_empty());
        assert!(r.is_empty());
        assert!(r.lookup(AOR, T0 + 5).is_empty());
    }

    #[test]
    fn wildcard_rules() {
        let mut r = registrar();
        let mut request = register(vec![], 1, T0);
        request.contacts = Contacts::Wildcard;
        for expires in [None, Some(3600)] {
            request.expires_header = expires;
            let error = r.register(&request).unwrap_err();
            assert_eq!(
                error,
                RegistrarError::WildcardRequiresZeroExpires { expires }
            );
            assert_eq!(error.sip_status(), 400);
        }
        let mixed = register(vec![contact("*"), contact("sip:a@192.0.2.1")], 1, T0);
        assert_eq!(r.register(&mixed), Err(RegistrarError::WildcardNotAlone));
        // With the same Call-ID the wildcard obeys the CSeq rule too.
        r.register(&register(vec![contact("sip:a@192.0.2.1")], 5, T0))
            .unwrap();
        request.expires_header = Some(0);
        request.cseq = 5;
        assert_eq!(
            r.register(&request),
            Err(RegistrarError::OutOfOrder {
                stored_cseq: 5,
                received_cseq: 5
            })
        );
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn interval_too_brief_is_423_with_min_expires() {
        let mut r = registrar();
        let request = register(
            vec![
                contact("sip:ok@192.0.2.1"),
                ContactParam {
                    expires: Some(30),
                    ..contact("sip:a@192.0.2.1")
                },
            ],
            1,
            T0,
        );
        let error = r.register(&request).unwrap_err();
        assert_eq!(error, RegistrarError::IntervalTooBrief { min_expires: 60 });
        assert_eq!(error.sip_status(), 423);
        assert_eq!(error.reason_phrase(), "Interval Too Brief");
        assert_eq!(error.min_expires(), Some(60));
        assert!(r.is_empty(), "nothing of a failed request is committed");
        // Through the Expires header as well; exactly the minimum is fine.
        let mut request = register(vec![contact("sip:a@192.0.2.1")], 2, T0);
        request.expires_header = Some(59);
        assert!(r.register(&request).is_err());
        request.expires_header = Some(60);
        assert!(r.register(&request).is_ok());
    }

    #[test]
    fn out_of_order_cseq_is_refused_atomically() {
        let mut r = registrar();
        r.register(&register(vec![contact("sip:a@192.0.2.1")], 10, T0))
            .unwrap();
        for cseq in [9, 10] {
            let error = r
                .register(&register(
                    vec![contact("sip:b@192.0.2.1"), contact("sip:a@192.0.2.1")],
                    cseq,
                    T0 + 1,
                ))
                .unwrap_err();
            assert_eq!(
                error,
                RegistrarError::OutOfOrder {
                    stored_cseq: 10,
                    received_cseq: cseq
                }
            );
            assert_eq!(error.sip_status(), 500);
        }
        // b was tentatively added before a failed: not committed.
        assert_eq!(r.lookup(AOR, T0 + 1).len(), 1);
        // Another Call-ID (e.g. after a reboot) may update with any CSeq.
        let mut request = register(vec![contact("sip:a@192.0.2.1")], 1, T0 + 2);
        request.call_id = "other-call-id".into();
        assert!(r.register(&request).is_ok());
        // The same contact twice in one request is not an ordering problem.
        assert!(r
            .register(&register(
                vec![contact("sip:a@192.0.2.1"), contact("sip:a@192.0.2.1")],
                11,
                T0 + 3
            ))
            .is_ok());
    }

    #[test]
    fn lookup_orders_by_q_then_recency() {
        let mut r = registrar();
        let q = |milli| QValue::from_milli(milli);
        r.register(&register(
            vec![
                ContactParam {
                    q: q(500),
                    ..contact("sip:half@192.0.2.1")
                },
                ContactParam {
                    q: q(100),
                    ..contact("sip:low@192.0.2.1")
                },
                contact("sip:default@192.0.2.1"),
            ],
            1,
            T0,
        ))
        .unwrap();
        r.register(&register(
            vec![ContactParam {
                q: q(500),
                ..contact("sip:half-newer@192.0.2.1")
            }],
            2,
            T0 + 10,
        ))
        .unwrap();
        let order: Vec<String> = r
            .lookup(AOR, T0 + 20)
            .into_iter()
            .map(|b| b.contact)
            .collect();
        assert_eq!(
            order,
            [
                "sip:default@192.0.2.1",
                "sip:half-newer@192.0.2.1",
                "sip:half@192.0.2.1",
                "sip:low@192.0.2.1"
            ]
        );
        let response = r
            .register(&register(vec![], 3, T0 + 20))
            .expect("a REGISTER without Contact is a query");
        assert_eq!(response.bindings.len(), 4);
        assert_eq!(
            response.contact_header_values()[3],
            "<sip:low@192.0.2.1>;expires=3580;q=0.1"
        );
    }

    #[test]
    fn per_aor_limit_is_403_and_refreshes_still_pass() {
        let mut r = Registrar::new(RegistrarConfig {
            max_contacts_per_aor: 2,
            ..RegistrarConfig::default()
        })
        .unwrap();
        r.register(&register(
            vec![contact("sip:a@192.0.2.1"), contact("sip:b@192.0.2.1")],
            1,
            T0,
        ))
        .unwrap();
        let error = r
            .register(&register(vec![contact("sip:c@192.0.2.1")], 2, T0))
            .unwrap_err();
        assert_eq!(error, RegistrarError::TooManyContacts { max: 2 });
        assert_eq!(error.sip_status(), 403);
        // Replacing one contact by another within the limit is fine.
        r.register(&register(
            vec![
                ContactParam {
                    expires: Some(0),
                    ..contact("sip:a@192.0.2.1")
                },
                contact("sip:c@192.0.2.1"),
            ],
            3,
            T0,
        ))
        .unwrap();
        r.register(&register(vec![contact("sip:b@192.0.2.1")], 4, T0))
            .unwrap();
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn global_limit_is_503() {
        let mut r = Registrar::new(RegistrarConfig {
            max_bindings: 2,
            ..RegistrarConfig::default()
        })
        .unwrap();
        r.register(&register(
            vec![contact("sip:a@192.0.2.1"), contact("sip:b@192.0.2.1")],
            1,
            T0,
        ))
        .unwrap();
        let mut other = register(vec![contact("sip:bob@192.0.2.2")], 1, T0);
        other.aor = "sip:bob@example.com".into();
        let error = r.register(&other).unwrap_err();
        assert_eq!(error, RegistrarError::RegistrarFull { max: 2 });
        assert_eq!(error.sip_status(), 503);
        // Expired bindings do not hold capacity once their AOR is touched or purged.
        r.purge(T0 + 3600);
        other.received_at = T0 + 3600;
        assert!(r.register(&other).is_ok());
    }

    #[test]
    fn closed_flow_removes_its_bindings() {
        let mut r = registrar();
        let tls = flow(40_000, Some(7));
        let mut over_tls = register(
            vec![contact("sip:alice@192.0.2.10:40000;transport=tls")],
            1,
            T0,
        );
        over_tls.flow = tls.clone();
        r.register(&over_tls).unwrap();
        let mut bob = register(
            vec![contact("sip:bob@192.0.2.10:40000;transport=tls")],
            1,
            T0,
        );
        bob.aor = "sip:bob@example.com".into();
        bob.flow = tls.clone();
        r.register(&bob).unwrap();
        r.register(&register(vec![contact("sip:alice@198.51.100.7")], 2, T0))
            .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(
            r.remove_flow(&flow(40_000, Some(8))),
            0,
            "another connection"
        );
        assert_eq!(r.remove_flow(&tls), 2);
        assert_eq!(r.len(), 1);
        let left = r.lookup(AOR, T0);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].contact, "sip:alice@198.51.100.7");
        assert!(r.lookup("sip:bob@example.com", T0).is_empty());
        assert_eq!(r.remove_flow(&tls), 0);
    }

    fn outbound(uri: &str, reg_id: u32) -> ContactParam {
        ContactParam {
            instance: Some("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>".into()),
            reg_id: Some(reg_id),
            ..contact(uri)
        }
    }

    #[test]
    fn outbound_instance_and_reg_id_replace_the_binding_and_flow() {
        let mut r = registrar();
        let mut first = register(vec![outbound("sip:alice@192.0.2.10:40000;ob", 1)], 1, T0);
        first.flow = flow(40_000, Some(1));
        let response = r.register(&first).unwrap();
        assert!(response.outbound);
        assert_eq!(
            contacts_of(&response),
            ["<sip:alice@192.0.2.10:40000;ob>;expires=3600;\
              +sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1"]
        );
        // A second flow (reg-id 2) is a second binding.
        let mut second = register(vec![outbound("sip:alice@192.0.2.10:40001;ob", 2)], 2, T0);
        second.flow = flow(40_001, Some(2));
        r.register(&second).unwrap();
        assert_eq!(r.len(), 2);
        // After a reboot: new Call-ID, new connection, new port, same instance and reg-id 1.
        let mut rebooted = register(
            vec![outbound("sip:alice@192.0.2.10:40002;ob", 1)],
            1,
            T0 + 30,
        );
        rebooted.call_id = "after-reboot".into();
        rebooted.flow = flow(40_002, Some(3));
        r.register(&rebooted).unwrap();
        let bindings = r.lookup(AOR, T0 + 30);
        assert_eq!(bindings.len(), 2);
        let replaced = bindings.iter().find(|b| b.reg_id == Some(1)).unwrap();
        assert_eq!(replaced.contact, "sip:alice@192.0.2.10:40002;ob");
        assert_eq!(replaced.flow, flow(40_002, Some(3)));
        assert_eq!(replaced.registered_at, T0);
        // The replaced flow no longer holds any binding.
        assert_eq!(r.remove_flow(&flow(40_000, Some(1))), 0);
        assert_eq!(r.remove_flow(&flow(40_002, Some(3))), 1);
    }

    #[test]
    fn outbound_validation() {
        let mut r = registrar();
        let two = register(
            vec![
                outbound("sip:a@192.0.2.1", 1),
                outbound("sip:b@192.0.2.1", 2),
            ],
            1,
            T0,
        );
        assert_eq!(r.register(&two), Err(RegistrarError::RegIdNotAlone));
        let mixed = register(
            vec![outbound("sip:a@192.0.2.1", 1), contact("sip:b@192.0.2.1")],
            1,
            T0,
        );
        assert_eq!(r.register(&mixed), Err(RegistrarError::RegIdNotAlone));
        // reg-id without an instance is ignored (RFC 3261 rules).
        let response = r
            .register(&register(
                vec![ContactParam {
                    reg_id: Some(1),
                    ..contact("sip:a@192.0.2.1")
                }],
                1,
                T0,
            ))
            .unwrap();
        assert!(!response.outbound);
        assert_eq!(response.bindings[0].reg_id, None);
        let zero = register(vec![outbound("sip:a@192.0.2.1", 0)], 2, T0);
        assert!(matches!(
            r.register(&zero),
            Err(RegistrarError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn instance_without_reg_id_is_the_binding_key() {
        let mut r = registrar();
        let with_instance = |uri: &str| ContactParam {
            instance: Some("<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>".into()),
            ..contact(uri)
        };
        r.register(&register(
            vec![with_instance("sip:alice@192.0.2.10:5060")],
            1,
            T0,
        ))
        .unwrap();
        r.register(&register(
            vec![with_instance("sip:alice@192.0.2.99:5060")],
            2,
            T0,
        ))
        .unwrap();
        let bindings = r.lookup(AOR, T0);
        assert_eq!(bindings.len(), 1);
        assert_eq!(bindings[0].contact, "sip:alice@192.0.2.99:5060");
    }

    #[test]
    fn header_injection_is_refused() {
        let mut r = registrar();
        for uri in [
            "sip:a@b>;evil=1",
            "sip:a@b\r\nVia: x",
            "sip:a b@c",
            "",
            "sip:\"a\"@b",
        ] {
            assert!(
                matches!(
                    r.register(&register(vec![contact(uri)], 1, T0)),
                    Err(RegistrarError::InvalidRequest { .. })
                ),
                "{uri:?}"
            );
        }
        let quote_in_instance = ContactParam {
            instance: Some("<urn:x\">".into()),
            ..contact("sip:a@b")
        };
        assert!(r
            .register(&register(vec![quote_in_instance], 1, T0))
            .is_err());
        let mut no_call_id = register(vec![contact("sip:a@b")], 1, T0);
        no_call_id.call_id = String::new();
        assert!(r.register(&no_call_id).is_err());
        let too_many = register(
            (0..=MAX_CONTACTS_PER_REQUEST)
                .map(|i| contact(&format!("sip:{i}@b")))
                .collect(),
            1,
            T0,
        );
        // Rejected as malformed (400) before the per-AOR limit (403) could apply.
        assert!(
            matches!(
                r.register(&too_many),
                Err(RegistrarError::InvalidRequest { reason }) if reason.contains("64 Contact")
            ),
            "more than {MAX_CONTACTS_PER_REQUEST} contacts"
        );
        assert!(r.is_empty());
    }

    #[test]
    fn config_is_validated() {
        for config in [
            RegistrarConfig {
                min_expires: 0,
                ..RegistrarConfig::default()
            },
            RegistrarConfig {
                min_expires: 4000,
                ..RegistrarConfig::default()
            },
            RegistrarConfig {
                max_expires: 100,
                ..RegistrarConfig::default()
            },
            RegistrarConfig {
                max_bindings: 0,
                ..RegistrarConfig::default()
            },
        ] {
            assert!(matches!(
                Registrar::new(config),
                Err(RegistrarError::InvalidConfig { .. })
            ));
        }
    }

    #[test]
    fn q_values_parse_and_print_per_the_grammar() {
        for (text, milli) in [
            ("0", 0),
            ("1", 1000),
            ("0.5", 500),
            ("0.125", 125),
            ("1.000", 1000),
            ("0.", 0),
        ] {
            assert_eq!(
                QValue::parse(text).map(QValue::milli),
                Some(milli),
                "{text}"
            );
        }
        for text in ["1.5", "2", "0.1234", "-0", "", ".5", "0.x", "1.001"] {
            assert_eq!(QValue::parse(text), None, "{text}");
        }
        assert_eq!(QValue::from_milli(1001), None);
        let shown: Vec<String> = [0, 1000, 500, 125, 50]
            .into_iter()
            .map(|m| QValue::from_milli(m).unwrap().to_string())
            .collect();
        assert_eq!(shown, ["0", "1", "0.5", "0.125", "0.05"]);
    }

    #[test]
    fn snapshot_serializes_without_internal_fields() {
        let mut r = registrar();
        let mut request = register(
            vec![ContactParam {
                q: QValue::from_milli(500),
                ..contact("sip:alice@192.0.2.10")
            }],
            1,
            T0,
        );
        request.flow = flow(40_000, Some(9));
        r.register(&request).unwrap();
        let json = serde_json::to_value(r.snapshot(T0 + 100)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "at": T0 + 100,
                "bindings": 1,
                "aors": [{
                    "aor": AOR,
                    "bindings": [{
                        "contact": "sip:alice@192.0.2.10",
                        "q": 0.5,
                        "instance": null,
                        "reg_id": null,
                        "call_id": "a84b4c76e66710@pc33.example.com",
                        "cseq": 1,
                        "flow": {
                            "transport": "tls",
                            "source": "192.0.2.10:40000",
                            "connection_id": 9
                        },
                        "registered_at": T0,
                        "updated_at": T0,
                        "expires_at": T0 + 3600,
                        "expires_in": 3500
                    }]
                }]
            })
        );
    }
}
