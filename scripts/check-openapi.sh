#!/usr/bin/env bash
# The API contract: starts the debug binary on a scratch SQLite database,
# fetches GET /v1/openapi.json (unauthenticated, cacheable: ETag and 304),
# checks it is what `cartpulse openapi` prints, and validates it with
# openapi-spec-validator (PyPI; the OpenAPI 3.1 meta-schemas, pinned below, in
# a venv under $HOME/.cache, reinstalled only when the pin changes).
# Fails loudly on any difference or validation error.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CARTPULSE_OPENAPI_VENV:-$HOME/.cache/cartpulse-venv-openapi}"
REQUIREMENTS='openapi-spec-validator==0.9.0'
stamp="$VENV/.cartpulse-requirements"
if [[ ! -x "$VENV/bin/openapi-spec-validator" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$REQUIREMENTS" ]]; then
    echo "== openapi: installing $REQUIREMENTS into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$REQUIREMENTS"
    printf '%s' "$REQUIREMENTS" >"$stamp"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"
BIN="${CARTPULSE_BIN:-}"
if [[ -z "$BIN" ]]; then
    cargo build --locked --quiet --bin cartpulse
    BIN="$CARGO_TARGET_DIR/debug/cartpulse"
fi

WORK=$(mktemp -d)
SERVER=
cleanup() {
    if [[ -n "$SERVER" ]]; then
        kill "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "check-openapi: FAILED: $*" >&2
    exit 1
}

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CARTPULSE_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --database-url "sqlite://$WORK/api.db?mode=rwc" \
    --model-store "$WORK/models" >"$WORK/serve.log" 2>&1 &
SERVER=$!
URL="http://127.0.0.1:$PORT/v1/openapi.json"
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/serve.log" >&2; fail "the server exited"; }
    sleep 0.1
done

echo "== openapi: GET /v1/openapi.json (no credentials)"
status=$(curl -s -D "$WORK/headers" -o "$WORK/served.json" -w '%{http_code}' "$URL")
[[ "$status" == 200 ]] || fail "GET /v1/openapi.json answered $status"
grep -qi '^content-type: application/json' "$WORK/headers" || fail "not served as application/json"
grep -qi '^cache-control: public' "$WORK/headers" || fail "not served cacheable (Cache-Control: public)"
etag=$(grep -i '^etag:' "$WORK/headers" | cut -d' ' -f2- | tr -d '\r')
[[ -n "$etag" ]] || fail "no ETag"
status=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$URL")
[[ "$status" == 304 ]] || fail "If-None-Match with the ETag answered $status, not 304"

"$BIN" openapi >"$WORK/printed.json"
cmp -s <(python3 -m json.tool --sort-keys "$WORK/served.json") <(python3 -m json.tool --sort-keys "$WORK/printed.json") ||
    fail "'cartpulse openapi' prints another document than the server serves"

echo "== openapi: openapi-spec-validator"
"$VENV/bin/openapi-spec-validator" "$WORK/served.json" || fail "openapi-spec-validator refused the document"
python3 - "$WORK/served.json" <<'EOF' || fail "the document misses a part of the contract"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["openapi"].startswith("3.1"), doc["openapi"]
ops = [(p, m) for p, item in doc["paths"].items() for m in item]
assert any(p.startswith("/v1/") for p, _ in ops), "no /v1 operation"
assert "x-websocket" in doc["paths"]["/v1/stream"]["get"], "no x-websocket on GET /v1/stream"
assert {"api_key", "console_session"} <= set(doc["components"]["securitySchemes"]), "security schemes"
print(f"   {len(ops)} operations, {len(doc['components']['schemas'])} schemas")
EOF
echo "== openapi: ok"
