//! Prometheus's HTTP API (`/api/v1`): targets, rules, alerts and the Alertmanagers it sends to.

use std::collections::BTreeMap;

use reqwest::{Client, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{get_json, join, Auth, ClientError};

/// Prometheus's HTTP API (`/api/v1`).
#[derive(Debug, Clone)]
pub struct Prometheus {
    client: Client,
    base: String,
    auth: Auth,
}

/// The `{"status":"success","data":…}` envelope of every Prometheus API answer.
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    status: String,
    data: Option<T>,
    #[serde(default)]
    error: Option<String>,
}

/// A scrape target (`/api/v1/targets`, active ones).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Labels after relabelling; `job` and `instance` are always there.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The scrape job (pool) name.
    #[serde(default)]
    pub scrape_pool: String,
    /// The URL Prometheus scrapes.
    #[serde(default)]
    pub scrape_url: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    #[serde(default)]
    pub health: String,
    /// Why the last scrape failed.
    #[serde(default)]
    pub last_error: String,
}

impl Target {
    /// The `job` label (falling back to the scrape pool).
    pub fn job(&self) -> &str {
        self.labels.get("job").map(String::as_str).unwrap_or(&self.scrape_pool)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Targets {
    #[serde(default)]
    active_targets: Vec<Target>,
}

/// A rule group (`/api/v1/rules`).
#[derive(Debug, Clone, Deserialize)]
pub struct RuleGroup {
    /// Group name.
    pub name: String,
    /// The rule file it comes from.
    #[serde(default)]
    pub file: String,
    /// Its rules, in order.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A recording or alerting rule with its evaluation state.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Alert name or recorded series name.
    pub name: String,
    /// `alerting` or `recording`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The PromQL expression.
    #[serde(default)]
    pub query: String,
    /// `ok`, `err` or `unknown` (not evaluated yet).
    #[serde(default)]
    pub health: String,
    /// The last evaluation's error, if any.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Alerting rules: the `for` duration in seconds.
    #[serde(default)]
    pub duration: f64,
    /// Alerting rules: static labels (`severity`, `service`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Alerting rules: annotations as written (templates unexpanded).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    /// Whether this is an alerting rule.
    pub fn is_alert(&self) -> bool {
        self.kind == "alerting"
    }
}

#[derive(Debug, Deserialize)]
struct Groups {
    #[serde(default)]
    groups: Vec<RuleGroup>,
}

/// An alert Prometheus holds (`/api/v1/alerts`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusAlert {
    /// All labels, `alertname` included.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `pending` or `firing`.
    #[serde(default)]
    pub state: String,
}

#[derive(Debug, Deserialize)]
struct Alerts {
    #[serde(default)]
    alerts: Vec<PrometheusAlert>,
}

/// One series of an instant query's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Sample {
    /// Its labels.
    #[serde(default)]
    pub metric: BTreeMap<String, String>,
    /// `[unix seconds, "value"]`.
    pub value: (f64, String),
}

impl Sample {
    /// The value as a number (NaN when Prometheus wrote something else).
    pub fn number(&self) -> f64 {
        self.value.1.parse().unwrap_or(f64::NAN)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    #[serde(default)]
    result: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct ConfigData {
    yaml: String,
}

/// One Alertmanager Prometheus sends to.
#[derive(Debug, Clone, Deserialize)]
pub struct AlertmanagerTarget {
    /// Its alerts endpoint.
    pub url: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alertmanagers {
    #[serde(default)]
    active_alertmanagers: Vec<AlertmanagerTarget>,
}

impl Prometheus {
    /// A client for the Prometheus at `base` (e.g. `http://127.0.0.1:9090`).
    pub fn new(client: Client, base: &str) -> Self {
        Prometheus {
            client,
            base: base.trim_end_matches('/').to_string(),
            auth: Auth::None,
        }
    }

    /// The same client, sending `auth` with every request (basic auth on the secured stack).
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    async fn api<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = join(&self.base, path);
        // Prometheus answers 400/422/503 with the same envelope and an `error` field; decode it for the message.
        let envelope: Envelope<T> = get_json(
            &self.client,
            &self.auth,
            &url,
            &[
                StatusCode::BAD_REQUEST,
                StatusCode::UNPROCESSABLE_ENTITY,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
        )
        .await?;
        match envelope {
            Envelope {
                status,
                data: Some(data),
                ..
            } if status == "success" => Ok(data),
            Envelope { error, .. } => Err(ClientError::Decode {
                url,
                message: error.unwrap_or_else(|| "no data in the answer".to_string()),
            }),
        }
    }

    /// Active scrape targets.
    pub async fn targets(&self) -> Result<Vec<Target>, ClientError> {
        Ok(self
            .api::<Targets>("/api/v1/targets?state=active")
            .await?
            .active_targets)
    }

    /// Loaded rule groups with their evaluation state.
    pub async fn rules(&self) -> Result<Vec<RuleGroup>, ClientError> {
        Ok(self.api::<Groups>("/api/v1/rules").await?.groups)
    }

    /// Pending and firing alerts.
    pub async fn alerts(&self) -> Result<Vec<PrometheusAlert>, ClientError> {
        Ok(self.api::<Alerts>("/api/v1/alerts").await?.alerts)
    }

    /// Evaluates an instant query; only vector answers are accepted (wrap scalars in `vector()`).
    pub async fn query(&self, expr: &str) -> Result<Vec<Sample>, ClientError> {
        let mut url = reqwest::Url::parse(&join(&self.base, "/api/v1/query")).map_err(|e| ClientError::Decode {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        url.query_pairs_mut().append_pair("query", expr);
        let path = &url.as_str()[self.base.len()..];
        let data: QueryData = self.api(path).await?;
        if data.result_type != "vector" {
            return Err(ClientError::Decode {
                url: url.to_string(),
                message: format!("expected a vector, got a {}", data.result_type),
            });
        }
        serde_json::from_value(data.result).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    /// The configuration Prometheus runs with, as YAML.
    pub async fn config_yaml(&self) -> Result<String, ClientError> {
        Ok(self.api::<ConfigData>("/api/v1/status/config").await?.yaml)
    }

    /// Asks Prometheus to reload its configuration and rule files (needs `--web.enable-lifecycle`).
    pub async fn reload(&self) -> Result<(), ClientError> {
        let url = join(&self.base, "/-/reload");
        let response =
            self.auth
                .apply(self.client.post(&url))
                .send()
                .await
                .map_err(|source| ClientError::Transport {
                    url: url.clone(),
                    source,
                })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(ClientError::Status {
            url,
            status,
            body: super::snippet(&body),
        })
    }

    /// Alertmanagers Prometheus has discovered and sends to.
    pub async fn alertmanagers(&self) -> Result<Vec<AlertmanagerTarget>, ClientError> {
        Ok(self
            .api::<Alertmanagers>("/api/v1/alertmanagers")
            .await?
            .active_alertmanagers)
    }
}
