//! The inbox's bounds, in one place: how much a webhook may send, how much of it is kept, and how much untrusted
//! text a log line carries. Alertmanager's real notifications stay far below every one of them; they exist so that
//! a sender that is broken (or hostile, with the token) cannot exhaust memory or disk or bury the pages.

use std::time::Duration;

/// Largest webhook body accepted; a larger one is answered 413. Each of the stack's alerts adds about 1 to 2 KiB to
/// a notification, so a group of a hundred fits; the stack's groups hold a handful.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Longest text kept of any one field of a stored notification (a label or annotation name or value, a URL, the
/// group key), in bytes; longer ones are cut at a character boundary and end in `…`.
pub const MAX_FIELD_BYTES: usize = 4096;

/// Most alerts kept per notification; the rest are counted in its `truncatedAlerts`, as Alertmanager's own
/// `max_alerts` does. The metrics count every alert received.
pub const MAX_ALERTS_PER_NOTIFICATION: usize = 100;

/// Most bytes (of their JSON form) each receiver's notifications may hold in memory, on top of the count limit
/// (`INBOX_MAX_NOTIFICATIONS` per receiver); the oldest go first. 10,000 notifications of the stack's usual size
/// (1 to 2 KiB) fit, so normally the count is what binds.
pub const MAX_BYTES_PER_RECEIVER: usize = 32 * 1024 * 1024;

/// The data file is rewritten to what memory holds once it has grown past twice that plus this much, so disk use
/// stays bounded between restarts too.
pub const DATA_FILE_SLACK_BYTES: u64 = 1024 * 1024;

/// Longest untrusted text one log field carries, in characters (see `telemetry::untrusted`).
pub const LOG_FIELD_CHARS: usize = 200;

/// Refused webhook POSTs are logged at most once per this interval; every one is counted in the metrics.
pub const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Cuts `text` to at most `max` bytes (`max` ≥ 3), at a character boundary, marking the cut with `…`.
pub fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    const MARK: &str = "…";
    let mut end = max - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn cut_keeps_short_text_and_cuts_long_text_at_a_character_boundary() {
        let mut short = "abc".to_string();
        cut(&mut short, 10);
        assert_eq!(short, "abc");
        let mut long = "é".repeat(10); // 20 bytes
        cut(&mut long, 8);
        assert_eq!(long, "éé…", "two whole characters and the mark, 7 bytes");
        assert!(long.len() <= 8);
        let mut exact = "abcdefgh".to_string();
        cut(&mut exact, 8);
        assert_eq!(exact, "abcdefgh");
    }
}
