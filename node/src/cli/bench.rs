//! `weft bench` (first version): a single validator started in this process on a temporary
//! network, asset-transfer deployed, then pre-signed TransferAsset transactions submitted with
//! a bounded number in flight; reports committed transactions per second and submit-to-commit
//! latency percentiles, and writes them as JSON.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Args;
use tokio::sync::Semaphore;
use weft_node::chaincode::runtime::RuntimeKind;
use weft_proto::tx::string_args;
use weft_proto::{Signer, WeftClient, pb};

use super::crypto::{GenerateArgs, generate};
use super::demo::find_chaincode;

#[derive(Args)]
pub struct BenchArgs {
    /// TransferAsset transactions to commit.
    #[arg(long, default_value_t = 20_000)]
    transactions: usize,
    /// Most transactions in flight at once (submitted and not yet committed).
    #[arg(long, default_value_t = 2_000)]
    in_flight: usize,
    /// The asset-transfer chaincode binary (default: the one built beside this weft binary).
    #[arg(long, env = "WEFT_DEMO_CHAINCODE")]
    chaincode: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// How the node runs the chaincode: process, or docker (a FROM scratch container; needs a
    /// statically linked --chaincode).
    #[arg(long, default_value = "process")]
    runtime: RuntimeKind,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub async fn run(args: BenchArgs) -> Result<()> {
    ensure!(
        args.transactions > 0 && args.in_flight > 0,
        "--transactions and --in-flight must be above zero"
    );
    let binary = find_chaincode(args.chaincode)?;
    let dir = tempfile::Builder::new().prefix("weft-bench-").tempdir()?;
    let network = dir.path().join("network");
    let port = |_: ()| -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let genesis = generate(&GenerateArgs {
        out: network.clone(),
        chain_id: "weft-bench".into(),
        organization: "Org1".into(),
        validators: 1,
        peers: 0,
        clients: vec!["alice".into(), "bob".into()],
        base_port: port(())?,
        operations_port: port(())?,
        consensus_port: 0,
    })?;
    let mut config =
        weft_node::config::Config::load(&network.join("nodes").join("validator0.toml"))?;
    config.chaincode.runtime = args.runtime;
    config.api.max_pending = args.in_flight.max(1_000) * 2;
    let node = weft_node::node::start(config)
        .await
        .context("cannot start the bench node")?;
    let address = node.grpc_address.to_string();
    let load = |name: &str| Signer::load(&super::network::identity_dir(&network, name));
    let admin = WeftClient::connect(&address, load("admin")?, &genesis.chain_id).await?;
    let alice = admin.with_signer(load("alice")?);

    eprintln!(
        "deploying asset-transfer and creating {} assets for alice",
        args.transactions
    );
    // Deploying includes the launch: for docker, the image build (unless the engine has the
    // package's image), the container start and the handshake.
    let package = weft_proto::package::build("asset-transfer", "1.0", &std::fs::read(&binary)?)?;
    let deploying = Instant::now();
    admin.deploy(package, &[]).await?;
    let launch = deploying.elapsed();
    eprintln!(
        "deployed and launched asset-transfer ({} runtime) in {:.0} ms",
        args.runtime,
        launch.as_secs_f64() * 1e3
    );
    let ids: Vec<String> = (0..args.transactions)
        .map(|i| format!("bench-{i}"))
        .collect();
    let create: Vec<pb::SignedTx> = ids
        .iter()
        .map(|id| {
            alice
                .sign(
                    "asset-transfer",
                    "CreateAsset",
                    &string_args(&[id.as_str(), "blue", "1", "alice", "10"]),
                )
                .1
        })
        .collect();
    let (_, failures) = fire(&alice, create, args.in_flight).await?;
    ensure!(
        failures == 0,
        "{failures} CreateAsset transactions failed during setup"
    );

    eprintln!(
        "pre-signing {} TransferAsset transactions",
        args.transactions
    );
    let transfers: Vec<pb::SignedTx> = ids
        .iter()
        .map(|id| {
            alice
                .sign(
                    "asset-transfer",
                    "TransferAsset",
                    &string_args(&[id.as_str(), "bob"]),
                )
                .1
        })
        .collect();
    eprintln!("submitting with at most {} in flight", args.in_flight);
    let started = Instant::now();
    let (mut latencies, failures) = fire(&alice, transfers, args.in_flight).await?;
    let elapsed = started.elapsed();
    node.shutdown().await;
    ensure!(
        failures == 0,
        "{failures} TransferAsset transactions did not commit as VALID"
    );
    latencies.sort();
    let tps = args.transactions as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    println!(
        "committed {} TransferAsset in {:.2} s: {:.0} tx/s; submit-to-commit p50 {:.1} ms, p99 {:.1} ms ({} in flight, 1 validator, {} chaincode; deploy and launch {:.0} ms)",
        args.transactions,
        elapsed.as_secs_f64(),
        tps,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        args.in_flight,
        args.runtime,
        launch.as_secs_f64() * 1e3
    );
    if let Some(path) = args.json {
        let json = serde_json::json!({
            "transactions": args.transactions, "in_flight": args.in_flight, "seconds": elapsed.as_secs_f64(),
            "tx_per_second": tps, "p50_ms": p50.as_secs_f64() * 1e3, "p99_ms": p99.as_secs_f64() * 1e3,
            "runtime": args.runtime.as_str(), "launch_ms": launch.as_secs_f64() * 1e3,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

/// Submits every transaction with SubmitAndWait, at most `in_flight` at once; returns each
/// committed transaction's latency and the number that failed.
async fn fire(
    client: &WeftClient,
    txs: Vec<pb::SignedTx>,
    in_flight: usize,
) -> Result<(Vec<Duration>, usize)> {
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut tasks = Vec::with_capacity(txs.len());
    for tx in txs {
        let permit = permits.clone().acquire_owned().await?;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            let status = client
                .submit_signed_and_wait(tx, Duration::from_secs(120))
                .await;
            (
                sent.elapsed(),
                matches!(status, Ok(s) if s.status == pb::TxStatus::Valid as i32),
            )
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut failures = 0;
    for task in tasks {
        let (latency, ok) = task.await?;
        if ok {
            latencies.push(latency);
        } else {
            failures += 1;
        }
    }
    Ok((latencies, failures))
}
