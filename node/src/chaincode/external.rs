//! The external runtime (chaincode as a service): the chaincode already runs somewhere and
//! listens; the peer dials the address configured for it, sends the launch token in the
//! request metadata, and from then on the stream is the same as with a chaincode the peer
//! started. "Launching" is connecting; "stopping" is closing the stream. The service's logs
//! stay with the service.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::pb;
use weft_proto::pb::chaincode_service_client::ChaincodeServiceClient;

use super::runtime::{ChaincodeRuntime, Exit, Instance, LaunchSpec, RuntimeError, RuntimeKind};

/// How long dialling a chaincode service and opening its stream may take.
const ATTACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
use super::session::{self, Registrations};

/// Parses `name=host:port,name=host:port` (the `chaincode.external` setting).
pub fn parse_addresses(text: &str) -> Result<HashMap<String, String>, String> {
    let mut addresses = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, address)) = entry.split_once('=') else {
            return Err(format!(
                "{entry:?} is not name=host:port, for example asset-transfer=127.0.0.1:9999"
            ));
        };
        let (name, address) = (name.trim(), address.trim());
        if name.is_empty() || address.is_empty() {
            return Err(format!("{entry:?} is not name=host:port"));
        }
        if addresses
            .insert(name.to_string(), address.to_string())
            .is_some()
        {
            return Err(format!("chaincode {name} is named twice"));
        }
    }
    Ok(addresses)
}

pub struct ExternalRuntime {
    addresses: HashMap<String, String>,
    registrations: Arc<Registrations>,
    peer_id: String,
}

impl ExternalRuntime {
    pub fn new(
        addresses: HashMap<String, String>,
        registrations: Arc<Registrations>,
        peer_id: &str,
    ) -> ExternalRuntime {
        ExternalRuntime {
            addresses,
            registrations,
            peer_id: peer_id.to_string(),
        }
    }
}

type Attached = (
    mpsc::Sender<pb::PeerMessage>,
    tonic::Streaming<pb::ChaincodeMessage>,
);

impl ExternalRuntime {
    /// Dials the service and opens its stream, presenting the launch token.
    async fn attach(&self, spec: &LaunchSpec, address: &str) -> Result<Attached, String> {
        let channel = weft_proto::client::connect_channel(address)
            .await
            .map_err(|e| format!("the chaincode service does not answer: {e}"))?;
        let mut client = ChaincodeServiceClient::new(channel)
            .max_decoding_message_size(weft_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(weft_proto::MAX_MESSAGE_BYTES);
        let (to_chaincode, requests) = mpsc::channel::<pb::PeerMessage>(256);
        let mut request = tonic::Request::new(ReceiverStream::new(requests));
        let token = spec
            .launch_token
            .parse()
            .map_err(|_| "the launch token is not valid metadata".to_string())?;
        request
            .metadata_mut()
            .insert(weft_proto::LAUNCH_TOKEN_METADATA, token);
        let inbound = client
            .attach(request)
            .await
            .map_err(|status| {
                format!(
                    "the chaincode service at {address} refused the stream: {}",
                    status.message()
                )
            })?
            .into_inner();
        Ok((to_chaincode, inbound))
    }
}

#[async_trait]
impl ChaincodeRuntime for ExternalRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::External
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Instance>, RuntimeError> {
        let start_error = |reason: String| RuntimeError::Start {
            chaincode: spec.name.clone(),
            reason,
        };
        let address = self.addresses.get(&spec.name).ok_or_else(|| {
            start_error(format!(
                "no address for it: add {}=host:port to chaincode.external (WEFT_CHAINCODE_EXTERNAL)",
                spec.name
            ))
        })?;
        let attached = tokio::time::timeout(ATTACH_TIMEOUT, self.attach(spec, address)).await;
        let (to_chaincode, inbound) = match attached {
            Ok(result) => result.map_err(start_error)?,
            Err(_) => {
                return Err(start_error(format!(
                    "the chaincode service at {address} did not open a stream within {ATTACH_TIMEOUT:?}"
                )));
            }
        };
        // Closing is the peer's call: stop() ends the inbound half here, which drops the
        // connection, whatever the service does.
        let (close, closed) = oneshot::channel::<()>();
        let inbound = Box::pin(futures::StreamExt::take_until(inbound, closed));
        let (exit_tx, exit) = Exit::channel();
        let registrations = Arc::clone(&self.registrations);
        let peer_id = self.peer_id.clone();
        let tag = format!("{}:{}", spec.name, spec.version);
        let shown = address.clone();
        // Registration runs here as for a dialling chaincode: the manager waits for it (with
        // its launch timeout) and learns of a failure through `exited`.
        let pump = tokio::spawn(async move {
            let ended = match session::accept(&registrations, &peer_id, inbound).await {
                Ok(mut outbound) => {
                    while let Some(message) = outbound.next().await {
                        let Ok(message) = message else { break };
                        if to_chaincode.send(message).await.is_err() {
                            break;
                        }
                    }
                    "the stream ended".to_string()
                }
                Err(status) => format!("registration refused: {}", status.message()),
            };
            tracing::info!(chaincode = %tag, address = %shown, status = %ended, "chaincode service stream ended");
            let _ = exit_tx.send(Some(ended));
        });
        tracing::info!(chaincode = %spec.name, version = %spec.version, %address, "connected to the chaincode service");
        Ok(Box::new(ExternalInstance {
            address: address.clone(),
            exit,
            close: Mutex::new(Some(close)),
            pump,
        }))
    }
}

struct ExternalInstance {
    address: String,
    exit: Exit,
    close: Mutex<Option<oneshot::Sender<()>>>,
    pump: tokio::task::JoinHandle<()>,
}

#[async_trait]
impl Instance for ExternalInstance {
    fn id(&self) -> String {
        format!("service at {}", self.address)
    }

    fn recent_logs(&self) -> Vec<String> {
        vec![format!(
            "(the service at {} keeps its own logs)",
            self.address
        )]
    }

    async fn exited(&self) -> String {
        self.exit.wait().await
    }

    /// Ends both halves of the stream: the service sees it closed, and the peer stops
    /// reading whatever the service still sends.
    async fn stop(&self) {
        if let Some(close) = self.close.lock().await.take() {
            let _ = close.send(());
        }
        self.pump.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_by_name() {
        let parsed = parse_addresses("asset-transfer=127.0.0.1:9999, probe = 10.0.0.2:7000")
            .expect("two entries");
        assert_eq!(parsed["asset-transfer"], "127.0.0.1:9999");
        assert_eq!(parsed["probe"], "10.0.0.2:7000");
        assert!(parse_addresses("").expect("none").is_empty());
        let err = parse_addresses("asset-transfer").expect_err("no address");
        assert!(err.contains("name=host:port"), "{err}");
        let err = parse_addresses("a=1.2.3.4:1,a=1.2.3.4:2").expect_err("twice");
        assert!(err.contains("twice"), "{err}");
    }
}
