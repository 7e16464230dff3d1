//! Running a chaincode as a program: the launch environment the peer sets, logging, and the
//! exit code; invariant: the process exits 0 only when the peer closed the stream cleanly, 2
//! when the launch environment is incomplete, and 1 on any other failure.

use crate::Chaincode;
use crate::service::{ServiceConfig, ServiceError, serve_as_service};
use crate::shim::{self, ShimConfig, ShimError};

/// The peer's chaincode endpoint, host:port.
pub const ENV_PEER_ADDRESS: &str = "WEFT_PEER_ADDRESS";
/// The chaincode's name, as in its package manifest.
pub const ENV_CHAINCODE_NAME: &str = "WEFT_CHAINCODE_NAME";
/// The chaincode's version, as in its package manifest.
pub const ENV_CHAINCODE_VERSION: &str = "WEFT_CHAINCODE_VERSION";
/// The token the peer gave this launch.
pub const ENV_CHAINCODE_TOKEN: &str = "WEFT_CHAINCODE_TOKEN";
/// Set (ip:port) to serve the chaincode as a service that the peer dials (the peer's external
/// runtime) instead of dialling a peer; then only the name and version are needed besides.
pub const ENV_CHAINCODE_LISTEN: &str = "WEFT_CHAINCODE_LISTEN";

/// The launch environment is incomplete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "environment variable {0} is not set: a chaincode is started by its peer, which sets \
         WEFT_PEER_ADDRESS, WEFT_CHAINCODE_NAME, WEFT_CHAINCODE_VERSION and WEFT_CHAINCODE_TOKEN"
    )]
    Missing(&'static str),
    #[error("environment variable {0} is not valid UTF-8")]
    NotUnicode(&'static str),
    #[error("environment variable {name} = {value:?} is not an ip:port, for example 0.0.0.0:9999")]
    NotAnAddress { name: &'static str, value: String },
}

/// Why a chaincode program stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Shim(#[from] ShimError),
    #[error("{0}")]
    Service(#[from] ServiceError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
}

impl StartError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => 2,
            StartError::Shim(_) | StartError::Service(_) | StartError::Runtime(_) => 1,
        }
    }
}

/// Reads one variable of the process environment (unset is `None`).
fn env_lookup(name: &'static str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::NotUnicode(name)),
    }
}

impl ServiceConfig {
    /// The service settings when WEFT_CHAINCODE_LISTEN is set; `None` otherwise.
    pub fn from_env() -> Result<Option<ServiceConfig>, ConfigError> {
        ServiceConfig::from_lookup(env_lookup)
    }

    /// Reads the service settings through `lookup` (a variable that is unset or empty is
    /// missing); `None` when WEFT_CHAINCODE_LISTEN is missing.
    pub fn from_lookup(
        mut lookup: impl FnMut(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Option<ServiceConfig>, ConfigError> {
        let Some(listen) = lookup(ENV_CHAINCODE_LISTEN)?.filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let listen = listen.parse().map_err(|_| ConfigError::NotAnAddress {
            name: ENV_CHAINCODE_LISTEN,
            value: listen.clone(),
        })?;
        let mut require = |name: &'static str| match lookup(name)? {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(ConfigError::Missing(name)),
        };
        let name = require(ENV_CHAINCODE_NAME)?;
        let version = require(ENV_CHAINCODE_VERSION)?;
        Ok(Some(ServiceConfig {
            listen,
            name,
            version,
        }))
    }
}

impl ShimConfig {
    /// Reads the launch environment the peer sets.
    pub fn from_env() -> Result<ShimConfig, ConfigError> {
        ShimConfig::from_lookup(env_lookup)
    }

