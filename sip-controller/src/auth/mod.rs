//! SIP digest authentication (RFC 3261 §22, with RFC 7616 and RFC 8760 for SHA-256).
//!
//! This module owns everything between an `Authorization` / `Proxy-Authorization` header
//! value and a verdict: the credentials grammar ([`DigestCredentials`]), the digest
//! computation ([`digest`]), stateless signed nonces and the nonce-count replay cache
//! ([`nonce`]), the configured users ([`CredentialStore`]), and the challenge values for
//! `WWW-Authenticate` / `Proxy-Authenticate`. It is IO-free: the caller passes the extracted
//! header values, the method, the Request-URI and the time in unix seconds, and carries out
//! the verdict (200 path, 401/407 with the challenge headers, 403, or 400). The one system
//! call is `getrandom` for the nonce secret in [`DigestAuthenticator::new`].
//!
//! Hand-written rather than taken from an HTTP digest crate: SIP needs the RFC 2069 no-qop
//! mode for old phones, several challenges per response (RFC 8760 §2.4), stateless nonces
//! bound to a realm and a bounded replay cache; the hashes themselves come from RustCrypto.
//!
//! # Verdicts
//!
//! | situation                                   | verdict                               |
//! |---------------------------------------------|---------------------------------------|
//! | no credentials for the realm                | `Challenge { stale: false }` → 401/407 |
//! | nonce not ours / tampered / other realm     | `Challenge { stale: false }`           |
//! | unknown user, wrong password                | `Challenge { stale: false }`, counted  |
//! | right password, nonce expired               | `Challenge { stale: true }`            |
//! | right password, `nc` not increasing         | `Challenge { stale: true }`            |
//! | too many recent failures (user + source)    | `Forbidden` → 403                      |
//! | malformed credentials, digest-uri mismatch  | `Err(AuthError)` → 400                 |
//!
//! A wrong password is answered with a fresh challenge, not 403: RFC 3261 §22.2 and §22.3
//! answer credentials that do not verify with a new 401/407, which lets the client re-prompt
//! its user (RFC 7616 §3.3). Failures are counted per user name and
//! source address; after [`AuthConfig::max_failures`] failures within
//! [`AuthConfig::failure_window_secs`] the verdict becomes [`AuthOutcome::Forbidden`] until
//! the window passes, which stops online password guessing without letting a remote
//! attacker lock a user out from everywhere (the lockout is per source).
//!
//! `stale=true` is only ever set when the response proved knowledge of the password
//! (RFC 7616 §3.3: the server should set it only for a request whose nonce is invalid but
//! whose digest is valid for that nonce), so it never helps a guesser.
//!
//! # RFC 2069 clients
//!
//! Responses without `qop` are accepted for MD5 when [`AuthConfig::allow_rfc2069`] is set
//! (default: true, for old phones). Such responses carry no nonce count, so they can be
//! replayed within the nonce lifetime; keep the lifetime short or turn the mode off.

pub mod credentials;
pub mod digest;
mod nonce;
mod store;

use std::{collections::HashMap, net::IpAddr};

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

pub use self::{
    credentials::{DigestCredentials, NonceCount, MAX_CREDENTIALS_LEN, MAX_PARAMETERS},
    digest::{Algorithm, ClientCredentials, HashFunction},
    store::{CredentialEntry, CredentialStore, MAX_IDENTITY_LEN},
};
use self::{
    digest::{QopInput, ResponseInput},
    nonce::{nonce_age, NonceAge, NonceCountCheck, NonceSigner, ReplayCache},
    store::Ha1Lookup,
};

/// Why credentials were refused as malformed: answered with 400 Bad Request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The header value exceeds [`MAX_CREDENTIALS_LEN`].
    #[error("credentials of {len} bytes exceed the {max}-byte limit")]
    CredentialsTooLong {
        /// Length received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The scheme is not Digest (e.g. Basic, which RFC 3261 §22.1 forbids).
    #[error("authentication scheme is not Digest")]
    UnsupportedScheme,
    /// A character where the grammar does not allow it.
    #[error("at byte {offset}: expected {expected}")]
    Syntax {
        /// Byte offset in the header value.
        offset: usize,
        /// What the grammar expected there.
        expected: &'static str,
    },
    /// The value ended where the grammar expected more.
    #[error("credentials end early: expected {expected}")]
    UnexpectedEnd {
        /// What the grammar expected.
        expected: &'static str,
    },
    /// A quoted string without its closing quote.
    #[error("quoted string opened at byte {offset} is not closed")]
    UnterminatedQuotedString {
        /// Offset of the opening quote.
        offset: usize,
    },
    /// More parameters than [`MAX_PARAMETERS`].
    #[error("more than {max} parameters")]
    TooManyParameters {
        /// The limit.
        max: usize,
    },
    /// A parameter given twice.
    #[error("parameter {name} given more than once")]
    DuplicateParameter {
        /// The parameter name, lowercased.
        name: String,
    },
    /// A required parameter is missing.
    #[error("parameter {name} is missing")]
    MissingParameter {
        /// The parameter name.
        name: &'static str,
    },
    /// A parameter value outside its grammar.
    #[error("parameter {name}: {reason}")]
    InvalidParameter {
        /// The parameter name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// An `algorithm` this server does not implement.
    #[error("digest algorithm is not supported")]
    UnsupportedAlgorithm,
    /// A `qop` other than `auth` (only `auth` is offered).
    #[error("qop other than auth")]
    UnsupportedQop,
    /// The digest-uri does not match the Request-URI (RFC 2617 §3.2.2.5: 400).
    #[error("digest uri does not match the Request-URI")]
    DigestUriMismatch,
}

impl AuthError {
    /// The SIP status for the response: always 400 Bad Request.
    pub fn sip_status(&self) -> u16 {
        400
    }

    /// The reason phrase for the status line.
    pub fn reason_phrase(&self) -> &'static str {
        "Bad Request"
    }
}

