"""Stage throughput through ``launch.py`` against the kernel alone: drr, gan_translate, predict.

Generates study-sized simulated data in its own GENSYN root: ``--cts`` chest phantoms of
512 × 512 × 300 voxels (0.7 × 0.7 × 1.0 mm) as gzipped NIfTI, converted by ``stage=convert``
(``ct_dataset=folder``), and the demo's simulated 512² X-rays (``dataset=demo``). Then, each
as one ``python launch.py`` subprocess:

* ``stage=drr``: centre + 9 random views at 512², 16-bit PNG (``--grid 11``: 121 views);
  kernel figure: the renderer alone on CT 0's views, volumes prepared (``method=auto``: the
  texture-unit kernel on CUDA with CuPy, else the fused one; joseph on CPU), every view in one
  call, copied to the host as floats; beside it (``kernels``) the device alone and the
  stage's main thread per CT (render, window, copy) per batch of 8 .. all views
  (``projector.batch_poses``), and (``cpu_costs``) each step's
  cost per CT and per image, with encoding and writing on 1 and ``--workers`` threads;
* ``stage=gan_translate`` (after a one-epoch ``gan_train``, untimed): every DRR; kernel figure:
  the generator's forward at ``translate_batch_size`` on in-RAM tensors;
* ``stage=predict`` (after a one-epoch ``classify`` of the baseline arm, untimed); kernel
  figure: ``model.predict`` on in-RAM uint8 arrays at ``predict_batch_size``.

With ``--ref-dir <checkout of junyanz/pytorch-CycleGAN-and-pix2pix>`` the peer runs in the same
run too: the reference's generator translating ``--ref-images`` of the DRRs PNG to PNG the way
its ``test.py`` does (batch 1, fp32, one process), and its generator alone.
With ``--deepdrr-python <DeepDRR environment's python>`` DeepDRR renders the drr stage's CT 0
and views in the same run (its kernel, and its per-CT set-up plus render).

The table: the stage's items/s from its own summary (``<unit>_per_s``: first read to last
write), items/s over the whole subprocess (start-up, imports, model load, compilation
included), the kernel's items/s, the ratio stage / kernel, and the summary's time breakdown.

    python benchmarks/stages.py --device cuda --cts 50 --root /tmp/stages
    python benchmarks/stages.py --device cpu --small          # a smoke run in a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from launching import launch, newest_run  # benchmarks/launching.py (scripts run from benchmarks/)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Study-sized data and the small smoke-test sizes (``--small``).
SIZES = {
    "study": {
        "ct_shape": (512, 512, 300),
        "ct_spacing_mm": (0.7, 0.7, 1.0),
        "image_px": 512,
        "xray_px": 512,
        "n_xray_patients": 3000,  # predict's test set; gan_translate alone needs far fewer
        "n_xray_patients_gan": 200,  # gan_train reads generator.max_dataset_size of them
        "overrides": [
            "classifier=densenet121",
            "classifier.image_size_px=512",
            "classifier.weights=null",  # no internet on the GPU machine: train every layer
            "classifier.trainable_tail_layers=-1",
            "classifier.epochs=1",
            "generator.n_epochs=1",
            "generator.n_epochs_decay=0",
            "generator.max_dataset_size=16",  # gan_train is untimed setup here
        ],
    },
    "small": {
        "ct_shape": (64, 64, 40),
        "ct_spacing_mm": (5.6, 5.6, 7.5),
        "image_px": 64,
        "xray_px": 64,
        "n_xray_patients": 80,
        "n_xray_patients_gan": 80,
        "overrides": ["profile=tiny"],
    },
}
STAGE_UNITS = {"drr": "drrs", "gan_translate": "images", "predict": "images"}


def chest_phantom(shape: tuple[int, int, int], spacing_mm: tuple[float, ...], seed: int):
    """A chest-like CT (int16 HU): body, two lungs, spine, sternum, ribs, and scanner noise."""
    rng = np.random.default_rng(seed)
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing_mm, strict=True)]
    x, y = np.meshgrid(axes[0], axes[1], indexing="ij")  # one axial slice (mm)
    body = (x / 165.0) ** 2 + (y / 115.0) ** 2 < 1
    lungs = ((np.abs(x) - 70) / 55.0) ** 2 + (y / 80.0) ** 2 < 1
    spine = x**2 + (y + 80) ** 2 < 18**2
    sternum = (np.abs(x) < 12) & (np.abs(y - 95) < 8)
    axial = np.full(x.shape, -1000, np.int16)
    axial[body] = 40
    axial[lungs] = -850
    axial[spine | sternum] = 700
    hu = np.repeat(axial[:, :, None], shape[2], axis=2)
    ring = ((x / 150.0) ** 2 + (y / 100.0) ** 2 > 0.85) & body & ~spine
    for z in range(0, shape[2], max(1, int(25 / spacing_mm[2]))):  # ribs every 25 mm
        hu[:, :, z : z + max(1, int(8 / spacing_mm[2]))][ring] = 600
    noise = rng.normal(0, 15, shape).astype(np.int16)  # scanner noise: real compression ratios
    affine = np.diag([*spacing_mm, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing_mm, strict=True)]
    return (hu + noise).astype(np.int16), affine


def write_cts(folder: Path, n: int, shape, spacing_mm, workers: int) -> None:  # type: ignore[no-untyped-def]
    """``n`` phantom CTs as gzipped NIfTI in ``folder`` (kept if they exist), in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    from gensyn.base.io import write_nifti

    def one(i: int) -> None:
        path = folder / f"ct{i:04d}.nii.gz"
        if not path.is_file():
            write_nifti(path, *chest_phantom(shape, spacing_mm, seed=i))

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(one, range(n)))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _rate(fn, n_items: int, device: str, repeats: int, warmup: int = 1) -> float:  # type: ignore[no-untyped-def]
    """Items per second of ``fn()`` (``n_items`` each call) after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return n_items * repeats / (time.perf_counter() - start)


def grid_angles_deg(n: int, step_deg: float = 5.0) -> list[float]:
    """``n`` angles ``step_deg`` apart, centred on 0 (11 -> -25 .. 25 degrees)."""
    return [round((i - (n - 1) / 2) * step_deg, 6) for i in range(n)]


def drr_inputs(root: Path, image_px: int, grid: int = 0):  # type: ignore[no-untyped-def]
    """(the converted CTs' paths, the stage's poses, its geometry) as ``stage=drr`` ran:
    centre + 9 random views, or with ``grid`` > 0 the grid x grid angles of ``--grid``."""
    from gensyn.base.io import read_table
    from gensyn.drr.geometry import make_geometry
    from gensyn.drr.poses import PoseMode, PoseSettings, pose_set

    convert = newest_run(root, "convert")
    paths = [
        convert / (str(r["path"]) if "path" in r else f"volumes/{r['nifti']}")
        for _, r in read_table(convert / "volumes.csv").iterrows()
    ]
    if grid > 0:
        angles = grid_angles_deg(grid)
        views = pose_set(PoseSettings(PoseMode.grid, angles, angles))
    else:
        views = pose_set(PoseSettings(PoseMode.random), "ct")
    geometry = make_geometry("mobile_carm", image_px, None, None, None, 1.0)
    return paths, [v.pose for v in views], geometry


def drr_kernel(
    root: Path, device: str, image_px: int, repeats: int, grid: int = 0
) -> tuple[float, dict[str, float]]:
    """DRRs/s of the renderer alone: CT 0's views (as the stage's), volumes prepared, every
    view in one call, the float DRRs copied to a numpy array (the figure earlier leases
    report); and, same renderer, DRRs/s of the device alone (the float DRRs left where they
    were rendered) and of the stage's main thread per CT
    (:func:`gensyn.drr.batch.render_views`: render ``projector.batch_poses`` views at a time,
    window them to 16-bit images where they lie, copy those to the host, refuse degenerate
    ones) for batches of 8 views up to all of them: the ceiling of the stage's rate at each
    ``projector.batch_poses``."""
    from types import SimpleNamespace

    from gensyn.base.io import read_nifti
    from gensyn.drr.batch import CtJob, render_views
    from gensyn.drr.render import DrrRenderer, PhysicsConfig
    from gensyn.drr.settings import ProjectorSettings

    paths, poses, geometry = drr_inputs(root, image_px, grid)
    hu, affine = read_nifti(paths[0])
    renderer = DrrRenderer(hu, affine, PhysicsConfig(output="line_integral"), device)
    renderer.prepare(poses, geometry)
    kernel = _rate(lambda: renderer.render(poses, geometry), len(poses), device, repeats)
    extra = {
        "kernel_on_device_per_s": _rate(
            lambda: renderer.render(poses, geometry, as_tensor=True), len(poses), device, repeats
        )
    }
    views = [SimpleNamespace(pose=pose, index=i) for i, pose in enumerate(poses)]
    job = CtJob(0, "ct0", paths[0], views, [f"v{i}.png" for i in range(len(views))])
    for size in sorted({b for b in (8, 16, 32, 64) if b < len(poses)} | {len(poses)}):
        settings = ProjectorSettings(batch_poses=size, bit_depth=16)
        extra[f"render_views_per_s_batch_{size}"] = _rate(
            lambda s=settings: render_views(renderer, job, s, 0, geometry, False),
            len(poses),
            device,
            repeats,
        )
    return kernel, extra


def deepdrr_peer(root: Path, image_px: int, python: str, shims: bool, repeats: int) -> dict:
    """The peer, same run and GPU: DeepDRR 1.2 rendering CT 0's ten views as the stage does
    (same CT, poses, 512² detector, polychromatic, three materials, no noise), through
    :class:`gensyn.drr.deepdrr_adapter.DeepDrrRenderer` in the DeepDRR environment at
    ``python``. ``drrs_per_s``: the best of ``repeats`` renders of the ten views after its
    first (the kernel); ``cts_per_s``: one CT's DeepDRR set-up (kernel build, volume upload)
    plus one render of its views, as a loop over CTs in one DeepDRR process pays them,
    reading the file and writing PNGs left out (both favour the peer). An error is
    recorded, not raised: the stage's figures stand without it."""
    from gensyn.base.io import read_nifti
    from gensyn.drr.deepdrr_adapter import DeepDrrRenderer, DeepDrrSettings
    from gensyn.drr.render import PhysicsConfig

    paths, poses, geometry = drr_inputs(root, image_px)
    try:
        hu, affine = read_nifti(paths[0])
        settings = DeepDrrSettings(deepdrr_python=python, deepdrr_shims=shims)
        renderer = DeepDrrRenderer(hu, affine, PhysicsConfig(output="line_integral"), settings)
        renderer.render(poses, geometry, timing_repeats=repeats)
    except Exception as exc:  # the peer failing must not hide the stage
        return {"error": f"{type(exc).__name__}: {str(exc)[-600:]}"}
    run = renderer.last_run
    best = min(run["render_s"])
    return {
        "drrs_per_s": len(poses) / best,
        "cts_per_s": 1.0 / (run["init_s"] + run["first_render_s"]),
        "init_s": run["init_s"],
        "first_render_s": run["first_render_s"],
        "render_s": run["render_s"],
        "worker_wall_s": run.get("wall_s"),
        "versions": {k: v for k, v in run.items() if "version" in k},
    }


