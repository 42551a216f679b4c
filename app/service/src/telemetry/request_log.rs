//! The one log line per API request, formatted by hand instead of by `tracing-subscriber`'s formatter.
//!
//! Why: measured with perf under `make bench`, the `tracing` event for this line (field visitor, a map of the
//! fields, serde_json, UTF-8 checks, a String per field) was the largest single cost of a `GET /helloworld`
//! after the socket calls. The line has five known fields, so it is written straight into a per-thread buffer in
//! the same layout the subscriber uses (same keys, same order, same timestamp format) and handed to the same
//! batched stdout as every other line (see [`super::log_output`]).
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
        // Nanoseconds over 1e6 rounds once, to the f64 nearest the exact decimal the hand-written line shows.
        let latency_ms = line.latency.as_nanos() as f64 / 1e6;
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
/// Control characters are left to the writer, which escapes every line (see `log_output`).
fn format_line(buf: &mut Vec<u8>, format: LogFormat, now: SystemTime, line: &RequestLine<'_>) {
    let method = bounded(line.method, MAX_FIELD_CHARS);
    match format {
        LogFormat::Json => {
            buf.extend_from_slice(b"{\"timestamp\":\"");
            write_timestamp(buf, now);
            buf.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":\"");
            write_json_str(buf, &method);
            buf.extend_from_slice(b"\",\"route\":\"");
            write_json_str(buf, line.route);
            buf.extend_from_slice(b"\",\"status\":");
            write_u64(buf, line.status.into(), 1);
            buf.extend_from_slice(b",\"latency_ms\":");
            write_latency_ms(buf, line.latency);
            buf.extend_from_slice(b",\"request_id\":\"");
            write_json_str(buf, line.request_id);
            buf.extend_from_slice(b"\",\"target\":\"app::http\"}\n");
        }
        LogFormat::Text => {
            write_timestamp(buf, now);
            // The route is a string field, which the text formatter quotes; method and id are displayed as is.
            let _ = write!(
                buf,
                "  INFO {TARGET}: request method={} route={:?} status={} latency_ms=",
                method, line.route, line.status
            );
            write_latency_ms(buf, line.latency);
            let _ = writeln!(buf, " request_id={}", line.request_id);
        }
    }
}

/// The latency in milliseconds as a decimal number, exact to the nanosecond: `0.002163`, `12.5`, `3.0`. The same
/// digits as the shortest form of the `f64` `nanos / 1e6` that the `tracing` path logs, written without
/// floating-point formatting.
fn write_latency_ms(buf: &mut Vec<u8>, latency: Duration) {
    let nanos = latency.as_nanos();
    write_u64(buf, u64::try_from(nanos / 1_000_000).unwrap_or(u64::MAX), 1);
    buf.push(b'.');
    let mut fraction = (nanos % 1_000_000) as u64;
    let mut width = 6;
    while width > 1 && fraction.is_multiple_of(10) {
        fraction /= 10;
        width -= 1;
    }
    write_u64(buf, fraction, width);
}

/// RFC 3339 in UTC with microseconds, `2026-11-23T07:55:52.123456Z`: the subscriber's default timestamp.
fn write_timestamp(buf: &mut Vec<u8>, now: SystemTime) {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_date(secs / 86_400);
    let of_day = secs % 86_400;
    // Digits go into a fixed template: one copy into the line, no formatting machinery.
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], month);
    put_digits(&mut text[8..10], day);
    put_digits(&mut text[11..13], of_day / 3600);
    put_digits(&mut text[14..16], of_day / 60 % 60);
    put_digits(&mut text[17..19], of_day % 60);
    put_digits(&mut text[20..26], since_epoch.subsec_micros().into());
    buf.extend_from_slice(&text);
}

/// Fills `slot` with the last `slot.len()` decimal digits of `value`, zero-padded.
fn put_digits(slot: &mut [u8], mut value: u64) {
    for digit in slot.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
///
/// Counts from 0000-03-01 instead, so that the leap day is the last day of its year: the date then follows from
/// whole 400-year cycles (146097 days), years of 365 days plus the leap rules, and months of a fixed 153-day
/// pattern per five months starting in March.
fn civil_date(days_since_epoch: u64) -> (u64, u64, u64) {
    // 1970-01-01 is day 719468 counting from 0000-03-01.
    let days = days_since_epoch + 719_468;
    let cycle = days / 146_097;
    let day_of_cycle = days % 146_097;
    // Leap years every 4 years, except every 100, except every 400 (the last day of a cycle).
    let year_of_cycle = (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36_524 - day_of_cycle / 146_096) / 365;
    let day_of_year = day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = cycle * 400 + year_of_cycle + u64::from(month <= 2);
    (year, month, day)
}

/// Decimal digits of `value`, zero-padded to at least `width` (at most 20).
fn write_u64(buf: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [0u8; 20];
    let len = (value.checked_ilog10().unwrap_or(0) as usize + 1).max(width).min(20);
    put_digits(&mut digits[..len], value);
    buf.extend_from_slice(&digits[..len]);
}

/// The contents of a JSON string: quotes, backslashes and control characters escaped, the rest (UTF-8) as is.
/// Request ids are visible ASCII but may hold `"` or `\`, so escaping is not optional.
fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20) {
        buf.extend_from_slice(bytes);
        return;
    }
    let mut clean = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        buf.extend_from_slice(&bytes[clean..i]);
        buf.extend_from_slice(escape);
        clean = i + 1;
    }
    buf.extend_from_slice(&bytes[clean..]);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;

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
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let writer = move || WriteTo(sink.clone());
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
        let logged = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        logged
    }

    struct WriteTo(Arc<Mutex<Vec<u8>>>);

    impl Write for WriteTo {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
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
            let mut buf = Vec::new();
            write_timestamp(
                &mut buf,
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
            );
            String::from_utf8(buf).unwrap()
        };
        // Expected values from an independent calendar implementation (Python's datetime).
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_795_420_552, 999_999), "2026-11-23T07:55:52.999999Z");
        assert_eq!(at(4_102_444_799, 0), "2099-12-31T23:59:59.000000Z");
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z");
    }

    #[test]
    fn every_day_follows_the_one_before() {
        // 1970 to 2400: a whole 400-year cycle plus, so every leap rule is crossed.
        let mut previous = civil_date(0);
        assert_eq!(previous, (1970, 1, 1));
        for days in 1..=(431 * 366) {
            let (y, m, d) = civil_date(days);
            let next_day = (previous.0, previous.1, previous.2 + 1);
            let next_month = (previous.0, previous.1 + 1, 1);
            let next_year = (previous.0 + 1, 1, 1);
            assert!(
                [next_day, next_month, next_year].contains(&(y, m, d)),
                "{previous:?} then {y}-{m}-{d}"
            );
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            assert!(d <= month_days[m as usize - 1], "{y}-{m}-{d}");
            if (m, d) == (1, 1) {
                assert_eq!((previous.1, previous.2), (12, 31));
            } else if d == 1 {
                assert_eq!(
                    previous.2,
                    month_days[previous.1 as usize - 1],
                    "{previous:?} then {y}-{m}-{d}"
                );
            }
            previous = (y, m, d);
        }
    }
}
