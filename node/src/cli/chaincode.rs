//! `weft chaincode package|deploy|invoke|query|list|gc`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use weft_proto::WeftClient;
use weft_proto::package;
use weft_proto::tx::string_args;

use weft_node::chaincode::docker::{self, DockerSettings};

use super::network::PeerArgs;

#[derive(Subcommand)]
pub enum ChaincodeCommand {
    /// Build a chaincode package (.tar.gz with the binary and a manifest).
    Package {
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// The chaincode binary.
        #[arg(long)]
        binary: PathBuf,
        /// The package file to write.
        #[arg(long)]
        out: PathBuf,
        /// Accept a dynamically linked binary. Such a package runs only on peers with the
        /// process runtime: a FROM scratch container cannot run it.
        #[arg(long)]
        allow_dynamic: bool,
    },
    /// Install a package on the peer and deploy (or upgrade to) it network-wide. Needs an admin.
    Deploy {
        #[command(flatten)]
        peer: PeerArgs,
        #[arg(long)]
        package: PathBuf,
        /// The chaincode's init function and its arguments (for example InitLedger).
        init_args: Vec<String>,
    },
    /// Submit a transaction and wait for its commit.
    Invoke {
        #[command(flatten)]
        peer: PeerArgs,
        chaincode: String,
        function: String,
        args: Vec<String>,
    },
    /// Run a read-only call.
    Query {
        #[command(flatten)]
        peer: PeerArgs,
        chaincode: String,
        function: String,
        args: Vec<String>,
    },
    /// List the chaincode deployed on the network and its state on this peer.
    List {
        #[command(flatten)]
        peer: PeerArgs,
    },
    /// Remove chaincode containers (labelled weft.chaincode) from a Docker engine, running or
    /// not, then the chaincode images no container uses. Peers remove their own containers
    /// when they stop and when they start again; this clears what a peer that never came back
    /// left behind.
    Gc {
        /// The engine: unix:///path or tcp://host:port (default: DOCKER_HOST, then the local
        /// socket).
        #[arg(long, env = "WEFT_CHAINCODE_DOCKER_HOST")]
        docker_host: Option<String>,
        /// For tcp with TLS: a directory holding ca.pem, cert.pem and key.pem.
        #[arg(long, env = "WEFT_CHAINCODE_DOCKER_TLS_DIR")]
        docker_tls_dir: Option<PathBuf>,
        /// Only containers of this network (its chain id).
        #[arg(long)]
        network: Option<String>,
        /// Only containers of this peer (node id).
        #[arg(long = "for-peer")]
        for_peer: Option<String>,
    },
}

