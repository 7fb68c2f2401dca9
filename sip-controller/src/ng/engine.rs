//! Command handling: one decoded NG request in, one reply dictionary out, with relayd
//! programmed in between through the [`Relay`] trait (the real [`RelayClient`], or a fake in
//! tests).
//!
//! Calls are kept in a map of per-call async locks: messages of one call are handled one at a
//! time (an answer never overtakes its offer's relay programming), different calls run in
//! parallel. The negotiation, the relay session and the SDP come from [`super::session`];
//! this layer adds lookup, counters, delete-delay and the reply shapes.
//!
//! | Failure                                   | Reply                                              |
//! |-------------------------------------------|----------------------------------------------------|
//! | option refused ([`OptionError`])          | `error`, its text                                  |
//! | SDP or negotiation ([`CallError`])        | `error`, its text                                  |
//! | call limit reached                        | `error`, `Parallel session limit reached`          |
//! | relayd out of ports                       | `error`, `Ran out of ports`                        |
//! | relayd unreachable or refusing            | `error`, `relayd: <what failed>`                   |
//! | `query` of an unknown call                | `error`, `Unknown call-id`                         |
//! | `delete` of an unknown call               | `ok` + `warning` (`error` with the `fatal` flag)   |

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use super::{
    bencode::Value,
    options::{parse_request, Command, Options},
    session::{
        call_stats, has_ice, plan_answer, plan_offer, render_for, set_tag, Call, CallError, Policy,
        Rendering, Side,
    },
};
use crate::relay_client::{RelayClient, RelayError, SessionSpec, SessionView};

/// The relayd operations the NG server needs.
pub trait Relay: Send + Sync + 'static {
    /// `PUT /v1/sessions/{id}`.
    fn put_session(
        &self,
        id: &str,
        spec: &SessionSpec,
    ) -> impl Future<Output = Result<SessionView, RelayError>> + Send;
    /// `GET /v1/sessions/{id}`.
    fn get_session(&self, id: &str)
        -> impl Future<Output = Result<SessionView, RelayError>> + Send;
    /// `DELETE /v1/sessions/{id}`: the last view, `None` if relayd did not know it.
    fn delete_session(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<SessionView>, RelayError>> + Send;
}

impl Relay for RelayClient {
    fn put_session(
        &self,
        id: &str,
        spec: &SessionSpec,
    ) -> impl Future<Output = Result<SessionView, RelayError>> + Send {
        RelayClient::put_session(self, id, spec)
    }

    fn get_session(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<SessionView, RelayError>> + Send {
        RelayClient::get_session(self, id)
    }

    fn delete_session(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<SessionView>, RelayError>> + Send {
        RelayClient::delete_session(self, id)
    }
}

/// The engine's policy (from `[ng]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// relayd interface for sides that name none.
    pub default_interface: String,
    /// NG interface names (`direction`, `from-interface`, ...) → relayd interface names.
    pub interfaces: BTreeMap<String, String>,
    /// Drop media from other sources once latched (unless `media-handover`).
    pub strict_source: bool,
    /// relayd's media timeout, and how often silent calls are checked.
    pub media_timeout_secs: u64,
    /// `delete-delay` when the request gives none (rtpengine's default is 30).
    pub delete_delay_secs: u64,
    /// Calls offered but never answered are deleted after this long.
    pub offer_timeout_secs: u64,
    /// Most calls at once.
    pub max_calls: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_interface: "default".to_owned(),
            interfaces: BTreeMap::new(),
            strict_source: true,
            media_timeout_secs: 60,
            delete_delay_secs: 30,
            offer_timeout_secs: 3600,
            max_calls: 100_000,
        }
    }
}

/// The time of a message: monotonic for timers, UNIX seconds for replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Seconds since the UNIX epoch.
    pub unix: u64,
}

