//! Configuration: a TOML file whose every key can be overridden by a `WEFT_<SECTION>_<KEY>`
//! environment variable (for example `WEFT_CHAINCODE_RUNTIME=process`), read into a raw form
//! that refuses unknown keys by name, then validated into [`Config`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::admission_window::WindowConfig;
use crate::chaincode::docker::DockerSettings;
use crate::chaincode::runtime::RuntimeKind;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("config file {path} is not valid TOML: {reason}")]
    Toml { path: String, reason: String },
    #[error("configuration error: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    #[serde(default)]
    chaincode: RawChaincode,
    #[serde(default)]
    api: RawApi,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: String,
    data_dir: PathBuf,
    genesis: PathBuf,
    /// Directory holding this node's cert.pem and key.pem.
    identity: PathBuf,
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_operations")]
    operations_listen: String,
}

fn default_listen() -> String {
    "127.0.0.1:7051".into()
}

fn default_operations() -> String {
    "127.0.0.1:9443".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChaincode {
    #[serde(default = "default_runtime")]
    runtime: String,
    #[serde(default = "default_launch_timeout")]
    launch_timeout: String,
    #[serde(default = "default_execute_timeout")]
    execute_timeout: String,
    /// Where chaincode dials this peer; defaults to the gRPC listen address.
    #[serde(default)]
    peer_address: Option<String>,
    /// The Docker engine: unix:///path or tcp://host:port (default: DOCKER_HOST, then the
    /// local socket).
    #[serde(default)]
    docker_host: Option<String>,
    /// For a tcp engine with TLS: a directory holding ca.pem, cert.pem and key.pem.
    #[serde(default)]
    docker_tls_dir: Option<PathBuf>,
    /// The peer's chaincode socket directory as the engine sees it (a host path, or a volume
    /// name when the peer runs in a container).
    #[serde(default)]
    docker_socket_source: Option<String>,
    /// Memory limit of each chaincode container, in MiB.
    #[serde(default = "default_memory_mib")]
    memory_mib: u64,
    /// Process and thread limit of each chaincode container.
    #[serde(default = "default_pids_limit")]
    pids_limit: i64,
    /// For the external runtime: where each chaincode serves, "name=host:port,...".
    #[serde(default)]
    external: String,
}

impl Default for RawChaincode {
    fn default() -> Self {
        RawChaincode {
            runtime: default_runtime(),
            launch_timeout: default_launch_timeout(),
            execute_timeout: default_execute_timeout(),
            peer_address: None,
            docker_host: None,
            docker_tls_dir: None,
            docker_socket_source: None,
            memory_mib: default_memory_mib(),
            pids_limit: default_pids_limit(),
            external: String::new(),
        }
    }
}

fn default_memory_mib() -> u64 {
    DockerSettings::default().memory_mib
}
fn default_pids_limit() -> i64 {
    DockerSettings::default().pids_limit
}

fn default_runtime() -> String {
    "auto".into()
}
fn default_launch_timeout() -> String {
    "30s".into()
}
fn default_execute_timeout() -> String {
    "30s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default = "default_wait")]
    commit_wait_timeout: String,
    #[serde(default = "default_max_pending")]
    max_pending: usize,
    #[serde(default = "default_admission_window")]
    admission_window: String,
    #[serde(default = "default_admission_batch")]
    admission_batch: usize,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            commit_wait_timeout: default_wait(),
            max_pending: default_max_pending(),
            admission_window: default_admission_window(),
            admission_batch: default_admission_batch(),
        }
    }
}

fn default_wait() -> String {
    "30s".into()
}
/// Transactions this node holds admitted and not yet committed. It is the backpressure: beyond
/// it clients get RESOURCE_EXHAUSTED (and retry) instead of a queue that grows into seconds of
/// latency, memory and request timers. Measured with `weft bench` at 150% of peak on four
/// validators: 50,000 let each reach 940 MiB and change views; 4,000 still changed views (a
/// replica's queue of 16,000 is ~10 s of work); 1,000 kept 1,574 tx/s committed, no view
/// change, 149 MiB (BENCHMARKS.md).
fn default_max_pending() -> usize {
    1_000
}

