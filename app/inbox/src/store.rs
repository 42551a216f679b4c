//! The notifications the inbox has received: a bounded in-memory log (newest kept), the counters behind its
//! metrics, the Watchdog heartbeat state, and the optional JSON-lines file that survives a restart.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::webhook::{Receiver, Status, WebhookPayload};

/// One webhook call as the inbox keeps it; also the line format of the data file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Increasing id, unique within the data file; clients poll for `after=<id>`.
    pub id: u64,
    /// The receiver path it was posted to.
    pub receiver: Receiver,
    /// When the inbox received it (RFC 3339, UTC).
    pub received_at: String,
    /// The same instant in Unix milliseconds, for arithmetic.
    pub received_at_unix_ms: u64,
    /// The notification's status (copied from the payload for filtering).
    pub status: Status,
    /// The alert the notification is about (see [`WebhookPayload::alertname`]).
    pub alertname: String,
    /// The payload exactly as Alertmanager sent it.
    pub webhook: WebhookPayload,
}

/// Which notifications a listing returns; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this receiver's.
    pub receiver: Option<Receiver>,
    /// Only notifications with an alert of this name.
    pub alertname: Option<String>,
    /// Only firing or only resolved notifications.
    pub status: Option<Status>,
    /// Only notifications newer than this id.
    pub after: Option<u64>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
}

/// The dead-man's switch as `/api/heartbeat` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heartbeat {
    /// False when no Watchdog has arrived for longer than `max_age_seconds` (counting from startup while none
    /// has arrived since, so a restart gets a grace period).
    pub healthy: bool,
    /// When the last firing Watchdog arrived (RFC 3339), if ever (also from the data file).
    pub last_received_at: Option<String>,
    /// The same in Unix seconds.
    pub last_received_timestamp_seconds: Option<f64>,
    /// Seconds since then.
    pub age_seconds: Option<f64>,
    /// The configured limit.
    pub max_age_seconds: f64,
    /// Heartbeats received since this process started.
    pub received_total: u64,
    /// When this process started (RFC 3339).
    pub started_at: String,
}

/// The counters `/metrics` renders, keyed by receiver and status; every combination is present (0 before the
/// first notification) so the series exist from the first scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    /// Webhook calls received, by receiver and notification status.
    pub notifications: BTreeMap<(Receiver, Status), u64>,
    /// Alerts inside those calls, by receiver and alert status.
    pub alerts: BTreeMap<(Receiver, Status), u64>,
    /// Appends to the data file that failed.
    pub data_file_write_errors: u64,
    /// Notifications held in memory.
    pub stored: usize,
}

/// Shared by every request handler.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    capacity: usize,
    heartbeat_max_age: Duration,
    started_unix_ms: u64,
}

#[derive(Debug)]
struct Inner {
    notifications: VecDeque<Notification>,
    next_id: u64,
    counters: Counters,
    last_heartbeat_unix_ms: Option<u64>,
    heartbeats_total: u64,
    data_file: Option<File>,
}

impl Store {
    /// A store that keeps at most `capacity` notifications in memory only.
    pub fn in_memory(capacity: usize, heartbeat_max_age: Duration) -> Self {
        Self::with_start(capacity, heartbeat_max_age, clock::now_unix_ms())
    }

    fn with_start(capacity: usize, heartbeat_max_age: Duration, started_unix_ms: u64) -> Self {
        let zero = || {
            Receiver::ALL
                .iter()
                .flat_map(|r| Status::ALL.iter().map(move |s| ((*r, *s), 0)))
                .collect()
        };
        Store {
            inner: Mutex::new(Inner {
                notifications: VecDeque::new(),
                next_id: 1,
                counters: Counters {
                    notifications: zero(),
                    alerts: zero(),
                    data_file_write_errors: 0,
                    stored: 0,
                },
                last_heartbeat_unix_ms: None,
                heartbeats_total: 0,
                data_file: None,
            }),
            capacity,
            heartbeat_max_age,
            started_unix_ms,
        }
    }

