//! The metric contract: every name the service exports, with its type, HELP text, labels and buckets, in one place.
//! Alert rules and dashboards are written against exactly these names, so change them only together.
//!
//! [`Metrics`] records into a Prometheus recorder owned by the application rather than a process-wide one:
//! the recorder is created once per `Application`, and tests that run several applications in one process
//! each read their own numbers.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::http::Method;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter, Gauge, Histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Latency of API requests, by method, route template and status code.
pub const HTTP_SERVER_REQUEST_DURATION_SECONDS: &str = "http_server_request_duration_seconds";
/// API requests being served right now, by method.
pub const HTTP_SERVER_ACTIVE_REQUESTS: &str = "http_server_active_requests";
/// Cache lookups by result: `hit`, `miss` or `error`.
pub const CACHE_REQUESTS_TOTAL: &str = "cache_requests_total";
/// Latency of Redis operations: `get`, `set`, `delete`.
pub const CACHE_OPERATION_DURATION_SECONDS: &str = "cache_operation_duration_seconds";
/// Latency of Postgres operations by name and outcome.
pub const DB_CLIENT_OPERATION_DURATION_SECONDS: &str = "db_client_operation_duration_seconds";
/// Pooled connections by pool and state.
pub const DB_CLIENT_CONNECTION_COUNT: &str = "db_client_connection_count";
/// Pool capacity.
pub const DB_CLIENT_CONNECTION_MAX: &str = "db_client_connection_max";
/// Connection acquisitions that timed out, by pool.
pub const DB_CLIENT_CONNECTION_TIMEOUTS_TOTAL: &str = "db_client_connection_timeouts_total";
/// Connections open on each listener (`api`, `admin`), idle keep-alive ones included.
pub const HTTP_SERVER_OPEN_CONNECTIONS: &str = "http_server_open_connections";
/// The most connections each listener keeps open at once.
pub const HTTP_SERVER_CONNECTION_MAX: &str = "http_server_connection_max";
/// Connections refused because their listener had its maximum open.
pub const HTTP_SERVER_REJECTED_CONNECTIONS_TOTAL: &str = "http_server_rejected_connections_total";
/// Requests rejected before routing, by listener and [`RejectReason`].
pub const HTTP_SERVER_REJECTED_REQUESTS_TOTAL: &str = "http_server_rejected_requests_total";
/// Connections closed because no request came within the idle timeout.
pub const HTTP_SERVER_IDLE_TIMEOUTS_TOTAL: &str = "http_server_idle_timeouts_total";
/// Constant 1 carrying the version and revision.
pub const APP_BUILD_INFO: &str = "app_build_info";
/// 1 while a kind of fault injection is active.
pub const APP_FAULT_INJECTION_ACTIVE: &str = "app_fault_injection_active";
/// Process metrics, named as the Prometheus client libraries name them.
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
#[allow(missing_docs)]
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
#[allow(missing_docs)]
pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
#[allow(missing_docs)]
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
#[allow(missing_docs)]
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
#[allow(missing_docs)]
pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";
#[allow(missing_docs)]
pub const PROCESS_THREADS: &str = "process_threads";

