//! The gRPC shim: registers the chaincode with its peer over `ChaincodeSupport.Open` and runs the
//! batches the peer sends; invariant: INVOKE and INIT batches run one at a time in arrival
//! order over a read cache that is used only under the epoch it was filled in, QUERY and NESTED
//! batches run concurrently and neither read nor fill that cache, and every peer reply reaches
//! the request that asked for it (or the request fails when the stream ends).
//!
//! Decisions the protocol leaves open:
//! * QUERY and NESTED batches do not even read the cache: it may hold the writes of an INVOKE
//!   batch the peer has not committed yet, and a nested call's view of state is the peer's.
//! * Range scans always ask the peer and never fill the cache.
//! * The values a batch carries for the read hints answer reads the cache cannot (they are what
//!   a StateRequest for that batch would return), and fill the cache like a peer's answer.
//! * Once a request of a transaction failed (peer error, stream gone), the transaction fails
//!   with that error even if the chaincode ignored it: what it computed rests on a failed read.
//! * Outcomes of QUERY batches report their writes like any other; the peer discards them.
//! * A transaction whose context cannot be decoded (no creator, unknown role) fails alone.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use weft_proto::pb;
use weft_proto::pb::chaincode_message::Kind as Outgoing;
use weft_proto::pb::chaincode_support_client::ChaincodeSupportClient;
use weft_proto::pb::peer_message::Kind as Incoming;

use crate::overlay::{self, Writes};
use crate::tx::{self, Backend, EntryPoint, NestedCall, TxInput, TxOutcome};
use crate::{Chaincode, ChaincodeError, Creator, ReadHint};

/// How many values the read cache holds before it starts over.
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

/// Messages queued towards the peer before senders wait.
pub(crate) const OUTBOUND_CAPACITY: usize = 1024;

/// Where the peer is and who this chaincode is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimConfig {
    /// The peer's chaincode endpoint, host:port (or a URL).
    pub peer_address: String,
    /// The chaincode's name and version, as in its package manifest.
    pub name: String,
    pub version: String,
    /// The token the peer gave this launch.
    pub launch_token: String,
    /// Entries of the read cache; 0 turns the cache off.
    pub cache_capacity: usize,
}

impl ShimConfig {
    pub fn new(peer_address: &str, name: &str, version: &str, launch_token: &str) -> ShimConfig {
        ShimConfig {
            peer_address: peer_address.to_string(),
            name: name.to_string(),
            version: version.to_string(),
            launch_token: launch_token.to_string(),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
        }
    }
}

/// Why the shim stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{0}")]
    Connect(#[from] weft_proto::ClientError),
    #[error("the peer at {address} refused the chaincode stream: {reason}")]
    Open { address: String, reason: String },
    #[error("the peer did not register chaincode {name} {version}: {reason}")]
    Register {
        name: String,
        version: String,
        reason: String,
    },
    #[error("the stream to the peer broke: {0}")]
    Stream(String),
}

