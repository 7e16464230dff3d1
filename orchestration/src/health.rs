//! Health as the nodes report it on their operations port: `/readyz` (serving, chaincode
//! started), `/healthz` (serving, committer running) and `/metrics`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GET {path} on {address}: {reason}")]
pub struct HttpError {
    pub address: String,
    pub path: String,
    pub reason: String,
}

/// `GET path` on `address` (host:port): the status code and the body.
pub async fn http_get(address: &str, path: &str) -> Result<(u16, String), HttpError> {
    let error = |reason: String| HttpError {
        address: address.to_string(),
        path: path.to_string(),
        reason,
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| error(format!("no answer within {REQUEST_TIMEOUT:?}")))?
        .map_err(|e| error(e.to_string()))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| error(format!("no HTTP header in {response:?}")))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| error(format!("bad status line in {head:?}")))?;
    Ok((code, body.to_string()))
}

/// A node's health as its operations port tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Serving and its chaincode started.
    Ready,
    /// Serving, not ready yet (starting chaincode, catching up).
    Starting,
    /// Its committer stopped (divergence, a storage failure): see its log.
    Failed,
    /// Nothing answers.
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ready => "ready",
            Health::Starting => "starting",
            Health::Failed => "failed",
            Health::Down => "down",
        }
    }
}

/// The health of the node whose operations port is `address`.
pub async fn health(address: &str) -> Health {
    match http_get(address, "/readyz").await {
        Ok((200, _)) => Health::Ready,
        Ok(_) => match http_get(address, "/healthz").await {
            Ok((200, _)) => Health::Starting,
            Ok(_) => Health::Failed,
            Err(_) => Health::Down,
        },
        Err(_) => Health::Down,
    }
}

/// The value of one Prometheus series (`name` or `name{labels}`) in `metrics`; 0 if absent.
pub fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_listening_is_down() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        drop(listener);
        assert_eq!(health(&address).await, Health::Down);
    }

    #[tokio::test]
    async fn a_server_that_is_not_ready_but_healthy_is_starting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let n = stream.read(&mut buffer).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buffer[..n]).to_string();
                let status = if request.starts_with("GET /readyz") {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = stream
                    .write_all(
                        format!("HTTP/1.1 {status}\r\nContent-Length: 3\r\n\r\nok\n").as_bytes(),
                    )
                    .await;
            }
        });
        assert_eq!(health(&address).await, Health::Starting);
    }

    #[test]
    fn a_series_is_read_by_its_full_name() {
        let text = "# HELP x\nweft_height 12\nweft_tx_total{status=\"ok\"} 40\n";
        assert_eq!(metric(text, "weft_height"), 12.0);
        assert_eq!(metric(text, "weft_tx_total{status=\"ok\"}"), 40.0);
        assert_eq!(metric(text, "weft_missing"), 0.0);
    }
}
