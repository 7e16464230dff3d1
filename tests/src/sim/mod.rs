//! A seeded, deterministic simulation of N PBFT replicas (`weft_node::consensus::pbft`) on a
//! simulated network with loss, duplication, delay, reordering, partitions, crashes with
//! restarts from disk, an equivocating primary, Twins and mute replicas, checked after every
//! step for agreement, identical prefixes, in-order once-only execution and non-equivocation,
//! and for liveness once the faults stop. Invariant: a run is a pure function of (profile,
//! replica count, seed): replaying a seed replays the same trace, fingerprint included.
//!
//! # Files
//!
//! `rng` (the seeded generator), `faults` (the plan of a run: who is faulty and how, what
//! fails when), `network` (links, partitions, loss, delay, reordering), `driver` (a replica
//! and the driver around it: disk, execution, state transfer, restart), `checker` (the
//! invariants), `trace` (the fingerprint and readable trace of a run).
//!
//! # One step (one tick)
//!
//! Faults due now happen (crash, restart, partition, heal); clients submit and retry; every
//! running instance gets a tick; then every message due is delivered, in the seeded order,
//! until none is due (a message may be due in the tick it was sent); pending state transfers
//! are tried; then the checker looks at every honest replica. Each event's actions run in
//! order, and the driver's own reports (`Executed`, `StateTransferred`) are handed back right
//! after them.
//!
//! # Liveness, and the gap this simulation found
//!
//! The core has no retransmission: a replica that misses the messages of a sequence (down,
//! cut off, or because they arrived above its high watermark while its own checkpoint was not
//! yet stable, which also happens on a healthy network) catches up only by state transfer to
//! the next checkpoint that f+1 replicas vouch for. When clients go idle, no such checkpoint
//! comes, and the replica stays behind for good (its request timer then starts a view change
//! no one joins). So by default clients keep a trickle of requests going after the faults
//! stop (`Scenario::tail_every`) and liveness requires every request planned up to then on
//! every honest replica within `Scenario::liveness_bound` ticks; `WEFT_SIM_IDLE=1` makes the
//! sweeps idle after the faults, which reproduces the gap (e.g. mixed, n = 4, seed 36: no
//! faulty replica, one partition; replica 2 is left alone in view 1 and two sequences short).
//!
//! The driver also does one thing the core's contract does not spell out: after a restart it
//! reports the state of each checkpoint it executed above its stable one (see
//! `Scenario::report_after_restart`); `WEFT_SIM_NO_REPORT_AFTER_RESTART=1` turns that off.

pub mod checker;
pub mod driver;
pub mod faults;
pub mod network;
pub mod rng;
pub mod trace;

use std::collections::{BTreeMap, VecDeque};

use weft_node::consensus::pbft::{
    Action, Event, Message, RejectReason, ReplicaId, StableCheckpoint, Verified, batch_digest,
};

pub use checker::{Checker, Violation};
pub use driver::{Host, SimRequest};
pub use faults::{Behaviour, Profile, Scenario, sim_config};
pub use network::{Conditions, NetworkStats};
pub use trace::Trace;

use driver::Wanted;
use faults::{CrashPoint, Fault};
use network::Network;
use rng::SimRng;

/// Deliveries in one tick, per replica pair, after which the network counts as storming.
const STORM_PER_PAIR: u64 = 500;

