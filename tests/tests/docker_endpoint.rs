//! The Docker engine reached over tcp with TLS (client certificates), as a peer on another
//! machine than its engine would reach it. The engine here listens only on its unix socket, so
//! the test puts a TLS front in between on loopback: it requires a client certificate from its
//! own CA, then relays bytes to the engine's socket. A node with `docker_host = tcp://...` and
//! `docker_tls_dir` runs chaincode through it; without the TLS directory it cannot start. A
//! `weft cluster` docker location with such an endpoint is brought up and down through it.

use std::time::Duration;

use weft_tests::docker::{
    ContainerSweep, containers_labelled, engine_answers, engine_tls_certificates, engine_tls_front,
    static_chaincode_package, unique_chain_id,
};
use weft_tests::{Network, Node, args};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_chaincode_through_an_engine_reached_over_tcp_with_tls() {
    if !engine_answers("a_node_runs_chaincode_through_an_engine_reached_over_tcp_with_tls") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let tls_dir = tmp.path().join("docker-tls");
    std::fs::create_dir_all(&tls_dir).expect("tls dir");
    let (certificate, key, ca) = engine_tls_certificates(&tls_dir);
    let port = engine_tls_front(certificate, key, ca).await;
    let host = format!("tcp://127.0.0.1:{port}");
    let tls_text = tls_dir.display().to_string();

    let chain_id = unique_chain_id("tls");
    let _sweep = ContainerSweep {
        chain_id: chain_id.clone(),
    };
    let network = Network::generate_named(tmp.path(), "network", &chain_id).await;

    // Without the client certificate the engine does not answer, and the node says so.
    let refused = network
        .start_refused(&[
            ("WEFT_CHAINCODE_RUNTIME", "docker"),
            ("WEFT_CHAINCODE_DOCKER_HOST", &host),
        ])
        .await;
    assert!(refused.stderr.contains(&host), "{}", refused.stderr);

    let node = Node::start(
        &network,
        &[
            ("WEFT_CHAINCODE_RUNTIME", "docker"),
            ("WEFT_CHAINCODE_DOCKER_HOST", &host),
            ("WEFT_CHAINCODE_DOCKER_TLS_DIR", &tls_text),
        ],
    )
    .await;
    let admin = network.client("admin").await;
    admin
        .deploy(static_chaincode_package("probe", "1.0"), &[])
        .await
        .unwrap_or_else(|e| panic!("deploy over the TLS endpoint: {e}\n{}", node.log()));
    let alice = network.client("alice").await;
    alice
        .invoke("probe", "put", &args(&["k", "v"]))
        .await
        .unwrap_or_else(|e| panic!("put: {e}\n{}", node.log()));
    assert_eq!(
        containers_labelled(&format!("weft.network={chain_id}")).len(),
        1
    );
    // gc over the same endpoint.
    let gc = weft_tests::weft(&[
        "chaincode",
        "gc",
        "--docker-host",
        &host,
        "--docker-tls-dir",
        &tls_text,
        "--network",
        &chain_id,
    ])
    .await;
    let printed = gc.expect_success("weft chaincode gc over tcp with TLS");
    assert!(
        printed.contains("removed 1 chaincode container"),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_location_is_applied_through_an_engine_reached_over_tcp_with_tls() {
    if !engine_answers("a_cluster_location_is_applied_through_an_engine_reached_over_tcp_with_tls")
    {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let tls_dir = tmp.path().join("docker-tls");
    std::fs::create_dir_all(&tls_dir).expect("tls dir");
    let (certificate, key, ca) = engine_tls_certificates(&tls_dir);
    let port = engine_tls_front(certificate, key, ca).await;
    let name = unique_chain_id("tlsbp");
    let gid = std::fs::metadata("/var/run/docker.sock")
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
        .expect("the engine's socket");
    // One docker location whose engine is this TLS front, with or without the client's
    // certificates.
    let blueprint = |file: &str, tls: Option<&std::path::Path>| {
        let tls = tls
            .map(|dir| {
                let dir = dir.display();
                format!(", tls: {{ ca: {dir}/ca.pem, cert: {dir}/cert.pem, key: {dir}/key.pem }}")
            })
            .unwrap_or_default();
        let path = tmp.path().join(file);
        std::fs::write(
            &path,
            format!(
                "name: {name}\nlocations:\n  - {{ name: far, type: docker, endpoint: \"tcp://127.0.0.1:{port}\", docker_group: {gid}{tls} }}\ncluster:\n  validators.per.location: 4\n"
            ),
        )
        .expect("write the blueprint");
        path
    };
    let file = blueprint("blueprint.yaml", Some(&tls_dir));
    let state = tmp.path().join("state");
    // Without its client certificates the engine does not answer, and up says where.
    let plain = blueprint("plain.yaml", None);
    let refused = weft_tests::weft(&weft_tests::cluster::args(
        &plain,
        &tmp.path().join("plain-state"),
        &["up"],
    ))
    .await;
    assert!(!refused.success());
    assert!(
        refused.stderr.contains(&format!("tcp://127.0.0.1:{port}")),
        "{}",
        refused.stderr
    );
    let cli = |subcommand: &[&str]| weft_tests::cluster::args(&file, &state, subcommand);
    let label = format!("weft.blueprint={name}");
    let _teardown = weft_tests::cluster::Teardown {
        blueprint: name.clone(),
    };
    let up = weft_tests::weft(&cli(&["up", "--seed", &(port % 4_000).to_string()])).await;
    let printed = up
        .expect_success("weft cluster up over tcp with TLS")
        .to_string();
    assert!(printed.contains(&format!("{name} is up")), "{printed}");
    assert_eq!(containers_labelled(&label).len(), 4);
    weft_tests::cluster::wait_level(&file, &state, Duration::from_secs(60), "after up").await;
    let again = weft_tests::weft(&cli(&["up"])).await;
    assert!(
        again
            .expect_success("a second up")
            .contains("nothing changed"),
        "{}",
        again.stdout
    );
    let down = weft_tests::weft(&cli(&["down"])).await;
    down.expect_success("weft cluster down over tcp with TLS");
    assert_eq!(containers_labelled(&label), Vec::<String>::new());
}
