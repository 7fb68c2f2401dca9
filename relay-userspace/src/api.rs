//! relayd's HTTP service: `/v1/health` (with a boot id, so a controller can tell a restart) and
//! `/metrics` in the Prometheus text format.

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Serialize;

use crate::xdp::RelayXdp;

/// Shared state of the HTTP service.
#[derive(Debug, Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    boot_id: String,
    started: Instant,
    started_unix: u64,
    xdp: Option<Arc<Mutex<RelayXdp>>>,
}

impl ApiState {
    /// State for a relayd that started now, with a fresh random boot id.
    pub fn new(xdp: Option<Arc<Mutex<RelayXdp>>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                boot_id: uuid::Uuid::new_v4().to_string(),
                started: Instant::now(),
                started_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                xdp,
            }),
        }
    }

    /// This process's boot id.
    pub fn boot_id(&self) -> &str {
        &self.inner.boot_id
    }
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
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
        xdp_interfaces,
    })
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let mut body = String::new();
    let _ = writeln!(
        body,
        "# HELP relayd_start_time_seconds Unix time relayd started."
    );
    let _ = writeln!(body, "# TYPE relayd_start_time_seconds gauge");
    let _ = writeln!(
        body,
        "relayd_start_time_seconds {}",
        state.inner.started_unix
    );
    if let Some(xdp) = &state.inner.xdp {
        let snapshot = xdp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counters();
        match snapshot {
            Ok(snapshot) => {
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
            Err(error) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("reading XDP counters failed: {error}\n"),
                )
                    .into_response();
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
