//! A stand-in for the running stack: one axum server that answers like the app, its admin listener, Prometheus
//! and Alertmanager (only what opsctl reads), next to a real on-call inbox (with its webhook token). Knobs break
//! one link at a time, or secure Prometheus and Alertmanager with basic auth as the native stack does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// What to break.
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    /// `/status` answers Degraded.
    pub degraded: bool,
    /// `/helloworld` answers something else.
    pub wrong_hello: bool,
    /// `/metrics` lacks the request histogram.
    pub no_histogram: bool,
    /// This job's target is down.
    pub down_job: Option<String>,
    /// This rule reports an evaluation error.
    pub rule_error: Option<String>,
    /// This alert has no runbook_url.
    pub no_runbook_url: Option<String>,
    /// This alert's runbook_url points to a file that does not exist.
    pub broken_runbook: Option<String>,
    /// The Alertmanager config lacks the heartbeat receiver.
    pub no_heartbeat_receiver: bool,
    /// Watchdog is not firing in Prometheus.
    pub watchdog_silent: bool,
    /// `POST /set` answers 503.
    pub writes_fail: bool,
    /// Prometheus and Alertmanager answer 401 to a request without basic auth `admin:<this>`.
    pub web_password: Option<String>,
}

/// The token the fake stack's inbox takes, as `webhook.token` holds it.
pub const WEBHOOK_TOKEN: &str = "fake-stack-webhook-token-0123456789";
/// What the secrets directory of [`FakeStack::write_secrets`] holds for the admin listener.
pub const ADMIN_TOKEN: &str = "fake-stack-admin-token";

/// Alerts the fake Prometheus has, each with a runbook in the inbox's folder.
pub const ALERTS: [&str; 3] = ["Watchdog", "RedisDown", "AppTargetDown"];

/// The stack's scrape jobs (the fake Prometheus has one target up for each).
pub fn jobs() -> Vec<&'static str> {
    stack::topology::Topology::embedded().job_names()
}

struct Fake {
    knobs: Mutex<Knobs>,
    kv: Mutex<HashMap<String, Value>>,
    inbox: String,
    reads: AtomicU64,
    missing_reads: AtomicU64,
    writes: AtomicU64,
    /// The `Authorization` header of every admin `/metrics` request (empty when there was none).
    admin_authorizations: Mutex<Vec<String>>,
}

/// The running fake stack.
pub struct FakeStack {
    /// Base URL of the fake app, admin, Prometheus and Alertmanager (one server).
    pub base: String,
    /// Base URL of the real inbox.
    pub inbox: String,
    fake: Arc<Fake>,
    stops: Vec<oneshot::Sender<()>>,
    runbooks: PathBuf,
}

impl FakeStack {
    pub async fn start(knobs: Knobs) -> Self {
        let runbooks = std::env::temp_dir().join(format!("opsctl-it-{}-{}", std::process::id(), next_id()));
        std::fs::create_dir_all(&runbooks).unwrap();
        for alert in ALERTS {
            std::fs::write(runbooks.join(format!("{alert}.md")), format!("# {alert}\n")).unwrap();
        }
        let mut stops = Vec::new();
        let inbox_config = inbox::Config {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            runbooks_dir: runbooks.clone(),
            webhook_token: inbox::auth::WebhookToken::new(WEBHOOK_TOKEN).unwrap(),
            ..inbox::Config::default()
        };
        let inbox_app = inbox::Application::build(&inbox_config).await.unwrap();
        let inbox = format!("http://{}", inbox_app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(inbox_app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        stops.push(stop);

        let fake = Arc::new(Fake {
            knobs: Mutex::new(knobs),
            kv: Mutex::new(HashMap::new()),
            inbox: inbox.clone(),
            reads: AtomicU64::new(0),
            missing_reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            admin_authorizations: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(fake.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        stops.push(stop);
        FakeStack {
            base,
            inbox,
            fake,
            stops,
            runbooks,
        }
    }

    /// Posts a Watchdog notification to the inbox, as Alertmanager would.
    pub async fn send_heartbeat(&self) {
        let body = json!({
            "version": "4", "status": "firing", "receiver": "heartbeat",
            "alerts": [{"status": "firing", "labels": {"alertname": "Watchdog"}}]
        });
        let response = reqwest::Client::new()
            .post(format!("{}/hook/heartbeat", self.inbox))
            .bearer_auth(WEBHOOK_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// (reads of existing keys, reads of missing keys, writes) the fake app has answered.
    pub fn traffic(&self) -> (u64, u64, u64) {
        (
            self.fake.reads.load(Ordering::Relaxed),
            self.fake.missing_reads.load(Ordering::Relaxed),
            self.fake.writes.load(Ordering::Relaxed),
        )
    }

    pub fn keys(&self) -> usize {
        self.fake.kv.lock().unwrap().len()
    }

    /// The `Authorization` headers the admin listener's `/metrics` has seen (`""` for none).
    pub fn admin_authorizations(&self) -> Vec<String> {
        self.fake.admin_authorizations.lock().unwrap().clone()
    }

    /// Writes a secrets directory like `make up`'s into `dir`: this stack's web password (when it has one) and
    /// webhook token, the admin token, and placeholders for Postgres and Redis; each a line of its own.
    pub fn write_secrets(&self, dir: &std::path::Path) {
        std::fs::create_dir_all(dir).unwrap();
        let web = knobs(&self.fake)
            .web_password
            .unwrap_or_else(|| "unused-web-password".into());
        for (file, secret) in [
            ("web.password", web.as_str()),
            ("webhook.token", WEBHOOK_TOKEN),
            ("app-admin.token", ADMIN_TOKEN),
            ("postgres.password", "unused-postgres-password"),
            ("redis-admin.password", "unused-redis-password"),
        ] {
            std::fs::write(dir.join(file), format!("{secret}\n")).unwrap();
        }
    }
}

impl Drop for FakeStack {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.runbooks);
    }
}

fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

type S = State<Arc<Fake>>;

fn knobs(fake: &Fake) -> Knobs {
    fake.knobs.lock().unwrap().clone()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"status": "error", "message": message}))).into_response()
}

/// Basic auth as Prometheus's and Alertmanager's web config checks it, when the knob asks for it.
async fn require_web_auth(State(f): S, request: Request, next: Next) -> Response {
    if let Some(password) = knobs(&f).web_password {
        let expected = format!("Basic {}", base64(format!("admin:{password}").as_bytes()));
        let sent = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if sent != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
        }
    }
    next.run(request).await
}

