//! Transactions accepted and not yet committed: refuses a second submission of a pending id,
//! bounds how many may wait, and wakes everyone waiting for a transaction's commit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::types::{Block, TxId, TxResult};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    #[error(
        "transaction {0} is already pending: wait for its commit instead of submitting it again"
    )]
    AlreadyPending(TxId),
    #[error(
        "{0} transactions are already waiting to be ordered or having their signatures checked: retry shortly"
    )]
    Full(usize),
}

/// What a waiter learns when its transaction commits.
#[derive(Debug, Clone)]
pub struct Committed {
    pub block: u64,
    pub result: TxResult,
}

pub struct Mempool {
    capacity: usize,
    pending: Mutex<Pending>,
}

/// What the mempool's lock guards.
#[derive(Default)]
struct Pending {
    entries: HashMap<TxId, Entry>,
    /// Places held by [`Reservation`]s: transactions whose signatures are being checked.
    reserved: usize,
}

impl Pending {
    fn taken(&self) -> usize {
        self.entries.len() + self.reserved
    }
}

/// Places in the mempool held for transactions while their signatures are checked, so that an
/// overloaded validator checks only what it has room for. Room judged when a call arrived
/// and taken only at `admit`, a few milliseconds later (more when the machine is saturated),
/// let the calls arriving meanwhile be checked against the same room, and some be refused
/// after their check (at 150% of peak load in `weft bench`, 1.06 signatures checked at
/// admission per committed transaction; 1.00 with reservations). What a reservation does
/// not use returns to the mempool when it is released or dropped.
pub struct Reservation<'a> {
    mempool: &'a Mempool,
    places: usize,
}

impl Reservation<'_> {
    /// The places it still holds.
    pub fn places(&self) -> usize {
        self.places
    }

    /// Gives `count` of its places (at most all) back to the mempool now.
    pub fn release(&mut self, count: usize) {
        let count = count.min(self.places);
        if count > 0 {
            self.places -= count;
            self.mempool.lock().reserved -= count;
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.places > 0 {
            self.mempool.lock().reserved -= self.places;
        }
    }
}

struct Entry {
    admitted: Instant,
    waiters: Vec<oneshot::Sender<Committed>>,
}

