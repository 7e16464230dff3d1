//! Fetching blocks for state transfer. A replica behind a certified checkpoint fetches the
//! missing blocks from the replicas that vouched for it, one peer at a time, and hands them to
//! the ledger run by run: a run ends at a block that carries a commit certificate of 2f+1
//! genesis validators over its hash, or at the checkpoint's own certified hash. Invariants: no
//! block is handed over on one peer's word; a peer that answers wrongly is left and the next
//! one continues where the handed-over chain ends; at most [`MAX_UNCERTIFIED_RUN`] fetched blocks
//! are held at once, however far behind the replica is.

use std::future::Future;
use std::time::Duration;

use tokio_stream::StreamExt;
use weft_proto::Committee;
use weft_proto::pb;
use weft_proto::pb::consensus_client::ConsensusClient;

use super::service::MAX_FETCH_BLOCKS;
use crate::types::convert::block_from_pb;
use crate::types::{Block, Hash};

/// The most fetched blocks held before one of them proves the run with a certificate
/// (validators certify every checkpoint block, `checkpoint_period` apart).
pub const MAX_UNCERTIFIED_RUN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no peer served blocks {from} to {to} that chain to the certified hash: {reasons}")]
    NoPeer { from: u64, to: u64, reasons: String },
    #[error("the fetched blocks could not be handed over: {0}")]
    Handover(String),
}

