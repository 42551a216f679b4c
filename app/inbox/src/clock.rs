//! Wall-clock time as Unix milliseconds, and its RFC 3339 rendering (through `humantime`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last millisecond RFC 3339's four-digit years can write, 9999-12-31T23:59:59.999Z.
const LAST_RFC3339_MS: u64 = 253_402_300_799_999;

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2026-11-22T10:00:00.123Z` for a Unix time in milliseconds (UTC). Times past the year 9999 (only a damaged
/// notification file could hold one) show as its last millisecond instead of failing the page.
pub fn rfc3339(unix_ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(unix_ms.min(LAST_RFC3339_MS));
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_renders_known_instants() {
        // Expected values from an independent calendar implementation (Python's datetime).
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(4_102_444_799_000), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn times_beyond_the_year_9999_are_clamped_not_a_panic() {
        assert_eq!(rfc3339(LAST_RFC3339_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn now_renders_as_utc_with_milliseconds() {
        let now = rfc3339(now_unix_ms());
        assert_eq!(now.len(), "2026-11-22T10:00:00.123Z".len(), "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[19] == b'.', "{now}");
    }
}
