//! Client submissions that arrive close together have their signatures checked in one batch.
//!
//! A client that submits one transaction per call (most clients, and `weft bench` below about
//! 4,000 tx/s) would otherwise have each signature checked alone: about 42 us on this kind of
//! machine, against 25 us each in a batch of 4 and 18 us in a batch of 8
//! ([`crate::crypto::verify_tx_signatures`]). Transactions admitted together also reach the
//! consensus driver in one turn, so the validator relays them to the primary under one
//! signature, and the primary checks their client signatures in one batch too.
//!
//! A call of `batch` transactions or more fills a batch by itself: it is checked at once, on
//! its own. Every smaller call goes to one task. It takes the first call and whatever else
//! already waits. When such calls arrived fast enough before it that waiting would gather at
//! least [`WORTH_WAITING_FOR`] more transactions within the window (by a decaying estimate of
//! their arrival rate, [`ArrivalRate`], in which a call counts for at most
//! [`COUNTED_PER_CALL`] transactions, so that a few calls of many do not make lone ones
//! wait), it waits for them, until the batch holds `batch` transactions or the window since
//! the first arrival has passed. At low rates nothing waits: a lone
//! transaction is checked as soon as it arrives. The verdict on each transaction does
//! not depend on the others in its batch (the rule of `verify_tx_signatures`), so one client's
//! forgery costs another nothing but time.
//!
//! The small calls' checks thus run on one task, one core at most, where each call had its
//! own task before: at 1,250 transactions a second per validator in batches of 10 that task
//! is busy a few percent of the time, and the signatures cost half as much.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::admission::{Admission, AdmissionError};
use crate::metrics::Metrics;
use crate::types::{SignedTransaction, Transaction};

/// A gathered batch up to this many transactions and bytes is checked on the window's task (a
/// blocking thread's wake-up would cost more than the check); a larger one on a blocking
/// thread, which answers it while the task gathers the next.
const INLINE_TRANSACTIONS: usize = 16;
const INLINE_BYTES: usize = 64 * 1024;
/// Waiting pays only when it is expected to gather at least this many more transactions (and
/// the batch has room for them): a batch of 3 checks each signature in 29 us instead of 42, a
/// batch of 2 in 38.5.
const WORTH_WAITING_FOR: usize = 2;
/// The most transactions one call counts for in the arrival rate. Calls of a few each (what
/// `weft bench`'s sender puts in one `SubmitBatch` when it falls a little behind: about 3 at
/// 4,500 tx/s) count whole, so that their rate makes waiting worth it (counted as calls, 375
/// a second expected 1.5 in 4 ms, and batches fell from 10 transactions to 3); a few calls of
/// 31 count as calls of 4, so that they do not make the lone calls after them wait (a dozen
/// or more within 100 ms still do: their batches are worth it).
const COUNTED_PER_CALL: usize = 4;
/// The arrival rate's time constant: an arrival this long ago counts 1/e of a new one.
const RATE_HORIZON: Duration = Duration::from_millis(100);
/// Calls queued for the window's task; a caller beyond them waits for room.
const QUEUE: usize = 4096;

/// How long a submission may wait for others, and how many the window gathers at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    /// The longest the first submission of a batch waits for others; zero: none waits.
    pub window: Duration,
    /// A batch is checked as soon as it holds this many transactions.
    pub batch: usize,
}

/// One verdict per transaction of a call, in its order.
pub type Verdicts = Vec<Result<Transaction, AdmissionError>>;

#[derive(Debug, thiserror::Error)]
#[error(
    "the signature check of this submission ended without a verdict (a fault in the node: see its log); submit again"
)]
pub struct CheckStopped;

/// The client API's way into [`Admission`]: see the module documentation.
pub struct AdmissionWindow {
    admission: Arc<Admission>,
    calls: mpsc::Sender<Call>,
    batch: usize,
    metrics: Arc<Metrics>,
}

/// One caller's transactions and where their verdicts go.
struct Call {
    txs: Vec<SignedTransaction>,
    answer: oneshot::Sender<Verdicts>,
}

