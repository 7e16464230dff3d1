//! Blueprints: YAML read into a raw form that refuses unknown keys by name, then checked
//! (names, counts, ports, chaincode, policies) into a [`Blueprint`]. Every error names the key
//! and, where the text shows it, the line.
//!
//! ```yaml
//! name: asset-network
//! locations:
//!   - { name: sjc, type: docker, endpoint: "unix:///var/run/docker.sock", base_port: 17051 }
//!   - { name: dev, type: local, validators: 2 }
//!   - { name: k8s, type: kubernetes, namespace: weft }
//! cluster:
//!   validators.per.location: 2
//!   peers.per.location: 1
//!   pbft: { batch.size: 500, batch.timeout: 200ms, checkpoint.period: 10, request.timeout: 2s }
//!   chaincode: [ { name: asset-transfer, package: ./asset-transfer.tar.gz } ]
//! policies:
//!   - { type: restarter }
//!   - { type: autoscaler, metric: tx_per_second, target: 2000, min: 1, max: 8 }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A blueprint that cannot be used, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct BlueprintError {
    /// The key at fault, as a path (`locations[1].endpoint`), or the file for a syntax error.
    pub key: String,
    /// The line (1-based) in the blueprint text, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for BlueprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Each node of a location takes this many consecutive ports from the location's base port:
/// gRPC, operations, validator-to-validator.
pub const PORTS_PER_NODE: u16 = 3;

/// Where peers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocationKind {
    /// Containers on a Docker engine.
    Docker,
    /// Processes on this machine.
    Local,
    /// A Kubernetes namespace (manifests rendered per location).
    Kubernetes,
}

impl LocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LocationKind::Docker => "docker",
            LocationKind::Local => "local",
            LocationKind::Kubernetes => "kubernetes",
        }
    }
}

/// TLS material for a Docker engine reached over tcp.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    name: String,
    #[serde(rename = "type")]
    kind: LocationKind,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    tls: Option<EngineTls>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    validators: Option<usize>,
    #[serde(default)]
    peers: Option<usize>,
    #[serde(default)]
    base_port: Option<u16>,
    /// Docker: the group owning the engine's socket on its host (peers start chaincode
    /// containers through it). Read from the socket itself for a unix endpoint.
    #[serde(default)]
    docker_group: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPbft {
    #[serde(rename = "batch.size", default)]
    batch_size: Option<usize>,
    #[serde(rename = "batch.timeout", default)]
    batch_timeout: Option<String>,
    #[serde(rename = "checkpoint.period", default)]
    checkpoint_period: Option<u64>,
    #[serde(rename = "request.timeout", default)]
    request_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChaincode {
    name: String,
    package: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(rename = "validators.per.location")]
    validators_per_location: usize,
    #[serde(rename = "peers.per.location", default)]
    peers_per_location: usize,
    #[serde(default)]
    pbft: RawPbft,
    #[serde(default)]
    chaincode: Vec<RawChaincode>,
}

/// What the autoscaler follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalingMetric {
    /// Committed transactions per second per non-validating peer.
    TxPerSecond,
    /// Submit-to-commit latency p99, in milliseconds.
    LatencyMs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(rename = "type")]
    kind: PolicyKind,
    #[serde(default)]
    metric: Option<ScalingMetric>,
    #[serde(default)]
    target: Option<f64>,
    #[serde(default)]
    min: Option<usize>,
    #[serde(default)]
    max: Option<usize>,
    /// Restarter: failures in a row before the replacer takes over.
    #[serde(default)]
    attempts: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PolicyKind {
    Restarter,
    Replacer,
    Autoscaler,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlueprint {
    name: String,
    locations: Vec<RawLocation>,
    cluster: RawCluster,
    #[serde(default)]
    policies: Vec<RawPolicy>,
}

/// One location of a checked blueprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub name: String,
    pub kind: LocationKind,
    /// Docker: the engine (`unix:///…` or `tcp://…`).
    pub endpoint: Option<String>,
    pub tls: Option<EngineTls>,
    /// Kubernetes: the namespace.
    pub namespace: Option<String>,
    pub validators: usize,
    pub peers: usize,
    /// The first host port of the location's nodes ([`PORTS_PER_NODE`] each), when fixed.
    pub base_port: Option<u16>,
    /// Docker: the gid owning the engine's socket, when the blueprint gives it.
    pub docker_group: Option<u32>,
}

