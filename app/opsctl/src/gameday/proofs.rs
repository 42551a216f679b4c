//! The claims the game day proves with figures besides the alerts: reads survive Redis, acknowledged writes
//! survive Postgres, a SIGTERM fails no request, unknown paths add no series, every dashboard panel has data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::sleep;

use super::error::Error;
use super::stack::{Ctx, KEYS, KEY_PREFIX};
use crate::clients::http_client;

/// One proven (or disproven) claim.
#[derive(Debug, Clone, Serialize)]
pub struct Proof {
    pub claim: String,
    pub passed: bool,
    pub figures: String,
}

fn millis(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// What one reader counted: answers 200, answers not 200, the slowest answer, the failures.
type ReaderTally = (u64, u64, Duration, Vec<String>);

/// Readers of existing keys at a steady rate, counting every answer that is not 200.
pub struct Readers {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<ReaderTally>>,
}

impl Readers {
    pub fn start(ctx: Arc<Ctx>, rate: f64) -> Self {
        let (stop, rx) = watch::channel(false);
        let workers = (0..4)
            .map(|_| {
                let (ctx, rx) = (ctx.clone(), rx.clone());
                let period = Duration::from_secs_f64(4.0 / rate);
                tokio::spawn(async move {
                    let (mut ok, mut failed, mut slowest, mut samples) = (0, 0, Duration::ZERO, Vec::new());
                    while !*rx.borrow() {
                        let key = format!("{KEY_PREFIX}-{}", fastrand::u64(0..KEYS));
                        let url = format!("{}/get/{key}", ctx.args.app.trim_end_matches('/'));
                        let started = Instant::now();
                        let outcome = ctx.http.get(&url).send().await;
                        slowest = slowest.max(started.elapsed());
                        match outcome {
                            Ok(r) if r.status() == reqwest::StatusCode::OK => ok += 1,
                            Ok(r) => {
                                failed += 1;
                                samples.push(format!("{key}: HTTP {}", r.status()));
                            }
                            Err(e) => {
                                failed += 1;
                                samples.push(format!("{key}: {e}"));
                            }
                        }
                        sleep(period).await;
                    }
                    (ok, failed, slowest, samples)
                })
            })
            .collect();
        Readers { stop, workers }
    }

    pub async fn stop(self) -> Proof {
        let _ = self.stop.send(true);
        let (mut ok, mut failed, mut slowest, mut samples) = (0, 0, Duration::ZERO, Vec::new());
        for w in self.workers {
            if let Ok((o, f, s, mut e)) = w.await {
                ok += o;
                failed += f;
                slowest = slowest.max(s);
                samples.append(&mut e);
            }
        }
        samples.truncate(3);
        Proof {
            claim: "Redis stopped under read load: no read of an existing key fails".to_string(),
            passed: failed == 0 && ok > 0,
            figures: format!(
                "{ok} reads answered 200, {failed} failed{}; slowest {}",
                if samples.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", samples.join("; "))
                },
                millis(slowest)
            ),
        }
    }
}

/// What a writers' proof requires of the writes the app refused (503).
#[derive(Clone, Copy)]
enum Refusals {
    /// Some: Postgres was down, and the app must have said so.
    Expected,
    /// Any number (a failover's gap), each within a second.
    Allowed,
    /// Any number, however long each took.
    AllowedSlow,
    /// None at all.
    None,
}

/// Writers of fresh keys, remembering which writes were acknowledged; `stop` checks them in Postgres.
pub struct Writers {
    ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<WriterTally>>,
}

#[derive(Default)]
struct WriterTally {
    acked: Vec<(String, u64)>,
    /// When each acknowledgement arrived (the failover drills' longest gap between two).
    acked_at: Vec<Instant>,
    refused_503: u64,
    slowest_503: Duration,
    other: Vec<String>,
}

