//! The normal case: request intake and batching, pre-prepare, prepare, commit and in-order
//! execution. Invariant: `Execute` actions leave in strictly increasing sequence order, one per
//! sequence, and only for batches committed-local at this replica; `last_executed` never
//! decreases.

use std::collections::BTreeSet;

use super::event::{Action, Equivocation, PersistRecord, Phase, RecordDetail, RejectReason};
use super::log::Decided;
use super::message::{
    Commit, Message, PrePrepare, Prepare, Request, Sequence, Verified, batch_digest,
};
use super::persist::Signing;
use super::requests::Known;
use super::{Config, Gate, Outbox, Replica, ReplicaId};
use crate::types::Hash;

/// A batch a backup can accept: not too large, no request twice, and `digest` is its digest.
pub(super) fn check_batch<R: Request>(
    config: &Config,
    batch: &[R],
    digest: Hash,
) -> Result<(), RejectReason> {
    if batch.len() > config.batch_size {
        return Err(RejectReason::InvalidBatch);
    }
    let mut ids = BTreeSet::new();
    if !batch.iter().all(|request| ids.insert(request.id())) {
        return Err(RejectReason::InvalidBatch);
    }
    if batch_digest(batch) != digest {
        return Err(RejectReason::BadDigest);
    }
    Ok(())
}

impl<R: Request> Replica<R> {
    /// A request from a client or forwarded by another replica. A backup forwards its own
    /// clients' requests to the primary and watches every request it holds with the request
    /// timer; the primary batches them. A known request is refused, except that a client's
    /// retry of a pending one is forwarded again.
    pub(super) fn on_request(&mut self, request: R, from_client: bool, out: &mut Outbox<R>) {
        match self.requests.known(&request.id()) {
            // A client retrying a request this backup still waits for: the forward may have
            // been lost, so send it to the primary again (the paper's retransmission path).
            // Only for clients: replicas that disagree on the primary must not bounce it.
            Some(Known::Pending) if from_client && self.active && !self.is_primary() => {
                out.push(Action::Send {
                    to: self.primary(),
                    message: Message::Request(request),
                });
                return;
            }
            Some(_) => return self.reject(RejectReason::DuplicateRequest),
            None => {}
        }
        // The bound is for requests other replicas relay. A request from this replica's own
        // client API was admitted against the API's own bound (its mempool, the clients'
        // backpressure), and the API answered that it is accepted: refusing it here would
        // lose it silently and leave its mempool entry held for ever (seen in `weft bench`
        // when a slower replica's pool filled with relays).
        if !from_client && self.requests.pending_len() >= self.config.max_pending_requests {
            self.reject(RejectReason::PendingRequestsFull);
            return;
        }
        // A request a client gave to a backup goes to the primary only, as the paper's client
        // sends it: the other backups meet it first in the pre-prepare, where its signature is
        // checked with the rest of the batch, and hold nothing meanwhile. A primary that is
        // down or censors is caught by the request timer: halfway to the timeout this replica
        // sends what it still holds to every replica (`resend_waiting`), so that each times
        // it and suspects the primary too, not only the replica the client happened to reach.
        // While this replica changes view it sends the request to every replica: it goes to
        // the new primary with the rest when the view is entered (`enter_view`), but a replica
        // whose view change nobody joined (cut off for a while) may not enter one soon, and
        // its clients' requests would wait unseen and untimed meanwhile. Requests that come
        // from replicas are not forwarded.
        if from_client {
            let message = Message::Request(request.clone());
            if !self.active {
                out.push(Action::Broadcast(message));
            } else if !self.is_primary() {
                out.push(Action::Send {
                    to: self.primary(),
                    message,
                });
            }
        }
        self.requests.add_pending(request, self.now);
        self.refresh_request_timer(false);
        self.try_propose(out);
    }

    /// The primary cuts batches while the batch is full, its timer expired, or nothing it
    /// proposed is still being agreed on (then waiting would only add latency: batches form
    /// by themselves while earlier ones are in flight), and the window has room.
    pub(super) fn try_propose(&mut self, out: &mut Outbox<R>) {
        if !self.active || !self.is_primary() {
            return;
        }
        while self.requests.pending_len() > 0
            && self.next_sequence <= self.high_watermark()
            && self.requests.batch_due(
                self.now,
                self.config.batch_size,
                self.config.batch_timeout_ticks,
                self.next_sequence == self.last_executed.next(),
            )
        {
            let batch = self.requests.take_batch(self.config.batch_size, self.now);
            if !self.propose(batch, out) {
                break;
            }
        }
    }

