//! Sixteen validators (n = 16, f = 5) in one process (memory stores, process chaincode, mutual
//! TLS on loopback) under a steady load that saturates them, through every validator in turn:
//! they keep committing, they all end at the same chain (the auditor checks I1-I5 over all
//! sixteen), and there is no view-change storm (no view change at all while the primary is
//! healthy). Fabric 0.6's PBFT failed beyond 16 nodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weft_node::node::NodeHandle;
use weft_node::storage::MemoryStore;
use weft_proto::{Genesis, WeftClient};
use weft_tests::auditor::{Ack, audit, fetch_chain};
use weft_tests::{Network, args, chaincode_package, start_validator_in_process};

const VALIDATORS: usize = 16;
/// How long the load runs.
const LOAD: Duration = Duration::from_secs(20);
const WORKERS: usize = 16;
const LIVENESS: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_validators_keep_committing_under_load_without_view_changes() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate_cluster(tmp.path(), VALIDATORS).await;
    let genesis = Genesis::load(&network.genesis_path()).expect("genesis");
    assert_eq!(genesis.max_faulty(), 5);
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..VALIDATORS {
        nodes.push(start_validator_in_process(&network, i, Arc::new(MemoryStore::new())).await);
    }
    let package = chaincode_package("asset-transfer");
    let mut clients = Vec::new();
    for i in 0..VALIDATORS {
        let admin = network.client_of(i, "admin").await;
        admin.install(package.clone()).await.expect("install");
        clients.push(admin);
    }
    let deployed = clients[0]
        .deploy(package, &[])
        .await
        .expect("deploy on sixteen validators")
        .block_number;
    wait_level(&nodes, deployed + 1).await;

    // Load: 16 workers, each submitting one transaction at a time through every validator in
    // turn, which keeps the debug-built cluster on two cores busy (about 20-28 tx/s here with
    // 4 to 32 workers; throughput belongs to `weft bench`).
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let clients: Vec<WeftClient> = clients.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut k = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let client = &clients[(w + k) % clients.len()];
                let key = format!("w{w}-{k}");
                let committed = client
                    .invoke(
                        "asset-transfer",
                        "CreateAsset",
                        &args(&[&key, "blue", "1", "alice", "1"]),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
                acks.push(Ack {
                    tx_id: committed.tx_id,
                    block: committed.block_number,
                });
                k += 1;
            }
            acks
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(LOAD).await;
    stop.store(true, Ordering::SeqCst);
    let mut acks = Vec::new();
    for worker in workers {
        acks.extend(worker.await.expect("a load worker panicked"));
    }
    let rate = acks.len() as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "16 validators: {} transactions acknowledged in {:?} ({rate:.1} tx/s, one at a time per worker)",
        acks.len(),
        started.elapsed()
    );
    assert!(
        acks.len() >= 40,
        "sixteen validators kept committing: only {} acknowledged",
        acks.len()
    );

    let top = acks.iter().map(|a| a.block).max().unwrap_or(deployed);
    wait_level(&nodes, top + 1).await;
    let mut views = Vec::new();
    for node in &nodes {
        let text = node.shared.metrics.render();
        views.push(weft_tests::metric(&text, "weft_pbft_view_changes_total"));
    }
    assert!(
        views.iter().all(|v| *v == 0),
        "no view change while the primary is healthy: view changes per validator {views:?}"
    );
    let mut chains = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        chains.push(fetch_chain(&format!("validator{i}"), client).await);
    }
    let violations = audit(&genesis, &chains, &acks);
    assert!(violations.is_empty(), "the auditor found: {violations:#?}");
    for node in nodes {
        node.shutdown().await;
    }
}

/// Waits until every validator has at least `height` blocks.
async fn wait_level(nodes: &[NodeHandle], height: u64) {
    let start = Instant::now();
    loop {
        let heights: Vec<u64> = nodes.iter().map(|n| n.shared.ledger.tip().height).collect();
        if heights.iter().all(|h| *h >= height) {
            return;
        }
        assert!(
            start.elapsed() < LIVENESS,
            "not every validator reached height {height}: {heights:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
