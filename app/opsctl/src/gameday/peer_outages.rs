//! Which Alertmanager peers the drills have taken out of the cluster, and when. Alertmanager's peers each wait
//! their position in the cluster × `--cluster.peer-timeout` before they notify (and send nothing the notification
//! log shows sent already): while a peer ahead of the others is stopped or cut off, and the others still count it
//! in, the first peer left waits that long. So a notification's bound grows by the peer timeout for each peer that
//! was out while it was on its way, whichever scenario took the peer out.

use std::sync::Mutex;

/// One drill's peers out: from when, until when (open while the drill holds them), how many.
#[derive(Debug, Clone, Copy)]
struct Outage {
    from_ms: u64,
    until_ms: Option<u64>,
    peers: u32,
}

#[derive(Debug, Default)]
pub struct PeerOutages(Mutex<Vec<Outage>>);

/// Ends an outage when dropped: a drill that fails half-way still ends the outage it began.
pub struct OutageGuard<'a> {
    outages: &'a PeerOutages,
    index: usize,
    now: fn() -> u64,
}

impl Drop for OutageGuard<'_> {
    fn drop(&mut self) {
        let mut list = self.outages.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = list.get_mut(self.index) {
            o.until_ms.get_or_insert((self.now)());
        }
    }
}

impl PeerOutages {
    /// `peers` are out from now until the guard is dropped.
    pub fn begin(&self, peers: u32, now: fn() -> u64) -> OutageGuard<'_> {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.push(Outage {
            from_ms: now(),
            until_ms: None,
            peers,
        });
        OutageGuard {
            outages: self,
            index: list.len() - 1,
            now,
        }
    }

    /// How many peers were out at some moment of `[from_ms, to_ms]`, at most: the sum over every outage that
    /// overlaps the window (two overlapping drills count both), an upper bound of the position a notifying peer had.
    pub fn out_during(&self, from_ms: u64, to_ms: u64) -> u32 {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .filter(|o| o.from_ms <= to_ms && o.until_ms.is_none_or(|until| until >= from_ms))
            .map(|o| o.peers)
            .sum()
    }
}

/// How many Alertmanager peers a `supervisorctl` program list names (`alertmanager:alertmanager-1 app:app-2`).
pub fn alertmanager_peers(programs: &str) -> u32 {
    programs
        .split_whitespace()
        .filter(|p| p.starts_with("alertmanager:"))
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static CLOCK: AtomicU64 = AtomicU64::new(0);
    fn clock() -> u64 {
        CLOCK.load(Ordering::SeqCst)
    }

    #[test]
    fn an_outage_counts_in_every_window_it_overlaps_and_none_it_does_not() {
        let outages = PeerOutages::default();
        CLOCK.store(1_000, Ordering::SeqCst);
        let guard = outages.begin(2, clock);
        // Open: counts in any window from its start on.
        assert_eq!(outages.out_during(0, 999), 0);
        assert_eq!(outages.out_during(500, 1_000), 2);
        assert_eq!(outages.out_during(50_000, 60_000), 2);
        CLOCK.store(5_000, Ordering::SeqCst);
        drop(guard);
        assert_eq!(outages.out_during(4_000, 4_500), 2);
        assert_eq!(outages.out_during(5_000, 9_000), 2);
        assert_eq!(outages.out_during(5_001, 9_000), 0);
        // Overlapping drills add up.
        let _one = outages.begin(1, clock);
        assert_eq!(outages.out_during(0, 10_000), 3);
    }

    #[test]
    fn only_alertmanager_programs_count_as_peers() {
        assert_eq!(
            alertmanager_peers("alertmanager:alertmanager-1 alertmanager:alertmanager-2"),
            2
        );
        assert_eq!(alertmanager_peers("prometheus:prometheus-2"), 0);
        assert_eq!(alertmanager_peers("alertmanager:alertmanager-3 app:app-1"), 1);
    }
}
