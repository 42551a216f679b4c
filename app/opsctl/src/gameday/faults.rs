//! The faults: each is a task that injects, reports ready, holds the fault until told to clear it, clears it, and
//! may keep working (healthy traffic, a proof's checks) until told to finish. Faults act on the real stack: the
//! supervisor's programs, Redis and Postgres over their own protocols, Prometheus's service discovery files and
//! rule directory, and the app's fault-injection endpoint.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::sleep;

use super::error::Error;
use super::proofs::{self, Proof};
use super::stack::{now_ms, Ctx, Redis, SLO_REQUESTS};
use crate::load::{self, LoadArgs};

/// The faults the catalog uses.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Stop a supervisor program, start it again to clear.
    Stop(&'static str),
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
    /// Stop Postgres under write load (with its proof).
    PostgresDown,
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
        matches!(self, Fault::AppSigterm | Fault::PgDeadlock)
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
        let ctx = h.ctx.clone();
        match self {
            Fault::Stop(program) => {
                ctx.supervisor("stop", program).await?;
                h.ready();
                h.until(Phase::Clear).await;
                ctx.supervisor("start", program).await?;
                if program == "app" {
                    ctx.wait_app_healthy(Duration::from_secs(30)).await?;
                }
                Ok(vec![])
            }
            Fault::EmptyTargets(job) => {
                let path = ctx.args.prometheus_dir.join("targets").join(format!("{job}.yml"));
                let original = tokio::fs::read_to_string(&path).await.map_err(|source| Error::File {
                    action: "read",
                    path: path.clone(),
                    source,
                })?;
                write_atomically(&path, "[]\n").await?;
                h.ready();
                h.until(Phase::Clear).await;
                write_atomically(&path, &original).await?;
                Ok(vec![])
            }
            Fault::BrokenRule => {
                let dir = ctx.args.prometheus_dir.join("drills");
                let path = dir.join("gameday-broken-rule.yml");
                tokio::fs::create_dir_all(&dir).await.map_err(|source| Error::File {
                    action: "create",
                    path: dir.clone(),
                    source,
                })?;
                // `on()` with several series on each side: "many-to-many matching not allowed" at every evaluation.
                let rule = "# Written by `opsctl gameday` for the broken-rule drill; removed when it ends.\n\
                            groups:\n  - name: gameday-broken-rule\n    rules:\n      - record: gameday:broken\n        \
                            expr: up * on () up\n";
                write_atomically(&path, rule).await?;
                ctx.prometheus.reload().await?;
                h.ready();
                h.until(Phase::Clear).await;
                tokio::fs::remove_file(&path).await.map_err(|source| Error::File {
                    action: "remove",
                    path: path.clone(),
                    source,
                })?;
                ctx.prometheus.reload().await?;
                Ok(vec![])
            }
            Fault::RedisMaxmemory => {
                let redis = &ctx.redis;
                let original = with_retries(|| redis.config_get("maxmemory")).await?;
                // A working set that fills the limit. Without it the cache holds about 1 MiB, so the memory of
                // client connections swings the ratio: a burst of connections (the redis-clients drill runs
                // beside this one) read at the wrong moment once set the limit so high that the ratio sat at
                // 58%. Beside this one (about 80 MiB in use) such a burst is under 2%.
                with_retries(|| async {
                    redis_ballast(redis, true).await?;
                    let used: u64 = redis.info_field("memory", "used_memory").await?;
                    // 4% above what is used now: the ratio sits near 96%, above the 90% threshold.
                    let max = used + used / 25;
                    redis.run::<()>(&["CONFIG", "SET", "maxmemory", &max.to_string()]).await
                })
                .await?;
                h.ready();
                h.until(Phase::Clear).await;
                with_retries(|| async {
                    redis.run::<()>(&["CONFIG", "SET", "maxmemory", &original]).await?;
                    redis_ballast(redis, false).await
                })
                .await?;
                Ok(vec![])
            }
            Fault::RedisClients => redis_clients(h).await,
            Fault::RedisDenyGet => {
                let (redis, user) = (&ctx.redis, ctx.args.redis_app_user.as_str());
                let before = acl_command_rules(redis, user).await?;
                redis.run::<()>(&["ACL", "SETUSER", user, "-get"]).await?;
                h.ready();
                h.until(Phase::Clear).await;
                restore_command_rules(redis, user, &before).await?;
                Ok(vec![])
            }
            Fault::RedisDown => {
                let readers = proofs::Readers::start(ctx.clone(), 40.0);
                sleep(Duration::from_secs(3)).await;
                ctx.supervisor("stop", "redis").await?;
                h.ready();
                h.until(Phase::Clear).await;
                ctx.supervisor("start", "redis").await?;
                let removed = now_ms();
                // Keep reading while the app finds Redis again; the next scenario may not start meanwhile.
                sleep(Duration::from_secs(10)).await;
                let proof = readers.stop().await;
                h.cleared(Ok(removed));
                Ok(vec![proof])
            }
            Fault::PgLock => pg_lock(h).await,
            Fault::PgDeadlock => {
                let db = &ctx.pg;
                ensure_lock_table(db).await?;
                for _ in 0..2 {
                    deadlock_once(db).await?;
                }
                h.ready();
                h.until(Phase::Clear).await;
                Ok(vec![])
            }
            Fault::PgConnections => pg_connections(h).await,
            Fault::PgBufferCache => pg_buffer_cache(h).await,
            Fault::PostgresDown => {
                let writers = proofs::Writers::start(ctx.clone(), 20.0);
                sleep(Duration::from_secs(3)).await;
                ctx.supervisor("stop", "postgres").await?;
                h.ready();
                h.until(Phase::Clear).await;
                ctx.supervisor("start", "postgres").await?;
                let removed = now_ms();
                // Keep writing while the app reconnects, so the proof covers writes after the restart too.
                sleep(Duration::from_secs(10)).await;
                let proof = writers.stop().await;
                h.cleared(Ok(removed));
                Ok(vec![proof])
            }
            Fault::AppSigterm => {
                let proof = proofs::sigterm_twice(ctx.clone()).await?;
                h.ready();
                h.until(Phase::Clear).await;
                Ok(vec![proof])
            }
            Fault::SloBurn => slo_burn(h).await,
            Fault::PoolExhaustion => pool_exhaustion(h).await,
            Fault::AppConnections => {
                let held = super::connections::hold(&ctx).await?;
                ctx.say(&format!(
                    "app-connections: holding {} keep-alive connections (limit {}), each sending GET /healthcheck \
                     every 30 s",
                    held.count, held.limit
                ));
                h.ready();
                h.until(Phase::Clear).await;
                // The bound is proven once the ticket has arrived: at the limit every other client's new
                // connection is refused too, so the moment is kept short and comes after the alert's proof.
                let proof = held.prove_the_bound(&ctx).await;
                let reopened = held.release().await;
                ctx.say(&format!(
                    "app-connections: released; {reopened} held connection(s) had to be reopened meanwhile"
                ));
                Ok(vec![proof])
            }
            Fault::CacheMisses => {
                let (stop, load) = background_load(LoadArgs {
                    rate: 60.0,
                    concurrency: 16,
                    read_ratio: 1.0,
                    missing_ratio: 1.0,
                    key_prefix: "gameday-miss".to_string(),
                    ..ctx.load_args()
                });
                h.ready();
                h.until(Phase::Clear).await;
                let _ = stop.send(true);
                let report = load.await?;
                ctx.say(&format!(
                    "cache-misses: {} reads of missing keys, {} errors",
                    report.completed, report.errors
                ));
                Ok(vec![])
            }
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

async fn write_atomically(path: &std::path::Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension("gameday-tmp");
    tokio::fs::write(&tmp, text).await.map_err(|source| Error::File {
        action: "write",
        path: tmp.clone(),
        source,
    })?;
    tokio::fs::rename(&tmp, path).await.map_err(|source| Error::File {
        action: "rename to",
        path: path.to_path_buf(),
        source,
    })
}

/// The command rules of `user`'s root permissions as `ACL LIST` shows them (`-@all`, `+get`, `+client|setname`,
/// `allcommands`, …), in order. Passwords, key and channel patterns, flags and selectors are left out: the
/// redis-errors drill changes commands only, and the list's password hashes are not for messages.
async fn acl_command_rules(redis: &Redis, user: &str) -> Result<Vec<String>, Error> {
    let list: Vec<String> = redis.run(&["ACL", "LIST"]).await?;
    let rules = list
        .iter()
        .map(|line| acl_tokens(line))
        .find(|tokens| tokens.len() >= 2 && tokens[0] == "user" && tokens[1] == user)
        .ok_or_else(|| Error::NoAclUser(user.to_string()))?;
    Ok(rules
        .into_iter()
        .skip(2)
        .filter(|t| t.starts_with(['+', '-']) || t == "allcommands" || t == "nocommands")
        .collect())
}

/// One `ACL LIST` line split into its rules; a selector, `(…)` with spaces inside, stays one rule.
fn acl_tokens(line: &str) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    let mut in_selector = false;
    for word in line.split_whitespace() {
        match tokens.last_mut() {
            Some(open) if in_selector => {
                open.push(' ');
                open.push_str(word);
            }
            _ => tokens.push(word.to_string()),
        }
        if word.starts_with('(') && !in_selector {
            in_selector = true;
        }
        if in_selector && word.ends_with(')') {
            in_selector = false;
        }
    }
    tokens
}

/// Gives `user` back the command rules it had: all of them dropped and the saved ones applied, in one command
/// (Redis applies a SETUSER's rules together, so the app never sees a user without commands), then checked.
async fn restore_command_rules(redis: &Redis, user: &str, before: &[String]) -> Result<(), Error> {
    let mut args = vec!["ACL", "SETUSER", user, "nocommands"];
    args.extend(before.iter().map(String::as_str));
    redis
        .run_named::<()>(
            &format!("ACL SETUSER {user} <its command rules before the drill>"),
            &args,
        )
        .await?;
    let after = acl_command_rules(redis, user).await?;
    if after == before {
        Ok(())
    } else {
        Err(Error::AclNotRestored {
            user: user.to_string(),
            after,
            before: before.to_vec(),
        })
    }
}

/// The redis-maxmemory drill's working set: 64 keys of 1 MiB under `gameday:ballast:`, written (expiring within the
/// hour, in case the drill dies) or removed by one script, so that one connection does it even while the
/// redis-clients drill holds most of maxclients.
async fn redis_ballast(redis: &Redis, write: bool) -> Result<(), Error> {
    const SCRIPT: &str = "local value = string.rep('x', 1048576) \
        for i = 1, 64 do \
          if ARGV[1] == 'write' then redis.call('SET', KEYS[1] .. i, value, 'EX', 3600) \
          else redis.call('UNLINK', KEYS[1] .. i) end \
        end \
        return 1";
    let action = if write { "write" } else { "remove" };
    redis
        .run::<()>(&["EVAL", SCRIPT, "1", "gameday:ballast:", action])
        .await
}

/// Runs `step` until it succeeds, up to five times a second apart: for the Redis drills that run beside the
/// redis-clients drill, whose burst past maxclients refuses every new connection for half a second.
async fn with_retries<T, F, Fut>(mut step: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut tries = 0;
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if tries >= 4 => return Err(e),
            Err(_) => tries += 1,
        }
        sleep(Duration::from_secs(1)).await;
    }
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

