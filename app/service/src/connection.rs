//! Serving connections: each listener's accept loop with its bound on open connections, and the life of one
//! HTTP/1.1 connection under hyper, with idle, header-read, body-read and write timeouts, our own limits on a
//! request's head, and a count of every request rejected before it reached the router or cut off on its way.
//!
//! Why not `axum::serve`: it has no timeout, no bound and no view of hyper's errors. Idle or trickling clients held
//! file descriptors until the process ran out, and then neither listener accepted anything (Prometheus lost the
//! target); requests hyper rejected left no trace.
//!
//! **Timeouts.** hyper's own `header_read_timeout` starts when hyper begins waiting for a head, so it also closes
//! silent and idle keep-alive connections, after the same duration (checked with hyper 1.12: a 1 s timeout closed
//! an idle keep-alive connection after 1 s, as a header timeout). One value cannot be both a short limit on a slow
//! head and a longer one on a quiet client, so it is off and each connection keeps its own [`Clock`]:
//! - *idle*, from the accept or the end of the previous response until a byte of the next request arrives: after
//!   `idle_timeout` the connection is closed without an answer (nothing was asked) and counted;
//! - *head*, from that byte until hyper has parsed the head: after `header_read_timeout` the client gets a JSON 408
//!   and is disconnected, counted as `header_timeout`;
//! - *busy* while a request is served. The handler's own work is not timed here: it is bounded by its own
//!   timeouts (`APP_DB_QUERY_TIMEOUT_MS`, `APP_REDIS_TIMEOUT_MS`, …), and cutting it off from outside would fail
//!   requests that are only slow. What the client controls is timed:
//!   - *body*, from the end of the head until the body has been read to its end (or dropped unread): after
//!     `body_read_timeout` the client gets a JSON 408 if no answer has started, and is disconnected, counted as
//!     `body_timeout`. A total, not a limit between two bytes, so a trickle of one byte a second is cut off too;
//!     bodies are small (`APP_MAX_BODY_BYTES`), so 10 s asks for a few KB/s at most.
//! - *write*, in any phase, from a write that the socket would not take (the client is not reading and the
//!   buffers between us are full) until everything pending has been handed to the kernel: after `write_timeout`
//!   the connection is reset, counted as `write_timeout`. A reset rather than a close, so that the kernel does not
//!   keep the undelivered data, and keep retrying it, for a client that has shown it does not read. Timed from the
//!   first blocked write, not between writes, so a client that reads a few bytes now and then does not hold the
//!   connection either; a response the socket buffers take whole never blocks, and the connection then waits for
//!   its next request under the idle timeout.
//!
//! So a connection is busy for at most the body timeout, plus the handler's own bounded work, plus the write
//! timeout; a client can no longer keep one, and with enough of them the bound, forever. Graceful shutdown is not
//! changed: it waits for requests being served, which these timeouts now also bound.
//!
//! Until a new connection's first bytes arrive it is not handed to hyper at all: hyper allocates its read buffer
//! (8 KiB and up) on its first read, and a connection that never sends anything should cost less than that.
//!
//! **The bound.** A listener keeps at most `max_connections` open (a semaphore; each connection holds a permit to
//! its end). One more is *refused*, not admitted by shedding another: the open ones are either serving a request
//! (closing one would fail it) or idle, and idle ones go after the idle timeout anyway, while the newcomer gets a
//! clear answer at once: `503 {"status":"error",…}` with `Connection: close` and `Retry-After: 1`, then a close that
//! waits briefly for the client to stop sending (a close with unread data resets the connection, and a client that
//! receives the reset may drop the answer). Refusals are counted and logged at most once per [`WARN_INTERVAL`], with
//! the number since the last warning. The admin listener runs the same loop with its own small bound
//! ([`ADMIN_MAX_CONNECTIONS`]), so no number of API connections keeps `/metrics` from answering, as long as the
//! file-descriptor limit leaves room for both ([`fd_budget`]).
//!
//! **Rejected requests.** A head larger than `max_header_bytes` or a target longer than `max_uri_bytes` gets a JSON
//! 431 or 414 with an `x-request-id` and a request log line, answered here before routing. hyper's own limit on a
//! head is set above them ([`hyper_head_limit`]), so only what hyper cannot parse gets hyper's bodyless answer: a
//! malformed head (400), a head over that limit or with more than 100 fields (431); those are counted from the
//! error hyper returns, and logged in the same once-per-interval way.
//!
//! **Memory.** glibc keeps the memory freed by closed connections for reuse instead of returning it to the OS, so a
//! burst of connections left the process that much larger for good. After a burst (the API listener's open count
//! fell by [`TRIM_AFTER_CLOSED`] from its peak) the free memory is handed back with `malloc_trim`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::future::RouteFuture;
use axum::serve::Listener;
use axum::{Json, Router};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tower_service::Service as _;

use crate::config::Config;
use crate::error::Message;
use crate::telemetry::http::{request_id_for, REQUEST_ID_HEADER, UNMATCHED_ROUTE};
use crate::telemetry::metrics::{method_label, ListenerMetrics, ListenerName, RejectReason};
use crate::telemetry::request_log::{self, RequestLine};

/// Connections the admin listener keeps open at once: Prometheus holds one, operators and the game day a few.
pub const ADMIN_MAX_CONNECTIONS: usize = 32;

