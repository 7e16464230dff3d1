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

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use tokio_stream::Stream;
    use tonic::{Request, Response, Status, Streaming};
    use weft_proto::pb::consensus_server::{Consensus, ConsensusServer};

    use super::*;
    use crate::types::BlockHeader;
    use crate::types::convert::block_to_pb;

    /// A peer that serves `blocks` (block n at index n) as they are, true or not.
    struct Serving {
        blocks: Vec<pb::Block>,
    }

    type Blocks = Pin<Box<dyn Stream<Item = Result<pb::Block, Status>> + Send>>;

    #[tonic::async_trait]
    impl Consensus for Serving {
        async fn deliver(
            &self,
            _: Request<Streaming<pb::SignedConsensusMessage>>,
        ) -> Result<Response<pb::DeliverResponse>, Status> {
            Err(Status::unimplemented("blocks only"))
        }

        type FetchBlocksStream = Blocks;

        async fn fetch_blocks(
            &self,
            request: Request<pb::FetchBlocksRequest>,
        ) -> Result<Response<Blocks>, Status> {
            let pb::FetchBlocksRequest { from, to } = request.into_inner();
            let blocks: Vec<Result<pb::Block, Status>> = self
                .blocks
                .iter()
                .skip(from as usize)
                .take((to - from + 1) as usize)
                .cloned()
                .map(Ok)
                .collect();
            Ok(Response::new(Box::pin(tokio_stream::iter(blocks))))
        }
    }

    /// Serves `blocks` on a loopback port; returns (address, endpoint).
    async fn serve(blocks: Vec<pb::Block>) -> (String, tonic::transport::Endpoint) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ConsensusServer::new(Serving { blocks }))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{address}")).expect("endpoint");
        (address, endpoint)
    }

    /// Blocks 0..count, empty, chained; `fork` changes the state root from block `fork` on.
    fn chain(count: u64, fork: Option<u64>) -> Vec<Block> {
        let mut blocks: Vec<Block> = Vec::new();
        for number in 0..count {
            let forked = fork.is_some_and(|at| number >= at);
            blocks.push(Block {
                header: BlockHeader {
                    number,
                    sequence: number,
                    previous_hash: blocks.last().map_or(Hash::ZERO, Block::hash),
                    transactions_root: crate::crypto::transactions_root(&[]),
                    results_root: crate::crypto::results_root(&[]),
                    state_root: Hash([u8::from(forked); 32]),
                },
                transactions: Vec::new(),
                results: Vec::new(),
            });
        }
        blocks
    }

    #[tokio::test]
    async fn blocks_are_taken_only_from_a_peer_whose_chain_reaches_the_certified_hash() {
        let honest = chain(300, None);
        let tip_hash = honest[9].hash();
        let certified = honest[299].hash();
        let served = |blocks: &[Block]| blocks.iter().map(block_to_pb).collect::<Vec<_>>();

        // A peer on a fork from block 150: each block chains, but not to the certified hash.
        let forked = serve(served(&chain(300, Some(150)))).await;
        // A peer that skips a block.
        let mut gap = served(&honest);
        gap.remove(42);
        let gap = serve(gap).await;
        // A peer whose block 77 carries another block's contents under its own hash.
        let mut swapped = served(&honest);
        swapped[77] = block_to_pb(&chain(300, Some(77))[77]);
        let swapped = serve(swapped).await;
        let good = serve(served(&honest)).await;

        let peers = vec![forked.clone(), gap.clone(), swapped.clone(), good];
        let blocks = fetch_certified(&peers, 10, 299, tip_hash, certified)
            .await
            .expect("the honest peer, tried last, serves the certified chain");
        assert_eq!(blocks.len(), 290, "blocks 10 to 299, over two fetch calls");
        assert_eq!(blocks.first().map(Block::number), Some(10));
        assert_eq!(blocks.last().map(Block::hash), Some(certified));

        // Without an honest peer nothing is accepted, and every liar is named with its lie.
        let liars = vec![forked.clone(), gap.clone(), swapped.clone()];
        let refused = fetch_certified(&liars, 10, 299, tip_hash, certified)
            .await
            .expect_err("no peer serves the certified chain")
            .to_string();
        for (address, lie) in [
            (&forked.0, "but the checkpoint certifies"),
            (&gap.0, "where 42 was due"),
            (&swapped.0, "does not chain"),
        ] {
            assert!(
                refused.contains(&format!("{address}: ")) && refused.contains(lie),
                "{lie:?} of {address} in: {refused}"
            );
        }
    }
}
