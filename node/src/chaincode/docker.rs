//! The Docker runtime: each chaincode runs in its own container, built `FROM scratch` from the
//! package's statically linked binary with the classic builder (nothing is pulled), and started
//! with no network at all, a read-only root filesystem, every capability dropped,
//! no-new-privileges, a non-root user and memory and pid limits. The container reaches its peer
//! only through the peer's chaincode socket, a unix socket in a directory of its own that is
//! mounted read-only into the container (ARCHITECTURE.md says why not an internal network).
//! Containers are labelled so that `weft chaincode gc` finds every one left behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::runtime::{
    ChaincodeRuntime, Exit, Instance, LaunchSpec, LogTail, RuntimeError, RuntimeKind,
};
use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures::StreamExt;

/// The labels on every container and image this runtime makes.
pub mod labels {
    /// The chaincode's name.
    pub const CHAINCODE: &str = "weft.chaincode";
    /// The chaincode's version.
    pub const VERSION: &str = "weft.version";
    /// The package hash the image was built from.
    pub const PACKAGE: &str = "weft.package";
    /// The peer (node id) that started the container.
    pub const PEER: &str = weft_orchestration::docker::LABEL_CHAINCODE_PEER;
    /// The ledger network (genesis chain id) the peer belongs to (`weft cluster down` removes
    /// by it too).
    pub const NETWORK: &str = weft_orchestration::docker::LABEL_CHAINCODE_NETWORK;
}

/// Where the peer's chaincode socket directory appears inside a chaincode container.
pub const CONTAINER_SOCKET_DIR: &str = "/run/weft";
/// The chaincode socket's file name, in the peer's socket directory.
pub const SOCKET_FILE: &str = "chaincode.sock";
/// The Dockerfile of every chaincode image: the same file `docker/build-images.sh` uses.
const DOCKERFILE: &str = include_str!("../../../docker/chaincode.Dockerfile");
/// The user chaincode runs as (nobody), whatever the image says.
const CHAINCODE_USER: &str = "65534:65534";
/// A line of chaincode output longer than this is cut into pieces of this size.
const MAX_LOG_LINE: usize = 16 * 1024;
/// Files (and sockets) a chaincode may hold open.
const OPEN_FILES: i64 = 1024;

/// Where the engine is and how much each chaincode container may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    /// `unix:///path/docker.sock` or `tcp://host:port`; unset means `DOCKER_HOST`, then the
    /// local socket.
    pub host: Option<String>,
    /// For tcp: a directory holding `ca.pem`, `cert.pem` and `key.pem` (as `DOCKER_CERT_PATH`
    /// does); unset means plain tcp.
    pub tls_dir: Option<PathBuf>,
    /// The memory limit of each chaincode container (swap included), in MiB.
    pub memory_mib: u64,
    /// The most processes and threads each chaincode container may run.
    pub pids_limit: i64,
    /// The peer's socket directory as the engine sees it: a host path, or the name of a volume
    /// when the peer itself runs in a container. Unset means the directory's own path.
    pub socket_source: Option<String>,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            host: None,
            tls_dir: None,
            memory_mib: 256,
            pids_limit: 256,
            socket_source: None,
        }
    }
}

impl DockerSettings {
    /// The endpoint to dial: the setting, `DOCKER_HOST`, or the local socket.
    pub fn endpoint(&self) -> String {
        self.host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
    }

