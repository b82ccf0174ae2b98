"""Which device each framework uses: the one place ``device=auto|cpu|cuda`` is interpreted.

GENSYN uses two frameworks: PyTorch (DRR projector, CycleGAN) and JAX (the Keras classifier).
``device=cuda`` must be honoured by both or fail at start-up (:func:`check_device`), and every
stage logs what its framework really uses (:func:`torch_device`, :func:`jax_device`), so a
classifier that silently trains on the CPU of a GPU node (a CPU-only jaxlib) is seen at once.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from gensyn.base.errors import GensynError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
GPU_SETUP_HINT = (
    "install the CUDA builds with `bash scripts/setup.sh --gpu` (requirements/gpu.txt), "
    "or run with device=cpu"
)


#: Environment variables naming where each compiler keeps its kernels, and the sub-folder of
#: ``paths.compile_cache_dir`` GENSYN gives each
COMPILE_CACHES = {
    "TORCHINDUCTOR_CACHE_DIR": "inductor",  # torch.compile: FX graphs, Inductor's Triton kernels
    "TRITON_CACHE_DIR": "triton",  # Triton kernels (the fused DRR kernel), Inductor's too
    "CUPY_CACHE_DIR": "cupy",  # the texture DRR kernel (NVRTC)
}


def use_compile_caches(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Keep compiled GPU kernels in ``folder`` (``paths.compile_cache_dir``) from now on, in
    this process and the processes it starts; returns the variables as they now stand.

    By default Inductor caches in ``/tmp`` (per node: a SLURM job on a new node compiles the
    generator again, 21-40 s on an H200 host against ~10 s from a warm cache), Triton and
    CuPy in ``$HOME``. A folder on the shared work disk lets every run and job after the
    first load them; each compiler keys its entries by the program, its options, its version
    and the GPU's architecture, and writes them atomically, so jobs may share the folder. A
    variable already set in the environment wins; ``off`` (or an empty value) changes nothing.
    """
    text = os.fspath(folder)
    if text.strip().lower() not in ("", "off", "none", "null"):
        for variable, sub in COMPILE_CACHES.items():
            os.environ.setdefault(variable, os.path.join(os.path.abspath(text), sub))
    return {v: os.environ[v] for v in COMPILE_CACHES if v in os.environ}


def check_name(name: str) -> None:
    """Raise GensynError unless ``name`` is one of :data:`DEVICES`."""
    if name not in DEVICES:
        raise GensynError(f"device={name!r} is not a device; allowed: {', '.join(DEVICES)}")


def torch_has_cuda() -> bool:
    """Whether PyTorch sees a CUDA GPU."""
    import torch

    return bool(torch.cuda.is_available())


def jax_gpu_devices() -> list[str]:
    """The GPU devices JAX sees ([] with a CPU-only jaxlib or ``JAX_PLATFORMS=cpu``).

    Asked in a child process: initialising JAX's GPU backend here would make every later
    fork of this process (data-loader workers, conversion pools) unsafe. The child does not
    preallocate GPU memory (it may run beside this process's own allocation). Asked once per
    process and environment: a sweep's jobs run in one process and each checks its device at
    start, and on a GPU the child costs 1-2 s (Python, JAX, CUDA) each time.
    """
    key = (os.environ.get("JAX_PLATFORMS", ""), os.environ.get("CUDA_VISIBLE_DEVICES"))
    if key not in _JAX_GPUS:
        _JAX_GPUS[key] = _probe_jax_gpus()
    return list(_JAX_GPUS[key])


#: :func:`jax_gpu_devices`' answers in this process, by (JAX_PLATFORMS, CUDA_VISIBLE_DEVICES)
_JAX_GPUS: dict[tuple[str, str | None], list[str]] = {}


def _probe_jax_gpus() -> list[str]:
    import subprocess
    import sys

    probe = (
        "import jax\n"
        "try:\n    print('\\n'.join(str(d) for d in jax.devices('gpu')))\n"
        "except RuntimeError:\n    pass\n"
    )
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.stdout.splitlines() if line.strip()]


def check_device(name: str) -> None:
    """Start-up check: ``device=cuda`` needs a GPU visible to PyTorch *and* JAX.

    ``device=cpu`` hides GPUs from JAX (set before JAX is imported) so that both frameworks
    stay on the CPU.
    """
    check_name(name)
    if name == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
        return
    if name != "cuda":
        return
    if not torch_has_cuda():
        raise GensynError(
            "device=cuda but PyTorch sees no CUDA GPU (torch.cuda.is_available() is False); "
            + GPU_SETUP_HINT
        )
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
        raise GensynError(
            "device=cuda but JAX_PLATFORMS=cpu is set in the environment; unset it, or run "
            "with device=cpu"
        )
    if not jax_gpu_devices():
        raise GensynError(
            "device=cuda but JAX sees no GPU (a CPU-only jaxlib?), so the classifier would run "
            "on the CPU; " + GPU_SETUP_HINT
        )


def torch_device(name: str, stage: str) -> torch.device:
    """The PyTorch device for ``device=name``, logged once per stage."""
    import torch

    check_name(name)
    cuda = torch.cuda.is_available()
    if name == "cuda" and not cuda:
        raise GensynError(f"{stage}: device=cuda but PyTorch sees no CUDA GPU; {GPU_SETUP_HINT}")
    dev = torch.device("cuda" if name == "cuda" or (name == "auto" and cuda) else "cpu")
    what = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    log.info("%s: PyTorch %s runs on %s (%s)", stage, torch.__version__, dev, what)
    return dev


def jax_device(name: str, stage: str) -> str:
    """The JAX backend this process uses (``cpu``/``gpu``), logged; warns if a GPU sits idle.

    Call it before the first JAX computation. A CPU backend while PyTorch sees a GPU means
    the classifier will train on the CPU of a GPU machine: a warning says how to fix it.
    """
    import jax

    check_name(name)
    backend = jax.default_backend()
    devices = jax.devices()
    log.info(
        "%s: JAX %s runs on %s (%d device(s): %s)",
        stage,
        jax.__version__,
        backend,
        len(devices),
        ", ".join(str(d) for d in devices[:4]),
    )
    if backend == "cpu" and name != "cpu":
        try:
            gpu_here = torch_has_cuda()
        except ImportError:
            gpu_here = False
        if name == "cuda":
            raise GensynError(f"{stage}: device=cuda but JAX runs on the CPU; {GPU_SETUP_HINT}")
        if gpu_here:
            log.warning(
                "%s: the classifier runs on the CPU although a GPU is present (JAX has no GPU "
                "backend); %s",
                stage,
                GPU_SETUP_HINT,
            )
    return str(backend)
