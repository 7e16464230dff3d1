//! Plans: a pure function from a checked blueprint and a seed to what `up` creates: the
//! identities and the genesis validators, and per location its network, and per node its
//! container or process, ports, volumes, environment and labels. The same blueprint and seed
//! always give the same plan (snapshot-tested); the seed places the host ports of locations
//! whose `base_port` the blueprint leaves open.
//!
//! Networking: each Docker location gets a network of its own for its peers, and every node
//! also joins one links network shared by all locations (`weft-BLUEPRINT-links`), on which the
//! validators reach each other by container name; cutting a location off is disconnecting its
//! containers from the links network. Local nodes listen on loopback; Kubernetes nodes are
//! pods of one StatefulSet per location behind a headless Service.

use std::collections::BTreeMap;
use std::fmt;

use weft_proto::Role;

use crate::blueprint::{Blueprint, ChaincodeToDeploy, LocationKind, PORTS_PER_NODE, PbftSettings};

/// Ports a node listens on inside its container or pod.
pub const CONTAINER_GRPC: u16 = 7051;
pub const CONTAINER_OPERATIONS: u16 = 9443;
pub const CONTAINER_CONSENSUS: u16 = 7151;
/// Inside a peer's container: its volume (configuration and ledger), its ledger, and where
/// the engine's socket is mounted.
pub const CONTAINER_VOLUME_DIR: &str = "/var/lib/weft";
pub const CONTAINER_DATA_DIR: &str = "/var/lib/weft/data";
pub const CONTAINER_ENGINE_SOCKET: &str = "/var/run/docker.sock";
/// Where seeded host ports start (below the kernel's ephemeral range).
const SEEDED_PORTS_FROM: u32 = 20_000;
const SEEDED_PORTS_TO: u32 = 32_000;

/// The label every resource of a blueprint carries, with the blueprint's name.
pub const LABEL_BLUEPRINT: &str = "weft.blueprint";
/// The label every resource of a location carries, with the location's name.
pub const LABEL_LOCATION: &str = "weft.location";

/// A node's configuration file as `weft cluster` writes it: the keys every node needs, and
/// its listen addresses when they are not given by the environment. Values are TOML strings
/// (quoted and escaped).
pub fn node_config(
    id: &str,
    data_dir: &str,
    genesis: &str,
    identity: &str,
    listen: Option<(&str, &str)>,
) -> String {
    let quoted = |value: &str| format!("{value:?}");
    let mut text = format!(
        "# Written by weft cluster. Every key can be overridden by WEFT_<SECTION>_<KEY>.\n[node]\nid = {}\ndata_dir = {}\ngenesis = {}\nidentity = {}\n",
        quoted(id),
        quoted(data_dir),
        quoted(genesis),
        quoted(identity)
    );
    if let Some((grpc, operations)) = listen {
        text.push_str(&format!(
            "listen = {}\noperations_listen = {}\n",
            quoted(grpc),
            quoted(operations)
        ));
    }
    text
}

/// An identity `up` issues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPlan {
    pub name: String,
    pub role: Role,
    /// Nodes: the location they run in.
    pub location: Option<String>,
}

