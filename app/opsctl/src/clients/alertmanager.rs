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
    /// The receiver names the YAML declares: the `name:` key of each item of the top-level `receivers:` list.
    /// A line scan covers block-style YAML in any indentation (`- name: x`, or `name: x` on the item's next
    /// line) and spares a YAML parser; `name:` keys nested deeper in an item are not receivers and are skipped.
    pub fn receiver_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut in_receivers = false;
        let mut dash_col: Option<usize> = None; // column of the list's `-`
        let mut key_col: Option<usize> = None; // column of the current item's keys
        for line in self.original.lines() {
            let line = line.split(" #").next().unwrap_or("").trim_end();
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            let rest = &line[indent..];
            if indent == 0 && !rest.starts_with('-') {
                in_receivers = rest == "receivers:";
                (dash_col, key_col) = (None, None);
                continue;
            }
            if !in_receivers {
                continue;
            }
            let (col, key) = if rest.starts_with('-') && dash_col.is_none_or(|c| c == indent) {
                dash_col = Some(indent);
                let after = &rest[1..];
                if after.trim().is_empty() {
                    key_col = None; // the item's keys start on the next line
                    continue;
                }
                let col = indent + 1 + (after.len() - after.trim_start().len());
                key_col = Some(col);
                (col, after.trim_start())
            } else {
                (indent, rest)
            };
            let key_col = *key_col.get_or_insert(col);
            if col == key_col {
                if let Some(value) = key.strip_prefix("name:") {
                    names.push(value.trim().trim_matches(['"', '\'']).to_string());
                }
            }
        }
        names
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

    #[test]
    fn receiver_names_come_from_the_receivers_list_only() {
        let config = AlertmanagerConfig {
            original: r#"global:
  resolve_timeout: 5m
route:
  receiver: ticket
  routes:
    - receiver: heartbeat
      matchers: [alertname="Watchdog"]
inhibit_rules:
  - source_matchers: [severity="critical"]
receivers:
  # paging
  - name: pager
    webhook_configs:
      - url: http://127.0.0.1:8082/hook/pager
        send_resolved: true
        http_config:
          basic_auth: {username: x}
  - name: "ticket"
    webhook_configs: [{url: "http://127.0.0.1:8082/hook/ticket"}]
  -
    name: 'heartbeat'
  - name: blackhole
time_intervals:
  - name: weekends
"#
            .to_string(),
        };
        assert_eq!(
            config.receiver_names(),
            vec!["pager", "ticket", "heartbeat", "blackhole"]
        );

        let other_layout = AlertmanagerConfig {
            original: concat!(
                "receivers:\n- name: pager\n  webhook_configs:\n  - url: x\n    name: not-a-receiver\n",
                "- name: ticket\nroute:\n    receiver: pager\n"
            )
            .to_string(),
        };
        assert_eq!(other_layout.receiver_names(), vec!["pager", "ticket"]);
        let four_spaces = AlertmanagerConfig {
            original: "receivers:\n    -   name: heartbeat\n".to_string(),
        };
        assert_eq!(four_spaces.receiver_names(), vec!["heartbeat"]);
    }
}
