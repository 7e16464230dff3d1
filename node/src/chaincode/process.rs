//! The process runtime: each chaincode runs as a child process of the peer, from the binary in
//! its package, with its output forwarded to the peer's log (tagged with the chaincode id) and
//! kept for launch-failure reports. The default where no Docker engine answers.

use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::runtime::{ChaincodeRuntime, Instance, LaunchSpec, LogTail, RuntimeError, RuntimeKind};

pub struct ProcessRuntime {
    work_dir: PathBuf,
}

impl ProcessRuntime {
    /// Binaries are unpacked under `work_dir`.
    pub fn new(work_dir: PathBuf) -> ProcessRuntime {
        ProcessRuntime { work_dir }
    }

    fn unpack(&self, spec: &LaunchSpec) -> Result<PathBuf, RuntimeError> {
        let prepare = |reason: String| RuntimeError::Prepare {
            chaincode: spec.name.clone(),
            reason,
        };
        let short = spec.package_hash.get(..12).unwrap_or(&spec.package_hash);
        let dir = self
            .work_dir
            .join(format!("{}-{}-{short}", spec.name, spec.version));
        let path = dir.join("chaincode");
        if !path.exists() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| prepare(format!("{}: {e}", dir.display())))?;
            let tmp = dir.join("chaincode.tmp");
            std::fs::write(&tmp, spec.binary.as_slice())
                .map_err(|e| prepare(format!("{}: {e}", tmp.display())))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| prepare(e.to_string()))?;
            }
            std::fs::rename(&tmp, &path).map_err(|e| prepare(e.to_string()))?;
        }
        Ok(path)
    }
}

#[async_trait]
impl ChaincodeRuntime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Instance>, RuntimeError> {
        let path = self.unpack(spec)?;
        let mut command = Command::new(&path);
        command
            .envs(spec.environment())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| RuntimeError::Start {
            chaincode: spec.name.clone(),
            reason: format!("{}: {e}", path.display()),
        })?;
        let pid = child.id().unwrap_or_default();
        let logs = LogTail::default();
        let tag = format!("{}:{}", spec.name, spec.version);
        if let Some(out) = child.stdout.take() {
            forward(out, tag.clone(), logs.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward(err, tag.clone(), logs.clone());
        }
        tracing::info!(chaincode = %tag, pid, "chaincode process started");
        Ok(Box::new(ProcessInstance {
            pid,
            child: Mutex::new(child),
            logs,
        }))
    }
}

fn forward<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
    tag: String,
    logs: LogTail,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "weft::chaincode", chaincode = %tag, "{line}");
            logs.push(line);
        }
    });
}

struct ProcessInstance {
    pid: u32,
    child: Mutex<Child>,
    logs: LogTail,
}

#[async_trait]
impl Instance for ProcessInstance {
    fn id(&self) -> String {
        format!("pid {}", self.pid)
    }

    fn recent_logs(&self) -> Vec<String> {
        self.logs.lines()
    }

    async fn stop(&self) {
        let mut child = self.child.lock().await;
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}
