#!/usr/bin/env bash
# Our K-Means against scikit-learn's on the very same matrix, in one run.
#
# 1. Without --database-url: replays the whole Online Retail file into a
#    release `serve` on a fresh SQLite file (timed: the floor is 60 s), then
#    stops it gracefully so every profile is flushed. With --database-url the
#    profiles already in that database are used (a new version is stored there).
# 2. `cartpulse segment --k auto --export-matrix`, three times (the first is
#    timed: the floor is 10 s); its JSON gives the chosen k, our inertia and
#    our fit time at every k. Our fit time per k is the minimum of the three.
# 3. scikit-learn's KMeans (k-means++, n_init = our N_RUNS = 10, Lloyd,
#    max_iter 300, tol 1e-4, random_state 42) on the exported matrix at every
#    k we tried, three fits per k, the minimum kept; fit times measured around
#    `fit` only, as ours are.
# Both sides run on the same CPUs (taskset -c $CPUS, default 0,1) and
# scikit-learn's OpenMP/BLAS threads are capped at that count.
#
# Prints a table, then one JSON line (last line of stdout): inertia ours and
# theirs at the chosen k and their ratio, the worst ratio over all k (floor:
# ≤ 1.001), the fit times side by side and their ratio (floor: ours ≤ theirs),
# and the wall times.
#
# Python runs in a venv at $HOME/.cache/cartpulse-venv-bench with pinned
# scikit-learn and numpy (created on first use; needs PyPI).
# Usage: scripts/bench-segment-sklearn.sh [--database-url URL] [--k N|auto]
set -euo pipefail
cd "$(dirname "$0")/.."
FILE=${FILE:-../shared/data/online_retail.csv}
DB=""
K=auto
while [ $# -gt 0 ]; do
    case "$1" in
        --database-url) DB=$2; shift 2 ;;
        --k) K=$2; shift 2 ;;
        *) echo "unknown argument $1 (usage: $0 [--database-url URL] [--k N|auto])" >&2; exit 2 ;;
    esac
done
SKLEARN_VERSION=1.9.1
NUMPY_VERSION=2.4.6
CPUS=${CPUS:-0,1}
NCPU=$(echo "$CPUS" | tr ',' '\n' | wc -l)
PIN=()
if command -v taskset >/dev/null 2>&1; then PIN=(taskset -c "$CPUS"); fi
VENV="$HOME/.cache/cartpulse-venv-bench"
if ! "$VENV/bin/python" -c "import sklearn, numpy; assert sklearn.__version__ == '$SKLEARN_VERSION' and numpy.__version__ == '$NUMPY_VERSION'" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "scikit-learn==$SKLEARN_VERSION" "numpy==$NUMPY_VERSION"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"
# CARTPULSE_BIN: use this binary instead of building one.
if [ -n "${CARTPULSE_BIN:-}" ]; then BIN=$CARTPULSE_BIN; else
    cargo build --release --locked -q
    BIN="$CARGO_TARGET_DIR/release/cartpulse"
