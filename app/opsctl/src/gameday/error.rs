//! Why the game day, or one of its faults, could not do what it set out to: one error type, each variant carrying
//! the context its message needs (the command, the file, the query), and the source error kept for the chain.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clients::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to Prometheus, Alertmanager or the inbox failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    AlertmanagerConfig(#[from] ::stack::alertmanager::Error),
    #[error("--alertmanager, --admin and --replica-api each need at least one address")]
    NoAddress,
    #[error("HAProxy did not put server {server} back in rotation within {limit:?}")]
    NotInRotation { server: String, limit: Duration },
    #[error("{0:?} is not a URL with a host")]
    BadUrl(String),
    #[error("nft -f -: {0}")]
    Nft(String),
    #[error("no Alertmanager peer number {0} (0-based) in --alertmanager")]
    NoPeer(usize),
    #[error("Alertmanager's routing sends {0} to no receiver")]
    NoReceiver(String),
    #[error("Prometheus's configuration is not valid YAML: {0}")]
    PrometheusConfig(#[source] serde_yaml_ng::Error),
    #[error("no {0} in the configuration")]
    MissingSetting(&'static str),
    #[error("{key}: {value:?} is not a duration: {reason}")]
    BadSetting {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("Redis {what}: {source}")]
    Redis {
        what: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis {0}: timed out")]
    RedisTimeout(String),
    #[error("--redis-addr {0:?} is not host:port")]
    RedisAddr(String),
    #[error("connect to Redis at {addr}{}: {source}", user.as_ref().map(|u| format!(" as {u} (redis-admin.password)")).unwrap_or_default())]
    RedisConnect {
        addr: String,
        user: Option<String>,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis {what}: the reply lacks {expected}")]
    RedisReply { what: String, expected: &'static str },
    #[error("alerts with neither a scenario nor a reason: {0:?}")]
    Uncovered(Vec<(String, String)>),
    /// A secret file the game day needs cannot be used (the message names the file).
    #[error("{0}")]
    Secret(String),
    /// The URL may hold a password: the message names the option, not the value.
    #[error("--database-url is not a Postgres URL: {0}")]
    DatabaseUrl(#[source] tokio_postgres::Error),
    #[error("could not write the game day's keys ({failed} failed)")]
    Seed { failed: u64 },
    #[error(
        "the stack did not settle within 10 minutes: {busy:?} still active; an earlier game day's SLO burn keeps \
         the SLO tickets open for hours (their short windows are 2 h and 6 h): wait, or start from empty state with \
         `make clean && make up`"
    )]
    NotSettled { busy: std::collections::BTreeSet<String> },
    /// A background task (load, a proof's workers) panicked or was cancelled.
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the fault task panicked: {0}")]
    FaultPanicked(#[source] tokio::task::JoinError),
    #[error("the fault ended before it was in place")]
    FaultEndedEarly,
    /// One error reported at both ends of a fault (its injection and its removal wait for it).
    #[error(transparent)]
    Shared(Arc<Error>),
    #[error("{action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{command}: {output}")]
    Supervisor { command: String, output: String },
    #[error("{command}: {source}")]
    SupervisorSpawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url} did not answer within {limit:?}")]
    AppUnhealthy { url: String, limit: Duration },
    /// The Postgres cluster did not do what a drill waits for, or a member could not be acted on.
    #[error("Postgres cluster: {0}")]
    Cluster(String),
    #[error("{what}: {source}")]
    Postgres {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("no deadlock was detected: {0}")]
    NoDeadlock(String),
    /// An HTTP request of a drill failed before an answer (or its body could not be read).
    #[error("{what}: {}", crate::clients::describe_transport(source))]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: HTTP {status}: {body} ({hint})")]
    AppFault {
        url: String,
        status: reqwest::StatusCode,
        body: String,
        hint: &'static str,
    },
    #[error("{expr} stayed at or below {threshold} for {limit:?}")]
    Threshold {
        expr: String,
        threshold: f64,
        limit: Duration,
    },
    #[error("{expr}: {source}")]
    Query {
        expr: String,
        #[source]
        source: ClientError,
    },
    #[error("{expr}: no value (is the app scraped?)")]
    NoValue { expr: String },
    #[error("{what}: {detail}")]
    Metrics { what: String, detail: String },
    #[error("Redis has no ACL user {0:?}: --redis-app-user names the user of the app's APP_REDIS_URL")]
    NoAclUser(String),
    #[error("Redis user {user}'s command rules are {after:?} after the drill, not {before:?} as before")]
    AclNotRestored {
        user: String,
        after: Vec<String>,
        before: Vec<String>,
    },
    #[error("connect to Redis: {0}")]
    RedisSocket(#[source] std::io::Error),
    #[error("app-connections: opening connection {n} of {count}: {source}")]
    OpenConnection {
        n: usize,
        count: usize,
        #[source]
        source: super::connections::ExchangeError,
    },
    #[error("{0}: the drill speaks plain http:// only")]
    NotPlainHttp(String),
    #[error("getrlimit(RLIMIT_NOFILE) failed")]
    Getrlimit,
    #[error("app-connections needs {needed} open files and opsctl may have {have} (raise ulimit -n)")]
    OpenFiles { needed: u64, have: u64 },
}

impl From<Arc<Error>> for Error {
    fn from(e: Arc<Error>) -> Self {
        Error::Shared(e)
    }
}