pub async fn run(command: ChaincodeCommand) -> Result<()> {
    match command {
        ChaincodeCommand::Package {
            name,
            version,
            binary,
            out,
            allow_dynamic,
        } => {
            let bytes = std::fs::read(&binary).with_context(|| {
                format!("cannot read the chaincode binary {}", binary.display())
            })?;
            if !allow_dynamic && !package::is_static_elf(&bytes) {
                return Err(package::PackageError::NotStatic(binary.display().to_string()).into());
            }
            let packaged = package::build(&name, &version, &bytes)?;
            std::fs::write(&out, &packaged)
                .with_context(|| format!("cannot write {}", out.display()))?;
            let opened = package::open(&packaged)?;
            println!(
                "{} ({name}:{version}, {} bytes, package hash {})",
                out.display(),
                packaged.len(),
                opened.hash
            );
            Ok(())
        }
        ChaincodeCommand::Deploy {
            peer,
            package: path,
            init_args,
        } => {
            let bytes = std::fs::read(&path)
                .with_context(|| format!("cannot read the package {}", path.display()))?;
            let opened = package::open(&bytes)?;
            let client = peer.client().await?;
            // Every validator executes the deploy transaction, so each needs the package:
            // install it on all of them first, and refuse to deploy while one cannot take it
            // (its result would differ from the others').
            let genesis = peer.genesis()?;
            if genesis.validators.len() > 1 {
                for validator in &genesis.validators {
                    let other = WeftClient::connect(&validator.address, peer.signer()?, &genesis.chain_id)
                        .await
                        .with_context(|| format!("cannot reach validator {} at {} to install the package: start it, or deploy when every validator runs", validator.id, validator.address))?;
                    other.install(bytes.clone()).await.with_context(|| {
                        format!("validator {} refused the package", validator.id)
                    })?;
                    eprintln!("installed on {} ({})", validator.id, validator.address);
                }
            }
            let committed = client.deploy(bytes, &string_args(&init_args)).await?;
            println!(
                "deployed {}:{} (package {}) in block {}",
                opened.manifest.name, opened.manifest.version, opened.hash, committed.block_number
            );
            // A validator refuses transactions for chaincode it has not seen deployed yet, so
            // return once every validator holds the deploy block (or say which does not).
            if genesis.validators.len() > 1 {
                for validator in &genesis.validators {
                    if !reaches(validator, &peer, &genesis, committed.block_number + 1).await {
                        eprintln!(
                            "warning: validator {} has not reached block {} yet; it accepts calls to {} once it has",
                            validator.id, committed.block_number, opened.manifest.name
                        );
                    }
                }
            }
            Ok(())
        }
        ChaincodeCommand::Invoke {
            peer,
            chaincode,
            function,
            args,
        } => {
            let client = peer.client().await?;
            let committed = client
                .invoke(&chaincode, &function, &string_args(&args))
                .await?;
            eprintln!(
                "committed {} in block {}",
                committed.tx_id, committed.block_number
            );
            println!("{}", String::from_utf8_lossy(&committed.payload));
            Ok(())
        }
        ChaincodeCommand::Query {
            peer,
            chaincode,
            function,
            args,
        } => {
            let client = peer.client().await?;
            let payload = client
                .query(&chaincode, &function, &string_args(&args))
                .await?;
            println!("{}", String::from_utf8_lossy(&payload));
            Ok(())
        }
        ChaincodeCommand::Gc {
            docker_host,
            docker_tls_dir,
            network,
            for_peer,
        } => {
            let settings = DockerSettings {
                host: docker_host,
                tls_dir: docker_tls_dir,
                ..DockerSettings::default()
            };
            let engine = docker::connect(&settings).await.with_context(|| {
                "gc needs the Docker engine the peers used: start it, or name it with --docker-host"
            })?;
            let scope = docker::GcScope {
                network,
                peer: for_peer,
            };
            let collected = docker::collect_garbage(&engine, &scope).await?;
            println!(
                "removed {} chaincode container(s) and {} chaincode image(s) from {}",
                collected.containers,
                collected.images,
                settings.endpoint()
            );
            if collected.images_in_use > 0 {
                println!(
                    "kept {} chaincode image(s) that another image or a running container depends on: gc removes them once nothing does",
                    collected.images_in_use
                );
            }
            Ok(())
        }
        ChaincodeCommand::List { peer } => {
            let client = peer.client().await?;
            let list = client
                .raw_admin()
                .list_chaincodes(weft_proto::pb::ListChaincodesRequest {})
                .await?
                .into_inner();
            if list.chaincodes.is_empty() {
                bail!("no chaincode is deployed: deploy one with `weft chaincode deploy`");
            }
            for c in list.chaincodes {
                println!(
                    "{}:{}  {}  {}  {}",
                    c.name,
                    c.version,
                    &c.package_hash[..16.min(c.package_hash.len())],
                    c.runtime,
                    c.state
                );
            }
            Ok(())
        }
    }
}

/// Whether `validator` reaches `height` blocks within a few seconds.
async fn reaches(
    validator: &weft_proto::ValidatorInfo,
    peer: &PeerArgs,
    genesis: &weft_proto::Genesis,
    height: u64,
) -> bool {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(30);
    let Ok(signer) = peer.signer() else {
        return false;
    };
    let Ok(client) = WeftClient::connect(&validator.address, signer, &genesis.chain_id).await
    else {
        return false;
    };
    let start = std::time::Instant::now();
    while start.elapsed() < WAIT {
        if client
            .chain_info()
            .await
            .is_ok_and(|info| info.height >= height)
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}
