//! A node as a process: the CLI deploys and transacts, the ledger survives SIGTERM and SIGKILL
//! unchanged and verifiable, and `weft ledger verify` refuses a ledger that is not this
//! network's.

use weft_proto::pb;
use weft_tests::{Network, Node, chaincode_binary, owner_of, to_hex, weft};

/// Chain info fields that must survive a restart.
fn summary(info: &pb::ChainInfo) -> (String, u64, String, String, u64) {
    (
        info.chain_id.clone(),
        info.height,
        to_hex(&info.current_hash),
        to_hex(&info.state_root),
        info.transactions,
    )
}

async fn chain_info(network: &Network) -> pb::ChainInfo {
    network
        .client("admin")
        .await
        .chain_info()
        .await
        .expect("chain info")
}

async fn verify(config: &std::path::Path) -> weft_tests::CliOutput {
    weft(&[
        "ledger".as_ref(),
        "verify".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ])
    .await
}

/// Runs `weft ledger verify` and returns what is wrong with its answer, if anything: it must
/// exit 0 and print `expected` (each part).
async fn verify_problem(
    config: &std::path::Path,
    when: &str,
    expected: &[String],
) -> Option<String> {
    let output = verify(config).await;
    let missing: Vec<&String> = expected
        .iter()
        .filter(|e| !output.stdout.contains(e.as_str()))
        .collect();
    if output.success() && missing.is_empty() {
        return None;
    }
    Some(format!(
        "weft ledger verify {when}: exit {}, expected output {missing:?}\n--- stdout\n{}--- stderr\n{}",
        output.code, output.stdout, output.stderr
    ))
}

/// `weft chaincode query ReadAsset` through the CLI: the owner field of its JSON.
async fn cli_owner(network: &Network, asset: &str) -> String {
    let output = network
        .cli_query("alice", "asset-transfer", "ReadAsset", &[asset])
        .await;
    let stdout = output.expect_success("weft chaincode query ReadAsset");
    let value: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("ReadAsset prints JSON");
    value["Owner"].as_str().unwrap_or_default().to_string()
}

