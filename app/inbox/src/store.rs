//! The notifications the inbox has received: a bounded in-memory log per receiver (newest kept), the counters
//! behind its metrics, the Watchdog heartbeat state, and the optional JSON-lines file that survives a restart.
//!
//! Each receiver has a ring of its own, held to a count and a byte budget: a flood into one receiver (a noisy
//! ticket, a broken sender) drops that receiver's oldest notifications, never another receiver's pages.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::limits::{cut, DATA_FILE_SLACK_BYTES, MAX_BYTES_PER_RECEIVER, MAX_FIELD_BYTES};
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
    /// The payload as Alertmanager sent it, cut to the stored bounds ([`WebhookPayload::bounded`]).
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
    /// Alerts inside those calls (all of them, also those beyond the stored bound), by receiver and alert status.
    pub alerts: BTreeMap<(Receiver, Status), u64>,
    /// Appends to the data file that failed.
    pub data_file_write_errors: u64,
    /// Notifications held in memory, all receivers together.
    pub stored: usize,
}

/// Shared by every request handler.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    /// Notifications kept per receiver.
    capacity: usize,
    heartbeat_max_age: Duration,
    started_unix_ms: u64,
}

#[derive(Debug)]
struct Inner {
    rings: BTreeMap<Receiver, Ring>,
    next_id: u64,
    counters: Counters,
    last_heartbeat_unix_ms: Option<u64>,
    heartbeats_total: u64,
    data_file: Option<DataFile>,
}

/// One receiver's notifications, oldest first, with the size of each in the data file's JSON form.
#[derive(Debug, Default)]
struct Ring {
    items: VecDeque<(Notification, usize)>,
    bytes: usize,
}

impl Ring {
    /// Appends, then drops the oldest while the ring is over `capacity` notifications or over its byte budget
    /// (the newest always stays, however large: the body limit bounds it).
    fn push(&mut self, notification: Notification, bytes: usize, capacity: usize) {
        self.items.push_back((notification, bytes));
        self.bytes += bytes;
        while self.items.len() > capacity || (self.bytes > MAX_BYTES_PER_RECEIVER && self.items.len() > 1) {
            if let Some((_, dropped)) = self.items.pop_front() {
                self.bytes -= dropped;
            }
        }
    }
}

/// The append-only data file and how much it holds.
#[derive(Debug)]
struct DataFile {
    path: PathBuf,
    file: File,
    bytes: u64,
}

fn empty_rings() -> BTreeMap<Receiver, Ring> {
    Receiver::ALL.iter().map(|r| (*r, Ring::default())).collect()
}

/// A notification's line in the data file, without the newline; its length is what the byte budget counts.
fn to_line(notification: &Notification) -> Vec<u8> {
    serde_json::to_vec(notification).expect("a notification always serializes")
}

impl Store {
    /// A store that keeps at most `capacity` notifications per receiver, in memory only.
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
                rings: empty_rings(),
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

