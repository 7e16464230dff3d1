//! The external runtime (chaincode as a service): the probe chaincode runs on its own as a
//! service (WEFT_CHAINCODE_LISTEN), the peer dials it. Transactions run through it like through
//! a chaincode the peer started; when the service goes away the transaction fails, and once
//! the service is back the next one runs.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use weft_proto::ClientError;
use weft_tests::{Network, Node, args, chaincode_binary, chaincode_package, free_port};

fn serve_probe(port: u16) -> Child {
    Command::new(chaincode_binary("probe"))
        .env("WEFT_CHAINCODE_LISTEN", format!("127.0.0.1:{port}"))
        .env("WEFT_CHAINCODE_NAME", "probe")
        .env("WEFT_CHAINCODE_VERSION", "1.0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the probe as a service")
}

/// Waits until something accepts connections on the port.
async fn wait_listening(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the chaincode service did not listen on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_dials_a_chaincode_service_and_redials_after_it_returns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate(tmp.path()).await;
    let port = free_port();
    let mut service = serve_probe(port);
    wait_listening(port).await;
    let external = format!("probe=127.0.0.1:{port}");
    let node = Node::start(
        &network,
        &[
            ("WEFT_CHAINCODE_RUNTIME", "external"),
            ("WEFT_CHAINCODE_EXTERNAL", &external),
        ],
    )
    .await;
    let admin = network.client("admin").await;
    admin
        .deploy(chaincode_package("probe"), &[])
        .await
        .unwrap_or_else(|e| panic!("deploy: {e}\n{}", node.log()));
    let alice = network.client("alice").await;
    alice
        .invoke("probe", "put", &args(&["k", "v1"]))
        .await
        .expect("a transaction through the service");
    assert_eq!(
        alice
            .query("probe", "get", &args(&["k"]))
            .await
            .expect("get"),
        b"v1"
    );
    assert!(
        node.log().contains("connected to the chaincode service"),
        "{}",
        node.log()
    );

    // The service goes away: the next transaction fails, and says why.
    service.kill().await.expect("stop the service");
    match alice.invoke("probe", "put", &args(&["k", "v2"])).await {
        Err(ClientError::TxFailed { message, .. }) => {
            assert!(message.contains("probe"), "{message}");
        }
        other => panic!("with the service gone the transaction fails, got {other:?}"),
    }

    // Back on the same address: the peer dials again on the next transaction.
    let _service = serve_probe(port);
    wait_listening(port).await;
    alice
        .invoke("probe", "put", &args(&["k", "v3"]))
        .await
        .unwrap_or_else(|e| panic!("after the service returned: {e}\n{}", node.log()));
    assert_eq!(
        alice
            .query("probe", "get", &args(&["k"]))
            .await
            .expect("get"),
        b"v3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_without_addresses_is_refused_with_what_to_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate(tmp.path()).await;
    let output = network
        .start_refused(&[("WEFT_CHAINCODE_RUNTIME", "external")])
        .await;
    assert!(
        output.stderr.contains("chaincode.external"),
        "{}",
        output.stderr
    );
}
