//! The ledger: the hash chain of blocks over a [`Store`], the world state's Merkle tree, and
//! the tip. Blocks are appended one at a time in order; each new block's header commits to its
//! predecessor, its transactions, its results and the state root after it.

pub mod verify;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::broadcast;
use weft_proto::Genesis;

use crate::crypto;
use crate::state::leaves::{LeafCache, LeafWrite, MemoryLeaves};
use crate::state::root::{
    SUMMARY_DEPTH, StateTree, TreeBuilder, TreeUpdate, key_path, leaf_hash, value_hash,
};
use crate::storage::{Store, StoreError, block_state_writes};
use crate::types::{Block, BlockHeader, ChainTip, Hash, Transaction, TxId, TxLocation, TxResult};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the data directory holds a chain of another network (block 0 differs from this genesis): use a fresh data directory or the genesis it was created with"
    )]
    WrongNetwork,
    #[error(
        "the world state in storage does not match the state root of block {block} (stored {stored}, chain says {expected}): run `weft ledger verify` and restore the data directory"
    )]
    StateMismatch {
        block: u64,
        stored: Hash,
        expected: Hash,
    },
    #[error("block {number} fetched from a peer does not fit this chain: {reason}")]
    ForeignBlock { number: u64, reason: String },
}

struct Inner {
    tree: StateTree,
    /// The leaves of the buckets the last blocks wrote, in front of the store's leaf column.
    leaf_cache: LeafCache,
    tip: ChainTip,
}

impl Inner {
    /// Plans `block`'s writes against the tree, reading leaves through the cache.
    fn plan(&self, block: &Block, store: &dyn Store) -> Result<TreeUpdate, StoreError> {
        self.tree
            .plan(block_state_writes(block), &self.leaf_cache.over(store))
    }

    /// Adopts a plan whose leaf writes are now stored, and caches its buckets.
    fn adopt(&mut self, mut update: TreeUpdate) {
        self.leaf_cache.remember(update.take_buckets());
        self.tree.adopt(update);
    }
}

pub struct Ledger {
    store: Arc<dyn Store>,
    chain_id: String,
    inner: Mutex<Inner>,
    blocks: broadcast::Sender<Arc<Block>>,
}

/// Block 0: it commits to the genesis configuration and holds no transactions.
pub fn genesis_block(genesis: &Genesis) -> Block {
    Block {
        header: BlockHeader {
            number: 0,
            sequence: 0,
            previous_hash: Hash::ZERO,
            transactions_root: Hash(genesis.hash()),
            results_root: crypto::results_root(&[]),
            state_root: Hash::ZERO,
        },
        transactions: Vec::new(),
        results: Vec::new(),
    }
}

