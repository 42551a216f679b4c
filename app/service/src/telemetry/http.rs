//! Request middleware: the `x-request-id`, one log line per request, the request metrics, and the
//! `X-Content-Type-Options: nosniff` of every API response, in one layer.
//!
//! The layer is added with `Router::layer`, which axum applies to each route after routing, so the matched
//! route template ([`MatchedPath`]) is known here; requests that match no route carry none and are labelled
//! `unmatched`. Using the template, never the raw path, keeps log fields and metric labels low-cardinality.
//!
//! Why one hand-written [`Service`] rather than `middleware::from_fn` functions: every `Router::layer` wraps each
//! route in another boxed service that is cloned per request, and `from_fn` adds a boxed future, another clone of
//! the inner service and another box around it. Profiled under `make bench`, that per-layer machinery was a visible
//! share of a `GET /helloworld`; here the request id, the log line and the metrics cost one layer and no box.

use std::convert::Infallible;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::Response;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;

use super::metrics::{method_label, ActiveRequest, Metrics};
use super::request_log::{self, RequestLine};

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

/// Wraps each route in [`RequestTelemetry`]: request id, a span carrying it, the log line and, when `metrics` is
/// given, the request metrics (`http_server_request_duration_seconds`, `http_server_active_requests`).
#[derive(Clone)]
pub struct RequestTelemetryLayer {
    metrics: Option<Metrics>,
}

impl RequestTelemetryLayer {
    /// `metrics` is `None` when `APP_METRICS_ENABLED` is false: then nothing is measured on the request path.
    pub fn new(metrics: Option<Metrics>) -> Self {
        RequestTelemetryLayer { metrics }
    }
}

impl<S> Layer<S> for RequestTelemetryLayer {
    type Service = RequestTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTelemetry {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`RequestTelemetryLayer`].
#[derive(Clone)]
pub struct RequestTelemetry<S> {
    inner: S,
    metrics: Option<Metrics>,
}

impl<S> Service<Request> for RequestTelemetry<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RequestTelemetryFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        let given = req
            .headers()
            .get(&REQUEST_ID_HEADER)
            .filter(|v| is_valid_request_id(v.as_bytes()))
            .cloned();
        let request_id = given.unwrap_or_else(|| {
            let id = generate_request_id();
            // Handlers see the id the response will carry: a valid one from the client is already there.
            req.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
            id
        });
        let method = req.method().clone();
        let route = route_of(&req);
        let active = self
            .metrics
            .as_ref()
            .map(|m| m.track_active_request(method_label(&method)));
        // Lines logged while handling the request (errors, dependency warnings) carry its id through this span.
        // A valid id is visible ASCII, so `to_str` cannot fail.
        let span = tracing::info_span!("request", request_id = request_id.to_str().unwrap_or_default());
        // Not entered here: calling a route only builds its future; the handler runs when it is polled, below.
        let inner = self.inner.call(req);
        RequestTelemetryFuture {
            inner,
            span,
            started,
            request_id: Some(request_id),
            method,
            route,
            metrics: self.metrics.clone(),
            _active: active,
        }
    }
}

/// The response future of [`RequestTelemetry`]: polls the route inside the request's span, then adds the
/// `x-request-id` header, records the metrics and logs the line.
pub struct RequestTelemetryFuture<F> {
    inner: F,
    span: Span,
    started: Instant,
    request_id: Option<HeaderValue>,
    method: Method,
    route: MatchedPathOrUnmatched,
    metrics: Option<Metrics>,
    /// Counts the request as active until the future completes or is dropped (the client went away).
    _active: Option<ActiveRequest>,
}

impl<F> Future for RequestTelemetryFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Ok(mut response) = ready!(this.span.in_scope(|| Pin::new(&mut this.inner).poll(cx)));
        let latency = this.started.elapsed();
        let status = response.status().as_u16();
        if let Some(metrics) = &this.metrics {
            metrics.record_request(method_label(&this.method), this.route.as_str(), status, latency);
        }
        let request_id = this.request_id.take().expect("polled after completion");
        request_log::log(&RequestLine {
            method: this.method.as_str(),
            route: this.route.as_str(),
            status,
            latency,
            request_id: request_id.to_str().unwrap_or_default(),
        });
        let headers = response.headers_mut();
        headers.insert(REQUEST_ID_HEADER, request_id);
        // Several answers echo input (`/query`, error messages, stored values): no browser may sniff one into HTML.
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        Poll::Ready(Ok(response))
    }
}

