//! A typed client for applications: connect to a peer with an identity, then submit, wait for
//! commits, query, read blocks and transactions, and follow streams. Every call that touches
//! chaincode is signed with the client's identity.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::certificate::Committee;
use crate::identity::Signer;
use crate::pb;
use crate::pb::admin_client::AdminClient;
use crate::pb::client_client::ClientClient;
use crate::signing::{TxId, install_signing_bytes};
use crate::tx::{self, ChaincodeDefinition, LIFECYCLE_CHAINCODE, LIFECYCLE_DEPLOY, LIFECYCLE_LIST};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the peer at {address}: {reason} (is `weft node start` running there?)")]
    Connect { address: String, reason: String },
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("the peer answered something this client cannot read: {0}")]
    Malformed(String),
    #[error(
        "transaction {tx_id} was committed in block {block} but failed ({status:?}): {message}"
    )]
    TxFailed {
        tx_id: TxId,
        block: u64,
        status: pb::TxStatus,
        message: String,
    },
    #[error(
        "block {number} is not certified yet: no commit certificate at or after it up to block {tip} on this peer (validators certify every checkpoint block; try again in a moment)"
    )]
    NotYetCertified { number: u64, tip: u64 },
    #[error(
        "the peer served blocks that do not prove block {number}: {reason}; do not trust this peer"
    )]
    Unverified { number: u64, reason: String },
}

/// One transaction's answer within a `SubmitBatch`: its id, or the refusal as a status.
pub fn submit_outcome(
    outcome: pb::SubmitOutcome,
) -> Result<Result<TxId, tonic::Status>, ClientError> {
    let code = tonic::Code::from_i32(outcome.code);
    if code == tonic::Code::Ok {
        let id = TxId::from_slice(&outcome.tx_id).ok_or_else(|| {
            ClientError::Malformed("a SubmitBatch outcome's tx_id is not 32 bytes".into())
        })?;
        return Ok(Ok(id));
    }
    Ok(Err(tonic::Status::new(code, outcome.message)))
}

/// The most blocks [`WeftClient::certified_block`] walks from a block to the certificate that
/// covers it (validators certify every checkpoint block, tens of blocks apart).
pub const MAX_CERTIFICATE_WALK: u64 = 1_000;

/// An application's connection to one peer, acting as one identity.
#[derive(Clone)]
pub struct WeftClient {
    client: ClientClient<Channel>,
    admin: AdminClient<Channel>,
    signer: Signer,
    chain_id: String,
}

/// The committed outcome of a transaction that succeeded.
#[derive(Debug, Clone)]
pub struct Committed {
    pub tx_id: TxId,
    pub block_number: u64,
    pub payload: Vec<u8>,
}

impl WeftClient {
    /// Connects to `address` (host:port, or a URL) as `signer` on chain `chain_id`.
    pub async fn connect(
        address: &str,
        signer: Signer,
        chain_id: &str,
    ) -> Result<WeftClient, ClientError> {
        let channel = connect_channel(address).await?;
        Ok(WeftClient::from_channel(channel, signer, chain_id))
    }

