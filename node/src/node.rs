//! Assembles a node: ledger, chaincode manager, executor, commit certificates, the gRPC services
//! and the operations port, and stops them in order. A validating peer (a validator identity
//! listed in genesis) also orders (solo or PBFT) and executes; a non-validating peer (a peer
//! identity) forwards transactions and follows the certified chain (`peer/`). A storage failure
//! while committing stops the node with a clear message; nothing half-written is served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use weft_proto::pb;
use weft_proto::{ConsensusKind, Genesis, Role, Signer};

use crate::admission::Admission;
use crate::admission_window::AdmissionWindow;
use crate::api::admin::AdminService;
use crate::api::client::ClientService;
use crate::api::operations;
use crate::certificates::{Certificates, OwnKey};
use crate::chaincode::docker::{self, DockerRuntime};
use crate::chaincode::external::ExternalRuntime;
use crate::chaincode::process::ProcessRuntime;
use crate::chaincode::runtime::{ChaincodeRuntime, RuntimeKind};
use crate::chaincode::session::{ChaincodeSupportService, Registrations};
use crate::chaincode::socket as chaincode_socket;
use crate::chaincode::{ChaincodeManager, ManagerConfig};
use crate::config::Config;
use crate::consensus::driver::{ConsensusStatus, Driver, DriverChannels};
use crate::consensus::journal::Journal;
use crate::consensus::pbft::{Replica, ReplicaId};
use crate::consensus::solo::{self, SoloConfig};
use crate::consensus::{CommitWork, Feedback, TICK, pbft_config};
use crate::execution::Executor;
use crate::ledger::Ledger;
use crate::mempool::Mempool;
use crate::metrics::Metrics;
use crate::network::peers::PeerLinks;
use crate::network::service::ConsensusService;
use crate::network::tls::ValidatorTls;
use crate::network::wire::Wire;
use crate::storage::{RocksStore, Store};
use crate::types::{Transaction, TxStatus};

/// Verified consensus messages each validator may have waiting for the replica
/// (`network::inbound`).
const INBOUND_PER_VALIDATOR: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Genesis(#[from] weft_proto::GenesisError),
    #[error("identity in {path}: {source}")]
    Identity {
        path: String,
        #[source]
        source: weft_proto::IdentityError,
    },
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error(transparent)]
    Store(#[from] crate::storage::StoreError),
    #[error("cannot listen on {address}: {reason} (is another node using this port?)")]
    Listen { address: SocketAddr, reason: String },
}

/// What a node does in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// Orders (solo or PBFT), executes and signs blocks.
    Validator,
    /// Forwards transactions to the validators and follows their certified blocks.
    Peer,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Validator => "validator",
            NodeRole::Peer => "peer",
        }
    }
}

/// What the services share.
pub struct Shared {
    pub node_id: String,
    pub role: NodeRole,
    pub genesis: Genesis,
    pub ledger: Arc<Ledger>,
    pub executor: Executor,
    pub admission: Arc<Admission>,
    /// The client API's way into `admission`: submissions arriving close together are
    /// checked in one signature batch.
    pub admission_window: AdmissionWindow,
    pub mempool: Mempool,
    pub metrics: Arc<Metrics>,
    pub submit: mpsc::Sender<Transaction>,
    pub certificates: Arc<Certificates>,
    /// The replica's view, primary and checkpoints (PBFT networks only).
    pub consensus: Option<watch::Receiver<ConsensusStatus>>,
    pub config: Config,
    pub ready: AtomicBool,
    pub healthy: AtomicBool,
}

/// A running node.
pub struct NodeHandle {
    pub grpc_address: SocketAddr,
    pub operations_address: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    failed: watch::Receiver<Option<String>>,
}

impl NodeHandle {
    /// Waits until the node fails; returns the reason.
    pub async fn failed(&mut self) -> String {
        loop {
            if let Some(reason) = self.failed.borrow().clone() {
                return reason;
            }
            if self.failed.changed().await.is_err() {
                return "the node stopped".into();
            }
        }
    }

