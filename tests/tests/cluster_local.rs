//! `weft cluster` with a local location: the nodes are `weft node start` processes on this
//! machine. Up, a second up that changes nothing, the demo, a node killed with SIGKILL and
//! started again by the management loop, a scale up and down, and down leaving no process and
//! no state.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_tests::cluster::{args, spawn_manager, wait_level};
use weft_tests::{chaincode_binary, weft};

/// Stops every node process of the state directory when dropped (a failing test leaves none).
struct StopNodes {
    state: PathBuf,
}

impl Drop for StopNodes {
    fn drop(&mut self) {
        let root = self.state.join("local");
        let Ok(locations) = std::fs::read_dir(&root) else {
            return;
        };
        for location in locations.filter_map(Result::ok) {
            let Ok(nodes) = std::fs::read_dir(location.path()) else {
                continue;
            };
            for node in nodes.filter_map(Result::ok) {
                if let Ok(pid) = std::fs::read_to_string(node.path().join("node.pid")) {
                    kill(pid.trim());
                }
            }
        }
    }
}

fn write_blueprint(dir: &Path, base_port: u16) -> PathBuf {
    let bytes = std::fs::read(chaincode_binary("asset-transfer")).expect("read asset-transfer");
    let package = weft_proto::package::build("asset-transfer", "1.0", &bytes).expect("package");
    std::fs::write(dir.join("asset-transfer.tar.gz"), package).expect("write the package");
    let text = format!(
        "name: local-test
locations:
  - {{ name: dev, type: local, base_port: {base_port} }}
cluster:
  validators.per.location: 4
  peers.per.location: 1
  pbft: {{ batch.size: 500, batch.timeout: 50ms, checkpoint.period: 10, request.timeout: 2s }}
  chaincode: [ {{ name: asset-transfer, package: ./asset-transfer.tar.gz }} ]
policies:
  - {{ type: restarter, attempts: 3 }}
  - {{ type: autoscaler, metric: tx_per_second, target: 1, min: 1, max: 2 }}
"
    );
    let file = dir.join("local.yaml");
    std::fs::write(&file, text).expect("write the blueprint");
    file
}

fn pid_of(state: &Path, node: &str) -> String {
    std::fs::read_to_string(state.join("local").join("dev").join(node).join("node.pid"))
        .expect("a pid file")
        .trim()
        .to_string()
}