impl AdmissionWindow {
    /// Starts the window's task on the current runtime; it ends when the window is dropped.
    pub fn start(
        admission: Arc<Admission>,
        config: WindowConfig,
        metrics: Arc<Metrics>,
    ) -> AdmissionWindow {
        let (calls, queued) = mpsc::channel(QUEUE);
        tokio::spawn(gather(queued, admission.clone(), config, metrics.clone()));
        AdmissionWindow {
            admission,
            calls,
            batch: config.batch,
            metrics,
        }
    }

    /// Verifies and decodes `txs` (all of [`Admission::verify_all`]'s checks), one verdict
    /// each, in their order, checking their signatures with those of other calls.
    pub async fn verify(&self, txs: Vec<SignedTransaction>) -> Result<Verdicts, CheckStopped> {
        if txs.len() >= self.batch {
            // A full batch by itself: nothing to wait for, and lone calls gathered with it
            // would wait for all its checks.
            count_batch(&self.metrics, txs.len());
            return check(self.admission.clone(), txs).await;
        }
        let (answer, answered) = oneshot::channel();
        if let Err(mpsc::error::SendError(call)) = self.calls.send(Call { txs, answer }).await {
            // The window's task is gone (it panicked): the checks still run, each call on
            // its own.
            return check(self.admission.clone(), call.txs).await;
        }
        answered.await.map_err(|_| CheckStopped)
    }
}

/// The window's task: gathers calls into batches and has them checked.
async fn gather(
    mut queued: mpsc::Receiver<Call>,
    admission: Arc<Admission>,
    config: WindowConfig,
    metrics: Arc<Metrics>,
) {
    let mut rate = ArrivalRate::default();
    while let Some(first) = queued.recv().await {
        let opened = Instant::now();
        // Judged on the calls before this one: its own arrival says nothing of what follows.
        let worth_waiting = rate.worth_waiting(opened, config.window);
        rate.observe(opened, first.txs.len());
        let mut batch = Batch::of(first);
        while batch.len < config.batch {
            let Ok(call) = queued.try_recv() else {
                break;
            };
            rate.observe(Instant::now(), call.txs.len());
            batch.push(call);
        }
        if worth_waiting && batch.len + WORTH_WAITING_FOR <= config.batch {
            metrics.admission_waits.fetch_add(1, Ordering::Relaxed);
            let deadline = tokio::time::sleep_until((opened + config.window).into());
            tokio::pin!(deadline);
            while batch.len < config.batch {
                tokio::select! {
                    call = queued.recv() => match call {
                        Some(call) => {
                            rate.observe(Instant::now(), call.txs.len());
                            batch.push(call);
                        }
                        None => break,
                    },
                    _ = &mut deadline => break,
                }
            }
        }
        count_batch(&metrics, batch.len);
        let (txs, answers) = batch.split();
        if inline(&txs) {
            answer_each(answers, admission.verify_all(txs));
        } else {
            let admission = admission.clone();
            tokio::task::spawn_blocking(move || answer_each(answers, admission.verify_all(txs)));
        }
    }
}

fn count_batch(metrics: &Metrics, transactions: usize) {
    metrics.admission_batches.fetch_add(1, Ordering::Relaxed);
    metrics
        .admission_batched
        .fetch_add(transactions as u64, Ordering::Relaxed);
}

/// Checks `txs` on this task when they are few and small, otherwise on a blocking thread.
async fn check(
    admission: Arc<Admission>,
    txs: Vec<SignedTransaction>,
) -> Result<Verdicts, CheckStopped> {
    if inline(&txs) {
        return Ok(admission.verify_all(txs));
    }
    tokio::task::spawn_blocking(move || admission.verify_all(txs))
        .await
        .map_err(|_| CheckStopped)
}

fn inline(txs: &[SignedTransaction]) -> bool {
    let bytes: usize = txs
        .iter()
        .map(|tx| tx.payload.len() + tx.signer.len() + tx.signature.len())
        .sum();
    txs.len() <= INLINE_TRANSACTIONS && bytes <= INLINE_BYTES
}

