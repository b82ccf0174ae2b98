"""The demo data set writer: files, tables, disjoint patients, split, resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from gensyn.base.io import read_image, read_table
from gensyn.data.phantom import demo
from gensyn.data.phantom.demo import (
    CT_GROUP,
    XRAY_GROUP,
    DemoSpec,
    patient_seed,
    write_demo_cts,
    write_demo_xrays,
)
from gensyn.data.phantom.volume import FINDINGS, sample_labels

TINY = DemoSpec(
    num_ct_patients=3,
    num_xray_patients=10,
    volume_shape_vox=(48, 48, 48),
    voxel_spacing_mm=(7.5, 7.5, 7.0),
    xray_size_px=96,
    xray_volume_shape_vox=(40, 24, 40),
    xray_render_px=64,
    finding_prevalence=0.5,
    test_fraction=0.3,
    seed=3,
)


def test_ct_set_files_table_and_labels(tmp_path: Path) -> None:
    table = write_demo_cts(tmp_path, TINY)
    assert list(table.columns[:3]) == ["ct_id", "patient_id", "path"]
    assert set(FINDINGS) <= set(table.columns)
    on_disk = read_table(tmp_path / "volumes.csv")
    assert on_disk["ct_id"].tolist() == table["ct_id"].tolist()
    for row in on_disk.itertuples():
        img = nib.load(tmp_path / row.path)
        assert img.shape == (48, 48, 48) and img.get_data_dtype() == np.int16
        np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), (7.5, 7.5, 7.0))
        expected = sample_labels(row.patient_seed, 0.5)
        assert {f: bool(getattr(row, f)) for f in FINDINGS} == expected


def test_xray_set_disjoint_patients_split_and_images(tmp_path: Path) -> None:
    cts = write_demo_cts(tmp_path / "ct", TINY)
    xrays = write_demo_xrays(tmp_path / "xr", TINY)
    assert not set(cts["patient_id"]) & set(xrays["patient_id"])
    ct_seeds = {patient_seed(TINY.seed, CT_GROUP, i) for i in range(200)}
    xr_seeds = {patient_seed(TINY.seed, XRAY_GROUP, i) for i in range(200)}
    assert not ct_seeds & xr_seeds
    assert (xrays["split"] == "test").sum() == 3  # round(0.3 * 10), one image per patient
    assert set(xrays["view"]) == {"PA"}
    on_disk = read_table(tmp_path / "xr" / "xrays.csv")
    assert on_disk["image_id"].tolist() == xrays["image_id"].tolist()
    for rel in on_disk["path"]:
        img = read_image(tmp_path / "xr" / rel)
        assert img.dtype == np.uint8 and img.shape == (96, 96)
        assert img.std() > 20


def test_rerun_resumes_without_rewriting(tmp_path: Path) -> None:
    first = write_demo_xrays(tmp_path, TINY)
    png = tmp_path / first["path"].iloc[0]
    stamp = png.stat().st_mtime_ns
    png2 = tmp_path / first["path"].iloc[1]
    png2.unlink()  # as if the run had been killed before this image
    again = write_demo_xrays(tmp_path, TINY)
    assert png.stat().st_mtime_ns == stamp
    assert png2.exists()
    assert again.equals(first)


def test_demo_spec_mapping_rejects_unknown_keys() -> None:
    spec = DemoSpec.from_mapping({"num_ct_patients": 5, "volume_shape_vox": [64, 64, 64]}, seed=2)
    assert spec.volume_shape_vox == (64, 64, 64) and spec.seed == 2
    with pytest.raises(ValueError, match="num_ct_patiens"):
        DemoSpec.from_mapping({"num_ct_patiens": 5})


def test_stage_branches_with_the_real_config(compose: Callable[..., Any], tmp_path: Path) -> None:
    """What stages convert / prepare_xrays call for dataset=demo, on the tiny profile."""
    from gensyn.stages._shared import demo_spec

    cfg = compose("profile=tiny", "dataset.demo.num_xray_patients=12")
    ct_spec, _ = demo_spec(cfg, "ct_dataset")
    ct = demo.convert(ct_spec, tmp_path / "convert")
    assert ct["n_volumes"] == 6 and ct["simulated"]
    assert (tmp_path / "convert" / ct["figures"][0]).is_file()
    volumes = read_table(tmp_path / "convert" / "volumes.csv")
    assert nib.load(tmp_path / "convert" / volumes["path"][0]).shape == (48, 48, 48)
    spec, workers = demo_spec(cfg, "dataset")
    assert spec.seed == cfg.seed and workers >= 1
    xr = demo.prepare_xrays(spec, tmp_path / "prepare", workers)
    assert xr["n_images"] == 12 and xr["n_train"] + xr["n_test"] == 12
    assert read_image(tmp_path / "prepare" / "figures" / "examples.png").ndim == 2
    table = read_table(tmp_path / "prepare" / "xrays.csv")
    assert read_image(tmp_path / "prepare" / table["path"][0]).shape == (64, 64)


@pytest.mark.slow
def test_two_worker_processes_give_the_same_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "MIN_POOL_CPU_S", 0.0)  # use the pool even for tiny work
    one = write_demo_xrays(tmp_path / "one", TINY, workers=1)
    two = write_demo_xrays(tmp_path / "two", TINY, workers=2)
    assert one.equals(two)
    for rel in one["path"]:
        np.testing.assert_array_equal(
            read_image(tmp_path / "one" / rel), read_image(tmp_path / "two" / rel)
        )


def test_demo_spec_takes_its_defaults_from_the_declared_sizes() -> None:
    """The sizes users set (``DemoSizes``, the schema's base) and the generator's defaults
    (``DemoSpec``) are one declaration: every size agrees."""
    import dataclasses

    from gensyn.data.phantom.demo import DemoSizes, DemoSpec

    sizes, spec = DemoSizes(), DemoSpec()
    for f in dataclasses.fields(DemoSizes):
        value = getattr(sizes, f.name)
        want = tuple(value) if isinstance(value, list) else value
        assert getattr(spec, f.name) == want, f.name
