#!/usr/bin/env bash
# Run GENSYN on a GPU machine that has Python, PyTorch and JAX (CUDA) but no internet and
# none of GENSYN's other dependencies (e.g. a locked-down cluster node or the lent test
# machine), by carrying wheels there.
#
#   here (internet):  bash scripts/gpu_carry.sh fetch .whl            (about 60 MB)
#   there (GPU):      bash scripts/gpu_carry.sh install .whl && . /tmp/gensyn_env.sh
#
# 'fetch' downloads GENSYN's pinned runtime dependencies and theirs for CPython 3.12 on
# x86-64 Linux, then drops the packages such a machine already has (numpy, scipy, pandas,
# torch, jax, matplotlib, ... listed below) so that its CUDA builds are the ones used.
# spekpy (a 160 MB wheel of physics tables) stays behind: the X-ray spectra GENSYN's presets
# use are computed here into <wheel folder>/spectra (gensyn/drr/spectra.py reads them there),
# and so does python-gdcm (only compressed DICOM needs it).
# 'install' installs the rest into /tmp/site without resolving dependencies and writes
# /tmp/gensyn_env.sh (PYTHONPATH, the spectrum cache, Keras on JAX).
# A machine with internet needs none of this: `bash scripts/setup.sh --gpu`.
set -euo pipefail
mode=${1:?fetch|install} whl=${2:?wheel folder}
# present on the GPU image (and kept): never carried
keep='numpy|scipy|pandas|torch|triton|jax|jaxlib|jax_cuda.*|matplotlib|pillow|scikit_learn|requests|urllib3|idna|certifi|charset_normalizer|psutil|pyyaml|packaging|typing_extensions|six|python_dateutil|tzdata|pytz|contourpy|cycler|fonttools|kiwisolver|pyparsing|joblib|threadpoolctl|h5py|ml_dtypes|absl_py|rich|markdown_it_py|mdurl|pygments|tqdm|protobuf|click|filelock|fsspec|jinja2|markupsafe|sympy|mpmath|networkx|nvidia_.*|opt_einsum|setuptools|wheel|pip'
if [ "$mode" = fetch ]; then
  mkdir -p "$whl"
  plat="--only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any"
  grep -v -E '^(torch|jax|jaxlib|jax\[cpu\]|numpy|scipy|pandas|scikit-learn|matplotlib|pillow|requests|psutil|tqdm)[=[]' \
    -h requirements/common.txt requirements/base.txt | grep -v -E '^(#|-r )' | grep -v '^$' > "$whl/carry.txt"
  # pure-Python packages published only as source: build their wheels here
  python3 -m pip wheel -q --no-deps -w "$whl" antlr4-python3-runtime==4.9.3
  # shellcheck disable=SC2086
  python3 -m pip download -q $plat --find-links "$whl" -d "$whl" -r "$whl/carry.txt"
  for f in "$whl"/*.whl; do
    name=$(basename "$f" | cut -d- -f1 | tr 'A-Z-' 'a-z_')
    if echo "$name" | grep -qxE "$keep"; then rm -f "$f"; fi
  done
  rm -f "$whl"/spekpy-*.whl "$whl"/python_gdcm-*.whl
  GENSYN_SPECTRUM_CACHE="$whl/spectra" .venv/bin/python -c '
from gensyn.drr.render import PHYSICS_PRESETS
from gensyn.drr.physics import spectrum_table
for physics in PHYSICS_PRESETS.values():
    spectrum_table(physics)'
  du -sh "$whl"; ls "$whl" | wc -l
  exit 0
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site "$whl"/*.whl
cat > /tmp/gensyn_env.sh <<ENV
export PYTHONPATH=/tmp/site:$PWD GENSYN_SPECTRUM_CACHE=$(cd "$whl" && pwd)/spectra
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
ENV
echo "installed $(ls "$whl"/*.whl | wc -l) wheels into /tmp/site; now: . /tmp/gensyn_env.sh"
