"""Render many CTs' DRRs to files, with loading, rendering and writing overlapped.

:func:`render_cts` takes a list of :class:`CtJob` (a CT's NIfTI, its views and output file
names), the projector's :class:`~gensyn.drr.settings.ProjectorSettings` and a seed:
``workers`` loader threads read and decompress the next CTs and build their material density
volumes while the calling thread renders (at most :data:`DEVICE_PREFETCH_CTS` CTs prepared on
the device at once), and ``min(workers, settings.write_threads)`` writer threads encode and
write the images (more busy Python threads slow every torch call of the rendering thread,
which must take the GIL back after each); ``workers=0`` does everything in sequence on one
thread, with the same bytes. A CT's ``images/<ct_id>/views.json`` is written once all its
files are (resume marker); a volume that cannot be read is returned as a failure while the
others render. Files are written atomically without an fsync each (the disk's fsync rate, not the encoder,
set the pace: 881 files/s on 16 threads of an H100 host, 276 on one) and made durable
together by one ``os.sync()`` at the end (timed as ``sync``); a resumed run checks each PNG of
a marked CT (:func:`gensyn.base.io.png_complete`), so one cut by a machine crash is rendered again.
Poisson noise is seeded per (seed, CT, view) (:func:`gensyn.drr.render.view_noise_seed`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gensyn.base.pipeline_io import InOrderSlots, StageTimer
from gensyn.drr.renderers import Renderer, renderer_for
from gensyn.drr.settings import ProjectorSettings

__all__ = ["DEVICE_PREFETCH_CTS", "CtJob", "render_cts", "render_views"]

log = logging.getLogger(__name__)


#: CTs whose material volumes may sit on the device at once (the one rendering + the next).
DEVICE_PREFETCH_CTS = 2


@dataclass
class CtJob:
    """One CT to render: its position among the CTs rendered in this run, file, views, names."""

    position: int
    ct_id: str
    nifti: Path
    views: list[Any]
    names: list[str]


@dataclass
class _LoadedCt:
    """A CT read and prepared by a loader: its renderer, or why its volume could not be read."""

    job: CtJob
    renderer: Renderer | None = None
    error: str | None = None


def _loader(
    settings: ProjectorSettings,
    geometry: Any,
    physics: Any,
    device: str,
    slots: InOrderSlots,
    timer: StageTimer,
) -> Callable[[CtJob], _LoadedCt]:
    """The loader of one CT: read the NIfTI, then (holding a device slot) make its renderer
    and build the material density volumes its views need."""
    import numpy as np

    from gensyn.base.io import read_nifti

    s = settings

    def load(job: CtJob) -> _LoadedCt:
        try:
            with timer.time("read"):
                # GENSYN's renderer takes the stored integers (cast on its device); DeepDRR HU
                hu, affine = read_nifti(job.nifti, None if s.name == "torch" else np.float32)
        except ValueError as exc:  # truncated or corrupt: list it, render the others
            return _LoadedCt(job, error=str(exc))
        slots.acquire(job.position)  # device memory stays bounded: only the next CTs in order
        with timer.time("prepare"):
            # projector.name: torch (GENSYN) | deepdrr (out of process, drr/deepdrr_adapter.py)
            renderer = renderer_for(s.name, hu, affine, physics, device, s)
            renderer.prepare([v.pose for v in job.views], geometry, s.method)
        return _LoadedCt(job, renderer)

    return load


def render_views(
    renderer: Renderer, job: CtJob, p: ProjectorSettings, seed: int, geometry: Any, noisy: bool
) -> tuple[list[Any], list[Any]]:
    """One CT's views rendered ``p.batch_poses`` at a time (noise seeded per (seed, CT,
    view)), windowed into images where they were rendered, a view that gives no usable image
    refused: (uint8/16 images, float DRRs if ``save_float``). The stage's main thread runs
    this; ``benchmarks/stages.py`` times it per batch size."""
    from gensyn.drr.render import to_images, view_noise_seed

    images: list[Any] = []
    floats: list[Any] = []
    for start in range(0, len(job.views), p.batch_poses):
        batch = job.views[start : start + p.batch_poses]
        poses = [v.pose for v in batch]
        seeds = [view_noise_seed(seed, job.ct_id, v.index) for v in batch] if noisy else None
        drrs = renderer.render(
            poses, geometry, p.method, p.step_mm, p.max_samples, seed=seeds, as_tensor=True
        )
        batch_images = to_images(drrs, p.bit_depth, tuple(p.window_percentiles))
        _refuse_degenerate(job, batch, drrs, batch_images)
        images.extend(batch_images)
        if p.save_float:
            floats.extend(drrs.cpu().numpy())
    return images, floats


def _refuse_degenerate(job: CtJob, views: list[Any], drrs: Any, images: Any) -> None:
    """Raise :class:`DegenerateOutputError` for a view whose DRR has non-finite values or
    whose image is constant (nothing of this CT is written then)."""
    import numpy as np

    from gensyn.base.degenerate import DegenerateOutputError, degenerate_reason

    # one reduction a batch where the DRRs lie, one over the batch's images on the host; the
    # per-view reasons only when one fails
    finite = bool(drrs.isfinite().all()) if hasattr(drrs, "isfinite") else None
    flat = np.asarray(images).reshape(len(views), -1)
    constant = flat.min(axis=1) == flat.max(axis=1) if flat.shape[1] > 1 else [False] * len(views)
    for i, view in enumerate(views):
        reason = None if finite else degenerate_reason(drrs[i], constant=False)
        if reason is None and constant[i] and (reason := degenerate_reason(images[i])) is not None:
            reason = f"the windowed image is {reason}"
        if reason is not None:
            raise DegenerateOutputError(
                f"CT {job.ct_id} ({job.nifti}), view {view.index} (alpha "
                f"{view.pose.alpha_deg:g}, beta {view.pose.beta_deg:g} degrees): {reason}"
            )


def _write_view(
    png: Path, image: Any, level: int, npy: Path | None, drr: Any, timer: StageTimer
) -> None:
    """Encode and write one view (a writer job): its windowed PNG at zlib ``level``, optionally
    the float .npy; both atomically, without an fsync (:func:`render_cts` syncs once)."""
    import numpy as np

    from gensyn.base.io import atomic_write, write_image

    with timer.time("write"):
        write_image(png, image, level, durable=False)
        if npy is not None:
            with atomic_write(npy, durable=False) as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.asarray(drr, dtype=np.float32))


def render_cts(
    todo: list[CtJob], out_dir: Path, geometry: Any, physics: Any, device: str,
    settings: ProjectorSettings, seed: int, workers: int, timer: StageTimer,
    on_ct: Callable[[], None] | None = None,
) -> tuple[int, list[dict[str, str]]]:  # fmt: skip
    """Render ``todo`` in order (``job.position`` = its index) into ``out_dir``; loaders read
    and prepare the next CTs on ``workers`` threads, this thread renders,
    ``min(workers, settings.write_threads)`` writers encode and write; a CT's ``views.json`` is
    written once all its files are. ``on_ct()`` is called after each CT (e.g. a progress
    bar); ``settings.name`` picks the renderer and ``seed`` seeds the Poisson noise when the
    physics draws it. The files are synced to the disk once, at the end.
    Returns (DRRs rendered, unreadable CTs as ct_id/file/reason)."""
    import os

    from gensyn.base import preemption
    from gensyn.base.io import write_json
    from gensyn.base.pipeline_io import BackgroundWriter, ordered_map

    p = settings
    workers = max(0, int(workers))

    def out(*parts: str) -> Path:
        path = out_dir.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    slots = InOrderSlots(DEVICE_PREFETCH_CTS)
    loaded = ordered_map(_loader(p, geometry, physics, device, slots, timer), todo, workers)
    failures: list[dict[str, str]] = []
    rendered = 0
    writing: deque[tuple[CtJob, list[Any]]] = deque()  # CTs whose files are being written

    def mark_when_written(job: CtJob, futures: list[Any]) -> None:
        """Write the CT's ``views.json`` (its resume marker) on the writer thread that finishes
        its last file, at once: a run killed any time later finds the CT complete."""
        left = [len(futures)]
        lock = threading.Lock()

        def one_done(future: Any) -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last and all(f.exception() is None for f in futures):
                write_json(out("images", job.ct_id, "views.json"), {"files": job.names})

        if not futures:
            write_json(out("images", job.ct_id, "views.json"), {"files": job.names})
        for future in futures:
            future.add_done_callback(one_done)

    def finish(wait: bool) -> None:
        """Wait for the CTs (in order) whose files are all written; all of them if ``wait``."""
        while writing and (wait or all(f.done() for f in writing[0][1])):
            _, futures = writing.popleft()
            for future in futures:
                future.result()  # a failed write stops the run here
            # this CT is complete: stop here if SLURM asked, its files synced to the disk first
            preemption.checkpoint_point(save=os.sync)

    views_per_ct = max((len(j.views) for j in todo), default=1)
    writers = min(workers, max(0, int(p.write_threads)))
    try:
        with BackgroundWriter(writers, 2 * max(1, writers) * views_per_ct, timer) as writer:
            for item in timer.timed("wait_input", loaded):
                job, renderer = item.job, item.renderer
                if renderer is None:  # the loader could not read this CT
                    log.warning("drr: skipping %s: %s", job.ct_id, item.error)
                    failures.append({"ct_id": job.ct_id, "file": str(job.nifti), "reason": str(item.error)})  # fmt: skip
                else:
                    with timer.time("compute"):
                        images, floats = render_views(renderer, job, p, seed, geometry, physics.photon_count > 0)  # fmt: skip
                    futures = [
                        writer.submit(
                            _write_view,
                            out(job.names[v.index]),
                            image,
                            int(p.png_compress_level),
                            out(job.names[v.index][:-4] + ".npy") if p.save_float else None,
                            floats[i] if p.save_float else None,
                            timer,
                        )
                        for i, (v, image) in enumerate(zip(job.views, images, strict=True))
                    ]
                    rendered += len(images)
                    mark_when_written(job, futures)
                    writing.append((job, futures))
                    timer.mark("first_ct")  # the pipeline's fill: one CT read and rendered
                del item, renderer  # free this CT's volumes before the next CT is prepared
                slots.release()
                if on_ct is not None:
                    on_ct()
                finish(wait=False)
            writer.drain()
            finish(wait=True)
        if rendered:
            with timer.time("sync"):  # written without an fsync each: durable now, at once
                os.sync()
    finally:
        slots.close()  # wake loaders waiting for a slot, then stop them
        loaded.close()
    return rendered, failures
