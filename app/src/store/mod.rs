//! The key-value store every key route shares: Postgres is the source of truth, Redis a read-through cache.
//!
//! - Read: Redis; on a hit answer; on a miss (or a Redis failure) read Postgres, fill Redis with a TTL, answer.
//! - Write: Postgres first; once it has committed, the cached entry is replaced by the new version. If Redis
//!   cannot be updated the key is remembered as stale: reads of it skip Redis, and a background task deletes its
//!   entry once Redis answers again. So no reader sees an older value after a write was acknowledged, even when
//!   Redis restarts with its old data.
//! - A Redis failure never fails a request Postgres can serve; a Postgres failure fails everything except reads
//!   of cached keys, quickly, with 503.

pub mod cache;
pub mod postgres;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;
use crate::error::error_chain;
use crate::telemetry::metrics::{CacheResult, Metrics, PoolName};
use cache::{Cache, CacheError};
use postgres::Db;

/// How often the background task retries schema creation and pending invalidations.
const BACKGROUND_INTERVAL: Duration = Duration::from_millis(500);

/// Most keys remembered as stale; beyond it every cached entry is deleted once Redis is back.
const MAX_STALE_KEYS: usize = 10_000;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres is down, slow, or its schema is not there yet: 503.
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
    /// The statement did not complete in time.
    #[error("statement timed out after {0:?}")]
    Timeout(Duration),
    /// The table has not been created yet (Postgres was down at startup); a background task retries.
    #[error("database schema not created yet")]
    SchemaNotReady,
    /// The connection broke, or Postgres is shutting down or starting.
    #[error("{}", postgres_failure(.0))]
    Postgres(#[source] tokio_postgres::Error),
}

/// The latest failure of a pool's background connection attempts. bb8 reports them only to its error sink and
/// makes the caller wait out the acquire timeout, so this is how a timed-out caller learns *why* ("connection
/// refused" rather than "timed out").
#[derive(Debug, Clone, Default)]
pub(crate) struct LastConnectError(std::sync::Arc<Mutex<Option<(std::time::Instant, String)>>>);

impl LastConnectError {
    pub(crate) fn record(&self, what: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), what));
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
    stale: StaleKeys,
    metrics: Metrics,
}

