//! Chaincode on this peer: installed packages, the runtime that starts instances, and the
//! running instance of each deployed chaincode. An instance that crashes, hangs or answers
//! garbage is stopped and started again on next use; the batch it was running fails.

pub mod docker;
pub mod external;
pub mod process;
pub mod read_hints;
pub mod runtime;
pub mod session;
pub mod socket;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use tokio::sync::{Mutex, oneshot};
use weft_proto::package::{self, Manifest, PackageError};

use crate::state::StateView;
use crate::types::Transaction;
use runtime::{ChaincodeRuntime, Instance, LaunchSpec, RuntimeError, RuntimeKind};
use session::{
    ExecutionKind, NestedInvoker, Outcome, PendingLaunch, Registrations, Session, SessionError,
};

/// A deployed chaincode, as recorded by the lifecycle on the ledger.
pub use weft_proto::tx::ChaincodeDefinition as Definition;

#[derive(Debug, thiserror::Error)]
pub enum ChaincodeError {
    #[error(
        "package {0} is not installed on this peer: install it with `weft chaincode deploy` (or the Admin InstallChaincode call)"
    )]
    NotInstalled(String),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("cannot store the package: {0}")]
    Io(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("chaincode {chaincode} ({instance}) {reason}; its last log lines:\n{logs}")]
    LaunchFailed {
        chaincode: String,
        instance: String,
        reason: String,
        logs: String,
    },
    #[error("chaincode {chaincode}: {source}")]
    Session {
        chaincode: String,
        #[source]
        source: SessionError,
    },
}

struct Running {
    definition: Definition,
    instance: Box<dyn Instance>,
    session: Arc<Session>,
}

/// Status of one chaincode for `ListChaincodes`.
#[derive(Debug, Clone)]
pub struct ChaincodeStatus {
    pub definition: Definition,
    pub state: String,
}

pub struct ChaincodeManager {
    runtime: Arc<dyn ChaincodeRuntime>,
    packages_dir: PathBuf,
    peer_address: String,
    launch_timeout: Duration,
    execute_timeout: Duration,
    registrations: Arc<Registrations>,
    running: Mutex<HashMap<String, Arc<Mutex<Option<Running>>>>>,
    epochs: std::sync::Mutex<HashMap<String, u64>>,
}

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub packages_dir: PathBuf,
    pub peer_address: String,
    pub launch_timeout: Duration,
    pub execute_timeout: Duration,
}

