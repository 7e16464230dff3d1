#!/usr/bin/env bash
# Builds Weft's images locally with no registry: statically linked binaries (glibc and
# libstdc++ linked in), then FROM-scratch images with the classic builder.
#
#   docker/build-images.sh            # weft-peer:<version> and weft-chaincode-asset-transfer:<version>
#
# Needs a Docker engine (DOCKER_HOST is honoured) and what scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
target=x86_64-unknown-linux-gnu
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

if ! docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1; then
  echo "error: no Docker engine answers (is the daemon running, and DOCKER_HOST right?)" >&2
  exit 1
fi

# RocksDB is C++: without a directory holding only libstdc++.a first on the search path the
# linker picks libstdc++.so and the binary comes out dynamically linked.
libstdcxx=$(g++ -print-file-name=libstdc++.a)
if [ ! -f "$libstdcxx" ]; then
  echo "error: libstdc++.a not found: install g++ (libstdc++-12-dev)" >&2
  exit 1
fi
static_libs="$CARGO_TARGET_DIR/static-libstdcxx"
mkdir -p "$static_libs"
ln -sf "$libstdcxx" "$static_libs/libstdc++.a"

echo "==> building static binaries (the first static build compiles RocksDB again: 10-15 minutes)"
RUSTFLAGS="-C target-feature=+crt-static -L native=$static_libs" \
  cargo build --release --locked --target "$target" \
  -p weft-node --bin weft -p chaincode-sdk --example asset-transfer

out="$CARGO_TARGET_DIR/$target/release"
for binary in "$out/weft" "$out/examples/asset-transfer"; do
  if ! file -L "$binary" | grep -Eq 'statically linked|static-pie linked'; then
    echo "error: $binary is not statically linked: $(file -L "$binary")" >&2
    exit 1
  fi
done

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

build() { # image tag, Dockerfile, binary, name inside the context
  rm -rf "${context:?}"/*
  mkdir -p "$context/volume/data/run"
  cp docker/"$2" "$context/Dockerfile"
  cp "$3" "$context/$4"
  strip "$context/$4" 2>/dev/null || true
  echo "==> building $1"
  DOCKER_BUILDKIT=0 docker build --quiet --label weft.version="$version" -t "$1" "$context" >/dev/null
}

build "weft-peer:$version" peer.Dockerfile "$out/weft" weft
build "weft-chaincode-asset-transfer:$version" chaincode.Dockerfile "$out/examples/asset-transfer" chaincode

echo "==> images"
docker image ls --filter "label=weft.version=$version" --format '{{.Repository}}:{{.Tag}}  {{.Size}}'
