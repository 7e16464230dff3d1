//! What goes into the replica (events) and what comes out (actions), plus the records the
//! driver persists. Invariant: every action that leaves carries only what the driver needs to
//! act; ordering between actions is meaningful and the driver keeps it.

use super::message::{
    Checkpoint, Message, PrePrepare, PreparedCertificate, ReplicaId, Sequence, StateDigest,
    Verified, View, ViewChange,
};
use crate::types::Hash;

/// One input to [`super::Replica::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<R> {
    /// A message from another replica, verified at the network edge.
    Message(Verified<Message<R>>),
    /// A request from a client (already checked by admission: signature, authorisation).
    ClientRequest(R),
    /// One unit of logical time passed.
    Tick,
    /// The driver executed the batch at `sequence` (every `Execute` gets one, in order, an empty
    /// batch included) and reports the resulting state digest.
    Executed {
        sequence: Sequence,
        state_digest: StateDigest,
    },
    /// The driver finished a state transfer: the local state is now the one at `sequence`.
    StateTransferred {
        sequence: Sequence,
        state_digest: StateDigest,
    },
    /// What this replica persisted before it stopped; the first event after `Replica::new`.
    Restored(PersistedState<R>),
}

/// One output of [`super::Replica::handle`]. The driver runs them strictly in order: a
/// `Persist` must be durable (synced) before any later action runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<R> {
    /// Durably record what this replica is about to sign; the message carrying that signature
    /// comes in a later action.
    Persist(PersistRecord<R>),
    /// Sign `message` as this replica and send it to one replica.
    Send { to: ReplicaId, message: Message<R> },
    /// Sign `message` as this replica and send it to every other replica (not to itself).
    Broadcast(Message<R>),
    /// Execute the batch at `sequence`, then report `Event::Executed`. Issued in sequence order,
    /// once per sequence; an empty batch is the null request (state unchanged).
    Execute { sequence: Sequence, batch: Vec<R> },
    /// A checkpoint became stable; everything at or below `sequence` may be pruned. The driver
    /// keeps the proof to hand back in `PersistedState` after a restart.
    CheckpointStable {
        sequence: Sequence,
        state_digest: StateDigest,
        proof: Vec<Verified<Checkpoint>>,
    },
    /// This replica entered `view`, whose primary is `primary`.
    ViewChanged { view: View, primary: ReplicaId },
    /// Fetch the state at `sequence` whose digest is `state_digest` from `peers` (the replicas
    /// that vouched for it), then report `Event::StateTransferred`.
    RequestStateTransfer {
        sequence: Sequence,
        state_digest: StateDigest,
        peers: Vec<ReplicaId>,
    },
    /// A state transfer passed over the sequences of `requests`, which this replica held
    /// (pending, or in flight there): whether the transferred batches hold them only the
    /// ledger knows. The driver hands each one the ledger does not hold back to the replica
    /// as an `Event::ClientRequest`.
    Resubmit { requests: Vec<R> },
    /// The batch with `digest` is committed at `sequence` (may come before earlier sequences
    /// commit; execution still follows sequence order).
    Committed { sequence: Sequence, digest: Hash },
    /// 2f+1 replicas certified a state at `sequence` that differs from this replica's own: its
    /// execution is not the others' (non-deterministic chaincode, a corrupted store). The
    /// driver must stop committing and say so; the replica refuses to advance past it.
    Diverged {
        sequence: Sequence,
        own: StateDigest,
        certified: StateDigest,
    },
}

/// The protocol step a persisted record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    PrePrepare,
    Prepare,
    Commit,
    Checkpoint,
    ViewChange,
    NewView,
}

/// What this replica is about to sign. After a restart the replica refuses to sign a
/// different digest for the same (view, sequence, phase) (view changes and new views are one
/// per view; checkpoints one per sequence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistRecord<R> {
    pub view: View,
    pub sequence: Sequence,
    pub phase: Phase,
    pub digest: Hash,
    pub detail: RecordDetail<R>,
}

/// What a restarted replica needs beyond the digest to keep its word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordDetail<R> {
    None,
    /// With a `Commit`: the certificate that justified it. A replica that forgot it could let a
    /// view change drop a batch that committed elsewhere.
    Prepared(PreparedCertificate<R>),
    /// With a `ViewChange`: the message itself, so it can be re-sent unchanged.
    ViewChange(ViewChange<R>),
}

/// A checkpoint with a proof of 2f+1 matching checkpoint messages (empty for genesis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StableCheckpoint {
    pub sequence: Sequence,
    pub state_digest: StateDigest,
    pub proof: Vec<Verified<Checkpoint>>,
}

