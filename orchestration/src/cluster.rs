//! A deployed blueprint: its state directory on this machine (the network directory with
//! the keys and genesis, the seed and the peer counts `scale` set, and the log of what the
//! management loop did) and the operations on it: `up`, `status`, `scale`, `down`.
//!
//! `up` converges: it issues what identities are missing, makes per location what the plan
//! names and is missing (a second run changes nothing), removes what the plan no longer
//! names (peers scaled away), waits until every node is ready, deploys the blueprint's
//! chaincode unless the network already runs that package, and reports the endpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weft_proto::{Role, Signer, WeftClient};

use crate::blueprint::{Blueprint, LocationKind};
use crate::docker::{Change, DockerLocation, NodeFiles};
use crate::engine::EngineError;
use crate::health::{Health, health};
use crate::identities::{IdentityError, NetworkDir};
use crate::image::PeerImage;
use crate::local::LocalLocation;
use crate::plan::{LocationPlan, NodePlan, Plan, plan};
use crate::site::Site;

/// How long `up` waits for every node to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Local(#[from] crate::local::LocalError),
    #[error("{path}: {reason}")]
    State { path: String, reason: String },
    #[error("{0}")]
    Refused(String),
    #[error("{node}: {reason}")]
    Node { node: String, reason: String },
}

fn node_error(node: &str) -> impl FnOnce(weft_proto::ClientError) -> ClusterError {
    let node = node.to_string();
    move |e| ClusterError::Node {
        node,
        reason: e.to_string(),
    }
}

fn state_error(path: &Path) -> impl Fn(String) -> ClusterError + '_ {
    move |reason| ClusterError::State {
        path: path.display().to_string(),
        reason,
    }
}

/// What `up` and `scale` remember between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub seed: u64,
    /// Non-validating peers per location, as `scale` (or the autoscaler) set them.
    #[serde(default)]
    pub peers: BTreeMap<String, usize>,
}

/// A blueprint with its state on this machine.
pub struct Cluster {
    /// The blueprint as written, with the peer counts `scale` set.
    pub blueprint: Blueprint,
    pub plan: Plan,
    pub state_dir: PathBuf,
    pub network: NetworkDir,
    pub remembered: Remembered,
}

