//! Writes under contention and failure: a row locked by another session, a connection that dies under a write, a
//! row deleted by hand, and a Redis outage under many writes. A failed write says whether it was applied
//! (`outcome`), a write reported `not_applied` never lands later, and no read returns a value older than an
//! acknowledged write.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{encode, isolated_config, postgres, spawn_app, spawn_with, TestApp};

/// The value Postgres holds for `key`, read beside the application.
async fn stored(pg: &tokio_postgres::Client, key: &str) -> Option<Value> {
    pg.query_opt("SELECT value FROM kv_store WHERE key = $1", &[&key])
        .await
        .expect("the row can be read")
        .map(|row| row.get(0))
}

/// What both read routes answer for `key`: `/get/{key}`'s value and `/get_key/{key}`'s text.
async fn read_both(app: &TestApp, key: &str) -> (Value, String) {
    let response = app.get_key_json(key).await;
    assert_eq!(response.status(), 200, "/get/{key}");
    let value = response.json::<Value>().await.unwrap()["value"].clone();
    let response = app.get(&format!("/get_key/{}", encode(key))).await;
    assert_eq!(response.status(), 200, "/get_key/{key}");
    (value, response.text().await.unwrap())
}

/// Another session holds `SELECT … FOR UPDATE` on one row for 6 s while twelve clients (two more than the pool
/// has connections) write that key again and again. Writes and uncached reads of other keys go on as usual; the
/// writers of the locked key are told quickly that their writes were not applied; and once the lock is released
/// none of those writes shows up in Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_locked_row_neither_starves_the_pool_nor_lands_writes_reported_not_applied() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let app = spawn_app().await;
    let hot = app.key("hot");
    assert_eq!(app.set(&hot, json!("original")).await.status(), 200);
    let locker = postgres(&app.config).await;
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .query("SELECT 1 FROM kv_store WHERE key = $1 FOR UPDATE", &[&hot])
        .await
        .unwrap();
    let locked_at = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..12)
        .map(|w| {
            let (client, url, key, stop) = (
                app.client.clone(),
                format!("{}/set", app.api),
                hot.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let value = format!("w{w}-{n}");
                    let started = Instant::now();
                    let response = client
                        .post(&url)
                        .json(&json!({"key": key, "value": value}))
                        .send()
                        .await
                        .expect("the API answers");
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    answers.push((value, status, body, started.elapsed()));
                }
                answers
            })
        })
        .collect();
    // Long enough for the writers to queue up on the row lock (or on their turn).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut others = Vec::new();
    let mut i = 0;
    while locked_at.elapsed() < Duration::from_secs(4) {
        let started = Instant::now();
        let write = app
            .set(&app.key(&format!("other-{i}")), json!(i))
            .await
            .status()
            .as_u16();
        let read = app
            .get_key_json(&app.key(&format!("never-written-{i}")))
            .await
            .status()
            .as_u16();
        others.push((write, read, started.elapsed()));
        i += 1;
    }
    // The writers stop while the lock is still held, so every answer they got was given under the lock.
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for writer in writers {
        answers.extend(writer.await.unwrap());
    }
    let held = locked_at.elapsed();
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(held)).await;
    locker.batch_execute("COMMIT").await.unwrap();
    // A write the app gave up on but Postgres still held would land now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now_stored = stored(&postgres(&app.config).await, &hot).await;

    let failed_others: Vec<_> = others
        .iter()
        .filter(|(write, read, took)| *write != 200 || *read != 404 || *took > Duration::from_secs(1))
        .collect();
    let slowest = answers.iter().map(|a| a.3).max().unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for (_, status, body, _) in &answers {
        *seen.entry(format!("{status} {}", body["outcome"])).or_insert(0) += 1;
    }
    println!(
        "locked row: {} rounds of other keys ({} failed); {} hot writes answered {seen:?}, the slowest after \
         {slowest:?}",
        others.len(),
        failed_others.len(),
        answers.len(),
    );
    assert!(
        held < Duration::from_secs(6),
        "the writers outlived the lock ({held:?})"
    );
    // Every finding at once, so that a failure shows the whole picture.
    let mut problems = Vec::new();
    if !failed_others.is_empty() {
        problems.push(format!(
            "writes and uncached reads of other keys failed or stalled (write status, read status, took): \
             {failed_others:?}"
        ));
    }
    let wrong: Vec<_> = answers
        .iter()
        .filter(|(_, status, body, took)| {
            *status != 503
                || body["status"] != "error"
                || body["outcome"] != "not_applied"
                || *took >= app.config.db_query_timeout
        })
        .collect();
    if !wrong.is_empty() {
        problems.push(format!(
            "{} of {} writes of the locked key were not answered 503 not_applied within {:?}, e.g. {:?}",
            wrong.len(),
            answers.len(),
            app.config.db_query_timeout,
            wrong[0]
        ));
    }
    if now_stored != Some(json!("original")) {
        problems.push(format!(
            "a write answered 503 is in Postgres after the lock: {now_stored:?}"
        ));
    }
    let served = read_both(&app, &hot).await.0;
    if Some(&served) != now_stored.as_ref() {
        problems.push(format!("the API serves {served} while Postgres holds {now_stored:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The connection of a write dies while the statement waits (its backend is terminated): the app cannot know
/// whether it committed, and says so. It recovers at once.
#[tokio::test]
async fn a_write_whose_connection_dies_under_it_is_reported_unknown() {
    // A write of unknown outcome bumps the cache epoch later: a schema of its own keeps other tests' hits.
    let app = spawn_with(isolated_config().await).await;
    app.assert_dependencies_up().await;
    let key = app.key("terminated");
    assert_eq!(app.set(&key, json!("original")).await.status(), 200);
    let locker = postgres(&app.config).await;
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .query("SELECT 1 FROM kv_store WHERE key = $1 FOR UPDATE", &[&key])
        .await
        .unwrap();
    let locker_pid: i32 = locker.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);

    let write = {
        let (client, url, key) = (app.client.clone(), format!("{}/set", app.api), key.clone());
        tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&json!({"key": key, "value": "maybe"}))
                .send()
                .await
                .expect("the API answers");
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        })
    };
    let observer = postgres(&app.config).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let blocked = observer
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                &[&locker_pid],
            )
            .await
            .unwrap();
        if !blocked.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the write never waited on the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = write.await.unwrap();
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["outcome"], "unknown", "{body}");

    assert_eq!(app.set(&key, json!("after")).await.status(), 200);
    assert_eq!(read_both(&app, &key).await, (json!("after"), "after".to_owned()));
}

