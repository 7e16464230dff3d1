//! An in-memory network of replicas for the PBFT tests: it routes actions between replicas in
//! FIFO order, plays the driver (persist, execute, state transfer), injects faults, and checks
//! after every step that execution is in order, once per sequence, and never goes backwards.

use std::collections::{BTreeMap, VecDeque};

use super::super::*;
use crate::crypto::CanonicalHasher;
use crate::types::Hash;

/// A request that is just an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRequest(pub u64);

impl Request for TestRequest {
    fn id(&self) -> RequestId {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&self.0.to_be_bytes());
        RequestId(id)
    }
}

pub type TestReplica = Replica<TestRequest>;
pub type TestMessage = Message<TestRequest>;
pub type TestAction = Action<TestRequest>;
pub type TestEvent = Event<TestRequest>;

pub fn requests(ids: &[u64]) -> Vec<TestRequest> {
    ids.iter().copied().map(TestRequest).collect()
}

/// Small numbers so that windows, checkpoints and timeouts are reached in a few steps.
pub fn test_config() -> Config {
    Config {
        batch_size: 1,
        batch_timeout_ticks: 1,
        checkpoint_period: 2,
        window: 4,
        request_timeout_ticks: 8,
        view_change_timeout_ticks: 6,
        max_view_change_timeout_ticks: 96,
        view_change_resend_ticks: 3,
        state_transfer_grace_ticks: 3,
        state_transfer_retry_ticks: 30,
        max_pending_requests: 64,
        future_messages_per_replica: 64,
        ..Config::new(4)
    }
}

pub fn replica(config: &Config, id: u32) -> TestReplica {
    Replica::new(config.clone(), ReplicaId(id)).expect("the test configuration is valid")
}

/// A message as the edge hands it over: with a (stand-in) signed form, which the core must
/// keep wherever it may forward the message as proof.
pub fn verified<M>(from: u32, message: M) -> Verified<M> {
    Verified::checked_by_edge(ReplicaId(from), message, stand_in_form())
}

/// `message` as another replica receives it: the wire decodes every nested message with its
/// own signed form, so each nested message that travels without one gets a stand-in.
fn as_received(message: TestMessage) -> TestMessage {
    fn sign<M>(proof: &mut Verified<M>) {
        if proof.signed.is_none() {
            proof.signed = Some(stand_in_form());
        }
    }
    fn view_change(m: &mut ViewChange<TestRequest>) {
        m.checkpoint_proof.iter_mut().for_each(sign);
        for prepared in &mut m.prepared {
            sign(&mut prepared.pre_prepare);
            prepared.prepares.iter_mut().for_each(sign);
        }
    }
    match message {
        Message::ViewChange(mut m) => {
            view_change(&mut m);
            Message::ViewChange(m)
        }
        Message::NewView(mut m) => {
            for proof in &mut m.view_changes {
                sign(proof);
                view_change(&mut proof.message);
            }
            m.pre_prepares.iter_mut().for_each(sign);
            Message::NewView(m)
        }
        other => other,
    }
}

fn stand_in_form() -> SignedForm {
    SignedForm {
        message: bytes::Bytes::from_static(b"signed by the sender"),
        signature: bytes::Bytes::from_static(b"its signature"),
    }
}

