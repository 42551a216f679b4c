//! The key-value store every key route shares: Postgres is the source of truth, Redis a read-through cache whose
//! entries live in a namespace named by a *cache epoch* kept in Postgres.
//!
//! - Read: take the process's epoch `E`; look the key up under `app:kv:<E>:<key>`; on a miss (or a Redis failure)
//!   read Postgres, fill the entry of `E` (compare-and-set on the row version) and answer. Until the epoch has
//!   been read from Postgres (at startup, or while Postgres was down since), reads skip Redis.
//! - Write: wait for the key's turn (see [`admission`]), upsert in Postgres and, on the same connection right
//!   behind it, read the epoch `T` as it is after the commit. Then update the entry of `T` (compare-and-set). If
//!   that update fails (error, timeout, skipped by the breaker) the write is acknowledged only once the epoch has
//!   been bumped by a bump that started after its commit; bumps are shared between writes (see [`epoch`]). If the
//!   bump fails too, the answer is 503 with outcome `unknown`: committed, but reads elsewhere may serve the
//!   previous value. Reads of the key on this process then skip the cache until a later bump (see [`stale`]).
//! - A failed write says whether it took effect ([`Outcome`]): `not_applied` when Postgres aborted the statement
//!   (lock or statement timeout, cancel, serialization failure) or it was never sent (no turn, no connection);
//!   `unknown` when the connection broke or the client timed out after sending it, or the bump above failed. A
//!   write reported `not_applied` is never applied later: the server had rolled it back, or never had it.
//! - A Redis failure never fails a request Postgres can serve; a Postgres failure fails everything except reads
//!   of cached keys, quickly, with 503.
//!
//! # Why no read returns a value older than an acknowledged write
//!
//! Four rules: the epoch in Postgres only grows (a bump adds one; a new table starts at the time in microseconds);
//! the process's copy only grows ([`epoch::Epoch::observe`]); a reader takes its epoch *before* it reads Postgres
//! and fills only that namespace; a writer learns its epoch from Postgres *after* its commit. Take a write `W` of
//! version `v`, acknowledged, and a read `R` that starts after it, in the same process, with epoch `X`.
//!
//! - `W` updated the entry of `T`. The process's epoch was at least `T` when `W` was acknowledged, so `X ≥ T`. An
//!   entry under `X` older than `v` would have been filled by a reader that read Postgres before `W` committed,
//!   so it knew `X` before that commit, so `X` was already in Postgres when `W` read `T ≥ X` after its commit:
//!   `X = T`, whose entry the compare-and-set keeps at `v` or newer.
//! - `W` relied on a bump to `Y` that started after its commit. Every reader of a namespace `≥ Y` learned it after
//!   that bump, so after `W`'s commit, and read `v` or newer from Postgres.
//!
//! Where that stops: (1) a filler whose Postgres read and cache fill straddle the whole life of the newer entry
//! (TTL expiry or an LRU eviction in between, so within the filler's own sub-millisecond window); (2) several
//! processes: each refreshes its epoch from Postgres every [`BACKGROUND_INTERVAL`], so after another process
//! bumped the epoch (or wrote under a newer one), this one keeps reading its older namespace, where the previous
//! value may be cached, until its next refresh: about half a second, a second at worst under load; (3) a write
//! answered `unknown`. Redis runs without persistence, so a restarted Redis is empty; the epoch is what covers a
//! Redis that is alive but did not take the update (timed out, paused, partitioned) and still holds the old entry,
//! and a restart of this process, which forgets everything in memory.
//!
//! # Changes from the first design, and why
//!
//! - The writer reads the epoch from Postgres after its commit (pipelined behind the upsert, so no extra round
//!   trip) instead of using its in-memory copy: a lagging copy would update a namespace other processes had left,
//!   while they filled the current one with the old value, stale until the TTL instead of for one refresh.
//! - Stale marks are cleared by an epoch bump, retried by the background task, instead of by deleting the entry:
//!   a delete races with a late fill, and a bump needs Postgres only. A write whose outcome is unknown marks its
//!   key until it can no longer commit (one more query timeout), then the bump covers a commit that came late.
//! - The write runs in a task of its own, so that a dropped request (client gone, shutdown deadline) cannot leave
//!   a commit without its cache update or bump.
//! - Postgres' `statement_timeout` and `lock_timeout` are derived from `APP_DB_QUERY_TIMEOUT_MS` (three quarters
//!   and half of it), and a writer waits for its key's turn at most `APP_DB_ACQUIRE_TIMEOUT_MS`, as for a
//!   connection: no new settings.
//! - Epoch reads and bumps are not in `db_client_operation_duration_seconds` yet: its `db_operation_name` label
//!   has no value for them.

