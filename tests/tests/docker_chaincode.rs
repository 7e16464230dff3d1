//! The Docker chaincode runtime against the machine's engine (CI requires one): one validator
//! (`weft node start` as a process) with `chaincode.runtime = docker` runs the statically
//! linked probe chaincode in a FROM scratch container. Every test checks what `docker inspect`
//! and `docker ps` show, and what a client sees. Targets are only this machine's own
//! containers, its Docker bridge and loopback.

use std::net::TcpListener;

use serde_json::Value;
use weft_proto::ClientError;
use weft_proto::pb::TxStatus;
use weft_tests::docker::{
    ContainerSweep, containers_labelled, docker, engine_answers, images_labelled, inspect,
    static_chaincode_package, unique_chain_id,
};
use weft_tests::{Network, Node, args, chaincode_package, weft};

/// Held by the tests that run `weft chaincode gc`: gc removes every unused chaincode image on
/// the engine, so one test's gc would otherwise remove another's image between its build and
/// its use (test binaries run one at a time; the tests of one binary side by side). A peer
/// whose image goes that way builds it again; a test's own `docker build` would not.
static GC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MEMORY_MIB: &str = "64";
const PIDS_LIMIT: &str = "64";

/// One validator on a network of its own, running chaincode in Docker.
struct Fixture {
    network: Network,
    node: Node,
    _sweep: ContainerSweep,
    _tmp: tempfile::TempDir,
}

async fn start(test: &str, extra_env: &[(&str, &str)]) -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let chain_id = unique_chain_id(test);
    let sweep = ContainerSweep {
        chain_id: chain_id.clone(),
    };
    let network = Network::generate_named(tmp.path(), "network", &chain_id).await;
    let mut env = vec![
        ("WEFT_CHAINCODE_RUNTIME", "docker"),
        ("WEFT_CHAINCODE_MEMORY_MIB", MEMORY_MIB),
        ("WEFT_CHAINCODE_PIDS_LIMIT", PIDS_LIMIT),
        ("WEFT_CHAINCODE_EXECUTE_TIMEOUT", "3s"),
    ];
    for (key, value) in extra_env {
        env.retain(|(k, _)| k != key);
        env.push((key, value));
    }
    let node = Node::start(&network, &env).await;
    Fixture {
        network,
        node,
        _sweep: sweep,
        _tmp: tmp,
    }
}

impl Fixture {
    async fn deploy_probe(&self, version: &str) {
        self.network
            .client("admin")
            .await
            .deploy(static_chaincode_package("probe", version), &[])
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "deploy probe {version}: {e}\n--- node log\n{}",
                    self.node.log()
                )
            });
    }

    /// This network's chaincode containers.
    fn containers(&self) -> Vec<String> {
        containers_labelled(&format!("weft.network={}", self.network.chain_id))
    }

    /// The one chaincode container of this network.
    fn container(&self) -> Value {
        let containers = self.containers();
        assert_eq!(
            containers.len(),
            1,
            "one chaincode container: {containers:?}\n--- node log\n{}",
            self.node.log()
        );
        inspect(&containers[0])
    }

    /// A probe transaction that must commit as failed with `status`.
    async fn expect_failure(&self, function: &str, arguments: &[&str], status: TxStatus) -> String {
        let alice = self.network.client("alice").await;
        match alice.invoke("probe", function, &args(arguments)).await {
            Err(ClientError::TxFailed {
                status: got,
                message,
                ..
            }) => {
                assert_eq!(got, status, "{function}: {message}");
                message
            }
            other => panic!("probe {function} should commit as {status:?}, got {other:?}"),
        }
    }

    /// A probe write commits and reads back: the chaincode serves.
    async fn probe_serves(&self, key: &str) {
        let alice = self.network.client("alice").await;
        let committed = alice
            .invoke("probe", "put", &args(&[key, "value"]))
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}\n--- node log\n{}", self.node.log()));
        assert_eq!(committed.payload, b"value");
        let read = alice
            .query("probe", "get", &args(&[key]))
            .await
            .expect("get");
        assert_eq!(read, b"value");
    }

    /// A query of the probe that must fail; returns the error text.
    async fn query_fails(&self, function: &str, arguments: &[&str]) -> String {
        let alice = self.network.client("alice").await;
        match alice.query("probe", function, &args(arguments)).await {
            Ok(payload) => panic!(
                "probe {function} {arguments:?} should fail inside its container, got {:?}",
                String::from_utf8_lossy(&payload)
            ),
            Err(e) => e.to_string(),
        }
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} is not a string in {value:#}"))
}