    /// An idle primary fills the sequences up to the next checkpoint with null requests, so
    /// that every batch ends up under a checkpoint: a replica that missed some of them can
    /// then catch up by state transfer even if no client sends anything more.
    pub(super) fn pad_to_checkpoint(&mut self, out: &mut Outbox<R>) {
        if !self.active
            || !self.is_primary()
            || self.requests.pending_len() > 0
            || self.now
                < self
                    .last_proposed_at
                    .saturating_add(self.config.idle_checkpoint_ticks)
        {
            return;
        }
        let period = self.config.checkpoint_period;
        while !self.next_sequence.minus(1).0.is_multiple_of(period)
            && self.next_sequence <= self.high_watermark()
        {
            if !self.propose(Vec::new(), out) {
                break;
            }
        }
    }

    /// Re-send this replica's own pre-prepares, prepares and commits of the current view for
    /// the sequences still in the log (above the stable checkpoint). Only what was signed and
    /// recorded before goes out again, unchanged.
    pub(super) fn retransmit_slots(&mut self, out: &mut Outbox<R>) {
        let messages = self.own_slot_messages();
        out.extend(messages.into_iter().map(Action::Broadcast));
    }

    /// The same messages as [`Replica::retransmit_slots`], to one replica only.
    pub(super) fn retransmit_slots_to(&mut self, to: ReplicaId, out: &mut Outbox<R>) {
        let messages = self.own_slot_messages();
        out.extend(
            messages
                .into_iter()
                .map(|message| Action::Send { to, message }),
        );
    }

    fn own_slot_messages(&self) -> Vec<Message<R>> {
        if !self.active {
            return Vec::new();
        }
        let view = self.view;
        let mut messages = Vec::new();
        for (sequence, slot) in self.log.slots() {
            let Some(pre_prepare) = &slot.pre_prepare else {
                continue;
            };
            if pre_prepare.message.view != view {
                continue;
            }
            let digest = pre_prepare.message.digest;
            let signed = |phase: Phase| {
                self.signed.check(&PersistRecord::<R> {
                    view,
                    sequence: *sequence,
                    phase,
                    digest,
                    detail: RecordDetail::None,
                }) == Signing::Same
            };
            if pre_prepare.from == self.id {
                if signed(Phase::PrePrepare) {
                    messages.push(Message::PrePrepare(pre_prepare.message.clone()));
                }
            } else if signed(Phase::Prepare) {
                messages.push(Message::Prepare(Prepare {
                    view,
                    sequence: *sequence,
                    digest,
                }));
            }
            if slot.commit_sent && signed(Phase::Commit) {
                messages.push(Message::Commit(Commit {
                    view,
                    sequence: *sequence,
                    digest,
                }));
            }
        }
        messages
    }

    fn propose(&mut self, batch: Vec<R>, out: &mut Outbox<R>) -> bool {
        let sequence = self.next_sequence;
        let digest = batch_digest(&batch);
        let record = PersistRecord {
            view: self.view,
            sequence,
            phase: Phase::PrePrepare,
            digest,
            detail: RecordDetail::None,
        };
        if !self.sign(record, out) {
            self.requests.return_to_front(batch, self.now);
            return false;
        }
        self.next_sequence = sequence.next();
        self.last_proposed_at = self.now;
        let pre_prepare = PrePrepare {
            view: self.view,
            sequence,
            digest,
            batch,
        };
        tracing::debug!(
            replica = self.id.0,
            view = self.view.0,
            sequence = sequence.0,
            size = pre_prepare.batch.len(),
            "pre-prepare"
        );
        self.requests.mark_in_flight(sequence, &pre_prepare.batch);
        out.push(Action::Broadcast(Message::PrePrepare(pre_prepare.clone())));
        self.log.slot(sequence).pre_prepare = Some(Verified::unsigned(self.id, pre_prepare));
        self.refresh_request_timer(false);
        self.check_prepared(sequence, out);
        true
    }

    pub(super) fn on_pre_prepare(
        &mut self,
        pre_prepare: Verified<PrePrepare<R>>,
        out: &mut Outbox<R>,
    ) {
        let (view, sequence) = (pre_prepare.message.view, pre_prepare.message.sequence);
        if pre_prepare.from != self.config.primary(view) {
            self.reject(RejectReason::NotFromPrimary);
            return;
        }
        match self.gate(view, sequence) {
            Gate::Refuse(reason) => return self.reject(reason),
            Gate::Future => {
                return self.defer(view, pre_prepare.map(Message::PrePrepare), out);
            }
            Gate::Accept => {}
        }
        if let Err(reason) = check_batch(
            &self.config,
            &pre_prepare.message.batch,
            pre_prepare.message.digest,
        ) {
            return self.reject(reason);
        }
        let slot = self.log.slot(sequence);
        if let Some(held) = &slot.pre_prepare {
            if held.message == pre_prepare.message {
                return self.reject(RejectReason::Duplicate);
            }
            let first = held.clone();
            return self.on_equivocation(first, pre_prepare, out);
        }
        if self.is_primary() {
            // A primary makes pre-prepares; one that claims to come from it is a replay.
            return self.reject(RejectReason::Duplicate);
        }
        self.accept_pre_prepare(pre_prepare, out);
    }

