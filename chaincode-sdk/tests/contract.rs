//! The contract suite on both stubs (the in-memory world and the gRPC shim behind a fake peer),
//! and the shim's own promises: batches, the read cache and its epochs, request routing,
//! concurrency of queries, ordering of invokes, and how the stream ends.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use chaincode_sdk::contract::{
    Call, ECHO, EchoChaincode, Harness, NONE, ProbeChaincode, run_contract_suite,
};
use chaincode_sdk::{Creator, Event, MemoryWorld, Role, ShimConfig, ShimError, serve};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use weft_proto::pb;
use weft_proto::pb::chaincode_message::Kind as FromChaincode;
use weft_proto::pb::chaincode_support_server::{ChaincodeSupport, ChaincodeSupportServer};
use weft_proto::pb::peer_message::Kind as ToChaincode;

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "launch-token";
/// A key whose StateRequest the fake peer answers with an error.
const POISON: &str = "poison/k";

fn alice() -> Creator {
    Creator::new("alice", "Org1", Role::Client)
}

fn bytes(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

// ---------------------------------------------------------------------------------------------
// The in-memory harness.

struct MemoryHarness {
    world: MemoryWorld,
    creator: Creator,
}

impl MemoryHarness {
    fn new() -> MemoryHarness {
        let mut world = MemoryWorld::new();
        world.register(ECHO, EchoChaincode);
        MemoryHarness {
            world,
            creator: alice(),
        }
    }
}

#[chaincode_sdk::async_trait]
impl Harness for MemoryHarness {
    fn creator(&self) -> Creator {
        self.creator.clone()
    }

    async fn init(&mut self, function: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        self.world
            .init(&ProbeChaincode, &self.creator, function, args)
            .await
            .map_err(|e| e.to_string())
    }

    async fn invoke(&mut self, function: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        self.world
            .invoke(&ProbeChaincode, &self.creator, function, args)
            .await
            .map_err(|e| e.to_string())
    }

    async fn invoke_batch(&mut self, calls: &[Call]) -> Vec<Result<Vec<u8>, String>> {
        let mut results = Vec::new();
        for call in calls {
            let result = self
                .world
                .invoke(
                    &ProbeChaincode,
                    &self.creator,
                    &call.function,
                    call.args.as_slice(),
                )
                .await
                .map_err(|e| e.to_string());
            results.push(result);
        }
        results
    }

    async fn query(&mut self, function: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        self.world
            .query(&ProbeChaincode, &self.creator, function, args)
            .await
            .map_err(|e| e.to_string())
    }

    fn last_event(&self) -> Option<Event> {
        self.world.last_event().cloned()
    }
}

#[tokio::test]
async fn contract_suite_passes_on_the_memory_world() {
    run_contract_suite(&mut MemoryHarness::new()).await;
}

// ---------------------------------------------------------------------------------------------
// A fake peer: holds state, answers the shim's requests, applies INVOKE and INIT results.

#[derive(Default)]
struct PeerState {
    kv: BTreeMap<String, Vec<u8>>,
    register: Option<pb::Register>,
    to_chaincode: Option<mpsc::Sender<Result<pb::PeerMessage, Status>>>,
    state_requests: Vec<Vec<String>>,
    range_requests: usize,
    invoke_requests: Vec<pb::InvokeRequest>,
    hold_state: bool,
    held: Vec<pb::StateRequest>,
    kinds: HashMap<u64, pb::ExecutionKind>,
    waiting: HashMap<u64, oneshot::Sender<pb::BatchResult>>,
    completed: Vec<u64>,
    last_event: Option<Event>,
}

#[derive(Clone)]
struct FakePeer {
    state: Arc<Mutex<PeerState>>,
    changed: Arc<Notify>,
    address: SocketAddr,
    next_batch: Arc<Mutex<u64>>,
}

type PeerStream = Pin<Box<dyn Stream<Item = Result<pb::PeerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ChaincodeSupport for FakePeer {
    type OpenStream = PeerStream;

    async fn open(
        &self,
        request: Request<Streaming<pb::ChaincodeMessage>>,
    ) -> Result<Response<PeerStream>, Status> {
        let (sender, receiver) = mpsc::channel(256);
        self.lock().to_chaincode = Some(sender);
        let peer = self.clone();
        let inbound = request.into_inner();
        tokio::spawn(async move { peer.serve_session(inbound).await });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

impl FakePeer {
    async fn start() -> Result<FakePeer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let peer = FakePeer {
            state: Arc::default(),
            changed: Arc::default(),
            address,
            next_batch: Arc::new(Mutex::new(1)),
        };
        let service = ChaincodeSupportServer::new(peer.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
        });
        Ok(peer)
    }

    fn lock(&self) -> MutexGuard<'_, PeerState> {
        self.state
            .lock()
            .expect("no test panics while holding the lock")
    }

    /// Waits until `ready` holds for the peer's state.
    async fn until(&self, what: &str, ready: impl Fn(&PeerState) -> bool) -> Result<()> {
        tokio::time::timeout(WAIT, async {
            loop {
                let notified = self.changed.notified();
                if ready(&self.lock()) {
                    return;
                }
                notified.await;
            }
        })
        .await
        .map_err(|_| anyhow!("timed out waiting for {what}"))
    }

    fn send(&self, message: Result<pb::PeerMessage, Status>) {
        let sender = self.lock().to_chaincode.clone();
        if let Some(sender) = sender {
            // The shim may be gone in tests that end the stream; then nobody listens.
            let _ = sender.try_send(message);
        }
    }

    fn reply(&self, kind: ToChaincode) {
        self.send(Ok(pb::PeerMessage { kind: Some(kind) }));
    }

    fn answer_state(&self, request: pb::StateRequest) {
        let state = self.lock();
        let keys: Vec<String> = request
            .keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let response = if keys.iter().any(|k| k == POISON) {
            pb::StateResponse {
                request_id: request.request_id,
                values: Vec::new(),
                error: "injected failure".to_string(),
            }
        } else {
            pb::StateResponse {
                request_id: request.request_id,
                values: keys
                    .iter()
                    .map(|k| pb::OptionalValue {
                        value: state.kv.get(k).map(|v| v.clone().into()),
                    })
                    .collect(),
                error: String::new(),
            }
        };
        drop(state);
        self.reply(ToChaincode::StateResponse(response));
    }

    async fn serve_session(&self, mut inbound: Streaming<pb::ChaincodeMessage>) {
        while let Ok(Some(message)) = inbound.message().await {
            match message.kind {
                Some(FromChaincode::Register(register)) => {
                    let token_ok = register.launch_token == TOKEN;
                    self.lock().register = Some(register);
                    if token_ok {
                        self.reply(ToChaincode::Registered(pb::Registered {
                            peer_id: "fake-peer".to_string(),
                        }));
                    } else {
                        self.send(Err(Status::permission_denied("wrong launch token")));
                        self.lock().to_chaincode = None;
                    }
                }
                Some(FromChaincode::StateRequest(request)) => {
                    let hold = {
                        let mut state = self.lock();
                        state.state_requests.push(
                            request
                                .keys
                                .iter()
                                .map(|k| String::from_utf8_lossy(k).into_owned())
                                .collect(),
                        );
                        if state.hold_state {
                            state.held.push(request.clone());
                        }
                        state.hold_state
                    };
                    if !hold {
                        self.answer_state(request);
                    }
                }
                Some(FromChaincode::RangeRequest(request)) => {
                    let entries = {
                        let mut state = self.lock();
                        state.range_requests += 1;
                        let start = String::from_utf8_lossy(&request.start).into_owned();
                        let end = String::from_utf8_lossy(&request.end).into_owned();
                        state
                            .kv
                            .iter()
                            .filter(|(k, _)| **k >= start && (end.is_empty() || **k < end))
                            .map(|(k, v)| pb::KeyValue {
                                key: k.clone().into_bytes().into(),
                                value: v.clone().into(),
                            })
                            .collect()
                    };
                    self.reply(ToChaincode::RangeResponse(pb::RangeResponse {
                        request_id: request.request_id,
                        entries,
                        error: String::new(),
                    }));
                }
                Some(FromChaincode::InvokeRequest(request)) => {
                    self.lock().invoke_requests.push(request.clone());
                    let args: Vec<Vec<u8>> = request.args.iter().map(|a| a.to_vec()).collect();
                    let (status, payload, message) = if request.chaincode != ECHO {
                        (
                            pb::OutcomeStatus::Error,
                            Vec::new(),
                            format!("no chaincode named {:?}", request.chaincode),
                        )
                    } else if request.function == "fail" {
                        (
                            pb::OutcomeStatus::Error,
                            Vec::new(),
                            "echo: failing as asked".to_string(),
                        )
                    } else {
                        (
                            pb::OutcomeStatus::Ok,
                            EchoChaincode::reply(&request.function, &args),
                            String::new(),
                        )
                    };
                    self.reply(ToChaincode::InvokeResponse(pb::InvokeResponse {
                        request_id: request.request_id,
                        status: status as i32,
                        payload: payload.into(),
                        message,
                    }));
                }
                Some(FromChaincode::BatchResult(result)) => {
                    let mut state = self.lock();
                    let kind = state.kinds.get(&result.batch_id).copied();
                    if matches!(
                        kind,
                        Some(pb::ExecutionKind::Invoke | pb::ExecutionKind::Init)
                    ) {
                        for outcome in &result.outcomes {
                            if outcome.status != pb::OutcomeStatus::Ok as i32 {
                                continue;
                            }
                            for write in &outcome.writes {
                                let key = String::from_utf8_lossy(&write.key).into_owned();
                                match &write.value {
                                    Some(value) => state.kv.insert(key, value.to_vec()),
                                    None => state.kv.remove(&key),
                                };
                            }
                        }
                        state.last_event = result.outcomes.last().and_then(|o| {
                            o.event.as_ref().map(|e| Event {
                                name: e.name.clone(),
                                payload: e.payload.to_vec(),
                            })
                        });
                    }
                    state.completed.push(result.batch_id);
                    if let Some(waiter) = state.waiting.remove(&result.batch_id) {
                        let _ = waiter.send(result);
                    }
                }
                None => {}
            }
            self.changed.notify_waiters();
        }
        self.changed.notify_waiters();
    }

    /// Sends a batch and returns where its result will arrive.
    fn send_batch(
        &self,
        kind: pb::ExecutionKind,
        epoch: u64,
        transactions: Vec<pb::TxContext>,
    ) -> (u64, oneshot::Receiver<pb::BatchResult>) {
        self.send_prefetched(kind, epoch, transactions, Vec::new())
    }

    /// Sends a batch carrying values for read hints.
    fn send_prefetched(
        &self,
        kind: pb::ExecutionKind,
        epoch: u64,
        transactions: Vec<pb::TxContext>,
        prefetched: Vec<pb::PrefetchedValue>,
    ) -> (u64, oneshot::Receiver<pb::BatchResult>) {
        let batch_id = {
            let mut next = self.next_batch.lock().expect("no panics while locked");
            *next += 1;
            *next
        };
        let (sender, receiver) = oneshot::channel();
        {
            let mut state = self.lock();
            state.kinds.insert(batch_id, kind);
            state.waiting.insert(batch_id, sender);
        }
        self.reply(ToChaincode::ExecuteBatch(pb::ExecuteBatch {
            batch_id,
            kind: kind as i32,
            cache_epoch: epoch,
            transactions,
            prefetched,
        }));
        (batch_id, receiver)
    }

    async fn execute(
        &self,
        kind: pb::ExecutionKind,
        epoch: u64,
        transactions: Vec<pb::TxContext>,
    ) -> Result<pb::BatchResult> {
        self.execute_prefetched(kind, epoch, transactions, Vec::new())
            .await
    }

    async fn execute_prefetched(
        &self,
        kind: pb::ExecutionKind,
        epoch: u64,
        transactions: Vec<pb::TxContext>,
        prefetched: Vec<pb::PrefetchedValue>,
    ) -> Result<pb::BatchResult> {
        let count = transactions.len();
        let (_, receiver) = self.send_prefetched(kind, epoch, transactions, prefetched);
        let result = tokio::time::timeout(WAIT, receiver)
            .await
            .context("timed out waiting for a batch result")?
            .context("the fake peer dropped the batch")?;
        anyhow::ensure!(
            result.outcomes.len() == count,
            "one outcome per transaction"
        );
        Ok(result)
    }

    fn state_requests(&self) -> Vec<Vec<String>> {
        self.lock().state_requests.clone()
    }

    fn hold_state_responses(&self) {
        self.lock().hold_state = true;
    }

    fn release_state_responses(&self) {
        let held = {
            let mut state = self.lock();
            state.hold_state = false;
            std::mem::take(&mut state.held)
        };
        for request in held {
            self.answer_state(request);
        }
    }
}

