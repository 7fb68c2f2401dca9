//! relayd's HTTP control API (axum), version 1.
//!
//! JSON in and out; every request needs `Authorization: Bearer <token>` (401 otherwise);
//! errors are RFC 9457 problem documents (`application/problem+json`) with a stable `code`
//! (table: [`Problem`]); bodies are limited in size. Routes:
//!
//! | method and path | what |
//! |---|---|
//! | `GET /v1/health` | status, boot id (changes on restart), version, XDP attachments |
//! | `GET /v1/openapi.json` | this API as OpenAPI 3.1 |
//! | `GET /v1/sessions` | every session, briefly |
//! | `PUT /v1/sessions/{id}` | create (201) or replace (200) a session; idempotent |
//! | `GET /v1/sessions/{id}` | one session with per-leg counters |
//! | `PATCH /v1/sessions/{id}/legs/{leg}` | change a leg (remote from the answer, re-key) |
//! | `DELETE /v1/sessions/{id}` | delete (204) |
//! | `GET /v1/events` | server-sent events: `media_timeout` |
//! | `GET /metrics` | Prometheus text format |

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::{rejection::JsonRejection, FromRequest, Path, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{
        sse::{Event as SseEvent, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::get,
    Json, Router,
};
use serde::{de::DeserializeOwned, Serialize};
use subtle::ConstantTimeEq as _;

use crate::{
    afxdp::AfXdpDatapath,
    model::{LegPatch, SessionSpec, SpecError},
    relay::{Relay, RelayError},
    xdp::RelayXdp,
};

/// The `OpenAPI` document, served verbatim.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Shared state of the HTTP service.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("boot_id", &self.inner.boot_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    boot_id: String,
    token: String,
    started: Instant,
    started_unix: u64,
    relay: Arc<Relay>,
    xdp: Option<Arc<Mutex<RelayXdp>>>,
    workers: Option<Arc<AfXdpDatapath>>,
}

impl ApiState {
    /// State for a relayd that started now, with a fresh random boot id.
    pub fn new(relay: Arc<Relay>, token: String, xdp: Option<Arc<Mutex<RelayXdp>>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                boot_id: uuid::Uuid::new_v4().to_string(),
                token,
                started: Instant::now(),
                started_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                relay,
                xdp,
                workers: None,
            }),
        }
    }

    /// Reports the AF_XDP workers' counters in `/metrics` too.
    #[must_use]
    pub fn with_workers(self, workers: Option<Arc<AfXdpDatapath>>) -> Self {
        let Ok(mut inner) = Arc::try_unwrap(self.inner) else {
            panic!("with_workers is called while the state is being built");
        };
        inner.workers = workers;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// This process's boot id.
    pub fn boot_id(&self) -> &str {
        &self.inner.boot_id
    }
}