/// SIGKILL to process `pid`.
fn kill(pid: &str) {
    let pid = pid
        .parse()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("a pid");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_cluster_comes_up_heals_scales_and_goes_down() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A free block of 3 ports per node for up to 6 nodes, below the ephemeral range.
    let base_port = weft_tests::free_ports(6 * 3);
    let file = write_blueprint(tmp.path(), base_port);
    let state = tmp.path().join("state");
    let _stop = StopNodes {
        state: state.clone(),
    };
    let cli = |subcommand: &[&str]| args(&file, &state, subcommand);
    let within = Duration::from_secs(60);

    let up = weft(&cli(&["up"])).await;
    let printed = up.expect_success("weft cluster up").to_string();
    assert!(printed.contains("local-test is up"), "{printed}");
    assert!(
        printed.contains(&format!("127.0.0.1:{base_port}")),
        "the first node at the base port:\n{printed}"
    );
    let rows = wait_level(&file, &state, within, "after up").await;
    assert_eq!(rows.len(), 5);

    let again = weft(&cli(&["up"])).await;
    let printed = again.expect_success("a second up").to_string();
    assert!(printed.contains("nothing changed"), "{printed}");

    let demo = weft(&cli(&["demo"])).await;
    let printed = demo.expect_success("weft cluster demo").to_string();
    assert!(printed.contains("cluster demo passed"), "{printed}");

    // A validator killed with SIGKILL is started again by the manager and catches up.
    let mut manager = spawn_manager(&file, &state);
    let killed = pid_of(&state, "dev-validator2");
    kill(&killed);
    let started = Instant::now();
    while pid_of(&state, "dev-validator2") == killed {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the manager did not restart dev-validator2"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_level(&file, &state, within, "after the restart").await;

    // The autoscaler: transactions through dev-peer0 well above its target of 1 tx/s per
    // peer add a second peer; when they stop, it is removed again.
    let cluster = weft_tests::cluster::open(&file, &state);
    let peer = cluster
        .endpoints()
        .into_iter()
        .find(|e| e.node == "dev-peer0")
        .expect("dev-peer0")
        .grpc;
    let genesis = cluster.network.genesis().expect("genesis");
    let alice =
        weft_proto::Signer::load(&cluster.network.identity("alice", weft_proto::Role::Client))
            .expect("alice");
    let client = weft_proto::WeftClient::connect(&peer, alice, &genesis.chain_id)
        .await
        .expect("connect to dev-peer0");
    let log_has = |text: &str| {
        std::fs::read_to_string(state.join("actions.log"))
            .unwrap_or_default()
            .contains(text)
    };
    let started = Instant::now();
    let mut sent = 0;
    while !log_has("autoscaler: dev 1 peers -> 2") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no scale-up after {sent} transactions in 60 s"
        );
        let id = format!("load-{sent}");
        client
            .invoke(
                "asset-transfer",
                "CreateAsset",
                &weft_tests::args(&[&id, "red", "1", "alice", "1"]),
            )
            .await
            .expect("a transaction through dev-peer0");
        sent += 1;
    }
    let peer1 = state
        .join("local")
        .join("dev")
        .join("dev-peer1")
        .join("node.pid");
    let started = Instant::now();
    while !peer1.exists() {
        assert!(
            started.elapsed() < within,
            "the autoscaler did not start dev-peer1"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        wait_level(&file, &state, within, "after the autoscaler added a peer")
            .await
            .len(),
        6
    );
    let started = Instant::now();
    while !log_has("autoscaler: dev 2 peers -> 1") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no scale-down within 60 s of idleness"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let started = Instant::now();
    while peer1.exists() {
        assert!(
            started.elapsed() < within,
            "the autoscaler did not remove dev-peer1"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        wait_level(&file, &state, within, "after the autoscaler removed it")
            .await
            .len(),
        5
    );
    manager.kill().await.expect("stop the manager");
    let log = std::fs::read_to_string(state.join("actions.log")).expect("the actions log");
    assert!(
        log.contains("restarter: dev dev-validator2 was stopped"),
        "{log}"
    );
    let shown = weft(&cli(&["status"])).await;
    let shown = shown.expect_success("weft cluster status").to_string();
    assert!(shown.contains("restarter: dev dev-validator2"), "{shown}");

    // Scale the peers to 2 and back to 1.
    let scaled = weft(&cli(&["scale", "--location", "dev", "--peers", "2"])).await;
    let printed = scaled.expect_success("scale up").to_string();
    assert!(printed.contains("dev-peer1 created"), "{printed}");
    assert_eq!(
        wait_level(&file, &state, within, "after scaling up")
            .await
            .len(),
        6
    );
    let peer1 = pid_of(&state, "dev-peer1");
    let scaled = weft(&cli(&["scale", "--location", "dev", "--peers", "1"])).await;
    let printed = scaled.expect_success("scale down").to_string();
    assert!(printed.contains("dev-peer1 removed"), "{printed}");
    assert!(!alive(&peer1), "the scaled-away peer stopped");
    assert!(!state.join("local").join("dev").join("dev-peer1").exists());

    // Down: no node process left, no state.
    let pids: Vec<String> = [
        "dev-validator0",
        "dev-validator1",
        "dev-validator2",
        "dev-validator3",
        "dev-peer0",
    ]
    .iter()
    .map(|n| pid_of(&state, n))
    .collect();
    let down = weft(&cli(&["down"])).await;
    down.expect_success("weft cluster down");
    for pid in pids {
        assert!(!alive(&pid), "process {pid} still runs after down");
    }
    assert!(!state.exists());
}
