//! Four validators and two non-validating peers as `weft node start` processes (RocksDB,
//! process chaincode) under steady load through all of them, every acknowledgement recorded;
//! the primary is killed with SIGKILL mid-load and restarted later. The auditor then checks
//! I1-I5 over every validator's and peer's chain, and a negative
//! control shows that it would have caught a fork, a duplicate and a lost acknowledgement.
//! A validator whose chaincode behaves differently from the others' diverges: it must stop and
//! say so, while the other three go on.

use std::time::{Duration, Instant};

use weft_proto::WeftClient;
use weft_tests::auditor::{Ack, PeerChain, Violation, audit, fetch_chain};
use weft_tests::{Network, Node, args, chaincode_binary};

const VALIDATORS: usize = 4;
const PEERS: usize = 2;
const LIVENESS: Duration = Duration::from_secs(90);

async fn heights(nodes: &[Node]) -> Vec<u64> {
    let mut heights = Vec::new();
    for node in nodes.iter().filter(|n| n.is_running()) {
        heights.push(
            node.client("admin")
                .await
                .chain_info()
                .await
                .expect("chain info")
                .height,
        );
    }
    heights
}

/// Waits until every running node has the same height (a peer learns of a deploy only when its
/// follower brings the block, possibly after a reconnect backoff of up to 5 s if it started
/// before the validators served; until then it refuses the chaincode's transactions).
async fn level(nodes: &[Node], what: &str) {
    let start = Instant::now();
    loop {
        let all = heights(nodes).await;
        if all.iter().all(|h| *h == all[0]) {
            return;
        }
        assert!(
            start.elapsed() < LIVENESS,
            "{what}: the nodes did not level within {LIVENESS:?}: heights {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates one asset through `client` and records the acknowledgement.
async fn create(client: &WeftClient, key: &str, acks: &mut Vec<Ack>) {
    let committed = client
        .invoke(
            "asset-transfer",
            "CreateAsset",
            &args(&[key, "blue", "1", "alice", "1"]),
        )
        .await
        .unwrap_or_else(|e| panic!("create {key}: {e}"));
    acks.push(Ack {
        tx_id: committed.tx_id,
        block: committed.block_number,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_killed_mid_load_is_replaced_then_catches_up_and_the_auditor_finds_no_violation()
 {
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate_cluster_with_peers(tmp.path(), VALIDATORS, PEERS).await;
    let mut nodes = Vec::new();
    for i in 0..VALIDATORS {
        nodes.push(Node::start_validator(&network, i, &[]).await);
    }
    for p in 0..PEERS {
        nodes.push(Node::start_peer(&network, p, &[]).await);
    }
    // The CLI installs the package on every validator, then deploys through validator0.
    network
        .cli_deploy("asset-transfer", &chaincode_binary("asset-transfer"))
        .await
        .expect_success("weft chaincode deploy on a four-validator network");
    level(&nodes, "asset-transfer deployed everywhere").await;

    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.client("admin").await);
    }
    let mut acks = Vec::new();
    // Through every validator and peer in turn.
    for k in 0..12 {
        create(
            &clients[k % clients.len()],
            &format!("before{k}"),
            &mut acks,
        )
        .await;
    }

    // Validator 0 is the primary of view 0, and the validator the peers forward to first.
    nodes[0].kill9();
    let survivors = clients.len() - 1;
    for k in 0..12 {
        create(
            &clients[1 + k % survivors],
            &format!("during{k}"),
            &mut acks,
        )
        .await;
    }

    // It restarts from its RocksDB and journal, and catches up under load.
    nodes[0].restart().await;
    let start = Instant::now();
    let mut k = 0;
    loop {
        let all = heights(&nodes).await;
        if all.iter().all(|h| *h == all[0]) && k >= 12 {
            break;
        }
        assert!(
            start.elapsed() < LIVENESS,
            "the restarted validator did not catch up: heights {all:?}\n--- validator0 log\n{}",
            nodes[0].log()
        );
        create(&clients[1 + k % survivors], &format!("after{k}"), &mut acks).await;
        k += 1;
    }
    let status = nodes[0]
        .client("admin")
        .await
        .node_status()
        .await
        .expect("status");
    assert!(
        status.view >= 1,
        "validator0 adopted the new view: {status:?}"
    );

    let genesis = weft_proto::Genesis::load(&network.genesis_path()).expect("genesis");
    let mut chains = Vec::new();
    for node in &nodes {
        chains.push(
            fetch_chain(
                &network.node_name(node.validator),
                &node.client("admin").await,
            )
            .await,
        );
    }
    let violations = audit(&genesis, &chains, &acks);
    assert!(violations.is_empty(), "the auditor found: {violations:#?}");
    assert!(acks.len() >= 36);

    // Negative controls: the same auditor on forged histories must object.
    let mut forked = chains.clone();
    let last = forked[2].blocks.len() - 1;
    forked[2].blocks[last].header.state_root.0[0] ^= 1;
    let found = audit(&genesis, &forked, &acks);
    assert!(
        found.iter().any(|v| matches!(v, Violation::Fork { .. }))
            && found
                .iter()
                .any(|v| matches!(v, Violation::StateRootDiffers { .. })),
        "a forked block must be reported: {found:?}"
    );
    let mut duplicated: Vec<PeerChain> = chains.clone();
    let tx = duplicated[1]
        .blocks
        .iter()
        .find_map(|b| b.transactions.first().cloned())
        .expect("a block with a transaction");
    let end = duplicated[1].blocks.len() - 1;
    duplicated[1].blocks[end].transactions.push(tx);
    assert!(
        audit(&genesis, &duplicated, &acks)
            .iter()
            .any(|v| matches!(v, Violation::Duplicate { .. })),
        "a duplicated transaction must be reported"
    );
    let mut lost = acks.clone();
    lost[0].block += 1;
    assert!(
        audit(&genesis, &chains, &lost)
            .iter()
            .any(|v| matches!(v, Violation::LostAcknowledged { .. })),
        "an acknowledgement at the wrong height must be reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_whose_state_diverges_stops_and_says_so_while_the_others_go_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate_cluster(tmp.path(), VALIDATORS).await;
    let mut nodes = Vec::new();
    for i in 0..VALIDATORS {
        // The probe's "skewed" function writes PROBE_SKEW: validator 3 writes something else.
        let skew = if i == 3 { "1" } else { "0" };
        nodes.push(Node::start_validator(&network, i, &[("PROBE_SKEW", skew)]).await);
    }
    network
        .cli_deploy("probe", &chaincode_binary("probe"))
        .await
        .expect_success("deploy the probe on four validators");
    let client = nodes[0].client("admin").await;
    let mut acks = Vec::new();
    // Commit past the next checkpoint (every 10 sequences), where states are compared.
    for k in 0..12 {
        let committed = client
            .invoke("probe", "skewed", &args(&[&format!("key{k}")]))
            .await
            .unwrap_or_else(|e| panic!("skewed {k}: {e}"));
        assert_eq!(
            committed.payload, b"0",
            "validator 0 answers for the majority"
        );
        acks.push(Ack {
            tx_id: committed.tx_id,
            block: committed.block_number,
        });
    }

    let status = nodes[3].wait_exit(LIVENESS).await.unwrap_or_else(|| {
        panic!(
            "the diverged validator kept running\n--- validator3 log\n{}",
            nodes[3].log()
        )
    });
    assert!(!status.success(), "it exits with an error: {status}");
    let log = nodes[3].log();
    assert!(
        log.contains("diverged") && log.contains("2f+1 validators certified"),
        "it says why it stopped:\n{log}"
    );

    // The three that agree keep committing (f = 1 is tolerated) and their chains audit clean.
    for k in 12..15 {
        let committed = nodes[1]
            .client("admin")
            .await
            .invoke("probe", "skewed", &args(&[&format!("key{k}")]))
            .await
            .unwrap_or_else(|e| panic!("skewed {k} after the divergence: {e}"));
        acks.push(Ack {
            tx_id: committed.tx_id,
            block: committed.block_number,
        });
    }
    level(&nodes, "the three healthy validators").await;
    let genesis = weft_proto::Genesis::load(&network.genesis_path()).expect("genesis");
    let mut chains = Vec::new();
    for node in nodes.iter().filter(|n| n.is_running()) {
        chains.push(
            fetch_chain(
                &network.node_name(node.validator),
                &node.client("admin").await,
            )
            .await,
        );
    }
    assert_eq!(chains.len(), 3);
    let violations = audit(&genesis, &chains, &acks);
    assert!(violations.is_empty(), "the auditor found: {violations:#?}");
}
