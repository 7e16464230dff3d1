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
///
/// Shared, not copied: the same transaction sits in a validator's pending requests, its
/// pre-prepare, its log, its journal and the batch it executes, and a copy of each would be
/// two strings and a vector allocated, and freed again, per place (7% of a validator's CPU
/// in a long overloaded run, BENCHMARKS.md). A clone is one reference count.
#[derive(Clone, Debug)]
pub struct Transaction(Arc<TransactionBody>);

/// What a [`Transaction`] holds.
#[derive(Debug)]
pub struct TransactionBody {
    pub signed: SignedTransaction,
    pub chaincode: String,
    pub function: String,
    pub args: Vec<Bytes>,
    pub created_unix_ms: u64,
    /// Shared with every transaction of the same signer (the admission's certificate cache).
    pub creator: Arc<Identity>,
    /// The hash of the signed bytes (payload, signer and signature,
    /// [`crate::crypto::transaction_hash`]), computed by admission (the key of its
    /// verified-signature cache) and kept: the transaction's part of a pre-prepare's digest
    /// and its leaf of the block's transactions root.
    pub hash: Hash,
}

impl std::ops::Deref for Transaction {
    type Target = TransactionBody;

    fn deref(&self) -> &TransactionBody {
        &self.0
    }
}

impl Transaction {
    pub fn new(body: TransactionBody) -> Transaction {
        Transaction(Arc::new(body))
    }

    pub fn id(&self) -> TxId {
        self.signed.id
    }

    /// The signed transaction, for the block: taken out when this is the last reference,
    /// copied (three reference counts) when another still holds it.
    pub fn into_signed(self) -> SignedTransaction {
        Arc::try_unwrap(self.0)
            .map(|body| body.signed)
            .unwrap_or_else(|shared| shared.signed.clone())
    }

    /// The same signed transaction and creator, calling `function(args)` of `chaincode`: what
    /// a deployment's init or one chaincode's call of another runs.
    pub fn calling(&self, chaincode: &str, function: String, args: Vec<Bytes>) -> Transaction {
        self.derived(self.signed.clone(), self.hash, chaincode, function, args)
    }

    /// A transaction of the same creator and creation time with these parts.
    fn derived(
        &self,
        signed: SignedTransaction,
        hash: Hash,
        chaincode: &str,
        function: String,
        args: Vec<Bytes>,
    ) -> Transaction {
        Transaction::new(TransactionBody {
            signed,
            chaincode: chaincode.to_string(),
            function,
            args,
            created_unix_ms: self.created_unix_ms,
            creator: self.creator.clone(),
            hash,
        })
    }

    /// For unit tests: the same transaction with other signature bytes (same payload, so the
    /// same id).
    #[cfg(test)]
    pub fn with_signature_for_tests(&self, signature: Bytes) -> Transaction {
        let signed = SignedTransaction {
            signature,
            ..self.signed.clone()
        };
        let hash = crate::crypto::transaction_hash(&signed);
        self.derived(
            signed,
            hash,
            &self.chaincode,
            self.function.clone(),
            self.args.clone(),
        )
    }

    /// For unit tests that need a decoded transaction but no signature: `function(args)` of
    /// chaincode "cc" by alice (a client), unsigned, with an all-zero id.
    #[cfg(test)]
    pub fn unsigned_for_tests(function: &str, args: &[&[u8]]) -> Transaction {
        let signed = SignedTransaction {
            id: TxId([0; 32]),
            payload: Bytes::new(),
            signer: Bytes::new(),
            signature: Bytes::new(),
        };
        Transaction::decoded_for_tests(signed, function, args)
    }

    /// For unit tests: `signed`, as if admitted, calling `function(args)` of chaincode "cc"
    /// by alice (a client); its signature is not checked.
    #[cfg(test)]
    pub fn decoded_for_tests(
        signed: SignedTransaction,
        function: &str,
        args: &[&[u8]],
    ) -> Transaction {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let hash = crate::crypto::transaction_hash(&signed);
        Transaction::new(TransactionBody {
            signed,
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
            hash,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_transaction_shares_its_body_and_a_call_keeps_the_signed_bytes() {
        // A transaction as admission makes it: signed, with a creation time.
        let (admission, alice, genesis) = crate::test_support::admission_and_client("types");
        let (_, signed) = weft_proto::tx::sign_transaction(
            &alice,
            &genesis.chain_id,
            "cc",
            "f",
            &[b"a".to_vec(), b"b".to_vec()],
        );
        let tx = admission
            .verify(convert::signed_from_pb(signed))
            .expect("admissible");
        assert_ne!(tx.created_unix_ms, 0, "a creation time a call could lose");
        assert_eq!(
            tx.hash,
            crate::crypto::transaction_hash(&tx.signed),
            "admitted with the hash of its signed bytes"
        );
        let copy = tx.clone();
        assert!(
            Arc::ptr_eq(&tx.0, &copy.0),
            "a copy is a reference, not new strings"
        );
        let call = tx.calling("other", "g".to_string(), vec![Bytes::from_static(b"c")]);
        assert_eq!(
            (
                call.chaincode.as_str(),
                call.function.as_str(),
                &call.args[..]
            ),
            ("other", "g", &[Bytes::from_static(b"c")][..])
        );
        assert_eq!((&call.signed, call.hash), (&tx.signed, tx.hash));
        assert_eq!(call.created_unix_ms, tx.created_unix_ms);
        assert!(Arc::ptr_eq(&call.creator, &tx.creator));
        assert_eq!(
            (tx.chaincode.as_str(), tx.function.as_str(), tx.args.len()),
            ("cc", "f", 2),
            "the original is unchanged"
        );
        // The last reference gives its signed bytes up; a shared one copies them.
        assert_eq!(copy.into_signed(), tx.signed);
        let signed = tx.signed.clone();
        assert_eq!(tx.into_signed(), signed);
    }
}
