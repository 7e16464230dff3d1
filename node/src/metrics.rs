//! The peer's Prometheus metrics, kept in atomics and rendered in the text exposition format
//! on the operations port. Counters only grow; the histogram's buckets are cumulative.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::chaincode::session::StreamStats;

/// Upper bounds of the commit latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(value.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// A counter by reason: `name{reason="..."} count`.
#[derive(Default)]
struct ByReason(Mutex<BTreeMap<&'static str, u64>>);

impl ByReason {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, reason: &'static str, count: u64) {
        *self.lock().entry(reason).or_default() += count;
    }

    fn set(&self, reason: &'static str, total: u64) {
        self.lock().insert(reason, total);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (reason, count) in self.lock().iter() {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub height: AtomicU64,
    pub committed_valid: AtomicU64,
    pub committed_failed: AtomicU64,
    pub pending: AtomicU64,
    pub chaincode_executions: AtomicU64,
    pub chaincode_errors: AtomicU64,
    /// The chaincode streams' counters (shared with the sessions).
    pub chaincode_streams: Arc<StreamStats>,
    pub commit_latency: Histogram,
    /// PBFT: from this replica's first record of a batch (proposing it, or accepting the
    /// primary's pre-prepare) to the batch committing here.
    pub ordering: Histogram,
    /// Committed batches waiting for the blocks before them to execute.
    pub execution_queue: Histogram,
    /// Executing a committed batch through chaincode and appending its block.
    pub block_execution: Histogram,
    rejected: ByReason,
    /// Signature batches the client API checked (`admission_window`), the transactions in
    /// them, and how many of the batches waited for more submissions to arrive.
    pub admission_batches: AtomicU64,
    pub admission_batched: AtomicU64,
    pub admission_waits: AtomicU64,
    /// PBFT: batches of client transactions relayed to other validators in one message,
    /// and the transactions in them.
    pub relays: AtomicU64,
    pub relayed: AtomicU64,
    /// PBFT: views entered after view 0.
    pub view_changes: AtomicU64,
    /// PBFT: checkpoints that became stable.
    pub checkpoints: AtomicU64,
    /// PBFT: times this validator's re-send timer fired (no new checkpoint of its own for
    /// `retransmit_ticks`): it re-sent its latest checkpoint and its messages for the
    /// sequences above its stable checkpoint.
    pub retransmissions: AtomicU64,
    /// PBFT: state transfers completed.
    pub state_transfers: AtomicU64,
    /// PBFT: proofs found that a primary signed two different pre-prepares for one sequence.
    pub equivocations: AtomicU64,
    /// PBFT: the current view.
    pub view: AtomicU64,
    /// PBFT: verified messages waiting for the replica.
    pub consensus_inbound_queue: AtomicU64,
    /// PBFT: encoded messages waiting in the outbound peer queues.
    pub consensus_outbound_queue: AtomicU64,
    /// PBFT: outbound messages dropped because a peer's queue was full.
    pub consensus_dropped: AtomicU64,
    consensus_rejected: ByReason,
    /// The highest block this peer holds a commit certificate for.
    pub certified_height: AtomicU64,
    /// Non-validating peer: transactions forwarded to validators (re-forwards included).
    pub forwarded: AtomicU64,
    /// Non-validating peer: transactions forwarded again (no commit in time, or a new primary).
    pub reforwarded: AtomicU64,
    /// Non-validating peer: certified blocks applied from a validator.
    pub followed_blocks: AtomicU64,
    follow_refused: ByReason,
}

impl Metrics {
    /// Counts a refused client request by reason.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.add(reason, 1);
    }

    /// Counts a refused consensus message (at the edge or by the replica) by reason.
    pub fn consensus_rejected(&self, reason: &'static str, count: u64) {
        self.consensus_rejected.add(reason, count);
    }

    /// Sets the replica's own refusal counts (it keeps running totals by reason).
    pub fn set_consensus_rejected(&self, reason: &'static str, total: u64) {
        self.consensus_rejected.set(reason, total);
    }

    /// Non-validating peer: counts a refused block stream from a validator, by reason.
    pub fn follow_refused(&self, reason: &'static str) {
        self.follow_refused.add(reason, 1);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut out,
            "weft_ledger_height",
            "Blocks in the chain, block 0 included.",
            "gauge",
            load(&self.height),
        );
        gauge(
            &mut out,
            "weft_transactions_committed_total",
            "Committed transactions with status VALID.",
            "counter",
            load(&self.committed_valid),
        );
        gauge(
            &mut out,
            "weft_transactions_failed_total",
            "Committed transactions with a failure status.",
            "counter",
            load(&self.committed_failed),
        );
        gauge(
            &mut out,
            "weft_transactions_pending",
            "Transactions accepted and not yet committed.",
            "gauge",
            load(&self.pending),
        );
        gauge(
            &mut out,
            "weft_chaincode_executions_total",
            "Transactions executed by chaincode.",
            "counter",
            load(&self.chaincode_executions),
        );
        gauge(
            &mut out,
            "weft_chaincode_errors_total",
            "Transactions whose chaincode failed, crashed or timed out.",
            "counter",
            load(&self.chaincode_errors),
        );
        gauge(
            &mut out,
            "weft_chaincode_state_requests_total",
            "State reads chaincode asked for on its stream (one round trip each).",
            "counter",
            load(&self.chaincode_streams.state_requests),
        );
        gauge(
            &mut out,
            "weft_chaincode_state_request_keys_total",
            "Keys those state reads named.",
            "counter",
            load(&self.chaincode_streams.state_request_keys),
        );
        gauge(
            &mut out,
            "weft_chaincode_prefetched_keys_total",
            "Values sent with batches for the chaincode's read hints (read or not).",
            "counter",
            load(&self.chaincode_streams.prefetched_keys),
        );
        self.commit_latency.render(
            "weft_commit_latency_seconds",
            "Time from admission to commit of transactions this peer admitted.",
            &mut out,
        );
        self.ordering.render(
            "weft_pbft_ordering_seconds",
            "Time from this validator's first record of a batch (proposing it, or accepting the primary's pre-prepare) to the batch committing here.",
            &mut out,
        );
        self.execution_queue.render(
            "weft_execution_queue_seconds",
            "Time a committed batch waits for the blocks before it to execute.",
            &mut out,
        );
        self.block_execution.render(
            "weft_block_execution_seconds",
            "Time to execute a committed batch through chaincode and append its block.",
            &mut out,
        );
        self.rejected.render(
            "weft_requests_rejected_total",
            "Client requests refused, by reason.",
            &mut out,
        );
        for (name, help, kind, value) in [
            (
                "weft_admission_batches_total",
                "Signature batches checked for client submissions (calls arriving close together share one).",
                "counter",
                &self.admission_batches,
            ),
            (
                "weft_admission_batch_transactions_total",
                "Client transactions in those batches.",
                "counter",
                &self.admission_batched,
            ),
            (
                "weft_admission_waits_total",
                "Signature batches that waited for more submissions (submissions arriving fast enough to fill them within api.admission_window).",
                "counter",
                &self.admission_waits,
            ),
            (
                "weft_pbft_relays_total",
                "Batches of client transactions relayed to other validators in one message.",
                "counter",
                &self.relays,
            ),
            (
                "weft_pbft_relayed_transactions_total",
                "Client transactions in those relayed batches.",
                "counter",
                &self.relayed,
            ),
            (
                "weft_pbft_view",
                "The view this validator is in.",
                "gauge",
                &self.view,
            ),
            (
                "weft_pbft_view_changes_total",
                "Views entered after view 0.",
                "counter",
                &self.view_changes,
            ),
            (
                "weft_pbft_checkpoints_total",
                "Checkpoints that became stable.",
                "counter",
                &self.checkpoints,
            ),
            (
                "weft_pbft_retransmissions_total",
                "Times this validator re-sent its latest checkpoint and its messages above the stable checkpoint because it took no new checkpoint for the re-send interval.",
                "counter",
                &self.retransmissions,
            ),
            (
                "weft_pbft_state_transfers_total",
                "State transfers completed.",
                "counter",
                &self.state_transfers,
            ),
            (
                "weft_pbft_equivocations_total",
                "Proofs written to DATA_DIR/evidence that a primary signed two different pre-prepares for one sequence (at most 64 per process run).",
                "counter",
                &self.equivocations,
            ),
            (
                "weft_pbft_inbound_queue",
                "Verified consensus messages waiting for the replica.",
                "gauge",
                &self.consensus_inbound_queue,
            ),
            (
                "weft_pbft_outbound_queue",
                "Consensus messages waiting in the peer queues.",
                "gauge",
                &self.consensus_outbound_queue,
            ),
            (
                "weft_pbft_dropped_total",
                "Outbound consensus messages dropped because a peer queue was full.",
                "counter",
                &self.consensus_dropped,
            ),
            (
                "weft_certified_height",
                "The highest block this peer holds a commit certificate for.",
                "gauge",
                &self.certified_height,
            ),
            (
                "weft_peer_forwarded_total",
                "Transactions a non-validating peer forwarded to validators.",
                "counter",
                &self.forwarded,
            ),
            (
                "weft_peer_reforwarded_total",
                "Transactions forwarded again (no commit in time, or a new primary).",
                "counter",
                &self.reforwarded,
            ),
            (
                "weft_peer_followed_blocks_total",
                "Certified blocks a non-validating peer applied.",
                "counter",
                &self.followed_blocks,
            ),
        ] {
            gauge(&mut out, name, help, kind, load(value));
        }
        self.consensus_rejected.render(
            "weft_pbft_rejected_total",
            "Consensus messages refused, by reason.",
            &mut out,
        );
        self.follow_refused.render(
            "weft_peer_follow_refused_total",
            "Block streams from validators refused, by reason.",
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.committed_valid.fetch_add(3, Ordering::Relaxed);
        m.commit_latency.observe(Duration::from_millis(7));
        m.commit_latency.observe(Duration::from_millis(700));
        m.block_execution.observe(Duration::from_micros(1_500));
        m.rejected("bad_signature");
        let text = m.render();
        assert!(text.contains("weft_block_execution_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("weft_block_execution_seconds_bucket{le=\"0.0025\"} 1"));
        assert!(text.contains("weft_block_execution_seconds_count 1"));
        assert!(text.contains("weft_pbft_ordering_seconds_count 0"));
        assert!(text.contains("weft_execution_queue_seconds_count 0"));
        assert!(text.contains("weft_transactions_committed_total 3"));
        assert!(text.contains("weft_commit_latency_seconds_bucket{le=\"0.005\"} 0"));
        assert!(text.contains("weft_commit_latency_seconds_bucket{le=\"0.01\"} 1"));
        assert!(text.contains("weft_commit_latency_seconds_bucket{le=\"1\"} 2"));
        assert!(text.contains("weft_commit_latency_seconds_count 2"));
        assert!(text.contains("weft_requests_rejected_total{reason=\"bad_signature\"} 1"));
    }
}
