//! What goes wrong in one run, drawn from its seed: the faulty replicas and how they lie (an
//! equivocating primary, Twins that share one key, a mute replica), the network's mood while
//! faults last, crashes with restarts from disk, and partitions that heal. Invariant: a plan
//! for an honest-majority profile has at most f faulty replica ids, restarts every crashed
//! replica and heals every partition by `heal_at`, after which the network is calm; only the
//! `Overwhelmed` profile breaks the f bound, on purpose.

use std::collections::BTreeSet;
use std::fmt;

use weft_node::consensus::pbft::{Config, PrePrepare, ReplicaId, Request, batch_digest};

use super::network::{Conditions, Reach, Side};
use super::rng::SimRng;

/// Which family of runs a seed is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Profile {
    /// Every fault at once, at most f faulty replicas: drop, duplicate, delay, reorder,
    /// partitions, crashes and restarts, equivocating primaries, Twins, mute replicas.
    Mixed,
    /// Few faults, for large networks: light loss, one crash, the first primary and at most two
    /// more replicas faulty.
    Light,
    /// The negative control: f+1 Twins pairs (the first primary among them) with the honest
    /// replicas split between their two sides; agreement must break.
    Overwhelmed,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Mixed => "mixed",
            Profile::Light => "light",
            Profile::Overwhelmed => "overwhelmed",
        }
    }
}

/// How a replica instance behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    /// Runs the protocol, but as primary sends one batch to some replicas and another batch
    /// for the same (view, sequence) to the others.
    Equivocator,
    /// One of two instances of one replica id (one key), each reaching its own side.
    Twin(Side),
    /// Never runs.
    Mute,
}

impl Behaviour {
    pub fn is_honest(self) -> bool {
        self == Behaviour::Honest
    }
}

/// One replica instance of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: ReplicaId,
    pub behaviour: Behaviour,
    pub reach: Reach,
}

/// Where an armed crash strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Right after the replica's next view-change step: sending a view change or a new view,
    /// or entering a view.
    ViewStep,
    /// After this many more actions, mid-way through one event's actions: records persisted
    /// for messages that never leave.
    Actions(u32),
}

/// A timed fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The replica's process stops: its memory and in-flight work are lost, its disk is not.
    Crash(ReplicaId),
    /// The replica's process will stop at the given point (unless restarted first).
    ArmCrash(ReplicaId, CrashPoint),
    /// A new process starts from what the crashed one persisted.
    Restart(ReplicaId),
    /// One group number per instance; only same-group messages arrive.
    Partition(Vec<u8>),
    /// The partition heals; from `heal_at` on, the network is calm too.
    Heal,
}

/// What the driver may forget of the persisted records at a stable checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prune {
    KeepAll,
    /// What the core itself forgets: ordering and checkpoint records at or below the stable
    /// checkpoint, view-change and new-view records of views below the latest.
    LikeCore,
}

/// One run's plan, fully determined by (profile, replica count, seed).
#[derive(Clone, Debug)]
pub struct Scenario {
    pub profile: Profile,
    pub seed: u64,
    pub config: Config,
    pub instances: Vec<Instance>,
    /// The network while faults last (from tick 1 to `heal_at`).
    pub chaos: Conditions,
    pub heal_at: u64,
    /// Faults by tick, in order.
    pub timeline: Vec<(u64, Fault)>,
    /// Client submissions by tick, in order: (tick, request, replica id it is sent to).
    pub submissions: Vec<(u64, u64, ReplicaId)>,
    /// Clients re-send, every this many ticks, each request a replica's ledger lacks.
    pub client_retry_ticks: u64,
    /// After `quiet_from`, clients keep submitting one new request every this many ticks
    /// (0: they go idle). The core only catches a lagging replica up at the next checkpoint
    /// (see the module docs of `sim`), so an idle cluster can leave one behind for good.
    pub tail_every: u64,
    /// Once healed and every planned request submitted (`quiet_from`), every honest replica
    /// must have executed every planned request within this many ticks.
    pub liveness_bound: u64,
    pub check_liveness: bool,
    /// After a restart the driver reports the state of every checkpoint sequence it executed
    /// above its stable checkpoint (`Event::Executed`). The core signs checkpoints only when
    /// told of an execution, and `PersistedState` carries no state digest: without this, a
    /// crash between executing (or installing) a checkpoint's state and the report leaves that
    /// checkpoint unsigned for good, and with f faulty replicas it never becomes stable (the
    /// window fills and the whole cluster stops; e.g. mixed, n = 4, seed 1313).
    pub report_after_restart: bool,
    /// The run stops here at the latest.
    pub end: u64,
    pub prune: Prune,
}