/// Refused connections that may be closing slowly at once per listener (each holds a descriptor for up to
/// [`LINGER`]); beyond them a refusal is answered and closed at once.
const LINGERING_MAX: usize = 32;

/// How long a refused or timed-out connection gets to take its answer and stop sending before it is closed.
const LINGER: Duration = Duration::from_secs(1);

/// At most one warning per kind (refusals, each rejection reason, accept errors) per listener per interval.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Connections that must have closed since the API listener's peak before free memory is handed back to the OS:
/// trimming costs a few milliseconds of a blocking thread, worth it only after a burst.
const TRIM_AFTER_CLOSED: usize = 256;

/// How a listener serves its connections.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The `listener` label of its metrics.
    pub name: ListenerName,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest a request head may take from its first byte.
    pub header_read_timeout: Duration,
    /// Longest a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Longest a request body may take, from the end of its head.
    pub body_read_timeout: Duration,
    /// Longest pending output may stay undelivered once a write blocks.
    pub write_timeout: Duration,
    /// Largest header section (`name: value` lines) answered by the router.
    pub max_header_bytes: usize,
    /// Longest request target answered by the router.
    pub max_uri_bytes: usize,
}

impl ServeSettings {
    /// The API listener's settings.
    pub fn api(config: &Config) -> Self {
        ServeSettings {
            name: ListenerName::Api,
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            body_read_timeout: config.body_read_timeout,
            write_timeout: config.write_timeout,
            max_header_bytes: config.max_header_bytes,
            max_uri_bytes: config.max_uri_bytes,
        }
    }

    /// The admin listener's: the API's timeouts and limits, its own bound.
    pub fn admin(config: &Config) -> Self {
        ServeSettings {
            name: ListenerName::Admin,
            max_connections: ADMIN_MAX_CONNECTIONS,
            ..ServeSettings::api(config)
        }
    }
}

/// hyper's limit on a request head (its read buffer): twice our two limits together, so that a head over ours
/// still reaches us and gets our JSON answer; at least hyper's minimum of 8 KiB.
pub fn hyper_head_limit(settings: &ServeSettings) -> usize {
    (2 * (settings.max_header_bytes + settings.max_uri_bytes)).max(8192)
}

/// File descriptors the process needs: every connection both listeners may hold, the refusals that may be
/// lingering, the pools, and some for the listeners, the runtime, stdio and `/proc` reads.
pub fn fd_budget(config: &Config) -> u64 {
    let connections = config.max_connections + ADMIN_MAX_CONNECTIONS + 2 * LINGERING_MAX;
    let pools = config.db_pool_max_size + config.redis_pool_max_size;
    connections as u64 + u64::from(pools) + 32
}

/// The process's limit on open files after [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The soft limit before, if it was raised.
    pub raised_from: Option<u64>,
}

/// Raises the soft limit on open files to `needed` when it is lower and the hard limit allows (the soft limit is
/// often 1024 while the hard one is far higher). `Err` carries the limit in force when even the hard limit is lower:
/// connections beyond it fail at accept.
pub fn raise_fd_limit(needed: u64) -> Result<FdLimit, FdLimit> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given, nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return Err(FdLimit {
                soft: 0,
                raised_from: None,
            });
        }
        // rlim_t is u64 on Linux, not on every unix.
        #[allow(clippy::useless_conversion)]
        let (soft, hard) = (u64::from(limit.rlim_cur), u64::from(limit.rlim_max));
        if soft >= needed {
            return Ok(FdLimit {
                soft,
                raised_from: None,
            });
        }
        let target = needed.min(hard);
        let raised = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        let now = if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            target
        } else {
            soft
        };
        let result = FdLimit {
            soft: now,
            raised_from: (now != soft).then_some(soft),
        };
        if now >= needed {
            Ok(result)
        } else {
            Err(result)
        }
    }
    #[cfg(not(unix))]
    {
        Ok(FdLimit {
            soft: needed,
            raised_from: None,
        })
    }
}

/// Serves `listener` with `router` until `stop` completes; then stops accepting, asks every connection to finish
/// its request and close, and returns once all have (the caller bounds that wait with the shutdown timeout).
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    settings: ServeSettings,
    metrics: ListenerMetrics,
    stop: impl Future<Output = ()>,
) -> io::Result<()>
where
    L: Listener<Io = TcpStream>,
{
    let max = settings.max_connections;
    metrics.set_max(max);
    let shared = Arc::new(Listening::new(router, settings, metrics));
    let permits = Arc::new(Semaphore::new(max));
    let (close_tx, close_rx) = watch::channel(false);
    let mut tick = tokio::time::interval(WARN_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut trim = MemoryTrim::default();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            (stream, _) = listener.accept() => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    trim.opened(max - permits.available_permits());
                    tokio::spawn(serve_connection(stream, permit, shared.clone(), close_rx.clone()));
                }
                Err(_) => shared.refuse(stream),
            },
            _ = tick.tick() => {
                shared.flush_warnings();
                if shared.settings.name == ListenerName::Api {
                    trim.tick(max - permits.available_permits());
                }
            }
            () = &mut stop => break,
        }
    }
    // Closes the listening socket now, as axum::serve did: nothing more is accepted while connections finish.
    drop(listener);
    let _ = close_tx.send(true);
    // Each connection holds a permit until it ends: once all are back, every connection is closed.
    let _ = permits.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)).await;
    Ok(())
}

