//! The cluster auditor: after a test, it reads every honest peer's chain and checks the
//! invariants of `shared/PBFT-PITFALLS.md`: I1 agreement (same block hash at every height,
//! chained to genesis), I2 state agreement (same state root at every height), I3 validity
//! (every transaction signed by an authorised submitter), I4 no duplication (a transaction id
//! at most once per chain) and I5 durability (every acknowledged transaction is in every
//! honest chain at the acknowledged height). The checks are pure functions over fetched
//! chains, so negative controls can feed them forged histories.

use std::collections::BTreeMap;

use weft_node::admission::Admission;
use weft_node::types::Block;
use weft_node::types::convert::block_from_pb;
use weft_proto::{Genesis, TxId, WeftClient};

/// One peer's chain as fetched.
#[derive(Clone, Debug)]
pub struct PeerChain {
    pub peer: String,
    pub blocks: Vec<Block>,
}

/// A transaction the network acknowledged as committed in `block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub tx_id: TxId,
    pub block: u64,
}

/// A broken invariant, with what is needed to find it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// I1: two peers hold different blocks at one height.
    Fork {
        height: u64,
        peers: (String, String),
    },
    /// I1: a block does not chain to the one before it, or its header hash is wrong.
    BrokenChain { peer: String, height: u64 },
    /// I2: two peers hold different state roots after one height.
    StateRootDiffers {
        height: u64,
        peers: (String, String),
    },
    /// I3: a transaction in a chain would not pass admission.
    InvalidTransaction {
        peer: String,
        height: u64,
        reason: String,
    },
    /// I4: a transaction id appears twice in one chain.
    Duplicate {
        peer: String,
        tx_id: TxId,
        heights: (u64, u64),
    },
    /// I5: an acknowledged transaction is not where the acknowledgement said.
    LostAcknowledged {
        peer: String,
        tx_id: TxId,
        block: u64,
    },
}

/// Reads every block of the peer behind `client`.
pub async fn fetch_chain(peer: &str, client: &WeftClient) -> PeerChain {
    let height = client
        .chain_info()
        .await
        .unwrap_or_else(|e| panic!("chain info of {peer}: {e}"))
        .height;
    let mut blocks = Vec::with_capacity(height as usize);
    for number in 0..height {
        let block = client
            .block(number)
            .await
            .unwrap_or_else(|e| panic!("block {number} of {peer}: {e}"));
        blocks.push(
            block_from_pb(block)
                .unwrap_or_else(|e| panic!("block {number} of {peer} does not decode: {e}")),
        );
    }
    PeerChain {
        peer: peer.to_string(),
        blocks,
    }
}

/// Every violation of I1 to I5 among `chains` (the honest peers) and `acks`.
pub fn audit(genesis: &Genesis, chains: &[PeerChain], acks: &[Ack]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let admission = Admission::new(genesis);
    for chain in chains {
        let mut seen: BTreeMap<TxId, u64> = BTreeMap::new();
        for (height, block) in chain.blocks.iter().enumerate() {
            let height = height as u64;
            let linked = if height == 0 {
                block.header.previous_hash.0 == [0; 32]
            } else {
                block.header.previous_hash == chain.blocks[height as usize - 1].hash()
            };
            if block.number() != height || !linked {
                violations.push(Violation::BrokenChain {
                    peer: chain.peer.clone(),
                    height,
                });
            }
            for tx in &block.transactions {
                if height > 0
                    && let Err(e) = admission.verify(tx.clone())
                {
                    violations.push(Violation::InvalidTransaction {
                        peer: chain.peer.clone(),
                        height,
                        reason: e.to_string(),
                    });
                }
                if let Some(first) = seen.insert(tx.id, height) {
                    violations.push(Violation::Duplicate {
                        peer: chain.peer.clone(),
                        tx_id: tx.id,
                        heights: (first, height),
                    });
                }
            }
        }
        for ack in acks {
            let present = chain
                .blocks
                .get(ack.block as usize)
                .is_some_and(|b| b.transactions.iter().any(|t| t.id == ack.tx_id));
            if !present {
                violations.push(Violation::LostAcknowledged {
                    peer: chain.peer.clone(),
                    tx_id: ack.tx_id,
                    block: ack.block,
                });
            }
        }
    }
    for (i, a) in chains.iter().enumerate() {
        for b in &chains[i + 1..] {
            for (height, (x, y)) in a.blocks.iter().zip(&b.blocks).enumerate() {
                let peers = (a.peer.clone(), b.peer.clone());
                if x.hash() != y.hash() {
                    violations.push(Violation::Fork {
                        height: height as u64,
                        peers: peers.clone(),
                    });
                }
                if x.header.state_root != y.header.state_root {
                    violations.push(Violation::StateRootDiffers {
                        height: height as u64,
                        peers,
                    });
                }
            }
        }
    }
    violations
}
