#!/usr/bin/env bash
# Set up everything the test suite needs and run all of it (what CI runs):
# the dev environment, peer libraries, Label Studio's own environment, Chromium, a
# single-node SLURM cluster; then ruff, mypy and pytest (slow tests included).
# Pass pytest arguments after the script, e.g. `bash scripts/test.sh -m "not slow"`.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev || exit 1
[ -f requirements/peers.txt ] && { .venv/bin/python -m pip install --quiet --no-deps -r requirements/peers.txt || exit 1; }
[ -f scripts/setup_reader_env.sh ] && { bash scripts/setup_reader_env.sh || exit 1; }
if [ -f scripts/slurm/start.sh ]; then
  bash scripts/slurm/start.sh || exit 1
  trap 'bash scripts/slurm/stop.sh >/dev/null 2>&1 || true' EXIT
fi
export MPLBACKEND=Agg
.venv/bin/python -m ruff check gensyn tests benchmarks launch.py || exit 1
.venv/bin/python -m mypy gensyn || exit 1
.venv/bin/python -m pytest -v --durations=25 "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "ERROR: pytest collected no tests" >&2
  exit 1
fi
exit $rc
