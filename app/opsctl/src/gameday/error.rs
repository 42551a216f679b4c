//! Why the game day, or one of its faults, could not do what it set out to: one error type, each variant carrying
//! the context its message needs (the command, the file, the query), and the source error kept for the chain.

use crate::clients::{ClientError, ConfigError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to Prometheus, Alertmanager or the inbox failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    AlertmanagerConfig(#[from] ConfigError),
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
}

/// While the faults still report errors as text.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}
