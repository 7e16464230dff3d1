//! A peer that itself runs in a container and starts its chaincode through the engine's
//! endpoint (the Docker socket, mounted into the peer's container only). The peer runs as
//! uid 65534 from a FROM scratch image this test builds from the `weft` binary under test and
//! the shared libraries it links (the shipped image, `docker/build-images.sh`, holds the static
//! build instead). The chaincode container reaches the peer through a volume holding only the
//! peer's chaincode socket; no chaincode container mounts the Docker socket.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_tests::docker::{
    ContainerSweep, containers_labelled, docker, engine_answers, inspect, static_chaincode_package,
    unique_chain_id,
};
use weft_tests::{Network, args, http_get, weft_binary};

const TEST_LABEL: &str = "weft.test=docker_peer";

/// Removes the named containers, volumes and image when dropped.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
    image: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            let _ = Command::new("docker").args(args).output();
        };
        for container in &self.containers {
            run(&["rm", "-f", container]);
        }
        for volume in &self.volumes {
            run(&["volume", "rm", "-f", volume]);
        }
        if let Some(image) = &self.image {
            run(&["rmi", "-f", image]);
        }
    }
}

/// Builds a FROM scratch image of the `weft` binary under test with the libraries `ldd`
/// lists, a data directory owned by 65534, and user 65534.
fn build_peer_image(tag: &str) {
    let binary = weft_binary();
    let context = tempfile::tempdir().expect("tempdir");
    let root = context.path().join("root");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::copy(&binary, root.join("weft")).expect("copy weft");
    let ldd = Command::new("ldd").arg(&binary).output().expect("run ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libx.so => /lib/x86_64-linux-gnu/libx.so (0x..)" or "/lib64/ld-linux-x86-64.so.2 (0x..)"
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        let Some(path) = path else { continue };
        let target = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("a library has a directory"))
            .expect("library directory");
        std::fs::copy(path, &target).unwrap_or_else(|e| panic!("copy {path}: {e}"));
    }
    std::fs::create_dir_all(context.path().join("data").join("data").join("run"))
        .expect("data directory");
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\nCOPY --chown=65534:65534 data/ /var/lib/weft/\nUSER 65534:65534\nENTRYPOINT [\"/weft\"]\n",
    )
    .expect("Dockerfile");
    let built = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "--label", TEST_LABEL, "-t", tag])
        .arg(context.path())
        .output()
        .expect("docker build");
    assert!(
        built.status.success(),
        "building the test peer image: {}",
        String::from_utf8_lossy(&built.stderr)
    );
}

/// Makes the network directory readable by the peer's unprivileged user.
fn readable_by_all(dir: &Path) {
    let status = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()
        .expect("chmod");
    assert!(status.success());
}