fn tx(creator: &Creator, function: &str, args: &[&str]) -> pb::TxContext {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut id = [0xabu8; 32];
    id[..8].copy_from_slice(&n.to_be_bytes());
    pb::TxContext {
        tx_id: id.to_vec().into(),
        creator: Some(pb::Creator {
            certificate: b"not a real certificate".to_vec().into(),
            name: creator.name.clone(),
            organization: creator.organization.clone(),
            role: creator.role.as_str().to_string(),
        }),
        function: function.to_string(),
        args: bytes(args).into_iter().map(Into::into).collect(),
        created_unix_ms: 1,
    }
}

fn outcome_result(outcome: &pb::TxOutcome) -> Result<Vec<u8>, String> {
    if outcome.status == pb::OutcomeStatus::Ok as i32 {
        Ok(outcome.payload.to_vec())
    } else {
        Err(outcome.message.clone())
    }
}

fn outcome_text(outcome: &pb::TxOutcome) -> Result<String, String> {
    outcome_result(outcome).map(|p| String::from_utf8_lossy(&p).into_owned())
}

/// A fake peer with the probe chaincode registered through the real shim.
async fn start_shim(token: &str) -> Result<(FakePeer, JoinHandle<Result<(), ShimError>>)> {
    let peer = FakePeer::start().await?;
    let config = ShimConfig::new(&peer.address.to_string(), "probe", "1.0", token);
    let shim = tokio::spawn(serve(ProbeChaincode, config));
    peer.until("registration", |s| {
        s.register.is_some() && s.to_chaincode.is_some()
    })
    .await?;
    Ok((peer, shim))
}

