//! `weft demo` as a user runs it: a process that must exit 0 and show the asset's owners.

use weft_tests::{example_binary, weft};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_demo_passes_and_shows_asset1_passing_from_bob_to_charlie_to_dave() {
    // The demo finds the chaincode beside the weft binary; fail clearly if it is not built.
    example_binary("asset-transfer");
    let output = weft(&["demo"]).await;
    output.expect_success("weft demo");
    let stdout = &output.stdout;

    let owners: Vec<&str> = stdout
        .lines()
        .filter_map(|l| {
            l.split_once("asset1 is owned by ")
                .map(|(_, owner)| owner.trim())
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
    assert!(stdout.contains("demo passed"), "{stdout}");
}
