//! Verifies a client's signed transaction at the edge: size, encoding, chain id, certificate
//! (issued by a network CA, cached by hash), role, creator binding and Ed25519 signature (by
//! the cofactored rule of [`verify_tx_signatures`], in batches where transactions arrive
//! together). Only what passes becomes a [`Transaction`]; each refusal says what to fix.
//!
//! A validator meets each transaction up to three times (from its client, relayed to the
//! primary by the validator that admitted it or resent to all on its request timer, inside
//! the primary's pre-prepare): the signature of exact bytes
//! once verified is remembered by their hash, and not checked again (the check would give the
//! same answer: same bytes, same key, and a verdict that does not depend on the batch).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use weft_proto::{Genesis, Identity, IdentityError, verify_certificate};

use crate::crypto::{transaction_hash, tx_signatures_all_verify, verify_tx_signatures};
use crate::types::convert::{Payload, decode_payload};
use crate::types::{Hash, SignedTransaction, Transaction, TransactionBody};

/// The largest signed transaction accepted, in bytes.
pub const MAX_TX_BYTES: usize = 1024 * 1024;
/// Verified certificates remembered (by DER hash) to skip re-verification.
const CERT_CACHE: usize = 10_000;
/// Verified signatures remembered per generation (two generations: about 13 MB at most).
const VERIFIED_GENERATION: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("the transaction is {size} bytes; the limit is {MAX_TX_BYTES}")]
    TooLarge { size: usize },
    #[error("the transaction payload is not a valid weft.v1.TxPayload: {0}")]
    Malformed(String),
    #[error("the transaction is for chain {got:?}, but this network is {expected:?}")]
    WrongChain { got: String, expected: String },
    #[error("the signer's certificate is not accepted: {0}")]
    Certificate(#[from] IdentityError),
    #[error(
        "the payload's creator does not match the signer's certificate (sign with the same identity whose certificate you send)"
    )]
    CreatorMismatch,
    #[error("the signature does not verify against the signer's certificate")]
    BadSignature,
    #[error(
        "{name} has the role {role}, which may not submit transactions (use a client or admin identity)"
    )]
    RoleMayNotSubmit {
        name: String,
        role: weft_proto::Role,
    },
    #[error("the transaction names no chaincode")]
    NoChaincode,
}

pub struct Admission {
    chain_id: String,
    cas: Vec<Vec<u8>>,
    /// Shared by every transaction of the same signer: a transaction holds its creator by
    /// reference, not a copy of the certificate, names and decoded key per transaction.
    certificates: Mutex<HashMap<[u8; 32], Arc<Identity>>>,
    verified: Mutex<VerifiedSignatures>,
}

/// Hashes of signed transactions (payload, signer, signature) whose signature verified: the
/// current generation and the one before; when the current one is full, the older is dropped.
#[derive(Default)]
struct VerifiedSignatures {
    current: HashSet<Hash>,
    previous: HashSet<Hash>,
}

impl VerifiedSignatures {
    fn contains(&self, hash: &Hash) -> bool {
        self.current.contains(hash) || self.previous.contains(hash)
    }

    fn insert(&mut self, hash: Hash) {
        if self.current.len() >= VERIFIED_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(hash);
    }
}

impl Admission {
    pub fn new(genesis: &Genesis) -> Admission {
        Admission {
            chain_id: genesis.chain_id.clone(),
            cas: genesis.ca_certificates(),
            certificates: Mutex::new(HashMap::new()),
            verified: Mutex::new(VerifiedSignatures::default()),
        }
    }

