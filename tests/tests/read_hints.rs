//! Read hints on a running node (a process): asset-transfer declares that each of its
//! functions reads the asset its first argument names, so the peer sends that asset (or its
//! absence) with the batch. Creating, refusing a duplicate, transferring and reading an asset
//! then cost no state round trip on the chaincode stream, with the results the reads they
//! replace would give; a read no hint names still costs one.

use weft_proto::ClientError;
use weft_tests::{Network, Node, args, chaincode_binary, metric, owner_of, remove_after_exit};

const REQUESTS: &str = "weft_chaincode_state_requests_total";
const REQUEST_KEYS: &str = "weft_chaincode_state_request_keys_total";
const PREFETCHED: &str = "weft_chaincode_prefetched_keys_total";

/// One node process on a fresh network of its own.
async fn start_node() -> (Network, Node) {
    let tmp = tempfile::tempdir().expect("tempdir").keep();
    remove_after_exit(&tmp);
    let network = Network::generate(&tmp).await;
    let node = Node::start(&network, &[]).await;
    (network, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hinted_reads_cost_no_round_trip_and_give_the_same_results() {
    let (network, node) = start_node().await;
    for name in ["asset-transfer", "probe"] {
        network
            .cli_deploy(name, &chaincode_binary(name))
            .await
            .expect_success(&format!("deploy {name}"));
    }
    let alice = network.client("alice").await;
    let before = node.metrics().await;

    let asset = args(&["hinted", "red", "5", "alice", "100"]);
    alice
        .invoke("asset-transfer", "CreateAsset", &asset)
        .await
        .expect("alice creates a new asset");
    match alice.invoke("asset-transfer", "CreateAsset", &asset).await {
        Err(ClientError::TxFailed { message, .. }) => assert!(
            message.contains("the asset hinted already exists"),
            "{message}"
        ),
        other => panic!("a second CreateAsset of one id must fail: {other:?}"),
    }
    alice
        .invoke("asset-transfer", "TransferAsset", &args(&["hinted", "bob"]))
        .await
        .expect("alice transfers her asset to bob");
    assert_eq!(owner_of(&alice, "hinted").await, "bob");

    let after = node.metrics().await;
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    assert_eq!(
        delta(REQUESTS),
        0,
        "every read was hinted, so none needed a round trip"
    );
    assert!(
        delta(PREFETCHED) >= 4,
        "two creates, a transfer and a query each got their asset sent ahead: {}",
        delta(PREFETCHED)
    );

    // The probe's getmany hints its first two keys: a third costs one request for that key
    // (a query: queries do not use the chaincode's cache, which holds what the put wrote).
    alice
        .invoke("probe", "put", &args(&["c", "3"]))
        .await
        .expect("put");
    let before = node.metrics().await;
    let read = alice
        .query("probe", "getmany", &args(&["a", "b", "c"]))
        .await
        .expect("getmany");
    assert_eq!(String::from_utf8_lossy(&read), r#"[null,null,"3"]"#);
    let after = node.metrics().await;
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    assert_eq!(delta(REQUESTS), 1);
    assert_eq!(delta(REQUEST_KEYS), 1);
    assert_eq!(delta(PREFETCHED), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_beyond_the_limit_are_dropped_with_a_warning_and_change_no_result() {
    let (network, node) = start_node().await;
    let admin = network.client("admin").await;
    let binary = std::fs::read(chaincode_binary("probe")).expect("read the probe");
    // Declares getmany's arguments 0..=64 as hints: one more than a peer uses.
    let package = weft_proto::package::build("too-many-hints", "1.0", &binary).expect("package");
    admin
        .deploy(package, &[])
        .await
        .expect("a chaincode with unusable hints deploys: they are dropped, not refused");
    assert!(
        node.log().contains("beyond the first 64"),
        "the peer says which hint it dropped"
    );
    let alice = network.client("alice").await;
    alice
        .invoke("too-many-hints", "put", &args(&["k", "v"]))
        .await
        .expect("put");
    let read = alice
        .query("too-many-hints", "getmany", &args(&["k", "absent"]))
        .await
        .expect("getmany");
    assert_eq!(String::from_utf8_lossy(&read), r#"["v",null]"#);
}
