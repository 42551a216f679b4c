//! The HTTP API of the inbox, driven over a socket.

use std::time::Duration;

use inbox::Config;
use serde_json::json;

use crate::helpers::{alertmanager_payload, remove_dir, temp_dir, watchdog_payload, TestInbox, TEST_TOKEN};

#[tokio::test]
async fn notifications_are_kept_per_receiver_and_listed_newest_first() {
    let inbox = TestInbox::start_default().await;
    let firing = alertmanager_payload("pager", "firing", "AppTargetDown", "critical", &["firing"]);
    let resolved = alertmanager_payload("pager", "resolved", "AppTargetDown", "critical", &["resolved"]);
    let ticket = alertmanager_payload("ticket", "firing", "AppHighMemory", "warning", &["firing", "firing"]);
    assert_eq!(inbox.post_hook("pager", &firing).await.0, 200);
    assert_eq!(inbox.post_hook("ticket", &ticket).await.0, 200);
    let (status, answer) = inbox.post_hook("pager", &resolved).await;
    assert_eq!(status, 200);
    assert_eq!(answer["status"], "ok");

    let (status, all) = inbox.get_json("/api/notifications").await;
    assert_eq!(status, 200);
    assert_eq!(all["count"], 3);
    let ids: Vec<u64> = all["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    let (_, pages) = inbox.get_json("/api/notifications?receiver=pager").await;
    assert_eq!(pages["count"], 2);
    assert_eq!(pages["notifications"][0]["status"], "resolved");
    assert_eq!(pages["notifications"][1]["status"], "firing");
    // The payload is kept as Alertmanager sent it.
    assert_eq!(pages["notifications"][1]["webhook"], firing);
    assert_eq!(pages["notifications"][1]["alertname"], "AppTargetDown");

    let (_, one) = inbox
        .get_json("/api/notifications?receiver=ticket&alertname=AppHighMemory&status=firing")
        .await;
    assert_eq!(one["count"], 1);
    assert_eq!(
        one["notifications"][0]["webhook"]["alerts"].as_array().unwrap().len(),
        2
    );
    let (_, none) = inbox
        .get_json("/api/notifications?receiver=ticket&status=resolved")
        .await;
    assert_eq!(none["count"], 0);
    let newest = ids[0];
    let (_, after) = inbox
        .get_json(&format!("/api/notifications?after={}", newest - 1))
        .await;
    assert_eq!(after["count"], 1);
    inbox.stop().await;
}

#[tokio::test]
async fn unknown_receivers_and_bad_payloads_get_json_errors() {
    let inbox = TestInbox::start_default().await;
    let body = alertmanager_payload("blackhole", "firing", "AppFaultInjectionActive", "info", &["firing"]);
    let (status, answer) = inbox.post_hook("blackhole", &body).await;
    assert_eq!(status, 404);
    assert_eq!(answer["status"], "error");

    let response = inbox
        .client
        .post(inbox.url("/hook/pager"))
        .bearer_auth(TEST_TOKEN)
        .body("{\"status\": \"firing\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "error");
    assert!(
        answer["message"].as_str().unwrap().contains("webhook payload"),
        "{answer}"
    );

    let (status, _) = inbox.post_hook("pager", &json!({"status": "firing"})).await;
    assert_eq!(status, 400, "alerts are required");
    let (_, all) = inbox.get_json("/api/notifications").await;
    assert_eq!(all["count"], 0, "nothing bad was stored");
    inbox.stop().await;
}

#[tokio::test]
async fn the_heartbeat_reports_the_watchdog_and_goes_missing_when_it_stops() {
    let inbox = TestInbox::start(Config {
        heartbeat_max_age: Duration::from_secs(1),
        runbooks_dir: "no-such-runbooks-dir".into(),
        ..Config::default()
    })
    .await;
    let (status, beat) = inbox.get_json("/api/heartbeat").await;
    assert_eq!(status, 200, "grace period after start: {beat}");
    assert_eq!(beat["last_received_at"], serde_json::Value::Null);

    assert_eq!(inbox.post_hook("heartbeat", &watchdog_payload()).await.0, 200);
    let (status, beat) = inbox.get_json("/api/heartbeat").await;
    assert_eq!(status, 200);
    assert_eq!(beat["healthy"], true);
    assert!(beat["age_seconds"].as_f64().unwrap() < 1.0);
    assert_eq!(beat["received_total"], 1);
    let (_, _, metrics) = inbox.get_text("/metrics").await;
    assert!(metrics.contains("\ninbox_heartbeat_missing 0\n"), "{metrics}");
    assert!(!metrics.contains("\ninbox_heartbeat_last_received_timestamp_seconds 0\n"));

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, beat) = inbox.get_json("/api/heartbeat").await;
    assert_eq!(status, 503, "{beat}");
    assert_eq!(beat["healthy"], false);
    let (_, _, metrics) = inbox.get_text("/metrics").await;
    assert!(metrics.contains("\ninbox_heartbeat_missing 1\n"), "{metrics}");
    inbox.stop().await;
}

#[tokio::test]
async fn metrics_count_notifications_and_alerts_and_pass_promtool() {
    let inbox = TestInbox::start_default().await;
    let body = alertmanager_payload(
        "ticket",
        "firing",
        "PostgresDeadlocks",
        "warning",
        &["firing", "firing", "resolved"],
    );
    inbox.post_hook("ticket", &body).await;
    let (status, content_type, text) = inbox.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    for line in [
        "inbox_notifications_total{receiver=\"ticket\",status=\"firing\"} 1",
        "inbox_notifications_total{receiver=\"pager\",status=\"resolved\"} 0",
        "inbox_alerts_total{receiver=\"ticket\",status=\"firing\"} 2",
        "inbox_alerts_total{receiver=\"ticket\",status=\"resolved\"} 1",
        "inbox_heartbeat_last_received_timestamp_seconds 0",
        "inbox_heartbeat_missing 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing line {line:?} in\n{text}");
    }
    for name in [
        "inbox_notifications_total",
        "inbox_alerts_total",
        "inbox_heartbeat_missing",
        "inbox_heartbeat_last_received_timestamp_seconds",
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "HELP for {name}");
    }
    promtool_check_metrics(&text);
    inbox.stop().await;
}

