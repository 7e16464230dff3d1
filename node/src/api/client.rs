//! The `weft.v1.Client` service: submit, submit and wait, query, blocks, transactions, chain
//! info, and resumable block and event streams.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use weft_proto::pb;
use weft_proto::tx::LIFECYCLE_CHAINCODE;

use super::admission_status;
use crate::admission_window::CheckStopped;
use crate::mempool::{MempoolError, Reservation};
use crate::node::Shared;
use crate::types::convert::{
    block_to_pb, chain_info_to_pb, result_to_pb, signed_copied_from_pb, signed_to_pb, status_to_pb,
};
use crate::types::{Block, Hash, Transaction, TxId, TxStatus};

/// The most transactions one `SubmitBatch` may carry.
pub const MAX_SUBMIT_BATCH: usize = 1_000;

pub struct ClientService {
    shared: Arc<Shared>,
}

impl ClientService {
    pub fn new(shared: Arc<Shared>) -> Self {
        ClientService { shared }
    }

    async fn verify(&self, tx: pb::SignedTx) -> Result<Transaction, Status> {
        self.verify_all(vec![tx])
            .await?
            .pop()
            .unwrap_or_else(|| Err(internal(CheckStopped)))
    }

    /// Verifies transactions, one verdict each, in their order, their signatures checked
    /// together and with those of other calls arriving meanwhile (`admission_window`).
    async fn verify_all(
        &self,
        txs: Vec<pb::SignedTx>,
    ) -> Result<Vec<Result<Transaction, Status>>, Status> {
        let verdicts = self
            .shared
            .admission_window
            .verify(txs.into_iter().map(signed_copied_from_pb).collect())
            .await
            .map_err(internal)?;
        Ok(verdicts
            .into_iter()
            .map(|verdict| verdict.map_err(|e| admission_status(e, &self.shared.metrics)))
            .collect())
    }

    /// Verifies, refuses duplicates and unknown chaincode, and queues for ordering.
    async fn accept(
        &self,
        tx: pb::SignedTx,
        wait: bool,
    ) -> Result<(TxId, Option<CommitReceiver>), Status> {
        let mut reservation = self.shared.mempool.reserve(1);
        if reservation.places() == 0 && self.is_new(&TxId::of_payload(&tx.payload))? {
            return Err(self.no_room());
        }
        let tx = self.verify(tx).await?;
        self.accept_verified(tx, wait, &mut reservation)
    }

    /// Whether `id` is neither pending nor committed here. Only a new transaction is refused
    /// for want of room: one already pending or committed gets its usual answer
    /// (`ALREADY_EXISTS`), so that a client retrying a busy validator learns it may stop.
    fn is_new(&self, id: &TxId) -> Result<bool, Status> {
        Ok(!self.shared.mempool.contains(id)
            && self
                .shared
                .ledger
                .tx_location(id)
                .map_err(internal)?
                .is_none())
    }

    /// The refusal of a new transaction the mempool has no room for, given before its
    /// signature is checked: an overloaded validator spends no verification on what it would
    /// refuse anyway (at 150% of peak load in `weft bench`, thousands of submissions a
    /// second). The room is reserved when the call arrives ([`Mempool::reserve`]) and held
    /// while the signatures are checked, so a new transaction that is checked finds its place
    /// at `admit` (one that commits meanwhile gives its place back to the call).
    ///
    /// [`Mempool::reserve`]: crate::mempool::Mempool::reserve
    fn no_room(&self) -> Status {
        self.shared.metrics.rejected("mempool");
        Status::resource_exhausted(self.shared.mempool.full().to_string())
    }

