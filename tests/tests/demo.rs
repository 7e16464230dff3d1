//! `weft demo` as a user runs it: a process that must exit 0, show the asset's owners step by
//! step, and end with the four validators and the non-validating peer on the same block hash
//! and the peer's commit certificate checked.

use weft_tests::docker::{containers_labelled, engine_answers, static_chaincode_binary};
use weft_tests::{example_binary, weft, weft_with_env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_demo_passes_and_shows_asset1_passing_from_bob_to_charlie_to_dave() {
    // The demo finds the chaincode beside the weft binary; fail clearly if it is not built.
    example_binary("asset-transfer");
    let output = weft(&["demo"]).await;
    output.expect_success("weft demo");
    check_demo_output(&output.stdout);
}

/// The same demo with every peer (four validators and the non-validating peer) running the
/// chaincode in its own FROM scratch container; afterwards no demo container is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_demo_passes_with_docker_chaincode_and_leaves_no_container() {
    if !engine_answers("weft_demo_passes_with_docker_chaincode") {
        return;
    }
    let binary = static_chaincode_binary("asset-transfer");
    let binary_text = binary.display().to_string();
    let output = weft_with_env(
        &["demo", "--runtime", "docker", "--chaincode", &binary_text],
        &[("RUST_LOG", "warn,weft_node::chaincode::docker=info")],
    )
    .await;
    output.expect_success("weft demo --runtime docker");
    let stdout = &output.stdout;
    check_demo_output(stdout);
    let log = &output.stderr;
    assert!(
        log.matches("chaincode container started").count() >= 5,
        "each of the five peers started its own container:\n{log}"
    );
    assert_eq!(
        containers_labelled("weft.network=weft-demo"),
        Vec::<String>::new(),
        "the demo's peers remove their containers when they stop"
    );
}

fn check_demo_output(stdout: &str) {
    let owners: Vec<&str> = stdout
        .lines()
        .filter_map(|l| {
            l.split_once("asset1 is owned by ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
        })
        .collect();
    assert_eq!(
        owners,
        ["alice", "bob", "charlie", "dave"],
        "asset1 should be shown owned by alice, then bob, charlie and dave, one step each:\n{stdout}"
    );
    assert!(
        stdout.contains("refused in block"),
        "the non-owner's transfer should be shown refused:\n{stdout}"
    );
    assert!(stdout.contains("asset1 is still owned by dave"), "{stdout}");
    // Four validators and the non-validating peer end on the same block hash.
    let tips: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            (l.starts_with("validator") || l.starts_with("peer0")) && l.contains(" hash ")
        })
        .filter_map(|l| l.split(" hash ").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(
        tips.len(),
        5,
        "one tip line per validator and peer:\n{stdout}"
    );
    assert!(tips.iter().all(|t| *t == tips[0]), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("peer0") && l.contains(" peer ")),
        "the non-validating peer shows its role:\n{stdout}"
    );
    assert!(
        stdout.contains("every peer holds the same block"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("carries a commit certificate signed by")
                && l.contains(
                    "of 4 validators (checked here, with the block's contents and hash)"
                )),
        "the peer's tip certificate is checked:\n{stdout}"
    );
    assert!(stdout.contains("demo passed"), "{stdout}");
}
