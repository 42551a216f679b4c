//! What a load run measures: outcomes by cause, latency histograms, the per-second progress line and the final
//! report (text or JSON).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// What a request was meant to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /helloworld`.
    Hello,
    /// `GET /get/{key}` of a seeded key.
    Read,
    /// `GET /get/{key}` of a key that does not exist (404 expected).
    ReadMissing,
    /// `POST /set`.
    Write,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The status the operation expects (2xx, or 404 for a missing key).
    Ok,
    /// Any other status.
    Status(u16),
    /// The request timed out.
    Timeout,
    /// No connection could be made.
    Connect,
    /// Anything else on the way (reset, malformed response).
    Transport,
}

impl Outcome {
    /// The key errors are counted under.
    fn cause(&self) -> String {
        match self {
            Outcome::Ok => "ok".to_string(),
            Outcome::Status(code) => format!("HTTP {code}"),
            Outcome::Timeout => "timeout".to_string(),
            Outcome::Connect => "connect error".to_string(),
            Outcome::Transport => "transport error".to_string(),
        }
    }
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub op: Op,
    pub outcome: Outcome,
    /// From sending the request to reading the whole response (transport failures included).
    pub latency: Duration,
}

/// Latency histograms in microseconds, 1 µs to 60 s at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

fn record(h: &mut Histogram<u64>, latency: Duration) {
    let micros = (latency.as_micros() as u64).clamp(1, h.high());
    h.record(micros).expect("the value is clamped into range");
}

/// Running totals, fed one sample at a time.
pub struct Stats {
    all: Histogram<u64>,
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    /// Since the last progress line.
    window: Histogram<u64>,
    window_done: u64,
    window_errors: u64,
    done: u64,
    ok: u64,
    ok_reads: u64,
    ok_missing_reads: u64,
    ok_writes: u64,
    errors: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            all: histogram(),
            reads: histogram(),
            writes: histogram(),
            window: histogram(),
            window_done: 0,
            window_errors: 0,
            done: 0,
            ok: 0,
            ok_reads: 0,
            ok_missing_reads: 0,
            ok_writes: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Stats {
    /// Counts one finished request. Latency is recorded for every request that ended, errors included: a slow
    /// failure is part of what the caller waited for.
    pub fn add(&mut self, sample: &Sample) {
        self.done += 1;
        self.window_done += 1;
        record(&mut self.all, sample.latency);
        record(&mut self.window, sample.latency);
        match sample.op {
            Op::Hello | Op::Read | Op::ReadMissing => record(&mut self.reads, sample.latency),
            Op::Write => record(&mut self.writes, sample.latency),
        }
        if sample.outcome == Outcome::Ok {
            self.ok += 1;
            match sample.op {
                Op::Hello | Op::Read => self.ok_reads += 1,
                Op::ReadMissing => self.ok_missing_reads += 1,
                Op::Write => self.ok_writes += 1,
            }
        } else {
            self.window_errors += 1;
            *self.errors.entry(sample.outcome.cause()).or_default() += 1;
        }
    }

    /// Requests that got the expected answer.
    pub fn ok(&self) -> u64 {
        self.ok
    }

    /// One progress line for the last window, then starts a new window.
    pub fn progress_line(&mut self, elapsed: Duration, window: Duration, sent: u64, in_flight: u64) -> String {
        let rate = self.window_done as f64 / window.as_secs_f64().max(1e-9);
        let p99 = if self.window.is_empty() {
            "-".to_string()
        } else {
            ms(self.window.value_at_quantile(0.99))
        };
        let line = format!(
            concat!(
                "[{:>5.0}s] sent {sent:>7}  done {:>7}  errors {:>5} (+{})  ",
                "{rate:>7.1} req/s  p99 {p99:>8}  in flight {in_flight}"
            ),
            elapsed.as_secs_f64(),
            self.done,
            self.done - self.ok,
            self.window_errors,
            sent = sent,
            rate = rate,
            p99 = p99,
            in_flight = in_flight,
        );
        self.window.reset();
        self.window_done = 0;
        self.window_errors = 0;
        line
    }

    /// The final report.
    pub fn report(&self, setup: ReportSetup) -> Report {
        let elapsed = setup.elapsed.as_secs_f64().max(1e-9);
        Report {
            target_rate: setup.target_rate,
            concurrency: setup.concurrency,
            duration_seconds: setup.elapsed.as_secs_f64(),
            seeded_keys: setup.seeded_keys,
            seed_errors: setup.seed_errors,
            sent: setup.sent,
            completed: self.done,
            achieved_rate: self.done as f64 / elapsed,
            ok: self.ok,
            ok_reads: self.ok_reads,
            ok_missing_reads: self.ok_missing_reads,
            ok_writes: self.ok_writes,
            errors: self.done - self.ok,
            errors_by_cause: self.errors.clone(),
            max_schedule_lag_seconds: setup.max_schedule_lag.as_secs_f64(),
            latency: Latency::of(&self.all),
            read_latency: Latency::of(&self.reads),
            write_latency: Latency::of(&self.writes),
        }
    }
}

/// What the report needs besides the samples.
pub struct ReportSetup {
    pub target_rate: f64,
    pub concurrency: usize,
    pub elapsed: Duration,
    pub seeded_keys: u64,
    pub seed_errors: u64,
    pub sent: u64,
    pub max_schedule_lag: Duration,
}

/// Latency percentiles in seconds; `None` when nothing was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let at = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e6);
        Latency {
            count: h.len(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: (!h.is_empty()).then(|| h.max() as f64 / 1e6),
        }
    }