/// A network address a node listens on or is reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where the node listens (inside its container or pod, or on loopback).
    pub listen: String,
    /// Where this machine reaches it (a published host port), if it does.
    pub host: Option<String>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.listen)?;
        match &self.host {
            Some(host) => write!(f, " (host {host})"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub name: String,
    /// Validator or Peer.
    pub role: Role,
    pub grpc: Endpoint,
    pub operations: Endpoint,
    /// Where the other nodes reach its gRPC API (a container name on the links network,
    /// loopback, or a pod's DNS name).
    pub address: String,
    /// Validators: the address the other validators dial (mutual TLS).
    pub consensus: Option<String>,
    /// Docker: the container's name.
    pub container: Option<String>,
    /// Docker: the ledger volume and the chaincode-socket volume.
    pub volumes: Vec<String>,
    /// Configuration overrides the node starts with.
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationPlan {
    pub name: String,
    pub kind: LocationKind,
    /// Docker: the engine.
    pub endpoint: Option<String>,
    /// Docker: the location's own network.
    pub network: Option<String>,
    /// Kubernetes: the namespace and the StatefulSet.
    pub namespace: Option<String>,
    pub stateful_set: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub nodes: Vec<NodePlan>,
}

/// A genesis validator: its name, where clients and peers reach its gRPC API, and where the
/// other validators dial it (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisValidator {
    pub name: String,
    pub address: String,
    pub consensus: String,
}

/// The genesis the network starts from: the validators in order, with where they are dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisPlan {
    pub chain_id: String,
    pub validators: Vec<GenesisValidator>,
    pub pbft: PbftSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub blueprint: String,
    pub seed: u64,
    /// Identities to issue: one per node, the admin, and clients.
    pub identities: Vec<IdentityPlan>,
    pub genesis: GenesisPlan,
    /// Docker: the network every node joins to reach the others.
    pub links_network: String,
    pub locations: Vec<LocationPlan>,
    pub chaincode: Vec<ChaincodeToDeploy>,
}

/// Host ports of the locations on one host, in blueprint order: fixed ones as written, the
/// others from a seeded start, each after the previous and clear of every fixed range.
fn host_ports(blueprint: &Blueprint, seed: u64) -> Vec<Option<u16>> {
    let span = SEEDED_PORTS_TO - SEEDED_PORTS_FROM;
    let mut next_by_host: BTreeMap<String, u32> = BTreeMap::new();
    let range = |base: u32, nodes: usize| (base, base + nodes as u32 * u32::from(PORTS_PER_NODE));
    let fixed: Vec<(String, u32, u32)> = blueprint
        .locations
        .iter()
        .filter_map(|l| {
            let base = u32::from(l.base_port?);
            let (start, end) = range(base, l.validators + blueprint.peer_capacity(l));
            Some((host_of(l.kind, l.endpoint.as_deref())?, start, end))
        })
        .collect();
    blueprint
        .locations
        .iter()
        .map(|location| {
            if let Some(base) = location.base_port {
                return Some(base);
            }
            let host = host_of(location.kind, location.endpoint.as_deref())?;
            let nodes = location.validators + blueprint.peer_capacity(location);
            let start = next_by_host
                .entry(host.clone())
                .or_insert(SEEDED_PORTS_FROM + (seed % u64::from(span / 2)) as u32 / 10 * 10);
            let mut base = *start;
            // Step past any fixed range on the same host this block would touch.
            while let Some((_, _, end)) = fixed.iter().find(|(h, s, e)| {
                let (b, t) = range(base, nodes);
                *h == host && b < *e && *s < t
            }) {
                base = *end;
            }
            *start = range(base, nodes).1;
            u16::try_from(base).ok()
        })
        .collect()
}

fn host_of(kind: LocationKind, endpoint: Option<&str>) -> Option<String> {
    match kind {
        LocationKind::Local => Some("local".into()),
        LocationKind::Docker => endpoint.map(str::to_string),
        LocationKind::Kubernetes => None,
    }
}

