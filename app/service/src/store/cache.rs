//! Redis, the read-through cache: a bb8 pool, the entry format, and a short circuit breaker.
//!
//! An entry is `"<version>:<json>"` under `app:kv:<epoch>:<key>`, with a TTL. The epoch names the cache's current
//! namespace (see `store` for why it exists); this module takes it as an argument and never decides it. Entries
//! are only ever replaced by a newer version (a Lua compare-and-set), so a slow reader that fills the cache with
//! what it read cannot overwrite a value written after its read. Every command is bounded by
//! `APP_REDIS_TIMEOUT_MS`; after a failure the cache is skipped for [`RETRY_AFTER`], so a stopped Redis costs one
//! timeout per second, not one per request.
//!
//! Pooled connections are checked with a `PING` when taken from the pool only if they have not answered a command
//! within [`TRUSTED_FOR`], and are dropped from the pool after a connection-level failure (see [`Manager`]).
//! bb8-redis alone PINGs on every checkout: two round trips per cache hit, which halved cache-hit throughput in
//! `make bench`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bb8::{Pool, RunError};
use bb8_redis::redis::{self, FromRedisValue};
use bb8_redis::RedisConnectionManager;
use serde_json::Value;

use super::{LastConnectError, PoolStats};
use crate::config::Config;
use crate::telemetry::metrics::{CacheOp, Metrics, PoolName};

/// Namespace of the service's entries in Redis, followed by the epoch (Redis ACLs allow the app `app:*` only).
pub const KEY_PREFIX: &str = "app:kv:";

/// How long the cache is skipped after a Redis failure.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long after a successful command a pooled connection is handed out without a `PING` first.
pub const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// Sets the entry unless Redis already holds the same or a newer version. KEYS[1] = entry, ARGV = version, JSON,
/// TTL in seconds. Returns 1 when it wrote.
const PUT_IF_NEWER: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local cached = tonumber(string.match(current, '^(%d+):'))
  if cached and cached >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'EX', ARGV[3])
return 1
";

/// Why a cache operation failed. None of these fail a request: the store goes to Postgres instead.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Not attempted: Redis failed less than [`RETRY_AFTER`] ago.
    #[error("skipped: Redis failed less than {RETRY_AFTER:?} ago")]
    Skipped,
    /// No connection could be had from the pool in time, while every pooled connection was busy.
    #[error("timed out waiting for a Redis connection")]
    PoolTimeout,
    /// No connection could be had from the pool in time because new ones cannot be made.
    #[error("cannot connect to Redis ({0})")]
    Connect(String),
    /// The command did not complete in time.
    #[error("Redis command timed out after {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection broke.
    #[error("Redis error ({})", redis_failure(.0))]
    Redis(#[source] redis::RedisError),
    /// The entry is not `<version>:<json>`.
    #[error("cached entry is malformed")]
    Malformed,
}

/// A value read from the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    /// The Postgres row version it was cached from.
    pub version: i64,
    /// The value.
    pub value: Value,
}

/// The Redis side of the store.
pub struct Cache {
    pool: Pool<Manager>,
    max_size: u32,
    timeout: Duration,
    ttl_seconds: u64,
    /// Milliseconds since `created` until which the cache is skipped; 0 when healthy.
    skip_until_ms: AtomicU64,
    created: Instant,
    last_connect_error: LastConnectError,
    metrics: Metrics,
}

impl Cache {
    /// Creates the pool without connecting: the service starts even while Redis is down.
    pub fn new(config: &Config, metrics: Metrics) -> Self {
        let manager = Manager(
            RedisConnectionManager::new(config.redis_url.expose())
                .expect("APP_REDIS_URL was validated with the configuration"),
        );
        let last_connect_error = LastConnectError::default();
        let pool = Pool::builder()
            .max_size(config.redis_pool_max_size)
            .connection_timeout(config.redis_timeout)
            // After a Redis restart the pool's old connections are dead: checkouts are checked, cheaply (see Manager).
            .test_on_check_out(true)
            .error_sink(Box::new(Sink(last_connect_error.clone())))
            .build_unchecked(manager);
        Cache {
            pool,
            max_size: config.redis_pool_max_size,
            timeout: config.redis_timeout,
            ttl_seconds: config.cache_ttl.as_secs(),
            skip_until_ms: AtomicU64::new(0),
            created: Instant::now(),
            last_connect_error,
            metrics,
        }
    }

