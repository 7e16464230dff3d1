//! The PBFT replica (Castro & Liskov, OSDI '99 / TOCS 2002) as a pure state machine:
//! `Replica::handle(Event) -> Vec<Action>`, with no I/O, clock, randomness or unordered
//! iteration. Invariant: the same events in the same order produce the same actions, and this
//! replica never signs two different digests for one (view, sequence, phase), across restarts.
//!
//! # The paper's symbols and the code's names
//!
//! | paper | here |
//! |---|---|
//! | `v` | `view` ([`View`]) |
//! | `n` (a sequence number) | `sequence` ([`Sequence`]) |
//! | `d` | `digest` ([`batch_digest`]: over the ordered request ids, not the sequence) |
//! | `m` | a request (`R:` [`Request`]); the primary orders batches of them |
//! | `i`, `j`, `p` | `replica` / `from` ([`ReplicaId`]), `primary` (`view mod n`) |
//! | `N = 3f+1`, `f` | `Config::replica_count`, `Config::faults()` |
//! | `2f+1`, `f+1` | `Config::quorum()`, `Config::weak_quorum()` |
//! | `h` | `low_watermark()` = `last_stable_checkpoint()` |
//! | `H` | `high_watermark()` = `h + Config::window` |
//! | `K` | `Config::checkpoint_period` |
//! | `s`, `C` | `ViewChange::stable_checkpoint`, `ViewChange::checkpoint_proof` |
//! | `P`, `P_m` | `ViewChange::prepared`, one [`PreparedCertificate`] |
//! | `V`, `O` | `NewView::view_changes`, `NewView::pre_prepares` |
//! | `min-s`, `max-s` | the chosen stable checkpoint and highest prepared sequence of a new view |
//! | `T` (view-change timer) | `Config::view_change_timeout_ticks`, doubled per failed view |
//! | prepared(m, v, n, i) | a slot with a prepared certificate in the current view |
//! | committed-local(m, v, n, i) | prepared plus 2f+1 matching commits: the slot is decided |
//!
//! # Where the code departs from the paper
//!
//! * Signatures for what may be forwarded: messages are [`Verified`] at the network edge,
//!   proofs carry the signed messages themselves, and a new view's pre-prepare set is fully
//!   determined by the 2f+1 view changes it carries, so every replica recomputes it. Commits
//!   (never forwarded) are authenticated by their sender's mutual-TLS connection, as the
//!   paper's MACs would (`network::wire`).
//! * `Broadcast` goes to the others; a replica logs its own messages itself.
//! * Requests travel in batches; the null request is the empty batch.
//! * Persistence is explicit (`Action::Persist` before the message it justifies), and a commit
//!   record keeps its prepared certificate so a restart cannot forget a prepared batch.
//! * A lagging replica learns a higher view only through a verified NEW-VIEW: it asks with a
//!   view change once f+1 replicas showed that view, and the primary of that view re-sends its
//!   NEW-VIEW to replicas that ask for an older view.
//!
//! # Files
//!
//! `message` (identifiers, messages, digests), `config` (parameters, quorums), `event` (events,
//! actions, persisted records, reject reasons), `log` (per-sequence slots), `requests`
//! (pending / in flight / executed requests), `normal_case` (batching, pre-prepare, prepare,
//! commit, execution), `checkpoint` (checkpoints, garbage collection, state transfer),
//! `view_change` (view change and new view), `persist` (signed records and restore).

mod checkpoint;
mod config;
mod event;
mod log;
mod message;
mod normal_case;
mod persist;
mod requests;
mod view_change;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

pub use config::{Config, ConfigError};
pub use event::{
    Action, Equivocation, Event, PersistRecord, PersistedState, Phase, RecordDetail, RejectReason,
    StableCheckpoint,
};
pub use message::{
    Checkpoint, Commit, GENESIS_STATE_DIGEST, Message, MessageKind, NewView, PrePrepare, Prepare,
    PreparedCertificate, ReplicaId, Request, RequestId, Sequence, SignedForm, StateDigest,
    Verified, View, ViewChange, batch_digest, new_view_digest, view_change_digest,
};