/// What every connection of a listener shares.
struct Listening {
    settings: ServeSettings,
    metrics: ListenerMetrics,
    router: Router,
    /// hyper's settings for a connection, and the same without keep-alive (for one served during shutdown).
    http: http1::Builder,
    http_once: http1::Builder,
    lingering: Arc<Semaphore>,
    refusal: Vec<u8>,
    refused: Throttle,
    /// Rejections answered by hyper or unanswered, by reason (in the order of [`RejectReason::ALL`]).
    rejected: [Throttle; RejectReason::ALL.len()],
}

impl Listening {
    fn new(router: Router, settings: ServeSettings, metrics: ListenerMetrics) -> Self {
        let mut http = http1::Builder::new();
        // Our clock times the head and the idle wait (see the module's documentation); hyper's limit on a head
        // sits above ours.
        http.header_read_timeout(None).max_buf_size(hyper_head_limit(&settings));
        let mut http_once = http.clone();
        http_once.keep_alive(false);
        Listening {
            // Routes are built once here rather than per connection.
            router: router.with_state(()),
            http,
            http_once,
            lingering: Arc::new(Semaphore::new(LINGERING_MAX)),
            refusal: raw_answer(
                "503 Service Unavailable",
                "too many open connections; retry later",
                None,
                "retry-after: 1\r\n",
            ),
            refused: Throttle::new(WARN_INTERVAL),
            rejected: RejectReason::ALL.map(|_| Throttle::new(WARN_INTERVAL)),
            settings,
            metrics,
        }
    }

    /// Answers a connection over the bound with a 503 and closes it; counts and (at most once per interval) logs it.
    fn refuse(&self, stream: TcpStream) {
        self.metrics.connection_rejected();
        if let Some(refused) = self.refused.record(Instant::now()) {
            self.warn_refused(refused);
        }
        match self.lingering.clone().try_acquire_owned() {
            Ok(permit) => {
                let answer = self.refusal.clone();
                tokio::spawn(async move {
                    answer_and_close(stream, &answer).await;
                    drop(permit);
                });
            }
            // Many refusals at once: no waiting for their clients, but still the answer.
            Err(_) => answer_now_and_close(&stream, &self.refusal),
        }
    }

    fn warn_refused(&self, refused: u64) {
        tracing::warn!(
            listener = self.settings.name.as_str(),
            refused,
            max_connections = self.settings.max_connections,
            "connection limit reached: {refused} connection(s) refused with 503 since the last warning"
        );
    }

    /// Counts a rejection that has no request log line (hyper's answer, a header timeout), logging at most once per
    /// interval per reason.
    fn count_unlogged_rejection(&self, reason: RejectReason) {
        self.metrics.request_rejected(reason);
        if let Some(rejected) = self.throttle(reason).record(Instant::now()) {
            self.warn_rejected(reason, rejected);
        }
    }

    fn throttle(&self, reason: RejectReason) -> &Throttle {
        let index = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every reason is listed");
        &self.rejected[index]
    }

    fn warn_rejected(&self, reason: RejectReason, rejected: u64) {
        tracing::warn!(
            listener = self.settings.name.as_str(),
            reason = reason.as_str(),
            rejected,
            "{rejected} request(s) rejected before routing ({}) since the last warning",
            reason.as_str()
        );
    }

    /// Logs what was counted but not logged yet, once its interval has passed.
    fn flush_warnings(&self) {
        let now = Instant::now();
        if let Some(refused) = self.refused.flush(now) {
            self.warn_refused(refused);
        }
        for reason in RejectReason::ALL {
            if let Some(rejected) = self.throttle(reason).flush(now) {
                self.warn_rejected(reason, rejected);
            }
        }
    }

    /// Counts what hyper's error says about the request it could not take.
    fn connection_failed(&self, error: &hyper::Error) {
        let reason = if error.is_parse_too_large() {
            RejectReason::HeaderTooLarge
        } else if error.is_parse() {
            RejectReason::Malformed
        } else if error.is_timeout() {
            RejectReason::HeaderTimeout
        } else {
            // The client went away mid-request, or the socket failed: nothing to answer, nothing rejected.
            tracing::debug!(listener = self.settings.name.as_str(), error = %error, "connection ended with an error");
            return;
        };
        self.count_unlogged_rejection(reason);
    }

    /// The rejection of a request whose head is over our limits, if it is.
    fn check_head(&self, request: &Request<Incoming>) -> Option<(RejectReason, StatusCode, String)> {
        let target = uri_len(request.uri());
        if target > self.settings.max_uri_bytes {
            return Some((
                RejectReason::UriTooLong,
                StatusCode::URI_TOO_LONG,
                format!("request target is longer than {} bytes", self.settings.max_uri_bytes),
            ));
        }
        if header_bytes(request) > self.settings.max_header_bytes {
            return Some((
                RejectReason::HeaderTooLarge,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "request header fields are larger than {} bytes",
                    self.settings.max_header_bytes
                ),
            ));
        }
        None
    }

    /// Answers a rejected request as the router answers errors (JSON, `x-request-id`, a request log line), and
    /// counts it.
    fn reject(
        &self,
        request: &Request<Incoming>,
        (reason, status, message): (RejectReason, StatusCode, String),
        started: std::time::Instant,
    ) -> Response<Body> {
        self.metrics.request_rejected(reason);
        let request_id = request_id_for(request.headers());
        request_log::log(&RequestLine {
            // Bounded, like the metrics' label: the method of a rejected request may be any token.
            method: method_label(request.method()),
            route: UNMATCHED_ROUTE,
            status: status.as_u16(),
            latency: started.elapsed(),
            request_id: request_id.to_str().unwrap_or_default(),
        });
        let mut response = (
            status,
            Json(Message {
                status: "error",
                message,
            }),
        )
            .into_response();
        response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
        response
    }
}