/// The parameters every simulated replica runs with: small, so that batching, checkpoints,
/// watermarks, timeouts and state transfer all happen within a few dozen ticks.
pub fn sim_config(replica_count: usize) -> Config {
    Config {
        replica_count,
        batch_size: 3,
        batch_timeout_ticks: 1,
        checkpoint_period: 4,
        window: 8,
        request_timeout_ticks: 12,
        view_change_timeout_ticks: 8,
        max_view_change_timeout_ticks: 64,
        view_change_resend_ticks: 4,
        state_transfer_grace_ticks: 4,
        state_transfer_retry_ticks: 20,
        max_pending_requests: 256,
        future_messages_per_replica: 256,
        max_evidence: 16,
        idle_checkpoint_ticks: 6,
        retransmit_ticks: 6,
    }
}

impl Scenario {
    pub fn generate(profile: Profile, replica_count: usize, seed: u64) -> Scenario {
        let mut rng = SimRng::stream(seed, profile.name());
        match profile {
            Profile::Mixed => mixed(&mut rng, replica_count, seed),
            Profile::Light => light(&mut rng, replica_count, seed),
            Profile::Overwhelmed => overwhelmed(&mut rng, replica_count, seed),
        }
    }

    pub fn replica_count(&self) -> usize {
        self.config.replica_count
    }

    /// The replica ids with a faulty instance (an id with one faulty instance is faulty).
    pub fn faulty(&self) -> BTreeSet<ReplicaId> {
        self.instances
            .iter()
            .filter(|instance| !instance.behaviour.is_honest())
            .map(|instance| instance.id)
            .collect()
    }

    pub fn honest(&self) -> BTreeSet<ReplicaId> {
        let faulty = self.faulty();
        self.config
            .replicas()
            .filter(|id| !faulty.contains(id))
            .collect()
    }

    pub fn has_twins(&self) -> bool {
        self.instances
            .iter()
            .any(|instance| matches!(instance.behaviour, Behaviour::Twin(_)))
    }

    /// The tick after which every fault has stopped and every request has been submitted.
    pub fn quiet_from(&self) -> u64 {
        let last_submission = self.submissions.last().map_or(0, |(tick, _, _)| *tick);
        self.heal_at.max(last_submission)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faulty: Vec<String> = self
            .instances
            .iter()
            .filter(|instance| !instance.behaviour.is_honest())
            .map(|instance| format!("{}:{:?}", instance.id.0, instance.behaviour))
            .collect();
        let crashes = self
            .timeline
            .iter()
            .filter(|(_, fault)| matches!(fault, Fault::Crash(_) | Fault::ArmCrash(..)))
            .count();
        let partitions = self
            .timeline
            .iter()
            .filter(|(_, fault)| matches!(fault, Fault::Partition(_)))
            .count();
        write!(
            f,
            "{} n={} seed={}: faulty [{}], chaos {:?} until tick {}, {} crashes, {} partitions, \
             {} requests then one every {} ticks, prune {:?}",
            self.profile.name(),
            self.replica_count(),
            self.seed,
            faulty.join(" "),
            self.chaos,
            self.heal_at,
            crashes,
            partitions,
            self.submissions.len(),
            self.tail_every,
            self.prune
        )
    }
}