use checkpoint::Checkpoints;
use log::Log;
use persist::{SignedRecords, Signing};
use requests::RequestPool;
use view_change::ViewChanges;

type Outbox<R> = Vec<Action<R>>;

/// One PBFT replica. Drive it with [`Replica::handle`] and run the returned actions in order.
#[derive(Clone, Debug)]
pub struct Replica<R: Request> {
    config: Config,
    id: ReplicaId,
    /// The view this replica is in, or moving to while `active` is false.
    view: View,
    /// False between sending (or joining) a view change and accepting the new view.
    active: bool,
    /// Logical time: the number of ticks seen.
    now: u64,
    /// Some event was handled (a restore must come first).
    started: bool,
    /// The primary's next sequence to assign.
    next_sequence: Sequence,
    /// The last sequence handed to the driver for execution (or reached by state transfer).
    last_executed: Sequence,
    /// The last sequence whose execution the driver reported.
    last_reported: Sequence,
    log: Log<R>,
    requests: RequestPool<R>,
    checkpoints: Checkpoints,
    view_changes: ViewChanges<R>,
    signed: SignedRecords,
    /// Normal-case messages for views this replica has not entered yet, per sender.
    future: BTreeMap<ReplicaId, VecDeque<Verified<Message<R>>>>,
    /// When the request timer fires, if running.
    request_deadline: Option<u64>,
    /// Halfway to `request_deadline`: when this replica sends the requests it still holds to
    /// every replica (the paper's client retransmission), if not done yet in this run of the
    /// timer.
    request_resend_at: Option<u64>,
    /// When this replica last proposed a batch (as primary).
    last_proposed_at: u64,
    /// When this replica last broadcast a checkpoint message.
    checkpoint_announced_at: u64,
    /// How many times this replica re-sent its messages for want of a new checkpoint.
    retransmissions: u64,
    /// The latest checkpoint each lagging replica announced and was helped for.
    helped: BTreeMap<ReplicaId, Sequence>,
    rejections: BTreeMap<RejectReason, u64>,
    evidence: Vec<Equivocation<R>>,
}

/// What to do with a normal-case message, given its view and sequence.
enum Gate {
    Accept,
    /// For a view this replica has not entered (yet): keep it, bounded.
    Future,
    Refuse(RejectReason),
}

impl<R: Request> Replica<R> {
    /// A replica at genesis: view 0, nothing executed. Feed it `Event::Restored` first if it
    /// ran before.
    pub fn new(config: Config, id: ReplicaId) -> Result<Replica<R>, ConfigError> {
        config.validate()?;
        if !config.is_member(id) {
            return Err(ConfigError::NotAMember {
                id: id.0,
                replica_count: config.replica_count,
            });
        }
        Ok(Replica {
            config,
            id,
            view: View(0),
            active: true,
            now: 0,
            started: false,
            next_sequence: Sequence(1),
            last_executed: Sequence::GENESIS,
            last_reported: Sequence::GENESIS,
            log: Log::new(),
            requests: RequestPool::new(),
            checkpoints: Checkpoints::new(),
            view_changes: ViewChanges::new(),
            signed: SignedRecords::default(),
            future: BTreeMap::new(),
            request_deadline: None,
            request_resend_at: None,
            last_proposed_at: 0,
            checkpoint_announced_at: 0,
            retransmissions: 0,
            helped: BTreeMap::new(),
            rejections: BTreeMap::new(),
            evidence: Vec::new(),
        })
    }

