//! The peer side of the chaincode stream (`weft.v1.ChaincodeSupport/Open`): registration with
//! a launch token, batches of transactions out, state reads and nested calls answered, one
//! result per batch back. A session that breaks fails every batch it was running; nothing a
//! chaincode sends can stop the peer.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_proto::pb;
use weft_proto::pb::chaincode_message::Kind as InKind;
use weft_proto::pb::peer_message::Kind as OutKind;

use super::read_hints::{PREFETCH_BUDGET_BYTES, ReadHints};
use crate::state::StateView;
use crate::types::{KvWrite, Transaction};

/// What a batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionKind {
    Invoke,
    Init,
    Query,
    Nested,
}

impl ExecutionKind {
    fn to_pb(self) -> pb::ExecutionKind {
        match self {
            ExecutionKind::Invoke => pb::ExecutionKind::Invoke,
            ExecutionKind::Init => pb::ExecutionKind::Init,
            ExecutionKind::Query => pb::ExecutionKind::Query,
            ExecutionKind::Nested => pb::ExecutionKind::Nested,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeStatus {
    Ok,
    Error,
}

/// One transaction's outcome as the chaincode reported it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: OutcomeStatus,
    pub payload: Bytes,
    pub message: String,
    pub event: Option<(String, Bytes)>,
    pub writes: Vec<KvWrite>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("the chaincode exited or closed its stream while running the batch")]
    Closed,
    #[error("the chaincode did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the chaincode answered with a malformed message: {0}")]
    Protocol(String),
}

/// A call from a running transaction into another chaincode.
#[derive(Debug, Clone)]
pub struct NestedCall {
    pub tx_index: usize,
    pub succeeded_before: Vec<usize>,
    pub chaincode: String,
    pub function: String,
    pub args: Vec<Bytes>,
}

/// Answers nested calls for one batch.
#[async_trait]
pub trait NestedInvoker: Send + Sync {
    async fn invoke(&self, call: NestedCall) -> Result<Bytes, String>;
}

struct PendingBatch {
    view: Arc<dyn StateView>,
    invoker: Option<Arc<dyn NestedInvoker>>,
    expected: usize,
    done: oneshot::Sender<Result<Vec<Outcome>, SessionError>>,
}

/// What the chaincode streams of a peer asked of it, for the metrics: reads answered by a
/// round trip against values sent ahead for read hints.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// StateRequests answered (one round trip each).
    pub state_requests: AtomicU64,
    /// Keys those StateRequests named.
    pub state_request_keys: AtomicU64,
    /// Values sent with batches for read hints.
    pub prefetched_keys: AtomicU64,
}

/// One registered chaincode instance's stream.
pub struct Session {
    name: String,
    version: String,
    read_hints: ReadHints,
    stats: Arc<StreamStats>,
    outbound: mpsc::Sender<Result<pb::PeerMessage, Status>>,
    batches: Mutex<HashMap<u64, PendingBatch>>,
    next_batch: AtomicU64,
    closed: AtomicBool,
}