/// Why the authenticator could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSetupError {
    /// The operating system's random source failed.
    #[error("random source unavailable for the nonce secret")]
    RandomUnavailable,
    /// A credential entry is unusable.
    #[error("credential entry #{index}: {reason}")]
    InvalidEntry {
        /// Position of the entry in the configuration.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two entries for the same user in the same realm.
    #[error("user {username} appears twice in realm {realm}")]
    DuplicateUser {
        /// The user name.
        username: String,
        /// The realm.
        realm: String,
    },
    /// The configuration offers no algorithm.
    #[error("at least one of SHA-256 and MD5 must be offered")]
    NoAlgorithm,
}

/// Authenticator settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Offer (and accept) SHA-256 (RFC 8760).
    pub offer_sha256: bool,
    /// Offer (and accept) MD5: most deployed phones know nothing else.
    pub offer_md5: bool,
    /// Seconds a nonce stays valid; older ones are answered with `stale=true`.
    pub nonce_lifetime_secs: u64,
    /// Nonces whose `nc` history is kept (RFC 7616 §3.4 replay protection).
    pub replay_cache_capacity: usize,
    /// Accept MD5 responses without `qop` (RFC 2069 clients).
    pub allow_rfc2069: bool,
    /// Failed responses per user and source within the window before 403; 0 disables.
    pub max_failures: u32,
    /// The failure counting window, in seconds, restarted by each failure.
    pub failure_window_secs: u64,
    /// Users-and-sources whose failures are tracked; the stalest are forgotten first.
    pub failure_table_capacity: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            offer_sha256: true,
            offer_md5: true,
            nonce_lifetime_secs: 300,
            replay_cache_capacity: 10_000,
            allow_rfc2069: true,
            max_failures: 5,
            failure_window_secs: 300,
            failure_table_capacity: 10_000,
        }
    }
}

/// Whether the server challenges as the request's target (a registrar, a UAS) or as a
/// proxy (RFC 3261 §22.2 and §22.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChallengeKind {
    /// 401 with `WWW-Authenticate`; the client answers with `Authorization`.
    Origin,
    /// 407 with `Proxy-Authenticate`; the client answers with `Proxy-Authorization`.
    Proxy,
}

impl ChallengeKind {
    /// Status code of the challenge.
    pub const fn status(self) -> u16 {
        match self {
            Self::Origin => 401,
            Self::Proxy => 407,
        }
    }

    /// Reason phrase of the challenge.
    pub const fn reason_phrase(self) -> &'static str {
        match self {
            Self::Origin => "Unauthorized",
            Self::Proxy => "Proxy Authentication Required",
        }
    }

    /// The header carrying the challenge.
    pub const fn challenge_header(self) -> &'static str {
        match self {
            Self::Origin => "WWW-Authenticate",
            Self::Proxy => "Proxy-Authenticate",
        }
    }

    /// The header carrying the client's credentials.
    pub const fn credentials_header(self) -> &'static str {
        match self {
            Self::Origin => "Authorization",
            Self::Proxy => "Proxy-Authorization",
        }
    }
}

/// One request to authenticate, as extracted by the message layer.
#[derive(Clone, Copy, Debug)]
pub struct AuthRequest<'a> {
    /// The realm this request is authenticated in (the served domain).
    pub realm: &'a str,
    /// The request method, as in the request line (`REGISTER`, `INVITE`, ...).
    pub method: &'a str,
    /// The Request-URI as received; when given, the digest-uri must equal it (ASCII
    /// case-insensitively). `None` skips the check (e.g. behind a proxy that rewrites it).
    pub request_uri: Option<&'a str>,
    /// Every `Authorization` (or `Proxy-Authorization`) header value, in message order.
    pub credentials: &'a [&'a str],
    /// The request's source address, for per-source failure counting.
    pub source: Option<IpAddr>,
}

/// Why a challenge is sent (for logs and counters; not sent to the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChallengeReason {
    /// No Digest credentials for this realm.
    NoCredentials,
    /// The response uses an algorithm that is not offered.
    AlgorithmNotOffered,
    /// A response without `qop` that is not allowed (not MD5, or RFC 2069 mode off).
    QopRequired,
    /// The nonce was not minted here for this realm (forged, tampered, or another server).
    InvalidNonce,
    /// The opaque value is not the one sent with the challenge.
    OpaqueMismatch,
    /// No such user in the realm.
    UnknownUser,
    /// The user has no HA1 for the response's hash function.
    NoSecretForAlgorithm,
    /// The response does not match: wrong password (or corrupted request).
    InvalidResponse,
    /// The nonce expired; the response was otherwise right.
    StaleNonce,
    /// The nonce count did not increase (RFC 7616 §3.4).
    NonceCountReplay,
    /// The nonce's count history was evicted from the replay cache under load.
    NonceForgotten,
}

/// The verdict on a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The response proves knowledge of the user's password.
    Authenticated {
        /// The authenticated user name (the caller authorizes it for the AOR or call).
        username: String,
        /// The algorithm used.
        algorithm: Algorithm,
    },
    /// Answer with 401/407 carrying `headers`, one challenge value per offered algorithm.
    Challenge {
        /// Whether `stale=true` was set: the client may retry without asking its user.
        stale: bool,
        /// Why.
        reason: ChallengeReason,
        /// The `WWW-Authenticate` / `Proxy-Authenticate` values, SHA-256 first.
        headers: Vec<String>,
    },
    /// Answer with 403 Forbidden: too many recent failures for this user from this source.
    Forbidden {
        /// The user name the credentials claimed.
        username: String,
    },
}

/// Counters for metrics, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuthStats {
    /// Requests authenticated.
    pub authenticated: u64,
    /// Challenges sent, all reasons.
    pub challenges: u64,
    /// Challenges for requests without usable credentials.
    pub no_credentials: u64,
    /// Nonces refused as not ours.
    pub invalid_nonce: u64,
    /// Unknown users.
    pub unknown_user: u64,
    /// Wrong responses (wrong passwords).
    pub invalid_response: u64,
    /// Expired nonces with a right response.
    pub stale_nonce: u64,
    /// Nonce counts that did not increase, or evicted nonces.
    pub replayed: u64,
    /// 403 verdicts after repeated failures.
    pub forbidden: u64,
    /// Malformed credentials (400).
    pub malformed: u64,
}