    /// Verifies a certificate against the network's CAs, using the cache.
    pub fn identity(&self, der: &[u8]) -> Result<Arc<Identity>, IdentityError> {
        let key = weft_proto::signing::sha256(der);
        if let Some(id) = self
            .certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(id.clone());
        }
        let id = Arc::new(verify_certificate(der, &self.cas)?);
        let mut cache = self.certificates.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CERT_CACHE {
            cache.clear();
        }
        cache.insert(key, id.clone());
        Ok(id)
    }

    /// Verifies a signed transaction and decodes it.
    pub fn verify(&self, signed: SignedTransaction) -> Result<Transaction, AdmissionError> {
        self.verify_all(vec![signed])
            .pop()
            .expect("verify_all gives one verdict per transaction")
    }

    /// Verifies signed transactions and decodes them, one verdict each, in their order: every
    /// check but the signature on each, then the signatures not already known verified, in
    /// one batch ([`verify_tx_signatures`]).
    pub fn verify_all(
        &self,
        batch: Vec<SignedTransaction>,
    ) -> Vec<Result<Transaction, AdmissionError>> {
        let mut checked: Vec<Result<Unsigned, AdmissionError>> = batch
            .into_iter()
            .map(|signed| self.check_unsigned(signed))
            .collect();
        let (unknown, verdicts) = {
            let candidates: Vec<&Unsigned> = checked.iter().flatten().collect();
            let unknown = self.not_yet_verified(&candidates);
            let verdicts = verify_tx_signatures(&signature_items(&unknown));
            let hashes: Vec<Hash> = unknown.iter().map(|tx| tx.hash).collect();
            (hashes, verdicts)
        };
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let bad: HashSet<Hash> = unknown
            .into_iter()
            .zip(verdicts)
            .filter_map(|(hash, good)| {
                if good {
                    verified.insert(hash);
                    None
                } else {
                    Some(hash)
                }
            })
            .collect();
        drop(verified);
        for verdict in &mut checked {
            if verdict.as_ref().is_ok_and(|tx| bad.contains(&tx.hash)) {
                *verdict = Err(AdmissionError::BadSignature);
            }
        }
        checked
            .into_iter()
            .map(|c| c.and_then(Unsigned::admit))
            .collect()
    }

    /// Verifies transactions that stand or fall together (a pre-prepare's batch): the first
    /// refusal refuses all, and the signatures not already known are checked in one batch
    /// without looking for which one failed.
    pub fn verify_whole(
        &self,
        batch: Vec<SignedTransaction>,
    ) -> Result<Vec<Transaction>, AdmissionError> {
        let checked = batch
            .into_iter()
            .map(|signed| self.check_unsigned(signed))
            .collect::<Result<Vec<Unsigned>, _>>()?;
        let all: Vec<&Unsigned> = checked.iter().collect();
        let unknown = self.not_yet_verified(&all);
        if !tx_signatures_all_verify(&signature_items(&unknown)) {
            return Err(AdmissionError::BadSignature);
        }
        let hashes: Vec<Hash> = unknown.iter().map(|tx| tx.hash).collect();
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        for hash in hashes {
            verified.insert(hash);
        }
        drop(verified);
        checked.into_iter().map(Unsigned::admit).collect()
    }

    /// Those of `candidates` whose signature is not remembered as verified.
    fn not_yet_verified<'a>(&self, candidates: &[&'a Unsigned]) -> Vec<&'a Unsigned> {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        candidates
            .iter()
            .filter(|tx| !verified.contains(&tx.hash))
            .copied()
            .collect()
    }

    /// Every check but the signature's.
    fn check_unsigned(&self, signed: SignedTransaction) -> Result<Unsigned, AdmissionError> {
        let size = signed.payload.len() + signed.signer.len() + signed.signature.len();
        if size > MAX_TX_BYTES {
            return Err(AdmissionError::TooLarge { size });
        }
        let payload = decode_payload(&signed.payload)
            .map_err(|e| AdmissionError::Malformed(e.to_string()))?;
        if payload.chain_id != self.chain_id {
            return Err(AdmissionError::WrongChain {
                got: payload.chain_id,
                expected: self.chain_id.clone(),
            });
        }
        if payload.chaincode.is_empty() {
            return Err(AdmissionError::NoChaincode);
        }
        let creator = self.identity(&signed.signer)?;
        if payload.creator != creator.certificate_hash() {
            return Err(AdmissionError::CreatorMismatch);
        }
        let hash = transaction_hash(&signed);
        Ok(Unsigned {
            signed,
            payload,
            creator,
            hash,
        })
    }
}

/// The signer and the transaction of each, for the signature checks.
fn signature_items<'a>(txs: &[&'a Unsigned]) -> Vec<(&'a Identity, &'a SignedTransaction)> {
    txs.iter()
        .map(|tx| (tx.creator.as_ref(), &tx.signed))
        .collect()
}

/// A transaction that passed every check but its signature's.
struct Unsigned {
    signed: SignedTransaction,
    payload: Payload,
    creator: Arc<Identity>,
    /// Of the signed bytes: the key of the verified-signature cache, kept by the admitted
    /// transaction.
    hash: Hash,
}