    fn line(&self) -> String {
        let f = |v: Option<f64>| v.map(|s| ms((s * 1e6) as u64)).unwrap_or_else(|| "-".to_string());
        format!(
            "p50 {:>9}  p90 {:>9}  p99 {:>9}  max {:>9}  (n={})",
            f(self.p50),
            f(self.p90),
            f(self.p99),
            f(self.max),
            self.count
        )
    }
}

/// The result of a load run; `--json` prints it as is.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target_rate: f64,
    pub concurrency: usize,
    pub duration_seconds: f64,
    pub seeded_keys: u64,
    pub seed_errors: u64,
    /// Requests started.
    pub sent: u64,
    /// Requests that ended (answer or failure).
    pub completed: u64,
    /// Completed requests per second of the run.
    pub achieved_rate: f64,
    pub ok: u64,
    /// Reads of existing keys (and `GET /helloworld`) answered 2xx.
    pub ok_reads: u64,
    /// Reads of missing keys answered 404, as expected.
    pub ok_missing_reads: u64,
    pub ok_writes: u64,
    pub errors: u64,
    pub errors_by_cause: BTreeMap<String, u64>,
    /// How far the sender fell behind its schedule at worst: more than a fraction of a second means the
    /// concurrency limit, not the rate, bounded the run.
    pub max_schedule_lag_seconds: f64,
    pub latency: Latency,
    pub read_latency: Latency,
    pub write_latency: Latency,
}

impl Report {
    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "load: {} requests completed in {:.1}s: {:.1} req/s achieved (target {:.1} req/s, concurrency {})",
            self.completed, self.duration_seconds, self.achieved_rate, self.target_rate, self.concurrency
        );
        let _ = writeln!(out, "  seeded keys: {} ({} failed)", self.seeded_keys, self.seed_errors);
        let _ = writeln!(
            out,
            "  ok: {} (reads {}, reads of missing keys {}, writes {})",
            self.ok, self.ok_reads, self.ok_missing_reads, self.ok_writes
        );
        if self.errors_by_cause.is_empty() {
            let _ = writeln!(out, "  errors: 0");
        } else {
            let causes: Vec<String> = self
                .errors_by_cause
                .iter()
                .map(|(cause, n)| format!("{cause}: {n}"))
                .collect();
            let _ = writeln!(out, "  errors: {} ({})", self.errors, causes.join(", "));
        }
        let _ = writeln!(out, "  latency  all     {}", self.latency.line());
        let _ = writeln!(out, "           reads   {}", self.read_latency.line());
        let _ = writeln!(out, "           writes  {}", self.write_latency.line());
        if self.max_schedule_lag_seconds > 0.1 {
            let _ = writeln!(
                out,
                "  note: the sender fell up to {:.1}s behind schedule: raise --concurrency or lower --rate",
                self.max_schedule_lag_seconds
            );
        }
        out
    }
}

/// Microseconds as milliseconds with a sensible precision.
fn ms(micros: u64) -> String {
    let ms = micros as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(op: Op, outcome: Outcome, millis: u64) -> Sample {
        Sample {
            op,
            outcome,
            latency: Duration::from_millis(millis),
        }
    }

    #[test]
    fn the_report_counts_outcomes_and_percentiles() {
        let mut stats = Stats::default();
        for i in 1..=100 {
            stats.add(&sample(Op::Read, Outcome::Ok, i));
        }
        stats.add(&sample(Op::ReadMissing, Outcome::Ok, 1));
        stats.add(&sample(Op::Write, Outcome::Status(503), 2));
        stats.add(&sample(Op::Write, Outcome::Timeout, 5000));
        let report = stats.report(ReportSetup {
            target_rate: 100.0,
            concurrency: 4,
            elapsed: Duration::from_secs(2),
            seeded_keys: 10,
            seed_errors: 0,
            sent: 103,
            max_schedule_lag: Duration::ZERO,
        });
        assert_eq!((report.completed, report.ok, report.errors), (103, 101, 2));
        assert_eq!(report.ok_missing_reads, 1);
        assert_eq!(report.errors_by_cause.get("HTTP 503"), Some(&1));
        assert_eq!(report.errors_by_cause.get("timeout"), Some(&1));
        assert!((report.achieved_rate - 51.5).abs() < 1e-9);
        let p50 = report.read_latency.p50.unwrap();
        assert!((0.049..=0.051).contains(&p50), "{p50}");
        assert!((report.latency.max.unwrap() - 5.0).abs() < 0.01);
        let text = report.text();
        assert!(text.contains("errors: 2 (HTTP 503: 1, timeout: 1)"), "{text}");
        assert!(text.contains("51.5 req/s achieved"), "{text}");
    }

    #[test]
    fn the_progress_line_covers_only_its_window() {
        let mut stats = Stats::default();
        stats.add(&sample(Op::Write, Outcome::Connect, 1));
        let first = stats.progress_line(Duration::from_secs(1), Duration::from_secs(1), 1, 0);
        assert!(first.contains("errors     1 (+1)"), "{first}");
        let second = stats.progress_line(Duration::from_secs(2), Duration::from_secs(1), 1, 0);
        assert!(second.contains("(+0)") && second.contains("p99        -"), "{second}");
    }
}
