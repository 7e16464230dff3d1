//! `weft cluster plan` as a user runs it: a blueprint's plan printed the same way twice, and a
//! broken blueprint refused with the key and the line.

use std::path::Path;

use weft_tests::{weft, weft_with_env};

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

#[tokio::test]
async fn kubernetes_locations_are_written_as_manifests_and_up_says_when_no_cluster_answers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state").display().to_string();
    let out = tmp.path().join("out");
    let home = tmp.path().display().to_string();
    let file = example("kubernetes.yaml");
    // No kubeconfig anywhere, and not in a pod: this machine has no cluster.
    let env = [
        ("KUBECONFIG", "/nonexistent/kubeconfig"),
        ("HOME", home.as_str()),
        ("KUBERNETES_SERVICE_HOST", ""),
        ("KUBERNETES_SERVICE_PORT", ""),
    ];
    let out_arg = out.display().to_string();
    let written = weft_with_env(
        &[
            "cluster",
            "manifests",
            &file,
            "--state",
            &state,
            "--out",
            &out_arg,
        ],
        &env,
    )
    .await;
    let printed = written.expect_success("weft cluster manifests").to_string();
    for location in ["east", "west"] {
        assert!(printed.contains(&format!("{location}: ")), "{printed}");
        let yaml = std::fs::read_to_string(out.join(format!("{location}.yaml"))).expect("yaml");
        for kind in ["Namespace", "Service", "ConfigMap", "Secret", "StatefulSet"] {
            assert!(
                yaml.contains(&format!("kind: {kind}")),
                "{location}: {kind}"
            );
        }
    }
    let up = weft_with_env(&["cluster", "up", &file, "--state", &state], &env).await;
    assert!(!up.success(), "{up:?}");
    assert!(
        up.stderr.contains("no Kubernetes cluster answers")
            && up.stderr.contains("kubectl apply -f"),
        "{}",
        up.stderr
    );
    // Manifests of a blueprint without a kubernetes location: refused, saying why.
    let local = weft_with_env(
        &[
            "cluster",
            "manifests",
            &example("local.yaml"),
            "--state",
            &state,
        ],
        &env,
    )
    .await;
    assert!(!local.success());
    assert!(
        local.stderr.contains("no kubernetes location"),
        "{}",
        local.stderr
    );
}
