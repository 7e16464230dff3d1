//! Commit certificates: after executing a block, each validator signs its header hash; the
//! signatures of 2f+1 distinct validators over one (number, hash) form a certificate that a
//! non-validating peer, a client or `weft ledger verify` checks against the genesis validator
//! set without trusting the peer that served the block. Because each header commits to the one
//! before it, a certificate on block n also vouches for every earlier block.

use crate::genesis::Genesis;
use crate::hashing::{BlockMismatch, check_block};
use crate::identity::{self, Identity, IdentityError};
use crate::pb;
use crate::signing::commit_signing_bytes;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("genesis validator {id}: {reason}")]
    Validator { id: String, reason: String },
    #[error("the certificate's block hash is {0} bytes, not 32")]
    HashLength(usize),
    #[error("the certificate is for block {certified}, not block {expected}")]
    WrongBlock { certified: u64, expected: u64 },
    #[error("the certificate is for another block hash than the block it came with")]
    WrongHash,
    #[error("signature by validator index {0}, which genesis does not list")]
    UnknownValidator(u32),
    #[error("validator {0} signed twice")]
    DuplicateSigner(u32),
    #[error("the signature of validator {0} does not verify")]
    BadSignature(u32),
    #[error("{have} valid signatures, {need} needed (2f+1 of {validators} validators)")]
    TooFew {
        have: usize,
        need: usize,
        validators: usize,
    },
}

/// Why a run of served blocks does not prove its first block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunError {
    #[error("no blocks")]
    Empty,
    #[error("block {expected} was asked for, block {served} was served")]
    WrongStart { expected: u64, served: u64 },
    #[error("block {number}: {reason}")]
    Block { number: u64, reason: BlockMismatch },
    #[error("block {number} is not the block after {previous}, or does not chain to its hash")]
    Broken { number: u64, previous: u64 },
    #[error("block {number} carries a certificate before the end of the run")]
    EarlyCertificate { number: u64 },
    #[error("block {number}, the last of the run, carries no commit certificate")]
    Uncertified { number: u64 },
    #[error("block {number}: commit certificate: {reason}")]
    Certificate {
        number: u64,
        reason: CertificateError,
    },
}

/// The genesis validators' keys, for checking block signatures and certificates.
#[derive(Debug, Clone)]
pub struct Committee {
    chain_id: String,
    validators: Vec<Identity>,
}

