//! The state root: a compressed sparse Merkle tree over SHA-256 key paths. A subtree holding
//! one key is that key's leaf and an empty subtree hashes to zero, so the tree's shape, and
//! hence its root, depends only on the set of (key, value) pairs, never on the order of writes.
//! An update costs O(depth) hashes (about log2 of the number of keys), and any key can be
//! proven present against a root with the sibling hashes along its path. Children are shared
//! (`Arc`): a copy of the tree (to check a block before adopting it) costs one node, not the
//! whole state.

use std::sync::Arc;

use crate::crypto::CanonicalHasher;
use crate::types::Hash;

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

fn leaf_hash(path: &Hash, value: &Hash) -> Hash {
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

#[derive(Clone, Debug, Default)]
enum Node {
    #[default]
    Empty,
    Leaf {
        path: Hash,
        hash: Hash,
    },
    Branch {
        left: Arc<Node>,
        right: Arc<Node>,
        hash: Hash,
    },
}

impl Node {
    fn hash(&self) -> Hash {
        match self {
            Node::Empty => Hash::ZERO,
            Node::Leaf { hash, .. } | Node::Branch { hash, .. } => *hash,
        }
    }

    fn leaf(path: Hash, value: Hash) -> Node {
        Node::Leaf {
            path,
            hash: leaf_hash(&path, &value),
        }
    }

    fn branch(left: Node, right: Node) -> Node {
        Node::shared_branch(shared(left), shared(right))
    }

    /// A branch over children as they are: an update passes the sibling it did not touch
    /// through unchanged (no copy, no allocation).
    fn shared_branch(left: Arc<Node>, right: Arc<Node>) -> Node {
        let hash = branch_hash(&left.hash(), &right.hash());
        Node::Branch { left, right, hash }
    }
}

/// The one empty node every empty child points to. A tree of random keys has about 1.44
/// branches per key, and about one branch in three has an empty side: without sharing, 0.44
/// allocations per key that hold nothing.
static EMPTY: std::sync::LazyLock<Arc<Node>> = std::sync::LazyLock::new(|| Arc::new(Node::Empty));

/// A child holding `node`: the shared empty node, or a new one.
fn shared(node: Node) -> Arc<Node> {
    match node {
        Node::Empty => EMPTY.clone(),
        node => Arc::new(node),
    }
}

/// A child to rebuild from, in the tests' one-key-at-a-time reference ([`StateTree::apply`]):
/// moved out when no copy shares it, else copied (one node; its own children stay shared).
#[cfg(test)]
fn owned(child: Arc<Node>) -> Node {
    Arc::unwrap_or_clone(child)
}

/// Two leaves with different paths, placed under a branch at `depth`.
fn split(a: Node, a_path: Hash, b: Node, b_path: Hash, depth: usize) -> Node {
    match (bit(&a_path, depth), bit(&b_path, depth)) {
        (false, true) => Node::branch(a, b),
        (true, false) => Node::branch(b, a),
        (false, false) => Node::branch(split(a, a_path, b, b_path, depth + 1), Node::Empty),
        (true, true) => Node::branch(Node::Empty, split(a, a_path, b, b_path, depth + 1)),
    }
}

/// The tests' reference for a write: one key, recursively, independent of [`update`].
#[cfg(test)]
fn insert(node: Node, path: Hash, value: Hash, depth: usize) -> Node {
    match node {
        Node::Empty => Node::leaf(path, value),
        Node::Leaf { path: existing, .. } if existing == path => Node::leaf(path, value),
        leaf @ Node::Leaf { .. } => {
            let Node::Leaf { path: existing, .. } = leaf else {
                unreachable!("matched as a leaf")
            };
            split(leaf, existing, Node::leaf(path, value), path, depth)
        }
        Node::Branch { left, right, .. } => {
            if bit(&path, depth) {
                let right = insert(owned(right), path, value, depth + 1);
                Node::shared_branch(left, Arc::new(right))
            } else {
                let left = insert(owned(left), path, value, depth + 1);
                Node::shared_branch(Arc::new(left), right)
            }
        }
    }
}

/// The tests' reference for a removal, as [`insert`].
#[cfg(test)]
fn remove(node: Node, path: &Hash, depth: usize) -> Node {
    match node {
        Node::Empty => Node::Empty,
        Node::Leaf { path: existing, .. } if existing == *path => Node::Empty,
        leaf @ Node::Leaf { .. } => leaf,
        Node::Branch { left, right, .. } => {
            let (left, right) = if bit(path, depth) {
                (owned(left), remove(owned(right), path, depth + 1))
            } else {
                (remove(owned(left), path, depth + 1), owned(right))
            };
            match (left, right) {
                (Node::Empty, Node::Empty) => Node::Empty,
                (leaf @ Node::Leaf { .. }, Node::Empty)
                | (Node::Empty, leaf @ Node::Leaf { .. }) => leaf,
                (left, right) => Node::branch(left, right),
            }
        }
    }
}

/// One write of a batch: a key's path and its new value's hash (`None`: the key is removed).
type Update = (Hash, Option<Hash>);

/// Applies `updates` (sorted by path, one per path, every path sharing the node's first
/// `depth` bits) to `node` where it is, rehashing each node on their paths once. A node on
/// the paths that no copy of the tree shares is changed in place, not reallocated (new
/// leaves and branches still allocate); a shared one is copied first (`Arc::make_mut`: one
/// node, its own children stay shared). `added` counts keys that appear and `removed` keys
/// that go.
fn update(
    node: &mut Node,
    updates: &[Update],
    depth: usize,
    added: &mut usize,
    removed: &mut usize,
) {
    if updates.is_empty() {
        return;
    }
    let Node::Branch { left, right, hash } = node else {
        *node = rebuilt(std::mem::take(node), updates, depth, added, removed);
        return;
    };
    let (to_left, to_right) =
        updates.split_at(updates.partition_point(|(path, _)| !bit(path, depth)));
    update_child(left, to_left, depth + 1, added, removed);
    update_child(right, to_right, depth + 1, added, removed);
    let collapsed = match (&**left, &**right) {
        (Node::Empty, Node::Empty) => Some(Node::Empty),
        // A subtree left with one key is that key's leaf.
        (leaf @ Node::Leaf { .. }, Node::Empty) | (Node::Empty, leaf @ Node::Leaf { .. }) => {
            Some(leaf.clone())
        }
        _ => None,
    };
    match collapsed {
        Some(collapsed) => *node = collapsed,
        None => *hash = branch_hash(&left.hash(), &right.hash()),
    }
}

/// [`update`] of a child: an empty child is replaced, not copied out of the shared empty node,
/// and a child left empty points to the shared empty node again.
fn update_child(
    child: &mut Arc<Node>,
    updates: &[Update],
    depth: usize,
    added: &mut usize,
    removed: &mut usize,
) {
    if updates.is_empty() {
        return;
    }
    if matches!(**child, Node::Empty) {
        *child = shared(rebuilt(Node::Empty, updates, depth, added, removed));
    } else {
        update(Arc::make_mut(child), updates, depth, added, removed);
        if matches!(**child, Node::Empty) {
            *child = EMPTY.clone();
        }
    }
}

/// An empty subtree or a leaf at `depth` after `updates`: at most one key is there already;
/// the subtree holds it (unless a write names it) and every key written with a value.
fn rebuilt(
    node: Node,
    updates: &[Update],
    depth: usize,
    added: &mut usize,
    removed: &mut usize,
) -> Node {
    let existing = match &node {
        Node::Leaf { path, .. } => Some(*path),
        Node::Empty => None,
        Node::Branch { .. } => unreachable!("a branch is updated where it is"),
    };
    // One write, the common case: no list of leaves to sort.
    if let [(path, value)] = updates {
        let was_here = existing == Some(*path);
        return match (value, existing) {
            (Some(value), None) => {
                *added += 1;
                Node::leaf(*path, *value)
            }
            (Some(value), Some(_)) if was_here => Node::leaf(*path, *value),
            (Some(value), Some(existing)) => {
                *added += 1;
                split(node, existing, Node::leaf(*path, *value), *path, depth)
            }
            (None, _) if was_here => {
                *removed += 1;
                Node::Empty
            }
            (None, _) => node,
        };
    }
    let mut leaves: Vec<(Hash, Node)> = Vec::with_capacity(updates.len() + 1);
    if let Some(path) = existing
        && updates.binary_search_by(|(p, _)| p.cmp(&path)).is_err()
    {
        leaves.push((path, node));
    }
    for (path, value) in updates {
        let was_here = existing == Some(*path);
        match value {
            Some(value) => {
                *added += usize::from(!was_here);
                leaves.push((*path, Node::leaf(*path, *value)));
            }
            None => *removed += usize::from(was_here),
        }
    }
    leaves.sort_by_key(|(path, _)| *path);
    build(&leaves, depth)
}

/// The subtree at `depth` holding exactly `leaves` (sorted by path, distinct).
fn build(leaves: &[(Hash, Node)], depth: usize) -> Node {
    match leaves {
        [] => Node::Empty,
        [(_, leaf)] => leaf.clone(),
        _ => {
            let (left, right) =
                leaves.split_at(leaves.partition_point(|(path, _)| !bit(path, depth)));
            Node::branch(build(left, depth + 1), build(right, depth + 1))
        }
    }
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

/// The world state's Merkle tree.
#[derive(Clone, Debug, Default)]
pub struct StateTree {
    root: Node,
    len: usize,
}

impl StateTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn root(&self) -> Hash {
        self.root.hash()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets `namespace`/`key` to `value`, or removes it when `value` is `None`, one key at a
    /// time by [`insert`] and [`remove`]: the reference the tests hold [`StateTree::apply_all`]
    /// to. The ledger writes through `apply_all` only.
    #[cfg(test)]
    pub fn apply(&mut self, namespace: &str, key: &[u8], value: Option<&[u8]>) {
        let path = key_path(namespace, key);
        let present = self.contains(&path);
        let root = std::mem::take(&mut self.root);
        match value {
            Some(v) => {
                self.root = insert(root, path, value_hash(v), 0);
                if !present {
                    self.len += 1;
                }
            }
            None => {
                self.root = remove(root, &path, 0);
                if present {
                    self.len -= 1;
                }
            }
        }
    }

    /// Applies a batch of writes in order, as writing them one by one would (a later write of
    /// a key wins), but hashes each node they touch once: the nodes near the root, which
    /// every write passes, are rehashed once per batch instead of once per write. A write
    /// with `None` removes the key.
    pub fn apply_all<'a>(
        &mut self,
        writes: impl IntoIterator<Item = (&'a str, &'a [u8], Option<&'a [u8]>)>,
    ) {
        let mut updates: Vec<Update> = writes
            .into_iter()
            .map(|(namespace, key, value)| (key_path(namespace, key), value.map(value_hash)))
            .collect();
        // A stable sort keeps the writes of one key in their order; the last one counts.
        updates.sort_by_key(|(path, _)| *path);
        let mut last: Vec<Update> = Vec::with_capacity(updates.len());
        for write in updates {
            match last.last_mut() {
                Some(previous) if previous.0 == write.0 => *previous = write,
                _ => last.push(write),
            }
        }
        let (mut added, mut removed) = (0, 0);
        update(&mut self.root, &last, 0, &mut added, &mut removed);
        self.len = self.len + added - removed;
    }

    #[cfg(test)]
    fn contains(&self, path: &Hash) -> bool {
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => return false,
                Node::Leaf { path: p, .. } => return p == path,
                Node::Branch { left, right, .. } => {
                    node = if bit(path, depth) { right } else { left };
                    depth += 1;
                }
            }
        }
    }

    /// A proof that `namespace`/`key` is present, or `None` when it is absent.
    pub fn prove(&self, namespace: &str, key: &[u8]) -> Option<InclusionProof> {
        let path = key_path(namespace, key);
        let mut node = &self.root;
        let mut siblings = Vec::new();
        loop {
            match node {
                Node::Empty => return None,
                Node::Leaf { path: p, .. } => {
                    return (*p == path).then_some(InclusionProof { siblings });
                }
                Node::Branch { left, right, .. } => {
                    if bit(&path, siblings.len()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_copy_changes_apart_from_the_tree_it_was_copied_from() {
        let build = |pairs: &[(&str, Option<&str>)]| {
            let mut tree = StateTree::new();
            for (key, value) in pairs {
                tree.apply("cc", key.as_bytes(), value.map(str::as_bytes));
            }
            tree
        };
        let base: Vec<(&str, Option<&str>)> = (0..64)
            .map(|i| (["a", "b", "c", "d"][i % 4], Some("v")))
            .chain([("e", Some("1")), ("f", Some("2")), ("g", Some("3"))])
            .collect();
        let original = build(&base);
        let root = original.root();
        let mut copy = original.clone();
        copy.apply("cc", b"e", Some(b"changed"));
        copy.apply("cc", b"f", None);
        copy.apply("cc", b"h", Some(b"new"));
        assert_eq!(original.root(), root, "the original is untouched");
        assert_eq!(original.len(), 7);
        let mut expected = base.clone();
        expected.extend([("e", Some("changed")), ("f", None), ("h", Some("new"))]);
        assert_eq!(copy.root(), build(&expected).root());
        // And the other way round.
        let mut original = original;
        original.apply("cc", b"a", None);
        assert_eq!(
            copy.root(),
            build(&expected).root(),
            "the copy is untouched"
        );
    }

    #[test]
    fn empty_tree_has_zero_root_and_single_key_is_its_leaf() {
        let mut tree = StateTree::new();
        assert_eq!(tree.root(), Hash::ZERO);
        tree.apply("cc", b"k", Some(b"v"));
        assert_eq!(
            tree.root(),
            leaf_hash(&key_path("cc", b"k"), &value_hash(b"v"))
        );
        tree.apply("cc", b"k", None);
        assert_eq!(tree.root(), Hash::ZERO);
        assert!(tree.is_empty());
    }

    #[test]
    fn namespaces_separate_keys() {
        let mut a = StateTree::new();
        a.apply("one", b"k", Some(b"v"));
        let mut b = StateTree::new();
        b.apply("two", b"k", Some(b"v"));
        assert_ne!(a.root(), b.root());
    }

    proptest! {
        /// The root depends only on the final contents, whatever the order of writes and
        /// deletes, and every present key has a proof that verifies.
        #[test]
        fn root_is_canonical_and_proofs_verify(ops in proptest::collection::vec((0u8..24, proptest::option::of(0u8..4)), 0..120)) {
            let mut tree = StateTree::new();
            let mut model = BTreeMap::new();
            for (k, v) in &ops {
                let key = [*k];
                match v {
                    Some(v) => { tree.apply("ns", &key, Some(&[*v])); model.insert(key, *v); }
                    None => { tree.apply("ns", &key, None); model.remove(&key); }
                }
            }
            let mut fresh = StateTree::new();
            for (k, v) in model.iter().rev() {
                fresh.apply("ns", k, Some(&[*v]));
            }
            prop_assert_eq!(tree.root(), fresh.root());
            prop_assert_eq!(tree.len(), model.len());
            for (k, v) in &model {
                let proof = tree.prove("ns", k).expect("present key has a proof");
                prop_assert!(proof.verify(&tree.root(), &key_path("ns", k), &value_hash(&[*v])));
                prop_assert!(!proof.verify(&tree.root(), &key_path("ns", k), &value_hash(&[v + 10])));
            }
            for k in 0u8..24 {
                if !model.contains_key(&[k]) {
                    prop_assert!(tree.prove("ns", &[k]).is_none());
                }
            }
        }

        /// Writes applied in batches (a block's write set: a key written more than once, keys
        /// removed, keys absent removed) give the tree, root, size and proofs that applying
        /// them one by one gives, whether the batch changes nodes in place (no copy of the
        /// tree exists) or copies them (a copy exists, and keeps its root).
        #[test]
        fn a_batch_of_writes_equals_the_writes_one_by_one(
            batches in proptest::collection::vec(
                (
                    proptest::collection::vec((0u8..40, proptest::option::of(0u8..4)), 0..30),
                    any::<bool>(),
                ),
                1..8,
            )
        ) {
            let mut batched = StateTree::new();
            let mut single = StateTree::new();
            for (batch, keep_copy) in &batches {
                let before = keep_copy.then(|| batched.clone());
                let root_before = batched.root();
                let proofs_before: Vec<_> = (0u8..40).map(|k| batched.prove("ns", &[k])).collect();
                let keys: Vec<[u8; 1]> = batch.iter().map(|(k, _)| [*k]).collect();
                let values: Vec<Option<[u8; 1]>> = batch.iter().map(|(_, v)| v.map(|v| [v])).collect();
                batched.apply_all(
                    keys.iter()
                        .zip(&values)
                        .map(|(k, v)| ("ns", k.as_slice(), v.as_ref().map(|v| v.as_slice()))),
                );
                for (k, v) in keys.iter().zip(&values) {
                    single.apply("ns", k, v.as_ref().map(|v| v.as_slice()));
                }
                prop_assert_eq!(batched.root(), single.root());
                prop_assert_eq!(batched.len(), single.len());
                check_shape(&batched.root, 0);
                if let Some(before) = before {
                    // The copy's root is its own node; its proofs walk the nodes it shares.
                    prop_assert_eq!(before.root(), root_before);
                    let proofs: Vec<_> = (0u8..40).map(|k| before.prove("ns", &[k])).collect();
                    prop_assert_eq!(proofs, proofs_before);
                    check_shape(&before.root, 0);
                }
            }
            for k in 0u8..40 {
                prop_assert_eq!(batched.prove("ns", &[k]), single.prove("ns", &[k]));
            }
        }
    }

    /// Every branch's stored hash is its children's, and the shape is canonical: no branch
    /// holds nothing, or one key beside an empty side (that subtree is the key's leaf).
    fn check_shape(node: &Node, depth: usize) -> usize {
        match node {
            Node::Empty => 0,
            Node::Leaf { .. } => 1,
            Node::Branch { left, right, hash } => {
                assert_eq!(
                    *hash,
                    branch_hash(&left.hash(), &right.hash()),
                    "at depth {depth}"
                );
                let keys = check_shape(left, depth + 1) + check_shape(right, depth + 1);
                assert!(keys >= 2, "a branch at depth {depth} holds {keys} key(s)");
                keys
            }
        }
    }

    #[test]
    fn a_batch_that_empties_a_subtree_collapses_it_to_the_remaining_leaf() {
        let mut batched = StateTree::new();
        let keys: Vec<[u8; 1]> = (0u8..16).map(|k| [k]).collect();
        batched.apply_all(
            keys.iter()
                .map(|k| ("ns", k.as_slice(), Some(b"v".as_slice()))),
        );
        batched.apply_all(keys[1..].iter().map(|k| ("ns", k.as_slice(), None)));
        let mut one = StateTree::new();
        one.apply("ns", &keys[0], Some(b"v"));
        assert_eq!(batched.root(), one.root());
        assert_eq!(batched.len(), 1);
        batched.apply_all([("ns", keys[0].as_slice(), None)]);
        assert_eq!(batched.root(), Hash::ZERO);
        assert!(batched.is_empty());
    }
}
