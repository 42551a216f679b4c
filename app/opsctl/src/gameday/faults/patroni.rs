//! Faults of the Postgres cluster (Patroni on every member, etcd as its DCS), each under write load through the
//! app: the leader's postmaster killed, the leader stopped, the synchronous standby stopped, an etcd member
//! stopped. Each proves that no acknowledged write is lost and reports how long writes stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::sleep;

use super::{Handle, Phase};
use crate::gameday::error::Error;
use crate::gameday::proofs::{Proof, Writers};
use crate::gameday::stack::{now_ms, Ctx};

/// The write rate of the drills' writers (requests/s over four clients).
const WRITE_RATE: f64 = 20.0;

/// The drills' writers: to the first app replica's own API, not through HAProxy, whose drills run beside these.
fn writers(ctx: &Arc<Ctx>) -> Writers {
    let base = ctx
        .args
        .replica_api
        .first()
        .cloned()
        .unwrap_or_else(|| ctx.args.app.clone());
    Writers::start_at(ctx.clone(), WRITE_RATE, base)
}

/// A member's role, as its Patroni answers: `/primary` is 200 on the leader only, `/sync` on the synchronous
/// standby only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Leader,
    SyncStandby,
}

impl Role {
    fn path(self) -> &'static str {
        match self {
            Role::Leader => "primary",
            Role::SyncStandby => "sync",
        }
    }
}

/// The member (0-based) in `role`, if one answers so.
async fn member(ctx: &Ctx, role: Role) -> Option<usize> {
    for (i, url) in ctx.args.patroni.iter().enumerate() {
        let url = format!("{}/{}", url.trim_end_matches('/'), role.path());
        if let Ok(r) = ctx.http.get(&url).timeout(Duration::from_secs(2)).send().await {
            if r.status().is_success() {
                return Some(i);
            }
        }
    }
    None
}

/// Waits (bounded) until a member is in `role`; the error names what did not happen.
async fn wait_member(ctx: &Ctx, role: Role, within: Duration) -> Result<usize, Error> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(i) = member(ctx, role).await {
            return Ok(i);
        }
        if Instant::now() >= deadline {
            return Err(Error::Cluster(format!(
                "no Postgres member answered /{} within {}s",
                role.path(),
                within.as_secs()
            )));
        }
        sleep(Duration::from_millis(500)).await;
    }
}

/// Waits (bounded) until every member runs (Patroni's `/health`: Postgres up, leading or streaming) and the
/// leader has its synchronous standby: each drill starts from a whole cluster, whatever the one before left.
async fn wait_whole(ctx: &Ctx) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut running = 0;
        for url in &ctx.args.patroni {
            let url = format!("{}/health", url.trim_end_matches('/'));
            if let Ok(r) = ctx.http.get(&url).timeout(Duration::from_secs(2)).send().await {
                running += usize::from(r.status().is_success());
            }
        }
        if running == ctx.args.patroni.len() && member(ctx, Role::SyncStandby).await.is_some() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Cluster(format!(
                "{running} of {} members running, or no synchronous standby, after 120 s",
                ctx.args.patroni.len()
            )));
        }
        sleep(Duration::from_millis(500)).await;
    }
}

/// The supervisor's name of member `i` (0-based): `postgres:postgres-1` ...
fn program(i: usize) -> String {
    format!("postgres:postgres-{}", i + 1)
}