impl Ledger {
    /// Opens the ledger in `store`, writing block 0 on first start, and builds the state
    /// tree's summary from its stored leaves (see [`open_tree`]).
    pub fn open(store: Arc<dyn Store>, genesis: &Genesis) -> Result<Ledger, LedgerError> {
        let first = genesis_block(genesis);
        if store.height()? == 0 {
            store.commit_block(&first, &[])?;
        } else if store.block(0)?.as_ref() != Some(&first) {
            return Err(LedgerError::WrongNetwork);
        }
        let height = store.height()?;
        let last = store
            .block(height - 1)?
            .ok_or_else(|| StoreError::Corrupt(format!("block {} is missing", height - 1)))?;
        let expected = last.header.state_root;
        let tree = open_tree(store.as_ref(), expected, last.number())?;
        let mut transactions = 0;
        for n in 0..height {
            // Counting once at start keeps the tip exact without a stored counter.
            if let Some(b) = store.block(n)? {
                transactions += b.transactions.len() as u64;
            }
        }
        let tip = ChainTip {
            height,
            hash: last.hash(),
            state_root: last.header.state_root,
            transactions,
        };
        let (blocks, _) = broadcast::channel(1024);
        Ok(Ledger {
            store,
            chain_id: genesis.chain_id.clone(),
            inner: Mutex::new(Inner {
                tree,
                leaf_cache: LeafCache::default(),
                tip,
            }),
            blocks,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub fn tip(&self) -> ChainTip {
        self.lock().tip.clone()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Receives every block appended from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Block>> {
        self.blocks.subscribe()
    }

    /// Builds the next block from executed transactions and appends it durably. The
    /// transactions root is built from the hashes the transactions were admitted with.
    pub fn append(
        &self,
        sequence: u64,
        transactions: Vec<Transaction>,
        results: Vec<TxResult>,
    ) -> Result<Arc<Block>, LedgerError> {
        let hashes: Vec<Hash> = transactions.iter().map(|tx| tx.hash).collect();
        debug_assert!(
            transactions
                .iter()
                .all(|tx| tx.hash == crypto::transaction_hash(&tx.signed)),
            "a transaction's hash is of its signed bytes"
        );
        let transactions = transactions
            .into_iter()
            .map(Transaction::into_signed)
            .collect();
        let mut inner = self.lock();
        let mut block = Block {
            header: BlockHeader {
                number: inner.tip.height,
                sequence,
                previous_hash: inner.tip.hash,
                transactions_root: crypto::transactions_root_of(&hashes),
                results_root: crypto::results_root(&results),
                state_root: Hash::ZERO,
            },
            transactions,
            results,
        };
        let update = inner.plan(&block, self.store.as_ref())?;
        block.header.state_root = update.root();
        // A failed write leaves the tree and the cache as they were (the caller stops the node).
        self.store.commit_block(&block, update.leaf_writes())?;
        inner.adopt(update);
        Ok(self.advance(inner, block))
    }

    /// Appends a block another peer executed (state transfer, following): it must extend the
    /// tip, its roots must match its contents, and applying its write sets must give its state
    /// root. Nothing is stored when a check fails.
    pub fn append_block(&self, block: Block) -> Result<Arc<Block>, LedgerError> {
        let number = block.number();
        let foreign = |reason: &str| LedgerError::ForeignBlock {
            number,
            reason: reason.to_string(),
        };
        let mut inner = self.lock();
        if number != inner.tip.height {
            return Err(foreign(&format!("the next block is {}", inner.tip.height)));
        }
        if block.header.previous_hash != inner.tip.hash {
            return Err(foreign("its previous hash is not this chain's tip"));
        }
        crypto::check_block_roots(&block)
            .map_err(|root| foreign(&format!("its {root} does not match its contents")))?;
        let update = inner.plan(&block, self.store.as_ref())?;
        if update.root() != block.header.state_root {
            return Err(foreign("its write sets do not produce its state root"));
        }
        self.store.commit_block(&block, update.leaf_writes())?;
        inner.adopt(update);
        Ok(self.advance(inner, block))
    }

    /// Makes `block`, just stored, the tip and hands it to subscribers.
    fn advance(&self, mut inner: std::sync::MutexGuard<'_, Inner>, block: Block) -> Arc<Block> {
        inner.tip = ChainTip {
            height: inner.tip.height + 1,
            hash: block.hash(),
            state_root: block.header.state_root,
            transactions: inner.tip.transactions + block.transactions.len() as u64,
        };
        let block = Arc::new(block);
        drop(inner);
        let _ = self.blocks.send(block.clone());
        block
    }

    pub fn block(&self, number: u64) -> Result<Option<Block>, LedgerError> {
        Ok(self.store.block(number)?)
    }

    pub fn block_by_hash(&self, hash: &Hash) -> Result<Option<Block>, LedgerError> {
        match self.store.block_number(hash)? {
            Some(n) => self.block(n),
            None => Ok(None),
        }
    }

    pub fn tx_location(&self, id: &TxId) -> Result<Option<TxLocation>, LedgerError> {
        Ok(self.store.tx_location(id)?)
    }

    pub fn get_state(&self, namespace: &str, key: &[u8]) -> Result<Option<Bytes>, LedgerError> {
        Ok(self.store.get_state(namespace, key)?)
    }

    pub fn state_range(
        &self,
        namespace: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, LedgerError> {
        Ok(self.store.state_range(namespace, start, end, limit)?)
    }
}

/// An order-independent digest of a set of leaves: their number and the XOR of their hashes.
/// At start it tells whether the leaf column holds exactly the world state's keys and values
/// without holding either in memory (it catches damage; the chain's roots vouch for the rest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LeafDigest {
    count: u64,
    xor: [u8; 32],
}

impl LeafDigest {
    fn add(&mut self, leaf: &Hash) {
        self.count += 1;
        for (x, b) in self.xor.iter_mut().zip(leaf.0) {
            *x ^= b;
        }
    }
}

/// The digest of the world state's leaves, as the state column holds them.
fn state_digest(store: &dyn Store) -> Result<LeafDigest, StoreError> {
    let mut digest = LeafDigest::default();
    store.for_each_state(&mut |ns, key, value| {
        digest.add(&leaf_hash(&key_path(ns, key), &value_hash(value)));
    })?;
    Ok(digest)
}

/// The state tree over the leaves `store` holds, and their digest.
fn stored_tree(store: &dyn Store) -> Result<(StateTree, LeafDigest), StoreError> {
    let mut builder = TreeBuilder::new(SUMMARY_DEPTH);
    let mut digest = LeafDigest::default();
    store.for_each_leaf(&mut |path, leaf| {
        digest.add(&leaf);
        builder.push(path, leaf);
    })?;
    Ok((builder.finish()?, digest))
}

/// The state tree at start: the stored leaves' summary, when the leaves give the last
/// block's state root and hold exactly the world state. Otherwise (a data directory written
/// before the leaf column existed, or a damaged one) the leaves are rebuilt from the world
/// state, a few thousand at a time; when those do not give the root either, the world state
/// is not the chain's and the node refuses to start.
fn open_tree(store: &dyn Store, expected: Hash, block: u64) -> Result<StateTree, LedgerError> {
    let state = state_digest(store)?;
    match stored_tree(store) {
        Ok((tree, leaves)) if tree.root() == expected && leaves == state => return Ok(tree),
        Ok(_) => {}
        Err(StoreError::Corrupt(reason)) => {
            tracing::warn!(%reason, "the state tree's stored leaves do not read back");
        }
        Err(e) => return Err(e.into()),
    }
    rebuild_leaves(store)?;
    let (tree, leaves) = stored_tree(store)?;
    if tree.root() != expected || leaves != state {
        return Err(LedgerError::StateMismatch {
            block,
            stored: tree.root(),
            expected,
        });
    }
    tracing::warn!(
        keys = tree.len(),
        "the state tree's stored leaves did not match the chain and the world state: rebuilt them from the world state"
    );
    Ok(tree)
}

/// Replaces the stored leaves with those of the world state, a few thousand at a time.
fn rebuild_leaves(store: &dyn Store) -> Result<(), StoreError> {
    const BATCH: usize = 4096;
    store.clear_leaves()?;
    let mut batch: Vec<LeafWrite> = Vec::with_capacity(BATCH);
    let mut failed = None;
    store.for_each_state(&mut |ns, key, value| {
        let path = key_path(ns, key);
        batch.push((path, Some(leaf_hash(&path, &value_hash(value)))));
        if batch.len() == BATCH && failed.is_none() {
            failed = store.write_leaves(&batch).err();
            batch.clear();
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    store.write_leaves(&batch)
}

/// The state tree of the world state `store` holds, and its leaves in memory, built a few
/// thousand keys at a time: for `weft ledger verify`, which replays the chain in memory too.
fn state_tree(store: &dyn Store) -> Result<(StateTree, MemoryLeaves), StoreError> {
    const BATCH: usize = 4096;
    fn apply(
        tree: &mut StateTree,
        leaves: &mut MemoryLeaves,
        batch: &mut Vec<(String, Vec<u8>, Vec<u8>)>,
    ) {
        tree.apply(
            batch
                .iter()
                .map(|(ns, key, value)| (ns.as_str(), key.as_slice(), Some(value.as_slice()))),
            leaves,
        );
        batch.clear();
    }
    let mut tree = StateTree::new();
    let mut leaves = MemoryLeaves::new();
    let mut batch = Vec::with_capacity(BATCH);
    store.for_each_state(&mut |ns, key, value| {
        batch.push((ns.to_string(), key.to_vec(), value.to_vec()));
        if batch.len() == BATCH {
            apply(&mut tree, &mut leaves, &mut batch);
        }
    })?;
    apply(&mut tree, &mut leaves, &mut batch);
    Ok((tree, leaves))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;
    use crate::types::{KvWrite, NamespaceWrites, SignedTransaction, TxStatus};
    use weft_proto::genesis::{ConsensusParams, OrganizationInfo, ValidatorInfo};
    use weft_proto::{CertificateAuthority, Role};

    fn genesis(chain: &str) -> Genesis {
        let ca = CertificateAuthority::generate("Org1").expect("ca");
        let validator = ca.issue("validator0", Role::Validator).expect("issue");
        Genesis {
            chain_id: chain.into(),
            organizations: vec![OrganizationInfo {
                name: "Org1".into(),
                ca_certificate: ca.certificate_pem().to_string(),
            }],
            validators: vec![ValidatorInfo {
                id: "validator0".into(),
                certificate: validator.certificate_pem,
                address: "127.0.0.1:1".into(),
                consensus_address: String::new(),
            }],
            consensus: ConsensusParams::default(),
        }
    }

    fn write_result(n: u8, status: TxStatus) -> (Transaction, TxResult) {
        let payload = Bytes::from(vec![n]);
        let id = TxId::of_payload(&payload);
        let signed = SignedTransaction {
            id,
            payload,
            signer: Bytes::new(),
            signature: Bytes::new(),
        };
        let tx = Transaction::decoded_for_tests(signed, "put", &[]);
        let mut result = TxResult::failed(id, status, "");
        result.writes = vec![NamespaceWrites {
            chaincode: "cc".into(),
            writes: vec![KvWrite {
                key: Bytes::from(vec![n]),
                value: Some(Bytes::from_static(b"v")),
            }],
        }];
        (tx, result)
    }

    /// Appends blocks 1..=`last`, block n with `write_result(n)`.
    fn append_writes(ledger: &Ledger, last: u8) {
        for n in 1..=last {
            let (tx, result) = write_result(n, TxStatus::Valid);
            ledger
                .append(u64::from(n), vec![tx], vec![result])
                .expect("append");
        }
    }

    /// A block writing key `key` with `value`, in a transaction of its own (`n`).
    fn overwrite(n: u8, key: u8, value: &'static [u8]) -> (Transaction, TxResult) {
        let (tx, mut result) = write_result(n, TxStatus::Valid);
        result.writes[0].writes[0] = KvWrite {
            key: Bytes::from(vec![key]),
            value: Some(Bytes::from_static(value)),
        };
        (tx, result)
    }

    /// A bucket a block wrote is read from the ledger's leaf cache when a later block writes
    /// it again, with the root of a ledger that reads it from the store (one opened afresh).
    #[test]
    fn a_bucket_written_again_is_read_from_the_leaf_cache() {
        let g = genesis("cache");
        // Block 1 puts key 1 in an empty bucket (nothing to read), block 2 and then block 3
        // rewrite it; block 3's state root.
        let first_two = |ledger: &Ledger| {
            append_writes(ledger, 1);
            let (tx, result) = overwrite(2, 1, b"w");
            ledger.append(2, vec![tx], vec![result]).expect("append");
        };
        let third = |ledger: &Ledger| {
            let (tx, result) = overwrite(3, 1, b"x");
            let block = ledger.append(3, vec![tx], vec![result]).expect("append");
            block.header.state_root
        };

        let store = Arc::new(MemoryStore::new());
        let ledger = Ledger::open(store.clone(), &g).expect("open");
        let read = store.leaf_ranges_read();
        first_two(&ledger);
        let cached_root = third(&ledger);
        assert_eq!(store.leaf_ranges_read(), read, "from the cache");

        let store = Arc::new(MemoryStore::new());
        first_two(&Ledger::open(store.clone(), &g).expect("open"));
        let reopened = Ledger::open(store.clone(), &g).expect("reopen");
        let read = store.leaf_ranges_read();
        let stored_root = third(&reopened);
        assert_eq!(store.leaf_ranges_read(), read + 1, "from the store");
        assert_eq!(cached_root, stored_root);
    }

    #[test]
    fn append_chains_blocks_and_reopen_restores_the_tip() {
        let g = genesis("one");
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let ledger = Ledger::open(store.clone(), &g).expect("open");
        let mut live = ledger.subscribe();
        let (tx, result) = write_result(1, TxStatus::Valid);
        let b1 = ledger.append(1, vec![tx], vec![result]).expect("append");
        let (tx, result) = write_result(2, TxStatus::ChaincodeError);
        let b2 = ledger.append(2, vec![tx], vec![result]).expect("append");
        assert_eq!(b2.header.previous_hash, b1.hash());
        assert_eq!(
            b2.header.state_root, b1.header.state_root,
            "failed writes change nothing"
        );
        assert_ne!(b1.header.state_root, Hash::ZERO);
        assert_eq!(live.try_recv().expect("live block").number(), 1);
        let tip = ledger.tip();
        assert_eq!((tip.height, tip.transactions), (3, 2));
        drop(ledger);
        let reopened = Ledger::open(store.clone(), &g).expect("reopen");
        assert_eq!(reopened.tip(), tip);
        assert!(matches!(
            Ledger::open(store, &genesis("two")),
            Err(LedgerError::WrongNetwork)
        ));
    }

    /// Stored leaves that do not give the chain's state root (missing, as in a data directory
    /// written before the leaf column, or damaged) are rebuilt from the world state at open,
    /// and the ledger goes on with the roots an undamaged one has.
    #[test]
    fn open_rebuilds_missing_or_damaged_tree_leaves_from_the_world_state() {
        let g = genesis("leaves");
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let ledger = Ledger::open(store.clone(), &g).expect("open");
        let body = |n: u8| {
            let (tx, mut result) = write_result(n, TxStatus::Valid);
            if n == 20 {
                // More keys than the rebuild writes at once.
                result.writes[0]
                    .writes
                    .extend((0..5000u32).map(|k| KvWrite {
                        key: Bytes::from(format!("many{k}")),
                        value: Some(Bytes::from_static(b"v")),
                    }));
            }
            (tx, result)
        };
        for n in 1..=20u8 {
            let (tx, result) = body(n);
            ledger
                .append(u64::from(n), vec![tx], vec![result])
                .expect("append");
        }
        let tip = ledger.tip();
        drop(ledger);
        let mut stored = Vec::new();
        store
            .for_each_leaf(&mut |path, leaf| stored.push((path, leaf)))
            .expect("leaves");
        assert_eq!(stored.len(), 5020, "one leaf per key");

        // Damaged: one leaf gone, one changed, one that no key has.
        store
            .write_leaves(&[
                (stored[0].0, None),
                (stored[1].0, Some(Hash([1; 32]))),
                (Hash([2; 32]), Some(Hash([2; 32]))),
            ])
            .expect("damage");
        let reopened = Ledger::open(store.clone(), &g).expect("reopen repairs");
        assert_eq!(reopened.tip(), tip);
        let mut repaired = Vec::new();
        store
            .for_each_leaf(&mut |path, leaf| repaired.push((path, leaf)))
            .expect("leaves");
        assert_eq!(repaired, stored);
        drop(reopened);

        // Missing altogether.
        let all_gone: Vec<LeafWrite> = stored.iter().map(|(path, _)| (*path, None)).collect();
        store.write_leaves(&all_gone).expect("remove");
        let reopened = Ledger::open(store.clone(), &g).expect("reopen rebuilds");
        let (tx, result) = write_result(21, TxStatus::Valid);
        let next = reopened.append(21, vec![tx], vec![result]).expect("append");

        let fresh = Ledger::open(Arc::new(MemoryStore::new()), &g).expect("open");
        for n in 1..=21u8 {
            let (tx, result) = body(n);
            fresh
                .append(u64::from(n), vec![tx], vec![result])
                .expect("append");
        }
        assert_eq!(next.header.state_root, fresh.tip().state_root);
    }

    /// A RocksDB data directory written before the leaf column existed opens: the column is
    /// created empty, the leaves are rebuilt from the world state, and the next block has the
    /// root an undamaged ledger gives it.
    #[test]
    fn a_rocksdb_directory_from_before_the_leaf_column_opens_and_rebuilds_its_leaves() {
        use crate::storage::{Column, RocksStore};
        let g = genesis("before leaves");
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).expect("open"));
            let ledger = Ledger::open(store, &g).expect("open ledger");
            append_writes(&ledger, 5);
        }
        {
            // The directory as an older binary left it: no state_leaves column.
            let names = Column::ALL.iter().map(|c| c.name());
            let mut db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), names)
                .expect("open raw");
            db.drop_cf(Column::StateLeaves.name()).expect("drop");
        }
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).expect("reopen"));
        let reopened = Ledger::open(store.clone(), &g).expect("open rebuilds the leaves");
        let mut leaves = 0;
        store
            .for_each_leaf(&mut |_, _| leaves += 1)
            .expect("leaves");
        assert_eq!(leaves, 5, "one leaf per key, rebuilt");
        let (tx, result) = write_result(6, TxStatus::Valid);
        let next = reopened.append(6, vec![tx], vec![result]).expect("append");

        let fresh = Ledger::open(Arc::new(MemoryStore::new()), &g).expect("open");
        append_writes(&fresh, 6);
        assert_eq!(next.header.state_root, fresh.tip().state_root);
    }