async fn transfer(network: &Network, from: &str, to: &str) {
    let output = network
        .cli_invoke(from, "asset-transfer", "TransferAsset", &["asset1", to])
        .await;
    let stdout = output.expect_success(&format!("{from} transfers asset1 to {to}"));
    // TransferAsset returns the previous owner.
    assert_eq!(
        stdout.trim(),
        from,
        "TransferAsset should return the old owner"
    );
    assert!(output.stderr.contains("committed"), "{}", output.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_survives_sigterm_and_kill9_and_verifies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate(tmp.path()).await;
    let mut node = Node::start(&network, &[]).await;

    let deployed = network
        .cli_deploy("asset-transfer", &chaincode_binary("asset-transfer"))
        .await;
    let stdout = deployed.expect_success("weft chaincode deploy");
    assert!(stdout.contains("deployed asset-transfer:1.0"), "{stdout}");
    network
        .cli_invoke(
            "alice",
            "asset-transfer",
            "CreateAsset",
            &["asset1", "blue", "5", "alice", "300"],
        )
        .await
        .expect_success("alice creates asset1");
    transfer(&network, "alice", "bob").await;
    assert_eq!(cli_owner(&network, "asset1").await, "bob");

    let before = chain_info(&network).await;
    // genesis, deploy, create, transfer
    assert_eq!(
        before.height, 4,
        "one block per committed transaction after genesis"
    );
    assert_eq!(before.transactions, 3);
    let info = weft(
        &[
            vec!["ledger".to_string(), "info".into()],
            network.peer_args(),
        ]
        .concat(),
    )
    .await;
    let info = info.expect_success("weft ledger info");
    assert!(info.contains(&to_hex(&before.state_root)), "{info}");

    // SIGTERM: a clean exit, a ledger that verifies, and the same chain after the restart.
    let status = node.stop();
    assert!(
        status.success(),
        "SIGTERM should end the node with exit 0, got {status}\n{}",
        node.log()
    );
    // Verify problems are collected so the restarts below are exercised whatever verify says.
    let mut problems = Vec::new();
    problems.extend(
        verify_problem(
            &network.config_path(),
            "after SIGTERM",
            &[
                "ledger verified: 4 blocks, 3 transactions".into(),
                to_hex(&before.current_hash),
                to_hex(&before.state_root),
            ],
        )
        .await,
    );

    node.restart().await;
    let after = chain_info(&network).await;
    assert_eq!(
        summary(&after),
        summary(&before),
        "the chain changed across a SIGTERM restart"
    );
    assert_eq!(cli_owner(&network, "asset1").await, "bob");
    transfer(&network, "bob", "charlie").await;
    let before_kill = chain_info(&network).await;
    assert_eq!(before_kill.height, 5);
    assert_ne!(
        before_kill.state_root, before.state_root,
        "the transfer changed the state"
    );
    assert_eq!(
        owner_of(&network.client("admin").await, "asset1").await,
        "charlie"
    );

    // SIGKILL: nothing acknowledged is lost.
    node.kill9();
    node.restart().await;
    let after_kill = chain_info(&network).await;
    assert_eq!(
        summary(&after_kill),
        summary(&before_kill),
        "the chain changed across kill -9"
    );
    assert_eq!(cli_owner(&network, "asset1").await, "charlie");
    transfer(&network, "charlie", "dave").await;
    assert_eq!(cli_owner(&network, "asset1").await, "dave");
    let last = chain_info(&network).await;
    assert_eq!((last.height, last.transactions), (6, 5));

    let status = node.stop();
    assert!(
        status.success(),
        "SIGTERM should end the node with exit 0, got {status}"
    );
    problems.extend(
        verify_problem(
            &network.config_path(),
            "after kill -9, a restart and SIGTERM",
            &[
                "ledger verified: 6 blocks, 5 transactions".into(),
                to_hex(&last.state_root),
            ],
        )
        .await,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_verify_refuses_another_networks_genesis() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate(tmp.path()).await;
    let other = Network::generate_named(tmp.path(), "other", "weft-dev").await;
    let mut node = Node::start(&network, &[]).await;
    let status = node.stop();
    assert!(status.success(), "{status}");

    // The same data directory, judged against another network's genesis.
    let text = std::fs::read_to_string(network.config_path()).expect("read config");
    let genesis_line = "genesis = \"../genesis.json\"";
    assert!(
        text.contains(genesis_line),
        "the generated config names its genesis: {text}"
    );
    let swapped = text.replace(
        genesis_line,
        &format!("genesis = {:?}", other.genesis_path().display().to_string()),
    );
    let mismatch = network.dir.join("nodes").join("other-genesis.toml");
    std::fs::write(&mismatch, swapped).expect("write config");

    let output = verify(&mismatch).await;
    assert!(
        !output.success(),
        "verify must fail on another network's genesis:\n{}",
        output.stdout
    );
    assert_eq!(output.code, 1, "{}", output.stderr);
    assert!(
        !output.stdout.contains("ledger verified"),
        "{}",
        output.stdout
    );
    let stderr = output.stderr.trim();
    assert!(
        stderr.starts_with("error:") && stderr.contains("block 0") && stderr.contains("genesis"),
        "the error should name block 0 and the genesis: {stderr}"
    );

    // Control: the same ledger verifies against its own genesis.
    verify(&network.config_path())
        .await
        .expect_success("weft ledger verify with the node's own genesis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_verify_refuses_a_missing_ledger() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate(tmp.path()).await;
    // This node never ran: there is no ledger to verify.
    let output = verify(&network.config_path()).await;
    assert!(
        !output.success(),
        "verify of a node that never ran must fail, not report an empty chain as verified:\n{}",
        output.stdout
    );
    assert!(output.stderr.contains("error:"), "{}", output.stderr);
}