/// SIGKILL to the leader's postmaster (its pid is the first line of postmaster.pid) under write load; Patroni
/// finds its Postgres gone and starts it again, or a standby takes the lead. Over once the cluster has a leader
/// again.
pub(super) async fn kill_leader_postmaster(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    wait_whole(&ctx).await?;
    let leader = wait_member(&ctx, Role::Leader, Duration::from_secs(60)).await?;
    let writers = writers(&ctx);
    sleep(Duration::from_secs(3)).await;
    let pid_file = ctx
        .args
        .state_dir
        .join(format!("postgres-{}", leader + 1))
        .join("data/postmaster.pid");
    let text = tokio::fs::read_to_string(&pid_file)
        .await
        .map_err(|e| Error::Cluster(format!("read {}: {e}", pid_file.display())))?;
    let pid: i32 = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| Error::Cluster(format!("{} names no pid", pid_file.display())))?;
    // SAFETY: kill(2) with a pid read from Postgres's own pid file; no memory is shared.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(Error::Cluster(format!(
            "kill -KILL {pid} (postmaster of postgres-{}): {}",
            leader + 1,
            std::io::Error::last_os_error()
        )));
    }
    ctx.say(&format!("killed the postmaster of postgres-{} (pid {pid})", leader + 1));
    h.ready();
    h.until(Phase::Clear).await;
    let removed = now_ms();
    let after = wait_member(&ctx, Role::Leader, Duration::from_secs(60)).await?;
    // Keep writing once a leader is back, so the proof covers writes after the failover too.
    sleep(Duration::from_secs(10)).await;
    let proof = writers
        .stop_failover(format!(
            "the leader's postmaster (postgres-{}) killed (SIGKILL) under write load: every acknowledged write is \
             on the leader afterwards (postgres-{})",
            leader + 1,
            after + 1
        ))
        .await;
    h.cleared(Ok(removed));
    Ok(vec![proof])
}

/// Stops the member in `role` (Patroni and its Postgres) under write load, keeps it down, then starts it again
/// (it rejoins as a standby, rewound if it needs to be).
pub(super) async fn stop_member(h: &mut Handle, leader: bool) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let role = if leader { Role::Leader } else { Role::SyncStandby };
    wait_whole(&ctx).await?;
    let stopped = wait_member(&ctx, role, Duration::from_secs(60)).await?;
    let writers = writers(&ctx);
    sleep(Duration::from_secs(3)).await;
    ctx.supervisor("stop", &program(stopped)).await?;
    h.ready();
    h.until(Phase::Clear).await;
    ctx.supervisor("start", &program(stopped)).await?;
    let removed = now_ms();
    let after = wait_member(&ctx, Role::Leader, Duration::from_secs(60)).await?;
    // A leader again, with a synchronous standby (the next drill waits for the restarted member itself).
    wait_member(&ctx, Role::SyncStandby, Duration::from_secs(90)).await?;
    sleep(Duration::from_secs(5)).await;
    let what = if leader {
        "the leader"
    } else {
        "the synchronous standby"
    };
    let claim = format!(
        "{what} (postgres-{}) stopped under write load and started again: every acknowledged write is on the leader \
         afterwards (postgres-{})",
        stopped + 1,
        after + 1
    );
    // Without its synchronous standby the leader holds each commit until Patroni names the other standby (its
    // next loop): those writes end at the app's statement limit, outcome unknown.
    let mut proof = if leader {
        writers.stop_failover(claim).await
    } else {
        writers.stop_commit_waits(claim).await
    };
    // A stopped leader must have handed over: the same member leading again would prove no failover.
    if leader && after == stopped {
        proof.passed = false;
        proof
            .figures
            .push_str("; but the stopped member leads again: no other member took over");
    }
    h.cleared(Ok(removed));
    Ok(vec![proof])
}

/// Stops etcd member `program` under write load: Patroni carries on with the other two, writes never stop.
pub(super) async fn stop_etcd_member(h: &mut Handle, program: &'static str) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let writers = writers(&ctx);
    sleep(Duration::from_secs(3)).await;
    ctx.supervisor("stop", program).await?;
    h.ready();
    h.until(Phase::Clear).await;
    ctx.supervisor("start", program).await?;
    let removed = now_ms();
    sleep(Duration::from_secs(5)).await;
    let proof = writers
        .stop_unharmed(format!(
            "etcd member {program} stopped under write load and started again: no write fails, every acknowledged \
             write is stored"
        ))
        .await;
    h.cleared(Ok(removed));
    Ok(vec![proof])
}
