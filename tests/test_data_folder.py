"""Bring your own data: ``ct_dataset=folder`` (NIfTI, DICOM series, NRRD) and ``dataset=folder``
(PNG, JPEG, DICOM radiographs), in the real formats, written with nibabel and pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def _phantom(shape=(32, 30, 28)) -> np.ndarray:
    """Air around a soft-tissue ellipsoid with a bone rod: HU, int16."""
    i, j, k = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    hu = np.full(shape, -1000, np.int16)
    hu[(i / 0.8) ** 2 + (j / 0.6) ** 2 < 1] = 40
    hu[(i**2 + (j - 0.2) ** 2 < 0.02) & (np.abs(k) < 0.8)] = 900
    return hu


def _oblique_affine() -> np.ndarray:
    """10 degrees about z, then 5 about x, spacing 0.7 x 0.9 x 2.5 mm, an off-centre origin."""
    a, b = np.deg2rad(10.0), np.deg2rad(5.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.7, 0.9, 2.5])
    affine[:3, 3] = [-12.5, 30.25, -101.0]
    return affine


def _write_nifti(path: Path, hu: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(hu, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


def _dicom_series_without_suffix(folder: Path, hu_kji: np.ndarray, **kw) -> None:
    """A CT series whose files have no ``.dcm`` (as scanners and PACS exports write them)."""
    from data_fakes import write_dicom_series

    for p in write_dicom_series(folder, hu_kji, **kw):
        p.rename(p.with_suffix(""))


# --------------------------------------------------------------------------- CTs
def test_nifti_keeps_its_oblique_affine(tmp_path: Path) -> None:
    import nibabel as nib

    from gensyn.data.ct.convert import convert_many, discover_sources

    hu, affine = _phantom(), _oblique_affine()
    _write_nifti(tmp_path / "raw" / "sub" / "patient.01.nii.gz", hu, affine)
    _write_nifti(tmp_path / "raw" / "plain.nii", hu[:, :, :8], affine)
    sources = discover_sources(tmp_path / "raw", "auto")
    assert [(s.volume_id, s.fmt) for s in sources] == [("plain", "nifti"), ("patient.01", "nifti")]
    rows, failures = convert_many(sources, tmp_path / "out", progress=False)
    assert failures == [] and rows[1]["orientation"] == "".join(nib.aff2axcodes(affine))
    out: object = nib.load(tmp_path / "out" / "patient.01.nii.gz")
    assert out.get_data_dtype() == np.int16  # type: ignore[attr-defined]
    np.testing.assert_array_equal(np.asarray(out.dataobj), hu)  # type: ignore[attr-defined]
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)  # type: ignore[attr-defined]
    assert [rows[1][f"spacing_{a}_mm"] for a in "xyz"] == pytest.approx([0.7, 0.9, 2.5], abs=1e-5)


def test_nifti_float_scaled_and_bad_files(tmp_path: Path) -> None:
    import nibabel as nib

    from gensyn.data.ct.readers import ConversionError, read_nifti_volume

    img = nib.Nifti1Image(np.array([[[0, 1], [2, 3]]] * 2, np.int16), np.diag([2, 2, 2, 1.0]))
    img.header.set_slope_inter(10.0, -1024.0)  # stored 0..3 -> -1024 .. -994 HU
    nib.save(img, tmp_path / "scaled.nii")
    hu, _ = read_nifti_volume(tmp_path / "scaled.nii")
    assert hu.dtype == np.int16 and hu.min() == -1024 and hu.max() == -994
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.int16), np.eye(4)), tmp_path / "flat.nii")
    with pytest.raises(ConversionError, match="expected a 3-D CT"):
        read_nifti_volume(tmp_path / "flat.nii")
    (tmp_path / "torn.nii.gz").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(ConversionError, match="unreadable NIfTI"):
        read_nifti_volume(tmp_path / "torn.nii.gz")


def test_read_nifti_keeps_stored_integers_on_request(tmp_path: Path) -> None:
    """read_nifti(dtype=None): int16 stays int16 (plain and gzipped); scaled files are floats."""
    import nibabel as nib

    from gensyn.base.io import read_nifti

    hu = np.arange(-1000, -1000 + 2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    for name in ("ct.nii", "ct.nii.gz"):
        nib.save(nib.Nifti1Image(hu, np.diag([0.7, 0.7, 1.0, 1.0])), tmp_path / name)
        kept, affine = read_nifti(tmp_path / name, dtype=None)
        assert kept.dtype == np.int16 and kept.flags.writeable
        np.testing.assert_array_equal(kept, hu)
        floats, _ = read_nifti(tmp_path / name)
        assert floats.dtype == np.float32 and np.array_equal(floats, hu)
        assert affine[0, 0] == pytest.approx(0.7)
    img = nib.Nifti1Image(hu, np.eye(4))
    img.header.set_slope_inter(2.0, 10.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    scaled, _ = read_nifti(tmp_path / "scaled.nii.gz", dtype=None)
    assert scaled.dtype == np.float32 and scaled.min() == pytest.approx(2.0 * -1000 + 10.0)


@pytest.mark.parametrize("reader", ["whole_file", "stream"])
@pytest.mark.parametrize(
    "kind",
    ["int16", "big_endian", "uint8", "float32", "scaled", "extension", "four_d", "oblique",
     "two_members"],
)  # fmt: skip
def test_read_nifti_gz_equals_nibabels_reading(
    tmp_path: Path, kind: str, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The .nii.gz reader (header by nibabel, voxels inflated in place) gives what nibabel's
    own loading gives: voxels, type, scaling and affine, for every header variant here, both
    from the whole compressed file in memory and (where python-isal lacks its C reader)
    streamed; a file of two gzip members (as parallel compressors write) reads whole."""
    import gzip

    import nibabel as nib
    from isal import isal_zlib

    from gensyn.base.io import read_nifti

    if reader == "stream":
        monkeypatch.delattr(isal_zlib, "_GzipReader")

    rng = np.random.default_rng(1)
    shape = (5, 4, 3, 1) if kind == "four_d" else (7, 6, 5)
    dtype = {"uint8": np.uint8, "float32": np.float32}.get(kind, np.int16)
    data = (rng.standard_normal(shape) * 100).astype(dtype) if dtype != np.uint8 else (
        rng.integers(0, 256, shape).astype(np.uint8))  # fmt: skip
    affine = np.diag([0.7, 0.8, 1.25, 1.0])
    affine[:3, 3] = [-90.0, 12.5, 30.0]
    if kind == "oblique":
        c, s = np.cos(0.3), np.sin(0.3)
        affine[:2, :2] = [[0.7 * c, -0.8 * s], [0.7 * s, 0.8 * c]]
    header = nib.Nifti1Header()
    if kind == "big_endian":
        header = nib.Nifti1Header(endianness=">")
    img = nib.Nifti1Image(data, affine, header)
    if kind == "scaled":
        img.header.set_slope_inter(0.5, -1024.0)
    if kind == "extension":
        img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 37))
    path = tmp_path / "v.nii.gz"
    nib.save(img, path)
    if kind == "two_members":
        raw = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(raw[:700]) + gzip.compress(raw[700:]))
    back = nib.load(path)
    ours, our_affine = read_nifti(path, dtype=None)
    np.testing.assert_allclose(our_affine, back.affine, atol=1e-6)
    assert ours.shape == back.shape and ours.flags.writeable
    if kind == "scaled":
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, back.get_fdata(), rtol=1e-6, atol=1e-3)
    else:
        assert ours.dtype == np.asarray(back.dataobj).dtype.newbyteorder("=")
        np.testing.assert_array_equal(ours, np.asarray(back.dataobj))
    floats, _ = read_nifti(path)
    assert floats.dtype == np.float32
    np.testing.assert_allclose(floats, back.get_fdata(), rtol=1e-6, atol=1e-3)


