//! `weft ledger info|block|tx|verify`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use weft_node::ledger::verify::verify_chain;
use weft_node::storage::{RocksStore, Store};
use weft_node::types::convert::{block_from_pb, result_from_pb};
use weft_proto::{ClientError, Genesis, TxId};

use super::network::PeerArgs;

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Chain id, height, tip hash and state root.
    Info {
        #[command(flatten)]
        peer: PeerArgs,
    },
    /// A block by number.
    Block {
        #[command(flatten)]
        peer: PeerArgs,
        number: u64,
    },
    /// A committed transaction by id (hex).
    Tx {
        #[command(flatten)]
        peer: PeerArgs,
        id: String,
    },
    /// Recompute every hash and the state root of a stopped node's ledger.
    Verify {
        /// The node's configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

pub async fn run(command: LedgerCommand) -> Result<()> {
    match command {
        LedgerCommand::Info { peer } => {
            let info = peer.client().await?.chain_info().await?;
            println!("chain         {}", info.chain_id);
            println!("height        {}", info.height);
            println!("tip hash      {}", hex::encode(&info.current_hash));
            println!("state root    {}", hex::encode(&info.state_root));
            println!("transactions  {}", info.transactions);
            Ok(())
        }
        LedgerCommand::Block { peer, number } => {
            let client = peer.client().await?;
            let committee = weft_proto::Committee::from_genesis(&peer.genesis()?)?;
            let (served, certified) = match client.certified_block(number, &committee).await {
                Ok(block) => (
                    block,
                    "yes: its contents, hash and the chain to a commit certificate of 2f+1 validators checked here".to_string(),
                ),
                Err(ClientError::NotYetCertified { .. }) => (
                    client.block(number).await?,
                    "not yet: no commit certificate covers it on this peer (try again in a moment)"
                        .to_string(),
                ),
                Err(e) => return Err(e.into()),
            };
            let block = block_from_pb(served)?;
            println!("block {}  hash {}", block.number(), block.hash());
            println!("  certified          {certified}");
            println!("  sequence           {}", block.header.sequence);
            println!("  previous hash      {}", block.header.previous_hash);
            println!("  transactions root  {}", block.header.transactions_root);
            println!("  results root       {}", block.header.results_root);
            println!("  state root         {}", block.header.state_root);
            for (tx, result) in block.transactions.iter().zip(&block.results) {
                let note = if result.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", result.message)
                };
                println!("  tx {}  {}{note}", tx.id, result.status);
            }
            Ok(())
        }
        LedgerCommand::Tx { peer, id } => {
            let Some(id) = TxId::from_hex(&id) else {
                bail!("{id:?} is not a transaction id: give 64 hex characters");
            };
            let info = peer.client().await?.transaction(id).await?;
            let result = result_from_pb(info.result.context("the peer sent no result")?)?;
            println!("transaction {id}");
            println!("  block   {} (index {})", info.block_number, info.index);
            println!("  status  {}", result.status);
            if !result.message.is_empty() {
                println!("  message {}", result.message);
            }
            println!("  result  {}", String::from_utf8_lossy(&result.payload));
            for ns in &result.writes {
                for w in &ns.writes {
                    match &w.value {
                        Some(v) => println!(
                            "  write   {}/{} = {}",
                            ns.chaincode,
                            String::from_utf8_lossy(&w.key),
                            String::from_utf8_lossy(v)
                        ),
                        None => println!(
                            "  delete  {}/{}",
                            ns.chaincode,
                            String::from_utf8_lossy(&w.key)
                        ),
                    }
                }
            }
            Ok(())
        }
        LedgerCommand::Verify { config } => {
            let config = weft_node::config::Config::load(&config)?;
            let genesis = Genesis::load(&config.node.genesis)?;
            let store: Arc<dyn Store> = Arc::new(
                RocksStore::open_existing(&config.node.data_dir.join("ledger"))
                    .context("cannot open the ledger (stop the node first: verify reads its database directly)")?,
            );
            let report = verify_chain(store.as_ref(), &genesis)?;
            println!(
                "ledger verified: {} blocks, {} transactions, tip {}, state root {}",
                report.blocks, report.transactions, report.tip_hash, report.state_root
            );
            let quorum = weft_proto::Committee::from_genesis(&genesis)
                .map(|c| c.quorum())
                .unwrap_or(1);
            let tip = report.blocks - 1;
            if report.certified == tip {
                println!(
                    "certified: {} commit certificates checked; every block up to the tip (block {tip}) is vouched for by {quorum} or more validators",
                    report.certificates
                );
            } else {
                println!(
                    "certified: {} commit certificates checked; blocks up to {} are vouched for by {quorum} or more validators; the {} block(s) after it carry no certificate here yet",
                    report.certificates,
                    report.certified,
                    tip - report.certified
                );
            }
            Ok(())
        }
    }
}
