//! The management loop: senses each node (its container's state, its health, its metrics)
//! and effects, within the blueprint's policies: the restarter starts a dead node again (it
//! catches up from the others), the replacer gives a node that keeps failing a fresh
//! container and an empty volume (it catches up by state transfer), the autoscaler keeps
//! each location's non-validating peers between the blueprint's bounds. Every action is
//! logged and recorded where `weft cluster status` shows it.
//!
//! The decisions are pure functions ([`decide`], [`desired_peers`]); [`Manager`] is the thin
//! shell that reads the engines and acts.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::blueprint::{Policy, ScalingMetric};
use crate::cluster::{Cluster, ClusterError};
use crate::health::{Health, health, http_get, metric};
use crate::plan::NodePlan;

/// Failures in a row the restarter tries before the replacer takes over, when the
/// blueprint does not say.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// What the sensors saw of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Its container runs and it answers (ready or starting).
    Running,
    /// Its container runs but its committer stopped (`/healthz` fails).
    Failed,
    /// Its container stopped or is missing.
    Stopped,
}

/// What to do about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Start its container again (made anew if missing), keeping its ledger.
    Restart,
    /// A fresh container and an empty volume.
    Replace,
}

/// The policies as the loop uses them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policies {
    /// Restarter: failures in a row it tries.
    pub restart_attempts: Option<u32>,
    pub replacer: bool,
    pub autoscaler: Option<Autoscaler>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Autoscaler {
    pub metric: ScalingMetric,
    pub target: f64,
    pub min: usize,
    pub max: usize,
}

