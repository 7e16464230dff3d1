//! The replica's durable record: every `Persist` action and the latest stable checkpoint, in
//! the store's consensus column, each write synced before the driver runs the next action.
//! Invariant: what the replica signed survives a crash of the process or the machine, so a
//! restarted replica never signs a conflicting digest (I6); the record stays within the window
//! because the stable checkpoint prunes it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::pbft::{PersistRecord, PersistedState, Phase, Sequence, StableCheckpoint, View};
use crate::network::wire::{Wire, WireError};
use crate::storage::{ConsensusWrite, Store, StoreError};
use crate::types::Transaction;

const RECORD_PREFIX: &[u8] = b"pbft/record/";
const STABLE_KEY: &[u8] = b"pbft/stable";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("consensus journal storage: {0}")]
    Store(#[from] StoreError),
    #[error("consensus journal entry cannot be read: {0}")]
    Encoding(#[from] WireError),
    #[error("reading the ledger at start-up: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
}

/// What one driver turn writes, in the replica's order.
#[derive(Clone, Debug)]
pub enum JournalEntry {
    /// A record of what the replica is about to sign.
    Record(PersistRecord<Transaction>),
    /// A checkpoint became stable: kept with its proof; what it covers is pruned.
    Stable(StableCheckpoint),
}

pub struct Journal {
    store: Arc<dyn Store>,
    wire: Arc<Wire>,
    /// The keys of the records in the store, so that a stable checkpoint finds what it prunes
    /// without reading every record back (each a batch and its certificates). Loaded from the
    /// store at restore or at the first write; `None` again after a failed write, whose effect
    /// on the store is unknown.
    held: Mutex<Option<BTreeSet<RecordKey>>>,
}

const VIEW_CHANGE: u8 = 5;
const NEW_VIEW: u8 = 6;

/// Where a record is kept: prefix, phase (1 byte), view (u64 BE), sequence (u64 BE). Pruning
/// reads these back from the key alone, without decoding (and re-verifying) the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RecordKey {
    phase: u8,
    view: View,
    sequence: Sequence,
}

impl RecordKey {
    fn of(record: &PersistRecord<Transaction>) -> RecordKey {
        let phase: u8 = match record.phase {
            Phase::PrePrepare => 1,
            Phase::Prepare => 2,
            Phase::Commit => 3,
            Phase::Checkpoint => 4,
            Phase::ViewChange => VIEW_CHANGE,
            Phase::NewView => NEW_VIEW,
        };
        RecordKey {
            phase,
            view: record.view,
            sequence: record.sequence,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(RECORD_PREFIX.len() + 17);
        key.extend_from_slice(RECORD_PREFIX);
        key.push(self.phase);
        key.extend_from_slice(&self.view.0.to_be_bytes());
        key.extend_from_slice(&self.sequence.0.to_be_bytes());
        key
    }

    /// `None` for a key of another shape.
    fn parse(key: &[u8]) -> Option<RecordKey> {
        let rest = key.strip_prefix(RECORD_PREFIX)?;
        let (&phase, rest) = rest.split_first()?;
        let view = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let sequence = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
        Some(RecordKey {
            phase,
            view: View(view),
            sequence: Sequence(sequence),
        })
    }

    /// Whether a checkpoint stable at `stable` in view `view` makes this record unnecessary:
    /// view-change and new-view records of earlier views, every other record at or below it.
    fn pruned_by(&self, stable: Sequence, view: View) -> bool {
        match self.phase {
            VIEW_CHANGE | NEW_VIEW => self.view < view,
            _ => self.sequence <= stable,
        }
    }
}

impl Journal {
    pub fn new(store: Arc<dyn Store>, wire: Arc<Wire>) -> Journal {
        Journal {
            store,
            wire,
            held: Mutex::new(None),
        }
    }

    fn held_lock(&self) -> MutexGuard<'_, Option<BTreeSet<RecordKey>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys of the records in the store, read from it.
    fn stored_keys(&self) -> Result<BTreeSet<RecordKey>, JournalError> {
        Ok(record_keys(&self.store.consensus_entries(RECORD_PREFIX)?))
    }