async fn redis_clients(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let redis = ctx.redis.clone();
    let original = redis.config_get("maxclients").await?;
    let connected: u64 = redis.info_field("clients", "connected_clients").await?;
    // Room for 60 more clients; hold 85% of the new limit (the rule's threshold is 80%), which leaves the app's
    // pool and the exporter enough free slots to reconnect.
    let max = connected + 60;
    let hold = (max * 85).div_ceil(100).saturating_sub(connected);
    redis
        .run::<()>(&["CONFIG", "SET", "maxclients", &max.to_string()])
        .await?;
    let mut held = Vec::new();
    for _ in 0..hold {
        held.push(
            tokio::net::TcpStream::connect(&redis.addr)
                .await
                .map_err(Error::RedisSocket)?,
        );
    }
    // A burst past the limit: Redis accepts each connection, answers "max number of clients reached", closes it,
    // and counts it in rejected_connections.
    let mut burst = Vec::new();
    for _ in 0..(max - connected - hold + 10) {
        if let Ok(s) = tokio::net::TcpStream::connect(&redis.addr).await {
            burst.push(s);
        }
    }
    sleep(Duration::from_millis(500)).await;
    drop(burst);
    h.ready();
    // Other clients come and go (the app's pool reconnects after a restart): keep the total near 85%.
    while h.holding() {
        if let Ok(now) = redis.info_field::<u64>("clients", "connected_clients").await {
            let want = (max * 85).div_ceil(100);
            if now < want {
                for _ in now..want {
                    if let Ok(s) = tokio::net::TcpStream::connect(&redis.addr).await {
                        held.push(s);
                    }
                }
            } else if now > (max * 95) / 100 {
                held.truncate(held.len().saturating_sub((now - want) as usize));
            }
        }
        tokio::select! {
            _ = sleep(Duration::from_secs(2)) => {}
            _ = h.until(Phase::Clear) => {}
        }
    }
    drop(held);
    redis.run::<()>(&["CONFIG", "SET", "maxclients", &original]).await?;
    Ok(vec![])
}

