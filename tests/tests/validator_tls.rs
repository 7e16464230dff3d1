//! Mutual TLS between validators: the consensus endpoint (genesis `consensus_address`) takes
//! only TLS clients with a certificate from a genesis CA, then only genesis validators'
//! certificates; a client certificate, no certificate, or plain HTTP is refused, and the public
//! client port does not serve the consensus service at all. Outbound, a validator checks that
//! the endpoint it reaches presents the certificate of the validator it meant.

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use tonic::codegen::tokio_stream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use weft_node::storage::MemoryStore;
use weft_proto::pb;
use weft_proto::pb::consensus_client::ConsensusClient;
use weft_tests::{Network, chaincode_package, metric, start_validator_in_process};

const VALIDATORS: usize = 4;

fn read(path: std::path::PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A TLS channel to validator `validator`'s consensus endpoint, trusting the network's CA,
/// expecting the server to be `expect` and presenting the identity in `identity_dir`, if any.
async fn tls_channel(
    network: &Network,
    validator: usize,
    expect: &str,
    identity_dir: Option<std::path::PathBuf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(
            network.dir.join("ca").join("cert.pem"),
        )))
        .domain_name(expect);
    if let Some(dir) = identity_dir {
        tls = tls.identity(Identity::from_pem(
            read(dir.join("cert.pem")),
            read(dir.join("key.pem")),
        ));
    }
    Endpoint::from_shared(format!(
        "https://{}",
        network.consensus_address_of(validator)
    ))?
    .connect_timeout(Duration::from_secs(2))
    .tls_config(tls)?
    .connect()
    .await
}

/// An empty `Deliver` stream: the validator answers once it has read it.
async fn deliver_nothing(channel: Channel) -> Result<(), tonic::Status> {
    ConsensusClient::new(channel)
        .deliver(tokio_stream::iter(Vec::<pb::SignedConsensusMessage>::new()))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_genesis_validators_reach_the_consensus_endpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate_cluster(tmp.path(), VALIDATORS).await;
    let mut nodes = Vec::new();
    for i in 0..VALIDATORS {
        nodes.push(start_validator_in_process(&network, i, Arc::new(MemoryStore::new())).await);
    }
    let validator_dir = |v: usize| network.dir.join("validators").join(format!("validator{v}"));

    // A validator's certificate: accepted.
    let channel = tls_channel(&network, 2, "validator2", Some(validator_dir(1)))
        .await
        .expect("a validator connects over mutual TLS");
    deliver_nothing(channel)
        .await
        .expect("a validator may deliver consensus messages");

    // A certificate from the genesis CA with the client role: TLS accepts it, the service
    // refuses it, and counts the refusal.
    let channel = tls_channel(
        &network,
        2,
        "validator2",
        Some(network.dir.join("clients").join("alice")),
    )
    .await
    .expect("the TLS layer accepts a certificate of a genesis CA");
    let refused = deliver_nothing(channel.clone())
        .await
        .expect_err("a client certificate may not deliver consensus messages");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let fetch = ConsensusClient::new(channel)
        .fetch_blocks(pb::FetchBlocksRequest { from: 0, to: 0 })
        .await
        .expect_err("a client certificate may not fetch blocks from a validator");
    assert_eq!(fetch.code(), Code::PermissionDenied, "{fetch:?}");
    let metrics = nodes[2].shared.metrics.render();
    assert_eq!(
        metric(
            &metrics,
            "weft_pbft_rejected_total{reason=\"not_a_validator\"}"
        ),
        2,
        "{metrics}"
    );

    // No client certificate: the handshake (or the first call) fails.
    let anonymous = match tls_channel(&network, 2, "validator2", None).await {
        Err(_) => true,
        Ok(channel) => deliver_nothing(channel).await.is_err(),
    };
    assert!(
        anonymous,
        "a TLS client without a certificate must be refused"
    );

    // A certificate from another network's CA: refused by the TLS layer.
    let other = Network::generate_named(tmp.path(), "other", "other-chain").await;
    let foreign = match tls_channel(
        &network,
        2,
        "validator2",
        Some(other.dir.join("validators").join("validator0")),
    )
    .await
    {
        Err(_) => true,
        Ok(channel) => deliver_nothing(channel).await.is_err(),
    };
    assert!(
        foreign,
        "a certificate of another network's CA must be refused"
    );

    // The endpoint is not the validator it claims to be: validator1 expects validator2's name
    // on validator2's endpoint, and refuses anything else.
    assert!(
        tls_channel(&network, 2, "validator3", Some(validator_dir(1)))
            .await
            .is_err(),
        "a server certificate that does not name the expected validator is refused"
    );

    // Plain HTTP/2 to the consensus endpoint does not get through.
    let plain = async {
        let channel = Endpoint::from_shared(format!("http://{}", network.consensus_address_of(2)))?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(deliver_nothing(channel).await.is_err())
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), plain)
            .await
            .map(|r| r.unwrap_or(true))
            .unwrap_or(true),
        "plain HTTP/2 must not reach the consensus service"
    );

    // The public client port does not serve the consensus service.
    let public = weft_proto::client::connect_channel(&network.address_of(2))
        .await
        .expect("the client port answers");
    let status = deliver_nothing(public)
        .await
        .expect_err("no consensus service on the client port");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // And the validators themselves, all over mutual TLS, order and commit.
    let package = chaincode_package("asset-transfer");
    for v in 0..VALIDATORS {
        network
            .client_of(v, "admin")
            .await
            .install(package.clone())
            .await
            .expect("install");
    }
    let deployed = network
        .client_of(1, "admin")
        .await
        .deploy(package, &[])
        .await
        .expect("a deploy commits over mutual TLS")
        .block_number;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let heights: Vec<u64> = nodes.iter().map(|n| n.shared.ledger.tip().height).collect();
        if heights.iter().all(|h| *h > deployed) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every validator reached the deploy block: {heights:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}
