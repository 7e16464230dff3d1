//! The inbound side of the validator network: the `Consensus` gRPC service, on the mutual-TLS
//! endpoint, for genesis validator certificates only (`tls.rs`). Each peer stream is read in
//! order; every message is verified (signatures, or the connection for the unsigned kinds,
//! and transactions; a large one off the async workers) and handed to the replica's queue, in which each validator has a bounded share (`inbound.rs`).
//! Invariants: only verified messages reach the replica; a refused message is counted by
//! reason; a full share drops (and counts) rather than grows; a validator holds at most
//! [`MAX_STREAMS_PER_VALIDATOR`] streams at once; once a validator's streams carried
//! [`MAX_UNVERIFIABLE`] messages that fail verification within [`UNVERIFIABLE_WINDOW`] (a bad
//! signature, bytes that do not decode: nothing an honest validator sends), the stream is
//! closed and its validator's new streams are refused for [`UNVERIFIABLE_PENALTY`], so junk
//! costs this node little CPU however the sender spreads it over streams.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use weft_proto::pb;

use super::inbound::{InboundSender, Refused};
use super::tls::ValidatorTls;
use super::wire::{Inbound, Wire, WireError};
use crate::certificates::{Certificates, VoteOutcome};
use crate::consensus::pbft::ReplicaId;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::types::convert::block_to_pb;

/// Consensus messages up to this size are verified on their stream's task (see `deliver`).
const INLINE_VERIFY_BYTES: usize = 8 * 1024;

/// The most blocks one `FetchBlocks` call returns; a replica further behind asks again.
pub const MAX_FETCH_BLOCKS: u64 = 256;

/// The most `Deliver` streams one validator may hold open at once (an honest one holds one,
/// plus briefly a second while it reconnects over a connection this node has not yet seen
/// die).
pub const MAX_STREAMS_PER_VALIDATOR: usize = 4;

/// After this many messages that fail verification from one validator within
/// [`UNVERIFIABLE_WINDOW`], its stream is closed and the validator refused for a while.
pub const MAX_UNVERIFIABLE: u32 = 32;

/// The window over which a validator's unverifiable messages are counted.
pub const UNVERIFIABLE_WINDOW: Duration = Duration::from_secs(60);

/// How long a validator whose stream was closed for unverifiable messages is refused.
pub const UNVERIFIABLE_PENALTY: Duration = Duration::from_secs(10);

/// Per validator: its open streams, its recent unverifiable messages, and until when it is
/// refused.
struct Senders {
    open: Vec<AtomicUsize>,
    strikes: Mutex<Vec<Strikes>>,
    refused_until: Mutex<Vec<Option<Instant>>>,
}

/// Unverifiable messages from one validator since `since`.
#[derive(Clone, Copy, Default)]
struct Strikes {
    count: u32,
    since: Option<Instant>,
}

/// One open stream of `validator`; closing it (dropping this) frees its place.
struct OpenStream<'a> {
    senders: &'a Senders,
    validator: usize,
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.senders.open[self.validator].fetch_sub(1, Ordering::AcqRel);
    }
}

impl Senders {
    fn new(validators: usize) -> Senders {
        Senders {
            open: (0..validators).map(|_| AtomicUsize::new(0)).collect(),
            strikes: Mutex::new(vec![Strikes::default(); validators]),
            refused_until: Mutex::new(vec![None; validators]),
        }
    }

    fn refused_until(&self) -> std::sync::MutexGuard<'_, Vec<Option<Instant>>> {
        self.refused_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new stream of `validator`, unless it holds too many or is refused.
    fn open(&self, validator: ReplicaId) -> Result<OpenStream<'_>, Status> {
        let index = validator.0 as usize;
        let Some(open) = self.open.get(index) else {
            return Err(Status::permission_denied("not a validator of this network"));
        };
        if let Some(until) = self.refused_until()[index] {
            let now = Instant::now();
            if now < until {
                return Err(Status::unavailable(format!(
                    "validator {index} sent messages that failed verification; its streams are refused for another {} ms",
                    (until - now).as_millis()
                )));
            }
        }
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS_PER_VALIDATOR {
            open.fetch_sub(1, Ordering::AcqRel);
            return Err(Status::resource_exhausted(format!(
                "validator {index} already holds {MAX_STREAMS_PER_VALIDATOR} consensus streams to this node; close one first"
            )));
        }
        Ok(OpenStream {
            senders: self,
            validator: index,
        })
    }

    /// Counts one more unverifiable message from `validator`; returns the count when it
    /// reached [`MAX_UNVERIFIABLE`] within the window (the count then starts again).
    fn strike(&self, validator: ReplicaId) -> Option<u32> {
        let mut strikes = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        let strikes = strikes.get_mut(validator.0 as usize)?;
        let now = Instant::now();
        if strikes
            .since
            .is_none_or(|since| now.duration_since(since) > UNVERIFIABLE_WINDOW)
        {
            *strikes = Strikes {
                count: 0,
                since: Some(now),
            };
        }
        strikes.count += 1;
        if strikes.count < MAX_UNVERIFIABLE {
            return None;
        }
        let count = strikes.count;
        *strikes = Strikes::default();
        Some(count)
    }

    fn penalise(&self, validator: ReplicaId) {
        if let Some(until) = self.refused_until().get_mut(validator.0 as usize) {
            *until = Some(Instant::now() + UNVERIFIABLE_PENALTY);
        }
    }
}

