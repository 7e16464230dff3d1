//! `weft demo`: a fresh network of four PBFT validators in a temporary directory, asset-transfer
//! deployed, an asset passed from Alice to Bob, Charlie and Dave (each step submitted through a
//! different validator, ownership read back from another), a non-owner refused, a round of
//! asset-transfer-basic calls, then every validator's height and tip hash, which must agree.
//! Exits 0 only if every check held.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use serde_json::Value;
use weft_proto::tx::string_args;
use weft_proto::{ClientError, Signer, WeftClient};

use super::crypto::{GenerateArgs, generate};

const CHAINCODE: &str = "asset-transfer";

#[derive(Args)]
pub struct DemoArgs {
    /// Leave the network running after the demo and print how to reach it.
    #[arg(long)]
    keep: bool,
    /// The asset-transfer chaincode binary (default: the one built beside this weft binary).
    #[arg(long, env = "WEFT_DEMO_CHAINCODE")]
    chaincode: Option<PathBuf>,
}

/// Validators in the demo network: n = 3f+1 with f = 1.
const VALIDATORS: usize = 4;
/// How long a validator may take to reach a block another one committed.
const CATCH_UP: Duration = Duration::from_secs(30);

/// The first of `count` consecutive loopback ports that were free a moment ago.
fn free_ports(count: u16) -> Result<u16> {
    for _ in 0..200 {
        let first = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if first.checked_add(count).is_none() {
            continue;
        }
        if (1..count).all(|i| TcpListener::bind(("127.0.0.1", first + i)).is_ok()) {
            return Ok(first);
        }
    }
    bail!("no {count} consecutive free ports on 127.0.0.1")
}

