//! Fixtures shared by the node's unit tests.

use weft_proto::genesis::{ConsensusKind, ConsensusParams, OrganizationInfo, ValidatorInfo};
use weft_proto::{CertificateAuthority, Genesis, Role, Signer};

/// A PBFT genesis of `validators` validators issued by one CA, with their signers (by replica
/// id).
pub fn validator_network(validators: usize, chain_id: &str) -> (Genesis, Vec<Signer>) {
    let (genesis, signers, _) = validator_network_with_ca(validators, chain_id);
    (genesis, signers)
}

/// [`validator_network`], and the CA, to issue more identities.
pub fn validator_network_with_ca(
    validators: usize,
    chain_id: &str,
) -> (Genesis, Vec<Signer>, CertificateAuthority) {
    let ca = CertificateAuthority::generate("Org1").expect("test CA");
    let mut infos = Vec::new();
    let mut signers = Vec::new();
    for i in 0..validators {
        let issued = ca
            .issue(&format!("validator{i}"), Role::Validator)
            .expect("test validator");
        infos.push(ValidatorInfo {
            id: format!("validator{i}"),
            certificate: issued.certificate_pem.clone(),
            address: format!("127.0.0.1:{}", 7051 + i),
            consensus_address: format!("127.0.0.1:{}", 7151 + i),
        });
        signers.push(issued.signer().expect("test signer"));
    }
    let genesis = Genesis {
        chain_id: chain_id.into(),
        organizations: vec![OrganizationInfo {
            name: "Org1".into(),
            ca_certificate: ca.certificate_pem().to_string(),
        }],
        validators: infos,
        consensus: ConsensusParams {
            kind: ConsensusKind::Pbft,
            ..ConsensusParams::default()
        },
    };
    (genesis, signers, ca)
}

/// A four-validator network's admission and a client, alice, who may submit to it.
pub fn admission_and_client(chain_id: &str) -> (crate::admission::Admission, Signer, Genesis) {
    let (genesis, _, ca) = validator_network_with_ca(4, chain_id);
    let alice = ca
        .issue("alice", Role::Client)
        .expect("issue alice")
        .signer()
        .expect("alice signer");
    (crate::admission::Admission::new(&genesis), alice, genesis)
}

/// A chaincode manager with the process runtime under `dir` (`work/`, `packages/`), whose
/// chaincode would dial a port where nothing listens.
pub fn chaincode_manager(
    dir: &std::path::Path,
    launch_timeout: std::time::Duration,
) -> crate::chaincode::ChaincodeManager {
    crate::chaincode::ChaincodeManager::new(
        std::sync::Arc::new(crate::chaincode::process::ProcessRuntime::new(
            dir.join("work"),
        )),
        crate::chaincode::ManagerConfig {
            packages_dir: dir.join("packages"),
            peer_address: "127.0.0.1:9".into(),
            launch_timeout,
            execute_timeout: std::time::Duration::from_secs(5),
        },
        std::sync::Arc::new(crate::chaincode::session::Registrations::default()),
    )
}
