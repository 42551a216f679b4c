//! Outage tests: stop and start the real Postgres and Redis through the project's `native/ctl.sh` and check that
//! the service degrades and recovers as the contract says. They change shared state, so they run one at a time
//! (a static lock) in a test binary of their own; the API tests never run beside them.
//!
//! Needs the native stack's supervisor running (`native/up.sh etcd postgres redis`). Timings are printed; run with
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
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../native/ctl.sh")
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
        "native/ctl.sh {action} {service} failed (is the native stack's supervisor running? native/up.sh etcd postgres redis):\n{}{}",
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
    outage.stop("postgres:*");
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let started = Instant::now();
        let response = app.set(&app.key(&format!("w{i}")), json!(i)).await;
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"status": "error", "message": "database unavailable", "outcome": "not_applied"})
        );
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

    outage.start("postgres:*");
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
    // Postgres is the supervisor's group of every cluster member.
    for (first, second) in [("postgres:*", "redis"), ("redis", "postgres:*")] {
        let mut outage = Outage::new();
        outage.stop("postgres:*");
        outage.stop("redis");
        let (code, body) = status_of(&app).await;
        assert_eq!((code, body["status"].as_str()), (503, Some("Down")));
        assert_eq!(app.set(&app.key("x"), json!(1)).await.status(), 503);

        outage.start(first);
        if first == "postgres:*" {
            eventually("writes with Redis still down", || async {
                app.set(&app.key("half"), json!(1)).await.status() == 200
            })
            .await;
            assert_eq!(status_of(&app).await.1["status"], "Degraded");
        } else {
            assert_eq!(status_of(&app).await.0, 503);
        }
        outage.start(second);
        let key = app.key(&format!("{}-first", first.trim_end_matches(":*")));
        let took = eventually("full recovery", || fully_recovered(&app, &key)).await;
        println!("both stopped, {first} started first: full recovery {took:?} after {second} started");
    }
}

#[tokio::test]
async fn the_service_starts_with_both_dependencies_down_and_recovers() {
    let _serial = serial().await;
    let mut outage = Outage::new();
    outage.stop("postgres:*");
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
    outage.start("postgres:*");
    let key = app.key("k");
    let took = eventually("recovery", || fully_recovered(&app, &key)).await;
    println!("started down: recovered {took:?} after both came back");
}

/// How an application is restarted: SIGTERM's graceful shutdown, or SIGKILL's (its tasks dropped where they are).
#[derive(Debug, Clone, Copy)]
enum Stop {
    Graceful,
    Kill,
}

/// Stops `app` the way `how` says and starts a new application against the same Postgres and Redis.
async fn restart(app: &mut TestApp, how: Stop) -> TestApp {
    match how {
        Stop::Graceful => app.shutdown().await.0.expect("clean shutdown"),
        Stop::Kill => app.kill().await,
    }
    spawn_with(app.config.clone()).await
}

