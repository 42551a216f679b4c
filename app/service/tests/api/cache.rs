//! The read-through cache: hits, misses and errors are counted as they happen, writes update the cache, and an
//! unreachable dependency degrades the service the way the contract says.

use std::time::{Duration, Instant};

use app::store::cache::Cache;
use bb8_redis::redis::{self, AsyncCommands};
use serde_json::{json, Value};

use crate::helpers::{
    cache_entry, isolated_config, redis_admin_url, spawn_app, spawn_with, test_config, Metrics, TestApp,
};

const CACHE: &str = "cache_requests_total";

fn counts(metrics: &Metrics) -> [f64; 3] {
    ["hit", "miss", "error"].map(|result| metrics.value_or_zero(CACHE, &[("result", result)]))
}

/// Change of the hit, miss and error counters while `f` runs.
async fn delta<F: std::future::Future<Output = ()>>(app: &TestApp, f: F) -> [f64; 3] {
    let before = counts(&app.metrics().await);
    f.await;
    let after = counts(&app.metrics().await);
    [after[0] - before[0], after[1] - before[1], after[2] - before[2]]
}

async fn redis_connection(app: &TestApp) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_admin_url(&app.config)).unwrap();
    client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis is reachable")
}

async fn value_of(app: &TestApp, key: &str) -> Value {
    let response = app.get_key_json(key).await;
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["value"].clone()
}

#[tokio::test]
async fn a_read_after_a_write_is_a_hit() {
    let app = spawn_app().await;
    let key = app.key("k");
    app.set(&key, json!("v")).await;
    let d = delta(&app, async {
        assert_eq!(value_of(&app, &key).await, "v");
    })
    .await;
    assert_eq!(d, [1.0, 0.0, 0.0]);
}

#[tokio::test]
async fn a_missing_key_is_a_miss_and_is_not_cached() {
    let app = spawn_app().await;
    let key = app.key("missing");
    let d = delta(&app, async {
        assert_eq!(app.get_key_json(&key).await.status(), 404);
        assert_eq!(app.get_key_json(&key).await.status(), 404);
    })
    .await;
    assert_eq!(d, [0.0, 2.0, 0.0]);
}

#[tokio::test]
async fn a_miss_fills_the_cache_with_a_ttl_so_the_next_read_hits() {
    let app = spawn_app().await;
    let key = app.key("k");
    app.set(&key, json!({"a": 1})).await;
    let mut redis = redis_connection(&app).await;
    let entry = cache_entry(&app.config, &key).await;
    let _: () = redis.del(&entry).await.unwrap();
    let d = delta(&app, async {
        assert_eq!(value_of(&app, &key).await, json!({"a": 1}));
    })
    .await;
    assert_eq!(d, [0.0, 1.0, 0.0], "the first read misses");
    let ttl: i64 = redis.ttl(&entry).await.unwrap();
    assert!(ttl > 0 && ttl <= app.config.cache_ttl.as_secs() as i64, "ttl {ttl}");
    let d = delta(&app, async {
        assert_eq!(value_of(&app, &key).await, json!({"a": 1}));
    })
    .await;
    assert_eq!(d, [1.0, 0.0, 0.0], "the second read hits");
}

#[tokio::test]
async fn a_write_replaces_the_cached_value() {
    let app = spawn_app().await;
    let key = app.key("k");
    for i in 0..5 {
        app.set(&key, json!(i)).await;
        assert_eq!(value_of(&app, &key).await, json!(i));
    }
}

