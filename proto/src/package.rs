//! Chaincode packages: a `.tar.gz` holding `manifest.json` and the chaincode binary. The
//! package is named on the ledger by the SHA-256 of its bytes; the manifest carries the
//! binary's own hash, checked whenever a package is opened.

use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::signing::sha256;

/// Name of the binary inside a package.
pub const BINARY_NAME: &str = "chaincode";
/// Name of the manifest inside a package.
pub const MANIFEST_NAME: &str = "manifest.json";
/// The largest package a peer accepts, in bytes.
pub const MAX_PACKAGE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("the package is not a readable .tar.gz: {0}")]
    Archive(String),
    #[error("the package has no {0}: build it with `weft chaincode package`")]
    Missing(&'static str),
    #[error("the package manifest is not valid: {0}")]
    Manifest(String),
    #[error("the package binary does not match the hash in its manifest")]
    BinaryHashMismatch,
    #[error("the package is larger than {MAX_PACKAGE_BYTES} bytes")]
    TooLarge,
    #[error(
        "{0} is not a statically linked Linux binary, and a chaincode container (FROM scratch) cannot run it: build it with RUSTFLAGS=\"-C target-feature=+crt-static\" --target x86_64-unknown-linux-gnu, or pass --allow-dynamic for peers that run chaincode as processes"
    )]
    NotStatic(String),
}

/// The programming language of a chaincode binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub language: Language,
    /// Lowercase hex SHA-256 of the binary.
    pub binary_sha256: String,
}

/// An opened package.
#[derive(Debug, Clone)]
pub struct Package {
    pub manifest: Manifest,
    pub binary: Vec<u8>,
    /// Lowercase hex SHA-256 of the package bytes.
    pub hash: String,
}

/// Checks that a name is usable as a chaincode name (and as a path and label component).
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with(['.', '_', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

/// Builds a package from a binary.
pub fn build(name: &str, version: &str, binary: &[u8]) -> Result<Vec<u8>, PackageError> {
    validate_name(name).map_err(PackageError::Manifest)?;
    validate_name(version).map_err(PackageError::Manifest)?;
    let manifest = Manifest {
        name: name.to_string(),
        version: version.to_string(),
        language: Language::Rust,
        binary_sha256: hex::encode(sha256(binary)),
    };
    let manifest_json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| PackageError::Manifest(e.to_string()))?;
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut archive = tar::Builder::new(encoder);
    let mut append = |path: &str, bytes: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        archive
            .append_data(&mut header, path, bytes)
            .map_err(|e| PackageError::Archive(e.to_string()))
    };
    append(MANIFEST_NAME, &manifest_json, 0o644)?;
    append(BINARY_NAME, binary, 0o755)?;
    let encoder = archive
        .into_inner()
        .map_err(|e| PackageError::Archive(e.to_string()))?;
    encoder
        .finish()
        .map_err(|e| PackageError::Archive(e.to_string()))
}

/// Opens a package and checks its manifest and binary hash.
pub fn open(bytes: &[u8]) -> Result<Package, PackageError> {
    if bytes.len() > MAX_PACKAGE_BYTES {
        return Err(PackageError::TooLarge);
    }
    let decoder = flate2::read::GzDecoder::new(bytes).take(MAX_PACKAGE_BYTES as u64 * 2);
    let mut archive = tar::Archive::new(decoder);
    let mut manifest = None;
    let mut binary = None;
    let entries = archive
        .entries()
        .map_err(|e| PackageError::Archive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| PackageError::Archive(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| PackageError::Archive(e.to_string()))?
            .to_string_lossy()
            .to_string();
        let slot = match path.as_str() {
            MANIFEST_NAME => &mut manifest,
            BINARY_NAME => &mut binary,
            _ => continue,
        };
        // Only regular files: a sparse entry's holes are made up by the reader, not read
        // through the size-limited decoder.
        if !entry.header().entry_type().is_file() {
            return Err(PackageError::Archive(format!(
                "{path} is not a regular file: build the package with `weft chaincode package`"
            )));
        }
        // Sized from the entry's header, refused past what the decoder may yield at all:
        // growing by doubling would hold two copies of a binary of tens of megabytes at its
        // last step, and every validator opens the package when it deploys or launches it.
        let limit = MAX_PACKAGE_BYTES * 2;
        let declared = usize::try_from(entry.size()).unwrap_or(usize::MAX);
        if declared > limit {
            return Err(PackageError::TooLarge);
        }
        let mut contents = Vec::new();
        contents
            .try_reserve_exact(declared)
            .map_err(|_| PackageError::TooLarge)?;
        (&mut entry)
            .take(limit as u64)
            .read_to_end(&mut contents)
            .map_err(|e| PackageError::Archive(e.to_string()))?;
        *slot = Some(contents);
    }
    let manifest: Manifest =
        serde_json::from_slice(&manifest.ok_or(PackageError::Missing(MANIFEST_NAME))?)
            .map_err(|e| PackageError::Manifest(e.to_string()))?;
    validate_name(&manifest.name).map_err(PackageError::Manifest)?;
    validate_name(&manifest.version).map_err(PackageError::Manifest)?;
    let binary = binary.ok_or(PackageError::Missing(BINARY_NAME))?;
    if hex::encode(sha256(&binary)) != manifest.binary_sha256 {
        return Err(PackageError::BinaryHashMismatch);
    }
    Ok(Package {
        manifest,
        binary,
        hash: hex::encode(sha256(bytes)),
    })
}