def test_read_nifti_gz_truncated_in_the_voxels_names_the_file(tmp_path: Path) -> None:
    import gzip

    import nibabel as nib

    from gensyn.base.io import read_nifti

    raw = tmp_path / "v.nii"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.int16), np.eye(4)), raw)
    torn = tmp_path / "torn.nii.gz"
    torn.write_bytes(gzip.compress(raw.read_bytes()[:-100]))  # a complete gzip, short data
    with pytest.raises(ValueError, match=r"torn\.nii\.gz.*truncated"):
        read_nifti(torn, dtype=None)


def test_mr_series_is_refused_naming_series_and_modality(tmp_path: Path) -> None:
    import pydicom

    from gensyn.data.ct.convert import convert_many, discover_sources
    from gensyn.data.ct.readers import ConversionError, read_dicom_series

    series = tmp_path / "raw" / "knee_mr"
    _dicom_series_without_suffix(series, np.zeros((3, 8, 8)))
    for f in series.iterdir():
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    with pytest.raises(ConversionError, match="series knee_mr has Modality MR; only CT"):
        read_dicom_series(series)
    sources = discover_sources(tmp_path / "raw", "auto")
    assert [(s.volume_id, s.fmt) for s in sources] == [("knee_mr", "dicom")]
    rows, failures = convert_many(sources, tmp_path / "out", progress=False)
    assert rows == [] and "Modality MR" in failures[0]["reason"]


