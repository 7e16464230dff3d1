//! `weft ledger verify`: recomputes every hash of the stored chain and the state root after
//! every block from the blocks' own write sets, checks every transaction's certificate and
//! signature, and compares the result with the stored world state. Names the first mismatch.

use std::collections::HashSet;

use weft_proto::{Genesis, verify_certificate};

use crate::crypto;
use crate::state::root::StateTree;
use crate::storage::{Store, StoreError, block_state_writes};
use crate::types::{Hash, TxId};

use super::genesis_block;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("block {block}: {what}")]
    Mismatch { block: u64, what: String },
    #[error(
        "the stored world state (root {stored}) does not match the state the chain produces (root {replayed})"
    )]
    StateDiffers { stored: Hash, replayed: Hash },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub blocks: u64,
    pub transactions: u64,
    pub state_root: Hash,
    pub tip_hash: Hash,
}

pub fn verify_chain(store: &dyn Store, genesis: &Genesis) -> Result<VerifyReport, VerifyError> {
    let height = store.height()?;
    let cas = genesis.ca_certificates();
    let mut tree = StateTree::new();
    let mut seen = HashSet::<TxId>::new();
    let mut previous = Hash::ZERO;
    let mut transactions = 0u64;
    let mismatch = |block: u64, what: String| VerifyError::Mismatch { block, what };
    for number in 0..height {
        let block = store
            .block(number)?
            .ok_or_else(|| mismatch(number, "missing".into()))?;
        if block.number() != number {
            return Err(mismatch(
                number,
                format!("header says number {}", block.number()),
            ));
        }
        if number == 0 && block != genesis_block(genesis) {
            return Err(mismatch(0, "does not match this genesis".into()));
        }
        if block.header.previous_hash != previous {
            return Err(mismatch(
                number,
                "previous_hash does not match the hash of the block before".into(),
            ));
        }
        if let Err(root) = crypto::check_block_roots(&block) {
            return Err(mismatch(
                number,
                format!("{root} does not match its contents"),
            ));
        }
        if number > 0 {
            for (index, (tx, result)) in block.transactions.iter().zip(&block.results).enumerate() {
                if tx.id != TxId::of_payload(&tx.payload) || result.tx_id != tx.id {
                    return Err(mismatch(
                        number,
                        format!("transaction {index}: id does not match its payload"),
                    ));
                }
                if !seen.insert(tx.id) {
                    return Err(mismatch(
                        number,
                        format!("transaction {} appears twice in the chain", tx.id),
                    ));
                }
                let identity = verify_certificate(&tx.signer, &cas)
                    .map_err(|e| mismatch(number, format!("transaction {}: {e}", tx.id)))?;
                if !crypto::verify_tx_signature(&identity.public_key, tx) {
                    return Err(mismatch(
                        number,
                        format!("transaction {}: bad signature", tx.id),
                    ));
                }
            }
        }
        for (ns, key, value) in block_state_writes(&block) {
            tree.apply(ns, key, value);
        }
        if tree.root() != block.header.state_root {
            return Err(mismatch(
                number,
                format!(
                    "state root {} does not match the replayed state {}",
                    block.header.state_root,
                    tree.root()
                ),
            ));
        }
        transactions += block.transactions.len() as u64;
        previous = block.hash();
    }
    let mut stored = StateTree::new();
    store.for_each_state(&mut |ns, key, value| stored.apply(ns, key, Some(value)))?;
    if stored.root() != tree.root() {
        return Err(VerifyError::StateDiffers {
            stored: stored.root(),
            replayed: tree.root(),
        });
    }
    Ok(VerifyReport {
        blocks: height,
        transactions,
        state_root: tree.root(),
        tip_hash: previous,
    })
}
