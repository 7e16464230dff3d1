//! The multi-process harness for Weft's cross-crate tests: generate a network with the `weft`
//! binary on free loopback ports, run `weft node start` as a child process (killed on drop, its
//! output kept in a log file for failure messages), stop it with SIGTERM or SIGKILL, call the
//! `weft` CLI, read the operations port, and start in-process nodes.
//!
//! `sim` is separate: the deterministic simulation of the PBFT core, in process.
//!
//! Binaries are found beside the test executable (`target/debug/deps/..` -> `target/debug/weft`
//! and `target/debug/examples/*`); a missing one fails the test with the command that builds it.

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_proto::{Signer, WeftClient};

pub mod auditor;
pub mod cluster;
pub mod docker;
pub mod sim;

/// The command that builds every binary these tests run.
pub const BUILD_COMMAND: &str = "cargo build -p weft-node -p chaincode-sdk --bins --examples";

/// How long a node may take to serve after `weft node start`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `target/debug` (or whichever profile directory holds the running test binary).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let deps = exe
        .parent()
        .expect("the test binary is in target/<profile>/deps");
    let profile = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    profile.to_path_buf()
}

fn require_built(path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is not built: run `{BUILD_COMMAND}` (with the same CARGO_TARGET_DIR) before these tests",
        path.display()
    );
    path
}

/// The `weft` binary.
pub fn weft_binary() -> PathBuf {
    require_built(profile_dir().join("weft"))
}

/// A chaincode example binary (`asset-transfer`, `probe`).
pub fn example_binary(name: &str) -> PathBuf {
    require_built(profile_dir().join("examples").join(name))
}

/// A chaincode example binary ready to package: a stripped copy (made once per test process,
/// when `strip` is available) of [`example_binary`], because packaging and unpacking a 30 MB
/// debug binary dominates a test's run time otherwise.
pub fn chaincode_binary(name: &str) -> PathBuf {
    static STRIPPED: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let original = example_binary(name);
    let mut cache = STRIPPED.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(path) = cache.get(name) {
        return path.clone();
    }
    let dir = std::env::temp_dir().join(format!("weft-tests-{}", std::process::id()));
    let copy = dir.join(name);
    let stripped = std::fs::create_dir_all(&dir).is_ok()
        && std::fs::copy(&original, &copy).is_ok()
        && Command::new("strip")
            .arg(&copy)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if cache.is_empty() {
        remove_after_exit(&dir);
    }
    let chosen = if stripped { copy } else { original };
    cache.insert(name.to_string(), chosen.clone());
    chosen
}

/// The package of [`chaincode_binary`] as NAME:1.0, built once per test process.
pub fn chaincode_package(name: &str) -> Vec<u8> {
    static PACKAGES: Mutex<Option<HashMap<String, Vec<u8>>>> = Mutex::new(None);
    let mut cache = PACKAGES.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    cache
        .entry(name.to_string())
        .or_insert_with(|| {
            let binary = std::fs::read(chaincode_binary(name)).expect("read the chaincode binary");
            weft_proto::package::build(name, "1.0", &binary).expect("package the chaincode")
        })
        .clone()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// What a `weft` command did.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Panics with the command's output unless it exited 0; returns stdout.
    pub fn expect_success(&self, what: &str) -> &str {
        assert!(
            self.success(),
            "{what}: exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }
}

/// Runs `weft ARGS...` with extra environment variables and returns its exit code and output.
pub async fn weft_with_env<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    env: &[(&str, &str)],
) -> CliOutput {
    let mut command = tokio::process::Command::new(weft_binary());
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().await.expect("run the weft binary");
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `weft ARGS...`.
pub async fn weft<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> CliOutput {
    weft_with_env(args, &[]).await
}

/// A network directory written by `weft crypto generate`: one validator (solo), or several
/// (PBFT) on consecutive ports from `grpc_port`.
#[derive(Debug, Clone)]
pub struct Network {
    /// The directory `weft crypto generate` wrote.
    pub dir: PathBuf,
    pub chain_id: String,
    pub grpc_port: u16,
    pub operations_port: u16,
    /// First validator-to-validator (mutual TLS) port.
    pub consensus_port: u16,
    pub validators: usize,
    /// Non-validating peers (`peerI`), on the ports after the validators'.
    pub peers: usize,
}

/// Where [`free_ports`] looks: below the kernel's ephemeral range (32768-60999 by default), so
/// that no outgoing connection of a node already started takes a port of a block before the
/// node it belongs to binds it.
const PORT_BLOCKS: std::ops::Range<u32> = 10_000..32_000;

/// The first of `count` consecutive loopback ports that were all free a moment ago, from a
/// randomly placed block below the ephemeral range.
pub fn free_ports(count: usize) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let span = PORT_BLOCKS.end - PORT_BLOCKS.start - count as u32;
    for attempt in 0..200u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(attempt);
        let first = (PORT_BLOCKS.start + (hasher.finish() % u64::from(span)) as u32) as u16;
        let all_free =
            (0..count as u16).all(|i| TcpListener::bind(("127.0.0.1", first + i)).is_ok());
        if all_free {
            return first;
        }
    }
    panic!("no {count} consecutive free loopback ports found");
}