/// The length of a request target as the client sent it: the path and query, or the absolute form.
fn uri_len(uri: &Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len())
}

/// The size of a request's header section as sent: `name: value\r\n` per field.
fn header_bytes<B>(request: &Request<B>) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// A complete HTTP/1.1 answer with a JSON error body, written by hand where no router or hyper answers: at the
/// bound and after a header timeout.
fn raw_answer(status_line: &str, message: &str, request_id: Option<&HeaderValue>, extra_headers: &str) -> Vec<u8> {
    let body = serde_json::to_string(&Message {
        status: "error",
        message: message.to_owned(),
    })
    .expect("a message serialises");
    let mut head = format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\
         {extra_headers}",
        body.len()
    );
    if let Some(id) = request_id.and_then(|id| id.to_str().ok()) {
        let _ = write!(head, "{REQUEST_ID_HEADER}: {id}\r\n");
    }
    head.push_str("\r\n");
    head.push_str(&body);
    head.into_bytes()
}

/// Writes `answer`, ends the sending side, then reads and discards what the client still sends until it closes
/// or [`LINGER`] has passed: closing a socket with unread data resets the connection, and a client that receives
/// the reset before it has read the answer may never see it.
async fn answer_and_close(mut stream: TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(LINGER, async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// [`answer_and_close`] without waiting: reads what has already arrived (so the close is less likely to reset),
/// writes the answer if the socket takes it at once (a fresh socket does), ends the sending side and closes. Plain
/// non-blocking calls on the socket, outside the runtime's readiness bookkeeping: the socket is dropped next.
fn answer_now_and_close(stream: &TcpStream, answer: &[u8]) {
    let socket = socket2::SockRef::from(stream);
    let mut sink = [MaybeUninit::<u8>::uninit(); 4096];
    while matches!(socket.recv(&mut sink), Ok(n) if n > 0) {}
    let _ = socket.send(answer);
    let _ = socket.shutdown(std::net::Shutdown::Write);
}

/// Whether the client has sent bytes not read yet (without reading them).
fn has_pending_bytes(stream: &TcpStream) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(stream).peek(&mut byte), Ok(n) if n > 0)
}

