//! How span fields are stored for JSON logs: written straight out as a JSON object.
//!
//! The JSON log format keeps each span's fields as a JSON string and parses it back when an event inside the span
//! is logged (that is how `"span":{"request_id":…}` gets onto a line). `tracing-subscriber`'s own field formatter
//! builds a map of `serde_json` values and serializes it, for every span: under `make bench` that was the most
//! expensive part of a `GET /helloworld`'s request span, which exists on every request but is read only when the
//! request logs something (an error, a dependency warning). This one writes the object directly; the output is
//! the same JSON, its strings escaped by serde_json as every other JSON string the app writes.

use std::fmt::{self, Write};
use std::io;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// A [`FormatFields`] for the JSON log format's spans: `{"name":value,…}`, strings escaped, numbers and booleans
/// as JSON numbers and booleans, everything else through its `Debug` (or, for `%` fields, `Display`) as a string.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut out = Staged::new(&mut writer);
        out.write_char('{')?;
        write_members(&mut out, true, fields)?;
        out.write_char('}')?;
        out.flush()
    }

    /// Fields recorded after the span was created join the same object (the default would append a second one).
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        if current.fields.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        // The stored text is always an object this type wrote: drop its closing brace, append, close again.
        current.fields.pop();
        let first = current.fields == "{";
        let mut writer = current.as_writer();
        let mut out = Staged::new(&mut writer);
        write_members(&mut out, first, fields)?;
        out.write_char('}')?;
        out.flush()
    }
}

fn write_members<W: Write, R: RecordFields>(out: &mut W, first: bool, fields: R) -> fmt::Result {
    let mut visitor = Members {
        out,
        first,
        result: Ok(()),
    };
    fields.record(&mut visitor);
    visitor.result
}

struct Members<'a, W: Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<W: Write> Members<'_, W> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { "," };
        self.first = false;
        self.result = self
            .out
            .write_str(separator)
            .and_then(|()| write_json_string(&mut *self.out, field.name()))
            .and_then(|()| self.out.write_char(':'))
            .and_then(|()| value(self.out));
    }
}

impl<W: Write> Visit for Members<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| write_json_string(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| write_json_string(out, format_args!("{value:?}")));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinities; serde_json writes them as null too.
        self.member(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }
}

/// Collects small writes on the stack and passes them on in one piece: the span's text is a `String` that would
/// otherwise grow (and reallocate) a few bytes at a time.
struct Staged<'a, W: Write> {
    out: &'a mut W,
    buf: [u8; 256],
    len: usize,
}

impl<'a, W: Write> Staged<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Staged {
            out,
            buf: [0; 256],
            len: 0,
        }
    }

    /// Passes on what is staged.
    fn flush(&mut self) -> fmt::Result {
        // Only whole `&str`s are staged, so the bytes are valid UTF-8.
        let staged = std::str::from_utf8(&self.buf[..self.len]).map_err(|_| fmt::Error)?;
        self.out.write_str(staged)?;
        self.len = 0;
        Ok(())
    }
}

impl<W: Write> Write for Staged<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > self.buf.len() {
            self.flush()?;
            if s.len() > self.buf.len() {
                return self.out.write_str(s);
            }
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// Writes `value` (its `Display`) as a JSON string, quoted and escaped by serde_json, streamed: no `String` of it.
fn write_json_string<W: Write>(out: &mut W, value: impl fmt::Display) -> fmt::Result {
    let mut serializer = serde_json::Serializer::new(IoToFmt(out));
    serde::Serializer::collect_str(&mut serializer, &value).map_err(|_| fmt::Error)
}

/// serde_json writes to an `io::Write`, span fields go to a `fmt::Write`. Every piece serde_json hands over is
/// whole UTF-8 (a quote, an escape, or the text between two escapes, cut at ASCII bytes), so it converts back.
struct IoToFmt<'a, W: Write>(&'a mut W);

impl<W: Write> io::Write for IoToFmt<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = std::str::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.0.write_str(text).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use tracing_subscriber::fmt::format::JsonFields;

    use super::*;
    use crate::telemetry::Captured;

    /// Logs one event inside a span with awkward fields, through the JSON format as `init_logging` sets it up,
    /// with the given span field formatter; returns the parsed line.
    fn logged_with<N>(fields: N) -> Value
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(fields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = %r#"id "quoted" \ back"#,
                route = "/tab\there",
                attempt = 3u64,
                offset = -2i64,
                ratio = 0.5,
                ok = true,
                later = tracing::field::Empty,
            );
            span.record("later", "recorded after creation");
            span.in_scope(|| tracing::warn!(error = "boom", "dependency unavailable"));
        });
        let text = out.text();
        serde_json::from_str(text.trim_end()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    #[test]
    fn events_in_a_span_carry_the_same_span_object_as_with_the_stock_formatter() {
        let ours = logged_with(JsonSpanFields);
        let stock = logged_with(JsonFields::default());
        assert_eq!(ours["span"], stock["span"]);
        assert_eq!(
            ours["span"],
            json!({
                "request_id": r#"id "quoted" \ back"#,
                "route": "/tab\there",
                "attempt": 3,
                "offset": -2,
                "ratio": 0.5,
                "ok": true,
                "later": "recorded after creation",
                "name": "request",
            })
        );
        assert_eq!(ours["error"], "boom");
    }

    #[test]
    fn long_fields_pass_through_the_stage_intact() {
        let mut out = String::new();
        let long = "x".repeat(300);
        let mut staged = Staged::new(&mut out);
        for piece in ["{", "\"a\":\"", &long, "\"", ",\"b\":\"", &long[..250], "\"}"] {
            staged.write_str(piece).unwrap();
        }
        staged.flush().unwrap();
        assert_eq!(out, format!("{{\"a\":\"{long}\",\"b\":\"{}\"}}", &long[..250]));
    }

    #[test]
    fn strings_are_quoted_and_escaped_whole_characters_and_all() {
        let mut out = String::new();
        write_json_string(&mut out, "a\u{1}b\u{1f}\"\\ é 🙂\n").unwrap();
        assert_eq!(out, r#""a\u0001b\u001f\"\\ é 🙂\n""#);
        let mut out = String::new();
        write_json_string(&mut out, format_args!("{:?}", "tab\t")).unwrap();
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "\"tab\\t\"");
    }
}
