#!/usr/bin/env bash
# Short capacity smoke run (~20 s, a few hundred users) against a cartpulse it
# starts itself: `cartpulse serve` on a fresh SQLite file in a temp directory,
# on a free loopback port, with ingest and read keys made by `cartpulse keys create`.
#
#   locust/smoke.sh
#
# Environment (defaults in brackets):
#   CARTPULSE_BIN   the binary [$CARGO_TARGET_DIR/release/cartpulse, else …/debug/cartpulse]
#   SMOKE_VIEWERS [200]  SMOKE_PRODUCERS [2]  SMOKE_EVENT_RATE [500]  SMOKE_DURATION [20]
#   P99_LIMIT_MS [250]   OUT [temp dir, kept and printed]
# Exit status: capacity.sh's (0 = no failed request and latency within the limit).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"

bin="${CARTPULSE_BIN:-}"
if [[ -z "$bin" ]]; then
    for candidate in "$target/release/cartpulse" "$target/debug/cartpulse"; do
        if [[ -x "$candidate" ]]; then bin="$candidate"; break; fi
    done
fi
if [[ -z "$bin" || ! -x "$bin" ]]; then
    echo "smoke: no cartpulse binary; run \`cargo build --release\` (CARGO_TARGET_DIR=$target) or set CARTPULSE_BIN" >&2
    exit 2
fi

tmp="$(mktemp -d -t cartpulse-smoke.XXXXXX)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp/db"
}
trap cleanup EXIT

mkdir -p "$tmp/db"
export CARTPULSE_DATABASE_URL="sqlite://$tmp/db/smoke.db?mode=rwc"
# The smoke run measures the service, not fsync of this machine's disk.
export CARTPULSE_DATABASE__SQLITE_SYNCHRONOUS=normal
unset CARTPULSE_REDIS_URL

ingest_key="$("$bin" keys create --name smoke-ingest --scope ingest 2>/dev/null)"
read_key="$("$bin" keys create --name smoke-read --scope read 2>/dev/null)"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
"$bin" serve --listen "127.0.0.1:$port" >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$base/readyz" 2>/dev/null; then break; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "smoke: cartpulse serve exited; its log:" >&2; tail -20 "$tmp/server.log" >&2; exit 1
    fi
    sleep 0.2
done
curl -fsS -o /dev/null "$base/readyz" || { echo "smoke: $base/readyz never answered 200" >&2; exit 1; }
echo "smoke: $bin serving on $base (log: $tmp/server.log)" >&2

rc=0
CARTPULSE_INGEST_KEY="$ingest_key" CARTPULSE_READ_KEY="$read_key" \
    VIEWERS="${SMOKE_VIEWERS:-200}" PRODUCERS="${SMOKE_PRODUCERS:-2}" \
    EVENT_RATE="${SMOKE_EVENT_RATE:-500}" BATCH_SIZE="${BATCH_SIZE:-50}" \
    DURATION="${SMOKE_DURATION:-20}" SPAWN_RATE="${SPAWN_RATE:-100}" WORKERS="${WORKERS:-2}" \
    OUT="${OUT:-$tmp/report}" \
    "$here/capacity.sh" "$base" || rc=$?

# The server must have applied what it acknowledged.
applied="$(curl -fsS "$base/metrics" | awk '$1 == "cartpulse_events_ingested_total" {print $2}')"
echo "smoke: server counted ${applied:-?} ingested events; reports in ${OUT:-$tmp/report}" >&2
exit "$rc"