impl Unsigned {
    /// Once its signature verified: the role, then the decoded transaction.
    fn admit(self) -> Result<Transaction, AdmissionError> {
        if !self.creator.role.may_submit() {
            return Err(AdmissionError::RoleMayNotSubmit {
                name: self.creator.name.clone(),
                role: self.creator.role,
            });
        }
        Ok(Transaction::new(TransactionBody {
            signed: self.signed,
            chaincode: self.payload.chaincode,
            function: self.payload.function,
            args: self.payload.args,
            created_unix_ms: self.payload.created_unix_ms,
            creator: self.creator,
            hash: self.hash,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::convert::signed_from_pb;

    fn network() -> (Admission, weft_proto::Signer, String) {
        let (admission, alice, genesis) = crate::test_support::admission_and_client("admission");
        (admission, alice, genesis.chain_id)
    }

    #[test]
    fn a_signature_is_verified_once_and_a_changed_one_is_still_refused() {
        let (admission, alice, chain) = network();
        let (_, tx) = weft_proto::tx::sign_transaction(&alice, &chain, "cc", "f", &[]);
        admission
            .verify(signed_from_pb(tx.clone()))
            .expect("first time");
        assert_eq!(admission.verified.lock().expect("lock").current.len(), 1);
        // Again (relayed, then in a pre-prepare): accepted from the remembered check.
        admission.verify(signed_from_pb(tx.clone())).expect("again");
        // The same payload and signer with another signature is other bytes: checked, refused.
        let mut forged = tx.clone();
        let mut signature = forged.signature.to_vec();
        signature[5] ^= 1;
        forged.signature = signature.into();
        assert!(matches!(
            admission.verify(signed_from_pb(forged)),
            Err(AdmissionError::BadSignature)
        ));
        // A signature never verified is checked even when another of the signer's is known.
        let (_, other) = weft_proto::tx::sign_transaction(&alice, &chain, "cc", "g", &[]);
        let mut other_forged = other;
        other_forged.signature = tx.signature.clone();
        assert!(matches!(
            admission.verify(signed_from_pb(other_forged)),
            Err(AdmissionError::BadSignature)
        ));
    }

    #[test]
    fn transactions_of_one_signer_share_its_identity() {
        let (admission, alice, chain) = network();
        let sign = |function: &str| {
            signed_from_pb(weft_proto::tx::sign_transaction(&alice, &chain, "cc", function, &[]).1)
        };
        let verdicts = admission.verify_all(vec![sign("a"), sign("b")]);
        let one = admission.verify(sign("c")).expect("admissible");
        let [Ok(a), Ok(b)] = &verdicts[..] else {
            panic!("both admissible: {verdicts:?}");
        };
        assert_eq!(a.creator.name, "alice");
        assert!(Arc::ptr_eq(&a.creator, &b.creator) && Arc::ptr_eq(&a.creator, &one.creator));
    }

    #[test]
    fn a_batch_gives_each_transaction_its_own_verdict_and_remembers_only_good_signatures() {
        let (admission, alice, chain) = network();
        let sign = |function: &str, chain: &str| {
            signed_from_pb(weft_proto::tx::sign_transaction(&alice, chain, "cc", function, &[]).1)
        };
        let good = sign("a", &chain);
        let mut bad = sign("b", &chain);
        bad.signature = good.signature.clone();
        let elsewhere = sign("c", "another-chain");
        let also_good = sign("d", &chain);
        let verdicts = admission.verify_all(vec![good.clone(), bad, elsewhere, also_good.clone()]);
        assert!(verdicts[0].as_ref().is_ok_and(|tx| tx.function == "a"));
        assert!(matches!(verdicts[1], Err(AdmissionError::BadSignature)));
        assert!(matches!(
            verdicts[2],
            Err(AdmissionError::WrongChain { .. })
        ));
        assert!(verdicts[3].as_ref().is_ok_and(|tx| tx.function == "d"));
        let verified = admission.verified.lock().expect("lock");
        assert_eq!(verified.current.len(), 2);
        assert!(
            verified.contains(&transaction_hash(&good))
                && verified.contains(&transaction_hash(&also_good))
        );
    }

    #[test]
    fn remembered_signatures_are_bounded_by_two_generations() {
        let mut set = VerifiedSignatures::default();
        let hash = |i: usize| {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Hash(bytes)
        };
        for i in 0..=VERIFIED_GENERATION {
            set.insert(hash(i));
        }
        // The first generation moved to `previous`; both are still known.
        assert!(set.contains(&hash(0)) && set.contains(&hash(VERIFIED_GENERATION)));
        for i in 0..VERIFIED_GENERATION {
            set.insert(hash(VERIFIED_GENERATION + 1 + i));
        }
        assert!(!set.contains(&hash(0)), "the oldest generation is dropped");
        assert!(set.current.len() + set.previous.len() <= 2 * VERIFIED_GENERATION);
    }
}
