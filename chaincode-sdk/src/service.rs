//! Chaincode as a service: the chaincode listens and its peer dials it (the peer's `external`
//! runtime), for chaincode that runs where the peer cannot start it. Each connection is one
//! stream with exactly the messages of a peer-started chaincode; the chaincode opens it with
//! Register, carrying the launch token the peer sent in the request metadata.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_proto::pb;
use weft_proto::pb::chaincode_message::Kind as Outgoing;
use weft_proto::pb::chaincode_service_server::{ChaincodeService, ChaincodeServiceServer};

use crate::shim::{self, OUTBOUND_CAPACITY, ShimConfig};
use crate::{Chaincode, ReadHint};

/// Where a chaincode serves and who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub listen: SocketAddr,
    pub name: String,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: SocketAddr, reason: String },
    #[error("the chaincode service stopped: {0}")]
    Serve(String),
}

struct Service<C> {
    chaincode: Arc<C>,
    config: ServiceConfig,
}

type AttachStream = Pin<Box<dyn Stream<Item = Result<pb::ChaincodeMessage, Status>> + Send>>;

#[tonic::async_trait]
impl<C: Chaincode> ChaincodeService for Service<C> {
    type AttachStream = AttachStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::PeerMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let token = request
            .metadata()
            .get(weft_proto::LAUNCH_TOKEN_METADATA)
            .and_then(|value| value.to_str().ok())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "no {} metadata: only a peer dials a chaincode service",
                    weft_proto::LAUNCH_TOKEN_METADATA
                ))
            })?
            .to_string();
        let inbound = request.into_inner();
        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let register = pb::ChaincodeMessage {
            kind: Some(Outgoing::Register(pb::Register {
                name: self.config.name.clone(),
                version: self.config.version.clone(),
                launch_token: token.clone(),
                read_hints: self
                    .chaincode
                    .read_hints()
                    .iter()
                    .map(ReadHint::to_pb)
                    .collect(),
            })),
        };
        outbound
            .send(register)
            .await
            .map_err(|_| Status::internal("the stream closed before Register"))?;
        let shim_config = ShimConfig::new(
            "(the peer dialled)",
            &self.config.name,
            &self.config.version,
            &token,
        );
        let chaincode = Arc::clone(&self.chaincode);
        tokio::spawn(async move {
            match shim::serve_stream(chaincode, &shim_config, outbound, inbound).await {
                Ok(()) => tracing::info!("the peer closed the stream"),
                Err(e) => tracing::warn!(error = %e, "the stream with the peer ended"),
            }
        });
        let stream = ReceiverStream::new(outbound_rx).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Serves `chaincode` on `config.listen` until the process ends; every peer connection is a
/// stream of its own.
pub async fn serve_as_service<C: Chaincode>(
    chaincode: C,
    config: ServiceConfig,
) -> Result<(), ServiceError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServiceError::Listen {
            address: config.listen,
            reason: e.to_string(),
        })?;
    let address = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(chaincode = %config.name, version = %config.version, %address, "serving chaincode as a service");
    let service = Service {
        chaincode: Arc::new(chaincode),
        config,
    };
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            ChaincodeServiceServer::new(service)
                .max_decoding_message_size(weft_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(weft_proto::MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await
        .map_err(|e| ServiceError::Serve(e.to_string()))
}