/// The batch an equivocating primary sends to some replicas instead of `batch`: the same
/// requests in reverse order, or the null request for a single one (both valid, both with a
/// digest different from the original's). None for the null request itself.
pub fn equivocation<R: Request>(pre_prepare: &PrePrepare<R>) -> Option<PrePrepare<R>> {
    let batch: Vec<R> = match pre_prepare.batch.len() {
        0 => return None,
        1 => Vec::new(),
        _ => pre_prepare.batch.iter().rev().cloned().collect(),
    };
    Some(PrePrepare {
        view: pre_prepare.view,
        sequence: pre_prepare.sequence,
        digest: batch_digest(&batch),
        batch,
    })
}

fn choose<T: Copy>(rng: &mut SimRng, options: &[T]) -> T {
    options[rng.index(options.len())]
}

/// `count` distinct replica ids; the first primary (replica 0) among them half of the time.
fn pick_faulty(rng: &mut SimRng, replica_count: usize, count: usize) -> Vec<ReplicaId> {
    let mut ids: Vec<ReplicaId> = (0..replica_count as u32).map(ReplicaId).collect();
    rng.shuffle(&mut ids);
    if count > 0 && rng.chance(50) {
        let zero = ids
            .iter()
            .position(|id| id.0 == 0)
            .expect("replica 0 is a member");
        ids.swap(0, zero);
    }
    ids.truncate(count);
    ids.sort();
    ids
}

/// Instances for the given faulty ids and behaviours; honest replicas see a random side of
/// the Twins (each side seen by at least one honest replica) when there are Twins.
fn instances(
    rng: &mut SimRng,
    replica_count: usize,
    faulty: &[(ReplicaId, Behaviour)],
) -> Vec<Instance> {
    let twins = faulty
        .iter()
        .any(|(_, behaviour)| matches!(behaviour, Behaviour::Twin(_)));
    let mut instances = Vec::new();
    let mut honest = Vec::new();
    for id in (0..replica_count as u32).map(ReplicaId) {
        match faulty.iter().find(|(faulty, _)| *faulty == id) {
            Some((_, Behaviour::Twin(_))) => {
                for side in [Side::A, Side::B] {
                    instances.push(Instance {
                        id,
                        behaviour: Behaviour::Twin(side),
                        reach: Reach::Side(side),
                    });
                }
            }
            Some((_, behaviour)) => instances.push(Instance {
                id,
                behaviour: *behaviour,
                reach: Reach::EVERYONE,
            }),
            None => {
                honest.push(instances.len());
                instances.push(Instance {
                    id,
                    behaviour: Behaviour::Honest,
                    reach: Reach::EVERYONE,
                });
            }
        }
    }
    if twins && honest.len() >= 2 {
        for &index in &honest {
            instances[index].reach = match rng.below(3) {
                0 => Reach::Sees { a: true, b: false },
                1 => Reach::Sees { a: false, b: true },
                _ => Reach::EVERYONE,
            };
        }
        // Each side must reach an honest replica, or the Twins would be a mute replica.
        let first = honest[rng.index(honest.len())];
        let second =
            honest[(honest.iter().position(|&i| i == first).unwrap_or(0) + 1) % honest.len()];
        if let Reach::Sees { b, .. } = instances[first].reach {
            instances[first].reach = Reach::Sees { a: true, b };
        }
        if let Reach::Sees { a, .. } = instances[second].reach {
            instances[second].reach = Reach::Sees { a, b: true };
        }
    }
    instances
}

/// Crashes (each followed by a restart by `heal_at`) of honest replicas, the first primary
/// among the victims some of the time; half of them strike at a chosen point of the protocol
/// rather than between two events.
fn crashes(
    rng: &mut SimRng,
    honest: &[ReplicaId],
    count: u64,
    heal_at: u64,
    timeline: &mut Vec<(u64, Fault)>,
) {
    let mut free_from = vec![1u64; honest.len()];
    for _ in 0..count {
        let victim = if honest.first().is_some_and(|id| id.0 == 0) && rng.chance(30) {
            0
        } else {
            rng.index(honest.len())
        };
        let earliest = free_from[victim];
        if earliest + 1 >= heal_at {
            continue;
        }
        let crash = rng.between(earliest, heal_at - 2);
        let restart = rng.between(crash + 1, (crash + 30).min(heal_at));
        free_from[victim] = restart + 1;
        let fault = match rng.below(4) {
            0 => Fault::ArmCrash(honest[victim], CrashPoint::ViewStep),
            1 => Fault::ArmCrash(
                honest[victim],
                CrashPoint::Actions(rng.between(1, 6) as u32),
            ),
            _ => Fault::Crash(honest[victim]),
        };
        timeline.push((crash, fault));
        timeline.push((restart, Fault::Restart(honest[victim])));
    }
}

