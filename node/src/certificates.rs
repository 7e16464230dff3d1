//! Commit certificates (DESIGN 2): after appending a block it executed, a validator signs the
//! header hash (under PBFT, of every checkpoint block: a block per sequence would add a message
//! per block to every link, and the hash chain extends each certificate backwards) and sends
//! the signature to the other validators; signatures of 2f+1 distinct
//! validators over this peer's own block form its certificate, which is stored and served with
//! the block. A certificate on block n vouches for every block before it through the hash
//! chain, so a lost signature never needs to be recovered: the next certificate covers it.
//!
//! Invariants: only a certificate that matches this peer's own block is formed or stored; at
//! most one vote per validator and block number is kept, and only for blocks within
//! [`HORIZON`] of the tip, so a flooding validator cannot grow memory without bound.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost::Message;
use tokio::sync::watch;
use weft_proto::signing::commit_signing_bytes;
use weft_proto::{CertificateError, Committee, Signer, pb};

use crate::ledger::Ledger;
use crate::storage::StoreError;
use crate::types::{Block, Hash};

/// How far above the local tip a vote may be and still be kept.
pub const HORIZON: u64 = 1024;

/// What a validator broadcasts after signing one of its blocks.
pub type Broadcast = Box<dyn Fn(pb::BlockSigned) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored commit certificate is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Invalid(#[from] CertificateError),
}

/// Why a vote was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    Kept,
    /// Block already covered by a stored certificate.
    AlreadyCertified,
    /// Further above the tip than [`HORIZON`].
    TooFarAhead,
    /// This validator already voted for this block number.
    Duplicate,
}

/// One validator's own signing key, for the blocks it executes.
pub struct OwnKey {
    pub index: u32,
    pub signer: Signer,
    pub broadcast: Broadcast,
    /// Sign the blocks whose number is a multiple of this (the checkpoint period under PBFT,
    /// 1 for a solo validator).
    pub every: u64,
}

struct Votes {
    /// number -> validator -> (hash, signature)
    by_number: BTreeMap<u64, BTreeMap<u32, (Hash, Bytes)>>,
}

pub struct Certificates {
    committee: Committee,
    chain_id: String,
    ledger: Arc<Ledger>,
    own: Option<OwnKey>,
    votes: Mutex<Votes>,
    certified: watch::Sender<u64>,
}

impl Certificates {
    /// `own` is set on validators (they sign), absent on non-validating peers.
    pub fn new(
        committee: Committee,
        chain_id: &str,
        ledger: Arc<Ledger>,
        own: Option<OwnKey>,
    ) -> Result<Certificates, CertifyError> {
        // Block 0 is defined by genesis itself.
        let last = ledger.store().last_certified()?.unwrap_or(0);
        Ok(Certificates {
            committee,
            chain_id: chain_id.to_string(),
            ledger,
            own,
            votes: Mutex::new(Votes {
                by_number: BTreeMap::new(),
            }),
            certified: watch::channel(last).0,
        })
    }

    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// The highest block number with a stored certificate (0 before any).
    pub fn last_certified(&self) -> u64 {
        *self.certified.borrow()
    }

