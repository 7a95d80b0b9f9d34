#!/usr/bin/env bash
# The Grafana dashboard of the SLOs (deploy/grafana): rebuilt with Grafana's
# Foundation SDK (models generated from Grafana's dashboard schema) and
# compared with the committed JSON, read back through the SDK's models, and
# checked against the recording rules it queries. The SDK, pinned below,
# lives in a venv under $HOME/.cache, reinstalled only when the pin changes.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CARTPULSE_GRAFANA_VENV:-$HOME/.cache/cartpulse-venv-grafana}"
# Grafana 11.6's schema.
REQUIREMENTS='grafana-foundation-sdk==1769699379!11.6.0'
stamp="$VENV/.cartpulse-requirements"
if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$REQUIREMENTS" ]]; then
    echo "== grafana dashboard: installing $REQUIREMENTS into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$REQUIREMENTS"
    printf '%s' "$REQUIREMENTS" >"$stamp"
fi
echo "== grafana dashboard: deploy/grafana/cartpulse-slo.json"
"$VENV/bin/python" deploy/grafana/check_dashboard.py
