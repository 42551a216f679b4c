//! A standby whose replay is stuck while the leader's WAL moves on: the replication lag alert's fault. The
//! asynchronous standby's startup process (the one that replays WAL) gets SIGSTOP, and the leader switches WAL
//! segments until that standby is 32 MiB behind. Writes are not touched: the standby's walreceiver still receives
//! and flushes WAL (a commit waits for the synchronous standby's flush, never for a replay), and the app reads from
//! the leader only. `pg_wal_replay_pause()` cannot hold the fault: Patroni 3.0.2 resumes a paused replay on
//! Postgres 14+ at its next loop unless the cluster is in maintenance mode (measured: "Resuming paused WAL replay
//! for PostgreSQL 14+" 4 s after a pause, and the alert never fired).
//!
//! While replay is stopped the standby is asked nothing: the stopped process may hold a lock that its sessions'
//! snapshots wait for. The leader's `pg_stat_replication` tells which standby is asynchronous and how far behind it
//! replays (its walreceiver reports the frozen position).

use std::time::{Duration, Instant};

use tokio::time::{sleep, timeout};
use tokio_postgres::Client;

use super::patroni::{self, Role};
use super::postgres::pg_connect;
use super::{signal, Handle, Phase};
use crate::gameday::error::Error;
use crate::gameday::proofs::Proof;
use crate::gameday::stack::now_ms;

/// How far behind the stopped standby is put: the alert's threshold (one 16 MiB WAL segment, strictly more) and a
/// segment of margin.
const BEHIND_BYTES: i64 = 2 * 16 * 1024 * 1024;

/// How long the standby may take to catch up once replay goes on (the skipped segments are empty).
const CATCH_UP: Duration = Duration::from_secs(30);

/// A bound on each question to a member, so that no answer can hold the drill (and the stopped replay) forever.
const ASK: Duration = Duration::from_secs(5);

fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |source| Error::Postgres { what, source }
}

/// One row of `query`, within [`ASK`].
async fn ask(
    client: &Client,
    query: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    what: &'static str,
) -> Result<Option<tokio_postgres::Row>, Error> {
    match timeout(ASK, client.query_opt(query, params)).await {
        Ok(row) => row.map_err(sql(what)),
        Err(_) => Err(Error::Cluster(format!("{what}: no answer within {} s", ASK.as_secs()))),
    }
}

