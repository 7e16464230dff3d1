//! The RocksDB [`Store`]: one database, one column family per [`Column`]. A block, its index
//! entries, its state writes and the state tree's leaves go in one write batch with one sync,
//! so a crash leaves either the whole block or none of it.

use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Direction, IteratorMode, MemtableFactory,
    Options, ReadOptions, SliceTransform, WriteBatch, WriteOptions,
};

use super::{
    Column, ConsensusWrite, LeafVisitor, StateVisitor, Store, StoreError, block_state_writes,
    decode_location, encode_location, split_state_key, state_key,
};
use crate::state::leaves::{Leaf, LeafSource, LeafWrite, PathRange};
use crate::types::convert::{decode_block, encode_block};
use crate::types::{Block, Hash, TxId, TxLocation};

/// Whether opening may create a new database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Existing {
    CreateIfMissing,
    Required,
}

/// RocksDB's memory held down (issue 6 asks a peer to stay under 300 MiB resident): its
/// defaults give each column its own 32 MiB block cache and up to two 64 MiB
/// memtables, and a validator's resident size grew with its write rate for minutes. Not a
/// hard bound: index and filter blocks live outside the cache and grow with the data, and
/// the all-columns limit triggers a flush, it does not stall writes. One memtable fills in a
/// few seconds at saturation at this size.
const MEMTABLE_BYTES: usize = 16 << 20;
/// All columns' memtables together: past it, the largest is flushed.
const ALL_MEMTABLES_BYTES: usize = 64 << 20;
/// One block cache shared by every column.
const BLOCK_CACHE_BYTES: usize = 32 << 20;
/// Each memtable's whole-key Bloom filter, as a share of its size (0.8 MiB of a 16 MiB
/// memtable: over 20 bits per entry, a transaction-index entry being about 60 bytes). Most point reads look for keys that are not there: every
/// ordered transaction's id in the transaction index (is it committed already?) and the
/// keys a transaction creates. Without it each such read descended the memtable's skip list
/// only to find nothing: 4.9% of all CPU samples at 2,500 tx/s (issue 6; 1.1% with the
/// filters, at 2,000 tx/s).
const MEMTABLE_BLOOM_RATIO: f64 = 0.05;
/// The table files' Bloom filters, bits per key (about 1% false positives): the same reads
/// against flushed data skip every file that cannot hold the key.
const TABLE_BLOOM_BITS_PER_KEY: f64 = 10.0;

/// Every column's table files are compressed with LZ4. A column takes its own options, not
/// the database's: set on the database alone (as before 2026-11-27, night), nothing was
/// compressed. A block's transactions carry their signer's certificate and their results
/// the values written, so blocks compress well: in 30 s at 4,500 tx/s a validator's flushes
/// wrote 23 MB of block tables where they wrote 104 MB uncompressed, and the flush thread's
/// copying of those writes into the page cache (7-16 us of validator CPU per transaction in
/// two profiles) fell to under 1 us, for 5 us in LZ4 (issue 6; BENCHMARKS.md, 2026-11-27
/// night).
const TABLE_COMPRESSION: rocksdb::DBCompressionType = rocksdb::DBCompressionType::Lz4;

/// How a column is read, which decides its memtable: a skip list keeps every key in order,
/// for columns that are iterated; a hash table of keys finds a key in one step, for columns
/// only ever read by key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reads {
    /// Iterated in key order (blocks, the world state, the consensus entries, certificates).
    InOrder,
    /// Read by whole key only (the transaction index, the block hashes): a hash table of
    /// `buckets` lists in the memtable. An insert or a lookup there touches a bucket and its
    /// list of one or two keys, where a skip list of 200,000 keys (a 16 MiB memtable of
    /// transaction-index entries) takes about 18 steps, each a likely cache miss. The bucket
    /// array (8 bytes a bucket: 2 MiB for the index) is allocated in the memtable's budget.
    /// Nothing iterates these columns: an iterator would need total order ([`total_order`]),
    /// or it would silently miss the memtable's keys.
    ByKey { buckets: usize },
    /// Read in ranges that share their first `bytes` bytes (the state tree's buckets share
    /// their first 18 bits, so their first 2 bytes): a hash table by that prefix, each bucket
    /// a small skip list. A whole-column visit asks for total order ([`total_order`]), which
    /// copies the memtable into one sorted list first: for start-up and `weft ledger verify`,
    /// not for anything done per block.
    ByPrefix { bytes: usize, buckets: usize },
}

