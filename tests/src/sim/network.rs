//! The simulated network between replica instances: per-message loss, duplication, delay and
//! reordering drawn from the run's seed, static links (a Twins instance reaches only its side
//! of the network) and partitions that come and heal. Invariant: what is delivered, and in which
//! order, depends only on the seed and on what was sent (never on wall time or on unordered
//! iteration), and a message only crosses a link that is allowed when it is sent and open when
//! it arrives.

use std::collections::BTreeMap;

use weft_node::consensus::pbft::{Message, ReplicaId};

use super::rng::SimRng;

/// How the network treats messages while it is in a given mood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conditions {
    /// Out of 100 messages, how many are lost.
    pub drop_percent: u64,
    /// Out of 100 delivered messages, how many arrive twice.
    pub duplicate_percent: u64,
    /// Each message is delayed 0..=max_delay ticks (0: later in the same tick).
    pub max_delay: u64,
    /// Out of 100 messages, how many are held up to 4 × max_delay + 4 ticks instead.
    pub straggler_percent: u64,
}

impl Conditions {
    /// A healed network: nothing lost or duplicated, at most one tick of delay.
    pub const CALM: Conditions = Conditions {
        drop_percent: 0,
        duplicate_percent: 0,
        max_delay: 1,
        straggler_percent: 0,
    };
}

/// Who an instance may talk to, fixed for the run: a Twins instance is on one side, and every
/// other instance sees one side, the other, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// One of a Twins pair: reaches the instances that see its side and the Twins on its side.
    Side(Side),
    /// Not a twin: reaches every non-twin, and the Twins of the sides it sees.
    Sees { a: bool, b: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    A,
    B,
}

impl Reach {
    pub const EVERYONE: Reach = Reach::Sees { a: true, b: true };

    fn sees(self, side: Side) -> bool {
        match self {
            Reach::Side(own) => own == side,
            Reach::Sees { a, b } => match side {
                Side::A => a,
                Side::B => b,
            },
        }
    }

    /// Whether instances with these reaches are linked (symmetric).
    pub fn linked(self, other: Reach) -> bool {
        match (self, other) {
            (Reach::Side(side), other) | (other, Reach::Side(side)) => other.sees(side),
            (Reach::Sees { .. }, Reach::Sees { .. }) => true,
        }
    }
}

/// A message on its way from one instance to another.
#[derive(Clone, Debug)]
pub struct Envelope<R> {
    pub from: usize,
    pub to: usize,
    /// The replica id that signed it (the sender's).
    pub sender: ReplicaId,
    pub message: Message<R>,
}

/// What happened to the messages of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub cut_by_partition: u64,
    pub delivered: u64,
}

pub struct Network<R> {
    rng: SimRng,
    conditions: Conditions,
    /// The replica id of each instance.
    ids: Vec<ReplicaId>,
    reach: Vec<Reach>,
    /// While a partition lasts: the group of each instance; only same-group messages arrive.
    partition: Option<Vec<u8>>,
    /// In flight, by (delivery tick, random rank, send order): the random rank reorders
    /// messages due in the same tick.
    in_flight: BTreeMap<(u64, u64, u64), Envelope<R>>,
    serial: u64,
    stats: NetworkStats,
}

impl<R: Clone> Network<R> {
    pub fn new(rng: SimRng, ids: Vec<ReplicaId>, reach: Vec<Reach>) -> Network<R> {
        assert_eq!(ids.len(), reach.len(), "one reach per instance");
        Network {
            rng,
            conditions: Conditions::CALM,
            ids,
            reach,
            partition: None,
            in_flight: BTreeMap::new(),
            serial: 0,
            stats: NetworkStats::default(),
        }
    }

    pub fn set_conditions(&mut self, conditions: Conditions) {
        self.conditions = conditions;
    }

    /// Split the instances into groups (one group number per instance) until [`Network::heal`].
    pub fn partition(&mut self, groups: Vec<u8>) {
        assert_eq!(groups.len(), self.ids.len(), "one group per instance");
        self.partition = Some(groups);
    }

    pub fn heal(&mut self) {
        self.partition = None;
    }

    pub fn stats(&self) -> NetworkStats {
        self.stats
    }

    /// Whether a message from instance `from` to instance `to` could arrive now.
    pub fn reachable(&self, from: usize, to: usize) -> bool {
        self.reach[from].linked(self.reach[to])
            && self
                .partition
                .as_ref()
                .is_none_or(|groups| groups[from] == groups[to])
    }

    /// The instances a message from `from` to replica `to` (or, for `None`, to every other
    /// replica) goes to, in instance order: every instance of that id linked to the sender.
    pub fn recipients(&self, from: usize, to: Option<ReplicaId>) -> Vec<usize> {
        let sender = self.ids[from];
        (0..self.ids.len())
            .filter(|&index| match to {
                Some(id) => self.ids[index] == id,
                None => self.ids[index] != sender,
            })
            .filter(|&index| index != from && self.reach[from].linked(self.reach[index]))
            .collect()
    }

    /// Put `message` from instance `from` on the wire to instance `to`, subject to the
    /// current conditions.
    pub fn send(&mut self, now: u64, from: usize, to: usize, message: Message<R>) {
        self.stats.sent += 1;
        if self.rng.chance(self.conditions.drop_percent) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.conditions.duplicate_percent) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.rng.chance(self.conditions.straggler_percent) {
                self.rng.between(0, 4 * self.conditions.max_delay + 4)
            } else {
                self.rng.between(0, self.conditions.max_delay)
            };
            let rank = self.rng.next_u64();
            self.serial += 1;
            let envelope = Envelope {
                from,
                to,
                sender: self.ids[from],
                message: message.clone(),
            };
            self.in_flight
                .insert((now + delay, rank, self.serial), envelope);
        }
    }

    /// The next message due at or before `now`, if any; one cut by a partition is lost.
    pub fn next_due(&mut self, now: u64) -> Option<Envelope<R>> {
        loop {
            let entry = self.in_flight.first_entry()?;
            if entry.key().0 > now {
                return None;
            }
            let envelope = entry.remove();
            if self.reachable(envelope.from, envelope.to) {
                self.stats.delivered += 1;
                return Some(envelope);
            }
            self.stats.cut_by_partition += 1;
        }
    }
}
