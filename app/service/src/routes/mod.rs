//! The API: one table of every route (path, method, handler, whether fault injection covers it), turned into the
//! router in one place. The same table keeps `/openapi.json` honest (see the test in `openapi`).

pub mod json_body;
mod keys;
mod misc;
pub mod openapi;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use crate::error::{self, ApiError};
use crate::fault::{self, FaultInjector};
use crate::store::Store;
use crate::telemetry::http::RequestTelemetryLayer;
use crate::telemetry::metrics::Metrics;

/// What the API handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The key-value store.
    pub store: Arc<Store>,
    /// Request and client metrics.
    pub metrics: Metrics,
    /// The current injected fault, if any.
    pub faults: FaultInjector,
    /// Size limits of requests.
    pub limits: Limits,
    /// Time limit of each dependency check of `/status`.
    pub status_timeout: Duration,
    /// When the application was built, for the uptime in `/status`.
    pub started: Instant,
}

/// Size limits; both are documented in docs/service.md and `.env.example`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body (413 beyond), also the largest value in `/set_key/{key}/{value}`.
    pub max_body_bytes: usize,
    /// Longest key in bytes (400 beyond).
    pub max_key_bytes: usize,
}

impl Limits {
    /// Rejects keys that cannot be stored or read back: empty, too long, or holding a NUL (Postgres text cannot).
    pub fn check_key(&self, key: &str) -> Result<(), ApiError> {
        if key.is_empty() {
            Err(ApiError::BadRequest("key must not be empty".to_owned()))
        } else if key.len() > self.max_key_bytes {
            Err(ApiError::BadRequest(format!(
                "key is longer than {} bytes",
                self.max_key_bytes
            )))
        } else if key.contains('\0') {
            Err(ApiError::BadRequest("key must not contain NUL characters".to_owned()))
        } else {
            Ok(())
        }
    }
}

/// One row of the route table.
pub struct RouteSpec {
    /// Path template, as matched (and as the `http_route` label shows it).
    pub path: &'static str,
    /// The one method it answers (GET routes answer HEAD too).
    pub method: Method,
    /// Whether injected faults apply. Off for `/healthcheck` and `/status`: health must stay truthful in a drill.
    pub fault_injection: bool,
    handler: MethodRouter<AppState>,
}

fn route<H, T>(path: &'static str, method: Method, fault_injection: bool, handler: H) -> RouteSpec
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("routes use standard methods");
    RouteSpec {
        path,
        method,
        fault_injection,
        handler: on(filter, handler),
    }
}

/// Every API route.
pub fn route_table() -> Vec<RouteSpec> {
    vec![
        route("/", Method::GET, true, misc::home),
        route("/helloworld", Method::GET, true, misc::hello_world),
        route("/healthcheck", Method::GET, false, misc::healthcheck),
        route("/status", Method::GET, false, status::status),
        route("/set_key/{key}/{value}", Method::GET, true, keys::set_key),
        route("/get_key/{key}", Method::GET, true, keys::get_key),
        route("/set", Method::POST, true, keys::set),
        route("/get/{key}", Method::GET, true, keys::get),
        route("/query", Method::GET, true, misc::query),
        route("/openapi.json", Method::GET, true, openapi::openapi),
    ]
}

/// The API router with its middleware: request id, log line and request metrics (one layer, outermost; metrics
/// only when enabled), the body limit on the routes that read a body, and fault injection on the routes it covers
/// (when enabled). Each layer costs every request it covers a boxed service and future, so none is added where it
/// has nothing to do.
pub fn api_router(state: AppState) -> Router {
    let mut router = Router::new();
    for spec in route_table() {
        let mut handler = spec.handler;
        // Only POST routes read a body; the limit reaches their extractors through a request extension.
        if spec.method == Method::POST {
            handler = handler.route_layer(DefaultBodyLimit::max(state.limits.max_body_bytes));
        }
        if spec.fault_injection && state.faults.enabled() {
            handler = handler.route_layer(from_fn_with_state(state.faults.clone(), fault::inject));
        }
        router = router.route(spec.path, handler);
    }
    let metrics = state.metrics.enabled().then(|| state.metrics.clone());
    router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(RequestTelemetryLayer::new(metrics))
        .with_state(state)
}
