//! Docker for the tests: whether an engine answers (CI requires one: with `CI=true` and no
//! engine the tests fail rather than skip), the `docker` CLI for inspecting what the peers
//! made, and the statically linked chaincode a FROM scratch container runs.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::Value;
use tokio::net::{TcpListener, UnixStream};

/// Whether a Docker engine answers. With `CI=true` and none, panics: CI requires the Docker
/// tests. Elsewhere, says loudly that the calling test does not run, and returns false.
pub fn engine_answers(test: &str) -> bool {
    let answered = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map(|o| {
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).to_string(),
            )
        });
    let reason = match answered {
        Ok((true, _)) => return true,
        Ok((false, stderr)) => stderr.trim().to_string(),
        Err(e) => format!("the docker CLI cannot run: {e}"),
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs a Docker engine and CI requires it, but none answers: {reason}");
    }
    eprintln!("SKIPPED {test}: no Docker engine answers ({reason}); CI=true makes this a failure");
    false
}

/// Runs `docker ARGS` and returns its standard output; panics with its error otherwise.
pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn ids(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Ids of the containers (running or not) carrying `label` (`key` or `key=value`).
pub fn containers_labelled(label: &str) -> Vec<String> {
    ids(&docker(&[
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={label}"),
    ]))
}

/// Ids of the images carrying `label`.
pub fn images_labelled(label: &str) -> Vec<String> {
    ids(&docker(&[
        "images",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={label}"),
    ]))
}

/// `docker inspect` of one object.
pub fn inspect(id: &str) -> Value {
    let text = docker(&["inspect", id]);
    let mut all: Value = serde_json::from_str(&text).expect("docker inspect prints JSON");
    all.get_mut(0)
        .map(Value::take)
        .unwrap_or_else(|| panic!("docker inspect {id} printed no object"))
}

/// A statically linked example chaincode (`asset-transfer`, `probe`) as built by
/// `scripts/static-chaincode.sh`, stripped (an image build sends the whole binary to the
/// engine), copied once per test process.
pub fn static_chaincode_binary(name: &str) -> PathBuf {
    let profile = crate::profile_dir();
    let root = profile
        .parent()
        .expect("the profile directory is inside the target directory");
    let built = root
        .join("x86_64-unknown-linux-gnu")
        .join("debug")
        .join("examples")
        .join(name);
    assert!(
        built.is_file(),
        "{} is not built: run scripts/static-chaincode.sh (with the same CARGO_TARGET_DIR) before the Docker tests",
        built.display()
    );
    let dir = std::env::temp_dir().join(format!("weft-static-{}", std::process::id()));
    let copy = dir.join(name);
    if !copy.is_file() {
        std::fs::create_dir_all(&dir).expect("create the copy directory");
        crate::remove_after_exit(&dir);
        // Tests of one process may copy at once: each through a file of its own, renamed
        // into place (atomic; the last rename wins with the same bytes).
        static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!("{name}.{n}.tmp"));
        std::fs::copy(&built, &tmp).expect("copy the static chaincode");
        let _ = Command::new("strip")
            .arg(&tmp)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        std::fs::rename(&tmp, &copy).expect("rename the static chaincode");
    }
    copy
}

/// The package of [`static_chaincode_binary`] as NAME:VERSION.
pub fn static_chaincode_package(name: &str, version: &str) -> Vec<u8> {
    let binary = std::fs::read(static_chaincode_binary(name)).expect("read the static chaincode");
    assert!(
        weft_proto::package::is_static_elf(&binary),
        "{name} is not statically linked"
    );
    weft_proto::package::build(name, version, &binary).expect("package the chaincode")
}

/// Removes every container carrying `weft.network=CHAIN` when dropped, so that a failing test
/// leaves nothing running on the engine (its node is killed with the test process).
pub struct ContainerSweep {
    pub chain_id: String,
}

impl Drop for ContainerSweep {
    fn drop(&mut self) {
        let label = format!("weft.network={}", self.chain_id);
        let Ok(output) = Command::new("docker")
            .args(["ps", "-a", "-q", "--filter", &format!("label={label}")])
            .output()
        else {
            return;
        };
        for id in ids(&String::from_utf8_lossy(&output.stdout)) {
            let _ = Command::new("docker")
                .args(["rm", "-f", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A chain id no other test uses, so that labels tell this test's containers apart.
pub fn unique_chain_id(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos:08x}", std::process::id())
}

/// Writes ca.pem, cert.pem and key.pem (the client's) into `dir`; returns the server's
/// certificate and key and the CA certificate, for the TLS front.
pub fn engine_tls_certificates(
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
pub async fn engine_tls_front(
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
