//! The async shell around the PBFT replica: one task owns the [`Replica`], selects over
//! verified peer messages, client requests, ticks and execution reports, calls `handle`, and
//! runs the returned actions strictly in order. Invariant: a `Persist` is durable (synced)
//! before any later action runs, so no signature leaves before the record that justifies it;
//! a storage failure stops the driver (and the node) instead of letting it sign unrecorded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::{mpsc, watch};

use super::journal::{Journal, JournalEntry, JournalError};
use super::pbft::{Action, Event, Message, Phase, Replica, ReplicaId, Sequence, View};
use super::{CommitWork, Feedback, OrderedBatch};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::network::inbound::InboundReceiver;
use crate::network::peers::PeerLinks;
use crate::network::state_transfer::{Handover, fetch_certified};
use crate::network::tls::ValidatorTls;
use crate::network::wire::{MAX_RELAYED_REQUESTS, Wire, WireError};
use crate::types::{Block, Hash, Transaction};
use weft_proto::Committee;

/// Most client requests, and most inbound deliveries, taken in one turn beside the input that
/// started it.
const REQUESTS_PER_TURN: usize = 512;
const DELIVERIES_PER_TURN: usize = 256;
/// Most bytes of transactions relayed in one message (and at most
/// `MAX_RELAYED_REQUESTS` of them).
const RELAY_MAX_BYTES: usize = 4 * 1024 * 1024;

/// How long a state transfer waits for the batches handed out before it to be applied.
const HANDED_OUT_WAIT: Duration = Duration::from_secs(30);

/// The state transfer under way, and the highest one the replica asked for meanwhile.
#[derive(Default)]
struct Transfers {
    running: Option<u64>,
    queued: Option<(Sequence, [u8; 32], Vec<ReplicaId>)>,
}

/// What `weft node status` shows of consensus.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsensusStatus {
    pub replica: u32,
    pub view: u64,
    pub primary: u32,
    pub view_changing: bool,
    pub last_executed: u64,
    pub stable_checkpoint: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot record what this validator signs: {0}; it stops rather than sign unrecorded")]
    Journal(#[from] JournalError),
    #[error("cannot sign a consensus message: {0}")]
    Sign(#[from] WireError),
    #[error("the commit loop stopped")]
    CommitLoopGone,
    #[error(
        "this validator's state diverged from the network's: at sequence {sequence} it has block hash {own}, but 2f+1 validators certified {certified}. It stops committing. Run `weft ledger verify`, check the chaincode for non-determinism, and restore this validator's data directory from a healthy one"
    )]
    Diverged {
        sequence: u64,
        own: Hash,
        certified: Hash,
    },
}

/// The driver's inputs and outputs.
pub struct DriverChannels {
    pub inbound: InboundReceiver,
    pub requests: mpsc::Receiver<Transaction>,
    pub feedback_sender: mpsc::Sender<Feedback>,
    pub feedback: mpsc::Receiver<Feedback>,
    pub commit: mpsc::Sender<CommitWork>,
    pub shutdown: watch::Receiver<bool>,
}

pub struct Driver {
    pub replica: Replica<Transaction>,
    pub wire: Arc<Wire>,
    pub links: Arc<PeerLinks>,
    pub journal: Journal,
    /// The validators' mutual-TLS endpoints, by replica id.
    pub tls: Arc<ValidatorTls>,
    pub ledger: Arc<Ledger>,
    pub metrics: Arc<Metrics>,
    pub status: watch::Sender<ConsensusStatus>,
    pub tick: Duration,
    /// Where proofs of a primary's equivocation are written (`DATA_DIR/evidence`).
    pub evidence_dir: PathBuf,
    /// How many of the replica's equivocation proofs are written already.
    pub evidence_written: usize,
    /// The genesis validators, to check the commit certificates of fetched blocks.
    pub committee: Committee,
    /// Client transactions not yet relayed, per destination.
    pub relays: Relays,
    /// Requests a state transfer passed over that the ledger does not hold: handed back to
    /// the replica at the start of the next turn.
    pub resubmits: Vec<Transaction>,
    /// When this replica started ordering each batch: measured when the batch commits.
    pub ordering: OrderingTimes,
}

