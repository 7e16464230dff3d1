//! Four PBFT validators and non-validating peers in one process (memory stores, process
//! chaincode, real gRPC on loopback): commit certificates on every validator, a peer that
//! forwards the asset-transfer flow, follows only certified blocks and serves queries, a peer
//! that joins late and catches up, and a peer whose validator (the primary) stops, which
//! forwards its pending transaction again until it commits in the next view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_node::node::NodeHandle;
use weft_node::storage::MemoryStore;
use weft_proto::{Committee, Genesis, WeftClient};
use weft_tests::{
    Network, args, chaincode_package, owner_of, start_peer_in_process, start_validator_in_process,
};

const VALIDATORS: usize = 4;
/// Liveness bound: commits take milliseconds; a view change a request timeout (2 s) and more.
const LIVENESS: Duration = Duration::from_secs(60);

struct Cluster {
    network: Network,
    genesis: Genesis,
    validators: Vec<Option<NodeHandle>>,
    peers: Vec<Option<NodeHandle>>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    async fn start(peers: usize) -> Cluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let tmp = tempfile::tempdir().expect("tempdir");
        let network = Network::generate_cluster_with_peers(tmp.path(), VALIDATORS, peers).await;
        let genesis = Genesis::load(&network.genesis_path()).expect("genesis");
        let mut validators = Vec::new();
        for i in 0..VALIDATORS {
            validators.push(Some(
                start_validator_in_process(&network, i, Arc::new(MemoryStore::new())).await,
            ));
        }
        Cluster {
            network,
            genesis,
            validators,
            peers: (0..peers).map(|_| None).collect(),
            _tmp: tmp,
        }
    }

    async fn start_peer(&mut self, peer: usize) {
        self.peers[peer] =
            Some(start_peer_in_process(&self.network, peer, Arc::new(MemoryStore::new())).await);
    }

    /// Installs asset-transfer on every validator, then deploys it through `peer` (which
    /// installs it there too, for queries).
    async fn deploy_through_peer(&self, peer: usize) -> u64 {
        let package = chaincode_package("asset-transfer");
        for i in 0..VALIDATORS {
            self.network
                .client_of(i, "admin")
                .await
                .install(package.clone())
                .await
                .unwrap_or_else(|e| panic!("install on validator {i}: {e}"));
        }
        self.network
            .peer_client(peer, "admin")
            .await
            .deploy(package, &[])
            .await
            .expect("deploy through the non-validating peer")
            .block_number
    }

    fn running(&self) -> Vec<(String, &NodeHandle)> {
        let validators = self
            .validators
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (format!("validator{i}"), n)));
        let peers = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (format!("peer{i}"), n)));
        validators.chain(peers).collect()
    }

    /// Waits until every running node has at least `height` blocks, then checks that they
    /// agree on every block hash and state root.
    async fn wait_for_agreement(&self, height: u64) {
        let start = Instant::now();
        loop {
            let running = self.running();
            let lowest = running
                .iter()
                .map(|(_, n)| n.shared.ledger.tip().height)
                .min()
                .unwrap_or(0);
            if lowest >= height {
                for number in 0..lowest {
                    let mut seen = None;
                    for (name, node) in &running {
                        let block = node
                            .shared
                            .ledger
                            .block(number)
                            .expect("a running node answers")
                            .expect("a running node answers");
                        let key = (block.hash(), block.header.state_root);
                        match &seen {
                            None => seen = Some((name.clone(), key)),
                            Some((first, k)) => {
                                assert_eq!(*k, key, "{first} and {name} disagree on block {number}")
                            }
                        }
                    }
                }
                return;
            }
            assert!(
                start.elapsed() < LIVENESS,
                "not every node reached height {height}: {:?}",
                running
                    .iter()
                    .map(|(name, n)| (name.clone(), n.shared.ledger.tip().height))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn shutdown(self) {
        for node in self.peers.into_iter().chain(self.validators).flatten() {
            node.shutdown().await;
        }
    }
}

/// The next message of a stream, within the liveness bound.
async fn next_on<T>(stream: &mut tonic::Streaming<T>, what: &str) -> T {
    tokio::time::timeout(LIVENESS, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {LIVENESS:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .unwrap_or_else(|| panic!("the stream ended before {what}"))
}

async fn transfer(client: &WeftClient, asset: &str, to: &str) -> u64 {
    client
        .invoke("asset-transfer", "TransferAsset", &args(&[asset, to]))
        .await
        .unwrap_or_else(|e| panic!("transfer {asset} to {to}: {e}"))
        .block_number
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_validating_peer_forwards_follows_certified_blocks_and_serves_queries() {
    let mut cluster = Cluster::start(1).await;
    cluster.start_peer(0).await;
    let deployed = cluster.deploy_through_peer(0).await;
    cluster.wait_for_agreement(deployed + 1).await;

    let admin = cluster.network.peer_client(0, "admin").await;
    let created = admin
        .invoke(
            "asset-transfer",
            "CreateAsset",
            &args(&["asset1", "blue", "5", "alice", "300"]),
        )
        .await
        .expect("the admin assigns asset1 to alice through the peer");
    // SubmitAndWait on the peer returns once the peer itself holds the block.
    assert!(
        cluster.peers[0]
            .as_ref()
            .expect("a running node answers")
            .shared
            .ledger
            .tip()
            .height
            > created.block_number
    );
    assert_eq!(owner_of(&admin, "asset1").await, "alice");
    for (from, to) in [("alice", "bob"), ("bob", "charlie"), ("charlie", "dave")] {
        let through = cluster.network.peer_client(0, from).await;
        let block = transfer(&through, "asset1", to).await;
        assert_eq!(owner_of(&through, "asset1").await, to, "read on the peer");
        cluster.wait_for_agreement(block + 1).await;
        assert_eq!(
            owner_of(&cluster.network.client_of(2, from).await, "asset1").await,
            to,
            "read on validator2"
        );
    }

    // Certificates: every validator certifies the blocks it executed, and the peer keeps the
    // certificates of what it followed; each one checks against the genesis validators.
    let committee = Committee::from_genesis(&cluster.genesis).expect("committee");
    let peer = cluster.peers[0].as_ref().expect("a running node answers");
    let peer_certified = peer.shared.certificates.last_certified();
    assert!(peer_certified > created.block_number);
    assert_eq!(
        peer.shared.ledger.tip().height,
        peer_certified + 1,
        "the peer holds no block beyond its last certificate"
    );
    for (name, node) in cluster.running() {
        let certified = node.shared.certificates.last_certified();
        assert!(
            certified > created.block_number,
            "{name} certified only up to {certified}"
        );
        let certificate = node
            .shared
            .certificates
            .certificate(certified)
            .expect("a running node answers")
            .expect("stored");
        let block = node
            .shared
            .ledger
            .block(certified)
            .expect("a running node answers")
            .expect("a running node answers");
        committee
            .verify_block(certified, &block.hash().0, &certificate)
            .unwrap_or_else(|e| panic!("{name}'s certificate of block {certified}: {e}"));
    }
    // Served to clients with the block.
    let served = admin.block(peer_certified).await.expect("get block");
    let hash: [u8; 32] = served
        .hash
        .as_ref()
        .try_into()
        .expect("a running node answers");
    committee
        .verify_block(
            peer_certified,
            &hash,
            served.certificate.as_ref().expect("certificate"),
        )
        .expect("the served certificate checks");
    // A client checks a block itself: asset1's creation, through the chain of blocks the
    // peer serves up to the next certificate; a block past the tip is not found.
    let proven = admin
        .certified_block(created.block_number, &committee)
        .await
        .unwrap_or_else(|e| panic!("block {} checked by the client: {e}", created.block_number));
    assert!(
        proven
            .results
            .iter()
            .any(|result| result.tx_id.as_ref() == created.tx_id.0.as_slice()),
        "the proven block holds asset1's creation"
    );
    match admin.certified_block(peer_certified + 5, &committee).await {
        Err(weft_proto::ClientError::Rpc(status)) => {
            assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}")
        }
        other => panic!("a block beyond the tip: {other:?}"),
    }
    let status = admin.node_status().await.expect("status");
    assert_eq!(status.role, "peer");
    assert_eq!(status.certified_height, peer_certified);

    // The peer serves block streams: the certified chain in order after block 0 (which every
    // follower has from genesis), then the block of a transfer made after the stream opened.
    let mut blocks = admin
        .raw()
        .stream_blocks(weft_proto::pb::StreamBlocksRequest {
            from_height: 0,
            certified_only: true,
        })
        .await
        .expect("StreamBlocks on the peer")
        .into_inner();
    let mut previous = admin.block(0).await.expect("block 0").hash;
    for number in 1..=peer_certified {
        let block = next_on(&mut blocks, "a block of the chain").await;
        let header = block.header.expect("header");
        assert_eq!(header.number, number, "in order after block 0");
        assert_eq!(header.previous_hash, previous, "chained");
        previous = block.hash;
    }
    let dave = cluster.network.peer_client(0, "dave").await;
    let later = transfer(&dave, "asset1", "alice").await;
    // It arrives in a certified run: the run's last block, at or after the transfer's,
    // carries the certificate.
    loop {
        let block = next_on(&mut blocks, "a block followed after the stream opened").await;
        let header = block.header.expect("header");
        assert_eq!(header.previous_hash, previous, "chained");
        previous = block.hash;
        if header.number >= later && block.certificate.is_some() {
            break;
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_joins_late_catches_up_and_then_follows() {
    let mut cluster = Cluster::start(1).await;
    let package = chaincode_package("asset-transfer");
    for i in 0..VALIDATORS {
        cluster
            .network
            .client_of(i, "admin")
            .await
            .install(package.clone())
            .await
            .expect("install");
    }
    let admin = cluster.network.client_of(1, "admin").await;
    let deployed = admin
        .deploy(package, &[])
        .await
        .expect("deploy")
        .block_number;
    let mut last = deployed;
    for i in 0..25 {
        last = admin
            .invoke(
                "asset-transfer",
                "CreateAsset",
                &args(&[&format!("asset{i}"), "blue", "5", "alice", "300"]),
            )
            .await
            .expect("create")
            .block_number;
    }
    cluster.start_peer(0).await;
    cluster.wait_for_agreement(last + 1).await;
    // Then it follows new blocks, and counts what it applied.
    let more = admin
        .invoke(
            "asset-transfer",
            "CreateAsset",
            &args(&["late", "red", "1", "bob", "10"]),
        )
        .await
        .expect("create")
        .block_number;
    cluster.wait_for_agreement(more + 1).await;
    let peer = cluster.peers[0].as_ref().expect("a running node answers");
    assert!(
        peer.shared
            .metrics
            .followed_blocks
            .load(std::sync::atomic::Ordering::Relaxed)
            > more - 1
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_forwards_again_when_its_validator_and_primary_stops() {
    let mut cluster = Cluster::start(1).await;
    cluster.start_peer(0).await;
    let deployed = cluster.deploy_through_peer(0).await;
    cluster.wait_for_agreement(deployed + 1).await;
    // Validator 0 is the primary of view 0 and the validator the peer forwards to first.
    let stopped = cluster.validators[0]
        .take()
        .expect("a running node answers");
    stopped.shutdown().await;
    let alice = cluster.network.peer_client(0, "alice").await;
    let committed = alice
        .invoke(
            "asset-transfer",
            "CreateAsset",
            &args(&["after", "green", "2", "alice", "50"]),
        )
        .await
        .expect("the transaction commits after the peer forwards it to the others");
    cluster.wait_for_agreement(committed.block_number + 1).await;
    assert_eq!(owner_of(&alice, "after").await, "alice");
    let peer = cluster.peers[0].as_ref().expect("a running node answers");
    assert!(
        peer.shared
            .metrics
            .reforwarded
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the pending transaction was forwarded again"
    );
    let view = cluster
        .network
        .client_of(1, "admin")
        .await
        .node_status()
        .await
        .expect("a running node answers")
        .view;
    assert!(view > 0, "the validators left view 0");
    cluster.shutdown().await;
}