/// Connects to the peer, registers, and runs batches until the peer ends the stream:
/// `Ok(())` when it closes the stream cleanly, an error when it cannot be reached, refuses the
/// registration, or the stream breaks.
pub async fn serve<C: Chaincode>(chaincode: C, config: ShimConfig) -> Result<(), ShimError> {
    let channel = weft_proto::client::connect_channel(&config.peer_address).await?;
    let mut client = ChaincodeSupportClient::new(channel)
        .max_decoding_message_size(weft_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(weft_proto::MAX_MESSAGE_BYTES);

    let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let register = pb::ChaincodeMessage {
        kind: Some(Outgoing::Register(pb::Register {
            name: config.name.clone(),
            version: config.version.clone(),
            launch_token: config.launch_token.clone(),
            read_hints: chaincode.read_hints().iter().map(ReadHint::to_pb).collect(),
        })),
    };
    outbound
        .send(register)
        .await
        .expect("the receiver is held below, so the queue is open");
    let inbound = client
        .open(ReceiverStream::new(outbound_rx))
        .await
        .map_err(|status| ShimError::Open {
            address: config.peer_address.clone(),
            reason: describe(&status),
        })?
        .into_inner();
    serve_stream(Arc::new(chaincode), &config, outbound, inbound).await
}

/// Runs the chaincode side of one stream, whichever end dialled: `outbound` already carries
/// Register; waits for Registered, then runs batches until the peer ends the stream.
pub(crate) async fn serve_stream<C: Chaincode>(
    chaincode: Arc<C>,
    config: &ShimConfig,
    outbound: mpsc::Sender<pb::ChaincodeMessage>,
    mut inbound: tonic::Streaming<pb::PeerMessage>,
) -> Result<(), ShimError> {
    let refused = |reason: String| ShimError::Register {
        name: config.name.clone(),
        version: config.version.clone(),
        reason,
    };
    match inbound.message().await {
        Ok(Some(pb::PeerMessage {
            kind: Some(Incoming::Registered(registered)),
        })) => {
            tracing::info!(
                chaincode = %config.name,
                version = %config.version,
                peer = %registered.peer_id,
                "registered with the peer"
            );
        }
        Ok(Some(other)) => {
            return Err(refused(format!(
                "expected Registered as the first message, got {}",
                incoming_name(&other)
            )));
        }
        Ok(None) => {
            return Err(refused(
                "the peer closed the stream (is the launch token right?)".to_string(),
            ));
        }
        Err(status) => return Err(refused(describe(&status))),
    }

    let link = Arc::new(Link {
        chaincode: config.name.clone(),
        outbound,
        router: Router::default(),
        next_request: AtomicU64::new(1),
    });
    let (ordered, ordered_rx) = mpsc::unbounded_channel();
    let worker = tokio::spawn(ordered_worker(
        Arc::clone(&chaincode),
        Arc::clone(&link),
        ordered_rx,
        config.cache_capacity,
    ));
    let mut concurrent = JoinSet::new();

    let end = loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break Ok(()),
            Err(status) => break Err(ShimError::Stream(describe(&status))),
        };
        match message.kind {
            Some(Incoming::ExecuteBatch(batch)) => {
                let kind = pb::ExecutionKind::try_from(batch.kind);
                tracing::debug!(
                    batch_id = batch.batch_id,
                    kind = batch.kind,
                    transactions = batch.transactions.len(),
                    "batch received"
                );
                match kind {
                    Ok(pb::ExecutionKind::Invoke | pb::ExecutionKind::Init) => {
                        if ordered.send(batch).is_err() {
                            break Err(ShimError::Stream(
                                "the worker for ordered batches stopped".to_string(),
                            ));
                        }
                    }
                    _ => {
                        let chaincode = Arc::clone(&chaincode);
                        let link = Arc::clone(&link);
                        concurrent.spawn(async move {
                            let result = execute(chaincode.as_ref(), &link, batch, None).await;
                            link.send_result(result).await;
                        });
                    }
                }
            }
            Some(Incoming::StateResponse(response)) => {
                link.router
                    .deliver(response.request_id, Reply::State(response));
            }
            Some(Incoming::RangeResponse(response)) => {
                link.router
                    .deliver(response.request_id, Reply::Range(response));
            }
            Some(Incoming::InvokeResponse(response)) => {
                link.router
                    .deliver(response.request_id, Reply::Invoke(response));
            }
            Some(Incoming::Registered(_)) => {
                tracing::warn!("the peer sent Registered twice; ignored");
            }
            None => tracing::warn!("the peer sent an empty message; ignored"),
        }
        while concurrent.try_join_next().is_some() {}
    };

    let reason = match &end {
        Ok(()) => "the peer closed the stream".to_string(),
        Err(error) => error.to_string(),
    };
    tracing::info!(reason = %reason, "chaincode stream ended");
    link.router.close(reason);
    worker.abort();
    concurrent.abort_all();
    end
}

fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn incoming_name(message: &pb::PeerMessage) -> &'static str {
    match message.kind {
        Some(Incoming::Registered(_)) => "Registered",
        Some(Incoming::ExecuteBatch(_)) => "ExecuteBatch",
        Some(Incoming::StateResponse(_)) => "StateResponse",
        Some(Incoming::RangeResponse(_)) => "RangeResponse",
        Some(Incoming::InvokeResponse(_)) => "InvokeResponse",
        None => "an empty message",
    }
}

/// Runs INVOKE and INIT batches one after another, in arrival order, owning the read cache.
async fn ordered_worker<C: Chaincode>(
    chaincode: Arc<C>,
    link: Arc<Link>,
    mut batches: mpsc::UnboundedReceiver<pb::ExecuteBatch>,
    cache_capacity: usize,
) {
    let mut cache = ReadCache::new(cache_capacity);
    while let Some(batch) = batches.recv().await {
        cache.enter_epoch(batch.cache_epoch);
        let result = execute(chaincode.as_ref(), &link, batch, Some(&mut cache)).await;
        link.send_result(result).await;
    }
}

/// Runs one batch and builds its result. With a cache (INVOKE and INIT), reads go through it
/// and the batch's successful writes are applied to it at the end.
async fn execute<C: Chaincode>(
    chaincode: &C,
    link: &Link,
    batch: pb::ExecuteBatch,
    mut cache: Option<&mut ReadCache>,
) -> pb::BatchResult {
    let batch_id = batch.batch_id;
    let count = batch.transactions.len();
    let entry = match pb::ExecutionKind::try_from(batch.kind) {
        Ok(pb::ExecutionKind::Init) => EntryPoint::Init,
        Ok(pb::ExecutionKind::Invoke | pb::ExecutionKind::Query | pb::ExecutionKind::Nested) => {
            EntryPoint::Invoke
        }
        _ => {
            return failed_batch(
                batch_id,
                count,
                &format!("unknown execution kind {}", batch.kind),
            );
        }
    };
    let inputs = batch.transactions.into_iter().map(tx_input).collect();
    let run = {
        let mut backend = PeerBackend {
            link,
            batch_id,
            cache: cache.as_deref_mut(),
            prefetched: prefetched_values(batch.prefetched),
        };
        AssertUnwindSafe(tx::run_batch(chaincode, entry, inputs, &mut backend))
            .catch_unwind()
            .await
    };
    match run {
        Ok((outcomes, writes)) => {
            if let Some(cache) = cache {
                cache.apply(&writes);
            }
            pb::BatchResult {
                batch_id,
                outcomes: outcomes
                    .into_iter()
                    .map(|outcome| outcome_to_pb(outcome, &link.chaincode))
                    .collect(),
            }
        }
        Err(panic) => {
            if let Some(cache) = cache {
                cache.clear();
            }
            let reason = format!(
                "chaincode shim failed while running the batch: {}",
                tx::panic_message(panic.as_ref())
            );
            tracing::error!(batch_id, reason = %reason);
            failed_batch(batch_id, count, &reason)
        }
    }
}

/// The values the peer sent with a batch for the chaincode's read hints, by key (a key that is
/// not UTF-8 cannot be read by a chaincode, so it is dropped).
fn prefetched_values(prefetched: Vec<pb::PrefetchedValue>) -> HashMap<String, Option<Vec<u8>>> {
    prefetched
        .into_iter()
        .filter_map(|entry| {
            let key = String::from_utf8(entry.key.to_vec()).ok()?;
            Some((key, entry.value.map(|value| value.to_vec())))
        })
        .collect()
}

fn tx_input(context: pb::TxContext) -> Result<TxInput, ChaincodeError> {
    let creator = context.creator.ok_or_else(|| {
        ChaincodeError::BadTransaction("the transaction carries no creator".to_string())
    })?;
    Ok(TxInput {
        function: context.function,
        args: context.args.into_iter().map(|a| a.to_vec()).collect(),
        tx_id: hex::encode(&context.tx_id),
        creator: Creator::try_from(creator)?,
    })
}

