//! A standby whose replay is stuck while the leader's WAL moves on: the replication lag alert's fault. The
//! asynchronous standby's startup process (the one that replays WAL) gets SIGSTOP, and the leader switches WAL
//! segments until that standby is 32 MiB behind. Writes are not touched: the standby's walreceiver still receives
//! and flushes WAL (a commit waits for the synchronous standby's flush, never for a replay), and the app reads from
//! the leader only. `pg_wal_replay_pause()` cannot hold the fault: Patroni 3.0.2 resumes a paused replay on
//! Postgres 14+ at its next loop unless the cluster is in maintenance mode (measured: "Resuming paused WAL replay
//! for PostgreSQL 14+" 4 s after a pause, and the alert never fired).

use std::time::{Duration, Instant};

use tokio::time::sleep;
use tokio_postgres::Client;

use super::patroni::{self, Role};
use super::postgres::pg_connect;
use super::{Handle, Phase};
use crate::gameday::error::Error;
use crate::gameday::proofs::Proof;
use crate::gameday::stack::now_ms;

/// How far behind the paused standby is put: past the alert's threshold (one 16 MiB WAL segment) by a segment,
/// so the app's own WAL on the leader or a late scrape cannot hold it under.
const BEHIND_BYTES: i64 = 2 * 16 * 1024 * 1024;

/// How long the standby may take to catch up once replay goes on (the skipped segments are empty).
const CATCH_UP: Duration = Duration::from_secs(30);

fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |source| Error::Postgres { what, source }
}

/// The leader's current WAL position, as text (`pg_lsn`).
async fn leader_lsn(leader: &Client) -> Result<String, Error> {
    let row = leader
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(sql("read the leader's WAL position"))?;
    Ok(row.get(0))
}

/// Bytes of WAL up to `lsn` that the standby has not replayed.
async fn behind(standby: &Client, lsn: &str) -> Result<i64, Error> {
    let row = standby
        .query_one(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn())::bigint",
            &[&lsn],
        )
        .await
        .map_err(sql("read the standby's replayed WAL position"))?;
    Ok(row.get(0))
}

/// The member that neither leads nor is the synchronous standby (Patroni names one synchronous standby).
async fn async_standby(h: &Handle, leader: usize) -> Result<usize, Error> {
    for i in (0..h.ctx.args.patroni.len()).filter(|&i| i != leader) {
        if !patroni::is(&h.ctx, i, Role::SyncStandby).await {
            return Ok(i);
        }
    }
    Err(Error::Cluster(
        "every standby answers /sync: no asynchronous standby to stop".to_owned(),
    ))
}

/// The standby's startup process, stopped (SIGSTOP) until [`Stopped::resume`] or drop: a drill that fails half-way
/// still lets replay go on.
struct Stopped(i32);

impl Stopped {
    fn stop(pid: i32) -> Result<Stopped, Error> {
        signal(pid, libc::SIGSTOP)?;
        Ok(Stopped(pid))
    }

    fn resume(self) -> Result<(), Error> {
        let pid = self.0;
        std::mem::forget(self);
        signal(pid, libc::SIGCONT)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = signal(self.0, libc::SIGCONT);
    }
}

fn signal(pid: i32, sig: i32) -> Result<(), Error> {
    // SAFETY: kill(2) with a pid Postgres reported for its own startup process; no memory is shared.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(Error::Cluster(format!(
            "signal {sig} to the standby's startup process (pid {pid}): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Stops replay on the asynchronous standby and moves the leader's WAL on until that standby is [`BEHIND_BYTES`]
/// behind; holds; lets replay go on (on every path once stopped) and waits for it to catch up.
pub(super) async fn stop_replay(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    patroni::wait_whole(&ctx).await?;
    let leader = patroni::wait_member(&ctx, Role::Leader, Duration::from_secs(60)).await?;
    let lagging = async_standby(h, leader).await?;
    let primary = pg_connect(&patroni::member_session(&ctx, leader)?).await?;
    let standby = pg_connect(&patroni::member_session(&ctx, lagging)?).await?;
    let row = standby
        .query_one("SELECT pid FROM pg_stat_activity WHERE backend_type = 'startup'", &[])
        .await
        .map_err(sql("find the standby's startup process"))?;
    let stopped = Stopped::stop(row.get(0))?;
    let held = fall_behind_and_hold(h, &primary, &standby).await;
    let resumed = stopped.resume();
    let removed = now_ms();
    let lag = held?;
    resumed?;
    ctx.say(&format!("replica-lag: replay goes on on postgres-{}", lagging + 1));

    // Caught up: replayed at least what the leader had written when replay went on.
    let target = leader_lsn(&primary).await?;
    let started = Instant::now();
    let caught_up = loop {
        if behind(&standby, &target).await? <= 0 {
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
            "replay stopped on the asynchronous standby (postgres-{}) while the leader's (postgres-{}) WAL moved on: \
             once it goes on, the standby catches up",
            lagging + 1,
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

/// Switches the leader's WAL segments until the stopped standby is [`BEHIND_BYTES`] behind (each switch moves the
/// leader's WAL position to the next segment; the message before it is the WAL a switch needs to move at all),
/// reports the fault in place and holds it. Returns how far behind the standby was.
async fn fall_behind_and_hold(h: &mut Handle, primary: &Client, standby: &Client) -> Result<i64, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let lag = loop {
        primary
            .batch_execute(
                "SELECT pg_logical_emit_message(false, 'sre-stack-gameday', 'replica lag drill'); \
                 SELECT pg_switch_wal();",
            )
            .await
            .map_err(sql("switch the leader's WAL segment"))?;
        let lag = behind(standby, &leader_lsn(primary).await?).await?;
        if lag >= BEHIND_BYTES {
            break lag;
        }
        if Instant::now() > deadline {
            return Err(Error::Cluster(format!(
                "the standby is only {lag} bytes behind after 30 s of WAL switches: does its replay go on?"
            )));
        }
        sleep(Duration::from_millis(200)).await;
    };
    h.ctx.say(&format!(
        "replica-lag: standby replay stopped, {} bytes behind the leader",
        lag
    ));
    h.ready();
    h.until(Phase::Clear).await;
    Ok(lag)
}
