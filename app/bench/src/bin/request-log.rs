//! `request-log`: what the request log line costs to format, three ways, measured in-process.
//!
//! - `shipped`: `app::telemetry::request_log::format_line`, what the app writes for each request (the line's
//!   layout written in place, its values by serde_json, the timestamp by humantime);
//! - `serde`: a `#[derive(Serialize)]` struct of the same fields through `serde_json::to_writer`;
//! - `tracing`: the line as a `tracing` event through `tracing-subscriber`'s JSON formatter, set up as for the app's
//!   other lines (`request_log::log` takes that path when the app's own sink is not installed, as here).
//!
//! `--way all` (the default) formats `--lines` lines (default 1,000,000) each way into a reused buffer, in five
//! interleaved rounds so that a shared machine disturbs them alike, and prints one JSON object: the best round's
//! nanoseconds per line for each way and their ratios to the shipped one. `--way shipped|serde|tracing` runs one
//! way once and prints its nanoseconds per line, for instruction counts under callgrind (see docs/performance.md).
//! Bench-only; run a release build.

use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant, SystemTime};

use app::config::LogFormat;
use app::telemetry::request_log::{self, RequestLine};
use app::telemetry::span_fields::JsonSpanFields;
use serde::Serialize;

const ROUNDS: usize = 5;
const USAGE: &str = "usage: request-log [--lines N] [--way all|shipped|serde|tracing]";

fn main() {
    let mut lines = 1_000_000usize;
    let mut way = "all".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--lines", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => lines = n.parse().unwrap(),
            ("--way", Some(w)) if ["all", "shipped", "serde", "tracing"].contains(&w.as_str()) => way = w,
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    // A request id as the middleware generates them, a route template, a latency of the app's usual size.
    let line = RequestLine {
        method: "GET",
        route: "/get/{key}",
        status: 200,
        latency: Duration::from_nanos(61_234),
        request_id: "3f1c9a0b7d2e4f6a8b9c0d1e2f3a4b5c",
    };
    let mut buf = Vec::with_capacity(512);
    let mut run = |way: &str| match way {
        "shipped" => per_line(lines, || {
            buf.clear();
            request_log::format_line(&mut buf, LogFormat::Json, SystemTime::now(), black_box(&line));
            black_box(&buf);
        }),
        "serde" => per_line(lines, || {
            buf.clear();
            serde_line(&mut buf, SystemTime::now(), black_box(&line));
            black_box(&buf);
        }),
        _ => through_tracing(lines, &line),
    };
    if way != "all" {
        println!("{{\"way\":\"{way}\",\"lines\":{lines},\"ns\":{:.0}}}", run(&way));
        return;
    }
    let mut best = [f64::INFINITY; 3];
    for _ in 0..ROUNDS {
        for (i, way) in ["shipped", "serde", "tracing"].into_iter().enumerate() {
            best[i] = best[i].min(run(way));
        }
    }
    let [shipped, serde, tracing] = best;
    println!(
        "{{\"lines\":{lines},\"rounds\":{ROUNDS},\"shipped_ns\":{shipped:.0},\"serde_ns\":{serde:.0},\
         \"tracing_ns\":{tracing:.0},\"serde_over_shipped\":{:.2},\"tracing_over_shipped\":{:.2}}}",
        serde / shipped,
        tracing / shipped,
    );
}

/// Nanoseconds per call of `format`, over `lines` calls.
fn per_line(lines: usize, mut format: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..lines {
        format();
    }
    started.elapsed().as_nanos() as f64 / lines as f64
}

/// The request line as a plain struct: the same keys in the same order as the app's line.
#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(serialize_with = "rfc3339_micros")]
    timestamp: SystemTime,
    level: &'static str,
    message: &'static str,
    method: &'a str,
    route: &'a str,
    status: u16,
    latency_ms: f64,
    request_id: &'a str,
    target: &'static str,
}

fn rfc3339_micros<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(*at))
}

fn serde_line(buf: &mut Vec<u8>, now: SystemTime, line: &RequestLine<'_>) {
    let json = JsonLine {
        timestamp: now,
        level: "INFO",
        message: "request",
        method: line.method,
        route: line.route,
        status: line.status,
        latency_ms: line.latency.as_nanos() as f64 / 1e6,
        request_id: line.request_id,
        target: request_log::TARGET,
    };
    let _ = serde_json::to_writer(&mut *buf, &json);
    buf.push(b'\n');
}

/// The `tracing` way: the formatter writes into its own per-thread buffer and hands the line to a writer that
/// keeps nothing (the app's batched stdout would copy it, as it copies the shipped line).
fn through_tracing(lines: usize, line: &RequestLine<'_>) -> f64 {
    let subscriber = tracing_subscriber::fmt()
        .with_target(true)
        .with_writer(|| Discard)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .fmt_fields(JsonSpanFields)
        .finish();
    tracing::subscriber::with_default(subscriber, || per_line(lines, || request_log::log(black_box(line))))
}

struct Discard;

impl io::Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(black_box(buf).len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