/// The clients every harness network has.
pub const CLIENTS: &str = "alice,bob,charlie,dave";

impl Network {
    /// Generates `tmp/network` on free ports, chain id `weft-dev`.
    pub async fn generate(tmp: &Path) -> Network {
        Network::generate_named(tmp, "network", "weft-dev").await
    }

    /// Generates `tmp/NAME` on free ports with `chain_id`.
    pub async fn generate_named(tmp: &Path, name: &str, chain_id: &str) -> Network {
        Network::generate_with(tmp, name, chain_id, 1, 0).await
    }

    /// Generates `tmp/network` with `validators` validators (PBFT for more than one).
    pub async fn generate_cluster(tmp: &Path, validators: usize) -> Network {
        Network::generate_with(tmp, "network", "weft-dev", validators, 0).await
    }

    /// Generates `tmp/network` with `validators` validators and `peers` non-validating peers.
    pub async fn generate_cluster_with_peers(
        tmp: &Path,
        validators: usize,
        peers: usize,
    ) -> Network {
        Network::generate_with(tmp, "network", "weft-dev", validators, peers).await
    }

    async fn generate_with(
        tmp: &Path,
        name: &str,
        chain_id: &str,
        validators: usize,
        peers: usize,
    ) -> Network {
        let dir = tmp.join(name);
        // One block for the three ranges: chosen apart, two could overlap, since nothing holds
        // a range between its choice and the nodes' start.
        let nodes = validators + peers;
        let grpc_port = free_ports(2 * nodes + validators);
        let operations_port = grpc_port + nodes as u16;
        let consensus_port = operations_port + nodes as u16;
        let consensus_text = consensus_port.to_string();
        let validators_text = validators.to_string();
        let peers_text = peers.to_string();
        let dir_text = dir.display().to_string();
        let grpc_text = grpc_port.to_string();
        let ops_text = operations_port.to_string();
        weft(&[
            "crypto",
            "generate",
            "--out",
            &dir_text,
            "--base-port",
            &grpc_text,
            "--operations-port",
            &ops_text,
            "--clients",
            CLIENTS,
            "--chain-id",
            chain_id,
            "--validators",
            &validators_text,
            "--peers",
            &peers_text,
            "--consensus-port",
            &consensus_text,
        ])
        .await
        .expect_success("weft crypto generate");
        Network {
            dir,
            chain_id: chain_id.to_string(),
            grpc_port,
            operations_port,
            consensus_port,
            validators,
            peers,
        }
    }

    /// Validator `validator`'s mutual-TLS consensus address, host:port.
    pub fn consensus_address_of(&self, validator: usize) -> String {
        format!("127.0.0.1:{}", self.consensus_port as usize + validator)
    }

    /// Non-validating peer `peer`'s gRPC address, host:port.
    pub fn peer_address(&self, peer: usize) -> String {
        format!(
            "127.0.0.1:{}",
            self.grpc_port as usize + self.validators + peer
        )
    }

    /// Connects to non-validating peer `peer` as `name`.
    pub async fn peer_client(&self, peer: usize, name: &str) -> WeftClient {
        let address = self.peer_address(peer);
        WeftClient::connect(&address, self.signer(name), &self.chain_id)
            .await
            .unwrap_or_else(|e| panic!("connect to {address} as {name}: {e}"))
    }

    /// `nodes/validatorI.toml`.
    /// Node `node` counts validators first, then non-validating peers: `nodes/validatorI.toml`
    /// below the validator count, `nodes/peerJ.toml` (J = node - validators) from it on.
    pub fn config_path_of(&self, node: usize) -> PathBuf {
        self.dir
            .join("nodes")
            .join(format!("{}.toml", self.node_name(node)))
    }