    /// Process one event; the driver runs the returned actions in order.
    pub fn handle(&mut self, event: Event<R>) -> Vec<Action<R>> {
        let mut out = Vec::new();
        let first = !self.started;
        self.started = true;
        match event {
            Event::Message(message) => self.on_message(message, &mut out),
            Event::ClientRequest(request) => self.on_request(request, true, &mut out),
            Event::Tick => self.on_tick(&mut out),
            Event::Executed {
                sequence,
                state_digest,
            } => self.on_executed(sequence, state_digest, &mut out),
            Event::StateTransferred {
                sequence,
                state_digest,
            } => self.on_state_transferred(sequence, state_digest, &mut out),
            Event::Restored(state) => {
                if first {
                    self.restore(state, &mut out);
                } else {
                    self.reject(RejectReason::UnexpectedRestore);
                }
            }
        }
        out
    }

    pub fn id(&self) -> ReplicaId {
        self.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current view (the target view while a view change is under way).
    pub fn view(&self) -> View {
        self.view
    }

    /// The primary of the current view.
    pub fn primary(&self) -> ReplicaId {
        self.config.primary(self.view)
    }

    pub fn is_primary(&self) -> bool {
        self.primary() == self.id
    }

    pub fn last_executed(&self) -> Sequence {
        self.last_executed
    }

    pub fn last_stable_checkpoint(&self) -> Sequence {
        self.checkpoints.stable.sequence
    }

    /// h: messages at or below it are refused.
    pub fn low_watermark(&self) -> Sequence {
        self.checkpoints.stable.sequence
    }

    /// H: messages above it are refused.
    pub fn high_watermark(&self) -> Sequence {
        self.low_watermark().plus(self.config.window)
    }

    pub fn is_view_changing(&self) -> bool {
        !self.active
    }

    /// The view-change timeout in force now (doubles per failed view, resets on progress).
    pub fn view_change_timeout_ticks(&self) -> u64 {
        self.view_changes.timeout(&self.config)
    }

    /// How many inputs were refused, by reason.
    pub fn rejections(&self) -> &BTreeMap<RejectReason, u64> {
        &self.rejections
    }

    /// How many times this replica re-sent its messages because it took no new checkpoint
    /// for `retransmit_ticks`.
    pub fn retransmissions(&self) -> u64 {
        self.retransmissions
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejections.get(&reason).copied().unwrap_or(0)
    }

    /// Proofs that a primary signed two different pre-prepares for one (view, sequence).
    pub fn evidence(&self) -> &[Equivocation<R>] {
        &self.evidence
    }

    fn on_message(&mut self, message: Verified<Message<R>>, out: &mut Outbox<R>) {
        if !self.config.is_member(message.from) {
            self.reject(RejectReason::NonMember);
            return;
        }
        let Verified {
            from,
            message,
            signed,
        } = message;
        // Each kind keeps the sender and the signed form it came with.
        fn part<M>(from: ReplicaId, signed: Option<SignedForm>, message: M) -> Verified<M> {
            Verified {
                from,
                message,
                signed,
            }
        }
        match message {
            Message::Request(request) => self.on_request(request, false, out),
            Message::PrePrepare(m) => self.on_pre_prepare(part(from, signed, m), out),
            Message::Prepare(m) => self.on_prepare(part(from, signed, m), out),
            Message::Commit(m) => self.on_commit(part(from, signed, m), out),
            Message::Checkpoint(m) => self.on_checkpoint(part(from, signed, m), out),
            Message::ViewChange(m) => self.on_view_change(part(from, signed, m), out),
            Message::NewView(m) => self.on_new_view(part(from, signed, m), out),
        }
    }

    fn on_tick(&mut self, out: &mut Outbox<R>) {
        self.now = self.now.saturating_add(1);
        if self.active {
            self.try_propose(out);
            self.pad_to_checkpoint(out);
            if self
                .request_resend_at
                .is_some_and(|resend_at| self.now >= resend_at)
            {
                self.request_resend_at = None;
                self.resend_waiting(out);
            }
            if self
                .request_deadline
                .is_some_and(|deadline| self.now >= deadline)
            {
                tracing::info!(
                    replica = self.id.0,
                    view = self.view.0,
                    "request timer expired"
                );
                self.start_view_change(self.view.next(), out);
            }
        } else {
            self.view_change_tick(out);
        }
        self.retransmit_when_quiet(out);
        self.check_state_transfer(out);
    }

    /// Count a refusal. Refusals are outcomes, not errors.
    fn reject(&mut self, reason: RejectReason) {
        tracing::debug!(replica = self.id.0, view = self.view.0, ?reason, "rejected");
        *self.rejections.entry(reason).or_insert(0) += 1;
    }

    /// Where a normal-case message for (view, sequence) goes.
    fn gate(&self, view: View, sequence: Sequence) -> Gate {
        if view < self.view {
            Gate::Refuse(RejectReason::StaleView)
        } else if view > self.view || !self.active {
            Gate::Future
        } else if sequence <= self.low_watermark() {
            Gate::Refuse(RejectReason::OutOfWindow)
        } else if sequence > self.high_watermark() {
            // Up to one window above the high watermark, a message is kept (bounded per
            // sender) and handled once the watermark moves: a replica catching up (state
            // transfer, then its log) would otherwise drop what the others send meanwhile and,
            // under steady load, never rejoin them.
            if sequence.0 <= self.high_watermark().0.saturating_add(self.config.window) {
                Gate::Future
            } else {
                Gate::Refuse(RejectReason::OutOfWindow)
            }
        } else {
            Gate::Accept
        }
    }

    /// Keep a message for a view not entered yet; a message from a higher view also tells
    /// which view its sender is in.
    fn defer(&mut self, view: View, message: Verified<Message<R>>, out: &mut Outbox<R>) {
        let from = message.from;
        let queue = self.future.entry(from).or_default();
        if queue.len() >= self.config.future_messages_per_replica {
            self.reject(RejectReason::FutureBufferFull);
        } else {
            queue.push_back(message);
        }
        if view > self.view {
            self.note_claim(from, view, out);
        }
    }

    /// Re-handle the kept messages of the view just entered, or of sequences the window moved
    /// over; drop those of older views.
    fn replay_future(&mut self, out: &mut Outbox<R>) {
        let kept = std::mem::take(&mut self.future);
        for (_, queue) in kept {
            for message in queue {
                match normal_case_view(&message.message) {
                    Some(view) if view < self.view => {}
                    Some(view) if view > self.view || !self.active => {
                        self.future
                            .entry(message.from)
                            .or_default()
                            .push_back(message);
                    }
                    _ => self.on_message(message, out),
                }
            }
        }
    }

    /// Persist `record` before the signature it stands for leaves, unless it contradicts what
    /// was signed before (then refuse).
    fn sign(&mut self, record: PersistRecord<R>, out: &mut Outbox<R>) -> bool {
        self.sign_all(vec![record], out)
    }

    /// All or nothing: either every record may be signed, or none is.
    fn sign_all(&mut self, records: Vec<PersistRecord<R>>, out: &mut Outbox<R>) -> bool {
        if let Some(conflict) = records
            .iter()
            .find(|record| self.signed.check(record) == Signing::Conflict)
        {
            tracing::warn!(
                replica = self.id.0,
                view = conflict.view.0,
                sequence = conflict.sequence.0,
                phase = ?conflict.phase,
                "refusing to sign a digest that conflicts with one signed before"
            );
            self.reject(RejectReason::ConflictsWithSigned);
            return false;
        }
        for record in records {
            if self.signed.check(&record) == Signing::Fresh {
                self.signed.insert(&record);
                out.push(Action::Persist(record));
            }
        }
        true
    }

    #[cfg(test)]
    fn log_len(&self) -> usize {
        self.log.len()
    }
}

/// The view of a normal-case message (the only kind kept for future views).
fn normal_case_view<R>(message: &Message<R>) -> Option<View> {
    match message {
        Message::PrePrepare(pre_prepare) => Some(pre_prepare.view),
        Message::Prepare(prepare) => Some(prepare.view),
        Message::Commit(commit) => Some(commit.view),
        _ => None,
    }
}