/// Standard base64 with padding: enough for a basic-auth header, without a crate for it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn router(fake: Arc<Fake>) -> Router {
    app_router()
        .merge(monitoring_router(fake.clone()))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .with_state(fake)
}

/// The app and its admin listener.
fn app_router() -> Router<Arc<Fake>> {
    Router::new()
        // The app.
        .route("/", get(|| async { Html("<p>Initial set key on redis : Hello</p><p>Value retrieved from redis: World!</p>") }))
        .route("/healthcheck", get(|| async { "OK" }))
        .route(
            "/helloworld",
            get(|State(f): S| async move {
                Json(if knobs(&f).wrong_hello { json!({"msg": "hi"}) } else { json!({"msg": "Hello World"}) })
            }),
        )
        .route(
            "/status",
            get(|State(f): S| async move { Json(json!({"status": if knobs(&f).degraded { "Degraded" } else { "Up" }})) }),
        )
        .route("/set", post(set))
        .route("/get/{key}", get(get_json))
        .route(
            "/set_key/{key}/{value}",
            get(|State(f): S, Path((k, v)): Path<(String, String)>| async move {
                f.kv.lock().unwrap().insert(k.clone(), Value::String(v.clone()));
                format!("{k} is set to {v}")
            }),
        )
        .route(
            "/get_key/{key}",
            get(|State(f): S, Path(k): Path<String>| async move {
                match f.kv.lock().unwrap().get(&k) {
                    Some(Value::String(s)) => s.clone().into_response(),
                    Some(v) => v.to_string().into_response(),
                    None => (StatusCode::NOT_FOUND, "Key not found").into_response(),
                }
            }),
        )
        .route("/query", get(query))
        .route(
            "/openapi.json",
            get(|| async {
                let paths: serde_json::Map<String, Value> = [
                    "/", "/helloworld", "/healthcheck", "/status", "/set_key/{key}/{value}", "/get_key/{key}", "/set",
                    "/get/{key}", "/query", "/openapi.json",
                ]
                .iter()
                .map(|p| (p.to_string(), json!({})))
                .collect();
                Json(json!({"openapi": "3.1.0", "paths": paths}))
            }),
        )
        // The admin listener: `/metrics` is open, as the app's is; the header is recorded for the tests.
        .route(
            "/metrics",
            get(|State(f): S, headers: HeaderMap| async move {
                let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
                f.admin_authorizations.lock().unwrap().push(authorization.to_string());
                if knobs(&f).no_histogram {
                    "app_build_info 1\n".to_string()
                } else {
                    "http_server_request_duration_seconds_bucket{http_route=\"/\",le=\"+Inf\"} 1\n".to_string()
                }
            }),
        )
}

