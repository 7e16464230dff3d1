//! `weft cluster plan` as a user runs it: a blueprint's plan printed the same way twice, and a
//! broken blueprint refused with the key and the line.

use std::path::Path;

use weft_tests::weft;

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("orchestration")
        .join("blueprints")
        .join(name)
        .display()
        .to_string()
}

#[tokio::test]
async fn weft_cluster_plan_prints_the_same_plan_for_the_same_blueprint_and_seed() {
    let file = example("local.yaml");
    let first = weft(&["cluster", "plan", &file, "--seed", "3"]).await;
    let printed = first.expect_success("weft cluster plan").to_string();
    assert!(
        printed.contains("validator dev-validator0 at 127.0.0.1:17051 consensus 127.0.0.1:17053"),
        "{printed}"
    );
    assert!(
        printed.contains("peer dev-peer0 grpc 127.0.0.1:17063"),
        "{printed}"
    );
    let second = weft(&["cluster", "plan", &file, "--seed", "3"]).await;
    assert_eq!(second.expect_success("weft cluster plan again"), printed);
    let three = weft(&["cluster", "plan", &example("three-locations.yaml")]).await;
    let printed = three.expect_success("the three-location plan");
    for location in ["sjc", "lon", "sng"] {
        assert!(
            printed.contains(&format!("network weft-asset-network-{location}")),
            "{printed}"
        );
    }
}

#[tokio::test]
async fn a_broken_blueprint_is_refused_with_the_key_and_the_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("broken.yaml");
    std::fs::write(
        &file,
        "name: net\nlocations:\n  - { name: a, type: local }\n  - { name: a, type: local }\ncluster:\n  validators.per.location: 2\n",
    )
    .expect("write");
    let output = weft(&["cluster", "plan", &file.display().to_string()]).await;
    assert!(!output.success(), "{output:?}");
    assert!(
        output.stderr.contains("line 4") && output.stderr.contains("locations[1].name"),
        "{}",
        output.stderr
    );
}
