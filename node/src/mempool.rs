//! Transactions accepted and not yet committed: refuses a second submission of a pending id,
//! bounds how many may wait, and wakes everyone waiting for a transaction's commit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::types::{Block, TxId, TxResult};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    #[error(
        "transaction {0} is already pending: wait for its commit instead of submitting it again"
    )]
    AlreadyPending(TxId),
    #[error("{0} transactions are already waiting to be ordered: retry shortly")]
    Full(usize),
}

/// What a waiter learns when its transaction commits.
#[derive(Debug, Clone)]
pub struct Committed {
    pub block: u64,
    pub result: TxResult,
}

pub struct Mempool {
    capacity: usize,
    pending: Mutex<HashMap<TxId, Entry>>,
}

struct Entry {
    admitted: Instant,
    waiters: Vec<oneshot::Sender<Committed>>,
}

impl Mempool {
    pub fn new(capacity: usize) -> Mempool {
        Mempool {
            capacity,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TxId, Entry>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `id` as pending; with `wait`, also returns a receiver for its commit.
    pub fn admit(
        &self,
        id: TxId,
        wait: bool,
    ) -> Result<Option<oneshot::Receiver<Committed>>, MempoolError> {
        let mut pending = self.lock();
        if pending.contains_key(&id) {
            return Err(MempoolError::AlreadyPending(id));
        }
        if pending.len() >= self.capacity {
            return Err(MempoolError::Full(pending.len()));
        }
        let mut waiters = Vec::new();
        let receiver = wait.then(|| {
            let (sender, receiver) = oneshot::channel();
            waiters.push(sender);
            receiver
        });
        pending.insert(
            id,
            Entry {
                admitted: Instant::now(),
                waiters,
            },
        );
        Ok(receiver)
    }

    /// Forgets `id` without a commit (it could not be queued).
    pub fn abandon(&self, id: &TxId) {
        self.lock().remove(id);
    }

    /// Wakes the waiters of every transaction in `block`; returns how long each transaction
    /// that this peer admitted waited from admission to commit.
    pub fn committed(&self, block: &Block) -> Vec<Duration> {
        let mut pending = self.lock();
        let mut latencies = Vec::new();
        for result in &block.results {
            if let Some(entry) = pending.remove(&result.tx_id) {
                latencies.push(entry.admitted.elapsed());
                for waiter in entry.waiters {
                    let _ = waiter.send(Committed {
                        block: block.number(),
                        result: result.clone(),
                    });
                }
            }
        }
        latencies
    }

    /// Forgets pending ids that an ordered batch dropped (they were committed before).
    pub fn dropped(&self, ids: impl IntoIterator<Item = TxId>) {
        let mut pending = self.lock();
        for id in ids {
            pending.remove(&id);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether `id` is pending here.
    pub fn contains(&self, id: &TxId) -> bool {
        self.lock().contains_key(id)
    }

    /// How many more transactions it admits now (others may take the room first: `admit`
    /// checks again).
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.len())
    }

    /// The refusal `admit` gives when there is no room.
    pub fn full(&self) -> MempoolError {
        MempoolError::Full(self.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_duplicates_and_bounds_size() {
        let pool = Mempool::new(2);
        let a = TxId([1; 32]);
        assert_eq!(pool.room(), 2);
        pool.admit(a, false).expect("first");
        assert_eq!(pool.room(), 1);
        assert!(pool.contains(&a));
        assert!(matches!(pool.admit(a, true), Err(MempoolError::AlreadyPending(id)) if id == a));
        pool.admit(TxId([2; 32]), false).expect("second");
        assert_eq!(pool.room(), 0);
        assert_eq!(pool.full(), MempoolError::Full(2));
        assert!(matches!(
            pool.admit(TxId([3; 32]), false),
            Err(MempoolError::Full(2))
        ));
        pool.abandon(&a);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.room(), 1);
    }
}