/// Writers left behind by a drill that failed half-way stop with it, rather than write for the rest of the game day.
impl Drop for Writers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Writers {
    /// Writers through the app's public endpoint (HAProxy).
    pub fn start(ctx: Arc<Ctx>, rate: f64) -> Self {
        let base = ctx.args.app.clone();
        Self::start_at(ctx, rate, base)
    }

    /// Writers to the API at `base`: the Postgres cluster's drills write to one replica directly, so that the
    /// drills on HAProxy that run beside them cannot fail their writes.
    pub fn start_at(ctx: Arc<Ctx>, rate: f64, base: String) -> Self {
        let (stop, rx) = watch::channel(false);
        let run = crate::gameday::stack::now_ms();
        let workers = (0..4)
            .map(|w| {
                let (ctx, rx) = (ctx.clone(), rx.clone());
                let period = Duration::from_secs_f64(4.0 / rate);
                let url = format!("{}/set", base.trim_end_matches('/'));
                tokio::spawn(async move {
                    let mut tally = WriterTally::default();
                    let mut n = 0u64;
                    while !*rx.borrow() {
                        n += 1;
                        let key = format!("gameday-w-{run}-{w}-{n}");
                        let started = Instant::now();
                        let outcome = ctx
                            .http
                            .post(&url)
                            .json(&json!({"key": key, "value": {"n": n}}))
                            .send()
                            .await;
                        match outcome {
                            Ok(r) if r.status().is_success() => {
                                tally.acked.push((key, n));
                                tally.acked_at.push(Instant::now());
                            }
                            Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                                tally.refused_503 += 1;
                                tally.slowest_503 = tally.slowest_503.max(started.elapsed());
                            }
                            Ok(r) => tally.other.push(format!("HTTP {}", r.status())),
                            Err(e) => tally.other.push(e.to_string()),
                        }
                        sleep(period).await;
                    }
                    tally
                })
            })
            .collect();
        Writers { ctx, stop, workers }
    }

    /// Stops the writers: the claim of Postgres stopped and started, where writes must fail (fast) meanwhile.
    pub async fn stop(self) -> Proof {
        let claim = "Postgres stopped and restarted under write load: every acknowledged write is stored; writes \
                     during the outage fail fast with 503"
            .to_string();
        self.prove(claim, Refusals::Expected).await
    }

    /// Stops the writers: the claim of a drill on the Postgres cluster. No acknowledged write may be missing from
    /// the leader afterwards (which also proves none was acknowledged by a member that was no longer leading: the
    /// new leader would not hold it); a write the app refuses, it refuses fast (503 within a second); the longest
    /// time without an acknowledged write is the figure (docs/postgres-ha.md: the goal is under 30 s).
    pub async fn stop_failover(self, claim: String) -> Proof {
        self.prove(claim, Refusals::Allowed).await
    }

    /// Stops the writers: as [`Writers::stop_failover`], but a refusal may take as long as the app's statement
    /// limit: a commit waiting for a synchronous standby that no longer answers (stopped, or cut off) is held until
    /// then, and the app answers that it does not know the outcome.
    pub async fn stop_commit_waits(self, claim: String) -> Proof {
        self.prove(claim, Refusals::AllowedSlow).await
    }

    /// Stops the writers: the claim of a fault clients must not notice (an etcd member down): not one write fails.
    pub async fn stop_unharmed(self, claim: String) -> Proof {
        self.prove(claim, Refusals::None).await
    }

    async fn prove(mut self, claim: String, refusals: Refusals) -> Proof {
        let _ = self.stop.send(true);
        let mut all = WriterTally::default();
        for w in std::mem::take(&mut self.workers) {
            if let Ok(mut t) = w.await {
                all.acked.append(&mut t.acked);
                all.acked_at.append(&mut t.acked_at);
                all.refused_503 += t.refused_503;
                all.slowest_503 = all.slowest_503.max(t.slowest_503);
                all.other.append(&mut t.other);
            }
        }
        all.acked_at.sort();
        let longest_gap = all.acked_at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
        let lost = match self.missing(&all.acked).await {
            Ok(lost) => lost,
            Err(e) => {
                return Proof {
                    claim,
                    passed: false,
                    figures: format!("could not read the writes back: {e}"),
                }
            }
        };
        all.other.truncate(3);
        Proof {
            claim,
            passed: lost == 0
                && !all.acked.is_empty()
                && all.other.is_empty()
                && match refusals {
                    Refusals::Expected => all.refused_503 > 0,
                    Refusals::Allowed | Refusals::AllowedSlow => true,
                    Refusals::None => all.refused_503 == 0,
                }
                && (all.slowest_503 < Duration::from_secs(1) || matches!(refusals, Refusals::AllowedSlow)),
            figures: format!(
                "{} writes acknowledged, {lost} of them missing from Postgres afterwards; longest time without an \
                 acknowledged write {:.1} s; {} answered 503, the slowest in {}; other failures: {}",
                all.acked.len(),
                longest_gap.as_secs_f64(),
                all.refused_503,
                millis(all.slowest_503),
                if all.other.is_empty() {
                    "none".to_string()
                } else {
                    all.other.join("; ")
                }
            ),
        }
    }

    /// How many acknowledged writes Postgres does not hold with the acknowledged value.
    async fn missing(&self, acked: &[(String, u64)]) -> Result<usize, Error> {
        let pg = |source| Error::Postgres {
            what: "read the writes back",
            source,
        };
        let (client, connection) = self.ctx.pg.connect(tokio_postgres::NoTls).await.map_err(pg)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let keys: Vec<&str> = acked.iter().map(|(k, _)| k.as_str()).collect();
        let rows = client
            .query(
                "SELECT key, (value->>'n')::bigint FROM kv_store WHERE key = ANY($1)",
                &[&keys],
            )
            .await
            .map_err(pg)?;
        let stored: std::collections::HashMap<String, i64> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect();
        Ok(acked
            .iter()
            .filter(|(k, n)| stored.get(k) != Some(&(*n as i64)))
            .count())
    }
}