    /// Uses an existing channel.
    pub fn from_channel(channel: Channel, signer: Signer, chain_id: &str) -> WeftClient {
        let limit = crate::MAX_MESSAGE_BYTES;
        WeftClient {
            client: ClientClient::new(channel.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            admin: AdminClient::new(channel)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            signer,
            chain_id: chain_id.to_string(),
        }
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The same connection acting as another identity.
    pub fn with_signer(&self, signer: Signer) -> WeftClient {
        WeftClient {
            signer,
            ..self.clone()
        }
    }

    /// Signs a transaction with this client's identity.
    pub fn sign(&self, chaincode: &str, function: &str, args: &[Vec<u8>]) -> (TxId, pb::SignedTx) {
        tx::sign_transaction(&self.signer, &self.chain_id, chaincode, function, args)
    }

    /// Submits a transaction and returns once the peer accepted it.
    pub async fn submit(
        &self,
        chaincode: &str,
        function: &str,
        args: &[Vec<u8>],
    ) -> Result<TxId, ClientError> {
        let (id, signed) = self.sign(chaincode, function, args);
        self.client.clone().submit(signed).await?;
        Ok(id)
    }

    /// Submits signed transactions in one call (`SubmitBatch`); one answer per transaction, in
    /// order: its id when accepted, else the refusal Submit would have given.
    pub async fn submit_batch(
        &self,
        signed: Vec<pb::SignedTx>,
    ) -> Result<Vec<Result<TxId, tonic::Status>>, ClientError> {
        let count = signed.len();
        let response = self
            .client
            .clone()
            .submit_batch(pb::SubmitBatchRequest {
                transactions: signed,
            })
            .await?
            .into_inner();
        if response.outcomes.len() != count {
            return Err(ClientError::Malformed(format!(
                "SubmitBatch answered {} outcomes for {count} transactions",
                response.outcomes.len()
            )));
        }
        response.outcomes.into_iter().map(submit_outcome).collect()
    }

    /// Submits a signed transaction and waits for its commit; returns the commit status
    /// whatever it is.
    pub async fn submit_signed_and_wait(
        &self,
        signed: pb::SignedTx,
        timeout: Duration,
    ) -> Result<pb::CommitStatus, ClientError> {
        let request = pb::SubmitAndWaitRequest {
            transaction: Some(signed),
            timeout_ms: timeout.as_millis() as u64,
        };
        Ok(self
            .client
            .clone()
            .submit_and_wait(request)
            .await?
            .into_inner())
    }

    /// Submits a transaction, waits for its commit, and fails unless it is VALID.
    pub async fn invoke(
        &self,
        chaincode: &str,
        function: &str,
        args: &[Vec<u8>],
    ) -> Result<Committed, ClientError> {
        let (tx_id, signed) = self.sign(chaincode, function, args);
        let status = self
            .submit_signed_and_wait(signed, Duration::from_secs(30))
            .await?;
        let code = pb::TxStatus::try_from(status.status).unwrap_or(pb::TxStatus::Unspecified);
        if code != pb::TxStatus::Valid {
            return Err(ClientError::TxFailed {
                tx_id,
                block: status.block_number,
                status: code,
                message: status.message,
            });
        }
        Ok(Committed {
            tx_id,
            block_number: status.block_number,
            payload: status.payload.to_vec(),
        })
    }

    /// Runs a read-only chaincode call.
    pub async fn query(
        &self,
        chaincode: &str,
        function: &str,
        args: &[Vec<u8>],
    ) -> Result<Vec<u8>, ClientError> {
        let (_, signed) = self.sign(chaincode, function, args);
        Ok(self
            .client
            .clone()
            .query(signed)
            .await?
            .into_inner()
            .payload
            .to_vec())
    }

    /// Installs a chaincode package on this peer (the signer must be an admin).
    pub async fn install(
        &self,
        package: Vec<u8>,
    ) -> Result<pb::InstallChaincodeResponse, ClientError> {
        let signature = self.signer.sign(&install_signing_bytes(&package));
        let request = pb::InstallChaincodeRequest {
            package: package.into(),
            signer: self.signer.identity().certificate.clone().into(),
            signature: signature.to_vec().into(),
        };
        Ok(self
            .admin
            .clone()
            .install_chaincode(request)
            .await?
            .into_inner())
    }

    /// Installs a package and deploys it (or upgrades to it) network-wide.
    pub async fn deploy(
        &self,
        package: Vec<u8>,
        init_args: &[Vec<u8>],
    ) -> Result<Committed, ClientError> {
        let installed = self.install(package).await?;
        let args = tx::deploy_args(
            &installed.name,
            &installed.version,
            &installed.package_hash,
            init_args,
        );
        self.invoke(LIFECYCLE_CHAINCODE, LIFECYCLE_DEPLOY, &args)
            .await
    }

    /// The chaincode deployed on the network, as this peer's committed state records it.
    pub async fn deployed(&self) -> Result<Vec<ChaincodeDefinition>, ClientError> {
        let payload = self.query(LIFECYCLE_CHAINCODE, LIFECYCLE_LIST, &[]).await?;
        serde_json::from_slice(&payload).map_err(|e| ClientError::Malformed(e.to_string()))
    }

    pub async fn chain_info(&self) -> Result<pb::ChainInfo, ClientError> {
        Ok(self
            .client
            .clone()
            .get_chain_info(pb::GetChainInfoRequest {})
            .await?
            .into_inner())
    }

    pub async fn block(&self, number: u64) -> Result<pb::Block, ClientError> {
        let request = pb::GetBlockRequest {
            by: Some(pb::get_block_request::By::Number(number)),
        };
        Ok(self.client.clone().get_block(request).await?.into_inner())
    }

    /// Block `number`, checked here rather than taken on this peer's word: the blocks from it
    /// to the next one carrying a commit certificate are fetched and checked by
    /// [`Committee::verify_run`] (contents hash to headers, headers chain, 2f+1 genesis
    /// validators signed the last). A block after the last certificate is refused as not yet
    /// certified.
    pub async fn certified_block(
        &self,
        number: u64,
        committee: &Committee,
    ) -> Result<pb::Block, ClientError> {
        let mut run = vec![self.block(number).await?];
        while run.last().is_some_and(|block| block.certificate.is_none()) {
            let next = number + run.len() as u64;
            if next - number > MAX_CERTIFICATE_WALK {
                return Err(ClientError::NotYetCertified {
                    number,
                    tip: next - 1,
                });
            }
            match self.block(next).await {
                Ok(block) => run.push(block),
                Err(ClientError::Rpc(status)) if status.code() == tonic::Code::NotFound => {
                    return Err(ClientError::NotYetCertified {
                        number,
                        tip: next - 1,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        committee
            .verify_run(number, &run)
            .map_err(|reason| ClientError::Unverified {
                number,
                reason: reason.to_string(),
            })?;
        Ok(run.swap_remove(0))
    }

    pub async fn transaction(&self, tx_id: TxId) -> Result<pb::TransactionInfo, ClientError> {
        let request = pb::GetTransactionRequest {
            tx_id: tx_id.0.to_vec().into(),
        };
        Ok(self
            .client
            .clone()
            .get_transaction(request)
            .await?
            .into_inner())
    }

    pub async fn node_status(&self) -> Result<pb::NodeStatusResponse, ClientError> {
        Ok(self
            .admin
            .clone()
            .node_status(pb::NodeStatusRequest {})
            .await?
            .into_inner())
    }

    /// The raw generated client, for streams and calls this type does not wrap.
    pub fn raw(&self) -> ClientClient<Channel> {
        self.client.clone()
    }

    pub fn raw_admin(&self) -> AdminClient<Channel> {
        self.admin.clone()
    }
}

/// The prefix of a unix-socket address (`unix:/run/weft/chaincode.sock`).
pub const UNIX_PREFIX: &str = "unix:";

/// Opens a gRPC channel to `address`: host:port, http://host:port, or `unix:PATH` for a unix
/// socket (how a chaincode container with no network reaches its peer).
pub async fn connect_channel(address: &str) -> Result<Channel, ClientError> {
    let connect_error = |reason: String| ClientError::Connect {
        address: address.to_string(),
        reason,
    };
    if let Some(path) = address.strip_prefix(UNIX_PREFIX) {
        let path = std::path::PathBuf::from(path);
        // The URI is required by the API but unused: the connector ignores it.
        let endpoint =
            Endpoint::from_static("http://unix.socket").connect_timeout(Duration::from_secs(5));
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        return endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| connect_error(format!("{e}: {}", source_chain(&e))));
    }
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| connect_error(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    endpoint
        .connect()
        .await
        .map_err(|e| connect_error(format!("{e}: {}", source_chain(&e))))
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut current = error.source();
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    parts.join(": ")
}