fn outcome_to_pb(outcome: TxOutcome, chaincode: &str) -> pb::TxOutcome {
    match outcome.result {
        Ok(payload) => pb::TxOutcome {
            status: pb::OutcomeStatus::Ok as i32,
            payload: payload.into(),
            message: String::new(),
            event: outcome.event.map(|event| pb::ChaincodeEvent {
                chaincode: chaincode.to_string(),
                name: event.name,
                payload: event.payload.into(),
            }),
            writes: overlay::to_kv_writes(&outcome.writes),
        },
        Err(error) => error_outcome(&error.to_string()),
    }
}

fn error_outcome(message: &str) -> pb::TxOutcome {
    pb::TxOutcome {
        status: pb::OutcomeStatus::Error as i32,
        payload: Default::default(),
        message: message.to_string(),
        event: None,
        writes: Vec::new(),
    }
}

fn failed_batch(batch_id: u64, count: usize, message: &str) -> pb::BatchResult {
    pb::BatchResult {
        batch_id,
        outcomes: (0..count).map(|_| error_outcome(message)).collect(),
    }
}

/// Values this chaincode read or wrote in INVOKE and INIT batches, valid for one epoch.
struct ReadCache {
    epoch: Option<u64>,
    entries: HashMap<String, Option<Vec<u8>>>,
    capacity: usize,
}

impl ReadCache {
    fn new(capacity: usize) -> ReadCache {
        ReadCache {
            epoch: None,
            entries: HashMap::new(),
            capacity,
        }
    }

    /// Drops everything unless `epoch` is the one the cache was filled under.
    fn enter_epoch(&mut self, epoch: u64) {
        if self.epoch != Some(epoch) {
            if !self.entries.is_empty() {
                tracing::debug!(old = ?self.epoch, new = epoch, "cache epoch changed; cache dropped");
            }
            self.entries.clear();
            self.epoch = Some(epoch);
        }
    }

    fn get(&self, key: &str) -> Option<&Option<Vec<u8>>> {
        self.entries.get(key)
    }

