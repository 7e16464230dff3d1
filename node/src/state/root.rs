//! The state root: a compressed sparse Merkle tree over SHA-256 key paths. A subtree holding
//! one key is that key's leaf and an empty subtree hashes to zero, so the tree's shape, and
//! hence its root, depends only on the set of (key, value) pairs, never on the order of writes.
//! Any key can be proven present against a root with the sibling hashes along its path.
//!
//! Memory does not grow with the state: the tree keeps only its top `depth` levels
//! ([`SUMMARY_DEPTH`] in a node), each node as its kind (empty, one key, two or more) and
//! hash, 2^(depth+1) nodes whatever the number of keys. Each key's leaf (path to leaf hash)
//! lives in a [`LeafSource`]: the store's leaf column, written in each block's batch. The
//! nodes at the summary's last level are buckets: a block's writes are first planned
//! ([`StateTree::plan`]): every bucket they touch is rebuilt from its stored leaves merged
//! with the writes, then the nodes above are rehashed once each. The plan holds the new
//! root, the summary nodes that change and the leaf writes; the ledger stores the leaf writes
//! with the block and only then adopts the plan, so a failed write leaves the tree as it was.
//!
//! Before 2026-11-28 the whole tree lived in memory, about 230 bytes per key (a leaf and
//! 1.44 branches of `Arc` nodes): a validator's resident size grew without bound with the
//! state (issue 6, BENCHMARKS.md). The roots are the same.

use crate::crypto::CanonicalHasher;
use crate::storage::StoreError;
use crate::types::Hash;

use super::leaves::{Leaf, LeafSource, LeafWrite, MemoryLeaves, PathRange, read_ranges};

/// The levels a node keeps in memory: 2^19 nodes of 33 bytes, 17 MiB. A bucket then holds
/// one key per 262,144 in the state (4 at a million keys), and a write rebuilds its bucket:
/// about as many hashes as the write's path below the shared top levels cost when the whole
/// tree was in memory, plus one seek in the leaf column per touched bucket.
pub const SUMMARY_DEPTH: u8 = 18;

/// The deepest summary a tree may keep (bucket indexes are the paths' first bits as a u32).
const MAX_SUMMARY_DEPTH: u8 = 24;

/// The path of a key in the tree.
pub fn key_path(namespace: &str, key: &[u8]) -> Hash {
    CanonicalHasher::new("weft.v1/state-key")
        .put_bytes(namespace.as_bytes())
        .put_bytes(key)
        .finish()
}

pub fn value_hash(value: &[u8]) -> Hash {
    CanonicalHasher::new("weft.v1/state-value")
        .put_bytes(value)
        .finish()
}

pub fn leaf_hash(path: &Hash, value: &Hash) -> Hash {
    CanonicalHasher::new("weft.v1/smt")
        .put_u8(0)
        .put_hash(path)
        .put_hash(value)
        .finish()
}

fn branch_hash(left: &Hash, right: &Hash) -> Hash {
    CanonicalHasher::new("weft.v1/smt")
        .put_u8(1)
        .put_hash(left)
        .put_hash(right)
        .finish()
}

fn bit(path: &Hash, depth: usize) -> bool {
    (path.0[depth / 8] >> (7 - depth % 8)) & 1 == 1
}

/// The index, among the nodes at `depth`, of the node above `path`: its first `depth` bits.
fn prefix(path: &Hash, depth: u8) -> u32 {
    let top = u32::from_be_bytes(path.0[..4].try_into().expect("4 bytes"));
    if depth == 0 { 0 } else { top >> (32 - depth) }
}

/// The paths below the node `index` at `depth`.
fn prefix_range(index: u32, depth: u8) -> PathRange {
    let (top, below) = if depth == 0 {
        (0, u32::MAX)
    } else {
        (index << (32 - depth), u32::MAX >> depth)
    };
    let mut first = [0u8; 32];
    let mut last = [0xffu8; 32];
    first[..4].copy_from_slice(&top.to_be_bytes());
    last[..4].copy_from_slice(&(top | below).to_be_bytes());
    (Hash(first), Hash(last))
}

/// What a subtree holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Empty,
    /// One key: the subtree is that key's leaf.
    Leaf,
    /// Two keys or more.
    Branch,
}

