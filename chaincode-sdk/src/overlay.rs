//! Pending writes (a transaction's, a batch's) and the reads and range merges over them, shared
//! by the gRPC shim and the in-memory world; invariant: the newest pending write of a key
//! (transaction over batch over committed state) decides what a read sees, and a pending
//! delete hides the key.

use std::collections::BTreeMap;
use std::ops::Bound;

use weft_proto::pb;

use crate::ChaincodeError;

/// Pending writes by key; `None` is a delete. Key order is the order writes are reported in.
pub(crate) type Writes = BTreeMap<String, Option<Vec<u8>>>;

/// Refuses keys the ledger cannot store unambiguously.
pub(crate) fn validate_key(key: &str) -> Result<(), ChaincodeError> {
    if key.is_empty() {
        return Err(ChaincodeError::InvalidKey {
            key: key.to_string(),
            reason: "keys must not be empty".to_string(),
        });
    }
    Ok(())
}

/// The pending value of `key` in `layers` (newest layer first), if any layer wrote it.
pub(crate) fn pending<'a>(layers: &[&'a Writes], key: &str) -> Option<&'a Option<Vec<u8>>> {
    layers.iter().find_map(|layer| layer.get(key))
}

/// Whether `key` lies in `[start, end)`, an empty bound being unbounded.
pub(crate) fn in_range(key: &str, start: &str, end: &str) -> bool {
    key >= start && (end.is_empty() || key < end)
}

/// Whether `[start, end)` cannot hold any key.
pub(crate) fn empty_range(start: &str, end: &str) -> bool {
    !end.is_empty() && start >= end
}

/// Merges pending writes over `committed` entries of the range `[start, end)`: `layers` are
/// applied oldest first (the batch, then the transaction). The result is sorted by key.
pub(crate) fn merge_range(
    committed: Vec<(String, Vec<u8>)>,
    layers_oldest_first: &[&Writes],
    start: &str,
    end: &str,
) -> Vec<(String, Vec<u8>)> {
    if empty_range(start, end) {
        return Vec::new();
    }
    let mut merged: BTreeMap<String, Vec<u8>> = committed
        .into_iter()
        .filter(|(key, _)| in_range(key, start, end))
        .collect();
    let upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end)
    };
    for layer in layers_oldest_first {
        for (key, value) in layer.range::<str, _>((Bound::Included(start), upper)) {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
    }
    merged.into_iter().collect()
}

/// Applies `newer` over `older` (a successful transaction's writes into its batch's).
pub(crate) fn apply(older: &mut Writes, newer: Writes) {
    older.extend(newer);
}

/// The wire form of a transaction's writes, in key order.
pub(crate) fn to_kv_writes(writes: &Writes) -> Vec<pb::KvWrite> {
    writes
        .iter()
        .map(|(key, value)| pb::KvWrite {
            key: key.clone().into_bytes().into(),
            value: value.clone().map(Into::into),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(entries: &[(&str, Option<&str>)]) -> Writes {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    fn committed(entries: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn keys(entries: &[(String, Vec<u8>)]) -> Vec<String> {
        entries.iter().map(|(k, _)| k.clone()).collect()
    }

    #[test]
    fn transaction_layer_shadows_batch_layer() {
        let batch = writes(&[("a", Some("batch")), ("b", Some("batch"))]);
        let tx = writes(&[("a", None)]);
        assert_eq!(pending(&[&tx, &batch], "a"), Some(&None));
        assert_eq!(pending(&[&tx, &batch], "b"), Some(&Some(b"batch".to_vec())));
        assert_eq!(pending(&[&tx, &batch], "c"), None);
    }

    #[test]
    fn range_is_start_inclusive_end_exclusive() {
        let merged = merge_range(
            committed(&[("a", "1"), ("b", "2"), ("c", "3")]),
            &[],
            "a",
            "c",
        );
        assert_eq!(keys(&merged), ["a", "b"]);
    }

    #[test]
    fn empty_bounds_are_unbounded() {
        let all = committed(&[("a", "1"), ("b", "2")]);
        assert_eq!(keys(&merge_range(all.clone(), &[], "", "")), ["a", "b"]);
        assert_eq!(keys(&merge_range(all.clone(), &[], "b", "")), ["b"]);
        assert_eq!(keys(&merge_range(all, &[], "", "b")), ["a"]);
    }

    #[test]
    fn pending_writes_and_deletes_are_merged_newest_last() {
        let batch = writes(&[("b", None), ("bb", Some("batch")), ("z", Some("out"))]);
        let tx = writes(&[("a", Some("tx")), ("bb", Some("tx")), ("c", None)]);
        let merged = merge_range(
            committed(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]),
            &[&batch, &tx],
            "a",
            "d",
        );
        assert_eq!(merged, committed(&[("a", "tx"), ("bb", "tx")]));
    }

    #[test]
    fn inverted_range_is_empty_even_with_pending_writes() {
        let tx = writes(&[("b", Some("x"))]);
        assert!(merge_range(Vec::new(), &[&tx], "c", "a").is_empty());
        assert!(empty_range("c", "a"));
        assert!(empty_range("a", "a"));
        assert!(!empty_range("a", ""));
    }

    #[test]
    fn kv_writes_keep_key_order_and_deletes() {
        let kv = to_kv_writes(&writes(&[("b", None), ("a", Some("1"))]));
        assert_eq!(kv[0].key.as_ref(), b"a");
        assert_eq!(kv[0].value.as_deref(), Some(&b"1"[..]));
        assert_eq!(kv[1].key.as_ref(), b"b");
        assert_eq!(kv[1].value, None);
    }

    #[test]
    fn empty_key_is_refused() {
        assert!(validate_key("").is_err());
        assert!(validate_key("k").is_ok());
    }
}
