//! The only conversions between the wire types (`weft_proto::pb`) and the domain types.
//! Decoding is total: malformed input is an error, never a panic.

use bytes::Bytes;
use prost::Message;
use weft_proto::pb;

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

fn malformed(what: &'static str, reason: impl Into<String>) -> ConvertError {
    ConvertError::Malformed {
        what,
        reason: reason.into(),
    }
}

/// The decoded content of a transaction payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub chain_id: String,
    pub chaincode: String,
    pub function: String,
    pub args: Vec<Bytes>,
    pub nonce: Bytes,
    pub created_unix_ms: u64,
    pub creator: [u8; 32],
}

pub fn decode_payload(bytes: &[u8]) -> Result<Payload, ConvertError> {
    let p = pb::TxPayload::decode(bytes)
        .map_err(|e| malformed("transaction payload", e.to_string()))?;
    let creator = <[u8; 32]>::try_from(p.creator.as_ref())
        .map_err(|_| malformed("transaction payload", "creator is not a 32-byte hash"))?;
    Ok(Payload {
        chain_id: p.chain_id,
        chaincode: p.chaincode,
        function: p.function,
        args: p.args,
        nonce: p.nonce,
        created_unix_ms: p.created_unix_ms,
        creator,
    })
}

pub fn signed_from_pb(tx: pb::SignedTx) -> SignedTransaction {
    SignedTransaction {
        id: TxId::of_payload(&tx.payload),
        payload: tx.payload,
        signer: tx.signer,
        signature: tx.signature,
    }
}

/// A transaction copied out of the message it arrived in into one allocation of its own.
/// Decoded fields are slices of the buffer they were decoded from (prost with `bytes`), and a
/// receive buffer is shared by whatever one read brought (8 KiB or more): a transaction kept
/// for seconds (pool, log, block) would keep all of it alive. For what arrives alone or in
/// small groups: a client's calls, relayed requests. A pre-prepare's transactions stay slices:
/// its message is about as large as they are, and it is kept while they are.
pub fn signed_copied_from_pb(tx: pb::SignedTx) -> SignedTransaction {
    let mut all =
        bytes::BytesMut::with_capacity(tx.payload.len() + tx.signer.len() + tx.signature.len());
    all.extend_from_slice(&tx.payload);
    all.extend_from_slice(&tx.signer);
    all.extend_from_slice(&tx.signature);
    let mut all = all.freeze();
    let payload = all.split_to(tx.payload.len());
    let signer = all.split_to(tx.signer.len());
    signed_from_pb(pb::SignedTx {
        payload,
        signer,
        signature: all,
    })
}

pub fn signed_to_pb(tx: &SignedTransaction) -> pb::SignedTx {
    pb::SignedTx {
        payload: tx.payload.clone(),
        signer: tx.signer.clone(),
        signature: tx.signature.clone(),
    }
}

pub fn status_to_pb(status: TxStatus) -> pb::TxStatus {
    match status {
        TxStatus::Valid => pb::TxStatus::Valid,
        TxStatus::ChaincodeError => pb::TxStatus::ChaincodeError,
        TxStatus::ChaincodeNotFound => pb::TxStatus::ChaincodeNotFound,
        TxStatus::ChaincodeCrashed => pb::TxStatus::ChaincodeCrashed,
        TxStatus::ExecutionTimeout => pb::TxStatus::ExecutionTimeout,
        TxStatus::Forbidden => pb::TxStatus::Forbidden,
    }
}

pub fn status_from_pb(code: i32) -> Result<TxStatus, ConvertError> {
    match pb::TxStatus::try_from(code) {
        Ok(pb::TxStatus::Valid) => Ok(TxStatus::Valid),
        Ok(pb::TxStatus::ChaincodeError) => Ok(TxStatus::ChaincodeError),
        Ok(pb::TxStatus::ChaincodeNotFound) => Ok(TxStatus::ChaincodeNotFound),
        Ok(pb::TxStatus::ChaincodeCrashed) => Ok(TxStatus::ChaincodeCrashed),
        Ok(pb::TxStatus::ExecutionTimeout) => Ok(TxStatus::ExecutionTimeout),
        Ok(pb::TxStatus::Forbidden) => Ok(TxStatus::Forbidden),
        _ => Err(malformed(
            "transaction result",
            format!("unknown status {code}"),
        )),
    }
}

pub fn write_to_pb(w: &KvWrite) -> pb::KvWrite {
    pb::KvWrite {
        key: w.key.clone(),
        value: w.value.clone(),
    }
}