/// Prometheus and Alertmanager, behind basic auth when the knob asks for it.
fn monitoring_router(fake: Arc<Fake>) -> Router<Arc<Fake>> {
    Router::new()
        // Prometheus.
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/rules", get(rules))
        .route(
            "/api/v1/alerts",
            get(|State(f): S| async move {
                let alerts = if knobs(&f).watchdog_silent {
                    json!([])
                } else {
                    json!([{"labels": {"alertname": "Watchdog"}, "state": "firing"}])
                };
                Json(json!({"status": "success", "data": {"alerts": alerts}}))
            }),
        )
        .route(
            "/api/v1/alertmanagers",
            get(|| async {
                Json(json!({"status": "success", "data": {"activeAlertmanagers": [{"url": "http://127.0.0.1:9093/api/v2/alerts"}]}}))
            }),
        )
        // Alertmanager.
        .route("/api/v2/status", get(am_status))
        .route("/api/v2/alerts", get(|| async { Json(json!([{"labels": {"alertname": "Watchdog"}}])) }))
        .route_layer(middleware::from_fn_with_state(fake, require_web_auth))
}

async fn set(State(f): S, body: Bytes) -> Response {
    if knobs(&f).writes_fail {
        return error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "malformed JSON");
    };
    let (Some(key), Some(value)) = (body["key"].as_str(), body.get("value").filter(|v| !v.is_null())) else {
        return error(StatusCode::BAD_REQUEST, "Invalid key pair");
    };
    f.writes.fetch_add(1, Ordering::Relaxed);
    f.kv.lock().unwrap().insert(key.to_string(), value.clone());
    Json(json!({"status": "success", "message": "Key-value pair is set successfully"})).into_response()
}

async fn get_json(State(f): S, Path(key): Path<String>) -> Response {
    let value = f.kv.lock().unwrap().get(&key).cloned();
    match value {
        Some(value) => {
            f.reads.fetch_add(1, Ordering::Relaxed);
            Json(json!({"key": key, "value": value})).into_response()
        }
        None => {
            f.missing_reads.fetch_add(1, Ordering::Relaxed);
            error(StatusCode::NOT_FOUND, "Key not found")
        }
    }
}

async fn query(Query(params): Query<HashMap<String, String>>) -> Response {
    let Some(param) = params.get("param") else {
        return error(StatusCode::BAD_REQUEST, "missing param");
    };
    let mut counts: HashMap<char, u32> = HashMap::new();
    for c in param.chars() {
        *counts.entry(c).or_default() += 1;
    }
    let count = counts.values().filter(|n| **n > 1).count();
    Json(json!({"param": param, "count": count})).into_response()
}

async fn targets(State(f): S) -> Json<Value> {
    let down = knobs(&f).down_job;
    let targets: Vec<Value> = jobs()
        .iter()
        .map(|job| {
            let is_down = down.as_deref() == Some(*job);
            json!({
                "labels": {"job": job, "instance": format!("127.0.0.1:{job}")},
                "scrapePool": job,
                "scrapeUrl": format!("http://127.0.0.1/{job}/metrics"),
                "health": if is_down { "down" } else { "up" },
                "lastError": if is_down { "connection refused" } else { "" },
            })
        })
        .collect();
    Json(json!({"status": "success", "data": {"activeTargets": targets, "droppedTargets": []}}))
}

async fn rules(State(f): S) -> Json<Value> {
    let k = knobs(&f);
    let mut rules: Vec<Value> = ALERTS
        .iter()
        .map(|alert| {
            let mut annotations = json!({"summary": "x"});
            if k.no_runbook_url.as_deref() != Some(*alert) {
                let file = if k.broken_runbook.as_deref() == Some(*alert) { "Nope" } else { alert };
                annotations["runbook_url"] = json!(format!("{}/runbooks/{file}.md", f.inbox));
            }
            json!({
                "name": alert, "type": "alerting", "query": "vector(1)", "duration": 0, "health": "ok",
                "labels": {"severity": "critical"}, "annotations": annotations,
                "lastError": if k.rule_error.as_deref() == Some(*alert) { "many-to-many matching not allowed" } else { "" },
            })
        })
        .collect();
    rules.push(json!({"name": "app:requests:rate5m", "type": "recording", "query": "vector(1)", "health": "ok"}));
    Json(json!({"status": "success", "data": {"groups": [{"name": "all", "file": "rules/all.yml", "rules": rules}]}}))
}

async fn am_status(State(f): S) -> Json<Value> {
    let mut original = String::from(
        "route:\n  receiver: ticket\nreceivers:\n  - name: pager\n    webhook_configs:\n      - url: http://127.0.0.1:8082/hook/pager\n  - name: ticket\n",
    );
    if !knobs(&f).no_heartbeat_receiver {
        original.push_str("  - name: heartbeat\n");
    }
    original.push_str("  - name: blackhole\n");
    Json(json!({"config": {"original": original}, "cluster": {"status": "disabled"}}))
}
