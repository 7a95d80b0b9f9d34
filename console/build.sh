#!/usr/bin/env bash
# Rebuilds the admin console into ../static from the sources here, with the
# exact dependency versions of package-lock.json. The built static/ is
# committed, so `cartpulse demo`/`serve` work without Node; run this after
# changing anything under console/ and commit static/ with the change.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npm run build
