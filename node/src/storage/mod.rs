//! Durable storage of the chain and the world state behind one trait, so a block, its
//! transaction index, its state writes and the state tree's leaves are committed in one
//! atomic step. `memory` keeps it
//! in maps (tests); `rocks` keeps it in RocksDB column families (the node).

pub mod memory;
pub mod rocks;

use bytes::Bytes;

use crate::state::leaves::{LeafSource, LeafWrite};
use crate::types::{Block, Hash, TxId, TxLocation, TxStatus};

pub use memory::MemoryStore;
pub use rocks::RocksStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage failure: {0}")]
    Backend(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("there is no ledger in {}: check the node's data_dir (a node creates its ledger when it first starts)", .0.display())]
    Missing(std::path::PathBuf),
    #[error("block {got} cannot follow height {height}: blocks are appended in order")]
    OutOfOrder { height: u64, got: u64 },
}

/// The column families (RocksDB) or maps (memory) the store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// block number (u64 BE) -> encoded block
    Blocks,
    /// block hash -> block number
    BlockHashes,
    /// tx id -> block number (u64 BE) + index (u32 BE)
    TxIndex,
    /// namespace length (u16 BE) + namespace + key -> value
    State,
    /// what the consensus replica persisted (signed messages, view)
    Consensus,
    /// block number (u64 BE) -> encoded `CommitCertificate`
    Certificates,
    /// state key path (32 bytes, `state::root::key_path`) -> the state tree's leaf hash
    StateLeaves,
}

impl Column {
    pub const ALL: [Column; 7] = [
        Column::Blocks,
        Column::BlockHashes,
        Column::TxIndex,
        Column::State,
        Column::Consensus,
        Column::Certificates,
        Column::StateLeaves,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Column::Blocks => "blocks",
            Column::BlockHashes => "block_hashes",
            Column::TxIndex => "tx_index",
            Column::State => "state",
            Column::Consensus => "consensus",
            Column::Certificates => "certificates",
            Column::StateLeaves => "state_leaves",
        }
    }
}

/// A state entry visited by [`Store::for_each_state`]: (namespace, key, value).
pub type StateVisitor<'a> = dyn FnMut(&str, &[u8], &[u8]) + 'a;

/// One change to the consensus entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsensusWrite {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// A leaf of the state tree visited by [`Store::for_each_leaf`]: (path, leaf hash).
pub type LeafVisitor<'a> = dyn FnMut(Hash, Hash) + 'a;

