//! The inbox's own metrics: names, types and HELP text in one place, rendered in the Prometheus text format.
//! A handful of counters kept by the store need no metrics library.

use std::fmt::Write;

use crate::auth::Rejection;
use crate::store::{Counters, Heartbeat};
use crate::webhook::{Receiver, Status};

/// Counter: webhook calls received, by `receiver` and notification `status`.
pub const NOTIFICATIONS_TOTAL: &str = "inbox_notifications_total";
/// Counter: alerts inside the webhook calls, by `receiver` and alert `status`.
pub const ALERTS_TOTAL: &str = "inbox_alerts_total";
/// Gauge: Unix time of the last Watchdog heartbeat (0 before the first).
pub const HEARTBEAT_LAST_RECEIVED: &str = "inbox_heartbeat_last_received_timestamp_seconds";
/// Gauge: 1 while the heartbeat is missing.
pub const HEARTBEAT_MISSING: &str = "inbox_heartbeat_missing";
/// Gauge: the limit the heartbeat is held to.
pub const HEARTBEAT_MAX_AGE: &str = "inbox_heartbeat_max_age_seconds";
/// Counter: webhook POSTs refused, by `reason` (`missing_token`, `wrong_token`, `too_large`; a fixed set).
pub const WEBHOOK_REJECTED_TOTAL: &str = "inbox_webhook_rejected_total";
/// Gauge: notifications held in memory.
pub const NOTIFICATIONS_STORED: &str = "inbox_notifications_stored";
/// Counter: failed appends to the data file.
pub const DATA_FILE_WRITE_ERRORS_TOTAL: &str = "inbox_data_file_write_errors_total";

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The whole `/metrics` body.
pub fn render(counters: &Counters, heartbeat: &Heartbeat, rejected: &[(Rejection, u64)]) -> String {
    let mut out = String::new();
    let by_receiver_status =
        |out: &mut String, name: &str, help: &str, values: &std::collections::BTreeMap<(Receiver, Status), u64>| {
            header(out, name, "counter", help);
            for ((receiver, status), value) in values {
                let _ = writeln!(
                    out,
                    "{name}{{receiver=\"{receiver}\",status=\"{}\"}} {value}",
                    status.as_str()
                );
            }
        };
    by_receiver_status(
        &mut out,
        NOTIFICATIONS_TOTAL,
        "Alertmanager webhook notifications received, by receiver and notification status.",
        &counters.notifications,
    );
    by_receiver_status(
        &mut out,
        ALERTS_TOTAL,
        "Alerts contained in the received notifications, by receiver and alert status.",
        &counters.alerts,
    );
    header(
        &mut out,
        WEBHOOK_REJECTED_TOTAL,
        "counter",
        "Webhook POSTs refused: without the bearer token, with a wrong one, or with a body over the limit.",
    );
    for (reason, value) in rejected {
        let _ = writeln!(
            out,
            "{WEBHOOK_REJECTED_TOTAL}{{reason=\"{}\"}} {value}",
            reason.as_str()
        );
    }
    header(
        &mut out,
        HEARTBEAT_LAST_RECEIVED,
        "gauge",
        "Unix time the last firing Watchdog heartbeat arrived at the heartbeat receiver; 0 if none has.",
    );
    let _ = writeln!(
        out,
        "{HEARTBEAT_LAST_RECEIVED} {}",
        heartbeat.last_received_timestamp_seconds.unwrap_or(0.0)
    );
    header(
        &mut out,
        HEARTBEAT_MISSING,
        "gauge",
        concat!(
            "1 when no Watchdog heartbeat has arrived for longer than the maximum age ",
            "(counted from startup before the first one), else 0."
        ),
    );
    let _ = writeln!(out, "{HEARTBEAT_MISSING} {}", u8::from(!heartbeat.healthy));
    header(
        &mut out,
        HEARTBEAT_MAX_AGE,
        "gauge",
        "Longest silence of the Watchdog heartbeat tolerated, in seconds.",
    );
    let _ = writeln!(out, "{HEARTBEAT_MAX_AGE} {}", heartbeat.max_age_seconds);
    header(
        &mut out,
        NOTIFICATIONS_STORED,
        "gauge",
        "Notifications currently held in memory, all receivers together.",
    );
    let _ = writeln!(out, "{NOTIFICATIONS_STORED} {}", counters.stored);
    header(
        &mut out,
        DATA_FILE_WRITE_ERRORS_TOTAL,
        "counter",
        "Notifications that could not be appended to the data file.",
    );
    let _ = writeln!(
        out,
        "{DATA_FILE_WRITE_ERRORS_TOTAL} {}",
        counters.data_file_write_errors
    );
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::time::Duration;

    #[test]
    fn every_receiver_and_status_has_a_series_before_any_traffic() {
        let store = Store::in_memory(10, Duration::from_secs(180));
        let guard = crate::auth::WebhookGuard::new(crate::auth::WebhookToken::default());
        let text = render(&store.counters(), &store.heartbeat(), &guard.rejected());
        for receiver in Receiver::ALL {
            for status in Status::ALL {
                for name in [NOTIFICATIONS_TOTAL, ALERTS_TOTAL] {
                    let series = format!("{name}{{receiver=\"{receiver}\",status=\"{}\"}} 0\n", status.as_str());
                    assert!(text.contains(&series), "missing {series}");
                }
            }
        }
        for reason in Rejection::ALL {
            let series = format!("{WEBHOOK_REJECTED_TOTAL}{{reason=\"{}\"}} 0\n", reason.as_str());
            assert!(text.contains(&series), "missing {series}");
        }
        assert!(text.contains("inbox_heartbeat_missing 0\n"));
        assert!(text.contains("inbox_heartbeat_last_received_timestamp_seconds 0\n"));
        assert!(text.contains("# HELP inbox_heartbeat_missing "));
    }
}