/// Hands each call the verdicts on its transactions (a caller gone meanwhile, its client
/// having hung up, is skipped).
fn answer_each(answers: Vec<(usize, oneshot::Sender<Verdicts>)>, verdicts: Verdicts) {
    let mut verdicts = verdicts.into_iter();
    for (count, answer) in answers {
        let _ = answer.send(verdicts.by_ref().take(count).collect());
    }
}

/// Calls gathered for one signature batch.
struct Batch {
    calls: Vec<Call>,
    /// Transactions in `calls`.
    len: usize,
}

impl Batch {
    fn of(call: Call) -> Batch {
        let mut batch = Batch {
            calls: Vec::new(),
            len: 0,
        };
        batch.push(call);
        batch
    }

    fn push(&mut self, call: Call) {
        self.len += call.txs.len();
        self.calls.push(call);
    }

    /// Every call's transactions, in order, and how many of them go to each answer.
    fn split(
        self,
    ) -> (
        Vec<SignedTransaction>,
        Vec<(usize, oneshot::Sender<Verdicts>)>,
    ) {
        let mut txs = Vec::with_capacity(self.len);
        let mut answers = Vec::with_capacity(self.calls.len());
        for call in self.calls {
            answers.push((call.txs.len(), call.answer));
            txs.extend(call.txs);
        }
        (txs, answers)
    }
}

/// Transactions arriving per second in small calls (each counting for at most
/// [`COUNTED_PER_CALL`]), each arrival's weight decaying exponentially with time constant
/// [`RATE_HORIZON`]: at a steady rate it settles on that rate; after a pause it falls to
/// nothing within a few horizons.
#[derive(Debug, Default)]
struct ArrivalRate {
    per_second: f64,
    at: Option<Instant>,
}

impl ArrivalRate {
    /// A call of `transactions` arrived at `now`.
    fn observe(&mut self, now: Instant, transactions: usize) {
        let counted = transactions.min(COUNTED_PER_CALL) as f64;
        self.per_second = self.at(now) + counted / RATE_HORIZON.as_secs_f64();
        self.at = Some(now);
    }

    /// The rate as of `now`.
    fn at(&self, now: Instant) -> f64 {
        let Some(at) = self.at else {
            return 0.0;
        };
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        self.per_second * (-elapsed / RATE_HORIZON.as_secs_f64()).exp()
    }

