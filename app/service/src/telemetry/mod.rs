//! Telemetry: log setup, the metric contract and the request middleware that measures and logs every request.

pub mod escape;
pub mod http;
pub mod log_output;
pub mod metrics;
pub mod process;
pub mod request_log;
pub mod span_fields;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use log_output::{BatchedStdout, LogFlushGuard};

/// Installs the global log subscriber: text or one JSON object per line, filtered by `filter` (tracing directives),
/// written to stdout in batches (see [`log_output`]). Call once, from `main`, and hold the guard until exit: dropping
/// it writes out the last lines.
pub fn init_logging(format: LogFormat, filter: &str) -> LogFlushGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = BatchedStdout::stdout();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(writer.clone());
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(span_fields::JsonSpanFields)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    match result {
        // Request lines skip the subscriber's formatter but not its filter, and share its output.
        Ok(()) => request_log::install(writer, format),
        Err(e) => eprintln!("app: log subscriber already installed: {e}"),
    }
    guard
}

/// An in-memory log writer for the telemetry tests: clones share one buffer, so a subscriber can write to one
/// while the test reads another.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    /// Everything written so far, as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs for tests: silent unless `TEST_LOG` is set (to a filter such as `debug`), so test output stays readable.
pub fn init_test_logging() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let filter = if filter.trim().is_empty() {
            "info".to_owned()
        } else {
            filter
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}
