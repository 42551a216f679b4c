//! The app-connections drill: keep-alive connections to the app's API held open until the open count crosses
//! AppConnectionsNearLimit's threshold, then, once its ticket has arrived, the rest of the limit filled for a moment
//! to prove what happens at the bound. Sized from the limit the app exports, read from Prometheus, so it fits
//! whatever `APP_MAX_CONNECTIONS` the stack runs with.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::sleep;

use super::error::Error;
use super::proofs::Proof;
use super::stack::Ctx;

/// Share of the API's connection limit held open (the alert's threshold is 80%; the margin covers other clients
/// closing theirs during the drill).
const HOLD_SHARE: f64 = 0.88;

/// How often each held connection sends `GET /healthcheck`: half the app's default idle timeout (60 s), so that no
/// held connection is closed as idle. With the default limit, 900 connections make 30 requests/s of a route the
/// SLOs leave out.
const REQUEST_PERIOD: Duration = Duration::from_secs(30);

/// Connections refused at the bound that the proof asks for.
const REFUSALS: u32 = 3;

/// Time limit of each exchange with the app.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why one exchange with the app's API failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect: {0} (raise the open-file limit of opsctl: ulimit -n)")]
    OutOfFiles(#[source] std::io::Error),
    #[error("send: {0}")]
    Send(#[source] std::io::Error),
    #[error("read: {0}")]
    Read(#[source] std::io::Error),
    #[error("not an HTTP answer: {0:?}")]
    NotHttp(String),
    #[error("closed mid-answer")]
    ClosedMidAnswer,
    #[error("closed before an answer")]
    ClosedBeforeAnswer,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP {status} {body}")]
    Status { status: u16, body: String },
}

/// Connections held open, each by a task that keeps it alive.
pub struct Held {
    pub count: usize,
    pub limit: usize,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
    addr: String,
    host: String,
}

/// `host:port` of an `http://` URL.
fn authority(url: &str) -> Result<String, Error> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::NotPlainHttp(url.to_string()))?;
    Ok(rest.split('/').next().unwrap_or(rest).to_string())
}

async fn one_number(ctx: &Ctx, expr: &str) -> Result<f64, Error> {
    let samples = ctx.prometheus.query(expr).await.map_err(|source| Error::Query {
        expr: expr.to_string(),
        source,
    })?;
    samples
        .first()
        .map(|s| s.number())
        .filter(|v| v.is_finite())
        .ok_or_else(|| Error::NoValue { expr: expr.to_string() })
}