    /// Whether at least [`WORTH_WAITING_FOR`] transactions are expected to arrive within
    /// `window` from `now`, at the current rate.
    fn worth_waiting(&self, now: Instant, window: Duration) -> bool {
        self.at(now) * window.as_secs_f64() >= WORTH_WAITING_FOR as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::convert::signed_from_pb;

    /// Calls of one transaction arriving every `gap` from `start`, `count` of them.
    fn steady(rate: &mut ArrivalRate, start: Instant, gap: Duration, count: u32) -> Instant {
        steady_calls_of(1, rate, start, gap, count)
    }

    /// Calls of `size` transactions arriving every `gap` from `start`, `count` of them.
    fn steady_calls_of(
        size: usize,
        rate: &mut ArrivalRate,
        start: Instant,
        gap: Duration,
        count: u32,
    ) -> Instant {
        let mut now = start;
        for _ in 0..count {
            now += gap;
            rate.observe(now, size);
        }
        now
    }

    #[test]
    fn the_arrival_rate_settles_on_a_steady_rate_and_fades_after_a_pause() {
        let start = Instant::now();
        let mut rate = ArrivalRate::default();
        assert_eq!(rate.at(start), 0.0);
        // 1,250 a second (a validator's share of 5,000 tx/s on four, one transaction per
        // call) for a second.
        let now = steady(&mut rate, start, Duration::from_micros(800), 1_250);
        let settled = rate.at(now);
        assert!((1_200.0..1_300.0).contains(&settled), "{settled}");
        // Worth waiting 4 ms for: about 5 more.
        assert!(rate.worth_waiting(now, Duration::from_millis(4)));
        // Half a second of silence: nothing worth waiting for.
        let later = now + Duration::from_millis(500);
        assert!(rate.at(later) < 10.0, "{}", rate.at(later));
        assert!(!rate.worth_waiting(later, Duration::from_millis(4)));
    }

    #[test]
    fn a_low_rate_is_not_worth_waiting_for() {
        // 25 a second: a validator's share of 100 tx/s on four.
        let start = Instant::now();
        let mut rate = ArrivalRate::default();
        let now = steady(&mut rate, start, Duration::from_millis(40), 100);
        let settled = rate.at(now);
        assert!((15.0..40.0).contains(&settled), "{settled}");
        assert!(!rate.worth_waiting(now, Duration::from_millis(4)));
        // Nor is any rate with no window.
        assert!(!rate.worth_waiting(now, Duration::ZERO));
    }

    #[test]
    fn a_call_counts_its_transactions_up_to_a_few() {
        // Two calls of 31 transactions do not make the next lone calls wait: each counts for
        // four (about 80 a second here, 0.3 expected in 4 ms).
        let now = Instant::now();
        let mut rate = ArrivalRate::default();
        rate.observe(now, 31);
        rate.observe(now + Duration::from_millis(10), 31);
        let after = now + Duration::from_millis(10);
        assert!(rate.at(after) < 100.0, "{}", rate.at(after));
        assert!(!rate.worth_waiting(after, Duration::from_millis(4)));
        // Calls of three, 375 a second (weft bench's at 4,500 tx/s on four validators): 1,125
        // transactions a second, 4.5 expected in 4 ms, worth waiting for (as calls, 1.5
        // would not be).
        let mut rate = ArrivalRate::default();
        let now = steady_calls_of(3, &mut rate, now, Duration::from_micros(2_667), 375);
        let settled = rate.at(now);
        assert!((1_050.0..1_200.0).contains(&settled), "{settled}");
        assert!(rate.worth_waiting(now, Duration::from_millis(4)));
    }

    fn window(config: WindowConfig) -> (AdmissionWindow, Arc<Metrics>, weft_proto::Signer, String) {
        let (admission, alice, genesis) = crate::test_support::admission_and_client("window");
        let metrics = Arc::new(Metrics::default());
        let window = AdmissionWindow::start(Arc::new(admission), config, metrics.clone());
        (window, metrics, alice, genesis.chain_id)
    }

    fn signed(alice: &weft_proto::Signer, chain: &str, function: &str) -> SignedTransaction {
        let (_, tx) = weft_proto::tx::sign_transaction(alice, chain, "cc", function, &[]);
        signed_from_pb(tx)
    }

    fn forged(tx: &SignedTransaction) -> SignedTransaction {
        let mut forged = tx.clone();
        let mut signature = forged.signature.to_vec();
        signature[40] ^= 1;
        forged.signature = signature.into();
        forged
    }

    /// Answers within a minute, or fails the test (a window of an hour is never waited out).
    async fn answered(window: &AdmissionWindow, txs: Vec<SignedTransaction>) -> Verdicts {
        tokio::time::timeout(Duration::from_secs(60), window.verify(txs))
            .await
            .expect("answered without waiting out the window")
            .expect("verdicts")
    }

    #[tokio::test]
    async fn calls_that_wait_together_are_checked_in_one_batch_each_with_its_own_verdicts() {
        // A window far longer than the test, so that once one call arrived any rate is worth
        // waiting for: the batch is checked when it is full, whatever order the calls take.
        let (window, metrics, alice, chain) = window(WindowConfig {
            window: Duration::from_secs(3600),
            batch: 6,
        });
        let window = Arc::new(window);
        // The first call finds no rate yet: checked alone, at once.
        let first = answered(&window, vec![signed(&alice, &chain, "first")]).await;
        assert!(first[0].is_ok());
        let good: Vec<SignedTransaction> = (0..5)
            .map(|i| signed(&alice, &chain, &format!("f{i}")))
            .collect();
        let bad = forged(&signed(&alice, &chain, "forged"));
        // A call of a good transaction and a forged one, which the window holds...
        let pair = {
            let (window, pair) = (window.clone(), vec![good[4].clone(), bad]);
            tokio::spawn(async move { answered(&window, pair).await })
        };
        // (A generous pause: the window's task only has to take the call and start waiting.)
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(metrics.admission_waits.load(Ordering::Relaxed), 1);
        // ... until four calls of one fill the batch.
        let mut calls = Vec::new();
        for tx in &good[..4] {
            let (window, tx) = (window.clone(), tx.clone());
            calls.push(tokio::spawn(
                async move { answered(&window, vec![tx]).await },
            ));
        }
        let last = pair.await.expect("task");
        assert_eq!(last.len(), 2);
        assert!(last[0].is_ok(), "{:?}", last[0]);
        assert!(matches!(last[1], Err(AdmissionError::BadSignature)));
        for (call, tx) in calls.into_iter().zip(&good) {
            let verdicts = call.await.expect("task");
            assert_eq!(verdicts.len(), 1);
            let admitted = verdicts.into_iter().next().expect("one").expect("admitted");
            assert_eq!(admitted.signed.payload, tx.payload);
        }
        assert_eq!(metrics.admission_batches.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.admission_waits.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.admission_batched.load(Ordering::Relaxed), 7);
    }

    /// Sends `calls` lone calls one after another through a window of `length` (batch 64);
    /// the batches checked and how many of them waited.
    async fn lone_calls(length: Duration, calls: usize) -> (u64, u64) {
        let (window, metrics, alice, chain) = window(WindowConfig {
            window: length,
            batch: 64,
        });
        for i in 0..calls {
            let verdicts = answered(&window, vec![signed(&alice, &chain, &format!("f{i}"))]).await;
            assert!(verdicts[0].is_ok());
        }
        (
            metrics.admission_batches.load(Ordering::Relaxed),
            metrics.admission_waits.load(Ordering::Relaxed),
        )
    }

    #[tokio::test]
    async fn a_batch_not_filled_within_the_window_is_checked_when_it_ends() {
        // A second's window: one call before (10 a second, decaying) is rate enough to wait
        // for two more, if the second call follows within 160 ms; it waits the window out
        // alone, and no longer.
        let started = Instant::now();
        assert_eq!(lone_calls(Duration::from_secs(1), 2).await, (2, 1));
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "held for the window"
        );
    }