impl Session {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn batches(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PendingBatch>> {
        self.batches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `transactions` as one batch and waits for every outcome.
    pub async fn execute(
        &self,
        kind: ExecutionKind,
        cache_epoch: u64,
        transactions: &[Transaction],
        view: Arc<dyn StateView>,
        invoker: Option<Arc<dyn NestedInvoker>>,
        timeout: Duration,
    ) -> Result<Vec<Outcome>, SessionError> {
        if self.is_closed() {
            return Err(SessionError::Closed);
        }
        let batch_id = self.next_batch.fetch_add(1, Ordering::SeqCst);
        let (done, result) = oneshot::channel();
        let prefetched =
            self.read_hints
                .prefetch(transactions, view.as_ref(), PREFETCH_BUDGET_BYTES);
        self.stats
            .prefetched_keys
            .fetch_add(prefetched.len() as u64, Ordering::Relaxed);
        self.batches().insert(
            batch_id,
            PendingBatch {
                view,
                invoker,
                expected: transactions.len(),
                done,
            },
        );
        let message = pb::ExecuteBatch {
            batch_id,
            kind: kind.to_pb() as i32,
            cache_epoch,
            transactions: transactions.iter().map(tx_context).collect(),
            prefetched,
        };
        let sent = self
            .outbound
            .send(Ok(pb::PeerMessage {
                kind: Some(OutKind::ExecuteBatch(message)),
            }))
            .await;
        if sent.is_err() {
            self.batches().remove(&batch_id);
            return Err(SessionError::Closed);
        }
        match tokio::time::timeout(timeout, result).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(SessionError::Closed),
            Err(_) => {
                self.batches().remove(&batch_id);
                Err(SessionError::Timeout(timeout))
            }
        }
    }

    async fn send(&self, kind: OutKind) {
        let _ = self
            .outbound
            .send(Ok(pb::PeerMessage { kind: Some(kind) }))
            .await;
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for (_, batch) in self.batches().drain() {
            let _ = batch.done.send(Err(SessionError::Closed));
        }
    }

    fn batch_view(&self, batch_id: u64) -> Option<Arc<dyn StateView>> {
        self.batches().get(&batch_id).map(|b| b.view.clone())
    }

    async fn handle(self: &Arc<Self>, message: InKind) -> Result<(), SessionError> {
        match message {
            InKind::Register(_) => Err(SessionError::Protocol("registered twice".into())),
            InKind::BatchResult(result) => {
                let Some(batch) = self.batches().remove(&result.batch_id) else {
                    // A batch that timed out: its late answer is dropped.
                    return Ok(());
                };
                let outcomes = outcomes_from_pb(result.outcomes, batch.expected);
                let failed = outcomes.as_ref().err().cloned();
                let _ = batch.done.send(outcomes);
                match failed {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }
            InKind::StateRequest(request) => {
                self.stats.state_requests.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .state_request_keys
                    .fetch_add(request.keys.len() as u64, Ordering::Relaxed);
                let response = match self.batch_view(request.batch_id) {
                    None => pb::StateResponse {
                        request_id: request.request_id,
                        values: vec![],
                        error: format!("batch {} is not running", request.batch_id),
                    },
                    Some(view) => {
                        let values: Result<Vec<_>, String> = request
                            .keys
                            .iter()
                            .map(|k| view.get(k).map(|value| pb::OptionalValue { value }))
                            .collect();
                        match values {
                            Ok(values) => pb::StateResponse {
                                request_id: request.request_id,
                                values,
                                error: String::new(),
                            },
                            Err(error) => pb::StateResponse {
                                request_id: request.request_id,
                                values: vec![],
                                error,
                            },
                        }
                    }
                };
                self.send(OutKind::StateResponse(response)).await;
                Ok(())
            }
            InKind::RangeRequest(request) => {
                let response = match self.batch_view(request.batch_id) {
                    None => Err(format!("batch {} is not running", request.batch_id)),
                    Some(view) => view.range(&request.start, &request.end),
                };
                let response = match response {
                    Ok(entries) => pb::RangeResponse {
                        request_id: request.request_id,
                        entries: entries
                            .into_iter()
                            .map(|(key, value)| pb::KeyValue { key, value })
                            .collect(),
                        error: String::new(),
                    },
                    Err(error) => pb::RangeResponse {
                        request_id: request.request_id,
                        entries: vec![],
                        error,
                    },
                };
                self.send(OutKind::RangeResponse(response)).await;
                Ok(())
            }
            InKind::InvokeRequest(request) => {
                let invoker = self
                    .batches()
                    .get(&request.batch_id)
                    .map(|b| b.invoker.clone());
                let session = self.clone();
                // Nested calls run on their own task so this stream keeps serving reads.
                tokio::spawn(async move {
                    let request_id = request.request_id;
                    let result = match invoker {
                        None => Err(format!("batch {} is not running", request.batch_id)),
                        Some(None) => {
                            Err("this kind of execution cannot call other chaincode".into())
                        }
                        Some(Some(invoker)) => {
                            invoker
                                .invoke(NestedCall {
                                    tx_index: request.tx_index as usize,
                                    succeeded_before: request
                                        .succeeded_before
                                        .iter()
                                        .map(|i| *i as usize)
                                        .collect(),
                                    chaincode: request.chaincode,
                                    function: request.function,
                                    args: request.args,
                                })
                                .await
                        }
                    };
                    let response = match result {
                        Ok(payload) => pb::InvokeResponse {
                            request_id,
                            status: pb::OutcomeStatus::Ok as i32,
                            payload,
                            message: String::new(),
                        },
                        Err(message) => pb::InvokeResponse {
                            request_id,
                            status: pb::OutcomeStatus::Error as i32,
                            payload: Bytes::new(),
                            message,
                        },
                    };
                    session.send(OutKind::InvokeResponse(response)).await;
                });
                Ok(())
            }
        }
    }
}

fn tx_context(tx: &Transaction) -> pb::TxContext {
    pb::TxContext {
        tx_id: Bytes::copy_from_slice(tx.id().as_bytes()),
        creator: Some(pb::Creator {
            certificate: tx.signed.signer.clone(),
            name: tx.creator.name.clone(),
            organization: tx.creator.organization.clone(),
            role: tx.creator.role.as_str().to_string(),
        }),
        function: tx.function.clone(),
        args: tx.args.clone(),
        created_unix_ms: tx.created_unix_ms,
    }
}

fn outcomes_from_pb(
    outcomes: Vec<pb::TxOutcome>,
    expected: usize,
) -> Result<Vec<Outcome>, SessionError> {
    if outcomes.len() != expected {
        return Err(SessionError::Protocol(format!(
            "{} outcomes for a batch of {expected}",
            outcomes.len()
        )));
    }
    outcomes
        .into_iter()
        .map(|o| {
            let status = match pb::OutcomeStatus::try_from(o.status) {
                Ok(pb::OutcomeStatus::Ok) => OutcomeStatus::Ok,
                Ok(pb::OutcomeStatus::Error) => OutcomeStatus::Error,
                _ => {
                    return Err(SessionError::Protocol(format!(
                        "outcome status {}",
                        o.status
                    )));
                }
            };
            let mut writes: Vec<KvWrite> = o
                .writes
                .into_iter()
                .map(crate::types::convert::write_from_pb)
                .collect();
            // Canonical order whatever the chaincode sent: one write per key, sorted.
            writes.sort_by(|a, b| a.key.cmp(&b.key));
            writes.dedup_by(|later, earlier| later.key == earlier.key);
            Ok(Outcome {
                status,
                payload: o.payload,
                message: o.message,
                event: o.event.map(|e| (e.name, e.payload)),
                writes: if status == OutcomeStatus::Ok {
                    writes
                } else {
                    Vec::new()
                },
            })
        })
        .collect()
}

/// A launch waiting for its instance to register.
pub struct PendingLaunch {
    pub name: String,
    pub version: String,
    pub registered: oneshot::Sender<Arc<Session>>,
}

/// Launch tokens issued and not yet claimed, and the counters every session adds to.
#[derive(Default)]
pub struct Registrations {
    pending: Mutex<HashMap<String, PendingLaunch>>,
    stats: Arc<StreamStats>,
}

impl Registrations {
    /// Registrations whose sessions count into `stats`.
    pub fn new(stats: Arc<StreamStats>) -> Registrations {
        Registrations {
            pending: Mutex::default(),
            stats,
        }
    }

    pub fn expect(&self, token: String, launch: PendingLaunch) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, launch);
    }

