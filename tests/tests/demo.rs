//! `weft demo` as a user runs it: a process that must exit 0, show the asset's owners step by
//! step, and end with all four validators on the same block hash.

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
    // Four validators end on the same block hash.
    let tips: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("validator") && l.contains(" hash "))
        .filter_map(|l| l.split(" hash ").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(tips.len(), 4, "one tip line per validator:\n{stdout}");
    assert!(tips.iter().all(|t| *t == tips[0]), "{stdout}");
    assert!(
        stdout.contains("every validator holds the same block"),
        "{stdout}"
    );
    assert!(stdout.contains("demo passed"), "{stdout}");
}