/// Steady reads and writes through the app's public endpoint (HAProxy) while a drill disturbs the replicas behind
/// it: four clients, each alternating a write of its own key with a read, a new connection per request (no
/// keep-alive, so every request meets the balancer's current view of the replicas). [`Traffic::prove`] stops it
/// and reads every client's key back. The claim: no request fails (a 2xx for every one; behind HAProxy not even a
/// refused connection reaches the client) and no acknowledged write is lost (each key holds its last acknowledged
/// value or a later one).
pub struct Traffic {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<Tally>>,
    client: reqwest::Client,
    base: String,
    name: &'static str,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    refused: u64,
    reset: u64,
    last_acked: Option<u64>,
    failures: Vec<String>,
}

impl Traffic {
    /// Starts the clients; `name` keeps each drill's keys apart.
    pub fn start(ctx: &Ctx, name: &'static str) -> Traffic {
        let (stop, rx) = watch::channel(false);
        let client = http_client(Duration::from_secs(10), 0);
        let base = ctx.args.app.trim_end_matches('/').to_string();
        let workers = (0..4)
            .map(|w| {
                let (rx, client, base, key) = (rx.clone(), client.clone(), base.clone(), traffic_key(name, w));
                tokio::spawn(async move {
                    let mut t = Tally::default();
                    let mut n = 0u64;
                    while !*rx.borrow() {
                        n += 1;
                        let write = n % 2 == 1;
                        let request = if write {
                            client
                                .post(format!("{base}/set"))
                                .json(&json!({"key": key, "value": n}))
                        } else {
                            client.get(format!("{base}/get/{KEY_PREFIX}-{}", fastrand::u64(0..KEYS)))
                        };
                        match request.send().await {
                            Ok(r) if r.status().is_success() => {
                                t.ok += 1;
                                if write {
                                    t.last_acked = Some(n);
                                }
                            }
                            Ok(r) => t.failures.push(format!("HTTP {}", r.status())),
                            Err(e) if e.is_connect() => {
                                t.refused += 1;
                                sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                            Err(e) if reset_before_answer(&e) => t.reset += 1,
                            Err(e) => t.failures.push(crate::clients::describe_transport(&e)),
                        }
                        sleep(Duration::from_millis(10)).await;
                    }
                    t
                })
            })
            .collect();
        Traffic {
            stop,
            workers,
            client,
            base,
            name,
        }
    }

    /// Stops the clients, reads their keys back, and judges `claim`.
    pub async fn prove(self, claim: String) -> Result<Proof, Error> {
        let _ = self.stop.send(true);
        let mut all = Tally::default();
        let mut lost = Vec::new();
        for (w, worker) in self.workers.into_iter().enumerate() {
            let t = worker.await?;
            all.ok += t.ok;
            all.refused += t.refused;
            all.reset += t.reset;
            all.failures.extend(t.failures);
            // Read back through the app: the stored value is the last acknowledged one or a later (unacknowledged)
            // one.
            if let Some(acked) = t.last_acked {
                let key = traffic_key(self.name, w);
                let what = || format!("read back {key}");
                let stored = self
                    .client
                    .get(format!("{}/get/{key}", self.base))
                    .send()
                    .await
                    .map_err(|source| Error::Http { what: what(), source })?
                    .json::<serde_json::Value>()
                    .await
                    .map_err(|source| Error::Http { what: what(), source })?;
                match stored["value"].as_u64() {
                    Some(v) if v >= acked => {}
                    other => lost.push(format!("{key}: acknowledged {acked}, stored {other:?}")),
                }
            }
        }
        let failed = all.failures.len();
        all.failures.truncate(3);
        Ok(Proof {
            claim,
            passed: failed == 0 && all.reset == 0 && all.refused == 0 && lost.is_empty() && all.ok > 0,
            figures: format!(
                "{} requests answered 2xx, {failed} failed{}, {} reset unanswered, {} connections refused; \
                 acknowledged writes lost: {}",
                all.ok,
                if all.failures.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", all.failures.join("; "))
                },
                all.reset,
                all.refused,
                if lost.is_empty() {
                    "none".to_string()
                } else {
                    lost.join("; ")
                },
            ),
        })
    }
}

