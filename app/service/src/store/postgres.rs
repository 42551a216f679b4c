//! Postgres, the source of truth: a bb8 pool, the schema, and the statements the service runs.
//!
//! Every operation is bounded twice. Postgres bounds it itself: each connection starts with `statement_timeout`
//! and `lock_timeout` (see [`ServerTimeouts`]), so a statement stuck behind a row lock is aborted by the server
//! and rolled back. The client bounds it too, as a backstop for a server that does not answer at all: the pool's
//! acquire timeout (also the connect timeout of new connections) and `APP_DB_QUERY_TIMEOUT_MS` per statement, a
//! little longer than the server's limits. When the client gives up on a statement it sends Postgres a cancel
//! request and retires the connection, whose state it no longer knows.
//!
//! A failed write is sorted by whether it can have taken effect (see [`write_outcome`]): an `ERROR` from the
//! server (a lock or statement timeout, a cancel, a serialization failure, a bad value) rolled the statement back;
//! a failure before the statement was sent (no connection) never reached Postgres; but a connection that broke, a
//! `FATAL` error, or no answer in time leave a commit possible.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bb8::{Pool, PooledConnection, RunError};
use bb8_postgres::PostgresConnectionManager;
use serde_json::Value;
use tokio_postgres::error::{Severity, SqlState};
use tokio_postgres::types::Type;
use tokio_postgres::{CancelToken, Client, NoTls};

use super::{LastConnectError, Outcome, PoolStats, StoreError, Unavailable, Unknown, WriteError};
use crate::config::Config;
use crate::telemetry::metrics::{DbOp, Metrics, PoolName};

/// Any number unique to this service: the advisory lock that serialises schema creation across processes.
const SCHEMA_LOCK_ID: i64 = 0x6170_705f_6b76; // "app_kv"

