//! Identities: X.509 certificates with Ed25519 keys issued by an organisation CA. The role
//! (client, peer, validator, admin) is the certificate's organizational unit, as Fabric's
//! NodeOUs do. Verification checks the issuer's signature strictly, the validity period and the
//! key type, and yields an [`Identity`] that names the holder.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ED25519,
};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Object identifier of Ed25519 (RFC 8410).
const ED25519_OID: &str = "1.3.101.112";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate is not valid DER X.509: {0}")]
    MalformedCertificate(String),
    #[error("the certificate of {subject} was not issued by any of the network's CAs")]
    UnknownIssuer { subject: String },
    #[error("the certificate of {subject} has a bad CA signature")]
    BadCertificateSignature { subject: String },
    #[error("the certificate of {subject} is expired or not yet valid")]
    CertificateNotValidNow { subject: String },
    #[error("the certificate of {subject} has no Ed25519 key; Weft identities use Ed25519")]
    NotEd25519 { subject: String },
    #[error(
        "the certificate of {subject} carries an Ed25519 key of small order, which anyone could sign for; issue it a freshly generated key"
    )]
    WeakKey { subject: String },
    #[error(
        "the certificate of {subject} names no known role (organizational unit must be client, peer, validator or admin)"
    )]
    NoRole { subject: String },
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path} is not a PKCS#8 Ed25519 private key in PEM: {reason}")]
    BadPrivateKey { path: String, reason: String },
    #[error("the private key in {path} does not match the certificate beside it")]
    KeyMismatch { path: String },
    #[error("cannot create the certificate: {0}")]
    Generate(String),
}

/// What an identity may do. Stored as the certificate's organizational unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submits transactions and queries.
    Client,
    /// A non-validating peer.
    Peer,
    /// A validating peer: orders, executes and certifies blocks.
    Validator,
    /// Installs and deploys chaincode; may act on any asset where the chaincode allows admins.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Peer => "peer",
            Role::Validator => "validator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may submit transactions to chaincode.
    pub fn may_submit(self) -> bool {
        matches!(self, Role::Client | Role::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(Role::Client),
            "peer" => Ok(Role::Peer),
            "validator" => Ok(Role::Validator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: use client, peer, validator or admin"
            )),
        }
    }
}

/// A verified holder of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate's common name, for example "alice".
    pub name: String,
    /// The certificate's organisation, for example "Org1".
    pub organization: String,
    pub role: Role,
    /// The Ed25519 public key, decoded once (decoding a point costs about a quarter of a
    /// verification, and a validator verifies thousands of signatures per second with few
    /// keys). Its bytes: [`Identity::public_key`].
    pub verifying_key: VerifyingKey,
    /// The DER certificate.
    pub certificate: Vec<u8>,
}

impl Identity {
    /// SHA-256 of the DER certificate: what `TxPayload.creator` carries.
    pub fn certificate_hash(&self) -> [u8; 32] {
        Sha256::digest(&self.certificate).into()
    }

    /// The Ed25519 public key's 32 bytes.
    pub fn public_key(&self) -> [u8; 32] {
        self.verifying_key.to_bytes()
    }

    /// Verifies `signature` over `message` with this identity's key (strict RFC 8032 rules).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        self.verifying_key
            .verify_strict(message, &signature)
            .is_ok()
    }
}