impl Reads {
    fn of(column: Column) -> Reads {
        match column {
            Column::TxIndex => Reads::ByKey { buckets: 1 << 18 },
            Column::BlockHashes => Reads::ByKey { buckets: 1 << 12 },
            Column::StateLeaves => Reads::ByPrefix {
                bytes: 2,
                buckets: 1 << 16,
            },
            Column::Blocks | Column::State | Column::Consensus | Column::Certificates => {
                Reads::InOrder
            }
        }
    }
}

/// Read options that visit a column in key order whatever its memtable.
fn total_order() -> ReadOptions {
    let mut options = ReadOptions::default();
    options.set_total_order_seek(true);
    options
}

fn column_options(column: Column, cache: &Cache) -> Options {
    let mut options = Options::default();
    options.set_compression_type(TABLE_COMPRESSION);
    options.set_write_buffer_size(MEMTABLE_BYTES);
    options.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
    options.set_memtable_whole_key_filtering(true);
    match Reads::of(column) {
        Reads::InOrder => {}
        Reads::ByKey { buckets } => {
            options.set_prefix_extractor(SliceTransform::create_noop());
            options.set_memtable_factory(MemtableFactory::HashLinkList {
                bucket_count: buckets,
            });
        }
        Reads::ByPrefix { bytes, buckets } => {
            options.set_prefix_extractor(SliceTransform::create_fixed_prefix(bytes));
            options.set_memtable_factory(MemtableFactory::HashSkipList {
                bucket_count: buckets,
                height: 4,
                branching_factor: 4,
            });
        }
    }
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(TABLE_BLOOM_BITS_PER_KEY, false);
    options.set_block_based_table_factory(&table);
    options
}

pub struct RocksStore {
    db: DB,
    /// Number of blocks; also serialises commits.
    height: Mutex<u64>,
}

fn backend(e: rocksdb::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RocksStore {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path) -> Result<RocksStore, StoreError> {
        RocksStore::open_with(path, Existing::CreateIfMissing)
    }

    /// Opens the store in `path`, refusing to create one: for tools that inspect a node's
    /// ledger, where an empty new database would hide a wrong path.
    pub fn open_existing(path: &Path) -> Result<RocksStore, StoreError> {
        if !path.join("CURRENT").is_file() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        RocksStore::open_with(path, Existing::Required)
    }

    fn open_with(path: &Path, existing: Existing) -> Result<RocksStore, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(existing == Existing::CreateIfMissing);
        options.create_missing_column_families(true);
        options.set_db_write_buffer_size(ALL_MEMTABLES_BYTES);
        // The hash memtables ([`Reads`]) take one writer at a time (RocksDB refuses to open
        // them otherwise): a write group's leader inserts its followers' batches.
        options.set_allow_concurrent_memtable_write(false);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let columns = Column::ALL
            .iter()
            .map(|c| ColumnFamilyDescriptor::new(c.name(), column_options(*c, &cache)));
        let db = DB::open_cf_descriptors(&options, path, columns).map_err(|e| {
            StoreError::Backend(format!(
                "cannot open the ledger database in {}: {e} (is another node using this data directory?)",
                path.display()
            ))
        })?;
        let height = {
            let cf = db
                .cf_handle(Column::Blocks.name())
                .expect("column families are created at open");
            match db.iterator_cf(cf, IteratorMode::End).next() {
                None => 0,
                Some(entry) => {
                    let (key, _) = entry.map_err(backend)?;
                    let bytes: [u8; 8] = key
                        .as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("block key is not 8 bytes".into()))?;
                    u64::from_be_bytes(bytes) + 1
                }
            }
        };
        Ok(RocksStore {
            db,
            height: Mutex::new(height),
        })
    }

    fn cf(&self, column: Column) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(column.name())
            .expect("column families are created at open")
    }

    fn height_lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.height.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put_leaves(&self, batch: &mut WriteBatch, leaves: &[LeafWrite]) {
        let column = self.cf(Column::StateLeaves);
        for (path, leaf) in leaves {
            match leaf {
                Some(leaf) => batch.put_cf(column, path.0, leaf.0),
                None => batch.delete_cf(column, path.0),
            }
        }
    }
}

