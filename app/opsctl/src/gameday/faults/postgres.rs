//! Faults of Postgres: a held row lock, deadlocks, connections near max_connections, a cache-busting scan, and
//! Postgres stopped under write load.

use std::time::Duration;

use tokio::time::sleep;

use super::{Handle, Phase};
use crate::gameday::error::Error;
use crate::gameday::proofs::{self, Proof};
use crate::gameday::stack::now_ms;

pub(super) async fn lock(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let db = h.ctx.pg.clone();
    ensure_lock_table(&db).await?;
    let holder = pg_connect(&db).await?;
    holder
        .batch_execute("BEGIN; SELECT n FROM gameday_lock WHERE id = 1 FOR UPDATE;")
        .await
        .map_err(|source| Error::Postgres {
            what: "lock the row",
            source,
        })?;
    let waiter = pg_connect(&db).await?;
    let blocked = tokio::spawn(async move {
        waiter
            .batch_execute("UPDATE gameday_lock SET n = n + 1 WHERE id = 1")
            .await
    });
    h.ready();
    h.until(Phase::Clear).await;
    holder
        .batch_execute("ROLLBACK")
        .await
        .map_err(|source| Error::Postgres {
            what: "release the lock",
            source,
        })?;
    match blocked.await {
        Ok(Ok(())) => Ok(vec![]),
        Ok(Err(source)) => Err(Error::Postgres {
            what: "the blocked update failed",
            source,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Two deadlocks, broken by Postgres; over once injected.
pub(super) async fn deadlock(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let db = &ctx.pg;
    ensure_lock_table(db).await?;
    for _ in 0..2 {
        deadlock_once(db).await?;
    }
    h.ready();
    h.until(Phase::Clear).await;
    Ok(vec![])
}

pub(super) async fn connections(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let db = h.ctx.pg.clone();
    let probe = pg_connect(&db).await?;
    let row = probe
        .query_one(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
                    (SELECT sum(numbackends)::int FROM pg_stat_database)",
            &[],
        )
        .await
        .map_err(|source| Error::Postgres {
            what: "read connection settings",
            source,
        })?;
    let (max, reserved, open): (i32, i32, i32) = (row.get(0), row.get(1), row.get(2));
    // 85% of what non-superusers may open (the rule's threshold is 80%).
    let target = ((max - reserved) * 85 + 99) / 100;
    let extra = (target - open).clamp(0, 500) as usize;
    let mut held = Vec::with_capacity(extra);
    for _ in 0..extra {
        held.push(pg_connect(&db).await?);
    }
    h.ctx.say(&format!(
        "pg-connections: opened {extra} connections ({open} were open; max_connections {max}, {reserved} reserved)"
    ));
    h.ready();
    h.until(Phase::Clear).await;
    drop(held);
    drop(probe);
    Ok(vec![])
}

pub(super) async fn buffer_cache(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let db = h.ctx.pg.clone();
    let c = pg_connect(&db).await?;
    // Postgres reads a table larger than a quarter of shared_buffers through a small ring of buffers, so every
    // scan counts as block reads, not hits. Twice that size, whatever shared_buffers is.
    let row = c
        .query_one(
            "SELECT (setting::bigint * current_setting('block_size')::bigint / 2)::bigint FROM pg_settings
             WHERE name = 'shared_buffers'",
            &[],
        )
        .await
        .map_err(|source| Error::Postgres {
            what: "read shared_buffers",
            source,
        })?;
    let bytes: i64 = row.get(0);
    let rows = (bytes / 800).max(10_000);
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS gameday_scan;
         CREATE TABLE gameday_scan AS SELECT g AS id, repeat('x', 700) AS pad FROM generate_series(1, {rows}) g;"
    ))
    .await
    .map_err(|source| Error::Postgres {
        what: "create gameday_scan",
        source,
    })?;
    h.ready();
    while h.holding() {
        c.batch_execute("SELECT count(*) FROM gameday_scan")
            .await
            .map_err(|source| Error::Postgres {
                what: "scan gameday_scan",
                source,
            })?;
        tokio::select! {
            _ = sleep(Duration::from_secs(1)) => {}
            _ = h.until(Phase::Clear) => {}
        }
    }
    c.batch_execute("DROP TABLE gameday_scan")
        .await
        .map_err(|source| Error::Postgres {
            what: "drop gameday_scan",
            source,
        })?;
    Ok(vec![])
}

/// Stops Postgres under write load; the proof: every acknowledged write is stored.
pub(super) async fn down(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let writers = proofs::Writers::start(ctx.clone(), 20.0);
    sleep(Duration::from_secs(3)).await;
    ctx.supervisor("stop", "postgres:*").await?;
    h.ready();
    h.until(Phase::Clear).await;
    ctx.supervisor("start", "postgres:*").await?;
    let removed = now_ms();
    // Keep writing while the app reconnects, so the proof covers writes after the restart too.
    sleep(Duration::from_secs(10)).await;
    let proof = writers.stop().await;
    h.cleared(Ok(removed));
    Ok(vec![proof])
}

pub(super) async fn pg_connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, Error> {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|source| Error::Postgres {
            what: "connect to Postgres",
            source,
        })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn ensure_lock_table(db: &tokio_postgres::Config) -> Result<(), Error> {
    let c = pg_connect(db).await?;
    // The lock drills start together; concurrent CREATE TABLE IF NOT EXISTS can still collide on the catalog's
    // unique index, so the creation is serialised by a transaction-scoped advisory lock.
    c.batch_execute(
        "BEGIN;
         SELECT pg_advisory_xact_lock(hashtext('gameday_lock'));
         CREATE TABLE IF NOT EXISTS gameday_lock (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
         INSERT INTO gameday_lock (id) VALUES (1), (2), (3) ON CONFLICT DO NOTHING;
         COMMIT;",
    )
    .await
    .map_err(|source| Error::Postgres {
        what: "create gameday_lock",
        source,
    })
}

/// One deadlock: two sessions each lock a row, then ask for the other's; Postgres aborts one after
/// deadlock_timeout. Rows 2 and 3: row 1 is the lock drill's, which may be holding it at the same time.
async fn deadlock_once(db: &tokio_postgres::Config) -> Result<(), Error> {
    let a = pg_connect(db).await?;
    let b = pg_connect(db).await?;
    let err = |source| Error::Postgres {
        what: "deadlock drill",
        source,
    };
    a.batch_execute("BEGIN; UPDATE gameday_lock SET n = n + 1 WHERE id = 2;")
        .await
        .map_err(err)?;
    b.batch_execute("BEGIN; UPDATE gameday_lock SET n = n + 1 WHERE id = 3;")
        .await
        .map_err(err)?;
    let a_waits = tokio::spawn(async move {
        let r = a.batch_execute("UPDATE gameday_lock SET n = n + 1 WHERE id = 3").await;
        let _ = a.batch_execute("ROLLBACK").await;
        r
    });
    sleep(Duration::from_millis(200)).await;
    let rb = b.batch_execute("UPDATE gameday_lock SET n = n + 1 WHERE id = 2").await;
    let _ = b.batch_execute("ROLLBACK").await;
    let ra = a_waits.await?;
    let deadlocked = [&ra, &rb]
        .iter()
        .any(|r| matches!(r, Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)));
    if deadlocked {
        Ok(())
    } else {
        Err(Error::NoDeadlock(format!("{ra:?} / {rb:?}")))
    }
}