    /// The TLS directory: the setting, or `DOCKER_CERT_PATH` when `DOCKER_TLS_VERIFY` is set
    /// (as the docker CLI reads them).
    pub fn tls_directory(&self) -> Option<PathBuf> {
        self.tls_dir.clone().or_else(|| {
            let verify =
                std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty() && v != "0");
            verify
                .then(|| std::env::var("DOCKER_CERT_PATH").ok())
                .flatten()
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
    }
}

fn unavailable(reason: String) -> RuntimeError {
    RuntimeError::Unavailable {
        runtime: RuntimeKind::Docker,
        reason,
    }
}

fn engine_refused(what: &str, reason: String) -> RuntimeError {
    RuntimeError::Engine {
        what: what.to_string(),
        reason,
    }
}

/// Connects to the engine, agrees on an API version (the engine may be older than this
/// client) and checks that it answers.
pub async fn connect(settings: &DockerSettings) -> Result<Docker, RuntimeError> {
    let endpoint = settings.endpoint();
    let tls = settings
        .tls_directory()
        .map(|dir| weft_orchestration::engine::EngineTls::in_directory(&dir));
    weft_orchestration::engine::connect(&endpoint, tls.as_ref())
        .await
        .map_err(|e| {
            let hint = if endpoint.starts_with("https://") && settings.tls_directory().is_none() {
                " (set chaincode.docker_tls_dir)"
            } else {
                ""
            };
            unavailable(format!("{e}{hint}"))
        })
}

/// Keeps the characters Docker allows in names; anything else becomes `-`.
fn docker_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// The image of a package: one per package hash, shared by every peer on the engine (the
/// chaincode's name is in the image's labels: not every valid name is a valid reference).
pub fn image_tag(package_hash: &str) -> String {
    format!("weft-chaincode:{package_hash}")
}

/// The build context of a chaincode image: the Dockerfile and the binary.
fn build_context(binary: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    weft_orchestration::engine::tar_of(&[
        ("Dockerfile", 0o644, 0, DOCKERFILE.as_bytes()),
        ("chaincode", 0o755, 0, binary),
    ])
}

pub struct DockerRuntime {
    docker: Docker,
    peer: String,
    network: String,
    settings: DockerSettings,
    /// The peer's socket directory on this machine.
    socket_dir: PathBuf,
}

impl DockerRuntime {
    /// A runtime for the peer `peer` of the network `network`, whose chaincode socket lives
    /// in `socket_dir`.
    pub fn new(
        docker: Docker,
        peer: &str,
        network: &str,
        socket_dir: &Path,
        settings: DockerSettings,
    ) -> DockerRuntime {
        DockerRuntime {
            docker,
            peer: peer.to_string(),
            network: network.to_string(),
            settings,
            socket_dir: socket_dir.to_path_buf(),
        }
    }

    /// Builds the package's image unless the engine has it already.
    async fn ensure_image(&self, spec: &LaunchSpec) -> Result<String, RuntimeError> {
        let tag = image_tag(&spec.package_hash);
        if self.docker.inspect_image(&tag).await.is_ok() {
            return Ok(tag);
        }
        let prepare = |reason: String| RuntimeError::Prepare {
            chaincode: spec.name.clone(),
            reason,
        };
        let context =
            build_context(&spec.binary).map_err(|e| prepare(format!("build context: {e}")))?;
        let image_labels = HashMap::from([
            (labels::CHAINCODE, spec.name.as_str()),
            (labels::VERSION, spec.version.as_str()),
            (labels::PACKAGE, spec.package_hash.as_str()),
        ]);
        let started = std::time::Instant::now();
        weft_orchestration::engine::build_image(&self.docker, &tag, context, &image_labels)
            .await
            .map_err(|e| prepare(e.to_string()))?;
        tracing::info!(chaincode = %spec.name, image = %tag, elapsed_ms = started.elapsed().as_millis() as u64, "chaincode image built");
        Ok(tag)
    }

    /// The labels of this peer's container of `name`.
    fn container_labels(&self, spec: &LaunchSpec) -> HashMap<String, String> {
        HashMap::from([
            (labels::CHAINCODE.to_string(), spec.name.clone()),
            (labels::VERSION.to_string(), spec.version.clone()),
            (labels::PACKAGE.to_string(), spec.package_hash.clone()),
            (labels::PEER.to_string(), self.peer.clone()),
            (labels::NETWORK.to_string(), self.network.clone()),
        ])
    }

