"""The fused Triton DRR kernel against the torch Joseph projector, without a GPU.

Runs ``gensyn.drr.fused.render`` in Triton's interpreter (``TRITON_INTERPRET=1``, CPU
tensors) on small random volumes and compares I/I0 with the torch ``joseph`` path of
``gensyn.drr.projector`` followed by the same Beer-Lambert model. The cases cover what
the kernel's slice clipping and zero border must get exactly right: rays that cross the
whole volume, rays that miss part of it (detector larger than the volume's shadow,
isocentre off the volume), poses that miss it entirely (I/I0 = 1), every dominant axis
(and poses of several axes in one call), voxel axes not in world order, detectors whose
size is no multiple of the tile, and both thread orders.

    pip install --target /tmp/tritonpkg triton          # a throwaway copy, CPU is enough
    PYTHONPATH=/tmp/tritonpkg python benchmarks/drr_kernel_check.py

Exit status 0 when every case agrees: |difference of -ln(I/I0)| <= 5e-5 + 1e-4 x the
reference, float32 and float16 densities alike (the random densities are multiples of
1/64, exact in float16). The floor is float32 rounding of sample positions on a field
that jumps by up to 2 g/cm^3 between voxels; the kernel before the clipping and the zero
border differed from the reference as much. One dropped sample would cost ~0.1.
The GPU tests in tests/test_drr_gpu.py repeat the missing-ray cases on CUDA.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gensyn.drr import CarmGeometry, CarmPose, fused
from gensyn.drr.physics import SpectrumTable, intensity_from_line_integrals
from gensyn.drr.projector import ChannelVolume, line_integrals
from gensyn.drr.render import make_rays

#: |kernel - reference| of -ln(I/I0) must be <= ATOL + RTOL * reference (float32 rounding
#: of the sample positions on a random field; one slice of one ray dropped would be ~0.1)
ATOL, RTOL = 5e-5, 1e-4


def random_volume(shape, seed: int) -> torch.Tensor:
    """(3, I, J, K) densities in g/cm^3, multiples of 1/64 (exact in float16), with a
    zero margin of a few voxels in places so some rays cross only part of the box."""
    rng = np.random.default_rng(seed)
    vol = rng.integers(0, 128, size=(3, *shape)).astype(np.float32) / 64.0
    vol[:, :2] *= rng.random() < 0.5  # sometimes an empty first slab
    vol[1, ..., -3:] = 0.0
    return torch.as_tensor(vol)


def table(n_energy: int, seed: int) -> SpectrumTable:
    rng = np.random.default_rng(seed)
    w = rng.random(n_energy) + 0.1
    w /= w.sum()
    mu = 0.05 + 0.3 * rng.random((3, n_energy))  # cm^2/g
    return SpectrumTable(np.arange(n_energy) + 30.0, w, w, mu, ("air", "soft_tissue", "bone"))


def affine_of(order: tuple[int, int, int], spacing, shape) -> np.ndarray:
    """Voxel axes ``order`` -> world axes, centred volume (voxel axes not in RAS order)."""
    aff = np.zeros((4, 4))
    for vox_ax, world_ax in enumerate(order):
        aff[world_ax, vox_ax] = spacing[vox_ax]
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    aff[3, 3] = 1.0
    return aff


CASES = [
    # name, shape, voxel->world axes, spacing, poses, (rows, cols, pixel mm), tile
    ("centre views", (24, 20, 16), (0, 1, 2), (5.0, 5.0, 6.0),
     [CarmPose(0, 0), CarmPose(12, -8)], (20, 18, 5.0), (32, 8)),
    ("detector wider than the volume's shadow", (24, 20, 16), (1, 0, 2), (4.0, 5.0, 5.0),
     [CarmPose(0, 0), CarmPose(-20, 15)], (36, 30, 12.0), (32, 8)),
    ("isocentre off the volume: part and all rays miss", (24, 20, 16), (0, 2, 1), (5.0, 5.0, 5.0),
     [CarmPose(0, 0, (70.0, 0.0, 40.0)), CarmPose(5, 5, (400.0, 0.0, 0.0)),
      CarmPose(0, 0, (0.0, 0.0, -500.0))], (24, 22, 6.0), (16, 4)),
    ("several dominant axes in one call", (24, 20, 16), (2, 0, 1), (5.0, 4.0, 5.0),
     [CarmPose(0, 0), CarmPose(0, 90), CarmPose(80, 0), CarmPose(10, 60)], (20, 17, 6.0), (32, 8)),
]  # fmt: skip


def run_case(shape, order, spacing, poses, det, tile, seed: int) -> bool:
    vol = random_volume(shape, seed)
    affine = affine_of(order, spacing, shape)
    spec = table(5, seed)
    rays = make_rays(poses, CarmGeometry(1020.0, 530.0, det[0], det[1], det[2]), shape, affine)
    ref_lint = line_integrals(vol, affine, rays, "joseph") / 10.0  # g/cm^2
    ref = intensity_from_line_integrals(ref_lint, spec)
    ok = True
    for half, fast in ((False, "rows"), (False, "cols"), (True, "auto")):
        got = fused.render(ChannelVolume.from_tensor(vol), affine, rays, spec, half, tile, 4, fast)
        ref_ln = -torch.log(ref)
        diff = (-torch.log(got) - ref_ln).abs()
        good = bool((diff <= ATOL + RTOL * ref_ln).all())
        ok &= good
        print(
            f"  {'PASS' if good else 'FAIL'} half={half!s:5} fast={fast:4}: max |d(-ln I/I0)| "
            f"{float(diff.max()):.1e}, max relative {float((diff / ref_ln.clamp(min=1e-2)).max()):.1e}"
        )
    missed = (ref_lint.sum(-1) == 0).float().mean()
    print(f"  {100 * float(missed):.0f}% of the rays see no density")
    return ok


def main() -> int:
    import triton

    print(f"Triton {triton.__version__} interpreter; reference: torch joseph (float32)")
    ok = True
    for k, (name, *case) in enumerate(CASES):
        t0 = time.perf_counter()
        print(f"{name}:")
        ok &= run_case(*case, seed=k)
        print(f"  {time.perf_counter() - t0:.1f} s")
    print("all cases agree" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
