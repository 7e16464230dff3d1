//! The `weft.v1.Admin` service: package installation (admin-signed), chaincode listing and the
//! node's status.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tonic::{Request, Response, Status};
use weft_proto::signing::install_signing_bytes;
use weft_proto::{Role, pb};

use crate::node::Shared;

pub struct AdminService {
    shared: Arc<Shared>,
}

impl AdminService {
    pub fn new(shared: Arc<Shared>) -> Self {
        AdminService { shared }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn install_chaincode(
        &self,
        request: Request<pb::InstallChaincodeRequest>,
    ) -> Result<Response<pb::InstallChaincodeResponse>, Status> {
        let request = request.into_inner();
        let identity = self
            .shared
            .admission
            .identity(&request.signer)
            .map_err(|e| {
                Status::unauthenticated(format!("the signer's certificate is not accepted: {e}"))
            })?;
        if identity.role != Role::Admin {
            return Err(Status::permission_denied(format!(
                "{} has the role {}; only an admin may install chaincode",
                identity.name, identity.role
            )));
        }
        if !identity.verify(&install_signing_bytes(&request.package), &request.signature) {
            return Err(Status::unauthenticated(
                "the install signature does not verify against the signer's certificate",
            ));
        }
        let chaincodes = self.shared.executor.chaincodes().clone();
        let (manifest, hash) =
            tokio::task::spawn_blocking(move || chaincodes.install(&request.package))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::InstallChaincodeResponse {
            package_hash: hash,
            name: manifest.name,
            version: manifest.version,
        }))
    }

    async fn list_chaincodes(
        &self,
        _request: Request<pb::ListChaincodesRequest>,
    ) -> Result<Response<pb::ListChaincodesResponse>, Status> {
        let executor = &self.shared.executor;
        let running = executor.chaincodes().list().await;
        let runtime = executor.chaincodes().runtime_kind().to_string();
        let chaincodes = executor
            .all_deployed()
            .into_iter()
            .map(|d| {
                let state = running
                    .iter()
                    .find(|r| r.definition == d)
                    .map(|r| r.state.clone())
                    .unwrap_or_else(|| "stopped".into());
                pb::ChaincodeInfo {
                    name: d.name,
                    version: d.version,
                    package_hash: d.package_hash,
                    state,
                    runtime: runtime.clone(),
                }
            })
            .collect();
        Ok(Response::new(pb::ListChaincodesResponse { chaincodes }))
    }

    async fn node_status(
        &self,
        _request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        let tip = self.shared.ledger.tip();
        // Solo: this node orders alone, so it is the primary and every block is final.
        let (view, primary, sequence, last_stable_checkpoint) = match &self.shared.consensus {
            Some(status) => {
                let status = status.borrow().clone();
                let primary = self
                    .shared
                    .genesis
                    .validators
                    .get(status.primary as usize)
                    .map(|v| v.id.clone())
                    .unwrap_or_default();
                (
                    status.view,
                    primary,
                    status.last_executed,
                    status.stable_checkpoint,
                )
            }
            None if self.shared.role == crate::node::NodeRole::Peer => (
                0,
                String::new(),
                tip.height.saturating_sub(1),
                self.shared.certificates.last_certified(),
            ),
            None => (
                0,
                self.shared.node_id.clone(),
                tip.height.saturating_sub(1),
                tip.height.saturating_sub(1),
            ),
        };
        Ok(Response::new(pb::NodeStatusResponse {
            node_id: self.shared.node_id.clone(),
            role: self.shared.role.as_str().into(),
            chain_id: self.shared.genesis.chain_id.clone(),
            height: tip.height,
            current_hash: Bytes::copy_from_slice(&tip.hash.0),
            view,
            primary,
            sequence,
            last_stable_checkpoint,
            pending: self.shared.metrics.pending.load(Ordering::Relaxed),
            certified_height: self.shared.certificates.last_certified(),
        }))
    }
}
