//! Following the certified chain: one `StreamBlocks(certified_only)` stream from a validator at
//! a time. Blocks are buffered until one arrives with a commit certificate; the certificate is
//! checked against the genesis validators, the buffered blocks must chain from this peer's tip
//! to the certified hash, and only then is each appended (with its roots and write sets
//! checked by the ledger). A validator that sends anything else is left for the next one; a
//! validator that stops sending while another holds later certified blocks is left too.
//!
//! Invariant: no block reaches this peer's ledger unless a valid commit certificate covers it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weft_proto::pb::client_client::ClientClient;
use weft_proto::{CertificateError, pb};

use crate::ledger::LedgerError;
use crate::node::{Shared, apply_fetched};
use crate::types::convert::{ConvertError, block_from_pb};
use crate::types::{Block, Hash};

/// The most uncertified blocks held while waiting for a certificate.
pub const MAX_UNCERTIFIED: usize = 4096;
/// How long a stream may stay silent before the other validators are asked whether they hold
/// later certified blocks.
const STALL: Duration = Duration::from_secs(3);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot reach validator {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("the block stream from {address} failed: {reason}")]
    Stream { address: String, reason: String },
    #[error("a block from {address} does not decode: {source}")]
    Malformed {
        address: String,
        #[source]
        source: ConvertError,
    },
    #[error("{address} sent block {got} where block {expected} was due")]
    OutOfOrder {
        address: String,
        expected: u64,
        got: u64,
    },
    #[error("block {number} from {address} does not chain to the block before it")]
    Unchained { address: String, number: u64 },
    #[error("the commit certificate of block {number} from {address} is invalid: {source}")]
    Certificate {
        address: String,
        number: u64,
        #[source]
        source: CertificateError,
    },
    #[error("{address} sent {MAX_UNCERTIFIED} blocks without a commit certificate")]
    Uncertified { address: String },
    #[error("block {number} from {address} is certified but does not fit this ledger: {reason}")]
    Rejected {
        address: String,
        number: u64,
        reason: String,
    },
    #[error("cannot store a followed block: {0}")]
    Store(String),
}

impl FollowError {
    /// A short label for the refusals metric.
    pub fn reason(&self) -> &'static str {
        match self {
            FollowError::Connect { .. } => "connect",
            FollowError::Stream { .. } => "stream",
            FollowError::Malformed { .. } => "malformed",
            FollowError::OutOfOrder { .. } => "out_of_order",
            FollowError::Unchained { .. } => "unchained",
            FollowError::Certificate { .. } => "bad_certificate",
            FollowError::Uncertified { .. } => "uncertified",
            FollowError::Rejected { .. } => "rejected_block",
            FollowError::Store(_) => "store",
        }
    }
}

/// How one stream ended without an error.
enum Ended {
    Shutdown,
    /// Another validator (by index) holds later certified blocks than this stream delivers.
    SwitchTo(usize),
}

