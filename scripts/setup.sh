#!/usr/bin/env bash
# Create .venv (Python 3.11) and install GENSYN with pinned dependencies. Idempotent.
#   bash scripts/setup.sh              runtime dependencies, CPU builds (requirements/base.txt)
#   bash scripts/setup.sh --gpu        runtime dependencies, CUDA builds of torch and JAX
#                                      (requirements/gpu.txt; Linux x86-64 with an NVIDIA GPU)
#   bash scripts/setup.sh --dev        plus test and lint tools (requirements/dev.txt)
#   bash scripts/setup.sh --gpu --dev  both
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0 gpu=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --gpu) gpu=1 ;;
    *) echo "setup.sh: unknown option $arg (allowed: --dev, --gpu)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "GENSYN needs Python >= 3.11"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
reqs=(requirements/base.txt)
[ $gpu = 1 ] && reqs=(requirements/gpu.txt)
[ $dev = 1 ] && reqs+=(requirements/dev.txt)
stamp=".venv/.installed-$(cat requirements/*.txt pyproject.toml | sha256sum | cut -c1-16)-gpu$gpu-dev$dev"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  for req in "${reqs[@]}"; do
    .venv/bin/python -m pip install --quiet -r "$req"
  done
  .venv/bin/python -m pip install --quiet --no-deps -e .
  touch "$stamp"
fi
if [ $gpu = 1 ]; then  # say what the frameworks see, so a CPU-only build is noticed now
  .venv/bin/python -c 'import torch, jax; print("PyTorch sees CUDA:", torch.cuda.is_available(), "| JAX backend:", jax.default_backend())'
fi
echo "GENSYN environment ready: .venv ($(.venv/bin/python --version))"
