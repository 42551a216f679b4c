//! A real Alertmanager (Debian's `prometheus-alertmanager`) delivering to the inbox. It fails where the
//! binary is missing: `native/install.sh` (run by `make test`) installs it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{remove_dir, temp_dir, TestInbox, TEST_TOKEN};

/// Kills the Alertmanager when the test ends, whatever way it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alertmanager_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["prometheus-alertmanager", "alertmanager"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A config routing like the stack's (critical → pager, warning → ticket) with timings short enough for a test;
/// each webhook sends the inbox's token from a file, as the stack's does.
fn write_config(dir: &Path, inbox: &str) -> PathBuf {
    let token_file = dir.join("webhook.token");
    std::fs::write(&token_file, format!("{TEST_TOKEN}\n")).unwrap();
    let token_file = token_file.display();
    let config = format!(
        r#"route:
  receiver: ticket
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: pager
      matchers: ['severity="critical"']
receivers:
  - name: pager
    webhook_configs:
      - url: {inbox}/hook/pager
        send_resolved: true
        http_config:
          authorization:
            credentials_file: {token_file}
  - name: ticket
    webhook_configs:
      - url: {inbox}/hook/ticket
        send_resolved: true
        http_config:
          authorization:
            credentials_file: {token_file}
"#
    );
    let path = dir.join("alertmanager.yml");
    std::fs::write(&path, config).unwrap();
    path
}

async fn wait_for_notification(inbox: &TestInbox, query: &str, deadline: Instant) -> Value {
    loop {
        let (_, list) = inbox.get_json(&format!("/api/notifications?{query}")).await;
        if list["count"].as_u64().unwrap_or(0) > 0 {
            return list["notifications"][0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no notification matching {query} arrived in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_real_alertmanager_delivers_firing_and_resolved_pages_to_the_inbox() {
    let binary = alertmanager_binary()
        .expect("prometheus-alertmanager is not installed: run native/install.sh (make test does)");
    let inbox = TestInbox::start_default().await;
    let dir = temp_dir("alertmanager");
    let config = write_config(&dir, &inbox.base);
    let port = free_port();
    let am_base = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=") // no gossip: a single local instance
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("alertmanager starts");
    let _running = Running(child);

    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(inbox.client.get(format!("{am_base}/-/ready")).send().await, Ok(r) if r.status().is_success()) {
        assert!(
            Instant::now() < deadline,
            "alertmanager did not become ready; see {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let labels = json!({"alertname": "InboxEndToEnd", "severity": "critical", "service": "app"});
    let annotations =
        json!({"summary": "End-to-end test alert.", "runbook_url": "http://localhost:8082/runbooks/InboxEndToEnd.md"});
    let post = |alert: Value| {
        let client = inbox.client.clone();
        let url = format!("{am_base}/api/v2/alerts");
        async move {
            let response = client.post(url).json(&json!([alert])).send().await.unwrap();
            assert!(
                response.status().is_success(),
                "alertmanager refused the alert: {}",
                response.status()
            );
        }
    };
    post(json!({"labels": labels, "annotations": annotations})).await;
    let firing = wait_for_notification(&inbox, "receiver=pager&alertname=InboxEndToEnd&status=firing", deadline).await;
    assert_eq!(firing["webhook"]["version"], "4");
    assert_eq!(firing["webhook"]["receiver"], "pager");
    assert_eq!(firing["webhook"]["alerts"][0]["labels"]["severity"], "critical");
    assert_eq!(
        firing["webhook"]["alerts"][0]["annotations"]["runbook_url"],
        annotations["runbook_url"]
    );
    assert!(!firing["webhook"]["alerts"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .is_empty());

    // Ending the alert in the past resolves it; Alertmanager sends the resolved notification (send_resolved).
    let ended = inbox::clock::rfc3339(inbox::clock::now_unix_ms() - 1000);
    post(json!({"labels": labels, "annotations": annotations, "endsAt": ended})).await;
    let resolved = wait_for_notification(
        &inbox,
        "receiver=pager&alertname=InboxEndToEnd&status=resolved",
        deadline,
    )
    .await;
    assert_eq!(resolved["webhook"]["alerts"][0]["status"], "resolved");

    let (_, _, metrics) = inbox.get_text("/metrics").await;
    assert!(
        metrics.contains("inbox_notifications_total{receiver=\"pager\",status=\"resolved\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("inbox_webhook_rejected_total{reason=\"wrong_token\"} 0")
            && metrics.contains("inbox_webhook_rejected_total{reason=\"missing_token\"} 0"),
        "Alertmanager sent the token from its credentials_file: {metrics}"
    );
    let (_, tickets) = inbox.get_json("/api/notifications?receiver=ticket").await;
    assert_eq!(
        tickets["count"], 0,
        "a critical alert never reaches the ticket receiver"
    );
    drop(_running);
    inbox.stop().await;
    remove_dir(&dir);
}