def drr_costs(
    root: Path, device: str, image_px: int, workers: int, level: int, grid: int = 0
) -> dict[str, float]:
    """What one CT costs the drr stage, step by step, and how reading and writing scale.

    Single-threaded, mean over up to 4 CTs with the stage's views (``grid`` as for
    :func:`drr_inputs`): seconds per CT to ``read`` (inflate the .nii.gz, int16 voxels),
    ``prepare`` (to the device, material volumes), ``render`` (all views in one call),
    ``window`` (to 16-bit images where they were rendered, copied to the host); milliseconds
    per image to ``encode`` a PNG at zlib ``level`` (the stage's
    ``projector.png_compress_level``) in memory, to ``write`` it as the stage does (encode,
    then an atomic write without an fsync), to write it with an fsync each (how the stage
    wrote before), and to encode it with Pillow (the peer, on 10 images), with the PNGs' mean
    size in MB. Then CTs/s of reading and images/s of those three ways of encoding or writing
    on 1 and on ``workers`` threads: a ratio well below ``workers`` means a lock (the GIL,
    the disk's fsyncs) or memory bandwidth, not the core count, limits that step.
    """
    import io
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from gensyn.base.io import encode_png, read_nifti, write_image
    from gensyn.drr.render import DrrRenderer, PhysicsConfig, to_images

    paths, poses, geometry = drr_inputs(root, image_px, grid)
    physics = PhysicsConfig(output="line_integral")
    per_ct = dict.fromkeys(("read", "prepare", "render", "window"), 0.0)
    per_image = dict.fromkeys(("encode", "write", "write_fsync", "encode_pillow"), 0.0)
    n_images = dict.fromkeys(per_image, 0)
    sizes: list[int] = []
    sample = paths[:4]
    out = root / "costs"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    images = None
    for c, path in enumerate(sample):
        t = time.perf_counter()
        hu, affine = read_nifti(path, None)
        per_ct["read"] += time.perf_counter() - t
        t = time.perf_counter()
        renderer = DrrRenderer(hu, affine, physics, device).prepare(poses, geometry)
        _sync(device)
        per_ct["prepare"] += time.perf_counter() - t
        t = time.perf_counter()
        drrs = renderer.render(poses, geometry, as_tensor=True)
        _sync(device)
        per_ct["render"] += time.perf_counter() - t
        t = time.perf_counter()
        images = to_images(drrs, 16)
        per_ct["window"] += time.perf_counter() - t
        steps = {
            "encode": lambda i, a: sizes.append(len(encode_png(a, level))),
            "write": lambda i, a, c=c: write_image(out / f"c{c}w{i}.png", a, level, durable=False),
            "write_fsync": lambda i, a, c=c: write_image(out / f"c{c}f{i}.png", a, level),
            "encode_pillow": lambda i, a: Image.fromarray(a).save(
                io.BytesIO(), format="PNG", compress_level=level
            ),
        }
        for step, fn in steps.items():
            todo = images[:10] if step == "encode_pillow" else images
            t = time.perf_counter()
            for i, image in enumerate(todo):
                fn(i, image)
            per_image[step] += time.perf_counter() - t
            n_images[step] += len(todo)
        del renderer, drrs
    costs = {f"{k}_s_per_ct": v / len(sample) for k, v in per_ct.items()}
    costs.update({f"{k}_ms_per_image": 1000 * v / n_images[k] for k, v in per_image.items()})
    costs["png_mb_per_image"] = sum(sizes) / len(sizes) / 1e6
    assert images is not None
    for threads in sorted({1, max(1, workers)}):
        reads = paths[: max(threads, 4)]
        with ThreadPoolExecutor(threads) as pool:
            t = time.perf_counter()
            list(pool.map(lambda q: read_nifti(q, None)[0].shape, reads))
            costs[f"read_cts_per_s_{threads}_threads"] = len(reads) / (time.perf_counter() - t)
        jobs = [(f"t{threads}_{i}", images[i % len(images)]) for i in range(max(16 * threads, 64))]
        ways = {
            "encode": lambda j: encode_png(j[1], level),
            "write": lambda j: write_image(out / f"w{j[0]}.png", j[1], level, durable=False),
            "write_fsync": lambda j: write_image(out / f"f{j[0]}.png", j[1], level),
        }
        for way, fn in ways.items():
            with ThreadPoolExecutor(threads) as pool:
                t = time.perf_counter()
                list(pool.map(fn, jobs))
                costs[f"{way}_images_per_s_{threads}_threads"] = len(jobs) / (
                    time.perf_counter() - t
                )
    shutil.rmtree(out, ignore_errors=True)
    return costs


