//! View change and new view. Invariants: a NEW-VIEW carries exactly 2f+1 valid VIEW-CHANGE
//! messages and its pre-prepares are the ones [`plan_new_view`] computes from them, on the
//! primary and on every backup alike; entering a view never lowers `last_executed` and never
//! hands a batch out for execution twice. Only the latest view change per sender is kept.

use std::collections::{BTreeMap, BTreeSet};

use super::event::{Action, PersistRecord, Phase, RecordDetail, RejectReason, StableCheckpoint};
use super::message::{
    Checkpoint, GENESIS_STATE_DIGEST, Message, NewView, PrePrepare, Prepare, PreparedCertificate,
    ReplicaId, Request, RequestId, Sequence, StateDigest, Verified, View, ViewChange, batch_digest,
    new_view_digest, view_change_digest,
};
use super::normal_case::check_batch;
use super::{Config, Outbox, Replica};

#[derive(Clone, Debug)]
pub(super) struct ViewChanges<R> {
    /// The latest valid view change from each replica (this one's included).
    received: BTreeMap<ReplicaId, Verified<ViewChange<R>>>,
    /// This replica's view change for the view it is moving to, re-sent on a timer.
    own: Option<ViewChange<R>>,
    /// The highest view each replica showed it is in or moving to.
    claims: BTreeMap<ReplicaId, View>,
    resend_at: Option<u64>,
    /// Armed once 2f+1 view changes for the target view are in: the new view must come by then.
    new_view_deadline: Option<u64>,
    /// Views that failed in a row since the last progress.
    failures: u32,
    /// The new view this replica sent as primary of the current view, for replicas that missed
    /// it.
    sent_new_view: Option<NewView<R>>,
}

impl<R: Request> ViewChanges<R> {
    pub fn new() -> Self {
        ViewChanges {
            received: BTreeMap::new(),
            own: None,
            claims: BTreeMap::new(),
            resend_at: None,
            new_view_deadline: None,
            failures: 0,
            sent_new_view: None,
        }
    }

    /// The view-change timeout: doubled for each view that failed in a row, capped.
    pub fn timeout(&self, config: &Config) -> u64 {
        let factor = 2u64.saturating_pow(self.failures);
        config
            .view_change_timeout_ticks
            .saturating_mul(factor)
            .min(config.max_view_change_timeout_ticks)
    }

    /// Something executed: the next view change starts from the base timeout again.
    pub fn progress(&mut self) {
        self.failures = 0;
    }

    /// Take back a view change this replica signed before a restart.
    pub fn restore_own(&mut self, from: ReplicaId, view_change: ViewChange<R>) {
        self.received
            .insert(from, Verified::unsigned(from, view_change.clone()));
        self.own = Some(view_change);
    }

    pub fn arm_resend(&mut self, at: u64) {
        self.resend_at = Some(at);
    }
}

/// The digest 2f+1 distinct replicas agree on in `proof` for `sequence`, if they do.
pub(super) fn check_checkpoint_proof(
    config: &Config,
    sequence: Sequence,
    proof: &[Verified<Checkpoint>],
) -> Option<StateDigest> {
    let digest = proof.first()?.message.state_digest;
    let mut senders = BTreeSet::new();
    for checkpoint in proof {
        let fits = config.is_member(checkpoint.from)
            && checkpoint.message.sequence == sequence
            && checkpoint.message.state_digest == digest
            && senders.insert(checkpoint.from);
        if !fits {
            return None;
        }
    }
    (senders.len() >= config.quorum()).then_some(digest)
}

/// A pre-prepare from its view's primary with a valid batch, and 2f matching prepares from
/// distinct backups of that view.
pub(super) fn check_prepared_certificate<R: Request>(
    config: &Config,
    certificate: &PreparedCertificate<R>,
) -> bool {
    let pre_prepare = &certificate.pre_prepare;
    let primary = config.primary(pre_prepare.message.view);
    if pre_prepare.from != primary
        || check_batch(
            config,
            &pre_prepare.message.batch,
            pre_prepare.message.digest,
        )
        .is_err()
    {
        return false;
    }
    let expected = Prepare {
        view: pre_prepare.message.view,
        sequence: pre_prepare.message.sequence,
        digest: pre_prepare.message.digest,
    };
    let mut senders = BTreeSet::new();
    let all_match = certificate.prepares.iter().all(|prepare| {
        config.is_member(prepare.from)
            && prepare.from != primary
            && prepare.message == expected
            && senders.insert(prepare.from)
    });
    all_match && senders.len() >= config.quorum() - 1
}

