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

/// Checks client transaction signatures together and says, for each, whether it verifies.
///
/// The rule, the same whether a signature is checked alone or among thousands: Ed25519 with
/// the cofactored verification equation `[8][s]B = [8]R + [8][k]A`, a canonical `s`, a
/// decodable `R`, and a signer key that is not of small order (refused with its certificate).
/// This is the equation batch verification checks, so a transaction's verdict depends on its
/// own bytes only, never on which others it was checked with: validators that see it in
/// different batches agree on it, which a strict (cofactorless) check alone next to batches
/// would not guarantee. Honest signatures pass both rules; the signatures only the cofactored
/// rule admits can be made by the key's holder alone, and carry the same payload (the same
/// transaction id, committed at most once).
///
/// All of them are verified in one batch (about 40% of the cost of one by one); when the batch
/// fails, its halves are checked in turn until each bad signature is found alone.
pub fn verify_tx_signatures(items: &[(&weft_proto::Identity, &SignedTransaction)]) -> Vec<bool> {
    let mut verdicts = vec![false; items.len()];
    let mut messages = Vec::with_capacity(items.len());
    let mut signatures = Vec::with_capacity(items.len());
    let mut keys = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    for (position, (signer, tx)) in items.iter().enumerate() {
        // A malformed signature fails alone; it never enters a batch.
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&tx.signature) else {
            continue;
        };
        messages.push(tx_signing_bytes(&tx.payload));
        signatures.push(signature);
        keys.push(signer.verifying_key);
        positions.push(position);
    }
    let batch = SignatureBatch {
        messages: messages.iter().map(Vec::as_slice).collect(),
        signatures,
        keys,
    };
    for (index, verdict) in batch.verdicts().into_iter().enumerate() {
        verdicts[positions[index]] = verdict;
    }
    verdicts
}

/// Parallel columns of messages, signatures and keys, checked by [`SignatureBatch::verdicts`].
struct SignatureBatch<'a> {
    messages: Vec<&'a [u8]>,
    signatures: Vec<ed25519_dalek::Signature>,
    keys: Vec<ed25519_dalek::VerifyingKey>,
}

impl SignatureBatch<'_> {
    fn verdicts(&self) -> Vec<bool> {
        let mut verdicts = vec![false; self.messages.len()];
        self.check(0..self.messages.len(), &mut verdicts);
        verdicts
    }

    /// Marks every signature in `range` that verifies, splitting the range while it fails.
    fn check(&self, range: std::ops::Range<usize>, verdicts: &mut [bool]) {
        if range.is_empty() {
            return;
        }
        let passes = ed25519_dalek::verify_batch(
            &self.messages[range.clone()],
            &self.signatures[range.clone()],
            &self.keys[range.clone()],
        )
        .is_ok();
        if passes {
            verdicts[range].iter_mut().for_each(|v| *v = true);
        } else if range.len() > 1 {
            let middle = range.start + range.len() / 2;
            self.check(range.start..middle, verdicts);
            self.check(middle..range.end, verdicts);
        }
    }
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

    /// `count` transactions signed by alice or bob in turn, on one chain.
    fn signed_transactions(count: usize) -> (Vec<weft_proto::Signer>, Vec<SignedTransaction>) {
        let (genesis, _, ca) = crate::test_support::validator_network_with_ca(4, "batch");
        let signers: Vec<weft_proto::Signer> = ["alice", "bob"]
            .iter()
            .map(|name| {
                ca.issue(name, weft_proto::Role::Client)
                    .expect("issue")
                    .signer()
                    .expect("signer")
            })
            .collect();
        let txs = (0..count)
            .map(|i| {
                let (_, tx) = weft_proto::tx::sign_transaction(
                    &signers[i % 2],
                    &genesis.chain_id,
                    "cc",
                    "f",
                    &[i.to_le_bytes().to_vec()],
                );
                crate::types::convert::signed_from_pb(tx)
            })
            .collect();
        (signers, txs)
    }

    fn with_signers<'a>(
        signers: &'a [weft_proto::Signer],
        txs: &'a [SignedTransaction],
    ) -> Vec<(&'a weft_proto::Identity, &'a SignedTransaction)> {
        txs.iter()
            .enumerate()
            .map(|(i, tx)| (signers[i % 2].identity(), tx))
            .collect()
    }

    #[test]
    fn a_batch_of_good_signatures_verifies_and_each_bad_one_is_found_alone() {
        let (signers, mut txs) = signed_transactions(37);
        assert!(
            verify_tx_signatures(&with_signers(&signers, &txs))
                .iter()
                .all(|v| *v)
        );
        // A flipped bit, a signature by the other signer, a truncated one, and a payload
        // changed after signing, at the edges and inside.
        let mut flipped = txs[0].signature.to_vec();
        flipped[3] ^= 1;
        txs[0].signature = flipped.into();
        txs[17].signature = txs[18].signature.clone();
        txs[20].signature = txs[20].signature.slice(..63);
        let mut payload = txs[36].payload.to_vec();
        payload.push(0);
        txs[36].payload = payload.into();
        let verdicts = verify_tx_signatures(&with_signers(&signers, &txs));
        let bad: Vec<usize> = (0..txs.len()).filter(|i| !verdicts[*i]).collect();
        assert_eq!(bad, [0, 17, 20, 36]);
        assert!(verify_tx_signatures(&[]).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Validators check a transaction in different batches (relayed, in a pre-prepare, at
        /// the client edge alone): its verdict must depend on its own bytes only.
        #[test]
        fn a_verdict_does_not_depend_on_the_batch(bad in proptest::collection::vec(any::<bool>(), 1..24), split in 0usize..24) {
            let (signers, mut txs) = signed_transactions(bad.len());
            for (i, corrupt) in bad.iter().enumerate() {
                if *corrupt {
                    let mut signature = txs[i].signature.to_vec();
                    signature[i % 64] ^= 0x40;
                    txs[i].signature = signature.into();
                }
            }
            let items = with_signers(&signers, &txs);
            let together = verify_tx_signatures(&items);
            let split = split.min(items.len());
            let mut in_two = verify_tx_signatures(&items[..split]);
            in_two.extend(verify_tx_signatures(&items[split..]));
            prop_assert_eq!(&together, &in_two);
            for (i, item) in items.iter().enumerate() {
                prop_assert_eq!(together[i], verify_tx_signatures(&[*item])[0], "alone");
                prop_assert_eq!(together[i], !bad[i]);
            }
        }
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