/// Follows the validators at `addresses` until shutdown. Returns an error only when this
/// peer's own storage fails (the node then stops).
pub async fn run(
    shared: Arc<Shared>,
    addresses: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), FollowError> {
    let mut index = 0;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let before = shared.ledger.tip().height;
        match follow_one(&shared, &addresses, index, &mut shutdown).await {
            Ok(Ended::Shutdown) => return Ok(()),
            Ok(Ended::SwitchTo(next)) => {
                tracing::info!(from = %addresses[index], to = %addresses[next], "following another validator that holds later certified blocks");
                index = next;
                backoff = FIRST_BACKOFF;
                continue;
            }
            Err(e @ FollowError::Store(_)) => return Err(e),
            Err(e) => {
                shared.metrics.follow_refused(e.reason());
                match e {
                    FollowError::Connect { .. } | FollowError::Stream { .. } => {
                        tracing::debug!(error = %e, "block stream ended; trying the next validator")
                    }
                    _ => {
                        tracing::warn!(error = %e, "validator refused as a block source; trying the next one")
                    }
                }
            }
        }
        if shared.ledger.tip().height > before {
            backoff = FIRST_BACKOFF;
        }
        index = (index + 1) % addresses.len();
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn follow_one(
    shared: &Arc<Shared>,
    addresses: &[String],
    index: usize,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Ended, FollowError> {
    let address = addresses[index].clone();
    let channel = weft_proto::client::connect_channel(&address)
        .await
        .map_err(|e| FollowError::Connect {
            address: address.clone(),
            reason: e.to_string(),
        })?;
    let mut client =
        ClientClient::new(channel).max_decoding_message_size(weft_proto::MAX_MESSAGE_BYTES);
    let stream_error = |e: tonic::Status| FollowError::Stream {
        address: address.clone(),
        reason: e.message().to_string(),
    };
    let mut stream = client
        .stream_blocks(pb::StreamBlocksRequest {
            from_height: shared.ledger.tip().height,
            certified_only: true,
        })
        .await
        .map_err(stream_error)?
        .into_inner();
    tracing::debug!(validator = %address, from = shared.ledger.tip().height, "following certified blocks");
    let mut run = Run::default();
    loop {
        let next = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok(Ended::Shutdown),
            next = tokio::time::timeout(STALL, stream.message()) => next,
        };
        let message = match next {
            Err(_) => {
                if let Some(ahead) = validator_ahead(shared, addresses, index).await {
                    return Ok(Ended::SwitchTo(ahead));
                }
                continue;
            }
            Ok(Err(e)) => return Err(stream_error(e)),
            Ok(Ok(None)) => {
                return Err(FollowError::Stream {
                    address,
                    reason: "the validator ended the stream".into(),
                });
            }
            Ok(Ok(Some(message))) => message,
        };
        let tip = shared.ledger.tip();
        let Some((blocks, certificate)) = run
            .push(
                shared.certificates.committee(),
                tip.height,
                tip.hash,
                message,
            )
            .map_err(|e| e.from(&address))?
        else {
            continue;
        };
        for block in blocks {
            let number = block.number();
            match apply_fetched(shared, block) {
                Ok(_) => {
                    shared
                        .metrics
                        .followed_blocks
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(LedgerError::Store(e)) => return Err(FollowError::Store(e.to_string())),
                Err(e) => {
                    return Err(FollowError::Rejected {
                        address,
                        number,
                        reason: e.to_string(),
                    });
                }
            }
        }
        shared
            .certificates
            .keep_checked(&certificate)
            .map_err(|e| FollowError::Store(e.to_string()))?;
    }
}

/// Why a block from a validator was refused, before the validator's address is known.
#[derive(Debug)]
pub enum RunError {
    Malformed(ConvertError),
    OutOfOrder {
        expected: u64,
        got: u64,
    },
    Unchained {
        number: u64,
    },
    Certificate {
        number: u64,
        source: CertificateError,
    },
    Uncertified,
}

impl RunError {
    fn from(self, address: &str) -> FollowError {
        let address = address.to_string();
        match self {
            RunError::Malformed(source) => FollowError::Malformed { address, source },
            RunError::OutOfOrder { expected, got } => FollowError::OutOfOrder {
                address,
                expected,
                got,
            },
            RunError::Unchained { number } => FollowError::Unchained { address, number },
            RunError::Certificate { number, source } => FollowError::Certificate {
                address,
                number,
                source,
            },
            RunError::Uncertified => FollowError::Uncertified { address },
        }
    }
}

/// The blocks received since the last certificate. Pure: no I/O, so the checks are tested on
/// their own.
#[derive(Default)]
pub struct Run {
    blocks: Vec<Block>,
}

impl Run {
    /// Takes the next block of the stream, given this peer's tip (height and hash). Returns the
    /// blocks to apply, in order, with the certificate that covers them, once a block arrives
    /// with a valid certificate; every block must follow the one before it (the tip first).
    pub fn push(
        &mut self,
        committee: &weft_proto::Committee,
        tip_height: u64,
        tip_hash: Hash,
        message: pb::Block,
    ) -> Result<Option<(Vec<Block>, pb::CommitCertificate)>, RunError> {
        let certificate = message.certificate.clone();
        let block = block_from_pb(message).map_err(RunError::Malformed)?;
        let expected = tip_height + self.blocks.len() as u64;
        if block.number() != expected {
            return Err(RunError::OutOfOrder {
                expected,
                got: block.number(),
            });
        }
        let previous = self.blocks.last().map(Block::hash).unwrap_or(tip_hash);
        if block.header.previous_hash != previous {
            return Err(RunError::Unchained {
                number: block.number(),
            });
        }
        let number = block.number();
        let hash = block.hash();
        self.blocks.push(block);
        let Some(certificate) = certificate else {
            if self.blocks.len() >= MAX_UNCERTIFIED {
                return Err(RunError::Uncertified);
            }
            return Ok(None);
        };
        committee
            .verify_block(number, &hash.0, &certificate)
            .map_err(|source| RunError::Certificate { number, source })?;
        Ok(Some((std::mem::take(&mut self.blocks), certificate)))
    }
}

/// The first other validator whose certified chain goes beyond this peer's tip.
async fn validator_ahead(shared: &Shared, addresses: &[String], current: usize) -> Option<usize> {
    let height = shared.ledger.tip().height;
    for (index, address) in addresses.iter().enumerate() {
        if index == current {
            continue;
        }
        let Ok(Ok(channel)) = tokio::time::timeout(
            Duration::from_secs(1),
            weft_proto::client::connect_channel(address),
        )
        .await
        else {
            continue;
        };
        let info = tokio::time::timeout(
            Duration::from_secs(1),
            ClientClient::new(channel).get_chain_info(pb::GetChainInfoRequest {}),
        )
        .await;
        if let Ok(Ok(info)) = info
            && info.into_inner().certified_height >= height
        {
            return Some(index);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use weft_proto::signing::commit_signing_bytes;
    use weft_proto::{Committee, Genesis, Signer};

    use super::*;
    use crate::ledger::Ledger;
    use crate::storage::MemoryStore;
    use crate::types::convert::block_to_pb;

    struct Fixture {
        genesis: Genesis,
        signers: Vec<Signer>,
        committee: Committee,
        /// Blocks 0..=5 as the validators committed them.
        chain: Vec<Block>,
    }

    fn fixture() -> Fixture {
        let (genesis, signers) = crate::test_support::validator_network(4, "follow");
        let ledger = Ledger::open(Arc::new(MemoryStore::new()), &genesis).expect("test fixture");
        let mut chain = vec![
            ledger
                .block(0)
                .expect("test fixture")
                .expect("test fixture"),
        ];
        for sequence in 1..=5 {
            chain.push(
                (*ledger
                    .append(sequence, vec![], vec![])
                    .expect("test fixture"))
                .clone(),
            );
        }
        Fixture {
            committee: Committee::from_genesis(&genesis).expect("test fixture"),
            genesis,
            signers,
            chain,
        }
    }

    fn certified(f: &Fixture, block: &Block, signers: &[usize]) -> pb::Block {
        let mut message = block_to_pb(block);
        message.certificate = Some(pb::CommitCertificate {
            number: block.number(),
            block_hash: Bytes::copy_from_slice(&block.hash().0),
            signatures: signers
                .iter()
                .map(|&i| pb::BlockSignature {
                    validator: i as u32,
                    signature: Bytes::copy_from_slice(&f.signers[i].sign(&commit_signing_bytes(
                        &f.genesis.chain_id,
                        block.number(),
                        &block.hash().0,
                    ))),
                })
                .collect(),
        });
        message
    }

    #[test]
    fn blocks_are_released_only_with_a_valid_certificate_on_the_last_one() {
        let f = fixture();
        let tip = &f.chain[0];
        let mut run = Run::default();
        for block in &f.chain[1..3] {
            let released = run
                .push(&f.committee, 1, tip.hash(), block_to_pb(block))
                .expect("test fixture");
            assert!(
                released.is_none(),
                "no block is released without a certificate"
            );
        }
        let (blocks, certificate) = run
            .push(
                &f.committee,
                1,
                tip.hash(),
                certified(&f, &f.chain[3], &[0, 2, 3]),
            )
            .expect("test fixture")
            .expect("released");
        assert_eq!(
            blocks.iter().map(Block::number).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(certificate.number, 3);
    }

    #[test]
    fn a_forged_or_short_certificate_a_gap_or_a_fork_is_refused() {
        let f = fixture();
        let genesis_hash = f.chain[0].hash();
        // f+1 signatures are not a certificate.
        let short = certified(&f, &f.chain[1], &[0, 1]);
        assert!(matches!(
            Run::default().push(&f.committee, 1, genesis_hash, short),
            Err(RunError::Certificate { number: 1, .. })
        ));
        // A certificate signed for one block carried by another.
        let mut swapped = block_to_pb(&f.chain[1]);
        swapped.certificate = certified(&f, &f.chain[2], &[0, 1, 2]).certificate;
        assert!(matches!(
            Run::default().push(&f.committee, 1, genesis_hash, swapped),
            Err(RunError::Certificate { number: 1, .. })
        ));
        // A block whose content was changed after the validators signed it: the carried hash
        // no longer matches the header.
        let mut tampered = certified(&f, &f.chain[1], &[0, 1, 2]);
        tampered.header.as_mut().expect("test fixture").sequence = 99;
        assert!(matches!(
            Run::default().push(&f.committee, 1, genesis_hash, tampered),
            Err(RunError::Malformed(_))
        ));
        // A gap.
        assert!(matches!(
            Run::default().push(&f.committee, 1, genesis_hash, block_to_pb(&f.chain[2])),
            Err(RunError::OutOfOrder {
                expected: 1,
                got: 2
            })
        ));
        // A block that does not follow this peer's tip (another fork).
        assert!(matches!(
            Run::default().push(&f.committee, 1, Hash([5; 32]), block_to_pb(&f.chain[1])),
            Err(RunError::Unchained { number: 1 })
        ));
    }
}
