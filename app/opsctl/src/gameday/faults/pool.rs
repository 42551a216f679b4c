//! The pool-exhaustion drill: the app's Postgres pool held full by writers waiting on locked rows.

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::time::sleep;

use super::postgres::pg_connect;
use super::{Handle, Phase};
use crate::gameday::error::Error;
use crate::gameday::proofs::Proof;

/// How long each lock burst of the pool-exhaustion drill holds the rows: under the app's `lock_timeout` (half its
/// 2 s query timeout), so that a writer waiting on its row is served at the burst's end rather than refused, and
/// goes straight back to wait on the next burst. Each write holds one of the app's ten Postgres connections while
/// it waits; the bursts being shorter than the statement timeout, the writers that hold one succeed (slowly), and
/// any other query that needs a connection times out acquiring one. Longer bursts made every waiting writer give
/// up at the same moment and the whole pool show idle at once (measured with 1.5 s bursts: AppDbPoolSaturated
/// fired 234 s into the fault).
const POOL_EXHAUSTION_BURST: Duration = Duration::from_millis(700);

/// Hot keys of the pool-exhaustion drill, a writer each: four times the app's 10 Postgres connections, so that the
/// pool's queue of waiters never empties, and a connection handed back at a burst's end goes straight to another
/// writer. Between a release and the next acquire a scrape can still see a connection idle now and then; the
/// alert averages over a minute for that reason (alerts/app.yml).
const POOL_EXHAUSTION_KEYS: usize = 40;

pub(super) async fn exhaustion(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    // The app lets one write per key at a time reach Postgres (the others wait in memory), so one hot row holds one
    // connection: to hold them all, the drill locks more rows than the pool has connections, each with its writer.
    let keys: Vec<String> = (0..POOL_EXHAUSTION_KEYS).map(|i| format!("gameday-hot-{i}")).collect();
    // One replica's own API: through HAProxy the writers would be spread over every replica's pool, and none
    // would be held full for the alert's 2 minutes (measured on two replicas: AppDbPoolSaturated never fired).
    let set_url = format!("{}/set", ctx.args.replica_api[0].trim_end_matches('/'));
    for key in &keys {
        ctx.http
            .post(&set_url)
            .json(&json!({"key": key, "value": 0}))
            .send()
            .await
            .map_err(|source| Error::Http {
                what: format!("seed {key}"),
                source,
            })?;
    }
    let locker = pg_connect(&ctx.pg).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut writers = Vec::new();
    for (w, key) in keys.iter().cloned().enumerate() {
        let (client, url, stop) = (ctx.http.clone(), set_url.clone(), stop_rx.clone());
        writers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut n = 0u64;
            while !*stop.borrow() {
                n += 1;
                let sent = client
                    .post(&url)
                    .json(&json!({"key": key, "value": {"writer": w, "n": n}}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => ok += 1,
                    _ => {
                        // Gave up on the lock or on a connection: back in the queue soon, to keep it from emptying.
                        failed += 1;
                        sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (ok, failed)
        }));
    }
    let lock = format!(
        "BEGIN; SELECT 1 FROM kv_store WHERE key IN ({}) FOR UPDATE;",
        keys.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ")
    );
    let mut ready = false;
    while h.holding() {
        locker.batch_execute(&lock).await.map_err(|source| Error::Postgres {
            what: "lock the hot keys",
            source,
        })?;
        if !ready {
            h.ready();
            ready = true;
        }
        tokio::select! {
            _ = sleep(POOL_EXHAUSTION_BURST) => {}
            _ = h.until(Phase::Clear) => {}
        }
        locker.batch_execute("COMMIT").await.map_err(|source| Error::Postgres {
            what: "unlock the hot keys",
            source,
        })?;
        sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let (mut ok, mut failed) = (0, 0);
    for w in writers {
        let (o, f) = w.await?;
        ok += o;
        failed += f;
    }
    ctx.say(&format!(
        "pool-exhaustion: the hot-key writers got {ok} answers 2xx and {failed} not"
    ));
    Ok(vec![])
}
