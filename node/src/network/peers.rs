//! Outbound links to the other validators: one task per peer holds a long-lived `Deliver`
//! stream over mutual TLS and reconnects with doubling backoff. Invariant: memory stays bounded when a peer is
//! slow or dead: each link's queue has a fixed capacity and a message that does not fit is
//! dropped and counted (PBFT recovers lost messages through retransmission and view change).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::pb;
use weft_proto::pb::consensus_client::ConsensusClient;

use super::tls::ValidatorTls;
use crate::consensus::pbft::ReplicaId;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Counters of the links, for metrics.
#[derive(Default)]
pub struct LinkStats {
    /// Messages dropped because a peer's queue was full.
    pub dropped: AtomicU64,
    /// Connections (re)established.
    pub connects: AtomicU64,
}

/// Senders to every other validator, by replica id.
pub struct PeerLinks {
    queues: Vec<Option<mpsc::Sender<pb::SignedConsensusMessage>>>,
    stats: Arc<LinkStats>,
}

impl PeerLinks {
    /// Starts one mutual-TLS link to each of the `replicas` validators except `me`; each stops
    /// at `shutdown`.
    pub fn start(
        tls: &ValidatorTls,
        replicas: usize,
        me: ReplicaId,
        queue_capacity: usize,
        shutdown: watch::Receiver<bool>,
    ) -> PeerLinks {
        let stats = Arc::new(LinkStats::default());
        let queues = (0..replicas)
            .map(|index| {
                let peer = ReplicaId(index as u32);
                if peer == me {
                    return None;
                }
                let endpoint = match tls.endpoint(peer) {
                    Ok(endpoint) => endpoint,
                    Err(e) => {
                        tracing::error!(peer = peer.0, error = %e, "no link to this validator");
                        return None;
                    }
                };
                let (sender, receiver) = mpsc::channel(queue_capacity);
                tokio::spawn(run_link(
                    peer,
                    tls.address(peer).to_string(),
                    endpoint,
                    receiver,
                    stats.clone(),
                    shutdown.clone(),
                ));
                Some(sender)
            })
            .collect();
        PeerLinks { queues, stats }
    }

    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// Queues `message` for `to`; drops it (counted) when that peer's queue is full.
    pub fn send(&self, to: ReplicaId, message: pb::SignedConsensusMessage) {
        let Some(Some(queue)) = self.queues.get(to.0 as usize) else {
            return;
        };
        if queue.try_send(message).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = to.0, "peer queue full: consensus message dropped");
        }
    }

    /// Queues `message` for every other validator.
    pub fn broadcast(&self, message: &pb::SignedConsensusMessage) {
        for index in 0..self.queues.len() {
            self.send(ReplicaId(index as u32), message.clone());
        }
    }

    /// Messages waiting in all queues.
    pub fn queued(&self) -> usize {
        self.queues
            .iter()
            .flatten()
            .map(|q| q.max_capacity() - q.capacity())
            .sum()
    }
}

async fn run_link(
    peer: ReplicaId,
    address: String,
    endpoint: tonic::transport::Endpoint,
    mut queue: mpsc::Receiver<pb::SignedConsensusMessage>,
    stats: Arc<LinkStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let channel = tokio::select! {
            _ = shutdown.changed() => return,
            connected = endpoint.connect() => connected,
        };
        let channel = match channel {
            Ok(channel) => channel,
            Err(e) => {
                tracing::debug!(peer = peer.0, %address, error = %e, ?backoff, "cannot reach validator; retrying");
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = peer.0, %address, "connected to validator");
        let mut client = ConsensusClient::new(channel)
            .max_encoding_message_size(weft_proto::MAX_MESSAGE_BYTES)
            .max_decoding_message_size(weft_proto::MAX_MESSAGE_BYTES);
        let (stream_sender, stream_receiver) = mpsc::channel(64);
        let call = client.deliver(ReceiverStream::new(stream_receiver));
        tokio::pin!(call);
        let mut delivered = false;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                ended = &mut call => {
                    tracing::info!(peer = peer.0, result = ?ended.map(|_| ()), "stream to validator ended; reconnecting");
                    break;
                }
                message = queue.recv() => {
                    let Some(message) = message else { return };
                    // While the stream's buffer is full, keep watching the call: a peer that
                    // went away ends it, and the link must notice rather than wait forever.
                    let sent = tokio::select! {
                        _ = shutdown.changed() => return,
                        ended = &mut call => {
                            tracing::info!(peer = peer.0, result = ?ended.map(|_| ()), "stream to validator ended; reconnecting");
                            false
                        }
                        sent = stream_sender.send(message) => sent.is_ok(),
                    };
                    if !sent {
                        break;
                    }
                    if !delivered {
                        delivered = true;
                        backoff = FIRST_BACKOFF;
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
