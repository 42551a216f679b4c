//! `GET /status`, readiness: checks Postgres (`SELECT 1`) and Redis (`PING`) for real, concurrently, each under a
//! short timeout, and reports each. Postgres down → 503 `Down`; only Redis down → 200 `Degraded` (the service
//! still answers from Postgres). Errors are reported by kind, never with an address or credential.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::AppState;
use crate::error::error_chain;
use crate::store::StoreError;

/// The body of `/status`.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// `Up`, `Degraded` (Redis down) or `Down` (Postgres down).
    pub status: &'static str,
    /// Package version.
    pub version: &'static str,
    /// Source revision.
    pub revision: &'static str,
    /// Seconds since the application started.
    pub uptime_seconds: u64,
    /// One entry per dependency.
    pub checks: Checks,
}

/// Both dependency checks.
#[derive(Debug, Serialize)]
pub struct Checks {
    /// Postgres, the source of truth.
    pub postgres: Check,
    /// Redis, the cache.
    pub redis: Check,
}

/// One dependency check.
#[derive(Debug, Serialize)]
pub struct Check {
    /// `ok` or `error`.
    pub status: &'static str,
    /// How long the check took, in milliseconds.
    pub latency_ms: f64,
    /// What went wrong, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /status`.
pub async fn status(State(state): State<AppState>) -> (StatusCode, Json<StatusReport>) {
    let limit = state.status_timeout;
    let postgres = timed(limit, async {
        let db = state.store.db();
        let result = match db.ping().await {
            // Postgres answers but the table is not there yet: not ready for writes until it is created.
            Ok(()) if !db.schema_ready() => db.migrate().await,
            other => other,
        };
        result.map_err(|e| {
            tracing::debug!(error = %error_chain(&e), "status: postgres check failed");
            match e {
                StoreError::Unavailable(reason) => reason.to_string(),
                other => other.to_string(),
            }
        })
    });
    let redis = timed(limit, async {
        state.store.cache().ping().await.map_err(|e| {
            tracing::debug!(error = %error_chain(&e), "status: redis check failed");
            e.to_string()
        })
    });
    let (postgres, redis) = tokio::join!(postgres, redis);
    let (code, status) = match (postgres.error.is_none(), redis.error.is_none()) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "Down"),
        (true, false) => (StatusCode::OK, "Degraded"),
        (true, true) => (StatusCode::OK, "Up"),
    };
    let report = StatusReport {
        status,
        version: crate::VERSION,
        revision: crate::REVISION,
        uptime_seconds: state.started.elapsed().as_secs(),
        checks: Checks { postgres, redis },
    };
    (code, Json(report))
}

/// Runs one check under `limit`. Checks report our own error messages only (the kind of failure), never the
/// client libraries' text, which is where addresses could appear; the full chain goes to the debug log.
async fn timed(limit: Duration, check: impl Future<Output = Result<(), String>>) -> Check {
    let started = Instant::now();
    let result = tokio::time::timeout(limit, check).await;
    let latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(message)) => Some(message),
        Err(_) => Some(format!("timed out after {} ms", limit.as_millis())),
    };
    Check {
        status: if error.is_none() { "ok" } else { "error" },
        latency_ms,
        error,
    }
}
