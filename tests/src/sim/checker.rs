//! The invariants a run must keep, checked as it goes: agreement (no two honest replicas
//! execute or commit different batches at one sequence), identical executed prefixes, in-order
//! once-only execution, non-equivocation (no honest replica signs two digests for one (view,
//! sequence, phase), across its restarts), persist-before-sign, and liveness once healed.
//! Invariant: the checker judges only the replicas it was told are honest, never panics, and
//! keeps every violation it is shown (up to a cap) for the report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use weft_node::consensus::pbft::{
    Message, PersistRecord, Phase, ReplicaId, Request, Sequence, StateDigest, View,
    new_view_digest, view_change_digest,
};
use weft_node::types::Hash;

/// The most violations kept; a run stops at the first anyway.
const MAX_VIOLATIONS: usize = 32;

/// What a signature commits to, keyed as the core keys its signed records: ordering phases by
/// (view, sequence), checkpoints by sequence, view changes and new views by view.
pub type SignedKey = (View, Sequence, Phase);

pub fn signed_key(view: View, sequence: Sequence, phase: Phase) -> SignedKey {
    match phase {
        Phase::PrePrepare | Phase::Prepare | Phase::Commit => (view, sequence, phase),
        Phase::Checkpoint => (View(0), sequence, phase),
        Phase::ViewChange | Phase::NewView => (view, Sequence::GENESIS, phase),
    }
}

/// The (key, digest) pairs a message signs.
pub fn signatures<R: Request>(message: &Message<R>) -> Vec<(SignedKey, Hash)> {
    match message {
        Message::Request(_) => Vec::new(),
        Message::PrePrepare(m) => {
            vec![(signed_key(m.view, m.sequence, Phase::PrePrepare), m.digest)]
        }
        Message::Prepare(m) => vec![(signed_key(m.view, m.sequence, Phase::Prepare), m.digest)],
        Message::Commit(m) => vec![(signed_key(m.view, m.sequence, Phase::Commit), m.digest)],
        Message::Checkpoint(m) => vec![(
            signed_key(View(0), m.sequence, Phase::Checkpoint),
            Hash(m.state_digest),
        )],
        Message::ViewChange(m) => vec![(
            signed_key(m.new_view, Sequence::GENESIS, Phase::ViewChange),
            view_change_digest(m),
        )],
        Message::NewView(m) => {
            let mut signed = vec![(
                signed_key(m.view, Sequence::GENESIS, Phase::NewView),
                new_view_digest(m),
            )];
            signed.extend(
                m.pre_prepares
                    .iter()
                    .map(|p| &p.message)
                    .map(|pre_prepare| {
                        (
                            signed_key(m.view, pre_prepare.sequence, Phase::PrePrepare),
                            pre_prepare.digest,
                        )
                    }),
            );
            signed
        }
    }
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Two honest replicas executed (or installed by state transfer) different batches at one
    /// sequence.
    Fork {
        sequence: Sequence,
        first: ReplicaId,
        first_digest: Hash,
        second: ReplicaId,
        second_digest: Hash,
    },
    /// Two honest replicas committed different digests at one sequence.
    CommitConflict {
        sequence: Sequence,
        first: ReplicaId,
        first_digest: Hash,
        second: ReplicaId,
        second_digest: Hash,
    },
    /// An honest replica executed a sequence other than the one after its last (a gap, a
    /// repeat, or going back).
    OutOfOrder {
        replica: ReplicaId,
        expected: Sequence,
        executed: Sequence,
    },
    /// Two honest replicas reached different states after one sequence: their executed
    /// prefixes differ.
    PrefixMismatch {
        sequence: Sequence,
        first: ReplicaId,
        second: ReplicaId,
    },
    /// A replica's core and its driver disagree on what was executed.
    HeightMismatch {
        replica: ReplicaId,
        core: Sequence,
        driver: Sequence,
    },
    /// An honest replica signed two different digests for one (view, sequence, phase).
    Equivocation {
        replica: ReplicaId,
        key: SignedKey,
        first: Hash,
        second: Hash,
    },
    /// An honest replica sent a signature it had not persisted first.
    Unpersisted { replica: ReplicaId, key: SignedKey },
    /// After the network healed, an honest replica did not execute every submitted request
    /// within the bound.
    Liveness {
        replica: ReplicaId,
        missing: usize,
        first_missing: u64,
        last_executed: Sequence,
        view: View,
        bound: u64,
    },
    /// Messages kept flowing within one tick without end.
    Storm { tick: u64, deliveries: u64 },
    /// An honest replica found its state differs from a certified checkpoint (the simulated
    /// state machine is deterministic, so this means the replicas executed different batches).
    Diverged {
        replica: ReplicaId,
        sequence: Sequence,
    },
}

