#!/usr/bin/env bash
# Dependency audit: checks Cargo.lock against the RustSec advisory database with
# cargo-audit, offline. Policy (docs/dependency-audit.md):
#   - FAIL (exit 1) on a vulnerability advisory that has a fixed version
#     (`patched`) and is not in .ci/audit-ignore;
#   - WARN on vulnerabilities with no fixed version yet, and on informational
#     advisories (unmaintained, unsound, notice); yanked crates are not checked;
#   - exit 2 when the audit could not run (no advisory database, a bad ignore
#     entry, cargo-audit failing): no database never reads as "no findings".
#
# Usage: scripts/audit.sh [path/to/Cargo.lock]     (default: ./Cargo.lock)
#
# The advisory database is a plain directory with crates/ (no git needed, it is
# opened with --no-fetch; nothing is fetched from the network). It is taken from
# $CARTPULSE_ADVISORY_DB, else from shared/data/rustsec-advisory-db beside the
# repository (where CI has its copy of shared/). .ci/advisory-db-snapshot.sh
# makes such a directory from a clone of the advisory-db repository.
#
# cargo-audit is installed once per pinned version under
# $HOME/.cache/cartpulse-tools (own temporary target dir, not the project's).
set -euo pipefail
lock="$(realpath -m "${1:-$(dirname "$0")/../Cargo.lock}")"
cd "$(dirname "$0")/.."
repo="$PWD"

CARGO_AUDIT_VERSION=0.22.2
TOOLS_ROOT="${CARTPULSE_TOOLS_ROOT:-$HOME/.cache/cartpulse-tools}"
STALE_DAYS="${AUDIT_STALE_DAYS:-90}"
IGNORE_FILE="${AUDIT_IGNORE_FILE:-$repo/.ci/audit-ignore}"

if [[ ! -f "$lock" ]]; then
    echo "audit: no lock file at $lock" >&2
    exit 2
fi

# --- the advisory database --------------------------------------------------
db="${CARTPULSE_ADVISORY_DB:-}"
if [[ -z "$db" ]]; then
    db="$(cd "$repo/.." && pwd)/shared/data/rustsec-advisory-db"
fi
if [[ ! -d "$db/crates" ]]; then
    echo "audit: no RustSec advisory database at $db (expected $db/crates/)." >&2
    echo "audit: set CARTPULSE_ADVISORY_DB, or see docs/dependency-audit.md for where CI gets it." >&2
    if [[ "${AUDIT_ALLOW_MISSING_DB:-0}" == 1 ]]; then
        echo "audit: WARNING: AUDIT_ALLOW_MISSING_DB=1, so the dependency audit is SKIPPED (nothing was checked)." >&2
        exit 0
    fi
    exit 2
fi
snapshot_commit=unknown
snapshot_date=unknown
if [[ -f "$db/SNAPSHOT" ]]; then
    snapshot_commit="$(sed -n 's/^commit=//p' "$db/SNAPSHOT")"
    snapshot_date="$(sed -n 's/^date=//p' "$db/SNAPSHOT")"
fi
echo "== audit: advisory database $db (commit $snapshot_commit, $snapshot_date)"
if snapshot_s="$(date -d "$snapshot_date" +%s 2>/dev/null)"; then
    age_days=$((($(date +%s) - snapshot_s) / 86400))
    if ((age_days > STALE_DAYS)); then
        echo "audit: WARNING: the advisory database is $age_days days old (more than $STALE_DAYS):" \
            "advisories published since then are not checked; refresh it (docs/dependency-audit.md)."
    fi
else
    echo "audit: WARNING: the advisory database has no SNAPSHOT date; its age is unknown."
fi

# --- ignored advisories: one id per line, each with a justification ---------
ignore_args=()
if [[ -f "$IGNORE_FILE" ]]; then
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line%%#*}"
        read -r id why <<<"$line" || true
        [[ -z "${id:-}" ]] && continue
        if [[ ! "$id" =~ ^RUSTSEC-[0-9]{4}-[0-9]{4}$ ]]; then
            echo "audit: $IGNORE_FILE: '$id' is not a RUSTSEC-YYYY-NNNN id" >&2
            exit 2
        fi
        if [[ -z "${why:-}" ]]; then
            echo "audit: $IGNORE_FILE: $id has no justification (write it after the id)" >&2
            exit 2
        fi
        if [[ -z "$(find "$db/crates" -name "$id.md" -print -quit)" ]]; then
            echo "audit: WARNING: ignored $id is not in this advisory database (typo, or withdrawn?)"
        fi
        echo "audit: ignoring $id: $why"
        ignore_args+=(--ignore "$id")
    done <"$IGNORE_FILE"
