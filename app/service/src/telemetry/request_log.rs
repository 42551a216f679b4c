//! The one log line per API request, written straight into a per-thread buffer instead of through
//! `tracing-subscriber`'s formatter.
//!
//! Why: measured with perf under `make bench`, the `tracing` event for this line (field visitor, a map of the
//! fields, serde_json, UTF-8 checks, a String per field) was the largest single cost of a `GET /helloworld`
//! after the socket calls. The line has five known fields, so its layout is written here in place, in the layout
//! the subscriber uses (same keys, same order, same timestamp format), and handed to the same batched stdout as
//! every other line (see [`super::log_output`]). Only the layout is ours: every value is written by serde_json
//! (strings escaped by it) and the timestamp by humantime. `app/bench`'s `request-log` measures the choice: this
//! line costs about 1.8k instructions, a `#[derive(Serialize)]` struct of the same fields 4.0k and the `tracing`
//! event 16.8k, where a whole `GET /helloworld` is about 24k (docs/performance.md).
//!
//! The log filter still decides: the line is written only when `tracing` has `INFO` enabled for the `app::http`
//! target, so `APP_LOG_LEVEL=warn` (or `app::http=off`) drops it as before. Without [`install`] (tests, or a
//! subscriber set up elsewhere) the line goes through `tracing` as an ordinary event with the same fields.

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::Level;

use super::escape::{bounded, MAX_FIELD_CHARS};
use super::log_output::BatchedStdout;
use crate::config::LogFormat;

/// The `target` of request lines: what a log filter directive names (`app::http=warn`).
pub const TARGET: &str = "app::http";

/// What one request's line says.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    /// The request method, as the client sent it: any token, of any length. Logged cut to [`MAX_FIELD_CHARS`]
    /// characters.
    pub method: &'a str,
    /// The matched route template (never the raw path), or `unmatched`.
    pub route: &'a str,
    /// The response status code.
    pub status: u16,
    /// From the request's arrival at the middleware to its response.
    pub latency: Duration,
    /// The `x-request-id` the response carries.
    pub request_id: &'a str,
}

struct Sink {
    out: BatchedStdout,
    format: LogFormat,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Writes request lines to `out` in `format` from now on. Called once, by `init_logging`, after it installed the
/// subscriber that writes every other line to the same `out`.
pub(crate) fn install(out: BatchedStdout, format: LogFormat) {
    let _ = SINK.set(Sink { out, format });
}

/// Logs one request, if the log filter lets `INFO` lines of [`TARGET`] through.
pub fn log(line: &RequestLine<'_>) {
    if !tracing::enabled!(target: TARGET, Level::INFO) {
        return;
    }
    let Some(sink) = SINK.get() else {
        let latency_ms = latency_ms(line.latency);
        tracing::info!(
            target: TARGET,
            method = %bounded(line.method, MAX_FIELD_CHARS),
            route = line.route,
            status = line.status,
            latency_ms,
            request_id = %line.request_id,
            "request"
        );
        return;
    };
    thread_local! {
        // Reused, so a line costs no allocation once the buffer has grown to fit one.
        static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        format_line(&mut buf, sink.format, SystemTime::now(), line);
        sink.out.write_line(&buf);
    });
}

/// Appends `line` as the subscriber would format it: for JSON, `{"timestamp":…,"level":"INFO","message":"request",
/// "method":…,"route":…,"status":…,"latency_ms":…,"request_id":…,"target":"app::http"}`; for text,
/// `<timestamp>  INFO app::http: request method=GET route="/x" status=200 latency_ms=… request_id=…`.
/// Only the layout is written here: the values are serde_json's (strings escaped by it) and the timestamp
/// humantime's. Control characters that JSON allows raw are left to the writer, which escapes every line (see
/// `log_output`). Public for the `request-log` benchmark.
pub fn format_line(buf: &mut Vec<u8>, format: LogFormat, now: SystemTime, line: &RequestLine<'_>) {
    let method = bounded(line.method, MAX_FIELD_CHARS);
    let written = match format {
        LogFormat::Json => write_json(buf, now, &method, line),
        // The route is a string field, which the text formatter quotes; method and id are displayed as is.
        LogFormat::Text => writeln!(
            buf,
            "{}  INFO {TARGET}: request method={method} route={:?} status={} latency_ms={:?} request_id={}",
            timestamp(now),
            line.route,
            line.status,
            latency_ms(line.latency),
            line.request_id
        )
        .map_err(serde_json::Error::io),
    };
    // Writing into a Vec cannot fail; should serde_json ever fail, no partial line is left behind.
    if written.is_err() {
        buf.clear();
    }
}

