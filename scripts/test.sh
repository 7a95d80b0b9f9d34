#!/usr/bin/env bash
# The test command: starts what the tests need, then runs every test of the
# workspace (unit tests, and the black-box suite on SQLite and Postgres).
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ulimit -Sn 20000 2>/dev/null || true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"
ensure_postgres
ensure_redis
ensure_moto
drop_test_databases
drop_test_redis_keys
cargo test --workspace --locked "$@"
drop_test_databases
drop_test_redis_keys