impl Location {
    /// The machine (engine or this host) whose ports the location's nodes take, if any:
    /// locations on the same host must not share ports.
    fn host(&self) -> Option<String> {
        match self.kind {
            LocationKind::Local => Some("this machine".into()),
            LocationKind::Docker => Some(format!(
                "engine {}",
                self.endpoint.as_deref().unwrap_or(DEFAULT_ENGINE)
            )),
            LocationKind::Kubernetes => None,
        }
    }
}

/// The engine a docker location without an endpoint uses.
pub const DEFAULT_ENGINE: &str = "unix:///var/run/docker.sock";

/// PBFT settings for the network's genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbftSettings {
    pub batch_size: usize,
    pub batch_timeout: Duration,
    pub checkpoint_period: u64,
    pub request_timeout: Duration,
}

impl Default for PbftSettings {
    fn default() -> Self {
        PbftSettings {
            batch_size: 500,
            batch_timeout: Duration::from_millis(200),
            checkpoint_period: 10,
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// A chaincode to deploy once the network is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaincodeToDeploy {
    pub name: String,
    /// The package, resolved against the blueprint's directory.
    pub package: PathBuf,
}

/// What the management loop may do.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// Restart a failed peer; after `attempts` failures in a row, leave it to the replacer.
    Restarter { attempts: u32 },
    /// Replace a peer that keeps failing with a fresh one that catches up by state transfer.
    Replacer,
    /// Keep each location's non-validating peers between `min` and `max`, following `metric`.
    Autoscaler {
        metric: ScalingMetric,
        target: f64,
        min: usize,
        max: usize,
    },
}

/// A checked blueprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Blueprint {
    pub name: String,
    pub locations: Vec<Location>,
    pub pbft: PbftSettings,
    pub chaincode: Vec<ChaincodeToDeploy>,
    pub policies: Vec<Policy>,
}

impl Blueprint {
    /// The most non-validating peers `location` may run: its count, or the autoscaler's
    /// maximum when that is higher (host ports are reserved for all of them, so scaling
    /// never moves another node's ports).
    pub fn peer_capacity(&self, location: &Location) -> usize {
        peer_capacity(&self.policies)(location)
    }

    /// The location named `name`.
    pub fn location(&self, name: &str) -> Option<&Location> {
        self.locations.iter().find(|l| l.name == name)
    }
}

fn peer_capacity(policies: &[Policy]) -> impl Fn(&Location) -> usize + '_ {
    let autoscaled = policies.iter().find_map(|p| match p {
        Policy::Autoscaler { max, .. } => Some(*max),
        _ => None,
    });
    move |location| location.peers.max(autoscaled.unwrap_or(0))
}

/// The fewest validators PBFT runs with (n = 3f+1, f = 1).
pub const MIN_VALIDATORS: usize = 4;

impl Blueprint {
    /// Reads and checks the blueprint file at `path`.
    pub fn load(path: &Path) -> Result<Blueprint, BlueprintError> {
        let text = std::fs::read_to_string(path).map_err(|e| BlueprintError {
            key: path.display().to_string(),
            line: None,
            message: format!("cannot read the blueprint: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Blueprint::parse(&text, base)
    }

    /// Parses and checks blueprint `text`; relative package paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Blueprint, BlueprintError> {
        let raw: RawBlueprint = serde_norway::from_str(text).map_err(|e| {
            let message = e.to_string();
            BlueprintError {
                key: key_in_message(&message).unwrap_or_else(|| "blueprint".into()),
                line: e.location().map(|l| l.line()),
                message,
            }
        })?;
        Checker { text }.check(raw, base)
    }
}

/// The key serde names in "unknown field `x`" or "missing field `x`".
fn key_in_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_string())
}

struct Checker<'a> {
    text: &'a str,
}