/// A bridge network of this test's own, removed when dropped: its gateway is an address of
/// this machine that any container with a network reaches.
struct Bridge {
    name: String,
}

impl Bridge {
    fn create(name: &str) -> Bridge {
        docker(&[
            "network",
            "create",
            "--label",
            "weft.test=docker_chaincode",
            name,
        ]);
        Bridge {
            name: name.to_string(),
        }
    }

    fn gateway(&self) -> String {
        let network = inspect(&self.name);
        text(&network, "/IPAM/Config/0/Gateway").to_string()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaincode_containers_are_isolated_labelled_and_cannot_reach_out() {
    if !engine_answers("chaincode_containers_are_isolated_labelled_and_cannot_reach_out") {
        return;
    }
    let f = start("isolated", &[]).await;
    f.deploy_probe("1.0").await;
    f.probe_serves("first").await;

    let container = f.container();
    // Labels.
    let labels = &container["Config"]["Labels"];
    assert_eq!(labels["weft.chaincode"], "probe");
    assert_eq!(labels["weft.version"], "1.0");
    assert_eq!(labels["weft.peer"], "validator0");
    assert_eq!(
        labels["weft.network"],
        Value::from(f.network.chain_id.clone())
    );
    // Isolation.
    let host = &container["HostConfig"];
    assert_eq!(host["NetworkMode"], "none", "no network at all");
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert!(
        host["CapAdd"].is_null() || host["CapAdd"] == serde_json::json!([]),
        "{:#}",
        host["CapAdd"]
    );
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["no-new-privileges"])
    );
    assert_eq!(host["Privileged"], false);
    let limit: u64 = MEMORY_MIB.parse::<u64>().expect("MiB") * 1024 * 1024;
    assert_eq!(host["Memory"], limit);
    assert_eq!(host["MemorySwap"], limit, "no swap beyond the memory limit");
    assert_eq!(host["PidsLimit"], PIDS_LIMIT.parse::<u64>().expect("pids"));
    assert_eq!(
        host["Ulimits"],
        serde_json::json!([{"Name": "nofile", "Soft": 1024, "Hard": 1024}])
    );
    assert_eq!(
        host["LogConfig"]["Config"]["max-size"], "10m",
        "bounded logs on disk"
    );
    assert_eq!(text(&container, "/Config/User"), "65534:65534");
    assert_ne!(text(&container, "/Config/User"), "0");
    // The only mount is the peer's socket directory, read-only; never the Docker socket.
    let mounts = container["Mounts"].as_array().expect("mounts");
    assert_eq!(mounts.len(), 1, "{mounts:#?}");
    assert_eq!(mounts[0]["Destination"], "/run/weft");
    assert_eq!(mounts[0]["RW"], false);
    let source = text(&mounts[0], "/Source");
    assert!(source.ends_with("/run"), "{source}");
    assert!(!source.contains("docker.sock"));
    // No address on any network: nothing to connect to it, nothing for it to route through.
    let networks = container["NetworkSettings"]["Networks"]
        .as_object()
        .expect("networks");
    for (name, settings) in networks {
        assert_eq!(name, "none", "{networks:#?}");
        assert_eq!(settings["IPAddress"], "", "{networks:#?}");
    }
    let env: Vec<&str> = container["Config"]["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        env.contains(&"WEFT_PEER_ADDRESS=unix:/run/weft/chaincode.sock"),
        "{env:?}"
    );