    /// Stops serving, stops chaincode, and waits for the tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        self.shared.executor.chaincodes().stop_all().await;
        self.shared.executor.chaincodes().shutdown_runtime().await;
    }
}

/// The runtime the configuration asks for. `auto` takes Docker when an engine answers and
/// the process runtime otherwise, and logs which and why.
async fn choose_runtime(
    config: &Config,
    network: &str,
    registrations: &Arc<Registrations>,
) -> Result<Arc<dyn ChaincodeRuntime>, NodeError> {
    let work_dir = config.node.data_dir.join("chaincode");
    let settings = &config.chaincode.docker;
    let docker_runtime = |docker| async move {
        if let Some(source) = settings
            .socket_source
            .as_deref()
            .filter(|s| s.starts_with('/'))
        {
            chaincode_socket::check_alone(std::path::Path::new(source))
                .map_err(|e| NodeError::Setup(e.to_string()))?;
        }
        let runtime = DockerRuntime::new(
            docker,
            &config.node.id,
            network,
            &chaincode_socket::socket_dir(&config.node.data_dir),
            settings.clone(),
        );
        runtime
            .sweep()
            .await
            .map_err(|e| NodeError::Setup(e.to_string()))?;
        Ok::<Arc<dyn ChaincodeRuntime>, NodeError>(Arc::new(runtime))
    };
    match config.chaincode.runtime {
        RuntimeKind::Process => Ok(Arc::new(ProcessRuntime::new(work_dir))),
        RuntimeKind::Docker => match docker::connect(settings).await {
            Ok(docker) => {
                tracing::info!(runtime = "docker", endpoint = %settings.endpoint(), "chaincode runs in Docker containers");
                docker_runtime(docker).await
            }
            Err(e) => Err(NodeError::Setup(format!(
                "chaincode.runtime = docker, but {e}: start the engine, point chaincode.docker_host (or DOCKER_HOST) at one, or set chaincode.runtime = process"
            ))),
        },
        RuntimeKind::Auto => match docker::connect(settings).await {
            Ok(docker) => {
                tracing::info!(runtime = "docker", endpoint = %settings.endpoint(), "chaincode runtime chosen (auto): a Docker engine answers");
                docker_runtime(docker).await
            }
            Err(e) => {
                tracing::info!(runtime = "process", reason = %e, "chaincode runtime chosen (auto): no Docker engine answers, chaincode runs as processes");
                Ok(Arc::new(ProcessRuntime::new(work_dir)))
            }
        },
        RuntimeKind::External => {
            tracing::info!(runtime = "external", chaincode = ?config.chaincode.external, "the peer dials chaincode served as services");
            Ok(Arc::new(ExternalRuntime::new(
                config.chaincode.external.clone(),
                Arc::clone(registrations),
                &config.node.id,
            )))
        }
    }
}

/// The chaincode service (on the public port for process chaincode, on the chaincode socket
/// for containers).
fn chaincode_support(
    chaincodes: &ChaincodeManager,
    peer_id: &str,
) -> pb::chaincode_support_server::ChaincodeSupportServer<ChaincodeSupportService> {
    let limit = weft_proto::MAX_MESSAGE_BYTES;
    pb::chaincode_support_server::ChaincodeSupportServer::new(ChaincodeSupportService::new(
        chaincodes.registrations(),
        peer_id.to_string(),
    ))
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit)
}

/// Starts a validating node with RocksDB storage.
pub async fn start(config: Config) -> Result<NodeHandle, NodeError> {
    std::fs::create_dir_all(&config.node.data_dir).map_err(|e| {
        NodeError::Setup(format!(
            "cannot create data directory {}: {e}",
            config.node.data_dir.display()
        ))
    })?;
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&config.node.data_dir.join("ledger"))?);
    start_with_store(config, store).await
}

