#!/usr/bin/env bash
# End-to-end tests of the admin console in real headless Chromium (Debian's
# `chromium`, driven by playwright-core from console/), then the console's
# perf report (first load, memory, dropped updates) in its short mode.
#
# Sets up a real server: a debug `cartpulse serve` (release with
# E2E_RELEASE=1) on a free port over a temp SQLite database and model store,
# with two tiny trained models published with their report images (the
# first active), an ingest key
# and console users `admin` and `viewer`. Installs chromium and the npm
# packages when missing. Extra arguments go to `node --test`.
#   PERF=full scripts/e2e.sh   # the 10-minute perf run instead of the short one
#   PERF=off  scripts/e2e.sh   # tests only
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/browser-env.sh

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
export CARTPULSE_DATABASE_URL="sqlite://$WORK/e2e.db?mode=rwc"
export CARTPULSE_MODEL_STORE="$WORK/models"
export CARTPULSE_DATABASE__SQLITE_SYNCHRONOUS=normal
# Scores of replayed sessions go out at once (the feed test wants some).
export CARTPULSE_INFERENCE__SCORE_DEBOUNCE_MS=200

DATA="$ROOT/../shared/data/online_shoppers_intention.csv"
SAMPLE="$WORK/sample.csv"
if [ -f "$DATA" ]; then
  head -n 1201 "$DATA" > "$SAMPLE"   # header + 1,200 sessions
  export E2E_DATA="$SAMPLE"
else
  echo "== $DATA not found: generated sessions for training, synthetic traffic for replays"
  node console/tests/gen-shoppers.mjs 1200 "$SAMPLE"
fi

echo "== training two tiny models (2 folds, with their report images) and publishing them"
# `models publish DIR` stores the PNGs of DIR/report with the version.
"$BIN" train --data "$SAMPLE" --folds 2 --seed 1 --out "$WORK/model-a" --report "$WORK/model-a/report" >/dev/null
"$BIN" train --data "$SAMPLE" --folds 2 --seed 2 --out "$WORK/model-b" --report "$WORK/model-b/report" >/dev/null
MODEL_A=$("$BIN" models publish "$WORK/model-a" 2>/dev/null | tail -1 | node -pe "JSON.parse(require('fs').readFileSync(0)).version")
MODEL_B=$("$BIN" models publish "$WORK/model-b" 2>/dev/null | tail -1 | node -pe "JSON.parse(require('fs').readFileSync(0)).version")
[ "$MODEL_A" != "$MODEL_B" ] || { echo "both trainings produced version $MODEL_A" >&2; exit 1; }
"$BIN" models promote "$MODEL_A" >/dev/null 2>&1

E2E_INGEST_KEY=$("$BIN" keys create --name e2e-ingest --scope ingest 2>/dev/null)
E2E_ADMIN_PASSWORD="admin-$(node -p "require('crypto').randomBytes(8).toString('hex')")"
E2E_VIEWER_PASSWORD="viewer-$(node -p "require('crypto').randomBytes(8).toString('hex')")"
printf '%s\n' "$E2E_ADMIN_PASSWORD" | "$BIN" users create --name admin --role admin
printf '%s\n' "$E2E_VIEWER_PASSWORD" | "$BIN" users create --name viewer --role viewer

echo "== serving on 127.0.0.1:$PORT"
CARTPULSE_CONSOLE__STATIC_DIR="$ROOT/static" CARTPULSE_LOG=warn \
  "$BIN" serve --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; echo "server died" >&2; exit 1; }
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null

export E2E_BASE="http://127.0.0.1:$PORT" E2E_BIN="$BIN" E2E_INGEST_KEY E2E_MODEL_A="$MODEL_A" E2E_MODEL_B="$MODEL_B"
export E2E_ADMIN_NAME=admin E2E_ADMIN_PASSWORD E2E_VIEWER_NAME=viewer E2E_VIEWER_PASSWORD
rm -rf console/test-results
status=0
(cd console && node --test --test-concurrency=1 --test-reporter=spec "$@" tests/e2e.test.mjs) || status=$?
if [ "$status" = 0 ] && [ "${PERF:-short}" != off ]; then
  echo "== console perf ($([ "${PERF:-short}" = full ] && echo 10 minutes || echo short))"
  (cd console && node tests/perf.mjs $([ "${PERF:-short}" = full ] || echo --short)) || status=$?
fi
if [ "$status" != 0 ]; then
  echo "== server log (last 40 lines)"; tail -40 "$WORK/server.log"
fi
echo "== screenshots in console/test-results/"
exit "$status"