    /// A store backed by `path`: replays the newest `capacity` notifications (and the last heartbeat) from it,
    /// trims the file to those when it has grown past them, then appends every new notification to it.
    pub fn open(path: &Path, capacity: usize, heartbeat_max_age: Duration) -> io::Result<Self> {
        let store = Self::in_memory(capacity, heartbeat_max_age);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        let replay = Replay::read(path, capacity)?;
        if replay.skipped > 0 {
            let skipped = replay.skipped;
            tracing::warn!(file = %path.display(), skipped, "ignored unreadable lines of the data file");
        }
        if replay.total_lines > capacity || replay.skipped > 0 {
            rewrite(path, &replay.kept)?;
        }
        {
            let mut inner = store.lock();
            inner.next_id = replay.max_id + 1;
            inner.last_heartbeat_unix_ms = replay.last_heartbeat_unix_ms;
            inner.notifications = replay.kept.into();
            inner.counters.stored = inner.notifications.len();
            inner.data_file = Some(OpenOptions::new().create(true).append(true).open(path)?);
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the log half-updated in a way worth refusing service for.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a webhook call received now; returns the stored notification.
    pub fn record(&self, receiver: Receiver, webhook: WebhookPayload) -> Notification {
        self.record_at(receiver, webhook, clock::now_unix_ms())
    }

    fn record_at(&self, receiver: Receiver, webhook: WebhookPayload, now_unix_ms: u64) -> Notification {
        let mut inner = self.lock();
        let notification = Notification {
            id: inner.next_id,
            receiver,
            received_at: clock::rfc3339(now_unix_ms),
            received_at_unix_ms: now_unix_ms,
            status: webhook.status,
            alertname: webhook.alertname().to_string(),
            webhook,
        };
        inner.next_id += 1;
        *inner
            .counters
            .notifications
            .entry((receiver, notification.status))
            .or_default() += 1;
        for alert in &notification.webhook.alerts {
            *inner.counters.alerts.entry((receiver, alert.status)).or_default() += 1;
        }
        if is_heartbeat(&notification) {
            inner.last_heartbeat_unix_ms = Some(now_unix_ms);
            inner.heartbeats_total += 1;
        }
        if let Some(file) = inner.data_file.as_mut() {
            // A small synchronous append under the lock keeps file order equal to id order; webhooks arrive a
            // few per second at most, so this never holds up the runtime noticeably.
            let mut line = serde_json::to_vec(&notification).expect("a notification always serializes");
            line.push(b'\n');
            if let Err(error) = file.write_all(&line) {
                tracing::error!(%error, id = notification.id, "could not append the notification to the data file");
                inner.counters.data_file_write_errors += 1;
            }
        }
        inner.notifications.push_back(notification.clone());
        while inner.notifications.len() > self.capacity {
            inner.notifications.pop_front();
        }
        inner.counters.stored = inner.notifications.len();
        notification
    }

    /// The notifications matching `filter`, newest first.
    pub fn list(&self, filter: &Filter) -> Vec<Notification> {
        let inner = self.lock();
        inner
            .notifications
            .iter()
            .rev()
            .filter(|n| filter.after.is_none_or(|after| n.id > after))
            .filter(|n| filter.receiver.is_none_or(|r| n.receiver == r))
            .filter(|n| filter.status.is_none_or(|s| n.status == s))
            .filter(|n| filter.alertname.as_deref().is_none_or(|a| n.webhook.mentions_alert(a)))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// The heartbeat state now.
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat_at(clock::now_unix_ms())
    }

    fn heartbeat_at(&self, now_unix_ms: u64) -> Heartbeat {
        let inner = self.lock();
        let last = inner.last_heartbeat_unix_ms;
        // The clock the limit runs against starts at the later of the last heartbeat and our own start: before
        // the first heartbeat (or after a restart that replayed an old one) Alertmanager gets one full period.
        let reference = last.unwrap_or(0).max(self.started_unix_ms);
        let silent_ms = now_unix_ms.saturating_sub(reference);
        Heartbeat {
            healthy: u128::from(silent_ms) <= self.heartbeat_max_age.as_millis(),
            last_received_at: last.map(clock::rfc3339),
            last_received_timestamp_seconds: last.map(|ms| ms as f64 / 1000.0),
            age_seconds: last.map(|ms| now_unix_ms.saturating_sub(ms) as f64 / 1000.0),
            max_age_seconds: self.heartbeat_max_age.as_secs_f64(),
            received_total: inner.heartbeats_total,
            started_at: clock::rfc3339(self.started_unix_ms),
        }
    }

    /// A copy of the counters.
    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }
}

/// Heartbeats are Watchdog alerts that reach the heartbeat receiver: a Watchdog routed anywhere else means the
/// routing is broken, which the switch should report rather than hide.
fn is_heartbeat(n: &Notification) -> bool {
    n.receiver == Receiver::Heartbeat && n.webhook.carries_heartbeat()
}

/// What a data file holds.
struct Replay {
    kept: Vec<Notification>,
    total_lines: usize,
    skipped: usize,
    max_id: u64,
    last_heartbeat_unix_ms: Option<u64>,
}

impl Replay {
    fn read(path: &Path, capacity: usize) -> io::Result<Self> {
        let mut replay = Replay {
            kept: Vec::new(),
            total_lines: 0,
            skipped: 0,
            max_id: 0,
            last_heartbeat_unix_ms: None,
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(replay),
            Err(e) => return Err(e),
        };
        let mut kept = VecDeque::new();
        for line in BufReader::new(file).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            replay.total_lines += 1;
            // A crash mid-append can leave a torn last line; skip it rather than refuse to start.
            let Ok(n) = serde_json::from_str::<Notification>(&line) else {
                replay.skipped += 1;
                continue;
            };
            replay.max_id = replay.max_id.max(n.id);
            if is_heartbeat(&n) {
                replay.last_heartbeat_unix_ms = replay.last_heartbeat_unix_ms.max(Some(n.received_at_unix_ms));
            }
            kept.push_back(n);
            if kept.len() > capacity {
                kept.pop_front();
            }
        }
        replay.kept = kept.into();
        Ok(replay)
    }
}

