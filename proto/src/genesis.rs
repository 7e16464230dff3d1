//! The network configuration every party starts from: chain id, the organisations' CAs, the
//! validators (id, certificate, address) and the consensus parameters. Its hash is the content
//! of block 0, so two peers with different genesis files can never share a chain.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::identity::{self, IdentityError, Role};
use crate::signing::sha256;

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("cannot read genesis file {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("genesis file {path} is not valid: {reason}")]
    Parse { path: String, reason: String },
    #[error("genesis is not valid: {0}")]
    Invalid(String),
    #[error("genesis validator {id}: {source}")]
    Validator {
        id: String,
        #[source]
        source: IdentityError,
    },
}

/// How the validators agree on an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsensusKind {
    /// One validator orders alone (development and single-node networks).
    Solo,
    /// PBFT among n = 3f+1 validators.
    Pbft,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusParams {
    pub kind: ConsensusKind,
    /// Most transactions in one batch (block).
    pub batch_size: usize,
    /// How long the primary waits to fill a batch.
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// Sequences between checkpoints.
    pub checkpoint_period: u64,
    /// How long a request may wait before a view change is asked for.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for ConsensusParams {
    fn default() -> Self {
        ConsensusParams {
            kind: ConsensusKind::Solo,
            batch_size: 500,
            batch_timeout: Duration::from_millis(20),
            checkpoint_period: 10,
            request_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationInfo {
    pub name: String,
    /// The organisation CA's certificate, PEM.
    pub ca_certificate: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorInfo {
    pub id: String,
    /// The validator's certificate, PEM.
    pub certificate: String,
    /// host:port of its gRPC endpoint (clients, non-validating peers).
    pub address: String,
    /// host:port of its validator-to-validator endpoint (PBFT networks): mutual TLS with
    /// genesis validator certificates only. Empty for a solo validator.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub consensus_address: String,
}

/// The longest checkpoint period a genesis may set: validators certify every checkpoint block,
/// and the blocks between two certificates are what followers, state transfer
/// (`MAX_UNCERTIFIED_RUN`, 1,024) and clients (`MAX_CERTIFICATE_WALK`, 1,000) hold or walk.
pub const MAX_CHECKPOINT_PERIOD: u64 = 500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    pub organizations: Vec<OrganizationInfo>,
    pub validators: Vec<ValidatorInfo>,
    pub consensus: ConsensusParams,
}

impl Genesis {
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(|e| GenesisError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let genesis: Genesis = serde_json::from_str(&text).map_err(|e| GenesisError::Parse {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        genesis.validate()?;
        Ok(genesis)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
    }

    /// The canonical bytes of this configuration (field order fixed by the struct).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a genesis always serialises")
    }

    /// SHA-256 of the canonical bytes, domain-separated.
    pub fn hash(&self) -> [u8; 32] {
        let mut message = b"weft.v1/genesis\0".to_vec();
        message.extend_from_slice(&self.canonical_bytes());
        sha256(&message)
    }

    /// DER certificates of the organisations' CAs.
    pub fn ca_certificates(&self) -> Vec<Vec<u8>> {
        self.organizations
            .iter()
            .filter_map(|o| identity::pem_to_der(&o.ca_certificate))
            .collect()
    }

    /// The largest number of faulty validators the network tolerates.
    pub fn max_faulty(&self) -> usize {
        self.validators.len().saturating_sub(1) / 3
    }

    /// Checks the rules a network needs to start.
    pub fn validate(&self) -> Result<(), GenesisError> {
        if self.chain_id.trim().is_empty() {
            return Err(GenesisError::Invalid("chain_id is empty".into()));
        }
        if self.organizations.is_empty() {
            return Err(GenesisError::Invalid(
                "no organisation is listed: add at least one with its CA certificate".into(),
            ));
        }
        let cas = self.ca_certificates();
        if cas.len() != self.organizations.len() {
            return Err(GenesisError::Invalid(
                "an organisation's ca_certificate is not PEM".into(),
            ));
        }
        match (self.consensus.kind, self.validators.len()) {
            (_, 0) => return Err(GenesisError::Invalid("no validator is listed".into())),
            (ConsensusKind::Solo, n) if n != 1 => {
                return Err(GenesisError::Invalid(format!(
                    "solo consensus needs exactly one validator, genesis lists {n}"
                )));
            }
            (ConsensusKind::Pbft, n) if n < 4 => {
                return Err(GenesisError::Invalid(format!(
                    "pbft needs at least 4 validators (n = 3f+1), genesis lists {n}"
                )));
            }
            _ => {}
        }
        if self.consensus.batch_size == 0 {
            return Err(GenesisError::Invalid("consensus.batch_size is 0".into()));
        }
        if self.consensus.checkpoint_period == 0 {
            return Err(GenesisError::Invalid(
                "consensus.checkpoint_period is 0".into(),
            ));
        }
        if self.consensus.checkpoint_period > MAX_CHECKPOINT_PERIOD {
            return Err(GenesisError::Invalid(format!(
                "consensus.checkpoint_period is {}; at most {MAX_CHECKPOINT_PERIOD} (validators certify every checkpoint block, and followers, state transfer and clients hold or walk the blocks between two certificates)",
                self.consensus.checkpoint_period
            )));
        }
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashMap::new();
        for v in &self.validators {
            if !ids.insert(v.id.as_str()) {
                return Err(GenesisError::Invalid(format!(
                    "validator id {} is listed twice",
                    v.id
                )));
            }
            let der = identity::pem_to_der(&v.certificate).ok_or_else(|| {
                GenesisError::Invalid(format!("validator {}: certificate is not PEM", v.id))
            })?;
            let id = identity::verify_certificate(&der, &cas).map_err(|source| {
                GenesisError::Validator {
                    id: v.id.clone(),
                    source,
                }
            })?;
            if id.role != Role::Validator {
                return Err(GenesisError::Invalid(format!(
                    "validator {}: its certificate has role {}, not validator",
                    v.id, id.role
                )));
            }
            // Validators are told apart by their keys: by signature, and by the certificate
            // of the connection they send over (which alone vouches for their unsigned
            // messages). Two with one key would be one validator counted twice.
            if let Some(first) = keys.insert(id.verifying_key.to_bytes(), v.id.as_str()) {
                return Err(GenesisError::Invalid(format!(
                    "validators {first} and {} have the same key: issue each validator its own certificate (`weft crypto generate` does)",
                    v.id
                )));
            }
            if self.consensus.kind == ConsensusKind::Pbft {
                if v.consensus_address.trim().is_empty() {
                    return Err(GenesisError::Invalid(format!(
                        "validator {}: consensus_address is missing (PBFT validators talk to each other on their own mutual-TLS endpoint)",
                        v.id
                    )));
                }
                if v.consensus_address == v.address {
                    return Err(GenesisError::Invalid(format!(
                        "validator {}: consensus_address must differ from address (the client API and the mutual-TLS validator endpoint are separate ports)",
                        v.id
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::CertificateAuthority;

    fn genesis(certificates: &[String]) -> Genesis {
        Genesis {
            chain_id: "keys".into(),
            organizations: vec![OrganizationInfo {
                name: "Org1".into(),
                ca_certificate: String::new(),
            }],
            validators: certificates
                .iter()
                .enumerate()
                .map(|(i, certificate)| ValidatorInfo {
                    id: format!("validator{i}"),
                    certificate: certificate.clone(),
                    address: format!("127.0.0.1:{}", 7051 + i),
                    consensus_address: format!("127.0.0.1:{}", 7151 + i),
                })
                .collect(),
            consensus: ConsensusParams {
                kind: ConsensusKind::Pbft,
                ..ConsensusParams::default()
            },
        }
    }

    #[test]
    fn two_validators_with_one_key_are_refused() {
        let ca = CertificateAuthority::generate("Org1").expect("CA");
        let mut certificates: Vec<String> = (0..4)
            .map(|i| {
                ca.issue(&format!("validator{i}"), Role::Validator)
                    .expect("issue")
                    .certificate_pem
            })
            .collect();
        let mut good = genesis(&certificates);
        good.organizations[0].ca_certificate = ca.certificate_pem().to_string();
        good.validate()
            .expect("four validators with keys of their own");
        certificates[3] = certificates[0].clone();
        let mut shared = genesis(&certificates);
        shared.organizations[0].ca_certificate = ca.certificate_pem().to_string();
        let refused = shared.validate().expect_err("one key listed twice");
        assert!(
            refused
                .to_string()
                .contains("validators validator0 and validator3 have the same key"),
            "{refused}"
        );
    }
}