    /// Writes one turn of the driver, in the order the replica asked, as one atomic synced
    /// write off the async workers: each record, and at each stable checkpoint the checkpoint
    /// and the pruning of every record it makes unnecessary (those written earlier in the same
    /// turn included, none written after it). `view` is the replica's view: view-change and
    /// new-view records of earlier views are pruned too. A crash leaves the whole turn or none
    /// of it, so a record is never durable without the stable checkpoint that came before it.
    pub async fn write(&self, entries: &[JournalEntry], view: View) -> Result<(), JournalError> {
        if entries.is_empty() {
            return Ok(());
        }
        let writes = {
            let mut guard = self.held_lock();
            let held = match &mut *guard {
                Some(held) => held,
                empty => empty.insert(self.stored_keys()?),
            };
            let writes = self.plan(held, entries, view);
            if writes.is_err() {
                *guard = None;
            }
            writes?
        };
        let store = self.store.clone();
        let written = tokio::task::spawn_blocking(move || store.write_consensus(&writes))
            .await
            .map_err(|e| StoreError::Backend(format!("the journal write did not finish: {e}")))
            .and_then(|result| result);
        if written.is_err() {
            *self.held_lock() = None;
        }
        written?;
        Ok(())
    }

    /// The store writes of one turn, `held` brought up to date with them.
    fn plan(
        &self,
        held: &mut BTreeSet<RecordKey>,
        entries: &[JournalEntry],
        view: View,
    ) -> Result<Vec<ConsensusWrite>, JournalError> {
        let mut writes = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry {
                JournalEntry::Record(record) => {
                    let key = RecordKey::of(record);
                    writes.push(ConsensusWrite::Put {
                        key: key.bytes(),
                        value: self.wire.encode_record(record)?,
                    });
                    held.insert(key);
                }
                JournalEntry::Stable(stable) => {
                    writes.push(ConsensusWrite::Put {
                        key: STABLE_KEY.to_vec(),
                        value: self.wire.encode_stable(stable)?,
                    });
                    held.retain(|key| {
                        let pruned = key.pruned_by(stable.sequence, view);
                        if pruned {
                            writes.push(ConsensusWrite::Delete { key: key.bytes() });
                        }
                        !pruned
                    });
                }
            }
        }
        Ok(writes)
    }

    /// What the replica persisted before it stopped. `last_executed` is the ledger's last
    /// block number (block n holds sequence n).
    pub fn restore(
        &self,
        last_executed: Sequence,
    ) -> Result<PersistedState<Transaction>, JournalError> {
        let entries = self.store.consensus_entries(RECORD_PREFIX)?;
        let records = entries
            .iter()
            .map(|(_, value)| self.wire.decode_record(value))
            .collect::<Result<Vec<_>, _>>()?;
        *self.held_lock() = Some(record_keys(&entries));
        let stable_checkpoint = self
            .store
            .get_consensus(STABLE_KEY)?
            .map(|value| self.wire.decode_stable(&value))
            .transpose()?;
        Ok(PersistedState {
            records,
            last_executed,
            stable_checkpoint,
        })
    }
}

