//! Verifies a client's signed transaction at the edge: size, encoding, chain id, certificate
//! (issued by a network CA, cached by hash), role, creator binding and strict Ed25519
//! signature. Only what passes becomes a [`Transaction`]; each refusal says what to fix.

use std::collections::HashMap;
use std::sync::Mutex;

use weft_proto::{Genesis, Identity, IdentityError, verify_certificate};

use crate::crypto::verify_tx_signature;
use crate::types::convert::decode_payload;
use crate::types::{SignedTransaction, Transaction};

/// The largest signed transaction accepted, in bytes.
pub const MAX_TX_BYTES: usize = 1024 * 1024;
/// Verified certificates remembered (by DER hash) to skip re-verification.
const CERT_CACHE: usize = 10_000;

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
    certificates: Mutex<HashMap<[u8; 32], Identity>>,
}

impl Admission {
    pub fn new(genesis: &Genesis) -> Admission {
        Admission {
            chain_id: genesis.chain_id.clone(),
            cas: genesis.ca_certificates(),
            certificates: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies a certificate against the network's CAs, using the cache.
    pub fn identity(&self, der: &[u8]) -> Result<Identity, IdentityError> {
        let key = weft_proto::signing::sha256(der);
        if let Some(id) = self
            .certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(id.clone());
        }
        let id = verify_certificate(der, &self.cas)?;
        let mut cache = self.certificates.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CERT_CACHE {
            cache.clear();
        }
        cache.insert(key, id.clone());
        Ok(id)
    }

    /// Verifies a signed transaction and decodes it.
    pub fn verify(&self, signed: SignedTransaction) -> Result<Transaction, AdmissionError> {
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
        if !verify_tx_signature(&creator.public_key, &signed) {
            return Err(AdmissionError::BadSignature);
        }
        if !creator.role.may_submit() {
            return Err(AdmissionError::RoleMayNotSubmit {
                name: creator.name.clone(),
                role: creator.role,
            });
        }
        Ok(Transaction {
            signed,
            chaincode: payload.chaincode,
            function: payload.function,
            args: payload.args,
            created_unix_ms: payload.created_unix_ms,
            creator,
        })
    }
}
