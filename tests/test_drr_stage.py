"""stage=drr: images, manifest, resume per CT, pose modes; end to end on the tiny profile."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gensyn.drr.poses import PoseMode, PoseSettings, pose_set


def _phantom_ct(shape=(40, 36, 32), spacing=(6.0, 6.0, 7.0)):
    """Water ellipsoid with a bone rod on the patient's left, in air (HU)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    xyz = (ijk - (np.asarray(shape) - 1) / 2) * np.asarray(spacing)
    hu = np.full(shape, -1000.0, np.float32)
    hu[((xyz / [110.0, 80.0, 100.0]) ** 2).sum(-1) < 1] = 40.0
    hu[(xyz[..., 0] + 50) ** 2 + xyz[..., 1] ** 2 < 15**2] = 900.0
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    return hu.astype(np.int16), affine


@pytest.fixture
def convert_dir(tmp_path: Path) -> Path:
    import pandas as pd

    from gensyn.base.io import write_nifti, write_table

    folder = tmp_path / "convert"
    rows = []
    for i in range(2):
        hu, affine = _phantom_ct()
        write_nifti(folder / "volumes" / f"ct{i}.nii.gz", hu, affine)
        rows.append({"ct_id": f"ct{i}", "patient_id": f"p{i}", "path": f"volumes/ct{i}.nii.gz"})
    write_table(folder / "volumes.csv", pd.DataFrame(rows))
    return folder


def _run_stage(cfg, out_dir: Path, convert_dir: Path):
    from gensyn.core.run_context import RunContext
    from gensyn.stages import drr

    ctx = RunContext(
        name="drr",
        out_dir=out_dir,
        stage_hash="test",
        cfg=cfg,
        upstream_dirs={"convert": convert_dir},
    )
    drr.run(cfg, ctx)
    return ctx


def test_stage_grid_images_manifest_and_resume(compose, convert_dir, tmp_path):
    from gensyn.base.io import read_image, read_table

    cfg = compose(
        "carm_pose=grid",
        "carm_pose.alpha_deg=[-10,0,10]",
        "carm_pose.beta_deg=[0,10]",
        "projector.image_size_px=48",
        "projector.bit_depth=16",
        "projector.save_float=true",
    )
    out = tmp_path / "drr"
    ctx = _run_stage(cfg, out, convert_dir)
    manifest = read_table(out / "manifest.csv")
    assert len(manifest) == 12 and ctx.summary["n_images"] == 12
    assert manifest.groupby("ct_id")["is_center"].sum().tolist() == [1, 1]
    center = manifest[manifest["is_center"].astype(bool)].iloc[0]
    assert (center["alpha_deg"], center["beta_deg"], center["view_index"]) == (0, 0, 0)
    for col in ("patient_id", "kvp", "filtration_mm_al", "mode", "pixel_size_mm"):
        assert col in manifest.columns
    img = read_image(out / center["path"])
    assert img.shape == (48, 48) and img.dtype == np.uint16
    drr = np.load(out / center["path"].replace(".png", ".npy"))
    # bone rod on the patient's left: image right half brighter (bone bright)
    assert drr[:, 28:].max() > drr[:, :20].max()
    # resume: complete CTs are skipped; a CT without its marker is rendered again
    first = out / manifest["path"].iloc[0]
    stamp = first.stat().st_mtime_ns
    (out / "images" / "ct1" / "views.json").unlink()
    (out / manifest[manifest["ct_id"] == "ct1"]["path"].iloc[0]).unlink()
    _run_stage(cfg, out, convert_dir)
    assert first.stat().st_mtime_ns == stamp
    assert (out / manifest[manifest["ct_id"] == "ct1"]["path"].iloc[0]).is_file()
    assert len(read_table(out / "manifest.csv")) == 12


def test_a_marked_ct_with_a_cut_png_is_rendered_again(compose, convert_dir, tmp_path):
    """The images are written without an fsync each (one sync at the end): a machine crash can
    leave a renamed PNG empty or cut under a CT's marker. The resumed run renders that CT again
    (same bytes) and keeps the others; the summary times the one sync."""
    from gensyn.base.io import read_table

    cfg = compose("carm_pose=grid", "carm_pose.alpha_deg=[-10,0]", "carm_pose.beta_deg=[0,10]",
                  "projector.image_size_px=32", "projector.bit_depth=16")  # fmt: skip
    out = tmp_path / "drr"
    ctx = _run_stage(cfg, out, convert_dir)
    assert ctx.summary["time_sync_s"] >= 0
    paths = read_table(out / "manifest.csv").groupby("ct_id")["path"].apply(list).to_dict()
    whole = {p: (out / p).read_bytes() for ps in paths.values() for p in ps}
    cut = out / paths["ct1"][2]
    cut.write_bytes(whole[paths["ct1"][2]][:-100])  # its IEND chunk lost
    (out / paths["ct1"][0]).write_bytes(b"")  # renamed, its data never reached the disk
    kept = out / paths["ct0"][0]
    stamp = kept.stat().st_mtime_ns
    again = _run_stage(cfg, out, convert_dir)
    assert again.summary["drrs_rendered"] == 4  # ct1 only
    assert kept.stat().st_mtime_ns == stamp
    assert {p: (out / p).read_bytes() for p in whole} == whole