/// The program headers of a 64-bit little-endian ELF file as (type, offset, file size); None
/// when `binary` is not one or a header lies outside it (a crafted header must not overflow).
fn program_headers(binary: &[u8]) -> Option<Vec<(u32, usize, usize)>> {
    if binary.len() < 64 || &binary[..4] != b"\x7fELF" || binary[4] != 2 || binary[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([binary[o], binary[o + 1]]) as usize;
    let u64_at = |o: usize| -> Option<usize> {
        let bytes: [u8; 8] = binary.get(o..o.checked_add(8)?)?.try_into().ok()?;
        usize::try_from(u64::from_le_bytes(bytes)).ok()
    };
    let phoff = u64_at(32)?;
    let phentsize = u16_at(54);
    let phnum = u16_at(56);
    (0..phnum)
        .map(|i| {
            let at = i.checked_mul(phentsize)?.checked_add(phoff)?;
            let kind = binary.get(at..at.checked_add(4)?)?;
            let kind = u32::from_le_bytes([kind[0], kind[1], kind[2], kind[3]]);
            Some((kind, u64_at(at + 8)?, u64_at(at + 32)?))
        })
        .collect()
}

const PT_INTERP: u32 = 3;

/// Whether `binary` is an ELF executable with no program interpreter (statically linked).
pub fn is_static_elf(binary: &[u8]) -> bool {
    program_headers(binary).is_some_and(|headers| headers.iter().all(|(k, _, _)| *k != PT_INTERP))
}

/// The program interpreter (dynamic loader) a dynamically linked ELF executable names, such
/// as `/lib64/ld-linux-x86-64.so.2`.
pub fn elf_interpreter(binary: &[u8]) -> Option<String> {
    let (_, offset, size) = program_headers(binary)?
        .into_iter()
        .find(|(k, _, _)| *k == PT_INTERP)?;
    let bytes = binary.get(offset..offset.checked_add(size)?)?;
    let text = std::str::from_utf8(bytes).ok()?;
    Some(text.trim_end_matches('\0').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_round_trips_and_detects_tampering() {
        let bytes = build("asset-transfer", "1.0", b"\x7fELF binary").expect("build");
        let package = open(&bytes).expect("open");
        assert_eq!(package.manifest.name, "asset-transfer");
        assert_eq!(package.binary, b"\x7fELF binary");
        assert_eq!(package.hash, hex::encode(sha256(&bytes)));
        assert!(open(b"not gzip").is_err());
        assert!(build("../evil", "1", b"x").is_err());
    }

    #[test]
    fn an_opened_binary_is_held_in_an_allocation_of_its_own_size() {
        // Not a power of two: a buffer grown by doubling would be larger than its contents.
        let binary: Vec<u8> = (0..3_000_001u32).map(|i| (i % 251) as u8).collect();
        let package = open(&build("big", "1.0", &binary).expect("build")).expect("open");
        assert_eq!(package.binary, binary);
        assert_eq!(package.binary.capacity(), binary.len());
    }

    #[test]
    fn dynamic_binary_of_this_test_is_detected() {
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        // Test binaries are built without crt-static here, so they have an interpreter.
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"#!/bin/sh"));
        // Its interpreter is the dynamic loader, and it exists on this machine.
        let interpreter = elf_interpreter(&me).expect("a dynamic binary names its loader");
        assert!(interpreter.contains("ld-linux"), "{interpreter}");
        assert!(std::path::Path::new(&interpreter).exists(), "{interpreter}");
        assert_eq!(elf_interpreter(b"#!/bin/sh"), None);
        // A header whose program-header offset would overflow is refused, not a panic.
        let mut crafted = vec![0u8; 64];
        crafted[..6].copy_from_slice(b"\x7fELF\x02\x01");
        crafted[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        crafted[54..56].copy_from_slice(&56u16.to_le_bytes());
        crafted[56..58].copy_from_slice(&3u16.to_le_bytes());
        assert!(!is_static_elf(&crafted));
        assert_eq!(elf_interpreter(&crafted), None);
    }
}