#[derive(Clone, Copy, Debug)]
struct FailureRecord {
    count: u32,
    last_failure: u64,
}

/// Recent failures per (user name, source), bounded.
#[derive(Debug)]
struct FailureTable {
    capacity: usize,
    window_secs: u64,
    records: HashMap<(String, Option<IpAddr>), FailureRecord>,
}

impl FailureTable {
    fn live(&self, record: FailureRecord, now: u64) -> bool {
        now <= record.last_failure.saturating_add(self.window_secs)
    }

    fn failures(&self, username: &str, source: Option<IpAddr>, now: u64) -> u32 {
        self.records
            .get(&(username.to_owned(), source))
            .filter(|record| self.live(**record, now))
            .map_or(0, |record| record.count)
    }

    fn record_failure(&mut self, username: &str, source: Option<IpAddr>, now: u64) {
        let key = (username.to_owned(), source);
        if !self.records.contains_key(&key) && self.records.len() >= self.capacity {
            let window = self.window_secs;
            self.records
                .retain(|_, record| now <= record.last_failure.saturating_add(window));
            if self.records.len() >= self.capacity {
                // Forget the stalest record to make room.
                if let Some(stalest) = self
                    .records
                    .iter()
                    .min_by_key(|(_, record)| record.last_failure)
                    .map(|(key, _)| key.clone())
                {
                    self.records.remove(&stalest);
                }
            }
        }
        let window = self.window_secs;
        let record = self.records.entry(key).or_insert(FailureRecord {
            count: 0,
            last_failure: now,
        });
        if now > record.last_failure.saturating_add(window) {
            record.count = 0;
        }
        record.count = record.count.saturating_add(1);
        record.last_failure = now;
    }

    fn clear(&mut self, username: &str, source: Option<IpAddr>) {
        self.records.remove(&(username.to_owned(), source));
    }
}

/// The digest authenticator: challenges, verifies, and remembers nonce counts.
#[derive(Debug)]
pub struct DigestAuthenticator {
    config: AuthConfig,
    store: CredentialStore,
    signer: NonceSigner,
    replay: ReplayCache,
    failures: FailureTable,
    stats: AuthStats,
}

/// Escapes a value for a quoted-string (RFC 3261 §25.1 quoted-pair).
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        // Control characters cannot be escaped in a header; they are dropped (realms come
        // from configuration, so this only guards against a mistyped one).
        if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// The HA1 hashed when the user is unknown, so that the time taken does not reveal
/// whether a user name exists.
const DUMMY_HA1: &[u8; 64] = b"0000000000000000000000000000000000000000000000000000000000000000";

impl DigestAuthenticator {
    /// Builds an authenticator with a nonce secret from the operating system's CSPRNG.
    pub fn new(config: AuthConfig, store: CredentialStore) -> Result<Self, AuthSetupError> {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        let mut seed = [0u8; 16];
        getrandom::fill(&mut secret[..]).map_err(|_| AuthSetupError::RandomUnavailable)?;
        getrandom::fill(&mut seed).map_err(|_| AuthSetupError::RandomUnavailable)?;
        Self::with_secret(config, store, &secret, seed)
    }

