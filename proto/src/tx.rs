//! Building and signing transactions, and the system chaincode's calls. A transaction is
//! encoded once; its bytes are what is signed, hashed into the id and stored.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use rand::RngCore;

use crate::identity::Signer;
use crate::pb;
use crate::signing::{TxId, tx_signing_bytes};

/// The system chaincode that deploys and upgrades chaincode.
pub const LIFECYCLE_CHAINCODE: &str = "_lifecycle";
/// `_lifecycle` function: args = [name, version, package hash (hex), init function, init args...];
/// without an init function, init is called with function "init" and no arguments.
pub const LIFECYCLE_DEPLOY: &str = "deploy";
/// `_lifecycle` query: no args; answers the deployed chaincode as a JSON array of
/// [`ChaincodeDefinition`].
pub const LIFECYCLE_LIST: &str = "list";

/// A deployed chaincode, as the lifecycle records it on the ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChaincodeDefinition {
    pub name: String,
    pub version: String,
    /// The package's hash, hex.
    pub package_hash: String,
}

/// Encodes, signs and returns a transaction and its id.
pub fn sign_transaction(
    signer: &Signer,
    chain_id: &str,
    chaincode: &str,
    function: &str,
    args: &[Vec<u8>],
) -> (TxId, pb::SignedTx) {
    let mut nonce = vec![0u8; 24];
    rand::thread_rng().fill_bytes(&mut nonce);
    let created_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let payload = pb::TxPayload {
        chain_id: chain_id.to_string(),
        chaincode: chaincode.to_string(),
        function: function.to_string(),
        args: args.iter().map(|a| Bytes::copy_from_slice(a)).collect(),
        nonce: nonce.into(),
        created_unix_ms,
        creator: Bytes::copy_from_slice(&signer.identity().certificate_hash()),
    };
    sign_payload(signer, &payload)
}

/// Signs an already built payload (tests use this to craft unusual transactions).
pub fn sign_payload(signer: &Signer, payload: &pb::TxPayload) -> (TxId, pb::SignedTx) {
    let payload = payload.encode_to_vec();
    let signature = signer.sign(&tx_signing_bytes(&payload));
    let id = TxId::of_payload(&payload);
    (
        id,
        pb::SignedTx {
            payload: payload.into(),
            signer: Bytes::copy_from_slice(&signer.identity().certificate),
            signature: Bytes::copy_from_slice(&signature),
        },
    )
}

/// The arguments of a `_lifecycle` deploy transaction; `init_args` starts with the init
/// function's name when the chaincode's init needs one.
pub fn deploy_args(
    name: &str,
    version: &str,
    package_hash: &str,
    init_args: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    let mut args = vec![
        name.as_bytes().to_vec(),
        version.as_bytes().to_vec(),
        package_hash.as_bytes().to_vec(),
    ];
    args.extend(init_args.iter().cloned());
    args
}

/// Turns string arguments into the byte arguments a transaction carries.
pub fn string_args<S: AsRef<str>>(args: &[S]) -> Vec<Vec<u8>> {
    args.iter()
        .map(|a| a.as_ref().as_bytes().to_vec())
        .collect()
}
