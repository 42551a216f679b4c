//! Outage tests: stop and start the real Postgres and Redis through the project's `native/ctl.sh` and check that
//! the service degrades and recovers as the contract says. They change shared state, so they run one at a time
//! (a static lock) in a test binary of their own; the API tests never run beside them.
//!
//! Needs the native stack's supervisor running (`native/up.sh postgres redis`). Timings are printed; run with
//! `--nocapture` to see them.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{Mutex, MutexGuard};

use helpers::{spawn_app, spawn_with, test_config, TestApp};

/// How long recovery may take after a dependency is started again.
const RECOVERY: Duration = Duration::from_secs(30);

/// One outage at a time. An async mutex: each test runs on a runtime of its own and holds it throughout; unlike
/// std's, a test that fails does not poison it for the others.
async fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

/// Services stopped by a test; started again when dropped, so that a failing test leaves the stack running.
struct Outage {
    stopped: Vec<&'static str>,
}

impl Outage {
    fn new() -> Self {
        Outage { stopped: Vec::new() }
    }

    fn stop(&mut self, service: &'static str) {
        ctl("stop", service);
        self.stopped.push(service);
    }

    fn start(&mut self, service: &'static str) {
        ctl("start", service);
        self.stopped.retain(|s| *s != service);
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        for service in std::mem::take(&mut self.stopped) {
            let script = ctl_script();
            match Command::new(&script).args(["start", service]).status() {
                Ok(status) if status.success() => {}
                other => eprintln!("could not restart {service} after the test: {other:?}"),
            }
        }
    }
}

fn ctl_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../native/ctl.sh")
}

/// Runs `native/ctl.sh ACTION SERVICE`, failing the test if it fails.
fn ctl(action: &str, service: &str) {
    let script = ctl_script();
    let out = Command::new(&script)
        .args([action, service])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "native/ctl.sh {action} {service} failed (is the native stack's supervisor running? native/up.sh postgres redis):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `check` until it holds or `RECOVERY` passes; returns how long it took.
async fn eventually<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < RECOVERY,
            "{what} did not happen within {RECOVERY:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

async fn status_of(app: &TestApp) -> (u16, Value) {
    let response = app.get("/status").await;
    let code = response.status().as_u16();
    (code, response.json().await.unwrap_or(Value::Null))
}

async fn value_of(app: &TestApp, key: &str) -> (u16, Value) {
    let response = app.get_key_json(key).await;
    let code = response.status().as_u16();
    (
        code,
        response.json::<Value>().await.unwrap_or(Value::Null)["value"].clone(),
    )
}

fn cache_count(metrics: &helpers::Metrics, result: &str) -> f64 {
    metrics.value_or_zero("cache_requests_total", &[("result", result)])
}

/// Whether a write and a read of a fresh key succeed, the read served by Redis.
async fn fully_recovered(app: &TestApp, key: &str) -> bool {
    if status_of(app).await.1["status"] != "Up" || app.set(key, json!("ok")).await.status() != 200 {
        return false;
    }
    let hits = cache_count(&app.metrics().await, "hit");
    value_of(app, key).await == (200, json!("ok")) && cache_count(&app.metrics().await, "hit") > hits
}

#[tokio::test]
async fn with_redis_stopped_reads_of_existing_keys_still_succeed() {
    let _serial = serial().await;
    let app = spawn_app().await;
    let key = app.key("existing");
    assert_eq!(app.set(&key, json!("kept")).await.status(), 200);
    let errors_before = cache_count(&app.metrics().await, "error");

    let mut outage = Outage::new();
    outage.stop("redis");
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(value_of(&app, &key).await, (200, json!("kept")));
        slowest = slowest.max(started.elapsed());
    }
    println!("redis stopped: slowest of 20 reads took {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "reads stalled: {slowest:?}");
    assert!(
        cache_count(&app.metrics().await, "error") >= errors_before + 20.0,
        "each lookup counts an error"
    );
    let other = app.key("written-during-outage");
    assert_eq!(app.set(&other, json!("also kept")).await.status(), 200);
    assert_eq!(value_of(&app, &other).await, (200, json!("also kept")));
    let (code, body) = status_of(&app).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("Degraded")), "{body}");
    assert_eq!(body["checks"]["redis"]["status"], "error");

    outage.start("redis");
    let took = eventually("recovery after Redis restarts", || fully_recovered(&app, &key)).await;
    println!("redis started: cache hits again after {took:?}");
}