    /// A backup takes the primary's pre-prepare (sent alone or inside a new view): it signs
    /// and sends its prepare, unless that contradicts a committed batch or its own record.
    pub(super) fn accept_pre_prepare(
        &mut self,
        pre_prepare: Verified<PrePrepare<R>>,
        out: &mut Outbox<R>,
    ) {
        let PrePrepare {
            view,
            sequence,
            digest,
            ..
        } = pre_prepare.message;
        let committed_other = self
            .log
            .get(sequence)
            .and_then(|slot| slot.decided.as_ref())
            .is_some_and(|decided| decided.digest != digest);
        if committed_other {
            return self.reject(RejectReason::ConflictsWithCommitted);
        }
        let record = PersistRecord {
            view,
            sequence,
            phase: Phase::Prepare,
            digest,
            detail: RecordDetail::None,
        };
        if !self.sign(record, out) {
            return;
        }
        self.requests
            .mark_in_flight(sequence, &pre_prepare.message.batch);
        let prepare = Prepare {
            view,
            sequence,
            digest,
        };
        out.push(Action::Broadcast(Message::Prepare(prepare.clone())));
        let slot = self.log.slot(sequence);
        slot.pre_prepare = Some(pre_prepare);
        slot.prepares
            .insert(self.id, Verified::unsigned(self.id, prepare));
        self.refresh_request_timer(false);
        self.check_prepared(sequence, out);
    }

    /// Two different pre-prepares from one primary for one (view, sequence): keep both as
    /// evidence and leave the view.
    fn on_equivocation(
        &mut self,
        first: Verified<PrePrepare<R>>,
        second: Verified<PrePrepare<R>>,
        out: &mut Outbox<R>,
    ) {
        self.reject(RejectReason::Equivocation);
        let (view, sequence) = (first.message.view, first.message.sequence);
        tracing::warn!(
            replica = self.id.0,
            primary = first.from.0,
            view = view.0,
            sequence = sequence.0,
            "primary equivocated"
        );
        let known = self.evidence.iter().any(|evidence| {
            evidence.first.message.view == view && evidence.first.message.sequence == sequence
        });
        if !known && self.evidence.len() < self.config.max_evidence {
            self.evidence.push(Equivocation { first, second });
        }
        if self.active && view == self.view {
            self.start_view_change(self.view.next(), out);
        }
    }

    pub(super) fn on_prepare(&mut self, prepare: Verified<Prepare>, out: &mut Outbox<R>) {
        let (view, sequence) = (prepare.message.view, prepare.message.sequence);
        if prepare.from == self.config.primary(view) {
            return self.reject(RejectReason::PrepareFromPrimary);
        }
        match self.gate(view, sequence) {
            Gate::Refuse(reason) => return self.reject(reason),
            Gate::Future => {
                return self.defer(view, prepare.map(Message::Prepare), out);
            }
            Gate::Accept => {}
        }
        let slot = self.log.slot(sequence);
        if let Some(held) = slot.prepares.get(&prepare.from) {
            let reason = if held.message == prepare.message {
                RejectReason::Duplicate
            } else {
                RejectReason::ConflictingDigest
            };
            return self.reject(reason);
        }
        slot.prepares.insert(prepare.from, prepare);
        self.check_prepared(sequence, out);
    }

    pub(super) fn on_commit(&mut self, commit: Verified<Commit>, out: &mut Outbox<R>) {
        let (view, sequence) = (commit.message.view, commit.message.sequence);
        match self.gate(view, sequence) {
            Gate::Refuse(reason) => return self.reject(reason),
            Gate::Future => {
                return self.defer(view, commit.map(Message::Commit), out);
            }
            Gate::Accept => {}
        }
        let slot = self.log.slot(sequence);
        if let Some(held) = slot.commits.get(&commit.from) {
            let reason = if held.message == commit.message {
                RejectReason::Duplicate
            } else {
                RejectReason::ConflictingDigest
            };
            return self.reject(reason);
        }
        slot.commits.insert(commit.from, commit);
        self.check_committed(sequence, out);
    }

