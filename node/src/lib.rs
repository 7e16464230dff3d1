//! The Weft peer: a validating node that orders signed transactions, executes them through
//! out-of-process chaincode and appends them to a hashed ledger. See `docs/ARCHITECTURE.md`.

pub mod admission;
pub mod admission_window;
pub mod api;
pub mod certificates;
pub mod chaincode;
pub mod config;
pub mod consensus;
pub mod crypto;
pub mod execution;
pub mod ledger;
pub mod mempool;
pub mod metrics;
pub mod network;
pub mod node;
pub mod peer;
pub mod state;
pub mod storage;
#[cfg(test)]
mod test_support;
pub mod types;