    /// A store backed by `path`: replays each receiver's newest notifications (and the last heartbeat) from it,
    /// rewrites the file to those when it holds more (or unreadable lines), then appends every new notification.
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
        let kept: usize = replay.rings.values().map(|r| r.items.len()).sum();
        if replay.total_lines > kept || replay.skipped > 0 {
            rewrite(path, &replay.rings)?;
        }
        {
            let mut inner = store.lock();
            inner.next_id = replay.max_id + 1;
            inner.last_heartbeat_unix_ms = replay.last_heartbeat_unix_ms;
            inner.rings = replay.rings;
            inner.counters.stored = kept;
            // The notifications are the on-call's alone, whatever the umask of whoever starts the inbox.
            let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
            let bytes = file.metadata()?.len();
            inner.data_file = Some(DataFile {
                path: path.to_path_buf(),
                file,
                bytes,
            });
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
        // Counted before the payload is cut to its bounds: the metrics count every alert received.
        for alert in &webhook.alerts {
            *inner.counters.alerts.entry((receiver, alert.status)).or_default() += 1;
        }
        let webhook = webhook.bounded();
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
        if is_heartbeat(&notification) {
            inner.last_heartbeat_unix_ms = Some(now_unix_ms);
            inner.heartbeats_total += 1;
        }
        let mut line = to_line(&notification);
        line.push(b'\n');
        let bytes = line.len();
        if let Some(data) = inner.data_file.as_mut() {
            // A small synchronous append under the lock keeps file order equal to id order; webhooks arrive a
            // few per second at most, so this never holds up the runtime noticeably.
            match data.file.write_all(&line) {
                Ok(()) => data.bytes += bytes as u64,
                Err(error) => {
                    tracing::error!(%error, id = notification.id, "could not append the notification to the data file");
                    inner.counters.data_file_write_errors += 1;
                }
            }
        }
        let capacity = self.capacity;
        inner
            .rings
            .entry(receiver)
            .or_default()
            .push(notification.clone(), bytes, capacity);
        inner.counters.stored = inner.rings.values().map(|r| r.items.len()).sum();
        compact_if_grown(&mut inner);
        notification
    }