impl Mempool {
    pub fn new(capacity: usize) -> Mempool {
        Mempool {
            capacity,
            pending: Mutex::new(Pending::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds up to `wanted` places (as many as there is room for) until they are used by
    /// [`Mempool::admit`] or the reservation is released or dropped.
    pub fn reserve(&self, wanted: usize) -> Reservation<'_> {
        let mut pending = self.lock();
        let places = wanted.min(self.capacity.saturating_sub(pending.taken()));
        pending.reserved += places;
        Reservation {
            mempool: self,
            places,
        }
    }

    /// Records `id` as pending, in a place of `reservation` when it holds one, else where
    /// there is room; with `wait`, also returns a receiver for its commit.
    pub fn admit(
        &self,
        id: TxId,
        wait: bool,
        reservation: &mut Reservation<'_>,
    ) -> Result<Option<oneshot::Receiver<Committed>>, MempoolError> {
        self.check_owner(reservation);
        let mut pending = self.lock();
        if pending.entries.contains_key(&id) {
            return Err(MempoolError::AlreadyPending(id));
        }
        if reservation.places > 0 {
            reservation.places -= 1;
            pending.reserved -= 1;
        } else if pending.taken() >= self.capacity {
            return Err(MempoolError::Full(pending.taken()));
        }
        let mut waiters = Vec::new();
        let receiver = wait.then(|| {
            let (sender, receiver) = oneshot::channel();
            waiters.push(sender);
            receiver
        });
        pending.entries.insert(
            id,
            Entry {
                admitted: Instant::now(),
                waiters,
            },
        );
        Ok(receiver)
    }

    /// Forgets `id` without a commit (it could not be queued, or was found committed
    /// already) and gives its place back to `reservation`, for another transaction of the
    /// same call.
    pub fn abandon(&self, id: &TxId, reservation: &mut Reservation<'_>) {
        self.check_owner(reservation);
        let mut pending = self.lock();
        if pending.entries.remove(id).is_some() {
            pending.reserved += 1;
            reservation.places += 1;
        }
    }

    fn check_owner(&self, reservation: &Reservation<'_>) {
        assert!(
            std::ptr::eq(reservation.mempool, self),
            "a reservation is used in the mempool that made it"
        );
    }

    /// Wakes the waiters of every transaction in `block`; returns how long each transaction
    /// that this peer admitted waited from admission to commit.
    pub fn committed(&self, block: &Block) -> Vec<Duration> {
        let mut pending = self.lock();
        let mut latencies = Vec::new();
        for result in &block.results {
            if let Some(entry) = pending.entries.remove(&result.tx_id) {
                latencies.push(entry.admitted.elapsed());
                for waiter in entry.waiters {
                    let _ = waiter.send(Committed {
                        block: block.number(),
                        result: result.clone(),
                    });
                }
            }
        }
        latencies
    }

    /// Forgets pending ids that an ordered batch dropped (they were committed before).
    pub fn dropped(&self, ids: impl IntoIterator<Item = TxId>) {
        let mut pending = self.lock();
        for id in ids {
            pending.entries.remove(&id);
        }
    }

    /// Transactions pending (reserved places not counted).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether `id` is pending here.
    pub fn contains(&self, id: &TxId) -> bool {
        self.lock().entries.contains_key(id)
    }

    /// How many more transactions it admits now, places reserved excluded.
    #[cfg(test)]
    fn room(&self) -> usize {
        self.capacity.saturating_sub(self.lock().taken())
    }

    /// The refusal `admit` gives when there is no room.
    pub fn full(&self) -> MempoolError {
        MempoolError::Full(self.lock().taken())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_duplicates_and_bounds_size() {
        let pool = Mempool::new(2);
        let mut none = pool.reserve(0);
        let a = TxId([1; 32]);
        assert_eq!(pool.room(), 2);
        pool.admit(a, false, &mut none).expect("first");
        assert_eq!(pool.room(), 1);
        assert!(pool.contains(&a));
        assert!(
            matches!(pool.admit(a, true, &mut none), Err(MempoolError::AlreadyPending(id)) if id == a)
        );
        pool.admit(TxId([2; 32]), false, &mut none).expect("second");
        assert_eq!(pool.room(), 0);
        assert_eq!(pool.full(), MempoolError::Full(2));
        assert!(matches!(
            pool.admit(TxId([3; 32]), false, &mut none),
            Err(MempoolError::Full(2))
        ));
        pool.abandon(&a, &mut none);
        drop(none);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.room(), 1);
    }

    /// Places reserved for transactions being checked are theirs: others are refused for
    /// want of room meanwhile, a reserved place is used at admit even though the pool looks
    /// full, and what is not used returns when the reservation is dropped.
    #[test]
    fn reserved_places_are_held_for_their_checks_and_returned_unused() {
        let pool = Mempool::new(3);
        pool.admit(TxId([1; 32]), false, &mut pool.reserve(0))
            .expect("first");
        let mut reservation = pool.reserve(5);
        assert_eq!(reservation.places(), 2, "only the room there is");
        assert_eq!(pool.room(), 0);
        assert_eq!(pool.reserve(1).places(), 0, "nothing left to reserve");
        assert!(
            matches!(
                pool.admit(TxId([9; 32]), false, &mut pool.reserve(0)),
                Err(MempoolError::Full(3))
            ),
            "an unreserved admit does not take a reserved place"
        );
        pool.admit(TxId([2; 32]), true, &mut reservation)
            .expect("a reserved place")
            .expect("a receiver when waiting");
        assert_eq!((reservation.places(), pool.len(), pool.room()), (1, 2, 0));
        assert!(
            matches!(
                pool.admit(TxId([2; 32]), false, &mut reservation),
                Err(MempoolError::AlreadyPending(_))
            ),
            "a duplicate uses no place"
        );
        assert_eq!(reservation.places(), 1);
        pool.abandon(&TxId([2; 32]), &mut reservation);
        assert_eq!(
            (reservation.places(), pool.len(), pool.room()),
            (2, 1, 0),
            "an abandoned transaction's place returns to the reservation"
        );
        reservation.release(1);
        assert_eq!((reservation.places(), pool.room()), (1, 1));
        drop(reservation);
        assert_eq!(pool.room(), 2, "the unused place returns");
        pool.admit(TxId([5; 32]), false, &mut pool.reserve(0))
            .expect("in the returned room");
        let mut empty = pool.reserve(0);
        pool.admit(TxId([3; 32]), false, &mut empty)
            .expect("with no place reserved, admit where there is room");
        assert!(matches!(
            pool.admit(TxId([4; 32]), false, &mut empty),
            Err(MempoolError::Full(3))
        ));
    }
}
