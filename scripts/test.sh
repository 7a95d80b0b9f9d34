#!/usr/bin/env bash
# The test command: starts what the tests need, then runs every test of the
# workspace (unit tests, and the black-box suite on SQLite and Postgres, on
# a single Redis and on a 6-node Redis Cluster on loopback).
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ulimit -Sn 20000 2>/dev/null || true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"
ensure_postgres
ensure_redis
ensure_redis_cluster
ensure_moto
ensure_lake_python
export CARTPULSE_TEST_REDIS_CLUSTER_URL="$(redis_cluster_url)"
drop_test_databases
drop_test_redis_keys
drop_test_redis_cluster_keys
cargo test --workspace --locked "$@"
drop_test_databases
drop_test_redis_keys
drop_test_redis_cluster_keys
