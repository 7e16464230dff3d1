//! A chaincode's read hints ("function F reads the key prefix + argument i", declared in
//! Register) and the values the peer sends with a batch for them, so that a transaction's
//! reads of those keys cost no round trip on the chaincode stream; invariant: the values sent
//! are read from the batch's own view, so they are exactly what a StateRequest for that batch
//! would answer, and a hint can change where a read is answered, never what it returns.

use std::collections::HashSet;

use bytes::Bytes;
use weft_proto::{MAX_READ_HINTS, pb};

use crate::state::StateView;
use crate::types::Transaction;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadHintError {
    #[error(
        "the chaincode declares {count} read hints; a peer uses at most {MAX_READ_HINTS} (declare one per function and argument)"
    )]
    TooMany { count: usize },
    #[error("read hint {index} names no function")]
    NoFunction { index: usize },
}

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
    /// The hints of a Register message, refused whole if there are too many or one names no
    /// function.
    pub fn from_pb(hints: &[pb::ReadHint]) -> Result<ReadHints, ReadHintError> {
        if hints.len() > MAX_READ_HINTS {
            return Err(ReadHintError::TooMany { count: hints.len() });
        }
        let hints = hints
            .iter()
            .enumerate()
            .map(|(index, hint)| {
                if hint.function.is_empty() {
                    return Err(ReadHintError::NoFunction { index });
                }
                Ok(ReadHint {
                    function: hint.function.clone(),
                    arg: hint.arg as usize,
                    prefix: Bytes::copy_from_slice(hint.prefix.as_bytes()),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ReadHints { hints })
    }

    pub fn is_empty(&self) -> bool {
        self.hints.is_empty()
    }

    /// The keys the hints name for `transactions`, each once, in first-named order. A
    /// transaction without the argument, or with one that is not UTF-8 (a chaincode could not
    /// use it as a key), is given nothing for that hint; nor is an empty key.
    pub fn keys(&self, transactions: &[Transaction]) -> Vec<Bytes> {
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
                if std::str::from_utf8(arg).is_err() {
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
                    keys.push(key);
                }
            }
        }
        keys
    }

    /// The values `view` holds for the keys the hints name for `transactions`. A key the view
    /// cannot read is left out: the chaincode then asks for it and gets the error.
    pub fn prefetch(
        &self,
        transactions: &[Transaction],
        view: &dyn StateView,
    ) -> Vec<pb::PrefetchedValue> {
        if self.hints.is_empty() {
            return Vec::new();
        }
        self.keys(transactions)
            .into_iter()
            .filter_map(|key| {
                let value = view.get(&key).ok()?;
                Some(pb::PrefetchedValue { key, value })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weft_proto::{Identity, Role, TxId};

    use super::*;
    use crate::types::SignedTransaction;

    fn hint(function: &str, arg: u32, prefix: &str) -> pb::ReadHint {
        pb::ReadHint {
            function: function.to_string(),
            arg,
            prefix: prefix.to_string(),
        }
    }

    fn tx(function: &str, args: &[&[u8]]) -> Transaction {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        Transaction {
            signed: SignedTransaction {
                id: TxId([0; 32]),
                payload: Bytes::new(),
                signer: Bytes::new(),
                signature: Bytes::new(),
            },
            chaincode: "cc".to_string(),
            function: function.to_string(),
            args: args.iter().map(|a| Bytes::copy_from_slice(a)).collect(),
            created_unix_ms: 0,
            creator: Identity {
                name: "alice".to_string(),
                organization: "Org1".to_string(),
                role: Role::Client,
                verifying_key: key.verifying_key(),
                certificate: Vec::new(),
            },
        }
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
        let hints = ReadHints::from_pb(&[
            hint("CreateAsset", 0, ""),
            hint("TransferAsset", 0, ""),
            hint("TransferAsset", 1, "owner/"),
        ])
        .expect("valid hints");
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
        assert_eq!(
            hints.keys(&batch),
            vec![
                Bytes::from_static(b"asset1"),
                Bytes::from_static(b"asset2"),
                Bytes::from_static(b"owner/bob"),
            ]
        );
    }

    #[test]
    fn prefetch_sends_present_and_absent_values_and_leaves_out_unreadable_keys() {
        let hints = ReadHints::from_pb(&[hint("get", 0, "")]).expect("valid hints");
        let view = MapView(BTreeMap::from([(
            Bytes::from_static(b"there"),
            Bytes::from_static(b"1"),
        )]));
        let batch = [
            tx("get", &[b"there"]),
            tx("get", &[b"absent"]),
            tx("get", &[b"broken"]),
        ];
        assert_eq!(
            hints.prefetch(&batch, &view),
            vec![
                pb::PrefetchedValue {
                    key: Bytes::from_static(b"there"),
                    value: Some(Bytes::from_static(b"1")),
                },
                pb::PrefetchedValue {
                    key: Bytes::from_static(b"absent"),
                    value: None,
                },
            ]
        );
        assert!(ReadHints::default().prefetch(&batch, &view).is_empty());
    }

    #[test]
    fn too_many_hints_or_one_without_a_function_are_refused() {
        let many: Vec<_> = (0..=MAX_READ_HINTS as u32)
            .map(|i| hint("f", i, ""))
            .collect();
        assert_eq!(
            ReadHints::from_pb(&many),
            Err(ReadHintError::TooMany {
                count: MAX_READ_HINTS + 1
            })
        );
        assert!(ReadHints::from_pb(&many[..MAX_READ_HINTS]).is_ok());
        assert_eq!(
            ReadHints::from_pb(&[hint("f", 0, ""), hint("", 0, "")]),
            Err(ReadHintError::NoFunction { index: 1 })
        );
    }
}
