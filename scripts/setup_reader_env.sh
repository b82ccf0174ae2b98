#!/usr/bin/env bash
# Reader-study tools, idempotent (run again at will; CI runs it before the tests):
#  - .venv-reader: Label Studio in its own Python 3.11 environment (requirements/reader.txt),
#    plus an empty migrated database template that makes new servers start in seconds;
#  - Debian's chromium and the playwright Python package (in .venv) for the browser test.
#    Playwright drives /usr/bin/chromium; never run `playwright install` (it downloads browsers).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "Label Studio env needs Python >= 3.11"'

stamp=".venv-reader/.installed-$(sha256sum requirements/reader.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv-reader/bin/python ] || "$PY" -m venv .venv-reader
  .venv-reader/bin/python -m pip install --quiet --upgrade pip 2> >(grep -v "is ignored" >&2)
  .venv-reader/bin/python -m pip install --quiet -r requirements/reader.txt 2> >(grep -v "is ignored" >&2)
  rm -rf .venv-reader/gensyn-db-template  # a new Label Studio may migrate differently
  touch "$stamp"
fi
[ -x .venv-reader/bin/label-studio ] || { echo "label-studio missing in .venv-reader" >&2; exit 1; }

if [ -x .venv/bin/python ]; then
  .venv/bin/python - <<'PY'
from pathlib import Path
from gensyn.reader.labelstudio import label_studio_executable, prepare_database_template
exe = label_studio_executable(".venv-reader")
print("Label Studio database template:", prepare_database_template(exe, exe.parent.parent / "gensyn-db-template"))
PY
  if ! .venv/bin/python -c "import playwright" 2>/dev/null; then
    pin=$(grep -E '^playwright==' requirements/dev.txt | cut -d' ' -f1)
    .venv/bin/python -m pip install --quiet "${pin:-playwright}" 2> >(grep -v "is ignored" >&2)
  fi
fi

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "reader study tools ready: $(.venv-reader/bin/python -m pip show label-studio 2>/dev/null | grep '^Version' || echo 'label-studio ?'), $(/usr/bin/chromium --version 2>/dev/null)"