/// Starts a validating node over `store`.
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn Store>,
) -> Result<NodeHandle, NodeError> {
    let genesis = Genesis::load(&config.node.genesis)?;
    let signer = Signer::load(&config.node.identity).map_err(|source| NodeError::Identity {
        path: config.node.identity.display().to_string(),
        source,
    })?;
    let admission = Arc::new(Admission::new(&genesis));
    let me = admission
        .identity(&signer.identity().certificate)
        .map_err(|source| NodeError::Identity {
            path: config.node.identity.display().to_string(),
            source,
        })?;
    let role = match me.role {
        Role::Validator => NodeRole::Validator,
        Role::Peer => NodeRole::Peer,
        other => {
            return Err(NodeError::Setup(format!(
                "{} has the role {other}; a node runs with a validator identity (validating peer) or a peer identity (non-validating peer)",
                me.name
            )));
        }
    };
    let replica_index = genesis.validators.iter().position(|v| {
        v.id == config.node.id
            && weft_proto::identity::pem_to_der(&v.certificate).as_deref()
                == Some(signer.identity().certificate.as_slice())
    });
    let replica_index = match (role, replica_index) {
        (NodeRole::Validator, Some(index)) => index,
        (NodeRole::Validator, None) => {
            return Err(NodeError::Setup(format!(
                "genesis lists no validator {:?} with this node's certificate: check node.id and node.identity",
                config.node.id
            )));
        }
        (NodeRole::Peer, _) => 0,
    };
    let committee = weft_proto::Committee::from_genesis(&genesis)
        .map_err(|e| NodeError::Setup(format!("genesis validators: {e}")))?;

    let ledger = Arc::new(Ledger::open(store, &genesis)?);
    let listener = TcpListener::bind(config.node.listen)
        .await
        .map_err(|e| NodeError::Listen {
            address: config.node.listen,
            reason: e.to_string(),
        })?;
    let grpc_address = listener
        .local_addr()
        .map_err(|e| NodeError::Setup(e.to_string()))?;
    let ops_listener = TcpListener::bind(config.node.operations_listen)
        .await
        .map_err(|e| NodeError::Listen {
            address: config.node.operations_listen,
            reason: e.to_string(),
        })?;
    let operations_address = ops_listener
        .local_addr()
        .map_err(|e| NodeError::Setup(e.to_string()))?;

    let peer_address = config.chaincode.peer_address.clone().unwrap_or_else(|| {
        let ip = if grpc_address.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            grpc_address.ip().to_string()
        };
        format!("{ip}:{}", grpc_address.port())
    });
    let metrics = Arc::new(Metrics::default());
    let registrations = Arc::new(Registrations::new(metrics.chaincode_streams.clone()));
    let chaincodes = Arc::new(ChaincodeManager::new(
        choose_runtime(&config, &genesis.chain_id, &registrations).await?,
        ManagerConfig {
            packages_dir: config.node.data_dir.join("packages"),
            peer_address,
            launch_timeout: config.chaincode.launch_timeout,
            execute_timeout: config.chaincode.execute_timeout,
        },
        registrations,
    ));
    // Bound before anything that may launch chaincode runs.
    let chaincode_listener = if chaincodes.runtime_kind() == RuntimeKind::Docker {
        let socket_dir = chaincode_socket::socket_dir(&config.node.data_dir);
        Some(chaincode_socket::bind(&socket_dir).map_err(|e| NodeError::Setup(e.to_string()))?)
    } else {
        None
    };
    let executor = Executor::new(ledger.clone(), chaincodes.clone());
    let pbft = genesis.consensus.kind == ConsensusKind::Pbft && role == NodeRole::Validator;
    let replica_count = genesis.validators.len();
    let pbft_parameters = pbft_config(&genesis.consensus, replica_count, config.api.max_pending);
    let (status_tx, status_rx) = watch::channel(ConsensusStatus {
        replica: replica_index as u32,
        ..ConsensusStatus::default()
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (failed_tx, failed) = watch::channel(None);
    let failed_tx = Arc::new(failed_tx);
    let mut tasks = Vec::new();

    // The validator network (PBFT only): signing and verifying at the edge, and the links.
    let validator_network =
        if pbft {
            let me = ReplicaId(replica_index as u32);
            let mut identities = Vec::with_capacity(replica_count);
            for validator in &genesis.validators {
                let der =
                    weft_proto::identity::pem_to_der(&validator.certificate).ok_or_else(|| {
                        NodeError::Setup(format!(
                            "genesis validator {}: the certificate is not PEM",
                            validator.id
                        ))
                    })?;
                identities.push(admission.identity(&der).map_err(|source| {
                    NodeError::Identity {
                        path: format!("genesis validator {}", validator.id),
                        source,
                    }
                })?);
            }
            let wire = Arc::new(Wire::new(
                &genesis,
                me,
                signer.clone(),
                identities,
                admission.clone(),
            ));
            let tls = Arc::new(
                ValidatorTls::load(&config.node.identity, &genesis)
                    .map_err(|e| NodeError::Setup(e.to_string()))?,
            );
            let links = Arc::new(PeerLinks::start(
                &tls,
                replica_count,
                me,
                1024,
                shutdown_rx.clone(),
            ));
            Some((me, wire, links, tls))
        } else {
            None
        };
    let own_key = match (&validator_network, role) {
        (_, NodeRole::Peer) => None,
        (Some((_, wire, links, _)), NodeRole::Validator) => {
            let (wire, links) = (wire.clone(), links.clone());
            Some(OwnKey {
                index: replica_index as u32,
                signer: signer.clone(),
                broadcast: Box::new(move |vote| links.broadcast(&wire.block_vote(vote))),
                every: genesis.consensus.checkpoint_period,
            })
        }
        // Solo: the only validator's signature is the whole certificate.
        (None, NodeRole::Validator) => Some(OwnKey {
            index: replica_index as u32,
            signer: signer.clone(),
            broadcast: Box::new(|_| {}),
            every: 1,
        }),
    };
    let certificates = Arc::new(
        Certificates::new(committee, &genesis.chain_id, ledger.clone(), own_key)
            .map_err(|e| NodeError::Setup(format!("commit certificates: {e}")))?,
    );

    let (submit, submitted) = mpsc::channel::<Transaction>(config.api.max_pending);
    // The window bounds how many batches the replica hands out before they execute.
    let (ordered_tx, ordered) = mpsc::channel::<CommitWork>(pbft_parameters.window as usize + 16);
    let (feedback_tx, feedback_rx) =
        mpsc::channel::<Feedback>(pbft_parameters.window as usize + 16);
    let shared = Arc::new(Shared {
        node_id: config.node.id.clone(),
        role,
        genesis: genesis.clone(),
        ledger: ledger.clone(),
        executor: executor.clone(),
        admission_window: AdmissionWindow::start(
            admission.clone(),
            config.api.admission,
            metrics.clone(),
        ),
        admission,
        mempool: Mempool::new(config.api.max_pending),
        metrics,
        submit,
        certificates: certificates.clone(),
        consensus: pbft.then_some(status_rx),
        config: config.clone(),
        ready: AtomicBool::new(false),
        healthy: AtomicBool::new(true),
    });
    shared
        .metrics
        .height
        .store(ledger.tip().height, Ordering::Relaxed);
    let mut certified = certificates.subscribe();
    let certified_shared = shared.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let last = *certified.borrow_and_update();
            certified_shared
                .metrics
                .certified_height
                .store(last, Ordering::Relaxed);
            if certified.changed().await.is_err() {
                return;
            }
        }
    }));

    let mut consensus_service = None;
    match (role, validator_network) {
        (NodeRole::Peer, _) => {
            drop((status_tx, feedback_rx, ordered, ordered_tx, feedback_tx));
            tasks.push(tokio::spawn(crate::peer::forwarder::run(
                shared.clone(),
                submitted,
                shutdown_rx.clone(),
            )));
            let addresses = genesis
                .validators
                .iter()
                .map(|v| v.address.clone())
                .collect();
            let follower_shared = shared.clone();
            let follower_shutdown = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::peer::follower::run(
                    follower_shared.clone(),
                    addresses,
                    follower_shutdown,
                )
                .await
                {
                    let reason = format!("following the validators stopped: {e}; the node stops");
                    tracing::error!("{reason}");
                    follower_shared.healthy.store(false, Ordering::SeqCst);
                    let _ = failed_tx.send(Some(reason));
                }
            }));
        }
        (NodeRole::Validator, Some((me, wire, links, tls))) => {
            let (inbound_tx, inbound_rx) =
                crate::network::inbound::channel(wire.replica_count(), INBOUND_PER_VALIDATOR);
            consensus_service = Some((
                tls.clone(),
                ConsensusService::new(
                    wire.clone(),
                    tls.clone(),
                    inbound_tx,
                    certificates.clone(),
                    ledger.clone(),
                    shared.metrics.clone(),
                    shutdown_rx.clone(),
                ),
            ));
            let replica = Replica::new(pbft_parameters, me)
                .map_err(|e| NodeError::Setup(format!("PBFT parameters in genesis: {e}")))?;
            let driver = Driver {
                replica,
                wire: wire.clone(),
                links,
                journal: Journal::new(ledger.store().clone(), wire),
                tls,
                ledger: ledger.clone(),
                metrics: shared.metrics.clone(),
                status: status_tx,
                tick: TICK,
                evidence_dir: config.node.data_dir.join("evidence"),
                committee: certificates.committee().clone(),
                evidence_written: 0,
                relays: Default::default(),
                resubmits: Vec::new(),
                ordering: Default::default(),
            };
            let channels = DriverChannels {
                inbound: inbound_rx,
                requests: submitted,
                feedback_sender: feedback_tx.clone(),
                feedback: feedback_rx,
                commit: ordered_tx,
                shutdown: shutdown_rx.clone(),
            };
            let driver_failed = failed_tx.clone();
            let driver_shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = driver.run(channels).await {
                    let reason = format!("consensus stopped: {e}");
                    tracing::error!(node = %driver_shared.node_id, "{reason}");
                    driver_shared.healthy.store(false, Ordering::SeqCst);
                    let _ = driver_failed.send(Some(reason));
                }
            }));
            tasks.push(tokio::spawn(commit_loop(
                shared.clone(),
                ordered,
                failed_tx,
                Some(feedback_tx),
            )));
        }
        (NodeRole::Validator, None) => {
            drop((status_tx, feedback_rx));
            tasks.push(tokio::spawn(solo::run(
                SoloConfig {
                    batch_size: genesis.consensus.batch_size,
                    batch_timeout: genesis.consensus.batch_timeout,
                },
                ledger.tip().height,
                submitted,
                ordered_tx,
            )));
            tasks.push(tokio::spawn(commit_loop(
                shared.clone(),
                ordered,
                failed_tx,
                None,
            )));
        }
    }

    let limit = weft_proto::MAX_MESSAGE_BYTES;
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            pb::client_server::ClientServer::new(ClientService::new(shared.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            pb::admin_server::AdminServer::new(AdminService::new(shared.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(chaincode_support(&chaincodes, &config.node.id));
    // Chaincode containers have no network: they reach this peer through its chaincode
    // socket, which serves the chaincode service and nothing else.
    if let Some(listener) = chaincode_listener {
        let router = tonic::transport::Server::builder()
            .add_service(chaincode_support(&chaincodes, &config.node.id));
        let mut socket_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let stop = async move {
                let _ = socket_shutdown.wait_for(|s| *s).await;
            };
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::error!(error = %e, "the chaincode socket failed");
            }
        }));
    }
    let mut grpc_shutdown = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        // Accepted connections do not inherit the builder's tcp_nodelay: without it, Nagle
        // holds small replies (a batch to a chaincode, a commit answer) for a delayed ACK.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let stop = async move {
            let _ = grpc_shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
            tracing::error!(error = %e, "gRPC server failed");
        }
    }));
    if let Some((tls, service)) = consensus_service {
        let own = &genesis.validators[replica_index];
        let port = own
            .consensus_address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .ok_or_else(|| {
                NodeError::Setup(format!(
                    "genesis validator {}: consensus_address {:?} has no port",
                    own.id, own.consensus_address
                ))
            })?;
        let address = SocketAddr::new(config.node.listen.ip(), port);
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| NodeError::Listen {
                address,
                reason: e.to_string(),
            })?;
        let router = tonic::transport::Server::builder()
            .tls_config(tls.server_config())
            .map_err(|e| NodeError::Setup(format!("mutual TLS for the validators: {e}")))?
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(crate::network::tls::KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(crate::network::tls::KEEPALIVE_TIMEOUT))
            .add_service(
                pb::consensus_server::ConsensusServer::new(service)
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            );
        let mut consensus_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            // Accepted connections do not inherit the builder's tcp_nodelay: without it, Nagle
            // holds small replies (a batch to a chaincode, a commit answer) for a delayed ACK.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let stop = async move {
                let _ = consensus_shutdown.wait_for(|s| *s).await;
            };
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::error!(error = %e, "the validator (mutual TLS) endpoint failed");
            }
        }));
    }
    tasks.push(tokio::spawn(operations::serve(
        ops_listener,
        shared.clone(),
        shutdown_rx,
    )));

    // Start deployed chaincode now rather than on the first transaction.
    let warm = executor.clone();
    let warm_shared = shared.clone();
    tasks.push(tokio::spawn(async move {
        for definition in warm.all_deployed() {
            if let Err(e) = warm.chaincodes().ensure_running(&definition).await {
                tracing::warn!(chaincode = %definition.name, error = %e, "could not start deployed chaincode; it will be retried on use");
            }
        }
        warm_shared.ready.store(true, Ordering::SeqCst);
    }));

    tracing::info!(node = %config.node.id, grpc = %grpc_address, operations = %operations_address, height = ledger.tip().height, "node started");
    Ok(NodeHandle {
        grpc_address,
        operations_address,
        shared,
        shutdown,
        tasks,
        failed,
    })
}

