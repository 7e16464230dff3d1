//! PBFT parameters and quorum arithmetic. Invariant: a validated `Config` has quorums that
//! intersect in at least one correct replica (any two quorums share f+1 replicas) while n - f
//! correct replicas can still form a quorum on their own.

use super::message::{ReplicaId, View};

/// The parameters of one PBFT network. Every replica of the network must use the same values.
/// Timeouts are counted in ticks: the driver decides how long a tick is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// n: the number of replicas; tolerates f = (n - 1) / 3 faulty ones.
    pub replica_count: usize,
    /// The most requests the primary puts in one batch (and the most a backup accepts).
    pub batch_size: usize,
    /// How long the primary waits for a batch to fill before proposing it anyway.
    pub batch_timeout_ticks: u64,
    /// K: a checkpoint is taken every `checkpoint_period` sequences.
    pub checkpoint_period: u64,
    /// L = H - h: how many sequences above the low watermark are accepted.
    pub window: u64,
    /// How long a replica waits for a request it knows of to execute before it suspects the
    /// primary.
    pub request_timeout_ticks: u64,
    /// How long a replica holding a quorum of view changes waits for the new view before it
    /// moves on to the next view; doubled for every view that fails in a row.
    pub view_change_timeout_ticks: u64,
    /// The doubling stops here.
    pub max_view_change_timeout_ticks: u64,
    /// How often a replica waiting for a new view re-sends its view change.
    pub view_change_resend_ticks: u64,
    /// How long a replica that knows of a certified checkpoint above what it has executed
    /// waits for ordinary messages to bring it there before it asks for a state transfer (it
    /// asks at once when the checkpoint is above its high watermark).
    pub state_transfer_grace_ticks: u64,
    /// How long a state transfer may take before this replica asks again.
    pub state_transfer_retry_ticks: u64,
    /// The most requests relayed by other replicas a replica holds before they are ordered
    /// (its own clients' are bounded by its API).
    pub max_pending_requests: usize,
    /// The most messages for views this replica has not entered yet kept per sender.
    pub future_messages_per_replica: usize,
    /// The most equivocation proofs kept.
    pub max_evidence: usize,
    /// How long an idle primary waits before it fills the sequences up to the next checkpoint
    /// with null requests, so that every batch ends up under a certified checkpoint that a
    /// replica which missed it can catch up to.
    pub idle_checkpoint_ticks: u64,
    /// How long a replica goes without taking a new checkpoint before it re-sends what it
    /// signed that may not have arrived: its latest checkpoint, and its pre-prepares, prepares
    /// and commits for the sequences above the stable checkpoint. Messages lost while the
    /// network is quiet would otherwise leave sequences undecided until the next checkpoint,
    /// which never comes if clients go idle; a replica that missed the checkpoint messages
    /// (down, paused, cut off) learns from f+1 re-sent ones how far the others are.
    pub retransmit_ticks: u64,
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("a PBFT network needs at least one replica")]
    NoReplicas,
    #[error("replica {id} is not one of the {replica_count} configured replicas")]
    NotAMember { id: u32, replica_count: usize },
    #[error("{field} must be at least 1")]
    Zero { field: &'static str },
    #[error(
        "window ({window}) must be a positive multiple of checkpoint_period ({checkpoint_period})"
    )]
    Window { window: u64, checkpoint_period: u64 },
    #[error(
        "max_view_change_timeout_ticks ({max}) must be at least view_change_timeout_ticks ({base})"
    )]
    ViewChangeTimeout { base: u64, max: u64 },
    #[error("max_pending_requests ({max}) must be at least batch_size ({batch_size})")]
    PendingBelowBatch { max: usize, batch_size: usize },
}

impl Config {
    /// Defaults for `replica_count` replicas: the window is two checkpoint periods.
    pub fn new(replica_count: usize) -> Config {
        let checkpoint_period = 10;
        Config {
            replica_count,
            batch_size: 500,
            batch_timeout_ticks: 2,
            checkpoint_period,
            window: 2 * checkpoint_period,
            request_timeout_ticks: 20,
            view_change_timeout_ticks: 20,
            max_view_change_timeout_ticks: 20 * 64,
            view_change_resend_ticks: 10,
            state_transfer_grace_ticks: 10,
            state_transfer_retry_ticks: 100,
            max_pending_requests: 100_000,
            future_messages_per_replica: 1_000,
            max_evidence: 64,
            idle_checkpoint_ticks: 10,
            // Sooner than the request timeout: a lost commit is re-sent before the replica
            // that misses it suspects the primary.
            retransmit_ticks: 10,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replica_count == 0 {
            return Err(ConfigError::NoReplicas);
        }
        let positive = [
            ("batch_size", self.batch_size as u64),
            ("checkpoint_period", self.checkpoint_period),
            ("request_timeout_ticks", self.request_timeout_ticks),
            ("view_change_timeout_ticks", self.view_change_timeout_ticks),
            ("view_change_resend_ticks", self.view_change_resend_ticks),
            (
                "state_transfer_grace_ticks",
                self.state_transfer_grace_ticks,
            ),
            (
                "state_transfer_retry_ticks",
                self.state_transfer_retry_ticks,
            ),
            ("idle_checkpoint_ticks", self.idle_checkpoint_ticks),
            ("retransmit_ticks", self.retransmit_ticks),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero { field });
        }
        if self.window == 0 || !self.window.is_multiple_of(self.checkpoint_period) {
            return Err(ConfigError::Window {
                window: self.window,
                checkpoint_period: self.checkpoint_period,
            });
        }
        if self.max_view_change_timeout_ticks < self.view_change_timeout_ticks {
            return Err(ConfigError::ViewChangeTimeout {
                base: self.view_change_timeout_ticks,
                max: self.max_view_change_timeout_ticks,
            });
        }
        if self.max_pending_requests < self.batch_size {
            return Err(ConfigError::PendingBelowBatch {
                max: self.max_pending_requests,
                batch_size: self.batch_size,
            });
        }
        Ok(())
    }

    /// f: the most faulty replicas the network tolerates.
    pub fn faults(&self) -> usize {
        self.replica_count.saturating_sub(1) / 3
    }

    /// The size of a quorum: ceil((n + f + 1) / 2), which is 2f+1 when n = 3f+1. Two quorums
    /// share at least f+1 replicas, so at least one correct one.
    pub fn quorum(&self) -> usize {
        (self.replica_count + self.faults() + 2) / 2
    }

    /// f+1: enough matching answers to include at least one correct replica.
    pub fn weak_quorum(&self) -> usize {
        self.faults() + 1
    }

    /// The primary of `view`.
    pub fn primary(&self, view: View) -> ReplicaId {
        let count = self.replica_count.max(1) as u64;
        ReplicaId((view.0 % count) as u32)
    }

    pub fn is_member(&self, replica: ReplicaId) -> bool {
        (replica.0 as usize) < self.replica_count
    }

    /// Every replica, in id order.
    pub fn replicas(&self) -> impl Iterator<Item = ReplicaId> + use<> {
        (0..self.replica_count as u32).map(ReplicaId)
    }
}
