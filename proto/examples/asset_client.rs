//! A client application built the way an application developer would: it depends only on
//! `weft-proto`, connects to a peer with identities from a network directory, and runs the
//! asset-transfer flow (create for Alice, transfer to Bob, Charlie and Dave, checking the
//! owner after each step), following the block stream meanwhile.
//!
//! Run it against a network whose peer has asset-transfer deployed, for example the one
//! `weft demo --keep` leaves running:
//!
//! ```text
//! cargo run -p weft-proto --example asset_client -- 127.0.0.1:7051 /tmp/weft-demo-XXXX/network
//! ```

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use weft_proto::pb;
use weft_proto::tx::string_args;
use weft_proto::{Genesis, Signer, WeftClient};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(peer), Some(network)) = (args.next(), args.next().map(PathBuf::from)) else {
        eprintln!("usage: asset_client PEER_ADDRESS NETWORK_DIR");
        std::process::exit(2);
    };
    let genesis = Genesis::load(&network.join("genesis.json"))?;
    let identity = |name: &str| -> Result<Signer, Error> {
        let dir = if name == "admin" {
            network.join("admin")
        } else {
            network.join("clients").join(name)
        };
        Ok(Signer::load(&dir)?)
    };
    let admin = WeftClient::connect(&peer, identity("admin")?, &genesis.chain_id).await?;

    // Follow committed blocks while the flow runs.
    let start = admin.chain_info().await?.height;
    let mut blocks = admin
        .raw()
        .stream_blocks(pb::StreamBlocksRequest {
            from_height: start,
            certified_only: false,
        })
        .await?
        .into_inner();
    let follower = tokio::spawn(async move {
        let mut seen = 0;
        while let Ok(Some(block)) = blocks.message().await {
            let number = block.header.map(|h| h.number).unwrap_or_default();
            println!(
                "  [stream] block {number} with {} transaction(s)",
                block.transactions.len()
            );
            seen += 1;
            if seen == 4 {
                break;
            }
        }
    });

    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let asset = format!("client-asset-{stamp}");
    admin
        .invoke(
            "asset-transfer",
            "CreateAsset",
            &string_args(&[asset.as_str(), "yellow", "7", "alice", "500"]),
        )
        .await?;
    println!("created {asset} for alice");
    for (from, to) in [("alice", "bob"), ("bob", "charlie"), ("charlie", "dave")] {
        let client = admin.with_signer(identity(from)?);
        let committed = client
            .invoke(
                "asset-transfer",
                "TransferAsset",
                &string_args(&[asset.as_str(), to]),
            )
            .await?;
        let read = admin
            .query(
                "asset-transfer",
                "ReadAsset",
                &string_args(&[asset.as_str()]),
            )
            .await?;
        let owner = serde_json::from_slice::<serde_json::Value>(&read)?["Owner"].clone();
        println!(
            "{from} -> {to} committed in block {}; owner is now {owner}",
            committed.block_number
        );
        if owner != to {
            return Err(format!("expected {to} to own {asset}, found {owner}").into());
        }
    }
    follower.await?;
    Ok(())
}
