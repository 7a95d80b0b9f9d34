#!/usr/bin/env bash
# Capacity run against a multi-replica deployment it starts itself on this
# machine: one `cartpulse serve --role processor` and two `--role gateway`
# replicas over a fresh Postgres database and a fresh Redis key prefix, then
# locust/capacity.sh with viewers and producers spread over both gateways
# (EXTRA_HOSTS). Every capacity.sh variable (VIEWERS, PRODUCERS, EVENT_RATE,
# DURATION, WORKERS, P99_LIMIT_MS, OUT, …) passes through.
#
#   locust/replicas.sh
#
# Environment (defaults in brackets):
#   CARTPULSE_BIN   the binary [$CARGO_TARGET_DIR/release/cartpulse]
#   REDIS_URL [redis://127.0.0.1:6379]
#   PG_ADMIN_URL [postgres://postgres@127.0.0.1:5432/postgres]  (a database is created and dropped)
#   PARTITIONS [8]
# Exit status: capacity.sh's; additionally 1 if the processor did not commit
# every event the gateways acknowledged.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"
bin="${CARTPULSE_BIN:-$target/release/cartpulse}"
[[ -x "$bin" ]] || { echo "replicas: no binary at $bin; run cargo build --release or set CARTPULSE_BIN" >&2; exit 2; }
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PARTITIONS="${PARTITIONS:-8}"

tmp="$(mktemp -d -t cartpulse-replicas.XXXXXX)"
db="cp_capacity_$(date -u +%Y%m%d%H%M%S)_$$"
prefix="cp_cap_$$"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    redis-cli -u "$REDIS_URL" --scan --pattern "$prefix:*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null || true
}
trap cleanup EXIT

psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $db" >/dev/null
export CARTPULSE_DATABASE_URL="${PG_ADMIN_URL%/*}/$db"
export CARTPULSE_REDIS_URL="$REDIS_URL" CARTPULSE_REDIS__PREFIX="$prefix" CARTPULSE_REDIS__PARTITIONS="$PARTITIONS"
export CARTPULSE_STREAM__TOKEN_SECRET="replicas-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n")"
"$bin" migrate >/dev/null 2>&1
ingest_key="$("$bin" keys create --name cap-ingest --scope ingest 2>/dev/null)"
read_key="$("$bin" keys create --name cap-read --scope read 2>/dev/null)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start() { # role port
    "$bin" serve --role "$1" --listen "127.0.0.1:$2" >"$tmp/$1-$2.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 150); do
        curl -fsS -o /dev/null "http://127.0.0.1:$2/readyz" 2>/dev/null && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || { echo "replicas: $1 exited:" >&2; tail -20 "$tmp/$1-$2.log" >&2; exit 1; }
        sleep 0.2
    done
    echo "replicas: $1 on $2 never became ready" >&2; exit 1
}
pp="$(free_port)"; ga="$(free_port)"; gb="$(free_port)"
start processor "$pp"
start gateway "$ga"
start gateway "$gb"
echo "replicas: processor :$pp, gateways :$ga and :$gb (Postgres $db, Redis prefix $prefix; logs in $tmp)" >&2

rc=0
CARTPULSE_INGEST_KEY="$ingest_key" CARTPULSE_READ_KEY="$read_key" EXTRA_HOSTS="http://127.0.0.1:$gb" \
    "$here/capacity.sh" "http://127.0.0.1:$ga" || rc=$?

# Every acknowledged event reaches the log: wait for the streams to drain.
queued() { curl -fsS "http://127.0.0.1:$1/metrics" | awk '$1 == "cartpulse_events_queued_total" {print $2}'; }
total=$(( $(queued "$ga") + $(queued "$gb") ))
for _ in $(seq 1 300); do
    backlog="$(curl -fsS "http://127.0.0.1:$ga/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("stream_backlog_events", -1))')"
    [[ "$backlog" == 0 ]] && break
    sleep 0.2
done
logged="$(psql "$CARTPULSE_DATABASE_URL" -Atc 'SELECT count(*) FROM events')"
echo "replicas: gateways acknowledged $total events; the log holds $logged (backlog $backlog)" >&2
if [[ "$logged" != "$total" ]]; then
    echo "replicas: acknowledged and logged counts differ" >&2
    rc=1
fi
exit "$rc"