/// A stored leaf entry: a 32-byte path to a 32-byte leaf hash.
fn leaf_entry(path: &[u8], leaf: &[u8]) -> Result<Leaf, StoreError> {
    match (Hash::from_slice(path), Hash::from_slice(leaf)) {
        (Some(path), Some(leaf)) => Ok((path, leaf)),
        _ => Err(StoreError::Corrupt(format!(
            "a state tree leaf entry of {} and {} bytes, not 32 and 32",
            path.len(),
            leaf.len()
        ))),
    }
}

impl LeafSource for RocksStore {
    /// One iterator for all ranges, seeking to each in turn: a prefix iterator, which reads
    /// only the memtable's hash bucket of the range's prefix ([`Reads::ByPrefix`]), when every
    /// range lies within one prefix (a state tree of 16 levels or more: a node's buckets); a
    /// total-order one otherwise.
    fn leaves_in(&self, ranges: &[PathRange]) -> Result<Vec<Vec<Leaf>>, StoreError> {
        let Reads::ByPrefix { bytes, .. } = Reads::of(Column::StateLeaves) else {
            unreachable!("the leaf column is read by prefix")
        };
        let options = if ranges
            .iter()
            .all(|(first, last)| first.0[..bytes] == last.0[..bytes])
        {
            let mut options = ReadOptions::default();
            options.set_prefix_same_as_start(true);
            options
        } else {
            total_order()
        };
        let mut iter = self
            .db
            .raw_iterator_cf_opt(self.cf(Column::StateLeaves), options);
        let mut out = Vec::with_capacity(ranges.len());
        for (first, last) in ranges {
            let mut leaves = Vec::new();
            iter.seek(first.0);
            while let (Some(path), Some(leaf)) = (iter.key(), iter.value()) {
                if path > last.0.as_slice() {
                    break;
                }
                leaves.push(leaf_entry(path, leaf)?);
                iter.next();
            }
            iter.status().map_err(backend)?;
            out.push(leaves);
        }
        Ok(out)
    }
}

impl Store for RocksStore {
    fn height(&self) -> Result<u64, StoreError> {
        Ok(*self.height_lock())
    }