def test_auto_discovery_of_every_format(tmp_path: Path) -> None:
    import nrrd

    from gensyn.data.ct.convert import discover_sources

    raw = tmp_path / "raw"
    _dicom_series_without_suffix(raw / "pat1" / "s1", np.zeros((3, 8, 8)))
    _write_nifti(raw / "a.nii.gz", _phantom((8, 8, 4)), np.eye(4))
    nrrd.write(str(raw / "b.nrrd"), np.zeros((4, 4, 4), np.int16), {"spacings": [1, 1, 1]})
    (raw / "labels.csv").write_text("ct_id\n")
    found = {(s.volume_id, s.fmt) for s in discover_sources(raw, "auto")}
    assert found == {("s1", "dicom"), ("a", "nifti"), ("b", "nrrd")}
    assert [s.volume_id for s in discover_sources(raw, "dicom")] == ["s1"]
    assert [s.volume_id for s in discover_sources(raw, "nifti")] == ["a"]


def test_folder_ct_labels(tmp_path: Path) -> None:
    from gensyn.data.ct.labels import read_folder_ct_labels

    path = tmp_path / "labels.csv"
    path.write_text("ct_id,patient_id,effusion,Cardiomegaly,age\nct1,P1,1,\nct2,,0,1,70\n")
    table = read_folder_ct_labels(path).set_index("image_id")
    assert table.loc["ct1", "Effusion"] == 1 and pd.isna(table.loc["ct1", "Cardiomegaly"])
    assert table["Pneumothorax"].isna().all()  # no column: unknown, never absent
    assert pd.isna(table.loc["ct2", "patient_id"]) and table.loc["ct2", "labels"] == "Cardiomegaly"
    path.write_text("ct_id,Efusion\nct1,1\n")
    with pytest.raises(ValueError, match="did you mean 'Effusion'"):
        read_folder_ct_labels(path)
    path.write_text("ct_id,Effusion\nct1,yes\n")
    with pytest.raises(ValueError, match="row 2 has 'yes'"):
        read_folder_ct_labels(path)