/// The streaming standby the leader replicates to asynchronously (0-based member index), once there is one (a
/// member that rejoined after the drills before may take a while). Patroni names members `postgres-N`, which is
/// each standby's `application_name`.
async fn async_standby(primary: &Client, members: usize, leader: usize) -> Result<usize, Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = ask(
            primary,
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'async' \
             ORDER BY application_name LIMIT 1",
            &[],
            "find the asynchronous standby",
        )
        .await?;
        let member = row.and_then(|r| {
            let name: String = r.get(0);
            let n: usize = name.strip_prefix("postgres-")?.parse().ok()?;
            (1..=members).contains(&n).then_some(n - 1)
        });
        match member {
            Some(i) if i != leader => return Ok(i),
            _ if Instant::now() > deadline => {
                return Err(Error::Cluster(
                    "the leader streams to no asynchronous standby named postgres-N after 60 s".to_owned(),
                ))
            }
            _ => sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Bytes of WAL the leader has written that member `name` has not replayed, as the leader sees it.
async fn behind_on_leader(primary: &Client, name: &str) -> Result<i64, Error> {
    let row = ask(
        primary,
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint FROM pg_stat_replication \
         WHERE application_name = $1 AND replay_lsn IS NOT NULL",
        &[&name],
        "read the standby's replay position on the leader",
    )
    .await?;
    row.map(|r| r.get(0))
        .ok_or_else(|| Error::Cluster(format!("the leader no longer streams to {name}")))
}

/// The standby's startup process, stopped (SIGSTOP) until [`Stopped::resume`] or drop: a drill that fails half-way
/// still lets replay go on. (A game day killed meanwhile cannot; `native/gameday.sh` and `native/down.sh` send
/// SIGCONT to every process of the Postgres members.)
struct Stopped(i32);

impl Stopped {
    fn stop(pid: i32) -> Result<Stopped, Error> {
        signal(pid, libc::SIGSTOP, "the standby's startup process")?;
        Ok(Stopped(pid))
    }

    fn resume(self) -> Result<(), Error> {
        let pid = self.0;
        std::mem::forget(self);
        signal(pid, libc::SIGCONT, "the standby's startup process")
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = signal(self.0, libc::SIGCONT, "the standby's startup process");
    }
}

/// Stops replay on the asynchronous standby and moves the leader's WAL on until that standby is [`BEHIND_BYTES`]
/// behind; holds; lets replay go on (on every path once stopped) and waits for it to catch up.
pub(super) async fn stop_replay(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    patroni::wait_whole(&ctx).await?;
    let leader = patroni::wait_member(&ctx, Role::Leader, Duration::from_secs(60)).await?;
    let primary = pg_connect(&patroni::member_session(&ctx, leader)?).await?;
    let lagging = async_standby(&primary, ctx.args.patroni.len(), leader).await?;
    let name = format!("postgres-{}", lagging + 1);
    let standby = pg_connect(&patroni::member_session(&ctx, lagging)?).await?;
    let pid: i32 = ask(
        &standby,
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'startup'",
        &[],
        "find the standby's startup process",
    )
    .await?
    .map(|r| r.get(0))
    .ok_or_else(|| Error::Cluster(format!("{name} has no startup process: is it a standby?")))?;
    let stopped = Stopped::stop(pid)?;
    let held = fall_behind_and_hold(h, &primary, &name).await;
    let resumed = stopped.resume();
    let removed = now_ms();
    let lag = held?;
    resumed?;
    ctx.say(&format!("replica-lag: replay goes on on {name}"));

    // Caught up: the standby itself has replayed at least what the leader had written when replay went on.
    let target: String = ask(
        &primary,
        "SELECT pg_current_wal_lsn()::text",
        &[],
        "read the leader's WAL position",
    )
    .await?
    .map(|r| r.get(0))
    .unwrap_or_default();
    let started = Instant::now();
    let caught_up = loop {
        let row = ask(
            &standby,
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn()) <= 0",
            &[&target],
            "read the standby's replay position",
        )
        .await?;
        if row.is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true)) {
            break Some(started.elapsed());
        }
        if started.elapsed() > CATCH_UP {
            break None;
        }
        sleep(Duration::from_millis(250)).await;
    };
    h.cleared(Ok(removed));
    let mib = |bytes: i64| bytes as f64 / (1024.0 * 1024.0);
    Ok(vec![Proof {
        claim: format!(
            "replay stopped on the asynchronous standby ({name}) while the leader's (postgres-{}) WAL moved on: once \
             it goes on, the standby catches up",
            leader + 1
        ),
        passed: caught_up.is_some(),
        figures: format!(
            "{:.1} MiB behind once stopped; {}",
            mib(lag),
            caught_up.map_or(
                format!("not caught up {} s after replay went on", CATCH_UP.as_secs()),
                |d| format!("caught up {:.1} s after replay went on", d.as_secs_f64())
            )
        ),
    }])
}

/// Switches the leader's WAL segments until standby `name` is [`BEHIND_BYTES`] behind (each switch moves the
/// leader's WAL position to the next segment; the message before it is the WAL a switch needs to move at all),
/// reports the fault in place and holds it. Returns how far behind the standby was.
async fn fall_behind_and_hold(h: &mut Handle, primary: &Client, name: &str) -> Result<i64, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let lag = loop {
        let switch = primary.batch_execute(
            "SELECT pg_logical_emit_message(false, 'sre-stack-gameday', 'replica lag drill'); \
             SELECT pg_switch_wal();",
        );
        match timeout(ASK, switch).await {
            Ok(done) => done.map_err(sql("switch the leader's WAL segment"))?,
            Err(_) => {
                return Err(Error::Cluster(
                    "the leader's WAL switch did not answer within 5 s".to_owned(),
                ))
            }
        }
        let lag = behind_on_leader(primary, name).await?;
        if lag >= BEHIND_BYTES {
            break lag;
        }
        if Instant::now() > deadline {
            return Err(Error::Cluster(format!(
                "{name} is only {lag} bytes behind after 30 s of WAL switches: does its replay go on?"
            )));
        }
        sleep(Duration::from_millis(200)).await;
    };
    h.ctx.say(&format!(
        "replica-lag: {name}'s replay stopped, {lag} bytes behind the leader"
    ));
    h.ready();
    h.until(Phase::Clear).await;
    Ok(lag)
}