/// Counts one open connection of a listener while it lives, and holds its permit.
struct OpenConnection {
    metrics: ListenerMetrics,
    _permit: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(metrics: &ListenerMetrics, permit: OwnedSemaphorePermit) -> Self {
        metrics.connection_opened();
        OpenConnection {
            metrics: metrics.clone(),
            _permit: permit,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// One connection, from accept to close.
async fn serve_connection(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    shared: Arc<Listening>,
    mut close: watch::Receiver<bool>,
) {
    let _open = OpenConnection::new(&shared.metrics, permit);
    // A peek, not `readable()`: the runtime reports a fresh socket readable before anything has arrived.
    let mut first = [0u8; 1];
    let keep_alive = tokio::select! {
        peeked = stream.peek(&mut first) => {
            if peeked.is_err() {
                return;
            }
            // Bytes, or the client's close (0), which hyper then reads as the end of the connection.
            true
        }
        () = tokio::time::sleep(shared.settings.idle_timeout) => {
            shared.metrics.idle_timeout();
            return;
        }
        _ = close.wait_for(|closing| *closing) => {
            // Shutting down: a request that has already arrived is served, alone; a connection without one is
            // closed now (hyper's graceful shutdown would close it too, but also one whose request it has not read).
            if !has_pending_bytes(&stream) {
                return;
            }
            false
        }
    };
    // Boxed: the wait above is all that a connection which never sends anything costs, so its task stays small.
    Box::pin(serve_http(stream, shared, close, keep_alive)).await;
}

/// The connection under hyper, once its first bytes have arrived.
async fn serve_http(stream: TcpStream, shared: Arc<Listening>, mut close: watch::Receiver<bool>, keep_alive: bool) {
    let clock = Arc::new(Clock::head_started(Instant::now()));
    let io = TokioIo::new(ClockedStream {
        inner: stream,
        clock: clock.clone(),
    });
    let service = ConnectionService {
        shared: shared.clone(),
        clock: clock.clone(),
    };
    let http = if keep_alive { &shared.http } else { &shared.http_once };
    let watched = Watched {
        conn: Some(http.serve_connection(io, service)),
        clock: clock.clone(),
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        close: Box::pin(async move {
            let _ = close.wait_for(|closing| *closing).await;
        }),
        // Without keep-alive hyper closes after the one request; a graceful shutdown now would close it unread.
        closing: !keep_alive,
        timeouts: Timeouts::of(&shared.settings),
    };
    match watched.await {
        Outcome::Finished(Ok(())) => {}
        Outcome::Finished(Err(error)) => shared.connection_failed(&error),
        Outcome::IdleTimeout => shared.metrics.idle_timeout(),
        Outcome::HeaderTimeout(conn) => {
            shared.count_unlogged_rejection(RejectReason::HeaderTimeout);
            // Nothing was written on a connection still reading a head: the socket is ours to answer on.
            let stream = conn.into_parts().io.into_inner().inner;
            let id = crate::telemetry::http::request_id_for(&Default::default());
            let message = format!(
                "request head not received within {} ms",
                shared.settings.header_read_timeout.as_millis()
            );
            answer_and_close(stream, &raw_answer("408 Request Timeout", &message, Some(&id), "")).await;
        }
        Outcome::BodyTimeout(conn) => {
            shared.count_unlogged_rejection(RejectReason::BodyTimeout);
            // Read before the connection goes: dropping it drops the request's body, which updates the clock.
            let (clean, client_id) = clock.request_answer();
            let stream = conn.into_parts().io.into_inner().inner;
            if !clean {
                // Part of an answer may be written, or still pending: nothing more can be said on this connection.
                return;
            }
            // No answer handed to hyper, nothing of a previous one pending: the socket is ours to answer on.
            let mut headers = axum::http::HeaderMap::new();
            if let Some(id) = client_id {
                headers.insert(REQUEST_ID_HEADER, id);
            }
            let id = request_id_for(&headers);
            let message = format!(
                "request body not received within {} ms",
                shared.settings.body_read_timeout.as_millis()
            );
            answer_and_close(stream, &raw_answer("408 Request Timeout", &message, Some(&id), "")).await;
        }
        Outcome::WriteTimeout(conn) => {
            shared.count_unlogged_rejection(RejectReason::WriteTimeout);
            let stream = conn.into_parts().io.into_inner().inner;
            // A reset: a plain close would leave the undelivered data with the kernel, retried for minutes.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
    }
}

type Connection = http1::Connection<TokioIo<ClockedStream>, ConnectionService>;

/// How a connection under hyper ended.
enum Outcome {
    /// hyper finished: the client closed, a request without keep-alive was answered, shutdown, or an error.
    Finished(Result<(), hyper::Error>),
    /// No request came within the idle timeout.
    IdleTimeout,
    /// A head did not arrive within the header read timeout; the connection is handed back to answer it.
    HeaderTimeout(Box<Connection>),
    /// A request body did not arrive within the body read timeout; the connection is handed back to answer it.
    BodyTimeout(Box<Connection>),
    /// Output stayed undelivered for the write timeout; the connection is handed back to reset it.
    WriteTimeout(Box<Connection>),
}

/// The timeouts of a connection, from its listener's settings.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
    body_read: Duration,
    write: Duration,
}

impl Timeouts {
    fn of(settings: &ServeSettings) -> Self {
        Timeouts {
            header_read: settings.header_read_timeout,
            idle: settings.idle_timeout,
            body_read: settings.body_read_timeout,
            write: settings.write_timeout,
        }
    }
}

/// A hyper connection with our timeouts and the listener's shutdown signal.
struct Watched {
    conn: Option<Connection>,
    clock: Arc<Clock>,
    timer: Pin<Box<Sleep>>,
    close: Pin<Box<dyn Future<Output = ()> + Send>>,
    closing: bool,
    timeouts: Timeouts,
}

impl Future for Watched {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = &mut *self;
        let conn = this.conn.as_mut().expect("polled after completion");
        if let Poll::Ready(result) = Pin::new(&mut *conn).poll(cx) {
            this.conn = None;
            return Poll::Ready(Outcome::Finished(result));
        }
        // hyper is polled first, so that a request whose bytes have arrived is read before shutdown is asked:
        // hyper closes a connection it has read nothing from at once.
        if !this.closing && this.close.as_mut().poll(cx).is_ready() {
            this.closing = true;
            Pin::new(&mut *conn).graceful_shutdown();
            if let Poll::Ready(result) = Pin::new(&mut *conn).poll(cx) {
                this.conn = None;
                return Poll::Ready(Outcome::Finished(result));
            }
        }
        // hyper waits, for the client or for a request being served. The clock changes only while hyper is polled
        // (reads, writes, requests starting and finishing, bodies read, all happen inside), so the deadline is
        // current here.
        let Some((deadline, phase)) = this.clock.deadline(&this.timeouts) else {
            return Poll::Pending;
        };
        if this.timer.deadline() != deadline {
            this.timer.as_mut().reset(deadline);
        }
        ready!(this.timer.as_mut().poll(cx));
        let conn = this.conn.take().expect("checked above");
        Poll::Ready(match phase {
            Phase::Idle => Outcome::IdleTimeout,
            Phase::Head => Outcome::HeaderTimeout(Box::new(conn)),
            Phase::Body => Outcome::BodyTimeout(Box::new(conn)),
            Phase::Write => Outcome::WriteTimeout(Box::new(conn)),
        })
    }
}

/// What a connection waits for, when it waits for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The first byte of a request.
    Idle,
    /// The rest of a request head.
    Head,
    /// The rest of a request body, while the request is served.
    Body,
    /// The client to take what was written to it.
    Write,
}

/// Where one connection is in its requests: waiting for the client since when, or serving one, and whether its
/// output is stuck (see the module's documentation). Updated from the connection's own task only, so the lock is
/// never contended.
#[derive(Debug)]
struct Clock(Mutex<ClockState>);

#[derive(Debug)]
struct ClockState {
    /// Requests being served (hyper serves one at a time; a count keeps the bookkeeping simple).
    in_flight: u32,
    /// When the current wait began: the end of the last response, or the first byte of a head.
    since: Instant,
    /// Whether bytes of the next head have arrived.
    head: bool,
    /// Requests started so far: tells a late end of one request's body from the current one's.
    requests: u64,
    /// While the current request's body is unread: since when (the end of its head).
    body_since: Option<Instant>,
    /// Whether the current request's answer has been handed to hyper.
    responding: bool,
    /// The `x-request-id` the client sent with the current request, for an answer given here.
    client_id: Option<HeaderValue>,
    /// Since when a write has been waiting for the client, until all pending output is with the kernel.
    write_blocked: Option<Instant>,
}

impl Clock {
    /// A connection whose first bytes are there: reading a head since `now`.
    fn head_started(now: Instant) -> Self {
        Clock(Mutex::new(ClockState {
            in_flight: 0,
            since: now,
            head: true,
            requests: 0,
            body_since: None,
            responding: false,
            client_id: None,
            write_blocked: None,
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClockState> {
        // Plain fields: a panic elsewhere cannot leave them inconsistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: a waiting connection starts reading a head.
    fn bytes_read(&self, now: Instant) {
        let mut state = self.state();
        if state.in_flight == 0 && !state.head {
            state.head = true;
            state.since = now;
        }
    }

    /// hyper handed over a parsed head at `now`, with a body to read or not; returns the request's number, for
    /// [`Clock::body_finished`].
    fn request_started(&self, now: Instant, has_body: bool, client_id: Option<HeaderValue>) -> u64 {
        let mut state = self.state();
        state.in_flight += 1;
        state.requests += 1;
        state.body_since = has_body.then_some(now);
        state.responding = false;
        state.client_id = client_id;
        state.requests
    }

    /// Request `request`'s body was read to its end, or dropped.
    fn body_finished(&self, request: u64) {
        let mut state = self.state();
        if state.requests == request {
            state.body_since = None;
        }
    }

    /// The current request's answer is with hyper, which may start writing it.
    fn response_started(&self) {
        self.state().responding = true;
    }

    /// Whether an answer may be written on the socket (no answer to the current request has started, no output
    /// is pending), and the request id its client sent.
    fn request_answer(&self) -> (bool, Option<HeaderValue>) {
        let mut state = self.state();
        let clean = !state.responding && state.write_blocked.is_none();
        (clean, state.client_id.take())
    }

    /// The response is written (its body dropped by hyper): the connection waits for the next request.
    fn request_finished(&self, now: Instant) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.head = false;
            state.since = now;
            state.body_since = None;
            state.client_id = None;
        }
    }

    /// The socket would not take a write: the client is not reading, and the buffers between us are full.
    fn write_blocked(&self, now: Instant) {
        self.state().write_blocked.get_or_insert(now);
    }

    /// Everything pending has been handed to the kernel.
    fn write_done(&self) {
        self.state().write_blocked = None;
    }

    /// When the connection times out, and which wait does; `None` while a request is served with nothing of the
    /// client's to wait for.
    fn deadline(&self, timeouts: &Timeouts) -> Option<(Instant, Phase)> {
        let state = self.state();
        let waiting = match (state.in_flight, state.head, state.body_since) {
            (0, true, _) => Some((state.since + timeouts.header_read, Phase::Head)),
            (0, false, _) => Some((state.since + timeouts.idle, Phase::Idle)),
            (_, _, Some(since)) => Some((since + timeouts.body_read, Phase::Body)),
            _ => None,
        };
        let writing = state.write_blocked.map(|since| (since + timeouts.write, Phase::Write));
        match (waiting, writing) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// The socket, telling the clock when bytes arrive.
struct ClockedStream {
    inner: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for ClockedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.clock.bytes_read(Instant::now());
        }
        Poll::Ready(result)
    }
}

impl ClockedStream {
    /// Tells the clock how a write of `offered` bytes went. hyper offers all it holds (or as many slices as a
    /// vectored write takes) and calls `poll_flush` only once its buffer is empty, so a write that took everything,
    /// or a flush that completed, means nothing is pending; a write that would block means the client is not
    /// reading.
    fn track_write(&self, result: &Poll<io::Result<usize>>, offered: usize) {
        match result {
            Poll::Pending => self.clock.write_blocked(Instant::now()),
            Poll::Ready(Ok(n)) if *n == offered => self.clock.write_done(),
            Poll::Ready(_) => {}
        }
    }
}

impl AsyncWrite for ClockedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track_write(&result, buf.len());
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track_write(&result, bufs.iter().map(|b| b.len()).sum());
        result
    }

    fn is_write_vectored(&self) -> bool {
        // hyper writes a response head and body in one call when the socket takes vectors.
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        self.clock.write_done();
        Poll::Ready(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router behind one connection: checks each head against our limits, keeps the clock busy from the parsed
/// head until hyper has written the response, and times the request's body.
struct ConnectionService {
    shared: Arc<Listening>,
    clock: Arc<Clock>,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<ClockedBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        // Known from the head: no content-length, or 0, and not chunked.
        let has_body = !request.body().is_end_stream();
        let client_id = has_body
            .then(|| request.headers().get(REQUEST_ID_HEADER).cloned())
            .flatten();
        let (busy, number) = Busy::new(self.clock.clone(), has_body, client_id);
        if let Some(rejection) = self.shared.check_head(&request) {
            // Its body goes unread (dropped with the request): nothing to wait for from the client.
            self.clock.body_finished(number);
            let response = self.shared.reject(&request, rejection, std::time::Instant::now());
            return ResponseFuture::Answered(Some(ClockedBody::wrap(response, busy)));
        }
        let clock = self.clock.clone();
        let request = request.map(|inner| TimedBody {
            inner,
            clock,
            number,
            finished: !has_body,
        });
        let mut router = self.shared.router.clone();
        ResponseFuture::Routed {
            future: router.call(request),
            busy: Some(busy),
        }
    }
}

/// The response of [`ConnectionService`].
enum ResponseFuture {
    /// Answered before routing.
    Answered(Option<Response<ClockedBody>>),
    /// The router's answer, to come.
    Routed {
        future: RouteFuture<Infallible>,
        busy: Option<Busy>,
    },
}

impl Future for ResponseFuture {
    type Output = Result<Response<ClockedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            ResponseFuture::Answered(response) => Poll::Ready(Ok(response.take().expect("polled after completion"))),
            ResponseFuture::Routed { future, busy } => {
                let Ok(response) = ready!(Pin::new(future).poll(cx));
                let busy = busy.take().expect("polled after completion");
                Poll::Ready(Ok(ClockedBody::wrap(response, busy)))
            }
        }
    }
}

/// Marks the connection busy while it lives: from the parsed head until the response body is dropped (hyper drops
/// it once written, or when the connection ends).
struct Busy(Arc<Clock>);

impl Busy {
    /// Also returns the request's number, for its [`TimedBody`].
    fn new(clock: Arc<Clock>, has_body: bool, client_id: Option<HeaderValue>) -> (Self, u64) {
        let number = clock.request_started(Instant::now(), has_body, client_id);
        (Busy(clock), number)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.request_finished(Instant::now());
    }
}

/// A response body that keeps its connection's clock busy until hyper is done with it.
pub struct ClockedBody {
    inner: Body,
    _busy: Busy,
}

impl ClockedBody {
    fn wrap(response: Response<Body>, busy: Busy) -> Response<ClockedBody> {
        busy.0.response_started();
        response.map(|inner| ClockedBody { inner, _busy: busy })
    }
}

/// A request body that tells the clock when it has been read to its end, or dropped unread.
pub struct TimedBody {
    inner: Incoming,
    clock: Arc<Clock>,
    number: u64,
    finished: bool,
}

impl TimedBody {
    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.clock.body_finished(self.number);
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        // The end, an error (the client went away), or the last frame of a body of known length: nothing more to
        // wait for from the client.
        if !matches!(frame, Some(Ok(_))) || this.inner.is_end_stream() {
            this.finish();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpBody for ClockedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts events and says when to log them: at most once per interval, with the number since the last report.
/// Events after a report wait for the next one, or for [`Throttle::flush`] once the interval has passed.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// A throttle that reports at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one event at `now`; returns how many to report (this one included) if a report is due.
    pub fn record(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        Self::due(&mut state, now, self.interval)
    }

    /// The events not reported yet, if there are any and the interval since the last report has passed.
    pub fn flush(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.1 == 0 {
            return None;
        }
        Self::due(&mut state, now, self.interval)
    }

    fn due(state: &mut (Option<Instant>, u64), now: Instant, interval: Duration) -> Option<u64> {
        let due = state.0.is_none_or(|last| now.duration_since(last) >= interval);
        due.then(|| {
            state.0 = Some(now);
            std::mem::take(&mut state.1)
        })
    }
}

/// Hands free memory back to the OS once a burst of connections has closed (see the module's documentation).
#[derive(Debug, Default)]
struct MemoryTrim {
    /// The most connections open since the last trim.
    peak: usize,
}

impl MemoryTrim {
    fn opened(&mut self, open: usize) {
        self.peak = self.peak.max(open);
    }