/// What happened in a run beyond the network's counters, for the sweeps' coverage checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub crashes: u64,
    /// Crashes that struck at a chosen point (mid-way through actions, at a view change).
    pub crash_points: u64,
    pub restarts: u64,
    pub partitions: u64,
    pub state_transfers: u64,
    /// Pre-prepares an equivocating primary split.
    pub equivocations_sent: u64,
    /// Equivocation proofs honest replicas kept.
    pub evidence: u64,
    /// The highest view an honest replica reached.
    pub highest_view: u64,
    /// The highest sequence an honest replica executed.
    pub highest_sequence: u64,
    pub requests: u64,
    /// Ticks from `Scenario::quiet_from` until every honest replica held every request.
    pub settled_after: Option<u64>,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub profile: Profile,
    pub replica_count: usize,
    pub seed: u64,
    /// The plan, in one line.
    pub scenario: String,
    pub fingerprint: u64,
    pub trace_entries: u64,
    pub ticks: u64,
    /// Clients went idle after the faults (the strict liveness model).
    pub idle: bool,
    /// The driver did not report its checkpoint states after a restart.
    pub no_report_after_restart: bool,
    pub violations: Vec<Violation>,
    pub stats: RunStats,
    pub network: NetworkStats,
    /// What the honest replicas refused, by reason, summed (for diagnosis).
    pub rejections: BTreeMap<RejectReason, u64>,
    /// The readable trace, when asked for.
    pub trace: Vec<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The one-line command that replays this run through the named test of
    /// `tests/tests/simulation.rs`.
    pub fn replay_command(&self, test: &str) -> String {
        let mut command = replay_command(test, self.replica_count, self.seed);
        if self.no_report_after_restart {
            command = format!("WEFT_SIM_NO_REPORT_AFTER_RESTART=1 {command}");
        }
        if self.idle {
            command = format!("WEFT_SIM_IDLE=1 {command}");
        }
        command
    }

    /// The first violation, the plan and the replay command.
    pub fn failure_report(&self, test: &str) -> String {
        let violations: Vec<String> = self.violations.iter().map(ToString::to_string).collect();
        format!(
            "simulation failed at tick {}: {}\n  plan: {}\n  replay: {}",
            self.ticks,
            violations.join("; "),
            self.scenario,
            self.replay_command(test)
        )
    }
}

/// `WEFT_SIM_SEED=.. WEFT_SIM_N=.. cargo test .. <test>`; add `WEFT_SIM_TRACE=1` to print the
/// trace.
pub fn replay_command(test: &str, replica_count: usize, seed: u64) -> String {
    format!(
        "WEFT_SIM_SEED={seed} WEFT_SIM_N={replica_count} cargo test --locked -p weft-tests \
         --test simulation {test} -- --exact --nocapture"
    )
}

/// Run one seed of `profile` with `replica_count` replicas; `keep_trace` keeps readable lines.
pub fn run(profile: Profile, replica_count: usize, seed: u64, keep_trace: bool) -> Outcome {
    let scenario = Scenario::generate(profile, replica_count, seed);
    run_scenario(scenario, keep_trace)
}

/// Run a plan to its end, or to its first violation.
pub fn run_scenario(scenario: Scenario, keep_trace: bool) -> Outcome {
    let mut simulation = Simulation::new(scenario, keep_trace);
    simulation.run();
    simulation.outcome()
}

/// The world of one run.
pub struct Simulation {
    scenario: Scenario,
    hosts: Vec<Host>,
    network: Network<SimRequest>,
    checker: Checker,
    trace: Trace,
    /// The equivocating primaries' choices of who gets which batch.
    byzantine: SimRng,
    now: u64,
    next_fault: usize,
    next_submission: usize,
    /// Every request submitted so far, with its tick.
    submitted: BTreeMap<u64, u64>,
    /// The clients' choices after `quiet_from`.
    clients: SimRng,
    /// Crashes waiting for their moment, per instance.
    armed: Vec<Option<CrashPoint>>,
    stats: RunStats,
}

