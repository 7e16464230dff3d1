//! The network directory of a deployed blueprint: its CA, an identity per node, the admin and
//! the demo clients, and the genesis, laid out as `weft crypto generate` lays them out (so
//! every `weft` command takes it as `--network DIR`). `up` issues what is missing and keeps
//! what it issued before: the keys are random and stay on this machine, never derived from
//! the seed (anyone who knew the seed would hold every key). Genesis is written once; a
//! blueprint whose validators differ from it is refused, since validators are fixed at
//! genesis.

use std::path::{Path, PathBuf};

use weft_proto::genesis::{
    ConsensusKind, ConsensusParams, Genesis, OrganizationInfo, ValidatorInfo,
};
use weft_proto::identity::write_private;
use weft_proto::{CertificateAuthority, Role};

use crate::plan::Plan;

/// The organisation every identity of a blueprint's network belongs to.
const ORGANIZATION: &str = "Org1";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("issuing identities: {0}")]
    Issue(String),
    #[error(
        "{dir} holds a network whose genesis differs from the blueprint's ({differs}): validators and PBFT settings are fixed at genesis; `weft cluster down` removes the old network first"
    )]
    GenesisDiffers { dir: String, differs: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> IdentityError + '_ {
    move |e| IdentityError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// A network directory.
#[derive(Debug, Clone)]
pub struct NetworkDir {
    pub dir: PathBuf,
}

impl NetworkDir {
    pub fn new(dir: impl Into<PathBuf>) -> NetworkDir {
        NetworkDir { dir: dir.into() }
    }

    pub fn genesis_path(&self) -> PathBuf {
        self.dir.join("genesis.json")
    }

    /// Where the identity of `name` (with `role`) lives.
    pub fn identity(&self, name: &str, role: Role) -> PathBuf {
        match role {
            Role::Validator => self.dir.join("validators").join(name),
            Role::Peer => self.dir.join("peers").join(name),
            Role::Admin => self.dir.join("admin"),
            Role::Client => self.dir.join("clients").join(name),
        }
    }

    pub fn exists(&self) -> bool {
        self.genesis_path().exists()
    }

    pub fn genesis(&self) -> Result<Genesis, IdentityError> {
        Genesis::load(&self.genesis_path()).map_err(|e| IdentityError::Io {
            path: self.genesis_path().display().to_string(),
            reason: e.to_string(),
        })
    }

    fn authority(&self) -> Result<CertificateAuthority, IdentityError> {
        let ca = self.dir.join("ca");
        let (cert, key) = (ca.join("cert.pem"), ca.join("key.pem"));
        if cert.exists() {
            return CertificateAuthority::load(&cert, &key)
                .map_err(|e| IdentityError::Issue(e.to_string()));
        }
        let authority = CertificateAuthority::generate(ORGANIZATION)
            .map_err(|e| IdentityError::Issue(e.to_string()))?;
        std::fs::create_dir_all(&ca).map_err(io(&ca))?;
        std::fs::write(&cert, authority.certificate_pem()).map_err(io(&cert))?;
        write_private(&key, &authority.key_pem()).map_err(io(&key))?;
        Ok(authority)
    }

    /// Issues every identity `plan` names that this directory lacks, writes the genesis if
    /// there is none (or checks the one there against the plan), and returns it.
    pub fn issue(&self, plan: &Plan) -> Result<Genesis, IdentityError> {
        let authority = self.authority()?;
        for identity in &plan.identities {
            let dir = self.identity(&identity.name, identity.role);
            // Both files, or it is issued again (a run stopped between the two writes).
            if dir.join("cert.pem").exists() && dir.join("key.pem").exists() {
                continue;
            }
            authority
                .issue(&identity.name, identity.role)
                .map_err(|e| IdentityError::Issue(e.to_string()))?
                .write_to(&dir)
                .map_err(io(&dir))?;
        }
        if self.exists() {
            let genesis = self.genesis()?;
            self.check(&genesis, plan)?;
            return Ok(genesis);
        }
        let mut validators = Vec::new();
        for validator in &plan.genesis.validators {
            let cert = self
                .identity(&validator.name, Role::Validator)
                .join("cert.pem");
            validators.push(ValidatorInfo {
                id: validator.name.clone(),
                certificate: std::fs::read_to_string(&cert).map_err(io(&cert))?,
                address: validator.address.clone(),
                consensus_address: validator.consensus.clone(),
            });
        }
        let pbft = &plan.genesis.pbft;
        let genesis = Genesis {
            chain_id: plan.genesis.chain_id.clone(),
            organizations: vec![OrganizationInfo {
                name: ORGANIZATION.into(),
                ca_certificate: authority.certificate_pem().to_string(),
            }],
            validators,
            consensus: ConsensusParams {
                kind: ConsensusKind::Pbft,
                batch_size: pbft.batch_size,
                batch_timeout: pbft.batch_timeout,
                checkpoint_period: pbft.checkpoint_period,
                request_timeout: pbft.request_timeout,
            },
        };
        genesis
            .validate()
            .map_err(|e| IdentityError::Issue(e.to_string()))?;
        let path = self.genesis_path();
        genesis.save(&path).map_err(io(&path))?;
        Ok(genesis)
    }

    /// The genesis here must list the plan's validators, at the plan's addresses.
    fn check(&self, genesis: &Genesis, plan: &Plan) -> Result<(), IdentityError> {
        let have: Vec<(&str, &str, &str)> = genesis
            .validators
            .iter()
            .map(|v| {
                (
                    v.id.as_str(),
                    v.address.as_str(),
                    v.consensus_address.as_str(),
                )
            })
            .collect();
        let want: Vec<(&str, &str, &str)> = plan
            .genesis
            .validators
            .iter()
            .map(|v| (v.name.as_str(), v.address.as_str(), v.consensus.as_str()))
            .collect();
        let pbft = &plan.genesis.pbft;
        let consensus = &genesis.consensus;
        let same_pbft = consensus.batch_size == pbft.batch_size
            && consensus.batch_timeout == pbft.batch_timeout
            && consensus.checkpoint_period == pbft.checkpoint_period
            && consensus.request_timeout == pbft.request_timeout;
        if have == want && genesis.chain_id == plan.genesis.chain_id && same_pbft {
            return Ok(());
        }
        Err(IdentityError::GenesisDiffers {
            dir: self.dir.display().to_string(),
            differs: format!(
                "genesis has {have:?} with {:?}, the blueprint plans {want:?} with {pbft:?}",
                genesis.consensus
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{Blueprint, plan};

    fn three() -> Plan {
        let text = include_str!("../blueprints/three-locations.yaml");
        plan(
            &Blueprint::parse(text, Path::new("/srv")).expect("blueprint"),
            7,
        )
    }

    #[test]
    fn issuing_twice_keeps_the_first_keys_and_genesis() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = NetworkDir::new(tmp.path().join("net"));
        let plan = three();
        let first = dir.issue(&plan).expect("issue");
        assert_eq!(first.validators.len(), 6);
        assert_eq!(
            first.validators[0].address,
            "weft-asset-network-sjc-validator0:7051"
        );
        let key = dir.identity("lon-peer0", Role::Peer).join("key.pem");
        let before = std::fs::read(&key).expect("a peer key");
        let second = dir.issue(&plan).expect("issue again");
        assert_eq!(first, second);
        assert_eq!(std::fs::read(&key).expect("key"), before);
        // The layout `weft crypto generate` writes: admin and clients where the CLI looks.
        assert!(dir.dir.join("admin").join("cert.pem").exists());
        assert!(
            dir.dir
                .join("clients")
                .join("alice")
                .join("key.pem")
                .exists()
        );
    }

    #[test]
    fn a_plan_with_other_validators_is_refused_against_an_existing_genesis() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = NetworkDir::new(tmp.path());
        let plan = three();
        dir.issue(&plan).expect("issue");
        let mut other = plan.clone();
        other.genesis.validators.pop();
        let e = dir
            .issue(&other)
            .expect_err("fewer validators than genesis");
        assert!(matches!(e, IdentityError::GenesisDiffers { .. }), "{e}");
        assert!(e.to_string().contains("weft cluster down"), "{e}");
    }
}
