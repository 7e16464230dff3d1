//! `weft crypto generate`: an organisation CA, identities for validators, non-validating peers,
//! an admin and named clients, the genesis file, and a node configuration per validator and
//! per peer.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use weft_proto::genesis::{
    ConsensusKind, ConsensusParams, Genesis, OrganizationInfo, ValidatorInfo,
};
use weft_proto::identity::write_private;
use weft_proto::{CertificateAuthority, Role};

#[derive(Subcommand)]
pub enum CryptoCommand {
    /// Create a CA, identities, genesis.json and node configurations in a directory.
    Generate(GenerateArgs),
}

#[derive(clap::Args, Clone)]
pub struct GenerateArgs {
    /// Where to write (created; must not already hold a genesis.json).
    #[arg(long, default_value = "network")]
    pub out: PathBuf,
    #[arg(long, default_value = "weft-dev")]
    pub chain_id: String,
    #[arg(long, default_value = "Org1")]
    pub organization: String,
    /// Number of validators: one orders alone (solo); more run PBFT (4 tolerate one faulty).
    #[arg(long, default_value_t = 1)]
    pub validators: usize,
    /// Non-validating peers: they forward transactions to the validators and follow the
    /// certified chain. They are not in genesis; peer i listens on base + validators + i.
    #[arg(long, default_value_t = 0)]
    pub peers: usize,
    /// Client identities to create, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "alice,bob,charlie,dave")]
    pub clients: Vec<String>,
    /// First gRPC port; validator i listens on base + i.
    #[arg(long, default_value_t = 7051)]
    pub base_port: u16,
    /// First operations (HTTP) port; validator i serves on base + i.
    #[arg(long, default_value_t = 9443)]
    pub operations_port: u16,
    /// First validator-to-validator (mutual TLS) port of a PBFT network; validator i listens
    /// on base + i.
    #[arg(long, default_value_t = 7151)]
    pub consensus_port: u16,
}

pub fn run(command: CryptoCommand) -> Result<()> {
    match command {
        CryptoCommand::Generate(args) => {
            let genesis = generate(&args)?;
            println!(
                "network {} written to {}",
                genesis.chain_id,
                args.out.display()
            );
            for v in &genesis.validators {
                println!(
                    "  {} at {}  config: {}",
                    v.id,
                    v.address,
                    args.out
                        .join("nodes")
                        .join(format!("{}.toml", v.id))
                        .display()
                );
            }
            for i in 0..args.peers {
                let id = format!("peer{i}");
                println!(
                    "  {id} (non-validating)  config: {}",
                    args.out.join("nodes").join(format!("{id}.toml")).display()
                );
            }
            println!("  admin: {}", args.out.join("admin").display());
            for c in &args.clients {
                println!(
                    "  client {c}: {}",
                    args.out.join("clients").join(c).display()
                );
            }
            Ok(())
        }
    }
}

/// Writes the network directory and returns its genesis.
pub fn generate(args: &GenerateArgs) -> Result<Genesis> {
    if !(args.validators == 1 || args.validators >= 4) {
        bail!(
            "--validators {}: use 1 (solo ordering) or at least 4 (PBFT: n = 3f+1 validators tolerate f faulty ones)",
            args.validators
        );
    }
    if args.out.join("genesis.json").exists() {
        bail!(
            "{} already holds a network (genesis.json): choose another --out or remove it",
            args.out.display()
        );
    }
    for name in &args.clients {
        weft_proto::package::validate_name(name)
            .map_err(|e| anyhow::anyhow!("client name: {e}"))?;
        if name == "admin" {
            bail!("client name \"admin\" is reserved for the admin identity");
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let ca = CertificateAuthority::generate(&args.organization)?;
    let ca_dir = args.out.join("ca");
    std::fs::create_dir_all(&ca_dir)?;
    std::fs::write(ca_dir.join("cert.pem"), ca.certificate_pem())?;
    write_private(&ca_dir.join("key.pem"), &ca.key_pem())?;

    let mut validators = Vec::new();
    for i in 0..args.validators {
        let id = format!("validator{i}");
        let issued = ca.issue(&id, Role::Validator)?;
        issued.write_to(&args.out.join("validators").join(&id))?;
        let port = args
            .base_port
            .checked_add(i as u16)
            .context("port out of range")?;
        let ops = args
            .operations_port
            .checked_add(i as u16)
            .context("port out of range")?;
        write_node_config(&args.out, &id, "validators", port, ops)?;
        let consensus_address = if args.validators > 1 {
            let consensus = args
                .consensus_port
                .checked_add(i as u16)
                .context("port out of range")?;
            format!("127.0.0.1:{consensus}")
        } else {
            String::new()
        };
        validators.push(ValidatorInfo {
            id,
            certificate: issued.certificate_pem.clone(),
            address: format!("127.0.0.1:{port}"),
            consensus_address,
        });
    }
    for i in 0..args.peers {
        let id = format!("peer{i}");
        ca.issue(&id, Role::Peer)?
            .write_to(&args.out.join("peers").join(&id))?;
        let offset = u16::try_from(args.validators + i).context("port out of range")?;
        let port = args
            .base_port
            .checked_add(offset)
            .context("port out of range")?;
        let ops = args
            .operations_port
            .checked_add(offset)
            .context("port out of range")?;
        write_node_config(&args.out, &id, "peers", port, ops)?;
    }
    ca.issue("admin", Role::Admin)?
        .write_to(&args.out.join("admin"))?;
    for name in &args.clients {
        ca.issue(name, Role::Client)?
            .write_to(&args.out.join("clients").join(name))?;
    }
    let genesis = Genesis {
        chain_id: args.chain_id.clone(),
        organizations: vec![OrganizationInfo {
            name: args.organization.clone(),
            ca_certificate: ca.certificate_pem().to_string(),
        }],
        validators,
        consensus: ConsensusParams {
            // One validator orders alone; several agree with PBFT (n = 3f+1 tolerates f).
            kind: if args.validators > 1 {
                ConsensusKind::Pbft
            } else {
                ConsensusKind::Solo
            },
            ..ConsensusParams::default()
        },
    };
    genesis.validate()?;
    genesis.save(&args.out.join("genesis.json"))?;
    Ok(genesis)
}

fn write_node_config(out: &Path, id: &str, kind: &str, port: u16, ops: u16) -> Result<()> {
    let dir = out.join("nodes");
    std::fs::create_dir_all(&dir)?;
    let text = format!(
        r#"# Node configuration for {id}. Every key can be overridden by WEFT_<SECTION>_<KEY>.
[node]
id = "{id}"
data_dir = "../data/{id}"
genesis = "../genesis.json"
identity = "../{kind}/{id}"
listen = "127.0.0.1:{port}"
operations_listen = "127.0.0.1:{ops}"

[chaincode]
runtime = "auto"
launch_timeout = "30s"
execute_timeout = "30s"

[api]
commit_wait_timeout = "30s"
max_pending = 1000
# Submissions arriving close together have their signatures checked in one batch: under
# load one waits at most admission_window for others (never at low rates).
admission_window = "4ms"
admission_batch = 32
"#
    );
    std::fs::write(dir.join(format!("{id}.toml")), text)?;
    Ok(())
}
