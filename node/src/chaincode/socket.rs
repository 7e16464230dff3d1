//! The peer's chaincode socket: a unix socket alone in a directory of its own, through which
//! chaincode containers (which have no network) reach their peer. Only that directory is
//! mounted into a container, read-only; the socket itself is open to any local user, because
//! a chaincode runs as an unprivileged user and a registration still needs the launch token
//! the peer issued.

use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use super::docker::SOCKET_FILE;

/// Longest path a unix socket address holds (108 bytes with the terminating zero).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "the chaincode socket path {0} is longer than {MAX_SOCKET_PATH} bytes: choose a shorter node.data_dir"
    )]
    TooLong(PathBuf),
    #[error("cannot create the chaincode socket {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "the chaincode socket directory {dir} holds {entry:?}: it is mounted into every chaincode container and must hold nothing but {SOCKET_FILE}: choose another node.data_dir (or chaincode.docker_socket_source)"
    )]
    NotAlone { dir: PathBuf, entry: String },
}

/// Fails unless `dir` holds nothing but the chaincode socket (or does not exist yet).
pub fn check_alone(dir: &Path) -> Result<(), SocketError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name != SOCKET_FILE {
            return Err(SocketError::NotAlone {
                dir: dir.to_path_buf(),
                entry: name,
            });
        }
    }
    Ok(())
}

/// The socket directory of a peer whose data lives in `data_dir`.
pub fn socket_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("run")
}

/// Binds the chaincode socket in `dir`, replacing one a previous run left behind.
pub fn bind(dir: &Path) -> Result<UnixListener, SocketError> {
    let path = dir.join(SOCKET_FILE);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(SocketError::TooLong(path));
    }
    let io = |reason: std::io::Error| SocketError::Io {
        path: path.clone(),
        reason: reason.to_string(),
    };
    check_alone(dir)?;
    std::fs::create_dir_all(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(&path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_replacing_a_stale_socket_and_accepts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sockets = socket_dir(dir.path());
        let first = bind(&sockets).expect("bind");
        drop(first);
        // The file a previous run left behind is replaced, not an error.
        let listener = bind(&sockets).expect("bind again");
        let path = sockets.join(SOCKET_FILE);
        let connect = tokio::net::UnixStream::connect(&path);
        let (accepted, connected) = tokio::join!(listener.accept(), connect);
        accepted.expect("accept");
        connected.expect("connect");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("socket")
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o777,
                "an unprivileged chaincode user may connect"
            );
        }
    }

    #[test]
    fn a_directory_holding_anything_else_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("docker.sock"), b"").expect("a stray file");
        let Err(e) = bind(dir.path()) else {
            panic!("the directory is mounted into containers: it must hold only the socket");
        };
        assert!(matches!(e, SocketError::NotAlone { .. }), "{e}");
        assert!(e.to_string().contains("docker.sock"), "{e}");
    }

    #[test]
    fn a_path_too_long_for_a_socket_is_named() {
        let long = PathBuf::from(format!("/tmp/{}", "d".repeat(120)));
        let Err(e) = bind(&long) else {
            panic!("no socket fits there");
        };
        assert!(matches!(e, SocketError::TooLong(_)), "{e}");
        assert!(e.to_string().contains("node.data_dir"), "{e}");
    }
}
