//! Forwarding client transactions to the validators. A transaction this peer admitted goes to
//! the validator it currently uses, which relays it to the primary. It stays
//! pending here until its block is followed, and it is sent again, to every validator, when it
//! does not commit within the network's request timeout, and to the new primary when the
//! validators change view. A validator that does not answer is left for the next one. Sends
//! run concurrently, at most [`IN_FLIGHT`] at once, so a slow validator never blocks the peer.
//!
//! Invariant: every admitted transaction stays pending (and is re-sent) until it is committed
//! or this peer stops; duplicates at the validators are refused there, never committed twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tonic::transport::{Channel, Endpoint};
use weft_proto::pb;
use weft_proto::pb::admin_client::AdminClient;
use weft_proto::pb::client_client::ClientClient;

use crate::node::Shared;
use crate::types::convert::signed_to_pb;
use crate::types::{Transaction, TxId};

/// Concurrent sends at most.
pub const IN_FLIGHT: usize = 64;
/// How often the current validator's view is read and stale transactions looked for.
const POLL: Duration = Duration::from_millis(500);

struct Pending {
    tx: pb::SignedTx,
    sent: Instant,
}

/// The validators and where this peer sends.
struct Validators {
    ids: Vec<String>,
    channels: Vec<Channel>,
    current: usize,
    view: Option<u64>,
}

impl Validators {
    fn new(shared: &Shared) -> Result<Validators, String> {
        let mut ids = Vec::new();
        let mut channels = Vec::new();
        for validator in &shared.genesis.validators {
            let endpoint = Endpoint::from_shared(format!("http://{}", validator.address))
                .map_err(|e| {
                    format!(
                        "validator {} address {}: {e}",
                        validator.id, validator.address
                    )
                })?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .tcp_nodelay(true);
            ids.push(validator.id.clone());
            channels.push(endpoint.connect_lazy());
        }
        Ok(Validators {
            ids,
            channels,
            current: 0,
            view: None,
        })
    }
}

/// Forwards what arrives on `submitted` until shutdown.
pub async fn run(
    shared: Arc<Shared>,
    mut submitted: mpsc::Receiver<Transaction>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut validators = match Validators::new(&shared) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "cannot forward transactions: check the genesis validator addresses");
            return;
        }
    };
    let reforward_after = shared.genesis.consensus.request_timeout;
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut pending: HashMap<TxId, Pending> = HashMap::new();
    let mut blocks = shared.ledger.subscribe();
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
            tx = submitted.recv() => {
                let Some(tx) = tx else { return };
                let id = tx.id();
                let tx = signed_to_pb(&tx.signed);
                send(&shared, &in_flight, &validators.channels[validators.current], tx.clone()).await;
                pending.insert(id, Pending { tx, sent: Instant::now() });
            }
            block = blocks.recv() => match block {
                Ok(block) => {
                    for tx in &block.transactions {
                        pending.remove(&tx.id);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    pending.retain(|id, _| !matches!(shared.ledger.tx_location(id), Ok(Some(_))));
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = poll.tick() => {
                check_validator(&shared, &in_flight, &mut validators, &mut pending).await;
                let now = Instant::now();
                for entry in pending.values_mut().filter(|p| now.duration_since(p.sent) >= reforward_after) {
                    entry.sent = now;
                    shared.metrics.reforwarded.fetch_add(1, Ordering::Relaxed);
                    for channel in &validators.channels {
                        send(&shared, &in_flight, channel, entry.tx.clone()).await;
                    }
                }
            }
        }
    }
}

/// Reads the current validator's view. A validator that does not answer is replaced by the
/// next; a new view sends every pending transaction to the new primary.
async fn check_validator(
    shared: &Arc<Shared>,
    in_flight: &Arc<Semaphore>,
    validators: &mut Validators,
    pending: &mut HashMap<TxId, Pending>,
) {
    let channel = validators.channels[validators.current].clone();
    let status = AdminClient::new(channel)
        .node_status(pb::NodeStatusRequest {})
        .await
        .map(|r| r.into_inner());
    let target = match status {
        Err(e) => {
            let next = (validators.current + 1) % validators.channels.len();
            tracing::info!(validator = %validators.ids[validators.current], next = %validators.ids[next], error = %e.message(), "validator does not answer; forwarding to the next one");
            validators.current = next;
            validators.view = None;
            next
        }
        Ok(status) => {
            let changed = validators.view.is_some_and(|v| v != status.view);
            validators.view = Some(status.view);
            if !changed {
                return;
            }
            let Some(primary) = validators.ids.iter().position(|id| *id == status.primary) else {
                return;
            };
            tracing::info!(view = status.view, primary = %status.primary, pending = pending.len(), "the validators changed view; forwarding pending transactions to the new primary");
            primary
        }
    };
    let now = Instant::now();
    for entry in pending.values_mut() {
        entry.sent = now;
        shared.metrics.reforwarded.fetch_add(1, Ordering::Relaxed);
        send(
            shared,
            in_flight,
            &validators.channels[target],
            entry.tx.clone(),
        )
        .await;
    }
}

/// Sends `tx` to one validator on its own task, waiting only for a free slot.
async fn send(
    shared: &Arc<Shared>,
    in_flight: &Arc<Semaphore>,
    channel: &Channel,
    tx: pb::SignedTx,
) {
    let Ok(permit) = in_flight.clone().acquire_owned().await else {
        return;
    };
    shared.metrics.forwarded.fetch_add(1, Ordering::Relaxed);
    let mut client =
        ClientClient::new(channel.clone()).max_encoding_message_size(weft_proto::MAX_MESSAGE_BYTES);
    tokio::spawn(async move {
        match client.submit(tx).await {
            Ok(_) => {}
            // Already pending or committed there: nothing to do.
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = %status.message(), "a validator did not take a forwarded transaction; it is sent again later");
            }
        }
        drop(permit);
    });
}
