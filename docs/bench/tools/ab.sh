#!/bin/bash
# ab.sh BIN OUT RATE [DURATION]: one bench step (default 30 s), then its summary.
BIN=$1; OUT=$2; RATE=$3; DUR=${4:-30s}
T=${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}
rm -rf "$OUT"
"$BIN" bench --chaincode "$T/release/examples/asset-transfer" --out "$OUT" --rate "$RATE" --duration "$DUR" --warmup 3s > "$OUT.log" 2>&1
echo "exit $?"
python3 "$(dirname "$0")/summary.py" "$OUT"