/// A view change whose checkpoint proof and prepared certificates hold up.
pub(super) fn check_view_change<R: Request>(config: &Config, view_change: &ViewChange<R>) -> bool {
    let stable = view_change.stable_checkpoint;
    if !stable.0.is_multiple_of(config.checkpoint_period) {
        return false;
    }
    let proof_holds = if stable == Sequence::GENESIS {
        view_change.checkpoint_proof.is_empty()
    } else {
        check_checkpoint_proof(config, stable, &view_change.checkpoint_proof).is_some()
    };
    if !proof_holds {
        return false;
    }
    let mut sequences = BTreeSet::new();
    view_change.prepared.iter().all(|certificate| {
        let sequence = certificate.sequence();
        certificate.view() < view_change.new_view
            && sequence > stable
            && sequence <= stable.plus(config.window)
            && sequences.insert(sequence)
            && check_prepared_certificate(config, certificate)
    })
}

/// What a set of view changes determines about the new view.
#[derive(Clone, Debug)]
pub(super) struct NewViewPlan<R> {
    /// min-s: the highest stable checkpoint in the set, with its proof.
    pub checkpoint: StableCheckpoint,
    /// O: one pre-prepare per sequence in (min-s, max-s]; the batch of the highest-view
    /// prepared certificate, or the null request.
    pub pre_prepares: Vec<PrePrepare<R>>,
}

/// The paper's new-view computation, from exactly the view changes given (already checked).
pub(super) fn plan_new_view<R: Request>(
    view: View,
    view_changes: &[Verified<ViewChange<R>>],
) -> NewViewPlan<R> {
    let best = view_changes
        .iter()
        .map(|view_change| &view_change.message)
        .filter(|view_change| view_change.stable_checkpoint > Sequence::GENESIS)
        .max_by_key(|view_change| view_change.stable_checkpoint);
    let checkpoint = match best {
        Some(view_change) => StableCheckpoint {
            sequence: view_change.stable_checkpoint,
            state_digest: view_change
                .checkpoint_proof
                .first()
                .map_or(GENESIS_STATE_DIGEST, |checkpoint| {
                    checkpoint.message.state_digest
                }),
            proof: view_change.checkpoint_proof.clone(),
        },
        None => StableCheckpoint {
            sequence: Sequence::GENESIS,
            state_digest: GENESIS_STATE_DIGEST,
            proof: Vec::new(),
        },
    };
    let low = checkpoint.sequence;
    let mut chosen: BTreeMap<Sequence, &PreparedCertificate<R>> = BTreeMap::new();
    for certificate in view_changes
        .iter()
        .flat_map(|view_change| &view_change.message.prepared)
        .filter(|certificate| certificate.sequence() > low)
    {
        let held = chosen.entry(certificate.sequence()).or_insert(certificate);
        if certificate.view() > held.view() {
            *held = certificate;
        }
    }
    let high = chosen.keys().next_back().copied().unwrap_or(low);
    let pre_prepares = (low.0 + 1..=high.0)
        .map(Sequence)
        .map(|sequence| match chosen.get(&sequence) {
            Some(certificate) => PrePrepare {
                view,
                sequence,
                digest: certificate.digest(),
                batch: certificate.pre_prepare.message.batch.clone(),
            },
            None => PrePrepare {
                view,
                sequence,
                digest: batch_digest::<R>(&[]),
                batch: Vec::new(),
            },
        })
        .collect();
    NewViewPlan {
        checkpoint,
        pre_prepares,
    }
}