/// Builds the router.
pub fn router(state: ApiState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/sessions", get(list_sessions))
        .route(
            "/v1/sessions/{id}",
            get(get_session).put(put_session).delete(delete_session),
        )
        .route(
            "/v1/sessions/{id}/legs/{leg}",
            axum::routing::patch(patch_leg),
        )
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// An RFC 9457 problem document. Stable codes:
///
/// | code | status | when |
/// |---|---|---|
/// | `unauthorized` | 401 | missing or wrong bearer token |
/// | `not_found` | 404 | unknown route, session or leg |
/// | `method_not_allowed` | 405 | wrong method for the route |
/// | `payload_too_large` | 413 | body over `http.max_body_bytes` |
/// | `unsupported_media_type` | 415 | body is not `application/json` |
/// | `malformed_json` | 400 | body is not JSON |
/// | `invalid_request` | 422 | JSON of the wrong shape (unknown field, wrong type) |
/// | `invalid_id`, `leg_count`, `duplicate_leg`, `unknown_target`, `fixed_without_remote`, `invalid_remote`, `unknown_suite`, `invalid_key`, `invalid_timeout` | 422 | a spec that cannot be used |
/// | `unknown_interface` | 422 | a leg names an interface relayd does not have |
/// | `ports_exhausted` | 503 | no free port pair on an interface |
/// | `too_many_sessions` | 503 | `media.max_sessions` reached |
/// | `bind_failed` | 500 | the OS refused a media socket |
/// | `internal` | 500 | anything else |
#[derive(Debug, Serialize)]
pub struct Problem {
    /// `urn:relayd:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// What happened, for a person.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: &'static str,
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            kind: format!("urn:relayd:problem:{code}"),
            title,
            status: status.as_u16(),
            detail,
            code,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(&self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<RelayError> for Problem {
    fn from(error: RelayError) -> Self {
        let detail = error.to_string();
        match error {
            RelayError::Spec(spec) => spec_problem(&spec, detail),
            RelayError::UnknownInterface { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_interface",
                "Unknown interface",
                detail,
            ),
            RelayError::PortsExhausted { .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ports_exhausted",
                "No free media ports",
                detail,
            ),
            RelayError::TooManySessions { .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                "Session limit reached",
                detail,
            ),
            RelayError::Bind { .. } => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bind_failed",
                "Cannot bind a media socket",
                detail,
            ),
            RelayError::SessionNotFound { .. } | RelayError::LegNotFound { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "not_found", "Not found", detail)
            }
        }
    }
}

fn spec_problem(error: &SpecError, detail: String) -> Problem {
    let code = match error {
        SpecError::InvalidId { .. } => "invalid_id",
        SpecError::LegCount { .. } => "leg_count",
        SpecError::DuplicateLeg { .. } => "duplicate_leg",
        SpecError::UnknownTarget { .. } => "unknown_target",
        SpecError::FixedWithoutRemote { .. } => "fixed_without_remote",
        SpecError::InvalidRemote { .. } => "invalid_remote",
        SpecError::UnknownSuite { .. } => "unknown_suite",
        SpecError::InvalidKey { .. } => "invalid_key",
        SpecError::InvalidTimeout { .. } => "invalid_timeout",
    };
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        code,
        "Invalid session",
        detail,
    )
}

/// `Json<T>` whose rejections are problem documents.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_problem(&rejection)),
        }
    }
}

fn json_problem(rejection: &JsonRejection) -> Problem {
    let detail = rejection.body_text();
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Expected application/json",
            detail,
        ),
        JsonRejection::JsonSyntaxError(_) => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "Malformed JSON",
            detail,
        ),
        JsonRejection::JsonDataError(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "Invalid request",
            detail,
        ),
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Request body too large",
                detail,
            )
        }
        _ => Problem::new(
            rejection.status(),
            "invalid_request",
            "Invalid request",
            detail,
        ),
    }
}

async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = state.inner.token.as_bytes();
    if presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected)) {
        next.run(request).await
    } else {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "missing or wrong bearer token (Authorization: Bearer <token>)".to_owned(),
        )
        .into_response()
    }
}

async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "Not found",
        "no such route".to_owned(),
    )
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        "this route does not take that method".to_owned(),
    )
}

/// Body of `GET /v1/health`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Always "ok" when the service answers.
    pub status: &'static str,
    /// Random per process start; changes when relayd restarts.
    pub boot_id: String,
    /// relayd's version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Sessions now.
    pub sessions: usize,
    /// Interfaces with the XDP program attached, and their mode.
    pub xdp_interfaces: Vec<XdpInterface>,
}

/// One XDP attachment in [`Health`].
#[derive(Debug, Serialize)]
pub struct XdpInterface {
    /// Interface name.
    pub name: String,
    /// "native" or "generic".
    pub mode: String,
}