async fn commit_loop(
    shared: Arc<Shared>,
    mut work: mpsc::Receiver<CommitWork>,
    failed: Arc<watch::Sender<Option<String>>>,
    feedback: Option<mpsc::Sender<Feedback>>,
) {
    let fail = |reason: String| {
        tracing::error!("{reason}");
        shared.healthy.store(false, Ordering::SeqCst);
        let _ = failed.send(Some(reason));
    };
    while let Some(item) = work.recv().await {
        match item {
            CommitWork::Execute(batch) => {
                let sequence = batch.sequence;
                let started = Instant::now();
                shared
                    .metrics
                    .execution_queue
                    .observe(started.saturating_duration_since(batch.ordered_at));
                let ids: Vec<_> = batch.transactions.iter().map(|t| t.id()).collect();
                match shared
                    .executor
                    .execute_block(sequence, batch.transactions)
                    .await
                {
                    Ok(block) => {
                        shared.metrics.block_execution.observe(started.elapsed());
                        // Wake waiters first: `dropped` forgets the rest (already committed).
                        record_block(&shared, &block);
                        shared.mempool.dropped(ids);
                        if let Err(e) = shared.certificates.executed(&block) {
                            tracing::warn!(block = block.number(), error = %e, "cannot sign or certify the block; the next certificate covers it");
                        }
                        if let Some(feedback) = &feedback {
                            if block.number() != sequence {
                                return fail(format!(
                                    "sequence {sequence} became block {}: the chain and the consensus log disagree; the node stops",
                                    block.number()
                                ));
                            }
                            let _ = feedback
                                .send(Feedback::Executed {
                                    sequence,
                                    digest: block.hash(),
                                })
                                .await;
                        }
                    }
                    Err(e) => {
                        return fail(format!(
                            "cannot commit block for sequence {sequence}: {e}; the node stops so nothing half-written is served"
                        ));
                    }
                }
            }
            CommitWork::ApplyFetched {
                sequence,
                blocks,
                certificate,
                applied,
            } => {
                let mut outcome = Ok(());
                for block in blocks {
                    let number = block.number();
                    match apply_fetched(&shared, block) {
                        Ok(block) => {
                            if let Err(e) = shared.certificates.appended(&block) {
                                tracing::warn!(block = block.number(), error = %e, "cannot certify a transferred block");
                            }
                        }
                        Err(crate::ledger::LedgerError::Store(e)) => {
                            let _ = applied.send(Err(format!("cannot store block {number}: {e}")));
                            return fail(format!(
                                "cannot store a block fetched by state transfer: {e}; the node stops"
                            ));
                        }
                        Err(e) => {
                            tracing::warn!(block = number, transfer_to = sequence, error = %e, "a fetched block does not fit the chain; the transfer stops");
                            outcome = Err(format!("fetched block {number} does not fit: {e}"));
                            break;
                        }
                    }
                }
                if outcome.is_ok()
                    && let Some(certificate) = &certificate
                    && let Err(e) = shared.certificates.keep_checked(certificate)
                {
                    tracing::warn!(block = certificate.number, error = %e, "cannot keep the commit certificate of a transferred block");
                }
                let _ = applied.send(outcome);
            }
            CommitWork::TransferEnd { sequence, digest } => {
                let tip = shared.ledger.tip();
                let report = if tip.height == sequence + 1 && tip.hash == digest {
                    tracing::info!(sequence, "state transfer complete");
                    Feedback::Transferred { sequence, digest }
                } else {
                    Feedback::TransferFailed {
                        sequence,
                        reason: format!(
                            "after the transfer the chain ends at block {} with hash {}, not at block {sequence} with hash {digest}",
                            tip.height.saturating_sub(1),
                            tip.hash
                        ),
                    }
                };
                if let Some(feedback) = &feedback {
                    let _ = feedback.send(report).await;
                }
            }
        }
    }
}

