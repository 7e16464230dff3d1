//! Options shared by commands that talk to a running peer: where it is, who we are, and the
//! network directory `weft crypto generate` wrote.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use weft_proto::{Genesis, Signer, WeftClient};

#[derive(Args, Clone)]
pub struct PeerArgs {
    /// The peer's gRPC address.
    #[arg(long, env = "WEFT_PEER", default_value = "127.0.0.1:7051")]
    pub peer: String,
    /// The network directory written by `weft crypto generate`.
    #[arg(long, env = "WEFT_NETWORK", default_value = ".")]
    pub network: PathBuf,
    /// Act as this identity: "admin", a client name from the network directory, or a
    /// directory holding cert.pem and key.pem.
    #[arg(long = "as", default_value = "admin")]
    pub identity: String,
}

/// The identity directory for a name in a network directory.
pub fn identity_dir(network: &Path, name: &str) -> PathBuf {
    let as_path = PathBuf::from(name);
    if as_path.join("cert.pem").exists() {
        return as_path;
    }
    if name == "admin" {
        return network.join("admin");
    }
    network.join("clients").join(name)
}

impl PeerArgs {
    pub fn genesis(&self) -> Result<Genesis> {
        let path = self.network.join("genesis.json");
        Genesis::load(&path).with_context(|| {
            format!("cannot read the network's genesis.json in {}: pass --network DIR (the directory `weft crypto generate` wrote)", self.network.display())
        })
    }

    pub fn signer(&self) -> Result<Signer> {
        let dir = identity_dir(&self.network, &self.identity);
        if !dir.exists() {
            bail!(
                "no identity {:?} in {}: use --as admin, a client name from {}/clients, or a directory with cert.pem and key.pem",
                self.identity,
                self.network.display(),
                self.network.display()
            );
        }
        Ok(Signer::load(&dir)?)
    }

    pub async fn client(&self) -> Result<WeftClient> {
        let genesis = self.genesis()?;
        Ok(WeftClient::connect(&self.peer, self.signer()?, &genesis.chain_id).await?)
    }
}

pub async fn status(peer: PeerArgs) -> Result<()> {
    let client = peer.client().await?;
    let status = client.node_status().await?;
    println!("node      {}", status.node_id);
    println!("role      {}", status.role);
    println!("chain     {}", status.chain_id);
    println!("height    {}", status.height);
    println!("hash      {}", hex::encode(&status.current_hash));
    println!("view      {}", status.view);
    println!("primary   {}", status.primary);
    println!("sequence  {}", status.sequence);
    println!("stable    {}", status.last_stable_checkpoint);
    println!("pending   {}", status.pending);
    Ok(())
}
