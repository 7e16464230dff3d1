//! The record of what this replica signed, restored from disk at start-up and extended before
//! every signature. Invariant (I6): for one (view, sequence, phase) key this replica signs at
//! most one digest, across restarts; keys at or below the low watermark and view-level keys of
//! earlier views are dropped, so the record stays within the window.

use std::collections::BTreeMap;

use super::event::{Action, PersistRecord, PersistedState, Phase, RecordDetail};
use super::message::{Message, Request, Sequence, View};
use super::view_change::check_checkpoint_proof;
use super::{Outbox, Replica};
use crate::types::Hash;

/// Whether a record may be signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Signing {
    /// Never signed: persist, then sign.
    Fresh,
    /// Already signed with the same digest: signing again says nothing new.
    Same,
    /// Already signed with another digest: refuse.
    Conflict,
}

type Key = (View, Sequence, Phase);

#[derive(Clone, Debug, Default)]
pub(super) struct SignedRecords {
    by_key: BTreeMap<Key, Hash>,
}

fn key<R>(record: &PersistRecord<R>) -> Key {
    match record.phase {
        Phase::PrePrepare | Phase::Prepare | Phase::Commit => {
            (record.view, record.sequence, record.phase)
        }
        Phase::Checkpoint => (View(0), record.sequence, record.phase),
        Phase::ViewChange | Phase::NewView => (record.view, Sequence::GENESIS, record.phase),
    }
}

impl SignedRecords {
    pub fn check<R>(&self, record: &PersistRecord<R>) -> Signing {
        match self.by_key.get(&key(record)) {
            None => Signing::Fresh,
            Some(digest) if *digest == record.digest => Signing::Same,
            Some(_) => Signing::Conflict,
        }
    }

    pub fn insert<R>(&mut self, record: &PersistRecord<R>) {
        self.by_key.insert(key(record), record.digest);
    }

    /// The highest sequence this replica signed a pre-prepare for in `view`.
    pub fn highest_pre_prepare(&self, view: View) -> Option<Sequence> {
        self.by_key
            .keys()
            .filter(|(at, _, phase)| *at == view && *phase == Phase::PrePrepare)
            .map(|(_, sequence, _)| *sequence)
            .max()
    }

    pub fn collect_garbage(&mut self, low_watermark: Sequence, view: View) {
        self.by_key.retain(|(at, sequence, phase), _| match phase {
            Phase::ViewChange | Phase::NewView => *at >= view,
            _ => *sequence > low_watermark,
        });
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

impl<R: Request> Replica<R> {
    /// Start from what the driver persisted: the signed records become constraints (I6), the
    /// prepared certificates behind commits come back into the log, and the replica resumes in
    /// the highest view it signed anything in (still waiting for that view's NEW-VIEW, and
    /// re-sending the same VIEW-CHANGE, if the view change was the last thing it signed there).
    pub(super) fn restore(&mut self, state: PersistedState<R>, out: &mut Outbox<R>) {
        if let Some(stable) = state.stable_checkpoint {
            let proven = stable.sequence > Sequence::GENESIS
                && stable.sequence.0 % self.config.checkpoint_period == 0
                && check_checkpoint_proof(&self.config, stable.sequence, &stable.proof)
                    == Some(stable.state_digest);
            if proven {
                self.checkpoints.stable = stable;
            } else if stable.sequence > Sequence::GENESIS {
                tracing::warn!(
                    replica = self.id.0,
                    sequence = stable.sequence.0,
                    "ignoring a persisted stable checkpoint without a valid proof"
                );
            }
        }
        self.last_executed = state.last_executed;
        self.last_reported = state.last_executed;
        let low = self.low_watermark();
        let high = self.high_watermark();
        let view = state
            .records
            .iter()
            .filter(|record| record.phase != Phase::Checkpoint)
            .map(|record| record.view)
            .max()
            .unwrap_or_default();
        let mut own_view_change = None;
        let mut entered = view == View(0);
        for record in &state.records {
            self.signed.insert(record);
            match &record.detail {
                RecordDetail::Prepared(certificate)
                    if certificate.sequence() > low && certificate.sequence() <= high =>
                {
                    self.log.remember_prepared(certificate.clone());
                }
                RecordDetail::ViewChange(view_change) if record.view == view => {
                    own_view_change = Some(view_change.clone());
                }
                _ => {}
            }
            let in_view = matches!(
                record.phase,
                Phase::PrePrepare | Phase::Prepare | Phase::Commit | Phase::NewView
            );
            if record.view == view && in_view {
                entered = true;
            }
        }
        self.signed.collect_garbage(low, view);
        self.view = view;
        self.next_sequence = self
            .signed
            .highest_pre_prepare(view)
            .unwrap_or_default()
            .max(self.last_executed)
            .max(low)
            .next();
        tracing::info!(
            replica = self.id.0,
            view = view.0,
            last_executed = self.last_executed.0,
            low_watermark = low.0,
            "restored"
        );
        match own_view_change {
            Some(view_change) if !entered => {
                self.active = false;
                out.push(Action::Broadcast(Message::ViewChange(view_change.clone())));
                self.view_changes.restore_own(self.id, view_change);
                self.view_changes.arm_resend(
                    self.now
                        .saturating_add(self.config.view_change_resend_ticks),
                );
            }
            _ => {
                self.active = true;
                out.push(Action::ViewChanged {
                    view,
                    primary: self.config.primary(view),
                });
            }
        }
        self.check_state_transfer(out);
    }
}