    /// Follows [`Certificates::last_certified`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.certified.subscribe()
    }

    /// The stored certificate of block `number`, if any.
    pub fn certificate(&self, number: u64) -> Result<Option<pb::CommitCertificate>, CertifyError> {
        let Some(bytes) = self.ledger.store().certificate(number)? else {
            return Ok(None);
        };
        pb::CommitCertificate::decode(bytes.as_ref())
            .map(Some)
            .map_err(|e| CertifyError::Corrupt(format!("block {number}: {e}")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Votes> {
        self.votes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A validator appended `block` after executing it: sign it, count the own vote, send it to
    /// the others, and certify the block if enough votes are in.
    pub fn executed(&self, block: &Block) -> Result<(), CertifyError> {
        let Some(own) = &self.own else {
            return Ok(());
        };
        if !block.number().is_multiple_of(own.every.max(1)) {
            return Ok(());
        }
        let hash = block.hash();
        let signature = own.signer.sign(&commit_signing_bytes(
            &self.chain_id,
            block.number(),
            &hash.0,
        ));
        let signature = Bytes::copy_from_slice(&signature);
        self.vote(own.index, block.number(), hash, signature.clone());
        (own.broadcast)(pb::BlockSigned {
            number: block.number(),
            block_hash: Bytes::copy_from_slice(&hash.0),
            signature,
        });
        self.try_certify(block.number(), hash)
    }

    /// A block reached the chain by another path (state transfer): votes that arrived for it
    /// may now form its certificate.
    pub fn appended(&self, block: &Block) -> Result<(), CertifyError> {
        self.try_certify(block.number(), block.hash())
    }

    /// Counts a vote whose signature the network edge verified.
    pub fn vote(&self, validator: u32, number: u64, hash: Hash, signature: Bytes) -> VoteOutcome {
        if number <= self.last_certified() {
            return VoteOutcome::AlreadyCertified;
        }
        if number > self.ledger.tip().height + HORIZON {
            return VoteOutcome::TooFarAhead;
        }
        let mut votes = self.lock();
        let entry = votes.by_number.entry(number).or_default();
        if entry.contains_key(&validator) {
            return VoteOutcome::Duplicate;
        }
        entry.insert(validator, (hash, signature));
        VoteOutcome::Kept
    }

    /// Counts a verified vote from another validator and certifies its block if this peer
    /// holds that block and enough votes agree with it.
    pub fn received(
        &self,
        validator: u32,
        number: u64,
        hash: Hash,
        signature: Bytes,
    ) -> Result<VoteOutcome, CertifyError> {
        let outcome = self.vote(validator, number, hash, signature);
        if outcome == VoteOutcome::Kept
            && number < self.ledger.tip().height
            && let Some(block) = self.ledger.block(number).map_err(ledger_error)?
        {
            self.try_certify(number, block.hash())?;
        }
        Ok(outcome)
    }

    fn try_certify(&self, number: u64, own_hash: Hash) -> Result<(), CertifyError> {
        let certificate = {
            let votes = self.lock();
            let Some(entry) = votes.by_number.get(&number) else {
                return Ok(());
            };
            let signatures: Vec<pb::BlockSignature> = entry
                .iter()
                .filter(|(_, (hash, _))| *hash == own_hash)
                .map(|(validator, (_, signature))| pb::BlockSignature {
                    validator: *validator,
                    signature: signature.clone(),
                })
                .collect();
            if signatures.len() < self.committee.quorum() {
                return Ok(());
            }
            pb::CommitCertificate {
                number,
                block_hash: Bytes::copy_from_slice(&own_hash.0),
                signatures,
            }
        };
        self.store(&certificate)
    }

    /// Stores `certificate` (already checked, or formed from checked votes) and forgets the
    /// votes it makes useless.
    fn store(&self, certificate: &pb::CommitCertificate) -> Result<(), CertifyError> {
        let number = certificate.number;
        self.ledger
            .store()
            .put_certificate(number, &certificate.encode_to_vec())?;
        self.certified.send_if_modified(|last| {
            if number > *last {
                *last = number;
                true
            } else {
                false
            }
        });
        let last = self.last_certified();
        let mut votes = self.lock();
        votes.by_number = votes.by_number.split_off(&(last + 1));
        tracing::debug!(block = number, "commit certificate formed");
        Ok(())
    }

    /// Stores a certificate the caller checked against the committee and this peer's block
    /// (a follower checks it before it applies the blocks it covers).
    pub fn keep_checked(&self, certificate: &pb::CommitCertificate) -> Result<(), CertifyError> {
        self.store(certificate)
    }

    /// Votes held (for tests and metrics).
    pub fn pending_votes(&self) -> usize {
        self.lock().by_number.values().map(BTreeMap::len).sum()
    }
}

fn ledger_error(e: crate::ledger::LedgerError) -> CertifyError {
    match e {
        crate::ledger::LedgerError::Store(e) => CertifyError::Store(e),
        other => CertifyError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use weft_proto::Genesis;

    use super::*;
    use crate::storage::MemoryStore;

    struct Net {
        genesis: Genesis,
        signers: Vec<Signer>,
    }

    fn net(n: usize) -> Net {
        let (genesis, signers) = crate::test_support::validator_network(n, "certs");
        Net { genesis, signers }
    }

    fn vote(net: &Net, validator: u32, number: u64, hash: Hash) -> Bytes {
        Bytes::copy_from_slice(
            &net.signers[validator as usize].sign(&commit_signing_bytes("certs", number, &hash.0)),
        )
    }

    #[test]
    fn a_pbft_validator_signs_only_checkpoint_blocks() {
        let net = net(4);
        let (ledger, mut certificates, sent) = validator(&net, 0);
        if let Some(own) = certificates.own.as_mut() {
            own.every = 2;
        }
        let first = ledger.append(1, vec![], vec![]).expect("append");
        certificates.executed(&first).expect("executed");
        assert!(
            sent.lock().expect("outbox").is_empty(),
            "block 1 is not signed"
        );
        let second = ledger.append(2, vec![], vec![]).expect("append");
        certificates.executed(&second).expect("executed");
        let sent = sent.lock().expect("outbox");
        assert_eq!(sent.iter().map(|m| m.number).collect::<Vec<_>>(), [2]);
    }

    fn validator(
        net: &Net,
        index: u32,
    ) -> (
        Arc<Ledger>,
        Certificates,
        Arc<StdMutex<Vec<pb::BlockSigned>>>,
    ) {
        let ledger = Arc::new(
            Ledger::open(Arc::new(MemoryStore::new()), &net.genesis).expect("test fixture"),
        );
        let sent = Arc::new(StdMutex::new(Vec::new()));
        let outbox = sent.clone();
        let certificates = Certificates::new(
            Committee::from_genesis(&net.genesis).expect("test fixture"),
            "certs",
            ledger.clone(),
            Some(OwnKey {
                index,
                signer: net.signers[index as usize].clone(),
                broadcast: Box::new(move |m| outbox.lock().expect("test fixture").push(m)),
                every: 1,
            }),
        )
        .expect("test fixture");
        (ledger, certificates, sent)
    }

    #[test]
    fn a_block_is_certified_by_its_own_vote_and_2f_matching_others() {
        let net = net(4);
        let (ledger, certificates, sent) = validator(&net, 0);
        let block = ledger.append(1, vec![], vec![]).expect("test fixture");
        let hash = block.hash();
        certificates.executed(&block).expect("test fixture");
        let broadcast = sent.lock().expect("test fixture").clone();
        assert_eq!(broadcast.len(), 1, "the own vote is sent to the others");
        assert_eq!(broadcast[0].number, 1);
        assert_eq!(certificates.last_certified(), 0, "one vote is not a quorum");
        // A vote for another hash never counts towards this block.
        certificates
            .received(1, 1, Hash([9; 32]), vote(&net, 1, 1, Hash([9; 32])))
            .expect("test fixture");
        assert_eq!(certificates.last_certified(), 0);
        certificates
            .received(2, 1, hash, vote(&net, 2, 1, hash))
            .expect("test fixture");
        assert_eq!(certificates.last_certified(), 0);
        certificates
            .received(3, 1, hash, vote(&net, 3, 1, hash))
            .expect("test fixture");
        assert_eq!(certificates.last_certified(), 1);
        let certificate = certificates
            .certificate(1)
            .expect("test fixture")
            .expect("stored");
        let committee = Committee::from_genesis(&net.genesis).expect("test fixture");
        committee
            .verify_block(1, &hash.0, &certificate)
            .expect("test fixture");
        assert_eq!(
            certificates.pending_votes(),
            0,
            "votes at or below it are dropped"
        );
        assert_eq!(
            certificates.vote(1, 1, hash, vote(&net, 1, 1, hash)),
            VoteOutcome::AlreadyCertified
        );
    }

    #[test]
    fn votes_that_arrive_before_the_block_count_once_it_is_appended() {
        let net = net(4);
        let (ledger, certificates, _) = validator(&net, 1);
        // Validators 0 and 2 executed block 1 first; this one has not.
        let other = Ledger::open(Arc::new(MemoryStore::new()), &net.genesis).expect("test fixture");
        let block = other.append(1, vec![], vec![]).expect("test fixture");
        let hash = block.hash();
        for v in [0, 2] {
            assert_eq!(
                certificates
                    .received(v, 1, hash, vote(&net, v, 1, hash))
                    .expect("test fixture"),
                VoteOutcome::Kept
            );
        }
        assert_eq!(
            certificates
                .received(0, 1, hash, vote(&net, 0, 1, hash))
                .expect("test fixture"),
            VoteOutcome::Duplicate
        );
        assert_eq!(certificates.last_certified(), 0);
        let own = ledger.append(1, vec![], vec![]).expect("test fixture");
        assert_eq!(own.hash(), hash);
        certificates.executed(&own).expect("test fixture");
        assert_eq!(certificates.last_certified(), 1);
    }

    #[test]
    fn votes_far_above_the_tip_are_not_kept() {
        let net = net(4);
        let (_, certificates, _) = validator(&net, 0);
        let hash = Hash([1; 32]);
        assert_eq!(
            certificates.vote(2, HORIZON + 5, hash, vote(&net, 2, HORIZON + 5, hash)),
            VoteOutcome::TooFarAhead
        );
        assert_eq!(certificates.pending_votes(), 0);
    }

    #[test]
    fn a_follower_keeps_the_certificates_it_checked_and_signs_nothing() {
        let net = net(4);
        let ledger = Arc::new(
            Ledger::open(Arc::new(MemoryStore::new()), &net.genesis).expect("test fixture"),
        );
        let certificates = Certificates::new(
            Committee::from_genesis(&net.genesis).expect("test fixture"),
            "certs",
            ledger.clone(),
            None,
        )
        .expect("test fixture");
        let block = ledger.append(1, vec![], vec![]).expect("test fixture");
        let hash = block.hash();
        let certificate = |hash: Hash, who: &[u32]| pb::CommitCertificate {
            number: 1,
            block_hash: Bytes::copy_from_slice(&hash.0),
            signatures: who
                .iter()
                .map(|&v| pb::BlockSignature {
                    validator: v,
                    signature: vote(&net, v, 1, hash),
                })
                .collect(),
        };
        // The follower checks a certificate (`peer::follower::Run`) before it applies the
        // blocks; then it keeps it, and serves it like a validator does.
        let checked = certificate(hash, &[0, 1, 3]);
        Committee::from_genesis(&net.genesis)
            .expect("test fixture")
            .verify_block(1, &hash.0, &checked)
            .expect("a quorum over this block");
        assert_eq!(certificates.last_certified(), 0);
        certificates.keep_checked(&checked).expect("stored");
        assert_eq!(certificates.last_certified(), 1);
        assert_eq!(certificates.certificate(1).expect("read"), Some(checked));
        // A follower signs nothing.
        certificates.executed(&block).expect("test fixture");
        assert_eq!(certificates.pending_votes(), 0);
    }
}
