#!/usr/bin/env bash
# The SLO recording rules and alerts in deploy/prometheus: `promtool check
# rules` (syntax, PromQL) and `promtool test rules` (the alerts fire, or do
# not, on synthetic series). promtool comes from Debian's prometheus package,
# unpacked under $HOME/.cache (no server is installed or started).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${CARTPULSE_PROMTOOL_DIR:-$HOME/.cache/cartpulse-promtool}"
promtool="$TOOLS/usr/bin/promtool"
if [[ ! -x "$promtool" ]]; then
    echo "== prometheus rules: unpacking promtool from Debian's prometheus package into $TOOLS"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # A fresh machine may not have the package lists yet.
    if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
        apt-get update -qq >/dev/null
        (cd "$work" && apt-get download prometheus >/dev/null)
    fi
    mkdir -p "$TOOLS"
    dpkg -x "$work"/prometheus_*.deb "$TOOLS"
fi
echo "== prometheus rules: $("$promtool" --version 2>&1 | head -1)"
"$promtool" check rules deploy/prometheus/slo-rules.yml
(cd deploy/prometheus && "$promtool" test rules slo-rules.test.yml)
