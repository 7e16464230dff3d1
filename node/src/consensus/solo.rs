//! The solo orderer: one validator cuts batches by size or by time. Sequences continue from
//! the ledger's height, so a restart resumes numbering where the chain ends.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{CommitWork, OrderedBatch};
use crate::types::Transaction;

pub struct SoloConfig {
    pub batch_size: usize,
    pub batch_timeout: Duration,
}

/// Runs until the input closes; sends batches to `output`.
pub async fn run(
    config: SoloConfig,
    first_sequence: u64,
    mut input: mpsc::Receiver<Transaction>,
    output: mpsc::Sender<CommitWork>,
) {
    let mut sequence = first_sequence;
    while let Some(first) = input.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + config.batch_timeout;
        while batch.len() < config.batch_size {
            match tokio::time::timeout_at(deadline, input.recv()).await {
                Ok(Some(tx)) => batch.push(tx),
                Ok(None) | Err(_) => break,
            }
        }
        tracing::debug!(sequence, size = batch.len(), "batch cut");
        if output
            .send(CommitWork::Execute(OrderedBatch {
                sequence,
                transactions: batch,
                ordered_at: std::time::Instant::now(),
            }))
            .await
            .is_err()
        {
            return;
        }
        sequence += 1;
    }
}