/// Opens connections until `HOLD_SHARE` of the API's limit is open, counting the ones other clients hold.
pub async fn hold(ctx: &Ctx) -> Result<Held, Error> {
    let limit = one_number(ctx, r#"max(http_server_connection_max{job="app", listener="api"})"#).await? as usize;
    let open = one_number(ctx, r#"max(http_server_open_connections{job="app", listener="api"})"#)
        .await
        .unwrap_or(0.0) as usize;
    let target = (limit as f64 * HOLD_SHARE).ceil() as usize;
    let count = target.saturating_sub(open);
    // Every held connection and each of the proof's is a descriptor of ours too.
    raise_open_file_limit(limit as u64 + 512)?;
    // One replica's own listener: HAProxy would hold idle client connections without opening any to the app.
    let addr = authority(&ctx.args.replica_api[0])?;
    let host = addr.clone();
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let stream = match open_served(&addr, &host).await {
            Ok(stream) => stream,
            Err(source) => {
                let _ = stop.send(true);
                return Err(Error::OpenConnection {
                    n: tasks.len() + 1,
                    count,
                    source,
                });
            }
        };
        // Spread over the period, so the requests come at a steady rate rather than all at once.
        let first = Duration::from_millis(fastrand::u64(0..REQUEST_PERIOD.as_millis() as u64));
        tasks.push(tokio::spawn(keep_alive(
            stream,
            addr.clone(),
            host.clone(),
            first,
            stop_rx.clone(),
        )));
    }
    Ok(Held {
        count,
        limit,
        stop,
        tasks,
        addr,
        host,
    })
}

impl Held {
    /// Closes every held connection; returns how many times one had to be reopened.
    pub async fn release(self) -> u64 {
        let _ = self.stop.send(true);
        let mut reopened = 0;
        for task in self.tasks {
            reopened += task.await.unwrap_or(0);
        }
        reopened
    }

    /// Fills the rest of the limit with served connections, then opens more until [`REFUSALS`] have been refused,
    /// checks their answers, the refusal counter and that `/metrics` answers meanwhile, and closes them all.
    pub async fn prove_the_bound(&self, ctx: &Ctx) -> Proof {
        let claim = "at the app's API connection limit new connections are refused with 503 JSON and counted, while \
                     the admin listener's /metrics still answers"
            .to_string();
        let fail = |figures: String| Proof {
            claim: claim.clone(),
            passed: false,
            figures,
        };
        let before = match rejected_connections(ctx).await {
            Ok(v) => v,
            Err(e) => return fail(e.to_string()),
        };
        let mut filled = Vec::new();
        let mut refused = 0u32;
        let mut odd = Vec::new();
        // Other clients may open or close connections meanwhile: fill until refused rather than by arithmetic.
        for _ in 0..self.limit + 64 {
            let answer = async {
                let mut stream = TcpStream::connect(&self.addr).await.map_err(ExchangeError::Connect)?;
                let (status, body) = exchange(&mut stream, &self.host).await?;
                Ok::<_, ExchangeError>((stream, status, body))
            }
            .await;
            match answer {
                Ok((stream, 200, _)) => filled.push(stream),
                Ok((_, 503, body)) if is_error_body(&body) => {
                    refused += 1;
                    if refused == REFUSALS {
                        break;
                    }
                }
                Ok((_, status, body)) => odd.push(format!("HTTP {status} {body}")),
                Err(e) => odd.push(e.to_string()),
            }
            if odd.len() > 3 {
                break;
            }
        }
        let started = Instant::now();
        let scrape = ctx
            .http
            .get(format!("{}/metrics", ctx.args.admin[0].trim_end_matches('/')))
            .send()
            .await;
        let scrape_ms = started.elapsed().as_millis();
        let scraped = matches!(&scrape, Ok(r) if r.status().is_success());
        let served = filled.len();
        drop(filled);
        let counted = rejected_connections(ctx).await.map(|after| after - before);
        let figures = format!(
            "{} connections held, {served} more opened and served up to the limit of {}, then {refused} refused with \
             503 {{\"status\":\"error\"}}; http_server_rejected_connections_total +{}; /metrics answered {} in \
             {scrape_ms} ms at the limit{}",
            self.count,
            self.limit,
            counted.as_ref().map_or_else(|e| e.to_string(), |d| format!("{d:.0}")),
            if scraped { "200" } else { "with an error" },
            if odd.is_empty() {
                String::new()
            } else {
                format!("; unexpected: {}", odd.join("; "))
            }
        );
        Proof {
            claim,
            passed: refused == REFUSALS && scraped && odd.is_empty() && counted.is_ok_and(|d| d >= f64::from(REFUSALS)),
            figures,
        }
    }
}

/// Whether a refusal's body is the app's JSON error (`{"status":"error", …}`).
fn is_error_body(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v["status"] == "error")
}

/// `http_server_rejected_connections_total{listener="api"}` read from the admin listener itself: Prometheus would
/// be a scrape late.
async fn rejected_connections(ctx: &Ctx) -> Result<f64, Error> {
    let url = format!("{}/metrics", ctx.args.admin[0].trim_end_matches('/'));
    let text = ctx
        .http
        .get(&url)
        .send()
        .await
        .map_err(|source| Error::Http {
            what: url.clone(),
            source,
        })?
        .text()
        .await
        .map_err(|source| Error::Http {
            what: url.clone(),
            source,
        })?;
    text.lines()
        .find_map(|l| l.strip_prefix(r#"http_server_rejected_connections_total{listener="api"} "#))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::Metrics {
            what: url,
            detail: r#"no http_server_rejected_connections_total{listener="api"}"#.to_string(),
        })
}

