//! Alertmanager's HTTP API (`/api/v2`): its status (loaded config) and the alerts it holds.

use std::collections::BTreeMap;

use reqwest::Client;
use serde::Deserialize;

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
    /// The configuration parsed: its routing tree and receivers.
    pub fn parse(&self) -> Result<ConfigFile, ConfigError> {
        Ok(serde_yaml_ng::from_str(&self.original)?)
    }

    /// The receiver names the YAML declares (empty when it does not parse).
    pub fn receiver_names(&self) -> Vec<String> {
        self.parse()
            .map(|c| c.receivers.into_iter().map(|r| r.name).collect())
            .unwrap_or_default()
    }
}

/// Why Alertmanager's configuration could not be read as opsctl needs it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Alertmanager's configuration is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// A matcher opsctl does not evaluate (regular expressions) or cannot read.
    #[error("route matcher {0:?}: only `label=\"value\"` and `label!=\"value\"` are evaluated")]
    Matcher(String),
    #[error("the route for {0} names no receiver")]
    NoReceiver(String),
    #[error("the route for {alert} goes to {receiver}, which the configuration does not declare")]
    UnknownReceiver { alert: String, receiver: String },
}

/// An Alertmanager configuration file, the parts opsctl reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigFile {
    pub route: Route,
    #[serde(default)]
    pub receivers: Vec<Receiver>,
}

/// A node of the routing tree.
#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    /// Inherited from the parent when absent.
    pub receiver: Option<String>,
    pub group_wait: Option<String>,
    pub group_interval: Option<String>,
    /// `label="value"` style matchers, all of which must hold.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// The older form: label → value, equality only.
    #[serde(default, rename = "match")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// A receiver and its integrations (`webhook_configs`, `slack_configs`, …), kept as they are.
#[derive(Debug, Clone, Deserialize)]
pub struct Receiver {
    pub name: String,
    #[serde(flatten)]
    pub integrations: BTreeMap<String, serde_yaml_ng::Value>,
}

impl Receiver {
    /// Whether it sends anything: a receiver with no integration (a blackhole) notifies nobody.
    pub fn notifies(&self) -> bool {
        self.integrations
            .iter()
            .any(|(k, v)| k.ends_with("_configs") && v.as_sequence().is_some_and(|s| !s.is_empty()))
    }
}

impl ConfigFile {
    /// The receiver an alert with `labels` is routed to, as Alertmanager picks it: the deepest first matching
    /// route, each level's first matching child (opsctl needs one receiver per alert; `continue` is not followed).
    pub fn receiver_for(&self, labels: &BTreeMap<String, String>) -> Result<&Receiver, ConfigError> {
        let alert = || labels.get("alertname").cloned().unwrap_or_default();
        let mut node = &self.route;
        let mut receiver = node.receiver.as_deref();
        'descend: loop {
            for child in &node.routes {
                if child.matches(labels)? {
                    node = child;
                    receiver = child.receiver.as_deref().or(receiver);
                    continue 'descend;
                }
            }
            break;
        }
        let name = receiver.ok_or_else(|| ConfigError::NoReceiver(alert()))?;
        self.receivers
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| ConfigError::UnknownReceiver {
                alert: alert(),
                receiver: name.to_string(),
            })
    }
}

impl Route {
    fn matches(&self, labels: &BTreeMap<String, String>) -> Result<bool, ConfigError> {
        let value = |name: &str| labels.get(name).map(String::as_str).unwrap_or("");
        for m in &self.matchers {
            let (name, equal, wanted) = parse_matcher(m)?;
            if (value(name) == wanted) != equal {
                return Ok(false);
            }
        }
        Ok(self.match_labels.iter().all(|(k, v)| value(k) == v))
    }
}

/// `name="value"` → (name, true, value); `name!="value"` → (name, false, value). Quotes are optional, as in
/// Alertmanager; regular-expression matchers are refused rather than guessed at.
fn parse_matcher(text: &str) -> Result<(&str, bool, String), ConfigError> {
    let bad = || ConfigError::Matcher(text.to_string());
    let (op_at, op) = text.find(['=', '!']).map(|i| (i, &text[i..])).ok_or_else(bad)?;
    let (equal, rest) = if let Some(rest) = op.strip_prefix("!=") {
        (false, rest)
    } else if op.starts_with("=~") || op.starts_with("!~") {
        return Err(bad());
    } else if let Some(rest) = op.strip_prefix('=') {
        (true, rest)
    } else {
        return Err(bad());
    };
    let name = text[..op_at].trim();
    let rest = rest.trim();
    let value = match rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => rest.to_string(),
    };
    if name.is_empty() {
        return Err(bad());
    }
    Ok((name, equal, value))
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
        let to = |pairs: &[(&str, &str)]| parsed.receiver_for(&labels(pairs)).unwrap().name.clone();
        assert_eq!(to(&[("alertname", "Watchdog"), ("severity", "none")]), "heartbeat");
        assert_eq!(
            to(&[("alertname", "PostgresDown"), ("severity", "critical"), ("team", "db")]),
            "pager"
        );
        assert_eq!(to(&[("alertname", "AppDown"), ("severity", "critical")]), "pager-app");
        assert_eq!(to(&[("alertname", "X"), ("severity", "warning")]), "ticket");
        assert_eq!(to(&[("alertname", "X"), ("severity", "info")]), "blackhole");
        // No severity: the root's receiver.
        assert_eq!(to(&[("alertname", "X")]), "ticket");
    }

    #[test]
    fn a_receiver_without_integrations_notifies_nobody() {
        let parsed = config(CONFIG).parse().unwrap();
        let notifies: Vec<bool> = parsed.receivers.iter().map(Receiver::notifies).collect();
        assert_eq!(notifies, vec![true, true, true, true, false]);
    }

    #[test]
    fn regular_expression_matchers_and_unknown_receivers_are_errors() {
        let regex = config("route:\n  receiver: a\n  routes: [{matchers: ['severity=~\"crit.*\"'], receiver: a}]\nreceivers: [{name: a}]\n");
        let err = regex
            .parse()
            .unwrap()
            .receiver_for(&labels(&[("severity", "x")]))
            .unwrap_err();
        assert!(matches!(err, ConfigError::Matcher(_)), "{err}");
        let unknown = config("route: {receiver: gone}\nreceivers: [{name: a}]\n");
        let err = unknown.parse().unwrap().receiver_for(&labels(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownReceiver { .. }), "{err}");
    }

    #[test]
    fn matchers_read_quoted_and_bare_values() {
        assert_eq!(
            parse_matcher(r#"severity="critical""#).unwrap(),
            ("severity", true, "critical".into())
        );
        assert_eq!(parse_matcher("team != db").unwrap(), ("team", false, "db".into()));
        assert!(parse_matcher("nonsense").is_err());
    }
}
