//! Checkpoints, stability, garbage collection and state transfer. Invariants: a checkpoint is
//! stable only with 2f+1 matching messages from distinct replicas and (when this replica
//! executed that far) a matching own digest; state transfer is asked for only towards a
//! digest at least f+1 replicas vouch for, and never moves `last_executed` backwards. Received
//! checkpoints are kept only above the low watermark, and above the high watermark only the
//! latest per sender, so at most replicas × (window / period + 1) are held.

use std::collections::{BTreeMap, BTreeSet};

use super::event::{Action, PersistRecord, Phase, RecordDetail, RejectReason, StableCheckpoint};
use super::message::{
    Checkpoint, GENESIS_STATE_DIGEST, Message, ReplicaId, Request, Sequence, StateDigest, Verified,
};
use super::{Outbox, Replica};
use crate::types::Hash;

#[derive(Clone, Debug)]
pub(super) struct Checkpoints {
    /// The last stable checkpoint: the low watermark.
    pub stable: StableCheckpoint,
    received: BTreeMap<Sequence, BTreeMap<ReplicaId, Verified<Checkpoint>>>,
    /// This replica's own digests, by checkpoint sequence.
    own: BTreeMap<Sequence, StateDigest>,
    /// The sequence of the state transfer asked for and not finished, and when it was asked.
    /// Execution holds while it is set, so the driver never executes below a state it installs.
    pub transfer_target: Option<(Sequence, u64)>,
    /// Since when this replica knows of a certified checkpoint above what it executed.
    pub behind_since: Option<u64>,
}

impl Checkpoints {
    /// The highest checkpoint this replica signed that is not below the stable one (the
    /// stable one itself when none is above it).
    pub fn latest_own(&self) -> (Sequence, StateDigest) {
        match self.own.last_key_value() {
            Some((sequence, digest)) if *sequence > self.stable.sequence => (*sequence, *digest),
            _ => (self.stable.sequence, self.stable.state_digest),
        }
    }

    pub fn new() -> Checkpoints {
        Checkpoints {
            stable: StableCheckpoint {
                sequence: Sequence::GENESIS,
                state_digest: GENESIS_STATE_DIGEST,
                proof: Vec::new(),
            },
            received: BTreeMap::new(),
            own: BTreeMap::new(),
            transfer_target: None,
            behind_since: None,
        }
    }

    /// Keep a checkpoint message; above the window only the sender's latest is kept.
    pub fn insert(
        &mut self,
        checkpoint: Verified<Checkpoint>,
        high_watermark: Sequence,
    ) -> Result<(), RejectReason> {
        let (sequence, from) = (checkpoint.message.sequence, checkpoint.from);
        if let Some(held) = self.received.get(&sequence).and_then(|by| by.get(&from)) {
            return Err(if held.message == checkpoint.message {
                RejectReason::Duplicate
            } else {
                RejectReason::ConflictingDigest
            });
        }
        if sequence > high_watermark {
            let held_above: Vec<Sequence> = self
                .received
                .range(high_watermark.next()..)
                .filter(|(_, by)| by.contains_key(&from))
                .map(|(at, _)| *at)
                .collect();
            if held_above.iter().any(|at| *at > sequence) {
                return Err(RejectReason::StaleCheckpoint);
            }
            for at in held_above {
                if let Some(by) = self.received.get_mut(&at) {
                    by.remove(&from);
                    if by.is_empty() {
                        self.received.remove(&at);
                    }
                }
            }
        }
        self.received
            .entry(sequence)
            .or_default()
            .insert(from, checkpoint);
        Ok(())
    }

    /// The senders of each digest reported for `sequence`.
    pub fn matching(&self, sequence: Sequence) -> BTreeMap<StateDigest, Vec<ReplicaId>> {
        let mut by_digest: BTreeMap<StateDigest, Vec<ReplicaId>> = BTreeMap::new();
        for (from, checkpoint) in self.received.get(&sequence).into_iter().flatten() {
            by_digest
                .entry(checkpoint.message.state_digest)
                .or_default()
                .push(*from);
        }
        by_digest
    }

    /// The checkpoint messages for (sequence, digest), in sender order.
    pub fn proof(&self, sequence: Sequence, digest: StateDigest) -> Vec<Verified<Checkpoint>> {
        self.received
            .get(&sequence)
            .into_iter()
            .flat_map(|by| by.values())
            .filter(|checkpoint| checkpoint.message.state_digest == digest)
            .cloned()
            .collect()
    }