/// The record keys among store entries.
fn record_keys(entries: &[(Bytes, Bytes)]) -> BTreeSet<RecordKey> {
    entries
        .iter()
        .filter_map(|(key, _)| RecordKey::parse(key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Admission;
    use crate::consensus::pbft::{RecordDetail, ReplicaId};
    use crate::storage::MemoryStore;
    use crate::types::Hash;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};

    fn journal() -> (Journal, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        (journal_over(store.clone()), store)
    }

    fn journal_over(store: Arc<dyn Store>) -> Journal {
        let (genesis, signers) = crate::test_support::validator_network(4, "journal");
        let admission = Admission::new(&genesis);
        let identities = signers
            .iter()
            .map(|s| {
                admission
                    .identity(&s.identity().certificate)
                    .expect("identity")
            })
            .collect();
        let signer = signers[0].clone();
        let wire = Arc::new(Wire::new(
            &genesis,
            ReplicaId(0),
            signer,
            identities,
            Arc::new(admission),
        ));
        Journal::new(store, wire)
    }

    /// A memory store that counts the reads of every consensus entry and can fail the next
    /// consensus write.
    #[derive(Default)]
    struct WatchedStore {
        inner: MemoryStore,
        entry_reads: AtomicUsize,
        fail_next_write: AtomicBool,
    }

    impl crate::state::leaves::LeafSource for WatchedStore {
        fn leaves_in(
            &self,
            ranges: &[crate::state::leaves::PathRange],
        ) -> Result<Vec<Vec<crate::state::leaves::Leaf>>, StoreError> {
            self.inner.leaves_in(ranges)
        }
    }

    impl Store for WatchedStore {
        fn height(&self) -> Result<u64, StoreError> {
            self.inner.height()
        }
        fn block(&self, number: u64) -> Result<Option<crate::types::Block>, StoreError> {
            self.inner.block(number)
        }
        fn block_number(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
            self.inner.block_number(hash)
        }
        fn tx_location(
            &self,
            id: &crate::types::TxId,
        ) -> Result<Option<crate::types::TxLocation>, StoreError> {
            self.inner.tx_location(id)
        }
        fn get_state(&self, namespace: &str, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
            self.inner.get_state(namespace, key)
        }
        fn state_range(
            &self,
            namespace: &str,
            start: &[u8],
            end: &[u8],
            limit: usize,
        ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
            self.inner.state_range(namespace, start, end, limit)
        }
        fn for_each_state(
            &self,
            visit: &mut crate::storage::StateVisitor<'_>,
        ) -> Result<(), StoreError> {
            self.inner.for_each_state(visit)
        }
        fn for_each_leaf(
            &self,
            visit: &mut crate::storage::LeafVisitor<'_>,
        ) -> Result<(), StoreError> {
            self.inner.for_each_leaf(visit)
        }
        fn commit_block(
            &self,
            block: &crate::types::Block,
            leaves: &[crate::state::leaves::LeafWrite],
        ) -> Result<(), StoreError> {
            self.inner.commit_block(block, leaves)
        }
        fn write_leaves(
            &self,
            leaves: &[crate::state::leaves::LeafWrite],
        ) -> Result<(), StoreError> {
            self.inner.write_leaves(leaves)
        }
        fn clear_leaves(&self) -> Result<(), StoreError> {
            self.inner.clear_leaves()
        }
        fn get_consensus(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
            self.inner.get_consensus(key)
        }
        fn write_consensus(&self, writes: &[ConsensusWrite]) -> Result<(), StoreError> {
            if self.fail_next_write.swap(false, AtomicOrdering::SeqCst) {
                return Err(StoreError::Backend("the disk is full".into()));
            }
            self.inner.write_consensus(writes)
        }
        fn consensus_entries(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
            self.entry_reads.fetch_add(1, AtomicOrdering::SeqCst);
            self.inner.consensus_entries(prefix)
        }
        fn put_certificate(&self, number: u64, certificate: &[u8]) -> Result<(), StoreError> {
            self.inner.put_certificate(number, certificate)
        }
        fn certificate(&self, number: u64) -> Result<Option<Bytes>, StoreError> {
            self.inner.certificate(number)
        }
        fn last_certified(&self) -> Result<Option<u64>, StoreError> {
            self.inner.last_certified()
        }
    }

    fn stable_at(sequence: u64) -> JournalEntry {
        JournalEntry::Stable(StableCheckpoint {
            sequence: Sequence(sequence),
            state_digest: [sequence as u8; 32],
            proof: Vec::new(),
        })
    }

    /// (phase, sequence) of every record the store holds, read as a restarted replica would.
    fn stored(store: Arc<dyn Store>) -> Vec<(Phase, u64)> {
        let mut kept: Vec<(Phase, u64)> = journal_over(store)
            .restore(Sequence(0))
            .expect("restore")
            .records
            .iter()
            .map(|r| (r.phase, r.sequence.0))
            .collect();
        kept.sort();
        kept
    }

    #[tokio::test]
    async fn stable_checkpoints_prune_from_the_keys_held_in_memory_without_reading_the_records() {
        let store = Arc::new(WatchedStore::default());
        let journal = journal_over(store.clone());
        journal.restore(Sequence(0)).expect("restore");
        assert_eq!(store.entry_reads.load(AtomicOrdering::SeqCst), 1);
        for period in 1..=5u64 {
            let turn: Vec<JournalEntry> = (period * 10 - 9..=period * 10)
                .map(|sequence| JournalEntry::Record(record(Phase::Commit, 0, sequence)))
                .collect();
            journal.write(&turn, View(0)).await.expect("records");
            journal
                .write(&[stable_at(period * 10 - 5)], View(0))
                .await
                .expect("stable");
        }
        assert_eq!(
            store.entry_reads.load(AtomicOrdering::SeqCst),
            1,
            "five stable checkpoints read no record back"
        );
        assert_eq!(
            stored(store.clone()),
            (46..=50).map(|s| (Phase::Commit, s)).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn after_a_failed_write_the_next_stable_checkpoint_prunes_what_the_store_holds() {
        let store = Arc::new(WatchedStore::default());
        let journal = journal_over(store.clone());
        let records = |range: std::ops::RangeInclusive<u64>| -> Vec<JournalEntry> {
            range
                .map(|sequence| JournalEntry::Record(record(Phase::Commit, 0, sequence)))
                .collect()
        };
        journal
            .write(&records(1..=4), View(0))
            .await
            .expect("first");
        store.fail_next_write.store(true, AtomicOrdering::SeqCst);
        let mut failed = records(5..=6);
        failed.push(stable_at(3));
        journal
            .write(&failed, View(0))
            .await
            .expect_err("the store refused the write");
        assert_eq!(
            stored(store.clone()),
            (1..=4).map(|s| (Phase::Commit, s)).collect::<Vec<_>>()
        );
        let reads = store.entry_reads.load(AtomicOrdering::SeqCst);
        journal
            .write(&[stable_at(2)], View(0))
            .await
            .expect("after the failure");
        assert_eq!(
            store.entry_reads.load(AtomicOrdering::SeqCst),
            reads + 1,
            "the keys are read from the store again"
        );
        assert_eq!(
            stored(store.clone()),
            [(Phase::Commit, 3), (Phase::Commit, 4)]
        );
    }

    fn record(phase: Phase, view: u64, sequence: u64) -> PersistRecord<Transaction> {
        PersistRecord {
            view: View(view),
            sequence: Sequence(sequence),
            phase,
            digest: Hash([sequence as u8; 32]),
            detail: RecordDetail::None,
        }
    }

    #[test]
    fn keys_carry_phase_view_and_sequence() {
        let key = RecordKey::of(&record(Phase::NewView, 7, 0));
        assert_eq!(
            key,
            RecordKey {
                phase: NEW_VIEW,
                view: View(7),
                sequence: Sequence(0)
            }
        );
        assert_eq!(RecordKey::parse(&key.bytes()), Some(key));
        assert_eq!(RecordKey::parse(b"pbft/stable"), None);
    }

    #[tokio::test]
    async fn a_stable_checkpoint_prunes_what_it_makes_unnecessary_and_restore_returns_the_rest() {
        let (journal, _) = journal();
        let records = [
            record(Phase::Prepare, 1, 9),
            record(Phase::Commit, 1, 10),
            record(Phase::Commit, 1, 11),
            record(Phase::Checkpoint, 1, 10),
            record(Phase::NewView, 0, 0),
            record(Phase::NewView, 1, 0),
        ];
        // One record alone, the rest in one write, then the stable checkpoint in a turn of
        // its own.
        let write = |entries: Vec<JournalEntry>| {
            let journal = &journal;
            async move { journal.write(&entries, View(1)).await }
        };
        write(vec![JournalEntry::Record(records[0].clone())])
            .await
            .expect("write one");
        write(
            records[1..]
                .iter()
                .cloned()
                .map(JournalEntry::Record)
                .collect(),
        )
        .await
        .expect("write several");
        let stable = StableCheckpoint {
            sequence: Sequence(10),
            state_digest: [1; 32],
            proof: Vec::new(),
        };
        write(vec![JournalEntry::Stable(stable.clone())])
            .await
            .expect("stable");
        let restored = journal.restore(Sequence(11)).expect("restore");
        let mut kept: Vec<(Phase, u64, u64)> = restored
            .records
            .iter()
            .map(|r| (r.phase, r.view.0, r.sequence.0))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            vec![(Phase::Commit, 1, 11), (Phase::NewView, 1, 0)],
            "at or below the stable checkpoint and views before the current one are gone"
        );
        assert_eq!(restored.stable_checkpoint, Some(stable));
        assert_eq!(restored.last_executed, Sequence(11));
    }

    #[tokio::test]
    async fn a_turn_is_written_in_order_so_a_stable_checkpoint_prunes_only_what_came_before_it() {
        let (journal, _) = journal();
        let stable = StableCheckpoint {
            sequence: Sequence(10),
            state_digest: [1; 32],
            proof: Vec::new(),
        };
        let turn = [
            JournalEntry::Record(record(Phase::Commit, 0, 9)),
            JournalEntry::Record(record(Phase::Commit, 0, 12)),
            JournalEntry::Stable(stable.clone()),
            // Signed after the checkpoint became stable (a lagging replica asked for it):
            // written after the pruning, so it stays.
            JournalEntry::Record(record(Phase::Checkpoint, 0, 10)),
        ];
        journal.write(&turn, View(0)).await.expect("one turn");
        let restored = journal.restore(Sequence(12)).expect("restore");
        let mut kept: Vec<(Phase, u64)> = restored
            .records
            .iter()
            .map(|r| (r.phase, r.sequence.0))
            .collect();
        kept.sort();
        assert_eq!(kept, [(Phase::Commit, 12), (Phase::Checkpoint, 10)]);
        assert_eq!(restored.stable_checkpoint, Some(stable));
    }
}