pub mod admission;
pub mod cache;
pub mod epoch;
pub mod postgres;
pub mod stale;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::Config;
use crate::error::error_chain;
use crate::telemetry::metrics::{CacheResult, Metrics, PoolName};
use admission::{Admission, Refused};
use cache::{Cache, CacheError};
use epoch::Epoch;
use postgres::Db;
use stale::StaleKeys;

/// How often the background task retries schema creation, refreshes the epoch and bumps it for stale keys.
pub const BACKGROUND_INTERVAL: Duration = Duration::from_millis(500);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres is down, slow, busy, or its schema is not there yet: 503.
    #[error("database unavailable")]
    Unavailable(#[source] Unavailable),
    /// Postgres refused the value (for example a `\u0000` in a string): 400.
    #[error("{0}")]
    InvalidValue(String),
    /// Any other Postgres error: 500.
    #[error("database error")]
    Internal(#[source] tokio_postgres::Error),
}

/// The ways Postgres can be unavailable.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// No connection from the pool within the acquire timeout, while every pooled connection was busy.
    #[error("timed out waiting for a connection from the pool")]
    PoolTimeout,
    /// No connection from the pool within the acquire timeout because new ones cannot be made.
    #[error("cannot connect to postgres ({0})")]
    Connect(String),
    /// The statement did not complete in time (the client's limit; Postgres was asked to cancel it).
    #[error("statement timed out after {0:?}")]
    Timeout(Duration),
    /// A table has not been created yet (Postgres was down at startup, or it was dropped); a background task
    /// retries.
    #[error("database schema not created yet")]
    SchemaNotReady,
    /// The connection broke, Postgres is shutting down or starting, or it aborted the statement (a lock or
    /// statement timeout, a cancel, a serialization failure).
    #[error("{}", postgres_failure(.0))]
    Postgres(#[source] tokio_postgres::Error),
}

/// Whether a failed write took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not applied, and never will be: Postgres rolled it back, or never received it.
    NotApplied,
    /// The store cannot know: it may be applied, now or a little later.
    Unknown,
}

impl Outcome {
    /// The name clients see (`outcome` of a write route's error body).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::NotApplied => "not_applied",
            Outcome::Unknown => "unknown",
        }
    }
}

/// Why a write failed, and whether it took effect.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Not applied: Postgres refused or aborted it, or it was never sent (400, 500 or 503 as the cause says).
    #[error(transparent)]
    NotApplied(#[from] StoreError),
    /// Not applied: never sent, because other writes of the same key held it up, or writes of too many keys are
    /// in flight (503).
    #[error("not admitted")]
    NotAdmitted(#[source] Refused),
    /// Outcome unknown (503).
    #[error("outcome of the write unknown")]
    Unknown(#[source] Unknown),
}

impl WriteError {
    /// Whether the write took effect.
    pub fn outcome(&self) -> Outcome {
        match self {
            WriteError::NotApplied(_) | WriteError::NotAdmitted(_) => Outcome::NotApplied,
            WriteError::Unknown(_) => Outcome::Unknown,
        }
    }
}

/// Why the outcome of a write is unknown.
#[derive(Debug, thiserror::Error)]
pub enum Unknown {
    /// Postgres did not answer in time; it was asked to cancel the statement, which may have committed first.
    #[error("postgres did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed after the statement was sent.
    #[error("{}", postgres_failure(.0))]
    ConnectionLost(#[source] tokio_postgres::Error),
    /// Committed, but neither the cache entry could be updated nor the epoch bumped: other processes may serve
    /// the previous value for a while.
    #[error("committed, but the cache could not be invalidated")]
    CacheNotInvalidated(#[source] Arc<StoreError>),
    /// The write's task was stopped (the runtime is shutting down).
    #[error("interrupted")]
    Interrupted,
}

/// The latest failure of a pool's background connection attempts. bb8 reports them only to its error sink and
/// makes the caller wait out the acquire timeout, so this is how a timed-out caller learns *why* ("connection
/// refused" rather than "timed out").
#[derive(Debug, Clone, Default)]
pub(crate) struct LastConnectError(Arc<Mutex<Option<(Instant, String)>>>);

impl LastConnectError {
    pub(crate) fn record(&self, what: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), what));
    }

    /// The failure, if one happened within `window`.
    pub(crate) fn recent(&self, window: Duration) -> Option<String> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|(at, _)| at.elapsed() <= window)
            .map(|(_, what)| what.clone())
    }
}

