//! The API listener, which hands every connection the kernel has already accepted to the server before it closes.
//!
//! Closing a listening socket resets the connections still queued in its backlog: the clients have connected, may
//! have sent their request, and get a reset that says nothing about whether it was processed. Under steady traffic
//! a plain graceful shutdown does that to a few connections at every restart (measured: 120 resets over 20
//! SIGTERMs at about 1,000 new connections/s; see docs/gameday.md).
//!
//! So on shutdown the listener first stops new handshakes: a socket filter on the listening socket drops new SYNs,
//! whose clients retransmit a second later, by when the restarted app or nobody is listening (a clean refusal).
//! Then it keeps accepting until the backlog is empty, and only then lets the server stop. The filter is the
//! kernel's classic BPF (`SO_ATTACH_FILTER`) through socket2. Where it cannot be attached, draining could not end
//! under steady traffic, so the listener closes at once, as a plain graceful shutdown would, and says so in the log.
//!
//! What it does not cover: a connection accepted in the last moments whose first request bytes have not arrived
//! when the graceful shutdown starts is closed unanswered (one whose request is waiting is served; see
//! `connection`). The quiet period makes that rare on loopback (no reset in the tests or the game day), not
//! impossible.
//!
//! Both listeners accept through [`accept`], which logs what axum's listener swallowed: an accept that fails for
//! want of file descriptors or memory.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::connection::{Throttle, WARN_INTERVAL};

/// How long the backlog must stay empty before the listener counts it drained. Handshakes completed before the
/// filter went on are in the backlog already; those half-open at that moment complete one round trip later, so this
/// covers round trips under 100 ms (loopback and a local proxy) and the accept loop's own latency.
const DRAIN_QUIET: Duration = Duration::from_millis(100);

/// The longest the drain may take, and at most half the shutdown timeout, which it runs inside: in-flight requests
/// keep the rest. It ends sooner once the backlog is empty, and a backlog cannot refill while new handshakes are
/// dropped.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// How long to wait before accepting again after an accept failed for want of resources: time for connections to
/// close and free some, without spinning on the error.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Accepts the next connection of `listener`. A connection that failed before it was accepted is skipped; any other
/// error (out of file descriptors, out of memory) is logged at most once per interval, with the number since the
/// last warning, and retried after [`ACCEPT_RETRY`].
pub async fn accept(listener: &TcpListener, what: &'static str, errors: &Throttle) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                if let Some(failures) = errors.record(Instant::now()) {
                    tracing::warn!(
                        listener = what,
                        error = %e,
                        failures,
                        "cannot accept connections ({failures} failure(s) since the last warning); retrying"
                    );
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// A listener without a drain (the admin one), accepting through [`accept`].
pub struct PlainListener {
    inner: TcpListener,
    what: &'static str,
    errors: Throttle,
}

impl PlainListener {
    /// Wraps `inner`; `what` names it in the log.
    pub fn new(inner: TcpListener, what: &'static str) -> Self {
        PlainListener {
            inner,
            what,
            errors: Throttle::new(WARN_INTERVAL),
        }
    }
}

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        accept(&self.inner, self.what, &self.errors).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A listener that drains its backlog when `stop` turns true, then completes `drained` and accepts nothing more.
pub struct DrainingListener {
    inner: TcpListener,
    stop: watch::Receiver<bool>,
    drained: watch::Sender<bool>,
    drain_limit: Duration,
    state: State,
    errors: Throttle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Serving,
    Draining { until: Instant },
    Drained,
}

impl DrainingListener {
    /// Wraps `inner`; the returned receiver turns true once the backlog is drained after `stop`. The drain takes at
    /// most half of `shutdown_timeout`.
    pub fn new(
        inner: TcpListener,
        stop: watch::Receiver<bool>,
        shutdown_timeout: Duration,
    ) -> (Self, watch::Receiver<bool>) {
        let (drained, drained_rx) = watch::channel(false);
        let listener = DrainingListener {
            inner,
            stop,
            drained,
            drain_limit: DRAIN_LIMIT.min(shutdown_timeout / 2),
            state: State::Serving,
            errors: Throttle::new(WARN_INTERVAL),
        };
        (listener, drained_rx)
    }

    fn start_draining(&mut self) {
        match refuse_new_handshakes(&self.inner) {
            Ok(()) => {
                tracing::info!("API listener: new connections are held off; serving the ones already queued");
                self.state = State::Draining {
                    until: Instant::now() + self.drain_limit,
                };
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "API listener: cannot hold off new connections; closing now, connections still queued are reset"
                );
                self.finish_draining();
            }
        }
    }

    fn finish_draining(&mut self) {
        self.state = State::Drained;
        let _ = self.drained.send(true);
    }
}

impl Listener for DrainingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.state {
                State::Serving => {
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        accepted = accept(&self.inner, "API", &self.errors) => return accepted,
                        _ = stop.wait_for(|stop| *stop) => self.start_draining(),
                    }
                }
                State::Draining { until } => {
                    let quiet_until = (Instant::now() + DRAIN_QUIET).min(until);
                    match tokio::time::timeout_at(quiet_until, accept(&self.inner, "API", &self.errors)).await {
                        Ok(accepted) => return accepted,
                        Err(_) => self.finish_draining(),
                    }
                }
                // The server stops calling accept once `drained` fired; until it does, nothing more is taken.
                State::Drained => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Attaches a classic BPF program to the listening socket that drops new handshakes (segments with SYN set and
/// ACK clear) and lets everything else through: the ACK that completes a handshake already under way still reaches
/// the socket, so that connection joins the backlog and is served rather than reset when the socket closes. A TCP
/// socket's filter sees the segment from its TCP header on; byte 13 holds the flags.
#[cfg(target_os = "linux")]
fn refuse_new_handshakes(listener: &TcpListener) -> io::Result<()> {
    use socket2::SockFilter;
    const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS: A = byte at k
    const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K: A &= k
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K: jump by jt if A == k, else by jf
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K: keep k bytes (0 drops the segment)
    const SYN: u32 = 0x02;
    const ACK: u32 = 0x10;
    let program = [
        SockFilter::new(LD_B_ABS, 0, 0, 13),
        SockFilter::new(AND_K, 0, 0, SYN | ACK),
        SockFilter::new(JEQ_K, 0, 1, SYN),
        SockFilter::new(RET_K, 0, 0, 0),
        SockFilter::new(RET_K, 0, 0, u32::MAX),
    ];
    socket2::SockRef::from(listener).attach_filter(&program)
}

#[cfg(not(target_os = "linux"))]
fn refuse_new_handshakes(_listener: &TcpListener) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "socket filters are Linux-only",
    ))
}
