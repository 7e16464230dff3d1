//! Ordering: turns a stream of verified transactions into numbered batches. `solo` orders alone
//! for a one-validator network; the PBFT replica fills the same seam for a cluster.

pub mod pbft;
pub mod solo;

use crate::types::Transaction;

/// A batch whose order is final.
#[derive(Debug)]
pub struct OrderedBatch {
    pub sequence: u64,
    pub transactions: Vec<Transaction>,
}
