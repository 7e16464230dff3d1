//! The state tree's leaves, kept outside memory: one entry per key, its path (the SHA-256
//! of namespace and key) to its leaf hash. The node keeps them in the store (a column written
//! in each block's batch); `weft ledger verify` replays a chain with [`MemoryLeaves`]. The
//! ledger reads them through a [`LeafCache`] of the buckets the last blocks wrote.

use std::collections::{BTreeMap, HashMap};

use crate::storage::StoreError;
use crate::types::Hash;

/// A change to the leaves: the path's new leaf hash, or `None` when the key is removed.
pub type LeafWrite = (Hash, Option<Hash>);

/// A stored leaf: (path, leaf hash).
pub type Leaf = (Hash, Hash);

/// The first and last path of a range, both included.
pub type PathRange = (Hash, Hash);

/// Where the tree reads the leaves of the subtrees a block touches.
pub trait LeafSource {
    /// For each range, the leaves whose paths lie in it, in path order.
    fn leaves_in(&self, ranges: &[PathRange]) -> Result<Vec<Vec<Leaf>>, StoreError>;
}

/// The leaves of `ranges` from `source`, refusing an answer that does not hold one list per
/// range (a wrong root would follow).
pub fn read_ranges(
    source: &dyn LeafSource,
    ranges: &[PathRange],
) -> Result<Vec<Vec<Leaf>>, StoreError> {
    let read = source.leaves_in(ranges)?;
    if read.len() != ranges.len() {
        return Err(StoreError::Corrupt(format!(
            "asked for the leaves of {} ranges, got {}",
            ranges.len(),
            read.len()
        )));
    }
    Ok(read)
}

/// Leaves in a map: for a replay that has no store of its own.
#[derive(Clone, Debug, Default)]
pub struct MemoryLeaves {
    leaves: BTreeMap<Hash, Hash>,
}

impl MemoryLeaves {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&mut self, writes: &[LeafWrite]) {
        for (path, leaf) in writes {
            match leaf {
                Some(leaf) => self.leaves.insert(*path, *leaf),
                None => self.leaves.remove(path),
            };
        }
    }

    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Every leaf, in path order.
    pub fn iter(&self) -> impl Iterator<Item = Leaf> + '_ {
        self.leaves.iter().map(|(path, leaf)| (*path, *leaf))
    }
}

impl LeafSource for MemoryLeaves {
    fn leaves_in(&self, ranges: &[PathRange]) -> Result<Vec<Vec<Leaf>>, StoreError> {
        Ok(ranges
            .iter()
            .map(|(first, last)| {
                self.leaves
                    .range(*first..=*last)
                    .map(|(path, leaf)| (*path, *leaf))
                    .collect()
            })
            .collect())
    }
}

/// The leaves of the ranges (the state tree's buckets) the last blocks wrote, as they are
/// after those blocks: a bucket written again soon (a hot key, such as an asset that keeps
/// changing hands) is then read from memory. From the store, a bucket's leaves cost a seek
/// that visits every memtable and table file level of the leaf column, more of them as the
/// ledger grows: 14 us of the four validators' CPU per transaction on a fresh ledger, 39
/// after 150 s at saturation (issue 6, BENCHMARKS.md 2026-11-28 midday).
///
/// Two generations bound it: writes go to the recent one, and when it holds
/// `bytes_per_generation` ([`LeafCache::held_bytes`]) it becomes the older one and the older
/// is dropped, so at most about twice that is held. A range is read from the recent
/// generation, else the older, else the store. Only what the store holds after a block may be
/// remembered ([`LeafCache::remember`], once the block is stored): the cache is never ahead
/// of the store nor behind it for a range it holds.
#[derive(Debug)]
pub struct LeafCache {
    recent: HashMap<PathRange, Vec<Leaf>>,
    older: HashMap<PathRange, Vec<Leaf>>,
    recent_bytes: usize,
    bytes_per_generation: usize,
}