/// When this replica first recorded each batch it is ordering, by sequence. A sequence
/// proposed again in a later view (after a view change) starts again there: what is measured
/// is the ordering in the view that committed the batch, not the view change before it.
#[derive(Default)]
pub struct OrderingTimes {
    started: BTreeMap<u64, (View, Instant)>,
}

impl OrderingTimes {
    fn start(&mut self, view: View, sequence: Sequence, now: Instant) {
        match self.started.get(&sequence.0) {
            Some((at, _)) if *at >= view => {}
            _ => {
                self.started.insert(sequence.0, (view, now));
            }
        }
    }

    /// How long the batch at `sequence` took to order, if this replica saw it start. The
    /// sequences below it that never committed here (a state transfer applied them) are
    /// forgotten.
    fn finish(&mut self, sequence: Sequence, now: Instant) -> Option<Duration> {
        let started = self.started.remove(&sequence.0);
        self.started = self.started.split_off(&sequence.0);
        started.map(|(_, at)| now.saturating_duration_since(at))
    }
}

/// Where a relayed batch goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RelayTo {
    /// One validator: the primary, for this validator's own clients' transactions.
    Replica(ReplicaId),
    /// Every other validator (pending transactions resent on the request timer).
    All,
}

/// Client transactions to relay, sent together in one message per destination after
/// each turn.
#[derive(Default)]
pub struct Relays {
    batches: BTreeMap<RelayTo, RelayBatch>,
}

#[derive(Default)]
struct RelayBatch {
    transactions: Vec<Transaction>,
    bytes: usize,
}

/// What an action asks the journal to keep, or the action back if it asks nothing of it.
// The "error" is the action itself, moved back to the caller (not an error value).
#[allow(clippy::result_large_err)]
fn journal_entry(action: Action<Transaction>) -> Result<JournalEntry, Action<Transaction>> {
    match action {
        Action::Persist(record) => Ok(JournalEntry::Record(record)),
        Action::CheckpointStable {
            sequence,
            state_digest,
            proof,
        } => Ok(JournalEntry::Stable(super::pbft::StableCheckpoint {
            sequence,
            state_digest,
            proof,
        })),
        other => Err(other),
    }
}

/// Where a request the replica sends goes, and the request, or the action back if it sends
/// none (requests travel in relay batches, not one message each).
// The "error" is the action itself, moved back to the caller (not an error value).
#[allow(clippy::result_large_err)]
fn relay_of(action: Action<Transaction>) -> Result<(RelayTo, Transaction), Action<Transaction>> {
    match action {
        Action::Broadcast(Message::Request(request)) => Ok((RelayTo::All, request)),
        Action::Send {
            to,
            message: Message::Request(request),
        } => Ok((RelayTo::Replica(to), request)),
        other => Err(other),
    }
}

/// Hands the runs a state transfer fetched to the commit loop, in order.
struct ToCommitLoop {
    commit: mpsc::Sender<CommitWork>,
    sequence: u64,
}

impl Handover for ToCommitLoop {
    async fn certified_run(
        &mut self,
        blocks: Vec<Block>,
        certificate: Option<weft_proto::pb::CommitCertificate>,
    ) -> Result<(), String> {
        let stopping = || "the commit loop stopped (the node is stopping)".to_string();
        let (applied, outcome) = tokio::sync::oneshot::channel();
        self.commit
            .send(CommitWork::ApplyFetched {
                sequence: self.sequence,
                blocks,
                certificate,
                applied,
            })
            .await
            .map_err(|_| stopping())?;
        outcome.await.map_err(|_| stopping())?
    }
}

