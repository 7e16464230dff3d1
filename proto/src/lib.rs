//! Weft's wire protocol and the rules every party shares: the generated `weft.v1` messages and
//! services ([`pb`]), canonical signing bytes and transaction ids ([`signing`]), identities and
//! certificates ([`identity`]), commit certificates ([`certificate`]), the network configuration ([`genesis`]), transaction building
//! ([`tx`]) and a typed client for applications ([`client`]).
//!
//! This crate is deliberately light (no storage, no Docker), so an application or the
//! orchestrator can depend on it without building the peer.

pub mod certificate;
pub mod client;
pub mod genesis;
pub mod hashing;
pub mod identity;
pub mod package;
pub mod signing;
pub mod tx;

/// The generated protobuf messages and gRPC services of package `weft.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("weft.v1");
}

pub use certificate::{CertificateError, Committee, RunError};
pub use client::{ClientError, WeftClient};
pub use genesis::{ConsensusKind, ConsensusParams, Genesis, GenesisError, ValidatorInfo};
pub use identity::{
    CertificateAuthority, Identity, IdentityError, Role, Signer, verify_certificate,
};
pub use signing::TxId;

/// The largest gRPC message a peer accepts or sends (blocks, packages, batches), in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// The request metadata key carrying the launch token when a peer dials a chaincode that runs
/// as a service (`weft.v1.ChaincodeService/Attach`).
pub const LAUNCH_TOKEN_METADATA: &str = "weft-launch-token";
/// The most read hints (`weft.v1.Register.read_hints`) a peer uses for one chaincode.
pub const MAX_READ_HINTS: usize = 64;
