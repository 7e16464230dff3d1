//! Reaching a Docker engine: a unix socket, or tcp (with TLS client certificates when a
//! directory of them is given). Shared by the peer's Docker chaincode runtime and by `weft
//! cluster` for docker locations. The engine may be older than this client (Debian's speaks
//! API 1.41): the version is negotiated before anything else is asked.

use std::path::Path;
use std::time::Duration;

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion};
use futures::StreamExt;

pub use crate::blueprint::EngineTls;

impl EngineTls {
    /// The files as `DOCKER_CERT_PATH` holds them: `ca.pem`, `cert.pem` and `key.pem` in `dir`.
    pub fn in_directory(dir: &Path) -> EngineTls {
        EngineTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// How long the engine has to answer the first ping.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per request; image builds and container stops can take a while.
const API_TIMEOUT_SECS: u64 = 120;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

/// Connects to the engine at `endpoint` (`unix:///path`, `/path`, `tcp://host:port` or
/// `https://host:port`), with TLS client material when given, agrees on an API version and
/// checks that the engine answers.
pub async fn connect(endpoint: &str, tls: Option<&EngineTls>) -> Result<Docker, EngineError> {
    let version = bollard::API_DEFAULT_VERSION;
    let docker = if let Some(path) = endpoint.strip_prefix("unix://") {
        Docker::connect_with_unix(path, API_TIMEOUT_SECS, version)
    } else if endpoint.starts_with("tcp://") || endpoint.starts_with("https://") {
        match tls {
            Some(tls) => Docker::connect_with_ssl(
                endpoint,
                &tls.key,
                &tls.cert,
                &tls.ca,
                API_TIMEOUT_SECS,
                version,
            ),
            None if endpoint.starts_with("https://") => {
                return Err(EngineError(format!(
                    "{endpoint} needs TLS: give a directory holding ca.pem, cert.pem and key.pem"
                )));
            }
            None => {
                let loopback = ["tcp://127.", "tcp://localhost:", "tcp://[::1]:"];
                if !loopback.iter().any(|prefix| endpoint.starts_with(prefix)) {
                    tracing::warn!(%endpoint, "the Docker engine is reached over plain tcp: anyone on the path controls it; give it TLS client certificates");
                }
                Docker::connect_with_http(endpoint, API_TIMEOUT_SECS, version)
            }
        }
    } else if endpoint.starts_with('/') {
        Docker::connect_with_unix(endpoint, API_TIMEOUT_SECS, version)
    } else {
        return Err(EngineError(format!(
            "{endpoint:?} is not a Docker endpoint: use unix:///path/to/docker.sock or tcp://host:port"
        )));
    }
    .map_err(|e| EngineError(format!("no Docker engine at {endpoint}: {e}")))?;
    let answered = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let docker = docker.negotiate_version().await?;
        docker.ping().await?;
        Ok::<_, bollard::errors::Error>(docker)
    })
    .await;
    match answered {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(EngineError(format!(
            "the Docker engine at {endpoint} does not answer: {e}"
        ))),
        Err(_) => Err(EngineError(format!(
            "the Docker engine at {endpoint} did not answer within {CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// Builds image `tag` from a tar build context with the classic builder (no BuildKit: the
/// engine may not have it), labelled with `labels`. Nothing is pulled: the context's
/// Dockerfile must start `FROM scratch`.
pub async fn build_image(
    docker: &Docker,
    tag: &str,
    context: Vec<u8>,
    labels: &HashMap<&str, &str>,
) -> Result<(), EngineError> {
    let options = BuildImageOptionsBuilder::default()
        .t(tag)
        .q(true)
        .rm(true)
        .forcerm(true)
        .labels(labels)
        .version(BuilderVersion::BuilderV1)
        .build();
    let mut build = docker.build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    while let Some(step) = build.next().await {
        let step = step.map_err(|e| EngineError(format!("building image {tag}: {e}")))?;
        if let Some(detail) = step.error_detail {
            return Err(EngineError(format!(
                "building image {tag}: {}",
                detail.message.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// A tar archive of `(path, mode, owner uid and gid, bytes)` entries: a path ending in `/`
/// is a directory, any other a file. Parent directories not listed are implied.
pub fn tar_of(files: &[(&str, u32, u64, &[u8])]) -> Result<Vec<u8>, std::io::Error> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, mode, owner, bytes) in files {
        let mut header = tar::Header::new_gnu();
        if path.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
        }
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_uid(*owner);
        header.set_gid(*owner);
        header.set_cksum();
        tar.append_data(&mut header, path, *bytes)?;
    }
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endpoint_that_is_not_docker_is_refused_with_the_accepted_forms() {
        let Err(e) = connect("ftp://example", None).await else {
            panic!("ftp is not a Docker endpoint");
        };
        assert!(e.0.contains("unix://") && e.0.contains("tcp://"), "{e}");
    }

    #[tokio::test]
    async fn https_without_certificates_is_refused_before_dialling() {
        let Err(e) = connect("https://127.0.0.1:1", None).await else {
            panic!("https needs TLS material");
        };
        assert!(e.0.contains("ca.pem"), "{e}");
    }

    #[tokio::test]
    async fn a_missing_engine_is_named() {
        let Err(e) = connect("unix:///nonexistent/docker.sock", None).await else {
            panic!("no engine listens there");
        };
        assert!(e.0.contains("/nonexistent/docker.sock"), "{e}");
    }
}