/// Appends a block another peer executed (state transfer, following), after the ledger's
/// checks; tells chaincode whose namespace it wrote that its read cache is stale, and wakes
/// waiters.
pub(crate) fn apply_fetched(
    shared: &Shared,
    block: crate::types::Block,
) -> Result<Arc<crate::types::Block>, crate::ledger::LedgerError> {
    let block = shared.ledger.append_block(block)?;
    let written: std::collections::BTreeSet<&str> = block
        .results
        .iter()
        .flat_map(|r| r.writes.iter().map(|w| w.chaincode.as_str()))
        .collect();
    for namespace in written {
        shared.executor.chaincodes().bump_epoch(namespace);
    }
    record_block(shared, &block);
    Ok(block)
}

/// Wakes waiters and updates metrics for a block just appended.
fn record_block(shared: &Shared, block: &crate::types::Block) {
    let latencies = shared.mempool.committed(block);
    let m = &shared.metrics;
    for latency in latencies {
        m.commit_latency.observe(latency);
    }
    let valid = block
        .results
        .iter()
        .filter(|r| r.status == TxStatus::Valid)
        .count() as u64;
    let failed_count = block.results.len() as u64 - valid;
    let chaincode_failures = block
        .results
        .iter()
        .filter(|r| {
            matches!(
                r.status,
                TxStatus::ChaincodeError | TxStatus::ChaincodeCrashed | TxStatus::ExecutionTimeout
            )
        })
        .count() as u64;
    m.committed_valid.fetch_add(valid, Ordering::Relaxed);
    m.committed_failed
        .fetch_add(failed_count, Ordering::Relaxed);
    m.chaincode_executions
        .fetch_add(block.results.len() as u64, Ordering::Relaxed);
    m.chaincode_errors
        .fetch_add(chaincode_failures, Ordering::Relaxed);
    m.height.store(block.number() + 1, Ordering::Relaxed);
    m.pending
        .store(shared.mempool.len() as u64, Ordering::Relaxed);
    tracing::debug!(
        block = block.number(),
        transactions = block.transactions.len(),
        valid,
        "block committed"
    );
}