/// A new connection that has been served one request: it counts as open from then on.
async fn open_served(addr: &str, host: &str) -> Result<TcpStream, ExchangeError> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| {
        if e.raw_os_error() == Some(libc::EMFILE) {
            ExchangeError::OutOfFiles(e)
        } else {
            ExchangeError::Connect(e)
        }
    })?;
    match exchange(&mut stream, host).await? {
        (200, _) => Ok(stream),
        (status, body) => Err(ExchangeError::Status { status, body }),
    }
}

/// Sends a request on the connection every [`REQUEST_PERIOD`] until told to stop, reopening it if the app closed
/// it; returns the number of reopenings.
async fn keep_alive(
    mut stream: TcpStream,
    addr: String,
    host: String,
    first: Duration,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let mut reopened = 0;
    let mut wait = first;
    loop {
        tokio::select! {
            () = sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return reopened,
        }
        wait = REQUEST_PERIOD;
        if exchange(&mut stream, &host).await.is_err() {
            // When the app is unreachable right now (another drill, or at its limit), the next period tries again.
            if let Ok(fresh) = open_served(&addr, &host).await {
                stream = fresh;
                reopened += 1;
            }
        }
    }
}

/// One `GET /healthcheck` on a keep-alive connection: the status and body of the answer (read to its
/// `content-length`).
async fn exchange(stream: &mut TcpStream, host: &str) -> Result<(u16, String), ExchangeError> {
    let request = format!("GET /healthcheck HTTP/1.1\r\nHost: {host}\r\nUser-Agent: opsctl-gameday\r\n\r\n");
    tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(ExchangeError::Send)?;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| ExchangeError::NotHttp(head.clone()))?;
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < end + 4 + length {
                    let n = stream.read(&mut chunk).await.map_err(ExchangeError::Read)?;
                    if n == 0 {
                        return Err(ExchangeError::ClosedMidAnswer);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                return Ok((
                    status,
                    String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string(),
                ));
            }
            let n = stream.read(&mut chunk).await.map_err(ExchangeError::Read)?;
            if n == 0 {
                return Err(ExchangeError::ClosedBeforeAnswer);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| ExchangeError::Timeout(EXCHANGE_TIMEOUT))?
}

/// Raises this process's soft limit on open files to `needed` where the hard limit allows (the soft one is often
/// 1024, too few for the connections of a default limit beside the game day's other clients).
fn raise_open_file_limit(needed: u64) -> Result<(), Error> {
    // rlim_t is u64 on Linux, not on every unix.
    #[allow(clippy::useless_conversion)]
    fn wide(v: libc::rlim_t) -> u64 {
        u64::from(v)
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write the struct they are given, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(Error::Getrlimit);
        }
        if wide(limit.rlim_cur) < needed {
            let raised = libc::rlimit {
                rlim_cur: needed.min(wide(limit.rlim_max)) as libc::rlim_t,
                rlim_max: limit.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    if wide(limit.rlim_cur) < needed {
        return Err(Error::OpenFiles {
            needed,
            have: wide(limit.rlim_cur),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_of_the_app_url_is_its_host_and_port() {
        assert_eq!(authority("http://127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(authority("http://127.0.0.1:8080/").unwrap(), "127.0.0.1:8080");
        assert!(authority("https://example.com").is_err());
    }

    #[test]
    fn a_refusal_is_the_apps_json_error_whatever_its_layout() {
        assert!(is_error_body(r#"{"status":"error","message":"too many connections"}"#));
        assert!(is_error_body(r#"{ "status": "error" }"#));
        assert!(!is_error_body(r#"{"status":"ok","note":"\"status\":\"error\""}"#));
        assert!(!is_error_body("Service Unavailable"));
    }

    #[tokio::test]
    async fn an_exchange_reads_one_answer_and_leaves_the_connection_usable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            for body in ["OK", "again"] {
                let _ = s.read(&mut buf).await.unwrap();
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert_eq!(exchange(&mut stream, "h").await.unwrap(), (200, "OK".to_string()));
        assert_eq!(exchange(&mut stream, "h").await.unwrap(), (200, "again".to_string()));
    }
}