pub fn find_chaincode(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        ensure!(
            path.exists(),
            "the chaincode binary {} does not exist",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the weft binary has no directory")?;
    for candidate in [dir.join("examples").join(CHAINCODE), dir.join(CHAINCODE)] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "the asset-transfer chaincode binary is not built beside {}: run `cargo build --release -p chaincode-sdk --example asset-transfer` (or ./scripts/demo.sh), or pass --chaincode PATH",
        exe.display()
    )
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let binary = find_chaincode(args.chaincode)?;
    let dir = tempfile::Builder::new().prefix("weft-demo-").tempdir()?;
    let network = dir.path().join("network");
    let grpc_port = free_ports(VALIDATORS as u16)?;
    let ops_port = free_ports(VALIDATORS as u16)?;
    step(&format!(
        "generating identities and genesis for {VALIDATORS} validators in {}",
        network.display()
    ));
    let genesis = generate(&GenerateArgs {
        out: network.clone(),
        chain_id: "weft-demo".into(),
        organization: "Org1".into(),
        validators: VALIDATORS,
        clients: vec![
            "alice".into(),
            "bob".into(),
            "charlie".into(),
            "dave".into(),
        ],
        base_port: grpc_port,
        operations_port: ops_port,
    })?;

    step(&format!(
        "starting {VALIDATORS} validating peers (PBFT, tolerates one faulty)"
    ));
    let mut nodes = Vec::new();
    let mut addresses = Vec::new();
    for i in 0..VALIDATORS {
        let mut config = weft_node::config::Config::load(
            &network.join("nodes").join(format!("validator{i}.toml")),
        )?;
        config.chaincode.runtime = weft_node::chaincode::runtime::RuntimeKind::Process;
        let node = weft_node::node::start(config)
            .await
            .with_context(|| format!("cannot start demo validator{i}"))?;
        let address = node.grpc_address.to_string();
        println!(
            "    validator{i} at {address}, operations at http://{}",
            node.operations_address
        );
        addresses.push(address);
        nodes.push(node);
    }

    let outcome = scenario(&network, &addresses, &genesis.chain_id, &binary).await;
    if args.keep && outcome.is_ok() {
        let kept = dir.keep();
        let address = &addresses[0];
        println!("\nThe network keeps running (Ctrl-C stops it). Reach it with, for example:");
        println!(
            "  weft node status --peer {address} --network {}",
            kept.join("network").display()
        );
        println!(
            "  weft chaincode query --peer {address} --network {} --as alice {CHAINCODE} GetAllAssets",
            kept.join("network").display()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    for node in nodes {
        node.shutdown().await;
    }
    outcome?;
    println!("\ndemo passed: every check held");
    Ok(())
}

/// Waits until the validator behind `client` has at least `height` blocks.
async fn wait_for_height(client: &WeftClient, height: u64) -> Result<()> {
    let start = Instant::now();
    loop {
        if client.chain_info().await?.height >= height {
            return Ok(());
        }
        ensure!(
            start.elapsed() < CATCH_UP,
            "a validator did not reach height {height} within {CATCH_UP:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn step(text: &str) {
    println!("==> {text}");
}

fn signer(network: &Path, name: &str) -> Result<Signer> {
    Ok(Signer::load(&super::network::identity_dir(network, name))?)
}

async fn owner_of(client: &WeftClient, asset: &str) -> Result<String> {
    let payload = client
        .query(CHAINCODE, "ReadAsset", &string_args(&[asset]))
        .await?;
    let asset: Value = serde_json::from_slice(&payload)
        .context("ReadAsset returned something that is not JSON")?;
    Ok(asset["Owner"].as_str().unwrap_or_default().to_string())
}

async fn scenario(
    network: &Path,
    addresses: &[String],
    chain_id: &str,
    binary: &Path,
) -> Result<()> {
    let mut admins = Vec::new();
    for address in addresses {
        admins.push(WeftClient::connect(address, signer(network, "admin")?, chain_id).await?);
    }
    let admin = &admins[0];
    // `as_user(name, i)`: `name`'s client on validator i (mod the validator count).
    let as_user = |name: &str, validator: usize| -> Result<WeftClient> {
        Ok(admins[validator % admins.len()].with_signer(signer(network, name)?))
    };

    step(&format!(
        "packaging {CHAINCODE} from {}, installing it on every validator, deploying it",
        binary.display()
    ));
    let bytes = std::fs::read(binary)?;
    let package = weft_proto::package::build(CHAINCODE, "1.0", &bytes)?;
    for other in &admins[1..] {
        other.install(package.clone()).await?;
    }
    let deployed = admin.deploy(package, &[]).await?;
    println!("    deployed in block {}", deployed.block_number);
    for other in &admins {
        wait_for_height(other, deployed.block_number + 1).await?;
    }

    step("the admin assigns asset1 to alice (through validator1)");
    let created = admins[1]
        .invoke(
            CHAINCODE,
            "CreateAsset",
            &string_args(&["asset1", "blue", "5", "alice", "300"]),
        )
        .await?;
    wait_for_height(&admins[2], created.block_number + 1).await?;
    let owner = owner_of(&admins[2], "asset1").await?;
    println!("    asset1 is owned by {owner} (read on validator2)");
    ensure!(
        owner == "alice",
        "asset1 should belong to alice, it belongs to {owner}"
    );

    for (step_number, (from, to)) in [("alice", "bob"), ("bob", "charlie"), ("charlie", "dave")]
        .into_iter()
        .enumerate()
    {
        let through = step_number + 2;
        let reader = step_number + 3;
        step(&format!(
            "{from} transfers asset1 to {to} (through validator{})",
            through % VALIDATORS
        ));
        let committed = as_user(from, through)?
            .invoke(CHAINCODE, "TransferAsset", &string_args(&["asset1", to]))
            .await?;
        let reading = &admins[reader % VALIDATORS];
        wait_for_height(reading, committed.block_number + 1).await?;
        let owner = owner_of(reading, "asset1").await?;
        println!(
            "    block {}: asset1 is owned by {owner} (read on validator{})",
            committed.block_number,
            reader % VALIDATORS
        );
        ensure!(
            owner == to,
            "asset1 should belong to {to}, it belongs to {owner}"
        );
    }

    step("alice, no longer the owner, tries to take asset1 back");
    match as_user("alice", 1)?
        .invoke(
            CHAINCODE,
            "TransferAsset",
            &string_args(&["asset1", "alice"]),
        )
        .await
    {
        Err(ClientError::TxFailed { block, message, .. }) => {
            println!("    refused in block {block}: {message}");
        }
        Ok(_) => bail!("a transfer signed by a non-owner was accepted"),
        Err(e) => return Err(e.into()),
    }
    let owner = owner_of(admin, "asset1").await?;
    ensure!(
        owner == "dave",
        "asset1 should still belong to dave, it belongs to {owner}"
    );
    println!("    asset1 is still owned by {owner}");

    step("asset-transfer-basic round: InitLedger, GetAllAssets, Create/Read/Update/Delete");
    admin.invoke(CHAINCODE, "InitLedger", &[]).await?;
    let all: Value = serde_json::from_slice(&admin.query(CHAINCODE, "GetAllAssets", &[]).await?)?;
    let count = all.as_array().map(Vec::len).unwrap_or_default();
    println!("    GetAllAssets: {count} assets");
    // InitLedger writes asset1 to asset6 (replacing asset1, as Fabric's sample does).
    ensure!(
        count == 6,
        "InitLedger should leave asset1 to asset6, GetAllAssets shows {count}"
    );
    let alice = as_user("alice", 0)?;
    alice
        .invoke(
            CHAINCODE,
            "CreateAsset",
            &string_args(&["asset-a", "green", "3", "alice", "90"]),
        )
        .await?;
    let read: Value = serde_json::from_slice(
        &alice
            .query(CHAINCODE, "ReadAsset", &string_args(&["asset-a"]))
            .await?,
    )?;
    ensure!(read["Color"] == "green", "ReadAsset returned {read}");
    alice
        .invoke(
            CHAINCODE,
            "UpdateAsset",
            &string_args(&["asset-a", "red", "4", "alice", "120"]),
        )
        .await?;
    let read: Value = serde_json::from_slice(
        &alice
            .query(CHAINCODE, "ReadAsset", &string_args(&["asset-a"]))
            .await?,
    )?;
    ensure!(
        read["Color"] == "red" && read["AppraisedValue"] == 120,
        "UpdateAsset did not apply: {read}"
    );
    alice
        .invoke(CHAINCODE, "DeleteAsset", &string_args(&["asset-a"]))
        .await?;
    let exists = alice
        .query(CHAINCODE, "AssetExists", &string_args(&["asset-a"]))
        .await?;
    ensure!(exists == b"false", "asset-a still exists after DeleteAsset");
    println!("    created, read, updated and deleted asset-a");

    step("chain info on every validator");
    let info = admin.chain_info().await?;
    println!(
        "    chain {}  height {}  transactions {}",
        info.chain_id, info.height, info.transactions
    );
    println!("    state root {}", hex::encode(&info.state_root));
    let mut tips = Vec::new();
    for (i, client) in admins.iter().enumerate() {
        wait_for_height(client, info.height).await?;
        let block = client.block(info.height - 1).await?;
        let status = client.node_status().await?;
        let hash = hex::encode(&block.hash);
        println!(
            "    validator{i}: block {} hash {hash}  view {} primary {}",
            info.height - 1,
            status.view,
            status.primary
        );
        tips.push(hash);
    }
    ensure!(
        tips.iter().all(|hash| *hash == tips[0]),
        "the validators disagree on block {}: {tips:?}",
        info.height - 1
    );
    println!(
        "    every validator holds the same block {}",
        info.height - 1
    );
    Ok(())
}
