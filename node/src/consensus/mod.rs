//! Ordering: turns a stream of verified transactions into numbered batches. `solo` orders alone
//! for a one-validator network; the PBFT replica fills the same seam for a cluster.

pub mod driver;
pub mod journal;
pub mod pbft;
pub mod solo;

use std::time::{Duration, Instant};

use weft_proto::ConsensusParams;

use crate::types::{Block, Hash, Transaction};

/// A batch whose order is final.
#[derive(Debug)]
pub struct OrderedBatch {
    pub sequence: u64,
    pub transactions: Vec<Transaction>,
    /// When its order became final here (the commit loop measures how long it waited).
    pub ordered_at: Instant,
}

/// What the commit loop is asked to do, in order.
#[derive(Debug)]
pub enum CommitWork {
    /// Execute an ordered batch and append its block (block number = sequence).
    Execute(OrderedBatch),
    /// Append a run of blocks fetched by state transfer towards the certified checkpoint
    /// `sequence`, proven by a certificate (`network::state_transfer`). A block that does not
    /// fit stops the run and the transfer.
    ApplyFetched {
        sequence: u64,
        blocks: Vec<Block>,
        /// The commit certificate on the run's last block, checked, to keep.
        certificate: Option<weft_proto::pb::CommitCertificate>,
        /// Answered once the run is applied, or with why a block did not fit.
        applied: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Every run of the transfer to `sequence` was sent: report whether the chain now ends at
    /// block `sequence` with hash `digest`.
    TransferEnd { sequence: u64, digest: Hash },
}

/// What the commit loop reports back to the driver.
#[derive(Debug)]
pub enum Feedback {
    /// Block `sequence` is appended; `digest` is its hash.
    Executed { sequence: u64, digest: Hash },
    /// State transfer reached block `sequence` with hash `digest`.
    Transferred { sequence: u64, digest: Hash },
    /// State transfer could not be completed (the replica asks again later).
    TransferFailed { sequence: u64, reason: String },
}

/// How long one PBFT tick lasts: the core counts time in ticks.
pub const TICK: Duration = Duration::from_millis(10);

fn ticks(duration: Duration) -> u64 {
    (duration.as_millis() / TICK.as_millis()).max(1) as u64
}

/// The replica parameters for a network of `replica_count` validators with the genesis
/// consensus parameters.
pub fn pbft_config(
    params: &ConsensusParams,
    replica_count: usize,
    max_pending: usize,
) -> pbft::Config {
    let request_timeout = ticks(params.request_timeout);
    pbft::Config {
        batch_size: params.batch_size,
        batch_timeout_ticks: ticks(params.batch_timeout),
        checkpoint_period: params.checkpoint_period,
        window: 2 * params.checkpoint_period,
        request_timeout_ticks: request_timeout,
        view_change_timeout_ticks: request_timeout,
        max_view_change_timeout_ticks: request_timeout * 64,
        view_change_resend_ticks: (request_timeout / 2).max(1),
        state_transfer_grace_ticks: ticks(Duration::from_millis(500)),
        // Re-send within half a request timeout, so a lost commit arrives before anyone
        // suspects the primary; pad to the checkpoint after a short idle spell.
        retransmit_ticks: (request_timeout / 2).max(1),
        idle_checkpoint_ticks: ticks(Duration::from_millis(200))
            .max(2 * ticks(params.batch_timeout)),
        state_transfer_retry_ticks: ticks(Duration::from_secs(10)),
        // Each validator admits at most `max_pending` through its own API and relays them to
        // the primary (to all when its request timer resends them): the pool holds what every
        // validator may relay. Were it smaller, an overloaded
        // primary would refuse requests the backups keep waiting for, and their request timers
        // would change the view although nothing is faulty (seen in `weft bench` at 150% load).
        max_pending_requests: max_pending
            .saturating_mul(replica_count)
            .max(params.batch_size),
        ..pbft::Config::new(replica_count)
    }
}
