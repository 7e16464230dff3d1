//! `weft ledger verify`: recomputes every hash of the stored chain and the state root after
//! every block from the blocks' own write sets, checks every transaction's certificate and
//! signature, checks every stored commit certificate (2f+1 genesis validators signing that
//! block's header hash), and compares the result with the stored world state and with the
//! state tree's stored leaves. Names the first mismatch.

use std::collections::HashSet;

use prost::Message;
use weft_proto::{Committee, Genesis, pb, verify_certificate};

use crate::crypto;
use crate::state::leaves::MemoryLeaves;
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
    #[error(
        "the stored state tree leaves (root {stored}) do not match the state the chain produces (root {replayed}): starting the node rebuilds them from the world state"
    )]
    LeavesDiffer { stored: Hash, replayed: Hash },
    #[error("the ledger holds no blocks, not even the genesis block: this is not a node's ledger")]
    Empty,
    #[error("genesis validators: {0}")]
    Committee(weft_proto::CertificateError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub blocks: u64,
    pub transactions: u64,
    pub state_root: Hash,
    pub tip_hash: Hash,
    /// The highest block with a valid commit certificate (0: none beyond block 0). Every block
    /// up to it is vouched for by 2f+1 validators through the hash chain.
    pub certified: u64,
    /// Commit certificates checked.
    pub certificates: u64,
}

