//! `weft cluster` against this machine's Docker engine, as a user drives it: three locations
//! (sjc, lon, sng) as three networks on the one engine, brought up from a blueprint, the demo
//! run through peers of each location, a second `up` that changes nothing, the management loop
//! restarting a killed peer and validator and replacing a peer that keeps dying, one location
//! cut off for 60 s while the others keep committing and caught up after, a scale up and down,
//! and `down` leaving nothing labelled with the blueprint.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_tests::cluster::{Teardown, args, describe, open, row, spawn_manager, status, wait_level};
use weft_tests::docker::{
    containers_labelled, docker, engine_answers, static_chaincode_binary, unique_chain_id,
};
use weft_tests::weft;

fn labelled(kind: &str, label: &str) -> Vec<String> {
    docker(&[kind, "ls", "-q", "--filter", &format!("label={label}")])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The blueprint: 4 validators (2 in sjc, 1 in lon, 1 in sng: cutting off sng leaves a
/// quorum of 3), a non-validating peer per location, the asset-transfer package, every policy.
fn write_blueprint(dir: &Path, name: &str) -> PathBuf {
    let binary = static_chaincode_binary("asset-transfer");
    let bytes = std::fs::read(binary).expect("read the static asset-transfer");
    let package = weft_proto::package::build("asset-transfer", "1.0", &bytes).expect("package");
    std::fs::write(dir.join("asset-transfer.tar.gz"), package).expect("write the package");
    let text = format!(
        "name: {name}
locations:
  - {{ name: sjc, type: docker, endpoint: \"unix:///var/run/docker.sock\", validators: 2 }}
  - {{ name: lon, type: docker, endpoint: \"unix:///var/run/docker.sock\" }}
  - {{ name: sng, type: docker, endpoint: \"unix:///var/run/docker.sock\" }}
cluster:
  validators.per.location: 1
  peers.per.location: 1
  pbft: {{ batch.size: 500, batch.timeout: 50ms, checkpoint.period: 10, request.timeout: 2s }}
  chaincode: [ {{ name: asset-transfer, package: ./asset-transfer.tar.gz }} ]
policies:
  - {{ type: restarter, attempts: 1 }}
  - {{ type: replacer }}
  - {{ type: autoscaler, metric: tx_per_second, target: 1000000, min: 1, max: 2 }}
"
    );
    let file = dir.join("blueprint.yaml");
    std::fs::write(&file, text).expect("write the blueprint");
    file
}

fn actions(state: &Path) -> String {
    std::fs::read_to_string(state.join("actions.log")).unwrap_or_default()
}

/// Waits until the management log holds a line containing `text`.
async fn wait_action(state: &Path, text: &str, within: Duration) {
    let started = Instant::now();
    while !actions(state).contains(text) {
        assert!(
            started.elapsed() < within,
            "no management action {text:?} within {within:?}; the log:\n{}",
            actions(state)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn container(blueprint: &str, node: &str) -> String {
    format!("weft-{blueprint}-{node}")
}

/// Submits CreateAsset `id` through the peer at `address` and waits for its commit.
async fn create_asset(network: &Path, address: &str, id: &str) -> weft_tests::CliOutput {
    let network = network.display().to_string();
    weft(&[
        "chaincode",
        "invoke",
        "--peer",
        address,
        "--network",
        &network,
        "--as",
        "alice",
        "asset-transfer",
        "CreateAsset",
        id,
        "red",
        "1",
        "alice",
        "10",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_location_cluster_comes_up_heals_survives_a_cut_scales_and_goes_down() {
    if !engine_answers(
        "a_three_location_cluster_comes_up_heals_survives_a_cut_scales_and_goes_down",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let name = unique_chain_id("bp");
    let _teardown = Teardown {
        blueprint: name.clone(),
    };
    let file = write_blueprint(tmp.path(), &name);
    let state = tmp.path().join("state");
    let network = state.join("network");
    let seed = (std::process::id() as u64 * 7_919) % 5_000;
    let cli = |subcommand: &[&str]| args(&file, &state, subcommand);

    // Up: three locations, each its own network, plus the links network.
    let up = weft(&cli(&["up", "--seed", &seed.to_string()])).await;
    let printed = up.expect_success("weft cluster up").to_string();
    assert!(printed.contains(&format!("{name} is up")), "{printed}");
    for node in ["sjc-validator0", "lon-peer0", "sng-validator0"] {
        assert!(
            printed.contains(node),
            "the endpoints list {node}:\n{printed}"
        );
    }
    let label = format!("weft.blueprint={name}");
    assert_eq!(
        containers_labelled(&label).len(),
        7,
        "4 validators, 3 peers"
    );
    let networks = labelled("network", &label);
    assert_eq!(networks.len(), 4, "three locations and the links network");
    assert_eq!(
        labelled("volume", &label).len(),
        14,
        "data and socket per node"
    );
    for location in ["sjc", "lon", "sng"] {
        let members = containers_labelled(&format!("weft.location={location}"))
            .into_iter()
            .filter(|id| containers_labelled(&label).contains(id))
            .count();
        assert!(members >= 2, "{location} has its containers");
        docker(&["network", "inspect", &format!("weft-{name}-{location}")]);
    }
    let rows = wait_level(&file, &state, Duration::from_secs(60), "after up").await;
    assert_eq!(rows.len(), 7);

    // A second up changes nothing: same containers, nothing created or replaced.
    let before = containers_labelled(&label);
    let again = weft(&cli(&["up"])).await;
    let printed = again.expect_success("a second weft cluster up").to_string();
    assert!(printed.contains("nothing changed"), "{printed}");
    let mut after = containers_labelled(&label);
    let mut sorted = before.clone();
    sorted.sort();
    after.sort();
    assert_eq!(sorted, after, "the same containers");

    // The demo, through peers of each location in turn.
    let demo = weft(&cli(&["demo"])).await;
    let printed = demo.expect_success("weft cluster demo").to_string();
    for through in [
        "through sjc-peer0",
        "through lon-peer0",
        "through sng-peer0",
    ] {
        assert!(printed.contains(through), "{printed}");
    }
    assert!(printed.contains("cluster demo passed"), "{printed}");

    // The management loop: a killed peer and a killed validator are started again and catch
    // up; a peer killed again right after its restart is replaced by a fresh container with
    // an empty volume, which catches up from the others.
    let mut manager = spawn_manager(&file, &state);
    let lon_ledger = format!("{}-data", container(&name, "lon-validator0"));
    let lon_created = docker(&["volume", "inspect", "-f", "{{.CreatedAt}}", &lon_ledger]);
    docker(&["kill", &container(&name, "lon-peer0")]);
    docker(&["kill", &container(&name, "lon-validator0")]);
    wait_action(
        &state,
        "restarter: lon lon-peer0 was stopped",
        Duration::from_secs(30),
    )
    .await;
    wait_action(
        &state,
        "restarter: lon lon-validator0 was stopped",
        Duration::from_secs(30),
    )
    .await;
    wait_level(&file, &state, Duration::from_secs(90), "after the restarts").await;
    assert_eq!(
        docker(&["volume", "inspect", "-f", "{{.CreatedAt}}", &lon_ledger]),
        lon_created,
        "a restart keeps the ledger"
    );
    assert!(
        !actions(&state).contains("replacer: lon"),
        "{}",
        actions(&state)
    );

    // One listing with both labels: a container removed meanwhile is simply not listed.
    let chaincode_of = |peer: &str| {
        docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=weft.network={name}"),
            "--filter",
            &format!("label=weft.peer={peer}"),
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    let before_restart = chaincode_of("sng-peer0");
    let volume = format!("{}-data", container(&name, "sng-peer0"));
    let created = docker(&["volume", "inspect", "-f", "{{.CreatedAt}}", &volume]);
    docker(&["kill", &container(&name, "sng-peer0")]);
    wait_action(
        &state,
        "restarter: sng sng-peer0 was stopped",
        Duration::from_secs(30),
    )
    .await;
    // Killed again before it recovered (the restarter's one attempt is spent), once its
    // chaincode container runs again (it holds the peer's socket volume, which the
    // replacement must free).
    let started = Instant::now();
    while chaincode_of("sng-peer0")
        .iter()
        .all(|id| before_restart.contains(id))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "sng-peer0 was not restarted with its chaincode"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old_chaincode = chaincode_of("sng-peer0");
    docker(&["kill", &container(&name, "sng-peer0")]);
    wait_action(&state, "replacer: sng sng-peer0", Duration::from_secs(60)).await;
    let recreated = docker(&["volume", "inspect", "-f", "{{.CreatedAt}}", &volume]);
    assert_ne!(created, recreated, "the replacement has a fresh volume");
    for id in &old_chaincode {
        assert!(
            !containers_labelled(&format!("weft.network={name}")).contains(id),
            "the replaced peer's old chaincode container is gone"
        );
    }
    let rows = wait_level(
        &file,
        &state,
        Duration::from_secs(90),
        "after the replacement",
    )
    .await;
    assert!(row(&rows, "sng-peer0").height > Some(1), "it caught up");

    // Cut sng off the others for 60 s: sjc and lon (3 of 4 validators) keep committing;
    // sng catches up once joined again.
    let rows = status(&file, &state).await;
    let sjc_peer = open(&file, &state)
        .endpoints()
        .into_iter()
        .find(|e| e.node == "sjc-peer0")
        .expect("sjc-peer0's endpoint")
        .grpc;
    let cut_at = row(&rows, "sng-validator0").height;
    for node in ["sng-validator0", "sng-peer0"] {
        docker(&[
            "network",
            "disconnect",
            &format!("weft-{name}-links"),
            &container(&name, node),
        ]);
    }
    let cut = Instant::now();
    let mut committed = 0;
    while cut.elapsed() < Duration::from_secs(60) {
        let id = format!("cut-{committed}");
        let output = create_asset(&network, &sjc_peer, &id).await;
        output.expect_success("a transaction while sng is cut off");
        committed += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(committed >= 10, "only {committed} commits in 60 s");
    let rows = status(&file, &state).await;
    assert_eq!(
        row(&rows, "sng-validator0").height,
        cut_at,
        "the cut validator commits nothing alone:\n{}",
        describe(&rows)
    );
    assert!(row(&rows, "sjc-validator0").height > cut_at);
    for node in ["sng-validator0", "sng-peer0"] {
        docker(&[
            "network",
            "connect",
            &format!("weft-{name}-links"),
            &container(&name, node),
        ]);
    }
    let rows = wait_level(&file, &state, Duration::from_secs(120), "after the cut").await;
    assert!(row(&rows, "sng-validator0").height > cut_at);
    manager.kill().await.expect("stop the manager");
    assert!(
        !actions(&state).contains("sng-validator0"),
        "the manager left the cut, running validator alone:\n{}",
        actions(&state)
    );

    // Scale sjc's peers up to 2, then back to 1.
    let scaled = weft(&cli(&["scale", "--location", "sjc", "--peers", "2"])).await;
    let printed = scaled.expect_success("scale up").to_string();
    assert!(printed.contains("sjc-peer1 created"), "{printed}");
    let rows = wait_level(&file, &state, Duration::from_secs(60), "after scaling up").await;
    assert_eq!(rows.len(), 8);
    // A query through the new peer starts its chaincode container, which scaling down removes
    // with it.
    let sjc_peer1 = open(&file, &state)
        .endpoints()
        .into_iter()
        .find(|e| e.node == "sjc-peer1")
        .expect("sjc-peer1's endpoint")
        .grpc;
    let network_arg = network.display().to_string();
    let query = weft(&[
        "chaincode",
        "query",
        "--peer",
        &sjc_peer1,
        "--network",
        &network_arg,
        "--as",
        "bob",
        "asset-transfer",
        "GetAllAssets",
    ])
    .await;
    query.expect_success("a query through sjc-peer1");
    assert_eq!(chaincode_of("sjc-peer1").len(), 1);
    let scaled = weft(&cli(&["scale", "--location", "sjc", "--peers", "1"])).await;
    let printed = scaled.expect_success("scale down").to_string();
    assert!(printed.contains("sjc-peer1 removed"), "{printed}");
    assert_eq!(chaincode_of("sjc-peer1"), Vec::<String>::new());
    assert_eq!(containers_labelled(&label).len(), 7);
    assert_eq!(labelled("volume", &label).len(), 14);
    let beyond = weft(&cli(&["scale", "--location", "sjc", "--peers", "3"])).await;
    assert!(!beyond.success(), "3 is past the autoscaler's max of 2");
    assert!(beyond.stderr.contains("max"), "{}", beyond.stderr);

    // Down: nothing labelled with the blueprint is left, nor a chaincode container of its
    // network, nor its state.
    let down = weft(&cli(&["down"])).await;
    down.expect_success("weft cluster down");
    assert_eq!(containers_labelled(&label), Vec::<String>::new());
    assert_eq!(labelled("network", &label), Vec::<String>::new());
    assert_eq!(labelled("volume", &label), Vec::<String>::new());
    assert_eq!(
        containers_labelled(&format!("weft.network={name}")),
        Vec::<String>::new()
    );
    assert!(!state.exists(), "the state directory is removed");
}
