//! The network under test: a local cluster the bench starts (each validator a `weft node
//! start` process on loopback, from a network `weft crypto generate` writes into a temporary
//! directory), or an existing network named by its directory and its validators' endpoints.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use weft_node::chaincode::runtime::RuntimeKind;
use weft_orchestration::health::http_get;
use weft_proto::{Signer, WeftClient};

use super::super::crypto::{GenerateArgs, generate};
use super::super::network::identity_dir;

/// One node process whose CPU and memory the bench measures.
pub struct NodeProcess {
    pub name: String,
    pub pid: u32,
}

/// What the bench runs against.
pub struct Target {
    /// The directory holding the network's identities (admin and clients) and genesis.
    pub network: PathBuf,
    pub chain_id: String,
    /// Validators' gRPC addresses, in the order of their names.
    pub endpoints: Vec<String>,
    /// Validators' operations (HTTP) addresses, for metrics; may be empty for an existing
    /// network.
    pub operations: Vec<String>,
    /// Node processes to measure (all of a local cluster; those named by --pids otherwise).
    pub processes: Vec<NodeProcess>,
    /// Chaincode containers' main processes (Docker runtime: not children of their nodes),
    /// named after the node that started each.
    pub containers: Vec<NodeProcess>,
    /// Where the local cluster's node logs are.
    pub logs: Option<PathBuf>,
    children: Vec<tokio::process::Child>,
    _dir: Option<tempfile::TempDir>,
}

/// How to start a local cluster.
pub struct LocalSpec {
    pub validators: usize,
    pub runtime: RuntimeKind,
    pub clients: Vec<String>,
    /// Keep the network directory (keys, data, logs) after the bench.
    pub keep: bool,
}

