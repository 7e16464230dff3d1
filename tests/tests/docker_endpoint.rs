//! The Docker engine reached over tcp with TLS (client certificates), as a peer on another
//! machine than its engine would reach it. The engine here listens only on its unix socket, so
//! the test puts a TLS front in between on loopback: it requires a client certificate from its
//! own CA, then relays bytes to the engine's socket. A node with `docker_host = tcp://...` and
//! `docker_tls_dir` runs chaincode through it; without the TLS directory it cannot start.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, UnixStream};
use weft_tests::docker::{
    ContainerSweep, containers_labelled, engine_answers, static_chaincode_package, unique_chain_id,
};
use weft_tests::{Network, Node, args};

/// Writes ca.pem, cert.pem and key.pem (the client's) into `dir`; returns the server's
/// certificate and key and the CA certificate, for the TLS front.
fn certificates(
    dir: &Path,
) -> (
    CertificateDer<'static>,
    PrivateKeyDer<'static>,
    CertificateDer<'static>,
) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params = CertificateParams::new(Vec::<String>::new()).expect("server params");
    server_params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let server = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");

    let client_key = KeyPair::generate().expect("client key");
    let client = CertificateParams::new(Vec::<String>::new())
        .expect("client params")
        .signed_by(&client_key, &issuer)
        .expect("client certificate");

    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca.pem");
    std::fs::write(dir.join("cert.pem"), client.pem()).expect("cert.pem");
    std::fs::write(dir.join("key.pem"), client_key.serialize_pem()).expect("key.pem");
    (
        server.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        ca.der().clone(),
    )
}

/// A TLS front on loopback that requires a client certificate from `ca`, relaying to the
/// engine's unix socket. Returns its port.
async fn tls_front(
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca).expect("CA root");
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![certificate], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_chaincode_through_an_engine_reached_over_tcp_with_tls() {
    if !engine_answers("a_node_runs_chaincode_through_an_engine_reached_over_tcp_with_tls") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let tls_dir = tmp.path().join("docker-tls");
    std::fs::create_dir_all(&tls_dir).expect("tls dir");
    let (certificate, key, ca) = certificates(&tls_dir);
    let port = tls_front(certificate, key, ca).await;
    let host = format!("tcp://127.0.0.1:{port}");
    let tls_text = tls_dir.display().to_string();

    let chain_id = unique_chain_id("tls");
    let _sweep = ContainerSweep {
        chain_id: chain_id.clone(),
    };
    let network = Network::generate_named(tmp.path(), "network", &chain_id).await;

    // Without the client certificate the engine does not answer, and the node says so.
    let refused = network
        .start_refused(&[
            ("WEFT_CHAINCODE_RUNTIME", "docker"),
            ("WEFT_CHAINCODE_DOCKER_HOST", &host),
        ])
        .await;
    assert!(refused.stderr.contains(&host), "{}", refused.stderr);

    let node = Node::start(
        &network,
        &[
            ("WEFT_CHAINCODE_RUNTIME", "docker"),
            ("WEFT_CHAINCODE_DOCKER_HOST", &host),
            ("WEFT_CHAINCODE_DOCKER_TLS_DIR", &tls_text),
        ],
    )
    .await;
    let admin = network.client("admin").await;
    admin
        .deploy(static_chaincode_package("probe", "1.0"), &[])
        .await
        .unwrap_or_else(|e| panic!("deploy over the TLS endpoint: {e}\n{}", node.log()));
    let alice = network.client("alice").await;
    alice
        .invoke("probe", "put", &args(&["k", "v"]))
        .await
        .unwrap_or_else(|e| panic!("put: {e}\n{}", node.log()));
    assert_eq!(
        containers_labelled(&format!("weft.network={chain_id}")).len(),
        1
    );
    // gc over the same endpoint.
    let gc = weft_tests::weft(&[
        "chaincode",
        "gc",
        "--docker-host",
        &host,
        "--docker-tls-dir",
        &tls_text,
        "--network",
        &chain_id,
    ])
    .await;
    let printed = gc.expect_success("weft chaincode gc over tcp with TLS");
    assert!(
        printed.contains("removed 1 chaincode container"),
        "{printed}"
    );
}