impl Now {
    /// The current time.
    pub fn current() -> Self {
        Self {
            instant: Instant::now(),
            unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// Counters for `statistics`, indexed like [`COMMANDS`].
#[derive(Debug, Default)]
struct Counters {
    commands: [AtomicU64; 7],
    errors: AtomicU64,
    managed: AtomicU64,
    rejected: AtomicU64,
    regular_terminated: AtomicU64,
    forced_terminated: AtomicU64,
    timeout: AtomicU64,
}

/// Commands in counter order, with rtpengine's statistics names.
const COMMANDS: [(Command, &str); 7] = [
    (Command::Ping, "ping"),
    (Command::Offer, "offer"),
    (Command::Answer, "answer"),
    (Command::Delete, "delete"),
    (Command::Query, "query"),
    (Command::List, "list"),
    (Command::Statistics, "statistics"),
];

fn command_index(command: Command) -> usize {
    COMMANDS
        .iter()
        .position(|(c, _)| *c == command)
        .unwrap_or(0)
}

/// Most proxies tracked individually in `statistics`.
const MAX_PROXIES: usize = 64;

type CallSlot = Arc<tokio::sync::Mutex<Option<Call>>>;

/// The NG command handler.
#[derive(Debug)]
pub struct Engine<R> {
    relay: R,
    config: EngineConfig,
    calls: Mutex<HashMap<String, CallSlot>>,
    counters: Counters,
    proxies: Mutex<HashMap<IpAddr, [u64; 8]>>,
    started: Instant,
}

/// A handler result before it becomes a reply.
type Outcome = Result<Vec<(String, Value<'static>)>, String>;

fn relay_reason(error: &RelayError) -> String {
    match error {
        RelayError::Status { code, .. } if code == "ports_exhausted" => {
            "Ran out of ports".to_owned()
        }
        RelayError::Status { code, .. } if code == "too_many_sessions" => {
            "Parallel session limit reached".to_owned()
        }
        other => format!("relayd: {other}"),
    }
}

impl<R: Relay> Engine<R> {
    /// An engine programming `relay`.
    pub fn new(relay: R, config: EngineConfig) -> Self {
        Self {
            relay,
            config,
            calls: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            proxies: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// The relay this engine programs.
    pub fn relay(&self) -> &R {
        &self.relay
    }

    /// Calls held.
    pub fn call_count(&self) -> usize {
        self.calls.lock().map_or(0, |c| c.len())
    }

    /// Handles one request body from `source`; returns the reply dictionary.
    pub async fn handle(&self, body: &Value<'_>, source: IpAddr, now: Now) -> Value<'static> {
        let request = match parse_request(body) {
            Ok(request) => request,
            Err(error) => {
                self.count_error(source);
                return error_reply(&error.to_string());
            }
        };
        let command = request.command;
        self.count(source, command);
        let outcome = match command {
            Command::Ping => return Value::dict([("result", Value::str("pong"))]),
            Command::Offer => self.offer(&request.options, now).await,
            Command::Answer => self.answer(&request.options, now).await,
            Command::Delete => self.delete(&request.options, now).await,
            Command::Query => self.query(&request.options).await,
            Command::List => Ok(self.list(&request.options)),
            Command::Statistics => Ok(self.statistics()),
        };
        match outcome {
            Ok(mut entries) => {
                let mut warnings = request.warnings;
                if let Some(pos) = entries.iter().position(|(k, _)| k == "warning") {
                    let (_, value) = entries.remove(pos);
                    if let Some(text) = value.as_str() {
                        warnings.push(text.to_owned());
                    }
                }
                entries.insert(0, ("result".to_owned(), Value::str("ok")));
                if !warnings.is_empty() {
                    entries.push(("warning".to_owned(), Value::string(warnings.join("; "))));
                }
                Value::dict(entries)
            }
            Err(reason) => {
                self.count_error(source);
                error_reply(&reason)
            }
        }
    }

    fn count(&self, source: IpAddr, command: Command) {
        let index = command_index(command);
        self.counters.commands[index].fetch_add(1, Ordering::Relaxed);
        if let Ok(mut proxies) = self.proxies.lock() {
            if proxies.len() < MAX_PROXIES || proxies.contains_key(&source) {
                proxies.entry(source).or_default()[index] += 1;
            }
        }
    }

    fn count_error(&self, source: IpAddr) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut proxies) = self.proxies.lock() {
            if let Some(counts) = proxies.get_mut(&source) {
                counts[7] += 1;
            }
        }
    }

    fn slot(&self, call_id: &str) -> Option<CallSlot> {
        self.calls.lock().ok()?.get(call_id).cloned()
    }

    fn remove_slot(&self, call_id: &str, slot: &CallSlot) {
        if let Ok(mut calls) = self.calls.lock() {
            if calls.get(call_id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                calls.remove(call_id);
            }
        }
    }

    /// Makes sure the map holds `slot` for `call_id` (a delete may have removed it while we
    /// waited for its lock). False if another slot took the id meanwhile.
    fn claim_slot(&self, call_id: &str, slot: &CallSlot) -> bool {
        let Ok(mut calls) = self.calls.lock() else {
            return false;
        };
        Arc::ptr_eq(
            calls
                .entry(call_id.to_owned())
                .or_insert_with(|| Arc::clone(slot)),
            slot,
        )
    }

    /// The slot of `call_id`, created (empty) if absent and the limit allows.
    fn slot_or_create(&self, call_id: &str) -> Result<CallSlot, String> {
        let mut calls = self
            .calls
            .lock()
            .map_err(|_| "internal error: call table poisoned".to_owned())?;
        if let Some(slot) = calls.get(call_id) {
            return Ok(Arc::clone(slot));
        }
        if calls.len() >= self.config.max_calls {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Err("Parallel session limit reached".to_owned());
        }
        let slot: CallSlot = Arc::new(tokio::sync::Mutex::new(None));
        calls.insert(call_id.to_owned(), Arc::clone(&slot));
        Ok(slot)
    }

    /// An NG interface name as a relayd interface name.
    fn interface(&self, name: Option<&String>) -> Result<Option<String>, String> {
        let Some(name) = name else { return Ok(None) };
        if let Some(mapped) = self.config.interfaces.get(name) {
            return Ok(Some(mapped.clone()));
        }
        if *name == self.config.default_interface
            || (self.config.interfaces.is_empty()
                && ["internal", "external", "round-robin-calls"].contains(&name.as_str()))
        {
            // rtpengine's legacy direction words select the address family when no such
            // interface is configured; with one relay interface they select it.
            return Ok(Some(self.config.default_interface.clone()));
        }
        Err(format!("unknown interface '{name}'"))
    }

    fn policy(&self, options: &Options) -> Result<Policy, String> {
        Ok(Policy {
            sender_interface: self.interface(options.from_interface.as_ref())?,
            receiver_interface: self.interface(options.to_interface.as_ref())?,
            strict_source: self.config.strict_source,
            media_timeout_secs: self.config.media_timeout_secs,
            default_interface: self.config.default_interface.clone(),
        })
    }

    async fn program(&self, call: &Call) -> Result<Option<SessionView>, String> {
        let spec = call
            .session_spec(self.config.media_timeout_secs)
            .map_err(|e| e.to_string())?;
        if spec.legs.is_empty() {
            // Every section was rejected: nothing to relay.
            self.relay
                .delete_session(&call.relay_id)
                .await
                .map_err(|e| relay_reason(&e))?;
            return Ok(None);
        }
        self.relay
            .put_session(&call.relay_id, &spec)
            .await
            .map(Some)
            .map_err(|e| relay_reason(&e))
    }

    async fn offer(&self, options: &Options, now: Now) -> Outcome {
        let call_id = required(options.call_id.as_ref(), "call-id")?;
        let from_tag = required(options.from_tag.as_ref(), "from-tag")?;
        let sdp = required(options.sdp.as_ref().map(|s| &s.0), "sdp")?;
        let policy = self.policy(options)?;
        let slot = self.slot_or_create(call_id)?;
        let mut guard = slot.lock().await;
        let created = guard.is_none();
        if created && !self.claim_slot(call_id, &slot) {
            return Err("the call is being deleted concurrently; retry".to_owned());
        }
        let mut call = guard
            .take()
            .unwrap_or_else(|| Call::new(call_id, from_tag, &policy, now.instant, now.unix));
        let backup = call.clone();
        let result = async {
            let from = call.offer_side(from_tag).map_err(|e| e.to_string())?;
            if from == Side::A && call.side(Side::A).tag.as_deref() != Some(from_tag) {
                set_tag(&mut call, Side::A, from_tag);
            }
            plan_offer(&mut call, from, sdp, options, &policy).map_err(|e| e.to_string())?;
            let view = self.program(&call).await?;
            let view = view.unwrap_or_else(|| empty_view(&call));
            let body = render_for(&mut call, from.other(), Rendering::Offer, &view, options)
                .map_err(|e| e.to_string())?;
            call.last_view = Some(view);
            Ok::<_, String>(body)
        }
        .await;
        match result {
            Ok(body) => {
                call.last_signal = now.instant;
                call.last_signal_unix = now.unix;
                call.delete_at = None;
                if created {
                    self.counters.managed.fetch_add(1, Ordering::Relaxed);
                }
                let warning = ice_warning(sdp, options);
                *guard = Some(call);
                Ok(sdp_reply(body, warning))
            }
            Err(reason) => {
                if created {
                    // Nothing may stay behind: relayd may hold the half-programmed session.
                    let _ = self.relay.delete_session(&backup.relay_id).await;
                    drop(guard);
                    self.remove_slot(call_id, &slot);
                } else {
                    *guard = Some(backup);
                }
                Err(reason)
            }
        }
    }

    async fn answer(&self, options: &Options, now: Now) -> Outcome {
        let call_id = required(options.call_id.as_ref(), "call-id")?;
        let from_tag = required(options.from_tag.as_ref(), "from-tag")?;
        let to_tag = required(options.to_tag.as_ref(), "to-tag")?;
        let sdp = required(options.sdp.as_ref().map(|s| &s.0), "sdp")?;
        let slot = self.slot(call_id).ok_or("Unknown call-id")?;
        let mut guard = slot.lock().await;
        let Some(call) = guard.as_mut() else {
            return Err("Unknown call-id".to_owned());
        };
        let backup = call.clone();
        let result = async {
            let offerer = call.answer_offerer(from_tag).map_err(|e| e.to_string())?;
            let answerer = offerer.other();
            if call.side(answerer).tag.as_deref() != Some(to_tag) {
                set_tag(call, answerer, to_tag);
            }
            plan_answer(call, answerer, sdp, options).map_err(|e| e.to_string())?;
            let view = match self.program(call).await? {
                Some(view) => view,
                None => call.last_view.clone().unwrap_or_else(|| empty_view(call)),
            };
            let body = render_for(call, offerer, Rendering::Answer, &view, options)
                .map_err(|e| e.to_string())?;
            call.last_view = Some(view);
            Ok::<_, String>(body)
        }
        .await;
        match result {
            Ok(body) => {
                call.last_signal = now.instant;
                call.last_signal_unix = now.unix;
                call.delete_at = None;
                Ok(sdp_reply(body, ice_warning(sdp, options)))
            }
            Err(reason) => {
                *call = backup;
                Err(reason)
            }
        }
    }

    async fn delete(&self, options: &Options, now: Now) -> Outcome {
        let call_id = required(options.call_id.as_ref(), "call-id")?;
        let not_found = "Call-ID not found or tags didn't match";
        let missing = |fatal: bool| {
            if fatal {
                Err(not_found.to_owned())
            } else {
                Ok(vec![("warning".to_owned(), Value::str(not_found))])
            }
        };
        let Some(slot) = self.slot(call_id) else {
            return missing(options.fatal);
        };
        let mut guard = slot.lock().await;
        let Some(call) = guard.as_mut() else {
            return missing(options.fatal);
        };
        let tags = [options.from_tag.as_ref(), options.to_tag.as_ref()];
        if tags.iter().flatten().any(|tag| !call.matches_tag(tag)) && call.answered {
            return missing(options.fatal);
        }
        call.last_signal_unix = now.unix;
        let delay = options
            .delete_delay
            .unwrap_or(self.config.delete_delay_secs);
        if delay > 0 {
            call.delete_at = Some(now.instant + Duration::from_secs(delay));
            if options.fast {
                return Ok(Vec::new());
            }
            let view = self.relay.get_session(&call.relay_id).await.ok();
            return Ok(call_stats(call, view.as_ref()));
        }
        let view = self
            .relay
            .delete_session(&call.relay_id)
            .await
            .map_err(|e| relay_reason(&e))?;
        let entries = if options.fast {
            Vec::new()
        } else {
            call_stats(call, view.as_ref().or(call.last_view.as_ref()))
        };
        *guard = None;
        drop(guard);
        self.remove_slot(call_id, &slot);
        self.counters
            .regular_terminated
            .fetch_add(1, Ordering::Relaxed);
        Ok(entries)
    }

    async fn query(&self, options: &Options) -> Outcome {
        let call_id = required(options.call_id.as_ref(), "call-id")?;
        let slot = self.slot(call_id).ok_or("Unknown call-id")?;
        let guard = slot.lock().await;
        let call = guard.as_ref().ok_or("Unknown call-id")?;
        let view = match self.relay.get_session(&call.relay_id).await {
            Ok(view) => Some(view),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(relay_reason(&e)),
        };
        Ok(call_stats(call, view.as_ref()))
    }

    fn list(&self, options: &Options) -> Vec<(String, Value<'static>)> {
        let limit = options.limit.unwrap_or(32);
        let mut ids: Vec<String> = self
            .calls
            .lock()
            .map(|calls| calls.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids.truncate(limit);
        vec![(
            "calls".to_owned(),
            Value::List(ids.into_iter().map(Value::string).collect()),
        )]
    }

    fn statistics(&self) -> Vec<(String, Value<'static>)> {
        let load = |c: &AtomicU64| Value::count(c.load(Ordering::Relaxed));
        let sessions = Value::count(self.call_count() as u64);
        let current = Value::dict([
            ("sessionsown", sessions.clone()),
            ("sessionsforeign", Value::Int(0)),
            ("sessionstotal", sessions),
            ("transcodedmedia", Value::Int(0)),
            ("packetrate", Value::Int(0)),
            ("byterate", Value::Int(0)),
            ("errorrate", Value::Int(0)),
        ]);
        let total = Value::dict([
            (
                "uptime",
                Value::string(self.started.elapsed().as_secs().to_string()),
            ),
            ("managedsessions", load(&self.counters.managed)),
            ("rejectedsessions", load(&self.counters.rejected)),
            ("timeoutsessions", load(&self.counters.timeout)),
            (
                "regularterminatedsessions",
                load(&self.counters.regular_terminated),
            ),
            (
                "forcedterminatedsessions",
                load(&self.counters.forced_terminated),
            ),
        ]);
        let mut control = Vec::new();
        let mut proxies = Vec::new();
        if let Ok(map) = self.proxies.lock() {
            let mut sources: Vec<_> = map.iter().collect();
            sources.sort_by_key(|(ip, _)| **ip);
            for (ip, counts) in sources {
                let mut entry = vec![("proxy".to_owned(), Value::string(ip.to_string()))];
                for (i, (_, name)) in COMMANDS.iter().enumerate() {
                    let key = if *name == "statistics" {
                        "statistics".to_owned()
                    } else {
                        format!("{name}count")
                    };
                    entry.push((key, Value::count(counts[i])));
                }
                entry.push(("errorcount".to_owned(), Value::count(counts[7])));
                proxies.push(Value::dict(entry));
            }
        }
        control.push(("proxies".to_owned(), Value::List(proxies)));
        for (i, (_, name)) in COMMANDS.iter().enumerate() {
            let key = if *name == "statistics" {
                "totalstatistics".to_owned()
            } else {
                format!("total{name}count")
            };
            control.push((key, load(&self.counters.commands[i])));
        }
        control.push(("totalerrorcount".to_owned(), load(&self.counters.errors)));
        vec![(
            "statistics".to_owned(),
            Value::dict([
                ("currentstatistics", current),
                ("totalstatistics", total),
                ("controlstatistics", Value::dict(control)),
            ]),
        )]
    }

    /// Deletes calls whose delete-delay expired, unanswered calls past the offer timeout, and
    /// answered calls whose every relay leg reports a media timeout (checked at most once per
    /// media timeout per call). Returns how many calls were deleted.
    pub async fn sweep(&self, now: Now) -> usize {
        let slots: Vec<(String, CallSlot)> = self
            .calls
            .lock()
            .map(|calls| {
                calls
                    .iter()
                    .map(|(k, v)| (k.clone(), Arc::clone(v)))
                    .collect()
            })
            .unwrap_or_default();
        let media_timeout = Duration::from_secs(self.config.media_timeout_secs.max(1));
        let offer_timeout = Duration::from_secs(self.config.offer_timeout_secs.max(1));
        let mut deleted = 0;
        for (call_id, slot) in slots {
            // A call busy with a message is not idle.
            let Ok(mut guard) = slot.try_lock() else {
                continue;
            };
            let Some(call) = guard.as_mut() else {
                continue;
            };
            let idle = now.instant.saturating_duration_since(call.last_signal);
            let reason = if call.delete_at.is_some_and(|at| at <= now.instant) {
                Some(&self.counters.regular_terminated)
            } else if !call.answered && idle >= offer_timeout {
                Some(&self.counters.timeout)
            } else if call.answered
                && call
                    .last_media_check
                    .is_none_or(|at| now.instant.saturating_duration_since(at) >= media_timeout)
                && idle >= media_timeout
            {
                call.last_media_check = Some(now.instant);
                match self.relay.get_session(&call.relay_id).await {
                    Ok(view)
                        if !view.legs.is_empty() && view.legs.iter().all(|l| l.media_timed_out) =>
                    {
                        Some(&self.counters.timeout)
                    }
                    Err(e) if e.is_not_found() => Some(&self.counters.forced_terminated),
                    _ => None,
                }
            } else {
                None
            };
            let Some(counter) = reason else { continue };
            match self.relay.delete_session(&call.relay_id).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(call = %call_id, error = %e, "ng: relayd delete failed; retrying later");
                    continue;
                }
            }
            counter.fetch_add(1, Ordering::Relaxed);
            *guard = None;
            drop(guard);
            self.remove_slot(&call_id, &slot);
            deleted += 1;
        }
        deleted
    }
}

fn required<'o>(value: Option<&'o String>, key: &'static str) -> Result<&'o str, String> {
    value
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| CallError::Missing { key }.to_string())
}

fn error_reply(reason: &str) -> Value<'static> {
    Value::dict([
        ("result", Value::str("error")),
        ("error-reason", Value::string(reason)),
    ])
}

fn sdp_reply(body: Vec<u8>, warning: Option<String>) -> Vec<(String, Value<'static>)> {
    let mut entries = vec![(
        "sdp".to_owned(),
        Value::Bytes(std::borrow::Cow::Owned(body)),
    )];
    if let Some(warning) = warning {
        entries.push(("warning".to_owned(), Value::string(warning)));
    }
    entries
}

fn ice_warning(sdp: &str, options: &Options) -> Option<String> {
    (!options.ice_remove && has_ice(sdp)).then(|| {
        "ICE attributes were removed: the relay is the media endpoint and runs no ICE".to_owned()
    })
}

fn empty_view(call: &Call) -> SessionView {
    SessionView {
        id: call.relay_id.clone(),
        legs: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
