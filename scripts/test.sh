#!/usr/bin/env bash
# Runs Weft's tests on a fresh machine: installs build dependencies, builds the binaries the
# multi-process tests drive, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
echo "==> checking formatting"
cargo fmt --all -- --check
echo "==> building the weft binary and the chaincode examples (the first build compiles RocksDB: 10-15 minutes)"
cargo build --locked -p weft-node --bins -p chaincode-sdk --examples
echo "==> building the example chaincode statically, for the Docker tests' FROM scratch images"
./scripts/static-chaincode.sh
echo "==> running the tests"
# One test at a time: the cluster tests each run four validators and their chaincode, and two
# of them side by side on two cores stretch timings into spurious view changes.
cargo test --locked --workspace --all-targets -- --test-threads=1
