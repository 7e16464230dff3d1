//! Consensus identifiers and the messages replicas exchange, as the core sees them once the
//! network edge has authenticated their senders (every signature they carry checked). Invariant: a batch digest depends only on the
//! ordered request ids (never on view or sequence), so a batch keeps its digest when a new
//! primary re-proposes it.

use std::fmt;

use bytes::Bytes;

use crate::crypto::CanonicalHasher;
use crate::types::Hash;

/// A validator's index in the configured replica list (`0..replica_count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReplicaId(pub u32);

/// A view number; the primary of view `v` is replica `v mod n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct View(pub u64);

impl View {
    pub fn next(self) -> View {
        View(self.0.saturating_add(1))
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A sequence number. Sequence 0 is the genesis checkpoint; batches start at 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sequence(pub u64);

impl Sequence {
    pub const GENESIS: Sequence = Sequence(0);

    pub fn next(self) -> Sequence {
        Sequence(self.0.saturating_add(1))
    }

    pub fn plus(self, count: u64) -> Sequence {
        Sequence(self.0.saturating_add(count))
    }

    pub fn minus(self, count: u64) -> Sequence {
        Sequence(self.0.saturating_sub(count))
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The identity of a client request (for Weft, the transaction id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RequestId(pub [u8; 32]);

/// What the core orders. It only needs an identity to deduplicate and to compute digests.
pub trait Request: Clone + Eq + fmt::Debug {
    /// What deduplication goes by.
    fn id(&self) -> RequestId;

    /// What a batch digest covers for this request: all of it, not only its id. Two requests
    /// with one id (a client's payload signed twice: an Ed25519 signer can make more than one
    /// valid signature) must not share a batch digest, or a primary could hand replicas
    /// batches that agree in their digest and differ in what the blocks record. The default
    /// fits requests that are nothing but their id.
    fn content_digest(&self) -> [u8; 32] {
        self.id().0
    }
}

/// The digest of the replicated state after executing up to a checkpoint (block hash or
/// state root, as the driver chooses; the same choice on every replica).
pub type StateDigest = [u8; 32];

/// The state digest of the genesis checkpoint (sequence 0), which needs no proof.
pub const GENESIS_STATE_DIGEST: StateDigest = [0; 32];

/// The bytes a replica signed and its signature, exactly as the network edge received them.
/// The core never looks inside: it keeps them with the message so that the driver can forward
/// the message as proof (in a view change, a new view or a stable checkpoint) with its sender's
/// own signature. What the core holds is bounded by its window and per-sender rules, so the
/// signed forms are too.
#[derive(Clone, Debug)]
pub struct SignedForm {
    pub message: Bytes,
    pub signature: Bytes,
}

/// A message whose sender the network edge authenticated as `from`: by its signature (and the
/// signatures of every message nested in it) against `from`'s key, or, for the kinds that are
/// never forwarded, by arriving over `from`'s own TLS connection (`network::wire`,
/// `Authentication`). The core trusts it without further checks of authenticity (it still
/// checks content). Only the network edge (after verification), the core itself for its own
/// messages, and tests build these. Equality looks at the sender and the message, not at the
/// signed form (a replica's own messages carry none).
#[derive(Clone, Debug)]
pub struct Verified<M> {
    pub from: ReplicaId,
    pub message: M,
    /// The form the sender signed; `None` for this replica's own messages (the edge has them
    /// as they went out, or signs them again: Ed25519 signatures are deterministic), for
    /// messages authenticated by their connection (never forwarded, so never needed), and in
    /// the simulation.
    pub signed: Option<SignedForm>,
}

impl<M: PartialEq> PartialEq for Verified<M> {
    fn eq(&self, other: &Self) -> bool {
        self.from == other.from && self.message == other.message
    }
}

impl<M: Eq> Eq for Verified<M> {}

impl<M> Verified<M> {
    /// For the network edge, after checking `from`'s signature over `signed` and over every
    /// message nested in it; `message` is what `signed` decodes to.
    pub fn checked_by_edge(from: ReplicaId, message: M, signed: SignedForm) -> Verified<M> {
        Verified {
            from,
            message,
            signed: Some(signed),
        }
    }

    /// For the network edge: a message that arrived unsigned over `from`'s own connection,
    /// of a kind that is never forwarded as proof.
    pub fn authenticated_by_channel(from: ReplicaId, message: M) -> Verified<M> {
        Verified {
            from,
            message,
            signed: None,
        }
    }

    /// A message without a signed form: one this replica made itself, or one a test or the
    /// simulation hands the core.
    pub fn unsigned(from: ReplicaId, message: M) -> Verified<M> {
        Verified {
            from,
            message,
            signed: None,
        }
    }

    /// The same sender and signed form around a part of the message (a top-level message
    /// unwrapped into its kind).
    pub fn map<N>(self, part: impl FnOnce(M) -> N) -> Verified<N> {
        Verified {
            from: self.from,
            message: part(self.message),
            signed: self.signed,
        }
    }
}

/// PRE-PREPARE: the primary assigns `sequence` to `batch` in `view`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrePrepare<R> {
    pub view: View,
    pub sequence: Sequence,
    pub digest: Hash,
    pub batch: Vec<R>,
}

/// PREPARE: a backup accepted the primary's pre-prepare for (view, sequence, digest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepare {
    pub view: View,
    pub sequence: Sequence,
    pub digest: Hash,
}

/// COMMIT: the sender holds a prepared certificate for (view, sequence, digest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub view: View,
    pub sequence: Sequence,
    pub digest: Hash,
}

/// CHECKPOINT: the sender's state digest after executing every sequence up to `sequence`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub sequence: Sequence,
    pub state_digest: StateDigest,
}

/// A pre-prepare and 2f matching prepares from distinct backups of its view: proof that no
/// other digest can be prepared at that (view, sequence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedCertificate<R> {
    pub pre_prepare: Verified<PrePrepare<R>>,
    pub prepares: Vec<Verified<Prepare>>,
}