/// Parses `der` and checks that one of `cas` (DER CA certificates) issued it, that it is valid
/// now, and that it carries an Ed25519 key and a role.
pub fn verify_certificate(der: &[u8], cas: &[Vec<u8>]) -> Result<Identity, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| IdentityError::MalformedCertificate(e.to_string()))?;
    let subject = cert.subject().to_string();
    let mut issuer_found = false;
    for ca_der in cas {
        let Ok((_, ca)) = X509Certificate::from_der(ca_der) else {
            continue;
        };
        if ca.subject().as_raw() != cert.issuer().as_raw() {
            continue;
        }
        issuer_found = true;
        let ca_key = ed25519_public_key(&ca).ok_or_else(|| IdentityError::NotEd25519 {
            subject: ca.subject().to_string(),
        })?;
        let signature_ok = cert.signature_algorithm.algorithm.to_id_string() == ED25519_OID
            && VerifyingKey::from_bytes(&ca_key)
                .ok()
                .zip(Signature::from_slice(&cert.signature_value.data).ok())
                .is_some_and(|(key, sig)| {
                    key.verify_strict(cert.tbs_certificate.as_ref(), &sig)
                        .is_ok()
                });
        if !signature_ok {
            return Err(IdentityError::BadCertificateSignature { subject });
        }
        break;
    }
    if !issuer_found {
        return Err(IdentityError::UnknownIssuer { subject });
    }
    if !cert.validity().is_valid() {
        return Err(IdentityError::CertificateNotValidNow { subject });
    }
    identity_of(&cert, der)
}

fn identity_of(cert: &X509Certificate<'_>, der: &[u8]) -> Result<Identity, IdentityError> {
    let subject = cert.subject().to_string();
    let not_ed25519 = || IdentityError::NotEd25519 {
        subject: subject.clone(),
    };
    let public_key = ed25519_public_key(cert).ok_or_else(not_ed25519)?;
    let verifying_key = VerifyingKey::from_bytes(&public_key).map_err(|_| not_ed25519())?;
    // Transaction signatures are checked by the cofactored equation (batch verification), under
    // which a small-order key would verify forged signatures.
    if verifying_key.is_weak() {
        return Err(IdentityError::WeakKey {
            subject: subject.clone(),
        });
    }
    let first = |values: Vec<&str>| values.first().map(|s| s.to_string());
    let name = first(
        cert.subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect(),
    )
    .unwrap_or_default();
    let organization = first(
        cert.subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .collect(),
    )
    .unwrap_or_default();
    let role = cert
        .subject()
        .iter_organizational_unit()
        .filter_map(|a| a.as_str().ok())
        .find_map(|ou| ou.parse::<Role>().ok())
        .ok_or(IdentityError::NoRole { subject })?;
    Ok(Identity {
        name,
        organization,
        role,
        verifying_key,
        certificate: der.to_vec(),
    })
}

fn ed25519_public_key(cert: &X509Certificate<'_>) -> Option<[u8; 32]> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return None;
    }
    <[u8; 32]>::try_from(spki.subject_public_key.data.as_ref()).ok()
}

/// Decodes the first PEM block of `text` into DER.
pub fn pem_to_der(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64_decode(&body)
}

/// Encodes DER as a PEM CERTIFICATE block.
pub fn der_to_pem(der: &[u8]) -> String {
    pem_encode("CERTIFICATE", der)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let encoded = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let value = B64.iter().position(|&b| b == c)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// An identity that can sign: its certificate and its Ed25519 private key.
#[derive(Clone)]
pub struct Signer {
    identity: Identity,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({} {})", self.identity.role, self.identity.name)
    }
}