impl Violation {
    /// Safety violations are the ones that more than f faulty replicas can cause.
    pub fn is_agreement(&self) -> bool {
        matches!(
            self,
            Violation::Fork { .. }
                | Violation::CommitConflict { .. }
                | Violation::PrefixMismatch { .. }
                | Violation::Diverged { .. }
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Fork {
                sequence,
                first,
                first_digest,
                second,
                second_digest,
            } => write!(
                f,
                "agreement: replica {} executed {} at sequence {sequence}, replica {} executed {}",
                first.0, first_digest, second.0, second_digest
            ),
            Violation::CommitConflict {
                sequence,
                first,
                first_digest,
                second,
                second_digest,
            } => write!(
                f,
                "agreement: replica {} committed {} at sequence {sequence}, replica {} committed {}",
                first.0, first_digest, second.0, second_digest
            ),
            Violation::OutOfOrder {
                replica,
                expected,
                executed,
            } => write!(
                f,
                "order: replica {} executed sequence {executed}, expected {expected}",
                replica.0
            ),
            Violation::PrefixMismatch {
                sequence,
                first,
                second,
            } => write!(
                f,
                "prefix: replicas {} and {} hold different states after sequence {sequence}",
                first.0, second.0
            ),
            Violation::HeightMismatch {
                replica,
                core,
                driver,
            } => write!(
                f,
                "height: replica {}'s core executed up to {core}, its driver up to {driver}",
                replica.0
            ),
            Violation::Equivocation {
                replica,
                key,
                first,
                second,
            } => write!(
                f,
                "non-equivocation: honest replica {} signed {:?} at view {} sequence {} as {} and {}",
                replica.0, key.2, key.0, key.1, first, second
            ),
            Violation::Unpersisted { replica, key } => write!(
                f,
                "persist-before-sign: replica {} sent {:?} at view {} sequence {} unpersisted",
                replica.0, key.2, key.0, key.1
            ),
            Violation::Liveness {
                replica,
                missing,
                first_missing,
                last_executed,
                view,
                bound,
            } => write!(
                f,
                "liveness: {bound} ticks after healing, replica {} (view {view}, executed up to \
                 {last_executed}) still misses {missing} requests, the first {first_missing}",
                replica.0
            ),
            Violation::Storm { tick, deliveries } => write!(
                f,
                "storm: {deliveries} deliveries in tick {tick} without the network going quiet"
            ),
            Violation::Diverged { replica, sequence } => write!(
                f,
                "divergence: replica {}'s state at {sequence} differs from the certified one",
                replica.0
            ),
        }
    }
}

/// The checker's record of a run.
#[derive(Clone, Debug, Default)]
pub struct Checker {
    honest: BTreeSet<ReplicaId>,
    /// The first honest execution seen at each sequence: (who, batch digest).
    executed: BTreeMap<Sequence, (ReplicaId, Hash)>,
    committed: BTreeMap<Sequence, (ReplicaId, Hash)>,
    /// The first honest state seen after each sequence.
    states: BTreeMap<Sequence, (ReplicaId, StateDigest)>,
    /// What each honest replica has executed up to, across its restarts.
    applied: BTreeMap<ReplicaId, Sequence>,
    /// What each honest replica signed, across its restarts.
    signed: BTreeMap<(ReplicaId, SignedKey), Hash>,
    persisted: BTreeSet<(ReplicaId, SignedKey, Hash)>,
    violations: Vec<Violation>,
}

impl Checker {
    pub fn new(honest: impl IntoIterator<Item = ReplicaId>) -> Checker {
        Checker {
            honest: honest.into_iter().collect(),
            ..Checker::default()
        }
    }

