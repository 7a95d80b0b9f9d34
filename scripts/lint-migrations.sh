#!/usr/bin/env bash
# Migration lint: the schema changes must be expand/contract, so the release
# that is running keeps working while the next one migrates the database
# under it (docs/operations.md, "Release and rollback").
#
#   CARTPULSE_BIN=target/debug/cartpulse scripts/lint-migrations.sh
#
# The migrations are Rust (sea-orm-migration, migration/src/m*.rs): there is no
# SQL file to lint. So this runs `cartpulse migrate` on a fresh Postgres
# database through a small recording proxy on loopback, which keeps the SQL
# text of every statement the binary sends (simple and extended protocol),
# cuts it into one file per migration (at the row each migration writes to
# seaql_migrations, in the order of migration/src/m*.rs) and runs squawk
# (npm's squawk-cli, installed under $HOME/.cache/cartpulse-squawk) over the
# files, for the Postgres major version of production (terraform's
# db_engine_version).
#
# Rules left out: the style rules (integer and text types, timestamptz,
# identity columns, IF [NOT] EXISTS, lock timeouts), which say nothing about
# whether a running release survives the migration. Every rule about breaking
# the previous binary (dropping or renaming a column or table, changing a
# column's type, adding a NOT NULL column without a default) and about long
# locks (indexes without CONCURRENTLY, constraints without NOT VALID) stays.
# A migration that must break one on purpose gets its name in
# MIGRATION_LINT_ALLOW below, with the reason, after review.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[lint-migrations] $*" >&2; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"
BIN="${CARTPULSE_BIN:-$CARGO_TARGET_DIR/debug/cartpulse}"
[[ -x "$BIN" ]] || { log "no cartpulse binary at $BIN (set CARTPULSE_BIN)"; exit 1; }
PG_HOST="${CARTPULSE_LINT_PG_HOST:-127.0.0.1}"
PG_PORT="${CARTPULSE_LINT_PG_PORT:-5432}"

SQUAWK_DIR="${CARTPULSE_SQUAWK_DIR:-$HOME/.cache/cartpulse-squawk}"
SQUAWK_PACKAGE='squawk-cli@2.66.0'
EXCLUDED_RULES='prefer-bigint-over-int,prefer-bigint-over-smallint,prefer-identity,prefer-text-field,prefer-timestamp-tz,prefer-robust-stmts,require-lock-timeout,require-statement-timeout'
# Migrations exempt from the lint, one per line: "name  reason".
MIGRATION_LINT_ALLOW='m20261128_000001_add_live_segments  released before this check: builds idx_customers_segment without CONCURRENTLY, so writes to customers wait while it builds (new indexes on existing tables are built CONCURRENTLY by hand before the release, docs/operations.md)
m20261205_000001_partition_events  reviewed: turns events into a table partitioned by day (rename, copy, drop), which cannot be expand-only; a processor of the previous release cannot commit into it (its ON CONFLICT (event_id) has no unique index to match), so the processors of the previous release are stopped before the first new one starts; gateways keep acknowledging into Redis meanwhile (docs/operations.md, "Release and rollback")
m20261206_000001_event_ids_c_collation  reviewed: changes only the collation of event_ids.event_id (no row is rewritten; the primary key is rebuilt under an exclusive lock); ships in the same release as m20261205_000001_partition_events, whose processors are stopped while it runs'

if [[ ! -x "$SQUAWK_DIR/node_modules/.bin/squawk" ]] || [[ "$(cat "$SQUAWK_DIR/.cartpulse-package" 2>/dev/null)" != "$SQUAWK_PACKAGE" ]]; then
    log "installing $SQUAWK_PACKAGE into $SQUAWK_DIR"
    rm -rf "$SQUAWK_DIR"
    mkdir -p "$SQUAWK_DIR"
    npm install --prefix "$SQUAWK_DIR" --no-save --no-audit --no-fund --loglevel=error "$SQUAWK_PACKAGE"
    printf '%s' "$SQUAWK_PACKAGE" >"$SQUAWK_DIR/.cartpulse-package"
fi
squawk="$SQUAWK_DIR/node_modules/.bin/squawk"

pg_major=$(sed -n '/variable "db_engine_version"/,/^}/s/.*default *= *"\([0-9]*\).*/\1/p' terraform/variables.tf)
pg_major="${pg_major:-16}"