    /// The notifications matching `filter`, newest first.
    pub fn list(&self, filter: &Filter) -> Vec<Notification> {
        let inner = self.lock();
        let mut matching: Vec<&Notification> = inner
            .rings
            .iter()
            .filter(|(r, _)| filter.receiver.is_none_or(|wanted| **r == wanted))
            .flat_map(|(_, ring)| ring.items.iter().map(|(n, _)| n))
            .filter(|n| filter.after.is_none_or(|after| n.id > after))
            .filter(|n| filter.status.is_none_or(|s| n.status == s))
            .filter(|n| filter.alertname.as_deref().is_none_or(|a| n.webhook.mentions_alert(a)))
            .collect();
        matching.sort_unstable_by_key(|n| std::cmp::Reverse(n.id));
        matching
            .into_iter()
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

/// Rewrites the data file to what memory holds once it has grown past twice that (plus some slack): dropped
/// notifications would otherwise stay on disk until the next restart, however many a flood appended.
fn compact_if_grown(inner: &mut Inner) {
    let held: u64 = inner.rings.values().map(|r| r.bytes as u64).sum();
    let Some(data) = inner.data_file.as_mut() else {
        return;
    };
    if data.bytes <= 2 * held + DATA_FILE_SLACK_BYTES {
        return;
    }
    let reopened = rewrite(&data.path, &inner.rings).and_then(|()| {
        let file = OpenOptions::new().append(true).open(&data.path)?;
        let bytes = file.metadata()?.len();
        Ok((file, bytes))
    });
    match reopened {
        Ok((file, bytes)) => {
            data.file = file;
            data.bytes = bytes;
        }
        Err(error) => {
            // The old handle still appends (to the old file if the rename failed); try again after the next one.
            tracing::error!(%error, file = %data.path.display(), "could not compact the data file");
            inner.counters.data_file_write_errors += 1;
        }
    }
}

/// Heartbeats are Watchdog alerts that reach the heartbeat receiver: a Watchdog routed anywhere else means the
/// routing is broken, which the switch should report rather than hide.
fn is_heartbeat(n: &Notification) -> bool {
    n.receiver == Receiver::Heartbeat && n.webhook.carries_heartbeat()
}

/// What a data file holds.
struct Replay {
    rings: BTreeMap<Receiver, Ring>,
    total_lines: usize,
    skipped: usize,
    max_id: u64,
    last_heartbeat_unix_ms: Option<u64>,
}

impl Replay {
    fn read(path: &Path, capacity: usize) -> io::Result<Self> {
        let mut replay = Replay {
            rings: empty_rings(),
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
        for line in BufReader::new(file).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            replay.total_lines += 1;
            // A crash mid-append can leave a torn last line; skip it rather than refuse to start.
            let Ok(mut n) = serde_json::from_str::<Notification>(&line) else {
                replay.skipped += 1;
                continue;
            };
            // A file written before the stored bounds existed is held to them too.
            n.webhook = n.webhook.bounded();
            cut(&mut n.alertname, MAX_FIELD_BYTES);
            replay.max_id = replay.max_id.max(n.id);
            if is_heartbeat(&n) {
                replay.last_heartbeat_unix_ms = replay.last_heartbeat_unix_ms.max(Some(n.received_at_unix_ms));
            }
            let bytes = to_line(&n).len() + 1;
            replay.rings.entry(n.receiver).or_default().push(n, bytes, capacity);
        }
        Ok(replay)
    }
}

/// Replaces the data file with the notifications of `rings`, in id order, atomically (write a sibling, then
/// rename over).
fn rewrite(path: &Path, rings: &BTreeMap<Receiver, Ring>) -> io::Result<()> {
    let mut notifications: Vec<&Notification> = rings.values().flat_map(|r| r.items.iter().map(|(n, _)| n)).collect();
    notifications.sort_unstable_by_key(|n| n.id);
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let mut out = io::BufWriter::new(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?,
    );
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
    fn each_receiver_keeps_only_its_own_newest_notifications() {
        let store = Store::in_memory(2, Duration::from_secs(180));
        store.record(Receiver::Pager, payload("PostgresDown", Status::Firing, 1));
        for _ in 0..5 {
            store.record(Receiver::Ticket, payload("AppHighMemory", Status::Firing, 1));
        }
        let ids: Vec<u64> = store.list(&Filter::default()).iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![6, 5, 1], "the ticket flood drops only tickets");
        assert_eq!(store.counters().stored, 3);
        assert_eq!(
            store
                .list(&Filter {
                    limit: Some(2),
                    ..Filter::default()
                })
                .iter()
                .map(|n| n.id)
                .collect::<Vec<_>>(),
            vec![6, 5]
        );
    }

    #[test]
    fn a_receiver_is_held_to_its_byte_budget_too() {
        let store = Store::in_memory(10_000, Duration::from_secs(180));
        let mut big = payload("AppHighMemory", Status::Firing, 1);
        // About 40 KiB per notification: a 32 MiB budget holds about 800 of them.
        for i in 0..10 {
            big.alerts[0]
                .annotations
                .insert(format!("a{i}"), "x".repeat(MAX_FIELD_BYTES));
        }
        for _ in 0..1000 {
            store.record(Receiver::Ticket, big.clone());
        }
        let held = store.counters().stored;
        assert!((700..900).contains(&held), "{held} notifications held");
        let inner = store.lock();
        assert!(inner.rings[&Receiver::Ticket].bytes <= MAX_BYTES_PER_RECEIVER);
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
    fn a_data_file_survives_a_restart_and_is_trimmed_to_each_receivers_capacity() {
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
        assert_eq!(ids, vec![5, 4, 3, 1], "three pages and the heartbeat");
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
        assert_eq!(lines, 5, "trimmed to 4 on start, then one appended");
        fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }

    #[test]
    fn the_data_file_is_compacted_once_it_outgrows_memory() {
        let path = temp_path("compact");
        let store = Store::open(&path, 2, Duration::from_secs(180)).unwrap();
        let mut big = payload("AppHighMemory", Status::Firing, 1);
        big.alerts[0]
            .annotations
            .insert("description".into(), "x".repeat(MAX_FIELD_BYTES));
        // Each is over 4 KiB; 1,000 of them would be over 4 MiB on disk without compaction.
        for _ in 0..1000 {
            store.record(Receiver::Ticket, big.clone());
        }
        store.record(Receiver::Pager, payload("PostgresDown", Status::Firing, 1));
        let size = fs::metadata(&path).unwrap().len();
        assert!(size <= 2 * 3 * 5000 + DATA_FILE_SLACK_BYTES, "{size} bytes on disk");
        drop(store);
        let reopened = Store::open(&path, 2, Duration::from_secs(180)).unwrap();
        let ids: Vec<u64> = reopened.list(&Filter::default()).iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![1001, 1000, 999]);
        fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }
}
