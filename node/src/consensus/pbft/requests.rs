//! Client requests on their way to execution: pending (known, not yet in an accepted
//! pre-prepare), in flight (in an accepted pre-prepare, not executed) and recently executed.
//! Invariant: one request id is in at most one of the three; the executed set only covers
//! sequences above `low_watermark - window`, so it holds at most 2 × window × batch_size ids.
//! It is a first line of defence: the ledger's index of committed transaction ids is the
//! durable, unbounded one (I4).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::message::{Request, RequestId, Sequence};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Known {
    Pending,
    InFlight,
    Executed,
}

#[derive(Clone, Debug)]
pub(super) struct RequestPool<R> {
    pending: VecDeque<R>,
    pending_ids: BTreeSet<RequestId>,
    /// When the oldest request of the batch being filled arrived (primary's batch timer).
    batch_started: Option<u64>,
    in_flight: BTreeMap<RequestId, (Sequence, R)>,
    executed: BTreeMap<Sequence, Vec<RequestId>>,
    executed_ids: BTreeSet<RequestId>,
}

impl<R: Request> RequestPool<R> {
    pub fn new() -> Self {
        RequestPool {
            pending: VecDeque::new(),
            pending_ids: BTreeSet::new(),
            batch_started: None,
            in_flight: BTreeMap::new(),
            executed: BTreeMap::new(),
            executed_ids: BTreeSet::new(),
        }
    }

    pub fn known(&self, id: &RequestId) -> Option<Known> {
        if self.pending_ids.contains(id) {
            Some(Known::Pending)
        } else if self.in_flight.contains_key(id) {
            Some(Known::InFlight)
        } else if self.executed_ids.contains(id) {
            Some(Known::Executed)
        } else {
            None
        }
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Queue a request the caller checked is unknown.
    pub fn add_pending(&mut self, request: R, now: u64) {
        self.pending_ids.insert(request.id());
        self.pending.push_back(request);
        self.batch_started.get_or_insert(now);
    }

    /// The batch is full, its timer expired, or (`idle`) nothing proposed waits for agreement.
    pub fn batch_due(&self, now: u64, batch_size: usize, timeout: u64, idle: bool) -> bool {
        self.pending.len() >= batch_size
            || (idle && !self.pending.is_empty())
            || self
                .batch_started
                .is_some_and(|started| now >= started.saturating_add(timeout))
    }

    /// Take up to `batch_size` pending requests, oldest first.
    pub fn take_batch(&mut self, batch_size: usize, now: u64) -> Vec<R> {
        let count = batch_size.min(self.pending.len());
        let batch: Vec<R> = self.pending.drain(..count).collect();
        for request in &batch {
            self.pending_ids.remove(&request.id());
        }
        self.batch_started = (!self.pending.is_empty()).then_some(now);
        batch
    }

    /// Put back a batch that could not be proposed, keeping its place at the head.
    pub fn return_to_front(&mut self, batch: Vec<R>, now: u64) {
        for request in batch.into_iter().rev() {
            if self.pending_ids.insert(request.id()) {
                self.pending.push_front(request);
            }
        }
        if !self.pending.is_empty() {
            self.batch_started.get_or_insert(now);
        }
    }

    /// The requests of an accepted pre-prepare are now in flight at `sequence`.
    pub fn mark_in_flight(&mut self, sequence: Sequence, batch: &[R]) {
        let mut removed = false;
        for request in batch {
            let id = request.id();
            if self.executed_ids.contains(&id) {
                continue;
            }
            if self.pending_ids.remove(&id) {
                removed = true;
            }
            self.in_flight.insert(id, (sequence, request.clone()));
        }
        if removed {
            self.pending
                .retain(|request| self.pending_ids.contains(&request.id()));
            if self.pending.is_empty() {
                self.batch_started = None;
            }
        }
    }

    /// The batch at `sequence` executed. Requests this replica saw in flight at `sequence` in
    /// a pre-prepare that lost (a view change put another batch there) go back to pending.
    pub fn mark_executed(&mut self, sequence: Sequence, batch: &[R], now: u64) {
        let mut ids = Vec::with_capacity(batch.len());
        let mut removed = false;
        for request in batch {
            let id = request.id();
            self.in_flight.remove(&id);
            if self.pending_ids.remove(&id) {
                removed = true;
            }
            if self.executed_ids.insert(id) {
                ids.push(id);
            }
        }
        if removed {
            self.pending
                .retain(|request| self.pending_ids.contains(&request.id()));
        }
        if !ids.is_empty() {
            self.executed.entry(sequence).or_default().extend(ids);
        }
        self.requeue_in_flight(|at, _| at != sequence, now);
    }

    /// After a state transfer to `sequence`: which requests the transferred batches held is
    /// unknown here, so what was pending, or in flight at or below it, leaves the pool and is
    /// returned, for the driver to hand back those the transferred ledger does not hold
    /// (keeping them would make this replica alone suspect the primary for requests that
    /// executed, or leave ids in flight for ever; dropping them would lose its clients'
    /// requests that the primary never got).
    pub fn transferred_to(&mut self, sequence: Sequence) -> Vec<R> {
        let mut held: Vec<R> = self.pending.drain(..).collect();
        let (passed, kept): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|(_, (at, _))| *at <= sequence);
        self.in_flight = kept;
        held.extend(passed.into_values().map(|(_, request)| request));
        self.pending_ids.clear();
        self.batch_started = None;
        held
    }

    /// Requests in flight that `kept` does not keep go back to the front of the pending queue,
    /// in id order.
    pub fn requeue_in_flight(&mut self, kept: impl Fn(Sequence, &RequestId) -> bool, now: u64) {
        let dropped: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(id, (at, _))| !kept(*at, id))
            .map(|(id, _)| *id)
            .collect();
        for id in dropped.into_iter().rev() {
            if let Some((_, request)) = self.in_flight.remove(&id)
                && self.pending_ids.insert(id)
            {
                self.pending.push_front(request);
            }
        }
        if !self.pending.is_empty() {
            self.batch_started.get_or_insert(now);
        }
    }

    /// The pending requests, oldest first (for re-forwarding to a new primary).
    pub fn pending(&self) -> impl Iterator<Item = &R> {
        self.pending.iter()
    }

    /// The requests in flight, with the sequence of the pre-prepare they are in.
    pub fn in_flight(&self) -> impl Iterator<Item = (Sequence, &R)> {
        self.in_flight
            .values()
            .map(|(sequence, request)| (*sequence, request))
    }

    /// Something this replica knows of has not executed yet.
    pub fn is_waiting(&self) -> bool {
        !self.pending.is_empty() || !self.in_flight.is_empty()
    }

    /// Forget executed ids of sequences at or below `sequence`.
    pub fn collect_garbage(&mut self, sequence: Sequence) {
        let kept = self.executed.split_off(&sequence.next());
        for ids in self.executed.values() {
            for id in ids {
                self.executed_ids.remove(id);
            }
        }
        self.executed = kept;
    }

    #[cfg(test)]
    pub fn executed_len(&self) -> usize {
        self.executed_ids.len()
    }
}
