//! Logging: plain text or JSON lines (`INBOX_LOG_FORMAT=json`) on stdout, filtered by `INBOX_LOG_LEVEL`
//! (tracing directives, default `info`), and [`untrusted`], which every field a webhook sender controls goes
//! through before it reaches a log line.

use std::fmt::Write;

use tracing_subscriber::EnvFilter;

use crate::limits::LOG_FIELD_CHARS;

/// Installs the global subscriber once per process; fails on a filter that does not parse.
pub fn init(json: bool, level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| {
        format!("INBOX_LOG_LEVEL={level:?} is invalid: expected tracing directives such as info or inbox=debug ({e})")
    })?;
    // Colours only for a terminal: under the supervisor or in a container the log is a file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Text from a webhook, made safe for one log field: control characters (a newline that would start a forged
/// line, the ESC of a terminal escape, C1 codes) and the invisible format characters that reorder or hide text are
/// written as escapes, a backslash as two so that an escape cannot be forged either, and the text is cut after
/// [`LOG_FIELD_CHARS`] characters, saying how much was left out. The text formatter writes `%` fields as they
/// are, so this is what keeps them to one honest line.
pub fn untrusted(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(LOG_FIELD_CHARS + 16));
    for (count, (at, c)) in text.char_indices().enumerate() {
        if count == LOG_FIELD_CHARS {
            let _ = write!(out, "…(+{} bytes)", text.len() - at);
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_invisible_format(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Unicode format characters that change how the text around them displays: bidirectional overrides and
/// isolates, zero-width characters, the line and paragraph separators, the byte-order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::untrusted;
    use crate::limits::LOG_FIELD_CHARS;

    #[test]
    fn control_and_format_characters_are_escaped() {
        assert_eq!(untrusted("RedisDown"), "RedisDown");
        assert_eq!(
            untrusted("a\nERROR x\x1b[31m\r\t\u{85}\u{202e}\\n"),
            "a\\nERROR x\\u{1b}[31m\\r\\t\\u{85}\\u{202e}\\\\n"
        );
        assert!(!untrusted("\x00\x07\x7f").chars().any(char::is_control));
    }

    #[test]
    fn long_text_is_cut_and_says_how_much_is_missing() {
        let long = "é".repeat(LOG_FIELD_CHARS + 50);
        let safe = untrusted(&long);
        assert!(safe.starts_with(&"é".repeat(LOG_FIELD_CHARS)));
        assert!(safe.ends_with("…(+100 bytes)"), "{safe}");
        assert_eq!(untrusted(&"x".repeat(LOG_FIELD_CHARS)), "x".repeat(LOG_FIELD_CHARS));
    }
}