#[tokio::test]
async fn an_older_version_never_replaces_a_newer_cache_entry() {
    let app = spawn_app().await;
    let key = app.key("k");
    app.set(&key, json!("first")).await;
    app.set(&key, json!("second")).await;
    let mut redis = redis_connection(&app).await;
    let entry = cache_entry(&app.config, &key).await;
    let epoch: i64 = entry
        .trim_start_matches("app:kv:")
        .split_once(':')
        .unwrap()
        .0
        .parse()
        .unwrap();
    let cached: String = redis.get(&entry).await.unwrap();
    let (second, json) = cached.split_once(':').expect("entries carry the row version");
    assert_eq!(json, r#""second""#);
    let second: i64 = second.parse().unwrap();
    // A slow reader that read the first version tries to fill the cache late: the newer entry stays.
    let cache = Cache::new(&app.config, app::telemetry::metrics::Metrics::new(true, "test", "test"));
    assert!(!cache
        .put_if_newer(epoch, &key, second - 1, &json!("first"))
        .await
        .unwrap());
    assert_eq!(value_of(&app, &key).await, "second");
    // A newer version does replace it.
    assert!(cache
        .put_if_newer(epoch, &key, second + 1, &json!("third"))
        .await
        .unwrap());
    let cached: String = redis.get(&entry).await.unwrap();
    assert_eq!(cached, format!(r#"{}:"third""#, second + 1));
}

#[tokio::test]
async fn with_redis_unreachable_reads_and_writes_use_postgres_and_count_errors() {
    // A key written (and cached) by a healthy instance... Both use a schema of their own: the write with Redis
    // unreachable bumps the cache epoch, which would turn other tests' hits into misses.
    let isolated = isolated_config().await;
    let healthy = spawn_with(isolated.clone()).await;
    healthy.assert_dependencies_up().await;
    let cached = healthy.key("cached");
    healthy.set(&cached, json!("from postgres")).await;

    // ...read by an instance whose Redis is unreachable (nothing listens on port 1: every operation fails at once).
    let mut config = isolated;
    config.redis_url = app::config::SecretUrl::new("redis://127.0.0.1:1");
    let app = spawn_with(config).await;
    let started = Instant::now();
    let d = delta(&app, async {
        for _ in 0..3 {
            assert_eq!(value_of(&app, &cached).await, "from postgres");
        }
    })
    .await;
    assert_eq!(d, [0.0, 0.0, 3.0], "each lookup counts one error");

    // Writes succeed once the cache epoch was bumped (Redis may still hold an older entry under the old one).
    let epoch_before = cache_entry(&app.config, "k").await;
    let written = app.key("written");
    assert_eq!(app.set(&written, json!("new")).await.status(), 200);
    assert_ne!(
        cache_entry(&app.config, "k").await,
        epoch_before,
        "the write bumped the epoch"
    );
    let d = delta(&app, async {
        assert_eq!(value_of(&app, &written).await, "new");
    })
    .await;
    assert_eq!(
        d,
        [0.0, 0.0, 1.0],
        "the read tries the cache of the new epoch, fails and reads Postgres"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a dead Redis must not stall requests"
    );

    let response = app.get("/status").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "Degraded");
    assert_eq!(body["checks"]["redis"]["status"], "error");
    assert_eq!(
        body["checks"]["redis"]["error"],
        "cannot connect to Redis (connection refused)"
    );
    assert_eq!(body["checks"]["postgres"]["status"], "ok");
}

#[tokio::test]
async fn with_postgres_unreachable_writes_fail_fast_with_503() {
    let mut config = test_config();
    config.database_url = app::config::SecretUrl::new("postgres://app:secret-pw@127.0.0.1:1/app");
    let app = spawn_with(config).await;
    let started = Instant::now();
    let response = app.set(&app.key("k"), json!(1)).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "error", "message": "database unavailable", "outcome": "not_applied"})
    );
    assert_eq!(app.get_key_json(&app.key("uncached")).await.status(), 503);
    assert_eq!(app.get("/").await.status(), 503);
    let response = app.get("/status").await;
    assert_eq!(response.status(), 503);
    let text = response.text().await.unwrap();
    assert!(!text.contains("secret-pw"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "Down");
    assert_eq!(app.get("/healthcheck").await.status(), 200);
    assert_eq!(app.get("/helloworld").await.status(), 200);
    let metrics = app.metrics().await;
    assert!(metrics.value_or_zero("db_client_connection_timeouts_total", &[("pool_name", "postgres")]) >= 1.0);
}
