//! An in-memory [`Store`] for tests: the same semantics as RocksDB, nothing durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::{
    ConsensusWrite, LeafVisitor, StateVisitor, Store, StoreError, block_state_writes,
    split_state_key, state_key,
};
use crate::state::leaves::{Leaf, LeafSource, LeafWrite, MemoryLeaves, PathRange};
use crate::types::{Block, Hash, TxId, TxLocation};

#[derive(Default)]
struct Inner {
    blocks: Vec<Block>,
    hashes: HashMap<Hash, u64>,
    txs: HashMap<TxId, TxLocation>,
    state: BTreeMap<Vec<u8>, Bytes>,
    leaves: MemoryLeaves,
    consensus: BTreeMap<Vec<u8>, Bytes>,
    certificates: BTreeMap<u64, Bytes>,
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// The leaf ranges read so far ([`MemoryStore::leaf_ranges_read`]).
    leaf_ranges_read: AtomicUsize,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many leaf ranges `leaves_in` has been asked for: what the ledger's leaf cache
    /// did not answer.
    pub fn leaf_ranges_read(&self) -> usize {
        self.leaf_ranges_read.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    fn height(&self) -> Result<u64, StoreError> {
        Ok(self.lock().blocks.len() as u64)
    }

    fn block(&self, number: u64) -> Result<Option<Block>, StoreError> {
        Ok(self.lock().blocks.get(number as usize).cloned())
    }

    fn block_number(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().hashes.get(hash).copied())
    }

    fn tx_location(&self, id: &TxId) -> Result<Option<TxLocation>, StoreError> {
        Ok(self.lock().txs.get(id).copied())
    }

    fn get_state(&self, namespace: &str, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.lock().state.get(&state_key(namespace, key)).cloned())
    }

    fn state_range(
        &self,
        namespace: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let inner = self.lock();
        let from = state_key(namespace, start);
        let prefix = state_key(namespace, b"");
        Ok(inner
            .state
            .range(from..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (Bytes::copy_from_slice(&k[prefix.len()..]), v.clone()))
            .take_while(|(k, _)| end.is_empty() || k.as_ref() < end)
            .take(limit)
            .collect())
    }

    /// Visits a copy, taken under the lock and visited outside it: a visitor may write to
    /// the store (the leaves' rebuild at open does).
    fn for_each_state(&self, visit: &mut StateVisitor<'_>) -> Result<(), StoreError> {
        let state: Vec<(Vec<u8>, Bytes)> = self
            .lock()
            .state
            .iter()
            .map(|(raw, value)| (raw.clone(), value.clone()))
            .collect();
        for (raw, value) in &state {
            let (ns, key) =
                split_state_key(raw).ok_or_else(|| StoreError::Corrupt("bad state key".into()))?;
            visit(ns, key, value);
        }
        Ok(())
    }

    /// Visits a copy, as [`Store::for_each_state`] does.
    fn for_each_leaf(&self, visit: &mut LeafVisitor<'_>) -> Result<(), StoreError> {
        let leaves: Vec<_> = self.lock().leaves.iter().collect();
        for (path, leaf) in leaves {
            visit(path, leaf);
        }
        Ok(())
    }

    fn commit_block(&self, block: &Block, leaves: &[LeafWrite]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let height = inner.blocks.len() as u64;
        if block.number() != height {
            return Err(StoreError::OutOfOrder {
                height,
                got: block.number(),
            });
        }
        for (index, tx) in block.transactions.iter().enumerate() {
            inner.txs.insert(
                tx.id,
                TxLocation {
                    block: height,
                    index: index as u32,
                },
            );
        }
        for (ns, key, value) in block_state_writes(block) {
            let raw = state_key(ns, key);
            match value {
                Some(v) => inner.state.insert(raw, Bytes::copy_from_slice(v)),
                None => inner.state.remove(&raw),
            };
        }
        inner.leaves.apply(leaves);
        inner.hashes.insert(block.hash(), height);
        inner.blocks.push(block.clone());
        Ok(())
    }

    fn write_leaves(&self, leaves: &[LeafWrite]) -> Result<(), StoreError> {
        self.lock().leaves.apply(leaves);
        Ok(())
    }

    fn clear_leaves(&self) -> Result<(), StoreError> {
        self.lock().leaves = MemoryLeaves::new();
        Ok(())
    }

    fn get_consensus(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.lock().consensus.get(key).cloned())
    }

    fn write_consensus(&self, writes: &[ConsensusWrite]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for write in writes {
            match write {
                ConsensusWrite::Put { key, value } => {
                    inner
                        .consensus
                        .insert(key.clone(), Bytes::copy_from_slice(value));
                }
                ConsensusWrite::Delete { key } => {
                    inner.consensus.remove(key);
                }
            }
        }
        Ok(())
    }

    fn consensus_entries(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        Ok(self
            .lock()
            .consensus
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (Bytes::copy_from_slice(key), value.clone()))
            .collect())
    }

    fn put_certificate(&self, number: u64, certificate: &[u8]) -> Result<(), StoreError> {
        self.lock()
            .certificates
            .insert(number, Bytes::copy_from_slice(certificate));
        Ok(())
    }

    fn certificate(&self, number: u64) -> Result<Option<Bytes>, StoreError> {
        Ok(self.lock().certificates.get(&number).cloned())
    }

    fn last_certified(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().certificates.keys().next_back().copied())
    }
}

impl LeafSource for MemoryStore {
    fn leaves_in(&self, ranges: &[PathRange]) -> Result<Vec<Vec<Leaf>>, StoreError> {
        self.leaf_ranges_read
            .fetch_add(ranges.len(), Ordering::Relaxed);
        self.lock().leaves.leaves_in(ranges)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_passes_the_store_contract() {
        super::super::contract::run(&super::MemoryStore::new());
    }
}