/// What the driver hands back at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistedState<R> {
    /// Every `Persist` record the driver kept (it may drop those at or below the stable
    /// checkpoint and those of views below the latest).
    pub records: Vec<PersistRecord<R>>,
    /// The last sequence whose execution is durable (the ledger's height, in sequences).
    pub last_executed: Sequence,
    /// The latest `CheckpointStable` the driver kept, if any.
    pub stable_checkpoint: Option<StableCheckpoint>,
}

/// Why an input was refused. Refusals are outcomes, counted by reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// The sender is not one of the configured replicas.
    NonMember,
    /// The message belongs to a view this replica has left.
    StaleView,
    /// The sequence is at or below the low watermark or above the high watermark.
    OutOfWindow,
    /// A pre-prepare or new view not sent by the primary of its view.
    NotFromPrimary,
    /// A prepare sent by the primary (its pre-prepare stands for it).
    PrepareFromPrimary,
    /// A pre-prepare whose digest is not the digest of its batch.
    BadDigest,
    /// A batch too large or with a request twice.
    InvalidBatch,
    /// The same message again.
    Duplicate,
    /// A second, different message from one sender for one (view, sequence) or checkpoint.
    ConflictingDigest,
    /// A second, different pre-prepare from the primary for one (view, sequence).
    Equivocation,
    /// Signing would contradict what this replica already signed (I6).
    ConflictsWithSigned,
    /// A pre-prepare for a sequence already committed with another digest.
    ConflictsWithCommitted,
    /// Too many messages for future views from one sender.
    FutureBufferFull,
    /// A checkpoint message for a sequence that is not a checkpoint.
    InvalidCheckpoint,
    /// A checkpoint at or below the stable one.
    StaleCheckpoint,
    /// A quorum certified a state digest different from this replica's own.
    StateDigestMismatch,
    /// A view change with a bad checkpoint proof or prepared certificate.
    InvalidViewChange,
    /// A new view with the wrong number of view changes or an invalid one.
    InvalidNewView,
    /// A new view whose pre-prepares differ from the recomputation from its view changes.
    NewViewMismatch,
    /// A client request already pending, in flight or executed.
    DuplicateRequest,
    /// Too many pending requests.
    PendingRequestsFull,
    /// An execution report for a sequence this replica did not hand out.
    UnknownExecution,
    /// A state transfer that would not move this replica forward.
    StaleStateTransfer,
    /// A state transfer to a state no certified checkpoint vouches for.
    UnverifiedStateTransfer,
    /// A restore after the replica started working.
    UnexpectedRestore,
}

impl RejectReason {
    /// A stable snake_case name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NonMember => "non_member",
            RejectReason::StaleView => "stale_view",
            RejectReason::OutOfWindow => "out_of_window",
            RejectReason::NotFromPrimary => "not_from_primary",
            RejectReason::PrepareFromPrimary => "prepare_from_primary",
            RejectReason::BadDigest => "bad_digest",
            RejectReason::InvalidBatch => "invalid_batch",
            RejectReason::Duplicate => "duplicate",
            RejectReason::ConflictingDigest => "conflicting_digest",
            RejectReason::Equivocation => "equivocation",
            RejectReason::ConflictsWithSigned => "conflicts_with_signed",
            RejectReason::ConflictsWithCommitted => "conflicts_with_committed",
            RejectReason::FutureBufferFull => "future_buffer_full",
            RejectReason::InvalidCheckpoint => "invalid_checkpoint",
            RejectReason::StaleCheckpoint => "stale_checkpoint",
            RejectReason::StateDigestMismatch => "state_digest_mismatch",
            RejectReason::InvalidViewChange => "invalid_view_change",
            RejectReason::InvalidNewView => "invalid_new_view",
            RejectReason::NewViewMismatch => "new_view_mismatch",
            RejectReason::DuplicateRequest => "duplicate_request",
            RejectReason::PendingRequestsFull => "pending_requests_full",
            RejectReason::UnknownExecution => "unknown_execution",
            RejectReason::StaleStateTransfer => "stale_state_transfer",
            RejectReason::UnverifiedStateTransfer => "unverified_state_transfer",
            RejectReason::UnexpectedRestore => "unexpected_restore",
        }
    }
}

/// Two different pre-prepares signed by one primary for one (view, sequence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equivocation<R> {
    pub first: Verified<PrePrepare<R>>,
    pub second: Verified<PrePrepare<R>>,
}
