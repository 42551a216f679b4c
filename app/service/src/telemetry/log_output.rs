//! Where log lines go: standard output, written in batches.
//!
//! Writing each request's line straight to stdout costs a `write` system call per request, and the two runtime
//! threads contend for the stdout lock (futex calls on top). Measured with `make bench` and perf, that was about a
//! fifth of the CPU time of a `GET /helloworld`. So lines are appended to an in-memory buffer and written out
//! together: when the buffer reaches [`FLUSH_BYTES`], every [`FLUSH_INTERVAL`] from a background thread, when the
//! returned [`LogFlushGuard`] drops (normal exit), and at once for `WARN` and `ERROR` lines, so that what explains
//! a failure is never held back. Lines keep their order: every write goes through the same buffer.
//! The price: an `INFO` line reaches the log at most [`FLUSH_INTERVAL`] late, and is lost if the process is killed
//! with SIGKILL or aborts within that window.
//!
//! Every line passes [`escape_line`] on its way into the buffer, whoever formatted it: what a request put into
//! a field can neither start a second line nor reach a terminal as a control sequence (see [`super::escape`]).

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use super::escape::{escape_line, needs_escaping};

/// Buffered bytes that trigger a write: a few hundred request lines, one system call.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// Longest a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// A [`MakeWriter`] for the log subscriber that batches lines (see the module documentation).
#[derive(Clone)]
pub struct BatchedStdout {
    shared: Arc<Shared>,
}

struct Shared {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// The buffer being written out, swapped with `pending`. Its lock also serialises writers, so batches reach
    /// stdout in the order they were filled.
    writing: Mutex<Vec<u8>>,
    sink: BatchSink,
}

/// Where a batch goes: stdout, or a buffer in tests.
type BatchSink = Box<dyn Fn(&[u8]) + Send + Sync>;

impl BatchedStdout {
    /// Writes to the process's standard output; starts the thread that flushes every [`FLUSH_INTERVAL`].
    pub fn stdout() -> (Self, LogFlushGuard) {
        let writer = Self::to_sink(|bytes| {
            let mut out = io::stdout().lock();
            // Nowhere to report a failed log write: dropping the batch is all that can be done.
            let _ = out.write_all(bytes).and_then(|()| out.flush());
        });
        let flusher = writer.clone();
        std::thread::Builder::new()
            .name("log-flush".to_owned())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flusher.flush();
            })
            .expect("cannot start the log flushing thread");
        (writer.clone(), LogFlushGuard(writer))
    }

    /// Writes each batch to `sink` instead of stdout, without a flushing thread (for tests).
    fn to_sink(sink: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        BatchedStdout {
            shared: Arc::new(Shared {
                pending: Mutex::new(Vec::with_capacity(FLUSH_BYTES)),
                writing: Mutex::new(Vec::with_capacity(FLUSH_BYTES)),
                sink: Box::new(sink),
            }),
        }
    }

    /// Writes out whatever is buffered.
    pub fn flush(&self) {
        let mut writing = lock(&self.shared.writing);
        std::mem::swap(&mut *lock(&self.shared.pending), &mut *writing);
        if !writing.is_empty() {
            (self.shared.sink)(&writing);
            writing.clear();
        }
    }

    /// Appends one complete, non-urgent line (with its newline): how the request log line bypasses the formatter.
    pub fn write_line(&self, line: &[u8]) {
        self.append(line, false);
    }

    /// Appends one line (the formatter hands over each event's line in one piece), escaped.
    fn append(&self, bytes: &[u8], urgent: bool) {
        let full = {
            let mut pending = lock(&self.shared.pending);
            if needs_escaping(bytes) {
                escape_line(bytes, &mut pending);
            } else {
                pending.extend_from_slice(bytes);
            }
            pending.len() >= FLUSH_BYTES
        };
        if urgent || full {
            self.flush();
        }
    }
}

fn lock(m: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    // A panic while holding the lock leaves at worst a partial line; keep logging.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes out the buffered lines when dropped: hold it in `main` until the process exits.
#[must_use = "dropping the guard flushes the log; hold it until exit"]
pub struct LogFlushGuard(BatchedStdout);

impl Drop for LogFlushGuard {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// One event's writer. The formatter hands it the whole line in one `write_all`.
pub struct LineWriter<'a> {
    output: &'a BatchedStdout,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.append(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStdout {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            output: self,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            output: self,
            // Level orders by verbosity: ERROR < WARN < INFO.
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured() -> (BatchedStdout, Arc<Mutex<Vec<u8>>>) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let writer = BatchedStdout::to_sink(move |bytes| sink.lock().unwrap().extend_from_slice(bytes));
        (writer, out)
    }

    fn text(out: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(out.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn info_lines_wait_for_a_flush_and_keep_their_order() {
        let (writer, out) = captured();
        writer.append(b"one\n", false);
        writer.append(b"two\n", false);
        assert_eq!(text(&out), "");
        writer.flush();
        assert_eq!(text(&out), "one\ntwo\n");
        writer.flush();
        assert_eq!(text(&out), "one\ntwo\n", "nothing is written twice");
    }

    #[test]
    fn a_warning_is_written_at_once_after_the_lines_before_it() {
        let (writer, out) = captured();
        writer.append(b"request\n", false);
        writer.append(b"warning\n", true);
        assert_eq!(text(&out), "request\nwarning\n");
    }

    #[test]
    fn a_full_buffer_is_written_without_waiting() {
        let (writer, out) = captured();
        let line = [b'x'; 1000];
        let lines = FLUSH_BYTES / line.len() + 1;
        for _ in 0..lines {
            writer.append(&line, false);
        }
        assert_eq!(out.lock().unwrap().len(), lines * line.len());
    }

    #[test]
    fn dropping_the_guard_writes_what_is_left() {
        let (writer, out) = captured();
        writer.append(b"last words\n", false);
        drop(LogFlushGuard(writer));
        assert_eq!(text(&out), "last words\n");
    }

    #[test]
    fn a_field_with_newlines_and_escape_sequences_stays_one_clean_line() {
        let (writer, out) = captured();
        for json in [false, true] {
            let builder = tracing_subscriber::fmt()
                .with_writer(writer.clone())
                .with_ansi(false)
                .without_time();
            let hostile = "k\nforged line\u{1b}[31m\u{9b}2J\u{7f}";
            let log = || tracing::warn!(error = %hostile, key = hostile, "lookup failed: {hostile}");
            if json {
                tracing::subscriber::with_default(builder.json().finish(), log);
            } else {
                tracing::subscriber::with_default(builder.finish(), log);
            }
        }
        let logged = text(&out);
        let lines: Vec<&str> = logged.lines().collect();
        assert_eq!(lines.len(), 2, "{logged}");
        for line in &lines {
            assert!(
                !line.chars().any(|c| c.is_control()),
                "raw control character in {line:?}"
            );
        }
        let json: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(json["fields"]["key"], "k\nforged line\u{1b}[31m\u{9b}2J\u{7f}");
    }

    #[test]
    fn the_formatter_routes_warnings_as_urgent() {
        let (writer, out) = captured();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("routine");
            assert_eq!(text(&out), "");
            tracing::warn!("trouble");
        });
        let logged = text(&out);
        assert!(logged.contains("routine") && logged.contains("trouble"), "{logged}");
        assert!(logged.find("routine") < logged.find("trouble"), "{logged}");
    }
}