impl ChaincodeManager {
    /// A manager starting chaincode through `runtime`; instances register through
    /// `registrations` (shared with the external runtime, which accepts streams itself).
    pub fn new(
        runtime: Arc<dyn ChaincodeRuntime>,
        config: ManagerConfig,
        registrations: Arc<Registrations>,
    ) -> ChaincodeManager {
        ChaincodeManager {
            runtime,
            packages_dir: config.packages_dir,
            peer_address: config.peer_address,
            launch_timeout: config.launch_timeout,
            execute_timeout: config.execute_timeout,
            registrations,
            running: Mutex::new(HashMap::new()),
            epochs: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn registrations(&self) -> Arc<Registrations> {
        self.registrations.clone()
    }

    pub fn runtime_kind(&self) -> RuntimeKind {
        self.runtime.kind()
    }

    pub fn execute_timeout(&self) -> Duration {
        self.execute_timeout
    }

    /// Stores a package and returns its manifest and hash.
    pub fn install(&self, bytes: &[u8]) -> Result<(Manifest, String), ChaincodeError> {
        let package = package::open(bytes)?;
        std::fs::create_dir_all(&self.packages_dir)
            .map_err(|e| ChaincodeError::Io(e.to_string()))?;
        let path = self.package_path(&package.hash);
        if !path.exists() {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes).map_err(|e| ChaincodeError::Io(e.to_string()))?;
            std::fs::rename(&tmp, &path).map_err(|e| ChaincodeError::Io(e.to_string()))?;
        }
        tracing::info!(chaincode = %package.manifest.name, version = %package.manifest.version, hash = %package.hash, "package installed");
        Ok((package.manifest, package.hash))
    }

    fn package_path(&self, hash: &str) -> PathBuf {
        self.packages_dir.join(format!("{hash}.tar.gz"))
    }

    /// Opens an installed package.
    pub fn package(&self, hash: &str) -> Result<package::Package, ChaincodeError> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChaincodeError::NotInstalled(hash.to_string()));
        }
        let bytes = std::fs::read(self.package_path(hash))
            .map_err(|_| ChaincodeError::NotInstalled(hash.to_string()))?;
        Ok(package::open(&bytes)?)
    }

    /// The cache epoch the chaincode's shim must use.
    pub fn epoch(&self, name: &str) -> u64 {
        *self
            .epochs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert(1)
    }

    /// Invalidates the shim's cache of `name` (its state changed by another path).
    pub fn bump_epoch(&self, name: &str) {
        *self
            .epochs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert(1) += 1;
    }

    async fn slot(&self, name: &str) -> Arc<Mutex<Option<Running>>> {
        self.running
            .lock()
            .await
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    async fn launch(&self, definition: &Definition) -> Result<Running, ChaincodeError> {
        let package = self.package(&definition.package_hash)?;
        let mut token = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut token);
        let token = hex::encode(token);
        let (registered, on_register) = oneshot::channel();
        self.registrations.expect(
            token.clone(),
            PendingLaunch {
                name: definition.name.clone(),
                version: definition.version.clone(),
                registered,
            },
        );
        let spec = LaunchSpec {
            name: definition.name.clone(),
            version: definition.version.clone(),
            package_hash: definition.package_hash.clone(),
            binary: Arc::new(package.binary),
            peer_address: self.peer_address.clone(),
            launch_token: token.clone(),
        };
        let instance = match self.runtime.launch(&spec).await {
            Ok(instance) => instance,
            Err(e) => {
                self.registrations.forget(&token);
                return Err(e.into());
            }
        };
        let registered = tokio::select! {
            registered = tokio::time::timeout(self.launch_timeout, on_register) => match registered {
                Ok(Ok(session)) => Ok(session),
                _ => Err(format!("did not register within {:?}", self.launch_timeout)),
            },
            status = instance.exited() => Err(format!("exited ({status}) before registering")),
        };
        match registered {
            Ok(session) => {
                // A new instance starts with an empty cache; a new epoch says so explicitly.
                self.bump_epoch(&definition.name);
                Ok(Running {
                    definition: definition.clone(),
                    instance,
                    session,
                })
            }
            Err(reason) => {
                self.registrations.forget(&token);
                let id = instance.id();
                instance.stop().await;
                let logs = instance.recent_logs();
                Err(ChaincodeError::LaunchFailed {
                    chaincode: format!("{}:{}", definition.name, definition.version),
                    instance: id,
                    reason,
                    logs: if logs.is_empty() {
                        "(it printed nothing)".into()
                    } else {
                        logs.join("\n")
                    },
                })
            }
        }
    }

    /// Makes sure `definition` runs (starting it, or replacing another version), and returns
    /// its session.
    pub async fn ensure_running(
        &self,
        definition: &Definition,
    ) -> Result<Arc<Session>, ChaincodeError> {
        let slot = self.slot(&definition.name).await;
        let mut running = slot.lock().await;
        if let Some(current) = running.as_ref()
            && current.definition == *definition
            && !current.session.is_closed()
        {
            return Ok(current.session.clone());
        }
        if let Some(old) = running.take() {
            tracing::info!(chaincode = %old.definition.name, version = %old.definition.version, "stopping chaincode instance");
            old.instance.stop().await;
        }
        let started = self.launch(definition).await?;
        let session = started.session.clone();
        *running = Some(started);
        Ok(session)
    }

    /// Runs `transactions` on `definition` as one batch. A crash, a timeout or a protocol
    /// violation stops the instance, so the next call starts a fresh one.
    pub async fn execute(
        &self,
        definition: &Definition,
        kind: ExecutionKind,
        transactions: &[Transaction],
        view: Arc<dyn StateView>,
        invoker: Option<Arc<dyn NestedInvoker>>,
    ) -> Result<Vec<Outcome>, ChaincodeError> {
        let session = self.ensure_running(definition).await?;
        let epoch = self.epoch(&definition.name);
        let result = session
            .execute(
                kind,
                epoch,
                transactions,
                view,
                invoker,
                self.execute_timeout,
            )
            .await;
        match result {
            Ok(outcomes) => Ok(outcomes),
            Err(source) => {
                tracing::warn!(chaincode = %definition.name, error = %source, "restarting chaincode instance");
                self.stop(&definition.name).await;
                Err(ChaincodeError::Session {
                    chaincode: definition.name.clone(),
                    source,
                })
            }
        }
    }

    /// Stops the instance of `name`, if one runs.
    pub async fn stop(&self, name: &str) {
        let slot = self.slot(name).await;
        if let Some(old) = slot.lock().await.take() {
            old.instance.stop().await;
        }
    }

    pub async fn stop_all(&self) {
        let names: Vec<String> = self.running.lock().await.keys().cloned().collect();
        for name in names {
            self.stop(&name).await;
        }
    }

    /// Lets the runtime remove what stopped instances left (after [`Self::stop_all`]).
    pub async fn shutdown_runtime(&self) {
        self.runtime.shutdown().await;
    }

    pub async fn list(&self) -> Vec<ChaincodeStatus> {
        let slots: Vec<_> = self.running.lock().await.values().cloned().collect();
        let mut out = Vec::new();
        for slot in slots {
            if let Some(r) = slot.lock().await.as_ref() {
                out.push(ChaincodeStatus {
                    definition: r.definition.clone(),
                    state: if r.session.is_closed() {
                        "stopped".into()
                    } else {
                        format!("running ({})", r.instance.id())
                    },
                });
            }
        }
        out.sort_by(|a, b| a.definition.name.cmp(&b.definition.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::chaincode_manager as manager;

    fn install_script(manager: &ChaincodeManager, name: &str, script: &str) -> Definition {
        let package = package::build(name, "1", script.as_bytes()).expect("package");
        let (manifest, hash) = manager.install(&package).expect("install");
        Definition {
            name: manifest.name,
            version: manifest.version,
            package_hash: hash,
        }
    }

    #[tokio::test]
    async fn a_chaincode_that_exits_at_launch_is_reported_with_its_last_log_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager = manager(dir.path(), Duration::from_secs(30));
        let definition = install_script(
            &manager,
            "broken",
            "#!/bin/sh\necho \"cannot open config: no such file\" >&2\nexit 7\n",
        );
        let started = std::time::Instant::now();
        let Err(err) = manager.ensure_running(&definition).await else {
            panic!("a chaincode that exits cannot register");
        };
        let text = err.to_string();
        assert!(text.contains("broken:1"), "{text}");
        assert!(text.contains("exit status: 7"), "{text}");
        assert!(text.contains("cannot open config: no such file"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "an early exit must not wait for the launch timeout"
        );
    }

    #[tokio::test]
    async fn a_chaincode_that_never_registers_times_out_and_is_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager = manager(dir.path(), Duration::from_millis(300));
        let definition = install_script(
            &manager,
            "silent",
            "#!/bin/sh\necho waiting\nexec sleep 60\n",
        );
        let Err(err) = manager.ensure_running(&definition).await else {
            panic!("a chaincode that never dials cannot register");
        };
        let text = err.to_string();
        assert!(text.contains("did not register within 300ms"), "{text}");
        assert!(text.contains("waiting"), "{text}");
        assert!(text.contains("pid "), "names the instance: {text}");
    }

    #[test]
    fn packages_are_checked_before_they_are_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager = manager(dir.path(), Duration::from_secs(1));
        assert!(manager.install(b"not a package").is_err());
        assert!(matches!(
            manager.package(&"0".repeat(64)),
            Err(ChaincodeError::NotInstalled(_))
        ));
        assert!(matches!(
            manager.package("../../etc/passwd"),
            Err(ChaincodeError::NotInstalled(_))
        ));
    }
}