impl Signer {
    /// Loads `cert.pem` and `key.pem` from `dir` (the layout `weft crypto generate` writes).
    pub fn load(dir: &Path) -> Result<Signer, IdentityError> {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| IdentityError::Io {
                path: p.display().to_string(),
                reason: e.to_string(),
            })
        };
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let der = pem_to_der(&cert_pem).ok_or_else(|| {
            IdentityError::MalformedCertificate(format!("{} holds no PEM", cert_path.display()))
        })?;
        let key =
            SigningKey::from_pkcs8_pem(&key_pem).map_err(|e| IdentityError::BadPrivateKey {
                path: key_path.display().to_string(),
                reason: e.to_string(),
            })?;
        Signer::new(&der, key).map_err(|e| match e {
            IdentityError::KeyMismatch { .. } => IdentityError::KeyMismatch {
                path: key_path.display().to_string(),
            },
            other => other,
        })
    }

    /// Pairs a DER certificate with its key (the certificate's issuer is not checked here).
    pub fn new(certificate_der: &[u8], key: SigningKey) -> Result<Signer, IdentityError> {
        let (_, cert) = X509Certificate::from_der(certificate_der)
            .map_err(|e| IdentityError::MalformedCertificate(e.to_string()))?;
        let identity = identity_of(&cert, certificate_der)?;
        if identity.verifying_key != key.verifying_key() {
            return Err(IdentityError::KeyMismatch {
                path: "<memory>".into(),
            });
        }
        Ok(Signer { identity, key })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Signs `message` (already domain-separated by the caller, see `signing`).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// An organisation's certificate authority: issues identity certificates.
pub struct CertificateAuthority {
    organization: String,
    certificate_der: Vec<u8>,
    certificate_pem: String,
    key: KeyPair,
}

impl CertificateAuthority {
    /// Creates a new self-signed CA for `organization`.
    pub fn generate(organization: &str) -> Result<CertificateAuthority, IdentityError> {
        let gen_err = |e: rcgen::Error| IdentityError::Generate(e.to_string());
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(gen_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("{organization} CA"));
        name.push(DnType::OrganizationName, organization);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params.self_signed(&key).map_err(gen_err)?;
        Ok(CertificateAuthority {
            organization: organization.to_string(),
            certificate_der: cert.der().to_vec(),
            certificate_pem: cert.pem(),
            key,
        })
    }

    /// Loads a CA from its certificate and key PEM files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertificateAuthority, IdentityError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| IdentityError::Io {
                path: p.display().to_string(),
                reason: e.to_string(),
            })
        };
        let certificate_pem = read(cert_path)?;
        let key =
            KeyPair::from_pem(&read(key_path)?).map_err(|e| IdentityError::BadPrivateKey {
                path: key_path.display().to_string(),
                reason: e.to_string(),
            })?;
        let certificate_der = pem_to_der(&certificate_pem).ok_or_else(|| {
            IdentityError::MalformedCertificate(format!("{} holds no PEM", cert_path.display()))
        })?;
        let (_, cert) = X509Certificate::from_der(&certificate_der)
            .map_err(|e| IdentityError::MalformedCertificate(e.to_string()))?;
        let organization = cert
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .next()
            .unwrap_or_default()
            .to_string();
        Ok(CertificateAuthority {
            organization,
            certificate_der,
            certificate_pem,
            key,
        })
    }

    pub fn organization(&self) -> &str {
        &self.organization
    }

    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a certificate for `name` with `role`; returns (certificate PEM, key PEM).
    pub fn issue(&self, name: &str, role: Role) -> Result<IssuedIdentity, IdentityError> {
        let gen_err = |e: rcgen::Error| IdentityError::Generate(e.to_string());
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(gen_err)?;
        let mut params = CertificateParams::new(vec![name.to_string(), "localhost".to_string()])
            .map_err(gen_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, self.organization.as_str());
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        params.distinguished_name = dn;
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issuer = Issuer::from_ca_cert_pem(&self.certificate_pem, &self.key).map_err(gen_err)?;
        let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
        Ok(IssuedIdentity {
            certificate_pem: cert.pem(),
            certificate_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A freshly issued certificate and its private key.
pub struct IssuedIdentity {
    pub certificate_pem: String,
    pub certificate_der: Vec<u8>,
    pub key_pem: String,
}

impl IssuedIdentity {
    /// The signer for this identity.
    pub fn signer(&self) -> Result<Signer, IdentityError> {
        let key = SigningKey::from_pkcs8_pem(&self.key_pem).map_err(|e| {
            IdentityError::BadPrivateKey {
                path: "<memory>".into(),
                reason: e.to_string(),
            }
        })?;
        Signer::new(&self.certificate_der, key)
    }

    /// Writes `cert.pem` and `key.pem` into `dir`, creating it.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("cert.pem"), &self.certificate_pem)?;
        write_private(&dir.join("key.pem"), &self.key_pem)
    }
}

/// Writes a private key readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_verifies_against_its_ca_only() {
        let ca = CertificateAuthority::generate("Org1").expect("ca");
        let other = CertificateAuthority::generate("Org2").expect("ca");
        let alice = ca.issue("alice", Role::Client).expect("issue");
        let id = verify_certificate(&alice.certificate_der, &[ca.certificate_der().to_vec()])
            .expect("verifies");
        assert_eq!(id.name, "alice");
        assert_eq!(id.organization, "Org1");
        assert_eq!(id.role, Role::Client);
        let err = verify_certificate(&alice.certificate_der, &[other.certificate_der().to_vec()])
            .expect_err("other CA");
        assert!(matches!(err, IdentityError::UnknownIssuer { .. }), "{err}");
    }

    #[test]
    fn a_certificate_with_a_small_order_key_is_refused() {
        let ca = CertificateAuthority::generate("Org1").expect("ca");
        let alice = ca.issue("alice", Role::Client).expect("issue");
        let signer = Signer::new(
            &alice.certificate_der,
            SigningKey::from_pkcs8_pem(&alice.key_pem).expect("key"),
        )
        .expect("signer");
        let key = signer.identity().public_key();
        let mut der = alice.certificate_der.clone();
        let at = der
            .windows(32)
            .position(|w| w == key)
            .expect("the key in the DER");
        // The identity point's encoding: of order 1, so every signature "verifies" under the
        // cofactored equation.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        der[at..at + 32].copy_from_slice(&weak);
        let (_, cert) = X509Certificate::from_der(&der).expect("still DER");
        let err = identity_of(&cert, &der).expect_err("weak key");
        assert!(matches!(err, IdentityError::WeakKey { .. }), "{err}");
    }

    #[test]
    fn tampered_certificate_is_rejected() {
        let ca = CertificateAuthority::generate("Org1").expect("ca");
        let alice = ca.issue("alice", Role::Client).expect("issue");
        let mut der = alice.certificate_der.clone();
        // Flip a byte inside the common name "alice" (in the signed part).
        let pos = der
            .windows(5)
            .rposition(|w| w == b"alice")
            .expect("name in der");
        der[pos] = b'A';
        let err = verify_certificate(&der, &[ca.certificate_der().to_vec()]).expect_err("tampered");
        assert!(
            matches!(err, IdentityError::BadCertificateSignature { .. }),
            "{err}"
        );
        assert!(verify_certificate(b"not a certificate", &[]).is_err());
    }

    #[test]
    fn signer_signs_and_identity_verifies_strictly() {
        let ca = CertificateAuthority::generate("Org1").expect("ca");
        let bob = ca.issue("bob", Role::Admin).expect("issue");
        let signer = bob.signer().expect("signer");
        let signature = signer.sign(b"message");
        assert!(signer.identity().verify(b"message", &signature));
        assert!(!signer.identity().verify(b"messagf", &signature));
        assert!(!signer.identity().verify(b"message", &signature[..63]));
    }

    #[test]
    fn files_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertificateAuthority::generate("Org1").expect("ca");
        std::fs::write(dir.path().join("ca.pem"), ca.certificate_pem()).expect("write");
        std::fs::write(dir.path().join("ca.key"), ca.key_pem()).expect("write");
        let loaded =
            CertificateAuthority::load(&dir.path().join("ca.pem"), &dir.path().join("ca.key"))
                .expect("load ca");
        assert_eq!(loaded.organization(), "Org1");
        let carol = loaded.issue("carol", Role::Client).expect("issue");
        carol.write_to(&dir.path().join("carol")).expect("write");
        let signer = Signer::load(&dir.path().join("carol")).expect("load signer");
        assert_eq!(signer.identity().name, "carol");
        verify_certificate(
            &signer.identity().certificate,
            &[ca.certificate_der().to_vec()],
        )
        .expect("issued by the loaded CA verifies against the original");
    }

    #[test]
    fn base64_round_trips() {
        for len in 0..70 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)), Some(bytes));
        }
    }
}
