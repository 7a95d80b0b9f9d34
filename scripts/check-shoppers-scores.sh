#!/usr/bin/env bash
# Online = offline for the model: replays the whole UCI Online Shoppers file
# through a release `serve` that scores sessions with a model directory, and
# checks that every session's final score equals `cartpulse predict` on its
# row (|Δ| < 1e-5). Trains a model first unless MODEL=DIR is given.
# Usage: [MODEL=DIR] scripts/check-shoppers-scores.sh [--database-url URL]
set -euo pipefail
cd "$(dirname "$0")/.."
FILE=${FILE:-../shared/data/online_shoppers_intention.csv}
[ -f "$FILE" ] || { echo "data file $FILE not found (see ../shared/data/README.md)" >&2; exit 2; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"
cargo build --release --locked -q
BIN="$CARGO_TARGET_DIR/release/cartpulse"
WORK=$(mktemp -d)
DB="sqlite://$WORK/check.db?mode=rwc"
if [ "${1:-}" = "--database-url" ]; then DB=$2; fi
MODEL=${MODEL:-}
if [ -z "$MODEL" ]; then
    MODEL="$WORK/model"
    echo "training a model into $MODEL" >&2
    "$BIN" train --data "$FILE" --folds 5 --seed 42 --out "$MODEL" >/dev/null
fi
"$BIN" predict --model "$MODEL" --data "$FILE" --out "$WORK/offline.csv"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KEY=$("$BIN" keys create --name check --scope admin --database-url "$DB")
CARTPULSE_LOG=warn CARTPULSE_INFERENCE__MODEL_DIR="$MODEL" "$BIN" serve --listen "127.0.0.1:$PORT" --database-url "$DB" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
"$BIN" replay --format shoppers --file "$FILE" --target "http://127.0.0.1:$PORT" --api-key "$KEY" >&2
python3 scripts/check_shoppers_scores.py "http://127.0.0.1:$PORT" "$KEY" "$WORK/offline.csv"
