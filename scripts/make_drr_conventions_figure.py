"""Draw docs/figures/drr_conventions.png: the C-arm frame, angle signs and a DRR of a phantom.

python scripts/make_drr_conventions_figure.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gensyn.drr import CarmGeometry, CarmPose, PhysicsConfig, render_drrs  # noqa: E402
from gensyn.drr.geometry import carm_frame, detector_pixels_world, source_world  # noqa: E402


def phantom():
    """Chest-like phantom: body, lungs, spine (posterior), heart (anterior-left), a left-side marker."""
    shape, spacing = (96, 80, 90), (4.0, 4.0, 4.0)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    x, y, z = np.moveaxis((ijk - (np.asarray(shape) - 1) / 2) * spacing, -1, 0)
    hu = np.full(shape, -1000.0)
    hu[(x / 160) ** 2 + (y / 110) ** 2 < 1] = 30
    hu[((np.abs(x) - 70) / 50) ** 2 + (y / 70) ** 2 + (z / 150) ** 2 < 1] = -850
    hu[((x + 30) / 45) ** 2 + ((y - 30) / 40) ** 2 + ((z + 40) / 50) ** 2 < 1] = (
        40  # heart: left (-x)
    )
    hu[x**2 + (y + 75) ** 2 < 14**2] = 700  # spine: posterior
    hu[((x + 120) ** 2 + (y - 20) ** 2 + (z - 110) ** 2) < 12**2] = 1500  # marker: left, superior
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    return hu.astype(np.float32), affine


def main() -> None:
    geometry = CarmGeometry(1020.0, 530.0, 200, 200, 2.5)
    fig = plt.figure(figsize=(13, 4.6))
    ax = fig.add_subplot(1, 3, 1, projection="3d")
    iso = np.zeros(3)
    colors = {"beam": "tab:red", "cols": "tab:blue", "rows": "tab:green"}
    for pose, style in ((CarmPose(0, 0), "-"), (CarmPose(0, 30), ":")):
        beam, cols, rows = carm_frame(pose)
        src = source_world(pose, geometry, iso) / 1000
        det = src + beam * geometry.source_to_detector_mm / 1000
        ax.plot(*np.stack([src, det]).T, style, color=colors["beam"])
        ax.scatter(*src, color="k", s=15)
        origin, d_col, d_row, _ = detector_pixels_world(pose, geometry, iso)
        corners = [
            origin,
            origin + 199 * d_col,
            origin + 199 * (d_col + d_row),
            origin + 199 * d_row,
            origin,
        ]
        ax.plot(*(np.stack(corners) / 1000).T, style, color="gray")
        for key, vec in (("cols", cols), ("rows", rows)):
            ax.quiver(*det, *(vec * 0.15), color=colors[key])
    for vec, name in ((np.eye(3)[0], "R (+x)"), (np.eye(3)[1], "A (+y)"), (np.eye(3)[2], "S (+z)")):
        ax.quiver(0, 0, 0, *(vec * 0.25), color="k", linewidth=0.8)
        ax.text(*(vec * 0.3), name, fontsize=8)
    ax.set_title("C-arm in patient RAS (m)\nsolid: rest pose, dotted: LAO 30°", fontsize=9)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("z")
    ax.view_init(elev=20, azim=-60)

    hu, affine = phantom()
    poses = [CarmPose(0, 0), CarmPose(0, 30)]
    drrs = render_drrs(hu, affine, poses, geometry, PhysicsConfig())
    for k, title in enumerate(("alpha=0, beta=0 (PA)", "beta=+30 (LAO)")):
        ax = fig.add_subplot(1, 3, 2 + k)
        ax.imshow(drrs[k], cmap="gray")
        ax.set_title(f"DRR {title}\nimage: patient's right on the left, head up", fontsize=9)
        ax.annotate("patient's left marker", (150, 20), color="yellow", fontsize=8)
        ax.set_xlabel("column (towards patient's left at rest)")
        ax.set_ylabel("row (towards feet)")
    fig.tight_layout()
    out = ROOT / "docs" / "figures" / "drr_conventions.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