pub fn write_from_pb(w: pb::KvWrite) -> KvWrite {
    KvWrite {
        key: w.key,
        value: w.value,
    }
}

pub fn event_to_pb(e: &ChaincodeEvent) -> pb::ChaincodeEvent {
    pb::ChaincodeEvent {
        chaincode: e.chaincode.clone(),
        name: e.name.clone(),
        payload: e.payload.clone(),
    }
}

pub fn event_from_pb(e: pb::ChaincodeEvent) -> ChaincodeEvent {
    ChaincodeEvent {
        chaincode: e.chaincode,
        name: e.name,
        payload: e.payload,
    }
}

pub fn result_to_pb(r: &TxResult) -> pb::TxResult {
    pb::TxResult {
        tx_id: Bytes::copy_from_slice(r.tx_id.as_bytes()),
        status: status_to_pb(r.status) as i32,
        message: r.message.clone(),
        payload: r.payload.clone(),
        event: r.event.as_ref().map(event_to_pb),
        writes: r
            .writes
            .iter()
            .map(|ns| pb::NamespaceWrites {
                chaincode: ns.chaincode.clone(),
                writes: ns.writes.iter().map(write_to_pb).collect(),
            })
            .collect(),
    }
}

pub fn result_from_pb(r: pb::TxResult) -> Result<TxResult, ConvertError> {
    Ok(TxResult {
        tx_id: TxId::from_slice(&r.tx_id)
            .ok_or_else(|| malformed("transaction result", "tx_id is not 32 bytes"))?,
        status: status_from_pb(r.status)?,
        message: r.message,
        payload: r.payload,
        event: r.event.map(event_from_pb),
        writes: r
            .writes
            .into_iter()
            .map(|ns| NamespaceWrites {
                chaincode: ns.chaincode,
                writes: ns.writes.into_iter().map(write_from_pb).collect(),
            })
            .collect(),
    })
}

pub fn header_to_pb(h: &BlockHeader) -> pb::BlockHeader {
    pb::BlockHeader {
        number: h.number,
        sequence: h.sequence,
        previous_hash: Bytes::copy_from_slice(&h.previous_hash.0),
        transactions_root: Bytes::copy_from_slice(&h.transactions_root.0),
        results_root: Bytes::copy_from_slice(&h.results_root.0),
        state_root: Bytes::copy_from_slice(&h.state_root.0),
    }
}

pub fn header_from_pb(h: pb::BlockHeader) -> Result<BlockHeader, ConvertError> {
    let hash = |b: &Bytes, field: &'static str| {
        Hash::from_slice(b)
            .ok_or_else(|| malformed("block header", format!("{field} is not 32 bytes")))
    };
    Ok(BlockHeader {
        number: h.number,
        sequence: h.sequence,
        previous_hash: hash(&h.previous_hash, "previous_hash")?,
        transactions_root: hash(&h.transactions_root, "transactions_root")?,
        results_root: hash(&h.results_root, "results_root")?,
        state_root: hash(&h.state_root, "state_root")?,
    })
}

pub fn block_to_pb(b: &Block) -> pb::Block {
    pb::Block {
        header: Some(header_to_pb(&b.header)),
        transactions: b.transactions.iter().map(signed_to_pb).collect(),
        results: b.results.iter().map(result_to_pb).collect(),
        hash: Bytes::copy_from_slice(&b.hash().0),
        certificate: None,
    }
}

/// Converts a received block and checks what can be checked without the chain: its carried
/// hash matches its header, and it has one result per transaction.
pub fn block_from_pb(b: pb::Block) -> Result<Block, ConvertError> {
    let header = header_from_pb(b.header.ok_or_else(|| malformed("block", "no header"))?)?;
    if b.transactions.len() != b.results.len() {
        return Err(malformed(
            "block",
            format!(
                "{} transactions but {} results",
                b.transactions.len(),
                b.results.len()
            ),
        ));
    }
    let block = Block {
        header,
        transactions: b.transactions.into_iter().map(signed_from_pb).collect(),
        results: b
            .results
            .into_iter()
            .map(result_from_pb)
            .collect::<Result<_, _>>()?,
    };
    if !b.hash.is_empty() && b.hash.as_ref() != block.hash().0 {
        return Err(malformed("block", "carried hash does not match its header"));
    }
    Ok(block)
}

/// Storage encoding of a block.
pub fn encode_block(b: &Block) -> Vec<u8> {
    block_to_pb(b).encode_to_vec()
}