/// A subtree as the summary keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Node {
    kind: Kind,
    hash: Hash,
}

impl Node {
    const EMPTY: Node = Node {
        kind: Kind::Empty,
        hash: Hash::ZERO,
    };

    fn leaf(hash: Hash) -> Node {
        Node {
            kind: Kind::Leaf,
            hash,
        }
    }

    /// The subtree over two sibling subtrees: a subtree with one key is that key's leaf.
    fn parent(left: Node, right: Node) -> Node {
        match (left.kind, right.kind) {
            (Kind::Empty, Kind::Empty) => Node::EMPTY,
            (Kind::Leaf, Kind::Empty) => left,
            (Kind::Empty, Kind::Leaf) => right,
            _ => Node {
                kind: Kind::Branch,
                hash: branch_hash(&left.hash, &right.hash),
            },
        }
    }
}

/// The subtree at `depth` over exactly `leaves` (sorted by path, distinct, sharing their
/// first `depth` bits).
fn subtree(leaves: &[Leaf], depth: usize) -> Node {
    match leaves {
        [] => Node::EMPTY,
        [(_, leaf)] => Node::leaf(*leaf),
        _ => {
            let (left, right) =
                leaves.split_at(leaves.partition_point(|(path, _)| !bit(path, depth)));
            Node::parent(subtree(left, depth + 1), subtree(right, depth + 1))
        }
    }
}

/// A bucket's leaves after `writes` (both in path order, one write per path). Leaves that
/// change go to `changed`; `added` counts keys that appear and `removed` keys that go.
fn merge(
    existing: &[Leaf],
    writes: &[LeafWrite],
    changed: &mut Vec<LeafWrite>,
    added: &mut usize,
    removed: &mut usize,
) -> Vec<Leaf> {
    let mut leaves = Vec::with_capacity(existing.len() + writes.len());
    let mut old = existing.iter().copied().peekable();
    for &(path, leaf) in writes {
        while let Some(before) = old.next_if(|(p, _)| *p < path) {
            leaves.push(before);
        }
        let was = old.next_if(|(p, _)| *p == path).map(|(_, leaf)| leaf);
        match (leaf, was) {
            (Some(leaf), was) => {
                leaves.push((path, leaf));
                if was != Some(leaf) {
                    changed.push((path, Some(leaf)));
                }
                *added += usize::from(was.is_none());
            }
            (None, Some(_)) => {
                changed.push((path, None));
                *removed += 1;
            }
            (None, None) => {}
        }
    }
    leaves.extend(old);
    leaves
}

/// A block's writes as leaf writes: sorted by path, the last write of each key counting.
fn leaf_writes<'a>(
    writes: impl IntoIterator<Item = (&'a str, &'a [u8], Option<&'a [u8]>)>,
) -> Vec<LeafWrite> {
    let mut writes: Vec<(Hash, Option<&[u8]>)> = writes
        .into_iter()
        .map(|(namespace, key, value)| (key_path(namespace, key), value))
        .collect();
    // A stable sort keeps the writes of one key in their order; the last one counts.
    writes.sort_by_key(|(path, _)| *path);
    let mut last: Vec<(Hash, Option<&[u8]>)> = Vec::with_capacity(writes.len());
    for write in writes {
        match last.last_mut() {
            Some(previous) if previous.0 == write.0 => *previous = write,
            _ => last.push(write),
        }
    }
    last.into_iter()
        .map(|(path, value)| (path, value.map(|v| leaf_hash(&path, &value_hash(v)))))
        .collect()
}

/// Sibling hashes from the root down to a key's leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    pub siblings: Vec<Hash>,
}

impl InclusionProof {
    /// Whether (`path`, `value`) is in the tree whose root is `root`.
    pub fn verify(&self, root: &Hash, path: &Hash, value: &Hash) -> bool {
        let mut hash = leaf_hash(path, value);
        for (depth, sibling) in self.siblings.iter().enumerate().rev() {
            hash = if bit(path, depth) {
                branch_hash(sibling, &hash)
            } else {
                branch_hash(&hash, sibling)
            };
        }
        hash == *root
    }
}