fi
WORK=$(mktemp -d)
SERVER=""
cleanup() {
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
now() { python3 -c 'import time; print(time.monotonic())'; }

REPLAY_JSON=null
REPLAY_WALL=null
DRAIN_WALL=null
if [ -z "$DB" ]; then
    [ -f "$FILE" ] || { echo "data file $FILE not found (see ../shared/data/README.md)" >&2; exit 2; }
    DB="sqlite://$WORK/bench.db?mode=rwc"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    KEY=$("$BIN" keys create --name bench --scope ingest --database-url "$DB" 2>/dev/null)
    CARTPULSE_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --database-url "$DB" &
    SERVER=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
    echo "replaying $FILE into a release serve on SQLite ..." >&2
    T0=$(now)
    REPLAY_JSON=$("$BIN" replay --format retail --file "$FILE" --target "http://127.0.0.1:$PORT" --api-key "$KEY" --quiet | tail -n 1)
    T1=$(now)
    # SIGTERM: the server drains and flushes every profile before it exits.
    kill -TERM "$SERVER"
    wait "$SERVER" || true
    SERVER=""
    T2=$(now)
    REPLAY_WALL=$(python3 -c "print(round($T1 - $T0, 3))")
    DRAIN_WALL=$(python3 -c "print(round($T2 - $T1, 3))")
fi

echo "segmenting (--k $K, 3 times) ..." >&2
T0=$(now)
SEG_JSON=$("${PIN[@]}" "$BIN" segment --k "$K" --export-matrix "$WORK/matrix.csv" --database-url "$DB" | tail -n 1)
T1=$(now)
SEG_WALL=$(python3 -c "print(round($T1 - $T0, 3))")
SEG_JSON2=$("${PIN[@]}" "$BIN" segment --k "$K" --database-url "$DB" | tail -n 1)
SEG_JSON3=$("${PIN[@]}" "$BIN" segment --k "$K" --database-url "$DB" | tail -n 1)

echo "scikit-learn on the same matrix (3 fits per k) ..." >&2
OMP_NUM_THREADS=$NCPU OPENBLAS_NUM_THREADS=$NCPU MKL_NUM_THREADS=$NCPU "${PIN[@]}" "$VENV/bin/python" - "$WORK/matrix.csv" "$SEG_JSON" "$REPLAY_JSON" "$REPLAY_WALL" "$DRAIN_WALL" "$SEG_WALL" "$SEG_JSON2" "$SEG_JSON3" <<'EOF'
import json, sys, time
import numpy as np
import sklearn
from sklearn.cluster import KMeans

matrix_path, seg, replay, replay_wall, drain_wall, seg_wall, seg2, seg3 = sys.argv[1:]
seg = json.loads(seg)
replay = json.loads(replay)
others = [json.loads(seg2), json.loads(seg3)]
# Our fit time per k: the least of the three runs (each run is deterministic:
# the same inertia every time).
for o in others:
    for s, t in zip(seg["scores"], o["scores"]):
        assert s["k"] == t["k"] and abs(s["inertia"] - t["inertia"]) <= 1e-9 * s["inertia"], (s, t)
        s["fit_s"] = min(s["fit_s"], t["fit_s"])
x = np.loadtxt(matrix_path, delimiter=",", skiprows=1, usecols=range(1, 30), dtype=np.float64)
assert x.shape[0] == seg["n_customers"], (x.shape, seg["n_customers"])
N_RUNS = 10  # src/jobs/segment/mod.rs N_RUNS
rows = []
for s in seg["scores"]:
    k = s["k"]
    theirs_s = float("inf")
    for _ in range(3):
        km = KMeans(n_clusters=k, init="k-means++", n_init=N_RUNS, algorithm="lloyd", max_iter=300, tol=1e-4, random_state=42)
        t = time.perf_counter()
        km.fit(x)
        theirs_s = min(theirs_s, time.perf_counter() - t)
    rows.append({"k": k, "ours_inertia": s["inertia"], "sklearn_inertia": float(km.inertia_),
                 "ratio": s["inertia"] / float(km.inertia_), "ours_fit_s": s["fit_s"], "sklearn_fit_s": theirs_s})
chosen = next(r for r in rows if r["k"] == seg["k"])
print(f"{x.shape[0]} customers x {x.shape[1]} features; scikit-learn {sklearn.__version__}, numpy {np.__version__}")
print(f"{'k':>3}  {'ours inertia':>13}  {'sklearn inertia':>15}  {'ratio':>7}  {'ours fit s':>10}  {'sklearn fit s':>13}  {'time ratio':>10}")
for r in rows:
    mark = "  <- chosen" if r["k"] == seg["k"] else ""
    print(f"{r['k']:>3}  {r['ours_inertia']:>13.2f}  {r['sklearn_inertia']:>15.2f}  {r['ratio']:>7.4f}  "
          f"{r['ours_fit_s']:>10.3f}  {r['sklearn_fit_s']:>13.3f}  {r['ours_fit_s'] / r['sklearn_fit_s']:>10.2f}{mark}")
out = {
    "customers": x.shape[0],
    "k": seg["k"],
    "silhouette": seg["silhouette"],
    "ours_inertia": chosen["ours_inertia"],
    "sklearn_inertia": chosen["sklearn_inertia"],
    "ratio": round(chosen["ratio"], 6),
    "worst_ratio_any_k": round(max(r["ratio"] for r in rows), 6),
    "ratio_floor": 1.001,
    "fit_time_ratio_by_k": {r["k"]: round(r["ours_fit_s"] / r["sklearn_fit_s"], 3) for r in rows},
    "worst_fit_time_ratio": round(max(r["ours_fit_s"] / r["sklearn_fit_s"] for r in rows), 3),
    "fit_time_ratio_floor": 1.0,
    "ours_fit_s": round(chosen["ours_fit_s"], 4),
    "sklearn_fit_s": round(chosen["sklearn_fit_s"], 4),
    "ours_fit_all_k_s": round(sum(r["ours_fit_s"] for r in rows), 4),
    "sklearn_fit_all_k_s": round(sum(r["sklearn_fit_s"] for r in rows), 4),
    "segment_wall_s": float(seg_wall),
    "segment_elapsed_s": round(seg["elapsed_s"], 3),
    "segment_floor_s": 10,
    "replay_wall_s": None if replay_wall == "null" else float(replay_wall),
    "replay_floor_s": 60,
    "replay_accepted": None if replay is None else replay["accepted"],
    "replay_rejected": None if replay is None else replay["rejected"],
    "drain_wall_s": None if drain_wall == "null" else float(drain_wall),
    "sklearn": sklearn.__version__,
    "cpus": len(__import__("os").sched_getaffinity(0)),
}
print(json.dumps(out))
EOF