def translate_kernel(root: Path, device: str, image_px: int, batch: int, repeats: int) -> float:
    """Images/s of the generator's forward at ``batch`` on in-RAM tensors (bf16 on CUDA)."""
    import torch

    from gensyn.gan.translate import compiled_generator, load_generator, translate_batch

    net, opts = load_generator(newest_run(root, "gan_train") / "generator_a2b.pt", device)
    if device == "cuda":  # what gan_translate runs with generator.compile=true (the default)
        net = compiled_generator(net)
    x = torch.rand(batch, net.in_channels, image_px, image_px, device=device) * 2 - 1
    # CUDA graphs: the first calls run eagerly and record; the replays are what is timed
    return _rate(lambda: translate_batch(net, x, opts["precision"]), batch, device, repeats, 3)


def reference_translate(root: Path, ref_dir: Path, n_images: int, device: str) -> dict[str, float]:
    """The peer, on the same device in the same run: pytorch-CycleGAN-and-pix2pix's generator
    (``models/networks.py`` of a checkout at ``ref_dir``, imported, never copied) translating
    the first ``n_images`` DRRs of ``stage=drr`` PNG to PNG the way its ``test.py`` does:
    one process (``num_threads=0``), batch 1, fp32, Pillow in (``convert("RGB")`` then
    grey), ``(x - 0.5) / 0.5``, the forward under ``no_grad``, ``tensor2im`` (3 channels,
    uint8) and ``save_image`` of the real and the fake image. Its data loader and HTML page
    are left out (torchvision is not on every machine; both cost the reference time, so the
    figure flatters it). Random weights: the speed does not depend on them. Also the
    reference's generator alone (batch 1, fp32, in-RAM tensor)."""
    import importlib.util
    import tempfile

    import torch
    from PIL import Image

    spec = importlib.util.spec_from_file_location(
        "ref_networks", ref_dir / "models" / "networks.py"
    )
    ref = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(ref)  # type: ignore[union-attr]
    gpu_ids = [0] if device == "cuda" else []
    net = ref.define_G(1, 1, 64, "resnet_9blocks", "instance", False, "normal", 0.02, gpu_ids)
    net = net.to(device).eval()
    drrs = sorted(newest_run(root, "drr").glob("**/*.png"))[:n_images]
    x = torch.rand(1, 1, *np.asarray(Image.open(drrs[0])).shape, device=device) * 2 - 1

    def forward() -> None:
        with torch.no_grad():
            net(x)

    kernel = _rate(forward, 1, device, 64 if device == "cuda" else 2)

    def tensor2im(t: torch.Tensor) -> np.ndarray:  # the reference's util.tensor2im
        arr = t[0].cpu().float().numpy()
        arr = np.tile(arr, (3, 1, 1)) if arr.shape[0] == 1 else arr
        return ((np.transpose(arr, (1, 2, 0)) + 1) / 2.0 * 255.0).astype(np.uint8)

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        for i, path in enumerate(drrs):
            grey = np.asarray(Image.open(path).convert("RGB").convert("L"), np.float32) / 255.0
            real = torch.from_numpy((grey - 0.5) / 0.5)[None, None].to(device)
            with torch.no_grad():
                fake = net(real)
            for name, t in (("real", real), ("fake", fake)):
                Image.fromarray(tensor2im(t)).save(Path(out) / f"{i:06d}_{name}.png")
        png_to_png = len(drrs) / (time.perf_counter() - start)
    return {"images": len(drrs), "png_to_png_per_s": png_to_png, "kernel_b1_fp32_per_s": kernel}