    /// The highest checkpoint above `above` that at least `needed` replicas agree on.
    pub fn highest_vouched_above(
        &self,
        above: Sequence,
        needed: usize,
    ) -> Option<(Sequence, StateDigest, Vec<ReplicaId>)> {
        self.received
            .range(above.next()..)
            .rev()
            .find_map(|(sequence, _)| {
                self.matching(*sequence)
                    .into_iter()
                    .find(|(_, senders)| senders.len() >= needed)
                    .map(|(digest, senders)| (*sequence, digest, senders))
            })
    }

    /// Whether at least `needed` replicas vouch for `digest` at `sequence`.
    pub fn vouched(&self, sequence: Sequence, digest: StateDigest, needed: usize) -> bool {
        self.matching(sequence)
            .get(&digest)
            .is_some_and(|senders| senders.len() >= needed)
    }

    pub fn own(&self, sequence: Sequence) -> Option<StateDigest> {
        self.own.get(&sequence).copied()
    }

    pub fn set_own(&mut self, sequence: Sequence, digest: StateDigest) {
        self.own.insert(sequence, digest);
    }

    /// Forget everything at or below the new stable checkpoint.
    pub fn collect_garbage(&mut self, stable: Sequence) {
        self.received = self.received.split_off(&stable.next());
        self.own = self.own.split_off(&stable);
    }

    #[cfg(test)]
    pub fn received_len(&self) -> usize {
        self.received.values().map(BTreeMap::len).sum()
    }
}

