//! `opsctl load`: steady traffic against the app's key-value API so the dashboards and SLO rules have data.
//!
//! Requests start on a fixed schedule (open loop: a slow answer does not slow the sender) with at most
//! `--concurrency` in flight; when that limit holds the sender back it catches up, but never by more than one
//! second's worth, and the report says how far behind it fell. Reads go to `GET /get/{key}` over a pre-seeded key
//! space (optionally a share of them to keys that do not exist), writes to `POST /set`.

pub mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use reqwest::{Client, StatusCode};
use serde_json::json;
use stack::topology::Topology;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};

use crate::clients::{http_client, join};
use crate::duration::{format_duration, parse_duration};
use stats::{Op, Outcome, Report, ReportSetup, Sample, Stats};

/// Arguments of `opsctl load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Base URL of the app's API.
    #[arg(long, default_value_t = Topology::embedded().url("haproxy", "public"))]
    pub url: String,
    /// Requests started per second.
    #[arg(long, default_value_t = 200.0, value_parser = positive_number)]
    pub rate: f64,
    /// How long to send (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = positive_duration)]
    pub duration: Duration,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Number of distinct keys, written once before the run so reads find them.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub keys: u64,
    /// Share of requests that are reads (GET /get/{key}); the rest are writes (POST /set).
    #[arg(long, default_value_t = 0.8, value_parser = ratio)]
    pub read_ratio: f64,
    /// Share of reads that ask for a key that does not exist (a 404 is then the expected answer); raises the
    /// cache miss ratio.
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub missing_ratio: f64,
    /// Share of requests that are `GET /helloworld`, which touches neither Postgres nor Redis: healthy API traffic
    /// that leaves the cache and database figures alone (the rest follow --read-ratio).
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub hello_ratio: f64,
    /// Prefix of every key this run reads or writes.
    #[arg(long, default_value = "load", value_parser = key_prefix)]
    pub key_prefix: String,
    /// Time limit of each request.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Do not write the key space first (it exists from an earlier run with the same --keys and --key-prefix).
    #[arg(long)]
    pub no_seed: bool,
    /// Print the final report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress line every second.
    #[arg(long)]
    pub quiet: bool,
}

fn positive_number(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a number greater than 0, got {text:?}")),
    }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).and_then(|d| {
        if d.is_zero() {
            Err("the duration must be greater than 0".to_string())
        } else {
            Ok(d)
        }
    })
}

fn ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a fraction between 0 and 1, got {text:?}")),
    }
}

/// Keys go into URL paths: keep them to characters that need no escaping.
fn key_prefix(text: &str) -> Result<String, String> {
    if !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        Ok(text.to_string())
    } else {
        Err("use 1 to 64 letters, digits, '-', '_' or '.'".to_string())
    }
}

/// Where requests go, shared by the sending tasks.
struct Api {
    client: Client,
    base: String,
}

/// One request to make.
struct Planned {
    op: Op,
    key: String,
    seq: u64,
}

/// Runs the load until the duration is over or `stop` completes (Ctrl-C), then reports.
pub async fn run(args: &LoadArgs, stop: impl Future<Output = ()>) -> Report {
    let concurrency = args.concurrency as usize;
    let api = Arc::new(Api {
        client: http_client(args.timeout, concurrency),
        base: args.url.trim_end_matches('/').to_string(),
    });
    let say = |line: String| {
        if !args.quiet {
            eprintln!("{line}");
        }
    };

    let (seeded_keys, seed_errors) = if args.no_seed {
        (0, 0)
    } else {
        say(format!("load: writing {} keys to {} …", args.keys, api.base));
        let started = Instant::now();
        let (ok, failed) = seed(&api, args, concurrency).await;
        say(format!(
            "load: {ok} keys written, {failed} failed, in {}",
            format_duration(started.elapsed())
        ));
        (ok, failed)
    };

    say(format!(
        "load: {:.1} req/s for {} at most {} in flight, {:.0}% reads ({:.0}% of them to missing keys)",
        args.rate,
        format_duration(args.duration),
        concurrency,
        args.read_ratio * 100.0,
        args.missing_ratio * 100.0
    ));
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut stats = Stats::default();
    let mut rng = fastrand::Rng::new();
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let end = start + args.duration;
    let mut next = start;
    let mut sent = 0u64;
    let mut max_lag = Duration::ZERO;
    let mut progress = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    progress.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_progress = start;
    let mut print_progress = |stats: &mut Stats, sent: u64, in_flight: usize| {
        let now = Instant::now();
        let line = stats.progress_line(now - start, now - last_progress, sent, in_flight as u64);
        last_progress = now;
        say(line);
    };
    tokio::pin!(stop);

    // Send on schedule until the duration is over.
    while next < end && Instant::now() < end {
        tokio::select! {
            biased;
            () = &mut stop => {
                say("load: interrupted; waiting for requests in flight".to_string());
                break;
            }
            Some(sample) = rx.recv() => stats.add(&sample),
            _ = progress.tick() => print_progress(&mut stats, sent, concurrency - permits.available_permits()),
            permit = async { sleep_until(next).await; permits.clone().acquire_owned().await } => {
                let permit = permit.expect("the semaphore is never closed");
                let now = Instant::now();
                max_lag = max_lag.max(now.saturating_duration_since(next));
                tokio::spawn(send(api.clone(), plan(&mut rng, args, sent), permit, tx.clone()));
                sent += 1;
                next += period;
                // Behind by more than a second (the concurrency limit held us back): drop the backlog rather
                // than burst it at the app once it recovers.
                if now.saturating_duration_since(next) > Duration::from_secs(1) {
                    next = now;
                }
            }
        }
    }

    // Let the requests in flight finish; each is bounded by --timeout.
    drop(tx);
    loop {
        tokio::select! {
            sample = rx.recv() => match sample {
                Some(sample) => stats.add(&sample),
                None => break,
            },
            _ = progress.tick() => print_progress(&mut stats, sent, concurrency - permits.available_permits()),
        }
    }
    stats.report(ReportSetup {
        target_rate: args.rate,
        concurrency,
        elapsed: start.elapsed(),
        seeded_keys,
        seed_errors,
        sent,
        max_schedule_lag: max_lag,
    })
}

