//! Fault scenarios on four validators and two non-validating peers as `weft node start`
//! processes, each under steady load through validators and peers with every acknowledgement
//! recorded, and each ending with the auditor (I1-I5) over every validator and peer: a
//! baseline with no fault (and no view change); a backup killed for longer than a checkpoint
//! window catches up by state transfer; with two of four down nothing is acknowledged and the
//! pending transactions commit once one comes back; a backup paused for more than two windows
//! levels again; forged, replayed and garbage consensus messages and bad client transactions
//! are refused and counted without any view change; and one transaction submitted 1,000 times
//! over all validators and peers commits exactly once.
//!
//! Set `WEFT_TEST_KEEP_TMP=1` to keep each cluster's directory (validator logs included) for
//! a post-mortem; `RUST_LOG` is passed on to the validators.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use tonic::Code;
use tonic::codegen::tokio_stream;
use weft_node::consensus::pbft::{Request, RequestId, batch_digest};
use weft_proto::pb::consensus_client::ConsensusClient;
use weft_proto::pb::{self, TxStatus};
use weft_proto::signing::consensus_signing_bytes;
use weft_proto::{ClientError, Genesis, Signer, TxId, WeftClient};
use weft_tests::auditor::{Ack, PeerChain, audit, fetch_chain};
use weft_tests::{Network, Node, args, chaincode_binary, metric, weft};

const VALIDATORS: usize = 4;
const ALL: [usize; VALIDATORS] = [0, 1, 2, 3];
/// Non-validating peers; as nodes they are numbered after the validators.
const PEERS: usize = 2;
const NODES: usize = VALIDATORS + PEERS;
const EVERYONE: [usize; NODES] = [0, 1, 2, 3, 4, 5];

/// `validators` and the two non-validating peers.
fn with_peers(validators: &[usize]) -> Vec<usize> {
    validators
        .iter()
        .copied()
        .chain(VALIDATORS..NODES)
        .collect()
}
/// The bound on anything that must happen eventually (generous: debug builds, 2 cores).
const LIVENESS: Duration = Duration::from_secs(90);
/// How long a load worker lets the peer wait for a commit.
const COMMIT_WAIT: Duration = Duration::from_secs(10);
/// Checkpoint period and window of the generated genesis.
const CHECKPOINT_PERIOD: u64 = 10;
const WINDOW: u64 = 2 * CHECKPOINT_PERIOD;

// ---------------------------------------------------------------------------------------------
// The cluster

struct Cluster {
    network: Network,
    nodes: Vec<Node>,
    /// One connection per validator, kept: a new one per poll would churn through ephemeral
    /// ports, which is where the harness picks the validators' listening ports.
    clients: Mutex<HashMap<usize, WeftClient>>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Four validators and two non-validating peers running, asset-transfer deployed.
    async fn start() -> Cluster {
        let mut tmp = tempfile::tempdir().expect("tempdir");
        if std::env::var_os("WEFT_TEST_KEEP_TMP").is_some() {
            eprintln!("cluster in {}", tmp.path().display());
            tmp.disable_cleanup(true);
        }
        let network = Network::generate_cluster_with_peers(tmp.path(), VALIDATORS, PEERS).await;
        let mut nodes = Vec::new();
        for i in ALL {
            nodes.push(Node::start_validator(&network, i, &[]).await);
        }
        for p in 0..PEERS {
            nodes.push(Node::start_peer(&network, p, &[]).await);
        }
        network
            .cli_deploy("asset-transfer", &chaincode_binary("asset-transfer"))
            .await
            .expect_success("weft chaincode deploy on a four-validator network");
        let cluster = Cluster {
            network,
            nodes,
            clients: Mutex::new(HashMap::new()),
            _tmp: tmp,
        };
        // The deploy answers once the validator it went through committed it; a peer knows
        // the chaincode only when its follower brings the block (after a reconnect backoff of
        // up to 5 s if it started before the validators served): until then it refuses the
        // chaincode's transactions, which tests must not mistake for a fault.
        cluster.level("asset-transfer deployed everywhere").await;
        cluster
    }

