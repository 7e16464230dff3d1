//! The replica's durable record: every `Persist` action and the latest stable checkpoint, in
//! the store's consensus column, each write synced before the driver runs the next action.
//! Invariant: what the replica signed survives a crash of the process or the machine, so a
//! restarted replica never signs a conflicting digest (I6); the record stays within the window
//! because the stable checkpoint prunes it.

use std::sync::Arc;

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
}

const VIEW_CHANGE: u8 = 5;
const NEW_VIEW: u8 = 6;

/// prefix, phase (1 byte), view (u64 BE), sequence (u64 BE): pruning reads these back from the
/// key alone, without decoding (and re-verifying) the record.
fn record_key(record: &PersistRecord<Transaction>) -> Vec<u8> {
    let phase: u8 = match record.phase {
        Phase::PrePrepare => 1,
        Phase::Prepare => 2,
        Phase::Commit => 3,
        Phase::Checkpoint => 4,
        Phase::ViewChange => VIEW_CHANGE,
        Phase::NewView => NEW_VIEW,
    };
    let mut key = RECORD_PREFIX.to_vec();
    key.push(phase);
    key.extend_from_slice(&record.view.0.to_be_bytes());
    key.extend_from_slice(&record.sequence.0.to_be_bytes());
    key
}

/// (phase, view, sequence) from a record key; `None` for a key of another shape.
fn parse_key(key: &[u8]) -> Option<(u8, View, Sequence)> {
    let rest = key.strip_prefix(RECORD_PREFIX)?;
    let (&phase, rest) = rest.split_first()?;
    let view = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let sequence = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
    Some((phase, View(view), Sequence(sequence)))
}

impl Journal {
    pub fn new(store: Arc<dyn Store>, wire: Arc<Wire>) -> Journal {
        Journal { store, wire }
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
        let any_stable = entries.iter().any(|e| matches!(e, JournalEntry::Stable(_)));
        let mut held: Vec<Vec<u8>> = if any_stable {
            self.store
                .consensus_entries(RECORD_PREFIX)?
                .into_iter()
                .map(|(key, _)| key.to_vec())
                .collect()
        } else {
            Vec::new()
        };
        let mut writes = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry {
                JournalEntry::Record(record) => {
                    let key = record_key(record);
                    writes.push(ConsensusWrite::Put {
                        key: key.clone(),
                        value: self.wire.encode_record(record)?,
                    });
                    held.push(key);
                }
                JournalEntry::Stable(stable) => {
                    writes.push(ConsensusWrite::Put {
                        key: STABLE_KEY.to_vec(),
                        value: self.wire.encode_stable(stable)?,
                    });
                    let obsolete = |key: &Vec<u8>| match parse_key(key) {
                        Some((VIEW_CHANGE | NEW_VIEW, at, _)) => at < view,
                        Some((_, _, sequence)) => sequence <= stable.sequence,
                        None => false,
                    };
                    for key in held.iter().filter(|k| obsolete(k)) {
                        writes.push(ConsensusWrite::Delete { key: key.clone() });
                    }
                    held.retain(|k| !obsolete(k));
                }
            }
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.write_consensus(&writes))
            .await
            .map_err(|e| StoreError::Backend(format!("the journal write did not finish: {e}")))??;
        Ok(())
    }

    /// What the replica persisted before it stopped. `last_executed` is the ledger's last
    /// block number (block n holds sequence n).
    pub fn restore(
        &self,
        last_executed: Sequence,
    ) -> Result<PersistedState<Transaction>, JournalError> {
        let records = self
            .store
            .consensus_entries(RECORD_PREFIX)?
            .into_iter()
            .map(|(_, value)| self.wire.decode_record(&value))
            .collect::<Result<Vec<_>, _>>()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Admission;
    use crate::consensus::pbft::{RecordDetail, ReplicaId};
    use crate::storage::MemoryStore;
    use crate::types::Hash;

    fn journal() -> (Journal, Arc<MemoryStore>) {
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
        let store = Arc::new(MemoryStore::new());
        (Journal::new(store.clone(), wire), store)
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
        let key = record_key(&record(Phase::NewView, 7, 0));
        assert_eq!(parse_key(&key), Some((NEW_VIEW, View(7), Sequence(0))));
        assert_eq!(parse_key(b"pbft/stable"), None);
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