pub fn decode_block(bytes: &[u8]) -> Result<Block, ConvertError> {
    block_from_pb(pb::Block::decode(bytes).map_err(|e| malformed("block", e.to_string()))?)
}

pub fn chain_info_to_pb(chain_id: &str, tip: &ChainTip, certified_height: u64) -> pb::ChainInfo {
    pb::ChainInfo {
        chain_id: chain_id.to_string(),
        height: tip.height,
        current_hash: Bytes::copy_from_slice(&tip.hash.0),
        state_root: Bytes::copy_from_slice(&tip.state_root.0),
        transactions: tip.transactions,
        certified_height,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
    }

    fn arb_status() -> impl Strategy<Value = TxStatus> {
        prop_oneof![
            Just(TxStatus::Valid),
            Just(TxStatus::ChaincodeError),
            Just(TxStatus::ChaincodeNotFound),
            Just(TxStatus::ChaincodeCrashed),
            Just(TxStatus::ExecutionTimeout),
            Just(TxStatus::Forbidden),
        ]
    }

    prop_compose! {
        fn arb_block()(
            number in any::<u64>(), sequence in any::<u64>(),
            roots in proptest::array::uniform4(any::<[u8; 32]>()),
            txs in proptest::collection::vec((arb_bytes(), arb_bytes(), arb_bytes(), arb_status(), ".{0,10}", arb_bytes(),
                proptest::option::of(("[a-z]{1,5}", arb_bytes())),
                proptest::collection::vec((arb_bytes(), proptest::option::of(arb_bytes())), 0..4)), 0..5)
        ) -> Block {
            let mut transactions = Vec::new();
            let mut results = Vec::new();
            for (payload, signer, signature, status, message, out, event, writes) in txs {
                let signed = SignedTransaction { id: TxId::of_payload(&payload), payload, signer, signature };
                results.push(TxResult {
                    tx_id: signed.id, status, message, payload: out,
                    event: event.map(|(name, payload)| ChaincodeEvent { chaincode: "cc".into(), name, payload }),
                    writes: vec![NamespaceWrites { chaincode: "cc".into(), writes: writes.into_iter().map(|(key, value)| KvWrite { key, value }).collect() }],
                });
                transactions.push(signed);
            }
            Block {
                header: BlockHeader { number, sequence, previous_hash: Hash(roots[0]), transactions_root: Hash(roots[1]), results_root: Hash(roots[2]), state_root: Hash(roots[3]) },
                transactions, results,
            }
        }
    }

    proptest! {
        #[test]
        fn block_round_trips(block in arb_block()) {
            prop_assert_eq!(decode_block(&encode_block(&block)).expect("decodes"), block);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_block(&bytes);
            let _ = decode_payload(&bytes);
        }
    }

    #[test]
    fn tampered_block_hash_is_rejected() {
        let block = Block {
            header: BlockHeader {
                number: 1,
                sequence: 1,
                previous_hash: Hash::ZERO,
                transactions_root: Hash::ZERO,
                results_root: Hash::ZERO,
                state_root: Hash::ZERO,
            },
            transactions: vec![],
            results: vec![],
        };
        let mut wire = block_to_pb(&block);
        wire.header.as_mut().expect("header").number = 2;
        assert!(block_from_pb(wire).is_err());
        let mut wire = block_to_pb(&block);
        wire.results.push(pb::TxResult::default());
        assert!(block_from_pb(wire).is_err());
    }

    #[test]
    fn a_copied_transaction_keeps_none_of_the_receive_buffer_alive() {
        // Three fields sliced from one large buffer, as a decoded request's are.
        let request = Bytes::from(vec![7u8; 64 * 1024]);
        let tx = pb::SignedTx {
            payload: request.slice(100..400),
            signer: request.slice(1_000..1_300),
            signature: request.slice(2_000..2_064),
        };
        let inside = |b: &Bytes| {
            let start = request.as_ptr() as usize;
            let at = b.as_ptr() as usize;
            at >= start && at < start + request.len()
        };
        let shared = signed_from_pb(tx.clone());
        assert!(inside(&shared.payload), "the fixture must share the buffer");
        let copied = signed_copied_from_pb(tx.clone());
        assert_eq!(copied, shared);
        assert_eq!(copied.id, TxId::of_payload(&tx.payload));
        for field in [&copied.payload, &copied.signer, &copied.signature] {
            assert!(
                !inside(field),
                "a field still points into the request buffer"
            );
        }
    }
}