impl<R: Request> Replica<R> {
    /// Leave the current view for `target`: stop the normal case, sign and send a view change
    /// carrying the stable checkpoint and every prepared certificate above it.
    pub(super) fn start_view_change(&mut self, target: View, out: &mut Outbox<R>) {
        if target <= self.view {
            return;
        }
        tracing::info!(
            replica = self.id.0,
            from_view = self.view.0,
            to_view = target.0,
            "view change"
        );
        self.view = target;
        self.active = false;
        self.request_deadline = None;
        self.request_resend_at = None;
        self.log.leave_view();
        self.view_changes.own = None;
        self.view_changes.new_view_deadline = None;
        self.view_changes.sent_new_view = None;
        let stable = &self.checkpoints.stable;
        let view_change = ViewChange {
            new_view: target,
            stable_checkpoint: stable.sequence,
            checkpoint_proof: stable.proof.clone(),
            prepared: self.log.prepared_certificates(stable.sequence),
        };
        let record = PersistRecord {
            view: target,
            sequence: view_change.stable_checkpoint,
            phase: Phase::ViewChange,
            digest: view_change_digest(&view_change),
            detail: RecordDetail::ViewChange(view_change.clone()),
        };
        if self.sign(record, out) {
            out.push(Action::Broadcast(Message::ViewChange(view_change.clone())));
            self.view_changes.restore_own(self.id, view_change);
        }
        self.view_changes.resend_at = Some(
            self.now
                .saturating_add(self.config.view_change_resend_ticks),
        );
        self.future.retain(|_, queue| {
            queue.retain(|message| {
                super::normal_case_view(&message.message).is_some_and(|view| view >= target)
            });
            !queue.is_empty()
        });
        self.check_view_change_quorum(out);
    }

    pub(super) fn on_view_change(
        &mut self,
        view_change: Verified<ViewChange<R>>,
        out: &mut Outbox<R>,
    ) {
        let (from, target) = (view_change.from, view_change.message.new_view);
        if target < self.view || (target == self.view && self.active) {
            // The sender is behind. The primary that led the current view re-sends its new view
            // so the sender can verify it and join.
            if let Some(new_view) = self
                .view_changes
                .sent_new_view
                .as_ref()
                .filter(|_| self.active)
            {
                out.push(Action::Send {
                    to: from,
                    message: Message::NewView(new_view.clone()),
                });
            } else {
                self.reject(RejectReason::StaleView);
            }
            return;
        }
        if !check_view_change(&self.config, &view_change.message) {
            return self.reject(RejectReason::InvalidViewChange);
        }
        if let Some(held) = self.view_changes.received.get(&from) {
            if held.message.new_view > target {
                return self.reject(RejectReason::StaleView);
            }
            if held.message.new_view == target {
                let reason = if held.message == view_change.message {
                    RejectReason::Duplicate
                } else {
                    RejectReason::ConflictingDigest
                };
                return self.reject(reason);
            }
        }
        self.view_changes.received.insert(from, view_change);
        self.note_claim(from, target, out);
        self.check_view_change_quorum(out);
    }

    /// Remember that `from` is in, or moving to, `view`; join when f+1 replicas are beyond
    /// this one.
    pub(super) fn note_claim(&mut self, from: ReplicaId, view: View, out: &mut Outbox<R>) {
        let claim = self.view_changes.claims.entry(from).or_default();
        if view > *claim {
            *claim = view;
        }
        self.maybe_join(out);
    }

    /// When f+1 other replicas are in or moving to views above this one, at least one correct
    /// replica is: move to the highest view f+1 of them reached.
    pub(super) fn maybe_join(&mut self, out: &mut Outbox<R>) {
        let mut higher: Vec<View> = self
            .view_changes
            .claims
            .iter()
            .filter(|(replica, view)| **replica != self.id && **view > self.view)
            .map(|(_, view)| *view)
            .collect();
        let needed = self.config.weak_quorum();
        if higher.len() < needed {
            return;
        }
        higher.sort_unstable_by(|a, b| b.cmp(a));
        let target = higher[needed - 1];
        tracing::info!(
            replica = self.id.0,
            view = target.0,
            "joining a higher view"
        );
        self.start_view_change(target, out);
    }