/// Buckets of the request latency histogram, fixed by the contract: 0.25 s is the latency SLO's threshold.
pub const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of the cache and database histograms: their operations take well under a millisecond on loopback,
/// so the scale starts lower; it ends at the longest timeout a client may wait.
pub const CLIENT_DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The exposition type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Monotonic count; the name ends in `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative `_bucket{le}` series plus `_sum` and `_count`.
    Histogram,
    /// Gauge semantics exposed as `untyped`. Only for `db_client_connection_count`: promtool's linter rejects a
    /// gauge whose name ends in `_count` (reserved for histograms), and the contract fixes the name. PromQL treats
    /// both types the same.
    Untyped,
}

impl MetricType {
    /// The word used on the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Untyped => "untyped",
        }
    }
}

/// One metric of the contract.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// Full name, unit suffix included.
    pub name: &'static str,
    /// Exposition type.
    pub kind: MetricType,
    /// HELP text.
    pub help: &'static str,
    /// Label names, in order; their values are bounded sets (never a key, path or message).
    pub labels: &'static [&'static str],
    /// Histogram buckets (upper bounds in seconds).
    pub buckets: Option<&'static [f64]>,
    /// Rendered at scrape time by the collector rather than by the recorder.
    pub collected: bool,
}

const fn spec(name: &'static str, kind: MetricType, help: &'static str, labels: &'static [&'static str]) -> MetricSpec {
    MetricSpec {
        name,
        kind,
        help,
        labels,
        buckets: None,
        collected: false,
    }
}

const fn histogram_spec(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
) -> MetricSpec {
    MetricSpec {
        name,
        kind: MetricType::Histogram,
        help,
        labels,
        buckets: Some(buckets),
        collected: false,
    }
}

const fn collected(
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    labels: &'static [&'static str],
) -> MetricSpec {
    MetricSpec {
        name,
        kind,
        help,
        labels,
        buckets: None,
        collected: true,
    }
}

/// Every metric the service exports.
pub const CONTRACT: &[MetricSpec] = &[
    histogram_spec(
        HTTP_SERVER_REQUEST_DURATION_SECONDS,
        "Duration of API requests in seconds, from the first byte read to the response head, by route template.",
        &["http_request_method", "http_route", "http_response_status_code"],
        HTTP_DURATION_BUCKETS,
    ),
    spec(
        HTTP_SERVER_ACTIVE_REQUESTS,
        MetricType::Gauge,
        "API requests currently in flight.",
        &["http_request_method"],
    ),
    spec(
        CACHE_REQUESTS_TOTAL,
        MetricType::Counter,
        "Redis cache lookups by result: hit, miss, or error (Redis failed; the read went to Postgres).",
        &["result"],
    ),
    histogram_spec(
        CACHE_OPERATION_DURATION_SECONDS,
        "Duration of Redis cache operations in seconds, failures included.",
        &["operation"],
        CLIENT_DURATION_BUCKETS,
    ),
    histogram_spec(
        DB_CLIENT_OPERATION_DURATION_SECONDS,
        "Duration of Postgres operations in seconds, pool acquisition included.",
        &["db_operation_name", "outcome"],
        CLIENT_DURATION_BUCKETS,
    ),
    collected(
        DB_CLIENT_CONNECTION_COUNT,
        MetricType::Untyped,
        "Connections held by each client pool, by state (idle or used).",
        &["pool_name", "state"],
    ),
    spec(
        DB_CLIENT_CONNECTION_MAX,
        MetricType::Gauge,
        "Maximum number of connections of each client pool.",
        &["pool_name"],
    ),
    spec(
        DB_CLIENT_CONNECTION_TIMEOUTS_TOTAL,
        MetricType::Counter,
        "Connection acquisitions from a pool that timed out.",
        &["pool_name"],
    ),
    spec(
        HTTP_SERVER_OPEN_CONNECTIONS,
        MetricType::Gauge,
        "Connections open on each listener (api or admin), idle keep-alive ones included.",
        &["listener"],
    ),
    spec(
        HTTP_SERVER_CONNECTION_MAX,
        MetricType::Gauge,
        "Most connections each listener keeps open at once (APP_MAX_CONNECTIONS for api); one more is refused.",
        &["listener"],
    ),
    spec(
        HTTP_SERVER_REJECTED_CONNECTIONS_TOTAL,
        MetricType::Counter,
        "Connections refused because their listener had its maximum open: answered 503 and closed.",
        &["listener"],
    ),
    spec(
        HTTP_SERVER_REJECTED_REQUESTS_TOTAL,
        MetricType::Counter,
        "Requests rejected before routing, or cut off by a connection timeout, by reason: header_too_large (431), \
         uri_too_long (414), malformed (400), header_timeout (408), body_timeout (408, or closed once an answer \
         has started), write_timeout (connection reset: the client did not read its answer).",
        &["listener", "reason"],
    ),
    spec(
        HTTP_SERVER_IDLE_TIMEOUTS_TOTAL,
        MetricType::Counter,
        "Connections closed because no request came within the idle timeout (APP_IDLE_TIMEOUT_SECONDS).",
        &["listener"],
    ),
    spec(
        APP_BUILD_INFO,
        MetricType::Gauge,
        "Always 1; the labels carry the running version and revision.",
        &["version", "revision"],
    ),
    spec(
        APP_FAULT_INJECTION_ACTIVE,
        MetricType::Gauge,
        "1 while fault injection of this kind (errors or latency) is active, else 0.",
        &["kind"],
    ),
    collected(
        PROCESS_CPU_SECONDS_TOTAL,
        MetricType::Counter,
        "Total user and system CPU time spent in seconds.",
        &[],
    ),
    collected(
        PROCESS_RESIDENT_MEMORY_BYTES,
        MetricType::Gauge,
        "Resident memory size in bytes.",
        &[],
    ),
    collected(
        PROCESS_VIRTUAL_MEMORY_BYTES,
        MetricType::Gauge,
        "Virtual memory size in bytes.",
        &[],
    ),
    collected(
        PROCESS_OPEN_FDS,
        MetricType::Gauge,
        "Number of open file descriptors.",
        &[],
    ),
    collected(
        PROCESS_MAX_FDS,
        MetricType::Gauge,
        "Maximum number of open file descriptors.",
        &[],
    ),
    collected(
        PROCESS_START_TIME_SECONDS,
        MetricType::Gauge,
        "Start time of the process since unix epoch in seconds.",
        &[],
    ),
    collected(
        PROCESS_THREADS,
        MetricType::Gauge,
        "Number of OS threads in the process.",
        &[],
    ),
];

/// Looks up a metric of the contract by name.
pub fn spec_of(name: &str) -> &'static MetricSpec {
    CONTRACT
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not in the metric contract"))
}

/// Writes the HELP and TYPE lines of a collected metric family.
pub fn write_header(out: &mut String, spec: &MetricSpec) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {} {}", spec.name, spec.help);
    let _ = writeln!(out, "# TYPE {} {}", spec.name, spec.kind.as_str());
}

/// Outcome of a cache lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// The value came from Redis.
    Hit,
    /// Redis answered that it has no value.
    Miss,
    /// Redis failed or was skipped after a recent failure.
    Error,
}

/// A Redis operation, the `operation` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOp {
    /// Lookup.
    Get,
    /// Fill or update.
    Set,
    /// Invalidation.
    Delete,
}

impl CacheOp {
    fn as_str(self) -> &'static str {
        match self {
            CacheOp::Get => "get",
            CacheOp::Set => "set",
            CacheOp::Delete => "delete",
        }
    }
}

/// A Postgres operation, the `db_operation_name` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbOp {
    /// Read of one key.
    Select,
    /// Insert or update of one key.
    Upsert,
    /// Liveness check of `/status`.
    Ping,
    /// Schema creation.
    Migrate,
}

impl DbOp {
    fn as_str(self) -> &'static str {
        match self {
            DbOp::Select => "select",
            DbOp::Upsert => "upsert",
            DbOp::Ping => "ping",
            DbOp::Migrate => "migrate",
        }
    }
}

/// The `pool_name` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolName {
    /// The Postgres pool.
    Postgres,
    /// The Redis pool.
    Redis,
}

impl PoolName {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolName::Postgres => "postgres",
            PoolName::Redis => "redis",
        }
    }
}

/// The `kind` label of [`APP_FAULT_INJECTION_ACTIVE`].
pub const FAULT_KINDS: [&str; 2] = ["errors", "latency"];

/// The `listener` label of the connection metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerName {
    /// The API listener.
    Api,
    /// The admin listener (`/metrics`, `/fault`).
    Admin,
}

impl ListenerName {
    /// Both listeners.
    pub const ALL: [ListenerName; 2] = [ListenerName::Api, ListenerName::Admin];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerName::Api => "api",
            ListenerName::Admin => "admin",
        }
    }
}

/// Why a request was rejected before it reached the router: the `reason` label of
/// [`HTTP_SERVER_REJECTED_REQUESTS_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// 431: the header section is larger than `APP_MAX_HEADER_BYTES`, or the whole head larger than hyper's limit.
    HeaderTooLarge,
    /// 414: the request target is longer than `APP_MAX_URI_BYTES`.
    UriTooLong,
    /// 400 from the HTTP parser: not a valid HTTP/1 request head.
    Malformed,
    /// 408: the head did not arrive within `APP_HEADER_READ_TIMEOUT_MS` of its first byte.
    HeaderTimeout,
    /// 408: the body did not arrive within `APP_BODY_READ_TIMEOUT_MS` of the end of the head (the connection is
    /// closed without an answer if one had started). The handler never ran, or was waiting for the body.
    BodyTimeout,
    /// The connection was reset: output waited for the client longer than `APP_WRITE_TIMEOUT_MS`. The request
    /// was routed, and is counted with its status by the request metrics too; this says its answer did not get
    /// through.
    WriteTimeout,
}