    /// `validatorI` or `peerJ` (see [`Network::config_path_of`]).
    pub fn node_name(&self, node: usize) -> String {
        if node < self.validators || self.validators == 0 {
            format!("validator{node}")
        } else {
            format!("peer{}", node - self.validators)
        }
    }

    /// Node `validator`'s gRPC address, host:port (peers follow the validators).
    pub fn address_of(&self, validator: usize) -> String {
        format!("127.0.0.1:{}", self.grpc_port as usize + validator)
    }

    /// Connects to validator `validator` as `name`.
    pub async fn client_of(&self, validator: usize, name: &str) -> WeftClient {
        let address = self.address_of(validator);
        WeftClient::connect(&address, self.signer(name), &self.chain_id)
            .await
            .unwrap_or_else(|e| panic!("connect to {address} as {name}: {e}"))
    }

    /// `nodes/validator0.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("nodes").join("validator0.toml")
    }

    pub fn genesis_path(&self) -> PathBuf {
        self.dir.join("genesis.json")
    }

    /// The validator's data directory (`data/validator0`, as the generated config says).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data").join("validator0")
    }

    /// The gRPC address, host:port.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The directory of an identity: "admin", "validator0", or a client name.
    pub fn identity_dir(&self, name: &str) -> PathBuf {
        match name {
            "admin" => self.dir.join("admin"),
            "validator0" => self.dir.join("validators").join("validator0"),
            client => self.dir.join("clients").join(client),
        }
    }

    pub fn signer(&self, name: &str) -> Signer {
        Signer::load(&self.identity_dir(name))
            .unwrap_or_else(|e| panic!("load identity {name} from {}: {e}", self.dir.display()))
    }

    /// `weft node start` of validator 0 with `env`, expected to refuse to start; returns
    /// what it printed (panics if it started).
    pub async fn start_refused(&self, env: &[(&str, &str)]) -> CliOutput {
        let config = self.config_path().display().to_string();
        let output = weft_with_env(&["node", "start", "--config", &config], env).await;
        assert!(
            !output.success(),
            "the node must refuse to start with {env:?}: {output:?}"
        );
        output
    }

    /// `--peer ADDR --network DIR`, for CLI calls against this network's node.
    pub fn peer_args(&self) -> Vec<String> {
        vec![
            "--peer".into(),
            self.address(),
            "--network".into(),
            self.dir.display().to_string(),
        ]
    }

    /// Connects to the node as `name`.
    pub async fn client(&self, name: &str) -> WeftClient {
        WeftClient::connect(&self.address(), self.signer(name), &self.chain_id)
            .await
            .unwrap_or_else(|e| panic!("connect to {} as {name}: {e}", self.address()))
    }

    /// Runs `weft chaincode invoke ... --as WHO CHAINCODE FUNCTION ARGS`.
    pub async fn cli_invoke(
        &self,
        who: &str,
        chaincode: &str,
        function: &str,
        args: &[&str],
    ) -> CliOutput {
        self.cli_call("invoke", who, chaincode, function, args)
            .await
    }

    /// Runs `weft chaincode query ... --as WHO CHAINCODE FUNCTION ARGS`.
    pub async fn cli_query(
        &self,
        who: &str,
        chaincode: &str,
        function: &str,
        args: &[&str],
    ) -> CliOutput {
        self.cli_call("query", who, chaincode, function, args).await
    }

    async fn cli_call(
        &self,
        verb: &str,
        who: &str,
        chaincode: &str,
        function: &str,
        args: &[&str],
    ) -> CliOutput {
        let mut all: Vec<String> = vec!["chaincode".into(), verb.into()];
        all.extend(self.peer_args());
        all.extend(["--as".into(), who.into(), chaincode.into(), function.into()]);
        all.extend(args.iter().map(|a| a.to_string()));
        weft(&all).await
    }

    /// Packages `binary` as NAME:1.0 with the CLI and deploys it with the CLI as admin.
    pub async fn cli_deploy(&self, name: &str, binary: &Path) -> CliOutput {
        let package = self.dir.join(format!("{name}.tar.gz"));
        let package_text = package.display().to_string();
        let binary_text = binary.display().to_string();
        weft(&[
            "chaincode",
            "package",
            "--name",
            name,
            "--version",
            "1.0",
            "--binary",
            &binary_text,
            "--out",
            &package_text,
            // Test binaries are debug builds for the process runtime.
            "--allow-dynamic",
        ])
        .await
        .expect_success("weft chaincode package");
        let mut args: Vec<String> = vec!["chaincode".into(), "deploy".into()];
        args.extend(self.peer_args());
        args.extend(["--package".into(), package_text]);
        weft(&args).await
    }
}