impl Driver {
    /// Restores the replica from the journal and the ledger, then runs until shutdown.
    pub async fn run(mut self, mut channels: DriverChannels) -> Result<(), DriverError> {
        let last_executed = Sequence(self.ledger.tip().height.saturating_sub(1));
        let restored = self.journal.restore(last_executed)?;
        tracing::info!(
            replica = self.replica.id().0,
            records = restored.records.len(),
            last_executed = last_executed.0,
            stable = restored.stable_checkpoint.as_ref().map(|s| s.sequence.0),
            "consensus state restored"
        );
        let actions = self.replica.handle(Event::Restored(restored));
        let mut transfer = Transfers::default();
        self.run_actions(actions, &channels, &mut transfer).await?;
        // A crash between appending a checkpoint's block and signing its checkpoint would leave
        // that checkpoint unsigned for ever (and, with f replicas down, never stable): report
        // the executed checkpoints above the stable one again; the replica signs each once.
        let period = self.replica.config().checkpoint_period;
        let mut sequence = self.replica.last_stable_checkpoint().0 + period;
        while sequence <= last_executed.0 {
            if let Some(block) = self.ledger.block(sequence).map_err(JournalError::Ledger)? {
                let actions = self.replica.handle(Event::Executed {
                    sequence: Sequence(sequence),
                    state_digest: block.hash().0,
                });
                self.run_actions(actions, &channels, &mut transfer).await?;
            }
            sequence += period;
        }

        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // One turn: the first input to arrive, then whatever else already waits (up to a
            // bound), all handled before any of their actions run, so that their records
            // share one synced write and their relays one message per destination. Handling first and acting
            // after only delays actions; the replica's decisions do not depend on them.
            let mut events: Vec<Event<Transaction>> = std::mem::take(&mut self.resubmits)
                .into_iter()
                .map(Event::ClientRequest)
                .collect();
            tokio::select! {
                _ = channels.shutdown.changed() => return Ok(()),
                Some(messages) = channels.inbound.recv() => {
                    events.extend(messages.into_iter().map(Event::Message));
                }
                Some(request) = channels.requests.recv() => {
                    events.push(Event::ClientRequest(request));
                }
                Some(feedback) = channels.feedback.recv() => match feedback {
                    Feedback::Executed { sequence, digest } => events.push(Event::Executed {
                        sequence: Sequence(sequence),
                        state_digest: digest.0,
                    }),
                    Feedback::Transferred { sequence, digest } => {
                        transfer.running = None;
                        self.metrics.state_transfers.fetch_add(1, Ordering::Relaxed);
                        events.push(Event::StateTransferred {
                            sequence: Sequence(sequence),
                            state_digest: digest.0,
                        });
                    }
                    Feedback::TransferFailed { sequence, reason } => {
                        tracing::warn!(sequence, %reason, "state transfer failed; the replica will ask again");
                        transfer.running = None;
                    }
                },
                _ = ticker.tick() => events.push(Event::Tick),
            };
            for _ in 0..DELIVERIES_PER_TURN {
                let Some(messages) = channels.inbound.try_recv() else {
                    break;
                };
                events.extend(messages.into_iter().map(Event::Message));
            }
            for _ in 0..REQUESTS_PER_TURN {
                let Ok(request) = channels.requests.try_recv() else {
                    break;
                };
                events.push(Event::ClientRequest(request));
            }
            // Status and metrics follow once per tick, not after every message.
            let tick = events.iter().any(|e| matches!(e, Event::Tick));
            let mut actions = Vec::new();
            for event in events {
                actions.extend(self.replica.handle(event));
            }
            self.run_actions(actions, &channels, &mut transfer).await?;
            self.flush_relays();
            if tick {
                self.publish_status(&channels);
                self.write_evidence();
            }
            // A higher checkpoint asked for while a transfer ran: the replica does not ask
            // again before its retry timeout, and holds execution meanwhile.
            if transfer.running.is_none()
                && let Some((sequence, state_digest, peers)) = transfer.queued.take()
            {
                self.start_transfer(sequence, state_digest, peers, &channels, &mut transfer);
            }
        }
    }

    async fn run_actions(
        &mut self,
        actions: Vec<Action<Transaction>>,
        channels: &DriverChannels,
        transfer: &mut Transfers,
    ) -> Result<(), DriverError> {
        // The turn's records and stable checkpoints go first, in the replica's order, as one
        // atomic synced write (see `Journal::write`): a record written ahead of its place
        // only becomes durable sooner (as if the messages before it were lost), and no
        // signature leaves before the record that justifies it. Relays are gathered and leave
        // next, before this turn's pre-prepares.
        let mut entries = Vec::new();
        let mut rest = Vec::with_capacity(actions.len());
        for action in actions {
            match journal_entry(action) {
                Ok(entry) => {
                    self.note_ordering_start(&entry);
                    entries.push(entry);
                }
                Err(other) => match relay_of(other) {
                    Ok((to, request)) => self.relay(to, request),
                    Err(other) => rest.push(other),
                },
            }
        }
        self.record(&entries).await?;
        self.flush_relays();
        for action in rest {
            match action {
                // Taken out above; written the same way should one remain.
                journaled @ (Action::Persist(_) | Action::CheckpointStable { .. }) => {
                    if let Ok(entry) = journal_entry(journaled) {
                        self.record(&[entry]).await?;
                    }
                }
                // Taken out above too; relayed the same way should one remain.
                relayed @ (Action::Broadcast(Message::Request(_))
                | Action::Send {
                    message: Message::Request(_),
                    ..
                }) => {
                    if let Ok((to, request)) = relay_of(relayed) {
                        self.relay(to, request);
                    }
                }
                Action::Send { to, message } => {
                    let signed = self.wire.sign(&message)?;
                    self.links.send(to, signed);
                }
                Action::Broadcast(message) => {
                    let signed = self.wire.sign(&message)?;
                    self.links.broadcast(&signed);
                }
                Action::Execute { sequence, batch } => {
                    self.observe_ordering(sequence);
                    channels
                        .commit
                        .send(CommitWork::Execute(OrderedBatch {
                            sequence: sequence.0,
                            transactions: batch,
                            ordered_at: Instant::now(),
                        }))
                        .await
                        .map_err(|_| DriverError::CommitLoopGone)?;
                }
                Action::ViewChanged { view, primary } => {
                    // The replica also reports the view it restored into, view 0 at a fresh
                    // start: the metric counts views entered after view 0 only.
                    if view.0 > 0 {
                        self.metrics.view_changes.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::info!(
                        replica = self.replica.id().0,
                        view = view.0,
                        primary = primary.0,
                        "entered a new view"
                    );
                }
                Action::RequestStateTransfer {
                    sequence,
                    state_digest,
                    peers,
                } => self.start_transfer(sequence, state_digest, peers, channels, transfer),
                Action::Committed { sequence, digest } => {
                    tracing::trace!(sequence = sequence.0, %digest, "committed");
                }
                Action::Resubmit { requests } => {
                    let held = requests.len();
                    let mut resubmitted = 0;
                    for request in requests {
                        let committed = self
                            .ledger
                            .tx_location(&request.id())
                            .map_err(JournalError::Ledger)?
                            .is_some();
                        if !committed {
                            self.resubmits.push(request);
                            resubmitted += 1;
                        }
                    }
                    tracing::info!(
                        held,
                        resubmitted,
                        "after a state transfer, the requests the transferred ledger does not hold go to the primary again"
                    );
                }
                Action::Diverged {
                    sequence,
                    own,
                    certified,
                } => {
                    return Err(DriverError::Diverged {
                        sequence: sequence.0,
                        own: Hash(own),
                        certified: Hash(certified),
                    });
                }
            }
        }
        Ok(())
    }

    /// A batch's ordering starts here at its first record: the primary's pre-prepare, or a
    /// backup's prepare (it accepted the pre-prepare).
    fn note_ordering_start(&mut self, entry: &JournalEntry) {
        if let JournalEntry::Record(record) = entry
            && matches!(record.phase, Phase::PrePrepare | Phase::Prepare)
        {
            self.ordering
                .start(record.view, record.sequence, Instant::now());
        }
    }

    /// The batch at `sequence` committed here: how long its ordering took.
    fn observe_ordering(&mut self, sequence: Sequence) {
        if let Some(took) = self.ordering.finish(sequence, Instant::now()) {
            self.metrics.ordering.observe(took);
        }
    }

    /// Writes journal entries (one atomic synced write) and counts the stable checkpoints.
    async fn record(&self, entries: &[JournalEntry]) -> Result<(), DriverError> {
        self.journal.write(entries, self.replica.view()).await?;
        for entry in entries {
            if let JournalEntry::Stable(stable) = entry {
                self.metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(sequence = stable.sequence.0, "checkpoint stable");
            }
        }
        Ok(())
    }

    /// Gathers a client transaction to relay to `to` with the rest of the turn's.
    fn relay(&mut self, to: RelayTo, request: Transaction) {
        let batch = self.relays.batches.entry(to).or_default();
        let signed = &request.signed;
        batch.bytes += signed.payload.len() + signed.signer.len() + signed.signature.len();
        batch.transactions.push(request);
        let full =
            batch.transactions.len() >= MAX_RELAYED_REQUESTS || batch.bytes >= RELAY_MAX_BYTES;
        if full && let Some(batch) = self.relays.batches.remove(&to) {
            self.send_relay(to, batch);
        }
    }

    /// Relays the client transactions gathered this turn, one batch per destination.
    fn flush_relays(&mut self) {
        for (to, batch) in std::mem::take(&mut self.relays.batches) {
            self.send_relay(to, batch);
        }
    }

    fn send_relay(&self, to: RelayTo, batch: RelayBatch) {
        if batch.transactions.is_empty() {
            return;
        }
        self.metrics.relays.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .relayed
            .fetch_add(batch.transactions.len() as u64, Ordering::Relaxed);
        let signed = self.wire.relay(&batch.transactions);
        match to {
            RelayTo::Replica(replica) => self.links.send(replica, signed),
            RelayTo::All => self.links.broadcast(&signed),
        }
    }

    fn start_transfer(
        &self,
        sequence: Sequence,
        state_digest: [u8; 32],
        peers: Vec<ReplicaId>,
        channels: &DriverChannels,
        transfer: &mut Transfers,
    ) {
        // One transfer at a time (two would append over each other): the highest checkpoint
        // asked for meanwhile starts when this one ends.
        if let Some(running) = transfer.running {
            let higher = transfer
                .queued
                .as_ref()
                .map_or(running, |(queued, _, _)| queued.0.max(running));
            if sequence.0 > higher {
                transfer.queued = Some((sequence, state_digest, peers));
            }
            return;
        }
        transfer.running = Some(sequence.0);
        // The batches already handed to the commit loop are applied before the fetched blocks
        // (its queue is in order): fetch from the chain they leave, not from the tip now, or
        // the fetched blocks would not fit.
        let handed_out = self.replica.last_executed().0;
        let ledger = self.ledger.clone();
        let endpoints: Vec<(String, tonic::transport::Endpoint)> = peers
            .iter()
            .filter_map(|p| {
                self.tls
                    .endpoint(*p)
                    .ok()
                    .map(|e| (self.tls.address(*p).to_string(), e))
            })
            .collect();
        let addresses: Vec<&str> = endpoints.iter().map(|(a, _)| a.as_str()).collect();
        let addresses = format!("{addresses:?}");
        let commit = channels.commit.clone();
        let feedback = channels.feedback_sender.clone();
        let committee = self.committee.clone();
        let target = sequence.0;
        let digest = Hash(state_digest);
        tokio::spawn(async move {
            let waiting = Instant::now();
            let tip = loop {
                let tip = ledger.tip();
                if tip.height > handed_out
                    || waiting.elapsed() > HANDED_OUT_WAIT
                    || feedback.is_closed()
                {
                    break tip;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            tracing::info!(
                from = tip.height,
                to = target,
                peers = %addresses,
                "state transfer: fetching certified blocks"
            );
            if tip.height > target {
                // Already there (execution caught up meanwhile): report the certified state.
                let _ = feedback
                    .send(Feedback::TransferFailed {
                        sequence: target,
                        reason: format!("already at height {}", tip.height),
                    })
                    .await;
                return;
            }
            let mut handover = ToCommitLoop {
                commit: commit.clone(),
                sequence: target,
            };
            let fetched = fetch_certified(
                &endpoints,
                &committee,
                tip.height,
                target,
                tip.hash,
                digest,
                &mut handover,
            )
            .await;
            match fetched {
                Ok(()) => {
                    let _ = commit
                        .send(CommitWork::TransferEnd {
                            sequence: target,
                            digest,
                        })
                        .await;
                }
                Err(e) => {
                    let _ = feedback
                        .send(Feedback::TransferFailed {
                            sequence: target,
                            reason: e.to_string(),
                        })
                        .await;
                }
            }
        });
    }

    /// Writes each equivocation proof the replica found since the last tick to its own file,
    /// as the two messages the primary signed. Writing is best effort: a failure is logged and
    /// the replica goes on (the proof also stays in its memory until it restarts).
    fn write_evidence(&mut self) {
        let found = self.replica.evidence();
        if found.len() <= self.evidence_written {
            return;
        }
        for evidence in &found[self.evidence_written..] {
            let (primary, view, sequence) = (
                evidence.first.from.0,
                evidence.first.message.view.0,
                evidence.first.message.sequence.0,
            );
            let path = self.evidence_dir.join(format!(
                "equivocation-replica{primary}-view{view}-seq{sequence}.pb"
            ));
            let written = self
                .wire
                .evidence_to_pb(evidence)
                .map_err(|e| e.to_string())
                .and_then(|proof| {
                    std::fs::create_dir_all(&self.evidence_dir)
                        .and_then(|()| std::fs::write(&path, proof.encode_to_vec()))
                        .map_err(|e| e.to_string())
                });
            match written {
                Ok(()) => tracing::warn!(
                    primary,
                    view,
                    sequence,
                    path = %path.display(),
                    "the primary signed two different pre-prepares for one sequence; the proof is written"
                ),
                Err(error) => tracing::error!(
                    primary,
                    view,
                    sequence,
                    %error,
                    "the primary signed two different pre-prepares for one sequence; writing the proof failed"
                ),
            }
            self.metrics.equivocations.fetch_add(1, Ordering::Relaxed);
        }
        self.evidence_written = found.len();
    }

    fn publish_status(&self, channels: &DriverChannels) {
        let replica = &self.replica;
        let status = ConsensusStatus {
            replica: replica.id().0,
            view: replica.view().0,
            primary: replica.primary().0,
            view_changing: replica.is_view_changing(),
            last_executed: replica.last_executed().0,
            stable_checkpoint: replica.last_stable_checkpoint().0,
        };
        self.status.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
        self.metrics.view.store(replica.view().0, Ordering::Relaxed);
        self.metrics
            .retransmissions
            .store(replica.retransmissions(), Ordering::Relaxed);
        for (reason, count) in replica.rejections() {
            self.metrics.set_consensus_rejected(reason.as_str(), *count);
        }
        self.metrics
            .consensus_outbound_queue
            .store(self.links.queued() as u64, Ordering::Relaxed);
        self.metrics
            .consensus_inbound_queue
            .store(channels.inbound.depth() as u64, Ordering::Relaxed);
        self.metrics.consensus_dropped.store(
            self.links.stats().dropped.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_is_timed_from_the_first_record_in_the_view_that_commits_the_batch() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut times = OrderingTimes::default();
        times.start(View(0), Sequence(5), at(0));
        // The commit record of the same view does not restart it.
        times.start(View(0), Sequence(5), at(3));
        assert_eq!(
            times.finish(Sequence(5), at(10)),
            Some(Duration::from_millis(10))
        );
        assert_eq!(times.finish(Sequence(5), at(11)), None, "timed once");

        // Proposed in view 0, then again in view 1 after a view change.
        times.start(View(0), Sequence(6), at(20));
        times.start(View(1), Sequence(6), at(2_000));
        assert_eq!(
            times.finish(Sequence(6), at(2_010)),
            Some(Duration::from_millis(10))
        );
    }

    #[test]
    fn a_commit_forgets_the_sequences_below_it_that_never_committed_here() {
        let t0 = Instant::now();
        let mut times = OrderingTimes::default();
        for sequence in 1..=4 {
            times.start(View(0), Sequence(sequence), t0);
        }
        // A state transfer applied 1 and 2; 3 commits here.
        assert!(times.finish(Sequence(3), t0).is_some());
        assert_eq!(times.finish(Sequence(1), t0), None);
        assert_eq!(times.finish(Sequence(2), t0), None);
        assert!(times.finish(Sequence(4), t0).is_some(), "above it is kept");
    }
}