impl<R> PreparedCertificate<R> {
    pub fn view(&self) -> View {
        self.pre_prepare.message.view
    }

    pub fn sequence(&self) -> Sequence {
        self.pre_prepare.message.sequence
    }

    pub fn digest(&self) -> Hash {
        self.pre_prepare.message.digest
    }
}

/// VIEW-CHANGE: the sender moves to `new_view`, carrying its stable checkpoint with its proof
/// and every prepared certificate above it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewChange<R> {
    pub new_view: View,
    pub stable_checkpoint: Sequence,
    pub checkpoint_proof: Vec<Verified<Checkpoint>>,
    pub prepared: Vec<PreparedCertificate<R>>,
}

/// NEW-VIEW: the new primary's choice, fully determined by the view changes it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewView<R> {
    pub view: View,
    pub view_changes: Vec<Verified<ViewChange<R>>>,
    /// Signed by the new primary, each a PRE-PREPARE of its own.
    pub pre_prepares: Vec<Verified<PrePrepare<R>>>,
}

/// Everything a replica sends to another replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<R> {
    /// A client request forwarded by a backup to the primary.
    Request(R),
    PrePrepare(PrePrepare<R>),
    Prepare(Prepare),
    Commit(Commit),
    Checkpoint(Checkpoint),
    ViewChange(ViewChange<R>),
    NewView(NewView<R>),
}

/// The kind of a message, for logs, metrics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageKind {
    Request,
    PrePrepare,
    Prepare,
    Commit,
    Checkpoint,
    ViewChange,
    NewView,
}

impl<R> Message<R> {
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Request(_) => MessageKind::Request,
            Message::PrePrepare(_) => MessageKind::PrePrepare,
            Message::Prepare(_) => MessageKind::Prepare,
            Message::Commit(_) => MessageKind::Commit,
            Message::Checkpoint(_) => MessageKind::Checkpoint,
            Message::ViewChange(_) => MessageKind::ViewChange,
            Message::NewView(_) => MessageKind::NewView,
        }
    }
}

/// The digest of a batch: the ordered request ids, counted and length-prefixed under a domain
/// tag. An empty batch is the null request that fills gaps after a view change.
pub fn batch_digest<R: Request>(batch: &[R]) -> Hash {
    let mut hasher = CanonicalHasher::new("weft.v1/pbft/batch");
    hasher.put_u64(batch.len() as u64);
    for request in batch {
        hasher.put_bytes(&request.content_digest());
    }
    hasher.finish()
}

/// The digest a replica records before it signs a VIEW-CHANGE.
pub fn view_change_digest<R: Request>(view_change: &ViewChange<R>) -> Hash {
    let mut hasher = CanonicalHasher::new("weft.v1/pbft/view-change");
    hasher
        .put_u64(view_change.new_view.0)
        .put_u64(view_change.stable_checkpoint.0)
        .put_u64(view_change.checkpoint_proof.len() as u64);
    for checkpoint in &view_change.checkpoint_proof {
        hasher
            .put_u64(u64::from(checkpoint.from.0))
            .put_u64(checkpoint.message.sequence.0)
            .put_bytes(&checkpoint.message.state_digest);
    }
    hasher.put_u64(view_change.prepared.len() as u64);
    for certificate in &view_change.prepared {
        put_certificate(&mut hasher, certificate);
    }
    hasher.finish()
}

/// The digest a new primary records before it signs a NEW-VIEW.
pub fn new_view_digest<R: Request>(new_view: &NewView<R>) -> Hash {
    let mut hasher = CanonicalHasher::new("weft.v1/pbft/new-view");
    hasher
        .put_u64(new_view.view.0)
        .put_u64(new_view.view_changes.len() as u64);
    for view_change in &new_view.view_changes {
        hasher
            .put_u64(u64::from(view_change.from.0))
            .put_hash(&view_change_digest(&view_change.message));
    }
    hasher.put_u64(new_view.pre_prepares.len() as u64);
    for pre_prepare in new_view.pre_prepares.iter().map(|p| &p.message) {
        hasher
            .put_u64(pre_prepare.view.0)
            .put_u64(pre_prepare.sequence.0)
            .put_hash(&pre_prepare.digest);
    }
    hasher.finish()
}

fn put_certificate<R>(hasher: &mut CanonicalHasher, certificate: &PreparedCertificate<R>) {
    let pre_prepare = &certificate.pre_prepare;
    hasher
        .put_u64(u64::from(pre_prepare.from.0))
        .put_u64(pre_prepare.message.view.0)
        .put_u64(pre_prepare.message.sequence.0)
        .put_hash(&pre_prepare.message.digest)
        .put_u64(certificate.prepares.len() as u64);
    for prepare in &certificate.prepares {
        hasher
            .put_u64(u64::from(prepare.from.0))
            .put_u64(prepare.message.view.0)
            .put_u64(prepare.message.sequence.0)
            .put_hash(&prepare.message.digest);
    }
}