    /// Once 2f+1 replicas have left the view before the target (their latest view changes ask
    /// for the target view or a higher one), arm the new-view timer; with 2f+1 view changes for
    /// the target view itself, the new primary builds the new view. A view change for a higher
    /// view counts for the timer: a replica that moved on no longer re-sends its view change
    /// for the target, so counting only those could leave the others waiting without a timer
    /// forever (fewer than f+1 ahead, fewer than 2f+1 behind).
    fn check_view_change_quorum(&mut self, out: &mut Outbox<R>) {
        if self.active {
            return;
        }
        let count = self
            .view_changes
            .received
            .values()
            .filter(|view_change| view_change.message.new_view >= self.view)
            .count();
        if count < self.config.quorum() {
            return;
        }
        if self.view_changes.new_view_deadline.is_none() {
            let timeout = self.view_changes.timeout(&self.config);
            self.view_changes.new_view_deadline = Some(self.now.saturating_add(timeout));
        }
        if self.is_primary() && self.view_changes.sent_new_view.is_none() {
            self.build_new_view(out);
        }
    }

    /// The new primary picks exactly 2f+1 view changes (its own first, then by sender), computes
    /// the pre-prepares from them, signs everything it sends and enters the view.
    fn build_new_view(&mut self, out: &mut Outbox<R>) {
        let view = self.view;
        let quorum = self.config.quorum();
        let for_view =
            |view_change: &&Verified<ViewChange<R>>| view_change.message.new_view == view;
        let own = self.view_changes.received.get(&self.id).filter(for_view);
        let others = self
            .view_changes
            .received
            .values()
            .filter(|view_change| view_change.from != self.id)
            .filter(for_view);
        let chosen: Vec<Verified<ViewChange<R>>> = own
            .into_iter()
            .chain(others)
            .take(quorum)
            .cloned()
            .collect();
        if chosen.len() < quorum {
            return;
        }
        let plan = plan_new_view(view, &chosen);
        let pre_prepares: Vec<Verified<PrePrepare<R>>> = plan
            .pre_prepares
            .iter()
            .map(|pre_prepare| Verified::unsigned(self.id, pre_prepare.clone()))
            .collect();
        let new_view = NewView {
            view,
            view_changes: chosen,
            pre_prepares: pre_prepares.clone(),
        };
        let mut records = vec![PersistRecord {
            view,
            sequence: plan.checkpoint.sequence,
            phase: Phase::NewView,
            digest: new_view_digest(&new_view),
            detail: RecordDetail::None,
        }];
        records.extend(plan.pre_prepares.iter().map(|pre_prepare| PersistRecord {
            view,
            sequence: pre_prepare.sequence,
            phase: Phase::PrePrepare,
            digest: pre_prepare.digest,
            detail: RecordDetail::None,
        }));
        if !self.sign_all(records, out) {
            return;
        }
        tracing::info!(
            replica = self.id.0,
            view = view.0,
            pre_prepares = new_view.pre_prepares.len(),
            "new view"
        );
        out.push(Action::Broadcast(Message::NewView(new_view.clone())));
        self.view_changes.sent_new_view = Some(new_view);
        self.enter_view(view, plan.checkpoint, pre_prepares, out);
    }

    /// A backup checks a new view: from the right primary, exactly 2f+1 valid view changes for
    /// that view from distinct replicas, and the very pre-prepares it computes from them.
    pub(super) fn on_new_view(&mut self, new_view: Verified<NewView<R>>, out: &mut Outbox<R>) {
        let view = new_view.message.view;
        if view < self.view || (view == self.view && self.active) {
            return self.reject(RejectReason::StaleView);
        }
        if new_view.from != self.config.primary(view) {
            return self.reject(RejectReason::NotFromPrimary);
        }
        let view_changes = &new_view.message.view_changes;
        let mut senders = BTreeSet::new();
        let well_formed = view_changes.len() == self.config.quorum()
            && view_changes.iter().all(|view_change| {
                self.config.is_member(view_change.from)
                    && senders.insert(view_change.from)
                    && view_change.message.new_view == view
                    && check_view_change(&self.config, &view_change.message)
            });
        if !well_formed {
            return self.reject(RejectReason::InvalidNewView);
        }
        let plan = plan_new_view(view, view_changes);
        let received = &new_view.message.pre_prepares;
        let as_planned = plan.pre_prepares.len() == received.len()
            && plan
                .pre_prepares
                .iter()
                .zip(received)
                .all(|(planned, got)| got.from == new_view.from && got.message == *planned);
        if !as_planned {
            tracing::warn!(
                replica = self.id.0,
                view = view.0,
                primary = new_view.from.0,
                "new view differs from the one its view changes determine"
            );
            return self.reject(RejectReason::NewViewMismatch);
        }
        let Verified { message, .. } = new_view;
        self.enter_view(view, plan.checkpoint, message.pre_prepares, out);
    }

