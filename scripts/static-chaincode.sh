#!/usr/bin/env bash
# Builds the example chaincode (asset-transfer, noop, probe) as statically linked binaries, the only
# kind a FROM scratch chaincode container runs. The Docker tests package these.
#
#   scripts/static-chaincode.sh    # -> $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/debug/examples/
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
target=x86_64-unknown-linux-gnu
# With an explicit --target, RUSTFLAGS reach only the target's code, not build scripts.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked --target "$target" -p chaincode-sdk --examples
for example in asset-transfer noop probe; do
  binary="$CARGO_TARGET_DIR/$target/debug/examples/$example"
  if ! file -L "$binary" | grep -Eq 'statically linked|static-pie linked'; then
    echo "error: $binary is not statically linked: $(file -L "$binary")" >&2
    exit 1
  fi
done
