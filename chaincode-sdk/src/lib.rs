//! Write Weft chaincode: the [`Chaincode`] and [`Stub`] traits an author implements against,
//! the [`Creator`] and [`ChaincodeError`] types they use, and [`start`], which runs a chaincode
//! against a peer; the invariant every stub keeps is Weft's transaction semantics (a
//! transaction's writes become visible only if it succeeds, reads see its own writes first).
//!
//! An author's program is one line:
//!
//! ```no_run
//! # use chaincode_sdk::{Chaincode, ChaincodeError, Stub};
//! struct MyChaincode;
//! #[chaincode_sdk::async_trait]
//! impl Chaincode for MyChaincode {
//!     async fn init(&self, _stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
//!         Ok(Vec::new())
//!     }
//!     async fn invoke(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
//!         Err(ChaincodeError::UnknownFunction(stub.function().to_string()))
//!     }
//! }
//! fn main() { chaincode_sdk::start(MyChaincode) }
//! ```
//!
//! Unit tests run the same chaincode on a [`MemoryWorld`] (no peer); [`contract`] holds the
//! test suite that proves the gRPC shim and the in-memory world behave the same.

pub mod contract;
pub mod memory;
mod overlay;
pub mod service;
pub mod shim;
mod start;
mod tx;

use std::fmt;

pub use async_trait::async_trait;
pub use memory::{MemoryStub, MemoryWorld};
pub use service::{ServiceConfig, ServiceError, serve_as_service};
pub use shim::{ShimConfig, ShimError, serve};
pub use start::{
    ConfigError, ENV_CHAINCODE_LISTEN, ENV_CHAINCODE_NAME, ENV_CHAINCODE_TOKEN,
    ENV_CHAINCODE_VERSION, ENV_PEER_ADDRESS, StartError, run, start,
};
pub use weft_proto::Role;
use weft_proto::pb;

/// A chaincode: the program a peer runs for every transaction addressed to it.
///
/// The same value serves every transaction (and, for queries, several at once), so per-call
/// state belongs in the [`Stub`], never in `self`.
#[async_trait]
pub trait Chaincode: Send + Sync + 'static {
    /// Runs the deploy (or upgrade) transaction.
    async fn init(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError>;
    /// Runs an ordered transaction, a query, or a call from another chaincode.
    async fn invoke(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError>;
    /// Keys this chaincode's functions read, named from their arguments: the peer sends their
    /// committed values with each batch, so reading them costs no round trip (a key that does
    /// not exist yet, which no cache can answer, included). A hint changes no result, only
    /// where a read is answered. A peer uses the first [`MAX_READ_HINTS`] that name a function
    /// and have a prefix of at most 1 KiB, and logs the others (their reads go by request).
    /// None by default.
    fn read_hints(&self) -> Vec<ReadHint> {
        Vec::new()
    }
}

/// The most read hints a peer uses for one chaincode.
pub const MAX_READ_HINTS: usize = weft_proto::MAX_READ_HINTS;

/// "Transactions calling `function` read the key `prefix` + argument number `arg`" (counted
/// from 0, taken as UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadHint {
    pub function: String,
    pub arg: u32,
    pub prefix: String,
}

impl ReadHint {
    /// `function` reads the key that is its argument number `arg`.
    pub fn arg(function: &str, arg: u32) -> ReadHint {
        ReadHint {
            function: function.to_string(),
            arg,
            prefix: String::new(),
        }
    }

    /// The key is `prefix` followed by the argument.
    pub fn with_prefix(mut self, prefix: &str) -> ReadHint {
        self.prefix = prefix.to_string();
        self
    }

    pub(crate) fn to_pb(&self) -> pb::ReadHint {
        pb::ReadHint {
            function: self.function.clone(),
            arg: self.arg,
            prefix: self.prefix.clone(),
        }
    }
}