    /// Enter `view` with the checkpoint and pre-prepares of its new view (the new primary's,
    /// with their signed forms when they came over the network, so that they can be forwarded
    /// in prepared certificates).
    fn enter_view(
        &mut self,
        view: View,
        checkpoint: StableCheckpoint,
        pre_prepares: Vec<Verified<PrePrepare<R>>>,
        out: &mut Outbox<R>,
    ) {
        self.view = view;
        self.active = true;
        self.log.leave_view();
        self.view_changes.own = None;
        self.view_changes.resend_at = None;
        self.view_changes.new_view_deadline = None;
        self.view_changes
            .received
            .retain(|_, view_change| view_change.message.new_view > view);
        if self
            .view_changes
            .sent_new_view
            .as_ref()
            .map(|sent| sent.view)
            != Some(view)
        {
            self.view_changes.sent_new_view = None;
        }
        let highest = pre_prepares
            .last()
            .map_or(checkpoint.sequence, |pre_prepare| {
                pre_prepare.message.sequence
            });
        if checkpoint.sequence > self.low_watermark() {
            self.make_stable(checkpoint, out);
        }
        let primary = self.config.primary(view);
        out.push(Action::ViewChanged { view, primary });
        self.next_sequence = highest
            .max(self.low_watermark())
            .max(self.last_executed)
            .next();
        let kept: BTreeSet<RequestId> = pre_prepares
            .iter()
            .flat_map(|pre_prepare| pre_prepare.message.batch.iter().map(Request::id))
            .collect();
        for pre_prepare in pre_prepares {
            let sequence = pre_prepare.message.sequence;
            if sequence <= self.low_watermark() {
                continue;
            }
            if primary == self.id {
                self.requests
                    .mark_in_flight(sequence, &pre_prepare.message.batch);
                self.log.slot(sequence).pre_prepare = Some(pre_prepare);
            } else {
                self.accept_pre_prepare(pre_prepare, out);
            }
        }
        let low = self.low_watermark();
        self.requests.requeue_in_flight(
            |sequence, id| sequence <= low || kept.contains(id),
            self.now,
        );
        self.refresh_request_timer(true);
        self.replay_future(out);
        if primary == self.id {
            self.try_propose(out);
        } else {
            let forwards: Vec<R> = self.requests.pending().cloned().collect();
            for request in forwards {
                out.push(Action::Send {
                    to: primary,
                    message: Message::Request(request),
                });
            }
        }
        self.try_execute(out);
    }

    /// While waiting for a new view: re-send the view change on its timer, and move to the next
    /// view when the new view is late.
    pub(super) fn view_change_tick(&mut self, out: &mut Outbox<R>) {
        if self.view_changes.resend_at.is_some_and(|at| self.now >= at) {
            if let Some(own) = &self.view_changes.own {
                out.push(Action::Broadcast(Message::ViewChange(own.clone())));
            }
            self.view_changes.resend_at = Some(
                self.now
                    .saturating_add(self.config.view_change_resend_ticks),
            );
        }
        if self
            .view_changes
            .new_view_deadline
            .is_some_and(|deadline| self.now >= deadline)
        {
            self.view_changes.failures = self.view_changes.failures.saturating_add(1);
            tracing::info!(
                replica = self.id.0,
                view = self.view.0,
                failures = self.view_changes.failures,
                "new view did not come in time"
            );
            self.start_view_change(self.view.next(), out);
        }
    }
}
