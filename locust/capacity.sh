#!/usr/bin/env bash
# Capacity run: Locust headless against a running cartpulse, distributed over
# WORKERS worker processes (each process may hold at most 20,000 open files on
# these machines, so viewers are spread over them).
#
#   CARTPULSE_INGEST_KEY=… CARTPULSE_READ_KEY=… locust/capacity.sh http://127.0.0.1:8080
#
# Environment (defaults in brackets):
#   VIEWERS [2000]      dashboard WebSocket users (kpis + scores)
#   PRODUCERS [4]       shop backends posting event batches
#   EVENT_RATE [2000]   events/s the producers send together
#   BATCH_SIZE [50]     events per POST
#   DURATION [60]       seconds of the run (after which Locust stops everyone)
#   SPAWN_RATE [200]    users started per second
#   WORKERS [2]         Locust worker processes
#   P99_LIMIT_MS [250]  highest acceptable p99 of the update latency (server ts → receipt)
#   STREAM_AUTH [header]  header | message | token (docs/stream.md)
#   EXTRA_HOSTS []      more gateways of the same deployment, comma-separated base
#                       URLs; viewers and producers are spread round-robin over HOST
#                       and these (e.g. two gateways + a processor over Redis)
#   OUT [locust/results/<UTC time>]  where the CSV files and the HTML report go
#   LOCUST_VENV [$HOME/.cache/cartpulse-locust-venv]
#
# Exit status: 0 only if no request failed, the update-latency p99 of every
# topic is within P99_LIMIT_MS, viewers received kpis updates (when VIEWERS > 0)
# and producers had batches acknowledged (when PRODUCERS > 0). The last line of
# stdout is the result as JSON.
set -euo pipefail