#[tokio::test]
async fn a_redis_restart_never_serves_a_value_older_than_an_acknowledged_write() {
    let _serial = serial().await;
    let app = spawn_app().await;
    let key = app.key("versioned");
    assert_eq!(app.set(&key, json!("old")).await.status(), 200);
    assert_eq!(value_of(&app, &key).await, (200, json!("old")));

    let mut outage = Outage::new();
    // Redis persists "old" (append-only file) and loads it again when it starts.
    outage.stop("redis");
    assert_eq!(app.set(&key, json!("new")).await.status(), 200);
    outage.start("redis");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        assert_eq!(
            value_of(&app, &key).await,
            (200, json!("new")),
            "a stale cached value was served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("Redis to serve the new value", || async {
        let hits = cache_count(&app.metrics().await, "hit");
        value_of(&app, &key).await == (200, json!("new")) && cache_count(&app.metrics().await, "hit") > hits
    })
    .await;
}

#[tokio::test]
async fn with_postgres_stopped_writes_fail_fast_and_cached_reads_succeed() {
    let _serial = serial().await;
    let app = spawn_app().await;
    let cached = app.key("cached");
    assert_eq!(app.set(&cached, json!({"still": "here"})).await.status(), 200);

    let mut outage = Outage::new();
    outage.stop("postgres");
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let started = Instant::now();
        let response = app.set(&app.key(&format!("w{i}")), json!(i)).await;
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"status": "error", "message": "database unavailable"}));
    }
    println!("postgres stopped: slowest of 10 writes answered 503 in {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "a write took {slowest:?}");

    assert_eq!(
        value_of(&app, &cached).await,
        (200, json!({"still": "here"})),
        "cached reads still succeed"
    );
    let started = Instant::now();
    assert_eq!(app.get_key_json(&app.key("never-cached")).await.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(1));
    let started = Instant::now();
    let (code, body) = status_of(&app).await;
    println!("postgres stopped: /status answered {code} in {:?}", started.elapsed());
    assert_eq!((code, body["status"].as_str()), (503, Some("Down")), "{body}");
    assert_eq!(app.get("/healthcheck").await.status(), 200);
    let metrics = app.metrics().await;
    assert!(metrics.value_or_zero("db_client_connection_timeouts_total", &[("pool_name", "postgres")]) >= 1.0);

    outage.start("postgres");
    let took = eventually("writes to succeed after Postgres restarts", || async {
        app.set(&app.key("after"), json!(1)).await.status() == 200
    })
    .await;
    println!("postgres started: writes succeed again after {took:?}");
}

#[tokio::test]
async fn the_service_recovers_whichever_dependency_comes_back_first() {
    let _serial = serial().await;
    let app = spawn_app().await;
    for (first, second) in [("postgres", "redis"), ("redis", "postgres")] {
        let mut outage = Outage::new();
        outage.stop("postgres");
        outage.stop("redis");
        let (code, body) = status_of(&app).await;
        assert_eq!((code, body["status"].as_str()), (503, Some("Down")));
        assert_eq!(app.set(&app.key("x"), json!(1)).await.status(), 503);

        outage.start(first);
        if first == "postgres" {
            eventually("writes with Redis still down", || async {
                app.set(&app.key("half"), json!(1)).await.status() == 200
            })
            .await;
            assert_eq!(status_of(&app).await.1["status"], "Degraded");
        } else {
            assert_eq!(status_of(&app).await.0, 503);
        }
        outage.start(second);
        let key = app.key(&format!("{first}-first"));
        let took = eventually("full recovery", || fully_recovered(&app, &key)).await;
        println!("both stopped, {first} started first: full recovery {took:?} after {second} started");
    }
}

#[tokio::test]
async fn the_service_starts_with_both_dependencies_down_and_recovers() {
    let _serial = serial().await;
    let mut outage = Outage::new();
    outage.stop("postgres");
    outage.stop("redis");
    let started = Instant::now();
    let app = spawn_with(test_config()).await;
    println!("started with both dependencies down in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(app.get("/healthcheck").await.status(), 200);
    assert_eq!(app.get("/helloworld").await.status(), 200);
    assert_eq!(status_of(&app).await.0, 503);
    assert_eq!(app.get_key_json(&app.key("k")).await.status(), 503);

    outage.start("redis");
    outage.start("postgres");
    let key = app.key("k");
    let took = eventually("recovery", || fully_recovered(&app, &key)).await;
    println!("started down: recovered {took:?} after both came back");
}