work=$(mktemp -d)
db="cp_lint_migrations_$$"
proxy_pid=""
cleanup() {
    if [[ -n "$proxy_pid" ]]; then kill "$proxy_pid" 2>/dev/null || true; fi
    psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -qAtc "CREATE DATABASE $db" >/dev/null

# The recording proxy: forwards bytes both ways unchanged and writes every
# statement the client executes, one JSON object per line: the SQL of a
# simple Query ('Q'), or of the prepared statement a Bind ('B') runs (sqlx
# prepares a statement once and binds it again and again), with the Bind's
# first parameter when it is text. It prints its port once it listens.
python3 - "$PG_HOST" "$PG_PORT" "$work/statements.jsonl" >"$work/proxy.port" 2>"$work/proxy.log" <<'PY' &
import json, socket, struct, sys, threading

host, port, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = open(out_path, "a", encoding="utf-8")
lock = threading.Lock()

def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf

def client_to_server(client, server):
    prepared = {}
    try:
        # Untyped start: SSLRequest / GSSENCRequest (answered 'N' by a server
        # without TLS, which is what loopback trust auth is) and the startup message.
        while True:
            head = recv_exact(client, 8)
            length, code = struct.unpack("!II", head)
            body = recv_exact(client, length - 8)
            server.sendall(head + body)
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                continue
            break
        while True:
            head = recv_exact(client, 5)
            kind, length = head[:1], struct.unpack("!I", head[1:])[0]
            body = recv_exact(client, length - 4)
            server.sendall(head + body)
            record = None
            if kind == b"Q":
                record = {"sql": body.split(b"\0", 1)[0].decode("utf-8", "replace")}
            elif kind == b"P":
                name, sql, _ = body.split(b"\0", 2)
                prepared[name] = sql.decode("utf-8", "replace")
            elif kind == b"B":
                _portal, name, rest = body.split(b"\0", 2)
                record = {"sql": prepared.get(name, "")}
                try:
                    nfmt = struct.unpack("!H", rest[:2])[0]
                    pos = 2 + 2 * nfmt
                    nparams = struct.unpack("!H", rest[pos:pos + 2])[0]
                    if nparams:
                        n = struct.unpack("!i", rest[pos + 2:pos + 6])[0]
                        if n >= 0:
                            record["param"] = rest[pos + 6:pos + 6 + n].decode("utf-8")
                except (struct.error, UnicodeDecodeError):
                    pass
            if record and record["sql"]:
                with lock:
                    out.write(json.dumps(record) + "\n")
                    out.flush()
    except (EOFError, OSError):
        pass
    finally:
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(16)
print(listener.getsockname()[1], flush=True)
while True:
    client, _ = listener.accept()
    server = socket.create_connection((host, port))
    threading.Thread(target=client_to_server, args=(client, server), daemon=True).start()
    threading.Thread(target=pipe, args=(server, client), daemon=True).start()
PY
proxy_pid=$!
for _ in $(seq 1 50); do [[ -s "$work/proxy.port" ]] && break; sleep 0.1; done
proxy_port=$(cat "$work/proxy.port")
[[ -n "$proxy_port" ]] || { cat "$work/proxy.log" >&2; log "the recording proxy did not start"; exit 1; }

CARTPULSE_DATABASE_URL="postgres://postgres@127.0.0.1:$proxy_port/$db?sslmode=disable" \
    "$BIN" migrate >"$work/migrate.log" 2>&1 || { cat "$work/migrate.log" >&2; log "cartpulse migrate failed"; exit 1; }
kill "$proxy_pid" 2>/dev/null || true
wait "$proxy_pid" 2>/dev/null || true
proxy_pid=""

# One SQL file per migration, named after it.
mapfile -t migrations < <(find migration/src -maxdepth 1 -name 'm[0-9]*_*.rs' -printf '%f\n' | sed 's/\.rs$//' | sort)
mkdir -p "$work/sql"
python3 - "$work/statements.jsonl" "$work/sql" "${migrations[@]}" <<'PY'
import json, re, sys

statements_path, out_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
records = [json.loads(line) for line in open(statements_path, encoding="utf-8")]
skip = re.compile(r"^\s*(SELECT|BEGIN|COMMIT|ROLLBACK|SET|SHOW|SAVEPOINT|RELEASE)\b", re.I)
bookkeeping = re.compile(r'"?seaql_migrations"?', re.I)
insert_row = re.compile(r'^\s*INSERT\s+INTO\s+"?seaql_migrations"?', re.I)

chunks, current = [], []
for record in records:
    sql = record["sql"]
    if insert_row.match(sql):
        chunks.append((record.get("param"), current))
        current = []
    elif not skip.match(sql) and not bookkeeping.search(sql):
        current.append(sql.strip().rstrip(";"))
if current:
    sys.exit(f"{len(current)} schema statement(s) after the last migration's bookkeeping row: {current[:3]}")
if len(chunks) != len(names):
    sys.exit(f"{len(chunks)} migrations applied, but migration/src has {len(names)}: {names}")
for name, (version, chunk) in zip(names, chunks):
    if version is not None and version != name:
        sys.exit(f"the migrations ran in another order than migration/src's names: {version} where {name} was expected")
    with open(f"{out_dir}/{name}.sql", "w", encoding="utf-8") as f:
        f.write("".join(s + ";\n" for s in chunk))
    print(f"{name}: {len(chunk)} statement(s)")
PY

allowed=$(printf '%s\n' "$MIGRATION_LINT_ALLOW" | awk 'NF {print $1}')
lint_files=()
for m in "${migrations[@]}"; do
    if grep -qx "$m" <<<"$allowed"; then
        log "allowed, not linted: $(grep "^$m" <<<"$MIGRATION_LINT_ALLOW")"
    else
        lint_files+=("$work/sql/$m.sql")
    fi
done

log "squawk $("$squawk" --version | awk '{print $2}') over ${#lint_files[@]} migration(s), Postgres $pg_major"
(cd "$work/sql" && "$squawk" --pg-version "$pg_major.0" --assume-in-transaction --exclude "$EXCLUDED_RULES" --reporter gcc "${lint_files[@]##*/}") \
    || { log "FAILED: a migration is not expand/contract-safe (above). The SQL it sends:"; for f in "${lint_files[@]}"; do echo "-- ${f##*/}"; cat "$f"; done >&2; exit 1; }
log "OK: ${#lint_files[@]} migration(s) expand/contract-safe"
