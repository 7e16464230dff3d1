#!/usr/bin/env bash
# Runs the Weft demo on a fresh machine: installs build dependencies, builds the weft binary
# and the asset-transfer chaincode (release), then runs `weft demo` (extra arguments are
# passed on, for example --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
echo "==> building weft and the asset-transfer chaincode (the first build compiles RocksDB: 10-15 minutes)"
cargo build --release --locked -p weft-node --bin weft -p chaincode-sdk --example asset-transfer
exec "$CARGO_TARGET_DIR/release/weft" demo "$@"
