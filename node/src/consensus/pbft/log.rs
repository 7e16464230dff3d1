//! The message log: one slot per sequence inside the window, holding the current view's
//! pre-prepare, prepares and commits, the highest prepared certificate and the committed
//! batch. Invariant: only sequences above the low watermark are kept, one message per sender
//! per kind per slot, so the log is bounded by window × replicas.

use std::collections::BTreeMap;

use super::message::{
    Commit, PrePrepare, Prepare, PreparedCertificate, ReplicaId, Sequence, Verified,
};
use crate::types::Hash;

/// A batch whose order is decided (committed-local at this replica).
#[derive(Clone, Debug)]
pub(super) struct Decided<R> {
    pub digest: Hash,
    /// Taken when the batch is handed out for execution.
    pub batch: Option<Vec<R>>,
}

/// Everything this replica knows about one sequence.
#[derive(Clone, Debug)]
pub(super) struct Slot<R> {
    /// The pre-prepare accepted in the replica's current view.
    pub pre_prepare: Option<Verified<PrePrepare<R>>>,
    /// Prepares of the current view, by sender.
    pub prepares: BTreeMap<ReplicaId, Verified<Prepare>>,
    /// Commits of the current view, by sender.
    pub commits: BTreeMap<ReplicaId, Verified<Commit>>,
    /// The certificate of the highest view in which this replica prepared the sequence; it
    /// survives view changes and goes into this replica's view changes.
    pub prepared: Option<PreparedCertificate<R>>,
    /// This replica sent its commit in the current view.
    pub commit_sent: bool,
    pub decided: Option<Decided<R>>,
}

impl<R> Default for Slot<R> {
    fn default() -> Self {
        Slot {
            pre_prepare: None,
            prepares: BTreeMap::new(),
            commits: BTreeMap::new(),
            prepared: None,
            commit_sent: false,
            decided: None,
        }
    }
}

impl<R: Clone> Slot<R> {
    /// A prepared certificate for the current view's pre-prepare, once 2f distinct backups
    /// (`needed`) sent matching prepares. Picks the lowest sender ids so that the certificate
    /// is the same whatever order prepares arrived in.
    pub fn prepared_certificate(&self, needed: usize) -> Option<PreparedCertificate<R>> {
        let pre_prepare = self.pre_prepare.as_ref()?;
        let prepares: Vec<Verified<Prepare>> = self
            .prepares
            .values()
            .filter(|prepare| {
                prepare.message.digest == pre_prepare.message.digest
                    && prepare.message.view == pre_prepare.message.view
                    && prepare.from != pre_prepare.from
            })
            .take(needed)
            .cloned()
            .collect();
        (prepares.len() == needed).then(|| PreparedCertificate {
            pre_prepare: pre_prepare.clone(),
            prepares,
        })
    }

    /// Commits of the current view that match the current pre-prepare.
    pub fn matching_commits(&self) -> usize {
        let Some(pre_prepare) = &self.pre_prepare else {
            return 0;
        };
        self.commits
            .values()
            .filter(|commit| {
                commit.message.digest == pre_prepare.message.digest
                    && commit.message.view == pre_prepare.message.view
            })
            .count()
    }

    /// Forget what belongs to the view being left; keep what outlives views.
    fn leave_view(&mut self) {
        self.pre_prepare = None;
        self.prepares.clear();
        self.commits.clear();
        self.commit_sent = false;
    }
}

/// The slots inside the window, by sequence.
#[derive(Clone, Debug)]
pub(super) struct Log<R> {
    slots: BTreeMap<Sequence, Slot<R>>,
}

impl<R: Clone> Log<R> {
    pub fn new() -> Self {
        Log {
            slots: BTreeMap::new(),
        }
    }

    pub fn get(&self, sequence: Sequence) -> Option<&Slot<R>> {
        self.slots.get(&sequence)
    }

    pub fn get_mut(&mut self, sequence: Sequence) -> Option<&mut Slot<R>> {
        self.slots.get_mut(&sequence)
    }

    /// Every slot, in sequence order.
    pub fn slots(&self) -> impl Iterator<Item = (&Sequence, &Slot<R>)> {
        self.slots.iter()
    }

    /// The slot for `sequence`, created empty if needed. Callers check the window first.
    pub fn slot(&mut self, sequence: Sequence) -> &mut Slot<R> {
        self.slots.entry(sequence).or_default()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn leave_view(&mut self) {
        for slot in self.slots.values_mut() {
            slot.leave_view();
        }
    }

    /// Drop every slot at or below `low_watermark`.
    pub fn collect_garbage(&mut self, low_watermark: Sequence) {
        self.slots = self.slots.split_off(&low_watermark.next());
    }

    /// The prepared certificates above `above`, in sequence order, for a view change.
    pub fn prepared_certificates(&self, above: Sequence) -> Vec<PreparedCertificate<R>> {
        self.slots
            .range(above.next()..)
            .filter_map(|(_, slot)| slot.prepared.clone())
            .collect()
    }

    /// Keep `certificate` if it is from a higher view than the one held (used on restore).
    pub fn remember_prepared(&mut self, certificate: PreparedCertificate<R>) {
        let slot = self.slot(certificate.sequence());
        let higher = slot
            .prepared
            .as_ref()
            .is_none_or(|held| held.view() < certificate.view());
        if higher {
            slot.prepared = Some(certificate);
        }
    }
}
