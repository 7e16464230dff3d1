//! Commit times from the commit stream: one validator's block stream (`StreamBlocks`), each
//! transaction of each block matched against the step's submitted transactions. A
//! transaction's latency is from the moment the load generator sent it to the moment its block
//! reached the bench.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::{Context, Result};
use futures::StreamExt;
use weft_proto::{TxId, WeftClient, pb};

/// Nanoseconds since the bench's epoch, plus one (0 means "not yet").
pub type Stamp = u64;

/// The transactions of one step: when each was sent and when it committed.
pub struct Tracker {
    epoch: Instant,
    index: HashMap<[u8; 32], usize>,
    sent: Vec<AtomicU64>,
    committed: Vec<AtomicU64>,
    /// Committed with a status other than VALID.
    pub invalid: AtomicUsize,
    /// Committed (any status).
    pub committed_count: AtomicUsize,
    /// Why the first transaction that committed as not VALID failed.
    pub first_invalid: std::sync::Mutex<Option<String>>,
    /// Blocks that held at least one of this step's transactions, and how many they held
    /// (of any step).
    pub blocks: AtomicUsize,
    pub block_transactions: AtomicUsize,
}

impl Tracker {
    pub fn new(epoch: Instant, ids: impl Iterator<Item = TxId>) -> Tracker {
        let index: HashMap<[u8; 32], usize> = ids.enumerate().map(|(i, id)| (id.0, i)).collect();
        let count = index.len();
        Tracker {
            epoch,
            index,
            sent: (0..count).map(|_| AtomicU64::new(0)).collect(),
            committed: (0..count).map(|_| AtomicU64::new(0)).collect(),
            invalid: AtomicUsize::new(0),
            committed_count: AtomicUsize::new(0),
            first_invalid: std::sync::Mutex::new(None),
            blocks: AtomicUsize::new(0),
            block_transactions: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn at(&self, instant: Instant) -> Stamp {
        instant.saturating_duration_since(self.epoch).as_nanos() as u64 + 1
    }

    pub fn mark_sent_at(&self, i: usize, at: Instant) {
        self.sent[i].store(self.at(at), Ordering::Relaxed);
    }

    /// Stamps a committed transaction; whether it is one of this step's.
    fn mark_committed(&self, tx_id: &[u8], failure: Option<&str>, at: Stamp) -> bool {
        let Ok(key) = <[u8; 32]>::try_from(tx_id) else {
            return false;
        };
        let Some(&i) = self.index.get(&key) else {
            return false;
        };
        let first = self.committed[i]
            .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if first {
            self.committed_count.fetch_add(1, Ordering::Relaxed);
            if let Some(reason) = failure {
                self.invalid.fetch_add(1, Ordering::Relaxed);
                self.first_invalid
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(|| reason.to_string());
            }
        }
        true
    }

    /// (sent, committed) stamps of every transaction; 0 where it did not happen.
    pub fn stamps(&self) -> Vec<(Stamp, Stamp)> {
        self.sent
            .iter()
            .zip(&self.committed)
            .map(|(s, c)| (s.load(Ordering::Relaxed), c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The tracker blocks are matched against (swapped per step).
pub type Current = Arc<RwLock<Option<Arc<Tracker>>>>;

/// Follows `client`'s block stream from `from_height` and stamps each committed transaction
/// of the current tracker; ends with the stream (an error says why).
pub async fn follow(client: WeftClient, from_height: u64, current: Current) -> Result<()> {
    let mut stream = client
        .raw()
        .stream_blocks(pb::StreamBlocksRequest {
            from_height,
            certified_only: false,
        })
        .await
        .context("cannot open the commit stream (StreamBlocks)")?
        .into_inner();
    while let Some(block) = stream.next().await {
        let block = block.context("the commit stream broke")?;
        let arrived = Instant::now();
        let tracker = current
            .read()
            .map_err(|_| anyhow::anyhow!("tracker lock poisoned"))?
            .clone();
        if let Some(tracker) = tracker {
            let at = tracker.at(arrived);
            let mut ours = false;
            for result in &block.results {
                let failure = (result.status != pb::TxStatus::Valid as i32)
                    .then(|| format!("{:?}: {}", result.status(), result.message));
                ours |= tracker.mark_committed(&result.tx_id, failure.as_deref(), at);
            }
            if ours {
                tracker.blocks.fetch_add(1, Ordering::Relaxed);
                tracker
                    .block_transactions
                    .fetch_add(block.results.len(), Ordering::Relaxed);
            }
        }
    }
    anyhow::bail!("the commit stream ended")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_counted_once_and_only_for_known_ids() {
        let epoch = Instant::now();
        let ids = [TxId([1; 32]), TxId([2; 32])];
        let tracker = Tracker::new(epoch, ids.into_iter());
        tracker.mark_sent_at(0, Instant::now());
        let at = tracker.at(Instant::now());
        tracker.mark_committed(&[1; 32], None, at);
        tracker.mark_committed(&[1; 32], None, at + 5);
        tracker.mark_committed(&[9; 32], None, at);
        tracker.mark_committed(&[2; 31], None, at);
        tracker.mark_committed(&[2; 32], Some("refused"), at);
        assert_eq!(tracker.committed_count.load(Ordering::Relaxed), 2);
        assert_eq!(tracker.invalid.load(Ordering::Relaxed), 1);
        assert_eq!(
            tracker.first_invalid.lock().expect("lock").as_deref(),
            Some("refused")
        );
        let stamps = tracker.stamps();
        assert!(stamps[0].0 > 0 && stamps[0].1 == at);
        assert_eq!(stamps[1].0, 0, "never sent");
    }
}
