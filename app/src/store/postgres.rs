//! Postgres, the source of truth: a bb8 pool, the schema, and the two statements the service runs.
//!
//! Every operation is bounded: the pool's acquire timeout (also the connect timeout of new connections) and a
//! statement timeout, so that a stopped or hung Postgres turns into a fast 503 rather than a stalled request.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bb8::{Pool, PooledConnection, RunError};
use bb8_postgres::PostgresConnectionManager;
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

use super::{LastConnectError, PoolStats, StoreError, Unavailable};
use crate::config::Config;
use crate::telemetry::metrics::{DbOp, Metrics, PoolName};

type Manager = PostgresConnectionManager<NoTls>;

/// Any number unique to this service: the advisory lock that serialises schema creation across processes.
const SCHEMA_LOCK_ID: i64 = 0x6170_705f_6b76; // "app_kv"

/// The whole schema. `version` increases with every write; the cache keeps it next to the value so that a late
/// cache fill can never replace a newer value (see `store::cache`).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS kv_store (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    version    bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
)";

const SELECT: &str = "SELECT value, version FROM kv_store WHERE key = $1";

const UPSERT: &str = "INSERT INTO kv_store AS s (key, value) VALUES ($1, $2)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = s.version + 1, updated_at = now()
    RETURNING version";

/// The Postgres side of the store.
pub struct Db {
    pool: Pool<Manager>,
    max_size: u32,
    acquire_timeout: Duration,
    query_timeout: Duration,
    schema_ready: AtomicBool,
    last_connect_error: LastConnectError,
    metrics: Metrics,
}

impl Db {
    /// Creates the pool without connecting: the service starts even while Postgres is down.
    pub fn new(config: &Config, metrics: Metrics) -> Self {
        let mut pg = tokio_postgres::Config::from_str(config.database_url.expose())
            .expect("APP_DATABASE_URL was validated with the configuration");
        // A connection attempt to an unreachable host must not outlive the acquire timeout.
        pg.connect_timeout(config.db_acquire_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("app");
        }
        let last_connect_error = LastConnectError::default();
        let pool = Pool::builder()
            .max_size(config.db_pool_max_size)
            .connection_timeout(config.db_acquire_timeout)
            // A cheap round trip per checkout: after a Postgres restart the pool's old connections are dead.
            .test_on_check_out(true)
            .error_sink(Box::new(Sink(last_connect_error.clone())))
            .build_unchecked(PostgresConnectionManager::new(pg, NoTls));
        Db {
            pool,
            max_size: config.db_pool_max_size,
            acquire_timeout: config.db_acquire_timeout,
            query_timeout: config.db_query_timeout,
            schema_ready: AtomicBool::new(false),
            last_connect_error,
            metrics,
        }
    }

    /// Whether the schema has been created (or found) since startup.
    pub fn schema_ready(&self) -> bool {
        self.schema_ready.load(Ordering::Acquire)
    }

