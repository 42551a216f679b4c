//! Keys whose cache entry this process knows may be older than Postgres, and which no epoch bump has covered yet.
//!
//! A key is marked when a write of it could not be followed by a cache update nor by an epoch bump, or when the
//! outcome of a write of it is unknown (it may still commit). While marked, reads of it on this process skip the
//! cache. A mark carries the instant after which a bump covers it: at once for a committed write; for a write that
//! may still commit, only once it no longer can. The background task bumps the epoch when a mark is due and clears
//! the marks that bump covers. This is best effort: the marks live in this process only, and are lost with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Most keys remembered one by one; beyond it every key counts as stale until a bump covers them all.
pub const MAX_KEYS: usize = 10_000;

/// The marks.
#[derive(Default)]
pub struct StaleKeys {
    inner: Mutex<Inner>,
    /// Number of marks (plus one when overflowed): lets the common case (nothing stale) skip the lock.
    size: AtomicUsize,
}

#[derive(Default)]
struct Inner {
    /// Key → the instant after which a bump covers it.
    keys: HashMap<String, Instant>,
    /// When too many keys were marked: the latest instant after which a bump covers them all.
    overflowed: Option<Instant>,
}

impl StaleKeys {
    /// Whether reads of `key` must skip the cache.
    pub fn contains(&self, key: &str) -> bool {
        if self.size.load(Ordering::Acquire) == 0 {
            return false;
        }
        let inner = self.lock();
        inner.overflowed.is_some() || inner.keys.contains_key(key)
    }

    /// Marks `key` until a bump that starts after `covered_after` has run.
    pub fn insert(&self, key: &str, covered_after: Instant) {
        let mut inner = self.lock();
        if let Some(overflowed) = &mut inner.overflowed {
            *overflowed = (*overflowed).max(covered_after);
        } else if inner.keys.len() >= MAX_KEYS && !inner.keys.contains_key(key) {
            tracing::warn!(
                max = MAX_KEYS,
                "too many stale cache entries to track; the cache is skipped until the next epoch bump"
            );
            let latest = inner.keys.values().copied().fold(covered_after, Instant::max);
            inner.keys.clear();
            inner.overflowed = Some(latest);
        } else {
            let entry = inner.keys.entry(key.to_owned()).or_insert(covered_after);
            *entry = (*entry).max(covered_after);
        }
        self.update_size(&inner);
    }

    /// Whether some mark waits for a bump that may start now.
    pub fn due(&self, now: Instant) -> bool {
        if self.size.load(Ordering::Acquire) == 0 {
            return false;
        }
        let inner = self.lock();
        inner.overflowed.is_some_and(|at| at < now) || inner.keys.values().any(|at| *at < now)
    }

    /// Clears the marks a bump that started at `bump_started` covers.
    pub fn clear_covered(&self, bump_started: Instant) -> usize {
        let mut inner = self.lock();
        let before = inner.keys.len() + usize::from(inner.overflowed.is_some());
        inner.keys.retain(|_, at| *at >= bump_started);
        if inner.overflowed.is_some_and(|at| at < bump_started) {
            inner.overflowed = None;
        }
        let cleared = before - inner.keys.len() - usize::from(inner.overflowed.is_some());
        self.update_size(&inner);
        cleared
    }

    fn update_size(&self, inner: &Inner) {
        self.size.store(
            inner.keys.len() + usize::from(inner.overflowed.is_some()),
            Ordering::Release,
        );
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_mark_is_cleared_only_by_a_bump_that_started_after_it_was_due() {
        let stale = StaleKeys::default();
        let t0 = Instant::now();
        assert!(!stale.contains("a") && !stale.due(t0));
        stale.insert("a", t0);
        stale.insert("later", t0 + Duration::from_secs(2));
        assert!(stale.contains("a") && stale.contains("later") && !stale.contains("b"));
        let t1 = t0 + Duration::from_millis(1);
        assert!(stale.due(t1));
        assert_eq!(stale.clear_covered(t1), 1);
        assert!(!stale.contains("a") && stale.contains("later"));
        assert!(!stale.due(t1), "the other mark may still be shadowed by a late commit");
        assert_eq!(stale.clear_covered(t0 + Duration::from_secs(3)), 1);
        assert!(!stale.contains("later"));
    }

    #[test]
    fn a_key_marked_again_waits_for_its_latest_mark() {
        let stale = StaleKeys::default();
        let t0 = Instant::now();
        stale.insert("a", t0);
        stale.insert("a", t0 + Duration::from_secs(1)); // marked again while a bump was in flight
        assert_eq!(stale.clear_covered(t0 + Duration::from_millis(1)), 0);
        assert!(stale.contains("a"));
    }

    #[test]
    fn too_many_marks_make_every_key_stale_until_one_bump_covers_them_all() {
        let stale = StaleKeys::default();
        let t0 = Instant::now();
        for i in 0..=MAX_KEYS {
            stale.insert(&i.to_string(), t0);
        }
        stale.insert("late", t0 + Duration::from_secs(1));
        assert!(stale.contains("never-written"));
        assert_eq!(stale.clear_covered(t0 + Duration::from_millis(1)), 0);
        assert!(stale.contains("never-written"));
        assert_eq!(stale.clear_covered(t0 + Duration::from_secs(2)), 1);
        assert!(!stale.contains("never-written"));
    }
}