/// What a transaction sees of the ledger: its arguments and signer, and this chaincode's state.
///
/// Reads see, newest first: this transaction's own writes, the writes of the earlier
/// successful transactions of the same run, then committed state. Writes become visible to
/// others only if the transaction returns `Ok`.
#[async_trait]
pub trait Stub: Send {
    /// The function the transaction calls, for example "TransferAsset".
    fn function(&self) -> &str;
    /// The function's arguments, as the client sent them.
    fn args(&self) -> &[Vec<u8>];
    /// The arguments as UTF-8 strings; an argument that is not UTF-8 is a
    /// [`ChaincodeError::BadArguments`] naming its position.
    fn string_args(&self) -> Result<Vec<String>, ChaincodeError> {
        self.args()
            .iter()
            .enumerate()
            .map(|(i, arg)| {
                String::from_utf8(arg.clone()).map_err(|_| {
                    ChaincodeError::BadArguments(format!(
                        "argument {} of {} is not valid UTF-8",
                        i + 1,
                        self.function()
                    ))
                })
            })
            .collect()
    }
    /// The transaction id, lowercase hex.
    fn tx_id(&self) -> &str;
    /// Who signed the transaction, as the peer verified it.
    fn creator(&self) -> &Creator;
    /// The value of `key`, or `None` if it does not exist.
    async fn get_state(&mut self, key: &str) -> Result<Option<Vec<u8>>, ChaincodeError>;
    /// The values of `keys`, in order; every key not known locally costs one shared round trip.
    async fn get_states(&mut self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, ChaincodeError>;
    /// Sets `key` to `value` (visible to this transaction at once, to others if it succeeds).
    fn put_state(&mut self, key: &str, value: Vec<u8>) -> Result<(), ChaincodeError>;
    /// Deletes `key`.
    fn delete_state(&mut self, key: &str) -> Result<(), ChaincodeError>;
    /// The keys in `[start, end)` with their values, sorted by key; an empty `start` or `end`
    /// is unbounded on that side. Pending writes and deletes are merged in.
    async fn get_state_range(
        &mut self,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ChaincodeError>;
    /// Sets the transaction's event (at most one: a later call replaces it). Emitted only if
    /// the transaction succeeds.
    fn set_event(&mut self, name: &str, payload: Vec<u8>) -> Result<(), ChaincodeError>;
    /// Calls `function` of another chaincode within this transaction and returns its payload.
    /// Its writes are kept only if this transaction succeeds.
    async fn invoke_chaincode(
        &mut self,
        chaincode: &str,
        function: &str,
        args: &[Vec<u8>],
    ) -> Result<Vec<u8>, ChaincodeError>;
}

/// Who signed a transaction: the holder of a certificate the peer verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creator {
    /// The certificate's common name, for example "alice".
    pub name: String,
    /// The certificate's organisation, for example "Org1".
    pub organization: String,
    pub role: Role,
    /// The DER certificate (empty for identities made up in unit tests).
    pub certificate: Vec<u8>,
}

impl Creator {
    /// An identity without a certificate, for unit tests.
    pub fn new(name: &str, organization: &str, role: Role) -> Creator {
        Creator {
            name: name.to_string(),
            organization: organization.to_string(),
            role,
            certificate: Vec::new(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl TryFrom<pb::Creator> for Creator {
    type Error = ChaincodeError;

    fn try_from(creator: pb::Creator) -> Result<Creator, ChaincodeError> {
        let role = creator.role.parse::<Role>().map_err(|reason| {
            ChaincodeError::BadTransaction(format!("creator {:?}: {reason}", creator.name))
        })?;
        Ok(Creator {
            name: creator.name,
            organization: creator.organization,
            role,
            certificate: creator.certificate.to_vec(),
        })
    }
}

impl fmt::Display for Creator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.organization, self.role)
    }
}

/// An event a transaction set, delivered to subscribers when the transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub payload: Vec<u8>,
}

/// Why a transaction failed. Its `Display` is the message the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaincodeError {
    /// A business rule refused the call, for example "the asset asset7 does not exist".
    #[error("{0}")]
    Message(String),
    /// The chaincode has no such function (the text may list the known ones).
    #[error("unknown function {0}")]
    UnknownFunction(String),
    /// The arguments do not fit the function (the text says what it expects).
    #[error("bad arguments: {0}")]
    BadArguments(String),
    /// A state key the ledger cannot store.
    #[error("invalid state key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// A call to another chaincode failed.
    #[error("call to chaincode {chaincode} ({function}) failed: {message}")]
    InvokeFailed {
        chaincode: String,
        function: String,
        message: String,
    },
    /// The transaction as the peer sent it cannot be run (for example an unknown role).
    #[error("invalid transaction: {0}")]
    BadTransaction(String),
    /// The chaincode panicked while running the transaction.
    #[error("chaincode panicked: {0}")]
    Panicked(String),
    /// The peer failed a request, or the stream to it broke.
    #[error("peer: {0}")]
    Peer(String),
}

impl ChaincodeError {
    /// A business error with this text.
    pub fn message(text: impl Into<String>) -> ChaincodeError {
        ChaincodeError::Message(text.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb_creator(role: &str) -> pb::Creator {
        pb::Creator {
            certificate: vec![1, 2, 3].into(),
            name: "alice".into(),
            organization: "Org1".into(),
            role: role.into(),
        }
    }

    #[test]
    fn creator_from_pb_keeps_every_field() {
        let creator = Creator::try_from(pb_creator("admin")).expect("admin is a role");
        assert_eq!(creator.name, "alice");
        assert_eq!(creator.organization, "Org1");
        assert_eq!(creator.role, Role::Admin);
        assert_eq!(creator.certificate, vec![1, 2, 3]);
        assert!(creator.is_admin());
    }

    #[test]
    fn creator_with_unknown_role_is_a_bad_transaction() {
        let error = Creator::try_from(pb_creator("wizard")).expect_err("wizard is no role");
        assert!(matches!(error, ChaincodeError::BadTransaction(_)));
        assert!(error.to_string().contains("wizard"), "{error}");
    }

    #[test]
    fn error_display_is_the_client_message() {
        assert_eq!(
            ChaincodeError::message("asset X does not exist").to_string(),
            "asset X does not exist"
        );
        assert_eq!(
            ChaincodeError::Panicked("boom".into()).to_string(),
            "chaincode panicked: boom"
        );
    }
}