/// Replaces the data file with `notifications`, atomically (write a sibling, then rename over).
fn rewrite(path: &Path, notifications: &[Notification]) -> io::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let mut out = io::BufWriter::new(File::create(&tmp)?);
    for n in notifications {
        serde_json::to_writer(&mut out, n)?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(alertname: &str, status: Status, alerts: usize) -> WebhookPayload {
        let alert = serde_json::json!({"status": status, "labels": {"alertname": alertname}});
        serde_json::from_value(serde_json::json!({
            "status": status, "alerts": vec![alert; alerts], "commonLabels": {"alertname": alertname}
        }))
        .unwrap()
    }

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("inbox-store-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir.join("data").join("notifications.jsonl")
    }

    #[test]
    fn listing_is_newest_first_and_filters_combine() {
        let store = Store::in_memory(100, Duration::from_secs(180));
        store.record(Receiver::Pager, payload("RedisDown", Status::Firing, 1));
        store.record(Receiver::Ticket, payload("RedisTooManyClients", Status::Firing, 2));
        store.record(Receiver::Pager, payload("RedisDown", Status::Resolved, 1));

        let all: Vec<u64> = store.list(&Filter::default()).iter().map(|n| n.id).collect();
        assert_eq!(all, vec![3, 2, 1]);
        let firing_pages = store.list(&Filter {
            receiver: Some(Receiver::Pager),
            status: Some(Status::Firing),
            ..Filter::default()
        });
        assert_eq!(firing_pages.len(), 1);
        assert_eq!(firing_pages[0].alertname, "RedisDown");
        assert_eq!(
            store
                .list(&Filter {
                    alertname: Some("RedisDown".into()),
                    ..Filter::default()
                })
                .len(),
            2
        );
        assert_eq!(
            store.list(&Filter {
                after: Some(1),
                limit: Some(1),
                ..Filter::default()
            })[0]
                .id,
            3
        );
    }

    #[test]
    fn counters_count_notifications_and_the_alerts_inside_them() {
        let store = Store::in_memory(100, Duration::from_secs(180));
        store.record(Receiver::Ticket, payload("AppCacheErrors", Status::Firing, 3));
        store.record(Receiver::Ticket, payload("AppCacheErrors", Status::Resolved, 3));
        let counters = store.counters();
        assert_eq!(counters.notifications[&(Receiver::Ticket, Status::Firing)], 1);
        assert_eq!(counters.alerts[&(Receiver::Ticket, Status::Firing)], 3);
        assert_eq!(counters.alerts[&(Receiver::Ticket, Status::Resolved)], 3);
        assert_eq!(
            counters.notifications[&(Receiver::Pager, Status::Firing)],
            0,
            "zero series exist up front"
        );
    }

    #[test]
    fn memory_keeps_only_the_newest_notifications() {
        let store = Store::in_memory(2, Duration::from_secs(180));
        for _ in 0..5 {
            store.record(Receiver::Pager, payload("AppTargetDown", Status::Firing, 1));
        }
        let ids: Vec<u64> = store.list(&Filter::default()).iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![5, 4]);
        assert_eq!(store.counters().stored, 2);
    }

    #[test]
    fn the_heartbeat_goes_missing_after_max_age_with_a_grace_period_from_start() {
        let store = Store::with_start(10, Duration::from_secs(180), 1_000_000);
        assert!(
            store.heartbeat_at(1_000_000 + 180_000).healthy,
            "grace period after start"
        );
        assert!(
            !store.heartbeat_at(1_000_000 + 180_001).healthy,
            "no heartbeat ever, grace period over"
        );

        store.record_at(Receiver::Heartbeat, payload("Watchdog", Status::Firing, 1), 1_200_000);
        let beat = store.heartbeat_at(1_250_000);
        assert!(beat.healthy);
        assert_eq!(beat.age_seconds, Some(50.0));
        assert_eq!(beat.last_received_timestamp_seconds, Some(1_200.0));
        assert!(!store.heartbeat_at(1_200_000 + 181_000).healthy);
    }

    #[test]
    fn resolved_or_misrouted_watchdogs_are_not_heartbeats() {
        let store = Store::with_start(10, Duration::from_secs(180), 0);
        store.record_at(Receiver::Heartbeat, payload("Watchdog", Status::Resolved, 1), 10);
        store.record_at(Receiver::Pager, payload("Watchdog", Status::Firing, 1), 20);
        store.record_at(Receiver::Heartbeat, payload("RedisDown", Status::Firing, 1), 30);
        assert_eq!(store.heartbeat_at(40).last_received_at, None);
        assert_eq!(store.heartbeat_at(40).received_total, 0);
    }

    #[test]
    fn a_data_file_survives_a_restart_and_is_trimmed_to_capacity() {
        let path = temp_path("restart");
        {
            let store = Store::open(&path, 3, Duration::from_secs(180)).unwrap();
            store.record(Receiver::Heartbeat, payload("Watchdog", Status::Firing, 1));
            for _ in 0..4 {
                store.record(Receiver::Pager, payload("PostgresDown", Status::Firing, 1));
            }
        }
        // A torn write at the end must not stop the next start.
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"id\": 9, \"recei")
            .unwrap();

        let store = Store::open(&path, 3, Duration::from_secs(180)).unwrap();
        let ids: Vec<u64> = store.list(&Filter::default()).iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![5, 4, 3]);
        assert!(
            store.heartbeat().last_received_at.is_some(),
            "the last heartbeat is remembered"
        );
        assert_eq!(store.heartbeat().received_total, 0, "counters are per process");
        assert_eq!(
            store
                .record(Receiver::Ticket, payload("AppHighMemory", Status::Firing, 1))
                .id,
            6
        );
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 4, "trimmed to 3 on start, then one appended");
        fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }
}
