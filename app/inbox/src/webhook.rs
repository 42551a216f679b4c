//! The Alertmanager webhook payload (version 4) and the receivers the inbox accepts it for.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::limits::{cut, MAX_ALERTS_PER_NOTIFICATION, MAX_FIELD_BYTES};

/// A webhook receiver of the stack's Alertmanager config; each posts to `/hook/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Receiver {
    /// Critical alerts: someone is woken up.
    Pager,
    /// Warnings: handled in working hours.
    Ticket,
    /// The always-firing Watchdog alert: the dead-man's switch of the alerting pipeline.
    Heartbeat,
}

impl Receiver {
    /// Every receiver, in the order the page shows them.
    pub const ALL: [Receiver; 3] = [Receiver::Pager, Receiver::Ticket, Receiver::Heartbeat];

    /// The name used in paths, labels and the Alertmanager config.
    pub fn as_str(self) -> &'static str {
        match self {
            Receiver::Pager => "pager",
            Receiver::Ticket => "ticket",
            Receiver::Heartbeat => "heartbeat",
        }
    }
}

impl fmt::Display for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Receiver {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Receiver::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// Whether a notification or an alert is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The alert is active.
    Firing,
    /// The alert has ended (Alertmanager sends these because the stack sets `send_resolved: true`).
    Resolved,
}

impl Status {
    /// Both values, in the order metrics list them.
    pub const ALL: [Status; 2] = [Status::Firing, Status::Resolved];

    /// The lowercase name Alertmanager uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

impl FromStr for Status {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or(())
    }
}

/// Labels or annotations: sorted so stored and rendered notifications are stable.
pub type LabelSet = BTreeMap<String, String>;

/// The body Alertmanager posts to a webhook receiver (payload version 4). Fields Alertmanager always sends but
/// the inbox can live without default to empty, so hand-written test payloads stay short; `status` and `alerts`
/// are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    /// Payload format version; Alertmanager sends `"4"`.
    #[serde(default)]
    pub version: String,
    /// Identifies the alert group (route and group labels).
    #[serde(default)]
    pub group_key: String,
    /// How many alerts Alertmanager left out because of the receiver's `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
    /// `firing` while any alert of the group fires, else `resolved`.
    pub status: Status,
    /// The receiver name from Alertmanager's config.
    #[serde(default)]
    pub receiver: String,
    /// The labels the group is formed by (`group_by`).
    #[serde(default)]
    pub group_labels: LabelSet,
    /// Labels every alert of the notification shares.
    #[serde(default)]
    pub common_labels: LabelSet,
    /// Annotations every alert of the notification shares.
    #[serde(default)]
    pub common_annotations: LabelSet,
    /// Alertmanager's external URL.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// The alerts of the group.
    pub alerts: Vec<Alert>,
}

/// One alert inside a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: Status,
    /// Identifying labels (`alertname`, `severity`, `service`, …).
    #[serde(default)]
    pub labels: LabelSet,
    /// `summary`, `description`, `runbook_url`, `dashboard_url`, …
    #[serde(default)]
    pub annotations: LabelSet,
    /// RFC 3339 time the alert started firing.
    #[serde(default)]
    pub starts_at: String,
    /// RFC 3339 time it ended; Alertmanager sends the zero time for firing alerts.
    #[serde(default)]
    pub ends_at: String,
    /// Link to the expression in Prometheus.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Alertmanager's stable id of the label set.
    #[serde(default)]
    pub fingerprint: String,
}