    fn insert(&mut self, key: String, value: Option<Vec<u8>>) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.clear();
        }
        self.entries.insert(key, value);
    }

    fn apply(&mut self, writes: &Writes) {
        for (key, value) in writes {
            self.insert(key.clone(), value.clone());
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

/// The peer's answer to one request.
enum Reply {
    State(pb::StateResponse),
    Range(pb::RangeResponse),
    Invoke(pb::InvokeResponse),
}

/// Requests waiting for the peer's answer, by request id.
#[derive(Default)]
struct Router {
    state: Mutex<RouterState>,
}

#[derive(Default)]
struct RouterState {
    waiting: HashMap<u64, oneshot::Sender<Reply>>,
    /// Why the stream ended, once it has.
    closed: Option<String>,
}

impl Router {
    fn lock(&self) -> MutexGuard<'_, RouterState> {
        // The map stays consistent whatever panicked while holding it: every operation is a
        // single insert or remove.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait(&self, request_id: u64) -> Result<oneshot::Receiver<Reply>, ChaincodeError> {
        let mut state = self.lock();
        if let Some(reason) = &state.closed {
            return Err(ChaincodeError::Peer(reason.clone()));
        }
        let (sender, receiver) = oneshot::channel();
        state.waiting.insert(request_id, sender);
        Ok(receiver)
    }

    fn forget(&self, request_id: u64) {
        self.lock().waiting.remove(&request_id);
    }

    fn deliver(&self, request_id: u64, reply: Reply) {
        let sender = self.lock().waiting.remove(&request_id);
        match sender {
            Some(sender) => {
                // The requester may have gone (its batch was abandoned); nothing to do then.
                let _ = sender.send(reply);
            }
            None => tracing::warn!(request_id, "the peer answered a request nobody waits for"),
        }
    }

    fn close(&self, reason: String) {
        let mut state = self.lock();
        state.closed = Some(reason);
        state.waiting.clear();
    }

    fn closed_reason(&self) -> String {
        self.lock()
            .closed
            .clone()
            .unwrap_or_else(|| "the request was dropped".to_string())
    }
}

/// The shim's side of the stream, shared by every running batch.
struct Link {
    /// This chaincode's name, stamped on its events.
    chaincode: String,
    outbound: mpsc::Sender<pb::ChaincodeMessage>,
    router: Router,
    next_request: AtomicU64,
}

impl Link {
    async fn request(&self, build: impl FnOnce(u64) -> Outgoing) -> Result<Reply, ChaincodeError> {
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let receiver = self.router.wait(request_id)?;
        let message = pb::ChaincodeMessage {
            kind: Some(build(request_id)),
        };
        if self.outbound.send(message).await.is_err() {
            self.router.forget(request_id);
            return Err(ChaincodeError::Peer(
                "the stream to the peer is closed".to_string(),
            ));
        }
        receiver
            .await
            .map_err(|_| ChaincodeError::Peer(self.router.closed_reason()))
    }

    async fn send_result(&self, result: pb::BatchResult) {
        let batch_id = result.batch_id;
        let message = pb::ChaincodeMessage {
            kind: Some(Outgoing::BatchResult(result)),
        };
        if self.outbound.send(message).await.is_err() {
            tracing::warn!(
                batch_id,
                "the stream closed before the batch result could be sent"
            );
        }
    }
}

/// Committed state through the peer, with the read cache for INVOKE and INIT batches and the
/// values the peer sent with the batch for the read hints.
struct PeerBackend<'a> {
    link: &'a Link,
    batch_id: u64,
    cache: Option<&'a mut ReadCache>,
    prefetched: HashMap<String, Option<Vec<u8>>>,
}

fn unexpected(request: &str) -> ChaincodeError {
    ChaincodeError::Peer(format!(
        "the peer answered a {request} with another kind of reply"
    ))
}

fn peer_error(error: String) -> Result<(), ChaincodeError> {
    if error.is_empty() {
        Ok(())
    } else {
        Err(ChaincodeError::Peer(error))
    }
}