    /// Refuses duplicates and unknown chaincode, and queues a verified transaction.
    fn accept_verified(
        &self,
        tx: Transaction,
        wait: bool,
        reservation: &mut Reservation<'_>,
    ) -> Result<(TxId, Option<CommitReceiver>), Status> {
        let id = tx.id();
        let shared = &self.shared;
        let already_committed = |block: u64| {
            shared.metrics.rejected("duplicate");
            Status::already_exists(format!(
                "transaction {id} is already committed, in block {block}: ask GetTransaction for its result"
            ))
        };
        // Whether it is committed already is looked up once on the way in, after `admit`: a
        // block appended before the waiter was registered woke no one here, so a lookup before
        // `admit` would have to be repeated after it anyway. A refusal looks first, so that a
        // committed transaction is always answered as committed. (A committed one resubmitted
        // holds a mempool place between `admit` and `abandon`.)
        let refuse_if_committed = || -> Result<(), Status> {
            match shared.ledger.tx_location(&id).map_err(internal)? {
                Some(location) => Err(already_committed(location.block)),
                None => Ok(()),
            }
        };
        if tx.chaincode != LIFECYCLE_CHAINCODE && !shared.executor.is_deployed(&tx.chaincode) {
            refuse_if_committed()?;
            shared.metrics.rejected("unknown_chaincode");
            return Err(Status::not_found(format!(
                "chaincode {} is not deployed on this network: deploy it with `weft chaincode deploy` or check the name",
                tx.chaincode
            )));
        }
        let receiver = match shared.mempool.admit(id, wait, reservation) {
            Ok(receiver) => receiver,
            Err(e) => {
                refuse_if_committed()?;
                shared.metrics.rejected("mempool");
                return Err(match e {
                    MempoolError::AlreadyPending(_) => Status::already_exists(e.to_string()),
                    MempoolError::Full(_) => Status::resource_exhausted(e.to_string()),
                });
            }
        };
        if let Err(refusal) = refuse_if_committed() {
            shared.mempool.abandon(&id, reservation);
            return Err(refusal);
        }
        if let Err(e) = shared.submit.try_send(tx) {
            shared.mempool.abandon(&id, reservation);
            shared.metrics.rejected("queue_full");
            return Err(Status::resource_exhausted(format!(
                "the ordering queue is full ({e}): retry shortly"
            )));
        }
        Ok((id, receiver))
    }
}

type CommitReceiver = tokio::sync::oneshot::Receiver<crate::mempool::Committed>;

