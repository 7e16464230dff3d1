//! The replica's durable record: every `Persist` action and the latest stable checkpoint, in
//! the store's consensus column, each write synced before the driver runs the next action.
//! Invariant: what the replica signed survives a crash of the process or the machine, so a
//! restarted replica never signs a conflicting digest (I6); the record stays within the window
//! because the stable checkpoint prunes it.

use std::sync::Arc;

use super::pbft::{PersistRecord, PersistedState, Phase, Sequence, StableCheckpoint, View};
use crate::network::wire::{Wire, WireError};
use crate::storage::{Store, StoreError};
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

pub struct Journal {
    store: Arc<dyn Store>,
    wire: Arc<Wire>,
}

fn record_key(record: &PersistRecord<Transaction>) -> Vec<u8> {
    let phase: u8 = match record.phase {
        Phase::PrePrepare => 1,
        Phase::Prepare => 2,
        Phase::Commit => 3,
        Phase::Checkpoint => 4,
        Phase::ViewChange => 5,
        Phase::NewView => 6,
    };
    let mut key = RECORD_PREFIX.to_vec();
    key.push(phase);
    key.extend_from_slice(&record.view.0.to_be_bytes());
    key.extend_from_slice(&record.sequence.0.to_be_bytes());
    key
}

impl Journal {
    pub fn new(store: Arc<dyn Store>, wire: Arc<Wire>) -> Journal {
        Journal { store, wire }
    }

    /// Durably records what the replica is about to sign.
    pub fn persist(&self, record: &PersistRecord<Transaction>) -> Result<(), JournalError> {
        let value = self.wire.encode_record(record)?;
        self.store.put_consensus(&record_key(record), &value)?;
        Ok(())
    }

    /// Records a new stable checkpoint, then drops records it makes unnecessary: normal-case
    /// and checkpoint records at or below it, view-level records of views before `view`.
    pub fn stable(&self, stable: &StableCheckpoint, view: View) -> Result<(), JournalError> {
        self.store
            .put_consensus(STABLE_KEY, &self.wire.encode_stable(stable)?)?;
        let mut obsolete = Vec::new();
        for (key, value) in self.store.consensus_entries(RECORD_PREFIX)? {
            let record = self.wire.decode_record(&value)?;
            let drop = match record.phase {
                Phase::ViewChange | Phase::NewView => record.view < view,
                _ => record.sequence <= stable.sequence,
            };
            if drop {
                obsolete.push(key.to_vec());
            }
        }
        if !obsolete.is_empty() {
            self.store.delete_consensus(&obsolete)?;
        }
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