impl Simulation {
    pub fn new(scenario: Scenario, keep_trace: bool) -> Simulation {
        let config = scenario.config.clone();
        let hosts: Vec<Host> = scenario
            .instances
            .iter()
            .map(|instance| Host::new(&config, instance.id, instance.behaviour))
            .collect();
        let mut network = Network::new(
            SimRng::stream(scenario.seed, "network"),
            scenario
                .instances
                .iter()
                .map(|instance| instance.id)
                .collect(),
            scenario
                .instances
                .iter()
                .map(|instance| instance.reach)
                .collect(),
        );
        network.set_conditions(scenario.chaos);
        let checker = Checker::new(scenario.honest());
        Simulation {
            byzantine: SimRng::stream(scenario.seed, "byzantine"),
            clients: SimRng::stream(scenario.seed, "clients"),
            armed: vec![None; hosts.len()],
            scenario,
            hosts,
            network,
            checker,
            trace: Trace::new(keep_trace),
            now: 0,
            next_fault: 0,
            next_submission: 0,
            submitted: BTreeMap::new(),
            stats: RunStats::default(),
        }
    }

    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn run(&mut self) {
        let quiet_from = self.scenario.quiet_from();
        while self.now < self.scenario.end {
            self.step();
            if !self.checker.ok() {
                return;
            }
            if self.scenario.check_liveness && self.now >= quiet_from && self.all_served() {
                self.stats.settled_after = Some(self.now - quiet_from);
                return;
            }
        }
        if self.scenario.check_liveness {
            self.report_liveness();
        }
    }

    /// One tick of the world, checked at the end.
    pub fn step(&mut self) {
        self.now += 1;
        self.apply_faults();
        self.submit();
        self.retry();
        for index in 0..self.hosts.len() {
            if self.hosts[index].up {
                self.handle(index, Event::Tick);
            }
        }
        self.deliver();
        for index in 0..self.hosts.len() {
            if self.hosts[index].up && self.hosts[index].wanted.is_some() {
                self.try_transfer_now(index);
            }
        }
        self.settle();
    }

    fn apply_faults(&mut self) {
        while let Some((tick, fault)) = self.scenario.timeline.get(self.next_fault).cloned() {
            if tick > self.now {
                break;
            }
            self.next_fault += 1;
            match fault {
                Fault::Crash(id) => {
                    self.trace.note(self.now, 1, &[u64::from(id.0)], || {
                        format!("crash {}", id.0)
                    });
                    self.stats.crashes += 1;
                    for index in 0..self.hosts.len() {
                        if self.hosts[index].id == id {
                            self.armed[index] = None;
                            self.hosts[index].crash();
                        }
                    }
                }
                Fault::ArmCrash(id, point) => {
                    self.trace.note(self.now, 8, &[u64::from(id.0)], || {
                        format!("arm a crash of {} at {point:?}", id.0)
                    });
                    for index in 0..self.hosts.len() {
                        if self.hosts[index].id == id && self.hosts[index].up {
                            self.armed[index] = Some(point);
                        }
                    }
                }
                Fault::Restart(id) => {
                    self.trace.note(self.now, 2, &[u64::from(id.0)], || {
                        format!("restart {}", id.0)
                    });
                    for index in 0..self.hosts.len() {
                        if self.hosts[index].id == id {
                            self.restart(index);
                        }
                    }
                }
                Fault::Partition(groups) => {
                    let words: Vec<u64> = groups.iter().map(|group| u64::from(*group)).collect();
                    self.trace
                        .note(self.now, 3, &words, || format!("partition {groups:?}"));
                    self.stats.partitions += 1;
                    self.network.partition(groups);
                }
                Fault::Heal => {
                    self.network.heal();
                    self.trace.note(self.now, 4, &[], || "heal".to_string());
                    if self.now >= self.scenario.heal_at {
                        self.network.set_conditions(Conditions::CALM);
                    }
                }
            }
        }
    }

    /// Start a new process for a crashed instance from what it persisted (a mute replica
    /// never starts); disarm a crash that has not struck.
    fn restart(&mut self, index: usize) {
        self.armed[index] = None;
        if self.hosts[index].up || self.hosts[index].behaviour == Behaviour::Mute {
            return;
        }
        self.stats.restarts += 1;
        let config = self.scenario.config.clone();
        let restored = self.hosts[index].restart(&config);
        self.handle(index, restored);
        if self.scenario.report_after_restart {
            let period = self.scenario.config.checkpoint_period;
            for (sequence, state_digest) in self.hosts[index].checkpoint_states(period) {
                if self.hosts[index].up {
                    self.handle(
                        index,
                        Event::Executed {
                            sequence,
                            state_digest,
                        },
                    );
                }
            }
        }
    }

