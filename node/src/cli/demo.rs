//! `weft demo`: a fresh network in a temporary directory, asset-transfer deployed, an asset
//! passed from Alice to Bob, Charlie and Dave with ownership checked after each step, a
//! non-owner refused, a round of asset-transfer-basic calls, then the chain info. Exits 0 only
//! if every check held.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

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

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
    let grpc_port = free_port()?;
    let ops_port = free_port()?;
    step(&format!(
        "generating identities and genesis in {}",
        network.display()
    ));
    let genesis = generate(&GenerateArgs {
        out: network.clone(),
        chain_id: "weft-demo".into(),
        organization: "Org1".into(),
        validators: 1,
        clients: vec![
            "alice".into(),
            "bob".into(),
            "charlie".into(),
            "dave".into(),
        ],
        base_port: grpc_port,
        operations_port: ops_port,
    })?;

    step("starting the validating node");
    let mut config =
        weft_node::config::Config::load(&network.join("nodes").join("validator0.toml"))?;
    config.chaincode.runtime = weft_node::chaincode::runtime::RuntimeKind::Process;
    let node = weft_node::node::start(config)
        .await
        .context("cannot start the demo node")?;
    let address = node.grpc_address.to_string();
    println!(
        "    validator0 at {address}, operations at http://{}",
        node.operations_address
    );

    let outcome = scenario(&network, &address, &genesis.chain_id, &binary).await;
    if args.keep && outcome.is_ok() {
        let kept = dir.keep();
        println!("\nThe network keeps running (Ctrl-C stops it). Reach it with, for example:");
        println!(
            "  weft ledger info --peer {address} --network {}",
            kept.join("network").display()
        );
        println!(
            "  weft chaincode query --peer {address} --network {} --as alice {CHAINCODE} GetAllAssets",
            kept.join("network").display()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    node.shutdown().await;
    outcome?;
    println!("\ndemo passed: every check held");
    Ok(())
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

async fn scenario(network: &Path, address: &str, chain_id: &str, binary: &Path) -> Result<()> {
    let admin = WeftClient::connect(address, signer(network, "admin")?, chain_id).await?;
    let as_user =
        |name: &str| -> Result<WeftClient> { Ok(admin.with_signer(signer(network, name)?)) };

    step(&format!(
        "packaging and deploying {CHAINCODE} from {}",
        binary.display()
    ));
    let bytes = std::fs::read(binary)?;
    let package = weft_proto::package::build(CHAINCODE, "1.0", &bytes)?;
    let deployed = admin.deploy(package, &[]).await?;
    println!("    deployed in block {}", deployed.block_number);

    step("the admin assigns asset1 to alice");
    admin
        .invoke(
            CHAINCODE,
            "CreateAsset",
            &string_args(&["asset1", "blue", "5", "alice", "300"]),
        )
        .await?;
    let owner = owner_of(&admin, "asset1").await?;
    println!("    asset1 is owned by {owner}");
    ensure!(
        owner == "alice",
        "asset1 should belong to alice, it belongs to {owner}"
    );

    for (from, to) in [("alice", "bob"), ("bob", "charlie"), ("charlie", "dave")] {
        step(&format!("{from} transfers asset1 to {to}"));
        let committed = as_user(from)?
            .invoke(CHAINCODE, "TransferAsset", &string_args(&["asset1", to]))
            .await?;
        let owner = owner_of(&admin, "asset1").await?;
        println!(
            "    block {}: asset1 is owned by {owner}",
            committed.block_number
        );
        ensure!(
            owner == to,
            "asset1 should belong to {to}, it belongs to {owner}"
        );
    }

    step("alice, no longer the owner, tries to take asset1 back");
    match as_user("alice")?
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
    let owner = owner_of(&admin, "asset1").await?;
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
    let alice = as_user("alice")?;
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

    step("chain info");
    let info = admin.chain_info().await?;
    println!(
        "    chain {}  height {}  transactions {}",
        info.chain_id, info.height, info.transactions
    );
    println!("    tip hash   {}", hex::encode(&info.current_hash));
    println!("    state root {}", hex::encode(&info.state_root));
    Ok(())
}
