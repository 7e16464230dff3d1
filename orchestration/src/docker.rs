//! A docker location applied through its engine (bollard): the location's network and the
//! links network, a data volume and a chaincode-socket volume per node, and a container per
//! node from the peer image. Every resource carries `weft.blueprint` and `weft.location`;
//! containers also carry the node's name and role and a hash of their specification, so a
//! second `up` recognises what it made and leaves it alone.
//!
//! A peer's container runs as uid 65534 with a read-only root, no capabilities and
//! no-new-privileges; its one volume holds its configuration (uploaded before it starts) and
//! its ledger; the engine's socket is mounted into it alone, for the chaincode containers it
//! starts. Its gRPC and operations ports are published on the engine host's loopback.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, EndpointSettings, HostConfig,
    HostConfigLogConfig, Mount, MountType, NetworkConnectRequest, NetworkCreateRequest,
    PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    RemoveVolumeOptionsBuilder, UploadToContainerOptionsBuilder,
};
use sha2::{Digest, Sha256};

use crate::blueprint::EngineTls;
use crate::engine::{self, EngineError, tar_of};
use crate::image::PEER_UID;
use crate::plan::{
    CONTAINER_DATA_DIR, CONTAINER_ENGINE_SOCKET, CONTAINER_GRPC, CONTAINER_OPERATIONS,
    CONTAINER_VOLUME_DIR, LABEL_BLUEPRINT, LABEL_LOCATION, LocationPlan, NodePlan,
};

/// The node a container runs.
pub const LABEL_NODE: &str = "weft.node";
/// Its role (validator or peer).
pub const LABEL_ROLE: &str = "weft.role";
/// A hash of what the container was created from.
pub const LABEL_SPEC: &str = "weft.spec";
/// The label on the chaincode containers a peer starts: its network (chain id), which is the
/// blueprint's name for a network `up` made.
pub const LABEL_CHAINCODE_NETWORK: &str = "weft.network";
/// The label on the chaincode containers a peer starts: the peer's node id.
pub const LABEL_CHAINCODE_PEER: &str = "weft.peer";
/// Where the node's configuration goes inside its volume.
pub const CONTAINER_CONFIG_DIR: &str = "/var/lib/weft/config";

/// What applying one resource did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    /// It existed, stopped, and was started.
    Started,
    /// It existed with another specification and was made again (volumes kept).
    Replaced,
    Unchanged,
    /// Handed to another system that converges it (Kubernetes server-side apply).
    Applied,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Started => "started",
            Change::Replaced => "replaced",
            Change::Unchanged => "unchanged",
            Change::Applied => "applied",
        }
    }
}

/// The files a node starts from, written into its volume before its first start.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub genesis: Vec<u8>,
    pub certificate: Vec<u8>,
    pub key: Vec<u8>,
}

/// A container of the blueprint as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContainer {
    pub id: String,
    pub name: String,
    pub node: String,
    pub location: String,
    pub running: bool,
    /// `running`, `exited`, `created`, ...
    pub state: String,
}

fn failed(what: String) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    move |e| EngineError(format!("{what}: {e}"))
}