#[async_trait]
impl Backend for PeerBackend<'_> {
    async fn read(&mut self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, ChaincodeError> {
        let mut values = vec![None; keys.len()];
        let mut misses = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            if let Some(value) = self.cache.as_ref().and_then(|cache| cache.get(key)) {
                values[index] = value.clone();
            } else if let Some(value) = self.prefetched.get(*key) {
                if let Some(cache) = self.cache.as_deref_mut() {
                    cache.insert(key.to_string(), value.clone());
                }
                values[index] = value.clone();
            } else {
                misses.push(index);
            }
        }
        if misses.is_empty() {
            return Ok(values);
        }
        let batch_id = self.batch_id;
        let request_keys = misses
            .iter()
            .map(|&i| keys[i].as_bytes().to_vec().into())
            .collect();
        let reply = self
            .link
            .request(|request_id| {
                Outgoing::StateRequest(pb::StateRequest {
                    batch_id,
                    request_id,
                    keys: request_keys,
                })
            })
            .await?;
        let Reply::State(response) = reply else {
            return Err(unexpected("StateRequest"));
        };
        peer_error(response.error)?;
        if response.values.len() != misses.len() {
            return Err(ChaincodeError::Peer(format!(
                "asked for {} keys, the peer answered {} values",
                misses.len(),
                response.values.len()
            )));
        }
        for (index, value) in misses.into_iter().zip(response.values) {
            let value = value.value.map(|v| v.to_vec());
            if let Some(cache) = self.cache.as_deref_mut() {
                cache.insert(keys[index].to_string(), value.clone());
            }
            values[index] = value;
        }
        Ok(values)
    }

    async fn range(
        &mut self,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ChaincodeError> {
        let batch_id = self.batch_id;
        let reply = self
            .link
            .request(|request_id| {
                Outgoing::RangeRequest(pb::RangeRequest {
                    batch_id,
                    request_id,
                    start: start.as_bytes().to_vec().into(),
                    end: end.as_bytes().to_vec().into(),
                })
            })
            .await?;
        let Reply::Range(response) = reply else {
            return Err(unexpected("RangeRequest"));
        };
        peer_error(response.error)?;
        response
            .entries
            .into_iter()
            .map(|entry| {
                let key = String::from_utf8(entry.key.to_vec()).map_err(|_| {
                    ChaincodeError::Peer("the peer returned a key that is not UTF-8".to_string())
                })?;
                Ok((key, entry.value.to_vec()))
            })
            .collect()
    }

    async fn invoke(&mut self, call: NestedCall<'_>) -> Result<Vec<u8>, ChaincodeError> {
        let batch_id = self.batch_id;
        let reply = self
            .link
            .request(|request_id| {
                Outgoing::InvokeRequest(pb::InvokeRequest {
                    batch_id,
                    request_id,
                    tx_index: call.tx_index,
                    succeeded_before: call.succeeded_before.to_vec(),
                    chaincode: call.chaincode.to_string(),
                    function: call.function.to_string(),
                    args: call.args.iter().map(|a| a.clone().into()).collect(),
                })
            })
            .await?;
        let Reply::Invoke(response) = reply else {
            return Err(unexpected("InvokeRequest"));
        };
        match pb::OutcomeStatus::try_from(response.status) {
            Ok(pb::OutcomeStatus::Ok) => Ok(response.payload.to_vec()),
            Ok(pb::OutcomeStatus::Error) => Err(ChaincodeError::InvokeFailed {
                chaincode: call.chaincode.to_string(),
                function: call.function.to_string(),
                message: response.message,
            }),
            _ => Err(ChaincodeError::Peer(format!(
                "the peer answered the call to {} with status {}",
                call.chaincode, response.status
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_dropped_when_the_epoch_changes() {
        let mut cache = ReadCache::new(10);
        cache.enter_epoch(1);
        cache.insert("a".into(), Some(b"1".to_vec()));
        cache.enter_epoch(1);
        assert!(cache.get("a").is_some());
        cache.enter_epoch(2);
        assert!(cache.get("a").is_none());
    }

    #[test]
    fn cache_starts_over_when_full_and_can_be_off() {
        let mut cache = ReadCache::new(2);
        cache.enter_epoch(0);
        cache.insert("a".into(), None);
        cache.insert("b".into(), None);
        cache.insert("b".into(), Some(vec![1]));
        assert_eq!(cache.entries.len(), 2);
        cache.insert("c".into(), None);
        assert_eq!(cache.entries.len(), 1);
        assert!(cache.get("c").is_some());

        let mut off = ReadCache::new(0);
        off.insert("a".into(), None);
        assert!(off.get("a").is_none());
    }

    #[test]
    fn closed_router_fails_new_and_waiting_requests() {
        let router = Router::default();
        let mut waiting = router.wait(1).expect("open router");
        router.close("gone".to_string());
        assert!(waiting.try_recv().is_err());
        assert_eq!(router.closed_reason(), "gone");
        assert!(matches!(router.wait(2), Err(ChaincodeError::Peer(r)) if r == "gone"));
    }

    #[test]
    fn a_transaction_without_creator_or_with_an_unknown_role_fails_alone() {
        let context = pb::TxContext::default();
        assert!(matches!(
            tx_input(context),
            Err(ChaincodeError::BadTransaction(_))
        ));
        let context = pb::TxContext {
            creator: Some(pb::Creator {
                role: "wizard".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(tx_input(context).is_err());
    }
}