// ---------------------------------------------------------------------------------------------
// The gRPC harness.

struct ShimHarness {
    peer: FakePeer,
    creator: Creator,
}

impl ShimHarness {
    async fn run(
        &mut self,
        kind: pb::ExecutionKind,
        calls: &[Call],
    ) -> Vec<Result<Vec<u8>, String>> {
        let transactions = calls
            .iter()
            .map(|call| {
                let args: Vec<&str> = call.args.iter().map(String::as_str).collect();
                tx(&self.creator, &call.function, &args)
            })
            .collect();
        match self.peer.execute(kind, 1, transactions).await {
            Ok(result) => result.outcomes.iter().map(outcome_result).collect(),
            Err(error) => panic!("batch failed: {error:#}"),
        }
    }

    async fn one(
        &mut self,
        kind: pb::ExecutionKind,
        function: &str,
        args: &[&str],
    ) -> Result<Vec<u8>, String> {
        let mut results = self.run(kind, &[Call::new(function, args)]).await;
        results.pop().expect("one outcome per transaction")
    }
}

#[chaincode_sdk::async_trait]
impl Harness for ShimHarness {
    fn creator(&self) -> Creator {
        self.creator.clone()
    }

    async fn init(&mut self, function: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        self.one(pb::ExecutionKind::Init, function, args).await
    }