fn traffic_key(name: &str, worker: usize) -> String {
    format!("gameday-{name}-{worker}")
}

/// SIGTERM to one replica twice, 20 s apart, under [`Traffic`]; the supervisor restarts it each time.
pub async fn sigterm_twice(ctx: Arc<Ctx>) -> Result<Proof, Error> {
    let traffic = Traffic::start(&ctx, "sigterm");
    let first = ctx.replica_names().remove(0);
    let result = async {
        sleep(Duration::from_secs(3)).await;
        for round in 0..2 {
            if round > 0 {
                sleep(Duration::from_secs(20)).await;
            }
            ctx.supervisor("signal TERM", &first).await?;
            sleep(Duration::from_secs(1)).await;
            ctx.wait_app_healthy(Duration::from_secs(30)).await?;
        }
        sleep(Duration::from_secs(3)).await;
        Ok::<(), Error>(())
    }
    .await;
    let proof = traffic
        .prove(format!(
            "SIGTERM to replica {first} under load (twice): no request fails and no acknowledged write is lost"
        ))
        .await;
    result?;
    proof
}

/// Whether a request failed on a TCP reset before any answer: what a connection still queued in a listener's
/// backlog gets when the listener closes (the app drains its backlog on shutdown so that none is; see
/// app/service/src/listener.rs). Counted apart from other failures because it tells that cause.
fn reset_before_answer(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionReset {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// Counts the request-duration series the app exposes.
async fn app_http_series(ctx: &Ctx) -> Result<usize, Error> {
    let url = format!("{}/metrics", ctx.args.admin[0].trim_end_matches('/'));
    let http = |source| Error::Http {
        what: url.clone(),
        source,
    };
    let text = ctx
        .admin_auth
        .apply(ctx.http.get(&url))
        .send()
        .await
        .map_err(http)?
        .text()
        .await
        .map_err(http)?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_bucket{"))
        .count())
}

async fn prometheus_http_series(ctx: &Ctx) -> Result<f64, Error> {
    let samples = ctx
        .prometheus
        .query(r#"count(http_server_request_duration_seconds_bucket{job="app"})"#)
        .await?;
    Ok(samples.first().map(|s| s.number()).unwrap_or(0.0))
}

/// 10,000 requests to random unknown paths: every one is 404, and the number of HTTP series stays the same, in
/// the app and in Prometheus (all unknown paths share the route label `unmatched`).
pub async fn random_paths(ctx: Arc<Ctx>, scrape: Duration) -> Proof {
    let claim = "a scan of 10,000 random paths leaves the number of HTTP series unchanged".to_string();
    let base = ctx.args.app.trim_end_matches('/').to_string();
    let fail = |figures: String| Proof {
        claim: claim.clone(),
        passed: false,
        figures,
    };
    // One unknown path per method first, on every replica itself (through HAProxy, each would get only some), so
    // the `unmatched` 404 series exist before counting.
    for replica in &ctx.args.replica_api {
        let replica = replica.trim_end_matches('/');
        let _ = ctx.http.get(format!("{replica}/gameday-warm-up")).send().await;
        let _ = ctx.http.post(format!("{replica}/gameday-warm-up")).send().await;
    }
    sleep(scrape * 2 + Duration::from_secs(1)).await;
    let (app_before, prom_before) = match (app_http_series(&ctx).await, prometheus_http_series(&ctx).await) {
        (Ok(a), Ok(p)) => (a, p),
        (a, p) => return fail(format!("could not count series: {a:?} {p:?}")),
    };
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16u64 {
        let (client, base) = (ctx.http.clone(), base.clone());
        tasks.spawn(async move {
            let mut other = 0u64;
            for i in 0..625u64 {
                let path: String = (0..fastrand::usize(1..4))
                    .map(|_| format!("/{:x}", fastrand::u64(..)))
                    .collect();
                let request = if i % 5 == 0 {
                    client.post(format!("{base}{path}?w={worker}"))
                } else {
                    client.get(format!("{base}{path}"))
                };
                match request.send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {}
                    _ => other += 1,
                }
            }
            other
        });
    }
    let not_404: u64 = tasks.join_all().await.into_iter().sum();
    let took = started.elapsed();
    sleep(scrape * 2 + Duration::from_secs(1)).await;
    let (app_after, prom_after) = match (app_http_series(&ctx).await, prometheus_http_series(&ctx).await) {
        (Ok(a), Ok(p)) => (a, p),
        (a, p) => return fail(format!("could not count series: {a:?} {p:?}")),
    };
    Proof {
        claim,
        passed: not_404 == 0 && app_before == app_after && prom_before == prom_after,
        figures: format!(
            "10000 requests in {:.1} s, {not_404} not answered 404; bucket series in the app {app_before} → \
             {app_after}, in Prometheus {prom_before} → {prom_after}",
            took.as_secs_f64()
        ),
    }
}

/// Runs the dashboards' live check (every panel query against Prometheus, data required).
pub async fn dashboards(ctx: &Ctx) -> Proof {
    let claim = "after load, every dashboard panel query returns data from Prometheus".to_string();
    let command = ctx.args.dashboards_check.replace("{prometheus}", &ctx.args.prometheus);
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .output()
        .await;
    match output {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            if !out.status.success() {
                eprintln!("{text}");
            }
            Proof {
                claim,
                passed: out.status.success(),
                figures: format!("`{command}`: {last}"),
            }
        }
        Err(e) => Proof {
            claim,
            passed: false,
            figures: format!("{command}: {e}"),
        },
    }
}
