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

/// A notification that repeats an earlier one: who sent each, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    pub alertname: String,
    pub status: String,
    /// The peer (its external URL) that sent the first one, and the one that sent the repeat.
    pub first_from: String,
    pub again_from: String,
    /// Milliseconds between the two arrivals.
    pub after_ms: u64,
    /// How many notifications of the same group came between them (a group that resolved and fired again in
    /// between flapped; none between is two peers sending the same news).
    pub between: usize,
}

impl std::fmt::Display for Repeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} from {} {:.1} s after the same from {}, {} notification(s) of its group between",
            self.alertname,
            self.status,
            self.again_from,
            self.after_ms as f64 / 1000.0,
            self.first_from,
            self.between
        )
    }
}

/// Every notification of `notifications` (oldest first) that repeats an earlier one.
pub fn repeats(notifications: &[Notification]) -> Vec<Repeat> {
    let mut seen: BTreeMap<Key, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, n) in notifications.iter().enumerate() {
        let k = key(n);
        if let Some(&first) = seen.get(&k) {
            let f = &notifications[first];
            out.push(Repeat {
                alertname: n.alertname.clone(),
                status: n.status.clone(),
                first_from: f.webhook.external_url.clone(),
                again_from: n.webhook.external_url.clone(),
                after_ms: n.received_at_unix_ms.saturating_sub(f.received_at_unix_ms),
                between: notifications[first + 1..i]
                    .iter()
                    .filter(|m| m.receiver == n.receiver && m.webhook.group_key == n.webhook.group_key)
                    .count(),
            });
        } else {
            seen.insert(k, i);
        }
    }
    out
}

/// How many of the repeats are of each alert name (only names with a repeat are listed).
pub fn count(repeats: &[Repeat]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in repeats {
        *out.entry(r.alertname.clone()).or_default() += 1;
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
                external_url: format!("http://127.0.3.{}:9093", id % 3 + 1),
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
        assert_eq!(count(&repeats(&list)), BTreeMap::from([("RedisDown".to_string(), 1)]));
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
        assert!(count(&repeats(&list)).is_empty(), "{:?}", count(&repeats(&list)));
    }

    #[test]
    fn the_order_of_alerts_in_a_group_does_not_matter() {
        let list = [
            notification(1, "pager", "AppDown", &[("a", "firing"), ("b", "firing")]),
            notification(2, "pager", "AppDown", &[("b", "firing"), ("a", "firing")]),
            notification(3, "pager", "AppDown", &[("b", "firing"), ("a", "firing")]),
        ];
        assert_eq!(count(&repeats(&list)), BTreeMap::from([("AppDown".to_string(), 2)]));
    }

    #[test]
    fn a_repeat_says_who_sent_both_and_what_came_between() {
        let list = [
            notification(1, "pager", "RedisDown", &[("a", "firing")]),
            notification(2, "pager", "RedisDown", &[("a", "resolved")]),
            notification(3, "ticket", "RedisDown", &[("a", "firing")]),
            notification(4, "pager", "RedisDown", &[("a", "firing")]),
        ];
        let r = repeats(&list);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            r[0].to_string(),
            "RedisDown firing from http://127.0.3.2:9093 3.0 s after the same from http://127.0.3.2:9093, 1 \
             notification(s) of its group between"
        );
    }
}