/// The longest a client submission waits for others to have its signature checked with
/// theirs, when they arrive fast enough to be worth it (`admission_window`); zero: never.
fn default_admission_window() -> String {
    "4ms".into()
}
/// Submissions gathered into one signature check at most (the cost per signature falls little
/// beyond a few tens: 13.4 us at 32, 11.9 at 64).
fn default_admission_batch() -> usize {
    32
}
/// A longer admission window is a mistake: it would add its length to every transaction's
/// latency under load.
const MAX_ADMISSION_WINDOW: Duration = Duration::from_secs(1);

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeConfig,
    pub chaincode: ChaincodeConfig,
    pub api: ApiConfig,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: String,
    pub data_dir: PathBuf,
    pub genesis: PathBuf,
    pub identity: PathBuf,
    pub listen: SocketAddr,
    pub operations_listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct ChaincodeConfig {
    pub runtime: RuntimeKind,
    pub launch_timeout: Duration,
    pub execute_timeout: Duration,
    pub peer_address: Option<String>,
    pub docker: DockerSettings,
    /// The external runtime's chaincode addresses, by chaincode name.
    pub external: HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub commit_wait_timeout: Duration,
    pub max_pending: usize,
    pub admission: WindowConfig,
}

const SECTIONS: [&str; 3] = ["node", "chaincode", "api"];

impl Config {
    /// Reads `path`, applies `WEFT_*` overrides from the process environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    pub fn load_with_env(
        path: &Path,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, env).map_err(|e| match e {
            ConfigError::Toml { reason, .. } => ConfigError::Toml {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Parses TOML `text`; relative paths are taken from `base`.
    pub fn parse(
        text: &str,
        base: &Path,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let toml_err = |reason: String| ConfigError::Toml {
            path: "<text>".into(),
            reason,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| toml_err(e.to_string()))?;
        let mut overrides: Vec<(&String, &String)> =
            env.iter().filter(|(k, _)| k.starts_with("WEFT_")).collect();
        overrides.sort();
        for (name, value) in overrides {
            let rest = name["WEFT_".len()..].to_ascii_lowercase();
            let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
                continue;
            };
            let key = rest[section.len() + 1..].to_string();
            let value = parse_env_value(value);
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => {
                    t.insert(key, value);
                }
                _ => return Err(ConfigError::Invalid(format!("[{section}] is not a table"))),
            }
        }
        let raw: RawConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| toml_err(e.to_string().trim().to_string()))?;
        raw.validate(base)
    }
}

fn parse_env_value(value: &str) -> toml::Value {
    if let Ok(n) = value.parse::<i64>() {
        return toml::Value::Integer(n);
    }
    match value {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(value.to_string()),
    }
}

fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        ConfigError::Invalid(format!(
            "{key} = {text:?} is not a duration ({e}); write for example \"2s\" or \"500ms\""
        ))
    })
}

fn address(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::Invalid(format!(
            "{key} = {text:?} is not an IP address and port, for example \"127.0.0.1:7051\""
        ))
    })
}