    /// Looks a key up in the namespace of `epoch`.
    pub async fn get(&self, epoch: i64, key: &str) -> Result<Option<Cached>, CacheError> {
        let raw: Option<String> = self
            .query(Some(CacheOp::Get), &redis::Cmd::get(entry(epoch, key)), false)
            .await?;
        raw.map(|raw| decode(&raw).ok_or(CacheError::Malformed)).transpose()
    }

    /// Caches `value` at `version` in the namespace of `epoch` unless a newer version is already cached there.
    /// Returns whether it wrote.
    pub async fn put_if_newer(&self, epoch: i64, key: &str, version: i64, value: &Value) -> Result<bool, CacheError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PUT_IF_NEWER)
            .arg(1)
            .arg(entry(epoch, key))
            .arg(version)
            .arg(value.to_string())
            .arg(self.ttl_seconds);
        let wrote: i64 = self.query(Some(CacheOp::Set), &cmd, false).await?;
        Ok(wrote == 1)
    }

    /// Removes a key's entry from the namespace of `epoch`.
    pub async fn delete(&self, epoch: i64, key: &str) -> Result<(), CacheError> {
        let _: i64 = self
            .query(Some(CacheOp::Delete), &redis::Cmd::del(entry(epoch, key)), false)
            .await?;
        Ok(())
    }

    /// `PING`, for `/status`: always tried, even while the breaker skips the cache.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let _: String = self.query(None, &redis::cmd("PING"), true).await?;
        Ok(())
    }

    /// Connections of the pool right now.
    pub fn pool_stats(&self) -> PoolStats {
        let state = self.pool.state();
        PoolStats {
            pool: PoolName::Redis,
            idle: state.idle_connections,
            used: state.connections - state.idle_connections,
            max: self.max_size,
        }
    }

    async fn query<T: FromRedisValue>(
        &self,
        op: Option<CacheOp>,
        cmd: &redis::Cmd,
        even_when_skipping: bool,
    ) -> Result<T, CacheError> {
        if !even_when_skipping && !self.may_try() {
            return Err(CacheError::Skipped);
        }
        let started = Instant::now();
        let result = async {
            let mut conn = self.pool.get().await.map_err(|e| match e {
                RunError::TimedOut => {
                    self.metrics.pool_timeout(PoolName::Redis);
                    match self.last_connect_error.recent(2 * self.timeout) {
                        Some(why) => CacheError::Connect(why),
                        None => CacheError::PoolTimeout,
                    }
                }
                RunError::User(e) => CacheError::Redis(e),
            })?;
            let result = match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn.connection)).await {
                Ok(result) => result.map_err(CacheError::Redis),
                Err(_) => Err(CacheError::Timeout(self.timeout)),
            };
            conn.record(&result);
            result
        }
        .await;
        if let Some(op) = op {
            self.metrics.cache_operation(op, started.elapsed());
        }
        match &result {
            Ok(_) => self.skip_until_ms.store(0, Ordering::Relaxed),
            Err(_) => {
                let until = self.now_ms() + RETRY_AFTER.as_millis() as u64;
                self.skip_until_ms.store(until, Ordering::Relaxed);
            }
        }
        result
    }

    /// Whether an operation may go to Redis: always while it is healthy; after a failure, once per
    /// [`RETRY_AFTER`]. The first caller after the pause claims the next pause before probing, so concurrent
    /// requests keep skipping instead of all waiting on a Redis that may still be down.
    fn may_try(&self) -> bool {
        let until = self.skip_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until
            && self
                .skip_until_ms
                .compare_exchange(
                    until,
                    now + RETRY_AFTER.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn now_ms(&self) -> u64 {
        self.created.elapsed().as_millis() as u64
    }
}

/// The kind of a Redis failure in our own words (safe to show in `/status`).
fn redis_failure(error: &redis::RedisError) -> &'static str {
    if error.is_connection_refusal() {
        "connection refused"
    } else if error.is_connection_dropped() {
        "connection dropped"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_io_error() {
        "I/O error"
    } else {
        "error response"
    }
}

/// bb8-redis's connection manager with a cheaper checkout test: a connection that answered a command within
/// [`TRUSTED_FOR`] is handed out as is, and one whose last command failed at the connection level is dropped.
/// A Redis restart between two commands of a busy connection therefore costs one failed cache operation (the
/// request reads Postgres, as for any cache failure), where a `PING` per checkout would have hidden it.
pub struct Manager(RedisConnectionManager);

/// A pooled Redis connection and what its last command showed.
pub struct Connection {
    connection: redis::aio::MultiplexedConnection,
    /// When it last answered a command.
    answered_at: Instant,
    /// Its last command failed in a way that leaves the connection unusable (or unknowable: timed out).
    broken: bool,
}

impl Connection {
    fn record<T>(&mut self, result: &Result<T, CacheError>) {
        match result {
            Err(e) if breaks_connection(e) => self.broken = true,
            _ => self.answered_at = Instant::now(),
        }
    }
}

/// Whether a failed command leaves its connection unusable. An error reply (a script error, a wrong type) came
/// over a working connection; a timeout leaves it in an unknown state, so it is replaced too.
fn breaks_connection(error: &CacheError) -> bool {
    match error {
        CacheError::Redis(e) => e.is_unrecoverable_error() || e.is_io_error(),
        CacheError::Malformed => false,
        _ => true,
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = Connection;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<Connection, redis::RedisError> {
        Ok(Connection {
            connection: self.0.connect().await?,
            answered_at: Instant::now(),
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut Connection) -> Result<(), redis::RedisError> {
        if conn.answered_at.elapsed() < TRUSTED_FOR {
            return Ok(());
        }
        self.0.is_valid(&mut conn.connection).await?;
        conn.answered_at = Instant::now();
        Ok(())
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.broken
    }
}

/// The Redis key of `key`'s entry in the namespace of `epoch`. The epoch holds no `:`, so every key maps to one
/// entry and back.
pub fn entry(epoch: i64, key: &str) -> String {
    format!("{KEY_PREFIX}{epoch}:{key}")
}

fn decode(raw: &str) -> Option<Cached> {
    let (version, json) = raw.split_once(':')?;
    Some(Cached {
        version: version.parse().ok()?,
        value: serde_json::from_str(json).ok()?,
    })
}

/// Receives the pool's background connection errors: remembers the latest and logs it at debug level (see the
/// Postgres pool's sink).
#[derive(Debug, Clone)]
struct Sink(LastConnectError);

impl bb8::ErrorSink<redis::RedisError> for Sink {
    fn sink(&self, error: redis::RedisError) {
        tracing::debug!(error = %error, "redis connection attempt failed");
        self.0.record(redis_failure(&error).to_owned());
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<redis::RedisError>> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_level_failures_retire_a_pooled_connection() {
        let reply = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        assert!(!breaks_connection(&CacheError::Redis(reply)));
        let dropped = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(breaks_connection(&CacheError::Redis(dropped)));
        assert!(breaks_connection(&CacheError::Timeout(Duration::from_millis(250))));
        assert!(!breaks_connection(&CacheError::Malformed));
    }

    #[test]
    fn entries_decode_into_version_and_value() {
        assert_eq!(
            decode(r#"7:{"a":[1,"x:y"]}"#),
            Some(Cached {
                version: 7,
                value: serde_json::json!({"a": [1, "x:y"]})
            })
        );
        assert_eq!(decode(r#"1:"World!""#).unwrap().value, Value::String("World!".into()));
    }

    #[test]
    fn malformed_entries_are_rejected() {
        assert_eq!(decode("World!"), None);
        assert_eq!(decode("x:1"), None);
        assert_eq!(decode("1:{"), None);
    }

    #[test]
    fn entries_live_under_the_service_prefix_and_the_epoch() {
        assert_eq!(entry(17, "Hello"), "app:kv:17:Hello");
        assert_eq!(entry(17, "a:b"), "app:kv:17:a:b");
    }
}
