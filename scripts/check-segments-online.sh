#!/usr/bin/env bash
# Offline = online for segments on the whole Online Retail file: replays it
# into a release `serve`, stops the server (which flushes every profile), runs
# `cartpulse segment --k auto --assignments`, starts the server again,
# activates the new version over HTTP, and compares every customer's live
# segment (`GET /v1/customers/{id}` → `.segment`) with the batch's. Prints
# the number of equal and different customers (and the first differences);
# exits 1 if any differ.
# Usage: scripts/check-segments-online.sh [--database-url URL]
set -euo pipefail
cd "$(dirname "$0")/.."
FILE=${FILE:-../shared/data/online_retail.csv}
[ -f "$FILE" ] || { echo "data file $FILE not found (see ../shared/data/README.md)" >&2; exit 2; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"
# CARTPULSE_BIN: use this binary instead of building one.
if [ -n "${CARTPULSE_BIN:-}" ]; then BIN=$CARTPULSE_BIN; else
    cargo build --release --locked -q
    BIN="$CARGO_TARGET_DIR/release/cartpulse"
fi
WORK=$(mktemp -d)
DB="sqlite://$WORK/check.db?mode=rwc"
if [ "${1:-}" = "--database-url" ]; then DB=$2; fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KEY=$("$BIN" keys create --name check --scope admin --database-url "$DB" 2>/dev/null)
SERVER=""
trap 'if [ -n "$SERVER" ]; then kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; fi; rm -rf "$WORK"' EXIT
start() {
    CARTPULSE_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --database-url "$DB" &
    SERVER=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return; sleep 0.1; done
    echo "the server did not become ready" >&2; exit 1
}
stop() {
    # SIGTERM: the server drains and writes every profile before it exits.
    kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=""
}
start
"$BIN" replay --format retail --file "$FILE" --target "http://127.0.0.1:$PORT" --api-key "$KEY" --quiet >&2
stop
"$BIN" segment --k auto --assignments "$WORK/assignments.csv" --database-url "$DB" >"$WORK/segment.json"
VERSION=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["version"])' "$WORK/segment.json")
start
curl -sf -X POST -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/segments/$VERSION/activate" >&2
echo >&2
python3 - "http://127.0.0.1:$PORT" "$KEY" "$WORK/assignments.csv" "$VERSION" <<'EOF'
import csv, json, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor

base, key, path, version = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(path) as f:
    batch = {r["customer_id"]: int(r["segment"]) for r in csv.DictReader(f)}

def live(cid):
    req = urllib.request.Request(f"{base}/v1/customers/{cid}", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r).get("segment")

# An actor loaded by this read assigns on start; one already running does so
# on its next 500 ms tick, so a customer still unassigned is asked again.
ids = sorted(batch)
got = {}
for attempt in range(20):
    todo = [c for c in ids if got.get(c) is None or got[c].get("version") != version]
    if not todo:
        break
    with ThreadPoolExecutor(8) as pool:
        for cid, seg in zip(todo, pool.map(live, todo)):
            got[cid] = seg
    time.sleep(0.5)
equal = [c for c in ids if (got.get(c) or {}).get("version") == version and got[c]["segment"] == batch[c]]
equal_set = set(equal)
different = [c for c in ids if c not in equal_set]
print(f"segmentation v{version}: {len(ids)} customers, {len(equal)} equal, {len(different)} different")
for c in different[:20]:
    print(f"  {c}: batch {batch[c]}, live {got.get(c)}")
sys.exit(1 if different else 0)
EOF