    pub fn forget(&self, token: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    fn claim(&self, register: &pb::Register) -> Result<PendingLaunch, Status> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get(&register.launch_token) {
            None => Err(Status::permission_denied(
                "unknown launch token: chaincode is started by the peer, not by hand (use the external runtime for chaincode run as a service)",
            )),
            Some(launch) if launch.name != register.name || launch.version != register.version => {
                Err(Status::permission_denied(format!(
                    "this launch token is for {}:{}, not {}:{}",
                    launch.name, launch.version, register.name, register.version
                )))
            }
            Some(_) => Ok(pending
                .remove(&register.launch_token)
                .expect("checked present above")),
        }
    }
}

/// The gRPC service chaincode instances connect to.
pub struct ChaincodeSupportService {
    registrations: Arc<Registrations>,
    peer_id: String,
}

impl ChaincodeSupportService {
    pub fn new(registrations: Arc<Registrations>, peer_id: String) -> Self {
        ChaincodeSupportService {
            registrations,
            peer_id,
        }
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<pb::PeerMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::chaincode_support_server::ChaincodeSupport for ChaincodeSupportService {
    type OpenStream = OutStream;

    async fn open(
        &self,
        request: Request<Streaming<pb::ChaincodeMessage>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let outbound = accept(&self.registrations, &self.peer_id, request.into_inner()).await?;
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// Runs the peer side of one chaincode stream, whichever end dialled: waits for Register,
/// claims the launch it names, hands the launch its session, and returns what the peer sends
/// the chaincode. The session closes when `inbound` ends.
pub async fn accept<S>(
    registrations: &Registrations,
    peer_id: &str,
    mut inbound: S,
) -> Result<ReceiverStream<Result<pb::PeerMessage, Status>>, Status>
where
    S: Stream<Item = Result<pb::ChaincodeMessage, Status>> + Send + Unpin + 'static,
{
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.next())
        .await
        .map_err(|_| Status::deadline_exceeded("no Register message within 10 s"))?;
    let register = match first {
        Some(Ok(pb::ChaincodeMessage {
            kind: Some(InKind::Register(register)),
        })) => register,
        Some(Ok(_)) => {
            return Err(Status::invalid_argument(
                "the first message must be Register",
            ));
        }
        Some(Err(status)) => return Err(status),
        None => return Err(Status::cancelled("stream closed before Register")),
    };
    let (read_hints, dropped) = ReadHints::from_pb(&register.read_hints);
    for reason in dropped {
        tracing::warn!(
            chaincode = %register.name,
            version = %register.version,
            %reason,
            "read hint not used (its reads go by request instead; fix the chaincode's read_hints)"
        );
    }
    let launch = registrations.claim(&register)?;
    let (outbound, receiver) = mpsc::channel(256);
    let session = Arc::new(Session {
        name: register.name.clone(),
        version: register.version.clone(),
        read_hints,
        stats: registrations.stats.clone(),
        outbound,
        batches: Mutex::new(HashMap::new()),
        next_batch: AtomicU64::new(1),
        closed: AtomicBool::new(false),
    });
    session
        .send(OutKind::Registered(pb::Registered {
            peer_id: peer_id.to_string(),
        }))
        .await;
    if launch.registered.send(session.clone()).is_err() {
        return Err(Status::aborted("the launch was abandoned (timed out)"));
    }
    tracing::info!(chaincode = %register.name, version = %register.version, "chaincode registered");
    tokio::spawn(async move {
        loop {
            match inbound.next().await {
                Some(Ok(pb::ChaincodeMessage { kind: Some(kind) })) => {
                    if let Err(e) = session.handle(kind).await {
                        tracing::warn!(chaincode = %session.name, error = %e, "closing chaincode stream");
                        break;
                    }
                }
                Some(Ok(_)) => {
                    tracing::warn!(chaincode = %session.name, "empty chaincode message; closing stream");
                    break;
                }
                Some(Err(status)) => {
                    tracing::info!(chaincode = %session.name, status = %status.message(), "chaincode stream ended");
                    break;
                }
                None => break,
            }
        }
        session.close();
    });
    Ok(ReceiverStream::new(receiver))
}