/// What Submit would have answered, for one transaction of a batch.
fn outcome(tx_id: TxId, answer: Result<(), Status>) -> pb::SubmitOutcome {
    let (code, message) = match answer {
        Ok(()) => (tonic::Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_string()),
    };
    pb::SubmitOutcome {
        tx_id: Bytes::copy_from_slice(tx_id.as_bytes()),
        code: code as i32,
        message,
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

type BlockStream = Pin<Box<dyn Stream<Item = Result<pb::Block, Status>> + Send>>;
type EventStream = Pin<Box<dyn Stream<Item = Result<pb::EventMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::client_server::Client for ClientService {
    async fn submit(
        &self,
        request: Request<pb::SignedTx>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let (id, _) = self.accept(request.into_inner(), false).await?;
        Ok(Response::new(pb::SubmitResponse {
            tx_id: Bytes::copy_from_slice(id.as_bytes()),
        }))
    }

    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let txs = request.into_inner().transactions;
        if txs.len() > MAX_SUBMIT_BATCH {
            self.shared.metrics.rejected("batch_too_large");
            return Err(Status::invalid_argument(format!(
                "a batch of {} transactions; send at most {MAX_SUBMIT_BATCH} per SubmitBatch",
                txs.len()
            )));
        }
        let ids: Vec<TxId> = txs.iter().map(|tx| TxId::of_payload(&tx.payload)).collect();
        // New transactions beyond the mempool's room are refused unverified (see `no_room`);
        // the rest, in order, are verified together, in places reserved for them.
        let mut reservation = self.shared.mempool.reserve(txs.len());
        let mut room = reservation.places();
        let crowded = room < txs.len();
        let mut checked = Vec::with_capacity(txs.len());
        let mut refused = vec![false; txs.len()];
        for ((tx, id), refuse) in txs.into_iter().zip(&ids).zip(&mut refused) {
            // With room for all, nothing is looked up here (accepting looks again anyway).
            if crowded && self.is_new(id)? {
                if room == 0 {
                    *refuse = true;
                    continue;
                }
                room -= 1;
            }
            checked.push(tx);
        }
        if crowded {
            // The places no new transaction of this call takes are others' meanwhile.
            reservation.release(room);
        }
        let mut verdicts = if checked.is_empty() {
            Vec::new()
        } else {
            self.verify_all(checked).await?
        }
        .into_iter();
        let outcomes = ids
            .into_iter()
            .zip(refused)
            .map(|(id, refuse)| {
                let answer = if refuse {
                    Err(self.no_room())
                } else {
                    verdicts
                        .next()
                        .expect("a verdict for each transaction checked")
                        .and_then(|tx| {
                            self.accept_verified(tx, false, &mut reservation)
                                .map(|_| ())
                        })
                };
                outcome(id, answer)
            })
            .collect();
        Ok(Response::new(pb::SubmitBatchResponse { outcomes }))
    }

    async fn submit_and_wait(
        &self,
        request: Request<pb::SubmitAndWaitRequest>,
    ) -> Result<Response<pb::CommitStatus>, Status> {
        let request = request.into_inner();
        let tx = request.transaction.ok_or_else(|| {
            Status::invalid_argument("SubmitAndWaitRequest.transaction is missing")
        })?;
        let timeout = match request.timeout_ms {
            0 => self.shared.config.api.commit_wait_timeout,
            ms => Duration::from_millis(ms).min(Duration::from_secs(600)),
        };
        let (id, receiver) = self.accept(tx, true).await?;
        let receiver = receiver.expect("accept with wait returns a receiver");
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(committed)) => {
                // The ledger's message is the same on every validator; what only this one
                // knows (its chaincode instance's id and last log lines) is added here.
                let detail = (committed.result.status != TxStatus::Valid)
                    .then(|| self.shared.executor.local_detail(&id))
                    .flatten();
                let message = match detail {
                    Some(detail) => {
                        format!("{}\non this validator: {detail}", committed.result.message)
                    }
                    None => committed.result.message,
                };
                Ok(Response::new(pb::CommitStatus {
                    tx_id: Bytes::copy_from_slice(id.as_bytes()),
                    block_number: committed.block,
                    status: status_to_pb(committed.result.status) as i32,
                    message,
                    payload: committed.result.payload,
                }))
            }
            Ok(Err(_)) => Err(Status::unavailable(format!(
                "the node stopped before transaction {id} committed; it may still commit: check with `weft ledger tx {id}`"
            ))),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "transaction {id} did not commit within {timeout:?}; it may still commit: check with `weft ledger tx {id}`"
            ))),
        }
    }

    async fn query(
        &self,
        request: Request<pb::SignedTx>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let tx = self.verify(request.into_inner()).await?;
        match self.shared.executor.query(&tx).await {
            Ok(payload) => Ok(Response::new(pb::QueryResponse { payload })),
            Err(crate::execution::QueryError::NotDeployed(name)) => {
                Err(Status::not_found(format!(
                    "chaincode {name} is not deployed on this network: deploy it with `weft chaincode deploy` or check the name"
                )))
            }
            Err(crate::execution::QueryError::Chaincode(message)) => {
                Err(Status::failed_precondition(message))
            }
            Err(e) => Err(internal(e)),
        }
    }

    async fn get_block(
        &self,
        request: Request<pb::GetBlockRequest>,
    ) -> Result<Response<pb::Block>, Status> {
        let ledger = &self.shared.ledger;
        let block = match request.into_inner().by {
            Some(pb::get_block_request::By::Number(n)) => ledger.block(n).map_err(internal)?,
            Some(pb::get_block_request::By::Hash(h)) => {
                let hash = Hash::from_slice(&h)
                    .ok_or_else(|| Status::invalid_argument("a block hash is 32 bytes"))?;
                ledger.block_by_hash(&hash).map_err(internal)?
            }
            None => {
                return Err(Status::invalid_argument(
                    "name a block by number or by hash",
                ));
            }
        };
        let height = ledger.tip().height;
        let block = block.ok_or_else(|| {
            Status::not_found(format!(
                "no such block; the chain has {height} blocks (0 to {})",
                height - 1
            ))
        })?;
        let mut message = block_to_pb(&block);
        message.certificate = self
            .shared
            .certificates
            .certificate(block.number())
            .map_err(internal)?;
        Ok(Response::new(message))
    }

    async fn get_transaction(
        &self,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<pb::TransactionInfo>, Status> {
        let id = TxId::from_slice(&request.into_inner().tx_id)
            .ok_or_else(|| Status::invalid_argument("a transaction id is 32 bytes"))?;
        let ledger = &self.shared.ledger;
        let location = ledger.tx_location(&id).map_err(internal)?.ok_or_else(|| {
            Status::not_found(format!(
                "transaction {id} is not committed (it may be pending, or unknown)"
            ))
        })?;
        let block = ledger
            .block(location.block)
            .map_err(internal)?
            .ok_or_else(|| Status::internal("the transaction index names a missing block"))?;
        let index = location.index as usize;
        let (Some(tx), Some(result)) = (block.transactions.get(index), block.results.get(index))
        else {
            return Err(Status::internal(
                "the transaction index names a missing position",
            ));
        };
        Ok(Response::new(pb::TransactionInfo {
            transaction: Some(signed_to_pb(tx)),
            result: Some(result_to_pb(result)),
            block_number: location.block,
            index: location.index,
        }))
    }

    async fn get_chain_info(
        &self,
        _request: Request<pb::GetChainInfoRequest>,
    ) -> Result<Response<pb::ChainInfo>, Status> {
        Ok(Response::new(chain_info_to_pb(
            self.shared.ledger.chain_id(),
            &self.shared.ledger.tip(),
            self.shared.certificates.last_certified(),
        )))
    }

    type StreamBlocksStream = BlockStream;

    async fn stream_blocks(
        &self,
        request: Request<pb::StreamBlocksRequest>,
    ) -> Result<Response<Self::StreamBlocksStream>, Status> {
        let request = request.into_inner();
        let from = request.from_height;
        let (sender, receiver) = mpsc::channel(64);
        let shared = self.shared.clone();
        if request.certified_only {
            tokio::spawn(follow_certified(shared, from, sender));
            return Ok(Response::new(Box::pin(ReceiverStream::new(receiver))));
        }
        tokio::spawn(async move {
            follow_blocks(shared, from, |block| {
                let sender = sender.clone();
                async move { sender.send(Ok(block_to_pb(&block))).await.is_ok() }
            })
            .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let request = request.into_inner();
        let (sender, receiver) = mpsc::channel(64);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            follow_blocks(shared, request.from_height, |block| {
                let sender = sender.clone();
                let chaincode = request.chaincode.clone();
                let name = request.name.clone();
                async move {
                    for result in &block.results {
                        let Some(event) = &result.event else { continue };
                        if (!chaincode.is_empty() && event.chaincode != chaincode)
                            || (!name.is_empty() && event.name != name)
                        {
                            continue;
                        }
                        let message = pb::EventMessage {
                            event: Some(crate::types::convert::event_to_pb(event)),
                            tx_id: Bytes::copy_from_slice(result.tx_id.as_bytes()),
                            block_number: block.number(),
                        };
                        if sender.send(Ok(message)).await.is_err() {
                            return false;
                        }
                    }
                    true
                }
            })
            .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Every certified run of blocks is sent with the certificate on its last block, and on one
/// block in [`CERTIFY_EVERY`] before it where stored, so a follower never holds more than that
/// many unchecked blocks when this peer has the certificates.
const CERTIFY_EVERY: u64 = 64;

/// Sends the blocks from `from` up to the last certified one, then each newly certified run.
async fn follow_certified(
    shared: Arc<Shared>,
    from: u64,
    sender: mpsc::Sender<Result<pb::Block, Status>>,
) {
    let mut certified = shared.certificates.subscribe();
    let mut next = from.max(1);
    let mut since_certificate = 0;
    loop {
        let last = *certified.borrow_and_update();
        while next <= last {
            let block = match shared.ledger.block(next) {
                Ok(Some(block)) => block,
                Ok(None) => return,
                Err(e) => {
                    let _ = sender.send(Err(internal(e))).await;
                    return;
                }
            };
            let mut message = block_to_pb(&block);
            since_certificate += 1;
            if next == last || since_certificate >= CERTIFY_EVERY {
                match shared.certificates.certificate(next) {
                    Ok(Some(certificate)) => {
                        message.certificate = Some(certificate);
                        since_certificate = 0;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = sender.send(Err(internal(e))).await;
                        return;
                    }
                }
            }
            if sender.send(Ok(message)).await.is_err() {
                return;
            }
            next += 1;
        }
        if certified.changed().await.is_err() {
            return;
        }
    }
}

/// Calls `deliver` with every block from `from` on, in order, stored ones first, then live
/// ones; stops when `deliver` returns false. A subscriber that falls behind the live feed reads
/// the gap from storage, so no block is skipped.
async fn follow_blocks<F, Fut>(shared: Arc<Shared>, from: u64, deliver: F)
where
    F: Fn(Arc<Block>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut live = shared.ledger.subscribe();
    let mut next = from;
    loop {
        // Catch up from storage.
        while next < shared.ledger.tip().height {
            match shared.ledger.block(next) {
                Ok(Some(block)) => {
                    if !deliver(Arc::new(block)).await {
                        return;
                    }
                    next += 1;
                }
                _ => return,
            }
        }
        match live.recv().await {
            Ok(block) if block.number() < next => continue,
            Ok(block) if block.number() == next => {
                if !deliver(block).await {
                    return;
                }
                next += 1;
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
