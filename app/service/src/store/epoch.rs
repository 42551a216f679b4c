//! The cache epoch as this process knows it, and bumps shared between writes.
//!
//! The epoch lives in Postgres (`kv_cache_epoch`); this is the process's copy. It only ever moves forward: every
//! value read from Postgres (at startup, by the background refresh, after each write, as a bump's result) goes
//! through [`Epoch::observe`], which keeps the larger. Until the first value arrives the epoch is unknown and reads
//! do not use the cache.
//!
//! Bumps are coalesced group-commit style: a write whose cache update failed needs a bump that *started after its
//! commit*, not one of its own. One bump runs at a time (a mutex); a writer that gets the mutex after another
//! bump finished takes that bump's result if it started after the writer's commit, and runs a new one only
//! otherwise. Under a Redis outage at any write rate this runs about two bumps per bump duration, not one per
//! write.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::StoreError;

/// The current epoch and the latest bump.
#[derive(Default)]
pub struct Epoch {
    /// 0 while unknown (epochs start at the creation time of the table in microseconds, never 0).
    current: AtomicI64,
    last_bump: tokio::sync::Mutex<Option<Bump>>,
}

/// A bump that ran: when it started, and what it gave.
struct Bump {
    started: Instant,
    result: Result<i64, Arc<StoreError>>,
}

impl Epoch {
    /// The epoch, if it has been read from Postgres since startup.
    pub fn current(&self) -> Option<i64> {
        match self.current.load(Ordering::Acquire) {
            0 => None,
            epoch => Some(epoch),
        }
    }

    /// Takes in an epoch read from Postgres; returns the epoch now current (never older than before).
    pub fn observe(&self, epoch: i64) -> i64 {
        self.current.fetch_max(epoch, Ordering::AcqRel).max(epoch)
    }

    /// Makes sure the epoch was bumped by a bump that started after `committed`: runs `bump` unless such a bump
    /// already ran (then shares its result, success or failure). Returns the epoch the bump gave and when that
    /// bump started.
    pub async fn bump_after<F, Fut>(&self, committed: Instant, bump: F) -> Result<(i64, Instant), Arc<StoreError>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<i64, StoreError>>,
    {
        let mut last = self.last_bump.lock().await;
        if let Some(done) = last.as_ref().filter(|b| b.started > committed) {
            return done.result.clone().map(|epoch| (epoch, done.started));
        }
        let started = Instant::now();
        let result = bump().await.map_err(Arc::new);
        if let Ok(epoch) = result {
            // At once, before any write relying on this bump is acknowledged.
            self.observe(epoch);
        }
        *last = Some(Bump {
            started,
            result: result.clone(),
        });
        result.map(|epoch| (epoch, started))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;
    use crate::store::Unavailable;

    #[test]
    fn the_epoch_is_unknown_until_observed_and_never_goes_back() {
        let epoch = Epoch::default();
        assert_eq!(epoch.current(), None);
        assert_eq!(epoch.observe(5), 5);
        assert_eq!(epoch.observe(3), 5);
        assert_eq!(epoch.current(), Some(5));
    }

    #[tokio::test]
    async fn a_bump_that_started_after_a_commit_covers_it_and_one_before_does_not() {
        let epoch = Epoch::default();
        let runs = AtomicUsize::new(0);
        let bump = || async {
            let n = runs.fetch_add(1, Ordering::SeqCst) as i64;
            Ok(10 + n)
        };
        let committed_before = Instant::now();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let (first, _) = epoch.bump_after(committed_before, bump).await.unwrap();
        assert_eq!((first, epoch.current()), (10, Some(10)));
        // Committed before that bump started: covered, no new bump.
        assert_eq!(epoch.bump_after(committed_before, bump).await.unwrap().0, 10);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Committed after it started: a bump of its own.
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(epoch.bump_after(Instant::now(), bump).await.unwrap().0, 11);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_writes_share_a_bump() {
        let epoch = Arc::new(Epoch::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let committed = Instant::now();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let writers: Vec<_> = (0..50)
            .map(|_| {
                let (epoch, runs) = (epoch.clone(), runs.clone());
                tokio::spawn(async move {
                    epoch
                        .bump_after(committed, || async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok(7)
                        })
                        .await
                        .unwrap()
                        .0
                })
            })
            .collect();
        for writer in writers {
            assert_eq!(writer.await.unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_bump_fails_the_writes_it_covered_and_leaves_the_epoch() {
        let epoch = Epoch::default();
        epoch.observe(4);
        let committed = Instant::now();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let failing = || async { Err(StoreError::Unavailable(Unavailable::SchemaNotReady)) };
        assert!(epoch.bump_after(committed, failing).await.is_err());
        let unused = || async { Ok(99) };
        assert!(epoch.bump_after(committed, unused).await.is_err(), "shares the failure");
        assert_eq!(epoch.current(), Some(4));
    }
}