    /// Whether the armed crash of instance `index` strikes after an action.
    fn crash_point_reached(&mut self, index: usize, view_step: bool) -> bool {
        match &mut self.armed[index] {
            None => false,
            Some(CrashPoint::ViewStep) => view_step,
            Some(CrashPoint::Actions(left)) => {
                *left = left.saturating_sub(1);
                *left == 0
            }
        }
    }

    /// Send a request to every running instance of one replica id.
    fn client_request(&mut self, id: ReplicaId, request: u64) {
        for index in 0..self.hosts.len() {
            if self.hosts[index].id == id && self.hosts[index].up {
                self.handle(index, Event::ClientRequest(SimRequest(request)));
            }
        }
    }

    fn submit(&mut self) {
        while let Some(&(tick, request, target)) =
            self.scenario.submissions.get(self.next_submission)
        {
            if tick > self.now {
                break;
            }
            self.next_submission += 1;
            self.submitted.insert(request, self.now);
            self.trace
                .note(self.now, 5, &[request, u64::from(target.0)], || {
                    format!("client submits {request} to {}", target.0)
                });
            self.client_request(target, request);
        }
        let every = self.scenario.tail_every;
        let quiet_from = self.scenario.quiet_from();
        if every > 0 && self.now > quiet_from && (self.now - quiet_from).is_multiple_of(every) {
            let request = self.submitted.keys().next_back().map_or(1, |last| last + 1);
            let target = ReplicaId(self.clients.below(self.scenario.replica_count() as u64) as u32);
            self.submitted.insert(request, self.now);
            self.trace
                .note(self.now, 7, &[request, u64::from(target.0)], || {
                    format!("client keeps going: submits {request} to {}", target.0)
                });
            self.client_request(target, request);
        }
    }

    /// A client that has not seen its request in a replica's ledger after a while sends it to
    /// that replica again (the paper's retransmission; also how a driver re-submits what a
    /// transferred ledger lacks).
    fn retry(&mut self) {
        let every = self.scenario.client_retry_ticks;
        if !self.now.is_multiple_of(every) {
            return;
        }
        for index in 0..self.hosts.len() {
            if !self.hosts[index].up {
                continue;
            }
            let missing: Vec<u64> = self
                .submitted
                .iter()
                .filter(|(request, at)| {
                    **at + every <= self.now && !self.hosts[index].held.contains(request)
                })
                .map(|(request, _)| *request)
                .collect();
            for request in missing {
                self.handle(index, Event::ClientRequest(SimRequest(request)));
            }
        }
    }

    fn deliver(&mut self) {
        let limit = STORM_PER_PAIR * (self.hosts.len() as u64).pow(2);
        let mut deliveries = 0u64;
        while let Some(envelope) = self.network.next_due(self.now) {
            deliveries += 1;
            if deliveries > limit {
                self.checker.report(Violation::Storm {
                    tick: self.now,
                    deliveries,
                });
                return;
            }
            if !self.hosts[envelope.to].up {
                continue;
            }
            let message = Verified::unsigned(envelope.sender, envelope.message);
            self.handle(envelope.to, Event::Message(message));
        }
    }

    /// Hand `event` to instance `index`, run its actions in order, then hand back the driver's
    /// own reports.
    fn handle(&mut self, index: usize, event: Event<SimRequest>) {
        let mut local = VecDeque::from([event]);
        while let Some(event) = local.pop_front() {
            self.trace.event(self.now, index, &event);
            let actions = self.hosts[index].replica.handle(event);
            for action in actions {
                self.trace.action(self.now, index, &action);
                let view_step = matches!(
                    action,
                    Action::ViewChanged { .. }
                        | Action::Broadcast(Message::ViewChange(_) | Message::NewView(_))
                );
                self.act(index, action, &mut local);
                if self.crash_point_reached(index, view_step) {
                    // The rest of the actions, and the driver's reports, die with the process.
                    self.armed[index] = None;
                    self.hosts[index].crash();
                    self.stats.crashes += 1;
                    self.stats.crash_points += 1;
                    let id = self.hosts[index].id.0;
                    self.trace.note(self.now, 9, &[u64::from(id)], || {
                        format!("{id} crashes here")
                    });
                    return;
                }
            }
        }
    }