/// A block's writes planned against a tree: its new root, and what adopting it changes.
#[derive(Debug)]
pub struct TreeUpdate {
    /// The root the plan was made against.
    base: Hash,
    root: Hash,
    len: usize,
    /// Summary nodes on the touched paths, with their new values: (depth, index, node).
    nodes: Vec<(u8, u32, Node)>,
    /// Leaves that change, in path order.
    leaves: Vec<LeafWrite>,
    /// Each touched bucket's range and all its leaves after the writes, for a
    /// [`LeafCache`](super::leaves::LeafCache).
    buckets: Vec<(PathRange, Vec<Leaf>)>,
}

impl TreeUpdate {
    /// The state root after the writes.
    pub fn root(&self) -> Hash {
        self.root
    }

    /// The leaves to store with the block: new or changed leaf hashes, and removed keys.
    pub fn leaf_writes(&self) -> &[LeafWrite] {
        &self.leaves
    }

    /// Each bucket the writes touched, as its range and all its leaves after them (empty
    /// when the writes removed its last key); taken once, by the cache of a store that now
    /// holds the leaf writes.
    pub fn take_buckets(&mut self) -> Vec<(PathRange, Vec<Leaf>)> {
        std::mem::take(&mut self.buckets)
    }
}

/// The world state's Merkle tree: its top levels in memory, its leaves in a [`LeafSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateTree {
    depth: u8,
    /// `levels[d][i]`: the subtree over the paths whose first `d` bits are `i`.
    levels: Vec<Vec<Node>>,
    len: usize,
}

impl Default for StateTree {
    fn default() -> Self {
        StateTree::new()
    }
}

impl StateTree {
    /// An empty tree keeping [`SUMMARY_DEPTH`] levels.
    pub fn new() -> Self {
        StateTree::with_depth(SUMMARY_DEPTH)
    }

    /// An empty tree keeping `depth` levels in memory (at most 24). The roots do not depend
    /// on it; the tests use small ones to make buckets hold many keys.
    pub fn with_depth(depth: u8) -> Self {
        assert!(
            depth <= MAX_SUMMARY_DEPTH,
            "a summary of {depth} levels: at most {MAX_SUMMARY_DEPTH}"
        );
        StateTree {
            depth,
            levels: (0..=depth).map(|d| vec![Node::EMPTY; 1 << d]).collect(),
            len: 0,
        }
    }