/// `weft node start` as a child process; killed (SIGKILL) on drop.
pub struct Node {
    pub network: Network,
    /// Which validator of the network this is.
    pub validator: usize,
    env: Vec<(String, String)>,
    child: Option<Child>,
    watchdog: Option<Child>,
    log_path: PathBuf,
}

impl Node {
    /// Starts `weft node start --config <network>/nodes/validator0.toml` with `extra_env`
    /// (for example `WEFT_CHAINCODE_EXECUTE_TIMEOUT=2s`; the runtime is `process` unless
    /// `extra_env` says otherwise), and waits until /healthz, /readyz and the gRPC port answer.
    pub async fn start(network: &Network, extra_env: &[(&str, &str)]) -> Node {
        Node::start_validator(network, 0, extra_env).await
    }

    /// Starts validator `validator` of a cluster network (see [`Node::start`]).
    pub async fn start_validator(
        network: &Network,
        validator: usize,
        extra_env: &[(&str, &str)],
    ) -> Node {
        let mut env = vec![("WEFT_CHAINCODE_RUNTIME".to_string(), "process".to_string())];
        for (k, v) in extra_env {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let log_name = if validator == 0 {
            "node.log".to_string()
        } else {
            format!("{}.log", network.node_name(validator))
        };
        let mut node = Node {
            network: network.clone(),
            validator,
            env,
            child: None,
            watchdog: None,
            log_path: network.dir.join(log_name),
        };
        node.restart().await;
        node
    }

    /// Starts non-validating peer `peer` of a cluster network (see [`Node::start`]).
    pub async fn start_peer(network: &Network, peer: usize, extra_env: &[(&str, &str)]) -> Node {
        Node::start_validator(network, network.validators + peer, extra_env).await
    }

    /// Starts the node again (after [`Node::stop`] or [`Node::kill9`]) with the same settings.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the node is still running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the node log");
        let mut command = Command::new(weft_binary());
        command
            .args(["node", "start", "--config"])
            .arg(self.network.config_path_of(self.validator))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn weft node start");
        self.watchdog = spawn_watchdog(child.id());
        self.child = Some(child);
        if let Err(e) = self.wait_serving().await {
            panic!(
                "the node did not start: {e:#}\n--- node log\n{}",
                self.log()
            );
        }
    }

    async fn wait_serving(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let ops = self.operations_address();
        loop {
            if let Some(status) = self.child.as_mut().context("no child")?.try_wait()? {
                self.child = None;
                bail!("weft node start exited with {status}");
            }
            let healthy = matches!(http_get(&ops, "/healthz").await, Ok((200, _)));
            let ready = healthy && matches!(http_get(&ops, "/readyz").await, Ok((200, _)));
            if ready {
                let client = self.client("admin").await;
                client
                    .chain_info()
                    .await
                    .context("chain info after /readyz")?;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not serving within {START_TIMEOUT:?} (healthz ok: {healthy})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id of the running node.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node is running").id()
    }

    /// Sends SIGTERM and waits for the exit (panics if it takes over 30 s).
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("stop: the node is not running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the node") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the node did not exit within {STOP_TIMEOUT:?} of SIGTERM\n--- node log\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.end_watchdog();
        status
    }

    /// Kills the node with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("kill9: the node is not running");
        child.kill().expect("SIGKILL the node");
        let _ = child.wait();
        self.end_watchdog();
    }

    fn end_watchdog(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }

    /// Everything the node has printed (all runs).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(200);
        lines[start..].join("\n")
    }

    /// The operations address, host:port.
    pub fn operations_address(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.network.operations_port as usize + self.validator
        )
    }

    /// The gRPC address, host:port.
    pub fn address(&self) -> String {
        self.network.address_of(self.validator)
    }

    /// Whether the process is running (it has not been stopped or killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits up to `timeout` for the process to exit on its own; its exit status, if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("wait for the node") {
                self.child = None;
                self.end_watchdog();
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operations port's /metrics text.
    pub async fn metrics(&self) -> String {
        let ops = self.operations_address();
        match http_get(&ops, "/metrics").await {
            Ok((200, body)) => body,
            other => panic!("GET /metrics: {other:?}"),
        }
    }

    /// Connects to the node as `name`.
    pub async fn client(&self, name: &str) -> WeftClient {
        self.network.client_of(self.validator, name).await
    }

    /// Suspends the process (SIGSTOP) or resumes it (SIGCONT).
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {pid} failed");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.end_watchdog();
    }
}