    fn act(
        &mut self,
        index: usize,
        action: Action<SimRequest>,
        local: &mut VecDeque<Event<SimRequest>>,
    ) {
        let id = self.hosts[index].id;
        match action {
            Action::Persist(record) => {
                self.checker.persisted(id, &record);
                self.hosts[index].persist(record);
            }
            Action::Send { to, message } => {
                self.checker.sent(id, &message);
                self.transmit(index, Some(to), message);
            }
            Action::Broadcast(message) => {
                self.checker.sent(id, &message);
                self.transmit(index, None, message);
            }
            Action::Execute { sequence, batch } => {
                let (digest, state) = self.hosts[index].execute(sequence, batch);
                self.checker.executed(id, sequence, digest, state);
                local.push_back(Event::Executed {
                    sequence,
                    state_digest: state,
                });
            }
            Action::CheckpointStable {
                sequence,
                state_digest,
                proof,
            } => {
                let stable = StableCheckpoint {
                    sequence,
                    state_digest,
                    proof,
                };
                self.hosts[index].checkpoint_stable(stable, self.scenario.prune);
            }
            Action::ViewChanged { .. } => {}
            Action::RequestStateTransfer {
                sequence,
                state_digest,
                peers,
            } => {
                self.hosts[index].wanted = Some(Wanted {
                    sequence,
                    state_digest,
                    peers,
                });
                if let Some(event) = self.try_transfer(index) {
                    local.push_back(event);
                }
            }
            Action::Committed { sequence, digest } => {
                self.checker.committed(id, sequence, digest);
            }
            // As the node's driver does: what the (transferred) ledger does not hold goes back.
            Action::Resubmit { requests } => {
                for request in requests {
                    if !self.hosts[index].held.contains(&request.0) {
                        local.push_back(Event::ClientRequest(request));
                    }
                }
            }
            Action::Diverged { sequence, .. } => {
                if self.checker.is_honest(id) {
                    self.checker.report(Violation::Diverged {
                        replica: id,
                        sequence,
                    });
                }
            }
        }
    }

    /// Put a signed message on the wire. An equivocating primary splits its pre-prepares: some
    /// recipients get the batch it logged, the others another batch for the same sequence.
    fn transmit(&mut self, index: usize, to: Option<ReplicaId>, message: Message<SimRequest>) {
        let mut recipients = self.network.recipients(index, to);
        let split = match (&message, self.hosts[index].behaviour) {
            (Message::PrePrepare(pre_prepare), Behaviour::Equivocator) if recipients.len() >= 2 => {
                faults::equivocation(pre_prepare)
            }
            _ => None,
        };
        match split {
            Some(other) => {
                self.stats.equivocations_sent += 1;
                self.byzantine.shuffle(&mut recipients);
                let half = recipients.len() / 2;
                let other = Message::PrePrepare(other);
                for (position, to) in recipients.into_iter().enumerate() {
                    let message = if position < half {
                        other.clone()
                    } else {
                        message.clone()
                    };
                    self.network.send(self.now, index, to, message);
                }
            }
            None => {
                for to in recipients {
                    self.network.send(self.now, index, to, message.clone());
                }
            }
        }
    }

