//! The seam between the peer and whatever runs chaincode: a runtime starts an instance from a
//! launch spec; the instance dials back to the peer and registers with the launch token. The
//! peer never trusts a registration that does not present the token it issued.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

/// Which runtime runs chaincode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// A child process of the peer.
    Process,
    /// A Docker container built from the package.
    Docker,
    /// A chaincode already running as a service that the peer dials.
    External,
    /// Docker when an engine answers, otherwise a process.
    Auto,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker => "docker",
            RuntimeKind::External => "external",
            RuntimeKind::Auto => "auto",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "process" => Ok(RuntimeKind::Process),
            "docker" => Ok(RuntimeKind::Docker),
            "external" => Ok(RuntimeKind::External),
            "auto" => Ok(RuntimeKind::Auto),
            other => Err(format!(
                "unknown chaincode runtime {other:?}: use process, docker, external or auto"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot prepare chaincode {chaincode}: {reason}")]
    Prepare { chaincode: String, reason: String },
    #[error("cannot start chaincode {chaincode}: {reason}")]
    Start { chaincode: String, reason: String },
    #[error("the {runtime} runtime is not available here: {reason}")]
    Unavailable {
        runtime: RuntimeKind,
        reason: String,
    },
    /// The engine answered a request with an error.
    #[error("the Docker engine refused {what}: {reason} (the engine's log says more)")]
    Engine { what: String, reason: String },
}

/// Everything a runtime needs to start one chaincode instance.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub name: String,
    pub version: String,
    pub package_hash: String,
    /// The statically linked chaincode binary.
    pub binary: Arc<Vec<u8>>,
    /// Where the chaincode dials the peer (host:port).
    pub peer_address: String,
    /// The secret the instance presents when it registers.
    pub launch_token: String,
}

impl LaunchSpec {
    /// The environment every chaincode instance receives.
    pub fn environment(&self) -> Vec<(String, String)> {
        vec![
            ("WEFT_PEER_ADDRESS".into(), self.peer_address.clone()),
            ("WEFT_CHAINCODE_NAME".into(), self.name.clone()),
            ("WEFT_CHAINCODE_VERSION".into(), self.version.clone()),
            ("WEFT_CHAINCODE_TOKEN".into(), self.launch_token.clone()),
        ]
    }
}

#[async_trait]
pub trait ChaincodeRuntime: Send + Sync + 'static {
    fn kind(&self) -> RuntimeKind;
    async fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Instance>, RuntimeError>;
    /// Removes whatever this peer's instances left behind (for example an instance whose
    /// launch was abandoned when the node stopped). Called when the node stops.
    async fn shutdown(&self) {}
}

/// A started chaincode instance.
#[async_trait]
pub trait Instance: Send + Sync {
    /// The process id or container id.
    fn id(&self) -> String;
    /// The instance's most recent log lines, oldest first.
    fn recent_logs(&self) -> Vec<String>;
    /// Waits until the instance has ended; returns how (for example "exit status: 3").
    async fn exited(&self) -> String;
    /// Stops the instance and waits for it to be gone.
    async fn stop(&self);
}

/// How an instance ended, once it has: set once by the task that watches the instance.
#[derive(Clone)]
pub struct Exit(watch::Receiver<Option<String>>);

impl Exit {
    /// The sender the watching task reports through, and the receiving side.
    pub fn channel() -> (watch::Sender<Option<String>>, Exit) {
        let (sender, receiver) = watch::channel(None);
        (sender, Exit(receiver))
    }

    /// Waits until the instance has ended; returns how. A watcher that went away without
    /// saying reports "unknown".
    pub async fn wait(&self) -> String {
        let mut exit = self.0.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or_default(),
            Err(_) => "unknown".into(),
        }
    }
}

/// The last lines an instance logged, bounded.
#[derive(Clone, Default)]
pub struct LogTail {
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl LogTail {
    pub const CAPACITY: usize = 40;

    pub fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == Self::CAPACITY {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