/// The engine refused because something depends on the object (409 Conflict).
pub fn conflict(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

/// The engine has no such object (404).
pub fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// One docker location's engine and plan.
pub struct DockerLocation {
    pub docker: Docker,
    pub blueprint: String,
    pub location: LocationPlan,
    pub links_network: String,
}

impl DockerLocation {
    pub async fn connect(
        blueprint: &str,
        location: &LocationPlan,
        links_network: &str,
        tls: Option<&EngineTls>,
    ) -> Result<DockerLocation, EngineError> {
        let endpoint = location
            .endpoint
            .as_deref()
            .unwrap_or(crate::blueprint::DEFAULT_ENGINE);
        let docker = engine::connect(endpoint, tls).await.map_err(|e| {
            EngineError(format!(
                "location {}: {e} (is the engine running, and the blueprint's endpoint right?)",
                location.name
            ))
        })?;
        Ok(DockerLocation {
            docker,
            blueprint: blueprint.to_string(),
            location: location.clone(),
            links_network: links_network.to_string(),
        })
    }

    fn labels(&self) -> HashMap<String, String> {
        self.location
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn blueprint_filter(&self) -> Vec<String> {
        vec![
            format!("{LABEL_BLUEPRINT}={}", self.blueprint),
            format!("{LABEL_LOCATION}={}", self.location.name),
        ]
    }

    /// The location's own network and the links network, made if missing.
    pub async fn ensure_networks(&self) -> Result<Vec<(String, Change)>, EngineError> {
        let own = self.location.network.clone().unwrap_or_default();
        let mut changes = Vec::new();
        for (name, labels) in [
            (own, self.labels()),
            (
                self.links_network.clone(),
                HashMap::from([(LABEL_BLUEPRINT.to_string(), self.blueprint.clone())]),
            ),
        ] {
            if let Ok(network) = self.docker.inspect_network(&name, None).await {
                self.check_ours(
                    &format!("network {name}"),
                    &network.labels.unwrap_or_default(),
                )?;
                changes.push((name, Change::Unchanged));
                continue;
            }
            let request = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels),
                ..Default::default()
            };
            match self.docker.create_network(request).await {
                Ok(_) => changes.push((name, Change::Created)),
                // Another location on the same engine made the links network first.
                Err(e) if self.docker.inspect_network(&name, None).await.is_ok() => {
                    tracing::debug!(network = %name, error = %e, "network made meanwhile");
                    changes.push((name, Change::Unchanged));
                }
                Err(e) => return Err(EngineError(format!("creating network {name}: {e}"))),
            }
        }
        Ok(changes)
    }

    /// Refuses a resource with the planned name that another blueprint made (or no
    /// blueprint): `up` never takes over or removes what is not its own.
    fn check_ours(&self, what: &str, labels: &HashMap<String, String>) -> Result<(), EngineError> {
        match labels.get(LABEL_BLUEPRINT) {
            Some(owner) if *owner == self.blueprint => Ok(()),
            owner => Err(EngineError(format!(
                "{what} exists but belongs to {}: rename the blueprint or remove it",
                owner
                    .map(|o| format!("blueprint {o}"))
                    .unwrap_or_else(|| "no blueprint".into())
            ))),
        }
    }

    async fn ensure_volume(&self, name: &str) -> Result<(), EngineError> {
        if let Ok(volume) = self.docker.inspect_volume(name).await {
            return self.check_ours(&format!("volume {name}"), &volume.labels);
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(self.labels()),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(failed(format!("creating volume {name}")))
    }

    /// What the container of `node` is created from.
    fn container_body(
        &self,
        node: &NodePlan,
        image: &str,
        socket_group: u32,
    ) -> ContainerCreateBody {
        let [data, run] = [&node.volumes[0], &node.volumes[1]];
        let mut ports = HashMap::new();
        for (endpoint, port) in [
            (&node.grpc, CONTAINER_GRPC),
            (&node.operations, CONTAINER_OPERATIONS),
        ] {
            if let Some((_, host_port)) = endpoint.host.as_deref().and_then(|h| h.rsplit_once(':'))
            {
                ports.insert(
                    format!("{port}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(host_port.to_string()),
                    }]),
                );
            }
        }
        let mount = |source: &str, target: &str, typ: MountType| Mount {
            source: Some(source.to_string()),
            target: Some(target.to_string()),
            typ: Some(typ),
            ..Default::default()
        };
        let engine_socket = self
            .location
            .endpoint
            .as_deref()
            .and_then(|e| e.strip_prefix("unix://"))
            .unwrap_or(CONTAINER_ENGINE_SOCKET);
        let mut labels = self.labels();
        labels.insert(LABEL_NODE.into(), node.name.clone());
        labels.insert(LABEL_ROLE.into(), node.role.as_str().into());
        let environment: BTreeMap<&str, String> = node
            .environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec![
                "node".into(),
                "start".into(),
                "--config".into(),
                format!("{CONTAINER_CONFIG_DIR}/node.toml"),
            ]),
            env: Some(
                environment
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            user: Some(format!("{PEER_UID}:{PEER_UID}")),
            labels: Some(labels),
            exposed_ports: Some({
                let mut exposed: Vec<String> = ports.keys().cloned().collect();
                exposed.sort();
                exposed
            }),
            host_config: Some(HostConfig {
                network_mode: self.location.network.clone(),
                port_bindings: Some(ports),
                mounts: Some(vec![
                    mount(data, CONTAINER_VOLUME_DIR, MountType::VOLUME),
                    mount(run, &format!("{CONTAINER_DATA_DIR}/run"), MountType::VOLUME),
                    mount(engine_socket, CONTAINER_ENGINE_SOCKET, MountType::BIND),
                ]),
                group_add: Some(vec![socket_group.to_string()]),
                readonly_rootfs: Some(true),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([
                        ("max-size".to_string(), "10m".to_string()),
                        ("max-file".to_string(), "3".to_string()),
                    ])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Makes `node`'s container match the plan: created (volumes, configuration, links
    /// network) and started if missing, started if stopped, made again if its specification
    /// changed. The ledger volume is kept in every case.
    pub async fn ensure_node(
        &self,
        node: &NodePlan,
        image: &str,
        socket_group: u32,
        files: &NodeFiles,
    ) -> Result<Change, EngineError> {
        let name = node.container.clone().unwrap_or_default();
        let mut body = self.container_body(node, image, socket_group);
        // Through a JSON value, whose maps are ordered: the body's own maps are hash maps. The
        // files uploaded into the volume count too: new keys or genesis make a new container.
        let canonical = serde_json::to_value(&body)
            .map(|value| value.to_string())
            .unwrap_or_default();
        let mut digest = Sha256::new();
        for part in [
            canonical.as_bytes(),
            &files.genesis,
            &files.certificate,
            &files.key,
        ] {
            digest.update(Sha256::digest(part));
        }
        let spec = hex::encode(digest.finalize());
        if let Some(labels) = body.labels.as_mut() {
            labels.insert(LABEL_SPEC.into(), spec[..16].to_string());
        }
        let replaced = match self.docker.inspect_container(&name, None).await {
            Ok(existing) => {
                let labels = existing
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.clone())
                    .unwrap_or_default();
                self.check_ours(&format!("container {name}"), &labels)?;
                let same = labels.get(LABEL_SPEC).is_some_and(|s| *s == spec[..16]);
                let state = existing.state.as_ref();
                let running = state.and_then(|s| s.running).unwrap_or(false);
                // Created but never started: an earlier `up` stopped half-way (before its
                // configuration or its links network); make it again.
                let half_made = state
                    .and_then(|s| s.status)
                    .is_some_and(|s| s == ContainerStateStatusEnum::CREATED);
                if same && running {
                    return Ok(Change::Unchanged);
                }
                if same && !half_made {
                    self.start(&name).await?;
                    return Ok(Change::Started);
                }
                self.remove_container(&name).await?;
                true
            }
            Err(e) if not_found(&e) => false,
            Err(e) => return Err(EngineError(format!("inspecting container {name}: {e}"))),
        };
        for volume in &node.volumes {
            self.ensure_volume(volume).await?;
        }
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(failed(format!("creating container {name} from {image}")))?;
        self.upload_files(&name, node, files).await?;
        self.docker
            .connect_network(
                &self.links_network,
                NetworkConnectRequest {
                    container: name.clone(),
                    endpoint_config: Some(EndpointSettings::default()),
                },
            )
            .await
            .map_err(failed(format!(
                "connecting {name} to {}",
                self.links_network
            )))?;
        self.start(&name).await?;
        Ok(if replaced {
            Change::Replaced
        } else {
            Change::Created
        })
    }

    /// Writes the node's configuration into its volume (the container's root is read-only).
    async fn upload_files(
        &self,
        container: &str,
        node: &NodePlan,
        files: &NodeFiles,
    ) -> Result<(), EngineError> {
        let config = crate::plan::node_config(
            &node.name,
            CONTAINER_DATA_DIR,
            &format!("{CONTAINER_CONFIG_DIR}/genesis.json"),
            &format!("{CONTAINER_CONFIG_DIR}/identity"),
            None,
        );
        let tar = tar_of(&[
            ("config/", 0o755, PEER_UID, &[]),
            ("config/node.toml", 0o644, PEER_UID, config.as_bytes()),
            ("config/genesis.json", 0o644, PEER_UID, &files.genesis),
            ("config/identity/", 0o755, PEER_UID, &[]),
            (
                "config/identity/cert.pem",
                0o644,
                PEER_UID,
                &files.certificate,
            ),
            ("config/identity/key.pem", 0o600, PEER_UID, &files.key),
        ])
        .map_err(|e| EngineError(format!("configuration archive: {e}")))?;
        let options = UploadToContainerOptionsBuilder::default()
            .path(CONTAINER_VOLUME_DIR)
            .build();
        self.docker
            .upload_to_container(container, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(failed(format!(
                "writing the configuration into {container}"
            )))
    }

    pub async fn start(&self, container: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(container, None)
            .await
            .map_err(failed(format!("starting {container}")))
    }

    /// Kills a container at once (SIGKILL), as a crash would.
    pub async fn kill(&self, container: &str) -> Result<(), EngineError> {
        let options = KillContainerOptionsBuilder::default()
            .signal("KILL")
            .build();
        self.docker
            .kill_container(container, Some(options))
            .await
            .map_err(failed(format!("killing {container}")))
    }

    /// Removes a container (its volumes stay).
    pub async fn remove_container(&self, container: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(container, Some(options)).await {
            Err(e) if !not_found(&e) => Err(EngineError(format!("removing {container}: {e}"))),
            _ => Ok(()),
        }
    }

    /// Removes a node's container, the chaincode containers it started (they hold its socket
    /// volume) and its volumes: what is left is made afresh.
    pub async fn remove_node(&self, node: &NodePlan) -> Result<(), EngineError> {
        if let Some(container) = &node.container {
            self.remove_container(container).await?;
        }
        self.remove_chaincode_of(&node.name).await?;
        for volume in &node.volumes {
            self.remove_volume(volume).await?;
        }
        Ok(())
    }

    /// Removes the chaincode containers node `node` started.
    async fn remove_chaincode_of(&self, node: &str) -> Result<(), EngineError> {
        let listed = containers_labelled(
            &self.docker,
            vec![
                format!("{LABEL_CHAINCODE_NETWORK}={}", self.blueprint),
                format!("{LABEL_CHAINCODE_PEER}={node}"),
            ],
        )
        .await?;
        for container in listed {
            self.remove_container(&container.id.unwrap_or_default())
                .await?;
        }
        Ok(())
    }

    async fn remove_volume(&self, volume: &str) -> Result<(), EngineError> {
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        match self.docker.remove_volume(volume, Some(options)).await {
            Err(e) if !not_found(&e) => Err(EngineError(format!("removing volume {volume}: {e}"))),
            _ => Ok(()),
        }
    }

    /// This location's containers, by the labels `up` gave them.
    pub async fn containers(&self) -> Result<Vec<NodeContainer>, EngineError> {
        let listed = containers_labelled(&self.docker, self.blueprint_filter()).await?;
        Ok(listed
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                let state = c
                    .state
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into());
                NodeContainer {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.first().cloned())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    node: labels.get(LABEL_NODE).cloned().unwrap_or_default(),
                    location: labels.get(LABEL_LOCATION).cloned().unwrap_or_default(),
                    running: state == "running",
                    state,
                }
            })
            .collect())
    }

    /// The last `lines` lines a container wrote (stdout and stderr).
    pub async fn logs(&self, container: &str, lines: usize) -> String {
        use futures::StreamExt;
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(container, Some(options));
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&chunk.to_string());
        }
        text
    }

    /// Removes this location's containers that the plan no longer names (a scale down), with
    /// their volumes. Returns their node names.
    pub async fn remove_unplanned(&self) -> Result<Vec<String>, EngineError> {
        let mut removed = Vec::new();
        for container in self.containers().await? {
            if self.location.nodes.iter().any(|n| n.name == container.node) {
                continue;
            }
            self.remove_container(&container.id).await?;
            self.remove_chaincode_of(&container.node).await?;
            let planned = format!("weft-{}-{}", self.blueprint, container.node);
            for suffix in ["data", "run"] {
                self.remove_volume(&format!("{planned}-{suffix}")).await?;
            }
            removed.push(container.node);
        }
        Ok(removed)
    }
}