async fn pg_connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, Error> {
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

async fn pg_lock(h: &mut Handle) -> Result<Vec<Proof>, Error> {
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

async fn pg_connections(h: &mut Handle) -> Result<Vec<Proof>, Error> {
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

async fn pg_buffer_cache(h: &mut Handle) -> Result<Vec<Proof>, Error> {
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

async fn set_fault(ctx: &Ctx, body: Option<serde_json::Value>) -> Result<(), Error> {
    let url = format!("{}/fault", ctx.args.admin.trim_end_matches('/'));
    let request = match &body {
        Some(b) => ctx.http.post(&url).json(b),
        None => ctx.http.delete(&url),
    };
    let request = ctx.admin_auth.apply(request);
    let response = request.send().await.map_err(|source| Error::Http {
        what: url.clone(),
        source,
    })?;
    let status = response.status();
    if status != StatusCode::OK {
        let text = response.text().await.unwrap_or_default();
        let hint = if status == StatusCode::UNAUTHORIZED {
            "the admin token is missing or wrong: --secrets-dir's app-admin.token"
        } else {
            "is APP_FAULT_INJECTION_ENABLED=true?"
        };
        return Err(Error::AppFault {
            url,
            status,
            body: text,
            hint,
        });
    }
    Ok(())
}

/// Waits until `expr` (one series) is above `threshold`, for at most `limit`.
async fn wait_above(ctx: &Ctx, expr: &str, threshold: f64, limit: Duration) -> Result<f64, Error> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(samples) = ctx.prometheus.query(expr).await {
            if let Some(v) = samples.first().map(|s| s.number()) {
                if v > threshold {
                    return Ok(v);
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Threshold {
                expr: expr.to_string(),
                threshold,
                limit,
            });
        }
        sleep(Duration::from_secs(2)).await;
    }
}

/// The SLOs' error budgets and the page legs' burn-rate thresholds (alerts/slo.yml).
const LATENCY_BUDGET: f64 = 0.01;
const AVAILABILITY_BUDGET: f64 = 0.001;
const FAST_BURN: f64 = 14.4;
const SLOW_BURN: f64 = 6.0;

/// API requests over a window, and the slow (over 0.25 s) and failed (5xx) ones among them.
#[derive(Debug, Clone, Copy)]
struct SloWindow {
    requests: f64,
    slow: f64,
    errors: f64,
}

async fn slo_window(ctx: &Ctx, window: &str) -> Result<SloWindow, Error> {
    let sum = |series: &str, matchers: &str| {
        let expr = format!(
            "sum(increase(http_server_request_duration_seconds_{series}{{{SLO_REQUESTS}{matchers}}}[{window}]))"
        );
        async move {
            let samples = ctx.prometheus.query(&expr).await.map_err(|source| Error::Query {
                expr: expr.clone(),
                source,
            })?;
            Ok::<f64, Error>(
                samples
                    .first()
                    .map(|s| s.number())
                    .filter(|v| v.is_finite())
                    .unwrap_or(0.0),
            )
        }
    };
    let requests = sum("count", "").await?;
    let fast = sum("bucket", r#", le="0.25""#).await?;
    let errors = sum("count", r#", http_response_status_code=~"5..""#).await?;
    Ok(SloWindow {
        requests,
        slow: (requests - fast).max(0.0),
        errors,
    })
}

/// The SLO drill. The page legs need their 1h ratios above 14.4x the budget, so the number of bad requests the
/// drill must serve grows with the hour of traffic already in the window (a stack that needed warm-up traffic to
/// settle has much more). The drill reads that hour from Prometheus and sizes its extra load to cross in about a
/// minute (with a margin), then holds the app's own traffic at 5% errors while the `for` runs out; the ramp's
/// length counts towards the bound to fire (`Expect::after_ramp`).
///
/// After the fault, the 6x leg holds the page until the 30m ratios fall under 6x: up to 30 minutes at a steady
/// rate, which is the bound. Healthy traffic shortens it, as a real service's volume would: the drill reads how
/// many bad requests the 30m window holds and sends enough `GET /helloworld` to bring both ratios under the
/// threshold in about three minutes, as far as the machine keeps up.
async fn slo_burn(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let hour = slo_window(&ctx, "1h").await?;
    let slow_target = LATENCY_BUDGET * FAST_BURN * 1.2;
    let slow_needed = slow_target * hour.requests / (1.0 - slow_target);
    let ramp_rate = (slow_needed / 60.0).clamp(60.0, 400.0);
    ctx.say(&format!(
        "slo-burn: the last hour holds {:.0} API requests; ramping at {ramp_rate:.0}/s",
        hour.requests
    ));
    let (stop_extra, extra) = background_load(LoadArgs {
        rate: ramp_rate,
        // Every response takes 400 ms: enough requests in flight for the rate, and some to spare.
        concurrency: (ramp_rate * 0.4 * 1.5) as u32 + 16,
        read_ratio: 1.0,
        ..ctx.load_args()
    });
    let limit = Duration::from_secs(300);
    set_fault(&ctx, Some(json!({"latency_ms": 400, "duration_seconds": 1800}))).await?;
    let latency = wait_above(&ctx, "app:latency_slow:ratio_rate1h", slow_target, limit).await?;
    set_fault(
        &ctx,
        Some(json!({"error_ratio": 0.5, "latency_ms": 400, "duration_seconds": 1800})),
    )
    .await?;
    let error_target = AVAILABILITY_BUDGET * FAST_BURN * 1.3;
    let errors = wait_above(&ctx, "app:availability_errors:ratio_rate1h", error_target, limit).await?;
    let _ = stop_extra.send(true);
    let _ = extra.await;
    set_fault(
        &ctx,
        Some(json!({"error_ratio": 0.05, "latency_ms": 400, "duration_seconds": 1800})),
    )
    .await?;
    ctx.say(&format!(
        "slo-burn: 1h ratios crossed (slow {latency:.3}, errors {errors:.4}); holding 5% errors and 400 ms"
    ));
    h.ready();
    h.until(Phase::Clear).await;
    set_fault(&ctx, None).await?;
    let removed = now_ms();
    let dilution = Dilution::start(&ctx, "slo-burn").await?;
    h.cleared(Ok(removed));
    h.until(Phase::Finish).await;
    dilution.stop(&ctx, "after the fault").await?;
    Ok(vec![])
}

/// Healthy traffic sized to bring the 30m SLO windows under the page's 6x leg in about three minutes (100 to 1,000
/// requests/s): after the SLO drill's fault, and before it when an earlier fault's failed or slow requests hold a
/// page open (their 30m window would, for half an hour). `GET /helloworld` touches neither the cache nor Postgres,
/// so it dilutes only the SLO windows (reads of cached keys would also hold the cache hit ratio up for the next five
/// minutes).
pub struct Dilution {
    who: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<load::stats::Report>,
}

impl Dilution {
    pub async fn start(ctx: &Ctx, who: &str) -> Result<Dilution, Error> {
        let window = slo_window(ctx, "30m").await?;
        let needed = (window.slow / (LATENCY_BUDGET * SLOW_BURN * 0.8))
            .max(window.errors / (AVAILABILITY_BUDGET * SLOW_BURN * 0.8));
        let rate = ((needed - window.requests) / 180.0).clamp(100.0, 1000.0);
        ctx.say(&format!(
            "{who}: the 30m window holds {:.0} requests, {:.0} slow, {:.0} failed; healthy traffic at {rate:.0}/s",
            window.requests, window.slow, window.errors
        ));
        let (stop, task) = background_load(LoadArgs {
            rate,
            concurrency: 64,
            hello_ratio: 1.0,
            ..ctx.load_args()
        });
        Ok(Dilution {
            who: who.to_string(),
            stop,
            task,
        })
    }

    pub async fn stop(self, ctx: &Ctx, when: &str) -> Result<(), Error> {
        let _ = self.stop.send(true);
        let report = self.task.await?;
        ctx.say(&format!(
            "{}: healthy traffic {when}: {} requests at {:.0}/s, {} errors",
            self.who, report.completed, report.achieved_rate, report.errors
        ));
        Ok(())
    }
}

/// Pool exhaustion: one key's row locked in 1.5 s bursts while sixteen clients write it. Each write holds one of
/// the app's ten Postgres connections while it waits for the lock; the six writers more than the pool has keep a
/// queue of waiters, so a connection a finished write returns is taken again at once and the pool stays full
/// between bursts too (with exactly ten writers, a busy machine let the used count dip under 90% at a scrape, which
/// restarted the saturation alert's `for`). Any other query that needs a connection times out acquiring one. The
/// bursts are shorter than the app's statement timeout, so the writers that hold a connection succeed (slowly).
/// How long each lock burst of the pool-exhaustion drill holds the rows: under the app's `lock_timeout` (half its
/// 2 s query timeout), so that a writer waiting on its row is served at the burst's end rather than refused, and
/// goes straight back to wait on the next burst. Longer bursts make every waiting writer give up at the same
/// moment, all connections return to the pool at once, and a scrape in that gap restarts the alert's `for`
/// (measured: AppDbPoolSaturated fired 234 s into the fault with 1.5 s bursts; bound 160 s).
const POOL_EXHAUSTION_BURST: Duration = Duration::from_millis(700);

/// Hot keys of the pool-exhaustion drill, a writer each: four times the app's 10 Postgres connections, so that the
/// pool's queue of waiters never empties, and a connection handed back at a burst's end goes straight to another
/// writer instead of showing as idle at a scrape (16 writers let the gauge dip under 90% now and then when other
/// drills loaded the machine: fired at 187 s, bound 160 s).
const POOL_EXHAUSTION_KEYS: usize = 40;

async fn pool_exhaustion(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    // The app lets one write per key at a time reach Postgres (the others wait in memory), so one hot row holds one
    // connection: to hold them all, the drill locks more rows than the pool has connections, each with its writer.
    let keys: Vec<String> = (0..POOL_EXHAUSTION_KEYS).map(|i| format!("gameday-hot-{i}")).collect();
    let set_url = format!("{}/set", ctx.args.app.trim_end_matches('/'));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gameday::error::Error;
    use crate::secrets::{Secret, Secrets};
    use std::process::{Child, Command, Stdio};

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("opsctl-faults-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn gameday_args(argv: &[&str]) -> super::super::GamedayArgs {
        let argv = ["opsctl", "gameday"].iter().chain(argv).copied();
        match <crate::Cli as clap::Parser>::try_parse_from(argv).unwrap().command {
            crate::Command::Gameday(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[tokio::test]
    async fn fault_injection_sends_the_admin_token() {
        use axum::http::HeaderMap;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/fault",
            axum::routing::post(move |headers: HeaderMap| {
                let record = record.clone();
                async move {
                    let authorization = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
                    record.lock().unwrap().push(authorization.unwrap_or_default());
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = temp_dir("admin-token");
        for file in crate::secrets::SecretFile::ALL {
            std::fs::write(dir.join(file.file_name()), format!("{}-value\n", file.file_name())).unwrap();
        }
        let ctx = Ctx::new(gameday_args(&["--admin", &base]), &Secrets::load(&dir)).unwrap();
        set_fault(&ctx, Some(json!({"error_ratio": 0.5}))).await.unwrap();
        let plain = Ctx::new(gameday_args(&["--admin", &base]), &Secrets::none()).unwrap();
        set_fault(&plain, Some(json!({"error_ratio": 0.5}))).await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["Bearer app-admin.token-value".to_string(), String::new()]
        );

        // A file the game day needs that is missing stops it before anything runs, naming the file.
        std::fs::remove_file(dir.join("redis-admin.password")).unwrap();
        let err = Ctx::new(gameday_args(&[]), &Secrets::load(&dir)).err().unwrap();
        assert!(matches!(&err, Error::Secret(_)), "{err:?}");
        assert!(err.to_string().contains("redis-admin.password"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn acl_lines_split_into_rules_with_selectors_whole() {
        let line = "user app on #0a1b ~app:* resetchannels -@all +get +client|setname (~x:* +set) +hello";
        assert_eq!(
            acl_tokens(line),
            vec![
                "user",
                "app",
                "on",
                "#0a1b",
                "~app:*",
                "resetchannels",
                "-@all",
                "+get",
                "+client|setname",
                "(~x:* +set)",
                "+hello"
            ]
        );
    }

    /// A Redis of the test's own (Debian's `redis-server`, which `native/install.sh` installs) on a free port,
    /// with ACL users like the native stack's; stopped when dropped.
    struct TestRedis {
        child: Child,
        dir: std::path::PathBuf,
        redis: Redis,
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn test_redis() -> TestRedis {
        let dir = temp_dir("redis");
        std::fs::write(
            dir.join("users.acl"),
            "user default off resetkeys resetchannels -@all\n\
             user admin on >admin-pass ~* &* +@all\n\
             user app on >app-pass resetchannels ~app:* -@all +get +set +del +unlink +eval +ping +client|setname +hello\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--aclfile")
            .arg(dir.join("users.acl"))
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run native/install.sh (make test does)");
        let redis = Redis {
            addr: format!("127.0.0.1:{port}"),
            auth: Some(("admin".into(), Secret::new("admin-pass"))),
        };
        let test = TestRedis { child, dir, redis };
        for _ in 0..100 {
            if test.redis.run::<String>(&["PING"]).await.is_ok() {
                return test;
            }
            sleep(Duration::from_millis(50)).await;
        }
        panic!("the test's redis-server did not answer");
    }

    #[tokio::test]
    async fn the_redis_errors_drill_takes_get_from_the_apps_user_and_gives_back_exactly_that() {
        let test = test_redis().await;
        let redis = &test.redis;
        let app = Redis {
            addr: redis.addr.clone(),
            auth: Some(("app".into(), Secret::new("app-pass"))),
        };
        let list = || async { redis.run::<Vec<String>>(&["ACL", "LIST"]).await.unwrap() };
        let before_list = list().await;
        let before = acl_command_rules(redis, "app").await.unwrap();
        assert!(before.contains(&"+get".to_string()), "{before:?}");
        assert_eq!(app.run::<Option<String>>(&["GET", "app:k"]).await.unwrap(), None);

        redis.run::<()>(&["ACL", "SETUSER", "app", "-get"]).await.unwrap();
        let denied = app.run::<Option<String>>(&["GET", "app:k"]).await.unwrap_err();
        assert!(
            matches!(&denied, Error::Redis { source, .. } if source.code() == Some("NOPERM")),
            "{denied:?}"
        );
        assert_eq!(app.run::<String>(&["SET", "app:k", "v"]).await.unwrap(), "OK");

        restore_command_rules(redis, "app", &before).await.unwrap();
        assert_eq!(list().await, before_list, "every user's rules as before");
        assert_eq!(
            app.run::<Option<String>>(&["GET", "app:k"]).await.unwrap().as_deref(),
            Some("v")
        );

        // Without the admin password, nothing runs: the default user is off.
        let anonymous = Redis {
            addr: redis.addr.clone(),
            auth: None,
        };
        assert!(anonymous.run::<Vec<String>>(&["ACL", "LIST"]).await.is_err());
        let missing = acl_command_rules(redis, "nobody").await.unwrap_err();
        assert!(matches!(&missing, Error::NoAclUser(u) if u == "nobody"), "{missing:?}");
        assert!(missing.to_string().contains("--redis-app-user"), "{missing}");
    }
}