async fn health(State(state): State<ApiState>) -> Json<Health> {
    let xdp_interfaces = state.inner.xdp.as_ref().map_or_else(Vec::new, |xdp| {
        let xdp = xdp.lock().unwrap_or_else(PoisonError::into_inner);
        xdp.attached()
            .map(|(name, mode)| XdpInterface {
                name: name.to_owned(),
                mode: mode.to_string(),
            })
            .collect()
    });
    Json(Health {
        status: "ok",
        boot_id: state.inner.boot_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.inner.started.elapsed().as_secs(),
        sessions: state.inner.relay.list().len(),
        xdp_interfaces,
    })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn list_sessions(State(state): State<ApiState>) -> Response {
    Json(state.inner.relay.list()).into_response()
}

async fn get_session(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    Ok(Json(state.inner.relay.get_session(&id)?).into_response())
}

async fn put_session(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(spec): ApiJson<SessionSpec>,
) -> Result<Response, Problem> {
    let relay = Arc::clone(&state.inner.relay);
    // Binding sockets is blocking work: keep it off the async workers.
    let (view, created) = tokio::task::spawn_blocking(move || relay.put_session(&id, spec))
        .await
        .map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                e.to_string(),
            )
        })??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

async fn patch_leg(
    State(state): State<ApiState>,
    Path((id, leg)): Path<(String, String)>,
    ApiJson(patch): ApiJson<LegPatch>,
) -> Result<Response, Problem> {
    Ok(Json(state.inner.relay.patch_leg(&id, &leg, patch)?).into_response())
}