    pub fn root(&self) -> Hash {
        self.levels[0][0].hash
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn node(&self, depth: u8, index: u32) -> Node {
        self.levels[usize::from(depth)][index as usize]
    }

    /// Plans a block's writes (a later write of a key wins; `None` removes the key) against
    /// this tree, whose leaves `stored` holds: reads the leaves of every bucket the writes
    /// touch (one range per bucket that is not empty) and rehashes each node above them
    /// once. Changes nothing: [`StateTree::adopt`] does, once the leaf writes are stored.
    pub fn plan<'a>(
        &self,
        writes: impl IntoIterator<Item = (&'a str, &'a [u8], Option<&'a [u8]>)>,
        stored: &dyn LeafSource,
    ) -> Result<TreeUpdate, StoreError> {
        let writes = leaf_writes(writes);
        let depth = self.depth;
        // The touched buckets, each with its writes (paths in order, so a bucket's are together).
        let mut buckets: Vec<(u32, &[LeafWrite])> = Vec::new();
        let mut rest = writes.as_slice();
        while let Some((path, _)) = rest.first() {
            let index = prefix(path, depth);
            let (here, after) =
                rest.split_at(rest.partition_point(|(p, _)| prefix(p, depth) == index));
            buckets.push((index, here));
            rest = after;
        }
        let ranges: Vec<PathRange> = buckets
            .iter()
            .filter(|(index, _)| self.node(depth, *index).kind != Kind::Empty)
            .map(|(index, _)| prefix_range(*index, depth))
            .collect();
        let mut read = read_ranges(stored, &ranges)?.into_iter();
        let (mut added, mut removed) = (0, 0);
        let mut leaves = Vec::with_capacity(writes.len());
        let mut level: Vec<(u32, Node)> = Vec::with_capacity(buckets.len());
        let mut contents = Vec::with_capacity(buckets.len());
        for (index, bucket_writes) in buckets {
            let node = self.node(depth, index);
            let existing = match node.kind {
                Kind::Empty => Vec::new(),
                Kind::Leaf | Kind::Branch => read.next().unwrap_or_default(),
            };
            // Stored leaves that disagree with the summary would give a wrong root (and blame
            // a peer's correct block): refuse them.
            let agrees = match (node.kind, existing.as_slice()) {
                (Kind::Empty, _) => true,
                (Kind::Leaf, [(_, leaf)]) => *leaf == node.hash,
                (Kind::Branch, [_, _, ..]) => true,
                _ => false,
            };
            if !agrees {
                return Err(StoreError::Corrupt(format!(
                    "the stored leaves of state tree bucket {index} ({} of them) do not match the tree; restart the node to rebuild them from the world state",
                    existing.len()
                )));
            }
            let after = merge(
                &existing,
                bucket_writes,
                &mut leaves,
                &mut added,
                &mut removed,
            );
            level.push((index, subtree(&after, usize::from(depth))));
            contents.push((prefix_range(index, depth), after));
        }
        let mut nodes: Vec<(u8, u32, Node)> = level
            .iter()
            .map(|&(index, node)| (depth, index, node))
            .collect();
        for d in (0..depth).rev() {
            let child = |index: u32| match level.binary_search_by_key(&index, |&(i, _)| i) {
                Ok(at) => level[at].1,
                Err(_) => self.node(d + 1, index),
            };
            let mut parents: Vec<(u32, Node)> = Vec::with_capacity(level.len());
            for &(index, _) in &level {
                let parent = index >> 1;
                if parents.last().is_some_and(|&(p, _)| p == parent) {
                    continue;
                }
                parents.push((
                    parent,
                    Node::parent(child(parent << 1), child(parent << 1 | 1)),
                ));
            }
            nodes.extend(parents.iter().map(|&(index, node)| (d, index, node)));
            level = parents;
        }
        let root = match level.first() {
            Some((_, node)) => node.hash,
            None => self.root(),
        };
        Ok(TreeUpdate {
            base: self.root(),
            root,
            len: self.len + added - removed,
            nodes,
            leaves,
            buckets: contents,
        })
    }

    /// Takes on a plan made against this tree, once its leaf writes are stored.
    pub fn adopt(&mut self, update: TreeUpdate) {
        assert_eq!(
            update.base,
            self.root(),
            "a tree update is adopted by the tree it was planned against"
        );
        for (depth, index, node) in update.nodes {
            self.levels[usize::from(depth)][index as usize] = node;
        }
        self.len = update.len;
    }

    /// Plans, stores the leaf writes in `leaves` and adopts: a replay with no store of its own.
    pub fn apply<'a>(
        &mut self,
        writes: impl IntoIterator<Item = (&'a str, &'a [u8], Option<&'a [u8]>)>,
        leaves: &mut MemoryLeaves,
    ) {
        let update = self
            .plan(writes, leaves)
            .expect("leaves in memory are read without failing, one list per range");
        leaves.apply(update.leaf_writes());
        self.adopt(update);
    }

    /// A proof that `namespace`/`key` is present, or `None` when it is absent: the siblings
    /// come from the summary down to the key's bucket, then from the bucket's stored leaves.
    pub fn prove(
        &self,
        namespace: &str,
        key: &[u8],
        stored: &dyn LeafSource,
    ) -> Result<Option<InclusionProof>, StoreError> {
        let path = key_path(namespace, key);
        let bucket = prefix_range(prefix(&path, self.depth), self.depth);
        let mut siblings = Vec::new();
        for depth in 0..=self.depth {
            let node = self.node(depth, prefix(&path, depth));
            match node.kind {
                Kind::Empty => return Ok(None),
                // One key below: this key's leaf, or another's.
                Kind::Leaf => {
                    let leaves = stored.leaves_in(&[bucket])?;
                    let here = leaves
                        .iter()
                        .flatten()
                        .any(|&(p, leaf)| p == path && leaf == node.hash);
                    return Ok(here.then_some(InclusionProof { siblings }));
                }
                Kind::Branch if depth < self.depth => {
                    let sibling = prefix(&path, depth + 1) ^ 1;
                    siblings.push(self.node(depth + 1, sibling).hash);
                }
                Kind::Branch => {}
            }
        }
        // A bucket of two keys or more: walk its subtree.
        let leaves = stored
            .leaves_in(&[bucket])?
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        let mut below = leaves.as_slice();
        let mut depth = usize::from(self.depth);
        loop {
            match below {
                [] => return Ok(None),
                [(p, _)] => return Ok((*p == path).then_some(InclusionProof { siblings })),
                _ => {
                    let (left, right) =
                        below.split_at(below.partition_point(|(p, _)| !bit(p, depth)));
                    let (own, other) = if bit(&path, depth) {
                        (right, left)
                    } else {
                        (left, right)
                    };
                    siblings.push(subtree(other, depth + 1).hash);
                    below = own;
                    depth += 1;
                }
            }
        }
    }
}

/// Builds a tree from every leaf, in path order (as the store lists them at start): each
/// bucket's subtree as its leaves arrive, then the levels above once.
pub struct TreeBuilder {
    tree: StateTree,
    bucket: Option<u32>,
    leaves: Vec<Leaf>,
    last: Option<Hash>,
    disordered: Option<Hash>,
}

impl TreeBuilder {
    pub fn new(depth: u8) -> Self {
        TreeBuilder {
            tree: StateTree::with_depth(depth),
            bucket: None,
            leaves: Vec::new(),
            last: None,
            disordered: None,
        }
    }