impl RejectReason {
    /// Every reason, in the order of their counters.
    pub const ALL: [RejectReason; 6] = [
        RejectReason::HeaderTooLarge,
        RejectReason::UriTooLong,
        RejectReason::Malformed,
        RejectReason::HeaderTimeout,
        RejectReason::BodyTimeout,
        RejectReason::WriteTimeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::HeaderTooLarge => "header_too_large",
            RejectReason::UriTooLong => "uri_too_long",
            RejectReason::Malformed => "malformed",
            RejectReason::HeaderTimeout => "header_timeout",
            RejectReason::BodyTimeout => "body_timeout",
            RejectReason::WriteTimeout => "write_timeout",
        }
    }
}

/// The connection series of one listener. Cheap to clone; every series exists from startup (counters at 0).
#[derive(Clone)]
pub struct ListenerMetrics {
    open: Gauge,
    max: Gauge,
    rejected_connections: Counter,
    rejected_requests: [Counter; RejectReason::ALL.len()],
    idle_timeouts: Counter,
}

impl ListenerMetrics {
    fn new(name: ListenerName) -> Self {
        let listener = name.as_str();
        let zero = |c: Counter| {
            c.increment(0);
            c
        };
        let metrics = ListenerMetrics {
            open: gauge!(HTTP_SERVER_OPEN_CONNECTIONS, "listener" => listener),
            max: gauge!(HTTP_SERVER_CONNECTION_MAX, "listener" => listener),
            rejected_connections: zero(counter!(HTTP_SERVER_REJECTED_CONNECTIONS_TOTAL, "listener" => listener)),
            rejected_requests: RejectReason::ALL.map(|reason| {
                zero(counter!(
                    HTTP_SERVER_REJECTED_REQUESTS_TOTAL,
                    "listener" => listener,
                    "reason" => reason.as_str()
                ))
            }),
            idle_timeouts: zero(counter!(HTTP_SERVER_IDLE_TIMEOUTS_TOTAL, "listener" => listener)),
        };
        metrics.open.set(0.0);
        metrics.max.set(0.0);
        metrics
    }