    fn tick(&mut self, open: usize) {
        if self.peak.saturating_sub(open) >= TRIM_AFTER_CLOSED {
            self.peak = open;
            // Walks every arena under its lock: a blocking thread's job, not a runtime worker's.
            tokio::task::spawn_blocking(release_free_memory);
        }
    }
}

/// Returns the allocator's free pages to the OS.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own arenas; 0 keeps no extra padding at the top of the heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns the allocator's free pages to the OS (a no-op where the allocator is not glibc's).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ServeSettings {
        ServeSettings::api(&Config::default())
    }

    #[test]
    fn a_throttle_reports_the_first_event_then_at_most_once_per_interval_with_the_count() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.record(start), Some(1));
        assert_eq!(throttle.record(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.record(start + Duration::from_secs(2)), None);
        assert_eq!(throttle.flush(start + Duration::from_secs(9)), None, "too early");
        assert_eq!(throttle.flush(start + Duration::from_secs(10)), Some(2));
        assert_eq!(throttle.flush(start + Duration::from_secs(30)), None, "nothing pending");
        assert_eq!(throttle.record(start + Duration::from_secs(31)), Some(1));
    }

    #[test]
    fn hypers_limit_on_a_head_stays_above_ours() {
        let s = settings();
        assert!(hyper_head_limit(&s) > s.max_header_bytes + s.max_uri_bytes + 1024);
        let small = ServeSettings {
            max_header_bytes: 1024,
            max_uri_bytes: 256,
            ..settings()
        };
        assert_eq!(hyper_head_limit(&small), 8192, "hyper's minimum");
    }

