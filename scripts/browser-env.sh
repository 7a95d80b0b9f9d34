# shellcheck shell=bash
# Sourced by scripts/e2e.sh and scripts/demo-e2e.sh (from the repository
# root): installs what the console's browser tests need when it is missing
# (Debian's chromium, the console's npm packages) and builds the binary they
# run, debug or (E2E_RELEASE=1) release, setting BIN to it (or takes
# $CARTPULSE_BIN).
# shellcheck disable=SC2034 # BIN is for the scripts that source this
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
echo "== $(/usr/bin/chromium --version 2>/dev/null | head -1)"
if [ ! -d console/node_modules/playwright-core ] || [ console/package-lock.json -nt console/node_modules/.package-lock.json ]; then
  echo "== npm ci (console/)"
  (cd console && npm ci --no-audit --no-fund --loglevel=error)
fi

# CARTPULSE_BIN: run this binary instead of building one (CI passes the one
# its tests built: a build of the binary alone resolves the dependencies'
# features without the dev-dependencies and compiles many of them again).
if [ -n "${CARTPULSE_BIN:-}" ]; then
  BIN="$CARTPULSE_BIN"
elif [ "${E2E_RELEASE:-0}" = 1 ]; then
  cargo build --release --locked --bin cartpulse
  BIN="$CARGO_TARGET_DIR/release/cartpulse"
else
  cargo build --locked --bin cartpulse
  BIN="$CARGO_TARGET_DIR/debug/cartpulse"
fi