impl std::fmt::Display for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(attempts) = self.restart_attempts {
            parts.push(format!("restarter ({attempts} tries)"));
        }
        if self.replacer {
            parts.push("replacer".to_string());
        }
        if let Some(scaler) = &self.autoscaler {
            parts.push(format!(
                "autoscaler ({:?} target {}, {} to {} peers per location)",
                scaler.metric, scaler.target, scaler.min, scaler.max
            ));
        }
        if parts.is_empty() {
            f.write_str("no policies: watching only")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

impl Policies {
    pub fn of(policies: &[Policy]) -> Policies {
        let mut out = Policies {
            restart_attempts: None,
            replacer: false,
            autoscaler: None,
        };
        for policy in policies {
            match policy {
                Policy::Restarter { attempts } => out.restart_attempts = Some(*attempts),
                Policy::Replacer => out.replacer = true,
                Policy::Autoscaler {
                    metric,
                    target,
                    min,
                    max,
                } => {
                    out.autoscaler = Some(Autoscaler {
                        metric: *metric,
                        target: *target,
                        min: *min,
                        max: *max,
                    })
                }
            }
        }
        out
    }
}

/// What to do about a node seen `observed` after `failures` failed tries in a row.
pub fn decide(observed: Observed, failures: u32, policies: &Policies) -> Action {
    if observed == Observed::Running {
        return Action::Nothing;
    }
    let attempts = policies.restart_attempts.unwrap_or(DEFAULT_ATTEMPTS);
    match (policies.restart_attempts, policies.replacer) {
        // A committer that stopped does not heal by a restart alone when the replacer may act.
        (_, true) if observed == Observed::Failed && failures >= 1 => Action::Replace,
        (_, true) if failures >= attempts => Action::Replace,
        (Some(_), _) => Action::Restart,
        (None, true) => Action::Replace,
        (None, false) => Action::Nothing,
    }
}

/// Whether the replacer may wipe a node with `role` while `running` of the `validators`
/// genesis validators run: a peer while a PBFT quorum of validators runs (it catches up from
/// them); a validator only while every other one runs, so that at most one validator has
/// forgotten what it signed (it counts as one of the f faults until it has caught up).
pub fn replace_allowed(role: weft_proto::Role, running: usize, validators: usize) -> bool {
    let faults = validators.saturating_sub(1) / 3;
    let quorum = (validators + faults + 2) / 2;
    match role {
        weft_proto::Role::Validator => running + 1 >= validators,
        _ => running >= quorum,
    }
}

/// The non-validating peers a location should run for `load` (its peers' committed tx/s
/// together, or their p99 commit latency in ms), starting from `current`: enough that each
/// carries at most the target, never fewer than `min` nor more than `max`, and for latency
/// one more while it is above target, one fewer while it is under half.
pub fn desired_peers(current: usize, load: f64, scaler: &Autoscaler) -> usize {
    let wanted = match scaler.metric {
        ScalingMetric::TxPerSecond => {
            if scaler.target <= 0.0 {
                current
            } else {
                (load / scaler.target).ceil() as usize
            }
        }
        ScalingMetric::LatencyMs => {
            if load > scaler.target {
                current + 1
            } else if load < scaler.target / 2.0 {
                current.saturating_sub(1)
            } else {
                current
            }
        }
    };
    wanted.clamp(scaler.min, scaler.max)
}

/// The loop's memory between ticks.
pub struct Manager {
    pub policies: Policies,
    /// Failed tries in a row per node, and when the last one was made.
    failures: BTreeMap<String, (u32, Instant)>,
    /// Per location, the last reading of its peers' counters.
    last_load: BTreeMap<String, LoadReading>,
    /// Per location, recent desired counts: the autoscaler acts when they agree.
    votes: BTreeMap<String, VecDeque<usize>>,
}

/// One reading of a location's peers: when, transactions they forwarded, and the commit
/// latency histogram's cumulative buckets `(upper bound in s, count)`.
type LoadReading = (Instant, f64, Vec<(f64, f64)>);

/// How long a node must keep running after a restart before its failures are forgotten.
const RECOVERED_AFTER: Duration = Duration::from_secs(60);

/// Ticks of agreeing autoscaler readings before it acts.
const AUTOSCALER_VOTES: usize = 3;

impl Manager {
    pub fn new(cluster: &Cluster) -> Manager {
        Manager {
            policies: Policies::of(&cluster.blueprint.policies),
            failures: BTreeMap::new(),
            last_load: BTreeMap::new(),
            votes: BTreeMap::new(),
        }
    }

    /// One round: sense every node, act where a policy says so. Returns the actions taken.
    /// A location whose engine does not answer is reported and skipped; the others are
    /// still looked after.
    pub async fn tick(
        &mut self,
        cluster: &mut Cluster,
        image: &str,
    ) -> Result<Vec<String>, ClusterError> {
        // `scale` (or a user) may have changed the peer counts since the last round.
        cluster.reload()?;
        let mut taken = Vec::new();
        let plan = cluster.plan.clone();
        let here: Vec<String> = cluster.run_here().map(|l| l.name.clone()).collect();
        // Sense everything first: the replacer acts only while the others hold a quorum.
        let mut sensed = Vec::new();
        for location in plan.locations.iter().filter(|l| here.contains(&l.name)) {
            let sensed_location = async {
                let site = cluster.site(location, Some(image.to_string())).await?;
                let states = site.states().await?;
                let mut observed = Vec::new();
                for node in &location.nodes {
                    let running = states.iter().any(|c| c.node == node.name && c.running);
                    observed.push(if !running {
                        Observed::Stopped
                    } else {
                        match node.operations.host.as_deref() {
                            Some(address) if health(address).await == Health::Failed => {
                                Observed::Failed
                            }
                            _ => Observed::Running,
                        }
                    });
                }
                Ok::<_, ClusterError>((site, observed))
            };
            match sensed_location.await {
                Ok((site, observed)) => sensed.push((location, site, observed)),
                Err(e) => {
                    let text = format!("cannot look after {}: {e}", location.name);
                    tracing::warn!(location = %location.name, error = %e, "cluster management");
                    taken.push(text);
                }
            }
        }
        let validators_running = sensed
            .iter()
            .flat_map(|(location, _, observed)| location.nodes.iter().zip(observed))
            .filter(|(n, o)| n.role == weft_proto::Role::Validator && **o == Observed::Running)
            .count();
        let validators = plan.genesis.validators.len();
        for (location, site, observed) in &sensed {
            for (node, observed) in location.nodes.iter().zip(observed.iter().copied()) {
                let (failures, last_try) = self
                    .failures
                    .get(&node.name)
                    .copied()
                    .unwrap_or((0, Instant::now()));
                let mut action = decide(observed, failures, &self.policies);
                // A node that keeps running for a while after a try has recovered; one that
                // dies again soon after counts as failing in a row.
                if observed == Observed::Running && last_try.elapsed() > RECOVERED_AFTER {
                    self.failures.remove(&node.name);
                }
                if action == Action::Replace
                    && !replace_allowed(node.role, validators_running, validators)
                {
                    // Wiping a ledger is for one failing node among healthy ones, never for an
                    // outage: restart it instead (when the restarter may) and wait.
                    action = if self.policies.restart_attempts.is_some() {
                        Action::Restart
                    } else {
                        Action::Nothing
                    };
                }
                if action == Action::Nothing {
                    continue;
                }
                self.failures
                    .insert(node.name.clone(), (failures + 1, Instant::now()));
                let text = match action {
                    Action::Restart => {
                        if observed == Observed::Failed {
                            // Running but its committer stopped: restart the process.
                            site.kill(node).await;
                        }
                        site.restart(node, &cluster.node_files(node)?).await?;
                        format!(
                            "restarter: {} {} was {}; started again (try {})",
                            location.name,
                            node.name,
                            describe(observed),
                            failures + 1
                        )
                    }
                    Action::Replace => {
                        site.remove_node(node).await?;
                        site.ensure_node(node, &cluster.node_files(node)?).await?;
                        format!(
                            "replacer: {} {} was {} after {failures} tries; replaced by a fresh {} with an empty ledger",
                            location.name,
                            node.name,
                            describe(observed),
                            match location.kind {
                                crate::LocationKind::Docker => "container and volume",
                                _ => "process and data directory",
                            }
                        )
                    }
                    Action::Nothing => continue,
                };
                tracing::info!(action = %text, "cluster management");
                cluster.record(&text);
                taken.push(text);
                if action == Action::Replace {
                    // The fresh node has no chaincode packages: install them on it.
                    cluster.install_chaincode_on(node).await?;
                }
            }
            if let Some(scaler) = self.policies.autoscaler
                && let Some(text) = self.autoscale(cluster, &location.name, &scaler).await
            {
                let peers = text.1;
                cluster.record(&text.0);
                tracing::info!(action = %text.0, "cluster management");
                taken.push(text.0);
                cluster
                    .scale(&location.name, peers, Some(image), &mut |_| {})
                    .await?;
            }
        }
        Ok(taken)
    }

    /// The autoscaler's reading of one location: the action text and the new peer count when
    /// it should act.
    async fn autoscale(
        &mut self,
        cluster: &Cluster,
        location: &str,
        scaler: &Autoscaler,
    ) -> Option<(String, usize)> {
        let planned = cluster.plan.locations.iter().find(|l| l.name == location)?;
        let peers: Vec<&NodePlan> = planned
            .nodes
            .iter()
            .filter(|n| n.role == weft_proto::Role::Peer)
            .collect();
        let mut committed = 0.0;
        let mut buckets: BTreeMap<String, f64> = BTreeMap::new();
        for peer in &peers {
            let address = peer.operations.host.as_deref()?;
            let (_, text) = http_get(address, "/metrics").await.ok()?;
            committed += metric(&text, "weft_peer_forwarded_total");
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("weft_commit_latency_seconds_bucket{le=\"")
                    && let Some((bound, value)) = rest.split_once("\"} ")
                {
                    *buckets.entry(bound.to_string()).or_default() +=
                        value.parse::<f64>().unwrap_or(0.0);
                }
            }
        }
        let buckets = by_bound(buckets);
        let now = Instant::now();
        let previous = self
            .last_load
            .insert(location.to_string(), (now, committed, buckets.clone()));
        let (then, before, before_buckets) = previous?;
        let seconds = now.duration_since(then).as_secs_f64().max(0.001);
        let load = match scaler.metric {
            ScalingMetric::TxPerSecond => (committed - before).max(0.0) / seconds,
            ScalingMetric::LatencyMs => p99_ms(&buckets, &before_buckets)?,
        };
        let desired = desired_peers(peers.len(), load, scaler);
        let votes = self.votes.entry(location.to_string()).or_default();
        votes.push_back(desired);
        while votes.len() > AUTOSCALER_VOTES {
            votes.pop_front();
        }
        if desired == peers.len()
            || votes.len() < AUTOSCALER_VOTES
            || votes.iter().any(|v| *v != desired)
        {
            return None;
        }
        votes.clear();
        Some((
            format!(
                "autoscaler: {location} {} peers -> {desired} ({} {load:.1}, target {})",
                peers.len(),
                match scaler.metric {
                    ScalingMetric::TxPerSecond => "tx/s",
                    ScalingMetric::LatencyMs => "p99 ms",
                },
                scaler.target
            ),
            desired,
        ))
    }

    /// Runs ticks every `interval` until `stop` completes.
    pub async fn run(
        &mut self,
        cluster: &mut Cluster,
        image: &str,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
        report: &mut dyn FnMut(&str),
    ) {
        tokio::pin!(stop);
        loop {
            match self.tick(cluster, image).await {
                Ok(actions) => actions.iter().for_each(|a| report(a)),
                Err(e) => report(&format!("management round failed: {e}; trying again")),
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// Histogram buckets read by their `le` label, as `(upper bound in s, count)` in increasing
/// order of bound: the labels' own order ("+Inf" before "0.005", "10" before "2.5") would
/// put the catch-all bucket first and make every p99 infinite.
fn by_bound(buckets: BTreeMap<String, f64>) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = buckets
        .into_iter()
        .map(|(bound, count)| (bound.parse().unwrap_or(f64::INFINITY), count))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The p99 commit latency, in ms, of what committed between two readings of the cumulative
/// histogram buckets `(upper bound in s, count)`; None when nothing committed.
fn p99_ms(now: &[(f64, f64)], before: &[(f64, f64)]) -> Option<f64> {
    let delta: Vec<(f64, f64)> = now
        .iter()
        .map(|(bound, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == bound)
                .map(|(_, c)| *c)
                .unwrap_or(0.0);
            (*bound, count - earlier)
        })
        .collect();
    let total = delta.iter().map(|(_, c)| *c).fold(0.0, f64::max);
    if total <= 0.0 {
        return None;
    }
    delta
        .iter()
        .find(|(_, count)| *count >= total * 0.99)
        .map(|(bound, _)| bound * 1000.0)
}

fn describe(observed: Observed) -> &'static str {
    match observed {
        Observed::Running => "running",
        Observed::Failed => "failed (its committer stopped)",
        Observed::Stopped => "stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(attempts: Option<u32>, replacer: bool) -> Policies {
        Policies {
            restart_attempts: attempts,
            replacer,
            autoscaler: None,
        }
    }

    #[test]
    fn a_running_node_is_left_alone() {
        assert_eq!(
            decide(Observed::Running, 5, &policies(Some(3), true)),
            Action::Nothing
        );
    }

    #[test]
    fn the_restarter_restarts_until_its_attempts_then_the_replacer_replaces() {
        let both = policies(Some(3), true);
        assert_eq!(decide(Observed::Stopped, 0, &both), Action::Restart);
        assert_eq!(decide(Observed::Stopped, 2, &both), Action::Restart);
        assert_eq!(decide(Observed::Stopped, 3, &both), Action::Replace);
        // Without a replacer the restarter keeps trying.
        let restarter = policies(Some(3), false);
        assert_eq!(decide(Observed::Stopped, 10, &restarter), Action::Restart);
        // Without either, nothing is done.
        assert_eq!(
            decide(Observed::Stopped, 0, &policies(None, false)),
            Action::Nothing
        );
        // A replacer alone replaces at once.
        assert_eq!(
            decide(Observed::Stopped, 0, &policies(None, true)),
            Action::Replace
        );
    }

    #[test]
    fn the_replacer_waits_for_a_quorum_and_wipes_one_validator_at_most() {
        use weft_proto::Role;
        // 4 validators: quorum 3.
        assert!(replace_allowed(Role::Peer, 3, 4));
        assert!(!replace_allowed(Role::Peer, 2, 4));
        // The validator to replace is not running: the other three are.
        assert!(replace_allowed(Role::Validator, 3, 4));
        assert!(!replace_allowed(Role::Validator, 2, 4));
        // An outage (nothing runs) replaces nothing.
        assert!(!replace_allowed(Role::Peer, 0, 4));
        assert!(!replace_allowed(Role::Validator, 0, 4));
        // 6 validators: quorum 4.
        assert!(replace_allowed(Role::Peer, 4, 6));
        assert!(!replace_allowed(Role::Peer, 3, 6));
    }

    #[test]
    fn a_failed_committer_is_restarted_once_then_replaced() {
        let both = policies(Some(3), true);
        assert_eq!(decide(Observed::Failed, 0, &both), Action::Restart);
        assert_eq!(decide(Observed::Failed, 1, &both), Action::Replace);
    }

    #[test]
    fn the_autoscaler_follows_load_within_its_bounds() {
        let scaler = Autoscaler {
            metric: ScalingMetric::TxPerSecond,
            target: 100.0,
            min: 1,
            max: 3,
        };
        assert_eq!(desired_peers(1, 0.0, &scaler), 1);
        assert_eq!(desired_peers(1, 150.0, &scaler), 2);
        assert_eq!(desired_peers(2, 10_000.0, &scaler), 3);
        assert_eq!(desired_peers(3, 40.0, &scaler), 1);
        let latency = Autoscaler {
            metric: ScalingMetric::LatencyMs,
            target: 200.0,
            min: 1,
            max: 3,
        };
        assert_eq!(desired_peers(1, 500.0, &latency), 2);
        assert_eq!(desired_peers(3, 500.0, &latency), 3);
        assert_eq!(desired_peers(2, 150.0, &latency), 2);
        assert_eq!(desired_peers(2, 50.0, &latency), 1);
    }

    #[test]
    fn p99_is_read_from_the_buckets_that_grew() {
        let before = [
            (0.01, 10.0),
            (0.1, 10.0),
            (1.0, 10.0),
            (f64::INFINITY, 10.0),
        ];
        let now = [
            (0.01, 10.0),
            (0.1, 80.0),
            (1.0, 110.0),
            (f64::INFINITY, 110.0),
        ];
        // 100 new commits: 70 within 100 ms, all 100 within 1 s.
        assert_eq!(p99_ms(&now, &before), Some(1000.0));
        assert_eq!(p99_ms(&before, &before), None);
    }

    #[test]
    fn buckets_read_by_label_are_put_in_the_order_of_their_bounds() {
        let read = |counts: [f64; 4]| {
            by_bound(BTreeMap::from([
                ("+Inf".to_string(), counts[0]),
                ("0.005".to_string(), counts[1]),
                ("10".to_string(), counts[2]),
                ("2.5".to_string(), counts[3]),
            ]))
        };
        let before = read([0.0; 4]);
        assert_eq!(
            before.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
            [0.005, 2.5, 10.0, f64::INFINITY]
        );
        // 100 commits, all within 5 ms: the p99 is 5 ms, not the catch-all bucket.
        let now = read([100.0, 100.0, 100.0, 100.0]);
        assert_eq!(p99_ms(&now, &before), Some(5.0));
    }
}
