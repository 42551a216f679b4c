//! Request middleware: the `x-request-id`, one log line per request, and the request metrics.
//!
//! Both layers are added with `Router::layer`, which axum applies to each route after routing, so the matched
//! route template ([`MatchedPath`]) is known here; requests that match no route carry none and are labelled
//! `unmatched`. Using the template, never the raw path, keeps log fields and metric labels low-cardinality.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::metrics::{method_label, Metrics};

/// Header that carries the request id, taken from the request when valid, else generated, and always returned.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The `http_route` value of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Longest request id accepted from a client; longer ones are replaced, so logs stay bounded.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The route template of a routed request, or [`UNMATCHED_ROUTE`].
pub fn route_of(req: &Request) -> MatchedPathOrUnmatched {
    MatchedPathOrUnmatched(req.extensions().get::<MatchedPath>().cloned())
}

/// A route template that outlives the request it came from.
pub struct MatchedPathOrUnmatched(Option<MatchedPath>);

impl MatchedPathOrUnmatched {
    /// The template, such as `/get/{key}`, or `unmatched`.
    pub fn as_str(&self) -> &str {
        self.0.as_ref().map_or(UNMATCHED_ROUTE, |p| p.as_str())
    }
}

/// Assigns the request id, runs the request inside a span that carries it, and logs one line when it is done.
pub async fn trace_request(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .filter(|v| is_valid_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_str(&generate_request_id()).expect("hex is a valid header value"));
    // Handlers see the id the response will carry, whichever way it was chosen.
    req.headers_mut().insert(REQUEST_ID_HEADER, request_id.clone());
    let method = req.method().clone();
    let route = route_of(&req);
    let id = request_id.to_str().unwrap_or_default().to_owned();
    let span = tracing::info_span!("request", request_id = %id);

    let mut response = next.run(req).instrument(span).await;

    response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        target: "app::http",
        method = %method,
        route = route.as_str(),
        status,
        latency_ms,
        request_id = %id,
        "request"
    );
    response
}

/// Measures a request for `http_server_request_duration_seconds` and `http_server_active_requests`. Only on the
/// request path when `APP_METRICS_ENABLED` is true.
pub async fn record_metrics(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = route_of(&req);
    let _active = metrics.track_active_request(method);
    let response = next.run(req).await;
    metrics.record_request(method, route.as_str(), response.status().as_u16(), started.elapsed());
    response
}

fn is_valid_request_id(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID_LEN && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// 32 hex digits, unique within the process and unpredictable across processes: a per-process random hasher
/// (std's `RandomState` is seeded from the OS) applied to a counter. Avoids a dependency for a UUID.
fn generate_request_id() -> String {
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = SEED.get_or_init(std::collections::hash_map::RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{:016x}", seed.hash_one(n), seed.hash_one((n, u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_distinct_hex() {
        let a = generate_request_id();
        let b = generate_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn client_request_ids_must_be_short_visible_ascii() {
        assert!(is_valid_request_id(b"abc-123"));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(&[b'a'; 129]));
    }
}