/// The plan of `blueprint` with `seed`. Pure: no I/O, no clock, no randomness but the seed.
pub fn plan(blueprint: &Blueprint, seed: u64) -> Plan {
    let bp = &blueprint.name;
    let links_network = format!("weft-{bp}-links");
    let ports = host_ports(blueprint, seed);
    let mut identities = Vec::new();
    let mut validators = Vec::new();
    let mut locations = Vec::new();
    for (location, base) in blueprint.locations.iter().zip(ports) {
        let loc = &location.name;
        let labels = BTreeMap::from([
            (LABEL_BLUEPRINT.to_string(), bp.clone()),
            (LABEL_LOCATION.to_string(), loc.clone()),
        ]);
        let roles = std::iter::repeat_n(Role::Validator, location.validators)
            .chain(std::iter::repeat_n(Role::Peer, location.peers));
        let mut counters = BTreeMap::new();
        let mut nodes = Vec::new();
        for (index, role) in roles.enumerate() {
            let number = counters.entry(role.as_str()).or_insert(0usize);
            let name = format!("{loc}-{}{number}", role.as_str());
            *number += 1;
            identities.push(IdentityPlan {
                name: name.clone(),
                role,
                location: Some(loc.clone()),
            });
            let host_port = |offset: u16| base.map(|b| b + index as u16 * PORTS_PER_NODE + offset);
            let node = match location.kind {
                LocationKind::Docker => {
                    let container = format!("weft-{bp}-{name}");
                    let run_volume = format!("{container}-run");
                    let environment = BTreeMap::from([
                        (
                            "WEFT_NODE_LISTEN".to_string(),
                            format!("0.0.0.0:{CONTAINER_GRPC}"),
                        ),
                        (
                            "WEFT_NODE_OPERATIONS_LISTEN".to_string(),
                            format!("0.0.0.0:{CONTAINER_OPERATIONS}"),
                        ),
                        (
                            "WEFT_NODE_DATA_DIR".to_string(),
                            CONTAINER_DATA_DIR.to_string(),
                        ),
                        ("WEFT_CHAINCODE_RUNTIME".to_string(), "docker".to_string()),
                        (
                            "WEFT_CHAINCODE_DOCKER_HOST".to_string(),
                            format!("unix://{CONTAINER_ENGINE_SOCKET}"),
                        ),
                        (
                            "WEFT_CHAINCODE_DOCKER_SOCKET_SOURCE".to_string(),
                            run_volume.clone(),
                        ),
                    ]);
                    NodePlan {
                        grpc: Endpoint {
                            listen: format!("0.0.0.0:{CONTAINER_GRPC}"),
                            host: host_port(0).map(|p| format!("127.0.0.1:{p}")),
                        },
                        operations: Endpoint {
                            listen: format!("0.0.0.0:{CONTAINER_OPERATIONS}"),
                            host: host_port(1).map(|p| format!("127.0.0.1:{p}")),
                        },
                        address: format!("{container}:{CONTAINER_GRPC}"),
                        consensus: (role == Role::Validator)
                            .then(|| format!("{container}:{CONTAINER_CONSENSUS}")),
                        volumes: vec![format!("{container}-data"), run_volume],
                        container: Some(container),
                        environment,
                        name,
                        role,
                    }
                }
                LocationKind::Local => {
                    let at = |offset: u16| {
                        format!("127.0.0.1:{}", host_port(offset).unwrap_or_default())
                    };
                    NodePlan {
                        grpc: Endpoint {
                            listen: at(0),
                            host: Some(at(0)),
                        },
                        operations: Endpoint {
                            listen: at(1),
                            host: Some(at(1)),
                        },
                        address: at(0),
                        consensus: (role == Role::Validator).then(|| at(2)),
                        container: None,
                        volumes: Vec::new(),
                        environment: BTreeMap::from([
                            ("WEFT_NODE_LISTEN".to_string(), at(0)),
                            ("WEFT_NODE_OPERATIONS_LISTEN".to_string(), at(1)),
                            ("WEFT_CHAINCODE_RUNTIME".to_string(), "process".to_string()),
                        ]),
                        name,
                        role,
                    }
                }
                LocationKind::Kubernetes => {
                    let namespace = location.namespace.clone().unwrap_or_default();
                    let pod = format!("{bp}-{loc}-{index}");
                    let dns = format!("{pod}.{bp}-{loc}.{namespace}.svc");
                    NodePlan {
                        grpc: Endpoint {
                            listen: format!("0.0.0.0:{CONTAINER_GRPC}"),
                            host: None,
                        },
                        operations: Endpoint {
                            listen: format!("0.0.0.0:{CONTAINER_OPERATIONS}"),
                            host: None,
                        },
                        address: format!("{dns}:{CONTAINER_GRPC}"),
                        consensus: (role == Role::Validator)
                            .then(|| format!("{dns}:{CONTAINER_CONSENSUS}")),
                        container: None,
                        volumes: vec![format!("data-{pod}")],
                        environment: BTreeMap::from([
                            (
                                "WEFT_NODE_LISTEN".to_string(),
                                format!("0.0.0.0:{CONTAINER_GRPC}"),
                            ),
                            (
                                "WEFT_NODE_OPERATIONS_LISTEN".to_string(),
                                format!("0.0.0.0:{CONTAINER_OPERATIONS}"),
                            ),
                            ("WEFT_CHAINCODE_RUNTIME".to_string(), "process".to_string()),
                        ]),
                        name,
                        role,
                    }
                }
            };
            if let Some(consensus) = &node.consensus {
                validators.push(GenesisValidator {
                    name: node.name.clone(),
                    address: node.address.clone(),
                    consensus: consensus.clone(),
                });
            }
            nodes.push(node);
        }
        locations.push(LocationPlan {
            name: loc.clone(),
            kind: location.kind,
            endpoint: location.endpoint.clone(),
            network: (location.kind == LocationKind::Docker).then(|| format!("weft-{bp}-{loc}")),
            namespace: location.namespace.clone(),
            stateful_set: (location.kind == LocationKind::Kubernetes)
                .then(|| format!("{bp}-{loc}")),
            labels,
            nodes,
        });
    }
    let others = std::iter::once(("admin", Role::Admin)).chain(
        ["alice", "bob", "charlie", "dave"]
            .into_iter()
            .map(|client| (client, Role::Client)),
    );
    identities.extend(others.map(|(name, role)| IdentityPlan {
        name: name.to_string(),
        role,
        location: None,
    }));
    Plan {
        blueprint: bp.clone(),
        seed,
        identities,
        genesis: GenesisPlan {
            chain_id: bp.clone(),
            validators,
            pbft: blueprint.pbft.clone(),
        },
        links_network,
        locations,
        chaincode: blueprint.chaincode.clone(),
    }
}

