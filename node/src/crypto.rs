//! Block and state hashing, and transaction signature checks, in this crate's types. The
//! canonical encodings themselves live in `weft_proto::hashing`, shared with clients that check
//! what a peer serves: one definition of every hash.

use weft_proto::hashing::{self, HeaderFields};
use weft_proto::signing::tx_signing_bytes;

use crate::types::{Block, BlockHeader, Hash, SignedTransaction, TxResult};

/// `weft_proto::hashing::CanonicalHasher`, taking and giving this crate's [`Hash`].
pub struct CanonicalHasher(hashing::CanonicalHasher);

impl CanonicalHasher {
    pub fn new(domain: &str) -> Self {
        CanonicalHasher(hashing::CanonicalHasher::new(domain))
    }

    pub fn put_u8(&mut self, value: u8) -> &mut Self {
        self.0.put_u8(value);
        self
    }

    pub fn put_u64(&mut self, value: u64) -> &mut Self {
        self.0.put_u64(value);
        self
    }

    /// Length-prefixed bytes.
    pub fn put_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.put_bytes(bytes);
        self
    }

    pub fn put_hash(&mut self, hash: &Hash) -> &mut Self {
        self.0.put_digest(&hash.0);
        self
    }

    pub fn finish(&mut self) -> Hash {
        Hash(self.0.finish())
    }
}

pub fn header_hash(header: &BlockHeader) -> Hash {
    Hash(hashing::header_hash(HeaderFields {
        number: header.number,
        sequence: header.sequence,
        previous_hash: &header.previous_hash.0,
        transactions_root: &header.transactions_root.0,
        results_root: &header.results_root.0,
        state_root: &header.state_root.0,
    }))
}

pub fn transaction_hash(tx: &SignedTransaction) -> Hash {
    Hash(hashing::transaction_hash(
        &tx.payload,
        &tx.signer,
        &tx.signature,
    ))
}

pub fn result_hash(result: &TxResult) -> Hash {
    let event = result
        .event
        .as_ref()
        .map(|e| (e.chaincode.as_str(), e.name.as_str(), e.payload.as_ref()));
    let mut h = hashing::ResultHasher::new(
        result.tx_id.as_bytes(),
        result.status.code(),
        &result.message,
        &result.payload,
        event,
        result.writes.len(),
    );
    for ns in &result.writes {
        h.namespace(
            &ns.chaincode,
            ns.writes
                .iter()
                .map(|w| (w.key.as_ref(), w.value.as_deref())),
        );
    }
    Hash(h.finish())
}

/// Merkle root over `leaves` (see `weft_proto::hashing::merkle_root`).
pub fn merkle_root(domain: &str, leaves: &[Hash]) -> Hash {
    let leaves: Vec<[u8; 32]> = leaves.iter().map(|leaf| leaf.0).collect();
    Hash(hashing::merkle_root(domain, &leaves))
}

pub fn transactions_root(txs: &[SignedTransaction]) -> Hash {
    let leaves: Vec<Hash> = txs.iter().map(transaction_hash).collect();
    merkle_root(hashing::TRANSACTIONS_DOMAIN, &leaves)
}

pub fn results_root(results: &[TxResult]) -> Hash {
    let leaves: Vec<Hash> = results.iter().map(result_hash).collect();
    merkle_root(hashing::RESULTS_DOMAIN, &leaves)
}

/// Recomputes a block's transactions and results roots and compares them with its header.
pub fn check_block_roots(block: &Block) -> Result<(), &'static str> {
    if transactions_root(&block.transactions) != block.header.transactions_root {
        return Err("transactions root");
    }
    if results_root(&block.results) != block.header.results_root {
        return Err("results root");
    }
    Ok(())
}