/// The whole schema, created idempotently.
///
/// - `version` comes from a sequence and every write draws a new one, after it holds the row lock: a key's
///   version only ever increases, even when its row is deleted by hand and written again. The cache keeps it next
///   to the value so that a late cache fill never replaces a newer value (see `store::cache`).
/// - `kv_cache_epoch` holds the one number that names the cache's current namespace (see `store` and
///   `store::epoch`). It starts at the time of its creation in microseconds, so a schema dropped and created
///   again does not reuse a namespace Redis may still hold.
const SCHEMA: &str = "
CREATE SEQUENCE IF NOT EXISTS kv_version_seq;
CREATE TABLE IF NOT EXISTS kv_store (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    version    bigint NOT NULL DEFAULT nextval('kv_version_seq'),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS kv_cache_epoch (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch     bigint NOT NULL
);
INSERT INTO kv_cache_epoch (epoch) VALUES (floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
    ON CONFLICT DO NOTHING;
";

/// Run once, when the sequence is new: a `kv_store` made before versions came from it keeps its versions below
/// the sequence's next value.
const ADOPT_EXISTING_TABLE: &str = "
ALTER TABLE kv_store ALTER COLUMN version SET DEFAULT nextval('kv_version_seq');
SELECT setval('kv_version_seq', GREATEST((SELECT max(version) FROM kv_store), 1));
";

const SELECT: &str = "SELECT value, version FROM kv_store WHERE key = $1";

/// `version = nextval(…)` in the update is evaluated once the row is locked, so concurrent writers of a key draw
/// their versions in the order they commit.
const UPSERT: &str = "INSERT INTO kv_store AS s (key, value) VALUES ($1, $2)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = nextval('kv_version_seq'), updated_at = now()
    RETURNING version";

const SELECT_EPOCH: &str = "SELECT epoch FROM kv_cache_epoch";

const BUMP_EPOCH: &str = "UPDATE kv_cache_epoch SET epoch = epoch + 1 RETURNING epoch";

/// The limits each connection sets on the server at connect time, derived from the client's
/// `APP_DB_QUERY_TIMEOUT_MS` so that Postgres gives up first and says so: `statement_timeout` at three quarters
/// of it, `lock_timeout` at half (a write waiting on a locked row is aborted before the statement timeout, which
/// is left for slow statements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTimeouts {
    /// `statement_timeout`.
    pub statement: Duration,
    /// `lock_timeout`.
    pub lock: Duration,
}

impl ServerTimeouts {
    /// The server's limits for a client-side query timeout (at least 1 ms each: 0 would mean none).
    pub fn for_query_timeout(query_timeout: Duration) -> Self {
        let ms = query_timeout.as_millis() as u64;
        ServerTimeouts {
            statement: Duration::from_millis((ms * 3 / 4).max(1)),
            lock: Duration::from_millis((ms / 2).max(1)),
        }
    }

    /// The connection's `options` parameter: `existing` (from `APP_DATABASE_URL`) followed by these limits.
    fn options(&self, existing: Option<&str>) -> String {
        let ours = format!(
            "-c statement_timeout={} -c lock_timeout={}",
            self.statement.as_millis(),
            self.lock.as_millis()
        );
        match existing {
            Some(existing) if !existing.trim().is_empty() => format!("{} {ours}", existing.trim()),
            _ => ours,
        }
    }
}

/// A write Postgres has committed.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// The row's new version.
    pub version: i64,
    /// The cache epoch, read right after the commit (`None` if that read failed).
    pub epoch: Option<i64>,
    /// An instant after the commit: when its answer arrived.
    pub at: Instant,
}

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
        let options = ServerTimeouts::for_query_timeout(config.db_query_timeout).options(pg.get_options());
        pg.options(options);
        let last_connect_error = LastConnectError::default();
        let pool = Pool::builder()
            .max_size(config.db_pool_max_size)
            .connection_timeout(config.db_acquire_timeout)
            // A cheap round trip per checkout: after a Postgres restart the pool's old connections are dead.
            .test_on_check_out(true)
            .error_sink(Box::new(Sink(last_connect_error.clone())))
            .build_unchecked(Manager(PostgresConnectionManager::new(pg, NoTls)));
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

    /// The client-side limit of one statement (`APP_DB_QUERY_TIMEOUT_MS`).
    pub fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    /// Creates the schema if it does not exist. Idempotent, and safe when several processes start at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = async {
            let mut conn = self.conn().await?;
            let work = async {
                let tx = conn.client.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_ID])
                    .await?;
                let new_sequence: bool = tx
                    .query_one("SELECT to_regclass('kv_version_seq') IS NULL", &[])
                    .await?
                    .get(0);
                tx.batch_execute(SCHEMA).await?;
                if new_sequence {
                    tx.batch_execute(ADOPT_EXISTING_TABLE).await?;
                }
                tx.commit().await
            };
            // A few statements, each under the server's limits, and the whole under the client's: startup waits no
            // longer for a hung Postgres than for any other statement.
            match tokio::time::timeout(self.query_timeout, work).await {
                Ok(result) => result.map_err(classify),
                Err(_) => {
                    self.give_up(&conn);
                    Err(StoreError::Unavailable(Unavailable::Timeout(self.query_timeout)))
                }
            }
        }
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
        let result = async {
            self.check_schema()?;
            let conn = self.conn().await?;
            let row = self
                .limited(&conn, conn.client.query_typed_opt(SELECT, &[(&key, Type::TEXT)]))
                .await
                .map_err(|e| self.statement_failure(e))?;
            Ok(row.map(|row| (row.get::<_, Value>(0), row.get::<_, i64>(1))))
        }
        .await;
        self.metrics
            .db_operation(DbOp::Select, result.is_ok(), started.elapsed());
        result
    }

    /// Writes one key and reads the cache epoch right after its commit. Returns once Postgres has committed; on
    /// failure, says whether the write can have taken effect.
    pub async fn upsert(&self, key: &str, value: &Value) -> Result<Committed, WriteError> {
        let started = Instant::now();
        let result = async {
            self.check_schema()?;
            let conn = self.conn().await?;
            let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] =
                [(&key, Type::TEXT), (value, Type::JSONB)];
            let upsert = conn.client.query_typed_one(UPSERT, &params);
            // Sent behind the upsert on the same connection, without waiting for it: each has its own implicit
            // transaction, so Postgres reads the epoch after the upsert committed, at no extra round trip.
            let epoch = conn.client.query_typed_opt(SELECT_EPOCH, &[]);
            let (mut upserted, mut epoch_read) = (None, None);
            let upsert = async { upserted = Some((upsert.await, Instant::now())) };
            let epoch = async { epoch_read = Some(epoch.await) };
            let answered = tokio::time::timeout(self.query_timeout, async { tokio::join!(upsert, epoch) })
                .await
                .is_ok();
            if !answered {
                self.give_up(&conn);
            }
            let (row, at) = match upserted {
                Some((Ok(row), at)) => (row, at),
                Some((Err(e), _)) => return Err(self.write_failure(e)),
                None => return Err(WriteError::Unknown(Unknown::Timeout(self.query_timeout))),
            };
            let epoch = match epoch_read {
                Some(Ok(Some(row))) => Some(row.get::<_, i64>(0)),
                Some(Ok(None)) => {
                    self.schema_gone("kv_cache_epoch is empty");
                    None
                }
                Some(Err(e)) => {
                    self.notice_missing_table(&e);
                    None
                }
                None => None,
            };
            Ok(Committed {
                version: row.get::<_, i64>(0),
                epoch,
                at,
            })
        }
        .await;
        self.metrics
            .db_operation(DbOp::Upsert, result.is_ok(), started.elapsed());
        result
    }

    /// The cache epoch.
    pub async fn epoch(&self) -> Result<i64, StoreError> {
        self.epoch_statement(SELECT_EPOCH).await
    }

    /// Moves the cache to a new namespace: increments the epoch and returns it.
    pub async fn bump_epoch(&self) -> Result<i64, StoreError> {
        self.epoch_statement(BUMP_EPOCH).await
    }

    // Not measured: `db_operation_name` has no value for the epoch yet (see the module docs of `store`).
    async fn epoch_statement(&self, statement: &str) -> Result<i64, StoreError> {
        self.check_schema()?;
        let conn = self.conn().await?;
        let row = self
            .limited(&conn, conn.client.query_typed_opt(statement, &[]))
            .await
            .map_err(|e| self.statement_failure(e))?;
        match row {
            Some(row) => Ok(row.get::<_, i64>(0)),
            None => {
                self.schema_gone("kv_cache_epoch is empty");
                Err(StoreError::Unavailable(Unavailable::SchemaNotReady))
            }
        }
    }

    /// `SELECT 1`, for `/status`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = async {
            let conn = self.conn().await?;
            self.limited(&conn, conn.client.simple_query("SELECT 1"))
                .await
                .map_err(|e| self.statement_failure(e))?;
            Ok(())
        }
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

    /// Runs a statement of `conn` under the client-side query timeout; on that timeout, gives up on it.
    async fn limited<T>(
        &self,
        conn: &Connection,
        statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StatementError> {
        match tokio::time::timeout(self.query_timeout, statement).await {
            Ok(result) => result.map_err(StatementError::Postgres),
            Err(_) => {
                self.give_up(conn);
                Err(StatementError::TimedOut)
            }
        }
    }

    /// The client stops waiting for `conn`'s statement: Postgres is asked to cancel it (it may still be running,
    /// holding locks, or about to commit), and the connection is retired rather than reused with an answer still
    /// owed on it.
    fn give_up(&self, conn: &Connection) {
        conn.retire();
        let token: CancelToken = conn.client.cancel_token();
        let limit = self.acquire_timeout;
        tokio::spawn(async move {
            match tokio::time::timeout(limit, token.cancel_query(NoTls)).await {
                Ok(Ok(())) => {
                    tracing::debug!("sent postgres a cancel request for a statement that timed out")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cancelling a statement that timed out failed")
                }
                Err(_) => tracing::warn!("cancelling a statement that timed out timed out"),
            }
        });
    }

    fn statement_failure(&self, error: StatementError) -> StoreError {
        match error {
            StatementError::Postgres(e) => self.classify(e),
            StatementError::TimedOut => StoreError::Unavailable(Unavailable::Timeout(self.query_timeout)),
        }
    }

    /// A failed upsert, with whether it can have taken effect.
    fn write_failure(&self, error: tokio_postgres::Error) -> WriteError {
        match write_outcome(&error) {
            Outcome::NotApplied => WriteError::NotApplied(self.classify(error)),
            Outcome::Unknown => {
                self.notice_missing_table(&error);
                WriteError::Unknown(Unknown::ConnectionLost(error))
            }
        }
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        if self.schema_ready() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(Unavailable::SchemaNotReady))
        }
    }

    fn schema_gone(&self, what: &str) {
        if self.schema_ready.swap(false, Ordering::AcqRel) {
            tracing::warn!("{what}: the schema will be created again");
        }
    }

    /// Like [`classify`], and notices a dropped table so that the background task creates it again.
    fn classify(&self, error: tokio_postgres::Error) -> StoreError {
        self.notice_missing_table(&error);
        classify(error)
    }

    fn notice_missing_table(&self, error: &tokio_postgres::Error) {
        if error.code() == Some(&SqlState::UNDEFINED_TABLE) {
            self.schema_gone("a table of the store is gone");
        }
    }
}