/// The request id of an answer given before routing (see `connection`), where this layer never runs: the client's
/// when valid, else a generated one, as for routed requests.
pub fn request_id_for(headers: &axum::http::HeaderMap) -> HeaderValue {
    headers
        .get(&REQUEST_ID_HEADER)
        .filter(|v| is_valid_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(generate_request_id)
}

fn is_valid_request_id(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID_LEN && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// 32 hex digits, unique within the process and unpredictable across processes: a counter, offset by a
/// per-process random key (std's `RandomState` is seeded from the OS), through a bijective mixer, so distinct
/// counts give distinct ids. Avoids a dependency for a UUID, and two SipHash rounds per request: the id is written
/// into a stack buffer and its header value is its only allocation.
fn generate_request_id() -> HeaderValue {
    static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let &(k1, k2) = KEYS.get_or_init(|| {
        let seed = std::collections::hash_map::RandomState::new();
        (seed.hash_one(1u8), seed.hash_one(2u8))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let high = mix(n.wrapping_add(k1));
    let mut id = [0u8; 32];
    let bytes = [high.to_be_bytes(), mix(high ^ k2).to_be_bytes()];
    for (pair, byte) in id.chunks_exact_mut(2).zip(bytes.iter().flatten()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

/// The SplitMix64 finalizer (Steele, Lea and Flood, 2014): a bijection on `u64` that spreads every input bit over
/// the output. Not cryptographic; request ids only need to be unique and not guessable from outside the process.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::telemetry::span_fields::JsonSpanFields;
    use crate::telemetry::Captured;

    /// Sends `request` through a router with the layer and a handler that logs a warning, with JSON logs set up
    /// as `init_logging` sets them up; returns the response and the parsed log lines.
    fn through_layer(request: axum::http::Request<Body>) -> (Response, Vec<Value>) {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(JsonSpanFields)
            .finish();
        let router = Router::new()
            .route(
                "/items/{id}",
                get(|| async {
                    tracing::warn!("dependency unavailable");
                    "ok"
                }),
            )
            .layer(RequestTelemetryLayer::new(Some(Metrics::new(true, "1", "r"))));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let response =
            tracing::subscriber::with_default(subscriber, || runtime.block_on(router.oneshot(request)).unwrap());
        let text = out.text();
        let lines = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (response, lines)
    }

    #[test]
    fn a_request_gets_its_id_on_the_response_on_its_log_line_and_on_what_it_logs() {
        let request = axum::http::Request::get("/items/7")
            .header(REQUEST_ID_HEADER, "drill-42")
            .body(Body::empty())
            .unwrap();
        let (response, lines) = through_layer(request);
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "drill-42");
        let [warning, request_line] = &lines[..] else {
            panic!("expected two lines: {lines:?}")
        };
        assert_eq!(warning["message"], "dependency unavailable");
        assert_eq!(warning["span"]["request_id"], "drill-42");
        assert_eq!(request_line["message"], "request");
        assert_eq!(request_line["target"], "app::http");
        assert_eq!(request_line["method"], "GET");
        assert_eq!(request_line["route"], "/items/{id}", "the template, not the path");
        assert_eq!(request_line["status"], 200);
        assert_eq!(request_line["request_id"], "drill-42");
        assert!(request_line["latency_ms"].as_f64().unwrap() >= 0.0);
    }

    #[test]
    fn a_request_without_a_usable_id_gets_a_generated_one_everywhere() {
        let request = axum::http::Request::get("/nowhere")
            .header(REQUEST_ID_HEADER, "has space")
            .body(Body::empty())
            .unwrap();
        let (response, lines) = through_layer(request);
        let id = response.headers()[REQUEST_ID_HEADER].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 32);
        let [request_line] = &lines[..] else {
            panic!("expected one line: {lines:?}")
        };
        assert_eq!(request_line["request_id"], id.as_str());
        assert_eq!(request_line["route"], UNMATCHED_ROUTE);
        assert_eq!(request_line["status"], 404);
    }

    #[test]
    fn generated_request_ids_are_distinct_hex() {
        let a = generate_request_id();
        let b = generate_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(|c| c.is_ascii_hexdigit()));
        assert!(is_valid_request_id(a.as_bytes()));
    }

    #[test]
    fn generated_request_ids_do_not_repeat() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| generate_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn the_mixer_spreads_neighbouring_counts_apart() {
        // Consecutive counters must not give ids that differ in a few digits only.
        for n in 0..1000u64 {
            let changed = (mix(n) ^ mix(n + 1)).count_ones();
            assert!((12..=52).contains(&changed), "{n}: {changed} bits");
        }
    }

    #[test]
    fn client_request_ids_must_be_short_visible_ascii() {
        assert!(is_valid_request_id(b"abc-123"));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(&[b'a'; 129]));
    }
}