fi

# --- cargo-audit, built once per pinned version -----------------------------
root="$TOOLS_ROOT/cargo-audit-$CARGO_AUDIT_VERSION"
bin="$root/bin/cargo-audit"
if ! [[ -x "$bin" ]] || [[ "$("$bin" audit --version 2>/dev/null)" != *" $CARGO_AUDIT_VERSION" ]]; then
    echo "== audit: installing cargo-audit $CARGO_AUDIT_VERSION into $root"
    build_dir="$(mktemp -d)"
    # Its own target dir: never the project's $CARGO_TARGET_DIR. No default
    # features: binary scanning (`cargo audit bin`) is not used here. An
    # unoptimised build without debug info: half the compile time of --release,
    # and an audit still takes under a second.
    if ! CARGO_TARGET_DIR="$build_dir" CARGO_PROFILE_DEV_DEBUG=0 CARGO_INCREMENTAL=0 \
        cargo install --locked --quiet --debug --no-default-features \
        --root "$root" cargo-audit --version "$CARGO_AUDIT_VERSION"; then
        rm -rf "$build_dir"
        echo "audit: installing cargo-audit failed" >&2
        exit 2
    fi
    rm -rf "$build_dir"
fi

# --- the audit ----------------------------------------------------------------
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
# cargo-audit exits 1 both on findings and on its own errors: the verdict below
# is taken from its JSON report, and a missing or unreadable report is an error.
# --no-yanked: the yanked check would read a machine-local copy of the registry
# index (stale or missing offline, and behind cargo's package lock).
"$bin" audit --no-fetch --no-yanked --db "$db" --file "$lock" --json "${ignore_args[@]}" >"$report" || true

python3 - "$report" "$lock" <<'PY'
import json
import sys
import tomllib

path, lock = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        report = json.load(f)
except (OSError, ValueError) as e:
    print(f"audit: cargo-audit produced no readable report ({e})", file=sys.stderr)
    sys.exit(2)

# Which packages of the lock file depend on each crate ("pulled in by").
users = {}
try:
    with open(lock, "rb") as f:
        for p in tomllib.load(f).get("package", []):
            for d in p.get("dependencies", []):
                users.setdefault(d.split()[0], set()).add(p["name"])
except (OSError, ValueError):
    pass


def by(name):
    return ", ".join(sorted(users.get(name, ()))) or "the workspace"


vulns = report.get("vulnerabilities", {}).get("list", [])
count = report.get("lockfile", {}).get("dependency-count", "?")
print(f"== audit: {lock}: {count} crates, {len(vulns)} vulnerability advisories matched")

failing, unfixed = [], []
for v in vulns:
    (failing if v.get("versions", {}).get("patched") else unfixed).append(v)


def line(kind, v):
    adv, pkg = v.get("advisory") or {}, v.get("package") or {}
    patched = ", ".join(v.get("versions", {}).get("patched") or []) or "none"
    return (f"{kind}: {adv.get('id')} {pkg.get('name')} {pkg.get('version')}: "
            f"{adv.get('title')} (fixed in: {patched}; pulled in by: {by(pkg.get('name'))}; "
            f"https://rustsec.org/advisories/{adv.get('id')})")


for kind, items in sorted((report.get("warnings") or {}).items()):
    for w in items:
        adv, pkg = w.get("advisory") or {}, w.get("package") or {}
        what = f"{adv.get('id')}: {adv.get('title')}" if adv else "crate is yanked"
        print(f"warning ({kind}): {pkg.get('name')} {pkg.get('version')}: {what} "
              f"(pulled in by: {by(pkg.get('name'))})")
for v in unfixed:
    print(line("warning (vulnerability, no fixed version yet)", v))
for v in failing:
    print(line("FAIL (vulnerability with a fix)", v))

if failing:
    print(f"== audit: FAILED: {len(failing)} vulnerabilities have a fixed version: upgrade them, "
          "or add the id with a justification to .ci/audit-ignore (docs/dependency-audit.md)")
    sys.exit(1)
print("== audit: passed (no vulnerability with a fixed version)")
PY
