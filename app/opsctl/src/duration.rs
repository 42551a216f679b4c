//! Durations on the command line and in reports, through `humantime`: `500ms`, `60s`, `5m`, `1h`, `1.5s`,
//! combinations like `1m30s` (or `1m 30s`), and bare numbers as seconds.

use std::time::Duration;

/// Parses a duration argument; the error says what went wrong and what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    // humantime wants a unit; a bare number has always meant seconds here (`--timeout 5`).
    let parsed = match text.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|e| e.to_string()),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    };
    parsed.map_err(|why| format!("invalid duration {text:?} ({why}): use e.g. 500ms, 60s, 5m, 1h or 1m30s"))
}

/// `250ms`, `1s 500ms`, `2m 5s`: rounded to what a reader of a report needs (milliseconds under a second, tenths of
/// a second under a minute, whole seconds above), so humantime does not print every digit down to nanoseconds.
pub fn format_duration(d: Duration) -> String {
    let unit = if d < Duration::from_secs(1) {
        Duration::from_millis(1)
    } else if d < Duration::from_secs(60) {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    };
    let units = (d.as_nanos() + unit.as_nanos() / 2) / unit.as_nanos();
    let rounded = unit.saturating_mul(u32::try_from(units).unwrap_or(u32::MAX));
    humantime::format_duration(rounded).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_usual_units() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 10m "), Ok(Duration::from_secs(600)));
        // Alertmanager's configuration writes its intervals in the same notation.
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(4 * 3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn nonsense_is_rejected_with_the_reason_and_examples() {
        for bad in ["", "s", "10x", "-5s", "-5", "m5", "5 parsecs", "1e400"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                err.contains("60s") && err.contains(&format!("{:?}", bad.trim())),
                "{bad}: {err}"
            );
        }
        assert!(parse_duration("10x").unwrap_err().contains("unknown time unit"));
    }

    #[test]
    fn reports_use_short_rounded_durations() {
        assert_eq!(format_duration(Duration::from_micros(250_400)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s 500ms");
        assert_eq!(format_duration(Duration::from_micros(1_549_999)), "1s 500ms");
        assert_eq!(format_duration(Duration::from_millis(125_400)), "2m 5s");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