    pub fn is_honest(&self, replica: ReplicaId) -> bool {
        self.honest.contains(&replica)
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn report(&mut self, violation: Violation) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(violation);
        }
    }

    /// How far an honest replica executed, as the checker saw it.
    pub fn applied(&self, replica: ReplicaId) -> Sequence {
        self.applied.get(&replica).copied().unwrap_or_default()
    }

    fn agree(&mut self, replica: ReplicaId, sequence: Sequence, digest: Hash) {
        match self.executed.get(&sequence) {
            None => {
                self.executed.insert(sequence, (replica, digest));
            }
            Some(&(first, first_digest)) if first_digest != digest => {
                self.report(Violation::Fork {
                    sequence,
                    first,
                    first_digest,
                    second: replica,
                    second_digest: digest,
                })
            }
            Some(_) => {}
        }
    }

    /// The state after `sequence` must be the one every other honest replica reached there.
    fn same_state(&mut self, replica: ReplicaId, sequence: Sequence, state: StateDigest) {
        match self.states.get(&sequence) {
            None => {
                self.states.insert(sequence, (replica, state));
            }
            Some(&(first, first_state)) if first_state != state => {
                self.report(Violation::PrefixMismatch {
                    sequence,
                    first,
                    second: replica,
                })
            }
            Some(_) => {}
        }
    }

    /// An honest replica's driver executed the batch with `digest` at `sequence`, reaching
    /// `state`.
    pub fn executed(
        &mut self,
        replica: ReplicaId,
        sequence: Sequence,
        digest: Hash,
        state: StateDigest,
    ) {
        if !self.is_honest(replica) {
            return;
        }
        let expected = self.applied(replica).next();
        if sequence != expected {
            self.report(Violation::OutOfOrder {
                replica,
                expected,
                executed: sequence,
            });
        }
        self.agree(replica, sequence, digest);
        self.same_state(replica, sequence, state);
        let applied = self.applied.entry(replica).or_default();
        *applied = (*applied).max(sequence);
    }

    /// An honest replica's driver installed, by state transfer, the batches above what it had
    /// executed, up to `through`: (sequence, batch digest, state after it).
    pub fn installed(
        &mut self,
        replica: ReplicaId,
        through: Sequence,
        batches: &[(Sequence, Hash, StateDigest)],
    ) {
        if !self.is_honest(replica) {
            return;
        }
        for &(sequence, digest, state) in batches {
            self.agree(replica, sequence, digest);
            self.same_state(replica, sequence, state);
        }
        let applied = self.applied.entry(replica).or_default();
        if through <= *applied {
            let expected = applied.next();
            self.report(Violation::OutOfOrder {
                replica,
                expected,
                executed: through,
            });
        } else {
            *applied = through;
        }
    }

    pub fn committed(&mut self, replica: ReplicaId, sequence: Sequence, digest: Hash) {
        if !self.is_honest(replica) {
            return;
        }
        match self.committed.get(&sequence) {
            None => {
                self.committed.insert(sequence, (replica, digest));
            }
            Some(&(first, first_digest)) if first_digest != digest => {
                self.report(Violation::CommitConflict {
                    sequence,
                    first,
                    first_digest,
                    second: replica,
                    second_digest: digest,
                })
            }
            Some(_) => {}
        }
    }

    pub fn persisted<R>(&mut self, replica: ReplicaId, record: &PersistRecord<R>) {
        if self.is_honest(replica) {
            let key = signed_key(record.view, record.sequence, record.phase);
            self.persisted.insert((replica, key, record.digest));
        }
    }

    /// An honest replica signed and sent `message` (to one replica or to all).
    pub fn sent<R: Request>(&mut self, replica: ReplicaId, message: &Message<R>) {
        if !self.is_honest(replica) {
            return;
        }
        for (key, digest) in signatures(message) {
            if !self.persisted.contains(&(replica, key, digest)) {
                self.report(Violation::Unpersisted { replica, key });
            }
            match self.signed.get(&(replica, key)) {
                None => {
                    self.signed.insert((replica, key), digest);
                }
                Some(&first) if first != digest => self.report(Violation::Equivocation {
                    replica,
                    key,
                    first,
                    second: digest,
                }),
                Some(_) => {}
            }
        }
    }

    /// After a step: an honest replica's driver holds `state` after `applied`, and its core
    /// says it executed up to `core`. Equal states after one sequence mean equal prefixes,
    /// because each state folds the one before.
    pub fn settled(
        &mut self,
        replica: ReplicaId,
        applied: Sequence,
        state: StateDigest,
        core: Sequence,
    ) {
        if !self.is_honest(replica) {
            return;
        }
        if core != applied || self.applied(replica) != applied {
            self.report(Violation::HeightMismatch {
                replica,
                core,
                driver: applied,
            });
        }
        if applied > Sequence::GENESIS {
            self.same_state(replica, applied, state);
        }
    }
}
