#!/usr/bin/env bash
# Installs what a fresh machine lacks to build Weft: libclang (bindgen for RocksDB), a C++
# compiler, make, and `file`. Idempotent: installs nothing when everything is present.
set -euo pipefail

missing=()
# bindgen needs libclang.so itself (libclang-cpp, present on some images, is not enough).
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
# `file` checks that the chaincode built for Docker is statically linked.
command -v file >/dev/null 2>&1 || missing+=(file)

if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed: install the Rust toolchain (rustup) first" >&2
  exit 1
fi