    /// Removes this peer's containers on this network: of chaincode `name` only, or all.
    /// Returns how many it removed.
    async fn remove_own_containers(&self, name: Option<&str>) -> Result<usize, RuntimeError> {
        let mut wanted = vec![
            format!("{}={}", labels::PEER, self.peer),
            format!("{}={}", labels::NETWORK, self.network),
        ];
        wanted.push(match name {
            Some(name) => format!("{}={name}", labels::CHAINCODE),
            None => labels::CHAINCODE.to_string(),
        });
        let filters = HashMap::from([("label", wanted)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let leftovers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| unavailable(format!("listing containers: {e}")))?;
        let mut removed = 0;
        for container in leftovers {
            if let Some(id) = container.id {
                remove_container(&self.docker, &id).await;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes every container this peer left on this network (a kill -9, a launch abandoned
    /// at shutdown): called before the node starts serving.
    pub async fn sweep(&self) -> Result<(), RuntimeError> {
        let removed = self.remove_own_containers(None).await?;
        if removed > 0 {
            tracing::info!(removed, peer = %self.peer, "removed chaincode containers a previous run left behind");
        }
        Ok(())
    }

    fn socket_mount(&self) -> Mount {
        // The engine resolves nothing against this process's directory: give it the
        // directory's absolute path.
        let source = self.settings.socket_source.clone().unwrap_or_else(|| {
            std::fs::canonicalize(&self.socket_dir)
                .or_else(|_| std::path::absolute(&self.socket_dir))
                .unwrap_or_else(|_| self.socket_dir.clone())
                .display()
                .to_string()
        });
        // A path is bound; anything else names a volume the peer's own container mounts.
        let typ = if source.starts_with('/') {
            MountType::BIND
        } else {
            MountType::VOLUME
        };
        Mount {
            target: Some(CONTAINER_SOCKET_DIR.into()),
            source: Some(source),
            typ: Some(typ),
            read_only: Some(true),
            ..Default::default()
        }
    }

    fn host_config(&self) -> HostConfig {
        let memory =
            i64::try_from(self.settings.memory_mib.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
        HostConfig {
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(memory),
            // Equal to the memory limit: no swap on top of it.
            memory_swap: Some(memory),
            pids_limit: Some(self.settings.pids_limit),
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(OPEN_FILES),
                hard: Some(OPEN_FILES),
            }]),
            // The engine keeps at most 20 MB of a chaincode's output on disk.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "10m".to_string()),
                    ("max-file".to_string(), "2".to_string()),
                ])),
            }),
            mounts: Some(vec![self.socket_mount()]),
            ..Default::default()
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Removes a container, killing it first if it runs. A container already gone is fine.
async fn remove_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => {}
        Err(e) if weft_orchestration::docker::not_found(&e) => {}
        Err(e) => {
            tracing::warn!(container = %short(id), error = %e, "could not remove chaincode container")
        }
    }
}

#[async_trait]
impl ChaincodeRuntime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    async fn shutdown(&self) {
        match self.remove_own_containers(None).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(
                    removed,
                    "removed chaincode containers still there at shutdown"
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not sweep chaincode containers at shutdown")
            }
        }
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Instance>, RuntimeError> {
        if !weft_proto::package::is_static_elf(&spec.binary) {
            return Err(RuntimeError::Prepare {
                chaincode: spec.name.clone(),
                reason: "the package's binary is not a statically linked Linux executable, and a FROM scratch container cannot run anything else: build it with RUSTFLAGS=\"-C target-feature=+crt-static\" --target x86_64-unknown-linux-gnu and package it with `weft chaincode package`, or run this peer with chaincode.runtime = process".into(),
            });
        }
        let image = self.ensure_image(spec).await?;
        let removed = self.remove_own_containers(Some(&spec.name)).await?;
        if removed > 0 {
            tracing::info!(chaincode = %spec.name, removed, "removed containers left behind");
        }
        let start_error = |reason: String| RuntimeError::Start {
            chaincode: spec.name.clone(),
            reason,
        };
        let peer_address = format!("unix:{CONTAINER_SOCKET_DIR}/{SOCKET_FILE}");
        let env = spec
            .environment()
            .into_iter()
            .map(|(key, value)| {
                let value = if key == "WEFT_PEER_ADDRESS" {
                    peer_address.clone()
                } else {
                    value
                };
                format!("{key}={value}")
            })
            .collect();
        let mut suffix = [0u8; 4];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut suffix);
        let name = format!(
            "weft-{}-{}-{}-{}",
            docker_name(&self.network),
            docker_name(&self.peer),
            docker_name(&spec.name),
            hex::encode(suffix)
        );
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            env: Some(env),
            user: Some(CHAINCODE_USER.into()),
            labels: Some(self.container_labels(spec)),
            host_config: Some(self.host_config()),
            network_disabled: Some(true),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            // `weft chaincode gc` removed the image between the check above and this create
            // (it was unused then): build it again, once.
            Err(e) if weft_orchestration::docker::not_found(&e) => {
                tracing::info!(chaincode = %spec.name, image = %image, "the image went away before its container was created; building it again");
                self.ensure_image(spec).await?;
                self.docker.create_container(Some(options), body).await
            }
            created => created,
        }
        .map_err(|e| start_error(format!("creating container {name}: {e}")))?;
        let id = created.id;
        if let Err(e) = self.docker.start_container(&id, None).await {
            remove_container(&self.docker, &id).await;
            return Err(start_error(format!("starting container {name}: {e}")));
        }
        let tag = format!("{}:{}", spec.name, spec.version);
        let logs = LogTail::default();
        let forwarder = tokio::spawn(forward_logs(
            self.docker.clone(),
            id.clone(),
            tag.clone(),
            logs.clone(),
        ));
        let (exit_tx, exit) = Exit::channel();
        let docker = self.docker.clone();
        let watched = id.clone();
        let memory_mib = self.settings.memory_mib;
        tokio::spawn(async move {
            let mut wait = docker.wait_container(&watched, None);
            let waited = wait.next().await;
            // Read how it ended before anyone removes it.
            let text = describe_exit(&docker, &watched, waited, memory_mib).await;
            // The log stream ends with the container: let it deliver the last lines.
            let _ = tokio::time::timeout(Duration::from_secs(5), forwarder).await;
            tracing::info!(chaincode = %tag, container = %short(&watched), status = %text, "chaincode container ended");
            let _ = exit_tx.send(Some(text));
        });
        tracing::info!(chaincode = %spec.name, version = %spec.version, container = %short(&id), name = %name, image = %image, "chaincode container started");
        Ok(Box::new(DockerInstance {
            docker: self.docker.clone(),
            id,
            exit,
            logs,
        }))
    }
}

