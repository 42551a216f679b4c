//! Write admission: one write per key at a time goes to Postgres; the others wait their turn here, in memory.
//!
//! Writers of one key serialise on its row lock anyway. Without admission each of them would hold a pooled
//! connection while it waits for that lock, so one row locked by another session (a long transaction, a manual
//! `SELECT … FOR UPDATE`) takes the whole pool and with it every other request. With admission a hot key holds
//! at most one connection; its other writers wait without one and give up after the wait they are allowed (then
//! nothing was sent, so their write was not applied).
//!
//! A key has an entry only while a write of it is in flight or waiting; the table is bounded, and a write that
//! finds it full is refused like a write that waited too long. Turns are per process: several instances writing
//! one hot key hold one connection each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Mutex as TurnLock, OwnedMutexGuard};

/// Most keys with a write in flight or waiting.
pub const MAX_KEYS: usize = 10_000;

/// Why a write was not admitted. Either way it was never sent to Postgres.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Earlier writes of the same key kept it busy for the whole wait.
    #[error("earlier writes of the same key kept it busy for {0:?}")]
    Busy(Duration),
    /// Writes of too many different keys are in flight.
    #[error("writes of more than {0} keys are in flight")]
    Full(usize),
}

/// The per-key turns.
pub struct Admission {
    turns: Mutex<HashMap<String, Arc<TurnLock<()>>>>,
    max_keys: usize,
}

/// A key's turn to write (or a place in its queue). The key's entry goes when the last of them is dropped.
pub struct Turn<'a> {
    admission: &'a Admission,
    key: String,
    lock: Option<Arc<TurnLock<()>>>,
    held: Option<OwnedMutexGuard<()>>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission::with_max_keys(MAX_KEYS)
    }
}

impl Admission {
    /// A table of at most `max_keys` keys.
    pub fn with_max_keys(max_keys: usize) -> Self {
        Admission {
            turns: Mutex::new(HashMap::new()),
            max_keys,
        }
    }

    /// Waits at most `wait` for `key`'s turn. Turns are handed out in the order writers asked for them.
    pub async fn turn(&self, key: &str, wait: Duration) -> Result<Turn<'_>, Refused> {
        let lock = {
            let mut turns = self.lock();
            match turns.get(key) {
                Some(lock) => lock.clone(),
                None if turns.len() >= self.max_keys => return Err(Refused::Full(self.max_keys)),
                None => {
                    let lock = Arc::new(TurnLock::new(()));
                    turns.insert(key.to_owned(), lock.clone());
                    lock
                }
            }
        };
        let mut turn = Turn {
            admission: self,
            key: key.to_owned(),
            lock: Some(lock.clone()),
            held: None,
        };
        let acquired = tokio::time::timeout(wait, lock.lock_owned()).await;
        match acquired {
            Ok(held) => {
                turn.held = Some(held);
                Ok(turn)
            }
            // Dropping the turn leaves the queue (and the table, if it was the last).
            Err(_) => Err(Refused::Busy(wait)),
        }
    }

    /// Keys with a write in flight or waiting.
    pub fn keys_in_flight(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TurnLock<()>>>> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Release the turn first: the guard holds a reference of its own.
        self.held.take();
        let Some(lock) = self.lock.take() else { return };
        let mut turns = self.admission.lock();
        // References are only taken under the table's lock, so the count cannot grow meanwhile: two (the table's
        // and this one) means nobody else holds or waits for this key.
        if Arc::strong_count(&lock) == 2 {
            turns.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn one_writer_per_key_at_a_time_and_other_keys_are_not_held_up() {
        let admission = Admission::default();
        let first = admission.turn("a", WAIT).await.unwrap();
        assert!(matches!(admission.turn("a", WAIT).await, Err(Refused::Busy(_))));
        let other = admission.turn("b", WAIT).await.unwrap();
        drop(first);
        let again = admission.turn("a", WAIT).await.unwrap();
        drop((other, again));
        assert_eq!(admission.keys_in_flight(), 0, "entries go once unused");
    }

    #[tokio::test]
    async fn a_waiter_gets_the_turn_when_it_is_released() {
        let admission = Arc::new(Admission::default());
        let first = admission.turn("a", WAIT).await.unwrap();
        let waiter = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.turn("a", Duration::from_secs(5)).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(admission.keys_in_flight(), 1);
        drop(first);
        assert!(waiter.await.unwrap());
        assert_eq!(admission.keys_in_flight(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_entry_behind() {
        let admission = Admission::default();
        let first = admission.turn("a", WAIT).await.unwrap();
        assert!(admission.turn("a", WAIT).await.is_err());
        assert_eq!(admission.keys_in_flight(), 1);
        drop(first);
        assert_eq!(admission.keys_in_flight(), 0);
    }

    #[tokio::test]
    async fn the_table_is_bounded() {
        let admission = Admission::with_max_keys(2);
        let _a = admission.turn("a", WAIT).await.unwrap();
        let _b = admission.turn("b", WAIT).await.unwrap();
        assert!(matches!(admission.turn("c", WAIT).await, Err(Refused::Full(2))));
        // A key already in the table may still queue.
        assert!(matches!(admission.turn("a", WAIT).await, Err(Refused::Busy(_))));
    }
}
