#!/usr/bin/env bash
# Makes the offline RustSec advisory database that scripts/audit.sh reads, from a
# git clone (bare or not) of the advisory-db repository: only what cargo-audit
# opens (crates/) plus the licence files (CC0-1.0; a few imported advisories are
# CC-BY-4.0), and a SNAPSHOT file naming the commit and its date.
#
# Usage: .ci/advisory-db-snapshot.sh ADVISORY_DB_GIT_DIR OUT_DIR
# e.g.   .ci/advisory-db-snapshot.sh ~/advisory-db.git ../shared/data/rustsec-advisory-db
# OUT_DIR is replaced. This copies data only; it downloads nothing.
set -euo pipefail
src="${1:?usage: $0 ADVISORY_DB_GIT_DIR OUT_DIR}"
out="${2:?usage: $0 ADVISORY_DB_GIT_DIR OUT_DIR}"

git_dir="$(git -C "$src" rev-parse --absolute-git-dir)"
commit="$(git --git-dir="$git_dir" rev-parse HEAD)"
date="$(git --git-dir="$git_dir" log -1 --format=%cI HEAD)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
git --git-dir="$git_dir" archive --format=tar HEAD crates LICENSE.txt LICENSES | tar -x -C "$tmp"
[[ -d "$tmp/crates" ]] || { echo "no crates/ at $commit: not an advisory-db clone?" >&2; exit 1; }
{
    echo "source=rustsec/advisory-db"
    echo "commit=$commit"
    echo "date=$date"
} >"$tmp/SNAPSHOT"
cat >"$tmp/README.md" <<EOF
# RustSec advisory database snapshot (data, CC0-1.0; see LICENSE.txt)

The \`crates/\` advisories of rustsec/advisory-db at commit $commit
($date), for the offline dependency audit of cartpulse (scripts/audit.sh,
docs/dependency-audit.md). Made by .ci/advisory-db-snapshot.sh; refresh by running
it again on a newer clone.
EOF

rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -r "$tmp" "$out"
chmod -R a+rX "$out"
echo "advisory database at $out: commit $commit ($date)," \
    "$(find "$out/crates" -name 'RUSTSEC-*.md' | wc -l) advisories, $(du -sh "$out" | cut -f1)"