/// Where fetched blocks go: each proven run, in chain order.
pub trait Handover {
    /// Takes a run of blocks that continues the runs before it and that a certificate proves:
    /// `certificate`, on its last block, or (when `None`) the checkpoint's certified hash.
    /// Returns once the run is applied; an error stops the transfer.
    fn certified_run(
        &mut self,
        blocks: Vec<Block>,
        certificate: Option<pb::CommitCertificate>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Why one peer's answer was not taken.
enum PeerFailure {
    /// The peer answered wrongly or not at all: try the next one.
    Peer(String),
    /// Handing over failed: no peer can help.
    Handover(String),
}

/// Where the handed-over chain ends.
struct Position {
    /// The first block not handed over yet.
    next: u64,
    /// The hash of the block before it.
    previous: Hash,
}

/// Fetches blocks `from..=to`, checked to chain from `tip_hash` (the hash of block `from - 1`)
/// to `certified` (the hash of block `to`), and hands them over run by run. `peers` are
/// (consensus address, mutual-TLS endpoint) pairs; each continues where the last one stopped.
pub async fn fetch_certified<H: Handover>(
    peers: &[(String, tonic::transport::Endpoint)],
    committee: &Committee,
    from: u64,
    to: u64,
    tip_hash: Hash,
    certified: Hash,
    handover: &mut H,
) -> Result<(), FetchError> {
    let mut position = Position {
        next: from,
        previous: tip_hash,
    };
    let mut reasons = Vec::new();
    for (address, endpoint) in peers {
        let fetched = fetch_from(
            endpoint.clone(),
            committee,
            &mut position,
            to,
            certified,
            handover,
        )
        .await;
        match fetched {
            Ok(()) => return Ok(()),
            Err(PeerFailure::Handover(reason)) => return Err(FetchError::Handover(reason)),
            Err(PeerFailure::Peer(reason)) => {
                tracing::warn!(peer = %address, next = position.next, to, %reason, "state transfer from this peer failed");
                reasons.push(format!("{address}: {reason}"));
            }
        }
    }
    Err(FetchError::NoPeer {
        from: position.next,
        to,
        reasons: reasons.join("; "),
    })
}

async fn fetch_from<H: Handover>(
    endpoint: tonic::transport::Endpoint,
    committee: &Committee,
    position: &mut Position,
    to: u64,
    certified: Hash,
    handover: &mut H,
) -> Result<(), PeerFailure> {
    let peer = PeerFailure::Peer;
    let channel = endpoint
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| peer(e.to_string()))?;
    let mut client = ConsensusClient::new(channel)
        .max_decoding_message_size(weft_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(weft_proto::MAX_MESSAGE_BYTES);
    // Blocks fetched from this peer and not yet proven by a certificate.
    let mut pending: Vec<Block> = Vec::new();
    while position.next <= to {
        let first = position.next + pending.len() as u64;
        let last = to.min(first + MAX_FETCH_BLOCKS - 1);
        let mut stream = client
            .fetch_blocks(pb::FetchBlocksRequest {
                from: first,
                to: last,
            })
            .await
            .map_err(|e| peer(e.message().to_string()))?
            .into_inner();
        let mut expected = first;
        while let Some(served) = stream.next().await {
            let mut served = served.map_err(|e| peer(e.message().to_string()))?;
            let certificate = served.certificate.take();
            let block = block_from_pb(served).map_err(|e| peer(e.to_string()))?;
            // Contents first: a certificate vouches for a header, and the header for contents
            // only if they hash to its roots.
            crate::crypto::check_block_roots(&block).map_err(|root| {
                peer(format!(
                    "block {}: its contents do not hash to its header's {root}",
                    block.number()
                ))
            })?;
            if block.number() != expected {
                return Err(peer(format!(
                    "sent block {} where {expected} was due",
                    block.number()
                )));
            }
            let previous = pending.last().map_or(position.previous, Block::hash);
            if block.header.previous_hash != previous {
                return Err(peer(format!(
                    "block {expected} does not chain to the block before it"
                )));
            }
            let hash = block.hash();
            // What proves the run this block ends, if it ends one: the checkpoint's certified
            // hash (keeping the block's certificate too when it checks), or its certificate.
            let checks = |certificate: &pb::CommitCertificate| {
                committee.verify_block(expected, &hash.0, certificate)
            };
            let proof = if expected == to {
                if hash != certified {
                    return Err(peer(format!(
                        "block {to} has hash {hash}, but the checkpoint certifies {certified}"
                    )));
                }
                Some(certificate.filter(|certificate| checks(certificate).is_ok()))
            } else if let Some(certificate) = certificate {
                checks(&certificate)
                    .map_err(|e| peer(format!("block {expected}: commit certificate: {e}")))?;
                Some(Some(certificate))
            } else {
                None
            };
            pending.push(block);
            if let Some(certificate) = proof {
                let run = std::mem::take(&mut pending);
                handover
                    .certified_run(run, certificate)
                    .await
                    .map_err(PeerFailure::Handover)?;
                position.next = expected + 1;
                position.previous = hash;
            } else if pending.len() >= MAX_UNCERTIFIED_RUN {
                return Err(peer(format!(
                    "served {} blocks after block {} without a commit certificate",
                    pending.len(),
                    position.next.saturating_sub(1)
                )));
            }
            expected += 1;
            if expected > last {
                break;
            }
        }
        if expected <= last {
            return Err(peer(format!("the stream ended before block {last}")));
        }
    }
    Ok(())
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

    /// Collects what is handed over.
    #[derive(Default)]
    struct Runs(Vec<Vec<Block>>);

    impl Handover for Runs {
        async fn certified_run(
            &mut self,
            blocks: Vec<Block>,
            certificate: Option<pb::CommitCertificate>,
        ) -> Result<(), String> {
            let last = blocks.last().map(Block::number);
            assert!(
                certificate.is_some() || last == Some(299),
                "a run other than the last ends with a certificate: {last:?}"
            );
            self.0.push(blocks);
            Ok(())
        }
    }

    impl Runs {
        fn numbers(&self) -> Vec<u64> {
            self.0.iter().flatten().map(Block::number).collect()
        }
    }

    /// The blocks as a peer serves them, with a certificate by `signers` on every tenth.
    fn served(
        blocks: &[Block],
        chain_id: &str,
        signers: &[weft_proto::Signer],
        who: &[u32],
    ) -> Vec<pb::Block> {
        blocks
            .iter()
            .map(|block| {
                let mut message = block_to_pb(block);
                if block.number() % 10 == 0 {
                    let bytes = weft_proto::signing::commit_signing_bytes(
                        chain_id,
                        block.number(),
                        &block.hash().0,
                    );
                    message.certificate = Some(pb::CommitCertificate {
                        number: block.number(),
                        block_hash: block.hash().0.to_vec().into(),
                        signatures: who
                            .iter()
                            .map(|&validator| pb::BlockSignature {
                                validator,
                                signature: signers[validator as usize].sign(&bytes).to_vec().into(),
                            })
                            .collect(),
                    });
                }
                message
            })
            .collect()
    }

    #[tokio::test]
    async fn blocks_are_handed_over_in_certified_runs_and_only_from_peers_that_prove_them() {
        let (genesis, signers) = crate::test_support::validator_network(4, "transfer");
        let committee = Committee::from_genesis(&genesis).expect("committee");
        let honest = chain(300, None);
        let tip_hash = honest[9].hash();
        let certified = honest[299].hash();
        let serve_honest = |who: &[u32]| served(&honest, "transfer", &signers, who);

        // A peer on a fork from block 150, with certificates its validators never signed
        // (signed here over its own hashes by only two of them).
        let forked = serve(served(
            &chain(300, Some(150)),
            "transfer",
            &signers,
            &[0, 1],
        ))
        .await;
        // A peer that skips a block.
        let mut gap = serve_honest(&[0, 1, 2]);
        gap.remove(42);
        let gap = serve(gap).await;
        // A peer whose block 77 carries another block's contents under its own hash.
        let mut swapped = serve_honest(&[0, 1, 2]);
        swapped[77] = block_to_pb(&chain(300, Some(77))[77]);
        let swapped = serve(swapped).await;
        // A peer that stops serving after block 155.
        let mut short = serve_honest(&[1, 2, 3]);
        short.truncate(156);
        let short = serve(short).await;
        let good = serve(serve_honest(&[0, 2, 3])).await;

        // The short peer hands over the runs up to block 150 (certified); the liars add
        // nothing; the honest peer continues from block 151.
        let peers = vec![
            short.clone(),
            forked.clone(),
            gap.clone(),
            swapped.clone(),
            good,
        ];
        let mut runs = Runs::default();
        fetch_certified(&peers, &committee, 10, 299, tip_hash, certified, &mut runs)
            .await
            .expect("the honest peer, tried last, serves the certified chain");
        assert_eq!(
            runs.numbers(),
            (10..=299).collect::<Vec<_>>(),
            "each block once, in order"
        );
        assert!(
            runs.0.iter().all(|run| run.len() <= 10),
            "handed over run by run, not all at once: {:?}",
            runs.0.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(
            runs.0.last().and_then(|run| run.last()).map(Block::hash),
            Some(certified)
        );

        // A peer whose block 25 carries a transaction its header does not commit to.
        let mut stuffed = serve_honest(&[0, 1, 2]);
        stuffed[25].transactions.push(pb::SignedTx::default());
        stuffed[25].results.push(pb::TxResult {
            tx_id: vec![0; 32].into(),
            status: pb::TxStatus::Valid as i32,
            ..pb::TxResult::default()
        });
        let stuffed = serve(stuffed).await;
        let mut before = Runs::default();
        let refused = fetch_certified(
            &[stuffed],
            &committee,
            10,
            299,
            tip_hash,
            certified,
            &mut before,
        )
        .await
        .expect_err("contents that do not match the header")
        .to_string();
        assert!(
            refused.contains("block 25: its contents do not hash"),
            "{refused}"
        );
        assert_eq!(before.numbers(), (10..=20).collect::<Vec<_>>());

        // Without an honest peer the transfer fails, each liar named with its lie; what was
        // handed over is only what certificates proved (the gap peer's and the swapping peer's
        // blocks before their lies), never past the certified checkpoint's chain.
        let liars = vec![forked.clone(), gap.clone(), swapped.clone()];
        let mut nothing = Runs::default();
        let refused = fetch_certified(
            &liars,
            &committee,
            10,
            299,
            tip_hash,
            certified,
            &mut nothing,
        )
        .await
        .expect_err("no peer serves the certified chain")
        .to_string();
        assert_eq!(nothing.numbers(), (10..=70).collect::<Vec<_>>());
        assert!(
            nothing
                .0
                .iter()
                .flatten()
                .all(|block| block.hash() == honest[block.number() as usize].hash())
        );
        for (address, lie) in [
            (&forked.0, "commit certificate"),
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
