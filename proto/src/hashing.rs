//! The ledger's canonical hashes, in the one place both sides use: the node builds blocks with
//! them and clients check what a peer serves with them. Every hash is SHA-256 over a canonical
//! encoding: a domain tag, then fixed-width integers and length-prefixed byte strings, so two
//! different inputs can never produce the same bytes (no plain concatenation).

use sha2::{Digest, Sha256};

use crate::pb;

/// Builds a canonical, domain-separated SHA-256.
pub struct CanonicalHasher(Sha256);

impl CanonicalHasher {
    pub fn new(domain: &str) -> Self {
        let mut hasher = CanonicalHasher(Sha256::new());
        hasher.put_bytes(domain.as_bytes());
        hasher
    }

    pub fn put_u8(&mut self, value: u8) -> &mut Self {
        self.0.update([value]);
        self
    }

    pub fn put_u64(&mut self, value: u64) -> &mut Self {
        self.0.update(value.to_be_bytes());
        self
    }

    /// Length-prefixed bytes.
    pub fn put_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
        self
    }

    /// A 32-byte digest, as is (fixed width).
    pub fn put_digest(&mut self, digest: &[u8; 32]) -> &mut Self {
        self.0.update(digest);
        self
    }

    pub fn finish(&mut self) -> [u8; 32] {
        std::mem::take(&mut self.0).finalize().into()
    }
}

/// The fields a block header hash covers.
#[derive(Clone, Copy, Debug)]
pub struct HeaderFields<'a> {
    pub number: u64,
    pub sequence: u64,
    pub previous_hash: &'a [u8; 32],
    pub transactions_root: &'a [u8; 32],
    pub results_root: &'a [u8; 32],
    pub state_root: &'a [u8; 32],
}

/// A block's hash: the hash of its header.
pub fn header_hash(header: HeaderFields<'_>) -> [u8; 32] {
    CanonicalHasher::new("weft.v1/block-header")
        .put_u64(header.number)
        .put_u64(header.sequence)
        .put_digest(header.previous_hash)
        .put_digest(header.transactions_root)
        .put_digest(header.results_root)
        .put_digest(header.state_root)
        .finish()
}

pub fn transaction_hash(payload: &[u8], signer: &[u8], signature: &[u8]) -> [u8; 32] {
    CanonicalHasher::new("weft.v1/transaction")
        .put_bytes(payload)
        .put_bytes(signer)
        .put_bytes(signature)
        .finish()
}

/// The hash of a transaction's result, built from its parts so that any representation of a
/// result (the node's, the protobuf one) hashes without being copied into another.
pub struct ResultHasher(CanonicalHasher);

impl ResultHasher {
    /// `status` is the `TxStatus` number; `event` is (chaincode, name, payload); `namespaces`
    /// is how many [`ResultHasher::namespace`] calls follow.
    pub fn new(
        tx_id: &[u8],
        status: u8,
        message: &str,
        payload: &[u8],
        event: Option<(&str, &str, &[u8])>,
        namespaces: usize,
    ) -> ResultHasher {
        let mut h = CanonicalHasher::new("weft.v1/result");
        h.put_bytes(tx_id)
            .put_u8(status)
            .put_bytes(message.as_bytes())
            .put_bytes(payload);
        match event {
            None => h.put_u8(0),
            Some((chaincode, name, payload)) => h
                .put_u8(1)
                .put_bytes(chaincode.as_bytes())
                .put_bytes(name.as_bytes())
                .put_bytes(payload),
        };
        h.put_u64(namespaces as u64);
        ResultHasher(h)
    }

    /// The writes to one chaincode's namespace, as (key, value) with `None` deleting the key;
    /// their count is taken from the iterator, so it always matches the writes hashed.
    pub fn namespace<'a>(
        &mut self,
        chaincode: &str,
        writes: impl ExactSizeIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> &mut Self {
        self.0
            .put_bytes(chaincode.as_bytes())
            .put_u64(writes.len() as u64);
        for (key, value) in writes {
            self.0.put_bytes(key);
            match value {
                None => self.0.put_u8(0),
                Some(v) => self.0.put_u8(1).put_bytes(v),
            };
        }
        self
    }

    pub fn finish(mut self) -> [u8; 32] {
        self.0.finish()
    }
}

/// The hash of a transaction's result in its protobuf form.
pub fn result_hash(result: &pb::TxResult) -> [u8; 32] {
    // Status numbers are small; an out-of-range one (only a forged result has one) hashes as
    // 0, which no executed result carries.
    let status = u8::try_from(result.status).unwrap_or(0);
    let event = result
        .event
        .as_ref()
        .map(|e| (e.chaincode.as_str(), e.name.as_str(), e.payload.as_ref()));
    let mut h = ResultHasher::new(
        &result.tx_id,
        status,
        &result.message,
        &result.payload,
        event,
        result.writes.len(),
    );
    for ns in &result.writes {
        h.namespace(
            &ns.chaincode,
            ns.writes
                .iter()
                .map(|w| (w.key.as_ref(), w.value.as_deref())),
        );
    }
    h.finish()
}