    /// Sets the listener's bound, exported as [`HTTP_SERVER_CONNECTION_MAX`].
    pub fn set_max(&self, max: usize) {
        self.max.set(max as f64);
    }

    /// Counts one more open connection; [`ListenerMetrics::connection_closed`] undoes it.
    pub fn connection_opened(&self) {
        self.open.increment(1.0);
    }

    /// Counts one open connection less.
    pub fn connection_closed(&self) {
        self.open.decrement(1.0);
    }

    /// Counts a connection refused at the bound.
    pub fn connection_rejected(&self) {
        self.rejected_connections.increment(1);
    }

    /// Counts a request rejected before routing.
    pub fn request_rejected(&self, reason: RejectReason) {
        let index = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every reason is listed");
        self.rejected_requests[index].increment(1);
    }

    /// Counts a connection closed by the idle timeout.
    pub fn idle_timeout(&self) {
        self.idle_timeouts.increment(1);
    }
}

/// Where the service records its metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// When false, timings are not recorded (the benchmark switch); state gauges are still exported.
    enabled: bool,
    cache_hit: Counter,
    cache_miss: Counter,
    cache_error: Counter,
    postgres_timeouts: Counter,
    redis_timeouts: Counter,
    fault_errors: Gauge,
    fault_latency: Gauge,
    /// The connection series of each listener, in the order of [`ListenerName::ALL`].
    listeners: [ListenerMetrics; ListenerName::ALL.len()],
    /// The `http_server_active_requests` gauge of each [`METHOD_LABELS`] entry, created on first use (so /metrics
    /// only shows methods that were seen, plus GET and POST).
    active: [OnceLock<Gauge>; METHOD_LABELS.len()],
    /// `http_server_request_duration_seconds` handles by route, then method and status. Looking a series up in the
    /// recorder builds its key (a label list, owned route and status strings) and hashes it on every request, which
    /// profiling showed as a tenth of a `GET /helloworld`; this keeps a handle per series instead. Bounded like the
    /// labels: route templates, standard methods and the status codes the service returns.
    durations: RwLock<HashMap<String, Vec<DurationSeries>>>,
}