/// How a statement the client sent failed.
enum StatementError {
    /// Postgres answered with an error, or the connection broke.
    Postgres(tokio_postgres::Error),
    /// No answer within the client-side query timeout.
    TimedOut,
}

/// Whether a statement that failed with `error` after it was sent can have taken effect. An `ERROR` ends the
/// statement and rolls its implicit transaction back while the session goes on: nothing was written. Anything
/// else (`FATAL`, `PANIC`, a broken connection, an answer the client could not read) may have come after the
/// commit.
pub fn write_outcome(error: &tokio_postgres::Error) -> Outcome {
    match error.as_db_error().map(|e| e.parsed_severity()) {
        Some(Some(Severity::Error)) => Outcome::NotApplied,
        _ => Outcome::Unknown,
    }
}

/// Sorts a Postgres error: dependency down or busy (503), bad value from the client (400), or a bug (500).
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
        // Connection exception, transaction rollback (serialization failure, deadlock), insufficient resources,
        // operator intervention (statement timeout, cancel, shutdown, recovery).
        "08" | "40" | "53" | "57" => StoreError::Unavailable(Unavailable::Postgres(error)),
        // A row lock not had within lock_timeout.
        _ if *code == SqlState::LOCK_NOT_AVAILABLE => StoreError::Unavailable(Unavailable::Postgres(error)),
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