/// Every message of another replica that `action` carries as proof (and so the wire must
/// forward in its sender's signed form) still has that form: the core never loses it.
pub fn assert_forwardable(me: ReplicaId, action: &TestAction) {
    fn check<M: std::fmt::Debug>(me: ReplicaId, what: &str, proof: &Verified<M>) {
        assert!(
            proof.from == me || proof.signed.is_some(),
            "replica {} carries {what} from replica {} without its signed form: {:?}",
            me.0,
            proof.from.0,
            proof.message
        );
    }
    fn certificate(me: ReplicaId, certificate: &PreparedCertificate<TestRequest>) {
        check(
            me,
            "a prepared certificate's pre-prepare",
            &certificate.pre_prepare,
        );
        for prepare in &certificate.prepares {
            check(me, "a prepared certificate's prepare", prepare);
        }
    }
    fn view_change(me: ReplicaId, view_change: &ViewChange<TestRequest>) {
        for checkpoint in &view_change.checkpoint_proof {
            check(me, "a checkpoint proof", checkpoint);
        }
        for prepared in &view_change.prepared {
            certificate(me, prepared);
        }
    }
    match action {
        Action::Send { message, .. } | Action::Broadcast(message) => match message {
            Message::ViewChange(m) => view_change(me, m),
            Message::NewView(m) => {
                for proof in &m.view_changes {
                    check(me, "a view change", proof);
                    if proof.from == me {
                        view_change(me, &proof.message);
                    }
                }
            }
            _ => {}
        },
        Action::Persist(record) => match &record.detail {
            RecordDetail::Prepared(prepared) => certificate(me, prepared),
            RecordDetail::ViewChange(m) => view_change(me, m),
            RecordDetail::None => {}
        },
        Action::CheckpointStable { proof, .. } => {
            for checkpoint in proof {
                check(me, "a stable checkpoint's proof", checkpoint);
            }
        }
        _ => {}
    }
}

pub fn message(from: u32, message: TestMessage) -> TestEvent {
    Event::Message(verified(from, message))
}

pub fn pre_prepare(view: u64, sequence: u64, batch: &[u64]) -> PrePrepare<TestRequest> {
    let batch = requests(batch);
    PrePrepare {
        view: View(view),
        sequence: Sequence(sequence),
        digest: batch_digest(&batch),
        batch,
    }
}

pub fn digest_of(batch: &[u64]) -> Hash {
    batch_digest(&requests(batch))
}

/// The test state machine: each batch folds into the previous state digest.
pub fn next_state(previous: StateDigest, sequence: Sequence, batch: &[TestRequest]) -> StateDigest {
    CanonicalHasher::new("pbft-test/state")
        .put_bytes(&previous)
        .put_u64(sequence.0)
        .put_hash(&batch_digest(batch))
        .finish()
        .0
}

/// One replica and what its driver saw.
pub struct Node {
    pub replica: TestReplica,
    pub crashed: bool,
    /// Batches executed here, by sequence (copied from a peer on state transfer).
    pub executed: BTreeMap<Sequence, Vec<TestRequest>>,
    /// How many times each sequence was handed out by this replica's `Execute`.
    pub execute_count: BTreeMap<Sequence, u32>,
    /// State digest after each sequence.
    pub states: BTreeMap<Sequence, StateDigest>,
    pub applied: Sequence,
    pub persisted: Vec<PersistRecord<TestRequest>>,
    pub stable: Option<StableCheckpoint>,
    pub committed: Vec<(Sequence, Hash)>,
    pub views: Vec<(View, ReplicaId)>,
    pub transfers: Vec<(Sequence, StateDigest)>,
    /// Every message this replica signed and sent, with the tick it left at.
    pub sent: Vec<(u64, TestMessage)>,
    /// The requests of every `Resubmit` this replica asked for.
    pub resubmitted: Vec<u64>,
    pub max_executed: Sequence,
}

impl Node {
    pub fn sent_view_changes(&self) -> Vec<(u64, View)> {
        self.sent
            .iter()
            .filter_map(|(tick, message)| match message {
                Message::ViewChange(view_change) => Some((*tick, view_change.new_view)),
                _ => None,
            })
            .collect()
    }