    /// Fetch the wanted state from an honest peer that has it and can be reached now (the
    /// peers that vouched for it first). Returns the report for the replica.
    fn try_transfer(&mut self, index: usize) -> Option<Event<SimRequest>> {
        let wanted = self.hosts[index].wanted.clone()?;
        if self.hosts[index].applied >= wanted.sequence {
            self.hosts[index].wanted = None;
            return None;
        }
        let source = (0..self.hosts.len())
            .filter(|&other| {
                let host = &self.hosts[other];
                other != index
                    && host.up
                    && host.behaviour.is_honest()
                    && self.network.reachable(other, index)
                    && host.can_serve(wanted.sequence, wanted.state_digest)
            })
            .min_by_key(|&other| (!wanted.peers.contains(&self.hosts[other].id), other))?;
        let (source_host, host) = if source < index {
            let (left, right) = self.hosts.split_at_mut(index);
            (&left[source], &mut right[0])
        } else {
            let (left, right) = self.hosts.split_at_mut(source);
            (&right[0], &mut left[index])
        };
        let installed = host.install(source_host, wanted.sequence);
        host.wanted = None;
        let id = host.id;
        self.checker.installed(id, wanted.sequence, &installed);
        self.stats.state_transfers += 1;
        self.trace.note(
            self.now,
            6,
            &[index as u64, source as u64, wanted.sequence.0],
            || format!("#{index} copies state s{} from #{source}", wanted.sequence),
        );
        Some(Event::StateTransferred {
            sequence: wanted.sequence,
            state_digest: wanted.state_digest,
        })
    }

    fn try_transfer_now(&mut self, index: usize) {
        if let Some(event) = self.try_transfer(index) {
            self.handle(index, event);
        }
    }

    fn settle(&mut self) {
        for host in &self.hosts {
            if host.up {
                self.checker.settled(
                    host.id,
                    host.applied,
                    host.state(),
                    host.replica.last_executed(),
                );
            }
        }
    }

    /// The planned requests (not the trickle after `quiet_from`) `host`'s ledger lacks.
    fn missing(&self, host: &Host) -> Vec<u64> {
        self.scenario
            .submissions
            .iter()
            .map(|(_, request, _)| *request)
            .filter(|request| !host.held.contains(request))
            .collect()
    }

    fn all_served(&self) -> bool {
        self.next_submission >= self.scenario.submissions.len()
            && self.hosts.iter().all(|host| {
                !self.checker.is_honest(host.id)
                    || (host.held.len() >= self.scenario.submissions.len()
                        && self.missing(host).is_empty())
            })
    }

    fn report_liveness(&mut self) {
        let bound = self.scenario.liveness_bound;
        let mut failures = Vec::new();
        for host in &self.hosts {
            if !self.checker.is_honest(host.id) {
                continue;
            }
            let missing = self.missing(host);
            if let Some(first) = missing.first() {
                failures.push(Violation::Liveness {
                    replica: host.id,
                    missing: missing.len(),
                    first_missing: *first,
                    last_executed: host.applied,
                    view: host.replica.view(),
                    bound,
                });
            }
        }
        for failure in failures {
            self.checker.report(failure);
        }
    }

    pub fn outcome(&self) -> Outcome {
        let honest: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|host| self.checker.is_honest(host.id))
            .collect();
        let stats = RunStats {
            evidence: honest
                .iter()
                .map(|host| host.replica.evidence().len() as u64)
                .sum(),
            highest_view: honest
                .iter()
                .map(|host| host.replica.view().0)
                .max()
                .unwrap_or(0),
            highest_sequence: honest.iter().map(|host| host.applied.0).max().unwrap_or(0),
            requests: self.submitted.len() as u64,
            ..self.stats
        };
        let mut rejections = BTreeMap::new();
        for host in &honest {
            for (reason, count) in host.replica.rejections() {
                *rejections.entry(*reason).or_insert(0) += count;
            }
        }
        Outcome {
            profile: self.scenario.profile,
            replica_count: self.scenario.replica_count(),
            seed: self.scenario.seed,
            scenario: self.scenario.to_string(),
            fingerprint: self.trace.fingerprint(),
            trace_entries: self.trace.entries(),
            ticks: self.now,
            idle: self.scenario.check_liveness && self.scenario.tail_every == 0,
            no_report_after_restart: !self.scenario.report_after_restart,
            violations: self.checker.violations().to_vec(),
            stats,
            network: self.network.stats(),
            rejections,
            trace: self.trace.lines().to_vec(),
        }
    }
}

/// The batch digest the checker uses for a batch of request numbers (for hand-made histories).
pub fn digest_of(requests: &[u64]) -> weft_node::types::Hash {
    let batch: Vec<SimRequest> = requests.iter().copied().map(SimRequest).collect();
    batch_digest(&batch)
}