impl fmt::Display for Plan {
    /// The plan as `weft cluster plan` prints it (and the snapshot tests pin it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "blueprint {} (seed {})", self.blueprint, self.seed)?;
        let pbft = &self.genesis.pbft;
        writeln!(
            f,
            "genesis: chain {}, {} validators, pbft batch.size {} batch.timeout {:?} checkpoint.period {} request.timeout {:?}",
            self.genesis.chain_id,
            self.genesis.validators.len(),
            pbft.batch_size,
            pbft.batch_timeout,
            pbft.checkpoint_period,
            pbft.request_timeout
        )?;
        for validator in &self.genesis.validators {
            writeln!(
                f,
                "  validator {} at {} consensus {}",
                validator.name, validator.address, validator.consensus
            )?;
        }
        writeln!(f, "identities:")?;
        for identity in &self.identities {
            match &identity.location {
                Some(location) => {
                    writeln!(f, "  {} ({}@{location})", identity.name, identity.role)?
                }
                None => writeln!(f, "  {} ({})", identity.name, identity.role)?,
            }
        }
        if self
            .locations
            .iter()
            .any(|l| l.kind == LocationKind::Docker)
        {
            writeln!(f, "links network: {}", self.links_network)?;
        }
        for location in &self.locations {
            write!(f, "location {} ({})", location.name, location.kind.as_str())?;
            if let Some(endpoint) = &location.endpoint {
                write!(f, " engine {endpoint}")?;
            }
            if let Some(network) = &location.network {
                write!(f, " network {network}")?;
            }
            if let (Some(namespace), Some(set)) = (&location.namespace, &location.stateful_set) {
                write!(f, " namespace {namespace} statefulset {set}")?;
            }
            let labels: Vec<String> = location
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(f, " labels {}", labels.join(","))?;
            for node in &location.nodes {
                write!(f, "  {} {}", node.role.as_str(), node.name)?;
                if let Some(container) = &node.container {
                    write!(f, " container {container}")?;
                }
                write!(f, " grpc {} operations {}", node.grpc, node.operations)?;
                if let Some(consensus) = &node.consensus {
                    write!(f, " consensus {consensus}")?;
                }
                if !node.volumes.is_empty() {
                    write!(f, " volumes {}", node.volumes.join(","))?;
                }
                writeln!(f)?;
                let environment: Vec<String> = node
                    .environment
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                writeln!(f, "    env {}", environment.join(" "))?;
            }
        }
        for chaincode in &self.chaincode {
            writeln!(
                f,
                "chaincode {} from {}",
                chaincode.name,
                chaincode.package.display()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn blueprint(text: &str) -> Blueprint {
        Blueprint::parse(text, Path::new("/srv/blueprints")).expect("a valid blueprint")
    }

    /// Compares `actual` with the snapshot file; `WEFT_UPDATE_SNAPSHOTS=1` rewrites it.
    fn snapshot(name: &str, actual: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("snapshots")
            .join(name);
        if std::env::var("WEFT_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
            std::fs::write(&path, actual).expect("write the snapshot");
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "snapshot {}: {e} (WEFT_UPDATE_SNAPSHOTS=1 writes it)",
                path.display()
            )
        });
        assert_eq!(
            actual,
            expected,
            "the plan differs from {} (WEFT_UPDATE_SNAPSHOTS=1 rewrites it after review)",
            path.display()
        );
    }

