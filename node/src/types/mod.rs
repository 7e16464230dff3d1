//! Domain types of the peer: hashes, transactions, blocks and their results. Nothing here
//! knows the wire format; `convert` is the only place where these meet the proto types.

pub mod convert;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use weft_proto::Identity;
pub use weft_proto::TxId;

/// A SHA-256 hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub const ZERO: Hash = Hash([0; 32]);

    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        <[u8; 32]>::try_from(bytes).ok().map(Hash)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Hash> {
        Hash::from_slice(&hex::decode(text.trim()).ok()?)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..16])
    }
}

/// A transaction exactly as signed and stored: the payload bytes are never re-encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTransaction {
    pub id: TxId,
    pub payload: Bytes,
    pub signer: Bytes,
    pub signature: Bytes,
}

/// A signed transaction whose signature and certificate were verified at the edge, decoded.
#[derive(Clone, Debug)]
pub struct Transaction {
    pub signed: SignedTransaction,
    pub chaincode: String,
    pub function: String,
    pub args: Vec<Bytes>,
    pub created_unix_ms: u64,
    /// Shared with every transaction of the same signer (the admission's certificate cache).
    pub creator: Arc<Identity>,
}

impl Transaction {
    pub fn id(&self) -> TxId {
        self.signed.id
    }

    /// For unit tests that need a decoded transaction but no signature: `function(args)` of
    /// chaincode "cc" by alice (a client), unsigned, with an all-zero id.
    #[cfg(test)]
    pub fn unsigned_for_tests(function: &str, args: &[&[u8]]) -> Transaction {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        Transaction {
            signed: SignedTransaction {
                id: TxId([0; 32]),
                payload: Bytes::new(),
                signer: Bytes::new(),
                signature: Bytes::new(),
            },
            chaincode: "cc".to_string(),
            function: function.to_string(),
            args: args.iter().map(|a| Bytes::copy_from_slice(a)).collect(),
            created_unix_ms: 0,
            creator: Arc::new(Identity {
                name: "alice".to_string(),
                organization: "Org1".to_string(),
                role: weft_proto::Role::Client,
                verifying_key: key.verifying_key(),
                certificate: Vec::new(),
            }),
        }
    }
}

/// Two transactions are the same when their signed bytes are: everything else is decoded from
/// them.
impl PartialEq for Transaction {
    fn eq(&self, other: &Transaction) -> bool {
        self.signed == other.signed
    }
}

impl Eq for Transaction {}

/// How a committed transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxStatus {
    Valid,
    ChaincodeError,
    ChaincodeNotFound,
    ChaincodeCrashed,
    ExecutionTimeout,
    Forbidden,
}

impl TxStatus {
    /// The stable code hashed into the results root.
    pub fn code(self) -> u8 {
        match self {
            TxStatus::Valid => 1,
            TxStatus::ChaincodeError => 2,
            TxStatus::ChaincodeNotFound => 3,
            TxStatus::ChaincodeCrashed => 4,
            TxStatus::ExecutionTimeout => 5,
            TxStatus::Forbidden => 6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TxStatus::Valid => "VALID",
            TxStatus::ChaincodeError => "CHAINCODE_ERROR",
            TxStatus::ChaincodeNotFound => "CHAINCODE_NOT_FOUND",
            TxStatus::ChaincodeCrashed => "CHAINCODE_CRASHED",
            TxStatus::ExecutionTimeout => "EXECUTION_TIMEOUT",
            TxStatus::Forbidden => "FORBIDDEN",
        }
    }
}

impl fmt::Display for TxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One write; `None` deletes the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvWrite {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// The writes of a transaction to one chaincode's namespace, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceWrites {
    pub chaincode: String,
    pub writes: Vec<KvWrite>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChaincodeEvent {
    pub chaincode: String,
    pub name: String,
    pub payload: Bytes,
}

/// The outcome of one transaction, stored in its block beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxResult {
    pub tx_id: TxId,
    pub status: TxStatus,
    pub message: String,
    pub payload: Bytes,
    pub event: Option<ChaincodeEvent>,
    pub writes: Vec<NamespaceWrites>,
}

impl TxResult {
    pub fn failed(tx_id: TxId, status: TxStatus, message: impl Into<String>) -> TxResult {
        TxResult {
            tx_id,
            status,
            message: message.into(),
            payload: Bytes::new(),
            event: None,
            writes: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    pub number: u64,
    pub sequence: u64,
    pub previous_hash: Hash,
    pub transactions_root: Hash,
    pub results_root: Hash,
    pub state_root: Hash,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub header: BlockHeader,
    pub transactions: Vec<SignedTransaction>,
    pub results: Vec<TxResult>,
}

impl Block {
    pub fn number(&self) -> u64 {
        self.header.number
    }

    pub fn hash(&self) -> Hash {
        crate::crypto::header_hash(&self.header)
    }
}

/// Where a committed transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLocation {
    pub block: u64,
    pub index: u32,
}

/// A summary of the chain's tip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainTip {
    /// Number of blocks including block 0.
    pub height: u64,
    pub hash: Hash,
    pub state_root: Hash,
    pub transactions: u64,
}