/// A node kept in a `static` is never dropped: a small shell process kills it (SIGKILL) once
/// this test process has exited, so no node outlives the test run.
fn spawn_watchdog(node_pid: u32) -> Option<Child> {
    let script = "while kill -0 \"$0\" 2>/dev/null && kill -0 \"$1\" 2>/dev/null; do sleep 1; done; kill -9 \"$1\" 2>/dev/null";
    Command::new("sh")
        .args([
            "-c",
            script,
            &std::process::id().to_string(),
            &node_pid.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Removes `dir` a little after this test process has exited (for fixtures kept in statics,
/// whose temporary directories are never dropped).
pub fn remove_after_exit(dir: &Path) {
    let script = "while kill -0 \"$0\" 2>/dev/null; do sleep 1; done; sleep 2; rm -rf \"$1\"";
    let _ = Command::new("sh")
        .args(["-c", script, &std::process::id().to_string()])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
pub async fn http_get(address: &str, path: &str) -> Result<(u16, String)> {
    Ok(weft_orchestration::health::http_get(address, path).await?)
}

/// The value of one Prometheus series (`name` or `name{labels}`) in `metrics`; 0 if absent.
pub fn metric(metrics: &str, series: &str) -> u64 {
    weft_orchestration::health::metric(metrics, series) as u64
}

/// An in-process node (`weft_node::node::start_with_store` over a [`MemoryStore`]) on ephemeral
/// ports, with the process chaincode runtime. It lives on the calling test's runtime.
///
/// [`MemoryStore`]: weft_node::storage::MemoryStore
pub async fn start_in_process(network: &Network) -> weft_node::node::NodeHandle {
    let env: HashMap<String, String> = [
        ("WEFT_NODE_LISTEN", "127.0.0.1:0"),
        ("WEFT_NODE_OPERATIONS_LISTEN", "127.0.0.1:0"),
        ("WEFT_CHAINCODE_RUNTIME", "process"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = weft_node::config::Config::load_with_env(&network.config_path(), &env)
        .expect("load the node config");
    let store = Arc::new(weft_node::storage::MemoryStore::new());
    weft_node::node::start_with_store(config, store)
        .await
        .expect("start an in-process node")
}

/// Node `node` of a cluster network (validators first, then peers: see
/// [`Network::config_path_of`]), in process, over `store` (pass the same store again to
/// restart it with what it had persisted), on its configured address.
pub async fn start_node_in_process(
    network: &Network,
    node: usize,
    store: Arc<weft_node::storage::MemoryStore>,
) -> weft_node::node::NodeHandle {
    let env: HashMap<String, String> = [
        ("WEFT_NODE_OPERATIONS_LISTEN", "127.0.0.1:0"),
        ("WEFT_CHAINCODE_RUNTIME", "process"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = weft_node::config::Config::load_with_env(&network.config_path_of(node), &env)
        .expect("load the node config");
    weft_node::node::start_with_store(config, store)
        .await
        .unwrap_or_else(|e| panic!("start {} in process: {e}", network.node_name(node)))
}

/// Validator `validator` of a cluster network, in process (see [`start_node_in_process`]).
pub async fn start_validator_in_process(
    network: &Network,
    validator: usize,
    store: Arc<weft_node::storage::MemoryStore>,
) -> weft_node::node::NodeHandle {
    start_node_in_process(network, validator, store).await
}

/// Non-validating peer `peer` of a cluster network, in process (see [`start_node_in_process`]).
pub async fn start_peer_in_process(
    network: &Network,
    peer: usize,
    store: Arc<weft_node::storage::MemoryStore>,
) -> weft_node::node::NodeHandle {
    start_node_in_process(network, network.validators + peer, store).await
}

/// Reads an asset-transfer asset's owner through a query.
pub async fn owner_of(client: &WeftClient, asset: &str) -> String {
    let payload = client
        .query("asset-transfer", "ReadAsset", &[asset.as_bytes().to_vec()])
        .await
        .unwrap_or_else(|e| panic!("ReadAsset {asset}: {e}"));
    let value: serde_json::Value =
        serde_json::from_slice(&payload).expect("ReadAsset returns JSON");
    value["Owner"].as_str().unwrap_or_default().to_string()
}

/// Turns string arguments into transaction arguments.
pub fn args(values: &[&str]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