/// Writes every key of the key space once, `concurrency` at a time; returns (written, failed).
async fn seed(api: &Arc<Api>, args: &LoadArgs, concurrency: usize) -> (u64, u64) {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..args.keys {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let planned = Planned {
            op: Op::Write,
            key: format!("{}-{i}", args.key_prefix),
            seq: i,
        };
        tasks.spawn(send(api.clone(), planned, permit, tx.clone()));
    }
    drop(tx);
    tasks.join_all().await;
    let (mut ok, mut failed) = (0, 0);
    while let Some(sample) = rx.recv().await {
        if sample.outcome == Outcome::Ok {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    (ok, failed)
}

/// Picks the next request: `/helloworld` by `--hello-ratio`, else a read or a write by `--read-ratio`, a missing
/// key by `--missing-ratio`.
fn plan(rng: &mut fastrand::Rng, args: &LoadArgs, seq: u64) -> Planned {
    let prefix = &args.key_prefix;
    if args.hello_ratio > 0.0 && rng.f64() < args.hello_ratio {
        Planned {
            op: Op::Hello,
            key: String::new(),
            seq,
        }
    } else if rng.f64() < args.read_ratio {
        if rng.f64() < args.missing_ratio {
            // Random, so each is a real miss in the cache too, not a cached "absent" answer.
            Planned {
                op: Op::ReadMissing,
                key: format!("{prefix}-missing-{:016x}", rng.u64(..)),
                seq,
            }
        } else {
            Planned {
                op: Op::Read,
                key: format!("{prefix}-{}", rng.u64(0..args.keys)),
                seq,
            }
        }
    } else {
        Planned {
            op: Op::Write,
            key: format!("{prefix}-{}", rng.u64(0..args.keys)),
            seq,
        }
    }
}

/// Sends one request, reads the whole answer, and reports the sample.
async fn send(api: Arc<Api>, planned: Planned, permit: OwnedSemaphorePermit, results: mpsc::UnboundedSender<Sample>) {
    let started = Instant::now();
    let request = match planned.op {
        Op::Hello => api.client.get(join(&api.base, "/helloworld")),
        Op::Read | Op::ReadMissing => api.client.get(join(&api.base, &format!("/get/{}", planned.key))),
        Op::Write => api.client.post(join(&api.base, "/set")).json(&json!({
            "key": planned.key,
            "value": {"seq": planned.seq, "by": "opsctl load"},
        })),
    };
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(_) if expected(planned.op, status) => Outcome::Ok,
                Ok(_) => Outcome::Status(status.as_u16()),
                Err(e) => transport(&e),
            }
        }
        Err(e) => transport(&e),
    };
    let latency = started.elapsed();
    drop(permit);
    let _ = results.send(Sample {
        op: planned.op,
        outcome,
        latency,
    });
}

fn expected(op: Op, status: StatusCode) -> bool {
    match op {
        Op::Hello | Op::Read | Op::Write => status.is_success(),
        Op::ReadMissing => status == StatusCode::NOT_FOUND,
    }
}

fn transport(e: &reqwest::Error) -> Outcome {
    if e.is_timeout() {
        Outcome::Timeout
    } else if e.is_connect() {
        Outcome::Connect
    } else {
        Outcome::Transport
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: LoadArgs,
    }

    fn parse(argv: &[&str]) -> Result<LoadArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("load").chain(argv.iter().copied())).map(|w| w.args)
    }

    #[test]
    fn defaults_match_the_documented_invocation() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.url, "http://127.0.0.1:8080");
        assert_eq!((args.rate, args.concurrency, args.keys), (200.0, 16, 1000));
        assert_eq!(args.duration, Duration::from_secs(60));
        assert_eq!((args.read_ratio, args.missing_ratio), (0.8, 0.0));
    }

    #[test]
    fn bad_arguments_are_refused() {
        for argv in [
            &["--rate", "0"][..],
            &["--rate", "fast"],
            &["--duration", "0s"],
            &["--concurrency", "0"],
            &["--keys", "0"],
            &["--read-ratio", "1.5"],
            &["--missing-ratio", "-0.1"],
            &["--key-prefix", "a/b"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?} was accepted");
        }
    }

    #[test]
    fn the_mix_follows_the_ratios() {
        let args = parse(&["--read-ratio", "0.75", "--missing-ratio", "0.5", "--keys", "10"]).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut reads, mut missing, mut writes) = (0, 0, 0);
        for seq in 0..10_000 {
            let p = plan(&mut rng, &args, seq);
            match p.op {
                Op::Read => {
                    reads += 1;
                    let n: u64 = p.key.strip_prefix("load-").unwrap().parse().unwrap();
                    assert!(n < 10);
                }
                Op::ReadMissing => missing += 1,
                Op::Write => writes += 1,
                Op::Hello => panic!("no --hello-ratio, no /helloworld"),
            }
        }
        assert!((3500..4000).contains(&reads), "{reads}");
        assert!((3500..4000).contains(&missing), "{missing}");
        assert!((2300..2700).contains(&writes), "{writes}");
    }
}