    // A port of this machine that containers on a network reach: the host itself connects to
    // it through the bridge gateway (the control), the chaincode cannot.
    let listener = TcpListener::bind("0.0.0.0:0").expect("listen on every address");
    let port = listener.local_addr().expect("address").port();
    let bridge = Bridge::create(&format!("{}-bridge", f.network.chain_id));
    let gateway = bridge.gateway();
    let target = format!("{gateway}:{port}");
    std::net::TcpStream::connect(&target)
        .unwrap_or_else(|e| panic!("the control: the host reaches {target}: {e}"));
    let refused = f.query_fails("connect", &[&target]).await;
    assert!(refused.contains(&format!("connect {target}")), "{refused}");
    // Another chaincode container that listens, on a network: the probe image served as a
    // service on the test's bridge. The host reaches it (the control); the chaincode cannot.
    let image = text(&container, "/Config/Image").to_string();
    let other = format!("{}-other", f.network.chain_id);
    docker(&[
        "run",
        "-d",
        "--name",
        &other,
        "--label",
        &format!("weft.network={}", f.network.chain_id),
        "--network",
        &bridge.name,
        "-e",
        "WEFT_CHAINCODE_LISTEN=0.0.0.0:9999",
        "-e",
        "WEFT_CHAINCODE_NAME=probe",
        "-e",
        "WEFT_CHAINCODE_VERSION=1.0",
        &image,
    ]);
    let other_ip = text(
        &inspect(&other),
        &format!("/NetworkSettings/Networks/{}/IPAddress", bridge.name),
    )
    .to_string();
    let other_target = format!("{other_ip}:9999");
    let mut reached = false;
    for _ in 0..50 {
        if std::net::TcpStream::connect(&other_target).is_ok() {
            reached = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        reached,
        "the control: the host reaches the other container at {other_target}"
    );
    let refused = f.query_fails("connect", &[&other_target]).await;
    assert!(
        refused.contains(&format!("connect {other_target}")),
        "{refused}"
    );
    docker(&["rm", "-f", &other]);
    // Nor loopback (its own, empty), nor the peer's gRPC port on this machine's loopback.
    let peer = f.network.address();
    let refused = f.query_fails("connect", &[&peer]).await;
    assert!(refused.contains(&format!("connect {peer}")), "{refused}");
    // The root filesystem is read-only.
    let refused = f.query_fails("write", &["/escape"]).await;
    assert!(refused.contains("Read-only file system"), "{refused}");
    let refused = f.query_fails("write", &["/run/weft/escape"]).await;
    assert!(refused.contains("write /run/weft/escape"), "{refused}");
    // And through all that the chaincode kept serving.
    f.probe_serves("after").await;
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_chaincode_hits_the_timeout_and_the_next_transaction_runs_in_a_new_container() {
    if !engine_answers("a_looping_chaincode_hits_the_timeout") {
        return;
    }
    let f = start("loop", &[]).await;
    f.deploy_probe("1.0").await;
    f.probe_serves("before").await;
    let before = f.containers();
    let message = f
        .expect_failure("spin", &[], TxStatus::ExecutionTimeout)
        .await;
    assert!(message.contains("did not finish"), "{message}");
    f.probe_serves("after").await;
    let after = f.containers();
    assert_eq!(
        after.len(),
        1,
        "the looping container was removed: {after:?}"
    );
    assert_ne!(before, after, "a new container serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaincode_past_its_memory_limit_is_killed_and_restarted() {
    if !engine_answers("a_chaincode_past_its_memory_limit_is_killed_and_restarted") {
        return;
    }
    let f = start("memory", &[]).await;
    f.deploy_probe("1.0").await;
    // Within the limit first: the allocation itself works.
    let alice = f.network.client("alice").await;
    alice
        .invoke("probe", "alloc", &args(&["8"]))
        .await
        .expect("8 MiB fit in 64");
    let message = f
        .expect_failure("alloc", &["512"], TxStatus::ChaincodeCrashed)
        .await;
    assert!(message.contains("chaincode probe"), "{message}");
    // The engine killed it for its memory, and the peer's log says so.
    let log = f.node.log();
    assert!(
        log.contains("out of memory (limit 64 MiB)"),
        "the peer reports the kill:\n{log}"
    );
    f.probe_serves("after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaincode_that_exits_mid_transaction_fails_it_and_the_next_one_succeeds() {
    if !engine_answers("a_chaincode_that_exits_mid_transaction") {
        return;
    }
    let f = start("exit", &[]).await;
    f.deploy_probe("1.0").await;
    let first = f.containers();
    let message = f
        .expect_failure("crash", &[], TxStatus::ChaincodeCrashed)
        .await;
    assert!(message.contains("chaincode probe"), "{message}");
    f.probe_serves("after").await;
    let second = f.containers();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second, "a new container serves");
    // The container's own output reached the peer's log, tagged with the chaincode.
    let log = f.node.log();
    assert!(
        log.lines()
            .any(|l| l.contains("registered with the peer") && l.contains("probe:1.0")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_replaces_the_container_and_shutdown_then_gc_leave_nothing_behind() {
    if !engine_answers("an_upgrade_replaces_the_container") {
        return;
    }
    let _gc = GC.lock().await;
    let mut f = start("upgrade", &[]).await;
    // Versions of this test's own, so that its images are no other test's (tests run side
    // by side, and one whose container uses an image keeps it from gc).
    let suffix = f
        .network
        .chain_id
        .rsplit('-')
        .next()
        .expect("suffix")
        .to_string();
    let (first, second) = (format!("1.0-{suffix}"), format!("2.0-{suffix}"));
    let image_of = |version: &str| images_labelled(&format!("weft.version={version}"));
    f.deploy_probe(&first).await;
    f.probe_serves("v1").await;
    let v1 = f.container();
    assert_eq!(v1["Config"]["Labels"]["weft.version"], first.as_str());
    assert_eq!(image_of(&first).len(), 1, "one image per package");

    f.deploy_probe(&second).await;
    f.probe_serves("v2").await;
    let v2 = f.container();
    assert_eq!(v2["Config"]["Labels"]["weft.version"], second.as_str());
    assert_ne!(v1["Id"], v2["Id"]);
    assert_eq!(image_of(&second).len(), 1, "one image per package");

    let status = f.node.stop();
    assert!(status.success(), "the node stops cleanly: {status}");
    assert_eq!(
        f.containers(),
        Vec::<String>::new(),
        "shutdown removes containers"
    );

    let gc = weft(&["chaincode", "gc", "--network", &f.network.chain_id]).await;
    let printed = gc.expect_success("weft chaincode gc");
    assert!(printed.contains("chaincode image(s)"), "{printed}");
    for version in [&first, &second] {
        assert_eq!(
            image_of(version),
            Vec::<String>::new(),
            "no container uses the probe {version} image any more: gc removed it"
        );
    }
    assert_eq!(f.containers(), Vec::<String>::new());
}

/// A test's container and images (top first), removed when dropped, whatever the test did.
struct TestImages {
    container: String,
    images: Vec<String>,
}

impl Drop for TestImages {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
        for image in &self.images {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", image])
                .output();
        }
    }
}

/// `docker build` (classic builder) of a Dockerfile with one file, labelled.
fn build_image(dir: &std::path::Path, dockerfile: &str, file: &str, label: &str, tag: &str) {
    std::fs::create_dir_all(dir).expect("context dir");
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("Dockerfile");
    std::fs::write(dir.join(file), tag).expect("file");
    let output = std::process::Command::new("docker")
        .args(["build", "-q", "--label", label, "-t", tag])
        .arg(dir)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    assert!(
        output.status.success(),
        "docker build {tag}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The engine here (Debian's, API 1.41) keeps images in its graph driver, where an image
/// with a child cannot be removed (409); that refusal is what gc met in CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_an_unused_image_that_another_image_in_use_is_built_on() {
    if !engine_answers("gc_keeps_an_unused_image_that_another_image_in_use_is_built_on") {
        return;
    }
    let _gc = GC.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let unique = unique_chain_id("gc-parent");
    let label = format!("weft.chaincode={unique}");
    let (parent, child, container) = (
        format!("weft-test-{unique}:parent"),
        format!("weft-test-{unique}:child"),
        format!("weft-test-{unique}"),
    );
    let _sweep = TestImages {
        container: container.clone(),
        images: vec![child.clone(), parent.clone()],
    };
    // A chaincode image nothing runs, and an image built on it (which inherits its labels)
    // that a container uses.
    build_image(
        &tmp.path().join("parent"),
        "FROM scratch\nCOPY f /f\n",
        "f",
        &label,
        &parent,
    );
    build_image(
        &tmp.path().join("child"),
        &format!("FROM {parent}\nCOPY g /g\n"),
        "g",
        &label,
        &child,
    );
    docker(&["create", "--name", &container, &child, "/f"]);

    // The scope names no network with containers: only unused images are swept.
    let scope = format!("{unique}-none");
    let gc = weft(&["chaincode", "gc", "--network", &scope]).await;
    let printed = gc.expect_success("gc with an image in use built on an unused one");
    assert!(printed.contains("kept"), "{printed}");
    for image in [&parent, &child] {
        let inspected = std::process::Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .expect("docker image inspect");
        assert!(
            inspected.status.success(),
            "{image} stays: the child is in use, the parent is under it: {printed}"
        );
    }

    // Once nothing uses the child, one gc removes it and then its parent.
    docker(&["rm", &container]);
    let gc = weft(&["chaincode", "gc", "--network", &scope]).await;
    let printed = gc.expect_success("gc once nothing is in use");
    assert_eq!(
        images_labelled(&label),
        Vec::<String>::new(),
        "child first, then its parent: {printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_leaves_a_container_that_its_restart_replaces_and_gc_removes() {
    if !engine_answers("a_killed_peer_leaves_a_container") {
        return;
    }
    let _gc = GC.lock().await;
    let mut f = start("killed", &[]).await;
    f.deploy_probe("1.0").await;
    let before = f.containers();
    f.node.kill9();
    assert_eq!(f.containers(), before, "a killed peer cannot clean up");

    // Back, the peer removes what it left before it serves.
    f.node.restart().await;
    let log = f.node.log();
    assert!(
        log.contains("removed chaincode containers a previous run left behind"),
        "{log}"
    );
    f.probe_serves("after-restart").await;
    let after = f.containers();
    assert_eq!(after.len(), 1, "the leftover was replaced: {after:?}");
    assert_ne!(after, before);

    f.node.kill9();
    let gc = weft(&[
        "chaincode",
        "gc",
        "--network",
        &f.network.chain_id,
        "--for-peer",
        "validator0",
    ])
    .await;
    let printed = gc.expect_success("weft chaincode gc --for-peer");
    assert!(
        printed.contains("removed 1 chaincode container"),
        "{printed}"
    );
    assert_eq!(f.containers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamically_linked_package_is_refused_with_what_to_do() {
    if !engine_answers("a_dynamically_linked_package_is_refused") {
        return;
    }
    let f = start("dynamic", &[]).await;
    let admin = f.network.client("admin").await;
    let error = admin
        .deploy(chaincode_package("probe"), &[])
        .await
        .expect_err("a FROM scratch container cannot run a dynamic binary");
    let text = error.to_string();
    assert!(text.contains("statically linked"), "{text}");
    assert!(text.contains("crt-static"), "{text}");
    assert_eq!(f.containers(), Vec::<String>::new());
    // The node is fine and takes a static package next.
    f.deploy_probe("1.0").await;
    f.probe_serves("static").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_exits_before_registering_fails_the_deploy_with_its_last_log_lines() {
    if !engine_answers("a_container_that_exits_before_registering") {
        return;
    }
    let f = start("launch", &[]).await;
    let admin = f.network.client("admin").await;
    let binary = std::fs::read(weft_tests::docker::static_chaincode_binary("probe"))
        .expect("read the static probe");
    let package = weft_proto::package::build("exits-at-launch", "1.0", &binary).expect("package");
    let error = admin
        .deploy(package, &[])
        .await
        .expect_err("a chaincode that exits before registering cannot be deployed");
    let text = error.to_string();
    assert!(text.contains("exits-at-launch:1.0"), "{text}");
    assert!(text.contains("container "), "names the container: {text}");
    assert!(text.contains("exit code 4"), "{text}");
    assert!(
        text.contains("exiting at launch on purpose"),
        "the container's last log lines: {text}"
    );
    // The node serves on.
    f.deploy_probe("1.0").await;
    f.probe_serves("after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_without_an_engine_runs_chaincode_as_processes_and_says_why() {
    // No engine is needed: the endpoint names a socket that does not exist.
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate(tmp.path()).await;
    let node = Node::start(
        &network,
        &[
            ("WEFT_CHAINCODE_RUNTIME", "auto"),
            (
                "WEFT_CHAINCODE_DOCKER_HOST",
                "unix:///nonexistent/docker.sock",
            ),
        ],
    )
    .await;
    let log = node.log();
    assert!(
        log.contains("no Docker engine answers, chaincode runs as processes")
            && log.contains("/nonexistent/docker.sock"),
        "{log}"
    );
    network
        .cli_deploy("probe", &weft_tests::chaincode_binary("probe"))
        .await
        .expect_success("a dynamic probe runs as a process");
    let alice = network.client("alice").await;
    alice
        .invoke("probe", "put", &args(&["k", "v"]))
        .await
        .expect("put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_chooses_docker_when_an_engine_answers_and_says_so() {
    if !engine_answers("auto_chooses_docker_when_an_engine_answers") {
        return;
    }
    let f = start("auto", &[("WEFT_CHAINCODE_RUNTIME", "auto")]).await;
    let log = f.node.log();
    assert!(
        log.contains("chaincode runtime chosen (auto): a Docker engine answers"),
        "{log}"
    );
    f.deploy_probe("1.0").await;
    f.probe_serves("auto").await;
    assert_eq!(f.containers().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_without_an_engine_stops_the_node_with_what_to_do() {
    // No engine is needed: the endpoint names a socket that does not exist.
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate(tmp.path()).await;
    let output = network
        .start_refused(&[
            ("WEFT_CHAINCODE_RUNTIME", "docker"),
            (
                "WEFT_CHAINCODE_DOCKER_HOST",
                "unix:///nonexistent/docker.sock",
            ),
        ])
        .await;
    let stderr = &output.stderr;
    assert!(stderr.contains("/nonexistent/docker.sock"), "{stderr}");
    assert!(stderr.contains("chaincode.runtime = process"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_chaincode_package_refuses_a_dynamic_binary_unless_told_otherwise() {
    // No engine is needed: packaging only reads the binary.
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("probe.tar.gz");
    let out_text = out.display().to_string();
    let package = |binary: &std::path::Path, extra: &[&str]| {
        let binary = binary.display().to_string();
        let out = out_text.clone();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        async move {
            let mut command = vec![
                "chaincode".to_string(),
                "package".into(),
                "--name".into(),
                "probe".into(),
                "--version".into(),
                "1.0".into(),
                "--binary".into(),
                binary,
                "--out".into(),
                out,
            ];
            command.extend(extra);
            weft(&command).await
        }
    };
    let dynamic = weft_tests::chaincode_binary("probe");
    let refused = package(&dynamic, &[]).await;
    assert!(!refused.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("not a statically linked")
            && refused.stderr.contains("crt-static")
            && refused.stderr.contains("--allow-dynamic"),
        "{}",
        refused.stderr
    );
    assert!(!out.exists(), "nothing is written for a refused binary");
    package(&dynamic, &["--allow-dynamic"])
        .await
        .expect_success("a dynamic package when told it is for process peers");
    let static_binary = weft_tests::docker::static_chaincode_binary("probe");
    package(&static_binary, &[])
        .await
        .expect_success("a static binary packages as is");
}