impl Default for LeafCache {
    fn default() -> Self {
        LeafCache::new(LeafCache::BYTES_PER_GENERATION)
    }
}

impl LeafCache {
    /// 4 MiB a generation: at a million keys (four a bucket) the buckets of about 30 blocks
    /// of 350 writes.
    pub const BYTES_PER_GENERATION: usize = 4 << 20;

    pub fn new(bytes_per_generation: usize) -> Self {
        LeafCache {
            recent: HashMap::new(),
            older: HashMap::new(),
            recent_bytes: 0,
            bytes_per_generation: bytes_per_generation.max(1),
        }
    }

    /// The memory one cached range takes: room for `leaves` leaves, its key, its list, and
    /// about a word of the map's own.
    pub fn held_bytes(leaves: usize) -> usize {
        size_of::<PathRange>() + size_of::<Vec<Leaf>>() + 8 + leaves * size_of::<Leaf>()
    }

    fn get(&self, range: &PathRange) -> Option<&Vec<Leaf>> {
        self.recent.get(range).or_else(|| self.older.get(range))
    }

    /// Takes each range's whole content after a block that is now stored. An empty range is
    /// forgotten (the tree does not read empty buckets).
    pub fn remember(&mut self, ranges: impl IntoIterator<Item = (PathRange, Vec<Leaf>)>) {
        let held = |leaves: &Vec<Leaf>| LeafCache::held_bytes(leaves.capacity());
        for (range, leaves) in ranges {
            self.older.remove(&range);
            let replaced = if leaves.is_empty() {
                self.recent.remove(&range)
            } else {
                self.recent_bytes += held(&leaves);
                self.recent.insert(range, leaves)
            };
            if let Some(replaced) = replaced {
                self.recent_bytes -= held(&replaced);
            }
            if self.recent_bytes >= self.bytes_per_generation {
                self.older = std::mem::take(&mut self.recent);
                self.recent_bytes = 0;
            }
        }
    }

    /// Reads through this cache, then `stored`.
    pub fn over<'a>(&'a self, stored: &'a dyn LeafSource) -> CachedLeaves<'a> {
        CachedLeaves {
            cache: self,
            stored,
        }
    }
}

/// A [`LeafCache`] in front of a store: the ranges it holds come from memory, the rest from
/// the store in one read.
pub struct CachedLeaves<'a> {
    cache: &'a LeafCache,
    stored: &'a dyn LeafSource,
}

