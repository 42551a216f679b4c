//! Untrusted text on its way into a log line: length bounded, control characters escaped.
//!
//! A log line is one line of text, or one JSON object, per event. A request decides part of what is logged about
//! it (its method, an error message that quotes its input), so without care it could forge a second line with a
//! newline, drive the terminal of whoever reads the log with an ESC or C1 control sequence, or fill the log with
//! one enormous field. Two defences:
//!
//! - [`bounded`] cuts a field to a number of characters and says so; the request line applies it to the method
//!   ([`MAX_FIELD_CHARS`]), `error::error_chain` to error messages.
//! - [`escape_line`] is applied by the log writer to every line it receives (see `log_output`): any character
//!   that must not appear raw becomes a JSON-style escape (`\n`, `\u001b`, `\u009b`, `\u2028`), which is valid
//!   inside a JSON string and readable in a text line. The final newline is the one character left raw.

use std::borrow::Cow;

/// Longest untrusted field of a log line, in characters.
pub const MAX_FIELD_CHARS: usize = 256;

/// `text`, or its first `max_chars` characters followed by `…[cut, N bytes]` (N: the length of the whole).
pub fn bounded(text: &str, max_chars: usize) -> Cow<'_, str> {
    // A string of at most `max_chars` bytes has at most that many characters: the common case costs one compare.
    if text.len() <= max_chars {
        return Cow::Borrowed(text);
    }
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}…[cut, {} bytes]", &text[..cut], text.len())),
    }
}

/// Whether `c` must not reach a log line as is: the C0 and C1 controls and DEL (Unicode's `Cc`), the line and
/// paragraph separators (some viewers break lines at them), and the bidirectional controls, which make a viewer
/// show text in another order than it was written.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Whether [`escape_line`] would change `line`. Cheap enough for every line: one pass over the bytes, looking
/// for a byte below 0x20 (other than the final newline), DEL, or the lead bytes of the characters above
/// (`C2` for U+0080–U+00BF, `E2` for U+2000–U+2FFF), which only then are decoded and checked.
pub fn needs_escaping(line: &[u8]) -> bool {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    body.iter().any(|&b| b < 0x20 || b == 0x7f || b == 0xc2 || b == 0xe2)
}

/// Appends `line` to `out` with every character [`must_escape`] picks escaped; a final newline stays as it is.
/// Bytes that are not UTF-8 (no formatter writes them) become U+FFFD.
pub fn escape_line(line: &[u8], out: &mut Vec<u8>) {
    let (body, newline) = match line.strip_suffix(b"\n") {
        Some(body) => (body, true),
        None => (line, false),
    };
    let text = String::from_utf8_lossy(body);
    let mut clean = 0;
    for (i, c) in text.char_indices() {
        if !must_escape(c) {
            continue;
        }
        out.extend_from_slice(&text.as_bytes()[clean..i]);
        match c {
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c => out.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes()),
        }
        clean = i + c.len_utf8();
    }
    out.extend_from_slice(&text.as_bytes()[clean..]);
    if newline {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(line: &str) -> String {
        let mut out = Vec::new();
        escape_line(line.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn short_fields_pass_and_long_ones_are_cut_with_a_marker() {
        assert!(matches!(bounded("GET", 256), Cow::Borrowed("GET")));
        assert!(
            matches!(bounded(&"é".repeat(200), 256), Cow::Borrowed(_)),
            "400 bytes but 200 characters"
        );
        let method = "X".repeat(8000);
        assert_eq!(bounded(&method, 256), format!("{}…[cut, 8000 bytes]", "X".repeat(256)));
        // Cut at a character boundary.
        assert_eq!(bounded("ééé", 2), "éé…[cut, 6 bytes]");
    }

    #[test]
    fn control_characters_become_json_style_escapes() {
        assert_eq!(
            escaped("a\nb\r\tc\u{1b}[31md\u{7f}e\u{9b}f\u{85}g\u{2028}h\u{202e}i\n"),
            "a\\nb\\r\\tc\\u001b[31md\\u007fe\\u009bf\\u0085g\\u2028h\\u202ei\n"
        );
        assert_eq!(escaped("no newline\u{7}"), "no newline\\u0007");
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for line in [
            "plain ascii line\n",
            "accents é ü ß, symbols © … €, emoji 🙂\n",
            "{\"a\":\"\\u001b\"}\n",
        ] {
            assert_eq!(escaped(line), line);
        }
        assert!(!needs_escaping(b"plain line with a final newline\n"));
        assert!(needs_escaping(b"two\nlines\n"));
        assert!(needs_escaping("\u{9b}".as_bytes()));
        assert!(!needs_escaping("é".as_bytes()));
    }

    #[test]
    fn escaped_json_lines_stay_json_with_the_same_strings() {
        let line = "{\"method\":\"a\u{9b}b\u{2028}c\u{7f}\"}\n";
        let parsed: serde_json::Value = serde_json::from_str(&escaped(line)).unwrap();
        assert_eq!(parsed["method"], "a\u{9b}b\u{2028}c\u{7f}");
    }
}
