"""Figures of the demo data: CT slices of a phantom, and the overview used in the docs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gensyn.data.phantom.patients import CT_GROUP, XRAY_GROUP, patient_seed
from gensyn.data.phantom.volume import Tissue, generate_phantom


def overview_figure(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """PNG overview: CT slices and a clean PA projection of one phantom, four simulated X-rays.

    Used for docs/demo_data.md and the pipeline report. Returns the written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gensyn.base.io import atomic_write
    from gensyn.data.phantom.xray_sim import pa_line_integral, simulate_real_radiograph

    ct_labels = {"Effusion": True, "Cardiomegaly": True}
    ph = generate_phantom(patient_seed(seed, CT_GROUP, 0), ct_labels)
    hu = ph.hu.astype(np.float32)
    nx = hu.shape[0]
    heart = np.argwhere(ph.tissue == Tissue.HEART).mean(axis=0).astype(int)
    fig, axes = plt.subplots(2, 4, figsize=(16, 9))
    window = {"cmap": "gray", "vmin": -1000, "vmax": 400}
    aspect_cor = ph.spacing_mm[2] / ph.spacing_mm[0]
    views = [
        ("axial", hu[::-1, ::-1, heart[2]].T, 1.0),  # radiological: patient's right on the left
        ("coronal", hu[::-1, heart[1] - 12, ::-1].T, aspect_cor),
        ("sagittal", hu[nx // 2 - 8, ::-1, ::-1].T, ph.spacing_mm[2] / ph.spacing_mm[1]),
    ]
    names = " + ".join(k for k, v in ct_labels.items() if v)
    for ax, (title, img, aspect) in zip(axes[0, :3], views, strict=True):
        ax.imshow(img, aspect=aspect, **window)
        ax.set_title(f"CT {title}: {names}", fontsize=10)
    axes[0, 3].imshow(pa_line_integral(ph.hu, ph.affine, 256), cmap="gray")
    axes[0, 3].set_title("same CT, clean PA projection", fontsize=10)
    for ax, finding in zip(axes[1], ("", "Cardiomegaly", "Pneumothorax", "Pneumonia"), strict=True):
        s = patient_seed(seed, XRAY_GROUP, 1000 + len(finding))
        xr = generate_phantom(s, {finding: True} if finding else {})
        rng = np.random.default_rng(s)
        ax.imshow(
            simulate_real_radiograph(pa_line_integral(xr.hu, xr.affine, 256), rng),
            cmap="gray",
            vmin=0,
            vmax=255,
        )
        ax.set_title(f"simulated X-ray: {finding or 'no finding'}", fontsize=10)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("GENSYN demo data: SIMULATED chest CT phantoms and SIMULATED radiographs")
    fig.tight_layout(h_pad=2.5)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=72)
    plt.close(fig)
    return Path(path)


def ct_slices_figure(
    nifti_path: str | os.PathLike[str], path: str | os.PathLike[str], title: str
) -> Path:
    """PNG of the central axial, coronal and sagittal slices of a CT (window -1000..400 HU).

    Slices are shown as radiologists read them: patient's right on the image left,
    anterior up (axial) and head up (coronal, sagittal). Returns the written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    from gensyn.base.io import atomic_write

    img = nib.as_closest_canonical(nib.load(nifti_path))  # RAS axis order
    hu = np.asarray(img.dataobj, dtype=np.float32)
    sx, sy, sz = (float(v) for v in img.header.get_zooms()[:3])
    nx, ny, nz = hu.shape
    views = [
        ("axial", hu[::-1, ::-1, nz // 2].T, sy / sx),
        ("coronal", hu[::-1, ny // 2, ::-1].T, sz / sx),
        ("sagittal", hu[nx // 2, ::-1, ::-1].T, sz / sy),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, (name, slc, aspect) in zip(axes, views, strict=True):
        ax.imshow(slc, cmap="gray", vmin=-1000, vmax=400, aspect=aspect)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=72)
    plt.close(fig)
    return Path(path)