    #[test]
    fn the_three_location_plan_is_pinned() {
        let three = blueprint(include_str!("../blueprints/three-locations.yaml"));
        snapshot("three-locations.plan", &plan(&three, 7).to_string());
    }

    #[test]
    fn the_local_plan_is_pinned() {
        let local = blueprint(include_str!("../blueprints/local.yaml"));
        snapshot("local.plan", &plan(&local, 7).to_string());
    }

    #[test]
    fn the_same_blueprint_and_seed_give_the_same_plan_and_the_seed_moves_open_ports() {
        let three = blueprint(include_str!("../blueprints/three-locations.yaml"));
        assert_eq!(plan(&three, 7), plan(&three, 7));
        let (a, b) = (plan(&three, 7), plan(&three, 8_001));
        assert_ne!(
            a.locations[0].nodes[0].grpc.host, b.locations[0].nodes[0].grpc.host,
            "open base ports follow the seed"
        );
        // A fixed base port does not move.
        let local = blueprint(include_str!("../blueprints/local.yaml"));
        assert_eq!(
            plan(&local, 1).locations[0].nodes[0].grpc.host,
            plan(&local, 99).locations[0].nodes[0].grpc.host
        );
    }

    #[test]
    fn seeded_ports_never_overlap_on_one_host_and_step_past_fixed_ranges() {
        let text = "name: net\nlocations:\n  - { name: a, type: local }\n  - { name: b, type: local, base_port: 20000 }\n  - { name: c, type: local }\ncluster:\n  validators.per.location: 2\n  peers.per.location: 1\n";
        let bp = blueprint(text);
        for seed in [0, 1, 7, 12_345, u64::MAX] {
            let plan = plan(&bp, seed);
            let mut used = std::collections::BTreeSet::new();
            for location in &plan.locations {
                for node in &location.nodes {
                    for address in [&node.grpc.listen, &node.operations.listen]
                        .into_iter()
                        .chain(node.consensus.as_ref())
                    {
                        assert!(used.insert(address.clone()), "seed {seed}: {address} twice");
                    }
                }
            }
        }
    }

    #[test]
    fn validators_are_the_genesis_in_location_order_and_every_resource_is_labelled() {
        let three = blueprint(include_str!("../blueprints/three-locations.yaml"));
        let plan = plan(&three, 7);
        let names: Vec<&str> = plan
            .genesis
            .validators
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "sjc-validator0",
                "sjc-validator1",
                "lon-validator0",
                "lon-validator1",
                "sng-validator0",
                "sng-validator1"
            ]
        );
        assert_eq!(
            plan.genesis.validators[0].consensus,
            "weft-asset-network-sjc-validator0:7151"
        );
        for location in &plan.locations {
            assert_eq!(location.labels[LABEL_BLUEPRINT], "asset-network");
            assert_eq!(location.labels[LABEL_LOCATION], location.name);
            assert_eq!(
                location.network.as_deref(),
                Some(format!("weft-asset-network-{}", location.name).as_str())
            );
        }
    }
}
