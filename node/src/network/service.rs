//! The inbound side of the validator network: the `Consensus` gRPC service, on the mutual-TLS
//! endpoint, for genesis validator certificates only (`tls.rs`). Each peer stream
//! is read in order; every message is verified off the async workers (signatures and
//! transactions) and handed to the replica's bounded queue. Invariant: only verified messages
//! reach the replica, a refused message is counted by reason and never stops the stream, and a
//! full queue drops (and counts) rather than grows.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use weft_proto::pb;

use super::tls::ValidatorTls;
use super::wire::{Inbound, PbftMessage, Wire};
use crate::certificates::{Certificates, VoteOutcome};
use crate::consensus::pbft::Verified;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::types::convert::block_to_pb;

/// The most blocks one `FetchBlocks` call returns; a replica further behind asks again.
pub const MAX_FETCH_BLOCKS: u64 = 256;

pub struct ConsensusService {
    wire: Arc<Wire>,
    tls: Arc<ValidatorTls>,
    inbound: mpsc::Sender<Verified<PbftMessage>>,
    certificates: Arc<Certificates>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

impl ConsensusService {
    pub fn new(
        wire: Arc<Wire>,
        tls: Arc<ValidatorTls>,
        inbound: mpsc::Sender<Verified<PbftMessage>>,
        certificates: Arc<Certificates>,
        ledger: Arc<Ledger>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> ConsensusService {
        ConsensusService {
            wire,
            tls,
            inbound,
            certificates,
            ledger,
            metrics,
            shutdown,
        }
    }
}

type BlockStream = Pin<Box<dyn Stream<Item = Result<pb::Block, Status>> + Send>>;

impl ConsensusService {
    /// Only a genesis validator's certificate may use this service (the TLS layer already
    /// required a certificate from a genesis CA).
    fn require_validator<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.tls.sender(request).is_some() {
            return Ok(());
        }
        self.metrics.consensus_rejected("not_a_validator", 1);
        Err(Status::permission_denied(
            "only the validators listed in genesis may use the consensus endpoint: connect with a validator certificate",
        ))
    }
}

#[tonic::async_trait]
impl pb::consensus_server::Consensus for ConsensusService {
    async fn deliver(
        &self,
        request: Request<Streaming<pb::SignedConsensusMessage>>,
    ) -> Result<Response<pb::DeliverResponse>, Status> {
        self.require_validator(&request)?;
        let mut stream = request.into_inner();
        let mut shutdown = self.shutdown.clone();
        loop {
            // End the stream when this node stops, so the sender notices and reconnects to
            // whatever serves this address next.
            let signed = tokio::select! {
                _ = shutdown.wait_for(|stopping| *stopping) => None,
                message = stream.message() => message?,
            };
            let Some(signed) = signed else {
                tracing::debug!(
                    stopping = *shutdown.borrow(),
                    "consensus stream from a validator ends"
                );
                break;
            };
            if self.inbound.is_closed() {
                break;
            }
            let wire = self.wire.clone();
            let from = signed.from;
            let verified = tokio::task::spawn_blocking(move || wire.verify_inbound(&signed))
                .await
                .map_err(|e| Status::internal(format!("verification task failed: {e}")))?;
            match verified {
                Ok(Inbound::BlockSigned {
                    from,
                    number,
                    block_hash,
                    signature,
                }) => match self
                    .certificates
                    .received(from.0, number, block_hash, signature)
                {
                    Ok(VoteOutcome::Kept | VoteOutcome::AlreadyCertified) => {}
                    Ok(VoteOutcome::Duplicate) => self
                        .metrics
                        .consensus_rejected("duplicate_block_signature", 1),
                    Ok(VoteOutcome::TooFarAhead) => {
                        self.metrics.consensus_rejected("block_signature_ahead", 1)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot record a commit certificate");
                    }
                },
                Ok(Inbound::Consensus(message)) => {
                    if self.inbound.try_send(*message).is_err() {
                        self.metrics.consensus_rejected("inbound_queue_full", 1);
                    }
                    self.metrics.consensus_inbound_queue.store(
                        (self.inbound.max_capacity() - self.inbound.capacity()) as u64,
                        Ordering::Relaxed,
                    );
                }
                Err(e) => {
                    tracing::debug!(replica = from, error = %e, "consensus message refused at the edge");
                    self.metrics.consensus_rejected(e.reason(), 1);
                }
            }
        }
        if *shutdown.borrow() || self.inbound.is_closed() {
            return Err(Status::unavailable("this validator is shutting down"));
        }
        Ok(Response::new(pb::DeliverResponse {}))
    }

    type FetchBlocksStream = BlockStream;

    async fn fetch_blocks(
        &self,
        request: Request<pb::FetchBlocksRequest>,
    ) -> Result<Response<BlockStream>, Status> {
        self.require_validator(&request)?;
        let pb::FetchBlocksRequest { from, to } = request.into_inner();
        let height = self.ledger.tip().height;
        if from > to {
            return Err(Status::invalid_argument(format!(
                "from ({from}) is after to ({to})"
            )));
        }
        if to >= height {
            return Err(Status::out_of_range(format!(
                "this peer has blocks 0 to {}; block {to} is not here yet",
                height.saturating_sub(1)
            )));
        }
        let to = to.min(from.saturating_add(MAX_FETCH_BLOCKS - 1));
        let mut blocks = Vec::new();
        for number in from..=to {
            match self.ledger.block(number) {
                Ok(Some(block)) => blocks.push(Ok(block_to_pb(&block))),
                Ok(None) => return Err(Status::internal(format!("block {number} is missing"))),
                Err(e) => return Err(Status::internal(e.to_string())),
            }
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(blocks))))
    }
}
