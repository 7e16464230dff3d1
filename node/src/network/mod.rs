//! Validator-to-validator networking: the consensus edge (`wire`: signing and verification,
//! with the replica's own recent signed messages in `own_signed`),
//! outbound links with bounded queues and reconnection (`peers`), the inbound gRPC service
//! (`service`) and its queue shared fairly between the validators (`inbound`), and block
//! fetching for state transfer (`state_transfer`).

pub mod inbound;
pub mod own_signed;
pub mod peers;
pub mod service;
pub mod state_transfer;
pub mod tls;
pub mod wire;