impl Committee {
    /// The committee of `genesis`: every validator certificate must be issued by a genesis CA
    /// and carry the validator role.
    pub fn from_genesis(genesis: &Genesis) -> Result<Committee, CertificateError> {
        let cas = genesis.ca_certificates();
        let validators = genesis
            .validators
            .iter()
            .map(|v| {
                let invalid = |reason: String| CertificateError::Validator {
                    id: v.id.clone(),
                    reason,
                };
                let der = identity::pem_to_der(&v.certificate)
                    .ok_or_else(|| invalid("the certificate is not PEM".into()))?;
                let identity = identity::verify_certificate(&der, &cas)
                    .map_err(|e: IdentityError| invalid(e.to_string()))?;
                if identity.role != identity::Role::Validator {
                    return Err(invalid(format!(
                        "the certificate has the role {}, not validator",
                        identity.role
                    )));
                }
                Ok(identity)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Committee {
            chain_id: genesis.chain_id.clone(),
            validators,
        })
    }

    pub fn len(&self) -> usize {
        self.validators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// Signatures a certificate needs: 2f+1, where n = 3f+1 (or more) validators.
    pub fn quorum(&self) -> usize {
        2 * ((self.validators.len().saturating_sub(1)) / 3) + 1
    }

    /// Whether `signature` is validator `validator`'s over block `number` with hash
    /// `block_hash`.
    pub fn verify_signature(
        &self,
        validator: u32,
        number: u64,
        block_hash: &[u8; 32],
        signature: &[u8],
    ) -> Result<(), CertificateError> {
        let identity = self
            .validators
            .get(validator as usize)
            .ok_or(CertificateError::UnknownValidator(validator))?;
        if identity.verify(
            &commit_signing_bytes(&self.chain_id, number, block_hash),
            signature,
        ) {
            Ok(())
        } else {
            Err(CertificateError::BadSignature(validator))
        }
    }

    /// Checks that `certificate` holds valid signatures of at least 2f+1 distinct validators
    /// and returns the block hash it certifies. Every signature must verify: a certificate that
    /// carries a bad one is refused, even with a quorum besides it.
    pub fn verify(
        &self,
        certificate: &pb::CommitCertificate,
    ) -> Result<[u8; 32], CertificateError> {
        let hash: [u8; 32] = certificate
            .block_hash
            .as_ref()
            .try_into()
            .map_err(|_| CertificateError::HashLength(certificate.block_hash.len()))?;
        let mut seen = vec![false; self.validators.len()];
        for signature in &certificate.signatures {
            let index = signature.validator as usize;
            if index >= seen.len() {
                return Err(CertificateError::UnknownValidator(signature.validator));
            }
            if seen[index] {
                return Err(CertificateError::DuplicateSigner(signature.validator));
            }
            seen[index] = true;
            self.verify_signature(
                signature.validator,
                certificate.number,
                &hash,
                &signature.signature,
            )?;
        }
        let have = certificate.signatures.len();
        if have < self.quorum() {
            return Err(CertificateError::TooFew {
                have,
                need: self.quorum(),
                validators: self.validators.len(),
            });
        }
        Ok(hash)
    }

    /// Checks that `run`, consecutive blocks as a peer served them, proves its first block,
    /// which must be block `first`:
    /// each block's transactions and results hash to its header, each header chains to the one
    /// before, and the last block (only the last) carries a certificate of this committee on
    /// its recomputed hash. Nothing the peer claims (a block's carried hash) is trusted.
    pub fn verify_run(&self, first: u64, run: &[pb::Block]) -> Result<(), RunError> {
        let served = run
            .first()
            .ok_or(RunError::Empty)?
            .header
            .as_ref()
            .map_or(0, |h| h.number);
        if served != first {
            return Err(RunError::WrongStart {
                expected: first,
                served,
            });
        }
        let mut previous: Option<(u64, [u8; 32])> = None;
        for (index, block) in run.iter().enumerate() {
            let number = block.header.as_ref().map_or(0, |h| h.number);
            let hash = check_block(block).map_err(|reason| RunError::Block { number, reason })?;
            if let Some((previous_number, previous_hash)) = previous {
                let chained = block.header.as_ref().is_some_and(|h| {
                    h.number == previous_number + 1 && h.previous_hash.as_ref() == previous_hash
                });
                if !chained {
                    return Err(RunError::Broken {
                        number,
                        previous: previous_number,
                    });
                }
            }
            let last = index + 1 == run.len();
            match (&block.certificate, last) {
                (Some(certificate), true) => {
                    return self
                        .verify_block(number, &hash, certificate)
                        .map_err(|reason| RunError::Certificate { number, reason });
                }
                (Some(_), false) => return Err(RunError::EarlyCertificate { number }),
                (None, true) => return Err(RunError::Uncertified { number }),
                (None, false) => {}
            }
            previous = Some((number, hash));
        }
        Err(RunError::Empty)
    }

    /// Checks `certificate` and that it certifies block `number` with hash `block_hash`.
    pub fn verify_block(
        &self,
        number: u64,
        block_hash: &[u8; 32],
        certificate: &pb::CommitCertificate,
    ) -> Result<(), CertificateError> {
        if certificate.number != number {
            return Err(CertificateError::WrongBlock {
                certified: certificate.number,
                expected: number,
            });
        }
        if &self.verify(certificate)? != block_hash {
            return Err(CertificateError::WrongHash);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::{ConsensusKind, ConsensusParams, OrganizationInfo, ValidatorInfo};
    use crate::identity::{CertificateAuthority, Role, Signer};

    fn network_with_ca(validators: usize) -> (Genesis, Vec<Signer>, CertificateAuthority) {
        let ca = CertificateAuthority::generate("Org1").expect("test fixture");
        let mut infos = Vec::new();
        let mut signers = Vec::new();
        for i in 0..validators {
            let issued = ca
                .issue(&format!("validator{i}"), Role::Validator)
                .expect("test fixture");
            infos.push(ValidatorInfo {
                id: format!("validator{i}"),
                certificate: issued.certificate_pem.clone(),
                address: format!("127.0.0.1:{}", 7051 + i),
                consensus_address: String::new(),
            });
            signers.push(issued.signer().expect("test fixture"));
        }
        let genesis = Genesis {
            chain_id: "test-chain".into(),
            organizations: vec![OrganizationInfo {
                name: "Org1".into(),
                ca_certificate: ca.certificate_pem().to_string(),
            }],
            validators: infos,
            consensus: ConsensusParams {
                kind: ConsensusKind::Pbft,
                ..ConsensusParams::default()
            },
        };
        (genesis, signers, ca)
    }

    fn network(validators: usize) -> (Genesis, Vec<Signer>) {
        let (genesis, signers, _) = network_with_ca(validators);
        (genesis, signers)
    }

    fn sign(signers: &[Signer], who: &[u32], number: u64, hash: [u8; 32]) -> pb::CommitCertificate {
        pb::CommitCertificate {
            number,
            block_hash: hash.to_vec().into(),
            signatures: who
                .iter()
                .map(|&i| pb::BlockSignature {
                    validator: i,
                    signature: signers[i as usize]
                        .sign(&commit_signing_bytes("test-chain", number, &hash))
                        .to_vec()
                        .into(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_quorum_of_distinct_valid_signatures_certifies_exactly_its_block() {
        let (genesis, signers) = network(4);
        let committee = Committee::from_genesis(&genesis).expect("test fixture");
        assert_eq!(committee.quorum(), 3);
        let hash = [7u8; 32];
        let certificate = sign(&signers, &[0, 2, 3], 5, hash);
        assert_eq!(committee.verify(&certificate), Ok(hash));
        assert_eq!(committee.verify_block(5, &hash, &certificate), Ok(()));
        assert_eq!(
            committee.verify_block(6, &hash, &certificate),
            Err(CertificateError::WrongBlock {
                certified: 5,
                expected: 6
            })
        );
        assert_eq!(
            committee.verify_block(5, &[8u8; 32], &certificate),
            Err(CertificateError::WrongHash)
        );
    }

    #[test]
    fn too_few_duplicate_unknown_or_bad_signatures_are_refused() {
        let (genesis, signers) = network(7);
        let committee = Committee::from_genesis(&genesis).expect("test fixture");
        assert_eq!(committee.quorum(), 5);
        let hash = [1u8; 32];
        assert_eq!(
            committee.verify(&sign(&signers, &[0, 1, 2, 3], 9, hash)),
            Err(CertificateError::TooFew {
                have: 4,
                need: 5,
                validators: 7
            })
        );
        assert_eq!(
            committee.verify(&sign(&signers, &[0, 1, 2, 3, 3], 9, hash)),
            Err(CertificateError::DuplicateSigner(3))
        );
        let mut unknown = sign(&signers, &[0, 1, 2, 3, 4], 9, hash);
        unknown.signatures[4].validator = 9;
        assert_eq!(
            committee.verify(&unknown),
            Err(CertificateError::UnknownValidator(9))
        );
        // A signature for another block number does not count for this one.
        let mut mixed = sign(&signers, &[0, 1, 2, 3, 4], 9, hash);
        mixed.signatures[4] = sign(&signers, &[4], 10, hash).signatures.remove(0);
        assert_eq!(
            committee.verify(&mixed),
            Err(CertificateError::BadSignature(4))
        );
        // Signed on another chain: the chain id is part of the signed bytes.
        let (other, other_signers) = network(7);
        let foreign = sign(&other_signers, &[0, 1, 2, 3, 4], 9, hash);
        assert!(
            Committee::from_genesis(&other)
                .expect("test fixture")
                .verify(&foreign)
                .is_ok()
        );
        assert!(committee.verify(&foreign).is_err());
        let mut short = sign(&signers, &[0, 1, 2, 3, 4], 9, hash);
        short.block_hash.truncate(31);
        assert_eq!(
            committee.verify(&short),
            Err(CertificateError::HashLength(31))
        );
    }

    #[test]
    fn a_committee_refuses_a_validator_that_is_not_a_validator_of_a_genesis_ca() {
        let (genesis, _, ca) = network_with_ca(4);
        assert!(Committee::from_genesis(&genesis).is_ok());
        // Issued by a CA that genesis does not list.
        let mut foreign = genesis.clone();
        foreign.validators[1].certificate = CertificateAuthority::generate("Org2")
            .expect("test fixture")
            .issue("validator1", Role::Validator)
            .expect("test fixture")
            .certificate_pem;
        assert!(matches!(
            Committee::from_genesis(&foreign),
            Err(CertificateError::Validator { id, .. }) if id == "validator1"
        ));
        // Issued by the genesis CA, but with the peer role.
        let mut peer = genesis.clone();
        peer.validators[2].certificate = ca
            .issue("validator2", Role::Peer)
            .expect("test fixture")
            .certificate_pem;
        assert!(matches!(
            Committee::from_genesis(&peer),
            Err(CertificateError::Validator { id, reason }) if id == "validator2" && reason.contains("peer")
        ));
    }

    /// Blocks `first..first + count`, empty, chained, the last certified by `who`.
    fn run(
        signers: &[Signer],
        who: &[u32],
        first: u64,
        count: u64,
        previous: [u8; 32],
    ) -> Vec<pb::Block> {
        use crate::hashing::{
            HeaderFields, RESULTS_DOMAIN, TRANSACTIONS_DOMAIN, header_hash, merkle_root,
        };
        let empty_transactions = merkle_root(TRANSACTIONS_DOMAIN, &[]);
        let empty_results = merkle_root(RESULTS_DOMAIN, &[]);
        let mut previous = previous;
        let mut blocks = Vec::new();
        for number in first..first + count {
            let state_root = [number as u8; 32];
            let hash = header_hash(HeaderFields {
                number,
                sequence: number,
                previous_hash: &previous,
                transactions_root: &empty_transactions,
                results_root: &empty_results,
                state_root: &state_root,
            });
            blocks.push(pb::Block {
                header: Some(pb::BlockHeader {
                    number,
                    sequence: number,
                    previous_hash: previous.to_vec().into(),
                    transactions_root: empty_transactions.to_vec().into(),
                    results_root: empty_results.to_vec().into(),
                    state_root: state_root.to_vec().into(),
                }),
                transactions: Vec::new(),
                results: Vec::new(),
                hash: hash.to_vec().into(),
                certificate: (number == first + count - 1)
                    .then(|| sign(signers, who, number, hash)),
            });
            previous = hash;
        }
        blocks
    }

    #[test]
    fn a_run_of_served_blocks_proves_its_first_block_only_when_everything_checks() {
        let (genesis, signers) = network(4);
        let committee = Committee::from_genesis(&genesis).expect("test fixture");
        let good = run(&signers, &[0, 1, 3], 7, 4, [9; 32]);
        assert_eq!(committee.verify_run(7, &good), Ok(()));
        assert_eq!(
            committee.verify_run(10, &good[3..]),
            Ok(()),
            "a certified block alone"
        );
        assert_eq!(committee.verify_run(7, &[]), Err(RunError::Empty));
        // A certified block, but not the one asked for.
        assert_eq!(
            committee.verify_run(9, &good[3..]),
            Err(RunError::WrongStart {
                expected: 9,
                served: 10
            })
        );

        // A transaction slipped into block 8: its contents no longer match its header.
        let mut stuffed = good.clone();
        stuffed[1].transactions.push(pb::SignedTx::default());
        stuffed[1].results.push(pb::TxResult::default());
        assert_eq!(
            committee.verify_run(7, &stuffed),
            Err(RunError::Block {
                number: 8,
                reason: BlockMismatch::TransactionsRoot
            })
        );
        // Block 8 swapped for one of another chain, consistent in itself.
        let mut forked = good.clone();
        forked[1] = run(&signers, &[0, 1, 3], 8, 1, [1; 32]).remove(0);
        forked[1].certificate = None;
        assert_eq!(
            committee.verify_run(7, &forked),
            Err(RunError::Broken {
                number: 8,
                previous: 7
            })
        );
        // The carried hash is not what is checked: a header edited with its carried hash
        // left alone no longer matches the certificate.
        let mut edited = good.clone();
        if let Some(header) = edited[3].header.as_mut() {
            header.state_root = vec![0; 32].into();
        }
        assert_eq!(
            committee.verify_run(7, &edited),
            Err(RunError::Certificate {
                number: 10,
                reason: CertificateError::WrongHash
            })
        );
        // Two signatures of four are not a certificate.
        let short = run(&signers, &[0, 1], 7, 4, [9; 32]);
        assert!(matches!(
            committee.verify_run(7, &short),
            Err(RunError::Certificate {
                number: 10,
                reason: CertificateError::TooFew { .. }
            })
        ));
        assert_eq!(
            committee.verify_run(7, &good[..3]),
            Err(RunError::Uncertified { number: 9 })
        );
        let mut early = good.clone();
        early[0].certificate = early[3].certificate.clone();
        assert_eq!(
            committee.verify_run(7, &early),
            Err(RunError::EarlyCertificate { number: 7 })
        );
    }
}
