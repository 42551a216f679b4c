//! The webhook's trust boundary, on the real binary configured as the stack runs it: only a POST carrying the
//! token Alertmanager sends is stored, bodies and stored fields are bounded, a flood into one receiver leaves the
//! others' notifications alone, and what a webhook carries reaches the log escaped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{alertmanager_payload, remove_dir, run_inbox_to_exit, temp_dir, watchdog_payload, InboxProcess};

const TOKEN: &str = "it-webhook-token-4f1c9a7e2b";

/// A token file as `make up` writes it: the secret and a trailing newline, readable by its owner only.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("webhook.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// The value of one series in a `/metrics` body, if present.
fn series(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_inbox_does_not_start_without_a_readable_token_file() {
    let dir = temp_dir("no-token");
    let missing = dir.join("missing.token");
    let empty = dir.join("empty.token");
    std::fs::write(&empty, "\n").unwrap();
    for vars in [
        vec![],
        vec![("INBOX_WEBHOOK_TOKEN_FILE", missing.to_str().unwrap())],
        vec![("INBOX_WEBHOOK_TOKEN_FILE", empty.to_str().unwrap())],
    ] {
        let (code, stderr) = run_inbox_to_exit(&vars, Duration::from_secs(5)).await;
        assert_eq!(
            code,
            Some(2),
            "{vars:?}: expected exit code 2 (bad config); stderr: {stderr}"
        );
        assert!(stderr.contains("INBOX_WEBHOOK_TOKEN_FILE"), "{vars:?}: {stderr}");
    }
    remove_dir(&dir);
}

#[tokio::test]
async fn posts_without_the_right_token_are_refused_and_change_nothing() {
    let dir = temp_dir("refused");
    let file = token_file(&dir);
    let inbox = InboxProcess::start(&[("INBOX_WEBHOOK_TOKEN_FILE", file.to_str().unwrap())]).await;
    let page = body(&alertmanager_payload(
        "pager",
        "firing",
        "AppTargetDown",
        "critical",
        &["firing"],
    ));
    let beat = body(&watchdog_payload());
    let wrong = [
        (None, "missing_token"),
        (Some(format!("Basic {TOKEN}")), "missing_token"),
        (Some(TOKEN.to_string()), "missing_token"),
        (Some("Bearer not-the-token-at-all".to_string()), "wrong_token"),
        (Some(format!("Bearer {TOKEN}x")), "wrong_token"),
        (Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])), "wrong_token"),
        (Some("Bearer ".to_string()), "wrong_token"),
    ];
    for (receiver, payload) in [("pager", &page), ("heartbeat", &beat)] {
        for (authorization, _) in &wrong {
            let (status, answer) = inbox.post_hook(receiver, authorization.as_deref(), payload).await;
            assert_eq!(status, 401, "{receiver} with {authorization:?}: {answer}");
            assert_eq!(answer["status"], "error", "{answer}");
        }
    }

    let (_, all) = inbox.get_json("/api/notifications").await;
    assert_eq!(all["count"], 0, "nothing refused is stored: {all}");
    let (_, heartbeat) = inbox.get_json("/api/heartbeat").await;
    assert_eq!(
        heartbeat["received_total"], 0,
        "a forged Watchdog does not feed the switch: {heartbeat}"
    );
    assert_eq!(heartbeat["last_received_at"], Value::Null);

    let (_, metrics) = inbox.get_text("/metrics").await;
    for reason in ["missing_token", "wrong_token"] {
        let expected = 2 * wrong.iter().filter(|(_, r)| *r == reason).count();
        let name = format!("inbox_webhook_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(series(&metrics, &name), Some(expected as f64), "{name} in\n{metrics}");
    }
    assert_eq!(series(&metrics, "inbox_notifications_stored"), Some(0.0));

    // Fourteen refusals within a second: one log line, which names no token, right or wrong.
    let refusals = inbox.wait_for_log("refused", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = inbox.log();
    assert_eq!(
        log.iter().filter(|l| l.contains("refused")).count(),
        1,
        "refusals are logged at most once per interval: {refusals:?}"
    );
    for line in &log {
        assert!(
            !line.contains(TOKEN) && !line.contains("not-the-token"),
            "a token reached the log: {line}"
        );
    }
    drop(inbox);
    remove_dir(&dir);
}

#[tokio::test]
async fn the_right_token_is_stored_feeds_the_heartbeat_and_counts_no_refusal() {
    let dir = temp_dir("accepted");
    let file = token_file(&dir);
    let inbox = InboxProcess::start(&[("INBOX_WEBHOOK_TOKEN_FILE", file.to_str().unwrap())]).await;
    let page = alertmanager_payload("pager", "firing", "AppTargetDown", "critical", &["firing"]);
    let (status, answer) = inbox.post_hook("pager", Some(&bearer()), &body(&page)).await;
    assert_eq!(status, 200, "{answer}");
    // The scheme is case-insensitive (RFC 9110); Alertmanager sends `Bearer`.
    let (status, answer) = inbox
        .post_hook(
            "heartbeat",
            Some(&format!("bearer {TOKEN}")),
            &body(&watchdog_payload()),
        )
        .await;
    assert_eq!(status, 200, "{answer}");

    let (_, pages) = inbox.get_json("/api/notifications?receiver=pager").await;
    assert_eq!(pages["count"], 1, "{pages}");
    assert_eq!(pages["notifications"][0]["webhook"], page);
    let (_, heartbeat) = inbox.get_json("/api/heartbeat").await;
    assert_eq!(heartbeat["received_total"], 1, "{heartbeat}");
    let (_, metrics) = inbox.get_text("/metrics").await;
    for reason in ["missing_token", "wrong_token", "too_large"] {
        let name = format!("inbox_webhook_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(series(&metrics, &name), Some(0.0), "{name} in\n{metrics}");
    }
    assert!(inbox.log().iter().all(|l| !l.contains(TOKEN)));
    drop(inbox);
    remove_dir(&dir);
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_a_json_413_and_not_stored() {
    let dir = temp_dir("too-large");
    let file = token_file(&dir);
    let inbox = InboxProcess::start(&[("INBOX_WEBHOOK_TOKEN_FILE", file.to_str().unwrap())]).await;
    let mut page = alertmanager_payload("pager", "firing", "AppTargetDown", "critical", &["firing"]);
    page["alerts"][0]["annotations"]["description"] = Value::String("x".repeat(300 * 1024));
    let (status, answer) = inbox.post_hook("pager", Some(&bearer()), &body(&page)).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["status"], "error", "{answer}");
    let (_, all) = inbox.get_json("/api/notifications").await;
    assert_eq!(all["count"], 0, "{}", all["count"]);
    let (_, metrics) = inbox.get_text("/metrics").await;
    assert_eq!(
        series(&metrics, "inbox_webhook_rejected_total{reason=\"too_large\"}"),
        Some(1.0),
        "{metrics}"
    );
    drop(inbox);
    remove_dir(&dir);
}

#[tokio::test]
async fn stored_fields_are_cut_to_a_bounded_length() {
    let dir = temp_dir("fields");
    let file = token_file(&dir);
    let inbox = InboxProcess::start(&[("INBOX_WEBHOOK_TOKEN_FILE", file.to_str().unwrap())]).await;
    let mut page = alertmanager_payload("pager", "firing", "AppTargetDown", "critical", &["firing"]);
    // Under the body limit, but far more than any real annotation.
    page["alerts"][0]["annotations"]["description"] = Value::String("é".repeat(100 * 1024));
    let (status, answer) = inbox.post_hook("pager", Some(&bearer()), &body(&page)).await;
    assert_eq!(status, 200, "{answer}");
    let (_, all) = inbox.get_json("/api/notifications").await;
    let stored = all["notifications"][0]["webhook"]["alerts"][0]["annotations"]["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(stored.len() <= 4096, "a stored field holds {} bytes", stored.len());
    assert!(
        stored.starts_with("éé"),
        "the beginning is kept, cut at a character boundary"
    );
    assert_eq!(
        all["notifications"][0]["webhook"]["alerts"][0]["labels"]["alertname"],
        "AppTargetDown"
    );
    drop(inbox);
    remove_dir(&dir);
}

#[tokio::test]
async fn a_flood_of_tickets_leaves_the_pages_visible() {
    let dir = temp_dir("flood");
    let file = token_file(&dir);
    let inbox = InboxProcess::start(&[
        ("INBOX_WEBHOOK_TOKEN_FILE", file.to_str().unwrap()),
        ("INBOX_MAX_NOTIFICATIONS", "5"),
    ])
    .await;
    for alertname in ["PostgresDown", "RedisDown"] {
        let page = alertmanager_payload("pager", "firing", alertname, "critical", &["firing"]);
        assert_eq!(inbox.post_hook("pager", Some(&bearer()), &body(&page)).await.0, 200);
    }
    let ticket = body(&alertmanager_payload(
        "ticket",
        "firing",
        "AppHighMemory",
        "warning",
        &["firing"],
    ));
    for _ in 0..50 {
        assert_eq!(inbox.post_hook("ticket", Some(&bearer()), &ticket).await.0, 200);
    }

    let (_, pages) = inbox.get_json("/api/notifications?receiver=pager").await;
    assert_eq!(
        pages["count"], 2,
        "the pager's notifications survive a ticket flood: {}",
        pages["count"]
    );
    let (_, tickets) = inbox.get_json("/api/notifications?receiver=ticket").await;
    assert_eq!(tickets["count"], 5, "the flooded receiver keeps its newest 5");
    let (_, all) = inbox.get_json("/api/notifications").await;
    assert_eq!(all["count"], 7);
    let (_, html) = inbox.get_text("/").await;
    let pager = html.find("<h2 id=\"pager\">").unwrap();
    let ticket = html.find("<h2 id=\"ticket\">").unwrap();
    assert!(html[pager..ticket].contains("PostgresDown") && html[pager..ticket].contains("RedisDown"));
    drop(inbox);
    remove_dir(&dir);
}

#[tokio::test]
async fn what_a_webhook_carries_reaches_the_log_escaped_and_bounded() {
    let forged = "AppTargetDown\n2026-01-01T00:00:00.000000Z ERROR inbox: forged line \x1b[31mred\x1b[0m\r\u{85}";
    let long = "L".repeat(10_000);
    for format in ["text", "json"] {
        let dir = temp_dir("log");
        let file = token_file(&dir);
        let inbox = InboxProcess::start(&[
            ("INBOX_WEBHOOK_TOKEN_FILE", file.to_str().unwrap()),
            ("INBOX_LOG_FORMAT", format),
        ])
        .await;
        for alertname in [forged, long.as_str()] {
            let page = alertmanager_payload("pager", "firing", alertname, "critical", &["firing"]);
            let (status, answer) = inbox.post_hook("pager", Some(&bearer()), &body(&page)).await;
            assert_eq!(status, 200, "{answer}");
        }
        let received = inbox.wait_for_log("notification received", 2).await;
        let log = inbox.log();
        for line in &log {
            assert!(
                !line.chars().any(char::is_control),
                "{format}: a raw control character reached the log: {line:?}"
            );
            assert!(
                !line.contains("forged line") || line.contains("notification received"),
                "{format}: a forged line: {line:?}"
            );
            assert!(line.len() < 2048, "{format}: a log line of {} bytes", line.len());
        }
        assert!(
            received[0].contains("forged line"),
            "{format}: the name is still there, escaped: {received:?}"
        );
        drop(inbox);
        remove_dir(&dir);
    }
}