# --------------------------------------------------------------------------- X-rays
def _dicom_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, as a fraction of the output range."""
    c, w = center - 0.5, width - 1
    frac = (x - c) / w + 0.5
    return np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, frac))


def _monochrome1_case(path: Path) -> np.ndarray:
    """A CR, MONOCHROME1, rescaled and windowed; returns the expected 8-bit display."""
    from data_fakes import write_dicom_xray

    stored = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    write_dicom_xray(path, stored, slope=2.0, intercept=-100.0, window=(3000, 4000))
    x = stored * 2.0 - 100.0  # Modality LUT
    lo, hi = -100.0, 4095 * 2.0 - 100.0  # the rescaled stored range: the window's output range
    display = 1.0 - (lo + _dicom_window(x, 3000, 4000) * (hi - lo) - lo) / (hi - lo)
    return np.rint(display * 255)


def test_dicom_xray_monochrome1_window_by_hand(tmp_path: Path) -> None:
    from gensyn.base.io import read_image
    from gensyn.data.xray.prep import PrepJob, PrepOptions, prepare_image

    expected = _monochrome1_case(tmp_path / "cr.dcm")
    row = prepare_image(
        PrepJob("cr", str(tmp_path / "cr.dcm"), str(tmp_path / "cr.png")),
        PrepOptions(size_px=64, bit_depth=8, window="bits"),
    )
    assert row["status"] == "ok" and row["stored_bits"] == 16
    out = read_image(tmp_path / "cr.png").astype(float)
    assert np.abs(out - expected).max() <= 1  # 16-bit display, then 8 bits: one rounding step
    assert out[0, 0] == 255 and out[-1, -1] < 100  # lowest stored value is white in MONOCHROME1


def test_dicom_xray_voi_lut_sequence_and_refusals(tmp_path: Path) -> None:
    from data_fakes import write_dicom_xray

    from gensyn.data.xray.dicom import read_dicom_xray

    stored = np.tile(np.arange(64, dtype=np.uint16) * 60, (64, 1))  # 0 .. 3780
    table = (np.sqrt(np.arange(2048) / 2047) * 255).astype(int)  # a gamma-like VOI LUT
    path = write_dicom_xray(
        tmp_path / "dx_noext",
        stored,
        modality="DX",
        photometric="MONOCHROME2",
        voi_lut=(1000, 8, table),
        window=(10, 20),  # the LUT wins (pydicom's prefer_lut)
    )
    expected = table[np.clip(stored.astype(int) - 1000, 0, 2047)] / 255.0
    np.testing.assert_allclose(read_dicom_xray(path), expected, atol=1e-6)
    ct = write_dicom_xray(tmp_path / "ct.dcm", stored, modality="CT")
    with pytest.raises(ValueError, match="Modality CT; a radiograph is CR or DX"):
        read_dicom_xray(ct)


def test_folder_xray_table(tmp_path: Path) -> None:
    from gensyn.data.xray.labels import read_folder_xrays

    path = tmp_path / "labels.csv"
    head = "path,patient_id,view,Effusion,Pneumothorax,Atelectasis,Cardiomegaly,Pneumonia\n"
    path.write_text(head + "a/x1.png,P1,pa,1,0,0,0,0\nb/x1.dcm,P2,L,0,0,0,1,0\n")
    table = read_folder_xrays(path)
    assert list(table["image_id"]) == ["a__x1.png", "b__x1.dcm"]
    assert list(table["view"]) == ["PA", "LATERAL"] and list(table["frontal"]) == [True, False]
    assert list(table["labels"]) == ["Effusion", "Cardiomegaly"]
    path.write_text(head + "a.png,P1,PA,1,0,,0,0\n")
    with pytest.raises(ValueError, match="'Atelectasis' must hold 0 or 1"):
        read_folder_xrays(path)
    path.write_text("path,patient_id,view,Effusion\na.png,P1,PA,1\n")
    with pytest.raises(ValueError, match="missing \\['Pneumothorax'"):
        read_folder_xrays(path)


# --------------------------------------------------------------------------- launch.py
def test_drr_from_your_own_ct_folder(launch, tmp_path: Path, gensyn_root: Path) -> None:
    raw = tmp_path / "my_cts"  # outside the GENSYN root, as a user's own folder
    hu = _phantom((32, 32, 32))
    _write_nifti(raw / "ct_nifti.nii.gz", hu, _oblique_affine())
    _dicom_series_without_suffix(
        raw / "pat2" / "series_a", hu.transpose(2, 1, 0), pixel_spacing=(1.2, 1.2)
    )
    (raw / "labels.csv").write_text("ct_id,patient_id,Effusion,Cardiomegaly\nct_nifti,P1,1,\n")
    launch(
        "stage=drr",
        "experiment=thesis",
        "ct_dataset=folder",
        f"ct_dataset.raw_dir={raw}",
        "ct_dataset.convert.label_file=labels.csv",
        "profile=tiny",
        "logger=none",
    )
    runs = gensyn_root / "workdir" / "runs"
    convert = next((runs / "convert").glob("*/DONE")).parent
    volumes = pd.read_csv(convert / "volumes.csv").set_index("volume_id")
    assert set(volumes["fmt"]) == {"nifti", "dicom"}
    assert volumes.loc["ct_nifti", "patient_id"] == "P1"
    assert volumes.loc["series_a", "patient_id"] == "PHANTOM"  # not listed: the DICOM's own
    labels = pd.read_csv(convert / "labels.csv").set_index("image_id")
    assert labels.loc["ct_nifti", "Effusion"] == 1 and labels["Cardiomegaly"].isna().all()
    manifest = pd.read_csv(next((runs / "drr").glob("*/DONE")).parent / "manifest.csv")
    assert set(manifest["ct_id"]) == {"ct_nifti", "series_a"}
    assert manifest.groupby("ct_id").size().tolist() == [10, 10]  # centre + 9 random views


def test_prepare_xrays_from_your_own_folder(launch, tmp_path: Path, gensyn_root: Path) -> None:
    from data_fakes import write_dicom_xray
    from PIL import Image

    raw = tmp_path / "my_xrays"
    rng = np.random.default_rng(0)
    lines = ["path,patient_id,view,Effusion,Pneumothorax,Atelectasis,Cardiomegaly,Pneumonia"]
    for p in range(12):
        labels = ",".join(str(v) for v in (rng.random(5) < 0.4).astype(int))
        kind = ("png", "jpg", "dcm")[p % 3]
        rel = f"{kind}/img{p:02d}.{kind}"
        (raw / kind).mkdir(parents=True, exist_ok=True)
        if kind == "png":
            Image.fromarray(rng.integers(0, 4096, (80, 70)).astype(np.uint16)).save(raw / rel)
        elif kind == "jpg":
            Image.fromarray(rng.integers(0, 256, (70, 80)).astype(np.uint8)).save(raw / rel)
        elif p == 2:
            expected = _monochrome1_case(raw / rel)
        else:
            write_dicom_xray(raw / rel, rng.integers(0, 4096, (64, 64)).astype(np.uint16))
        lines.append(f"{rel},P{p:02d},PA,{labels}")
    lines.append(f"png/img00.png,P00,LATERAL,{labels}")  # a lateral of patient 0: dropped
    (raw / "labels.csv").write_text("\n".join(lines) + "\n")
    launch(
        "stage=prepare_xrays",
        "experiment=thesis",
        "dataset=folder",
        f"dataset.raw_dir={raw}",
        "dataset.xray.size_px=64",
        "dataset.xray.window=bits",
        "profile=tiny",
        "logger=none",
    )
    out = next((gensyn_root / "workdir" / "runs" / "prepare_xrays").glob("*/DONE")).parent
    table = pd.read_csv(out / "xrays.csv")
    assert len(table) == 12 and set(table["view"]) == {"PA"}
    assert pd.read_csv(out / "unreadable.csv").empty
    test = table[table["split"] == "test"]
    assert 2 <= len(test) <= 5  # 30% of 12 patients held out (dataset.xray.test_fraction)
    assert set(test["patient_id"]).isdisjoint(table.loc[table["split"] == "train", "patient_id"])
    png = np.asarray(Image.open(out / "images" / "dcm__img02.png"), dtype=float)
    assert np.abs(png - expected).max() <= 1
