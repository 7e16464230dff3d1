//! Block and state hashing, and transaction signature checks, in this crate's types. The
//! canonical encodings themselves live in `weft_proto::hashing`, shared with clients that check
//! what a peer serves: one definition of every hash.

use std::collections::BTreeMap;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};
use weft_proto::hashing::{self, HeaderFields};
use weft_proto::signing::TX_DOMAIN;

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
    transactions_root_of(&leaves)
}

/// The transactions root over the transactions' hashes ([`transaction_hash`]), in order.
pub fn transactions_root_of(hashes: &[Hash]) -> Hash {
    merkle_root(hashing::TRANSACTIONS_DOMAIN, hashes)
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
/// the cofactored verification equation `[8]([s]B - [k]A - R) = 0`, `k = H(R || A || M)`, a
/// canonical `s`, a decodable `R`, and a signer key that is not of small order (refused with
/// its certificate). Batches are checked with that same equation, weighted: the verdict on a
/// transaction depends on its own bytes only, never on which others it was checked with, so
/// validators that meet it in different batches agree on it. (`ed25519_dalek::verify_batch`
/// leaves out the factor 8: a signature whose `R` carries a small-order part passes it in
/// about one batch in eight; it cannot serve here.) Honest signatures pass the strict
/// (cofactorless) rule and this one alike; what this one admits beyond it can only be made by
/// the key's holder and signs the same payload (the same transaction id, committed once).
///
/// All of them are verified in one batch (about 40% of the cost of one by one); when it fails,
/// its halves are checked, and a half that fails next to another failing one is checked one
/// by one (so even a batch of nothing but forgeries costs under twice the single checks).
pub fn verify_tx_signatures(items: &[(&weft_proto::Identity, &SignedTransaction)]) -> Vec<bool> {
    let parsed: Vec<Option<Equation>> = items
        .iter()
        .map(|(signer, tx)| Equation::parse(signer, tx))
        .collect();
    let mut verdicts = vec![false; items.len()];
    let decodable: Vec<usize> = (0..items.len()).filter(|i| parsed[*i].is_some()).collect();
    let equations: Vec<&Equation> = parsed.iter().flatten().collect();
    let mut found = vec![false; equations.len()];
    check_range(&equations, 0..equations.len(), &mut found);
    for (index, good) in decodable.into_iter().zip(found) {
        verdicts[index] = good;
    }
    verdicts
}

/// Whether every signature of `items` verifies (one batch check; which one failed is not
/// looked for: for a message that is refused whole when any fails).
pub fn tx_signatures_all_verify(items: &[(&weft_proto::Identity, &SignedTransaction)]) -> bool {
    let parsed: Option<Vec<Equation>> = items
        .iter()
        .map(|(signer, tx)| Equation::parse(signer, tx))
        .collect();
    parsed.is_some_and(|equations| Equation::all_hold(&equations.iter().collect::<Vec<_>>()))
}

/// Marks in `found` every equation of `range` that holds.
fn check_range(equations: &[&Equation], range: std::ops::Range<usize>, found: &mut [bool]) {
    if range.is_empty() {
        return;
    }
    if Equation::all_hold(&equations[range.clone()]) {
        found[range].iter_mut().for_each(|f| *f = true);
        return;
    }
    if range.len() == 1 {
        return;
    }
    let middle = range.start + range.len() / 2;
    let halves = [range.start..middle, middle..range.end];
    let failing: Vec<_> = halves
        .into_iter()
        .filter(|half| {
            let holds = Equation::all_hold(&equations[half.clone()]);
            if holds {
                found[half.clone()].iter_mut().for_each(|f| *f = true);
            }
            !holds
        })
        .collect();
    match failing.as_slice() {
        // Most likely one forgery: look for it in the half that holds it.
        [one] => {
            let one = one.clone();
            if one.len() > 1 {
                let middle = one.start + one.len() / 2;
                check_range(equations, one.start..middle, found);
                check_range(equations, middle..one.end, found);
            }
        }
        // Failures on both sides: one by one.
        _ => {
            for half in failing {
                for i in half {
                    found[i] = Equation::all_hold(&equations[i..i + 1]);
                }
            }
        }
    }
}

/// One signature's verification equation, decoded: `[s]B = R + [k]A`.
struct Equation {
    s: Scalar,
    r: EdwardsPoint,
    k: Scalar,
    a: EdwardsPoint,
    /// The key's and the signature's bytes, bound into the batch weights.
    key: [u8; 32],
    signature: [u8; 64],
}

impl Equation {
    /// None when the signature is not 64 bytes, `s` is not canonical or `R` does not decode to
    /// a point (an encoding with y at or above p decodes, as ZIP-215 allows; every validator
    /// runs this same code, and only the key's holder could use it).
    fn parse(signer: &weft_proto::Identity, tx: &SignedTransaction) -> Option<Equation> {
        let signature: [u8; 64] = tx.signature.as_ref().try_into().ok()?;
        let (r_bytes, s_bytes) = signature.split_at(32);
        let r_bytes: [u8; 32] = r_bytes.try_into().ok()?;
        let s_bytes: [u8; 32] = s_bytes.try_into().ok()?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
        let r = CompressedEdwardsY(r_bytes).decompress()?;
        let key = signer.verifying_key;
        let mut hash = Sha512::new();
        hash.update(r_bytes);
        hash.update(key.as_bytes());
        // The message is `tx_signing_bytes(payload)`, hashed in its two parts (no copy).
        hash.update(TX_DOMAIN);
        hash.update(&tx.payload);
        let wide: [u8; 64] = hash.finalize().into();
        Some(Equation {
            s,
            r,
            k: Scalar::from_bytes_mod_order_wide(&wide),
            a: key.to_edwards(),
            key: key.to_bytes(),
            signature,
        })
    }

    /// Whether `[8](Σ z_i ([s_i]B - R_i - [k_i]A_i)) = 0` with weights `z_i` of 128 bits drawn
    /// from every equation's bytes: for one equation, exactly its cofactored check; for
    /// several, all of theirs except with probability about 2^-128. The terms of one key are
    /// summed first (`Σ [k_i z_i]A` over the signatures of key A: the same sum, with one point
    /// per key instead of one per signature), so a batch whose transactions come from few
    /// signers costs about n + 1 points in the multiscalar multiplication instead of 2n + 1.
    fn all_hold(equations: &[&Equation]) -> bool {
        if let [one] = equations {
            let sum =
                EdwardsPoint::vartime_double_scalar_mul_basepoint(&-one.k, &one.a, &one.s) - one.r;
            return sum.mul_by_cofactor().is_identity();
        }
        let weights = weights(equations);
        let basepoint: Scalar = equations.iter().zip(&weights).map(|(e, z)| e.s * z).sum();
        let mut keys: BTreeMap<[u8; 32], (&EdwardsPoint, Scalar)> = BTreeMap::new();
        for (e, z) in equations.iter().zip(&weights) {
            let (_, scalar) = keys.entry(e.key).or_insert((&e.a, Scalar::ZERO));
            *scalar -= e.k * z;
        }
        let scalars = std::iter::once(basepoint)
            .chain(weights.iter().map(|z| -z))
            .chain(keys.values().map(|(_, scalar)| *scalar));
        let points = std::iter::once(&ED25519_BASEPOINT_POINT)
            .chain(equations.iter().map(|e| &e.r))
            .chain(keys.values().map(|(point, _)| *point));
        EdwardsPoint::vartime_multiscalar_mul(scalars, points)
            .mul_by_cofactor()
            .is_identity()
    }
}

/// Batch weights: nonzero 128-bit scalars from a hash of every equation's key, signature and
/// `k` (so no signer can choose its signature knowing its weight).
fn weights(equations: &[&Equation]) -> Vec<Scalar> {
    let mut transcript = Sha512::new();
    transcript.update(b"weft.v1/batch-weights\0");
    for e in equations {
        transcript.update(e.key);
        transcript.update(e.signature);
        transcript.update(e.k.as_bytes());
    }
    let seed = transcript.finalize();
    (0..equations.len() as u64)
        .map(|i| {
            let block = Sha512::new()
                .chain_update(seed)
                .chain_update(i.to_le_bytes())
                .finalize();
            let mut bytes = [0u8; 32];
            bytes[..16].copy_from_slice(&block[..16]);
            bytes[0] |= 1;
            Scalar::from_bytes_mod_order(bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{TxId, TxStatus};
    use bytes::Bytes;
    use proptest::prelude::*;
    use weft_proto::signing::tx_signing_bytes;

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
        assert!(!tx_signatures_all_verify(&with_signers(&signers, &txs)));
        // (An even start keeps each transaction with its signer.)
        assert!(tx_signatures_all_verify(&with_signers(
            &signers,
            &txs[2..17]
        )));
        assert!(verify_tx_signatures(&[]).is_empty());
        // Nothing but forgeries: each found (one by one after the halves both fail).
        let (signers, mut forged) = signed_transactions(9);
        for tx in &mut forged {
            let mut signature = tx.signature.to_vec();
            signature[40] ^= 1;
            tx.signature = signature.into();
        }
        assert_eq!(
            verify_tx_signatures(&with_signers(&signers, &forged)),
            [false; 9]
        );
    }

    /// A signature whose `R` carries a point of order 8, made by the key's holder: the strict
    /// rule refuses it, the cofactored rule accepts it, and it must get that one verdict alone
    /// and in every batch (`ed25519_dalek::verify_batch` passes it in about one batch in 8).
    #[test]
    fn a_signature_with_a_small_order_part_gets_one_verdict_in_every_batch() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        use ed25519_dalek::pkcs8::DecodePrivateKey;

        let (signers, txs) = signed_transactions(24);
        let (genesis, _, ca) = crate::test_support::validator_network_with_ca(4, "torsion");
        let issued = ca
            .issue("mallory", weft_proto::Role::Client)
            .expect("issue");
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&issued.key_pem).expect("key");
        let mallory = issued.signer().expect("signer");
        let (_, tx) = weft_proto::tx::sign_transaction(&mallory, &genesis.chain_id, "cc", "f", &[]);
        let mut odd = crate::types::convert::signed_from_pb(tx);
        let nonce: [u8; 64] = Sha512::digest(b"a nonce").into();
        let r = Scalar::from_bytes_mod_order_wide(&nonce);
        let big_r = (EdwardsPoint::mul_base(&r) + EIGHT_TORSION[1]).compress();
        let mut hash = Sha512::new();
        hash.update(big_r.as_bytes());
        hash.update(mallory.identity().verifying_key.as_bytes());
        hash.update(tx_signing_bytes(&odd.payload));
        let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
        let s = r + k * key.to_scalar();
        let mut signature = big_r.to_bytes().to_vec();
        signature.extend_from_slice(s.as_bytes());
        odd.signature = signature.into();
        assert!(
            !mallory
                .identity()
                .verify(&tx_signing_bytes(&odd.payload), &odd.signature),
            "the strict rule refuses it (else this test shows nothing)"
        );

        assert_eq!(verify_tx_signatures(&[(mallory.identity(), &odd)]), [true]);
        let honest = with_signers(&signers, &txs);
        for size in 1..honest.len() {
            for at in [0, size / 2, size] {
                let mut items = honest[..size].to_vec();
                items.insert(at, (mallory.identity(), &odd));
                let verdicts = verify_tx_signatures(&items);
                assert!(verdicts.iter().all(|v| *v), "size {size}, at {at}");
                assert!(tx_signatures_all_verify(&items), "size {size}, at {at}");
            }
        }
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