impl Cluster {
    /// Opens the state in `state_dir` (none yet is fine): the seed given, or the one an earlier
    /// `up` used, and the peer counts `scale` set.
    pub fn open(
        blueprint: Blueprint,
        state_dir: &Path,
        seed: Option<u64>,
    ) -> Result<Cluster, ClusterError> {
        let path = state_dir.join("cluster.json");
        let mut remembered = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Remembered>(&bytes)
                .map_err(|e| state_error(&path)(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Remembered {
                seed: seed.unwrap_or_default(),
                ..Remembered::default()
            },
            Err(e) => return Err(state_error(&path)(e.to_string())),
        };
        if let Some(seed) = seed
            && seed != remembered.seed
            && path.exists()
        {
            return Err(ClusterError::Refused(format!(
                "this cluster was brought up with --seed {}: a different seed would move its ports; leave --seed out, or `weft cluster down` first",
                remembered.seed
            )));
        }
        remembered
            .peers
            .retain(|name, _| blueprint.location(name).is_some());
        let mut cluster = Cluster {
            plan: plan(&blueprint, remembered.seed),
            network: NetworkDir::new(state_dir.join("network")),
            state_dir: state_dir.to_path_buf(),
            blueprint,
            remembered,
        };
        cluster.replan();
        Ok(cluster)
    }

    /// The plan of the blueprint with the remembered peer counts.
    fn replan(&mut self) {
        let mut scaled = self.blueprint.clone();
        for location in &mut scaled.locations {
            if let Some(peers) = self.remembered.peers.get(&location.name) {
                location.peers = *peers;
            }
        }
        self.plan = plan(&scaled, self.remembered.seed);
    }

    fn save(&self) -> Result<(), ClusterError> {
        let path = self.state_dir.join("cluster.json");
        std::fs::create_dir_all(&self.state_dir).map_err(|e| state_error(&path)(e.to_string()))?;
        let text = serde_json::to_vec_pretty(&self.remembered)
            .map_err(|e| state_error(&path)(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| state_error(&path)(e.to_string()))
    }

    /// Appends a line to the management log that `status` shows.
    pub fn record(&self, line: &str) {
        use std::io::Write;
        let path = self.state_dir.join("actions.log");
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = writeln!(file, "{now} {line}");
        }
    }

    /// The last `count` lines of the management log.
    pub fn recent_actions(&self, count: usize) -> Vec<String> {
        let text = std::fs::read_to_string(self.state_dir.join("actions.log")).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines[lines.len().saturating_sub(count)..].to_vec()
    }

    /// The node named `name` and its location.
    pub fn node(&self, name: &str) -> Option<(&LocationPlan, &NodePlan)> {
        self.plan
            .locations
            .iter()
            .find_map(|l| l.nodes.iter().find(|n| n.name == name).map(|n| (l, n)))
    }

    /// A client of node `node` acting as the admin, through its published gRPC port.
    pub async fn admin_client(&self, node: &NodePlan) -> Result<WeftClient, ClusterError> {
        let address = node.grpc.host.clone().ok_or_else(|| ClusterError::Node {
            node: node.name.clone(),
            reason: "its gRPC port is not published on this machine".into(),
        })?;
        let signer = self.signer("admin", Role::Admin)?;
        WeftClient::connect(&address, signer, &self.plan.genesis.chain_id)
            .await
            .map_err(|e| ClusterError::Node {
                node: node.name.clone(),
                reason: e.to_string(),
            })
    }

    pub fn signer(&self, name: &str, role: Role) -> Result<Signer, ClusterError> {
        let dir = self.network.identity(name, role);
        Signer::load(&dir).map_err(|e| state_error(&dir)(e.to_string()))
    }

    /// A docker location's engine.
    pub async fn engine(&self, location: &LocationPlan) -> Result<DockerLocation, ClusterError> {
        let tls = self
            .blueprint
            .location(&location.name)
            .and_then(|l| l.tls.clone());
        Ok(DockerLocation::connect(
            &self.plan.blueprint,
            location,
            &self.plan.links_network,
            tls.as_ref(),
        )
        .await?)
    }

    fn unsupported(location: &LocationPlan) -> ClusterError {
        ClusterError::Refused(format!(
            "location {}: {} locations are rendered as manifests (`weft cluster manifests`), not run by `weft cluster` itself",
            location.name,
            location.kind.as_str()
        ))
    }

    /// Where `location`'s nodes run; `image` is the peer image new containers get.
    pub async fn site(
        &self,
        location: &LocationPlan,
        image: Option<String>,
    ) -> Result<Site, ClusterError> {
        match location.kind {
            LocationKind::Docker => Ok(Site::Docker {
                engine: self.engine(location).await?,
                image,
                group: self.socket_group(location)?,
            }),
            LocationKind::Local => Ok(Site::Local(LocalLocation {
                root: crate::local::location_root(&self.state_dir, &location.name),
                location: location.clone(),
                network: self.network.clone(),
                binary: std::env::current_exe().map_err(|e| {
                    ClusterError::Refused(format!("cannot find this weft binary: {e}"))
                })?,
            })),
            LocationKind::Kubernetes => Err(Cluster::unsupported(location)),
        }
    }

    /// The locations whose nodes `weft cluster` runs and watches itself (docker and local);
    /// Kubernetes runs its own.
    pub fn run_here(&self) -> impl Iterator<Item = &LocationPlan> {
        self.plan
            .locations
            .iter()
            .filter(|l| l.kind != LocationKind::Kubernetes)
    }

    /// The manifests of a kubernetes location, its pods running `image` (default: the image
    /// `docker/build-images.sh` builds, pushed where the cluster pulls from).
    pub fn manifests(
        &self,
        location: &LocationPlan,
        image: Option<&str>,
    ) -> Result<crate::kubernetes::LocationManifests, ClusterError> {
        let image = image
            .map(str::to_string)
            .unwrap_or_else(|| format!("weft-peer:{}", env!("CARGO_PKG_VERSION")));
        crate::kubernetes::render(location, &self.network, &image)
            .map_err(|e| ClusterError::Refused(format!("location {}: {e}", location.name)))
    }

    /// Issues the identities and writes the manifests of a kubernetes location under the
    /// state directory; returns the file.
    pub fn write_manifests(
        &self,
        location: &LocationPlan,
        image: Option<&str>,
    ) -> Result<PathBuf, ClusterError> {
        self.network.issue(&self.plan)?;
        let yaml = self
            .manifests(location, image)?
            .to_yaml()
            .map_err(|e| ClusterError::Refused(e.to_string()))?;
        let dir = self.state_dir.join("kubernetes");
        std::fs::create_dir_all(&dir).map_err(|e| state_error(&dir)(e.to_string()))?;
        let path = dir.join(format!("{}.yaml", location.name));
        // The manifests carry the location's private keys.
        weft_proto::identity::write_private(&path, &yaml)
            .map_err(|e| state_error(&path)(e.to_string()))?;
        Ok(path)
    }

    /// What a node starts from: the genesis and its identity.
    pub fn node_files(&self, node: &NodePlan) -> Result<NodeFiles, ClusterError> {
        let identity = self.network.identity(&node.name, node.role);
        let read =
            |path: PathBuf| std::fs::read(&path).map_err(|e| state_error(&path)(e.to_string()));
        Ok(NodeFiles {
            genesis: read(self.network.genesis_path())?,
            certificate: read(identity.join("cert.pem"))?,
            key: read(identity.join("key.pem"))?,
        })
    }

    /// The gid that owns the engine's socket on its host.
    pub(crate) fn socket_group(&self, location: &LocationPlan) -> Result<u32, ClusterError> {
        if let Some(gid) = self
            .blueprint
            .location(&location.name)
            .and_then(|l| l.docker_group)
        {
            return Ok(gid);
        }
        let endpoint = location.endpoint.clone().unwrap_or_default();
        let path = endpoint.strip_prefix("unix://").unwrap_or(&endpoint);
        std::fs::metadata(path)
            .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
            .map_err(|e| {
                ClusterError::Refused(format!(
                    "location {}: cannot read the group of {path}: {e}; give docker_group in the blueprint",
                    location.name
                ))
            })
    }

    /// Brings the cluster to its plan. `image`: the peer image to run (default: one built
    /// from this `weft`). `progress` hears each step.
    pub async fn up(
        &mut self,
        image: Option<&str>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<UpReport, ClusterError> {
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|e| state_error(&self.state_dir)(e.to_string()))?;
        self.save()?;
        let genesis = self.network.issue(&self.plan)?;
        progress(&format!(
            "identities and genesis of {} in {}",
            genesis.chain_id,
            self.network.dir.display()
        ));
        let built = match image {
            Some(_) => None,
            None if self
                .plan
                .locations
                .iter()
                .any(|l| l.kind == LocationKind::Docker) =>
            {
                Some(PeerImage::of_this_binary()?)
            }
            None => None,
        };
        let image = image
            .map(str::to_string)
            .or_else(|| built.as_ref().map(|b| b.tag.clone()));
        let mut report = UpReport::default();
        for location in &self.plan.locations {
            if location.kind == LocationKind::Kubernetes {
                let path = self.write_manifests(location, image.as_deref())?;
                progress(&format!(
                    "{}: manifests in {}",
                    location.name,
                    path.display()
                ));
                self.manifests(location, image.as_deref())?
                    .apply()
                    .await
                    .map_err(|e| {
                        ClusterError::Refused(format!(
                            "location {}: {e}; its manifests are in {} for `kubectl apply -f` once KUBECONFIG names a cluster",
                            location.name,
                            path.display()
                        ))
                    })?;
                progress(&format!(
                    "{}: applied to namespace {} (Kubernetes restarts its pods itself)",
                    location.name,
                    location.namespace.as_deref().unwrap_or_default()
                ));
                report.changes.push((
                    format!(
                        "statefulset {}",
                        location.stateful_set.as_deref().unwrap_or_default()
                    ),
                    Change::Created,
                ));
                continue;
            }
            let site = self.site(location, image.clone()).await?;
            if let Site::Docker { engine, image, .. } = &site {
                let image = image.clone().unwrap_or_default();
                match &built {
                    Some(built) => {
                        progress(&format!("{}: peer image {image}", location.name));
                        built.ensure(&engine.docker).await?;
                    }
                    None => {
                        engine.docker.inspect_image(&image).await.map_err(|e| {
                            ClusterError::Refused(format!(
                                "location {}: no image {image} on its engine ({e}): build it with docker/build-images.sh, or leave --image out to build one from this weft",
                                location.name
                            ))
                        })?;
                    }
                }
                for (network, change) in engine.ensure_networks().await? {
                    report.changes.push((format!("network {network}"), change));
                }
            }
            for node in &location.nodes {
                let change = site.ensure_node(node, &self.node_files(node)?).await?;
                progress(&format!(
                    "{}: {} {} {}",
                    location.name,
                    node.role.as_str(),
                    node.name,
                    change.as_str()
                ));
                report.changes.push((format!("node {}", node.name), change));
            }
            for removed in site.remove_unplanned().await? {
                progress(&format!("{}: {removed} removed", location.name));
                report.removed.push(removed);
            }
        }
        self.wait_ready(READY_TIMEOUT, progress).await?;
        report.chaincode = self.deploy_chaincode(progress).await?;
        report.endpoints = self.endpoints();
        Ok(report)
    }

    /// Waits until every planned node answers ready.
    pub async fn wait_ready(
        &self,
        timeout: Duration,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), ClusterError> {
        let started = Instant::now();
        let nodes: Vec<&NodePlan> = self.plan.locations.iter().flat_map(|l| &l.nodes).collect();
        let mut last_told = usize::MAX;
        loop {
            self.check_nodes_run().await?;
            let mut waiting = Vec::new();
            for node in &nodes {
                let Some(address) = &node.operations.host else {
                    continue;
                };
                if health(address).await != Health::Ready {
                    waiting.push(node.name.clone());
                }
            }
            if waiting.is_empty() {
                progress(&format!("all {} nodes ready", nodes.len()));
                return Ok(());
            }
            if waiting.len() != last_told {
                progress(&format!(
                    "{} of {} nodes ready; waiting for {}",
                    nodes.len() - waiting.len(),
                    nodes.len(),
                    waiting.join(", ")
                ));
                last_told = waiting.len();
            }
            if started.elapsed() > timeout {
                return Err(ClusterError::Refused(format!(
                    "not ready within {timeout:?}: {}; see their logs (`docker logs weft-BLUEPRINT-NODE`, or node.log under {})",
                    waiting.join(", "),
                    self.state_dir.join("local").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Fails, with its last log lines, if a planned node has stopped.
    async fn check_nodes_run(&self) -> Result<(), ClusterError> {
        for location in self.run_here() {
            let site = self.site(location, None).await?;
            let states = site.states().await?;
            for node in &location.nodes {
                if let Some(stopped) = states.iter().find(|c| c.node == node.name && !c.running) {
                    return Err(ClusterError::Node {
                        node: node.name.clone(),
                        reason: format!(
                            "it stopped ({}); its last lines:\n{}",
                            stopped.state,
                            site.logs(node, 20).await
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Installs the blueprint's chaincode on every node and deploys it, unless the network
    /// already runs that package.
    pub async fn deploy_chaincode(
        &self,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<(String, Change)>, ClusterError> {
        let mut outcome = Vec::new();
        let nodes: Vec<&NodePlan> = self.plan.locations.iter().flat_map(|l| &l.nodes).collect();
        let nodes: Vec<&NodePlan> = nodes
            .into_iter()
            .filter(|n| n.grpc.host.is_some())
            .collect();
        let Some(first) = nodes.iter().find(|n| n.role == Role::Validator) else {
            if !self.plan.chaincode.is_empty() {
                progress(
                    "no validator is reachable from this machine: deploy the chaincode from inside the cluster with `weft chaincode deploy`",
                );
            }
            return Ok(outcome);
        };
        let admin = self.admin_client(first).await?;
        for chaincode in &self.plan.chaincode {
            let (bytes, package) = self.package(chaincode)?;
            for node in &nodes {
                self.admin_client(node)
                    .await?
                    .install(bytes.clone())
                    .await
                    .map_err(node_error(&node.name))?;
            }
            let deployed = admin.deployed().await.map_err(node_error(&first.name))?;
            if deployed
                .iter()
                .any(|d| d.name == chaincode.name && d.package_hash == package.hash)
            {
                progress(&format!("chaincode {} already deployed", chaincode.name));
                outcome.push((chaincode.name.clone(), Change::Unchanged));
                continue;
            }
            let committed = admin
                .deploy(bytes, &[])
                .await
                .map_err(node_error(&first.name))?;
            progress(&format!(
                "chaincode {} deployed in block {}",
                chaincode.name, committed.block_number
            ));
            outcome.push((chaincode.name.clone(), Change::Created));
        }
        Ok(outcome)
    }

    /// A blueprint chaincode's package: its bytes, opened.
    fn package(
        &self,
        chaincode: &crate::blueprint::ChaincodeToDeploy,
    ) -> Result<(Vec<u8>, weft_proto::package::Package), ClusterError> {
        let bytes = std::fs::read(&chaincode.package)
            .map_err(|e| state_error(&chaincode.package)(e.to_string()))?;
        let package = weft_proto::package::open(&bytes).map_err(|e| {
            state_error(&chaincode.package)(format!(
                "not a chaincode package ({e}): make one with `weft chaincode package`"
            ))
        })?;
        Ok((bytes, package))
    }

    /// Installs the blueprint's chaincode packages on one node (a replaced one), once it
    /// answers.
    pub async fn install_chaincode_on(&self, node: &NodePlan) -> Result<(), ClusterError> {
        if node.grpc.host.is_none() || self.plan.chaincode.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let client = loop {
            match self.admin_client(node).await {
                Ok(client) if client.chain_info().await.is_ok() => break client,
                _ if started.elapsed() > READY_TIMEOUT => {
                    return Err(ClusterError::Node {
                        node: node.name.clone(),
                        reason: format!(
                            "does not answer within {READY_TIMEOUT:?}, so its chaincode is not installed; see its log, then run `weft cluster up`"
                        ),
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        for chaincode in &self.plan.chaincode {
            let (bytes, _) = self.package(chaincode)?;
            client
                .install(bytes)
                .await
                .map_err(node_error(&node.name))?;
        }
        Ok(())
    }

    /// Reads the peer counts `scale` remembered again (another command may have changed them)
    /// and plans with them.
    pub fn reload(&mut self) -> Result<(), ClusterError> {
        let path = self.state_dir.join("cluster.json");
        if let Ok(bytes) = std::fs::read(&path) {
            let remembered: Remembered =
                serde_json::from_slice(&bytes).map_err(|e| state_error(&path)(e.to_string()))?;
            if remembered.peers != self.remembered.peers {
                self.remembered.peers = remembered.peers;
                self.replan();
            }
        }
        Ok(())
    }

    /// Every node's endpoints on this machine.
    pub fn endpoints(&self) -> Vec<NodeEndpoint> {
        self.plan
            .locations
            .iter()
            .flat_map(|l| {
                l.nodes.iter().map(|n| NodeEndpoint {
                    location: l.name.clone(),
                    node: n.name.clone(),
                    role: n.role,
                    grpc: n.grpc.host.clone().unwrap_or_else(|| n.grpc.listen.clone()),
                    operations: n
                        .operations
                        .host
                        .clone()
                        .unwrap_or_else(|| n.operations.listen.clone()),
                })
            })
            .collect()
    }

    /// Every planned node: its container's state, its health and its chain.
    pub async fn status(&self) -> Result<Vec<NodeStatus>, ClusterError> {
        let mut rows = Vec::new();
        for location in &self.plan.locations {
            if location.kind == LocationKind::Kubernetes {
                for node in &location.nodes {
                    rows.push(NodeStatus {
                        location: location.name.clone(),
                        node: node.name.clone(),
                        role: node.role,
                        container: "kubernetes".into(),
                        running: false,
                        health: Health::Down,
                        height: None,
                        view: None,
                        tip: None,
                    });
                }
                continue;
            }
            let states = match self.site(location, None).await {
                Ok(site) => site.states().await?,
                Err(ClusterError::Engine(_)) => Vec::new(),
                Err(e) => return Err(e),
            };
            for node in &location.nodes {
                let container = states.iter().find(|c| c.node == node.name);
                let health = match &node.operations.host {
                    Some(address) => health(address).await,
                    None => Health::Down,
                };
                let mut row = NodeStatus {
                    location: location.name.clone(),
                    node: node.name.clone(),
                    role: node.role,
                    container: container
                        .map(|c| c.state.clone())
                        .unwrap_or_else(|| "missing".into()),
                    running: container.is_some_and(|c| c.running),
                    health,
                    height: None,
                    view: None,
                    tip: None,
                };
                if health != Health::Down
                    && let Ok(client) = self.admin_client(node).await
                    && let Ok(status) = client.node_status().await
                {
                    row.height = Some(status.height);
                    row.view = (node.role == Role::Validator).then_some(status.view);
                    row.tip = Some(hex::encode(&status.current_hash));
                }
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// Sets the non-validating peers of `location` to `peers` and applies it.
    pub async fn scale(
        &mut self,
        location: &str,
        peers: usize,
        image: Option<&str>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<UpReport, ClusterError> {
        let Some(planned) = self.blueprint.location(location) else {
            let names: Vec<&str> = self
                .blueprint
                .locations
                .iter()
                .map(|l| l.name.as_str())
                .collect();
            return Err(ClusterError::Refused(format!(
                "no location {location:?} in the blueprint; it has: {}",
                names.join(", ")
            )));
        };
        let capacity = self.blueprint.peer_capacity(planned);
        if peers > capacity {
            return Err(ClusterError::Refused(format!(
                "location {location} has room for {capacity} non-validating peers (the blueprint's peers, or its autoscaler's max): raise the autoscaler's max to scale further"
            )));
        }
        if !self.network.exists() {
            return Err(ClusterError::Refused(
                "the cluster is not up: run `weft cluster up` first".into(),
            ));
        }
        self.remembered.peers.insert(location.to_string(), peers);
        self.replan();
        self.record(&format!("scale {location} to {peers} non-validating peers"));
        self.up(image, progress).await
    }

    /// Removes everything labelled with the blueprint on every engine it names, and the
    /// state directory (its keys belonged to the ledgers just removed).
    pub async fn down(&self, progress: &mut dyn FnMut(&str)) -> Result<(), ClusterError> {
        let mut engines_done = Vec::new();
        for location in &self.plan.locations {
            if location.kind == LocationKind::Kubernetes {
                let namespace = location.namespace.clone().unwrap_or_default();
                match crate::kubernetes::delete(&namespace, &self.plan.blueprint).await {
                    Ok(()) => progress(&format!(
                        "{}: deleted from namespace {namespace}",
                        location.name
                    )),
                    Err(e) => progress(&format!(
                        "{}: {e}; delete it with `kubectl delete -n {namespace} statefulset,service,configmap,secret,pvc -l weft.blueprint={}`",
                        location.name, self.plan.blueprint
                    )),
                }
                continue;
            }
            match self.site(location, None).await? {
                Site::Local(local) => {
                    for node in &location.nodes {
                        local.stop(&node.name);
                    }
                    local.remove_unplanned()?;
                    progress(&format!(
                        "{}: stopped {} nodes",
                        location.name,
                        location.nodes.len()
                    ));
                }
                Site::Docker { engine, .. } => {
                    if engines_done.contains(&location.endpoint) {
                        continue;
                    }
                    let (containers, networks, volumes) =
                        crate::docker::remove_blueprint(&engine.docker, &self.plan.blueprint)
                            .await?;
                    progress(&format!(
                        "{}: removed {containers} containers, {networks} networks, {volumes} volumes",
                        location.endpoint.as_deref().unwrap_or_default()
                    ));
                    engines_done.push(location.endpoint.clone());
                }
            }
        }
        if self.state_dir.exists() {
            std::fs::remove_dir_all(&self.state_dir)
                .map_err(|e| state_error(&self.state_dir)(e.to_string()))?;
            progress(&format!("removed {}", self.state_dir.display()));
        }
        Ok(())
    }
}

/// What `up` did.
#[derive(Debug, Default)]
pub struct UpReport {
    /// Each network and node, and what happened to it.
    pub changes: Vec<(String, Change)>,
    /// Nodes removed (scaled away).
    pub removed: Vec<String>,
    pub chaincode: Vec<(String, Change)>,
    pub endpoints: Vec<NodeEndpoint>,
}

impl UpReport {
    /// Whether the run changed anything.
    pub fn changed(&self) -> bool {
        !self.removed.is_empty()
            || self
                .changes
                .iter()
                .chain(&self.chaincode)
                .any(|(_, c)| !matches!(c, Change::Unchanged | Change::Applied))
    }
}

#[derive(Debug, Clone)]
pub struct NodeEndpoint {
    pub location: String,
    pub node: String,
    pub role: Role,
    pub grpc: String,
    pub operations: String,
}

#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub location: String,
    pub node: String,
    pub role: Role,
    /// The container's state (or the process's), or `missing`.
    pub container: String,
    pub running: bool,
    pub health: Health,
    pub height: Option<u64>,
    pub view: Option<u64>,
    /// The last block's hash, hex.
    pub tip: Option<String>,
}
