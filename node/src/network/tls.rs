//! Mutual TLS between validators. Each PBFT validator serves the `Consensus` service on its own
//! endpoint (genesis `consensus_address`), apart from the client API, and that endpoint accepts
//! only TLS clients whose certificate a genesis CA issued; the service then admits only the
//! certificates genesis lists as validators. Outbound, a validator presents its own certificate
//! and checks that the peer's certificate names the validator it meant to reach (the
//! validator id is a subject alternative name of its certificate). The same Ed25519
//! certificates serve TLS and message signatures (DESIGN 2).
//!
//! Invariant: a connection that does not present a genesis validator's certificate never
//! reaches the replica or the block store.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use weft_proto::Genesis;

use crate::consensus::pbft::ReplicaId;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path} for mutual TLS between validators: {reason}")]
    Read { path: String, reason: String },
    #[error("genesis validator {0}: the certificate is not PEM")]
    NotPem(String),
    #[error("genesis validator {id}: consensus address {address:?} is not usable: {reason}")]
    Address {
        id: String,
        address: String,
        reason: String,
    },
}

/// How often both ends of a validator link ping an otherwise quiet connection, and how long a
/// ping may go unanswered before the connection counts as dead: a validator whose host
/// vanished does not keep a stream (and one of its [`super::service::MAX_STREAMS_PER_VALIDATOR`]
/// places) open for ever.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// One validator's TLS material and the validators it may talk to.
pub struct ValidatorTls {
    ca_bundle: String,
    identity: Identity,
    /// (id, consensus address, DER certificate) by replica id.
    validators: Vec<(String, String, Vec<u8>)>,
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl ValidatorTls {
    /// This validator's certificate and key from `identity_dir` (`cert.pem`, `key.pem`), the
    /// genesis CAs, and the genesis validators.
    pub fn load(identity_dir: &Path, genesis: &Genesis) -> Result<ValidatorTls, TlsError> {
        let certificate = read(&identity_dir.join("cert.pem"))?;
        let key = read(&identity_dir.join("key.pem"))?;
        let ca_bundle = genesis
            .organizations
            .iter()
            .map(|o| o.ca_certificate.trim_end().to_string() + "\n")
            .collect::<String>();
        let validators = genesis
            .validators
            .iter()
            .map(|v| {
                let der = weft_proto::identity::pem_to_der(&v.certificate)
                    .ok_or_else(|| TlsError::NotPem(v.id.clone()))?;
                Ok((v.id.clone(), v.consensus_address.clone(), der))
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        Ok(ValidatorTls {
            ca_bundle,
            identity: Identity::from_pem(certificate, key),
            validators,
        })
    }

    /// The server side: this validator's certificate, and client certificates required, issued
    /// by a genesis CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(Certificate::from_pem(&self.ca_bundle))
            .timeout(Duration::from_secs(5))
    }

    /// Validator `replica`'s consensus address.
    pub fn address(&self, replica: ReplicaId) -> &str {
        self.validators
            .get(replica.0 as usize)
            .map(|(_, address, _)| address.as_str())
            .unwrap_or_default()
    }

    /// A TLS endpoint to validator `replica` that presents this validator's certificate and
    /// accepts only that validator's.
    pub fn endpoint(&self, replica: ReplicaId) -> Result<Endpoint, TlsError> {
        let (id, address, _) =
            self.validators
                .get(replica.0 as usize)
                .ok_or_else(|| TlsError::Address {
                    id: format!("replica {}", replica.0),
                    address: String::new(),
                    reason: "genesis lists no such validator".into(),
                })?;
        let unusable = |reason: String| TlsError::Address {
            id: id.clone(),
            address: address.clone(),
            reason,
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_bundle))
            .identity(self.identity.clone())
            .domain_name(id.clone());
        Endpoint::from_shared(format!("https://{address}"))
            .map_err(|e| unusable(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| unusable(e.to_string()))
            .map(|endpoint| {
                // Keepalive: a link whose peer host vanished is noticed and redialled rather
                // than held half-open.
                endpoint
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
            })
    }

    /// The validator whose certificate the TLS client presented, if it is one.
    pub fn sender<T>(&self, request: &tonic::Request<T>) -> Option<ReplicaId> {
        let certificates = request.peer_certs()?;
        let leaf = certificates.first()?;
        self.validators
            .iter()
            .position(|(_, _, der)| der.as_slice() == leaf.as_ref())
            .map(|index| ReplicaId(index as u32))
    }
}