/// Reads `key` through both read routes, again and again for `during`; stops at the first answer that is not
/// `want` (a string) and says what it was.
async fn always_reads(app: &TestApp, key: &str, want: &str, during: Duration) -> Result<(), String> {
    let until = Instant::now() + during;
    loop {
        let json = value_of(app, key).await;
        if json != (200, json!(want)) {
            return Err(format!("/get answered {json:?}"));
        }
        let response = app.get(&format!("/get_key/{}", helpers::encode(key))).await;
        let text = (response.status().as_u16(), response.text().await.unwrap());
        if text != (200, want.to_owned()) {
            return Err(format!("/get_key answered {text:?}"));
        }
        if Instant::now() >= until {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `key` is served from Redis again, with `want`.
async fn served_from_cache(app: &TestApp, key: &str, want: &str, case: &str) -> Duration {
    eventually(&format!("{case}: Redis to serve the new value"), || async {
        let hits = cache_count(&app.metrics().await, "hit");
        value_of(app, key).await == (200, json!(want)) && cache_count(&app.metrics().await, "hit") > hits
    })
    .await
}

/// Where the app restarts relative to the acknowledged write and to Redis coming back.
#[derive(Debug, Clone, Copy)]
enum Order {
    /// Write, Redis back, app restart.
    WriteThenRedisThenApp,
    /// Write, app restart, Redis back.
    WriteThenAppThenRedis,
    /// App restart, write, Redis back.
    AppThenWriteThenRedis,
}

const ORDERS: [Order; 3] = [
    Order::WriteThenRedisThenApp,
    Order::WriteThenAppThenRedis,
    Order::AppThenWriteThenRedis,
];

/// `k` is cached as `old`; Redis stops; `k` is set to `new` (acknowledged while the cache cannot be updated);
/// Redis starts again and the app restarts, in every order and both ways of stopping. No read may then return
/// `old`. With Redis' append-only file (the native stack's setting when this test was written) Redis comes back
/// with `old`; without persistence it comes back empty, and the test below covers a Redis that keeps it.
#[tokio::test]
async fn an_acknowledged_write_outlives_every_order_of_app_and_redis_restarts() {
    let _serial = serial().await;
    let mut stale = Vec::new();
    for how in [Stop::Graceful, Stop::Kill] {
        for order in ORDERS {
            let case = format!("{order:?}, {how:?}");
            let mut app = spawn_app().await;
            let key = app.key(&format!("{order:?}-{how:?}"));
            assert_eq!(app.set(&key, json!("old")).await.status(), 200);
            served_from_cache(&app, &key, "old", &case).await;

            let mut outage = Outage::new();
            outage.stop("redis");
            let mut reads = Vec::new();
            match order {
                Order::WriteThenRedisThenApp => {
                    assert_eq!(app.set(&key, json!("new")).await.status(), 200, "{case}");
                    outage.start("redis");
                    reads.push(always_reads(&app, &key, "new", Duration::from_millis(200)).await);
                    app = restart(&mut app, how).await;
                }
                Order::WriteThenAppThenRedis => {
                    assert_eq!(app.set(&key, json!("new")).await.status(), 200, "{case}");
                    app = restart(&mut app, how).await;
                    reads.push(always_reads(&app, &key, "new", Duration::from_millis(500)).await);
                    outage.start("redis");
                }
                Order::AppThenWriteThenRedis => {
                    app = restart(&mut app, how).await;
                    assert_eq!(app.set(&key, json!("new")).await.status(), 200, "{case}");
                    outage.start("redis");
                }
            }
            // Long enough for the cache breaker to let lookups through again.
            reads.push(always_reads(&app, &key, "new", Duration::from_millis(2500)).await);
            match reads.into_iter().find_map(Result::err) {
                Some(e) => stale.push(format!("{case}: {e}")),
                None => {
                    let took = served_from_cache(&app, &key, "new", &case).await;
                    println!("{case}: never stale; served from Redis again {took:?} later");
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "reads returned a value older than an acknowledged write:\n{}",
        stale.join("\n")
    );
}

/// Pauses every write command of Redis (`CLIENT PAUSE … WRITE`: the app's cache updates time out) while it keeps
/// serving reads and keeps its data: the case a Redis restart no longer shows once Redis runs without persistence.
/// Unpaused when dropped, so that a failing test leaves Redis usable.
struct WritesPaused {
    url: String,
    ended: bool,
}

impl WritesPaused {
    async fn start(app: &TestApp) -> Self {
        let url = helpers::redis_admin_url(&app.config);
        let client = bb8_redis::redis::Client::open(url.as_str()).unwrap();
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis is reachable");
        let _: () = bb8_redis::redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(60_000)
            .arg("WRITE")
            .query_async(&mut conn)
            .await
            .expect("CLIENT PAUSE");
        WritesPaused { url, ended: false }
    }

    async fn end(mut self) {
        let client = bb8_redis::redis::Client::open(self.url.as_str()).unwrap();
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis is reachable");
        let _: () = bb8_redis::redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query_async(&mut conn)
            .await
            .expect("CLIENT UNPAUSE");
        self.ended = true;
    }
}

impl Drop for WritesPaused {
    fn drop(&mut self) {
        // For a test that failed on the way: a blocking connection, as no runtime may be left to drive one.
        if !self.ended {
            if let Ok(mut conn) = bb8_redis::redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) {
                let _: Result<(), _> = bb8_redis::redis::cmd("CLIENT").arg("UNPAUSE").query(&mut conn);
            }
        }
    }
}

/// As above with a Redis that stays up, keeps `old`, and refuses only the cache update: whatever the order of
/// the app's restart and Redis accepting writes again, no read returns `old` after `new` was acknowledged.
#[tokio::test]
async fn an_acknowledged_write_outlives_app_restarts_while_redis_keeps_the_old_entry() {
    let _serial = serial().await;
    let mut stale = Vec::new();
    for how in [Stop::Graceful, Stop::Kill] {
        for order in ORDERS {
            let case = format!("writes paused: {order:?}, {how:?}");
            let mut app = spawn_app().await;
            let key = app.key(&format!("paused-{order:?}-{how:?}"));
            assert_eq!(app.set(&key, json!("old")).await.status(), 200);
            served_from_cache(&app, &key, "old", &case).await;

            let paused = WritesPaused::start(&app).await;
            let mut reads = Vec::new();
            match order {
                Order::WriteThenRedisThenApp => {
                    assert_eq!(app.set(&key, json!("new")).await.status(), 200, "{case}");
                    paused.end().await;
                    reads.push(always_reads(&app, &key, "new", Duration::from_millis(200)).await);
                    app = restart(&mut app, how).await;
                }
                Order::WriteThenAppThenRedis => {
                    assert_eq!(app.set(&key, json!("new")).await.status(), 200, "{case}");
                    app = restart(&mut app, how).await;
                    reads.push(always_reads(&app, &key, "new", Duration::from_millis(1500)).await);
                    paused.end().await;
                }
                Order::AppThenWriteThenRedis => {
                    app = restart(&mut app, how).await;
                    assert_eq!(app.set(&key, json!("new")).await.status(), 200, "{case}");
                    reads.push(always_reads(&app, &key, "new", Duration::from_millis(1500)).await);
                    paused.end().await;
                }
            }
            reads.push(always_reads(&app, &key, "new", Duration::from_millis(2500)).await);
            match reads.into_iter().find_map(Result::err) {
                Some(e) => stale.push(format!("{case}: {e}")),
                None => {
                    let took = served_from_cache(&app, &key, "new", &case).await;
                    println!("{case}: never stale; served from Redis again {took:?} later");
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "reads returned a value older than an acknowledged write:\n{}",
        stale.join("\n")
    );
}

/// A write committed while Redis refuses the cache update and the epoch row is locked (so it cannot be bumped):
/// the app answers 503 `unknown`, reads of the key on this instance go around the cache meanwhile, and once the
/// epoch can be bumped the cache serves the new value.
#[tokio::test]
async fn a_write_that_can_neither_update_the_cache_nor_bump_the_epoch_is_reported_unknown() {
    let _serial = serial().await;
    let app = spawn_app().await;
    let key = app.key("unbumped");
    assert_eq!(app.set(&key, json!("old")).await.status(), 200);
    served_from_cache(&app, &key, "old", "unbumped").await;

    let paused = WritesPaused::start(&app).await;
    let locker = helpers::postgres(&app.config).await;
    locker
        .batch_execute("BEGIN; SELECT epoch FROM kv_cache_epoch FOR UPDATE")
        .await
        .expect("the epoch row can be locked");
    let response = app.set(&key, json!("new")).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["outcome"], "unknown", "{body}");
    let pg = helpers::postgres(&app.config).await;
    let stored: Value = pg
        .query_one("SELECT value FROM kv_store WHERE key = $1", &[&key])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, json!("new"), "the write itself committed");
    always_reads(&app, &key, "new", Duration::from_millis(1500))
        .await
        .expect("no stale read");

    locker.batch_execute("COMMIT").await.unwrap();
    paused.end().await;
    always_reads(&app, &key, "new", Duration::from_millis(1500))
        .await
        .expect("no stale read");
    let took = served_from_cache(&app, &key, "new", "unbumped").await;
    println!("unbumped: served from Redis again {took:?} after the epoch could be bumped");
}
