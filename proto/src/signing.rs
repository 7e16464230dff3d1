//! Canonical signing bytes and transaction ids. Every signature in Weft is Ed25519 over a
//! domain-separated message (`"weft.v1/<kind>\0" || body`), so a signature made for one purpose
//! can never be replayed as another; transaction ids are SHA-256 of the exact payload bytes.

use std::fmt;

use sha2::{Digest, Sha256};

/// Domain of client transaction signatures.
pub const TX_DOMAIN: &[u8] = b"weft.v1/tx\0";
/// Domain of chaincode package installation requests.
pub const INSTALL_DOMAIN: &[u8] = b"weft.v1/install\0";

/// Domain of validator consensus messages, signed by the message's SHA-256 (a different tag
/// from the one of whole messages, which ended on 2026-11-27: a signature under one rule can
/// never be read under the other).
pub const CONSENSUS_DOMAIN: &[u8] = b"weft.v1/consensus-sha256\0";

/// Domain of validators' signatures over executed block headers (commit certificates).
pub const COMMIT_DOMAIN: &[u8] = b"weft.v1/commit\0";

/// The bytes a validator signs to vouch that block `number` of chain `chain_id` has header hash
/// `block_hash`.
pub fn commit_signing_bytes(chain_id: &str, number: u64, block_hash: &[u8; 32]) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + 8 + 32);
    body.extend_from_slice(&Sha256::digest(chain_id.as_bytes()));
    body.extend_from_slice(&number.to_be_bytes());
    body.extend_from_slice(block_hash);
    domain_message(COMMIT_DOMAIN, &body)
}

/// The bytes a validator signs for an encoded `ConsensusMessage` on chain `chain_id`: the chain
/// id and the message, each hashed to a fixed width (so a signature for one network never
/// verifies on another). The message is signed by its SHA-256, as a package is: a pre-prepare
/// or a relayed batch carries hundreds of transactions, and Ed25519 would hash them with
/// SHA-512 twice to sign and once more per verifier, where SHA-256 runs on the CPU's SHA
/// instructions at twice the speed or more, once.
pub fn consensus_signing_bytes(chain_id: &str, message: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&Sha256::digest(chain_id.as_bytes()));
    body.extend_from_slice(&Sha256::digest(message));
    domain_message(CONSENSUS_DOMAIN, &body)
}

/// The bytes a client signs for a transaction whose encoded payload is `payload`.
pub fn tx_signing_bytes(payload: &[u8]) -> Vec<u8> {
    domain_message(TX_DOMAIN, payload)
}

/// The bytes an admin signs to install a package.
pub fn install_signing_bytes(package: &[u8]) -> Vec<u8> {
    domain_message(INSTALL_DOMAIN, &Sha256::digest(package))
}

fn domain_message(domain: &[u8], body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(domain.len() + body.len());
    message.extend_from_slice(domain);
    message.extend_from_slice(body);
    message
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A transaction id: SHA-256 of the encoded `TxPayload`, exactly as signed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub [u8; 32]);

impl TxId {
    /// The id of the transaction whose encoded payload is `payload`.
    pub fn of_payload(payload: &[u8]) -> Self {
        TxId(sha256(payload))
    }

    /// Parses an id from its 32 raw bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(TxId)
    }

    /// Parses an id from 64 hex characters.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Self::from_slice(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxId({})", &self.to_hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate_signing_bytes() {
        let body = b"same body";
        assert_ne!(tx_signing_bytes(body), install_signing_bytes(body));
        assert!(tx_signing_bytes(body).starts_with(TX_DOMAIN));
    }

    #[test]
    fn consensus_messages_are_signed_by_their_hash_under_their_chain() {
        let batch = vec![7u8; 100_000];
        let signed = consensus_signing_bytes("one", &batch);
        assert_eq!(
            signed.len(),
            CONSENSUS_DOMAIN.len() + 64,
            "a fixed width, whatever the message's size"
        );
        assert!(signed.starts_with(CONSENSUS_DOMAIN));
        assert_ne!(signed, consensus_signing_bytes("two", &batch));
        let mut changed = batch.clone();
        changed[99_999] = 8;
        assert_ne!(signed, consensus_signing_bytes("one", &changed));
        // The construction other implementations follow: the domain, then the SHA-256 of the
        // chain id, then the SHA-256 of the encoded message.
        let expected: Vec<u8> = [
            b"weft.v1/consensus-sha256\0".as_slice(),
            Sha256::digest(b"one").as_slice(),
            Sha256::digest(&batch).as_slice(),
        ]
        .concat();
        assert_eq!(signed, expected);
    }

    #[test]
    fn tx_id_round_trips_through_hex() {
        let id = TxId::of_payload(b"payload");
        assert_eq!(TxId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(TxId::from_hex("zz"), None);
        assert_eq!(TxId::from_slice(&[0u8; 31]), None);
    }
}