    /// Creates the schema if it does not exist. Idempotent, and safe when several processes start at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self
            .bounded(async {
                let mut conn = self.conn().await?;
                let tx = conn.transaction().await.map_err(classify)?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_ID])
                    .await
                    .map_err(classify)?;
                tx.batch_execute(SCHEMA).await.map_err(classify)?;
                tx.commit().await.map_err(classify)
            })
            .await;
        self.metrics
            .db_operation(DbOp::Migrate, result.is_ok(), started.elapsed());
        if result.is_ok() && !self.schema_ready.swap(true, Ordering::AcqRel) {
            tracing::info!("database schema ready");
        }
        result
    }

    /// Reads one key: its value and version, or `None`.
    pub async fn get(&self, key: &str) -> Result<Option<(Value, i64)>, StoreError> {
        let started = Instant::now();
        let result = self
            .bounded(async {
                self.check_schema()?;
                let conn = self.conn().await?;
                let row = conn
                    .query_typed_opt(SELECT, &[(&key, Type::TEXT)])
                    .await
                    .map_err(|e| self.classify(e))?;
                Ok(row.map(|row| (row.get::<_, Value>(0), row.get::<_, i64>(1))))
            })
            .await;
        self.metrics
            .db_operation(DbOp::Select, result.is_ok(), started.elapsed());
        result
    }

    /// Writes one key; returns once Postgres has committed, with the row's new version.
    pub async fn upsert(&self, key: &str, value: &Value) -> Result<i64, StoreError> {
        let started = Instant::now();
        let result = self
            .bounded(async {
                self.check_schema()?;
                let conn = self.conn().await?;
                let row = conn
                    .query_typed_one(UPSERT, &[(&key, Type::TEXT), (value, Type::JSONB)])
                    .await
                    .map_err(|e| self.classify(e))?;
                Ok(row.get::<_, i64>(0))
            })
            .await;
        self.metrics
            .db_operation(DbOp::Upsert, result.is_ok(), started.elapsed());
        result
    }

    /// `SELECT 1`, for `/status`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self
            .bounded(async {
                let conn = self.conn().await?;
                conn.simple_query("SELECT 1").await.map_err(classify)?;
                Ok(())
            })
            .await;
        self.metrics.db_operation(DbOp::Ping, result.is_ok(), started.elapsed());
        result
    }

    /// Connections of the pool right now.
    pub fn pool_stats(&self) -> PoolStats {
        let state = self.pool.state();
        PoolStats {
            pool: PoolName::Postgres,
            idle: state.idle_connections,
            used: state.connections - state.idle_connections,
            max: self.max_size,
        }
    }

    async fn conn(&self) -> Result<PooledConnection<'_, Manager>, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            RunError::TimedOut => {
                self.metrics.pool_timeout(PoolName::Postgres);
                match self.last_connect_error.recent(2 * self.acquire_timeout) {
                    Some(why) => StoreError::Unavailable(Unavailable::Connect(why)),
                    None => StoreError::Unavailable(Unavailable::PoolTimeout),
                }
            }
            RunError::User(e) => classify(e),
        })
    }

    /// Runs `op` under the statement timeout, on top of the pool's own acquire timeout.
    async fn bounded<T>(&self, op: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let limit = self.acquire_timeout + self.query_timeout;
        match tokio::time::timeout(limit, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(Unavailable::Timeout(self.query_timeout))),
        }
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        if self.schema_ready() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(Unavailable::SchemaNotReady))
        }
    }

    /// Like [`classify`], and notices a dropped table so that the background task creates it again.
    fn classify(&self, error: tokio_postgres::Error) -> StoreError {
        if error.code() == Some(&SqlState::UNDEFINED_TABLE) {
            self.schema_ready.store(false, Ordering::Release);
            tracing::warn!("the kv_store table is gone; it will be created again");
        }
        classify(error)
    }
}

/// Sorts a Postgres error: dependency down (503), bad value from the client (400), or a bug (500).
fn classify(error: tokio_postgres::Error) -> StoreError {
    let Some(code) = error.code() else {
        // No SQLSTATE: the connection broke or could not be made.
        return StoreError::Unavailable(Unavailable::Postgres(error));
    };
    match &code.code()[..2] {
        // Data exception, e.g. a `\u0000` in a JSON string, which Postgres text cannot hold.
        "22" => {
            let message = error.as_db_error().map_or("invalid value", |e| e.message()).to_owned();
            StoreError::InvalidValue(format!("value cannot be stored: {message}"))
        }
        // Connection exception, insufficient resources, operator intervention (shutdown, recovery).
        "08" | "53" | "57" => StoreError::Unavailable(Unavailable::Postgres(error)),
        // A missing table is being created again by the background task.
        _ if *code == SqlState::UNDEFINED_TABLE => StoreError::Unavailable(Unavailable::Postgres(error)),
        _ => StoreError::Internal(error),
    }
}

/// Why a connection could not be made, in our own words (shown by `/status`).
fn connect_failure(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("SQLSTATE {}", db.code().code());
    }
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::TimedOut => "connect timed out".to_owned(),
                _ => "I/O error".to_owned(),
            };
        }
        source = e.source();
    }
    if error.is_closed() {
        "connection closed".to_owned()
    } else {
        "connection failed".to_owned()
    }
}

/// Receives the pool's background connection errors: remembers the latest for callers that time out, and logs
/// it at debug level (while Postgres is down they arrive several times a second, and every failed request already
/// logs a warning).
#[derive(Debug, Clone)]
struct Sink(LastConnectError);

impl bb8::ErrorSink<tokio_postgres::Error> for Sink {
    fn sink(&self, error: tokio_postgres::Error) {
        tracing::debug!(error = %error, "postgres connection attempt failed");
        self.0.record(connect_failure(&error));
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<tokio_postgres::Error>> {
        Box::new(self.clone())
    }
}