    /// Builds an authenticator with a given nonce secret: for several processes that must
    /// accept each other's nonces (they share `secret`, each with its own random `seed`),
    /// and for tests.
    pub fn with_secret(
        config: AuthConfig,
        store: CredentialStore,
        secret: &[u8; 32],
        seed: [u8; 16],
    ) -> Result<Self, AuthSetupError> {
        if !config.offer_sha256 && !config.offer_md5 {
            return Err(AuthSetupError::NoAlgorithm);
        }
        let signer = NonceSigner::new(secret, seed).ok_or(AuthSetupError::RandomUnavailable)?;
        Ok(Self {
            replay: ReplayCache::new(config.replay_cache_capacity),
            failures: FailureTable {
                capacity: config.failure_table_capacity.max(1),
                window_secs: config.failure_window_secs,
                records: HashMap::new(),
            },
            config,
            store,
            signer,
            stats: AuthStats::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The users.
    pub fn store(&self) -> &CredentialStore {
        &self.store
    }

    /// Replaces the users (configuration reload); nonces and counters survive.
    pub fn replace_store(&mut self, store: CredentialStore) {
        self.store = store;
    }

    /// Counters since start.
    pub fn stats(&self) -> AuthStats {
        self.stats
    }

    /// Nonces currently tracked by the replay cache.
    pub fn tracked_nonces(&self) -> usize {
        self.replay.len()
    }

    fn offers(&self, hash: HashFunction) -> bool {
        match hash {
            HashFunction::Sha256 => self.config.offer_sha256,
            HashFunction::Md5 => self.config.offer_md5,
        }
    }

    /// Builds the challenge values for `realm` at `now`: one per offered algorithm, SHA-256
    /// first (RFC 8760 §2.4: in order of preference), sharing one fresh nonce.
    ///
    /// ```text
    /// Digest realm="example.com", nonce="<80 hex>", opaque="<16 hex>", algorithm=SHA-256,
    ///  qop="auth"                                       (one line; ", stale=true" appended)
    /// ```
    pub fn challenge(&mut self, realm: &str, now: u64, stale: bool) -> Vec<String> {
        self.stats.challenges += 1;
        let nonce = self.signer.issue(realm, now);
        let opaque = self.signer.opaque(realm);
        let realm = quote(realm);
        [HashFunction::Sha256, HashFunction::Md5]
            .into_iter()
            .filter(|hash| self.offers(*hash))
            .map(|hash| {
                // RFC 7616 §3.3: stale is only present when true.
                let stale = if stale { ", stale=true" } else { "" };
                format!(
                    "Digest realm={realm}, nonce=\"{nonce}\", opaque=\"{opaque}\", \
                     algorithm={}, qop=\"auth\"{stale}",
                    hash.token()
                )
            })
            .collect()
    }

    fn challenge_outcome(
        &mut self,
        realm: &str,
        now: u64,
        stale: bool,
        reason: ChallengeReason,
    ) -> AuthOutcome {
        let counter = match reason {
            ChallengeReason::NoCredentials
            | ChallengeReason::AlgorithmNotOffered
            | ChallengeReason::QopRequired
            | ChallengeReason::OpaqueMismatch
            | ChallengeReason::NoSecretForAlgorithm => &mut self.stats.no_credentials,
            ChallengeReason::InvalidNonce => &mut self.stats.invalid_nonce,
            ChallengeReason::UnknownUser => &mut self.stats.unknown_user,
            ChallengeReason::InvalidResponse => &mut self.stats.invalid_response,
            ChallengeReason::StaleNonce => &mut self.stats.stale_nonce,
            ChallengeReason::NonceCountReplay | ChallengeReason::NonceForgotten => {
                &mut self.stats.replayed
            }
        };
        *counter += 1;
        AuthOutcome::Challenge {
            stale,
            reason,
            headers: self.challenge(realm, now, stale),
        }
    }

    /// Picks the credentials to verify: those for our realm whose algorithm is offered,
    /// first in message order (RFC 3261 §22.4: one set per realm; RFC 8760 §2.5: the client
    /// answers with its preferred offered algorithm); otherwise the first for our realm.
    fn select<'a>(
        &self,
        request: &AuthRequest<'a>,
    ) -> Result<Option<DigestCredentials<'a>>, AuthError> {
        let mut fallback = None;
        for value in request.credentials {
            let credentials = match DigestCredentials::parse(value) {
                Ok(credentials) => credentials,
                // Another scheme is not for us; skip it like another realm's credentials.
                Err(AuthError::UnsupportedScheme) => continue,
                Err(error) => return Err(error),
            };
            if credentials.realm != request.realm {
                continue;
            }
            if self.offers(credentials.algorithm.hash()) {
                return Ok(Some(credentials));
            }
            fallback.get_or_insert(credentials);
        }
        Ok(fallback)
    }

    /// Verifies a request's credentials at `now` (unix seconds).
    pub fn authenticate(
        &mut self,
        request: &AuthRequest<'_>,
        now: u64,
    ) -> Result<AuthOutcome, AuthError> {
        let result = self.verify(request, now);
        if result.is_err() {
            self.stats.malformed += 1;
        }
        result
    }

    fn verify(&mut self, request: &AuthRequest<'_>, now: u64) -> Result<AuthOutcome, AuthError> {
        let realm = request.realm;
        let Some(credentials) = self.select(request)? else {
            return Ok(self.challenge_outcome(realm, now, false, ChallengeReason::NoCredentials));
        };
        let algorithm = credentials.algorithm;
        let hash = algorithm.hash();
        if !self.offers(hash) {
            return Ok(self.challenge_outcome(
                realm,
                now,
                false,
                ChallengeReason::AlgorithmNotOffered,
            ));
        }
        // RFC 2069 responses (no qop) only for MD5 and only when allowed.
        if credentials.qop.is_none() && !(self.config.allow_rfc2069 && algorithm == Algorithm::Md5)
        {
            return Ok(self.challenge_outcome(realm, now, false, ChallengeReason::QopRequired));
        }
        // RFC 3261 §22.4 / RFC 2617 §3.2.2.5: the digest-uri must name the Request-URI.
        if let Some(request_uri) = request.request_uri {
            if !credentials.uri.eq_ignore_ascii_case(request_uri) {
                return Err(AuthError::DigestUriMismatch);
            }
        }
        let Some(nonce) = self.signer.verify(&credentials.nonce, realm) else {
            return Ok(self.challenge_outcome(realm, now, false, ChallengeReason::InvalidNonce));
        };
        let age = nonce_age(nonce.issued_at, now, self.config.nonce_lifetime_secs);
        if age == NonceAge::FromTheFuture {
            return Ok(self.challenge_outcome(realm, now, false, ChallengeReason::InvalidNonce));
        }
        // RFC 7616 §3.3: opaque must come back unchanged. Old phones omit it: tolerated, as
        // it carries no state here (the nonce is self-contained).
        if let Some(opaque) = &credentials.opaque {
            let expected = self.signer.opaque(realm);
            if !bool::from(opaque.as_bytes().ct_eq(expected.as_bytes())) {
                return Ok(self.challenge_outcome(
                    realm,
                    now,
                    false,
                    ChallengeReason::OpaqueMismatch,
                ));
            }
        }
        let username = credentials.username.as_ref();
        if self.config.max_failures > 0
            && self.failures.failures(username, request.source, now) >= self.config.max_failures
        {
            self.stats.forbidden += 1;
            return Ok(AuthOutcome::Forbidden {
                username: username.to_owned(),
            });
        }
        Ok(self.verify_response(request, &credentials, nonce, age, now))
    }

    /// Recomputes the response, then applies expiry and the nonce count: the steps that
    /// need the password to be proven first.
    fn verify_response(
        &mut self,
        request: &AuthRequest<'_>,
        credentials: &DigestCredentials<'_>,
        nonce: nonce::VerifiedNonce,
        age: NonceAge,
        now: u64,
    ) -> AuthOutcome {
        let realm = request.realm;
        let username = credentials.username.as_ref();
        let algorithm = credentials.algorithm;
        let hash = algorithm.hash();
        let (ha1, known): (&[u8], bool) = match self.store.ha1(realm, username, hash) {
            Ha1Lookup::Found(ha1) => (ha1, true),
            Ha1Lookup::UnknownUser => (&DUMMY_HA1[..hash.hex_len()], false),
            Ha1Lookup::NoSecretForAlgorithm => {
                return self.challenge_outcome(
                    realm,
                    now,
                    false,
                    ChallengeReason::NoSecretForAlgorithm,
                )
            }
        };
        let qop = match (&credentials.qop, &credentials.nc, &credentials.cnonce) {
            (Some(qop), Some(nc), Some(cnonce)) => Some(QopInput {
                nc: nc.raw,
                cnonce,
                qop,
            }),
            _ => None,
        };
        let expected = ResponseInput {
            algorithm,
            ha1_hex: ha1,
            method: request.method,
            digest_uri: &credentials.uri,
            nonce: &credentials.nonce,
            qop,
            cnonce: credentials.cnonce.as_deref(),
        }
        .response();
        // The client may send uppercase hex; compare case-insensitively in constant time.
        let received: zeroize::Zeroizing<Vec<u8>> = zeroize::Zeroizing::new(
            credentials
                .response
                .bytes()
                .map(|b| b.to_ascii_lowercase())
                .collect(),
        );
        let matches = bool::from(expected.as_slice().ct_eq(received.as_slice()));
        if !known || !matches {
            self.failures.record_failure(username, request.source, now);
            let reason = if known {
                ChallengeReason::InvalidResponse
            } else {
                ChallengeReason::UnknownUser
            };
            return self.challenge_outcome(realm, now, false, reason);
        }

        // The password is proven from here on: stale=true is safe to send.
        if age == NonceAge::Expired {
            return self.challenge_outcome(realm, now, true, ChallengeReason::StaleNonce);
        }
        if let Some(nc) = &credentials.nc {
            match self.replay.check_and_record(
                nonce,
                nc.value,
                now,
                self.config.nonce_lifetime_secs,
            ) {
                NonceCountCheck::Accepted => {}
                NonceCountCheck::Replayed => {
                    return self.challenge_outcome(
                        realm,
                        now,
                        true,
                        ChallengeReason::NonceCountReplay,
                    )
                }
                NonceCountCheck::Forgotten => {
                    return self.challenge_outcome(
                        realm,
                        now,
                        true,
                        ChallengeReason::NonceForgotten,
                    )
                }
            }
        }
        self.failures.clear(username, request.source);
        self.stats.authenticated += 1;
        AuthOutcome::Authenticated {
            username: username.to_owned(),
            algorithm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "example.com";
    const URI: &str = "sip:example.com";
    const T0: u64 = 1_700_000_000;
    const ALICE_IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10)));

