//! Client-facing services: thin adapters from gRPC (and the operations HTTP port) onto the
//! node's shared handles. Errors become gRPC statuses whose message says what to do.

pub mod admin;
pub mod client;
pub mod operations;

use tonic::Status;

use crate::admission::AdmissionError;
use crate::metrics::Metrics;

/// Maps a refused transaction to a status, counting it by reason.
pub fn admission_status(error: AdmissionError, metrics: &Metrics) -> Status {
    let (reason, status) = match &error {
        AdmissionError::TooLarge { .. } => {
            ("too_large", Status::invalid_argument(error.to_string()))
        }
        AdmissionError::Malformed(_) => ("malformed", Status::invalid_argument(error.to_string())),
        AdmissionError::WrongChain { .. } => {
            ("wrong_chain", Status::invalid_argument(error.to_string()))
        }
        AdmissionError::NoChaincode => {
            ("no_chaincode", Status::invalid_argument(error.to_string()))
        }
        AdmissionError::Certificate(_) => {
            ("certificate", Status::unauthenticated(error.to_string()))
        }
        AdmissionError::CreatorMismatch => (
            "creator_mismatch",
            Status::unauthenticated(error.to_string()),
        ),
        AdmissionError::BadSignature => {
            ("bad_signature", Status::unauthenticated(error.to_string()))
        }
        AdmissionError::RoleMayNotSubmit { .. } => {
            ("role", Status::permission_denied(error.to_string()))
        }
    };
    metrics.rejected(reason);
    status
}