/// Lints the exposition with `promtool check metrics` when promtool is installed (it is on the stack's machines).
fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.expect("promtool is not installed: run native/install.sh (make test does)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn runbooks_are_served_as_markdown_and_nothing_outside_their_folder() {
    let root = temp_dir("runbooks");
    let dir = root.join("runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("RedisDown.md"), "# RedisDown\n\n## Meaning\n").unwrap();
    std::fs::write(root.join("secret.md"), "do not serve").unwrap();
    let inbox = TestInbox::start(Config {
        runbooks_dir: dir.clone(),
        ..Config::default()
    })
    .await;

    let (status, content_type, body) = inbox.get_text("/runbooks/RedisDown.md").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/markdown; charset=utf-8");
    assert!(body.starts_with("# RedisDown"));

    for path in [
        "/runbooks/Missing.md",
        "/runbooks/..%2Fsecret.md",
        "/runbooks/%2E%2E%2Fsecret.md",
        "/runbooks/RedisDown",
        "/runbooks/.md",
    ] {
        let (status, _, body) = inbox.get_text(path).await;
        assert_eq!(status, 404, "{path}");
        assert!(!body.contains("do not serve"), "{path}");
        assert!(body.contains("\"status\":\"error\""), "{path}: {body}");
    }
    inbox.stop().await;
    remove_dir(&root);
}

#[tokio::test]
async fn the_page_shows_firing_and_resolved_notifications_by_receiver() {
    let inbox = TestInbox::start_default().await;
    inbox
        .post_hook(
            "pager",
            &alertmanager_payload("pager", "firing", "RedisDown", "critical", &["firing"]),
        )
        .await;
    inbox
        .post_hook(
            "pager",
            &alertmanager_payload("pager", "resolved", "RedisDown", "critical", &["resolved"]),
        )
        .await;
    inbox
        .post_hook(
            "ticket",
            &alertmanager_payload("ticket", "firing", "RedisTooManyClients", "warning", &["firing"]),
        )
        .await;
    let (status, content_type, html) = inbox.get_text("/").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"));
    let pager = html.find("<h2 id=\"pager\">").unwrap();
    let ticket = html.find("<h2 id=\"ticket\">").unwrap();
    let heartbeat = html.find("<h2 id=\"heartbeat\">").unwrap();
    assert!(pager < ticket && ticket < heartbeat);
    let pager_section = &html[pager..ticket];
    let resolved = pager_section.find(">resolved<").expect("the resolved page is shown");
    let firing = pager_section.find(">firing<").expect("the firing page is shown");
    assert!(resolved < firing, "newest first");
    assert!(pager_section.contains("href=\"http://localhost:8082/runbooks/RedisDown.md\""));
    assert!(html[ticket..heartbeat].contains("RedisTooManyClients"));
    assert!(html[heartbeat..].contains("No notifications."));
    let (status, _, body) = inbox.get_text("/healthcheck").await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    inbox.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_notifications_and_the_last_heartbeat_from_the_data_file() {
    let dir = temp_dir("data");
    let config = Config {
        data_file: Some(dir.join("state").join("notifications.jsonl")),
        runbooks_dir: dir.clone(),
        ..Config::default()
    };

    let first = TestInbox::start(config.clone()).await;
    first.post_hook("heartbeat", &watchdog_payload()).await;
    first
        .post_hook(
            "pager",
            &alertmanager_payload("pager", "firing", "PostgresDown", "critical", &["firing"]),
        )
        .await;
    first.stop().await;

    let second = TestInbox::start(config).await;
    let (_, all) = second.get_json("/api/notifications").await;
    assert_eq!(all["count"], 2);
    assert_eq!(all["notifications"][0]["alertname"], "PostgresDown");
    let (_, beat) = second.get_json("/api/heartbeat").await;
    assert!(beat["last_received_at"].is_string(), "{beat}");
    let (_, answer) = second
        .post_hook(
            "ticket",
            &alertmanager_payload("ticket", "firing", "AppCacheErrors", "warning", &["firing"]),
        )
        .await;
    assert_eq!(answer["id"], 3, "ids continue after a restart");
    second.stop().await;
    remove_dir(&dir);
}