impl Checker<'_> {
    /// The line of the `occurrence`-th (0-based) `key: value` in the text (any value when
    /// `value` is empty).
    fn line_of(&self, key: &str, value: &str, occurrence: usize) -> Option<usize> {
        self.text
            .lines()
            .enumerate()
            .filter(|(_, line)| {
                let mut rest = *line;
                while let Some(at) = rest.find(key) {
                    let after = rest[at + key.len()..].trim_start();
                    if let Some(after) = after.strip_prefix(':') {
                        let after = after.trim_start().trim_start_matches(['"', '\'']);
                        if let Some(tail) = after.strip_prefix(value)
                            && (value.is_empty()
                                || !tail
                                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-'))
                        {
                            return true;
                        }
                    }
                    rest = &rest[at + key.len()..];
                }
                false
            })
            .nth(occurrence)
            .map(|(index, _)| index + 1)
    }

    fn error(
        &self,
        key: String,
        line: Option<usize>,
        message: impl Into<String>,
    ) -> BlueprintError {
        BlueprintError {
            key,
            line,
            message: message.into(),
        }
    }

    fn check(&self, raw: RawBlueprint, base: &Path) -> Result<Blueprint, BlueprintError> {
        check_name(&raw.name)
            .map_err(|m| self.error("name".into(), self.line_of("name", &raw.name, 0), m))?;
        if raw.locations.is_empty() {
            return Err(self.error(
                "locations".into(),
                self.line_of("locations", "", 0),
                "name at least one location",
            ));
        }
        let mut seen = BTreeMap::new();
        let mut locations = Vec::new();
        for (index, raw_location) in raw.locations.into_iter().enumerate() {
            let occurrence = seen.entry(raw_location.name.clone()).or_insert(0usize);
            // `name:` of the blueprint itself comes first in the text.
            let line = self.line_of(
                "name",
                &raw_location.name,
                *occurrence + usize::from(raw_location.name == raw.name),
            );
            *occurrence += 1;
            let location = self.check_location(index, raw_location, &raw.cluster, line)?;
            if seen[&location.name] > 1 {
                return Err(self.error(
                    format!("locations[{index}].name"),
                    line,
                    format!(
                        "a second location named {:?}: location names must be unique",
                        location.name
                    ),
                ));
            }
            locations.push(location);
        }
        let validators: usize = locations.iter().map(|l| l.validators).sum();
        if validators < MIN_VALIDATORS {
            return Err(self.error(
                "cluster.validators.per.location".into(),
                self.line_of("validators.per.location", "", 0),
                format!(
                    "{validators} validator(s) in all: PBFT needs at least {MIN_VALIDATORS} (n = 3f+1 with f = 1); raise validators.per.location or a location's validators"
                ),
            ));
        }
        let pbft = self.check_pbft(&raw.cluster.pbft)?;
        let chaincode = self.check_chaincode(raw.cluster.chaincode, base)?;
        let policies = self.check_policies(raw.policies)?;
        self.check_ports(&locations, peer_capacity(&policies))?;
        Ok(Blueprint {
            name: raw.name,
            locations,
            pbft,
            chaincode,
            policies,
        })
    }

    fn check_location(
        &self,
        index: usize,
        raw: RawLocation,
        cluster: &RawCluster,
        line: Option<usize>,
    ) -> Result<Location, BlueprintError> {
        let key = |field: &str| format!("locations[{index}].{field}");
        check_name(&raw.name).map_err(|m| self.error(key("name"), line, m))?;
        let refuse = |field: &str, why: &str| {
            Err(self.error(
                key(field),
                line,
                format!("a {} location takes no {field}: {why}", raw.kind.as_str()),
            ))
        };
        match raw.kind {
            LocationKind::Docker => {
                if raw.namespace.is_some() {
                    return refuse("namespace", "namespaces are for kubernetes locations");
                }
                let endpoint = raw.endpoint.as_deref().unwrap_or(DEFAULT_ENGINE);
                let tcp = endpoint.starts_with("tcp://");
                if !tcp && !endpoint.starts_with("unix://") {
                    return Err(self.error(
                        key("endpoint"),
                        line,
                        format!("{endpoint:?} is not a Docker endpoint: write unix:///path/docker.sock or tcp://host:port"),
                    ));
                }
                if raw.tls.is_some() && !tcp {
                    return refuse("tls", "TLS is for an engine reached over tcp://");
                }
                if tcp && raw.docker_group.is_none() {
                    return Err(self.error(
                        key("docker_group"),
                        line,
                        "a tcp engine needs docker_group: the gid owning /var/run/docker.sock on that engine's host (each peer starts its chaincode containers through it)",
                    ));
                }
            }
            LocationKind::Local => {
                for (field, present) in [
                    ("endpoint", raw.endpoint.is_some()),
                    ("tls", raw.tls.is_some()),
                    ("namespace", raw.namespace.is_some()),
                    ("docker_group", raw.docker_group.is_some()),
                ] {
                    if present {
                        return refuse(field, "its peers are processes on this machine");
                    }
                }
            }
            LocationKind::Kubernetes => {
                for (field, present) in [
                    ("endpoint", raw.endpoint.is_some()),
                    ("tls", raw.tls.is_some()),
                    ("base_port", raw.base_port.is_some()),
                    ("docker_group", raw.docker_group.is_some()),
                ] {
                    if present {
                        return refuse(field, "the cluster's own configuration says where it is");
                    }
                }
                if let Some(namespace) = &raw.namespace {
                    check_name(namespace).map_err(|m| self.error(key("namespace"), line, m))?;
                }
            }
        }
        Ok(Location {
            namespace: match raw.kind {
                LocationKind::Kubernetes => Some(raw.namespace.unwrap_or_else(|| "weft".into())),
                _ => None,
            },
            endpoint: match raw.kind {
                LocationKind::Docker => Some(raw.endpoint.unwrap_or_else(|| DEFAULT_ENGINE.into())),
                _ => None,
            },
            name: raw.name,
            kind: raw.kind,
            tls: raw.tls,
            docker_group: raw.docker_group,
            validators: raw.validators.unwrap_or(cluster.validators_per_location),
            peers: raw.peers.unwrap_or(cluster.peers_per_location),
            base_port: raw.base_port,
        })
    }

    /// Locations on one host must not give two nodes the same port.
    fn check_ports(
        &self,
        locations: &[Location],
        capacity: impl Fn(&Location) -> usize,
    ) -> Result<(), BlueprintError> {
        let mut taken: Vec<(String, usize, u32, u32)> = Vec::new();
        for (index, location) in locations.iter().enumerate() {
            let (Some(host), Some(base)) = (location.host(), location.base_port) else {
                continue;
            };
            let nodes = (location.validators + capacity(location)) as u32;
            let (first, end) = (
                u32::from(base),
                u32::from(base) + nodes * u32::from(PORTS_PER_NODE),
            );
            let line = self.line_of("base_port", &base.to_string(), 0);
            if end > 65_536 {
                return Err(self.error(
                    format!("locations[{index}].base_port"),
                    line,
                    format!("{nodes} nodes from port {base} run past 65535"),
                ));
            }
            for (other_host, other_index, other_first, other_end) in &taken {
                if *other_host == host && first < *other_end && *other_first < end {
                    return Err(self.error(
                        format!("locations[{index}].base_port"),
                        line,
                        format!(
                            "ports {first}..{end} of {:?} overlap ports {other_first}..{other_end} of {:?} on {host}",
                            location.name, locations[*other_index].name
                        ),
                    ));
                }
            }
            taken.push((host, index, first, end));
        }
        Ok(())
    }

    fn check_pbft(&self, raw: &RawPbft) -> Result<PbftSettings, BlueprintError> {
        let defaults = PbftSettings::default();
        let duration = |field: &str, text: &Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(text) => humantime::parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    self.error(
                        format!("cluster.pbft.{field}"),
                        self.line_of(field, text, 0),
                        format!(
                            "{text:?} is not a duration above zero: write for example 200ms or 2s"
                        ),
                    )
                }),
        };
        let positive = |field: &str, value: Option<u64>, default: u64| match value {
            Some(0) => Err(self.error(
                format!("cluster.pbft.{field}"),
                self.line_of(field, "0", 0),
                "must be at least 1",
            )),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(PbftSettings {
            batch_size: positive(
                "batch.size",
                raw.batch_size.map(|n| n as u64),
                defaults.batch_size as u64,
            )? as usize,
            batch_timeout: duration("batch.timeout", &raw.batch_timeout, defaults.batch_timeout)?,
            checkpoint_period: positive(
                "checkpoint.period",
                raw.checkpoint_period,
                defaults.checkpoint_period,
            )?,
            request_timeout: duration(
                "request.timeout",
                &raw.request_timeout,
                defaults.request_timeout,
            )?,
        })
    }

    fn check_chaincode(
        &self,
        raw: Vec<RawChaincode>,
        base: &Path,
    ) -> Result<Vec<ChaincodeToDeploy>, BlueprintError> {
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for (index, chaincode) in raw.into_iter().enumerate() {
            let line = self.line_of("name", &chaincode.name, 0);
            check_name(&chaincode.name)
                .map_err(|m| self.error(format!("cluster.chaincode[{index}].name"), line, m))?;
            if !names.insert(chaincode.name.clone()) {
                return Err(self.error(
                    format!("cluster.chaincode[{index}].name"),
                    line,
                    format!("chaincode {:?} is listed twice", chaincode.name),
                ));
            }
            if chaincode.package.as_os_str().is_empty() {
                return Err(self.error(
                    format!("cluster.chaincode[{index}].package"),
                    line,
                    "name the package file (.tar.gz from weft chaincode package)",
                ));
            }
            // `./x.tar.gz` is `x.tar.gz` in the blueprint's directory.
            let relative: PathBuf = chaincode
                .package
                .components()
                .filter(|c| *c != std::path::Component::CurDir)
                .collect();
            let package = if relative.is_absolute() {
                relative
            } else {
                base.join(relative)
            };
            out.push(ChaincodeToDeploy {
                name: chaincode.name,
                package,
            });
        }
        Ok(out)
    }

    fn check_policies(&self, raw: Vec<RawPolicy>) -> Result<Vec<Policy>, BlueprintError> {
        let mut kinds = BTreeSet::new();
        let mut out = Vec::new();
        for (index, policy) in raw.into_iter().enumerate() {
            let key = |field: &str| format!("policies[{index}].{field}");
            let name = match policy.kind {
                PolicyKind::Restarter => "restarter",
                PolicyKind::Replacer => "replacer",
                PolicyKind::Autoscaler => "autoscaler",
            };
            let line = self.line_of("type", name, 0);
            if !kinds.insert(policy.kind) {
                return Err(self.error(key("type"), line, format!("a second {name} policy")));
            }
            let autoscaler_only = [
                ("metric", policy.metric.is_some()),
                ("target", policy.target.is_some()),
                ("min", policy.min.is_some()),
                ("max", policy.max.is_some()),
            ];
            if policy.kind != PolicyKind::Autoscaler
                && let Some((field, _)) = autoscaler_only.iter().find(|(_, present)| *present)
            {
                return Err(self.error(
                    key(field),
                    line,
                    format!("{field} is an autoscaler setting, not a {name} one"),
                ));
            }
            out.push(match policy.kind {
                PolicyKind::Restarter => Policy::Restarter {
                    attempts: policy.attempts.unwrap_or(3),
                },
                PolicyKind::Replacer => {
                    if policy.attempts.is_some() {
                        return Err(self.error(
                            key("attempts"),
                            line,
                            "attempts is a restarter setting",
                        ));
                    }
                    Policy::Replacer
                }
                PolicyKind::Autoscaler => {
                    let missing = |field: &str| {
                        self.error(key(field), line, format!("an autoscaler needs {field}"))
                    };
                    let metric = policy.metric.ok_or_else(|| missing("metric"))?;
                    let target = policy.target.ok_or_else(|| missing("target"))?;
                    let min = policy.min.ok_or_else(|| missing("min"))?;
                    let max = policy.max.ok_or_else(|| missing("max"))?;
                    if !(target.is_finite() && target > 0.0) {
                        return Err(self.error(key("target"), line, "target must be above zero"));
                    }
                    if min > max {
                        return Err(self.error(
                            key("min"),
                            line,
                            format!("min {min} is above max {max}"),
                        ));
                    }
                    if policy.attempts.is_some() {
                        return Err(self.error(
                            key("attempts"),
                            line,
                            "attempts is a restarter setting",
                        ));
                    }
                    Policy::Autoscaler {
                        metric,
                        target,
                        min,
                        max,
                    }
                }
            });
        }
        Ok(out)
    }
}

