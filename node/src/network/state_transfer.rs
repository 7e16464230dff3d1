//! Fetching blocks for state transfer. A replica behind a certified checkpoint fetches the
//! missing blocks from the replicas that vouched for it, one peer at a time, and accepts them
//! only if they chain from its own tip to exactly the certified block hash. Invariant: no
//! block is handed to the ledger on one peer's word; a peer that answers wrongly is skipped.

use std::time::Duration;

use tokio_stream::StreamExt;
use weft_proto::pb;
use weft_proto::pb::consensus_client::ConsensusClient;

use super::service::MAX_FETCH_BLOCKS;
use crate::types::convert::block_from_pb;
use crate::types::{Block, Hash};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no peer served blocks {from} to {to} that chain to the certified hash: {reasons}")]
    NoPeer { from: u64, to: u64, reasons: String },
}

/// Blocks `from..=to`, checked to chain from `tip_hash` (the hash of block `from - 1`) to
/// `certified` (the hash of block `to`).
/// `peers` are (consensus address, mutual-TLS endpoint) pairs.
pub async fn fetch_certified(
    peers: &[(String, tonic::transport::Endpoint)],
    from: u64,
    to: u64,
    tip_hash: Hash,
    certified: Hash,
) -> Result<Vec<Block>, FetchError> {
    let mut reasons = Vec::new();
    for (address, endpoint) in peers {
        match fetch_from(endpoint.clone(), from, to, tip_hash, certified).await {
            Ok(blocks) => return Ok(blocks),
            Err(reason) => {
                tracing::warn!(peer = %address, from, to, %reason, "state transfer from this peer failed");
                reasons.push(format!("{address}: {reason}"));
            }
        }
    }
    Err(FetchError::NoPeer {
        from,
        to,
        reasons: reasons.join("; "),
    })
}

async fn fetch_from(
    endpoint: tonic::transport::Endpoint,
    from: u64,
    to: u64,
    tip_hash: Hash,
    certified: Hash,
) -> Result<Vec<Block>, String> {
    let channel = endpoint
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut client = ConsensusClient::new(channel)
        .max_decoding_message_size(weft_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(weft_proto::MAX_MESSAGE_BYTES);
    let mut blocks: Vec<Block> = Vec::new();
    let mut previous = tip_hash;
    let mut next = from;
    while next <= to {
        let last = to.min(next + MAX_FETCH_BLOCKS - 1);
        let mut stream = client
            .fetch_blocks(pb::FetchBlocksRequest {
                from: next,
                to: last,
            })
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        while let Some(block) = stream.next().await {
            let block = block_from_pb(block.map_err(|e| e.message().to_string())?)
                .map_err(|e| e.to_string())?;
            if block.number() != next {
                return Err(format!(
                    "sent block {} where {next} was due",
                    block.number()
                ));
            }
            if block.header.previous_hash != previous {
                return Err(format!(
                    "block {next} does not chain to the block before it"
                ));
            }
            previous = block.hash();
            next += 1;
            blocks.push(block);
            if next > last {
                break;
            }
        }
        if next <= last {
            return Err(format!("the stream ended before block {last}"));
        }
    }
    if previous != certified {
        return Err(format!(
            "block {to} has hash {previous}, but the checkpoint certifies {certified}"
        ));
    }
    Ok(blocks)
}