/// One `http_server_request_duration_seconds` series of a route: method label, status code, handle.
type DurationSeries = (&'static str, u16, Histogram);

impl Metrics {
    /// Creates the recorder, describes every metric and initialises the known label values, so that every series
    /// exists (counters at 0) before the first request.
    pub fn new(enabled: bool, version: &str, revision: &str) -> Self {
        let mut builder = PrometheusBuilder::new();
        for spec in CONTRACT {
            if let Some(buckets) = spec.buckets {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(spec.name.to_owned()), buckets)
                    .expect("bucket lists are non-empty");
            }
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let (cache_hit, cache_miss, cache_error, postgres_timeouts, redis_timeouts, fault_errors, fault_latency) =
            metrics::with_local_recorder(&recorder, || {
                for spec in CONTRACT.iter().filter(|s| !s.collected) {
                    match spec.kind {
                        MetricType::Counter => describe_counter!(spec.name, spec.help),
                        MetricType::Gauge | MetricType::Untyped => describe_gauge!(spec.name, spec.help),
                        MetricType::Histogram => describe_histogram!(spec.name, spec.help),
                    }
                }
                gauge!(APP_BUILD_INFO, "version" => version.to_owned(), "revision" => revision.to_owned()).set(1.0);
                for method in ["GET", "POST"] {
                    gauge!(HTTP_SERVER_ACTIVE_REQUESTS, "http_request_method" => method).set(0.0);
                }
                let zero = |c: Counter| {
                    c.increment(0);
                    c
                };
                (
                    zero(counter!(CACHE_REQUESTS_TOTAL, "result" => "hit")),
                    zero(counter!(CACHE_REQUESTS_TOTAL, "result" => "miss")),
                    zero(counter!(CACHE_REQUESTS_TOTAL, "result" => "error")),
                    zero(counter!(DB_CLIENT_CONNECTION_TIMEOUTS_TOTAL, "pool_name" => "postgres")),
                    zero(counter!(DB_CLIENT_CONNECTION_TIMEOUTS_TOTAL, "pool_name" => "redis")),
                    gauge!(APP_FAULT_INJECTION_ACTIVE, "kind" => FAULT_KINDS[0]),
                    gauge!(APP_FAULT_INJECTION_ACTIVE, "kind" => FAULT_KINDS[1]),
                )
            });
        // Every listener's series exist from the start, counters at 0.
        let listeners = metrics::with_local_recorder(&recorder, || ListenerName::ALL.map(ListenerMetrics::new));
        fault_errors.set(0.0);
        fault_latency.set(0.0);
        Metrics {
            inner: Arc::new(Inner {
                recorder,
                handle,
                enabled,
                cache_hit,
                cache_miss,
                cache_error,
                postgres_timeouts,
                redis_timeouts,
                fault_errors,
                fault_latency,
                listeners,
                active: Default::default(),
                durations: RwLock::default(),
            }),
        }
    }

    /// Whether request and client timings are recorded.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Counts one API request in flight until the returned guard is dropped (also when the client goes away).
    /// `method` is a [`method_label`].
    pub fn track_active_request(&self, method: &'static str) -> ActiveRequest {
        let index = METHOD_LABELS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHOD_LABELS.len() - 1);
        let gauge = self.inner.active[index].get_or_init(|| {
            metrics::with_local_recorder(
                &self.inner.recorder,
                || gauge!(HTTP_SERVER_ACTIVE_REQUESTS, "http_request_method" => METHOD_LABELS[index]),
            )
        });
        gauge.increment(1.0);
        ActiveRequest(gauge.clone())
    }

    /// Records one finished API request. `method` is a [`method_label`], `route` a route template.
    pub fn record_request(&self, method: &'static str, route: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let find = |series: &[DurationSeries]| series.iter().position(|(m, s, _)| *m == method && *s == status);
        if let Some(series) = read(&self.inner.durations).get(route) {
            if let Some(i) = find(series) {
                series[i].2.record(seconds);
                return;
            }
        }
        let mut durations = self.inner.durations.write().unwrap_or_else(|e| e.into_inner());
        let series = durations.entry(route.to_owned()).or_default();
        // Another thread may have added it between the two locks.
        let i = find(series).unwrap_or_else(|| {
            let histogram = metrics::with_local_recorder(&self.inner.recorder, || {
                histogram!(
                    HTTP_SERVER_REQUEST_DURATION_SECONDS,
                    "http_request_method" => method,
                    "http_route" => route.to_owned(),
                    "http_response_status_code" => status.to_string()
                )
            });
            series.push((method, status, histogram));
            series.len() - 1
        });
        series[i].2.record(seconds);
    }

    /// Counts one cache lookup.
    pub fn cache_lookup(&self, result: CacheResult) {
        match result {
            CacheResult::Hit => self.inner.cache_hit.increment(1),
            CacheResult::Miss => self.inner.cache_miss.increment(1),
            CacheResult::Error => self.inner.cache_error.increment(1),
        }
    }

    /// Records the duration of one Redis operation.
    pub fn cache_operation(&self, op: CacheOp, elapsed: Duration) {
        if !self.inner.enabled {
            return;
        }
        metrics::with_local_recorder(&self.inner.recorder, || {
            histogram!(CACHE_OPERATION_DURATION_SECONDS, "operation" => op.as_str()).record(elapsed.as_secs_f64());
        });
    }

    /// Records the duration and outcome of one Postgres operation.
    pub fn db_operation(&self, op: DbOp, ok: bool, elapsed: Duration) {
        if !self.inner.enabled {
            return;
        }
        let outcome = if ok { "ok" } else { "error" };
        metrics::with_local_recorder(&self.inner.recorder, || {
            histogram!(DB_CLIENT_OPERATION_DURATION_SECONDS, "db_operation_name" => op.as_str(), "outcome" => outcome)
                .record(elapsed.as_secs_f64());
        });
    }

    /// Counts an acquisition from a pool that timed out.
    pub fn pool_timeout(&self, pool: PoolName) {
        match pool {
            PoolName::Postgres => self.inner.postgres_timeouts.increment(1),
            PoolName::Redis => self.inner.redis_timeouts.increment(1),
        }
    }

    /// Sets a pool's capacity gauge.
    pub fn set_pool_max(&self, pool: PoolName, max: u32) {
        metrics::with_local_recorder(&self.inner.recorder, || {
            gauge!(DB_CLIENT_CONNECTION_MAX, "pool_name" => pool.as_str()).set(f64::from(max));
        });
    }

    /// The connection series of a listener.
    pub fn listener(&self, name: ListenerName) -> ListenerMetrics {
        let index = ListenerName::ALL
            .iter()
            .position(|l| *l == name)
            .expect("every listener is listed");
        self.inner.listeners[index].clone()
    }

    /// Sets the fault injection gauges.
    pub fn set_fault_active(&self, errors: bool, latency: bool) {
        self.inner.fault_errors.set(if errors { 1.0 } else { 0.0 });
        self.inner.fault_latency.set(if latency { 1.0 } else { 0.0 });
    }

    /// Renders everything the recorder holds as Prometheus text (collected families are appended by the caller).
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }

    /// Drains recorded histogram samples into their buckets; run periodically so that memory stays bounded when
    /// nobody scrapes.
    pub fn run_upkeep(&self) {
        self.inner.handle.run_upkeep();
    }
}

