//! The state tree's leaves, kept outside memory: one entry per key, its path (the SHA-256
//! of namespace and key) to its leaf hash. The node keeps them in the store (a column written
//! in each block's batch); `weft ledger verify` replays a chain with [`MemoryLeaves`].

use std::collections::BTreeMap;

use crate::storage::StoreError;
use crate::types::Hash;

/// A change to the leaves: the path's new leaf hash, or `None` when the key is removed.
pub type LeafWrite = (Hash, Option<Hash>);

/// A stored leaf: (path, leaf hash).
pub type Leaf = (Hash, Hash);

/// The first and last path of a range, both included.
pub type PathRange = (Hash, Hash);

/// Where the tree reads the leaves of the subtrees a block touches.
pub trait LeafSource {
    /// For each range, the leaves whose paths lie in it, in path order.
    fn leaves_in(&self, ranges: &[PathRange]) -> Result<Vec<Vec<Leaf>>, StoreError>;
}

/// Leaves in a map: for a replay that has no store of its own.
#[derive(Clone, Debug, Default)]
pub struct MemoryLeaves {
    leaves: BTreeMap<Hash, Hash>,
}

impl MemoryLeaves {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&mut self, writes: &[LeafWrite]) {
        for (path, leaf) in writes {
            match leaf {
                Some(leaf) => self.leaves.insert(*path, *leaf),
                None => self.leaves.remove(path),
            };
        }
    }

    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Every leaf, in path order.
    pub fn iter(&self) -> impl Iterator<Item = Leaf> + '_ {
        self.leaves.iter().map(|(path, leaf)| (*path, *leaf))
    }
}

impl LeafSource for MemoryLeaves {
    fn leaves_in(&self, ranges: &[PathRange]) -> Result<Vec<Vec<Leaf>>, StoreError> {
        Ok(ranges
            .iter()
            .map(|(first, last)| {
                self.leaves
                    .range(*first..=*last)
                    .map(|(path, leaf)| (*path, *leaf))
                    .collect()
            })
            .collect())
    }
}
