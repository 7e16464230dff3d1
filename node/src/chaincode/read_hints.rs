//! A chaincode's read hints ("function F reads the key prefix + argument i", declared in
//! Register) and the values the peer sends with a batch for them, so that a transaction's
//! reads of those keys cost no round trip on the chaincode stream; invariant: the values sent
//! are read from the batch's own view, so they are exactly what a StateRequest for that batch
//! would answer, and a hint can change where a read is answered, never what it returns.
//!
//! So that hints can never make validators disagree (a refused registration would fail a
//! deploy with a peer-local message) or make a batch too large for the stream, hints the peer
//! cannot use are dropped with a warning rather than refused, and the values sent with one
//! batch are bounded in bytes: what does not fit is read by request, as without hints.

use std::collections::HashSet;

use bytes::Bytes;
use weft_proto::{MAX_READ_HINTS, pb};

use crate::state::StateView;
use crate::types::Transaction;

/// The longest key prefix a hint may carry.
pub const MAX_PREFIX_BYTES: usize = 1024;
/// The most bytes of keys and values sent with one batch for the hints (the stream carries
/// 16 MiB per message; the batch's transactions need the rest).
pub const PREFETCH_BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// One declared hint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReadHint {
    function: String,
    arg: usize,
    prefix: Bytes,
}

/// A registered chaincode's read hints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadHints {
    hints: Vec<ReadHint>,
}

impl ReadHints {
    /// The usable hints of a Register message: the first [`MAX_READ_HINTS`] that name a
    /// function and carry a prefix of at most [`MAX_PREFIX_BYTES`]; the others are dropped and
    /// said in `dropped` (the chaincode then reads those keys by request, with the same
    /// results).
    pub fn from_pb(hints: &[pb::ReadHint]) -> (ReadHints, Vec<String>) {
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for (index, hint) in hints.iter().enumerate() {
            if hint.function.is_empty() {
                dropped.push(format!("hint {index} names no function"));
            } else if hint.prefix.len() > MAX_PREFIX_BYTES {
                dropped.push(format!(
                    "hint {index} ({}) has a prefix of {} bytes; the limit is {MAX_PREFIX_BYTES}",
                    hint.function,
                    hint.prefix.len()
                ));
            } else if kept.len() == MAX_READ_HINTS {
                dropped.push(format!(
                    "hint {index} ({}) is beyond the first {MAX_READ_HINTS}",
                    hint.function
                ));
            } else {
                kept.push(ReadHint {
                    function: hint.function.clone(),
                    arg: hint.arg as usize,
                    prefix: Bytes::copy_from_slice(hint.prefix.as_bytes()),
                });
            }
        }
        (ReadHints { hints: kept }, dropped)
    }

    /// The keys the hints name for `transactions`, each once, in first-named order, as long as
    /// their bytes add up to at most `budget`. A transaction without the argument, or with one
    /// that is not UTF-8 (a chaincode could not use it as a key), is given nothing for that
    /// hint; nor is an empty key.
    pub fn keys(&self, transactions: &[Transaction], budget: usize) -> Vec<Bytes> {
        let mut left = budget;
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        for tx in transactions {
            for hint in self
                .hints
                .iter()
                .filter(|hint| hint.function == tx.function)
            {
                let Some(arg) = tx.args.get(hint.arg) else {
                    continue;
                };
                if hint.prefix.len() + arg.len() > left || std::str::from_utf8(arg).is_err() {
                    continue;
                }
                let key = if hint.prefix.is_empty() {
                    arg.clone()
                } else {
                    let mut key = Vec::with_capacity(hint.prefix.len() + arg.len());
                    key.extend_from_slice(&hint.prefix);
                    key.extend_from_slice(arg);
                    Bytes::from(key)
                };
                if !key.is_empty() && seen.insert(key.clone()) {
                    left -= key.len();
                    keys.push(key);
                }
            }
        }
        keys
    }