/// Connections of one pool, for the pool gauges.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    /// Which pool.
    pub pool: PoolName,
    /// Open and idle.
    pub idle: u32,
    /// Open and checked out.
    pub used: u32,
    /// Capacity.
    pub max: u32,
}

/// The store.
pub struct Store {
    db: Db,
    cache: Cache,
    epoch: Epoch,
    stale: StaleKeys,
    admission: Admission,
    /// Longest wait for a key's turn to write.
    admission_wait: Duration,
    metrics: Metrics,
}

impl Store {
    /// Creates both pools; connects lazily.
    pub fn new(config: &Config, metrics: Metrics) -> Self {
        Store {
            db: Db::new(config, metrics.clone()),
            cache: Cache::new(config, metrics.clone()),
            epoch: Epoch::default(),
            stale: StaleKeys::default(),
            admission: Admission::default(),
            admission_wait: config.db_acquire_timeout,
            metrics,
        }
    }

    /// The Postgres side (for `/status` and the schema).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The Redis side (for `/status`).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Both pools' connections.
    pub fn pool_stats(&self) -> [PoolStats; 2] {
        [self.db.pool_stats(), self.cache.pool_stats()]
    }

    /// Reads a key through the cache.
    pub async fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        // Taken before Postgres is read: a fill goes to the namespace that was current before the read.
        let epoch = self.epoch.current();
        if let Some(epoch) = epoch.filter(|_| !self.stale.contains(key)) {
            match self.cache.get(epoch, key).await {
                Ok(Some(cached)) => {
                    self.metrics.cache_lookup(CacheResult::Hit);
                    return Ok(Some(cached.value));
                }
                Ok(None) => self.metrics.cache_lookup(CacheResult::Miss),
                Err(e) => {
                    self.metrics.cache_lookup(CacheResult::Error);
                    log_cache_error(&e, "cache lookup failed; reading from Postgres");
                }
            }
        }
        let row = self.db.get(key).await?;
        if let (Some((value, version)), Some(epoch)) = (&row, epoch) {
            // The compare-and-set keeps a newer entry written meanwhile; a failure here only costs a later miss.
            if let Err(e) = self.cache.put_if_newer(epoch, key, *version, value).await {
                log_cache_error(&e, "cache fill failed");
            }
        }
        Ok(row.map(|(value, _)| value))
    }

    /// Writes a key. Returns once Postgres committed and the cache was updated or its epoch bumped; on failure,
    /// the error says whether the write took effect ([`WriteError::outcome`]).
    pub async fn set(self: &Arc<Self>, key: &str, value: &Value) -> Result<(), WriteError> {
        let store = Arc::clone(self);
        let (key, value) = (key.to_owned(), value.clone());
        // In a task of its own: a commit is always followed by its cache update or bump, even when the request
        // that asked for it is dropped.
        match tokio::spawn(async move { store.write(&key, &value).await }).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(WriteError::Unknown(Unknown::Interrupted)),
        }
    }

    async fn write(&self, key: &str, value: &Value) -> Result<(), WriteError> {
        let turn = self
            .admission
            .turn(key, self.admission_wait)
            .await
            .map_err(WriteError::NotAdmitted)?;
        let upserted = self.db.upsert(key, value).await;
        drop(turn);
        let committed = match upserted {
            Ok(committed) => committed,
            Err(e @ WriteError::Unknown(_)) => {
                self.invalidate_after_unknown(key).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let cache_updated = match committed.epoch {
            Some(epoch) => {
                let epoch = self.epoch.observe(epoch);
                match self.cache.put_if_newer(epoch, key, committed.version, value).await {
                    Ok(_) => true,
                    Err(e) => {
                        log_cache_error(&e, "cache update after a write failed; bumping the cache epoch");
                        false
                    }
                }
            }
            None => {
                tracing::warn!("the cache epoch could not be read after a write; bumping it");
                false
            }
        };
        if cache_updated {
            return Ok(());
        }
        match self.epoch.bump_after(committed.at, || self.db.bump_epoch()).await {
            Ok(_) => Ok(()),
            Err(bump) => {
                tracing::warn!(
                    error = %error_chain(&*bump),
                    "bumping the cache epoch failed; the key is read from Postgres here until a later bump"
                );
                self.stale.insert(key, Instant::now());
                Err(WriteError::Unknown(Unknown::CacheNotInvalidated(bump)))
            }
        }
    }

    /// After a write of unknown outcome: the statement may still commit, until Postgres' own limits (below the
    /// client's) have ended it, and a commit that late must not be shadowed by the entry the cache holds. Reads
    /// of the key here skip the cache until a bump that starts once the statement can no longer commit; the entry
    /// is deleted now as well, for the other processes' sake if it has committed already.
    async fn invalidate_after_unknown(&self, key: &str) {
        self.stale.insert(key, Instant::now() + self.db.query_timeout());
        if let Some(epoch) = self.epoch.current() {
            if let Err(e) = self.cache.delete(epoch, key).await {
                log_cache_error(&e, "deleting the cache entry of a write of unknown outcome failed");
            }
        }
    }

    /// Creates the schema and reads the epoch now if Postgres answers; otherwise the background task keeps trying.
    pub async fn prepare(&self) {
        if let Err(e) = self.db.migrate().await {
            tracing::warn!(error = %error_chain(&e), "database schema not created yet (Postgres unreachable?); retrying in the background");
            return;
        }
        if let Err(e) = self.refresh_epoch().await {
            tracing::warn!(
                error = %error_chain(&e),
                "cannot read the cache epoch; the cache is unused until it is read"
            );
        }
    }

    /// Retries schema creation, refreshes the epoch and bumps it for stale keys, until the future is dropped.
    pub async fn run_background(&self) {
        let mut migration_failed_before = false;
        let mut refresh_failed_before = false;
        loop {
            tokio::time::sleep(BACKGROUND_INTERVAL).await;
            if !self.db.schema_ready() {
                match self.db.migrate().await {
                    Ok(()) => migration_failed_before = false,
                    Err(e) if !migration_failed_before => {
                        migration_failed_before = true;
                        tracing::warn!(error = %error_chain(&e), "creating the database schema failed; retrying");
                    }
                    Err(e) => {
                        tracing::debug!(error = %error_chain(&e), "creating the database schema failed")
                    }
                }
            }
            if self.db.schema_ready() {
                match self.refresh_epoch().await {
                    Ok(_) => refresh_failed_before = false,
                    // Another process's bump goes unseen meanwhile; Postgres is most likely down, and the cache
                    // keeps serving the namespace last known.
                    Err(e) if !refresh_failed_before => {
                        refresh_failed_before = true;
                        tracing::warn!(error = %error_chain(&e), "refreshing the cache epoch failed; retrying");
                    }
                    Err(e) => {
                        tracing::debug!(error = %error_chain(&e), "refreshing the cache epoch failed")
                    }
                }
            }
            self.bump_for_stale_keys().await;
        }
    }

    async fn refresh_epoch(&self) -> Result<i64, StoreError> {
        let epoch = self.db.epoch().await?;
        let before = self.epoch.current();
        let now = self.epoch.observe(epoch);
        if before.is_none() {
            tracing::info!(epoch = now, "cache epoch loaded; the cache is in use");
        }
        Ok(now)
    }

    async fn bump_for_stale_keys(&self) {
        let now = Instant::now();
        if !self.stale.due(now) {
            return;
        }
        match self.epoch.bump_after(now, || self.db.bump_epoch()).await {
            Ok((epoch, started)) => {
                let cleared = self.stale.clear_covered(started);
                tracing::info!(
                    epoch,
                    keys = cleared,
                    "bumped the cache epoch for keys whose entries were stale"
                );
            }
            Err(e) => {
                tracing::debug!(error = %error_chain(&*e), "bumping the cache epoch for stale keys failed; retrying")
            }
        }
    }
}

fn log_cache_error(error: &CacheError, message: &str) {
    match error {
        // Skipped lookups follow a failure that was already logged.
        CacheError::Skipped => tracing::debug!(error = %error, "{message}"),
        _ => tracing::warn!(error = %error_chain(error), "{message}"),
    }
}

/// A short description of a Postgres failure in our own words (safe to show in `/status`).
fn postgres_failure(error: &tokio_postgres::Error) -> String {
    match error.code() {
        Some(code) => format!("postgres refused the operation (SQLSTATE {})", code.code()),
        None if error.is_closed() => "connection to postgres closed".to_owned(),
        None => "connection to postgres failed".to_owned(),
    }
}