    fn block(&self, number: u64) -> Result<Option<Block>, StoreError> {
        match self
            .db
            .get_pinned_cf(self.cf(Column::Blocks), number.to_be_bytes())
            .map_err(backend)?
        {
            None => Ok(None),
            Some(raw) => decode_block(&raw)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("block {number}: {e}"))),
        }
    }

    fn block_number(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
        match self
            .db
            .get_pinned_cf(self.cf(Column::BlockHashes), hash.0)
            .map_err(backend)?
        {
            None => Ok(None),
            Some(raw) => Ok(Some(u64::from_be_bytes(raw.as_ref().try_into().map_err(
                |_| StoreError::Corrupt("block hash entry is not 8 bytes".into()),
            )?))),
        }
    }

    fn tx_location(&self, id: &TxId) -> Result<Option<TxLocation>, StoreError> {
        self.db
            .get_pinned_cf(self.cf(Column::TxIndex), id.as_bytes())
            .map_err(backend)?
            .map(|raw| decode_location(&raw))
            .transpose()
    }

    fn get_state(&self, namespace: &str, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(Column::State), state_key(namespace, key))
            .map_err(backend)?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    fn state_range(
        &self,
        namespace: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let from = state_key(namespace, start);
        let prefix_len = state_key(namespace, b"").len();
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(Column::State),
            IteratorMode::From(&from, Direction::Forward),
        );
        for entry in iter {
            let (k, v) = entry.map_err(backend)?;
            if !k.starts_with(&from[..prefix_len]) {
                break;
            }
            let key = &k[prefix_len..];
            if (!end.is_empty() && key >= end) || out.len() >= limit {
                break;
            }
            out.push((Bytes::copy_from_slice(key), Bytes::copy_from_slice(&v)));
        }
        Ok(out)
    }

    fn for_each_state(&self, visit: &mut StateVisitor<'_>) -> Result<(), StoreError> {
        for entry in self
            .db
            .iterator_cf(self.cf(Column::State), IteratorMode::Start)
        {
            let (k, v) = entry.map_err(backend)?;
            let (ns, key) =
                split_state_key(&k).ok_or_else(|| StoreError::Corrupt("bad state key".into()))?;
            visit(ns, key, &v);
        }
        Ok(())
    }

    fn for_each_leaf(&self, visit: &mut LeafVisitor<'_>) -> Result<(), StoreError> {
        for entry in self.db.iterator_cf_opt(
            self.cf(Column::StateLeaves),
            total_order(),
            IteratorMode::Start,
        ) {
            let (path, leaf) = entry.map_err(backend)?;
            let (path, leaf) = leaf_entry(&path, &leaf)?;
            visit(path, leaf);
        }
        Ok(())
    }

    fn commit_block(&self, block: &Block, leaves: &[LeafWrite]) -> Result<(), StoreError> {
        let mut height = self.height_lock();
        if block.number() != *height {
            return Err(StoreError::OutOfOrder {
                height: *height,
                got: block.number(),
            });
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(Column::Blocks),
            block.number().to_be_bytes(),
            encode_block(block),
        );
        batch.put_cf(
            self.cf(Column::BlockHashes),
            block.hash().0,
            block.number().to_be_bytes(),
        );
        for (index, tx) in block.transactions.iter().enumerate() {
            let location = TxLocation {
                block: block.number(),
                index: index as u32,
            };
            batch.put_cf(
                self.cf(Column::TxIndex),
                tx.id.as_bytes(),
                encode_location(location),
            );
        }
        let state = self.cf(Column::State);
        for (ns, key, value) in block_state_writes(block) {
            match value {
                Some(v) => batch.put_cf(state, state_key(ns, key), v),
                None => batch.delete_cf(state, state_key(ns, key)),
            }
        }
        self.put_leaves(&mut batch, leaves);
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options).map_err(backend)?;
        *height += 1;
        Ok(())
    }

    fn write_leaves(&self, leaves: &[LeafWrite]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.put_leaves(&mut batch, leaves);
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options).map_err(backend)
    }

    fn clear_leaves(&self) -> Result<(), StoreError> {
        // Every key sorts below 33 bytes of 0xff, whatever its length.
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(Column::StateLeaves),
            &[0u8; 0][..],
            &[0xffu8; 33][..],
        );
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options).map_err(backend)
    }

    fn get_consensus(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(Column::Consensus), key)
            .map_err(backend)?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    fn write_consensus(&self, writes: &[ConsensusWrite]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for write in writes {
            match write {
                ConsensusWrite::Put { key, value } => {
                    batch.put_cf(self.cf(Column::Consensus), key, value)
                }
                ConsensusWrite::Delete { key } => batch.delete_cf(self.cf(Column::Consensus), key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options).map_err(backend)
    }

    fn consensus_entries(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let mode = IteratorMode::From(prefix, rocksdb::Direction::Forward);
        let mut entries = Vec::new();
        for entry in self.db.iterator_cf(self.cf(Column::Consensus), mode) {
            let (key, value) = entry.map_err(backend)?;
            if !key.starts_with(prefix) {
                break;
            }
            entries.push((Bytes::from(key.into_vec()), Bytes::from(value.into_vec())));
        }
        Ok(entries)
    }

    fn put_certificate(&self, number: u64, certificate: &[u8]) -> Result<(), StoreError> {
        self.db
            .put_cf(
                self.cf(Column::Certificates),
                number.to_be_bytes(),
                certificate,
            )
            .map_err(backend)
    }

    fn certificate(&self, number: u64) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(Column::Certificates), number.to_be_bytes())
            .map_err(backend)?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    fn last_certified(&self) -> Result<Option<u64>, StoreError> {
        let Some(entry) = self
            .db
            .iterator_cf(self.cf(Column::Certificates), IteratorMode::End)
            .next()
        else {
            return Ok(None);
        };
        let (key, _) = entry.map_err(backend)?;
        let bytes: [u8; 8] = key
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::Corrupt("certificate key is not 8 bytes".into()))?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocks_store_passes_the_store_contract_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = RocksStore::open(dir.path()).expect("open");
            super::super::contract::run(&store);
        }
        let store = RocksStore::open(dir.path()).expect("reopen");
        assert_eq!(store.height().expect("height"), 3);
        assert_eq!(
            store.get_state("cc", b"c").expect("read").as_deref(),
            Some(&b"3"[..])
        );
        assert!(store.block(2).expect("read").is_some());
    }

    /// The leaf column reads the same through its prefix memtable, its table files and
    /// leaves an older binary wrote (default options: a skip-list memtable, no prefix
    /// extractor), by prefix range and in total order.
    #[test]
    fn leaves_read_back_from_memtable_table_files_and_an_older_binarys_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |a: u8, b: u8, c: u8| {
            let mut path = [0u8; 32];
            path[..3].copy_from_slice(&[a, b, c]);
            Hash(path)
        };
        let leaf = |n: u8| Hash([n; 32]);
        {
            let mut options = Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let names = Column::ALL.iter().map(|c| c.name());
            let db = DB::open_cf(&options, dir.path(), names).expect("open as before");
            let column = db.cf_handle(Column::StateLeaves.name()).expect("column");
            db.put_cf(column, path(1, 1, 1).0, leaf(1).0).expect("put");
            db.flush_cf(column).expect("flush");
            db.put_cf(column, path(1, 1, 5).0, leaf(2).0).expect("put");
        }
        let store = RocksStore::open(dir.path()).expect("open");
        store
            .write_leaves(&[
                (path(1, 1, 3), Some(leaf(3))),
                (path(1, 2, 0), Some(leaf(4))),
            ])
            .expect("write");
        store
            .db
            .flush_cf(store.cf(Column::StateLeaves))
            .expect("flush");
        store
            .write_leaves(&[(path(1, 1, 4), Some(leaf(5))), (path(1, 1, 5), None)])
            .expect("write");
        let mut last = path(1, 1, 255);
        last.0[3..].fill(0xff);
        let expected = vec![
            (path(1, 1, 1), leaf(1)),
            (path(1, 1, 3), leaf(3)),
            (path(1, 1, 4), leaf(5)),
        ];
        assert_eq!(
            store
                .leaves_in(&[(path(1, 1, 0), last)])
                .expect("prefix range"),
            std::slice::from_ref(&expected)
        );
        let mut all = Vec::new();
        store
            .for_each_leaf(&mut |path, leaf| all.push((path, leaf)))
            .expect("visit");
        let mut everything = expected;
        everything.push((path(1, 2, 0), leaf(4)));
        assert_eq!(all, everything);
    }

    /// Every column's table files are compressed: data that compresses (as a block's
    /// repeated certificates do) takes a fraction of its size on disk once flushed.
    #[test]
    fn every_column_compresses_its_table_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let value: Vec<u8> = b"a certificate, the same in every transaction; "
            .iter()
            .copied()
            .cycle()
            .take(4096)
            .collect();
        const KEYS: u32 = 256;
        for column in Column::ALL {
            for key in 0..KEYS {
                store
                    .db
                    .put_cf(store.cf(column), key.to_be_bytes(), &value)
                    .expect("put");
            }
            store.db.flush_cf(store.cf(column)).expect("flush");
        }
        let raw = KEYS as usize * value.len();
        let files = store.db.live_files().expect("live files");
        for column in Column::ALL {
            let on_disk: usize = files
                .iter()
                .filter(|file| file.column_family_name == column.name())
                .map(|file| file.size)
                .sum();
            assert!(on_disk > 0, "{} was flushed to a table file", column.name());
            assert!(
                on_disk < raw / 4,
                "{}: {on_disk} bytes on disk for {raw} bytes written: not compressed",
                column.name()
            );
        }
    }
}