async fn delete_session(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state.inner.relay.delete_session(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn events(State(state): State<ApiState>) -> impl IntoResponse {
    let receiver = state.inner.relay.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let sse = match receiver.recv().await {
            Ok(event) => {
                let name = match &event {
                    crate::model::Event::MediaTimeout { .. } => "media_timeout",
                };
                let data = serde_json::to_string(&event).unwrap_or_default();
                SseEvent::default().event(name).data(data)
            }
            // A slow reader missed some events: tell it, then carry on.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => SseEvent::default()
                .event("lagged")
                .data(format!("{{\"missed\":{missed}}}")),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(sse), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let relay = Arc::clone(&state.inner.relay);
    let totals = match tokio::task::spawn_blocking(move || relay.totals()).await {
        Ok(t) => t,
        Err(e) => {
            return Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                e.to_string(),
            )
            .into_response()
        }
    };
    let mut body = render_metrics(&totals, state.inner.started_unix, state.inner.xdp.as_ref());
    if let Some(workers) = &state.inner.workers {
        render_worker_metrics(&mut body, workers);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        Bytes::from(body),
    )
        .into_response()
}

/// The AF_XDP workers' counters and gauges, in Prometheus text exposition.
fn render_worker_metrics(body: &mut String, workers: &AfXdpDatapath) {
    let totals = workers.totals();
    for (name, help, value) in [
        (
            "relayd_afxdp_rx_frames_total",
            "Frames AF_XDP workers took off their RX rings.",
            totals.rx_frames,
        ),
        (
            "relayd_afxdp_tx_frames_total",
            "Frames AF_XDP workers put on their TX rings.",
            totals.tx_frames,
        ),
        (
            "relayd_afxdp_tx_kicks_total",
            "Transmit kicks (sendto) of AF_XDP workers.",
            totals.tx_kicks,
        ),
        (
            "relayd_afxdp_batches_total",
            "Receive batches AF_XDP workers processed.",
            totals.batches,
        ),
        (
            "relayd_afxdp_sleeps_total",
            "Times an idle AF_XDP worker slept in poll(2).",
            totals.sleeps,
        ),
        (
            "relayd_afxdp_busy_poll_sockets",
            "AF_XDP sockets the kernel reports in preferred-busy-polling mode.",
            totals.busy_poll_sockets,
        ),
        (
            "relayd_afxdp_kernel_rx_dropped_total",
            "Frames the kernel dropped on the way to AF_XDP sockets (XDP_STATISTICS rx_dropped).",
            totals.kernel_rx_dropped,
        ),
        (
            "relayd_afxdp_kernel_rx_ring_full_total",
            "Frames dropped because an AF_XDP RX ring was full.",
            totals.kernel_rx_ring_full,
        ),
        (
            "relayd_afxdp_kernel_fill_ring_empty_total",
            "Frames that found no free frame in an AF_XDP fill ring.",
            totals.kernel_rx_fill_ring_empty,
        ),
        (
            "relayd_afxdp_kernel_invalid_descs_total",
            "Invalid AF_XDP RX/TX descriptors.",
            totals.kernel_invalid_descs,
        ),
    ] {
        // Counters end in `_total`; the rest are gauges.
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(body, "# HELP {name} {help}");
        let _ = writeln!(body, "# TYPE {name} {kind}");
        let _ = writeln!(body, "{name} {value}");
    }
    let _ = writeln!(
        body,
        "# HELP relayd_afxdp_drops_total Frames AF_XDP workers dropped outside any leg, by reason."
    );
    let _ = writeln!(body, "# TYPE relayd_afxdp_drops_total counter");
    for (reason, count) in totals.drops {
        let _ = writeln!(
            body,
            "relayd_afxdp_drops_total{{reason=\"{reason}\"}} {count}"
        );
    }
}

/// The Prometheus text exposition of the relay's totals.
fn render_metrics(
    totals: &crate::relay::Totals,
    started_unix: u64,
    xdp: Option<&Arc<Mutex<RelayXdp>>>,
) -> String {
    let mut body = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(body, "# HELP {name} {help}");
        let _ = writeln!(body, "# TYPE {name} {kind}");
        let _ = writeln!(body, "{name} {value}");
    };
    gauge(
        "relayd_start_time_seconds",
        "Unix time relayd started.",
        "gauge",
        started_unix,
    );
    gauge("relayd_sessions", "Sessions.", "gauge", totals.sessions);
    gauge("relayd_legs", "Legs.", "gauge", totals.legs);
    gauge(
        "relayd_legs_media_timed_out",
        "Legs silent past their media timeout.",
        "gauge",
        totals.legs_timed_out,
    );
    gauge(
        "relayd_packets_in_total",
        "Packets received by live legs.",
        "counter",
        totals.packets_in,
    );
    gauge(
        "relayd_bytes_in_total",
        "Bytes received by live legs.",
        "counter",
        totals.bytes_in,
    );
    gauge(
        "relayd_packets_out_total",
        "Packets sent by live legs.",
        "counter",
        totals.packets_out,
    );
    gauge(
        "relayd_bytes_out_total",
        "Bytes sent by live legs.",
        "counter",
        totals.bytes_out,
    );
    gauge(
        "relayd_srtp_auth_failures_total",
        "SRTP/SRTCP authentication failures.",
        "counter",
        totals.auth_failures,
    );
    gauge(
        "relayd_srtp_replays_total",
        "SRTP/SRTCP replays refused.",
        "counter",
        totals.replays,
    );
    let _ = writeln!(
        body,
        "# HELP relayd_drops_total Packets dropped, by reason."
    );
    let _ = writeln!(body, "# TYPE relayd_drops_total counter");
    for (reason, count) in &totals.drops {
        let _ = writeln!(
            body,
            "relayd_drops_total{{reason=\"{}\"}} {count}",
            reason.name()
        );
    }
    let _ = writeln!(
        body,
        "# HELP relayd_ports_available Free media port pairs, by interface."
    );
    let _ = writeln!(body, "# TYPE relayd_ports_available gauge");
    for (interface, count) in &totals.ports_available {
        let _ = writeln!(
            body,
            "relayd_ports_available{{interface=\"{interface}\"}} {count}"
        );
    }
    if let Some(xdp) = xdp {
        let snapshot = xdp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counters();
        if let Ok(snapshot) = snapshot {
            let _ = writeln!(
                body,
                "# HELP relayd_xdp_packets_total Packets seen by the XDP program, by outcome."
            );
            let _ = writeln!(body, "# TYPE relayd_xdp_packets_total counter");
            for (counter, value) in snapshot.iter() {
                let _ = writeln!(
                    body,
                    "relayd_xdp_packets_total{{outcome=\"{}\"}} {value}",
                    counter.name()
                );
            }
        }
    }
    body
}