/// The containers (running or not) carrying every one of `labels` (`key=value`).
async fn containers_labelled(
    docker: &Docker,
    labels: Vec<String>,
) -> Result<Vec<bollard::models::ContainerSummary>, EngineError> {
    let what = format!("listing the containers labelled {}", labels.join(","));
    let filters = HashMap::from([("label", labels)]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .map_err(failed(what))
}

/// Everything on `docker` labelled with `blueprint`: containers (with the chaincode
/// containers its peers started, which hold its socket volumes), then networks, then volumes.
/// Returns how many of each it removed.
pub async fn remove_blueprint(
    docker: &Docker,
    blueprint: &str,
) -> Result<(usize, usize, usize), EngineError> {
    let label = HashMap::from([("label", vec![format!("{LABEL_BLUEPRINT}={blueprint}")])]);
    let mut containers = Vec::new();
    for wanted in [
        format!("{LABEL_BLUEPRINT}={blueprint}"),
        format!("{LABEL_CHAINCODE_NETWORK}={blueprint}"),
    ] {
        containers.extend(containers_labelled(docker, vec![wanted]).await?);
    }
    for container in &containers {
        let id = container.id.clone().unwrap_or_default();
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        if let Err(e) = docker.remove_container(&id, Some(options)).await
            && !not_found(&e)
        {
            return Err(EngineError(format!("removing container {id}: {e}")));
        }
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&label)
                .build(),
        ))
        .await
        .map_err(failed("listing networks".into()))?;
    for network in &networks {
        let name = network.name.clone().unwrap_or_default();
        if let Err(e) = docker.remove_network(&name).await
            && !not_found(&e)
        {
            return Err(EngineError(format!("removing network {name}: {e}")));
        }
    }
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default().filters(&label).build(),
        ))
        .await
        .map_err(failed("listing volumes".into()))?
        .volumes
        .unwrap_or_default();
    for volume in &volumes {
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        if let Err(e) = docker.remove_volume(&volume.name, Some(options)).await
            && !not_found(&e)
        {
            return Err(EngineError(format!("removing volume {}: {e}", volume.name)));
        }
    }
    Ok((containers.len(), networks.len(), volumes.len()))
}

