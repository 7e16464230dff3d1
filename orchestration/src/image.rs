//! The peer image a docker location runs: named by the blueprint's user (for example
//! `weft-peer:0.1.0` from `docker/build-images.sh`), or built on each engine from the `weft`
//! binary that runs `weft cluster up`, FROM scratch as every Weft image is. A statically
//! linked binary goes in alone; a dynamically linked one (a development build) goes in with
//! the shared libraries this very process has mapped, at their paths, so that it runs the
//! same in the container. Nothing is pulled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::Docker;
use sha2::{Digest, Sha256};

use crate::engine::{EngineError, build_image, tar_of};

/// The label on peer images `up` builds.
pub const LABEL_PEER_IMAGE: &str = "weft.peer-image";
/// The user the peer runs as in its container.
pub const PEER_UID: u64 = 65534;

/// The volume's directories are in the image, owned by the peer's user: a new volume mounted
/// there starts as a copy of them, so the peer can write its ledger and its socket.
const DOCKERFILE: &str = "FROM scratch\nCOPY root/ /\nCOPY --chown=65534:65534 volume/ /var/lib/weft/\nUSER 65534:65534\nENTRYPOINT [\"/weft\"]\n";

/// What goes into a peer image built from a binary.
#[derive(Debug, Clone)]
pub struct PeerImage {
    pub tag: String,
    /// (path in the image, file on this machine).
    files: Vec<(String, PathBuf)>,
}

impl PeerImage {
    /// The image of `binary` (this process's executable when it is the running `weft`), with
    /// the shared libraries listed in `maps` (the text of `/proc/self/maps`) when the binary is
    /// not static. The tag carries a hash of the binary: a rebuilt `weft` is a new image.
    pub fn of_binary(binary: &Path, maps: &str) -> Result<PeerImage, EngineError> {
        let bytes = std::fs::read(binary)
            .map_err(|e| EngineError(format!("cannot read {}: {e}", binary.display())))?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let mut files = vec![("weft".to_string(), binary.to_path_buf())];
        if !weft_proto::package::is_static_elf(&bytes) {
            for library in mapped_libraries(maps) {
                let library = PathBuf::from(library);
                // The loader looks a library up by its soname, usually a link beside the
                // mapped file (libstdc++.so.6 -> libstdc++.so.6.0.30).
                for path in std::iter::once(library.clone()).chain(links_to(&library)) {
                    let inside = path.display().to_string();
                    files.push((inside.trim_start_matches('/').to_string(), library.clone()));
                }
            }
            // The kernel starts the loader at the path the binary names, which may be a link
            // (/lib64/ld-linux-x86-64.so.2) to the file the maps list.
            if let Some(loader) = weft_proto::package::elf_interpreter(&bytes) {
                let inside = loader.trim_start_matches('/').to_string();
                if !files.iter().any(|(path, _)| *path == inside) {
                    files.push((inside, PathBuf::from(loader)));
                }
            }
        }
        Ok(PeerImage {
            tag: format!("weft-peer:{}-{}", env!("CARGO_PKG_VERSION"), &hash[..12]),
            files,
        })
    }

    /// The image of the running `weft`.
    pub fn of_this_binary() -> Result<PeerImage, EngineError> {
        let exe = std::env::current_exe()
            .map_err(|e| EngineError(format!("cannot find this executable: {e}")))?;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        PeerImage::of_binary(&exe, &maps)
    }

    /// The files the image holds, by their path in it.
    pub fn paths(&self) -> Vec<&str> {
        self.files.iter().map(|(path, _)| path.as_str()).collect()
    }

    fn context(&self) -> Result<Vec<u8>, EngineError> {
        let mut contents = Vec::new();
        for (path, source) in &self.files {
            let bytes = std::fs::read(source)
                .map_err(|e| EngineError(format!("cannot read {}: {e}", source.display())))?;
            contents.push((format!("root/{path}"), bytes));
        }
        let mut files: Vec<(&str, u32, u64, &[u8])> = vec![
            ("Dockerfile", 0o644, 0, DOCKERFILE.as_bytes()),
            ("volume/", 0o755, 0, &[]),
            ("volume/data/", 0o700, 0, &[]),
            ("volume/data/run/", 0o700, 0, &[]),
        ];
        files.extend(
            contents
                .iter()
                .map(|(path, bytes)| (path.as_str(), 0o755, 0, bytes.as_slice())),
        );
        tar_of(&files).map_err(|e| EngineError(format!("peer image context: {e}")))
    }

    /// Builds the image on `docker` unless it is there already.
    pub async fn ensure(&self, docker: &Docker) -> Result<(), EngineError> {
        if docker.inspect_image(&self.tag).await.is_ok() {
            return Ok(());
        }
        let labels = HashMap::from([(LABEL_PEER_IMAGE, "true")]);
        build_image(docker, &self.tag, self.context()?, &labels).await
    }
}

/// The symbolic links beside `library` that lead to it (its soname among them).
fn links_to(library: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (library.parent(), library.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let Some(stem) = name.find(".so").map(|at| &name[..at + 3]) else {
        return Vec::new();
    };
    let Ok(target) = library.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(stem))
                && p.symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink())
                && p.canonicalize().is_ok_and(|t| t == target)
        })
        .collect()
}

/// The shared objects in a `/proc/self/maps` text, each once, in order of appearance.
pub fn mapped_libraries(maps: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or_default();
        if path.starts_with('/') && name.contains(".so") && !seen.iter().any(|s| s == path) {
            seen.push(path.to_string());
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 1234 /usr/local/bin/weft
7f0000000000-7f0000020000 r--p 00000000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000020000-7f0000040000 r-xp 00020000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000050000-7f0000060000 r--p 00000000 08:01 98 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1
7f0000070000-7f0000080000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
7f0000090000-7f00000a0000 r--p 00000000 08:01 97 /usr/lib64/ld-linux-x86-64.so.2
";

    #[test]
    fn mapped_libraries_are_the_shared_objects_once_each() {
        assert_eq!(
            mapped_libraries(MAPS),
            [
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/usr/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn a_static_binary_goes_in_alone_and_the_tag_follows_its_bytes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // The smallest ELF header of a static executable: 64-bit, little endian, no program
        // headers (so no interpreter).
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let path = tmp.path().join("weft");
        std::fs::write(&path, &elf).expect("write");
        let image = PeerImage::of_binary(&path, MAPS).expect("image");
        assert_eq!(image.paths(), ["weft"]);
        elf.push(1);
        std::fs::write(&path, &elf).expect("write");
        assert_ne!(
            PeerImage::of_binary(&path, MAPS).expect("image").tag,
            image.tag
        );
    }

    #[test]
    fn a_dynamic_binary_takes_its_libraries_along() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("weft");
        std::fs::write(&path, b"#!/bin/sh\n").expect("write");
        let image = PeerImage::of_binary(&path, MAPS).expect("image");
        for library in [
            "weft",
            "usr/lib/x86_64-linux-gnu/libc.so.6",
            "usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
            "usr/lib64/ld-linux-x86-64.so.2",
        ] {
            assert!(image.paths().contains(&library), "{:?}", image.paths());
        }
    }

    #[test]
    fn a_library_goes_in_under_the_links_that_name_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("libdemo.so.6.0.30");
        std::fs::write(&real, b"lib").expect("write");
        std::os::unix::fs::symlink("libdemo.so.6.0.30", tmp.path().join("libdemo.so.6"))
            .expect("link");
        std::fs::write(tmp.path().join("libdemo.so.7"), b"another").expect("write");
        assert_eq!(links_to(&real), [tmp.path().join("libdemo.so.6")]);
    }
}