    pub fn sent_new_views(&self) -> Vec<NewView<TestRequest>> {
        self.sent
            .iter()
            .filter_map(|(_, message)| match message {
                Message::NewView(new_view) => Some(new_view.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn executed_ids(&self) -> Vec<(u64, Vec<u64>)> {
        self.executed
            .iter()
            .map(|(sequence, batch)| (sequence.0, batch.iter().map(|request| request.0).collect()))
            .collect()
    }
}

/// Whatever a replica signs must have been persisted first (a record with the same view,
/// sequence, phase and digest).
fn assert_persisted(node: &Node, message: &TestMessage) {
    let persisted = |view: View, sequence: Option<Sequence>, phase: Phase, digest: Hash| {
        node.persisted.iter().any(|record| {
            record.view == view
                && sequence.is_none_or(|sequence| record.sequence == sequence)
                && record.phase == phase
                && record.digest == digest
        })
    };
    let checkpoint_persisted = |sequence: Sequence, digest: StateDigest| {
        node.persisted.iter().any(|record| {
            record.phase == Phase::Checkpoint
                && record.sequence == sequence
                && record.digest == Hash(digest)
        })
    };
    let ok = match message {
        Message::Request(_) => true,
        Message::PrePrepare(m) => persisted(m.view, Some(m.sequence), Phase::PrePrepare, m.digest),
        Message::Prepare(m) => persisted(m.view, Some(m.sequence), Phase::Prepare, m.digest),
        Message::Commit(m) => persisted(m.view, Some(m.sequence), Phase::Commit, m.digest),
        Message::Checkpoint(m) => checkpoint_persisted(m.sequence, m.state_digest),
        Message::ViewChange(m) => {
            persisted(m.new_view, None, Phase::ViewChange, view_change_digest(m))
        }
        Message::NewView(m) => {
            persisted(m.view, None, Phase::NewView, new_view_digest(m))
                && m.pre_prepares
                    .iter()
                    .map(|p| &p.message)
                    .all(|pre_prepare| {
                        persisted(
                            m.view,
                            Some(pre_prepare.sequence),
                            Phase::PrePrepare,
                            pre_prepare.digest,
                        )
                    })
        }
    };
    assert!(
        ok,
        "replica {} sent {:?} without persisting it first",
        node.replica.id().0,
        message.kind()
    );
}

enum Item {
    Deliver {
        from: ReplicaId,
        to: ReplicaId,
        message: TestMessage,
    },
    Local {
        to: ReplicaId,
        event: TestEvent,
    },
}

type DropRule = Box<dyn FnMut(ReplicaId, ReplicaId, &TestMessage) -> bool>;

/// Seeded message loss and reordering (xorshift64*: deterministic, no library).
pub struct Chaos {
    state: u64,
    /// Out of 100 messages, how many are lost.
    pub loss_percent: u64,
}

impl Chaos {
    pub fn new(seed: u64, loss_percent: u64) -> Chaos {
        Chaos {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            loss_percent,
        }
    }

    pub fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// N replicas on a FIFO network (or a lossy, reordering one under `chaos`).
pub struct Net {
    pub nodes: Vec<Node>,
    queue: VecDeque<Item>,
    drop_rule: Option<DropRule>,
    pub chaos: Option<Chaos>,
    pub tick: u64,
}

impl Net {
    pub fn new(config: &Config) -> Net {
        let nodes = (0..config.replica_count as u32)
            .map(|id| Node {
                replica: replica(config, id),
                crashed: false,
                executed: BTreeMap::new(),
                execute_count: BTreeMap::new(),
                states: BTreeMap::new(),
                applied: Sequence::GENESIS,
                persisted: Vec::new(),
                stable: None,
                committed: Vec::new(),
                views: Vec::new(),
                transfers: Vec::new(),
                sent: Vec::new(),
                resubmitted: Vec::new(),
                max_executed: Sequence::GENESIS,
            })
            .collect();
        Net {
            nodes,
            queue: VecDeque::new(),
            drop_rule: None,
            chaos: None,
            tick: 0,
        }
    }

    pub fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }

    pub fn replica(&self, id: u32) -> &TestReplica {
        &self.nodes[id as usize].replica
    }

    /// Drop every message for which `rule(from, to, message)` is true, from now on.
    pub fn set_drop_rule(
        &mut self,
        rule: impl FnMut(ReplicaId, ReplicaId, &TestMessage) -> bool + 'static,
    ) {
        self.drop_rule = Some(Box::new(rule));
    }

    pub fn clear_drop_rule(&mut self) {
        self.drop_rule = None;
    }

    pub fn crash(&mut self, id: u32) {
        self.nodes[id as usize].crashed = true;
    }

    pub fn recover(&mut self, id: u32) {
        self.nodes[id as usize].crashed = false;
    }

    /// Restart replica `id` from what its driver persisted (its ledger survives too).
    pub fn restart(&mut self, id: u32) {
        let node = &mut self.nodes[id as usize];
        let config = node.replica.config().clone();
        node.replica = replica(&config, id);
        node.crashed = false;
        node.max_executed = Sequence::GENESIS;
        let state = PersistedState {
            records: node.persisted.clone(),
            last_executed: node.applied,
            stable_checkpoint: node.stable.clone(),
        };
        self.handle(id, Event::Restored(state));
    }

    /// Hand `event` to replica `id` and run its actions (no delivery yet).
    pub fn handle(&mut self, id: u32, event: TestEvent) -> Vec<TestAction> {
        let debug = std::env::var("PBFT_DEBUG").is_ok() && self.tick <= 40;
        let event_text = if debug { short(&event) } else { String::new() };
        let actions = self.nodes[id as usize].replica.handle(event);
        if debug {
            let acts: Vec<String> = actions.iter().map(short_action).collect();
            let hit = |t: &str| {
                t.contains("TestRequest(4)")
                    || t.contains("Req 4\"")
                    || t.contains("NV")
                    || t.contains("VC")
                    || t.contains("Req 4")
                    || t.contains("s2 ")
                    || t.contains("s1 ")
            };
            if hit(&event_text) || acts.iter().any(|a| hit(a)) {
                eprintln!("t{} -> {id}: {event_text}", self.tick);
                for a in acts.iter().filter(|a| !a.contains("persist")) {
                    eprintln!("      {a}");
                }
            }
        }
        self.run_actions(ReplicaId(id), actions.clone());
        actions
    }

    /// Deliver a message as if `from` had sent it, bypassing faults.
    pub fn inject(&mut self, from: u32, to: u32, message: TestMessage) -> Vec<TestAction> {
        self.handle(to, Event::Message(verified(from, message)))
    }

    /// A client sends `request` to replica `id`.
    pub fn submit(&mut self, id: u32, request: u64) {
        self.handle(id, Event::ClientRequest(TestRequest(request)));
        self.run();
    }

    /// A client sends `request` to every replica that is up.
    pub fn submit_to_all(&mut self, request: u64) {
        for id in 0..self.nodes.len() as u32 {
            if !self.nodes[id as usize].crashed {
                self.handle(id, Event::ClientRequest(TestRequest(request)));
            }
        }
        self.run();
    }

    /// One tick on every replica that is up, then deliver everything.
    pub fn tick(&mut self) {
        self.tick += 1;
        for id in 0..self.nodes.len() as u32 {
            if !self.nodes[id as usize].crashed {
                self.handle(id, Event::Tick);
            }
        }
        self.run();
    }

    pub fn ticks(&mut self, count: u64) {
        for _ in 0..count {
            self.tick();
        }
    }

    /// Tick until `done` holds; panics after `limit` ticks.
    pub fn tick_until(&mut self, limit: u64, mut done: impl FnMut(&Net) -> bool) {
        for _ in 0..limit {
            if done(self) {
                return;
            }
            self.tick();
        }
        assert!(done(self), "condition not reached within {limit} ticks");
    }

    /// Deliver until the network is quiet.
    pub fn run(&mut self) {
        let mut steps = 0u64;
        while let Some(item) = self.next_item() {
            steps += 1;
            assert!(steps < 1_000_000, "the network never went quiet");
            match item {
                Item::Deliver { from, to, message } => {
                    if self.nodes[from.0 as usize].crashed || self.nodes[to.0 as usize].crashed {
                        continue;
                    }
                    if let Some(chaos) = self.chaos.as_mut() {
                        let loss = chaos.loss_percent;
                        if chaos.below(100) < loss {
                            continue;
                        }
                    }
                    if let Some(rule) = self.drop_rule.as_mut()
                        && rule(from, to, &message)
                    {
                        continue;
                    }
                    self.handle(to.0, Event::Message(verified(from.0, as_received(message))));
                }
                Item::Local { to, event } => {
                    if !self.nodes[to.0 as usize].crashed {
                        self.handle(to.0, event);
                    }
                }
            }
        }
    }

    /// The next item: the oldest, or under chaos any of them.
    fn next_item(&mut self) -> Option<Item> {
        match self.chaos.as_mut() {
            Some(chaos) if !self.queue.is_empty() => {
                let index = chaos.below(self.queue.len() as u64) as usize;
                self.queue.remove(index)
            }
            _ => self.queue.pop_front(),
        }
    }

    fn run_actions(&mut self, id: ReplicaId, actions: Vec<TestAction>) {
        let count = self.nodes.len() as u32;
        let tick = self.tick;
        for action in &actions {
            assert_forwardable(id, action);
        }
        for action in actions {
            match action {
                Action::Persist(record) => self.nodes[id.0 as usize].persisted.push(record),
                Action::Send { to, message } => {
                    assert_persisted(&self.nodes[id.0 as usize], &message);
                    self.nodes[id.0 as usize].sent.push((tick, message.clone()));
                    self.queue.push_back(Item::Deliver {
                        from: id,
                        to,
                        message,
                    });
                }
                Action::Broadcast(message) => {
                    assert_persisted(&self.nodes[id.0 as usize], &message);
                    self.nodes[id.0 as usize].sent.push((tick, message.clone()));
                    for to in (0..count).map(ReplicaId).filter(|to| *to != id) {
                        self.queue.push_back(Item::Deliver {
                            from: id,
                            to,
                            message: message.clone(),
                        });
                    }
                }
                Action::Execute { sequence, batch } => {
                    let node = &mut self.nodes[id.0 as usize];
                    *node.execute_count.entry(sequence).or_insert(0) += 1;
                    assert_eq!(
                        sequence,
                        node.applied.next(),
                        "replica {} executed {sequence:?} after {:?}",
                        id.0,
                        node.applied
                    );
                    let previous = node
                        .states
                        .get(&node.applied)
                        .copied()
                        .unwrap_or(GENESIS_STATE_DIGEST);
                    let state = next_state(previous, sequence, &batch);
                    node.states.insert(sequence, state);
                    node.executed.insert(sequence, batch);
                    node.applied = sequence;
                    self.queue.push_back(Item::Local {
                        to: id,
                        event: Event::Executed {
                            sequence,
                            state_digest: state,
                        },
                    });
                }
                Action::CheckpointStable {
                    sequence,
                    state_digest,
                    proof,
                } => {
                    self.nodes[id.0 as usize].stable = Some(StableCheckpoint {
                        sequence,
                        state_digest,
                        proof,
                    });
                }
                Action::ViewChanged { view, primary } => {
                    self.nodes[id.0 as usize].views.push((view, primary));
                }
                Action::RequestStateTransfer {
                    sequence,
                    state_digest,
                    peers,
                } => {
                    self.nodes[id.0 as usize]
                        .transfers
                        .push((sequence, state_digest));
                    self.transfer(id, sequence, state_digest, &peers);
                }
                Action::Committed { sequence, digest } => {
                    self.nodes[id.0 as usize].committed.push((sequence, digest));
                }
                // As the driver does: what the (transferred) ledger does not hold goes back in.
                Action::Resubmit { requests } => {
                    let node = &mut self.nodes[id.0 as usize];
                    node.resubmitted
                        .extend(requests.iter().map(|request| request.0));
                    for request in requests {
                        let held = node
                            .executed
                            .values()
                            .flatten()
                            .any(|done| *done == request);
                        if !held {
                            self.queue.push_back(Item::Local {
                                to: id,
                                event: Event::ClientRequest(request),
                            });
                        }
                    }
                }
                // Tests that forge checkpoints look for it in the actions they get back; the
                // harness state machine is deterministic, so no honest run produces it.
                Action::Diverged { .. } => {}
            }
        }
        let node = &mut self.nodes[id.0 as usize];
        let last_executed = node.replica.last_executed();
        assert!(
            last_executed >= node.max_executed,
            "replica {} went back from {:?} to {last_executed:?}",
            id.0,
            node.max_executed
        );
        node.max_executed = last_executed;
    }

    /// Copy a peer's executed batches and state up to `sequence`, as a real transfer would
    /// after checking them against the digest.
    fn transfer(
        &mut self,
        id: ReplicaId,
        sequence: Sequence,
        state_digest: StateDigest,
        peers: &[ReplicaId],
    ) {
        let Some(peer) = peers.iter().find(|peer| {
            let node = &self.nodes[peer.0 as usize];
            !node.crashed && node.states.get(&sequence) == Some(&state_digest)
        }) else {
            return;
        };
        let (executed, states): (Vec<_>, Vec<_>) = {
            let source = &self.nodes[peer.0 as usize];
            (
                source
                    .executed
                    .range(..=sequence)
                    .map(|(at, batch)| (*at, batch.clone()))
                    .collect(),
                source
                    .states
                    .range(..=sequence)
                    .map(|(at, state)| (*at, *state))
                    .collect(),
            )
        };
        let node = &mut self.nodes[id.0 as usize];
        node.executed.extend(executed);
        node.states.extend(states);
        node.applied = sequence;
        self.queue.push_back(Item::Local {
            to: id,
            event: Event::StateTransferred {
                sequence,
                state_digest,
            },
        });
    }

    /// No two replicas executed different batches at one sequence; nothing executed twice.
    pub fn assert_agreement(&self) {
        for (index, node) in self.nodes.iter().enumerate() {
            for (sequence, count) in &node.execute_count {
                assert_eq!(
                    *count, 1,
                    "replica {index} executed {sequence:?} {count} times"
                );
            }
            for other in &self.nodes[index + 1..] {
                for (sequence, batch) in &node.executed {
                    if let Some(theirs) = other.executed.get(sequence) {
                        assert_eq!(batch, theirs, "fork at {sequence:?}");
                    }
                }
            }
        }
    }
}

fn short(event: &TestEvent) -> String {
    match event {
        Event::Message(m) => format!("from {} {}", m.from.0, short_message(&m.message)),
        other => format!("{:?}", other).chars().take(120).collect(),
    }
}
fn short_message(m: &TestMessage) -> String {
    match m {
        Message::PrePrepare(p) => format!("PP v{} s{} {:?}", p.view.0, p.sequence.0, p.batch),
        Message::Prepare(p) => format!("P v{} s{}", p.view.0, p.sequence.0),
        Message::Commit(p) => format!("C v{} s{}", p.view.0, p.sequence.0),
        Message::Checkpoint(c) => format!("CP s{}", c.sequence.0),
        Message::ViewChange(v) => format!(
            "VC {} stable {} certs {:?}",
            v.new_view.0,
            v.stable_checkpoint.0,
            v.prepared
                .iter()
                .map(|c| (c.view().0, c.sequence().0))
                .collect::<Vec<_>>()
        ),
        Message::NewView(n) => format!(
            "NV {} O {:?}",
            n.view.0,
            n.pre_prepares
                .iter()
                .map(|p| (p.message.sequence.0, p.message.batch.clone()))
                .collect::<Vec<_>>()
        ),
        Message::Request(r) => format!("Req {}", r.0),
    }
}
fn short_action(a: &TestAction) -> String {
    match a {
        Action::Broadcast(m) => format!("bcast {}", short_message(m)),
        Action::Send { to, message } => format!("send {} {}", to.0, short_message(message)),
        Action::Persist(_) => "persist".into(),
        other => format!("{:?}", other).chars().take(100).collect(),
    }
}