def predict_kernel(root: Path, batch: int, repeats: int) -> float:
    """Images/s of ``model.predict`` on an in-RAM uint8 array (``repeats`` batches)."""
    from gensyn.classify.predict import load_classifier

    model = load_classifier(newest_run(root, "classify") / "best.keras")
    size = int(model.input_shape[1])
    images = np.random.default_rng(0).integers(0, 256, (batch * repeats, size, size, 1), np.uint8)
    model.predict(images[:batch], batch_size=batch, verbose=0)  # compile
    start = time.perf_counter()
    model.predict(images, batch_size=batch, verbose=0)
    return len(images) / (time.perf_counter() - start)


def breakdown(summary: dict[str, Any]) -> str:
    parts = (
        "setup",
        "read",
        "prepare",
        "compile",
        "compute",
        "gpu",
        "write",
        "wait_input",
        "wait_gpu",
        "hand_over",
        "wait_output",
        "gc",
        "sync",
        "wall",
    )
    return " ".join(
        f"{p}={summary[f'time_{p}_s']:.1f}" for p in parts if summary.get(f"time_{p}_s")
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--cts", type=int, default=None, help="CTs (default 50; 3 with --small)")
    p.add_argument("--small", action="store_true", help="tiny sizes: a CPU smoke run")
    p.add_argument("--root", type=Path, default=Path("/tmp/gensyn-stage-bench"))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--stages", default="drr,gan_translate,predict")
    p.add_argument(
        "--drr-runs", type=int, default=2,
        help="run stage=drr this often and report the last: the first also compiles the "
        "fused kernel (Triton caches it on disk for every later run)",
    )  # fmt: skip
    p.add_argument(
        "--views", type=int, default=10,
        help="DRRs per CT (centre + random views; 10 in the study): more views give "
        "gan_translate more images without more CTs to write and convert",
    )  # fmt: skip
    p.add_argument(
        "--grid", type=int, default=0,
        help="render carm_pose=grid with GRID x GRID angles 5 degrees apart (11: 121 views "
        "per CT, alpha and beta -25..25) instead of --views; the kernel renders the same grid",
    )  # fmt: skip
    p.add_argument(
        "--stage-only", action="store_true",
        help="drr: time the stage alone, not its kernel and costs (a further variant of "
        "settings on the same --root, e.g. projector.batch_poses=32, after a full run)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="JSON with every figure")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="folder: after the timed runs, run each stage once more under py-spy (on PATH) "
        "and write its samples there (every thread, idle ones too, Python frames only, "
        "sampled without pausing the process: raw collapsed stacks, one file a stage)",
    )
    p.add_argument(
        "--ref-dir",
        type=Path,
        default=None,
        help="checkout of junyanz/pytorch-CycleGAN-and-pix2pix: times the reference's "
        "generator translating DRRs PNG to PNG as its test.py does, in the same run",
    )
    p.add_argument("--ref-images", type=int, default=1000, help="DRRs the reference translates")
    p.add_argument(
        "--deepdrr-python",
        default=None,
        help="python of a DeepDRR environment (docs/deepdrr.md): times DeepDRR on the drr "
        "stage's CT 0 and views in the same run (CUDA only)",
    )
    p.add_argument(
        "--deepdrr-shims", action="store_true", help="projector.deepdrr_shims for that peer"
    )
    p.add_argument("overrides", nargs="*", help="extra launch.py overrides")
    a = p.parse_args()
    size = SIZES["small" if a.small else "study"]
    n_cts = a.cts or (3 if a.small else 50)
    root = a.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GENSYN_ROOT": str(root),
        "MPLBACKEND": "Agg",
        "KERAS_BACKEND": "jax",
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(root / "cache")),
    }
    log = root / "stages.log"
    cts = root / "cts"
    start = time.perf_counter()
    write_cts(cts, n_cts, size["ct_shape"], size["ct_spacing_mm"], a.workers)
    print(f"{n_cts} CTs {size['ct_shape']} written in {time.perf_counter() - start:.0f} s")
    stages = a.stages.split(",")
    # preparing 3,000 patients' 512² X-rays took 98 s of a GPU lease that only translated
    n_xrays = size["n_xray_patients" if "predict" in stages else "n_xray_patients_gan"]
    common = [
        "experiment=thesis",  # the study's sizes (DRRs 512², ResNet-9, DenseNet121)
        "dataset=demo",
        "ct_dataset=folder",
        f"ct_dataset.raw_dir={cts}",
        f"ct_dataset.convert.num_workers={a.workers}",
        f"dataset.demo.num_xray_patients={n_xrays}",
        f"dataset.demo.xray_size_px={size['xray_px']}",
        f"dataset.demo.num_workers={a.workers}",
        *(
            [
                "carm_pose=grid",
                f"carm_pose.alpha_deg=[{','.join(map(str, grid_angles_deg(a.grid)))}]",
                f"carm_pose.beta_deg=[{','.join(map(str, grid_angles_deg(a.grid)))}]",
            ]
            if a.grid
            else ["carm_pose=random", f"carm_pose.num_random={a.views - 1}"]
        ),
        f"projector.image_size_px={size['image_px']}",
        "projector.bit_depth=16",
        f"device={a.device}",
        f"num_workers={a.workers}",
        "logger=none",
        "report.test_datasets=[]",
        "sampling=none",
        "split_idx=0",
        *size["overrides"],
        *a.overrides,
    ]
    launch(["stage=convert", *common], env, log)
    rows: list[dict[str, Any]] = []
    for stage in stages:
        setup = {"gan_translate": ["drr", "gan_train"], "predict": ["classify"]}.get(stage, [])
        for upstream in setup:  # untimed
            launch([f"stage={upstream}", *common], env, log)
        cold = None
        if stage == "drr" and a.drr_runs > 1:  # the first run also compiles the Triton kernel
            launch([f"stage={stage}", "force=true", *common], env, log)
            cold = json.loads((newest_run(root, stage) / "summary.json").read_text())
            print(f"drr, first run (kernel compiled in it): {cold.get('cts_per_s', 0):.2f} CTs/s")
        wall = launch([f"stage={stage}", "force=true", *common], env, log)
        summary = json.loads((newest_run(root, stage) / "summary.json").read_text())
        if cold is not None:
            summary["first_run"] = {k: v for k, v in cold.items() if k.startswith(("time_", "cts", "drrs"))}  # fmt: skip
        unit = STAGE_UNITS[stage]
        if stage == "drr":
            n_items = int(summary.get("drrs_rendered", 0))
        elif stage == "gan_translate":
            n_items = int(summary.get("translated_now", 0))
        else:
            n_items = _n_predicted(root)
        if stage == "drr" and a.stage_only:
            kernel = float("nan")
        elif stage == "drr":
            kernel, kernels = drr_kernel(root, a.device, size["image_px"], repeats=5, grid=a.grid)
            summary["kernels"] = kernels
            print("drr kernel: " + ", ".join(f"{k} {v:.0f}" for k, v in kernels.items()))
            prefix = "projector.png_compress_level="
            level = next((int(o[len(prefix) :]) for o in a.overrides if o.startswith(prefix)), 1)
            costs = drr_costs(root, a.device, size["image_px"], a.workers, level, a.grid)
            summary["cpu_costs"] = costs
            if a.deepdrr_python:
                summary["peer"] = deepdrr_peer(
                    root, size["image_px"], a.deepdrr_python, a.deepdrr_shims, repeats=3
                )
                print(f"DeepDRR on CT 0's views: {summary['peer']}")
            print("drr costs: " + ", ".join(f"{k} {v:.3g}" for k, v in costs.items()))
        elif stage == "gan_translate":
            batch = 4 if a.small else 32
            kernel = translate_kernel(root, a.device, size["image_px"], batch, repeats=30)
            if a.ref_dir is not None:
                peer = reference_translate(root, a.ref_dir.resolve(), a.ref_images, a.device)
                summary["peer"] = peer
                print(f"reference (pytorch-CycleGAN-and-pix2pix): {summary['peer']}")
        else:
            kernel = predict_kernel(root, 16 if a.small else 128, repeats=5 if a.small else 20)
        stage_rate = float(summary.get(f"{unit}_per_s", 0.0))
        # gan_translate and predict time their compilation apart: the rate after it
        warm_rate = float(summary.get(f"{unit}_per_s_after_compile", stage_rate))
        rows.append(
            {
                "stage": stage,
                "items": n_items,
                "stage_per_s": stage_rate,
                "stage_per_s_after_compile": warm_rate,
                "launch_per_s": n_items / wall,
                "kernel_per_s": kernel,
                "peer_per_s": summary.get("peer", {}).get(
                    "drrs_per_s" if stage == "drr" else "png_to_png_per_s"
                ),
                "ratio": warm_rate / kernel if kernel else float("nan"),
                "breakdown": breakdown(summary),
                "summary": summary,
            }
        )
        print(
            f"{stage}: {n_items} {unit}, {stage_rate:.1f}/s in stage ({warm_rate:.1f}/s after "
            f"compiling), {kernel:.1f}/s kernel"
        )
        if a.profile is not None:  # slower under the profiler: its figures are not kept
            a.profile.mkdir(parents=True, exist_ok=True)
            # no --native: unwinding C frames paused a 50 s stage for minutes on an H200 host
            spy = ["py-spy", "record", "--idle", "--threads", "--nonblocking", "--rate", "200"]
            spy += ["--format", "raw", "-o", str(a.profile / f"{stage}.txt"), "--"]
            launch([f"stage={stage}", "force=true", *common], env, log, wrap=spy)
            profiled = json.loads((newest_run(root, stage) / "summary.json").read_text())
            print(f"{stage} under py-spy: {breakdown(profiled)}")
    print()
    print(
        f"{'stage':<14} {'items':>6} {'stage/s':>9} {'warm/s':>9} {'launch/s':>9} "
        f"{'kernel/s':>9} {'ratio':>6} {'peer/s':>8}  time breakdown (s)"
    )
    for r in rows:  # ratio: the stage after compiling over its kernel
        print(
            f"{r['stage']:<14} {r['items']:>6} {r['stage_per_s']:>9.1f} "
            f"{r['stage_per_s_after_compile']:>9.1f} {r['launch_per_s']:>9.1f} "
            f"{r['kernel_per_s']:>9.1f} {r['ratio']:>6.2f} {r['peer_per_s'] or float('nan'):>8.1f}"
            f"  {r['breakdown']}"
        )
    if "drr" in stages:
        drr = next(r for r in rows if r["stage"] == "drr")["summary"]
        print(
            f"\ndrr: {drr.get('cts_per_s', 0):.2f} CTs/s with {a.grid**2 or a.views} views each; after the "
            f"first CT ({drr.get('time_to_first_ct_s', 0):.2f} s in) "
            f"{drr.get('cts_per_s_after_first', 0):.2f} CTs/s"
        )
    if a.out:
        a.out.write_text(json.dumps({"device": a.device, "cts": n_cts, "rows": rows}, indent=2))


def _n_predicted(root: Path) -> int:
    from gensyn.base.io import read_table

    return len(read_table(newest_run(root, "predict") / "predictions.csv"))


if __name__ == "__main__":
    main()
