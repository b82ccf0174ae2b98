"""What every DRR renderer offers (:class:`Renderer`), and the renderer a projector name picks.

Two renderers implement it: GENSYN's own :class:`~gensyn.drr.render.DrrRenderer` (``torch``,
CPU and CUDA) and :class:`~gensyn.drr.deepdrr_adapter.DeepDrrRenderer` (``deepdrr``, DeepDRR
run out of process on a CUDA GPU). ``stage=drr`` (through :func:`gensyn.drr.batch.render_cts`)
and the benchmarks call a renderer only through this interface: made once per CT, optionally
``prepare``\\ d ahead (e.g. on a loader thread), then ``render``\\ ed in pose batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gensyn.drr.deepdrr_adapter import DeepDrrRenderer, DeepDrrSettings
from gensyn.drr.geometry import CarmGeometry, CarmPose
from gensyn.drr.physics import PhysicsConfig
from gensyn.drr.render import DrrRenderer
from gensyn.drr.settings import ProjectorName

__all__ = ["Renderer", "renderer_for"]


@runtime_checkable
class Renderer(Protocol):
    """A CT prepared for rendering DRRs of many pose batches.

    ``physics``: the materials, spectrum, noise and output it renders with.
    """

    physics: PhysicsConfig

    def prepare(
        self, poses: Sequence[CarmPose], geometry: CarmGeometry, method: str = "auto"
    ) -> Renderer:
        """Build now what rendering ``poses`` will read (rendering builds it on first use
        anyway); ``method`` as in :meth:`render`. Returns ``self``."""
        ...

    def render(
        self,
        poses: Sequence[CarmPose],
        geometry: CarmGeometry,
        method: str = "auto",
        step_mm: float | None = None,
        max_samples: int = 1 << 23,
        *,
        seed: int | Sequence[int] | None = None,
        as_tensor: bool = False,
    ) -> Any:
        """One DRR per pose: float32 (n_poses, H, W), I/I0 (``physics.output=intensity``) or
        -ln(I/I0) (``line_integral``), as :func:`gensyn.drr.render_drrs`.

        ``method``, ``step_mm``, ``max_samples``: GENSYN's projector (a renderer that marches
        rays its own way ignores them); ``seed``: the Poisson noise seed, one or one per pose
        (:func:`gensyn.drr.render.view_noise_seed`); ``as_tensor``: a torch tensor on the
        renderer's device instead of a numpy array.
        """
        ...


def renderer_for(
    name: str,
    volume_hu: Any,
    affine: np.ndarray,
    physics: PhysicsConfig,
    device: str,
    deepdrr: DeepDrrSettings | None = None,
) -> Renderer:
    """The renderer called ``name`` (``projector.name``, a :class:`ProjectorName`) of CT ``volume_hu`` (HU, (I, J, K),
    NIfTI voxel order) with 4x4 ``affine``: :class:`DrrRenderer` on ``device`` (``torch``) or
    :class:`DeepDrrRenderer` (``deepdrr``, with ``deepdrr`` settings, default
    ``DeepDrrSettings()``; it renders on GPU 0 and writes its volumes when made)."""
    if name == "torch":
        return DrrRenderer(volume_hu, affine, physics, device)
    if name == "deepdrr":
        return DeepDrrRenderer(
            volume_hu, affine, physics, DeepDrrSettings() if deepdrr is None else deepdrr
        )
    raise ValueError(f"projector.name={name!r}; allowed: {[str(n) for n in ProjectorName]}")