    fn entry(username: &str, password: Option<&str>, ha1_md5: Option<&str>) -> CredentialEntry {
        CredentialEntry {
            username: username.into(),
            realm: REALM.into(),
            password: password.map(Into::into),
            ha1_md5: ha1_md5.map(Into::into),
            ha1_sha256: None,
        }
    }

    fn authenticator(config: AuthConfig) -> DigestAuthenticator {
        let store = CredentialStore::new([
            entry("alice", Some("wonderland"), None),
            // MD5("bob:example.com:builder")
            entry(
                "bob",
                None,
                Some(&digest::hex_lower(&{
                    let hex = HashFunction::Md5.hex_digest(&[b"bob", b"example.com", b"builder"]);
                    digest::decode_hex::<16>(std::str::from_utf8(&hex).unwrap()).unwrap()
                })),
            ),
        ])
        .unwrap();
        DigestAuthenticator::with_secret(config, store, &[0x42; 32], [7; 16]).unwrap()
    }

    /// Extracts a quoted parameter from a challenge value.
    fn param(challenge: &str, name: &str) -> String {
        let start = challenge.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        let end = challenge[start..].find('"').unwrap() + start;
        challenge[start..end].to_owned()
    }

    struct Answer<'a> {
        algorithm: Algorithm,
        username: &'a str,
        password: &'a str,
        nc: &'a str,
        uri: &'a str,
    }

    impl Default for Answer<'_> {
        fn default() -> Self {
            Self {
                algorithm: Algorithm::Sha256,
                username: "alice",
                password: "wonderland",
                nc: "00000001",
                uri: URI,
            }
        }
    }

    /// A client's `Authorization` value answering `challenge` with qop=auth.
    fn answer(challenge: &str, a: &Answer<'_>) -> String {
        let nonce = param(challenge, "nonce");
        let opaque = param(challenge, "opaque");
        let response = ClientCredentials {
            algorithm: a.algorithm,
            username: a.username,
            realm: REALM,
            password: a.password,
            method: "REGISTER",
            digest_uri: a.uri,
            nonce: &nonce,
            nc: a.nc,
            cnonce: "0a4f113b",
        }
        .response();
        format!(
            "Digest username=\"{}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{}\", \
             response=\"{response}\", algorithm={}, cnonce=\"0a4f113b\", opaque=\"{opaque}\", \
             qop=auth, nc={}",
            a.username,
            a.uri,
            a.algorithm.token(),
            a.nc
        )
    }

    fn run(auth: &mut DigestAuthenticator, credentials: &[&str], now: u64) -> AuthOutcome {
        auth.authenticate(
            &AuthRequest {
                realm: REALM,
                method: "REGISTER",
                request_uri: Some(URI),
                credentials,
                source: ALICE_IP,
            },
            now,
        )
        .unwrap()
    }

    fn challenge_reason(outcome: &AuthOutcome) -> (bool, ChallengeReason) {
        match outcome {
            AuthOutcome::Challenge { stale, reason, .. } => (*stale, *reason),
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    fn authenticated(username: &str, algorithm: Algorithm) -> AuthOutcome {
        AuthOutcome::Authenticated {
            username: username.into(),
            algorithm,
        }
    }

    #[test]
    fn challenge_offers_sha256_then_md5_with_one_nonce() {
        let mut auth = authenticator(AuthConfig::default());
        let values = auth.challenge(REALM, T0, false);
        assert_eq!(values.len(), 2);
        let nonce = param(&values[0], "nonce");
        let opaque = param(&values[0], "opaque");
        assert_eq!(nonce.len(), 80);
        assert_eq!(
            values[0],
            format!(
                "Digest realm=\"example.com\", nonce=\"{nonce}\", opaque=\"{opaque}\", \
                 algorithm=SHA-256, qop=\"auth\""
            )
        );
        assert_eq!(
            values[1],
            format!(
                "Digest realm=\"example.com\", nonce=\"{nonce}\", opaque=\"{opaque}\", \
                 algorithm=MD5, qop=\"auth\""
            )
        );
        let stale = auth.challenge(REALM, T0, true);
        assert!(stale.iter().all(|v| v.ends_with(", stale=true")));
        assert_ne!(
            param(&stale[0], "nonce"),
            nonce,
            "every challenge has a fresh nonce"
        );
        // Realms are escaped as quoted strings.
        let odd = auth.challenge("a\"b\\c", T0, false);
        assert!(odd[0].starts_with(r#"Digest realm="a\"b\\c", "#));
    }

    #[test]
    fn no_credentials_is_challenged() {
        let mut auth = authenticator(AuthConfig::default());
        let outcome = run(&mut auth, &[], T0);
        assert_eq!(
            challenge_reason(&outcome),
            (false, ChallengeReason::NoCredentials)
        );
        let AuthOutcome::Challenge { headers, .. } = outcome else {
            unreachable!()
        };
        assert_eq!(headers.len(), 2);
        // Basic credentials are not ours either.
        let outcome = run(&mut auth, &["Basic YWxpY2U6d29uZGVybGFuZA=="], T0);
        assert_eq!(
            challenge_reason(&outcome),
            (false, ChallengeReason::NoCredentials)
        );
    }

    #[test]
    fn sha256_and_md5_answers_authenticate() {
        let mut auth = authenticator(AuthConfig::default());
        let challenge = auth.challenge(REALM, T0, false);
        let sha = answer(&challenge[0], &Answer::default());
        assert_eq!(
            run(&mut auth, &[&sha], T0 + 1),
            authenticated("alice", Algorithm::Sha256)
        );
        let md5 = answer(
            &challenge[1],
            &Answer {
                algorithm: Algorithm::Md5,
                nc: "00000002",
                ..Answer::default()
            },
        );
        assert_eq!(
            run(&mut auth, &[&md5], T0 + 2),
            authenticated("alice", Algorithm::Md5)
        );
        // A user configured with a precomputed MD5 HA1.
        let bob = answer(
            &challenge[1],
            &Answer {
                algorithm: Algorithm::Md5,
                username: "bob",
                password: "builder",
                // The count belongs to the nonce, whoever uses it.
                nc: "00000003",
                ..Answer::default()
            },
        );
        assert_eq!(
            run(&mut auth, &[&bob], T0 + 2),
            authenticated("bob", Algorithm::Md5)
        );
        assert_eq!(auth.stats().authenticated, 3);
    }

    #[test]
    fn session_algorithm_authenticates() {
        let mut auth = authenticator(AuthConfig::default());
        let challenge = auth.challenge(REALM, T0, false);
        let nonce = param(&challenge[0], "nonce");
        let ha1 = digest::ha1_from_password(HashFunction::Sha256, "alice", REALM, "wonderland");
        let response = ResponseInput {
            algorithm: Algorithm::Sha256Sess,
            ha1_hex: &ha1,
            method: "REGISTER",
            digest_uri: URI,
            nonce: &nonce,
            qop: Some(QopInput {
                nc: "00000001",
                cnonce: "cn",
                qop: "auth",
            }),
            cnonce: Some("cn"),
        }
        .response();
        let value = format!(
            "Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{URI}\", \
             response=\"{}\", algorithm=SHA-256-sess, cnonce=\"cn\", qop=auth, nc=00000001",
            std::str::from_utf8(&response).unwrap()
        );
        assert_eq!(
            run(&mut auth, &[&value], T0),
            authenticated("alice", Algorithm::Sha256Sess)
        );
    }

    #[test]
    fn uppercase_response_hex_is_accepted() {
        let mut auth = authenticator(AuthConfig::default());
        let challenge = auth.challenge(REALM, T0, false);
        let value = answer(&challenge[0], &Answer::default());
        let start = value.find("response=\"").unwrap() + 10;
        let upper = format!(
            "{}{}{}",
            &value[..start],
            value[start..start + 64].to_ascii_uppercase(),
            &value[start + 64..]
        );
        assert_eq!(
            run(&mut auth, &[&upper], T0),
            authenticated("alice", Algorithm::Sha256)
        );
    }

    /// An RFC 2069 `Authorization` (no qop, nc or cnonce).
    fn rfc2069(challenge: &str, algorithm: Algorithm) -> String {
        let nonce = param(challenge, "nonce");
        let ha1 = digest::ha1_from_password(algorithm.hash(), "alice", REALM, "wonderland");
        let response = ResponseInput {
            algorithm,
            ha1_hex: &ha1,
            method: "REGISTER",
            digest_uri: URI,
            nonce: &nonce,
            qop: None,
            cnonce: None,
        }
        .response();
        format!(
            "Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{URI}\", \
             response=\"{}\", algorithm={}",
            std::str::from_utf8(&response).unwrap(),
            algorithm.token()
        )
    }

    #[test]
    fn rfc2069_md5_is_accepted_only_when_allowed() {
        let mut auth = authenticator(AuthConfig::default());
        let challenge = auth.challenge(REALM, T0, false);
        let md5 = rfc2069(&challenge[1], Algorithm::Md5);
        assert_eq!(
            run(&mut auth, &[&md5], T0),
            authenticated("alice", Algorithm::Md5)
        );
        let sha = rfc2069(&challenge[0], Algorithm::Sha256);
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&sha], T0)),
            (false, ChallengeReason::QopRequired)
        );
        let mut strict = authenticator(AuthConfig {
            allow_rfc2069: false,
            ..AuthConfig::default()
        });
        assert_eq!(
            challenge_reason(&run(&mut strict, &[&md5], T0)),
            (false, ChallengeReason::QopRequired)
        );
    }

    #[test]
    fn wrong_password_and_unknown_user_are_rechallenged_and_counted() {
        let mut auth = authenticator(AuthConfig::default());
        let challenge = auth.challenge(REALM, T0, false);
        let wrong = answer(
            &challenge[0],
            &Answer {
                password: "looking-glass",
                ..Answer::default()
            },
        );
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&wrong], T0)),
            (false, ChallengeReason::InvalidResponse)
        );
        let unknown = answer(
            &challenge[1],
            &Answer {
                algorithm: Algorithm::Md5,
                username: "mallory",
                ..Answer::default()
            },
        );
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&unknown], T0)),
            (false, ChallengeReason::UnknownUser)
        );
        let stats = auth.stats();
        assert_eq!((stats.invalid_response, stats.unknown_user), (1, 1));
        assert_eq!(stats.authenticated, 0);
    }

    #[test]
    fn realm_mismatch() {
        let mut auth = authenticator(AuthConfig::default());
        // Credentials for another realm are not for us.
        let challenge = auth.challenge(REALM, T0, false);
        let other = answer(&challenge[0], &Answer::default())
            .replace("realm=\"example.com\"", "realm=\"example.org\"");
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&other], T0)),
            (false, ChallengeReason::NoCredentials)
        );
        // A nonce minted for another realm does not verify in ours.
        let foreign = auth.challenge("example.org", T0, false);
        let value = answer(&foreign[0], &Answer::default());
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&value], T0)),
            (false, ChallengeReason::InvalidNonce)
        );
        // With credentials for two realms, ours is picked whatever the order.
        let ours = answer(&challenge[0], &Answer::default());
        assert_eq!(
            run(&mut auth, &[&other, &ours], T0),
            authenticated("alice", Algorithm::Sha256)
        );
    }

    #[test]
    fn expired_nonce_is_stale_only_with_the_right_password() {
        let mut auth = authenticator(AuthConfig::default());
        let challenge = auth.challenge(REALM, T0, false);
        let right = answer(&challenge[0], &Answer::default());
        let late = T0 + 301;
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&right], late)),
            (true, ChallengeReason::StaleNonce)
        );
        let wrong = answer(
            &challenge[0],
            &Answer {
                password: "nope",
                ..Answer::default()
            },
        );
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&wrong], late)),
            (false, ChallengeReason::InvalidResponse)
        );
        // At exactly the lifetime it is still fresh.
        assert_eq!(
            run(&mut auth, &[&right], T0 + 300),
            authenticated("alice", Algorithm::Sha256)
        );
    }

    #[test]
    fn tampered_and_future_nonces_are_refused() {
        let mut auth = authenticator(AuthConfig::default());
        let challenge = auth.challenge(REALM, T0, false);
        let nonce = param(&challenge[0], "nonce");
        // Rewrite the timestamp to extend the nonce's life: the tag breaks.
        let mut forged: Vec<u8> = nonce.clone().into_bytes();
        forged[15] = if forged[15] == b'f' { b'e' } else { b'f' };
        let forged = String::from_utf8(forged).unwrap();
        let value = answer(&challenge[0].replace(&nonce, &forged), &Answer::default());
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&value], T0)),
            (false, ChallengeReason::InvalidNonce)
        );
        // A nonce minted by this server far in the future (clock stepped back 10 minutes).
        let future = auth.challenge(REALM, T0 + 600, false);
        let value = answer(&future[0], &Answer::default());
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&value], T0)),
            (false, ChallengeReason::InvalidNonce)
        );
        // A nonce from another server (another secret).
        let mut other = DigestAuthenticator::with_secret(
            AuthConfig::default(),
            CredentialStore::default(),
            &[1; 32],
            [7; 16],
        )
        .unwrap();
        let value = answer(&other.challenge(REALM, T0, false)[0], &Answer::default());
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&value], T0)),
            (false, ChallengeReason::InvalidNonce)
        );
    }

    #[test]
    fn nonce_count_replay_is_refused() {
        let mut auth = authenticator(AuthConfig::default());
        let challenge = auth.challenge(REALM, T0, false);
        let first = answer(&challenge[0], &Answer::default());
        assert_eq!(
            run(&mut auth, &[&first], T0),
            authenticated("alice", Algorithm::Sha256)
        );
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&first], T0 + 1)),
            (true, ChallengeReason::NonceCountReplay)
        );
        let third = answer(
            &challenge[0],
            &Answer {
                nc: "00000003",
                ..Answer::default()
            },
        );
        assert_eq!(
            run(&mut auth, &[&third], T0 + 2),
            authenticated("alice", Algorithm::Sha256)
        );
        let second = answer(
            &challenge[0],
            &Answer {
                nc: "00000002",
                ..Answer::default()
            },
        );
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&second], T0 + 3)),
            (true, ChallengeReason::NonceCountReplay)
        );
        assert_eq!(auth.stats().replayed, 2);
        assert_eq!(auth.tracked_nonces(), 1);
    }

    #[test]
    fn a_forged_response_does_not_advance_the_nonce_count() {
        let mut auth = authenticator(AuthConfig::default());
        let challenge = auth.challenge(REALM, T0, false);
        let forged = answer(
            &challenge[0],
            &Answer {
                password: "guess",
                nc: "ffffffff",
                ..Answer::default()
            },
        );
        run(&mut auth, &[&forged], T0);
        let honest = answer(&challenge[0], &Answer::default());
        assert_eq!(
            run(&mut auth, &[&honest], T0),
            authenticated("alice", Algorithm::Sha256)
        );
    }

    #[test]
    fn repeated_failures_turn_into_forbidden_per_source() {
        let mut auth = authenticator(AuthConfig {
            max_failures: 3,
            failure_window_secs: 60,
            ..AuthConfig::default()
        });
        let challenge = auth.challenge(REALM, T0, false);
        let wrong = answer(
            &challenge[0],
            &Answer {
                password: "guess",
                ..Answer::default()
            },
        );
        for _ in 0..3 {
            assert_eq!(
                challenge_reason(&run(&mut auth, &[&wrong], T0)),
                (false, ChallengeReason::InvalidResponse)
            );
        }
        let right = answer(&challenge[0], &Answer::default());
        let forbidden = AuthOutcome::Forbidden {
            username: "alice".into(),
        };
        assert_eq!(run(&mut auth, &[&right], T0 + 10), forbidden);
        // Another source is not locked out.
        let from_elsewhere = auth
            .authenticate(
                &AuthRequest {
                    realm: REALM,
                    method: "REGISTER",
                    request_uri: Some(URI),
                    credentials: &[&right],
                    source: Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1))),
                },
                T0 + 10,
            )
            .unwrap();
        assert_eq!(from_elsewhere, authenticated("alice", Algorithm::Sha256));
        // The window passes.
        let later = auth.challenge(REALM, T0 + 61, false);
        let right = answer(&later[0], &Answer::default());
        assert_eq!(
            run(&mut auth, &[&right], T0 + 61),
            authenticated("alice", Algorithm::Sha256)
        );
        assert_eq!(auth.stats().forbidden, 1);
    }

    #[test]
    fn digest_uri_must_match_the_request_uri() {
        let mut auth = authenticator(AuthConfig::default());
        let challenge = auth.challenge(REALM, T0, false);
        let value = answer(
            &challenge[0],
            &Answer {
                uri: "sip:other.example.com",
                ..Answer::default()
            },
        );
        let result = auth.authenticate(
            &AuthRequest {
                realm: REALM,
                method: "REGISTER",
                request_uri: Some(URI),
                credentials: &[&value],
                source: None,
            },
            T0,
        );
        assert_eq!(result, Err(AuthError::DigestUriMismatch));
        assert_eq!(result.unwrap_err().sip_status(), 400);
        // Host case differs: the same URI.
        let value = answer(
            &challenge[0],
            &Answer {
                uri: "sip:EXAMPLE.com",
                ..Answer::default()
            },
        );
        assert_eq!(
            run(&mut auth, &[&value], T0),
            authenticated("alice", Algorithm::Sha256)
        );
    }

    #[test]
    fn opaque_must_come_back_unchanged_when_present() {
        let mut auth = authenticator(AuthConfig::default());
        let challenge = auth.challenge(REALM, T0, false);
        let opaque = param(&challenge[0], "opaque");
        let value = answer(&challenge[0], &Answer::default());
        let changed = value.replace(&opaque, "0000000000000000");
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&changed], T0)),
            (false, ChallengeReason::OpaqueMismatch)
        );
        let omitted = value.replace(&format!(", opaque=\"{opaque}\""), "");
        assert_eq!(
            run(&mut auth, &[&omitted], T0),
            authenticated("alice", Algorithm::Sha256)
        );
    }

    #[test]
    fn malformed_credentials_are_a_400() {
        let mut auth = authenticator(AuthConfig::default());
        let result = auth.authenticate(
            &AuthRequest {
                realm: REALM,
                method: "REGISTER",
                request_uri: None,
                credentials: &["Digest username=\"alice\", username=\"bob\""],
                source: None,
            },
            T0,
        );
        assert_eq!(
            result,
            Err(AuthError::DuplicateParameter {
                name: "username".into()
            })
        );
        assert_eq!(auth.stats().malformed, 1);
    }

    #[test]
    fn only_offered_algorithms_are_accepted() {
        let mut auth = authenticator(AuthConfig {
            offer_md5: false,
            ..AuthConfig::default()
        });
        let challenge = auth.challenge(REALM, T0, false);
        assert_eq!(challenge.len(), 1);
        assert!(challenge[0].contains("algorithm=SHA-256"));
        let md5 = answer(
            &challenge[0],
            &Answer {
                algorithm: Algorithm::Md5,
                ..Answer::default()
            },
        );
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&md5], T0)),
            (false, ChallengeReason::AlgorithmNotOffered)
        );
        assert_eq!(
            DigestAuthenticator::with_secret(
                AuthConfig {
                    offer_md5: false,
                    offer_sha256: false,
                    ..AuthConfig::default()
                },
                CredentialStore::default(),
                &[0; 32],
                [0; 16],
            )
            .err(),
            Some(AuthSetupError::NoAlgorithm)
        );
    }

    #[test]
    fn user_without_a_secret_for_the_algorithm_is_challenged() {
        let mut auth = authenticator(AuthConfig::default());
        let challenge = auth.challenge(REALM, T0, false);
        let bob_sha = answer(
            &challenge[0],
            &Answer {
                username: "bob",
                password: "builder",
                ..Answer::default()
            },
        );
        assert_eq!(
            challenge_reason(&run(&mut auth, &[&bob_sha], T0)),
            (false, ChallengeReason::NoSecretForAlgorithm)
        );
    }

    #[test]
    fn new_draws_a_secret_and_debug_shows_no_secret() {
        let store = CredentialStore::new([entry("alice", Some("wonderland"), None)]).unwrap();
        let mut a = DigestAuthenticator::new(AuthConfig::default(), store).unwrap();
        let b_store = CredentialStore::new([entry("alice", Some("wonderland"), None)]).unwrap();
        let mut b = DigestAuthenticator::new(AuthConfig::default(), b_store).unwrap();
        // Different secrets: b does not accept a's nonces.
        let value = answer(&a.challenge(REALM, T0, false)[0], &Answer::default());
        assert_eq!(
            challenge_reason(&run(&mut b, &[&value], T0)),
            (false, ChallengeReason::InvalidNonce)
        );
        assert_eq!(
            run(&mut a, &[&value], T0),
            authenticated("alice", Algorithm::Sha256)
        );
        let ha1 = digest::ha1_from_password(HashFunction::Md5, "alice", REALM, "wonderland");
        let debug = format!("{a:?}");
        assert!(!debug.contains("wonderland"));
        assert!(!debug.contains(std::str::from_utf8(&ha1).unwrap()));
    }

    #[test]
    fn challenge_kinds_map_to_status_and_headers() {
        assert_eq!(ChallengeKind::Origin.status(), 401);
        assert_eq!(ChallengeKind::Origin.challenge_header(), "WWW-Authenticate");
        assert_eq!(ChallengeKind::Origin.credentials_header(), "Authorization");
        assert_eq!(ChallengeKind::Proxy.status(), 407);
        assert_eq!(
            ChallengeKind::Proxy.challenge_header(),
            "Proxy-Authenticate"
        );
        assert_eq!(
            ChallengeKind::Proxy.credentials_header(),
            "Proxy-Authorization"
        );
    }
}