/// Refusals at the edge that an honest validator never causes: the stream that carries them
/// is closed once its validator sent [`MAX_UNVERIFIABLE`] within the window. A client transaction refused by admission
/// is not among them (an honest validator relays what it admitted).
fn unverifiable(error: &WireError) -> bool {
    !matches!(error, WireError::Transaction(_))
}

pub struct ConsensusService {
    wire: Arc<Wire>,
    tls: Arc<ValidatorTls>,
    inbound: InboundSender,
    senders: Senders,
    certificates: Arc<Certificates>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

impl ConsensusService {
    pub fn new(
        wire: Arc<Wire>,
        tls: Arc<ValidatorTls>,
        inbound: InboundSender,
        certificates: Arc<Certificates>,
        ledger: Arc<Ledger>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> ConsensusService {
        let senders = Senders::new(wire.replica_count());
        ConsensusService {
            wire,
            tls,
            inbound,
            senders,
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
    fn require_validator<T>(&self, request: &Request<T>) -> Result<ReplicaId, Status> {
        if let Some(validator) = self.tls.sender(request) {
            return Ok(validator);
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
        let via = self.require_validator(&request)?;
        let _open = self.senders.open(via).inspect_err(|_| {
            self.metrics.consensus_rejected("stream_refused", 1);
        })?;
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
            let from = signed.from;
            // A small message (a vote, or a few transactions: at most a millisecond of
            // checks) is verified on this task; handing it to a blocking thread would cost
            // more in wake-ups than the check. Larger ones go to a blocking thread.
            let verified = if signed.message.len() <= INLINE_VERIFY_BYTES {
                self.wire.verify_inbound(via, &signed)
            } else {
                let wire = self.wire.clone();
                tokio::task::spawn_blocking(move || wire.verify_inbound(via, &signed))
                    .await
                    .map_err(|e| Status::internal(format!("verification task failed: {e}")))?
            };
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
                Ok(Inbound::Consensus(message)) => match self.inbound.offer(via, *message) {
                    Ok(()) => {}
                    Err(Refused::ShareFull) => {
                        self.metrics.consensus_rejected("inbound_queue_full", 1)
                    }
                    Err(Refused::Closed) => break,
                },
                Ok(Inbound::Requests { requests, refused }) => {
                    if refused > 0 {
                        self.metrics
                            .consensus_rejected("relayed_transaction_refused", refused as u64);
                    }
                    let count = requests.len() as u64;
                    match self.inbound.offer_all(via, requests) {
                        Ok(()) => {}
                        Err(Refused::ShareFull) => {
                            self.metrics.consensus_rejected("inbound_queue_full", count)
                        }
                        Err(Refused::Closed) => break,
                    }
                }
                Err(e) => {
                    tracing::debug!(replica = from, via = via.0, error = %e, "consensus message refused at the edge");
                    self.metrics.consensus_rejected(e.reason(), 1);
                    let reached = if unverifiable(&e) {
                        self.senders.strike(via)
                    } else {
                        None
                    };
                    if let Some(count) = reached {
                        tracing::warn!(
                            via = via.0,
                            refused = count,
                            "closing a consensus stream: its validator sent messages which fail verification"
                        );
                        self.senders.penalise(via);
                        self.metrics
                            .consensus_rejected("stream_closed_unverifiable", 1);
                        return Err(Status::permission_denied(format!(
                            "{count} messages from validator {} failed verification within {} s (the last: {e}); the stream is closed and the validator is refused for {} s",
                            via.0,
                            UNVERIFIABLE_WINDOW.as_secs(),
                            UNVERIFIABLE_PENALTY.as_secs()
                        )));
                    }
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
                Ok(Some(block)) => {
                    // With its commit certificate where this validator holds one: the fetching
                    // replica hands blocks over run by run, each run proven by one.
                    let mut message = block_to_pb(&block);
                    message.certificate = match self.certificates.certificate(number) {
                        Ok(certificate) => certificate,
                        Err(e) => {
                            tracing::warn!(block = number, error = %e, "a stored commit certificate cannot be read; the block is sent without it");
                            None
                        }
                    };
                    blocks.push(Ok(message));
                }
                Ok(None) => return Err(Status::internal(format!("block {number} is missing"))),
                Err(e) => return Err(Status::internal(e.to_string())),
            }
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(blocks))))
    }
}