    #[tokio::test]
    async fn a_lone_submission_at_a_low_rate_is_checked_without_waiting() {
        assert_eq!(lone_calls(Duration::from_millis(4), 3).await, (3, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_call_is_checked_at_once_and_does_not_make_lone_calls_wait() {
        let (window, metrics, alice, chain) = window(WindowConfig {
            window: Duration::from_secs(3600),
            batch: 32,
        });
        let mut txs: Vec<SignedTransaction> = (0..40)
            .map(|i| signed(&alice, &chain, &format!("f{i}")))
            .collect();
        txs[17] = forged(&txs[17]);
        assert!(!inline(&txs), "checked on a blocking thread");
        let verdicts = answered(&window, txs.clone()).await;
        assert_eq!(verdicts.len(), 40);
        for (i, (verdict, tx)) in verdicts.iter().zip(&txs).enumerate() {
            match verdict {
                Ok(admitted) => {
                    assert_ne!(i, 17);
                    assert_eq!(admitted.signed.payload, tx.payload);
                }
                Err(AdmissionError::BadSignature) => assert_eq!(i, 17),
                Err(other) => panic!("{i}: {other}"),
            }
        }
        // Its forty transactions do not count as a rate worth waiting an hour for.
        let lone = answered(&window, vec![signed(&alice, &chain, "lone")]).await;
        assert!(lone[0].is_ok());
        assert_eq!(metrics.admission_waits.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.admission_batches.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.admission_batched.load(Ordering::Relaxed), 41);
    }
}