fn write_json(buf: &mut Vec<u8>, now: SystemTime, method: &str, line: &RequestLine<'_>) -> serde_json::Result<()> {
    write!(buf, "{{\"timestamp\":\"{}", timestamp(now)).map_err(serde_json::Error::io)?;
    buf.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
    serde_json::to_writer(&mut *buf, method)?;
    buf.extend_from_slice(b",\"route\":");
    serde_json::to_writer(&mut *buf, line.route)?;
    buf.extend_from_slice(b",\"status\":");
    serde_json::to_writer(&mut *buf, &line.status)?;
    buf.extend_from_slice(b",\"latency_ms\":");
    serde_json::to_writer(&mut *buf, &latency_ms(line.latency))?;
    buf.extend_from_slice(b",\"request_id\":");
    serde_json::to_writer(&mut *buf, line.request_id)?;
    buf.extend_from_slice(b",\"target\":\"app::http\"}\n");
    Ok(())
}

/// Nanoseconds over 1e6, rounded once: the `f64` nearest the exact number of milliseconds, as both paths log it.
fn latency_ms(latency: Duration) -> f64 {
    latency.as_nanos() as f64 / 1e6
}

/// RFC 3339 in UTC with microseconds, `2026-11-23T07:55:52.123456Z`: the subscriber's default timestamp. A clock
/// set outside the years 1970 to 9999 shows as the nearer end: humantime cannot write those times (its `Display`
/// fails, and `write!` then panics).
fn timestamp(now: SystemTime) -> humantime::Rfc3339Timestamp {
    let last = UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999);
    humantime::format_rfc3339_micros(now.clamp(UNIX_EPOCH, last))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::telemetry::Captured;

    fn line() -> RequestLine<'static> {
        RequestLine {
            method: "GET",
            route: "/get/{key}",
            status: 404,
            latency: Duration::from_nanos(2_163),
            request_id: "drill-42",
        }
    }

    fn formatted(format: LogFormat, line: &RequestLine<'_>) -> String {
        let mut buf = Vec::new();
        format_line(
            &mut buf,
            format,
            UNIX_EPOCH + Duration::from_micros(1_795_420_552_000_042),
            line,
        );
        String::from_utf8(buf).unwrap()
    }

    /// What `tracing-subscriber`, set up as `init_logging` sets it up, writes for the same request through the
    /// `tracing` fallback path of [`log`].
    fn through_subscriber(format: LogFormat, line: &RequestLine<'_>) -> String {
        let out = Captured::default();
        let sink = out.clone();
        let writer = move || sink.clone();
        let builder = tracing_subscriber::fmt().with_target(true).with_writer(writer);
        let dispatch = match format {
            LogFormat::Json => tracing::Dispatch::new(
                builder
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .finish(),
            ),
            LogFormat::Text => tracing::Dispatch::new(builder.with_ansi(false).finish()),
        };
        tracing::dispatcher::with_default(&dispatch, || log(line));
        out.text()
    }

    #[test]
    fn the_json_line_has_the_fields_and_order_of_the_subscribers_line() {
        let ours = formatted(LogFormat::Json, &line());
        let theirs = through_subscriber(LogFormat::Json, &line());
        assert!(ours.ends_with('\n') && theirs.ends_with('\n'), "{ours}{theirs}");
        let ours: serde_json::Map<String, Value> = serde_json::from_str(&ours).unwrap();
        let theirs: serde_json::Map<String, Value> = serde_json::from_str(&theirs).unwrap();
        let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&ours), keys(&theirs));
        for (key, value) in &theirs {
            if key != "timestamp" {
                assert_eq!(&ours[key], value, "{key}");
            }
        }
        assert_eq!(ours["timestamp"], "2026-11-23T07:55:52.000042Z");
        assert_eq!(ours["latency_ms"], 0.002163);
    }

    #[test]
    fn the_text_line_reads_as_the_subscribers_line() {
        let ours = formatted(LogFormat::Text, &line());
        let theirs = through_subscriber(LogFormat::Text, &line());
        let without_time = |s: &str| s.split_once(' ').unwrap().1.to_owned();
        assert_eq!(without_time(&ours), without_time(&theirs));
        assert!(
            ours.starts_with("2026-11-23T07:55:52.000042Z  INFO app::http: request method=GET"),
            "{ours}"
        );
    }

    #[test]
    fn request_ids_with_quotes_and_backslashes_stay_valid_json() {
        let tricky = RequestLine {
            request_id: r#"a"b\c"#,
            route: "/tab\there\u{1}",
            ..line()
        };
        let parsed: Value = serde_json::from_str(&formatted(LogFormat::Json, &tricky)).unwrap();
        assert_eq!(parsed["request_id"], r#"a"b\c"#);
        assert_eq!(parsed["route"], "/tab\there\u{1}");
    }

    #[test]
    fn a_long_method_is_cut_in_both_formats_and_both_paths() {
        let method = "X".repeat(8000);
        let long = RequestLine {
            method: &method,
            ..line()
        };
        for format in [LogFormat::Json, LogFormat::Text] {
            for logged in [formatted(format, &long), through_subscriber(format, &long)] {
                assert!(logged.len() < 600, "{format:?}: {} bytes", logged.len());
                assert!(
                    logged.contains(&format!("{}…[cut, 8000 bytes]", "X".repeat(256))),
                    "{logged}"
                );
            }
        }
    }

    #[test]
    fn latencies_of_any_size_are_json_numbers() {
        let latencies = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(1_230_000),
            Duration::from_nanos(12_345_678_901),
            Duration::from_secs(86_400 * 365),
        ];
        for latency in latencies {
            let logged = formatted(LogFormat::Json, &RequestLine { latency, ..line() });
            let parsed: Value = serde_json::from_str(&logged).unwrap();
            assert!(parsed["latency_ms"].is_number(), "{logged}");
            // std's parser rounds correctly (serde_json's default one may be off by one unit in the last place).
            let text = logged
                .split("\"latency_ms\":")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            assert_eq!(
                text.parse::<f64>().unwrap(),
                latency.as_nanos() as f64 / 1e6,
                "{logged}"
            );
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let at = |secs: u64, micros: u64| {
            timestamp(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)).to_string()
        };
        // Expected values from an independent calendar implementation (Python's datetime).
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_795_420_552, 999_999), "2026-11-23T07:55:52.999999Z");
        assert_eq!(at(4_102_444_799, 0), "2099-12-31T23:59:59.000000Z");
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z");
        // Nanoseconds are cut, not rounded up into the next microsecond.
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_nanos(1_999)).to_string(),
            "1970-01-01T00:00:00.000001Z"
        );
    }

    #[test]
    fn a_clock_outside_what_rfc3339_can_write_shows_as_the_nearer_end() {
        let cases = [
            (UNIX_EPOCH - Duration::from_secs(1), "1970-01-01T00:00:00.000000Z"),
            (
                UNIX_EPOCH + Duration::from_secs(253_402_300_800),
                "9999-12-31T23:59:59.999999Z",
            ),
        ];
        for (now, shown) in cases {
            for format in [LogFormat::Json, LogFormat::Text] {
                let mut buf = Vec::new();
                format_line(&mut buf, format, now, &line());
                let logged = String::from_utf8(buf).unwrap();
                assert!(logged.contains(shown) && logged.ends_with('\n'), "{format:?}: {logged}");
            }
        }
    }
}