/// Strict Ed25519 check of a transaction's signature by `signer`.
pub fn verify_tx_signature(signer: &weft_proto::Identity, tx: &SignedTransaction) -> bool {
    signer.verify(&tx_signing_bytes(&tx.payload), &tx.signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{TxId, TxStatus};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn h(n: u8) -> Hash {
        Hash([n; 32])
    }

    #[test]
    fn merkle_root_depends_on_order_count_and_domain() {
        let leaves = [h(1), h(2), h(3)];
        let root = merkle_root("d", &leaves);
        assert_ne!(root, merkle_root("d", &[h(2), h(1), h(3)]));
        assert_ne!(root, merkle_root("d", &leaves[..2]));
        assert_ne!(root, merkle_root("e", &leaves));
        assert_ne!(merkle_root("d", &[]), merkle_root("d", &[Hash::ZERO]));
        // A leaf never equals an internal node over two leaves.
        let pair = merkle_root("d", &[h(1), h(2)]);
        assert_ne!(merkle_root("d", &[pair]), pair);
    }

    proptest! {
        #[test]
        fn tx_field_boundaries_are_unambiguous(a in proptest::collection::vec(any::<u8>(), 0..20), b in proptest::collection::vec(any::<u8>(), 0..20), cut in 0usize..20) {
            // Moving bytes between payload and signer must change the hash.
            let mut joined = a.clone();
            joined.extend_from_slice(&b);
            let cut = cut.min(joined.len());
            prop_assume!(cut != a.len());
            let one = SignedTransaction { id: TxId::of_payload(&a), payload: Bytes::from(a.clone()), signer: Bytes::from(b.clone()), signature: Bytes::new() };
            let other = SignedTransaction { id: TxId::of_payload(&joined[..cut]), payload: Bytes::copy_from_slice(&joined[..cut]), signer: Bytes::copy_from_slice(&joined[cut..]), signature: Bytes::new() };
            prop_assert_ne!(transaction_hash(&one), transaction_hash(&other));
        }

        #[test]
        fn header_hash_covers_every_field(n in any::<u64>(), s in any::<u64>()) {
            let base = BlockHeader { number: n, sequence: s, previous_hash: h(1), transactions_root: h(2), results_root: h(3), state_root: h(4) };
            let base_hash = header_hash(&base);
            let variants = [
                BlockHeader { number: n.wrapping_add(1), ..base.clone() },
                BlockHeader { sequence: s.wrapping_add(1), ..base.clone() },
                BlockHeader { previous_hash: h(9), ..base.clone() },
                BlockHeader { transactions_root: h(9), ..base.clone() },
                BlockHeader { results_root: h(9), ..base.clone() },
                BlockHeader { state_root: h(9), ..base.clone() },
            ];
            for v in variants {
                prop_assert_ne!(header_hash(&v), base_hash);
            }
        }
    }

    #[test]
    fn result_hash_covers_status_and_writes() {
        let r = TxResult::failed(TxId([7; 32]), TxStatus::ChaincodeError, "no");
        let mut other = r.clone();
        other.status = TxStatus::ExecutionTimeout;
        assert_ne!(result_hash(&r), result_hash(&other));
        let mut with_write = r.clone();
        with_write.writes.push(crate::types::NamespaceWrites {
            chaincode: "cc".into(),
            writes: vec![crate::types::KvWrite {
                key: Bytes::from_static(b"k"),
                value: None,
            }],
        });
        assert_ne!(result_hash(&r), result_hash(&with_write));
    }

    /// The node hashes its results from its own types; clients hash the protobuf form. Both
    /// must agree for every status and shape.
    #[test]
    fn a_result_hashes_the_same_in_the_node_and_in_its_protobuf_form() {
        let statuses = [
            TxStatus::Valid,
            TxStatus::ChaincodeError,
            TxStatus::ChaincodeNotFound,
            TxStatus::ChaincodeCrashed,
            TxStatus::ExecutionTimeout,
            TxStatus::Forbidden,
        ];
        for status in statuses {
            let mut result = TxResult::failed(TxId([9; 32]), status, "why");
            result.payload = Bytes::from_static(b"out");
            result.event = Some(crate::types::ChaincodeEvent {
                chaincode: "cc".into(),
                name: "moved".into(),
                payload: Bytes::from_static(b"e"),
            });
            result.writes.push(crate::types::NamespaceWrites {
                chaincode: "cc".into(),
                writes: vec![
                    crate::types::KvWrite {
                        key: Bytes::from_static(b"k"),
                        value: Some(Bytes::from_static(b"v")),
                    },
                    crate::types::KvWrite {
                        key: Bytes::from_static(b"gone"),
                        value: None,
                    },
                ],
            });
            let pb = crate::types::convert::result_to_pb(&result);
            assert_eq!(
                result_hash(&result).0,
                weft_proto::hashing::result_hash(&pb),
                "{status:?}"
            );
        }
    }
}