/// Decrements [`HTTP_SERVER_ACTIVE_REQUESTS`] when dropped.
pub struct ActiveRequest(Gauge);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // The maps hold only handles; a panic elsewhere cannot leave them inconsistent.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// Every value of the `http_request_method` label; `_OTHER` last.
pub const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "_OTHER",
];

/// The `http_request_method` label: the standard methods by name, anything else as `_OTHER`, so that a client
/// cannot create series by inventing methods.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_unique_and_counters_end_in_total() {
        let mut names: Vec<_> = CONTRACT.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CONTRACT.len());
        for spec in CONTRACT {
            assert_eq!(
                spec.kind == MetricType::Counter,
                spec.name.ends_with("_total"),
                "{}",
                spec.name
            );
            assert_eq!(
                spec.kind == MetricType::Histogram,
                spec.buckets.is_some(),
                "{}",
                spec.name
            );
            assert!(spec.help.ends_with('.'), "{}", spec.name);
        }
    }

    #[test]
    fn a_fresh_recorder_already_exports_the_known_series() {
        let metrics = Metrics::new(true, "1.2.3", "abc");
        let text = metrics.render();
        for line in [
            r#"cache_requests_total{result="hit"} 0"#,
            r#"cache_requests_total{result="miss"} 0"#,
            r#"cache_requests_total{result="error"} 0"#,
            r#"db_client_connection_timeouts_total{pool_name="postgres"} 0"#,
            r#"db_client_connection_timeouts_total{pool_name="redis"} 0"#,
            r#"app_fault_injection_active{kind="errors"} 0"#,
            r#"app_fault_injection_active{kind="latency"} 0"#,
            r#"app_build_info{version="1.2.3",revision="abc"} 1"#,
            r#"http_server_open_connections{listener="api"} 0"#,
            r#"http_server_rejected_connections_total{listener="api"} 0"#,
            r#"http_server_rejected_requests_total{listener="api",reason="header_too_large"} 0"#,
            r#"http_server_rejected_requests_total{listener="admin",reason="header_timeout"} 0"#,
            r#"http_server_idle_timeouts_total{listener="admin"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn request_latency_is_a_histogram_with_the_contract_buckets() {
        let metrics = Metrics::new(true, "1", "r");
        metrics.record_request("GET", "/get/{key}", 200, Duration::from_millis(3));
        let text = metrics.render();
        assert!(
            text.contains("# TYPE http_server_request_duration_seconds histogram"),
            "{text}"
        );
        for le in ["0.0005", "0.25", "10", "+Inf"] {
            let bucket = format!(
                r#"http_server_request_duration_seconds_bucket{{http_request_method="GET",http_route="/get/{{key}}",http_response_status_code="200",le="{le}"}}"#
            );
            assert!(text.contains(&bucket), "missing {bucket} in\n{text}");
        }
    }

    #[test]
    fn unknown_methods_share_one_label_value() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "_OTHER");
        for label in METHOD_LABELS.iter().filter(|l| **l != "_OTHER") {
            assert_eq!(method_label(&Method::from_bytes(label.as_bytes()).unwrap()), *label);
        }
    }

    #[test]
    fn each_request_lands_in_its_own_series_however_often_it_repeats() {
        let metrics = Metrics::new(true, "1", "r");
        for _ in 0..3 {
            metrics.record_request("GET", "/get/{key}", 200, Duration::from_millis(1));
        }
        metrics.record_request("GET", "/get/{key}", 404, Duration::from_millis(1));
        metrics.record_request("POST", "/set", 200, Duration::from_millis(1));
        let text = metrics.render();
        for (labels, count) in [
            (
                r#"http_request_method="GET",http_route="/get/{key}",http_response_status_code="200""#,
                3,
            ),
            (
                r#"http_request_method="GET",http_route="/get/{key}",http_response_status_code="404""#,
                1,
            ),
            (
                r#"http_request_method="POST",http_route="/set",http_response_status_code="200""#,
                1,
            ),
        ] {
            let line = format!("http_server_request_duration_seconds_count{{{labels}}} {count}");
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn the_active_request_gauge_of_a_method_appears_once_it_is_used() {
        let metrics = Metrics::new(true, "1", "r");
        let line = r#"http_server_active_requests{http_request_method="DELETE"}"#;
        assert!(!metrics.render().contains(line));
        drop(metrics.track_active_request("DELETE"));
        assert!(metrics.render().contains(&format!("{line} 0")));
    }

    #[test]
    fn a_listeners_series_count_its_connections_and_rejections() {
        let metrics = Metrics::new(true, "1", "r");
        let api = metrics.listener(ListenerName::Api);
        api.set_max(8);
        api.connection_opened();
        api.connection_opened();
        api.connection_closed();
        api.connection_rejected();
        api.request_rejected(RejectReason::UriTooLong);
        api.idle_timeout();
        let text = metrics.render();
        for line in [
            r#"http_server_connection_max{listener="api"} 8"#,
            r#"http_server_open_connections{listener="api"} 1"#,
            r#"http_server_rejected_connections_total{listener="api"} 1"#,
            r#"http_server_rejected_requests_total{listener="api",reason="uri_too_long"} 1"#,
            r#"http_server_rejected_requests_total{listener="api",reason="malformed"} 0"#,
            r#"http_server_idle_timeouts_total{listener="api"} 1"#,
            r#"http_server_open_connections{listener="admin"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn the_active_request_gauge_goes_back_down_when_the_guard_drops() {
        let metrics = Metrics::new(true, "1", "r");
        let guard = metrics.track_active_request("GET");
        assert!(metrics
            .render()
            .contains(r#"http_server_active_requests{http_request_method="GET"} 1"#));
        drop(guard);
        assert!(metrics
            .render()
            .contains(r#"http_server_active_requests{http_request_method="GET"} 0"#));
    }
}