pub fn verify_chain(store: &dyn Store, genesis: &Genesis) -> Result<VerifyReport, VerifyError> {
    let height = store.height()?;
    if height == 0 {
        return Err(VerifyError::Empty);
    }
    let cas = genesis.ca_certificates();
    let committee = Committee::from_genesis(genesis).map_err(VerifyError::Committee)?;
    let mut certified = 0;
    let mut certificates = 0;
    let mut tree = StateTree::new();
    let mut leaves = MemoryLeaves::new();
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
        // Block 0 commits to the genesis through its transactions root; it was compared whole above.
        if number > 0
            && let Err(root) = crypto::check_block_roots(&block)
        {
            return Err(mismatch(
                number,
                format!("{root} does not match its contents"),
            ));
        }
        if number > 0 {
            let mut signers = Vec::with_capacity(block.transactions.len());
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
                signers.push(identity);
            }
            let items: Vec<_> = signers.iter().zip(&block.transactions).collect();
            let verdicts = crypto::verify_tx_signatures(&items);
            if let Some(bad) = verdicts.iter().position(|good| !good) {
                return Err(mismatch(
                    number,
                    format!("transaction {}: bad signature", block.transactions[bad].id),
                ));
            }
        }
        tree.apply(block_state_writes(&block), &mut leaves);
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
        if let Some(bytes) = store.certificate(number)? {
            let certificate = pb::CommitCertificate::decode(bytes.as_ref()).map_err(|e| {
                mismatch(
                    number,
                    format!("the stored commit certificate does not decode: {e}"),
                )
            })?;
            committee
                .verify_block(number, &previous.0, &certificate)
                .map_err(|e| mismatch(number, format!("commit certificate: {e}")))?;
            certified = number;
            certificates += 1;
        }
    }
    let (stored, _) = super::state_tree(store)?;
    if stored.root() != tree.root() {
        return Err(VerifyError::StateDiffers {
            stored: stored.root(),
            replayed: tree.root(),
        });
    }
    let (stored, _) = super::stored_tree(store)?;
    if stored.root() != tree.root() {
        return Err(VerifyError::LeavesDiffer {
            stored: stored.root(),
            replayed: tree.root(),
        });
    }
    Ok(VerifyReport {
        blocks: height,
        transactions,
        state_root: tree.root(),
        tip_hash: previous,
        certified,
        certificates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;
    use crate::types::convert::signed_from_pb;
    use crate::types::{
        Block, BlockHeader, KvWrite, NamespaceWrites, SignedTransaction, TxResult, TxStatus,
    };
    use bytes::Bytes;
    use weft_proto::genesis::{ConsensusParams, OrganizationInfo, ValidatorInfo};
    use weft_proto::{CertificateAuthority, Role};

    struct Fixture {
        genesis: Genesis,
        alice: weft_proto::Signer,
        /// Four validators: a certificate needs 2f+1 = 3 of them.
        validators: Vec<weft_proto::Signer>,
    }

    fn fixture() -> Fixture {
        let ca = CertificateAuthority::generate("Org1").expect("ca");
        let issued: Vec<_> = (0..4)
            .map(|i| {
                ca.issue(&format!("validator{i}"), Role::Validator)
                    .expect("issue")
            })
            .collect();
        let alice = ca
            .issue("alice", Role::Client)
            .expect("issue")
            .signer()
            .expect("signer");
        let genesis = Genesis {
            chain_id: "verify".into(),
            organizations: vec![OrganizationInfo {
                name: "Org1".into(),
                ca_certificate: ca.certificate_pem().to_string(),
            }],
            validators: issued
                .iter()
                .enumerate()
                .map(|(i, validator)| ValidatorInfo {
                    id: format!("validator{i}"),
                    certificate: validator.certificate_pem.clone(),
                    address: format!("127.0.0.1:{}", i + 1),
                    consensus_address: format!("127.0.0.1:{}", i + 11),
                })
                .collect(),
            consensus: ConsensusParams::default(),
        };
        Fixture {
            genesis,
            alice,
            validators: issued
                .iter()
                .map(|validator| validator.signer().expect("signer"))
                .collect(),
        }
    }

    fn tx(f: &Fixture, key: &str) -> SignedTransaction {
        let (_, signed) = weft_proto::tx::sign_transaction(
            &f.alice,
            &f.genesis.chain_id,
            "cc",
            "put",
            &[key.as_bytes().to_vec()],
        );
        signed_from_pb(signed)
    }

    fn result(tx: &SignedTransaction, key: &str, value: &str) -> TxResult {
        TxResult {
            tx_id: tx.id,
            status: TxStatus::Valid,
            message: String::new(),
            payload: Bytes::new(),
            event: None,
            writes: vec![NamespaceWrites {
                chaincode: "cc".into(),
                writes: vec![KvWrite {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    value: Some(Bytes::copy_from_slice(value.as_bytes())),
                }],
            }],
        }
    }

    /// Chains `bodies` after block 0 with correct hashes and state roots.
    fn seal(f: &Fixture, bodies: Vec<(Vec<SignedTransaction>, Vec<TxResult>)>) -> Vec<Block> {
        let mut blocks = vec![genesis_block(&f.genesis)];
        let (mut tree, mut leaves) = (StateTree::new(), MemoryLeaves::new());
        for (i, (transactions, results)) in bodies.into_iter().enumerate() {
            let mut block = Block {
                header: BlockHeader {
                    number: i as u64 + 1,
                    sequence: i as u64 + 1,
                    previous_hash: blocks.last().expect("block 0").hash(),
                    transactions_root: crypto::transactions_root(&transactions),
                    results_root: crypto::results_root(&results),
                    state_root: Hash::ZERO,
                },
                transactions,
                results,
            };
            tree.apply(block_state_writes(&block), &mut leaves);
            block.header.state_root = tree.root();
            blocks.push(block);
        }
        blocks
    }

    fn store_of(blocks: &[Block]) -> MemoryStore {
        let store = MemoryStore::new();
        let mut tree = StateTree::new();
        for b in blocks {
            let update = tree.plan(block_state_writes(b), &store).expect("plan");
            store.commit_block(b, update.leaf_writes()).expect("commit");
            tree.adopt(update);
        }
        store
    }

    fn good_bodies(f: &Fixture) -> Vec<(Vec<SignedTransaction>, Vec<TxResult>)> {
        (0..3)
            .map(|i| {
                let t = tx(f, &format!("k{i}"));
                let r = result(&t, &format!("k{i}"), "v");
                (vec![t], vec![r])
            })
            .collect()
    }

    /// A commit certificate on `hash` as block `number`, signed by validators 0, 1 and 2.
    fn certificate(f: &Fixture, number: u64, hash: Hash) -> Vec<u8> {
        certificate_by(f, number, hash, &[0, 1, 2])
    }

    fn certificate_by(f: &Fixture, number: u64, hash: Hash, signers: &[u32]) -> Vec<u8> {
        let bytes = weft_proto::signing::commit_signing_bytes(&f.genesis.chain_id, number, &hash.0);
        pb::CommitCertificate {
            number,
            block_hash: Bytes::copy_from_slice(&hash.0),
            signatures: signers
                .iter()
                .map(|&validator| pb::BlockSignature {
                    validator,
                    signature: Bytes::copy_from_slice(
                        &f.validators[validator as usize].sign(&bytes),
                    ),
                })
                .collect(),
        }
        .encode_to_vec()
    }

    #[test]
    fn stored_commit_certificates_are_checked_and_reported() {
        let f = fixture();
        let blocks = seal(&f, good_bodies(&f));
        let store = store_of(&blocks);
        let report = verify_chain(&store, &f.genesis).expect("verifies");
        assert_eq!((report.certified, report.certificates), (0, 0));
        store
            .put_certificate(2, &certificate(&f, 2, blocks[2].hash()))
            .expect("put");
        let report = verify_chain(&store, &f.genesis).expect("verifies");
        assert_eq!((report.certified, report.certificates), (2, 1));
        // A certificate over another hash (a forked block) is named.
        store
            .put_certificate(3, &certificate(&f, 3, blocks[2].hash()))
            .expect("put");
        let err = verify_chain(&store, &f.genesis).expect_err("wrong certificate");
        assert!(
            err.to_string().contains("block 3: commit certificate"),
            "{err}"
        );
        // On the right hash, but signed by 2f = 2 of the 4 validators, or by one twice.
        for signers in [&[0, 3][..], &[1, 1, 2]] {
            store
                .put_certificate(3, &certificate_by(&f, 3, blocks[3].hash(), signers))
                .expect("put");
            let err = verify_chain(&store, &f.genesis).expect_err("short certificate");
            assert!(
                err.to_string().contains("block 3: commit certificate"),
                "signed by {signers:?}: {err}"
            );
        }
        store
            .put_certificate(3, &certificate_by(&f, 3, blocks[3].hash(), &[3, 1, 2]))
            .expect("put");
        let report = verify_chain(&store, &f.genesis).expect("any three of four certify");
        assert_eq!((report.certified, report.certificates), (3, 2));
    }

    #[test]
    fn an_intact_chain_verifies() {
        let f = fixture();
        let blocks = seal(&f, good_bodies(&f));
        let report = verify_chain(&store_of(&blocks), &f.genesis).expect("verifies");
        assert_eq!(report.blocks, 4);
        assert_eq!(report.transactions, 3);
        assert_eq!(report.tip_hash, blocks[3].hash());
        assert_eq!(report.state_root, blocks[3].header.state_root);
    }

    #[test]
    fn a_changed_result_is_named_at_its_block() {
        let f = fixture();
        let mut blocks = seal(&f, good_bodies(&f));
        blocks[2].results[0].payload = Bytes::from_static(b"forged");
        let err = verify_chain(&store_of(&blocks), &f.genesis).expect_err("tampered");
        assert!(
            matches!(&err, VerifyError::Mismatch { block: 2, what } if what.contains("results root")),
            "{err}"
        );
    }

    #[test]
    fn a_rewritten_block_breaks_the_hash_chain_after_it() {
        let f = fixture();
        let mut bodies = good_bodies(&f);
        let blocks = seal(&f, bodies.clone());
        // Rewrite block 1 consistently, then splice the original later blocks after it.
        let t = tx(&f, "other");
        bodies[0] = (vec![t.clone()], vec![result(&t, "other", "v")]);
        let mut forged = seal(&f, bodies);
        forged[2] = blocks[2].clone();
        forged[3] = blocks[3].clone();
        let err = verify_chain(&store_of(&forged), &f.genesis).expect_err("forged");
        assert!(
            matches!(&err, VerifyError::Mismatch { block: 2, what } if what.contains("previous_hash")),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_state_root_is_named() {
        let f = fixture();
        let mut blocks = seal(&f, good_bodies(&f));
        blocks[3].header.state_root = Hash([9; 32]);
        let err = verify_chain(&store_of(&blocks), &f.genesis).expect_err("bad root");
        assert!(
            matches!(&err, VerifyError::Mismatch { block: 3, what } if what.contains("state root")),
            "{err}"
        );
    }

    #[test]
    fn stored_tree_leaves_that_differ_are_named() {
        let f = fixture();
        let blocks = seal(&f, good_bodies(&f));
        let store = store_of(&blocks);
        store
            .write_leaves(&[(Hash([7; 32]), Some(Hash([7; 32])))])
            .expect("write leaves");
        let err = verify_chain(&store, &f.genesis).expect_err("a leaf no key has");
        assert!(
            matches!(err, VerifyError::LeavesDiffer { replayed, .. } if replayed == blocks[3].header.state_root),
            "{err}"
        );
    }

    #[test]
    fn a_forged_signature_and_a_duplicate_are_caught() {
        let f = fixture();
        let mut bodies = good_bodies(&f);
        let mut bad = bodies[1].0[0].clone();
        let mut sig = bad.signature.to_vec();
        sig[0] ^= 1;
        bad.signature = Bytes::from(sig);
        bodies[1].0[0] = bad;
        let err =
            verify_chain(&store_of(&seal(&f, bodies)), &f.genesis).expect_err("bad signature");
        assert!(
            matches!(&err, VerifyError::Mismatch { block: 2, what } if what.contains("bad signature")),
            "{err}"
        );

        let mut bodies = good_bodies(&f);
        bodies[2] = bodies[0].clone();
        let err = verify_chain(&store_of(&seal(&f, bodies)), &f.genesis).expect_err("duplicate");
        assert!(
            matches!(&err, VerifyError::Mismatch { block: 3, what } if what.contains("twice")),
            "{err}"
        );
    }

    #[test]
    fn another_networks_chain_is_refused() {
        let f = fixture();
        let other = fixture();
        let blocks = seal(&f, good_bodies(&f));
        let err = verify_chain(&store_of(&blocks), &other.genesis).expect_err("other network");
        assert!(
            matches!(&err, VerifyError::Mismatch { block: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn an_empty_store_is_not_a_verified_ledger() {
        let f = fixture();
        let err = verify_chain(&store_of(&[]), &f.genesis).expect_err("empty");
        assert!(matches!(err, VerifyError::Empty), "{err}");
    }
}