impl WebhookPayload {
    /// The alert name the notification is about: the group's, else the one all its alerts share, else the first
    /// alert's (a group formed without `alertname` may mix several).
    pub fn alertname(&self) -> &str {
        self.group_labels
            .get("alertname")
            .or_else(|| self.common_labels.get("alertname"))
            .or_else(|| self.alerts.iter().find_map(|a| a.labels.get("alertname")))
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Whether any alert of the notification carries this alert name.
    pub fn mentions_alert(&self, alertname: &str) -> bool {
        self.alerts
            .iter()
            .any(|a| a.labels.get("alertname").map(String::as_str) == Some(alertname))
            || self.alertname() == alertname
    }

    /// The payload cut to what the inbox stores: every text at most [`MAX_FIELD_BYTES`], the first
    /// [`MAX_ALERTS_PER_NOTIFICATION`] alerts (the others added to `truncated_alerts`).
    pub fn bounded(mut self) -> Self {
        for text in [
            &mut self.version,
            &mut self.group_key,
            &mut self.receiver,
            &mut self.external_url,
        ] {
            cut(text, MAX_FIELD_BYTES);
        }
        for set in [
            &mut self.group_labels,
            &mut self.common_labels,
            &mut self.common_annotations,
        ] {
            bound_set(set);
        }
        if self.alerts.len() > MAX_ALERTS_PER_NOTIFICATION {
            let dropped = self.alerts.len() - MAX_ALERTS_PER_NOTIFICATION;
            self.alerts.truncate(MAX_ALERTS_PER_NOTIFICATION);
            self.truncated_alerts = self.truncated_alerts.saturating_add(dropped as u64);
        }
        for alert in &mut self.alerts {
            bound_set(&mut alert.labels);
            bound_set(&mut alert.annotations);
            for text in [
                &mut alert.starts_at,
                &mut alert.ends_at,
                &mut alert.generator_url,
                &mut alert.fingerprint,
            ] {
                cut(text, MAX_FIELD_BYTES);
            }
        }
        self
    }

    /// Whether this notification is a live Watchdog heartbeat: a *firing* Watchdog alert. A resolved Watchdog is
    /// the opposite — Alertmanager stopped hearing from Prometheus — so it must not count.
    pub fn carries_heartbeat(&self) -> bool {
        self.alerts
            .iter()
            .any(|a| a.status == Status::Firing && a.labels.get("alertname").map(String::as_str) == Some("Watchdog"))
    }
}

/// Cuts every name and value of a label or annotation set; names that become equal keep the first value.
fn bound_set(set: &mut LabelSet) {
    if set
        .iter()
        .all(|(k, v)| k.len() <= MAX_FIELD_BYTES && v.len() <= MAX_FIELD_BYTES)
    {
        return;
    }
    let mut bounded = LabelSet::new();
    for (mut name, mut value) in std::mem::take(set) {
        cut(&mut name, MAX_FIELD_BYTES);
        cut(&mut value, MAX_FIELD_BYTES);
        bounded.entry(name).or_insert(value);
    }
    *set = bounded;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_alertmanager_payload_parses() {
        let body = r#"{
          "receiver": "pager", "status": "firing",
          "alerts": [{"status": "firing",
                      "labels": {"alertname": "RedisDown", "severity": "critical", "service": "redis"},
                      "annotations": {"summary": "Redis is down.", "runbook_url": "http://localhost:8082/runbooks/RedisDown.md"},
                      "startsAt": "2026-11-22T10:00:00.000Z", "endsAt": "0001-01-01T00:00:00Z",
                      "generatorURL": "http://localhost:9090/graph?g0.expr=up", "fingerprint": "c0ffee"}],
          "groupLabels": {"alertname": "RedisDown", "service": "redis"},
          "commonLabels": {"alertname": "RedisDown", "severity": "critical", "service": "redis"},
          "commonAnnotations": {"summary": "Redis is down."},
          "externalURL": "http://localhost:9093", "version": "4",
          "groupKey": "{}:{alertname=\"RedisDown\", service=\"redis\"}", "truncatedAlerts": 0
        }"#;
        let payload: WebhookPayload = serde_json::from_str(body).unwrap();
        assert_eq!(payload.status, Status::Firing);
        assert_eq!(payload.alertname(), "RedisDown");
        assert_eq!(payload.alerts[0].fingerprint, "c0ffee");
        assert_eq!(payload.external_url, "http://localhost:9093");
        assert!(!payload.carries_heartbeat());
    }

    #[test]
    fn a_payload_without_alerts_or_status_is_rejected() {
        assert!(serde_json::from_str::<WebhookPayload>(r#"{"status":"firing"}"#).is_err());
        assert!(serde_json::from_str::<WebhookPayload>(r#"{"alerts":[]}"#).is_err());
        assert!(serde_json::from_str::<WebhookPayload>(r#"{"status":"weird","alerts":[]}"#).is_err());
    }

    #[test]
    fn only_a_firing_watchdog_is_a_heartbeat() {
        let mut payload: WebhookPayload = serde_json::from_str(
            r#"{"status":"firing","alerts":[{"status":"firing","labels":{"alertname":"Watchdog"}}]}"#,
        )
        .unwrap();
        assert!(payload.carries_heartbeat());
        payload.alerts[0].status = Status::Resolved;
        assert!(!payload.carries_heartbeat());
    }

    #[test]
    fn a_bounded_payload_keeps_short_fields_and_cuts_long_ones() {
        let long = "x".repeat(MAX_FIELD_BYTES * 3);
        let alerts: Vec<serde_json::Value> = (0..MAX_ALERTS_PER_NOTIFICATION + 5)
            .map(|i| {
                serde_json::json!({"status": "firing", "labels": {"alertname": "A", "i": i.to_string()},
                                   "annotations": {"description": long, long.clone(): "v"}, "generatorURL": long})
            })
            .collect();
        let payload: WebhookPayload = serde_json::from_value(serde_json::json!({
            "status": "firing", "alerts": alerts, "truncatedAlerts": 2, "groupKey": long,
            "commonLabels": {"alertname": "A"}
        }))
        .unwrap();
        let bounded = payload.bounded();
        assert_eq!(bounded.alerts.len(), MAX_ALERTS_PER_NOTIFICATION);
        assert_eq!(bounded.truncated_alerts, 7, "Alertmanager's 2 and our 5");
        assert_eq!(bounded.common_labels["alertname"], "A");
        assert!(bounded.group_key.len() <= MAX_FIELD_BYTES);
        let first = &bounded.alerts[0];
        assert_eq!(first.labels["i"], "0");
        assert!(first.annotations["description"].len() <= MAX_FIELD_BYTES);
        assert!(first.annotations["description"].ends_with('…'));
        assert!(first.annotations.keys().all(|k| k.len() <= MAX_FIELD_BYTES));
        assert!(first.generator_url.len() <= MAX_FIELD_BYTES);
    }

    #[test]
    fn receivers_and_statuses_round_trip_through_their_names() {
        for r in Receiver::ALL {
            assert_eq!(r.as_str().parse::<Receiver>(), Ok(r));
        }
        assert!("blackhole".parse::<Receiver>().is_err());
        assert_eq!("resolved".parse::<Status>(), Ok(Status::Resolved));
    }
}
