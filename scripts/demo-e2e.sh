#!/usr/bin/env bash
# The living demo in a real browser: starts `cartpulse demo` (debug build;
# release with E2E_RELEASE=1) on a free port over a temp SQLite database
# and model store, fed with samples of both data sets (1,200 shoppers
# sessions; the first 30,000 lines of the retail file, its year in 15 s),
# then checks the console with headless Chromium (console/tests/demo.test.mjs)
# and leaves screenshots of every page in console/test-results/demo-*.png.
# Installs chromium and the console's npm packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/browser-env.sh

WORK=$(mktemp -d)
DEMO_PID=
cleanup() {
  if [ -n "$DEMO_PID" ]; then kill "$DEMO_PID" 2>/dev/null || true; wait "$DEMO_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

DATA="$ROOT/../shared/data"
SHOPPERS="$WORK/shoppers.csv"
RETAIL="$WORK/retail.csv"
if [ -f "$DATA/online_shoppers_intention.csv" ]; then
  head -n 1201 "$DATA/online_shoppers_intention.csv" > "$SHOPPERS"
  export E2E_CUSTOMER=osi-c1
else
  echo "== $DATA/online_shoppers_intention.csv not found: generated sessions"
  node console/tests/gen-shoppers.mjs 1200 "$SHOPPERS"
  export E2E_CUSTOMER=osi-c1
fi
if [ -f "$DATA/online_retail.csv" ]; then
  head -n 30001 "$DATA/online_retail.csv" > "$RETAIL"
else
  echo "== $DATA/online_retail.csv not found: generated orders"
  python3 - "$RETAIL" <<'PY'
import random, sys
random.seed(1)
with open(sys.argv[1], "w") as f:
    f.write("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n")
    for i in range(1500):
        c = 12000 + random.randrange(300)
        day = 1 + i * 360 // 1500
        for l in range(random.randint(1, 6)):
            f.write(f"{536000 + i},{20000 + random.randrange(500)},ITEM,{random.randint(1, 12)},"
                    f"2011-{1 + day // 31:02d}-{1 + day % 28:02d} 10:{l:02d}:00,{random.uniform(0.5, 20):.2f},{c}.0,United Kingdom\n")
PY
fi

PORT=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
echo "== cartpulse demo on 127.0.0.1:$PORT"
CARTPULSE_DATABASE_URL="sqlite://$WORK/demo.db?mode=rwc" CARTPULSE_MODEL_STORE="$WORK/models" \
CARTPULSE_CONSOLE__STATIC_DIR="$ROOT/static" CARTPULSE_LOG=warn \
CARTPULSE_INFERENCE__SCORE_DEBOUNCE_MS=200 CARTPULSE_ACTORS__SNAPSHOT_MAX_DELAY_MS=1000 \
  "$BIN" demo --listen "127.0.0.1:$PORT" --file "$SHOPPERS" --retail "$RETAIL" --retail-seconds 15 --rate 150 \
  >"$WORK/demo.out" 2>"$WORK/demo.log" &
DEMO_PID=$!
PASSWORD=
for _ in $(seq 1 600); do
  kill -0 "$DEMO_PID" 2>/dev/null || { cat "$WORK/demo.log" >&2; echo "the demo exited" >&2; exit 1; }
  PASSWORD=$(sed -n 's/.*(user admin, password \([0-9a-f]*\)).*/\1/p' "$WORK/demo.log" | head -1)
  [ -n "$PASSWORD" ] && break
  sleep 0.5
done
[ -n "$PASSWORD" ] || { cat "$WORK/demo.log" >&2; echo "the demo printed no console password" >&2; exit 1; }
export E2E_BASE="http://127.0.0.1:$PORT" E2E_ADMIN_PASSWORD="$PASSWORD"
status=0
(cd console && node --test --test-concurrency=1 --test-reporter=spec "$@" tests/demo.test.mjs) || status=$?
echo "== demo log (last 30 lines)"; tail -30 "$WORK/demo.log" | tr '\r' '\n' | grep -v '^\s*$' | tail -30
echo "== screenshots in console/test-results/demo-*.png"
exit "$status"