    #[test]
    fn the_header_size_counts_each_field_as_sent() {
        let request = Request::get("/")
            .header("a", "xy")
            .header("a", "z")
            .header("host", "h")
            .body(())
            .unwrap();
        // "a: xy\r\n" + "a: z\r\n" + "host: h\r\n"
        assert_eq!(header_bytes(&request), 7 + 6 + 9);
    }

    #[test]
    fn the_target_length_counts_path_query_and_an_absolute_form() {
        assert_eq!(uri_len(&"/get/k?x=1".parse().unwrap()), 10);
        assert_eq!(uri_len(&"http://h:1/p".parse().unwrap()), 12);
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            header_read: Duration::from_secs(1),
            idle: Duration::from_secs(60),
            body_read: Duration::from_secs(10),
            write: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_clock_times_the_idle_wait_from_the_last_response_and_the_head_from_its_first_byte() {
        let t = timeouts();
        let t0 = Instant::now();
        let clock = Clock::head_started(t0);
        assert_eq!(clock.deadline(&t), Some((t0 + t.header_read, Phase::Head)));
        clock.request_started(t0, false, None);
        assert_eq!(
            clock.deadline(&t),
            None,
            "busy without a body: the handler is not timed"
        );
        // Bytes read while busy change nothing.
        clock.bytes_read(t0 + Duration::from_secs(5));
        let t1 = t0 + Duration::from_secs(7);
        clock.request_finished(t1);
        assert_eq!(clock.deadline(&t), Some((t1 + t.idle, Phase::Idle)));
        let t2 = t1 + Duration::from_secs(30);
        clock.bytes_read(t2);
        assert_eq!(clock.deadline(&t), Some((t2 + t.header_read, Phase::Head)));
        // Further bytes of the same head do not restart its clock: a trickle is cut off all the same.
        clock.bytes_read(t2 + Duration::from_millis(900));
        assert_eq!(clock.deadline(&t), Some((t2 + t.header_read, Phase::Head)));
    }

    #[test]
    fn the_clock_times_a_body_from_the_end_of_its_head_until_it_is_read() {
        let t = timeouts();
        let t0 = Instant::now();
        let clock = Clock::head_started(t0);
        let first = clock.request_started(t0, true, None);
        assert_eq!(clock.deadline(&t), Some((t0 + t.body_read, Phase::Body)));
        // Body bytes arriving do not restart it: a total, not a gap between bytes.
        clock.bytes_read(t0 + Duration::from_secs(3));
        assert_eq!(clock.deadline(&t), Some((t0 + t.body_read, Phase::Body)));
        assert!(clock.request_answer().0, "nothing answered yet");
        clock.body_finished(first);
        assert_eq!(clock.deadline(&t), None, "the handler works untimed");
        clock.response_started();
        assert!(!clock.request_answer().0, "an answer has started");
        let t1 = t0 + Duration::from_secs(4);
        clock.request_finished(t1);
        let second = clock.request_started(t1, true, None);
        // A late end of the first request's body does not stop the second one's clock.
        clock.body_finished(first);
        assert_eq!(clock.deadline(&t), Some((t1 + t.body_read, Phase::Body)));
        clock.body_finished(second);
        assert_eq!(clock.deadline(&t), None);
    }

    #[test]
    fn the_clock_times_blocked_output_from_the_first_blocked_write_in_any_phase() {
        let t = timeouts();
        let t0 = Instant::now();
        let clock = Clock::head_started(t0);
        clock.request_started(t0, false, None);
        clock.write_blocked(t0);
        assert_eq!(clock.deadline(&t), Some((t0 + t.write, Phase::Write)));
        // Blocking again later does not move the deadline: a client that reads a little now and then is still cut.
        clock.write_blocked(t0 + Duration::from_secs(2));
        assert_eq!(clock.deadline(&t), Some((t0 + t.write, Phase::Write)));
        assert!(!clock.request_answer().0, "output pending");
        clock.write_done();
        assert_eq!(clock.deadline(&t), None);
        // While waiting for a request, the earlier deadline wins.
        let t1 = t0 + Duration::from_secs(3);
        clock.request_finished(t1);
        clock.write_blocked(t1);
        assert_eq!(clock.deadline(&t), Some((t1 + t.write, Phase::Write)));
        let t2 = t1 + Duration::from_millis(100);
        clock.bytes_read(t2);
        assert_eq!(clock.deadline(&t), Some((t2 + t.header_read, Phase::Head)));
    }

    #[test]
    fn a_raw_answer_is_a_complete_response_with_a_json_body() {
        let id = HeaderValue::from_static("abc");
        let answer = String::from_utf8(raw_answer(
            "503 Service Unavailable",
            "full",
            Some(&id),
            "retry-after: 1\r\n",
        ))
        .unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(head.contains("\r\nretry-after: 1"), "{head}");
        assert!(head.contains("\r\nx-request-id: abc"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body, serde_json::json!({"status": "error", "message": "full"}));
    }

    #[test]
    fn the_fd_budget_covers_both_bounds_and_the_pools() {
        let config = Config::default();
        let budget = fd_budget(&config);
        assert!(budget > (config.max_connections + ADMIN_MAX_CONNECTIONS) as u64 + 18);
        assert!(
            budget < (config.max_connections + 200) as u64,
            "{budget}: the docs say about 150 more"
        );
    }
}