impl Store {
    /// Creates both pools; connects lazily.
    pub fn new(config: &Config, metrics: Metrics) -> Self {
        Store {
            db: Db::new(config, metrics.clone()),
            cache: Cache::new(config, metrics.clone()),
            stale: StaleKeys::default(),
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
        if !self.stale.contains(key) {
            match self.cache.get(key).await {
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
        if let Some((value, version)) = &row {
            // The compare-and-set keeps a newer entry written meanwhile; a failure here only costs a later miss.
            if let Err(e) = self.cache.put_if_newer(key, *version, value).await {
                log_cache_error(&e, "cache fill failed");
            }
        }
        Ok(row.map(|(value, _)| value))
    }

    /// Writes a key; returns after Postgres committed and the cache was updated (or the key marked stale).
    pub async fn set(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        let version = self.db.upsert(key, value).await?;
        if let Err(e) = self.cache.put_if_newer(key, version, value).await {
            // Redis may still hold the old value (and keep it across a restart): read around it until deleted.
            self.stale.insert(key);
            log_cache_error(
                &e,
                "cache update after a write failed; the key is read from Postgres until Redis is back",
            );
        }
        Ok(())
    }

    /// Creates the schema now if Postgres answers; otherwise the background task keeps trying.
    pub async fn prepare(&self) {
        if let Err(e) = self.db.migrate().await {
            tracing::warn!(error = %error_chain(&e), "database schema not created yet (Postgres unreachable?); retrying in the background");
        }
    }

    /// Retries schema creation and stale-entry deletion until the future is dropped.
    pub async fn run_background(&self) {
        let mut migration_failed_before = false;
        loop {
            tokio::time::sleep(BACKGROUND_INTERVAL).await;
            if !self.db.schema_ready() {
                match self.db.migrate().await {
                    Ok(()) => migration_failed_before = false,
                    Err(e) if !migration_failed_before => {
                        migration_failed_before = true;
                        tracing::warn!(error = %error_chain(&e), "creating the database schema failed; retrying");
                    }
                    Err(e) => tracing::debug!(error = %error_chain(&e), "creating the database schema failed"),
                }
            }
            self.delete_stale_entries().await;
        }
    }

    async fn delete_stale_entries(&self) {
        match self.stale.pending() {
            Pending::Nothing => {}
            Pending::Everything { generation } => match self.cache.delete_all().await {
                Ok(n) => {
                    self.stale.clear_everything(generation);
                    tracing::info!(
                        deleted = n,
                        "deleted every cached entry after losing track of stale keys"
                    );
                }
                Err(e) => tracing::debug!(error = %error_chain(&e), "deleting cached entries failed; retrying"),
            },
            Pending::Keys(keys) => {
                let mut done = 0;
                for (key, generation) in keys {
                    if let Err(e) = self.cache.delete(&key).await {
                        tracing::debug!(error = %error_chain(&e), "deleting stale cache entries failed; retrying");
                        break;
                    }
                    self.stale.clear(&key, generation);
                    done += 1;
                }
                if done > 0 {
                    tracing::info!(keys = done, "deleted stale cache entries");
                }
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

/// Keys whose cache entry may be older than Postgres. Each has a generation so that a key marked stale again
/// while its deletion is in flight stays marked.
#[derive(Default)]
struct StaleKeys {
    inner: Mutex<StaleInner>,
    /// Number of keys plus one when overflowed: lets the common case (nothing stale) skip the lock.
    size: AtomicUsize,
}

#[derive(Default)]
struct StaleInner {
    keys: HashMap<String, u64>,
    generation: u64,
    overflowed: bool,
}

enum Pending {
    Nothing,
    Keys(Vec<(String, u64)>),
    Everything { generation: u64 },
}

impl StaleKeys {
    fn contains(&self, key: &str) -> bool {
        if self.size.load(Ordering::Acquire) == 0 {
            return false;
        }
        let inner = self.lock();
        inner.overflowed || inner.keys.contains_key(key)
    }

    fn insert(&self, key: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        if !inner.overflowed {
            if inner.keys.len() >= MAX_STALE_KEYS {
                tracing::warn!(
                    max = MAX_STALE_KEYS,
                    "too many stale cache entries to track; all will be deleted"
                );
                inner.overflowed = true;
                inner.keys.clear();
            } else {
                let generation = inner.generation;
                inner.keys.insert(key.to_owned(), generation);
            }
        }
        self.update_size(&inner);
    }

    fn pending(&self) -> Pending {
        if self.size.load(Ordering::Acquire) == 0 {
            return Pending::Nothing;
        }
        let inner = self.lock();
        if inner.overflowed {
            Pending::Everything {
                generation: inner.generation,
            }
        } else {
            Pending::Keys(inner.keys.iter().map(|(k, g)| (k.clone(), *g)).collect())
        }
    }

    fn clear(&self, key: &str, generation: u64) {
        let mut inner = self.lock();
        if inner.keys.get(key) == Some(&generation) {
            inner.keys.remove(key);
        }
        self.update_size(&inner);
    }

    fn clear_everything(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.overflowed = false;
        }
        self.update_size(&inner);
    }

    fn update_size(&self, inner: &StaleInner) {
        self.size
            .store(inner.keys.len() + usize::from(inner.overflowed), Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StaleInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_key_is_cleared_only_by_its_latest_generation() {
        let stale = StaleKeys::default();
        assert!(!stale.contains("a"));
        stale.insert("a");
        assert!(stale.contains("a") && !stale.contains("b"));
        let Pending::Keys(keys) = stale.pending() else {
            panic!("expected keys")
        };
        let (key, generation) = keys[0].clone();
        stale.insert("a"); // marked again while its deletion was in flight
        stale.clear(&key, generation);
        assert!(stale.contains("a"));
        let Pending::Keys(keys) = stale.pending() else {
            panic!("expected keys")
        };
        stale.clear(&keys[0].0, keys[0].1);
        assert!(!stale.contains("a"));
        assert!(matches!(stale.pending(), Pending::Nothing));
    }

    #[test]
    fn too_many_stale_keys_make_every_key_stale_until_all_are_deleted() {
        let stale = StaleKeys::default();
        for i in 0..=MAX_STALE_KEYS {
            stale.insert(&i.to_string());
        }
        assert!(stale.contains("never-written"));
        let Pending::Everything { generation } = stale.pending() else {
            panic!("expected everything")
        };
        stale.clear_everything(generation);
        assert!(!stale.contains("never-written"));
    }
}