fn mounts(container: &Value) -> Vec<Value> {
    container["Mounts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_in_a_container_runs_chaincode_through_the_engine_endpoint() {
    if !engine_answers("a_peer_in_a_container_runs_chaincode_through_the_engine_endpoint") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let chain_id = unique_chain_id("peerbox");
    let _sweep = ContainerSweep {
        chain_id: chain_id.clone(),
    };
    let network = Network::generate_named(tmp.path(), "network", &chain_id).await;
    readable_by_all(&network.dir);

    let mut cleanup = Cleanup::default();
    let image = format!("weft-test-peer:{chain_id}");
    build_peer_image(&image);
    cleanup.image = Some(image.clone());
    let data = format!("{chain_id}-data");
    let run = format!("{chain_id}-run");
    let peer = format!("{chain_id}-peer");
    cleanup.containers.push(peer.clone());
    cleanup.volumes.extend([data.clone(), run.clone()]);

    let socket_group = docker_socket_group();
    let network_dir = network.dir.display().to_string();
    let grpc = format!("127.0.0.1:{}:7051", network.grpc_port);
    let operations = format!("127.0.0.1:{}:9443", network.operations_port);
    let socket_source = format!("WEFT_CHAINCODE_DOCKER_SOCKET_SOURCE={run}");
    docker(&[
        "run",
        "-d",
        "--name",
        &peer,
        "--label",
        TEST_LABEL,
        "--group-add",
        &socket_group,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &format!("{network_dir}:/etc/weft/network:ro"),
        "-v",
        &format!("{data}:/var/lib/weft/data"),
        "-v",
        &format!("{run}:/var/lib/weft/data/run"),
        "-p",
        &grpc,
        "-p",
        &operations,
        "-e",
        "WEFT_CHAINCODE_RUNTIME=docker",
        "-e",
        &socket_source,
        "-e",
        "WEFT_CHAINCODE_DOCKER_HOST=unix:///var/run/docker.sock",
        "-e",
        "WEFT_NODE_DATA_DIR=/var/lib/weft/data",
        "-e",
        "WEFT_NODE_LISTEN=0.0.0.0:7051",
        "-e",
        "WEFT_NODE_OPERATIONS_LISTEN=0.0.0.0:9443",
        &image,
        "node",
        "start",
        "--config",
        "/etc/weft/network/nodes/validator0.toml",
    ]);
    wait_ready(&network, &peer).await;

    let admin = network.client("admin").await;
    admin
        .deploy(static_chaincode_package("probe", "1.0"), &[])
        .await
        .unwrap_or_else(|e| panic!("deploy through the contained peer: {e}\n{}", logs(&peer)));
    let alice = network.client("alice").await;
    alice
        .invoke("probe", "put", &args(&["k", "v"]))
        .await
        .unwrap_or_else(|e| panic!("put: {e}\n{}", logs(&peer)));
    assert_eq!(
        alice
            .query("probe", "get", &args(&["k"]))
            .await
            .expect("get"),
        b"v"
    );

    // The peer holds the engine's socket; its chaincode holds only the socket volume.
    let peer_container = inspect(&peer);
    assert!(
        mounts(&peer_container)
            .iter()
            .any(|m| m["Destination"] == "/var/run/docker.sock"),
        "{:#?}",
        mounts(&peer_container)
    );
    assert_eq!(text(&peer_container, "/Config/User"), "65534:65534");
    let chaincode = containers_labelled(&format!("weft.network={chain_id}"));
    assert_eq!(chaincode.len(), 1, "{chaincode:?}");
    let chaincode = inspect(&chaincode[0]);
    let chaincode_mounts = mounts(&chaincode);
    assert_eq!(chaincode_mounts.len(), 1, "{chaincode_mounts:#?}");
    assert_eq!(chaincode_mounts[0]["Type"], "volume");
    assert_eq!(chaincode_mounts[0]["Name"], Value::from(run.clone()));
    assert_eq!(chaincode_mounts[0]["RW"], false);
    assert!(
        !chaincode_mounts
            .iter()
            .any(|m| m.to_string().contains("docker.sock")),
        "{chaincode_mounts:#?}"
    );
    assert_eq!(chaincode["HostConfig"]["NetworkMode"], "none");

    // Stopping the peer's container stops the peer, which removes its chaincode containers.
    docker(&["stop", "-t", "30", &peer]);
    let stopped = inspect(&peer);
    assert_eq!(
        stopped["State"]["ExitCode"],
        0,
        "the peer exits cleanly on SIGTERM:\n{}",
        logs(&peer)
    );
    assert_eq!(
        containers_labelled(&format!("weft.network={chain_id}")),
        Vec::<String>::new(),
        "{}",
        logs(&peer)
    );
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} is not a string in {value:#}"))
}

/// The group owning the Docker socket: the peer's user joins it to use the engine.
fn docker_socket_group() -> String {
    let output = Command::new("stat")
        .args(["-c", "%g", "/var/run/docker.sock"])
        .output()
        .expect("stat the Docker socket");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn logs(container: &str) -> String {
    let output = Command::new("docker")
        .args(["logs", "--tail", "80", container])
        .output();
    match output {
        Ok(o) => format!(
            "--- {container} log\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("(no log: {e})"),
    }
}

/// Waits until the contained peer's /readyz answers through the published port.
async fn wait_ready(network: &Network, container: &str) {
    let operations = format!("127.0.0.1:{}", network.operations_port);
    let start = Instant::now();
    loop {
        if matches!(http_get(&operations, "/readyz").await, Ok((200, _))) {
            return;
        }
        let state = inspect(container);
        assert!(
            state["State"]["Running"] == true,
            "the peer container stopped:\n{}",
            logs(container)
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the contained peer was not ready within 60 s:\n{}",
            logs(container)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