/// How a container ended, for logs and launch-failure reports.
async fn describe_exit(
    docker: &Docker,
    id: &str,
    waited: Option<Result<bollard::models::ContainerWaitResponse, bollard::errors::Error>>,
    memory_mib: u64,
) -> String {
    let code = match waited {
        Some(Ok(response)) => Some(response.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
        Some(Err(_)) | None => None,
    };
    let oom = docker
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|c| c.state)
        .and_then(|s| s.oom_killed)
        .unwrap_or(false);
    match (code, oom) {
        (_, true) => format!("killed: out of memory (limit {memory_mib} MiB)"),
        (Some(code), false) => format!("exit code {code}"),
        (None, false) => "removed".into(),
    }
}

/// Forwards a container's output to the peer's log, tagged with the chaincode id, and keeps
/// the last lines for failure reports.
async fn forward_logs(docker: Docker, id: String, tag: String, logs: LogTail) {
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = docker.logs(&id, Some(options));
    let mut partial = String::new();
    let emit = |line: String| {
        let line = line.trim_end().to_string();
        tracing::info!(target: "weft::chaincode", chaincode = %tag, "{line}");
        logs.push(line);
    };
    while let Some(Ok(output)) = stream.next().await {
        partial.push_str(&String::from_utf8_lossy(&output.into_bytes()));
        while let Some(end) = partial.find('\n') {
            emit(partial.drain(..=end).collect());
        }
        // Output without line breaks must not grow the peer's memory.
        while partial.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !partial.is_char_boundary(cut) {
                cut -= 1;
            }
            emit(partial.drain(..cut).collect());
        }
    }
    if !partial.trim().is_empty() {
        emit(partial);
    }
}

struct DockerInstance {
    docker: Docker,
    id: String,
    exit: Exit,
    logs: LogTail,
}

#[async_trait]
impl Instance for DockerInstance {
    fn id(&self) -> String {
        format!("container {}", short(&self.id))
    }

    fn recent_logs(&self) -> Vec<String> {
        self.logs.lines()
    }

    async fn exited(&self) -> String {
        self.exit.wait().await
    }

    /// Kills the container, lets the watcher record how it ended, then removes it.
    async fn stop(&self) {
        let _ = self.docker.kill_container(&self.id, None).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.exited()).await;
        remove_container(&self.docker, &self.id).await;
    }
}

/// What `gc` removed, and the unused images it had to keep.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    pub containers: usize,
    pub images: usize,
    /// Unused images the engine would not remove: another image, or a container started
    /// while gc ran, depends on them.
    pub images_in_use: usize,
}

/// Which chaincode containers `gc` removes: all, or those of one network and/or one peer.
#[derive(Debug, Default, Clone)]
pub struct GcScope {
    pub network: Option<String>,
    pub peer: Option<String>,
}