    /// The values `view` holds for the keys the hints name for `transactions`, in first-named
    /// order, until `budget` bytes of keys and values are used. A key the view cannot read, or whose
    /// value does not fit, is left out: the chaincode then asks for it (and gets the error, or
    /// the value).
    pub fn prefetch(
        &self,
        transactions: &[Transaction],
        view: &dyn StateView,
        budget: usize,
    ) -> Vec<pb::PrefetchedValue> {
        if self.hints.is_empty() {
            return Vec::new();
        }
        let mut left = budget;
        let mut values = Vec::new();
        for key in self.keys(transactions, budget) {
            if key.len() > left {
                continue;
            }
            let Ok(value) = view.get(&key) else {
                continue;
            };
            let size = key.len() + value.as_ref().map_or(0, Bytes::len);
            if size > left {
                continue;
            }
            left -= size;
            values.push(pb::PrefetchedValue { key, value });
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn hint(function: &str, arg: u32, prefix: &str) -> pb::ReadHint {
        pb::ReadHint {
            function: function.to_string(),
            arg,
            prefix: prefix.to_string(),
        }
    }

    fn tx(function: &str, args: &[&[u8]]) -> Transaction {
        Transaction::unsigned_for_tests(function, args)
    }

    struct MapView(BTreeMap<Bytes, Bytes>);

    impl StateView for MapView {
        fn get(&self, key: &[u8]) -> Result<Option<Bytes>, String> {
            if key == b"broken" {
                return Err("the disk is gone".to_string());
            }
            Ok(self.0.get(key).cloned())
        }

        fn range(&self, _start: &[u8], _end: &[u8]) -> Result<Vec<(Bytes, Bytes)>, String> {
            Err("not used".to_string())
        }
    }

    #[test]
    fn keys_follow_the_function_the_argument_and_the_prefix() {
        let (hints, dropped) = ReadHints::from_pb(&[
            hint("CreateAsset", 0, ""),
            hint("TransferAsset", 0, ""),
            hint("TransferAsset", 1, "owner/"),
        ]);
        assert!(dropped.is_empty());
        let batch = [
            tx("CreateAsset", &[b"asset1", b"blue"]),
            tx("TransferAsset", &[b"asset2", b"bob"]),
            // The same key again is named once.
            tx("TransferAsset", &[b"asset2", b"bob"]),
            // Another function, a missing argument, a non-UTF-8 one, an empty one: nothing.
            tx("ReadAsset", &[b"asset3"]),
            tx("CreateAsset", &[]),
            tx("CreateAsset", &[&[0xff, 0xfe]]),
            tx("CreateAsset", &[b""]),
        ];
        let all = vec![
            Bytes::from_static(b"asset1"),
            Bytes::from_static(b"asset2"),
            Bytes::from_static(b"owner/bob"),
        ];
        assert_eq!(hints.keys(&batch, usize::MAX), all);
        // Within a budget of key bytes: "owner/bob" (9) no longer fits after 12 bytes.
        assert_eq!(hints.keys(&batch, 20), all[..2].to_vec());
    }

    #[test]
    fn prefetch_sends_present_and_absent_values_within_the_budget_and_leaves_out_unreadable_keys() {
        let (hints, _) = ReadHints::from_pb(&[hint("get", 0, "")]);
        let view = MapView(BTreeMap::from([
            (Bytes::from_static(b"there"), Bytes::from_static(b"1")),
            (Bytes::from_static(b"large"), Bytes::from(vec![7u8; 100])),
        ]));
        let batch = [
            tx("get", &[b"there"]),
            tx("get", &[b"absent"]),
            tx("get", &[b"broken"]),
            tx("get", &[b"large"]),
        ];
        let small = vec![
            pb::PrefetchedValue {
                key: Bytes::from_static(b"there"),
                value: Some(Bytes::from_static(b"1")),
            },
            pb::PrefetchedValue {
                key: Bytes::from_static(b"absent"),
                value: None,
            },
        ];
        // 6 + 6 bytes for the two small ones; the large value (105 bytes with its key) does
        // not fit in 50 and is left for the chaincode to ask for.
        assert_eq!(hints.prefetch(&batch, &view, 50), small);
        let mut all = small;
        all.push(pb::PrefetchedValue {
            key: Bytes::from_static(b"large"),
            value: Some(Bytes::from(vec![7u8; 100])),
        });
        assert_eq!(hints.prefetch(&batch, &view, PREFETCH_BUDGET_BYTES), all);
        assert!(
            ReadHints::default()
                .prefetch(&batch, &view, PREFETCH_BUDGET_BYTES)
                .is_empty()
        );
    }

    #[test]
    fn hints_the_peer_cannot_use_are_dropped_and_said_never_refused() {
        let mut declared: Vec<_> = (0..MAX_READ_HINTS as u32)
            .map(|i| hint("f", i, ""))
            .collect();
        declared.insert(1, hint("", 0, ""));
        declared.insert(2, hint("g", 0, &"p".repeat(MAX_PREFIX_BYTES + 1)));
        declared.push(hint("h", 0, ""));
        let (hints, dropped) = ReadHints::from_pb(&declared);
        assert_eq!(hints.hints.len(), MAX_READ_HINTS);
        assert!(hints.hints.iter().all(|hint| hint.function == "f"));
        assert_eq!(dropped.len(), 3, "{dropped:?}");
        assert!(dropped[0].contains("hint 1 names no function"));
        assert!(dropped[1].contains("hint 2 (g) has a prefix of 1025 bytes"));
        assert!(dropped[2].contains("beyond the first 64"));
    }
}
