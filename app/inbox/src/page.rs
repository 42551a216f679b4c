//! `GET /`: a plain HTML page an on-call engineer can read — the heartbeat, then each receiver's firing and
//! resolved notifications, newest first. No scripts; it reloads itself every 15 seconds.

use std::fmt::Write;

use crate::store::{Filter, Notification, Store};
use crate::webhook::{Receiver, Status};

/// How many notifications each receiver's table shows; the JSON API has them all.
const ROWS_PER_RECEIVER: usize = 100;

/// The whole page.
pub fn render(store: &Store) -> String {
    let beat = store.heartbeat();
    let mut out = String::with_capacity(16 * 1024);
    out.push_str(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"15\"><title>On-call inbox</title>\n<style>",
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;width:100%;margin-bottom:2em}",
        "th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top;font-size:.9em}",
        ".firing{color:#b00;font-weight:bold}.resolved{color:#070}.ok{color:#070}.missing{color:#b00;font-weight:bold}",
        "</style></head><body>\n<h1>On-call inbox</h1>\n"
    ));
    let age = beat
        .age_seconds
        .map(|a| format!("{a:.0} s ago ({})", beat.last_received_at.as_deref().unwrap_or("")));
    let _ = writeln!(
        out,
        "<p class=\"{}\">Watchdog heartbeat: {} &mdash; last received {}; limit {:.0} s.</p>",
        if beat.healthy { "ok" } else { "missing" },
        if beat.healthy { "healthy" } else { "MISSING" },
        escape(&age.unwrap_or_else(|| "never".to_string())),
        beat.max_age_seconds
    );
    out.push_str("<p>");
    for receiver in Receiver::ALL {
        let _ = write!(out, "<a href=\"#{receiver}\">{receiver}</a> &middot; ");
    }
    out.push_str("<a href=\"/api/notifications\">JSON</a> &middot; <a href=\"/metrics\">metrics</a></p>\n");

    for receiver in Receiver::ALL {
        let rows = store.list(&Filter {
            receiver: Some(receiver),
            limit: Some(ROWS_PER_RECEIVER),
            ..Filter::default()
        });
        let _ = writeln!(out, "<h2 id=\"{receiver}\">{receiver}</h2>");
        if rows.is_empty() {
            out.push_str("<p>No notifications.</p>\n");
            continue;
        }
        out.push_str(
            "<table><tr><th>received</th><th>status</th><th>alert</th><th>severity</th><th>service</th>\
             <th>alerts</th><th>summary</th><th>runbook</th></tr>\n",
        );
        for n in &rows {
            row(&mut out, n);
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

fn row(out: &mut String, n: &Notification) {
    let w = &n.webhook;
    // Prefer what every alert of the group shares; fall back to the first alert.
    let label = |name: &str| {
        w.common_labels
            .get(name)
            .or_else(|| w.alerts.first().and_then(|a| a.labels.get(name)))
            .cloned()
            .unwrap_or_default()
    };
    let annotation = |name: &str| {
        w.common_annotations
            .get(name)
            .or_else(|| w.alerts.first().and_then(|a| a.annotations.get(name)))
            .cloned()
            .unwrap_or_default()
    };
    let firing = w.alerts.iter().filter(|a| a.status == Status::Firing).count();
    let runbook = annotation("runbook_url");
    // Only web links become anchors: an annotation is not trusted to be a harmless URL.
    let runbook = if runbook.starts_with("http://") || runbook.starts_with("https://") {
        format!("<a href=\"{0}\">{0}</a>", escape(&runbook))
    } else {
        escape(&runbook)
    };
    let _ = writeln!(
        out,
        concat!(
            "<tr><td>{}</td><td class=\"{status}\">{status}</td><td>{}</td><td>{}</td><td>{}</td>",
            "<td>{} firing, {} resolved</td><td>{}</td><td>{runbook}</td></tr>"
        ),
        escape(&n.received_at),
        escape(&n.alertname),
        escape(&label("severity")),
        escape(&label("service")),
        firing,
        w.alerts.len() - firing,
        escape(&annotation("summary")),
        status = n.status.as_str(),
        runbook = runbook,
    );
}

/// Escapes text for HTML element content and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_page_escapes_what_alerts_carry() {
        let store = Store::in_memory(10, Duration::from_secs(180));
        let payload = serde_json::from_value(serde_json::json!({
            "status": "firing",
            "alerts": [{"status": "firing", "labels": {"alertname": "<script>x</script>"},
                        "annotations": {"runbook_url": "javascript:alert(1)"}}]
        }))
        .unwrap();
        store.record(Receiver::Pager, payload);
        let html = render(&store);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("href=\"javascript"));
        assert!(html.contains("Watchdog heartbeat: healthy"));
    }
}