/// A row deleted in Postgres by hand and then written through the API again must not be shadowed by the entry
/// Redis still holds for it: versions never go backwards.
#[tokio::test]
async fn a_row_deleted_by_hand_and_written_again_is_not_shadowed_by_its_cached_value() {
    let app = spawn_app().await;
    let key = app.key("deleted");
    assert_eq!(app.set(&key, json!("old")).await.status(), 200);
    assert_eq!(read_both(&app, &key).await.0, json!("old"));
    let pg = postgres(&app.config).await;
    let deleted = pg
        .execute("DELETE FROM kv_store WHERE key = $1", &[&key])
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(app.set(&key, json!("new")).await.status(), 200);
    assert_eq!(read_both(&app, &key).await, (json!("new"), "new".to_owned()));
}

/// With Redis unreachable every write must bump the cache epoch before it is acknowledged; concurrent writes share
/// their bumps (a bump that started after a write committed covers it), so the epoch moves far less often than
/// writes are acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_a_redis_outage_concurrent_writes_share_their_epoch_bumps() {
    let mut config = isolated_config().await;
    // Nothing listens on port 1: every cache update fails.
    config.redis_url = app::config::SecretUrl::new("redis://127.0.0.1:1");
    let app = spawn_with(config).await;
    assert_eq!(app.set(&app.key("first"), json!(0)).await.status(), 200);
    let pg = postgres(&app.config).await;
    let epoch = || async {
        pg.query_one("SELECT epoch FROM kv_cache_epoch", &[])
            .await
            .expect("the epoch can be read")
            .get::<_, i64>(0)
    };
    // Fill the pool first: on a busy machine, opening ten connections at once can outlast the acquire timeout.
    let warm_up: Vec<_> = (0..app.config.db_pool_max_size)
        .map(|i| {
            let (client, url, key) = (
                app.client.clone(),
                format!("{}/set", app.api),
                app.key(&format!("warm-{i}")),
            );
            tokio::spawn(async move { client.post(url).json(&json!({"key": key, "value": i})).send().await })
        })
        .collect();
    for warming in warm_up {
        warming.await.unwrap().expect("the API answers");
    }
    let before = epoch().await;
    const CLIENTS: usize = 40;
    const WRITES: usize = 10;
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, url, prefix) = (app.client.clone(), format!("{}/set", app.api), app.key("many"));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for w in 0..WRITES {
                    let response = client
                        .post(&url)
                        .json(&json!({"key": format!("{prefix}-{c}-{w}"), "value": w}))
                        .send()
                        .await
                        .expect("the API answers");
                    statuses.push(response.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for client in clients {
        statuses.extend(client.await.unwrap());
    }
    let took = started.elapsed();
    let bumps = epoch().await - before;
    let writes = CLIENTS * WRITES;
    println!("redis unreachable: {writes} writes from {CLIENTS} clients in {took:?} bumped the epoch {bumps} times");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(bumps >= 1, "acknowledged without a bump");
    assert!(
        bumps as usize <= writes / 4,
        "{bumps} bumps for {writes} writes: bumps are not shared"
    );
}

/// Another instance moved to a newer epoch (here: a bump by hand) and filled it with the old value before this
/// instance noticed the bump. A write through this instance must still replace that entry: it updates the
/// namespace Postgres names after its commit, not the one it last knew, which other instances no longer read.
#[tokio::test]
async fn a_write_updates_the_namespace_current_after_its_commit_even_when_its_own_epoch_lags() {
    let config = isolated_config().await;
    let writer = spawn_with(config.clone()).await;
    writer.assert_dependencies_up().await;
    let key = writer.key("lagging");
    assert_eq!(writer.set(&key, json!("old")).await.status(), 200);
    let pg = postgres(&config).await;
    // The writer refreshes its epoch every half second: the few milliseconds below mostly fall between two.
    let epoch = || async {
        pg.query_one("SELECT epoch FROM kv_cache_epoch", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = epoch().await;
    pg.execute("UPDATE kv_cache_epoch SET epoch = epoch + 1", &[])
        .await
        .unwrap();
    let reader = spawn_with(config.clone()).await;
    assert_eq!(
        read_both(&reader, &key).await.0,
        json!("old"),
        "the reader fills the new namespace"
    );
    assert_eq!(writer.set(&key, json!("new")).await.status(), 200);
    assert_eq!(epoch().await, before + 1, "nobody else bumped the epoch meanwhile");
    assert_eq!(read_both(&reader, &key).await, (json!("new"), "new".to_owned()));
}

/// The window the store documents for several instances: another instance's write that bumped the epoch (here
/// done by hand: the row updated and the epoch bumped, as a write whose cache update failed does) is seen by this
/// instance within a second, when its background refresh reads the new epoch.
#[tokio::test]
async fn another_instances_bump_is_seen_within_a_second() {
    let app = spawn_with(isolated_config().await).await;
    app.assert_dependencies_up().await;
    let key = app.key("elsewhere");
    assert_eq!(app.set(&key, json!("old")).await.status(), 200);
    assert_eq!(read_both(&app, &key).await.0, json!("old"));
    let pg = postgres(&app.config).await;
    pg.batch_execute(&format!(
        "UPDATE kv_store SET value = '\"new\"', version = nextval('kv_version_seq') WHERE key = '{key}'; \
         UPDATE kv_cache_epoch SET epoch = epoch + 1"
    ))
    .await
    .unwrap();
    let started = Instant::now();
    while read_both(&app, &key).await.0 != json!("new") {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the bump was not seen within a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("another instance's bump seen after {:?}", started.elapsed());
}
