//! Alertmanager's HTTP API (`/api/v2`): its status (loaded config) and the alerts it holds.

use std::collections::BTreeMap;

use reqwest::Client;
use serde::Deserialize;
use stack::alertmanager::{Error as RoutingError, Routing};

use super::{get_json, join, Auth, ClientError};

/// Alertmanager's HTTP API (`/api/v2`).
#[derive(Debug, Clone)]
pub struct Alertmanager {
    client: Client,
    base: String,
    auth: Auth,
}

/// `/api/v2/status`, the parts opsctl reads.
#[derive(Debug, Clone, Deserialize)]
pub struct AlertmanagerStatus {
    /// The loaded configuration.
    pub config: AlertmanagerConfig,
}

/// The loaded configuration as Alertmanager reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct AlertmanagerConfig {
    /// The configuration file's YAML as loaded.
    pub original: String,
}

impl AlertmanagerConfig {
    /// The configuration's routing tree and receivers (one model with the generator's: `stack::alertmanager`).
    pub fn parse(&self) -> Result<Routing, RoutingError> {
        Routing::parse(&self.original)
    }

    /// The receiver names the YAML declares (empty when it does not parse).
    pub fn receiver_names(&self) -> Vec<String> {
        self.parse()
            .map(|c| c.receivers.into_iter().map(|(name, _)| name).collect())
            .unwrap_or_default()
    }
}

/// An alert Alertmanager holds (`/api/v2/alerts`).
#[derive(Debug, Clone, Deserialize)]
pub struct AlertmanagerAlert {
    /// All labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether it is active, silenced or inhibited.
    #[serde(default)]
    pub status: AlertStatus,
}

/// `status` of an Alertmanager alert.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertStatus {
    /// `active`, `suppressed` or `unprocessed`.
    #[serde(default)]
    pub state: String,
    /// Fingerprints of the alerts that inhibit it.
    #[serde(default)]
    pub inhibited_by: Vec<String>,
}

impl Alertmanager {
    /// A client for the Alertmanager at `base` (e.g. `http://127.0.0.1:9093`).
    pub fn new(client: Client, base: &str) -> Self {
        Alertmanager {
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

    /// Its status, including the loaded configuration.
    pub async fn status(&self) -> Result<AlertmanagerStatus, ClientError> {
        get_json(&self.client, &self.auth, &join(&self.base, "/api/v2/status"), &[]).await
    }

    /// The alerts it currently holds (active, silenced and inhibited).
    pub async fn alerts(&self) -> Result<Vec<AlertmanagerAlert>, ClientError> {
        get_json(&self.client, &self.auth, &join(&self.base, "/api/v2/alerts"), &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"global:
  resolve_timeout: 5m
route:
  receiver: ticket
  group_wait: 10s
  routes:
    - matchers: ['alertname="Watchdog"']
      receiver: heartbeat
    - matchers: ['severity="critical"']
      receiver: pager
      routes:
        - matchers: [team != "db"]
          receiver: pager-app
    - match: {severity: info}
      receiver: blackhole
receivers:
  - name: pager
    webhook_configs:
      - url: http://127.0.0.1:8082/hook/pager
        http_config: &auth
          authorization: {credentials_file: x}
  - name: pager-app
    webhook_configs: [{url: "http://127.0.0.1:8082/hook/pager", http_config: *auth}]
  - name: "ticket"
    webhook_configs: [{url: "http://127.0.0.1:8082/hook/ticket"}]
  -
    name: 'heartbeat'
    webhook_configs: [{url: "http://127.0.0.1:8082/hook/heartbeat"}]
  - name: blackhole
"#;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn config(text: &str) -> AlertmanagerConfig {
        AlertmanagerConfig {
            original: text.to_string(),
        }
    }

    #[test]
    fn receiver_names_come_from_the_receivers_list() {
        assert_eq!(
            config(CONFIG).receiver_names(),
            vec!["pager", "pager-app", "ticket", "heartbeat", "blackhole"]
        );
        assert!(config("receivers: [").receiver_names().is_empty());
    }

    #[test]
    fn alerts_are_routed_by_the_first_matching_route_at_each_level() {
        let parsed = config(CONFIG).parse().unwrap();
        let to = |pairs: &[(&str, &str)]| parsed.receivers_of(&labels(pairs));
        assert_eq!(to(&[("alertname", "Watchdog"), ("severity", "none")]), ["heartbeat"]);
        assert_eq!(
            to(&[("alertname", "PostgresDown"), ("severity", "critical"), ("team", "db")]),
            ["pager"]
        );
        assert_eq!(to(&[("alertname", "AppDown"), ("severity", "critical")]), ["pager-app"]);
        assert_eq!(to(&[("alertname", "X"), ("severity", "warning")]), ["ticket"]);
        assert_eq!(to(&[("alertname", "X"), ("severity", "info")]), ["blackhole"]);
        // No severity: the root's receiver.
        assert_eq!(to(&[("alertname", "X")]), ["ticket"]);
    }

    #[test]
    fn a_receiver_without_integrations_notifies_nobody() {
        let parsed = config(CONFIG).parse().unwrap();
        let notifies: Vec<bool> = parsed.receivers.iter().map(|(name, _)| parsed.notifies(name)).collect();
        assert_eq!(notifies, vec![true, true, true, true, false]);
    }

    #[test]
    fn regular_expression_matchers_are_refused() {
        let regex = config("route:\n  receiver: a\n  routes: [{matchers: ['severity=~\"crit.*\"'], receiver: a}]\nreceivers: [{name: a}]\n");
        let err = regex.parse().unwrap_err();
        assert!(matches!(err, RoutingError::Regex(_)), "{err}");
    }
}
