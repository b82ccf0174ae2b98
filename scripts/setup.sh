#!/usr/bin/env bash
# Create .venv (Python 3.11) and install GENSYN with pinned dependencies. Idempotent.
#   bash scripts/setup.sh          runtime dependencies (requirements/base.txt)
#   bash scripts/setup.sh --dev    plus test and lint tools (requirements/dev.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "GENSYN needs Python >= 3.11"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
req=requirements/base.txt
[ "${1:-}" = "--dev" ] && req=requirements/dev.txt
stamp=".venv/.installed-$(cat requirements/*.txt pyproject.toml | sha256sum | cut -c1-16)-$(basename "$req")"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "$req"
  .venv/bin/python -m pip install --quiet --no-deps -e .
  touch "$stamp"
fi
echo "GENSYN environment ready: .venv ($(.venv/bin/python --version))"
