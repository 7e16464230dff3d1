//! Open-loop load: transaction i is sent at `start + i / rate` whatever happened to the ones
//! before it (a closed loop would slow down with the system and hide its queueing), spread
//! round-robin over the validators, without waiting for its commit; commits are observed on
//! the commit stream, not through the submit answer. Two ways to send: each transaction in
//! its own `Submit` call, or what is due at one moment for one validator in one `SubmitBatch`
//! (what a client that submits many at once does).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::ValueEnum;
use tokio::sync::Semaphore;
use tonic::transport::Channel;
use weft_proto::client::submit_outcome;
use weft_proto::pb::{self, client_client::ClientClient};

use weft_node::api::client::MAX_SUBMIT_BATCH;

use super::observe::Tracker;
use super::workload::Planned;

/// How transactions go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SubmitMode {
    /// What is due at one moment for one validator, in one `SubmitBatch` call.
    Batch,
    /// Each transaction in its own `Submit` call.
    Unary,
}

impl SubmitMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SubmitMode::Batch => "batch",
            SubmitMode::Unary => "unary",
        }
    }
}

/// Counters the progress line reads while a step runs.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicUsize,
    pub rejected: AtomicUsize,
}

/// How the offering went (when the last transaction was sent; answers may still be on
/// their way: [`Offered::answered`]).
pub struct Offered {
    /// When transaction 0 was due, and when the last one was sent.
    pub started: Instant,
    pub ended: Instant,
    /// The most a send ran behind its schedule (the load generator could not keep up, or
    /// too many submissions were outstanding).
    pub max_lag: Duration,
    room: Arc<Semaphore>,
    outstanding: usize,
    first_rejection: Arc<Mutex<Option<String>>>,
}

impl Offered {
    /// Waits until every submission is answered; the first refusal's reason, if any.
    pub async fn answered(&self) -> Result<Option<String>> {
        let _all = self.room.acquire_many(self.outstanding as u32).await?;
        Ok(self
            .first_rejection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }
}

/// Sends `txs` at `rate` per second; at most `outstanding` submissions unanswered at once (a
/// send waits for room, which shows as lag). Each is timed from when it was due, not from when
/// it went out, so a generator that falls behind does not hide the wait (no coordinated
/// omission). In batch mode, everything due when the sender wakes goes out at once, one call
/// per validator.
pub async fn offer(
    clients: Vec<ClientClient<Channel>>,
    txs: Vec<Planned>,
    rate: f64,
    mode: SubmitMode,
    outstanding: usize,
    tracker: Arc<Tracker>,
    counters: Arc<Counters>,
) -> Result<Offered> {
    let room = Arc::new(Semaphore::new(outstanding));
    let rejections = Rejections {
        counters,
        first: Arc::default(),
    };
    let started = Instant::now();
    let due = |i: usize| started + Duration::from_secs_f64(i as f64 / rate);
    let per_call = match mode {
        SubmitMode::Batch => MAX_SUBMIT_BATCH.min(outstanding),
        SubmitMode::Unary => 1,
    };
    let mut max_lag = Duration::ZERO;
    let mut txs = txs.into_iter().enumerate().peekable();
    while let Some(&(next, _)) = txs.peek() {
        if due(next) > Instant::now() {
            tokio::time::sleep_until(due(next).into()).await;
        }
        let groups = take_due(&mut txs, due, Instant::now(), clients.len(), per_call);
        for (validator, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let permit = room.clone().acquire_many_owned(group.len() as u32).await?;
            let first_due = due(group[0].0);
            max_lag = max_lag.max(Instant::now().saturating_duration_since(first_due));
            for (i, _) in &group {
                tracker.mark_sent_at(*i, due(*i));
            }
            rejections
                .counters
                .sent
                .fetch_add(group.len(), Ordering::Relaxed);
            let mut client = clients[validator].clone();
            let rejections = rejections.clone();
            let txs: Vec<pb::SignedTx> = group.into_iter().map(|(_, p)| p.tx).collect();
            tokio::spawn(async move {
                let _permit = permit;
                match mode {
                    // One transaction per group (`per_call`).
                    SubmitMode::Unary => {
                        for tx in txs {
                            if let Err(status) = client.submit(tx).await {
                                rejections.record(&status);
                            }
                        }
                    }
                    SubmitMode::Batch => {
                        let count = txs.len();
                        let request = pb::SubmitBatchRequest { transactions: txs };
                        let outcomes = match client.submit_batch(request).await {
                            Ok(response) => response.into_inner().outcomes,
                            Err(status) => {
                                (0..count).for_each(|_| rejections.record(&status));
                                return;
                            }
                        };
                        for outcome in outcomes {
                            match submit_outcome(outcome) {
                                Ok(Ok(_)) => {}
                                Ok(Err(status)) => rejections.record(&status),
                                Err(e) => {
                                    rejections.record(&tonic::Status::internal(e.to_string()))
                                }
                            }
                        }
                    }
                }
            });
        }
    }
    Ok(Offered {
        started,
        ended: Instant::now(),
        max_lag,
        room,
        outstanding,
        first_rejection: rejections.first,
    })
}

/// Takes from `pending` (index, transaction) everything due by `now`, one group per validator
/// (round-robin by index), stopping when a group reaches `per_call`.
fn take_due<T>(
    pending: &mut std::iter::Peekable<impl Iterator<Item = (usize, T)>>,
    due: impl Fn(usize) -> Instant,
    now: Instant,
    validators: usize,
    per_call: usize,
) -> Vec<Vec<(usize, T)>> {
    let mut groups: Vec<Vec<(usize, T)>> = (0..validators).map(|_| Vec::new()).collect();
    while let Some((i, item)) = pending.next_if(|(i, _)| due(*i) <= now) {
        let group = &mut groups[i % validators];
        group.push((i, item));
        if group.len() >= per_call {
            break;
        }
    }
    groups
}

/// Refused submissions: counted, and the first one's reason kept.
#[derive(Clone)]
struct Rejections {
    counters: Arc<Counters>,
    first: Arc<Mutex<Option<String>>>,
}

impl Rejections {
    fn record(&self, status: &tonic::Status) {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| format!("{}: {}", status.code(), status.message()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_due_goes_out_in_one_group_per_validator_within_the_call_limit() {
        let start = Instant::now();
        let due = |i: usize| start + Duration::from_millis(i as u64);
        let mut pending = (0..10).map(|i| (i, i * 10)).peekable();
        // Seven are due; three validators; at most two per call: 0..=3 go (validator 0 holds
        // 0 and 3, its limit), the rest wait for the next pass.
        let now = start + Duration::from_millis(6);
        let groups = take_due(&mut pending, due, now, 3, 2);
        assert_eq!(
            groups,
            [vec![(0, 0), (3, 30)], vec![(1, 10)], vec![(2, 20)]]
        );
        let groups = take_due(&mut pending, due, now, 3, 2);
        assert_eq!(groups, [vec![(6, 60)], vec![(4, 40)], vec![(5, 50)]]);
        // Nothing more is due yet; one per call (unary) takes one.
        assert!(
            take_due(&mut pending, due, now, 3, 2)
                .iter()
                .all(Vec::is_empty)
        );
        let later = start + Duration::from_millis(20);
        let groups = take_due(&mut pending, due, later, 3, 1);
        assert_eq!(groups, [vec![], vec![(7, 70)], vec![]]);
        assert_eq!(pending.next(), Some((8, 80)));
    }
}