/// The store also keeps the state tree's leaves ([`LeafSource`]): the tree reads the leaves of
/// the buckets a block touches.
pub trait Store: LeafSource + Send + Sync + 'static {
    /// Number of blocks stored (block 0 included).
    fn height(&self) -> Result<u64, StoreError>;
    fn block(&self, number: u64) -> Result<Option<Block>, StoreError>;
    fn block_number(&self, hash: &Hash) -> Result<Option<u64>, StoreError>;
    fn tx_location(&self, id: &TxId) -> Result<Option<TxLocation>, StoreError>;
    fn get_state(&self, namespace: &str, key: &[u8]) -> Result<Option<Bytes>, StoreError>;
    /// Entries of `namespace` with `start <= key < end`, in key order (an empty `end` is
    /// unbounded), at most `limit`.
    fn state_range(
        &self,
        namespace: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError>;
    fn for_each_state(&self, visit: &mut StateVisitor<'_>) -> Result<(), StoreError>;
    /// Every leaf of the state tree, in path order.
    fn for_each_leaf(&self, visit: &mut LeafVisitor<'_>) -> Result<(), StoreError>;
    /// Appends `block` (whose number must equal the height) with its index entries, the
    /// writes of its VALID results and the state tree's `leaves` that change with them,
    /// atomically and durably.
    fn commit_block(&self, block: &Block, leaves: &[LeafWrite]) -> Result<(), StoreError>;
    /// Changes the state tree's leaves alone, durably: to rebuild them from the world state,
    /// before a ledger is open on the store (an open ledger caches leaves it wrote).
    fn write_leaves(&self, leaves: &[LeafWrite]) -> Result<(), StoreError>;
    /// Removes every leaf of the state tree, durably (even entries that do not read back);
    /// like `write_leaves`, only before a ledger is open on the store.
    fn clear_leaves(&self) -> Result<(), StoreError>;
    fn get_consensus(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError>;
    /// Applies `writes` to the consensus entries in order, atomically and durably: one synced
    /// write, however many.
    fn write_consensus(&self, writes: &[ConsensusWrite]) -> Result<(), StoreError>;
    /// Every consensus entry whose key starts with `prefix`, in key order.
    fn consensus_entries(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StoreError>;
    /// Keeps the encoded commit certificate of block `number`. Not synced: a certificate lost
    /// in a crash is vouched for again by the next one, through the hash chain.
    fn put_certificate(&self, number: u64, certificate: &[u8]) -> Result<(), StoreError>;
    fn certificate(&self, number: u64) -> Result<Option<Bytes>, StoreError>;
    /// The highest block number with a stored certificate.
    fn last_certified(&self) -> Result<Option<u64>, StoreError>;
}

/// The state key of `namespace`/`key` in the flat state column.
pub fn state_key(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + namespace.len() + key.len());
    out.extend_from_slice(&(namespace.len() as u16).to_be_bytes());
    out.extend_from_slice(namespace.as_bytes());
    out.extend_from_slice(key);
    out
}

/// Splits a state column key into (namespace, key).
pub fn split_state_key(raw: &[u8]) -> Option<(&str, &[u8])> {
    let len = u16::from_be_bytes(raw.get(..2)?.try_into().ok()?) as usize;
    let namespace = std::str::from_utf8(raw.get(2..2 + len)?).ok()?;
    Some((namespace, &raw[2 + len..]))
}

/// The state writes a block applies: those of its VALID results, in order.
pub fn block_state_writes(block: &Block) -> impl Iterator<Item = (&str, &[u8], Option<&[u8]>)> {
    block
        .results
        .iter()
        .filter(|r| r.status == TxStatus::Valid)
        .flat_map(|r| r.writes.iter())
        .flat_map(|ns| {
            ns.writes
                .iter()
                .map(move |w| (ns.chaincode.as_str(), w.key.as_ref(), w.value.as_deref()))
        })
}

pub fn encode_location(location: TxLocation) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&location.block.to_be_bytes());
    out[8..].copy_from_slice(&location.index.to_be_bytes());
    out
}

pub fn decode_location(raw: &[u8]) -> Result<TxLocation, StoreError> {
    if raw.len() != 12 {
        return Err(StoreError::Corrupt("tx index entry is not 12 bytes".into()));
    }
    Ok(TxLocation {
        block: u64::from_be_bytes(raw[..8].try_into().expect("8 bytes")),
        index: u32::from_be_bytes(raw[8..].try_into().expect("4 bytes")),
    })
}

#[cfg(test)]
pub(crate) mod contract {
    //! One test suite every Store implementation passes.
    use super::*;
    use crate::types::*;

    fn block(number: u64, writes: Vec<(&str, &str, Option<&str>)>, status: TxStatus) -> Block {
        let payload = Bytes::from(format!("tx{number}"));
        let id = TxId::of_payload(&payload);
        let mut result = TxResult::failed(id, status, "");
        result.writes = writes
            .into_iter()
            .map(|(ns, k, v)| NamespaceWrites {
                chaincode: ns.into(),
                writes: vec![KvWrite {
                    key: Bytes::copy_from_slice(k.as_bytes()),
                    value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                }],
            })
            .collect();
        Block {
            header: BlockHeader {
                number,
                sequence: number,
                previous_hash: Hash::ZERO,
                transactions_root: Hash::ZERO,
                results_root: Hash::ZERO,
                state_root: Hash::ZERO,
            },
            transactions: vec![SignedTransaction {
                id,
                payload,
                signer: Bytes::new(),
                signature: Bytes::new(),
            }],
            results: vec![result],
        }
    }

    pub fn run(store: &dyn Store) {
        assert_eq!(store.height().expect("height"), 0);
        let b0 = block(
            0,
            vec![("cc", "a", Some("1")), ("cc", "b", Some("2"))],
            TxStatus::Valid,
        );
        let leaf = |n: u8| Hash([n; 32]);
        store
            .commit_block(&b0, &[(leaf(1), Some(leaf(11))), (leaf(3), Some(leaf(13)))])
            .expect("commit 0");
        let out_of_order = block(5, vec![], TxStatus::Valid);
        assert!(matches!(
            store.commit_block(&out_of_order, &[(leaf(9), Some(leaf(9)))]),
            Err(StoreError::OutOfOrder { .. })
        ));
        let b1 = block(
            1,
            vec![
                ("cc", "a", None),
                ("cc", "c", Some("3")),
                ("other", "a", Some("x")),
            ],
            TxStatus::Valid,
        );
        store
            .commit_block(
                &b1,
                &[
                    (leaf(1), None),
                    (leaf(2), Some(leaf(12))),
                    (leaf(3), Some(leaf(23))),
                    (leaf(4), Some(leaf(14))),
                ],
            )
            .expect("commit 1");
        let failed = block(2, vec![("cc", "z", Some("nope"))], TxStatus::ChaincodeError);
        store.commit_block(&failed, &[]).expect("commit 2");

        assert_eq!(store.height().expect("height"), 3);
        assert_eq!(store.block(1).expect("read"), Some(b1.clone()));
        assert_eq!(store.block(3).expect("read"), None);
        assert_eq!(store.block_number(&b1.hash()).expect("read"), Some(1));
        assert_eq!(
            store.tx_location(&b1.transactions[0].id).expect("read"),
            Some(TxLocation { block: 1, index: 0 })
        );
        assert_eq!(store.get_state("cc", b"a").expect("read"), None);
        assert_eq!(
            store.get_state("cc", b"z").expect("read"),
            None,
            "failed tx writes are not applied"
        );
        assert_eq!(
            store.get_state("other", b"a").expect("read").as_deref(),
            Some(&b"x"[..])
        );
        let range = store.state_range("cc", b"b", b"", 100).expect("range");
        let keys: Vec<&[u8]> = range.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, vec![&b"b"[..], &b"c"[..]]);
        let range = store.state_range("cc", b"", b"c", 100).expect("range");
        assert_eq!(
            range.len(),
            1,
            "end is exclusive and namespaces do not leak"
        );
        let mut seen = Vec::new();
        store
            .for_each_state(&mut |ns, k, v| seen.push((ns.to_string(), k.to_vec(), v.to_vec())))
            .expect("visit");
        assert_eq!(seen.len(), 3);
        // The leaves: what the committed blocks left (none of the refused block's), by range.
        let mut all = Vec::new();
        store
            .for_each_leaf(&mut |path, hash| all.push((path, hash)))
            .expect("visit leaves");
        assert_eq!(
            all,
            [
                (leaf(2), leaf(12)),
                (leaf(3), leaf(23)),
                (leaf(4), leaf(14))
            ]
        );
        let ranges = store
            .leaves_in(&[(leaf(0), leaf(2)), (leaf(5), leaf(8)), (leaf(3), leaf(4))])
            .expect("ranges");
        assert_eq!(
            ranges,
            [
                vec![(leaf(2), leaf(12))],
                vec![],
                vec![(leaf(3), leaf(23)), (leaf(4), leaf(14))]
            ],
            "each range in the order asked, both ends included"
        );
        store
            .write_leaves(&[(leaf(2), None), (leaf(5), Some(leaf(15)))])
            .expect("write leaves");
        let ranges = store.leaves_in(&[(leaf(0), leaf(255))]).expect("ranges");
        assert_eq!(
            ranges,
            [vec![
                (leaf(3), leaf(23)),
                (leaf(4), leaf(14)),
                (leaf(5), leaf(15))
            ]]
        );
        store.clear_leaves().expect("clear leaves");
        let ranges = store.leaves_in(&[(leaf(0), leaf(255))]).expect("ranges");
        assert_eq!(ranges, [vec![]]);
        // Ranges within one two-byte prefix, as a state tree of 16 levels or more asks (the
        // RocksDB store then reads them through a prefix iterator), beside leaves just outside.
        let path = |a: u8, b: u8, c: u8, rest: u8| {
            let mut path = [rest; 32];
            path[..3].copy_from_slice(&[a, b, c]);
            Hash(path)
        };
        store
            .write_leaves(&[
                (path(7, 6, 255, 255), Some(leaf(1))),
                (path(7, 7, 1, 0), Some(leaf(2))),
                (path(7, 7, 9, 0), Some(leaf(3))),
                (path(7, 8, 0, 0), Some(leaf(4))),
            ])
            .expect("write leaves");
        let ranges = store
            .leaves_in(&[
                (path(7, 7, 0, 0), path(7, 7, 5, 255)),
                (path(7, 7, 6, 0), path(7, 7, 255, 255)),
                (path(7, 9, 0, 0), path(7, 9, 255, 255)),
            ])
            .expect("ranges");
        assert_eq!(
            ranges,
            [
                vec![(path(7, 7, 1, 0), leaf(2))],
                vec![(path(7, 7, 9, 0), leaf(3))],
                vec![]
            ]
        );
        store.clear_leaves().expect("clear leaves");
        let put = |key: &[u8], value: &[u8]| ConsensusWrite::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        store.write_consensus(&[put(b"view", b"7")]).expect("put");
        assert_eq!(
            store.get_consensus(b"view").expect("get").as_deref(),
            Some(&b"7"[..])
        );
        store.write_consensus(&[put(b"r/1", b"r/1")]).expect("put");
        // Several at once, in order: a put then a delete of the same key leaves nothing.
        store
            .write_consensus(&[
                put(b"r/2", b"r/2"),
                put(b"r/3", b"r/3"),
                put(b"s", b"s"),
                put(b"r/9", b"r/9"),
                ConsensusWrite::Delete {
                    key: b"r/9".to_vec(),
                },
            ])
            .expect("write several at once");
        let listed: Vec<Vec<u8>> = store
            .consensus_entries(b"r/")
            .expect("list")
            .into_iter()
            .map(|(key, _)| key.to_vec())
            .collect();
        assert_eq!(listed, [b"r/1".to_vec(), b"r/2".to_vec(), b"r/3".to_vec()]);
        let delete = |key: &[u8]| ConsensusWrite::Delete { key: key.to_vec() };
        store
            .write_consensus(&[delete(b"r/1"), delete(b"r/3")])
            .expect("delete");
        let left: Vec<Vec<u8>> = store
            .consensus_entries(b"r/")
            .expect("list")
            .into_iter()
            .map(|(key, _)| key.to_vec())
            .collect();
        assert_eq!(left, [b"r/2".to_vec()]);
        assert!(store.get_consensus(b"s").expect("get").is_some());
        assert_eq!(store.last_certified().expect("last"), None);
        store.put_certificate(2, b"two").expect("put");
        store.put_certificate(1, b"one").expect("put");
        assert_eq!(store.last_certified().expect("last"), Some(2));
        assert_eq!(
            store.certificate(1).expect("get").as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(store.certificate(3).expect("get"), None);
    }
}
