//! The admin listener: `/metrics` for Prometheus and `/fault` for drills. Kept off the API listener so that
//! neither is exposed where the API is, and so that scrapes do not count as API traffic.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::error::{self, ApiError};
use crate::fault::{FaultInjector, FaultRequest, FaultStatus};
use crate::store::Store;
use crate::telemetry::metrics::{spec_of, write_header, Metrics, DB_CLIENT_CONNECTION_COUNT};
use crate::telemetry::process::ProcessCollector;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The recorder to render.
    pub metrics: Metrics,
    /// For the pool gauges.
    pub store: Arc<Store>,
    /// Fault injection.
    pub faults: FaultInjector,
    /// Process metrics.
    pub process: Arc<ProcessCollector>,
}

/// The admin router.
pub fn admin_router(state: AdminState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/fault", get(get_fault).post(set_fault).delete(clear_fault))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// `GET /metrics`: the recorder's series, with the scrape-time ones (pools, faults, process) refreshed first.
async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    // Refreshes the fault gauges, so an expired fault reads 0 without a timer.
    state.faults.status();
    let pools = state.store.pool_stats();
    for pool in &pools {
        state.metrics.set_pool_max(pool.pool, pool.max);
    }
    let mut body = state.metrics.render();
    write_header(&mut body, spec_of(DB_CLIENT_CONNECTION_COUNT));
    for pool in &pools {
        for (label, value) in [("idle", pool.idle), ("used", pool.used)] {
            let _ = writeln!(
                body,
                "{DB_CLIENT_CONNECTION_COUNT}{{pool_name=\"{}\",state=\"{label}\"}} {value}",
                pool.pool.as_str()
            );
        }
    }
    state.process.render(&mut body);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}

/// `GET /fault`: the current fault.
async fn get_fault(State(state): State<AdminState>) -> Json<FaultStatus> {
    Json(state.faults.status())
}

/// `POST /fault` with `{"error_ratio": 0.5, "latency_ms": 500, "duration_seconds": 60}`: replaces the fault.
async fn set_fault(
    State(state): State<AdminState>,
    body: Result<Json<FaultRequest>, JsonRejection>,
) -> Result<Json<FaultStatus>, ApiError> {
    state.faults.ensure_enabled()?;
    let Json(request) = body?;
    Ok(Json(state.faults.set(&request)?))
}

/// `DELETE /fault`: ends the fault.
async fn clear_fault(State(state): State<AdminState>) -> Result<Json<FaultStatus>, ApiError> {
    Ok(Json(state.faults.clear()?))
}