/// Partitions one after another, each healed before the next and by `heal_at`.
fn partitions(
    rng: &mut SimRng,
    instance_count: usize,
    count: u64,
    heal_at: u64,
    timeline: &mut Vec<(u64, Fault)>,
) {
    let mut start = 1;
    for _ in 0..count {
        if start + 2 >= heal_at {
            break;
        }
        let from = rng.between(start, heal_at - 2);
        let until = rng.between(from + 1, (from + 40).min(heal_at - 1));
        let groups: Vec<u8> = (0..instance_count).map(|_| rng.below(2) as u8).collect();
        timeline.push((from, Fault::Partition(groups)));
        timeline.push((until, Fault::Heal));
        start = until + 1;
    }
}

fn submissions(
    rng: &mut SimRng,
    count: u64,
    last_tick: u64,
    targets: &[ReplicaId],
) -> Vec<(u64, u64, ReplicaId)> {
    let mut ticks: Vec<u64> = (0..count).map(|_| rng.between(1, last_tick)).collect();
    ticks.sort_unstable();
    ticks
        .into_iter()
        .zip(1..)
        .map(|(tick, request)| (tick, request, targets[rng.index(targets.len())]))
        .collect()
}

fn finish(mut scenario: Scenario) -> Scenario {
    scenario.timeline.push((scenario.heal_at, Fault::Heal));
    // Stable: a heal scheduled at the same tick as a partition's end keeps its place.
    scenario.timeline.sort_by_key(|(tick, _)| *tick);
    scenario.end = scenario.quiet_from() + scenario.liveness_bound;
    scenario
}

fn mixed(rng: &mut SimRng, replica_count: usize, seed: u64) -> Scenario {
    let config = sim_config(replica_count);
    let f = config.faults();
    let faulty_count = if rng.chance(15) {
        0
    } else {
        rng.between(1, f as u64) as usize
    };
    let faulty: Vec<(ReplicaId, Behaviour)> = pick_faulty(rng, replica_count, faulty_count)
        .into_iter()
        .map(|id| {
            let behaviour = match rng.below(5) {
                0 | 1 => Behaviour::Equivocator,
                2 | 3 => Behaviour::Twin(Side::A),
                _ => Behaviour::Mute,
            };
            (id, behaviour)
        })
        .collect();
    let instances = instances(rng, replica_count, &faulty);
    let chaos = Conditions {
        drop_percent: choose(rng, &[0, 2, 5, 10, 20, 30]),
        duplicate_percent: choose(rng, &[0, 0, 3, 10]),
        max_delay: rng.between(0, 3),
        straggler_percent: choose(rng, &[0, 2, 5]),
    };
    let heal_at = rng.between(40, 100);
    let honest: Vec<ReplicaId> = (0..replica_count as u32)
        .map(ReplicaId)
        .filter(|id| faulty.iter().all(|(faulty, _)| faulty != id))
        .collect();
    let mut timeline = Vec::new();
    let crash_count = rng.between(0, if replica_count >= 7 { 4 } else { 3 });
    crashes(rng, &honest, crash_count, heal_at, &mut timeline);
    let partition_count = rng.between(0, 2);
    partitions(
        rng,
        instances.len(),
        partition_count,
        heal_at,
        &mut timeline,
    );
    let all: Vec<ReplicaId> = (0..replica_count as u32).map(ReplicaId).collect();
    let request_count = rng.between(8, 30);
    let submissions = submissions(rng, request_count, heal_at + 10, &all);
    let prune = if rng.chance(50) {
        Prune::KeepAll
    } else {
        Prune::LikeCore
    };
    finish(Scenario {
        profile: Profile::Mixed,
        seed,
        config,
        instances,
        chaos,
        heal_at,
        timeline,
        submissions,
        client_retry_ticks: 8,
        tail_every: 3,
        liveness_bound: 300,
        check_liveness: true,
        report_after_restart: true,
        end: 0,
        prune,
    })
}

