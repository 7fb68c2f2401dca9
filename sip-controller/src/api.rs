//! The controller's HTTP API (axum): calls with their security verdicts, health and metrics.
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/health` | status, version, uptime, live calls |
//! | `GET /v1/calls` | live calls, then the most recent finished ones (newest first) |
//! | `GET /v1/calls/{id}` | one call (live or recently finished) |
//! | `GET /metrics` | Prometheus text |
//!
//! Errors are RFC 9457 problem JSON with a stable `code`. The B2BUA task publishes call records
//! into a [`CallStore`]; the API only reads it, so a slow client never stalls signalling.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Instant,
};

use axum::{
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Serialize;

use crate::verdict::CallRecord;

/// Finished calls kept for `GET /v1/calls`.
pub const FINISHED_KEPT: usize = 1000;

/// Live and recently finished calls.
#[derive(Debug, Default)]
pub struct CallStore {
    live: HashMap<String, CallRecord>,
    finished: VecDeque<CallRecord>,
}

impl CallStore {
    /// Records a call's current state.
    pub fn update(&mut self, record: CallRecord) {
        self.live.insert(record.id.clone(), record);
    }

    /// Moves a call to the finished list.
    pub fn finish(&mut self, record: CallRecord) {
        self.live.remove(&record.id);
        if self.finished.len() == FINISHED_KEPT {
            self.finished.pop_back();
        }
        self.finished.push_front(record);
    }

    /// Live calls.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    fn get(&self, id: &str) -> Option<&CallRecord> {
        self.live
            .get(id)
            .or_else(|| self.finished.iter().find(|r| r.id == id))
    }
}

/// Signalling counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// INVITEs that created a call.
    pub calls_started: AtomicU64,
    /// Calls answered (2xx to the caller).
    pub calls_answered: AtomicU64,
    /// Calls that ended without an answer.
    pub calls_failed: AtomicU64,
    /// Calls whose every leg was TLS + SRTP.
    pub calls_secure_end_to_end: AtomicU64,
    /// Requests answered 4xx/5xx/6xx by the controller itself.
    pub requests_rejected: AtomicU64,
    /// Messages that did not parse.
    pub parse_errors: AtomicU64,
    /// relayd requests that failed.
    pub relay_errors: AtomicU64,
    /// relayd restarts detected (boot id changed).
    pub relay_restarts: AtomicU64,
    /// REGISTER requests accepted.
    pub registrations: AtomicU64,
    /// Digest authentication failures.
    pub auth_failures: AtomicU64,
}

/// What the API handlers share with the B2BUA task.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Calls.
    pub calls: Arc<Mutex<CallStore>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    started: Instant,
}

impl ApiState {
    /// Fresh state.
    pub fn new(calls: Arc<Mutex<CallStore>>, metrics: Arc<Metrics>) -> Self {
        Self {
            calls,
            metrics,
            started: Instant::now(),
        }
    }
}

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/calls", get(list_calls))
        .route("/v1/calls/{id}", get(get_call))
        .route("/metrics", get(metrics))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
}

fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = Problem {
        kind: "about:blank",
        title: status.canonical_reason().unwrap_or("error"),
        status: status.as_u16(),
        code,
        detail,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::to_string(&body).unwrap_or_default(),
    )
        .into_response()
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    uptime_seconds: u64,
    live_calls: usize,
}

async fn health(State(state): State<ApiState>) -> Json<Health> {
    let live_calls = state
        .calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .live_count();
    Json(Health {
        status: "ok",
        version: crate::VERSION,
        uptime_seconds: state.started.elapsed().as_secs(),
        live_calls,
    })
}

async fn list_calls(State(state): State<ApiState>) -> Json<Vec<CallRecord>> {
    let store = state.calls.lock().unwrap_or_else(PoisonError::into_inner);
    let mut live: Vec<CallRecord> = store.live.values().cloned().collect();
    live.sort_by_key(|r| std::cmp::Reverse(r.started_unix_ms));
    live.extend(store.finished.iter().cloned());
    Json(live)
}

async fn get_call(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let store = state.calls.lock().unwrap_or_else(PoisonError::into_inner);
    match store.get(&id) {
        Some(record) => Json(record.clone()).into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            "call_not_found",
            "no live or recently finished call with this id",
        ),
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let m = &state.metrics;
    let live = state
        .calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .live_count();
    let mut out = String::new();
    let counters: [(&str, &str, &AtomicU64); 10] = [
        (
            "calls_started_total",
            "INVITEs that created a call",
            &m.calls_started,
        ),
        ("calls_answered_total", "calls answered", &m.calls_answered),
        (
            "calls_failed_total",
            "calls ended without an answer",
            &m.calls_failed,
        ),
        (
            "calls_secure_end_to_end_total",
            "finished calls with TLS and SRTP on every leg",
            &m.calls_secure_end_to_end,
        ),
        (
            "requests_rejected_total",
            "requests the controller answered with an error",
            &m.requests_rejected,
        ),
        (
            "parse_errors_total",
            "SIP messages that did not parse",
            &m.parse_errors,
        ),
        (
            "relay_errors_total",
            "relayd requests that failed",
            &m.relay_errors,
        ),
        (
            "relay_restarts_total",
            "relayd restarts detected",
            &m.relay_restarts,
        ),
        (
            "registrations_total",
            "REGISTER requests accepted",
            &m.registrations,
        ),
        (
            "auth_failures_total",
            "digest authentication failures",
            &m.auth_failures,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP sip_controller_{name} {help}\n# TYPE sip_controller_{name} counter\n\
             sip_controller_{name} {}",
            value.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sip_controller_calls_live calls in progress\n\
         # TYPE sip_controller_calls_live gauge\nsip_controller_calls_live {live}"
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
