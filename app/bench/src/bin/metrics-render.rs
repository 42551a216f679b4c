//! `metrics-render`: how long the app's `/metrics` rendering takes at a given series count, measured in-process on
//! the same recorder setup the app uses (`app::telemetry::metrics::Metrics`, plus the process collector).
//!
//! Reads a `/metrics` exposition of a running app on stdin and records, for every series of
//! `http_server_request_duration_seconds` it finds (method, route, status), the same series again, so the result
//! has the real series set. `--scale N` multiplies the route/status pairs by N: each real pair gets N-1 synthetic
//! routes (`<route>/s<i>`), the way more routes would. Every cache and database operation label is recorded too, as
//! in a running app. Then it renders `--renders` times and prints one JSON object: series, bytes, and render time
//! percentiles in microseconds. Bench-only.

use std::io::Read;
use std::time::{Duration, Instant};

use app::telemetry::metrics::{CacheOp, DbOp, Metrics};
use app::telemetry::process::ProcessCollector;

/// Samples recorded per series before timing: enough to fill several buckets, as a scraped app's series are.
const SAMPLES_PER_SERIES: u64 = 20;

fn main() {
    let mut scale = 1usize;
    let mut renders = 500usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse().ok())
                .expect("a whole number after the option")
        };
        match arg.as_str() {
            "--scale" => scale = value(),
            "--renders" => renders = value(),
            _ => {
                eprintln!("usage: metrics-render [--scale N] [--renders N] < exposition.txt");
                std::process::exit(2);
            }
        }
    }
    let mut exposition = String::new();
    std::io::stdin().read_to_string(&mut exposition).expect("stdin is text");
    let series = request_series(&exposition);
    if series.is_empty() {
        eprintln!("metrics-render: no http_server_request_duration_seconds_count series on stdin");
        std::process::exit(1);
    }

    let metrics = Metrics::new(true, app::VERSION, app::REVISION);
    for (method, route, status) in &series {
        let method: &'static str = Box::leak(method.clone().into_boxed_str());
        let status: u16 = status.parse().expect("a numeric status code");
        for i in 0..scale {
            let route = if i == 0 { route.clone() } else { format!("{route}/s{i}") };
            for n in 0..SAMPLES_PER_SERIES {
                // Spread over the buckets: 0.2 ms to 20 ms.
                metrics.record_request(method, &route, status, Duration::from_micros(200 * (1 + n * n / 4)));
            }
        }
    }
    for op in [CacheOp::Get, CacheOp::Set, CacheOp::Delete] {
        metrics.cache_operation(op, Duration::from_micros(150));
    }
    for op in [DbOp::Select, DbOp::Upsert, DbOp::Ping, DbOp::Migrate] {
        for ok in [true, false] {
            metrics.db_operation(op, ok, Duration::from_micros(600));
        }
    }
    let process = ProcessCollector::new();

    let mut recorder = Vec::with_capacity(renders);
    let mut total = Vec::with_capacity(renders);
    let mut bytes = 0;
    let mut lines = 0;
    for _ in 0..renders {
        let started = Instant::now();
        let mut body = metrics.render();
        let rendered = started.elapsed();
        process.render(&mut body);
        total.push(started.elapsed());
        recorder.push(rendered);
        bytes = body.len();
        lines = body.lines().filter(|l| !l.starts_with('#')).count();
    }
    let http_series = request_series(&metrics.render()).len();
    println!(
        "{{\"scale\":{scale},\"http_request_series\":{http_series},\"samples\":{lines},\"bytes\":{bytes},\
         \"renders\":{renders},\"recorder_p50_us\":{},\"recorder_p99_us\":{},\"with_process_p50_us\":{},\
         \"with_process_p99_us\":{}}}",
        percentile_us(&mut recorder, 0.50),
        percentile_us(&mut recorder, 0.99),
        percentile_us(&mut total, 0.50),
        percentile_us(&mut total, 0.99),
    );
}

/// The (method, route, status) of every `http_server_request_duration_seconds_count` sample in an exposition.
fn request_series(exposition: &str) -> Vec<(String, String, String)> {
    let label = |labels: &str, name: &str| -> Option<String> {
        let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
        let end = start + labels[start..].find('"')?;
        Some(labels[start..end].to_owned())
    };
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("http_server_request_duration_seconds_count{"))
        .filter_map(|rest| {
            let labels = &rest[..rest.find('}')?];
            Some((
                label(labels, "http_request_method")?,
                label(labels, "http_route")?,
                label(labels, "http_response_status_code")?,
            ))
        })
        .collect()
}

fn percentile_us(samples: &mut [Duration], q: f64) -> u128 {
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[index].as_micros()
}