    /// A connection to `validator` as alice.
    async fn client(&self, validator: usize) -> WeftClient {
        let kept = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&validator)
            .cloned();
        if let Some(client) = kept {
            return client;
        }
        let client = WeftClient::connect(
            &self.network.address_of(validator),
            self.network.signer("alice"),
            &self.network.chain_id,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}\n{}",
                self.network.node_name(validator),
                self.log(validator)
            )
        });
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(validator, client.clone());
        client
    }

    fn kill9(&mut self, validator: usize) {
        self.forget_client(validator);
        self.nodes[validator].kill9();
    }

    async fn restart(&mut self, validator: usize) {
        self.forget_client(validator);
        self.nodes[validator].restart().await;
    }

    fn forget_client(&self, validator: usize) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&validator);
    }

    async fn height(&self, validator: usize) -> u64 {
        self.client(validator)
            .await
            .chain_info()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chain info of {}: {e}\n{}",
                    self.network.node_name(validator),
                    self.log(validator)
                )
            })
            .height
    }

    async fn heights(&self, which: &[usize]) -> Vec<u64> {
        let mut heights = Vec::new();
        for v in which {
            heights.push(self.height(*v).await);
        }
        heights
    }

    async fn metrics(&self, validator: usize) -> String {
        self.nodes[validator].metrics().await
    }

    /// The last lines of a validator's log, for failure messages.
    fn log(&self, validator: usize) -> String {
        let log = self.nodes[validator].log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(150);
        format!(
            "--- {} log (tail)\n{}",
            self.network.node_name(validator),
            lines[start..].join("\n")
        )
    }

    /// Waits until every validator in `which` is at least at `height`.
    async fn wait_heights_at_least(&self, which: &[usize], height: u64, what: &str) {
        let start = Instant::now();
        loop {
            let heights = self.heights(which).await;
            if heights.iter().all(|h| *h >= height) {
                return;
            }
            assert!(
                start.elapsed() < LIVENESS,
                "{what}: validators {which:?} did not reach height {height} within {LIVENESS:?}: heights {heights:?}\n{}",
                which
                    .iter()
                    .map(|v| self.log(*v))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every validator and peer has the same height (with no load running).
    async fn level(&self, what: &str) -> u64 {
        let start = Instant::now();
        loop {
            let heights = self.heights(&EVERYONE).await;
            if heights.iter().all(|h| *h == heights[0]) {
                return heights[0];
            }
            assert!(
                start.elapsed() < LIVENESS,
                "{what}: the validators and peers did not level within {LIVENESS:?}: heights {heights:?}\n{}",
                EVERYONE
                    .iter()
                    .map(|v| self.log(*v))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the heights of `which` read the same twice, a second apart (in-flight
    /// messages have landed); returns them.
    async fn settled_heights(&self, which: &[usize]) -> Vec<u64> {
        let start = Instant::now();
        let mut last = self.heights(which).await;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.heights(which).await;
            if now == last {
                return now;
            }
            assert!(
                start.elapsed() < LIVENESS,
                "heights of {which:?} never settled: {now:?}"
            );
            last = now;
        }
    }

    /// One transaction through each validator and peer in turn: every one of them commits.
    async fn round_through_every_validator(&self, tag: &str, acks: &mut Vec<Ack>) {
        for v in EVERYONE {
            let key = format!("{tag}-final-{v}");
            let committed = self
                .client(v)
                .await
                .invoke(
                    "asset-transfer",
                    "CreateAsset",
                    &args(&[&key, "green", "1", "alice", "1"]),
                )
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{key} through {}: {e}\n{}",
                        self.network.node_name(v),
                        self.log(v)
                    )
                });
            acks.push(Ack {
                tx_id: committed.tx_id,
                block: committed.block_number,
            });
        }
    }

    /// Fetches every validator's and peer's chain and runs the auditor (I1-I5) over all six.
    async fn audit(&self, acks: &[Ack]) -> Vec<PeerChain> {
        eprintln!(
            "at the audit, (view changes, view metric, status view) per validator: {:?}",
            self.views().await
        );
        let genesis = Genesis::load(&self.network.genesis_path()).expect("genesis");
        let mut chains = Vec::new();
        for v in EVERYONE {
            chains.push(fetch_chain(&self.network.node_name(v), &self.client(v).await).await);
        }
        let violations = audit(&genesis, &chains, acks);
        assert!(
            violations.is_empty(),
            "the auditor found: {violations:#?}\nchain lengths {:?}",
            chains.iter().map(|c| c.blocks.len()).collect::<Vec<_>>()
        );
        // The shorter chains are a prefix of the longer ones (checked above); the levelled
        // cluster may have added a null block since, but no more than that.
        let lengths: Vec<usize> = chains.iter().map(|c| c.blocks.len()).collect();
        let (min, max) = (
            lengths.iter().min().copied().unwrap_or(0),
            lengths.iter().max().copied().unwrap_or(0),
        );
        assert!(
            max - min <= CHECKPOINT_PERIOD as usize,
            "the audited chains are not level: {lengths:?}"
        );
        chains
    }

    /// Waits until each of `validators` counts at least `least` in the metric `series`.
    async fn wait_metric_at_least(&self, validators: &[usize], series: &str, least: u64) {
        let start = Instant::now();
        for v in validators {
            loop {
                let value = metric(&self.metrics(*v).await, series);
                if value >= least {
                    break;
                }
                assert!(
                    start.elapsed() < LIVENESS,
                    "validator{v}: {series} = {value}, not {least} within {LIVENESS:?}\n{}",
                    self.log(*v)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Waits until `validator` counted a completed state transfer. The counter moves when the
    /// replica takes the transfer's report, a moment after the blocks reach the ledger (and
    /// the height the caller waited for), so it is polled rather than read once.
    async fn wait_state_transfer(&self, validator: usize) {
        let start = Instant::now();
        loop {
            let transfers = metric(
                &self.metrics(validator).await,
                "weft_pbft_state_transfers_total",
            );
            if transfers >= 1 {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "validator{validator} caught up by state transfer (weft_pbft_state_transfers_total = {transfers})\n{}",
                self.log(validator)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The view changes every validator counted, and the view each reports.
    async fn views(&self) -> Vec<(u64, u64, u64)> {
        self.views_of(&ALL).await
    }

    /// The view changes `validators` counted, and the view each reports.
    async fn views_of(&self, validators: &[usize]) -> Vec<(u64, u64, u64)> {
        let mut views = Vec::new();
        for &v in validators {
            let text = self.metrics(v).await;
            let status = self
                .client(v)
                .await
                .node_status()
                .await
                .unwrap_or_else(|e| panic!("node status of validator{v}: {e}"));
            views.push((
                metric(&text, "weft_pbft_view_changes_total"),
                metric(&text, "weft_pbft_view"),
                status.view,
            ));
        }
        views
    }
}

// ---------------------------------------------------------------------------------------------
// Steady load

/// What the load saw.
#[derive(Default)]
struct LoadLog {
    /// Transactions acknowledged as committed (SubmitAndWait answered with a commit status).
    acks: Vec<Ack>,
    /// Acknowledged, but not VALID (a unique CreateAsset must be VALID): (block, status, message).
    not_valid: Vec<(u64, i32, String)>,
    /// Neither a commit nor a definite refusal (timeouts, unreachable peers): may go either way.
    uncertain: usize,
}

/// Workers that each submit one unique CreateAsset at a time (SubmitAndWait) to the
/// validators currently targeted, in turn, and record every answer.
struct Load {
    stop: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<usize>>>,
    log: Arc<Mutex<LoadLog>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(network: &Network, tag: &str, workers: usize, targets: &[usize]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let shared_targets = Arc::new(Mutex::new(targets.to_vec()));
        let log = Arc::new(Mutex::new(LoadLog::default()));
        let workers = (0..workers)
            .map(|w| {
                tokio::spawn(load_worker(
                    network.clone(),
                    format!("{tag}-w{w}"),
                    w,
                    shared_targets.clone(),
                    stop.clone(),
                    log.clone(),
                ))
            })
            .collect();
        Load {
            stop,
            targets: shared_targets,
            log,
            workers,
        }
    }

    /// Send to these validators from now on (none: pause).
    fn target(&self, targets: &[usize]) {
        *self.targets.lock().unwrap_or_else(|p| p.into_inner()) = targets.to_vec();
    }

    fn acks(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .acks
            .len()
    }

    /// Waits until `more` further transactions were acknowledged.
    async fn wait_acks(&self, more: usize, what: &str) {
        let goal = self.acks() + more;
        let start = Instant::now();
        while self.acks() < goal {
            assert!(
                start.elapsed() < LIVENESS,
                "{what}: fewer than {more} acknowledgements within {LIVENESS:?} ({} in all)",
                self.acks()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the workers (each finishes its current call) and returns what they saw.
    async fn finish(self) -> LoadLog {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.expect("a load worker panicked");
        }
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

async fn load_worker(
    network: Network,
    tag: String,
    offset: usize,
    targets: Arc<Mutex<Vec<usize>>>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<LoadLog>>,
) {
    let mut clients: HashMap<usize, WeftClient> = HashMap::new();
    let mut k = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let target = {
            let targets = targets.lock().unwrap_or_else(|p| p.into_inner());
            (!targets.is_empty()).then(|| targets[(k + offset) % targets.len()])
        };
        k += 1;
        let Some(target) = target else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let client = match clients.get(&target) {
            Some(client) => client.clone(),
            None => {
                let connected = WeftClient::connect(
                    &network.address_of(target),
                    network.signer("alice"),
                    &network.chain_id,
                )
                .await;
                match connected {
                    Ok(client) => {
                        clients.insert(target, client.clone());
                        client
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        let key = format!("{tag}-{k}");
        let (tx_id, signed) = client.sign(
            "asset-transfer",
            "CreateAsset",
            &args(&[&key, "blue", "1", "alice", "1"]),
        );
        // A paused peer never answers: bound the call on this side as well.
        let answer = tokio::time::timeout(
            COMMIT_WAIT + Duration::from_secs(2),
            client.submit_signed_and_wait(signed, COMMIT_WAIT),
        )
        .await;
        match answer {
            Ok(Ok(status)) => {
                assert_eq!(
                    TxId::from_slice(&status.tx_id),
                    Some(tx_id),
                    "a commit status names the submitted transaction"
                );
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.acks.push(Ack {
                    tx_id,
                    block: status.block_number,
                });
                if status.status != TxStatus::Valid as i32 {
                    log.not_valid
                        .push((status.block_number, status.status, status.message));
                }
            }
            Ok(Err(_)) | Err(_) => {
                log.lock().unwrap_or_else(|p| p.into_inner()).uncertain += 1;
                clients.remove(&target);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn check_load(log: &LoadLog, what: &str) {
    eprintln!(
        "{what}: {} acknowledged, {} uncertain",
        log.acks.len(),
        log.uncertain
    );
    assert!(
        log.not_valid.is_empty(),
        "{what}: acknowledged unique CreateAssets that are not VALID: {:?}",
        log.not_valid
    );
}

// ---------------------------------------------------------------------------------------------
// Consensus messages by hand (protobuf encoding of weft.v1.ConsensusMessage, signed like a
// validator signs, independent of the node's own encoder)

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A varint field; zero is omitted, as proto3 encoders do.
fn put_uint(out: &mut Vec<u8>, field: u64, value: u64) {
    if value != 0 {
        put_varint(out, field << 3);
        put_varint(out, value);
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `ConsensusMessage { prepare: Prepare { view, sequence, digest } }`.
fn prepare_bytes(view: u64, sequence: u64, digest: &[u8; 32]) -> Vec<u8> {
    vote_bytes(3, view, sequence, digest)
}

/// `ConsensusMessage { commit: Commit { view, sequence, digest } }`.
fn commit_bytes(view: u64, sequence: u64, digest: &[u8; 32]) -> Vec<u8> {
    vote_bytes(4, view, sequence, digest)
}

/// `{ view, sequence, digest }` (a vote, or a pre-prepare with no batch) as the
/// `ConsensusMessage` kind numbered `kind`.
fn vote_bytes(kind: u64, view: u64, sequence: u64, digest: &[u8; 32]) -> Vec<u8> {
    let mut inner = Vec::new();
    put_uint(&mut inner, 1, view);
    put_uint(&mut inner, 2, sequence);
    put_bytes(&mut inner, 3, digest);
    let mut message = Vec::new();
    put_bytes(&mut message, kind, &inner);
    message
}

/// `ConsensusMessage { pre_prepare: PrePrepare { view, sequence, digest, batch: [] } }`.
fn pre_prepare_bytes(view: u64, sequence: u64, digest: &[u8; 32]) -> Vec<u8> {
    vote_bytes(2, view, sequence, digest)
}

/// A `PrePrepare` carrying `batch`.
fn pre_prepare_with_batch(
    view: u64,
    sequence: u64,
    digest: &[u8; 32],
    batch: &[pb::SignedTx],
) -> Vec<u8> {
    let mut inner = Vec::new();
    put_uint(&mut inner, 1, view);
    put_uint(&mut inner, 2, sequence);
    put_bytes(&mut inner, 3, digest);
    for tx in batch {
        put_bytes(&mut inner, 4, &tx.encode_to_vec());
    }
    let mut message = Vec::new();
    put_bytes(&mut message, 2, &inner);
    message
}

fn signed(
    chain_id: &str,
    from: u32,
    signer: &Signer,
    message: Vec<u8>,
) -> pb::SignedConsensusMessage {
    let signature = signer.sign(&consensus_signing_bytes(chain_id, &message));
    pb::SignedConsensusMessage {
        from,
        message: message.into(),
        signature: signature.to_vec().into(),
    }
}

/// A transaction as a batch digest sees it (its id and its hash), for computing batch
/// digests as replicas do.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Id {
    id: [u8; 32],
    hash: [u8; 32],
}

impl Id {
    fn of(tx: &pb::SignedTx) -> Id {
        Id {
            id: TxId::of_payload(&tx.payload).0,
            hash: weft_proto::hashing::transaction_hash(&tx.payload, &tx.signer, &tx.signature),
        }
    }
}

impl Request for Id {
    fn id(&self) -> RequestId {
        RequestId(self.id)
    }

    fn content_digest(&self) -> [u8; 32] {
        self.hash
    }
}

/// Opens a `Consensus/Deliver` stream to `validator`, over mutual TLS with validator1's
/// certificate (the consensus endpoint admits validators only; the messages themselves claim
/// any sender), sends `messages` and waits for the validator to have read them all.
async fn deliver(network: &Network, validator: usize, messages: Vec<pb::SignedConsensusMessage>) {
    try_deliver(network, validator, messages)
        .await
        .unwrap_or_else(|e| {
            panic!("validator{validator} ended the stream of forged messages with an error: {e}")
        });
}

/// As [`deliver`], returning how the validator ended the stream.
async fn try_deliver(
    network: &Network,
    validator: usize,
    messages: Vec<pb::SignedConsensusMessage>,
) -> Result<(), tonic::Status> {
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    };
    let identity = network.dir.join("validators").join("validator1");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(
            network.dir.join("ca").join("cert.pem"),
        )))
        .identity(tonic::transport::Identity::from_pem(
            read(identity.join("cert.pem")),
            read(identity.join("key.pem")),
        ))
        .domain_name(format!("validator{validator}"));
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "https://{}",
        network.consensus_address_of(validator)
    ))
    .and_then(|endpoint| endpoint.tls_config(tls))
    .expect("a TLS endpoint")
    .connect()
    .await
    .unwrap_or_else(|e| panic!("connect to validator{validator} over mutual TLS: {e}"));
    ConsensusClient::new(channel)
        .deliver(tokio_stream::iter(messages))
        .await
        .map(|_| ())
}

fn load_validator_key(network: &Network, validator: usize) -> Signer {
    let dir = network
        .dir
        .join("validators")
        .join(format!("validator{validator}"));
    Signer::load(&dir).unwrap_or_else(|e| panic!("validator key in {}: {e}", dir.display()))
}

fn rejected(metrics: &str, reason: &str) -> u64 {
    metric(
        metrics,
        &format!("weft_pbft_rejected_total{{reason=\"{reason}\"}}"),
    )
}

fn client_rejected(metrics: &str, reason: &str) -> u64 {
    metric(
        metrics,
        &format!("weft_requests_rejected_total{{reason=\"{reason}\"}}"),
    )
}

// ---------------------------------------------------------------------------------------------
// 0. Baseline: no fault

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_steady_load_through_validators_and_peers_with_no_fault() {
    let cluster = Cluster::start().await;
    let load = Load::start(&cluster.network, "base", 3, &EVERYONE);
    load.wait_acks(40, "steady load").await;
    let load = load.finish().await;
    check_load(&load, "baseline");
    let mut acks = load.acks;
    cluster.level("after the load").await;
    cluster
        .round_through_every_validator("base", &mut acks)
        .await;
    assert_eq!(
        cluster.views().await,
        vec![(0, 0, 0); VALIDATORS],
        "(view changes, view metric, node status view) per validator: no view change without a fault"
    );
    for v in ALL {
        let text = cluster.metrics(v).await;
        assert!(
            metric(&text, "weft_pbft_checkpoints_total") >= 2,
            "validator{v} counts the checkpoints it made stable:\n{text}"
        );
    }
    cluster.audit(&acks).await;
}

// ---------------------------------------------------------------------------------------------
// 0. The primary killed under steady load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_killed_under_steady_load_is_replaced_and_rejoins_in_the_new_view() {
    let mut cluster = Cluster::start().await;
    let load = Load::start(&cluster.network, "primary", 3, &EVERYONE);
    load.wait_acks(8, "before the kill").await;

    // Validator 0 is the primary of view 0, and the validator the peers forward to first;
    // transactions are in flight through every node when it dies.
    cluster.kill9(0);
    load.target(&with_peers(&[1, 2, 3]));
    load.wait_acks(10, "in the new view").await;
    let views = cluster.views_of(&[1, 2, 3]).await;
    for (v, (changes, view, status)) in [1, 2, 3].iter().zip(&views) {
        assert!(
            *changes >= 1 && *view >= 1 && status == view,
            "validator{v} changed view and says so (changes, view metric, status view): {views:?}"
        );
    }

    // It restarts from its RocksDB and journal and adopts the view the others are in.
    cluster.restart(0).await;
    load.target(&EVERYONE);
    load.wait_acks(8, "after the old primary returned").await;
    let load = load.finish().await;
    check_load(&load, "kill the primary");
    let mut acks = load.acks;
    cluster.level("after the load").await;
    cluster
        .round_through_every_validator("primary", &mut acks)
        .await;
    let views = cluster.views().await;
    assert!(
        views
            .iter()
            .all(|(_, view, status)| *view >= 1 && view == status && *view == views[1].1),
        "every validator, the old primary too, is in the same new view: {views:?}"
    );
    cluster.audit(&acks).await;
    assert!(acks.len() >= 26, "acknowledged: {}", acks.len());

    // `weft node status` shows role, view, primary, sequence, height and stable checkpoint,
    // on the old primary and on a non-validating peer alike.
    let view = views[0].1;
    for (node, role) in [(0, "validator"), (VALIDATORS, "peer")] {
        let shown = weft(&[
            "node",
            "status",
            "--peer",
            &cluster.network.address_of(node),
            "--network",
            &cluster.network.dir.display().to_string(),
        ])
        .await;
        let text = shown.expect_success("weft node status");
        let field = |name: &str| -> String {
            text.lines()
                .find_map(|line| line.strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {name} in weft node status:\n{text}"))
        };
        let number = |name: &str| -> u64 {
            field(name)
                .parse()
                .unwrap_or_else(|e| panic!("{name} in weft node status: {e}\n{text}"))
        };
        let status = cluster
            .client(node)
            .await
            .node_status()
            .await
            .expect("status");
        assert!(field("role").to_lowercase().contains(role), "{text}");
        assert!(
            number("height") >= status.height && status.height > 1,
            "{text}"
        );
        if role == "validator" {
            assert_eq!(number("view"), view, "{text}");
            assert_eq!(
                field("primary"),
                format!("validator{}", view % VALIDATORS as u64),
                "{text}"
            );
            assert!(number("sequence") >= status.height - 1, "{text}");
            assert!(number("stable") >= CHECKPOINT_PERIOD, "{text}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A backup killed for longer than a checkpoint window

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_killed_for_longer_than_a_window_catches_up_by_state_transfer() {
    let mut cluster = Cluster::start().await;
    let load = Load::start(&cluster.network, "kill", 2, &EVERYONE);
    load.wait_acks(8, "before the kill").await;

    // Validator 3 is a backup in view 0.
    load.target(&with_peers(&[0, 1, 2]));
    cluster.kill9(3);
    // The others keep what they send validator 3 in its link queue (bounded) and deliver it
    // when it returns: while that queue holds the whole gap, the normal case alone brings it
    // back. Only once each queue overflowed (messages dropped) and the others went more than
    // a window further can nothing but state transfer level it.
    cluster
        .wait_metric_at_least(&[0, 1, 2], "weft_pbft_dropped_total", 1)
        .await;
    let overflowed = *cluster.heights(&[0, 1, 2]).await.iter().max().expect("3");
    cluster
        .wait_heights_at_least(
            &[0, 1, 2],
            overflowed + WINDOW + CHECKPOINT_PERIOD,
            "the three others go on without validator3",
        )
        .await;

    cluster.restart(3).await;
    load.target(&EVERYONE);
    let others = *cluster.heights(&[0, 1, 2]).await.iter().max().expect("3");
    // It levels with where the others were at its restart while the load goes on.
    cluster
        .wait_heights_at_least(&[3], others + 1, "the restarted validator3 catches up")
        .await;
    cluster.wait_state_transfer(3).await;
    load.wait_acks(5, "after validator3 caught up").await;

    let load = load.finish().await;
    check_load(&load, "kill a backup");
    let mut acks = load.acks;
    cluster.level("after the load").await;
    cluster
        .round_through_every_validator("kill", &mut acks)
        .await;
    cluster.audit(&acks).await;
    assert!(acks.len() >= 20, "acknowledged: {}", acks.len());
}

// ---------------------------------------------------------------------------------------------
// 2. Two of four down

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_four_down_nothing_is_acknowledged_and_pending_transactions_commit_after_one_returns()
 {
    let mut cluster = Cluster::start().await;
    let load = Load::start(&cluster.network, "two", 2, &EVERYONE);
    load.wait_acks(8, "before the outage").await;
    let before = load.finish().await;
    check_load(&before, "before the outage");
    let mut acks = before.acks;
    cluster.level("before the outage").await;

    // Two backups down: f = 1 is exceeded.
    cluster.kill9(2);
    cluster.kill9(3);
    let settled = cluster.settled_heights(&[0, 1]).await;

    // Submissions during the outage, to the two validators still up and to both peers: none
    // may be acknowledged as committed.
    let up = with_peers(&[0, 1]);
    let mut outage = Vec::new();
    let mut answers = Vec::new();
    for i in 0..8usize {
        let client = cluster.client(up[i % up.len()]).await;
        let key = format!("outage-{i}");
        let (tx_id, signed) = client.sign(
            "asset-transfer",
            "CreateAsset",
            &args(&[&key, "red", "1", "alice", "1"]),
        );
        outage.push(tx_id);
        answers.push(tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                client.submit_signed_and_wait(signed, Duration::from_secs(3)),
            )
            .await
        }));
    }
    for (i, answer) in answers.into_iter().enumerate() {
        match answer.await.expect("submission task") {
            Ok(Ok(status)) => panic!(
                "outage transaction {i} was acknowledged as committed in block {} with two of four validators down: {status:?}",
                status.block_number
            ),
            Ok(Err(ClientError::Rpc(status))) => assert_eq!(
                status.code(),
                Code::DeadlineExceeded,
                "outage transaction {i}: the answer is a timeout: {status:?}"
            ),
            Ok(Err(e)) => panic!("outage transaction {i}: unexpected answer {e}"),
            Err(_) => panic!("outage transaction {i}: the peer did not answer at all"),
        }
    }
    assert_eq!(
        cluster.heights(&[0, 1]).await,
        settled,
        "nothing commits while two of four validators are down"
    );
    for v in up.iter().copied() {
        let client = cluster.client(v).await;
        for tx_id in &outage {
            match client.transaction(*tx_id).await {
                Err(ClientError::Rpc(status)) if status.code() == Code::NotFound => {}
                other => panic!(
                    "outage transaction {tx_id} on {}: {other:?}",
                    cluster.network.node_name(v)
                ),
            }
        }
    }

    // One comes back: 2f+1 again. Progress resumes and the pending transactions commit.
    cluster.restart(2).await;
    let start = Instant::now();
    let client = cluster.client(0).await;
    let mut committed: BTreeMap<TxId, u64> = BTreeMap::new();
    while committed.len() < outage.len() {
        for tx_id in &outage {
            if committed.contains_key(tx_id) {
                continue;
            }
            if let Ok(info) = client.transaction(*tx_id).await {
                let status = info.result.as_ref().map(|r| r.status);
                assert_eq!(
                    status,
                    Some(TxStatus::Valid as i32),
                    "outage transaction {tx_id} committed VALID"
                );
                committed.insert(*tx_id, info.block_number);
            }
        }
        assert!(
            start.elapsed() < LIVENESS,
            "pending outage transactions did not commit within {LIVENESS:?} after validator2 came back: {} of {} committed; heights {:?}\n{}\n{}\n{}",
            committed.len(),
            outage.len(),
            cluster.heights(&[0, 1, 2]).await,
            cluster.log(0),
            cluster.log(1),
            cluster.log(2)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Now that they committed, their position is known: the auditor checks them everywhere.
    acks.extend(committed.iter().map(|(tx_id, block)| Ack {
        tx_id: *tx_id,
        block: *block,
    }));

    let load = Load::start(&cluster.network, "two-after", 2, &with_peers(&[0, 1, 2]));
    load.wait_acks(8, "with three of four up again").await;
    cluster.restart(3).await;
    load.target(&EVERYONE);
    let others = *cluster.heights(&[0, 1, 2]).await.iter().max().expect("3");
    cluster
        .wait_heights_at_least(&[3], others + 1, "the last validator catches up")
        .await;
    let after = load.finish().await;
    check_load(&after, "after the outage");
    acks.extend(after.acks);

    cluster.level("after the outage").await;
    cluster
        .round_through_every_validator("two", &mut acks)
        .await;
    cluster.audit(&acks).await;
}

// ---------------------------------------------------------------------------------------------
// 3. A backup paused for more than two windows

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_paused_for_more_than_two_windows_levels_again_under_load() {
    let cluster = Cluster::start().await;
    let load = Load::start(&cluster.network, "pause", 2, &EVERYONE);
    load.wait_acks(8, "before the pause").await;

    load.target(&with_peers(&[0, 1, 2]));
    let at_pause = *cluster.heights(&ALL).await.iter().max().expect("4");
    cluster.nodes[3].signal("-STOP");
    cluster
        .wait_heights_at_least(
            &[0, 1, 2],
            at_pause + 2 * WINDOW + CHECKPOINT_PERIOD,
            "the three others go on while validator3 is paused",
        )
        .await;

    cluster.nodes[3].signal("-CONT");
    load.target(&EVERYONE);
    let others = *cluster.heights(&[0, 1, 2]).await.iter().max().expect("3");
    cluster
        .wait_heights_at_least(&[3], others + 1, "the resumed validator3 catches up")
        .await;
    // It may level by state transfer or by reading, in order, what the others queued for it
    // while it was stopped (their links hold up to 1,024 messages each): both are fine, what
    // matters is that it levels and the auditor finds nothing.
    let transfers = metric(&cluster.metrics(3).await, "weft_pbft_state_transfers_total");
    eprintln!("the resumed validator3 made {transfers} state transfer(s)");
    load.wait_acks(5, "after validator3 caught up").await;

    let load = load.finish().await;
    check_load(&load, "pause a backup");
    let mut acks = load.acks;
    cluster.level("after the load").await;
    cluster
        .round_through_every_validator("pause", &mut acks)
        .await;
    cluster.audit(&acks).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Forged, replayed and garbage consensus messages; bad client transactions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_consensus_messages_and_bad_transactions_are_refused_without_a_view_change()
 {
    let cluster = Cluster::start().await;
    let network = cluster.network.clone();
    let chain_id = network.chain_id.clone();
    let load = Load::start(&network, "forged", 2, &EVERYONE);
    // Past the first stable checkpoint everywhere: sequence 1 is below every low watermark.
    let start = Instant::now();
    for v in ALL {
        loop {
            let status = cluster
                .client(v)
                .await
                .node_status()
                .await
                .expect("node status");
            if status.last_stable_checkpoint >= CHECKPOINT_PERIOD {
                break;
            }
            assert!(
                start.elapsed() < LIVENESS,
                "validator{v} has no stable checkpoint: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let primary_key = load_validator_key(&network, 0);
    let backup_key = load_validator_key(&network, 1);
    let empty_digest = batch_digest::<Id>(&[]).0;
    let mut before = Vec::new();
    for v in EVERYONE {
        before.push(cluster.metrics(v).await);
    }

    // Under load, to every validator:
    // (a) a pre-prepare "from the primary" for a recent sequence, with a conflicting (empty)
    //     batch, whose signature has one byte flipped: accepted, it would be an equivocation
    //     and force a view change;
    // (a') a prepare signed by validator1 that claims to come from validator2;
    // (a'') an unsigned commit (a kind only its sender's own connection authenticates) that
    //      claims to come from validator2, over validator1's connection;
    // (b) a valid message from a replica id that is not in genesis;
    // (c) garbage message bytes, properly signed by validator1;
    // (e) a prepare properly signed by the primary, which never sends prepares.
    const PREPARES_FROM_PRIMARY: u64 = 2;
    for v in ALL {
        let recent = cluster.height(v).await - 1;
        let mut flipped = signed(
            &chain_id,
            0,
            &primary_key,
            pre_prepare_bytes(0, recent, &empty_digest),
        );
        let mut signature = flipped.signature.to_vec();
        signature[17] ^= 0x20;
        flipped.signature = signature.into();
        let mut impostor = signed(
            &chain_id,
            1,
            &backup_key,
            prepare_bytes(0, recent, &empty_digest),
        );
        impostor.from = 2;
        let mut stranger = signed(
            &chain_id,
            1,
            &backup_key,
            prepare_bytes(0, recent, &empty_digest),
        );
        stranger.from = VALIDATORS as u32 + 3;
        let garbage = signed(
            &chain_id,
            1,
            &backup_key,
            b"\xff\xff\xff\xff not a consensus message".to_vec(),
        );
        let unsigned_commit = pb::SignedConsensusMessage {
            from: 2,
            message: commit_bytes(0, recent, &empty_digest).into(),
            signature: Default::default(),
        };
        let mut messages = vec![flipped, impostor, unsigned_commit, stranger, garbage];
        for k in 0..PREPARES_FROM_PRIMARY {
            messages.push(signed(
                &chain_id,
                0,
                &primary_key,
                prepare_bytes(0, recent + 1 + k, &empty_digest),
            ));
        }
        deliver(&network, v, messages).await;
    }

    // Bad client transactions, to every validator and peer: a flipped signature, an unknown
    // chaincode.
    let mut refused = Vec::new();
    for v in EVERYONE {
        let client = cluster.client(v).await;
        let (bad_id, mut bad) = client.sign(
            "asset-transfer",
            "CreateAsset",
            &args(&[&format!("forged-{v}"), "black", "1", "alice", "1"]),
        );
        let mut signature = bad.signature.to_vec();
        signature[3] ^= 1;
        bad.signature = signature.into();
        match client.raw().submit(bad.clone()).await {
            Err(status) => assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "a bad signature is refused as such: {status:?}"
            ),
            Ok(response) => panic!("node {v} accepted a bad signature: {response:?}"),
        }
        match client
            .submit_signed_and_wait(bad, Duration::from_secs(5))
            .await
        {
            Err(ClientError::Rpc(status)) => assert_eq!(status.code(), Code::Unauthenticated),
            other => panic!("node {v} answered a bad signature with {other:?}"),
        }
        let (unknown_id, unknown) = client.sign("no-such-chaincode", "Anything", &args(&["x"]));
        match client.raw().submit(unknown).await {
            Err(status) => assert_eq!(
                status.code(),
                Code::NotFound,
                "an unknown chaincode is refused as such: {status:?}"
            ),
            Ok(response) => panic!("node {v} accepted an unknown chaincode: {response:?}"),
        }
        refused.push(bad_id);
        refused.push(unknown_id);
    }

    // Every refusal is counted by reason, exactly (these reasons have no other source here).
    for v in EVERYONE {
        let after = cluster.metrics(v).await;
        let delta = |reason: &str| rejected(&after, reason) - rejected(&before[v], reason);
        let client_delta =
            |reason: &str| client_rejected(&after, reason) - client_rejected(&before[v], reason);
        assert_eq!(
            (
                client_delta("bad_signature"),
                client_delta("unknown_chaincode")
            ),
            (2, 1),
            "node {v} counts bad client transactions by reason"
        );
        if v >= VALIDATORS {
            continue;
        }
        assert_eq!(
            (
                delta("bad_signature"),
                delta("unsigned_elsewhere"),
                delta("unknown_replica"),
                delta("malformed")
            ),
            (2, 1, 1, 1),
            "validator{v} counts forged consensus messages by reason:\n{after}"
        );
    }
    // The prepares from the primary reach the replica (they verify) and it refuses them.
    let start = Instant::now();
    for v in ALL {
        loop {
            let after = cluster.metrics(v).await;
            let delta = rejected(&after, "prepare_from_primary")
                - rejected(&before[v], "prepare_from_primary");
            if delta >= PREPARES_FROM_PRIMARY {
                assert_eq!(
                    delta, PREPARES_FROM_PRIMARY,
                    "validator{v}: only the forged prepares are refused as from the primary"
                );
                break;
            }
            assert!(
                start.elapsed() < LIVENESS,
                "validator{v} never counted the primary's prepares: {delta}\n{after}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The cluster keeps committing.
    load.wait_acks(10, "after the forged messages").await;

    // (d) Replays: the prepare validator1 sent for sequence 1 in view 0, re-signed byte for
    // byte (Ed25519 is deterministic), sent again now that sequence 1 is below every low
    // watermark. Sent while the load pauses and the cluster is quiet, so that no late message
    // of the normal case can account for the count.
    load.target(&[]);
    cluster.level("before the replays").await;
    cluster.settled_heights(&ALL).await;
    let block1 = cluster.client(0).await.block(1).await.expect("block 1");
    let batch: Vec<Id> = block1.transactions.iter().map(Id::of).collect();
    let replayed = signed(
        &chain_id,
        1,
        &backup_key,
        prepare_bytes(0, 1, &batch_digest(&batch).0),
    );
    const REPLAYS: u64 = 5;
    let mut quiet = Vec::new();
    for v in ALL {
        quiet.push(rejected(&cluster.metrics(v).await, "out_of_window"));
    }
    for v in ALL {
        deliver(
            &network,
            v,
            (0..REPLAYS).map(|_| replayed.clone()).collect(),
        )
        .await;
    }
    let start = Instant::now();
    for v in ALL {
        loop {
            let delta = rejected(&cluster.metrics(v).await, "out_of_window") - quiet[v];
            if delta >= REPLAYS {
                break;
            }
            assert!(
                start.elapsed() < LIVENESS,
                "validator{v} did not refuse the replayed prepares as out of window: {delta}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    load.target(&EVERYONE);
    load.wait_acks(10, "after the replays").await;

    // (e') A message above the size limit ends its stream before anything reads it.
    let oversized = pb::SignedConsensusMessage {
        from: 1,
        message: vec![0u8; weft_proto::MAX_MESSAGE_BYTES + 1].into(),
        signature: vec![0u8; 64].into(),
    };
    let too_large = try_deliver(&network, 2, vec![oversized])
        .await
        .expect_err("validator2 refuses a message above the size limit");
    assert!(too_large.message().contains("too large"), "{too_large:?}");

    // (f) A stream that keeps carrying messages which fail verification is closed, and its
    // validator (validator1's certificate) is refused for a while; the cluster goes on.
    let junk = signed(
        &chain_id,
        1,
        &backup_key,
        b"\xff\xff\xff\xff not a consensus message".to_vec(),
    );
    let before_junk = cluster.metrics(2).await;
    let closed = try_deliver(&network, 2, (0..40).map(|_| junk.clone()).collect())
        .await
        .expect_err("validator2 closes a stream of 40 unverifiable messages");
    assert_eq!(closed.code(), Code::PermissionDenied, "{closed:?}");
    let penalised = try_deliver(&network, 2, Vec::new())
        .await
        .expect_err("validator1's certificate is refused right after");
    assert!(
        penalised.code() == Code::Unavailable && penalised.message().contains("refused for"),
        "{penalised:?}"
    );
    let after_junk = cluster.metrics(2).await;
    let junk_delta = |reason: &str| rejected(&after_junk, reason) - rejected(&before_junk, reason);
    // Validator1's certificate carried 5 unverifiable messages to validator2 earlier in this
    // test (counted within a minute), so the stream closes after 27 to 32 more.
    let malformed = junk_delta("malformed");
    assert!(
        (27..=32).contains(&malformed) && junk_delta("stream_closed_unverifiable") == 1,
        "validator2 read {malformed} unverifiable messages, then closed the stream:\n{after_junk}"
    );
    assert!(junk_delta("stream_refused") >= 1, "{after_junk}");
    load.wait_acks(10, "after the junk stream").await;

    let load = load.finish().await;
    check_load(&load, "forged messages");
    let mut acks = load.acks;
    cluster.level("after the load").await;
    cluster
        .round_through_every_validator("forged", &mut acks)
        .await;

    // No view change anywhere: not counted, not entered, not reported.
    assert_eq!(
        cluster.views().await,
        vec![(0, 0, 0); VALIDATORS],
        "(view changes, view metric, node status view) per validator: no view change\n{}",
        ALL.iter()
            .map(|v| cluster.log(*v))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Definite refusals are absent.
    let chains = cluster.audit(&acks).await;
    for chain in &chains {
        for block in &chain.blocks {
            for tx in &block.transactions {
                assert!(
                    !refused.contains(&tx.id),
                    "a refused transaction is in {}'s block {}",
                    chain.peer,
                    block.number()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4b. An equivocating primary

/// A pre-prepare that validator0 (the primary of view 0) signed, with an empty batch, for a
/// sequence it is about to use for a batch of the load: the backups hold two pre-prepares the
/// primary signed for one sequence. They leave the view, the chains do not fork, and each
/// backup that saw both keeps the two signed messages as a proof anyone can check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_signs_two_pre_prepares_for_one_sequence_is_left_and_the_proof_kept() {
    let cluster = Cluster::start().await;
    let network = cluster.network.clone();
    let chain_id = network.chain_id.clone();
    let load = Load::start(&network, "equivocation", 2, &EVERYONE);
    load.wait_acks(8, "before the equivocation").await;

    let primary_key = load_validator_key(&network, 0);
    // A batch of one admissible transaction, so that it differs from whatever the primary
    // proposes at that sequence (a batch of the load, or an empty one while it pads).
    let (_, tx) = cluster.client(1).await.sign(
        "asset-transfer",
        "CreateAsset",
        &args(&["equivocated", "red", "1", "mallory", "1"]),
    );
    let digest = batch_digest(&[Id::of(&tx)]).0;
    let status = cluster
        .client(0)
        .await
        .node_status()
        .await
        .expect("status of the primary");
    // Past the checkpoint the primary may be padding to now, and inside the window.
    let sequence = (status.sequence / CHECKPOINT_PERIOD + 1) * CHECKPOINT_PERIOD + 3;
    let forged = signed(
        &chain_id,
        0,
        &primary_key,
        pre_prepare_with_batch(0, sequence, &digest, &[tx]),
    );
    // To the three backups at once, before the cluster moves past that sequence's window.
    tokio::join!(
        deliver(&network, 1, vec![forged.clone()]),
        deliver(&network, 2, vec![forged.clone()]),
        deliver(&network, 3, vec![forged.clone()]),
    );

    // The backups leave view 0.
    let start = Instant::now();
    loop {
        let views = cluster.views_of(&[1, 2, 3]).await;
        if views
            .iter()
            .all(|(changes, view, _)| *changes >= 1 && *view >= 1)
        {
            break;
        }
        if start.elapsed() > LIVENESS {
            let text = cluster.metrics(1).await;
            let rejected: Vec<&str> = text
                .lines()
                .filter(|line| line.starts_with("weft_pbft_rejected_total"))
                .collect();
            panic!(
                "the backups did not leave the equivocating primary's view (forged sequence {sequence}): {views:?}\nvalidator1 refused: {rejected:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.wait_acks(8, "in the new view").await;

    // The proofs: two pre-prepares for one (view, sequence), different digests, each signed
    // by validator0.
    let primary = primary_key.identity();
    let mut proofs = 0;
    for v in [1, 2, 3] {
        let dir = network
            .dir
            .join("data")
            .join(format!("validator{v}"))
            .join("evidence");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let text = cluster.metrics(v).await;
        let mut found = 0;
        for entry in entries {
            let path = entry.expect("evidence entry").path();
            let bytes = std::fs::read(&path).expect("read the proof");
            let proof = pb::EquivocationEvidence::decode(bytes.as_slice())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut seen = Vec::new();
            for signed in [proof.first, proof.second] {
                let signed = signed.expect("both messages");
                assert_eq!(signed.from, 0, "{}", path.display());
                assert!(
                    primary.verify(
                        &consensus_signing_bytes(&chain_id, &signed.message),
                        &signed.signature
                    ),
                    "{}: a message validator0 did not sign",
                    path.display()
                );
                let decoded = pb::ConsensusMessage::decode(signed.message.as_ref())
                    .expect("a consensus message");
                let Some(pb::consensus_message::Kind::PrePrepare(pre_prepare)) = decoded.kind
                else {
                    panic!("{}: not a pre-prepare", path.display());
                };
                seen.push((pre_prepare.view, pre_prepare.sequence, pre_prepare.digest));
            }
            assert_eq!(
                (seen[0].0, seen[0].1),
                (seen[1].0, seen[1].1),
                "one view and sequence"
            );
            assert_ne!(seen[0].2, seen[1].2, "two digests");
            assert_eq!(seen[0].1, sequence, "the forged sequence");
            found += 1;
        }
        proofs += found;
        if found > 0 {
            assert!(
                metric(&text, "weft_pbft_equivocations_total") >= 1
                    && rejected(&text, "equivocation") >= 1,
                "validator{v} counts the equivocation:\n{text}"
            );
        }
    }
    assert!(proofs >= 1, "no backup kept a proof of the equivocation");

    let load = load.finish().await;
    check_load(&load, "equivocating primary");
    let mut acks = load.acks;
    cluster.level("after the load").await;
    cluster
        .round_through_every_validator("equivocation", &mut acks)
        .await;
    cluster.audit(&acks).await;
}

// ---------------------------------------------------------------------------------------------
// 5. One transaction, 1,000 submissions

#[derive(Debug)]
enum Answer {
    Accepted,
    Committed(u64),
    AlreadyCommitted,
    AlreadyPending,
    Other(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transaction_submitted_a_thousand_times_to_every_validator_and_peer_commits_exactly_once()
 {
    const SUBMISSIONS: usize = 1_000;
    const IN_FLIGHT: usize = 32;
    let cluster = Cluster::start().await;
    let load = Load::start(&cluster.network, "once", 2, &EVERYONE);
    load.wait_acks(5, "before the duplicates").await;

    let mut clients = Vec::new();
    for v in EVERYONE {
        clients.push(cluster.client(v).await);
    }
    let (tx_id, signed) = clients[0].sign(
        "asset-transfer",
        "CreateAsset",
        &args(&["exactly-once", "white", "3", "alice", "42"]),
    );
    let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::new();
    for i in 0..SUBMISSIONS {
        let permit = limit.clone().acquire_owned().await.expect("semaphore");
        let client = clients[i % NODES].clone();
        let signed = signed.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            // Half wait for the commit, half only submit.
            let answer = if i % 2 == 0 {
                tokio::time::timeout(
                    Duration::from_secs(40),
                    client.submit_signed_and_wait(signed, Duration::from_secs(30)),
                )
                .await
                .map(|r| r.map(|status| (Some(status), None)))
            } else {
                tokio::time::timeout(Duration::from_secs(40), client.raw().submit(signed))
                    .await
                    .map(|r| {
                        r.map(|response| (None, Some(response.into_inner())))
                            .map_err(ClientError::Rpc)
                    })
            };
            let answer = match answer {
                Err(_) => Answer::Other("no answer within 40 s".into()),
                Ok(Ok((Some(status), _))) => {
                    if status.status == TxStatus::Valid as i32
                        && TxId::from_slice(&status.tx_id) == Some(tx_id)
                    {
                        Answer::Committed(status.block_number)
                    } else {
                        Answer::Other(format!("commit status {status:?}"))
                    }
                }
                Ok(Ok((_, Some(response)))) => {
                    if TxId::from_slice(&response.tx_id) == Some(tx_id) {
                        Answer::Accepted
                    } else {
                        Answer::Other(format!("submit response {response:?}"))
                    }
                }
                Ok(Ok((None, None))) => Answer::Other("nothing".into()),
                Ok(Err(ClientError::Rpc(status))) if status.code() == Code::AlreadyExists => {
                    if status.message().contains("already committed") {
                        Answer::AlreadyCommitted
                    } else if status.message().contains("already pending") {
                        Answer::AlreadyPending
                    } else {
                        Answer::Other(format!("{status:?}"))
                    }
                }
                Ok(Err(e)) => Answer::Other(e.to_string()),
            };
            (i % NODES, answer)
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("submission task"));
    }
    let others: Vec<(usize, &str)> = answers
        .iter()
        .filter_map(|(v, a)| match a {
            Answer::Other(what) => Some((*v, what.as_str())),
            _ => None,
        })
        .collect();
    assert!(
        others.is_empty(),
        "every answer is accepted, committed, already committed or already pending; {} are not: {:?}",
        others.len(),
        &others[..others.len().min(10)]
    );
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, answer) in &answers {
        let kind = match answer {
            Answer::Accepted => "accepted",
            Answer::Committed(_) => "committed",
            Answer::AlreadyCommitted => "already committed",
            Answer::AlreadyPending => "already pending",
            Answer::Other(_) => "other",
        };
        *tally.entry(kind).or_default() += 1;
    }
    eprintln!("answers to {SUBMISSIONS} submissions of one transaction: {tally:?}");
    let firsts = answers
        .iter()
        .filter(|(_, a)| matches!(a, Answer::Accepted | Answer::Committed(_)))
        .count();
    assert!(
        (1..=NODES).contains(&firsts),
        "each validator and peer takes the transaction at most once: {firsts} acceptances"
    );

    // It commits, once, at one height everywhere.
    let start = Instant::now();
    let mut blocks = Vec::new();
    for v in EVERYONE {
        loop {
            match clients[v].transaction(tx_id).await {
                Ok(info) => {
                    blocks.push(info.block_number);
                    break;
                }
                Err(e) => assert!(
                    start.elapsed() < LIVENESS,
                    "the transaction never committed on {}: {e}",
                    cluster.network.node_name(v)
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        blocks.iter().all(|b| *b == blocks[0]),
        "one block everywhere: {blocks:?}"
    );
    for (v, answer) in &answers {
        if let Answer::Committed(block) = answer {
            assert_eq!(
                *block,
                blocks[0],
                "{} acknowledged the commit in another block",
                cluster.network.node_name(*v)
            );
        }
    }

    let load = load.finish().await;
    check_load(&load, "duplicates");
    let mut acks = load.acks;
    acks.push(Ack {
        tx_id,
        block: blocks[0],
    });
    cluster.level("after the load").await;
    cluster
        .round_through_every_validator("once", &mut acks)
        .await;
    let chains = cluster.audit(&acks).await;
    for chain in &chains {
        let count = chain
            .blocks
            .iter()
            .flat_map(|b| &b.transactions)
            .filter(|tx| tx.id == tx_id)
            .count();
        assert_eq!(
            count, 1,
            "{} holds the transaction {count} times",
            chain.peer
        );
    }
}