    /// prepared(m, v, n, i): the pre-prepare and 2f matching prepares from distinct backups.
    /// Then sign and send the commit, with the certificate persisted first.
    pub(super) fn check_prepared(&mut self, sequence: Sequence, out: &mut Outbox<R>) {
        let needed = self.config.quorum() - 1;
        let Some(slot) = self.log.get(sequence) else {
            return;
        };
        if slot.commit_sent {
            return;
        }
        let Some(certificate) = slot.prepared_certificate(needed) else {
            return;
        };
        let (view, digest) = (certificate.view(), certificate.digest());
        if view != self.view {
            return;
        }
        let record = PersistRecord {
            view,
            sequence,
            phase: Phase::Commit,
            digest,
            detail: RecordDetail::Prepared(certificate.clone()),
        };
        if !self.sign(record, out) {
            return;
        }
        let commit = Commit {
            view,
            sequence,
            digest,
        };
        out.push(Action::Broadcast(Message::Commit(commit.clone())));
        let slot = self.log.slot(sequence);
        slot.prepared = Some(certificate);
        slot.commit_sent = true;
        slot.commits
            .insert(self.id, Verified::unsigned(self.id, commit));
        self.check_committed(sequence, out);
    }

    /// committed-local(m, v, n, i): prepared plus 2f+1 matching commits. The batch is decided;
    /// execution follows sequence order.
    fn check_committed(&mut self, sequence: Sequence, out: &mut Outbox<R>) {
        let quorum = self.config.quorum();
        let Some(slot) = self.log.get_mut(sequence) else {
            return;
        };
        if !slot.commit_sent || slot.decided.is_some() || slot.matching_commits() < quorum {
            return;
        }
        let Some(pre_prepare) = &slot.pre_prepare else {
            return;
        };
        let digest = pre_prepare.message.digest;
        slot.decided = Some(Decided {
            digest,
            batch: Some(pre_prepare.message.batch.clone()),
        });
        out.push(Action::Committed { sequence, digest });
        self.try_execute(out);
    }

    /// Hand out every decided batch that follows the last executed one, in order (none while a
    /// state transfer is under way: the transferred state supersedes them).
    pub(super) fn try_execute(&mut self, out: &mut Outbox<R>) {
        if self.checkpoints.transfer_target.is_some() {
            return;
        }
        let mut progressed = false;
        loop {
            let next = self.last_executed.next();
            let Some(batch) = self
                .log
                .get_mut(next)
                .and_then(|slot| slot.decided.as_mut())
                .and_then(|decided| decided.batch.take())
            else {
                break;
            };
            self.requests.mark_executed(next, &batch, self.now);
            out.push(Action::Execute {
                sequence: next,
                batch,
            });
            self.last_executed = next;
            progressed = true;
        }
        if progressed {
            self.view_changes.progress();
            self.refresh_request_timer(true);
            // The pipeline may be empty now: requests that waited for it go at once.
            self.try_propose(out);
        }
    }

    /// The request timer runs while this replica knows of a request that has not executed; it
    /// restarts when something executes and stops when nothing is left to wait for. Each run
    /// resends the pending requests once, halfway.
    pub(super) fn refresh_request_timer(&mut self, progressed: bool) {
        if !self.active || !self.requests.is_waiting() {
            self.request_deadline = None;
            self.request_resend_at = None;
        } else if progressed || self.request_deadline.is_none() {
            let timeout = self.config.request_timeout_ticks;
            self.request_deadline = Some(self.now.saturating_add(timeout));
            self.request_resend_at = Some(self.now.saturating_add((timeout / 2).max(1)));
        }
    }

    /// Nothing executed for half a request timeout although requests wait: send every pending
    /// one, and every one in a pre-prepare this replica has not seen prepared (which may have
    /// reached this replica only), to every replica. If the primary lost a forward, it gets it
    /// again; if it is down or censors, the replicas that had not seen the requests start
    /// their own timers, so that f+1 of them suspect it even when all of its clients came
    /// through one replica. A prepared batch needs no resend: 2f+1 replicas accepted its
    /// pre-prepare, so f+1 correct ones time its requests already (and resending a stalled
    /// window of full batches would flood the links just when they are slow). A replica that
    /// already holds a request refuses the copy as a duplicate.
    pub(super) fn resend_waiting(&mut self, out: &mut Outbox<R>) {
        let unprepared = |sequence: Sequence| {
            self.log
                .get(sequence)
                .is_none_or(|slot| slot.prepared.is_none())
        };
        let pending: Vec<R> = self
            .requests
            .pending()
            .chain(
                self.requests
                    .in_flight()
                    .filter(|(sequence, _)| unprepared(*sequence))
                    .map(|(_, request)| request),
            )
            .cloned()
            .collect();
        if pending.is_empty() {
            return;
        }
        tracing::info!(
            replica = self.id.0,
            view = self.view.0,
            requests = pending.len(),
            "nothing executed for half a request timeout: sending the requests still waiting to every replica"
        );
        out.extend(
            pending
                .into_iter()
                .map(|request| Action::Broadcast(Message::Request(request))),
        );
    }
}