impl Target {
    /// Starts `spec.validators` validator processes and waits until each is ready.
    pub async fn start_local(spec: &LocalSpec) -> Result<Target> {
        let dir = tempfile::Builder::new().prefix("weft-bench-").tempdir()?;
        let network = dir.path().join("network");
        let count = spec.validators;
        let ports = free_blocks(count, 3)?;
        let genesis = generate(&GenerateArgs {
            out: network.clone(),
            chain_id: "weft-bench".into(),
            organization: "Org1".into(),
            validators: count,
            peers: 0,
            clients: spec.clients.clone(),
            base_port: ports[0],
            operations_port: ports[1],
            consensus_port: if count > 1 { ports[2] } else { 0 },
        })?;
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs)?;
        let exe = std::env::current_exe().context("cannot find the weft binary to run nodes")?;
        let mut children = Vec::new();
        let mut processes = Vec::new();
        let mut endpoints = Vec::new();
        let mut operations = Vec::new();
        for i in 0..count {
            let name = format!("validator{i}");
            let config_path = network.join("nodes").join(format!("{name}.toml"));
            let config = weft_node::config::Config::load(&config_path)?;
            endpoints.push(config.node.listen.to_string());
            operations.push(config.node.operations_listen.to_string());
            let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
            let child = tokio::process::Command::new(&exe)
                .args(["node", "start", "--config"])
                .arg(&config_path)
                .env("WEFT_CHAINCODE_RUNTIME", spec.runtime.as_str())
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start {name} ({})", exe.display()))?;
            processes.push(NodeProcess {
                name,
                pid: child.id().context("a node exited as it started")?,
            });
            children.push(child);
        }
        let mut target = Target {
            network,
            chain_id: genesis.chain_id,
            endpoints,
            operations,
            processes,
            containers: Vec::new(),
            logs: Some(logs),
            children,
            _dir: None,
        };
        target.wait_ready().await?;
        if spec.keep {
            eprintln!("keeping the bench network in {}", dir.path().display());
            let _ = dir.keep();
        } else {
            target._dir = Some(dir);
        }
        Ok(target)
    }

    /// An existing network: `network` is the directory `weft crypto generate` (or `weft
    /// cluster up`) wrote, holding the admin's and clients' identities and the genesis.
    pub async fn existing(
        network: PathBuf,
        endpoints: Vec<String>,
        operations: Vec<String>,
        pids: Vec<u32>,
    ) -> Result<Target> {
        ensure!(
            !endpoints.is_empty(),
            "--network needs --endpoints: the gRPC addresses of the validators to submit to"
        );
        let genesis = weft_proto::genesis::Genesis::load(&network.join("genesis.json"))
            .with_context(|| {
                format!(
                    "{} is not a network directory (no readable genesis.json)",
                    network.display()
                )
            })?;
        let processes = pids
            .into_iter()
            .map(|pid| NodeProcess {
                name: super::procstat::name(pid),
                pid,
            })
            .collect();
        Ok(Target {
            network,
            chain_id: genesis.chain_id,
            endpoints,
            operations,
            processes,
            containers: Vec::new(),
            logs: None,
            children: Vec::new(),
            _dir: None,
        })
    }

    /// A client of validator `i` (modulo the number of endpoints) signing as `who`.
    pub async fn client(&self, i: usize, who: &str) -> Result<WeftClient> {
        let endpoint = &self.endpoints[i % self.endpoints.len()];
        let signer = Signer::load(&identity_dir(&self.network, who))
            .with_context(|| format!("no identity {who:?} in {}", self.network.display()))?;
        WeftClient::connect(endpoint, signer, &self.chain_id)
            .await
            .with_context(|| format!("cannot connect to {endpoint}"))
    }

    /// Fails with the node's log when one of the local cluster's processes has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for (child, process) in self.children.iter_mut().zip(&self.processes) {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({status}) during the bench; its log ends:\n{}",
                    process.name,
                    self.log_tail(&process.name)
                );
            }
        }
        Ok(())
    }

    fn log_tail(&self, name: &str) -> String {
        let Some(logs) = &self.logs else {
            return String::new();
        };
        let text = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..self.operations.len() {
            loop {
                self.check_alive()?;
                if let Ok((200, _)) = http_get(&self.operations[i], "/readyz").await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} was not ready within 60 s; its log ends:\n{}",
                        self.processes[i].name,
                        self.log_tail(&self.processes[i].name)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Every validator's /metrics text; None unless every one answered.
    pub async fn metrics(&self) -> Option<Vec<String>> {
        if self.operations.is_empty() {
            return None;
        }
        let mut texts = Vec::with_capacity(self.operations.len());
        for address in &self.operations {
            match http_get(address, "/metrics").await {
                Ok((200, text)) => texts.push(text),
                _ => return None,
            }
        }
        Some(texts)
    }

    /// Finds this network's running chaincode containers on the local engine (the Docker
    /// runtime labels each with its network and the node that started it).
    pub async fn find_chaincode_containers(&mut self) -> Result<()> {
        use bollard::query_parameters::ListContainersOptionsBuilder;
        let endpoint =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let docker = weft_orchestration::engine::connect(&endpoint, None)
            .await
            .map_err(|e| anyhow::anyhow!("the Docker engine at {endpoint}: {e}"))?;
        let filters = std::collections::HashMap::from([(
            "label",
            vec![format!(
                "{}={}",
                weft_orchestration::docker::LABEL_CHAINCODE_NETWORK,
                self.chain_id
            )],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        self.containers.clear();
        for container in docker.list_containers(Some(options)).await? {
            let (Some(id), Some(labels)) = (container.id, container.labels) else {
                continue;
            };
            let peer = labels
                .get(weft_orchestration::docker::LABEL_CHAINCODE_PEER)
                .cloned()
                .unwrap_or_default();
            let pid = docker
                .inspect_container(&id, None)
                .await?
                .state
                .and_then(|s| s.pid)
                .filter(|pid| *pid > 0);
            if let Some(pid) = pid {
                self.containers.push(NodeProcess {
                    name: format!("{peer}/chaincode container"),
                    pid: pid as u32,
                });
            }
        }
        Ok(())
    }

    /// Stops a local cluster's nodes as an operator would (SIGTERM: each removes its
    /// chaincode containers and closes its ledger), then kills what has not exited within 15 s.
    pub async fn stop(&mut self) {
        for process in &self.processes {
            if self.children.is_empty() {
                break;
            }
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &process.pid.to_string()])
                .status()
                .await;
        }
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// `blocks` non-overlapping runs of `count` consecutive loopback ports that were free a moment
/// ago, below the kernel's ephemeral range so that no outgoing connection takes one before its
/// node binds it; the first port of each.
fn free_blocks(count: usize, blocks: usize) -> Result<Vec<u16>> {
    let mut firsts: Vec<u16> = Vec::new();
    for attempt in 0..2_000u32 {
        if firsts.len() == blocks {
            break;
        }
        let first = 10_000 + (rand::random::<u32>().wrapping_add(attempt) % 22_000) as u16;
        let overlaps = firsts
            .iter()
            .any(|&other| first < other + count as u16 && other < first + count as u16);
        let free = (0..count as u16)
            .all(|i| std::net::TcpListener::bind(("127.0.0.1", first + i)).is_ok());
        if !overlaps && free {
            firsts.push(first);
        }
    }
    if firsts.len() < blocks {
        bail!("no {blocks} runs of {count} free loopback ports between 10000 and 32000");
    }
    Ok(firsts)
}

/// The chaincode binary's bytes, refusing a dynamically linked one for the Docker runtime.
pub fn chaincode_bytes(binary: &Path, runtime: RuntimeKind) -> Result<Vec<u8>> {
    let bytes = std::fs::read(binary)
        .with_context(|| format!("cannot read the chaincode binary {}", binary.display()))?;
    if runtime == RuntimeKind::Docker {
        ensure!(
            weft_proto::package::is_static_elf(&bytes),
            "--runtime docker runs the chaincode FROM scratch, but {} is dynamically linked: build it with scripts/static-chaincode.sh (or docker/build-images.sh) and pass its path",
            binary.display()
        );
    }
    Ok(bytes)
}

/// The sum of a metric over the validators' /metrics texts ([`Target::metrics`]).
pub fn metric_sum(texts: &[String], series: &str) -> f64 {
    texts
        .iter()
        .map(|text| weft_orchestration::health::metric(text, series))
        .sum()
}