/// The replicas whose checkpoint messages make up `proof`.
fn signers(proof: &[Verified<Checkpoint>]) -> Vec<ReplicaId> {
    proof
        .iter()
        .map(|checkpoint| checkpoint.from)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

impl<R: Request> Replica<R> {
    /// The driver executed up to `sequence`; at a checkpoint sequence, sign and send the
    /// checkpoint.
    pub(super) fn on_executed(
        &mut self,
        sequence: Sequence,
        state_digest: StateDigest,
        out: &mut Outbox<R>,
    ) {
        if sequence == Sequence::GENESIS || sequence > self.last_executed {
            return self.reject(RejectReason::UnknownExecution);
        }
        self.last_reported = self.last_reported.max(sequence);
        if sequence.0.is_multiple_of(self.config.checkpoint_period)
            && sequence > self.low_watermark()
        {
            self.take_checkpoint(sequence, state_digest, out);
        }
    }

    fn take_checkpoint(
        &mut self,
        sequence: Sequence,
        state_digest: StateDigest,
        out: &mut Outbox<R>,
    ) {
        if self.checkpoints.own(sequence).is_some() {
            return;
        }
        if !self.sign(self.checkpoint_record(sequence, state_digest), out) {
            return;
        }
        self.checkpoints.set_own(sequence, state_digest);
        let checkpoint = Checkpoint {
            sequence,
            state_digest,
        };
        out.push(Action::Broadcast(Message::Checkpoint(checkpoint.clone())));
        self.checkpoint_announced_at = self.now;
        let own = Verified::unsigned(self.id, checkpoint);
        // Cannot be a duplicate: the own digest was unknown a moment ago.
        let _ = self.checkpoints.insert(own, self.high_watermark());
        self.check_stable(sequence, out);
    }

    /// What this replica records before it signs its checkpoint at `sequence`.
    fn checkpoint_record(&self, sequence: Sequence, state_digest: StateDigest) -> PersistRecord<R> {
        PersistRecord {
            view: self.view,
            sequence,
            phase: Phase::Checkpoint,
            digest: Hash(state_digest),
            detail: RecordDetail::None,
        }
    }

    /// This replica's latest checkpoint message, to send again (`None` at genesis). Signed
    /// again means persisted again if the record was collected since.
    fn own_latest_checkpoint(&mut self, out: &mut Outbox<R>) -> Option<Message<R>> {
        let (sequence, state_digest) = self.checkpoints.latest_own();
        if sequence == Sequence::GENESIS {
            return None;
        }
        let record = self.checkpoint_record(sequence, state_digest);
        self.sign(record, out)
            .then_some(Message::Checkpoint(Checkpoint {
                sequence,
                state_digest,
            }))
    }

    /// When no checkpoint was taken for `retransmit_ticks`, re-send what this replica signed
    /// that may have been lost: its latest checkpoint (a lost checkpoint message would leave
    /// that checkpoint short of a quorum, and replicas that were down or cut off learn from
    /// f+1 of these how far the others are) and its messages for the undecided sequences.
    pub(super) fn retransmit_when_quiet(&mut self, out: &mut Outbox<R>) {
        if self.now
            < self
                .checkpoint_announced_at
                .saturating_add(self.config.retransmit_ticks)
        {
            return;
        }
        self.checkpoint_announced_at = self.now;
        self.retransmissions += 1;
        if let Some(checkpoint) = self.own_latest_checkpoint(out) {
            out.push(Action::Broadcast(checkpoint));
        }
        self.retransmit_slots(out);
    }

    /// A replica announced a checkpoint below this one's stable checkpoint: it is at least a
    /// checkpoint period behind (it restarted, or just finished a state transfer), and the
    /// messages the others sent meanwhile for the sequences above it were dropped as out of
    /// its window. Under steady load it would move only from one state transfer to the next
    /// and never rejoin. Send it this replica's stable checkpoint and its own messages for the
    /// sequences in the log (all signed and recorded before), once per checkpoint it announces.
    fn help_lagging(&mut self, peer: ReplicaId, announced: Sequence, out: &mut Outbox<R>) {
        if peer == self.id
            || self
                .helped
                .get(&peer)
                .is_some_and(|helped| *helped >= announced)
        {
            return;
        }
        self.helped.insert(peer, announced);
        tracing::debug!(
            replica = self.id.0,
            peer = peer.0,
            announced = announced.0,
            stable = self.low_watermark().0,
            "re-sending to a lagging replica"
        );
        if let Some(message) = self.own_latest_checkpoint(out) {
            out.push(Action::Send { to: peer, message });
        }
        self.retransmit_slots_to(peer, out);
    }

    pub(super) fn on_checkpoint(&mut self, checkpoint: Verified<Checkpoint>, out: &mut Outbox<R>) {
        let sequence = checkpoint.message.sequence;
        if sequence == Sequence::GENESIS
            || !sequence.0.is_multiple_of(self.config.checkpoint_period)
        {
            return self.reject(RejectReason::InvalidCheckpoint);
        }
        if sequence < self.low_watermark() {
            self.help_lagging(checkpoint.from, sequence, out);
        }
        if sequence <= self.low_watermark() {
            return self.reject(RejectReason::StaleCheckpoint);
        }
        if let Err(reason) = self.checkpoints.insert(checkpoint, self.high_watermark()) {
            return self.reject(reason);
        }
        self.check_stable(sequence, out);
        self.check_state_transfer(out);
    }

    /// A checkpoint with 2f+1 matching messages becomes stable here once this replica executed
    /// that far and its own digest agrees.
    fn check_stable(&mut self, sequence: Sequence, out: &mut Outbox<R>) {
        if sequence <= self.low_watermark() || sequence > self.last_executed {
            return;
        }
        let quorum = self.config.quorum();
        let Some((digest, _)) = self
            .checkpoints
            .matching(sequence)
            .into_iter()
            .find(|(_, senders)| senders.len() >= quorum)
        else {
            return;
        };
        match self.checkpoints.own(sequence) {
            Some(own) if own != digest => {
                tracing::error!(
                    replica = self.id.0,
                    sequence = sequence.0,
                    own = %Hash(own),
                    certified = %Hash(digest),
                    "this replica's state differs from the state 2f+1 replicas certified; \
                     it stops advancing until it is repaired"
                );
                out.push(Action::Diverged {
                    sequence,
                    own,
                    certified: digest,
                });
                return self.reject(RejectReason::StateDigestMismatch);
            }
            // Executed but not reported yet: wait for the own digest to compare.
            None if sequence > self.last_reported => return,
            _ => {}
        }
        let proof = self.checkpoints.proof(sequence, digest);
        self.make_stable(
            StableCheckpoint {
                sequence,
                state_digest: digest,
                proof,
            },
            out,
        );
    }

    /// Move the low watermark to `stable` and collect garbage below it.
    pub(super) fn make_stable(&mut self, stable: StableCheckpoint, out: &mut Outbox<R>) {
        let sequence = stable.sequence;
        if sequence <= self.low_watermark() {
            return;
        }
        tracing::debug!(
            replica = self.id.0,
            sequence = sequence.0,
            "checkpoint stable"
        );
        out.push(Action::CheckpointStable {
            sequence,
            state_digest: stable.state_digest,
            proof: stable.proof.clone(),
        });
        self.checkpoints.stable = stable;
        self.log.collect_garbage(sequence);
        self.checkpoints.collect_garbage(sequence);
        self.requests
            .collect_garbage(sequence.minus(self.config.window));
        self.signed.collect_garbage(sequence, self.view);
        if self.next_sequence <= sequence {
            self.next_sequence = sequence.next();
        }
        // The window moved: messages kept above it may fit now.
        self.replay_future(out);
        self.try_propose(out);
        self.check_state_transfer(out);
    }

    /// Ask for a state transfer when a checkpoint f+1 replicas vouch for is above what this
    /// replica executed and ordinary messages cannot bring it there: at once when it is above
    /// the window or already stable here, otherwise after a grace period; again for a higher
    /// checkpoint, or when the transfer is overdue.
    pub(super) fn check_state_transfer(&mut self, out: &mut Outbox<R>) {
        let stable = &self.checkpoints.stable;
        let from_stable = (stable.sequence > self.last_executed)
            .then(|| (stable.sequence, stable.state_digest, signers(&stable.proof)));
        let vouched = self
            .checkpoints
            .highest_vouched_above(self.last_executed, self.config.weak_quorum());
        let target = match (from_stable, vouched) {
            (Some(stable), Some(vouched)) if vouched.0 > stable.0 => Some(vouched),
            (Some(stable), _) => Some(stable),
            (None, vouched) => vouched,
        };
        let Some((sequence, state_digest, peers)) = target else {
            self.checkpoints.behind_since = None;
            return;
        };
        let since = *self.checkpoints.behind_since.get_or_insert(self.now);
        match self.checkpoints.transfer_target {
            // Asked already: ask again only when the transfer is overdue.
            Some((asked, at)) if asked >= sequence => {
                if self.now < at.saturating_add(self.config.state_transfer_retry_ticks) {
                    return;
                }
            }
            Some(_) => {}
            None => {
                let urgent = sequence <= self.low_watermark() || sequence > self.high_watermark();
                let waited =
                    self.now >= since.saturating_add(self.config.state_transfer_grace_ticks);
                if !urgent && !waited {
                    return;
                }
            }
        }
        tracing::info!(
            replica = self.id.0,
            sequence = sequence.0,
            last_executed = self.last_executed.0,
            "asking for a state transfer"
        );
        self.checkpoints.transfer_target = Some((sequence, self.now));
        out.push(Action::RequestStateTransfer {
            sequence,
            state_digest,
            peers,
        });
    }

    /// The driver installed the state at `sequence`. Accepted only forward and only for a digest
    /// a stable checkpoint or f+1 replicas vouch for.
    pub(super) fn on_state_transferred(
        &mut self,
        sequence: Sequence,
        state_digest: StateDigest,
        out: &mut Outbox<R>,
    ) {
        if sequence <= self.last_executed {
            return self.reject(RejectReason::StaleStateTransfer);
        }
        let stable = &self.checkpoints.stable;
        let vouched = (stable.sequence == sequence && stable.state_digest == state_digest)
            || self
                .checkpoints
                .vouched(sequence, state_digest, self.config.weak_quorum());
        if !vouched {
            return self.reject(RejectReason::UnverifiedStateTransfer);
        }
        tracing::info!(
            replica = self.id.0,
            sequence = sequence.0,
            "state transferred"
        );
        self.last_executed = sequence;
        self.last_reported = sequence;
        let held = self.requests.transferred_to(sequence);
        if !held.is_empty() {
            out.push(Action::Resubmit { requests: held });
        }
        if self
            .checkpoints
            .transfer_target
            .is_some_and(|(asked, _)| asked <= sequence)
        {
            self.checkpoints.transfer_target = None;
        }
        self.checkpoints.behind_since = None;
        if self.next_sequence <= sequence {
            self.next_sequence = sequence.next();
        }
        if sequence > self.low_watermark() {
            self.take_checkpoint(sequence, state_digest, out);
        } else {
            self.checkpoints.set_own(sequence, state_digest);
        }
        self.try_execute(out);
        self.view_changes.progress();
        self.refresh_request_timer(true);
        self.check_state_transfer(out);
        self.maybe_join(out);
    }
}