impl LeafSource for CachedLeaves<'_> {
    fn leaves_in(&self, ranges: &[PathRange]) -> Result<Vec<Vec<Leaf>>, StoreError> {
        let cached: Vec<Option<&Vec<Leaf>>> = ranges.iter().map(|r| self.cache.get(r)).collect();
        let missing: Vec<PathRange> = ranges
            .iter()
            .zip(&cached)
            .filter(|(_, hit)| hit.is_none())
            .map(|(range, _)| *range)
            .collect();
        let fetched = if missing.is_empty() {
            Vec::new()
        } else {
            read_ranges(self.stored, &missing)?
        };
        let mut fetched = fetched.into_iter();
        Ok(cached
            .into_iter()
            .map(|hit| match hit {
                Some(leaves) => leaves.clone(),
                None => fetched.next().expect("one fetched list per missing range"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Leaves in memory that record the ranges asked of them.
    #[derive(Default)]
    struct Counted {
        leaves: MemoryLeaves,
        asked: RefCell<Vec<PathRange>>,
    }

    impl LeafSource for Counted {
        fn leaves_in(&self, ranges: &[PathRange]) -> Result<Vec<Vec<Leaf>>, StoreError> {
            self.asked.borrow_mut().extend_from_slice(ranges);
            self.leaves.leaves_in(ranges)
        }
    }

    fn path(first: u8, last: u8) -> Hash {
        let mut path = Hash([0; 32]);
        path.0[0] = first;
        path.0[31] = last;
        path
    }

    fn range(first: u8) -> PathRange {
        (path(first, 0), path(first, 0xff))
    }

    /// Leaves 1..=count of range `first`, each leaf hash its own path.
    fn leaves(first: u8, count: u8) -> Vec<Leaf> {
        (1..=count)
            .map(|n| (path(first, n), path(first, n)))
            .collect()
    }

    fn store_with(ranges: &[(u8, u8)]) -> Counted {
        let mut store = Counted::default();
        for &(first, count) in ranges {
            let writes: Vec<LeafWrite> = leaves(first, count)
                .into_iter()
                .map(|(p, l)| (p, Some(l)))
                .collect();
            store.leaves.apply(&writes);
        }
        store
    }

    #[test]
    fn remembered_ranges_are_read_from_memory_and_the_rest_from_the_store_in_order() {
        let store = store_with(&[(1, 2), (2, 3), (3, 1)]);
        let mut cache = LeafCache::default();
        // Range 2 as a block left it: one leaf more than the store has (the store is behind
        // only in this test, to tell where each answer came from).
        cache.remember([(range(2), leaves(2, 4))]);
        let read = cache
            .over(&store)
            .leaves_in(&[range(1), range(2), range(3), range(9)])
            .expect("read");
        assert_eq!(read, vec![leaves(1, 2), leaves(2, 4), leaves(3, 1), vec![]]);
        assert_eq!(*store.asked.borrow(), vec![range(1), range(3), range(9)]);
        // All held: the store is not asked.
        store.asked.borrow_mut().clear();
        let read = cache.over(&store).leaves_in(&[range(2)]).expect("read");
        assert_eq!(read, vec![leaves(2, 4)]);
        assert!(store.asked.borrow().is_empty());
    }

    #[test]
    fn a_range_emptied_is_forgotten_and_a_newer_content_wins() {
        let store = store_with(&[(1, 2)]);
        let mut cache = LeafCache::default();
        cache.remember([(range(1), leaves(1, 3))]);
        cache.remember([(range(1), leaves(1, 5))]);
        assert_eq!(
            cache.over(&store).leaves_in(&[range(1)]).expect("read"),
            vec![leaves(1, 5)]
        );
        cache.remember([(range(1), Vec::new())]);
        assert_eq!(
            cache.over(&store).leaves_in(&[range(1)]).expect("read"),
            vec![leaves(1, 2)],
            "from the store again"
        );
    }

    #[test]
    fn two_generations_bound_what_is_held() {
        let store = Counted::default();
        let held = LeafCache::held_bytes;
        let mut cache = LeafCache::new(held(2) + held(1) + held(1));
        cache.remember([(range(1), leaves(1, 2)), (range(2), leaves(2, 1))]);
        // Range 3 fills the recent generation: 1 and 2 and 3 become the older one.
        cache.remember([(range(3), leaves(3, 1))]);
        // Written again, 1 moves to the recent generation (its older copy is dropped).
        cache.remember([(range(1), leaves(1, 3))]);
        let read = cache
            .over(&store)
            .leaves_in(&[range(1), range(2), range(3)])
            .expect("read");
        assert_eq!(read, vec![leaves(1, 3), leaves(2, 1), leaves(3, 1)]);
        assert!(store.asked.borrow().is_empty());
        // Range 4 fills the recent generation again: the older (2 and 3) goes.
        cache.remember([(range(4), leaves(4, 4))]);
        let read = cache
            .over(&store)
            .leaves_in(&[range(1), range(2), range(3), range(4)])
            .expect("read");
        assert_eq!(read, vec![leaves(1, 3), vec![], vec![], leaves(4, 4)]);
        assert_eq!(*store.asked.borrow(), vec![range(2), range(3)]);
        assert!(cache.recent.is_empty() && cache.older.len() == 2);
    }
}