/// What [`remove_unused_images`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImageSweep {
    /// Images removed.
    pub removed: usize,
    /// Images the engine would not remove (409) because something depends on them: an image
    /// built on top of one, or a container started from one after the listing (removal is
    /// forced, which a stopped container does not stop). In use, so not garbage; a later
    /// sweep removes them once nothing depends on them.
    pub in_use: usize,
}

/// Removes the images carrying `label` that no container (running or not) uses. Lists only
/// top-level images: an intermediate image goes with the image built on it. An image that
/// another image still depends on is tried again after the rest are gone, and kept (counted
/// in [`ImageSweep::in_use`]) if it still cannot go.
pub async fn remove_unused_images(docker: &Docker, label: &str) -> Result<ImageSweep, EngineError> {
    let all = ListContainersOptionsBuilder::default().all(true).build();
    let in_use: std::collections::HashSet<String> = docker
        .list_containers(Some(all))
        .await
        .map_err(failed("listing containers".into()))?
        .into_iter()
        .filter_map(|c| c.image_id)
        .collect();
    let filters = HashMap::from([("label", vec![label.to_string()])]);
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(failed("listing images".into()))?;
    let mut pending: Vec<String> = images
        .into_iter()
        .map(|i| i.id)
        .filter(|id| !in_use.contains(id))
        .collect();
    let mut sweep = ImageSweep::default();
    // Each pass removes what nothing depends on; a parent whose children went in this pass
    // can go in the next. Stops when a pass removes nothing.
    loop {
        let mut kept = Vec::new();
        let before = sweep.removed;
        for id in pending {
            let options = RemoveImageOptionsBuilder::default().force(true).build();
            match docker.remove_image(&id, Some(options), None).await {
                Ok(_) => sweep.removed += 1,
                Err(e) if not_found(&e) => {}
                Err(e) if conflict(&e) => {
                    tracing::debug!(image = %id, error = %e, "image still in use; kept for now");
                    kept.push(id);
                }
                Err(e) => return Err(EngineError(format!("removing image {id}: {e}"))),
            }
        }
        pending = kept;
        if pending.is_empty() || sweep.removed == before {
            break;
        }
    }
    sweep.in_use = pending.len();
    Ok(sweep)
}
