#!/usr/bin/env bash
# The purchase-intent model against logistic regression, XGBoost and
# scikit-learn's HistGradientBoosting on exactly the same folds.
#
# 1. Unless --folds/--oof are given: `cartpulse train --repeats R --seed S
#    --folds-out F --oof-out O --no-model` (release build) writes every row's
#    fold and out-of-fold probability per repeat.
# 2. scripts/bench_model_peers.py fits every peer on those folds, with stated
#    hyperparameters and with a small grid tuned on inner folds of each
#    training part only, and prints per-model figures and the per-fold paired
#    differences (cartpulse − peer) with the Nadeau–Bengio corrected
#    resampled t-test p-value. Last stdout line: JSON.
#
# Python runs in a venv at $HOME/.cache/cartpulse-venv-peers with pinned
# scikit-learn, numpy, scipy and xgboost-cpu (created on first use; needs PyPI).
# Usage: scripts/bench-model-peers.sh [--seed S] [--repeats R] [--data CSV]
#            [--folds FILE --oof FILE] [--config JSON] [--no-tuning] [--jobs N]
#            [--peers-cache FILE]   (peers' per-fold figures kept and reused: they
#                                    do not depend on cartpulse's configuration)
# Figures of record: --seed 1001 --repeats 10 (never used for choosing anything).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data/online_shoppers_intention.csv
SEED=42
REPEATS=1
FOLDS=""
OOF=""
CONFIG=""
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seed) SEED=$2; shift 2 ;;
        --repeats) REPEATS=$2; shift 2 ;;
        --data) DATA=$2; shift 2 ;;
        --folds) FOLDS=$2; shift 2 ;;
        --oof) OOF=$2; shift 2 ;;
        --config) CONFIG=$2; shift 2 ;;
        --no-tuning) EXTRA+=(--no-tuning); shift ;;
        --jobs) EXTRA+=(--jobs "$2"); shift 2 ;;
        --peers-cache) EXTRA+=(--peers-cache "$2"); shift 2 ;;
        *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
SKLEARN_VERSION=1.6.1
NUMPY_VERSION=2.2.6
SCIPY_VERSION=1.15.3
XGBOOST_VERSION=3.2.0
VENV="$HOME/.cache/cartpulse-venv-peers"
if ! "$VENV/bin/python" -c "import sklearn, numpy, scipy, xgboost; assert (sklearn.__version__, numpy.__version__, scipy.__version__, xgboost.__version__) == ('$SKLEARN_VERSION', '$NUMPY_VERSION', '$SCIPY_VERSION', '$XGBOOST_VERSION')" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "scikit-learn==$SKLEARN_VERSION" "numpy==$NUMPY_VERSION" "scipy==$SCIPY_VERSION" \
        "xgboost-cpu==$XGBOOST_VERSION"
fi
# One thread each: OpenMP's spinning threads on 2 shared, busy cores are many
# times slower than one thread (measured: 72 s against 5 s per fold).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[ -f "$DATA" ] || { echo "data file $DATA not found (see ../shared/data/README.md)" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -z "$FOLDS" ] || [ -z "$OOF" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"
    # CARTPULSE_BIN: use this binary instead of building one.
    if [ -n "${CARTPULSE_BIN:-}" ]; then BIN=$CARTPULSE_BIN; else
        cargo build --release --locked -q --bin cartpulse
        BIN="$CARGO_TARGET_DIR/release/cartpulse"
    fi
    FOLDS="$WORK/folds.csv"
    OOF="$WORK/oof.csv"
    echo "cartpulse train --seed $SEED --repeats $REPEATS ..." >&2
    "$BIN" train --data "$DATA" --seed "$SEED" --repeats "$REPEATS" --folds-out "$FOLDS" --oof-out "$OOF" \
        --no-model ${CONFIG:+--config "$CONFIG"} | tail -n 1 > "$WORK/train.json"
fi
"$VENV/bin/python" scripts/bench_model_peers.py --data "$DATA" --folds "$FOLDS" --oof "$OOF" ${EXTRA[@]+"${EXTRA[@]}"}