    /// Reads the launch environment through `lookup` (a variable that is unset or empty is
    /// missing).
    pub fn from_lookup(
        mut lookup: impl FnMut(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<ShimConfig, ConfigError> {
        let mut require = |name: &'static str| match lookup(name)? {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(ConfigError::Missing(name)),
        };
        let peer_address = require(ENV_PEER_ADDRESS)?;
        let name = require(ENV_CHAINCODE_NAME)?;
        let version = require(ENV_CHAINCODE_VERSION)?;
        let launch_token = require(ENV_CHAINCODE_TOKEN)?;
        Ok(ShimConfig::new(
            &peer_address,
            &name,
            &version,
            &launch_token,
        ))
    }
}

/// Runs `chaincode` for the peer that launched this process, and exits: 0 when the peer closed
/// the stream cleanly, 2 when the launch environment is incomplete, 1 on any other failure
/// (with the reason on stderr). An author's `main` is `chaincode_sdk::start(MyChaincode)`.
pub fn start<C: Chaincode>(chaincode: C) -> ! {
    let code = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => match runtime.block_on(run(chaincode)) {
            Ok(()) => 0,
            Err(error) => report(&error),
        },
        Err(error) => report(&StartError::Runtime(error.to_string())),
    };
    // Exit without waiting for the runtime: a transaction stuck in a loop must not keep a
    // chaincode alive after its stream ended.
    std::process::exit(code)
}

fn report(error: &StartError) -> i32 {
    eprintln!("chaincode: {error}");
    error.exit_code()
}

/// The async body of [`start`]: initialises logging (stderr, `RUST_LOG` honoured, `info` by
/// default), reads the launch environment and serves until the stream ends.
pub async fn run<C: Chaincode>(chaincode: C) -> Result<(), StartError> {
    init_tracing();
    if let Some(config) = ServiceConfig::from_env()? {
        serve_as_service(chaincode, config).await?;
        return Ok(());
    }
    let config = ShimConfig::from_env()?;
    tracing::info!(
        chaincode = %config.name,
        version = %config.version,
        peer = %config.peer_address,
        "starting chaincode"
    );
    shim::serve(chaincode, config).await?;
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person watching; a peer collects these lines into its own logs.
    // Another subscriber (a test's, an embedding program's) wins; that is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(
        present: &'static [(&'static str, &'static str)],
    ) -> impl FnMut(&'static str) -> Result<Option<String>, ConfigError> {
        move |name| {
            Ok(present
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string()))
        }
    }

    #[test]
    fn the_service_settings_are_read_only_when_a_listen_address_is_set() {
        assert_eq!(
            ServiceConfig::from_lookup(lookup(&[(ENV_CHAINCODE_NAME, "cc")])),
            Ok(None)
        );
        let config = ServiceConfig::from_lookup(lookup(&[
            (ENV_CHAINCODE_LISTEN, "127.0.0.1:9999"),
            (ENV_CHAINCODE_NAME, "cc"),
            (ENV_CHAINCODE_VERSION, "1.0"),
        ]))
        .expect("complete")
        .expect("a service");
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(
            (config.name.as_str(), config.version.as_str()),
            ("cc", "1.0")
        );
        assert_eq!(
            ServiceConfig::from_lookup(lookup(&[
                (ENV_CHAINCODE_LISTEN, "127.0.0.1:9999"),
                (ENV_CHAINCODE_NAME, "cc"),
            ])),
            Err(ConfigError::Missing(ENV_CHAINCODE_VERSION))
        );
        let error = ServiceConfig::from_lookup(lookup(&[(ENV_CHAINCODE_LISTEN, "anywhere")]))
            .expect_err("not an address");
        assert!(
            error.to_string().contains("WEFT_CHAINCODE_LISTEN"),
            "{error}"
        );
    }

    #[test]
    fn full_environment_is_read() {
        let config = ShimConfig::from_lookup(lookup(&[
            (ENV_PEER_ADDRESS, "127.0.0.1:7052"),
            (ENV_CHAINCODE_NAME, "asset-transfer"),
            (ENV_CHAINCODE_VERSION, "1.0"),
            (ENV_CHAINCODE_TOKEN, "secret"),
        ]))
        .expect("complete environment");
        assert_eq!(
            config,
            ShimConfig::new("127.0.0.1:7052", "asset-transfer", "1.0", "secret")
        );
    }

    #[test]
    fn missing_or_empty_variable_is_named_and_exits_2() {
        let error = ShimConfig::from_lookup(lookup(&[
            (ENV_PEER_ADDRESS, "127.0.0.1:7052"),
            (ENV_CHAINCODE_NAME, "asset-transfer"),
            (ENV_CHAINCODE_VERSION, ""),
        ]))
        .expect_err("version is empty");
        assert_eq!(error, ConfigError::Missing(ENV_CHAINCODE_VERSION));
        assert!(error.to_string().contains("WEFT_CHAINCODE_VERSION"));
        assert_eq!(StartError::from(error).exit_code(), 2);
    }
}
