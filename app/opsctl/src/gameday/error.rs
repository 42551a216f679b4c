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
    #[error("alerts with neither a scenario nor a reason: {0:?}")]
    Uncovered(Vec<(String, String)>),
}
