//! The faults, one module per family: each is a task that injects, reports ready, holds the fault until told to
//! clear it, clears it, and may keep working (healthy traffic, a proof's checks) until told to finish. Faults act on
//! the real stack: the supervisor's programs, Redis and Postgres over their own protocols, Prometheus's service
//! discovery files and rule directory, and the app's fault-injection endpoint. This module owns the handshake.

mod app;
mod nft;
mod patroni;
mod pool;
mod postgres;
mod prometheus;
mod redis;
mod replay;
mod replicas;
mod slo;
mod supervisor;

use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::error::Error;
use super::proofs::Proof;
use super::stack::{now_ms, Ctx};
use crate::load::{self, LoadArgs};
pub use slo::Dilution;

/// The faults the catalog uses.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Stop a supervisor program (`app:*`: every replica), start it again to clear.
    Stop(&'static str),
    /// SIGKILL one app replica under traffic through HAProxy and keep it down (with its proof).
    KillReplica(&'static str),
    /// Restart every app replica in turn under traffic (with its proofs); over once injected.
    RollingRestart,
    /// Stop one monitoring replica while a concurrent scenario pages (proof: each page arrives exactly once).
    StopMonitoring(&'static str),
    /// Cut Alertmanager peer N (0-based) off from the other peers with nftables (duplicates counted).
    Partition(usize),
    /// Cut HAProxy off from these app replicas (0-based) with nftables: its health checks and requests to them
    /// time out, while Prometheus still scrapes them.
    CutOff(&'static [usize]),
    /// Replace a Prometheus job's file_sd target file with an empty list.
    EmptyTargets(&'static str),
    /// A rule file whose expression fails at every evaluation.
    BrokenRule,
    RedisMaxmemory,
    RedisClients,
    RedisDenyGet,
    /// Stop Redis under read load (with its proof).
    RedisDown,
    PgLock,
    PgDeadlock,
    PgConnections,
    PgBufferCache,
    /// Stop every Postgres member under write load (with its proof).
    PostgresDown,
    /// SIGKILL the leader's postmaster under write load (with its proof).
    KillLeaderPostmaster,
    /// Stop the leading member (Patroni and Postgres) under write load (with its proof).
    StopLeader,
    /// Stop the synchronous standby under write load (with its proof).
    StopSyncStandby,
    /// Partition the leader from etcd and the other members with nftables under write load (with its proof).
    PartitionLeader,
    /// Stop one etcd member under write load (with its proof: no write fails).
    StopEtcdMember(&'static str),
    /// SIGSTOP the asynchronous standby's WAL replay while the leader's WAL moves on (with its proof: it catches up
    /// once replay goes on).
    StopReplay,
    /// Two SIGTERMs to the app under load (with its proof).
    AppSigterm,
    SloBurn,
    PoolExhaustion,
    CacheMisses,
    /// Hold most of the app's API connection limit open (with its proof at the bound).
    AppConnections,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Hold,
    Clear,
    Finish,
}

/// A fault in place.
pub struct Active {
    phase: watch::Sender<Phase>,
    cleared: Option<oneshot::Receiver<Result<u64, Arc<Error>>>>,
    task: JoinHandle<Result<Vec<Proof>, Arc<Error>>>,
}

/// What a fault task gets: the stack, and its side of the phase handshake.
struct Handle {
    ctx: Arc<Ctx>,
    phase: watch::Receiver<Phase>,
    ready: Option<oneshot::Sender<Result<(), Arc<Error>>>>,
    cleared: Option<oneshot::Sender<Result<u64, Arc<Error>>>>,
}

impl Handle {
    fn ready(&mut self) {
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(Ok(()));
        }
    }

    async fn until(&mut self, phase: Phase) {
        let _ = self.phase.wait_for(|p| *p >= phase).await;
    }

    fn holding(&self) -> bool {
        *self.phase.borrow() == Phase::Hold
    }

    /// Reports the fault removed at `at` (Unix ms); what waits for `clear` goes on.
    fn cleared(&mut self, result: Result<u64, Arc<Error>>) {
        if let Some(tx) = self.cleared.take() {
            let _ = tx.send(result);
        }
    }
}

impl Fault {
    /// Faults that are over once injected (the restarts happened, the deadlocks were broken): what waits for them
    /// may start at once.
    pub fn over_once_injected(self) -> bool {
        matches!(self, Fault::AppSigterm | Fault::PgDeadlock | Fault::RollingRestart)
    }

    /// Faults under which the API answers 5xx by the thousand (each counts against the availability SLO): the
    /// Postgres outage and lock drills' 503s, the pool's acquire timeouts, the app's restarts and fault injection.
    /// One of these running while the SLO drill waits for its page to resolve holds that page open: the catalog's
    /// order must prevent it (`after_resolved`), which a catalog test checks.
    #[cfg(test)]
    pub fn answers_api_errors(self) -> bool {
        matches!(
            self,
            Fault::PostgresDown
                | Fault::KillLeaderPostmaster
                | Fault::StopLeader
                | Fault::PartitionLeader
                | Fault::PoolExhaustion
                | Fault::PgConnections
                | Fault::SloBurn
                | Fault::Stop("postgres:*")
        )
    }

    /// The SLO drill must start with its pages quiet, but an earlier fault's failed or slow requests can hold one
    /// open for half an hour (its 6x leg's 30m window): this fault clears them with a [`Dilution`] rather than
    /// waiting.
    pub fn dilutes_standing_slo_pages(self) -> bool {
        matches!(self, Fault::SloBurn)
    }

    /// Injects the fault; returns once it is in place (or failed to be).
    pub async fn inject(self, ctx: Arc<Ctx>) -> Result<Active, Error> {
        let (phase_tx, phase_rx) = watch::channel(Phase::Hold);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (cleared_tx, cleared_rx) = oneshot::channel();
        let mut handle = Handle {
            ctx,
            phase: phase_rx,
            ready: Some(ready_tx),
            cleared: Some(cleared_tx),
        };
        let task = tokio::spawn(async move {
            let result = self.run(&mut handle).await.map_err(Arc::new);
            // A fault that failed before being ready reports it through `ready`; one that failed while clearing,
            // through `cleared`.
            if let Err(e) = &result {
                if let Some(tx) = handle.ready.take() {
                    let _ = tx.send(Err(e.clone()));
                }
                handle.cleared(Err(e.clone()));
            }
            handle.cleared(Ok(now_ms()));
            result
        });
        match ready_rx.await {
            Ok(Ok(())) => Ok(Active {
                phase: phase_tx,
                cleared: Some(cleared_rx),
                task,
            }),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(match task.await {
                Ok(Err(e)) => e.into(),
                Ok(Ok(_)) => Error::FaultEndedEarly,
                Err(e) => Error::FaultPanicked(e),
            }),
        }
    }

    async fn run(self, h: &mut Handle) -> Result<Vec<Proof>, Error> {
        match self {
            Fault::Stop(program) => supervisor::stop(h, program).await,
            Fault::KillReplica(replica) => replicas::kill(h, replica).await,
            Fault::RollingRestart => replicas::rolling_restart(h).await,
            Fault::StopMonitoring(program) => replicas::stop_monitoring(h, program).await,
            Fault::Partition(peer) => replicas::partition(h, peer).await,
            Fault::CutOff(replicas) => replicas::cut_off(h, replicas).await,
            Fault::EmptyTargets(job) => prometheus::empty_targets(h, job).await,
            Fault::BrokenRule => prometheus::broken_rule(h).await,
            Fault::RedisMaxmemory => redis::maxmemory(h).await,
            Fault::RedisClients => redis::clients(h).await,
            Fault::RedisDenyGet => redis::deny_get(h).await,
            Fault::RedisDown => redis::down(h).await,
            Fault::PgLock => postgres::lock(h).await,
            Fault::PgDeadlock => postgres::deadlock(h).await,
            Fault::PgConnections => postgres::connections(h).await,
            Fault::PgBufferCache => postgres::buffer_cache(h).await,
            Fault::PostgresDown => postgres::down(h).await,
            Fault::KillLeaderPostmaster => patroni::kill_leader_postmaster(h).await,
            Fault::StopLeader => patroni::stop_member(h, true).await,
            Fault::StopSyncStandby => patroni::stop_member(h, false).await,
            Fault::PartitionLeader => patroni::partition_leader(h).await,
            Fault::StopEtcdMember(program) => patroni::stop_etcd_member(h, program).await,
            Fault::StopReplay => replay::stop_replay(h).await,
            Fault::AppSigterm => app::sigterm(h).await,
            Fault::SloBurn => slo::burn(h).await,
            Fault::PoolExhaustion => pool::exhaustion(h).await,
            Fault::AppConnections => app::connections(h).await,
            Fault::CacheMisses => app::cache_misses(h).await,
        }
    }
}

impl Active {
    /// Removes the fault; returns when it was removed (Unix ms), once the fault's own after-work that could
    /// disturb other scenarios (a proof's last requests) is over.
    pub async fn clear(&mut self) -> Result<u64, Error> {
        let _ = self.phase.send(Phase::Clear);
        match self.cleared.take() {
            Some(rx) => rx.await.unwrap_or_else(|_| Ok(now_ms())).map_err(Error::from),
            None => Ok(now_ms()),
        }
    }

    /// Ends whatever the fault still does after clearing; returns its proofs.
    pub async fn finish(self) -> Result<Vec<Proof>, Error> {
        let _ = self.phase.send(Phase::Finish);
        Ok(self.task.await.map_err(Error::FaultPanicked)??)
    }
}

/// Sends `sig` to `pid`, a process of the stack that `what` names in the error.
fn signal(pid: i32, sig: i32, what: &str) -> Result<(), Error> {
    // SAFETY: kill(2) shares no memory; the pid is the process's own report (Postgres's pid file or its
    // pg_stat_activity), read just before.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(Error::Cluster(format!(
            "kill -{sig} {pid} ({what}): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Starts `opsctl load` in the background; `true` on the returned sender stops it.
pub fn background_load(args: LoadArgs) -> (watch::Sender<bool>, JoinHandle<load::stats::Report>) {
    let (tx, mut rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let stop = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        load::run(&args, stop).await
    });
    (tx, handle)
}

#[cfg(test)]
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("opsctl-faults-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
