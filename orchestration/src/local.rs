//! A local location: its nodes as `weft node start` processes on this machine, on loopback.
//! Each node has a directory in the cluster's state (`local/NODE`: its configuration, ledger,
//! log and pid file). The processes are started in their own process group, so they outlive
//! the `weft cluster` command that started them (as containers outlive it) and a Ctrl-C in its
//! terminal does not reach them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process, kill_process_group, test_kill_process};

use crate::docker::Change;
use crate::identities::NetworkDir;
use crate::plan::{LocationPlan, NodePlan};

#[derive(Debug, thiserror::Error)]
#[error("{node}: {reason}")]
pub struct LocalError {
    pub node: String,
    pub reason: String,
}

/// How long a node has to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// One local location.
pub struct LocalLocation {
    /// Where its nodes' directories are.
    pub root: PathBuf,
    pub location: LocationPlan,
    pub network: NetworkDir,
    /// The `weft` binary the nodes run.
    pub binary: PathBuf,
}

impl LocalLocation {
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.root.join(node)
    }

    fn config_path(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("node.toml")
    }

    /// The log file a node writes.
    pub fn log_path(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("node.log")
    }

    /// The pid of the node's process, if it runs (checked against its command line, so a
    /// reused pid does not count).
    pub fn running(&self, node: &str) -> Option<u32> {
        let text = std::fs::read_to_string(self.node_dir(node).join("node.pid")).ok()?;
        let raw: i32 = text.trim().parse().ok()?;
        let pid = Pid::from_raw(raw)?;
        test_kill_process(pid).ok()?;
        let cmdline = std::fs::read(format!("/proc/{raw}/cmdline")).ok()?;
        let config = self.config_path(node).display().to_string();
        // Empty for a moment right after the spawn: the kernel lets the parent go on before
        // the new program's arguments are in place.
        let ours = cmdline.is_empty() || String::from_utf8_lossy(&cmdline).contains(&config);
        // A zombie (exited, not yet reaped) is not running.
        let status = std::fs::read_to_string(format!("/proc/{raw}/stat")).unwrap_or_default();
        let zombie = status
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        (ours && !zombie).then_some(raw as u32)
    }

    /// Starts the node unless it runs: writes its configuration the first time.
    pub fn ensure_node(&self, node: &NodePlan) -> Result<Change, LocalError> {
        if self.running(&node.name).is_some() {
            return Ok(Change::Unchanged);
        }
        let error = |reason: String| LocalError {
            node: node.name.clone(),
            reason,
        };
        let dir = self.node_dir(&node.name);
        let fresh = !self.config_path(&node.name).exists();
        std::fs::create_dir_all(&dir).map_err(|e| error(format!("{}: {e}", dir.display())))?;
        let identity = self.network.identity(&node.name, node.role);
        let config = crate::plan::node_config(
            &node.name,
            &dir.join("data").display().to_string(),
            &self.network.genesis_path().display().to_string(),
            &identity.display().to_string(),
            Some((&node.grpc.listen, &node.operations.listen)),
        );
        std::fs::write(self.config_path(&node.name), config)
            .map_err(|e| error(format!("writing its configuration: {e}")))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(&node.name))
            .map_err(|e| error(format!("opening its log: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| error(format!("opening its log: {e}")))?;
        let mut command = Command::new(&self.binary);
        // The node's configuration is the file and the plan's environment: none of the
        // caller's own WEFT_ settings (they would override the file for every node alike).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WEFT_") {
                command.env_remove(key);
            }
        }
        command
            .args(["node", "start", "--config"])
            .arg(self.config_path(&node.name))
            .envs(&node.environment)
            // The plan's listen addresses are in the configuration file.
            .env_remove("WEFT_NODE_LISTEN")
            .env_remove("WEFT_NODE_OPERATIONS_LISTEN")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .map_err(|e| error(format!("starting {}: {e}", self.binary.display())))?;
        std::fs::write(dir.join("node.pid"), child.id().to_string())
            .map_err(|e| error(format!("writing its pid file: {e}")))?;
        // It runs on after this command; while this command lives, a thread reaps it when it
        // exits (no zombie), and its exit is seen through the pid file.
        let mut child = child;
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(if fresh {
            Change::Created
        } else {
            Change::Started
        })
    }

    /// Stops the node: SIGTERM (it stops its chaincode), then SIGKILL to its whole process
    /// group after a while.
    pub fn stop(&self, node: &str) {
        let Some(pid) = self.running(node).and_then(|p| Pid::from_raw(p as i32)) else {
            return;
        };
        let _ = kill_process(pid, Signal::TERM);
        let started = Instant::now();
        while self.running(node).is_some() && started.elapsed() < STOP_TIMEOUT {
            std::thread::sleep(Duration::from_millis(100));
        }
        // Its chaincode processes are in its group: none outlives it.
        let _ = kill_process_group(pid, Signal::KILL);
    }

    /// Kills the node and its chaincode processes at once (SIGKILL), as a crash would, and
    /// waits until it is gone.
    pub fn kill(&self, node: &str) {
        if let Some(pid) = self.running(node).and_then(|p| Pid::from_raw(p as i32)) {
            let _ = kill_process_group(pid, Signal::KILL);
            let started = Instant::now();
            while self.running(node).is_some() && started.elapsed() < STOP_TIMEOUT {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stops the node and removes its directory (ledger included).
    pub fn remove_node(&self, node: &str) -> Result<(), LocalError> {
        self.stop(node);
        let dir = self.node_dir(node);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LocalError {
                node: node.to_string(),
                reason: format!("removing {}: {e}", dir.display()),
            }),
            _ => Ok(()),
        }
    }

    /// Nodes with a directory here that the plan no longer names (scaled away): stopped and
    /// removed. Returns their names.
    pub fn remove_unplanned(&self) -> Result<Vec<String>, LocalError> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Ok(removed);
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().to_string();
            if self.location.nodes.iter().any(|n| n.name == name) {
                continue;
            }
            self.remove_node(&name)?;
            removed.push(name);
        }
        Ok(removed)
    }

    /// The last `lines` lines of the node's log.
    pub fn logs(&self, node: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(node)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The directory of a local location's nodes inside the cluster's state.
pub fn location_root(state_dir: &Path, location: &str) -> PathBuf {
    state_dir.join("local").join(location)
}