fn light(rng: &mut SimRng, replica_count: usize, seed: u64) -> Scenario {
    let config = Config {
        batch_size: 6,
        ..sim_config(replica_count)
    };
    // The first primary is faulty, in turn an equivocator, Twins and mute as the seed goes;
    // up to two more faulty replicas behave at random.
    let first = match seed % 3 {
        0 => Behaviour::Mute,
        1 => Behaviour::Equivocator,
        _ => Behaviour::Twin(Side::A),
    };
    let more = rng.between(0, 2) as usize;
    let mut faulty = vec![(ReplicaId(0), first)];
    let mut others: Vec<ReplicaId> = (1..replica_count as u32).map(ReplicaId).collect();
    rng.shuffle(&mut others);
    for id in others.into_iter().take(more.min(config.faults() - 1)) {
        let behaviour = match rng.below(3) {
            0 => Behaviour::Equivocator,
            1 => Behaviour::Twin(Side::A),
            _ => Behaviour::Mute,
        };
        faulty.push((id, behaviour));
    }
    faulty.sort_by_key(|(id, _)| *id);
    let instances = instances(rng, replica_count, &faulty);
    let chaos = Conditions {
        drop_percent: 2,
        duplicate_percent: 1,
        max_delay: 1,
        straggler_percent: 1,
    };
    let heal_at = rng.between(25, 40);
    let honest: Vec<ReplicaId> = (0..replica_count as u32)
        .map(ReplicaId)
        .filter(|id| faulty.iter().all(|(faulty, _)| faulty != id))
        .collect();
    let mut timeline = Vec::new();
    crashes(rng, &honest, 1, heal_at, &mut timeline);
    let all: Vec<ReplicaId> = (0..replica_count as u32).map(ReplicaId).collect();
    let submissions = submissions(rng, 16, heal_at + 5, &all);
    finish(Scenario {
        profile: Profile::Light,
        seed,
        config,
        instances,
        chaos,
        heal_at,
        timeline,
        submissions,
        client_retry_ticks: 8,
        tail_every: 3,
        liveness_bound: 300,
        check_liveness: true,
        report_after_restart: true,
        end: 0,
        prune: Prune::LikeCore,
    })
}

fn overwhelmed(rng: &mut SimRng, replica_count: usize, seed: u64) -> Scenario {
    let config = sim_config(replica_count);
    let twins = config.faults() + 1;
    let mut instances = Vec::new();
    let mut honest: Vec<ReplicaId> = Vec::new();
    for id in (0..replica_count as u32).map(ReplicaId) {
        if (id.0 as usize) < twins {
            for side in [Side::A, Side::B] {
                instances.push(Instance {
                    id,
                    behaviour: Behaviour::Twin(side),
                    reach: Reach::Side(side),
                });
            }
        } else {
            honest.push(id);
        }
    }
    // Half of the honest replicas see side A only, the other half side B only: each side is
    // f+1 twins plus enough honest replicas for a quorum.
    rng.shuffle(&mut honest);
    let half = honest.len() / 2;
    for (position, id) in honest.iter().enumerate() {
        instances.push(Instance {
            id: *id,
            behaviour: Behaviour::Honest,
            reach: Reach::Sees {
                a: position < half,
                b: position >= half,
            },
        });
    }
    instances.sort_by_key(|instance| instance.id);
    let submissions = submissions(rng, 12, 20, &honest);
    finish(Scenario {
        profile: Profile::Overwhelmed,
        seed,
        config,
        instances,
        chaos: Conditions::CALM,
        heal_at: 1,
        timeline: Vec::new(),
        submissions,
        client_retry_ticks: 8,
        tail_every: 0,
        liveness_bound: 60,
        check_liveness: false,
        report_after_restart: true,
        end: 0,
        prune: Prune::KeepAll,
    })
}
