//! Shared helpers: a real inbox on port 0 per test, stopped when the test's handle drops.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inbox::{Application, Config};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The webhook token of every [`TestInbox`]; Alertmanager-driven tests write it to a file.
pub const TEST_TOKEN: &str = "inbox-test-token-0123456789";

/// A running inbox.
pub struct TestInbox {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestInbox {
    /// Starts an inbox with `config` (its listen address is replaced by port 0, its token by [`TEST_TOKEN`]).
    pub async fn start(mut config: Config) -> Self {
        config.listen_addr = "127.0.0.1:0".parse().unwrap();
        config.webhook_token = inbox::auth::WebhookToken::new(TEST_TOKEN).unwrap();
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

    /// POSTs a webhook body to `/hook/<receiver>` with the token, as Alertmanager does; returns the status and the
    /// JSON answer.
    pub async fn post_hook(&self, receiver: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/hook/{receiver}")))
            .bearer_auth(TEST_TOKEN)
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

/// The real `inbox` binary, configured through its environment as the stack runs it, with its log (stdout) and
/// stderr captured line by line: for what only the shipped process shows (startup checks, the real log output).
pub struct InboxProcess {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub client: reqwest::Client,
    child: std::process::Child,
    stdout: Arc<Mutex<Vec<String>>>,
}

/// The binary under test, with every `INBOX_*` variable of the test's own environment removed (`make test` exports
/// the native stack's) and `vars` set instead.
fn inbox_command(vars: &[(&str, &str)]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_inbox"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("INBOX_") {
            command.env_remove(name);
        }
    }
    command
        .env("INBOX_LISTEN_ADDR", "127.0.0.1:0")
        .env("INBOX_RUNBOOKS_DIR", "no-such-runbooks-dir")
        .envs(vars.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Collects a pipe's lines (trailing `\n` removed, nothing else: raw control characters stay visible).
fn collect_lines(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(pipe);
        let mut line = Vec::new();
        while matches!(std::io::BufRead::read_until(&mut reader, b'\n', &mut line), Ok(n) if n > 0) {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            sink.lock().unwrap().push(String::from_utf8_lossy(&line).into_owned());
            line.clear();
        }
    });
    lines
}

/// The address in the `inbox listening` line, in either log format.
fn listening_addr(line: &str) -> Option<String> {
    if !line.contains("inbox listening") {
        return None;
    }
    if let Ok(json) = serde_json::from_str::<Value>(line) {
        return json["fields"]["addr"].as_str().map(str::to_string);
    }
    let rest = &line[line.find("addr=")? + 5..];
    Some(rest.split_whitespace().next()?.to_string())
}

impl InboxProcess {
    /// Starts the binary with `vars`; panics unless it reports listening within 10 s.
    pub async fn start(vars: &[(&str, &str)]) -> Self {
        let mut child = inbox_command(vars).spawn().expect("the inbox binary runs");
        let stdout = collect_lines(child.stdout.take().unwrap());
        let stderr = collect_lines(child.stderr.take().unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let addr = loop {
            if let Some(addr) = stdout.lock().unwrap().iter().find_map(|l| listening_addr(l)) {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the inbox exited ({status}): {:?} {:?}",
                    stdout.lock().unwrap(),
                    stderr.lock().unwrap()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the inbox did not report listening: {:?}",
                stdout.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        InboxProcess {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            child,
            stdout,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The log so far, one entry per line.
    pub fn log(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until `count` log lines contain `needle`; returns them.
    pub async fn wait_for_log(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<String> = self.log().into_iter().filter(|l| l.contains(needle)).collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fewer than {count} log lines with {needle:?}: {:?}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs `body` to `/hook/<receiver>` with this `Authorization` header (none for `None`); returns the status
    /// and the JSON answer (`Null` when the answer is not JSON).
    pub async fn post_hook(&self, receiver: &str, authorization: Option<&str>, body: &[u8]) -> (u16, Value) {
        let mut request = self
            .client
            .post(self.url(&format!("/hook/{receiver}")))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// GETs a JSON document; returns the status and the body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// GETs a text document; returns the status and the body.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }
}

impl Drop for InboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `vars` until it exits, for at most `limit`; returns its exit code (`None` when it was
/// still running and had to be killed) and its stderr.
pub async fn run_inbox_to_exit(vars: &[(&str, &str)], limit: Duration) -> (Option<i32>, String) {
    let mut child = inbox_command(vars).spawn().expect("the inbox binary runs");
    let _stdout = collect_lines(child.stdout.take().unwrap());
    let stderr = collect_lines(child.stderr.take().unwrap());
    let deadline = std::time::Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The reader thread may still be on the last line.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let text = stderr.lock().unwrap().join("\n");
    (code, text)
}