/// bb8-postgres' connection manager, with connections the store can retire: one whose statement timed out on the
/// client still owes an answer (and may hold locks until the cancel request lands), so it is closed when it goes
/// back to the pool rather than handed to the next request.
pub struct Manager(PostgresConnectionManager<NoTls>);

/// A pooled Postgres connection.
pub struct Connection {
    client: Client,
    retired: AtomicBool,
}

impl Connection {
    fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = Connection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<Connection, tokio_postgres::Error> {
        Ok(Connection {
            client: self.0.connect().await?,
            retired: AtomicBool::new(false),
        })
    }

    async fn is_valid(&self, conn: &mut Connection) -> Result<(), tokio_postgres::Error> {
        self.0.is_valid(&mut conn.client).await
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.retired.load(Ordering::Relaxed) || conn.client.is_closed()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_gives_up_before_the_client() {
        let t = ServerTimeouts::for_query_timeout(Duration::from_millis(2000));
        assert_eq!(t.statement, Duration::from_millis(1500));
        assert_eq!(t.lock, Duration::from_millis(1000));
        let tiny = ServerTimeouts::for_query_timeout(Duration::from_millis(1));
        assert_eq!(
            (tiny.statement, tiny.lock),
            (Duration::from_millis(1), Duration::from_millis(1))
        );
    }

    #[test]
    fn the_server_limits_follow_options_from_the_url() {
        let t = ServerTimeouts::for_query_timeout(Duration::from_millis(2000));
        assert_eq!(t.options(None), "-c statement_timeout=1500 -c lock_timeout=1000");
        assert_eq!(
            t.options(Some("-c search_path=x ")),
            "-c search_path=x -c statement_timeout=1500 -c lock_timeout=1000"
        );
    }
}
