//! Four PBFT validators in one process (memory stores, process chaincode, real gRPC on
//! loopback): the asset-transfer flow submitted through different validators, agreement of
//! every block hash and state root, and a primary that stops and is replaced by a view change,
//! then restarts from what it persisted and catches up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_node::node::NodeHandle;
use weft_node::storage::MemoryStore;
use weft_proto::WeftClient;
use weft_tests::{Network, args, chaincode_package, owner_of, start_validator_in_process};

const VALIDATORS: usize = 4;
/// A generous bound for liveness: commits happen in milliseconds; a view change takes a
/// request timeout (2 s) plus a few rounds.
const LIVENESS: Duration = Duration::from_secs(60);

struct Cluster {
    network: Network,
    stores: Vec<Arc<MemoryStore>>,
    nodes: Vec<Option<NodeHandle>>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        // RUST_LOG=info shows what the validators do when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let tmp = tempfile::tempdir().expect("tempdir");
        let network = Network::generate_cluster(tmp.path(), VALIDATORS).await;
        let stores: Vec<_> = (0..VALIDATORS)
            .map(|_| Arc::new(MemoryStore::new()))
            .collect();
        let mut nodes = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            nodes.push(Some(
                start_validator_in_process(&network, i, store.clone()).await,
            ));
        }
        Cluster {
            network,
            stores,
            nodes,
            _tmp: tmp,
        }
    }

    async fn client(&self, validator: usize, name: &str) -> WeftClient {
        self.network.client_of(validator, name).await
    }

    /// Installs asset-transfer on every running validator, deploys it through `through`, and
    /// waits until every running validator has the deploy block.
    async fn deploy_asset_transfer(&self, through: usize) {
        let package = chaincode_package("asset-transfer");
        for i in 0..VALIDATORS {
            if self.nodes[i].is_some() {
                self.client(i, "admin")
                    .await
                    .install(package.clone())
                    .await
                    .unwrap_or_else(|e| panic!("install on validator {i}: {e}"));
            }
        }
        let deployed = self
            .client(through, "admin")
            .await
            .deploy(package, &[])
            .await
            .expect("deploy asset-transfer through a validator");
        self.wait_for_agreement(deployed.block_number + 1).await;
    }

    /// The ledger of each running validator: (height, block hashes, state roots).
    fn ledgers(&self) -> Vec<(usize, Vec<String>, Vec<String>)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, node)| node.as_ref().map(|n| (i, n)))
            .map(|(i, node)| {
                let ledger = &node.shared.ledger;
                let height = ledger.tip().height;
                let mut hashes = Vec::new();
                let mut roots = Vec::new();
                for number in 0..height {
                    let block = ledger
                        .block(number)
                        .expect("read block")
                        .expect("block below the tip exists");
                    hashes.push(block.hash().to_hex());
                    roots.push(block.header.state_root.to_hex());
                }
                (i, hashes, roots)
            })
            .collect()
    }

    /// Waits until every running validator has at least `height` blocks, then checks that
    /// they agree on every block hash and state root (I1, I2).
    async fn wait_for_agreement(&self, height: u64) {
        let start = Instant::now();
        loop {
            let ledgers = self.ledgers();
            let lowest = ledgers.iter().map(|(_, h, _)| h.len()).min().unwrap_or(0) as u64;
            if lowest >= height {
                let (first, hashes, roots) = &ledgers[0];
                for (other, other_hashes, other_roots) in &ledgers[1..] {
                    let common = hashes.len().min(other_hashes.len());
                    assert_eq!(
                        hashes[..common],
                        other_hashes[..common],
                        "validators {first} and {other} disagree on a block hash"
                    );
                    assert_eq!(
                        roots[..common],
                        other_roots[..common],
                        "validators {first} and {other} disagree on a state root"
                    );
                }
                return;
            }
            assert!(
                start.elapsed() < LIVENESS,
                "validators did not all reach height {height}: {:?}",
                ledgers
                    .iter()
                    .map(|(i, h, _)| (i, h.len()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn height_of(&self, validator: usize) -> u64 {
        self.nodes[validator]
            .as_ref()
            .expect("running")
            .shared
            .ledger
            .tip()
            .height
    }

    async fn stop(&mut self, validator: usize) {
        if let Some(node) = self.nodes[validator].take() {
            node.shutdown().await;
        }
    }

    async fn restart(&mut self, validator: usize) {
        assert!(self.nodes[validator].is_none(), "stop it first");
        self.nodes[validator] = Some(
            start_validator_in_process(&self.network, validator, self.stores[validator].clone())
                .await,
        );
    }

    async fn shutdown(mut self) {
        for i in 0..VALIDATORS {
            self.stop(i).await;
        }
    }
}

async fn transfer(client: &WeftClient, asset: &str, to: &str) -> u64 {
    client
        .invoke("asset-transfer", "TransferAsset", &args(&[asset, to]))
        .await
        .unwrap_or_else(|e| panic!("transfer {asset} to {to}: {e}"))
        .block_number
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_run_the_asset_transfer_flow_and_agree_on_every_block() {
    let cluster = Cluster::start().await;
    // Deploy through a backup: it forwards to the primary.
    cluster.deploy_asset_transfer(2).await;

    let admin = cluster.client(1, "admin").await;
    let created = admin
        .invoke(
            "asset-transfer",
            "CreateAsset",
            &args(&["asset1", "blue", "5", "alice", "300"]),
        )
        .await
        .expect("admin assigns asset1 to alice");
    cluster.wait_for_agreement(created.block_number + 1).await;
    assert_eq!(
        owner_of(&cluster.client(3, "alice").await, "asset1").await,
        "alice"
    );

    // Each owner signs, each through a different validator; ownership is read from another.
    for (step, (from, to)) in [("alice", "bob"), ("bob", "charlie"), ("charlie", "dave")]
        .into_iter()
        .enumerate()
    {
        let through = step % VALIDATORS;
        let reader = (step + 1) % VALIDATORS;
        let block = transfer(&cluster.client(through, from).await, "asset1", to).await;
        cluster.wait_for_agreement(block + 1).await;
        assert_eq!(
            owner_of(&cluster.client(reader, to).await, "asset1").await,
            to,
            "after {from} transferred to {to} (block {block}), validator {reader} disagrees"
        );
    }

    // A non-owner's transfer commits as a failure on every validator alike.
    let refused = cluster
        .client(3, "alice")
        .await
        .invoke(
            "asset-transfer",
            "TransferAsset",
            &args(&["asset1", "alice"]),
        )
        .await;
    let refused_block = match refused {
        Err(weft_proto::ClientError::TxFailed { block, .. }) => block,
        other => panic!("a non-owner transfer must commit as a failure: {other:?}"),
    };
    cluster.wait_for_agreement(refused_block + 1).await;
    for i in 0..VALIDATORS {
        assert_eq!(
            owner_of(&cluster.client(i, "admin").await, "asset1").await,
            "dave"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_is_replaced_and_catches_up_after_restart() {
    let mut cluster = Cluster::start().await;
    cluster.deploy_asset_transfer(0).await;
    let admin = cluster.client(1, "admin").await;
    admin
        .invoke(
            "asset-transfer",
            "CreateAsset",
            &args(&["asset1", "blue", "5", "alice", "300"]),
        )
        .await
        .expect("create asset1");
    let before = cluster.height_of(1);
    cluster.wait_for_agreement(before).await;

    // Replica 0 is the primary of view 0. Stop it: the others must change view and go on.
    cluster.stop(0).await;
    let block = transfer(&cluster.client(1, "alice").await, "asset1", "bob").await;
    assert!(
        block >= before,
        "the transfer commits after the view change"
    );
    for i in 1..VALIDATORS {
        let status = cluster.nodes[i]
            .as_ref()
            .expect("running")
            .shared
            .consensus
            .as_ref()
            .expect("a PBFT validator publishes its consensus status")
            .borrow()
            .clone();
        assert!(
            status.view >= 1 && status.primary != 0,
            "validator {i} should be past view 0 with a new primary: {status:?}"
        );
    }
    // `weft node status` reads the same through the admin API.
    let shown = cluster
        .client(2, "admin")
        .await
        .node_status()
        .await
        .expect("node status");
    assert!(
        shown.view >= 1 && shown.primary != "validator0" && shown.primary.starts_with("validator"),
        "node status shows the new view and primary: {shown:?}"
    );
    let block = transfer(&cluster.client(2, "bob").await, "asset1", "charlie").await;
    cluster.wait_for_agreement(block + 1).await;

    // The old primary restarts from its persisted state and catches up with the others under
    // steady load: it learns the new view from the others' messages, and the sequences it
    // missed reach it through state transfer at the next stable checkpoint.
    cluster.restart(0).await;
    let restarted_at = cluster.height_of(0);
    let start = Instant::now();
    let mut k = 0;
    while cluster.height_of(0) < cluster.height_of(1) || cluster.height_of(0) <= restarted_at {
        assert!(
            start.elapsed() < LIVENESS,
            "the restarted validator stayed at height {} while the others reached {}",
            cluster.height_of(0),
            cluster.height_of(1)
        );
        admin
            .invoke(
                "asset-transfer",
                "CreateAsset",
                &args(&[&format!("filler{k}"), "red", "1", "alice", "1"]),
            )
            .await
            .unwrap_or_else(|e| panic!("create filler{k}: {e}"));
        k += 1;
    }
    let status = cluster.nodes[0]
        .as_ref()
        .expect("running")
        .shared
        .consensus
        .as_ref()
        .expect("status")
        .borrow()
        .clone();
    assert!(
        status.view >= 1,
        "the restarted validator adopted the new view: {status:?}"
    );
    let block = transfer(&cluster.client(3, "charlie").await, "asset1", "dave").await;
    cluster.wait_for_agreement(block + 1).await;
    assert_eq!(
        owner_of(&cluster.client(0, "dave").await, "asset1").await,
        "dave"
    );
    cluster.shutdown().await;
}
