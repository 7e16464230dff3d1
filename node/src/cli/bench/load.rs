//! Open-loop load: transaction i is sent at `start + i / rate` whatever happened to the ones
//! before it (a closed loop would slow down with the system and hide its queueing). Each is a
//! non-waiting `Submit`, spread round-robin over the validators; commits are observed on the
//! commit stream, not through the submit answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::Semaphore;
use tonic::transport::Channel;
use weft_proto::pb::client_client::ClientClient;

use super::observe::Tracker;
use super::workload::Planned;

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
/// omission).
pub async fn offer(
    clients: Vec<ClientClient<Channel>>,
    txs: Vec<Planned>,
    rate: f64,
    outstanding: usize,
    tracker: Arc<Tracker>,
    counters: Arc<Counters>,
) -> Result<Offered> {
    let room = Arc::new(Semaphore::new(outstanding));
    let first_rejection: Arc<Mutex<Option<String>>> = Arc::default();
    let started = Instant::now();
    let mut max_lag = Duration::ZERO;
    for (i, planned) in txs.into_iter().enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = room.clone().acquire_owned().await?;
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        let mut client = clients[i % clients.len()].clone();
        let counters = counters.clone();
        let first_rejection = first_rejection.clone();
        tracker.mark_sent_at(i, due);
        counters.sent.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(status) = client.submit(planned.tx).await {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                let mut first = first_rejection.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| format!("{}: {}", status.code(), status.message()));
            }
        });
    }
    Ok(Offered {
        started,
        ended: Instant::now(),
        max_lag,
        room,
        outstanding,
        first_rejection,
    })
}
