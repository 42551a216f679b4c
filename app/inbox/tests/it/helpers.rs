//! Shared helpers: a real inbox on port 0 per test, stopped when the test's handle drops.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use inbox::{Application, Config};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running inbox.
pub struct TestInbox {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestInbox {
    /// Starts an inbox with `config` (its listen address is replaced by port 0).
    pub async fn start(mut config: Config) -> Self {
        config.listen_addr = "127.0.0.1:0".parse().unwrap();
        let app = Application::build(&config).await.expect("the inbox starts");
        let base = format!("http://{}", app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        TestInbox {
            base,
            client,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts an inbox with the defaults, except for `runbooks_dir`, which points nowhere.
    pub async fn start_default() -> Self {
        Self::start(Config {
            runbooks_dir: PathBuf::from("no-such-runbooks-dir"),
            ..Config::default()
        })
        .await
    }

    /// Stops the inbox gracefully and waits for it to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task
            .take()
            .unwrap()
            .await
            .unwrap()
            .expect("the server stops cleanly");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a webhook body to `/hook/<receiver>`; returns the status and the JSON answer.
    pub async fn post_hook(&self, receiver: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/hook/{receiver}")))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// GETs a JSON document; returns the status and the body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// GETs a text document; returns the status, the content type and the body.
    pub async fn get_text(&self, path: &str) -> (u16, String, String) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, content_type, response.text().await.unwrap())
    }
}

impl Drop for TestInbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A fresh, empty folder under the system's temporary directory, unique to this process and call.
pub fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("inbox-it-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes a folder made by [`temp_dir`].
pub fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// A webhook body shaped exactly like Alertmanager 0.25 sends it for a group of alerts of one name.
pub fn alertmanager_payload(receiver: &str, status: &str, alertname: &str, severity: &str, alerts: &[&str]) -> Value {
    let alerts: Vec<Value> = alerts
        .iter()
        .enumerate()
        .map(|(i, alert_status)| {
            json!({
                "status": alert_status,
                "labels": {"alertname": alertname, "severity": severity, "service": "app", "instance": format!("host{i}")},
                "annotations": {
                    "summary": format!("{alertname} summary."),
                    "description": "Something templated.",
                    "runbook_url": format!("http://localhost:8082/runbooks/{alertname}.md"),
                    "dashboard_url": "http://localhost:3000/d/sre-overview/?viewPanel=13"
                },
                "startsAt": "2026-11-22T10:00:00.000Z",
                "endsAt": if *alert_status == "resolved" { "2026-11-22T10:05:00.000Z" } else { "0001-01-01T00:00:00Z" },
                "generatorURL": "http://localhost:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
                "fingerprint": format!("{i:016x}")
            })
        })
        .collect();
    json!({
        "receiver": receiver,
        "status": status,
        "alerts": alerts,
        "groupLabels": {"alertname": alertname, "service": "app"},
        "commonLabels": {"alertname": alertname, "severity": severity, "service": "app"},
        "commonAnnotations": {"summary": format!("{alertname} summary.")},
        "externalURL": "http://localhost:9093",
        "version": "4",
        "groupKey": format!("{{}}/{{severity=\"{severity}\"}}:{{alertname=\"{alertname}\", service=\"app\"}}"),
        "truncatedAlerts": 0
    })
}

/// The Watchdog notification the heartbeat receiver gets every repeat interval.
pub fn watchdog_payload() -> Value {
    let mut body = alertmanager_payload("heartbeat", "firing", "Watchdog", "none", &["firing"]);
    body["commonLabels"]["severity"] = json!("none");
    body
}
