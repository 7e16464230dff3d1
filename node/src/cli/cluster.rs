//! `weft cluster`: peer clusters deployed from a blueprint (orchestration): `plan`, `up`,
//! `status`, `scale`, `down`, `manage` and `demo`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use weft_orchestration::cluster::{Cluster, UpReport};
use weft_orchestration::manage::Manager;
use weft_orchestration::{Blueprint, LocationKind, plan};
use weft_proto::Role;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Check a blueprint and print what `up` would create: identities, genesis, and per
    /// location its network and every node's container or process, ports, volumes and
    /// environment. Pure: the same blueprint and seed print the same plan.
    Plan {
        /// The blueprint (YAML).
        file: PathBuf,
        /// Places the host ports of locations whose base_port the blueprint leaves open.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Bring the blueprint's network up (or in line with the blueprint): identities, per
    /// location its networks, volumes and peer containers; wait until every node is ready;
    /// deploy the chaincode; print the endpoints. A second run changes nothing.
    Up {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The seed of the plan (host ports); remembered for later commands.
        #[arg(long)]
        seed: Option<u64>,
        /// Then keep managing it (as `weft cluster manage`) until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
    /// Every node per location: role, container, health, height, view, last block hash; and
    /// what the management loop did lately.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Set the number of non-validating peers in a location and apply it.
    Scale {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The location.
        #[arg(long)]
        location: String,
        /// Non-validating peers it should run.
        #[arg(long)]
        peers: usize,
    },
    /// Remove everything the blueprint's network made (by label) and its state on this
    /// machine (keys included).
    Down {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Keep the network healthy within the blueprint's policies (restarter, replacer,
    /// autoscaler) until Ctrl-C; every action is logged and shown by `status`.
    Manage {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// How often to look.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
    /// Write the Kubernetes manifests (Namespace, Service, ConfigMap, Secret, StatefulSet) of
    /// the blueprint's kubernetes locations, one YAML file per location, for `kubectl apply
    /// -f` (or let `up` apply them where a cluster answers). Issues the identities they carry.
    Manifests {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Where to write (default: the state directory's kubernetes/).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The asset-transfer demo against the deployed network: an asset passed from Alice to
    /// Bob, Charlie and Dave, each step submitted through a peer of another location.
    Demo {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Args, Clone)]
pub struct ClusterArgs {
    /// The blueprint (YAML).
    file: PathBuf,
    /// Where this machine keeps the network's keys, genesis and management log (default:
    /// $WEFT_CLUSTER_STATE/NAME, else ~/.local/share/weft/clusters/NAME).
    #[arg(long)]
    state: Option<PathBuf>,
    /// The peer image to run (for example weft-peer:0.1.0 from docker/build-images.sh);
    /// default: an image built on each engine from this weft binary.
    #[arg(long, env = "WEFT_CLUSTER_IMAGE")]
    image: Option<String>,
}

impl ClusterArgs {
    fn blueprint(&self) -> Result<Blueprint> {
        Blueprint::load(&self.file).map_err(|e| anyhow::anyhow!("{}: {e}", self.file.display()))
    }

    fn state_dir(&self, blueprint: &Blueprint) -> Result<PathBuf> {
        if let Some(dir) = &self.state {
            return Ok(dir.clone());
        }
        let root = match std::env::var_os("WEFT_CLUSTER_STATE") {
            Some(root) => PathBuf::from(root),
            None => {
                let home = std::env::var_os("HOME")
                    .context("HOME is not set: pass --state DIR for the cluster's state")?;
                Path::new(&home).join(".local/share/weft/clusters")
            }
        };
        Ok(root.join(&blueprint.name))
    }

    fn open(&self, seed: Option<u64>) -> Result<Cluster> {
        let blueprint = self.blueprint()?;
        let state = self.state_dir(&blueprint)?;
        Ok(Cluster::open(blueprint, &state, seed)?)
    }
}

fn say(line: &str) {
    println!("==> {line}");
}

pub async fn run(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Plan { file, seed } => {
            let blueprint =
                Blueprint::load(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let text = plan(&blueprint, seed).to_string();
            // A reader that stops early (`| head`) is not an error.
            match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        ClusterCommand::Up {
            cluster: args,
            seed,
            watch,
        } => {
            let mut cluster = args.open(seed)?;
            let report = cluster.up(args.image.as_deref(), &mut say).await?;
            print_report(&cluster, &report);
            if watch {
                manage(&mut cluster, &args, Duration::from_secs(2)).await?;
            }
            Ok(())
        }
        ClusterCommand::Status { cluster: args } => {
            let cluster = args.open(None)?;
            if !cluster.network.exists() {
                bail!(
                    "{} is not up (no state in {}): run `weft cluster up {}`",
                    cluster.plan.blueprint,
                    cluster.state_dir.display(),
                    args.file.display()
                );
            }
            print_status(&cluster).await
        }
        ClusterCommand::Scale {
            cluster: args,
            location,
            peers,
        } => {
            let mut cluster = args.open(None)?;
            let report = cluster
                .scale(&location, peers, args.image.as_deref(), &mut say)
                .await?;
            print_report(&cluster, &report);
            Ok(())
        }
        ClusterCommand::Down { cluster: args } => {
            let cluster = args.open(None)?;
            cluster.down(&mut say).await?;
            remove_chaincode_containers(&cluster).await?;
            println!(
                "{} is down: none of its containers, networks, volumes, processes or state is left",
                cluster.plan.blueprint
            );
            Ok(())
        }
        ClusterCommand::Manage {
            cluster: args,
            interval,
        } => {
            let mut cluster = args.open(None)?;
            if !cluster.network.exists() {
                bail!(
                    "{} is not up: run `weft cluster up {}` first",
                    cluster.plan.blueprint,
                    args.file.display()
                );
            }
            manage(&mut cluster, &args, interval).await
        }
        ClusterCommand::Demo { cluster: args } => demo(&args.open(None)?).await,
        ClusterCommand::Manifests { cluster: args, out } => {
            let cluster = args.open(None)?;
            let mut written = 0;
            for location in &cluster.plan.locations {
                if location.kind != LocationKind::Kubernetes {
                    continue;
                }
                let path = cluster.write_manifests(location, args.image.as_deref())?;
                let path = match &out {
                    Some(dir) => {
                        std::fs::create_dir_all(dir)?;
                        let target = dir.join(format!("{}.yaml", location.name));
                        // They carry private keys: readable by this user only.
                        weft_proto::identity::write_private(
                            &target,
                            &std::fs::read_to_string(&path)?,
                        )?;
                        target
                    }
                    None => path,
                };
                println!("{}: {}", location.name, path.display());
                written += 1;
            }
            if written == 0 {
                bail!(
                    "{} has no kubernetes location: docker and local locations run with `weft cluster up`",
                    args.file.display()
                );
            }
            Ok(())
        }
    }
}

async fn manage(cluster: &mut Cluster, args: &ClusterArgs, interval: Duration) -> Result<()> {
    let image = match &args.image {
        Some(image) => image.clone(),
        None => {
            // What the manager makes anew runs this weft: have its image on every engine.
            let built = weft_orchestration::image::PeerImage::of_this_binary()?;
            for location in cluster.run_here() {
                if location.kind == LocationKind::Docker {
                    built
                        .ensure(&cluster.engine(location).await?.docker)
                        .await?;
                }
            }
            built.tag
        }
    };
    let mut manager = Manager::new(cluster);
    say(&format!(
        "managing {} every {interval:?} (Ctrl-C stops): {}",
        cluster.plan.blueprint, manager.policies
    ));
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    manager
        .run(cluster, &image, interval, stop, &mut |line| say(line))
        .await;
    Ok(())
}

/// The chaincode containers the peers started (labelled with the network, not the
/// blueprint), and the chaincode and peer images no container uses any more.
async fn remove_chaincode_containers(cluster: &Cluster) -> Result<()> {
    let mut engines = Vec::new();
    for location in &cluster.plan.locations {
        if location.kind != LocationKind::Docker || engines.contains(&location.endpoint) {
            continue;
        }
        engines.push(location.endpoint.clone());
        let engine = cluster.engine(location).await?;
        let scope = weft_node::chaincode::docker::GcScope {
            network: Some(cluster.plan.genesis.chain_id.clone()),
            peer: None,
        };
        let collected =
            weft_node::chaincode::docker::collect_garbage(&engine.docker, &scope).await?;
        let peer_images = weft_orchestration::docker::remove_unused_images(
            &engine.docker,
            weft_orchestration::image::LABEL_PEER_IMAGE,
        )
        .await?;
        say(&format!(
            "removed {} chaincode containers, {} unused chaincode images and {} unused peer images",
            collected.containers, collected.images, peer_images.removed
        ));
        let kept = collected.images_in_use + peer_images.in_use;
        if kept > 0 {
            say(&format!(
                "kept {kept} image(s) that another image or a running container depends on: `weft chaincode gc` removes the chaincode ones once nothing does"
            ));
        }
    }
    Ok(())
}

fn print_report(cluster: &Cluster, report: &UpReport) {
    if report.changed() {
        println!("{} is up", cluster.plan.blueprint);
    } else {
        println!("{} is up; nothing changed", cluster.plan.blueprint);
    }
    println!(
        "network directory (pass as --network): {}",
        cluster.network.dir.display()
    );
    println!(
        "{:<8} {:<18} {:<10} {:<22} operations",
        "location", "node", "role", "grpc"
    );
    for endpoint in &report.endpoints {
        println!(
            "{:<8} {:<18} {:<10} {:<22} http://{}",
            endpoint.location,
            endpoint.node,
            endpoint.role.as_str(),
            endpoint.grpc,
            endpoint.operations
        );
    }
}

async fn print_status(cluster: &Cluster) -> Result<()> {
    let rows = cluster.status().await?;
    let mut location = String::new();
    for row in rows {
        if row.location != location {
            location = row.location.clone();
            println!("location {location}");
            println!(
                "  {:<18} {:<10} {:<10} {:<9} {:>7} {:>5}  last block",
                "node", "role", "state", "health", "height", "view"
            );
        }
        let or_dash = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "  {:<18} {:<10} {:<10} {:<9} {:>7} {:>5}  {}",
            row.node,
            row.role.as_str(),
            row.container,
            row.health.as_str(),
            or_dash(row.height),
            or_dash(row.view),
            row.tip
                .as_deref()
                .map(|t| &t[..16.min(t.len())])
                .unwrap_or("-")
        );
    }
    let actions = cluster.recent_actions(10);
    if !actions.is_empty() {
        println!("recent management actions:");
        for action in actions {
            println!("  {action}");
        }
    }
    Ok(())
}

/// The demo against the deployed network, submitting through peers of each location in turn.
async fn demo(cluster: &Cluster) -> Result<()> {
    if !cluster.network.exists() {
        bail!(
            "{} is not up: run `weft cluster up` first",
            cluster.plan.blueprint
        );
    }
    let genesis = cluster.network.genesis()?;
    let endpoints = cluster.endpoints();
    let by_role = |role: Role| -> Vec<(String, String)> {
        endpoints
            .iter()
            .filter(|e| e.role == role)
            .map(|e| (e.node.clone(), e.grpc.clone()))
            .collect()
    };
    let validators = by_role(Role::Validator);
    // Peers of different locations take turns: sjc, lon, sng, sjc, ...
    let mut peers = by_role(Role::Peer);
    peers.sort_by_key(|(name, _)| {
        let location = endpoints
            .iter()
            .position(|e| e.node == *name)
            .unwrap_or_default();
        let index = name
            .rsplit("peer")
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_default();
        (index, location)
    });
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let asset = format!("asset-{stamp}");
    let target = super::demo::Target {
        network: &cluster.network.dir,
        validators: &validators,
        peers: &peers,
        genesis: &genesis,
    };
    super::demo::scenario(&target, None, &asset).await?;
    println!("\ncluster demo passed: every check held");
    Ok(())
}