if [[ $# -ne 1 || "$1" == -* ]]; then
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
HOST="${1%/}"
here="$(cd "$(dirname "$0")" && pwd)"

VIEWERS="${VIEWERS:-2000}"
PRODUCERS="${PRODUCERS:-4}"
EVENT_RATE="${EVENT_RATE:-2000}"
BATCH_SIZE="${BATCH_SIZE:-50}"
DURATION="${DURATION:-60}"
SPAWN_RATE="${SPAWN_RATE:-200}"
WORKERS="${WORKERS:-2}"
P99_LIMIT_MS="${P99_LIMIT_MS:-250}"
STREAM_AUTH="${STREAM_AUTH:-header}"
OUT="${OUT:-$here/results/$(date -u +%Y%m%dT%H%M%SZ)}"
LOCUST_VENV="${LOCUST_VENV:-$HOME/.cache/cartpulse-locust-venv}"
EXTRA_HOSTS="${EXTRA_HOSTS:-}"
export VIEWERS PRODUCERS EVENT_RATE BATCH_SIZE STREAM_AUTH EXTRA_HOSTS

for v in VIEWERS PRODUCERS BATCH_SIZE DURATION SPAWN_RATE WORKERS P99_LIMIT_MS; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "capacity: $v must be a whole number (got '${!v}')" >&2; exit 2; }
done
[[ "$EVENT_RATE" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "capacity: EVENT_RATE must be a number" >&2; exit 2; }
(( WORKERS >= 1 )) || { echo "capacity: WORKERS must be at least 1" >&2; exit 2; }
(( VIEWERS + PRODUCERS > 0 )) || { echo "capacity: nothing to run (VIEWERS=0 and PRODUCERS=0)" >&2; exit 2; }
if (( VIEWERS > 0 )) && [[ -z "${CARTPULSE_READ_KEY:-}" ]]; then
    echo "capacity: set CARTPULSE_READ_KEY (a read-scope key) for the viewers" >&2; exit 2
fi
if (( PRODUCERS > 0 )) && [[ -z "${CARTPULSE_INGEST_KEY:-}" ]]; then
    echo "capacity: set CARTPULSE_INGEST_KEY (an ingest-scope key) for the producers" >&2; exit 2
fi

# Locust and websocket-client in their own venv, reinstalled only when
# requirements.txt changes.
stamp="$LOCUST_VENV/.cartpulse-requirements"
if [[ ! -x "$LOCUST_VENV/bin/locust" ]] || ! cmp -s "$here/requirements.txt" "$stamp"; then
    echo "capacity: installing Locust into $LOCUST_VENV" >&2
    python3 -m venv "$LOCUST_VENV"
    "$LOCUST_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
fi

# Every viewer holds a socket: lift the soft open-files limit to the hard one.
ulimit -Sn "$(ulimit -Hn)"
per_worker=$(( (VIEWERS + PRODUCERS + WORKERS - 1) / WORKERS ))
if (( per_worker + 200 > $(ulimit -Sn) )); then
    echo "capacity: $per_worker users per worker exceed the open-files limit $(ulimit -Sn); raise WORKERS" >&2
    exit 2
fi

classes=()
(( VIEWERS > 0 )) && classes+=(DashboardViewer)
(( PRODUCERS > 0 )) && classes+=(ShopTraffic)
users=$(( VIEWERS + PRODUCERS ))

mkdir -p "$OUT"
echo "capacity: $VIEWERS viewers + $PRODUCERS producers ($EVENT_RATE events/s in batches of $BATCH_SIZE) for ${DURATION}s against $HOST, $WORKERS workers; reports in $OUT" >&2

port=$("$LOCUST_VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
worker_pids=()
cleanup() {
    for pid in "${worker_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

"$LOCUST_VENV/bin/locust" -f "$here/locustfile.py" --master --headless \
    --master-bind-host 127.0.0.1 --master-bind-port "$port" --expect-workers "$WORKERS" \
    --host "$HOST" -u "$users" -r "$SPAWN_RATE" --run-time "${DURATION}s" --stop-timeout 5 \
    --csv "$OUT/locust" --csv-full-history --html "$OUT/report.html" \
    --only-summary --loglevel WARNING --logfile "$OUT/master.log" \
    "${classes[@]}" >"$OUT/master.out" 2>&1 &
master_pid=$!
for i in $(seq 1 "$WORKERS"); do
    "$LOCUST_VENV/bin/locust" -f "$here/locustfile.py" --worker \
        --master-host 127.0.0.1 --master-port "$port" --loglevel WARNING \
        --logfile "$OUT/worker-$i.log" "${classes[@]}" >"$OUT/worker-$i.out" 2>&1 &
    worker_pids+=($!)
done
locust_rc=0
wait "$master_pid" || locust_rc=$?
for pid in "${worker_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
worker_pids=()

if [[ ! -s "$OUT/locust_stats.csv" ]]; then
    echo "capacity: Locust wrote no statistics (exit $locust_rc); see $OUT/master.out and $OUT/master.log" >&2
    tail -20 "$OUT/master.out" >&2 || true
    exit 1
fi

"$LOCUST_VENV/bin/python" - "$OUT" "$P99_LIMIT_MS" "$VIEWERS" "$PRODUCERS" "$EVENT_RATE" "$DURATION" <<'PY'
import csv, json, sys

out, limit, viewers, producers, rate, duration = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
rows = list(csv.DictReader(open(f"{out}/locust_stats.csv")))
failures = list(csv.DictReader(open(f"{out}/locust_failures.csv")))
agg = next(r for r in rows if r["Name"] == "Aggregated")
by_name = {(r["Type"], r["Name"]): r for r in rows if r["Name"] != "Aggregated"}

def num(r, k):
    v = r.get(k, "")
    return float(v) if v not in ("", "N/A") else None

print(f"{'type':<5} {'name':<16} {'requests':>9} {'failures':>8} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>8}")
for (t, n), r in sorted(by_name.items()):
    print(f"{t:<5} {n:<16} {r['Request Count']:>9} {r['Failure Count']:>8} {float(r['Requests/s']):>8.1f} "
          f"{r['50%']:>7} {r['95%']:>7} {r['99%']:>7} {float(r['Max Response Time']):>8.0f}")
for f in failures:
    print(f"FAILURE x{f['Occurrences']}: {f['Method']} {f['Name']}: {f['Error'][:300]}")

problems = []
total_failures = int(agg["Failure Count"])
if total_failures:
    problems.append(f"{total_failures} failed requests")
updates = {n: r for (t, n), r in by_name.items() if t == "WS" and n.startswith("update ")}
p99 = {n.split(" ", 1)[1]: num(r, "99%") for n, r in updates.items()}
for topic, v in p99.items():
    if v is not None and v > limit:
        problems.append(f"update latency p99 for {topic} is {v:.0f} ms > {limit:.0f} ms")
if viewers > 0 and int((updates.get("update kpis") or {}).get("Request Count", 0)) == 0:
    problems.append("viewers received no kpis updates")
ingest = by_name.get(("POST", "/v1/events"))
events_per_s = None
if producers > 0:
    if ingest is None or int(ingest["Request Count"]) - int(ingest["Failure Count"]) == 0:
        problems.append("no event batch was acknowledged")
    else:
        import os
        batch = int(os.environ.get("BATCH_SIZE", "50"))
        events_per_s = round(float(ingest["Requests/s"]) * batch, 1)
        if events_per_s < 0.8 * rate:
            # Not a failure by itself (the run may include the spawn-up), but say so.
            print(f"note: producers reached {events_per_s} events/s of the {rate:g} asked for")

result = {
    "ok": not problems,
    "problems": problems,
    "viewers": viewers,
    "producers": producers,
    "event_rate_target": rate,
    "event_rate_achieved": events_per_s,
    "duration_s": duration,
    "requests": int(agg["Request Count"]),
    "failures": total_failures,
    "update_p99_ms": p99,
    "update_p99_limit_ms": limit,
    "connect_p99_ms": num(by_name.get(("WS", "connect"), {}), "99%"),
    "ingest_p99_ms": num(ingest or {}, "99%"),
    "report": f"{out}/report.html",
}
print("PASS" if not problems else "FAIL: " + "; ".join(problems), file=sys.stderr)
print(json.dumps(result))
sys.exit(0 if not problems else 1)
PY
