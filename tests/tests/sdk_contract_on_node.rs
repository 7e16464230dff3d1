//! The chaincode SDK's contract suite, run end to end: the probe chaincode as a real process
//! behind the gRPC shim, driven through an in-process validating node (memory storage) by the
//! typed client. The same suite runs against `MemoryWorld` and a fake peer in chaincode-sdk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chaincode_sdk::contract::{Call, ECHO, Harness, run_contract_suite};
use chaincode_sdk::{Creator, Event, async_trait};
use weft_node::node::NodeHandle;
use weft_node::storage::MemoryStore;
use weft_proto::genesis::{ConsensusParams, Genesis, OrganizationInfo, ValidatorInfo};
use weft_proto::tx::string_args;
use weft_proto::{CertificateAuthority, ClientError, Role, Signer, TxId, WeftClient, pb};

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

fn probe_binary() -> PathBuf {
    let path = target_dir().join("examples").join("probe");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p weft-node -p chaincode-sdk --bins --examples` first",
        path.display()
    );
    path
}

struct NodeHarness {
    client: WeftClient,
    creator: Creator,
    deployments: u32,
    last_tx: Option<TxId>,
}

impl NodeHarness {
    async fn result_of(
        &mut self,
        tx_id: TxId,
        outcome: Result<pb::CommitStatus, ClientError>,
    ) -> Result<Vec<u8>, String> {
        self.last_tx = Some(tx_id);
        let status = outcome.map_err(|e| format!("rpc failed: {e}"))?;
        if status.status == pb::TxStatus::Valid as i32 {
            Ok(status.payload.to_vec())
        } else {
            Err(status.message)
        }
    }
}

#[async_trait]
impl Harness for NodeHarness {
    fn creator(&self) -> Creator {
        self.creator.clone()
    }

    async fn init(&mut self, function: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        self.deployments += 1;
        let binary = std::fs::read(probe_binary()).map_err(|e| e.to_string())?;
        let package =
            weft_proto::package::build("probe", &format!("1.{}", self.deployments), &binary)
                .map_err(|e| e.to_string())?;
        let installed = self
            .client
            .install(package)
            .await
            .map_err(|e| e.to_string())?;
        let mut init = vec![function];
        init.extend_from_slice(args);
        let deploy_args = weft_proto::tx::deploy_args(
            &installed.name,
            &installed.version,
            &installed.package_hash,
            &string_args(&init),
        );
        let (id, signed) = self.client.sign("_lifecycle", "deploy", &deploy_args);
        let outcome = self
            .client
            .submit_signed_and_wait(signed, Duration::from_secs(60))
            .await;
        self.result_of(id, outcome).await
    }

    async fn invoke(&mut self, function: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        let (id, signed) = self.client.sign("probe", function, &string_args(args));
        let outcome = self
            .client
            .submit_signed_and_wait(signed, Duration::from_secs(60))
            .await;
        self.result_of(id, outcome).await
    }

    async fn invoke_batch(&mut self, calls: &[Call]) -> Vec<Result<Vec<u8>, String>> {
        // Submitted one after another without waiting, so they are ordered in this order and
        // cut into one batch.
        let mut ids = Vec::new();
        for call in calls {
            let args: Vec<&str> = call.args.iter().map(String::as_str).collect();
            let (id, signed) = self
                .client
                .sign("probe", &call.function, &string_args(&args));
            self.client.raw().submit(signed).await.expect("submit");
            ids.push(id);
        }
        let mut results = Vec::new();
        for id in ids {
            let info = loop {
                match self.client.transaction(id).await {
                    Ok(info) => break info,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            let result = info.result.expect("result");
            self.last_tx = Some(id);
            results.push(if result.status == pb::TxStatus::Valid as i32 {
                Ok(result.payload.to_vec())
            } else {
                Err(result.message)
            });
        }
        results
    }

    async fn query(&mut self, function: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        self.client
            .query("probe", function, &string_args(args))
            .await
            .map_err(|e| e.to_string())
    }

    fn last_event(&self) -> Option<Event> {
        let id = self.last_tx?;
        let client = self.client.clone();
        let info = std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(async move { client.transaction(id).await })
            })
            .join()
            .expect("thread")
        })
        .ok()?;
        let result = info.result?;
        if result.status != pb::TxStatus::Valid as i32 {
            return None;
        }
        result.event.map(|e| Event {
            name: e.name,
            payload: e.payload.to_vec(),
        })
    }
}

async fn start_node(dir: &Path) -> (NodeHandle, Signer, String) {
    let ca = CertificateAuthority::generate("Org1").expect("ca");
    let validator = ca.issue("validator0", Role::Validator).expect("issue");
    validator.write_to(&dir.join("validator0")).expect("write");
    let admin = ca.issue("admin", Role::Admin).expect("issue");
    let genesis = Genesis {
        chain_id: "contract".into(),
        organizations: vec![OrganizationInfo {
            name: "Org1".into(),
            ca_certificate: ca.certificate_pem().to_string(),
        }],
        validators: vec![ValidatorInfo {
            id: "validator0".into(),
            certificate: validator.certificate_pem.clone(),
            address: "127.0.0.1:0".into(),
            consensus_address: String::new(),
        }],
        consensus: ConsensusParams::default(),
    };
    genesis.save(&dir.join("genesis.json")).expect("save");
    let text = r#"
[node]
id = "validator0"
data_dir = "data"
genesis = "genesis.json"
identity = "validator0"
listen = "127.0.0.1:0"
operations_listen = "127.0.0.1:0"
[chaincode]
runtime = "process"
"#;
    let config = weft_node::config::Config::parse(text, dir, &Default::default()).expect("config");
    let node = weft_node::node::start_with_store(config, Arc::new(MemoryStore::new()))
        .await
        .expect("node starts");
    (node, admin.signer().expect("signer"), genesis.chain_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_passes_through_a_real_node_and_shim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, admin, chain_id) = start_node(dir.path()).await;
    let client = WeftClient::connect(&node.grpc_address.to_string(), admin, &chain_id)
        .await
        .expect("connect");
    // The suite's nested calls go to "echo": the probe binary serves it under that name.
    let echo =
        weft_proto::package::build(ECHO, "1.0", &std::fs::read(probe_binary()).expect("probe"))
            .expect("package");
    client.deploy(echo, &[]).await.expect("deploy echo");
    let mut harness = NodeHarness {
        client,
        creator: Creator::new("admin", "Org1", Role::Admin),
        deployments: 0,
        last_tx: None,
    };
    run_contract_suite(&mut harness).await;
    node.shutdown().await;
}