impl RawConfig {
    fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        if self.node.id.trim().is_empty() {
            return Err(ConfigError::Invalid("node.id is empty".into()));
        }
        let runtime = self
            .chaincode
            .runtime
            .parse::<RuntimeKind>()
            .map_err(|e| ConfigError::Invalid(format!("chaincode.runtime: {e}")))?;
        let execute_timeout =
            duration("chaincode.execute_timeout", &self.chaincode.execute_timeout)?;
        if execute_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "chaincode.execute_timeout must be above zero".into(),
            ));
        }
        // Below a few MiB not even a static binary starts; a limit that small is a mistake.
        if self.chaincode.memory_mib < 16 {
            return Err(ConfigError::Invalid(format!(
                "chaincode.memory_mib = {} is too small: give each chaincode container at least 16 MiB",
                self.chaincode.memory_mib
            )));
        }
        if self.chaincode.pids_limit < 8 {
            return Err(ConfigError::Invalid(format!(
                "chaincode.pids_limit = {} is too small: a chaincode needs at least 8 processes and threads",
                self.chaincode.pids_limit
            )));
        }
        let external = crate::chaincode::external::parse_addresses(&self.chaincode.external)
            .map_err(|e| ConfigError::Invalid(format!("chaincode.external: {e}")))?;
        if runtime == RuntimeKind::External && external.is_empty() {
            return Err(ConfigError::Invalid(
                "chaincode.runtime = external needs chaincode.external = \"name=host:port,...\" (or WEFT_CHAINCODE_EXTERNAL): where each chaincode serves".into(),
            ));
        }
        if self.api.max_pending == 0 {
            return Err(ConfigError::Invalid(
                "api.max_pending must be above zero".into(),
            ));
        }
        let admission_window = duration("api.admission_window", &self.api.admission_window)?;
        if admission_window > MAX_ADMISSION_WINDOW {
            return Err(ConfigError::Invalid(format!(
                "api.admission_window = {:?} is longer than {MAX_ADMISSION_WINDOW:?}: under load every submission could wait that long; a few milliseconds (the default, 4ms) is enough",
                self.api.admission_window
            )));
        }
        if self.api.admission_batch == 0 {
            return Err(ConfigError::Invalid(
                "api.admission_batch must be above zero".into(),
            ));
        }
        Ok(Config {
            node: NodeConfig {
                id: self.node.id,
                data_dir: resolve(self.node.data_dir),
                genesis: resolve(self.node.genesis),
                identity: resolve(self.node.identity),
                listen: address("node.listen", &self.node.listen)?,
                operations_listen: address("node.operations_listen", &self.node.operations_listen)?,
            },
            chaincode: ChaincodeConfig {
                runtime,
                launch_timeout: duration(
                    "chaincode.launch_timeout",
                    &self.chaincode.launch_timeout,
                )?,
                execute_timeout,
                peer_address: self.chaincode.peer_address,
                docker: DockerSettings {
                    host: self.chaincode.docker_host,
                    tls_dir: self.chaincode.docker_tls_dir.map(resolve),
                    memory_mib: self.chaincode.memory_mib,
                    pids_limit: self.chaincode.pids_limit,
                    socket_source: self.chaincode.docker_socket_source,
                },
                external,
            },
            api: ApiConfig {
                commit_wait_timeout: duration(
                    "api.commit_wait_timeout",
                    &self.api.commit_wait_timeout,
                )?,
                max_pending: self.api.max_pending,
                admission: WindowConfig {
                    window: admission_window,
                    batch: self.api.admission_batch,
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[node]
id = "validator0"
data_dir = "data"
genesis = "genesis.json"
identity = "validators/validator0"
"#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse(text, Path::new("/etc/weft"), &env)
    }

    #[test]
    fn minimal_file_gets_defaults_and_resolved_paths() {
        let config = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(config.node.data_dir, PathBuf::from("/etc/weft/data"));
        assert_eq!(config.node.listen, "127.0.0.1:7051".parse().expect("addr"));
        assert_eq!(config.chaincode.runtime, RuntimeKind::Auto);
        assert_eq!(config.chaincode.execute_timeout, Duration::from_secs(30));
        assert_eq!(config.api.max_pending, 1_000);
        assert_eq!(
            config.api.admission,
            WindowConfig {
                window: Duration::from_millis(4),
                batch: 32,
            }
        );
    }

    #[test]
    fn the_admission_window_is_set_bounded_or_turned_off() {
        let config = parse(
            MINIMAL,
            &[
                ("WEFT_API_ADMISSION_WINDOW", "0ms"),
                ("WEFT_API_ADMISSION_BATCH", "8"),
            ],
        )
        .expect("valid");
        assert_eq!(config.api.admission.window, Duration::ZERO);
        assert_eq!(config.api.admission.batch, 8);
        for (key, value, says) in [
            ("WEFT_API_ADMISSION_WINDOW", "5s", "longer than 1s"),
            ("WEFT_API_ADMISSION_WINDOW", "soon", "not a duration"),
            ("WEFT_API_ADMISSION_BATCH", "0", "above zero"),
        ] {
            let error = parse(MINIMAL, &[(key, value)]).expect_err(value);
            assert!(error.to_string().contains(says), "{key}={value}: {error}");
        }
    }

    #[test]
    fn environment_overrides_keys() {
        let config = parse(
            MINIMAL,
            &[
                ("WEFT_CHAINCODE_RUNTIME", "process"),
                ("WEFT_CHAINCODE_EXECUTE_TIMEOUT", "250ms"),
                ("WEFT_NODE_LISTEN", "127.0.0.1:0"),
                ("WEFT_API_MAX_PENDING", "7"),
                ("WEFT_UNRELATED", "ignored"),
            ],
        )
        .expect("valid");
        assert_eq!(config.chaincode.runtime, RuntimeKind::Process);
        assert_eq!(config.chaincode.execute_timeout, Duration::from_millis(250));
        assert_eq!(config.node.listen.port(), 0);
        assert_eq!(config.api.max_pending, 7);
    }

    #[test]
    fn docker_and_external_settings_come_from_keys_and_environment() {
        let config = parse(
            &format!(
                "{MINIMAL}\n[chaincode]\nruntime = \"docker\"\ndocker_tls_dir = \"tls\"\nmemory_mib = 64\n"
            ),
            &[
                ("WEFT_CHAINCODE_DOCKER_HOST", "tcp://10.0.0.5:2376"),
                ("WEFT_CHAINCODE_PIDS_LIMIT", "32"),
                ("WEFT_CHAINCODE_DOCKER_SOCKET_SOURCE", "weft-peer0-run"),
            ],
        )
        .expect("valid");
        let docker = &config.chaincode.docker;
        assert_eq!(docker.host.as_deref(), Some("tcp://10.0.0.5:2376"));
        assert_eq!(docker.tls_dir.as_deref(), Some(Path::new("/etc/weft/tls")));
        assert_eq!(docker.memory_mib, 64);
        assert_eq!(docker.pids_limit, 32);
        assert_eq!(docker.socket_source.as_deref(), Some("weft-peer0-run"));

        let config = parse(
            MINIMAL,
            &[
                ("WEFT_CHAINCODE_RUNTIME", "external"),
                ("WEFT_CHAINCODE_EXTERNAL", "probe=127.0.0.1:9999"),
            ],
        )
        .expect("valid");
        assert_eq!(config.chaincode.external["probe"], "127.0.0.1:9999");

        let err = parse(MINIMAL, &[("WEFT_CHAINCODE_MEMORY_MIB", "4")]).expect_err("too small");
        assert!(err.to_string().contains("memory_mib"), "{err}");
        let err = parse(MINIMAL, &[("WEFT_CHAINCODE_RUNTIME", "external")])
            .expect_err("external needs addresses");
        assert!(err.to_string().contains("chaincode.external"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = parse(
            &format!("{MINIMAL}\n[chaincode]\nruntim = \"process\"\n"),
            &[],
        )
        .expect_err("typo");
        assert!(err.to_string().contains("runtim"), "{err}");
        let err = parse(MINIMAL, &[("WEFT_CHAINCODE_RUNTIM", "process")]).expect_err("typo in env");
        assert!(err.to_string().contains("runtim"), "{err}");
        let err = parse(&format!("{MINIMAL}\n[extra]\nx = 1\n"), &[]).expect_err("unknown section");
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn bad_values_say_what_to_write() {
        let err = parse(MINIMAL, &[("WEFT_CHAINCODE_RUNTIME", "podman")]).expect_err("bad runtime");
        assert!(
            err.to_string()
                .contains("process, docker, external or auto"),
            "{err}"
        );
        let err =
            parse(MINIMAL, &[("WEFT_API_COMMIT_WAIT_TIMEOUT", "soon")]).expect_err("bad duration");
        assert!(err.to_string().contains("\"2s\""), "{err}");
        let err = parse(MINIMAL, &[("WEFT_NODE_LISTEN", "localhost")]).expect_err("bad address");
        assert!(err.to_string().contains("node.listen"), "{err}");
        assert!(
            parse("[node]\nid = \"x\"\n", &[]).is_err(),
            "missing keys are refused"
        );
    }
}
