#!/usr/bin/env bash
# A rolling restart users do not notice, shown on loopback: 2 gateways and
# 2 leased processors over Redis and Postgres, producers at 2,000 events/s
# and 500 WebSocket viewers; every replica is replaced in turn (the new one
# ready before the old one gets SIGTERM), then the run reports failed
# requests, lost / doubled events, missed stream frames and ingest p99
# during the roll beside steady state (docs/operations.md, "Rolling
# restarts"). Exits non-zero if users could have noticed.
# Usage: scripts/rolling-restart.sh [bench roll flags, e.g. --rate 5000 --viewers 1000]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ulimit -Sn 20000 2>/dev/null || true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"
ensure_postgres
ensure_redis
cargo build --release --locked -q
exec "$CARGO_TARGET_DIR/release/cartpulse" bench roll "$@"