def test_a_constant_drr_fails_naming_the_ct(compose, convert_dir, tmp_path):
    """A CT saturated at the int16 maximum (e.g. unsigned raw values taken as HU) absorbs every
    ray of the central detector: its DRRs are one grey level. The stage fails naming the CT,
    keeps the CTs rendered before and is never DONE (issue 36)."""
    import pandas as pd

    from gensyn.base.errors import GensynError
    from gensyn.base.io import read_table, write_nifti, write_table

    hu, affine = _phantom_ct()
    write_nifti(convert_dir / "volumes" / "sat.nii.gz", np.full_like(hu, 32767), affine)
    table = read_table(convert_dir / "volumes.csv")
    extra = {"ct_id": "sat", "patient_id": "p9", "path": "volumes/sat.nii.gz"}
    write_table(convert_dir / "volumes.csv", pd.concat([table, pd.DataFrame([extra])]))
    cfg = compose("projector.image_size_px=32", "projector.crop_fraction=0.1")
    out = tmp_path / "drr"
    with pytest.raises(GensynError) as err:
        _run_stage(cfg, out, convert_dir)
    text = str(err.value)
    assert "CT sat (" in text and "sat.nii.gz), view 0" in text
    assert "the windowed image is constant" in text and "not marked DONE" in text
    assert (out / "images" / "ct0" / "views.json").is_file()  # rendered before: kept
    assert (out / "images" / "ct1" / "views.json").is_file()
    assert not (out / "images" / "sat").exists() or not any((out / "images" / "sat").iterdir())
    assert not (out / "manifest.csv").exists()


def test_pose_sets():
    assert [v.pose.alpha_deg for v in pose_set(PoseSettings())] == [0.0]
    angles = [-10.0, -5.0, 0.0, 5.0, 10.0]
    grid = pose_set(PoseSettings(PoseMode.grid, angles, angles))
    assert len(grid) == 25 and grid[0].is_center and sum(v.is_center for v in grid) == 1
    random = PoseSettings(PoseMode.random, num_random=4, seed=1)
    a = pose_set(random, ct_id="x")
    b = pose_set(random, ct_id="x")
    c = pose_set(random, ct_id="y")
    assert a == b and a != c and len(a) == 5 and a[0].is_center
    assert all(-10 <= v.pose.alpha_deg <= 10 and -10 <= v.pose.beta_deg <= 10 for v in a)
    with pytest.raises(ValueError, match="allowed"):
        pose_set(PoseSettings(mode="spiral"))  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gensyn.data.phantom.demo") is None,
    reason="demo phantoms (gensyn.data.phantom.demo) not there yet",
)
def test_stage_end_to_end_tiny(launch, gensyn_root):
    """python launch.py stage=drr profile=tiny: convert (demo phantoms) then DRRs."""
    from gensyn.base.io import read_table

    launch("stage=drr", "profile=tiny", "carm_pose=random", "carm_pose.num_random=2", "logger=none")
    manifests = list(gensyn_root.rglob("drr/*/manifest.csv"))
    assert len(manifests) == 1
    manifest = read_table(manifests[0])
    assert len(manifest) == 3 * manifest["ct_id"].nunique() > 0
    assert all((manifests[0].parent / p).is_file() for p in manifest["path"])
    # a second launch finds the DONE folder
    again = launch(
        "stage=drr", "profile=tiny", "carm_pose=random", "carm_pose.num_random=2", "logger=none"
    )
    assert (
        "skip" in (again.stdout + again.stderr).lower()
        or "done" in (again.stdout + again.stderr).lower()
    )


def test_a_killed_drr_resumes_after_the_last_complete_ct(launch, gensyn_root):
    """SIGKILL while CT k+1 renders: the resumed run renders only the CTs not fully written
    (CT k's marker is written with its last file, not after the next CT; issue 36)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    angles = "[-15,-10,-5,0,5,10,15]"  # 49 views a CT: long enough to kill between CTs
    args = ("profile=tiny", "logger=none", "logger.carbontracker=false")
    drr_args = ("stage=drr", "carm_pose=grid", f"carm_pose.alpha_deg={angles}",
                f"carm_pose.beta_deg={angles}", *args)  # fmt: skip
    launch("stage=convert", *args)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, str(root / "launch.py"), *drr_args],
        cwd=gensyn_root,
        env={**os.environ, "GENSYN_ROOT": str(gensyn_root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs = gensyn_root / "workdir" / "runs" / "drr"

    def complete_cts() -> list[str]:
        return sorted(d.name for d in runs.glob("*/images/*") if len(list(d.glob("*.png"))) == 49)

    deadline = time.monotonic() + 300
    while len(complete_cts()) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # into the next CT's rendering
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    complete = complete_cts()  # every file written before the kill
    # resume markers: written right after a CT's last file, so at most the CT whose last file
    # landed in the instant of the kill has its files but not yet its marker
    marked = sorted(d.parent.name for d in runs.glob("*/images/*/views.json"))
    assert 2 <= len(complete) < 6, complete
    assert set(marked) <= set(complete) and len(complete) - len(marked) <= 1, (complete, marked)
    launch(*drr_args)
    (run,) = runs.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["drrs_rendered"] == (6 - len(marked)) * 49  # no marked CT rendered again
    assert summary["n_images"] == 6 * 49