/// Removes the chaincode containers in `scope` (running ones too: a peer that still runs
/// starts its chaincode again on next use), then every chaincode image that no remaining
/// chaincode container uses.
pub async fn collect_garbage(docker: &Docker, scope: &GcScope) -> Result<Collected, RuntimeError> {
    // An error the engine answered is a refusal; any other (connection, timeout) means it
    // is not there to ask.
    let api = |what: &str, e: bollard::errors::Error| match e {
        bollard::errors::Error::DockerResponseServerError { .. } => {
            engine_refused(what, e.to_string())
        }
        e => unavailable(format!("{what}: {e}")),
    };
    let list = |wanted: Vec<String>| {
        let filters = HashMap::from([("label", wanted)]);
        docker.list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
    };
    let mut wanted = vec![labels::CHAINCODE.to_string()];
    if let Some(network) = &scope.network {
        wanted.push(format!("{}={network}", labels::NETWORK));
    }
    if let Some(peer) = &scope.peer {
        wanted.push(format!("{}={peer}", labels::PEER));
    }
    let containers = list(wanted)
        .await
        .map_err(|e| api("listing containers", e))?;
    let mut collected = Collected::default();
    for container in containers {
        if let Some(id) = container.id {
            remove_container(docker, &id).await;
            collected.containers += 1;
        }
    }
    let images = weft_orchestration::docker::remove_unused_images(docker, labels::CHAINCODE)
        .await
        .map_err(|e| engine_refused("removing unused chaincode images", e.to_string()))?;
    collected.images = images.removed;
    collected.images_in_use = images.in_use;
    Ok(collected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_only_what_docker_allows() {
        assert_eq!(docker_name("Asset Transfer/v2"), "asset-transfer-v2");
        assert_eq!(
            image_tag(&"ab".repeat(32)),
            format!("weft-chaincode:{}", "ab".repeat(32))
        );
    }

    #[test]
    fn the_build_context_holds_the_dockerfile_and_an_executable_binary() {
        let context = build_context(b"\x7fELF binary").expect("context");
        let mut archive = tar::Archive::new(context.as_slice());
        let mut entries: Vec<(String, u32, Vec<u8>)> = archive
            .entries()
            .expect("entries")
            .map(|entry| {
                let mut entry = entry.expect("entry");
                let path = entry.path().expect("path").display().to_string();
                let mode = entry.header().mode().expect("mode");
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read");
                (path, mode, bytes)
            })
            .collect();
        entries.sort();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, "Dockerfile");
        let dockerfile = String::from_utf8_lossy(&entries[0].2).to_string();
        assert!(dockerfile.contains("FROM scratch"), "{dockerfile}");
        assert!(!dockerfile.contains("# syntax="), "the classic builder");
        assert_eq!(
            entries[1],
            ("chaincode".into(), 0o755, b"\x7fELF binary".to_vec())
        );
    }

    #[test]
    fn containers_get_every_isolation_setting() {
        let docker =
            Docker::connect_with_http("tcp://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
                .expect("a client needs no engine until it is used");
        let runtime = DockerRuntime::new(
            docker,
            "validator0",
            "weft-test",
            Path::new("/var/lib/weft/run"),
            DockerSettings {
                memory_mib: 64,
                pids_limit: 32,
                ..DockerSettings::default()
            },
        );
        let host = runtime.host_config();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.memory_swap, Some(64 * 1024 * 1024));
        assert_eq!(host.pids_limit, Some(32));
        let mounts = host.mounts.expect("the socket mount");
        assert_eq!(
            mounts.len(),
            1,
            "only the socket directory, never the Docker socket"
        );
        assert_eq!(mounts[0].source.as_deref(), Some("/var/lib/weft/run"));
        assert_eq!(mounts[0].target.as_deref(), Some(CONTAINER_SOCKET_DIR));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
    }

    #[test]
    fn a_socket_source_that_is_not_a_path_is_a_volume() {
        let docker =
            Docker::connect_with_http("tcp://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
                .expect("client");
        let runtime = DockerRuntime::new(
            docker,
            "peer0",
            "net",
            Path::new("/var/lib/weft/run"),
            DockerSettings {
                socket_source: Some("weft-peer0-chaincode".into()),
                ..DockerSettings::default()
            },
        );
        let mount = runtime.socket_mount();
        assert_eq!(mount.typ, Some(MountType::VOLUME));
        assert_eq!(mount.source.as_deref(), Some("weft-peer0-chaincode"));
    }

    #[tokio::test]
    async fn a_missing_engine_is_unavailable_and_named() {
        let settings = DockerSettings {
            host: Some("unix:///nonexistent/docker.sock".into()),
            ..DockerSettings::default()
        };
        let Err(e) = connect(&settings).await else {
            panic!("no engine listens there");
        };
        assert!(matches!(e, RuntimeError::Unavailable { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/docker.sock"), "{e}");
    }
}
