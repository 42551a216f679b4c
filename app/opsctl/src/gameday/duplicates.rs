//! Duplicate notifications: the same news delivered twice. Alertmanager's peers share a log of what each one
//! notified; a peer that cannot see it (partitioned, or before it has settled) sends on its own after waiting its
//! position × peer timeout, so the receiver gets the same notification from two peers. Alertmanager promises
//! at-least-once delivery, not exactly-once: the drills count duplicates instead of assuming there are none.
//!
//! Two notifications say the same thing when they come to the same receiver for the same group, with the same
//! status and the same alerts in the same states (each alert by fingerprint and start). A group whose alerts change
//! is notified again, rightly, and is no duplicate.

use std::collections::BTreeMap;

use crate::clients::Notification;

/// What a notification says.
type Key = (String, String, String, Vec<(String, String, String)>);

fn key(n: &Notification) -> Key {
    let mut alerts: Vec<(String, String, String)> = n
        .webhook
        .alerts
        .iter()
        .map(|a| (a.fingerprint.clone(), a.status.clone(), a.starts_at.clone()))
        .collect();
    alerts.sort();
    (
        n.receiver.clone(),
        n.webhook.group_key.clone(),
        n.status.clone(),
        alerts,
    )
}

/// How many of `notifications` repeat an earlier one, per alert name (only names with a duplicate are listed).
pub fn count(notifications: &[Notification]) -> BTreeMap<String, usize> {
    let mut seen: BTreeMap<Key, usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for n in notifications {
        let times = seen.entry(key(n)).or_default();
        *times += 1;
        if *times > 1 {
            *out.entry(n.alertname.clone()).or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::{Webhook, WebhookAlert};

    fn notification(id: u64, receiver: &str, group: &str, alerts: &[(&str, &str)]) -> Notification {
        Notification {
            id,
            receiver: receiver.to_string(),
            received_at_unix_ms: id * 1000,
            status: if alerts.iter().any(|(_, s)| *s == "firing") {
                "firing"
            } else {
                "resolved"
            }
            .to_string(),
            alertname: group.to_string(),
            webhook: Webhook {
                group_key: format!("{{}}:{{alertname=\"{group}\"}}"),
                alerts: alerts
                    .iter()
                    .map(|(fingerprint, status)| WebhookAlert {
                        status: status.to_string(),
                        labels: Default::default(),
                        fingerprint: fingerprint.to_string(),
                        starts_at: "2026-12-02T00:00:00Z".to_string(),
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn the_same_notification_twice_is_one_duplicate() {
        let list = [
            notification(1, "pager", "RedisDown", &[("a", "firing")]),
            notification(2, "pager", "RedisDown", &[("a", "firing")]),
        ];
        assert_eq!(count(&list), BTreeMap::from([("RedisDown".to_string(), 1)]));
    }

    #[test]
    fn firing_then_resolved_or_a_grown_group_or_another_receiver_are_no_duplicates() {
        let list = [
            notification(1, "pager", "RedisDown", &[("a", "firing")]),
            notification(2, "pager", "RedisDown", &[("a", "firing"), ("b", "firing")]),
            notification(3, "pager", "RedisDown", &[("a", "resolved"), ("b", "firing")]),
            notification(4, "ticket", "RedisDown", &[("a", "firing")]),
            notification(5, "pager", "PostgresDown", &[("a", "firing")]),
        ];
        assert!(count(&list).is_empty(), "{:?}", count(&list));
    }

    #[test]
    fn the_order_of_alerts_in_a_group_does_not_matter() {
        let list = [
            notification(1, "pager", "AppDown", &[("a", "firing"), ("b", "firing")]),
            notification(2, "pager", "AppDown", &[("b", "firing"), ("a", "firing")]),
            notification(3, "pager", "AppDown", &[("b", "firing"), ("a", "firing")]),
        ];
        assert_eq!(count(&list), BTreeMap::from([("AppDown".to_string(), 2)]));
    }
}
