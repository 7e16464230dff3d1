//! What a chaincode reads while it runs: the committed state with the writes of the block
//! being executed laid over it. A view is a snapshot for one namespace and one batch, so a
//! chaincode's reads are the same on every validator.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;

use crate::ledger::Ledger;

/// The most entries one range read returns; a larger range is an error for that transaction.
pub const RANGE_LIMIT: usize = 100_000;

pub trait StateView: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, String>;
    /// Entries with `start <= key < end` (empty `end` = unbounded), in key order.
    fn range(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Bytes, Bytes)>, String>;
}

/// The writes applied so far by the block being executed, per namespace.
#[derive(Default, Clone, Debug)]
pub struct BlockOverlay {
    namespaces: HashMap<String, BTreeMap<Bytes, Option<Bytes>>>,
}

impl BlockOverlay {
    pub fn apply(&mut self, namespace: &str, key: Bytes, value: Option<Bytes>) {
        self.namespaces
            .entry(namespace.to_string())
            .or_default()
            .insert(key, value);
    }

    /// A snapshot of one namespace's pending writes.
    pub fn namespace(&self, namespace: &str) -> Arc<BTreeMap<Bytes, Option<Bytes>>> {
        Arc::new(self.namespaces.get(namespace).cloned().unwrap_or_default())
    }

    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }
}

/// Committed state of one namespace with pending writes laid over it.
pub struct OverlayView {
    ledger: Arc<Ledger>,
    namespace: String,
    pending: Arc<BTreeMap<Bytes, Option<Bytes>>>,
}

impl OverlayView {
    pub fn new(
        ledger: Arc<Ledger>,
        namespace: &str,
        pending: Arc<BTreeMap<Bytes, Option<Bytes>>>,
    ) -> OverlayView {
        OverlayView {
            ledger,
            namespace: namespace.to_string(),
            pending,
        }
    }

    /// The committed state only.
    pub fn committed(ledger: Arc<Ledger>, namespace: &str) -> OverlayView {
        Self::new(ledger, namespace, Arc::default())
    }
}

impl StateView for OverlayView {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, String> {
        if let Some(pending) = self.pending.get(key) {
            return Ok(pending.clone());
        }
        self.ledger
            .get_state(&self.namespace, key)
            .map_err(|e| e.to_string())
    }

    fn range(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Bytes, Bytes)>, String> {
        let committed = self
            .ledger
            .state_range(&self.namespace, start, end, RANGE_LIMIT + 1)
            .map_err(|e| e.to_string())?;
        let mut merged: BTreeMap<Bytes, Bytes> = committed.into_iter().collect();
        let upper = if end.is_empty() {
            std::ops::Bound::Unbounded
        } else {
            std::ops::Bound::Excluded(Bytes::copy_from_slice(end))
        };
        let lower = std::ops::Bound::Included(Bytes::copy_from_slice(start));
        for (key, value) in self.pending.range((lower, upper)) {
            match value {
                Some(v) => merged.insert(key.clone(), v.clone()),
                None => merged.remove(key),
            };
        }
        if merged.len() > RANGE_LIMIT {
            return Err(format!(
                "the range holds more than {RANGE_LIMIT} entries: read it in smaller ranges"
            ));
        }
        Ok(merged.into_iter().collect())
    }
}