    async fn invoke(&mut self, function: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        self.one(pb::ExecutionKind::Invoke, function, args).await
    }

    async fn invoke_batch(&mut self, calls: &[Call]) -> Vec<Result<Vec<u8>, String>> {
        self.run(pb::ExecutionKind::Invoke, calls).await
    }

    async fn query(&mut self, function: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        self.one(pb::ExecutionKind::Query, function, args).await
    }

    fn last_event(&self) -> Option<Event> {
        self.peer.lock().last_event.clone()
    }
}

#[tokio::test]
async fn contract_suite_passes_on_the_grpc_shim() -> Result<()> {
    let (peer, shim) = start_shim(TOKEN).await?;
    let creator = Creator::new("bob", "Org2", Role::Admin);
    run_contract_suite(&mut ShimHarness { peer, creator }).await;
    shim.abort();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The shim's own promises.

#[tokio::test]
async fn a_batch_serves_earlier_writes_locally_and_reports_writes_and_events() -> Result<()> {
    let (peer, _shim) = start_shim(TOKEN).await?;
    let me = alice();
    let result = peer
        .execute(
            pb::ExecutionKind::Invoke,
            1,
            vec![
                tx(&me, "put", &["k", "1"]),
                tx(&me, "get", &["k"]),
                tx(&me, "put_then_fail", &["k", "2"]),
                tx(&me, "script", &["del gone", "put k 3", "get k"]),
                tx(&me, "event", &["done", "p"]),
                tx(&me, "get", &["other"]),
            ],
        )
        .await?;
    let texts: Vec<Result<String, String>> = result.outcomes.iter().map(outcome_text).collect();
    assert_eq!(texts[0], Ok("1".to_string()));
    assert_eq!(texts[1], Ok("1".to_string()), "read of an earlier write");
    assert!(texts[2].is_err());
    assert_eq!(texts[3], Ok(r#"["ok","3","3"]"#.to_string()));
    assert_eq!(texts[5], Ok(NONE.to_string()));
    // Only the key nobody in the batch wrote cost a round trip.
    assert_eq!(peer.state_requests(), vec![vec!["other".to_string()]]);

    // Writes in key order, deletes without value, nothing for the failed transaction.
    assert!(result.outcomes[2].writes.is_empty());
    let writes: Vec<(String, Option<String>)> = result.outcomes[3]
        .writes
        .iter()
        .map(|w| {
            (
                String::from_utf8_lossy(&w.key).into_owned(),
                w.value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect();
    assert_eq!(
        writes,
        vec![
            ("gone".to_string(), None),
            ("k".to_string(), Some("3".to_string()))
        ]
    );
    let event = result.outcomes[4].event.clone().context("event expected")?;
    assert_eq!(
        (
            event.chaincode.as_str(),
            event.name.as_str(),
            event.payload.as_ref()
        ),
        ("probe", "done", &b"p"[..])
    );
    assert!(result.outcomes[2].event.is_none());
    Ok(())
}

#[tokio::test]
async fn the_cache_serves_repeated_reads_until_the_epoch_changes() -> Result<()> {
    let (peer, _shim) = start_shim(TOKEN).await?;
    let me = alice();
    peer.lock().kv.insert("c".to_string(), b"x".to_vec());
    let get = |key: &str| vec![tx(&me, "get", &[key])];

    let first = peer.execute(pb::ExecutionKind::Invoke, 7, get("c")).await?;
    assert_eq!(outcome_text(&first.outcomes[0]), Ok("x".to_string()));
    assert_eq!(peer.state_requests().len(), 1);

    // Same epoch: served from the cache, and so is an absent key once read.
    let again = peer.execute(pb::ExecutionKind::Invoke, 7, get("c")).await?;
    assert_eq!(outcome_text(&again.outcomes[0]), Ok("x".to_string()));
    peer.execute(pb::ExecutionKind::Invoke, 7, get("absent"))
        .await?;
    peer.execute(pb::ExecutionKind::Invoke, 7, get("absent"))
        .await?;
    assert_eq!(peer.state_requests().len(), 2);

    // A successful batch's writes go to the cache; a failed transaction's do not.
    peer.execute(
        pb::ExecutionKind::Invoke,
        7,
        vec![
            tx(&me, "put", &["w", "1"]),
            tx(&me, "put_then_fail", &["f", "1"]),
        ],
    )
    .await?;
    let read = peer
        .execute(
            pb::ExecutionKind::Invoke,
            7,
            vec![tx(&me, "getmany", &["w", "f"])],
        )
        .await?;
    assert_eq!(
        outcome_text(&read.outcomes[0]),
        Ok(r#"["1",null]"#.to_string())
    );
    assert_eq!(
        peer.state_requests().last(),
        Some(&vec!["f".to_string()]),
        "only the failed transaction's key is asked for"
    );
    let requests = peer.state_requests().len();

    // The peer changes state behind the chaincode's back and announces a new epoch.
    peer.lock().kv.insert("c".to_string(), b"y".to_vec());
    let stale = peer.execute(pb::ExecutionKind::Invoke, 7, get("c")).await?;
    assert_eq!(
        outcome_text(&stale.outcomes[0]),
        Ok("x".to_string()),
        "same epoch: the cache is trusted"
    );
    let fresh = peer.execute(pb::ExecutionKind::Invoke, 8, get("c")).await?;
    assert_eq!(outcome_text(&fresh.outcomes[0]), Ok("y".to_string()));
    assert_eq!(
        peer.state_requests().len(),
        requests + 1,
        "a new epoch re-reads"
    );
    Ok(())
}

#[tokio::test]
async fn the_chaincode_declares_its_read_hints_and_reads_prefetched_values_without_asking()
-> Result<()> {
    let (peer, _shim) = start_shim(TOKEN).await?;
    let me = alice();
    let hints = peer.lock().register.clone().expect("registered").read_hints;
    let declared: Vec<(String, u32)> = hints.into_iter().map(|h| (h.function, h.arg)).collect();
    assert_eq!(
        declared,
        vec![
            ("get".to_string(), 0),
            ("getmany".to_string(), 0),
            ("getmany".to_string(), 1)
        ]
    );
    // The fake peer's own state would answer otherwise: the values sent with the batch win.
    peer.lock()
        .kv
        .insert("there".to_string(), b"from a request".to_vec());
    let prefetched = vec![
        pb::PrefetchedValue {
            key: b"there".to_vec().into(),
            value: Some(b"sent ahead".to_vec().into()),
        },
        pb::PrefetchedValue {
            key: b"new".to_vec().into(),
            value: None,
        },
        // Not UTF-8: no chaincode can read it; dropped.
        pb::PrefetchedValue {
            key: vec![0xff].into(),
            value: None,
        },
    ];
    let result = peer
        .execute_prefetched(
            pb::ExecutionKind::Query,
            1,
            vec![
                tx(&me, "get", &["there"]),
                tx(&me, "get", &["new"]),
                // A write earlier in the transaction hides the value sent ahead.
                tx(&me, "script", &["put there mine", "get there"]),
            ],
            prefetched.clone(),
        )
        .await?;
    assert_eq!(outcome_text(&result.outcomes[0]), Ok("sent ahead".into()));
    assert_eq!(outcome_text(&result.outcomes[1]), Ok("<none>".into()));
    assert_eq!(
        outcome_text(&result.outcomes[2]),
        Ok(r#"["mine","mine"]"#.into())
    );
    assert!(
        peer.state_requests().is_empty(),
        "{:?}",
        peer.state_requests()
    );

    // A key nothing was sent for still costs one request, and only that key is asked for.
    let result = peer
        .execute_prefetched(
            pb::ExecutionKind::Invoke,
            1,
            vec![
                tx(&me, "getmany", &["there", "new", "other"]),
                // An earlier transaction's write hides the value sent ahead from later ones.
                tx(&me, "put", &["new", "written"]),
                tx(&me, "get", &["new"]),
            ],
            prefetched,
        )
        .await?;
    assert_eq!(
        outcome_text(&result.outcomes[0]),
        Ok(r#"["sent ahead",null,null]"#.into())
    );
    assert_eq!(outcome_text(&result.outcomes[2]), Ok("written".into()));
    assert_eq!(peer.state_requests(), vec![vec!["other".to_string()]]);

    // An INVOKE batch's values fill the cache (its writes override them): the next batch
    // reads them without anything sent ahead.
    let again = peer
        .execute(
            pb::ExecutionKind::Invoke,
            1,
            vec![tx(&me, "getmany", &["there", "new"])],
        )
        .await?;
    assert_eq!(
        outcome_text(&again.outcomes[0]),
        Ok(r#"["sent ahead","written"]"#.into())
    );
    assert_eq!(peer.state_requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn queries_and_nested_calls_neither_fill_nor_use_the_cache() -> Result<()> {
    let (peer, _shim) = start_shim(TOKEN).await?;
    let me = alice();
    peer.lock().kv.insert("q".to_string(), b"v".to_vec());
    let get = || vec![tx(&me, "get", &["q"])];

    peer.execute(pb::ExecutionKind::Query, 1, get()).await?;
    peer.execute(pb::ExecutionKind::Nested, 1, get()).await?;
    assert_eq!(peer.state_requests().len(), 2);
    // The queries did not fill the cache: the first INVOKE read asks the peer.
    peer.execute(pb::ExecutionKind::Invoke, 1, get()).await?;
    assert_eq!(peer.state_requests().len(), 3);
    peer.execute(pb::ExecutionKind::Invoke, 1, get()).await?;
    assert_eq!(peer.state_requests().len(), 3, "the INVOKE read was cached");
    // ... but a query does not read the INVOKE cache either.
    peer.execute(pb::ExecutionKind::Query, 1, get()).await?;
    assert_eq!(peer.state_requests().len(), 4);

    // A query's writes are reported but never reach the cache.
    peer.execute(
        pb::ExecutionKind::Query,
        1,
        vec![tx(&me, "put", &["q", "changed"])],
    )
    .await?;
    let read = peer.execute(pb::ExecutionKind::Invoke, 1, get()).await?;
    assert_eq!(outcome_text(&read.outcomes[0]), Ok("v".to_string()));
    Ok(())
}

#[tokio::test]
async fn get_states_asks_once_for_all_misses() -> Result<()> {
    let (peer, _shim) = start_shim(TOKEN).await?;
    let me = alice();
    peer.lock().kv.insert("a".to_string(), b"1".to_vec());
    peer.lock().kv.insert("b".to_string(), b"2".to_vec());
    let result = peer
        .execute(
            pb::ExecutionKind::Invoke,
            1,
            vec![tx(&me, "script", &["put a 9", "getmany a b c"])],
        )
        .await?;
    assert_eq!(
        outcome_text(&result.outcomes[0]),
        Ok(r#"["9","[\"9\",\"2\",null]"]"#.to_string())
    );
    assert_eq!(
        peer.state_requests(),
        vec![vec!["b".to_string(), "c".to_string()]]
    );
    Ok(())
}

#[tokio::test]
async fn range_scans_ask_the_peer_and_merge_pending_writes() -> Result<()> {
    let (peer, _shim) = start_shim(TOKEN).await?;
    let me = alice();
    for key in ["r1", "r2", "r3"] {
        peer.lock().kv.insert(key.to_string(), b"c".to_vec());
    }
    let result = peer
        .execute(
            pb::ExecutionKind::Invoke,
            1,
            vec![
                tx(&me, "del", &["r2"]),
                tx(&me, "script", &["put r25 p", "range r1 r3"]),
            ],
        )
        .await?;
    assert_eq!(
        outcome_text(&result.outcomes[1]),
        Ok(r#"["p","[[\"r1\",\"c\"],[\"r25\",\"p\"]]"]"#.to_string())
    );
    assert_eq!(peer.lock().range_requests, 1);
    Ok(())
}

#[tokio::test]
async fn a_nested_call_carries_its_batch_context() -> Result<()> {
    let (peer, _shim) = start_shim(TOKEN).await?;
    let me = alice();
    let (batch_id, receiver) = peer.send_batch(
        pb::ExecutionKind::Invoke,
        1,
        vec![
            tx(&me, "put", &["a", "1"]),
            tx(&me, "put_then_fail", &["b", "1"]),
            tx(&me, "call", &[ECHO, "f", "x", "y"]),
        ],
    );
    let result = tokio::time::timeout(WAIT, receiver).await??;
    assert_eq!(outcome_text(&result.outcomes[2]), Ok("f(x,y)".to_string()));
    let requests = peer.lock().invoke_requests.clone();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.batch_id, batch_id);
    assert_eq!(request.tx_index, 2);
    assert_eq!(request.succeeded_before, vec![0]);
    assert_eq!(request.chaincode, ECHO);
    assert_eq!(request.function, "f");
    assert_eq!(request.args, vec![b"x".to_vec(), b"y".to_vec()]);
    Ok(())
}

#[tokio::test]
async fn a_peer_error_or_a_bad_creator_fails_only_that_transaction() -> Result<()> {
    let (peer, _shim) = start_shim(TOKEN).await?;
    let me = alice();
    let mut wizard = tx(&me, "put", &["w", "1"]);
    if let Some(creator) = wizard.creator.as_mut() {
        creator.role = "wizard".to_string();
    }
    let result = peer
        .execute(
            pb::ExecutionKind::Invoke,
            1,
            vec![
                tx(&me, "get", &[POISON]),
                wizard,
                tx(&me, "put", &["ok", "1"]),
            ],
        )
        .await?;
    let texts: Vec<Result<String, String>> = result.outcomes.iter().map(outcome_text).collect();
    assert_eq!(texts[0], Err("peer: injected failure".to_string()));
    let bad = texts[1].clone().expect_err("unknown role");
    assert!(
        bad.starts_with("invalid transaction") && bad.contains("wizard"),
        "{bad}"
    );
    assert_eq!(texts[2], Ok("1".to_string()));
    Ok(())
}

#[tokio::test]
async fn an_unknown_execution_kind_fails_every_transaction() -> Result<()> {
    let (peer, _shim) = start_shim(TOKEN).await?;
    let me = alice();
    let (_, receiver) = {
        let batch_id = 999;
        let (sender, receiver) = oneshot::channel();
        peer.lock().waiting.insert(batch_id, sender);
        peer.reply(ToChaincode::ExecuteBatch(pb::ExecuteBatch {
            batch_id,
            kind: 42,
            cache_epoch: 0,
            transactions: vec![tx(&me, "put", &["a", "1"]), tx(&me, "txid", &[])],
            prefetched: Vec::new(),
        }));
        (batch_id, receiver)
    };
    let result = tokio::time::timeout(WAIT, receiver).await??;
    for outcome in &result.outcomes {
        assert_eq!(
            outcome_text(outcome),
            Err("unknown execution kind 42".to_string())
        );
    }
    assert_eq!(result.outcomes.len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_query_runs_while_an_invoke_batch_waits_for_the_peer() -> Result<()> {
    let (peer, _shim) = start_shim(TOKEN).await?;
    let me = alice();
    peer.hold_state_responses();
    let (_, invoke) = peer.send_batch(
        pb::ExecutionKind::Invoke,
        1,
        vec![tx(&me, "get", &["slow"])],
    );
    peer.until("the invoke's state request", |s| !s.held.is_empty())
        .await?;

    let query = peer
        .execute(pb::ExecutionKind::Query, 1, vec![tx(&me, "args", &["q"])])
        .await?;
    assert_eq!(outcome_text(&query.outcomes[0]), Ok(r#"["q"]"#.to_string()));

    peer.release_state_responses();
    let invoke = tokio::time::timeout(WAIT, invoke).await??;
    assert_eq!(outcome_text(&invoke.outcomes[0]), Ok(NONE.to_string()));
    Ok(())
}

#[tokio::test]
async fn invoke_batches_complete_one_after_another_in_arrival_order() -> Result<()> {
    let (peer, _shim) = start_shim(TOKEN).await?;
    let me = alice();
    peer.hold_state_responses();
    let (first_id, first) =
        peer.send_batch(pb::ExecutionKind::Invoke, 1, vec![tx(&me, "get", &["k"])]);
    let (second_id, second) = peer.send_batch(
        pb::ExecutionKind::Init,
        1,
        vec![tx(&me, "put", &["k", "2"])],
    );
    peer.until("the first batch's state request", |s| !s.held.is_empty())
        .await?;
    // The second batch needs no state; it would finish now if it ran beside the first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(peer.lock().completed.is_empty(), "the second batch waited");
    peer.release_state_responses();
    let first = tokio::time::timeout(WAIT, first).await??;
    let second = tokio::time::timeout(WAIT, second).await??;
    assert_eq!(peer.lock().completed, vec![first_id, second_id]);
    assert_eq!(outcome_text(&first.outcomes[0]), Ok(NONE.to_string()));
    assert_eq!(outcome_text(&second.outcomes[0]), Ok("2".to_string()));
    Ok(())
}

#[tokio::test]
async fn serve_returns_ok_when_the_peer_closes_the_stream() -> Result<()> {
    let (peer, shim) = start_shim(TOKEN).await?;
    let register = peer.lock().register.clone().context("registered")?;
    assert_eq!(
        (
            register.name.as_str(),
            register.version.as_str(),
            register.launch_token.as_str()
        ),
        ("probe", "1.0", TOKEN)
    );
    peer.lock().to_chaincode = None;
    let end = tokio::time::timeout(WAIT, shim).await??;
    assert!(end.is_ok(), "{end:?}");
    Ok(())
}

#[tokio::test]
async fn a_broken_stream_fails_pending_requests_and_serve() -> Result<()> {
    let (peer, shim) = start_shim(TOKEN).await?;
    let me = alice();
    peer.hold_state_responses();
    let _pending = peer.send_batch(pb::ExecutionKind::Invoke, 1, vec![tx(&me, "get", &["k"])]);
    peer.until("the state request", |s| !s.held.is_empty())
        .await?;
    peer.send(Err(Status::internal("the peer fell over")));
    let end = tokio::time::timeout(WAIT, shim).await??;
    match end {
        Err(ShimError::Stream(reason)) => {
            assert!(reason.contains("the peer fell over"), "{reason}")
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_wrong_launch_token_is_a_registration_error() -> Result<()> {
    let peer = FakePeer::start().await?;
    let config = ShimConfig::new(&peer.address.to_string(), "probe", "1.0", "wrong");
    let end = tokio::time::timeout(WAIT, serve(ProbeChaincode, config)).await?;
    match end {
        Err(error @ ShimError::Register { .. }) => {
            let text = error.to_string();
            assert!(
                text.contains("probe 1.0") && text.contains("wrong launch token"),
                "{text}"
            );
        }
        other => panic!("expected a registration error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn an_unreachable_peer_is_a_connect_error() -> Result<()> {
    // Bind then drop a listener so that the port is (very likely) closed.
    let address = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let config = ShimConfig::new(&address.to_string(), "probe", "1.0", TOKEN);
    let end = tokio::time::timeout(WAIT, serve(ProbeChaincode, config)).await?;
    match end {
        Err(error @ ShimError::Connect(_)) => {
            assert!(error.to_string().contains(&address.to_string()), "{error}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    Ok(())
}