/// Merkle root over `leaves` (RFC 6962 shape: leaf and node hashes domain-separated, the tree
/// split at the largest power of two below the count), so a proof of one element is possible.
pub fn merkle_root(domain: &str, leaves: &[[u8; 32]]) -> [u8; 32] {
    fn node(domain: &str, leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves {
            [leaf] => CanonicalHasher::new(domain)
                .put_u8(0)
                .put_digest(leaf)
                .finish(),
            _ => {
                let split = ((leaves.len() - 1).next_power_of_two() / 2).max(1);
                let left = node(domain, &leaves[..split]);
                let right = node(domain, &leaves[split..]);
                CanonicalHasher::new(domain)
                    .put_u8(1)
                    .put_digest(&left)
                    .put_digest(&right)
                    .finish()
            }
        }
    }
    if leaves.is_empty() {
        return CanonicalHasher::new(domain).put_u8(2).finish();
    }
    node(domain, leaves)
}

pub const TRANSACTIONS_DOMAIN: &str = "weft.v1/transactions";
pub const RESULTS_DOMAIN: &str = "weft.v1/results";

/// Why a block does not match its own header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockMismatch {
    #[error("the block has no header")]
    NoHeader,
    #[error("header field {0} is not 32 bytes")]
    FieldLength(&'static str),
    #[error("its transactions do not hash to the header's transactions root")]
    TransactionsRoot,
    #[error("its results do not hash to the header's results root")]
    ResultsRoot,
    #[error("it has {transactions} transactions but {results} results")]
    ResultCount { transactions: usize, results: usize },
}

/// Recomputes a served block's hash from its header, after checking that its transactions and
/// results are the ones the header commits to. The hash the block carries is not trusted.
pub fn check_block(block: &pb::Block) -> Result<[u8; 32], BlockMismatch> {
    let header = block.header.as_ref().ok_or(BlockMismatch::NoHeader)?;
    let digest = |bytes: &[u8], field: &'static str| -> Result<[u8; 32], BlockMismatch> {
        bytes
            .try_into()
            .map_err(|_| BlockMismatch::FieldLength(field))
    };
    let previous_hash = digest(&header.previous_hash, "previous_hash")?;
    let transactions_root = digest(&header.transactions_root, "transactions_root")?;
    let results_root = digest(&header.results_root, "results_root")?;
    let state_root = digest(&header.state_root, "state_root")?;
    if block.transactions.len() != block.results.len() {
        return Err(BlockMismatch::ResultCount {
            transactions: block.transactions.len(),
            results: block.results.len(),
        });
    }
    let transactions: Vec<[u8; 32]> = block
        .transactions
        .iter()
        .map(|tx| transaction_hash(&tx.payload, &tx.signer, &tx.signature))
        .collect();
    if merkle_root(TRANSACTIONS_DOMAIN, &transactions) != transactions_root {
        return Err(BlockMismatch::TransactionsRoot);
    }
    let results: Vec<[u8; 32]> = block.results.iter().map(result_hash).collect();
    if merkle_root(RESULTS_DOMAIN, &results) != results_root {
        return Err(BlockMismatch::ResultsRoot);
    }
    Ok(header_hash(HeaderFields {
        number: header.number,
        sequence: header.sequence,
        previous_hash: &previous_hash,
        transactions_root: &transactions_root,
        results_root: &results_root,
        state_root: &state_root,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: [u8; 32]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Ledgers written before stay verifiable only while every hash keeps its value: these
    /// pin each definition on fixed inputs.
    #[test]
    fn every_hash_keeps_its_value() {
        let header = header_hash(HeaderFields {
            number: 7,
            sequence: 7,
            previous_hash: &[1; 32],
            transactions_root: &[2; 32],
            results_root: &[3; 32],
            state_root: &[4; 32],
        });
        let transaction = transaction_hash(b"payload", b"signer", b"signature");
        let result = result_hash(&pb::TxResult {
            tx_id: vec![5; 32].into(),
            status: pb::TxStatus::Valid as i32,
            message: "ok".into(),
            payload: b"out".to_vec().into(),
            event: Some(pb::ChaincodeEvent {
                chaincode: "cc".into(),
                name: "moved".into(),
                payload: b"e".to_vec().into(),
            }),
            writes: vec![pb::NamespaceWrites {
                chaincode: "cc".into(),
                writes: vec![
                    pb::KvWrite {
                        key: b"k".to_vec().into(),
                        value: Some(b"v".to_vec().into()),
                    },
                    pb::KvWrite {
                        key: b"gone".to_vec().into(),
                        value: None,
                    },
                ],
            }],
        });
        let roots = [
            merkle_root(TRANSACTIONS_DOMAIN, &[]),
            merkle_root(TRANSACTIONS_DOMAIN, &[transaction]),
            merkle_root(RESULTS_DOMAIN, &[result, transaction, header]),
        ];
        let got: Vec<String> = [header, transaction, result]
            .into_iter()
            .chain(roots)
            .map(hex)
            .collect();
        assert_eq!(got, PINNED, "a ledger hash changed its value");
    }

    /// Computed when the definitions moved here from the node (unchanged encodings).
    const PINNED: [&str; 6] = [
        "0ae37a2ff50a7e84faf2e2a8f51103c0ebca1968d539aa8287a320f17f6bfc1d",
        "6741bb7e94a32309efaf013b9a54f0ffd21521794e8182f990e17e958798cc5a",
        "3d023fff2d5ebdf46993168dccce19a8ab47f153a358a803aa839cd9c6be9d00",
        "3e278a8f2f48d7985b46b6332f17161954b302b1958bd2fdba0c9cfbcc8206a5",
        "9ca2a5b4fdcb964379d0224bd77e9fbaee748214a2c8569f80306730dc852a62",
        "0e6a0c8889f95b7ba63508ab4360307ed2c4e43e3d426cf43ffd431d00b8d1d8",
    ];
}
