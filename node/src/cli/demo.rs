//! `weft demo`: a fresh network of four PBFT validators and one non-validating peer in a
//! temporary directory, asset-transfer deployed, an asset passed from Alice to Bob, Charlie and
//! Dave (each step submitted through the non-validating peer, ownership read back from it and
//! from a validator), a non-owner refused, a round of asset-transfer-basic calls, then every
//! peer's height and tip hash, which must agree, and the tip's commit certificate, checked
//! here against the genesis validators. Exits 0 only if every check held.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use serde_json::Value;
use weft_proto::tx::string_args;
use weft_proto::{ClientError, Signer, WeftClient};

use weft_node::chaincode::runtime::RuntimeKind;

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
    /// How the peers run the chaincode: process, docker (each peer builds a FROM scratch image
    /// and runs a container; needs a statically linked chaincode binary) or auto.
    #[arg(long, env = "WEFT_DEMO_RUNTIME", default_value = "process")]
    runtime: RuntimeKind,
}

/// Validators in the demo network: n = 3f+1 with f = 1.
const VALIDATORS: usize = 4;
/// Non-validating peers: clients submit through peer0.
const PEERS: usize = 1;
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
    find_example_chaincode(CHAINCODE, explicit)
}

/// The example chaincode binary `name` (`explicit` if given, else the one built beside this
/// weft binary).
pub fn find_example_chaincode(name: &str, explicit: Option<PathBuf>) -> Result<PathBuf> {
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
    for candidate in [dir.join("examples").join(name), dir.join(name)] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "the {name} chaincode binary is not built beside {}: run `cargo build --release -p chaincode-sdk --example {name}` (or ./scripts/demo.sh), or pass its path",
        exe.display()
    )
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let binary = find_chaincode(args.chaincode)?;
    if args.runtime == RuntimeKind::Docker {
        let bytes = std::fs::read(&binary)
            .with_context(|| format!("cannot read the chaincode binary {}", binary.display()))?;
        ensure!(
            weft_proto::package::is_static_elf(&bytes),
            "--runtime docker runs the chaincode FROM scratch, but {} is dynamically linked: build it with scripts/static-chaincode.sh (or docker/build-images.sh) and pass --chaincode PATH",
            binary.display()
        );
    }
    let dir = tempfile::Builder::new().prefix("weft-demo-").tempdir()?;
    let network = dir.path().join("network");
    let grpc_port = free_ports((VALIDATORS + PEERS) as u16)?;
    let ops_port = free_ports((VALIDATORS + PEERS) as u16)?;
    let consensus_port = free_ports(VALIDATORS as u16)?;
    step(&format!(
        "generating identities and genesis for {VALIDATORS} validators and {PEERS} non-validating peer in {}",
        network.display()
    ));
    let genesis = generate(&GenerateArgs {
        out: network.clone(),
        chain_id: "weft-demo".into(),
        organization: "Org1".into(),
        validators: VALIDATORS,
        peers: PEERS,
        clients: vec![
            "alice".into(),
            "bob".into(),
            "charlie".into(),
            "dave".into(),
        ],
        base_port: grpc_port,
        operations_port: ops_port,
        consensus_port,
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
        config.chaincode.runtime = args.runtime;
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
    step(
        "starting the non-validating peer peer0 (forwards to the validators, follows certified blocks)",
    );
    let mut config = weft_node::config::Config::load(&network.join("nodes").join("peer0.toml"))?;
    config.chaincode.runtime = args.runtime;
    let node = weft_node::node::start(config)
        .await
        .context("cannot start demo peer0")?;
    let peer_address = node.grpc_address.to_string();
    println!(
        "    peer0 at {peer_address}, operations at http://{}",
        node.operations_address
    );
    nodes.push(node);

    let validators: Vec<(String, String)> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("validator{i}"), a.clone()))
        .collect();
    let target = Target {
        network: &network,
        validators: &validators,
        peers: &[("peer0".to_string(), peer_address.clone())],
        genesis: &genesis,
    };
    let outcome = scenario(&target, Some(&binary), "asset1").await;
    if args.keep && outcome.is_ok() {
        let kept = dir.keep();
        let address = &peer_address;
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

/// Waits until the peer behind `client` has at least `height` blocks.
async fn wait_for_height(client: &WeftClient, height: u64) -> Result<()> {
    let start = Instant::now();
    loop {
        if client.chain_info().await?.height >= height {
            return Ok(());
        }
        ensure!(
            start.elapsed() < CATCH_UP,
            "a peer did not reach height {height} within {CATCH_UP:?}"
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

/// The network a demo runs against: its directory (identities), its validators and its
/// non-validating peers by name and gRPC address, and its genesis.
pub struct Target<'a> {
    pub network: &'a Path,
    pub validators: &'a [(String, String)],
    pub peers: &'a [(String, String)],
    pub genesis: &'a weft_proto::Genesis,
}

/// The demo's steps against `target`: deploys the chaincode from `binary` when given (else
/// it must be deployed already), then moves `asset` from Alice to Bob, Charlie and Dave,
/// each step submitted through the next non-validating peer in turn.
pub async fn scenario(target: &Target<'_>, binary: Option<&Path>, asset: &str) -> Result<()> {
    let network = target.network;
    let genesis = target.genesis;
    let chain_id = genesis.chain_id.as_str();
    ensure!(
        !target.validators.is_empty() && !target.peers.is_empty(),
        "the demo needs at least one validator and one non-validating peer"
    );
    let mut admins = Vec::new();
    for (_, address) in target.validators {
        admins.push(WeftClient::connect(address, signer(network, "admin")?, chain_id).await?);
    }
    let validators = admins.len();
    let admin = &admins[0];
    let mut peers = Vec::new();
    for (_, address) in target.peers {
        peers.push(WeftClient::connect(address, signer(network, "admin")?, chain_id).await?);
    }
    let peer = &peers[0];
    let peer_name = |i: usize| target.peers[i % peers.len()].0.as_str();
    // `as_user(name, i)`: `name`'s client on the i-th non-validating peer (in turn).
    let as_user = |name: &str, i: usize| -> Result<WeftClient> {
        Ok(peers[i % peers.len()].with_signer(signer(network, name)?))
    };
    let mut everyone: Vec<(String, &WeftClient)> = target
        .validators
        .iter()
        .map(|(name, _)| name.clone())
        .zip(&admins)
        .collect();
    everyone.extend(
        target
            .peers
            .iter()
            .map(|(name, _)| name.clone())
            .zip(&peers),
    );

    match binary {
        Some(binary) => {
            step(&format!(
                "packaging {CHAINCODE} from {}, installing it on every validator, deploying it through {}",
                binary.display(),
                peer_name(0)
            ));
            let bytes = std::fs::read(binary)?;
            let package = weft_proto::package::build(CHAINCODE, "1.0", &bytes)?;
            for other in &admins {
                other.install(package.clone()).await?;
            }
            // Installs on the peer too (it runs the chaincode for queries), then submits
            // through it.
            let deployed = peer.deploy(package, &[]).await?;
            println!("    deployed in block {}", deployed.block_number);
            for (_, client) in &everyone {
                wait_for_height(client, deployed.block_number + 1).await?;
            }
        }
        None => {
            let deployed = admin.deployed().await?;
            let found = deployed.iter().find(|d| d.name == CHAINCODE).with_context(|| {
                format!("{CHAINCODE} is not deployed on this network: list it under the blueprint's chaincode and run `weft cluster up`")
            })?;
            step(&format!(
                "{CHAINCODE} {} is deployed (package {})",
                found.version,
                &found.package_hash[..12.min(found.package_hash.len())]
            ));
        }
    }

    step(&format!(
        "the admin assigns {asset} to alice (through {})",
        peer_name(0)
    ));
    let created = peer
        .invoke(
            CHAINCODE,
            "CreateAsset",
            &string_args(&[asset, "blue", "5", "alice", "300"]),
        )
        .await?;
    let reader = &admins[2 % validators];
    wait_for_height(reader, created.block_number + 1).await?;
    let owner = owner_of(reader, asset).await?;
    println!(
        "    {asset} is owned by {owner} (read on {})",
        target.validators[2 % validators].0
    );
    ensure!(
        owner == "alice",
        "{asset} should belong to alice, it belongs to {owner}"
    );

    for (step_number, (from, to)) in [("alice", "bob"), ("bob", "charlie"), ("charlie", "dave")]
        .into_iter()
        .enumerate()
    {
        let through = step_number + 1;
        step(&format!(
            "{from} transfers {asset} to {to} (through {})",
            peer_name(through)
        ));
        let committed = as_user(from, through)?
            .invoke(CHAINCODE, "TransferAsset", &string_args(&[asset, to]))
            .await?;
        let via = &peers[through % peers.len()];
        let on_peer = owner_of(via, asset).await?;
        let reading = &admins[through % validators];
        wait_for_height(reading, committed.block_number + 1).await?;
        let on_validator = owner_of(reading, asset).await?;
        let validator_name = &target.validators[through % validators].0;
        println!(
            "    block {}: {asset} is owned by {on_peer} (read on {}) and by {on_validator} (read on {validator_name})",
            committed.block_number,
            peer_name(through),
        );
        ensure!(
            on_peer == to && on_validator == to,
            "{asset} should belong to {to}; {} says {on_peer}, {validator_name} says {on_validator}",
            peer_name(through)
        );
    }

    step(&format!(
        "alice, no longer the owner, tries to take {asset} back"
    ));
    match as_user("alice", 0)?
        .invoke(CHAINCODE, "TransferAsset", &string_args(&[asset, "alice"]))
        .await
    {
        Err(ClientError::TxFailed { block, message, .. }) => {
            println!("    refused in block {block}: {message}");
        }
        Ok(_) => bail!("a transfer signed by a non-owner was accepted"),
        Err(e) => return Err(e.into()),
    }
    let owner = owner_of(admin, asset).await?;
    ensure!(
        owner == "dave",
        "{asset} should still belong to dave, it belongs to {owner}"
    );
    println!("    {asset} is still owned by {owner}");

    step("asset-transfer-basic round: InitLedger, GetAllAssets, Create/Read/Update/Delete");
    let ids = |all: &Value| -> std::collections::BTreeSet<String> {
        all.as_array()
            .map(|assets| {
                assets
                    .iter()
                    .filter_map(|a| a["ID"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = ids(&serde_json::from_slice(
        &admin.query(CHAINCODE, "GetAllAssets", &[]).await?,
    )?);
    admin.invoke(CHAINCODE, "InitLedger", &[]).await?;
    let all: Value = serde_json::from_slice(&admin.query(CHAINCODE, "GetAllAssets", &[]).await?)?;
    let count = all.as_array().map(Vec::len).unwrap_or_default();
    println!("    GetAllAssets: {count} assets");
    // InitLedger writes asset1 to asset6 (replacing any it finds, as Fabric's sample does).
    let mut expected = before;
    expected.extend((1..=6).map(|i| format!("asset{i}")));
    ensure!(
        ids(&all) == expected,
        "InitLedger should add asset1 to asset6 to what was there, GetAllAssets shows {count}: {all}"
    );
    let alice = admins[1 % validators].with_signer(signer(network, "alice")?);
    let other = format!("{asset}-a");
    let other = other.as_str();
    alice
        .invoke(
            CHAINCODE,
            "CreateAsset",
            &string_args(&[other, "green", "3", "alice", "90"]),
        )
        .await?;
    let read: Value = serde_json::from_slice(
        &alice
            .query(CHAINCODE, "ReadAsset", &string_args(&[other]))
            .await?,
    )?;
    ensure!(read["Color"] == "green", "ReadAsset returned {read}");
    alice
        .invoke(
            CHAINCODE,
            "UpdateAsset",
            &string_args(&[other, "red", "4", "alice", "120"]),
        )
        .await?;
    let read: Value = serde_json::from_slice(
        &alice
            .query(CHAINCODE, "ReadAsset", &string_args(&[other]))
            .await?,
    )?;
    ensure!(
        read["Color"] == "red" && read["AppraisedValue"] == 120,
        "UpdateAsset did not apply: {read}"
    );
    alice
        .invoke(CHAINCODE, "DeleteAsset", &string_args(&[other]))
        .await?;
    let exists = alice
        .query(CHAINCODE, "AssetExists", &string_args(&[other]))
        .await?;
    ensure!(exists == b"false", "{other} still exists after DeleteAsset");
    println!("    created, read, updated and deleted {other}");

    step("every peer: role, view, height and tip hash");
    let committee = weft_proto::Committee::from_genesis(genesis)?;
    // The peer follows certified blocks only: wait until it holds everything committed so
    // far (idle validators pad to the next checkpoint, so the tip can still move a little).
    let mut height = 0;
    for _ in 0..3 {
        height = 0;
        for (_, client) in &everyone {
            height = height.max(client.chain_info().await?.height);
        }
        for (_, client) in &everyone {
            wait_for_height(client, height).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut tips = Vec::new();
    for (name, client) in &everyone {
        let block = client.block(height - 1).await?;
        let status = client.node_status().await?;
        let hash = hex::encode(&block.hash);
        println!(
            "    {name:<11} {:<9} height {height}  block {} hash {hash}  view {} primary {}",
            status.role,
            height - 1,
            status.view,
            if status.primary.is_empty() {
                "-"
            } else {
                &status.primary
            },
        );
        tips.push(hash);
    }
    ensure!(
        tips.iter().all(|hash| *hash == tips[0]),
        "the peers disagree on block {}: {tips:?}",
        height - 1
    );
    println!("    every peer holds the same block {}", height - 1);
    let info = peer.chain_info().await?;
    let certified = peer
        .certified_block(info.certified_height, &committee)
        .await?;
    let signatures = certified
        .certificate
        .as_ref()
        .map_or(0, |certificate| certificate.signatures.len());
    println!(
        "    block {} on {} carries a commit certificate signed by {signatures} of {} validators (checked here, with the block's contents and hash)",
        info.certified_height,
        peer_name(0),
        committee.len()
    );
    Ok(())
}