    /// A world state that is not the chain's (here a block stored with a write its leaves and
    /// its state root leave out) refuses to start, though the leaves alone give the root.
    #[test]
    fn open_refuses_a_world_state_that_is_not_the_chains() {
        let g = genesis("damaged state");
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let ledger = Ledger::open(store.clone(), &g).expect("open");
        let (tx, result) = write_result(1, TxStatus::Valid);
        ledger.append(1, vec![tx], vec![result]).expect("append");
        let tip = ledger.tip();
        drop(ledger);
        let (tx, result) = write_result(2, TxStatus::Valid);
        let block = Block {
            header: BlockHeader {
                number: tip.height,
                sequence: 2,
                previous_hash: tip.hash,
                transactions_root: Hash::ZERO,
                results_root: Hash::ZERO,
                state_root: tip.state_root,
            },
            transactions: vec![tx.into_signed()],
            results: vec![result],
        };
        store.commit_block(&block, &[]).expect("store");
        assert!(matches!(
            Ledger::open(store, &g),
            Err(LedgerError::StateMismatch { block: 2, .. })
        ));
    }

    #[test]
    fn append_block_takes_another_peers_blocks_only_when_they_fit() {
        let g = genesis("transfer");
        let source = Ledger::open(Arc::new(MemoryStore::new()), &g).expect("open");
        append_writes(&source, 3);
        let block = |n: u64| source.block(n).expect("read").expect("exists");
        let target = Ledger::open(Arc::new(MemoryStore::new()), &g).expect("open");

        let skipped = target.append_block(block(2));
        assert!(matches!(
            skipped,
            Err(LedgerError::ForeignBlock { number: 2, .. })
        ));
        let mut lying = block(1);
        lying.header.state_root.0[0] ^= 1;
        assert!(
            matches!(
                target.append_block(lying),
                Err(LedgerError::ForeignBlock { .. })
            ),
            "a state root its write sets do not produce"
        );
        let mut padded = block(1);
        padded.results[0].message = "changed".into();
        assert!(
            matches!(
                target.append_block(padded),
                Err(LedgerError::ForeignBlock { .. })
            ),
            "contents that do not match the results root"
        );
        assert_eq!(target.tip().height, 1, "nothing stored for refused blocks");
        let in_memory = |ledger: &Ledger| ledger.lock().tree.clone();
        let stored = |ledger: &Ledger| stored_tree(ledger.store().as_ref()).expect("leaves").0;
        assert_eq!(
            in_memory(&target),
            stored(&target),
            "a refused block's plan is not adopted"
        );

        let mut live = target.subscribe();
        for n in 1..=3 {
            target.append_block(block(n)).expect("fits");
        }
        assert_eq!(target.tip(), source.tip());
        assert_eq!(in_memory(&target), stored(&target));
        assert_eq!(in_memory(&target), in_memory(&source));
        assert_eq!(live.try_recv().expect("live block").number(), 1);
    }
}
