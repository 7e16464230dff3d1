//! Command-line parsing and dispatch for `weft`.

mod bench;
mod chaincode;
mod cluster;
mod crypto;
mod demo;
mod ledger;
mod network;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Weft: a permissioned ledger with PBFT ordering and out-of-process chaincode"
)]
pub struct Cli {
    /// Log more (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the asset-transfer demo on a fresh network in a temporary directory.
    Demo(demo::DemoArgs),
    /// Run a node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Identities and network configuration.
    #[command(subcommand)]
    Crypto(crypto::CryptoCommand),
    /// Package, deploy, invoke and query chaincode.
    #[command(subcommand)]
    Chaincode(chaincode::ChaincodeCommand),
    /// Read and verify the ledger.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Measure committed transactions per second and commit latency.
    Bench(bench::BenchArgs),
    /// Peer clusters from a blueprint of locations.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Start a validating node from a configuration file.
    Start {
        #[arg(long)]
        config: PathBuf,
    },
    /// Show a running node's status.
    Status(network::PeerArgs),
}

/// Logs go to stderr. The demo tells its own story on stdout, so its nodes log only warnings
/// unless asked (`--verbose` or `RUST_LOG`).
pub fn init_tracing(cli: &Cli) {
    let default = match (cli.verbose, &cli.command) {
        (true, _) => "info,weft_node=debug",
        (false, Command::Demo(_)) => "warn",
        (false, _) => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Node(NodeCommand::Start { config }) => start_node(config).await,
        Command::Node(NodeCommand::Status(peer)) => network::status(peer).await,
        Command::Crypto(command) => crypto::run(command),
        Command::Chaincode(command) => chaincode::run(command).await,
        Command::Ledger(command) => ledger::run(command).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Cluster(command) => cluster::run(command).await,
    }
}

async fn start_node(config: PathBuf) -> Result<()> {
    let config = weft_node::config::Config::load(&config)?;
    let mut node = weft_node::node::start(config)
        .await
        .context("cannot start the node")?;
    println!(
        "node listening: gRPC {} operations http://{}",
        node.grpc_address, node.operations_address
    );
    let outcome = tokio::select! {
        reason = node.failed() => Err(anyhow::anyhow!(reason)),
        _ = shutdown_signal() => Ok(()),
    };
    tracing::info!("shutting down");
    node.shutdown().await;
    outcome
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
