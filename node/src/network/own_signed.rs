//! The replica's own recent pre-prepares and prepares in the form it signed them.
//!
//! The core holds its own messages without a signed form (`Verified::signed` is `None`), and
//! the edge signs one again whenever it must carry it as proof: in the prepared certificate
//! the journal writes for every sequence, in a view change. Signing is deterministic, so the
//! bytes are the same; but for the primary that is its whole batch encoded and hashed again
//! per sequence. This remembers the last few it signed, so the journal's copy is the one
//! that went out. A memo only: what is forgotten is signed again, to the same bytes.

use std::collections::VecDeque;
use std::sync::Mutex;

use weft_proto::pb;

use crate::consensus::pbft::{Message, MessageKind, Sequence, View};
use crate::network::wire::PbftMessage;
use crate::types::Hash;

/// How many signed messages are remembered. A sequence's prepared certificate is journaled a
/// few messages after its pre-prepare went out; at most this many batches are held (16 of the
/// default `batch_size`, 500 transactions of about 1 KB: 8 MB).
pub const KEPT: usize = 16;

/// Which message: a replica signs one pre-prepare and one prepare per view and sequence, and
/// the digest covers the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    kind: MessageKind,
    view: View,
    sequence: Sequence,
    digest: Hash,
}

impl Key {
    /// Pre-prepares and prepares only: the messages prepared certificates carry.
    fn of(message: &PbftMessage) -> Option<Key> {
        let (view, sequence, digest) = match message {
            Message::PrePrepare(m) => (m.view, m.sequence, m.digest),
            Message::Prepare(m) => (m.view, m.sequence, m.digest),
            _ => return None,
        };
        Some(Key {
            kind: message.kind(),
            view,
            sequence,
            digest,
        })
    }
}

#[derive(Default)]
pub struct OwnSigned {
    recent: Mutex<VecDeque<(Key, pb::SignedConsensusMessage)>>,
}

impl OwnSigned {
    fn recent(&self) -> std::sync::MutexGuard<'_, VecDeque<(Key, pb::SignedConsensusMessage)>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers `signed`, the replica's signed form of `message`, if it is of a kind kept.
    pub fn remember(&self, message: &PbftMessage, signed: &pb::SignedConsensusMessage) {
        let Some(key) = Key::of(message) else {
            return;
        };
        let mut recent = self.recent();
        if recent.iter().any(|(k, _)| *k == key) {
            return;
        }
        if recent.len() >= KEPT {
            recent.pop_front();
        }
        recent.push_back((key, signed.clone()));
    }

    /// The signed form of `message` if it is remembered.
    pub fn find(&self, message: &PbftMessage) -> Option<pb::SignedConsensusMessage> {
        let key = Key::of(message)?;
        self.recent()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, signed)| signed.clone())
    }

    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.recent().len()
    }
}