    pub fn push(&mut self, path: Hash, leaf: Hash) {
        if self.last.is_some_and(|last| last >= path) {
            self.disordered.get_or_insert(path);
            return;
        }
        self.last = Some(path);
        let index = prefix(&path, self.tree.depth);
        if self.bucket != Some(index) {
            self.close_bucket();
            self.bucket = Some(index);
        }
        self.leaves.push((path, leaf));
    }

    fn close_bucket(&mut self) {
        if let Some(index) = self.bucket.take() {
            let depth = self.tree.depth;
            self.tree.levels[usize::from(depth)][index as usize] =
                subtree(&self.leaves, usize::from(depth));
            self.tree.len += self.leaves.len();
            self.leaves.clear();
        }
    }

    /// The tree, or an error when the leaves did not come in path order, each once.
    pub fn finish(mut self) -> Result<StateTree, StoreError> {
        if let Some(path) = self.disordered {
            return Err(StoreError::Corrupt(format!(
                "the state tree's leaves are not listed in path order (at {path})"
            )));
        }
        self.close_bucket();
        let mut tree = self.tree;
        for depth in (0..usize::from(tree.depth)).rev() {
            let (upper, lower) = tree.levels.split_at_mut(depth + 1);
            for (index, node) in upper[depth].iter_mut().enumerate() {
                *node = Node::parent(lower[0][2 * index], lower[0][2 * index + 1]);
            }
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::leaves::LeafCache;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The tree as it was kept before the summary (whole, in memory), written one key at a
    /// time: the reference the summary's roots and proofs are held to.
    mod reference {
        use super::super::{Hash, bit, branch_hash, leaf_hash};

        #[derive(Clone, Debug, Default)]
        pub enum Tree {
            #[default]
            Empty,
            Leaf {
                path: Hash,
                hash: Hash,
            },
            Branch {
                left: Box<Tree>,
                right: Box<Tree>,
                hash: Hash,
            },
        }

        impl Tree {
            pub fn hash(&self) -> Hash {
                match self {
                    Tree::Empty => Hash::ZERO,
                    Tree::Leaf { hash, .. } | Tree::Branch { hash, .. } => *hash,
                }
            }

            fn branch(left: Tree, right: Tree) -> Tree {
                let hash = branch_hash(&left.hash(), &right.hash());
                Tree::Branch {
                    left: Box::new(left),
                    right: Box::new(right),
                    hash,
                }
            }

            pub fn insert(self, path: Hash, value: Hash, depth: usize) -> Tree {
                let leaf = Tree::Leaf {
                    path,
                    hash: leaf_hash(&path, &value),
                };
                match self {
                    Tree::Empty => leaf,
                    Tree::Leaf { path: existing, .. } if existing == path => leaf,
                    Tree::Leaf {
                        path: existing,
                        hash,
                    } => split(
                        Tree::Leaf {
                            path: existing,
                            hash,
                        },
                        existing,
                        leaf,
                        path,
                        depth,
                    ),
                    Tree::Branch { left, right, .. } => {
                        if bit(&path, depth) {
                            Tree::branch(*left, right.insert(path, value, depth + 1))
                        } else {
                            Tree::branch(left.insert(path, value, depth + 1), *right)
                        }
                    }
                }
            }

            pub fn remove(self, path: &Hash, depth: usize) -> Tree {
                match self {
                    Tree::Empty => Tree::Empty,
                    Tree::Leaf { path: existing, .. } if existing == *path => Tree::Empty,
                    leaf @ Tree::Leaf { .. } => leaf,
                    Tree::Branch { left, right, .. } => {
                        let (left, right) = if bit(path, depth) {
                            (*left, right.remove(path, depth + 1))
                        } else {
                            (left.remove(path, depth + 1), *right)
                        };
                        match (left, right) {
                            (Tree::Empty, Tree::Empty) => Tree::Empty,
                            (leaf @ Tree::Leaf { .. }, Tree::Empty)
                            | (Tree::Empty, leaf @ Tree::Leaf { .. }) => leaf,
                            (left, right) => Tree::branch(left, right),
                        }
                    }
                }
            }

            pub fn prove(&self, path: &Hash) -> Option<Vec<Hash>> {
                let mut node = self;
                let mut siblings = Vec::new();
                loop {
                    match node {
                        Tree::Empty => return None,
                        Tree::Leaf { path: p, .. } => return (p == path).then_some(siblings),
                        Tree::Branch { left, right, .. } => {
                            if bit(path, siblings.len()) {
                                siblings.push(left.hash());
                                node = right;
                            } else {
                                siblings.push(right.hash());
                                node = left;
                            }
                        }
                    }
                }
            }
        }

        fn split(a: Tree, a_path: Hash, b: Tree, b_path: Hash, depth: usize) -> Tree {
            match (bit(&a_path, depth), bit(&b_path, depth)) {
                (false, true) => Tree::branch(a, b),
                (true, false) => Tree::branch(b, a),
                (false, false) => Tree::branch(split(a, a_path, b, b_path, depth + 1), Tree::Empty),
                (true, true) => Tree::branch(Tree::Empty, split(a, a_path, b, b_path, depth + 1)),
            }
        }
    }

    /// Every summary node is its children's parent, every bucket is the subtree of its
    /// stored leaves, and the count is the leaves'.
    fn check_summary(tree: &StateTree, leaves: &MemoryLeaves) {
        let depth = tree.depth;
        let mut by_bucket: BTreeMap<u32, Vec<Leaf>> = BTreeMap::new();
        for (path, leaf) in leaves.iter() {
            by_bucket
                .entry(prefix(&path, depth))
                .or_default()
                .push((path, leaf));
        }
        for (index, node) in tree.levels[usize::from(depth)].iter().enumerate() {
            let bucket = by_bucket.remove(&(index as u32)).unwrap_or_default();
            assert_eq!(
                *node,
                subtree(&bucket, usize::from(depth)),
                "bucket {index}"
            );
        }
        for d in 0..usize::from(depth) {
            for (index, node) in tree.levels[d].iter().enumerate() {
                let children = &tree.levels[d + 1];
                assert_eq!(
                    *node,
                    Node::parent(children[2 * index], children[2 * index + 1]),
                    "node {index} at depth {d}"
                );
            }
        }
        assert_eq!(tree.len(), leaves.len());
    }

    fn one(tree: &mut StateTree, leaves: &mut MemoryLeaves, key: &[u8], value: Option<&[u8]>) {
        tree.apply([("cc", key, value)], leaves);
    }

    #[test]
    fn empty_tree_has_zero_root_and_single_key_is_its_leaf() {
        let (mut tree, mut leaves) = (StateTree::new(), MemoryLeaves::new());
        assert_eq!(tree.root(), Hash::ZERO);
        one(&mut tree, &mut leaves, b"k", Some(b"v"));
        assert_eq!(
            tree.root(),
            leaf_hash(&key_path("cc", b"k"), &value_hash(b"v"))
        );
        one(&mut tree, &mut leaves, b"k", None);
        assert_eq!(tree.root(), Hash::ZERO);
        assert!(tree.is_empty() && leaves.is_empty());
    }

    #[test]
    fn namespaces_separate_keys() {
        let mut a = StateTree::new();
        a.apply(
            [("one", b"k".as_slice(), Some(b"v".as_slice()))],
            &mut MemoryLeaves::new(),
        );
        let mut b = StateTree::new();
        b.apply(
            [("two", b"k".as_slice(), Some(b"v".as_slice()))],
            &mut MemoryLeaves::new(),
        );
        assert_ne!(a.root(), b.root());
    }

    #[test]
    fn prefix_ranges_cover_exactly_their_nodes_paths() {
        for depth in [0u8, 1, 7, 18, 24] {
            let nodes = 1u64 << depth;
            for index in [0, nodes / 3, nodes - 1] {
                let index = index as u32;
                let (first, last) = prefix_range(index, depth);
                assert_eq!(prefix(&first, depth), index);
                assert_eq!(prefix(&last, depth), index);
                assert!(first.0[4..].iter().all(|b| *b == 0));
                assert!(last.0[4..].iter().all(|b| *b == 0xff));
                if index > 0 {
                    // The path just before `first` (whose bytes after the fourth are zero).
                    let top = u32::from_be_bytes(first.0[..4].try_into().expect("4 bytes"));
                    let mut before = Hash([0xff; 32]);
                    before.0[..4].copy_from_slice(&(top - 1).to_be_bytes());
                    assert_eq!(prefix(&before, depth), index - 1);
                }
            }
        }
    }

    /// A tree of `depth` summary levels holding keys 0..`count` of `namespace`, each "v".
    fn filled(depth: u8, count: u8, namespace: &str) -> (StateTree, MemoryLeaves, Vec<[u8; 1]>) {
        let (mut tree, mut leaves) = (StateTree::with_depth(depth), MemoryLeaves::new());
        let keys: Vec<[u8; 1]> = (0..count).map(|k| [k]).collect();
        tree.apply(
            keys.iter()
                .map(|k| (namespace, k.as_slice(), Some(b"v".as_slice()))),
            &mut leaves,
        );
        (tree, leaves, keys)
    }

    #[test]
    fn a_plan_changes_nothing_until_it_is_adopted() {
        let (tree, leaves, keys) = filled(3, 32, "cc");
        let before = (tree.root(), tree.len(), tree.levels.clone());
        let update = tree
            .plan([("cc", b"new".as_slice(), Some(b"v".as_slice()))], &leaves)
            .expect("memory leaves");
        assert_ne!(update.root(), tree.root());
        assert_eq!(update.leaf_writes().len(), 1);
        assert_eq!((tree.root(), tree.len(), tree.levels.clone()), before);
        // Writing a key its own value changes no leaf.
        let same = tree
            .plan([("cc", keys[3].as_slice(), Some(b"v".as_slice()))], &leaves)
            .expect("memory leaves");
        assert_eq!(same.root(), tree.root());
        assert!(same.leaf_writes().is_empty());
    }

    #[test]
    fn a_batch_that_empties_a_bucket_collapses_it_to_the_remaining_leaf() {
        let (mut tree, mut leaves, keys) = filled(2, 16, "ns");
        tree.apply(
            keys[1..].iter().map(|k| ("ns", k.as_slice(), None)),
            &mut leaves,
        );
        assert_eq!(
            tree.root(),
            leaf_hash(&key_path("ns", &keys[0]), &value_hash(b"v"))
        );
        assert_eq!(tree.len(), 1);
        check_summary(&tree, &leaves);
        tree.apply([("ns", keys[0].as_slice(), None)], &mut leaves);
        assert_eq!(tree.root(), Hash::ZERO);
        assert!(tree.is_empty() && leaves.is_empty());
    }

    #[test]
    fn leaves_out_of_order_are_refused_at_build() {
        let mut builder = TreeBuilder::new(4);
        builder.push(Hash([2; 32]), Hash([9; 32]));
        builder.push(Hash([1; 32]), Hash([9; 32]));
        assert!(matches!(builder.finish(), Err(StoreError::Corrupt(_))));
    }

    proptest! {
        /// Batches of writes (a key written more than once, keys removed, keys absent
        /// removed), planned and adopted at any summary depth, give the root, size and proofs
        /// of the whole tree written one key at a time; the summary stays consistent with
        /// its leaves; and a tree built afresh from the leaves is the same tree.
        #[test]
        fn batches_give_the_roots_and_proofs_of_the_whole_tree(
            depth in prop::sample::select(vec![0u8, 1, 3, 6, 18]),
            batches in proptest::collection::vec(
                proptest::collection::vec((0u8..40, proptest::option::of(0u8..4)), 0..30),
                1..8,
            )
        ) {
            let mut tree = StateTree::with_depth(depth);
            let mut leaves = MemoryLeaves::new();
            let mut whole = reference::Tree::Empty;
            let mut model = BTreeMap::new();
            for batch in &batches {
                let keys: Vec<[u8; 1]> = batch.iter().map(|(k, _)| [*k]).collect();
                let values: Vec<Option<[u8; 1]>> = batch.iter().map(|(_, v)| v.map(|v| [v])).collect();
                tree.apply(
                    keys.iter()
                        .zip(&values)
                        .map(|(k, v)| ("ns", k.as_slice(), v.as_ref().map(|v| v.as_slice()))),
                    &mut leaves,
                );
                for (k, v) in keys.iter().zip(&values) {
                    let path = key_path("ns", k);
                    whole = match v {
                        Some(v) => { model.insert(*k, v[0]); whole.insert(path, value_hash(v), 0) }
                        None => { model.remove(k); whole.remove(&path, 0) }
                    };
                }
                prop_assert_eq!(tree.root(), whole.hash());
                prop_assert_eq!(tree.len(), model.len());
                check_summary(&tree, &leaves);
            }
            for k in 0u8..40 {
                let proof = tree.prove("ns", &[k], &leaves).expect("memory leaves");
                let expected = whole.prove(&key_path("ns", &[k]));
                prop_assert_eq!(proof.as_ref().map(|p| p.siblings.clone()), expected);
                if let Some(proof) = proof {
                    let value = model[&[k]];
                    prop_assert!(proof.verify(&tree.root(), &key_path("ns", &[k]), &value_hash(&[value])));
                    prop_assert!(!proof.verify(&tree.root(), &key_path("ns", &[k]), &value_hash(&[value + 10])));
                }
            }
            let mut builder = TreeBuilder::new(depth);
            for (path, leaf) in leaves.iter() {
                builder.push(path, leaf);
            }
            let built = builder.finish().expect("in order");
            prop_assert_eq!(built.root(), tree.root());
            prop_assert_eq!(built.len(), tree.len());
            prop_assert!(built.levels == tree.levels);
        }

        /// Blocks planned through a leaf cache (remembering each block's buckets once its
        /// leaves are stored, with generations small enough to turn over) give the roots of
        /// blocks planned against the store alone, and the cache answers every bucket as the
        /// store does.
        #[test]
        fn a_leaf_cache_answers_as_the_store_does(
            depth in prop::sample::select(vec![0u8, 1, 3, 6]),
            per_generation in 1usize..12,
            batches in proptest::collection::vec(
                proptest::collection::vec((0u8..40, proptest::option::of(0u8..4)), 0..30),
                1..10,
            )
        ) {
            let (mut cached, mut plain) = (StateTree::with_depth(depth), StateTree::with_depth(depth));
            let (mut stored, mut plain_leaves) = (MemoryLeaves::new(), MemoryLeaves::new());
            let mut cache = LeafCache::new(LeafCache::held_bytes(1) * per_generation);
            let all: Vec<PathRange> = (0..1u32 << depth).map(|i| prefix_range(i, depth)).collect();
            for batch in &batches {
                let keys: Vec<[u8; 1]> = batch.iter().map(|(k, _)| [*k]).collect();
                let values: Vec<Option<[u8; 1]>> = batch.iter().map(|(_, v)| v.map(|v| [v])).collect();
                let writes = || keys.iter()
                    .zip(&values)
                    .map(|(k, v)| ("ns", k.as_slice(), v.as_ref().map(|v| v.as_slice())));
                let mut update = cached.plan(writes(), &cache.over(&stored)).expect("memory leaves");
                stored.apply(update.leaf_writes());
                cache.remember(update.take_buckets());
                cached.adopt(update);
                plain.apply(writes(), &mut plain_leaves);
                prop_assert_eq!(cached.root(), plain.root());
                prop_assert_eq!(
                    cache.over(&stored).leaves_in(&all).expect("memory leaves"),
                    stored.leaves_in(&all).expect("memory leaves")
                );
            }
        }
    }
}