/// Names become container, network, label and namespace names: lower-case letters, digits
/// and inner dashes, at most 40 characters.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a usable name: use lower-case letters, digits and inner dashes (at most 40)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = include_str!("../blueprints/three-locations.yaml");
    const LOCAL: &str = include_str!("../blueprints/local.yaml");

    fn parse(text: &str) -> Result<Blueprint, BlueprintError> {
        Blueprint::parse(text, Path::new("/srv/blueprints"))
    }

    fn error(text: &str) -> BlueprintError {
        parse(text).expect_err("the blueprint must be refused")
    }

    #[test]
    fn the_example_blueprints_are_valid() {
        let three = parse(THREE).expect("three locations");
        assert_eq!(three.name, "asset-network");
        let names: Vec<&str> = three.locations.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["sjc", "lon", "sng"]);
        assert!(
            three
                .locations
                .iter()
                .all(|l| l.kind == LocationKind::Docker)
        );
        assert_eq!(
            three.locations.iter().map(|l| l.validators).sum::<usize>(),
            6
        );
        assert_eq!(
            three.chaincode[0].package,
            Path::new("/srv/blueprints/asset-transfer.tar.gz")
        );
        assert_eq!(three.pbft.batch_timeout, Duration::from_millis(200));
        assert!(three.policies.contains(&Policy::Restarter { attempts: 3 }));
        let local = parse(LOCAL).expect("local");
        assert_eq!(local.locations.len(), 1);
        assert_eq!(local.locations[0].kind, LocationKind::Local);
        assert_eq!(local.locations[0].validators, 4);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = "name: net\nlocations:\n  - { name: a, type: local, validatorz: 4 }\ncluster:\n  validators.per.location: 4\n";
        let e = error(text);
        assert_eq!(e.key, "validatorz");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn a_missing_key_and_a_wrong_type_are_named() {
        let e = error("name: net\nlocations:\n  - { name: a, type: local }\n");
        assert_eq!(e.key, "cluster", "{e}");
        let e = error(
            "name: net\nlocations:\n  - { name: a, type: cloud }\ncluster:\n  validators.per.location: 4\n",
        );
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("cloud"), "{e}");
    }

    #[test]
    fn location_names_are_unique_and_the_second_is_pointed_at() {
        let text = "name: net\nlocations:\n  - name: sjc\n    type: local\n    base_port: 20000\n  - name: sjc\n    type: docker\ncluster:\n  validators.per.location: 2\n";
        let e = error(text);
        assert_eq!(e.key, "locations[1].name");
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("unique"), "{e}");
    }

    #[test]
    fn fewer_than_four_validators_in_all_are_refused() {
        let text = "name: net\nlocations:\n  - { name: a, type: local }\n  - { name: b, type: docker }\ncluster:\n  validators.per.location: 1\n";
        let e = error(text);
        assert_eq!(e.key, "cluster.validators.per.location");
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("2 validator(s)"), "{e}");
        // Per-location counts add up: 1 + 3 is enough.
        let text = "name: net\nlocations:\n  - { name: a, type: local }\n  - { name: b, type: docker, validators: 3 }\ncluster:\n  validators.per.location: 1\n";
        assert_eq!(parse(text).expect("4 in all").locations[1].validators, 3);
    }

    #[test]
    fn ports_may_not_clash_on_one_host_but_may_on_two() {
        let clash = "name: net\nlocations:\n  - { name: a, type: local, base_port: 20000 }\n  - { name: b, type: local, base_port: 20010 }\ncluster:\n  validators.per.location: 2\n  peers.per.location: 2\n";
        let e = error(clash);
        assert_eq!(e.key, "locations[1].base_port");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("overlap"), "{e}");
        // 4 nodes x 3 ports from 20000 end at 20012: 20012 is free.
        let touching = clash.replace("20010", "20012");
        parse(&touching).expect("adjacent ranges do not clash");
        // Another engine is another host.
        let elsewhere = clash.replace(
            "{ name: b, type: local, base_port: 20010 }",
            "{ name: b, type: docker, endpoint: \"tcp://10.0.0.9:2376\", docker_group: 999, base_port: 20010 }",
        );
        parse(&elsewhere).expect("different hosts");
        // Ports are reserved for as many peers as the autoscaler may run.
        let scaled = format!(
            "{touching}policies:\n  - {{ type: autoscaler, metric: tx_per_second, target: 100, min: 1, max: 3 }}\n"
        );
        let e = error(&scaled);
        assert!(e.message.contains("overlap"), "{e}");
    }

    #[test]
    fn a_tcp_engine_needs_the_group_of_its_socket() {
        let e = error(
            "name: net\nlocations:\n  - { name: a, type: docker, endpoint: \"tcp://10.0.0.9:2376\" }\ncluster:\n  validators.per.location: 4\n",
        );
        assert_eq!(e.key, "locations[0].docker_group");
        assert!(e.message.contains("gid"), "{e}");
    }

    #[test]
    fn settings_that_do_not_fit_the_location_type_are_refused() {
        let e = error(
            "name: net\nlocations:\n  - { name: a, type: local, endpoint: \"unix:///x\" }\ncluster:\n  validators.per.location: 4\n",
        );
        assert_eq!(e.key, "locations[0].endpoint");
        assert_eq!(e.line, Some(3));
        let e = error(
            "name: net\nlocations:\n  - { name: a, type: docker, endpoint: \"unix:///var/run/docker.sock\", tls: { ca: a, cert: b, key: c } }\ncluster:\n  validators.per.location: 4\n",
        );
        assert_eq!(e.key, "locations[0].tls");
        let e = error(
            "name: net\nlocations:\n  - { name: a, type: docker, endpoint: \"http://x\" }\ncluster:\n  validators.per.location: 4\n",
        );
        assert!(e.message.contains("tcp://"), "{e}");
        let k8s = parse("name: net\nlocations:\n  - { name: a, type: kubernetes }\ncluster:\n  validators.per.location: 4\n").expect("k8s");
        assert_eq!(k8s.locations[0].namespace.as_deref(), Some("weft"));
    }

    #[test]
    fn pbft_chaincode_and_policy_mistakes_are_named() {
        let base = "name: net\nlocations:\n  - { name: a, type: local }\ncluster:\n  validators.per.location: 4\n";
        let e = error(&format!("{base}  pbft: {{ batch.timeout: soon }}\n"));
        assert_eq!(e.key, "cluster.pbft.batch.timeout");
        assert_eq!(e.line, Some(6), "{e}");
        let e = error(&format!("{base}  pbft: {{ checkpoint.period: 0 }}\n"));
        assert_eq!(e.key, "cluster.pbft.checkpoint.period");
        let e = error(&format!(
            "{base}  chaincode:\n    - {{ name: cc, package: a.tar.gz }}\n    - {{ name: cc, package: b.tar.gz }}\n"
        ));
        assert_eq!(e.key, "cluster.chaincode[1].name");
        let e = error(&format!(
            "{base}policies:\n  - {{ type: autoscaler, metric: tx_per_second, target: 100, min: 5, max: 2 }}\n"
        ));
        assert_eq!(e.key, "policies[0].min");
        assert_eq!(e.line, Some(7), "{e}");
        let e = error(&format!(
            "{base}policies:\n  - {{ type: restarter, max: 3 }}\n"
        ));
        assert_eq!(e.key, "policies[0].max");
        let e = error(&format!(
            "{base}policies:\n  - {{ type: restarter }}\n  - {{ type: restarter }}\n"
        ));
        assert!(e.message.contains("second restarter"), "{e}");
        let e = error(&format!(
            "{base}policies:\n  - {{ type: autoscaler, metric: cpu }}\n"
        ));
        assert!(e.to_string().contains("cpu"), "{e}");
    }

    #[test]
    fn names_are_usable_as_container_and_namespace_names() {
        let e = error(
            "name: Net_1\nlocations:\n  - { name: a, type: local }\ncluster:\n  validators.per.location: 4\n",
        );
        assert_eq!(e.key, "name");
        assert_eq!(e.line, Some(1));
    }
}
