//! The replica's inbound consensus queue, shared fairly between the validators that feed it.
//! Invariant: each validator, as its TLS certificate names it (not as its messages claim: a
//! validator can relay messages other validators signed), holds at most `per_sender` verified
//! deliveries in the queue, so a validator that floods fills only its own share and never
//! crowds out the others; the whole queue holds at most validators × `per_sender` deliveries.
//! A delivery is one message, or one relayed batch of client requests (at most
//! `wire::MAX_RELAYED_REQUESTS`): a busy validator's relays then take a few places of its
//! share, not all of it, and its votes still get in.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::wire::PbftMessage;
use crate::consensus::pbft::{ReplicaId, Verified};

/// Why a message did not enter the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the validator that sent it already has its share of the inbound queue waiting")]
    ShareFull,
    #[error("the replica stopped reading its inbound queue")]
    Closed,
}

/// Verified messages that arrived together, and the validator whose connection they came over.
struct Queued {
    via: usize,
    messages: Vec<Verified<PbftMessage>>,
}

/// The service's end: one per node, cloned into every inbound stream.
#[derive(Clone)]
pub struct InboundSender {
    queue: mpsc::Sender<Queued>,
    held: Arc<[AtomicUsize]>,
    per_sender: usize,
}

/// The driver's end.
pub struct InboundReceiver {
    queue: mpsc::Receiver<Queued>,
    held: Arc<[AtomicUsize]>,
}

/// A queue for `validators` senders with room for `per_sender` messages from each.
pub fn channel(validators: usize, per_sender: usize) -> (InboundSender, InboundReceiver) {
    let validators = validators.max(1);
    let per_sender = per_sender.max(1);
    let (tx, rx) = mpsc::channel(validators * per_sender);
    let held: Arc<[AtomicUsize]> = (0..validators).map(|_| AtomicUsize::new(0)).collect();
    (
        InboundSender {
            queue: tx,
            held: held.clone(),
            per_sender,
        },
        InboundReceiver { queue: rx, held },
    )
}

impl InboundSender {
    /// Queue `message`, which arrived over `via`'s connection, unless `via` already has its
    /// share waiting.
    pub fn offer(&self, via: ReplicaId, message: Verified<PbftMessage>) -> Result<(), Refused> {
        self.offer_all(via, vec![message])
    }

    /// Queue `messages` (one delivery: a relayed batch) like [`InboundSender::offer`].
    pub fn offer_all(
        &self,
        via: ReplicaId,
        messages: Vec<Verified<PbftMessage>>,
    ) -> Result<(), Refused> {
        let via = via.0 as usize;
        let Some(held) = self.held.get(via) else {
            // Not a validator of this queue: the service admits validators only.
            return Err(Refused::ShareFull);
        };
        if held.fetch_add(1, Ordering::AcqRel) >= self.per_sender {
            held.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::ShareFull);
        }
        // The shares add up to the channel's capacity, so a full channel means the receiver
        // is gone or (for a moment) has not yet released a slot it took.
        self.queue.try_send(Queued { via, messages }).map_err(|e| {
            held.fetch_sub(1, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => Refused::ShareFull,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }

    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

impl InboundReceiver {
    /// The next delivery's messages, in arrival order.
    pub async fn recv(&mut self) -> Option<Vec<Verified<PbftMessage>>> {
        let queued = self.queue.recv().await?;
        Some(self.release(queued))
    }

    /// The next delivery's messages if one waits now.
    pub fn try_recv(&mut self) -> Option<Vec<Verified<PbftMessage>>> {
        let queued = self.queue.try_recv().ok()?;
        Some(self.release(queued))
    }

    /// Frees the delivery's place in its sender's share.
    fn release(&self, Queued { via, messages }: Queued) -> Vec<Verified<PbftMessage>> {
        if let Some(held) = self.held.get(via) {
            held.fetch_sub(1, Ordering::AcqRel);
        }
        messages
    }

    /// How many deliveries wait.
    pub fn depth(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::pbft::{Message, Prepare, Sequence, View};
    use crate::types::Hash;

    fn prepare(sequence: u64) -> Verified<PbftMessage> {
        Verified::unsigned(
            ReplicaId(1),
            Message::Prepare(Prepare {
                view: View(0),
                sequence: Sequence(sequence),
                digest: Hash([1; 32]),
            }),
        )
    }

    fn sequence_of(message: &Verified<PbftMessage>) -> u64 {
        match &message.message {
            Message::Prepare(p) => p.sequence.0,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_flooding_validator_fills_only_its_own_share() {
        let (tx, mut rx) = channel(4, 3);
        for sequence in 0..3 {
            tx.offer(ReplicaId(3), prepare(sequence))
                .expect("within the share");
        }
        assert_eq!(
            tx.offer(ReplicaId(3), prepare(99)),
            Err(Refused::ShareFull),
            "validator 3's share is full"
        );
        // The others still get in: their shares are untouched by validator 3's flood.
        for via in [0, 1, 2] {
            for sequence in 0..3 {
                tx.offer(ReplicaId(via), prepare(10 * (via + 1) as u64 + sequence))
                    .expect("another validator's share");
            }
        }
        assert_eq!(rx.depth(), 12);
        // Messages are read in arrival order; reading one frees a slot of its sender's share.
        assert_eq!(rx.recv().await.map(|m| sequence_of(&m[0])), Some(0));
        tx.offer(ReplicaId(3), prepare(3))
            .expect("validator 3 has room again");
        assert_eq!(tx.offer(ReplicaId(3), prepare(4)), Err(Refused::ShareFull));
        assert_eq!(
            tx.offer(ReplicaId(9), prepare(0)),
            Err(Refused::ShareFull),
            "a sender outside the validator set has no share"
        );
        assert_eq!(rx.recv().await.map(|m| sequence_of(&m[0])), Some(1));
        // A relayed batch is one delivery: it takes one place of its sender's share.
        let batch: Vec<_> = (100..110).map(prepare).collect();
        tx.offer_all(ReplicaId(3), batch)
            .expect("one place left in validator 3's share");
        assert_eq!(tx.offer(ReplicaId(3), prepare(5)), Err(Refused::ShareFull));
        assert_eq!(rx.try_recv().map(|m| sequence_of(&m[0])), Some(2));
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(
            tx.offer(ReplicaId(3), prepare(6)),
            Err(Refused::Closed),
            "validator 3 had room, but nobody reads any more"
        );
    }
}
