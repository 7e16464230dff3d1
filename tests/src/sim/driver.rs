//! One replica instance and the simulated driver around it: it keeps the persisted records,
//! executes committed batches into a ledger and a folded state digest, keeps the latest stable
//! checkpoint, installs state fetched from a peer, and on restart builds a new replica from
//! what it persisted. Invariant: the ledger, the states, the records and the stable checkpoint
//! are the disk and survive a crash; the replica (memory) does not; the ledger only grows.

use std::collections::{BTreeMap, BTreeSet};

use weft_node::consensus::pbft::{
    Config, Event, GENESIS_STATE_DIGEST, PersistRecord, PersistedState, Phase, Replica, ReplicaId,
    Request, RequestId, Sequence, StableCheckpoint, StateDigest, batch_digest,
};
use weft_node::crypto::CanonicalHasher;
use weft_node::types::Hash;

use super::faults::{Behaviour, Prune};

/// A client request: just a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRequest(pub u64);

impl Request for SimRequest {
    fn id(&self) -> RequestId {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&self.0.to_be_bytes());
        id[8..16].copy_from_slice(b"weft-sim");
        RequestId(id)
    }
}

/// The replicated state machine: each batch folds into the state before it, so equal states
/// after one sequence mean equal executed prefixes.
pub fn next_state(previous: StateDigest, sequence: Sequence, batch: Hash) -> StateDigest {
    CanonicalHasher::new("weft-sim/state")
        .put_bytes(&previous)
        .put_u64(sequence.0)
        .put_hash(&batch)
        .finish()
        .0
}

/// A state transfer the replica asked for and the driver has not done yet.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub sequence: Sequence,
    pub state_digest: StateDigest,
    pub peers: Vec<ReplicaId>,
}

pub struct Host {
    pub id: ReplicaId,
    pub behaviour: Behaviour,
    pub replica: Replica<SimRequest>,
    pub up: bool,
    /// Executed or transferred batches, by sequence: 1..=applied, no gaps.
    pub ledger: BTreeMap<Sequence, Vec<SimRequest>>,
    /// The state after each sequence of the ledger.
    pub states: BTreeMap<Sequence, StateDigest>,
    pub applied: Sequence,
    /// The request ids the ledger holds.
    pub held: BTreeSet<u64>,
    records: Vec<PersistRecord<SimRequest>>,
    stable: Option<StableCheckpoint>,
    pub wanted: Option<Wanted>,
    pub restarts: u32,
}

impl Host {
    pub fn new(config: &Config, id: ReplicaId, behaviour: Behaviour) -> Host {
        Host {
            id,
            behaviour,
            replica: Replica::new(config.clone(), id).expect("the simulation's config is valid"),
            up: behaviour != Behaviour::Mute,
            ledger: BTreeMap::new(),
            states: BTreeMap::new(),
            applied: Sequence::GENESIS,
            held: BTreeSet::new(),
            records: Vec::new(),
            stable: None,
            wanted: None,
            restarts: 0,
        }
    }

    /// The state after the last applied sequence.
    pub fn state(&self) -> StateDigest {
        self.states
            .get(&self.applied)
            .copied()
            .unwrap_or(GENESIS_STATE_DIGEST)
    }

    /// `Action::Persist`: durable before the next action runs (the simulation has no torn
    /// writes: a crash falls between two events).
    pub fn persist(&mut self, record: PersistRecord<SimRequest>) {
        self.records.push(record);
    }

    /// `Action::Execute`: apply the batch after the current state. Returns the batch digest
    /// and the new state.
    pub fn execute(&mut self, sequence: Sequence, batch: Vec<SimRequest>) -> (Hash, StateDigest) {
        let digest = batch_digest(&batch);
        let state = next_state(self.state(), sequence, digest);
        self.held.extend(batch.iter().map(|request| request.0));
        self.ledger.insert(sequence, batch);
        self.states.insert(sequence, state);
        self.applied = sequence;
        (digest, state)
    }

    /// `Action::CheckpointStable`: keep it for restarts, and forget records as `prune` allows.
    pub fn checkpoint_stable(&mut self, stable: StableCheckpoint, prune: Prune) {
        if prune == Prune::LikeCore {
            let latest = self
                .records
                .iter()
                .filter(|record| record.phase != Phase::Checkpoint)
                .map(|record| record.view)
                .max()
                .unwrap_or_default();
            self.records.retain(|record| match record.phase {
                Phase::ViewChange | Phase::NewView => record.view >= latest,
                _ => record.sequence > stable.sequence,
            });
        }
        self.stable = Some(stable);
    }

    /// Whether this host's ledger can serve a transfer up to `sequence` with `state_digest`.
    pub fn can_serve(&self, sequence: Sequence, state_digest: StateDigest) -> bool {
        self.states.get(&sequence) == Some(&state_digest)
            && self.ledger.range(..=sequence).count() as u64 == sequence.0
    }

    /// Install `source`'s batches above this ledger up to `sequence`. Returns (sequence, batch
    /// digest, state) per installed batch.
    pub fn install(
        &mut self,
        source: &Host,
        sequence: Sequence,
    ) -> Vec<(Sequence, Hash, StateDigest)> {
        let mut installed = Vec::new();
        for (at, batch) in source.ledger.range(self.applied.next()..=sequence) {
            let state = source
                .states
                .get(at)
                .copied()
                .unwrap_or(GENESIS_STATE_DIGEST);
            installed.push((*at, batch_digest(batch), state));
            self.held.extend(batch.iter().map(|request| request.0));
            self.ledger.insert(*at, batch.clone());
            self.states.insert(*at, state);
        }
        self.applied = sequence;
        installed
    }

    /// The state after every checkpoint sequence above the stable checkpoint, up to the last
    /// applied sequence: what a restarted driver reports to its new replica.
    pub fn checkpoint_states(&self, checkpoint_period: u64) -> Vec<(Sequence, StateDigest)> {
        let stable = self
            .stable
            .as_ref()
            .map_or(Sequence::GENESIS, |stable| stable.sequence);
        if stable >= self.applied {
            return Vec::new();
        }
        self.states
            .range(stable.next()..=self.applied)
            .filter(|(sequence, _)| sequence.0.is_multiple_of(checkpoint_period))
            .map(|(sequence, state)| (*sequence, *state))
            .collect()
    }

    /// The process dies: the replica's memory and any transfer under way are lost.
    pub fn crash(&mut self) {
        self.up = false;
        self.wanted = None;
    }

    /// A new process: a new replica, to be fed the returned `Event::Restored` first.
    pub fn restart(&mut self, config: &Config) -> Event<SimRequest> {
        self.replica =
            Replica::new(config.clone(), self.id).expect("the simulation's config is valid");
        self.up = true;
        self.wanted = None;
        self.restarts += 1;
        Event::Restored(PersistedState {
            records: self.records.clone(),
            last_executed: self.applied,
            stable_checkpoint: self.stable.clone(),
        })
    }
}
