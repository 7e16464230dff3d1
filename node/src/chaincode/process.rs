//! The process runtime: each chaincode runs as a child process of the peer, from the binary in
//! its package, with its output forwarded to the peer's log (tagged with the chaincode id) and
//! kept for launch-failure reports. The default where no Docker engine answers.

use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{Mutex, oneshot};

use super::runtime::{
    ChaincodeRuntime, Exit, Instance, LaunchSpec, LogTail, RuntimeError, RuntimeKind,
};

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

/// Linux's "text file busy": exec of a file that some process holds open for writing.
const ETXTBSY: i32 = 26;

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
        // The binary was just written: another thread of this process may have forked while
        // its write handle was open, and until that child execs, exec here fails with "text
        // file busy" (ETXTBSY). It clears within milliseconds; try again a few times.
        let mut attempts = 0;
        let mut child = loop {
            match command.spawn() {
                Ok(child) => break child,
                Err(e) if e.raw_os_error() == Some(ETXTBSY) && attempts < 20 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => {
                    return Err(RuntimeError::Start {
                        chaincode: spec.name.clone(),
                        reason: format!("{}: {e}", path.display()),
                    });
                }
            }
        };
        let pid = child.id().unwrap_or_default();
        let logs = LogTail::default();
        let tag = format!("{}:{}", spec.name, spec.version);
        let mut forwarders = Vec::new();
        if let Some(out) = child.stdout.take() {
            forwarders.push(forward(out, tag.clone(), logs.clone()));
        }
        if let Some(err) = child.stderr.take() {
            forwarders.push(forward(err, tag.clone(), logs.clone()));
        }
        // One task owns the child: it reports the exit, or kills the child when asked.
        let (kill, killed) = oneshot::channel::<()>();
        let (exit_tx, exit) = Exit::channel();
        let exit_tag = tag.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = killed => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            // Let the forwarders drain what the process printed before it is reported gone.
            for f in forwarders {
                let _ = f.await;
            }
            let text = match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            tracing::info!(chaincode = %exit_tag, pid, status = %text, "chaincode process ended");
            let _ = exit_tx.send(Some(text));
        });
        tracing::info!(chaincode = %tag, pid, "chaincode process started");
        Ok(Box::new(ProcessInstance {
            pid,
            kill: Mutex::new(Some(kill)),
            exit,
            logs,
        }))
    }
}

fn forward<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
    tag: String,
    logs: LogTail,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "weft::chaincode", chaincode = %tag, "{line}");
            logs.push(line);
        }
    })
}

struct ProcessInstance {
    pid: u32,
    kill: Mutex<Option<oneshot::Sender<()>>>,
    exit: Exit,
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

    async fn exited(&self) -> String {
        self.exit.wait().await
    }

    async fn stop(&self) {
        if let Some(kill) = self.kill.lock().await.take() {
            let _ = kill.send(());
        }
        let _ = self.exited().await;
    }
}
